/* WebSocket (RFC 6455): the Upgrade handshake, sessions on upgraded connections (our own frame
 * reader, wslay for what we send), and a channel hub that any thread can publish to. */
#include "http/ws.h"

#include <assert.h>
#include <errno.h>
#include <llhttp.h>
#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include "core/err.h"
#include "core/log.h"
#include "http/ws_internal.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_LEN 24                     /* base64 of 16 bytes */
#define WS_CHANNEL_MAX 256                /* bytes in a channel name */
#define WS_SUBPROTO_MAX 128               /* bytes in an echoed Sec-WebSocket-Protocol */
#define WS_REASON_MAX 123                 /* close reason bytes that fit a control frame */
#define WS_HUB_BUCKETS 256                /* channel hash buckets (chained) */
#define WS_PUBLISH_QUEUE_MAX (16u << 20)  /* bytes published but not yet drained by the loop */
#define WS_OUT_SLACK (64u * 1024)         /* frame headers and control frames past the cap */
#define WS_OUT_KEEP (64u * 1024)          /* keep an output buffer this big between writes */
#define WS_FLUSH_ROUNDS 8                 /* wslay_event_send passes per flush */
#define WS_CLOSE_GRACE_MS 1000            /* after our close: wait this long for the peer's */
#define WS_CLOSE_POLL_MS 10               /* how often a closing session checks its write queue */
#define WS_CTL_MAX 125                    /* payload bytes of a control frame (RFC 6455 5.5) */
#define WS_MSG_KEEP (64u * 1024)          /* keep a message buffer this big between messages */

struct ws_channel {
    struct ws_channel *next;              /* bucket chain */
    struct ws_session *head;              /* subscribers */
    uint32_t hash;
    char name[];
};

/* One published message waiting for the loop: channel NUL text in data[]. */
struct ws_pub {
    struct ws_pub *next;
    size_t cost;                          /* bytes charged against WS_PUBLISH_QUEUE_MAX */
    size_t n;
    const char *text;
    char data[];
};

struct ws_hub {
    uv_loop_t *loop;
    uv_async_t async;
    struct ws_limits lim;
    struct ws_stats stats;
    struct ws_channel *buckets[WS_HUB_BUCKETS];
    struct ws_session *sessions;          /* every open session */
    pthread_mutex_t mu;                   /* guards q_*, async_closed */
    struct ws_pub *q_head, **q_tail;
    size_t q_bytes;
    bool async_closed;
    bool closing;                         /* ws_hub_close_all ran: new sessions close at once */
    uint16_t close_code;
    char close_reason[WS_REASON_MAX + 1];
};

/* What we have read of the peer's frames (RFC 6455 5.2): the frame in progress, the message
 * it belongs to, and how the stream ended. Fed any split of the bytes, it reaches the same
 * verdicts, at the first byte that shows them. */
struct ws_rx {
    uint8_t hdr[14];                      /* the frame header being collected */
    uint8_t hdr_len, hdr_need;            /* hdr_need: 2 until the length byte says more */
    bool in_payload;                      /* the header is done: payload bytes follow */
    bool fin;
    uint8_t opcode;                       /* of the current frame */
    uint8_t mask[4];
    uint64_t left;                        /* payload bytes of this frame still to come */
    uint64_t off;                         /* payload bytes of this frame so far (mask phase) */
    uint8_t ctl[WS_CTL_MAX];              /* a control frame's payload */
    size_t ctl_len;
    uint8_t msg_opcode;                   /* WSLAY_TEXT_FRAME / _BINARY_FRAME; 0 = no message */
    uint32_t utf8;                        /* UTF-8 state of the open text message (utf8_step) */
    size_t msg_len;                       /* bytes in the open message */
    struct buf msg;                       /* those bytes, kept only when a handler reads them */
    bool failed;                          /* we failed the connection: only a close matters now */
    bool closed;                          /* the peer's close arrived: nothing more is read */
    uint16_t close_code;                  /* its status (1005 = none) */
};

struct ws_session {
    struct ws_hub *hub;                   /* NULL in memory mode */
    struct conn *conn;                    /* NULL once the connection has gone */
    struct ws_channel *chan;              /* NULL in memory mode */
    struct ws_session *chan_prev, *chan_next;
    struct ws_session *prev, *next;       /* hub->sessions */
    wslay_event_context_ptr ctx;
    struct ws_limits lim;
    struct ws_stats *stats;               /* the hub's, or the memory run's */
    struct ws_handlers h;
    void *user;
    struct buf *out;                      /* frames wslay produced, not yet handed to conn */
    struct buf outbuf;
    uv_timer_t timer;                     /* keepalive, then close polling */
    uint64_t next_ping_ms;
    uint64_t ping_unanswered_ms;          /* first ping with no frame since; 0 = none */
    uint64_t close_deadline_ms;
    struct ws_rx rx;
    uint16_t close_code;                  /* our close, queued after what is queued before it */
    uint8_t close_reason[WS_REASON_MAX];
    size_t close_reason_len;
    bool close_pending;                   /* close_code waits for the next flush */
    int busy;                             /* depth inside session_feed or a handler */
    bool opened;                          /* on_open ran, so on_close is owed */
    bool linked;                          /* in hub->sessions and counted as active */
    bool closing;                         /* we decided to close (close_pending or queued) */
    bool close_phase;                     /* a close frame went out; waiting to drop TCP */
    bool drop;                            /* drop the connection at the next timer tick */
    bool dead;                            /* the connection is gone; free when not busy */
};

