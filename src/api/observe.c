/* Rate limits, the response cache and request metrics, as the dispatcher's steps use them. */
#include "api/observe.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/cache.h"
#include "auth/perms.h"
#include "auth/ratelimit.h"
#include "http/metrics.h"
#include "http/ws.h"
#include "jobs/pool.h"
#include "core/ids.h"
#include "store/db.h"

#define RATE_MAX_KEYS 100000
#define CACHE_BYTES (32u << 20)
#define CACHE_TENANTS 10000

/* Route classes and their defaults (requests per window); --rate-limit CLASS=N/S overrides. */
static const char *const default_classes[] = {
    "default=600/60", "auth=20/60",         "analytics=500/3600",
    "ingest=1000/3600", "stream=10000/3600", "export=20/3600",
    "commerce=1000/3600", /* commerce 6.2 "general APIs" */
    "recs=1000/60",       /* recs 5: recommendations, per tenant (RF_RATE_TENANT) */
};

static double conns_active(void *arg)
{
    struct app *app = arg;
    return app->server ? (double)server_stats(app->server)->connections_active : 0;
}

/* Requests counted against --max-inflight (dispatch.c's step_shed). */
static double requests_in_flight(void *arg)
{
    const struct app *app = arg;
    return (double)(app->inflight[RUN_LOOP] + app->inflight[RUN_POOL]);
}

static double ws_active(void *arg)
{
    struct app *app = arg;
    return app->hub ? (double)ws_hub_stats(app->hub)->sessions_active : 0;
}

static void collect_cache(struct metrics *m, void *arg)
{
    (void)m;
    struct app *app = arg;
    struct cache_stats cs;
    cache_stats(app->cache, &cs);
    uint64_t total = cs.hits + cs.misses;
    const char *v[] = {METRICS_SERVICE};
    metric_set(app->mstd->cache_hit_rate, v, total ? (double)cs.hits / (double)total : 0);
}

static int rate_init(struct app *app, char *err, size_t errlen)
{
    app->rl = ratelimit_new(RATE_MAX_KEYS);
    if (app->rl == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < sizeof(default_classes) / sizeof(default_classes[0]); i++)
        if (ratelimit_class_parse(app->rl, default_classes[i], err, errlen) < 0)
            return -EINVAL;
    const struct config_list *l = &app->cfg->rate_limits;
    for (int i = 0; i < l->n; i++) {
        char e2[200];
        if (ratelimit_class_parse(app->rl, l->v[i], e2, sizeof(e2)) < 0) {
            snprintf(err, errlen, "--rate-limit '%s': %s", l->v[i], e2);
            return -EINVAL;
        }
    }
    return 0;
}

/* Every route's rate class and permission must exist: a typo in a route table fails at
 * start, not at 3am. */
static int rate_check_routes(struct app *app, char *err, size_t errlen)
{
    for (size_t i = 0; i < router_count(app->router); i++) {
        const struct route *rt = router_route(app->router, i, NULL);
        if (!(rt->flags & RF_PUBLIC) && perm_find(rt->permission) == NULL) {
            snprintf(err, errlen, "route %s %s: unknown permission '%s'", rt->method, rt->path,
                     rt->permission);
            return -EINVAL;
        }
        if (strcmp(rt->rate_class, "none") != 0 &&
            ratelimit_class_find(app->rl, rt->rate_class) < 0) {
            snprintf(err, errlen, "route %s %s: unknown rate class '%s'", rt->method, rt->path,
                     rt->rate_class);
            return -EINVAL;
        }
    }
    return 0;
}

/* db_queries_total / db_query_duration_seconds, from SQLite's statement profile callback. */
static void db_profiled(void *arg, const char *sql, uint64_t ns)
{
    struct app *app = arg;
    if (app->mstd == NULL)
        return;
    char kind[16], table[48];
    db_sql_classify(sql, kind, sizeof(kind), table, sizeof(table));
    const char *v[] = {METRICS_SERVICE, kind, table};
    metric_inc(app->mstd->db_queries, v, 1);
    metric_observe(app->mstd->db_duration, v, (double)ns / 1e9);
}

void observe_db_hook(struct app *app)
{
    db_profile_hook(db_profiled, app);
}

int observe_init(struct app *app, char *err, size_t errlen)
{
    int r = rate_init(app, err, errlen);
    if (r == 0)
        r = rate_check_routes(app, err, errlen);
    if (r < 0)
        return r;
    app->cache = cache_new(CACHE_BYTES, CACHE_TENANTS);
    app->metrics = metrics_new();
    app->mstd = calloc(1, sizeof(*app->mstd));
    if (!app->cache || !app->metrics || !app->mstd)
        return -ENOMEM;
    r = metrics_std_register(app->metrics, app->mstd, app_version(), sqlite3_libversion(),
                             uv_version_string(), conns_active, ws_active, app);
    if (r == 0)
        r = metrics_on_collect(app->metrics, collect_cache, app);
    static const char *const service_label[] = {"service"}, *const service[] = {METRICS_SERVICE};
    if (r == 0 && metrics_gauge_fn(app->metrics, "http_requests_in_flight",
                                   "Requests being handled; past --max-inflight of a class (loop, pool) new ones get 503.",
                                   1, service_label, service, requests_in_flight, app) == NULL)
        r = -ENOMEM;
    if (r == 0 && (app->m_parked = metrics_counter(
                       app->metrics, "http_requests_parked_total",
                       "Requests admitted past one loop iteration's budget, handled in the next.",
                       0, NULL)) == NULL)
        r = -ENOMEM;
    if (r < 0)
        snprintf(err, errlen, "cannot register metrics (%d)", r);
    return r;
}

