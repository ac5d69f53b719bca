/* Unit tests for ws.c: accept keys, the Upgrade checks, frames through a memory session, the hub. */
#include <errno.h>
#include <llhttp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/arena.h"
#include "core/err.h"
#include "http/ws.h"
#include "http/ws_internal.h"

static int failures;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                               \
        }                                                                             \
    } while (0)

/* ---------- accept key ---------- */

static void test_accept_key(void)
{
    char out[29];
    /* RFC 6455 section 1.3; also `printf %s KEY GUID | openssl sha1 -binary | base64` */
    CHECK(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out) == 0);
    CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);

    static const char *const bad[] = {
        "",                             /* empty */
        "dGhlIHNhbXBsZSBub25jZQ=",      /* 23 chars */
        "dGhlIHNhbXBsZSBub25jZQ===",    /* 25 chars */
        "dGhlIHNhbXBsZSBub25jZQ",       /* no padding */
        "dGhlIHNhbXBsZSBub25j!Q==",     /* not base64 */
        "dGhlIHNhbXBsZSBub25jZQ=a",     /* bad padding */
        "dGhlIHNhbXBsZSBub25jZWU=",     /* 17 bytes */
        "AAAAAAAAAAAAAAAAAAAA",         /* 15 bytes */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", /* 20 bytes */
        " dGhlIHNhbXBsZSBub25jZQ==",    /* whitespace is the caller's to trim */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(out, 'x', sizeof(out));
        CHECK(ws_accept_key(bad[i], out) == -EINVAL);
        CHECK(out[0] == 'x' && out[28] == 'x'); /* ret_ never written on failure */
    }
    CHECK(ws_accept_key(NULL, out) == -EINVAL);
}

/* ---------- the Upgrade request ---------- */

struct fake_req {
    struct request req;
    struct http_header h[8];
};

static void fake_init(struct fake_req *f, int method, int n, ...)
{
    memset(f, 0, sizeof(*f));
    f->req.arena = arena_new(4096);
    f->req.method = method;
    f->req.method_name = llhttp_method_name((llhttp_method_t)method);
    f->req.headers = f->h;
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        f->h[i].name = va_arg(ap, const char *);
        f->h[i].value = va_arg(ap, const char *);
    }
    va_end(ap);
    f->req.nheaders = n;
}

static void fake_done(struct fake_req *f)
{
    buf_release(&f->req.out_headers);
    arena_free(f->req.arena);
}

static bool out_has(struct fake_req *f, const char *line)
{
    return f->req.out_headers.data && strstr(f->req.out_headers.data, line) != NULL;
}

static const struct ws_limits test_lim = {
    .max_message = 16, .max_send_queue = 64, .ping_interval_ms = 0, .pong_timeout_ms = 0,
};

