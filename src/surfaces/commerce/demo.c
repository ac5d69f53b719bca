/* The --demo shop (issue 5 "Demo data"): the deterministic shop of tools/commerce_gen.c
 * (2,000 products, 20,000 customers, 200,000 orders over the 548 days ending at the moment of
 * seeding, payments, weekly stock, a week of web sessions) written straight into the cm_*
 * tables with prepared multi-row inserts inside the demo transaction, then two dashboards and
 * a few alert rules whose thresholds come from the figures just written. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "commerce_gen.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/ids.h"
#include "core/log.h"
#include "store/db.h"

/* One source per system a shop would feed from (GET /ingest/sources lists them). */
enum { S_SHOP, S_ERP, S_CRM, S_WEB, S_N };
static const struct {
    const char *id, *name, *type;
} sources[S_N] = {
    [S_SHOP] = {"demo-shop", "Demo storefront orders and payments", "api"},
    [S_ERP] = {"demo-erp", "Demo ERP catalogue and warehouse stock", "database"},
    [S_CRM] = {"demo-crm", "Demo CRM customer export", "file"},
    [S_WEB] = {"demo-web", "Demo web analytics events", "stream"},
};

/* ---------- multi-row inserts ----------
 * Records go out ROWS_PER_INSERT at a time in one INSERT ... VALUES (...), (...): one
 * statement step, one record buffer and one profile callback per 64 rows instead of per row.
 * Every row's tenant, source and ingested_at are the parameters ?1, ?2 and ?3. */
#define ROWS_PER_INSERT 64
#define COLS_MAX 13
#define ROW_TEXT_MAX 2048 /* the text of one row: every generated string is far shorter */

enum { T_PRODUCTS, T_CUSTOMERS, T_ORDERS, T_ITEMS, T_TX, T_INVENTORY, T_EVENTS, T_N };

/* shape: per column, 't' tenant, 's' source, 'i' ingested_at, 'v' a value of the row */
static const struct {
    const char *columns, *shape;
    int source;
} tables[T_N] = {
    [T_PRODUCTS] = {"cm_products(tenant_id, product_id, name, category, price_m, cost_m, sku, "
                    "active, source_id, ingested_at)", "tvvvvvvvsi", S_ERP},
    [T_CUSTOMERS] = {"cm_customers(tenant_id, customer_id, created_at, email, name, region, "
                     "channel, source_id, ingested_at)", "tvvvvvvsi", S_CRM},
    [T_ORDERS] = {"cm_orders(tenant_id, order_id, customer_id, created_at, total_m, currency, "
                  "status, channel, region, source_id, ingested_at)", "tvvvvvvvvsi", S_SHOP},
    [T_ITEMS] = {"cm_order_items(tenant_id, order_id, line, product_id, quantity, "
                 "unit_price_m)", "tvvvvv", S_SHOP},
    [T_TX] = {"cm_transactions(tenant_id, transaction_id, amount_m, timestamp, type, order_id, "
              "customer_id, currency, channel, region, payment_method, source_id, ingested_at)",
              "tvvvvvvvvvvsi", S_SHOP},
    [T_INVENTORY] = {"cm_inventory(tenant_id, product_id, warehouse, timestamp, quantity, "
                     "reorder_level, source_id, ingested_at)", "tvvvvvsi", S_ERP},
    [T_EVENTS] = {"cm_events(tenant_id, event_id, type, timestamp, session_id, customer_id, "
                  "product_id, source_id, ingested_at)", "tvvvvvvsi", S_WEB},
};

struct cell {
    enum { C_NULL, C_INT, C_TEXT } type;
    int64_t i;
    uint32_t off, len; /* C_TEXT: in rows.text */
};

/* One table's pending rows. */
struct rows {
    sqlite3_stmt *many, *one;  /* ROWS_PER_INSERT rows; one row (the tail) */
    int nvals;                 /* 'v' columns */
    int n;                     /* complete rows buffered */
    int at;                    /* cells of the row being added */
    struct cell cells[ROWS_PER_INSERT * COLS_MAX];
    char text[ROWS_PER_INSERT * ROW_TEXT_MAX];
    size_t used;
    bool overflow;             /* a row's text was longer than ROW_TEXT_MAX */
};

