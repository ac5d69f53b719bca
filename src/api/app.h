/* The application: every long-lived part of a running server, owned by main, seen by handlers. */
#ifndef TS_APP_H
#define TS_APP_H
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "api/route.h"
#include "core/config.h"

struct app {
    uv_loop_t *loop;
    struct config *cfg;
    char *db_path;
    struct db *db;
    struct pool *pool;          /* requests: handlers and their hops */
    struct pool *bg_pool;       /* jobs and alert/dashboard evaluations, niced below `pool` */
    struct jobs *jobs;
    struct router *router;
    struct server *server;
    struct ws_hub *hub;
    struct ratelimit *rl;
    struct cache *cache;
    struct metrics *metrics;
    struct auth *auth;
    struct throttle *throttle;
    struct mailer *mailer;
    char *public_url;           /* base of links in emails */
    const char *spool_dir;      /* DATA/files/tmp: uploads in flight (same filesystem as files) */
    struct metrics_std *mstd;   /* the standard families (recs.md section 7) */
    int64_t started_ms;
    struct tick_wait *tick_waits; /* responses waiting for the tick's outcome (dispatch.c) */
    bool ready;                 /* startup finished and not draining */
    bool draining;
    int inflight[2];            /* by enum route_where: requests dispatched whose response is
                                 * not out (shedding counts each class against its own bound) */
    int dispatched;             /* requests admitted in this loop iteration (dispatch.c) */
    struct hctx *parked_head, **parked_tail; /* admitted past the budget: the next iteration's */
    uv_prepare_t unpark;
    uv_idle_t unpark_spin;
    struct metric_family *m_parked; /* http_requests_parked_total */
    uint64_t shed_unlogged;     /* sheds not yet in a log line (dispatch.c shed_log) */
    uint64_t shed_logged_ns;    /* when the last such line went out; 0: never */
    uint64_t shed_first_ns;     /* the first of those sheds */
};

/* Every surface's route table; main builds the router from these. */
extern const struct route_table ops_route_table;
extern const struct route_table docs_route_table;   /* /openapi, /docs; recs errors */
extern const struct route_table live_route_table;
extern const struct route_table learning_route_table;
extern const struct route_table identity_shared_table;
extern const struct route_table identity_learning_table;
extern const struct route_table identity_desk_auth_table;
extern const struct route_table identity_desk_table;
extern const struct route_table identity_lms_table;
extern const struct route_table identity_recs_table;
extern const struct route_table desk_notifications_table;
extern const struct route_table desk_files_table;
extern const struct route_table desk_dashboard_table;
extern const struct route_table desk_sla_table;
/* The desk SLA breach timer (src/surfaces/desk/sla.c): started once serving, stopped on drain. */
void desk_sla_timer_start(struct app *app);
void desk_sla_timer_stop(void);
extern const struct route_table desk_approvals_table;
extern const struct route_table desk_staging_table;
/* Two staging environments (staging-1, staging-2) for the --demo tenant; 0 or TS_E_INTERNAL. */
int desk_staging_seed_demo(sqlite3 *db, const char *tenant_id);
/* Demo desk data for the --demo tenant (src/surfaces/desk/demo.c): tickets over 90 days with
 * comments, history, SLA rows, approvals and deployments. 0 or TS_E_INTERNAL. */
int desk_demo_seed(sqlite3 *db, const char *tenant_id);
extern const struct route_table desk_tickets_table;
/* commerce (src/surfaces/commerce/) */
extern const struct route_table commerce_ingest_table;
extern const struct route_table commerce_metrics_table;
extern const struct route_table commerce_customers_table;
extern const struct route_table commerce_products_table;
extern const struct route_table commerce_dashboards_table;
extern const struct route_table commerce_alerts_table;
extern const struct route_table commerce_quality_table;
/* The --demo shop for the demo tenant (src/surfaces/commerce/demo.c), its sizes times scale
 * (--demo-scale, 0.001..1). 0 or TS_E_INTERNAL. */
int commerce_demo_seed(sqlite3 *db, const char *tenant_id, double scale);
/* Commerce timers (alert evaluation, dashboard refresh): started once serving, stopped on
 * drain (src/surfaces/commerce/alerts.c). */
void commerce_timers_start(struct app *app);
void commerce_timers_stop(void);
/* recs (src/surfaces/recs/) */
extern const struct route_table recs_data_table;
extern const struct route_table recs_ml_table;
extern const struct route_table recs_serving_table;
/* The --demo catalog and interactions for the demo tenant (src/surfaces/recs/demo.c), their
 * sizes times scale (--demo-scale), inside the demo transaction; the first model is trained
 * once serving starts. 0 or TS_E_INTERNAL. */
int recs_demo_seed(sqlite3 *db, const char *tenant_id, double scale);
/* Once serving: queues the first model's training for the tenant recs_demo_seed just seeded
 * (nothing when the demo was loaded by an earlier start). */
void recs_demo_start(struct app *app);

/* Every table above that the server loads (src/surfaces/tables.c), and the router built from
 * them (NULL with a reason in err on a bad table). */
extern const struct route_table *const app_route_tables[];
extern const size_t app_route_tables_count;
struct router *app_router_new(char *err, size_t errlen);

/* The dispatcher: the server's on_request / on_error hooks. */
void dispatch_start(struct app *app);          /* before serving: the per-iteration budget */
void dispatch_close_handles(struct app *app);  /* after the drain */
void dispatch_request(struct request *req);
void dispatch_error(struct request *req, int err);
size_t dispatch_body_limit(struct request *req);
void dispatch_sent(struct request *req);
int dispatch_tick(void *arg);
/* The validate step: with RF_JSON_BODY the body must be application/json, at most 32 levels
 * deep, and a JSON object; it is parsed into h->body. 0, TS_E_UNSUPPORTED_MEDIA or
 * TS_E_VALIDATION with h->err_field naming the field. */
int dispatch_validate_body(struct hctx *h, unsigned flags);

/* Writes the error body for h->surface into h->out and sets h->status. */
void api_error(struct hctx *h, int err, const char *message, const char *field);
/* Writes the surface's success envelope start/end around a handler's data (learning, commerce). */
const char *app_version(void);
#endif
