/* Fuzz helper: one input over a real loopback connection, the server's loop run in between,
 * and what came back checked as a sequence of well-formed HTTP/1.1 responses. */
#include "loopback.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"

/* Rounds without progress before the client gives up: the server is waiting for more bytes
 * (it has them all) or has nothing left to say. */
#define IDLE_ROUNDS 200
#define KEEP_MAX (1 << 20) /* response bytes kept for the check; past it only counted */

static void must(bool ok)
{
    if (!ok)
        abort();
}

/* A response head "HTTP/1.1 NNN reason\r\n" + "Name: value\r\n"... + "\r\n" of n bytes: its
 * status, and its Content-Length in *len (-1 when absent). Aborts on anything else. */
static int head_check(const char *h, size_t n, long long *len)
{
    must(n >= 14 && memcmp(h, "HTTP/1.1 ", 9) == 0 && h[12] == ' ');
    must(h[9] >= '1' && h[9] <= '5' && h[10] >= '0' && h[10] <= '9' && h[11] >= '0' &&
         h[11] <= '9');
    int status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    const char *p = memchr(h, '\n', n) + 1, *end = h + n - 2; /* before the final CRLF */
    *len = -1;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p) + 1);
        must(eol && eol[-1] == '\r');
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        must(colon && colon > p && colon[1] == ' ');
        for (const char *c = p; c < eol - 1; c++)
            must(*c != '\r' && *c != '\0');
        if ((size_t)(colon - p) == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
            must(*len < 0); /* one only */
            char *stop;
            *len = strtoll(colon + 2, &stop, 10);
            must(stop == eol - 1 && *len >= 0);
        }
        p = eol + 1;
    }
    return status;
}

/* The bytes the server sent: responses back to back, each with the body its Content-Length
 * says, until a 101 hands the connection over. A cut-off last response is allowed only when
 * the client stopped waiting (the server still had the connection open). A HEAD's answer has
 * no body, so when the input may hold one only the first head is checked. */
static void responses_check(const char *b, size_t n, bool closed_by_server, bool maybe_head)
{
    size_t pos = 0;
    while (pos < n) {
        const char *sep = memmem(b + pos, n - pos, "\r\n\r\n", 4);
        if (sep == NULL) {
            must(!closed_by_server);
            return;
        }
        size_t hn = (size_t)(sep - (b + pos)) + 4;
        long long len;
        int status = head_check(b + pos, hn, &len);
        pos += hn;
        if (status == 101 || maybe_head)
            return; /* WebSocket frames follow */
        if (status == 100)
            continue;
        bool bodiless = status == 204 || status == 304;
        must(bodiless ? len <= 0 : len >= 0);
        if (len > 0 && (size_t)len > n - pos) {
            must(!closed_by_server);
            return;
        }
        pos += len > 0 ? (size_t)len : 0;
    }
}

size_t fuzz_loopback_send(uv_loop_t *loop, int port, const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    must(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    size_t off = 0, total = 0;
    static char kept[KEEP_MAX];
    char sink[65536];
    int idle = 0;
    bool shut = false, closed = false, verbose = getenv("FUZZ_VERBOSE") != NULL;
    while (idle < IDLE_ROUNDS) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (off < size) {
            ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
            if (n > 0)
                off += (size_t)n;
        } else if (!shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        ssize_t got = recv(fd, sink, sizeof(sink), 0);
        if (got > 0) {
            size_t keep = total < KEEP_MAX ? KEEP_MAX - total : 0;
            memcpy(kept + total, sink, (size_t)got < keep ? (size_t)got : keep);
            total += (size_t)got;
            if (verbose)
                fwrite(sink, 1, (size_t)got, stderr);
        }
        if (got == 0) {
            closed = true; /* the server closed: done */
            break;
        }
        if (got > 0 || off < size)
            idle = 0;
        else
            idle++;
        if (got < 0)
            usleep(50);
    }
    close(fd);
    for (int i = 0; i < 4; i++)
        uv_run(loop, UV_RUN_NOWAIT);
    if (total <= KEEP_MAX)
        responses_check(kept, total, closed, memmem(data, size, "HEAD", 4) != NULL);
    return total;
}

void fuzz_loopback_on_error(struct request *req, int err)
{
    req->status = err_http_status(err);
    http_response_send(req);
}

struct server *fuzz_loopback_listen(uv_loop_t *loop, const struct server_limits *lim,
                                    struct server_hooks hooks, const char *who, int *port)
{
    if (hooks.on_error == NULL)
        hooks.on_error = fuzz_loopback_on_error;
    struct server *srv = server_new(loop, lim, &hooks);
    char err[200] = "cannot create the server";
    if (srv == NULL || server_listen(srv, "127.0.0.1:0", err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: %s\n", who, err);
        abort();
    }
    *port = server_port(srv);
    return srv;
}
