/* commerce.md: product performance (section 2.3), on the worker pool, from the counted orders'
 * items, the products' costs, web events and inventory snapshots of the time range.
 *
 * Definitions (also in README.md, "### Customers and products"), over [start, end) of
 * time_range and the orders that count (not cancelled/refunded) in one currency (rfm.h's rule:
 * the currency parameter, else the tenant's only one, else its default):
 * - revenue = Σ quantity × unit_price; quantity_sold = Σ quantity.
 * - margin = revenue - Σ quantity × cost with the product's (current) cost; a product without
 *   a cost has margin 0 and has_cost false, cost_of_goods_sold 0.
 * - conversion_rate = sessions with both a product_view and a purchase event of the product /
 *   sessions with a product_view of it (events in the range); 0 without views.
 * - inventory_turnover = cost of goods sold / average inventory value, both at the product's
 *   cost, which is units sold / average units on hand (so it needs no cost). Units on hand
 *   are sampled at the end of each of the range's D = ceil(span / 1 day) days, t_k = min(start +
 *   (k+1) days, end): Σ over warehouses of the latest snapshot at or before t_k (0 before a
 *   warehouse's first); the average is their mean. 0 when nothing is on hand on record.
 * - trend: the least-squares slope b of daily revenue y_k (k = 0..D-1, day k = [start + k
 *   days, start + (k+1) days)); "stable" when |b| × D <= 10% of the mean daily revenue, else
 *   "increasing" (b > 0) or "decreasing". trend_slope = b (currency units per day per day).
 * - Listed: every product of the tenant (of the category when given) and every product sold
 *   in the range that has no product record (name = its id, category ""), sorted by sort_by
 *   descending, then product_id; the first limit of them.
 * - category_summary: the same figures over all products the filter admits (not only the
 *   listed ones): sums, conversion from the summed sessions, inventory_turnover = Σ cost of
 *   goods sold / Σ average inventory value over the products with a cost, trend of the summed
 *   daily revenue. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "store/db.h"
#include "surfaces/commerce/common.h"
#include "surfaces/commerce/rfm.h"

#define LIMIT_DEFAULT 50
#define LIMIT_MAX 500
#define RANGE_MAX_DAYS 731
#define CATEGORY_MAX 200
#define STABLE_SHARE 0.10          /* |slope| x days within 10% of mean daily revenue */

#define COUNTED_IN_RANGE                                                                   \
    " o.tenant_id = ?1 AND o.created_at >= ?2 AND o.created_at < ?3 AND o.currency = ?4"   \
    " AND o.status NOT IN ('cancelled', 'refunded') "

/* Per product sold in the range: revenue, quantity, Σ day index × revenue. ?1 tenant, ?2
 * start, ?3 end, ?4 currency. From the orders: CROSS JOIN keeps the range's orders outermost
 * (the planner would otherwise walk every item of the tenant by product). */
#define SALES_FROM_ORDERS                                                                  \
    "sales AS (SELECT i.product_id AS pid, sum(i.quantity * i.unit_price_m) AS rev,"       \
    " sum(i.quantity) AS qty, sum(i.quantity * i.unit_price_m * ((o.created_at - ?2) / 86400000))" \
    " AS xy FROM cm_orders o CROSS JOIN cm_order_items i"                                  \
    " ON i.tenant_id = o.tenant_id AND i.order_id = o.order_id"                            \
    " WHERE" COUNTED_IN_RANGE "GROUP BY i.product_id)"
/* The same for a range on UTC day edges (?6 = first day, ?7 = the day after the last):
 * cm_rollup_product_day (schema/013) for the clean days, the orders for the days
 * cm_rollup_dirty marks, so the sums are exact whatever the rollup job has done. */
