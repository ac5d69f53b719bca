/* Inverted-file index for approximate inner-product top-k (see ivf.h). */
#include "engines/ivf.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "engines/vec.h"

#define IVF_SAMPLE_PER_LIST 32   /* k-means rows per centroid (FAISS warns below 39; the
                                    * planted-cluster recall check holds at 32, a third cheaper) */

int ivf_nlist_for(int n)
{
    if (n < 1)
        return 1;
    int l = (int)lround(2.0 * sqrt((double)n));
    return l < 1 ? 1 : l > n ? n : l;
}

/* Nearest centroid of x by squared L2 (|x|^2 is common to all, so argmax of x·c - |c|^2/2). */
static int nearest(const float *C, const float *half_norm2, int nlist, int d, const float *x)
{
    int best = 0;
    float bs = -INFINITY;
    for (int l = 0; l < nlist; l++) {
        float s = vec_dot(C + (size_t)l * (size_t)d, x, d) - half_norm2[l];
        if (s > bs) {
            bs = s;
            best = l;
        }
    }
    return best;
}

static void half_norms(const float *C, int nlist, int d, float *out)
{
    for (int l = 0; l < nlist; l++) {
        const float *c = C + (size_t)l * (size_t)d;
        out[l] = 0.5f * vec_dot(c, c, d);
    }
}

/* A seeded sample of m distinct rows of n (partial Fisher-Yates over the row numbers). */
static int32_t *sample_rows(int n, int m, struct rng *r)
{
    int32_t *all = malloc(sizeof(int32_t) * (size_t)n);
    if (all == NULL)
        return NULL;
    for (int i = 0; i < n; i++)
        all[i] = i;
    for (int i = 0; i < m; i++) {
        int j = i + (int)(rng_next(r) % (uint64_t)(n - i));
        int32_t t = all[i];
        all[i] = all[j];
        all[j] = t;
    }
    return all; /* the first m are the sample */
}

/* Lloyd's k-means over the sample rows of M into C (nlist x d), seeded from sample rows. */
static int kmeans(const float *M, int d, const int32_t *sample, int m, int nlist, int iters,
                  struct rng *r, float *C)
{
    float *sum = calloc((size_t)nlist * (size_t)d, sizeof(float));
    int *count = calloc((size_t)nlist, sizeof(int));
    float *hn = malloc(sizeof(float) * (size_t)nlist);
    if (!sum || !count || !hn) {
        free(sum), free(count), free(hn);
        return -ENOMEM;
    }
    for (int l = 0; l < nlist; l++) /* the sample is already shuffled: its first rows */
        memcpy(C + (size_t)l * (size_t)d, M + (size_t)sample[l] * (size_t)d,
               sizeof(float) * (size_t)d);
    for (int it = 0; it < iters; it++) {
        half_norms(C, nlist, d, hn);
        memset(sum, 0, sizeof(float) * (size_t)nlist * (size_t)d);
        memset(count, 0, sizeof(int) * (size_t)nlist);
        for (int i = 0; i < m; i++) {
            const float *x = M + (size_t)sample[i] * (size_t)d;
            int l = nearest(C, hn, nlist, d, x);
            float *s = sum + (size_t)l * (size_t)d;
            for (int j = 0; j < d; j++)
                s[j] += x[j];
            count[l]++;
        }
        for (int l = 0; l < nlist; l++) {
            float *c = C + (size_t)l * (size_t)d;
            if (count[l] == 0) { /* an empty list takes a random sample row and tries again */
                memcpy(c, M + (size_t)sample[rng_next(r) % (uint64_t)m] * (size_t)d,
                       sizeof(float) * (size_t)d);
                continue;
            }
            const float *s = sum + (size_t)l * (size_t)d;
            for (int j = 0; j < d; j++)
                c[j] = s[j] / (float)count[l];
        }
    }
    free(sum), free(count), free(hn);
    return 0;
}

/* The float at or above x (a bound must not round down). */
static float round_up(double x)
{
    float f = (float)x;
    return (double)f < x ? nextafterf(f, INFINITY) : f;
}

