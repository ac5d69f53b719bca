/* The dispatcher: parse -> route -> auth -> tenant -> permission -> rate -> validate -> handler,
 * each a short step, then the response, its metrics and its log line. */
#include <ctype.h>
#include <errno.h>
#include <llhttp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "api/app.h"
#include "api/observe.h"
#include "auth/audit.h"
#include "auth/session.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/log.h"
#include "http/metrics.h"
#include "http/ws.h"
#include "jobs/pool.h"
#include "store/db.h"

#define QUERY_MAX_PARAMS 256  /* key=value pairs in a query string (as commerce's CM_QUERY_MAX) */
#define OUT_MAX (64u << 20)

struct pool_call {
    struct pool_task task;
    struct hctx *h;
    const struct route *route;
    int result;
    int fault;                  /* storage fault met before or in the pool half (db_fault_get) */
    bool stale;                 /* waited past --shed-wait-ms for a worker: not run, shed */
};

/* A response computed on the writer while the tick's transaction was open stands on that
 * transaction: it may report the request's own writes, or read other requests' uncommitted
 * ones. The server sends it only after dispatch_tick; if the transaction was rolled back
 * instead of committed (a storage fault), the response is replaced by that error. */
struct tick_wait {
    struct hctx *h;
    uint64_t tx;                /* db_tx_seq when the handler returned */
    struct tick_wait *next;
};

static struct app *app_of(struct request *req)
{
    return server_arg(req->srv);
}

static bool request_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("-_.:", s[i]))
            return false;
    return true;
}

static void step_request_id(struct request *req)
{
    if (req->request_id[0])
        return;
    const char *given = http_header_get(req, "X-Request-ID");
    if (given && request_id_ok(given))
        snprintf(req->request_id, sizeof(req->request_id), "%s", given);
    else
        id_uuid7(req->request_id);
}

static struct hctx *hctx_new(struct request *req, struct app *app)
{
    struct hctx *h = arena_calloc(req->arena, sizeof(*h));
    h->req = req;
    h->arena = req->arena;
    h->app = app;
    h->surface = req->surface >= 0 ? (enum surface)req->surface : SURF_RECS;
    h->status = 200;
    buf_init(&h->out, OUT_MAX);
    req->ctx = h;
    return h;
}

static void hctx_release(void *arg)
{
    struct hctx *h = arg;
    buf_release(&h->out);
    if (h->body)
        json_decref(h->body);
}

/* ---- CORS ---- */

static bool cors_allowed(const struct app *app, const char *origin)
{
    const struct config_list *l = &app->cfg->cors_origins;
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->v[i], "*") == 0 || strcasecmp(l->v[i], origin) == 0)
            return true;
    return false;
}

static void step_cors(struct request *req, struct app *app)
{
    const char *origin = http_header_get(req, "Origin");
    if (origin == NULL || !cors_allowed(app, origin))
        return;
    http_header_add(req, "Access-Control-Allow-Origin", origin);
    http_header_add(req, "Access-Control-Allow-Credentials", "true");
    http_header_add(req, "Vary", "Origin");
    http_header_add(req, "Access-Control-Expose-Headers",
                    "X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, "
                    "Retry-After");
}

static void answer_preflight(struct hctx *h, const char *allow)
{
    struct request *req = h->req;
    http_header_add(req, "Allow", allow);
    if (http_header_get(req, "Origin") && cors_allowed(h->app, http_header_get(req, "Origin"))) {
        const char *want = http_header_get(req, "Access-Control-Request-Headers");
        http_header_add(req, "Access-Control-Allow-Methods", allow);
        http_header_add(req, "Access-Control-Allow-Headers",
                        want ? want : "Authorization, Content-Type, X-Request-ID");
        http_header_add(req, "Access-Control-Max-Age", "600");
    }
    h->status = 204;
}

/* ---- finishing ---- */

/* Every state-changing call a tenant can be named for leaves an audit row (who, what, how it
 * ended), written in the same tick as the change itself. */
