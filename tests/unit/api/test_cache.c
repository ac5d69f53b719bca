/* Unit tests of the response cache: TTL expiry, generation invalidation and LRU under a byte cap. */
#include "../check.h"
#include "api/cache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"



static int64_t fake_now = 1700000000000;

static int64_t fake_clock(void)
{
    return fake_now;
}

#define JSON "application/json"

static int put(struct cache *c, const char *key, const char *tenant, int ttl, const char *body)
{
    return cache_put(c, key, tenant, cache_generation(c, tenant), ttl, 200, JSON, body,
                     strlen(body));
}

static int hit(struct cache *c, const char *key, const char *tenant)
{
    struct cache_hit h;
    return cache_get(c, key, tenant, cache_generation(c, tenant), &h) == 0;
}

static void test_put_get(void)
{
    struct cache *c = cache_new(1 << 20, 16);
    const char body[] = "{\"a\":1}\0tail";             /* bytes, not a C string */
    uint64_t g = cache_generation(c, "t1");
    CHECK(cache_put(c, "t1|GET /x", "t1", g, 60, 203, JSON, body, sizeof(body)) == 0);
    fake_now += 2500;
    struct cache_hit h = {0};
    CHECK(cache_get(c, "t1|GET /x", "t1", g, &h) == 0);
    CHECK(h.status == 203);
    CHECK(strcmp(h.content_type, JSON) == 0);
    CHECK(h.body_len == sizeof(body) && memcmp(h.body, body, sizeof(body)) == 0);
    CHECK(h.age_s == 2);
    CHECK(h.ttl_left_s == 58);                      /* 57.5 s rounded up */
    struct cache_hit untouched = {.status = -1};
    CHECK(cache_get(c, "t1|GET /y", "t1", g, &untouched) == -ENOENT);
    CHECK(untouched.status == -1);
    CHECK(cache_get(c, "t1|GET /x", "t2", g, &untouched) == -ENOENT);  /* other tenant */
    CHECK(hit(c, "t1|GET /x", "t1"));               /* ...and the entry is still there */
    CHECK(cache_put(c, "t1|GET /x", "t1", g, 60, 200, JSON, "v2", 2) == 0);  /* replace */
    CHECK(cache_get(c, "t1|GET /x", "t1", g, &h) == 0 && h.body_len == 2 && memcmp(h.body, "v2", 2) == 0);
    CHECK(cache_put(c, "empty", "t1", g, 60, 204, "", NULL, 0) == 0);
    CHECK(cache_get(c, "empty", "t1", g, &h) == 0 && h.body_len == 0 && h.status == 204);
    struct cache_stats st;
    cache_stats(c, &st);
    CHECK(st.entries == 2 && st.hits == 4 && st.misses == 2 && st.puts == 3);
    cache_free(c);
}

static void test_expiry(void)
{
    struct cache *c = cache_new(1 << 20, 16);
    CHECK(put(c, "k", "t", 10, "body") == 0);
    fake_now += 9999;
    CHECK(hit(c, "k", "t"));                        /* 1 ms before expiry */
    fake_now += 1;
    CHECK(!hit(c, "k", "t"));                       /* exactly at the TTL: gone */
    struct cache_stats st;
    cache_stats(c, &st);
    CHECK(st.expired == 1 && st.entries == 0 && st.bytes == 0);
    fake_now -= 5000;                               /* removed, not merely hidden */
    CHECK(!hit(c, "k", "t"));
    cache_free(c);
}

