/* LightGCN (He et al. 2020): user and item embeddings propagated K times over the user-item
 * graph with symmetric normalisation, final embedding the mean of the layers, trained with BPR
 * + L2 by Adam. The propagation is linear, so the gradient for layer 0 is the same propagation
 * applied to the gradient of the final embeddings. */
#include "engines/mf_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Each step propagates over the whole graph twice K times: capped steps per epoch keep an
 * epoch at a bounded number of propagations however large the data. */
#define GCN_MAX_STEPS_PER_EPOCH 32
#define GCN_MAX_LAYERS 4

struct gcn {
    struct mf_csr P, Pt;         /* positive pairs, values = 1/sqrt(deg_u deg_i) */
    int32_t nu, ni;
    int d, K;
    float *E0, *G0;              /* (nu + ni) x d: parameters and their gradient */
    float *F, *GF;               /* final embeddings and their gradient */
    float *cur, *next;           /* propagation scratch */
    struct mf_adam adam;
};

/* The positive pairs with the normalised edge weights, in both directions. */
static int gcn_graph(struct gcn *g, const struct mf_csr *R)
{
    size_t n = 0;
    for (int64_t e = 0; e < R->nnz; e++)
        n += R->values[e] > 0;
    int32_t *rows = malloc((n ? n : 1) * sizeof *rows), *cols = malloc((n ? n : 1) * sizeof *cols);
    float *w = malloc((n ? n : 1) * sizeof *w);
    int32_t *du = calloc((size_t)R->nrows, sizeof *du), *di = calloc((size_t)R->ncols, sizeof *di);
    int rc = -ENOMEM;
    if (!rows || !cols || !w || !du || !di)
        goto out;
    size_t m = 0;
    for (int32_t u = 0; u < R->nrows; u++)
        for (int64_t e = R->indptr[u]; e < R->indptr[u + 1]; e++)
            if (R->values[e] > 0) {
                rows[m] = u;
                cols[m] = R->indices[e];
                du[u]++;
                di[R->indices[e]]++;
                m++;
            }
    for (size_t e = 0; e < m; e++)
        w[e] = (float)(1.0 / sqrt((double)du[rows[e]] * di[cols[e]]));
    rc = mf_csr_from_triplets(R->nrows, R->ncols, m, rows, cols, w, &g->P);
    if (rc == 0 && (rc = mf_csr_transpose(&g->P, &g->Pt)) < 0)
        mf_csr_free(&g->P);
out:
    free(rows);
    free(cols);
    free(w);
    free(du);
    free(di);
    return rc;
}

/* next = A_hat cur: users gather from items through P, items from users through Pt. */
static void gcn_propagate(const struct gcn *g, const float *cur, float *next)
{
    const struct mf_kernels *k = mf__kernels();
    int d = g->d;
    const float *cu = cur, *ci = cur + (size_t)g->nu * d;
    float *nu = next, *ni = next + (size_t)g->nu * d;
    memset(next, 0, (size_t)(g->nu + g->ni) * d * sizeof *next);
    for (int32_t u = 0; u < g->nu; u++)
        for (int64_t e = g->P.indptr[u]; e < g->P.indptr[u + 1]; e++)
            k->axpy(nu + (size_t)u * d, g->P.values[e], ci + (size_t)g->P.indices[e] * d, d);
    for (int32_t i = 0; i < g->ni; i++)
        for (int64_t e = g->Pt.indptr[i]; e < g->Pt.indptr[i + 1]; e++)
            k->axpy(ni + (size_t)i * d, g->Pt.values[e], cu + (size_t)g->Pt.indices[e] * d, d);
}

/* out = mean over k = 0..K of A_hat^k in (A_hat is symmetric, so this is both the forward
 * pass and the gradient's way back). */
static void gcn_layers_mean(struct gcn *g, const float *in, float *out)
{
    size_t n = (size_t)(g->nu + g->ni) * g->d;
    float inv = 1.0f / (float)(g->K + 1);
    memcpy(g->cur, in, n * sizeof *in);
    for (size_t e = 0; e < n; e++)
        out[e] = in[e] * inv;
    for (int l = 0; l < g->K; l++) {
        gcn_propagate(g, g->cur, g->next);
        float *t = g->cur;
        g->cur = g->next;
        g->next = t;
        for (size_t e = 0; e < n; e++)
            out[e] += g->cur[e] * inv;
    }
}

/* One BPR triple's gradient into GF and L2 into G0; returns its loss. */
static double gcn_triple(struct gcn *g, int32_t u, int32_t i, int32_t j, double reg,
                         double scale)
{
    const struct mf_kernels *k = mf__kernels();
    int d = g->d;
    size_t ou = (size_t)u * d, oi = (size_t)(g->nu + i) * d, oj = (size_t)(g->nu + j) * d;
    double x = (double)k->dot(g->F + ou, g->F + oi, d) - k->dot(g->F + ou, g->F + oj, d);
    float gx = (float)(-1.0 / (1.0 + exp(x)) / scale);
    k->axpy(g->GF + ou, gx, g->F + oi, d);
    k->axpy(g->GF + ou, -gx, g->F + oj, d);
    k->axpy(g->GF + oi, gx, g->F + ou, d);
    k->axpy(g->GF + oj, -gx, g->F + ou, d);
    float gr = (float)(reg / scale);
    k->axpy(g->G0 + ou, gr, g->E0 + ou, d);
    k->axpy(g->G0 + oi, gr, g->E0 + oi, d);
    k->axpy(g->G0 + oj, gr, g->E0 + oj, d);
    return x > 0 ? log1p(exp(-x)) : -x + log1p(exp(x));
}

