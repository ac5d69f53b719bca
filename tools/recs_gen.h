/* recs-gen: the deterministic catalog and interaction log behind the recs part of
 * `tessera serve --demo` and tools/bench/recs. Items belong to planted taste clusters (a
 * style, a primary and a secondary category: titles, descriptions and tags carry both), users
 * like one or two clusters, and interactions are drawn mostly from the users' clusters plus
 * popularity noise, through a view -> click -> cart -> purchase funnel with likes and
 * dislikes, over the last `days` days. Fixed-seed xoshiro256** streams, one per kind of
 * record: the same configuration (seed, sizes, end moment) always yields the same records.
 * Pure C11 with no Tessera dependency (recs_gen_db.c writes the records into SQLite). */
#ifndef RECS_GEN_H
#define RECS_GEN_H
#include <stdbool.h>
#include <stdint.h>

#define RG_DAY_MS 86400000LL
#define RG_TAGS_MAX 6

/* Bounds on what one run may ask for (every size is bounded). */
#define RG_ITEMS_MAX 1000000
#define RG_USERS_MAX 5000000
#define RG_INTERACTIONS_MAX 10000000
#define RG_CLUSTERS_MAX 1000
#define RG_DAYS_MAX 3650
#define RG_MIN_PER_USER 3 /* interactions every user has at least */

/* The demo's sizes at scale 1 (README "recs / Demo data"); they scale linearly. */
#define RG_DEMO_ITEMS 20000
#define RG_DEMO_USERS 50000
#define RG_DEMO_INTERACTIONS 1000000
#define RG_DEMO_CLUSTERS 40
#define RG_DEMO_DAYS 90

struct rg_config {
    uint64_t seed;
    int items, users;
    int interactions;    /* exactly this many, at least RG_MIN_PER_USER per user */
    int clusters;        /* planted taste clusters, 1 .. min(items, RG_CLUSTERS_MAX) */
    int days;            /* interactions fall in the `days` days before end_ms */
    int64_t end_ms;      /* unix ms; every timestamp is at or before it */
    double noise;        /* share of engagements drawn from global popularity, 0 .. 1 */
};

/* The demo at `scale` (0 < scale <= 1): items, users and interactions times scale (at least
 * 1 item, 1 user and RG_MIN_PER_USER interactions per user), clusters min(40, items / 10). */
void rg_config_demo(struct rg_config *c, double scale, int64_t end_ms);
/* 0, or -1 with *ret_message naming what is out of bounds. */
int rg_config_check(const struct rg_config *c, const char **ret_message);

/* Strings are owned by the generator and valid during the callback only. */
struct rg_item {
    const char *item_id, *title, *description, *category;
    const char *tags[RG_TAGS_MAX];
    int ntags;
    const char *metadata;      /* JSON object: brand, price, style, taste_cluster */
    int64_t created_at;        /* catalog time: before the first interaction on the item */
    int cluster;
};
struct rg_user {
    const char *user_id;
    int nclusters;             /* 1 or 2 */
    int clusters[2];
    double share[2];           /* the share of the user's in-taste engagements per cluster */
    int interactions;          /* rows of this user */
};
struct rg_interaction {
    const char *interaction_id;  /* UUIDv7 of timestamp and seeded random bits */
    const char *user_id, *item_id, *type, *session_id, *device_type;
    int64_t timestamp;
};

/* Called once per record; NULL skips that kind (the draws do not change). A non-zero return
 * stops the run and is returned by rg_run. */
struct rg_callbacks {
    int (*item)(void *arg, const struct rg_item *it);
    int (*user)(void *arg, const struct rg_user *u);
    int (*interaction)(void *arg, const struct rg_interaction *x);
    void *arg;
};

/* Emits every item (item-00001 ...), then every user (user-000001 ...), then every interaction
 * in timestamp order. 0, -1 on a bad config or out of memory, or the callback's return. */
int rg_run(const struct rg_config *c, const struct rg_callbacks *cb);

/* The seven interaction type names, in the order of the counts rg_run's caller may keep. */
#define RG_NTYPES 7
extern const char *const rg_type_names[RG_NTYPES];
#endif
