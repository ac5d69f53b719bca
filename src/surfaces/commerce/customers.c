/* commerce.md: customer analytics (section 2.2): RFM segments and customer profiles, on the
 * worker pool, from the counted orders (rfm.h has the scores and segment rules).
 *
 * Definitions (also in README.md, "### Customers and products"):
 * - as_of (default now) is the moment the analysis looks from: orders after it are ignored.
 *   currency picks the orders (rfm.h: asked, else the tenant's only one, else its default).
 * - segments: per segment customer_count, percentage = count / total_customers * 100,
 *   avg_lifetime_value = Σ monetary / count, avg_order_value = Σ monetary / Σ orders,
 *   retention_rate = the share (0..1) of the segment's customers with an order in each of the
 *   last two periods of period_days (default 90): (as_of - P, as_of] and (as_of - 2P, as_of - P].
 * - profile: lifetime_value = Σ totals, avg_order_value = lifetime_value / total_orders; the
 *   usual interval is the customer's MEAN gap between orders, (last - first) / (orders - 1);
 *   predicted_next_purchase = last + that interval (absent with one order); risk_score =
 *   1 - exp(-(as_of - last) / interval), with one order against the tenant's median of the
 *   repeat customers' mean intervals (90 days when nobody has two orders); intervals under a
 *   day count as one day. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "store/db.h"
#include "surfaces/commerce/common.h"
#include "surfaces/commerce/rfm.h"

#define PERIOD_DAYS_DEFAULT 90
#define PERIOD_DAYS_MAX 365
#define FALLBACK_INTERVAL_DAYS 90
#define MONTH_MS (30.4375 * CM_DAY_MS)
#define TOP_N 5
#define CUSTOMER_ID_MAX 200

static const char *const display_names[CM_RFM_NSEGMENTS] = {
    "Champions", "Loyal", "New", "Potential", "Need attention", "At risk", "Hibernating",
};

static double round4(double v)
{
    return round(v * 10000.0) / 10000.0;
}

/* ---- GET /api/v1/analytics/customers/segments ---- */

struct seg_acc {
    int64_t count, orders, retained;
    int64_t monetary_m, recency_days;
    int rmin, rmax, fmin, fmax, mmin, mmax;
};

static void seg_add(struct seg_acc *a, const struct cm_rfm *c)
{
    if (a->count == 0) {
        a->rmin = a->rmax = c->r;
        a->fmin = a->fmax = c->f;
        a->mmin = a->mmax = c->m;
    }
    a->count++;
    a->orders += c->frequency;
    a->monetary_m += c->monetary_m;
    a->recency_days += c->recency_days;
    a->retained += c->bought_last && c->bought_prev;
#define MINMAX(v, lo, hi) do { if ((v) < (lo)) (lo) = (v); if ((v) > (hi)) (hi) = (v); } while (0)
    MINMAX(c->r, a->rmin, a->rmax);
    MINMAX(c->f, a->fmin, a->fmax);
    MINMAX(c->m, a->mmin, a->mmax);
#undef MINMAX
}

static void score_range(struct jw *w, const char *k, int lo, int hi, bool any)
{
    jw_key(w, k);
    if (!any) {
        jw_null(w);
        return;
    }
    jw_obj_open(w);
    jw_kint(w, "min", lo);
    jw_kint(w, "max", hi);
    jw_obj_close(w);
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : 0;
}

static void segment_json(struct jw *w, int i, const struct seg_acc *a, size_t total)
{
    double n = (double)a->count;
    jw_obj_open(w);
    jw_kstr(w, "segment_id", cm_rfm_segment_names[i]);
    jw_kstr(w, "name", display_names[i]);
    jw_kstr(w, "description", cm_rfm_segment_description(i));
    jw_kint(w, "customer_count", a->count);
    jw_kdouble(w, "percentage", round4(ratio(100.0 * n, (double)total)));
    jw_kdouble(w, "avg_lifetime_value", round4(ratio(cm_money(a->monetary_m), n)));
    jw_kdouble(w, "avg_order_value", round4(ratio(cm_money(a->monetary_m), (double)a->orders)));
    jw_kdouble(w, "retention_rate", round4(ratio((double)a->retained, n)));
    jw_key(w, "characteristics");
    jw_obj_open(w);
    jw_kdouble(w, "avg_recency_days", round4(ratio((double)a->recency_days, n)));
    jw_kdouble(w, "avg_frequency", round4(ratio((double)a->orders, n)));
    jw_kdouble(w, "avg_monetary", round4(ratio(cm_money(a->monetary_m), n)));
    jw_kint(w, "retained_customers", a->retained);
    score_range(w, "recency_score", a->rmin, a->rmax, a->count > 0);
    score_range(w, "frequency_score", a->fmin, a->fmax, a->count > 0);
    score_range(w, "monetary_score", a->mmin, a->mmax, a->count > 0);
    jw_obj_close(w);
    jw_obj_close(w);
}

