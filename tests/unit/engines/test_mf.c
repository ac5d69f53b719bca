/* Unit tests for the mf engine: CSR building, the ALS objective against a brute-force sum over
 * every pair, ALS loss never increasing (Cholesky and CG), fold-in reproducing a trained user,
 * the gram matrix, the holdout split, full-ranking evaluation on a hand-computed case, and the
 * two-tower and LightGCN models beating popularity on a planted two-cluster matrix. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../check.h"
#include "engines/mf.h"

#define CHECK_NEAR(a, b, tol)                                                            \
    do {                                                                                 \
        double a_ = (a), b_ = (b);                                                       \
        if (!(fabs(a_ - b_) <= (tol))) {                                                 \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %.9g, expected %.9g\n",      \
                    __FILE__, __LINE__, #a, a_, b_);                                     \
            check_failures++;                                                            \
        }                                                                                \
    } while (0)

static uint64_t rs = 0x243f6a8885a308d3ull;
static double urand(void)
{
    rs ^= rs >> 12;
    rs ^= rs << 25;
    rs ^= rs >> 27;
    return (double)((rs * 0x2545f4914f6cdd1dull) >> 11) / 9007199254740992.0;
}

/* A random users x items matrix with weights from the interaction table's range. */
static void random_matrix(int32_t nu, int32_t ni, double density, struct mf_csr *R)
{
    static const float ws[] = {1, 2, 3, 5, -4, -2};
    size_t cap = (size_t)nu * ni, n = 0;
    int32_t *r = malloc(cap * sizeof *r), *c = malloc(cap * sizeof *c);
    float *w = malloc(cap * sizeof *w);
    for (int32_t u = 0; u < nu; u++)
        for (int32_t i = 0; i < ni; i++)
            if (urand() < density) {
                r[n] = u;
                c[n] = i;
                w[n] = ws[(int)(urand() * 6)];
                n++;
            }
    CHECK_INT(mf_csr_from_triplets(nu, ni, n, r, c, w, R), 0);
    free(r);
    free(c);
    free(w);
}

static void test_csr(void)
{
    int32_t r[] = {1, 0, 1, 1, 2}, c[] = {2, 1, 0, 2, 1};
    float w[] = {1, 2, 3, 4, -4};
    struct mf_csr a, t;
    CHECK_INT(mf_csr_from_triplets(3, 3, 5, r, c, w, &a), 0);
    CHECK_INT(a.nnz, 4);
    CHECK_INT(a.indptr[1], 1);
    CHECK_INT(a.indptr[2], 3);
    CHECK_INT(a.indices[1], 0);
    CHECK_INT(a.indices[2], 2);
    CHECK_NEAR(a.values[2], 5.0, 0); /* (1,2) twice: 1 + 4 */
    CHECK_INT(mf_csr_row_positives(&a, 2), 0);
    CHECK_INT(mf_csr_transpose(&a, &t), 0);
    CHECK_INT(t.nrows, 3);
    CHECK_INT(t.indptr[2] - t.indptr[1], 2); /* column 1: rows 0 and 2 */
    CHECK_INT(t.indices[t.indptr[1] + 1], 2);
    int32_t bad[] = {3};
    struct mf_csr x;
    CHECK_INT(mf_csr_from_triplets(3, 3, 1, bad, c, w, &x), -EINVAL);
    mf_csr_free(&a);
    mf_csr_free(&t);
}

/* The objective by its definition: every pair, c = 1 + alpha |w| where observed. */
static double brute_loss(const struct mf_csr *R, const float *U, const float *V, int d,
                         double reg, double alpha)
{
    double l = 0;
    for (int32_t u = 0; u < R->nrows; u++)
        for (int32_t i = 0; i < R->ncols; i++) {
            double w = 0, s = 0;
            int obs = 0;
            for (int64_t e = R->indptr[u]; e < R->indptr[u + 1]; e++)
                if (R->indices[e] == i) {
                    w = R->values[e];
                    obs = 1;
                }
            for (int a = 0; a < d; a++)
                s += (double)U[u * d + a] * V[i * d + a];
            double c = obs ? 1 + alpha * fabs(w) : 1, p = obs && w > 0 ? 1 : 0;
            l += c * (p - s) * (p - s);
        }
    for (int32_t u = 0; u < R->nrows * d; u++)
        l += reg * U[u] * U[u];
    for (int32_t i = 0; i < R->ncols * d; i++)
        l += reg * V[i] * V[i];
    return l;
}

