/* The shared login and refresh (lms, learning, desk, recs in one body), desk's logout,
 * learning's /auth/me. Passwords are verified on the worker pool, never on the loop. */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "auth/session.h"
#include "auth/throttle.h"
#include "core/clock.h"
#include "store/db.h"
#include "surfaces/identity/identity.h"

static const char SQL_LOGIN_FIND[] =
    "SELECT u.id, u.tenant_id, u.password_hash, u.roles, u.active, u.email_confirmed, t.status, "
    "u.name, u.email FROM users u JOIN tenants t ON t.id = u.tenant_id "
    "WHERE u.email = ?1 AND (?2 IS NULL OR t.domain = ?2) LIMIT 2";
static const char SQL_LAST_LOGIN[] = "UPDATE users SET last_login = ? WHERE id = ?";

struct login_state {
    bool found, active, confirmed, ok;
    unsigned roles;
    char user_id[UUID_STR_LEN], tenant_id[UUID_STR_LEN];
    char hash[crypto_pwhash_STRBYTES];
    char name[256], email[256];
    const char *password;
    char acct_key[600], ip_key[96];
};

/* ---- the combined token body ---- */

static void add_permission(void *arg, const char *name)
{
    jw_str(arg, name);
}

static void roles_array(struct jw *w, unsigned roles)
{
    jw_arr_open(w);
    for (int i = 0; role_names[i]; i++)
        if (roles & (1u << i))
            jw_str(w, role_names[i]);
    jw_arr_close(w);
}

int identity_token_body(struct hctx *h, const struct issued *t, const struct token_user *u)
{
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "access_token", t->access);
    jw_kstr(&w, "refresh_token", t->refresh);
    jw_kstr(&w, "token_type", "Bearer");
    jw_kint(&w, "expires_in", t->expires_in);
    jw_key(&w, "user");
    jw_obj_open(&w);
    jw_kstr(&w, "id", u->id);
    jw_kstr(&w, "email", u->email);
    jw_kstr(&w, "name", u->name);
    jw_kstr(&w, "full_name", u->name);
    jw_kstr(&w, "role", role_primary(u->roles));
    jw_key(&w, "roles");
    roles_array(&w, u->roles);
    jw_key(&w, "permissions");
    jw_arr_open(&w);
    perm_each_held(u->roles, add_permission, &w);
    jw_arr_close(&w);
    jw_kstr(&w, "customer_id", u->tenant_id);
    jw_kstr(&w, "tenant_id", u->tenant_id);
    jw_obj_close(&w);
    jw_kbool(&w, "success", true);
    jw_key(&w, "data");
    jw_obj_open(&w);
    jw_kstr(&w, "token", t->access);
    jw_kstr(&w, "refresh_token", t->refresh);
    jw_key(&w, "user");
    jw_obj_open(&w);
    jw_kstr(&w, "id", u->id);
    jw_kstr(&w, "email", u->email);
    jw_kstr(&w, "fullName", u->name);
    jw_key(&w, "roles");
    roles_array(&w, u->roles);
    jw_kstr(&w, "organizationId", u->tenant_id);
    jw_obj_close(&w);
    jw_obj_close(&w);
    return out_end(h, &w);
}

/* ---- login ---- */

static const char *dummy_hash;
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
static char dummy_buf[crypto_pwhash_STRBYTES];

/* Unknown emails are verified against this, so they cost what a wrong password costs. */
static void dummy_make(void)
{
    char pw[33];
    unsigned char raw[16];
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(pw, sizeof(pw), raw, sizeof(raw));
    if (identity_password_hash(pw, dummy_buf) == 0)
        dummy_hash = dummy_buf;
}

static void login_verify(struct hctx *h)
{
    struct login_state *st = h->state;
    pthread_once(&dummy_once, dummy_make);
    const char *hash = st->found ? st->hash : dummy_hash;
    bool match = hash && crypto_pwhash_str_verify(hash, st->password, strlen(st->password)) == 0;
    st->ok = match && st->found;
}

