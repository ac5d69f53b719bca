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
        out[r] = dot_avx2(row, q, d);
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
