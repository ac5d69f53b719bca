/* Unit tests of the token-bucket rate limiter, driven by an injected clock. */
#include "../check.h"
#include "auth/ratelimit.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"



static int64_t fake_now = 1700000000000;

static int64_t fake_clock(void)
{
    return fake_now;
}

static struct ratelimit_result take(struct ratelimit *rl, int cls, const char *who)
{
    struct ratelimit_result r = {0};
    int rc = ratelimit_take(rl, cls, who, &r);
    CHECK(rc == 0);
    return r;
}

/* auth=20/60: one token per 3 s; capacity 20. */
static void test_exact_limit(void)
{
    struct ratelimit *rl = ratelimit_new(100);
    int auth = ratelimit_class_add(rl, "auth", 20, 60);
    CHECK(auth == 0);
    for (int i = 1; i <= 20; i++) {
        struct ratelimit_result r = take(rl, auth, "user-1");
        CHECK(r.allowed);
        CHECK(r.limit == 20);
        CHECK(r.remaining == 20 - i);
        CHECK(r.retry_after_s == 0);
        CHECK(r.reset_s == 3 * i);          /* i tokens missing, 3 s each */
    }
    struct ratelimit_result r = take(rl, auth, "user-1");   /* limit + 1 */
    CHECK(!r.allowed);
    CHECK(r.remaining == 0);
    CHECK(r.retry_after_s == 3);
    CHECK(r.reset_s == 60);
    r = take(rl, auth, "user-2");                           /* other principals unaffected */
    CHECK(r.allowed && r.remaining == 19);
    ratelimit_free(rl);
}

static void test_refill(void)
{
    struct ratelimit *rl = ratelimit_new(100);
    int auth = ratelimit_class_add(rl, "auth", 20, 60);
    for (int i = 0; i < 20; i++)
        take(rl, auth, "u");
    fake_now += 2999;                           /* 2999 ms * 20/60000 tokens/ms < 1 token */
    struct ratelimit_result r = take(rl, auth, "u");
    CHECK(!r.allowed);
    CHECK(r.retry_after_s == 1);                /* 1 ms short: rounded up to 1 s, never 0 */
    fake_now += 1;                              /* exactly 3 s: one token */
    r = take(rl, auth, "u");
    CHECK(r.allowed && r.remaining == 0);
    r = take(rl, auth, "u");
    CHECK(!r.allowed && r.retry_after_s == 3);
    fake_now += 30000;                          /* 10 tokens */
    r = take(rl, auth, "u");
    CHECK(r.allowed && r.remaining == 9);
    CHECK(r.reset_s == 33);                     /* 11 tokens missing * 3 s */
    fake_now += 3600 * 1000;                    /* long idle: full, never more than full */
    for (int i = 0; i < 20; i++)
        CHECK(take(rl, auth, "u").allowed);
    CHECK(!take(rl, auth, "u").allowed);
    fake_now -= 10000;                          /* clock going back grants and costs nothing */
    r = take(rl, auth, "u");
    CHECK(!r.allowed && r.remaining == 0 && r.retry_after_s == 3 && r.reset_s == 60);
    fake_now += 10000 + 3000;                   /* 3 s after the last real refill: one token */
    CHECK(take(rl, auth, "u").allowed);
    ratelimit_free(rl);
}

/* default=600/60 is 10 tokens per second: 100 ms per token, fractions carried exactly. */
static void test_fractional_refill(void)
{
    struct ratelimit *rl = ratelimit_new(10);
    int def = ratelimit_class_add(rl, "default", 600, 60);
    for (int i = 0; i < 600; i++)
        CHECK(take(rl, def, "ip:1").allowed);
    CHECK(!take(rl, def, "ip:1").allowed);
    int allowed = 0;
    for (int i = 0; i < 1000; i++) {            /* 1000 steps of 30 ms = 30 s = 300 tokens */
        fake_now += 30;
        allowed += take(rl, def, "ip:1").allowed;
    }
    CHECK(allowed == 300);
    ratelimit_free(rl);
}

