/* Commerce rollups (schema/013): the exact figure reader over rollups and base tables, the
 * "commerce.rollup" job that recomputes dirty days, and the timer that schedules it.
 *
 * Exactness: the triggers of 013 (and 023) bump a day's version in cm_rollup_dirty in the same
 * transaction as any change to that day's records; a batch chunk of orders or events bumps
 * each of its days once itself, its rows' INSERT triggers skipped (records.c, 023). The job reads a day's version and base
 * rows in one read transaction and writes the day's rollup rows only while that version is
 * unchanged, so a clean day's rollup rows always equal a recomputation; readers take the dirty
 * days from the base tables in the same snapshot as the rollup rows. */
#include "surfaces/commerce/rollup.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "jobs/jobs.h"
#include "store/db.h"
#include "surfaces/commerce/common.h"
#include "surfaces/kinds.h"

/* ---- the reader: statements ----
 * Parameters: ?1 tenant, ?2 and ?3 the span (ms for base rows, day or hour numbers for rollup
 * rows), ?4 regions, ?5 channels (JSON arrays or NULL), ?6 currency or NULL, ?7 categories
 * (JSON array), ?8 the one category. Base statements answer one row (n, sum, min, max, fresh,
 * x, y); rollup statements one row per unit (unit, n, sum, min, max, fresh, x, y). */

#define COUNTED(p) " AND " p "status NOT IN ('cancelled', 'refunded')"
#define DIMS(p)                                                                 \
    " AND (?4 IS NULL OR " p "region IN (SELECT value FROM json_each(?4)))"     \
    " AND (?5 IS NULL OR " p "channel IN (SELECT value FROM json_each(?5)))"    \
    " AND (?6 IS NULL OR " p "currency = ?6)"
#define SEG(p) " AND " p "customer_id IN (SELECT customer_id FROM temp.cm_segment_members)"
#define ORDERS_IN_SPAN                                                          \
    " FROM cm_orders INDEXED BY cm_orders_time WHERE tenant_id = ?1 AND created_at >= ?2"    \
    " AND created_at < ?3" COUNTED("") DIMS("")

/* per counted order with an item of the categories: its in-category sums */
#define CAT_ORDERS(seg)                                                                   \
    "SELECT o.customer_id AS cid, sum(i.quantity * i.unit_price_m) AS rev,"               \
    " sum(i.quantity) AS qty, max(o.ingested_at) AS ing"                                   \
    " FROM cm_orders o INDEXED BY cm_orders_time CROSS JOIN cm_order_items i"             \
    " ON i.tenant_id = o.tenant_id AND i.order_id = o.order_id"                           \
    " CROSS JOIN cm_products p ON p.tenant_id = i.tenant_id AND p.product_id = i.product_id" \
    " WHERE o.tenant_id = ?1 AND o.created_at >= ?2 AND o.created_at < ?3"                \
    COUNTED("o.") DIMS("o.") " AND p.category IN (SELECT value FROM json_each(?7))" seg   \
    " GROUP BY o.order_id"

#define B_ORDERS(seg)                                                                    \
    "SELECT count(*), coalesce(sum(total_m), 0), min(total_m), max(total_m),"            \
    " coalesce(max(ingested_at), 0), 0, 0" ORDERS_IN_SPAN seg
#define B_ORDERS_CAT(seg)                                                                 \
    "SELECT count(*), coalesce(sum(rev), 0), min(rev), max(rev), coalesce(max(ing), 0),"  \
    " coalesce(sum(qty), 0), 0 FROM (" CAT_ORDERS(seg) ")"
#define B_CUSTOMERS(seg)                                                                  \
    "SELECT count(*), coalesce(sum(total_m), 0), NULL, NULL, coalesce(max(ingested_at), 0),"\
    " count(DISTINCT customer_id), 0" ORDERS_IN_SPAN seg
#define B_CUSTOMERS_CAT(seg)                                                              \
    "SELECT count(*), coalesce(sum(rev), 0), NULL, NULL, coalesce(max(ing), 0),"          \
    " count(DISTINCT cid), 0 FROM (" CAT_ORDERS(seg) ")"

/* the quantity of the snapshot before s of the same product and warehouse, 0 for the first */
#define INV_PREV                                                                          \
    "coalesce((SELECT p.quantity FROM cm_inventory p WHERE p.tenant_id = s.tenant_id"     \
    " AND p.product_id = s.product_id AND p.warehouse = s.warehouse"                      \
    " AND p.timestamp < s.timestamp ORDER BY p.timestamp DESC LIMIT 1), 0)"
#define INV_CAT                                                                           \
    " AND s.product_id IN (SELECT product_id FROM cm_products WHERE tenant_id = ?1"       \
    " AND category IN (SELECT value FROM json_each(?7)))"
#define B_INVENTORY(cat)                                                                  \
    "SELECT count(*), coalesce(sum(s.quantity - " INV_PREV "), 0), NULL, NULL,"           \
    " coalesce(max(s.ingested_at), 0), 0, 0 FROM cm_inventory s"                          \
    " WHERE s.tenant_id = ?1 AND s.timestamp >= ?2 AND s.timestamp < ?3" cat

static const char SQL_B_ORDERS[] = B_ORDERS("");
static const char SQL_B_ORDERS_SEG[] = B_ORDERS(SEG(""));
static const char SQL_B_ORDERS_CAT[] = B_ORDERS_CAT("");
static const char SQL_B_ORDERS_CAT_SEG[] = B_ORDERS_CAT(SEG("o."));
static const char SQL_B_CUSTOMERS[] = B_CUSTOMERS("");
static const char SQL_B_CUSTOMERS_SEG[] = B_CUSTOMERS(SEG(""));
static const char SQL_B_CUSTOMERS_CAT[] = B_CUSTOMERS_CAT("");
static const char SQL_B_CUSTOMERS_CAT_SEG[] = B_CUSTOMERS_CAT(SEG("o."));
static const char SQL_B_EVENTS[] =
    "SELECT count(*), 0, NULL, NULL, coalesce(max(ingested_at), 0), count(DISTINCT session_id),"
    " count(DISTINCT CASE WHEN type = 'purchase' THEN session_id END) FROM cm_events"
    " WHERE tenant_id = ?1 AND timestamp >= ?2 AND timestamp < ?3";
