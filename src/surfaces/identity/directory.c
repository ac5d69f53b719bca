/* Who is in a tenant: desk's users routes, lms's customers/me, recs's tenant and API keys,
 * and the audit log. Every query is bound to the caller's tenant. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "auth/identity.h"
#include "core/clock.h"
#include "store/db.h"
#include "surfaces/identity/identity.h"

#define PAGE_MAX 100

/* ---- preferences ---- */

void identity_preferences(struct jw *w, const char *stored_json)
{
    json_t *p = json_loads(stored_json ? stored_json : "{}", 0, NULL);
    json_t *lp = json_object_get(p, "leaderboardPrivacy");
    json_t *pa = json_object_get(p, "predictiveAnalyticsEnabled");
    json_t *nt = json_object_get(p, "notifications");
    jw_obj_open(w);
    jw_kstr(w, "leaderboardPrivacy", json_is_string(lp) ? json_string_value(lp) : "public");
    jw_kbool(w, "predictiveAnalyticsEnabled", json_is_boolean(pa) ? json_is_true(pa) : true);
    jw_key(w, "notifications");
    jw_obj_open(w);
    static const char *const channels[] = {"email", "in_app"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(nt, channels[i]);
        jw_kbool(w, channels[i], json_is_boolean(v) ? json_is_true(v) : true);
    }
    jw_obj_close(w);
    jw_obj_close(w);
    json_decref(p);
}

int identity_preferences_patch(struct hctx *h, json_t *patch, const char *stored_json,
                               char **ret_json)
{
    if (!json_is_object(patch))
        return fail(h, TS_E_VALIDATION, "preferences", "preferences must be an object");
    json_t *cur = json_loads(stored_json ? stored_json : "{}", 0, NULL);
    if (!json_is_object(cur)) {
        json_decref(cur);
        cur = json_object();
    }
    const char *key;
    json_t *v;
    int r = 0;
    json_object_foreach(patch, key, v) {
        if (!strcmp(key, "leaderboardPrivacy")) {
            const char *s = json_string_value(v);
            if (!s || (strcmp(s, "public") && strcmp(s, "friends") && strcmp(s, "private")))
                r = fail(h, TS_E_VALIDATION, "preferences.leaderboardPrivacy",
                         "must be public, friends or private");
        } else if (!strcmp(key, "predictiveAnalyticsEnabled")) {
            if (!json_is_boolean(v))
                r = fail(h, TS_E_VALIDATION, "preferences.predictiveAnalyticsEnabled",
                         "must be true or false");
        } else if (!strcmp(key, "notifications")) {
            const char *k2;
            json_t *v2;
            if (!json_is_object(v))
                r = fail(h, TS_E_VALIDATION, "preferences.notifications", "must be an object");
            json_object_foreach(v, k2, v2) {
                if ((strcmp(k2, "email") && strcmp(k2, "in_app")) || !json_is_boolean(v2))
                    r = fail(h, TS_E_VALIDATION, "preferences.notifications",
                             "takes email and in_app, each true or false");
            }
        } else {
            r = fail(h, TS_E_VALIDATION, arena_printf(h->arena, "preferences.%s", key),
                     "unknown preference");
        }
        if (r < 0)
            break;
        json_object_set(cur, key, v);
    }
    if (r == 0) {
        char *s = json_dumps(cur, JSON_COMPACT);
        *ret_json = arena_strdup(h->arena, s);
        free(s);
    }
    json_decref(cur);
    return r;
}

/* ---- users ---- */

static void roles_json(struct jw *w, const char *stored)
{
    unsigned roles = auth_roles_from_json(stored);
    jw_kstr(w, "role", role_primary(roles));
    jw_key(w, "roles");
    jw_arr_open(w);
    for (int i = 0; role_names[i]; i++)
        if (roles & (1u << i))
            jw_str(w, role_names[i]);
    jw_arr_close(w);
}

void identity_user_json(struct jw *w, sqlite3_stmt *q)
{
    jw_obj_open(w);
    jw_kstr(w, "id", col_text(q, 0));
    jw_kstr(w, "email", col_text(q, 1));
    jw_kstr(w, "full_name", col_text(q, 2));
    jw_kstr(w, "name", col_text(q, 2));
    roles_json(w, col_text(q, 3));
    jw_kstr(w, "tenant_id", col_text(q, 4));
    jw_kstr(w, "avatar_url", (const char *)sqlite3_column_text(q, 5));
    jw_kstr(w, "department", (const char *)sqlite3_column_text(q, 6));
    jw_kbool(w, "active", sqlite3_column_int(q, 7));
    jw_kbool(w, "email_confirmed", sqlite3_column_int(q, 8));
    jw_kiso(w, "last_login", sqlite3_column_int64(q, 9));
    jw_kiso(w, "created_at", sqlite3_column_int64(q, 10));
    jw_kstr(w, "manager_id", (const char *)sqlite3_column_text(q, 11));
    jw_obj_close(w);
}