/* What ws_upgrade hands to the server for after the 101 (lives in req->arena). */
struct ws_upgrade_arg {
    struct ws_hub *hub;
    const char *channel;
    struct ws_handlers h;
    void *user;
};

static void session_after_io(struct ws_session *s);
static void session_timer_cb(uv_timer_t *t);

/* ---------- handshake ---------- */

static bool base64_key_chars_ok(const char *k)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < WS_KEY_LEN - 2; i++)
        if (k[i] == '\0' || strchr(alphabet, k[i]) == NULL)
            return false;
    return k[WS_KEY_LEN - 2] == '=' && k[WS_KEY_LEN - 1] == '=' && k[WS_KEY_LEN] == '\0';
}

int ws_accept_key(const char *client_key, char out[29])
{
    unsigned char raw[18], digest[20], enc[32];
    char cat[WS_KEY_LEN + sizeof(WS_GUID)];
    size_t olen = 0;
    if (client_key == NULL || strnlen(client_key, WS_KEY_LEN + 1) != WS_KEY_LEN ||
        !base64_key_chars_ok(client_key))
        return -EINVAL;
    if (mbedtls_base64_decode(raw, sizeof(raw), &olen, (const unsigned char *)client_key,
                              WS_KEY_LEN) != 0 || olen != 16)
        return -EINVAL;
    memcpy(cat, client_key, WS_KEY_LEN);
    memcpy(cat + WS_KEY_LEN, WS_GUID, sizeof(WS_GUID) - 1);
    if (mbedtls_sha1_ret((const unsigned char *)cat, WS_KEY_LEN + sizeof(WS_GUID) - 1,
                         digest) != 0)
        return -EINVAL;
    if (mbedtls_base64_encode(enc, sizeof(enc), &olen, digest, sizeof(digest)) != 0 ||
        olen != 28)
        return -EINVAL;
    memcpy(out, enc, 28);
    out[28] = '\0';
    return 0;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Does the comma-separated list contain token (case-insensitive, OWS around items)? */
static bool token_list_has(const char *list, const char *token)
{
    size_t tlen = strlen(token);
    const char *p = list;
    while (*p) {
        while (is_ows(*p) || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && is_ows(end[-1]))
            end--;
        if ((size_t)(end - start) == tlen && strncasecmp(start, token, tlen) == 0)
            return true;
    }
    return false;
}

/* Any header named `name` (there may be several) whose list holds token. */
static bool header_has_token(const struct request *req, const char *name, const char *token)
{
    for (int i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0 &&
            token_list_has(req->headers[i].value, token))
            return true;
    return false;
}

/* Copies a header value without surrounding OWS into out[0..cap); false if absent or longer. */
static bool header_trimmed(const struct request *req, const char *name, char *out, size_t cap)
{
    const char *v = http_header_get(req, name);
    if (v == NULL)
        return false;
    while (is_ows(*v))
        v++;
    size_t n = strlen(v);
    while (n > 0 && is_ows(v[n - 1]))
        n--;
    if (n >= cap)
        return false;
    memcpy(out, v, n);
    out[n] = '\0';
    return true;
}

/* RFC 7230 token characters: what a subprotocol may be, and never CR/LF. */
static bool is_http_token(const char *s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    size_t n = strnlen(s, WS_SUBPROTO_MAX + 1);
    if (n == 0 || n > WS_SUBPROTO_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && strchr(extra, c) == NULL)
            return false;
    }
    return true;
}

/* Checks method, Upgrade, Connection, version and key; on success fills accept. */
static int handshake_check(struct request *req, char accept[29])
{
    char version[8], key[WS_KEY_LEN + 1];
    if (req->method != HTTP_GET)
        return TS_E_BAD_REQUEST;
    if (!header_has_token(req, "Upgrade", "websocket") ||
        !header_has_token(req, "Connection", "upgrade"))
        return TS_E_BAD_REQUEST;
    if (!header_trimmed(req, "Sec-WebSocket-Version", version, sizeof(version)) ||
        strcmp(version, "13") != 0) {
        http_header_add(req, "Sec-WebSocket-Version", "13");
        return TS_E_BAD_REQUEST;
    }
    if (!header_trimmed(req, "Sec-WebSocket-Key", key, sizeof(key)) ||
        ws_accept_key(key, accept) < 0)
        return TS_E_BAD_REQUEST;
    return 0;
}

/* ---------- channels ---------- */

static uint32_t channel_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static struct ws_channel *channel_find(struct ws_hub *hub, const char *name)
{
    uint32_t h = channel_hash(name);
    for (struct ws_channel *ch = hub->buckets[h % WS_HUB_BUCKETS]; ch; ch = ch->next)
        if (ch->hash == h && strcmp(ch->name, name) == 0)
            return ch;
    return NULL;
}

static int channel_join(struct ws_hub *hub, struct ws_session *s, const char *name)
{
    struct ws_channel *ch = channel_find(hub, name);
    if (ch == NULL) {
        size_t n = strlen(name);
        ch = calloc(1, sizeof(*ch) + n + 1);
        if (ch == NULL)
            return -ENOMEM;
        memcpy(ch->name, name, n + 1);
        ch->hash = channel_hash(name);
        ch->next = hub->buckets[ch->hash % WS_HUB_BUCKETS];
        hub->buckets[ch->hash % WS_HUB_BUCKETS] = ch;
    }
    s->chan = ch;
    s->chan_prev = NULL;
    s->chan_next = ch->head;
    if (ch->head)
        ch->head->chan_prev = s;
    ch->head = s;
    return 0;
}