static const char SQL_B_INVENTORY[] = B_INVENTORY("");
static const char SQL_B_INVENTORY_CAT[] = B_INVENTORY(INV_CAT);

static const char SQL_U_ORDERS_DAY[] =
    "SELECT day, sum(orders), sum(revenue_m), min(min_order_m), max(max_order_m),"
    " max(last_ingested_at), 0, 0 FROM cm_rollup_orders_day"
    " WHERE tenant_id = ?1 AND day >= ?2 AND day < ?3" DIMS("") " GROUP BY day ORDER BY day";
static const char SQL_U_ORDERS_CURRENCY_DAY[] =
    "SELECT day, sum(orders), sum(revenue_m), min(min_order_m), max(max_order_m),"
    " max(last_ingested_at), 0, 0 FROM cm_rollup_orders_currency_day"
    " WHERE tenant_id = ?1 AND day >= ?2 AND day < ?3 AND (?6 IS NULL OR currency = ?6)"
    " GROUP BY day ORDER BY day";
static const char SQL_U_ORDERS_HOUR[] =
    "SELECT hour, sum(orders), sum(revenue_m), min(min_order_m), max(max_order_m),"
    " max(last_ingested_at), 0, 0 FROM cm_rollup_orders_hour"
    " WHERE tenant_id = ?1 AND hour >= ?2 AND hour < ?3 AND (?6 IS NULL OR currency = ?6)"
    " GROUP BY hour ORDER BY hour";
static const char SQL_U_CATEGORY_DAY[] =
    "SELECT day, sum(orders), sum(revenue_m), min(min_order_m), max(max_order_m),"
    " max(last_ingested_at), sum(quantity), 0 FROM cm_rollup_category_day"
    " WHERE tenant_id = ?1 AND category = ?8 AND day >= ?2 AND day < ?3" DIMS("")
    " GROUP BY day ORDER BY day";
static const char SQL_U_CUSTOMERS_DAY[] =
    "SELECT day, orders, revenue_m, NULL, NULL, last_ingested_at, customers, 0"
    " FROM cm_rollup_customers_day WHERE tenant_id = ?1 AND day >= ?2 AND day < ?3"
    " AND currency = coalesce(?6, '') ORDER BY day";
static const char SQL_U_EVENTS_DAY[] =
    "SELECT day, events, 0, NULL, NULL, last_ingested_at, sessions, purchase_sessions"
    " FROM cm_rollup_events_day WHERE tenant_id = ?1 AND day >= ?2 AND day < ?3 ORDER BY day";
static const char SQL_U_INVENTORY_DAY[] =
    "SELECT day, snapshots, delta, NULL, NULL, last_ingested_at, 0, 0"
    " FROM cm_rollup_inventory_day WHERE tenant_id = ?1 AND day >= ?2 AND day < ?3 ORDER BY day";
static const char SQL_INVENTORY_BEFORE[] =
    "SELECT coalesce(sum(snapshots), 0), coalesce(sum(delta), 0), NULL, NULL,"
    " coalesce(max(last_ingested_at), 0), 0, 0 FROM cm_rollup_inventory_day"
    " WHERE tenant_id = ?1 AND day < ?3 AND day NOT IN"
    " (SELECT day FROM cm_rollup_dirty WHERE tenant_id = ?1 AND day < ?3)";

static const char SQL_DIRTY_DAYS[] =
    "SELECT day FROM cm_rollup_dirty WHERE tenant_id = ?1 AND day >= ?2 AND day < ?3 ORDER BY day";

/* Which statements serve a source under a filter: base rows always; day and hour rollups
 * when they carry every filter asked for. */
struct plan {
    const char *base, *day, *hour;
};

static void plan_for(enum cm_src src, const struct cm_filter *f, struct plan *p)
{
    bool cat = f->ncategories > 0, dims = f->regions_json || f->channels_json;
    memset(p, 0, sizeof(*p));
    switch (src) {
    case CM_SRC_ORDERS:
        if (cat) {
            p->base = f->segments ? SQL_B_ORDERS_CAT_SEG : SQL_B_ORDERS_CAT;
            /* an order with items of two asked categories is in both rollup rows: only one
             * category adds up exactly */
            if (!f->segments && f->ncategories == 1)
                p->day = SQL_U_CATEGORY_DAY;
            return;
        }
        p->base = f->segments ? SQL_B_ORDERS_SEG : SQL_B_ORDERS;
        if (!f->segments) {
            p->day = dims ? SQL_U_ORDERS_DAY : SQL_U_ORDERS_CURRENCY_DAY;
            p->hour = dims ? NULL : SQL_U_ORDERS_HOUR;
        }
        return;
    case CM_SRC_CUSTOMERS:
        if (cat)
            p->base = f->segments ? SQL_B_CUSTOMERS_CAT_SEG : SQL_B_CUSTOMERS_CAT;
        else
            p->base = f->segments ? SQL_B_CUSTOMERS_SEG : SQL_B_CUSTOMERS;
        if (!cat && !dims && !f->segments)
            p->day = SQL_U_CUSTOMERS_DAY;
        return;
    case CM_SRC_EVENTS:
        p->base = SQL_B_EVENTS;
        p->day = SQL_U_EVENTS_DAY;
        return;
    case CM_SRC_INVENTORY:
        p->base = cat ? SQL_B_INVENTORY_CAT : SQL_B_INVENTORY;
        p->day = cat ? NULL : SQL_U_INVENTORY_DAY;
        return;
    }
}

/* ---- the reader: accumulation ---- */

