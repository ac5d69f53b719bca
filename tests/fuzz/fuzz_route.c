/* libFuzzer target for the request path through routing: bytes over a loopback connection to
 * the real server (llhttp glue, limits, the dispatcher's per-route body limits and spooling),
 * then the router over every route table the server loads, and what handlers decode from a
 * request: query parameters (http_query_get, query_int, the commerce bracket parameters through
 * cm_query_parse, cm_param, cm_param_list, time_range, paging and the metric query), the JSON
 * body of RF_JSON_BODY routes, the Range header and WebSocket bearer tokens. (The server reads
 * no cookies.) Besides surviving the sanitizers, each step must keep what its header promises. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/config.h"
#include "core/err.h"
#include "http/http.h"
#include "http/ws.h"
#include "loopback.h"
#include "surfaces/commerce/common.h"
#include "surfaces/commerce/metrics.h"
#include "surfaces/desk/desk.h"

static uv_loop_t loop;
static struct config cfg;
static struct app app;
static struct server *srv;
static int port;
static char spool[] = "/tmp/tessera-fuzz-route-XXXXXX";

static void must(bool ok)
{
    if (!ok)
        abort();
}

/* A match names the request's method and fills one param per {name} of the pattern; a miss
 * says whether the path exists under other methods. */
static void check_match(const struct request *req, int r, const struct route_match *m)
{
    must(m->surface >= 0 && m->surface < SURF_COUNT);
    if (r != 0) {
        must(m->route == NULL);
        must(r == TS_E_NOT_FOUND || (r == TS_E_METHOD_NOT_ALLOWED && m->allow[0]));
        return;
    }
    must(m->route != NULL && strcmp(m->route->method, req->method_name) == 0);
    int want = 0;
    for (const char *p = m->route->path; (p = strchr(p, '{')) != NULL; p++)
        want++;
    must(m->nparams == (want < HTTP_MAX_PARAMS ? want : HTTP_MAX_PARAMS));
    for (int i = 0; i < m->nparams; i++)
        must(m->params[i].name[0] && strstr(m->route->path, m->params[i].name) &&
             m->params[i].value != NULL);
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

/* parent[name]..., parent.name: the parent and name a handler would ask for; false if plain. */
static bool key_split(struct arena *a, const char *key, const char **parent, const char **name)
{
    size_t p = strcspn(key, "[.");
    if (key[p] == '\0' || p == 0)
        return false;
    *parent = arena_strndup(a, key, p);
    const char *n = key + p + 1;
    *name = arena_strndup(a, n, strcspn(n, "]."));
    return (*name)[0] != '\0';
}

static void check_list(struct hctx *h, const struct cm_query *q, const char *parent,
                       const char *name)
{
    const char *out[CM_FILTER_MAX];
    int n = -1;
    if (cm_param_list(h, q, parent, name, out, CM_FILTER_MAX, &n) < 0)
        return;
    must(n >= 0 && n <= CM_FILTER_MAX);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(out[i]);
        must(len > 0 && !blank(out[i][0]) && !blank(out[i][len - 1]));
    }
}

/* The commerce decoder: every key finds itself, with the value http_query_get gives it; lists,
 * time ranges and pages stay in bounds. */
static void decode_commerce(struct hctx *h)
{
    struct cm_query *q = arena_alloc(h->arena, sizeof(*q));
    if (cm_query_parse(h, q) < 0) {
        must(h->err_field != NULL);
        return;
    }
    must(q->n >= 0 && q->n <= CM_QUERY_MAX);
    for (int i = 0; i < q->n; i++) {
        /* two decoders of one query string: http_query_get finds the first pair of a key */
        const char *first = cm_param(h, q, NULL, q->key[i]);
        const char *plain = http_query_get(h->req, q->key[i]);
        must(first != NULL);
        if (q->key[i][0]) /* (http_query_get reads "&&" as an empty name; nobody asks for one) */
            must(plain != NULL && strcmp(first, plain) == 0);
        const char *parent, *name;
        if (key_split(h->arena, q->key[i], &parent, &name)) {
            cm_param(h, q, parent, name);
            check_list(h, q, parent, name);
        }
    }
    check_list(h, q, "filters", "region");
    int64_t start, end;
    if (cm_time_range(h, q, false, 0, &start, &end) == 0 && start >= 0 && end >= 0)
        must(end > start);
    int page = -1, size = -1;
    if (cm_page(h, q, &page, &size) == 0)
        must(page >= 0 && page <= 1000000 && size >= 1 && size <= 100);
    bool b;
    cm_param_bool(h, q, "include_comparison", false, &b);
    struct cm_metric_query *mq = arena_alloc(h->arena, sizeof(*mq));
    if (cm_metric_query_from_http(h, mq) == 0)
        must(mq->metric_type != NULL && mq->start_ms < mq->end_ms);
}

