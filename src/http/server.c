/* HTTP/1.1 connections on libuv: accept, llhttp parsing with limits, timeouts, ordered writes. */
#include "http/http.h"

#include <errno.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "http/tls.h"

#define READ_SLAB (64 * 1024)
#define PENDING_MAX (256 * 1024) /* unparsed pipelined bytes held per connection */
#define MAX_FLUSH_ROUNDS 16
#define STREAM_CHUNK (64 * 1024)
/* Connections the kernel queues before accept: the most Linux takes by default (somaxconn).
 * The soak opens 2,000 client connections at once beside 1,000 slow ones; a SYN dropped from a
 * full queue costs its client a retransmit (1 s, then 3 s) that no server figure shows. */
#define LISTEN_BACKLOG 4096
#define STREAM_QUEUE (256 * 1024)   /* file bytes in flight to one client */
#define WRITE_HIGH (256 * 1024)     /* unsent response bytes past which a connection takes no
                                     * further pipelined request until they drain */

enum conn_state {
    CONN_IDLE,       /* waiting for the first byte of a request */
    CONN_READING,    /* a request is arriving */
    CONN_BUSY,       /* a request is being handled or its response is queued */
    CONN_PROTO,      /* upgraded: bytes belong to conn->proto */
    CONN_STREAMING,  /* a file body is going out as the client reads it */
    CONN_CLOSING
};

struct hdr_rec {
    uint32_t name_off, value_off;
};

/*
 * Our own pass over each request head before llhttp sees it. llhttp 8.1.0 (Debian's) predates
 * the fixes for CVE-2023-30589 and CVE-2024-27982 and lets through framing that another parser
 * in front of us could read differently: a CR not followed by LF, an LF without its CR, a line
 * folded onto the previous one (obs-fold, a space before a header name), a request line that
 * is not exactly METHOD SP target SP version. RFC 9112 lets a server answer all of them 400
 * (sections 2.2, 3, 5.2); real clients send none. The head ends at its empty line; the body and
 * the chunk framing are llhttp's (it is strict there), the trailer section after the last chunk
 * is checked like a head (on_chunk_header pauses llhttp there).
 */
enum head_scan_state {
    HS_START,       /* before the request line; empty lines are skipped (RFC 9112 2.2) */
    HS_REQLINE,
    HS_LINE_START,  /* first byte of a header line, or of the empty line that ends the head */
    HS_FIELD,
    HS_DONE
};

struct head_scan {
    uint8_t state;
    uint8_t spaces;  /* SPs in the request line */
    bool cr;         /* the last byte was CR: LF must follow */
    bool prev_sp;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct server *srv;
    struct conn *prev, *next;       /* server's list */
    llhttp_t parser;
    enum conn_state state;
    int handles_open;
    int pending_err;                /* ts_err set inside a callback */
    bool in_header_value;
    struct head_scan scan;          /* of the request being read, until its head is in */
    bool trailer_pause;             /* llhttp paused at the last chunk: trailers come next */
    bool reading;
    struct request *req;            /* the request being parsed or handled */
    bool req_dispatched;            /* req belongs to the dispatcher until it is sent */
    bool in_body;                   /* headers parsed, body still arriving */
    struct buf url, hdr;            /* accumulate while parsing */
    struct hdr_rec *recs;
    int nrecs, recs_cap;
    size_t body_limit;
    struct buf pending;             /* unparsed bytes from a pipelined read */
    size_t write_queue;             /* bytes handed to uv_write, not yet done */
    int stream_fd;                  /* file body being streamed, -1 if none */
    const char *stream_mem;         /* or memory being streamed (request.out_mem) */
    int64_t stream_off, stream_left;
    bool stream_close;              /* close once the file is out */
    struct tls_conn *tls;
    const struct conn_proto *proto;
    void *proto_data;
    struct conn *next_resume;
    bool resume_queued;
    bool write_blocked;             /* idle, but waiting for its responses to drain */
};

struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listening;
    uv_check_t check;
    uv_idle_t wake;                 /* keeps poll from blocking while responses wait */
    uv_timer_t retry;
    uv_timer_t drain_timer;
    struct server_limits lim;
    struct server_hooks hooks;
    struct server_stats stats;
    struct conn *conns;
    struct request *ready_head, **ready_tail;
    struct conn *resume_head;
    struct tls_ctx *tls;
    llhttp_settings_t settings;
    bool draining;
    void (*drain_done)(struct server *);
    char slab[READ_SLAB];
    bool slab_busy;
};

struct write_req {
    uv_write_t w;
    struct conn *c;
    size_t len;
    char data[];
};

static void conn_parse(struct conn *c, const char *data, size_t n);
static void conn_close_cb(uv_handle_t *h);
static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);
static void conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b);

/* ---------- small helpers ---------- */

const char *http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 422: return "Unprocessable Entity";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
    }
}

