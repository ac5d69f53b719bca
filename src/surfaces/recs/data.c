/* recs.md: catalog and interactions (sections 2, 5: items, interactions, usage), the content
 * embedding lane that keeps rc_item_content in step with rc_items, and the route table. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "api/observe.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"
#include "engines/hashembed.h"
#include "jobs/pool.h"
#include "store/db.h"
#include "surfaces/recs/recs.h"
#include "surfaces/recs/usage.h"

#define MAX_BATCH 10000          /* items or interactions per call */
#define MAX_TITLE 1000           /* characters */
#define MAX_DESCRIPTION 10000    /* characters */
#define MAX_JSON_BYTES 16384     /* an item's metadata, as compact JSON */
#define MAX_EVENT_JSON 8192      /* an interaction's context or metadata */
#define MAX_CONTEXT_STR 128      /* context.device_type, context.session_id */
#define FUTURE_SLACK_MS 86400000 /* a timestamp may be at most a day ahead (client clocks) */

/* ---------- shared validation ---------- */

/* Characters (UTF-8 code points) of s. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* A bad field: its name and what is wrong, for a 400 (one record) or a validation_errors row. */
struct bad {
    const char *field;
    const char *error;
};

static int bad_set(struct bad *b, const char *field, const char *error)
{
    b->field = field;
    b->error = error;
    return -1;
}

/* A required section 9 id (user_id, item_id). */
static int check_id(json_t *o, const char *field, struct hctx *h, const char **ret, struct bad *b)
{
    json_t *v = json_object_get(o, field);
    if (v == NULL || json_is_null(v))
        return bad_set(b, field, arena_printf(h->arena, "Missing required field: %s", field));
    if (!json_is_string(v) || !recs_id_valid(json_string_value(v)) ||
        strlen(json_string_value(v)) != json_string_length(v))
        return bad_set(b, field,
                       arena_printf(h->arena, "%s must be 1-128 characters, each a letter, digit, "
                                              "'-' or '_'", field));
    *ret = json_string_value(v);
    return 0;
}

/* An optional string of at most max characters; NULL when absent or null. */
static int check_text(json_t *o, const char *field, size_t max, struct hctx *h, const char **ret,
                      struct bad *b)
{
    json_t *v = json_object_get(o, field);
    *ret = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
        utf8_chars(json_string_value(v)) > max)
        return bad_set(b, field,
                       arena_printf(h->arena, "%s must be a string of at most %zu characters",
                                    field, max));
    *ret = json_string_value(v);
    return 0;
}

/* An optional JSON object, returned as compact text in the arena (NULL when absent). */
static int check_object(json_t *o, const char *field, size_t max, struct hctx *h,
                        const char **ret, struct bad *b)
{
    json_t *v = json_object_get(o, field);
    *ret = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return bad_set(b, field, arena_printf(h->arena, "%s must be a JSON object", field));
    char *s = json_dumps(v, JSON_COMPACT);
    if (s == NULL)
        return bad_set(b, field, arena_printf(h->arena, "%s cannot be stored", field));
    size_t n = strlen(s);
    if (n <= max)
        *ret = arena_strndup(h->arena, s, n);
    free(s);
    if (n > max)
        return bad_set(b, field,
                       arena_printf(h->arena, "%s must be at most %zu bytes as JSON", field, max));
    return 0;
}

/* An optional ISO 8601 time as unix ms; *ret_given says whether it was there. */
static int check_time(json_t *o, const char *field, struct hctx *h, int64_t *ret,
                      bool *ret_given, struct bad *b)
{
    json_t *v = json_object_get(o, field);
    *ret_given = false;
    if (v == NULL || json_is_null(v))
        return 0;
    int64_t ms;
    if (!json_is_string(v) || json_string_length(v) > 40 ||
        clock_parse_iso8601(json_string_value(v), &ms) < 0 || ms < 0)
        return bad_set(b, field,
                       arena_printf(h->arena, "%s must be an ISO 8601 time such as "
                                              "2025-01-31T12:00:00Z", field));
    if (ms > clock_now_ms() + FUTURE_SLACK_MS)
        return bad_set(b, field,
                       arena_printf(h->arena, "%s is more than a day in the future", field));
    *ret = ms;
    *ret_given = true;
    return 0;
}

