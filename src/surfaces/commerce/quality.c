/* commerce.md section 4: GET /api/v1/data-quality/reports — one report per source and data
 * type with records ingested in the time range, from the records refused at ingestion
 * (cm_rejects) and checks over the stored records (schema/012).
 *
 * Definitions (also in README.md, "### Data quality"):
 * - In range: stored records whose ingested_at is in [start, end); refused records whose
 *   cm_rejects.created_at is. T = stored + refused records of the (source_id, data_type).
 *   A refused record is one (batch_id, record_index) — for stream records (no batch) one
 *   (record_index, created_at, record_key) — however many of its fields failed.
 * - Refused records: each cm_rejects row is classified by its check_type and field into an
 *   issue type (classify()); a record counts once per issue type and once per check.
 * - Stored records (per data type, SQL below): expected-but-optional fields left empty
 *   (completeness), order total vs Σ quantity × unit_price of its items beyond 0.01, negative
 *   non-refund transaction amounts, a record time more than 5 minutes after it was received
 *   (accuracy), references to ids the tenant never sent — checked only when the tenant has
 *   sent that reference data at all (consistency). Duplicates: Σ cm_batches.duplicate_records
 *   of batches created in range; reported, never scored (re-sending is how updates arrive).
 * - Scores: completeness = 100 × (1 − (R + E/2) / T) with R refused for a missing required
 *   field and E stored records missing an expected field; accuracy, consistency, validity =
 *   100 × (1 − affected / T); quality_score = their mean; a check passes when its score
 *   (rounded to 0.01, as shown) is at least 95.
 *   overall_score = Σ quality_score × T / Σ T (100 with no records).
 * - Severity: high when any of the records was refused; else medium (accuracy and
 *   consistency findings) or low (missing expected fields, duplicates); one level higher when
 *   the issue covers more than 25% of the report's records.
 * - trend: the overall score of [start, mid) against [mid, end): improving when the second
 *   half is more than 2 points higher, declining when more than 2 lower, else stable (also
 *   when a half has no records). */
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "store/db.h"
#include "surfaces/commerce/common.h"
#include "surfaces/commerce/rfm.h"

#define DQ_SAMPLES 5            /* sample_records per issue */
#define DQ_FIELDS 8             /* fields named per issue */
#define DQ_REC_SEEN 16          /* (issue, field) pairs remembered per refused record */
#define DQ_MAX_GROUPS 1000      /* reports in one answer (a few KiB each) */
#define DQ_BUCKETS 1024
#define DQ_PASS 95.0
#define DQ_TREND_POINTS 2.0
#define DQ_ESCALATE 0.25

enum dq_check { CK_COMPLETENESS, CK_ACCURACY, CK_CONSISTENCY, CK_VALIDITY, CK_N };
static const char *const check_names[CK_N] = {"completeness", "accuracy", "consistency",
                                              "validity"};

enum dq_sev { SEV_LOW, SEV_MEDIUM, SEV_HIGH };
static const char *const sev_names[] = {"low", "medium", "high"};

enum dq_issue {
    IS_MISSING_REQUIRED,
    IS_MISSING_EXPECTED,
    IS_INVALID_ENUM,
    IS_INVALID_FORMAT,
    IS_INVALID_TYPE,
    IS_NEGATIVE_AMOUNT,
    IS_INVALID_QUANTITY,
    IS_FUTURE,
    IS_TOTAL_MISMATCH,
    IS_INACCURATE,
    IS_UNKNOWN_CUSTOMER,
    IS_UNKNOWN_PRODUCT,
    IS_UNKNOWN_ORDER,
    IS_INCONSISTENT,
    IS_DUPLICATE,
    IS_N
};

/* What each issue is, which check it lowers (CK_N: none), its severity for stored records,
 * and what a shop engineer can do about it. */
static const struct issue_kind {
    const char *name;
    enum dq_check check;
    enum dq_sev stored_sev;
    const char *action;
} issue_kinds[IS_N] = {
    [IS_MISSING_REQUIRED] = {"missing_required_field", CK_COMPLETENESS, SEV_HIGH,
        "These records were refused and are in no figure. Make the export fill the required "
        "fields named here (README, canonical records), then re-send the refused records."},
    [IS_MISSING_EXPECTED] = {"missing_expected_field", CK_COMPLETENESS, SEV_LOW,
        "The records were stored, but filters and figures that use these optional fields "
        "(region and channel filters, categories, margins, reorder levels) leave them out. "
        "Map the fields named here in the source export."},
    [IS_INVALID_ENUM] = {"invalid_enum", CK_VALIDITY, SEV_HIGH,
        "These records were refused: the fields named here hold a value outside the allowed "
        "list (README, canonical records). Map the source system's codes to those values and "
        "re-send the records."},
    [IS_INVALID_FORMAT] = {"invalid_format", CK_VALIDITY, SEV_HIGH,
        "These records were refused: the fields named here are not in the expected format "
        "(dates as ISO 8601 such as 2024-05-01T12:00:00Z, currency as a 3-letter ISO 4217 "
        "code). Fix the export's formatting (or pass date_format for CSV) and re-send."},
    [IS_INVALID_TYPE] = {"invalid_type", CK_VALIDITY, SEV_HIGH,
        "These records were refused: the fields named here have the wrong type or range "
        "(text where a number belongs, items that are not a list of objects, active that is "
        "not true or false). Send plain numbers without currency signs or thousands "
        "separators."},
    [IS_NEGATIVE_AMOUNT] = {"negative_amount", CK_ACCURACY, SEV_MEDIUM,
        "Amounts are negative where they cannot be. Send a refund as a transaction with type "
        "refund and a positive amount rather than a negative sale, and order totals, prices "
        "and costs of at least 0."},
    [IS_INVALID_QUANTITY] = {"invalid_quantity", CK_ACCURACY, SEV_MEDIUM,
        "Quantities are out of range (item quantities must be whole numbers above 0, stock "
        "levels 0 or more). Check the export's unit conversions and re-send."},
    [IS_FUTURE] = {"future_timestamp", CK_ACCURACY, SEV_MEDIUM,
        "The record's time lies more than 5 minutes after Tessera received it. Check the "
        "source system's clock and the time zone of exported times (times without a zone "
        "are read as UTC)."},
    [IS_TOTAL_MISMATCH] = {"order_total_mismatch", CK_ACCURACY, SEV_MEDIUM,
        "The order total differs from the sum of quantity x unit_price of its items by more "
        "than 0.01. Check whether totals include shipping, tax or discounts that are not "
        "sent as items, and send totals and items that agree."},
    [IS_INACCURATE] = {"inaccurate_value", CK_ACCURACY, SEV_MEDIUM,
        "The fields named here hold values that cannot be true. Check them in the source "
        "system and re-send the records."},
    [IS_UNKNOWN_CUSTOMER] = {"unknown_customer", CK_CONSISTENCY, SEV_MEDIUM,
        "These records name a customer_id that was never sent as a customer. Send the "
        "customers data type for them (or check the id mapping) so they join to a "
        "customer."},
    [IS_UNKNOWN_PRODUCT] = {"unknown_product", CK_CONSISTENCY, SEV_MEDIUM,
        "These records name a product_id that was never sent as a product, so they have "
        "no category or cost. Send the products data type for them, or check the id "
        "mapping."},
    [IS_UNKNOWN_ORDER] = {"unknown_order", CK_CONSISTENCY, SEV_MEDIUM,
        "These transactions name an order_id that was never sent as an order. Send the "
        "orders they belong to, or check the order id mapping."},
    [IS_INCONSISTENT] = {"inconsistent_value", CK_CONSISTENCY, SEV_MEDIUM,
        "The fields named here contradict other records. Check them in the source system "
        "and re-send the records."},
    [IS_DUPLICATE] = {"duplicate_records", CK_N, SEV_LOW,
        "Records with ids already stored were sent again and updated in place (never "
        "counted twice). That is expected when you send updates; otherwise send only new or "
        "changed records (an incremental export)."},
};

