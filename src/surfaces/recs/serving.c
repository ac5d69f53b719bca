/* recs.md: serving — recommendations and embeddings (sections 1, 5), the ML metrics of
 * section 7, and the loop-side glue of the registry (model switches, fold-in on new
 * interactions). The registry itself is registry.c. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "core/log.h"
#include "engines/hashembed.h"
#include "http/metrics.h"
#include "jobs/pool.h"
#include "store/db.h"
#include "surfaces/recs/recs.h"
#include "surfaces/recs/registry.h"
#include "surfaces/recs/usage.h"

#define MAX_CATEGORIES 100        /* filters.categories entries */
#define MAX_EXCLUDE 1000          /* filters.exclude_ids entries */
#define MAX_CONTEXT_STR 128
#define MAX_EMBED_ITEMS 1000      /* items per POST /internal/ml/embeddings */
#define MAX_TITLE 1000            /* characters, as for stored items */
#define MAX_DESCRIPTION 10000
#define MAX_IMAGE_URL 2048
#define READY_RETRY_MS 20         /* a model announced before its commit is visible */
#define READY_TRIES 250
#define METRICS_MODELS_PER_TENANT 5

/* ---------- state ---------- */

struct ready_item {
    struct ready_item *next;
    char tenant[RS_TENANT_MAX], version[RS_VERSION_MAX];
    int tries;
};

struct serving_task {
    struct pool_task task;
    struct ready_item *ready;     /* a model to load */
    bool start;                   /* the start-up preload */
    int result;
};

static struct {
    struct app *app;
    bool started, stopping;
    uv_timer_t ready_timer;
    struct ready_item *ready_head;
    bool ready_running;
    /* the section 7 ML families */
    struct metric_family *quality, *train_seconds, *train_loss, *hit_rate, *ann_seconds,
        *ann_recall, *per_request, *exact_scored, *exact_gave_up;
} S;

/* ---------- metrics ---------- */

static const double ann_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                     0.01,   0.025,   0.05,   0.1,   0.25,   1};
static const double count_buckets[] = {0, 1, 5, 10, 20, 50, 100};

static void metrics_register(struct metrics *m)
{
    static const char *const q[] = {"tenant_id", "model_version", "metric_name"};
    static const char *const d[] = {"tenant_id", "model_type"};
    static const char *const l[] = {"tenant_id", "model_version", "epoch"};
    static const char *const t[] = {"tenant_id"};
    static const char *const a[] = {"tenant_id", "index_size"};
    S.quality = metrics_gauge(m, "ml_recommendation_quality",
                              "Held-out full-ranking quality of a trained model (rc_models.metrics: "
                              "recall_at_10, ndcg_at_10 and the popularity baseline's)",
                              3, q);
    S.train_seconds = metrics_gauge(m, "ml_training_duration_seconds",
                                    "Wall time of the latest completed training of each model type, from its start "
                                    "to ready (reading data, epochs, evaluation, storing vectors)",
                                    2, d);
    S.train_loss = metrics_gauge(m, "ml_training_loss", "Training loss of a model after each epoch",
                                 3, l);
    S.hit_rate = metrics_gauge(m, "ml_embedding_cache_hit_rate",
                               "Share of recommendation requests answered from the per-user cache "
                               "(user vector and ranked items), since start",
                               1, t);
    S.ann_seconds = metrics_histogram(
        m, "ml_ann_search_duration_seconds",
        "Top-k search over the item matrix (through the IVF index when the model has one, else an "
        "exact scan); index_size is its row count rounded up to 1, 2 or 5 x 10^k",
        2, a, ann_buckets, (int)(sizeof ann_buckets / sizeof ann_buckets[0]));
    static const char *const r[] = {"tenant_id", "model_version"};
    S.ann_recall = metrics_gauge(m, "ml_ann_recall_sampled",
                                 "Share of the exact top k that the IVF index returned, over the "
                                 "sampled searches (one in 1024 also runs the exact scan) since the "
                                 "model was loaded",
                                 2, r);
    S.exact_scored = metrics_gauge(m, "ml_exact_index_rows_scored_share",
                                   "Rows an exact search through the cluster index scored, as a "
                                   "share of the rows a scan scores, since the model was loaded",
                                   2, r);
    S.exact_gave_up = metrics_gauge(m, "ml_exact_index_gave_up_share",
                                    "Share of exact searches through the cluster index that gave "
                                    "up for the scan (past an eighth of the rows), since the model "
                                    "was loaded",
                                    2, r);
    S.per_request = metrics_histogram(m, "ml_recommendations_per_request",
                                      "Recommendations returned per request", 1, t, count_buckets,
                                      (int)(sizeof count_buckets / sizeof count_buckets[0]));
}