/* Internal routes: a tenant_id in the body must be the key's own (it never picks the tenant). */
static int check_body_tenant(struct hctx *h)
{
    json_t *v = json_object_get(h->body, "tenant_id");
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return fail(h, TS_E_VALIDATION, "tenant_id", "tenant_id must be a string");
    if (strcmp(json_string_value(v), h->tenant_id) != 0)
        return fail(h, TS_E_FORBIDDEN, "tenant_id",
                    "tenant_id must be the tenant of the API key making the call");
    return 0;
}

/* The batch array under key: an array of at most MAX_BATCH entries. */
static int batch_array(struct hctx *h, const char *key, json_t **ret)
{
    json_t *a = json_object_get(h->body, key);
    if (a == NULL || json_is_null(a))
        return fail(h, TS_E_VALIDATION, key, arena_printf(h->arena, "Missing required field: %s", key));
    if (!json_is_array(a))
        return fail(h, TS_E_VALIDATION, key, arena_printf(h->arena, "%s must be an array", key));
    size_t n = json_array_size(a);
    if (n > MAX_BATCH)
        return fail(h, TS_E_VALIDATION, key,
                    arena_printf(h->arena, "at most %d %s per call: this call has %zu, so %s[%d] "
                                           "and after are over the limit (nothing was stored)",
                                 MAX_BATCH, key, n, key, MAX_BATCH));
    *ret = a;
    return 0;
}

/* The loop guard bounds one statement's run time; a batch is up to MAX_BATCH short point
 * writes, so it re-arms the guard every GUARD_EVERY rows instead of letting the batch as a
 * whole trip it (a 10,000-item upload holds the loop for roughly 100 ms). */
#define GUARD_EVERY 256

static void guard_rearm(struct hctx *h, size_t i)
{
    if (i > 0 && i % GUARD_EVERY == 0)
        db_guard_arm(h->app->db);
}

/* Distinct strings seen in one request (user ids to notify once each). */
struct strset {
    const char **slot;
    size_t cap, n;
};

static bool strset_add(struct hctx *h, struct strset *s, const char *v)
{
    if (s->cap == 0) {
        s->cap = 64;
        s->slot = arena_calloc(h->arena, s->cap * sizeof(*s->slot));
    }
    if (s->n * 2 >= s->cap) {
        struct strset g = {arena_calloc(h->arena, s->cap * 2 * sizeof(*s->slot)), s->cap * 2, 0};
        for (size_t i = 0; i < s->cap; i++)
            if (s->slot[i])
                strset_add(h, &g, s->slot[i]);
        *s = g;
    }
    uint64_t x = 0xcbf29ce484222325ULL;
    for (const char *p = v; *p; p++)
        x = (x ^ (unsigned char)*p) * 0x100000001b3ULL;
    size_t j = x & (s->cap - 1);
    for (; s->slot[j]; j = (j + 1) & (s->cap - 1))
        if (strcmp(s->slot[j], v) == 0)
            return false;
    s->slot[j] = v;
    s->n++;
    return true;
}

/* Every recs data route: the quota first, then one api call counted whatever the outcome,
 * with its latency (and the items it stored). */
static int counted(struct hctx *h, int (*fn)(struct hctx *h, int *ret_items))
{
    int r = recs_quota_check(h);
    if (r < 0)
        return r;
    int items = 0;
    r = fn(h, &items);
    recs_usage_add(h->tenant_id, 1, 0, items, recs_elapsed_ms(h));
    return r;
}

/* ---------- the content embedding lane ---------- */

/* One item whose content vector is to be (re)computed: features copied out of the request or
 * read in the worker, the rc_items.updated_at it belongs to, and the result. */
struct embed_item {
    struct embed_item *next;
    char *tenant_id, *item_id, *title, *description, *category;
    char **tags;
    int ntags;
    int64_t updated_at;
    char key[17];
    float vec[RECS_DEFAULT_DIM];
};

#define LANE_CHUNK 256            /* items per pool task (bounds one done step on the loop) */
#define LANE_SCAN_CHUNK 512       /* catalog rows a rescan reads per task */
#define LANE_MAX_QUEUED 200000    /* past it uploads only mark a rescan (bounded memory) */
#define LANE_RETRY_MS 20

struct lane_task {
    struct pool_task t;
    struct embed_item *items;     /* computed vectors to write */
    int n;
    bool scan;                    /* a rescan chunk: read rows after scan_ix in the worker */
    int64_t scan_ix, last_ix;
    bool scan_more, failed;
};