/* ---- stored records, per data type ----
 * Each statement returns source_id, ingested_at, natural id, then three bit masks:
 * expected fields left empty (bit i = expected[i]), accuracy (ACC_*), consistency (CON_*).
 * ?1 tenant, ?2 start, ?3 end, ?4 source_id or NULL, ?5/?6/?7 whether the tenant has any
 * customers/products/orders (a reference is only checked against data that was sent). */
/* Record times up to 5 minutes after receipt are clock skew, not the future; totals may
 * differ from their items by 0.01 (100 ten-thousandths) of rounding. */
#define SKEW_MS "300000"
#define TOLERANCE_M "100"
enum { ACC_MISMATCH = 1, ACC_NEGATIVE = 2, ACC_FUTURE = 4 };
enum { CON_CUSTOMER = 1, CON_PRODUCT = 2, CON_ORDER = 4 };
enum { REF_CUSTOMERS = 1, REF_PRODUCTS = 2, REF_ORDERS = 4 };

#define RANGE_WHERE(t)                                                                        \
    " WHERE " t ".tenant_id = ?1 AND " t ".ingested_at >= ?2 AND " t ".ingested_at < ?3"      \
    " AND (?4 IS NULL OR " t ".source_id = ?4)"
#define FUTURE(col) "((" col " > ingested_at + " SKEW_MS ") << 2)"
#define KNOWN_CUSTOMER(t)                                                                     \
    "EXISTS (SELECT 1 FROM cm_customers c WHERE c.tenant_id = " t ".tenant_id"                \
    " AND c.customer_id = " t ".customer_id)"
#define KNOWN_PRODUCT(t)                                                                      \
    "EXISTS (SELECT 1 FROM cm_products p WHERE p.tenant_id = " t ".tenant_id"                 \
    " AND p.product_id = " t ".product_id)"

static const char SQL_ORDERS[] =
    "SELECT o.source_id, o.ingested_at, o.order_id,"
    " (o.channel = '') | ((o.region = '') << 1),"
    " coalesce((SELECT count(*) > 0"
    "   AND abs(o.total_m - total(i.quantity * i.unit_price_m)) > " TOLERANCE_M
    "   FROM cm_order_items i WHERE i.tenant_id = o.tenant_id AND i.order_id = o.order_id), 0)"
    " | ((o.created_at > o.ingested_at + " SKEW_MS ") << 2),"
    " (?5 AND NOT " KNOWN_CUSTOMER("o") ")"
    " | ((?6 AND EXISTS (SELECT 1 FROM cm_order_items i WHERE i.tenant_id = o.tenant_id"
    "   AND i.order_id = o.order_id AND NOT " KNOWN_PRODUCT("i") ")) << 1)"
    " FROM cm_orders o" RANGE_WHERE("o") " ORDER BY o.order_id";
static const char SQL_TRANSACTIONS[] =
    "SELECT t.source_id, t.ingested_at, t.transaction_id,"
    " (coalesce(t.order_id, '') = '') | ((coalesce(t.payment_method, '') = '') << 1),"
    " ((t.amount_m < 0 AND t.type <> 'refund') << 1) | " FUTURE("t.timestamp") ","
    " (?5 AND coalesce(t.customer_id, '') <> '' AND NOT " KNOWN_CUSTOMER("t") ")"
    " | ((?7 AND coalesce(t.order_id, '') <> '' AND NOT EXISTS (SELECT 1 FROM cm_orders x"
    "   WHERE x.tenant_id = t.tenant_id AND x.order_id = t.order_id)) << 2)"
    " FROM cm_transactions t" RANGE_WHERE("t") " ORDER BY t.transaction_id";
static const char SQL_PRODUCTS[] =
    "SELECT p.source_id, p.ingested_at, p.product_id,"
    " (p.category = '') | ((p.price_m IS NULL) << 1) | ((p.cost_m IS NULL) << 2), 0, 0"
    " FROM cm_products p" RANGE_WHERE("p") " ORDER BY p.product_id";