const char *http_header_get(const struct request *req, const char *name)
{
    for (int i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

const char *http_param_get(const struct request *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].name, name) == 0)
            return req->params[i].value;
    return NULL;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *http_url_decode(struct arena *a, const char *src, size_t n, bool form)
{
    char *out = arena_alloc(a, n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '%') {
            int hi = i + 1 < n ? hexval((unsigned char)src[i + 1]) : -1;
            int lo = i + 2 < n ? hexval((unsigned char)src[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return NULL; /* bad escape, or an embedded NUL */
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (form && src[i] == '+') {
            out[o++] = ' ';
        } else {
            out[o++] = src[i];
        }
    }
    out[o] = '\0';
    return out;
}

const char *http_query_get(struct request *req, const char *name)
{
    if (req->query == NULL)
        return NULL;
    size_t nlen = strlen(name);
    const char *p = req->query;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        char *key = http_url_decode(req->arena, p, klen, true);
        if (key && strlen(key) == nlen && memcmp(key, name, nlen) == 0) {
            if (!eq)
                return "";
            return http_url_decode(req->arena, eq + 1, len - klen - 1, true);
        }
        p += len + (amp ? 1 : 0);
    }
    return NULL;
}

int http_header_add(struct request *req, const char *name, const char *value)
{
    if (req->out_headers.max == 0)
        buf_init(&req->out_headers, 16384);
    return buf_printf(&req->out_headers, "%s: %s\r\n", name, value);
}

void conn_set_proto(struct conn *c, const struct conn_proto *p, void *data)
{
    c->proto = p;
    c->proto_data = data;
    c->state = CONN_PROTO;
}

uv_loop_t *conn_loop(const struct conn *c)
{
    return c->srv->loop;
}

void conn_peer_address(struct conn *c, char *out, size_t n)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    snprintf(out, n, "unknown");
    if (c == NULL || uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET)
        uv_ip4_name((struct sockaddr_in *)&ss, out, n);
    else if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, out, n);
}

size_t conn_write_queue_bytes(const struct conn *c)
{
    return c->write_queue;
}

const struct server_stats *server_stats(const struct server *s)
{
    return &s->stats;
}

void *server_arg(const struct server *s)
{
    return s->hooks.arg;
}

bool server_draining(const struct server *s)
{
    return s->draining;
}

/* ---------- timers ---------- */

static void conn_timer_cb(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->state == CONN_READING && c->req != NULL) {
        c->pending_err = TS_E_TIMEOUT;
        c->state = CONN_BUSY;
        if (c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = false;
        }
        c->req->close_after = true;
        c->req_dispatched = true;
        c->srv->hooks.on_error(c->req, TS_E_TIMEOUT);
        return;
    }
    if (c->state == CONN_IDLE || c->state == CONN_STREAMING)
        conn_close(c); /* idle too long, or a download whose reader stopped reading */
}

static void conn_timer_arm(struct conn *c, int ms)
{
    uv_timer_start(&c->timer, conn_timer_cb, (uint64_t)ms, 0);
}

/* ---------- writing ---------- */

static void conn_stream_pump(struct conn *c);
static void conns_resume(struct server *s);
static void conn_take_next(struct server *s, struct conn *c);

static void conn_write_cb(uv_write_t *w, int status)
{
    struct write_req *wr = (struct write_req *)w;
    struct conn *c = wr->c;
    c->write_queue -= wr->len;
    free(wr);
    if (status < 0 && c->state != CONN_CLOSING)
        conn_close(c);
    else if (c->state == CONN_STREAMING)
        conn_stream_pump(c);
    else if (c->write_blocked && c->state == CONN_IDLE && c->write_queue <= WRITE_HIGH) {
        conn_take_next(c->srv, c);
        conns_resume(c->srv);
    }
}

/* What the socket does not take at once is queued: copied, or (lasting: memory that outlives
 * the connection, e.g. an embedded file) referenced where it is. */
static int conn_write_plain(struct conn *c, const void *bytes, size_t n, bool lasting)
{
    if (c->state == CONN_CLOSING)
        return -EPIPE;
    if (c->write_queue == 0) {
        /* most responses fit the socket buffer: write now, queue only what is left */
        uv_buf_t now = uv_buf_init((char *)bytes, (unsigned)n);
        int w = uv_try_write((uv_stream_t *)&c->tcp, &now, 1);
        if (w == (int)n)
            return 0;
        if (w < 0 && w != UV_EAGAIN && w != UV_ENOSYS)
            return w;
        if (w > 0) {
            bytes = (const char *)bytes + w;
            n -= (size_t)w;
        }
    }
    struct write_req *wr = malloc(sizeof(*wr) + (lasting ? 0 : n));
    if (wr == NULL)
        return -ENOMEM;
    wr->c = c;
    wr->len = n;
    if (!lasting)
        memcpy(wr->data, bytes, n);
    uv_buf_t b = uv_buf_init(lasting ? (char *)bytes : wr->data, (unsigned)n);
    int r = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);
    if (r < 0) {
        free(wr);
        return r;
    }
    c->write_queue += n;
    return 0;
}

static int conn_write_raw(struct conn *c, const void *bytes, size_t n)
{
    return conn_write_plain(c, bytes, n, false);
}

int conn_write(struct conn *c, const void *bytes, size_t n)
{
    if (c->tls == NULL)
        return conn_write_raw(c, bytes, n);
    struct buf out;
    buf_init(&out, n + n / 256 + 64 * 1024);
    int r = tls_conn_encrypt(c->tls, bytes, n, &out);
    if (r == 0 && out.len > 0)
        r = conn_write_raw(c, out.data, out.len);
    buf_release(&out);
    return r;
}

/* ---------- connection lifecycle ---------- */

