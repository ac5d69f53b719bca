/* Tessera's error codes and the one table that maps each to HTTP status and per-surface code. */
#ifndef TS_ERR_H
#define TS_ERR_H

/* The five contracts, and the routes they share. Ops routes (/health, /metrics) speak recs'
 * format. */
enum surface {
    SURF_LMS,
    SURF_COMMERCE,
    SURF_LEARNING,
    SURF_DESK,
    SURF_RECS,
    SURF_SHARED,     /* the auth routes four contracts share: an error body all four accept */
    SURF_COUNT
};

/* Negative, beyond every errno value, so an int return can carry either. */
enum ts_err {
    TS_E_FIRST = -20000,
    TS_E_BAD_REQUEST = TS_E_FIRST, /* malformed HTTP or body */
    TS_E_VALIDATION,               /* a field failed validation */
    TS_E_UNAUTHENTICATED,
    TS_E_FORBIDDEN,
    TS_E_NOT_FOUND,
    TS_E_METHOD_NOT_ALLOWED,
    TS_E_TIMEOUT,
    TS_E_CONFLICT,
    TS_E_TOO_LARGE,
    TS_E_URI_TOO_LONG,
    TS_E_UNSUPPORTED_MEDIA,
    TS_E_UNPROCESSABLE,
    TS_E_RATE_LIMITED,
    TS_E_HEADERS_TOO_LARGE,
    TS_E_INTERNAL,
    TS_E_UNAVAILABLE,
    TS_E_BUSY,                     /* database locked by another process; retry */
    TS_E_QUERY_TIMEOUT,            /* loop-thread statement stopped by the guard */
    TS_E_QUOTA,                    /* the tenant's plan quota is used up (recs QUOTA_EXCEEDED) */
    TS_E_STORAGE,                  /* SQLite I/O error (SQLITE_IOERR, SQLITE_CANTOPEN); retry */
    TS_E_STORAGE_FULL,             /* the disk is full (SQLITE_FULL, ENOSPC): 507 */
    TS_E_NO_MEMORY,                /* an allocation failed (SQLITE_NOMEM); retry */
    TS_E_LAST
};

int err_http_status(int err);                       /* any negative int; unknown -> 500 */
int err_http_status_in(int err, enum surface s);    /* as the surface's contract says */
const char *err_code(int err, enum surface s);      /* stable JSON "code" */
const char *err_message(int err);                   /* default human message */
int err_retry_after(int err);                       /* Retry-After seconds for it, or 0 */
/* The error for a failed file operation's errno (either sign): a full disk (ENOSPC, EDQUOT,
 * EFBIG) TS_E_STORAGE_FULL, an I/O error (EIO, EROFS) TS_E_STORAGE, ENOMEM TS_E_NO_MEMORY,
 * anything else TS_E_INTERNAL. */
int err_from_errno(int e);
const char *surface_name(enum surface s);
int surface_from_name(const char *name);            /* -1 if unknown */
#endif
