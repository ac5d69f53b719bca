/* recs-gen into SQLite: the generated catalog, content embeddings and interactions written with
 * 64-row INSERT ... VALUES statements (one step and one bind pass per 64 rows). See
 * recs_gen_db.h. */
#include "recs_gen_db.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engines/hashembed.h"
#include "store/db.h"

#define ROWS_PER_INSERT 64
#define COLS_MAX 12
#define ROW_BYTES_MAX 4096 /* one row's text and blob bytes: a 512-float vector is 2048 */
#define DIM_MAX 512
#define SAVED_MAX 16

enum { T_ITEMS, T_CONTENT, T_INTERACTIONS, T_N };

/* shape: per column, 't' tenant (?1), 'n' now (?2), 'd' dim (?3), 'v' a value of the row */
static const struct {
    const char *columns, *shape;
} tables[T_N] = {
    [T_ITEMS] = {"rc_items(tenant_id, item_id, title, description, category, tags, metadata, "
                 "created_at, updated_at)", "tvvvvvvvn"},
    [T_CONTENT] = {"rc_item_content(tenant_id, item_id, dim, vector, features_hash, "
                   "updated_at)", "tvdvvn"},
    [T_INTERACTIONS] = {"rc_interactions(tenant_id, interaction_id, user_id, item_id, type, "
                        "timestamp, session_id, device_type, created_at)", "tvvvvvvvn"},
};

struct cell {
    enum { C_INT, C_TEXT, C_BLOB } type;
    int64_t i;
    uint32_t off, len;
};

struct rows {
    sqlite3_stmt *many, *one;
    int nvals, n, at;
    struct cell cells[ROWS_PER_INSERT * COLS_MAX];
    char bytes[ROWS_PER_INSERT * ROW_BYTES_MAX];
    size_t used;
    bool overflow;
};

/* Content embeddings: hashing every item's n-grams is most of the catalog's cost, so the items'
 * features are kept as they are written and embedded on a second thread while this one writes
 * the interactions; the rc_item_content rows go out last. */
struct feature {
    uint32_t item_id, title, description, category, tags[RG_TAGS_MAX]; /* offsets in text */
    int ntags;
};

struct embedder {
    char *text;
    size_t used, cap;
    struct feature *f;
    size_t n, fcap;
    int dim;
    float *vecs;                 /* n x dim */
    char (*hashes)[17];
    pthread_t thread;
    bool started;
};

struct load {
    sqlite3 *db;
    const char *tenant;
    int64_t now;
    int dim, nitems;
    struct rows *rows;           /* T_N */
    struct rg_db_counts *counts;
    struct embedder emb;
};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run(sqlite3_stmt *q)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* INSERT INTO table VALUES (?1, ?4, ...), ... for nrows rows. */
static sqlite3_stmt *rows_stmt(sqlite3 *db, int t, int nrows)
{
    return db_rows_insert(db, tables[t].columns, tables[t].shape, "tnd", nrows);
}

static void rows_bind(struct load *l, struct rows *rw, sqlite3_stmt *q, int first, int n)
{
    sqlite3_bind_text(q, 1, l->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, l->now);
    sqlite3_bind_int(q, 3, l->dim);
    const struct cell *c = &rw->cells[first * rw->nvals];
    for (int k = 0; k < n * rw->nvals; k++, c++) {
        if (c->type == C_INT)
            sqlite3_bind_int64(q, 4 + k, c->i);
        else if (c->type == C_TEXT)
            sqlite3_bind_text(q, 4 + k, rw->bytes + c->off, (int)c->len, SQLITE_STATIC);
        else
            sqlite3_bind_blob(q, 4 + k, rw->bytes + c->off, (int)c->len, SQLITE_STATIC);
    }
}

static int rows_flush(struct load *l, int t)
{
    struct rows *rw = &l->rows[t];
    int rc = 0;
    if (rw->n == ROWS_PER_INSERT) {
        rows_bind(l, rw, rw->many, 0, rw->n);
        rc = run(rw->many);
    } else {
        for (int r = 0; rc == 0 && r < rw->n; r++) {
            rows_bind(l, rw, rw->one, r, 1);
            rc = run(rw->one);
        }
    }
    rw->n = rw->at = 0;
    rw->used = 0;
    return rc;
}

