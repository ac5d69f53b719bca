/* RFM scores and segments of a tenant's customers from their counted orders (rfm.h). */
#include "surfaces/commerce/rfm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/handler.h"
#include "core/clock.h"
#include "core/err.h"
#include "store/db.h"
#include "surfaces/commerce/common.h"

enum { SEG_CHAMPIONS, SEG_LOYAL, SEG_NEW, SEG_POTENTIAL, SEG_NEED_ATTENTION, SEG_AT_RISK,
       SEG_HIBERNATING };

const char *const cm_rfm_segment_names[CM_RFM_NSEGMENTS] = {
    "champions", "loyal", "new", "potential", "need_attention", "at_risk", "hibernating",
};

static const char *const descriptions[CM_RFM_NSEGMENTS] = {
    "Bought recently, buy often and spend the most (R>=4, F>=4, M>=4)",
    "Buy often and not long ago (R>=3, F>=4)",
    "One order, placed recently (R>=4, one order)",
    "Recent customers with a few orders (R>=4, F<=3, 2+ orders)",
    "Middling recency, not frequent (R=3, F<=3)",
    "Used to buy often but not lately (R<=2, F>=3)",
    "Few orders, long ago (R<=2, F<=2)",
};

/* Per customer of the tenant in one currency (?2): id, first, last, orders, Σ total, an order
 * in the last period, one in the period before (?3 = as_of, ?4 = period length). From the
 * orders when some order is later than as_of, else from cm_customer_orders (schema/017: the
 * same figures over every counted order, kept by triggers) plus the orders of the previous
 * period: the last period's flag is then last > as_of - P. */
static const char SQL_CUSTOMERS[] =
    "SELECT customer_id, min(created_at), max(created_at), count(*), sum(total_m),"
    " max(created_at > ?3 - ?4), max(created_at > ?3 - 2 * ?4 AND created_at <= ?3 - ?4) "
    "FROM cm_orders WHERE tenant_id = ?1 AND currency = ?2 AND created_at <= ?3"
    " AND status NOT IN ('cancelled', 'refunded') "
    "GROUP BY customer_id ORDER BY customer_id";
static const char SQL_LATER[] =
    "SELECT 1 FROM cm_orders WHERE tenant_id = ?1 AND created_at > ?2 LIMIT 1";
static const char SQL_SUMMARY[] =
    "SELECT customer_id, first_at, last_at, orders, monetary_m, last_at > ?3 - ?4, 0 "
    "FROM cm_customer_orders WHERE tenant_id = ?1 AND currency = ?2 ORDER BY customer_id";
static const char SQL_PREV_PERIOD[] =
    "SELECT DISTINCT customer_id FROM cm_orders WHERE tenant_id = ?1 AND currency = ?2"
    " AND created_at > ?3 - 2 * ?4 AND created_at <= ?3 - ?4"
    " AND status NOT IN ('cancelled', 'refunded')";
/* The currencies of the tenant's counted orders: the first and the last by name. */
static const char SQL_CURRENCY_FIRST[] =
    "SELECT currency FROM cm_customer_orders WHERE tenant_id = ?1 ORDER BY currency LIMIT 1";
static const char SQL_CURRENCY_LAST[] =
    "SELECT currency FROM cm_customer_orders WHERE tenant_id = ?1 ORDER BY currency DESC LIMIT 1";
static const char SQL_TEMP_CREATE[] =
    "CREATE TEMP TABLE IF NOT EXISTS cm_segment_members("
    "customer_id TEXT PRIMARY KEY, segment TEXT NOT NULL)";
static const char SQL_TEMP_CLEAR[] = "DELETE FROM temp.cm_segment_members";
static const char SQL_TEMP_INSERT[] =
    "INSERT INTO temp.cm_segment_members(customer_id, segment) VALUES (?1, ?2)";

int cm_rfm_segment_index(const char *name)
{
    for (int i = 0; i < CM_RFM_NSEGMENTS; i++)
        if (name && strcmp(name, cm_rfm_segment_names[i]) == 0)
            return i;
    return -1;
}

bool cm_rfm_segment_known(const char *name)
{
    return cm_rfm_segment_index(name) >= 0;
}

const char *cm_rfm_segment_description(int segment)
{
    return segment >= 0 && segment < CM_RFM_NSEGMENTS ? descriptions[segment] : "";
}