struct losses {
    double v[64];
    int n;
};
static void record(void *arg, int epoch, double loss)
{
    struct losses *l = arg;
    if (l->n < 64 && epoch == l->n + 1)
        l->v[l->n++] = loss;
}

static void test_als(enum mf_solver solver)
{
    struct mf_csr R;
    random_matrix(25, 18, 0.3, &R);
    int d = 4;
    float *U = malloc(25 * d * sizeof *U), *V = malloc(18 * d * sizeof *V);
    struct losses l = {.n = 0};
    struct mf_opts o = {.dim = d, .epochs = 15, .reg = 0.1, .alpha = 2.0, .seed = 7,
                        .solver = solver, .cg_steps = 3, .on_epoch = record, .arg = &l};
    CHECK_INT(als_train(&R, &o, U, V), 0);
    CHECK_INT(l.n, 15);
    for (int e = 1; e < l.n; e++)
        CHECK(l.v[e] <= l.v[e - 1] * (1 + 1e-6));
    CHECK(l.v[l.n - 1] < l.v[0]);
    double bl = brute_loss(&R, U, V, d, 0.1, 2.0);
    CHECK_NEAR(als_loss(&R, U, V, d, 0.1, 2.0), bl, 1e-4 * bl);
    CHECK_NEAR(l.v[l.n - 1], bl, 1e-4 * bl);

    /* fold-in of every user from its own row reproduces the trained vector */
    float VtV[16], u[4];
    als_gram(V, 18, d, VtV);
    double worst = 0;
    for (int32_t r = 0; r < R.nrows; r++) {
        int n = (int)(R.indptr[r + 1] - R.indptr[r]);
        CHECK_INT(als_fold_in(V, 18, d, VtV, R.indices + R.indptr[r], R.values + R.indptr[r], n,
                              0.1, 2.0, u),
                  0);
        for (int a = 0; a < d; a++)
            if (fabs(u[a] - U[r * d + a]) > worst)
                worst = fabs(u[a] - U[r * d + a]);
    }
    CHECK(worst < (solver == MF_SOLVER_CHOLESKY ? 1e-4 : 2e-2));
    int32_t oob = 18;
    float w1 = 1;
    CHECK_INT(als_fold_in(V, 18, d, VtV, &oob, &w1, 1, 0.1, 2.0, u), -EINVAL);
    free(U);
    free(V);
    mf_csr_free(&R);
}

static void test_gram(void)
{
    float V[] = {1, 2, 3, -1, 0.5f, 4, 0, 1, -2};
    float G[9];
    als_gram(V, 3, 3, G);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            double s = 0;
            for (int i = 0; i < 3; i++)
                s += V[i * 3 + a] * V[i * 3 + b];
            CHECK_NEAR(G[a * 3 + b], s, 1e-6);
        }
}