static struct {
    struct app *app;
    struct embed_item *head, **tail;
    size_t queued;
    bool busy, rescan, running;
    int64_t scan_ix;              /* rescan position (rc_items.ix), -1 when none runs */
    uv_timer_t retry;
    int64_t written;              /* vectors written since start (for the log) */
} L = {.tail = &L.head, .scan_ix = -1};

static void lane_kick(void);

/* One allocation holding the item and copies of all its strings. */
static struct embed_item *embed_item_new(const char *tenant_id, const char *item_id,
                                         const char *title, const char *description,
                                         const char *category, const char *const *tags,
                                         int ntags, int64_t updated_at)
{
    const char *strs[4] = {tenant_id, item_id, title ? title : "", description ? description : ""};
    size_t need = sizeof(struct embed_item) + (size_t)ntags * sizeof(char *);
    for (int i = 0; i < 4; i++)
        need += strlen(strs[i]) + 1;
    need += strlen(category ? category : "") + 1;
    for (int i = 0; i < ntags; i++)
        need += strlen(tags[i]) + 1;
    struct embed_item *e = malloc(need);
    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof(*e));
    char **tagv = (char **)(e + 1);
    char *p = (char *)(tagv + ntags);
    char **dst[5] = {&e->tenant_id, &e->item_id, &e->title, &e->description, &e->category};
    for (int i = 0; i < 5; i++) {
        const char *s = i < 4 ? strs[i] : (category ? category : "");
        size_t n = strlen(s) + 1;
        memcpy(p, s, n);
        *dst[i] = p;
        p += n;
    }
    for (int i = 0; i < ntags; i++) {
        size_t n = strlen(tags[i]) + 1;
        memcpy(p, tags[i], n);
        tagv[i] = p;
        p += n;
    }
    e->tags = tagv;
    e->ntags = ntags;
    e->updated_at = updated_at;
    hashembed_features_hash(e->title, e->description, e->category, (const char *const *)e->tags,
                            e->ntags, RECS_DEFAULT_DIM, e->key);
    return e;
}

static void embed_list_free(struct embed_item *e)
{
    while (e) {
        struct embed_item *next = e->next;
        free(e);
        e = next;
    }
}

static void embed_compute(struct embed_item *e)
{
    hashembed(e->title, e->description, e->category, (const char *const *)e->tags, e->ntags,
              RECS_DEFAULT_DIM, e->vec);
}

/* Queues an item written by a request (loop thread). */
static void lane_push(struct embed_item *e)
{
    *L.tail = e;
    L.tail = &e->next;
    L.queued++;
}

static const char SQL_SCAN[] =
    "SELECT i.ix, i.tenant_id, i.item_id, i.title, i.description, i.category, i.tags, "
    "i.updated_at, c.features_hash FROM rc_items i LEFT JOIN rc_item_content c "
    "ON c.tenant_id = i.tenant_id AND c.item_id = i.item_id WHERE i.ix > ?1 ORDER BY i.ix LIMIT ?2";

/* Builds an item from a catalog row in the worker; NULL when its stored vector is current. */
static struct embed_item *scan_row_item(sqlite3_stmt *q)
{
    const char *tags_json = col_text(q, 6);
    json_t *tags = json_loads(tags_json, 0, NULL);
    const char *tv[RECS_MAX_TAGS];
    int nt = 0;
    for (size_t i = 0; json_is_array(tags) && i < json_array_size(tags) && nt < RECS_MAX_TAGS; i++)
        if (json_is_string(json_array_get(tags, i)))
            tv[nt++] = json_string_value(json_array_get(tags, i));
    struct embed_item *e = embed_item_new(col_text(q, 1), col_text(q, 2), col_text(q, 3),
                                          col_text(q, 4), col_text(q, 5), tv, nt,
                                          sqlite3_column_int64(q, 7));
    json_decref(tags);
    const char *have = (const char *)sqlite3_column_text(q, 8);
    if (e && have && strcmp(have, e->key) == 0) {
        free(e);
        return NULL;
    }
    return e;
}