static int segments_write(struct hctx *h, const struct cm_rfm_set *s, int64_t as_of,
                          int period_days)
{
    struct seg_acc acc[CM_RFM_NSEGMENTS];
    memset(acc, 0, sizeof(acc));
    for (size_t i = 0; i < s->n; i++)
        seg_add(&acc[s->v[i].segment], &s->v[i]);
    struct jw w;
    cm_ok_begin(h, &w);
    jw_obj_open(&w);
    jw_key(&w, "segments");
    jw_arr_open(&w);
    for (int i = 0; i < CM_RFM_NSEGMENTS; i++)
        segment_json(&w, i, &acc[i], s->n);
    jw_arr_close(&w);
    jw_kint(&w, "total_customers", (int64_t)s->n);
    char ts[40];
    clock_iso8601(as_of, 0, ts, sizeof(ts));
    jw_kstr(&w, "segmentation_date", ts);
    jw_kstr(&w, "currency", s->currency);
    jw_kint(&w, "period_days", period_days);
    jw_obj_close(&w);
    return cm_ok_end(h, &w);
}

static int segments(struct hctx *h)
{
    struct cm_query q;
    int64_t as_of;
    int period_days;
    const char *currency;
    int r = cm_query_parse(h, &q);
    if (r == 0)
        r = cm_an_as_of(h, &q, &as_of);
    if (r == 0)
        r = cm_an_int(h, &q, "period_days", PERIOD_DAYS_DEFAULT, 1, PERIOD_DAYS_MAX, &period_days);
    if (r == 0)
        r = cm_an_currency(h, &q, &currency);
    if (r == 0)
        r = cm_an_read_begin(h->db);
    if (r < 0)
        return r;
    struct cm_rfm_set s;
    r = cm_rfm_load(h->db, h->tenant_id, as_of, currency, period_days * CM_DAY_MS, &s);
    cm_an_read_end(h->db);
    if (r < 0)
        return r;
    r = segments_write(h, &s, as_of, period_days);
    cm_rfm_set_free(&s);
    return r;
}

/* ---- GET /api/v1/analytics/customers/{customer_id}/profile ---- */

static const char SQL_KNOWN[] =
    "SELECT 1 FROM cm_customers WHERE tenant_id = ?1 AND customer_id = ?2 UNION ALL "
    "SELECT 1 FROM cm_orders WHERE tenant_id = ?1 AND customer_id = ?2 LIMIT 1";
/* One customer's orders, through cm_orders_customer (012) by name: without statistics the
 * planner takes schema/013's covering time index instead, a scan of all the tenant's orders. */
#define ORDERS_BY_CUSTOMER "cm_orders o INDEXED BY cm_orders_customer"
/* The customer's orders in the profile's currency up to as_of: ?3 currency, ?4 as_of. */
#define CUSTOMER_ORDERS                                                                    \
    " o.tenant_id = ?1 AND o.customer_id = ?2 AND o.currency = ?3 AND o.created_at <= ?4 "
#define COUNTED " AND o.status NOT IN ('cancelled', 'refunded') "
static const char SQL_CATEGORIES[] =
    "SELECT coalesce(nullif(p.category, ''), 'uncategorized'), sum(i.quantity * i.unit_price_m),"
    " sum(i.quantity) FROM " ORDERS_BY_CUSTOMER " CROSS JOIN cm_order_items i"
    " ON i.tenant_id = o.tenant_id AND i.order_id = o.order_id"
    " LEFT JOIN cm_products p ON p.tenant_id = i.tenant_id AND p.product_id = i.product_id "
    "WHERE" CUSTOMER_ORDERS COUNTED "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?5";