static int login_fail(struct hctx *h, struct login_state *st)
{
    throttle_fail(h->app->throttle, st->acct_key);
    throttle_fail(h->app->throttle, st->ip_key);
    return fail(h, TS_E_UNAUTHENTICATED, NULL, "Invalid email or password");
}

static int login_finish(struct hctx *h)
{
    struct login_state *st = h->state;
    if (!st->ok)
        return login_fail(h, st);
    if (!st->active)
        return fail(h, TS_E_FORBIDDEN, NULL, "Account is disabled");
    if (!st->confirmed)
        return fail(h, TS_E_FORBIDDEN, "email", "Email address not confirmed");
    throttle_clear(h->app->throttle, st->acct_key);
    struct issued t;
    int r = auth_session_start(h->app->auth, h->app->db, st->tenant_id, st->user_id, st->roles,
                               &t);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_LAST_LOGIN);
    sqlite3_bind_int64(q, 1, clock_now_ms());
    sqlite3_bind_text(q, 2, st->user_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    h->tenant_id = st->tenant_id;
    h->user_id = st->user_id;
    h->audit_target = st->user_id;
    struct token_user u = {st->user_id, st->tenant_id, st->email, st->name, st->roles};
    return identity_token_body(h, &t, &u);
}

static int login_throttled(struct hctx *h, struct login_state *st)
{
    int wait = throttle_check(h->app->throttle, st->acct_key);
    int wait_ip = throttle_check(h->app->throttle, st->ip_key);
    if (wait_ip > wait)
        wait = wait_ip;
    if (wait == 0)
        return 0;
    h->retry_after_s = wait;
    return fail(h, TS_E_RATE_LIMITED, NULL,
                arena_printf(h->arena, "Too many failed logins. Try again in %d seconds.", wait));
}

static int login_lookup(struct hctx *h, struct login_state *st, const char *email,
                        const char *domain)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_LOGIN_FIND);
    sqlite3_bind_text(q, 1, email, -1, SQLITE_STATIC);
    if (domain)
        sqlite3_bind_text(q, 2, domain, -1, SQLITE_STATIC);
    int rows = 0;
    while (sqlite3_step(q) == SQLITE_ROW && ++rows == 1) {
        st->found = true;
        snprintf(st->user_id, sizeof(st->user_id), "%s", col_text(q, 0));
        snprintf(st->tenant_id, sizeof(st->tenant_id), "%s", col_text(q, 1));
        snprintf(st->hash, sizeof(st->hash), "%s", col_text(q, 2));
        st->roles = auth_roles_from_json(col_text(q, 3));
        st->active = sqlite3_column_int(q, 4) && strcmp(col_text(q, 6), "active") == 0;
        st->confirmed = sqlite3_column_int(q, 5);
        snprintf(st->name, sizeof(st->name), "%s", col_text(q, 7));
        snprintf(st->email, sizeof(st->email), "%s", col_text(q, 8));
    }
    sqlite3_reset(q);
    if (rows > 1)
        return fail(h, TS_E_VALIDATION, "customer_domain",
                    "this email belongs to several tenants: give customer_domain");
    return 0;
}

static int login(struct hctx *h)
{
    const char *email, *password, *domain;
    int r = body_string(h, "email", 254, true, &email);
    if (r == 0)
        r = body_string(h, "password", 1024, true, &password);
    if (r == 0)
        r = body_string(h, "customer_domain", 253, false, &domain);
    if (r < 0)
        return r;
    if (!email_valid(email))
        return fail(h, TS_E_VALIDATION, "email", "email must be an email address");
    struct login_state *st = arena_calloc(h->arena, sizeof(*st));
    h->state = st;
    st->password = password;
    char lower[256];
    size_t n = strlen(email);
    for (size_t i = 0; i <= n; i++)
        lower[i] = (char)((email[i] >= 'A' && email[i] <= 'Z') ? email[i] + 32 : email[i]);
    snprintf(st->acct_key, sizeof(st->acct_key), "acct:%s|%s", lower, domain ? domain : "");
    char ip[64];
    conn_peer_address(h->req->conn, ip, sizeof(ip));
    snprintf(st->ip_key, sizeof(st->ip_key), "ip:%s", ip);
    r = login_throttled(h, st);
    if (r == 0)
        r = login_lookup(h, st, email, domain);
    if (r < 0)
        return r;
    return api_defer_to_pool(h, login_verify, login_finish);
}