static void test_generation(void)
{
    struct cache *c = cache_new(1 << 20, 16);
    uint64_t a0 = cache_generation(c, "A"), b0 = cache_generation(c, "B");
    CHECK(put(c, "A|/r", "A", 60, "a") == 0);
    CHECK(put(c, "B|/r", "B", 60, "b") == 0);
    cache_bump(c, "A");                             /* a committed write for A */
    uint64_t a1 = cache_generation(c, "A");
    CHECK(a1 > a0);
    CHECK(cache_generation(c, "B") == b0);          /* B untouched */
    struct cache_hit h;
    CHECK(cache_get(c, "A|/r", "A", a1, &h) == -ENOENT);
    CHECK(cache_get(c, "B|/r", "B", b0, &h) == 0);
    struct cache_stats st;
    cache_stats(c, &st);
    CHECK(st.stale == 1 && st.entries == 1);
    /* a read that began before the write must not be stored after it */
    CHECK(cache_put(c, "A|/r", "A", a0, 60, 200, JSON, "old", 3) == -ESTALE);
    CHECK(cache_get(c, "A|/r", "A", a1, &h) == -ENOENT);
    CHECK(cache_put(c, "A|/r", "A", a1, 60, 200, JSON, "new", 3) == 0);
    CHECK(cache_get(c, "A|/r", "A", a1, &h) == 0 && memcmp(h.body, "new", 3) == 0);
    cache_bump(c, "A");
    cache_bump(c, "A");
    CHECK(cache_generation(c, "A") > a1);
    cache_free(c);
}

/* With room for max_tenants counters, tenant max_tenants + 1 drops them all: no stale hits. */
static void test_tenant_cap(void)
{
    struct cache *c = cache_new(1 << 20, 2);
    cache_bump(c, "t1");
    cache_bump(c, "t2");
    uint64_t g1 = cache_generation(c, "t1");
    CHECK(put(c, "t1|/r", "t1", 60, "x") == 0);
    CHECK(put(c, "u|/r", "u", 60, "y") == 0);       /* u never written: at the floor */
    struct cache_stats st;
    cache_stats(c, &st);
    CHECK(st.tenants == 2);
    CHECK(hit(c, "t1|/r", "t1") && hit(c, "u|/r", "u"));
    cache_bump(c, "t3");                            /* limit + 1 tenants */
    cache_stats(c, &st);
    CHECK(st.tenants == 1);
    CHECK(cache_generation(c, "t1") > g1);          /* generations never go back */
    CHECK(!hit(c, "t1|/r", "t1"));
    CHECK(!hit(c, "u|/r", "u"));
    char longt[CACHE_MAX_TENANT_ID + 2];
    memset(longt, 't', sizeof(longt) - 1);
    longt[sizeof(longt) - 1] = '\0';
    CHECK(put(c, "k", longt, 60, "z") == -EINVAL);
    uint64_t f = cache_generation(c, "nobody");
    cache_bump(c, longt);                           /* no counter possible: floor rises */
    CHECK(cache_generation(c, "nobody") > f);
    cache_free(c);
}

/* Bodies of 9000 bytes in a 40000-byte cache: four fit (overhead is far below 1000 bytes
 * each), a fifth evicts exactly the least recently used. */
static void test_lru(void)
{
    struct cache *c = cache_new(40000, 16);
    char *body = malloc(9001);
    memset(body, 'b', 9000);
    body[9000] = '\0';
    const char *keys[] = {"A", "B", "C", "D"};
    for (int i = 0; i < 4; i++)
        CHECK(put(c, keys[i], "t", 60, body) == 0);
    struct cache_stats st;
    cache_stats(c, &st);
    CHECK(st.entries == 4 && st.evictions == 0);
    CHECK(st.bytes >= 4 * 9000 && st.bytes <= 40000);
    CHECK(hit(c, "A", "t"));                        /* A becomes most recent; B is LRU */
    CHECK(put(c, "E", "t", 60, body) == 0);
    cache_stats(c, &st);
    CHECK(st.entries == 4 && st.evictions == 1 && st.bytes <= 40000);
    CHECK(!hit(c, "B", "t"));
    CHECK(hit(c, "A", "t") && hit(c, "C", "t") && hit(c, "D", "t") && hit(c, "E", "t"));
    CHECK(put(c, "F", "t", 60, body) == 0);         /* LRU now A (C, D, E, A touched in order) */
    CHECK(!hit(c, "A", "t") && hit(c, "C", "t"));
    free(body);
    cache_free(c);
}

