/* TLS 1.2 server sessions with mbedtls over memory buffers, restricted to forward-secret AEAD suites. */
#include "http/tls.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

/*
 * Error codes. Raw mbedtls codes overlap errno values, so every failure is mapped to one
 * errno-style code before it leaves this file:
 *   -EPROTO      bad handshake, bad record, version/suite refused, fatal alert from the peer
 *   -ESHUTDOWN   the peer sent close_notify (our close_notify is appended to out first)
 *   -ENOTCONN    tls_conn_encrypt before the handshake finished (nothing is buffered: the
 *                HTTP server writes only after a full request, so the handshake is done)
 *   -E2BIG       the caller's plain or out buffer hit its maximum
 *   -ENOMEM      allocation failed
 * After any negative return the session is dead and every later call fails the same way.
 *
 * Threading: a tls_ctx may be shared by connections on several threads (the linked mbedtls
 * has MBEDTLS_THREADING_C, so the DRBG locks); one tls_conn belongs to one thread.
 */

/*
 * The profile is Mozilla's "intermediate" (TLS 1.2 part; mbedtls 2.28 has no TLS 1.3 server):
 * TLS 1.2 only, ECDHE with AEAD only (no RSA key transport, no CBC, no SHA-1 MAC), the curves
 * and signature hashes below, no compression (not built in), no renegotiation, no session
 * tickets. tools/check transport grades it with testssl.sh; tests/api/test_tls_grade.py is the
 * fast form.
 *
 * Preference order of the server (mbedtls honours the server's order by default).
 */
static const int tls_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    0,
};

/* ECDHE groups; mbedtls' default list also has 192- and 224-bit curves. */
static const mbedtls_ecp_group_id tls_curves[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE,
};

/* Hashes for the ServerKeyExchange signature (and nothing else: no client certificates). The
 * Debian build's default also allows SHA-224; Mozilla's intermediate profile stops at SHA-256.
 * SHA-1 is refused even from a client that sends no signature_algorithms (RFC 5246 7.4.1.4.1
 * would default to it): it gets a handshake failure. */
static const int tls_sig_hashes[] = {
    MBEDTLS_MD_SHA256,
    MBEDTLS_MD_SHA384,
    MBEDTLS_MD_SHA512,
    MBEDTLS_MD_NONE,
};

/* Only HTTP/1.1 is spoken; a client offering ALPN without it is refused (ALPACA). */
static const char *tls_alpn[] = { "http/1.1", NULL };

struct tls_ctx {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt chain;
    mbedtls_pk_context key;
    mbedtls_ssl_config conf;
};

struct tls_conn {
    mbedtls_ssl_context ssl;
    const char *in;   /* ciphertext of the current tls_conn_feed call, not yet consumed */
    size_t in_len;
    struct buf *out;  /* where the send callback appends records; set only during a call */
    int io_err;       /* buffer error seen by the send callback, reported instead of mbedtls' */
    int dead;         /* negative once the session failed; returned by every later call */
    int handshake_done;
};

/* ---------- context ---------- */

static void tls_reason(char *err, size_t errlen, const char *what, const char *path, int ret)
{
    if (err == NULL || errlen == 0)
        return;
    char detail[160];
    if (ret == MBEDTLS_ERR_PK_FILE_IO_ERROR || ret == MBEDTLS_ERR_X509_FILE_IO_ERROR)
        snprintf(detail, sizeof(detail), "%s", errno ? strerror(errno) : "cannot open file");
    else if (ret > 0)
        snprintf(detail, sizeof(detail), "%d certificate(s) failed to parse", ret);
    else
        mbedtls_strerror(ret, detail, sizeof(detail));
    if (path != NULL)
        snprintf(err, errlen, "%s '%s': %s", what, path, detail);
    else
        snprintf(err, errlen, "%s: %s", what, detail);
}

