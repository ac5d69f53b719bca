/* Dense float vectors: dot products and exact inner-product top-k, AVX2/FMA or portable. */
#include "engines/vec.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define VEC_HAVE_X86 1
#else
#define VEC_HAVE_X86 0
#endif

/* Scores are computed a block of rows at a time into a stack buffer and then offered to the
 * heap, so the kernels stay small pure loops and the heap logic is written once. 256 rows of
 * scores is 1 KiB: in L1 beside the query. */
#define VEC_BLOCK 256

/* ---------- portable kernel ---------- */

static float dot_portable(const float *a, const float *b, int d)
{
    /* four independent sums so the adds pipeline (and the compiler may vectorise) */
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= d; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < d; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static void dots_portable(const float *M, int rows, int d, const float *q, float *out)
{
    for (int r = 0; r < rows; r++)
        out[r] = dot_portable(M + (size_t)r * (size_t)d, q, d);
}

/* ---------- AVX2/FMA kernel ---------- */

#if VEC_HAVE_X86
__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Unaligned loads: rows of a matrix whose d is not a multiple of 8 start anywhere, and on
 * aligned data loadu costs the same as load. */
__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int d)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= d; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= d; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < d; i++)
        s += a[i] * b[i];
    return s;
}

/* Four rows against q at once when d is a multiple of 8: each q load serves four FMAs and the
 * four horizontal sums share their shuffles, about twice the single-row speed at d = 128. */
__attribute__((target("avx2,fma"))) static void dots4_avx2(const float *M, int d, const float *q,
                                                           float *out)
{
    const float *r0 = M, *r1 = M + d, *r2 = M + 2 * (size_t)d, *r3 = M + 3 * (size_t)d;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    for (int i = 0; i < d; i += 8) {
        __m256 qv = _mm256_loadu_ps(q + i);
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + i), qv, s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(r1 + i), qv, s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(r2 + i), qv, s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(r3 + i), qv, s3);
    }
    /* pairwise: [s0 s1] and [s2 s3] interleaved, then the 128-bit halves */
    __m256 a = _mm256_hadd_ps(s0, s1), b = _mm256_hadd_ps(s2, s3);
    __m256 c = _mm256_hadd_ps(a, b);
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));
    _mm_storeu_ps(out, sum);
}

/* One row by dots4_avx2's arithmetic for that row (one accumulator, the same pairwise sum), so
 * that a row's score does not depend on whether it fell in a group of four: an index that scores
 * rows in another order (ivf_topk_exact) gets vec_topk's scores to the bit. d % 8 == 0. */
__attribute__((target("avx2,fma"))) static float dot1_avx2(const float *row, const float *q,
                                                           int d)
{
    __m256 s = _mm256_setzero_ps();
    for (int i = 0; i < d; i += 8)
        s = _mm256_fmadd_ps(_mm256_loadu_ps(row + i), _mm256_loadu_ps(q + i), s);
    __m256 a = _mm256_hadd_ps(s, s);
    __m256 c = _mm256_hadd_ps(a, a);
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps(c, 1));
    return _mm_cvtss_f32(sum);
}

__attribute__((target("avx2,fma"))) static void dots_avx2(const float *M, int rows, int d,
                                                          const float *q, float *out)
{
    int r = 0;
    if (d % 8 == 0 && d > 0)
        for (; r + 4 <= rows; r += 4) {
            const float *row = M + (size_t)r * (size_t)d;
            if (r + 8 < rows)
                _mm_prefetch((const char *)(row + 8 * (size_t)d), _MM_HINT_T0);
            dots4_avx2(row, d, q, out + r);
        }
    for (; r < rows; r++) {
        const float *row = M + (size_t)r * (size_t)d;
        /* the next rows are read sequentially; the hardware prefetcher follows a linear
         * scan, an explicit hint a few rows ahead helps it across page boundaries */
        if (r + 4 < rows)
            _mm_prefetch((const char *)(row + 4 * d), _MM_HINT_T0);
        out[r] = d % 8 == 0 && d > 0 ? dot1_avx2(row, q, d) : dot_avx2(row, q, d);
    }
}
#endif

/* ---------- kernel choice ---------- */

static _Atomic int kernel_in_use = VEC_KERNEL_AUTO;

