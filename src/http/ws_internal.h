/* Test and fuzz hooks into ws.c: a WebSocket server session run over memory, no connection. */
#ifndef TS_WS_INTERNAL_H
#define TS_WS_INTERNAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "http/ws.h"

struct ws__mem_result {
    struct ws_stats stats;      /* messages_in, messages_out, slow_closed of the one session */
    uint16_t close_sent;        /* status of the close frame we sent (1005 = empty); 0 = none */
    uint16_t close_received;    /* status in the peer's close (1005 = empty); 0 = none */
    bool dropped;               /* the session would drop the connection without a close */
};

/* Feeds data[0..n) as client bytes into a server session configured from lim (the frame
 * reader, wslay, limits: the code a connection runs), chunk bytes per read (0 = all in one
 * read). Frames the server sends are appended to out, whose max bounds them (full = the peer
 * stopped reading).
 * The session counts as unsubscribed: ws_session_channel() is "". h (may be NULL) gets
 * on_open/on_message/on_close and may call ws_session_send_text/ws_session_close.
 * Returns 0 with *ret filled, or -EINVAL / -ENOMEM (then *ret is untouched). */
int ws__run_memory(const struct ws_limits *lim, const struct ws_handlers *h, void *user,
                   const uint8_t *data, size_t n, size_t chunk, struct buf *out,
                   struct ws__mem_result *ret);
#endif