static int tls_ctx_load(struct tls_ctx *ctx, const char *cert_file, const char *key_file,
                        char *err, size_t errlen)
{
    errno = 0;
    int r = mbedtls_x509_crt_parse_file(&ctx->chain, cert_file);
    if (r != 0) {
        tls_reason(err, errlen, "cannot read TLS certificate", cert_file, r);
        return -EINVAL;
    }
    errno = 0;
    r = mbedtls_pk_parse_keyfile(&ctx->key, key_file, NULL);
    if (r != 0) {
        tls_reason(err, errlen, "cannot read TLS key", key_file, r);
        return -EINVAL;
    }
    r = mbedtls_pk_check_pair(&ctx->chain.pk, &ctx->key);
    if (r != 0) {
        tls_reason(err, errlen, "TLS key does not match certificate", cert_file, r);
        return -EINVAL;
    }
    return 0;
}

static int tls_ctx_configure(struct tls_ctx *ctx, char *err, size_t errlen)
{
    mbedtls_ssl_config *conf = &ctx->conf;
    int r = mbedtls_ssl_config_defaults(conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                        MBEDTLS_SSL_PRESET_DEFAULT);
    if (r == 0)
        r = mbedtls_ssl_conf_own_cert(conf, &ctx->chain, &ctx->key);
    if (r == 0)
        r = mbedtls_ssl_conf_alpn_protocols(conf, tls_alpn);
    if (r != 0) {
        tls_reason(err, errlen, "cannot configure TLS", NULL, r);
        return -EINVAL;
    }
    mbedtls_ssl_conf_rng(conf, mbedtls_ctr_drbg_random, &ctx->drbg);
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(conf, tls_suites);
    mbedtls_ssl_conf_curves(conf, tls_curves);
    mbedtls_ssl_conf_sig_hashes(conf, tls_sig_hashes);
    mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_NONE);
    mbedtls_ssl_conf_renegotiation(conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    return 0;
}

static int tls_ctx_seed(struct tls_ctx *ctx, char *err, size_t errlen)
{
    static const char pers[] = "tessera-tls";
    int r = mbedtls_ctr_drbg_seed(&ctx->drbg, mbedtls_entropy_func, &ctx->entropy,
                                  (const unsigned char *)pers, sizeof(pers) - 1);
    if (r != 0) {
        tls_reason(err, errlen, "cannot seed TLS random generator", NULL, r);
        return -EIO;
    }
    return 0;
}

struct tls_ctx *tls_ctx_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "cannot set up TLS: out of memory");
        return NULL;
    }
    mbedtls_entropy_init(&ctx->entropy);
    mbedtls_ctr_drbg_init(&ctx->drbg);
    mbedtls_x509_crt_init(&ctx->chain);
    mbedtls_pk_init(&ctx->key);
    mbedtls_ssl_config_init(&ctx->conf);
    if (tls_ctx_load(ctx, cert_file, key_file, err, errlen) < 0 ||
        tls_ctx_seed(ctx, err, errlen) < 0 || tls_ctx_configure(ctx, err, errlen) < 0)
        return tls_ctx_free(ctx);
    return ctx;
}

struct tls_ctx *tls_ctx_free(struct tls_ctx *ctx)
{
    if (ctx == NULL)
        return NULL;
    mbedtls_ssl_config_free(&ctx->conf);
    mbedtls_pk_free(&ctx->key);
    mbedtls_x509_crt_free(&ctx->chain);
    mbedtls_ctr_drbg_free(&ctx->drbg);
    mbedtls_entropy_free(&ctx->entropy);
    free(ctx);
    return NULL;
}

/* ---------- memory BIO ---------- */

static int tls_send_cb(void *arg, const unsigned char *p, size_t n)
{
    struct tls_conn *c = arg;
    if (n > INT_MAX)
        n = INT_MAX;
    int r = c->out ? buf_append(c->out, p, n) : -EINVAL;
    if (r < 0) {
        c->io_err = r;
        return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    }
    return (int)n;
}

