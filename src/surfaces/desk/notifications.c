/* desk notifications: list (unread_only, paging, unread_count), mark read, mark all read,
 * preferences; and GET /ws/notifications, a live feed of the caller's notifications. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "http/ws.h"
#include "store/db.h"
#include "surfaces/desk/desk.h"

static const char SQL_COUNT[] =
    "SELECT count(*), coalesce(sum(read_at IS NULL), 0) FROM notifications "
    "WHERE tenant_id = ? AND user_id = ?";
static const char SQL_PAGE[] =
    "SELECT id, kind, title, message, ticket_id, read_at, created_at FROM notifications "
    "WHERE tenant_id = ?1 AND user_id = ?2 AND (?3 = 0 OR read_at IS NULL) "
    "ORDER BY created_at DESC, id DESC LIMIT ?4 OFFSET ?5";
static const char SQL_READ[] =
    "UPDATE notifications SET read_at = coalesce(read_at, ?) "
    "WHERE id = ? AND tenant_id = ? AND user_id = ?";
static const char SQL_READ_ALL[] =
    "UPDATE notifications SET read_at = ? WHERE tenant_id = ? AND user_id = ? AND read_at IS NULL";
static const char SQL_PREFS[] = "SELECT preferences FROM users WHERE id = ? AND tenant_id = ?";
static const char SQL_PREFS_SET[] = "UPDATE users SET preferences = ? WHERE id = ? AND tenant_id = ?";

static void counts(struct hctx *h, int *total, int *unread)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_COUNT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->user_id, -1, SQLITE_STATIC);
    *total = *unread = 0;
    if (sqlite3_step(q) == SQLITE_ROW) {
        *total = sqlite3_column_int(q, 0);
        *unread = sqlite3_column_int(q, 1);
    }
    sqlite3_reset(q);
}

static int list(struct hctx *h)
{
    int page, limit;
    const char *uo = http_query_get(h->req, "unread_only");
    int r = query_int(h, "page", 1, 1, 1000000, &page);
    if (r == 0)
        r = query_int(h, "limit", 20, 1, 100, &limit);
    if (r == 0 && uo && strcmp(uo, "true") && strcmp(uo, "false"))
        r = fail(h, TS_E_VALIDATION, "unread_only", "unread_only must be true or false");
    if (r < 0)
        return r;
    bool unread_only = uo && !strcmp(uo, "true");
    int total, unread;
    counts(h, &total, &unread);
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_PAGE);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 3, unread_only);
    sqlite3_bind_int(q, 4, limit);
    sqlite3_bind_int64(q, 5, (int64_t)(page - 1) * limit);
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "notifications");
    jw_arr_open(&w);
    while (sqlite3_step(q) == SQLITE_ROW) {
        jw_obj_open(&w);
        jw_kstr(&w, "id", col_text(q, 0));
        jw_kstr(&w, "type", col_text(q, 1));
        jw_kstr(&w, "title", col_text(q, 2));
        jw_kstr(&w, "message", col_text(q, 3));
        jw_kstr(&w, "ticket_id", (const char *)sqlite3_column_text(q, 4));
        jw_kbool(&w, "read", sqlite3_column_type(q, 5) != SQLITE_NULL);
        jw_kiso(&w, "read_at", sqlite3_column_int64(q, 5));
        jw_kiso(&w, "created_at", sqlite3_column_int64(q, 6));
        jw_obj_close(&w);
    }
    sqlite3_reset(q);
    jw_arr_close(&w);
    jw_kint(&w, "unread_count", unread);
    jw_kint(&w, "total", unread_only ? unread : total);
    jw_kint(&w, "page", page);
    jw_kint(&w, "limit", limit);
    return out_end(h, &w);
}

static int mark_read(struct hctx *h)
{
    const char *id = http_param_get(h->req, "notification_id");
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_READ);
    sqlite3_bind_int64(q, 1, clock_now_ms());
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, h->user_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    if (sqlite3_changes(h->db) == 0)
        return fail(h, TS_E_NOT_FOUND, "notification_id", "notification not found");
    int total, unread;
    counts(h, &total, &unread);
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "id", id);
    jw_kbool(&w, "read", true);
    jw_kint(&w, "unread_count", unread);
    return out_end(h, &w);
}

static int mark_all(struct hctx *h)
{
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_READ_ALL);
    sqlite3_bind_int64(q, 1, clock_now_ms());
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, h->user_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    struct jw w;
    out_begin(h, &w);
    jw_kint(&w, "updated", sqlite3_changes(h->db));
    jw_kint(&w, "unread_count", 0);
    return out_end(h, &w);
}

/* ---- preferences: desk.md's email_* / in_app_* booleans, in users.preferences ---- */

