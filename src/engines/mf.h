/* Collaborative-filtering models over a users x items matrix of summed implicit-feedback weights:
 * implicit ALS (Hu, Koren, Volinsky 2008), a two-tower model and LightGCN (He et al. 2020), ALS
 * fold-in for serving, and full-ranking evaluation (recall@k, NDCG@k) with a popularity baseline.
 * Pure computation: no SQLite, no globals; every function is safe to call from any thread. */
#ifndef TS_MF_H
#define TS_MF_H
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the interaction matrix ----
 * Compressed sparse rows: row r's entries are indices[indptr[r] .. indptr[r+1]), columns strictly
 * increasing, values[] the pair's summed weight (recs_itype_weight per interaction). A pair with
 * a summed weight > 0 is a preference (p = 1); <= 0 is an observed dislike (p = 0). */
struct mf_csr {
    int32_t nrows, ncols;
    int64_t nnz;
    int64_t *indptr;             /* nrows + 1 */
    int32_t *indices;            /* nnz */
    float *values;               /* nnz */
};

/* From n (row, col, weight) triplets in any order; duplicates are summed. 0, -EINVAL (an index
 * out of range), -ENOMEM. *ret is untouched on failure. */
int mf_csr_from_triplets(int32_t nrows, int32_t ncols, size_t n, const int32_t *rows,
                         const int32_t *cols, const float *w, struct mf_csr *ret);
int mf_csr_transpose(const struct mf_csr *a, struct mf_csr *ret);
/* Frees the arrays and zeroes the struct; accepts a zeroed struct. */
void mf_csr_free(struct mf_csr *a);
/* Positive entries (value > 0) in row r. */
int32_t mf_csr_row_positives(const struct mf_csr *a, int32_t r);

/* ---- training options ----
 * Fields a model does not use are ignored (ALS ignores learning_rate; the SGD models ignore
 * alpha and cg_steps). Zeroed fields take the defaults below via mf_opts_defaults. */
typedef void (*mf_epoch_fn)(void *arg, int epoch, double loss);

enum mf_solver { MF_SOLVER_CG = 0, MF_SOLVER_CHOLESKY = 1 };

struct mf_opts {
    int dim;                     /* 1 .. MF_MAX_DIM */
    int epochs;
    double learning_rate;        /* Adam step (two-tower, LightGCN) */
    double reg;                  /* lambda: L2 on the factors */
    double alpha;                /* ALS confidence slope: c = 1 + alpha * |w| */
    uint64_t seed;               /* initialisation and sampling */
    int threads;                 /* ALS solves fanned out over this many threads (>= 1) */
    enum mf_solver solver;       /* ALS: warm-started conjugate gradient or exact Cholesky */
    int cg_steps;                /* ALS CG iterations per solve */
    int layers;                  /* LightGCN propagation depth K */
    int batch;                   /* SGD models: (user, positive, negative) triples per step */
    atomic_bool *cancel;         /* checked between epochs and inside them; NULL = never */
    mf_epoch_fn on_epoch;        /* called after each epoch with that epoch's loss; may be NULL */
    void *arg;
};

#define MF_MAX_DIM 512
void mf_opts_defaults(struct mf_opts *o); /* fills zero fields */

/* ---- models ----
 * U is R->nrows x dim and V is R->ncols x dim, row-major, allocated by the caller. All return 0,
 * -ECANCELED when *cancel was set (U and V then hold a partial model), -EINVAL, -ENOMEM.
 * Each epoch's loss is passed to on_epoch (see the function for which loss). */

/* Implicit ALS. Each epoch solves every item given the users, then every user given the items,
 * so the returned U is the exact (Cholesky) or near-exact (CG) solve for the returned V — what
 * als_fold_in reproduces. Loss: sum over ALL pairs of c_ui (p_ui - u.v)^2 + reg (|U|^2 + |V|^2),
 * unobserved pairs with c = 1, p = 0. */
