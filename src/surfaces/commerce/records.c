/* Canonical commerce records: one table per data_type says each field's kind, whether it is
 * required and its default; the check walks it once per record, and the upsert binds the
 * checked fields in the same order, so a field is defined in exactly one row. */
#include "surfaces/commerce/records.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/handler.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/json.h"
#include "surfaces/commerce/rollup.h"

enum fkind { F_ID, F_TEXT, F_TIME, F_MONEY, F_INT, F_ENUM, F_BOOL, F_CURRENCY, F_EMAIL };

enum {
    REQ = 1 << 0,       /* required: absent or null is a completeness failure */
    NONNEG = 1 << 1,    /* >= 0 (money, counts) */
    POS = 1 << 2,       /* > 0 */
    EMPTY = 1 << 3,     /* absent text is stored as '' (the column is NOT NULL DEFAULT '') */
    DEFCUR = 1 << 4,    /* absent currency: the tenant default */
    DEFTIME = 1 << 5,   /* absent time: the stream request's timestamp, when there is one */
};

struct fspec {
    const char *name;
    enum fkind kind;
    unsigned flags;
    const char *const *values;   /* F_ENUM: NULL-terminated; values[0] is the default when
                                  * the field is optional */
};

/* A data_type: its fields, in the order of its table's columns (the first nkey are the natural
 * id), and its statements. */
struct tspec {
    const struct fspec *f;
    int nf;
    int nkey;
    const char *upsert;          /* the chunk's rows, by natural id */
    const char *new_ids;         /* how many of the chunk's ids are new */
    const char *upsert1;         /* one record, its fields bound from FIRST_BOUND on */
    const char *stored1;         /* whether one record's id is stored */
    int day_field;               /* the time whose UTC day the chunk marks dirty itself (the
                                  * INSERT triggers of schema/023 leave it to the chunk), or -1 */
};

const char *const cm_type_names[CM_TYPE_COUNT] = {"orders",    "transactions", "products",
                                                  "customers", "inventory",    "events"};

static const char *const ORDER_STATUS[] = {"placed",    "paid",     "shipped", "delivered",
                                           "cancelled", "refunded", NULL};
static const char *const TX_TYPE[] = {"sale", "refund", NULL};
static const char *const EVENT_TYPE[] = {"page_view", "product_view", "add_to_cart", "checkout",
                                         "purchase",  NULL};

static const struct fspec ORDER_F[] = {
    {"order_id", F_ID, REQ, NULL},
    {"customer_id", F_ID, REQ, NULL},
    {"created_at", F_TIME, REQ | DEFTIME, NULL},
    {"total", F_MONEY, REQ | NONNEG, NULL},
    {"currency", F_CURRENCY, DEFCUR, NULL},
    {"status", F_ENUM, 0, ORDER_STATUS},
    {"channel", F_TEXT, EMPTY, NULL},
    {"region", F_TEXT, EMPTY, NULL},
};
static const struct fspec TX_F[] = {
    {"transaction_id", F_ID, REQ, NULL},
    {"amount", F_MONEY, REQ | NONNEG, NULL},
    {"timestamp", F_TIME, REQ | DEFTIME, NULL},
    {"type", F_ENUM, 0, TX_TYPE},
    {"order_id", F_ID, 0, NULL},
    {"customer_id", F_ID, 0, NULL},
    {"currency", F_CURRENCY, DEFCUR, NULL},
    {"channel", F_TEXT, EMPTY, NULL},
    {"region", F_TEXT, EMPTY, NULL},
    {"payment_method", F_TEXT, 0, NULL},
};
static const struct fspec PRODUCT_F[] = {
    {"product_id", F_ID, REQ, NULL},
    {"name", F_TEXT, REQ, NULL},
    {"category", F_TEXT, EMPTY, NULL},
    {"price", F_MONEY, NONNEG, NULL},
    {"cost", F_MONEY, NONNEG, NULL},
    {"sku", F_ID, 0, NULL},
    {"active", F_BOOL, 0, NULL},
};
static const struct fspec CUSTOMER_F[] = {
    {"customer_id", F_ID, REQ, NULL},
    {"created_at", F_TIME, 0, NULL},
    {"email", F_EMAIL, 0, NULL},
    {"name", F_TEXT, 0, NULL},
    {"region", F_TEXT, EMPTY, NULL},
    {"channel", F_TEXT, EMPTY, NULL},
};
static const struct fspec INVENTORY_F[] = {
    {"product_id", F_ID, REQ, NULL},
    {"warehouse", F_ID, EMPTY, NULL},
    {"timestamp", F_TIME, REQ | DEFTIME, NULL},
    {"quantity", F_INT, REQ | NONNEG, NULL},
    {"reorder_level", F_INT, NONNEG, NULL},
};
static const struct fspec EVENT_F[] = {
    {"event_id", F_ID, REQ, NULL},
    {"type", F_ENUM, REQ, EVENT_TYPE},
    {"timestamp", F_TIME, REQ | DEFTIME, NULL},
    {"session_id", F_ID, REQ, NULL},
    {"customer_id", F_ID, 0, NULL},
    {"product_id", F_ID, 0, NULL},
};
static const struct fspec ITEM_F[] = {
    {"product_id", F_ID, REQ, NULL},
    {"quantity", F_INT, REQ | POS, NULL},
    {"unit_price", F_MONEY, REQ | NONNEG, NULL},
};

/* Upserts of a chunk: ?1 tenant, ?2 a JSON array of rows (each an array of the fields in table
 * order), ?3 source_id, ?4 batch_id, ?5 ingested_at. One statement per chunk, not one per
 * record: with the rollup triggers on these tables every statement opens a statement journal,
 * and its cost grows with what the enclosing savepoint has written, so fewer is much faster.
 * Rows are upserted in array order, so of two records with one id in a chunk the later wins.
 * The same upsert of one record (the stream path) binds its fields as ?6, ?7... instead: no
 * JSON to write and read back for a single row. */