/* Figures of the shop gathered while it is written, for alert thresholds that fit it. */
struct shop_figures {
    int64_t recent_start;       /* the last 30 days */
    int64_t recent_revenue_m;   /* orders that count (not cancelled or refunded), USD only */
    int64_t recent_orders;      /* of those */
    int64_t recent_all_orders;  /* every order of the last 30 days */
    int64_t stock_now;          /* Σ latest snapshot per product and warehouse */
    int last_quantity;
    char last_key[64];
};

struct seed {
    sqlite3 *db;
    const char *tenant;
    int64_t now;
    struct rows *rows;         /* T_N of them */
    int64_t counts[S_N];
    struct shop_figures fig;
};

/* Steps a bound statement and resets it; 0 or TS_E_INTERNAL. */
static int run(sqlite3_stmt *q)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : TS_E_INTERNAL;
}

static void bind_text(sqlite3_stmt *q, int i, const char *v)
{
    sqlite3_bind_text(q, i, v, -1, SQLITE_STATIC);
}

/* INSERT INTO table VALUES (?1, ?4, ...), ... for nrows rows. */
static sqlite3_stmt *rows_stmt(sqlite3 *db, int t, int nrows)
{
    return db_rows_insert(db, tables[t].columns, tables[t].shape, "tsi", nrows);
}

static int rows_open(struct seed *s)
{
    for (int t = 0; t < T_N; t++) {
        struct rows *rw = &s->rows[t];
        rw->many = rows_stmt(s->db, t, ROWS_PER_INSERT);
        rw->one = rows_stmt(s->db, t, 1);
        for (const char *c = tables[t].shape; *c; c++)
            rw->nvals += *c == 'v';
        if (!rw->many || !rw->one || rw->nvals > COLS_MAX)
            return TS_E_INTERNAL;
    }
    return 0;
}

static void rows_close(struct seed *s)
{
    for (int t = 0; s->rows && t < T_N; t++) {
        sqlite3_finalize(s->rows[t].many);
        sqlite3_finalize(s->rows[t].one);
    }
}

/* Binds rows [first, first + n) of rw into q from parameter 4 on, and the constants. */
static void rows_bind(struct seed *s, int t, struct rows *rw, sqlite3_stmt *q, int first, int n)
{
    bind_text(q, 1, s->tenant);
    bind_text(q, 2, sources[tables[t].source].id);
    sqlite3_bind_int64(q, 3, s->now);
    const struct cell *c = &rw->cells[first * rw->nvals];
    for (int k = 0; k < n * rw->nvals; k++, c++) {
        if (c->type == C_INT)
            sqlite3_bind_int64(q, 4 + k, c->i);
        else if (c->type == C_TEXT)
            sqlite3_bind_text(q, 4 + k, rw->text + c->off, (int)c->len, SQLITE_STATIC);
        else
            sqlite3_bind_null(q, 4 + k);
    }
}

static int rows_flush(struct seed *s, int t)
{
    struct rows *rw = &s->rows[t];
    int rc = 0;
    if (rw->n == ROWS_PER_INSERT) {
        rows_bind(s, t, rw, rw->many, 0, rw->n);
        rc = run(rw->many);
    } else {
        for (int r = 0; rc == 0 && r < rw->n; r++) {
            rows_bind(s, t, rw, rw->one, r, 1);
            rc = run(rw->one);
        }
    }
    rw->n = rw->at = 0;
    rw->used = 0;
    return rc;
}

static struct cell *cell_next(struct rows *rw)
{
    return &rw->cells[rw->n * rw->nvals + rw->at++];
}

static void put_int(struct rows *rw, int64_t v)
{
    struct cell *c = cell_next(rw);
    c->type = C_INT;
    c->i = v;
}

static void put_text(struct rows *rw, const char *v)
{
    struct cell *c = cell_next(rw);
    size_t n = v ? strlen(v) : 0;
    c->type = v ? C_TEXT : C_NULL;
    if (!v)
        return;
    if (rw->used + n > (size_t)(rw->n + 1) * ROW_TEXT_MAX) {
        rw->overflow = true;
        n = 0;
    }
    memcpy(rw->text + rw->used, v, n);
    c->off = (uint32_t)rw->used;
    c->len = (uint32_t)n;
    rw->used += n;
}

