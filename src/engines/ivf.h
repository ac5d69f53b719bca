/* An inverted-file index for approximate inner-product top-k over a row-major matrix (the
 * IVF-Flat scheme of FAISS): k-means splits the rows into lists around centroids; a query
 * scores the centroids, then scans only the rows of the best lists, stored contiguously.
 * Built once per matrix (seeded, so the same matrix gives the same index); queries are pure
 * and thread-safe. Exact scores, approximate membership: a row in a list that was not probed
 * is missed, which is what the sampled recall check in the recs surface measures. */
#ifndef TS_IVF_H
#define TS_IVF_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ivf {
    int n, d, nlist;
    float *C;          /* nlist x d centroids (vec_alloc) */
    int32_t *off;      /* nlist + 1: list l holds positions off[l] .. off[l+1]-1 */
    int32_t *rows;     /* n: the matrix row at each position */
    float *P;          /* n x d: the rows in position order (vec_alloc) */
    float *rn;         /* n: |row - its list's centroid|, rounded up; within a list the
                        * positions go from the largest rn down (ties by row) */
    float xmax, cmax;  /* the largest row norm and centroid norm, rounded up */
};

/* Lists for n rows: about 2 sqrt(n), at least 1. */
int ivf_nlist_for(int n);

/* Builds ix over M (n rows of d floats; M is copied, not kept) with nlist lists: Lloyd's
 * k-means on a seeded sample of at most 48 rows per list, iters rounds, then every row to
 * its nearest centroid. 0, or -ENOMEM / -EINVAL (n < 1, d < 1, nlist < 1). */
int ivf_build(struct ivf *ix, const float *M, int n, int d, int nlist, int iters, uint64_t seed);
void ivf_free(struct ivf *ix);
/* Bytes the index holds (for model accounting). */
size_t ivf_bytes(const struct ivf *ix);

/* The k best rows by M[row] · q among the nprobe lists whose centroids score highest, best
 * first, ties by row; more lists are probed while fewer than k rows survive skip(arg, row)
 * (row is the matrix row). Returns how many were written (<= k), as vec_topk does; *scored
 * (may be NULL) gets the number of rows scored. k is clamped to VEC_MAX_K. */
int ivf_topk(const struct ivf *ix, const float *q, int k, int nprobe,
             bool (*skip)(void *arg, int row), void *arg, int *out_rows, float *out_scores,
             int *scored);

/* The exact top k, vec_topk's answer to the bit (rows, scores, ties by row, skips, NaN rows
 * left out), found by scoring only rows that can reach it: a row x of a list with centroid c
 * has q·x = q·c + q·(x−c) <= q·c + |q| |x−c|. Lists go in decreasing order of that bound at
 * their largest |x−c|, rows within a list from the largest |x−c| down, and a list or the rest
 * of one stops as soon as its bound, plus the float kernels' rounding, falls below the k-th
 * best score kept. Trained item vectors lie in clusters and most rows are never scored.
 * max_scored > 0: give up (-1) once that many rows were scored, for a caller with a cheaper
 * full scan to fall back on when the data has no such clusters. -1 too without memory;
 * *scored (may be NULL) gets the rows scored either way. */
int ivf_topk_exact(const struct ivf *ix, const float *q, int k, int max_scored,
                   bool (*skip)(void *arg, int row), void *arg, int *out_rows,
                   float *out_scores, int *scored);
#endif