static const char SQL_USER_GET[] =
    "SELECT " IDENTITY_USER_COLUMNS " FROM users WHERE id = ? AND tenant_id = ?";

static void user_row(struct hctx *h, struct jw *w, sqlite3_stmt *q)
{
    (void)h;
    identity_user_json(w, q);
}

static int user_write(struct hctx *h, const char *user_id)
{
    return row_body(h, SQL_USER_GET, user_id, "user_id", "user", user_row);
}

static int users_me(struct hctx *h)
{
    return user_write(h, h->user_id);
}

static const char SQL_PREFS_GET[] = "SELECT preferences FROM users WHERE id = ? AND tenant_id = ?";
static const char SQL_ME_UPDATE[] =
    "UPDATE users SET name = coalesce(?, name), avatar_url = coalesce(?, avatar_url), "
    "department = coalesce(?, department), preferences = coalesce(?, preferences) "
    "WHERE id = ? AND tenant_id = ?";

static bool url_ok(const char *u)
{
    return (!strncmp(u, "https://", 8) || !strncmp(u, "http://", 7)) && !strpbrk(u, " \t\r\n\"<>");
}

static int users_me_update(struct hctx *h)
{
    const char *name, *avatar, *dept;
    int r = body_string(h, "full_name", 200, false, &name);
    if (r == 0)
        r = body_string(h, "avatar_url", 2048, false, &avatar);
    if (r == 0)
        r = body_string(h, "department", 200, false, &dept);
    if (r == 0 && name && !name[0])
        r = fail(h, TS_E_VALIDATION, "full_name", "full_name must not be empty");
    if (r == 0 && avatar && avatar[0] && !url_ok(avatar))
        r = fail(h, TS_E_VALIDATION, "avatar_url", "avatar_url must be an http(s) URL");
    json_t *prefs = json_object_get(h->body, "preferences");
    char *prefs_json = NULL;
    if (r == 0 && prefs) {
        sqlite3_stmt *q = db_stmt(h->app->db, SQL_PREFS_GET);
        sqlite3_bind_text(q, 1, h->user_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
        const char *cur = sqlite3_step(q) == SQLITE_ROW ? arena_strdup(h->arena, col_text(q, 0)) : "{}";
        sqlite3_reset(q);
        r = identity_preferences_patch(h, prefs, cur, &prefs_json);
    }
    if (r == 0 && !name && !avatar && !dept && !prefs)
        r = fail(h, TS_E_VALIDATION, "body",
                 "give at least one of full_name, avatar_url, department, preferences");
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_ME_UPDATE);
    sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, avatar, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, dept, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, prefs_json, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    h->audit_target = h->user_id;
    return user_write(h, h->user_id);
}

static const char SQL_USERS_COUNT[] =
    "SELECT count(*) FROM users WHERE tenant_id = ?1 AND (?2 IS NULL OR EXISTS "
    "(SELECT 1 FROM json_each(users.roles) WHERE value = ?2))";
static const char SQL_USERS_PAGE[] =
    "SELECT " IDENTITY_USER_COLUMNS " FROM users WHERE tenant_id = ?1 AND (?2 IS NULL OR EXISTS "
    "(SELECT 1 FROM json_each(users.roles) WHERE value = ?2)) ORDER BY created_at, id "
    "LIMIT ?3 OFFSET ?4";

static int users_total(struct hctx *h, const char *role)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_USERS_COUNT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, role, -1, SQLITE_STATIC);
    int total = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : 0;
    sqlite3_reset(q);
    return total;
}

static int users_list(struct hctx *h)
{
    int page, limit;
    const char *role = http_query_get(h->req, "role");
    int r = query_int(h, "page", 1, 1, 1000000, &page);
    if (r == 0)
        r = query_int(h, "limit", 20, 1, PAGE_MAX, &limit);
    if (r == 0 && role && !identity_role_valid(role))
        r = fail(h, TS_E_VALIDATION, "role", arena_printf(h->arena, "unknown role '%s'", role));
    if (r < 0)
        return r;
    int total = users_total(h, role);
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_USERS_PAGE);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, role, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 3, limit);
    sqlite3_bind_int64(q, 4, (int64_t)(page - 1) * limit);
    return page_body(h, "users", q, user_row, total, page, limit);
}