static void channel_remove(struct ws_hub *hub, struct ws_channel *ch)
{
    struct ws_channel **pp = &hub->buckets[ch->hash % WS_HUB_BUCKETS];
    while (*pp != ch)
        pp = &(*pp)->next;
    *pp = ch->next;
    free(ch);
}

static void channel_leave(struct ws_hub *hub, struct ws_session *s)
{
    struct ws_channel *ch = s->chan;
    if (ch == NULL)
        return;
    if (s->chan_prev)
        s->chan_prev->chan_next = s->chan_next;
    else
        ch->head = s->chan_next;
    if (s->chan_next)
        s->chan_next->chan_prev = s->chan_prev;
    s->chan = NULL;
    s->chan_prev = s->chan_next = NULL;
    if (ch->head == NULL)
        channel_remove(hub, ch);
}

/* ---------- wslay: what we send ---------- */

/* Collects frames in s->out; a full buffer means "write what you have, then come back". */
static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                          int flags, void *user)
{
    struct ws_session *s = user;
    (void)flags;
    size_t room = s->out->max > s->out->len ? s->out->max - s->out->len : 0;
    size_t n = len < room ? len : room;
    if (n == 0 || buf_append(s->out, data, n) < 0) {
        bool can_drain = s->conn != NULL && s->out->len > 0;
        wslay_event_set_error(ctx, can_drain ? WSLAY_ERR_WOULDBLOCK : WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)n;
}

/* wslay only frames and queues what we send: its reader (1.1.1) answers broken control frames
 * with an empty close instead of 1002, takes a one-byte close body for "no status", rejects the
 * registered codes 1012-1014, restarts its close-reason UTF-8 check at byte 2 of every read
 * (a reason split across reads is misjudged both ways) and queues its closes ahead of replies
 * already queued. So the receive side below is ours and wslay_event_recv is never called. */
static const struct wslay_event_callbacks ws_callbacks = {
    .send_callback = ws_send_cb,
};

/* ---------- session core ---------- */

static struct ws_session *session_alloc(const struct ws_limits *lim, const struct ws_handlers *h,
                                        void *user)
{
    struct ws_session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    if (wslay_event_context_server_init(&s->ctx, &ws_callbacks, s) != 0) {
        free(s);
        return NULL;
    }
    s->lim = *lim;
    s->rx.hdr_need = 2;
    buf_init(&s->rx.msg, lim->max_message);
    if (h != NULL)
        s->h = *h;
    s->user = user;
    buf_init(&s->outbuf, lim->max_send_queue + WS_OUT_SLACK);
    s->out = &s->outbuf;
    return s;
}

static uint64_t session_now(const struct ws_session *s)
{
    return s->hub ? uv_now(s->hub->loop) : 0;
}

/* Bytes this client has not taken yet: the socket's queue, our buffer, wslay's queue. */
static size_t session_queued(const struct ws_session *s)
{
    size_t q = s->out->len + wslay_event_get_queued_msg_length(s->ctx);
    if (s->conn != NULL)
        q += conn_write_queue_bytes(s->conn);
    return q;
}

/* Drop the connection without (more) close handshake, from the timer, never from inside. */
static void session_drop(struct ws_session *s)
{
    if (s->drop)
        return;
    s->drop = true;
    if (s->hub != NULL && s->conn != NULL)
        uv_timer_start(&s->timer, session_timer_cb, 0, 0);
}

static int session_push_out(struct ws_session *s)
{
    if (s->conn == NULL || s->out->len == 0)
        return 0; /* memory mode keeps everything in out */
    int r = conn_write(s->conn, s->out->data, s->out->len);
    if (s->out->cap > WS_OUT_KEEP)
        buf_release(s->out);
    else
        s->out->len = 0;
    return r;
}

static int session_flush(struct ws_session *s)
{
    for (int i = 0; i < WS_FLUSH_ROUNDS && wslay_event_want_write(s->ctx); i++) {
        int r = wslay_event_send(s->ctx);
        int w = session_push_out(s);
        if (r < 0 || w < 0)
            return -EPIPE;
    }
    return 0;
}

/* Decides the close (the first decision wins; code 0 = a close without status). The frame is
 * queued at the next flush, after the messages queued before it: wslay sends control frames
 * ahead of queued data, and a reply owed before the close must not be lost to it. */
static void session_close_bytes(struct ws_session *s, uint16_t code, const void *reason,
                                size_t len)
{
    if (s->closing)
        return;
    s->closing = true;
    s->close_pending = true;
    s->close_code = code;
    s->close_reason_len = len < WS_REASON_MAX ? len : WS_REASON_MAX;
    if (s->close_reason_len > 0)
        memcpy(s->close_reason, reason, s->close_reason_len);
    if (s->busy == 0)
        session_after_io(s);
}

static void session_close_frame(struct ws_session *s, uint16_t code, const char *reason)
{
    session_close_bytes(s, code, reason, reason ? strnlen(reason, WS_REASON_MAX) : 0);
}

static int session_queue_close(struct ws_session *s)
{
    s->close_pending = false;
    int r = wslay_event_queue_close(s->ctx, s->close_code, s->close_reason, s->close_reason_len);
    if (r < 0 && r != WSLAY_ERR_NO_MORE_MSG)
        return -ENOMEM;
    return session_flush(s);
}

static void session_slow_close(struct ws_session *s)
{
    s->stats->slow_closed++;
    log_msg(LOG_DEBUG, "websocket client too slow (%zu bytes queued); closing",
            session_queued(s));
    session_close_frame(s, WSLAY_CODE_POLICY_VIOLATION, "send queue full");
}

static void session_start_close_phase(struct ws_session *s)
{
    if (s->close_phase)
        return;
    s->close_phase = true;
    s->closing = true;
    if (s->hub == NULL)
        return;
    s->close_deadline_ms = session_now(s) + WS_CLOSE_GRACE_MS;
    uv_timer_start(&s->timer, session_timer_cb, WS_CLOSE_POLL_MS, WS_CLOSE_POLL_MS);
}

/* After wslay read or queued something: write it out and see where the session stands. */
static void session_after_io(struct ws_session *s)
{
    if (s->dead || s->drop)
        return;
    if (session_flush(s) < 0 || (s->close_pending && session_queue_close(s) < 0)) {
        session_drop(s);
        return;
    }
    if (!s->closing && s->conn != NULL &&
        conn_write_queue_bytes(s->conn) > s->lim.max_send_queue) {
        session_slow_close(s); /* e.g. a peer flooding pings while not reading pongs */
        return;
    }
    if (wslay_event_get_close_sent(s->ctx))
        session_start_close_phase(s);
}

static int session_queue(struct ws_session *s, uint8_t opcode, const void *p, size_t n)
{
    if (s->dead || s->drop || s->closing)
        return -EPIPE;
    if (n > s->lim.max_send_queue)
        return -E2BIG;
    if (session_queued(s) + n > s->lim.max_send_queue) {
        session_slow_close(s);
        return -ENOBUFS;
    }
    struct wslay_event_msg m = {opcode, p, n};
    int r = wslay_event_queue_msg(s->ctx, &m);
    if (r < 0)
        return r == WSLAY_ERR_NOMEM ? -ENOMEM : -EPIPE;
    if (opcode == WSLAY_TEXT_FRAME || opcode == WSLAY_BINARY_FRAME)
        s->stats->messages_out++;
    if (s->busy == 0)
        session_after_io(s);
    return 0;
}

/* ---------- reading frames (RFC 6455 5) ---------- */

/* One byte of strict UTF-8 (RFC 3629: no overlong forms, surrogates or code points past
 * U+10FFFF). *st is 0 between characters, else the continuation bytes still due and the range
 * the next one must fall in. False at the first byte no valid text can continue with. */
static bool utf8_step(uint32_t *st, uint8_t c)
{
    uint32_t need = *st & 0xff, lo = (*st >> 8) & 0xff, hi = *st >> 16;
    if (need > 0) {
        if (c < lo || c > hi)
            return false;
        *st = need > 1 ? (need - 1) | 0x80u << 8 | 0xbfu << 16 : 0;
        return true;
    }
    if (c < 0x80)
        return true;
    if (c < 0xc2 || c > 0xf4)
        return false; /* a continuation, a 2-byte overlong lead, or past U+10FFFF */
    if (c < 0xe0)
        *st = 1 | 0x80u << 8 | 0xbfu << 16;
    else if (c < 0xf0) /* E0: no overlongs; ED: no surrogates */
        *st = 2 | (c == 0xe0 ? 0xa0u : 0x80u) << 8 | (c == 0xed ? 0x9fu : 0xbfu) << 16;
    else /* F0: no overlongs; F4: nothing past U+10FFFF */
        *st = 3 | (c == 0xf0 ? 0x90u : 0x80u) << 8 | (c == 0xf4 ? 0x8fu : 0xbfu) << 16;
    return true;
}

static bool utf8_feed(uint32_t *st, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!utf8_step(st, p[i]))
            return false;
    return true;
}