static const char SQL_CHANNELS[] =
    "SELECT coalesce(nullif(o.channel, ''), 'unknown'), count(*), sum(o.total_m) "
    "FROM " ORDERS_BY_CUSTOMER " WHERE" CUSTOMER_ORDERS COUNTED
    "GROUP BY 1 ORDER BY 2 DESC, 3 DESC, 1 LIMIT ?5";
static const char SQL_REGION[] =
    "SELECT o.region, count(*) FROM " ORDERS_BY_CUSTOMER " WHERE" CUSTOMER_ORDERS COUNTED
    " AND o.region != '' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1";
static const char SQL_CURRENCY[] =
    "SELECT o.currency, count(*) FROM " ORDERS_BY_CUSTOMER
    " WHERE o.tenant_id = ?1 AND o.customer_id = ?2"
    " AND o.created_at <= ?4" COUNTED "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1";
static const char SQL_ITEMS[] =
    "SELECT coalesce(sum(i.quantity), 0) FROM " ORDERS_BY_CUSTOMER " CROSS JOIN cm_order_items i"
    " ON i.tenant_id = o.tenant_id AND i.order_id = o.order_id WHERE" CUSTOMER_ORDERS COUNTED;
static const char SQL_STATUSES[] =
    "SELECT coalesce(sum(o.status = 'cancelled'), 0), coalesce(sum(o.status = 'refunded'), 0) "
    "FROM " ORDERS_BY_CUSTOMER " WHERE" CUSTOMER_ORDERS;
static const char SQL_EVENTS[] =
    "SELECT count(DISTINCT session_id), coalesce(sum(type = 'product_view'), 0),"
    " coalesce(sum(type = 'add_to_cart'), 0), coalesce(sum(type = 'purchase'), 0) "
    "FROM cm_events WHERE tenant_id = ?1 AND customer_id = ?2 AND timestamp <= ?4";

struct profile {
    const char *customer_id, *currency;
    int64_t as_of;
    const struct cm_rfm *c;
    double tenant_interval_ms;      /* median of the repeat customers' mean intervals */
    sqlite3 *db;
    const char *tenant_id;
};

/* A statement with the profile's ?1..?5 bound; NULL on failure. */
static sqlite3_stmt *prep(const struct profile *p, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(p->db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    int n = sqlite3_bind_parameter_count(st);
    sqlite3_bind_text(st, 1, p->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, p->customer_id, -1, SQLITE_STATIC);
    if (n >= 3)
        sqlite3_bind_text(st, 3, p->currency, -1, SQLITE_STATIC);
    if (n >= 4)
        sqlite3_bind_int64(st, 4, p->as_of);
    if (n >= 5)
        sqlite3_bind_int(st, 5, TOP_N);
    return st;
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median over the set's customers with 2+ orders of (last - first) / (orders - 1). */
static double median_interval(const struct cm_rfm_set *s)
{
    double *v = malloc((s->n ? s->n : 1) * sizeof(*v));
    size_t n = 0;
    if (v == NULL)
        return FALLBACK_INTERVAL_DAYS * (double)CM_DAY_MS;
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].frequency >= 2)
            v[n++] = (double)(s->v[i].last_ms - s->v[i].first_ms) / (double)(s->v[i].frequency - 1);
    double m = FALLBACK_INTERVAL_DAYS * (double)CM_DAY_MS;
    if (n > 0) {
        qsort(v, n, sizeof(*v), dcmp);
        m = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    }
    free(v);
    return m;
}

static int top_list(const struct profile *p, struct jw *w, const char *key, const char *sql,
                    const char *name_key, bool orders)
{
    sqlite3_stmt *st = prep(p, sql);
    if (st == NULL)
        return TS_E_INTERNAL;
    jw_key(w, key);
    jw_arr_open(w);
    while (sqlite3_step(st) == SQLITE_ROW) {
        jw_obj_open(w);
        jw_kstr(w, name_key, col_text(st, 0));
        if (orders) {
            jw_kint(w, "orders", sqlite3_column_int64(st, 1));
            jw_kdouble(w, "revenue", cm_money(sqlite3_column_int64(st, 2)));
        } else {
            jw_kdouble(w, "revenue", cm_money(sqlite3_column_int64(st, 1)));
            jw_kint(w, "quantity", sqlite3_column_int64(st, 2));
        }
        jw_obj_close(w);
    }
    jw_arr_close(w);
    sqlite3_finalize(st);
    return 0;
}