static const enum desk_notify_kind pref_kinds[] = {DESK_N_ASSIGNED, DESK_N_COMMENT,
                                                   DESK_N_STATUS,   DESK_N_APPROVAL_REQUESTED,
                                                   DESK_N_SLA_BREACH, DESK_N_DEPLOYMENT};
#define NPREF (sizeof(pref_kinds) / sizeof(pref_kinds[0]))

static json_t *stored_prefs(struct hctx *h)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_PREFS);
    sqlite3_bind_text(q, 1, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    json_t *p = sqlite3_step(q) == SQLITE_ROW ? json_loads(col_text(q, 0), 0, NULL) : NULL;
    sqlite3_reset(q);
    return json_is_object(p) ? p : (json_decref(p), json_object());
}

static bool pref_default(enum desk_notify_kind k, bool email)
{
    return !(email && (k == DESK_N_COMMENT || k == DESK_N_STATUS));
}

static int prefs_write(struct hctx *h, json_t *all)
{
    json_t *d = json_object_get(all, "desk_notifications");
    struct jw w;
    out_begin(h, &w);
    for (size_t i = 0; i < NPREF; i++) {
        for (int email = 1; email >= 0; email--) {
            const char *key = desk_pref_key(pref_kinds[i], email);
            json_t *v = json_object_get(d, key);
            jw_kbool(&w, key, json_is_boolean(v) ? json_is_true(v) : pref_default(pref_kinds[i], email));
        }
    }
    return out_end(h, &w);
}

static int prefs_get(struct hctx *h)
{
    json_t *all = stored_prefs(h);
    int r = prefs_write(h, all);
    json_decref(all);
    return r;
}

static bool pref_key_known(const char *key)
{
    for (size_t i = 0; i < NPREF; i++)
        if (!strcmp(key, desk_pref_key(pref_kinds[i], true)) ||
            !strcmp(key, desk_pref_key(pref_kinds[i], false)))
            return true;
    return false;
}

static int prefs_put(struct hctx *h)
{
    const char *key;
    json_t *v;
    if (json_object_size(h->body) == 0)
        return fail(h, TS_E_VALIDATION, "body", "give at least one preference");
    json_object_foreach(h->body, key, v) {
        if (!pref_key_known(key))
            return fail(h, TS_E_VALIDATION, arena_strdup(h->arena, key), "unknown preference");
        if (!json_is_boolean(v))
            return fail(h, TS_E_VALIDATION, arena_strdup(h->arena, key), "must be true or false");
    }
    json_t *all = stored_prefs(h);
    json_t *d = json_object_get(all, "desk_notifications");
    if (!json_is_object(d)) {
        d = json_object();
        json_object_set_new(all, "desk_notifications", d);
    }
    json_object_update(d, h->body);
    char *text = json_dumps(all, JSON_COMPACT);
    int r = db_write_begin(h->app->db);
    if (r == 0) {
        sqlite3_stmt *q = db_stmt(h->app->db, SQL_PREFS_SET);
        sqlite3_bind_text(q, 1, text, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(q, 2, h->user_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 3, h->tenant_id, -1, SQLITE_STATIC);
        r = sqlite3_step(q) == SQLITE_DONE ? 0 : TS_E_INTERNAL;
    }
    free(text);
    if (r == 0)
        r = prefs_write(h, all);
    json_decref(all);
    return r;
}

/* ---- live feed ---- */

static const struct ws_handlers live_handlers = {NULL, NULL, NULL}; /* server pushes only */

static int live(struct hctx *h)
{
    const char *channel = arena_printf(h->arena, "desk:%s:user:%s", h->tenant_id, h->user_id);
    return ws_upgrade(h->req, h->app->hub, channel, NULL, &live_handlers, NULL);
}

static const struct route routes[] = {
    {"GET", "/api/v1/notifications", list, "notifications", "default", RUN_LOOP, 0, 0},
    {"PUT", "/api/v1/notifications/read-all", mark_all, "notifications", "default", RUN_LOOP, 0, 0},
    {"PUT", "/api/v1/notifications/{notification_id}/read", mark_read, "notifications", "default",
     RUN_LOOP, 0, 0},
    {"GET", "/api/v1/notifications/preferences", prefs_get, "notifications", "default", RUN_LOOP,
     0, 0},
    {"PUT", "/api/v1/notifications/preferences", prefs_put, "notifications", "default", RUN_LOOP,
     0, RF_JSON_BODY},
    {"GET", "/ws/notifications", live, "notifications", "default", RUN_LOOP, 0, RF_WEBSOCKET},
};

const struct route_table desk_notifications_table = {SURF_DESK, routes,
                                                     sizeof(routes) / sizeof(routes[0])};