static void audit_call(struct hctx *h)
{
    const struct route *rt = h->req->route;
    struct request *req = h->req;
    if (rt == NULL || h->tenant_id == NULL || !strcmp(rt->method, "GET") ||
        (rt->flags & (RF_WEBSOCKET | RF_NO_AUDIT)))
        return;
    const char *target = h->audit_target;
    if (target == NULL && req->nparams > 0)
        target = req->params[0].value;
    struct audit_entry e = {
        .tenant_id = h->tenant_id,
        .actor_id = h->who.kind == PRINCIPAL_API_KEY ? h->who.key_id : h->user_id,
        .actor_kind = h->who.kind == PRINCIPAL_API_KEY ? "api_key"
                      : h->user_id                     ? "user"
                                                       : "anonymous",
        .method = rt->method,
        .route = rt->path,
        .path = req->path,
        .target = target,
        .status = req->status ? req->status : h->status,
        .request_id = req->request_id,
    };
    audit_write(h->app->db, &e);
}

/* The error body, and Retry-After for what passes (a rate limit, the overload or storage
 * 503s, a full disk's 507). */
static void error_respond(struct hctx *h, int r)
{
    if (r < TS_E_FIRST || r >= TS_E_LAST)
        r = TS_E_INTERNAL; /* an errno leaked up: never shown to the client as such */
    if (h->retry_after_s <= 0 && r != TS_E_RATE_LIMITED)
        h->retry_after_s = err_retry_after(r);
    api_error(h, r, h->err_message, h->err_field);
    if (h->retry_after_s > 0 && (r == TS_E_RATE_LIMITED || err_retry_after(r) > 0)) {
        char v[16];
        snprintf(v, sizeof(v), "%d", h->retry_after_s);
        http_header_add(h->req, "Retry-After", v);
    }
}

static void finish(struct hctx *h, int r)
{
    struct request *req = h->req;
    if (r < 0)
        error_respond(h, r);
    if (req->status == 0)
        req->status = h->status;
    audit_call(h);
    if (r >= 0 && h->tenant_id && req->route && strcmp(((const struct route *)req->route)->method, "GET"))
        observe_tenant_wrote(h->app, h->tenant_id);
    if (req->status != 204 && req->status != 101 && h->out.len > 0) {
        req->content_type = req->content_type ? req->content_type : "application/json";
        buf_release(&req->out_body);
        req->out_body = h->out;
        buf_init(&h->out, OUT_MAX);
    }
    http_response_send(req);
}

/* ---- steps ---- */

static int step_route(struct hctx *h, struct route_match *m)
{
    struct request *req = h->req;
    struct app *app = h->app;
    char *path = arena_strdup(req->arena, req->path);
    int r = router_match(app->router, req->method_name, path, req->arena, m);
    h->surface = m->surface;
    req->surface = (int)m->surface;
    if (r == 0) {
        req->route = m->route;
        req->endpoint = m->route->path;
        memcpy(req->params, m->params, sizeof(m->params));
        req->nparams = m->nparams;
        return 0;
    }
    if (r == TS_E_METHOD_NOT_ALLOWED && req->method != HTTP_OPTIONS)
        http_header_add(req, "Allow", m->allow);
    return r;
}

/* Load shedding. Each class of route (RUN_LOOP, RUN_POOL) has its own bound of
 * --max-inflight requests being handled (waiting for or running on the pool, or waiting for the
 * tick's commit); past it a request of that class is answered 503 with Retry-After before any
 * work is spent on it. A pool route is also shed while the pool is backed up: the oldest
 * request waiting for a worker has waited --shed-queue-ms, or a quarter of it in a queue that
 * has not emptied for all of it. That is the pool falling behind, whatever the count; a burst
 * the workers will drain in a moment is not (a count alone shed a thousand requests of a
 * 10-minute soak at 80% of capacity). The second form is for clients with one request out per
 * connection: at 3x capacity in the soak, 700 such clients kept 700 requests queued that had
 * waited 0.4-0.8 s each, never the bound, while the rest of the backlog grew in the clients
 * (to 23 s), where no server count can see it. The standing queue must have lasted the whole
 * bound: with half of it (and waits past a fifth), half-second stalls of the whole process on a
 * busy host shed 132 requests of the 80% soak. The loop then does a bounded amount of real work
 * per iteration, so
 * latency stays bounded under any offered load and the probes (RF_NO_SHED) keep answering.
 * One bound for both would let a backlog on the pool (reports, scans) shed the loop's point
 * reads and writes too, which cost the pool nothing and would not have made it drain faster. */