/* n rounded up to 1, 2 or 5 x 10^k: few series while a catalog grows. */
static void index_size_label(int32_t n, char out[24])
{
    long long v = 1;
    for (long long step = 1;; step *= 10) {
        if (n <= step || n <= 2 * step || n <= 5 * step) {
            v = n <= step ? step : n <= 2 * step ? 2 * step : 5 * step;
            break;
        }
    }
    snprintf(out, 24, "%lld", v);
}

static void metrics_after_request(const char *tenant, const struct rs_model *m,
                                  const struct rs_answer *a)
{
    const char *tv[] = {tenant};
    metric_observe(S.per_request, tv, a->n);
    uint64_t hits = 0, misses = 0;
    rs_cache_counts(tenant, &hits, &misses);
    if (hits + misses > 0)
        metric_set(S.hit_rate, tv, (double)hits / (double)(hits + misses));
    if (a->personalized && !a->cache_hit) {
        char size[24];
        index_size_label(m->n, size);
        const char *av[] = {tenant, size};
        metric_observe(S.ann_seconds, av, a->scan_ms / 1000.0);
    }
    uint_fast64_t searches = atomic_load(&((struct rs_model *)m)->x_searches);
    if (a->personalized && !a->cache_hit && searches > 0 && m->n > 0) {
        const char *rv[] = {tenant, m->version};
        double scored = (double)atomic_load(&((struct rs_model *)m)->x_scored);
        metric_set(S.exact_scored, rv, scored / ((double)searches * (double)m->n));
        metric_set(S.exact_gave_up, rv,
                   (double)atomic_load(&((struct rs_model *)m)->x_gave_up) / (double)searches);
    }
    uint_fast64_t total = atomic_load(&((struct rs_model *)m)->ann_total);
    if (a->ann_checked && total > 0) {
        const char *rv[] = {tenant, m->version};
        metric_set(S.ann_recall, rv, (double)atomic_load(&((struct rs_model *)m)->ann_hits) /
                                         (double)total);
    }
}

static const char SQL_MODEL_METRICS[] =
    "SELECT model_type, metrics, losses, created_at, completed_at FROM rc_models "
    "WHERE tenant_id = ?1 AND model_version = ?2 AND status = 'ready'";

/* One epoch's loss: losses is [l1, l2, ...] or [{"epoch": e, "loss": l}, ...]. */
static void publish_losses(const char *tenant, const char *version, json_t *losses)
{
    size_t i;
    json_t *v;
    json_array_foreach(losses, i, v) {
        double loss = NAN;
        long long epoch = (long long)i + 1;
        if (json_is_number(v))
            loss = json_number_value(v);
        else if (json_is_object(v) && json_is_number(json_object_get(v, "loss"))) {
            loss = json_number_value(json_object_get(v, "loss"));
            if (json_is_integer(json_object_get(v, "epoch")))
                epoch = json_integer_value(json_object_get(v, "epoch"));
        }
        if (!isfinite(loss))
            continue;
        char e[24];
        snprintf(e, sizeof e, "%lld", epoch);
        const char *lv[] = {tenant, version, e};
        metric_set(S.train_loss, lv, loss);
    }
}

/* The ranking-quality members of rc_models.metrics (recall_at_10, ndcg_at_10 and the popularity
 * baseline's); its counts and timings (users, train_seconds, ...) are not quality. */
static bool quality_name(const char *key)
{
    static const char *const words[] = {"recall", "ndcg", "precision", "hit_rate", "mrr", "auc"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strstr(key, words[i]))
            return true;
    return false;
}

/* Sets the quality and loss gauges of one ready model from its rc_models row, and the
 * training-duration gauge of its type when `latest` (it is the newest of its type). */
static void publish_model(sqlite3 *db, const char *tenant, const char *version, bool latest)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, SQL_MODEL_METRICS, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return;
    }
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, version, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        json_t *mj = json_loads(col_text(st, 1), 0, NULL);
        const char *key;
        json_t *v;
        json_object_foreach(mj, key, v) {
            if (!json_is_number(v) || !quality_name(key))
                continue;
            const char *qv[] = {tenant, version, key};
            metric_set(S.quality, qv, json_number_value(v));
        }
        json_decref(mj);
        json_t *lj = json_loads(col_text(st, 2), 0, NULL);
        if (json_is_array(lj))
            publish_losses(tenant, version, lj);
        json_decref(lj);
        if (latest && sqlite3_column_type(st, 4) != SQLITE_NULL) {
            double secs = (double)(sqlite3_column_int64(st, 4) - sqlite3_column_int64(st, 3)) / 1000;
            const char *dv[] = {tenant, col_text(st, 0)};
            if (secs >= 0)
                metric_set(S.train_seconds, dv, secs);
        }
    }
    sqlite3_finalize(st);
}

