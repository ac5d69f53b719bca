/* Dashboard definitions (load, JSON) and widget evaluation: a widget's configuration run
 * through the metric engine, split by group_by, fingerprinted so only changed figures are
 * pushed. Evaluation is thread-safe; loading uses the writer (loop thread). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/handler.h"
#include "core/err.h"
#include "store/db.h"
#include "surfaces/commerce/dashboards.h"
#include "surfaces/commerce/metrics.h"

#define GROUPS_MAX 50                /* group_by keys per widget */

static const char SQL_DASH_GET[] =
    "SELECT name, description, category, is_public, created_by, created_at, updated_at "
    "FROM cm_dashboards WHERE tenant_id = ?1 AND dashboard_id = ?2";
static const char SQL_WIDGETS_GET[] =
    "SELECT widget_id, type, title, pos_x, pos_y, pos_w, pos_h, configuration, refresh_interval "
    "FROM cm_widgets WHERE tenant_id = ?1 AND dashboard_id = ?2 ORDER BY seq";
static const char SQL_KEYS_REGION[] =
    "SELECT DISTINCT region FROM cm_orders WHERE tenant_id = ?1 AND created_at >= ?2 "
    "AND created_at < ?3 ORDER BY 1 LIMIT ?4";
static const char SQL_KEYS_CHANNEL[] =
    "SELECT DISTINCT channel FROM cm_orders WHERE tenant_id = ?1 AND created_at >= ?2 "
    "AND created_at < ?3 ORDER BY 1 LIMIT ?4";
static const char SQL_KEYS_CURRENCY[] =
    "SELECT DISTINCT currency FROM cm_orders WHERE tenant_id = ?1 AND created_at >= ?2 "
    "AND created_at < ?3 ORDER BY 1 LIMIT ?4";

int cm_ddef_load(struct db *db, struct arena *a, const char *tenant_id, const char *id,
                 struct cm_ddef **ret)
{
    if (!cm__id_ok(id))
        return TS_E_NOT_FOUND;
    sqlite3_stmt *q = db_stmt(db, SQL_DASH_GET);
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_reset(q);
        return TS_E_NOT_FOUND;
    }
    struct cm_ddef *d = arena_calloc(a, sizeof(*d));
    d->tenant_id = arena_strdup(a, tenant_id);
    d->dashboard_id = arena_strdup(a, id);
    d->name = arena_strdup(a, col_text(q, 0));
    d->description = arena_strdup(a, col_text(q, 1));
    d->category = arena_strdup(a, col_text(q, 2));
    d->is_public = sqlite3_column_int(q, 3);
    d->created_by = sqlite3_column_type(q, 4) == SQLITE_NULL ? NULL : arena_strdup(a, col_text(q, 4));
    d->created_at = sqlite3_column_int64(q, 5);
    d->updated_at = sqlite3_column_int64(q, 6);
    sqlite3_reset(q);
    q = db_stmt(db, SQL_WIDGETS_GET);
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    while (d->n < CM_WIDGETS_MAX && sqlite3_step(q) == SQLITE_ROW) {
        struct cm_wdef *w = &d->w[d->n++];
        w->widget_id = arena_strdup(a, col_text(q, 0));
        w->type = arena_strdup(a, col_text(q, 1));
        w->title = arena_strdup(a, col_text(q, 2));
        w->x = sqlite3_column_int(q, 3);
        w->y = sqlite3_column_int(q, 4);
        w->w = sqlite3_column_int(q, 5);
        w->h = sqlite3_column_int(q, 6);
        w->configuration = arena_strdup(a, col_text(q, 7));
        w->refresh_s = sqlite3_column_int(q, 8);
    }
    sqlite3_reset(q);
    *ret = d;
    return 0;
}

static void widget_json(struct jw *w, const struct cm_wdef *x)
{
    jw_obj_open(w);
    jw_kstr(w, "widget_id", x->widget_id);
    jw_kstr(w, "type", x->type);
    jw_kstr(w, "title", x->title);
    jw_key(w, "position");
    jw_obj_open(w);
    jw_kint(w, "x", x->x);
    jw_kint(w, "y", x->y);
    jw_kint(w, "w", x->w);
    jw_kint(w, "h", x->h);
    jw_obj_close(w);
    jw_key(w, "configuration");
    jw_raw(w, x->configuration);
    jw_kint(w, "refresh_interval", x->refresh_s);
    jw_obj_close(w);
}

