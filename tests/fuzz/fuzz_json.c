/* libFuzzer target for JSON request bodies with the server's limits: the first byte picks the
 * Content-Type and the commerce record type, the rest is the body. It goes through the
 * dispatcher's validate step (dispatch_validate_body: media type, the 32-level depth limit,
 * jansson with JSON_REJECT_DUPLICATES, an object), and an accepted body through what handlers
 * then read from it: body_string on every member, the metric query of widgets and alert rules
 * (cm_metric_query_from_json) on the body and on every object member, and the commerce record
 * check on the elements of "data". The depth limit and the parse are checked against an
 * independent parse: a valid object at most 32 deep is accepted, anything deeper is not. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "surfaces/commerce/metrics.h"
#include "surfaces/commerce/records.h"

#define MAX_DEPTH 32
#define MAX_RECORDS 16
#define NOW_MS 1767225600000LL /* 2026-01-01 */

static const char *const content_types[] = {
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain",
    NULL,                "application/jsonx",
};
#define NCT (sizeof(content_types) / sizeof(content_types[0]))

static void must(bool ok)
{
    if (!ok)
        abort();
}

/* Containers on the deepest path: {} is 1, {"a":[]} is 2. */
static int tree_depth(const json_t *v)
{
    int d = 0;
    size_t i;
    const char *k;
    json_t *x;
    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, k, x) {
            int c = tree_depth(x);
            d = c > d ? c : d;
        }
        return d + 1;
    }
    if (json_is_array(v)) {
        json_array_foreach(v, i, x) {
            int c = tree_depth(x);
            d = c > d ? c : d;
        }
        return d + 1;
    }
    return 0;
}

static void check_metric_query(struct hctx *h, const json_t *o)
{
    struct cm_metric_query q;
    const char *field = NULL, *message = NULL;
    if (cm_metric_query_from_json(o, NOW_MS, h->arena, &q, &field, &message) < 0)
        must(field != NULL && message != NULL);
    else
        must(q.metric_type != NULL && q.start_ms < q.end_ms);
}

static void check_records(struct hctx *h, enum cm_type type)
{
    const json_t *data = json_object_get(h->body, "data");
    struct cm_check_env env = {"USD", NOW_MS, -1};
    size_t i;
    json_t *v;
    json_array_foreach(data, i, v) {
        if (i == MAX_RECORDS)
            break;
        struct cm_rec rec;
        int n = cm_record_check(h->arena, type, v, (int64_t)i, &env, &rec);
        must(n >= 0 && n == rec.nfails);
        for (int k = 0; k < n && k < CM_FAILS_MAX; k++)
            must(rec.fails[k].field && rec.fails[k].check_type && rec.fails[k].reason);
    }
}

static void read_body(struct hctx *h, enum cm_type type)
{
    const char *k;
    json_t *x;
    json_object_foreach(h->body, k, x) {
        const char *s = NULL;
        if (body_string(h, k, 256, false, &s) == 0 && s)
            must(strlen(s) == json_string_length(x) && strlen(s) <= 256);
        if (json_is_object(x))
            check_metric_query(h, x);
    }
    check_metric_query(h, h->body);
    check_records(h, type);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *ct = content_types[data[0] % NCT];
    enum cm_type type = (enum cm_type)((data[0] / NCT) % CM_TYPE_COUNT);
    struct arena *a = arena_new(4096);
    struct request req;
    struct http_header hdr = {"Content-Type", ct};
    memset(&req, 0, sizeof(req));
    req.arena = a;
    req.headers = &hdr;
    req.nheaders = ct ? 1 : 0;
    buf_init(&req.body, 1 << 20);
    if (size > 1)
        buf_append(&req.body, data + 1, size - 1);
    struct hctx h = {.req = &req, .arena = a, .status = 200};
    int r = dispatch_validate_body(&h, RF_JSON_BODY);

    /* the same bytes, parsed without the depth step */
    json_t *plain = json_loadb(req.body.data ? req.body.data : "", req.body.len,
                               JSON_REJECT_DUPLICATES, NULL);
    bool json_ct = ct && strncmp(ct, "text", 4) != 0;
    if (r == 0) {
        must(json_ct && json_is_object(h.body) && tree_depth(h.body) <= MAX_DEPTH);
        must(plain && json_equal(plain, h.body));
        read_body(&h, type);
    } else {
        must(h.err_field != NULL && h.err_message != NULL);
        must(r == (json_ct ? TS_E_VALIDATION : TS_E_UNSUPPORTED_MEDIA));
        if (json_ct)
            must(!json_is_object(plain) || tree_depth(plain) > MAX_DEPTH);
    }
    json_decref(plain);
    json_decref(h.body);
    buf_release(&req.body);
    arena_free(a);
    return 0;
}
