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

/* vec_topk_q8 against vec_topk on the same matrix and query: the same count, rows and
 * scores to the bit. */
static int q8_compared;

static void check_q8_same(const struct vec_q8 *z, const float *M, int n, int d, const float *q,
                          int k, bool (*skip)(void *, int), void *arg)
{
    int *r1 = malloc(sizeof *r1 * VEC_MAX_K), *r2 = malloc(sizeof *r2 * VEC_MAX_K);
    float *s1 = malloc(sizeof *s1 * VEC_MAX_K), *s2 = malloc(sizeof *s2 * VEC_MAX_K);
    int n1 = vec_topk(M, n, d, q, k, skip, arg, r1, s1);
    int n2 = vec_topk_q8(z, M, q, k, skip, arg, r2, s2);
    CHECK_INT(n2, n1);
    int bad = 0;
    for (int i = 0; i < n1 && i < n2; i++)
        bad += r1[i] != r2[i] || memcmp(&s1[i], &s2[i], sizeof(float)) != 0;
    if (bad)
        fprintf(stderr, "q8: n %d d %d k %d: %d of %d places differ\n", n, d, k, bad, n1);
    CHECK_INT(bad, 0);
    q8_compared++;
    free(r1), free(r2), free(s1), free(s2);
}

/* Random, clustered (near ties), duplicated (exact ties), scaled and non-finite rows; many
 * shapes of n, d and k; with and without skips; the zero and a non-finite query. */
static void test_q8(void)
{
    static const int dims[] = {1, 7, 8, 37, 64, 128, 200};
    static const int sizes[] = {1, 3, 5, 257, 4099};
    static const int ks[] = {1, 10, 100};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (size_t ni = 0; ni < sizeof sizes / sizeof sizes[0]; ni++) {
            int d = dims[di], n = sizes[ni];
            float *M = vec_alloc((size_t)n, (size_t)d), *q = vec_alloc(1, (size_t)d);
            for (int r = 0; r < n; r++) {
                float *x = M + (size_t)r * d;
                int kind = r % 5;
                for (int i = 0; i < d; i++)
                    x[i] = kind == 0 ? frand() : kind == 1 ? 0.5f + 0.001f * frand()
                           : kind == 2 ? M[(size_t)(r / 2) * d + i] /* a copy of an earlier row */
                           : kind == 3 ? 1000.0f * frand() : 1e-6f * frand();
            }
            if (n > 4)
                M[(size_t)3 * d] = NAN, M[(size_t)4 * d] = INFINITY;
            for (int i = 0; i < d; i++)
                q[i] = frand();
            struct vec_q8 *z = vec_q8_build(M, n, d);
            CHECK(z != NULL);
            CHECK(vec_q8_bytes(z) >= (size_t)n * (size_t)d);
            for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
                check_q8_same(z, M, n, d, q, ks[ki], NULL, NULL);
                check_q8_same(z, M, n, d, q, ks[ki], skip_mod3, NULL);
            }
            memset(q, 0, sizeof(float) * (size_t)d);
            check_q8_same(z, M, n, d, q, 10, NULL, NULL);
            q[0] = NAN;
            check_q8_same(z, M, n, d, q, 10, NULL, NULL);
            vec_q8_free(z);
            vec_free(q);
            vec_free(M);
        }
    /* trained-model shapes: 20,000 clustered rows x 128, many queries, skipping the query's
     * own cluster as serving skips seen items */
    enum { N = 20000, D = 128, C = 50 };
    float *M = vec_alloc(N, D), *cent = vec_alloc(C, D), *q = vec_alloc(1, D);
    for (size_t i = 0; i < (size_t)C * D; i++)
        cent[i] = frand();
    for (int r = 0; r < N; r++)
        for (int i = 0; i < D; i++)
            M[(size_t)r * D + i] = cent[(size_t)(r % C) * D + i] + 0.2f * frand();
    struct vec_q8 *z = vec_q8_build(M, N, D);
    int skip_rows[64];
    for (int t = 0; t < 40; t++) {
        for (int i = 0; i < D; i++)
            q[i] = cent[(size_t)(t % C) * D + i] + 0.1f * frand();
        for (int j = 0; j < 63; j++)
            skip_rows[j] = (t % C) + C * j;
        skip_rows[63] = -1;
        check_q8_same(z, M, N, D, q, 10, skip_listed, skip_rows);
        check_q8_same(z, M, N, D, q, 50, NULL, NULL);
    }
    vec_q8_free(z);
    CHECK(vec_q8_build(M, N, 0) == NULL);
    CHECK(vec_q8_build(M, 1, VEC_Q8_MAX_DIM + 1) == NULL);
    CHECK(vec_q8_free(NULL) == NULL);
    vec_free(q);
    vec_free(cent);
    vec_free(M);
}