static const char SQL_CUSTOMERS[] =
    "SELECT c.source_id, c.ingested_at, c.customer_id,"
    " (c.created_at IS NULL) | ((coalesce(c.email, '') = '') << 1) | ((c.region = '') << 2),"
    " coalesce(" FUTURE("c.created_at") ", 0), 0"
    " FROM cm_customers c" RANGE_WHERE("c") " ORDER BY c.customer_id";
static const char SQL_INVENTORY[] =
    "SELECT v.source_id, v.ingested_at,"
    " v.product_id || '/' || CASE WHEN v.warehouse = '' THEN '' ELSE v.warehouse || '/' END"
    " || strftime('%Y-%m-%dT%H:%M:%S', v.timestamp / 1000, 'unixepoch')"
    " || printf('.%03dZ', v.timestamp % 1000),"
    " (v.warehouse = '') | ((v.reorder_level IS NULL) << 1),"
    " " FUTURE("v.timestamp") ","
    " (?6 AND NOT " KNOWN_PRODUCT("v") ") << 1"
    " FROM cm_inventory v" RANGE_WHERE("v")
    " ORDER BY v.product_id, v.warehouse, v.timestamp";
static const char SQL_EVENTS[] =
    "SELECT e.source_id, e.ingested_at, e.event_id,"
    " e.type IN ('product_view', 'add_to_cart') AND coalesce(e.product_id, '') = '',"
    " " FUTURE("e.timestamp") ","
    " (?5 AND coalesce(e.customer_id, '') <> '' AND NOT " KNOWN_CUSTOMER("e") ")"
    " | ((?6 AND coalesce(e.product_id, '') <> '' AND NOT " KNOWN_PRODUCT("e") ") << 1)"
    " FROM cm_events e" RANGE_WHERE("e") " ORDER BY e.event_id";

static const char SQL_REFS[] =
    "SELECT EXISTS (SELECT 1 FROM cm_customers WHERE tenant_id = ?1),"
    " EXISTS (SELECT 1 FROM cm_products WHERE tenant_id = ?1),"
    " EXISTS (SELECT 1 FROM cm_orders WHERE tenant_id = ?1)";
/* Sorted so that the rows of one refused record are adjacent; batch ids are UUIDv7, so
 * batches come in the order they arrived. ?5 data_type or NULL. */
static const char SQL_REJECTS[] =
    "SELECT source_id, data_type, batch_id, record_index, record_key, field, check_type,"
    " created_at FROM cm_rejects"
    " WHERE tenant_id = ?1 AND created_at >= ?2 AND created_at < ?3"
    " AND (?4 IS NULL OR source_id = ?4) AND (?5 IS NULL OR data_type = ?5)"
    " ORDER BY source_id, data_type, batch_id, record_index, created_at, record_key";
static const char SQL_DUPLICATES[] =
    "SELECT source_id, data_type, duplicate_records, batch_id FROM cm_batches"
    " WHERE tenant_id = ?1 AND created_at >= ?2 AND created_at < ?3 AND duplicate_records > 0"
    " AND (?4 IS NULL OR source_id = ?4) AND (?5 IS NULL OR data_type = ?5)"
    " ORDER BY batch_id";

enum dq_type { T_ORDERS, T_TRANSACTIONS, T_PRODUCTS, T_CUSTOMERS, T_INVENTORY, T_EVENTS, T_N };

static const struct dq_type_spec {
    const char *name;
    const char *sql;
    const char *expected[3];
    const char *time_field;     /* the field a future timestamp is in */
    const char *product_field;  /* where an unknown product is named */
    unsigned refs;              /* reference data the consistency check uses */
} type_specs[T_N] = {
    [T_ORDERS] = {"orders", SQL_ORDERS, {"channel", "region"}, "created_at",
                  "items[].product_id", REF_CUSTOMERS | REF_PRODUCTS},
    [T_TRANSACTIONS] = {"transactions", SQL_TRANSACTIONS, {"order_id", "payment_method"},
                        "timestamp", NULL, REF_CUSTOMERS | REF_ORDERS},
    [T_PRODUCTS] = {"products", SQL_PRODUCTS, {"category", "price", "cost"}, NULL, NULL, 0},
    [T_CUSTOMERS] = {"customers", SQL_CUSTOMERS, {"created_at", "email", "region"},
                     "created_at", NULL, 0},
    [T_INVENTORY] = {"inventory", SQL_INVENTORY, {"warehouse", "reorder_level"}, "timestamp",
                     "product_id", REF_PRODUCTS},
    [T_EVENTS] = {"events", SQL_EVENTS, {"product_id"}, "timestamp", "product_id",
                  REF_CUSTOMERS | REF_PRODUCTS},
};

static int type_find(const char *name)
{
    for (int i = 0; name && i < T_N; i++)
        if (strcmp(type_specs[i].name, name) == 0)
            return i;
    return -1;
}

/* ---- accumulation ---- */

struct dq_issue_acc {
    int64_t count;              /* records */
    bool refused;               /* some of them were refused at ingestion */
    int nsamples;
    const char *samples[DQ_SAMPLES];
    int nfields;
    const char *field[DQ_FIELDS];
    int64_t field_n[DQ_FIELDS];
};

/* Counts of one half of the range; a report's figures are the sum of both halves. */
struct dq_counts {
    int64_t total;
    int64_t expected;           /* stored records missing an expected field */
    int64_t hit[CK_N];          /* records that fail the check (completeness: refused ones) */
};

struct dq_group {
    const char *source_id;
    int type;
    struct dq_counts half[2];
    struct dq_issue_acc issue[IS_N];
    int ndup_batches;           /* batches with duplicates; the first DQ_SAMPLES named */
    const char *dup_batch[DQ_SAMPLES];
    struct dq_group *next;      /* hash chain */
};

