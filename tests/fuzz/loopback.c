/* Fuzz helper: one input over a real loopback connection, the server's loop run in between. */
#include "loopback.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Rounds without progress before the client gives up: the server is waiting for more bytes
 * (it has them all) or has nothing left to say. */
#define IDLE_ROUNDS 200

size_t fuzz_loopback_send(uv_loop_t *loop, int port, const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        abort();
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    size_t off = 0, total = 0;
    char sink[65536], head[9];
    int idle = 0;
    bool shut = false, verbose = getenv("FUZZ_VERBOSE") != NULL;
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
            for (size_t i = 0; i < (size_t)got && total + i < sizeof(head); i++)
                head[total + i] = sink[i];
            total += (size_t)got;
            if (verbose)
                fwrite(sink, 1, (size_t)got, stderr);
        }
        if (got == 0)
            break; /* the server closed: done */
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
    /* whatever the input, what the server says first is an HTTP/1.1 status line */
    if (total > 0 && (total < sizeof(head) || memcmp(head, "HTTP/1.1 ", sizeof(head)) != 0))
        abort();
    return total;
}