#define ROWS_JSON(fields) "SELECT ?1, " fields ", ?3, ?4, ?5 FROM json_each(?2) WHERE 1 "
#define ROW_BOUND(fields) "VALUES (?1, " fields ", ?3, ?4, ?5) "
#define J5 "value->>0, value->>1, value->>2, value->>3, value->>4"
#define J6 J5 ", value->>5"
#define J7 J6 ", value->>6"
#define J8 J7 ", value->>7"
#define J10 J8 ", value->>8, value->>9"
#define B5 "?6, ?7, ?8, ?9, ?10"
#define B6 B5 ", ?11"
#define B7 B6 ", ?12"
#define B8 B7 ", ?13"
#define B10 B8 ", ?14, ?15"
#define FIRST_BOUND 6

#define ORDER_INTO                                                                             \
    "INSERT INTO cm_orders(tenant_id, order_id, customer_id, created_at, total_m, currency, "  \
    "status, channel, region, source_id, batch_id, ingested_at) "
#define ORDER_SET                                                                              \
    "ON CONFLICT(tenant_id, order_id) DO UPDATE SET customer_id = excluded.customer_id, "     \
    "created_at = excluded.created_at, total_m = excluded.total_m, "                          \
    "currency = excluded.currency, "                                                          \
    "status = excluded.status, channel = excluded.channel, region = excluded.region, "        \
    "source_id = excluded.source_id, batch_id = excluded.batch_id, "                          \
    "ingested_at = excluded.ingested_at"
#define TX_INTO                                                                                \
    "INSERT INTO cm_transactions(tenant_id, transaction_id, amount_m, timestamp, type, "       \
    "order_id, customer_id, currency, channel, region, payment_method, source_id, batch_id, "  \
    "ingested_at) "
#define TX_SET                                                                                 \
    "ON CONFLICT(tenant_id, transaction_id) DO UPDATE SET amount_m = excluded.amount_m, "      \
    "timestamp = excluded.timestamp, type = excluded.type, order_id = excluded.order_id, "    \
    "customer_id = excluded.customer_id, currency = excluded.currency, "                      \
    "channel = excluded.channel, region = excluded.region, "                                  \
    "payment_method = excluded.payment_method, source_id = excluded.source_id, "              \
    "batch_id = excluded.batch_id, ingested_at = excluded.ingested_at"
#define PRODUCT_INTO                                                                           \
    "INSERT INTO cm_products(tenant_id, product_id, name, category, price_m, cost_m, sku, "    \
    "active, source_id, batch_id, ingested_at) "
#define PRODUCT_SET                                                                            \
    "ON CONFLICT(tenant_id, product_id) DO UPDATE SET name = excluded.name, "                  \
    "category = excluded.category, price_m = excluded.price_m, cost_m = excluded.cost_m, "    \
    "sku = excluded.sku, active = excluded.active, source_id = excluded.source_id, "          \
    "batch_id = excluded.batch_id, ingested_at = excluded.ingested_at"
#define CUSTOMER_INTO                                                                          \
    "INSERT INTO cm_customers(tenant_id, customer_id, created_at, email, name, region, "       \
    "channel, source_id, batch_id, ingested_at) "
#define CUSTOMER_SET                                                                           \
    "ON CONFLICT(tenant_id, customer_id) DO UPDATE SET created_at = excluded.created_at, "     \
    "email = excluded.email, name = excluded.name, region = excluded.region, "                \
    "channel = excluded.channel, source_id = excluded.source_id, "                            \
    "batch_id = excluded.batch_id, "                                                          \
    "ingested_at = excluded.ingested_at"
#define INVENTORY_INTO                                                                         \
    "INSERT INTO cm_inventory(tenant_id, product_id, warehouse, timestamp, quantity, "         \
    "reorder_level, source_id, batch_id, ingested_at) "
#define INVENTORY_SET                                                                          \
    "ON CONFLICT(tenant_id, product_id, warehouse, timestamp) DO UPDATE SET "                 \
    "quantity = excluded.quantity, reorder_level = excluded.reorder_level, "                  \
    "source_id = excluded.source_id, batch_id = excluded.batch_id, "                          \
    "ingested_at = excluded.ingested_at"
#define EVENT_INTO                                                                             \
    "INSERT INTO cm_events(tenant_id, event_id, type, timestamp, session_id, customer_id, "    \
    "product_id, source_id, batch_id, ingested_at) "
#define EVENT_SET                                                                              \
    "ON CONFLICT(tenant_id, event_id) DO UPDATE SET type = excluded.type, "                   \
    "timestamp = excluded.timestamp, session_id = excluded.session_id, "                      \
    "customer_id = excluded.customer_id, product_id = excluded.product_id, "                  \
    "source_id = excluded.source_id, batch_id = excluded.batch_id, "                          \
    "ingested_at = excluded.ingested_at"

static const char ORDER_UPSERT[] = ORDER_INTO ROWS_JSON(J8) ORDER_SET;
static const char TX_UPSERT[] = TX_INTO ROWS_JSON(J10) TX_SET;
static const char PRODUCT_UPSERT[] = PRODUCT_INTO ROWS_JSON(J7) PRODUCT_SET;
static const char CUSTOMER_UPSERT[] = CUSTOMER_INTO ROWS_JSON(J6) CUSTOMER_SET;
static const char INVENTORY_UPSERT[] = INVENTORY_INTO ROWS_JSON(J5) INVENTORY_SET;
static const char EVENT_UPSERT[] = EVENT_INTO ROWS_JSON(J6) EVENT_SET;
static const char ORDER_UPSERT1[] = ORDER_INTO ROW_BOUND(B8) ORDER_SET;
static const char TX_UPSERT1[] = TX_INTO ROW_BOUND(B10) TX_SET;
static const char PRODUCT_UPSERT1[] = PRODUCT_INTO ROW_BOUND(B7) PRODUCT_SET;
static const char CUSTOMER_UPSERT1[] = CUSTOMER_INTO ROW_BOUND(B6) CUSTOMER_SET;
static const char INVENTORY_UPSERT1[] = INVENTORY_INTO ROW_BOUND(B5) INVENTORY_SET;
static const char EVENT_UPSERT1[] = EVENT_INTO ROW_BOUND(B6) EVENT_SET;