void observe_free(struct app *app)
{
    app->rl = ratelimit_free(app->rl);
    app->cache = cache_free(app->cache);
    app->metrics = metrics_free(app->metrics);
    free(app->mstd);
    app->mstd = NULL;
}

void observe_peer_address(struct request *req, char *out, size_t n)
{
    char ip[64];
    conn_peer_address(req->conn, ip, sizeof(ip));
    snprintf(out, n, "ip:%s", ip);
}

static void rate_headers(struct request *req, const struct ratelimit_result *rr)
{
    char v[24];
    snprintf(v, sizeof(v), "%d", rr->limit);
    http_header_add(req, "X-RateLimit-Limit", v);
    snprintf(v, sizeof(v), "%d", rr->remaining);
    http_header_add(req, "X-RateLimit-Remaining", v);
    snprintf(v, sizeof(v), "%d", rr->reset_s);
    http_header_add(req, "X-RateLimit-Reset", v);
}

int observe_rate_take(struct hctx *h, const char *rate_class, const char *principal)
{
    if (strcmp(rate_class, "none") == 0)
        return 0;
    int id = ratelimit_class_find(h->app->rl, rate_class);
    struct ratelimit_result rr;
    if (id < 0 || ratelimit_take(h->app->rl, id, principal, &rr) < 0)
        return TS_E_INTERNAL;
    rate_headers(h->req, &rr);
    if (rr.allowed)
        return 0;
    h->retry_after_s = rr.retry_after_s;
    static char msg[128];
    snprintf(msg, sizeof(msg), "Rate limit: %d requests for class %s. Try again in %d seconds.",
             rr.limit, rate_class, rr.retry_after_s);
    h->err_message = arena_strdup(h->arena, msg);
    return TS_E_RATE_LIMITED;
}

/* tenant + method + path + query + caller: two callers never share an entry. */
static const char *cache_key(struct hctx *h)
{
    struct request *req = h->req;
    return arena_printf(h->arena, "%s|%s|%s?%s|%s", h->tenant_id ? h->tenant_id : "-",
                        req->method_name, req->path, req->query ? req->query : "",
                        h->user_id ? h->user_id : "-");
}

bool observe_cache_lookup(struct hctx *h, const struct route *rt)
{
    if (rt->cache_ttl_s <= 0)
        return false;
    struct app *app = h->app;
    const char *tenant = h->tenant_id ? h->tenant_id : "-";
    h->cache_gen = cache_generation(app->cache, tenant);
    struct cache_hit hit;
    const char *v[] = {METRICS_SERVICE, "get", NULL};
    if (cache_get(app->cache, cache_key(h), tenant, h->cache_gen, &hit) < 0) {
        v[2] = "miss";
        metric_inc(app->mstd->cache_ops, v, 1);
        return false;
    }
    v[2] = "hit";
    metric_inc(app->mstd->cache_ops, v, 1);
    struct request *req = h->req;
    req->status = hit.status;
    req->content_type = arena_strdup(h->arena, hit.content_type);
    buf_append(&req->out_body, hit.body, hit.body_len);
    char age[16];
    snprintf(age, sizeof(age), "%d", hit.age_s);
    http_header_add(req, "Age", age);
    http_header_add(req, "X-Cache", "HIT");
    http_response_send(req);
    return true;
}

void observe_cache_store(struct hctx *h, const struct route *rt)
{
    struct request *req = h->req;
    const char *tenant = h->tenant_id ? h->tenant_id : "-";
    cache_put(h->app->cache, cache_key(h), tenant, h->cache_gen, rt->cache_ttl_s, req->status,
              req->content_type ? req->content_type : "application/json", req->out_body.data,
              req->out_body.len);
}

#define DIRTY_MAX 64

static char dirty[DIRTY_MAX][UUID_STR_LEN];
static int ndirty;
static bool dirty_overflow;

void observe_tenant_wrote(struct app *app, const char *tenant_id)
{
    (void)app;
    for (int i = 0; i < ndirty; i++)
        if (strcmp(dirty[i], tenant_id) == 0)
            return;
    if (ndirty == DIRTY_MAX) {
        dirty_overflow = true;
        return;
    }
    snprintf(dirty[ndirty++], UUID_STR_LEN, "%s", tenant_id);
}

void observe_tick_committed(struct app *app)
{
    if (app->cache == NULL)
        return;
    if (dirty_overflow) {
        /* more writers in one tick than we track: invalidate everything cached */
        struct cache *fresh = cache_new(CACHE_BYTES, CACHE_TENANTS);
        if (fresh) {
            cache_free(app->cache);
            app->cache = fresh;
        }
    }
    for (int i = 0; i < ndirty; i++)
        cache_bump(app->cache, dirty[i]);
    ndirty = 0;
    dirty_overflow = false;
}

void observe_request(struct app *app, struct request *req, double ms)
{
    struct metrics_std *m = app->mstd;
    char status[8];
    snprintf(status, sizeof(status), "%d", req->status);
    const char *endpoint = req->endpoint ? req->endpoint : "unmatched";
    const char *method = req->method_name ? req->method_name : "unknown";
    const char *v1[] = {METRICS_SERVICE, endpoint, method, status};
    metric_inc(m->http_requests, v1, 1);
    const char *v2[] = {METRICS_SERVICE, endpoint, method};
    metric_observe(m->http_duration, v2, ms / 1000.0);
    if (req->status >= 400) {
        const char *v3[] = {METRICS_SERVICE, endpoint, req->err_code ? req->err_code : status};
        metric_inc(m->http_errors, v3, 1);
    }
}