static void put_int(struct rows *rw, int64_t v)
{
    rw->cells[rw->n * rw->nvals + rw->at++] = (struct cell){.type = C_INT, .i = v};
}

static void put_bytes(struct rows *rw, int type, const void *p, size_t n)
{
    struct cell *c = &rw->cells[rw->n * rw->nvals + rw->at++];
    if (rw->used + n > sizeof(rw->bytes)) {
        rw->overflow = true;
        n = 0;
    }
    memcpy(rw->bytes + rw->used, p, n);
    *c = (struct cell){.type = type, .off = (uint32_t)rw->used, .len = (uint32_t)n};
    rw->used += n;
}

static void put_text(struct rows *rw, const char *s)
{
    put_bytes(rw, C_TEXT, s, strlen(s));
}

/* Ends a row: 64 of them go out in one statement. */
static int row_end(struct load *l, int t)
{
    struct rows *rw = &l->rows[t];
    rw->at = 0;
    if (++rw->n < ROWS_PER_INSERT && rw->used + ROW_BYTES_MAX <= sizeof(rw->bytes))
        return 0;
    return rw->overflow ? -1 : rows_flush(l, t);
}

/* A JSON array of the tags (generated text: escaping " and \ is all it can need). */
static void tags_json(const struct rg_item *it, char *out, size_t n)
{
    size_t k = 0;
    out[k++] = '[';
    for (int i = 0; i < it->ntags; i++) {
        if (i && k + 1 < n)
            out[k++] = ',';
        if (k + 1 < n)
            out[k++] = '"';
        for (const char *s = it->tags[i]; *s && k + 3 < n; s++) {
            if (*s == '"' || *s == '\\')
                out[k++] = '\\';
            out[k++] = *s;
        }
        if (k + 1 < n)
            out[k++] = '"';
    }
    if (k + 1 < n)
        out[k++] = ']';
    out[k] = '\0';
}

static int keep_text(struct embedder *e, const char *s, uint32_t *ret_off)
{
    size_t n = strlen(s) + 1;
    if (e->used + n > e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 1 << 20;
        while (cap < e->used + n)
            cap *= 2;
        char *t = cap <= UINT32_MAX ? realloc(e->text, cap) : NULL;
        if (!t)
            return -1;
        e->text = t;
        e->cap = cap;
    }
    memcpy(e->text + e->used, s, n);
    *ret_off = (uint32_t)e->used;
    e->used += n;
    return 0;
}

static int keep_features(struct embedder *e, const struct rg_item *it)
{
    if (e->n == e->fcap) {
        size_t cap = e->fcap ? e->fcap * 2 : 4096;
        struct feature *f = realloc(e->f, cap * sizeof(*f));
        if (!f)
            return -1;
        e->f = f;
        e->fcap = cap;
    }
    struct feature *f = &e->f[e->n];
    f->ntags = it->ntags;
    int rc = keep_text(e, it->item_id, &f->item_id) | keep_text(e, it->title, &f->title) |
             keep_text(e, it->description, &f->description) |
             keep_text(e, it->category, &f->category);
    for (int i = 0; i < it->ntags; i++)
        rc |= keep_text(e, it->tags[i], &f->tags[i]);
    e->n += rc == 0;
    return rc;
}

static void *embed_all(void *arg)
{
    struct embedder *e = arg;
    for (size_t i = 0; i < e->n; i++) {
        const struct feature *f = &e->f[i];
        const char *tags[RG_TAGS_MAX];
        for (int k = 0; k < f->ntags; k++)
            tags[k] = e->text + f->tags[k];
        const char *title = e->text + f->title, *desc = e->text + f->description,
                   *cat = e->text + f->category;
        hashembed(title, desc, cat, tags, f->ntags, e->dim, e->vecs + i * (size_t)e->dim);
        hashembed_features_hash(title, desc, cat, tags, f->ntags, e->dim, e->hashes[i]);
    }
    return NULL;
}

/* After the last item: embed on a thread (inline if none can be started). */
static int embed_start(struct embedder *e)
{
    e->vecs = malloc((e->n ? e->n : 1) * (size_t)e->dim * sizeof(float));
    e->hashes = malloc((e->n ? e->n : 1) * sizeof(*e->hashes));
    if (!e->vecs || !e->hashes)
        return -1;
    e->started = pthread_create(&e->thread, NULL, embed_all, e) == 0;
    if (!e->started)
        embed_all(e);
    return 0;
}

