/* desk tickets: create (TKT numbers), list with filters, search, sort and paging, detail with
 * comments and history, update, delete, comments, assignment and the status workflow. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "auth/session.h"
#include "core/clock.h"
#include "store/db.h"
#include "surfaces/desk/desk.h"

#define PAGE_MAX 100
#define TITLE_MAX 200
#define TEXT_MAX 20000
#define SEARCH_MAX 200

static const char *const types[] = {"bug", "feature", "support", "incident", "question", "task",
                                    NULL};
static const char *const priorities[] = {"low", "medium", "high", "critical", NULL};
static const char *const statuses[] = {"open",     "in_progress", "pending", "waiting_on_customer",
                                       "resolved", "closed",      NULL};

/* The workflow: from each status, where a ticket may go next (resolved/closed -> open reopens). */
static const struct {
    const char *from;
    const char *to[6];
} workflow[] = {
    {"open", {"in_progress", "pending", "waiting_on_customer", "resolved", "closed", NULL}},
    {"in_progress", {"pending", "waiting_on_customer", "resolved", "open", NULL}},
    {"pending", {"in_progress", "open", "resolved", NULL}},
    {"waiting_on_customer", {"in_progress", "open", "resolved", NULL}},
    {"resolved", {"closed", "open", NULL}},
    {"closed", {"open", NULL}},
};

#define TICKET_COLUMNS                                                                           \
    "id, number, title, description, type, priority, status, requester_id, assignee_id, "       \
    "resolution_notes, created_at, updated_at, resolved_at, closed_at, first_response_at"

static const char SQL_COUNTER_NEXT[] =
    "INSERT INTO desk_counters(tenant_id, last_ticket) VALUES(?, 1) ON CONFLICT(tenant_id) "
    "DO UPDATE SET last_ticket = last_ticket + 1 RETURNING last_ticket";
static const char SQL_INSERT[] =
    "INSERT INTO tickets(tenant_id, id, number, title, description, type, priority, status, "
    "requester_id, assignee_id, created_at, updated_at) VALUES(?,?,?,?,?,?,?,'open',?,?,?,?)";
static const char SQL_GET[] =
    "SELECT " TICKET_COLUMNS " FROM tickets WHERE id = ? AND tenant_id = ?";
static const char SQL_STAFF_USER[] =
    "SELECT roles FROM users WHERE id = ? AND tenant_id = ? AND active = 1";
static const char SQL_UPDATE[] =
    "UPDATE tickets SET title = ?1, description = ?2, type = ?3, priority = ?4, "
    "assignee_id = ?5, updated_at = ?6 WHERE id = ?7 AND tenant_id = ?8";
static const char SQL_STATUS[] =
    "UPDATE tickets SET status = ?1, resolution_notes = coalesce(?2, resolution_notes), "
    "resolved_at = CASE WHEN ?1 = 'resolved' THEN ?3 WHEN ?1 = 'open' THEN NULL "
    "ELSE resolved_at END, "
    "closed_at = CASE WHEN ?1 = 'closed' THEN ?3 WHEN ?1 = 'open' THEN NULL ELSE closed_at END, "
    "updated_at = ?3 WHERE id = ?4 AND tenant_id = ?5";
static const char SQL_ASSIGN[] =
    "UPDATE tickets SET assignee_id = ?1, updated_at = ?2 WHERE id = ?3 AND tenant_id = ?4";
static const char SQL_DELETE[] = "DELETE FROM tickets WHERE id = ? AND tenant_id = ?";
static const char SQL_TOUCH[] =
    "UPDATE tickets SET updated_at = ?1, first_response_at = CASE WHEN ?2 THEN "
    "coalesce(first_response_at, ?1) ELSE first_response_at END WHERE id = ?3 AND tenant_id = ?4";
static const char SQL_FIRST_RESPONSE[] =
    "SELECT first_response_at IS NULL FROM tickets WHERE id = ? AND tenant_id = ?";
static const char SQL_COMMENT_ADD[] =
    "INSERT INTO ticket_comments(tenant_id, id, ticket_id, author_id, content, is_internal, "
    "created_at) VALUES(?,?,?,?,?,?,?)";
static const char SQL_COMMENTS[] =
    "SELECT id, ticket_id, author_id, content, is_internal, created_at FROM ticket_comments "
    "WHERE ticket_id = ?1 AND tenant_id = ?2 AND (?3 OR is_internal = 0) "
    "ORDER BY created_at, rowid";
static const char SQL_HISTORY[] =
    "SELECT id, actor_id, field, old_value, new_value, created_at FROM ticket_history "
    "WHERE ticket_id = ? AND tenant_id = ? ORDER BY created_at, rowid";