/* A batch through the codes: each query gets vec_topk's answer with its own k and skip,
 * including a zero query and k = 0 beside the others. */
static void test_q8_batch(void)
{
    enum { N = 5000, D = 96, NQ = 9 };
    float *M = vec_alloc(N, D), *Q = vec_alloc(NQ, D);
    for (size_t i = 0; i < (size_t)N * D; i++)
        M[i] = frand();
    for (size_t i = 0; i < (size_t)NQ * D; i++)
        Q[i] = i / D == 4 ? 0 : frand();
    struct vec_q8 *z = vec_q8_build(M, N, D);
    const float *qv[NQ];
    int ks[NQ], counts[NQ], *rows[NQ];
    float *scores[NQ];
    struct vec_query qs[NQ];
    for (int i = 0; i < NQ; i++) {
        qv[i] = Q + (size_t)i * D;
        ks[i] = i == 7 ? 0 : 1 + i * 13;
        qs[i] = (struct vec_query){i % 3 == 0 ? NULL : i % 3 == 1 ? skip_mod3 : skip_even, NULL};
        rows[i] = malloc(sizeof(int) * 200);
        scores[i] = malloc(sizeof(float) * 200);
    }
    CHECK_INT(vec_topk_q8_batch(z, M, qv, NQ, ks, qs, rows, scores, counts), 0);
    for (int i = 0; i < NQ; i++) {
        int r1[200];
        float s1[200];
        int n1 = vec_topk(M, N, D, qv[i], ks[i], qs[i].skip, NULL, r1, s1);
        CHECK_INT(counts[i], n1);
        for (int j = 0; j < n1 && j < counts[i]; j++) {
            CHECK_INT(rows[i][j], r1[j]);
            CHECK(memcmp(&scores[i][j], &s1[j], sizeof(float)) == 0);
        }
        q8_compared++;
    }
    CHECK_INT(vec_topk_q8_batch(z, M, qv, 0, ks, qs, rows, scores, counts), -1);
    CHECK_INT(vec_topk_q8_batch(z, M, qv, VEC_MAX_BATCH + 1, ks, qs, rows, scores, counts), -1);
    for (int i = 0; i < NQ; i++)
        free(rows[i]), free(scores[i]);
    vec_q8_free(z);
    vec_free(Q);
    vec_free(M);
}

/* The two traps below: row "up" (TRAP_FILL) and row "down" after it among filler rows that
 * point away from q (largest component 1 in dim 0, as the trap rows); the trap rows are not
 * among the last N % 8, so the vector code bounds them. vec_topk must rank "up" first (the
 * trap is set) and vec_topk_q8 must agree with it. */
enum { TRAP_D = 128, TRAP_FILL = 300, TRAP_N = TRAP_FILL + 7 };

static void trap_check(float *M, const float *q, float fill_scale, float fill_spread)
{
    for (int r = 0; r < TRAP_N; r++) {
        if (r == TRAP_FILL || r == TRAP_FILL + 1)
            continue;
        M[(size_t)r * TRAP_D] = 1.0f;
        for (int i = 1; i < TRAP_D; i++)
            M[(size_t)r * TRAP_D + i] = -q[i] * fill_scale * (1 + frand() * fill_spread);
    }
    struct vec_q8 *z = vec_q8_build(M, TRAP_N, TRAP_D);
    int row;
    float score;
    CHECK_INT(vec_topk(M, TRAP_N, TRAP_D, q, 1, NULL, NULL, &row, &score), 1);
    CHECK_INT(row, TRAP_FILL);
    check_q8_same(z, M, TRAP_N, TRAP_D, q, 1, NULL, NULL);
    vec_q8_free(z);
}

