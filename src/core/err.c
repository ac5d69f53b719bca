/* The one table from Tessera error codes to HTTP status and each surface's JSON error code. */
#include "core/err.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

struct err_row {
    int err;
    int status;
    const char *message;
    const char *code[SURF_COUNT]; /* lms, commerce, learning, desk, recs, shared */
    int surface_status[SURF_COUNT]; /* where a contract says otherwise; 0 = status */
    int retry_after_s;              /* a transient failure: when to try again (Retry-After) */
};

#define SAME(c) {c, c, c, c, c, c}

static const struct err_row err_table[] = {
    {TS_E_BAD_REQUEST, 400, "Malformed request", SAME("BAD_REQUEST")},
    /* desk.md: "422 - Validation Error" */
    {TS_E_VALIDATION, 400, "Request validation failed", SAME("VALIDATION_ERROR"),
     {[SURF_DESK] = 422}},
    {TS_E_UNAUTHENTICATED, 401, "Authentication required",
     {"UNAUTHORIZED", "UNAUTHORIZED", "UNAUTHORIZED", "UNAUTHORIZED", "AUTHENTICATION_FAILED",
      "UNAUTHORIZED"}},
    {TS_E_FORBIDDEN, 403, "Access denied", SAME("FORBIDDEN")},
    {TS_E_NOT_FOUND, 404, "Resource not found", SAME("NOT_FOUND")},
    {TS_E_METHOD_NOT_ALLOWED, 405, "Method not allowed", SAME("METHOD_NOT_ALLOWED")},
    {TS_E_TIMEOUT, 408, "Request timed out", SAME("REQUEST_TIMEOUT")},
    {TS_E_CONFLICT, 409, "Conflict with existing resource", SAME("CONFLICT")},
    {TS_E_TOO_LARGE, 413, "Request body too large", SAME("PAYLOAD_TOO_LARGE")},
    {TS_E_URI_TOO_LONG, 414, "Request URL too long", SAME("URI_TOO_LONG")},
    {TS_E_UNSUPPORTED_MEDIA, 415, "Unsupported Content-Type", SAME("UNSUPPORTED_MEDIA_TYPE")},
    {TS_E_UNPROCESSABLE, 422, "Request could not be processed", SAME("UNPROCESSABLE_ENTITY")},
    {TS_E_RATE_LIMITED, 429, "Too many requests", SAME("RATE_LIMIT_EXCEEDED")},
    {TS_E_HEADERS_TOO_LARGE, 431, "Request headers too large", SAME("HEADERS_TOO_LARGE")},
    {TS_E_INTERNAL, 500, "An unexpected error occurred", SAME("INTERNAL_ERROR")},
    {TS_E_UNAVAILABLE, 503, "Service temporarily unavailable", SAME("SERVICE_UNAVAILABLE"),
     {0}, 1},
    {TS_E_BUSY, 503, "Database busy, retry shortly", SAME("SERVICE_UNAVAILABLE"), {0}, 1},
    {TS_E_QUERY_TIMEOUT, 503, "Query exceeded its time budget", SAME("SERVICE_UNAVAILABLE"),
     {0}, 1},
    {TS_E_QUOTA, 429, "Quota exceeded for the tenant's plan", SAME("QUOTA_EXCEEDED")},
    /* the request's writes were rolled back: it may be sent again as it is */
    {TS_E_STORAGE, 503, "Storage error; retry shortly",
     SAME("SERVICE_UNAVAILABLE"), {0}, 1},
    /* RFC 4918 11.5; a disk does not empty itself in a second */
    {TS_E_STORAGE_FULL, 507, "Insufficient storage: the disk is full",
     SAME("INSUFFICIENT_STORAGE"), {0}, 10},
    {TS_E_NO_MEMORY, 503, "Out of memory; retry shortly",
     SAME("SERVICE_UNAVAILABLE"), {0}, 1},
};

static const struct err_row *err_row_of(int err)
{
    if (err >= TS_E_FIRST && err < TS_E_LAST)
        return &err_table[err - TS_E_FIRST];
    return &err_table[TS_E_INTERNAL - TS_E_FIRST];
}

int err_http_status(int err)
{
    return err_row_of(err)->status;
}

int err_http_status_in(int err, enum surface s)
{
    const struct err_row *row = err_row_of(err);
    if ((unsigned)s < SURF_COUNT && row->surface_status[s])
        return row->surface_status[s];
    return row->status;
}

const char *err_code(int err, enum surface s)
{
    if ((unsigned)s >= SURF_COUNT)
        s = SURF_RECS;
    return err_row_of(err)->code[s];
}

const char *err_message(int err)
{
    return err_row_of(err)->message;
}

int err_retry_after(int err)
{
    return err_row_of(err)->retry_after_s;
}

int err_from_errno(int e)
{
    switch (e < 0 ? -e : e) {
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return TS_E_STORAGE_FULL;
    case EIO:
    case EROFS:
        return TS_E_STORAGE;
    case ENOMEM:
        return TS_E_NO_MEMORY;
    default:
        return TS_E_INTERNAL;
    }
}

static const char *const surface_names[SURF_COUNT] = {"lms",  "commerce", "learning",
                                                      "desk", "recs",     "shared"};

const char *surface_name(enum surface s)
{
    return (unsigned)s < SURF_COUNT ? surface_names[s] : "recs";
}

int surface_from_name(const char *name)
{
    for (int i = 0; i < SURF_COUNT; i++)
        if (strcmp(surface_names[i], name) == 0)
            return i;
    return -1;
}

/* The table is indexed by code; a row out of place is a programmer error caught at build. */
_Static_assert(sizeof(err_table) / sizeof(err_table[0]) == TS_E_LAST - TS_E_FIRST,
               "err_table must have one row per ts_err, in order");