static void request_free(struct request *req)
{
    if (req->body_fd >= 0)
        close(req->body_fd);
    if (req->out_fd >= 0)
        close(req->out_fd);
    if (req->body_path)
        unlink(req->body_path); /* a handler that keeps the bytes moves or copies them first */
    buf_release(&req->body);
    buf_release(&req->out_headers);
    buf_release(&req->out_body);
    arena_free(req->arena);
}

static void conn_unlink(struct conn *c)
{
    struct server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else if (s->conns == c)
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void conn_maybe_done(struct conn *c)
{
    if (c->handles_open > 0)
        return;
    struct server *s = c->srv;
    buf_release(&c->url);
    buf_release(&c->hdr);
    buf_release(&c->pending);
    free(c->recs);
    c->tls = tls_conn_free(c->tls);
    if (c->stream_fd >= 0)
        close(c->stream_fd);
    free(c);
    s->stats.connections_active--;
    if (s->draining && s->conns == NULL && s->drain_done) {
        void (*done)(struct server *) = s->drain_done;
        s->drain_done = NULL;
        uv_timer_stop(&s->drain_timer);
        done(s);
    }
}

static void conn_close_cb(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->handles_open--;
    conn_maybe_done(c);
}

void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    if (c->proto && c->proto->on_close)
        c->proto->on_close(c, c->proto_data);
    c->proto = NULL;
    c->state = CONN_CLOSING;
    conn_unlink(c);
    if (c->req != NULL && c->req_dispatched) {
        /* in flight (pool) or queued: the request lives on and is dropped when sent */
        c->req->conn = NULL;
    } else if (c->req != NULL) {
        request_free(c->req); /* still arriving: nobody else has seen it */
    }
    c->req = NULL;
    uv_close((uv_handle_t *)&c->timer, conn_close_cb);
    uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
}

void server_close_all(struct server *s)
{
    while (s->conns)
        conn_close(s->conns);
}

/* ---------- llhttp callbacks ---------- */

static struct request *request_new(struct conn *c)
{
    struct arena *a = arena_new(4096);
    struct request *req = arena_calloc(a, sizeof(*req));
    req->arena = a;
    req->conn = c;
    req->srv = c->srv;
    req->start_ns = clock_mono_ns();
    req->surface = -1;
    req->body_fd = -1;
    req->out_fd = -1;
    buf_init(&req->body, c->srv->lim.max_body);
    buf_init(&req->out_headers, 16384);
    buf_init(&req->out_body, 64 << 20);
    return req;
}

static int on_message_begin(llhttp_t *p)
{
    struct conn *c = p->data;
    if (c->req == NULL)
        c->req = request_new(c);
    c->url.len = c->hdr.len = 0;
    c->nrecs = 0;
    c->in_header_value = false;
    c->body_limit = c->srv->lim.max_body;
    if (c->state == CONN_IDLE) {
        c->state = CONN_READING;
        conn_timer_arm(c, c->srv->lim.header_timeout_ms);
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (buf_append(&c->url, at, n) < 0) {
        c->pending_err = TS_E_URI_TOO_LONG;
        return -1;
    }
    return 0;
}

static int hdr_append(struct conn *c, const char *at, size_t n)
{
    if (buf_append(&c->hdr, at, n) < 0) {
        c->pending_err = TS_E_HEADERS_TOO_LARGE;
        return -1;
    }
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    if (!c->in_header_value && c->nrecs > 0 && c->recs[c->nrecs - 1].value_off == UINT32_MAX)
        return hdr_append(c, at, n); /* continuation of the same name */
    if (c->nrecs == c->srv->lim.max_headers) {
        c->pending_err = TS_E_HEADERS_TOO_LARGE;
        return -1;
    }
    if (c->nrecs == c->recs_cap) { /* grows as a client needs: idle connections stay small */
        int cap = c->recs_cap ? c->recs_cap * 2 : 16;
        if (cap > c->srv->lim.max_headers)
            cap = c->srv->lim.max_headers;
        struct hdr_rec *n = realloc(c->recs, sizeof(*c->recs) * (size_t)cap);
        if (n == NULL)
            return -1;
        c->recs = n;
        c->recs_cap = cap;
    }
    c->recs[c->nrecs].name_off = (uint32_t)c->hdr.len;
    c->recs[c->nrecs].value_off = UINT32_MAX;
    c->nrecs++;
    c->in_header_value = false;
    return hdr_append(c, at, n);
}

static int on_header_field_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    if (hdr_append(c, "", 1) < 0)
        return -1;
    c->recs[c->nrecs - 1].value_off = (uint32_t)c->hdr.len;
    c->in_header_value = true;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    return hdr_append(p->data, at, n);
}

static int on_header_value_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->in_header_value = false;
    return hdr_append(c, "", 1);
}

static void request_take_headers(struct conn *c, struct request *req)
{
    struct arena *a = req->arena;
    char *url = arena_strndup(a, c->url.data ? c->url.data : "", c->url.len);
    char *q = strchr(url, '?');
    if (q) {
        *q = '\0';
        req->query = q + 1;
    }
    char *hash = strchr(req->query ? req->query : url, '#');
    if (hash)
        *hash = '\0';
    req->path = url;
    req->method = llhttp_get_method(&c->parser);
    req->method_name = llhttp_method_name((llhttp_method_t)req->method);
    char *block = arena_strndup(a, c->hdr.data ? c->hdr.data : "", c->hdr.len);
    req->headers = arena_alloc(a, sizeof(*req->headers) * (size_t)(c->nrecs + 1));
    req->nheaders = 0;
    for (int i = 0; i < c->nrecs; i++) {
        if (c->recs[i].value_off == UINT32_MAX)
            continue;
        req->headers[req->nheaders].name = block + c->recs[i].name_off;
        req->headers[req->nheaders].value = block + c->recs[i].value_off;
        req->nheaders++;
    }
}

