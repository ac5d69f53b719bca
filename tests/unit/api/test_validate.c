/* Unit tests for the dispatcher's validate step: Content-Type, JSON syntax, depth, object. */
#include <jansson.h>

#include "../check.h"
#include "api/app.h"

static int validate(const char *ctype, const char *body, struct hctx *h, struct arena *a)
{
    static struct request req;
    static struct http_header hs[1];
    memset(&req, 0, sizeof(req));
    memset(h, 0, sizeof(*h));
    req.arena = a;
    hs[0].name = "Content-Type";
    hs[0].value = ctype;
    req.headers = hs;
    req.nheaders = ctype ? 1 : 0;
    buf_init(&req.body, 1 << 20);
    buf_puts(&req.body, body);
    h->req = &req;
    h->arena = a;
    int r = dispatch_validate_body(h, RF_JSON_BODY);
    buf_release(&req.body);
    return r;
}

static char *nested(int depth)
{
    static char s[256];
    int k = 0;
    for (int i = 0; i < depth; i++)
        s[k++] = '[';
    for (int i = 0; i < depth; i++)
        s[k++] = ']';
    s[k] = '\0';
    return s;
}

int main(void)
{
    struct arena *a = arena_new(1024);
    struct hctx h;
    CHECK_INT(validate("application/json", "{\"email\":\"a@b\"}", &h, a), 0);
    CHECK_STR(json_string_value(json_object_get(h.body, "email")), "a@b");
    json_decref(h.body);
    CHECK_INT(validate("application/json; charset=utf-8", "{}", &h, a), 0);
    json_decref(h.body);
    CHECK_INT(validate("text/plain", "{}", &h, a), TS_E_UNSUPPORTED_MEDIA);
    CHECK_STR(h.err_field, "Content-Type");
    CHECK_INT(validate(NULL, "{}", &h, a), TS_E_UNSUPPORTED_MEDIA);
    CHECK_INT(validate("application/json", "{\"a\":", &h, a), TS_E_VALIDATION);
    CHECK_STR(h.err_field, "body");
    CHECK_STR(h.err_message, "invalid JSON");
    CHECK_INT(validate("application/json", "[1,2]", &h, a), TS_E_VALIDATION);
    CHECK_STR(h.err_message, "request body must be a JSON object");
    json_decref(h.body);
    CHECK_INT(validate("application/json", "{\"a\":1,\"a\":2}", &h, a), TS_E_VALIDATION);
    /* depth 32 is the limit: {"x": + 31 arrays parses; one more level is refused */
    char doc[300];
    snprintf(doc, sizeof(doc), "{\"x\":%s}", nested(31));
    CHECK_INT(validate("application/json", doc, &h, a), 0);
    json_decref(h.body);
    snprintf(doc, sizeof(doc), "{\"x\":%s}", nested(32));
    CHECK_INT(validate("application/json", doc, &h, a), TS_E_VALIDATION);
    CHECK_STR(h.err_message, "JSON nested deeper than 32 levels");
    /* brackets inside strings do not count */
    snprintf(doc, sizeof(doc), "{\"x\":\"%s\\\"[[[\"}", nested(40));
    CHECK_INT(validate("application/json", doc, &h, a), 0);
    json_decref(h.body);
    CHECK_INT(dispatch_validate_body(&h, 0), 0); /* routes without RF_JSON_BODY: nothing */
    arena_free(a);
    CHECK_DONE();
}