/* How many distinct natural ids of ?2 (a JSON array of ids; inventory: [product, warehouse,
 * time] triples) are not stored yet: the chunk's records beyond these are duplicates. The
 * one-record form: whether its id (?2; inventory ?2, ?3, ?4) is stored. */
#define NEW_IDS(table, col)                                                                    \
    "SELECT count(*) FROM (SELECT DISTINCT value AS id FROM json_each(?2)) WHERE NOT EXISTS "   \
    "(SELECT 1 FROM " table " WHERE tenant_id = ?1 AND " col " = id)"
#define STORED(table, col)                                                                     \
    "SELECT EXISTS (SELECT 1 FROM " table " WHERE tenant_id = ?1 AND " col " = ?2)"
static const char ORDER_NEW[] = NEW_IDS("cm_orders", "order_id");
static const char TX_NEW[] = NEW_IDS("cm_transactions", "transaction_id");
static const char PRODUCT_NEW[] = NEW_IDS("cm_products", "product_id");
static const char CUSTOMER_NEW[] = NEW_IDS("cm_customers", "customer_id");
static const char EVENT_NEW[] = NEW_IDS("cm_events", "event_id");
static const char INVENTORY_NEW[] =
    "SELECT count(*) FROM (SELECT DISTINCT value AS id FROM json_each(?2)) WHERE NOT EXISTS "
    "(SELECT 1 FROM cm_inventory WHERE tenant_id = ?1 AND product_id = id->>0 "
    "AND warehouse = id->>1 AND timestamp = id->>2)";
static const char ORDER_STORED[] = STORED("cm_orders", "order_id");
static const char TX_STORED[] = STORED("cm_transactions", "transaction_id");
static const char PRODUCT_STORED[] = STORED("cm_products", "product_id");
static const char CUSTOMER_STORED[] = STORED("cm_customers", "customer_id");
static const char EVENT_STORED[] = STORED("cm_events", "event_id");
static const char INVENTORY_STORED[] =
    "SELECT EXISTS (SELECT 1 FROM cm_inventory WHERE tenant_id = ?1 AND product_id = ?2 "
    "AND warehouse = ?3 AND timestamp = ?4)";

/* An order's items are replaced: the chunk's orders that were stored before lose theirs, then
 * the items of each order's last record in the chunk go in. */
static const char ITEMS_DEL[] =
    "DELETE FROM cm_order_items WHERE tenant_id = ?1 AND order_id IN "
    "(SELECT value FROM json_each(?2))";
static const char ITEMS_INS[] =
    "INSERT INTO cm_order_items(tenant_id, order_id, line, product_id, quantity, unit_price_m) "
    "SELECT ?1, value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?2)";
static const char ITEMS_DEL1[] =
    "DELETE FROM cm_order_items WHERE tenant_id = ?1 AND order_id = ?2";
static const char ITEM_INS1[] =
    "INSERT INTO cm_order_items(tenant_id, order_id, line, product_id, quantity, unit_price_m) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
static const char REJECTS_INS[] =
    "INSERT INTO cm_rejects(tenant_id, batch_id, source_id, data_type, record_index, record_key, "
    "field, check_type, reason, created_at) "
    "SELECT ?1, ?3, ?4, ?5, value->>0, value->>1, value->>2, value->>3, value->>4, ?6 "
    "FROM json_each(?2)";

#define NF(a) ((int)(sizeof(a) / sizeof(a[0])))
static const struct tspec TYPES[CM_TYPE_COUNT] = {
    [CM_ORDERS] = {ORDER_F, NF(ORDER_F), 1, ORDER_UPSERT, ORDER_NEW, ORDER_UPSERT1, ORDER_STORED,
                   2},
    [CM_TRANSACTIONS] = {TX_F, NF(TX_F), 1, TX_UPSERT, TX_NEW, TX_UPSERT1, TX_STORED, -1},
    [CM_PRODUCTS] = {PRODUCT_F, NF(PRODUCT_F), 1, PRODUCT_UPSERT, PRODUCT_NEW, PRODUCT_UPSERT1,
                     PRODUCT_STORED, -1},
    [CM_CUSTOMERS] = {CUSTOMER_F, NF(CUSTOMER_F), 1, CUSTOMER_UPSERT, CUSTOMER_NEW,
                      CUSTOMER_UPSERT1, CUSTOMER_STORED, -1},
    [CM_INVENTORY] = {INVENTORY_F, NF(INVENTORY_F), 3, INVENTORY_UPSERT, INVENTORY_NEW,
                      INVENTORY_UPSERT1, INVENTORY_STORED, -1},
    [CM_EVENTS] = {EVENT_F, NF(EVENT_F), 1, EVENT_UPSERT, EVENT_NEW, EVENT_UPSERT1, EVENT_STORED,
                   2},
};
_Static_assert(NF(TX_F) <= CM_FIELDS_MAX, "CM_FIELDS_MAX holds the widest data_type");

int cm_type_of(const char *name)
{
    for (int i = 0; name && i < CM_TYPE_COUNT; i++)
        if (strcmp(cm_type_names[i], name) == 0)
            return i;
    return -1;
}

/* ---- checking ---- */

/* A field's value and where failures go. */
struct check {
    struct arena *a;
    struct cm_rec *rec;
    const char *path;            /* "data[17]" or "data[17].items[0]", built on first need */
    int64_t index, item;         /* to build path lazily; item -1 when not in an item */
    const struct cm_check_env *env;
};

static const char *record_path(struct check *c)
{
    if (c->path)
        return c->path;
    const char *base = c->index >= 0 ? arena_printf(c->a, "data[%lld]", (long long)c->index)
                                     : "data";
    c->path = c->item >= 0 ? arena_printf(c->a, "%s.items[%lld]", base, (long long)c->item)
                           : base;
    return c->path;
}

