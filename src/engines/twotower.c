/* Two-tower retrieval model trained with BPR and Adam: the item tower maps an item's content
 * vector through a learned linear map plus an id embedding, the user tower maps the weighted
 * mean of the user's history embeddings through one dense layer plus a user embedding. */
#include "engines/mf_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The content part of the item tower, W f_i for every item (items x dim x fdim), is recomputed
 * this many times an epoch rather than after every step: it is the one dense cost, and W moves
 * little within 1/32 of an epoch. The id part is current after every step. */
#define TT_CONTENT_REFRESHES 32

struct tt {
    const struct mf_csr *R;
    const float *F;              /* ncols x fdim, or NULL */
    int fdim, d;
    double reg;
    /* parameters and their gradients */
    float *W, *gW;               /* d x fdim */
    float *M, *gM;               /* d x d */
    float *E, *gE;               /* ncols x d: item id embeddings */
    float *Q, *gQ;               /* ncols x d: history embeddings */
    float *B, *gB;               /* nrows x d: user embeddings */
    struct mf_adam aW, aM, aE, aQ, aB;
    /* derived */
    float *Vc;                   /* ncols x d: item tower output Cc + E, current after each step */
    float *Cc;                   /* ncols x d: W f_i as of the last content refresh */
    float *h;                    /* 6 x d scratch for the current user (tt_user_step) */
    /* rows touched in the current step */
    int32_t *items_touched, nitems_touched;
    int32_t *users_touched, nusers_touched;
    char *item_mark, *user_mark;
    int32_t *item_uses;          /* occurrences of each item in the step's triples */
    double per_step;             /* triples per step: the loss is their mean */
};

static void *tt_alloc(size_t n, size_t size, int *rc)
{
    void *p = calloc(n ? n : 1, size);
    if (p == NULL)
        *rc = -ENOMEM;
    return p;
}

static void tt_free(struct tt *t)
{
    float *fs[] = {t->W, t->gW, t->M, t->gM, t->E, t->gE, t->Q, t->gQ, t->B, t->gB, t->Vc, t->Cc, t->h};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        free(fs[i]);
    struct mf_adam *as[] = {&t->aW, &t->aM, &t->aE, &t->aQ, &t->aB};
    for (size_t i = 0; i < 5; i++)
        mf__adam_free(as[i]);
    free(t->items_touched);
    free(t->users_touched);
    free(t->item_mark);
    free(t->item_uses);
    free(t->user_mark);
}

static int tt_init(struct tt *t, const struct mf_opts *o, struct mf_rng *rng)
{
    int rc = 0, d = t->d;
    size_t ni = (size_t)t->R->ncols, nu = (size_t)t->R->nrows, fd = (size_t)t->fdim;
    t->W = tt_alloc(d * fd, sizeof(float), &rc);
    t->gW = tt_alloc(d * fd, sizeof(float), &rc);
    t->M = tt_alloc((size_t)d * d, sizeof(float), &rc);
    t->gM = tt_alloc((size_t)d * d, sizeof(float), &rc);
    t->E = tt_alloc(ni * d, sizeof(float), &rc);
    t->gE = tt_alloc(ni * d, sizeof(float), &rc);
    t->Q = tt_alloc(ni * d, sizeof(float), &rc);
    t->gQ = tt_alloc(ni * d, sizeof(float), &rc);
    t->B = tt_alloc(nu * d, sizeof(float), &rc);
    t->gB = tt_alloc(nu * d, sizeof(float), &rc);
    t->Vc = tt_alloc(ni * d, sizeof(float), &rc);
    t->Cc = tt_alloc(ni * d, sizeof(float), &rc);
    t->h = tt_alloc(6 * (size_t)d, sizeof(float), &rc);
    t->items_touched = tt_alloc(ni, sizeof(int32_t), &rc);
    t->users_touched = tt_alloc(nu, sizeof(int32_t), &rc);
    t->item_mark = tt_alloc(ni, 1, &rc);
    t->item_uses = tt_alloc(ni, sizeof(int32_t), &rc);
    t->user_mark = tt_alloc(nu, 1, &rc);
    if (rc < 0)
        return rc;
    if (mf__adam_init(&t->aW, d * fd, o->learning_rate) < 0 ||
        mf__adam_init(&t->aM, (size_t)d * d, o->learning_rate) < 0 ||
        mf__adam_init(&t->aE, ni * d, o->learning_rate) < 0 ||
        mf__adam_init(&t->aQ, ni * d, o->learning_rate) < 0 ||
        mf__adam_init(&t->aB, nu * d, o->learning_rate) < 0)
        return -ENOMEM;
    /* M starts as the identity so the user tower begins as "mean history + own embedding" */
    for (int a = 0; a < d; a++)
        t->M[(size_t)a * d + a] = 1.0f;
    mf__rng_fill_normal(rng, t->W, d * fd, 0.1);
    mf__rng_fill_normal(rng, t->E, ni * d, 0.1);
    mf__rng_fill_normal(rng, t->Q, ni * d, 0.1);
    mf__rng_fill_normal(rng, t->B, nu * d, 0.01);
    return 0;
}