static bool cpu_has_avx2(void)
{
#if VEC_HAVE_X86
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

enum vec_kernel vec_kernel_set(enum vec_kernel k)
{
    if (k == VEC_KERNEL_AUTO || k == VEC_KERNEL_AVX2)
        k = cpu_has_avx2() ? VEC_KERNEL_AVX2 : VEC_KERNEL_PORTABLE;
    atomic_store_explicit(&kernel_in_use, (int)k, memory_order_relaxed);
    return k;
}

enum vec_kernel vec_kernel_get(void)
{
    int k = atomic_load_explicit(&kernel_in_use, memory_order_relaxed);
    if (k == VEC_KERNEL_AUTO)
        return vec_kernel_set(VEC_KERNEL_AUTO);
    return (enum vec_kernel)k;
}

float vec_dot(const float *a, const float *b, int d)
{
    if (d <= 0)
        return 0;
#if VEC_HAVE_X86
    if (vec_kernel_get() == VEC_KERNEL_AVX2)
        return dot_avx2(a, b, d);
#endif
    return dot_portable(a, b, d);
}

static void dots(const float *M, int rows, int d, const float *q, float *out)
{
#if VEC_HAVE_X86
    if (vec_kernel_get() == VEC_KERNEL_AVX2) {
        dots_avx2(M, rows, d, q, out);
        return;
    }
#endif
    dots_portable(M, rows, d, q, out);
}

void vec_dots(const float *M, int rows, int d, const float *q, float *out)
{
    if (rows > 0 && d > 0)
        dots(M, rows, d, q, out);
}

float vec_norm(const float *a, int d)
{
    return sqrtf(vec_dot(a, a, d));
}

float vec_normalize(float *a, int d)
{
    float n = vec_norm(a, d);
    if (n > 0 && isfinite(n)) {
        float inv = 1.0f / n;
        for (int i = 0; i < d; i++)
            a[i] *= inv;
    }
    return n;
}

/* ---------- top-k ---------- */

/* a ranks below b: lower score, or the same score and a later row */
static bool cand_worse(struct vec_cand a, struct vec_cand b)
{
    return a.score < b.score || (a.score == b.score && a.row > b.row);
}

/* A min-heap on rank: h[0] is the worst of the kept rows. */
static void heap_sift_down(struct vec_cand *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && cand_worse(h[l], h[m]))
            m = l;
        if (r < n && cand_worse(h[r], h[m]))
            m = r;
        if (m == i)
            return;
        struct vec_cand t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void heap_sift_up(struct vec_cand *h, int i)
{
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_worse(h[i], h[p]))
            return;
        struct vec_cand t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static int cand_cmp_best_first(const void *pa, const void *pb)
{
    struct vec_cand a = *(const struct vec_cand *)pa, b = *(const struct vec_cand *)pb;
    if (cand_worse(a, b))
        return 1;
    if (cand_worse(b, a))
        return -1;
    return 0;
}

/* One query's running top k. */
struct topk {
    struct vec_cand *heap;
    int len, k;
};

/* Offers the scores of a block's rows to t: block row r is row ids[r] of the caller's
 * numbering, or base + r without ids. A candidate gets in when it ranks above the worst kept
 * one: a higher score, or an equal score and a lower row (with rows in ascending order, as in
 * a whole-matrix scan, only a strictly higher score). */
static void topk_offer(struct topk *t, const float *scores, const int32_t *ids, int base,
                       int rows, bool (*skip)(void *, int), void *arg)
{
    struct vec_cand *heap = t->heap;
    for (int r = 0; r < rows; r++) {
        struct vec_cand c = {scores[r], ids ? ids[r] : base + r};
        if (c.score != c.score || (t->len == t->k && !cand_worse(heap[0], c)))
            continue;
        if (skip && skip(arg, c.row))
            continue;
        if (t->len < t->k) {
            heap[t->len] = c;
            heap_sift_up(heap, t->len++);
        } else {
            heap[0] = c;
            heap_sift_down(heap, t->len, 0);
        }
    }
}

static int topk_emit(struct topk *t, int *out_rows, float *out_scores)
{
    qsort(t->heap, (size_t)t->len, sizeof t->heap[0], cand_cmp_best_first);
    for (int i = 0; i < t->len; i++) {
        out_rows[i] = t->heap[i].row;
        if (out_scores)
            out_scores[i] = t->heap[i].score;
    }
    return t->len;
}

int vec_topk(const float *M, int n, int d, const float *q, int k,
             bool (*skip)(void *arg, int row), void *arg, int *out_rows, float *out_scores)
{
    if (k <= 0 || n <= 0 || d < 0)
        return 0;
    if (k > VEC_MAX_K)
        k = VEC_MAX_K;
    struct vec_cand heap[VEC_MAX_K];
    struct topk t = {heap, 0, k};
    float block[VEC_BLOCK];
    for (int base = 0; base < n; base += VEC_BLOCK) {
        int rows = n - base < VEC_BLOCK ? n - base : VEC_BLOCK;
        dots(M + (size_t)base * (size_t)d, rows, d, q, block);
        topk_offer(&t, block, NULL, base, rows, skip, arg);
    }
    return topk_emit(&t, out_rows, out_scores);
}

void vec_acc_init(struct vec_acc *a, int k)
{
    a->len = 0;
    a->k = k < 0 ? 0 : k > VEC_MAX_K ? VEC_MAX_K : k;
}

void vec_acc_scan(struct vec_acc *a, const float *M, int rows, int d, const float *q,
                  const int32_t *ids, bool (*skip)(void *arg, int row), void *arg)
{
    if (a->k == 0 || rows <= 0 || d < 0)
        return;
    struct topk t = {a->heap, a->len, a->k};
    float block[VEC_BLOCK];
    for (int base = 0; base < rows; base += VEC_BLOCK) {
        int n = rows - base < VEC_BLOCK ? rows - base : VEC_BLOCK;
        dots(M + (size_t)base * (size_t)d, n, d, q, block);
        topk_offer(&t, block, ids ? ids + base : NULL, base, n, skip, arg);
    }
    a->len = t.len;
}

int vec_acc_emit(struct vec_acc *a, int *out_rows, float *out_scores)
{
    struct topk t = {a->heap, a->len, a->k};
    int n = topk_emit(&t, out_rows, out_scores);
    a->len = 0;
    return n;
}

/* Rows per block of the batched scan: 64 rows of up to 512 floats (128 KiB at most, 32 KiB at
 * d = 128) stay in L2 while every query of the batch passes over them, so the matrix is read
 * from memory once for the whole batch. */
#define VEC_BATCH_BLOCK 64

int vec_topk_batch(const float *M, int n, int d, const float *Q, int nq, int k,
                   const struct vec_query *qs, int *out_rows, float *out_scores, int *out_counts)
{
    if (nq <= 0 || nq > VEC_MAX_BATCH)
        return -1;
    if (k > VEC_MAX_K)
        k = VEC_MAX_K;
    for (int i = 0; i < nq; i++)
        out_counts[i] = 0;
    if (k <= 0 || n <= 0 || d < 0)
        return 0;
    struct vec_cand *heaps = malloc(sizeof *heaps * (size_t)k * (size_t)nq);
    if (heaps == NULL)
        return -1;
    struct topk t[VEC_MAX_BATCH];
    for (int i = 0; i < nq; i++)
        t[i] = (struct topk){heaps + (size_t)i * (size_t)k, 0, k};
    float block[VEC_BATCH_BLOCK];
    for (int base = 0; base < n; base += VEC_BATCH_BLOCK) {
        int rows = n - base < VEC_BATCH_BLOCK ? n - base : VEC_BATCH_BLOCK;
        const float *blk = M + (size_t)base * (size_t)d;
        for (int i = 0; i < nq; i++) {
            dots(blk, rows, d, Q + (size_t)i * (size_t)d, block);
            topk_offer(&t[i], block, NULL, base, rows, qs ? qs[i].skip : NULL,
                       qs ? qs[i].arg : NULL);
        }
    }
    for (int i = 0; i < nq; i++)
        out_counts[i] = topk_emit(&t[i], out_rows + (size_t)i * (size_t)k,
                                  out_scores ? out_scores + (size_t)i * (size_t)k : NULL);
    free(heaps);
    return 0;
}

/* ---------- exact top-k through an int8 pre-scan ---------- */

/* Each row i is kept as int8 codes c with x ≈ s_i c (s_i = max|x_i| / 127), the query as
 * v with u ≈ t v (t = max|u| / 127). The integer dot a_i = t s_i (v · c_i) is computed for
 * every row, in a quarter of the float matrix's bytes and with integer multiply-adds. Since
 * x = s_i c + e with |e| <= s_i / 2 and u = t v + f with |f| <= t / 2,
 *     |u · x - a_i| <= (s_i / 2) t sum|v| + (t / 2) ||x_i||_1,
 * and the float kernels' own rounding adds at most d 2^-23 max|u| ||x_i||_1. So [a_i - b_i,
 * a_i + b_i] holds the score vec_topk computes for row i. theta, the k-th largest lower bound
 * of the rows not skipped, is at most the k-th best score; every row of vec_topk's answer has
 * an upper bound >= theta. Those rows (the candidates: usually k and a few) are rescored with
 * the float kernel vec_topk uses for that row, so the answer is the same to the bit. */
#define Q8_PAD 32                /* codes per row rounded up to this: one 256-bit load */
#define Q8_SLACK 1e-6f           /* relative slack for the float arithmetic of the bounds */

struct vec_q8 {
    int n, d, dpad;
    int8_t *codes;               /* n x dpad, zero-padded */
    float *scale;                /* s_i; NaN when the row is not finite (always rescored) */
    float *l1;                   /* ||x_i||_1, rounded up */
    int32_t *csum;               /* sum of c_i: the u8 offset's correction */
};

static _Atomic int q8_kernel_cap = VEC_Q8_VNNI; /* the best vec_q8_kernel_set allows */

static bool cpu_has_vnni(void)
{
#if VEC_HAVE_X86
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return false;
#endif
}

/* The integer kernel follows the float one (portable with portable), capped for tests. */
static enum vec_q8_kernel q8_kernel(void)
{
    int cap = atomic_load_explicit(&q8_kernel_cap, memory_order_relaxed);
    if (vec_kernel_get() != VEC_KERNEL_AVX2 || cap == VEC_Q8_PORTABLE)
        return VEC_Q8_PORTABLE;
    return cap == VEC_Q8_VNNI && cpu_has_vnni() ? VEC_Q8_VNNI : VEC_Q8_AVX2;
}

enum vec_q8_kernel vec_q8_kernel_set(enum vec_q8_kernel k)
{
    atomic_store_explicit(&q8_kernel_cap, (int)k, memory_order_relaxed);
    return q8_kernel();
}

/* v · c_r for rows of codes; v holds dpad signed codes (pads zero). */
static void q8_dots_portable(const struct vec_q8 *z, int base, int rows, const int8_t *v,
                             int32_t *out)
{
    for (int r = 0; r < rows; r++) {
        const int8_t *c = z->codes + (size_t)(base + r) * (size_t)z->dpad;
        int32_t s = 0;
        for (int i = 0; i < z->d; i++)
            s += (int32_t)v[i] * c[i];
        out[r] = s;
    }
}

#if VEC_HAVE_X86
/* maddubs multiplies unsigned by signed bytes: |v| times c carrying v's sign, so each 16-bit
 * pair sum is at most 2 * 127 * 127 and cannot saturate. */
__attribute__((target("avx2"))) static void q8_dots_avx2(const struct vec_q8 *z, int base,
                                                         int rows, const int8_t *v,
                                                         int32_t *out)
{
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = 0; r < rows; r++) {
        const int8_t *c = z->codes + (size_t)(base + r) * (size_t)z->dpad;
        __m256i acc = _mm256_setzero_si256();
        for (int i = 0; i < z->dpad; i += 32) {
            __m256i vv = _mm256_loadu_si256((const __m256i *)(v + i));
            __m256i cc = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(c + i)), vv);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(
                                                              _mm256_abs_epi8(vv), cc), ones));
        }
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        s = _mm_hadd_epi32(s, s);
        s = _mm_hadd_epi32(s, s);
        out[r] = _mm_cvtsi128_si32(s);
    }
}

