/* Dense float vectors: dot products and exact top-k by inner product over a row-major matrix,
 * with an AVX2/FMA kernel chosen at run time (__builtin_cpu_supports) and a portable one. Pure
 * and thread-safe: nothing is shared between calls except the kernel choice. */
#ifndef TS_VEC_H
#define TS_VEC_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VEC_ALIGN 32          /* matrices from vec_alloc start on a 32-byte boundary */
#define VEC_MAX_K 1000        /* vec_topk keeps at most this many rows */

/* a · b over d floats (d >= 0). */
float vec_dot(const float *a, const float *b, int d);

/* ||a||; and a scaled to unit length in place (left as is when its norm is 0). Return the
 * norm before scaling. */
float vec_norm(const float *a, int d);
/* out[r] = M[r] · q for the rows of M (rows x d, row-major), by vec_topk's kernel: the scores
 * vec_topk ranks, to the bit. */
void vec_dots(const float *M, int rows, int d, const float *q, float *out);
float vec_normalize(float *a, int d);

/* The k rows of M (n rows of d floats each, row-major) with the largest M[row] · q, best
 * first; equal scores are ordered by row number, so the answer is deterministic. Rows for
 * which skip(arg, row) is true are left out (skip may be NULL); skip is called only for rows
 * whose score would enter the current top k, so it may be moderately expensive. Rows whose
 * score is NaN are left out. out_rows (required) and out_scores (NULL when not wanted) hold
 * k entries. Returns how many rows were written: min(k, rows not skipped); 0 when k <= 0 or
 * n <= 0; k above VEC_MAX_K is clamped to it. */
int vec_topk(const float *M, int n, int d, const float *q, int k,
             bool (*skip)(void *arg, int row), void *arg, int *out_rows, float *out_scores);

/* Several queries in one pass over M: Q holds nq (1..VEC_MAX_BATCH) query vectors of d floats,
 * qs[i] (or NULL for none) query i's skip predicate. Query i's answer, exactly what vec_topk
 * would give it, goes to out_rows / out_scores (may be NULL) at offset i * k, its length to
 * out_counts[i]. The matrix streams from memory once for the batch instead of once per query,
 * which is what bounds a scan. 0, or -1 (nq out of range, no memory). */
#define VEC_MAX_BATCH 32
struct vec_query {
    bool (*skip)(void *arg, int row);
    void *arg;
};
int vec_topk_batch(const float *M, int n, int d, const float *Q, int nq, int k,
                   const struct vec_query *qs, int *out_rows, float *out_scores, int *out_counts);

/* A running top k fed block by block, for scans over rows that are not one matrix (the lists
 * of an index): vec_acc_init, then vec_acc_scan per block, then vec_acc_emit. Blocks may come in
 * any order; the answer is the same as one vec_topk over all their rows (ties to the lower row).
 * The struct is large (VEC_MAX_K candidates): keep it on a worker's stack or in the heap. */
struct vec_cand {
    float score;
    int row;
};
struct vec_acc {
    int len, k;
    struct vec_cand heap[VEC_MAX_K];
};
void vec_acc_init(struct vec_acc *a, int k);   /* k clamped to 0 .. VEC_MAX_K */
/* Scores rows of M (rows x d) against q; row r of the block is row ids[r] of the caller's
 * numbering (ids NULL: r itself); skip as for vec_topk, called with that row number. */
void vec_acc_scan(struct vec_acc *a, const float *M, int rows, int d, const float *q,
                  const int32_t *ids, bool (*skip)(void *arg, int row), void *arg);
/* The kept rows best first into out_rows / out_scores (may be NULL); returns how many. */
int vec_acc_emit(struct vec_acc *a, int *out_rows, float *out_scores);

/* An int8 copy of a matrix for vec_topk_q8: a quarter of its bytes plus 12 per row. Built
 * once per matrix (NULL: d out of 1..VEC_Q8_MAX_DIM, or no memory); free with vec_q8_free
 * (accepts NULL, returns NULL). */
#define VEC_Q8_MAX_DIM 1024
struct vec_q8;
struct vec_q8 *vec_q8_build(const float *M, int n, int d);
struct vec_q8 *vec_q8_free(struct vec_q8 *z);
size_t vec_q8_bytes(const struct vec_q8 *z);
/* Exactly vec_topk(M, n, d, q, ...) for the matrix z was built from (same rows, same scores,
 * same order), found faster: every row is bounded through its int8 codes, and only the rows
 * whose bound reaches the k-th best lower bound are scored in float (see vec.c). skip may be
 * called more than once for a row. */
int vec_topk_q8(const struct vec_q8 *z, const float *M, const float *q, int k,
                bool (*skip)(void *arg, int row), void *arg, int *out_rows, float *out_scores);
/* Several queries in one pass over the codes (1..VEC_MAX_BATCH): query i is qv[i] with its own
 * k ks[i] and skip qs[i] (qs may be NULL); its answer, exactly vec_topk_q8's, goes to
 * out_rows[i] / out_scores[i] (out_scores may be NULL), its length to out_counts[i]. 0, or -1
 * (nq out of range, no memory). */
int vec_topk_q8_batch(const struct vec_q8 *z, const float *M, const float *const *qv, int nq,
                      const int *ks, const struct vec_query *qs, int *const *out_rows,
                      float *const *out_scores, int *out_counts);

/* The integer kernel of vec_topk_q8: the best the CPU has (AVX-512 VNNI, else AVX2) when the
 * float kernel is AVX2, portable when it is portable. Setting a kernel caps the choice at it,
 * for tests (VEC_Q8_VNNI, the default, caps nothing). Returns the kernel now in use. */
enum vec_q8_kernel { VEC_Q8_PORTABLE, VEC_Q8_AVX2, VEC_Q8_VNNI };
enum vec_q8_kernel vec_q8_kernel_set(enum vec_q8_kernel k);

/* A zeroed n x d matrix aligned to VEC_ALIGN (NULL on overflow or out of memory); free with
 * vec_free, which accepts NULL and returns NULL. */
float *vec_alloc(size_t n, size_t d);
float *vec_free(float *m);

/* Which kernel vec_dot and vec_topk use. VEC_KERNEL_AUTO (the default) picks AVX2/FMA when
 * the CPU has both. Forcing VEC_KERNEL_AVX2 on a CPU without them falls back to portable.
 * For tests and benchmarks; set it before starting threads that use this module. Returns the
 * kernel now in use (never AUTO). */
enum vec_kernel { VEC_KERNEL_AUTO, VEC_KERNEL_PORTABLE, VEC_KERNEL_AVX2 };
enum vec_kernel vec_kernel_set(enum vec_kernel k);
enum vec_kernel vec_kernel_get(void);
#endif