static void test_long_windows(void)
{
    struct ratelimit *rl = ratelimit_new(10);
    int stream = ratelimit_class_add(rl, "stream", 10000, 3600);
    int export = ratelimit_class_add(rl, "export", 20, 3600);
    for (int i = 0; i < 10000; i++)
        CHECK(take(rl, stream, "k").allowed);
    struct ratelimit_result r = take(rl, stream, "k");
    CHECK(!r.allowed && r.retry_after_s == 1);  /* 360 ms per token -> 1 s */
    CHECK(r.reset_s == 3600);
    for (int i = 0; i < 20; i++)
        CHECK(take(rl, export, "k").allowed);   /* same principal, separate class bucket */
    r = take(rl, export, "k");
    CHECK(!r.allowed && r.retry_after_s == 180 && r.reset_s == 3600);
    ratelimit_free(rl);
}

/* max_keys buckets fit; limit + 1 evicts the least recently used one. */
static void test_eviction(void)
{
    struct ratelimit *rl = ratelimit_new(3);
    int c = ratelimit_class_add(rl, "auth", 2, 60);
    struct ratelimit_stats st;
    take(rl, c, "a");
    take(rl, c, "a");                            /* a exhausted */
    take(rl, c, "b");
    take(rl, c, "c");
    ratelimit_stats(rl, &st);
    CHECK(st.keys == 3 && st.evictions == 0);   /* at the limit: nothing evicted */
    take(rl, c, "d");                            /* limit + 1: evicts a (LRU) */
    ratelimit_stats(rl, &st);
    CHECK(st.keys == 3 && st.evictions == 1 && st.evictions_not_full == 1);
    take(rl, c, "b");                            /* b now most recent; c is LRU */
    take(rl, c, "e");                            /* evicts c */
    struct ratelimit_result r = take(rl, c, "b");
    CHECK(!r.allowed);                          /* b kept its state: 2 taken before */
    ratelimit_stats(rl, &st);
    CHECK(st.keys == 3 && st.evictions == 2);
    r = take(rl, c, "a");                        /* a was evicted: starts full (evicts d) */
    CHECK(r.allowed && r.remaining == 1);
    ratelimit_stats(rl, &st);
    CHECK(st.keys == 3 && st.evictions == 3);
    ratelimit_free(rl);
}

/* Many keys through a small limiter: the count never passes max_keys. */
static void test_eviction_churn(void)
{
    struct ratelimit *rl = ratelimit_new(500);
    int c = ratelimit_class_add(rl, "default", 600, 60);
    char who[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(who, sizeof(who), "ip:%d", i);
        take(rl, c, who);
    }
    struct ratelimit_stats st;
    ratelimit_stats(rl, &st);
    CHECK(st.keys == 500 && st.evictions == 4500 && st.allowed == 5000);
    ratelimit_free(rl);
}

static void test_parse(void)
{
    struct ratelimit *rl = ratelimit_new(10);
    const char *defaults[] = {"default=600/60", "auth=20/60", "analytics=500/3600",
                              "ingest=1000/3600", "stream=10000/3600", "export=20/3600"};
    char err[256];
    for (int i = 0; i < 6; i++)
        CHECK(ratelimit_class_parse(rl, defaults[i], err, sizeof(err)) == i);
    CHECK(ratelimit_class_find(rl, "ingest") == 3);
    CHECK(ratelimit_class_find(rl, "nope") == -ENOENT);
    CHECK(take(rl, 2, "p").limit == 500);
    const char *bad[] = {"auth", "=20/60", "auth=0/60", "auth=20/0", "auth=20/60x", "auth=-1/60",
                         "auth=20", "a b=1/1", "auth=99999999999999999999/60", "auth=20/604801",
                         "auth=10000001/60", "auth= 20/60", "auth=20/ 60", "auth=/60", "",
                         "abcdefghijklmnopqrstuvwxyz0123456=1/1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        int r = ratelimit_class_parse(rl, bad[i], err, sizeof(err));
        if (r != -EINVAL || strstr(err, "CLASS=REQUESTS/SECONDS") == NULL) {
            fprintf(stderr, "bad spec \"%s\" gave %d, \"%s\"\n", bad[i], r, err);
            check_failures++;
        }
    }
    ratelimit_class_parse(rl, "auth=20/0", err, sizeof(err));
    CHECK(strstr(err, "SECONDS") != NULL);
    CHECK(ratelimit_class_parse(rl, "auth=20/60", NULL, 0) == 1);   /* err may be NULL */
    CHECK(ratelimit_class_parse(rl, "x=1/604800", NULL, 0) == 6);   /* bounds inclusive */
    CHECK(ratelimit_class_parse(rl, "y=10000000/1", NULL, 0) == 7);
    ratelimit_free(rl);
}