/* A spooled body goes to an unlinked-on-free temp file, never whole into memory. */
static int body_spool_open(struct server *s, struct request *req)
{
    const char *dir = s->lim.spool_dir ? s->lim.spool_dir : getenv("TMPDIR");
    req->body_path = arena_printf(req->arena, "%s/tessera-body-XXXXXX", dir ? dir : "/tmp");
    req->body_fd = mkstemp(req->body_path);
    if (req->body_fd < 0) {
        int e = errno;
        log_msg(LOG_ERROR, "cannot create spool file in %s: %s", dir ? dir : "/tmp",
                strerror(e));
        req->body_path = NULL;
        return -e;
    }
    return 0;
}

static int body_spool_write(struct request *req, const char *at, size_t n)
{
    while (n > 0) {
        ssize_t w = write(req->body_fd, at, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -ENOSPC;
        at += w;
        n -= (size_t)w;
    }
    return 0;
}

/* v is want (n bytes, any case) with optional whitespace around it. */
static bool header_value_is(const char *v, const char *want, size_t n)
{
    v += strspn(v, " \t");
    if (strncasecmp(v, want, n) != 0)
        return false;
    return v[n + strspn(v + n, " \t")] == '\0';
}

/* An absolute-form target (RFC 9112 3.2.2) is served as its origin-form when its authority is
 * the Host header's; another authority would give "which host" two answers, and a proxy in
 * front of us may have acted on the other one. */
static int request_absolute_form(struct request *req, const char *host)
{
    char *p = req->path;
    size_t skip = strncasecmp(p, "http://", 7) == 0 ? 7 : strncasecmp(p, "https://", 8) == 0 ? 8 : 0;
    if (skip == 0)
        return 0;
    char *auth = p + skip;
    size_t n = strcspn(auth, "/");
    if (n == 0 || host == NULL || memchr(auth, '@', n) || !header_value_is(host, auth, n))
        return -1;
    req->path = auth[n] ? auth + n : arena_strndup(req->arena, "/", 1);
    return 0;
}

/* After the absolute form, the target is an origin-form path, or "*" alone for a server-wide
 * OPTIONS (RFC 9112 3.2.4). llhttp 8.1.0 takes "*" followed by anything ("*" then "/x" was
 * served, found by the http fuzz target) and CONNECT's authority-form, which an origin server
 * has no use for. */
static bool request_target_ok(const struct request *req)
{
    if (req->path[0] == '/')
        return true;
    return strcmp(req->path, "*") == 0 && req->query == NULL && req->method == HTTP_OPTIONS;
}

/* Framing that llhttp 8.1.0 accepts and RFC 9112 does not: a Transfer-Encoding other than
 * exactly one "chunked" (we decode no other coding, and in a list only the last one frames the
 * body: 6.3 says 400), one in an HTTP/1.0 request (6.1: faulty framing), a second Host (3.2),
 * whitespace between a field name and its colon (5.1: MUST reject; llhttp passes "Foo : x"
 * as the name "Foo " for any field it does not know, so "Authorization : ..." would be a
 * different field to us than to a proxy that trims it; found by the http fuzz target). */
static int request_framing_check(const llhttp_t *p, struct request *req)
{
    int hosts = 0, codings = 0;
    const char *host = NULL;
    for (int i = 0; i < req->nheaders; i++) {
        const char *name = req->headers[i].name, *value = req->headers[i].value;
        if (name[strcspn(name, " \t")] != '\0')
            return -1;
        if (strcasecmp(name, "Host") == 0) {
            hosts++;
            host = value;
        } else if (strcasecmp(name, "Transfer-Encoding") == 0) {
            if (++codings > 1 || !header_value_is(value, "chunked", 7))
                return -1;
        }
    }
    if (hosts > 1 || (codings > 0 && p->http_major * 10 + p->http_minor < 11))
        return -1;
    if (request_absolute_form(req, host) < 0)
        return -1;
    return request_target_ok(req) ? 0 : -1;
}

static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct request *req = c->req;
    request_take_headers(c, req);
    if (request_framing_check(p, req) < 0) {
        c->pending_err = TS_E_BAD_REQUEST;
        return -1;
    }
    size_t limit = c->srv->hooks.body_limit ? c->srv->hooks.body_limit(req) : 0;
    c->body_limit = limit ? limit : c->srv->lim.max_body;
    req->body.max = c->body_limit;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->body_limit) {
        c->pending_err = TS_E_TOO_LARGE;
        return -1;
    }
    int sr = req->spool ? body_spool_open(c->srv, req) : 0;
    if (sr < 0) {
        c->pending_err = err_from_errno(sr); /* a full disk is 507, not 500 */
        return -1;
    }
    const char *expect = http_header_get(req, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0)
        conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    c->in_body = true;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    struct request *req = c->req;
    if (req->body_size + n > c->body_limit) {
        c->pending_err = TS_E_TOO_LARGE;
        return -1;
    }
    req->body_size += n;
    int r = req->body_fd >= 0 ? body_spool_write(req, at, n) : buf_append(&req->body, at, n);
    if (r < 0) {
        c->pending_err = req->body_fd >= 0 ? err_from_errno(r) : TS_E_TOO_LARGE;
        return -1;
    }
    return 0;
}