/* Listing: the statement names only the filters given, so SQLite can pick the index that
 * fits them (a catch-all "?x IS NULL OR col = ?x" statement would scan every tenant row);
 * search drives through the FTS5 index. Statements are built per request from these fixed
 * pieces and bound, never formatted with user text. */
#define PRIORITY_RANK                                                                            \
    "CASE priority WHEN 'low' THEN 0 WHEN 'medium' THEN 1 WHEN 'high' THEN 2 ELSE 3 END"
#define STATUS_RANK                                                                              \
    "CASE status WHEN 'open' THEN 0 WHEN 'in_progress' THEN 1 WHEN 'pending' THEN 2 "            \
    "WHEN 'waiting_on_customer' THEN 3 WHEN 'resolved' THEN 4 ELSE 5 END"
static const char *const sort_sql[] = {"created_at", "updated_at", PRIORITY_RANK, STATUS_RANK,
                                       "number"};
static const char *const sorts[] = {"created_at", "updated_at", "priority", "status",
                                    "ticket_number", NULL};
/* ---- small helpers ---- */

static int enum_index(const char *const *names, const char *v)
{
    for (int i = 0; v && names[i]; i++)
        if (!strcmp(names[i], v))
            return i;
    return -1;
}

static const char *enum_list(struct hctx *h, const char *const *names)
{
    const char *s = "";
    for (int i = 0; names[i]; i++)
        s = arena_printf(h->arena, "%s%s%s", s, i ? ", " : "", names[i]);
    return s;
}

/* An optional enum field of the body: absent leaves *ret NULL. */
static int body_enum(struct hctx *h, const char *field, const char *const *names, bool required,
                     const char **ret)
{
    const char *v;
    int r = body_string(h, field, 32, required, &v);
    if (r < 0)
        return r;
    if (v && enum_index(names, v) < 0)
        return fail(h, TS_E_VALIDATION, field,
                    arena_printf(h->arena, "%s must be one of %s", field, enum_list(h, names)));
    *ret = v;
    return 0;
}

static int query_enum(struct hctx *h, const char *name, const char *const *names, const char **ret)
{
    const char *v = http_query_get(h->req, name);
    if (v && !v[0])
        v = NULL;
    if (v && enum_index(names, v) < 0)
        return fail(h, TS_E_VALIDATION, name,
                    arena_printf(h->arena, "%s must be one of %s", name, enum_list(h, names)));
    *ret = v;
    return 0;
}

/* An assignee must be an active user of the caller's tenant who works tickets. */
static int assignee_check(struct hctx *h, const char *user_id)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_STAFF_USER);
    sqlite3_bind_text(q, 1, user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    unsigned roles = sqlite3_step(q) == SQLITE_ROW ? auth_roles_from_json(col_text(q, 0)) : 0;
    sqlite3_reset(q);
    if (!(roles & ROLES_DESK_STAFF))
        return fail(h, TS_E_VALIDATION, "assignee_id",
                    "assignee_id must be an active desk staff user of this tenant");
    return 0;
}

/* A failed step as an error code (never 0). */
static int step_err(int rc)
{
    int r = db_err(rc);
    return r < 0 ? r : TS_E_INTERNAL;
}

static int step_done(sqlite3_stmt *q)
{
    int rc = sqlite3_step(q);
    return rc == SQLITE_DONE ? 0 : step_err(rc);
}

/* ---- ticket JSON ---- */

static void ticket_fields(struct jw *w, sqlite3_stmt *q)
{
    char number[DESK_TICKET_NUMBER_LEN];
    desk_ticket_number(sqlite3_column_int64(q, 1), number);
    jw_kstr(w, "id", col_text(q, 0));
    jw_kstr(w, "ticket_number", number);
    jw_kstr(w, "title", col_text(q, 2));
    jw_kstr(w, "description", col_text(q, 3));
    jw_kstr(w, "type", col_text(q, 4));
    jw_kstr(w, "priority", col_text(q, 5));
    jw_kstr(w, "status", col_text(q, 6));
    jw_kstr(w, "requester_id", col_text(q, 7));
    jw_kstr(w, "assignee_id", (const char *)sqlite3_column_text(q, 8));
    jw_kstr(w, "resolution_notes", (const char *)sqlite3_column_text(q, 9));
    jw_kiso(w, "created_at", sqlite3_column_int64(q, 10));
    jw_kiso(w, "updated_at", sqlite3_column_int64(q, 11));
    jw_kiso(w, "resolved_at", sqlite3_column_int64(q, 12));
    jw_kiso(w, "closed_at", sqlite3_column_int64(q, 13));
    jw_kiso(w, "first_response_at", sqlite3_column_int64(q, 14));
}

