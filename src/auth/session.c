/* Credentials: JWT secret file, access and refresh tokens, API keys, and authentication. */
#include "auth/session.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"

/* Access tokens verified lately, by the token text: a hit skips the HMAC, the base64 and the
 * claims parse (a tenth of a one-record write's loop time), never the database check that
 * makes a revocation or a role change apply at once, nor the expiry check. Loop thread only,
 * as is every auth_authenticate call (dispatch). Longer tokens are verified every time. */
#define TOKEN_CACHE_SLOTS 512
#define TOKEN_CACHE_LEN 640
struct token_slot {
    char tok[TOKEN_CACHE_LEN];
    struct jwt_claims c;
};

struct auth {
    unsigned char key[JWT_KEY_LEN];
    int access_ttl_s;
    struct token_slot *tokens;    /* TOKEN_CACHE_SLOTS, allocated on first use */
};

static const char SQL_USER_CHECK[] =
    "SELECT u.roles, u.active, t.status, s.id, s.revoked_at FROM users u "
    "JOIN tenants t ON t.id = u.tenant_id LEFT JOIN auth_sessions s ON s.id = ?3 AND s.user_id = u.id "
    "WHERE u.id = ?1 AND u.tenant_id = ?2";
static const char SQL_KEY_CHECK[] =
    "SELECT k.tenant_id, k.id, k.permissions, k.status, t.status, coalesce(k.last_used_at, 0) "
    "FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.hash = ?";
static const char SQL_KEY_USED[] = "UPDATE api_keys SET last_used_at = ? WHERE id = ?";
static const char SQL_SESSION_NEW[] =
    "INSERT INTO auth_sessions(tenant_id, id, user_id, created_at) VALUES(?, ?, ?, ?)";
static const char SQL_REFRESH_NEW[] =
    "INSERT INTO refresh_tokens(tenant_id, hash, session_id, user_id, created_at, expires_at) "
    "VALUES(?, ?, ?, ?, ?, ?)";
static const char SQL_REFRESH_FIND[] =
    "SELECT r.tenant_id, r.session_id, r.user_id, r.expires_at, r.used_at, s.revoked_at, "
    "u.roles, u.active, t.status FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id "
    "JOIN users u ON u.id = r.user_id JOIN tenants t ON t.id = r.tenant_id WHERE r.hash = ?";
static const char SQL_REFRESH_SPEND[] = "UPDATE refresh_tokens SET used_at = ? WHERE hash = ?";
static const char SQL_SESSION_REVOKE[] =
    "UPDATE auth_sessions SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL";
static const char SQL_USER_SESSIONS_REVOKE[] =
    "UPDATE auth_sessions SET revoked_at = ?, revoked_reason = ? "
    "WHERE user_id = ? AND revoked_at IS NULL";

/* ---- the secret ---- */

static int secret_read(const char *path, unsigned char key[JWT_KEY_LEN], char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -ENOENT;
    char hex[2 * JWT_KEY_LEN + 2] = "";
    size_t n = fread(hex, 1, sizeof(hex) - 1, f);
    fclose(f);
    while (n > 0 && (hex[n - 1] == '\n' || hex[n - 1] == '\r'))
        hex[--n] = '\0';
    size_t got;
    if (n != 2 * JWT_KEY_LEN ||
        sodium_hex2bin(key, JWT_KEY_LEN, hex, n, NULL, &got, NULL) != 0 || got != JWT_KEY_LEN) {
        snprintf(err, errlen, "JWT secret file '%s' must hold %d hex characters", path,
                 2 * JWT_KEY_LEN);
        return -EINVAL;
    }
    return 0;
}

static int secret_create(const char *path, unsigned char key[JWT_KEY_LEN], char *err,
                         size_t errlen)
{
    randombytes_buf(key, JWT_KEY_LEN);
    char hex[2 * JWT_KEY_LEN + 1];
    sodium_bin2hex(hex, sizeof(hex), key, JWT_KEY_LEN);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create JWT secret file '%s': %s", path, strerror(errno));
        return -EINVAL;
    }
    ssize_t w = write(fd, hex, 2 * JWT_KEY_LEN);
    w += write(fd, "\n", 1);
    if (fsync(fd) < 0 || close(fd) < 0 || w != 2 * JWT_KEY_LEN + 1) {
        snprintf(err, errlen, "cannot write JWT secret file '%s'", path);
        return -EINVAL;
    }
    return 0;
}

