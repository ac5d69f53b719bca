/* The HTTP/1.1 server: connections, llhttp glue, limits, ordered responses, upgrades. */
#ifndef TS_HTTP_H
#define TS_HTTP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/arena.h"
#include "core/buf.h"

struct conn;
struct server;
struct tls_ctx;

struct http_header {
    const char *name;
    const char *value;
};

struct http_param {
    const char *name;
    const char *value;
};

#define HTTP_MAX_PARAMS 8

/* One request and its response; everything hangs off req->arena, freed after the send. */
struct request {
    struct arena *arena;
    struct conn *conn;              /* NULL once the client has gone */
    struct server *srv;
    uint64_t start_ns;
    int method;                     /* llhttp_method_t */
    const char *method_name;
    char *path;                     /* without the query, percent-decoding left to callers */
    char *query;                    /* after '?', or NULL */
    struct http_header *headers;
    int nheaders;
    struct buf body;                /* the body, unless spooled */
    bool spool;                     /* set by body_limit: the body goes to a temp file */
    int body_fd;                    /* spooled body: fd of the temp file, -1 if none */
    char *body_path;                /* its path; unlinked when the request is freed */
    size_t body_size;               /* bytes received, buffered or spooled */
    bool keep_alive;
    char request_id[72];

    /* filled by the dispatcher */
    const void *route;
    const char *endpoint;           /* route pattern, for logs and metrics */
    int surface;
    struct http_param params[HTTP_MAX_PARAMS];
    int nparams;
    void *ctx;                      /* dispatcher's per-request context */

    /* response */
    int status;
    const char *content_type;
    struct buf out_headers;         /* extra "Name: value\r\n" lines */
    struct buf out_body;
    int out_fd;                     /* >= 0: the body is out_len bytes of this file from
                                     * out_off, streamed as the client reads; closed after */
    int64_t out_off, out_len;
    const char *out_mem;            /* non-NULL: the body is out_len bytes of this memory from
                                     * out_off, which outlives the server (an embedded file),
                                     * streamed as the client reads like out_fd, never copied
                                     * whole */
    const char *err_code;           /* set on error responses, for the log line */
    bool close_after;
    bool sent;
    void (*upgrade_cb)(struct request *req, struct conn *c); /* after a 101 is written */
    void *upgrade_arg;
    struct request *next_ready;
};

#define HTTP_URL_MAX 8192           /* request-target bytes, query included (414 past it) */
#define HTTP_HEADERS_MAX 100        /* header fields of one request (431 past it) */

struct server_limits {
    size_t max_url;                 /* 414 past this */
    size_t max_header_bytes;        /* 431 past this */
    int max_headers;                /* 431 past this many */
    size_t max_body;                /* 413 past this (routes may raise it) */
    int idle_timeout_ms;
    int header_timeout_ms;          /* whole request must arrive in this time (408) */
    int max_connections;
    const char *spool_dir;          /* where spooled bodies go (NULL: $TMPDIR or /tmp) */
};

struct server_hooks {
    void (*on_request)(struct request *req);          /* must end in http_response_send */
    void (*on_error)(struct request *req, int err);   /* parse-level error; must send */
    size_t (*body_limit)(struct request *req);        /* after headers; 0 = default; may set
                                                       * req->spool to stream the body to disk */
    int (*tick)(void *arg);                           /* commit before flushing; <0 retry */
    void *tick_arg;
    void (*on_sent)(struct request *req);             /* after serializing, before free */
    void *arg;                                        /* server_arg() */
};

struct server_stats {
    int64_t connections_active;
    int64_t connections_total;
    int64_t connections_rejected;
};

struct server *server_new(uv_loop_t *loop, const struct server_limits *lim,
                          const struct server_hooks *hooks);
int server_listen(struct server *s, const char *host_port, char *err, size_t errlen);
void server_set_tls(struct server *s, struct tls_ctx *tls);
int server_port(struct server *s);              /* bound port (after listen on :0) */
/* Stops accepting and closes idle connections; in-flight requests finish with Connection: close.
 * Calls done_cb once every connection is gone (or the deadline forced them closed). */
void server_drain(struct server *s, int deadline_ms, void (*done_cb)(struct server *));
bool server_draining(const struct server *s);
void server_close_handles(struct server *s);     /* before the final loop run */
struct server *server_free(struct server *s);  /* after the loop has closed its handles */
const struct server_stats *server_stats(const struct server *s);
void *server_arg(const struct server *s);
void server_close_all(struct server *s);

/* request helpers */
const char *http_header_get(const struct request *req, const char *name);
const char *http_param_get(const struct request *req, const char *name);
/* Decodes query parameter `name` into the arena; NULL when absent. */
const char *http_query_get(struct request *req, const char *name);
int http_header_add(struct request *req, const char *name, const char *value);
/* Queues the response; it goes out after the tick's commit, in request order per connection. */
void http_response_send(struct request *req);
void http_response_json(struct request *req, int status, struct buf *body_moved);
const char *http_status_text(int status);
/* Percent-decodes src[0..n) into the arena ('+' as space when form). NULL on bad escapes. */
char *http_url_decode(struct arena *a, const char *src, size_t n, bool form);

/* raw connection access for upgraded protocols (WebSocket) */
struct conn_proto {
    void (*on_read)(struct conn *c, void *data, const char *bytes, size_t n);
    void (*on_close)(struct conn *c, void *data);   /* connection is going away */
};
void conn_set_proto(struct conn *c, const struct conn_proto *p, void *data);
int conn_write(struct conn *c, const void *bytes, size_t n); /* copies; TLS-wrapped if on */
size_t conn_write_queue_bytes(const struct conn *c);
void conn_close(struct conn *c);
uv_loop_t *conn_loop(const struct conn *c);
/* "ip" of the peer into out; "unknown" when it cannot be read. */
void conn_peer_address(struct conn *c, char *out, size_t n);
#endif