static double norm_d(const float *a, int d) /* in double: a bound's inputs */
{
    double s = 0;
    for (int j = 0; j < d; j++)
        s += (double)a[j] * (double)a[j];
    return sqrt(s);
}

static double dist(const float *a, const float *b, int d)
{
    double s = 0;
    for (int j = 0; j < d; j++) {
        double t = (double)a[j] - (double)b[j];
        s += t * t;
    }
    return sqrt(s);
}

struct slot {
    float rn;
    int32_t row;
};

static int slot_cmp(const void *a, const void *b) /* the largest rn first, ties by row */
{
    const struct slot *x = a, *y = b;
    if (x->rn != y->rn)
        return x->rn > y->rn ? -1 : 1;
    return (x->row > y->row) - (x->row < y->row);
}

/* Each list's positions from the largest distance to the centroid down, and the norms the exact
 * search's rounding allowance is scaled by. */
static int order_lists(struct ivf *ix)
{
    int d = ix->d;
    struct slot *s = malloc(sizeof *s * (size_t)(ix->n ? ix->n : 1));
    float *P = vec_alloc((size_t)ix->n, (size_t)d);
    if (!s || !P) {
        free(s), vec_free(P);
        return -ENOMEM;
    }
    double xmax = 0, cmax = 0;
    for (int l = 0; l < ix->nlist; l++) {
        const float *c = ix->C + (size_t)l * (size_t)d;
        cmax = fmax(cmax, norm_d(c, d));
        int a = ix->off[l], b = ix->off[l + 1];
        for (int p = a; p < b; p++) {
            const float *x = ix->P + (size_t)p * (size_t)d;
            xmax = fmax(xmax, norm_d(x, d));
            s[p] = (struct slot){round_up(dist(x, c, d)), ix->rows[p]};
            s[p].rn = s[p].rn != s[p].rn ? INFINITY : s[p].rn; /* NaN row: never pruned */
        }
        qsort(s + a, (size_t)(b - a), sizeof *s, slot_cmp);
    }
    /* rows[] is position -> row; P is rebuilt in the new order from the old positions */
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)(ix->n ? ix->n : 1));
    if (pos == NULL) {
        free(s), vec_free(P);
        return -ENOMEM;
    }
    for (int p = 0; p < ix->n; p++)
        pos[ix->rows[p]] = p;
    for (int p = 0; p < ix->n; p++) {
        memcpy(P + (size_t)p * (size_t)d, ix->P + (size_t)pos[s[p].row] * (size_t)d,
               sizeof(float) * (size_t)d);
        ix->rows[p] = s[p].row;
        ix->rn[p] = s[p].rn;
    }
    vec_free(ix->P);
    ix->P = P;
    ix->xmax = round_up(xmax);
    ix->cmax = round_up(cmax);
    free(pos), free(s);
    return 0;
}

/* Every row to its nearest centroid; lists laid out contiguously in P. */
static int assign(struct ivf *ix, const float *M)
{
    int n = ix->n, d = ix->d, nlist = ix->nlist;
    int32_t *list = malloc(sizeof(int32_t) * (size_t)n);
    float *hn = malloc(sizeof(float) * (size_t)nlist);
    if (!list || !hn) {
        free(list), free(hn);
        return -ENOMEM;
    }
    half_norms(ix->C, nlist, d, hn);
    memset(ix->off, 0, sizeof(int32_t) * ((size_t)nlist + 1));
    for (int i = 0; i < n; i++) {
        list[i] = nearest(ix->C, hn, nlist, d, M + (size_t)i * (size_t)d);
        ix->off[list[i] + 1]++;
    }
    for (int l = 0; l < nlist; l++)
        ix->off[l + 1] += ix->off[l];
    int32_t *fill = malloc(sizeof(int32_t) * (size_t)nlist);
    if (fill == NULL) {
        free(list), free(hn);
        return -ENOMEM;
    }
    memcpy(fill, ix->off, sizeof(int32_t) * (size_t)nlist);
    for (int i = 0; i < n; i++) { /* rows keep their order within a list: ties stay stable */
        int32_t p = fill[list[i]]++;
        ix->rows[p] = i;
        memcpy(ix->P + (size_t)p * (size_t)d, M + (size_t)i * (size_t)d, sizeof(float) * (size_t)d);
    }
    free(fill), free(list), free(hn);
    return 0;
}

