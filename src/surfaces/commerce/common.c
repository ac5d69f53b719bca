/* Commerce shared pieces: envelope, browser-style query parameters, time ranges, paging. */
#include "surfaces/commerce/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "store/db.h"

void cm_ok_begin(struct hctx *h, struct jw *w)
{
    jw_init(w, &h->out);
    jw_obj_open(w);
    jw_kbool(w, "success", true);
    jw_key(w, "data");
}

int cm_ok_end(struct hctx *h, struct jw *w)
{
    char ts[40];
    clock_iso8601(clock_now_ms(), 0, ts, sizeof(ts));
    jw_kstr(w, "timestamp", ts);
    jw_kstr(w, "request_id", h->req->request_id);
    jw_obj_close(w);
    return jw_finish(w);
}

/* ---- query parameters ---- */

int cm_query_parse(struct hctx *h, struct cm_query *q)
{
    q->n = 0;
    const char *s = h->req->query;
    if (s == NULL)
        return 0;
    while (*s) {
        const char *amp = strchr(s, '&');
        size_t len = amp ? (size_t)(amp - s) : strlen(s);
        if (len > 0) {
            if (q->n == CM_QUERY_MAX)
                return fail(h, TS_E_VALIDATION, "query",
                            "too many query parameters (at most 256)");
            const char *eq = memchr(s, '=', len);
            size_t klen = eq ? (size_t)(eq - s) : len;
            char *k = http_url_decode(h->arena, s, klen, true);
            char *v = eq ? http_url_decode(h->arena, eq + 1, len - klen - 1, true)
                         : arena_strdup(h->arena, "");
            if (k == NULL || v == NULL)
                return fail(h, TS_E_VALIDATION, "query", "malformed percent-encoding in the query");
            q->key[q->n] = k;
            q->value[q->n] = v;
            q->n++;
        }
        s += len + (amp != NULL);
    }
    return 0;
}

/* JSON scalar as text: strings as they are, numbers and booleans as written. */
static const char *json_scalar_text(struct hctx *h, const json_t *v)
{
    if (json_is_string(v))
        return arena_strdup(h->arena, json_string_value(v));
    if (json_is_integer(v))
        return arena_printf(h->arena, "%lld", (long long)json_integer_value(v));
    if (json_is_real(v))
        return arena_printf(h->arena, "%.17g", json_real_value(v));
    if (json_is_boolean(v))
        return json_is_true(v) ? "true" : "false";
    return NULL;
}

/* The member name of the JSON object given as parent's value (parent={"name":...}). */
static json_t *json_member(const struct cm_query *q, const char *parent, const char *name)
{
    for (int i = 0; i < q->n; i++) {
        if (strcmp(q->key[i], parent) != 0 || q->value[i][0] != '{')
            continue;
        json_t *o = json_loads(q->value[i], 0, NULL);
        json_t *m = json_object_get(o, name);
        if (m) {
            json_incref(m);
            json_decref(o);
            return m;
        }
        json_decref(o);
    }
    return NULL;
}

/* key is parent[name] or parent.name (or name when parent is NULL); with list, also
 * name[] and name[N]. */
static bool key_matches(const char *key, const char *parent, const char *name, bool list)
{
    size_t pl = parent ? strlen(parent) : 0, nl = strlen(name);
    const char *rest;
    if (parent) {
        if (strncmp(key, parent, pl) != 0)
            return false;
        key += pl;
        if (key[0] == '.' && strncmp(key + 1, name, nl) == 0 && key[1 + nl] == 0)
            return true;
        if (key[0] != '[' || strncmp(key + 1, name, nl) != 0 || key[1 + nl] != ']')
            return false;
        rest = key + nl + 2;
    } else {
        if (strncmp(key, name, nl) != 0)
            return false;
        rest = key + nl;
    }
    if (*rest == 0)
        return true;
    if (!list || *rest != '[')
        return false;
    rest++;
    while (*rest >= '0' && *rest <= '9')
        rest++;
    return rest[0] == ']' && rest[1] == 0;
}

const char *cm_param(struct hctx *h, const struct cm_query *q, const char *parent, const char *name)
{
    for (int i = 0; i < q->n; i++)
        if (key_matches(q->key[i], parent, name, false))
            return q->value[i];
    if (parent == NULL)
        return NULL;
    json_t *m = json_member(q, parent, name);
    const char *t = m ? json_scalar_text(h, m) : NULL;
    json_decref(m);
    return t;
}

static int list_push(struct hctx *h, const char *field, const char *v, size_t len,
                     const char **out, int max, int *n)
{
    while (len > 0 && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len == 0)
        return 0;
    if (*n == max)
        return fail(h, TS_E_VALIDATION, field,
                    arena_printf(h->arena, "%s takes at most %d values", field, max));
    out[(*n)++] = arena_strndup(h->arena, v, len);
    return 0;
}

static int list_json(struct hctx *h, const char *field, const json_t *a, const char **out, int max,
                     int *n)
{
    if (!json_is_array(a)) {
        const char *t = json_scalar_text(h, a);
        if (t == NULL)
            return fail(h, TS_E_VALIDATION, field,
                        arena_printf(h->arena, "%s must be a list of strings", field));
        return list_push(h, field, t, strlen(t), out, max, n);
    }
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e) {
        const char *t = json_scalar_text(h, e);
        if (t == NULL)
            return fail(h, TS_E_VALIDATION, field,
                        arena_printf(h->arena, "%s must be a list of strings", field));
        int r = list_push(h, field, t, strlen(t), out, max, n);
        if (r < 0)
            return r;
    }
    return 0;
}

