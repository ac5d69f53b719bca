/* Handler helpers: field validation that names the field, paging, times, columns. */
#include "api/handler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/clock.h"
#include "store/db.h"

int fail(struct hctx *h, int err, const char *field, const char *message)
{
    h->err_field = field;
    h->err_message = message;
    return err;
}

int body_string(struct hctx *h, const char *field, size_t maxlen, bool required,
                const char **ret)
{
    json_t *v = h->body ? json_object_get(h->body, field) : NULL;
    if (v == NULL || json_is_null(v)) {
        if (required)
            return fail(h, TS_E_VALIDATION, field, arena_printf(h->arena, "%s is required", field));
        *ret = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return fail(h, TS_E_VALIDATION, field, arena_printf(h->arena, "%s must be a string", field));
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 && required)
        return fail(h, TS_E_VALIDATION, field, arena_printf(h->arena, "%s must not be empty", field));
    if (n > maxlen)
        return fail(h, TS_E_VALIDATION, field,
                    arena_printf(h->arena, "%s must be at most %zu characters", field, maxlen));
    if (strlen(s) != n)
        return fail(h, TS_E_VALIDATION, field, arena_printf(h->arena, "%s contains NUL", field));
    *ret = s;
    return 0;
}

int int_value(struct hctx *h, const char *name, const char *v, int def, int min, int max,
              int *ret)
{
    if (v == NULL || !v[0]) {
        *ret = def;
        return 0;
    }
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < min || x > max)
        return fail(h, TS_E_VALIDATION, name,
                    arena_printf(h->arena, "%s must be an integer in %d..%d", name, min, max));
    *ret = (int)x;
    return 0;
}

int query_int(struct hctx *h, const char *name, int def, int min, int max, int *ret)
{
    return int_value(h, name, http_query_get(h->req, name), def, min, max, ret);
}

void field_error_add(struct hctx *h, const char *field, const char *message,
                     const json_t *rejected)
{
    if (h->nferrs++ >= FIELD_ERRORS_MAX)
        return;
    struct field_error *fe = arena_calloc(h->arena, sizeof(*fe));
    fe->field = arena_strdup(h->arena, field);
    fe->message = arena_strdup(h->arena, message);
    if (rejected && !json_is_null(rejected)) {
        char *t = json_dumps(rejected, JSON_ENCODE_ANY | JSON_COMPACT);
        if (t && strlen(t) <= 200) {
            fe->rejected = arena_strdup(h->arena, t);
        } else if (t) {
            struct buf b;
            buf_init(&b, 512);
            buf_putc(&b, '"');
            json_escape(&b, t, 190);
            buf_puts(&b, "...\"");
            fe->rejected = arena_strndup(h->arena, b.data, b.len);
            buf_release(&b);
        }
        free(t);
    }
    if (h->ferrs_tail == NULL)
        h->ferrs_tail = &h->ferrs;
    *h->ferrs_tail = fe;
    h->ferrs_tail = &fe->next;
}

bool email_valid(const char *e)
{
    const char *at = strchr(e, '@');
    size_t n = strlen(e);
    if (n < 3 || n > 254 || at == NULL || at == e || !at[1] || strchr(at + 1, '@'))
        return false;
    if (strpbrk(e, " \t\r\n,;<>()[]\\\"") != NULL)
        return false;
    return strchr(at + 1, '.') != NULL || strcmp(at + 1, "localhost") == 0;
}

void jw_kiso(struct jw *w, const char *key, int64_t ms)
{
    jw_key(w, key);
    if (ms == 0) {
        jw_null(w);
        return;
    }
    char ts[40];
    clock_iso8601(ms, 0, ts, sizeof(ts));
    jw_str(w, ts);
}

const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

int row_body(struct hctx *h, const char *sql, const char *id, const char *field, const char *what,
             row_json_fn write_row)
{
    sqlite3_stmt *q = db_stmt(h->app->db, sql);
    sqlite3_bind_text(q, 1, id ? id : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_reset(q);
        return fail(h, TS_E_NOT_FOUND, field, arena_printf(h->arena, "%s not found", what));
    }
    h->out.len = 0;
    struct jw w;
    jw_init(&w, &h->out);
    write_row(h, &w, q);
    sqlite3_reset(q);
    return jw_finish(&w) < 0 ? TS_E_INTERNAL : 0;
}

int page_body(struct hctx *h, const char *key, sqlite3_stmt *q, row_json_fn write_row,
              int64_t total, int page, int limit)
{
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, key);
    jw_arr_open(&w);
    while (sqlite3_step(q) == SQLITE_ROW)
        write_row(h, &w, q);
    sqlite3_reset(q);
    jw_arr_close(&w);
    jw_kint(&w, "total", total);
    jw_kint(&w, "page", page);
    jw_kint(&w, "limit", limit);
    return out_end(h, &w);
}

void out_begin(struct hctx *h, struct jw *w)
{
    h->out.len = 0;
    jw_init(w, &h->out);
    jw_obj_open(w);
}

int out_end(struct hctx *h, struct jw *w)
{
    (void)h;
    jw_obj_close(w);
    return jw_finish(w) < 0 ? TS_E_INTERNAL : 0;
}
