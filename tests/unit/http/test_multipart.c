/* Unit tests for the streaming multipart/form-data parser: boundaries from Content-Type, every
 * split of a body gives the same parts, and each error kind. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "http/multipart.h"

/* What the callbacks saw, flattened: "B name|filename|ctype\n", data bytes, "E\n". */
struct rec {
    char out[65536];
    size_t len;
    int stop_at_begin; /* >0: on_part_begin of that part returns -7 */
    int begins;
};

static void put(struct rec *r, const char *s, size_t n)
{
    if (r->len + n <= sizeof(r->out)) {
        memcpy(r->out + r->len, s, n);
        r->len += n;
    }
}

static int begin_cb(void *arg, const struct mp_part *p)
{
    struct rec *r = arg;
    if (++r->begins == r->stop_at_begin)
        return -7;
    char line[1024];
    int n = snprintf(line, sizeof(line), "B %s|%s|%s\n", p->name,
                     p->filename ? p->filename : "(none)",
                     p->content_type ? p->content_type : "(none)");
    put(r, line, (size_t)n);
    return 0;
}

static int data_cb(void *arg, const char *at, size_t n)
{
    put(arg, at, n);
    return 0;
}

static int end_cb(void *arg)
{
    put(arg, "E\n", 2);
    return 0;
}

static const struct mp_callbacks cbs = {begin_cb, data_cb, end_cb};

/* Feeds body in pieces of `step` bytes after an optional first cut at `cut`. */
static int run(const char *boundary, const char *body, size_t n, size_t cut, size_t step,
               struct rec *r, int max_parts)
{
    static struct mp_parser p;
    mp_init(&p, boundary, max_parts, &cbs, r);
    size_t i = 0;
    int rc = 0;
    if (cut > 0 && cut <= n) {
        rc = mp_feed(&p, body, cut);
        i = cut;
    }
    while (rc == 0 && i < n) {
        size_t k = n - i < step ? n - i : step;
        rc = mp_feed(&p, body + i, k);
        i += k;
    }
    return rc ? rc : mp_finish(&p);
}

static void test_boundary_param(void)
{
    char b[MP_BOUNDARY_MAX + 1];
    CHECK_INT(mp_boundary_from_content_type("multipart/form-data; boundary=abc123", b), 0);
    CHECK_STR(b, "abc123");
    CHECK_INT(mp_boundary_from_content_type("Multipart/Form-Data;charset=utf-8;BOUNDARY=\"a b:c\"",
                                            b), 0);
    CHECK_STR(b, "a b:c");
    CHECK_INT(mp_boundary_from_content_type("multipart/form-data; boundary=\"q\\\"x\"", b),
              MP_E_BOUNDARY); /* '"' is no bchar */
    char seventy[80], seventy1[80], ct[200];
    memset(seventy, 'x', 70);
    seventy[70] = 0;
    memset(seventy1, 'y', 71);
    seventy1[71] = 0;
    snprintf(ct, sizeof(ct), "multipart/form-data; boundary=%s", seventy);
    CHECK_INT(mp_boundary_from_content_type(ct, b), 0);
    CHECK_INT((int)strlen(b), 70);
    snprintf(ct, sizeof(ct), "multipart/form-data; boundary=%s", seventy1);
    CHECK_INT(mp_boundary_from_content_type(ct, b), MP_E_BOUNDARY);
    CHECK_INT(mp_boundary_from_content_type("multipart/form-data", b), MP_E_BOUNDARY);
    CHECK_INT(mp_boundary_from_content_type("multipart/form-data; boundary=", b), MP_E_BOUNDARY);
    CHECK_INT(mp_boundary_from_content_type("multipart/form-data; boundary=\"ab \"", b),
              MP_E_BOUNDARY);
    CHECK_INT(mp_boundary_from_content_type("multipart/form-data; boundary=a; boundary=b", b),
              MP_E_BOUNDARY);
    CHECK_INT(mp_boundary_from_content_type("multipart/mixed; boundary=a", b), MP_E_MEDIA_TYPE);
    CHECK_INT(mp_boundary_from_content_type("application/json", b), MP_E_MEDIA_TYPE);
    CHECK_INT(mp_boundary_from_content_type("multipart/form-dataX; boundary=a", b),
              MP_E_MEDIA_TYPE);
    CHECK_INT(mp_boundary_from_content_type(NULL, b), MP_E_MEDIA_TYPE);
}

/* A body whose data holds near-delimiters: "\r\n--XYZ" prefixes, "\r\r\n-", the boundary
 * without its leading CRLF, and NUL bytes. */