/* Newest first per tenant, so each type's first row is its latest. */
static const char SQL_READY_MODELS[] =
    "SELECT tenant_id, model_version, model_type FROM rc_models WHERE status = 'ready' "
    "ORDER BY tenant_id, completed_at DESC, model_version DESC";

static void publish_all(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, SQL_READY_MODELS, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return;
    }
    struct row {
        char t[RS_TENANT_MAX], v[RS_VERSION_MAX], type[32];
    } *rows = NULL;
    size_t n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            struct row *r = realloc(rows, cap * sizeof *r);
            if (r == NULL)
                break;
            rows = r;
        }
        snprintf(rows[n].t, RS_TENANT_MAX, "%s", col_text(st, 0));
        snprintf(rows[n].v, RS_VERSION_MAX, "%s", col_text(st, 1));
        snprintf(rows[n].type, sizeof rows[n].type, "%s", col_text(st, 2));
        n++;
    }
    sqlite3_finalize(st);
    int per_tenant = 0;
    for (size_t i = 0; i < n; i++) {
        per_tenant = i > 0 && strcmp(rows[i].t, rows[i - 1].t) == 0 ? per_tenant + 1 : 0;
        bool latest = true;
        for (size_t j = i; j-- > 0 && strcmp(rows[j].t, rows[i].t) == 0;)
            if (strcmp(rows[j].type, rows[i].type) == 0)
                latest = false;
        if (per_tenant < METRICS_MODELS_PER_TENANT || latest)
            publish_model(db, rows[i].t, rows[i].v, latest);
    }
    free(rows);
}

/* ---------- background tasks: start-up preload, model switches ---------- */

static void ready_kick(void);

static void task_work(struct pool_task *t, struct pool_worker *w)
{
    struct serving_task *st = (struct serving_task *)t;
    if (w->db == NULL)
        return;
    if (st->start) {
        rs_preload_all(w->db);
        publish_all(w->db);
    }
    if (st->ready) {
        st->result = rs_model_preload(w->db, st->ready->tenant, st->ready->version);
        if (st->result == 0)
            publish_model(w->db, st->ready->tenant, st->ready->version, true);
    }
}

static void task_done(struct pool_task *t, int status)
{
    struct serving_task *st = (struct serving_task *)t;
    if (st->ready) {
        S.ready_running = false;
        struct ready_item *r = st->ready;
        if (status == 0 && st->result == -EAGAIN && ++r->tries < READY_TRIES && !S.stopping) {
            r->next = S.ready_head; /* not visible yet: try again shortly */
            S.ready_head = r;
        } else {
            if (st->result < 0 && status == 0)
                log_msg(LOG_WARN, "recs serving: %s of tenant %s not loaded (%d); requests load it",
                        r->version, r->tenant, st->result);
            free(r);
        }
        ready_kick();
    }
    free(st);
}

static int task_submit(struct serving_task *st)
{
    st->task.work = task_work;
    st->task.done = task_done;
    return pool_submit(S.app->pool, &st->task);
}

static void ready_timer_cb(uv_timer_t *t)
{
    (void)t;
    if (S.ready_running || S.ready_head == NULL || S.stopping)
        return;
    struct serving_task *st = calloc(1, sizeof *st);
    if (st == NULL)
        return;
    st->ready = S.ready_head;
    S.ready_head = st->ready->next;
    st->ready->next = NULL;
    S.ready_running = true;
    if (task_submit(st) < 0) {
        S.ready_running = false;
        st->ready->next = S.ready_head;
        S.ready_head = st->ready;
        free(st);
        uv_timer_start(&S.ready_timer, ready_timer_cb, 100, 0); /* pool full: later */
    }
}

/* A timer rather than a direct submit: the model was announced inside the write that makes it
 * current, which commits at the end of this loop iteration. */
static void ready_kick(void)
{
    if (S.ready_head && !S.ready_running && !S.stopping)
        uv_timer_start(&S.ready_timer, ready_timer_cb,
                       S.ready_head->tries ? READY_RETRY_MS : 1, 0);
}

int recs_serving_start(struct app *app)
{
    S.app = app;
    rs_init(app->cfg->recs_ann_min_items, app->cfg->recs_ann_probe_pct,
            app->cfg->recs_q8_min_items, app->cfg->recs_exact_index_min_items);
    metrics_register(app->metrics);
    uv_timer_init(app->loop, &S.ready_timer);
    S.started = true;
    struct serving_task *st = calloc(1, sizeof *st);
    if (st == NULL)
        return -ENOMEM;
    st->start = true;
    if (task_submit(st) < 0) {
        free(st);
        log_msg(LOG_WARN, "recs serving: start-up preload not queued; models load on demand");
    }
    return 0;
}