/* Status codes a peer may send (7.4 and the IANA registry): 1004-1006 and 1015 never go on
 * the wire, 1016-2999 are unassigned, 3000-4999 belong to libraries and applications. */
static bool close_code_ok(uint16_t c)
{
    return (c >= 1000 && c <= 1014 && c != 1004 && c != 1005 && c != 1006) ||
           (c >= 3000 && c <= 4999);
}

static bool opcode_is_control(uint8_t op)
{
    return (op & 0x8) != 0;
}

static bool opcode_known(uint8_t op)
{
    return op <= WSLAY_BINARY_FRAME || (op >= WSLAY_CONNECTION_CLOSE && op <= WSLAY_PONG);
}

/* _Fail the WebSocket Connection_ (7.1.7): close with code; from here on only the peer's close
 * is looked for, so TCP can go as soon as the handshake is done. */
static void rx_fail(struct ws_session *s, uint16_t code)
{
    struct ws_rx *rx = &s->rx;
    if (rx->failed)
        return;
    rx->failed = true;
    rx->msg_opcode = 0;
    buf_release(&rx->msg);
    log_msg(LOG_DEBUG, "websocket peer broke RFC 6455; closing with %u", (unsigned)code);
    session_close_frame(s, code, NULL);
}

/* Judges the header as its bytes arrive, each rule at the first byte that can break it.
 * Returns 1 with *ret_len once the header is complete, else 0. After a failure the header is
 * still parsed (unjudged), to find where the frame ends. */