/* vpdpbusd multiplies unsigned by signed bytes: u = v + 128, and 128 sum(c) taken back. On
 * 256-bit registers, eight rows at a time: the eight sums are reduced together (three rounds
 * of hadd and one cross-lane add), which costs less than the multiply-adds. */
__attribute__((target("avx2,avx512f,avx512bw,avx512vl,avx512vnni"))) static void
q8_dots_vnni(const struct vec_q8 *z, int base, int rows, const int8_t *v, int32_t *out)
{
    uint8_t u[VEC_Q8_MAX_DIM];
    for (int i = 0; i < z->dpad; i++)
        u[i] = (uint8_t)(v[i] + 128);
    size_t dp = (size_t)z->dpad;
    int r = 0;
    for (; r + 8 <= rows; r += 8) {
        const int8_t *c = z->codes + (size_t)(base + r) * dp;
        __m256i a[8];
        for (int j = 0; j < 8; j++)
            a[j] = _mm256_setzero_si256();
        for (size_t i = 0; i < dp; i += 32) {
            __m256i uu = _mm256_loadu_si256((const __m256i *)(u + i));
            for (int j = 0; j < 8; j++)
                a[j] = _mm256_dpbusd_epi32(a[j], uu,
                                           _mm256_loadu_si256((const __m256i *)(c + j * dp + i)));
        }
        __m256i h01 = _mm256_hadd_epi32(a[0], a[1]), h23 = _mm256_hadd_epi32(a[2], a[3]);
        __m256i h45 = _mm256_hadd_epi32(a[4], a[5]), h67 = _mm256_hadd_epi32(a[6], a[7]);
        __m256i h0123 = _mm256_hadd_epi32(h01, h23), h4567 = _mm256_hadd_epi32(h45, h67);
        /* lanes: [r0..r3 low halves | r0..r3 high halves], the same for r4..r7 */
        __m256i lo = _mm256_permute2x128_si256(h0123, h4567, 0x20);
        __m256i hi = _mm256_permute2x128_si256(h0123, h4567, 0x31);
        __m256i sum = _mm256_add_epi32(lo, hi);
        __m256i corr = _mm256_slli_epi32(
            _mm256_loadu_si256((const __m256i *)(z->csum + base + r)), 7);
        _mm256_storeu_si256((__m256i *)(out + r), _mm256_sub_epi32(sum, corr));
    }
    for (; r < rows; r++) {
        const int8_t *c = z->codes + (size_t)(base + r) * dp;
        __m256i acc = _mm256_setzero_si256();
        for (size_t i = 0; i < dp; i += 32)
            acc = _mm256_dpbusd_epi32(acc, _mm256_loadu_si256((const __m256i *)(u + i)),
                                      _mm256_loadu_si256((const __m256i *)(c + i)));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        s4 = _mm_hadd_epi32(s4, s4);
        s4 = _mm_hadd_epi32(s4, s4);
        out[r] = _mm_cvtsi128_si32(s4) - 128 * z->csum[base + r];
    }
}
#endif