static bool pool_backed_up(const struct app *app)
{
    int ms = app->cfg->shed_queue_ms;
    if (ms <= 0 || app->pool == NULL)
        return false;
    uint64_t bound = (uint64_t)ms * 1000000u;
    struct pool_backlog b = pool_backlog(app->pool);
    return b.wait_ns > bound || (b.standing_ns > bound && b.wait_ns > bound / 4);
}

/* A request refused to shed load: 503 with Retry-After, and counted for shed_log rather than
 * logged as a failed request of its own. */
static int shed(struct hctx *h, const char *why)
{
    h->retry_after_s = 1;
    h->err_message = why;
    h->shed = true;
    return TS_E_UNAVAILABLE;
}

/* Sheds are counted, not logged one by one: a line per refused request would cost the loop
 * most when it has least to spare (3x capacity sheds thousands a second). The first shed after
 * a quiet second is logged at once; after it, at most one line a second says how many more.
 * What a quiet spell leaves uncounted goes out with the next line or at shutdown. */
#define SHED_LOG_NS 1000000000u

static void shed_log_flush(struct app *app, uint64_t now)
{
    uint64_t n = app->shed_unlogged;
    if (n == 1)
        log_msg(LOG_WARN, "overloaded: answered 503 to a request (--max-inflight %d,"
                " --shed-queue-ms %d)", app->cfg->max_inflight, app->cfg->shed_queue_ms);
    else if (n > 1)
        log_msg(LOG_WARN, "overloaded: answered 503 to %llu requests in the last %.1f s"
                " (--max-inflight %d, --shed-queue-ms %d)", (unsigned long long)n,
                (double)(now - app->shed_first_ns) / 1e9, app->cfg->max_inflight,
                app->cfg->shed_queue_ms);
    app->shed_unlogged = 0;
    app->shed_logged_ns = now;
}

static void shed_log(struct app *app)
{
    uint64_t now = clock_mono_ns();
    if (app->shed_unlogged++ == 0)
        app->shed_first_ns = now;
    if (app->shed_logged_ns == 0 || now - app->shed_logged_ns >= SHED_LOG_NS)
        shed_log_flush(app, now);
}

static int step_shed(struct hctx *h, const struct route *rt)
{
    struct app *app = h->app;
    if ((rt->flags & RF_NO_SHED) || app->cfg->max_inflight <= 0)
        return 0;
    int *n = &app->inflight[rt->where];
    if (*n >= app->cfg->max_inflight || (rt->where == RUN_POOL && pool_backed_up(app)))
        return shed(h, "server is overloaded; retry shortly");
    (*n)++;
    h->inflight = n;
    return 0;
}

/* Public routes skip it; every other route needs a verified credential (JWT or API key).
 * Browsers cannot set headers on a WebSocket: those routes also take ?access_token= or
 * `Sec-WebSocket-Protocol: bearer, <token>`. */
static int step_auth(struct hctx *h, const struct route *rt)
{
    const char *authz = http_header_get(h->req, "Authorization");
    if (rt->flags & RF_PUBLIC) {
        if (authz == NULL || !(rt->flags & RF_CREDENTIAL_OPTIONAL))
            return 0;
        return auth_authenticate(h->app->auth, h->app->db, authz, &h->who, &h->err_message);
    }
    if (authz == NULL && (rt->flags & RF_WEBSOCKET)) {
        const char *q = http_query_get(h->req, "access_token");
        if (q == NULL)
            q = ws_bearer_token(h->req);
        if (q)
            authz = arena_printf(h->arena, "Bearer %s", q);
    }
    return auth_authenticate(h->app->auth, h->app->db, authz, &h->who, &h->err_message);
}

/* The tenant comes from the credential, never from the request. */
static int step_tenant(struct hctx *h)
{
    if (h->who.kind == PRINCIPAL_NONE)
        return 0;
    h->tenant_id = h->who.tenant_id;
    h->user_id = h->who.kind == PRINCIPAL_USER ? h->who.user_id : NULL;
    return 0;
}

static int step_permission(struct hctx *h, const struct route *rt)
{
    if (rt->flags & RF_PUBLIC)
        return 0;
    const struct permission *p = perm_find(rt->permission);
    const char *self = rt->self_param ? http_param_get(h->req, rt->self_param) : NULL;
    int r = p ? perm_check(p, &h->who, self) : TS_E_FORBIDDEN;
    if (r == TS_E_FORBIDDEN)
        h->err_message = h->who.kind == PRINCIPAL_API_KEY
                             ? "API key does not grant this permission"
                             : "User does not have required role";
    return r;
}