static int rx_header_byte(struct ws_session *s, uint64_t *ret_len)
{
    struct ws_rx *rx = &s->rx;
    const uint8_t *h = rx->hdr;
    bool masked = (h[1] & 0x80) != 0;
    if (rx->hdr_len == 1) {
        rx->fin = (h[0] & 0x80) != 0;
        rx->opcode = h[0] & 0x0f;
        if (!rx->failed && ((h[0] & 0x70) != 0 || !opcode_known(rx->opcode)))
            rx_fail(s, WSLAY_CODE_PROTOCOL_ERROR); /* 5.2: no extension gives RSV a meaning */
        else if (!rx->failed && opcode_is_control(rx->opcode) && !rx->fin)
            rx_fail(s, WSLAY_CODE_PROTOCOL_ERROR); /* 5.5: control frames are not fragmented */
        return 0;
    }
    uint8_t len7 = h[1] & 0x7f;
    size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    if (rx->hdr_len == 2) {
        if (!rx->failed && !masked)
            rx_fail(s, WSLAY_CODE_PROTOCOL_ERROR); /* 5.1: a client masks every frame */
        else if (!rx->failed && opcode_is_control(rx->opcode) && len7 > WS_CTL_MAX)
            rx_fail(s, WSLAY_CODE_PROTOCOL_ERROR); /* 5.5: at most 125 bytes */
        rx->hdr_need = (uint8_t)(2 + ext + (masked ? 4 : 0));
    }
    uint64_t len = len7;
    if (ext > 0 && rx->hdr_len >= 2 + ext) {
        len = 0;
        for (size_t k = 0; k < ext; k++)
            len = len << 8 | h[2 + k];
        /* 5.2: the minimal length encoding, and the most significant bit 0 */
        if (!rx->failed && rx->hdr_len == 2 + ext &&
            ((ext == 2 && len < 126) || (ext == 8 && (len < 65536 || len >> 63))))
            rx_fail(s, WSLAY_CODE_PROTOCOL_ERROR);
    }
    if (rx->hdr_len < rx->hdr_need)
        return 0;
    memset(rx->mask, 0, sizeof(rx->mask));
    if (masked)
        memcpy(rx->mask, h + 2 + ext, 4);
    *ret_len = len;
    return 1;
}

/* The header is in: where do this frame's bytes go? (5.4: a message is one data frame and
 * continuations, control frames may come between them.) */
static void rx_frame_begin(struct ws_session *s, uint64_t len)
{
    struct ws_rx *rx = &s->rx;
    rx->hdr_len = 0;
    rx->hdr_need = 2;
    rx->in_payload = true;
    rx->left = len;
    rx->off = 0;
    rx->ctl_len = 0;
    if (rx->failed || opcode_is_control(rx->opcode))
        return;
    bool cont = rx->opcode == WSLAY_CONTINUATION_FRAME;
    if (cont ? rx->msg_opcode == 0 : rx->msg_opcode != 0) {
        rx_fail(s, WSLAY_CODE_PROTOCOL_ERROR); /* nothing to continue, or a message inside one */
        return;
    }
    if (!cont) {
        rx->msg_opcode = rx->opcode;
        rx->utf8 = 0;
        rx->msg_len = 0;
        rx->msg.len = 0;
    }
    if (len > s->lim.max_message - rx->msg_len)
        rx_fail(s, WSLAY_CODE_MESSAGE_TOO_BIG); /* before any of it is buffered */
}

/* Unmasks n payload bytes into dst (which may be p). */
static void rx_unmask(struct ws_rx *rx, uint8_t *dst, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = p[i] ^ rx->mask[(rx->off + i) & 3];
    rx->off += n;
}

static void rx_payload(struct ws_session *s, const uint8_t *p, size_t n)
{
    struct ws_rx *rx = &s->rx;
    uint8_t tmp[4096];
    if (opcode_is_control(rx->opcode)) {
        size_t k = n < WS_CTL_MAX - rx->ctl_len ? n : WS_CTL_MAX - rx->ctl_len;
        rx_unmask(rx, rx->ctl + rx->ctl_len, p, k); /* k < n only past a failure */
        rx->ctl_len += k;
        return;
    }
    bool text = rx->msg_opcode == WSLAY_TEXT_FRAME;
    bool keep = s->h.on_message != NULL; /* push-only routes check text without keeping it */
    while (n > 0 && !rx->failed && (text || keep)) {
        size_t k = n < sizeof(tmp) ? n : sizeof(tmp);
        uint8_t *dst = tmp;
        if (keep) {
            if (buf_reserve(&rx->msg, k) < 0) {
                rx_fail(s, WSLAY_CODE_INTERNAL_SERVER_ERROR); /* out of memory */
                return;
            }
            dst = (uint8_t *)rx->msg.data + rx->msg.len;
        }
        rx_unmask(rx, dst, p, k);
        if (text && !utf8_feed(&rx->utf8, dst, k)) {
            rx_fail(s, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA); /* 8.1, at the first bad byte */
            return;
        }
        if (keep)
            rx->msg.len += k;
        rx->msg_len += k;
        p += k;
        n -= k;
    }
    rx->msg_len += n; /* binary for a route that does not read messages */
}

/* The peer's close (5.5.1, 7.1.5): checked, then echoed (status and reason); nothing after it
 * is read. After our own close it is the answer, and the handshake is done. */
static void rx_close(struct ws_session *s)
{
    struct ws_rx *rx = &s->rx;
    const uint8_t *p = rx->ctl;
    size_t n = rx->ctl_len;
    uint16_t code = n >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 1005;
    uint32_t st = 0;
    rx->closed = true;
    rx->close_code = code;
    if (rx->failed)
        return;
    if (n == 1 || (n >= 2 && !close_code_ok(code)))
        rx_fail(s, WSLAY_CODE_PROTOCOL_ERROR);
    else if (n > 2 && (!utf8_feed(&st, p + 2, n - 2) || st != 0))
        rx_fail(s, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA); /* the reason is UTF-8 */
    else if (n >= 2)
        session_close_bytes(s, code, p + 2, n - 2);
    else
        session_close_bytes(s, 0, NULL, 0); /* a close without status */
}