void recs_serving_stop(void)
{
    if (!S.started)
        return;
    S.stopping = true;
    uv_timer_stop(&S.ready_timer);
    uv_close((uv_handle_t *)&S.ready_timer, NULL);
    for (struct ready_item *r = S.ready_head, *nx; r; r = nx) {
        nx = r->next;
        free(r);
    }
    S.ready_head = NULL;
    rs_shutdown(); /* the pool has stopped: no worker holds a model */
    S.started = false;
}

void recs_serving_model_ready(const char *tenant_id, const char *model_version)
{
    if (!S.started || S.stopping || strlen(tenant_id) >= RS_TENANT_MAX ||
        strlen(model_version) >= RS_VERSION_MAX)
        return;
    struct ready_item *r = calloc(1, sizeof *r);
    if (r == NULL)
        return;
    snprintf(r->tenant, sizeof r->tenant, "%s", tenant_id);
    snprintf(r->version, sizeof r->version, "%s", model_version);
    struct ready_item **p = &S.ready_head;
    while (*p)
        p = &(*p)->next;
    *p = r;
    ready_kick();
}

static const char SQL_USER_NEWEST[] =
    "SELECT max(id) FROM rc_interactions WHERE tenant_id = ?1 AND user_id = ?2";

void recs_serving_user_changed(const char *tenant_id, const char *user_id)
{
    if (!S.started || S.stopping || tenant_id == NULL || user_id == NULL)
        return;
    /* the writer sees the rows just stored, committed or not */
    int64_t newest = 0;
    sqlite3_stmt *q = db_stmt(S.app->db, SQL_USER_NEWEST);
    if (q) {
        sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, user_id, -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_ROW)
            newest = sqlite3_column_int64(q, 0);
        sqlite3_reset(q);
    }
    /* nothing is recomputed ahead: the user's next request folds the new items in, so a stream
     * of interactions costs no solver time for users nobody asks about */
    rs_user_changed(tenant_id, user_id, newest);
}

/* ---------- request parsing ---------- */

static bool str_ok(json_t *v)
{
    return json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v);
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* Internal routes: a tenant_id in the body must be the key's own (it never picks the tenant). */
static int check_body_tenant(struct hctx *h)
{
    json_t *v = json_object_get(h->body, "tenant_id");
    if (v == NULL || json_is_null(v))
        return 0;
    if (!str_ok(v))
        return fail(h, TS_E_VALIDATION, "tenant_id", "tenant_id must be a string");
    if (strcmp(json_string_value(v), h->tenant_id) != 0)
        return fail(h, TS_E_FORBIDDEN, "tenant_id",
                    "tenant_id must be the tenant of the API key making the call");
    return 0;
}

static bool version_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= RS_VERSION_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

/* model_version: absent/null (the current model) or a well-formed name. */
static int parse_version(struct hctx *h, json_t *v, const char **ret)
{
    *ret = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!str_ok(v) || !version_valid(json_string_value(v)))
        return fail(h, TS_E_VALIDATION, "model_version",
                    "model_version must be a model name such as mf-3 or content-pop-0");
    *ret = json_string_value(v);
    return 0;
}

/* An array of at most max strings, each passing ok(); field names the bad entry. */
static int parse_strings(struct hctx *h, json_t *a, const char *field, int max,
                         bool (*ok)(const char *), const char *rule, const char ***ret, int *ret_n)
{
    *ret = NULL;
    *ret_n = 0;
    if (a == NULL || json_is_null(a))
        return 0;
    if (!json_is_array(a) || (int)json_array_size(a) > max)
        return fail(h, TS_E_VALIDATION, field,
                    arena_printf(h->arena, "%s must be an array of at most %d strings", field, max));
    int n = (int)json_array_size(a);
    const char **out = arena_alloc(h->arena, sizeof(char *) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (!str_ok(v) || !ok(json_string_value(v)))
            return fail(h, TS_E_VALIDATION, arena_printf(h->arena, "%s[%d]", field, i),
                        arena_printf(h->arena, "%s[%d] %s", field, i, rule));
        out[i] = json_string_value(v);
    }
    *ret = out;
    *ret_n = n;
    return 0;
}