#define SALES_FROM_ROLLUPS                                                                 \
    "sales AS (SELECT pid, sum(rev) AS rev, sum(qty) AS qty, sum(xy) AS xy FROM ("         \
    " SELECT r.product_id AS pid, r.revenue_m AS rev, r.quantity AS qty,"                  \
    "  r.revenue_m * (r.day - ?6) AS xy FROM cm_rollup_product_day r"                      \
    " WHERE r.tenant_id = ?1 AND r.day >= ?6 AND r.day < ?7 AND r.currency = ?4"           \
    "  AND NOT EXISTS (SELECT 1 FROM cm_rollup_dirty d WHERE d.tenant_id = ?1 AND d.day = r.day)" \
    " UNION ALL"                                                                           \
    " SELECT i.product_id, i.quantity * i.unit_price_m, i.quantity,"                       \
    "  i.quantity * i.unit_price_m * (d.day - ?6)"                                         \
    " FROM cm_rollup_dirty d CROSS JOIN cm_orders o CROSS JOIN cm_order_items i"          \
    "  ON i.tenant_id = o.tenant_id AND i.order_id = o.order_id"                           \
    " WHERE d.tenant_id = ?1 AND d.day >= ?6 AND d.day < ?7 AND o.tenant_id = ?1"          \
    "  AND o.created_at >= d.day * 86400000 AND o.created_at < (d.day + 1) * 86400000"     \
    "  AND o.currency = ?4 AND o.status NOT IN ('cancelled', 'refunded')"                  \
    ") GROUP BY pid)"
/* Every product of the tenant (of category ?5 when not NULL) and every product sold without
 * a record (only without a category filter), in id order: name, category, cost and sales. */
#define PRODUCTS_WITH_SALES                                                                \
    ", ids AS (SELECT product_id AS pid FROM cm_products WHERE tenant_id = ?1"             \
    "  AND (?5 IS NULL OR category = ?5) UNION SELECT pid FROM sales) "                    \
    "SELECT ids.pid, coalesce(p.name, ids.pid), coalesce(p.category, ''), p.cost_m,"       \
    " coalesce(s.rev, 0), coalesce(s.qty, 0), coalesce(s.xy, 0) "                          \
    "FROM ids LEFT JOIN cm_products p ON p.tenant_id = ?1 AND p.product_id = ids.pid"      \
    " LEFT JOIN sales s ON s.pid = ids.pid "                                               \
    "WHERE ?5 IS NULL OR p.category = ?5 ORDER BY ids.pid"
static const char SQL_PRODUCTS[] = "WITH " SALES_FROM_ORDERS PRODUCTS_WITH_SALES;
static const char SQL_PRODUCTS_ROLLUP[] = "WITH " SALES_FROM_ROLLUPS PRODUCTS_WITH_SALES;
/* Sessions that viewed each product in the range, and of them those that bought it. */
static const char SQL_CONVERSION[] =
    "SELECT product_id, count(*), sum(bought) FROM ("
    " SELECT product_id, max(type = 'product_view') AS viewed, max(type = 'purchase') AS bought"
    " FROM cm_events WHERE tenant_id = ?1 AND timestamp >= ?2 AND timestamp < ?3"
    "  AND product_id IS NOT NULL AND type IN ('product_view', 'purchase')"
    " GROUP BY product_id, session_id) WHERE viewed GROUP BY product_id";
/* Inventory by primary key (product, warehouse, time), one listed product at a time: its
 * warehouses one after the other (a skip over the key), and of each the snapshots from the
 * latest at or before start (?4) up to the last sample time (?5), so older history is never
 * read. ?2 product, ?3 warehouse. */
static const char SQL_INV_FIRST_WAREHOUSE[] =
    "SELECT warehouse FROM cm_inventory WHERE tenant_id = ?1 AND product_id = ?2"
    " ORDER BY warehouse LIMIT 1";
static const char SQL_INV_NEXT_WAREHOUSE[] =
    "SELECT warehouse FROM cm_inventory WHERE tenant_id = ?1 AND product_id = ?2"
    " AND warehouse > ?3 ORDER BY warehouse LIMIT 1";