static void rx_deliver(struct ws_session *s)
{
    struct ws_rx *rx = &s->rx;
    bool binary = rx->msg_opcode == WSLAY_BINARY_FRAME;
    rx->msg_opcode = 0;
    rx->msg_len = 0;
    s->stats->messages_in++;
    if (!s->closing && !s->dead && s->h.on_message != NULL)
        s->h.on_message(s, s->user, buf_cstr(&rx->msg), rx->msg.len, binary);
    if (rx->msg.cap > WS_MSG_KEEP)
        buf_release(&rx->msg);
    else
        rx->msg.len = 0;
}

static void rx_frame_end(struct ws_session *s)
{
    struct ws_rx *rx = &s->rx;
    rx->in_payload = false;
    if (rx->opcode == WSLAY_CONNECTION_CLOSE) {
        rx_close(s);
    } else if (rx->failed) {
        return;
    } else if (rx->opcode == WSLAY_PING) {
        session_queue(s, WSLAY_PONG, rx->ctl, rx->ctl_len); /* 5.5.2: the same payload */
    } else if (rx->opcode != WSLAY_PONG && rx->fin) {
        if (rx->msg_opcode == WSLAY_TEXT_FRAME && rx->utf8 != 0)
            rx_fail(s, WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA); /* ends inside a character */
        else
            rx_deliver(s);
    }
}

/* Reads the peer's bytes, split anyhow; handlers it calls may queue, never free. */
static void session_feed(struct ws_session *s, const char *bytes, size_t n)
{
    struct ws_rx *rx = &s->rx;
    const uint8_t *p = (const uint8_t *)bytes;
    size_t i = 0;
    s->ping_unanswered_ms = 0; /* any bytes prove the peer is there */
    s->busy++;
    while (i < n && !rx->closed && !s->drop && !s->dead) {
        if (!rx->in_payload) {
            uint64_t len;
            rx->hdr[rx->hdr_len++] = p[i++];
            if (rx_header_byte(s, &len) > 0) {
                rx_frame_begin(s, len);
                if (rx->left == 0)
                    rx_frame_end(s);
            }
            continue;
        }
        size_t take = rx->left < n - i ? (size_t)rx->left : n - i;
        rx_payload(s, p + i, take);
        i += take;
        rx->left -= take;
        if (rx->left == 0)
            rx_frame_end(s);
    }
    s->busy--;
    session_after_io(s);
}

int ws_session_send_text(struct ws_session *s, const char *text, size_t n)
{
    return session_queue(s, WSLAY_TEXT_FRAME, text, n);
}

void ws_session_close(struct ws_session *s, uint16_t code, const char *reason)
{
    if (s == NULL || s->dead || s->drop || s->closing)
        return;
    session_close_frame(s, code, reason);
}

const char *ws_session_channel(const struct ws_session *s)
{
    return s->chan ? s->chan->name : "";
}

/* ---------- sessions on connections ---------- */

static void session_arm_keepalive(struct ws_session *s, uint64_t now)
{
    uint64_t due = UINT64_MAX;
    if (s->lim.ping_interval_ms > 0)
        due = s->next_ping_ms;
    if (s->ping_unanswered_ms && s->lim.pong_timeout_ms > 0) {
        uint64_t dead_at = s->ping_unanswered_ms + (uint64_t)s->lim.pong_timeout_ms;
        due = dead_at < due ? dead_at : due;
    }
    if (due == UINT64_MAX) {
        uv_timer_stop(&s->timer);
        return;
    }
    uv_timer_start(&s->timer, session_timer_cb, due > now ? due - now : 1, 0);
}

static void session_ping(struct ws_session *s, uint64_t now)
{
    s->next_ping_ms = now + (uint64_t)s->lim.ping_interval_ms;
    if (s->ping_unanswered_ms == 0)
        s->ping_unanswered_ms = now;
    session_queue(s, WSLAY_PING, NULL, 0);
}

static void session_keepalive(struct ws_session *s)
{
    uint64_t now = session_now(s);
    if (s->ping_unanswered_ms && s->lim.pong_timeout_ms > 0 &&
        now - s->ping_unanswered_ms >= (uint64_t)s->lim.pong_timeout_ms) {
        log_msg(LOG_DEBUG, "websocket peer silent for %d ms after a ping; dropping",
                s->lim.pong_timeout_ms);
        conn_close(s->conn); /* the peer is gone: no handshake to wait for */
        return;
    }
    if (s->lim.ping_interval_ms > 0 && now >= s->next_ping_ms)
        session_ping(s, now);
    if (!s->drop && !s->close_phase && s->conn != NULL)
        session_arm_keepalive(s, now);
}

static void session_close_poll(struct ws_session *s)
{
    bool flushed = s->out->len == 0 && conn_write_queue_bytes(s->conn) == 0;
    bool peer_closed = s->rx.closed;
    if ((flushed && peer_closed) || session_now(s) >= s->close_deadline_ms)
        conn_close(s->conn);
}

static void session_timer_cb(uv_timer_t *t)
{
    struct ws_session *s = t->data;
    if (s->conn == NULL)
        return;
    if (s->drop)
        conn_close(s->conn);
    else if (s->close_phase)
        session_close_poll(s);
    else
        session_keepalive(s);
}

static void session_free_cb(uv_handle_t *h)
{
    free(h->data);
}

static void session_unlink(struct ws_session *s)
{
    struct ws_hub *hub = s->hub;
    channel_leave(hub, s);
    if (!s->linked)
        return;
    s->linked = false;
    if (s->prev)
        s->prev->next = s->next;
    else if (hub->sessions == s)
        hub->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    hub->stats.sessions_active--;
}

