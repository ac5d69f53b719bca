/* Record readers for commerce ingestion: CSV rows, NDJSON lines or XML elements become a JSON
 * array of record objects (CSV order line items grouped into orders), with dates normalised. */
#include "engines/records_in.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "engines/csv.h"
#include "engines/xmlrec.h"

_Static_assert(REC_MAX_COLUMNS == CSV_MAX_COLUMNS, "one column limit");
_Static_assert(REC_MAX_CELL == CSV_MAX_CELL, "one cell limit");

/* ---------- shared by the three readers ---------- */

/* A date cell parsed with fmt, as ISO 8601 UTC into out[21]; false if the cell does not match
 * the format exactly, names a day that does not exist (02-30), or lies outside years 0..9999. */
static bool date_convert(const char *s, const char *fmt, char out[21])
{
    struct tm tm = {0};
    const char *end = strptime(s, fmt, &tm);
    if (end == NULL)
        return false;
    while (isspace((unsigned char)*end))
        end++;
    if (*end != '\0')
        return false;
    long gmtoff = tm.tm_gmtoff;   /* set by %z; timegm ignores it */
    struct tm asked = tm;
    time_t t = timegm(&tm);
    if (tm.tm_mday != asked.tm_mday || tm.tm_mon != asked.tm_mon || tm.tm_year != asked.tm_year)
        return false;   /* timegm normalised an impossible date */
    t -= gmtoff;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
        return false;
    return strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) == 20;
}

void records__fix_dates(json_t *rec, const char *fmt)
{
    static const char *const keys[] = {"created_at", "timestamp"};
    if (fmt == NULL || *fmt == '\0')
        return;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_t *v = json_object_get(rec, keys[i]);
        char iso[21];
        /* a cell that does not match stays as it is: the validator rejects that one record,
         * naming the field, instead of the whole body failing over one bad date */
        if (json_is_string(v) && date_convert(json_string_value(v), fmt, iso))
            json_object_set_new(rec, keys[i], json_string(iso));
    }
}

/* Appends rec (stolen) to out unless that makes more than o->max_records (0 = no limit). */
static int out_push(json_t *out, json_t *rec, const struct rec_in_opts *o, char *err,
                    size_t errlen)
{
    if (o->max_records && json_array_size(out) >= o->max_records) {
        json_decref(rec);
        snprintf(err, errlen, "more than %zu records", o->max_records);
        return -1;
    }
    json_array_append_new(out, rec);
    return 0;
}

static bool is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i]))
            return false;
    return true;
}

/* ---------- CSV: the column names ---------- */

struct csv_cols {
    char *name[CSV_MAX_COLUMNS];
    size_t n;
    bool line_items;   /* orders given one line item per row */
    bool has_total;
};

static void cols_free(struct csv_cols *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->name[i]);
    c->n = 0;
}