static void fail_add(struct check *c, const char *name, const char *check_type,
                     const char *reason)
{
    struct cm_rec *r = c->rec;
    if (r->nfails < CM_FAILS_MAX) {
        struct cm_fail *f = &r->fails[r->nfails];
        const char *p = record_path(c);
        f->field = name ? arena_printf(c->a, "%s.%s", p, name) : p;
        f->check_type = check_type;
        f->reason = reason;
    }
    r->nfails++;
}

/* A JSON number, or a string holding a plain decimal number (as CSV and XML carry them):
 * optional sign, digits with an optional fraction, optional exponent; spaces around allowed. */
static bool number_of(const json_t *v, double *ret)
{
    if (json_is_integer(v)) {
        *ret = (double)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        *ret = json_real_value(v);
        return isfinite(*ret);
    }
    const char *s = json_string_value(v);
    if (s == NULL)
        return false;
    while (*s == ' ' || *s == '\t')
        s++;
    const char *p = s + (*s == '+' || *s == '-');
    size_t digits = 0;
    for (; isdigit((unsigned char)*p); p++)
        digits++;
    if (*p == '.')
        for (p++; isdigit((unsigned char)*p); p++)
            digits++;
    if (digits == 0)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += *p == '+' || *p == '-';
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p)
        return false;
    *ret = strtod(s, NULL);
    return isfinite(*ret);
}

#define MONEY_MAX_M 1000000000000000000LL  /* 10^14 units: beyond any real amount */
#define INT_MAX_V 9e15

/* Decimal text (as number_of accepts it) to ten-thousandths, exactly: the digits are scaled by
 * their exponent and rounded half away from zero at the fourth decimal, so "2.00005" is 20001
 * whatever binary floating point would make of it. 0, or -1 when out of range. */
static int decimal_m(const char *s, int64_t *ret)
{
    while (*s == ' ' || *s == '\t')
        s++;
    bool neg = *s == '-';
    s += *s == '+' || *s == '-';
    char dig[40];
    int nd = 0, frac = 0, exp = 0;
    bool point = false;
    for (; isdigit((unsigned char)*s) || (*s == '.' && !point); s++) {
        if (*s == '.') {
            point = true;
            continue;
        }
        frac += point;
        if (nd == 0 && *s == '0')
            continue; /* leading zeros carry no value */
        if (nd == (int)sizeof(dig))
            return -1;
        dig[nd++] = *s;
    }
    if (*s == 'e' || *s == 'E') {
        long e = strtol(s + 1, NULL, 10);
        if (e > 40 || e < -40)
            return e > 0 && nd ? -1 : (*ret = 0, 0);
        exp = (int)e;
    }
    int k = exp - frac + 4; /* value x 10^4 = digits x 10^k */
    int keep = k >= 0 ? nd : nd + k;
    if (keep + (k > 0 ? k : 0) > 18)
        return -1;
    int64_t m = 0;
    for (int i = 0; i < keep; i++)
        m = m * 10 + (dig[i] - '0');
    for (int i = 0; i < k; i++)
        m *= 10;
    if (keep >= 0 && keep < nd && dig[keep] >= '5')
        m++;
    if (m > MONEY_MAX_M)
        return -1;
    *ret = neg ? -m : m;
    return 0;
}

/* Money as a JSON number or a numeric string, in ten-thousandths. A JSON real goes through its
 * shortest faithful decimal (15 significant digits), so 1.00005 is 10001 as written. */
static int money_of(const json_t *v, int64_t *ret)
{
    char text[48];
    double d;
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x > MONEY_MAX_M / 10000 || x < -MONEY_MAX_M / 10000)
            return -1;
        *ret = (int64_t)x * 10000;
        return 0;
    }
    if (!number_of(v, &d))
        return -2;
    if (json_is_real(v)) {
        snprintf(text, sizeof(text), "%.15g", d);
        return decimal_m(text, ret);
    }
    return decimal_m(json_string_value(v), ret);
}

static void check_money(struct check *c, const struct fspec *f, const json_t *v, int64_t *out,
                        bool *has)
{
    int64_t m;
    int r = money_of(v, &m);
    if (r == -2)
        return fail_add(c, f->name, "validity",
                        arena_printf(c->a, "%s must be a number", f->name));
    if (r < 0)
        return fail_add(c, f->name, "validity",
                        arena_printf(c->a, "%s is out of range", f->name));
    if ((f->flags & NONNEG) && m < 0)
        return fail_add(c, f->name, "accuracy",
                        arena_printf(c->a, "%s must not be negative", f->name));
    *out = m;
    *has = true;
}

static bool int_of(const json_t *v, int64_t *ret)
{
    if (json_is_integer(v)) {
        *ret = json_integer_value(v);
        return true;
    }
    double d;
    if (!number_of(v, &d) || d != floor(d) || fabs(d) > INT_MAX_V)
        return false;
    *ret = (int64_t)d;
    return true;
}

static void check_int(struct check *c, const struct fspec *f, const json_t *v, int64_t *out,
                      bool *has)
{
    int64_t x;
    if (!int_of(v, &x))
        return fail_add(c, f->name, "validity",
                        arena_printf(c->a, "%s must be an integer", f->name));
    if ((f->flags & POS) && x <= 0)
        return fail_add(c, f->name, "accuracy",
                        arena_printf(c->a, "%s must be greater than 0", f->name));
    if ((f->flags & NONNEG) && x < 0)
        return fail_add(c, f->name, "accuracy",
                        arena_printf(c->a, "%s must not be negative", f->name));
    *out = x;
    *has = true;
}

static void check_time(struct check *c, const struct fspec *f, const json_t *v, int i)
{
    const char *s = json_string_value(v);
    int64_t ms;
    if (s == NULL || clock_parse_iso8601(s, &ms) < 0)
        return fail_add(c, f->name, "validity",
                        arena_printf(c->a, "%s must be an ISO 8601 date-time", f->name));
    if (ms > c->env->now_ms + CM_FUTURE_MS)
        return fail_add(c, f->name, "accuracy",
                        arena_printf(c->a, "%s is more than 24 hours in the future", f->name));
    c->rec->num[i] = ms;
    c->rec->has[i] = true;
}

