/* Unit tests for the core pieces: arena, bounded buffer, JSON writer, error table, clock, ids. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../check.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/ids.h"
#include "core/json.h"

static int deferred_runs;
static void count_defer(void *arg)
{
    (void)arg;
    deferred_runs++;
}

static void test_arena(void)
{
    struct arena *a = arena_new(256);
    char *p = arena_alloc(a, 10);
    CHECK(((uintptr_t)p & 15) == 0);
    memset(p, 'x', 10);
    /* many allocations across blocks stay distinct and aligned */
    char *prev = NULL;
    for (int i = 0; i < 1000; i++) {
        char *q = arena_alloc(a, 100);
        CHECK(((uintptr_t)q & 15) == 0);
        CHECK(q != prev);
        memset(q, i & 0xFF, 100);
        prev = q;
    }
    CHECK(arena_used(a) >= 1000 * 100);
    char *big = arena_alloc(a, 3 << 20); /* larger than any block */
    memset(big, 1, 3 << 20);
    CHECK_STR(arena_strndup(a, "hello world", 5), "hello");
    CHECK_STR(arena_printf(a, "%d-%s", 42, "x"), "42-x");
    char *z = arena_calloc(a, 64);
    for (int i = 0; i < 64; i++)
        CHECK(z[i] == 0);
    arena_defer(a, count_defer, NULL);
    arena_defer(a, count_defer, NULL);
    CHECK(arena_free(a) == NULL);
    CHECK_INT(deferred_runs, 2);
    CHECK(arena_free(NULL) == NULL);
}

static void test_buf(void)
{
    struct buf b;
    buf_init(&b, 10);
    CHECK_INT(buf_append(&b, "0123456789", 10), 0); /* limit */
    CHECK_INT(buf_append(&b, "x", 1), -E2BIG);     /* limit + 1 */
    CHECK_INT(b.len, 10);
    buf_consume(&b, 4);
    CHECK_STR(buf_cstr(&b), "456789");
    CHECK_INT(buf_printf(&b, "%d", 1234), 0);
    CHECK_STR(buf_cstr(&b), "4567891234");
    CHECK_INT(buf_printf(&b, "%d", 5), -E2BIG);
    buf_release(&b);
    buf_init(&b, 1 << 20);
    char chunk[1000];
    memset(chunk, 'a', sizeof(chunk));
    for (int i = 0; i < 500; i++)
        CHECK_INT(buf_append(&b, chunk, sizeof(chunk)), 0);
    CHECK_INT(b.len, 500000);
    buf_release(&b);
}

/* The writer's output must parse back (with jansson) to exactly what was written. */
static void test_json_roundtrip(void)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kstr(&w, "s", "quote\" backslash\\ nl\n tab\t ctl\x01 é 🎓");
    jw_kint(&w, "i", -9007199254740991LL);
    jw_kdouble(&w, "d", 0.1 + 0.2);
    jw_kdouble(&w, "nan", NAN);
    jw_kbool(&w, "t", true);
    jw_key(&w, "arr");
    jw_arr_open(&w);
    jw_int(&w, 1);
    jw_null(&w);
    jw_obj_open(&w);
    jw_obj_close(&w);
    jw_arr_close(&w);
    jw_kstr(&w, "null", NULL);
    jw_obj_close(&w);
    CHECK_INT(jw_finish(&w), 0);
    json_error_t e;
    json_t *v = json_loads(buf_cstr(&b), 0, &e);
    CHECK(v != NULL);
    if (v) {
        CHECK_STR(json_string_value(json_object_get(v, "s")),
                  "quote\" backslash\\ nl\n tab\t ctl\x01 é 🎓");
        CHECK(json_integer_value(json_object_get(v, "i")) == -9007199254740991LL);
        CHECK(fabs(json_real_value(json_object_get(v, "d")) - 0.3) < 1e-15);
        CHECK(json_is_null(json_object_get(v, "nan")));
        CHECK(json_is_true(json_object_get(v, "t")));
        CHECK_INT(json_array_size(json_object_get(v, "arr")), 3);
        CHECK(json_is_null(json_object_get(v, "null")));
        json_decref(v);
    }
    buf_release(&b);
}

static void test_json_invalid_utf8(void)
{
    struct buf b;
    buf_init(&b, 256);
    CHECK_INT(json_escape(&b, "a\xff" "b\xc3", 4), 0); /* stray byte, truncated sequence */
    CHECK_STR(buf_cstr(&b), "a\\ufffdb\\ufffd");
    b.len = 0;
    CHECK_INT(json_escape(&b, "\xed\xa0\x80", 3), 0); /* UTF-16 surrogate encoded: invalid */
    CHECK_STR(buf_cstr(&b), "\\ufffd\\ufffd\\ufffd");
    buf_release(&b);
}

