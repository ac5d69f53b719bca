/* Fuzz helper: sends one input over a real loopback connection to a server on the caller's
 * loop and runs that loop until the server has closed the connection or gone quiet. */
#ifndef TS_FUZZ_LOOPBACK_H
#define TS_FUZZ_LOOPBACK_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Connects to 127.0.0.1:port, writes data[0..size), half-closes, and reads what comes back
 * (discarded; written to stderr when FUZZ_VERBOSE is set) while running loop. Aborts unless
 * the answer, if any, starts with an HTTP/1.1 status line. Returns the bytes read. */
size_t fuzz_loopback_send(uv_loop_t *loop, int port, const uint8_t *data, size_t size);
#endif