int auth_open(const char *data_dir, const char *secret_file, int access_ttl_s, struct auth **ret,
              char *err, size_t errlen)
{
    struct auth *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    a->access_ttl_s = access_ttl_s;
    char path[4096];
    if (secret_file && secret_file[0])
        snprintf(path, sizeof(path), "%s", secret_file);
    else
        snprintf(path, sizeof(path), "%s/jwt.secret", data_dir);
    int r = secret_read(path, a->key, err, errlen);
    if (r == -ENOENT)
        r = secret_create(path, a->key, err, errlen);
    if (r < 0) {
        auth_free(a);
        return r;
    }
    *ret = a;
    return 0;
}

struct auth *auth_free(struct auth *a)
{
    if (a) {
        sodium_memzero(a->key, sizeof(a->key));
        free(a->tokens);
        free(a);
    }
    return NULL;
}

int auth_access_ttl(const struct auth *a)
{
    return a->access_ttl_s;
}

const unsigned char *auth_key(const struct auth *a)
{
    return a->key;
}

/* ---- tokens ---- */

void auth_token_new(const char *prefix, char out[TOKEN_LEN])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof(raw));
    size_t p = strlen(prefix);
    memcpy(out, prefix, p);
    sodium_bin2base64(out + p, TOKEN_LEN - p, raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

void auth_token_hash(const char *token, char out[TOKEN_HASH_LEN])
{
    unsigned char h[32];
    crypto_generichash(h, sizeof(h), (const unsigned char *)token, strlen(token), NULL, 0);
    sodium_bin2hex(out, TOKEN_HASH_LEN, h, sizeof(h));
}

unsigned auth_roles_from_json(const char *json)
{
    unsigned roles = 0;
    json_t *a = json_loads(json ? json : "[]", 0, NULL);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        int bit = json_is_string(v) ? role_bit(json_string_value(v)) : -1;
        if (bit >= 0)
            roles |= 1u << bit;
    }
    json_decref(a);
    return roles;
}

static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_err(rc);
}

static int access_issue(struct auth *a, const char *tenant_id, const char *user_id,
                        const char *session_id, unsigned roles, struct issued *ret)
{
    struct jwt_claims c;
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "%s", user_id);
    snprintf(c.tid, sizeof(c.tid), "%s", tenant_id);
    snprintf(c.sid, sizeof(c.sid), "%s", session_id);
    id_uuid7(c.jti);
    for (int i = 0; role_names[i] && c.nroles < JWT_MAX_ROLES; i++)
        if (roles & (1u << i))
            snprintf(c.roles[c.nroles++], sizeof(c.roles[0]), "%s", role_names[i]);
    c.iat = clock_now_ms() / 1000;
    c.exp = c.iat + a->access_ttl_s;
    ret->expires_in = a->access_ttl_s;
    return jwt_sign(a->key, &c, ret->access, sizeof(ret->access)) < 0 ? TS_E_INTERNAL : 0;
}

static int refresh_issue(struct db *db, const char *tenant_id, const char *user_id,
                         const char *session_id, struct issued *ret)
{
    char hash[TOKEN_HASH_LEN];
    auth_token_new("rt_", ret->refresh);
    auth_token_hash(ret->refresh, hash);
    int64_t now = clock_now_ms();
    sqlite3_stmt *st = db_stmt(db, SQL_REFRESH_NEW);
    sqlite3_bind_text(st, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, session_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, user_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now);
    sqlite3_bind_int64(st, 6, now + (int64_t)REFRESH_TTL_S * 1000);
    return step_done(st);
}

int auth_session_start(struct auth *a, struct db *db, const char *tenant_id, const char *user_id,
                       unsigned roles, struct issued *ret)
{
    int r = db_write_begin(db);
    if (r < 0)
        return r;
    id_uuid7(ret->session_id);
    sqlite3_stmt *st = db_stmt(db, SQL_SESSION_NEW);
    sqlite3_bind_text(st, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ret->session_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, user_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, clock_now_ms());
    r = step_done(st);
    if (r == 0)
        r = refresh_issue(db, tenant_id, user_id, ret->session_id, ret);
    if (r == 0)
        r = access_issue(a, tenant_id, user_id, ret->session_id, roles, ret);
    return r;
}

int auth_session_revoke(struct db *db, const char *session_id, const char *reason)
{
    int r = db_write_begin(db);
    if (r < 0)
        return r;
    sqlite3_stmt *st = db_stmt(db, SQL_SESSION_REVOKE);
    sqlite3_bind_int64(st, 1, clock_now_ms());
    sqlite3_bind_text(st, 2, reason, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, session_id, -1, SQLITE_STATIC);
    return step_done(st);
}

int auth_user_sessions_revoke(struct db *db, const char *user_id, const char *reason)
{
    int r = db_write_begin(db);
    if (r < 0)
        return r;
    sqlite3_stmt *st = db_stmt(db, SQL_USER_SESSIONS_REVOKE);
    sqlite3_bind_int64(st, 1, clock_now_ms());
    sqlite3_bind_text(st, 2, reason, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, user_id, -1, SQLITE_STATIC);
    return step_done(st);
}