static int step_rate(struct hctx *h, const struct route *rt)
{
    char principal[80];
    if (strcmp(rt->rate_class, "none") == 0)
        return 0;
    if ((rt->flags & RF_RATE_TENANT) && h->tenant_id)
        snprintf(principal, sizeof(principal), "t:%s", h->tenant_id);
    else if (h->user_id)
        snprintf(principal, sizeof(principal), "u:%s", h->user_id);
    else if (h->who.kind == PRINCIPAL_API_KEY)
        snprintf(principal, sizeof(principal), "k:%s", h->who.key_id); /* "per API key" */
    else
        observe_peer_address(h->req, principal, sizeof(principal));
    return observe_rate_take(h, rt->rate_class, principal);
}

/* Every handler reads the query through a linear scan (http_query_get, cm_query_parse): the
 * URL limit bounds its length, this its pairs. Empty pairs ("a&&b") are not counted. */
static int step_query(struct hctx *h)
{
    int n = 0;
    for (const char *s = h->req->query; s && *s;) {
        const char *amp = strchr(s, '&');
        size_t len = amp ? (size_t)(amp - s) : strlen(s);
        if (len > 0 && ++n > QUERY_MAX_PARAMS) {
            h->err_field = "query";
            h->err_message = arena_printf(h->arena, "too many query parameters (at most %d)",
                                          QUERY_MAX_PARAMS);
            return TS_E_VALIDATION;
        }
        s += len + (amp != NULL);
    }
    return 0;
}

/* No route decodes a compressed body: one would be stored or parsed as the compressed bytes.
 * Refuse it (RFC 9110 15.5.16) rather than inflate it, which would also need a ratio cap. */
static int step_encoding(struct hctx *h)
{
    const char *ce = http_header_get(h->req, "Content-Encoding");
    if (ce == NULL || h->req->body_size == 0)
        return 0;
    while (*ce == ' ' || *ce == '\t')
        ce++;
    size_t n = strcspn(ce, " \t");
    if (n == 8 && strncasecmp(ce, "identity", 8) == 0 && ce[n + strspn(ce + n, " \t")] == '\0')
        return 0;
    http_header_add(h->req, "Accept-Encoding", "identity");
    h->err_field = "Content-Encoding";
    h->err_message = "compressed request bodies are not accepted; send the body uncompressed";
    return TS_E_UNSUPPORTED_MEDIA;
}

int dispatch_validate_body(struct hctx *h, unsigned flags)
{
    if (!(flags & RF_JSON_BODY))
        return 0;
    struct request *req = h->req;
    const char *ct = http_header_get(req, "Content-Type");
    if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0) {
        h->err_field = "Content-Type";
        h->err_message = "Content-Type must be application/json";
        return TS_E_UNSUPPORTED_MEDIA;
    }
    if (json_too_deep(req->body.data ? req->body.data : "", req->body.len, JSON_MAX_DEPTH)) {
        h->err_field = "body";
        h->err_message = arena_printf(h->arena, "JSON nested deeper than %d levels", JSON_MAX_DEPTH);
        return TS_E_VALIDATION;
    }
    json_error_t jerr;
    h->body = json_loadb(req->body.data ? req->body.data : "", req->body.len,
                         JSON_REJECT_DUPLICATES, &jerr);
    if (h->body == NULL || !json_is_object(h->body)) {
        h->err_field = "body";
        h->err_message = h->body ? "request body must be a JSON object" : "invalid JSON";
        return TS_E_VALIDATION;
    }
    return 0;
}

/* ---- handlers and the tick ---- */

static void tick_wait_add(struct hctx *h, uint64_t tx)
{
    struct tick_wait *w = arena_calloc(h->arena, sizeof(*w));
    w->h = h;
    w->tx = tx;
    w->next = h->app->tick_waits;
    h->app->tick_waits = w;
}

/* A storage fault SQLite reported on this thread since db_fault_clear is the answer, whatever
 * the step made of the failed statement: an auth step that cannot read the session would say
 * 401, a read loop that stops at the error would answer a short list with 200. */
static int fault_override(struct hctx *h, int r)
{
    int f = db_fault_get();
    if (f == 0)
        return r;
    h->err_message = NULL;
    h->err_field = NULL;
    return f;
}