struct dq_run {
    struct hctx *h;
    const char *source_id, *data_type;   /* filters, NULL when absent */
    int64_t start, end, mid;
    unsigned refs;              /* REF_* the tenant has sent */
    struct dq_group *bucket[DQ_BUCKETS];
    struct dq_group **groups;
    int ngroups, cap;
};

static unsigned group_hash(const char *source, int type)
{
    unsigned x = 2166136261u ^ (unsigned)type;
    for (const unsigned char *p = (const unsigned char *)source; *p; p++)
        x = (x ^ *p) * 16777619u;
    return x % DQ_BUCKETS;
}

/* The group of (source, type); created when create is set. NULL when absent, or when the
 * answer would hold more than DQ_MAX_GROUPS (run->ngroups says which). */
static struct dq_group *group_get(struct dq_run *run, const char *source, int type, bool create)
{
    unsigned b = group_hash(source, type);
    for (struct dq_group *g = run->bucket[b]; g; g = g->next)
        if (g->type == type && strcmp(g->source_id, source) == 0)
            return g;
    if (!create || run->ngroups == DQ_MAX_GROUPS)
        return NULL;
    struct arena *a = run->h->arena;
    if (run->ngroups == run->cap) {
        int cap = run->cap ? run->cap * 2 : 16;
        struct dq_group **n = arena_alloc(a, sizeof(*n) * (size_t)cap);
        if (run->ngroups)
            memcpy(n, run->groups, sizeof(*n) * (size_t)run->ngroups);
        run->groups = n;
        run->cap = cap;
    }
    struct dq_group *g = arena_calloc(a, sizeof(*g));
    g->source_id = arena_strdup(a, source);
    g->type = type;
    g->next = run->bucket[b];
    run->bucket[b] = g;
    run->groups[run->ngroups++] = g;
    return g;
}

static void issue_sample(struct arena *a, struct dq_issue_acc *is, const char *id)
{
    if (is->nsamples < DQ_SAMPLES)
        is->samples[is->nsamples++] = arena_strdup(a, id);
}

static void issue_field(struct arena *a, struct dq_issue_acc *is, const char *field)
{
    for (int i = 0; i < is->nfields; i++)
        if (strcmp(is->field[i], field) == 0) {
            is->field_n[i]++;
            return;
        }
    if (is->nfields == DQ_FIELDS)
        return;
    is->field[is->nfields] = arena_strdup(a, field);
    is->field_n[is->nfields++] = 1;
}

/* One stored record with its issue and the field it is in. */
static void stored_issue(struct dq_run *run, struct dq_group *g, int issue, const char *id,
                         const char *field)
{
    struct dq_issue_acc *is = &g->issue[issue];
    is->count++;
    issue_sample(run->h->arena, is, id);
    if (field)
        issue_field(run->h->arena, is, field);
}

/* ---- refused records ---- */

static bool name_in(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(name, *list) == 0)
            return true;
    return false;
}

static const char *const enum_fields[] = {"status", "type", NULL};
static const char *const time_fields[] = {"created_at", "timestamp", NULL};
static const char *const money_fields[] = {"total", "amount", "price", "cost", "unit_price",
                                           NULL};
static const char *const count_fields[] = {"quantity", "reorder_level", NULL};
static const char *const type_fields[] = {"", "items", "active", NULL};

/* The issue a cm_rejects row stands for, from its check and its field's last name. */
static int classify(const char *check, const char *base)
{
    if (strcmp(check, "completeness") == 0)
        return IS_MISSING_REQUIRED;
    if (strcmp(check, "validity") == 0) {
        if (name_in(base, enum_fields))
            return IS_INVALID_ENUM;
        if (name_in(base, money_fields) || name_in(base, count_fields) ||
            name_in(base, type_fields))
            return IS_INVALID_TYPE;
        return IS_INVALID_FORMAT;
    }
    if (strcmp(check, "accuracy") == 0) {
        if (name_in(base, money_fields))
            return IS_NEGATIVE_AMOUNT;
        if (name_in(base, count_fields))
            return IS_INVALID_QUANTITY;
        if (name_in(base, time_fields))
            return IS_FUTURE;
        return IS_INACCURATE;
    }
    if (strcmp(base, "customer_id") == 0)
        return IS_UNKNOWN_CUSTOMER;
    if (strcmp(base, "product_id") == 0)
        return IS_UNKNOWN_PRODUCT;
    if (strcmp(base, "order_id") == 0)
        return IS_UNKNOWN_ORDER;
    return IS_INCONSISTENT;
}

/* "data[17].items[2].quantity" -> "items[].quantity" (the record's position dropped, other
 * positions emptied), cut at 64 bytes. *ret_base is the last name ("quantity"). */
static char *field_name(struct arena *a, const char *field, const char **ret_base)
{
    const char *s = field;
    if (strncmp(s, "data[", 5) == 0) {
        const char *c = strchr(s, ']');
        s = c ? c + 1 : s + strlen(s);
        if (*s == '.')
            s++;
    }
    char *out = arena_alloc(a, 65);
    size_t n = 0;
    bool in_index = false;
    for (; *s && n < 64; s++) {
        if (*s == '[' || *s == ']')
            in_index = *s == '[';
        else if (in_index)
            continue;
        out[n++] = *s;
    }
    out[n] = 0;
    const char *dot = strrchr(out, '.');
    dot = dot ? dot + 1 : out;
    size_t bn = strlen(dot);
    /* "items[]" (a line item that is not an object) is classified as "items" */
    *ret_base = bn >= 2 && strcmp(dot + bn - 2, "[]") == 0 ? arena_strndup(a, dot, bn - 2) : dot;
    return out;
}

/* The refused record being read: its rows are adjacent in SQL_REJECTS. */
struct dq_rec {
    struct dq_group *g;
    const char *batch_id, *key, *sample;
    int64_t index, created_at;
    unsigned issues, checks;
    int nseen;
    struct {
        int issue;
        const char *field;
    } seen[DQ_REC_SEEN];
};

