/* Internals shared by the mf engine's files (mf.c, als.c, twotower.c, lightgcn.c, eval.c):
 * vector kernels with an AVX2/FMA path chosen at run time, a seeded RNG, Cholesky, Adam. Not
 * for use outside src/engines/mf*.c, als.c, twotower.c, lightgcn.c, eval.c. */
#ifndef TS_MF_INT_H
#define TS_MF_INT_H
#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"

#include "engines/mf.h"

/* ---- kernels (float, any alignment) ---- */
struct mf_kernels {
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *y, float a, const float *x, int n); /* y += a x */
};
/* The kernels for this CPU (chosen once). */
const struct mf_kernels *mf__kernels(void);

/* ---- RNG: xoshiro256** seeded through splitmix64 ---- */
struct mf_rng {
    struct rng r;  /* src/core/rng.h */
};
void mf__rng_seed(struct mf_rng *r, uint64_t seed);
uint64_t mf__rng_next(struct mf_rng *r);
/* Uniform in [0, n), n >= 1 (Lemire's multiply-shift, bias below 2^-32 for our sizes). */
uint32_t mf__rng_below(struct mf_rng *r, uint32_t n);
double mf__rng_uniform(struct mf_rng *r); /* [0, 1) */
double mf__rng_normal(struct mf_rng *r);  /* standard normal (Box-Muller) */
/* Fills n floats with N(0, scale^2). */
void mf__rng_fill_normal(struct mf_rng *r, float *x, size_t n, double scale);

/* ---- dense linear algebra (double, small d) ----
 * Solves A x = b for symmetric positive definite A (d x d, row-major), overwriting A with its
 * Cholesky factor. -EDOM if A is not positive definite. */
int mf__cholesky_solve(double *A, int d, const double *b, double *x);

/* ---- Adam (Kingma & Ba 2015) over a float parameter array ----
 * Dense parameters step every element; sparse rows (embeddings) step only rows touched in the
 * batch, with the bias corrections of the global step count (lazy Adam). */
struct mf_adam {
    float *m, *v;                /* same size as the parameters */
    double lr, b1, b2, eps;
    int64_t t;                   /* steps taken */
    double c1, c2;               /* 1 - b1^t, 1 - b2^t for the current t */
};
int mf__adam_init(struct mf_adam *a, size_t n, double lr);
void mf__adam_free(struct mf_adam *a);
void mf__adam_tick(struct mf_adam *a);  /* t++ and the bias corrections; once per batch */
/* param[i] -= step for g[i], i in [off, off + n); g is zeroed as it is consumed. */
void mf__adam_apply(struct mf_adam *a, float *param, float *g, size_t off, size_t n);

/* ---- helpers ---- */
static inline int mf__cancelled(const struct mf_opts *o)
{
    return o->cancel && atomic_load_explicit(o->cancel, memory_order_relaxed);
}
/* Samples an item with no positive entry in row u (a BPR negative); falls back to any item
 * after a few tries when the row covers almost everything. */
int32_t mf__sample_negative(const struct mf_csr *R, int32_t u, struct mf_rng *rng);
/* Binary search for column c in row r; true if present with a value > 0. */
int mf__row_has_positive(const struct mf_csr *R, int32_t r, int32_t c);
#endif