/* Runs fn (a loop handler, or a pool handler's done half) on the writer, under the request's
 * savepoint and the guard. A storage fault met meanwhile fails the request (fault_override;
 * one met before fn deferred to the pool fails it there) and rolls back what fn wrote. */
static int writer_run(struct hctx *h, int (*fn)(struct hctx *h))
{
    struct app *app = h->app;
    h->db = db_handle(app->db);
    db_guard_arm(app->db);
    db_request_start(app->db);
    db_fault_clear();
    int r = fn(h);
    bool faulted = db_fault_get() < 0;
    if (r != HANDLER_DEFERRED)
        r = fault_override(h, r);
    uint64_t tx = db_tx_seq(app->db); /* before the savepoint ends: that may end the tick too */
    db_request_end(app->db, r >= 0 && !faulted);
    db_guard_disarm(app->db);
    if (r == HANDLER_DEFERRED || tx == 0)
        return r;
    int t = db_tx_result(app->db, tx);
    if (t < 0) { /* rolled back already: answer (and audit) the failure, not the handler's */
        h->err_message = NULL;
        h->err_field = NULL;
        return t;
    }
    tick_wait_add(h, tx);
    return r;
}

/* The tick's transaction was rolled back: the response becomes the error, in the surface's
 * format, with nothing of what the handler had put in it. */
static void response_replace(struct hctx *h, int err)
{
    struct request *req = h->req;
    buf_release(&req->out_headers);
    buf_release(&req->out_body);
    step_cors(req, h->app);
    if (req->out_fd >= 0) {
        close(req->out_fd);
        req->out_fd = -1;
    }
    req->out_mem = NULL;
    req->upgrade_cb = NULL;
    req->content_type = "application/json";
    h->ferrs = NULL;
    h->nferrs = 0;
    h->err_message = NULL;
    h->err_field = NULL;
    h->retry_after_s = 0;
    error_respond(h, err);
    req->status = h->status;
    req->out_body = h->out;
    buf_init(&h->out, OUT_MAX);
}

/* After the tick: responses whose transaction committed go out as they are, the others are
 * replaced. Nothing may still wait once the server flushes (it frees the requests). */
static void tick_waits_settle(struct app *app)
{
    for (struct tick_wait *w = app->tick_waits; w; w = w->next) {
        int t = db_tx_result(app->db, w->tx);
        if (t < 0)
            response_replace(w->h, t);
    }
    app->tick_waits = NULL;
}

/* A request that waited past --shed-wait-ms for a worker is not run: its client has waited
 * most of a typical timeout already, and the work would delay every request queued behind it
 * to answer one that may be gone. Sheds at submit (step_shed) stop the queue growing; this
 * empties one that grew before they began, as under a sudden 3x. */
static bool pool_call_stale(const struct pool_call *pc)
{
    int ms = pc->h->app->cfg->shed_wait_ms;
    uint64_t now = clock_mono_ns();
    return ms > 0 && now > pc->task.queued_ns &&
           now - pc->task.queued_ns > (uint64_t)ms * 1000000u;
}

static void pool_call_work(struct pool_task *t, struct pool_worker *w)
{
    struct pool_call *pc = (struct pool_call *)t;
    if ((pc->stale = pool_call_stale(pc)))
        return;
    pc->h->db = w->db;
    db_fault_clear();
    if (w->db == NULL)
        pc->result = TS_E_UNAVAILABLE;
    else if (pc->h->pool_work)
        pc->h->pool_work(pc->h);
    else
        pc->result = pc->route->handler(pc->h);
    if (db_fault_get() < 0)
        pc->fault = db_fault_get();
}

/* A storage fault on either side of the hop is the answer, and the done half does not run —
 * as when the pool never ran (its cleanups are the arena's): it would act on what the failed
 * reads told it, and count a login whose user row could not be read as a wrong password. */
static void pool_call_done(struct pool_task *t, int status)
{
    struct pool_call *pc = (struct pool_call *)t;
    struct hctx *h = pc->h;
    int r = status < 0 ? TS_E_UNAVAILABLE : pc->result;
    if (status == 0 && pc->stale) {
        r = shed(h, "server is overloaded; retry shortly");
    } else if (status == 0 && pc->fault < 0) {
        h->err_message = NULL;
        h->err_field = NULL;
        r = pc->fault;
    } else if (status == 0 && h->pool_done) {
        r = writer_run(h, h->pool_done);
    }
    finish(h, r);
}