static void rec_flush(struct dq_run *run, struct dq_rec *r)
{
    if (r->g == NULL)
        return;
    struct dq_counts *c = &r->g->half[r->created_at >= run->mid];
    c->total++;
    for (int ck = 0; ck < CK_N; ck++)
        c->hit[ck] += (r->checks >> ck) & 1;
    for (int i = 0; i < IS_N; i++) {
        if (!((r->issues >> i) & 1))
            continue;
        struct dq_issue_acc *is = &r->g->issue[i];
        is->count++;
        is->refused = true;
        issue_sample(run->h->arena, is, r->sample);
    }
    for (int i = 0; i < r->nseen; i++)
        issue_field(run->h->arena, &r->g->issue[r->seen[i].issue], r->seen[i].field);
    r->g = NULL;
}

static bool same_text(const char *a, const unsigned char *b)
{
    if (a == NULL || b == NULL)
        return a == NULL && b == NULL;
    return strcmp(a, (const char *)b) == 0;
}

static bool rec_same(const struct dq_rec *r, const struct dq_group *g, sqlite3_stmt *q)
{
    if (r->g != g || !same_text(r->batch_id, sqlite3_column_text(q, 2)) ||
        r->index != sqlite3_column_int64(q, 3))
        return false;
    if (r->batch_id)
        return true;
    return r->created_at == sqlite3_column_int64(q, 7) &&
           same_text(r->key, sqlite3_column_text(q, 4));
}

static void rec_start(struct dq_run *run, struct dq_rec *r, struct dq_group *g, sqlite3_stmt *q)
{
    struct arena *a = run->h->arena;
    const unsigned char *batch = sqlite3_column_text(q, 2), *key = sqlite3_column_text(q, 4);
    memset(r, 0, sizeof(*r));
    r->g = g;
    r->batch_id = batch ? arena_strdup(a, (const char *)batch) : NULL;
    r->key = key ? arena_strdup(a, (const char *)key) : NULL;
    r->index = sqlite3_column_int64(q, 3);
    r->created_at = sqlite3_column_int64(q, 7);
    if (r->key && r->key[0])
        r->sample = r->key;
    else if (r->batch_id)
        r->sample = arena_printf(a, "%s:data[%lld]", r->batch_id, (long long)r->index);
    else {
        char ts[40];
        clock_iso8601(r->created_at, 1, ts, sizeof(ts));
        r->sample = arena_printf(a, "stream@%s", ts);
    }
}

static void rec_add(struct dq_run *run, struct dq_rec *r, sqlite3_stmt *q)
{
    const char *check = (const char *)sqlite3_column_text(q, 6), *base;
    const char *field = field_name(run->h->arena, (const char *)sqlite3_column_text(q, 5), &base);
    int issue = classify(check ? check : "", base);
    r->issues |= 1u << issue;
    r->checks |= 1u << issue_kinds[issue].check;
    for (int i = 0; i < r->nseen; i++)
        if (r->seen[i].issue == issue && strcmp(r->seen[i].field, field) == 0)
            return;
    if (r->nseen < DQ_REC_SEEN) {
        r->seen[r->nseen].issue = issue;
        r->seen[r->nseen++].field = field;
    }
}

static sqlite3_stmt *run_prepare(struct dq_run *run, const char *sql)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(run->h->db, sql, -1, &q, NULL) != SQLITE_OK)
        return NULL;
    /* statements use a subset of these; binding an unused number is harmless */
    sqlite3_bind_text(q, 1, run->h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, run->start);
    sqlite3_bind_int64(q, 3, run->end);
    if (run->source_id)
        sqlite3_bind_text(q, 4, run->source_id, -1, SQLITE_STATIC);
    if (sql == SQL_REJECTS || sql == SQL_DUPLICATES) {
        if (run->data_type)
            sqlite3_bind_text(q, 5, run->data_type, -1, SQLITE_STATIC);
        return q;
    }
    sqlite3_bind_int(q, 5, (run->refs & REF_CUSTOMERS) != 0);
    sqlite3_bind_int(q, 6, (run->refs & REF_PRODUCTS) != 0);
    sqlite3_bind_int(q, 7, (run->refs & REF_ORDERS) != 0);
    return q;
}

static int run_finish(struct dq_run *run, sqlite3_stmt *q, int rc)
{
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE)
        return db_err(rc);
    if (run->ngroups == DQ_MAX_GROUPS)
        return fail(run->h, TS_E_VALIDATION, "source_id",
                    "more than 1000 source and data type pairs in the range: filter by "
                    "source_id or data_type");
    return 0;
}

static int scan_rejects(struct dq_run *run)
{
    sqlite3_stmt *q = run_prepare(run, SQL_REJECTS);
    if (q == NULL)
        return TS_E_INTERNAL;
    struct dq_rec r = {0};
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int type = type_find((const char *)sqlite3_column_text(q, 1));
        struct dq_group *g = type < 0 ? NULL :
            group_get(run, (const char *)sqlite3_column_text(q, 0), type, true);
        if (g == NULL)
            continue;
        if (!rec_same(&r, g, q)) {
            rec_flush(run, &r);
            rec_start(run, &r, g, q);
        }
        rec_add(run, &r, q);
    }
    rec_flush(run, &r);
    return run_finish(run, q, rc);
}

/* ---- stored records ---- */

