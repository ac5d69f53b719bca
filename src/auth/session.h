/* Credentials: the JWT secret, access tokens, rotating refresh tokens with reuse detection,
 * API keys, and turning an Authorization header into a principal. Loop thread. */
#ifndef TS_SESSION_H
#define TS_SESSION_H
#include <stdbool.h>
#include <stddef.h>

#include "auth/jwt.h"
#include "auth/perms.h"
#include "store/db.h"

#define TOKEN_LEN 64            /* opaque tokens: prefix + 43 base64url chars + NUL fits */
#define TOKEN_HASH_LEN 65       /* BLAKE2b-256 hex + NUL */
#define REFRESH_TTL_S (30 * 86400)
#define JWT_LEEWAY_S 30

struct auth;

int auth_open(const char *data_dir, const char *secret_file, int access_ttl_s, struct auth **ret,
              char *err, size_t errlen);
struct auth *auth_free(struct auth *a);
int auth_access_ttl(const struct auth *a);
const unsigned char *auth_key(const struct auth *a);

/* "Bearer X" -> principal. 0, or TS_E_UNAUTHENTICATED with a reason (never which part of a
 * credential was wrong beyond "expired" / "revoked" / "invalid"). */
int auth_authenticate(struct auth *a, struct db *db, const char *authorization,
                      struct principal *ret, const char **ret_reason);

struct issued {
    char access[JWT_MAX_LEN];
    char refresh[TOKEN_LEN];
    char session_id[UUID_STR_LEN];
    int expires_in;
};

/* Starts a session for a user (writes in the tick's transaction) and issues both tokens. */
int auth_session_start(struct auth *a, struct db *db, const char *tenant_id, const char *user_id,
                       unsigned roles, struct issued *ret);
/* Rotates a refresh token: the presented one is spent and a new pair issued in the same
 * family. A spent token presented again revokes the whole family. 0 or TS_E_UNAUTHENTICATED
 * with a reason; ret_principal gets the user (for the response body). */
int auth_refresh(struct auth *a, struct db *db, const char *refresh_token, struct issued *ret,
                 struct principal *ret_principal, const char **ret_reason);
int auth_session_revoke(struct db *db, const char *session_id, const char *reason);
int auth_user_sessions_revoke(struct db *db, const char *user_id, const char *reason);

/* API keys: "sk_live_" / "sk_test_" + 40 random base62 chars; stored as a hash. */
#define API_KEY_LEN 64
int auth_api_key_new(bool live, char key[API_KEY_LEN], char prefix[24], char hash[TOKEN_HASH_LEN]);

/* Helpers shared with the one-time tokens of identity. */
void auth_token_new(const char *prefix, char out[TOKEN_LEN]);
void auth_token_hash(const char *token, char out[TOKEN_HASH_LEN]);
unsigned auth_roles_from_json(const char *json);
#endif
