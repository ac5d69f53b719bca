/* learning.md route table. Section 9: GET /api/v1/health (bare body, as the contract writes it). */
#include "api/app.h"
#include "api/ops.h"
#include "core/clock.h"
#include "core/json.h"

static int api_health(struct hctx *h)
{
    struct ops_health s;
    ops_health_snapshot(h->app, &s);
    char ts[40];
    clock_iso8601(clock_now_ms(), 0, ts, sizeof(ts));
    struct jw w;
    jw_init(&w, &h->out);
    jw_obj_open(&w);
    jw_kstr(&w, "status", s.status);
    jw_kstr(&w, "timestamp", ts);
    jw_kint(&w, "uptime", s.uptime_s);
    jw_kstr(&w, "environment", h->app->cfg->demo ? "demo" : "production");
    jw_key(&w, "services");
    jw_obj_open(&w);
    jw_kstr(&w, "database", s.database);
    jw_kstr(&w, "cache", s.cache);
    jw_key(&w, "microservices");
    jw_obj_open(&w);
    jw_kstr(&w, "http", s.http);
    jw_kstr(&w, "workers", s.workers);
    jw_obj_close(&w);
    jw_obj_close(&w);
    jw_obj_close(&w);
    h->status = s.status[0] == 'u' ? 503 : 200;
    return jw_finish(&w);
}

static const struct route learning_routes[] = {
    {"GET", "/api/v1/health", api_health, "public", "default", RUN_LOOP, 0, RF_PUBLIC},
};

const struct route_table learning_route_table = {
    SURF_LEARNING, learning_routes, sizeof(learning_routes) / sizeof(learning_routes[0])};