static void test_split(void)
{
    struct mf_csr R, tr, te;
    random_matrix(40, 30, 0.4, &R);
    CHECK_INT(mf_split_holdout(&R, NULL, 0.2, 3, &tr, &te), 0);
    CHECK_INT(tr.nnz + te.nnz, R.nnz);
    for (int32_t r = 0; r < R.nrows; r++) {
        int32_t p = mf_csr_row_positives(&R, r), t = mf_csr_row_positives(&te, r);
        int32_t want = p < 2 ? 0 : (int32_t)llround(0.2 * p);
        if (p >= 2 && want < 1)
            want = 1;
        if (p >= 2 && want > p - 1)
            want = p - 1;
        CHECK_INT(t, want);
        CHECK_INT(te.indptr[r + 1] - te.indptr[r], t); /* only positives are held out */
    }
    mf_csr_free(&R);
    mf_csr_free(&tr);
    mf_csr_free(&te);

    /* most recent: row 0 has five positives and a dislike; round(0.2 * 5) = 1 held out, the
     * latest (column 3 at t=50 ties column 1 at t=50: the higher column goes); row 1 has one
     * positive: nothing held out. */
    int32_t r[] = {0, 0, 0, 0, 0, 0, 1}, c[] = {0, 1, 2, 3, 4, 5, 0};
    float w[] = {1, 2, 1, 5, 1, -4, 1};
    int64_t when[] = {10, 50, 20, 50, 30, 99, 5};
    CHECK_INT(mf_csr_from_triplets(2, 6, 7, r, c, w, &R), 0);
    CHECK_INT(mf_split_holdout(&R, when, 0.2, 0, &tr, &te), 0);
    CHECK_INT(te.nnz, 1);
    CHECK_INT(te.indices[0], 3);
    CHECK_INT(tr.nnz, 6);
    mf_csr_free(&R);
    mf_csr_free(&tr);
    mf_csr_free(&te);
}

/* Worked by hand: dim 1, V = 5 4 3 2 1, users +1 / -1 / +1, k = 2.
 * user 0: train {0}, test {2, 4}: ranked 1 2 -> one hit at rank 2: recall 1/2,
 *         NDCG (1/log2 3) / (1 + 1/log2 3) = 0.386852807
 * user 1: train {3}, test {4}: ranked 4 2 -> hit at rank 1: recall 1, NDCG 1
 * user 2: train {0, 1, 2}, no test: not evaluated.
 * popularity (train positives): 0:2, 1:1, 2:1, 3:1, 4:0 -> order 0 1 2 3 4;
 *         user 0 gets 1 2 (recall 1/2, NDCG 0.386852807), user 1 gets 0 1 (0, 0). */
static void test_eval(void)
{
    float U[] = {1, -1, 1}, V[] = {5, 4, 3, 2, 1};
    int32_t tr_r[] = {0, 1, 2, 2, 2}, tr_c[] = {0, 3, 0, 1, 2};
    int32_t te_r[] = {0, 0, 1}, te_c[] = {2, 4, 4};
    float ones[] = {1, 1, 1, 1, 1};
    struct mf_csr tr, te;
    CHECK_INT(mf_csr_from_triplets(3, 5, 5, tr_r, tr_c, ones, &tr), 0);
    CHECK_INT(mf_csr_from_triplets(3, 5, 3, te_r, te_c, ones, &te), 0);
    struct mf_eval e;
    CHECK_INT(mf_eval_full(U, V, 1, &tr, &te, 2, 0, 1, &e), 0);
    double nd0 = (1 / log2(3)) / (1 + 1 / log2(3));
    CHECK_INT(e.users, 2);
    CHECK_NEAR(e.recall, 0.75, 1e-12);
    CHECK_NEAR(e.ndcg, (nd0 + 1) / 2, 1e-9);
    CHECK_NEAR(e.pop_recall, 0.25, 1e-12);
    CHECK_NEAR(e.pop_ndcg, nd0 / 2, 1e-9);
    CHECK_INT(mf_eval_full(U, V, 1, &tr, &te, 0, 0, 1, &e), -EINVAL);
    mf_csr_free(&tr);
    mf_csr_free(&te);
}

/* Two taste clusters over 40 items; cluster 0 has three times the users, so popularity
 * recommends cluster-0 items to everyone and misses cluster 1. */
