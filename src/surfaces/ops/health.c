/* Ops routes from recs.md section 4: GET /health, GET /ready, GET /metrics. */
#include <sqlite3.h>
#include <stdio.h>

#include "api/app.h"
#include "api/ops.h"
#include "core/clock.h"
#include "core/json.h"
#include "http/metrics.h"
#include "jobs/pool.h"
#include "store/db.h"

static int health(struct hctx *h)
{
    struct ops_health s;
    ops_health_snapshot(h->app, &s);
    struct jw w;
    jw_init(&w, &h->out);
    jw_obj_open(&w);
    jw_kstr(&w, "status", s.status);
    jw_kstr(&w, "version", app_version());
    jw_kint(&w, "uptime_seconds", s.uptime_s);
    jw_key(&w, "checks");
    jw_obj_open(&w);
    jw_kstr(&w, "database", s.database);
    jw_kstr(&w, "cache", s.cache);
    jw_kstr(&w, "dependencies", s.workers);
    jw_obj_close(&w);
    jw_obj_close(&w);
    h->status = s.status[0] == 'u' ? 503 : 200;
    return jw_finish(&w);
}

static int ready(struct hctx *h)
{
    struct app *app = h->app;
    bool ok = app->ready && !app->draining && ops_check_database(app)[0] == 'h';
    struct jw w;
    jw_init(&w, &h->out);
    jw_obj_open(&w);
    jw_kbool(&w, "ready", ok);
    jw_obj_close(&w);
    h->status = ok ? 200 : 503;
    return jw_finish(&w);
}

/* Series labelled with a tenant_id are that tenant's data: they go only to a caller holding
 * a credential of that tenant (anonymous scrapes get the server-wide families). */
static int metrics(struct hctx *h)
{
    h->req->content_type = METRICS_CONTENT_TYPE;
    int r = metrics_write_scoped(h->app->metrics, &h->out, "tenant_id", h->tenant_id);
    return r < 0 ? TS_E_INTERNAL : 0;
}

static const struct route ops_routes[] = {
    {"GET", "/health", health, "public", "none", RUN_LOOP, 0, RF_PUBLIC | RF_NO_SHED},
    {"GET", "/ready", ready, "public", "none", RUN_LOOP, 0, RF_PUBLIC | RF_NO_SHED},
    {"GET", "/metrics", metrics, "public", "none", RUN_LOOP, 0,
     RF_PUBLIC | RF_NO_METRICS | RF_NO_SHED | RF_CREDENTIAL_OPTIONAL},
};

const struct route_table ops_route_table = {SURF_RECS, ops_routes,
                                            sizeof(ops_routes) / sizeof(ops_routes[0])};