static const char SQL_INV_LEVELS[] =
    "SELECT timestamp, quantity FROM cm_inventory"
    " WHERE tenant_id = ?1 AND product_id = ?2 AND warehouse = ?3 AND timestamp <= ?5"
    " AND timestamp >= coalesce((SELECT max(timestamp) FROM cm_inventory WHERE tenant_id = ?1"
    "  AND product_id = ?2 AND warehouse = ?3 AND timestamp <= ?4), ?4) ORDER BY timestamp";

enum sort_key { SORT_REVENUE, SORT_QUANTITY, SORT_MARGIN };

struct prod {
    const char *id, *name, *category;
    bool has_cost;
    int64_t cost_m;
    int64_t revenue_m, qty, xy_m;   /* xy: Σ day index × revenue */
    int64_t viewed, bought;         /* sessions */
    double unit_days;               /* Σ over the D samples of units on hand */
    int64_t sort_v;
};

struct perf {
    struct hctx *h;
    int64_t start, end, days;
    const char *category, *currency;
    enum sort_key sort;
    int limit;
    struct prod *v;
    size_t n, cap;
};

/* ---- figures ---- */

static int64_t margin_m(const struct prod *p)
{
    return p->has_cost ? p->revenue_m - p->qty * p->cost_m : 0;
}

static double cogs(const struct prod *p)
{
    return p->has_cost ? cm_money(p->qty * p->cost_m) : 0;
}

/* Least-squares slope of y_k over k = 0..D-1 from Σy and Σky (money units). */
static double slope(int64_t days, double sum_y, double sum_xy)
{
    if (days < 2)
        return 0;
    double d = (double)days, xbar = (d - 1) / 2, sxx = d * (d * d - 1) / 12;
    return (sum_xy - xbar * sum_y) / sxx;
}

static const char *trend_of(int64_t days, double sum_y, double b)
{
    double mean = sum_y / (double)days;
    if (fabs(b) * (double)days <= STABLE_SHARE * mean)
        return "stable";
    return b > 0 ? "increasing" : "decreasing";
}

static double rate(double a, double b)
{
    return b > 0 ? a / b : 0;
}

/* ---- loading ---- */

static sqlite3_stmt *prep(const struct perf *pf, const char *sql, int64_t t3)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(pf->h->db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    int n = sqlite3_bind_parameter_count(st);
    sqlite3_bind_text(st, 1, pf->h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, pf->start);
    sqlite3_bind_int64(st, 3, t3);
    if (n >= 4)
        sqlite3_bind_text(st, 4, pf->currency, -1, SQLITE_STATIC);
    if (n >= 5 && pf->category)
        sqlite3_bind_text(st, 5, pf->category, -1, SQLITE_STATIC);
    if (n >= 7) {
        sqlite3_bind_int64(st, 6, pf->start / CM_DAY_MS);
        sqlite3_bind_int64(st, 7, pf->end / CM_DAY_MS);
    }
    return st;
}

static int push_product(struct perf *pf, sqlite3_stmt *st)
{
    if (pf->n == pf->cap) {
        size_t cap = pf->cap ? pf->cap * 2 : 256;
        struct prod *v = realloc(pf->v, cap * sizeof(*v));
        if (v == NULL)
            return TS_E_INTERNAL;
        pf->v = v;
        pf->cap = cap;
    }
    struct arena *a = pf->h->arena;
    struct prod *p = &pf->v[pf->n++];
    memset(p, 0, sizeof(*p));
    p->id = arena_strdup(a, col_text(st, 0));
    p->name = arena_strdup(a, col_text(st, 1));
    p->category = arena_strdup(a, col_text(st, 2));
    p->has_cost = sqlite3_column_type(st, 3) != SQLITE_NULL;
    p->cost_m = sqlite3_column_int64(st, 3);
    p->revenue_m = sqlite3_column_int64(st, 4);
    p->qty = sqlite3_column_int64(st, 5);
    p->xy_m = sqlite3_column_int64(st, 6);
    return 0;
}