static void embed_wait(struct embedder *e)
{
    if (e->started)
        pthread_join(e->thread, NULL);
    e->started = false;
}

static void embed_free(struct embedder *e)
{
    embed_wait(e);
    free(e->text);
    free(e->f);
    free(e->vecs);
    free(e->hashes);
}

static int content_write(struct load *l)
{
    struct embedder *e = &l->emb;
    embed_wait(e);
    struct rows *rw = &l->rows[T_CONTENT];
    for (size_t i = 0; i < e->n; i++) {
        put_text(rw, e->text + e->f[i].item_id);
        put_bytes(rw, C_BLOB, e->vecs + i * (size_t)e->dim, (size_t)e->dim * sizeof(float));
        put_text(rw, e->hashes[i]);
        if (row_end(l, T_CONTENT) < 0)
            return -1;
    }
    return rows_flush(l, T_CONTENT);
}

static int item_cb(void *arg, const struct rg_item *it)
{
    struct load *l = arg;
    char tags[1024];
    tags_json(it, tags, sizeof(tags));
    struct rows *rw = &l->rows[T_ITEMS];
    put_text(rw, it->item_id);
    put_text(rw, it->title);
    put_text(rw, it->description);
    put_text(rw, it->category);
    put_text(rw, tags);
    put_text(rw, it->metadata);
    put_int(rw, it->created_at);
    if (row_end(l, T_ITEMS) < 0 || keep_features(&l->emb, it) < 0)
        return 1;
    l->counts->items++;
    return l->counts->items == l->nitems && embed_start(&l->emb) < 0;
}

static int user_cb(void *arg, const struct rg_user *u)
{
    (void)u;
    struct load *l = arg;
    l->counts->users++;
    return 0;
}

static int interaction_cb(void *arg, const struct rg_interaction *x)
{
    struct load *l = arg;
    struct rows *rw = &l->rows[T_INTERACTIONS];
    put_text(rw, x->interaction_id);
    put_text(rw, x->user_id);
    put_text(rw, x->item_id);
    put_text(rw, x->type);
    put_int(rw, x->timestamp);
    put_text(rw, x->session_id);
    put_text(rw, x->device_type);
    for (int k = 0; k < RG_NTYPES; k++)
        if (rg_type_names[k] == x->type)
            l->counts->types[k]++;
    l->counts->interactions++;
    return row_end(l, T_INTERACTIONS) < 0;
}

/* ---------- indexes dropped around the load ---------- */

struct saved {
    char *sql[SAVED_MAX];
    int n;
};

/* rc_interactions' secondary indexes (whoever's migration made them) except those that lead
 * with (tenant_id, timestamp): rows are written in timestamp order, so those only append. */
static const char sql_indexes[] =
    "SELECT name, sql FROM sqlite_master m WHERE type = 'index' AND tbl_name = 'rc_interactions' "
    "AND sql IS NOT NULL AND NOT (coalesce((SELECT group_concat(name, ',') FROM (SELECT name "
    "FROM pragma_index_info(m.name) WHERE seqno < 2 ORDER BY seqno)), '') = 'tenant_id,timestamp')";

static int indexes_drop(sqlite3 *db, struct saved *sv)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, sql_indexes, -1, &q, NULL) != SQLITE_OK)
        return -1;
    char drops[SAVED_MAX][200];
    int rc = 0;
    while (rc == 0 && sqlite3_step(q) == SQLITE_ROW) {
        if (sv->n == SAVED_MAX ||
            !(sv->sql[sv->n] = sqlite3_mprintf("%s", sqlite3_column_text(q, 1)))) {
            rc = -1;
            break;
        }
        char *d = sqlite3_mprintf("DROP INDEX \"%w\"", (const char *)sqlite3_column_text(q, 0));
        snprintf(drops[sv->n++], sizeof(drops[0]), "%s", d ? d : "");
        sqlite3_free(d);
    }
    sqlite3_finalize(q);
    for (int i = 0; rc == 0 && i < sv->n; i++)
        if (sqlite3_exec(db, drops[i], NULL, NULL, NULL) != SQLITE_OK)
            rc = -1;
    return rc;
}

