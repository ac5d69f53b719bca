/* Unit tests for the vector engine: dot products against a double-precision sum, top-k against
 * a brute-force full sort (with and without a skip predicate, k above n, ties), and the AVX2
 * and portable kernels agreeing. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "../check.h"
#include "engines/vec.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float frand(void) /* uniform in [-1, 1) from xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t x = rng_state * 0x2545f4914f6cdd1dull;
    return (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static double dot_ref(const float *a, const float *b, int d)
{
    double s = 0;
    for (int i = 0; i < d; i++)
        s += (double)a[i] * b[i];
    return s;
}

struct ref {
    double score;
    int row;
};

static int ref_cmp(const void *pa, const void *pb)
{
    const struct ref *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->row - b->row;
}

static bool skip_mod3(void *arg, int row)
{
    (void)arg;
    return row % 3 == 1;
}

static bool skip_listed(void *arg, int row)
{
    const int *list = arg;
    for (int i = 0; list[i] >= 0; i++)
        if (list[i] == row)
            return true;
    return false;
}

/* Brute force: every row scored in double, sorted; the top k not skipped. */
static int topk_ref(const float *M, int n, int d, const float *q, int k,
                    bool (*skip)(void *, int), void *arg, struct ref *out)
{
    struct ref *all = malloc(sizeof *all * (size_t)n);
    int m = 0;
    for (int r = 0; r < n; r++)
        if (!skip || !skip(arg, r))
            all[m++] = (struct ref){dot_ref(M + (size_t)r * d, q, d), r};
    qsort(all, (size_t)m, sizeof *all, ref_cmp);
    int got = m < k ? m : k;
    for (int i = 0; i < got; i++)
        out[i] = all[i];
    free(all);
    return got;
}

/* vec_topk equals the brute force: same count, same scores (to float rounding), and the same
 * rows wherever neighbouring reference scores are not within rounding of each other. */
static void check_topk(int n, int d, int k, bool (*skip)(void *, int), void *arg)
{
    float *M = vec_alloc((size_t)n, (size_t)d);
    float *q = vec_alloc(1, (size_t)d);
    CHECK(M != NULL && q != NULL);
    CHECK(((uintptr_t)M % VEC_ALIGN) == 0);
    for (size_t i = 0; i < (size_t)n * d; i++)
        M[i] = frand();
    for (int i = 0; i < d; i++)
        q[i] = frand();
    int *rows = malloc(sizeof(int) * (size_t)(k > 0 ? k : 1));
    float *scores = malloc(sizeof(float) * (size_t)(k > 0 ? k : 1));
    struct ref *ref = malloc(sizeof *ref * (size_t)(k > 0 ? k : 1));
    int got = vec_topk(M, n, d, q, k, skip, arg, rows, scores);
    int want = topk_ref(M, n, d, q, k, skip, arg, ref);
    CHECK_INT(got, want);
    const double eps = 1e-4;
    for (int i = 0; i < got && i < want; i++) {
        CHECK(fabs(scores[i] - ref[i].score) < eps);
        bool near_prev = i > 0 && fabs(ref[i].score - ref[i - 1].score) < eps;
        bool near_next = i + 1 < want && fabs(ref[i].score - ref[i + 1].score) < eps;
        if (!near_prev && !near_next)
            CHECK_INT(rows[i], ref[i].row);
        if (i > 0)
            CHECK(scores[i] <= scores[i - 1]);
        if (skip)
            CHECK(!skip(arg, rows[i]));
    }
    free(rows);
    free(scores);
    free(ref);
    vec_free(q);
    vec_free(M);
}

static void test_dot(void)
{
    for (int d = 0; d <= 70; d++) {
        float a[70] = {0}, b[70] = {0};
        for (int i = 0; i < d; i++) {
            a[i] = frand();
            b[i] = frand();
        }
        CHECK(fabs(vec_dot(a, b, d) - dot_ref(a, b, d)) < 1e-5);
    }
    float v[5] = {3, 4, 0, 0, 0};
    CHECK(fabsf(vec_normalize(v, 5) - 5.0f) < 1e-6f);
    CHECK(fabsf(vec_norm(v, 5) - 1.0f) < 1e-6f);
    float z[3] = {0, 0, 0};
    CHECK(vec_normalize(z, 3) == 0.0f && z[0] == 0.0f);
}

static void test_topk_suite(void)
{
    check_topk(1000, 128, 10, NULL, NULL);
    check_topk(1000, 128, 10, skip_mod3, NULL);
    check_topk(777, 37, 25, NULL, NULL);      /* d not a multiple of 8: unaligned rows */
    check_topk(777, 37, 25, skip_mod3, NULL);
    check_topk(300, 8, 1, NULL, NULL);
    check_topk(5, 16, 10, NULL, NULL);        /* k > n: all n rows, best first */
    check_topk(5, 16, 10, skip_mod3, NULL);   /* k > rows not skipped */
    check_topk(2000, 64, 1000, NULL, NULL);   /* k at VEC_MAX_K */
    check_topk(600, 3, 100, NULL, NULL);      /* many near-ties */
    int listed[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, -1};
    check_topk(10, 4, 5, skip_listed, listed); /* everything skipped */
}