/* Ids: a non-empty string of at most CM_ID_MAX bytes, or an integer (its decimal text). */
static const char *id_of(struct check *c, const struct fspec *f, const json_t *v)
{
    if (json_is_integer(v))
        return arena_printf(c->a, "%lld", (long long)json_integer_value(v));
    const char *s = json_string_value(v);
    if (s == NULL) {
        fail_add(c, f->name, "validity",
                 arena_printf(c->a, "%s must be a string or an integer", f->name));
        return NULL;
    }
    size_t n = json_string_length(v);
    if (n == 0) {
        fail_add(c, f->name, (f->flags & REQ) ? "completeness" : "validity",
                 arena_printf(c->a, "%s is empty", f->name));
        return NULL;
    }
    if (n > CM_ID_MAX || memchr(s, 0, n)) {
        fail_add(c, f->name, "validity",
                 arena_printf(c->a, "%s must be at most %d characters of text", f->name,
                              CM_ID_MAX));
        return NULL;
    }
    return s;
}

static const char *text_of(struct check *c, const struct fspec *f, const json_t *v, size_t max)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (s == NULL || n > max || memchr(s, 0, n)) {
        fail_add(c, f->name, "validity",
                 arena_printf(c->a, "%s must be a string of at most %zu characters", f->name,
                              max));
        return NULL;
    }
    return s;
}

static const char *enum_of(struct check *c, const struct fspec *f, const json_t *v)
{
    const char *s = json_string_value(v);
    for (int k = 0; s && f->values[k]; k++)
        if (strcmp(s, f->values[k]) == 0)
            return f->values[k];
    char list[160] = "";
    size_t used = 0;
    for (int k = 0; f->values[k] && used < sizeof(list); k++)
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", k ? ", " : "",
                                 f->values[k]);
    fail_add(c, f->name, "validity", arena_printf(c->a, "%s must be one of: %s", f->name, list));
    return NULL;
}

static const char *currency_of(struct check *c, const struct fspec *f, const json_t *v)
{
    const char *s = json_string_value(v);
    if (s && json_string_length(v) == 3 && isupper((unsigned char)s[0]) &&
        isupper((unsigned char)s[1]) && isupper((unsigned char)s[2]))
        return s;
    fail_add(c, f->name, "validity",
             arena_printf(c->a, "%s must be an ISO 4217 code: three capital letters", f->name));
    return NULL;
}

static void check_bool(struct check *c, const struct fspec *f, const json_t *v, int i)
{
    static const char *const yes[] = {"true", "1", "yes"}, *const no[] = {"false", "0", "no"};
    int b = -1;
    if (json_is_boolean(v))
        b = json_is_true(v);
    else if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
        b = (int)json_integer_value(v);
    else if (json_is_string(v))
        for (int k = 0; k < 3 && b < 0; k++)
            b = !strcasecmp(json_string_value(v), yes[k])  ? 1
                : !strcasecmp(json_string_value(v), no[k]) ? 0
                                                           : -1;
    if (b < 0)
        return fail_add(c, f->name, "validity",
                        arena_printf(c->a, "%s must be true or false", f->name));
    c->rec->num[i] = b;
    c->rec->has[i] = true;
}

/* An absent (or null) field: required fails completeness; otherwise its default. */
static void field_default(struct check *c, const struct fspec *f, int i)
{
    struct cm_rec *r = c->rec;
    if ((f->flags & DEFTIME) && c->env->default_time >= 0) {
        r->num[i] = c->env->default_time;
        r->has[i] = true;
    } else if (f->flags & REQ) {
        fail_add(c, f->name, "completeness", arena_printf(c->a, "%s is required", f->name));
    } else if (f->flags & EMPTY) {
        r->txt[i] = "";
    } else if (f->flags & DEFCUR) {
        r->txt[i] = c->env->currency;
    } else if (f->kind == F_ENUM) {
        r->txt[i] = f->values[0];
    } else if (f->kind == F_BOOL) {
        r->num[i] = 1;
        r->has[i] = true;
    }
}

static void check_field(struct check *c, const struct fspec *f, const json_t *v, int i,
                        const char **txt, int64_t *num, bool *has)
{
    switch (f->kind) {
    case F_ID: *txt = id_of(c, f, v); break;
    case F_TEXT: *txt = text_of(c, f, v, CM_TEXT_MAX); break;
    case F_EMAIL:
        *txt = text_of(c, f, v, 254);
        if (*txt && !email_valid(*txt)) {
            *txt = NULL;
            fail_add(c, f->name, "validity",
                     arena_printf(c->a, "%s must be an email address", f->name));
        }
        break;
    case F_ENUM: *txt = enum_of(c, f, v); break;
    case F_CURRENCY: *txt = currency_of(c, f, v); break;
    case F_TIME: check_time(c, f, v, i); break;
    case F_MONEY: check_money(c, f, v, num, has); break;
    case F_INT: check_int(c, f, v, num, has); break;
    case F_BOOL: check_bool(c, f, v, i); break;
    }
}

static void check_items(struct check *c, const json_t *items)
{
    struct cm_rec *r = c->rec;
    if (items == NULL || json_is_null(items))
        return;
    if (!json_is_array(items))
        return fail_add(c, "items", "validity", "items must be an array of line items");
    size_t n = json_array_size(items);
    if (n > CM_ITEMS_MAX)
        return fail_add(c, "items", "validity",
                        arena_printf(c->a, "items holds more than %d lines", CM_ITEMS_MAX));
    r->items = n ? arena_calloc(c->a, n * sizeof(*r->items)) : NULL;
    struct check ic = *c;
    for (size_t k = 0; k < n; k++) {
        const json_t *it = json_array_get(items, k);
        ic.item = (int64_t)k;
        ic.path = NULL;
        if (!json_is_object(it)) {
            fail_add(&ic, NULL, "validity", "a line item must be an object");
            continue;
        }
        struct cm_item *out = &r->items[k];
        for (int i = 0; i < NF(ITEM_F); i++) {
            const struct fspec *f = &ITEM_F[i];
            const json_t *v = json_object_get(it, f->name);
            if (v == NULL || json_is_null(v)) {
                fail_add(&ic, f->name, "completeness",
                         arena_printf(c->a, "%s is required", f->name));
                continue;
            }
            bool has = false;
            if (i == 0)
                out->product_id = id_of(&ic, f, v);
            else if (i == 1)
                check_int(&ic, f, v, &out->quantity, &has);
            else
                check_money(&ic, f, v, &out->unit_price_m, &has);
        }
    }
    r->nitems = (int)n;
}

