/* libFuzzer target for the HTTP request path: arbitrary bytes sent over a real loopback
 * connection to the real server (llhttp glue, limits, pipelining, error responses). Every
 * request that reaches the handler must be one RFC 9112 frames one way only, as the glue
 * promises (README Transport): token header names, no CR or LF in values, one Host, one
 * Content-Length of digits or one Transfer-Encoding "chunked" (never both), an origin-form
 * target or "*" for OPTIONS, and a body of exactly the length declared. */
#include <llhttp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "http/http.h"
#include "loopback.h"

static uv_loop_t loop;
static struct server *srv;
static int port;

static void must(bool ok)
{
    if (!ok)
        abort();
}

static bool is_token(const char *s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && strchr(extra, c) == NULL)
            return false;
    }
    return true;
}

static const char *trim(struct request *req, const char *v)
{
    v += strspn(v, " \t");
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return arena_strndup(req->arena, v, n);
}

static void check_framing(struct request *req)
{
    int hosts = 0, lengths = 0, codings = 0;
    long long declared = -1;
    for (int i = 0; i < req->nheaders; i++) {
        const char *name = req->headers[i].name, *value = req->headers[i].value;
        must(is_token(name) && strpbrk(value, "\r\n") == NULL);
        if (strcasecmp(name, "Host") == 0) {
            hosts++;
        } else if (strcasecmp(name, "Content-Length") == 0) {
            const char *v = trim(req, value);
            const char *digits = v + strspn(v, "0"); /* 1*DIGIT: leading zeros are allowed */
            lengths++;
            must(v[0] && strspn(v, "0123456789") == strlen(v) && strlen(digits) < 19);
            declared = atoll(digits);
        } else if (strcasecmp(name, "Transfer-Encoding") == 0) {
            codings++;
            must(strcasecmp(trim(req, value), "chunked") == 0);
        }
    }
    must(hosts <= 1 && lengths <= 1 && codings <= 1 && lengths + codings <= 1);
    must(req->path && (req->path[0] == '/' || (strcmp(req->path, "*") == 0 &&
                                               req->method == HTTP_OPTIONS && !req->query)));
    must(req->body_size == req->body.len);
    if (declared >= 0)
        must(req->body_size == (size_t)declared);
}

static void on_request(struct request *req)
{
    check_framing(req);
    req->status = 200;
    req->content_type = "text/plain";
    buf_printf(&req->out_body, "%s %s %zu", req->method_name, req->path, req->body.len);
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
    struct server_hooks hooks = {.on_request = on_request};
    srv = fuzz_loopback_listen(&loop, &lim, hooks, "fuzz_http", &port);
    return 0;
}

/* Sends the input, half-closes, and runs the loop until the server has closed or answered all. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_loopback_send(&loop, port, data, size);
    return 0;
}