/* Worker: a rescan chunk reads catalog rows whose vector is missing or stale. */
static void lane_scan_work(struct lane_task *lt, sqlite3 *db)
{
    sqlite3_stmt *q;
    if (db == NULL || sqlite3_prepare_v2(db, SQL_SCAN, -1, &q, NULL) != SQLITE_OK) {
        lt->failed = true;
        return;
    }
    sqlite3_bind_int64(q, 1, lt->scan_ix);
    sqlite3_bind_int(q, 2, LANE_SCAN_CHUNK);
    struct embed_item **tail = &lt->items;
    int rows = 0, rc;
    lt->last_ix = lt->scan_ix;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        rows++;
        lt->last_ix = sqlite3_column_int64(q, 0);
        struct embed_item *e = scan_row_item(q);
        if (e) {
            *tail = e;
            tail = &e->next;
            lt->n++;
        }
    }
    lt->failed = rc != SQLITE_DONE;
    lt->scan_more = rows == LANE_SCAN_CHUNK;
    sqlite3_finalize(q);
}

static void lane_work(struct pool_task *t, struct pool_worker *w)
{
    struct lane_task *lt = (struct lane_task *)t;
    if (lt->scan)
        lane_scan_work(lt, w->db);
    for (struct embed_item *e = lt->items; e; e = e->next)
        embed_compute(e);
}

/* Written only while rc_items still holds the version the vector was computed from: a later
 * write of the item moved updated_at on (it always grows), and its own task brings its vector. */
static const char SQL_CONTENT_PUT[] =
    "INSERT INTO rc_item_content(tenant_id, item_id, dim, vector, features_hash, updated_at) "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM rc_items WHERE tenant_id = ?1 "
    "AND item_id = ?2 AND updated_at = ?7) "
    "ON CONFLICT(tenant_id, item_id) DO UPDATE SET dim = excluded.dim, vector = excluded.vector, "
    "features_hash = excluded.features_hash, updated_at = excluded.updated_at";