void cm_dash_json(struct jw *w, const struct cm_ddef *d)
{
    jw_obj_open(w);
    jw_kstr(w, "dashboard_id", d->dashboard_id);
    jw_kstr(w, "name", d->name);
    jw_kstr(w, "description", d->description);
    jw_kstr(w, "category", d->category);
    jw_key(w, "widgets");
    jw_arr_open(w);
    for (int i = 0; i < d->n; i++)
        widget_json(w, &d->w[i]);
    jw_arr_close(w);
    jw_kiso(w, "created_at", d->created_at);
    jw_kiso(w, "updated_at", d->updated_at);
    jw_kbool(w, "is_public", d->is_public);
    jw_kstr(w, "created_by", d->created_by);
    jw_obj_close(w);
}

/* ---------- widget evaluation (any thread, any connection) ---------- */


uint64_t cm_fnv1a(const char *s, uint64_t h)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* What changes between two evaluations of the same figures: the query's timing and the
 * moving window's edges. Left out of the fingerprint so only figures count. */
static void strip_volatile(json_t *o)
{
    json_object_del(o, "metadata");
    json_object_del(o, "time_range");
    json_t *m = json_object_get(o, "metric");
    if (json_is_object(m))
        strip_volatile(m);
}

static uint64_t figures_fp(const char *data)
{
    json_t *v = json_loads(data, 0, NULL);
    if (!json_is_object(v)) {
        json_decref(v);
        return cm_fnv1a(data, CM_FNV_SEED);
    }
    strip_volatile(v);
    char *t = json_dumps(v, JSON_SORT_KEYS | JSON_COMPACT);
    uint64_t h = cm_fnv1a(t ? t : "", CM_FNV_SEED);
    free(t);
    json_decref(v);
    return h;
}

struct group {
    const char *key;
    double value;
    int64_t records;
};

static int group_cmp(const void *a, const void *b)
{
    const struct group *x = a, *y = b;
    if (x->value != y->value)
        return x->value < y->value ? 1 : -1;
    return strcmp(x->key, y->key);
}

/* Whether the query's own filter on dim admits key. */
static bool group_admitted(const struct cm_metric_query *q, int dim, const char *key)
{
    const char *const *list = dim == 0 ? q->regions : q->channels;
    int n = dim == 0 ? q->nregions : q->nchannels;
    if (dim == 2)
        return q->currency == NULL || !strcmp(q->currency, key);
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i], key))
            return true;
    return n == 0;
}

/* One figure (summary total) of q restricted to one key of dim. */
static int group_eval(sqlite3 *db, const char *tenant, const struct cm_metric_query *q, int dim,
                      struct group *g, char *err, size_t errlen)
{
    struct cm_metric_query k = *q;
    k.include_comparison = false;
    if (dim == 0) {
        k.regions[0] = g->key;
        k.nregions = 1;
    } else if (dim == 1) {
        k.channels[0] = g->key;
        k.nchannels = 1;
    } else {
        k.currency = g->key;
    }
    struct buf b;
    buf_init(&b, CM_WIDGET_DATA_MAX);
    struct jw w;
    jw_init(&w, &b);
    struct cm_metric_result res = {0};
    int r = cm_metric_eval(db, tenant, &k, false, &w, &res, err, errlen);
    buf_release(&b);
    g->value = res.total;
    g->records = res.total_records;
    return r;
}

