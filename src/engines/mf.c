/* The mf engine's common parts: the CSR matrix, option defaults, vector kernels (AVX2/FMA or
 * portable, chosen once at run time), the seeded RNG, Cholesky, Adam, and ALS fold-in. */
#include "engines/mf_int.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ---------------------------------------------------------------- kernels */

static float dot_portable(const float *a, const float *b, int n)
{
    /* four independent sums so the compiler can pipeline them */
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static void axpy_portable(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s0 = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float s = _mm_cvtss_f32(h);
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

__attribute__((target("avx2,fma"))) static void axpy_avx2(float *y, float a, const float *x,
                                                           int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}
#endif

static struct mf_kernels kernels = {dot_portable, axpy_portable};
static pthread_once_t kernels_once = PTHREAD_ONCE_INIT;

static void kernels_pick(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        kernels.dot = dot_avx2;
        kernels.axpy = axpy_avx2;
    }
#endif
}

const struct mf_kernels *mf__kernels(void)
{
    pthread_once(&kernels_once, kernels_pick);
    return &kernels;
}

/* ---------------------------------------------------------------- RNG */

void mf__rng_seed(struct mf_rng *r, uint64_t seed)
{
    rng_seed(&r->r, seed, 0);
}

uint64_t mf__rng_next(struct mf_rng *r)
{
    return rng_next(&r->r);
}

uint32_t mf__rng_below(struct mf_rng *r, uint32_t n)
{
    return (uint32_t)(((mf__rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

double mf__rng_uniform(struct mf_rng *r) { return (double)(mf__rng_next(r) >> 11) * 0x1.0p-53; }

double mf__rng_normal(struct mf_rng *r)
{
    double u1 = mf__rng_uniform(r), u2 = mf__rng_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void mf__rng_fill_normal(struct mf_rng *r, float *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * mf__rng_normal(r));
}

/* ---------------------------------------------------------------- CSR */

static int csr_alloc(int32_t nrows, int32_t ncols, int64_t nnz, struct mf_csr *a)
{
    memset(a, 0, sizeof *a);
    a->nrows = nrows;
    a->ncols = ncols;
    a->nnz = nnz;
    a->indptr = calloc((size_t)nrows + 1, sizeof *a->indptr);
    a->indices = malloc((size_t)(nnz ? nnz : 1) * sizeof *a->indices);
    a->values = malloc((size_t)(nnz ? nnz : 1) * sizeof *a->values);
    if (!a->indptr || !a->indices || !a->values) {
        mf_csr_free(a);
        return -ENOMEM;
    }
    return 0;
}

void mf_csr_free(struct mf_csr *a)
{
    if (a == NULL)
        return;
    free(a->indptr);
    free(a->indices);
    free(a->values);
    memset(a, 0, sizeof *a);
}

/* Sorts one row's (col, value) entries by column (insertion sort: rows are short, and the
 * counting pass below already groups them). */
static void row_sort(int32_t *c, float *v, int64_t n)
{
    for (int64_t i = 1; i < n; i++) {
        int32_t ci = c[i];
        float vi = v[i];
        int64_t j = i - 1;
        for (; j >= 0 && c[j] > ci; j--) {
            c[j + 1] = c[j];
            v[j + 1] = v[j];
        }
        c[j + 1] = ci;
        v[j + 1] = vi;
    }
}

/* Merges equal columns in each (sorted) row in place and compacts the arrays. */
static void csr_merge_duplicates(struct mf_csr *a)
{
    int64_t out = 0;
    for (int32_t r = 0; r < a->nrows; r++) {
        int64_t b = a->indptr[r], e = a->indptr[r + 1];
        a->indptr[r] = out;
        for (int64_t k = b; k < e; k++) {
            if (out > a->indptr[r] && a->indices[out - 1] == a->indices[k]) {
                a->values[out - 1] += a->values[k];
                continue;
            }
            a->indices[out] = a->indices[k];
            a->values[out] = a->values[k];
            out++;
        }
    }
    a->indptr[a->nrows] = out;
    a->nnz = out;
}

int mf_csr_from_triplets(int32_t nrows, int32_t ncols, size_t n, const int32_t *rows,
                         const int32_t *cols, const float *w, struct mf_csr *ret)
{
    if (nrows < 0 || ncols < 0)
        return -EINVAL;
    for (size_t k = 0; k < n; k++)
        if (rows[k] < 0 || rows[k] >= nrows || cols[k] < 0 || cols[k] >= ncols)
            return -EINVAL;
    struct mf_csr a;
    int rc = csr_alloc(nrows, ncols, (int64_t)n, &a);
    if (rc < 0)
        return rc;
    for (size_t k = 0; k < n; k++)
        a.indptr[rows[k] + 1]++;
    for (int32_t r = 0; r < nrows; r++)
        a.indptr[r + 1] += a.indptr[r];
    int64_t *fill = malloc(((size_t)nrows + 1) * sizeof *fill);
    if (fill == NULL) {
        mf_csr_free(&a);
        return -ENOMEM;
    }
    memcpy(fill, a.indptr, ((size_t)nrows + 1) * sizeof *fill);
    for (size_t k = 0; k < n; k++) {
        int64_t at = fill[rows[k]]++;
        a.indices[at] = cols[k];
        a.values[at] = w[k];
    }
    free(fill);
    for (int32_t r = 0; r < nrows; r++)
        row_sort(a.indices + a.indptr[r], a.values + a.indptr[r],
                 a.indptr[r + 1] - a.indptr[r]);
    csr_merge_duplicates(&a);
    *ret = a;
    return 0;
}

int mf_csr_transpose(const struct mf_csr *a, struct mf_csr *ret)
{
    struct mf_csr t;
    int rc = csr_alloc(a->ncols, a->nrows, a->nnz, &t);
    if (rc < 0)
        return rc;
    for (int64_t k = 0; k < a->nnz; k++)
        t.indptr[a->indices[k] + 1]++;
    for (int32_t c = 0; c < a->ncols; c++)
        t.indptr[c + 1] += t.indptr[c];
    int64_t *fill = malloc(((size_t)a->ncols + 1) * sizeof *fill);
    if (fill == NULL) {
        mf_csr_free(&t);
        return -ENOMEM;
    }
    memcpy(fill, t.indptr, ((size_t)a->ncols + 1) * sizeof *fill);
    /* rows visited in order, so each transposed row comes out sorted */
    for (int32_t r = 0; r < a->nrows; r++)
        for (int64_t k = a->indptr[r]; k < a->indptr[r + 1]; k++) {
            int64_t at = fill[a->indices[k]]++;
            t.indices[at] = r;
            t.values[at] = a->values[k];
        }
    free(fill);
    *ret = t;
    return 0;
}

int32_t mf_csr_row_positives(const struct mf_csr *a, int32_t r)
{
    int32_t n = 0;
    for (int64_t k = a->indptr[r]; k < a->indptr[r + 1]; k++)
        n += a->values[k] > 0;
    return n;
}

int mf__row_has_positive(const struct mf_csr *R, int32_t r, int32_t c)
{
    int64_t lo = R->indptr[r], hi = R->indptr[r + 1];
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (R->indices[mid] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < R->indptr[r + 1] && R->indices[lo] == c && R->values[lo] > 0;
}

int32_t mf__sample_negative(const struct mf_csr *R, int32_t u, struct mf_rng *rng)
{
    int32_t j = 0;
    for (int tries = 0; tries < 16; tries++) {
        j = (int32_t)mf__rng_below(rng, (uint32_t)R->ncols);
        if (!mf__row_has_positive(R, u, j))
            return j;
    }
    return j;
}

/* ---------------------------------------------------------------- options */

void mf_opts_defaults(struct mf_opts *o)
{
    if (o->dim <= 0)
        o->dim = 64;
    if (o->epochs <= 0)
        o->epochs = 10;
    if (o->learning_rate <= 0)
        o->learning_rate = 0.01;
    if (o->reg <= 0)
        o->reg = 0.1;
    if (o->alpha <= 0)
        o->alpha = 10.0;
    if (o->threads <= 0)
        o->threads = 1;
    if (o->cg_steps <= 0)
        o->cg_steps = 3;
    if (o->layers <= 0)
        o->layers = 2;
    if (o->batch <= 0)
        o->batch = 1024;
}

/* ---------------------------------------------------------------- Cholesky */

int mf__cholesky_solve(double *A, int d, const double *b, double *x)
{
    for (int j = 0; j < d; j++) {
        double s = A[(size_t)j * d + j];
        for (int k = 0; k < j; k++)
            s -= A[(size_t)j * d + k] * A[(size_t)j * d + k];
        if (!(s > 0))
            return -EDOM;
        double l = sqrt(s);
        A[(size_t)j * d + j] = l;
        for (int i = j + 1; i < d; i++) {
            double t = A[(size_t)i * d + j];
            for (int k = 0; k < j; k++)
                t -= A[(size_t)i * d + k] * A[(size_t)j * d + k];
            A[(size_t)i * d + j] = t / l;
        }
    }
    /* L y = b, then L^T x = y */
    for (int i = 0; i < d; i++) {
        double t = b[i];
        for (int k = 0; k < i; k++)
            t -= A[(size_t)i * d + k] * x[k];
        x[i] = t / A[(size_t)i * d + i];
    }
    for (int i = d - 1; i >= 0; i--) {
        double t = x[i];
        for (int k = i + 1; k < d; k++)
            t -= A[(size_t)k * d + i] * x[k];
        x[i] = t / A[(size_t)i * d + i];
    }
    return 0;
}

/* ---------------------------------------------------------------- Adam */

int mf__adam_init(struct mf_adam *a, size_t n, double lr)
{
    memset(a, 0, sizeof *a);
    a->m = calloc(n ? n : 1, sizeof *a->m);
    a->v = calloc(n ? n : 1, sizeof *a->v);
    if (!a->m || !a->v) {
        mf__adam_free(a);
        return -ENOMEM;
    }
    a->lr = lr;
    a->b1 = 0.9;
    a->b2 = 0.999;
    a->eps = 1e-8;
    return 0;
}

void mf__adam_free(struct mf_adam *a)
{
    free(a->m);
    free(a->v);
    a->m = a->v = NULL;
}

void mf__adam_tick(struct mf_adam *a)
{
    a->t++;
    a->c1 = 1.0 - pow(a->b1, (double)a->t);
    a->c2 = 1.0 - pow(a->b2, (double)a->t);
}

void mf__adam_apply(struct mf_adam *a, float *param, float *g, size_t off, size_t n)
{
    float b1 = (float)a->b1, b2 = (float)a->b2;
    float step = (float)(a->lr / a->c1), c2 = (float)a->c2, eps = (float)a->eps;
    float *m = a->m + off, *v = a->v + off, *p = param + off, *gg = g + off;
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1 - b1) * gg[i];
        v[i] = b2 * v[i] + (1 - b2) * gg[i] * gg[i];
        p[i] -= step * m[i] / (sqrtf(v[i] / c2) + eps);
        gg[i] = 0;
    }
}

/* ---------------------------------------------------------------- ALS gram and fold-in */

void als_gram(const float *V, int32_t nitems, int dim, float *VtV)
{
    const struct mf_kernels *k = mf__kernels();
    size_t dd = (size_t)dim * dim;
    double *acc = calloc(dd, sizeof *acc);
    float *blk = calloc(dd, sizeof *blk);
    if (acc == NULL || blk == NULL) {
        /* no memory for the blocked sum: a direct double sum still gives the right answer */
        for (int a = 0; a < dim; a++)
            for (int b = 0; b < dim; b++) {
                double s = 0;
                for (int32_t i = 0; i < nitems; i++)
                    s += (double)V[(size_t)i * dim + a] * V[(size_t)i * dim + b];
                VtV[(size_t)a * dim + b] = (float)s;
            }
        free(acc);
        free(blk);
        return;
    }
    /* float rank-1 updates in blocks of 256 rows (fast), blocks summed in double (accurate) */
    for (int32_t i0 = 0; i0 < nitems; i0 += 256) {
        int32_t i1 = i0 + 256 < nitems ? i0 + 256 : nitems;
        for (int32_t i = i0; i < i1; i++) {
            const float *v = V + (size_t)i * dim;
            for (int a = 0; a < dim; a++)
                if (v[a] != 0)
                    k->axpy(blk + (size_t)a * dim, v[a], v, dim);
        }
        for (size_t e = 0; e < dd; e++) {
            acc[e] += blk[e];
            blk[e] = 0;
        }
    }
    for (size_t e = 0; e < dd; e++)
        VtV[e] = (float)acc[e];
    free(acc);
    free(blk);
}

int als_fold_in(const float *V, int32_t nitems, int dim, const float *VtV, const int32_t *items,
                const float *weights, int n, double reg, double alpha, float *u_out)
{
    if (dim < 1 || dim > MF_MAX_DIM || n < 0)
        return -EINVAL;
    for (int j = 0; j < n; j++)
        if (items[j] < 0 || items[j] >= nitems)
            return -EINVAL;
    size_t dd = (size_t)dim * dim;
    double *A = malloc(dd * sizeof *A), *b = calloc((size_t)dim, sizeof *b),
           *x = malloc((size_t)dim * sizeof *x);
    if (!A || !b || !x) {
        free(A);
        free(b);
        free(x);
        return -ENOMEM;
    }
    for (size_t e = 0; e < dd; e++)
        A[e] = VtV[e];
    for (int a = 0; a < dim; a++)
        A[(size_t)a * dim + a] += reg;
    for (int j = 0; j < n; j++) {
        const float *v = V + (size_t)items[j] * dim;
        double w = weights[j], c = 1.0 + alpha * fabs(w), p = w > 0 ? 1.0 : 0.0;
        for (int a = 0; a < dim; a++) {
            for (int bb = 0; bb < dim; bb++)
                A[(size_t)a * dim + bb] += (c - 1.0) * v[a] * v[bb];
            b[a] += c * p * v[a];
        }
    }
    int rc = mf__cholesky_solve(A, dim, b, x);
    if (rc == 0)
        for (int a = 0; a < dim; a++)
            u_out[a] = (float)x[a];
    free(A);
    free(b);
    free(x);
    return rc < 0 ? -EINVAL : 0;
}