static int content_put(struct db *db, const struct embed_item *e, int64_t now)
{
    sqlite3_stmt *q = db_stmt(db, SQL_CONTENT_PUT);
    if (q == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(q, 1, e->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, e->item_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 3, RECS_DEFAULT_DIM);
    sqlite3_bind_blob(q, 4, e->vec, (int)sizeof(e->vec), SQLITE_STATIC);
    sqlite3_bind_text(q, 5, e->key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 6, now);
    sqlite3_bind_int64(q, 7, e->updated_at);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

/* Loop: writes the chunk's vectors under one savepoint in the tick's transaction. */
static int lane_write(struct lane_task *lt)
{
    struct db *db = L.app->db;
    if (lt->n == 0)
        return 0;
    int r = db_write_begin(db);
    if (r < 0)
        return r;
    int64_t now = clock_now_ms();
    const char *last_tenant = NULL;
    db_request_start(db);
    for (struct embed_item *e = lt->items; e && r == 0; e = e->next) {
        r = content_put(db, e, now);
        if (r == 0 && (last_tenant == NULL || strcmp(last_tenant, e->tenant_id) != 0)) {
            observe_tenant_wrote(L.app, e->tenant_id); /* cached reads of it are stale */
            last_tenant = e->tenant_id;
        }
    }
    if (db_request_end(db, r == 0) < 0 && r == 0)
        r = TS_E_INTERNAL;
    if (r == 0)
        L.written += lt->n;
    return r;
}

static void lane_done(struct pool_task *t, int status)
{
    struct lane_task *lt = (struct lane_task *)t;
    L.busy = false;
    int r = status == 0 && !lt->failed ? lane_write(lt) : (status ? status : TS_E_INTERNAL);
    if (lt->scan && status == 0) {
        if (r == 0)
            L.scan_ix = lt->scan_more ? lt->last_ix : -1;
        if (L.scan_ix < 0)
            log_msg(LOG_DEBUG, "recs content: catalog rescan finished");
    }
    if (r < 0 && status != -ECANCELED) {
        /* keep the vectors right eventually: a failed chunk is picked up by a rescan */
        log_msg(LOG_WARN, "recs content: %d vectors not written (%s); rescanning later", lt->n,
                err_message(r));
        L.rescan = true;
    }
    embed_list_free(lt->items);
    free(lt);
    if (L.running)
        lane_kick();
}

static void lane_retry_cb(uv_timer_t *t)
{
    (void)t;
    lane_kick();
}

/* The next task: queued uploads first (in order), then a rescan chunk. One at a time, so
 * embedding never takes more than one worker from the serving routes. */
static struct lane_task *lane_next(void)
{
    if (L.head == NULL && L.scan_ix < 0 && L.rescan) {
        L.rescan = false;
        L.scan_ix = 0;
    }
    if (L.head == NULL && L.scan_ix < 0)
        return NULL;
    struct lane_task *lt = calloc(1, sizeof(*lt));
    if (lt == NULL)
        return NULL;
    lt->t.work = lane_work;
    lt->t.done = lane_done;
    if (L.head == NULL) {
        lt->scan = true;
        lt->scan_ix = L.scan_ix;
        return lt;
    }
    struct embed_item **tail = &lt->items;
    while (L.head && lt->n < LANE_CHUNK) {
        struct embed_item *e = L.head;
        L.head = e->next;
        e->next = NULL;
        *tail = e;
        tail = &e->next;
        lt->n++;
        L.queued--;
    }
    if (L.head == NULL)
        L.tail = &L.head;
    return lt;
}

static void lane_kick(void)
{
    if (L.busy || !L.running)
        return;
    struct lane_task *lt = lane_next();
    if (lt == NULL)
        return;
    int r = pool_submit(L.app->pool, &lt->t);
    if (r == 0) {
        L.busy = true;
        return;
    }
    /* the pool is full (or stopping): put the items back in front and try again shortly */
    if (lt->items) {
        struct embed_item *last = lt->items;
        while (last->next)
            last = last->next;
        last->next = L.head;
        if (L.head == NULL)
            L.tail = &last->next;
        L.head = lt->items;
        L.queued += (size_t)lt->n;
    }
    free(lt);
    if (r == -EAGAIN)
        uv_timer_start(&L.retry, lane_retry_cb, LANE_RETRY_MS, 0);
}

void recs_data_start(struct app *app)
{
    L.app = app;
    uv_timer_init(app->loop, &L.retry);
    L.running = true;
    L.scan_ix = 0; /* vectors missing or stale (a crash before their task, a new version) */
    lane_kick();
}

void recs_data_stop(void)
{
    if (!L.running)
        return;
    L.running = false;
    uv_timer_stop(&L.retry);
    uv_close((uv_handle_t *)&L.retry, NULL);
    /* what never ran is found missing by the rescan at the next start */
    embed_list_free(L.head);
    L.head = NULL;
    L.tail = &L.head;
    L.queued = 0;
}

/* ---------- items ---------- */

struct item_in {
    const char *item_id, *title, *description, *category, *metadata;
    const char *tags[RECS_MAX_TAGS];
    int ntags;
    int64_t created_at;
    bool created_given;
};

static int check_tags(json_t *o, struct hctx *h, struct item_in *it, struct bad *b)
{
    json_t *v = json_object_get(o, "tags");
    it->ntags = 0;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_array(v) || json_array_size(v) > RECS_MAX_TAGS)
        return bad_set(b, "tags", arena_printf(h->arena, "tags must be an array of at most %d "
                                                         "strings", RECS_MAX_TAGS));
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *t = json_array_get(v, i);
        if (!json_is_string(t) || json_string_length(t) == 0 ||
            strlen(json_string_value(t)) != json_string_length(t) ||
            utf8_chars(json_string_value(t)) > RECS_MAX_TAG_LEN)
            return bad_set(b, arena_printf(h->arena, "tags[%zu]", i),
                           arena_printf(h->arena, "tags[%zu] must be a non-empty string of at "
                                                  "most %d characters", i, RECS_MAX_TAG_LEN));
        it->tags[it->ntags++] = json_string_value(t);
    }
    return 0;
}

/* Section 9 and the item's own limits; the first problem found is reported. */
static int item_check(struct hctx *h, json_t *o, struct item_in *it, struct bad *b)
{
    memset(it, 0, sizeof(*it));
    if (!json_is_object(o))
        return bad_set(b, "items", "each item must be a JSON object");
    if (check_id(o, "item_id", h, &it->item_id, b) < 0)
        return -1;
    json_t *t = json_object_get(o, "title");
    if (t == NULL || json_is_null(t) || (json_is_string(t) && json_string_length(t) == 0))
        return bad_set(b, "title", "Missing required field: title");
    if (check_text(o, "title", MAX_TITLE, h, &it->title, b) < 0 ||
        check_text(o, "description", MAX_DESCRIPTION, h, &it->description, b) < 0)
        return -1;
    json_t *c = json_object_get(o, "category");
    if (c && !json_is_null(c)) {
        if (!json_is_string(c) || !recs_category_valid(json_string_value(c)) ||
            strlen(json_string_value(c)) != json_string_length(c))
            return bad_set(b, "category", "category must be 1-64 characters, each a lowercase "
                                          "letter, digit or '-'");
        it->category = json_string_value(c);
    }
    if (check_tags(o, h, it, b) < 0 ||
        check_object(o, "metadata", MAX_JSON_BYTES, h, &it->metadata, b) < 0 ||
        check_time(o, "created_at", h, &it->created_at, &it->created_given, b) < 0)
        return -1;
    return 0;
}

