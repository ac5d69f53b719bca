/* The commerce rollups (schema/013): the exact figure reader the metric engine adds up (rollup
 * rows for clean days, base rows for everything else), and the "commerce.rollup" job that
 * keeps the rollup rows equal to a recomputation of the base tables. */
#ifndef TS_COMMERCE_ROLLUP_H
#define TS_COMMERCE_ROLLUP_H
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#ifndef CM_DAY_MS
#define CM_DAY_MS 86400000LL
#endif
#define CM_HOUR_MS 3600000LL

/* What is added up. Every source counts only what its metric means (README "What the
 * figures mean"): orders are the counted ones (not cancelled or refunded). */
enum cm_src {
    CM_SRC_ORDERS,       /* n orders, sum Σ total_m, min/max order total; with categories the
                          * in-category items only: n orders with such an item, sum their
                          * Σ quantity × unit_price_m, min/max that per-order sum, x quantity */
    CM_SRC_CUSTOMERS,    /* x distinct customers, n orders, sum Σ total_m (in-category as above) */
    CM_SRC_EVENTS,       /* x distinct sessions, y distinct sessions with a purchase, n events */
    CM_SRC_INVENTORY,    /* sum Σ (quantity − previous quantity of the product and warehouse),
                          * n snapshots */
};

/* Filters as the reader binds them. The JSON arrays are built by the caller (text it owns). */
struct cm_filter {
    const char *tenant_id;
    const char *regions_json;     /* ["EU","US"] or NULL */
    const char *channels_json;
    const char *categories_json;
    const char *category_one;     /* the category when exactly one is asked for */
    int ncategories;
    const char *currency;         /* NULL: every currency */
    bool segments;                /* temp.cm_segment_members holds the customers to keep */
};

/* Sums over one time cell. */
struct cm_acc {
    int64_t n;
    int64_t sum;
    int64_t min, max;             /* valid when any */
    bool any;
    int64_t x, y;
    int64_t fresh;                /* newest ingested_at behind the figures, 0 when none */
};

void cm_acc_add(struct cm_acc *to, const struct cm_acc *from);

/* Adds src's figures over each cell [edges[i], edges[i+1]), i < ncells, into acc[i]. Clean
 * UTC days (and hours) that lie inside a cell come from the rollup tables where the filters
 * allow; the rest (dirty days, partial hours, filters no rollup carries) from the base tables.
 * whole: distinct counts, which do not add up across cells: a rollup row is used only when it
 * is the whole cell. Run it inside one read transaction with every other read of the figure,
 * so rollups and dirty marks are of one snapshot. 0 or a TS_E_* code. */
int cm_rollup_read(sqlite3 *db, enum cm_src src, const struct cm_filter *f, const int64_t *edges,
                   int ncells, bool whole, struct cm_acc *acc);

/* Inventory: adds the deltas (and snapshots) of everything before t into acc, so acc->sum is
 * the stock at t. 0 or a TS_E_* code. */
int cm_rollup_inventory_before(sqlite3 *db, const struct cm_filter *f, int64_t t,
                               struct cm_acc *acc);

/* floor(a / b) for b > 0, also for negative a. */
static inline int64_t cm_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}
#endif