int ivf_build(struct ivf *ix, const float *M, int n, int d, int nlist, int iters, uint64_t seed)
{
    memset(ix, 0, sizeof *ix);
    if (n < 1 || d < 1 || nlist < 1)
        return -EINVAL;
    if (nlist > n)
        nlist = n;
    ix->n = n, ix->d = d, ix->nlist = nlist;
    ix->C = vec_alloc((size_t)nlist, (size_t)d);
    ix->P = vec_alloc((size_t)n, (size_t)d);
    ix->off = malloc(sizeof(int32_t) * ((size_t)nlist + 1));
    ix->rows = malloc(sizeof(int32_t) * (size_t)n);
    ix->rn = malloc(sizeof(float) * (size_t)n);
    struct rng r;
    rng_seed(&r, seed, 0x1f);
    long m = (long)nlist * IVF_SAMPLE_PER_LIST;
    if (m > n)
        m = n;
    int32_t *sample = ix->C && ix->P && ix->off && ix->rows && ix->rn
                          ? sample_rows(n, (int)m, &r)
                          : NULL;
    int rc = sample ? kmeans(M, d, sample, (int)m, nlist, iters, &r, ix->C) : -ENOMEM;
    free(sample);
    if (rc == 0)
        rc = assign(ix, M);
    if (rc == 0)
        rc = order_lists(ix);
    if (rc < 0)
        ivf_free(ix);
    return rc;
}

void ivf_free(struct ivf *ix)
{
    vec_free(ix->C);
    vec_free(ix->P);
    free(ix->off);
    free(ix->rows);
    free(ix->rn);
    memset(ix, 0, sizeof *ix);
}

size_t ivf_bytes(const struct ivf *ix)
{
    return ((size_t)ix->nlist + (size_t)ix->n) * (size_t)ix->d * sizeof(float) +
           ((size_t)ix->nlist + 1 + (size_t)ix->n) * sizeof(int32_t) + (size_t)ix->n * sizeof(float);
}

int ivf_topk(const struct ivf *ix, const float *q, int k, int nprobe,
             bool (*skip)(void *arg, int row), void *arg, int *out_rows, float *out_scores,
             int *scored)
{
    if (scored)
        *scored = 0;
    if (k <= 0 || ix->n <= 0)
        return 0;
    if (nprobe < 1)
        nprobe = 1;
    int *order = malloc(sizeof(int) * (size_t)ix->nlist);
    struct vec_acc *acc = malloc(sizeof *acc);
    if (!order || !acc) {
        free(order), free(acc);
        return 0;
    }
    vec_acc_init(acc, k);
    /* the best nprobe lists first; the full order only when skips starve them */
    int nl = vec_topk(ix->C, ix->nlist, ix->d, q, nprobe, NULL, NULL, order, NULL);
    int seen = 0;
    for (int p = 0; p < nl || (acc->len < acc->k && nl < ix->nlist); p++) {
        if (p == nl)
            nl = vec_topk(ix->C, ix->nlist, ix->d, q, ix->nlist, NULL, NULL, order, NULL);
        int l = order[p], start = ix->off[l], len = ix->off[l + 1] - start;
        vec_acc_scan(acc, ix->P + (size_t)start * (size_t)ix->d, len, ix->d, q, ix->rows + start,
                     skip, arg);
        seen += len;
    }
    int n = vec_acc_emit(acc, out_rows, out_scores);
    if (scored)
        *scored = seen;
    free(order), free(acc);
    return n;
}

/* ---------- exact search ---------- */

struct list_bound {
    double ub; /* q·c + |q| * the list's largest rn */
    int l;
};

