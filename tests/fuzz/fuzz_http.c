/* libFuzzer target for the HTTP request path: arbitrary bytes sent over a real loopback
 * connection to the real server (llhttp glue, limits, pipelining, error responses). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "http/http.h"

static uv_loop_t loop;
static struct server *srv;
static int port;

static void on_request(struct request *req)
{
    req->status = 200;
    req->content_type = "text/plain";
    buf_printf(&req->out_body, "%s %s %zu", req->method_name, req->path, req->body.len);
    http_response_send(req);
}

static void on_error(struct request *req, int err)
{
    req->status = err_http_status(err);
    http_response_send(req);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    uv_loop_init(&loop);
    /* small limits so the fuzzer reaches 414, 431 and 413 quickly */
    struct server_limits lim = {
        .max_url = 512, .max_header_bytes = 2048, .max_headers = 16, .max_body = 4096,
        .idle_timeout_ms = 1000, .header_timeout_ms = 1000, .max_connections = 64};
    struct server_hooks hooks = {.on_request = on_request, .on_error = on_error};
    srv = server_new(&loop, &lim, &hooks);
    char err[200];
    if (server_listen(srv, "127.0.0.1:0", err, sizeof(err)) < 0) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    port = server_port(srv);
    return 0;
}

/* Sends the input, half-closes, and runs the loop until the server has closed or answered all. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    size_t off = 0;
    char sink[65536];
    int idle_rounds = 0;
    bool shut = false;
    while (idle_rounds < 200) {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (off < size) {
            ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
            if (n > 0)
                off += (size_t)n;
        } else if (!shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        ssize_t got = recv(fd, sink, sizeof(sink), 0);
        if (got > 0 && getenv("FUZZ_HTTP_VERBOSE"))
            fwrite(sink, 1, (size_t)got, stderr);
        if (got == 0)
            break; /* server closed: done */
        if (got > 0 || off < size)
            idle_rounds = 0;
        else
            idle_rounds++;
        if (got < 0)
            usleep(50);
    }
    close(fd);
    for (int i = 0; i < 4; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    return 0;
}
