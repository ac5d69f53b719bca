/* Error bodies in each surface's own format (contracts/README.md), from the one error table. */
#include <stdio.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "core/json.h"

static void details_object(struct jw *w, const char *field, const char *reason)
{
    jw_key(w, "details");
    jw_obj_open(w);
    if (field) {
        jw_kstr(w, "field", field);
        jw_kstr(w, "reason", reason);
    }
    jw_obj_close(w);
}

static void error_lms_desk(struct jw *w, const char *code, const char *msg, const char *field,
                           const char *reason)
{
    jw_key(w, "error");
    jw_obj_open(w);
    jw_kstr(w, "code", code);
    jw_kstr(w, "message", msg);
    details_object(w, field, reason);
    jw_obj_close(w);
}

static void field_error_json(struct jw *w, const char *field, const char *msg, const char *rej)
{
    jw_obj_open(w);
    jw_kstr(w, "field", field);
    jw_kstr(w, "message", msg);
    jw_key(w, "rejected_value");
    if (rej)
        jw_raw(w, rej);
    else
        jw_null(w);
    jw_obj_close(w);
}

/* commerce 5.4: every bad field in field_errors (h->ferrs), or the one the error names */
static void error_commerce(struct jw *w, const struct hctx *h, const char *code, const char *msg,
                           const char *field, const char *reason)
{
    jw_kbool(w, "success", false);
    jw_key(w, "error");
    jw_obj_open(w);
    jw_kstr(w, "code", code);
    jw_kstr(w, "message", h->ferrs ? "Request validation failed" : msg);
    jw_key(w, "details");
    jw_obj_open(w);
    if (h->nferrs > FIELD_ERRORS_MAX) {
        jw_kint(w, "field_errors_total", h->nferrs);
        jw_kint(w, "field_errors_listed", FIELD_ERRORS_MAX);
    }
    jw_obj_close(w);
    jw_key(w, "field_errors");
    jw_arr_open(w);
    if (h->ferrs) {
        for (const struct field_error *fe = h->ferrs; fe; fe = fe->next)
            field_error_json(w, fe->field, fe->message, fe->rejected);
    } else if (field) {
        field_error_json(w, field, reason, NULL);
    }
    jw_arr_close(w);
    jw_obj_close(w);
}

static void error_learning(struct jw *w, const char *code, const char *msg, const char *field,
                           const char *reason, int retry_after)
{
    char details[512];
    if (field)
        snprintf(details, sizeof(details), "%s: %s", field, reason);
    else
        snprintf(details, sizeof(details), "%s", reason);
    jw_kbool(w, "success", false);
    jw_key(w, "error");
    jw_obj_open(w);
    jw_kstr(w, "code", code);
    jw_kstr(w, "message", msg);
    jw_kstr(w, "details", details);
    if (retry_after > 0)
        jw_kint(w, "retryAfter", retry_after);
    jw_obj_close(w);
}

void api_error(struct hctx *h, int err, const char *message, const char *field)
{
    enum surface s = h->surface;
    const char *code = err_code(err, s);
    const char *generic = err_message(err);
    const char *reason = message ? message : generic;
    const char *rid = h->req->request_id;
    char ts[40];
    clock_iso8601(clock_now_ms(), 0, ts, sizeof(ts));
    h->status = err_http_status_in(err, s);
    h->req->err_code = code;
    h->out.len = 0;
    struct jw w;
    jw_init(&w, &h->out);
    jw_obj_open(&w);
    switch (s) {
    case SURF_LMS:
        error_lms_desk(&w, code, message ? message : generic, field, reason);
        jw_kstr(&w, "request_id", rid);
        break;
    case SURF_DESK:
        error_lms_desk(&w, code, message ? message : generic, field, reason);
        break;
    case SURF_COMMERCE:
        error_commerce(&w, h, code, message ? message : generic, field, reason);
        jw_kstr(&w, "timestamp", ts);
        jw_kstr(&w, "request_id", rid);
        break;
    case SURF_LEARNING:
        error_learning(&w, code, generic, field, reason, h->retry_after_s);
        break;
    case SURF_SHARED:
        /* lms, learning, desk and recs all define these routes: one body all four read */
        jw_kbool(&w, "success", false);
        jw_key(&w, "error");
        jw_obj_open(&w);
        jw_kstr(&w, "code", code);
        jw_kstr(&w, "message", message ? message : generic);
        details_object(&w, field, reason);
        jw_kstr(&w, "request_id", rid);
        jw_kstr(&w, "timestamp", ts);
        jw_obj_close(&w);
        jw_kstr(&w, "request_id", rid);
        break;
    default:
        jw_key(&w, "error");
        jw_obj_open(&w);
        jw_kstr(&w, "code", code);
        jw_kstr(&w, "message", message ? message : generic);
        details_object(&w, field, reason);
        jw_kstr(&w, "request_id", rid);
        jw_kstr(&w, "timestamp", ts);
        jw_obj_close(&w);
        break;
    }
    jw_obj_close(&w);
    jw_finish(&w);
}
