/* The commerce surface's shared pieces: the ApiResponse envelope (section 5.1), query
 * parameters as browser clients send them, time ranges, PageRequest/PageResponse (5.2). */
#ifndef TS_COMMERCE_COMMON_H
#define TS_COMMERCE_COMMON_H
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "api/route.h"
#include "core/json.h"

/* Starts h->out as {"success":true,"data": — the caller writes one JSON value next. */
void cm_ok_begin(struct hctx *h, struct jw *w);
/* Closes the envelope with "timestamp" and "request_id". 0 or the writer's error. */
int cm_ok_end(struct hctx *h, struct jw *w);

/* The decoded query string: every key=value pair in order. */
#define CM_QUERY_MAX 256
struct cm_query {
    int n;
    const char *key[CM_QUERY_MAX];
    const char *value[CM_QUERY_MAX];
};
/* Decodes h->req->query (percent and '+'); TS_E_VALIDATION naming "query" when malformed or
 * past CM_QUERY_MAX pairs. */
int cm_query_parse(struct hctx *h, struct cm_query *q);
/* A scalar parameter. name alone ("metric_type"), or parent + name, found as any of
 * parent[name]=v, parent.name=v, or parent={"name":v,...} (a JSON object value). The first one
 * wins. Returns an arena string (JSON numbers and booleans as their text), NULL if absent. */
const char *cm_param(struct hctx *h, const struct cm_query *q, const char *parent, const char *name);
/* A list parameter: every value of name / name[] / name[N] (or parent[name], parent[name][],
 * parent[name][N], parent.name), each split on commas, or a JSON array value (also inside a JSON
 * object value of parent). Empty items dropped. At most max values: more is TS_E_VALIDATION
 * naming the field. Returns the count in *n (0 when absent). */
int cm_param_list(struct hctx *h, const struct cm_query *q, const char *parent, const char *name,
                  const char **out, int max, int *n);
/* A boolean parameter: true/false/1/0 (absent: def). TS_E_VALIDATION naming it otherwise. */
int cm_param_bool(struct hctx *h, const struct cm_query *q, const char *name, bool def, bool *ret);

/* time_range: start and end in ISO 8601 (time_range[start], time_range.start, a JSON
 * time_range, or bare start/end). Required: missing is TS_E_VALIDATION naming
 * "time_range.start" / "time_range.end"; end must be after start ("time_range"); a span
 * longer than max_span_ms (0: no limit) is TS_E_VALIDATION naming "time_range". */
int cm_time_range(struct hctx *h, const struct cm_query *q, bool required, int64_t max_span_ms,
                  int64_t *ret_start, int64_t *ret_end);

/* PageRequest: page (0-based, default 0) and size (1..100, default 20). */
int cm_page(struct hctx *h, const struct cm_query *q, int *ret_page, int *ret_size);
/* PageResponse fields after "content": totalElements, totalPages, size, number, first, last. */
void cm_page_fields(struct jw *w, int64_t total, int page, int size);

/* The tenant's default currency (cm_settings, else "USD") into out (>= 4 bytes). */
void cm_default_currency(sqlite3 *db, const char *tenant_id, char out[8]);

/* After records of a tenant were committed (loop thread): dashboards push widget updates
 * (debounced) and alert rules are evaluated. Called by the ingestion code. */
struct app;
void cm_notify_ingested(struct app *app, const char *tenant_id);
void cm_dashboards_on_ingest(struct app *app, const char *tenant_id);   /* dashboards.c */
void cm_alerts_on_ingest(struct app *app, const char *tenant_id);       /* alerts.c */
/* Re-evaluations after ingestion (alert rules, dashboard widgets for subscribers) are paced by
 * their own cost: the next of a tenant (a dashboard) starts no sooner than CM_PACE_FACTOR times
 * as long as the last one ran, after it ended, so they take at most a tenth of a worker. Under a
 * steady stream the records of every evaluation's run mark the tenant again at once, and what
 * a run reads grows with the stream: a day being written is read from its base rows, not its
 * rollup (rollup.c), and distinct counts (conversion's sessions) read the whole window's. So
 * each run cost more than the last: unpaced, a conversion rule over a day of 225,000 stream
 * events took 260 ms twice a second after 10 minutes of tools/check soak. */
#define CM_PACE_FACTOR 10
static inline uint64_t cm_pace_until_ns(uint64_t start_ns, uint64_t end_ns)
{
    return end_ns + (end_ns - start_ns) * CM_PACE_FACTOR;
}

/* Starts a one-shot timer to fire in ms, or leaves it if it already fires sooner. */
static inline void cm_timer_arm_sooner(uv_timer_t *t, uv_timer_cb cb, uint64_t ms)
{
    if (!uv_is_active((uv_handle_t *)t) || uv_timer_get_due_in(t) > ms)
        uv_timer_start(t, cb, ms, 0);
}

/* Timers and background work, started by commerce_timers_start once serving and stopped on
 * drain: the rollup scheduler (metrics.c) and alert evaluation (alerts.c). Receivers of the
 * on_ingest calls only mark and schedule: they run before the records' commit. */
void cm_rollups_start(struct app *app);
void cm_rollups_stop(void);
void cm_alerts_start(struct app *app);
void cm_alerts_stop(void);
/* Ingestion (ingest.c): the server its jobs' writes notify; at stop, what it still holds. */
void cm_ingest_start(struct app *app);
void cm_ingest_stop(void);

/* Money: stored as integer ten-thousandths. */
#define CM_MONEY_SCALE 10000
static inline double cm_money(int64_t m)
{
    return (double)m / CM_MONEY_SCALE;
}
#endif