/* Adds a trimmed name; the caller checks names once all are in. */
static int cols_add(struct csv_cols *c, const char *s, size_t n, char *err, size_t errlen)
{
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (c->n == CSV_MAX_COLUMNS) {
        snprintf(err, errlen, "more than %d columns", CSV_MAX_COLUMNS);
        return -1;
    }
    char *name = strndup(s, n);
    if (name == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->name[c->n++] = name;
    return 0;
}

static int cols_from_param(struct csv_cols *c, const char *list, char *err, size_t errlen)
{
    for (const char *p = list;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (cols_add(c, p, n, err, errlen) < 0)
            return -1;
        if (comma == NULL)
            return 0;
        p = comma + 1;
    }
}

static int cols_from_row(struct csv_cols *c, const struct csv_reader *r, char *err, size_t errlen)
{
    for (size_t i = 0; i < r->ncells; i++) {
        size_t n;
        const char *s = csv_cell(r, i, &n);
        if (memchr(s, '\0', n)) {
            snprintf(err, errlen, "line %zu, column %zu: the header cell holds a NUL byte",
                     r->row_line, i + 1);
            return -1;
        }
        if (cols_add(c, s, n, err, errlen) < 0)
            return -1;
    }
    return 0;
}

/* "columns 1, 2, 3 and 4" for every column named like column i */
static void cols_list_same(const struct csv_cols *c, size_t i, char *out, size_t outlen)
{
    size_t used = 0, count = 0, total = 0;
    for (size_t j = i; j < c->n; j++)
        total += strcmp(c->name[j], c->name[i]) == 0;
    out[0] = '\0';
    for (size_t j = i; j < c->n && used < outlen; j++) {
        if (strcmp(c->name[j], c->name[i]) != 0)
            continue;
        count++;
        const char *sep = count == 1 ? "" : count == total ? " and " : ", ";
        int w = snprintf(out + used, outlen - used, "%s%zu", sep, j + 1);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/* Every name non-empty, valid UTF-8 and distinct. header_line: the names came from that line
 * of the file (the message then suggests columns=); 0: from the columns= parameter. */
static int cols_check(const struct csv_cols *c, size_t header_line, char *err, size_t errlen)
{
    char fix[160], at[48], col[48];
    if (header_line) {
        snprintf(at, sizeof(at), "line %zu: the header", header_line);
        snprintf(col, sizeof(col), "line %zu: header column", header_line);
        snprintf(fix, sizeof(fix),
                 "correct the header, or pass columns= with %zu comma-separated names, one per "
                 "column (the header row is then skipped)",
                 c->n);
    } else {
        snprintf(at, sizeof(at), "columns=");
        snprintf(col, sizeof(col), "columns= column");
        snprintf(fix, sizeof(fix), "give each column its own name in columns=");
    }
    for (size_t i = 0; i < c->n; i++) {
        json_t *probe = json_string(c->name[i]);
        if (c->name[i][0] == '\0' || probe == NULL) {
            snprintf(err, errlen, "%s %zu %s; %s", col, i + 1,
                     probe ? "has no name" : "is not valid UTF-8", fix);
            json_decref(probe);
            return -1;
        }
        json_decref(probe);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->name[i], c->name[j]) != 0)
                continue;
            char where[160];
            cols_list_same(c, j, where, sizeof(where));
            snprintf(err, errlen, "%s names the column '%s' more than once (columns %s); %s", at,
                     c->name[i], where, fix);
            return -1;
        }
    }
    return 0;
}

static bool cols_has(const struct csv_cols *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->name[i], name) == 0)
            return true;
    return false;
}

/* ---------- CSV: orders given as line items ---------- */

/* Fields of the order itself; every other column of a line-item row belongs to the item. */
static bool is_order_field(const char *k)
{
    static const char *const f[] = {"order_id", "customer_id", "created_at", "total",
                                    "currency", "status",      "channel",    "region"};
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        if (strcmp(k, f[i]) == 0)
            return true;
    return false;
}

/* Adds a row's order-level fields to the order first seen with its order_id. A field the first
 * row left empty is filled from a later row; a later row with another non-empty value for a
 * field already set (another date or customer on one invoice) does not change it: the first
 * row wins, and the validator sees the order as the first row describes it. */
static void order_merge(json_t *order, json_t *part)
{
    const char *k;
    json_t *v;
    json_object_foreach(part, k, v) if (json_object_get(order, k) == NULL)
        json_object_set(order, k, v);
}

/* Splits row (stolen) into order fields and an item, and files the item under its order. */
static int line_item_place(json_t *out, json_t *by_id, json_t *row, const struct rec_in_opts *o,
                           char *err, size_t errlen)
{
    json_t *part = json_object(), *item = json_object(), *v;
    const char *k;
    json_object_foreach(row, k, v) json_object_set(is_order_field(k) ? part : item, k, v);
    json_decref(row);
    json_t *id = json_object_get(part, "order_id");
    json_t *order = id ? json_object_getn(by_id, json_string_value(id), json_string_length(id))
                       : NULL;
    if (order) {
        order_merge(order, part);
        json_decref(part);
    } else {
        order = part;
        json_object_set_new(order, "items", json_array());
        if (out_push(out, order, o, err, errlen) < 0) {
            json_decref(item);
            return -1;
        }
        /* a row without order_id stays an order of its own, for the validator to reject */
        if (id)
            json_object_setn(by_id, json_string_value(id), json_string_length(id), order);
    }
    json_array_append_new(json_object_get(order, "items"), item);
    return 0;
}

