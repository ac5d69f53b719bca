/* desk's account routes: register, confirm-email, reset-password (+ the confirm step Tessera
 * adds), logout. One-time tokens are single-use, hashed at rest and expire. */
#include <stdio.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "auth/identity.h"
#include "core/clock.h"
#include "engines/mail.h"
#include "store/db.h"
#include "surfaces/identity/identity.h"

#define CONFIRM_TTL_MS (72LL * 3600 * 1000)
#define RESET_TTL_MS (3600LL * 1000)

static const char SQL_TENANT_BY_DOMAIN[] =
    "SELECT id, allow_registration, default_role, status FROM tenants WHERE domain = ?";
static const char SQL_TENANT_DEFAULT[] =
    "SELECT id, allow_registration, default_role, status FROM tenants ORDER BY created_at, id LIMIT 1";
static const char SQL_EMAIL_TAKEN[] = "SELECT 1 FROM users WHERE tenant_id = ? AND email = ?";
static const char SQL_USER_INSERT[] =
    "INSERT INTO users(tenant_id, id, email, name, password_hash, roles, email_confirmed, "
    "created_at) VALUES(?,?,?,?,?,?,0,?)";
static const char SQL_TOKEN_INSERT[] =
    "INSERT INTO auth_tokens(tenant_id, hash, kind, user_id, created_at, expires_at) "
    "VALUES(?,?,?,?,?,?)";
static const char SQL_TOKEN_FIND[] =
    "SELECT tenant_id, user_id, expires_at, used_at FROM auth_tokens WHERE hash = ? AND kind = ?";
static const char SQL_TOKEN_USE[] =
    "UPDATE auth_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL";
static const char SQL_CONFIRM[] = "UPDATE users SET email_confirmed = 1 WHERE id = ? AND tenant_id = ?";
static const char SQL_RESET_FIND[] =
    "SELECT u.id, u.tenant_id, u.email FROM users u JOIN tenants t ON t.id = u.tenant_id "
    "WHERE u.email = ?1 AND (?2 IS NULL OR t.domain = ?2) AND u.active = 1";
static const char SQL_PASSWORD_SET[] =
    "UPDATE users SET password_hash = ? WHERE id = ? AND tenant_id = ?";

static int password_check(struct hctx *h, const char *field, const char *pw)
{
    int min = h->app->cfg->password_min_length;
    if ((int)strlen(pw) < min)
        return fail(h, TS_E_VALIDATION, field,
                    arena_printf(h->arena, "%s must be at least %d characters", field, min));
    return 0;
}

/* Creates a one-time token row and returns the token (only its hash is stored). */
static int onetime_token(struct hctx *h, const char *kind, const char *tenant_id,
                         const char *user_id, int64_t ttl_ms, char token[TOKEN_LEN])
{
    char hash[TOKEN_HASH_LEN];
    auth_token_new(strcmp(kind, "confirm_email") == 0 ? "ce_" : "pr_", token);
    auth_token_hash(token, hash);
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    int64_t now = clock_now_ms();
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_TOKEN_INSERT);
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, user_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 5, now);
    sqlite3_bind_int64(q, 6, now + ttl_ms);
    return sqlite3_step(q) == SQLITE_DONE ? 0 : TS_E_INTERNAL;
}

/* Spends a one-time token: 0 with the ids, or TS_E_VALIDATION naming `field`. */
static int onetime_spend(struct hctx *h, const char *kind, const char *token, const char *field,
                         char tenant_id[UUID_STR_LEN], char user_id[UUID_STR_LEN])
{
    char hash[TOKEN_HASH_LEN];
    auth_token_hash(token, hash);
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_TOKEN_FIND);
    sqlite3_bind_text(q, 1, hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 2, kind, -1, SQLITE_STATIC);
    bool ok = false;
    if (sqlite3_step(q) == SQLITE_ROW) {
        snprintf(tenant_id, UUID_STR_LEN, "%s", col_text(q, 0));
        snprintf(user_id, UUID_STR_LEN, "%s", col_text(q, 1));
        ok = sqlite3_column_int64(q, 2) > clock_now_ms() && sqlite3_column_type(q, 3) == SQLITE_NULL;
    }
    sqlite3_reset(q);
    if (!ok)
        return fail(h, TS_E_VALIDATION, field, "token is invalid, used or expired");
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    q = db_stmt(h->app->db, SQL_TOKEN_USE);
    sqlite3_bind_int64(q, 1, clock_now_ms());
    sqlite3_bind_text(q, 2, hash, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(q) != SQLITE_DONE || sqlite3_changes(db_handle(h->app->db)) != 1)
        return fail(h, TS_E_VALIDATION, field, "token is invalid, used or expired");
    return 0;
}

static const char *public_url(struct hctx *h)
{
    return h->app->public_url;
}