static int parse_filters(struct hctx *h, struct rs_query *q)
{
    json_t *f = json_object_get(h->body, "filters");
    if (f == NULL || json_is_null(f))
        return 0;
    if (!json_is_object(f))
        return fail(h, TS_E_VALIDATION, "filters", "filters must be a JSON object");
    int r = parse_strings(h, json_object_get(f, "categories"), "filters.categories",
                          MAX_CATEGORIES, recs_category_valid,
                          "must be a category: 1-64 lowercase letters, digits or '-'",
                          (const char ***)&q->categories, &q->ncategories);
    if (r < 0)
        return r;
    r = parse_strings(h, json_object_get(f, "exclude_ids"), "filters.exclude_ids", MAX_EXCLUDE,
                      recs_id_valid, "must be an item id: 1-128 letters, digits, '-' or '_'",
                      (const char ***)&q->exclude_ids, &q->nexclude);
    if (r < 0)
        return r;
    json_t *ms = json_object_get(f, "min_score");
    if (ms && !json_is_null(ms)) {
        if (!json_is_number(ms) || !isfinite(json_number_value(ms)))
            return fail(h, TS_E_VALIDATION, "filters.min_score", "filters.min_score must be a number");
        q->has_min_score = true;
        double v = json_number_value(ms); /* clamped first: a float cannot hold 1e300 */
        q->min_score = (float)(v > FLT_MAX ? FLT_MAX : v < -FLT_MAX ? -FLT_MAX : v);
    }
    json_t *seen = json_object_get(f, "include_seen");
    if (seen && !json_is_null(seen)) {
        if (!json_is_boolean(seen))
            return fail(h, TS_E_VALIDATION, "filters.include_seen",
                        "filters.include_seen must be true or false");
        q->include_seen = json_is_true(seen);
    }
    return 0;
}

static int parse_context(struct hctx *h)
{
    json_t *c = json_object_get(h->body, "context");
    if (c == NULL || json_is_null(c))
        return 0;
    if (!json_is_object(c))
        return fail(h, TS_E_VALIDATION, "context", "context must be a JSON object");
    json_t *d = json_object_get(c, "device_type");
    if (d && !json_is_null(d)) {
        const char *s = str_ok(d) ? json_string_value(d) : "";
        if (strcmp(s, "mobile") && strcmp(s, "desktop") && strcmp(s, "tablet"))
            return fail(h, TS_E_VALIDATION, "context.device_type",
                        "context.device_type must be mobile, desktop or tablet");
    }
    static const char *const strs[] = {"location", "session_id"};
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(c, strs[i]);
        if (v && !json_is_null(v) &&
            (!str_ok(v) || utf8_chars(json_string_value(v)) > MAX_CONTEXT_STR))
            return fail(h, TS_E_VALIDATION, arena_printf(h->arena, "context.%s", strs[i]),
                        arena_printf(h->arena, "context.%s must be a string of at most %d "
                                               "characters", strs[i], MAX_CONTEXT_STR));
    }
    return 0;
}

/* The body of both recommendation routes (section 1 / section 5 plus model_version and
 * filters.include_seen). */
static int parse_request(struct hctx *h, struct rs_query *q, const char **ret_version)
{
    memset(q, 0, sizeof *q);
    q->tenant_id = h->tenant_id;
    q->count = 10;
    json_t *u = json_object_get(h->body, "user_id");
    if (u == NULL || json_is_null(u))
        return fail(h, TS_E_VALIDATION, "user_id", "Missing required field: user_id");
    if (!str_ok(u) || !recs_id_valid(json_string_value(u)))
        return fail(h, TS_E_VALIDATION, "user_id",
                    "user_id must be 1-128 characters, each a letter, digit, '-' or '_'");
    q->user_id = json_string_value(u);
    json_t *c = json_object_get(h->body, "count");
    if (c && !json_is_null(c)) {
        if (!json_is_integer(c) || json_integer_value(c) < 1 ||
            json_integer_value(c) > RS_MAX_COUNT)
            return fail(h, TS_E_VALIDATION, "count", "count must be an integer from 1 to 100");
        q->count = (int)json_integer_value(c);
    }
    int r = parse_filters(h, q);
    if (r == 0)
        r = parse_context(h);
    if (r == 0)
        r = parse_version(h, json_object_get(h->body, "model_version"), ret_version);
    return r;
}

/* ---------- recommendations ---------- */

static int model_error(struct hctx *h, int r, const char *version)
{
    if (r == TS_E_NOT_FOUND)
        return fail(h, TS_E_NOT_FOUND, "model_version",
                    arena_printf(h->arena, "model %s not found (no ready model of that version)",
                                 version));
    return fail(h, TS_E_INTERNAL, NULL, "the model could not be loaded");
}

static void write_float(struct jw *w, float v)
{
    char tmp[32];
    if (!isfinite(v)) {
        jw_null(w);
        return;
    }
    snprintf(tmp, sizeof tmp, "%.9g", (double)v); /* exact for a float */
    jw_raw(w, tmp);
}

static void write_public(struct hctx *h, struct jw *w, const struct rs_model *m,
                         const struct rs_answer *a)
{
    jw_key(w, "recommendations");
    jw_arr_open(w);
    for (int i = 0; i < a->n; i++) {
        jw_obj_open(w);
        jw_kstr(w, "item_id", m->item_ids[a->rows[i]]);
        jw_key(w, "score");
        write_float(w, a->scores[i]);
        jw_obj_close(w);
    }
    jw_arr_close(w);
    jw_key(w, "metadata");
    jw_obj_open(w);
    jw_kstr(w, "model_version", m->version);
    jw_kdouble(w, "latency_ms", round(recs_elapsed_ms(h) * 1000) / 1000);
    jw_kbool(w, "cache_hit", a->cache_hit);
    jw_kstr(w, "strategy", a->personalized ? "personalized" : "popularity");
    jw_obj_close(w);
}

