/* Helpers every handler uses: bounded field extraction that names the field on failure,
 * paging parameters, ISO times, and column access. */
#ifndef TS_HANDLER_H
#define TS_HANDLER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/route.h"
#include "core/json.h"

/* A string field of the JSON body. 0 and *ret (NULL when absent and optional), or
 * TS_E_VALIDATION with the field named: missing, not a string, empty, too long. */
int body_string(struct hctx *h, const char *field, size_t maxlen, bool required,
                const char **ret);
/* The integer text v (a parameter called name) in [min, max]; def when v is NULL or empty. */
int int_value(struct hctx *h, const char *name, const char *v, int def, int min, int max,
              int *ret);
/* An integer query parameter in [min, max]; def when absent. */
int query_int(struct hctx *h, const char *name, int def, int min, int max, int *ret);
/* Fails the request: returns err after naming field and message. */
int fail(struct hctx *h, int err, const char *field, const char *message);
bool email_valid(const char *e);
/* Records one bad field for the error body (at most FIELD_ERRORS_MAX are kept; nferrs counts
 * all). rejected may be NULL; values longer than 200 bytes of JSON are cut to a string. */
#define FIELD_ERRORS_MAX 100
void field_error_add(struct hctx *h, const char *field, const char *message,
                     const json_t *rejected);
/* Writes ISO 8601 UTC for unix ms, or null when ms is 0 / the column is NULL. */
void jw_kiso(struct jw *w, const char *key, int64_t ms);
/* sqlite3 column helpers that never return NULL for text */
const char *col_text(sqlite3_stmt *st, int i);
/* Writes one row of the caller's tenant as the whole response body: runs sql on the writer
 * with ?1 = id and ?2 = h->tenant_id, and on a row calls write_row (which writes one JSON
 * value). No row: TS_E_NOT_FOUND naming field, "<what> not found". */
typedef void (*row_json_fn)(struct hctx *h, struct jw *w, sqlite3_stmt *q);
int row_body(struct hctx *h, const char *sql, const char *id, const char *field, const char *what,
             row_json_fn write_row);
/* Writes {"<key>": [one write_row per row of q], "total", "page", "limit"} as the body, for a
 * page statement already bound; resets q. */
int page_body(struct hctx *h, const char *key, sqlite3_stmt *q, row_json_fn write_row,
              int64_t total, int page, int limit);
/* Starts h->out as a JSON object writer. */
void out_begin(struct hctx *h, struct jw *w);
int out_end(struct hctx *h, struct jw *w);
#endif