/* A plain decimal number in a string cell ("6", "-1", "2.55", "1e3"); no spaces, hex, inf. */
static bool cell_number(const json_t *v, double *ret)
{
    const char *s = json_string_value(v), *p = s;
    if (s == NULL)
        return false;
    p += *p == '+' || *p == '-';
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
    if (*p != '\0')
        return false;
    double d = strtod(s, NULL);
    if (!isfinite(d))
        return false;
    *ret = d;
    return true;
}

/* total = sum of quantity x unit_price, each line rounded to ten-thousandths (money's unit) and
 * summed exactly; left absent when a line lacks a numeric quantity or unit_price. */
static void order_total(json_t *order)
{
    json_t *items = json_object_get(order, "items"), *it;
    size_t i;
    int64_t sum = 0;
    json_array_foreach(items, i, it) {
        double q, p;
        if (!cell_number(json_object_get(it, "quantity"), &q) ||
            !cell_number(json_object_get(it, "unit_price"), &p))
            return;
        long double line = (long double)q * p * 10000.0L;
        if (fabsl(line) > 1e18L || llabs(sum) > INT64_MAX / 2)
            return;   /* beyond any real order; the validator reports the missing total */
        sum += llroundl(line);
    }
    if (json_array_size(items) > 0)
        json_object_set_new(order, "total", json_real((double)sum / 10000.0));
}

/* ---------- CSV: rows to records ---------- */

struct csv_run {
    struct csv_reader r;
    struct csv_cols cols;
    const struct rec_in_opts *o;
    json_t *out, *by_id;
};

static bool row_is_empty(const struct csv_reader *r)
{
    for (size_t i = 0; i < r->ncells; i++)
        if (r->clen[i] > 0)
            return false;
    return true;
}

/* The current row as a record: one string field per non-empty cell. */
static json_t *row_record(struct csv_run *c, char *err, size_t errlen)
{
    const struct csv_reader *r = &c->r;
    if (r->ncells > c->cols.n) {
        snprintf(err, errlen, "line %zu has %zu cells but there are %zu columns (%s)",
                 r->row_line, r->ncells, c->cols.n,
                 c->o->columns ? "named in columns=" : "named in the header");
        return NULL;
    }
    json_t *rec = json_object();
    for (size_t i = 0; i < r->ncells; i++) {
        size_t n;
        const char *s = csv_cell(r, i, &n);
        if (n == 0)
            continue;   /* an empty cell is an absent field */
        json_t *v = json_stringn(s, n);
        if (v == NULL) {
            snprintf(err, errlen,
                     "line %zu, column %zu (%s): the cell is not valid UTF-8; save the file as "
                     "UTF-8",
                     r->row_line, i + 1, c->cols.name[i]);
            json_decref(rec);
            return NULL;
        }
        json_object_set_new(rec, c->cols.name[i], v);
    }
    records__fix_dates(rec, c->o->date_format);
    return rec;
}

/* The column names: from columns= (skipping the header row unless no_header) or the header. */
static int csv_columns(struct csv_run *c, char *err, size_t errlen)
{
    const struct rec_in_opts *o = c->o;
    if (o->no_header && (o->columns == NULL || *o->columns == '\0')) {
        snprintf(err, errlen, "no_header needs columns= naming the columns in order");
        return -1;
    }
    if (o->columns && *o->columns) {
        if (cols_from_param(&c->cols, o->columns, err, errlen) < 0 ||
            cols_check(&c->cols, 0, err, errlen) < 0)
            return -1;
        if (o->no_header)
            return 0;
    }
    int rc;
    while ((rc = csv_row_next(&c->r, err, errlen)) == 1 && row_is_empty(&c->r))
        ;   /* blank lines before the header */
    if (rc < 0)
        return -1;
    if (rc == 0 && c->cols.n == 0) {
        snprintf(err, errlen, "the body is empty: no header row");
        return -1;
    }
    if (c->cols.n > 0 || rc == 0)
        return 0;   /* columns= replaced the header row just read */
    if (cols_from_row(&c->cols, &c->r, err, errlen) < 0)
        return -1;
    return cols_check(&c->cols, c->r.row_line, err, errlen);
}