static void q8_dots(enum vec_q8_kernel k, const struct vec_q8 *z, int base, int rows,
                    const int8_t *v, int32_t *out)
{
#if VEC_HAVE_X86
    if (k == VEC_Q8_VNNI) {
        q8_dots_vnni(z, base, rows, v, out);
        return;
    }
    if (k == VEC_Q8_AVX2) {
        q8_dots_avx2(z, base, rows, v, out);
        return;
    }
#endif
    (void)k;
    q8_dots_portable(z, base, rows, v, out);
}

/* Row r's score exactly as vec_topk computes it (dots: every row by the same arithmetic,
 * wherever it falls in a block). */
static float row_score(const float *M, int n, int d, const float *q, int r)
{
    (void)n;
    float s;
    dots(M + (size_t)r * (size_t)d, 1, d, q, &s);
    return s;
}

struct vec_q8 *vec_q8_build(const float *M, int n, int d)
{
    if (n < 0 || d <= 0 || d > VEC_Q8_MAX_DIM)
        return NULL;
    struct vec_q8 *z = calloc(1, sizeof *z);
    if (z == NULL)
        return NULL;
    z->n = n;
    z->d = d;
    z->dpad = (d + Q8_PAD - 1) / Q8_PAD * Q8_PAD;
    size_t rows = n > 0 ? (size_t)n : 1;
    z->codes = aligned_alloc(Q8_PAD, rows * (size_t)z->dpad);
    z->scale = malloc(sizeof *z->scale * rows);
    z->l1 = malloc(sizeof *z->l1 * rows);
    z->csum = malloc(sizeof *z->csum * rows);
    if (!z->codes || !z->scale || !z->l1 || !z->csum)
        return vec_q8_free(z);
    memset(z->codes, 0, rows * (size_t)z->dpad);
    for (int r = 0; r < n; r++) {
        const float *x = M + (size_t)r * (size_t)d;
        int8_t *c = z->codes + (size_t)r * (size_t)z->dpad;
        double mx = 0, l1 = 0;
        bool finite = true;
        for (int i = 0; i < d; i++) {
            finite = finite && isfinite(x[i]);
            mx = fmax(mx, fabs((double)x[i]));
            l1 += fabs((double)x[i]);
        }
        int32_t sum = 0;
        float scale = (float)(mx / 127.0); /* codes from the stored scale: |x - s c| <= s / 2 */
        if (finite && scale > 0) {
            for (int i = 0; i < d; i++) {
                c[i] = (int8_t)lrint(fmin(127.0, fmax(-127.0, (double)x[i] / scale)));
                sum += c[i];
            }
        }
        z->scale[r] = finite ? scale : NAN;
        z->l1[r] = (float)l1 * (1 + Q8_SLACK);
        z->csum[r] = sum;
    }
    return z;
}

