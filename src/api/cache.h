/* A byte-bounded LRU response cache whose entries expire by TTL or by a tenant's data generation. */
#ifndef TS_CACHE_H
#define TS_CACHE_H
#include <stddef.h>
#include <stdint.h>

/*
 * Entries are whole responses (status, content type, body) under a caller-built key
 * (tenant + route + params + caller scope). An entry is served only while it is younger
 * than its TTL and the tenant's generation still equals the one it was stored under.
 *
 * Generations: every committed write for a tenant calls cache_bump(tenant), so a read that
 * captured cache_generation() before it ran can never be served after a later write. The
 * usual flow: gen = cache_generation(c, t); build the response (perhaps in the pool);
 * cache_put(c, key, t, gen, ...) -- a put whose generation is already old is refused.
 * Generations only grow. The module keeps at most max_tenants counters; past that it drops
 * them all and raises the shared floor, which costs a miss for every tenant but never
 * serves stale data.
 *
 * Memory: every entry is charged its struct, key, tenant, content type and body; the total
 * stays <= max_bytes by evicting least-recently-used entries. One entry may use at most
 * max_bytes / CACHE_ENTRY_SHARE bytes, so a single big response cannot flush the cache.
 *
 * Loop thread only: no locking.
 */

#define CACHE_MAX_KEY 2048
#define CACHE_MAX_TENANT_ID 128
#define CACHE_MAX_CONTENT_TYPE 128
#define CACHE_MAX_TTL_S 86400
#define CACHE_ENTRY_SHARE 4
#define CACHE_MIN_BYTES 4096

struct cache;

/* A hit. The pointers stay valid until the next cache_put or cache_get on this cache. */
struct cache_hit {
    int status;
    const char *content_type;
    const char *body;
    size_t body_len;
    int age_s;                 /* seconds since it was stored (the Age header) */
    int ttl_left_s;            /* seconds until it expires, rounded up */
};

struct cache_stats {
    uint64_t hits, misses;     /* misses include the expired and stale ones */
    uint64_t expired, stale, evictions, puts, refused;
    size_t entries, bytes, max_bytes, tenants;
};

/* max_bytes >= CACHE_MIN_BYTES, max_tenants >= 1; NULL on bad bounds or no memory. */
struct cache *cache_new(size_t max_bytes, size_t max_tenants);
struct cache *cache_free(struct cache *c);

/*
 * Stores a copy of the response under key, replacing any entry there, with an expiry of
 * ttl_s (1..CACHE_MAX_TTL_S) seconds from clock_now_ms(). Returns 0; -ESTALE (nothing
 * stored) when generation is no longer the tenant's current one; -E2BIG when the entry
 * is larger than its share of the cache; -EINVAL for bad arguments or lengths; -ENOMEM.
 */
int cache_put(struct cache *c, const char *key, const char *tenant_id, uint64_t generation,
              int ttl_s, int status, const char *content_type, const void *body, size_t body_len);

/*
 * Returns 0 and fills ret on a hit; -ENOENT on a miss: no entry, an entry of another
 * tenant, expired, or stored under a generation other than current_generation (the last
 * two are removed). ret is not written on a miss.
 */
int cache_get(struct cache *c, const char *key, const char *tenant_id,
              uint64_t current_generation, struct cache_hit *ret);

uint64_t cache_generation(const struct cache *c, const char *tenant_id);
void cache_bump(struct cache *c, const char *tenant_id);

void cache_stats(const struct cache *c, struct cache_stats *ret);
#endif
