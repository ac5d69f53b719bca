/* Response cache: a hash map of entries on an LRU list under a byte cap, plus tenant generations. */
#include "api/cache.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

#define TABLE_MIN 64

struct entry {
    struct entry *hnext;            /* hash chain */
    struct entry *prev, *next;      /* LRU list, most recent first */
    uint64_t hash, gen;
    size_t size;                    /* bytes charged against max_bytes */
    int64_t stored_ms, expires_ms;
    int status;
    char *key, *tenant, *ctype, *body;
    size_t body_len;
    char data[];                    /* key, tenant, ctype, body (each NUL-terminated) */
};

struct tgen {
    struct tgen *hnext;
    uint64_t hash, gen;
    char id[];
};

struct cache {
    struct entry **table;
    size_t tsize, count, bytes, max_bytes;
    struct entry *mru, *lru;

    struct tgen **gtable;           /* tenant generations */
    size_t gtsize, gcount, max_tenants;
    uint64_t gen_last;              /* the last generation handed out */
    uint64_t gen_floor;             /* the generation of every tenant without a counter */

    struct cache_stats stats;
};

static uint64_t str_hash(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

static bool str_ok(const char *s, size_t max)
{
    return s != NULL && strnlen(s, max + 1) <= max;
}

/* ---- tenant generations ---- */

static struct tgen *gen_find(const struct cache *c, const char *tenant, uint64_t h)
{
    for (struct tgen *g = c->gtable[h & (c->gtsize - 1)]; g; g = g->hnext)
        if (g->hash == h && strcmp(g->id, tenant) == 0)
            return g;
    return NULL;
}

static void gen_clear(struct cache *c)
{
    for (size_t i = 0; i < c->gtsize; i++) {
        for (struct tgen *g = c->gtable[i], *next; g; g = next) {
            next = g->hnext;
            free(g);
        }
        c->gtable[i] = NULL;
    }
    c->gcount = 0;
}

/* Every tenant without a counter moves to a new generation. */
static void gen_raise_floor(struct cache *c)
{
    c->gen_floor = ++c->gen_last;
}

static int gen_grow(struct cache *c)
{
    size_t n = c->gtsize * 2;
    struct tgen **t = calloc(n, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < c->gtsize; i++) {
        for (struct tgen *g = c->gtable[i], *next; g; g = next) {
            next = g->hnext;
            g->hnext = t[g->hash & (n - 1)];
            t[g->hash & (n - 1)] = g;
        }
    }
    free(c->gtable);
    c->gtable = t;
    c->gtsize = n;
    return 0;
}

static struct tgen *gen_add(struct cache *c, const char *tenant, uint64_t h)
{
    if (c->gcount >= c->max_tenants) {
        gen_clear(c);           /* all counters go; the floor rises above all of them */
        gen_raise_floor(c);
    }
    if (c->gcount >= c->gtsize && gen_grow(c) < 0)
        return NULL;
    size_t n = strlen(tenant) + 1;
    struct tgen *g = malloc(sizeof(*g) + n);
    if (g == NULL)
        return NULL;
    g->hash = h;
    g->gen = c->gen_floor;
    memcpy(g->id, tenant, n);
    g->hnext = c->gtable[h & (c->gtsize - 1)];
    c->gtable[h & (c->gtsize - 1)] = g;
    c->gcount++;
    return g;
}

uint64_t cache_generation(const struct cache *c, const char *tenant_id)
{
    if (!str_ok(tenant_id, CACHE_MAX_TENANT_ID))
        return c->gen_floor;
    const struct tgen *g = gen_find(c, tenant_id, str_hash(tenant_id));
    return g ? g->gen : c->gen_floor;
}

void cache_bump(struct cache *c, const char *tenant_id)
{
    if (c == NULL)
        return;
    struct tgen *g = NULL;
    if (str_ok(tenant_id, CACHE_MAX_TENANT_ID)) {
        uint64_t h = str_hash(tenant_id);
        g = gen_find(c, tenant_id, h);
        if (g == NULL)
            g = gen_add(c, tenant_id, h);
    }
    if (g == NULL)
        gen_raise_floor(c);     /* no counter for it: moving everyone is still correct */
    else
        g->gen = ++c->gen_last;
}

/* ---- entries ---- */

static void lru_unlink(struct cache *c, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->mru = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->lru = e->prev;
    e->prev = e->next = NULL;
}

static void lru_push(struct cache *c, struct entry *e)
{
    e->prev = NULL;
    e->next = c->mru;
    if (c->mru)
        c->mru->prev = e;
    else
        c->lru = e;
    c->mru = e;
}

static struct entry *entry_find(const struct cache *c, const char *key, uint64_t h)
{
    for (struct entry *e = c->table[h & (c->tsize - 1)]; e; e = e->hnext)
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static void entry_remove(struct cache *c, struct entry *e)
{
    struct entry **pp = &c->table[e->hash & (c->tsize - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(c, e);
    c->count--;
    c->bytes -= e->size;
    free(e);
}

static int table_grow(struct cache *c)
{
    size_t n = c->tsize * 2;
    struct entry **t = calloc(n, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    for (struct entry *e = c->mru; e; e = e->next) {
        e->hnext = t[e->hash & (n - 1)];
        t[e->hash & (n - 1)] = e;
    }
    free(c->table);
    c->table = t;
    c->tsize = n;
    return 0;
}

static char *put_str(char **p, const void *s, size_t n)
{
    char *dst = *p;
    if (n > 0)
        memcpy(dst, s, n);
    dst[n] = '\0';
    *p += n + 1;
    return dst;
}

static struct entry *entry_new(const char *key, const char *tenant, const char *ctype,
                               const void *body, size_t body_len, size_t size)
{
    struct entry *e = malloc(size);
    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof(*e));
    char *p = e->data;
    e->key = put_str(&p, key, strlen(key));
    e->tenant = put_str(&p, tenant, strlen(tenant));
    e->ctype = put_str(&p, ctype, strlen(ctype));
    e->body = put_str(&p, body, body_len);
    e->body_len = body_len;
    e->size = size;
    return e;
}

static void entry_link(struct cache *c, struct entry *e)
{
    e->hnext = c->table[e->hash & (c->tsize - 1)];
    c->table[e->hash & (c->tsize - 1)] = e;
    lru_push(c, e);
    c->count++;
    c->bytes += e->size;
}

static bool put_args_ok(const char *key, const char *tenant, int ttl_s, int status,
                        const char *ctype, const void *body, size_t body_len)
{
    return str_ok(key, CACHE_MAX_KEY) && key[0] && str_ok(tenant, CACHE_MAX_TENANT_ID) &&
           str_ok(ctype, CACHE_MAX_CONTENT_TYPE) && ttl_s >= 1 && ttl_s <= CACHE_MAX_TTL_S &&
           status >= 100 && status <= 599 && (body != NULL || body_len == 0);
}

int cache_put(struct cache *c, const char *key, const char *tenant_id, uint64_t generation,
              int ttl_s, int status, const char *content_type, const void *body, size_t body_len)
{
    if (c == NULL || !put_args_ok(key, tenant_id, ttl_s, status, content_type, body, body_len))
        return -EINVAL;
    size_t fixed = sizeof(struct entry) + strlen(key) + strlen(tenant_id) + strlen(content_type) + 4;
    size_t limit = c->max_bytes / CACHE_ENTRY_SHARE;
    if (body_len > limit || fixed > limit - body_len) {
        c->stats.refused++;
        return -E2BIG;
    }
    if (generation != cache_generation(c, tenant_id)) {
        c->stats.refused++;
        return -ESTALE;
    }
    struct entry *old = entry_find(c, key, str_hash(key));
    if (old != NULL)
        entry_remove(c, old);
    while (c->bytes + fixed + body_len > c->max_bytes) {
        entry_remove(c, c->lru);
        c->stats.evictions++;
    }
    if (c->count >= c->tsize && table_grow(c) < 0)
        return -ENOMEM;
    struct entry *e = entry_new(key, tenant_id, content_type, body, body_len, fixed + body_len);
    if (e == NULL)
        return -ENOMEM;
    e->hash = str_hash(key);
    e->gen = generation;
    e->status = status;
    e->stored_ms = clock_now_ms();
    e->expires_ms = e->stored_ms + (int64_t)ttl_s * 1000;
    entry_link(c, e);
    c->stats.puts++;
    return 0;
}

static void hit_fill(const struct entry *e, int64_t now, struct cache_hit *ret)
{
    ret->status = e->status;
    ret->content_type = e->ctype;
    ret->body = e->body;
    ret->body_len = e->body_len;
    int64_t age = now - e->stored_ms;
    ret->age_s = age > 0 ? (int)(age / 1000) : 0;
    ret->ttl_left_s = (int)((e->expires_ms - now + 999) / 1000);
}

/* A miss; an expired or stale entry goes now rather than waiting for the LRU end. */
static int get_miss(struct cache *c, struct entry *e, bool expired, bool stale)
{
    c->stats.misses++;
    c->stats.expired += expired;
    c->stats.stale += stale;
    if (expired || stale)
        entry_remove(c, e);
    return -ENOENT;
}

int cache_get(struct cache *c, const char *key, const char *tenant_id,
              uint64_t current_generation, struct cache_hit *ret)
{
    if (c == NULL || ret == NULL || !str_ok(key, CACHE_MAX_KEY) || tenant_id == NULL)
        return -EINVAL;
    struct entry *e = entry_find(c, key, str_hash(key));
    if (e == NULL || strcmp(e->tenant, tenant_id) != 0)
        return get_miss(c, e, false, false);
    int64_t now = clock_now_ms();
    if (now >= e->expires_ms)
        return get_miss(c, e, true, false);
    if (e->gen != current_generation)
        return get_miss(c, e, false, true);
    lru_unlink(c, e);
    lru_push(c, e);
    c->stats.hits++;
    hit_fill(e, now, ret);
    return 0;
}

/* ---- the cache ---- */

struct cache *cache_new(size_t max_bytes, size_t max_tenants)
{
    if (max_bytes < CACHE_MIN_BYTES || max_tenants < 1)
        return NULL;
    struct cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->max_bytes = max_bytes;
    c->max_tenants = max_tenants;
    c->tsize = c->gtsize = TABLE_MIN;
    c->gen_last = c->gen_floor = 1;
    c->table = calloc(c->tsize, sizeof(*c->table));
    c->gtable = calloc(c->gtsize, sizeof(*c->gtable));
    if (c->table == NULL || c->gtable == NULL)
        return cache_free(c);
    return c;
}

struct cache *cache_free(struct cache *c)
{
    if (c == NULL)
        return NULL;
    for (struct entry *e = c->mru, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    if (c->gtable != NULL)
        gen_clear(c);
    free(c->table);
    free(c->gtable);
    free(c);
    return NULL;
}

void cache_stats(const struct cache *c, struct cache_stats *ret)
{
    *ret = c->stats;
    ret->entries = c->count;
    ret->bytes = c->bytes;
    ret->max_bytes = c->max_bytes;
    ret->tenants = c->gcount;
}