static int mail_link(struct hctx *h, const char *tenant_id, const char *to, const char *subject,
                     const char *intro, const char *path, const char *token)
{
    const char *body = arena_printf(h->arena,
                                    "%s\n\n%s%s?token=%s\n\nIf you did not ask for this, ignore "
                                    "this message.\n",
                                    intro, public_url(h), path, token);
    return mail_enqueue(h->app->mailer, tenant_id, to, subject, body) < 0 ? TS_E_INTERNAL : 0;
}

/* ---- register ---- */

struct register_state {
    char tenant_id[UUID_STR_LEN], role[32];
    const char *email, *password, *name;
    char hash[IDENTITY_HASH_LEN];
    int hash_rc;
};

static int register_tenant(struct hctx *h, struct register_state *st, const char *domain)
{
    sqlite3_stmt *q = db_stmt(h->app->db, domain ? SQL_TENANT_BY_DOMAIN : SQL_TENANT_DEFAULT);
    if (h->app->cfg->default_tenant && !domain) {
        q = db_stmt(h->app->db, SQL_TENANT_BY_DOMAIN);
        domain = h->app->cfg->default_tenant;
    }
    if (domain)
        sqlite3_bind_text(q, 1, domain, -1, SQLITE_STATIC);
    int found = sqlite3_step(q) == SQLITE_ROW;
    bool open = found && sqlite3_column_int(q, 1) && !strcmp(col_text(q, 3), "active");
    if (found) {
        snprintf(st->tenant_id, sizeof(st->tenant_id), "%s", col_text(q, 0));
        snprintf(st->role, sizeof(st->role), "%s", col_text(q, 2));
    }
    sqlite3_reset(q);
    if (!found)
        return fail(h, TS_E_VALIDATION, "customer_domain", "no such tenant");
    if (!open)
        return fail(h, TS_E_FORBIDDEN, "customer_domain", "this tenant does not allow registration");
    return 0;
}

static void register_hash(struct hctx *h)
{
    struct register_state *st = h->state;
    st->hash_rc = identity_password_hash(st->password, st->hash);
}

static int register_insert(struct hctx *h, struct register_state *st, char id[UUID_STR_LEN])
{
    char roles[64];
    snprintf(roles, sizeof(roles), "[\"%s\"]", st->role);
    id_uuid7(id);
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_USER_INSERT);
    sqlite3_bind_text(q, 1, st->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, st->email, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, st->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, st->hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, roles, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 7, clock_now_ms());
    int rc = sqlite3_step(q);
    if ((rc & 0xFF) == SQLITE_CONSTRAINT)
        return fail(h, TS_E_CONFLICT, "email", "an account with this email already exists");
    return rc == SQLITE_DONE ? 0 : TS_E_INTERNAL;
}

static int register_finish(struct hctx *h)
{
    struct register_state *st = h->state;
    if (st->hash_rc < 0)
        return TS_E_INTERNAL;
    char id[UUID_STR_LEN], token[TOKEN_LEN];
    int r = register_insert(h, st, id);
    if (r == 0)
        r = onetime_token(h, "confirm_email", st->tenant_id, id, CONFIRM_TTL_MS, token);
    if (r == 0)
        r = mail_link(h, st->tenant_id, st->email, "Confirm your email address",
                      "Welcome to Tessera. Confirm your email address by opening this link:",
                      "/confirm-email", token);
    if (r < 0)
        return r;
    h->tenant_id = arena_strdup(h->arena, st->tenant_id);
    h->user_id = arena_strdup(h->arena, id);
    h->audit_target = h->user_id;
    h->status = 201;
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "user_id", id);
    jw_kstr(&w, "email", st->email);
    jw_kbool(&w, "confirmation_sent", true);
    return out_end(h, &w);
}

static int email_taken(struct hctx *h, const char *tenant_id, const char *email)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_EMAIL_TAKEN);
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, email, -1, SQLITE_STATIC);
    int taken = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_reset(q);
    return taken ? fail(h, TS_E_CONFLICT, "email", "an account with this email already exists")
                 : 0;
}

static int register_user(struct hctx *h)
{
    struct register_state *st = arena_calloc(h->arena, sizeof(*st));
    h->state = st;
    const char *domain;
    int r = body_string(h, "email", 254, true, &st->email);
    if (r == 0)
        r = body_string(h, "password", 1024, true, &st->password);
    if (r == 0)
        r = body_string(h, "full_name", 200, true, &st->name);
    if (r == 0)
        r = body_string(h, "customer_domain", 253, false, &domain);
    if (r == 0 && !email_valid(st->email))
        r = fail(h, TS_E_VALIDATION, "email", "email must be an email address");
    if (r == 0)
        r = password_check(h, "password", st->password);
    if (r == 0)
        r = register_tenant(h, st, domain);
    if (r == 0)
        r = email_taken(h, st->tenant_id, st->email);
    if (r < 0)
        return r;
    return api_defer_to_pool(h, register_hash, register_finish);
}

/* ---- confirm-email ---- */

static int message(struct hctx *h, const char *text)
{
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "message", text);
    return out_end(h, &w);
}