static int users_get(struct hctx *h)
{
    return user_write(h, http_param_get(h->req, "user_id"));
}

static const char SQL_ROLE_SET[] = "UPDATE users SET roles = ? WHERE id = ? AND tenant_id = ?";

static int users_role(struct hctx *h)
{
    const char *role, *id = http_param_get(h->req, "user_id");
    int r = body_string(h, "role", 32, true, &role);
    if (r == 0 && !identity_role_valid(role))
        r = fail(h, TS_E_VALIDATION, "role", arena_printf(h->arena, "unknown role '%s'", role));
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_ROLE_SET);
    const char *roles = arena_printf(h->arena, "[\"%s\"]", role);
    sqlite3_bind_text(q, 1, roles, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    if (sqlite3_changes(h->db) == 0)
        return fail(h, TS_E_NOT_FOUND, "user_id", "user not found");
    return user_write(h, id);
}

/* ---- lms customers ---- */

static const char SQL_TENANT[] =
    "SELECT id, name, domain, plan, status, features_enabled, data_retention_days, settings, "
    "created_at FROM tenants WHERE id = ?";

static sqlite3_stmt *tenant_row(struct hctx *h)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_TENANT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW)
        return q;
    sqlite3_reset(q);
    return NULL;
}

static int customers_me(struct hctx *h)
{
    sqlite3_stmt *q = tenant_row(h);
    if (q == NULL)
        return TS_E_NOT_FOUND;
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "id", col_text(q, 0));
    jw_kstr(&w, "name", col_text(q, 1));
    jw_kstr(&w, "domain", col_text(q, 2));
    jw_kstr(&w, "subscription_tier", col_text(q, 3));
    jw_key(&w, "features_enabled");
    jw_raw(&w, col_text(q, 5));
    jw_kint(&w, "data_retention_days", sqlite3_column_int(q, 6));
    jw_kiso(&w, "created_at", sqlite3_column_int64(q, 8));
    sqlite3_reset(q);
    return out_end(h, &w);
}

static const char SQL_CUSTOMER_USERS[] =
    "SELECT id, email, name, roles, last_login, active FROM users WHERE tenant_id = ? "
    "ORDER BY created_at, id LIMIT ? OFFSET ?";

static int customers_me_users(struct hctx *h)
{
    int page, per_page;
    int r = query_int(h, "page", 1, 1, 1000000, &page);
    if (r == 0)
        r = query_int(h, "per_page", 50, 1, PAGE_MAX, &per_page);
    if (r < 0)
        return r;
    int total = users_total(h, NULL);
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_CUSTOMER_USERS);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 2, per_page);
    sqlite3_bind_int64(q, 3, (int64_t)(page - 1) * per_page);
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "users");
    jw_arr_open(&w);
    while (sqlite3_step(q) == SQLITE_ROW) {
        jw_obj_open(&w);
        jw_kstr(&w, "id", col_text(q, 0));
        jw_kstr(&w, "email", col_text(q, 1));
        jw_kstr(&w, "name", col_text(q, 2));
        jw_kstr(&w, "role", role_primary(auth_roles_from_json(col_text(q, 3))));
        jw_kiso(&w, "last_login", sqlite3_column_int64(q, 4));
        jw_kbool(&w, "active", sqlite3_column_int(q, 5));
        jw_obj_close(&w);
    }
    sqlite3_reset(q);
    jw_arr_close(&w);
    jw_kint(&w, "total", total);
    jw_kint(&w, "page", page);
    jw_kint(&w, "per_page", per_page);
    return out_end(h, &w);
}

/* ---- recs tenant and API keys ---- */

static int tenant_get(struct hctx *h)
{
    sqlite3_stmt *q = tenant_row(h);
    if (q == NULL)
        return TS_E_NOT_FOUND;
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "tenant_id", col_text(q, 0));
    jw_kstr(&w, "name", col_text(q, 1));
    jw_kstr(&w, "plan", col_text(q, 3));
    jw_kstr(&w, "status", col_text(q, 4));
    jw_kiso(&w, "created_at", sqlite3_column_int64(q, 8));
    jw_key(&w, "settings");
    jw_raw(&w, col_text(q, 7));
    sqlite3_reset(q);
    return out_end(h, &w);
}