/* The row is complete: counted to its source, and sent when the buffer is full. */
static int row_end(struct seed *s, int t)
{
    struct rows *rw = &s->rows[t];
    if (rw->overflow || rw->at != rw->nvals)
        return TS_E_INTERNAL;
    rw->at = 0;
    rw->used = (size_t)(rw->n + 1) * ROW_TEXT_MAX; /* each row owns its slice of text */
    rw->n++;
    if (t != T_ITEMS)
        s->counts[tables[t].source]++;
    return rw->n == ROWS_PER_INSERT ? rows_flush(s, t) : 0;
}

static int put_product(struct seed *s, const struct cg_product *p)
{
    struct rows *rw = &s->rows[T_PRODUCTS];
    put_text(rw, p->product_id);
    put_text(rw, p->name);
    put_text(rw, p->category);
    put_int(rw, p->price_m);
    put_int(rw, p->cost_m);
    put_text(rw, p->sku);
    put_int(rw, p->active);
    return row_end(s, T_PRODUCTS);
}

static int put_customer(struct seed *s, const struct cg_customer *c)
{
    struct rows *rw = &s->rows[T_CUSTOMERS];
    put_text(rw, c->customer_id);
    put_int(rw, c->created_at);
    put_text(rw, c->email);
    put_text(rw, c->name);
    put_text(rw, c->region);
    put_text(rw, c->channel);
    return row_end(s, T_CUSTOMERS);
}

static void order_figures(struct shop_figures *f, const struct cg_order *o)
{
    bool counts = strcmp(o->status, "cancelled") != 0 && strcmp(o->status, "refunded") != 0;
    f->recent_all_orders += o->created_at >= f->recent_start;
    if (counts && o->created_at >= f->recent_start && !strcmp(o->currency, "USD")) {
        f->recent_revenue_m += o->total_m;
        f->recent_orders++;
    }
}

static int put_order(struct seed *s, const struct cg_order *o)
{
    struct rows *rw = &s->rows[T_ORDERS];
    put_text(rw, o->order_id);
    put_text(rw, o->customer_id);
    put_int(rw, o->created_at);
    put_int(rw, o->total_m);
    put_text(rw, o->currency);
    put_text(rw, o->status);
    put_text(rw, o->channel);
    put_text(rw, o->region);
    int rc = row_end(s, T_ORDERS);
    rw = &s->rows[T_ITEMS];
    for (int i = 0; rc == 0 && i < o->nitems; i++) {
        put_text(rw, o->order_id);
        put_int(rw, i);
        put_text(rw, o->items[i].product_id);
        put_int(rw, o->items[i].quantity);
        put_int(rw, o->items[i].unit_price_m);
        rc = row_end(s, T_ITEMS);
    }
    order_figures(&s->fig, o);
    return rc;
}

static int put_transaction(struct seed *s, const struct cg_transaction *t)
{
    struct rows *rw = &s->rows[T_TX];
    put_text(rw, t->transaction_id);
    put_int(rw, t->amount_m);
    put_int(rw, t->timestamp);
    put_text(rw, t->type);
    put_text(rw, t->order_id);
    put_text(rw, t->customer_id);
    put_text(rw, t->currency);
    put_text(rw, t->channel);
    put_text(rw, t->region);
    put_text(rw, t->payment_method);
    return row_end(s, T_TX);
}

static int put_inventory(struct seed *s, const struct cg_inventory *v)
{
    struct rows *rw = &s->rows[T_INVENTORY];
    put_text(rw, v->product_id);
    put_text(rw, v->warehouse);
    put_int(rw, v->timestamp);
    put_int(rw, v->quantity);
    put_int(rw, v->reorder_level);
    /* snapshots come product by product, oldest first: a new key closes the previous one */
    char key[64];
    snprintf(key, sizeof(key), "%s/%s", v->product_id, v->warehouse);
    if (strcmp(key, s->fig.last_key) != 0) {
        s->fig.stock_now += s->fig.last_quantity;
        snprintf(s->fig.last_key, sizeof(s->fig.last_key), "%s", key);
    }
    s->fig.last_quantity = v->quantity;
    return row_end(s, T_INVENTORY);
}