static int segment_of(const struct cm_rfm *c)
{
    if (c->r >= 4 && c->f >= 4 && c->m >= 4)
        return SEG_CHAMPIONS;
    if (c->r >= 3 && c->f >= 4)
        return SEG_LOYAL;
    if (c->r >= 4 && c->frequency == 1)
        return SEG_NEW;
    if (c->r >= 4)
        return SEG_POTENTIAL;
    if (c->r == 3)
        return SEG_NEED_ATTENTION;
    if (c->f >= 3)
        return SEG_AT_RISK;
    return SEG_HIBERNATING;
}

/* The one text column of sql's first row into out (empty without a row). */
static void first_text(sqlite3 *db, const char *sql, const char *tenant_id, char out[8])
{
    sqlite3_stmt *st = NULL;
    out[0] = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, tenant_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            snprintf(out, 8, "%s", (const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
}

void cm_rfm_currency(sqlite3 *db, const char *tenant_id, const char *currency, char out[8])
{
    if (currency && currency[0]) {
        snprintf(out, 8, "%s", currency);
        return;
    }
    char first[8], last[8];
    first_text(db, SQL_CURRENCY_FIRST, tenant_id, first);
    first_text(db, SQL_CURRENCY_LAST, tenant_id, last);
    if (first[0] && strcmp(first, last) == 0)
        snprintf(out, 8, "%s", first);
    else
        cm_default_currency(db, tenant_id, out);
}

/* ---- scores ---- */

struct keyed {
    int64_t key;
    size_t i;
};

static int keyed_cmp(const void *a, const void *b)
{
    const struct keyed *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Sorted ascending by key where a larger key is better: everyone before a run of equal keys
 * is strictly worse. which: 0 R, 1 F, 2 M. */
static void score(struct cm_rfm *v, size_t n, struct keyed *k, int which)
{
    for (size_t i = 0; i < n; i++) {
        k[i].i = i;
        k[i].key = which == 0 ? -v[i].recency_days : which == 1 ? v[i].frequency : v[i].monetary_m;
    }
    qsort(k, n, sizeof(*k), keyed_cmp);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && k[i].key != k[i - 1].key)
            run = i;
        int s = 1 + (int)((5 * (uint64_t)run) / n);
        struct cm_rfm *c = &v[k[i].i];
        if (which == 0)
            c->r = s;
        else if (which == 1)
            c->f = s;
        else
            c->m = s;
    }
}

static int score_all(struct cm_rfm_set *s)
{
    if (s->n == 0)
        return 0;
    struct keyed *k = malloc(s->n * sizeof(*k));
    if (k == NULL)
        return TS_E_INTERNAL;
    for (int which = 0; which < 3; which++)
        score(s->v, s->n, k, which);
    free(k);
    for (size_t i = 0; i < s->n; i++)
        s->v[i].segment = segment_of(&s->v[i]);
    return 0;
}

/* ---- loading ---- */

struct grow {
    size_t cap, idcap, idlen;
    size_t *idoff;                  /* offset of each id in s->ids until the end */
};

static int push_row(struct cm_rfm_set *s, struct grow *g, sqlite3_stmt *st, int64_t as_of_ms)
{
    const char *id = (const char *)sqlite3_column_text(st, 0);
    size_t len = (size_t)sqlite3_column_bytes(st, 0) + 1;
    if (s->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 256;
        struct cm_rfm *v = realloc(s->v, cap * sizeof(*v));
        size_t *off = v ? realloc(g->idoff, cap * sizeof(*off)) : NULL;
        if (v)
            s->v = v;
        if (off == NULL)
            return TS_E_INTERNAL;
        g->idoff = off;
        g->cap = cap;
    }
    if (g->idlen + len > g->idcap) {
        size_t cap = g->idcap ? g->idcap : 4096;
        while (cap < g->idlen + len)
            cap *= 2;
        char *ids = realloc(s->ids, cap);
        if (ids == NULL)
            return TS_E_INTERNAL;
        s->ids = ids;
        g->idcap = cap;
    }
    memcpy(s->ids + g->idlen, id ? id : "", len);
    g->idoff[s->n] = g->idlen;
    g->idlen += len;
    struct cm_rfm *c = &s->v[s->n++];
    memset(c, 0, sizeof(*c));
    c->first_ms = sqlite3_column_int64(st, 1);
    c->last_ms = sqlite3_column_int64(st, 2);
    c->frequency = sqlite3_column_int64(st, 3);
    c->monetary_m = sqlite3_column_int64(st, 4);
    c->bought_last = sqlite3_column_int(st, 5) != 0;
    c->bought_prev = sqlite3_column_int(st, 6) != 0;
    c->recency_days = (as_of_ms - c->last_ms) / CM_DAY_MS;
    return 0;
}

static sqlite3_stmt *prep_set(sqlite3 *db, const char *sql, const char *tenant_id,
                              const char *currency, int64_t as_of_ms, int64_t period_ms)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    sqlite3_bind_text(st, 1, tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(st) >= 3) {
        sqlite3_bind_text(st, 2, currency, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, as_of_ms);
        /* without a period the flags are not used; one day keeps the arithmetic in range */
        sqlite3_bind_int64(st, 4, period_ms > 0 ? period_ms : CM_DAY_MS);
    } else {
        sqlite3_bind_int64(st, 2, as_of_ms);
    }
    return st;
}