/* Vc[i] = Cc[i] + E_i */
static void tt_item_vector(struct tt *t, int32_t i)
{
    size_t off = (size_t)i * t->d;
    for (int a = 0; a < t->d; a++)
        t->Vc[off + a] = t->Cc[off + a] + t->E[off + a];
}

/* Cc = W F for every item, then every Vc. */
static void tt_content_refresh(struct tt *t)
{
    const struct mf_kernels *k = mf__kernels();
    int d = t->d;
    for (int32_t i = 0; i < t->R->ncols; i++) {
        float *c = t->Cc + (size_t)i * d;
        for (int a = 0; a < d && t->F; a++)
            c[a] = k->dot(t->W + (size_t)a * t->fdim, t->F + (size_t)i * t->fdim, t->fdim);
        tt_item_vector(t, i);
    }
}

/* h = weighted mean of Q over the user's positive items; u = M h + B_u. Returns the weight
 * sum (0: no history, h = 0). */
static double tt_user_vector(struct tt *t, int32_t r, float *h, float *u)
{
    const struct mf_kernels *k = mf__kernels();
    int d = t->d;
    double wsum = 0;
    memset(h, 0, (size_t)d * sizeof *h);
    for (int64_t e = t->R->indptr[r]; e < t->R->indptr[r + 1]; e++)
        if (t->R->values[e] > 0) {
            k->axpy(h, t->R->values[e], t->Q + (size_t)t->R->indices[e] * d, d);
            wsum += t->R->values[e];
        }
    if (wsum > 0)
        for (int a = 0; a < d; a++)
            h[a] = (float)(h[a] / wsum);
    for (int a = 0; a < d; a++)
        u[a] = k->dot(t->M + (size_t)a * d, h, d) + t->B[(size_t)r * d + a];
    return wsum;
}

static void mark_item(struct tt *t, int32_t i)
{
    if (!t->item_mark[i]) {
        t->item_mark[i] = 1;
        t->items_touched[t->nitems_touched++] = i;
    }
}

/* One user's triples: every positive item with one sampled negative. The user tower sees the
 * history WITHOUT the item being scored (leave one out): with it, the model learns to score
 * what is already in the history — an item matching its own history embedding — which says
 * nothing about the items a user has not touched yet. Accumulates gradients (scaled by
 * 1/scale) and returns the summed BPR loss; *ret_n gets the triple count. */