void cm_acc_add(struct cm_acc *to, const struct cm_acc *from)
{
    to->n += from->n;
    to->sum += from->sum;
    to->x += from->x;
    to->y += from->y;
    if (from->fresh > to->fresh)
        to->fresh = from->fresh;
    if (from->any) {
        if (!to->any || from->min < to->min)
            to->min = from->min;
        if (!to->any || from->max > to->max)
            to->max = from->max;
        to->any = true;
    }
}

/* Columns first.. of a result row as (n, sum, min, max, fresh, x, y) added into acc. */
static void acc_add_row(struct cm_acc *acc, sqlite3_stmt *q, int first)
{
    struct cm_acc v = {
        .n = sqlite3_column_int64(q, first),
        .sum = sqlite3_column_int64(q, first + 1),
        .min = sqlite3_column_int64(q, first + 2),
        .max = sqlite3_column_int64(q, first + 3),
        .any = sqlite3_column_type(q, first + 2) != SQLITE_NULL,
        .fresh = sqlite3_column_int64(q, first + 4),
        .x = sqlite3_column_int64(q, first + 5),
        .y = sqlite3_column_int64(q, first + 6),
    };
    cm_acc_add(acc, &v);
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **ret)
{
    *ret = NULL;
    if (sql == NULL)
        return 0;
    int rc = sqlite3_prepare_v2(db, sql, -1, ret, NULL);
    if (rc != SQLITE_OK) {
        log_msg(LOG_ERROR, "commerce rollup: prepare failed: %s", sqlite3_errmsg(db));
        sqlite3_finalize(*ret);
        *ret = NULL;
        return db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
    }
    return 0;
}

static void bind_text_if(sqlite3_stmt *q, int i, const char *v)
{
    if (i > sqlite3_bind_parameter_count(q))
        return;
    if (v)
        sqlite3_bind_text(q, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, i);
}

/* The filter parameters ?1, ?4..?8 of a reader statement. */
static void bind_filter(sqlite3_stmt *q, const struct cm_filter *f)
{
    sqlite3_bind_text(q, 1, f->tenant_id, -1, SQLITE_STATIC);
    bind_text_if(q, 4, f->regions_json);
    bind_text_if(q, 5, f->channels_json);
    bind_text_if(q, 6, f->currency);
    bind_text_if(q, 7, f->categories_json);
    bind_text_if(q, 8, f->category_one);
}

static int step_err(sqlite3 *db, int rc)
{
    log_msg(LOG_ERROR, "commerce rollup: query failed: %s", sqlite3_errmsg(db));
    return db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
}

/* One base-row span into acc. */
static int base_span(sqlite3 *db, sqlite3_stmt *q, int64_t a, int64_t b, struct cm_acc *acc)
{
    sqlite3_reset(q);
    sqlite3_bind_int64(q, 2, a);
    sqlite3_bind_int64(q, 3, b);
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW)
        return step_err(db, rc);
    acc_add_row(acc, q, 0);
    sqlite3_reset(q);
    return 0;
}

/* ---- the reader: cutting cells into rollup units and base spans ---- */

struct unit {
    int64_t u;                 /* day or hour number */
    int cell;
};

struct span {
    int64_t a, b;
    int cell;
};

/* A bounded growable array. */
struct vec {
    void *v;
    size_t n, cap, size;
};

static int vec_push(struct vec *x, const void *item)
{
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 64;
        if (cap > (1u << 24))
            return -ENOMEM;
        void *v = realloc(x->v, cap * x->size);
        if (v == NULL)
            return -ENOMEM;
        x->v = v;
        x->cap = cap;
    }
    memcpy((char *)x->v + x->n * x->size, item, x->size);
    x->n++;
    return 0;
}

struct cut {
    const int64_t *dirty;      /* sorted dirty day numbers of the span */
    size_t ndirty;
    bool use_day, use_hour, whole;
    struct vec days, hours, spans;
};

static bool is_dirty(const struct cut *c, int64_t day)
{
    size_t lo = 0, hi = c->ndirty;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->dirty[mid] < day)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->ndirty && c->dirty[lo] == day;
}

static int64_t next_multiple(int64_t t, int64_t unit)
{
    return (cm_floor_div(t, unit) + 1) * unit;
}

static int span_push(struct cut *c, int64_t a, int64_t b, int cell)
{
    struct span *last = c->spans.n ? (struct span *)c->spans.v + c->spans.n - 1 : NULL;
    if (last && last->cell == cell && last->b == a) {
        last->b = b;
        return 0;
    }
    struct span s = {a, b, cell};
    return vec_push(&c->spans, &s);
}

/* Can a rollup unit of length len start at t inside the cell [a, b)? */
static bool unit_fits(const struct cut *c, int64_t t, int64_t len, int64_t a, int64_t b)
{
    if (t % len != 0 || t + len > b)
        return false;
    return !c->whole || (t == a && t + len == b);
}

/* Cuts the cell [a, b) into clean days, clean hours and base spans. */
static int cut_cell(struct cut *c, int64_t a, int64_t b, int cell)
{
    int r = 0;
    for (int64_t t = a; t < b && r == 0;) {
        int64_t day = cm_floor_div(t, CM_DAY_MS), next;
        bool dirty = is_dirty(c, day);
        if (!dirty && c->use_day && unit_fits(c, t, CM_DAY_MS, a, b)) {
            struct unit u = {day, cell};
            r = vec_push(&c->days, &u);
            t += CM_DAY_MS;
            continue;
        }
        if (!dirty && c->use_hour && unit_fits(c, t, CM_HOUR_MS, a, b)) {
            struct unit u = {cm_floor_div(t, CM_HOUR_MS), cell};
            r = vec_push(&c->hours, &u);
            t += CM_HOUR_MS;
            continue;
        }
        /* base rows up to where a unit could start next */
        if (c->whole || !(c->use_day || c->use_hour))
            next = b;
        else if (dirty)
            next = (day + 1) * CM_DAY_MS;
        else
            next = next_multiple(t, c->use_hour ? CM_HOUR_MS : CM_DAY_MS);
        if (next > b)
            next = b;
        r = span_push(c, t, next, cell);
        t = next;
    }
    return r;
}

