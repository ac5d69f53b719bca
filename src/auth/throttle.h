/* Login throttling: failures per key (account, client address) with exponential backoff.
 * Loop thread only; bounded memory. */
#ifndef TS_THROTTLE_H
#define TS_THROTTLE_H
#include <stddef.h>
#include <stdint.h>

/* FREE failures are allowed in a row; the next lock lasts BASE_S * 2^(failures - FREE - 1)
 * seconds, capped at MAX_S. A success clears the key. Failures older than FORGET_S are forgotten. */
#define THROTTLE_FREE 5
#define THROTTLE_BASE_S 1
#define THROTTLE_MAX_S 900
#define THROTTLE_FORGET_S 3600

struct throttle;

struct throttle *throttle_new(size_t max_keys);
struct throttle *throttle_free(struct throttle *t);
/* 0 if key may try now; else the seconds to wait (>= 1). */
int throttle_check(struct throttle *t, const char *key);
void throttle_fail(struct throttle *t, const char *key);
void throttle_clear(struct throttle *t, const char *key);
#endif