/* Lists are taken from a max-heap on the bound, built in linear time: a search takes a few of
 * them, so sorting all (qsort: a tenth of a search) would be wasted. NaN bounds sort first. */
static bool bound_before(struct list_bound a, struct list_bound b)
{
    if (a.ub != b.ub)
        return !(a.ub < b.ub);
    return a.l < b.l;
}

static void bound_sift_down(struct list_bound *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && bound_before(h[l], h[m]))
            m = l;
        if (r < n && bound_before(h[r], h[m]))
            m = r;
        if (m == i)
            return;
        struct list_bound t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static struct list_bound bound_pop(struct list_bound *h, int *n)
{
    struct list_bound top = h[0];
    h[0] = h[--*n];
    bound_sift_down(h, *n, 0);
    return top;
}

#define EXACT_CHUNK 32 /* rows scored between looks at the k-th best score */

/* The first position in [p, end) whose bound uc + qn * rn + slack is below theta (end if none):
 * rn falls along a list, so the bounds do too. */
static int first_below(const float *rn, int p, int end, double uc, double qn, double slack,
                       double theta)
{
    int lo = p, hi = end;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (uc + qn * (double)rn[mid] + slack < theta)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

int ivf_topk_exact(const struct ivf *ix, const float *q, int k, int max_scored,
                   bool (*skip)(void *arg, int row), void *arg, int *out_rows,
                   float *out_scores, int *scored)
{
    if (scored)
        *scored = 0;
    if (k <= 0 || ix->n <= 0)
        return 0;
    int d = ix->d, nlist = ix->nlist;
    struct list_bound *lb = malloc(sizeof *lb * (size_t)nlist);
    double *uc = malloc(sizeof *uc * (size_t)nlist);
    float *cf = malloc(sizeof *cf * (size_t)nlist);
    struct vec_acc *acc = malloc(sizeof *acc);
    if (!lb || !uc || !cf || !acc) {
        free(lb), free(uc), free(cf), free(acc);
        return -1;
    }
    vec_acc_init(acc, k);
    /* Every float dot of d terms is within d 2^-24 |a||b| of the real one; four such terms
     * (the row's score, q·c, |q|, the sum) at twice that cover the bound's rounding. NaN in q
     * makes every comparison false: nothing is pruned, and the scan is vec_topk's. */
    double qn = vec_norm(q, d);
    double slack = 8.0 * d * 0x1p-24 * qn * ((double)ix->xmax + (double)ix->cmax) * 1.0001;
    vec_dots(ix->C, nlist, d, q, cf);
    for (int l = 0; l < nlist; l++) {
        uc[l] = cf[l];
        int a = ix->off[l];
        lb[l] = (struct list_bound){ix->off[l + 1] > a ? uc[l] + qn * (double)ix->rn[a] : -INFINITY, l};
    }
    int left = nlist;
    for (int i = nlist / 2 - 1; i >= 0; i--)
        bound_sift_down(lb, left, i);
    int seen = 0, rc = 0;
    while (left > 0 && rc == 0) {
        struct list_bound top = bound_pop(lb, &left);
        int l = top.l, p = ix->off[l], end = ix->off[l + 1];
        bool full = acc->len == acc->k;
        if (full && top.ub + slack < (double)acc->heap[0].score)
            break; /* this list and every later one cannot reach the k-th best */
        while (p < end) {
            int stop = end;
            if (acc->len == acc->k)
                stop = first_below(ix->rn, p, end, uc[l], qn, slack, acc->heap[0].score);
            if (stop == p)
                break;
            int m = stop - p < EXACT_CHUNK ? stop - p : EXACT_CHUNK;
            vec_acc_scan(acc, ix->P + (size_t)p * (size_t)d, m, d, q, ix->rows + p, skip, arg);
            seen += m;
            p += m;
            if (max_scored > 0 && seen > max_scored) {
                rc = -1;
                break;
            }
        }
    }
    int n = rc == 0 ? vec_acc_emit(acc, out_rows, out_scores) : -1;
    if (scored)
        *scored = seen;
    free(lb), free(uc), free(cf), free(acc);
    return n;
}