static int put_event(struct seed *s, const struct cg_event *e)
{
    struct rows *rw = &s->rows[T_EVENTS];
    put_text(rw, e->event_id);
    put_text(rw, e->type);
    put_int(rw, e->timestamp);
    put_text(rw, e->session_id);
    put_text(rw, e->customer_id);
    put_text(rw, e->product_id);
    return row_end(s, T_EVENTS);
}

static int put_record_cb(void *arg, const struct cg_record *r)
{
    struct seed *s = arg;
    switch (r->kind) {
    case CG_PRODUCT: return put_product(s, &r->u.product);
    case CG_CUSTOMER: return put_customer(s, &r->u.customer);
    case CG_ORDER: return put_order(s, &r->u.order);
    case CG_TRANSACTION: return put_transaction(s, &r->u.transaction);
    case CG_INVENTORY: return put_inventory(s, &r->u.inventory);
    case CG_EVENT: return put_event(s, &r->u.event);
    default: return TS_E_INTERNAL;
    }
}

/* The sources, with how the shop was generated in their configuration (commerce-gen with
 * these options writes the same records), and the tenant's default currency. */
static int put_sources(struct seed *s, const struct cg_config *c)
{
    char conf[256], end[32];
    cg_iso8601(c->end_ms, end);
    snprintf(conf, sizeof(conf),
             "{\"generator\":\"tools/commerce_gen.c\",\"seed\":%llu,\"end\":\"%s\",\"days\":%d}",
             (unsigned long long)c->seed, end, c->days);
    sqlite3_stmt *q = NULL, *qs = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(s->db, "INSERT INTO cm_sources(tenant_id, source_id, name, type, "
                                  "status, configuration, created_at, updated_at, "
                                  "last_ingestion, total_records) "
                                  "VALUES(?1, ?2, ?3, ?4, 'active', ?5, ?6, ?6, ?6, ?7)",
                           -1, &q, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "INSERT INTO cm_settings(tenant_id, default_currency) "
                                  "VALUES(?, 'USD') ON CONFLICT(tenant_id) DO NOTHING",
                           -1, &qs, NULL) != SQLITE_OK)
        rc = TS_E_INTERNAL;
    for (int i = 0; rc == 0 && i < S_N; i++) {
        bind_text(q, 1, s->tenant);
        bind_text(q, 2, sources[i].id);
        bind_text(q, 3, sources[i].name);
        bind_text(q, 4, sources[i].type);
        bind_text(q, 5, conf);
        sqlite3_bind_int64(q, 6, s->now);
        sqlite3_bind_int64(q, 7, s->counts[i]);
        rc = run(q);
    }
    if (rc == 0) {
        bind_text(qs, 1, s->tenant);
        rc = run(qs);
    }
    sqlite3_finalize(q);
    sqlite3_finalize(qs);
    return rc;
}

/* ---------- dashboards and alert rules (schema/014) ---------- */

struct widget {
    const char *type, *title;
    int x, y, w, h, refresh;
    const char *configuration; /* a metric query (cm_metric_query_from_json) + group_by */
};

static const struct widget executive[] = {
    {"metric_card", "Revenue, last 30 days", 0, 0, 3, 2, 300,
     "{\"metric_type\":\"revenue\",\"granularity\":\"daily\",\"time_window\":\"30d\","
     "\"include_comparison\":true}"},
    {"metric_card", "Orders, last 30 days", 3, 0, 3, 2, 300,
     "{\"metric_type\":\"transactions\",\"granularity\":\"daily\",\"time_window\":\"30d\","
     "\"include_comparison\":true}"},
    {"metric_card", "Average order value, last 30 days", 6, 0, 3, 2, 300,
     "{\"metric_type\":\"average_order_value\",\"granularity\":\"daily\","
     "\"time_window\":\"30d\",\"include_comparison\":true}"},
    {"metric_card", "Conversion, last 7 days", 9, 0, 3, 2, 300,
     "{\"metric_type\":\"conversion\",\"granularity\":\"daily\",\"time_window\":\"7d\","
     "\"include_comparison\":true}"},
    {"line_chart", "Daily revenue, last 90 days", 0, 2, 8, 4, 600,
     "{\"metric_type\":\"revenue\",\"granularity\":\"daily\",\"time_window\":\"90d\"}"},
    {"bar_chart", "Revenue by region, last 30 days", 8, 2, 4, 4, 600,
     "{\"metric_type\":\"revenue\",\"granularity\":\"weekly\",\"time_window\":\"30d\","
     "\"group_by\":\"region\"}"},
    {"line_chart", "Monthly revenue, last 18 months", 0, 6, 12, 4, 3600,
     "{\"metric_type\":\"revenue\",\"granularity\":\"monthly\",\"time_window\":\"548d\"}"},
};

