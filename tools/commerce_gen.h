/* commerce-gen: the deterministic shop generator behind `tessera serve --demo` and
 * tools/bench/commerce. It draws products, customers, orders with items, transactions,
 * inventory snapshots and web events from fixed-seed PRNG streams and hands each record to a
 * callback; the same configuration (seed, sizes, end moment) always yields the same records.
 * Pure C11 with no Tessera dependency, so it links into the server and into the standalone
 * tools/commerce_gen_main.c alike. */
#ifndef COMMERCE_GEN_H
#define COMMERCE_GEN_H
#include <stdbool.h>
#include <stdint.h>

#define CG_ITEMS_MAX 5
#define CG_DAY_MS 86400000LL

/* Limits on what one run may ask for (every size is bounded). */
#define CG_PRODUCTS_MAX 100000
#define CG_CUSTOMERS_MAX 2000000
#define CG_ORDERS_MAX 50000000
#define CG_DAYS_MAX 3650

struct cg_config {
    uint64_t seed;
    int products;        /* catalogue size */
    int customers;
    int orders;          /* exactly this many orders over the window */
    int days;            /* window length in days, ending at end_ms */
    int64_t end_ms;      /* the window ends here (unix ms); every record is at or before it */
    int event_days;      /* web sessions cover the last event_days days (0: none) */
    bool inventory;      /* weekly snapshots per product per warehouse */
    bool transactions;   /* a sale per paid order, a refund per refunded one */
};

/* The demo shop's sizes (README "commerce / Demo data"); end_ms is the caller's. */
void cg_config_demo(struct cg_config *c, int64_t end_ms);
/* 0, or -1 with *message naming what is out of bounds. */
int cg_config_check(const struct cg_config *c, const char **message);

enum cg_kind { CG_PRODUCT, CG_CUSTOMER, CG_ORDER, CG_TRANSACTION, CG_INVENTORY, CG_EVENT,
               CG_KIND_N };
extern const char *const cg_kind_names[CG_KIND_N]; /* the data_type names: "products", ... */

/* Money in ten-thousandths of the currency unit, times in unix ms. Strings are owned by the
 * generator and valid during the callback only; optional ones are NULL when absent. */
struct cg_product {
    const char *product_id, *name, *category, *sku;
    int64_t price_m, cost_m;
    bool active;
};
struct cg_customer {
    const char *customer_id, *email, *name, *region, *channel;
    int64_t created_at;
};
struct cg_item {
    const char *product_id;
    int quantity;
    int64_t unit_price_m;
};
struct cg_order {
    const char *order_id, *customer_id, *currency, *status, *channel, *region;
    int64_t created_at, total_m;   /* total = Σ quantity × unit_price, exactly */
    int nitems;
    struct cg_item items[CG_ITEMS_MAX];
};
struct cg_transaction {
    const char *transaction_id, *type, *order_id, *customer_id, *currency, *channel, *region,
        *payment_method;
    int64_t amount_m, timestamp;
};
struct cg_inventory {
    const char *product_id, *warehouse;
    int64_t timestamp;
    int quantity, reorder_level;
};
struct cg_event {
    const char *event_id, *type, *session_id, *customer_id, *product_id;
    int64_t timestamp;
};
struct cg_record {
    enum cg_kind kind;
    union {
        struct cg_product product;
        struct cg_customer customer;
        struct cg_order order;
        struct cg_transaction transaction;
        struct cg_inventory inventory;
        struct cg_event event;
    } u;
};

/* Called once per record; a non-zero return stops the run and is returned by cg_run. */
typedef int (*cg_emit_cb)(void *arg, const struct cg_record *r);

/* Emits, in this order: every product, every customer, then day by day the day's orders
 * (each followed by its sale and, when refunded, its refund transaction) and web sessions,
 * and last the inventory snapshots. wants[kind] false skips formatting that kind (the draws for
 * the others do not change: each kind has its own PRNG stream). wants may be NULL (all).
 * 0, -1 on a bad config or out of memory, or the callback's non-zero return. */
int cg_run(const struct cg_config *c, const bool *wants, cg_emit_cb emit, void *arg);

/* ISO 8601 UTC with milliseconds, "2024-05-01T12:34:56.789Z"; out has room for 25 bytes. */
void cg_iso8601(int64_t ms, char out[32]);
#endif