static void stored_row(struct dq_run *run, int type, sqlite3_stmt *q)
{
    const struct dq_type_spec *ts = &type_specs[type];
    struct dq_group *g = group_get(run, (const char *)sqlite3_column_text(q, 0), type, true);
    if (g == NULL)
        return;
    struct dq_counts *c = &g->half[sqlite3_column_int64(q, 1) >= run->mid];
    const char *id = (const char *)sqlite3_column_text(q, 2);
    int64_t exp = sqlite3_column_int64(q, 3), acc = sqlite3_column_int64(q, 4),
            con = sqlite3_column_int64(q, 5);
    id = id ? id : "";
    c->total++;
    if (exp) {
        c->expected++;
        struct dq_issue_acc *is = &g->issue[IS_MISSING_EXPECTED];
        is->count++;
        issue_sample(run->h->arena, is, id);
        for (int i = 0; i < 3 && ts->expected[i]; i++)
            if ((exp >> i) & 1)
                issue_field(run->h->arena, is, ts->expected[i]);
    }
    c->hit[CK_ACCURACY] += acc != 0;
    if (acc & ACC_MISMATCH)
        stored_issue(run, g, IS_TOTAL_MISMATCH, id, "total");
    if (acc & ACC_NEGATIVE)
        stored_issue(run, g, IS_NEGATIVE_AMOUNT, id, "amount");
    if (acc & ACC_FUTURE)
        stored_issue(run, g, IS_FUTURE, id, ts->time_field);
    c->hit[CK_CONSISTENCY] += con != 0;
    if (con & CON_CUSTOMER)
        stored_issue(run, g, IS_UNKNOWN_CUSTOMER, id, "customer_id");
    if (con & CON_PRODUCT)
        stored_issue(run, g, IS_UNKNOWN_PRODUCT, id, ts->product_field);
    if (con & CON_ORDER)
        stored_issue(run, g, IS_UNKNOWN_ORDER, id, "order_id");
}

static int scan_stored(struct dq_run *run, int type)
{
    sqlite3_stmt *q = run_prepare(run, type_specs[type].sql);
    if (q == NULL)
        return TS_E_INTERNAL;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW)
        stored_row(run, type, q);
    return run_finish(run, q, rc);
}

static int scan_refs(struct dq_run *run)
{
    sqlite3_stmt *q = run_prepare(run, SQL_REFS);
    if (q == NULL)
        return TS_E_INTERNAL;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        run->refs = (sqlite3_column_int(q, 0) ? REF_CUSTOMERS : 0) |
                    (sqlite3_column_int(q, 1) ? REF_PRODUCTS : 0) |
                    (sqlite3_column_int(q, 2) ? REF_ORDERS : 0);
        rc = SQLITE_DONE;
    }
    sqlite3_finalize(q);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

/* Duplicates belong to the reports that have records in range; the ids a batch re-sent are
 * not kept (the stored tables hold one row per id), so the samples are empty and the
 * suggested action names the batches instead. */
static int scan_duplicates(struct dq_run *run)
{
    sqlite3_stmt *q = run_prepare(run, SQL_DUPLICATES);
    if (q == NULL)
        return TS_E_INTERNAL;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int type = type_find((const char *)sqlite3_column_text(q, 1));
        struct dq_group *g = type < 0 ? NULL :
            group_get(run, (const char *)sqlite3_column_text(q, 0), type, false);
        if (g == NULL)
            continue;
        g->issue[IS_DUPLICATE].count += sqlite3_column_int64(q, 2);
        if (g->ndup_batches < DQ_SAMPLES)
            g->dup_batch[g->ndup_batches] =
                arena_strdup(run->h->arena, (const char *)sqlite3_column_text(q, 3));
        g->ndup_batches++;
    }
    return run_finish(run, q, rc);
}

/* ---- scores ---- */

static void counts_sum(const struct dq_group *g, struct dq_counts *ret)
{
    memset(ret, 0, sizeof(*ret));
    for (int h = 0; h < 2; h++) {
        ret->total += g->half[h].total;
        ret->expected += g->half[h].expected;
        for (int ck = 0; ck < CK_N; ck++)
            ret->hit[ck] += g->half[h].hit[ck];
    }
}

static double check_score(const struct dq_counts *c, int ck)
{
    if (c->total == 0)
        return 100;
    double bad = (double)c->hit[ck];
    if (ck == CK_COMPLETENESS)
        bad += (double)c->expected / 2;
    double s = 100.0 * (1.0 - bad / (double)c->total);
    return s < 0 ? 0 : s;
}

static double quality_score(const struct dq_counts *c)
{
    double s = 0;
    for (int ck = 0; ck < CK_N; ck++)
        s += check_score(c, ck);
    return s / CK_N;
}

static double round2(double v)
{
    return round(v * 100.0) / 100.0;
}

/* Record-weighted mean quality score over the groups for one half (0, 1) or both (2);
 * ret_total gets the records it weighed. */
static double weighted_score(const struct dq_run *run, int half, int64_t *ret_total)
{
    double sum = 0;
    int64_t n = 0;
    for (int i = 0; i < run->ngroups; i++) {
        struct dq_counts c;
        if (half == 2)
            counts_sum(run->groups[i], &c);
        else
            c = run->groups[i]->half[half];
        sum += quality_score(&c) * (double)c.total;
        n += c.total;
    }
    *ret_total = n;
    return n ? sum / (double)n : 100;
}

static const char *trend(const struct dq_run *run)
{
    int64_t n1, n2;
    double first = weighted_score(run, 0, &n1), second = weighted_score(run, 1, &n2);
    if (n1 == 0 || n2 == 0)
        return "stable";
    if (second - first > DQ_TREND_POINTS)
        return "improving";
    if (first - second > DQ_TREND_POINTS)
        return "declining";
    return "stable";
}

/* ---- the answer ---- */

/* report_id: a UUID (version 8) from BLAKE2b of tenant, source, data type and range, so the
 * same report asked again has the same id. */