static size_t sample(char *body, size_t cap)
{
    static const char bin[] = "\r\n--XY\r\n--XYz\r\r\n--X\0\0--XYZ--\r\n-\r";
    size_t n = 0;
    n += (size_t)snprintf(body + n, cap - n,
                          "preamble to ignore\r\n--XYZ  \r\n"
                          "Content-Disposition: form-data; name=\"ticket_id\"\r\n\r\n"
                          "abc-123\r\n--XYZ\r\n"
                          "content-disposition: form-data; name=file; "
                          "filename=\"r\\\"e\\\\port \\x.bin\"\r\n"
                          "Content-Type:  application/octet-stream \r\n\r\n");
    memcpy(body + n, bin, sizeof(bin) - 1);
    n += sizeof(bin) - 1;
    n += (size_t)snprintf(body + n, cap - n,
                          "\r\n--XYZ\r\nContent-Disposition: form-data; name=\"empty\"\r\n\r\n"
                          "\r\n--XYZ--\r\nepilogue \r\n--XYZ\r\n junk");
    return n;
}

static void test_every_split(void)
{
    char body[2048];
    size_t n = sample(body, sizeof(body));
    struct rec *want = calloc(1, sizeof(*want));
    CHECK_INT(run("XYZ", body, n, 0, n, want, 10), 0);
    static const char bin[] = "\r\n--XY\r\n--XYz\r\r\n--X\0\0--XYZ--\r\n-\r";
    char expect[1024];
    size_t e = 0;
    e += (size_t)snprintf(expect, sizeof(expect),
                          "B ticket_id|(none)|(none)\nabc-123E\n"
                          "B file|r\"e\\port \\x.bin|application/octet-stream\n");
    memcpy(expect + e, bin, sizeof(bin) - 1);
    e += sizeof(bin) - 1;
    e += (size_t)snprintf(expect + e, sizeof(expect) - e, "E\nB empty|(none)|(none)\nE\n");
    CHECK_INT(want->len, e);
    CHECK(memcmp(want->out, expect, e) == 0);
    struct rec *got = calloc(1, sizeof(*got));
    int bad = 0;
    for (size_t cut = 1; cut < n; cut++) {
        memset(got, 0, sizeof(*got));
        if (run("XYZ", body, n, cut, n, got, 10) != 0 || got->len != want->len ||
            memcmp(got->out, want->out, want->len) != 0)
            bad++;
    }
    CHECK_INT(bad, 0);
    for (size_t step = 1; step <= 7; step++) {
        memset(got, 0, sizeof(*got));
        CHECK_INT(run("XYZ", body, n, 0, step, got, 10), 0);
        CHECK(got->len == want->len && memcmp(got->out, want->out, want->len) == 0);
    }
    free(want);
    free(got);
}