/* The first column of sql's one row as text under key (null without a row). */
static int first_text(const struct profile *p, struct jw *w, const char *key, const char *sql)
{
    sqlite3_stmt *st = prep(p, sql);
    if (st == NULL)
        return TS_E_INTERNAL;
    jw_kstr(w, key, sqlite3_step(st) == SQLITE_ROW ? col_text(st, 0) : NULL);
    sqlite3_finalize(st);
    return 0;
}

static int preferences(const struct profile *p, struct jw *w)
{
    jw_key(w, "preferences");
    jw_obj_open(w);
    int r = top_list(p, w, "top_categories", SQL_CATEGORIES, "category", false);
    if (r == 0)
        r = top_list(p, w, "top_channels", SQL_CHANNELS, "channel", true);
    if (r == 0)
        r = first_text(p, w, "preferred_region", SQL_REGION);
    if (r == 0)
        r = first_text(p, w, "preferred_currency", SQL_CURRENCY);
    jw_obj_close(w);
    return r;
}

/* Runs sql (one row) into v[0..n). */
static int row_ints(const struct profile *p, const char *sql, int64_t *v, int n)
{
    sqlite3_stmt *st = prep(p, sql);
    if (st == NULL)
        return TS_E_INTERNAL;
    int rc = sqlite3_step(st);
    for (int i = 0; i < n; i++)
        v[i] = rc == SQLITE_ROW ? sqlite3_column_int64(st, i) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : TS_E_INTERNAL;
}

static double interval_ms(const struct profile *p)
{
    const struct cm_rfm *c = p->c;
    double v = c->frequency >= 2 ? (double)(c->last_ms - c->first_ms) / (double)(c->frequency - 1)
                                 : p->tenant_interval_ms;
    return v < (double)CM_DAY_MS ? (double)CM_DAY_MS : v;
}

static int behavior(const struct profile *p, struct jw *w)
{
    const struct cm_rfm *c = p->c;
    int64_t items, st[2], ev[4];
    int r = row_ints(p, SQL_ITEMS, &items, 1);
    if (r == 0)
        r = row_ints(p, SQL_STATUSES, st, 2);
    if (r == 0)
        r = row_ints(p, SQL_EVENTS, ev, 4);
    if (r < 0)
        return r;
    double months = (double)(p->as_of - c->first_ms) / MONTH_MS;
    jw_key(w, "behavior_metrics");
    jw_obj_open(w);
    jw_kdouble(w, "orders_per_month", round4((double)c->frequency / (months > 1 ? months : 1)));
    jw_kdouble(w, "avg_items_per_order", round4((double)items / (double)c->frequency));
    jw_kint(w, "days_since_last_order", c->recency_days);
    jw_key(w, "avg_days_between_orders");
    if (c->frequency >= 2)
        jw_double(w, round4((double)(c->last_ms - c->first_ms) / (double)(c->frequency - 1) /
                            (double)CM_DAY_MS));
    else
        jw_null(w);
    jw_kint(w, "cancelled_orders", st[0]);
    jw_kint(w, "refunded_orders", st[1]);
    jw_kint(w, "sessions", ev[0]);
    jw_kint(w, "product_views", ev[1]);
    jw_kint(w, "add_to_cart_events", ev[2]);
    jw_kint(w, "purchase_events", ev[3]);
    jw_obj_close(w);
    return 0;
}

static void rfm_json(struct jw *w, const struct cm_rfm *c)
{
    jw_key(w, "rfm");
    jw_obj_open(w);
    jw_kint(w, "recency_days", c->recency_days);
    jw_kint(w, "frequency", c->frequency);
    jw_kdouble(w, "monetary", cm_money(c->monetary_m));
    jw_kint(w, "recency_score", c->r);
    jw_kint(w, "frequency_score", c->f);
    jw_kint(w, "monetary_score", c->m);
    jw_obj_close(w);
}