static void test_bounds(void)
{
    CHECK(cache_new(CACHE_MIN_BYTES - 1, 1) == NULL);
    CHECK(cache_new(CACHE_MIN_BYTES, 0) == NULL);
    CHECK(cache_free(NULL) == NULL);
    struct cache *c = cache_new(40000, 4);
    uint64_t g = cache_generation(c, "t");
    char *big = calloc(1, 10001);
    CHECK(cache_put(c, "big", "t", g, 60, 200, JSON, big, 10001) == -E2BIG);  /* share + 1 */
    CHECK(cache_put(c, "big", "t", g, 60, 200, JSON, big, 10000) == -E2BIG);  /* + overhead */
    CHECK(cache_put(c, "ok", "t", g, 60, 200, JSON, big, 9000) == 0);
    free(big);
    CHECK(cache_put(c, "k", "t", g, 0, 200, JSON, "x", 1) == -EINVAL);
    CHECK(cache_put(c, "k", "t", g, CACHE_MAX_TTL_S + 1, 200, JSON, "x", 1) == -EINVAL);
    CHECK(cache_put(c, "k", "t", g, CACHE_MAX_TTL_S, 200, JSON, "x", 1) == 0);
    CHECK(cache_put(c, "k", "t", g, 60, 99, JSON, "x", 1) == -EINVAL);
    CHECK(cache_put(c, "k", "t", g, 60, 200, JSON, NULL, 1) == -EINVAL);
    CHECK(cache_put(c, "", "t", g, 60, 200, JSON, "x", 1) == -EINVAL);
    char key[CACHE_MAX_KEY + 2];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';                     /* limit + 1 */
    CHECK(cache_put(c, key, "t", g, 60, 200, JSON, "x", 1) == -EINVAL);
    key[CACHE_MAX_KEY] = '\0';                       /* the limit */
    CHECK(cache_put(c, key, "t", g, 60, 200, JSON, "x", 1) == 0);
    CHECK(hit(c, key, "t"));
    struct cache_stats st;
    cache_stats(c, &st);
    CHECK(st.refused == 2);
    cache_free(c);
}

/* Random puts, gets and bumps: the byte cap holds and the counters add up. */
static void test_churn(void)
{
    struct cache *c = cache_new(64 * 1024, 8);
    static char body[16000];
    memset(body, 'z', sizeof(body));
    char key[32], tenant[8];
    srand(12345);
    unsigned long gets = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "k%d", rand() % 300);
        snprintf(tenant, sizeof(tenant), "t%d", rand() % 12);
        int op = rand() % 10;
        if (op < 5) {
            int r = cache_put(c, key, tenant, cache_generation(c, tenant), 1 + rand() % 5, 200,
                              JSON, body, (size_t)(rand() % 15000));
            CHECK(r == 0 || r == -E2BIG);
        } else if (op < 9) {
            hit(c, key, tenant);
            gets++;
        } else {
            cache_bump(c, tenant);
        }
        fake_now += rand() % 50;
        struct cache_stats st;
        cache_stats(c, &st);
        if (st.bytes > st.max_bytes || st.tenants > 8) {
            fprintf(stderr, "bound broken at step %d: %zu bytes, %zu tenants\n", i, st.bytes,
                    st.tenants);
            check_failures++;
            break;
        }
    }
    struct cache_stats st;
    cache_stats(c, &st);
    CHECK(st.hits + st.misses == gets);
    cache_free(c);
}

int main(void)
{
    clock_set_source(fake_clock);
    test_put_get();
    test_expiry();
    test_generation();
    test_tenant_cap();
    test_lru();
    test_bounds();
    test_churn();
    if (check_failures) {
        fprintf(stderr, "test_cache: %d check(s) failed\n", check_failures);
        return 1;
    }
    printf("test_cache: ok\n");
    return 0;
}