static void write_internal(struct hctx *h, struct jw *w, const struct rs_model *m,
                           const struct rs_answer *a)
{
    jw_kstr(w, "request_id", h->req->request_id);
    jw_key(w, "recommendations");
    jw_arr_open(w);
    for (int i = 0; i < a->n; i++) {
        int32_t row = a->rows[i];
        jw_obj_open(w);
        jw_kstr(w, "item_id", m->item_ids[row]);
        jw_key(w, "score");
        write_float(w, a->scores[i]);
        jw_key(w, "embedding_distance");
        write_float(w, a->distance[i]);
        jw_key(w, "metadata");
        jw_obj_open(w);
        const char *cat = m->cats[m->item_cat[row]];
        jw_kstr(w, "category", cat[0] ? cat : NULL);
        char iso[40];
        clock_iso8601(m->item_created_ms[row], 0, iso, sizeof iso);
        jw_kstr(w, "created_at", iso);
        jw_obj_close(w);
        jw_obj_close(w);
    }
    jw_arr_close(w);
    jw_kstr(w, "model_version", m->version);
    jw_kdouble(w, "latency_ms", round(recs_elapsed_ms(h) * 1000) / 1000);
    jw_kbool(w, "cache_hit", a->cache_hit);
    jw_kstr(w, "strategy", a->personalized ? "personalized" : "popularity");
}

static int recommend(struct hctx *h, bool internal, int *ret_served)
{
    int r = internal ? check_body_tenant(h) : 0;
    struct rs_query q;
    const char *version = NULL;
    if (r == 0)
        r = parse_request(h, &q, &version);
    if (r < 0)
        return r;
    struct rs_model *m = NULL;
    if ((r = rs_model_acquire(h->db, h->tenant_id, version, &m)) < 0)
        return model_error(h, r, version);
    struct rs_answer *a = arena_alloc(h->arena, sizeof *a);
    r = rs_recommend(h->db, m, &q, a);
    if (r < 0) {
        rs_model_unref(m);
        return fail(h, TS_E_INTERNAL, NULL, "recommendation failed");
    }
    struct jw w;
    out_begin(h, &w);
    if (internal)
        write_internal(h, &w, m, a);
    else
        write_public(h, &w, m, a);
    metrics_after_request(h->tenant_id, m, a);
    rs_model_unref(m);
    *ret_served = a->n;
    return out_end(h, &w);
}

/* Every serving route: the quota first, then one api call counted whatever the outcome. */
static int counted(struct hctx *h, bool internal, int (*fn)(struct hctx *, bool, int *))
{
    int r = recs_quota_check(h);
    if (r < 0)
        return r;
    int served = 0;
    r = fn(h, internal, &served);
    recs_usage_add(h->tenant_id, 1, served, 0, recs_elapsed_ms(h));
    return r;
}

static int recommend_public(struct hctx *h)
{
    return counted(h, false, recommend);
}

static int recommend_internal(struct hctx *h)
{
    return counted(h, true, recommend);
}

/* ---------- embeddings ---------- */

static void write_vector(struct jw *w, const float *v, int dim)
{
    jw_key(w, "embedding");
    jw_arr_open(w);
    for (int d = 0; d < dim; d++)
        write_float(w, v[d]);
    jw_arr_close(w);
    jw_kint(w, "dimension", dim);
}

static int embedding_get(struct hctx *h, bool internal, int *ret_served)
{
    (void)internal;
    (void)ret_served;
    const char *item = http_param_get(h->req, "item_id");
    if (item == NULL || !recs_id_valid(item))
        return fail(h, TS_E_VALIDATION, "item_id",
                    "item_id must be 1-128 characters, each a letter, digit, '-' or '_'");
    const char *version = http_query_get(h->req, "model_version");
    if (version && !version_valid(version))
        return fail(h, TS_E_VALIDATION, "model_version",
                    "model_version must be a model name such as mf-3 or content-pop-0");
    struct rs_model *m = NULL;
    int r = rs_model_acquire(h->db, h->tenant_id, version, &m);
    if (r < 0)
        return model_error(h, r, version);
    int32_t row = rs_item_row(m, item);
    if (row < 0) {
        r = fail(h, TS_E_NOT_FOUND, "item_id",
                 arena_printf(h->arena, "item %s has no vector in model %s (unknown item, no "
                                        "content embedding yet, or not in the model's training)",
                              item, m->version));
        rs_model_unref(m);
        return r;
    }
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "item_id", m->item_ids[row]);
    write_vector(&w, m->V + (size_t)row * (size_t)m->dim, m->dim);
    jw_kstr(&w, "model_version", m->version);
    rs_model_unref(m);
    return out_end(h, &w);
}