static double tt_user_step(struct tt *t, int32_t r, struct mf_rng *rng, double scale, int *ret_n)
{
    const struct mf_kernels *k = mf__kernels();
    int d = t->d, n = 0;
    float *S = t->h, *h = t->h + d, *u = t->h + 2 * d, *gu = t->h + 3 * d, *gh = t->h + 4 * d,
          *G = t->h + 5 * d;
    const float *b = t->B + (size_t)r * d;
    double wsum = 0, loss = 0;
    float l2 = (float)(t->reg / scale);
    memset(S, 0, (size_t)d * sizeof *S);
    memset(G, 0, (size_t)d * sizeof *G);
    for (int64_t e = t->R->indptr[r]; e < t->R->indptr[r + 1]; e++)
        if (t->R->values[e] > 0) {
            k->axpy(S, t->R->values[e], t->Q + (size_t)t->R->indices[e] * d, d);
            wsum += t->R->values[e];
        }
    for (int64_t e = t->R->indptr[r]; e < t->R->indptr[r + 1]; e++) {
        float wi = t->R->values[e];
        if (wi <= 0)
            continue;
        int32_t i = t->R->indices[e], j = mf__sample_negative(t->R, r, rng);
        const float *qi = t->Q + (size_t)i * d;
        double rest = wsum - wi; /* weight of the rest of the history */
        for (int a = 0; a < d; a++)
            h[a] = rest > 0 ? (float)((S[a] - wi * qi[a]) / rest) : 0.0f;
        for (int a = 0; a < d; a++)
            u[a] = k->dot(t->M + (size_t)a * d, h, d) + b[a];
        const float *vi = t->Vc + (size_t)i * d, *vj = t->Vc + (size_t)j * d;
        double x = (double)k->dot(u, vi, d) - k->dot(u, vj, d);
        loss += x > 0 ? log1p(exp(-x)) : -x + log1p(exp(x));
        float g = (float)(-1.0 / (1.0 + exp(x)) / scale); /* d loss / d x */
        for (int a = 0; a < d; a++)
            gu[a] = g * (vi[a] - vj[a]);
        k->axpy(t->gE + (size_t)i * d, g, u, d);
        k->axpy(t->gE + (size_t)j * d, -g, u, d);
        /* L2 per occurrence on the batch mean's scale, as LightGCN's batch L2 (E's is added
         * in tt_apply, after W's gradient is taken from gE) */
        t->item_uses[i]++;
        t->item_uses[j]++;
        k->axpy(t->gB + (size_t)r * d, l2, b, d);
        mark_item(t, i);
        mark_item(t, j);
        /* back through u = M h + B_u and h = (S - wi q_i) / rest */
        k->axpy(t->gB + (size_t)r * d, 1.0f, gu, d);
        memset(gh, 0, (size_t)d * sizeof *gh);
        for (int a = 0; a < d; a++) {
            k->axpy(t->gM + (size_t)a * d, gu[a], h, d);
            k->axpy(gh, gu[a], t->M + (size_t)a * d, d); /* gh = M^T gu */
        }
        if (rest > 0) {
            k->axpy(G, (float)(1.0 / rest), gh, d);            /* every q_j: w_j G below */
            k->axpy(t->gQ + (size_t)i * d, (float)(-wi / rest), gh, d); /* q_i was left out */
        }
        n++;
    }
    *ret_n = n;
    if (n == 0)
        return 0;
    if (!t->user_mark[r]) {
        t->user_mark[r] = 1;
        t->users_touched[t->nusers_touched++] = r;
    }
    for (int64_t e = t->R->indptr[r]; e < t->R->indptr[r + 1]; e++)
        if (t->R->values[e] > 0) {
            int32_t j = t->R->indices[e];
            k->axpy(t->gQ + (size_t)j * d, t->R->values[e], G, d);
            k->axpy(t->gQ + (size_t)j * d, l2, t->Q + (size_t)j * d, d);
            mark_item(t, j);
        }
    return loss;
}

/* Applies the step's gradients (with L2 on the touched rows) and refreshes item vectors. */
static void tt_apply(struct tt *t)
{
    const struct mf_kernels *k = mf__kernels();
    int d = t->d;
    struct mf_adam *as[] = {&t->aW, &t->aM, &t->aE, &t->aQ, &t->aB};
    for (size_t i = 0; i < 5; i++)
        mf__adam_tick(as[i]);
    /* W's gradient: sum over touched items of gE_i f_i^T (before gE gets its L2 term) */
    if (t->F)
        for (int32_t n = 0; n < t->nitems_touched; n++) {
            int32_t i = t->items_touched[n];
            const float *g = t->gE + (size_t)i * d, *f = t->F + (size_t)i * t->fdim;
            for (int a = 0; a < d; a++)
                if (g[a] != 0)
                    k->axpy(t->gW + (size_t)a * t->fdim, g[a], f, t->fdim);
        }
    for (int32_t n = 0; n < t->nitems_touched; n++) {
        int32_t i = t->items_touched[n];
        size_t off = (size_t)i * d;
        k->axpy(t->gE + off, (float)(t->reg * t->item_uses[i] / t->per_step), t->E + off, d);
        t->item_uses[i] = 0;
        mf__adam_apply(&t->aE, t->E, t->gE, off, (size_t)d);
        mf__adam_apply(&t->aQ, t->Q, t->gQ, off, (size_t)d);
        t->item_mark[t->items_touched[n]] = 0;
    }
    for (int32_t n = 0; n < t->nusers_touched; n++) {
        size_t off = (size_t)t->users_touched[n] * d;
        mf__adam_apply(&t->aB, t->B, t->gB, off, (size_t)d);
        t->user_mark[t->users_touched[n]] = 0;
    }
    if (t->F)
        mf__adam_apply(&t->aW, t->W, t->gW, 0, (size_t)d * t->fdim);
    mf__adam_apply(&t->aM, t->M, t->gM, 0, (size_t)d * d);
    for (int32_t n = 0; n < t->nitems_touched; n++)
        tt_item_vector(t, t->items_touched[n]);
    t->nitems_touched = t->nusers_touched = 0;
}