static int tls_recv_cb(void *arg, unsigned char *p, size_t n)
{
    struct tls_conn *c = arg;
    if (c->in_len == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > c->in_len)
        n = c->in_len;
    if (n > INT_MAX)
        n = INT_MAX;
    memcpy(p, c->in, n);
    c->in += n;
    c->in_len -= n;
    return (int)n;
}

/* ---------- connection ---------- */

struct tls_conn *tls_conn_new(struct tls_ctx *ctx)
{
    struct tls_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    mbedtls_ssl_init(&c->ssl);
    if (mbedtls_ssl_setup(&c->ssl, &ctx->conf) != 0)
        return tls_conn_free(c);
    mbedtls_ssl_set_bio(&c->ssl, c, tls_send_cb, tls_recv_cb, NULL);
    return c;
}

struct tls_conn *tls_conn_free(struct tls_conn *c)
{
    if (c == NULL)
        return NULL;
    mbedtls_ssl_free(&c->ssl);
    free(c);
    return NULL;
}

/* Turns an mbedtls failure into our code and marks the session dead. */
static int tls_conn_fail(struct tls_conn *c, int ret)
{
    if (c->io_err < 0)
        c->dead = c->io_err;
    else if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
        c->dead = -ESHUTDOWN;
    else if (ret == MBEDTLS_ERR_SSL_ALLOC_FAILED)
        c->dead = -ENOMEM;
    else
        c->dead = -EPROTO;
    return c->dead;
}

static int tls_conn_handshake(struct tls_conn *c)
{
    int r = mbedtls_ssl_handshake(&c->ssl);
    if (r == MBEDTLS_ERR_SSL_WANT_READ)
        return 0;
    if (r != 0)
        return tls_conn_fail(c, r);
    c->handshake_done = 1;
    return 0;
}

/* Reads every complete record; mbedtls has consumed all input once it asks for more. */
static int tls_conn_read_all(struct tls_conn *c, struct buf *plain)
{
    unsigned char chunk[8192];
    for (;;) {
        int r = mbedtls_ssl_read(&c->ssl, chunk, sizeof(chunk));
        if (r == MBEDTLS_ERR_SSL_WANT_READ)
            return 0;
        if (r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
            mbedtls_ssl_close_notify(&c->ssl); /* best effort, into out */
        if (r <= 0)
            return tls_conn_fail(c, r); /* 0: transport EOF, impossible over memory */
        int b = buf_append(plain, chunk, (size_t)r);
        if (b < 0) {
            c->dead = b;
            return b;
        }
    }
}

int tls_conn_feed(struct tls_conn *c, const char *in, size_t n, struct buf *plain, struct buf *out)
{
    if (c->dead < 0)
        return c->dead;
    c->in = in;
    c->in_len = n;
    c->out = out;
    int r = 0;
    if (!c->handshake_done)
        r = tls_conn_handshake(c);
    if (r == 0 && c->handshake_done)
        r = tls_conn_read_all(c, plain);
    assert(r < 0 || c->in_len == 0);
    c->in = NULL;
    c->in_len = 0;
    c->out = NULL;
    return r;
}

int tls_conn_encrypt(struct tls_conn *c, const char *plain, size_t n, struct buf *out)
{
    if (c->dead < 0)
        return c->dead;
    if (!c->handshake_done)
        return -ENOTCONN;
    c->out = out;
    const unsigned char *p = (const unsigned char *)plain;
    int r = 0;
    while (n > 0) {
        r = mbedtls_ssl_write(&c->ssl, p, n); /* at most one record's worth per call */
        if (r <= 0) {
            r = tls_conn_fail(c, r);
            break;
        }
        p += r;
        n -= (size_t)r;
        r = 0;
    }
    c->out = NULL;
    return r;
}

const char *tls_version_string(void)
{
    static char version[32]; /* mbedtls needs at least 18 */
    if (version[0] == '\0')
        mbedtls_version_get_string_full(version);
    return version;
}