struct vec_q8 *vec_q8_free(struct vec_q8 *z)
{
    if (z) {
        free(z->codes);
        free(z->scale);
        free(z->l1);
        free(z->csum);
        free(z);
    }
    return NULL;
}

size_t vec_q8_bytes(const struct vec_q8 *z)
{
    return z ? (size_t)z->n * ((size_t)z->dpad + 12) : 0;
}

/* Rows whose upper bound reached the running theta when scanned: a superset of the final
 * candidates (theta only rises). */
struct q8_cands {
    int len, cap;
    struct vec_cand *c;          /* score: the row's upper bound */
    struct vec_cand inline_c[1024];
};

static bool cands_push(struct q8_cands *c, float hi, int32_t row)
{
    if (c->len == c->cap) {
        int cap = c->cap * 2;
        struct vec_cand *nc = malloc(sizeof *nc * (size_t)cap);
        if (nc == NULL)
            return false;
        memcpy(nc, c->c, sizeof *nc * (size_t)c->len);
        if (c->c != c->inline_c)
            free(c->c);
        c->c = nc;
        c->cap = cap;
    }
    c->c[c->len++] = (struct vec_cand){hi, row};
    return true;
}

/* One query's pass through the codes: its int8 form and bound terms, the heap of the k best
 * lower bounds (theta is its least once full) and the candidates. Large: on the heap. */