/* At the last chunk (size 0) llhttp pauses, so conn_parse can scan the trailer section (lines
 * up to an empty one) before llhttp reads it: llhttp 8.1.0 takes "0\r\n\r" plus any byte as
 * the end of a message, and folded trailer lines. */
static int on_chunk_header(llhttp_t *p)
{
    struct conn *c = p->data;
    if (p->content_length != 0)
        return 0;
    memset(&c->scan, 0, sizeof(c->scan));
    c->scan.state = HS_LINE_START;
    c->trailer_pause = true;
    return HPE_PAUSED;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->req->keep_alive = llhttp_should_keep_alive(p) && !c->srv->draining;
    c->in_body = false;
    c->state = CONN_BUSY;
    uv_timer_stop(&c->timer);
    return HPE_PAUSED;
}

/* ---------- parsing and dispatch ---------- */

static void conn_fail(struct conn *c, int err)
{
    if (c->req == NULL)
        c->req = request_new(c);
    struct request *req = c->req;
    if (req->path == NULL && c->url.len > 0 && err != TS_E_URI_TOO_LONG)
        req->path = arena_strndup(req->arena, c->url.data, c->url.len);
    req->close_after = true;
    req->keep_alive = false;
    c->state = CONN_BUSY;
    uv_timer_stop(&c->timer);
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    c->req_dispatched = true;
    c->srv->hooks.on_error(req, err);
}

static void conn_keep(struct conn *c, const char *data, size_t n)
{
    if (n == 0)
        return;
    if (c->pending.max == 0)
        buf_init(&c->pending, PENDING_MAX);
    if (buf_append(&c->pending, data, n) < 0)
        conn_close(c); /* a client pipelining past PENDING_MAX is not worth an answer */
}

/* The end of a line in the head: what it closed decides the next state. */
static int head_scan_eol(struct head_scan *h)
{
    switch (h->state) {
    case HS_START:
        return 0; /* an empty line before the request line */
    case HS_REQLINE:
        if (h->spaces != 2 || h->prev_sp)
            return -1;
        h->state = HS_LINE_START;
        return 0;
    case HS_LINE_START:
        h->state = HS_DONE;
        return 0;
    default:
        h->state = HS_LINE_START;
        return 0;
    }
}

static int head_scan_byte(struct head_scan *h, unsigned char b)
{
    if (h->cr) {
        h->cr = false;
        return b == '\n' ? head_scan_eol(h) : -1; /* a bare CR */
    }
    if (b == '\r') {
        h->cr = true;
        return 0;
    }
    if (b == '\n' || b == '\0')
        return -1; /* a bare LF; a NUL */
    switch (h->state) {
    case HS_START:
        if (b == ' ' || b == '\t')
            return -1;
        h->state = HS_REQLINE;
        /* fall through */
    case HS_REQLINE:
        if (b == '\t' || (b == ' ' && (h->prev_sp || ++h->spaces > 2)))
            return -1; /* odd separators: "GET  /", "GET\t/", a space in the target */
        h->prev_sp = b == ' ';
        return 0;
    case HS_LINE_START:
        if (b == ' ' || b == '\t' || b == ':')
            return -1; /* obs-fold or a space before a name; an empty name */
        h->state = HS_FIELD;
        return 0;
    default:
        return 0;
    }
}

/* 0 when the head bytes in data are well framed so far; the bytes after its end are not looked at. */
static int head_scan(struct head_scan *h, const char *data, size_t n)
{
    for (size_t i = 0; i < n && h->state != HS_DONE; i++)
        if (head_scan_byte(h, (unsigned char)data[i]) < 0)
            return -1;
    return 0;
}

static void conn_parse(struct conn *c, const char *data, size_t n)
{
    if (c->state == CONN_BUSY) {
        conn_keep(c, data, n);
        return;
    }
    if (head_scan(&c->scan, data, n) < 0) {
        log_msg(LOG_DEBUG, "http parse error: ambiguous framing in the request head");
        conn_fail(c, TS_E_BAD_REQUEST);
        return;
    }
    llhttp_errno_t e = llhttp_execute(&c->parser, data, n);
    if (e == HPE_PAUSED && c->trailer_pause) {
        c->trailer_pause = false;
        const char *pos = llhttp_get_error_pos(&c->parser);
        llhttp_resume(&c->parser);
        conn_parse(c, pos, n - (size_t)(pos - data)); /* once a message: the trailer section */
        return;
    }
    if (e == HPE_OK) {
        /* Headers in, body not yet: a client that wrote them apart (Nagle) holds the body
         * until we ACK, and delayed ACK would cost it 40 ms. Ack now. */
        uv_os_fd_t fd;
        int one = 1;
        if (c->in_body && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
        return;
    }
    if (e == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&c->parser);
        size_t used = pos ? (size_t)(pos - data) : n;
        struct request *req = c->req;
        if (c->reading) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = false;
        }
        conn_keep(c, data + used, n - used);
        if (c->state == CONN_BUSY && c->req == req && !c->req_dispatched) {
            c->req_dispatched = true;
            c->srv->hooks.on_request(req);
        }
        return;
    }
    int err = c->pending_err ? c->pending_err : TS_E_BAD_REQUEST;
    log_msg(LOG_DEBUG, "http parse error %s: %s", llhttp_errno_name(e),
            llhttp_get_error_reason(&c->parser));
    conn_fail(c, err);
}