static void test_json_limits(void)
{
    struct buf b;
    buf_init(&b, 8);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kstr(&w, "long", "more than eight bytes");
    jw_obj_close(&w);
    CHECK_INT(jw_finish(&w), -E2BIG);
    buf_release(&b);
    buf_init(&b, 4096);
    jw_init(&w, &b);
    for (int i = 0; i < JW_MAX_DEPTH + 1; i++)
        jw_arr_open(&w);
    CHECK(jw_finish(&w) < 0);
    buf_release(&b);
    buf_init(&b, 4096);
    jw_init(&w, &b);
    jw_obj_open(&w); /* unclosed */
    CHECK_INT(jw_finish(&w), -EINVAL);
    buf_release(&b);
}

static void test_err_table(void)
{
    CHECK_INT(err_http_status(TS_E_VALIDATION), 400);
    CHECK_INT(err_http_status(TS_E_HEADERS_TOO_LARGE), 431);
    CHECK_INT(err_http_status(TS_E_URI_TOO_LONG), 414);
    CHECK_INT(err_http_status(TS_E_TOO_LARGE), 413);
    CHECK_INT(err_http_status(TS_E_TIMEOUT), 408);
    CHECK_INT(err_http_status(-ENOENT), 500); /* stray errno: internal */
    CHECK_INT(err_http_status_in(TS_E_VALIDATION, SURF_DESK), 422); /* desk.md's status */
    CHECK_INT(err_http_status_in(TS_E_VALIDATION, SURF_COMMERCE), 400);
    CHECK_STR(err_code(TS_E_UNAUTHENTICATED, SURF_RECS), "AUTHENTICATION_FAILED");
    CHECK_STR(err_code(TS_E_UNAUTHENTICATED, SURF_LEARNING), "UNAUTHORIZED");
    CHECK_STR(err_code(TS_E_RATE_LIMITED, SURF_COMMERCE), "RATE_LIMIT_EXCEEDED");
    CHECK_INT(surface_from_name("desk"), SURF_DESK);
    CHECK_INT(surface_from_name("nope"), -1);
}

static int64_t fixed_clock(void)
{
    return 1735689600123LL; /* 2025-01-01T00:00:00.123Z */
}

static void test_clock_ids(void)
{
    char ts[40];
    clock_iso8601(0, 0, ts, sizeof(ts));
    CHECK_STR(ts, "1970-01-01T00:00:00Z");
    clock_set_source(fixed_clock);
    clock_iso8601(clock_now_ms(), 1, ts, sizeof(ts));
    CHECK_STR(ts, "2025-01-01T00:00:00.123Z");
    char a[UUID_STR_LEN], b[UUID_STR_LEN];
    id_uuid7(a);
    id_uuid7(b);
    CHECK(id_is_uuid(a));
    CHECK(strcmp(a, b) != 0);
    CHECK(a[14] == '7');                              /* version nibble */
    CHECK(strchr("89ab", a[19]) != NULL);            /* variant */
    CHECK(strncmp(a, "01941f29-7c7b", 13) == 0);      /* 48-bit ms timestamp prefix */
    clock_set_source(NULL);
    CHECK(!id_is_uuid("not-a-uuid"));
}

static void test_iso_parse(void)
{
    int64_t ms;
    CHECK(clock_parse_iso8601("1970-01-01", &ms) == 0 && ms == 0);
    CHECK(clock_parse_iso8601("2025-01-15T14:30:00Z", &ms) == 0 && ms == 1736951400000LL);
    CHECK(clock_parse_iso8601("2025-01-15 14:30", &ms) == 0 && ms == 1736951400000LL);
    CHECK(clock_parse_iso8601("2025-01-15T16:30:00+02:00", &ms) == 0 && ms == 1736951400000LL);
    CHECK(clock_parse_iso8601("2025-01-15T09:30:00.250-0500", &ms) == 0 &&
          ms == 1736951400250LL);
    CHECK(clock_parse_iso8601("2024-02-29T00:00:00Z", &ms) == 0);
    CHECK(clock_parse_iso8601("2023-02-29", &ms) < 0);
    CHECK(clock_parse_iso8601("2025-13-01", &ms) < 0);
    CHECK(clock_parse_iso8601("2025-01-15T24:00:00Z", &ms) < 0);
    CHECK(clock_parse_iso8601("2025-01-15T14:30:00Zjunk", &ms) < 0);
    CHECK(clock_parse_iso8601("15/01/2025", &ms) < 0);
    CHECK(clock_parse_iso8601("", &ms) < 0);
    char out[40];
    clock_parse_iso8601("1969-12-31T23:59:59Z", &ms);
    clock_iso8601(ms, 0, out, sizeof(out));
    CHECK(strcmp(out, "1969-12-31T23:59:59Z") == 0);
}

int main(void)
{
    test_iso_parse();
    test_arena();
    test_buf();
    test_json_roundtrip();
    test_json_invalid_utf8();
    test_json_limits();
    test_err_table();
    test_clock_ids();
    CHECK_DONE();
}