static int confirm_email(struct hctx *h)
{
    const char *token;
    char tenant[UUID_STR_LEN], user[UUID_STR_LEN];
    int r = body_string(h, "token", 256, true, &token);
    if (r == 0)
        r = onetime_spend(h, "confirm_email", token, "token", tenant, user);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_CONFIRM);
    sqlite3_bind_text(q, 1, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 2, tenant, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    h->tenant_id = arena_strdup(h->arena, tenant);
    h->audit_target = arena_strdup(h->arena, user);
    return message(h, "Email confirmed successfully");
}

/* ---- reset-password ---- */

/* Always the same answer, whether or not the email has an account. */
static int reset_password(struct hctx *h)
{
    const char *email, *domain;
    int r = body_string(h, "email", 254, true, &email);
    if (r == 0)
        r = body_string(h, "customer_domain", 253, false, &domain);
    if (r == 0 && !email_valid(email))
        r = fail(h, TS_E_VALIDATION, "email", "email must be an email address");
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_RESET_FIND);
    sqlite3_bind_text(q, 1, email, -1, SQLITE_STATIC);
    if (domain)
        sqlite3_bind_text(q, 2, domain, -1, SQLITE_STATIC);
    struct { char user[UUID_STR_LEN], tenant[UUID_STR_LEN], email[256]; } found[4];
    int n = 0;
    while (n < 4 && sqlite3_step(q) == SQLITE_ROW) {
        snprintf(found[n].user, UUID_STR_LEN, "%s", col_text(q, 0));
        snprintf(found[n].tenant, UUID_STR_LEN, "%s", col_text(q, 1));
        snprintf(found[n].email, sizeof(found[n].email), "%s", col_text(q, 2));
        n++;
    }
    sqlite3_reset(q);
    for (int i = 0; i < n && r == 0; i++) {
        char token[TOKEN_LEN];
        r = onetime_token(h, "reset_password", found[i].tenant, found[i].user, RESET_TTL_MS, token);
        if (r == 0)
            r = mail_link(h, found[i].tenant, found[i].email, "Reset your password",
                          "Someone asked to reset the password of your Tessera account. Choose "
                          "a new password here (the link works once, for one hour):",
                          "/reset-password", token);
    }
    if (r < 0)
        return r;
    if (n == 1) {
        h->tenant_id = arena_strdup(h->arena, found[0].tenant);
        h->audit_target = arena_strdup(h->arena, found[0].user);
    }
    return message(h, "Password reset email sent");
}

struct reset_state {
    const char *token, *password;
    char hash[IDENTITY_HASH_LEN];
    int hash_rc;
};

static void reset_hash(struct hctx *h)
{
    struct reset_state *st = h->state;
    st->hash_rc = identity_password_hash(st->password, st->hash);
}

static int reset_finish(struct hctx *h)
{
    struct reset_state *st = h->state;
    char tenant[UUID_STR_LEN], user[UUID_STR_LEN];
    if (st->hash_rc < 0)
        return TS_E_INTERNAL;
    int r = onetime_spend(h, "reset_password", st->token, "token", tenant, user);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_PASSWORD_SET);
    sqlite3_bind_text(q, 1, st->hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 3, tenant, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    r = auth_user_sessions_revoke(h->app->db, user, "password reset");
    if (r < 0)
        return r;
    h->tenant_id = arena_strdup(h->arena, tenant);
    h->audit_target = arena_strdup(h->arena, user);
    return message(h, "Password has been reset");
}

static int reset_confirm(struct hctx *h)
{
    struct reset_state *st = arena_calloc(h->arena, sizeof(*st));
    h->state = st;
    int r = body_string(h, "token", 256, true, &st->token);
    if (r == 0)
        r = body_string(h, "new_password", 1024, true, &st->password);
    if (r == 0)
        r = password_check(h, "new_password", st->password);
    if (r < 0)
        return r;
    return api_defer_to_pool(h, reset_hash, reset_finish);
}

static const struct route desk_auth_routes[] = {
    {"POST", "/api/v1/auth/register", register_user, "public", "auth", RUN_LOOP, 0,
     RF_PUBLIC | RF_JSON_BODY},
    {"POST", "/api/v1/auth/logout", identity_logout, "session", "auth", RUN_LOOP, 0, 0},
    {"POST", "/api/v1/auth/confirm-email", confirm_email, "public", "auth", RUN_LOOP, 0,
     RF_PUBLIC | RF_JSON_BODY},
    {"POST", "/api/v1/auth/reset-password", reset_password, "public", "auth", RUN_LOOP, 0,
     RF_PUBLIC | RF_JSON_BODY},
    {"POST", "/api/v1/auth/reset-password/confirm", reset_confirm, "public", "auth", RUN_LOOP, 0,
     RF_PUBLIC | RF_JSON_BODY},
};

const struct route_table identity_desk_auth_table = {
    SURF_DESK, desk_auth_routes, sizeof(desk_auth_routes) / sizeof(desk_auth_routes[0])};