static void conn_feed(struct conn *c, const char *data, size_t n)
{
    if (c->state == CONN_PROTO) {
        c->proto->on_read(c, c->proto_data, data, n);
        return;
    }
    conn_parse(c, data, n);
}

static void conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    struct conn *c = h->data;
    struct server *s = c->srv;
    if (s->slab_busy) {
        b->base = malloc(READ_SLAB);
        b->len = b->base ? READ_SLAB : 0;
        return;
    }
    s->slab_busy = true;
    b->base = s->slab;
    b->len = READ_SLAB;
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = st->data;
    struct server *s = c->srv;
    if (nread > 0 && c->tls != NULL) {
        struct buf plain, out;
        buf_init(&plain, 4 * READ_SLAB);
        buf_init(&out, 4 * READ_SLAB);
        int r = tls_conn_feed(c->tls, b->base, (size_t)nread, &plain, &out);
        if (out.len > 0)
            conn_write_raw(c, out.data, out.len);
        if (r < 0)
            conn_close(c);
        else if (plain.len > 0)
            conn_feed(c, plain.data, plain.len);
        buf_release(&plain);
        buf_release(&out);
    } else if (nread > 0) {
        conn_feed(c, b->base, (size_t)nread);
    } else if (nread < 0) {
        if (c->state == CONN_READING && c->req && nread == UV_EOF &&
            llhttp_finish(&c->parser) == HPE_OK && c->state == CONN_BUSY) {
            c->req_dispatched = true;
            c->srv->hooks.on_request(c->req);
        }
        else
            conn_close(c);
    }
    if (b->base == s->slab)
        s->slab_busy = false;
    else
        free(b->base);
}

static void conn_read_start(struct conn *c)
{
    if (!c->reading && c->state != CONN_CLOSING) {
        if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb) == 0)
            c->reading = true;
    }
}

static void conn_init_parser(struct conn *c)
{
    llhttp_init(&c->parser, HTTP_REQUEST, &c->srv->settings);
    c->parser.data = c;
    llhttp_set_lenient_keep_alive(&c->parser, 0);
    memset(&c->scan, 0, sizeof(c->scan));
    c->trailer_pause = false;
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct server *s = ls->data;
    if (status < 0)
        return;
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->srv = s;
    c->stream_fd = -1;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    s->stats.connections_active++;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0 || s->draining ||
        s->stats.connections_active > s->lim.max_connections) {
        s->stats.connections_rejected++;
        c->state = CONN_CLOSING;
        uv_close((uv_handle_t *)&c->timer, conn_close_cb);
        uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
        return;
    }
    s->stats.connections_total++;
    uv_tcp_nodelay(&c->tcp, 1);
    buf_init(&c->url, s->lim.max_url);
    buf_init(&c->hdr, s->lim.max_header_bytes);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    if (s->tls)
        c->tls = tls_conn_new(s->tls);
    conn_init_parser(c);
    c->state = CONN_IDLE;
    conn_timer_arm(c, s->lim.idle_timeout_ms);
    conn_read_start(c);
}

/* ---------- responses ---------- */

void http_response_json(struct request *req, int status, struct buf *body)
{
    req->status = status;
    req->content_type = "application/json";
    buf_release(&req->out_body);
    req->out_body = *body;
    buf_init(body, body->max);
    http_response_send(req);
}

static void server_wake_cb(uv_idle_t *h)
{
    (void)h; /* its only job is a zero poll timeout; the check handle flushes */
}

void http_response_send(struct request *req)
{
    struct server *s = req->srv;
    if (req->sent)
        return;
    req->sent = true;
    req->next_ready = NULL;
    if (s->ready_head == NULL)
        uv_idle_start(&s->wake, server_wake_cb);
    *s->ready_tail = req;
    s->ready_tail = &req->next_ready;
}

