/* libFuzzer target for the WebSocket handshake: bytes over a loopback connection to the real
 * server, whose request goes to ws_upgrade (method, Upgrade and Connection token lists, version,
 * key, bearer subprotocol, channel and subprotocol checks) on a real hub; after a 101 the rest
 * of the bytes are frames for the session, which echoes text as a chat route does. An accepted
 * upgrade must have come from a request that meets RFC 6455 section 4.2.1, and its answer must
 * carry a well-formed Sec-WebSocket-Accept. (The ws target fuzzes frames over memory.) */
#include <llhttp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "http/http.h"
#include "http/ws.h"
#include "loopback.h"

static uv_loop_t loop;
static struct server *srv;
static struct ws_hub *hub;
static int port;

static void must(bool ok)
{
    if (!ok)
        abort();
}

static void echo(struct ws_session *s, void *user, const char *text, size_t n, bool binary)
{
    (void)user;
    if (!binary)
        ws_session_send_text(s, text, n);
}

static const struct ws_handlers handlers = {NULL, echo, NULL};

static const char *trimmed(struct request *req, const char *name)
{
    const char *v = http_header_get(req, name);
    if (v == NULL)
        return NULL;
    v += strspn(v, " \t");
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return arena_strndup(req->arena, v, n);
}

static bool base64_16(const char *k)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    return k && strlen(k) == 24 && strspn(k, alphabet) == 22 && strcmp(k + 22, "==") == 0;
}

/* The 101's headers: Upgrade, Connection, a 28-character Accept, and the subprotocol: the
 * route's, else "bearer" when the client offered a token that way. */
static void check_accepted(struct request *req, const char *sub)
{
    must(req->method == HTTP_GET && req->status == 101);
    const char *version = trimmed(req, "Sec-WebSocket-Version");
    must(version && strcmp(version, "13") == 0 && base64_16(trimmed(req, "Sec-WebSocket-Key")));
    const char *out = req->out_headers.data;
    must(out && strstr(out, "Upgrade: websocket\r\n") && strstr(out, "Connection: Upgrade\r\n"));
    const char *acc = strstr(out, "Sec-WebSocket-Accept: ");
    must(acc && strlen(acc) >= 22 + 28 + 2 && memcmp(acc + 22 + 28, "\r\n", 2) == 0 &&
         acc[22 + 27] == '=');
    const char *proto = strstr(out, "Sec-WebSocket-Protocol: ");
    if (sub)
        must(proto && strncmp(proto + 24, sub, strlen(sub)) == 0);
    else if (ws_bearer_token(req))
        must(proto && strncmp(proto + 24, "bearer\r\n", 8) == 0);
    else
        must(proto == NULL);
}

static void on_request(struct request *req)
{
    const char *sub = http_query_get(req, "subprotocol");
    sub = sub && sub[0] ? sub : NULL;
    int r = ws_upgrade(req, hub, req->path, sub, &handlers, NULL);
    if (r == 0) {
        check_accepted(req, sub);
    } else {
        must(r == TS_E_BAD_REQUEST);
        req->status = err_http_status(r);
    }
    http_response_send(req);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    uv_loop_init(&loop);
    struct server_limits lim = {
        .max_url = 8192, .max_header_bytes = 16384, .max_headers = 100, .max_body = 65536,
        .idle_timeout_ms = 1000, .header_timeout_ms = 1000, .max_connections = 64};
    struct server_hooks hooks = {.on_request = on_request};
    /* small enough that an input can reach 1009 and the send-queue cap */
    struct ws_limits wl = {.max_message = 4096, .max_send_queue = 16384};
    hub = ws_hub_new(&loop, &wl);
    if (hub == NULL) {
        fprintf(stderr, "fuzz_ws_handshake: cannot create the hub\n");
        abort();
    }
    srv = fuzz_loopback_listen(&loop, &lim, hooks, "fuzz_ws_handshake", &port);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_loopback_send(&loop, port, data, size);
    return 0;
}