int cm_param_list(struct hctx *h, const struct cm_query *q, const char *parent, const char *name,
                  const char **out, int max, int *n)
{
    const char *field = parent ? arena_printf(h->arena, "%s.%s", parent, name) : name;
    *n = 0;
    for (int i = 0; i < q->n; i++) {
        if (!key_matches(q->key[i], parent, name, true))
            continue;
        const char *v = q->value[i];
        if (v[0] == '[') {
            json_t *a = json_loads(v, 0, NULL);
            if (a == NULL)
                return fail(h, TS_E_VALIDATION, field,
                            arena_printf(h->arena, "%s is not a valid JSON array", field));
            int r = list_json(h, field, a, out, max, n);
            json_decref(a);
            if (r < 0)
                return r;
            continue;
        }
        for (const char *p = v;;) {
            const char *c = strchr(p, ',');
            size_t len = c ? (size_t)(c - p) : strlen(p);
            int r = list_push(h, field, p, len, out, max, n);
            if (r < 0)
                return r;
            if (c == NULL)
                break;
            p = c + 1;
        }
    }
    if (parent) {
        json_t *m = json_member(q, parent, name);
        int r = m ? list_json(h, field, m, out, max, n) : 0;
        json_decref(m);
        if (r < 0)
            return r;
    }
    return 0;
}

int cm_param_bool(struct hctx *h, const struct cm_query *q, const char *name, bool def, bool *ret)
{
    const char *v = cm_param(h, q, NULL, name);
    if (v == NULL || !v[0]) {
        *ret = def;
        return 0;
    }
    if (!strcmp(v, "true") || !strcmp(v, "1")) {
        *ret = true;
        return 0;
    }
    if (!strcmp(v, "false") || !strcmp(v, "0")) {
        *ret = false;
        return 0;
    }
    return fail(h, TS_E_VALIDATION, name,
                arena_printf(h->arena, "%s must be true or false", name));
}

/* ---- time range ---- */

static int time_param(struct hctx *h, const struct cm_query *q, const char *name, bool required,
                      int64_t *ret)
{
    const char *field = arena_printf(h->arena, "time_range.%s", name);
    const char *v = cm_param(h, q, "time_range", name);
    if (v == NULL)
        v = cm_param(h, q, NULL, name);
    if (v == NULL || !v[0]) {
        *ret = -1;
        if (!required)
            return 0;
        return fail(h, TS_E_VALIDATION, field, arena_printf(h->arena, "%s is required", field));
    }
    if (clock_parse_iso8601(v, ret) < 0)
        return fail(h, TS_E_VALIDATION, field,
                    arena_printf(h->arena, "%s must be an ISO 8601 date-time", field));
    return 0;
}

int cm_time_range(struct hctx *h, const struct cm_query *q, bool required, int64_t max_span_ms,
                  int64_t *ret_start, int64_t *ret_end)
{
    int r = time_param(h, q, "start", required, ret_start);
    if (r == 0)
        r = time_param(h, q, "end", required, ret_end);
    if (r < 0 || *ret_start < 0 || *ret_end < 0)
        return r;
    if (*ret_end <= *ret_start)
        return fail(h, TS_E_VALIDATION, "time_range", "time_range.end must be after time_range.start");
    if (max_span_ms > 0 && *ret_end - *ret_start > max_span_ms)
        return fail(h, TS_E_VALIDATION, "time_range",
                    arena_printf(h->arena, "time_range spans more than the %lld days allowed here",
                                 (long long)(max_span_ms / 86400000)));
    return 0;
}

/* ---- paging ---- */

int cm_page(struct hctx *h, const struct cm_query *q, int *ret_page, int *ret_size)
{
    int r = int_value(h, "page", cm_param(h, q, NULL, "page"), 0, 0, 1000000, ret_page);
    return r < 0 ? r : int_value(h, "size", cm_param(h, q, NULL, "size"), 20, 1, 100, ret_size);
}

void cm_page_fields(struct jw *w, int64_t total, int page, int size)
{
    int64_t pages = (total + size - 1) / size;
    jw_kint(w, "totalElements", total);
    jw_kint(w, "totalPages", pages);
    jw_kint(w, "size", size);
    jw_kint(w, "number", page);
    jw_kbool(w, "first", page == 0);
    jw_kbool(w, "last", page + 1 >= pages);
}

void cm_default_currency(sqlite3 *db, const char *tenant_id, char out[8])
{
    static const char sql[] = "SELECT default_currency FROM cm_settings WHERE tenant_id = ?";
    snprintf(out, 8, "USD");
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(st, 1, tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(out, 8, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}

void cm_notify_ingested(struct app *app, const char *tenant_id)
{
    cm_dashboards_on_ingest(app, tenant_id);
    cm_alerts_on_ingest(app, tenant_id);
}

void commerce_timers_start(struct app *app)
{
    cm_ingest_start(app);
    cm_rollups_start(app);
    cm_alerts_start(app);
}

void commerce_timers_stop(void)
{
    cm_alerts_stop();
    cm_rollups_stop();
    cm_ingest_stop();
}