/* Upsert: the item is replaced as sent; created_at is kept when not given. updated_at always
 * grows (at least by 1 ms per write) so an embedding task can tell it still has the latest
 * version. */
static const char SQL_ITEM_PUT[] =
    "INSERT INTO rc_items(tenant_id, item_id, title, description, category, tags, metadata, "
    "created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
    "ON CONFLICT(tenant_id, item_id) DO UPDATE SET title = excluded.title, "
    "description = excluded.description, category = excluded.category, tags = excluded.tags, "
    "metadata = excluded.metadata, "
    "created_at = CASE WHEN ?10 THEN excluded.created_at ELSE rc_items.created_at END, "
    "updated_at = MAX(excluded.updated_at, rc_items.updated_at + 1) RETURNING updated_at";

static const char SQL_CONTENT_KEY[] =
    "SELECT features_hash FROM rc_item_content WHERE tenant_id = ?1 AND item_id = ?2";

static char *tags_json(const struct item_in *it)
{
    json_t *a = json_array();
    for (int i = 0; i < it->ntags; i++)
        json_array_append_new(a, json_string(it->tags[i]));
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

static int item_store(struct hctx *h, const struct item_in *it, int64_t now, int64_t *ret_updated)
{
    char *tags = tags_json(it);
    if (tags == NULL)
        return TS_E_INTERNAL;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_ITEM_PUT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, it->item_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, it->title, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, it->description ? it->description : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, it->category ? it->category : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, tags, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, it->metadata ? it->metadata : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 8, it->created_given ? it->created_at : now);
    sqlite3_bind_int64(q, 9, now);
    sqlite3_bind_int(q, 10, it->created_given);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        *ret_updated = sqlite3_column_int64(q, 0);
    int rc2 = sqlite3_step(q) == SQLITE_DONE ? SQLITE_DONE : rc;
    sqlite3_reset(q);
    free(tags);
    return rc == SQLITE_ROW && rc2 == SQLITE_DONE ? 0 : db_err(rc == SQLITE_ROW ? rc2 : rc);
}

/* After the item is stored: its vector is queued unless the stored one has the same
 * features (same hash). */
static void item_embed(struct hctx *h, const struct item_in *it, int64_t updated_at)
{
    struct embed_item *e = embed_item_new(h->tenant_id, it->item_id, it->title, it->description,
                                          it->category, it->tags, it->ntags, updated_at);
    if (e == NULL) {
        L.rescan = true;
        return;
    }
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_CONTENT_KEY);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, it->item_id, -1, SQLITE_STATIC);
    bool same = sqlite3_step(q) == SQLITE_ROW && strcmp(col_text(q, 0), e->key) == 0;
    sqlite3_reset(q);
    if (same || L.queued >= LANE_MAX_QUEUED) {
        if (!same)
            L.rescan = true; /* too much queued: the rescan after the queue finds it */
        free(e);
        return;
    }
    lane_push(e);
}

static void item_error(struct jw *w, int index, const char *item_id, const struct bad *b)
{
    jw_obj_open(w);
    jw_kint(w, "index", index);
    jw_kstr(w, "item_id", item_id);
    jw_kstr(w, "field", b->field);
    jw_kstr(w, "error", b->error);
    jw_obj_close(w);
}