struct q8_query {
    const float *q;
    int k;
    bool (*skip)(void *, int);
    void *arg;
    bool exact;                  /* the float scan answers it (see q8_query_init) */
    bool ok;                     /* no allocation failed */
    int8_t v[VEC_Q8_MAX_DIM];
    float tf, half_tv, half_t_round;
    float theta;
    int llen;
    struct vec_cand lheap[VEC_MAX_K];
    struct q8_cands c;
};

/* false: the pre-scan would not pay or cannot bound this query (k above a quarter of the
 * rows or not positive, a zero or non-finite query): the float scan answers it. */
static bool q8_query_init(struct q8_query *w, const struct vec_q8 *z, const float *q, int k,
                          bool (*skip)(void *, int), void *arg)
{
    int d = z->d;
    *w = (struct q8_query){.q = q, .k = k, .skip = skip, .arg = arg, .ok = true,
                           .theta = -INFINITY, .c = {.cap = 1024}};
    w->c.c = w->c.inline_c;
    double qmax = 0;
    for (int i = 0; i < d; i++)
        qmax = isfinite(q[i]) ? fmax(qmax, fabs((double)q[i])) : INFINITY;
    w->tf = (float)(qmax / 127.0); /* |q - t v| <= t / 2 with the t the bounds use */
    if (!(w->tf > 0) || !isfinite(qmax) || k <= 0 || k > z->n / 4)
        return !(w->exact = true);
    int64_t vabs = 0;
    for (int i = 0; i < d; i++) {
        w->v[i] = (int8_t)lrint(fmin(127.0, fmax(-127.0, (double)q[i] / w->tf)));
        vabs += w->v[i] < 0 ? -w->v[i] : w->v[i];
    }
    w->half_tv = (float)((double)w->tf * (double)vabs / 2);
    w->half_t_round = w->tf / 2 + (float)(d * qmax * 0x1p-23);
    return true;
}