static int load_dirty(sqlite3 *db, const char *tenant_id, int64_t from_day, int64_t to_day,
                      struct vec *out)
{
    sqlite3_stmt *q;
    int r = prepare(db, SQL_DIRTY_DAYS, &q);
    if (r < 0)
        return r;
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, from_day);
    sqlite3_bind_int64(q, 3, to_day);
    int rc;
    while (r == 0 && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t d = sqlite3_column_int64(q, 0);
        r = vec_push(out, &d);
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = step_err(db, rc);
    sqlite3_finalize(q);
    return r;
}

/* Runs q over each run of consecutive units and adds its rows to their cells. */
static int read_units(sqlite3 *db, sqlite3_stmt *q, const struct vec *units, struct cm_acc *acc)
{
    const struct unit *u = units->v;
    for (size_t i = 0; i < units->n;) {
        size_t j = i + 1;
        while (j < units->n && u[j].u == u[j - 1].u + 1)
            j++;
        sqlite3_reset(q);
        sqlite3_bind_int64(q, 2, u[i].u);
        sqlite3_bind_int64(q, 3, u[j - 1].u + 1);
        size_t k = i;
        int rc;
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            int64_t at = sqlite3_column_int64(q, 0);
            while (k < j && u[k].u < at)
                k++;
            if (k < j && u[k].u == at)
                acc_add_row(&acc[u[k].cell], q, 1);
        }
        if (rc != SQLITE_DONE)
            return step_err(db, rc);
        sqlite3_reset(q);
        i = j;
    }
    return 0;
}

static int read_spans(sqlite3 *db, sqlite3_stmt *q, const struct vec *spans, struct cm_acc *acc)
{
    const struct span *s = spans->v;
    int r = 0;
    for (size_t i = 0; r == 0 && i < spans->n; i++)
        r = base_span(db, q, s[i].a, s[i].b, &acc[s[i].cell]);
    return r;
}

int cm_rollup_read(sqlite3 *db, enum cm_src src, const struct cm_filter *f, const int64_t *edges,
                   int ncells, bool whole, struct cm_acc *acc)
{
    if (ncells <= 0)
        return 0;
    struct plan p;
    plan_for(src, f, &p);
    struct vec dirty = {NULL, 0, 0, sizeof(int64_t)};
    struct cut c = {.use_day = p.day != NULL, .use_hour = p.hour != NULL, .whole = whole,
                    .days = {NULL, 0, 0, sizeof(struct unit)},
                    .hours = {NULL, 0, 0, sizeof(struct unit)},
                    .spans = {NULL, 0, 0, sizeof(struct span)}};
    sqlite3_stmt *qb = NULL, *qd = NULL, *qh = NULL;
    int r = 0;
    if (c.use_day || c.use_hour)
        r = load_dirty(db, f->tenant_id, cm_floor_div(edges[0], CM_DAY_MS),
                       cm_floor_div(edges[ncells] - 1, CM_DAY_MS) + 1, &dirty);
    c.dirty = dirty.v;
    c.ndirty = dirty.n;
    for (int i = 0; r == 0 && i < ncells; i++)
        r = cut_cell(&c, edges[i], edges[i + 1], i);
    if (r == 0)
        r = prepare(db, p.base, &qb);
    if (r == 0 && c.days.n)
        r = prepare(db, p.day, &qd);
    if (r == 0 && c.hours.n)
        r = prepare(db, p.hour, &qh);
    if (qb)
        bind_filter(qb, f);
    if (qd)
        bind_filter(qd, f);
    if (qh)
        bind_filter(qh, f);
    if (r == 0 && qd)
        r = read_units(db, qd, &c.days, acc);
    if (r == 0 && qh)
        r = read_units(db, qh, &c.hours, acc);
    if (r == 0)
        r = read_spans(db, qb, &c.spans, acc);
    sqlite3_finalize(qb);
    sqlite3_finalize(qd);
    sqlite3_finalize(qh);
    free(dirty.v);
    free(c.days.v);
    free(c.hours.v);
    free(c.spans.v);
    return r == -ENOMEM ? TS_E_INTERNAL : r;
}

/* Dirty days before `before` as base spans, consecutive days merged. */
static int inventory_dirty_before(sqlite3 *db, sqlite3_stmt *qb, const char *tenant_id,
                                  int64_t before, struct cm_acc *acc)
{
    struct vec dirty = {NULL, 0, 0, sizeof(int64_t)};
    int r = load_dirty(db, tenant_id, INT64_MIN / CM_DAY_MS, before, &dirty);
    const int64_t *d = dirty.v;
    for (size_t i = 0; r == 0 && i < dirty.n;) {
        size_t j = i + 1;
        while (j < dirty.n && d[j] == d[j - 1] + 1)
            j++;
        r = base_span(db, qb, d[i] * CM_DAY_MS, (d[j - 1] + 1) * CM_DAY_MS, acc);
        i = j;
    }
    free(dirty.v);
    return r == -ENOMEM ? TS_E_INTERNAL : r;
}

int cm_rollup_inventory_before(sqlite3 *db, const struct cm_filter *f, int64_t t,
                               struct cm_acc *acc)
{
    struct plan p;
    plan_for(CM_SRC_INVENTORY, f, &p);
    sqlite3_stmt *qb = NULL, *qr = NULL;
    int r = prepare(db, p.base, &qb);
    if (r < 0)
        return r;
    bind_filter(qb, f);
    if (p.day == NULL) { /* no rollup serves this filter: every snapshot before t */
        r = base_span(db, qb, INT64_MIN, t, acc);
        sqlite3_finalize(qb);
        return r;
    }
    int64_t day = cm_floor_div(t, CM_DAY_MS);
    r = prepare(db, SQL_INVENTORY_BEFORE, &qr);
    if (r == 0) {
        bind_filter(qr, f);
        r = base_span(db, qr, 0, day, acc); /* ?2 unused: days before ?3 */
    }
    if (r == 0)
        r = inventory_dirty_before(db, qb, f->tenant_id, day, acc);
    if (r == 0 && day * CM_DAY_MS < t)
        r = base_span(db, qb, day * CM_DAY_MS, t, acc);
    sqlite3_finalize(qb);
    sqlite3_finalize(qr);
    return r;
}