static const char SQL_KEYS[] =
    "SELECT id, name, prefix, created_at, last_used_at, status, permissions FROM api_keys "
    "WHERE tenant_id = ? ORDER BY created_at DESC, id LIMIT 1000";
static const char SQL_KEY_INSERT[] =
    "INSERT INTO api_keys(tenant_id, id, name, prefix, hash, permissions, created_by, created_at) "
    "VALUES(?,?,?,?,?,?,?,?)";
static const char SQL_KEY_REVOKE[] =
    "UPDATE api_keys SET status = 'revoked', revoked_at = coalesce(revoked_at, ?) "
    "WHERE id = ? AND tenant_id = ?"; /* revoking twice is harmless and keeps the first time */

static int keys_list(struct hctx *h)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_KEYS);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "keys");
    jw_arr_open(&w);
    while (sqlite3_step(q) == SQLITE_ROW) {
        jw_obj_open(&w);
        jw_kstr(&w, "id", col_text(q, 0));
        jw_kstr(&w, "name", col_text(q, 1));
        jw_kstr(&w, "key_prefix", col_text(q, 2));
        jw_kiso(&w, "created_at", sqlite3_column_int64(q, 3));
        jw_kiso(&w, "last_used_at", sqlite3_column_int64(q, 4));
        jw_kstr(&w, "status", col_text(q, 5));
        jw_key(&w, "permissions");
        jw_raw(&w, col_text(q, 6));
        jw_obj_close(&w);
    }
    sqlite3_reset(q);
    jw_arr_close(&w);
    return out_end(h, &w);
}

/* permissions: a non-empty array of distinct read / write / internal */
static int key_permissions(struct hctx *h, char *out, size_t n)
{
    json_t *p = json_object_get(h->body, "permissions");
    if (!json_is_array(p) || json_array_size(p) == 0 || json_array_size(p) > 3)
        return fail(h, TS_E_VALIDATION, "permissions",
                    "permissions must be a non-empty array of read, write, internal");
    size_t i, o = 0;
    json_t *v;
    unsigned seen = 0;
    o += (size_t)snprintf(out, n, "[");
    json_array_foreach(p, i, v) {
        const char *s = json_string_value(v);
        unsigned bit = !s ? 0 : !strcmp(s, "read") ? 1 : !strcmp(s, "write") ? 2 : !strcmp(s, "internal") ? 4 : 0;
        if (bit == 0 || (seen & bit))
            return fail(h, TS_E_VALIDATION, "permissions",
                        "permissions must be distinct values of read, write, internal");
        seen |= bit;
        o += (size_t)snprintf(out + o, n - o, "%s\"%s\"", i ? "," : "", s);
    }
    snprintf(out + o, n - o, "]");
    return 0;
}

static int keys_create(struct hctx *h)
{
    const char *name, *env;
    char perms[64];
    int r = body_string(h, "name", 100, true, &name);
    if (r == 0)
        r = key_permissions(h, perms, sizeof(perms));
    if (r == 0)
        r = body_string(h, "environment", 8, false, &env);
    if (r == 0 && env && strcmp(env, "live") && strcmp(env, "test"))
        r = fail(h, TS_E_VALIDATION, "environment", "environment must be live or test");
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    char id[UUID_STR_LEN], key[API_KEY_LEN], prefix[24], hash[TOKEN_HASH_LEN];
    id_uuid7(id);
    auth_api_key_new(!env || !strcmp(env, "live"), key, prefix, hash);
    int64_t now = clock_now_ms();
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_KEY_INSERT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, prefix, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, perms, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 8, now);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    h->status = 201;
    h->audit_target = arena_strdup(h->arena, id);
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "id", id);
    jw_kstr(&w, "name", name);
    jw_kstr(&w, "key", key);
    jw_kstr(&w, "key_prefix", prefix);
    jw_key(&w, "permissions");
    jw_raw(&w, perms);
    jw_kiso(&w, "created_at", now);
    sodium_memzero(key, sizeof(key));
    return out_end(h, &w);
}

static int keys_revoke(struct hctx *h)
{
    const char *id = http_param_get(h->req, "id");
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_KEY_REVOKE);
    sqlite3_bind_int64(q, 1, clock_now_ms());
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    if (sqlite3_changes(h->db) == 0)
        return fail(h, TS_E_NOT_FOUND, "id", "API key not found");
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "id", id);
    jw_kstr(&w, "status", "revoked");
    return out_end(h, &w);
}

/* ---- audit ---- */

