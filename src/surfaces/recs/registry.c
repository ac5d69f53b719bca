/* The serving registry: loading models into contiguous matrices, switching them atomically,
 * popularity in a window, per-user history, fold-in and cached answers, and exact top-k. */
#include "surfaces/recs/registry.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <jansson.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "engines/mf.h"
#include "engines/vec.h"
#include "surfaces/recs/recs.h"

/* Bounds. Answers per user are few (a client asks the same shape again); histories keep the
 * newest items only; older model versions are a small LRU per tenant. */
#define RS_HIST_MAX_ROWS 10000        /* interactions read per user */
#define RS_HIST_MAX_ITEMS 2000        /* distinct items kept (the seen set and fold-in input) */
#define RS_RESULTS_PER_USER 4
#define RS_USERS_MAX_BYTES (64u << 20)
#define RS_OLDER_MAX 2                /* older versions kept loaded per tenant */
#define RS_TENANT_BUCKETS 256
#define RS_RELOAD_FACTOR 10           /* reload for a catalog change at most 1/10 of the time */
#define RS_POP_DELTA_MAX 500000       /* more new rows than this: recompute popularity in full */
#define RS_DECAY_ITEMS 10.0f          /* history weight halves every 10 items back */
#define RS_MIX_HALF 4.0f              /* RS_MIXED: new items weigh n / (n + 4) */
#define RS_POP_FULL_MS 3600000        /* popularity recounted in full hourly (the window moves) */

/* ---------- small pieces ---------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int64_t mono_ms(void)
{
    return (int64_t)(clock_mono_ns() / 1000000u);
}

static double mono_msf(void)
{
    return (double)clock_mono_ns() / 1e6;
}

/* keys[0..n) into a table at most half full. 0 or -ENOMEM. */
static int idmap_build(struct rs_idmap *m, const char *const *keys, int32_t n)
{
    uint32_t cap = 16;
    while (cap < (uint32_t)n * 2u)
        cap <<= 1;
    m->slots = calloc(cap, sizeof *m->slots);
    if (m->slots == NULL)
        return -ENOMEM;
    m->mask = cap - 1;
    m->keys = keys;
    for (int32_t r = 0; r < n; r++) {
        uint32_t i = (uint32_t)fnv1a(keys[r]) & m->mask;
        while (m->slots[i])
            i = (i + 1) & m->mask;
        m->slots[i] = r + 1;
    }
    return 0;
}

static int32_t idmap_get(const struct rs_idmap *m, const char *key)
{
    if (m->slots == NULL)
        return -1;
    uint32_t i = (uint32_t)fnv1a(key) & m->mask;
    for (; m->slots[i]; i = (i + 1) & m->mask)
        if (strcmp(m->keys[m->slots[i] - 1], key) == 0)
            return m->slots[i] - 1;
    return -1;
}

/* A growable pool of strings referenced by offset until the pool stops moving. */
struct strpool {
    char *data;
    size_t len, cap;
};

static int64_t strpool_add(struct strpool *p, const char *s)
{
    size_t n = strlen(s) + 1;
    if (p->len + n > p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4096;
        while (cap < p->len + n)
            cap *= 2;
        char *d = realloc(p->data, cap);
        if (d == NULL)
            return -1;
        p->data = d;
        p->cap = cap;
    }
    memcpy(p->data + p->len, s, n);
    p->len += n;
    return (int64_t)(p->len - n);
}