static int step_err(int rc)
{
    return rc == SQLITE_DONE ? 0 : (db_err(rc) ? db_err(rc) : TS_E_INTERNAL);
}

/* Whether the tenant has any order after as_of (then the summary rows do not apply). */
static int orders_after(sqlite3 *db, const char *tenant_id, int64_t as_of_ms, bool *ret)
{
    sqlite3_stmt *st = prep_set(db, SQL_LATER, tenant_id, NULL, as_of_ms, 0);
    if (st == NULL)
        return TS_E_INTERNAL;
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    *ret = rc == SQLITE_ROW;
    return rc == SQLITE_ROW ? 0 : step_err(rc);
}

static int load_rows(sqlite3 *db, const char *sql, const char *tenant_id, int64_t as_of_ms,
                     int64_t period_ms, struct cm_rfm_set *s)
{
    struct grow g = {0};
    sqlite3_stmt *st = prep_set(db, sql, tenant_id, s->currency, as_of_ms, period_ms);
    int rc = SQLITE_ERROR, r = st ? 0 : TS_E_INTERNAL;
    while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        r = push_row(s, &g, st, as_of_ms);
    if (r == 0)
        r = step_err(rc);
    sqlite3_finalize(st);
    for (size_t i = 0; i < s->n; i++)
        s->v[i].customer_id = s->ids + g.idoff[i];
    free(g.idoff);
    return r;
}

/* With the summary rows: bought_prev from the orders of (as_of - 2P, as_of - P]. */
static int mark_prev_period(sqlite3 *db, const char *tenant_id, int64_t as_of_ms,
                            int64_t period_ms, struct cm_rfm_set *s)
{
    sqlite3_stmt *st = prep_set(db, SQL_PREV_PERIOD, tenant_id, s->currency, as_of_ms, period_ms);
    if (st == NULL)
        return TS_E_INTERNAL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        struct cm_rfm *c = (struct cm_rfm *)cm_rfm_find(s, id);
        if (c)
            c->bought_prev = true;
    }
    sqlite3_finalize(st);
    return step_err(rc);
}

int cm_rfm_load(sqlite3 *db, const char *tenant_id, int64_t as_of_ms, const char *currency,
                int64_t period_ms, struct cm_rfm_set *ret)
{
    struct cm_rfm_set s = {0};
    bool later;
    cm_rfm_currency(db, tenant_id, currency, s.currency);
    int r = orders_after(db, tenant_id, as_of_ms, &later);
    if (r == 0)
        r = load_rows(db, later ? SQL_CUSTOMERS : SQL_SUMMARY, tenant_id, as_of_ms, period_ms, &s);
    if (r == 0 && !later && period_ms > 0)
        r = mark_prev_period(db, tenant_id, as_of_ms, period_ms, &s);
    for (size_t i = 0; r == 0 && period_ms <= 0 && i < s.n; i++)
        s.v[i].bought_last = s.v[i].bought_prev = false;
    if (r == 0)
        r = score_all(&s);
    if (r < 0) {
        cm_rfm_set_free(&s);
        return r;
    }
    *ret = s;
    return 0;
}

void cm_rfm_set_free(struct cm_rfm_set *s)
{
    if (s == NULL)
        return;
    free(s->v);
    free(s->ids);
    memset(s, 0, sizeof(*s));
}