static int pool_call_submit(struct hctx *h, const struct route *rt)
{
    struct pool_call *pc = arena_calloc(h->arena, sizeof(*pc));
    pc->task.work = pool_call_work;
    pc->task.done = pool_call_done;
    pc->h = h;
    pc->route = rt;
    pc->fault = db_fault_get(); /* met by the loop half before it deferred */
    if (pool_submit(h->app->pool, &pc->task) < 0)
        return shed(h, "worker pool is full; retry shortly");
    return HANDLER_DEFERRED;
}

/* A loop handler's pool hop (a login's argon2id, ...) is shed like a pool route while the pool
 * is backed up: step_shed could not know the route would need the pool. The handler's writes so
 * far are rolled back with its savepoint, as for any error. */
int api_defer_to_pool(struct hctx *h, void (*work)(struct hctx *h), int (*done)(struct hctx *h))
{
    if (pool_backed_up(h->app))
        return shed(h, "server is overloaded; retry shortly");
    h->pool_work = work;
    h->pool_done = done;
    return pool_call_submit(h, h->req->route);
}

static void step_handler(struct hctx *h, const struct route *rt)
{
    int r;
    if (rt->where == RUN_POOL)
        r = pool_call_submit(h, rt);
    else
        r = writer_run(h, rt->handler);
    if (r != HANDLER_DEFERRED)
        finish(h, r);
}

/* Everything after admission: credential, tenant, permission, rate, query, body, handler. */
static void dispatch_admitted(struct hctx *h, const struct route *rt)
{
    db_fault_clear();
    int r = step_auth(h, rt);
    if (r == 0)
        r = step_tenant(h);
    if (r == 0)
        r = step_permission(h, rt);
    if (r == 0)
        r = step_rate(h, rt);
    if (r == 0)
        r = step_query(h);
    if (r == 0)
        r = step_encoding(h);
    if (r == 0)
        r = dispatch_validate_body(h, rt->flags);
    if (r < 0) {
        finish(h, fault_override(h, r));
        return;
    }
    if (observe_cache_lookup(h, rt))
        return;
    step_handler(h, rt);
}

/* ---- the per-iteration budget ----
 * One loop iteration reads every connection that became readable (up to a thousand at once
 * under load) and sends nothing before the iteration's commit, so without a bound an iteration
 * does a thousand handlers' work and every answer in it, /health's too, waits for all of them.
 * Past DISPATCH_BUDGET admitted requests in one iteration, a request is parked (already counted
 * in flight, so --max-inflight bounds the queue) and handled, in arrival order, at the start of
 * the next iteration, before that iteration reads anything new; the probes are never parked. */
#define DISPATCH_BUDGET 64

static void unpark_spin_cb(uv_idle_t *h)
{
    (void)h; /* while requests are parked the loop must not block in poll */
}

static void unpark_cb(uv_prepare_t *p)
{
    struct app *app = p->data;
    app->dispatched = 0;
    while (app->parked_head && app->dispatched < DISPATCH_BUDGET) {
        struct hctx *h = app->parked_head;
        app->parked_head = h->next_parked;
        if (app->parked_head == NULL)
            app->parked_tail = &app->parked_head;
        app->dispatched++;
        dispatch_admitted(h, h->req->route);
    }
    if (app->parked_head == NULL)
        uv_idle_stop(&app->unpark_spin);
}

static void park(struct app *app, struct hctx *h)
{
    h->next_parked = NULL;
    *app->parked_tail = h;
    app->parked_tail = &h->next_parked;
    uv_idle_start(&app->unpark_spin, unpark_spin_cb);
    metric_inc(app->m_parked, NULL, 1);
}

void dispatch_start(struct app *app)
{
    app->parked_tail = &app->parked_head;
    uv_prepare_init(app->loop, &app->unpark);
    app->unpark.data = app;
    uv_prepare_start(&app->unpark, unpark_cb);
    uv_unref((uv_handle_t *)&app->unpark); /* the idle handle holds the loop for parked work */
    uv_idle_init(app->loop, &app->unpark_spin);
}

/* At shutdown, after the drain: what is still parked belongs to clients that have gone; its
 * answer (503) is freed with the server. */
