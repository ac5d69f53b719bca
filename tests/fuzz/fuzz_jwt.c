/* libFuzzer target for JWT parsing and verification (src/auth/jwt.c). The first byte picks a
 * mode, the rest is:
 *   0  a token as a client sends it, verified with the server's key;
 *   1  a header and a payload (JSON text, split at the first newline) that the target encodes
 *      and signs with the key, so the header and claims parsers behind the signature check
 *      see arbitrary JSON;
 *   2  the base64url "header.payload" text itself, signed by the target;
 *   3  claims (sub, tid, sid, jti, roles: NUL-separated) signed with jwt_sign and verified
 *      back, which must give the same claims.
 * Accepted claims must obey the limits jwt.h promises, and an accepted token must carry exactly
 * the signature the key gives its first two parts (no other encoding of the MAC passes). */
#include <errno.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/jwt.h"

#define NOW_S 1767225600 /* 2026-01-01 */
#define LEEWAY_S 30

static const unsigned char key[JWT_KEY_LEN] = "tessera-fuzz-jwt-key-32-bytes!!";

static void must(bool ok)
{
    if (!ok)
        abort();
}

static bool terminated(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

static void check_claims(const struct jwt_claims *c)
{
    must(terminated(c->sub, sizeof(c->sub)));
    must(terminated(c->tid, sizeof(c->tid)) && terminated(c->sid, sizeof(c->sid)));
    must(terminated(c->jti, sizeof(c->jti)));
    must(c->nroles >= 0 && c->nroles <= JWT_MAX_ROLES);
    for (int i = 0; i < c->nroles; i++)
        must(terminated(c->roles[i], sizeof(c->roles[i])));
    must(c->exp >= NOW_S - LEEWAY_S && c->iat <= NOW_S + LEEWAY_S);
}

static char *sign_input(const char *in, size_t n);

static int verify(const char *token, struct jwt_claims *c)
{
    memset(c, 0xa5, sizeof(*c));
    int r = jwt_verify(key, token, NOW_S, LEEWAY_S, c);
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "fuzz_jwt: %.80s -> %d\n", token, r);
    if (r != 0) {
        must(r == -EBADMSG || r == -EPERM || r == -ETIME);
        return r;
    }
    check_claims(c);
    const char *dot = strrchr(token, '.');
    must(dot != NULL);
    char *want = sign_input(token, (size_t)(dot - token));
    must(strcmp(want, token) == 0);
    free(want);
    return r;
}

/* token = signing_input "." base64url(HMAC-SHA-256(key, signing_input)) */
static char *sign_input(const char *in, size_t n)
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256(mac, (const unsigned char *)in, n, key);
    size_t cap = n + 2 + sodium_base64_ENCODED_LEN(sizeof(mac), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *t = malloc(cap);
    memcpy(t, in, n);
    t[n] = '.';
    sodium_bin2base64(t + n + 1, cap - n - 1, mac, sizeof(mac),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return t;
}

static char *b64(const uint8_t *p, size_t n, size_t *len)
{
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *s = malloc(cap);
    sodium_bin2base64(s, cap, p, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    *len = strlen(s);
    return s;
}

static void mode_signed_json(const uint8_t *d, size_t n)
{
    const uint8_t *nl = memchr(d, '\n', n);
    size_t hn = nl ? (size_t)(nl - d) : n;
    size_t pn = nl ? n - hn - 1 : 0;
    size_t hl, pl;
    char *h = b64(d, hn, &hl), *p = b64(nl ? nl + 1 : d + n, pn, &pl);
    char *in = malloc(hl + pl + 2);
    memcpy(in, h, hl);
    in[hl] = '.';
    memcpy(in + hl + 1, p, pl);
    char *t = sign_input(in, hl + 1 + pl);
    struct jwt_claims c;
    verify(t, &c);
    free(t);
    free(in);
    free(h);
    free(p);
}

static void mode_signed_text(const uint8_t *d, size_t n)
{
    char *t = sign_input((const char *)d, n);
    struct jwt_claims c;
    if (memchr(d, '\0', n) == NULL)
        verify(t, &c);
    free(t);
}

/* NUL-separated fields, copied bounded into claims as printable ASCII (jwt_sign writes other
 * bytes as JSON escapes or U+FFFD, which would not read back the same) */
static void mode_round_trip(const uint8_t *d, size_t n)
{
    struct jwt_claims c;
    memset(&c, 0, sizeof(c));
    char *fields[4] = {c.sub, c.tid, c.sid, c.jti};
    size_t caps[4] = {sizeof(c.sub), sizeof(c.tid), sizeof(c.sid), sizeof(c.jti)};
    size_t off = 0;
    for (int f = 0; f < 4 + JWT_MAX_ROLES && off < n; f++) {
        const uint8_t *end = memchr(d + off, '\0', n - off);
        size_t len = end ? (size_t)(end - d - off) : n - off;
        char *dst = f < 4 ? fields[f] : c.roles[c.nroles++];
        size_t cap = f < 4 ? caps[f] : sizeof(c.roles[0]);
        len = len < cap - 1 ? len : cap - 1;
        for (size_t i = 0; i < len; i++)
            dst[i] = (char)(0x20 + d[off + i] % 95);
        off += len + 1;
    }
    c.iat = NOW_S - 10;
    c.exp = NOW_S + 3600;
    char token[JWT_MAX_LEN];
    if (jwt_sign(key, &c, token, sizeof(token)) < 0)
        return; /* -E2BIG: claims too long for a token */
    struct jwt_claims back;
    must(verify(token, &back) == 0);
    must(strcmp(back.sub, c.sub) == 0 && strcmp(back.tid, c.tid) == 0 &&
         strcmp(back.sid, c.sid) == 0 && strcmp(back.jti, c.jti) == 0);
    must(back.nroles == c.nroles && back.iat == c.iat && back.exp == c.exp);
    for (int i = 0; i < c.nroles; i++)
        must(strcmp(back.roles[i], c.roles[i]) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0: {
        char *t = malloc(n + 1);
        memcpy(t, d, n);
        t[n] = '\0';
        struct jwt_claims c;
        verify(t, &c);
        free(t);
        break;
    }
    case 1: mode_signed_json(d, n); break;
    case 2: mode_signed_text(d, n); break;
    default: mode_round_trip(d, n); break;
    }
    return 0;
}