static const struct widget operations[] = {
    {"metric_card", "Units in stock", 0, 0, 4, 2, 600,
     "{\"metric_type\":\"inventory\",\"granularity\":\"daily\",\"time_window\":\"7d\"}"},
    {"metric_card", "New customers buying, last 7 days", 4, 0, 4, 2, 300,
     "{\"metric_type\":\"customers\",\"granularity\":\"daily\",\"time_window\":\"7d\","
     "\"include_comparison\":true}"},
    {"line_chart", "Orders per hour, last 48 hours", 0, 2, 8, 4, 60,
     "{\"metric_type\":\"transactions\",\"granularity\":\"hourly\",\"time_window\":\"48h\"}"},
    {"pie_chart", "Orders by channel, last 30 days", 8, 2, 4, 4, 600,
     "{\"metric_type\":\"transactions\",\"granularity\":\"weekly\",\"time_window\":\"30d\","
     "\"group_by\":\"channel\"}"},
    {"table", "Revenue by currency, last 7 days", 0, 6, 6, 4, 600,
     "{\"metric_type\":\"revenue\",\"granularity\":\"daily\",\"time_window\":\"7d\","
     "\"group_by\":\"currency\"}"},
    {"bar_chart", "Electronics and toys revenue, weekly", 6, 6, 6, 4, 3600,
     "{\"metric_type\":\"revenue\",\"granularity\":\"weekly\",\"time_window\":\"90d\","
     "\"filters\":{\"product_category\":[\"electronics\",\"toys-games\"]}}"},
    {"map", "Customers by region, last 30 days", 0, 10, 12, 4, 3600,
     "{\"metric_type\":\"customers\",\"granularity\":\"monthly\",\"time_window\":\"30d\","
     "\"group_by\":\"region\"}"},
};

static const struct {
    const char *name, *description, *category;
    bool is_public;
    const struct widget *widgets;
    int nwidgets;
} dashboards[] = {
    {"Executive overview", "Revenue, orders, order value and conversion of the demo shop",
     "executive", true, executive, (int)(sizeof(executive) / sizeof(executive[0]))},
    {"Operations", "Stock, order flow by hour and channel, revenue by currency", "operations",
     false, operations, (int)(sizeof(operations) / sizeof(operations[0]))},
};