static const char *col(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

int auth_refresh(struct auth *a, struct db *db, const char *refresh_token, struct issued *ret,
                 struct principal *ret_principal, const char **ret_reason)
{
    char hash[TOKEN_HASH_LEN];
    auth_token_hash(refresh_token, hash);
    sqlite3_stmt *st = db_stmt(db, SQL_REFRESH_FIND);
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_ROW) {
        *ret_reason = "refresh token is invalid";
        return TS_E_UNAUTHENTICATED;
    }
    struct principal p = {.kind = PRINCIPAL_USER};
    snprintf(p.tenant_id, sizeof(p.tenant_id), "%s", col(st, 0));
    snprintf(p.session_id, sizeof(p.session_id), "%s", col(st, 1));
    snprintf(p.user_id, sizeof(p.user_id), "%s", col(st, 2));
    int64_t expires = sqlite3_column_int64(st, 3);
    bool spent = sqlite3_column_type(st, 4) != SQLITE_NULL;
    bool revoked = sqlite3_column_type(st, 5) != SQLITE_NULL;
    p.roles = auth_roles_from_json(col(st, 6));
    bool active = sqlite3_column_int(st, 7) && strcmp(col(st, 8), "active") == 0;
    sqlite3_reset(st);
    if (spent && !revoked) {
        /* a spent token came back: someone holds a copy. End the whole family. */
        log_msg(LOG_WARN, "refresh token reuse in session %s: family revoked", p.session_id);
        auth_session_revoke(db, p.session_id, "refresh token reuse");
        db_request_keep(db); /* the 401 must not roll the revocation back */
    }
    if (spent || revoked) {
        *ret_reason = "refresh token has been revoked";
        return TS_E_UNAUTHENTICATED;
    }
    if (expires < clock_now_ms() || !active) {
        *ret_reason = !active ? "account is not active" : "refresh token has expired";
        return TS_E_UNAUTHENTICATED;
    }
    int r = db_write_begin(db);
    if (r < 0)
        return r;
    st = db_stmt(db, SQL_REFRESH_SPEND);
    sqlite3_bind_int64(st, 1, clock_now_ms());
    sqlite3_bind_text(st, 2, hash, -1, SQLITE_TRANSIENT);
    r = step_done(st);
    memcpy(ret->session_id, p.session_id, UUID_STR_LEN);
    if (r == 0)
        r = refresh_issue(db, p.tenant_id, p.user_id, p.session_id, ret);
    if (r == 0)
        r = access_issue(a, p.tenant_id, p.user_id, p.session_id, p.roles, ret);
    if (r == 0)
        *ret_principal = p;
    return r;
}

/* ---- API keys ---- */

int auth_api_key_new(bool live, char key[API_KEY_LEN], char prefix[24], char hash[TOKEN_HASH_LEN])
{
    static const char alphabet[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    int n = snprintf(key, API_KEY_LEN, "%s", live ? "sk_live_" : "sk_test_");
    for (int i = 0; i < 40; i++)
        key[n++] = alphabet[randombytes_uniform(62)];
    key[n] = '\0';
    snprintf(prefix, 24, "%.14s", key); /* "sk_live_" + 6: enough to tell keys apart */
    auth_token_hash(key, hash);
    return 0;
}

static unsigned scope_bit(const char *p, size_t n)
{
    if (n == 4 && memcmp(p, "read", 4) == 0)
        return SCOPE_READ;
    if (n == 5 && memcmp(p, "write", 5) == 0)
        return SCOPE_WRITE;
    if (n == 8 && memcmp(p, "internal", 8) == 0)
        return SCOPE_INTERNAL;
    return 0;
}

/* The scopes of a stored permissions array (["read","write"], written by us): its strings
 * read in place, as this runs for every API-key request; anything escaped goes to jansson. */
static unsigned scopes_from_json(const char *json)
{
    unsigned s = 0;
    if (strchr(json, '\\') == NULL) {
        for (const char *p = strchr(json, '"'); p; p = strchr(p, '"')) {
            const char *e = strchr(p + 1, '"');
            if (e == NULL)
                break;
            s |= scope_bit(p + 1, (size_t)(e - p - 1));
            p = e + 1;
        }
        return s;
    }
    json_t *a = json_loads(json, 0, NULL);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        const char *p = json_string_value(v);
        if (p)
            s |= scope_bit(p, strlen(p));
    }
    json_decref(a);
    return s;
}

