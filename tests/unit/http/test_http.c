/* Unit tests for the socket-free parts of the HTTP glue: decoding, query and header lookup. */
#include "../check.h"
#include "http/http.h"

static void test_url_decode(void)
{
    struct arena *a = arena_new(1024);
    CHECK_STR(http_url_decode(a, "a%20b%2Fc", 9, false), "a b/c");
    CHECK_STR(http_url_decode(a, "a+b", 3, false), "a+b");
    CHECK_STR(http_url_decode(a, "a+b", 3, true), "a b");
    CHECK_STR(http_url_decode(a, "%e2%9c%93", 9, false), "\xe2\x9c\x93");
    CHECK(http_url_decode(a, "%zz", 3, false) == NULL);  /* bad hex */
    CHECK(http_url_decode(a, "%4", 2, false) == NULL);   /* truncated */
    CHECK(http_url_decode(a, "%00", 3, false) == NULL);  /* embedded NUL */
    arena_free(a);
}

static void test_query_and_headers(void)
{
    struct arena *a = arena_new(1024);
    struct request req = {0};
    req.arena = a;
    req.query = arena_strdup(a, "page=2&q=hello+world&empty&x=%41%42&page=9");
    CHECK_STR(http_query_get(&req, "page"), "2"); /* first wins */
    CHECK_STR(http_query_get(&req, "q"), "hello world");
    CHECK_STR(http_query_get(&req, "empty"), "");
    CHECK_STR(http_query_get(&req, "x"), "AB");
    CHECK(http_query_get(&req, "missing") == NULL);
    struct http_header hs[] = {{"Content-Type", "application/json"}, {"X-Request-ID", "abc"}};
    req.headers = hs;
    req.nheaders = 2;
    CHECK_STR(http_header_get(&req, "content-type"), "application/json");
    CHECK_STR(http_header_get(&req, "x-request-id"), "abc");
    CHECK(http_header_get(&req, "Accept") == NULL);
    CHECK_STR(http_status_text(431), "Request Header Fields Too Large");
    arena_free(a);
}

int main(void)
{
    test_url_decode();
    test_query_and_headers();
    CHECK_DONE();
}