/* The connection is gone: tell the handler, leave the hub, free when the timer has closed. */
static void session_destroy(struct ws_session *s)
{
    if (s->opened && s->h.on_close) {
        s->busy++;
        s->h.on_close(s, s->user);
        s->busy--;
    }
    session_unlink(s);
    wslay_event_context_free(s->ctx);
    s->ctx = NULL;
    buf_release(&s->outbuf);
    buf_release(&s->rx.msg);
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, session_free_cb);
}

static void session_conn_read(struct conn *c, void *data, const char *bytes, size_t n)
{
    struct ws_session *s = data;
    (void)c;
    if (s->dead || n == 0)
        return;
    session_feed(s, bytes, n);
}

static void session_conn_close(struct conn *c, void *data)
{
    struct ws_session *s = data;
    (void)c;
    s->conn = NULL;
    s->dead = true;
    if (s->busy == 0)
        session_destroy(s);
}

static const struct conn_proto ws_proto = {
    .on_read = session_conn_read,
    .on_close = session_conn_close,
};

static void session_open(struct ws_session *s)
{
    struct ws_hub *hub = s->hub;
    s->next = hub->sessions;
    if (hub->sessions)
        hub->sessions->prev = s;
    hub->sessions = s;
    s->linked = true;
    hub->stats.sessions_active++;
    hub->stats.sessions_total++;
    uint64_t now = session_now(s);
    s->next_ping_ms = now + (uint64_t)(s->lim.ping_interval_ms > 0 ? s->lim.ping_interval_ms : 0);
    session_arm_keepalive(s, now);
    s->opened = true;
    if (s->h.on_open)
        s->h.on_open(s, s->user);
    if (hub->closing)
        ws_session_close(s, hub->close_code, hub->close_reason);
}

/* Runs after the server wrote the 101, before it frees req: copy what we need out of it. */
static void ws_upgrade_cb(struct request *req, struct conn *c)
{
    struct ws_upgrade_arg *u = req->upgrade_arg;
    if (u->hub->async_closed) { /* the hub is shutting its handles: no new timers */
        conn_close(c);
        return;
    }
    struct ws_session *s = session_alloc(&u->hub->lim, &u->h, u->user);
    if (s == NULL || channel_join(u->hub, s, u->channel) < 0) {
        if (s != NULL) {
            wslay_event_context_free(s->ctx);
            free(s);
        }
        log_msg(LOG_WARN, "websocket session: out of memory");
        conn_close(c);
        return;
    }
    s->hub = u->hub;
    s->stats = &u->hub->stats;
    s->conn = c;
    uv_timer_init(u->hub->loop, &s->timer);
    s->timer.data = s;
    conn_set_proto(c, &ws_proto, s);
    session_open(s);
}

const char *ws_bearer_token(struct request *req)
{
    const char *offered = http_header_get(req, "Sec-WebSocket-Protocol");
    if (offered == NULL)
        return NULL;
    /* "bearer, <token>": browsers cannot set Authorization on a WebSocket */
    const char *p = offered;
    while (*p == ' ')
        p++;
    if (strncasecmp(p, "bearer", 6) != 0 || p[6] != ',')
        return NULL;
    p += 7;
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, ", ");
    if (n == 0 || n > 4096)
        return NULL;
    return arena_strndup(req->arena, p, n);
}

int ws_upgrade(struct request *req, struct ws_hub *hub, const char *channel,
               const char *subprotocol, const struct ws_handlers *h, void *user)
{
    char accept[29];
    assert(hub != NULL && channel != NULL);
    if (subprotocol == NULL && ws_bearer_token(req) != NULL)
        subprotocol = "bearer"; /* a client that offered one must get one back */
    int r = handshake_check(req, accept);
    if (r < 0)
        return r;
    if (strnlen(channel, WS_CHANNEL_MAX + 1) > WS_CHANNEL_MAX ||
        (subprotocol != NULL && !is_http_token(subprotocol)))
        return TS_E_BAD_REQUEST;
    if (hub->closing)
        return TS_E_UNAVAILABLE;
    if (http_header_add(req, "Upgrade", "websocket") < 0 ||
        http_header_add(req, "Connection", "Upgrade") < 0 ||
        http_header_add(req, "Sec-WebSocket-Accept", accept) < 0 ||
        (subprotocol && http_header_add(req, "Sec-WebSocket-Protocol", subprotocol) < 0))
        return TS_E_INTERNAL;
    struct ws_upgrade_arg *u = arena_calloc(req->arena, sizeof(*u));
    u->hub = hub;
    u->channel = arena_strdup(req->arena, channel);
    if (h != NULL)
        u->h = *h;
    u->user = user;
    req->status = 101;
    req->upgrade_cb = ws_upgrade_cb;
    req->upgrade_arg = u;
    return 0;
}

/* ---------- hub ---------- */

static void hub_deliver(struct ws_hub *hub, const struct ws_pub *m)
{
    struct ws_channel *ch = channel_find(hub, m->data);
    if (ch == NULL)
        return;
    /* sends never free a session synchronously (drops go through its timer) */
    for (struct ws_session *s = ch->head, *next; s; s = next) {
        next = s->chan_next;
        ws_session_send_text(s, m->text, m->n);
    }
}

static struct ws_pub *hub_take_queue(struct ws_hub *hub)
{
    pthread_mutex_lock(&hub->mu);
    struct ws_pub *list = hub->q_head;
    hub->q_head = NULL;
    hub->q_tail = &hub->q_head;
    hub->q_bytes = 0;
    pthread_mutex_unlock(&hub->mu);
    return list;
}

static void hub_async_cb(uv_async_t *a)
{
    struct ws_hub *hub = a->data;
    struct ws_pub *list = hub_take_queue(hub);
    while (list) {
        struct ws_pub *m = list;
        list = m->next;
        hub_deliver(hub, m);
        free(m);
    }
}