static int profile_write(struct hctx *h, const struct profile *p)
{
    const struct cm_rfm *c = p->c;
    double ltv = cm_money(c->monetary_m), interval = interval_ms(p);
    struct jw w;
    cm_ok_begin(h, &w);
    jw_obj_open(&w);
    jw_kstr(&w, "customer_id", p->customer_id);
    jw_kstr(&w, "segment", cm_rfm_segment_names[c->segment]);
    jw_kdouble(&w, "lifetime_value", ltv);
    jw_kint(&w, "total_orders", c->frequency);
    jw_kdouble(&w, "avg_order_value", round4(ltv / (double)c->frequency));
    jw_kiso(&w, "first_purchase_date", c->first_ms);
    jw_kiso(&w, "last_purchase_date", c->last_ms);
    if (c->frequency >= 2)
        jw_kiso(&w, "predicted_next_purchase", c->last_ms + (int64_t)llround(interval));
    jw_kdouble(&w, "risk_score", round4(1.0 - exp(-(double)(p->as_of - c->last_ms) / interval)));
    int r = preferences(p, &w);
    if (r == 0)
        r = behavior(p, &w);
    if (r < 0)
        return r;
    jw_kstr(&w, "currency", p->currency);
    rfm_json(&w, c);
    jw_obj_close(&w);
    return cm_ok_end(h, &w);
}

static int known(struct hctx *h, const char *customer_id, bool *ret)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h->db, SQL_KNOWN, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return TS_E_INTERNAL;
    }
    sqlite3_bind_text(st, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, customer_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return TS_E_INTERNAL;
    *ret = rc == SQLITE_ROW;
    return 0;
}

/* With the snapshot open: 404 for a customer the tenant has no record or order of, 422 for one
 * without a counted order in the currency up to as_of, else the profile. */
static int profile_in_snapshot(struct hctx *h, struct profile *p)
{
    bool is_known;
    int r = known(h, p->customer_id, &is_known);
    if (r < 0)
        return r;
    if (!is_known)
        return fail(h, TS_E_NOT_FOUND, "customer_id",
                    arena_printf(h->arena, "customer %s not found", p->customer_id));
    struct cm_rfm_set s;
    r = cm_rfm_load(h->db, h->tenant_id, p->as_of, p->currency, 0, &s);
    if (r < 0)
        return r;
    p->currency = arena_strdup(h->arena, s.currency);
    p->c = cm_rfm_find(&s, p->customer_id);
    if (p->c == NULL) {
        r = fail(h, TS_E_UNPROCESSABLE, "customer_id",
                 arena_printf(h->arena,
                              "customer %s has no counted (not cancelled or refunded) order in %s"
                              " up to as_of; the currency parameter picks another currency",
                              p->customer_id, p->currency));
    } else {
        p->tenant_interval_ms = median_interval(&s);
        r = profile_write(h, p);
    }
    cm_rfm_set_free(&s);
    return r;
}

static int profile(struct hctx *h)
{
    struct cm_query q;
    struct profile p = {.db = h->db, .tenant_id = h->tenant_id};
    p.customer_id = http_param_get(h->req, "customer_id");
    if (p.customer_id == NULL || !p.customer_id[0] || strlen(p.customer_id) > CUSTOMER_ID_MAX)
        return fail(h, TS_E_VALIDATION, "customer_id",
                    "customer_id must be 1 to 200 characters");
    int r = cm_query_parse(h, &q);
    if (r == 0)
        r = cm_an_as_of(h, &q, &p.as_of);
    if (r == 0)
        r = cm_an_currency(h, &q, &p.currency);
    if (r == 0)
        r = cm_an_read_begin(h->db);
    if (r < 0)
        return r;
    r = profile_in_snapshot(h, &p);
    cm_an_read_end(h->db);
    return r;
}

static const struct route routes[] = {
    {"GET", "/api/v1/analytics/customers/segments", segments, "commerce.read", "analytics",
     RUN_POOL, 0, 0, NULL},
    {"GET", "/api/v1/analytics/customers/{customer_id}/profile", profile, "commerce.read",
     "analytics", RUN_POOL, 0, 0, NULL},
};

const struct route_table commerce_customers_table = {SURF_COMMERCE, routes,
                                                     sizeof(routes) / sizeof(routes[0])};