static const char *col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        log_msg(LOG_ERROR, "recs serving: prepare failed: %s", sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

/* A read snapshot for a multi-statement load on a worker's read-only connection. */
static void snap_begin(sqlite3 *db)
{
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
}

static void snap_end(sqlite3 *db)
{
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
}

/* ---------- models ---------- */

static atomic_uint_fast64_t model_serials = 1;

static void model_free(struct rs_model *m)
{
    if (m == NULL)
        return;
    vec_free(m->V);
    vec_q8_free(m->Vq);
    vec_free(m->U);
    free(m->vnorm);
    free(m->item_ids);
    free(m->item_cat);
    free(m->item_created_ms);
    free(m->cats);
    free(m->items.slots);
    free(m->catmap.slots);
    free(m->user_ids);
    free(m->users.slots);
    free(m->VtV);
    free(m->blob);
    free(m->pop);
    ivf_free(&m->ivf);
    ivf_free(&m->xix);
    pthread_mutex_destroy(&m->pop_mu);
    pthread_mutex_destroy(&m->scan_mu);
    pthread_cond_destroy(&m->scan_cv);
    free(m);
}

void rs_model_unref(struct rs_model *m)
{
    if (m && atomic_fetch_sub(&m->refs, 1) == 1)
        model_free(m);
}

static struct rs_model *model_ref(struct rs_model *m)
{
    atomic_fetch_add(&m->refs, 1);
    return m;
}

int32_t rs_item_row(const struct rs_model *m, const char *item_id)
{
    return idmap_get(&m->items, item_id);
}

/* Rows being read in: ids and categories as offsets into one pool, vectors straight into
 * the matrix (allocated for the counted maximum). */
struct loading {
    struct strpool pool;
    int64_t *id_off, *cat_off, *user_off;
    int32_t cap, ucap;
};

static void loading_free(struct loading *L)
{
    free(L->pool.data);
    free(L->id_off);
    free(L->cat_off);
    free(L->user_off);
}

static struct rs_model *model_new(const char *tenant_id, const char *version)
{
    struct rs_model *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    atomic_init(&m->refs, 1);
    m->serial = atomic_fetch_add(&model_serials, 1);
    snprintf(m->tenant_id, sizeof m->tenant_id, "%s", tenant_id);
    snprintf(m->version, sizeof m->version, "%s", version);
    pthread_mutex_init(&m->pop_mu, NULL);
    pthread_mutex_init(&m->scan_mu, NULL);
    pthread_cond_init(&m->scan_cv, NULL);
    m->scan_tail = &m->scan_head;
    m->unorm_mean = 1.0f;
    return m;
}

static int64_t count_rows(sqlite3 *db, const char *sql, const char *a, const char *b, int64_t c)
{
    sqlite3_stmt *st = prep(db, sql);
    if (st == NULL)
        return -1;
    sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
    if (b)
        sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
    else
        sqlite3_bind_int64(st, 2, c);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return n;
}

/* Reads item rows (id, vector blob, category, created_at) from st into m's matrix. */
static int read_items(sqlite3_stmt *st, struct rs_model *m, struct loading *L, int32_t cap)
{
    size_t vbytes = (size_t)m->dim * sizeof(float);
    m->V = vec_alloc((size_t)(cap ? cap : 1), (size_t)m->dim);
    m->item_created_ms = malloc(sizeof(int64_t) * (size_t)(cap ? cap : 1));
    L->id_off = malloc(sizeof(int64_t) * (size_t)(cap ? cap : 1));
    L->cat_off = malloc(sizeof(int64_t) * (size_t)(cap ? cap : 1));
    if (!m->V || !m->item_created_ms || !L->id_off || !L->cat_off)
        return -ENOMEM;
    int32_t n = 0;
    int rc = SQLITE_DONE;
    while (n < cap && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((size_t)sqlite3_column_bytes(st, 1) != vbytes)
            continue; /* a vector of another dimension: not part of this matrix */
        memcpy(m->V + (size_t)n * (size_t)m->dim, sqlite3_column_blob(st, 1), vbytes);
        L->id_off[n] = strpool_add(&L->pool, col_str(st, 0));
        L->cat_off[n] = strpool_add(&L->pool, col_str(st, 2));
        if (L->id_off[n] < 0 || L->cat_off[n] < 0)
            return -ENOMEM;
        m->item_created_ms[n] = sqlite3_column_int64(st, 3);
        n++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return TS_E_INTERNAL; /* ROW: the counted rows are all in (the count bounds the loop) */
    m->n = n;
    return 0;
}

static int read_users(sqlite3_stmt *st, struct rs_model *m, struct loading *L, int32_t cap)
{
    size_t vbytes = (size_t)m->dim * sizeof(float);
    m->U = vec_alloc((size_t)(cap ? cap : 1), (size_t)m->dim);
    L->user_off = malloc(sizeof(int64_t) * (size_t)(cap ? cap : 1));
    if (!m->U || !L->user_off)
        return -ENOMEM;
    int32_t n = 0;
    int rc = SQLITE_DONE;
    while (n < cap && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((size_t)sqlite3_column_bytes(st, 1) != vbytes)
            continue;
        memcpy(m->U + (size_t)n * (size_t)m->dim, sqlite3_column_blob(st, 1), vbytes);
        if ((L->user_off[n] = strpool_add(&L->pool, col_str(st, 0))) < 0)
            return -ENOMEM;
        n++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return TS_E_INTERNAL;
    m->nusers = n;
    return 0;
}

/* Pointers into the final pool, the category dictionary, norms and the maps. */
/* Catalogs from this many items get an IVF index (rs_init; 0 = never); searches probe this
 * share (%) of its lists. */
static int ann_min_items, ann_probe_pct = 2; /* both set by rs_init from the config */

/* Catalogs from this many items keep V's int8 copy (rs_init; 0 = never): below about a
 * thousand a float scan is already short. */
static int q8_min_items = 1024;

/* Catalogs from this many items get the exact search's cluster index (rs_init; 0 = never). */
static int exact_min_items = 10000;

/* The IVF index of a large catalog: about 2 sqrt(n) lists, ann_probe_pct of them probed;
 * seeded by the version, so a version always gets the same index. Without memory for it the
 * model is served by the exact scan. */
#define RS_IVF_ITERS 6
static void index_build(struct rs_model *m)
{
    if (ann_min_items <= 0 || m->n < ann_min_items || m->V == NULL)
        return;
    double t0 = mono_msf();
    if (ivf_build(&m->ivf, m->V, m->n, m->dim, ivf_nlist_for(m->n), RS_IVF_ITERS,
                  fnv1a(m->version)) < 0) {
        log_msg(LOG_WARN, "recs: no memory for the index of %s; serving it by exact scan",
                m->version);
        return;
    }
    m->nprobe = (m->ivf.nlist * ann_probe_pct + 50) / 100;
    if (m->nprobe < 1)
        m->nprobe = 1;
    log_msg(LOG_INFO, "recs: %s index: %d lists, %d probed, built in %.0f ms", m->version,
            m->ivf.nlist, m->nprobe, mono_msf() - t0);
}

/* The exact search's index: about sqrt(n) lists (a centroid scan of 40 KB at 100k x 128),
 * seeded by the version. Without memory for it the model is served by the scan. */
static void exact_index_build(struct rs_model *m)
{
    if (exact_min_items <= 0 || m->n < exact_min_items || m->V == NULL || m->ivf.n > 0)
        return;
    double t0 = mono_msf();
    int nlist = (int)lround(sqrt((double)m->n));
    if (ivf_build(&m->xix, m->V, m->n, m->dim, nlist < 1 ? 1 : nlist, RS_IVF_ITERS,
                  fnv1a(m->version) ^ 0x9e3779b97f4a7c15ull) < 0) {
        log_msg(LOG_WARN, "recs: no memory for the exact index of %s; serving it by scan",
                m->version);
        return;
    }
    log_msg(LOG_INFO, "recs: %s exact index: %d lists, built in %.0f ms", m->version,
            m->xix.nlist, mono_msf() - t0);
}

static int model_finish(struct rs_model *m, struct loading *L)
{
    int32_t n = m->n;
    size_t strbytes = L->pool.len;
    m->blob = L->pool.data;
    L->pool.data = NULL;
    m->item_ids = malloc(sizeof(char *) * (size_t)(n ? n : 1));
    m->item_cat = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    m->cats = malloc(sizeof(char *) * (size_t)(n ? n : 1));
    m->vnorm = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!m->item_ids || !m->item_cat || !m->cats || !m->vnorm)
        return -ENOMEM;
    /* categories: the distinct strings, each item pointing at its index */
    uint32_t cap = 16;
    while (cap < (uint32_t)n * 2u)
        cap <<= 1;
    int32_t *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return -ENOMEM;
    for (int32_t r = 0; r < n; r++) {
        m->item_ids[r] = m->blob + L->id_off[r];
        const char *c = m->blob + L->cat_off[r];
        uint32_t i = (uint32_t)fnv1a(c) & (cap - 1);
        while (slots[i] && strcmp(m->cats[slots[i] - 1], c) != 0)
            i = (i + 1) & (cap - 1);
        if (!slots[i]) {
            m->cats[m->ncats] = c;
            slots[i] = ++m->ncats;
        }
        m->item_cat[r] = slots[i] - 1;
        m->vnorm[r] = vec_norm(m->V + (size_t)r * (size_t)m->dim, m->dim);
    }
    free(slots);
    if (idmap_build(&m->items, m->item_ids, n) < 0 ||
        idmap_build(&m->catmap, m->cats, m->ncats) < 0)
        return -ENOMEM;
    if (m->nusers > 0) {
        m->user_ids = malloc(sizeof(char *) * (size_t)m->nusers);
        if (m->user_ids == NULL)
            return -ENOMEM;
        double s = 0;
        for (int32_t r = 0; r < m->nusers; r++) {
            m->user_ids[r] = m->blob + L->user_off[r];
            s += vec_norm(m->U + (size_t)r * (size_t)m->dim, m->dim);
        }
        m->unorm_mean = (float)(s / m->nusers);
        if (idmap_build(&m->users, m->user_ids, m->nusers) < 0)
            return -ENOMEM;
    }
    index_build(m);
    exact_index_build(m);
    if (m->ivf.n == 0 && q8_min_items > 0 && n >= q8_min_items) {
        m->Vq = vec_q8_build(m->V, n, m->dim); /* NULL (no memory): the float scan alone */
        if (m->Vq)
            log_msg(LOG_INFO, "recs: %s int8 copy: %d items, %.1f MB", m->version, (int)n,
                    (double)vec_q8_bytes(m->Vq) / 1e6);
    }
    m->bytes = sizeof *m + ((size_t)n + (size_t)m->nusers) * (size_t)m->dim * sizeof(float) +
               (size_t)n * (sizeof(char *) * 2 + sizeof(int32_t) * 3 + sizeof(int64_t) * 2) +
               (size_t)m->nusers * sizeof(int32_t) * 3 + strbytes + ivf_bytes(&m->ivf) +
               ivf_bytes(&m->xix) + vec_q8_bytes(m->Vq);
    return 0;
}

static const char SQL_CONTENT_DIM[] =
    "SELECT dim FROM rc_item_content WHERE tenant_id = ?1 GROUP BY dim "
    "ORDER BY count(*) DESC, dim DESC LIMIT 1";
static const char SQL_CONTENT_COUNT[] =
    "SELECT count(*) FROM rc_item_content WHERE tenant_id = ?1 AND dim = ?2";
static const char SQL_CONTENT_ITEMS[] =
    "SELECT c.item_id, c.vector, i.category, i.created_at FROM rc_item_content c "
    "JOIN rc_items i ON i.tenant_id = c.tenant_id AND i.item_id = c.item_id "
    "WHERE c.tenant_id = ?1 AND c.dim = ?2";

/* content-pop-0: the catalog's content embeddings (only items that have one). */
static int load_content(sqlite3 *db, struct rs_model *m, struct loading *L)
{
    snprintf(m->model_type, sizeof m->model_type, "content_popularity");
    m->kind = RS_CONTENT;
    m->dim = RECS_DEFAULT_DIM;
    sqlite3_stmt *st = prep(db, SQL_CONTENT_DIM);
    if (st == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(st, 1, m->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        m->dim = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (m->dim < 1 || m->dim > RECS_MAX_DIM)
        m->dim = RECS_DEFAULT_DIM;
    int64_t cap = count_rows(db, SQL_CONTENT_COUNT, m->tenant_id, NULL, m->dim);
    if (cap < 0 || cap > INT32_MAX / 2)
        return TS_E_INTERNAL;
    if ((st = prep(db, SQL_CONTENT_ITEMS)) == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(st, 1, m->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, m->dim);
    int r = read_items(st, m, L, (int32_t)cap);
    sqlite3_finalize(st);
    m->trained_ms = INT64_MAX; /* nothing is "new since training": every vector is computed */
    return r;
}

static const char SQL_MODEL_ROW[] =
    "SELECT model_type, dim, hyperparameters, created_at FROM rc_models "
    "WHERE tenant_id = ?1 AND model_version = ?2 AND status = 'ready'";
static const char SQL_VEC_COUNT_ITEMS[] =
    "SELECT count(*) FROM rc_model_vectors WHERE tenant_id = ?1 AND model_version = ?2 "
    "AND kind = 'item'";
static const char SQL_VEC_COUNT_USERS[] =
    "SELECT count(*) FROM rc_model_vectors WHERE tenant_id = ?1 AND model_version = ?2 "
    "AND kind = 'user'";
static const char SQL_VEC_ITEMS[] =
    "SELECT v.entity_id, v.vector, i.category, i.created_at FROM rc_model_vectors v "
    "JOIN rc_items i ON i.tenant_id = v.tenant_id AND i.item_id = v.entity_id "
    "WHERE v.tenant_id = ?1 AND v.model_version = ?2 AND v.kind = 'item'";
static const char SQL_VEC_USERS[] =
    "SELECT entity_id, vector FROM rc_model_vectors WHERE tenant_id = ?1 AND model_version = ?2 "
    "AND kind = 'user'";

/* The ALS regularisation and confidence slope the model was trained with (the training
 * defaults when not recorded), for a fold-in that solves the same objective. */
static void read_hyper(struct rs_model *m, const char *json)
{
    struct mf_opts o = {0};
    mf_opts_defaults(&o);
    m->reg = o.reg;
    m->alpha = o.alpha;
    json_t *h = json_loads(json, 0, NULL);
    if (h == NULL)
        return;
    static const char *const regs[] = {"reg", "regularization", "lambda"};
    for (size_t i = 0; i < sizeof regs / sizeof regs[0]; i++) {
        json_t *v = json_object_get(h, regs[i]);
        if (json_is_number(v) && json_number_value(v) > 0) {
            m->reg = json_number_value(v);
            break;
        }
    }
    json_t *a = json_object_get(h, "alpha");
    if (json_is_number(a) && json_number_value(a) > 0)
        m->alpha = json_number_value(a);
    json_decref(h);
}

static int load_trained(sqlite3 *db, struct rs_model *m, struct loading *L)
{
    sqlite3_stmt *st = prep(db, SQL_MODEL_ROW);
    if (st == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(st, 1, m->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, m->version, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return TS_E_NOT_FOUND;
    }
    snprintf(m->model_type, sizeof m->model_type, "%s", col_str(st, 0));
    m->dim = sqlite3_column_int(st, 1);
    read_hyper(m, col_str(st, 2));
    m->trained_ms = sqlite3_column_int64(st, 3);
    sqlite3_finalize(st);
    m->kind = !strcmp(m->model_type, "matrix_factorization") ? RS_ALS
              : !strcmp(m->model_type, "content_popularity") ? RS_CONTENT
                                                               : RS_MIXED;
    if (m->dim < 1 || m->dim > RECS_MAX_DIM)
        return TS_E_INTERNAL;
    int64_t ni = count_rows(db, SQL_VEC_COUNT_ITEMS, m->tenant_id, m->version, 0);
    int64_t nu = count_rows(db, SQL_VEC_COUNT_USERS, m->tenant_id, m->version, 0);
    if (ni < 0 || nu < 0 || ni > INT32_MAX / 2 || nu > INT32_MAX / 2)
        return TS_E_INTERNAL;
    if ((st = prep(db, SQL_VEC_ITEMS)) == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(st, 1, m->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, m->version, -1, SQLITE_STATIC);
    int r = read_items(st, m, L, (int32_t)ni);
    sqlite3_finalize(st);
    if (r < 0)
        return r;
    if ((st = prep(db, SQL_VEC_USERS)) == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(st, 1, m->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, m->version, -1, SQLITE_STATIC);
    r = read_users(st, m, L, (int32_t)nu);
    sqlite3_finalize(st);
    return r;
}

/* ---------- popularity ---------- */

static const char SQL_POP_LAST_TS[] =
    "SELECT max(timestamp) FROM rc_interactions WHERE tenant_id = ?1";
static const char SQL_POP_ROWS[] =
    "SELECT item_id, type FROM rc_interactions WHERE tenant_id = ?1 AND timestamp >= ?2";
static const char SQL_MAX_ID[] = "SELECT max(id) FROM rc_interactions";
/* rowid range only: the new rows of every tenant since the last count, not the tenant's all */
static const char SQL_POP_DELTA[] =
    "SELECT id, item_id, type, timestamp FROM rc_interactions NOT INDEXED "
    "WHERE id > ?1 AND tenant_id = ?2 ORDER BY id";

static float type_weight(const char *type)
{
    float w = 0;
    return recs_itype_weight(type, &w) ? w : 0;
}

static int64_t one_int(sqlite3 *db, const char *sql, const char *tenant)
{
    sqlite3_stmt *st = prep(db, sql);
    if (st == NULL)
        return -1;
    if (tenant)
        sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    int64_t v = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL
                    ? sqlite3_column_int64(st, 0)
                    : 0;
    sqlite3_finalize(st);
    return v;
}

static float pop_max_of(const float *pop, int32_t n)
{
    float mx = 0;
    for (int32_t r = 0; r < n; r++)
        if (pop[r] > mx)
            mx = pop[r];
    return mx;
}

/* Weighted interaction counts over the 30 days up to the tenant's newest interaction (or up to
 * now when that is later than now), computed in a snapshot; swapped in under pop_mu. */
static int pop_compute(sqlite3 *db, struct rs_model *m, uint64_t gen)
{
    float *pop = calloc((size_t)(m->n ? m->n : 1), sizeof *pop);
    if (pop == NULL)
        return -ENOMEM;
    snap_begin(db);
    int64_t through = one_int(db, SQL_MAX_ID, NULL);
    int64_t last = one_int(db, SQL_POP_LAST_TS, m->tenant_id), now = clock_now_ms();
    int64_t start = (last > 0 && last < now ? last : now) - RS_POP_WINDOW_MS;
    sqlite3_stmt *st = prep(db, SQL_POP_ROWS);
    int rc = SQLITE_ERROR;
    if (st) {
        sqlite3_bind_text(st, 1, m->tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, start);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            int32_t r = idmap_get(&m->items, col_str(st, 0));
            if (r >= 0)
                pop[r] += type_weight(col_str(st, 1));
        }
        sqlite3_finalize(st);
    }
    snap_end(db);
    if (rc != SQLITE_DONE || through < 0) {
        free(pop);
        return TS_E_INTERNAL;
    }
    pthread_mutex_lock(&m->pop_mu);
    free(m->pop);
    m->pop = pop;
    m->pop_max = pop_max_of(pop, m->n);
    m->pop_through_id = through;
    m->pop_start_ms = start;
    m->pop_mono_ms = mono_ms();
    m->pop_gen = gen;
    pthread_mutex_unlock(&m->pop_mu);
    return 0;
}

/* Adds the rows stored since the last count. Rows a concurrent delta already added are
 * skipped by id, so two racing deltas never count a row twice. */
static int pop_delta(sqlite3 *db, struct rs_model *m, uint64_t gen)
{
    pthread_mutex_lock(&m->pop_mu);
    int64_t from = m->pop_through_id, start = m->pop_start_ms;
    pthread_mutex_unlock(&m->pop_mu);
    int64_t maxid = one_int(db, SQL_MAX_ID, NULL);
    if (maxid - from > RS_POP_DELTA_MAX)
        return pop_compute(db, m, gen);
    sqlite3_stmt *st = prep(db, SQL_POP_DELTA);
    if (st == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_text(st, 2, m->tenant_id, -1, SQLITE_STATIC);
    pthread_mutex_lock(&m->pop_mu);
    int rc;
    int64_t through = m->pop_through_id;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        if (id <= through)
            continue;
        through = id;
        int32_t r = idmap_get(&m->items, col_str(st, 1));
        if (r >= 0 && sqlite3_column_int64(st, 3) >= start) {
            m->pop[r] += type_weight(col_str(st, 2));
            if (m->pop[r] > m->pop_max)
                m->pop_max = m->pop[r];
        }
    }
    /* a row the tenant did not write still moves the mark: the scan need not see it again */
    if (rc == SQLITE_DONE && maxid > through)
        through = maxid;
    m->pop_through_id = through;
    if (rc == SQLITE_DONE)
        m->pop_gen = gen;
    pthread_mutex_unlock(&m->pop_mu);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : TS_E_INTERNAL;
}

/* ---------- tenants ---------- */

struct rs_user;

struct rs_tenant {
    struct rs_tenant *next;
    char id[RS_TENANT_MAX];
    struct rs_model *current;
    struct rs_model *older[RS_OLDER_MAX];
    int64_t older_used[RS_OLDER_MAX];
    char preloading[RS_VERSION_MAX];  /* a version a background load is bringing in */
    pthread_mutex_t load_mu;           /* one load at a time per tenant */
    uint64_t pop_gen;                  /* bumped by every interaction change */
    uint64_t hits, misses;
    struct rs_user **ub;               /* users: chained hash */
    uint32_t ucap, ucount;
};

/* Everything below (tenant list, current/older pointers, users, answers) is under rs_mu;
 * no SQLite call and no scan is made while holding it. */
static pthread_mutex_t rs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rs_tenant *tenants[RS_TENANT_BUCKETS];

static struct rs_tenant *tenant_get_locked(const char *id)
{
    if (strlen(id) >= RS_TENANT_MAX)
        return NULL;
    uint64_t h = fnv1a(id) % RS_TENANT_BUCKETS;
    for (struct rs_tenant *t = tenants[h]; t; t = t->next)
        if (strcmp(t->id, id) == 0)
            return t;
    struct rs_tenant *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    snprintf(t->id, sizeof t->id, "%s", id);
    pthread_mutex_init(&t->load_mu, NULL);
    t->next = tenants[h];
    tenants[h] = t;
    return t;
}

static struct rs_tenant *tenant_get(const char *id)
{
    pthread_mutex_lock(&rs_mu);
    struct rs_tenant *t = tenant_get_locked(id);
    pthread_mutex_unlock(&rs_mu);
    return t;
}

/* The loaded model of that version (current or older), referenced; NULL if none. */
static struct rs_model *loaded_locked(struct rs_tenant *t, const char *version)
{
    if (t->current && strcmp(t->current->version, version) == 0)
        return model_ref(t->current);
    for (int i = 0; i < RS_OLDER_MAX; i++)
        if (t->older[i] && strcmp(t->older[i]->version, version) == 0) {
            t->older_used[i] = mono_ms();
            return model_ref(t->older[i]);
        }
    return NULL;
}

/* Keeps m (one reference handed over) among the older versions, evicting the least used. */
static void older_put_locked(struct rs_tenant *t, struct rs_model *m)
{
    int slot = 0;
    for (int i = 0; i < RS_OLDER_MAX; i++) {
        if (t->older[i] && strcmp(t->older[i]->version, m->version) == 0) {
            slot = i;
            break;
        }
        if (t->older[i] == NULL || t->older_used[i] < t->older_used[slot])
            slot = i;
        if (t->older[slot] == NULL)
            break;
    }
    struct rs_model *old = t->older[slot];
    t->older[slot] = m;
    t->older_used[slot] = mono_ms();
    rs_model_unref(old);
}

/* Installs m (one reference handed over) where it belongs: as current, the replaced current
 * moving to the older versions; or as an older version. */
static void install_locked(struct rs_tenant *t, struct rs_model *m, bool as_current)
{
    for (int i = 0; i < RS_OLDER_MAX; i++)
        if (t->older[i] && strcmp(t->older[i]->version, m->version) == 0) {
            rs_model_unref(t->older[i]);
            t->older[i] = NULL;
        }
    if (!as_current) {
        if (t->current && strcmp(t->current->version, m->version) == 0) {
            rs_model_unref(t->current);
            t->current = m;
        } else {
            older_put_locked(t, m);
        }
        return;
    }
    struct rs_model *old = t->current;
    t->current = m;
    if (old && strcmp(old->version, m->version) != 0)
        older_put_locked(t, old);
    else
        rs_model_unref(old);
}

static const char SQL_STATE[] =
    "SELECT (SELECT version FROM rc_catalog_version WHERE tenant_id = ?1), "
    "(SELECT model_version FROM rc_models WHERE tenant_id = ?1 AND is_current = 1 "
    "AND status = 'ready' ORDER BY completed_at DESC LIMIT 1)";

/* The tenant's catalog version and current model version as stored (version may be NULL:
 * the content model). */
static int read_state(sqlite3 *db, const char *tenant, int64_t *ret_catalog,
                      char ret_version[RS_VERSION_MAX])
{
    sqlite3_stmt *st = prep(db, SQL_STATE);
    if (st == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *ret_catalog = sqlite3_column_int64(st, 0);
        const char *v = (const char *)sqlite3_column_text(st, 1);
        snprintf(ret_version, RS_VERSION_MAX, "%s", v ? v : RECS_CONTENT_MODEL);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : TS_E_INTERNAL;
}

/* Loads a version from the database in one snapshot. */
static int model_load(sqlite3 *db, const char *tenant, const char *version,
                      struct rs_model **ret)
{
    double t0 = mono_msf();
    struct rs_model *m = model_new(tenant, version);
    if (m == NULL)
        return -ENOMEM;
    struct loading L = {0};
    snap_begin(db);
    int64_t catalog = 0;
    char cur[RS_VERSION_MAX];
    int r = read_state(db, tenant, &catalog, cur);
    if (r == 0)
        r = strcmp(version, RECS_CONTENT_MODEL) == 0 ? load_content(db, m, &L)
                                                     : load_trained(db, m, &L);
    snap_end(db);
    if (r == 0)
        r = model_finish(m, &L);
    loading_free(&L);
    if (r == 0 && m->kind == RS_ALS && m->n > 0) {
        m->VtV = malloc(sizeof(float) * (size_t)m->dim * (size_t)m->dim);
        if (m->VtV == NULL)
            r = -ENOMEM;
        else
            als_gram(m->V, m->n, m->dim, m->VtV);
    }
    if (r == 0) {
        pthread_mutex_lock(&rs_mu);
        struct rs_tenant *t = tenant_get_locked(tenant);
        uint64_t gen = t ? t->pop_gen : 0;
        pthread_mutex_unlock(&rs_mu);
        r = pop_compute(db, m, gen);
    }
    if (r < 0) {
        if (r != TS_E_NOT_FOUND)
            log_msg(LOG_ERROR, "recs serving: loading %s of tenant %s failed (%d)", version, tenant,
                    r);
        model_free(m);
        return r == TS_E_NOT_FOUND ? r : TS_E_INTERNAL;
    }
    m->catalog_version = catalog;
    m->loaded_mono_ms = mono_ms();
    m->load_ms = mono_msf() - t0;
    log_msg(LOG_INFO, "recs serving: loaded %s of tenant %s: %d items, %d users, dim %d, %.1f ms",
            version, tenant, (int)m->n, (int)m->nusers, m->dim, m->load_ms);
    *ret = m;
    return 0;
}

/* A loaded model is fresh enough when its catalog is current, or when reloading it now would
 * spend more than 1/RS_RELOAD_FACTOR of the time loading (a catalog written to constantly is
 * then served up to ~10 load-times behind). */
static bool fresh_enough(const struct rs_model *m, int64_t catalog)
{
    if (m->catalog_version == catalog)
        return true;
    return (double)(mono_ms() - m->loaded_mono_ms) < RS_RELOAD_FACTOR * m->load_ms;
}

int rs_model_acquire(sqlite3 *db, const char *tenant_id, const char *version,
                     struct rs_model **ret)
{
    int64_t catalog = 0;
    char cur[RS_VERSION_MAX];
    int r = read_state(db, tenant_id, &catalog, cur);
    if (r < 0)
        return r;
    const char *want = version ? version : cur;
    bool as_current = strcmp(want, cur) == 0;
    struct rs_tenant *t = tenant_get(tenant_id);
    if (t == NULL)
        return TS_E_INTERNAL;
    pthread_mutex_lock(&rs_mu);
    struct rs_model *m = loaded_locked(t, want);
    /* a background load of the new current version is under way: keep serving the previous
     * one meanwhile rather than load it a second time */
    if (m == NULL && version == NULL && t->current && strcmp(t->preloading, want) == 0)
        m = model_ref(t->current);
    pthread_mutex_unlock(&rs_mu);
    if (m && fresh_enough(m, catalog)) {
        *ret = m;
        return 0;
    }
    /* load it; whoever held load_mu may have loaded the same thing: look again first */
    pthread_mutex_lock(&t->load_mu);
    pthread_mutex_lock(&rs_mu);
    struct rs_model *again = loaded_locked(t, want);
    pthread_mutex_unlock(&rs_mu);
    if (again && (again->catalog_version == catalog || again != m)) {
        pthread_mutex_unlock(&t->load_mu);
        rs_model_unref(m);
        *ret = again;
        return 0;
    }
    rs_model_unref(again);
    struct rs_model *fresh = NULL;
    r = model_load(db, tenant_id, want, &fresh);
    if (r == 0) {
        pthread_mutex_lock(&rs_mu);
        install_locked(t, model_ref(fresh), as_current);
        pthread_mutex_unlock(&rs_mu);
    }
    pthread_mutex_unlock(&t->load_mu);
    if (r == 0) {
        rs_model_unref(m);
        *ret = fresh;
        return 0;
    }
    if (m && r != TS_E_NOT_FOUND) {
        *ret = m; /* the reload failed: the loaded model is better than an error */
        return 0;
    }
    rs_model_unref(m);
    return r;
}

int rs_model_preload(sqlite3 *db, const char *tenant_id, const char *version)
{
    int64_t catalog = 0;
    char cur[RS_VERSION_MAX];
    if (read_state(db, tenant_id, &catalog, cur) < 0)
        return TS_E_INTERNAL;
    if (strcmp(cur, version) != 0)
        return -EAGAIN; /* not (yet) committed as current in this snapshot */
    struct rs_tenant *t = tenant_get(tenant_id);
    if (t == NULL)
        return TS_E_INTERNAL;
    pthread_mutex_lock(&t->load_mu);
    pthread_mutex_lock(&rs_mu);
    struct rs_model *m = loaded_locked(t, version);
    bool have = m && m == t->current && m->catalog_version == catalog;
    if (!have)
        snprintf(t->preloading, sizeof t->preloading, "%s", version);
    pthread_mutex_unlock(&rs_mu);
    rs_model_unref(m);
    int r = 0;
    if (!have) {
        struct rs_model *fresh = NULL;
        r = model_load(db, tenant_id, version, &fresh);
        pthread_mutex_lock(&rs_mu);
        if (r == 0)
            install_locked(t, fresh, true);
        t->preloading[0] = 0;
        pthread_mutex_unlock(&rs_mu);
    }
    pthread_mutex_unlock(&t->load_mu);
    return r;
}

static const char SQL_ALL_CURRENT[] =
    "SELECT tenant_id, model_version FROM rc_models WHERE is_current = 1 AND status = 'ready'";

void rs_preload_all(sqlite3 *db)
{
    sqlite3_stmt *st = prep(db, SQL_ALL_CURRENT);
    if (st == NULL)
        return;
    /* collect first: the loads open their own snapshots */
    struct pair {
        char t[RS_TENANT_MAX], v[RS_VERSION_MAX];
    } *list = NULL;
    size_t n = 0, cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            struct pair *l = realloc(list, cap * sizeof *l);
            if (l == NULL)
                break;
            list = l;
        }
        snprintf(list[n].t, RS_TENANT_MAX, "%s", col_str(st, 0));
        snprintf(list[n].v, RS_VERSION_MAX, "%s", col_str(st, 1));
        n++;
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < n; i++)
        rs_model_preload(db, list[i].t, list[i].v);
    free(list);
}

/* ---------- users ---------- */

struct rs_result {
    uint64_t serial;              /* the model load it was computed on */
    uint64_t pop_gen;             /* popularity answers: the tenant's changes they include */
    char *key;                    /* the request shape */
    int n;
    bool personalized;
    int32_t *rows;
    float *scores, *distance;
};

struct rs_user {
    struct rs_user *hnext;
    struct rs_user *lprev, *lnext; /* LRU, most recent at the head */
    struct rs_tenant *t;
    char *id;
    uint64_t gen;                 /* bumped by each change */
    int64_t want_id;              /* newest interaction id known on the writer */
    struct rs_hist *hist;
    uint64_t hist_gen;
    uint64_t vec_serial, vec_gen;
    float *vec;                   /* vec_dim floats, or NULL: no usable vector */
    int vec_dim;
    bool vec_known;
    struct rs_result *res[RS_RESULTS_PER_USER];
    int res_next;
    size_t bytes;
};

static struct rs_user *lru_head, *lru_tail;
static size_t users_bytes;

void rs_hist_unref(struct rs_hist *h)
{
    if (h && atomic_fetch_sub(&h->refs, 1) == 1)
        free(h); /* one allocation: struct, items, strings */
}

static struct rs_hist *hist_ref(struct rs_hist *h)
{
    if (h)
        atomic_fetch_add(&h->refs, 1);
    return h;
}

static void result_free(struct rs_result *r)
{
    if (r == NULL)
        return;
    free(r->key);
    free(r->rows);
    free(r);
}

static size_t result_bytes(const struct rs_result *r)
{
    return sizeof *r + strlen(r->key) + 1 + (size_t)r->n * 12;
}

static void user_drop_answers_locked(struct rs_user *u)
{
    for (int i = 0; i < RS_RESULTS_PER_USER; i++) {
        if (u->res[i]) {
            u->bytes -= result_bytes(u->res[i]);
            users_bytes -= result_bytes(u->res[i]);
        }
        result_free(u->res[i]);
        u->res[i] = NULL;
    }
}

static void lru_unlink(struct rs_user *u)
{
    if (u->lprev)
        u->lprev->lnext = u->lnext;
    else
        lru_head = u->lnext;
    if (u->lnext)
        u->lnext->lprev = u->lprev;
    else
        lru_tail = u->lprev;
    u->lprev = u->lnext = NULL;
}

static void lru_front(struct rs_user *u)
{
    if (lru_head == u)
        return;
    if (u->lprev || u->lnext || lru_tail == u)
        lru_unlink(u);
    u->lnext = lru_head;
    if (lru_head)
        lru_head->lprev = u;
    lru_head = u;
    if (lru_tail == NULL)
        lru_tail = u;
}

static void user_free_locked(struct rs_user *u)
{
    user_drop_answers_locked(u);
    users_bytes -= u->bytes;
    rs_hist_unref(u->hist);
    free(u->vec);
    free(u->id);
    free(u);
}

/* Unhooks u from its tenant's table and the LRU and frees it. */
static void user_evict_locked(struct rs_user *u)
{
    struct rs_tenant *t = u->t;
    uint32_t b = (uint32_t)fnv1a(u->id) & (t->ucap - 1);
    for (struct rs_user **p = &t->ub[b]; *p; p = &(*p)->hnext)
        if (*p == u) {
            *p = u->hnext;
            break;
        }
    t->ucount--;
    lru_unlink(u);
    user_free_locked(u);
}

static void users_trim_locked(void)
{
    while (users_bytes > RS_USERS_MAX_BYTES && lru_tail && lru_tail != lru_head)
        user_evict_locked(lru_tail);
}

static void user_charge_locked(struct rs_user *u, ssize_t delta)
{
    u->bytes = (size_t)((ssize_t)u->bytes + delta);
    users_bytes = (size_t)((ssize_t)users_bytes + delta);
}

static int users_grow_locked(struct rs_tenant *t)
{
    uint32_t cap = t->ucap ? t->ucap * 2 : 64;
    struct rs_user **nb = calloc(cap, sizeof *nb);
    if (nb == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < t->ucap; i++)
        for (struct rs_user *u = t->ub[i], *nx; u; u = nx) {
            nx = u->hnext;
            uint32_t b = (uint32_t)fnv1a(u->id) & (cap - 1);
            u->hnext = nb[b];
            nb[b] = u;
        }
    free(t->ub);
    t->ub = nb;
    t->ucap = cap;
    return 0;
}

static struct rs_user *user_find_locked(struct rs_tenant *t, const char *id)
{
    if (t->ucap == 0)
        return NULL;
    for (struct rs_user *u = t->ub[(uint32_t)fnv1a(id) & (t->ucap - 1)]; u; u = u->hnext)
        if (strcmp(u->id, id) == 0)
            return u;
    return NULL;
}

static struct rs_user *user_get_locked(struct rs_tenant *t, const char *id)
{
    struct rs_user *u = user_find_locked(t, id);
    if (u) {
        lru_front(u);
        return u;
    }
    if ((t->ucount + 1) * 2 > t->ucap && users_grow_locked(t) < 0)
        return NULL;
    u = calloc(1, sizeof *u);
    if (u == NULL || (u->id = strdup(id)) == NULL) {
        free(u);
        return NULL;
    }
    u->t = t;
    u->gen = 1;
    uint32_t b = (uint32_t)fnv1a(id) & (t->ucap - 1);
    u->hnext = t->ub[b];
    t->ub[b] = u;
    t->ucount++;
    lru_front(u);
    user_charge_locked(u, (ssize_t)(sizeof *u + strlen(id) + 1));
    users_trim_locked();
    return u;
}

void rs_user_changed(const char *tenant_id, const char *user_id, int64_t newest_id)
{
    pthread_mutex_lock(&rs_mu);
    struct rs_tenant *t = tenant_get_locked(tenant_id);
    if (t) {
        t->pop_gen++;
        /* a user without state gets some, so a request racing this change cannot install a
         * history read before it as current */
        struct rs_user *u = user_get_locked(t, user_id);
        if (u) {
            u->gen++;
            if (newest_id > u->want_id)
                u->want_id = newest_id;
            user_drop_answers_locked(u);
        }
    }
    pthread_mutex_unlock(&rs_mu);
}

static const char SQL_HIST[] =
    "SELECT item_id, type, timestamp, created_at FROM rc_interactions "
    "INDEXED BY rc_interactions_user "
    "WHERE tenant_id = ?1 AND user_id = ?2 ORDER BY timestamp DESC, id DESC LIMIT 10000";
static const char SQL_USER_MAX_ID[] =
    "SELECT max(id) FROM rc_interactions WHERE tenant_id = ?1 AND user_id = ?2";

struct hist_build {
    char *id;
    float w;
    int64_t ts, stored;
};

/* The user's distinct items, newest first, with summed weights, from one snapshot. */
static int hist_load(sqlite3 *db, const char *tenant, const char *user, struct rs_hist **ret)
{
    snap_begin(db);
    sqlite3_stmt *mx = prep(db, SQL_USER_MAX_ID), *st = prep(db, SQL_HIST);
    if (mx == NULL || st == NULL) {
        sqlite3_finalize(mx);
        sqlite3_finalize(st);
        snap_end(db);
        return TS_E_INTERNAL;
    }
    sqlite3_bind_text(mx, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(mx, 2, user, -1, SQLITE_STATIC);
    int64_t max_id = sqlite3_step(mx) == SQLITE_ROW ? sqlite3_column_int64(mx, 0) : 0;
    sqlite3_finalize(mx);
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC);
    struct hist_build *items = NULL;
    int n = 0, cap = 0;
    uint32_t hcap = 64;
    int32_t *slots = calloc(hcap, sizeof *slots);
    size_t strbytes = 0;
    int rc = SQLITE_DONE, r = slots ? 0 : -ENOMEM;
    while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = col_str(st, 0);
        uint32_t i = (uint32_t)fnv1a(id) & (hcap - 1);
        while (slots[i] && strcmp(items[slots[i] - 1].id, id) != 0)
            i = (i + 1) & (hcap - 1);
        float w = type_weight(col_str(st, 1));
        if (slots[i]) {
            struct hist_build *b = &items[slots[i] - 1];
            b->w += w; /* rows come newest first: ts is already the latest */
            int64_t stored = sqlite3_column_int64(st, 3);
            if (stored > b->stored)
                b->stored = stored;
            continue;
        }
        if (n == RS_HIST_MAX_ITEMS)
            continue; /* older items beyond the kept ones */
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            struct hist_build *ni = realloc(items, (size_t)cap * sizeof *ni);
            if (ni == NULL) {
                r = -ENOMEM;
                break;
            }
            items = ni;
        }
        if ((items[n].id = strdup(id)) == NULL) {
            r = -ENOMEM;
            break;
        }
        strbytes += strlen(id) + 1;
        items[n].w = w;
        items[n].ts = sqlite3_column_int64(st, 2);
        items[n].stored = sqlite3_column_int64(st, 3);
        slots[i] = ++n;
        if ((uint32_t)n * 2 > hcap) {
            uint32_t nc = hcap * 2;
            int32_t *ns = calloc(nc, sizeof *ns);
            if (ns == NULL) {
                r = -ENOMEM;
                break;
            }
            for (int k = 0; k < n; k++) {
                uint32_t j = (uint32_t)fnv1a(items[k].id) & (nc - 1);
                while (ns[j])
                    j = (j + 1) & (nc - 1);
                ns[j] = k + 1;
            }
            free(slots);
            slots = ns;
            hcap = nc;
        }
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = TS_E_INTERNAL;
    sqlite3_finalize(st);
    snap_end(db);
    free(slots);
    struct rs_hist *h = NULL;
    if (r == 0) {
        size_t bytes = sizeof *h + (size_t)n * sizeof(struct rs_hist_item) + strbytes;
        if ((h = malloc(bytes)) == NULL)
            r = -ENOMEM;
        else {
            atomic_init(&h->refs, 1);
            h->n = n;
            h->items = (struct rs_hist_item *)(h + 1);
            h->max_id = max_id;
            h->bytes = bytes;
            char *s = (char *)(h->items + n);
            for (int k = 0; k < n; k++) {
                size_t len = strlen(items[k].id) + 1;
                memcpy(s, items[k].id, len);
                h->items[k] = (struct rs_hist_item){s, items[k].w, items[k].ts, items[k].stored};
                s += len;
            }
        }
    }
    for (int k = 0; k < n; k++)
        free(items[k].id);
    free(items);
    if (r == 0)
        *ret = h;
    return r;
}

/* ---------- user vectors ---------- */

static float decay(int i)
{
    return powf(0.5f, (float)i / RS_DECAY_ITEMS);
}

/* sum of weight * decay * V[row] over the history items in the model (only those stored after
 * `since` when since >= 0); false when nothing contributed or the sum is zero. */
static bool weighted_mean(const struct rs_model *m, const struct rs_hist *h, int64_t since,
                          float *out, int *ret_used)
{
    memset(out, 0, sizeof(float) * (size_t)m->dim);
    int used = 0;
    for (int i = 0; i < h->n; i++) {
        if (since >= 0 && h->items[i].last_stored <= since)
            continue;
        int32_t r = idmap_get(&m->items, h->items[i].item_id);
        if (r < 0 || h->items[i].weight == 0)
            continue;
        float w = h->items[i].weight * decay(i);
        const float *v = m->V + (size_t)r * (size_t)m->dim;
        for (int d = 0; d < m->dim; d++)
            out[d] += w * v[d];
        used++;
    }
    *ret_used = used;
    return used > 0 && vec_normalize(out, m->dim) > 0;
}

static bool has_new(const struct rs_model *m, const struct rs_hist *h)
{
    for (int i = 0; i < h->n; i++)
        if (h->items[i].last_stored > m->trained_ms && rs_item_row(m, h->items[i].item_id) >= 0)
            return true;
    return false;
}

/* ALS: the trained vector while the user has nothing new to the model, else the exact fold-in
 * over every kept history item the model has. */
static bool vector_als(const struct rs_model *m, const struct rs_hist *h, int32_t urow,
                       float *out)
{
    if (urow >= 0 && !has_new(m, h)) {
        memcpy(out, m->U + (size_t)urow * (size_t)m->dim, sizeof(float) * (size_t)m->dim);
        return true;
    }
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)(h->n ? h->n : 1));
    float *w = malloc(sizeof(float) * (size_t)(h->n ? h->n : 1));
    int n = 0;
    for (int i = 0; rows && w && i < h->n; i++) {
        int32_t r = rs_item_row(m, h->items[i].item_id);
        if (r >= 0 && h->items[i].weight != 0) {
            rows[n] = r;
            w[n++] = h->items[i].weight;
        }
    }
    bool ok = n > 0 && m->VtV &&
              als_fold_in(m->V, m->n, m->dim, m->VtV, rows, w, n, m->reg, m->alpha, out) == 0 &&
              vec_norm(out, m->dim) > 0;
    free(rows);
    free(w);
    if (!ok && urow >= 0) {
        memcpy(out, m->U + (size_t)urow * (size_t)m->dim, sizeof(float) * (size_t)m->dim);
        return true;
    }
    return ok;
}

/* Two-tower and LightGCN keep no fold-in solver: the trained vector is moved towards the
 * (unit) weighted mean of the items stored since training, by n/(n+4) for n such items, at
 * the trained vector's length; a user without one gets that mean over their whole history at
 * the model's mean user length. */
static bool vector_mixed(const struct rs_model *m, const struct rs_hist *h, int32_t urow,
                         float *out)
{
    int used = 0;
    if (urow < 0) {
        if (!weighted_mean(m, h, -1, out, &used))
            return false;
        for (int d = 0; d < m->dim; d++)
            out[d] *= m->unorm_mean;
        return true;
    }
    const float *u = m->U + (size_t)urow * (size_t)m->dim;
    if (!weighted_mean(m, h, m->trained_ms, out, &used)) {
        memcpy(out, u, sizeof(float) * (size_t)m->dim);
        return true;
    }
    float beta = (float)used / ((float)used + RS_MIX_HALF), len = vec_norm(u, m->dim);
    for (int d = 0; d < m->dim; d++)
        out[d] = (1 - beta) * u[d] + beta * len * out[d];
    return true;
}

/* The user's vector for m from their history; false: no usable vector (a cold user). */
static bool user_vector(const struct rs_model *m, const char *user_id, const struct rs_hist *h,
                        float *out)
{
    int32_t urow = idmap_get(&m->users, user_id);
    int used = 0;
    switch (m->kind) {
    case RS_CONTENT:
        return weighted_mean(m, h, -1, out, &used);
    case RS_ALS:
        return vector_als(m, h, urow, out);
    case RS_MIXED:
        return vector_mixed(m, h, urow, out);
    }
    return false;
}

/* ---------- a request's view of its user ---------- */

struct user_view {
    struct rs_hist *hist;         /* referenced */
    uint64_t gen;                 /* the user's generation the history belongs to */
    bool current;                 /* hist is valid for gen (may be cached against) */
    float *vec;                   /* m->dim floats, or NULL for a cold user */
};

/* The user's history (loaded if missing or stale) and vector for m (computed if missing). */
static int user_view_get(sqlite3 *db, struct rs_model *m, struct rs_tenant *t,
                         const char *user_id, float *vecbuf, struct user_view *ret)
{
    pthread_mutex_lock(&rs_mu);
    struct rs_user *u = user_get_locked(t, user_id);
    uint64_t gen = u ? u->gen : 0;
    int64_t want = u ? u->want_id : 0;
    struct rs_hist *h = NULL;
    if (u && u->hist && u->hist_gen == gen && u->hist->max_id >= want)
        h = hist_ref(u->hist);
    bool have_vec = h && u->vec_known && u->vec_serial == m->serial && u->vec_gen == gen;
    if (have_vec && u->vec)
        memcpy(vecbuf, u->vec, sizeof(float) * (size_t)m->dim);
    bool vec_null = have_vec && u->vec == NULL;
    pthread_mutex_unlock(&rs_mu);
    ret->gen = gen;
    ret->current = true;
    if (h == NULL) {
        int r = hist_load(db, t->id, user_id, &h);
        if (r < 0)
            return r;
        ret->current = h->max_id >= want;
        pthread_mutex_lock(&rs_mu);
        u = user_find_locked(t, user_id);
        if (u && ret->current && u->gen == gen) {
            if (u->hist)
                user_charge_locked(u, -(ssize_t)u->hist->bytes);
            rs_hist_unref(u->hist);
            u->hist = hist_ref(h);
            u->hist_gen = gen;
            user_charge_locked(u, (ssize_t)h->bytes);
            users_trim_locked();
        }
        pthread_mutex_unlock(&rs_mu);
    }
    ret->hist = h;
    if (have_vec) {
        ret->vec = vec_null ? NULL : vecbuf;
        return 0;
    }
    bool ok = user_vector(m, user_id, h, vecbuf);
    ret->vec = ok ? vecbuf : NULL;
    pthread_mutex_lock(&rs_mu);
    u = user_find_locked(t, user_id);
    if (u && ret->current && u->gen == gen) {
        if (u->vec && (!ok || u->vec_dim != m->dim)) {
            free(u->vec);
            u->vec = NULL;
            user_charge_locked(u, -(ssize_t)(sizeof(float) * (size_t)u->vec_dim));
        }
        if (ok && u->vec == NULL && (u->vec = malloc(sizeof(float) * (size_t)m->dim))) {
            u->vec_dim = m->dim;
            user_charge_locked(u, (ssize_t)(sizeof(float) * (size_t)m->dim));
        }
        if (ok && u->vec)
            memcpy(u->vec, vecbuf, sizeof(float) * (size_t)m->dim);
        u->vec_known = ok ? u->vec != NULL : true;
        u->vec_serial = m->serial;
        u->vec_gen = gen;
    }
    pthread_mutex_unlock(&rs_mu);
    return 0;
}

/* ---------- answers ---------- */

/* The request shape an answer depends on (context does not change it). */
static char *shape_key(const struct rs_query *q)
{
    size_t len = 64;
    for (int i = 0; i < q->ncategories; i++)
        len += strlen(q->categories[i]) + 1;
    for (int i = 0; i < q->nexclude; i++)
        len += strlen(q->exclude_ids[i]) + 1;
    char *k = malloc(len), *p = k;
    if (k == NULL)
        return NULL;
    p += sprintf(p, "%d|%d|", q->count, q->include_seen ? 1 : 0);
    if (q->has_min_score)
        p += sprintf(p, "%.9g", (double)q->min_score);
    *p++ = '|';
    for (int i = 0; i < q->ncategories; i++)
        p += sprintf(p, "%s,", q->categories[i]);
    *p++ = '|';
    for (int i = 0; i < q->nexclude; i++)
        p += sprintf(p, "%s,", q->exclude_ids[i]);
    *p = 0;
    return k;
}

static bool answer_cached(struct rs_tenant *t, const char *user_id, uint64_t gen,
                          const struct rs_model *m, const char *key, struct rs_answer *ret)
{
    bool hit = false;
    pthread_mutex_lock(&rs_mu);
    struct rs_user *u = user_find_locked(t, user_id);
    for (int i = 0; u && u->gen == gen && i < RS_RESULTS_PER_USER && !hit; i++) {
        struct rs_result *r = u->res[i];
        if (r == NULL || r->serial != m->serial || strcmp(r->key, key) != 0)
            continue;
        if (!r->personalized && r->pop_gen != t->pop_gen)
            continue; /* other users' interactions moved popularity since */
        ret->n = r->n;
        memcpy(ret->rows, r->rows, sizeof(int32_t) * (size_t)r->n);
        memcpy(ret->scores, r->scores, sizeof(float) * (size_t)r->n);
        memcpy(ret->distance, r->distance, sizeof(float) * (size_t)r->n);
        ret->personalized = r->personalized;
        hit = true;
    }
    if (hit)
        t->hits++;
    else
        t->misses++;
    pthread_mutex_unlock(&rs_mu);
    return hit;
}

static void answer_store(struct rs_tenant *t, const char *user_id, uint64_t gen,
                         uint64_t pop_gen, const struct rs_model *m, char *key,
                         const struct rs_answer *a)
{
    struct rs_result *r = calloc(1, sizeof *r);
    int n = a->n;
    if (r == NULL || (r->rows = malloc((size_t)(n ? n : 1) * 12)) == NULL) {
        free(r);
        free(key);
        return;
    }
    r->serial = m->serial;
    r->pop_gen = pop_gen;
    r->key = key;
    r->n = n;
    r->personalized = a->personalized;
    r->scores = (float *)(r->rows + n);
    r->distance = r->scores + n;
    memcpy(r->rows, a->rows, sizeof(int32_t) * (size_t)n);
    memcpy(r->scores, a->scores, sizeof(float) * (size_t)n);
    memcpy(r->distance, a->distance, sizeof(float) * (size_t)n);
    pthread_mutex_lock(&rs_mu);
    struct rs_user *u = user_find_locked(t, user_id);
    if (u && u->gen == gen) {
        int slot = u->res_next;
        for (int i = 0; i < RS_RESULTS_PER_USER; i++)
            if (u->res[i] && strcmp(u->res[i]->key, key) == 0)
                slot = i; /* same shape on an older load: replace it */
        if (slot == u->res_next)
            u->res_next = (u->res_next + 1) % RS_RESULTS_PER_USER;
        if (u->res[slot])
            user_charge_locked(u, -(ssize_t)result_bytes(u->res[slot]));
        result_free(u->res[slot]);
        u->res[slot] = r;
        user_charge_locked(u, (ssize_t)result_bytes(r));
        users_trim_locked();
        r = NULL;
    }
    pthread_mutex_unlock(&rs_mu);
    result_free(r);
}

void rs_cache_counts(const char *tenant_id, uint64_t *ret_hits, uint64_t *ret_misses)
{
    pthread_mutex_lock(&rs_mu);
    struct rs_tenant *t = tenant_get_locked(tenant_id);
    *ret_hits = t ? t->hits : 0;
    *ret_misses = t ? t->misses : 0;
    pthread_mutex_unlock(&rs_mu);
}

/* ---------- the scan ---------- */

struct skipctx {
    const uint8_t *bits;          /* rows excluded by id (seen, exclude_ids) */
    const bool *allowed;          /* by category index; NULL = every category */
    const int32_t *cat;
};

static bool skip_row(void *arg, int row)
{
    const struct skipctx *s = arg;
    if (s->bits && (s->bits[row >> 3] >> (row & 7)) & 1)
        return true;
    return s->allowed && !s->allowed[s->cat[row]];
}

static void bit_set(uint8_t *bits, int32_t row)
{
    bits[row >> 3] |= (uint8_t)(1u << (row & 7));
}

/* The exclusions of a query as a bitmap and a category mask, malloc'ed (freed by caller). */
static int skip_build(const struct rs_model *m, const struct rs_query *q, const struct rs_hist *h,
                      struct skipctx *s, uint8_t **ret_bits, bool **ret_allowed)
{
    *ret_bits = NULL;
    *ret_allowed = NULL;
    s->cat = m->item_cat;
    if (!q->include_seen || q->nexclude > 0) {
        uint8_t *bits = calloc((size_t)m->n / 8 + 1, 1);
        if (bits == NULL)
            return -ENOMEM;
        for (int i = 0; !q->include_seen && h && i < h->n; i++) {
            int32_t r = rs_item_row(m, h->items[i].item_id);
            if (r >= 0)
                bit_set(bits, r);
        }
        for (int i = 0; i < q->nexclude; i++) {
            int32_t r = rs_item_row(m, q->exclude_ids[i]);
            if (r >= 0)
                bit_set(bits, r);
        }
        s->bits = *ret_bits = bits;
    }
    if (q->ncategories > 0) {
        bool *allowed = calloc((size_t)(m->ncats ? m->ncats : 1), sizeof(bool));
        if (allowed == NULL)
            return -ENOMEM;
        for (int i = 0; i < q->ncategories; i++) {
            int32_t c = idmap_get(&m->catmap, q->categories[i]);
            if (c >= 0)
                allowed[c] = true;
        }
        s->allowed = *ret_allowed = allowed;
    }
    return 0;
}

/* Popularity ranking (cold users), scores scaled to (0, 1] by the most popular item. */
static uint64_t rank_popular(sqlite3 *db, struct rs_model *m, struct rs_tenant *t,
                             const struct rs_query *q, struct skipctx *s, struct rs_answer *a)
{
    pthread_mutex_lock(&rs_mu);
    uint64_t gen = t->pop_gen;
    pthread_mutex_unlock(&rs_mu);
    pthread_mutex_lock(&m->pop_mu);
    bool stale = m->pop_gen != gen, old = mono_ms() - m->pop_mono_ms > RS_POP_FULL_MS;
    if (old)
        m->pop_mono_ms = mono_ms(); /* this request recomputes; the others keep serving */
    pthread_mutex_unlock(&m->pop_mu);
    if (old)
        pop_compute(db, m, gen); /* the window moved on: entries leave it */
    else if (stale)
        pop_delta(db, m, gen);
    const float one = 1.0f;
    pthread_mutex_lock(&m->pop_mu);
    int32_t rows[RS_MAX_COUNT];
    float sc[RS_MAX_COUNT];
    int n = m->pop ? vec_topk(m->pop, m->n, 1, &one, q->count, skip_row, s, rows, sc) : 0;
    float mx = m->pop_max > 0 ? m->pop_max : 1;
    pthread_mutex_unlock(&m->pop_mu);
    a->n = 0;
    for (int i = 0; i < n; i++) {
        float score = sc[i] / mx;
        if (q->has_min_score && score < q->min_score)
            break;
        a->rows[a->n] = rows[i];
        a->scores[a->n] = score;
        a->distance[a->n++] = NAN;
    }
    return gen;
}

/* One request's place in a shared pass over V. */
struct rs_scan {
    struct rs_scan *next;
    const float *u;
    int k;
    struct skipctx *skip;
    int n;
    int32_t rows[RS_MAX_COUNT];
    float scores[RS_MAX_COUNT];
    double ms;
    bool done;
};

/* Passes at a time per model: one per CPU (set by rs_init, before any worker scans). */
static int scan_passes_max = 1;

static int scans_max(void)
{
    return scan_passes_max;
}

/* The pass through V's int8 copy (a quarter of V's bytes), each query with its own k: the
 * same answers as the float pass. Without memory for it, each query scans alone. */
static void scan_pass_q8(struct rs_model *m, struct rs_scan **batch, int nq)
{
    const float *qv[VEC_MAX_BATCH];
    int ks[VEC_MAX_BATCH], *rows[VEC_MAX_BATCH], counts[VEC_MAX_BATCH];
    float *scores[VEC_MAX_BATCH];
    struct vec_query qs[VEC_MAX_BATCH];
    for (int i = 0; i < nq; i++) {
        qv[i] = batch[i]->u;
        ks[i] = batch[i]->k;
        qs[i] = (struct vec_query){skip_row, batch[i]->skip};
        rows[i] = batch[i]->rows;
        scores[i] = batch[i]->scores;
    }
    double t0 = mono_msf();
    if (vec_topk_q8_batch(m->Vq, m->V, qv, nq, ks, qs, rows, scores, counts) == 0) {
        double ms = mono_msf() - t0;
        for (int i = 0; i < nq; i++)
            batch[i]->n = counts[i], batch[i]->ms = ms;
        return;
    }
    for (int i = 0; i < nq; i++) {
        struct rs_scan *s = batch[i];
        t0 = mono_msf();
        s->n = vec_topk_q8(m->Vq, m->V, s->u, s->k, skip_row, s->skip, s->rows, s->scores);
        s->ms = mono_msf() - t0;
    }
}

/* The pass over V in float: one k, the batch's largest, serves every query (a request's top k
 * is the prefix of its top max-k). */
static void scan_pass_float(struct rs_model *m, struct rs_scan **batch, int nq, int k)
{
    float *Q = vec_alloc((size_t)nq, (size_t)m->dim);
    struct vec_query qs[VEC_MAX_BATCH];
    int32_t rows[VEC_MAX_BATCH * RS_MAX_COUNT];
    float sc[VEC_MAX_BATCH * RS_MAX_COUNT];
    int counts[VEC_MAX_BATCH] = {0};
    double t0 = mono_msf();
    if (Q) {
        for (int i = 0; i < nq; i++) {
            memcpy(Q + (size_t)i * (size_t)m->dim, batch[i]->u, sizeof(float) * (size_t)m->dim);
            qs[i] = (struct vec_query){skip_row, batch[i]->skip};
        }
        if (vec_topk_batch(m->V, m->n, m->dim, Q, nq, k, qs, rows, sc, counts) < 0)
            memset(counts, 0, sizeof counts);
    }
    double ms = mono_msf() - t0;
    vec_free(Q);
    for (int i = 0; i < nq; i++) {
        struct rs_scan *s = batch[i];
        s->n = counts[i] < s->k ? counts[i] : s->k;
        memcpy(s->rows, rows + (size_t)i * (size_t)k, sizeof(int32_t) * (size_t)s->n);
        memcpy(s->scores, sc + (size_t)i * (size_t)k, sizeof(float) * (size_t)s->n);
        s->ms = ms;
    }
}

/* Runs one pass for the waiting requests at the head of the queue (scan_mu held on entry and
 * on return, released meanwhile); each waits, holding its rs_scan, until marked done. */
static void scan_pass(struct rs_model *m)
{
    struct rs_scan *batch[VEC_MAX_BATCH];
    int nq = 0, k = 1;
    while (m->scan_head && nq < VEC_MAX_BATCH) {
        struct rs_scan *s = m->scan_head;
        m->scan_head = s->next;
        if (m->scan_head == NULL)
            m->scan_tail = &m->scan_head;
        batch[nq++] = s;
        if (s->k > k)
            k = s->k;
    }
    m->scanning++;
    pthread_mutex_unlock(&m->scan_mu);
    if (m->Vq)
        scan_pass_q8(m, batch, nq);
    else
        scan_pass_float(m, batch, nq, k);
    pthread_mutex_lock(&m->scan_mu);
    for (int i = 0; i < nq; i++)
        batch[i]->done = true;
    m->scanning--;
    pthread_cond_broadcast(&m->scan_cv);
}

/* Exact top-k of u over V. Requests that arrive while passes are running wait and go together
 * in the next pass, so under load the matrix is read once per batch rather than once per
 * request (the scan is bound by memory bandwidth: ~51 MB for 100k x 128). */
/* The answer from a search's rows: min_score applied, cosine distances. */
static void rank_finish(const struct rs_model *m, const struct rs_query *q, const float *u,
                        const struct rs_scan *me, struct rs_answer *a)
{
    a->scan_ms = me->ms;
    float un = vec_norm(u, m->dim);
    a->n = 0;
    for (int i = 0; i < me->n; i++) {
        if (q->has_min_score && me->scores[i] < q->min_score)
            break; /* best first: the rest are lower */
        float den = un * m->vnorm[me->rows[i]];
        a->rows[a->n] = me->rows[i];
        a->scores[a->n] = me->scores[i];
        a->distance[a->n++] = den > 0 ? 1.0f - me->scores[i] / den : 1.0f;
    }
}

/* One in this many index searches also runs the exact scan: the model's measured recall. */
#define RS_ANN_CHECK_EVERY 1024

/* Top k of u through m's index; every RS_ANN_CHECK_EVERY-th search is compared with the exact
 * scan (same skips), counting how many of the exact top k the index found. */
static void index_search(struct rs_model *m, const float *u, int k, struct skipctx *s,
                         struct rs_scan *me, struct rs_answer *a)
{
    double t0 = mono_msf();
    me->n = ivf_topk(&m->ivf, u, k, m->nprobe, skip_row, s, me->rows, me->scores, NULL);
    me->ms = mono_msf() - t0;
    a->ann = true;
    if (atomic_fetch_add(&m->ann_queries, 1) % RS_ANN_CHECK_EVERY != 0)
        return;
    int32_t rows[RS_MAX_COUNT];
    int ne = vec_topk(m->V, m->n, m->dim, u, k, skip_row, s, rows, NULL), hits = 0;
    for (int i = 0; i < ne; i++)
        for (int j = 0; j < me->n; j++)
            if (rows[i] == me->rows[j]) {
                hits++;
                break;
            }
    atomic_fetch_add(&m->ann_hits, (uint_fast64_t)hits);
    atomic_fetch_add(&m->ann_total, (uint_fast64_t)ne);
    a->ann_checked = true;
}

/* The exact top k through the cluster index (ivf_topk_exact: the scan's answer to the bit). It
 * gives up past an eighth of the rows, where the int8 scan costs less: false, and the caller
 * scans. */
static bool exact_search(struct rs_model *m, const float *u, int k, struct skipctx *s,
                         struct rs_scan *me)
{
    int limit = m->n / 8 > 64 * k ? m->n / 8 : 64 * k, scored;
    double t0 = mono_msf();
    int n = ivf_topk_exact(&m->xix, u, k, limit, skip_row, s, me->rows, me->scores, &scored);
    me->ms = mono_msf() - t0;
    atomic_fetch_add(&m->x_searches, 1);
    atomic_fetch_add(&m->x_scored, (uint_fast64_t)scored);
    if (n < 0) {
        atomic_fetch_add(&m->x_gave_up, 1);
        return false;
    }
    me->n = n;
    return true;
}

static void rank_vector(struct rs_model *m, const struct rs_query *q, const float *u,
                        struct skipctx *s, struct rs_answer *a)
{
    struct rs_scan me = {.u = u, .k = q->count, .skip = s};
    if (m->ivf.n > 0) {
        index_search(m, u, q->count, s, &me, a);
        rank_finish(m, q, u, &me, a);
        return;
    }
    if (m->xix.n > 0 && exact_search(m, u, q->count, s, &me)) {
        rank_finish(m, q, u, &me, a);
        return;
    }
    pthread_mutex_lock(&m->scan_mu);
    *m->scan_tail = &me;
    m->scan_tail = &me.next;
    while (!me.done) {
        if (m->scanning < scans_max() && m->scan_head)
            scan_pass(m);
        else
            pthread_cond_wait(&m->scan_cv, &m->scan_mu);
    }
    pthread_mutex_unlock(&m->scan_mu);
    rank_finish(m, q, u, &me, a);
}

int rs_recommend(sqlite3 *db, struct rs_model *m, const struct rs_query *q, struct rs_answer *ret)
{
    struct rs_tenant *t = tenant_get(q->tenant_id);
    if (t == NULL)
        return TS_E_INTERNAL;
    memset(ret, 0, sizeof *ret);
    float vec[RECS_MAX_DIM];
    struct user_view v = {0};
    int r = user_view_get(db, m, t, q->user_id, vec, &v);
    if (r < 0)
        return TS_E_INTERNAL;
    char *key = shape_key(q);
    if (key && v.current && answer_cached(t, q->user_id, v.gen, m, key, ret)) {
        ret->cache_hit = true;
        free(key);
        rs_hist_unref(v.hist);
        return 0;
    }
    struct skipctx s = {0};
    uint8_t *bits;
    bool *allowed;
    r = skip_build(m, q, v.hist, &s, &bits, &allowed);
    if (r == 0) {
        ret->personalized = v.vec != NULL;
        uint64_t pop_gen = 0;
        if (v.vec)
            rank_vector(m, q, v.vec, &s, ret);
        else
            pop_gen = rank_popular(db, m, t, q, &s, ret);
        if (key && v.current)
            answer_store(t, q->user_id, v.gen, pop_gen, m, key, ret);
        else
            free(key);
        key = NULL;
    }
    free(key);
    free(bits);
    free(allowed);
    rs_hist_unref(v.hist);
    return r < 0 ? TS_E_INTERNAL : 0;
}

/* ---------- lifecycle ---------- */

void rs_init(int ann_min, int probe_pct, int q8_min, int exact_min)
{
    ann_min_items = ann_min;
    q8_min_items = q8_min;
    exact_min_items = exact_min;
    ann_probe_pct = probe_pct;
    vec_kernel_get(); /* choose the kernel once, before workers race to */
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    scan_passes_max = c < 1 ? 1 : c > 8 ? 8 : (int)c;
}

void rs_shutdown(void)
{
    pthread_mutex_lock(&rs_mu);
    for (int b = 0; b < RS_TENANT_BUCKETS; b++) {
        for (struct rs_tenant *t = tenants[b], *nx; t; t = nx) {
            nx = t->next;
            for (uint32_t i = 0; i < t->ucap; i++)
                for (struct rs_user *u = t->ub[i], *un; u; u = un) {
                    un = u->hnext;
                    lru_unlink(u);
                    user_free_locked(u);
                }
            free(t->ub);
            rs_model_unref(t->current);
            for (int i = 0; i < RS_OLDER_MAX; i++)
                rs_model_unref(t->older[i]);
            pthread_mutex_destroy(&t->load_mu);
            free(t);
        }
        tenants[b] = NULL;
    }
    users_bytes = 0;
    pthread_mutex_unlock(&rs_mu);
}