/* ---- the job: recomputing a day ----
 * Each rollup table: the SELECT that recomputes a day's rows from the base tables (?1 tenant,
 * ?2/?3 the day's first and last-plus-one ms, ?4 the day number, ?5 its first hour number),
 * answering every column after tenant_id in the INSERT's order, and the DELETE of the day's
 * old rows (?1 tenant, ?2 day). */

/* the time index drives every per-day read: without statistics the planner may otherwise scan
 * all of a tenant's items (seconds on the demo shop) */
#define DAY_ORDERS                                                                       \
    " FROM cm_orders INDEXED BY cm_orders_time"                                          \
    " WHERE tenant_id = ?1 AND created_at >= ?2 AND created_at < ?3"                     \
    COUNTED("")
#define DAY_ITEMS                                                                          \
    " FROM cm_orders o INDEXED BY cm_orders_time CROSS JOIN cm_order_items i"              \
    " ON i.tenant_id = o.tenant_id AND i.order_id = o.order_id"                            \
    " WHERE o.tenant_id = ?1 AND o.created_at >= ?2 AND o.created_at < ?3" COUNTED("o.")

struct rtable {
    const char *select, *insert, *clear;
    int ncols;
};

#define RT_MAX_COLS 11

static const struct rtable rtables[] = {
    {"SELECT ?4, region, channel, currency, count(*), sum(total_m), min(total_m), max(total_m),"
     " max(ingested_at)" DAY_ORDERS " GROUP BY region, channel, currency",
     "INSERT INTO cm_rollup_orders_day(tenant_id, day, region, channel, currency, orders,"
     " revenue_m, min_order_m, max_order_m, last_ingested_at)"
     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
     "DELETE FROM cm_rollup_orders_day WHERE tenant_id = ?1 AND day = ?2", 9},
    {"SELECT ?4, currency, count(*), sum(total_m), min(total_m), max(total_m), max(ingested_at)"
     DAY_ORDERS " GROUP BY currency",
     "INSERT INTO cm_rollup_orders_currency_day(tenant_id, day, currency, orders, revenue_m,"
     " min_order_m, max_order_m, last_ingested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
     "DELETE FROM cm_rollup_orders_currency_day WHERE tenant_id = ?1 AND day = ?2", 7},
    {"SELECT ?5 + (created_at - ?2) / 3600000 AS h, currency, count(*), sum(total_m),"
     " min(total_m), max(total_m), max(ingested_at)" DAY_ORDERS " GROUP BY h, currency",
     "INSERT INTO cm_rollup_orders_hour(tenant_id, hour, currency, orders, revenue_m,"
     " min_order_m, max_order_m, last_ingested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
     "DELETE FROM cm_rollup_orders_hour WHERE tenant_id = ?1 AND hour >= ?2 * 24"
     " AND hour < ?2 * 24 + 24", 7},
    {"SELECT category, ?4, region, channel, currency, count(*), sum(rev), sum(qty), min(rev),"
     " max(rev), max(ing) FROM (SELECT coalesce(p.category, '') AS category,"
     " o.region AS region, o.channel AS channel, o.currency AS currency,"
     " sum(i.quantity * i.unit_price_m) AS rev, sum(i.quantity) AS qty, max(o.ingested_at) AS ing"
     " FROM cm_orders o INDEXED BY cm_orders_time CROSS JOIN cm_order_items i"
     " ON i.tenant_id = o.tenant_id AND i.order_id = o.order_id"
     " LEFT JOIN cm_products p ON p.tenant_id = i.tenant_id AND p.product_id = i.product_id"
     " WHERE o.tenant_id = ?1 AND o.created_at >= ?2 AND o.created_at < ?3" COUNTED("o.")
     " GROUP BY o.order_id, coalesce(p.category, ''))"
     " GROUP BY category, region, channel, currency",
     "INSERT INTO cm_rollup_category_day(tenant_id, category, day, region, channel, currency,"
     " orders, revenue_m, quantity, min_order_m, max_order_m, last_ingested_at)"
     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
     "DELETE FROM cm_rollup_category_day WHERE tenant_id = ?1 AND day = ?2", 11},
    {"SELECT ?4, i.product_id, o.currency, count(DISTINCT o.order_id), sum(i.quantity),"
     " sum(i.quantity * i.unit_price_m), sum(i.quantity) * (SELECT p.cost_m FROM cm_products p"
     " WHERE p.tenant_id = ?1 AND p.product_id = i.product_id), max(o.ingested_at)" DAY_ITEMS
     " GROUP BY i.product_id, o.currency",
     "INSERT INTO cm_rollup_product_day(tenant_id, day, product_id, currency, orders, quantity,"
     " revenue_m, cost_m, last_ingested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
     "DELETE FROM cm_rollup_product_day WHERE tenant_id = ?1 AND day = ?2", 8},
    {"SELECT ?4, currency, count(DISTINCT customer_id), count(*), sum(total_m), max(ingested_at)"
     DAY_ORDERS " GROUP BY currency UNION ALL"
     " SELECT ?4, '', count(DISTINCT customer_id), count(*), sum(total_m), max(ingested_at)"
     DAY_ORDERS " HAVING count(*) > 0",
     "INSERT INTO cm_rollup_customers_day(tenant_id, day, currency, customers, orders, revenue_m,"
     " last_ingested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
     "DELETE FROM cm_rollup_customers_day WHERE tenant_id = ?1 AND day = ?2", 6},
    {"SELECT ?4, count(DISTINCT session_id),"
     " count(DISTINCT CASE WHEN type = 'purchase' THEN session_id END), count(*),"
     " max(ingested_at) FROM cm_events WHERE tenant_id = ?1 AND timestamp >= ?2"
     " AND timestamp < ?3 HAVING count(*) > 0",
     "INSERT INTO cm_rollup_events_day(tenant_id, day, sessions, purchase_sessions, events,"
     " last_ingested_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
     "DELETE FROM cm_rollup_events_day WHERE tenant_id = ?1 AND day = ?2", 5},
    {"SELECT ?4, sum(s.quantity - " INV_PREV "), count(*), max(s.ingested_at)"
     " FROM cm_inventory s WHERE s.tenant_id = ?1 AND s.timestamp >= ?2 AND s.timestamp < ?3"
     " HAVING count(*) > 0",
     "INSERT INTO cm_rollup_inventory_day(tenant_id, day, delta, snapshots, last_ingested_at)"
     " VALUES (?1, ?2, ?3, ?4, ?5)",
     "DELETE FROM cm_rollup_inventory_day WHERE tenant_id = ?1 AND day = ?2", 4},
};
#define NTABLES (sizeof(rtables) / sizeof(rtables[0]))