static int put_dashboards(sqlite3 *db, const char *tenant, int64_t now)
{
    sqlite3_stmt *qd = NULL, *qw = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(db, "INSERT INTO cm_dashboards(tenant_id, dashboard_id, name, "
                               "description, category, is_public, created_at, updated_at) "
                               "VALUES(?,?,?,?,?,?,?,?)", -1, &qd, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO cm_widgets(tenant_id, dashboard_id, seq, widget_id, "
                               "type, title, pos_x, pos_y, pos_w, pos_h, configuration, "
                               "refresh_interval) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)", -1, &qw,
                           NULL) != SQLITE_OK)
        rc = TS_E_INTERNAL;
    for (size_t d = 0; rc == 0 && d < sizeof(dashboards) / sizeof(dashboards[0]); d++) {
        char did[UUID_STR_LEN];
        id_uuid7(did);
        bind_text(qd, 1, tenant);
        bind_text(qd, 2, did);
        bind_text(qd, 3, dashboards[d].name);
        bind_text(qd, 4, dashboards[d].description);
        bind_text(qd, 5, dashboards[d].category);
        sqlite3_bind_int(qd, 6, dashboards[d].is_public);
        sqlite3_bind_int64(qd, 7, now);
        sqlite3_bind_int64(qd, 8, now);
        rc = run(qd);
        for (int i = 0; rc == 0 && i < dashboards[d].nwidgets; i++) {
            const struct widget *w = &dashboards[d].widgets[i];
            char wid[UUID_STR_LEN];
            id_uuid7(wid);
            bind_text(qw, 1, tenant);
            bind_text(qw, 2, did);
            sqlite3_bind_int(qw, 3, i);
            bind_text(qw, 4, wid);
            bind_text(qw, 5, w->type);
            bind_text(qw, 6, w->title);
            sqlite3_bind_int(qw, 7, w->x);
            sqlite3_bind_int(qw, 8, w->y);
            sqlite3_bind_int(qw, 9, w->w);
            sqlite3_bind_int(qw, 10, w->h);
            bind_text(qw, 11, w->configuration);
            sqlite3_bind_int(qw, 12, w->refresh);
            rc = run(qw);
        }
    }
    sqlite3_finalize(qd);
    sqlite3_finalize(qw);
    return rc;
}

/* Alert rules whose thresholds are set from the shop itself, so none trips on a normal day:
 * half a normal day's USD revenue, 80% of the recent USD order value, 60% of the stock on hand
 * now, three times a normal hour's orders; and a conversion floor of 5%. */
static int put_alert_rules(sqlite3 *db, const char *tenant, int64_t now,
                           const struct shop_figures *f)
{
    double day_revenue = (double)f->recent_revenue_m / 10000.0 / 30.0;
    double aov = f->recent_orders ? (double)f->recent_revenue_m / 10000.0 / (double)f->recent_orders
                                  : 0;
    double hour_orders = (double)f->recent_all_orders / (30.0 * 24.0);
    const struct {
        const char *name, *description, *metric, *comparison, *severity, *query;
        double threshold;
    } rules[] = {
        {"USD revenue fell below half a normal day",
         "Revenue in USD over the last 24 hours against the last 30 days' daily mean", "revenue",
         "lt", "high",
         "{\"metric_type\":\"revenue\",\"granularity\":\"hourly\",\"time_window\":\"24h\","
         "\"filters\":{\"currency\":\"USD\"}}",
         floor(day_revenue * 0.5)},
        {"Average order value dropped",
         "USD average order value over the last 7 days below 80% of the last 30 days'",
         "average_order_value", "lt", "medium",
         "{\"metric_type\":\"average_order_value\",\"granularity\":\"daily\","
         "\"time_window\":\"7d\",\"filters\":{\"currency\":\"USD\"}}",
         floor(aov * 0.8 * 100) / 100},
        {"Conversion below 5%", "Sessions with a purchase over all sessions, last 7 days",
         "conversion", "lt", "medium",
         "{\"metric_type\":\"conversion\",\"granularity\":\"daily\",\"time_window\":\"7d\"}",
         0.05},
        {"Stock running low", "Units on hand across warehouses below 60% of the level at setup",
         "inventory", "lt", "critical",
         "{\"metric_type\":\"inventory\",\"granularity\":\"daily\",\"time_window\":\"24h\"}",
         floor((double)f->stock_now * 0.6)},
        {"Order spike", "Orders in the last hour above three times a normal hour", "transactions",
         "gt", "low",
         "{\"metric_type\":\"transactions\",\"granularity\":\"hourly\",\"time_window\":\"1h\"}",
         ceil(hour_orders * 3)},
    };
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "INSERT INTO cm_alert_rules(tenant_id, rule_id, name, description, "
                               "query, metric_type, comparison, threshold, severity, enabled, "
                               "created_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,1,?,?)", -1, &q,
                           NULL) != SQLITE_OK)
        return TS_E_INTERNAL;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof(rules) / sizeof(rules[0]); i++) {
        char rid[UUID_STR_LEN];
        id_uuid7(rid);
        bind_text(q, 1, tenant);
        bind_text(q, 2, rid);
        bind_text(q, 3, rules[i].name);
        bind_text(q, 4, rules[i].description);
        bind_text(q, 5, rules[i].query);
        bind_text(q, 6, rules[i].metric);
        bind_text(q, 7, rules[i].comparison);
        sqlite3_bind_double(q, 8, rules[i].threshold);
        bind_text(q, 9, rules[i].severity);
        sqlite3_bind_int64(q, 10, now);
        sqlite3_bind_int64(q, 11, now);
        rc = run(q);
    }
    sqlite3_finalize(q);
    return rc;
}