static void report_id(const struct dq_run *run, const struct dq_group *g, char out[37])
{
    const char *src = g->source_id, *type = type_specs[g->type].name;
    char range[48];
    int rn = snprintf(range, sizeof(range), "%lld-%lld", (long long)run->start,
                      (long long)run->end);
    unsigned char d[16];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof(d));
    crypto_generichash_update(&st, (const unsigned char *)run->h->tenant_id,
                              strlen(run->h->tenant_id) + 1);
    crypto_generichash_update(&st, (const unsigned char *)src, strlen(src) + 1);
    crypto_generichash_update(&st, (const unsigned char *)type, strlen(type) + 1);
    crypto_generichash_update(&st, (const unsigned char *)range, (size_t)rn);
    crypto_generichash_final(&st, d, sizeof(d));
    d[6] = (unsigned char)((d[6] & 0x0f) | 0x80);
    d[8] = (unsigned char)((d[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[d[i] >> 4];
        out[o++] = hex[d[i] & 15];
    }
    out[o] = 0;
}

/* "customer_id 2, total 1": an issue's fields with the records each is in. */
static const char *fields_list(struct arena *a, const struct dq_issue_acc *is)
{
    const char *s = "";
    for (int i = 0; i < is->nfields; i++)
        s = arena_printf(a, "%s%s%s %lld", s, i ? ", " : "", is->field[i],
                         (long long)is->field_n[i]);
    return s;
}

/* " (customer_id 2, total 1)", or "" without fields. */
static const char *fields_text(struct arena *a, const struct dq_issue_acc *is)
{
    return is->nfields ? arena_printf(a, " (%s)", fields_list(a, is)) : "";
}

/* "invalid_enum 3 (status 3), invalid_format 1 (created_at 1)" over a check's issues. */
static const char *issues_text(struct arena *a, const struct dq_group *g, int ck)
{
    const char *s = "";
    for (int i = 0; i < IS_N; i++) {
        const struct dq_issue_acc *is = &g->issue[i];
        if ((int)issue_kinds[i].check != ck || is->count == 0 || i == IS_MISSING_EXPECTED)
            continue;
        s = arena_printf(a, "%s%s%s %lld%s", s, s[0] ? ", " : "", issue_kinds[i].name,
                         (long long)is->count, fields_text(a, is));
    }
    return s;
}

/* "; not checked: products (none sent yet)" for the references the tenant never sent. */
static const char *refs_text(struct arena *a, const struct dq_run *run, int type)
{
    static const struct {
        unsigned bit;
        const char *name;
    } refs[] = {{REF_CUSTOMERS, "customers"}, {REF_PRODUCTS, "products"},
                {REF_ORDERS, "orders"}};
    const char *checked = "", *missing = "";
    for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++) {
        if (!(type_specs[type].refs & refs[i].bit))
            continue;
        if (run->refs & refs[i].bit)
            checked = arena_printf(a, "%s%s%s", checked, checked[0] ? ", " : "", refs[i].name);
        else
            missing = arena_printf(a, "%s%s%s", missing, missing[0] ? ", " : "", refs[i].name);
    }
    if (type_specs[type].refs == 0)
        return "; this data type refers to no other records";
    return arena_printf(a, "%s%s%s%s", checked[0] ? "; checked against the stored " : "",
                        checked, missing[0] ? "; not checked, none sent yet: " : "", missing);
}

static const char *check_details(struct arena *a, const struct dq_run *run,
                                 const struct dq_group *g, const struct dq_counts *c, int ck,
                                 double score)
{
    long long t = c->total, hit = c->hit[ck];
    if (ck == CK_COMPLETENESS) {
        const struct dq_issue_acc *req = &g->issue[IS_MISSING_REQUIRED],
                                  *exp = &g->issue[IS_MISSING_EXPECTED];
        return arena_printf(a, "%lld of %lld records refused for a missing required field%s; "
                            "%lld stored records miss expected fields%s; "
                            "score = 100 * (1 - (%lld + %lld/2) / %lld) = %.2f",
                            hit, t, fields_text(a, req), (long long)c->expected,
                            fields_text(a, exp), hit, (long long)c->expected, t, score);
    }
    const char *what = ck == CK_ACCURACY      ? "hold values that cannot be true"
                       : ck == CK_CONSISTENCY ? "refer to records that were never sent"
                                              : "were refused as invalid";
    const char *list = issues_text(a, g, ck);
    const char *s = arena_printf(a, "%lld of %lld records %s%s%s", hit, t, what,
                                 list[0] ? ": " : "", list);
    if (ck == CK_CONSISTENCY) {
        s = arena_printf(a, "%s%s", s, refs_text(a, run, g->type));
        if (g->issue[IS_DUPLICATE].count)
            s = arena_printf(a, "%s; %lld duplicate records (ids sent again, updated in "
                             "place; not scored)", s, (long long)g->issue[IS_DUPLICATE].count);
    }
    return arena_printf(a, "%s; score = 100 * (1 - %lld / %lld) = %.2f", s, hit, t, score);
}

static int issue_severity(const struct dq_group *g, const struct dq_counts *c, int i)
{
    const struct dq_issue_acc *is = &g->issue[i];
    int sev = is->refused ? SEV_HIGH : (int)issue_kinds[i].stored_sev;
    if (c->total > 0 && (double)is->count > DQ_ESCALATE * (double)c->total && sev < SEV_HIGH)
        sev++;
    return sev;
}

struct issue_order {
    int issue, sev;
    int64_t count;
};

static int issue_order_cmp(const void *a, const void *b)
{
    const struct issue_order *x = a, *y = b;
    if (x->sev != y->sev)
        return y->sev - x->sev;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return strcmp(issue_kinds[x->issue].name, issue_kinds[y->issue].name);
}

static void write_issue(struct jw *w, struct arena *a, const struct dq_group *g, int i, int sev)
{
    const struct dq_issue_acc *is = &g->issue[i];
    jw_obj_open(w);
    jw_kstr(w, "issue_type", issue_kinds[i].name);
    jw_kstr(w, "severity", sev_names[sev]);
    jw_kint(w, "count", is->count);
    jw_key(w, "sample_records");
    jw_arr_open(w);
    for (int k = 0; k < is->nsamples; k++)
        jw_str(w, is->samples[k]);
    jw_arr_close(w);
    const char *action = issue_kinds[i].action;
    if (is->nfields)
        action = arena_printf(a, "%s Records per field: %s.", action, fields_list(a, is));
    int shown = g->ndup_batches < DQ_SAMPLES ? g->ndup_batches : DQ_SAMPLES;
    for (int k = 0; k < shown && i == IS_DUPLICATE; k++)
        action = arena_printf(a, "%s%s%s", action, k ? ", " : " Batches: ", g->dup_batch[k]);
    if (i == IS_DUPLICATE && g->ndup_batches > shown)
        action = arena_printf(a, "%s and %d more", action, g->ndup_batches - shown);
    if (i == IS_DUPLICATE && g->ndup_batches)
        action = arena_printf(a, "%s.", action);
    jw_kstr(w, "suggested_action", action);
    jw_obj_close(w);
}

