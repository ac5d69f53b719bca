/* The serving registry: per tenant the in-memory model (item matrix, user vectors, popularity),
 * older versions loaded on demand, and per-user state (interaction history, folded-in vector,
 * recent answers). Shared by the loop thread and the workers; everything here is thread-safe. */
#ifndef TS_RECS_REGISTRY_H
#define TS_RECS_REGISTRY_H
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "engines/ivf.h"

#define RS_TENANT_MAX 64          /* bytes of a tenant id, NUL included */
#define RS_VERSION_MAX 64         /* bytes of a model_version, NUL included */
#define RS_MAX_COUNT 100          /* recommendations per request */
#define RS_POP_WINDOW_MS (30LL * 86400000LL)

/* How a model turns a user's interactions into a vector (see rs_user_vector). */
enum rs_kind {
    RS_CONTENT,   /* content-pop-0: item vectors are content embeddings */
    RS_ALS,       /* matrix_factorization: exact ALS fold-in */
    RS_MIXED,     /* two_tower, gnn: trained vector mixed with the mean of new items */
};

/* String -> row, open addressing over an array of keys the owner keeps. */
struct rs_idmap {
    uint32_t mask;
    int32_t *slots;               /* row + 1; 0 empty */
    const char *const *keys;
};

/* A loaded model. Immutable once published, except the popularity ranking (pop_mu). Freed
 * when the last reference goes: requests in flight keep the version they started with. */
struct rs_model {
    atomic_int refs;
    uint64_t serial;              /* unique per load: cached answers name the load they used */
    char tenant_id[RS_TENANT_MAX];
    char version[RS_VERSION_MAX];
    char model_type[32];
    enum rs_kind kind;
    int dim;
    int32_t n;                    /* items: rows of V */
    float *V;                     /* n x dim, 32-byte aligned */
    struct vec_q8 *Vq;            /* V's int8 copy for the exact scan's pre-scan, or NULL */
    float *vnorm;                 /* |V[row]| */
    const char **item_ids;
    int32_t *item_cat;            /* index into cats */
    int64_t *item_created_ms;
    const char **cats;
    int32_t ncats;
    struct rs_idmap items, catmap;
    int32_t nusers;               /* trained user vectors */
    float *U;
    const char **user_ids;
    struct rs_idmap users;
    float unorm_mean;             /* mean |U[row]| (1 for content) */
    float *VtV;                   /* ALS: dim x dim gram of V, for fold-in */
    double reg, alpha;            /* ALS hyperparameters */
    int64_t trained_ms;           /* interactions stored after this are new to the model */
    int64_t catalog_version;      /* rc_catalog_version seen when loaded */
    int64_t loaded_mono_ms;
    double load_ms;
    size_t bytes;
    char *blob;                   /* the id and category strings */
    /* popularity: weighted interaction counts per row in the window */
    pthread_mutex_t pop_mu;
    float *pop;
    float pop_max;
    int64_t pop_through_id;       /* rc_interactions rows with id <= this are counted */
    int64_t pop_start_ms;         /* window start (timestamps >= it count) */
    int64_t pop_mono_ms;          /* when computed in full */
    uint64_t pop_gen;             /* tenant's change generation folded in */
    /* the IVF index over V (ivf.n == 0: none, every query scans V exactly), and the sampled
     * check of its answers against the exact scan: hits of the exact top k / their count */
    struct ivf ivf;
    int nprobe;
    atomic_uint_fast64_t ann_queries, ann_hits, ann_total;
    /* the exact search's index over V (xix.n == 0: none), and how it did: searches, rows they
     * scored, searches that gave up for the full scan (the clusters did not prune) */
    struct ivf xix;
    atomic_uint_fast64_t x_searches, x_scored, x_gave_up;
    /* scans waiting for a pass over V: concurrent requests share one (see rank_vector) */
    pthread_mutex_t scan_mu;
    pthread_cond_t scan_cv;
    struct rs_scan *scan_head, **scan_tail;
    int scanning;                 /* passes running */
};

