/* The route row every surface table is made of, the handler context, and the router. */
#ifndef TS_ROUTE_H
#define TS_ROUTE_H
#include <jansson.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "auth/perms.h"
#include "core/err.h"
#include "http/http.h"

struct hctx;
typedef int (*route_handler_fn)(struct hctx *h);

/* One field's failure, for surfaces whose error body lists every bad field (commerce
 * field_errors). rejected is the value as JSON text, or NULL for null. */
struct field_error {
    const char *field;
    const char *message;
    const char *rejected;
    struct field_error *next;
};

/* Where a handler runs. RUN_LOOP: point reads by key and all writes, well under 1 ms.
 * RUN_POOL: scans, aggregations, hashing; reads through the worker's read-only connection. */
enum route_where { RUN_LOOP, RUN_POOL };

/* Route flags.
 * RF_PUBLIC     no credentials needed: the auth, tenant and permission steps are skipped.
 * RF_JSON_BODY  the body must be a JSON object with Content-Type application/json (415 / 400
 *               otherwise); the dispatcher parses it into h->body before the handler.
 * RF_BIG_BODY   the body limit is the upload limit instead of --max-body-kb.
 * RF_WEBSOCKET  a WebSocket upgrade route: the handler calls ws_upgrade.
 * RF_NO_METRICS not counted in http_* metrics (the /metrics scrape itself).
 * RF_SPOOL_BODY the body streams to a temp file (req->body_fd / body_path, req->body_size)
 *               with the --max-upload-mb limit; the handler moves what it keeps.
 * RF_RATE_TENANT the rate limit is one bucket per tenant (recs "per tenant"), not per caller.
 * RF_NO_AUDIT   a data-plane write (one stream event, one interaction) that leaves no audit row:
 *               the record itself is the trace, and a row per event would double the writes
 *               and grow the audit log without bound.
 * RF_NO_SHED    never shed under load nor counted against --max-inflight: the probes and the
 *               scrape that must keep answering while the server sheds everything else.
 * RF_CREDENTIAL_OPTIONAL with RF_PUBLIC: no credential is needed, but one that is given is
 *               verified (401 when it is not valid) and names the caller and tenant, so the
 *               handler can add that tenant's part (/metrics: its tenant_id series). */
enum {
    RF_PUBLIC = 1 << 0,
    RF_JSON_BODY = 1 << 1,
    RF_BIG_BODY = 1 << 2,
    RF_WEBSOCKET = 1 << 3,
    RF_NO_METRICS = 1 << 4,
    RF_SPOOL_BODY = 1 << 5,
    RF_RATE_TENANT = 1 << 6,
    RF_NO_AUDIT = 1 << 7,
    RF_NO_SHED = 1 << 8,
    RF_CREDENTIAL_OPTIONAL = 1 << 9,
};

struct route {
    const char *method;        /* "GET", "POST", ... */
    const char *path;          /* "/api/v1/tickets/{ticket_id}" */
    route_handler_fn handler;
    const char *permission;    /* "public" with RF_PUBLIC, else a permission name */
    const char *rate_class;    /* a rate-limit class name */
    enum route_where where;
    int cache_ttl_s;           /* 0: not cached */
    unsigned flags;
    const char *self_param;    /* path param holding a user id: roles that hold the permission
                                * only for themselves must match it (object rule) */
};

struct route_table {
    enum surface surface;
    const struct route *routes;
    size_t n;
};

/* What a handler sees. Loop handlers get the writer connection; pool handlers a read-only one. */
struct hctx {
    struct request *req;
    struct arena *arena;
    sqlite3 *db;
    enum surface surface;
    json_t *body;              /* parsed body (RF_JSON_BODY), owned by the dispatcher */
    struct principal who;      /* the verified caller (kind NONE on public routes) */
    const char *tenant_id;     /* from the credential, never from the request */
    const char *user_id;
    const char *audit_target;  /* what a state-changing call acted on, for the audit log */
    void (*pool_work)(struct hctx *h);   /* api_defer_to_pool */
    int (*pool_done)(struct hctx *h);
    void *state;               /* a handler's own data across the pool hop */
    int status;                /* response status, default 200 */
    struct buf out;            /* response JSON */
    /* error detail for the dispatcher's error body */
    const char *err_field;
    const char *err_message;
    struct field_error *ferrs;  /* every bad field, in order (field_error_add) */
    struct field_error **ferrs_tail;
    int nferrs;
    int retry_after_s;
    bool shed;                 /* refused to shed load (dispatch.c): counted, not logged */
    int *inflight;             /* the app->inflight[] counting it until the response is out */
    uint64_t cache_gen;        /* tenant data generation seen at cache lookup */
    struct hctx *next_parked;  /* dispatch.c: waiting for the next iteration's budget */
    struct app *app;
};

/* A handler returns this after api_defer_to_pool: the response comes from `done`. */
#define HANDLER_DEFERRED 1
/* Runs work(h) on a worker thread (h->db is its read-only connection), then done(h) back on
 * the loop (h->db is the writer); done's return value finishes the request. Returns
 * HANDLER_DEFERRED, or TS_E_UNAVAILABLE when the pool is full. */
int api_defer_to_pool(struct hctx *h, void (*work)(struct hctx *h), int (*done)(struct hctx *h));

/* ---- router ---- */
struct router;

struct route_match {
    const struct route *route;
    enum surface surface;
    int nparams;
    struct http_param params[HTTP_MAX_PARAMS];
    char allow[96];            /* methods for the path when the method did not match */
};

/* Builds the router; rejects duplicate method+path and rows without a permission.
 * Returns NULL with a reason in err. */
struct router *router_new(const struct route_table *tables, size_t ntables, char *err,
                          size_t errlen);
struct router *router_free(struct router *r);
/* 0 on a match; TS_E_NOT_FOUND or TS_E_METHOD_NOT_ALLOWED (allow filled). The surface is
 * always set: the matched route's, else the surface owning the longest matching prefix.
 * Param values point into `path`, which is modified (segments NUL-terminated). */
int router_match(const struct router *r, const char *method, char *path, struct arena *a,
                 struct route_match *ret);
size_t router_count(const struct router *r);
const struct route *router_route(const struct router *r, size_t i, enum surface *ret_surface);
#endif