static void response_serialize(struct request *req, struct buf *out)
{
    bool close = req->close_after || !req->keep_alive;
    int status = req->status ? req->status : 500;
    buf_init(out, req->out_body.len + req->out_headers.len + 1024);
    buf_printf(out, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
    if (status != 101 && status != 204 && status != 304) {
        if (req->out_body.len > 0 || req->content_type)
            buf_printf(out, "Content-Type: %s\r\n",
                       req->content_type ? req->content_type : "application/json");
        if (req->out_fd >= 0 || req->out_mem)
            buf_printf(out, "Content-Length: %lld\r\n", (long long)req->out_len);
        else
            buf_printf(out, "Content-Length: %zu\r\n", req->out_body.len);
    }
    if (req->request_id[0])
        buf_printf(out, "X-Request-ID: %s\r\n", req->request_id);
    if (status != 101) {
        buf_puts(out, close ? "Connection: close\r\n" : "Connection: keep-alive\r\n");
        /* a browser never sniffs a JSON body or an upload into a script; a client that reached
         * us over TLS stays on it (Mozilla's "intermediate" profile: two years) */
        buf_puts(out, "X-Content-Type-Options: nosniff\r\n");
        if (req->conn != NULL && req->conn->tls != NULL)
            buf_puts(out, "Strict-Transport-Security: max-age=63072000\r\n");
    }
    if (req->out_headers.len)
        buf_append(out, req->out_headers.data, req->out_headers.len);
    buf_puts(out, "\r\n");
    if (req->method != HTTP_HEAD && req->out_body.len)
        buf_append(out, req->out_body.data, req->out_body.len);
}

static void conn_resume_queue(struct server *s, struct conn *c)
{
    if (c->resume_queued)
        return;
    c->resume_queued = true;
    c->next_resume = s->resume_head;
    s->resume_head = c;
}

/* The next request: parsed from what is already buffered, or read. Not while the client
 * leaves more than WRITE_HIGH of earlier responses unread: a pipelining client that never
 * reads would otherwise make us queue response after response in memory. It waits, on the
 * idle timer, for conn_write_cb to see the queue drain. */
static void conn_take_next(struct server *s, struct conn *c)
{
    c->write_blocked = c->write_queue > WRITE_HIGH;
    if (c->write_blocked)
        return;
    if (c->pending.len > 0)
        conn_resume_queue(s, c);
    else
        conn_read_start(c);
}

/* The response is out: the connection reads the next request, or closes. */
static void conn_response_done(struct server *s, struct conn *c, bool close)
{
    if (close) {
        conn_close(c);
        return;
    }
    c->state = CONN_IDLE;
    conn_init_parser(c);
    c->pending_err = 0;
    conn_timer_arm(c, s->lim.idle_timeout_ms);
    conn_take_next(s, c);
}

/* Reads the next chunks of a file body while the client keeps up (pread on the loop: local
 * disk, 64 KiB at a time, at most STREAM_QUEUE in flight); a memory body the same way, so a
 * client that reads slowly costs a copy of what it has read, not of the whole body. */
static void conn_stream_pump(struct conn *c)
{
    char chunk[STREAM_CHUNK];
    if (c->stream_left > 0 && c->write_queue < STREAM_QUEUE)
        conn_timer_arm(c, c->srv->lim.idle_timeout_ms); /* progress: the reader is alive */
    while (c->stream_left > 0 && c->write_queue < STREAM_QUEUE) {
        size_t want = c->stream_left < STREAM_CHUNK ? (size_t)c->stream_left : STREAM_CHUNK;
        int r;
        ssize_t n = (ssize_t)want;
        if (c->stream_mem && c->tls == NULL) /* sent from where it is, never copied */
            r = conn_write_plain(c, c->stream_mem + c->stream_off, want, true);
        else if (c->stream_mem)
            r = conn_write(c, c->stream_mem + c->stream_off, want);
        else if ((n = pread(c->stream_fd, chunk, want, (off_t)c->stream_off)) > 0)
            r = conn_write(c, chunk, (size_t)n);
        else
            r = -EIO;
        if (r < 0) {
            conn_close(c); /* the file shrank or the client went: the length was promised */
            return;
        }
        c->stream_off += n;
        c->stream_left -= n;
    }
    if (c->stream_left == 0 && c->write_queue == 0) {
        if (c->stream_fd >= 0)
            close(c->stream_fd);
        c->stream_fd = -1;
        c->stream_mem = NULL;
        conn_response_done(c->srv, c, c->stream_close);
        conns_resume(c->srv);
    }
}

/* Writes one response and puts its connection back to reading (or closes it). */
static void response_flush_one(struct server *s, struct request *req)
{
    struct conn *c = req->conn;
    if (s->hooks.on_sent)
        s->hooks.on_sent(req);
    if (c != NULL && c->state != CONN_CLOSING) {
        struct buf out;
        response_serialize(req, &out);
        int r = conn_write(c, out.data, out.len);
        buf_release(&out);
        c->req = NULL;
        c->req_dispatched = false;
        bool close = req->close_after || !req->keep_alive;
        if (r < 0) {
            conn_close(c);
        } else if (req->status == 101 && req->upgrade_cb) {
            uv_timer_stop(&c->timer);
            req->upgrade_cb(req, c);
            if (c->state == CONN_PROTO) {
                conn_read_start(c);
                if (c->pending.len > 0)
                    conn_resume_queue(s, c);
            }
        } else if ((req->out_fd >= 0 || req->out_mem) && req->method != HTTP_HEAD &&
                   req->out_len > 0) {
            c->stream_fd = req->out_fd;
            c->stream_mem = req->out_mem;
            req->out_fd = -1;
            c->stream_off = req->out_off;
            c->stream_left = req->out_len;
            c->stream_close = close;
            c->state = CONN_STREAMING;
            conn_timer_arm(c, s->lim.idle_timeout_ms); /* a stalled reader is dropped */
            conn_stream_pump(c);
        } else {
            conn_response_done(s, c, close);
        }
    }
    request_free(req);
}

static void conns_resume(struct server *s)
{
    struct conn *list = s->resume_head;
    s->resume_head = NULL;
    while (list) {
        struct conn *c = list;
        list = c->next_resume;
        c->resume_queued = false;
        if (c->state == CONN_CLOSING)
            continue;
        struct buf pend = c->pending;
        buf_init(&c->pending, PENDING_MAX);
        conn_feed(c, pend.data ? pend.data : "", pend.len);
        buf_release(&pend);
        if (c->state == CONN_IDLE || c->state == CONN_READING || c->state == CONN_PROTO)
            conn_read_start(c);
    }
}

static void server_retry_cb(uv_timer_t *t)
{
    (void)t; /* waking the loop is enough: the check handle flushes */
}

/* After every poll: commit the iteration's writes (those of timers and pool completions
 * too, not only of requests), then send what waited for that commit. */
static void server_check_cb(uv_check_t *h)
{
    struct server *s = h->data;
    for (int round = 0; round < MAX_FLUSH_ROUNDS; round++) {
        if (s->hooks.tick && s->hooks.tick(s->hooks.tick_arg) < 0) {
            uv_timer_start(&s->retry, server_retry_cb, 2, 0);
            return;
        }
        if (s->ready_head == NULL && s->resume_head == NULL) {
            uv_idle_stop(&s->wake);
            return;
        }
        struct request *list = s->ready_head;
        s->ready_head = NULL;
        s->ready_tail = &s->ready_head;
        while (list) {
            struct request *req = list;
            list = req->next_ready;
            response_flush_one(s, req);
        }
        conns_resume(s);
    }
    if (s->ready_head || s->resume_head)
        uv_timer_start(&s->retry, server_retry_cb, 0, 0);
}

/* ---------- server ---------- */

struct server *server_new(uv_loop_t *loop, const struct server_limits *lim,
                          const struct server_hooks *hooks)
{
    struct server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->loop = loop;
    s->lim = *lim;
    s->hooks = *hooks;
    s->ready_tail = &s->ready_head;
    llhttp_settings_init(&s->settings);
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_field_complete = on_header_field_complete;
    s->settings.on_header_value = on_header_value;
    s->settings.on_header_value_complete = on_header_value_complete;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_body = on_body;
    s->settings.on_chunk_header = on_chunk_header;
    s->settings.on_message_complete = on_message_complete;
    uv_check_init(loop, &s->check);
    s->check.data = s;
    uv_check_start(&s->check, server_check_cb);
    uv_idle_init(loop, &s->wake);
    uv_timer_init(loop, &s->retry);
    uv_timer_init(loop, &s->drain_timer);
    s->drain_timer.data = s;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    return s;
}

void server_set_tls(struct server *s, struct tls_ctx *tls)
{
    s->tls = tls;
}

static int parse_host_port(const char *hp, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(hp, ':');
    if (colon == NULL || colon == hp || (size_t)(colon - hp) >= hostlen)
        return -EINVAL;
    const char *h = hp;
    size_t hl = (size_t)(colon - hp);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535 || end == colon + 1)
        return -EINVAL;
    *port = (int)p;
    return 0;
}

