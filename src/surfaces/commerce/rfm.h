/* RFM (recency, frequency, monetary) scores and named segments of a tenant's customers, from
 * the orders that count (status not cancelled/refunded). Thread-safe: runs on any connection
 * (the pool's read-only ones included); it prepares its own statements.
 *
 * Definitions (README "### Customers and products"):
 * - The orders used: the tenant's counted orders with created_at <= as_of_ms in ONE currency:
 *   the one asked for, else the only currency the tenant's counted orders use (at any time),
 *   else the tenant's default currency (cm_settings). A customer is in the set when they have
 *   at least one such order. With no order of the tenant later than as_of the figures come
 *   from cm_customer_orders (schema/017), else from the orders.
 * - recency_days = floor((as_of - last order) / 1 day); frequency = orders; monetary = Σ total.
 * - Scores 1..5 by quintile rank among the set's customers: score = 1 + floor(5 * b / n) where
 *   n = customers in the set and b = customers strictly worse (R: larger recency_days; F:
 *   fewer orders; M: smaller monetary). Equal values get equal scores, whatever their order.
 * - Segments, the first rule that holds (every customer lands in exactly one):
 *     champions       R >= 4, F >= 4, M >= 4
 *     loyal           R >= 3, F >= 4
 *     new             R >= 4, frequency = 1
 *     potential       R >= 4                     (2+ orders, F <= 3)
 *     need_attention  R = 3                      (F <= 3)
 *     at_risk         R <= 2, F >= 3
 *     hibernating     R <= 2                     (F <= 2)
 *
 * Use from another module (e.g. the metrics engine's customer_segment filter):
 *
 *   // a: every customer, one callback each (customer_id valid during the call only)
 *   cm_rfm_each(db, tenant_id, clock_now_ms(), currency_or_NULL, fn, arg);
 *
 *   // b: in SQL: fills temp.cm_segment_members(customer_id TEXT PRIMARY KEY, segment TEXT)
 *   // on this connection (created if missing, emptied first), then filter with
 *   //   ... AND o.customer_id IN (SELECT customer_id FROM temp.cm_segment_members)
 *   // Pass the wanted segments to keep only their members (nsegments = 0: everyone).
 *   // Works on the pool's read-only connections (TEMP is a separate, writable schema) and
 *   // inside an open read transaction; fill it in the same transaction as the query that
 *   // reads it so both see one snapshot. The table lives until the connection closes; the
 *   // next call replaces its rows.
 *   cm_rfm_fill_temp(db, tenant_id, clock_now_ms(), currency_or_NULL, segs, nsegs);
 *
 * Validate segment names with cm_rfm_segment_known before (a 400 naming the field). */
#ifndef TS_COMMERCE_RFM_H
#define TS_COMMERCE_RFM_H
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CM_RFM_NSEGMENTS 7
#define CM_DAY_MS 86400000LL

/* The segment names in rule order, and whether a name is one of them. */
extern const char *const cm_rfm_segment_names[CM_RFM_NSEGMENTS];
bool cm_rfm_segment_known(const char *name);
/* The index of a segment name in cm_rfm_segment_names, -1 when unknown. */
int cm_rfm_segment_index(const char *name);
/* One line saying who is in a segment (for descriptions). */
const char *cm_rfm_segment_description(int segment);

struct cm_rfm {
    const char *customer_id;
    int64_t first_ms, last_ms;      /* first and last counted order */
    int64_t recency_days;
    int64_t frequency;              /* counted orders */
    int64_t monetary_m;             /* Σ order total, ten-thousandths */
    int r, f, m;                    /* scores 1..5 */
    int segment;                    /* index into cm_rfm_segment_names */
    /* with period_ms > 0 (cm_rfm_load): an order in (as_of - P, as_of] / (as_of - 2P, as_of - P] */
    bool bought_last, bought_prev;
};

/* Every customer of the set, sorted by customer_id (bytewise). */
struct cm_rfm_set {
    struct cm_rfm *v;
    size_t n;
    char currency[8];               /* the currency the orders were taken in */
    char *ids;                      /* storage of the customer ids */
};

/* The currency rule above: currency when given, else the only currency of the tenant's
 * counted orders (of any time), else the tenant default. out >= 8 bytes. */
void cm_rfm_currency(sqlite3 *db, const char *tenant_id, const char *currency, char out[8]);

/* Loads the set (period_ms > 0 also fills bought_last / bought_prev). 0, or a TS_E_* code
 * (nothing to free then). Free with cm_rfm_set_free. */
int cm_rfm_load(sqlite3 *db, const char *tenant_id, int64_t as_of_ms, const char *currency,
                int64_t period_ms, struct cm_rfm_set *ret);
void cm_rfm_set_free(struct cm_rfm_set *s);
/* The customer's row in the set, NULL when they have no counted order in it. */
const struct cm_rfm *cm_rfm_find(const struct cm_rfm_set *s, const char *customer_id);

/* Calls fn once per customer, in customer_id order. 0, or a TS_E_* code before any call. */
int cm_rfm_each(sqlite3 *db, const char *tenant_id, int64_t as_of_ms, const char *currency,
                void (*fn)(void *arg, const struct cm_rfm *c), void *arg);

/* Fills temp.cm_segment_members as described above. 0 or a TS_E_* code. */
int cm_rfm_fill_temp(sqlite3 *db, const char *tenant_id, int64_t as_of_ms, const char *currency,
                     const char *const *segments, int nsegments);

/* ---- request pieces shared by the customer and product analytics routes ---- */
struct hctx;
struct cm_query;
/* as_of: ISO 8601 (absent: now). TS_E_VALIDATION naming "as_of" otherwise. */
int cm_an_as_of(struct hctx *h, const struct cm_query *q, int64_t *ret);
/* currency: an ISO 4217 code (three letters A-Z); NULL when absent. */
int cm_an_currency(struct hctx *h, const struct cm_query *q, const char **ret);
/* An integer parameter in [min, max], def when absent; TS_E_VALIDATION naming it otherwise. */
int cm_an_int(struct hctx *h, const struct cm_query *q, const char *name, int def, int min,
              int max, int *ret);
/* A read transaction on a pool connection so every statement of a response sees one
 * snapshot; end it whatever happened. */
int cm_an_read_begin(sqlite3 *db);
void cm_an_read_end(sqlite3 *db);
#endif
