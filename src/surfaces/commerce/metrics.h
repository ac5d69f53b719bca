/* The metric engine behind GET /api/v1/analytics/metrics, dashboard widgets and alert rules:
 * one query struct, one evaluator, figures from the ingested records (rollups for clean days,
 * base tables for dirty days and for what no rollup carries; README "### Metrics and
 * rollups"). Thread-safe: runs on any connection, the pool's read-only ones included. */
#ifndef TS_COMMERCE_METRICS_H
#define TS_COMMERCE_METRICS_H
#include <jansson.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/json.h"

#define CM_FILTER_MAX 50

struct cm_metric_query {
    const char *metric_type;     /* revenue, transactions, customers, inventory, conversion,
                                  * average_order_value */
    const char *granularity;     /* hourly, daily, weekly, monthly, quarterly */
    const char *aggregation;     /* sum, avg, count, min, max, or NULL for the metric's own */
    int64_t start_ms, end_ms;    /* [start, end) */
    const char *timezone;        /* IANA name for bucket edges, NULL = UTC */
    const char *categories[CM_FILTER_MAX];
    int ncategories;
    const char *segments[CM_FILTER_MAX];
    int nsegments;
    const char *regions[CM_FILTER_MAX];
    int nregions;
    const char *channels[CM_FILTER_MAX];
    int nchannels;
    const char *currency;        /* NULL: every currency */
    bool include_comparison;
};

/* Checks enums, the aggregation against the metric, the filters against the metric (region,
 * channel, currency and segments describe orders; categories products; conversion takes none),
 * known segment names, span limits per granularity (hourly 31 days, daily 1096, weekly /
 * monthly / quarterly 3653) and the time zone. 0, or -1 with *field and *message set (static
 * or arena strings) for a 400 naming the field. */
int cm_metric_query_check(const struct cm_metric_query *q, struct arena *a, const char **field,
                          const char **message);

/* Fills q from a JSON object (a widget's configuration or an alert rule's query):
 * {"metric_type", "granularity" (default daily), "aggregation", "time_window": "<n>m|h|d|w"
 * such as "24h" or "7d" (the window ending at now_ms) or "time_range": {"start","end"} (ISO
 * 8601), "timezone", "filters": {"product_category": [...], "customer_segment": [...],
 * "region": [...], "channel": [...], "currency": "EUR"}, "include_comparison"}. A list may also
 * be one string. Strings point into obj (keep it alive) or the arena. Then checks it as above.
 * 0 or -1 with *field / *message. */
int cm_metric_query_from_json(const json_t *obj, int64_t now_ms, struct arena *a,
                              struct cm_metric_query *q, const char **field, const char **message);
/* Fills q from GET /analytics/metrics' query string (metric_type, granularity, aggregation,
 * timezone, time_range, the filters as filters[name][] / filters.name / filters={JSON} or bare
 * names, include_comparison) and checks it. 0, or TS_E_VALIDATION naming the field. */
struct hctx;
int cm_metric_query_from_http(struct hctx *h, struct cm_metric_query *q);

struct cm_metric_result {
    double total;                /* summary.total: the figure over the whole range, the one
                                  * alert rules compare (README: per metric and aggregation) */
    double latest;               /* the last bucket's value */
    int64_t total_records;       /* records the figures came from */
    int64_t data_freshness_ms;   /* newest ingested_at among them (0: none) */
};

/* Evaluates q (checked by cm_metric_query_check) for tenant_id in one read snapshot of db
 * (a SAVEPOINT, so it also works inside the loop's write transaction) and writes the
 * MetricsResponse object (section 2.1: metric_type, time_range, granularity, aggregation,
 * timezone, data, summary, comparison when asked, metadata) as one JSON value into w.
 * metadata.query_time_ms is measured here, from the call to the end of the figures;
 * metadata.cache_hit is written as given: pass true only when these figures are being
 * replayed from a cache of yours (the route passes false: nothing is cached). res may be NULL.
 * 0, or a TS_E_* code with err set (nothing written to w then). */
int cm_metric_eval(sqlite3 *db, const char *tenant_id, const struct cm_metric_query *q,
                   bool cache_hit, struct jw *w, struct cm_metric_result *res, char *err,
                   size_t errlen);
#endif