static sqlite3_stmt *ticket_row(struct hctx *h, const char *id)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_GET);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW)
        return q;
    sqlite3_reset(q);
    return NULL;
}

/* Answers with the ticket as stored now. */
static int ticket_write(struct hctx *h, const char *id)
{
    sqlite3_stmt *q = ticket_row(h, id);
    if (q == NULL)
        return fail(h, TS_E_NOT_FOUND, "ticket_id", "ticket not found");
    struct jw w;
    out_begin(h, &w);
    ticket_fields(&w, q);
    sqlite3_reset(q);
    h->audit_target = arena_strdup(h->arena, id);
    return out_end(h, &w);
}

/* ---- create ---- */

static int next_number(struct hctx *h, int64_t *ret)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_COUNTER_NEXT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(q);
        return step_err(rc);
    }
    *ret = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return 0;
}

struct create_in {
    const char *title, *description, *type, *priority, *assignee;
};

static int create_parse(struct hctx *h, struct create_in *in)
{
    int r = body_string(h, "title", TITLE_MAX, true, &in->title);
    if (r == 0)
        r = body_string(h, "description", TEXT_MAX, false, &in->description);
    if (r == 0)
        r = body_enum(h, "type", types, true, &in->type);
    if (r == 0)
        r = body_enum(h, "priority", priorities, false, &in->priority);
    if (r == 0)
        r = body_string(h, "assignee_id", UUID_STR_LEN, false, &in->assignee);
    if (r == 0 && in->assignee)
        r = assignee_check(h, in->assignee);
    return r;
}

static int ticket_create(struct hctx *h)
{
    struct create_in in;
    int r = create_parse(h, &in);
    struct desk_ticket t;
    memset(&t, 0, sizeof(t));
    int64_t number = 0, now = clock_now_ms();
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r == 0)
        r = next_number(h, &number);
    if (r < 0)
        return r;
    id_uuid7(t.id);
    desk_ticket_number(number, t.number);
    snprintf(t.type, sizeof(t.type), "%s", in.type);
    snprintf(t.priority, sizeof(t.priority), "%s", in.priority ? in.priority : "medium");
    snprintf(t.status, sizeof(t.status), "open");
    snprintf(t.requester_id, sizeof(t.requester_id), "%s", h->user_id);
    snprintf(t.assignee_id, sizeof(t.assignee_id), "%s", in.assignee ? in.assignee : "");
    t.created_at = now;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_INSERT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, t.id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, number);
    sqlite3_bind_text(q, 4, in.title, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, in.description ? in.description : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, t.type, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, t.priority, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 8, t.requester_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 9, in.assignee, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 10, now);
    sqlite3_bind_int64(q, 11, now);
    r = step_done(q);
    if (r == 0)
        r = desk_history_add(h, t.id, "created", NULL, t.number);
    if (r == 0)
        r = desk_sla_start(h, &t);
    if (r == 0 && in.assignee)
        r = desk_notify(h->app, h->tenant_id, h->user_id, in.assignee, DESK_N_ASSIGNED,
                        arena_printf(h->arena, "%s assigned to you", t.number), in.title, t.id);
    if (r < 0)
        return r;
    h->status = 201;
    return ticket_write(h, t.id);
}

/* ---- list ---- */

/* The user's text as a safe FTS5 query: every whitespace-separated term becomes a quoted
 * string (quotes doubled), so operators, columns and stray syntax are plain text. All terms
 * must match. NULL when there is no term. */
static const char *fts_query(struct hctx *h, const char *text)
{
    struct buf b;
    buf_init(&b, 8 * SEARCH_MAX + 16);   /* each character at most doubled, plus quotes */
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (!*p)
            break;
        if (b.len)
            buf_putc(&b, ' ');
        buf_putc(&b, '"');
        for (; *p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n'; p++) {
            buf_putc(&b, *p);
            if (*p == '"')
                buf_putc(&b, '"');
        }
        buf_putc(&b, '"');
    }
    const char *out = b.len ? arena_strndup(h->arena, b.data, b.len) : NULL;
    buf_release(&b);
    return out;
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

struct list_in {
    const char *type, *status, *assignee, *priority, *requester, *match;
    int sort, desc, page, limit;
};