int als_train(const struct mf_csr *R, const struct mf_opts *o, float *U, float *V);
/* The ALS objective above for given factors (R is users x items). */
double als_loss(const struct mf_csr *R, const float *U, const float *V, int dim, double reg,
                double alpha);

/* Two-tower. Item tower: v_i = W f_i + e_i (f_i = the item's content vector, fdim values, e.g.
 * hashembed of title/description/category/tags; W dim x fdim; e_i an id embedding). User tower:
 * u = M h_u + b_u, h_u = weighted mean of history embeddings q_j over the user's positive items,
 * b_u a user embedding, M dim x dim. In training, the triple (u, i, j) sees h_u without item i
 * (leave one out). BPR with one sampled negative per positive, L2 per occurrence on the batch
 * mean's scale, Adam over batches of o->batch triples; W f_i refreshed 32 times an epoch.
 * features may be NULL (fdim 0): then the item tower is the id embedding alone. Exports u (over
 * the whole history) and v. Loss: mean BPR -log sigmoid(s_ui - s_uj) over the epoch's triples
 * (without the L2 term). */
int two_tower_train(const struct mf_csr *R, const float *features, int fdim,
                    const struct mf_opts *o, float *U, float *V);

/* LightGCN: E^(k+1) = D^-1/2 A D^-1/2 E^k over the bipartite graph of positive pairs, final
 * embedding the mean of layers 0..K; BPR + reg * |E^0 of the batch|^2, Adam. Each step is a
 * full forward and backward propagation over max(o->batch, positives / 32) triples. Exports the
 * propagated user and item embeddings. Loss: mean BPR term over the epoch's triples. */
int lightgcn_train(const struct mf_csr *R, const struct mf_opts *o, float *U, float *V);

/* ---- ALS fold-in (serving) ----
 * VtV (dim x dim) = V^T V over all nitems rows, accumulated in double. */
void als_gram(const float *V, int32_t nitems, int dim, float *VtV);
/* The user vector that minimises the ALS objective for fixed V given the user's n (item row,
 * summed weight) pairs: (VtV + sum (c-1) v v^T + reg I) u = sum c p v. Exact (Cholesky), O(n
 * dim^2 + dim^3). 0, -EINVAL (a row out of range, dim bad), -ENOMEM. */
int als_fold_in(const float *V, int32_t nitems, int dim, const float *VtV, const int32_t *items,
                const float *weights, int n, double reg, double alpha, float *u_out);

/* ---- evaluation ----
 * Holds out, for every row with >= 2 positive entries, round(frac * positives) of them (at least
 * 1, at most positives - 1): the most recent ones when `when` (one time per entry of R, e.g. the
 * pair's latest interaction) is given, ties going to the higher column; else a random choice by
 * seed. Everything else, and every non-positive entry, stays in train. Both are R's shape. */
int mf_split_holdout(const struct mf_csr *R, const int64_t *when, double frac, uint64_t seed,
                     struct mf_csr *train, struct mf_csr *test);

struct mf_eval {
    double recall, ndcg;         /* means over evaluated users */
    double pop_recall, pop_ndcg; /* the same for popularity ranking */
    int32_t users;               /* users evaluated */
};
/* Full ranking: for each user with a positive test entry (at most max_users of them, a seeded
 * even spread when there are more; 0 = all), scores u.v over ALL items, drops the user's train
 * entries, takes the top k. recall = hits / |test positives|; NDCG = DCG / ideal DCG with binary
 * gains 1/log2(rank+1) over min(k, |test|) ideal positions. Popularity ranks items by the number
 * of train rows with a positive entry on them (ties by lower index) with the same exclusions.
 * U may be NULL: then only the popularity figures are computed. 0, -EINVAL, -ENOMEM. */
int mf_eval_full(const float *U, const float *V, int dim, const struct mf_csr *train,
                 const struct mf_csr *test, int k, int32_t max_users, uint64_t seed,
                 struct mf_eval *ret);
#endif
