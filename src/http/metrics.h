/* A Prometheus metrics registry (counters, gauges, histograms with labels) and its text writer. */
#ifndef TS_METRICS_H
#define TS_METRICS_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/*
 * Thread-safety: observations (metric_inc/set/observe) may come from any thread; each family
 * has its own mutex. Registration and metrics_write take the registry mutex as well.
 * Callback gauges and collect hooks run on the thread that calls metrics_write (the loop),
 * with no family lock held: they may call metric_set/metric_inc but not register families.
 *
 * Bounds: a family holds at most METRICS_MAX_SERIES label combinations. Observations past
 * that, or with a label value that is NULL, longer than METRICS_MAX_VALUE_LEN or not valid
 * UTF-8, go to one series whose label values are all "other"; each such observation is
 * counted in tessera_metrics_series_overflow_total{family="..."}.
 *
 * Text format 0.0.4: families appear in registration order, series in first-seen order.
 */

#define METRICS_MAX_LABELS 8
#define METRICS_MAX_SERIES 2000
#define METRICS_MAX_VALUE_LEN 256
#define METRICS_MAX_BUCKETS 32
#define METRICS_SERVICE "tessera"     /* the `service` label value of every standard family */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum metric_type {
    METRIC_COUNTER,
    METRIC_GAUGE,
    METRIC_HISTOGRAM,
};

struct metrics;
struct metric_family;

typedef double (*metric_gauge_fn)(void *arg);
typedef void (*metrics_collect_fn)(struct metrics *m, void *arg);

struct metrics *metrics_new(void);
struct metrics *metrics_free(struct metrics *m);

/* Registration returns NULL on a bad or duplicate name, bad label names, or no memory.
 * Names and help are copied. A counter's name should end in _total (promtool lints it). */
struct metric_family *metrics_counter(struct metrics *m, const char *name, const char *help,
                                      int nlabels, const char *const labelnames[]);
struct metric_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                    int nlabels, const char *const labelnames[]);
/* buckets: strictly increasing finite upper bounds (le, inclusive); +Inf is implicit. */
struct metric_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                        int nlabels, const char *const labelnames[],
                                        const double *buckets, int nbuckets);
/* A gauge with one series (label values fixed here) whose value is fn(arg) at scrape time. */
struct metric_family *metrics_gauge_fn(struct metrics *m, const char *name, const char *help,
                                       int nlabels, const char *const labelnames[],
                                       const char *const values[], metric_gauge_fn fn, void *arg);
/* fn runs at the start of every metrics_write (e.g. to metric_set gauges); at most 8 hooks. */
int metrics_on_collect(struct metrics *m, metrics_collect_fn fn, void *arg);

/*
 * Observations. values[] has one entry per label name of the family (NULL when it has none).
 * Return 0, 1 when recorded in the "other" overflow series, or -EINVAL for a wrong kind of
 * family (or a callback gauge), a non-finite increment, a negative counter increment,
 * or a NaN value.
 */
int metric_inc(struct metric_family *f, const char *const values[], double by); /* counter, gauge */
int metric_set(struct metric_family *f, const char *const values[], double v);  /* gauge */
int metric_observe(struct metric_family *f, const char *const values[], double v); /* histogram */

/* Reads a counter or gauge series back (tests, /health); -ENOENT if never observed. */
int metric_value(struct metric_family *f, const char *const values[], double *ret_value);
size_t metric_family_series(struct metric_family *f);     /* including the "other" series */
uint64_t metric_family_overflows(struct metric_family *f);

/* Appends the whole exposition to out; -E2BIG when out's maximum is reached. */
int metrics_write(struct metrics *m, struct buf *out);
/* The same, but of a family with a label named `label` only the series whose value of it is
 * `value` (none when value is NULL); families without that label are written whole. Every
 * family keeps its HELP and TYPE lines. /metrics passes "tenant_id" and the caller's tenant:
 * one tenant's series are that tenant's data. */
int metrics_write_scoped(struct metrics *m, struct buf *out, const char *label,
                         const char *value);

/* Tessera's standard families (recs.md section 7), registered by metrics_std_register. */
struct metrics_std {
    struct metric_family *http_requests;   /* http_requests_total{service,endpoint,method,status_code} */
    struct metric_family *http_duration;   /* http_request_duration_seconds{service,endpoint,method} */
    struct metric_family *http_errors;     /* http_errors_total{service,endpoint,error_type} */
    struct metric_family *db_queries;      /* db_queries_total{service,query_type,table} */
    struct metric_family *db_duration;     /* db_query_duration_seconds{service,query_type,table} */
    struct metric_family *cache_ops;       /* cache_operations_total{service,operation,result} */
    struct metric_family *cache_hit_rate;  /* cache_hit_rate{service}, set by a collect hook */
    struct metric_family *jobs;            /* jobs_total{service,kind,status} */
    struct metric_family *http_conns;      /* http_connections_active{service} */
    struct metric_family *ws_conns;        /* ws_connections_active{service} */
    struct metric_family *build_info;      /* tessera_build_info{version,sqlite,libuv} = 1 */
};

/* Latency buckets of both duration histograms, in seconds. */
extern const double metrics_latency_buckets[12];

/*
 * Registers the families above and sets build_info to 1. The two active-connection gauges
 * read their values at scrape time from conns_fn(fn_arg) / ws_fn(fn_arg); either fn may be
 * NULL, which registers a plain gauge set to 0 that the caller updates with metric_inc.
 * Returns 0 or a negative errno; on failure nothing in *ret is written (families already
 * registered stay in m, which the caller then frees).
 */
int metrics_std_register(struct metrics *m, struct metrics_std *ret, const char *version,
                         const char *sqlite_version, const char *libuv_version,
                         metric_gauge_fn conns_fn, metric_gauge_fn ws_fn, void *fn_arg);
#endif