const struct cm_rfm *cm_rfm_find(const struct cm_rfm_set *s, const char *customer_id)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->v[mid].customer_id, customer_id);
        if (c == 0)
            return &s->v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int cm_rfm_each(sqlite3 *db, const char *tenant_id, int64_t as_of_ms, const char *currency,
                void (*fn)(void *arg, const struct cm_rfm *c), void *arg)
{
    struct cm_rfm_set s;
    int r = cm_rfm_load(db, tenant_id, as_of_ms, currency, 0, &s);
    if (r < 0)
        return r;
    for (size_t i = 0; i < s.n; i++)
        fn(arg, &s.v[i]);
    cm_rfm_set_free(&s);
    return 0;
}

/* ---- temp table ---- */

static int exec_sql(sqlite3 *db, const char *sql)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : (db_err(rc) ? db_err(rc) : TS_E_INTERNAL);
}

static bool wanted(int segment, const char *const *segments, int nsegments)
{
    if (nsegments <= 0)
        return true;
    for (int i = 0; i < nsegments; i++)
        if (cm_rfm_segment_index(segments[i]) == segment)
            return true;
    return false;
}

static int insert_members(sqlite3 *db, const struct cm_rfm_set *s, const char *const *segments,
                          int nsegments)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, SQL_TEMP_INSERT, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return TS_E_INTERNAL;
    }
    int r = 0;
    for (size_t i = 0; r == 0 && i < s->n; i++) {
        const struct cm_rfm *c = &s->v[i];
        if (!wanted(c->segment, segments, nsegments))
            continue;
        sqlite3_bind_text(st, 1, c->customer_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, cm_rfm_segment_names[c->segment], -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
            r = db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return r;
}

int cm_rfm_fill_temp(sqlite3 *db, const char *tenant_id, int64_t as_of_ms, const char *currency,
                     const char *const *segments, int nsegments)
{
    struct cm_rfm_set s;
    int r = cm_rfm_load(db, tenant_id, as_of_ms, currency, 0, &s);
    if (r < 0)
        return r;
    r = exec_sql(db, SQL_TEMP_CREATE);
    if (r == 0)
        r = exec_sql(db, SQL_TEMP_CLEAR);
    if (r == 0)
        r = insert_members(db, &s, segments, nsegments);
    cm_rfm_set_free(&s);
    return r;
}

/* ---- request pieces ---- */

static int bad_param(struct hctx *h, const char *name, const char *value, const char *message)
{
    json_t *v = json_string(value);
    field_error_add(h, name, message, v);
    json_decref(v);
    h->err_field = name;
    h->err_message = message;
    return TS_E_VALIDATION;
}

int cm_an_as_of(struct hctx *h, const struct cm_query *q, int64_t *ret)
{
    const char *v = cm_param(h, q, NULL, "as_of");
    if (v == NULL || !v[0]) {
        *ret = clock_now_ms();
        return 0;
    }
    int64_t ms;
    if (clock_parse_iso8601(v, &ms) < 0)
        return bad_param(h, "as_of", v, "as_of must be an ISO 8601 date-time");
    *ret = ms;
    return 0;
}

int cm_an_currency(struct hctx *h, const struct cm_query *q, const char **ret)
{
    const char *v = cm_param(h, q, NULL, "currency");
    if (v == NULL || !v[0]) {
        *ret = NULL;
        return 0;
    }
    bool ok = strlen(v) == 3;
    for (int i = 0; ok && i < 3; i++)
        ok = v[i] >= 'A' && v[i] <= 'Z';
    if (!ok)
        return bad_param(h, "currency", v, "currency must be an ISO 4217 code such as USD");
    *ret = v;
    return 0;
}

int cm_an_int(struct hctx *h, const struct cm_query *q, const char *name, int def, int min,
              int max, int *ret)
{
    const char *v = cm_param(h, q, NULL, name);
    if (v == NULL || !v[0]) {
        *ret = def;
        return 0;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (*end || errno || x < min || x > max)
        return bad_param(h, name, v,
                         arena_printf(h->arena, "%s must be an integer from %d to %d", name, min,
                                      max));
    *ret = (int)x;
    return 0;
}

int cm_an_read_begin(sqlite3 *db)
{
    return exec_sql(db, "BEGIN");
}

void cm_an_read_end(sqlite3 *db)
{
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
}
