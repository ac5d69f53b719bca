/* Unit test for src/http/tls.c: in-memory handshakes against an mbedtls client, refusals, limits. */
#include "../check.h"
#include "http/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>



static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;
static char dir[64];
static char ec_crt[128], ec_key[128], rsa_crt[128], rsa_key[128], junk[128];

/* ---------- certificate generation (no external tools) ---------- */

static int write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -errno;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -EIO;
}

static int gen_key(mbedtls_pk_context *pk, int rsa)
{
    mbedtls_pk_type_t t = rsa ? MBEDTLS_PK_RSA : MBEDTLS_PK_ECKEY;
    int r = mbedtls_pk_setup(pk, mbedtls_pk_info_from_type(t));
    if (r == 0 && rsa)
        r = mbedtls_rsa_gen_key(mbedtls_pk_rsa(*pk), mbedtls_ctr_drbg_random, &drbg, 2048, 65537);
    else if (r == 0)
        r = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*pk),
                                mbedtls_ctr_drbg_random, &drbg);
    return r;
}

static int write_crt(mbedtls_pk_context *pk, const char *path)
{
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    unsigned char pem[4096];
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    int r = mbedtls_mpi_lset(&serial, 4242);
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, pk);
    mbedtls_x509write_crt_set_issuer_key(&w, pk);
    if (r == 0)
        r = mbedtls_x509write_crt_set_serial(&w, &serial);
    if (r == 0)
        r = mbedtls_x509write_crt_set_subject_name(&w, "CN=localhost,O=Tessera test");
    if (r == 0)
        r = mbedtls_x509write_crt_set_issuer_name(&w, "CN=localhost,O=Tessera test");
    if (r == 0)
        r = mbedtls_x509write_crt_set_validity(&w, "20200101000000", "20991231235959");
    if (r == 0)
        r = mbedtls_x509write_crt_set_basic_constraints(&w, 1, 0);
    if (r == 0)
        r = mbedtls_x509write_crt_pem(&w, pem, sizeof(pem), mbedtls_ctr_drbg_random, &drbg);
    if (r == 0)
        r = write_file(path, pem, strlen((char *)pem));
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&w);
    return r;
}

static int gen_pair(int rsa, const char *crt_path, const char *key_path)
{
    mbedtls_pk_context pk;
    unsigned char pem[8192];
    mbedtls_pk_init(&pk);
    int r = gen_key(&pk, rsa);
    if (r == 0)
        r = mbedtls_pk_write_key_pem(&pk, pem, sizeof(pem));
    if (r == 0)
        r = write_file(key_path, pem, strlen((char *)pem));
    if (r == 0)
        r = write_crt(&pk, crt_path);
    mbedtls_pk_free(&pk);
    return r;
}