static int list_parse(struct hctx *h, struct list_in *in)
{
    memset(in, 0, sizeof(*in));
    int r = query_enum(h, "type", types, &in->type);
    if (r == 0)
        r = query_enum(h, "status", statuses, &in->status);
    if (r == 0)
        r = query_enum(h, "priority", priorities, &in->priority);
    const char *sort = http_query_get(h->req, "sort"), *order = http_query_get(h->req, "order");
    in->sort = sort && sort[0] ? enum_index(sorts, sort) : 0;
    if (r == 0 && in->sort < 0)
        r = fail(h, TS_E_VALIDATION, "sort",
                 arena_printf(h->arena, "sort must be one of %s", enum_list(h, sorts)));
    in->desc = !order || !order[0] || !strcmp(order, "desc");
    if (r == 0 && order && order[0] && strcmp(order, "asc") && strcmp(order, "desc"))
        r = fail(h, TS_E_VALIDATION, "order", "order must be asc or desc");
    if (r == 0)
        r = query_int(h, "page", 1, 1, 1000000, &in->page);
    if (r == 0)
        r = query_int(h, "limit", 20, 1, PAGE_MAX, &in->limit);
    const char *assignee = http_query_get(h->req, "assignee_id");
    in->assignee = assignee && assignee[0] ? assignee : NULL;
    const char *search = http_query_get(h->req, "search");
    if (r == 0 && search && utf8_chars(search) > SEARCH_MAX)
        r = fail(h, TS_E_VALIDATION, "search",
                 arena_printf(h->arena, "search must be at most %d characters", SEARCH_MAX));
    if (r == 0 && search)
        in->match = fts_query(h, search);
    in->requester = desk_is_staff(h) ? NULL : h->user_id;
    return r;
}

/* Appends " FROM tickets WHERE ..." with one placeholder per given filter, in bind order. */
static void list_where(struct buf *b, const struct list_in *in)
{
    buf_puts(b, " FROM tickets WHERE tenant_id = ?");
    const char *cols[] = {"type", "status", "assignee_id", "priority", "requester_id"};
    const char *vals[] = {in->type, in->status, in->assignee, in->priority, in->requester};
    for (int i = 0; i < 5; i++)
        if (vals[i])
            buf_printf(b, " AND %s = ?", cols[i]);
    if (in->match)
        buf_puts(b, " AND rowid IN (SELECT rowid FROM tickets_fts WHERE tickets_fts MATCH ?)");
}

static int list_bind(sqlite3_stmt *q, const struct hctx *h, const struct list_in *in)
{
    int k = 1;
    sqlite3_bind_text(q, k++, h->tenant_id, -1, SQLITE_STATIC);
    const char *vals[] = {in->type, in->status, in->assignee, in->priority, in->requester,
                          in->match};
    for (int i = 0; i < 6; i++)
        if (vals[i])
            sqlite3_bind_text(q, k++, vals[i], -1, SQLITE_STATIC);
    return k;
}

/* The total of a list filtered at most by type, status and priority (the common case) is a
 * sum over desk_ticket_counts (024), kept by triggers; the other filters count their rows. */
static bool list_counted(const struct list_in *in)
{
    return in->assignee == NULL && in->requester == NULL && in->match == NULL;
}

static sqlite3_stmt *list_prepare(struct hctx *h, const struct list_in *in, bool count)
{
    struct buf b;
    buf_init(&b, 4096);
    if (count && list_counted(in)) {
        buf_puts(&b, "SELECT coalesce(sum(n), 0) FROM desk_ticket_counts WHERE tenant_id = ?");
        const char *cols[] = {"type", "status", "priority"};
        const char *vals[] = {in->type, in->status, in->priority};
        for (int i = 0; i < 3; i++)
            if (vals[i])
                buf_printf(&b, " AND %s = ?", cols[i]);
    } else if (count) {
        buf_puts(&b, "SELECT count(*)");
        list_where(&b, in);
    } else {
        buf_puts(&b, "SELECT " TICKET_COLUMNS);
        list_where(&b, in);
    }
    if (!count) {
        const char *dir = in->desc ? "DESC" : "ASC";
        buf_printf(&b, " ORDER BY %s %s, number %s LIMIT ? OFFSET ?", sort_sql[in->sort], dir,
                   dir);
    }
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(h->db, buf_cstr(&b), (int)b.len, &q, NULL) != SQLITE_OK)
        q = NULL;
    buf_release(&b);
    return q;
}

/* A pool handler: h->db is the worker's read-only connection (a consistent snapshot). */
static int ticket_list(struct hctx *h)
{
    struct list_in in;
    int r = list_parse(h, &in);
    if (r < 0)
        return r;
    sqlite3_stmt *c = list_prepare(h, &in, true), *q = list_prepare(h, &in, false);
    if (c == NULL || q == NULL) {
        sqlite3_finalize(c);
        sqlite3_finalize(q);
        return TS_E_INTERNAL;
    }
    list_bind(c, h, &in);
    int rc = sqlite3_step(c);
    int64_t total = rc == SQLITE_ROW ? sqlite3_column_int64(c, 0) : 0;
    sqlite3_finalize(c);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(q);
        return step_err(rc);
    }
    int k = list_bind(q, h, &in);
    sqlite3_bind_int(q, k++, in.limit);
    sqlite3_bind_int64(q, k, (int64_t)(in.page - 1) * in.limit);
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "tickets");
    jw_arr_open(&w);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        jw_obj_open(&w);
        ticket_fields(&w, q);
        jw_obj_close(&w);
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE)
        return step_err(rc);
    jw_arr_close(&w);
    jw_kint(&w, "total", total);
    jw_kint(&w, "page", in.page);
    jw_kint(&w, "limit", in.limit);
    return out_end(h, &w);
}