/* The natural id as text: the first field, or product/warehouse/time for inventory. */
static void record_key(struct check *c, const struct tspec *t, const json_t *v)
{
    struct cm_rec *r = c->rec;
    if (t->nkey == 1) {
        r->key = r->txt[0];
        if (r->key == NULL) { /* an invalid id may still name the record in its reject */
            const json_t *id = json_object_get(v, t->f[0].name);
            size_t n = json_string_length(id);
            if (json_is_string(id) && n > 0 && n <= CM_ID_MAX)
                r->key = json_string_value(id);
        }
        return;
    }
    if (r->txt[0] == NULL || r->txt[1] == NULL || !r->has[2])
        return;
    char ts[40];
    clock_iso8601(r->num[2], 1, ts, sizeof(ts));
    r->key = r->txt[1][0] ? arena_printf(c->a, "%s/%s/%s", r->txt[0], r->txt[1], ts)
                          : arena_printf(c->a, "%s/%s", r->txt[0], ts);
}

int cm_record_check(struct arena *a, enum cm_type type, const json_t *v, int64_t index,
                    const struct cm_check_env *env, struct cm_rec *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->type = type;
    ret->index = index;
    struct check c = {a, ret, NULL, index, -1, env};
    const struct tspec *t = &TYPES[type];
    if (!json_is_object(v)) {
        fail_add(&c, NULL, "validity", "a record must be a JSON object");
        return ret->nfails;
    }
    for (int i = 0; i < t->nf; i++) {
        const struct fspec *f = &t->f[i];
        const json_t *fv = json_object_get(v, f->name);
        if (fv == NULL || json_is_null(fv))
            field_default(&c, f, i);
        else
            check_field(&c, f, fv, i, &ret->txt[i], &ret->num[i], &ret->has[i]);
    }
    if (type == CM_ORDERS)
        check_items(&c, json_object_get(v, "items"));
    record_key(&c, t, v);
    return ret->nfails;
}

/* ---- chunks: checked records as JSON for the set-based statements ---- */

static bool field_is_text(const struct fspec *f)
{
    return f->kind == F_ID || f->kind == F_TEXT || f->kind == F_EMAIL || f->kind == F_ENUM ||
           f->kind == F_CURRENCY;
}

#define CHUNK_JSON_MAX (256u << 20)

void cm_chunk_init(struct cm_chunk *c, enum cm_type type)
{
    memset(c, 0, sizeof(*c));
    c->type = type;
    buf_init(&c->rows, CHUNK_JSON_MAX);
    buf_init(&c->ids, CHUNK_JSON_MAX);
    buf_init(&c->items, CHUNK_JSON_MAX);
    buf_init(&c->rejects, CHUNK_JSON_MAX);
    buf_init(&c->days, CHUNK_JSON_MAX);
}

void cm_chunk_release(struct cm_chunk *c)
{
    buf_release(&c->rows);
    buf_release(&c->ids);
    buf_release(&c->items);
    buf_release(&c->rejects);
    buf_release(&c->days);
}

static void row_json(struct jw *w, const struct tspec *t, const struct cm_rec *r)
{
    jw_arr_open(w);
    for (int i = 0; i < t->nf; i++) {
        if (field_is_text(&t->f[i]))
            jw_str(w, r->txt[i]);
        else if (r->has[i])
            jw_int(w, r->num[i]);
        else
            jw_null(w);
    }
    jw_arr_close(w);
}

static void id_json(struct jw *w, const struct tspec *t, const struct cm_rec *r)
{
    if (t->nkey == 1)
        return jw_str(w, r->txt[0]);
    jw_arr_open(w); /* inventory: product, warehouse, time */
    jw_str(w, r->txt[0]);
    jw_str(w, r->txt[1]);
    jw_int(w, r->num[2]);
    jw_arr_close(w);
}

static void rejects_json(struct jw *w, const struct cm_rec *r)
{
    int n = r->nfails < CM_FAILS_MAX ? r->nfails : CM_FAILS_MAX;
    for (int i = 0; i < n; i++) {
        jw_arr_open(w);
        jw_int(w, r->index < 0 ? 0 : r->index);
        jw_str(w, r->key);
        jw_str(w, r->fails[i].field);
        jw_str(w, r->fails[i].check_type);
        jw_str(w, r->fails[i].reason);
        jw_arr_close(w);
    }
}

/* Adds id to a set of ids (open addressing, mask + 1 slots, at least twice the ids added):
 * whether it was there already. */
static bool id_seen(const char **slots, size_t mask, const char *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        if (slots[i] == NULL) {
            slots[i] = id;
            return false;
        }
        if (strcmp(slots[i], id) == 0)
            return true;
    }
}

/* The items of each order's last record in the chunk, in the chunk's order (ascending ids go
 * in as appends to the items' primary key; in reverse every insert lands before the last). */
static int items_json(struct jw *w, const struct cm_rec *recs, int n)
{
    size_t mask = 15;
    while (mask < 2 * (size_t)n)
        mask = mask * 2 + 1;
    const char **seen = calloc(mask + 1, sizeof(*seen));
    bool *last = calloc((size_t)(n ? n : 1), sizeof(*last));
    if (seen == NULL || last == NULL) {
        free(seen);
        free(last);
        return TS_E_INTERNAL;
    }
    for (int k = n - 1; k >= 0; k--) /* walked from the end: the last record of an id wins */
        last[k] = recs[k].nfails == 0 && !id_seen(seen, mask, recs[k].txt[0]);
    for (int k = 0; k < n; k++) {
        const struct cm_rec *r = &recs[k];
        for (int i = 0; last[k] && i < r->nitems; i++) {
            jw_arr_open(w);
            jw_str(w, r->txt[0]);
            jw_int(w, i);
            jw_str(w, r->items[i].product_id);
            jw_int(w, r->items[i].quantity);
            jw_int(w, r->items[i].unit_price_m);
            jw_arr_close(w);
        }
    }
    free(seen);
    free(last);
    return 0;
}

