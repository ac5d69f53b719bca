/* Unit tests for login throttling: free attempts, doubling locks, cap, clear, forget. */
#include "../check.h"
#include "auth/throttle.h"
#include "core/clock.h"

static int64_t now_ms = 1000000000000LL;
static int64_t fake(void)
{
    return now_ms;
}

int main(void)
{
    clock_set_source(fake);
    struct throttle *t = throttle_new(1024);
    for (int i = 0; i < THROTTLE_FREE; i++) {
        CHECK_INT(throttle_check(t, "acct:a"), 0);
        throttle_fail(t, "acct:a");
    }
    CHECK_INT(throttle_check(t, "acct:a"), 0);  /* exactly FREE failures: not locked */
    throttle_fail(t, "acct:a");                 /* FREE + 1 */
    CHECK_INT(throttle_check(t, "acct:a"), 1);
    CHECK_INT(throttle_check(t, "acct:b"), 0);  /* other keys unaffected */
    now_ms += 1000;
    CHECK_INT(throttle_check(t, "acct:a"), 0);
    throttle_fail(t, "acct:a");
    CHECK_INT(throttle_check(t, "acct:a"), 2);  /* doubles */
    throttle_fail(t, "acct:a");
    CHECK_INT(throttle_check(t, "acct:a"), 4);
    for (int i = 0; i < 30; i++)
        throttle_fail(t, "acct:a");
    CHECK_INT(throttle_check(t, "acct:a"), THROTTLE_MAX_S); /* capped */
    throttle_clear(t, "acct:a");
    CHECK_INT(throttle_check(t, "acct:a"), 0);
    for (int i = 0; i < THROTTLE_FREE + 1; i++)
        throttle_fail(t, "ip:1");
    CHECK(throttle_check(t, "ip:1") > 0);
    now_ms += (int64_t)(THROTTLE_FORGET_S + 1) * 1000;
    throttle_fail(t, "ip:1");                    /* old failures forgotten: this is the first */
    CHECK_INT(throttle_check(t, "ip:1"), 0);
    /* bounded: many keys never grow the table */
    char key[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof(key), "ip:%d", i);
        throttle_fail(t, key);
    }
    throttle_free(t);
    clock_set_source(NULL);
    CHECK_DONE();
}