int server_listen(struct server *s, const char *host_port, char *err, size_t errlen)
{
    char host[256];
    int port;
    if (parse_host_port(host_port, host, sizeof(host), &port) < 0) {
        snprintf(err, errlen, "--listen must be HOST:PORT, not '%s'", host_port);
        return -EINVAL;
    }
    struct sockaddr_storage ss;
    int r = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (r < 0)
        r = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
    if (r < 0) {
        snprintf(err, errlen, "--listen host '%s' is not an IP address", host);
        return -EINVAL;
    }
    r = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG, on_connection);
    if (r < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", host_port, uv_strerror(r));
        return r;
    }
    s->listening = true;
    return 0;
}

int server_port(struct server *s)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

static void drain_deadline_cb(uv_timer_t *t)
{
    struct server *s = t->data;
    log_msg(LOG_WARN, "shutdown deadline reached; closing remaining connections");
    server_close_all(s);
}

void server_drain(struct server *s, int deadline_ms, void (*done_cb)(struct server *))
{
    s->draining = true;
    s->drain_done = done_cb;
    if (s->listening) {
        uv_close((uv_handle_t *)&s->listener, NULL);
        s->listening = false;
    }
    for (struct conn *c = s->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == CONN_IDLE)
            conn_close(c);
        else if (c->req)
            c->req->keep_alive = false;
    }
    if (s->conns == NULL) {
        s->drain_done = NULL;
        done_cb(s);
        return;
    }
    uv_timer_start(&s->drain_timer, drain_deadline_cb, (uint64_t)deadline_ms, 0);
}

struct server *server_free(struct server *s)
{
    if (s == NULL)
        return NULL;
    while (s->ready_head) {
        struct request *req = s->ready_head;
        s->ready_head = req->next_ready;
        request_free(req);
    }
    free(s);
    return NULL;
}


void server_close_handles(struct server *s)
{
    if (s->listening) {
        uv_close((uv_handle_t *)&s->listener, NULL);
        s->listening = false;
    } else if (!uv_is_closing((uv_handle_t *)&s->listener)) {
        uv_close((uv_handle_t *)&s->listener, NULL);
    }
    uv_close((uv_handle_t *)&s->check, NULL);
    uv_close((uv_handle_t *)&s->wake, NULL);
    uv_close((uv_handle_t *)&s->retry, NULL);
    uv_close((uv_handle_t *)&s->drain_timer, NULL);
}