static const char SQL_JOB_DIRTY[] =
    "SELECT day, version FROM cm_rollup_dirty WHERE tenant_id = ?1 AND day > ?2"
    " ORDER BY day LIMIT ?3";
static const char SQL_VERSION[] =
    "SELECT version FROM cm_rollup_dirty WHERE tenant_id = ?1 AND day = ?2";
static const char SQL_CLEAN[] =
    "DELETE FROM cm_rollup_dirty WHERE tenant_id = ?1 AND day = ?2 AND version = ?3";

#define CHUNK_DAYS 32          /* days per job_write */
#define CHUNK_ROWS 5000        /* rollup rows per job_write: keeps each loop-side apply short */
#define RUN_BUDGET_NS 1000000000ull /* a run stops after about a second; the timer goes on */

struct jcell {
    int type;                  /* SQLITE_INTEGER, SQLITE_TEXT or SQLITE_NULL */
    int64_t i;
    char *s;
};

struct jrow {
    int table;
    struct jcell c[RT_MAX_COLS];
};

struct jday {
    int64_t day, version;
    size_t first, n;           /* its rows */
};

/* One chunk of recomputed days, handed to the loop by job_write. */
struct jbatch {
    const char *tenant_id;
    struct jday days[CHUNK_DAYS];
    int ndays;
    struct vec rows;           /* struct jrow */
    int written;               /* days the loop wrote (version unchanged) */
};

static void batch_free(struct jbatch *b)
{
    struct jrow *rows = b->rows.v;
    for (size_t i = 0; i < b->rows.n; i++)
        for (int c = 0; c < rtables[rows[i].table].ncols; c++)
            free(rows[i].c[c].s);
    free(b->rows.v);
    b->rows = (struct vec){NULL, 0, 0, sizeof(struct jrow)};
    b->ndays = 0;
}

static int row_take(struct jbatch *b, int table, sqlite3_stmt *q)
{
    struct jrow row;
    memset(&row, 0, sizeof(row));
    row.table = table;
    for (int c = 0; c < rtables[table].ncols; c++) {
        struct jcell *cell = &row.c[c];
        cell->type = sqlite3_column_type(q, c);
        if (cell->type == SQLITE_TEXT)
            cell->s = strdup((const char *)sqlite3_column_text(q, c));
        else if (cell->type != SQLITE_NULL)
            cell->type = SQLITE_INTEGER, cell->i = sqlite3_column_int64(q, c);
        if (cell->type == SQLITE_TEXT && cell->s == NULL) {
            for (int k = 0; k < c; k++)
                free(row.c[k].s);
            return -ENOMEM;
        }
    }
    int r = vec_push(&b->rows, &row);
    if (r < 0)
        for (int c = 0; c < rtables[table].ncols; c++)
            free(row.c[c].s);
    return r;
}

/* Recomputes one day's rows of every table from the base tables. */
static int day_compute(sqlite3 *db, sqlite3_stmt *const *sel, const char *tenant_id, int64_t day,
                       struct jbatch *b)
{
    int r = 0;
    for (size_t t = 0; r == 0 && t < NTABLES; t++) {
        sqlite3_stmt *q = sel[t];
        sqlite3_reset(q);
        sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, day * CM_DAY_MS);
        sqlite3_bind_int64(q, 3, (day + 1) * CM_DAY_MS);
        sqlite3_bind_int64(q, 4, day);
        sqlite3_bind_int64(q, 5, day * 24);
        int rc;
        while (r == 0 && (rc = sqlite3_step(q)) == SQLITE_ROW)
            r = row_take(b, (int)t, q);
        if (r == 0 && rc != SQLITE_DONE)
            r = step_err(db, rc);
        sqlite3_reset(q);
    }
    return r;
}

/* Reads the next chunk of dirty days after *after, with their versions and recomputed rows,
 * in one read transaction. */