static void test_upgrade(struct ws_hub *hub)
{
    struct fake_req f;
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";

    fake_init(&f, HTTP_GET, 4, "Upgrade", "WebSocket", "Connection", "keep-alive, Upgrade",
              "Sec-WebSocket-Version", " 13 ", "Sec-WebSocket-Key", key);
    CHECK(ws_upgrade(&f.req, hub, "c1", "tessera.v1", NULL, NULL) == 0);
    CHECK(f.req.status == 101 && f.req.upgrade_cb != NULL && f.req.upgrade_arg != NULL);
    CHECK(out_has(&f, "Upgrade: websocket\r\n"));
    CHECK(out_has(&f, "Connection: Upgrade\r\n"));
    CHECK(out_has(&f, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    CHECK(out_has(&f, "Sec-WebSocket-Protocol: tessera.v1\r\n"));
    fake_done(&f);
}

static void test_upgrade_refused(struct ws_hub *hub)
{
    struct fake_req f;
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";

    fake_init(&f, HTTP_POST, 4, "Upgrade", "websocket", "Connection", "Upgrade",
              "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", key);
    CHECK(ws_upgrade(&f.req, hub, "c1", NULL, NULL, NULL) == TS_E_BAD_REQUEST);
    CHECK(f.req.status == 0 && f.req.upgrade_cb == NULL);
    fake_done(&f);

    fake_init(&f, HTTP_GET, 3, "Connection", "Upgrade", "Sec-WebSocket-Version", "13",
              "Sec-WebSocket-Key", key);
    CHECK(ws_upgrade(&f.req, hub, "c1", NULL, NULL, NULL) == TS_E_BAD_REQUEST);
    fake_done(&f);

    fake_init(&f, HTTP_GET, 4, "Upgrade", "websocket", "Connection", "keep-alive",
              "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", key);
    CHECK(ws_upgrade(&f.req, hub, "c1", NULL, NULL, NULL) == TS_E_BAD_REQUEST);
    fake_done(&f);

    /* "upgrade" must be a whole token, and a second Connection header counts */
    fake_init(&f, HTTP_GET, 5, "Upgrade", "websocket", "Connection", "upgraded",
              "Connection", "UPGRADE", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", key);
    CHECK(ws_upgrade(&f.req, hub, "c1", NULL, NULL, NULL) == 0);
    fake_done(&f);
    fake_init(&f, HTTP_GET, 4, "Upgrade", "websocket", "Connection", "upgraded",
              "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", key);
    CHECK(ws_upgrade(&f.req, hub, "c1", NULL, NULL, NULL) == TS_E_BAD_REQUEST);
    fake_done(&f);

    fake_init(&f, HTTP_GET, 4, "Upgrade", "websocket", "Connection", "Upgrade",
              "Sec-WebSocket-Version", "8", "Sec-WebSocket-Key", key);
    CHECK(ws_upgrade(&f.req, hub, "c1", NULL, NULL, NULL) == TS_E_BAD_REQUEST);
    CHECK(out_has(&f, "Sec-WebSocket-Version: 13\r\n"));
    CHECK(f.req.status == 0);
    fake_done(&f);

    fake_init(&f, HTTP_GET, 4, "Upgrade", "websocket", "Connection", "Upgrade",
              "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA");
    CHECK(ws_upgrade(&f.req, hub, "c1", NULL, NULL, NULL) == TS_E_BAD_REQUEST);
    fake_done(&f);

    fake_init(&f, HTTP_GET, 3, "Upgrade", "websocket", "Connection", "Upgrade",
              "Sec-WebSocket-Version", "13");
    CHECK(ws_upgrade(&f.req, hub, "c1", NULL, NULL, NULL) == TS_E_BAD_REQUEST);
    fake_done(&f);

    /* a subprotocol that would inject a header is refused */
    fake_init(&f, HTTP_GET, 4, "Upgrade", "websocket", "Connection", "Upgrade",
              "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", key);
    CHECK(ws_upgrade(&f.req, hub, "c1", "x\r\nSet-Cookie: a=b", NULL, NULL) == TS_E_BAD_REQUEST);
    CHECK(!out_has(&f, "Set-Cookie"));
    fake_done(&f);

    /* channel names are bounded: 256 bytes ok, 257 refused */
    char chan[258];
    memset(chan, 'c', sizeof(chan));
    chan[256] = '\0';
    fake_init(&f, HTTP_GET, 4, "Upgrade", "websocket", "Connection", "Upgrade",
              "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", key);
    CHECK(ws_upgrade(&f.req, hub, chan, NULL, NULL, NULL) == 0);
    fake_done(&f);
    chan[256] = 'c';
    chan[257] = '\0';
    fake_init(&f, HTTP_GET, 4, "Upgrade", "websocket", "Connection", "Upgrade",
              "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", key);
    CHECK(ws_upgrade(&f.req, hub, chan, NULL, NULL, NULL) == TS_E_BAD_REQUEST);
    fake_done(&f);
}

/* ---------- frames through a memory session ---------- */

/* Appends one client frame (masked unless masked == 0) to b. */
static void frame(struct buf *b, int fin, int opcode, int masked, const void *payload, size_t n)
{
    static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
    unsigned char h[14];
    size_t hl = 2;
    h[0] = (unsigned char)((fin ? 0x80 : 0) | opcode);
    if (n < 126) {
        h[1] = (unsigned char)n;
    } else if (n < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    if (masked) {
        h[1] |= 0x80;
        memcpy(h + hl, key, 4);
        hl += 4;
    }
    buf_append(b, h, hl);
    const unsigned char *p = payload;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = masked ? (unsigned char)(p[i] ^ key[i % 4]) : p[i];
        buf_append(b, &c, 1);
    }
}

static void close_frame(struct buf *b, uint16_t code, const char *reason)
{
    unsigned char p[125];
    size_t n = 0;
    p[n++] = (unsigned char)(code >> 8);
    p[n++] = (unsigned char)code;
    size_t rl = strlen(reason);
    memcpy(p + n, reason, rl);
    frame(b, 1, 0x8, 1, p, n + rl);
}

struct got {
    int n;
    char last[128];
    size_t last_len;
    bool binary;
    bool echo;
    int opened, closed;
};

static void got_open(struct ws_session *s, void *user)
{
    (void)s;
    ((struct got *)user)->opened++;
}

static void got_message(struct ws_session *s, void *user, const char *text, size_t n, bool bin)
{
    struct got *g = user;
    g->n++;
    g->last_len = n < sizeof(g->last) ? n : sizeof(g->last) - 1;
    memcpy(g->last, text, g->last_len);
    g->last[g->last_len] = '\0';
    g->binary = bin;
    if (g->echo)
        ws_session_send_text(s, text, n);
}

static void got_close(struct ws_session *s, void *user)
{
    (void)s;
    ((struct got *)user)->closed++;
}

static const struct ws_handlers got_handlers = {got_open, got_message, got_close};

/* Runs in at once, then byte by byte; both must agree. Leaves the whole-run output in out. */
static void run(const struct ws_limits *lim, const struct buf *in, struct got *g,
                struct buf *out, struct ws__mem_result *res)
{
    struct got g1 = *g, g2 = *g;
    struct buf o2;
    struct ws__mem_result r2;
    buf_init(out, 1 << 20);
    buf_init(&o2, 1 << 20);
    CHECK(ws__run_memory(lim, &got_handlers, &g1, (const uint8_t *)in->data, in->len, 0, out,
                         res) == 0);
    CHECK(ws__run_memory(lim, &got_handlers, &g2, (const uint8_t *)in->data, in->len, 1, &o2,
                         &r2) == 0);
    CHECK(g1.n == g2.n && strcmp(g1.last, g2.last) == 0);
    CHECK(res->close_sent == r2.close_sent && res->close_received == r2.close_received);
    CHECK(res->stats.messages_in == r2.stats.messages_in);
    CHECK(g1.opened == 1 && g1.closed == 1);
    buf_release(&o2);
    *g = g1;
}

static void test_frames_basic(void)
{
    struct buf in, out;
    struct ws__mem_result res;
    struct got g;

    /* a masked text frame, echoed back unmasked */
    buf_init(&in, 1 << 20);
    memset(&g, 0, sizeof(g));
    g.echo = true;
    frame(&in, 1, 0x1, 1, "hello", 5);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(g.n == 1 && strcmp(g.last, "hello") == 0 && !g.binary);
    CHECK(out.len == 7 && memcmp(out.data, "\x81\x05hello", 7) == 0);
    CHECK(res.stats.messages_in == 1 && res.stats.messages_out == 1 && res.close_sent == 0);
    buf_release(&out);

    /* fragmented, with a ping between the fragments: one message, one pong */
    in.len = 0;
    memset(&g, 0, sizeof(g));
    frame(&in, 0, 0x1, 1, "hel", 3);
    frame(&in, 1, 0x9, 1, "p", 1);
    frame(&in, 1, 0x0, 1, "lo", 2);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(g.n == 1 && strcmp(g.last, "hello") == 0);
    CHECK(out.len == 3 && memcmp(out.data, "\x8a\x01p", 3) == 0);
    buf_release(&out);

    /* binary */
    in.len = 0;
    memset(&g, 0, sizeof(g));
    frame(&in, 1, 0x2, 1, "\xff\x00", 2);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(g.n == 1 && g.binary && g.last_len == 2);
    buf_release(&out);

    /* close 1000 is echoed; later frames are ignored */
    in.len = 0;
    memset(&g, 0, sizeof(g));
    close_frame(&in, 1000, "bye");
    frame(&in, 1, 0x1, 1, "late", 4);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(res.close_received == 1000 && res.close_sent == 1000 && g.n == 0);
    CHECK(out.len == 7 && memcmp(out.data, "\x88\x05\x03\xe8" "bye", 7) == 0);
    buf_release(&out);

    /* an unmasked client frame is a protocol error */
    in.len = 0;
    memset(&g, 0, sizeof(g));
    frame(&in, 1, 0x1, 0, "hello", 5);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(g.n == 0 && res.close_sent == 1002 && res.close_received == 0);
    buf_release(&out);

    buf_release(&in);
}

static void test_frames_bad(void)
{
    struct buf in, out;
    struct ws__mem_result res;
    struct got g;

    buf_init(&in, 1 << 20);
    /* invalid UTF-8 in a text message: 1007 */
    memset(&g, 0, sizeof(g));
    frame(&in, 1, 0x1, 1, "ab\xc3\x28", 4);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(g.n == 0 && res.close_sent == 1007);
    buf_release(&out);

    /* a UTF-8 sequence split across fragments is fine */
    in.len = 0;
    memset(&g, 0, sizeof(g));
    frame(&in, 0, 0x1, 1, "\xc3", 1);
    frame(&in, 1, 0x0, 1, "\xa9", 1);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(g.n == 1 && strcmp(g.last, "\xc3\xa9") == 0 && res.close_sent == 0);
    buf_release(&out);

    buf_release(&in);
}

static void test_frames_limits(void)
{
    char big[32];
    struct buf in, out;
    struct ws__mem_result res;
    struct got g;

    buf_init(&in, 1 << 20);
    /* max_message (16): 16 bytes pass, 17 get 1009, also when the fragments add up */
    memset(big, 'a', sizeof(big));
    memset(&g, 0, sizeof(g));
    frame(&in, 1, 0x1, 1, big, 16);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(g.n == 1 && g.last_len == 16 && res.close_sent == 0);
    buf_release(&out);
    in.len = 0;
    memset(&g, 0, sizeof(g));
    frame(&in, 1, 0x1, 1, big, 17);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(g.n == 0 && res.close_sent == 1009);
    buf_release(&out);
    in.len = 0;
    memset(&g, 0, sizeof(g));
    frame(&in, 0, 0x1, 1, big, 10);
    frame(&in, 1, 0x0, 1, big, 7);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(g.n == 0 && res.close_sent == 1009);
    buf_release(&out);

    /* a huge length header is refused before any allocation */
    in.len = 0;
    memset(&g, 0, sizeof(g));
    buf_append(&in, "\x81\xff\x00\x00\x01\x00\x00\x00\x00\x00\x01\x02\x03\x04x", 15);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(g.n == 0 && res.close_sent == 1009);
    buf_release(&out);

    /* a close code that may not be sent on the wire (1005) is a protocol error */
    in.len = 0;
    memset(&g, 0, sizeof(g));
    close_frame(&in, 1005, "");
    run(&test_lim, &in, &g, &out, &res);
    CHECK(res.close_sent == 1002);
    buf_release(&out);

    /* a continuation with nothing to continue */
    in.len = 0;
    memset(&g, 0, sizeof(g));
    frame(&in, 1, 0x0, 1, "x", 1);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(g.n == 0 && res.close_sent == 1002);
    buf_release(&out);

    buf_release(&in);
}

static void test_slow_client(void)
{
    char big[32];
    struct buf in, out;
    struct ws__mem_result res;
    struct got g;

    memset(big, 'a', sizeof(big));
    buf_init(&in, 1 << 20);
    /* a slow client: echoes pile up (nobody drains out) until the cap (64) -> 1008. Where
     * the cut falls depends on read sizes, so the two feeds are checked separately. */
    for (int i = 0; i < 8; i++)
        frame(&in, 1, 0x1, 1, big, 16);
    for (size_t chunk = 0; chunk < 2; chunk++) {
        memset(&g, 0, sizeof(g));
        g.echo = true;
        buf_init(&out, 1 << 20);
        CHECK(ws__run_memory(&test_lim, &got_handlers, &g, (const uint8_t *)in.data, in.len,
                             chunk, &out, &res) == 0);
        CHECK(res.stats.messages_in == 8);
        CHECK(res.stats.slow_closed == 1 && res.close_sent == 1008);
        /* whole: 4 x 16 queued in wslay fit; bytewise: 3 x 18 written to out fit */
        CHECK(res.stats.messages_out == (chunk ? 3 : 4));
        CHECK(out.len <= test_lim.max_send_queue + 32);
        buf_release(&out);
    }

    buf_release(&in);
}

/* ---------- RFC 6455 verdicts, whatever the read sizes ---------- */

/* The one close code the session sends for in (run whole and bytewise by run()). */
static uint16_t verdict(const struct buf *in, int *ret_messages)
{
    struct buf out;
    struct ws__mem_result res;
    struct got g;
    memset(&g, 0, sizeof(g));
    run(&test_lim, in, &g, &out, &res);
    buf_release(&out);
    *ret_messages = g.n;
    return res.close_sent;
}

static void test_frames_rfc(void)
{
    struct buf in;
    int n;
    char p126[126];
    memset(p126, 'p', sizeof(p126));
    buf_init(&in, 1 << 20);
#define VERDICT(build, code, msgs)                                  \
    do {                                                             \
        in.len = 0;                                                  \
        build;                                                       \
        CHECK(verdict(&in, &n) == (code) && n == (msgs));            \
    } while (0)
    /* 5.5: control frames are whole and at most 125 bytes: 1002, not an empty close */
    VERDICT(frame(&in, 1, 0x9, 1, p126, 126), 1002, 0);
    VERDICT(frame(&in, 1, 0x9, 1, p126, 125), 0, 0);
    VERDICT((frame(&in, 0, 0x9, 1, "ab", 2), frame(&in, 1, 0x0, 1, "cd", 2)), 1002, 0);
    /* 5.2: RSV bits with no extension, reserved opcodes, non-minimal lengths */
    VERDICT(buf_append(&in, "\xc1\x81\x01\x02\x03\x04x", 7), 1002, 0);
    VERDICT(frame(&in, 1, 0x3, 1, "x", 1), 1002, 0);
    VERDICT(frame(&in, 1, 0xb, 1, "x", 1), 1002, 0);
    VERDICT(buf_append(&in, "\x81\xfe\x00\x01\x01\x02\x03\x04x", 9), 1002, 0);
    /* 5.4: a new message inside a fragmented one */
    VERDICT((frame(&in, 0, 0x1, 1, "a", 1), frame(&in, 1, 0x2, 1, "b", 1)), 1002, 0);
    /* 5.5.1: a one-byte close body, codes not for the wire, registered ones, the reason */
    VERDICT(frame(&in, 1, 0x8, 1, "\x03", 1), 1002, 0);
    VERDICT(close_frame(&in, 1015, ""), 1002, 0);
    VERDICT(close_frame(&in, 2999, ""), 1002, 0);
    VERDICT(close_frame(&in, 1012, ""), 1012, 0);
    VERDICT(close_frame(&in, 4999, "\xc3\xa9t\xc3\xa9"), 4999, 0); /* split bytewise too */
    VERDICT(close_frame(&in, 1000, "ok\xc3"), 1007, 0);
    VERDICT(close_frame(&in, 1000, "\xed\xa0\x80"), 1007, 0);
    VERDICT(frame(&in, 1, 0x8, 1, "", 0), 1005, 0); /* echoed without a status */
    /* 8.1: invalid UTF-8 fails at the first bad byte, before the frame is complete */
    VERDICT(buf_append(&in, "\x81\x8a\x00\x00\x00\x00" "ab\xf4\x90", 10), 1007, 0);
    VERDICT((frame(&in, 0, 0x1, 1, "\xf0\x9f", 2), frame(&in, 1, 0x0, 1, "\x98\x80", 2)), 0, 1);
    VERDICT((frame(&in, 0, 0x1, 1, "\xf0\x9f", 2), frame(&in, 1, 0x0, 1, "\x98", 1)), 1007, 0);
    /* frames after the peer's close are not read */
    VERDICT((close_frame(&in, 1000, ""), frame(&in, 1, 0x3, 1, "x", 1)), 1000, 0);
#undef VERDICT

    /* a reply queued before a close goes out before it (wslay would send the close first) */
    struct buf out;
    struct ws__mem_result res;
    struct got g;
    memset(&g, 0, sizeof(g));
    g.echo = true;
    in.len = 0;
    frame(&in, 1, 0x1, 1, "hi", 2);
    frame(&in, 1, 0x3, 1, "x", 1);
    run(&test_lim, &in, &g, &out, &res);
    CHECK(out.len == 8 && memcmp(out.data, "\x81\x02hi\x88\x02\x03\xea", 8) == 0);
    buf_release(&out);

    /* a route that reads no messages still has its text checked and its size capped */
    for (size_t chunk = 0; chunk < 2; chunk++) {
        static const struct ws_handlers push_only = {NULL, NULL, NULL};
        char big[17];
        memset(big, 'a', sizeof(big));
        in.len = 0;
        frame(&in, 1, 0x1, 1, "\xc0\xaf", 2);
        buf_init(&out, 1 << 20);
        CHECK(ws__run_memory(&test_lim, &push_only, NULL, (const uint8_t *)in.data, in.len,
                             chunk, &out, &res) == 0 && res.close_sent == 1007);
        buf_release(&out);
        in.len = 0;
        frame(&in, 1, 0x2, 1, big, 16);
        frame(&in, 1, 0x2, 1, big, 17);
        buf_init(&out, 1 << 20);
        CHECK(ws__run_memory(&test_lim, &push_only, NULL, (const uint8_t *)in.data, in.len,
                             chunk, &out, &res) == 0 && res.close_sent == 1009);
        CHECK(res.stats.messages_in == 1);
        buf_release(&out);
    }
    buf_release(&in);
}

/* ---------- hub without sessions ---------- */

struct pub_arg {
    struct ws_hub *hub;
    int ok;
};

static void *publisher(void *arg)
{
    struct pub_arg *a = arg;
    for (int i = 0; i < 1000; i++)
        if (ws_hub_publish(a->hub, "nobody", "0123456789abcdef", 16) == 0)
            a->ok++;
    return NULL;
}

static void test_hub(uv_loop_t *loop, struct ws_hub *hub)
{
    char big[32] = {0};
    CHECK(ws_hub_publish(hub, "c", big, 16) == 0);      /* limit */
    CHECK(ws_hub_publish(hub, "c", big, 17) == -E2BIG); /* limit + 1 */
    pthread_t th[4];
    struct pub_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i].hub = hub;
        args[i].ok = 0;
        CHECK(pthread_create(&th[i], NULL, publisher, &args[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].ok == 1000);
    }
    uv_run(loop, UV_RUN_NOWAIT); /* drains into no subscriber */
    const struct ws_stats *st = ws_hub_stats(hub);
    CHECK(st->sessions_active == 0 && st->messages_out == 0 && st->slow_closed == 0);
    ws_hub_close_all(hub, 1001, "shutting down");
    ws_hub_close_handles(hub);
    CHECK(ws_hub_publish(hub, "c", "x", 1) == -EPIPE);
}

int main(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct ws_hub *hub = ws_hub_new(&loop, &test_lim);
    CHECK(hub != NULL);

    test_accept_key();
    test_upgrade(hub);
    test_upgrade_refused(hub);
    test_frames_basic();
    test_frames_bad();
    test_frames_limits();
    test_slow_client();
    test_frames_rfc();
    test_hub(&loop, hub);

    uv_run(&loop, UV_RUN_DEFAULT);
    hub = ws_hub_free(hub);
    CHECK(hub == NULL && ws_hub_free(NULL) == NULL);
    CHECK(uv_loop_close(&loop) == 0);
    if (failures) {
        fprintf(stderr, "test_ws: %d check(s) failed\n", failures);
        return 1;
    }
    printf("test_ws: ok\n");
    return 0;
}