void dispatch_close_handles(struct app *app)
{
    while (app->parked_head) {
        struct hctx *h = app->parked_head;
        app->parked_head = h->next_parked;
        h->err_message = "server is shutting down";
        finish(h, TS_E_UNAVAILABLE);
    }
    app->parked_tail = &app->parked_head;
    shed_log_flush(app, clock_mono_ns());
    uv_close((uv_handle_t *)&app->unpark, NULL);
    uv_close((uv_handle_t *)&app->unpark_spin, NULL);
}

void dispatch_request(struct request *req)
{
    struct app *app = app_of(req);
    step_request_id(req);
    struct hctx *h = hctx_new(req, app);
    arena_defer(req->arena, hctx_release, h);
    step_cors(req, app);
    struct route_match m;
    int r = step_route(h, &m);
    if (req->method == HTTP_OPTIONS && (r == TS_E_METHOD_NOT_ALLOWED)) {
        answer_preflight(h, m.allow);
        finish(h, 0);
        return;
    }
    const struct route *rt = m.route;
    if (r == 0)
        r = step_shed(h, rt);
    if (r < 0) {
        finish(h, r);
        return;
    }
    if (rt->flags & RF_NO_SHED) {
        dispatch_admitted(h, rt);
    } else if (app->dispatched >= DISPATCH_BUDGET || app->parked_head) {
        park(app, h);
    } else {
        app->dispatched++;
        dispatch_admitted(h, rt);
    }
}

void dispatch_error(struct request *req, int err)
{
    struct app *app = app_of(req);
    step_request_id(req);
    struct hctx *h = hctx_new(req, app);
    arena_defer(req->arena, hctx_release, h);
    if (req->path) {
        struct route_match m;
        char *path = arena_strdup(req->arena, req->path);
        router_match(app->router, req->method_name ? req->method_name : "GET", path, req->arena,
                     &m);
        h->surface = m.surface;
        req->surface = (int)m.surface;
    }
    req->close_after = true;
    finish(h, err);
}

size_t dispatch_body_limit(struct request *req)
{
    if (http_header_get(req, "Content-Length") == NULL &&
        http_header_get(req, "Transfer-Encoding") == NULL)
        return 0;
    struct route_match m;
    char *path = arena_strdup(req->arena, req->path);
    if (router_match(app_of(req)->router, req->method_name, path, req->arena, &m) != 0)
        return 0;
    if (m.route->flags & RF_SPOOL_BODY) {
        req->spool = true; /* uploads stream to disk, never whole into memory */
        return (size_t)app_of(req)->cfg->max_upload_mb << 20;
    }
    if (m.route->flags & RF_BIG_BODY)
        return (size_t)app_of(req)->cfg->max_batch_mb << 20;
    return 0;
}

void dispatch_sent(struct request *req)
{
    struct hctx *h = req->ctx;
    if (h && h->inflight) {
        (*h->inflight)--;
        h->inflight = NULL;
    }
    double ms = (double)(clock_mono_ns() - req->start_ns) / 1e6;
    const struct route *rt = req->route;
    if (!(rt && (rt->flags & RF_NO_METRICS)))
        observe_request(app_of(req), req, ms);
    if (h && h->status < 400 && rt && rt->cache_ttl_s > 0)
        observe_cache_store(h, rt);
    struct log_request lr = {
        .request_id = req->request_id,
        .tenant_id = h ? h->tenant_id : NULL,
        .user_id = h ? h->user_id : NULL,
        .method = req->method_name ? req->method_name : "-",
        .endpoint = req->endpoint ? req->endpoint : "unmatched",
        .path = req->path ? req->path : "-",
        .status_code = req->status,
        .duration_ms = ms,
        .error = req->err_code,
    };
    if (h && h->shed && req->status == 503)
        shed_log(app_of(req));
    else
        log_request_done(&lr);
}

/* The server's tick: commit, then settle the responses that waited for it. Busy: < 0, the
 * server retries. A commit that failed for storage (rolled back) still returns 0: its
 * responses have become errors and go out now. */
int dispatch_tick(void *arg)
{
    struct app *app = arg;
    int r = db_tick_commit(app->db);
    if (r == TS_E_BUSY)
        return r;
    if (r == 0)
        observe_tick_committed(app); /* cached reads of tenants that wrote are now stale */
    tick_waits_settle(app);
    return 0;
}
