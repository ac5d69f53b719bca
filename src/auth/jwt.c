/* JWT HS256: compact serialisation, HMAC-SHA-256 from libsodium, strict header and claims. */
#include "auth/jwt.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/json.h"

static const char HEADER[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static int b64url(const void *bin, size_t n, char *out, size_t outlen)
{
    size_t need = sodium_base64_encoded_len(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    if (need > outlen)
        return -E2BIG;
    sodium_bin2base64(out, outlen, bin, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return (int)(need - 1);
}

static int payload_json(const struct jwt_claims *c, struct buf *b)
{
    struct jw w;
    jw_init(&w, b);
    jw_obj_open(&w);
    jw_kstr(&w, "sub", c->sub);
    jw_kstr(&w, "tid", c->tid);
    jw_kstr(&w, "sid", c->sid);
    jw_key(&w, "roles");
    jw_arr_open(&w);
    for (int i = 0; i < c->nroles; i++)
        jw_str(&w, c->roles[i]);
    jw_arr_close(&w);
    jw_kint(&w, "iat", c->iat);
    jw_kint(&w, "exp", c->exp);
    jw_kstr(&w, "jti", c->jti);
    jw_obj_close(&w);
    return jw_finish(&w);
}

int jwt_sign(const unsigned char key[JWT_KEY_LEN], const struct jwt_claims *c, char *out,
             size_t outlen)
{
    struct buf p;
    buf_init(&p, 1024);
    if (payload_json(c, &p) < 0) {
        buf_release(&p);
        return -E2BIG;
    }
    int o = b64url(HEADER, sizeof(HEADER) - 1, out, outlen);
    int r = -E2BIG;
    if (o > 0 && (size_t)o + 1 < outlen) {
        out[o++] = '.';
        int n = b64url(p.data, p.len, out + o, outlen - (size_t)o);
        if (n > 0 && (size_t)(o + n) + 1 + 44 < outlen) {
            o += n;
            unsigned char mac[crypto_auth_hmacsha256_BYTES];
            crypto_auth_hmacsha256(mac, (const unsigned char *)out, (unsigned long long)o, key);
            out[o++] = '.';
            r = b64url(mac, sizeof(mac), out + o, outlen - (size_t)o) > 0 ? 0 : -E2BIG;
        }
    }
    buf_release(&p);
    return r;
}

/* Decodes base64url segment [s, s+n) into a NUL-terminated buffer. Length or -EBADMSG. */
static int b64url_decode(const char *s, size_t n, unsigned char *out, size_t outlen)
{
    size_t got;
    if (sodium_base642bin(out, outlen - 1, s, n, NULL, &got, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return -EBADMSG;
    out[got] = '\0';
    return (int)got;
}

static json_t *segment_json(const char *s, size_t n)
{
    unsigned char tmp[JWT_MAX_LEN];
    int len = b64url_decode(s, n, tmp, sizeof(tmp));
    if (len < 0)
        return NULL;
    json_t *v = json_loadb((const char *)tmp, (size_t)len, JSON_REJECT_DUPLICATES, NULL);
    if (v && !json_is_object(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

/* base64url of HEADER: the header every token we issue carries, checked without parsing */
static const char HEADER_B64[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

static int header_ok(const char *s, size_t n)
{
    if (n == sizeof(HEADER_B64) - 1 && memcmp(s, HEADER_B64, n) == 0)
        return 0;
    json_t *h = segment_json(s, n);
    if (h == NULL)
        return -EBADMSG;
    const char *alg = json_string_value(json_object_get(h, "alg"));
    json_t *typ = json_object_get(h, "typ");
    int r = alg && strcmp(alg, "HS256") == 0 &&
                    (typ == NULL || (json_is_string(typ) && !strcmp(json_string_value(typ), "JWT")))
                ? 0
                : -EPERM;
    json_decref(h);
    return r;
}

static int copy_str(json_t *o, const char *key, char *out, size_t n)
{
    const char *v = json_string_value(json_object_get(o, key));
    if (v == NULL || strlen(v) >= n)
        return -EBADMSG;
    memcpy(out, v, strlen(v) + 1);
    return 0;
}

static int claims_parse(json_t *p, struct jwt_claims *c)
{
    memset(c, 0, sizeof(*c));
    if (copy_str(p, "sub", c->sub, sizeof(c->sub)) < 0 ||
        copy_str(p, "tid", c->tid, sizeof(c->tid)) < 0 ||
        copy_str(p, "jti", c->jti, sizeof(c->jti)) < 0)
        return -EBADMSG;
    copy_str(p, "sid", c->sid, sizeof(c->sid)); /* optional: API-issued tokens always carry it */
    json_t *iat = json_object_get(p, "iat"), *exp = json_object_get(p, "exp");
    json_t *roles = json_object_get(p, "roles");
    if (!json_is_integer(iat) || !json_is_integer(exp) || !json_is_array(roles) ||
        json_array_size(roles) > JWT_MAX_ROLES)
        return -EBADMSG;
    c->iat = json_integer_value(iat);
    c->exp = json_integer_value(exp);
    size_t i;
    json_t *r;
    json_array_foreach(roles, i, r) {
        const char *s = json_string_value(r);
        if (s == NULL || strlen(s) >= sizeof(c->roles[0]))
            return -EBADMSG;
        memcpy(c->roles[c->nroles++], s, strlen(s) + 1);
    }
    return 0;
}

int jwt_verify(const unsigned char key[JWT_KEY_LEN], const char *token, int64_t now_s,
               int leeway_s, struct jwt_claims *ret)
{
    size_t n = strnlen(token, JWT_MAX_LEN + 1);
    const char *d1 = memchr(token, '.', n);
    const char *d2 = d1 ? memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - token)) : NULL;
    if (n > JWT_MAX_LEN || d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - token)))
        return -EBADMSG;
    int r = header_ok(token, (size_t)(d1 - token));
    if (r < 0)
        return r;
    unsigned char mac[crypto_auth_hmacsha256_BYTES + 1];
    if (b64url_decode(d2 + 1, n - (size_t)(d2 + 1 - token), mac, sizeof(mac)) !=
        crypto_auth_hmacsha256_BYTES)
        return -EPERM;
    if (crypto_auth_hmacsha256_verify(mac, (const unsigned char *)token,
                                      (unsigned long long)(d2 - token), key) != 0)
        return -EPERM;
    json_t *p = segment_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (p == NULL)
        return -EBADMSG;
    struct jwt_claims c;
    r = claims_parse(p, &c);
    json_decref(p);
    if (r < 0)
        return r;
    /* exp and iat are the token's: compared on our side of the addition, so exp = INT64_MAX
     * cannot overflow it (found by the jwt fuzz target) */
    if (c.exp < now_s - leeway_s || c.iat > now_s + leeway_s)
        return -ETIME;
    *ret = c;
    return 0;
}
