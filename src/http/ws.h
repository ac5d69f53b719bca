/* WebSocket (RFC 6455) on upgraded HTTP connections: handshake, wslay framing, and a channel hub. */
#ifndef TS_WS_H
#define TS_WS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http/http.h"

struct ws_hub;
struct ws_session;

struct ws_limits {
    size_t max_message;        /* bytes; larger message -> close 1009 */
    size_t max_send_queue;     /* bytes queued to a slow client; past it -> close 1008 */
    int ping_interval_ms;      /* server pings this often */
    int pong_timeout_ms;       /* no pong (or any frame) in this long -> close */
};

/* What an upgraded route does with its session. All callbacks run on the loop thread. */
struct ws_handlers {
    void (*on_open)(struct ws_session *s, void *user);
    void (*on_message)(struct ws_session *s, void *user, const char *text, size_t n, bool binary);
    void (*on_close)(struct ws_session *s, void *user); /* session is about to be freed */
};

struct ws_stats {
    int64_t sessions_active;
    int64_t sessions_total;
    int64_t messages_out;
    int64_t messages_in;
    int64_t slow_closed;       /* closed for exceeding the send-queue cap */
};

/* Sec-WebSocket-Accept for a client key: base64(SHA-1(key + GUID)). out gets 28 chars + NUL.
 * Returns 0, or -EINVAL if the key is not 16 bytes of base64. */
int ws_accept_key(const char *client_key, char out[29]);

struct ws_hub *ws_hub_new(uv_loop_t *loop, const struct ws_limits *lim);
/* Closes every session with `code` (1001 on shutdown); returns at once, frames go out async. */
void ws_hub_close_all(struct ws_hub *hub, uint16_t code, const char *reason);
void ws_hub_close_handles(struct ws_hub *hub);     /* before the final loop run */
struct ws_hub *ws_hub_free(struct ws_hub *hub);    /* accepts NULL, returns NULL */
const struct ws_stats *ws_hub_stats(const struct ws_hub *hub);

/* Thread-safe: queue a text message for every session subscribed to channel. The loop drains
 * the queue via uv_async. Returns 0 or -ENOMEM/-E2BIG (over max_message). */
int ws_hub_publish(struct ws_hub *hub, const char *channel, const char *text, size_t n);

/* Validates the upgrade request (GET, Upgrade: websocket, Connection: upgrade, version 13,
 * key) and, if good, sets req to a 101 with the accept headers and arranges that, once the
 * 101 is written, a session subscribed to `channel` starts on the connection. The caller then
 * calls http_response_send(req). Returns 0, or TS_E_BAD_REQUEST (bad handshake) so the caller
 * answers in its surface's error format. `subprotocol` (may be NULL) is echoed in
 * Sec-WebSocket-Protocol. */
int ws_upgrade(struct request *req, struct ws_hub *hub, const char *channel,
               const char *subprotocol, const struct ws_handlers *h, void *user);
/* The token a browser offered as `Sec-WebSocket-Protocol: bearer, <token>` (arena copy), or
 * NULL. ws_upgrade then answers with the "bearer" subprotocol. */
const char *ws_bearer_token(struct request *req);

/* Loop thread only. */
int ws_session_send_text(struct ws_session *s, const char *text, size_t n);
void ws_session_close(struct ws_session *s, uint16_t code, const char *reason);
const char *ws_session_channel(const struct ws_session *s);
#endif