static void planted(struct mf_csr *R, float *features, int fdim)
{
    int32_t nu = 80, ni = 40;
    size_t cap = (size_t)nu * ni, n = 0;
    int32_t *r = malloc(cap * sizeof *r), *c = malloc(cap * sizeof *c);
    float *w = malloc(cap * sizeof *w);
    for (int32_t u = 0; u < nu; u++) {
        int cl = u < 60 ? 0 : 1;
        for (int32_t i = 0; i < ni; i++) {
            double p = (i % 2 == cl) ? 0.45 : 0.03;
            if (urand() < p) {
                r[n] = u;
                c[n] = i;
                w[n] = urand() < 0.3 ? 5 : 1;
                n++;
            }
        }
    }
    CHECK_INT(mf_csr_from_triplets(nu, ni, n, r, c, w, R), 0);
    for (int32_t i = 0; features && i < ni; i++)
        for (int a = 0; a < fdim; a++)
            features[i * fdim + a] = (float)((a == i % 2 ? 1.0 : 0.0) + 0.1 * (urand() - 0.5));
    free(r);
    free(c);
    free(w);
}

static void test_sgd_models(void)
{
    float F[40 * 4];
    struct mf_csr R, tr, te;
    planted(&R, F, 4);
    CHECK_INT(mf_split_holdout(&R, NULL, 0.2, 11, &tr, &te), 0);
    int d = 8;
    float *U = malloc(80 * d * sizeof *U), *V = malloc(40 * d * sizeof *V);
    struct mf_eval e;
    struct losses l = {.n = 0};
    struct mf_opts o = {.dim = d, .epochs = 30, .learning_rate = 0.02, .reg = 0.001, .seed = 5,
                        .batch = 128, .on_epoch = record, .arg = &l};
    CHECK_INT(two_tower_train(&tr, F, 4, &o, U, V), 0);
    CHECK_INT(l.n, 30);
    CHECK(l.v[l.n - 1] < l.v[0]);
    CHECK_INT(mf_eval_full(U, V, d, &tr, &te, 10, 0, 1, &e), 0);
    fprintf(stderr, "two-tower recall %.3f ndcg %.3f, popularity %.3f %.3f\n", e.recall, e.ndcg,
            e.pop_recall, e.pop_ndcg);
    CHECK(e.recall > e.pop_recall + 0.05);

    l.n = 0;
    o.layers = 2;
    CHECK_INT(lightgcn_train(&tr, &o, U, V), 0);
    CHECK_INT(l.n, 30);
    CHECK(l.v[l.n - 1] < l.v[0]);
    CHECK_INT(mf_eval_full(U, V, d, &tr, &te, 10, 0, 1, &e), 0);
    fprintf(stderr, "lightgcn recall %.3f ndcg %.3f, popularity %.3f %.3f\n", e.recall, e.ndcg,
            e.pop_recall, e.pop_ndcg);
    CHECK(e.recall > e.pop_recall + 0.05);

    struct mf_opts oa = {.dim = d, .epochs = 10, .reg = 0.1, .alpha = 5, .seed = 5};
    CHECK_INT(als_train(&tr, &oa, U, V), 0);
    CHECK_INT(mf_eval_full(U, V, d, &tr, &te, 10, 0, 1, &e), 0);
    fprintf(stderr, "als recall %.3f ndcg %.3f, popularity %.3f %.3f\n", e.recall, e.ndcg,
            e.pop_recall, e.pop_ndcg);
    CHECK(e.recall > e.pop_recall + 0.05);

    /* a set cancel flag stops training at once */
    atomic_bool stop = true;
    o.cancel = &stop;
    CHECK_INT(lightgcn_train(&tr, &o, U, V), -ECANCELED);
    CHECK_INT(two_tower_train(&tr, F, 4, &o, U, V), -ECANCELED);
    oa.cancel = &stop;
    CHECK_INT(als_train(&tr, &oa, U, V), -ECANCELED);
    free(U);
    free(V);
    mf_csr_free(&R);
    mf_csr_free(&tr);
    mf_csr_free(&te);
}

int main(void)
{
    test_csr();
    test_gram();
    test_als(MF_SOLVER_CHOLESKY);
    test_als(MF_SOLVER_CG);
    test_split();
    test_eval();
    test_sgd_models();
    CHECK_DONE();
}