/* Every valid item is stored; each bad one is reported and skipped (the others still stand). */
static int items_upload(struct hctx *h, int *ret_items)
{
    json_t *items;
    int r = batch_array(h, "items", &items);
    if (r < 0)
        return r;
    r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    int64_t now = clock_now_ms();
    int accepted = 0, rejected = 0;
    struct buf errs;
    buf_init(&errs, (size_t)64 << 20);
    struct jw ew;
    jw_init(&ew, &errs);
    jw_arr_open(&ew);
    for (size_t i = 0; i < json_array_size(items) && r == 0; i++) {
        json_t *o = json_array_get(items, i);
        guard_rearm(h, i);
        struct item_in it;
        struct bad b;
        if (item_check(h, o, &it, &b) < 0) {
            json_t *id = json_is_object(o) ? json_object_get(o, "item_id") : NULL;
            item_error(&ew, (int)i, json_is_string(id) ? json_string_value(id) : NULL, &b);
            rejected++;
            continue;
        }
        int64_t updated = now;
        r = item_store(h, &it, now, &updated);
        if (r == 0) {
            item_embed(h, &it, updated);
            accepted++;
        }
    }
    jw_arr_close(&ew);
    if (r == 0 && jw_finish(&ew) < 0)
        r = TS_E_INTERNAL;
    if (r < 0) {
        buf_release(&errs);
        L.rescan = true; /* the request rolls back; queued vectors find no matching row */
        lane_kick();
        return r;
    }
    *ret_items = accepted;
    struct jw w;
    out_begin(h, &w);
    jw_kint(&w, "accepted", accepted);
    jw_kint(&w, "rejected", rejected);
    jw_key(&w, "validation_errors");
    jw_raw(&w, buf_cstr(&errs));
    buf_release(&errs);
    lane_kick();
    return out_end(h, &w);
}

static int items_public(struct hctx *h)
{
    return counted(h, items_upload);
}

static int items_internal_fn(struct hctx *h, int *ret_items)
{
    int r = check_body_tenant(h);
    return r < 0 ? r : items_upload(h, ret_items);
}

static int items_internal(struct hctx *h)
{
    return counted(h, items_internal_fn);
}

/* ---------- interactions ---------- */

struct event_in {
    const char *user_id, *item_id, *type, *context, *metadata, *device_type, *session_id;
    int64_t timestamp;
};

static int check_context(json_t *o, struct hctx *h, struct event_in *ev, struct bad *b)
{
    if (check_object(o, "context", MAX_EVENT_JSON, h, &ev->context, b) < 0)
        return -1;
    json_t *c = json_object_get(o, "context");
    if (!json_is_object(c))
        return 0;
    if (check_text(c, "device_type", MAX_CONTEXT_STR, h, &ev->device_type, b) < 0)
        return bad_set(b, "context.device_type", arena_printf(h->arena, "context.%s", b->error));
    if (check_text(c, "session_id", MAX_CONTEXT_STR, h, &ev->session_id, b) < 0)
        return bad_set(b, "context.session_id", arena_printf(h->arena, "context.%s", b->error));
    return 0;
}

static int event_check(struct hctx *h, json_t *o, int64_t now, struct event_in *ev,
                       struct bad *b)
{
    memset(ev, 0, sizeof(*ev));
    if (!json_is_object(o))
        return bad_set(b, "interactions", "each interaction must be a JSON object");
    if (check_id(o, "user_id", h, &ev->user_id, b) < 0 ||
        check_id(o, "item_id", h, &ev->item_id, b) < 0)
        return -1;
    json_t *t = json_object_get(o, "interaction_type");
    float weight;
    if (t == NULL || json_is_null(t))
        return bad_set(b, "interaction_type", "Missing required field: interaction_type");
    if (!json_is_string(t) || !recs_itype_weight(json_string_value(t), &weight))
        return bad_set(b, "interaction_type",
                       "interaction_type must be one of view, click, purchase, like, dislike, "
                       "add_to_cart, remove_from_cart");
    ev->type = json_string_value(t);
    bool given;
    ev->timestamp = now;
    if (check_time(o, "timestamp", h, &ev->timestamp, &given, b) < 0 ||
        check_context(o, h, ev, b) < 0 ||
        check_object(o, "metadata", MAX_EVENT_JSON, h, &ev->metadata, b) < 0)
        return -1;
    return 0;
}

static const char SQL_EVENT_PUT[] =
    "INSERT INTO rc_interactions(tenant_id, interaction_id, user_id, item_id, type, timestamp, "
    "session_id, device_type, context, metadata, created_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

static int event_store(struct hctx *h, const struct event_in *ev, int64_t now,
                       char id[UUID_STR_LEN])
{
    id_uuid7(id);
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_EVENT_PUT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, ev->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, ev->item_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, ev->type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 6, ev->timestamp);
    sqlite3_bind_text(q, 7, ev->session_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 8, ev->device_type, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 9, ev->context, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 10, ev->metadata, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 11, now);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

