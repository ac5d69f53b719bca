/* Implicit-feedback ALS (Hu, Koren, Volinsky 2008) with the Y^T Y + Y^T (C_u - I) Y trick: each
 * row's normal equations are solved by warm-started conjugate gradient (Takacs et al. 2011)
 * without forming the matrix, or exactly by Cholesky; rows are fanned out over threads. */
#include "engines/mf_int.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* One half-step: solve every row of `side` (n x dim) given the other side's factors Y and
 * their gram G = Y^T Y, with row r's observations in R's row r. */
struct half {
    const struct mf_csr *R;
    const float *Y, *G;
    float *X;
    const struct mf_opts *o;
    int32_t r0, r1;              /* this thread's rows */
    int status;
};

/* out = (G + reg I + sum_j (c_j - 1) y_j y_j^T) x over the row's entries */
static void row_apply(const struct half *h, int32_t r, const float *x, float *out)
{
    const struct mf_kernels *k = mf__kernels();
    int d = h->o->dim;
    float reg = (float)h->o->reg, alpha = (float)h->o->alpha;
    for (int a = 0; a < d; a++)
        out[a] = k->dot(h->G + (size_t)a * d, x, d) + reg * x[a];
    for (int64_t e = h->R->indptr[r]; e < h->R->indptr[r + 1]; e++) {
        const float *y = h->Y + (size_t)h->R->indices[e] * d;
        float cm1 = alpha * fabsf(h->R->values[e]);
        k->axpy(out, cm1 * k->dot(y, x, d), y, d);
    }
}

/* b = sum_j c_j p_j y_j */
static void row_rhs(const struct half *h, int32_t r, float *b)
{
    const struct mf_kernels *k = mf__kernels();
    int d = h->o->dim;
    memset(b, 0, (size_t)d * sizeof *b);
    for (int64_t e = h->R->indptr[r]; e < h->R->indptr[r + 1]; e++)
        if (h->R->values[e] > 0)
            k->axpy(b, 1.0f + (float)h->o->alpha * h->R->values[e],
                    h->Y + (size_t)h->R->indices[e] * d, d);
}

/* Warm-started CG from the row's current value; scratch holds 3 * dim floats. */
static void row_cg(const struct half *h, int32_t r, float *scratch)
{
    const struct mf_kernels *k = mf__kernels();
    int d = h->o->dim;
    float *x = h->X + (size_t)r * d, *res = scratch, *p = scratch + d, *Ap = scratch + 2 * d;
    row_rhs(h, r, res);
    row_apply(h, r, x, Ap);
    for (int a = 0; a < d; a++) {
        res[a] -= Ap[a];
        p[a] = res[a];
    }
    float rs = k->dot(res, res, d);
    for (int it = 0; it < h->o->cg_steps && rs > 1e-20f; it++) {
        row_apply(h, r, p, Ap);
        float pAp = k->dot(p, Ap, d);
        if (!(pAp > 0))
            break;
        float step = rs / pAp;
        k->axpy(x, step, p, d);
        k->axpy(res, -step, Ap, d);
        float rs_new = k->dot(res, res, d);
        float beta = rs_new / rs;
        for (int a = 0; a < d; a++)
            p[a] = res[a] + beta * p[a];
        rs = rs_new;
    }
}

/* Exact solve in double; scratch holds d*d + 2d doubles. */
static int row_cholesky(const struct half *h, int32_t r, double *scratch)
{
    int d = h->o->dim;
    double *A = scratch, *b = scratch + (size_t)d * d, *x = b + d;
    double alpha = h->o->alpha;
    for (size_t e = 0; e < (size_t)d * d; e++)
        A[e] = h->G[e];
    for (int a = 0; a < d; a++) {
        A[(size_t)a * d + a] += h->o->reg;
        b[a] = 0;
    }
    for (int64_t e = h->R->indptr[r]; e < h->R->indptr[r + 1]; e++) {
        const float *y = h->Y + (size_t)h->R->indices[e] * d;
        double w = h->R->values[e], cm1 = alpha * fabs(w);
        for (int a = 0; a < d; a++) {
            double ya = cm1 * y[a];
            for (int c = 0; c < d; c++)
                A[(size_t)a * d + c] += ya * y[c];
            if (w > 0)
                b[a] += (1.0 + cm1) * y[a];
        }
    }
    int rc = mf__cholesky_solve(A, d, b, x);
    if (rc < 0)
        return -EDOM;
    for (int a = 0; a < d; a++)
        h->X[(size_t)r * d + a] = (float)x[a];
    return 0;
}

static void *half_run(void *arg)
{
    struct half *h = arg;
    int d = h->o->dim;
    bool chol = h->o->solver == MF_SOLVER_CHOLESKY;
    size_t need = chol ? ((size_t)d * d + 2 * (size_t)d) * sizeof(double) : 3 * (size_t)d * sizeof(float);
    void *scratch = malloc(need);
    if (scratch == NULL) {
        h->status = -ENOMEM;
        return NULL;
    }
    h->status = 0;
    for (int32_t r = h->r0; r < h->r1; r++) {
        if ((r & 255) == 0 && mf__cancelled(h->o)) {
            h->status = -ECANCELED;
            break;
        }
        if (chol) {
            if (row_cholesky(h, r, scratch) < 0) {
                h->status = -EDOM;
                break;
            }
        } else {
            row_cg(h, r, scratch);
        }
    }
    free(scratch);
    return NULL;
}