/* ---- detail ---- */

static void comment_fields(struct jw *w, sqlite3_stmt *q)
{
    jw_kstr(w, "id", col_text(q, 0));
    jw_kstr(w, "ticket_id", col_text(q, 1));
    jw_kstr(w, "author_id", col_text(q, 2));
    jw_kstr(w, "content", col_text(q, 3));
    jw_kbool(w, "is_internal", sqlite3_column_int(q, 4));
    jw_kiso(w, "created_at", sqlite3_column_int64(q, 5));
}

/* Writes the ticket's comments as an array (internal ones only to staff); returns the count
 * or an error. */
static int comments_array(struct hctx *h, struct jw *w, const char *ticket_id)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_COMMENTS);
    sqlite3_bind_text(q, 1, ticket_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 3, desk_is_staff(h));
    int n = 0, rc;
    jw_arr_open(w);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        jw_obj_open(w);
        comment_fields(w, q);
        jw_obj_close(w);
        n++;
    }
    sqlite3_reset(q);
    jw_arr_close(w);
    return rc == SQLITE_DONE ? n : step_err(rc);
}

static int history_array(struct hctx *h, struct jw *w, const char *ticket_id)
{
    int rc;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_HISTORY);
    sqlite3_bind_text(q, 1, ticket_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    jw_arr_open(w);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        jw_obj_open(w);
        jw_kstr(w, "id", col_text(q, 0));
        jw_kstr(w, "actor_id", (const char *)sqlite3_column_text(q, 1));
        jw_kstr(w, "field", col_text(q, 2));
        jw_kstr(w, "old_value", (const char *)sqlite3_column_text(q, 3));
        jw_kstr(w, "new_value", (const char *)sqlite3_column_text(q, 4));
        jw_kiso(w, "created_at", sqlite3_column_int64(q, 5));
        jw_obj_close(w);
    }
    sqlite3_reset(q);
    jw_arr_close(w);
    return rc == SQLITE_DONE ? 0 : step_err(rc);
}

static int ticket_get(struct hctx *h)
{
    struct desk_ticket t;
    int r = desk_ticket_find(h, http_param_get(h->req, "ticket_id"), "ticket_id", &t);
    if (r < 0)
        return r;
    sqlite3_stmt *q = ticket_row(h, t.id);
    if (q == NULL)
        return fail(h, TS_E_NOT_FOUND, "ticket_id", "ticket not found");
    struct jw w;
    out_begin(h, &w);
    ticket_fields(&w, q);
    sqlite3_reset(q);
    jw_key(&w, "comments");
    r = comments_array(h, &w, t.id);
    jw_key(&w, "history");
    if (r >= 0)
        r = history_array(h, &w, t.id);
    return r < 0 ? r : out_end(h, &w);
}

/* ---- status workflow ---- */

static const char *const *allowed_next(const char *from)
{
    for (size_t i = 0; i < sizeof(workflow) / sizeof(workflow[0]); i++)
        if (!strcmp(workflow[i].from, from))
            return workflow[i].to;
    return NULL;
}

/* Moves t to status `to` (validated as a status) if the workflow allows it; notes (may be
 * NULL) replace the resolution notes. History, SLA and the requester's notification follow. */
static int status_apply(struct hctx *h, struct desk_ticket *t, const char *to, const char *notes,
                        const char *old_notes)
{
    const char *const *next = allowed_next(t->status);
    if (next == NULL || enum_index(next, to) < 0)
        return fail(h, TS_E_UNPROCESSABLE, "status",
                    arena_printf(h->arena, "cannot move a ticket from %s to %s; allowed: %s",
                                 t->status, to, next ? enum_list(h, next) : "none"));
    int64_t now = clock_now_ms();
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_STATUS);
    sqlite3_bind_text(q, 1, to, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, notes, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, now);
    sqlite3_bind_text(q, 4, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, h->tenant_id, -1, SQLITE_STATIC);
    int r = step_done(q);
    const char *old = arena_strdup(h->arena, t->status);
    if (r == 0)
        r = desk_history_add(h, t->id, "status", old, to);
    if (r == 0 && notes && (!old_notes || strcmp(notes, old_notes)))
        r = desk_history_add(h, t->id, "resolution_notes", old_notes, notes);
    snprintf(t->status, sizeof(t->status), "%s", to);
    if (r == 0)
        r = desk_sla_on_status(h, t, old, to);
    if (r == 0)
        r = desk_notify(h->app, h->tenant_id, h->user_id, t->requester_id, DESK_N_STATUS,
                        arena_printf(h->arena, "%s is now %s", t->number, to),
                        arena_printf(h->arena, "Status changed from %s to %s", old, to), t->id);
    return r;
}