static int batch_read(struct job_run *jr, sqlite3_stmt *dirty, sqlite3_stmt *const *sel,
                      int64_t *after, struct jbatch *b)
{
    sqlite3 *db = jr->db;
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return step_err(db, sqlite3_errcode(db));
    sqlite3_reset(dirty);
    sqlite3_bind_text(dirty, 1, jr->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(dirty, 2, *after);
    sqlite3_bind_int(dirty, 3, CHUNK_DAYS);
    int rc, r = 0;
    while (b->ndays < CHUNK_DAYS && (rc = sqlite3_step(dirty)) == SQLITE_ROW) {
        struct jday *d = &b->days[b->ndays++];
        d->day = sqlite3_column_int64(dirty, 0);
        d->version = sqlite3_column_int64(dirty, 1);
    }
    if (b->ndays < CHUNK_DAYS && rc != SQLITE_DONE)
        r = step_err(db, rc);
    sqlite3_reset(dirty);
    int kept = 0;
    for (int i = 0; r == 0 && i < b->ndays; i++) {
        struct jday *d = &b->days[i];
        d->first = b->rows.n;
        r = day_compute(db, sel, jr->tenant_id, d->day, b);
        d->n = b->rows.n - d->first;
        *after = d->day;
        kept = i + 1;
        if (b->rows.n >= CHUNK_ROWS)
            break; /* the rest of the chunk waits for the next round */
    }
    if (r == 0)
        b->ndays = kept;
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    return r;
}

static int exec_stmt(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : (db_err(rc) ? db_err(rc) : TS_E_INTERNAL);
}

static int row_insert(struct db *db, const char *tenant_id, const struct jrow *row)
{
    const struct rtable *t = &rtables[row->table];
    sqlite3_stmt *st = db_stmt(db, t->insert);
    if (st == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(st, 1, tenant_id, -1, SQLITE_STATIC);
    for (int c = 0; c < t->ncols; c++) {
        const struct jcell *cell = &row->c[c];
        if (cell->type == SQLITE_TEXT)
            sqlite3_bind_text(st, c + 2, cell->s, -1, SQLITE_STATIC);
        else if (cell->type == SQLITE_INTEGER)
            sqlite3_bind_int64(st, c + 2, cell->i);
        else
            sqlite3_bind_null(st, c + 2);
    }
    return exec_stmt(st);
}

/* The day's version is still the one its rows were computed at. */
static bool day_unchanged(struct db *db, const char *tenant_id, const struct jday *d)
{
    sqlite3_stmt *q = db_stmt(db, SQL_VERSION);
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, d->day);
    bool same = sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int64(q, 0) == d->version;
    sqlite3_reset(q);
    return same;
}

static int day_write(struct db *db, const struct jbatch *b, const struct jday *d)
{
    int r = 0;
    for (size_t t = 0; r == 0 && t < NTABLES; t++) {
        sqlite3_stmt *st = db_stmt(db, rtables[t].clear);
        sqlite3_bind_text(st, 1, b->tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, d->day);
        r = exec_stmt(st);
    }
    const struct jrow *rows = b->rows.v;
    for (size_t i = d->first; r == 0 && i < d->first + d->n; i++)
        r = row_insert(db, b->tenant_id, &rows[i]);
    if (r == 0) {
        sqlite3_stmt *st = db_stmt(db, SQL_CLEAN);
        sqlite3_bind_text(st, 1, b->tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, d->day);
        sqlite3_bind_int64(st, 3, d->version);
        r = exec_stmt(st);
    }
    return r;
}

/* Loop thread, under job_write's savepoint: writes the days whose version is unchanged. */
static int batch_apply(struct db *db, void *arg)
{
    struct jbatch *b = arg;
    int r = 0;
    b->written = 0;
    for (int i = 0; r == 0 && i < b->ndays; i++) {
        if (!day_unchanged(db, b->tenant_id, &b->days[i]))
            continue; /* changed since it was read: stays dirty for the next run */
        r = day_write(db, b, &b->days[i]);
        if (r == 0)
            b->written++;
    }
    return r;
}

static void stmts_free(sqlite3_stmt **sel, sqlite3_stmt *dirty)
{
    for (size_t t = 0; t < NTABLES; t++)
        sqlite3_finalize(sel[t]);
    sqlite3_finalize(dirty);
}

/* caught_up: the run ended with no dirty day left to read (not on its time budget). */
static int job_result(struct job_run *r, int64_t read, int64_t written, bool caught_up)
{
    struct jw w;
    jw_init(&w, &r->result);
    jw_obj_open(&w);
    jw_kint(&w, "days_recomputed", read);
    jw_kint(&w, "days_written", written);
    jw_kbool(&w, "caught_up", caught_up);
    jw_obj_close(&w);
    return jw_finish(&w) < 0 ? TS_E_INTERNAL : 0;
}

/* Worker: recomputes the tenant's dirty days in day order, one chunk per job_write, for
 * about RUN_BUDGET_NS; days dirtied again meanwhile are left for the next run. Stateless
 * between runs (the dirty table is the state), so a cancelled run starts over. */
int cm_rollup_job(struct job_run *r)
{
    sqlite3_stmt *sel[NTABLES] = {NULL}, *dirty = NULL;
    int rc = prepare(r->db, SQL_JOB_DIRTY, &dirty);
    for (size_t t = 0; rc == 0 && t < NTABLES; t++)
        rc = prepare(r->db, rtables[t].select, &sel[t]);
    uint64_t t0 = clock_mono_ns();
    int64_t after = INT64_MIN, read = 0, written = 0;
    bool caught_up = false;
    struct jbatch b = {.tenant_id = r->tenant_id, .rows = {NULL, 0, 0, sizeof(struct jrow)}};
    while (rc == 0) {
        if (atomic_load(r->cancel)) {
            rc = -ECANCELED;
            break;
        }
        if (clock_mono_ns() - t0 > RUN_BUDGET_NS)
            break;
        rc = batch_read(r, dirty, sel, &after, &b);
        if (rc == 0 && b.ndays == 0) {
            caught_up = true;
            break;
        }
        if (rc == 0)
            rc = job_write(r, batch_apply, &b);
        read += b.ndays;
        written += rc == 0 ? b.written : 0;
        batch_free(&b);
        if (rc == TS_E_UNAVAILABLE)
            rc = -ECANCELED; /* the server is stopping: nothing was applied */
    }
    batch_free(&b);
    stmts_free(sel, dirty);
    if (rc == -ECANCELED) {
        buf_puts(&r->next_checkpoint, "{}");
        return rc;
    }
    if (rc < 0) {
        snprintf(r->error, sizeof(r->error), "rollup recomputation failed: %s", err_message(rc));
        return rc;
    }
    return job_result(r, read, written, caught_up);
}

/* ---- the scheduler ---- */

#define ROLLUP_EVERY_MS 500
#define PRUNE_EVERY_MS 60000
#define KEEP_COMPLETED_MS (10 * 60 * 1000LL)
#define KEEP_FAILED_MS (7 * 86400000LL)
#define TENANTS_PER_TICK 64

/* After a run that caught up (it found no dirty day left), the next may start once that run
 * has been over for PACE_FACTOR times as long as it ran: data arriving all day keeps
 * re-dirtying the same day, and recomputing it every 500 ms costs O(the day's rows) each time —
 * by evening a worker busy more than half the time (the soak's stream mix: 716 runs, up to 3 s
 * each, in 14 minutes) and a pinned CPU shared with every request. Paced, that job takes at
 * most 1 / (1 + PACE_FACTOR) of a worker; figures stay exact meanwhile (dirty days are read
 * from the base rows), only later in the rollups. A run that stopped on its time budget (a
 * backlog: an import, the demo's 18 months) is followed at once, since every dirty day it
 * leaves makes the readers scan base rows. */
#define PACE_FACTOR 4
/* A run that recomputed days and could write none of them (each was changed again while it was
 * read: a day written to all along, as by a stream) did its work for nothing, and the next would
 * too, whether or not it stopped on its time budget (one day can take longer than that): that
 * day is left to the readers' base-row scans, and the next run waits HOT_PACE_FACTOR times as
 * long as this one ran, HOT_WAIT_MIN_MS at least. In the soak's stream mix every run
 * of 10 minutes was such a run (357 of them, 56 to 840 ms, 0 days written), at a fifth of a
 * worker: 4% of one at most now. */
#define HOT_PACE_FACTOR 20
#define HOT_WAIT_MIN_MS 5000

static const char SQL_DIRTY_TENANTS[] = "SELECT DISTINCT tenant_id FROM cm_rollup_dirty LIMIT ?1";
static const char SQL_LAST_RUN[] =
    "SELECT started_at, finished_at, json_extract(result, '$.caught_up'),"
    " json_extract(result, '$.days_recomputed') > 0 AND json_extract(result, '$.days_written') = 0"
    " FROM jobs"
    " INDEXED BY jobs_tenant_status WHERE tenant_id = ?1 AND status = 'completed'"
    " AND kind = 'commerce.rollup' ORDER BY created_at DESC LIMIT 1";
/* finished rollup runs are bookkeeping, one every half second while data arrives */
static const char SQL_PRUNE_JOBS[] =
    "DELETE FROM jobs WHERE kind = 'commerce.rollup' AND ((status = 'completed'"
    " AND finished_at < ?1) OR (status = 'failed' AND finished_at < ?2))";

static uv_timer_t rollup_timer;
static bool rollup_timer_on;
static int64_t last_prune_ms;

static bool rollup_paced(struct app *app, const char *tenant_id, int64_t now)
{
    sqlite3_stmt *q = db_stmt(app->db, SQL_LAST_RUN);
    if (q == NULL)
        return false;
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    bool wait = false;
    if (sqlite3_step(q) == SQLITE_ROW) {
        int64_t ran = sqlite3_column_int64(q, 1) - sqlite3_column_int64(q, 0), pause = -1;
        if (sqlite3_column_int(q, 3) == 1) /* wrote nothing, caught up or not: HOT_PACE_FACTOR */
            pause = HOT_PACE_FACTOR * ran > HOT_WAIT_MIN_MS ? HOT_PACE_FACTOR * ran
                                                              : HOT_WAIT_MIN_MS;
        else if (sqlite3_column_int(q, 2) == 1)
            pause = PACE_FACTOR * ran;
        wait = pause >= 0 && now < sqlite3_column_int64(q, 1) + pause;
    }
    sqlite3_reset(q);
    return wait;
}

static void rollup_submit(struct app *app, const char *tenant_id)
{
    char id[UUID_STR_LEN];
    db_request_start(app->db);
    int r = jobs_submit(app->jobs, tenant_id, "commerce.rollup", "{}", id);
    db_request_end(app->db, r == 0);
    /* one run per tenant at a time: RATE_LIMITED means it is queued or running already */
    if (r < 0 && r != TS_E_RATE_LIMITED && r != TS_E_BUSY && r != TS_E_UNAVAILABLE)
        log_msg(LOG_WARN, "commerce rollup: cannot queue a run for %s: %s", tenant_id,
                err_message(r));
}

static void rollup_prune(struct app *app, int64_t now)
{
    if (now - last_prune_ms < PRUNE_EVERY_MS)
        return;
    last_prune_ms = now;
    db_request_start(app->db);
    int r = db_write_begin(app->db);
    if (r == 0) {
        sqlite3_stmt *st = db_stmt(app->db, SQL_PRUNE_JOBS);
        sqlite3_bind_int64(st, 1, now - KEEP_COMPLETED_MS);
        sqlite3_bind_int64(st, 2, now - KEEP_FAILED_MS);
        r = exec_stmt(st);
    }
    db_request_end(app->db, r == 0);
}

static void rollup_timer_cb(uv_timer_t *t)
{
    struct app *app = t->data;
    if (app->draining)
        return;
    char tenants[TENANTS_PER_TICK][128];
    int n = 0;
    sqlite3_stmt *q = db_stmt(app->db, SQL_DIRTY_TENANTS);
    sqlite3_bind_int(q, 1, TENANTS_PER_TICK);
    while (n < TENANTS_PER_TICK && sqlite3_step(q) == SQLITE_ROW)
        snprintf(tenants[n++], sizeof(tenants[0]), "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_reset(q);
    int64_t now = clock_now_ms();
    for (int i = 0; i < n; i++)
        if (!rollup_paced(app, tenants[i], now))
            rollup_submit(app, tenants[i]);
    rollup_prune(app, now);
}

void cm_rollups_start(struct app *app)
{
    uv_timer_init(app->loop, &rollup_timer);
    rollup_timer.data = app;
    uv_timer_start(&rollup_timer, rollup_timer_cb, ROLLUP_EVERY_MS, ROLLUP_EVERY_MS);
    rollup_timer_on = true;
}

void cm_rollups_stop(void)
{
    if (!rollup_timer_on)
        return;
    rollup_timer_on = false;
    uv_timer_stop(&rollup_timer);
    uv_close((uv_handle_t *)&rollup_timer, NULL);
}