/* Every raw key of the query as http_query_get sees it, and the integer parameters. */
static void decode_query(struct hctx *h)
{
    struct request *req = h->req;
    for (const char *p = req->query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char *key = http_url_decode(h->arena, p, eq ? (size_t)(eq - p) : len, true);
        if (key)
            http_query_get(req, key);
        p += len + (amp != NULL);
    }
    static const char *const ints[] = {"page", "limit", "per_page", "size"};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        int v = -1;
        if (query_int(h, ints[i], 1, 1, 100, &v) == 0)
            must(v >= 1 && v <= 100);
    }
    decode_commerce(h);
}

static void decode_headers(struct hctx *h)
{
    static const int64_t sizes[] = {0, 1, 1000, INT64_MAX / 2};
    const char *range = http_header_get(h->req, "Range");
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        int64_t off = -1, len = -1;
        if (desk_range_parse(range, sizes[i], &off, &len) == 1)
            must(off >= 0 && len >= 1 && off + len <= sizes[i]);
    }
    const char *tok = ws_bearer_token(h->req);
    if (tok)
        must(tok[0] && strlen(tok) <= 4096 && strcspn(tok, ", ") == strlen(tok));
}

static void on_request(struct request *req)
{
    struct hctx *h = arena_calloc(req->arena, sizeof(*h));
    h->req = req;
    h->arena = req->arena;
    h->app = &app;
    h->status = 200;
    struct route_match m;
    char *path = arena_strdup(req->arena, req->path);
    int r = router_match(app.router, req->method_name, path, req->arena, &m);
    check_match(req, r, &m);
    decode_query(h);
    decode_headers(h);
    if (r == 0 && (m.route->flags & RF_JSON_BODY)) {
        r = dispatch_validate_body(h, m.route->flags);
        if (r == 0)
            must(json_is_object(h->body));
        else
            must(h->err_field != NULL && (r == TS_E_VALIDATION || r == TS_E_UNSUPPORTED_MEDIA));
        json_decref(h->body);
    }
    req->status = r == 0 ? 200 : err_http_status(r);
    req->content_type = "text/plain";
    buf_printf(&req->out_body, "%s %s", req->method_name, m.route ? m.route->path : "-");
    http_response_send(req);
}

static void cleanup(void)
{
    rmdir(spool); /* spooled bodies are unlinked when their request is freed */
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char err[512];
    uv_loop_init(&loop);
    if (config_load(&cfg, CMD_SERVE, 0, NULL, err, sizeof(err)) != 0 ||
        (app.router = app_router_new(err, sizeof(err))) == NULL || mkdtemp(spool) == NULL) {
        fprintf(stderr, "fuzz_route: %s\n", err);
        abort();
    }
    atexit(cleanup);
    app.cfg = &cfg;
    app.loop = &loop;
    /* the server's own limits (serve_listen), short timeouts so a stalled input ends soon */
    struct server_limits lim = {
        .max_url = 8192, .max_header_bytes = (size_t)cfg.max_header_kb * 1024,
        .max_headers = 100, .max_body = (size_t)cfg.max_body_kb * 1024,
        .idle_timeout_ms = 1000, .header_timeout_ms = 1000, .max_connections = 64,
        .spool_dir = spool};
    struct server_hooks hooks = {.on_request = on_request, .body_limit = dispatch_body_limit,
                                 .arg = &app};
    srv = fuzz_loopback_listen(&loop, &lim, hooks, "fuzz_route", &port);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_loopback_send(&loop, port, data, size);
    return 0;
}