static int setup_files(void)
{
    snprintf(dir, sizeof(dir), "/tmp/tessera-tls-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -errno;
    snprintf(ec_crt, sizeof(ec_crt), "%s/ec.crt", dir);
    snprintf(ec_key, sizeof(ec_key), "%s/ec.key", dir);
    snprintf(rsa_crt, sizeof(rsa_crt), "%s/rsa.crt", dir);
    snprintf(rsa_key, sizeof(rsa_key), "%s/rsa.key", dir);
    snprintf(junk, sizeof(junk), "%s/junk.pem", dir);
    int r = gen_pair(0, ec_crt, ec_key);
    if (r == 0)
        r = gen_pair(1, rsa_crt, rsa_key);
    if (r == 0)
        r = write_file(junk, "-----BEGIN CERTIFICATE-----\nnot base64!\n", 41);
    return r;
}

static void remove_files(void)
{
    unlink(ec_crt);
    unlink(ec_key);
    unlink(rsa_crt);
    unlink(rsa_key);
    unlink(junk);
    rmdir(dir);
}

/* ---------- an mbedtls client over memory buffers ---------- */

struct client {
    mbedtls_ssl_config conf;
    mbedtls_ssl_context ssl;
    mbedtls_x509_crt ca;
    struct buf in;        /* bytes from the server, not yet read by the client */
    struct buf to_server; /* bytes the client sent, not yet fed to the server */
};

struct client_opts {
    int min_minor, max_minor; /* MBEDTLS_SSL_MINOR_VERSION_x; 0 means 1.2 */
    const int *suites;        /* NULL: mbedtls defaults */
    const char **alpn;        /* NULL: no ALPN extension */
    const char *ca_file;      /* NULL: do not verify the server */
};

static int client_send_cb(void *arg, const unsigned char *p, size_t n)
{
    struct client *cl = arg;
    return buf_append(&cl->to_server, p, n) < 0 ? MBEDTLS_ERR_SSL_INTERNAL_ERROR : (int)n;
}

static int client_recv_cb(void *arg, unsigned char *p, size_t n)
{
    struct client *cl = arg;
    if (cl->in.len == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > cl->in.len)
        n = cl->in.len;
    memcpy(p, cl->in.data, n);
    buf_consume(&cl->in, n);
    return (int)n;
}

static void client_free(struct client *cl)
{
    mbedtls_ssl_free(&cl->ssl);
    mbedtls_ssl_config_free(&cl->conf);
    mbedtls_x509_crt_free(&cl->ca);
    buf_release(&cl->in);
    buf_release(&cl->to_server);
}

static int client_configure(struct client *cl, const struct client_opts *o)
{
    int r = mbedtls_ssl_config_defaults(&cl->conf, MBEDTLS_SSL_IS_CLIENT,
                                        MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (r != 0)
        return r;
    mbedtls_ssl_conf_rng(&cl->conf, mbedtls_ctr_drbg_random, &drbg);
    mbedtls_ssl_conf_min_version(&cl->conf, 3, o->min_minor ? o->min_minor : 3);
    mbedtls_ssl_conf_max_version(&cl->conf, 3, o->max_minor ? o->max_minor : 3);
    if (o->suites)
        mbedtls_ssl_conf_ciphersuites(&cl->conf, o->suites);
    if (o->alpn && (r = mbedtls_ssl_conf_alpn_protocols(&cl->conf, o->alpn)) != 0)
        return r;
    if (o->ca_file == NULL) {
        mbedtls_ssl_conf_authmode(&cl->conf, MBEDTLS_SSL_VERIFY_NONE);
        return 0;
    }
    if ((r = mbedtls_x509_crt_parse_file(&cl->ca, o->ca_file)) != 0)
        return r;
    mbedtls_ssl_conf_authmode(&cl->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&cl->conf, &cl->ca, NULL);
    return 0;
}

static int client_init(struct client *cl, const struct client_opts *o)
{
    mbedtls_ssl_config_init(&cl->conf);
    mbedtls_ssl_init(&cl->ssl);
    mbedtls_x509_crt_init(&cl->ca);
    buf_init(&cl->in, 1 << 20);
    buf_init(&cl->to_server, 1 << 20);
    int r = client_configure(cl, o);
    if (r == 0)
        r = mbedtls_ssl_setup(&cl->ssl, &cl->conf);
    if (r == 0)
        r = mbedtls_ssl_set_hostname(&cl->ssl, "localhost");
    mbedtls_ssl_set_bio(&cl->ssl, cl, client_send_cb, client_recv_cb, NULL);
    return r;
}

/* Feeds what the client sent to the server in frag-byte pieces; server output goes to the
 * client and decrypted bytes to plain. Returns the first negative tls_conn_feed result. */
static int deliver(struct client *cl, struct tls_conn *s, size_t frag, struct buf *plain)
{
    struct buf out;
    buf_init(&out, 1 << 20);
    int r = 0;
    while (cl->to_server.len > 0 && r == 0) {
        size_t n = cl->to_server.len < frag ? cl->to_server.len : frag;
        r = tls_conn_feed(s, cl->to_server.data, n, plain, &out);
        buf_consume(&cl->to_server, n);
    }
    if (buf_append(&cl->in, out.data, out.len) < 0)
        r = -E2BIG;
    buf_release(&out);
    return r;
}

/* Runs the handshake to completion. 0, or the client's mbedtls error, or the server's code. */
static int handshake(struct client *cl, struct tls_conn *s, size_t frag)
{
    struct buf plain;
    buf_init(&plain, 1 << 16);
    int r = MBEDTLS_ERR_SSL_WANT_READ;
    for (int i = 0; i < 50 && r != 0; i++) {
        r = mbedtls_ssl_handshake(&cl->ssl);
        int sr = deliver(cl, s, frag, &plain);
        if (sr < 0) {
            mbedtls_ssl_handshake(&cl->ssl); /* let the client read the alert */
            r = sr;
        }
        if (r != 0 && r != MBEDTLS_ERR_SSL_WANT_READ)
            break;
    }
    CHECK(plain.len == 0);
    buf_release(&plain);
    return r;
}

/* Reads everything the client has received into got. */
static int client_read_all(struct client *cl, struct buf *got)
{
    unsigned char chunk[4096];
    for (;;) {
        int r = mbedtls_ssl_read(&cl->ssl, chunk, sizeof(chunk));
        if (r == MBEDTLS_ERR_SSL_WANT_READ)
            return 0;
        if (r <= 0)
            return r;
        if (buf_append(got, chunk, (size_t)r) < 0)
            return -E2BIG;
    }
}

static int client_write_all(struct client *cl, const char *p, size_t n)
{
    while (n > 0) {
        int r = mbedtls_ssl_write(&cl->ssl, (const unsigned char *)p, n);
        if (r <= 0)
            return r;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static char *pattern(size_t n, unsigned seed)
{
    char *p = malloc(n);
    for (size_t i = 0; p && i < n; i++)
        p[i] = (char)((i * 31u + seed) % 251u);
    return p;
}

/* ---------- context loading ---------- */

static struct tls_ctx *ctx_or_die(const char *crt, const char *key)
{
    char err[256] = "";
    struct tls_ctx *ctx = tls_ctx_new(crt, key, err, sizeof(err));
    if (ctx == NULL) {
        fprintf(stderr, "tls_ctx_new(%s, %s): %s\n", crt, key, err);
        exit(2);
    }
    return ctx;
}

static void expect_ctx_error(const char *crt, const char *key, const char *needle)
{
    char err[256] = "";
    struct tls_ctx *ctx = tls_ctx_new(crt, key, err, sizeof(err));
    CHECK(ctx == NULL);
    ctx = tls_ctx_free(ctx);
    CHECK(strlen(err) > 0);
    CHECK(strchr(err, '\n') == NULL);
    if (strstr(err, needle) == NULL) {
        fprintf(stderr, "error message '%s' lacks '%s'\n", err, needle);
        check_failures++;
    }
}

static void test_ctx_errors(void)
{
    expect_ctx_error("/nonexistent/cert.pem", ec_key, "cannot read TLS certificate '/nonexistent/cert.pem'");
    expect_ctx_error("/nonexistent/cert.pem", ec_key, "No such file or directory");
    expect_ctx_error(ec_crt, "/nonexistent/key.pem", "cannot read TLS key '/nonexistent/key.pem'");
    expect_ctx_error(junk, ec_key, junk);
    expect_ctx_error(ec_crt, junk, "cannot read TLS key");
    expect_ctx_error(ec_crt, rsa_key, "does not match");
    char small[8];
    memset(small, 'x', sizeof(small));
    CHECK(tls_ctx_new("/nonexistent", ec_key, small, sizeof(small)) == NULL);
    CHECK(memchr(small, '\0', sizeof(small)) != NULL);
    CHECK(tls_ctx_new("/nonexistent", ec_key, NULL, 0) == NULL);
    CHECK(tls_ctx_free(NULL) == NULL);
    CHECK(tls_conn_free(NULL) == NULL);
}

static void test_version_string(void)
{
    const char *v = tls_version_string();
    CHECK(v != NULL && strstr(v, "mbed TLS") != NULL);
    CHECK(v == tls_version_string());
}

/* ---------- sessions ---------- */

static const struct client_opts no_verify = { .ca_file = NULL };

/* Handshake with client options; the connection is returned established or the test fails. */
static struct tls_conn *establish(struct tls_ctx *ctx, struct client *cl,
                                  const struct client_opts *o, size_t frag)
{
    CHECK(client_init(cl, o) == 0);
    struct tls_conn *s = tls_conn_new(ctx);
    CHECK(s != NULL);
    int r = handshake(cl, s, frag);
    if (r != 0)
        fprintf(stderr, "handshake failed: %d (-0x%04x)\n", r, (unsigned)-r);
    CHECK(r == 0);
    return s;
}

static void test_exchange(struct tls_ctx *ctx, size_t frag)
{
    struct client cl;
    struct client_opts o = { .ca_file = ec_crt };
    struct tls_conn *s = establish(ctx, &cl, &o, frag);
    CHECK(strcmp(mbedtls_ssl_get_version(&cl.ssl), "TLSv1.2") == 0);
    CHECK(mbedtls_ssl_get_verify_result(&cl.ssl) == 0);

    static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    struct buf plain, out, got;
    buf_init(&plain, 1 << 20);
    buf_init(&out, 1 << 20);
    buf_init(&got, 1 << 20);
    CHECK(client_write_all(&cl, req, sizeof(req) - 1) == 0);
    CHECK(deliver(&cl, s, frag, &plain) == 0);
    CHECK(plain.len == sizeof(req) - 1 && memcmp(plain.data, req, plain.len) == 0);

    /* Several records each way. */
    size_t big = 200 * 1000 + 7;
    char *down = pattern(big, 1), *up = pattern(big, 2);
    CHECK(tls_conn_encrypt(s, down, big, &out) == 0);
    CHECK(out.len > big && out.len < big + big / 100);
    CHECK(buf_append(&cl.in, out.data, out.len) == 0);
    CHECK(client_read_all(&cl, &got) == 0);
    CHECK(got.len == big && memcmp(got.data, down, big) == 0);

    buf_consume(&plain, plain.len);
    CHECK(client_write_all(&cl, up, big) == 0);
    CHECK(deliver(&cl, s, frag > 1 ? 1000 : 1, &plain) == 0);
    CHECK(plain.len == big && memcmp(plain.data, up, big) == 0);

    size_t before = out.len;
    CHECK(tls_conn_encrypt(s, "", 0, &out) == 0);
    CHECK(out.len == before);
    free(down);
    free(up);
    buf_release(&plain);
    buf_release(&out);
    buf_release(&got);
    s = tls_conn_free(s);
    client_free(&cl);
}

/* The client offers exactly one suite, which must be negotiated. */
static void test_suite_ok(struct tls_ctx *ctx, int suite)
{
    int suites[] = { suite, 0 };
    struct client cl;
    struct client_opts o = { .suites = suites };
    struct tls_conn *s = establish(ctx, &cl, &o, 1 << 20);
    const char *want = mbedtls_ssl_get_ciphersuite_name(suite);
    const char *got = mbedtls_ssl_get_ciphersuite(&cl.ssl);
    if (got == NULL || strcmp(got, want) != 0) {
        fprintf(stderr, "suite %s: negotiated %s\n", want, got ? got : "(none)");
        check_failures++;
    }
    s = tls_conn_free(s);
    client_free(&cl);
}

/* The server must refuse: tls_conn_feed negative, a fatal alert with the given description
 * sent back (RFC 5246 7.2), the client fails too. */
static void expect_refused(struct tls_ctx *ctx, const struct client_opts *o, int alert,
                           const char *what)
{
    struct client cl;
    CHECK(client_init(&cl, o) == 0);
    struct tls_conn *s = tls_conn_new(ctx);
    CHECK(mbedtls_ssl_handshake(&cl.ssl) == MBEDTLS_ERR_SSL_WANT_READ);
    struct buf plain;
    buf_init(&plain, 1024);
    int r = deliver(&cl, s, 1 << 20, &plain);
    if (r >= 0) {
        fprintf(stderr, "%s: server accepted the ClientHello\n", what);
        check_failures++;
    }
    const unsigned char *a = (const unsigned char *)cl.in.data;
    if (cl.in.len != 7 || a[0] != 21 || a[5] != 2 || a[6] != alert) {
        fprintf(stderr, "%s: expected fatal alert %d, got %zu bytes, type %d, alert %d\n", what,
                alert, cl.in.len, a ? a[0] : -1, cl.in.len == 7 ? a[6] : -1);
        check_failures++;
    }
    int cr = mbedtls_ssl_handshake(&cl.ssl);
    CHECK(cr != 0 && cr != MBEDTLS_ERR_SSL_WANT_READ);
    CHECK(tls_conn_feed(s, "x", 1, &plain, &plain) < 0); /* stays dead */
    buf_release(&plain);
    s = tls_conn_free(s);
    client_free(&cl);
}

static void test_refusals(struct tls_ctx *ec, struct tls_ctx *rsa)
{
    struct client_opts tls10 = { .min_minor = 1, .max_minor = 1 };
    struct client_opts tls11 = { .min_minor = 1, .max_minor = 2 };
    expect_refused(rsa, &tls10, 70, "TLS 1.0 client");
    expect_refused(rsa, &tls11, 70, "TLS 1.0/1.1 client");
    expect_refused(ec, &tls11, 70, "TLS 1.0/1.1 client (ECDSA)");
    static const int bad[][2] = {
        { MBEDTLS_TLS_RSA_WITH_AES_128_CBC_SHA256, 0 },       /* no FS, no AEAD */
        { MBEDTLS_TLS_RSA_WITH_AES_128_GCM_SHA256, 0 },       /* no FS */
        { MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256, 0 }, /* no AEAD */
        { MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, 0 },
        { MBEDTLS_TLS_DHE_RSA_WITH_AES_128_GCM_SHA256, 0 },   /* FFDHE not offered */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct client_opts o = { .suites = bad[i] };
        expect_refused(rsa, &o, 40, mbedtls_ssl_get_ciphersuite_name(bad[i][0]));
    }
    static const int ecdsa_cbc[] = { MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, 0 };
    struct client_opts o = { .suites = ecdsa_cbc };
    expect_refused(ec, &o, 40, "ECDHE-ECDSA-AES128-CBC-SHA256");
    static const char *h2only[] = { "h2", NULL };
    struct client_opts a = { .alpn = h2only };
    expect_refused(ec, &a, 120, "ALPN h2 only");
}

static void test_suites(struct tls_ctx *ec, struct tls_ctx *rsa)
{
    test_suite_ok(ec, MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    test_suite_ok(ec, MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
    test_suite_ok(ec, MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256);
    test_suite_ok(rsa, MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256);
    test_suite_ok(rsa, MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384);
    test_suite_ok(rsa, MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256);
}

static void test_alpn(struct tls_ctx *ctx)
{
    static const char *offer[] = { "h2", "http/1.1", NULL };
    struct client cl;
    struct client_opts o = { .alpn = offer };
    struct tls_conn *s = establish(ctx, &cl, &o, 1 << 20);
    const char *got = mbedtls_ssl_get_alpn_protocol(&cl.ssl);
    CHECK(got != NULL && strcmp(got, "http/1.1") == 0);
    s = tls_conn_free(s);
    client_free(&cl);
}

static void test_close_notify(struct tls_ctx *ctx)
{
    struct client cl;
    struct tls_conn *s = establish(ctx, &cl, &no_verify, 1 << 20);
    struct buf plain;
    buf_init(&plain, 1024);
    CHECK(mbedtls_ssl_close_notify(&cl.ssl) == 0);
    CHECK(deliver(&cl, s, 1 << 20, &plain) < 0);
    CHECK(cl.in.len > 0); /* our close_notify */
    CHECK(mbedtls_ssl_read(&cl.ssl, (unsigned char *)plain.data, 0) ==
          MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY);
    CHECK(tls_conn_feed(s, "", 0, &plain, &plain) < 0);
    CHECK(tls_conn_encrypt(s, "x", 1, &plain) < 0);
    buf_release(&plain);
    s = tls_conn_free(s);
    client_free(&cl);
}

static void test_tampered(struct tls_ctx *ctx)
{
    struct client cl;
    struct tls_conn *s = establish(ctx, &cl, &no_verify, 1 << 20);
    struct buf plain;
    buf_init(&plain, 1024);
    CHECK(client_write_all(&cl, "hello", 5) == 0);
    cl.to_server.data[cl.to_server.len - 1] ^= 1;
    CHECK(deliver(&cl, s, 1 << 20, &plain) < 0);
    CHECK(plain.len == 0);
    buf_release(&plain);
    s = tls_conn_free(s);
    client_free(&cl);
}

static void test_garbage_and_early_write(struct tls_ctx *ctx)
{
    struct buf plain, out;
    buf_init(&plain, 1024);
    buf_init(&out, 1024);
    struct tls_conn *s = tls_conn_new(ctx);
    CHECK(tls_conn_encrypt(s, "early", 5, &out) == -ENOTCONN);
    CHECK(out.len == 0);
    CHECK(tls_conn_feed(s, "", 0, &plain, &out) == 0);
    static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(tls_conn_feed(s, http, sizeof(http) - 1, &plain, &out) < 0);
    CHECK(plain.len == 0);
    s = tls_conn_free(s);
    buf_release(&plain);
    buf_release(&out);
}

/* plain and out maxima: exactly the limit fits, one byte less fails and kills the session. */
static void test_limits(struct tls_ctx *ctx, size_t n, size_t max, int ok)
{
    struct client cl;
    struct tls_conn *s = establish(ctx, &cl, &no_verify, 1 << 20);
    struct buf plain, out;
    buf_init(&plain, max);
    buf_init(&out, 1 << 20);
    char *p = pattern(n, 3);
    CHECK(client_write_all(&cl, p, n) == 0);
    int r = deliver(&cl, s, 1 << 20, &plain);
    CHECK(ok ? r == 0 && plain.len == n : r == -E2BIG);
    if (!ok)
        CHECK(tls_conn_encrypt(s, "x", 1, &out) == -E2BIG);
    free(p);
    buf_release(&plain);
    buf_release(&out);
    s = tls_conn_free(s);
    client_free(&cl);
}

static void test_out_limit(struct tls_ctx *ctx)
{
    struct client cl;
    struct tls_conn *s = establish(ctx, &cl, &no_verify, 1 << 20);
    struct buf out;
    buf_init(&out, 40);
    CHECK(tls_conn_encrypt(s, "0123456789012345678901234567890123456789", 40, &out) == -E2BIG);
    CHECK(tls_conn_encrypt(s, "x", 1, &out) < 0);
    buf_release(&out);
    s = tls_conn_free(s);
    client_free(&cl);
}

int main(void)
{
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, NULL, 0) != 0 ||
        setup_files() != 0) {
        fprintf(stderr, "test setup failed\n");
        return 2;
    }
    test_version_string();
    test_ctx_errors();
    struct tls_ctx *ec = ctx_or_die(ec_crt, ec_key);
    struct tls_ctx *rsa = ctx_or_die(rsa_crt, rsa_key);
    test_exchange(ec, 1 << 20);
    test_exchange(ec, 1);
    test_suites(ec, rsa);
    test_refusals(ec, rsa);
    test_alpn(ec);
    test_close_notify(ec);
    test_tampered(ec);
    test_garbage_and_early_write(ec);
    test_limits(ec, 5000, 5000, 1);
    test_limits(ec, 5000, 4999, 0);
    test_out_limit(ec);
    ec = tls_ctx_free(ec);
    rsa = tls_ctx_free(rsa);
    remove_files();
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    if (check_failures) {
        fprintf(stderr, "test_tls: %d check(s) failed\n", check_failures);
        return 1;
    }
    printf("test_tls: all checks passed (%s)\n", tls_version_string());
    return 0;
}