/* One pass over the users in a shuffled order; returns the mean BPR loss. */
static int tt_epoch(struct tt *t, const struct mf_opts *o, int32_t *order, int64_t per_step,
                    struct mf_rng *rng, double *ret_loss)
{
    int32_t nu = t->R->nrows;
    for (int32_t i = nu - 1; i > 0; i--) {
        int32_t j = (int32_t)mf__rng_below(rng, (uint32_t)i + 1), x = order[i];
        order[i] = order[j];
        order[j] = x;
    }
    double loss = 0;
    int64_t total = 0, in_step = 0;
    int32_t refresh_every = nu / TT_CONTENT_REFRESHES > 0 ? nu / TT_CONTENT_REFRESHES : 1;
    for (int32_t n = 0; n < nu; n++) {
        if ((n & 255) == 0 && mf__cancelled(o))
            return -ECANCELED;
        if (n > 0 && n % refresh_every == 0 && t->F)
            tt_content_refresh(t);
        int cnt = 0;
        loss += tt_user_step(t, order[n], rng, (double)per_step, &cnt);
        total += cnt;
        in_step += cnt;
        if (in_step >= per_step) {
            tt_apply(t);
            in_step = 0;
        }
    }
    if (in_step > 0)
        tt_apply(t);
    *ret_loss = total ? loss / (double)total : 0;
    return 0;
}

int two_tower_train(const struct mf_csr *R, const float *features, int fdim,
                    const struct mf_opts *opts, float *U, float *V)
{
    struct mf_opts o = *opts;
    mf_opts_defaults(&o);
    if (o.dim > MF_MAX_DIM || R->nrows < 1 || R->ncols < 2 || fdim < 0 || fdim > 4096)
        return -EINVAL;
    struct tt t = {.R = R, .F = fdim > 0 ? features : NULL, .fdim = fdim > 0 && features ? fdim : 0,
                   .d = o.dim, .reg = o.reg};
    struct mf_rng rng;
    mf__rng_seed(&rng, o.seed);
    int32_t *order = malloc((size_t)R->nrows * sizeof *order);
    int rc = order ? tt_init(&t, &o, &rng) : -ENOMEM;
    int64_t per_step = o.batch;
    t.per_step = (double)per_step;
    if (rc == 0) {
        for (int32_t i = 0; i < R->nrows; i++)
            order[i] = i;
        tt_content_refresh(&t);
    }
    for (int ep = 1; rc == 0 && ep <= o.epochs; ep++) {
        double loss = 0;
        rc = tt_epoch(&t, &o, order, per_step, &rng, &loss);
        if (rc == 0 && o.on_epoch)
            o.on_epoch(o.arg, ep, loss);
    }
    if (rc == 0 || rc == -ECANCELED) {
        tt_content_refresh(&t);
        memcpy(V, t.Vc, (size_t)R->ncols * o.dim * sizeof *V);
        float *h = t.h;
        for (int32_t r = 0; r < R->nrows; r++)
            tt_user_vector(&t, r, h, U + (size_t)r * o.dim);
    }
    free(order);
    tt_free(&t);
    return rc;
}
