/* Fuzz helper: sends one input over a real loopback connection to a server on the caller's
 * loop, runs that loop until the server has closed the connection or gone quiet, and checks
 * what the server answered. */
#ifndef TS_FUZZ_LOOPBACK_H
#define TS_FUZZ_LOOPBACK_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http/http.h"

/* Connects to 127.0.0.1:port, writes data[0..size), half-closes, and reads what comes back
 * (written to stderr when FUZZ_VERBOSE is set) while running loop. Aborts unless the answer
 * is well-formed HTTP/1.1 responses back to back (status line, "Name: value" lines, one
 * Content-Length, that many body bytes) up to a 101, if any. Returns the bytes read. */
size_t fuzz_loopback_send(uv_loop_t *loop, int port, const uint8_t *data, size_t size);

/* The fuzz servers' on_error hook: the error's status, no body. */
void fuzz_loopback_on_error(struct request *req, int err);

/* A server on loop listening on 127.0.0.1 at a free port (in *port), with lim and hooks
 * (on_error fuzz_loopback_on_error when unset). Aborts, naming who, when it cannot start. */
struct server *fuzz_loopback_listen(uv_loop_t *loop, const struct server_limits *lim,
                                    struct server_hooks hooks, const char *who, int *port);
#endif
