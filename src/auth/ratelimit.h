/* Token-bucket rate limiting per (principal, route class), with a bounded LRU set of buckets. */
#ifndef TS_RATELIMIT_H
#define TS_RATELIMIT_H
#include <stdbool.h>
#include <stddef.h>

/*
 * A class allows REQUESTS per WINDOW seconds: its buckets hold at most REQUESTS tokens and
 * refill continuously at REQUESTS/WINDOW tokens per second; each request takes one token.
 * Token levels are kept exactly in integer units (one token = WINDOW*1000 units, refill =
 * REQUESTS units per ms), so no rounding drift. Time comes from clock_now_ms().
 *
 * Classes the server registers (CLASS=REQUESTS/SECONDS, overridable with --rate-limit):
 *   default=600/60   auth=20/60   analytics=500/3600   ingest=1000/3600
 *   stream=10000/3600   export=20/3600
 *
 * Memory: at most max_keys buckets. When full, the least-recently-used bucket is evicted;
 * its principal starts again with a full bucket, so max_keys should comfortably exceed the
 * principals active in one window (an eviction of a non-full bucket is counted).
 *
 * Loop thread only: no locking.
 */

#define RATELIMIT_MAX_CLASSES 32
#define RATELIMIT_MAX_CLASS_NAME 32
#define RATELIMIT_MAX_PRINCIPAL 256      /* bytes; longer principals are -EINVAL */
#define RATELIMIT_MAX_REQUESTS 10000000
#define RATELIMIT_MAX_WINDOW 604800      /* one week, in seconds */
#define RATELIMIT_MAX_KEYS (1u << 24)

struct ratelimit;

/* What X-RateLimit-Limit / -Remaining / -Reset and Retry-After report. */
struct ratelimit_result {
    bool allowed;
    int limit;          /* the class's REQUESTS */
    int remaining;      /* whole tokens left after this request */
    int reset_s;        /* seconds until the bucket is full again (0 when full) */
    int retry_after_s;  /* when denied: seconds until one token is available (>= 1); else 0 */
};

struct ratelimit_stats {
    size_t keys;
    unsigned long long allowed, denied, evictions, evictions_not_full;
};

/* max_keys in 1..RATELIMIT_MAX_KEYS; NULL on a bad bound or no memory. */
struct ratelimit *ratelimit_new(size_t max_keys);
struct ratelimit *ratelimit_free(struct ratelimit *rl);

/*
 * Adds class `name` ([A-Za-z0-9_-], 1..RATELIMIT_MAX_CLASS_NAME chars), or changes the limits
 * of the existing class of that name (its buckets then start again full). Returns the class
 * id (>= 0), -EINVAL for a bad name or limits out of range, -ENOSPC past the class cap.
 */
int ratelimit_class_add(struct ratelimit *rl, const char *name, int requests, int window_s);
/* Parses "CLASS=REQUESTS/SECONDS" (e.g. "auth=20/60") and adds or updates it. Returns the
 * class id or a negative errno; on failure err (if not NULL) says what is wrong. */
int ratelimit_class_parse(struct ratelimit *rl, const char *spec, char *err, size_t errlen);
int ratelimit_class_find(const struct ratelimit *rl, const char *name);   /* id or -ENOENT */

/*
 * Takes one token from the bucket of (class_id, principal). Returns 0 with ret filled in
 * (allowed or not); -EINVAL for an unknown class or a NULL/empty/too long principal,
 * -ENOMEM; ret is not written on failure.
 */
int ratelimit_take(struct ratelimit *rl, int class_id, const char *principal,
                   struct ratelimit_result *ret);

void ratelimit_stats(const struct ratelimit *rl, struct ratelimit_stats *ret);
#endif