void rs_model_unref(struct rs_model *m);
/* The row of an item id, -1 if the model does not have it. */
int32_t rs_item_row(const struct rs_model *m, const char *item_id);

/* ---- lifecycle ---- */
/* Catalogs from ann_min_items get an IVF index (0: never), searched over probe_pct % of its
 * lists; without it, from q8_min_items an int8 copy of V, and from exact_min_items the exact
 * search's cluster index (0: never, for either). */
void rs_init(int ann_min_items, int probe_pct, int q8_min_items, int exact_min_items);
void rs_shutdown(void);               /* drops every model and user state */

/* The model to serve tenant_id with: version NULL = the tenant's current one as stored (the
 * content model when nothing is current), loading it through db (a worker's read-only
 * connection) if it is not in memory or its catalog changed. 0 and *ret (a reference), or
 * TS_E_NOT_FOUND when version names no ready model of the tenant, or TS_E_INTERNAL. */
int rs_model_acquire(sqlite3 *db, const char *tenant_id, const char *version,
                     struct rs_model **ret);
/* Worker: loads version and makes it the tenant's current model if the database says it is.
 * 0 installed; -EAGAIN when the database does not (yet) show it ready and current. */
int rs_model_preload(sqlite3 *db, const char *tenant_id, const char *version);
/* Worker at start: loads the current model of every tenant that has one. */
void rs_preload_all(sqlite3 *db);

/* ---- users ---- */

/* One item a user interacted with: summed type weights, latest interaction times. */
struct rs_hist_item {
    const char *item_id;
    float weight;
    int64_t last_ts;              /* interaction timestamp */
    int64_t last_stored;          /* created_at: when it was stored */
};

/* A user's history, most recent first; immutable and shared. */
struct rs_hist {
    atomic_int refs;
    int n;
    struct rs_hist_item *items;
    int64_t max_id;               /* newest rc_interactions id of the user in the snapshot */
    size_t bytes;
};
void rs_hist_unref(struct rs_hist *h);

/* Loop thread (from recs_serving_user_changed): the user's cached answers and vector are
 * void; newest_id is the user's newest interaction id on the writer (history snapshots older
 * than it are stale, so the next request rereads the history). */
void rs_user_changed(const char *tenant_id, const char *user_id, int64_t newest_id);

/* ---- recommendations ---- */
struct rs_query {
    const char *tenant_id, *user_id;
    int count;                    /* 1..RS_MAX_COUNT */
    const char *const *categories; /* NULL / 0: any */
    int ncategories;
    bool has_min_score;
    float min_score;              /* a float like the scores: a score shown and sent back keeps its item */
    const char *const *exclude_ids;
    int nexclude;
    bool include_seen;
};

struct rs_answer {
    int n;
    int32_t rows[RS_MAX_COUNT];
    float scores[RS_MAX_COUNT];
    float distance[RS_MAX_COUNT]; /* 1 - cosine; NaN when ranked by popularity */
    bool cache_hit;
    bool personalized;            /* false: popularity (no usable user vector) */
    double scan_ms;               /* the top-k search's own time (0 on a cache hit) */
    bool ann;                     /* answered through the IVF index */
    bool ann_checked;             /* ... and checked against the exact scan (the model's
                                   * ann_hits / ann_total moved) */
};

/* Worker: top-k for q over m (a reference the caller holds): through m's IVF index when it has
 * one, else an exact scan. 0 or TS_E_INTERNAL. */
int rs_recommend(sqlite3 *db, struct rs_model *m, const struct rs_query *q, struct rs_answer *ret);

/* Per-tenant counts of the per-user answer cache, for the hit-rate gauge. */
void rs_cache_counts(const char *tenant_id, uint64_t *ret_hits, uint64_t *ret_misses);
#endif