static json_t *csv_parse(const char *data, size_t n, const struct rec_in_opts *o, char *err,
                         size_t errlen)
{
    struct csv_run c = {.o = o, .out = json_array(), .by_id = json_object()};
    csv_reader_init(&c.r, data, n);
    int rc = csv_columns(&c, err, errlen);
    const char *dt = o->data_type ? o->data_type : "";
    c.cols.line_items = strcmp(dt, "orders") == 0 &&
                        (cols_has(&c.cols, "product_id") || cols_has(&c.cols, "quantity") ||
                         cols_has(&c.cols, "unit_price"));
    c.cols.has_total = cols_has(&c.cols, "total");
    while (rc == 0 && (rc = csv_row_next(&c.r, err, errlen)) == 1) {
        if (row_is_empty(&c.r)) {   /* blank lines, and ",,,," rows spreadsheets leave */
            rc = 0;
            continue;
        }
        json_t *rec = row_record(&c, err, errlen);
        if (rec == NULL)
            rc = -1;
        else if (c.cols.line_items)
            rc = line_item_place(c.out, c.by_id, rec, o, err, errlen);
        else
            rc = out_push(c.out, rec, o, err, errlen);
    }
    if (rc == 0 && c.cols.line_items && !c.cols.has_total) {
        size_t i;
        json_t *order;
        json_array_foreach(c.out, i, order) order_total(order);
    }
    csv_reader_free(&c.r);
    cols_free(&c.cols);
    json_decref(c.by_id);
    if (rc < 0) {
        json_decref(c.out);
        return NULL;
    }
    return c.out;
}

/* ---------- NDJSON: one JSON object per line ---------- */

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    default: return "an object";
    }
}

static json_t *ndjson_line(const char *s, size_t len, size_t line, char *err, size_t errlen)
{
    if (json_too_deep(s, len, JSON_MAX_DEPTH)) {
        snprintf(err, errlen, "line %zu: JSON nested deeper than %d levels", line, JSON_MAX_DEPTH);
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(s, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (v == NULL) {
        snprintf(err, errlen, "line %zu, column %d: not valid JSON: %s", line, je.column,
                 je.text);
        return NULL;
    }
    if (!json_is_object(v)) {
        snprintf(err, errlen, "line %zu: %s, but each line must be one JSON object", line,
                 json_kind(v));
        json_decref(v);
        return NULL;
    }
    return v;
}

static json_t *ndjson_parse(const char *data, size_t n, const struct rec_in_opts *o, char *err,
                            size_t errlen)
{
    json_t *out = json_array();
    const char *p = data, *end = data + n;
    if (n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    for (size_t line = 1; p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        size_t len = (size_t)(e - p);
        if (len && p[len - 1] == '\r')
            len--;
        if (!is_blank(p, len)) {
            json_t *rec = ndjson_line(p, len, line, err, errlen);
            if (rec)
                records__fix_dates(rec, o->date_format);
            if (rec == NULL || out_push(out, rec, o, err, errlen) < 0) {
                json_decref(out);
                return NULL;
            }
        }
        p = nl ? nl + 1 : end;
    }
    return out;
}

json_t *records_parse(enum rec_format f, const char *data, size_t n, const struct rec_in_opts *o,
                      char *err, size_t errlen)
{
    static const struct rec_in_opts defaults = {0};
    if (o == NULL)
        o = &defaults;
    if (errlen)
        err[0] = '\0';
    switch (f) {
    case REC_CSV: return csv_parse(data, n, o, err, errlen);
    case REC_NDJSON: return ndjson_parse(data, n, o, err, errlen);
    case REC_XML: return records__xml_parse(data, n, o, err, errlen);
    }
    snprintf(err, errlen, "unknown record format");
    return NULL;
}
