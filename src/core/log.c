/* Structured logging: the recs.md section 7 JSON line, or plain text, one write(2) per line. */
#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"

static bool log_json = true;
static enum log_level log_min = LOG_INFO;
static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

int log_init(const char *format, const char *level)
{
    if (format != NULL) {
        if (strcmp(format, "json") == 0)
            log_json = true;
        else if (strcmp(format, "text") == 0)
            log_json = false;
        else
            return -EINVAL;
    }
    if (level != NULL) {
        static const char *const lower[] = {"debug", "info", "warn", "error"};
        int found = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(level, lower[i]) == 0)
                found = i;
        if (found < 0)
            return -EINVAL;
        log_min = (enum log_level)found;
    }
    return 0;
}

bool log_enabled(enum log_level lvl)
{
    return lvl >= log_min;
}

static void log_emit(struct buf *b)
{
    buf_putc(b, '\n');
    const char *p = b->data;
    size_t left = b->len;
    while (left > 0) {
        ssize_t n = write(STDERR_FILENO, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        p += n;
        left -= (size_t)n;
    }
    buf_release(b);
}

static void log_head(struct jw *w, enum log_level lvl, const char *trace_id, const char *msg)
{
    char ts[40], span[UUID_STR_LEN];
    clock_iso8601(clock_now_ms(), 1, ts, sizeof(ts));
    id_uuid7(span);
    jw_kstr(w, "timestamp", ts);
    jw_kstr(w, "level", level_names[lvl]);
    jw_kstr(w, "service", "tessera");
    jw_kstr(w, "trace_id", trace_id);
    jw_kstr(w, "span_id", span);
    jw_kstr(w, "message", msg);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    if (!log_enabled(lvl))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct buf b;
    buf_init(&b, 8192);
    if (!log_json) {
        char ts[40];
        clock_iso8601(clock_now_ms(), 1, ts, sizeof(ts));
        buf_printf(&b, "%s %-5s %s", ts, level_names[lvl], msg);
    } else {
        struct jw w;
        jw_init(&w, &b);
        jw_obj_open(&w);
        char trace[UUID_STR_LEN];
        id_uuid7(trace);
        log_head(&w, lvl, trace, msg);
        jw_obj_close(&w);
    }
    log_emit(&b);
}

void log_request_done(const struct log_request *r)
{
    enum log_level lvl = r->status_code >= 500 ? LOG_ERROR : r->status_code >= 400 ? LOG_WARN
                                                                                   : LOG_INFO;
    if (!log_enabled(lvl))
        return;
    struct buf b;
    buf_init(&b, 16384);
    if (!log_json) {
        char ts[40];
        clock_iso8601(clock_now_ms(), 1, ts, sizeof(ts));
        buf_printf(&b, "%s %-5s %s %s %d %.3fms id=%s%s%s", ts, level_names[lvl], r->method,
                   r->path, r->status_code, r->duration_ms, r->request_id,
                   r->error ? " error=" : "", r->error ? r->error : "");
        log_emit(&b);
        return;
    }
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    log_head(&w, lvl, r->request_id, "Request processed");
    jw_key(&w, "context");
    jw_obj_open(&w);
    jw_kstr(&w, "tenant_id", r->tenant_id);
    jw_kstr(&w, "user_id", r->user_id);
    jw_kstr(&w, "endpoint", r->endpoint);
    jw_kstr(&w, "path", r->path);
    jw_kstr(&w, "method", r->method);
    jw_kdouble(&w, "duration_ms", (double)(long long)(r->duration_ms * 1000) / 1000.0);
    jw_kint(&w, "status_code", r->status_code);
    if (r->error)
        jw_kstr(&w, "error", r->error);
    jw_obj_close(&w);
    jw_obj_close(&w);
    log_emit(&b);
}