/* Solves all rows of R for X given Y (gram G), over o->threads threads. */
static int half_step(const struct mf_csr *R, const float *Y, const float *G, float *X,
                     const struct mf_opts *o)
{
    int nt = o->threads < 1 ? 1 : o->threads > 64 ? 64 : o->threads;
    if (nt > R->nrows)
        nt = R->nrows > 0 ? R->nrows : 1;
    struct half h[64];
    pthread_t tid[64];
    bool started[64] = {false};
    for (int t = 0; t < nt; t++) {
        h[t] = (struct half){R, Y, G, X, o, (int32_t)((int64_t)R->nrows * t / nt),
                             (int32_t)((int64_t)R->nrows * (t + 1) / nt), 0};
        if (t > 0)
            started[t] = pthread_create(&tid[t], NULL, half_run, &h[t]) == 0;
    }
    half_run(&h[0]);
    int rc = h[0].status;
    for (int t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            half_run(&h[t]); /* no thread: run its rows here */
        if (h[t].status < 0 && rc == 0)
            rc = h[t].status;
    }
    return rc;
}

/* sum over all pairs of (u.v)^2 = <U^T U, V^T V> (Frobenius), plus the observed pairs'
 * corrections c (p - s)^2 - s^2, plus the L2 terms. */
static double loss_with_grams(const struct mf_csr *R, const float *U, const float *V, int dim,
                              double reg, double alpha, const float *UtU, const float *VtV)
{
    const struct mf_kernels *k = mf__kernels();
    double all = 0, obs = 0, l2 = 0;
    for (size_t e = 0; e < (size_t)dim * dim; e++)
        all += (double)UtU[e] * VtV[e];
    for (int32_t u = 0; u < R->nrows; u++)
        for (int64_t e = R->indptr[u]; e < R->indptr[u + 1]; e++) {
            double w = R->values[e], c = 1.0 + alpha * fabs(w), p = w > 0 ? 1.0 : 0.0;
            double s = k->dot(U + (size_t)u * dim, V + (size_t)R->indices[e] * dim, dim);
            obs += c * (p - s) * (p - s) - s * s;
        }
    for (int a = 0; a < dim; a++)
        l2 += (double)UtU[(size_t)a * dim + a] + VtV[(size_t)a * dim + a];
    return all + obs + reg * l2;
}

double als_loss(const struct mf_csr *R, const float *U, const float *V, int dim, double reg,
                double alpha)
{
    float *UtU = malloc((size_t)dim * dim * sizeof *UtU),
          *VtV = malloc((size_t)dim * dim * sizeof *VtV);
    double l = NAN;
    if (UtU && VtV) {
        als_gram(U, R->nrows, dim, UtU);
        als_gram(V, R->ncols, dim, VtV);
        l = loss_with_grams(R, U, V, dim, reg, alpha, UtU, VtV);
    }
    free(UtU);
    free(VtV);
    return l;
}

int als_train(const struct mf_csr *R, const struct mf_opts *opts, float *U, float *V)
{
    struct mf_opts o = *opts;
    mf_opts_defaults(&o);
    if (o.dim > MF_MAX_DIM || R->nrows < 1 || R->ncols < 1)
        return -EINVAL;
    int d = o.dim;
    struct mf_csr Rt;
    int rc = mf_csr_transpose(R, &Rt);
    if (rc < 0)
        return rc;
    float *G = malloc((size_t)d * d * sizeof *G), *H = malloc((size_t)d * d * sizeof *H);
    if (!G || !H) {
        rc = -ENOMEM;
        goto out;
    }
    struct mf_rng rng;
    mf__rng_seed(&rng, o.seed);
    mf__rng_fill_normal(&rng, U, (size_t)R->nrows * d, 0.01);
    mf__rng_fill_normal(&rng, V, (size_t)R->ncols * d, 0.01);
    als_gram(U, R->nrows, d, G);
    for (int ep = 1; ep <= o.epochs; ep++) {
        if (mf__cancelled(&o)) {
            rc = -ECANCELED;
            break;
        }
        /* items given users, then users given items: U ends as the solve for the final V */
        if ((rc = half_step(&Rt, U, G, V, &o)) < 0)
            break;
        als_gram(V, R->ncols, d, H);
        if ((rc = half_step(R, V, H, U, &o)) < 0)
            break;
        als_gram(U, R->nrows, d, G);
        if (o.on_epoch)
            o.on_epoch(o.arg, ep, loss_with_grams(R, U, V, d, o.reg, o.alpha, G, H));
    }
out:
    free(G);
    free(H);
    mf_csr_free(&Rt);
    return rc;
}
