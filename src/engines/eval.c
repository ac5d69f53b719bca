/* Offline evaluation for the mf engine: a per-user holdout split and full-ranking recall@k and
 * NDCG@k (every item not in the user's training row is a candidate; no sampled negatives),
 * with the popularity ranking measured the same way as the baseline. */
#include "engines/mf_int.h"
#include "engines/vec.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- split */

/* Orders entry offsets by (time, column) for the "most recent" split (qsort_r). */
struct by_time {
    const int64_t *when;
    const int32_t *cols;
};

static int by_time_cmp(const void *a, const void *b, void *arg)
{
    const struct by_time *c = arg;
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    if (c->when[x] != c->when[y])
        return c->when[x] < c->when[y] ? -1 : 1;
    return (c->cols[x] > c->cols[y]) - (c->cols[x] < c->cols[y]);
}

/* Marks which of row r's entries go to test (held[e - indptr[r]] = 1). */
static void split_row(const struct mf_csr *R, const int64_t *when, int32_t r, double frac,
                      struct mf_rng *rng, int64_t *pos, char *held)
{
    int64_t b = R->indptr[r], n = R->indptr[r + 1] - b, np = 0;
    memset(held, 0, (size_t)n);
    for (int64_t e = 0; e < n; e++)
        if (R->values[b + e] > 0)
            pos[np++] = e;
    if (np < 2)
        return;
    int64_t nt = (int64_t)llround(frac * (double)np);
    if (nt < 1)
        nt = 1;
    if (nt > np - 1)
        nt = np - 1;
    if (when) {
        /* absolute entry offsets so the comparison can read times and columns */
        for (int64_t i = 0; i < np; i++)
            pos[i] += b;
        struct by_time ctx = {when, R->indices};
        qsort_r(pos, (size_t)np, sizeof *pos, by_time_cmp, &ctx);
        for (int64_t i = np - nt; i < np; i++)
            held[pos[i] - b] = 1;
        return;
    }
    /* partial Fisher-Yates: the first nt of pos are the held-out ones */
    for (int64_t i = 0; i < nt; i++) {
        int64_t j = i + (int64_t)mf__rng_below(rng, (uint32_t)(np - i));
        int64_t t = pos[i];
        pos[i] = pos[j];
        pos[j] = t;
        held[pos[i]] = 1;
    }
}

int mf_split_holdout(const struct mf_csr *R, const int64_t *when, double frac, uint64_t seed,
                     struct mf_csr *train, struct mf_csr *test)
{
    int64_t maxrow = 0;
    for (int32_t r = 0; r < R->nrows; r++)
        if (R->indptr[r + 1] - R->indptr[r] > maxrow)
            maxrow = R->indptr[r + 1] - R->indptr[r];
    int64_t *pos = malloc((size_t)(maxrow ? maxrow : 1) * sizeof *pos);
    char *held = malloc((size_t)(R->nnz ? R->nnz : 1));
    struct mf_csr tr = {0}, te = {0};
    int rc = -ENOMEM;
    if (!pos || !held)
        goto fail;
    struct mf_rng rng;
    mf__rng_seed(&rng, seed);
    int64_t ntest = 0;
    for (int32_t r = 0; r < R->nrows; r++) {
        split_row(R, when, r, frac, &rng, pos, held + R->indptr[r]);
        for (int64_t e = R->indptr[r]; e < R->indptr[r + 1]; e++)
            ntest += held[e];
    }
    tr = (struct mf_csr){R->nrows, R->ncols, R->nnz - ntest,
                         calloc((size_t)R->nrows + 1, sizeof(int64_t)),
                         malloc((size_t)(R->nnz - ntest + 1) * sizeof(int32_t)),
                         malloc((size_t)(R->nnz - ntest + 1) * sizeof(float))};
    te = (struct mf_csr){R->nrows, R->ncols, ntest, calloc((size_t)R->nrows + 1, sizeof(int64_t)),
                         malloc((size_t)(ntest + 1) * sizeof(int32_t)),
                         malloc((size_t)(ntest + 1) * sizeof(float))};
    if (!tr.indptr || !tr.indices || !tr.values || !te.indptr || !te.indices || !te.values)
        goto fail;
    int64_t a = 0, b = 0;
    for (int32_t r = 0; r < R->nrows; r++) {
        for (int64_t e = R->indptr[r]; e < R->indptr[r + 1]; e++) {
            struct mf_csr *to = held[e] ? &te : &tr;
            int64_t *at = held[e] ? &b : &a;
            to->indices[*at] = R->indices[e];
            to->values[*at] = R->values[e];
            (*at)++;
        }
        tr.indptr[r + 1] = a;
        te.indptr[r + 1] = b;
    }
    free(pos);
    free(held);
    *train = tr;
    *test = te;
    return 0;
fail:
    free(pos);
    free(held);
    mf_csr_free(&tr);
    mf_csr_free(&te);
    return rc;
}

/* ---------------------------------------------------------------- evaluation */