static void write_issues(struct jw *w, struct arena *a, const struct dq_group *g,
                         const struct dq_counts *c)
{
    struct issue_order order[IS_N];
    int n = 0;
    for (int i = 0; i < IS_N; i++)
        if (g->issue[i].count > 0)
            order[n++] = (struct issue_order){i, issue_severity(g, c, i), g->issue[i].count};
    qsort(order, (size_t)n, sizeof(order[0]), issue_order_cmp);
    jw_key(w, "issues_found");
    jw_arr_open(w);
    for (int k = 0; k < n; k++)
        write_issue(w, a, g, order[k].issue, order[k].sev);
    jw_arr_close(w);
}

static void write_report(struct jw *w, const struct dq_run *run, const struct dq_group *g,
                         const char *generated_at)
{
    struct arena *a = run->h->arena;
    struct dq_counts c;
    counts_sum(g, &c);
    char id[37];
    report_id(run, g, id);
    jw_obj_open(w);
    jw_kstr(w, "report_id", id);
    jw_kstr(w, "source_id", g->source_id);
    jw_kstr(w, "data_type", type_specs[g->type].name);
    jw_kdouble(w, "quality_score", round2(quality_score(&c)));
    jw_key(w, "checks_performed");
    jw_arr_open(w);
    for (int ck = 0; ck < CK_N; ck++) {
        double score = round2(check_score(&c, ck));   /* passed as shown */
        jw_obj_open(w);
        jw_kstr(w, "check_type", check_names[ck]);
        jw_kbool(w, "passed", score >= DQ_PASS);
        jw_kdouble(w, "score", score);
        jw_kstr(w, "details", check_details(a, run, g, &c, ck, score));
        jw_obj_close(w);
    }
    jw_arr_close(w);
    write_issues(w, a, g, &c);
    jw_kstr(w, "generated_at", generated_at);
    jw_obj_close(w);
}

static int group_cmp(const void *a, const void *b)
{
    const struct dq_group *x = *(const struct dq_group *const *)a,
                          *y = *(const struct dq_group *const *)b;
    int r = strcmp(x->source_id, y->source_id);
    return r ? r : strcmp(type_specs[x->type].name, type_specs[y->type].name);
}

static int write_answer(struct dq_run *run)
{
    struct hctx *h = run->h;
    if (run->ngroups > 1)
        qsort(run->groups, (size_t)run->ngroups, sizeof(run->groups[0]), group_cmp);
    char now[40];
    clock_iso8601(clock_now_ms(), 0, now, sizeof(now));
    int64_t n;
    double overall = weighted_score(run, 2, &n);
    struct jw w;
    cm_ok_begin(h, &w);
    jw_obj_open(&w);
    jw_key(&w, "reports");
    jw_arr_open(&w);
    for (int i = 0; i < run->ngroups; i++)
        write_report(&w, run, run->groups[i], now);
    jw_arr_close(&w);
    jw_kdouble(&w, "overall_score", round2(overall));
    jw_kstr(&w, "trend", trend(run));
    jw_obj_close(&w);
    return cm_ok_end(h, &w);
}

/* ---- the route ---- */

static bool source_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 50)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-'))
            return false;
    return true;
}

/* Every bad parameter in field_errors, not only the first. */
static int parse_params(struct hctx *h, struct dq_run *run)
{
    struct cm_query q;
    int r = cm_query_parse(h, &q);
    if (r < 0)
        return r;
    const char *src = cm_param(h, &q, NULL, "source_id");
    const char *type = cm_param(h, &q, NULL, "data_type");
    run->source_id = src && src[0] ? src : NULL;
    run->data_type = type && type[0] ? type : NULL;
    if (run->source_id && !source_id_valid(run->source_id)) {
        json_t *v = json_string(run->source_id);
        field_error_add(h, "source_id", "source_id must be 3-50 letters, digits or hyphens", v);
        json_decref(v);
    }
    if (run->data_type && type_find(run->data_type) < 0) {
        json_t *v = json_string(run->data_type);
        field_error_add(h, "data_type",
                        "data_type must be one of orders, transactions, products, customers, "
                        "inventory, events", v);
        json_decref(v);
    }
    r = cm_time_range(h, &q, true, 0, &run->start, &run->end);
    if (r < 0 && h->ferrs)
        field_error_add(h, h->err_field, h->err_message, NULL);
    if (h->ferrs) {
        h->err_message = "Request validation failed";
        return TS_E_VALIDATION;
    }
    return r;
}

static int reports(struct hctx *h)
{
    struct dq_run *run = arena_calloc(h->arena, sizeof(*run));
    run->h = h;
    int r = parse_params(h, run);
    if (r < 0)
        return r;
    run->mid = run->start + (run->end - run->start) / 2;
    r = cm_an_read_begin(h->db);   /* every scan sees the same records */
    if (r == 0)
        r = scan_refs(run);
    if (r == 0)
        r = scan_rejects(run);
    int only = run->data_type ? type_find(run->data_type) : -1;
    for (int t = 0; t < T_N && r == 0; t++)
        if (only < 0 || only == t)
            r = scan_stored(run, t);
    if (r == 0)
        r = scan_duplicates(run);
    cm_an_read_end(h->db);
    return r < 0 ? r : write_answer(run);
}

static const struct route routes[] = {
    {"GET", "/api/v1/data-quality/reports", reports, "commerce.read", "analytics", RUN_POOL, 0,
     0},
};

const struct route_table commerce_quality_table = {SURF_COMMERCE, routes,
                                                   sizeof(routes) / sizeof(routes[0])};
