/* Unit tests for JWT HS256 (sign, verify, tampering, alg none, expiry) and the permission table. */
#include <errno.h>
#include <sodium.h>

#include "../check.h"
#include "auth/jwt.h"
#include "auth/perms.h"
#include "core/err.h"

static const unsigned char key[JWT_KEY_LEN] = "0123456789abcdef0123456789abcde";

static struct jwt_claims sample(void)
{
    struct jwt_claims c = {0};
    snprintf(c.sub, sizeof(c.sub), "u1");
    snprintf(c.tid, sizeof(c.tid), "t1");
    snprintf(c.sid, sizeof(c.sid), "s1");
    snprintf(c.jti, sizeof(c.jti), "j1");
    c.nroles = 2;
    snprintf(c.roles[0], sizeof(c.roles[0]), "admin");
    snprintf(c.roles[1], sizeof(c.roles[1]), "learner");
    c.iat = 1000;
    c.exp = 4600;
    return c;
}

static void b64(const char *s, char *out, size_t n)
{
    sodium_bin2base64(out, n, (const unsigned char *)s, strlen(s),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static void test_roundtrip(void)
{
    struct jwt_claims c = sample(), got;
    char tok[JWT_MAX_LEN];
    CHECK_INT(jwt_sign(key, &c, tok, sizeof(tok)), 0);
    CHECK_INT(jwt_verify(key, tok, 2000, 30, &got), 0);
    CHECK_STR(got.sub, "u1");
    CHECK_STR(got.tid, "t1");
    CHECK_STR(got.sid, "s1");
    CHECK_INT(got.nroles, 2);
    CHECK_STR(got.roles[1], "learner");
    CHECK_INT(got.exp, 4600);
    /* expiry with leeway: exp + leeway is the last accepted second */
    CHECK_INT(jwt_verify(key, tok, 4630, 30, &got), 0);
    CHECK_INT(jwt_verify(key, tok, 4631, 30, &got), -ETIME);
    /* issued in the future beyond the leeway */
    CHECK_INT(jwt_verify(key, tok, 969, 30, &got), -ETIME);
}

static void test_tampering(void)
{
    struct jwt_claims c = sample(), got;
    char tok[JWT_MAX_LEN];
    jwt_sign(key, &c, tok, sizeof(tok));
    unsigned char other[JWT_KEY_LEN] = "another key, same length......";
    CHECK_INT(jwt_verify(other, tok, 2000, 30, &got), -EPERM);
    /* flip one payload character */
    char bad[JWT_MAX_LEN];
    snprintf(bad, sizeof(bad), "%s", tok);
    char *dot = strchr(bad, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    CHECK(jwt_verify(key, bad, 2000, 30, &got) < 0);
    /* alg: none with an empty signature */
    char h[128], p[256], none[512];
    b64("{\"alg\":\"none\",\"typ\":\"JWT\"}", h, sizeof(h));
    b64("{\"sub\":\"u1\",\"tid\":\"t1\",\"jti\":\"j\",\"roles\":[],\"iat\":1000,\"exp\":9999}", p,
        sizeof(p));
    snprintf(none, sizeof(none), "%s.%s.", h, p);
    CHECK_INT(jwt_verify(key, none, 2000, 30, &got), -EPERM);
    /* HS512 header with a valid HS256 signature over it is still refused */
    b64("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", h, sizeof(h));
    snprintf(none, sizeof(none), "%s.%s", h, p);
    unsigned char mac[32];
    crypto_auth_hmacsha256(mac, (unsigned char *)none, strlen(none), key);
    char sig[64];
    sodium_bin2base64(sig, sizeof(sig), mac, 32, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char hs512[600];
    snprintf(hs512, sizeof(hs512), "%s.%s", none, sig);
    CHECK_INT(jwt_verify(key, hs512, 2000, 30, &got), -EPERM);
    CHECK_INT(jwt_verify(key, "a.b", 2000, 30, &got), -EBADMSG);
    CHECK_INT(jwt_verify(key, "a.b.c.d", 2000, 30, &got), -EBADMSG);
    CHECK(jwt_verify(key, "", 2000, 30, &got) < 0);
}

static void test_permissions(void)
{
    struct principal learner = {.kind = PRINCIPAL_USER, .roles = ROLE_LEARNER};
    snprintf(learner.user_id, sizeof(learner.user_id), "me");
    struct principal admin = {.kind = PRINCIPAL_USER, .roles = ROLE_ADMIN};
    struct principal master = {.kind = PRINCIPAL_USER, .roles = ROLE_MASTER_ADMIN};
    struct principal key_read = {.kind = PRINCIPAL_API_KEY, .scopes = SCOPE_READ};
    struct principal nobody = {.kind = PRINCIPAL_NONE};
    const struct permission *read = perm_find("users.read");
    CHECK(read != NULL);
    CHECK_INT(perm_check(read, &learner, "me"), 0);                 /* self */
    CHECK_INT(perm_check(read, &learner, "someone"), TS_E_FORBIDDEN); /* others: no */
    CHECK_INT(perm_check(read, &admin, "someone"), 0);
    const struct permission *role = perm_find("users.role");
    CHECK_INT(perm_check(role, &admin, NULL), TS_E_FORBIDDEN);       /* Master Admin only */
    CHECK_INT(perm_check(role, &master, NULL), 0);
    CHECK_INT(perm_check(perm_find("tenant.read"), &key_read, NULL), 0);
    CHECK_INT(perm_check(perm_find("apikeys.manage"), &key_read, NULL), TS_E_FORBIDDEN);
    CHECK_INT(perm_check(perm_find("session"), &nobody, NULL), TS_E_UNAUTHENTICATED);
    CHECK(perm_find("no.such") == NULL);
    CHECK_INT(role_bit("master_admin"), 9);
    CHECK_INT(role_bit("wizard"), -1);
    CHECK_STR(role_primary(ROLE_LEARNER | ROLE_MANAGER), "manager");
    CHECK_STR(role_primary(0), "viewer");
    /* every row is reachable by someone, and names are unique */
    for (size_t i = 0; i < permissions_count; i++) {
        CHECK(permissions[i].roles_any || permissions[i].roles_self || permissions[i].key_scopes);
        for (size_t j = i + 1; j < permissions_count; j++)
            CHECK(strcmp(permissions[i].name, permissions[j].name) != 0);
    }
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    test_roundtrip();
    test_tampering();
    test_permissions();
    CHECK_DONE();
}