static void test_errors(void)
{
    struct rec *r = calloc(1, sizeof(*r));
    char body[2048];
    size_t n = sample(body, sizeof(body));
    /* wrong boundary: never found */
    CHECK_INT(run("XYW", body, n, 0, n, r, 10), MP_E_BOUNDARY);
    /* a long preamble without the boundary fails early */
    char *big = malloc(MP_PREAMBLE_MAX + 100);
    memset(big, 'a', MP_PREAMBLE_MAX + 100);
    memset(r, 0, sizeof(*r));
    static struct mp_parser p;
    mp_init(&p, "XYZ", 10, &cbs, r);
    CHECK_INT(mp_feed(&p, big, MP_PREAMBLE_MAX + 100), MP_E_BOUNDARY);
    CHECK_INT(mp_feed(&p, "x", 1), MP_E_BOUNDARY); /* sticky */
    free(big);
    /* truncated at every point before the close delimiter ends */
    const char *close = strstr(body, "\r\n--XYZ--") + 9;
    int bad = 0;
    for (size_t cut = 0; body + cut < close; cut++) {
        memset(r, 0, sizeof(*r));
        int rc = run("XYZ", body, cut, 0, cut ? cut : 1, r, 10);
        if (rc != (cut < 20 + 5 ? MP_E_BOUNDARY : MP_E_TRUNCATED))
            bad++;
    }
    CHECK_INT(bad, 0);
    /* too many parts */
    memset(r, 0, sizeof(*r));
    CHECK_INT(run("XYZ", body, n, 0, n, r, 2), MP_E_TOO_MANY_PARTS);
    /* callback error passes through */
    memset(r, 0, sizeof(*r));
    r->stop_at_begin = 2;
    CHECK_INT(run("XYZ", body, n, 0, 5, r, 10), -7);
    /* header block too long */
    size_t hn = MP_HEADER_MAX + 200;
    char *h = malloc(hn + 64);
    size_t k = (size_t)sprintf(h, "--B\r\nContent-Disposition: form-data; name=\"");
    memset(h + k, 'n', hn - k);
    memcpy(h + hn, "\"\r\n\r\nx\r\n--B--", 13);
    memset(r, 0, sizeof(*r));
    CHECK_INT(run("B", h, hn + 13, 0, 100, r, 10), MP_E_HEADER_TOO_LONG);
    free(h);
    /* malformed: junk after the delimiter, header without colon, no disposition */
    const char *m1 = "--B\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--Bjunk\r\n";
    memset(r, 0, sizeof(*r));
    CHECK_INT(run("B", m1, strlen(m1), 0, 3, r, 10), MP_E_MALFORMED);
    const char *m2 = "--B\r\nContent-Disposition form-data\r\n\r\nx\r\n--B--";
    CHECK_INT(run("B", m2, strlen(m2), 0, 3, r, 10), MP_E_MALFORMED);
    const char *m3 = "--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--";
    CHECK_INT(run("B", m3, strlen(m3), 0, 3, r, 10), MP_E_MALFORMED);
    const char *m4 = "--B\r\nContent-Disposition: attachment; name=a\r\n\r\nx\r\n--B--";
    CHECK_INT(run("B", m4, strlen(m4), 0, 3, r, 10), MP_E_MALFORMED);
    const char *m5 = "--B\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--B--";
    CHECK_INT(run("B", m5, strlen(m5), 0, 3, r, 10), MP_E_MALFORMED);
    /* a part whose headers are empty is still a part, and a minimal body is fine */
    const char *ok = "--B\r\nContent-Disposition: form-data; name=\"\"\r\n\r\n\r\n--B--";
    memset(r, 0, sizeof(*r));
    CHECK_INT(run("B", ok, strlen(ok), 0, 1, r, 1), 0);
    CHECK(r->len == 19 && memcmp(r->out, "B |(none)|(none)\nE\n", 19) == 0);
    free(r);
}

/* n parts "f" with `lines` header lines each (Content-Disposition and lines-1 others). */
static char *parts_body(int n, int lines, size_t *ret_len)
{
    size_t cap = (size_t)n * (64 + 12 * (size_t)lines) + 16, len = 0;
    char *b = malloc(cap);
    for (int i = 0; i < n; i++) {
        len += (size_t)sprintf(b + len, "--B\r\nContent-Disposition: form-data; name=\"f\"\r\n");
        for (int k = 1; k < lines; k++)
            len += (size_t)sprintf(b + len, "X-%d: v\r\n", k);
        len += (size_t)sprintf(b + len, "\r\nv\r\n");
    }
    len += (size_t)sprintf(b + len, "--B--");
    *ret_len = len;
    return b;
}

/* The parser's own caps hold whatever the caller asks: MP_PARTS_MAX parts, MP_PART_HEADERS_MAX
 * header lines a part; each at the limit and one past it. */
static void test_caps(void)
{
    struct rec *r = malloc(sizeof(*r));
    size_t n;
    char *b = parts_body(MP_PARTS_MAX, 1, &n);
    memset(r, 0, sizeof(*r));
    CHECK_INT(run("B", b, n, 0, n, r, MP_PARTS_MAX * 10), 0);
    CHECK_INT(r->begins, MP_PARTS_MAX);
    free(b);
    b = parts_body(MP_PARTS_MAX + 1, 1, &n);
    memset(r, 0, sizeof(*r));
    CHECK_INT(run("B", b, n, 0, n, r, MP_PARTS_MAX * 10), MP_E_TOO_MANY_PARTS);
    free(b);
    b = parts_body(1, MP_PART_HEADERS_MAX, &n);
    memset(r, 0, sizeof(*r));
    CHECK_INT(run("B", b, n, 0, 7, r, 1), 0);
    free(b);
    b = parts_body(1, MP_PART_HEADERS_MAX + 1, &n);
    memset(r, 0, sizeof(*r));
    CHECK_INT(run("B", b, n, 0, 7, r, 1), MP_E_TOO_MANY_HEADERS);
    free(b);
    free(r);
}

int main(void)
{
    test_boundary_param();
    test_every_split();
    test_errors();
    test_caps();
    CHECK_DONE();
}
