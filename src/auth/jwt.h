/* JWT HS256 access tokens: libsodium HMAC-SHA-256, base64url, only "alg":"HS256" accepted. */
#ifndef TS_JWT_H
#define TS_JWT_H
#include <stddef.h>
#include <stdint.h>

#include "core/ids.h"

#define JWT_KEY_LEN 32
#define JWT_MAX_LEN 2048
#define JWT_MAX_ROLES 16

struct jwt_claims {
    char sub[UUID_STR_LEN];      /* user id */
    char tid[UUID_STR_LEN];      /* tenant id */
    char sid[UUID_STR_LEN];      /* session (refresh-token family) id */
    char jti[UUID_STR_LEN];
    int nroles;
    char roles[JWT_MAX_ROLES][24];
    int64_t iat, exp;            /* unix seconds */
};

/* Writes the compact token into out. 0 or -E2BIG. */
int jwt_sign(const unsigned char key[JWT_KEY_LEN], const struct jwt_claims *c, char *out,
             size_t outlen);
/* Verifies signature (constant time), header (typ JWT optional, alg exactly HS256), exp and iat
 * against now_s with leeway_s. 0 and ret filled; -EBADMSG malformed, -EPERM bad signature or
 * algorithm, -ETIME expired. ret is not written on failure. */
int jwt_verify(const unsigned char key[JWT_KEY_LEN], const char *token, int64_t now_s,
               int leeway_s, struct jwt_claims *ret);
#endif
