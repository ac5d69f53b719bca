/* GET /ws/ops: a WebSocket for control planes. It sends a health snapshot on connect and
 * again for every text message received, and closes with 1001 when the server drains. */
#include <string.h>

#include "api/app.h"
#include "api/ops.h"
#include "core/clock.h"
#include "core/json.h"
#include "http/ws.h"

static void send_snapshot(struct ws_session *s, struct app *app)
{
    struct ops_health h;
    ops_health_snapshot(app, &h);
    char ts[40];
    clock_iso8601(clock_now_ms(), 0, ts, sizeof(ts));
    struct buf b;
    buf_init(&b, 4096);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kstr(&w, "type", "health");
    jw_kstr(&w, "status", h.status);
    jw_kbool(&w, "ready", app->ready && !app->draining);
    jw_kint(&w, "uptime_seconds", h.uptime_s);
    jw_kstr(&w, "timestamp", ts);
    jw_key(&w, "checks");
    jw_obj_open(&w);
    jw_kstr(&w, "database", h.database);
    jw_kstr(&w, "cache", h.cache);
    jw_kstr(&w, "dependencies", h.workers);
    jw_obj_close(&w);
    jw_obj_close(&w);
    if (jw_finish(&w) == 0)
        ws_session_send_text(s, b.data, b.len);
    buf_release(&b);
}

static void live_open(struct ws_session *s, void *user)
{
    send_snapshot(s, user);
}

static void live_message(struct ws_session *s, void *user, const char *text, size_t n,
                         bool binary)
{
    (void)text, (void)n, (void)binary;
    send_snapshot(s, user);
}

static const struct ws_handlers live_handlers = {live_open, live_message, NULL};

static int live(struct hctx *h)
{
    return ws_upgrade(h->req, h->app->hub, "ops", NULL, &live_handlers, h->app);
}

static const struct route live_routes[] = {
    {"GET", "/ws/ops", live, "public", "default", RUN_LOOP, 0, RF_PUBLIC | RF_WEBSOCKET},
};

const struct route_table live_route_table = {SURF_RECS, live_routes,
                                             sizeof(live_routes) / sizeof(live_routes[0])};
