/* libFuzzer target: arbitrary client bytes as WebSocket frames through ws.c's wslay session. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "http/ws.h"
#include "http/ws_internal.h"

/* Limits well above what an input of a few KB can fill, so both feeds below see the same
 * stream; a small max_message still lets length headers hit 1009. */
static const struct ws_limits fuzz_lim = {
    .max_message = 64 * 1024,
    .max_send_queue = 4 << 20,
    .ping_interval_ms = 0,
    .pong_timeout_ms = 0,
};

struct tally {
    size_t messages;
    size_t bytes;
};

/* Echo text like a chat route does, so the send path runs too. */
static void fuzz_message(struct ws_session *s, void *user, const char *text, size_t n, bool bin)
{
    struct tally *t = user;
    t->messages++;
    t->bytes += n;
    if (!bin)
        ws_session_send_text(s, text, n);
}

static const struct ws_handlers fuzz_handlers = {NULL, fuzz_message, NULL};

static void run(const uint8_t *data, size_t size, size_t chunk, struct tally *t,
                struct ws__mem_result *res)
{
    struct buf out;
    buf_init(&out, 16 << 20);
    memset(t, 0, sizeof(*t));
    if (ws__run_memory(&fuzz_lim, &fuzz_handlers, t, data, size, chunk, &out, res) != 0)
        abort();
    buf_release(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tally whole, bytewise;
    struct ws__mem_result r1, r2;
    run(data, size, 0, &whole, &r1);
    run(data, size, 1, &bytewise, &r2);
    /* how the bytes were split into reads must not change what was received. (Close codes
     * are not compared: wslay 1.1.1 restarts its close-reason UTF-8 check at offset 2 of
     * every read, so a reason split across reads can be judged differently.) */
    if (whole.messages != bytewise.messages || whole.bytes != bytewise.bytes ||
        r1.stats.messages_in != r2.stats.messages_in ||
        r1.stats.messages_out != r2.stats.messages_out || r1.dropped != r2.dropped)
        abort();
    return 0;
}