static int indexes_restore(sqlite3 *db, struct saved *sv, bool restore)
{
    int rc = 0;
    for (int i = 0; i < sv->n; i++) {
        if (restore && rc == 0 && sqlite3_exec(db, sv->sql[i], NULL, NULL, NULL) != SQLITE_OK)
            rc = -1;
        sqlite3_free(sv->sql[i]);
    }
    sv->n = 0;
    return rc;
}

static int tenant_is_empty(sqlite3 *db, const char *tenant)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, "SELECT EXISTS(SELECT 1 FROM rc_items WHERE tenant_id = ?1) OR "
                               "EXISTS(SELECT 1 FROM rc_interactions WHERE tenant_id = ?1)",
                           -1, &q, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
    int empty = sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0) == 0;
    sqlite3_finalize(q);
    return empty ? 0 : -1;
}

static int rows_open(struct load *l)
{
    for (int t = 0; t < T_N; t++) {
        struct rows *rw = &l->rows[t];
        rw->many = rows_stmt(l->db, t, ROWS_PER_INSERT);
        rw->one = rows_stmt(l->db, t, 1);
        for (const char *c = tables[t].shape; *c; c++)
            rw->nvals += *c == 'v';
        if (!rw->many || !rw->one || rw->nvals > COLS_MAX)
            return -1;
    }
    return 0;
}

static void rows_close(struct load *l)
{
    for (int t = 0; t < T_N; t++) {
        sqlite3_finalize(l->rows[t].many);
        sqlite3_finalize(l->rows[t].one);
    }
}

static int load_all(struct load *l, const struct rg_config *c, char *err, size_t errlen)
{
    const char *msg = "";
    if (rg_config_check(c, &msg) < 0) {
        snprintf(err, errlen, "%s", msg);
        return -EINVAL;
    }
    if (tenant_is_empty(l->db, l->tenant) < 0) {
        snprintf(err, errlen, "the tenant already has recs items or interactions");
        return -EEXIST;
    }
    if (rows_open(l) < 0) {
        snprintf(err, errlen, "prepare: %s", sqlite3_errmsg(l->db));
        return -1;
    }
    struct rg_callbacks cb = {item_cb, user_cb, interaction_cb, l};
    l->nitems = c->items;
    int rc = rg_run(c, &cb);
    for (int t = 0; rc == 0 && t < T_N; t++)
        rc = rows_flush(l, t);
    if (rc == 0)
        rc = content_write(l);
    if (rc)
        snprintf(err, errlen, "insert: %s", sqlite3_errmsg(l->db));
    rows_close(l);
    return rc ? -1 : 0;
}

int rg_db_load(sqlite3 *db, const char *tenant_id, const struct rg_config *c, int64_t now_ms,
               int dim, struct rg_db_counts *ret, char *err, size_t errlen)
{
    if (dim < 1 || dim > DIM_MAX) {
        snprintf(err, errlen, "dim must be 1..%d", DIM_MAX);
        return -EINVAL;
    }
    struct rg_db_counts counts = {0};
    struct load l = {.db = db, .tenant = tenant_id, .now = now_ms, .dim = dim,
                     .counts = &counts};
    l.rows = calloc(T_N, sizeof(*l.rows));
    l.emb.dim = dim;
    struct saved sv = {0};
    double t0 = mono_s();
    int rc = l.rows ? 0 : -ENOMEM;
    if (rc == 0 && indexes_drop(db, &sv) < 0) {
        snprintf(err, errlen, "drop indexes: %s", sqlite3_errmsg(db));
        rc = -1;
    }
    if (rc == 0)
        rc = load_all(&l, c, err, errlen);
    double t1 = mono_s();
    if (indexes_restore(db, &sv, rc == 0) < 0 && rc == 0) {
        snprintf(err, errlen, "rebuild indexes: %s", sqlite3_errmsg(db));
        rc = -1;
    }
    counts.write_s = t1 - t0;
    counts.index_s = mono_s() - t1;
    free(l.rows);
    embed_free(&l.emb);
    if (rc == 0 && ret)
        *ret = counts;
    return rc;
}