/* One interaction: 201 Created with its id. An item_id not in the catalog is accepted
 * (events may arrive before the catalog upload). */
static int interaction_track(struct hctx *h, int *ret_items)
{
    (void)ret_items;
    int64_t now = clock_now_ms();
    struct event_in ev;
    struct bad b;
    if (event_check(h, h->body, now, &ev, &b) < 0)
        return fail(h, TS_E_VALIDATION, b.field, b.error);
    int r = db_write_begin(h->app->db);
    char id[UUID_STR_LEN];
    if (r == 0)
        r = event_store(h, &ev, now, id);
    if (r < 0)
        return r;
    recs_serving_user_changed(h->tenant_id, ev.user_id);
    h->status = 201;
    h->audit_target = arena_strdup(h->arena, id);
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "status", "accepted");
    jw_kstr(&w, "interaction_id", id);
    return out_end(h, &w);
}

static int interactions_public(struct hctx *h)
{
    return counted(h, interaction_track);
}

static void event_error(struct jw *w, int index, json_t *o, const struct bad *b)
{
    json_t *u = json_is_object(o) ? json_object_get(o, "user_id") : NULL;
    json_t *i = json_is_object(o) ? json_object_get(o, "item_id") : NULL;
    jw_obj_open(w);
    jw_kint(w, "index", index);
    jw_kstr(w, "user_id", json_is_string(u) ? json_string_value(u) : NULL);
    jw_kstr(w, "item_id", json_is_string(i) ? json_string_value(i) : NULL);
    jw_kstr(w, "field", b->field);
    jw_kstr(w, "error", b->error);
    jw_obj_close(w);
}

/* A batch: every valid interaction stored, the bad ones listed by index. */
static int interactions_batch(struct hctx *h, int *ret_items)
{
    (void)ret_items;
    json_t *list;
    int r = check_body_tenant(h);
    if (r == 0)
        r = batch_array(h, "interactions", &list);
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    int64_t now = clock_now_ms();
    int accepted = 0, rejected = 0;
    struct strset users = {0};
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "validation_errors");
    jw_arr_open(&w);
    for (size_t i = 0; i < json_array_size(list) && r == 0; i++) {
        json_t *o = json_array_get(list, i);
        guard_rearm(h, i);
        struct event_in ev;
        struct bad b;
        char id[UUID_STR_LEN];
        if (event_check(h, o, now, &ev, &b) < 0) {
            event_error(&w, (int)i, o, &b);
            rejected++;
            continue;
        }
        r = event_store(h, &ev, now, id);
        if (r == 0) {
            accepted++;
            strset_add(h, &users, ev.user_id);
        }
    }
    if (r < 0)
        return r;
    jw_arr_close(&w);
    jw_kint(&w, "accepted", accepted);
    jw_kint(&w, "rejected", rejected);
    for (size_t i = 0; i < users.cap; i++)
        if (users.slot[i])
            recs_serving_user_changed(h->tenant_id, users.slot[i]);
    return out_end(h, &w);
}

static int interactions_internal(struct hctx *h)
{
    return counted(h, interactions_batch);
}

/* ---------- routes ---------- */

static const struct route recs_data_routes[] = {
    {"POST", "/api/v1/items", items_public, "recs.write", "recs", RUN_LOOP, 0,
     RF_JSON_BODY | RF_BIG_BODY, NULL},
    {"POST", "/internal/data/items", items_internal, "recs.internal", "recs", RUN_LOOP, 0,
     RF_JSON_BODY | RF_BIG_BODY, NULL},
    {"POST", "/api/v1/interactions", interactions_public, "recs.write", "recs", RUN_LOOP, 0,
     RF_JSON_BODY | RF_NO_AUDIT, NULL},
    {"POST", "/internal/data/interactions", interactions_internal, "recs.internal", "recs",
     RUN_LOOP, 0, RF_JSON_BODY | RF_BIG_BODY, NULL},
    {"GET", "/api/v1/usage", recs_usage_get, "recs.read", "recs", RUN_LOOP, 0, 0, NULL},
};

const struct route_table recs_data_table = {SURF_RECS, recs_data_routes,
                                            sizeof(recs_data_routes) / sizeof(recs_data_routes[0])};