/* One optimisation step over n triples from the shuffled positive list. */
static double gcn_step(struct gcn *g, const int64_t *edges, int64_t n, const int32_t *edge_user,
                       double reg, struct mf_rng *rng)
{
    size_t sz = (size_t)(g->nu + g->ni) * g->d;
    gcn_layers_mean(g, g->E0, g->F);
    memset(g->GF, 0, sz * sizeof *g->GF);
    double loss = 0;
    for (int64_t t = 0; t < n; t++) {
        int32_t u = edge_user[edges[t]], i = g->P.indices[edges[t]];
        loss += gcn_triple(g, u, i, mf__sample_negative(&g->P, u, rng), reg, (double)n);
    }
    /* G0 += mean_k A_hat^k GF, then one dense Adam step */
    gcn_layers_mean(g, g->GF, g->F);
    for (size_t e = 0; e < sz; e++)
        g->G0[e] += g->F[e];
    mf__adam_tick(&g->adam);
    mf__adam_apply(&g->adam, g->E0, g->G0, 0, sz);
    return loss;
}

static void gcn_free(struct gcn *g)
{
    mf_csr_free(&g->P);
    mf_csr_free(&g->Pt);
    free(g->E0);
    free(g->G0);
    free(g->F);
    free(g->GF);
    free(g->cur);
    free(g->next);
    mf__adam_free(&g->adam);
}

static int gcn_alloc(struct gcn *g, double lr)
{
    size_t sz = (size_t)(g->nu + g->ni) * g->d;
    g->E0 = malloc(sz * sizeof(float));
    g->G0 = calloc(sz, sizeof(float));
    g->F = malloc(sz * sizeof(float));
    g->GF = malloc(sz * sizeof(float));
    g->cur = malloc(sz * sizeof(float));
    g->next = malloc(sz * sizeof(float));
    if (!g->E0 || !g->G0 || !g->F || !g->GF || !g->cur || !g->next)
        return -ENOMEM;
    return mf__adam_init(&g->adam, sz, lr);
}

/* Shuffles the positive edges and runs the epoch's steps; mean BPR loss in *ret_loss. */
static int gcn_epoch(struct gcn *g, const struct mf_opts *o, int64_t *edges,
                     const int32_t *edge_user, int64_t per_step, struct mf_rng *rng,
                     double *ret_loss)
{
    int64_t m = g->P.nnz;
    for (int64_t i = m - 1; i > 0; i--) {
        int64_t j = (int64_t)(mf__rng_uniform(rng) * (double)(i + 1)), x = edges[i];
        if (j > i)
            j = i;
        edges[i] = edges[j];
        edges[j] = x;
    }
    double loss = 0;
    for (int64_t at = 0; at < m; at += per_step) {
        if (mf__cancelled(o))
            return -ECANCELED;
        int64_t n = m - at < per_step ? m - at : per_step;
        loss += gcn_step(g, edges + at, n, edge_user, o->reg, rng);
    }
    *ret_loss = m ? loss / (double)m : 0;
    return 0;
}

int lightgcn_train(const struct mf_csr *R, const struct mf_opts *opts, float *U, float *V)
{
    struct mf_opts o = *opts;
    mf_opts_defaults(&o);
    if (o.dim > MF_MAX_DIM || R->nrows < 1 || R->ncols < 2)
        return -EINVAL;
    struct gcn g = {.nu = R->nrows, .ni = R->ncols, .d = o.dim,
                    .K = o.layers > GCN_MAX_LAYERS ? GCN_MAX_LAYERS : o.layers};
    int64_t *edges = NULL;
    int32_t *edge_user = NULL;
    int rc = gcn_graph(&g, R);
    if (rc == 0)
        rc = gcn_alloc(&g, o.learning_rate);
    if (rc == 0) {
        edges = malloc((size_t)(g.P.nnz ? g.P.nnz : 1) * sizeof *edges);
        edge_user = malloc((size_t)(g.P.nnz ? g.P.nnz : 1) * sizeof *edge_user);
        if (!edges || !edge_user)
            rc = -ENOMEM;
    }
    if (rc == 0 && g.P.nnz == 0)
        rc = -EINVAL;
    if (rc == 0) {
        for (int32_t u = 0; u < g.nu; u++)
            for (int64_t e = g.P.indptr[u]; e < g.P.indptr[u + 1]; e++) {
                edges[e] = e;
                edge_user[e] = u;
            }
        struct mf_rng rng;
        mf__rng_seed(&rng, o.seed);
        mf__rng_fill_normal(&rng, g.E0, (size_t)(g.nu + g.ni) * g.d, 0.1);
        int64_t per_step = o.batch;
        if (g.P.nnz / GCN_MAX_STEPS_PER_EPOCH > per_step)
            per_step = g.P.nnz / GCN_MAX_STEPS_PER_EPOCH;
        for (int ep = 1; rc == 0 && ep <= o.epochs; ep++) {
            double loss = 0;
            rc = gcn_epoch(&g, &o, edges, edge_user, per_step, &rng, &loss);
            if (rc == 0 && o.on_epoch)
                o.on_epoch(o.arg, ep, loss);
        }
        if (rc == 0 || rc == -ECANCELED) {
            gcn_layers_mean(&g, g.E0, g.F);
            memcpy(U, g.F, (size_t)g.nu * g.d * sizeof *U);
            memcpy(V, g.F + (size_t)g.nu * g.d, (size_t)g.ni * g.d * sizeof *V);
        }
    }
    free(edges);
    free(edge_user);
    gcn_free(&g);
    return rc;
}
