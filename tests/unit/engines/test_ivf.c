/* Unit tests for the inverted-file index: on clustered data (the shape trained item vectors
 * have) its top 10 matches the exact top 10 of vec_topk for most rows, scores are the exact
 * dot products, the layout is a permutation of the matrix, skips starve nothing (with every
 * list probed the answer is exactly the exact one), the same seed builds the same index, and
 * the exact search gives vec_topk's answer to the bit while scoring few rows. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "engines/ivf.h"
#include "engines/vec.h"

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static double urand(void) /* uniform in [0, 1) from xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545f4914f6cdd1dull) >> 11) / 9007199254740992.0;
}

static float gauss(void) /* Box-Muller */
{
    double u = urand(), v = urand();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

enum { N = 20000, D = 64, CLUSTERS = 100, QUERIES = 200, K = 10 };

/* Rows around CLUSTERS random centres (spread 2 of a unit centre: they overlap), like item factors. */
static void clustered(float *M, float *centres)
{
    for (int c = 0; c < CLUSTERS; c++)
        for (int j = 0; j < D; j++)
            centres[c * D + j] = gauss() / sqrtf(D);
    for (int i = 0; i < N; i++) {
        int c = (int)(urand() * CLUSTERS);
        for (int j = 0; j < D; j++)
            M[(size_t)i * D + j] = centres[c * D + j] + 2.0f * gauss() / sqrtf(D);
    }
}

static bool skip_even(void *arg, int row)
{
    (void)arg;
    return row % 2 == 0;
}

static bool skip_most(void *arg, int row) /* only rows 5, 4005, 8005 .. survive */
{
    (void)arg;
    return row % 4000 != 5;
}

static void test_recall_and_scores(const struct ivf *ix, const float *M, const float *centres)
{
    int hits = 0, total = 0, exact_scores = 1;
    long scanned_sum = 0;
    for (int qi = 0; qi < QUERIES; qi++) {
        float q[D]; /* a user: a taste centre plus noise */
        const float *c = centres + (qi % CLUSTERS) * D;
        for (int j = 0; j < D; j++)
            q[j] = c[j] + 0.5f * gauss() / sqrtf(D);
        int er[K], ar[K], scanned;
        float es[K], as[K];
        int ne = vec_topk(M, N, D, q, K, NULL, NULL, er, es);
        int na = ivf_topk(ix, q, K, ix->nlist / 16, NULL, NULL, ar, as, &scanned);
        CHECK_INT(na, K);
        scanned_sum += scanned;
        for (int i = 0; i < na; i++) {
            if (fabsf(as[i] - vec_dot(M + (size_t)ar[i] * D, q, D)) > 1e-5f)
                exact_scores = 0;
            if (i > 0 && as[i] > as[i - 1])
                exact_scores = 0;
            for (int j = 0; j < ne; j++)
                if (ar[i] == er[j]) {
                    hits++;
                    break;
                }
        }
        total += ne;
    }
    double recall = (double)hits / total, frac = (double)scanned_sum / QUERIES / N;
    fprintf(stderr, "ivf: %d lists, probe %d: recall@10 %.3f scanning %.1f%% of rows\n",
            ix->nlist, ix->nlist / 16, recall, 100 * frac);
    CHECK(recall >= 0.95);
    CHECK(frac < 0.15); /* it is an index: most rows are not scored */
    CHECK(exact_scores);
}

static void test_layout(const struct ivf *ix, const float *M)
{
    CHECK_INT(ix->off[0], 0);
    CHECK_INT(ix->off[ix->nlist], N);
    char *seen = calloc(N, 1);
    int ok = 1;
    for (int p = 0; p < N; p++) {
        int r = ix->rows[p];
        if (r < 0 || r >= N || seen[r]++)
            ok = 0;
        else if (memcmp(ix->P + (size_t)p * D, M + (size_t)r * D, sizeof(float) * D) != 0)
            ok = 0;
    }
    CHECK(ok);
    free(seen);
}

static void test_skips(const struct ivf *ix, const float *M)
{
    float q[D];
    for (int j = 0; j < D; j++)
        q[j] = gauss();
    int ar[K], er[K];
    float as[K], es[K];
    /* every list probed: exactly vec_topk's answer, skip honoured */
    int na = ivf_topk(ix, q, K, ix->nlist, skip_even, NULL, ar, as, NULL);
    int ne = vec_topk(M, N, D, q, K, skip_even, NULL, er, es);
    CHECK_INT(na, ne);
    for (int i = 0; i < na && i < ne; i++) {
        CHECK_INT(ar[i], er[i]);
        CHECK(ar[i] % 2 == 1);
    }
    /* five survivors in the whole matrix: probing goes on until it has found them all */
    na = ivf_topk(ix, q, K, 1, skip_most, NULL, ar, as, NULL);
    CHECK_INT(na, 5);
    for (int i = 0; i < na; i++)
        CHECK_INT(ar[i] % 4000, 5);
    CHECK_INT(ivf_topk(ix, q, 0, 4, NULL, NULL, ar, as, NULL), 0);
}

/* ivf_topk_exact against vec_topk: the same rows, the same scores to the bit, on every query. */
static int exact_mismatches(const struct ivf *ix, const float *M, int n, int d, const float *q,
                            int k, bool (*skip)(void *, int), long *scored_sum)
{
    int ar[VEC_MAX_K], er[VEC_MAX_K], scored;
    float as[VEC_MAX_K], es[VEC_MAX_K];
    int na = ivf_topk_exact(ix, q, k, 0, skip, NULL, ar, as, &scored);
    int ne = vec_topk(M, n, d, q, k, skip, NULL, er, es);
    *scored_sum += scored;
    if (na != ne)
        return 1;
    for (int i = 0; i < na; i++)
        if (ar[i] != er[i] || memcmp(&as[i], &es[i], sizeof(float)) != 0)
            return 1;
    return 0;
}

static int exact_sweep(const struct ivf *ix, const float *M, int n, int d, const float *centres,
                       int ncentres, long *scored_sum, int *queries)
{
    static bool (*const skips[])(void *, int) = {NULL, skip_even, skip_most};
    static const int ks[] = {1, 10, 100};
    int bad = 0;
    float *q = malloc(sizeof(float) * (size_t)d);
    for (int t = 0; t < 60; t++) {
        for (int j = 0; j < d; j++) /* half near a centre (a user of a taste), half anywhere */
            q[j] = t % 2 ? gauss() : 3.0f * centres[(t * 7 % ncentres) * d + j] + 0.3f * gauss();
        for (size_t a = 0; a < sizeof(skips) / sizeof(skips[0]); a++)
            for (size_t b = 0; b < sizeof(ks) / sizeof(ks[0]); b++) {
                bad += exact_mismatches(ix, M, n, d, q, ks[b], skips[a], scored_sum);
                (*queries)++;
            }
    }
    free(q);
    return bad;
}

/* Overlapping clusters (the main data set), tight ones in an odd dimension with duplicate rows
 * (ties), a NaN row and rows lying exactly on the bound's edge (x - c along q: the bound holds
 * with equality in real numbers), a zero query, and the give-up; under both kernels. */
static void test_exact(const struct ivf *ix, const float *M, const float *centres)
{
    long scored = 0;
    int queries = 0;
    CHECK_INT(exact_sweep(ix, M, N, D, centres, CLUSTERS, &scored, &queries), 0);
    fprintf(stderr, "ivf exact, overlapping clusters: %.1f%% of rows scored\n",
            100.0 * (double)scored / ((double)queries * N));

    enum { N2 = 6000, D2 = 37, C2 = 40 };
    float *M2 = vec_alloc(N2, D2), *c2 = malloc(sizeof(float) * C2 * D2);
    for (int c = 0; c < C2; c++)
        for (int j = 0; j < D2; j++)
            c2[c * D2 + j] = gauss() / sqrtf(D2);
    for (int i = 0; i < N2; i++) {
        int c = (int)(urand() * C2);
        for (int j = 0; j < D2; j++)
            M2[(size_t)i * D2 + j] = c2[c * D2 + j] + 0.15f * gauss() / sqrtf(D2);
    }
    for (int i = 100; i < 160; i++) /* duplicates: equal scores, ordered by row */
        memcpy(M2 + (size_t)i * D2, M2 + (size_t)(i % 7) * D2, sizeof(float) * D2);
    M2[(size_t)777 * D2 + 3] = NAN;
    struct ivf x2;
    CHECK_INT(ivf_build(&x2, M2, N2, D2, 60, 8, 11), 0);
    scored = 0, queries = 0;
    CHECK_INT(exact_sweep(&x2, M2, N2, D2, c2, C2, &scored, &queries), 0);
    double frac = (double)scored / ((double)queries * N2);
    fprintf(stderr, "ivf exact, tight clusters: %.1f%% of rows scored\n", 100.0 * frac);
    CHECK(frac < 0.5); /* the point of it: most rows are never scored */

    /* rows on the edge: centroid c of some list, rows c + t q/|q| for the q asked, so that
     * q·x = q·c + |q| |x - c| exactly in real numbers */
    float q[D2];
    for (int j = 0; j < D2; j++)
        q[j] = gauss();
    float qn = vec_norm(q, D2);
    int l = 0, a = x2.off[l], len = x2.off[l + 1] - a;
    for (int p = 0; p < len; p++) {
        float *row = M2 + (size_t)x2.rows[a + p] * D2;
        for (int j = 0; j < D2; j++)
            row[j] = x2.C[j] + (0.5f + 0.001f * (float)p) * q[j] / qn;
    }
    struct ivf x3;
    CHECK_INT(ivf_build(&x3, M2, N2, D2, 60, 8, 11), 0);
    long s3 = 0;
    for (int k = 1; k <= 64; k *= 2)
        CHECK_INT(exact_mismatches(&x3, M2, N2, D2, q, k, NULL, &s3), 0);
    float zero[D2] = {0};
    CHECK_INT(exact_mismatches(&x3, M2, N2, D2, zero, 10, NULL, &s3), 0);
    int rows[10], seen;
    CHECK_INT(ivf_topk_exact(&x3, zero, 10, 100, NULL, NULL, rows, NULL, &seen), -1);
    CHECK(seen > 100 && seen <= 100 + 32);
    CHECK_INT(ivf_topk_exact(&x3, q, 0, 0, NULL, NULL, rows, NULL, &seen), 0);
    ivf_free(&x3);
    ivf_free(&x2);
    vec_free(M2);
    free(c2);
}

int main(void)
{
    float *M = vec_alloc(N, D), *centres = malloc(sizeof(float) * CLUSTERS * D);
    clustered(M, centres);
    struct ivf ix, again;
    CHECK_INT(ivf_build(&ix, M, N, D, ivf_nlist_for(N), 8, 7), 0);
    CHECK_INT(ix.nlist, ivf_nlist_for(N));
    test_layout(&ix, M);
    test_recall_and_scores(&ix, M, centres);
    test_skips(&ix, M);
    test_exact(&ix, M, centres);
    vec_kernel_set(VEC_KERNEL_PORTABLE); /* the same answers by the other kernel */
    test_exact(&ix, M, centres);
    vec_kernel_set(VEC_KERNEL_AUTO);
    CHECK_INT(ivf_build(&again, M, N, D, ix.nlist, 8, 7), 0);
    CHECK(memcmp(ix.rows, again.rows, sizeof(int32_t) * N) == 0);
    CHECK(memcmp(ix.off, again.off, sizeof(int32_t) * ((size_t)ix.nlist + 1)) == 0);
    ivf_free(&again);
    CHECK_INT(ivf_build(&again, M, 0, D, 4, 8, 7), -22); /* -EINVAL */
    /* more lists than rows: one row a list */
    CHECK_INT(ivf_build(&again, M, 3, D, 10, 2, 7), 0);
    CHECK_INT(again.nlist, 3);
    ivf_free(&again);
    ivf_free(&ix);
    vec_free(M);
    free(centres);
    CHECK_DONE();
}