/* ---------- bulk load ---------- */

/* The record tables' secondary indexes (whoever's migration made them) are dropped for the
 * load and built again after it: one sort per index instead of millions of random b-tree
 * inserts. Their triggers that only mark rollup days dirty (schema/013) go too: one upsert
 * per row would double the load, and after it every day with records is marked dirty in one
 * statement, as 013 does for records stored before it, so the rollup job recomputes them all.
 * Any other trigger stays and fires. All of it happens inside the demo transaction, so no
 * reader sees a table without its index or a day unmarked. */
#define SAVED_MAX 64

struct saved_schema {
    char *sql[SAVED_MAX];     /* CREATE statements, as sqlite_master has them */
    int n;
    bool marks_dirty;         /* dirty-marking triggers were among them */
};

static const char saved_select[] =
    "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND type IN "
    "('index', 'trigger') AND tbl_name IN ('cm_products', 'cm_customers', 'cm_orders', "
    "'cm_order_items', 'cm_transactions', 'cm_inventory', 'cm_events')";

/* An insert trigger whose every write is an upsert into cm_rollup_dirty. */
static bool only_marks_dirty(const char *sql)
{
    const char *body = strcasestr(sql, " BEGIN");
    if (!strcasestr(sql, "INSERT ON") || !body || strcasestr(body, "DELETE") ||
        strcasestr(body, "REPLACE"))
        return false;
    int inserts = 0;
    for (const char *p = body; (p = strcasestr(p, "INSERT INTO")); p += 11, inserts++)
        if (strncasecmp(p + 12, "cm_rollup_dirty", 15) != 0)
            return false;
    int updates = 0, upserts = 0;
    for (const char *p = body; (p = strcasestr(p, "UPDATE")); p += 6)
        updates++;
    for (const char *p = body; (p = strcasestr(p, "DO UPDATE")); p += 9)
        upserts++;
    return inserts > 0 && updates == upserts;
}

static int schema_drop(sqlite3 *db, struct saved_schema *sv)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, saved_select, -1, &q, NULL) != SQLITE_OK)
        return TS_E_INTERNAL;
    char drops[SAVED_MAX][160];
    int rc = 0;
    while (rc == 0 && sqlite3_step(q) == SQLITE_ROW) {
        const char *type = (const char *)sqlite3_column_text(q, 0);
        bool trigger = strcmp(type, "trigger") == 0;
        if (trigger && !only_marks_dirty((const char *)sqlite3_column_text(q, 2)))
            continue;
        if (sv->n == SAVED_MAX)
            rc = TS_E_INTERNAL;
        else if (!(sv->sql[sv->n] = sqlite3_mprintf("%s", sqlite3_column_text(q, 2))))
            rc = -ENOMEM;
        else {
            char *d = sqlite3_mprintf("DROP %s \"%w\"", trigger ? "TRIGGER" : "INDEX",
                                      (const char *)sqlite3_column_text(q, 1));
            snprintf(drops[sv->n++], sizeof(drops[0]), "%s", d ? d : "");
            sqlite3_free(d);
            sv->marks_dirty |= trigger;
        }
    }
    sqlite3_finalize(q);
    for (int i = 0; rc == 0 && i < sv->n; i++)
        if (sqlite3_exec(db, drops[i], NULL, NULL, NULL) != SQLITE_OK)
            rc = TS_E_INTERNAL;
    return rc;
}

/* Every UTC day with an order, event or inventory snapshot of the tenant, dirty: what the
 * dropped triggers would have marked (items and products mark their orders' days). */