/* lo/hi of a block's rows from their integer dots; false when no row can reach theta (every
 * hi below it, none NaN). The same arithmetic in both versions, so the same bounds. */
static bool q8_bounds_portable(const struct q8_query *w, const float *scale, const float *l1,
                               const int32_t *dots_i, int rows, float *lo, float *hi)
{
    bool reach = false;
    for (int j = 0; j < rows; j++) {
        float a = w->tf * scale[j] * (float)dots_i[j];
        float b = scale[j] * w->half_tv + w->half_t_round * l1[j];
        b += (fabsf(a) + b) * Q8_SLACK;
        lo[j] = a - b;
        hi[j] = a + b;
        reach |= !(hi[j] < w->theta);
    }
    return reach;
}

#if VEC_HAVE_X86
/* No FMA here: a fused multiply-add would round differently from the portable version. */
__attribute__((target("avx2"))) static bool q8_bounds_avx2(const struct q8_query *w,
                                                          const float *scale, const float *l1,
                                                          const int32_t *dots_i, int rows,
                                                          float *lo, float *hi)
{
    const __m256 tf = _mm256_set1_ps(w->tf), htv = _mm256_set1_ps(w->half_tv);
    const __m256 htr = _mm256_set1_ps(w->half_t_round), slack = _mm256_set1_ps(Q8_SLACK);
    const __m256 theta = _mm256_set1_ps(w->theta);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 reach = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= rows; j += 8) {
        __m256 s = _mm256_loadu_ps(scale + j);
        __m256 dot = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(dots_i + j)));
        __m256 a = _mm256_mul_ps(_mm256_mul_ps(tf, s), dot);
        __m256 b = _mm256_add_ps(_mm256_mul_ps(s, htv), _mm256_mul_ps(htr, _mm256_loadu_ps(l1 + j)));
        b = _mm256_add_ps(b, _mm256_mul_ps(_mm256_add_ps(_mm256_and_ps(a, absmask), b), slack));
        __m256 h = _mm256_add_ps(a, b);
        _mm256_storeu_ps(lo + j, _mm256_sub_ps(a, b));
        _mm256_storeu_ps(hi + j, h);
        reach = _mm256_or_ps(reach, _mm256_cmp_ps(h, theta, _CMP_NLT_UQ)); /* !(h < theta) */
    }
    bool r = _mm256_movemask_ps(reach) != 0;
    if (j < rows)
        r |= q8_bounds_portable(w, scale + j, l1 + j, dots_i + j, rows - j, lo + j, hi + j);
    return r;
}
#endif

static bool q8_bounds(const struct q8_query *w, const float *scale, const float *l1,
                      const int32_t *dots_i, int rows, float *lo, float *hi)
{
#if VEC_HAVE_X86
    if (vec_kernel_get() == VEC_KERNEL_AVX2)
        return q8_bounds_avx2(w, scale, l1, dots_i, rows, lo, hi);
#endif
    return q8_bounds_portable(w, scale, l1, dots_i, rows, lo, hi);
}

/* Bounds the rows of one block from their integer dots: rows that may be in the answer become
 * candidates, lower bounds of rows not skipped feed theta. The bounds are computed for the
 * whole block first (a loop the compiler vectorises), and a block whose best upper bound is
 * below theta, as most are once theta has settled, costs nothing more. */
static void q8_query_block(struct q8_query *w, const struct vec_q8 *z, int base, int rows,
                           const int32_t *dots_i)
{
    float lo[VEC_BLOCK], hi[VEC_BLOCK];
    /* a row that is not finite has a NaN scale, so NaN bounds: never below theta */
    if (!q8_bounds(w, z->scale + base, z->l1 + base, dots_i, rows, lo, hi))
        return;
    for (int j = 0; j < rows && w->ok; j++) {
        int r = base + j;
        float l = lo[j], h = hi[j];
        if (h < w->theta)
            continue;
        if (h != h) /* a row that is not finite: no bound, always rescored */
            l = -INFINITY, h = INFINITY;
        /* the k best lower bounds of the rows not skipped (a skipped row stays a candidate;
         * the rescoring skips it) */
        struct topk lt = {w->lheap, w->llen, w->k};
        int32_t row = r;
        topk_offer(&lt, &l, &row, 0, 1, w->skip, w->arg);
        w->llen = lt.len;
        if (w->llen == w->k)
            w->theta = w->lheap[0].score;
        w->ok = cands_push(&w->c, h, r);
    }
}

