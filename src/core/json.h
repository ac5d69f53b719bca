/* Streaming JSON writer with escaping into a bounded buffer, and the nesting limit every JSON
 * text from outside is held to before jansson parses it. */
#ifndef TS_JSON_H
#define TS_JSON_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define JW_MAX_DEPTH 32
/* Deepest nesting accepted in a JSON text from outside (bodies, NDJSON lines). jansson's own
 * limit is 2048 levels of recursion; no contract needs more than a handful. */
#define JSON_MAX_DEPTH 32

struct jw {
    struct buf *b;
    int depth;
    bool after_key;
    bool first[JW_MAX_DEPTH + 1];
    int err;                     /* first error (negative), sticky */
};

void jw_init(struct jw *w, struct buf *b);
void jw_obj_open(struct jw *w);
void jw_obj_close(struct jw *w);
void jw_arr_open(struct jw *w);
void jw_arr_close(struct jw *w);
void jw_key(struct jw *w, const char *k);
void jw_str(struct jw *w, const char *s);          /* NULL writes null */
void jw_strn(struct jw *w, const char *s, size_t n);
void jw_int(struct jw *w, int64_t v);
void jw_double(struct jw *w, double v);            /* non-finite writes null */
void jw_bool(struct jw *w, bool v);
void jw_null(struct jw *w);
void jw_raw(struct jw *w, const char *json);       /* already-valid JSON value */
int jw_finish(struct jw *w);                       /* 0, or the first error */

/* key + value shorthands */
void jw_kstr(struct jw *w, const char *k, const char *v);
void jw_kint(struct jw *w, const char *k, int64_t v);
void jw_kdouble(struct jw *w, const char *k, double v);
void jw_kbool(struct jw *w, const char *k, bool v);

/* True when the JSON text s[0..n) nests arrays/objects deeper than max (brackets inside strings
 * do not count). Linear, stops at the first level past max; says nothing of validity. */
bool json_too_deep(const char *s, size_t n, int max);

/* Appends s escaped as a JSON string body (no quotes); invalid UTF-8 becomes U+FFFD. */
int json_escape(struct buf *b, const char *s, size_t n);
#endif