static void test_topk_edges(void)
{
    float M[4 * 2] = {1, 0, 0, 1, 1, 0, -1, 0};
    float q[2] = {1, 0};
    int rows[4];
    float sc[4];
    /* rows 0 and 2 tie at 1: the earlier row ranks first; row 1 scores 0, row 3 -1 */
    CHECK_INT(vec_topk(M, 4, 2, q, 4, NULL, NULL, rows, sc), 4);
    CHECK_INT(rows[0], 0);
    CHECK_INT(rows[1], 2);
    CHECK_INT(rows[2], 1);
    CHECK_INT(rows[3], 3);
    CHECK_INT(vec_topk(M, 4, 2, q, 0, NULL, NULL, rows, sc), 0);
    CHECK_INT(vec_topk(M, 0, 2, q, 3, NULL, NULL, rows, sc), 0);
    CHECK_INT(vec_topk(M, 4, 2, q, 1, NULL, NULL, rows, NULL), 1);
    CHECK_INT(rows[0], 0);
    /* a NaN row is left out */
    float N[3 * 2] = {NAN, 0, 0.5f, 0, 0.25f, 0};
    CHECK_INT(vec_topk(N, 3, 2, q, 3, NULL, NULL, rows, sc), 2);
    CHECK_INT(rows[0], 1);
    CHECK_INT(rows[1], 2);
}

/* Both kernels over the same data: the same rows and scores to rounding. */
static void test_kernels_agree(void)
{
    if (vec_kernel_set(VEC_KERNEL_AVX2) != VEC_KERNEL_AVX2) {
        fprintf(stderr, "note: no AVX2/FMA on this CPU; the portable kernel only\n");
        return;
    }
    enum { N = 5000, D = 128, K = 50 };
    float *M = vec_alloc(N, D), *q = vec_alloc(1, D);
    for (size_t i = 0; i < (size_t)N * D; i++)
        M[i] = frand();
    for (int i = 0; i < D; i++)
        q[i] = frand();
    int ra[K], rp[K];
    float sa[K], sp[K];
    vec_kernel_set(VEC_KERNEL_AVX2);
    float da = vec_dot(M, q, D);
    int na = vec_topk(M, N, D, q, K, skip_mod3, NULL, ra, sa);
    CHECK_INT(vec_kernel_set(VEC_KERNEL_PORTABLE), VEC_KERNEL_PORTABLE);
    CHECK_INT(vec_kernel_get(), VEC_KERNEL_PORTABLE);
    float dp = vec_dot(M, q, D);
    int np = vec_topk(M, N, D, q, K, skip_mod3, NULL, rp, sp);
    CHECK(fabsf(da - dp) < 1e-4f);
    CHECK_INT(na, K);
    CHECK_INT(np, K);
    for (int i = 0; i < K; i++) {
        CHECK(fabsf(sa[i] - sp[i]) < 1e-4f);
        bool tie = (i > 0 && fabsf(sp[i] - sp[i - 1]) < 1e-4f) ||
                   (i + 1 < K && fabsf(sp[i] - sp[i + 1]) < 1e-4f);
        if (!tie)
            CHECK_INT(ra[i], rp[i]);
    }
    vec_kernel_set(VEC_KERNEL_AUTO);
    vec_free(q);
    vec_free(M);
}

static bool skip_even(void *arg, int row)
{
    (void)arg;
    return row % 2 == 0;
}

/* Each query of a batch gets exactly vec_topk's answer, with its own skip predicate. */
static void test_batch(void)
{
    enum { N = 3001, D = 40, NQ = 7, K = 30 };
    float *M = vec_alloc(N, D), *Q = vec_alloc(NQ, D);
    for (size_t i = 0; i < (size_t)N * D; i++)
        M[i] = frand();
    for (size_t i = 0; i < (size_t)NQ * D; i++)
        Q[i] = frand();
    struct vec_query qs[NQ];
    for (int i = 0; i < NQ; i++)
        qs[i] = (struct vec_query){i % 3 == 0 ? NULL : i % 3 == 1 ? skip_mod3 : skip_even, NULL};
    int rows[NQ * K], counts[NQ];
    float scores[NQ * K];
    CHECK_INT(vec_topk_batch(M, N, D, Q, NQ, K, qs, rows, scores, counts), 0);
    for (int i = 0; i < NQ; i++) {
        int r1[K];
        float s1[K];
        int n1 = vec_topk(M, N, D, Q + (size_t)i * D, K, qs[i].skip, NULL, r1, s1);
        CHECK_INT(counts[i], n1);
        for (int j = 0; j < n1; j++) {
            CHECK_INT(rows[i * K + j], r1[j]);
            CHECK(scores[i * K + j] == s1[j]);
        }
    }
    /* k > n, one query, no skips, NULL scores */
    CHECK_INT(vec_topk_batch(M, 5, D, Q, 1, 10, NULL, rows, NULL, counts), 0);
    CHECK_INT(counts[0], 5);
    CHECK_INT(vec_topk_batch(M, N, D, Q, 0, K, NULL, rows, scores, counts), -1);
    CHECK_INT(vec_topk_batch(M, N, D, Q, VEC_MAX_BATCH + 1, K, NULL, rows, scores, counts), -1);
    vec_free(Q);
    vec_free(M);
}

int main(void)
{
    CHECK(vec_free(NULL) == NULL);
    /* every test under each kernel the CPU has */
    enum vec_kernel ks[2] = {VEC_KERNEL_PORTABLE, VEC_KERNEL_AVX2};
    for (int i = 0; i < 2; i++) {
        if (vec_kernel_set(ks[i]) != ks[i])
            continue;
        test_dot();
        test_topk_suite();
        test_topk_edges();
        test_batch();
    }
    test_kernels_agree();
    CHECK(vec_alloc(SIZE_MAX / 2, 4) == NULL);
    CHECK_DONE();
}
