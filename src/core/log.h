/* Structured logging to stderr: one JSON (or text) line per event, written with one write(2). */
#ifndef TS_LOG_H
#define TS_LOG_H
#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

struct log_request {
    const char *request_id;
    const char *tenant_id;  /* may be NULL */
    const char *user_id;    /* may be NULL */
    const char *method;
    const char *endpoint;   /* route pattern, or the raw path when unrouted */
    const char *path;
    int status_code;
    double duration_ms;
    const char *error;      /* error code for 4xx/5xx, else NULL */
};

int log_init(const char *format, const char *level); /* -EINVAL on unknown value */
bool log_enabled(enum log_level lvl);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_request_done(const struct log_request *r);
#endif
