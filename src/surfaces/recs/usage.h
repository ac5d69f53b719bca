/* Recs usage counters and plan quotas (recs.md section 5, GET /api/v1/usage): api calls,
 * recommendations served, items indexed and latency per tenant per UTC day, counted in memory
 * as calls are served and flushed to rc_usage_daily once a second and at shutdown; each
 * tenant's monthly api_calls quota comes from its plan (tenants.plan) and the
 * --recs-quota-<plan> settings. Thread-safe (a mutex): callable from loop and pool handlers. */
#ifndef TS_RECS_USAGE_H
#define TS_RECS_USAGE_H
#include <stdint.h>

struct app;
struct hctx;

/* 0 when h->tenant_id may make another api call this UTC month, else TS_E_QUOTA (429
 * QUOTA_EXCEEDED) with a message saying the plan, limit and usage. A limit of 0 = unlimited.
 * Call at the top of every recs handler, before recs_usage_add. */
int recs_quota_check(struct hctx *h);

/* Counts for tenant_id today (UTC): api_calls (1 per call of a recs route), recommendations
 * served, items stored, and one latency sample when latency_ms >= 0 (pass -1 for none).
 * Negative counts are treated as 0. Never fails: on an allocation failure the counts are
 * dropped and logged. */
void recs_usage_add(const char *tenant_id, int api_calls, int recommendations, int items_indexed,
                    double latency_ms);

/* Milliseconds since the request began (h->req->start_ns): the latency to pass above. */
double recs_elapsed_ms(const struct hctx *h);

/* Monthly api_calls limit of a plan name from the config (0 = unlimited; unknown plans get
 * the starter limit). */
int64_t recs_plan_limit(const struct app *app, const char *plan);

/* GET /api/v1/usage (recs.read, loop): the period's metrics from rc_usage_daily plus the
 * counts still in memory, and this month's quota. Routed from recs_data_table. */
int recs_usage_get(struct hctx *h);

/* Loads this month's flushed counts (so quotas survive restarts) and starts the flush timer
 * on app->loop; stop flushes what is pending and closes the timer. Loop thread. */
int recs_usage_start(struct app *app);
void recs_usage_stop(void);

/* The catalog's content-embedding lane (src/surfaces/recs/data.c), started beside usage:
 * computes the vectors of written items in the pool, one task at a time, and at start
 * rescans the catalog for vectors missing or computed from other features. Stop after
 * pool_stop; it frees what was still queued (the next start's rescan finds it). */
void recs_data_start(struct app *app);
void recs_data_stop(void);
#endif