static int step_all(sqlite3_stmt *st, int (*row)(struct perf *pf, sqlite3_stmt *st),
                    struct perf *pf)
{
    if (st == NULL)
        return TS_E_INTERNAL;
    int rc, r = 0;
    while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        r = row(pf, st);
    if (r == 0 && rc != SQLITE_DONE)
        r = db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
    sqlite3_finalize(st);
    return r;
}

static struct prod *find(struct perf *pf, const char *id)
{
    size_t lo = 0, hi = pf->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(pf->v[mid].id, id);
        if (c == 0)
            return &pf->v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int conversion_row(struct perf *pf, sqlite3_stmt *st)
{
    struct prod *p = find(pf, col_text(st, 0));
    if (p) {
        p->viewed = sqlite3_column_int64(st, 1);
        p->bought = sqlite3_column_int64(st, 2);
    }
    return 0;
}

static int64_t sample_at(const struct perf *pf, int64_t k)
{
    int64_t t = pf->start + (k + 1) * CM_DAY_MS;
    return t < pf->end ? t : pf->end;
}

/* One product × warehouse's snapshots against the sample times: the level at each sample is
 * the latest snapshot at or before it (0 before the first). */
struct walk {
    int64_t k, cur;
};

/* Adds the current level for every sample before ts (to the end when ts < 0). */
static void walk_until(const struct perf *pf, struct prod *p, struct walk *w, int64_t ts)
{
    while (w->k < pf->days && (ts < 0 || sample_at(pf, w->k) < ts)) {
        p->unit_days += (double)w->cur;
        w->k++;
    }
}

struct inv_stmts {
    sqlite3_stmt *first, *next, *levels;
};

static int walk_warehouse(struct perf *pf, struct inv_stmts *q, struct prod *p, const char *wh)
{
    sqlite3_stmt *st = q->levels;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 2, p->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, wh, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, pf->start);
    sqlite3_bind_int64(st, 5, sample_at(pf, pf->days - 1));
    struct walk w = {0, 0};
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        walk_until(pf, p, &w, sqlite3_column_int64(st, 0));
        w.cur = sqlite3_column_int64(st, 1);
    }
    walk_until(pf, p, &w, -1);
    return rc == SQLITE_DONE ? 0 : (db_err(rc) ? db_err(rc) : TS_E_INTERNAL);
}

/* The product's warehouse after prev (the first when prev is NULL) into wh; 0 with none. */
static int next_warehouse(struct inv_stmts *q, const struct prod *p, const char *prev,
                          char **ret)
{
    sqlite3_stmt *st = prev ? q->next : q->first;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 2, p->id, -1, SQLITE_STATIC);
    if (prev)
        sqlite3_bind_text(st, 3, prev, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    free(*ret);
    *ret = rc == SQLITE_ROW ? strdup(col_text(st, 0)) : NULL;
    if (rc == SQLITE_ROW)
        return *ret ? 1 : TS_E_INTERNAL;
    return rc == SQLITE_DONE ? 0 : (db_err(rc) ? db_err(rc) : TS_E_INTERNAL);
}

static int inventory_of(struct perf *pf, struct inv_stmts *q, struct prod *p)
{
    char *wh = NULL;
    int r;
    while ((r = next_warehouse(q, p, wh, &wh)) > 0) {
        r = walk_warehouse(pf, q, p, wh);
        if (r < 0)
            break;
    }
    free(wh);
    return r;
}

static int load_inventory(struct perf *pf)
{
    struct inv_stmts q = {prep(pf, SQL_INV_FIRST_WAREHOUSE, 0), prep(pf, SQL_INV_NEXT_WAREHOUSE, 0),
                          prep(pf, SQL_INV_LEVELS, 0)};
    int r = q.first && q.next && q.levels ? 0 : TS_E_INTERNAL;
    for (size_t i = 0; r == 0 && i < pf->n; i++)
        r = inventory_of(pf, &q, &pf->v[i]);
    sqlite3_finalize(q.first);
    sqlite3_finalize(q.next);
    sqlite3_finalize(q.levels);
    return r;
}