static const char mark_dirty[] =
    "INSERT INTO cm_rollup_dirty(tenant_id, day) SELECT ?1, day FROM ("
    "SELECT DISTINCT created_at / 86400000 AS day FROM cm_orders WHERE tenant_id = ?1 UNION "
    "SELECT DISTINCT timestamp / 86400000 FROM cm_events WHERE tenant_id = ?1 UNION "
    "SELECT DISTINCT timestamp / 86400000 FROM cm_inventory WHERE tenant_id = ?1) WHERE true "
    "ON CONFLICT DO UPDATE SET version = version + 1";

/* Creates the saved indexes and triggers again (when restore), marks the loaded days dirty
 * if dirty-marking triggers were dropped, and frees the saved statements. */
static int schema_restore(sqlite3 *db, const char *tenant, struct saved_schema *sv, bool restore)
{
    int rc = restore ? 0 : TS_E_INTERNAL;
    for (int i = 0; i < sv->n; i++) {
        if (rc == 0 && sqlite3_exec(db, sv->sql[i], NULL, NULL, NULL) != SQLITE_OK)
            rc = TS_E_INTERNAL;
        sqlite3_free(sv->sql[i]);
    }
    sv->n = 0;
    if (rc == 0 && sv->marks_dirty) {
        sqlite3_stmt *q;
        if (sqlite3_prepare_v2(db, mark_dirty, -1, &q, NULL) != SQLITE_OK)
            return TS_E_INTERNAL;
        bind_text(q, 1, tenant);
        rc = run(q);
        sqlite3_finalize(q);
    }
    return restore ? rc : 0;
}

static int pragma_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *q;
    int v = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
        return 0;
    if (sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    return v;
}

/* The records, with the indexes dropped and rebuilt around them and a page cache big enough
 * for the rebuild's sorts to stay in memory (the writer's own size is restored after). */
static int load_shop(struct seed *s, const struct cg_config *c)
{
    int old_cache = pragma_int(s->db, "PRAGMA cache_size");
    sqlite3_exec(s->db, "PRAGMA cache_size=-524288", NULL, NULL, NULL);
    struct saved_schema sv = {0};
    int rc = schema_drop(s->db, &sv);
    if (rc == 0 && !(s->rows = calloc(T_N, sizeof(*s->rows))))
        rc = -ENOMEM;
    if (rc == 0)
        rc = rows_open(s);
    if (rc == 0)
        rc = cg_run(c, NULL, put_record_cb, s) == 0 ? 0 : TS_E_INTERNAL;
    for (int t = 0; rc == 0 && t < T_N; t++)
        rc = rows_flush(s, t);
    s->fig.stock_now += s->fig.last_quantity;
    if (rc == 0)
        rc = put_sources(s, c);
    rows_close(s);
    free(s->rows);
    s->rows = NULL;
    int rc2 = schema_restore(s->db, s->tenant, &sv, rc == 0);
    char restore[64];
    snprintf(restore, sizeof(restore), "PRAGMA cache_size=%d", old_cache);
    sqlite3_exec(s->db, restore, NULL, NULL, NULL);
    return rc ? rc : rc2;
}

int commerce_demo_seed(sqlite3 *db, const char *tenant_id, double scale)
{
    struct seed s = {.db = db, .tenant = tenant_id, .now = clock_now_ms()};
    uint64_t t0 = clock_mono_ns();
    struct cg_config c;
    cg_config_demo(&c, s.now);
    /* --demo-scale (tests load a small shop): the sizes shrink, the calendar stays */
    c.products = (int)fmax(1, round(c.products * scale));
    c.customers = (int)fmax(1, round(c.customers * scale));
    c.orders = (int)round(c.orders * scale);
    s.fig.recent_start = s.now - 30 * CG_DAY_MS;
    int rc = load_shop(&s, &c);
    if (rc == 0)
        rc = put_dashboards(db, tenant_id, s.now);
    if (rc == 0)
        rc = put_alert_rules(db, tenant_id, s.now, &s.fig);
    if (rc == 0) {
        int64_t total = 0;
        for (int i = 0; i < S_N; i++)
            total += s.counts[i];
        log_msg(LOG_INFO, "commerce demo shop: %lld records in %.1f s", (long long)total,
                (double)(clock_mono_ns() - t0) / 1e9);
    }
    return rc;
}
