/* libFuzzer target for the Authorization header: the input is the header's value, passed to
 * auth_authenticate against a real database (src/store) holding one tenant with a live user
 * session and an API key, a revoked session, a revoked key and a suspended tenant's user and
 * key. It parses "Bearer", tells API keys from JWTs, verifies JWTs (src/auth/jwt.c) and looks
 * the credential up. The only credentials that may pass are the live session's correctly
 * signed token and the live key, spelled exactly; each must give its own principal. */
#include <errno.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth/session.h"
#include "core/err.h"
#include "store/db.h"

#define T_LIVE "01900000-0000-7000-8000-000000000001"
#define T_SUSPENDED "01900000-0000-7000-8000-000000000002"
#define U_LIVE "01900000-0000-7000-8000-0000000000a1"
#define U_REVOKED "01900000-0000-7000-8000-0000000000a2"
#define U_SUSPENDED "01900000-0000-7000-8000-0000000000a3"
#define S_LIVE "01900000-0000-7000-8000-0000000000b1"
#define K_LIVE_ID "01900000-0000-7000-8000-0000000000c1"
#define KEY_LIVE "sk_live_Fz0123456789abcdefghijABCDEFGHIJklmnopqr"
#define KEY_REVOKED "sk_test_Fz0123456789abcdefghijABCDEFGHIJklmnopqr"
#define KEY_SUSPENDED "sk_live_Fz9876543210abcdefghijABCDEFGHIJklmnopqr"
/* hex of the 32-byte key "tessera-fuzz-jwt-key-32-bytes!!\0", the jwt target's key too */
#define SECRET_HEX "746573736572612d66757a7a2d6a77742d6b65792d33322d6279746573212100"

static char dir[] = "/tmp/tessera-fuzz-auth-XXXXXX";
static char path_db[64], path_secret[64];
static struct db *db;
static struct auth *auth;

static const char SEED_SQL[] =
    "INSERT INTO tenants(id, name, domain, status, created_at) VALUES"
    " ('" T_LIVE "', 'Live', 'live.test', 'active', 0),"
    " ('" T_SUSPENDED "', 'Gone', 'gone.test', 'suspended', 0);"
    "INSERT INTO users(tenant_id, id, email, name, password_hash, roles, created_at) VALUES"
    " ('" T_LIVE "', '" U_LIVE "', 'a@live.test', 'A', 'x', '[\"admin\"]', 0),"
    " ('" T_LIVE "', '" U_REVOKED "', 'b@live.test', 'B', 'x', '[\"viewer\"]', 0),"
    " ('" T_SUSPENDED "', '" U_SUSPENDED "', 'c@gone.test', 'C', 'x', '[\"admin\"]', 0);"
    "INSERT INTO auth_sessions(tenant_id, id, user_id, created_at, revoked_at) VALUES"
    " ('" T_LIVE "', '" S_LIVE "', '" U_LIVE "', 0, NULL),"
    " ('" T_LIVE "', '01900000-0000-7000-8000-0000000000b2', '" U_REVOKED "', 0, 1),"
    " ('" T_SUSPENDED "', '01900000-0000-7000-8000-0000000000b3', '" U_SUSPENDED "', 0, NULL);";

static const char KEY_SQL[] =
    "INSERT INTO api_keys(tenant_id, id, name, prefix, hash, permissions, status, created_at)"
    " VALUES (?1, ?2, 'k', substr(?3, 1, 14), ?4, '[\"read\",\"write\"]', ?5, 0)";

static void must(bool ok)
{
    if (!ok)
        abort();
}

static void key_add(sqlite3 *h, const char *tenant, const char *id, const char *key,
                    const char *status)
{
    char hash[TOKEN_HASH_LEN];
    auth_token_hash(key, hash);
    sqlite3_stmt *st;
    must(sqlite3_prepare_v2(h, KEY_SQL, -1, &st, NULL) == SQLITE_OK);
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, status, -1, SQLITE_STATIC);
    must(sqlite3_step(st) == SQLITE_DONE);
    sqlite3_finalize(st);
}

static void cleanup(void)
{
    auth = auth_free(auth);
    db = db_close(db);
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[80];
        snprintf(p, sizeof(p), "%s%s", path_db, suffix[i]);
        unlink(p);
    }
    unlink(path_secret);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char err[512] = "";
    must(sodium_init() >= 0 && mkdtemp(dir) != NULL);
    snprintf(path_db, sizeof(path_db), "%s/tessera.db", dir);
    snprintf(path_secret, sizeof(path_secret), "%s/jwt.secret", dir);
    FILE *f = fopen(path_secret, "w");
    must(f != NULL && fputs(SECRET_HEX "\n", f) >= 0 && fclose(f) == 0);
    atexit(cleanup);
    if (db_open(path_db, false, 250, &db, err, sizeof(err)) < 0 ||
        auth_open(dir, NULL, 3600, &auth, err, sizeof(err)) < 0) {
        fprintf(stderr, "fuzz_auth: %s\n", err);
        abort();
    }
    sqlite3 *h = db_handle(db);
    must(sqlite3_exec(h, SEED_SQL, NULL, NULL, NULL) == SQLITE_OK);
    key_add(h, T_LIVE, K_LIVE_ID, KEY_LIVE, "active");
    key_add(h, T_LIVE, "01900000-0000-7000-8000-0000000000c2", KEY_REVOKED, "revoked");
    key_add(h, T_SUSPENDED, "01900000-0000-7000-8000-0000000000c3", KEY_SUSPENDED, "active");
    return 0;
}

/* The credential after "Bearer" and its spaces, as auth_authenticate reads it; NULL if none. */
static const char *credential(const char *v)
{
    if (strncasecmp(v, "Bearer ", 7) != 0)
        return NULL;
    v += 7;
    while (*v == ' ')
        v++;
    return v;
}

/* A JWT's MAC is HMAC-SHA-256 over its first two parts, in canonical base64url. */
static bool signed_by_key(const char *token)
{
    const char *dot = strrchr(token, '.');
    if (dot == NULL)
        return false;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256(mac, (const unsigned char *)token, (size_t)(dot - token),
                           auth_key(auth));
    char want[64];
    sodium_bin2base64(want, sizeof(want), mac, sizeof(mac),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return strcmp(dot + 1, want) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *v = malloc(size + 1);
    memcpy(v, data, size);
    v[size] = '\0';
    struct principal p;
    memset(&p, 0xa5, sizeof(p));
    const char *reason = NULL;
    int r = auth_authenticate(auth, db, v, &p, &reason);
    must(db_tick_commit(db) == 0);
    const char *cred = credential(v);
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "fuzz_auth: %s -> %d kind %d (%s)\n", v, r, r ? -1 : (int)p.kind,
                r ? reason : "accepted");
    if (r != 0) {
        must(r == TS_E_UNAUTHENTICATED && reason != NULL && reason[0]);
    } else if (p.kind == PRINCIPAL_API_KEY) {
        must(cred && strcmp(cred, KEY_LIVE) == 0);
        must(strcmp(p.tenant_id, T_LIVE) == 0 && strcmp(p.key_id, K_LIVE_ID) == 0);
        must(p.scopes == (SCOPE_READ | SCOPE_WRITE));
    } else {
        must(p.kind == PRINCIPAL_USER && cred && signed_by_key(cred));
        must(strcmp(p.tenant_id, T_LIVE) == 0 && strcmp(p.user_id, U_LIVE) == 0 &&
             strcmp(p.session_id, S_LIVE) == 0 && p.roles == ROLE_ADMIN);
    }
    free(v);
    return 0;
}