/* ---- refresh, logout, me ---- */

static const char SQL_USER_BRIEF[] = "SELECT email, name FROM users WHERE id = ? AND tenant_id = ?";

static int refresh(struct hctx *h)
{
    const char *token;
    int r = body_string(h, "refresh_token", 256, true, &token);
    if (r < 0)
        return r;
    struct issued t;
    struct principal p;
    const char *reason = NULL;
    r = auth_refresh(h->app->auth, h->app->db, token, &t, &p, &reason);
    if (r < 0)
        return fail(h, r, r == TS_E_UNAUTHENTICATED ? "refresh_token" : NULL, reason);
    h->tenant_id = arena_strdup(h->arena, p.tenant_id);
    h->user_id = arena_strdup(h->arena, p.user_id);
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_USER_BRIEF);
    sqlite3_bind_text(q, 1, p.user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 2, p.tenant_id, -1, SQLITE_TRANSIENT);
    const char *email = "", *name = "";
    if (sqlite3_step(q) == SQLITE_ROW) {
        email = arena_strdup(h->arena, col_text(q, 0));
        name = arena_strdup(h->arena, col_text(q, 1));
    }
    sqlite3_reset(q);
    struct token_user u = {h->user_id, h->tenant_id, email, name, p.roles};
    return identity_token_body(h, &t, &u);
}

static int logout(struct hctx *h)
{
    int r = auth_session_revoke(h->app->db, h->who.session_id, "logout");
    if (r < 0)
        return r;
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "message", "Logged out successfully");
    return out_end(h, &w);
}

static const char SQL_ME[] =
    "SELECT id, email, name, roles, tenant_id, preferences FROM users WHERE id = ? AND tenant_id = ?";

static int learning_me(struct hctx *h)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_ME);
    sqlite3_bind_text(q, 1, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_reset(q);
        return TS_E_NOT_FOUND;
    }
    struct jw w;
    out_begin(h, &w);
    jw_kbool(&w, "success", true);
    jw_key(&w, "data");
    jw_obj_open(&w);
    jw_kstr(&w, "id", col_text(q, 0));
    jw_kstr(&w, "email", col_text(q, 1));
    jw_kstr(&w, "fullName", col_text(q, 2));
    jw_key(&w, "roles");
    roles_array(&w, auth_roles_from_json(col_text(q, 3)));
    jw_kstr(&w, "organizationId", col_text(q, 4));
    jw_key(&w, "preferences");
    identity_preferences(&w, col_text(q, 5));
    jw_obj_close(&w);
    sqlite3_reset(q);
    return out_end(h, &w);
}

static const struct route shared_routes[] = {
    {"POST", "/api/v1/auth/login", login, "public", "auth", RUN_LOOP, 0, RF_PUBLIC | RF_JSON_BODY},
    {"POST", "/api/v1/auth/refresh", refresh, "public", "auth", RUN_LOOP, 0,
     RF_PUBLIC | RF_JSON_BODY},
};
const struct route_table identity_shared_table = {SURF_SHARED, shared_routes,
                                                  sizeof(shared_routes) / sizeof(shared_routes[0])};

static const struct route learning_routes[] = {
    {"GET", "/api/v1/auth/me", learning_me, "session", "default", RUN_LOOP, 0, 0},
};
const struct route_table identity_learning_table = {
    SURF_LEARNING, learning_routes, sizeof(learning_routes) / sizeof(learning_routes[0])};

/* desk's logout lives with desk's other auth routes (account.c) but is defined here */
int identity_logout(struct hctx *h)
{
    return logout(h);
}