static int load(struct perf *pf)
{
    /* rollup rows are whole UTC days: a range on day edges can use them */
    bool days = pf->start % CM_DAY_MS == 0 && pf->end % CM_DAY_MS == 0;
    int r = step_all(prep(pf, days ? SQL_PRODUCTS_ROLLUP : SQL_PRODUCTS, pf->end), push_product,
                     pf);
    if (r == 0)
        r = step_all(prep(pf, SQL_CONVERSION, pf->end), conversion_row, pf);
    if (r == 0)
        r = load_inventory(pf);
    return r;
}

/* ---- output ---- */

static int64_t sort_value(const struct prod *p, enum sort_key k)
{
    switch (k) {
    case SORT_QUANTITY:
        return p->qty;
    case SORT_MARGIN:
        return margin_m(p);
    default:
        return p->revenue_m;
    }
}

/* sort_by descending, then product_id; sort_v holds the key (qsort has no context). */
static int prod_cmp(const void *a, const void *b)
{
    const struct prod *x = a, *y = b;
    if (x->sort_v != y->sort_v)
        return x->sort_v > y->sort_v ? -1 : 1;
    return strcmp(x->id, y->id);
}

static void product_json(struct jw *w, const struct perf *pf, const struct prod *p)
{
    double avg_units = p->unit_days / (double)pf->days;
    double b = slope(pf->days, cm_money(p->revenue_m), cm_money(p->xy_m));
    jw_obj_open(w);
    jw_kstr(w, "product_id", p->id);
    jw_kstr(w, "name", p->name);
    jw_kstr(w, "category", p->category);
    jw_kdouble(w, "revenue", cm_money(p->revenue_m));
    jw_kint(w, "quantity_sold", p->qty);
    jw_kdouble(w, "margin", cm_money(margin_m(p)));
    jw_kdouble(w, "conversion_rate", rate((double)p->bought, (double)p->viewed));
    jw_kdouble(w, "inventory_turnover", rate((double)p->qty, avg_units));
    jw_kstr(w, "trend", trend_of(pf->days, cm_money(p->revenue_m), b));
    jw_kbool(w, "has_cost", p->has_cost);
    jw_kdouble(w, "cost_of_goods_sold", cogs(p));
    jw_kdouble(w, "trend_slope", b);
    jw_kint(w, "view_sessions", p->viewed);
    jw_kint(w, "purchase_sessions", p->bought);
    jw_kdouble(w, "average_inventory", avg_units);
    jw_obj_close(w);
}

static void summary_json(struct jw *w, const struct perf *pf)
{
    int64_t rev = 0, qty = 0, mar = 0, xy = 0, viewed = 0, bought = 0, with_cost = 0;
    double cogs_sum = 0, inv_value = 0;
    for (size_t i = 0; i < pf->n; i++) {
        const struct prod *p = &pf->v[i];
        rev += p->revenue_m;
        qty += p->qty;
        mar += margin_m(p);
        xy += p->xy_m;
        viewed += p->viewed;
        bought += p->bought;
        if (p->has_cost) {
            with_cost++;
            cogs_sum += cogs(p);
            inv_value += p->unit_days / (double)pf->days * cm_money(p->cost_m);
        }
    }
    double b = slope(pf->days, cm_money(rev), cm_money(xy));
    jw_key(w, "category_summary");
    jw_obj_open(w);
    jw_kstr(w, "category", pf->category);
    jw_kint(w, "product_count", (int64_t)pf->n);
    jw_kint(w, "products_with_cost", with_cost);
    jw_kdouble(w, "revenue", cm_money(rev));
    jw_kint(w, "quantity_sold", qty);
    jw_kdouble(w, "margin", cm_money(mar));
    jw_kdouble(w, "cost_of_goods_sold", cogs_sum);
    jw_kdouble(w, "conversion_rate", rate((double)bought, (double)viewed));
    jw_kdouble(w, "inventory_turnover", rate(cogs_sum, inv_value));
    jw_kstr(w, "trend", trend_of(pf->days, cm_money(rev), b));
    jw_kdouble(w, "trend_slope", b);
    jw_obj_close(w);
}