static int groups_eval(sqlite3 *db, const char *tenant, const struct cm_metric_query *q,
                       const char *dim_name, struct arena *a, struct jw *w, char *err,
                       size_t errlen)
{
    static const char *const sqls[] = {SQL_KEYS_REGION, SQL_KEYS_CHANNEL, SQL_KEYS_CURRENCY};
    int dim = !strcmp(dim_name, "region") ? 0 : !strcmp(dim_name, "channel") ? 1 : 2;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sqls[dim], -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot read the %s keys: %s", dim_name, sqlite3_errmsg(db));
        return TS_E_INTERNAL;
    }
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, q->start_ms);
    sqlite3_bind_int64(st, 3, q->end_ms);
    sqlite3_bind_int(st, 4, 1000);
    struct group *g = arena_calloc(a, sizeof(*g) * (GROUPS_MAX + 1));
    int n = 0, r = 0;
    bool truncated = false;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *key = col_text(st, 0);
        if (!group_admitted(q, dim, key))
            continue;
        if (n == GROUPS_MAX) {
            truncated = true;
            break;
        }
        g[n++].key = arena_strdup(a, key);
    }
    sqlite3_finalize(st);
    for (int i = 0; i < n && r == 0; i++)
        r = group_eval(db, tenant, q, dim, &g[i], err, errlen);
    if (r < 0)
        return r;
    qsort(g, (size_t)n, sizeof(*g), group_cmp);
    jw_obj_open(w);
    jw_kstr(w, "group_by", dim_name);
    jw_kstr(w, "metric_type", q->metric_type);
    jw_key(w, "groups");
    jw_arr_open(w);
    for (int i = 0; i < n; i++) {
        jw_obj_open(w);
        jw_kstr(w, "key", g[i].key);
        jw_kdouble(w, "value", g[i].value);
        jw_kint(w, "total_records", g[i].records);
        jw_obj_close(w);
    }
    jw_arr_close(w);
    jw_kbool(w, "truncated", truncated);
    jw_obj_close(w);
    return 0;
}

static int widget_write(sqlite3 *db, const char *tenant, const struct cm_wdef *wd,
                        const struct cm_metric_query *q, const char *group_by, struct arena *a,
                        struct jw *w, char *err, size_t errlen)
{
    if (group_by)
        return groups_eval(db, tenant, q, group_by, a, w, err, errlen);
    if (strcmp(wd->type, "metric_card") != 0)
        return cm_metric_eval(db, tenant, q, false, w, NULL, err, errlen);
    struct cm_metric_result res = {0};
    jw_obj_open(w);
    jw_key(w, "metric");
    int r = cm_metric_eval(db, tenant, q, false, w, &res, err, errlen);
    jw_kdouble(w, "value", res.total);
    jw_obj_close(w);
    return r;
}

/* Evaluates one widget on db (a pool connection) into o, strings in arena a. */
void cm_widget_eval(sqlite3 *db, const char *tenant, const struct cm_wdef *wd, int64_t now,
                    struct arena *a, struct cm_wout *o)
{
    char err[256] = "";
    o->computed_at = now;
    json_t *cfg = json_loads(wd->configuration, 0, NULL);
    json_t *qo = json_is_object(cfg) ? json_copy(cfg) : NULL;
    const char *group_by = NULL, *field = "configuration", *msg = "not a JSON object";
    struct cm_metric_query q;
    int r = TS_E_VALIDATION;
    if (qo) {
        json_t *gb = json_object_get(qo, "group_by");
        group_by = json_is_string(gb) ? arena_strdup(a, json_string_value(gb)) : NULL;
        json_object_del(qo, "group_by");
        r = cm_metric_query_from_json(qo, now, a, &q, &field, &msg) < 0 ? TS_E_VALIDATION : 0;
    }
    if (r < 0) {
        snprintf(err, sizeof(err), "configuration.%s: %s", field, msg);
    } else {
        struct buf b;
        buf_init(&b, CM_WIDGET_DATA_MAX);
        struct jw w;
        jw_init(&w, &b);
        r = widget_write(db, tenant, wd, &q, group_by, a, &w, err, sizeof(err));
        if (r == 0 && jw_finish(&w) < 0) {
            r = TS_E_INTERNAL;
            snprintf(err, sizeof(err), "widget data is larger than %u bytes", CM_WIDGET_DATA_MAX);
        }
        if (r == 0)
            o->data = arena_strndup(a, b.data, b.len);
        buf_release(&b);
    }
    json_decref(qo);
    json_decref(cfg);
    o->status = r;
    if (r < 0) {
        o->error = arena_strdup(a, err[0] ? err : err_message(r));
        o->fp = cm_fnv1a(o->error, 7);
    } else {
        o->fp = figures_fp(o->data);
    }
}