static int day_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The distinct UTC days of the valid records' day_field, ascending. */
static int days_json(struct jw *w, const struct tspec *t, const struct cm_rec *recs, int n,
                     int *ret_ndays)
{
    int64_t *days = malloc((size_t)(n ? n : 1) * sizeof(*days));
    if (days == NULL)
        return TS_E_INTERNAL;
    int nd = 0;
    for (int k = 0; k < n; k++) {
        const struct cm_rec *r = &recs[k];
        int64_t d;
        if (r->nfails || !r->has[t->day_field])
            continue;
        d = cm_floor_div(r->num[t->day_field], CM_DAY_MS);
        if (nd == 0 || days[nd - 1] != d) /* records mostly come in time order */
            days[nd++] = d;
    }
    qsort(days, (size_t)nd, sizeof(*days), day_cmp);
    int nu = 0;
    for (int k = 0; k < nd; k++)
        if (nu == 0 || days[nu - 1] != days[k])
            days[nu++] = days[k];
    for (int k = 0; k < nu; k++)
        jw_int(w, days[k]);
    free(days);
    *ret_ndays = nu;
    return 0;
}

int cm_chunk_build(struct cm_chunk *c, const struct cm_rec *recs, int n)
{
    const struct tspec *t = &TYPES[c->type];
    struct jw rows, ids, items, rejects, days;
    jw_init(&rows, &c->rows);
    jw_init(&ids, &c->ids);
    jw_init(&items, &c->items);
    jw_init(&rejects, &c->rejects);
    jw_init(&days, &c->days);
    jw_arr_open(&rows);
    jw_arr_open(&ids);
    jw_arr_open(&items);
    jw_arr_open(&rejects);
    jw_arr_open(&days);
    for (int k = 0; k < n; k++) {
        const struct cm_rec *r = &recs[k];
        if (r->nfails) {
            rejects_json(&rejects, r);
            c->nrejected++;
            continue;
        }
        row_json(&rows, t, r);
        id_json(&ids, t, r);
        c->nvalid++;
        c->nitems += r->nitems;
    }
    int rc = c->type == CM_ORDERS && c->nitems ? items_json(&items, recs, n) : 0;
    if (rc == 0 && t->day_field >= 0 && c->nvalid)
        rc = days_json(&days, t, recs, n, &c->ndays);
    jw_arr_close(&rows);
    jw_arr_close(&ids);
    jw_arr_close(&items);
    jw_arr_close(&rejects);
    jw_arr_close(&days);
    c->nrecords = n;
    if (rc == 0)
        rc = jw_finish(&rows);
    if (rc == 0)
        rc = jw_finish(&ids);
    if (rc == 0)
        rc = jw_finish(&items);
    if (rc == 0)
        rc = jw_finish(&rejects);
    if (rc == 0)
        rc = jw_finish(&days);
    return rc < 0 ? TS_E_INTERNAL : 0;
}

static int step_done(sqlite3_stmt *st)
{
    if (st == NULL)
        return TS_E_INTERNAL;
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
}

/* ?1 tenant and ?2 one of the chunk's JSON arrays. */
static sqlite3_stmt *chunk_stmt(struct db *db, const char *sql, const struct cm_origin *o,
                                const struct buf *json)
{
    sqlite3_stmt *st = db_stmt(db, sql);
    if (st) {
        sqlite3_bind_text(st, 1, o->tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, json->data, (int)json->len, SQLITE_STATIC);
    }
    return st;
}