static int perf_write(struct perf *pf)
{
    struct hctx *h = pf->h;
    for (size_t i = 0; i < pf->n; i++)
        pf->v[i].sort_v = sort_value(&pf->v[i], pf->sort);
    if (pf->n > 1)
        qsort(pf->v, pf->n, sizeof(*pf->v), prod_cmp);
    struct jw w;
    cm_ok_begin(h, &w);
    jw_obj_open(&w);
    jw_key(&w, "products");
    jw_arr_open(&w);
    for (size_t i = 0; i < pf->n && i < (size_t)pf->limit; i++)
        product_json(&w, pf, &pf->v[i]);
    jw_arr_close(&w);
    summary_json(&w, pf);
    char ts[40];
    jw_key(&w, "time_range");
    jw_obj_open(&w);
    clock_iso8601(pf->start, 0, ts, sizeof(ts));
    jw_kstr(&w, "start", ts);
    clock_iso8601(pf->end, 0, ts, sizeof(ts));
    jw_kstr(&w, "end", ts);
    jw_obj_close(&w);
    jw_kstr(&w, "currency", pf->currency);
    jw_kstr(&w, "sort_by", pf->sort == SORT_QUANTITY ? "quantity"
                           : pf->sort == SORT_MARGIN ? "margin" : "revenue");
    jw_kint(&w, "total_products", (int64_t)pf->n);
    jw_obj_close(&w);
    return cm_ok_end(h, &w);
}

/* ---- GET /api/v1/analytics/products/performance ---- */

static int bad(struct hctx *h, const char *field, const char *value, const char *message)
{
    json_t *v = json_string(value);
    field_error_add(h, field, message, v);
    json_decref(v);
    return fail(h, TS_E_VALIDATION, field, message);
}

static int parse(struct hctx *h, struct perf *pf)
{
    struct cm_query q;
    int r = cm_query_parse(h, &q);
    if (r == 0)
        r = cm_time_range(h, &q, true, RANGE_MAX_DAYS * CM_DAY_MS, &pf->start, &pf->end);
    if (r == 0)
        r = cm_an_int(h, &q, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX, &pf->limit);
    if (r == 0)
        r = cm_an_currency(h, &q, &pf->currency);
    if (r < 0)
        return r;
    const char *sort = cm_param(h, &q, NULL, "sort_by");
    if (sort == NULL || !sort[0] || !strcmp(sort, "revenue"))
        pf->sort = SORT_REVENUE;
    else if (!strcmp(sort, "quantity"))
        pf->sort = SORT_QUANTITY;
    else if (!strcmp(sort, "margin"))
        pf->sort = SORT_MARGIN;
    else
        return bad(h, "sort_by", sort, "sort_by must be one of revenue, quantity, margin");
    pf->category = cm_param(h, &q, NULL, "category");
    if (pf->category && !pf->category[0])
        pf->category = NULL;
    if (pf->category && strlen(pf->category) > CATEGORY_MAX)
        return bad(h, "category", pf->category, "category must be at most 200 characters");
    pf->days = (pf->end - pf->start + CM_DAY_MS - 1) / CM_DAY_MS;
    return 0;
}

static int performance(struct hctx *h)
{
    struct perf pf = {.h = h};
    int r = parse(h, &pf);
    if (r == 0)
        r = cm_an_read_begin(h->db);
    if (r < 0)
        return r;
    char cur[8];
    cm_rfm_currency(h->db, h->tenant_id, pf.currency, cur);
    pf.currency = arena_strdup(h->arena, cur);
    r = load(&pf);
    cm_an_read_end(h->db);
    if (r == 0)
        r = perf_write(&pf);
    free(pf.v);
    return r;
}

static const struct route routes[] = {
    {"GET", "/api/v1/analytics/products/performance", performance, "commerce.read", "analytics",
     RUN_POOL, 0, 0, NULL},
};

const struct route_table commerce_products_table = {SURF_COMMERCE, routes,
                                                    sizeof(routes) / sizeof(routes[0])};