/* Current resolution notes (NULL when none), copied into the arena. */
static const char *notes_now(struct hctx *h, const char *id)
{
    sqlite3_stmt *q = ticket_row(h, id);
    if (q == NULL)
        return NULL;
    const char *n = sqlite3_column_type(q, 9) == SQLITE_NULL
                        ? NULL
                        : arena_strdup(h->arena, col_text(q, 9));
    sqlite3_reset(q);
    return n;
}

static int ticket_status(struct hctx *h)
{
    struct desk_ticket t;
    const char *to, *notes;
    int r = body_enum(h, "status", statuses, true, &to);
    if (r == 0)
        r = body_string(h, "resolution_notes", TEXT_MAX, false, &notes);
    if (r == 0)
        r = desk_ticket_find(h, http_param_get(h->req, "ticket_id"), "ticket_id", &t);
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r == 0)
        r = status_apply(h, &t, to, notes, notes_now(h, t.id));
    return r < 0 ? r : ticket_write(h, t.id);
}

/* ---- assignment ---- */

static int assign_apply(struct hctx *h, struct desk_ticket *t, const char *assignee)
{
    if (!strcmp(t->assignee_id, assignee ? assignee : ""))
        return 0;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_ASSIGN);
    sqlite3_bind_text(q, 1, assignee, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, clock_now_ms());
    sqlite3_bind_text(q, 3, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, h->tenant_id, -1, SQLITE_STATIC);
    int r = step_done(q);
    if (r == 0)
        r = desk_history_add(h, t->id, "assignee_id", t->assignee_id[0] ? t->assignee_id : NULL,
                             assignee);
    if (r == 0 && assignee)
        r = desk_notify(h->app, h->tenant_id, h->user_id, assignee, DESK_N_ASSIGNED,
                        arena_printf(h->arena, "%s assigned to you", t->number),
                        arena_printf(h->arena, "You are now the assignee of %s", t->number),
                        t->id);
    snprintf(t->assignee_id, sizeof(t->assignee_id), "%s", assignee ? assignee : "");
    return r;
}

static int ticket_assign(struct hctx *h)
{
    struct desk_ticket t;
    const char *assignee;
    int r = body_string(h, "assignee_id", UUID_STR_LEN, true, &assignee);
    if (r == 0)
        r = assignee_check(h, assignee);
    if (r == 0)
        r = desk_ticket_find(h, http_param_get(h->req, "ticket_id"), "ticket_id", &t);
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r == 0)
        r = assign_apply(h, &t, assignee);
    return r < 0 ? r : ticket_write(h, t.id);
}

/* ---- update ---- */

static const char *const update_fields[] = {"title",       "description", "priority", "type",
                                            "assignee_id", "status",      "resolution_notes",
                                            NULL};

struct update_in {
    const char *title, *description, *priority, *type, *assignee, *status, *notes;
    bool assignee_given;
};

static int update_parse(struct hctx *h, struct update_in *in)
{
    const char *key;
    json_t *v;
    memset(in, 0, sizeof(*in));
    if (json_object_size(h->body) == 0)
        return fail(h, TS_E_VALIDATION, "body",
                    arena_printf(h->arena, "give at least one of %s", enum_list(h, update_fields)));
    json_object_foreach(h->body, key, v) {
        if (enum_index(update_fields, key) < 0)
            return fail(h, TS_E_VALIDATION, arena_strdup(h->arena, key), "unknown field");
    }
    int r = body_string(h, "title", TITLE_MAX, false, &in->title);
    if (r == 0 && in->title && !in->title[0])
        r = fail(h, TS_E_VALIDATION, "title", "title must not be empty");
    if (r == 0)
        r = body_string(h, "description", TEXT_MAX, false, &in->description);
    if (r == 0)
        r = body_enum(h, "priority", priorities, false, &in->priority);
    if (r == 0)
        r = body_enum(h, "type", types, false, &in->type);
    if (r == 0)
        r = body_enum(h, "status", statuses, false, &in->status);
    if (r == 0)
        r = body_string(h, "resolution_notes", TEXT_MAX, false, &in->notes);
    in->assignee_given = json_object_get(h->body, "assignee_id") != NULL;
    if (r == 0)
        r = body_string(h, "assignee_id", UUID_STR_LEN, false, &in->assignee);
    if (r == 0 && in->assignee)
        r = assignee_check(h, in->assignee);
    return r;
}