static int embedding_public(struct hctx *h)
{
    return counted(h, false, embedding_get);
}

/* Features of one item to embed, checked like stored items (section 9 and the item limits). */
struct features {
    const char *title, *description, *category;
    const char *tags[RECS_MAX_TAGS];
    int ntags;
};

static int parse_text(struct hctx *h, json_t *f, const char *key, size_t max, const char *prefix,
                      const char **ret)
{
    json_t *v = json_object_get(f, key);
    *ret = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!str_ok(v) || utf8_chars(json_string_value(v)) > max)
        return fail(h, TS_E_VALIDATION, arena_printf(h->arena, "%s.%s", prefix, key),
                    arena_printf(h->arena, "%s.%s must be a string of at most %zu characters",
                                 prefix, key, max));
    *ret = json_string_value(v);
    return 0;
}

static int parse_features(struct hctx *h, json_t *f, const char *prefix, struct features *ret)
{
    memset(ret, 0, sizeof *ret);
    if (!json_is_object(f))
        return fail(h, TS_E_VALIDATION, prefix, arena_printf(h->arena, "%s must be a JSON object",
                                                              prefix));
    const char *image = NULL;
    int r = parse_text(h, f, "title", MAX_TITLE, prefix, &ret->title);
    if (r == 0)
        r = parse_text(h, f, "description", MAX_DESCRIPTION, prefix, &ret->description);
    if (r == 0)
        r = parse_text(h, f, "image_url", MAX_IMAGE_URL, prefix, &image);
    if (r < 0)
        return r;
    json_t *c = json_object_get(f, "category");
    if (c && !json_is_null(c)) {
        if (!str_ok(c) || !recs_category_valid(json_string_value(c)))
            return fail(h, TS_E_VALIDATION, arena_printf(h->arena, "%s.category", prefix),
                        "category must be 1-64 characters, each a lowercase letter, digit or '-'");
        ret->category = json_string_value(c);
    }
    json_t *t = json_object_get(f, "tags");
    if (t && !json_is_null(t)) {
        if (!json_is_array(t) || json_array_size(t) > RECS_MAX_TAGS)
            return fail(h, TS_E_VALIDATION, arena_printf(h->arena, "%s.tags", prefix),
                        "tags must be an array of at most 20 strings");
        for (size_t i = 0; i < json_array_size(t); i++) {
            json_t *g = json_array_get(t, i);
            if (!str_ok(g) || json_string_length(g) == 0 ||
                utf8_chars(json_string_value(g)) > RECS_MAX_TAG_LEN)
                return fail(h, TS_E_VALIDATION, arena_printf(h->arena, "%s.tags[%zu]", prefix, i),
                            "each tag must be a non-empty string of at most 32 characters");
            ret->tags[ret->ntags++] = json_string_value(g);
        }
    }
    bool any = (ret->title && ret->title[0]) || (ret->description && ret->description[0]) ||
               ret->category || ret->ntags > 0;
    if (!any)
        return fail(h, TS_E_VALIDATION, prefix,
                    arena_printf(h->arena, "%s needs at least one of title, description, "
                                           "category or tags to embed", prefix));
    return 0;
}

/* items[]: either all with features (content embeddings of those features) or all without
 * (the stored vectors of model_version, or of the current model). */
static int embeddings_items(struct hctx *h, json_t **ret_items, bool *ret_features)
{
    json_t *items = json_object_get(h->body, "items");
    if (items == NULL || json_is_null(items))
        return fail(h, TS_E_VALIDATION, "items", "Missing required field: items");
    if (!json_is_array(items) || json_array_size(items) == 0 ||
        json_array_size(items) > MAX_EMBED_ITEMS)
        return fail(h, TS_E_VALIDATION, "items",
                    "items must be an array of 1 to 1000 items");
    size_t with = 0;
    for (size_t i = 0; i < json_array_size(items); i++) {
        json_t *o = json_array_get(items, i);
        if (!json_is_object(o))
            return fail(h, TS_E_VALIDATION, arena_printf(h->arena, "items[%zu]", i),
                        "each item must be a JSON object");
        json_t *id = json_object_get(o, "item_id");
        if (id == NULL || json_is_null(id))
            return fail(h, TS_E_VALIDATION, arena_printf(h->arena, "items[%zu].item_id", i),
                        "Missing required field: item_id");
        if (!str_ok(id) || !recs_id_valid(json_string_value(id)))
            return fail(h, TS_E_VALIDATION, arena_printf(h->arena, "items[%zu].item_id", i),
                        "item_id must be 1-128 characters, each a letter, digit, '-' or '_'");
        json_t *f = json_object_get(o, "features");
        with += f && !json_is_null(f);
    }
    if (with != 0 && with != json_array_size(items))
        return fail(h, TS_E_VALIDATION, "items",
                    "give features for every item (content embeddings) or for none (the "
                    "model's stored vectors)");
    *ret_items = items;
    *ret_features = with > 0;
    return 0;
}