static const char SQL_AUDIT_COUNT[] = "SELECT count(*) FROM audit_log WHERE tenant_id = ?";
static const char SQL_AUDIT_PAGE[] =
    "SELECT id, actor_id, actor_kind, method, route, path, target, status, request_id, created_at "
    "FROM audit_log WHERE tenant_id = ? ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?";

static int audit_list(struct hctx *h)
{
    int page, per_page;
    int r = query_int(h, "page", 1, 1, 1000000, &page);
    if (r == 0)
        r = query_int(h, "per_page", 50, 1, PAGE_MAX, &per_page);
    if (r < 0)
        return r;
    sqlite3 *db = h->db; /* a pool reader: prepared per call, the cache is the writer's */
    sqlite3_stmt *c;
    sqlite3_prepare_v2(db, SQL_AUDIT_COUNT, -1, &c, NULL);
    sqlite3_bind_text(c, 1, h->tenant_id, -1, SQLITE_STATIC);
    int total = sqlite3_step(c) == SQLITE_ROW ? sqlite3_column_int(c, 0) : 0;
    sqlite3_finalize(c);
    sqlite3_prepare_v2(db, SQL_AUDIT_PAGE, -1, &c, NULL);
    sqlite3_bind_text(c, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(c, 2, per_page);
    sqlite3_bind_int64(c, 3, (int64_t)(page - 1) * per_page);
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "entries");
    jw_arr_open(&w);
    while (sqlite3_step(c) == SQLITE_ROW) {
        jw_obj_open(&w);
        jw_kstr(&w, "id", col_text(c, 0));
        jw_kstr(&w, "actor_id", (const char *)sqlite3_column_text(c, 1));
        jw_kstr(&w, "actor_kind", col_text(c, 2));
        jw_kstr(&w, "method", col_text(c, 3));
        jw_kstr(&w, "route", col_text(c, 4));
        jw_kstr(&w, "path", col_text(c, 5));
        jw_kstr(&w, "target", (const char *)sqlite3_column_text(c, 6));
        jw_kint(&w, "status", sqlite3_column_int(c, 7));
        jw_kstr(&w, "request_id", col_text(c, 8));
        jw_kiso(&w, "created_at", sqlite3_column_int64(c, 9));
        jw_obj_close(&w);
    }
    sqlite3_finalize(c);
    jw_arr_close(&w);
    jw_kint(&w, "total", total);
    jw_kint(&w, "page", page);
    jw_kint(&w, "per_page", per_page);
    return out_end(h, &w);
}

static const struct route desk_routes[] = {
    {"GET", "/api/v1/users/me", users_me, "session", "default", RUN_LOOP, 0, 0},
    {"PUT", "/api/v1/users/me", users_me_update, "profile.write", "default", RUN_LOOP, 0,
     RF_JSON_BODY},
    {"GET", "/api/v1/users", users_list, "users.list", "default", RUN_LOOP, 0, 0},
    {"GET", "/api/v1/users/{user_id}", users_get, "users.read", "default", RUN_LOOP, 0, 0,
     "user_id"},
    {"PUT", "/api/v1/users/{user_id}/role", users_role, "users.role", "default", RUN_LOOP, 0,
     RF_JSON_BODY},
};
const struct route_table identity_desk_table = {SURF_DESK, desk_routes,
                                                sizeof(desk_routes) / sizeof(desk_routes[0])};

static const struct route lms_routes[] = {
    {"GET", "/api/v1/customers/me", customers_me, "customer.read", "default", RUN_LOOP, 0, 0},
    {"GET", "/api/v1/customers/me/users", customers_me_users, "customer.users", "default",
     RUN_LOOP, 0, 0},
};
const struct route_table identity_lms_table = {SURF_LMS, lms_routes,
                                               sizeof(lms_routes) / sizeof(lms_routes[0])};

static const struct route recs_routes[] = {
    {"GET", "/api/v1/tenant", tenant_get, "tenant.read", "default", RUN_LOOP, 0, 0},
    {"GET", "/api/v1/api-keys", keys_list, "apikeys.manage", "default", RUN_LOOP, 0, 0},
    {"POST", "/api/v1/api-keys", keys_create, "apikeys.manage", "default", RUN_LOOP, 0,
     RF_JSON_BODY},
    {"DELETE", "/api/v1/api-keys/{id}", keys_revoke, "apikeys.manage", "default", RUN_LOOP, 0, 0},
    {"GET", "/api/v1/audit", audit_list, "audit.read", "default", RUN_POOL, 0, 0},
};
const struct route_table identity_recs_table = {SURF_RECS, recs_routes,
                                                sizeof(recs_routes) / sizeof(recs_routes[0])};