static int authenticate_key(struct db *db, const char *key, struct principal *ret,
                            const char **ret_reason)
{
    char hash[TOKEN_HASH_LEN];
    auth_token_hash(key, hash);
    sqlite3_stmt *st = db_stmt(db, SQL_KEY_CHECK);
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_ROW) {
        *ret_reason = "API key is invalid";
        return TS_E_UNAUTHENTICATED;
    }
    struct principal p = {.kind = PRINCIPAL_API_KEY};
    snprintf(p.tenant_id, sizeof(p.tenant_id), "%s", col(st, 0));
    snprintf(p.key_id, sizeof(p.key_id), "%s", col(st, 1));
    p.scopes = scopes_from_json(col(st, 2));
    bool ok = strcmp(col(st, 3), "active") == 0 && strcmp(col(st, 4), "active") == 0;
    int64_t last = sqlite3_column_int64(st, 5);
    sqlite3_reset(st);
    if (!ok) {
        *ret_reason = "API key has been revoked";
        return TS_E_UNAUTHENTICATED;
    }
    int64_t now = clock_now_ms();
    if (now - last > 60000 && db_write_begin(db) == 0) { /* at most one write a minute */
        st = db_stmt(db, SQL_KEY_USED);
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_text(st, 2, p.key_id, -1, SQLITE_STATIC);
        step_done(st);
    }
    *ret = p;
    return 0;
}

static struct token_slot *token_slot(struct auth *a, const char *token, size_t len)
{
    if (len >= TOKEN_CACHE_LEN)
        return NULL;
    if (a->tokens == NULL && (a->tokens = calloc(TOKEN_CACHE_SLOTS, sizeof *a->tokens)) == NULL)
        return NULL;
    uint64_t h = 1469598103934665603ull; /* FNV-1a over the signature, the token's random part */
    for (const char *p = token + (len > 43 ? len - 43 : 0); *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return &a->tokens[h % TOKEN_CACHE_SLOTS];
}

/* jwt_verify, through the cache of verified tokens. */
static int token_verify(struct auth *a, const char *token, struct jwt_claims *c)
{
    int64_t now = clock_now_ms() / 1000;
    size_t len = strnlen(token, TOKEN_CACHE_LEN);
    struct token_slot *s = token_slot(a, token, len);
    if (s && memcmp(s->tok, token, len + 1) == 0 && s->c.exp >= now - JWT_LEEWAY_S &&
        s->c.iat <= now + JWT_LEEWAY_S) {
        *c = s->c;
        return 0;
    }
    int r = jwt_verify(a->key, token, now, JWT_LEEWAY_S, c);
    if (r == 0 && s) {
        memcpy(s->tok, token, len + 1);
        s->c = *c;
    }
    return r;
}

static int authenticate_jwt(struct auth *a, struct db *db, const char *token,
                            struct principal *ret, const char **ret_reason)
{
    struct jwt_claims c;
    int r = token_verify(a, token, &c);
    if (r < 0) {
        *ret_reason = r == -ETIME ? "token has expired" : "token is invalid";
        return TS_E_UNAUTHENTICATED;
    }
    sqlite3_stmt *st = db_stmt(db, SQL_USER_CHECK);
    sqlite3_bind_text(st, 1, c.sub, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, c.tid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, c.sid, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        *ret_reason = "token is invalid";
        return TS_E_UNAUTHENTICATED;
    }
    struct principal p = {.kind = PRINCIPAL_USER};
    p.roles = auth_roles_from_json(col(st, 0)); /* current roles: a change applies at once */
    bool active = sqlite3_column_int(st, 1) && strcmp(col(st, 2), "active") == 0;
    bool session_live = sqlite3_column_type(st, 3) != SQLITE_NULL &&
                        sqlite3_column_type(st, 4) == SQLITE_NULL;
    sqlite3_reset(st);
    if (!active || !session_live) {
        *ret_reason = !active ? "account is not active" : "token has been revoked";
        return TS_E_UNAUTHENTICATED;
    }
    memcpy(p.tenant_id, c.tid, UUID_STR_LEN);
    memcpy(p.user_id, c.sub, UUID_STR_LEN);
    memcpy(p.session_id, c.sid, UUID_STR_LEN);
    *ret = p;
    return 0;
}

int auth_authenticate(struct auth *a, struct db *db, const char *authorization,
                      struct principal *ret, const char **ret_reason)
{
    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0) {
        *ret_reason = "No valid credential provided";
        return TS_E_UNAUTHENTICATED;
    }
    const char *cred = authorization + 7;
    while (*cred == ' ')
        cred++;
    if (strncmp(cred, "sk_live_", 8) == 0 || strncmp(cred, "sk_test_", 8) == 0)
        return authenticate_key(db, cred, ret, ret_reason);
    return authenticate_jwt(a, db, cred, ret, ret_reason);
}