static int embed_features(struct hctx *h, json_t *items, const char *version)
{
    if (version && strcmp(version, RECS_CONTENT_MODEL) != 0)
        return fail(h, TS_E_VALIDATION, "model_version",
                    "features are embedded by the content model (content-pop-0); trained "
                    "models have vectors only for the items they were trained on: omit "
                    "features to get those");
    size_t n = json_array_size(items);
    struct features *fs = arena_alloc(h->arena, sizeof *fs * n);
    for (size_t i = 0; i < n; i++) {
        int r = parse_features(h, json_object_get(json_array_get(items, i), "features"),
                               arena_printf(h->arena, "items[%zu].features", i), &fs[i]);
        if (r < 0)
            return r;
    }
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "embeddings");
    jw_arr_open(&w);
    float vec[RECS_DEFAULT_DIM];
    for (size_t i = 0; i < n; i++) {
        hashembed(fs[i].title, fs[i].description, fs[i].category, fs[i].tags, fs[i].ntags,
                  RECS_DEFAULT_DIM, vec);
        jw_obj_open(&w);
        jw_kstr(&w, "item_id", json_string_value(json_object_get(json_array_get(items, i),
                                                                 "item_id")));
        write_vector(&w, vec, RECS_DEFAULT_DIM);
        jw_obj_close(&w);
    }
    jw_arr_close(&w);
    jw_kstr(&w, "model_version", RECS_CONTENT_MODEL);
    return out_end(h, &w);
}

static int embed_stored(struct hctx *h, json_t *items, const char *version)
{
    struct rs_model *m = NULL;
    int r = rs_model_acquire(h->db, h->tenant_id, version, &m);
    if (r < 0)
        return model_error(h, r, version);
    size_t n = json_array_size(items);
    int32_t *rows = arena_alloc(h->arena, sizeof(int32_t) * n);
    for (size_t i = 0; i < n; i++) {
        const char *id = json_string_value(json_object_get(json_array_get(items, i), "item_id"));
        if ((rows[i] = rs_item_row(m, id)) < 0) {
            r = fail(h, TS_E_NOT_FOUND, arena_printf(h->arena, "items[%zu].item_id", i),
                     arena_printf(h->arena, "item %s has no vector in model %s", id, m->version));
            rs_model_unref(m);
            return r;
        }
    }
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "embeddings");
    jw_arr_open(&w);
    for (size_t i = 0; i < n; i++) {
        jw_obj_open(&w);
        jw_kstr(&w, "item_id", m->item_ids[rows[i]]);
        write_vector(&w, m->V + (size_t)rows[i] * (size_t)m->dim, m->dim);
        jw_obj_close(&w);
    }
    jw_arr_close(&w);
    jw_kstr(&w, "model_version", m->version);
    rs_model_unref(m);
    return out_end(h, &w);
}

static int embeddings(struct hctx *h, bool internal, int *ret_served)
{
    (void)internal;
    (void)ret_served;
    int r = check_body_tenant(h);
    const char *version = NULL;
    json_t *items = NULL;
    bool features = false;
    if (r == 0)
        r = parse_version(h, json_object_get(h->body, "model_version"), &version);
    if (r == 0)
        r = embeddings_items(h, &items, &features);
    if (r < 0)
        return r;
    return features ? embed_features(h, items, version) : embed_stored(h, items, version);
}

static int embeddings_internal(struct hctx *h)
{
    return counted(h, true, embeddings);
}

/* ---------- routes ---------- */

/* All in the pool: a scan of 100k x 128 floats is ~51 MB of memory reads (~2 ms), and a model
 * may have to be loaded first. The recommendation routes share one bucket per tenant. */
static const struct route recs_serving_routes[] = {
    {"POST", "/api/v1/recommendations", recommend_public, "recs.read", "recs", RUN_POOL, 0,
     RF_JSON_BODY | RF_RATE_TENANT, NULL},
    {"POST", "/internal/ml/recommendations", recommend_internal, "recs.internal", "recs",
     RUN_POOL, 0, RF_JSON_BODY | RF_RATE_TENANT, NULL},
    {"GET", "/api/v1/items/{item_id}/embedding", embedding_public, "recs.read", "default",
     RUN_POOL, 0, 0, NULL},
    {"POST", "/internal/ml/embeddings", embeddings_internal, "recs.internal", "default", RUN_POOL,
     0, RF_JSON_BODY | RF_BIG_BODY, NULL},
};

const struct route_table recs_serving_table = {
    SURF_RECS, recs_serving_routes, sizeof(recs_serving_routes) / sizeof(recs_serving_routes[0])};