static bool row_contains(const struct mf_csr *R, int32_t r, int32_t c)
{
    int64_t lo = R->indptr[r], hi = R->indptr[r + 1];
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (R->indices[mid] < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < R->indptr[r + 1] && R->indices[lo] == c;
}

struct skip_arg {
    const struct mf_csr *train;
    int32_t user;
};

static bool skip_train(void *arg, int row)
{
    struct skip_arg *s = arg;
    return row_contains(s->train, s->user, row);
}

/* recall and NDCG of one ranked list against the user's test positives */
static void score_list(const struct mf_csr *test, int32_t u, const int *rows, int n, int k,
                       double *recall, double *ndcg)
{
    int32_t npos = mf_csr_row_positives(test, u);
    double dcg = 0, idcg = 0;
    int hits = 0;
    for (int r = 0; r < n; r++)
        if (row_contains(test, u, rows[r]) && mf__row_has_positive(test, u, rows[r])) {
            hits++;
            dcg += 1.0 / log2(r + 2.0);
        }
    for (int r = 0; r < k && r < npos; r++)
        idcg += 1.0 / log2(r + 2.0);
    *recall = npos ? (double)hits / npos : 0;
    *ndcg = idcg > 0 ? dcg / idcg : 0;
}

struct pop_entry {
    int32_t item, count;
};

static int pop_cmp(const void *a, const void *b)
{
    const struct pop_entry *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

/* Items by the number of train rows with a positive entry on them, best first. */
static int32_t *popularity_order(const struct mf_csr *train)
{
    struct pop_entry *p = calloc((size_t)train->ncols, sizeof *p);
    int32_t *order = malloc((size_t)train->ncols * sizeof *order);
    if (!p || !order) {
        free(p);
        free(order);
        return NULL;
    }
    for (int32_t i = 0; i < train->ncols; i++)
        p[i].item = i;
    for (int64_t e = 0; e < train->nnz; e++)
        if (train->values[e] > 0)
            p[train->indices[e]].count++;
    qsort(p, (size_t)train->ncols, sizeof *p, pop_cmp);
    for (int32_t i = 0; i < train->ncols; i++)
        order[i] = p[i].item;
    free(p);
    return order;
}

static int i32_cmp(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The users to evaluate: rows with a positive test entry, at most max_users of them chosen
 * by seed (in increasing order). */
static int32_t *eval_users(const struct mf_csr *test, int32_t max_users, uint64_t seed,
                           int32_t *ret_n)
{
    int32_t *u = malloc((size_t)(test->nrows ? test->nrows : 1) * sizeof *u), n = 0;
    if (u == NULL)
        return NULL;
    for (int32_t r = 0; r < test->nrows; r++)
        if (mf_csr_row_positives(test, r) > 0)
            u[n++] = r;
    if (max_users > 0 && n > max_users) {
        struct mf_rng rng;
        mf__rng_seed(&rng, seed ^ 0x5eed5eedULL);
        for (int32_t i = 0; i < max_users; i++) {
            int32_t j = i + (int32_t)mf__rng_below(&rng, (uint32_t)(n - i)), t = u[i];
            u[i] = u[j];
            u[j] = t;
        }
        n = max_users;
        /* back to row order: sequential reads of U */
        qsort(u, (size_t)n, sizeof *u, i32_cmp);
    }
    *ret_n = n;
    return u;
}

int mf_eval_full(const float *U, const float *V, int dim, const struct mf_csr *train,
                 const struct mf_csr *test, int k, int32_t max_users, uint64_t seed,
                 struct mf_eval *ret)
{
    if (k < 1 || k > VEC_MAX_K || train->nrows != test->nrows || train->ncols != test->ncols ||
        (U && (dim < 1 || dim > MF_MAX_DIM)))
        return -EINVAL;
    int32_t nu = 0, *users = eval_users(test, max_users, seed, &nu);
    int32_t *order = popularity_order(train);
    int *rows = malloc((size_t)k * sizeof *rows);
    if (!users || !order || !rows) {
        free(users);
        free(order);
        free(rows);
        return -ENOMEM;
    }
    struct mf_eval e = {0};
    for (int32_t t = 0; t < nu; t++) {
        int32_t u = users[t];
        double rc, nd;
        if (U) {
            struct skip_arg sa = {train, u};
            int n = vec_topk(V, train->ncols, dim, U + (size_t)u * dim, k, skip_train, &sa, rows,
                             NULL);
            score_list(test, u, rows, n, k, &rc, &nd);
            e.recall += rc;
            e.ndcg += nd;
        }
        int n = 0;
        for (int32_t i = 0; i < train->ncols && n < k; i++)
            if (!row_contains(train, u, order[i]))
                rows[n++] = order[i];
        score_list(test, u, rows, n, k, &rc, &nd);
        e.pop_recall += rc;
        e.pop_ndcg += nd;
    }
    if (nu > 0) {
        e.recall /= nu;
        e.ndcg /= nu;
        e.pop_recall /= nu;
        e.pop_ndcg /= nu;
    }
    e.users = nu;
    free(users);
    free(order);
    free(rows);
    *ret = e;
    return 0;
}