struct current {
    const char *title, *description, *notes;
};

static void current_load(struct hctx *h, const char *id, struct current *c)
{
    sqlite3_stmt *q = ticket_row(h, id);
    c->title = q ? arena_strdup(h->arena, col_text(q, 2)) : "";
    c->description = q ? arena_strdup(h->arena, col_text(q, 3)) : "";
    c->notes = q && sqlite3_column_type(q, 9) != SQLITE_NULL ? arena_strdup(h->arena, col_text(q, 9))
                                                             : NULL;
    if (q)
        sqlite3_reset(q);
}

/* One history row for a field whose value changes; *changed notes that something did. */
static int field_change(struct hctx *h, const char *id, const char *field, const char *old,
                        const char *new, bool *changed)
{
    if (new == NULL || !strcmp(old, new))
        return 0;
    *changed = true;
    return desk_history_add(h, id, field, old, new);
}

/* Resolution notes alone: the status statement with the status unchanged. */
static int notes_set(struct hctx *h, const struct desk_ticket *t, const char *notes,
                     const char *old_notes)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_STATUS);
    sqlite3_bind_text(q, 1, t->status, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, notes, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, clock_now_ms());
    sqlite3_bind_text(q, 4, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, h->tenant_id, -1, SQLITE_STATIC);
    int r = step_done(q);
    return r < 0 ? r : desk_history_add(h, t->id, "resolution_notes", old_notes, notes);
}

static int update_fields_apply(struct hctx *h, struct desk_ticket *t, const struct update_in *in)
{
    struct current c;
    current_load(h, t->id, &c);
    bool changed = false;
    int r = field_change(h, t->id, "title", c.title, in->title, &changed);
    if (r == 0)
        r = field_change(h, t->id, "description", c.description, in->description, &changed);
    if (r == 0)
        r = field_change(h, t->id, "type", t->type, in->type, &changed);
    if (r == 0)
        r = field_change(h, t->id, "priority", t->priority, in->priority, &changed);
    if (r == 0 && changed) {
        sqlite3_stmt *q = db_stmt(h->app->db, SQL_UPDATE);
        sqlite3_bind_text(q, 1, in->title ? in->title : c.title, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, in->description ? in->description : c.description, -1,
                          SQLITE_STATIC);
        sqlite3_bind_text(q, 3, in->type ? in->type : t->type, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 4, in->priority ? in->priority : t->priority, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 5, t->assignee_id[0] ? t->assignee_id : NULL, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 6, clock_now_ms());
        sqlite3_bind_text(q, 7, t->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 8, h->tenant_id, -1, SQLITE_STATIC);
        r = step_done(q);
    }
    if (r == 0 && in->assignee_given)
        r = assign_apply(h, t, in->assignee);
    if (r == 0 && in->status && strcmp(in->status, t->status))
        r = status_apply(h, t, in->status, in->notes, c.notes);
    else if (r == 0 && in->notes && (!c.notes || strcmp(in->notes, c.notes)))
        r = notes_set(h, t, in->notes, c.notes);
    return r;
}

static int ticket_update(struct hctx *h)
{
    struct desk_ticket t;
    struct update_in in;
    int r = update_parse(h, &in);
    if (r == 0)
        r = desk_ticket_find(h, http_param_get(h->req, "ticket_id"), "ticket_id", &t);
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r == 0)
        r = update_fields_apply(h, &t, &in);
    return r < 0 ? r : ticket_write(h, t.id);
}

/* ---- delete ---- */

static int ticket_delete(struct hctx *h)
{
    struct desk_ticket t;
    int r = desk_ticket_find(h, http_param_get(h->req, "ticket_id"), "ticket_id", &t);
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_DELETE);
    sqlite3_bind_text(q, 1, t.id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    r = step_done(q);
    if (r < 0)
        return r;
    h->audit_target = arena_strdup(h->arena, t.id);
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "message", arena_printf(h->arena, "Ticket %s deleted", t.number));
    return out_end(h, &w);
}

/* ---- comments ---- */

static int comment_notify(struct hctx *h, const struct desk_ticket *t, bool internal)
{
    const char *title = arena_printf(h->arena, "New comment on %s", t->number);
    const char *msg = arena_printf(h->arena, "A comment was added to %s", t->number);
    int r = 0;
    if (!internal)
        r = desk_notify(h->app, h->tenant_id, h->user_id, t->requester_id, DESK_N_COMMENT, title,
                        msg, t->id);
    if (r == 0 && t->assignee_id[0] && strcmp(t->assignee_id, t->requester_id))
        r = desk_notify(h->app, h->tenant_id, h->user_id, t->assignee_id, DESK_N_COMMENT, title,
                        msg, t->id);
    return r;
}

