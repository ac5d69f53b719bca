/* Token-bucket rate limiter: exact integer buckets in a hash map with an LRU eviction list. */
#include "auth/ratelimit.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

#define TABLE_MIN 64

struct rl_class {
    char name[RATELIMIT_MAX_CLASS_NAME + 1];
    int64_t requests;       /* tokens per window = bucket capacity; also refill units per ms */
    int64_t window_ms;      /* units per token */
    unsigned gen;           /* bumped when the limits change; stale buckets restart full */
};

struct bucket {
    struct bucket *hnext;               /* hash chain */
    struct bucket *prev, *next;         /* LRU list, most recent first */
    uint64_t hash;
    int64_t units;                      /* tokens * window_ms */
    int64_t last_ms;                    /* time of the last refill */
    int cls;
    unsigned gen;
    char principal[];
};

struct ratelimit {
    struct rl_class classes[RATELIMIT_MAX_CLASSES];
    int nclasses;
    struct bucket **table;
    size_t tsize, count, max_keys;
    struct bucket *mru, *lru;
    struct ratelimit_stats stats;
};

static int64_t class_capacity(const struct rl_class *c)
{
    return c->requests * c->window_ms;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return a <= 0 ? 0 : (a + b - 1) / b;
}

static uint64_t key_hash(int cls, const char *principal)
{
    uint64_t h = 14695981039346656037ull;
    h = (h ^ (unsigned)cls) * 1099511628211ull;
    for (const unsigned char *p = (const unsigned char *)principal; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

/* ---- LRU list and table ---- */

static void lru_unlink(struct ratelimit *rl, struct bucket *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        rl->mru = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else
        rl->lru = b->prev;
    b->prev = b->next = NULL;
}

static void lru_push(struct ratelimit *rl, struct bucket *b)
{
    b->prev = NULL;
    b->next = rl->mru;
    if (rl->mru)
        rl->mru->prev = b;
    else
        rl->lru = b;
    rl->mru = b;
}

static struct bucket **table_slot(struct ratelimit *rl, const struct bucket *b)
{
    struct bucket **pp = &rl->table[b->hash & (rl->tsize - 1)];
    while (*pp != b)
        pp = &(*pp)->hnext;
    return pp;
}

static struct bucket *table_find(const struct ratelimit *rl, int cls, const char *principal,
                                 uint64_t h)
{
    for (struct bucket *b = rl->table[h & (rl->tsize - 1)]; b; b = b->hnext)
        if (b->hash == h && b->cls == cls && strcmp(b->principal, principal) == 0)
            return b;
    return NULL;
}

static int table_grow(struct ratelimit *rl)
{
    size_t n = rl->tsize * 2;
    struct bucket **t = calloc(n, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    for (struct bucket *b = rl->mru; b; b = b->next) {
        b->hnext = t[b->hash & (n - 1)];
        t[b->hash & (n - 1)] = b;
    }
    free(rl->table);
    rl->table = t;
    rl->tsize = n;
    return 0;
}

/* ---- buckets ---- */

static void bucket_refill(struct bucket *b, const struct rl_class *c, int64_t now)
{
    if (b->gen != c->gen) {
        b->gen = c->gen;
        b->units = class_capacity(c);
        b->last_ms = now;
        return;
    }
    if (now <= b->last_ms)      /* clock stood still or went back: no tokens */
        return;
    int64_t elapsed = now - b->last_ms;
    int64_t cap = class_capacity(c);
    if (elapsed >= c->window_ms || b->units + elapsed * c->requests >= cap)
        b->units = cap;
    else
        b->units += elapsed * c->requests;
    b->last_ms = now;
}

static void evict_lru(struct ratelimit *rl, int64_t now)
{
    struct bucket *b = rl->lru;
    bucket_refill(b, &rl->classes[b->cls], now);
    if (b->units < class_capacity(&rl->classes[b->cls]))
        rl->stats.evictions_not_full++;
    rl->stats.evictions++;
    *table_slot(rl, b) = b->hnext;
    lru_unlink(rl, b);
    rl->count--;
    free(b);
}

static struct bucket *bucket_new(struct ratelimit *rl, int cls, const char *principal,
                                 size_t len, uint64_t h, int64_t now)
{
    if (rl->count >= rl->max_keys)
        evict_lru(rl, now);
    if (rl->count >= rl->tsize && rl->tsize < rl->max_keys && table_grow(rl) < 0)
        return NULL;
    struct bucket *b = malloc(sizeof(*b) + len + 1);
    if (b == NULL)
        return NULL;
    const struct rl_class *c = &rl->classes[cls];
    *b = (struct bucket){.hash = h, .units = class_capacity(c), .last_ms = now, .cls = cls,
                         .gen = c->gen};
    memcpy(b->principal, principal, len + 1);
    b->hnext = rl->table[h & (rl->tsize - 1)];
    rl->table[h & (rl->tsize - 1)] = b;
    lru_push(rl, b);
    rl->count++;
    return b;
}

static void result_fill(const struct bucket *b, const struct rl_class *c, bool allowed,
                        struct ratelimit_result *ret)
{
    ret->allowed = allowed;
    ret->limit = (int)c->requests;
    ret->remaining = (int)(b->units / c->window_ms);
    int64_t full_ms = ceil_div(class_capacity(c) - b->units, c->requests);
    ret->reset_s = (int)ceil_div(full_ms, 1000);
    ret->retry_after_s = 0;
    if (!allowed) {
        int64_t token_ms = ceil_div(c->window_ms - b->units, c->requests);
        int64_t s = ceil_div(token_ms, 1000);
        ret->retry_after_s = s < 1 ? 1 : (int)s;
    }
}

int ratelimit_take(struct ratelimit *rl, int class_id, const char *principal,
                   struct ratelimit_result *ret)
{
    if (rl == NULL || ret == NULL || class_id < 0 || class_id >= rl->nclasses || principal == NULL)
        return -EINVAL;
    size_t len = strnlen(principal, RATELIMIT_MAX_PRINCIPAL + 1);
    if (len == 0 || len > RATELIMIT_MAX_PRINCIPAL)
        return -EINVAL;
    int64_t now = clock_now_ms();
    uint64_t h = key_hash(class_id, principal);
    struct bucket *b = table_find(rl, class_id, principal, h);
    if (b == NULL)
        b = bucket_new(rl, class_id, principal, len, h, now);
    if (b == NULL)
        return -ENOMEM;
    const struct rl_class *c = &rl->classes[class_id];
    bucket_refill(b, c, now);
    bool allowed = b->units >= c->window_ms;
    if (allowed)
        b->units -= c->window_ms;
    lru_unlink(rl, b);
    lru_push(rl, b);
    if (allowed)
        rl->stats.allowed++;
    else
        rl->stats.denied++;
    result_fill(b, c, allowed, ret);
    return 0;
}

/* ---- the limiter and its classes ---- */

struct ratelimit *ratelimit_new(size_t max_keys)
{
    if (max_keys < 1 || max_keys > RATELIMIT_MAX_KEYS)
        return NULL;
    struct ratelimit *rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return NULL;
    rl->max_keys = max_keys;
    rl->tsize = TABLE_MIN;
    rl->table = calloc(rl->tsize, sizeof(*rl->table));
    if (rl->table == NULL)
        return ratelimit_free(rl);
    return rl;
}

struct ratelimit *ratelimit_free(struct ratelimit *rl)
{
    if (rl == NULL)
        return NULL;
    for (struct bucket *b = rl->mru, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(rl->table);
    free(rl);
    return NULL;
}

static bool class_name_ok(const char *name, size_t n)
{
    if (n == 0 || n > RATELIMIT_MAX_CLASS_NAME)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

int ratelimit_class_find(const struct ratelimit *rl, const char *name)
{
    for (int i = 0; rl && name && i < rl->nclasses; i++)
        if (strcmp(rl->classes[i].name, name) == 0)
            return i;
    return -ENOENT;
}

int ratelimit_class_add(struct ratelimit *rl, const char *name, int requests, int window_s)
{
    if (rl == NULL || name == NULL || !class_name_ok(name, strlen(name)))
        return -EINVAL;
    if (requests < 1 || requests > RATELIMIT_MAX_REQUESTS || window_s < 1 ||
        window_s > RATELIMIT_MAX_WINDOW)
        return -EINVAL;
    int id = ratelimit_class_find(rl, name);
    if (id < 0) {
        if (rl->nclasses >= RATELIMIT_MAX_CLASSES)
            return -ENOSPC;
        id = rl->nclasses++;
        snprintf(rl->classes[id].name, sizeof(rl->classes[id].name), "%s", name);
    }
    struct rl_class *c = &rl->classes[id];
    if (c->requests != requests || c->window_ms != (int64_t)window_s * 1000)
        c->gen++;
    c->requests = requests;
    c->window_ms = (int64_t)window_s * 1000;
    return id;
}

/* Reads an integer lo..hi made only of digits, ending at `end`; -1 if it is not one. */
static long parse_uint(const char *s, char end, long lo, long hi, const char **ret_next)
{
    long v = 0;
    const char *p = s;
    while (*p >= '0' && *p <= '9' && v <= hi)
        v = v * 10 + (*p++ - '0');
    if (p == s || *p != end || v < lo || v > hi)
        return -1;
    *ret_next = p;
    return v;
}

static int parse_fail(char *err, size_t errlen, const char *spec, const char *why)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "rate limit \"%.64s\": %s (expected CLASS=REQUESTS/SECONDS, e.g. auth=20/60)",
                 spec, why);
    return -EINVAL;
}

int ratelimit_class_parse(struct ratelimit *rl, const char *spec, char *err, size_t errlen)
{
    if (rl == NULL || spec == NULL)
        return -EINVAL;
    const char *eq = strchr(spec, '=');
    if (eq == NULL)
        return parse_fail(err, errlen, spec, "missing '='");
    if (!class_name_ok(spec, (size_t)(eq - spec)))
        return parse_fail(err, errlen, spec, "CLASS must be 1-32 of A-Z a-z 0-9 _ -");
    const char *p;
    long req = parse_uint(eq + 1, '/', 1, RATELIMIT_MAX_REQUESTS, &p);
    if (req < 0)
        return parse_fail(err, errlen, spec, "REQUESTS must be a whole number 1..10000000 followed by '/'");
    long win = parse_uint(p + 1, '\0', 1, RATELIMIT_MAX_WINDOW, &p);
    if (win < 0)
        return parse_fail(err, errlen, spec, "SECONDS must be a whole number 1..604800");
    char name[RATELIMIT_MAX_CLASS_NAME + 1];
    memcpy(name, spec, (size_t)(eq - spec));
    name[eq - spec] = '\0';
    int id = ratelimit_class_add(rl, name, (int)req, (int)win);
    if (id == -ENOSPC && err != NULL && errlen > 0)
        snprintf(err, errlen, "rate limit \"%.64s\": more than %d classes", spec,
                 RATELIMIT_MAX_CLASSES);
    return id;
}

void ratelimit_stats(const struct ratelimit *rl, struct ratelimit_stats *ret)
{
    *ret = rl->stats;
    ret->keys = rl->count;
}