static int chunk_upsert(struct db *db, const struct cm_origin *o, const struct cm_chunk *c,
                        int64_t *ret_dups)
{
    const struct tspec *t = &TYPES[c->type];
    sqlite3_stmt *st = chunk_stmt(db, t->new_ids, o, &c->ids);
    if (st == NULL || sqlite3_step(st) != SQLITE_ROW)
        return TS_E_INTERNAL;
    int64_t dups = c->nvalid - sqlite3_column_int64(st, 0);
    st = chunk_stmt(db, t->upsert, o, &c->rows);
    if (st == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(st, 3, o->source_id, -1, SQLITE_STATIC);
    if (o->batch_id)
        sqlite3_bind_text(st, 4, o->batch_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, o->now_ms);
    int rc = step_done(st);
    if (rc == 0 && c->type == CM_ORDERS && dups > 0) /* only orders stored before have items */
        rc = step_done(chunk_stmt(db, ITEMS_DEL, o, &c->ids));
    if (rc == 0 && c->nitems > 0)
        rc = step_done(chunk_stmt(db, ITEMS_INS, o, &c->items));
    if (rc == 0)
        *ret_dups = dups;
    return rc;
}

static int chunk_reject(struct db *db, const struct cm_origin *o, const struct cm_chunk *c)
{
    sqlite3_stmt *st = chunk_stmt(db, REJECTS_INS, o, &c->rejects);
    if (st == NULL)
        return TS_E_INTERNAL;
    if (o->batch_id)
        sqlite3_bind_text(st, 3, o->batch_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, o->source_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, cm_type_names[c->type], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, o->now_ms);
    return step_done(st);
}

/* Marking the chunk's rollup days (schema/023): while the one row of cm_ingest_marking exists
 * the INSERT triggers of cm_orders, cm_order_items and cm_events mark nothing; the chunk marks
 * each of its days once instead. The row is inserted and deleted inside the chunk's savepoint,
 * so it is never committed: a failed chunk's savepoint rolls it back with the rest. */
static const char MARKING_ON[] = "INSERT INTO cm_ingest_marking(one) VALUES (1)";
static const char MARKING_OFF[] = "DELETE FROM cm_ingest_marking";
static const char DAYS_DIRTY[] =
    "INSERT INTO cm_rollup_dirty(tenant_id, day) SELECT ?1, value FROM json_each(?2) WHERE 1 "
    "ON CONFLICT DO UPDATE SET version = version + 1";

/* One record (a stream request) lets its triggers mark its day: that is one upsert either way,
 * without the marking row's two writes. */
static bool chunk_marks_days(const struct cm_chunk *c)
{
    return c->ndays > 0 && c->nvalid > 1;
}

static int chunk_upsert_marked(struct db *db, const struct cm_origin *o,
                               const struct cm_chunk *c, int64_t *ret_dups)
{
    int rc = step_done(db_stmt(db, MARKING_ON));
    if (rc < 0)
        return rc;
    rc = chunk_upsert(db, o, c, ret_dups);
    if (rc == 0)
        rc = step_done(chunk_stmt(db, DAYS_DIRTY, o, &c->days));
    int off = step_done(db_stmt(db, MARKING_OFF));
    return rc < 0 ? rc : off;
}

int cm_chunk_store(struct db *db, const struct cm_origin *o, const struct cm_chunk *c,
                   int64_t *ret_dups)
{
    int64_t dups = 0;
    int rc = c->nvalid == 0        ? 0
             : chunk_marks_days(c) ? chunk_upsert_marked(db, o, c, &dups)
                                   : chunk_upsert(db, o, c, &dups);
    if (rc == 0 && c->nrejected)
        rc = chunk_reject(db, o, c);
    if (rc == 0)
        *ret_dups = dups;
    return rc;
}

/* ---- one record, its fields bound (the stream path) ---- */

static const char REJECT_INS1[] =
    "INSERT INTO cm_rejects(tenant_id, batch_id, source_id, data_type, record_index, record_key, "
    "field, check_type, reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

/* Text or NULL; db_stmt has cleared every binding, so NULL needs no call. */
static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

static bool record_stored(struct db *db, const struct tspec *t, const struct cm_origin *o,
                          const struct cm_rec *r, int *ret)
{
    sqlite3_stmt *st = db_stmt(db, t->stored1);
    if (st == NULL)
        return false;
    sqlite3_bind_text(st, 1, o->tenant_id, -1, SQLITE_STATIC);
    bind_text_or_null(st, 2, r->txt[0]);
    if (t->nkey == 3) { /* inventory: product, warehouse, time */
        bind_text_or_null(st, 3, r->txt[1]);
        sqlite3_bind_int64(st, 4, r->num[2]);
    }
    bool ok = sqlite3_step(st) == SQLITE_ROW;
    *ret = ok && sqlite3_column_int(st, 0);
    sqlite3_reset(st);
    return ok;
}

/* The order's items replace those of the order stored before (when it was). */
static int record_items(struct db *db, const struct cm_origin *o, const struct cm_rec *r,
                        bool stored)
{
    sqlite3_stmt *st;
    int rc = 0;
    if (stored && (st = db_stmt(db, ITEMS_DEL1))) {
        sqlite3_bind_text(st, 1, o->tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r->txt[0], -1, SQLITE_STATIC);
        rc = step_done(st);
    } else if (stored) {
        rc = TS_E_INTERNAL;
    }
    for (int i = 0; rc == 0 && i < r->nitems; i++) {
        if ((st = db_stmt(db, ITEM_INS1)) == NULL)
            return TS_E_INTERNAL;
        sqlite3_bind_text(st, 1, o->tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r->txt[0], -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, i);
        sqlite3_bind_text(st, 4, r->items[i].product_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, r->items[i].quantity);
        sqlite3_bind_int64(st, 6, r->items[i].unit_price_m);
        rc = step_done(st);
    }
    return rc;
}

static int record_upsert(struct db *db, const struct cm_origin *o, const struct cm_rec *r,
                         int64_t *ret_dups)
{
    const struct tspec *t = &TYPES[r->type];
    int stored;
    if (!record_stored(db, t, o, r, &stored))
        return TS_E_INTERNAL;
    sqlite3_stmt *st = db_stmt(db, t->upsert1);
    if (st == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(st, 1, o->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, o->source_id, -1, SQLITE_STATIC);
    bind_text_or_null(st, 4, o->batch_id);
    sqlite3_bind_int64(st, 5, o->now_ms);
    for (int i = 0; i < t->nf; i++) {
        if (field_is_text(&t->f[i]))
            bind_text_or_null(st, FIRST_BOUND + i, r->txt[i]);
        else if (r->has[i])
            sqlite3_bind_int64(st, FIRST_BOUND + i, r->num[i]);
    }
    int rc = step_done(st);
    if (rc == 0 && r->type == CM_ORDERS)
        rc = record_items(db, o, r, stored);
    if (rc == 0)
        *ret_dups = stored;
    return rc;
}

static int record_reject(struct db *db, const struct cm_origin *o, const struct cm_rec *r)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < r->nfails && i < CM_FAILS_MAX; i++) {
        sqlite3_stmt *st = db_stmt(db, REJECT_INS1);
        if (st == NULL)
            return TS_E_INTERNAL;
        sqlite3_bind_text(st, 1, o->tenant_id, -1, SQLITE_STATIC);
        bind_text_or_null(st, 2, o->batch_id);
        sqlite3_bind_text(st, 3, o->source_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, cm_type_names[r->type], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, r->index < 0 ? 0 : r->index);
        bind_text_or_null(st, 6, r->key);
        sqlite3_bind_text(st, 7, r->fails[i].field, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 8, r->fails[i].check_type, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 9, r->fails[i].reason, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 10, o->now_ms);
        rc = step_done(st);
    }
    return rc;
}

int cm_record_store(struct db *db, const struct cm_origin *o, const struct cm_rec *r,
                    int64_t *ret_dups)
{
    *ret_dups = 0;
    return r->nfails ? record_reject(db, o, r) : record_upsert(db, o, r, ret_dups);
}