/* A public comment by staff other than the requester is the ticket's first response. */
static int comment_touch(struct hctx *h, const struct desk_ticket *t, bool internal, int64_t now)
{
    bool responds = !internal && desk_is_staff(h) && strcmp(h->user_id, t->requester_id) != 0;
    bool first = false;
    if (responds) {
        sqlite3_stmt *q = db_stmt(h->app->db, SQL_FIRST_RESPONSE);
        sqlite3_bind_text(q, 1, t->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
        first = sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0);
        sqlite3_reset(q);
    }
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_TOUCH);
    sqlite3_bind_int64(q, 1, now);
    sqlite3_bind_int(q, 2, first);
    sqlite3_bind_text(q, 3, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, h->tenant_id, -1, SQLITE_STATIC);
    int r = step_done(q);
    if (r == 0 && first)
        r = desk_sla_on_first_response(h, t);
    return r;
}

static int comment_create(struct hctx *h)
{
    struct desk_ticket t;
    const char *content;
    int r = body_string(h, "content", TEXT_MAX, true, &content);
    json_t *iv = json_object_get(h->body, "is_internal");
    if (r == 0 && iv && !json_is_null(iv) && !json_is_boolean(iv))
        r = fail(h, TS_E_VALIDATION, "is_internal", "is_internal must be true or false");
    bool internal = json_is_true(iv);
    if (r == 0)
        r = desk_ticket_find(h, http_param_get(h->req, "ticket_id"), "ticket_id", &t);
    if (r == 0 && internal && !desk_is_staff(h))
        r = fail(h, TS_E_FORBIDDEN, "is_internal", "only staff may write internal comments");
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    char id[UUID_STR_LEN];
    id_uuid7(id);
    int64_t now = clock_now_ms();
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_COMMENT_ADD);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, t.id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, content, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 6, internal);
    sqlite3_bind_int64(q, 7, now);
    r = step_done(q);
    if (r == 0)
        r = comment_touch(h, &t, internal, now);
    if (r == 0)
        r = comment_notify(h, &t, internal);
    if (r < 0)
        return r;
    h->status = 201;
    h->audit_target = arena_strdup(h->arena, t.id);
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "id", id);
    jw_kstr(&w, "ticket_id", t.id);
    jw_kstr(&w, "author_id", h->user_id);
    jw_kstr(&w, "content", content);
    jw_kbool(&w, "is_internal", internal);
    jw_kiso(&w, "created_at", now);
    return out_end(h, &w);
}

static int comment_list(struct hctx *h)
{
    struct desk_ticket t;
    int r = desk_ticket_find(h, http_param_get(h->req, "ticket_id"), "ticket_id", &t);
    if (r < 0)
        return r;
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "comments");
    int n = comments_array(h, &w, t.id);
    if (n < 0)
        return n;
    jw_kint(&w, "total", n);
    return out_end(h, &w);
}

static const struct route routes[] = {
    {"POST", "/api/v1/tickets", ticket_create, "tickets.create", "default", RUN_LOOP, 0,
     RF_JSON_BODY},
    /* a scan: on the pool, and cached 5 s per caller until the tenant's next write */
    {"GET", "/api/v1/tickets", ticket_list, "tickets.read", "default", RUN_POOL, 5, 0},
    {"GET", "/api/v1/tickets/{ticket_id}", ticket_get, "tickets.read", "default", RUN_LOOP, 0, 0},
    {"PUT", "/api/v1/tickets/{ticket_id}", ticket_update, "tickets.update", "default", RUN_LOOP, 0,
     RF_JSON_BODY},
    {"DELETE", "/api/v1/tickets/{ticket_id}", ticket_delete, "tickets.delete", "default",
     RUN_LOOP, 0, 0},
    {"POST", "/api/v1/tickets/{ticket_id}/comments", comment_create, "tickets.comment", "default",
     RUN_LOOP, 0, RF_JSON_BODY},
    {"GET", "/api/v1/tickets/{ticket_id}/comments", comment_list, "tickets.read", "default",
     RUN_LOOP, 0, 0},
    {"POST", "/api/v1/tickets/{ticket_id}/assign", ticket_assign, "tickets.update", "default",
     RUN_LOOP, 0, RF_JSON_BODY},
    {"POST", "/api/v1/tickets/{ticket_id}/status", ticket_status, "tickets.update", "default",
     RUN_LOOP, 0, RF_JSON_BODY},
};

const struct route_table desk_tickets_table = {SURF_DESK, routes,
                                               sizeof(routes) / sizeof(routes[0])};
