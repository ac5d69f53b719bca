/* libFuzzer target for the HTTP request path: arbitrary bytes sent over a real loopback
 * connection to the real server (llhttp glue, limits, pipelining, error responses). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/err.h"
#include "http/http.h"
#include "loopback.h"

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
    fuzz_loopback_send(&loop, port, data, size);
    return 0;
}