struct ws_hub *ws_hub_new(uv_loop_t *loop, const struct ws_limits *lim)
{
    struct ws_hub *hub = calloc(1, sizeof(*hub));
    if (hub == NULL)
        return NULL;
    if (pthread_mutex_init(&hub->mu, NULL) != 0) {
        free(hub);
        return NULL;
    }
    if (uv_async_init(loop, &hub->async, hub_async_cb) < 0) {
        pthread_mutex_destroy(&hub->mu);
        free(hub);
        return NULL;
    }
    hub->loop = loop;
    hub->lim = *lim;
    hub->async.data = hub;
    hub->q_tail = &hub->q_head;
    return hub;
}

int ws_hub_publish(struct ws_hub *hub, const char *channel, const char *text, size_t n)
{
    size_t clen = strnlen(channel, WS_CHANNEL_MAX + 1);
    if (n > hub->lim.max_message)
        return -E2BIG;
    if (clen > WS_CHANNEL_MAX)
        return -EINVAL;
    size_t cost = sizeof(struct ws_pub) + clen + 1 + n;
    struct ws_pub *m = malloc(cost);
    if (m == NULL)
        return -ENOMEM;
    memcpy(m->data, channel, clen);
    m->data[clen] = '\0';
    if (n > 0)
        memcpy(m->data + clen + 1, text, n);
    m->text = m->data + clen + 1;
    m->n = n;
    m->cost = cost;
    m->next = NULL;
    int r = 0;
    pthread_mutex_lock(&hub->mu);
    if (hub->async_closed) {
        r = -EPIPE;
    } else if (hub->q_bytes + cost > WS_PUBLISH_QUEUE_MAX) {
        r = -ENOMEM; /* the loop is this far behind: refuse rather than grow */
    } else {
        *hub->q_tail = m;
        hub->q_tail = &m->next;
        hub->q_bytes += cost;
        uv_async_send(&hub->async); /* under the lock: never after uv_close */
    }
    pthread_mutex_unlock(&hub->mu);
    if (r < 0)
        free(m);
    return r;
}

void ws_hub_close_all(struct ws_hub *hub, uint16_t code, const char *reason)
{
    size_t len = reason ? strnlen(reason, WS_REASON_MAX) : 0;
    hub->closing = true;
    hub->close_code = code;
    if (len > 0)
        memcpy(hub->close_reason, reason, len);
    hub->close_reason[len] = '\0';
    /* closes never free a session synchronously, so the list stays intact */
    for (struct ws_session *s = hub->sessions; s; s = s->next)
        ws_session_close(s, code, hub->close_reason);
}

void ws_hub_close_handles(struct ws_hub *hub)
{
    hub->closing = true;
    while (hub->sessions != NULL) {
        struct ws_session *s = hub->sessions;
        if (s->conn != NULL)
            conn_close(s->conn); /* -> session_conn_close -> unlinked, timer closing */
        else
            session_unlink(s); /* dead but busy: only if called from inside a handler */
    }
    pthread_mutex_lock(&hub->mu);
    bool was_closed = hub->async_closed;
    hub->async_closed = true;
    pthread_mutex_unlock(&hub->mu);
    if (!was_closed)
        uv_close((uv_handle_t *)&hub->async, NULL);
}

struct ws_hub *ws_hub_free(struct ws_hub *hub)
{
    if (hub == NULL)
        return NULL;
    struct ws_pub *list = hub_take_queue(hub);
    while (list) {
        struct ws_pub *m = list;
        list = m->next;
        free(m);
    }
    for (int i = 0; i < WS_HUB_BUCKETS; i++) {
        while (hub->buckets[i]) {
            struct ws_channel *ch = hub->buckets[i];
            hub->buckets[i] = ch->next;
            free(ch);
        }
    }
    pthread_mutex_destroy(&hub->mu);
    free(hub);
    return NULL;
}

const struct ws_stats *ws_hub_stats(const struct ws_hub *hub)
{
    return &hub->stats;
}

/* ---------- memory mode (tests, fuzzing) ---------- */

static void mem_result(const struct ws_session *s, struct ws__mem_result *ret)
{
    ret->stats = *s->stats;
    ret->close_sent = wslay_event_get_close_sent(s->ctx)
                          ? wslay_event_get_status_code_sent(s->ctx) : 0;
    ret->close_received = s->rx.closed ? s->rx.close_code : 0;
    ret->dropped = s->drop;
}

int ws__run_memory(const struct ws_limits *lim, const struct ws_handlers *h, void *user,
                   const uint8_t *data, size_t n, size_t chunk, struct buf *out,
                   struct ws__mem_result *ret)
{
    struct ws_stats stats = {0};
    if (lim == NULL || out == NULL || ret == NULL || (data == NULL && n > 0))
        return -EINVAL;
    struct ws_session *s = session_alloc(lim, h, user);
    if (s == NULL)
        return -ENOMEM;
    s->stats = &stats;
    s->out = out;
    s->opened = true;
    if (s->h.on_open)
        s->h.on_open(s, s->user);
    size_t step = chunk ? chunk : (n ? n : 1);
    for (size_t off = 0; off < n && !s->drop; off += step)
        session_feed(s, (const char *)data + off, n - off < step ? n - off : step);
    mem_result(s, ret);
    s->dead = true;
    if (s->h.on_close)
        s->h.on_close(s, s->user);
    wslay_event_context_free(s->ctx);
    buf_release(&s->outbuf);
    buf_release(&s->rx.msg);
    free(s);
    return 0;
}