/* The candidates that reach the final theta, scored in float: the answer. */
static int q8_query_finish(struct q8_query *w, const struct vec_q8 *z, const float *M,
                           int *out_rows, float *out_scores)
{
    int n = z->n, d = z->d, got;
    if (w->exact || !w->ok || w->llen < w->k) { /* fewer than k rows pass: all of them */
        got = vec_topk(M, n, d, w->q, w->k, w->skip, w->arg, out_rows, out_scores);
    } else {
        struct vec_cand heap[VEC_MAX_K];
        struct topk top = {heap, 0, w->k};
        for (int i = 0; i < w->c.len; i++) {
            if (w->c.c[i].score < w->theta) /* below the final theta: not in the answer */
                continue;
            int32_t r = w->c.c[i].row;
            float score = row_score(M, n, d, w->q, r);
            topk_offer(&top, &score, &r, 0, 1, w->skip, w->arg);
        }
        got = topk_emit(&top, out_rows, out_scores);
    }
    if (w->c.c != w->c.inline_c)
        free(w->c.c);
    return got;
}

int vec_topk_q8_batch(const struct vec_q8 *z, const float *M, const float *const *qv, int nq,
                      const int *ks, const struct vec_query *qs, int *const *out_rows,
                      float *const *out_scores, int *out_counts)
{
    if (nq <= 0 || nq > VEC_MAX_BATCH)
        return -1;
    struct q8_query *w = malloc(sizeof *w * (size_t)nq);
    if (w == NULL)
        return -1;
    int active = 0;
    for (int i = 0; i < nq; i++) {
        int k = ks[i] > VEC_MAX_K ? VEC_MAX_K : ks[i];
        out_counts[i] = 0;
        if (q8_query_init(&w[i], z, qv[i], k, qs ? qs[i].skip : NULL, qs ? qs[i].arg : NULL))
            active++;
    }
    enum vec_q8_kernel kern = q8_kernel();
    int32_t dots_i[VEC_BLOCK];
    /* a block of codes (32 KiB at d = 128) stays in cache while every query bounds it */
    for (int base = 0; base < z->n && active > 0; base += VEC_BLOCK) {
        int rows = z->n - base < VEC_BLOCK ? z->n - base : VEC_BLOCK;
        for (int i = 0; i < nq; i++) {
            if (w[i].exact || !w[i].ok)
                continue;
            q8_dots(kern, z, base, rows, w[i].v, dots_i);
            q8_query_block(&w[i], z, base, rows, dots_i);
        }
    }
    for (int i = 0; i < nq; i++)
        out_counts[i] = q8_query_finish(&w[i], z, M, out_rows[i],
                                        out_scores ? out_scores[i] : NULL);
    free(w);
    return 0;
}

int vec_topk_q8(const struct vec_q8 *z, const float *M, const float *q, int k,
                bool (*skip)(void *arg, int row), void *arg, int *out_rows, float *out_scores)
{
    if (k <= 0 || z->n <= 0)
        return 0;
    struct vec_query one = {skip, arg};
    int count = 0;
    if (vec_topk_q8_batch(z, M, &q, 1, &k, &one, &out_rows, out_scores ? &out_scores : NULL,
                          &count) < 0)
        return vec_topk(M, z->n, z->d, q, k, skip, arg, out_rows, out_scores);
    return count;
}

/* ---------- storage ---------- */

float *vec_alloc(size_t n, size_t d)
{
    if (d != 0 && n > SIZE_MAX / sizeof(float) / d)
        return NULL;
    size_t bytes = n * d * sizeof(float);
    /* aligned_alloc wants a multiple of the alignment, and a non-zero size */
    size_t padded = (bytes + VEC_ALIGN - 1) / VEC_ALIGN * VEC_ALIGN;
    if (padded < bytes)
        return NULL;
    if (padded == 0)
        padded = VEC_ALIGN;
    float *m = aligned_alloc(VEC_ALIGN, padded);
    if (m)
        memset(m, 0, padded);
    return m;
}

float *vec_free(float *m)
{
    free(m);
    return NULL;
}
