/* Canonical commerce records (README "Canonical records"): what each data_type means, the check
 * of one record against it, and its upsert by natural id into the base tables of schema/012. */
#ifndef TS_COMMERCE_RECORDS_H
#define TS_COMMERCE_RECORDS_H
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "store/db.h"

enum cm_type {
    CM_ORDERS,
    CM_TRANSACTIONS,
    CM_PRODUCTS,
    CM_CUSTOMERS,
    CM_INVENTORY,
    CM_EVENTS,
    CM_TYPE_COUNT
};

/* The data_type names, in enum order; "events" is Tessera's addition to the contract's enum. */
extern const char *const cm_type_names[CM_TYPE_COUNT];
/* The enum value of a data_type name, or -1. */
int cm_type_of(const char *name);

#define CM_ID_MAX 128          /* ids: non-empty, at most this many bytes */
#define CM_TEXT_MAX 512        /* other text fields */
#define CM_ITEMS_MAX 1000      /* line items per order */
#define CM_FAILS_MAX 8         /* failures kept per record (the rest are counted) */
#define CM_FUTURE_MS (24 * 3600 * 1000LL) /* later than now + this is not a real time */
#define CM_FIELDS_MAX 10       /* fields of the widest data_type */

/* One failed check of a record: "data[17].total", "completeness", "total is required". */
struct cm_fail {
    const char *field;
    const char *check_type;    /* completeness, validity, accuracy */
    const char *reason;
};

struct cm_item {
    const char *product_id;
    int64_t quantity;
    int64_t unit_price_m;
};

/* A checked record: each field of its type's table as text (txt) or integer (num), absent
 * fields NULL / has = false. Text points into the JSON record or the check's arena, so the
 * record lives as long as both. */
struct cm_rec {
    enum cm_type type;
    int64_t index;             /* position in the batch; -1 for a stream record */
    const char *key;           /* natural id as text (inventory: product_id/warehouse/time),
                                * NULL when the record had none */
    const char *txt[CM_FIELDS_MAX];
    int64_t num[CM_FIELDS_MAX];
    bool has[CM_FIELDS_MAX];
    struct cm_item *items;
    int nitems;
    int nfails;                /* all failures; the first CM_FAILS_MAX are in fails */
    struct cm_fail fails[CM_FAILS_MAX];
};

/* What a check needs besides the record. */
struct cm_check_env {
    const char *currency;      /* the tenant default for orders/transactions without one */
    int64_t now_ms;            /* times later than now + CM_FUTURE_MS fail accuracy */
    int64_t default_time;      /* the record's own time when it has none (stream requests
                                * carry one), or -1 */
};

/* Checks record v (any JSON value) as a record of type. path is how failures name the record:
 * index >= 0 gives "data[<index>]", index -1 gives "data". Fills *ret; returns ret->nfails
 * (0 = valid). Failure text is allocated in a only when there is a failure. */
int cm_record_check(struct arena *a, enum cm_type type, const json_t *v, int64_t index,
                    const struct cm_check_env *env, struct cm_rec *ret);

/* Where stored records come from. */
struct cm_origin {
    const char *tenant_id;
    const char *source_id;
    const char *batch_id;      /* NULL for stream records */
    int64_t now_ms;            /* ingested_at, created_at of rejects */
};

/* Checked records made ready for the loop, as JSON arrays that a handful of set-based
 * statements take: storing a chunk costs a few statements, not several per record. */
struct cm_chunk {
    enum cm_type type;
    int nrecords, nvalid, nrejected, nitems;
    struct buf rows;           /* [[fields in table order], ...] of the valid records */
    struct buf ids;            /* [natural id, ...] of the valid records */
    struct buf items;          /* orders: [[order_id, line, product_id, quantity, price_m], ...]
                                * of each order's last record in the chunk */
    struct buf rejects;        /* [[record_index, record_key, field, check_type, reason], ...] */
    struct buf days;           /* orders, events: [UTC day, ...], each day of a valid record's
                                * time once (the rollup days the chunk marks dirty) */
    int ndays;
};

void cm_chunk_init(struct cm_chunk *c, enum cm_type type);
void cm_chunk_release(struct cm_chunk *c);
/* Any thread: adds n checked records (valid ones to rows, invalid ones' failures to rejects).
 * Call once per chunk. 0 or TS_E_INTERNAL. */
int cm_chunk_build(struct cm_chunk *c, const struct cm_rec *recs, int n);
/* Loop thread (writer): upserts the valid records by natural id (the later of two with one id
 * wins; an order's items are replaced) and inserts one cm_rejects row per listed failure. A
 * chunk of more than one order or event marks its rollup days dirty once each (schema/023)
 * instead of through a trigger per row. *ret_dups = valid records whose id was stored already
 * or came earlier in the chunk. */
int cm_chunk_store(struct db *db, const struct cm_origin *o, const struct cm_chunk *c,
                   int64_t *ret_dups);
/* Loop thread (writer): cm_chunk_store for one checked record (the stream path), its fields
 * bound to the statements rather than written as JSON: stored by natural id when valid (*ret_dups
 * 1 when the id was stored already), else its failures into cm_rejects. 0 or TS_E_*. */
int cm_record_store(struct db *db, const struct cm_origin *o, const struct cm_rec *rec,
                    int64_t *ret_dups);
#endif