/* Rows built so the int8 pre-scan ranks them the wrong way round by almost the whole error
 * bound: every code of row "up" is rounded down by 0.499 of a step in the direction of the
 * query's component, every code of row "down" up by 0.499, half of its codes one step higher.
 * The int8 scores favour "down" by half of sum|v| steps; the true scores favour "up". Only a
 * bound at least that wide keeps "up" a candidate (a bound a third as wide, or one without
 * its row term, returns "down"). Filler rows point away from the query. */
static void test_q8_adversarial(void)
{
    enum { D = TRAP_D, FILL = TRAP_FILL };
    float *M = vec_alloc(TRAP_N, D), *q = vec_alloc(1, D);
    const float s = 1.0f / 127; /* every row's largest component is 1 (dim 0): scale 1/127 */
    for (int trial = 0; trial < 20; trial++) {
        int sign[D], base[D];
        q[0] = 0;
        sign[0] = 1;
        for (int i = 1; i < D; i++) {
            int v = 50 + (int)((frand() + 1) * 38.5f); /* 50 .. 127 */
            sign[i] = frand() < 0 ? -1 : 1;
            q[i] = (float)(sign[i] * (i == 1 ? 127 : v)) / 127;
            base[i] = (int)((frand() + 1) * 2.5f) - 2; /* -2 .. 2 */
        }
        float *up = M + (size_t)FILL * D, *down = up + D;
        up[0] = down[0] = 1.0f;
        for (int i = 1; i < D; i++) {
            up[i] = s * ((float)base[i] + 0.499f * (float)sign[i]);
            down[i] = s * ((float)base[i] + (i % 2 ? 0.501f : -0.499f) * (float)sign[i]);
        }
        trap_check(M, q, s, 0.5f);
    }
    vec_free(q);
    vec_free(M);
}

/* The same trap on the query's side: the rows' codes are exact and every component of the
 * query but one lies 0.499 of a step past its code, in the direction of row "up"'s codes.
 * The int8 scores favour "down" by about 1,000 steps, more than the row term of the bound
 * covers; the true scores favour "up". Only the query term of the bound keeps "up". */
static void test_q8_adversarial_query(void)
{
    enum { D = TRAP_D, FILL = TRAP_FILL };
    float *M = vec_alloc(TRAP_N, D), *q = vec_alloc(1, D);
    for (int trial = 0; trial < 20; trial++) {
        float *up = M + (size_t)FILL * D, *down = up + D;
        q[0] = 0, q[1] = 1.0f; /* max |q| = 1: t = 1/127, and q[1] has no error */
        up[0] = down[0] = 1.0f;  /* every row's scale: 1/127 */
        up[1] = 0, down[1] = 58.0f / 127;
        for (int i = 2; i < D; i++) {
            float sg = frand() < 0 ? -1.0f : 1.0f;
            q[i] = sg * 1.499f / 127; /* code 1, error +0.499 t towards sg */
            up[i] = sg * 100.0f / 127;
            down[i] = sg * 50.0f / 127;
        }
        trap_check(M, q, 0.5f, 0.5f);
    }
    vec_free(q);
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
        /* each integer kernel this CPU has, under this float kernel */
        enum vec_q8_kernel qk[3] = {VEC_Q8_PORTABLE, VEC_Q8_AVX2, VEC_Q8_VNNI};
        for (int j = 0; j < 3; j++)
            if (vec_q8_kernel_set(qk[j]) == qk[j]) {
                test_q8();
                test_q8_adversarial();
                test_q8_adversarial_query();
                test_q8_batch();
            }
        vec_q8_kernel_set(VEC_Q8_VNNI);
    }
    fprintf(stderr, "q8: %d comparisons with vec_topk\n", q8_compared);
    CHECK(q8_compared > 0);
    test_kernels_agree();
    CHECK(vec_alloc(SIZE_MAX / 2, 4) == NULL);
    CHECK_DONE();
}