static void test_update_class(void)
{
    struct ratelimit *rl = ratelimit_new(10);
    int auth = ratelimit_class_add(rl, "auth", 20, 60);
    for (int i = 0; i < 20; i++)
        take(rl, auth, "u");
    CHECK(!take(rl, auth, "u").allowed);
    CHECK(ratelimit_class_parse(rl, "auth=5/60", NULL, 0) == auth);   /* same id, new limits */
    for (int i = 0; i < 5; i++) {
        struct ratelimit_result r = take(rl, auth, "u");
        CHECK(r.allowed && r.limit == 5 && r.remaining == 4 - i);
    }
    struct ratelimit_result r = take(rl, auth, "u");
    CHECK(!r.allowed && r.retry_after_s == 12);      /* 60 s / 5 */
    ratelimit_free(rl);
}

static void test_bounds(void)
{
    CHECK(ratelimit_new(0) == NULL);
    CHECK(ratelimit_new((size_t)RATELIMIT_MAX_KEYS + 1) == NULL);
    CHECK(ratelimit_free(NULL) == NULL);
    struct ratelimit *rl = ratelimit_new(4);
    char name[16];
    for (int i = 0; i < RATELIMIT_MAX_CLASSES; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        CHECK(ratelimit_class_add(rl, name, 1, 1) == i);
    }
    CHECK(ratelimit_class_add(rl, "one-more", 1, 1) == -ENOSPC);
    char err[128] = "";
    CHECK(ratelimit_class_parse(rl, "one-more=1/1", err, sizeof(err)) == -ENOSPC && err[0]);
    CHECK(ratelimit_class_add(rl, "c0", 0, 1) == -EINVAL);
    CHECK(ratelimit_class_add(rl, "c0", 1, RATELIMIT_MAX_WINDOW + 1) == -EINVAL);
    CHECK(ratelimit_class_add(rl, "bad/name", 1, 1) == -EINVAL);

    struct ratelimit_result r = {.limit = -42};
    char longp[RATELIMIT_MAX_PRINCIPAL + 2];
    memset(longp, 'p', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = '\0';                 /* limit + 1 bytes */
    CHECK(ratelimit_take(rl, 0, longp, &r) == -EINVAL);
    CHECK(ratelimit_take(rl, 0, NULL, &r) == -EINVAL);
    CHECK(ratelimit_take(rl, 0, "", &r) == -EINVAL);
    CHECK(ratelimit_take(rl, -1, "p", &r) == -EINVAL);
    CHECK(ratelimit_take(rl, RATELIMIT_MAX_CLASSES, "p", &r) == -EINVAL);
    CHECK(r.limit == -42);                           /* ret untouched on failure */
    longp[RATELIMIT_MAX_PRINCIPAL] = '\0';          /* exactly the limit */
    CHECK(ratelimit_take(rl, 0, longp, &r) == 0 && r.allowed);
    ratelimit_free(rl);
}

int main(void)
{
    clock_set_source(fake_clock);
    test_exact_limit();
    test_refill();
    test_fractional_refill();
    test_long_windows();
    test_eviction();
    test_eviction_churn();
    test_parse();
    test_update_class();
    test_bounds();
    if (check_failures) {
        fprintf(stderr, "test_ratelimit: %d check(s) failed\n", check_failures);
        return 1;
    }
    printf("test_ratelimit: ok\n");
    return 0;
}
