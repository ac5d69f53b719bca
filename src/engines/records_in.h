/* Record readers for commerce batch ingestion: a CSV (RFC 4180), NDJSON or XML body becomes a
 * JSON array of record objects that the ingestion code validates record by record. Readers do
 * not validate fields; they only shape the body (CSV/XML cells are strings, an empty CSV cell
 * is an absent field) and enforce the structural limits below, each as an error message. */
#ifndef TS_RECORDS_IN_H
#define TS_RECORDS_IN_H
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define REC_MAX_COLUMNS 256
#define REC_MAX_CELL (64 * 1024)
#define REC_XML_MAX_DEPTH 8          /* root = 1, record = 2, field = 3 ... */
#define REC_XML_MAX_FIELDS 256       /* per record (and per nested object) */

enum rec_format { REC_CSV, REC_NDJSON, REC_XML };

struct rec_in_opts {
    const char *data_type;     /* "orders", "transactions", "products", "customers", "inventory", "events" */
    const char *columns;       /* CSV: comma list of names replacing the header row, or NULL */
    bool no_header;            /* CSV: the first row is data, not a header (needs columns) */
    const char *date_format;   /* strptime format for created_at / timestamp cells, or NULL = as given */
    size_t max_records;        /* error out once more than this many records result (e.g. 10000) */
};

/* Parses a body into a JSON array of record objects (new reference). On a malformed body
 * returns NULL with err naming where (line / byte / element) and why, in words a user can act on.
 * Returns NULL with err "more than N records" past o->max_records (the caller maps it to the
 * contract's 10,000-record rule). */
json_t *records_parse(enum rec_format f, const char *data, size_t n, const struct rec_in_opts *o,
                      char *err, size_t errlen);

#endif
