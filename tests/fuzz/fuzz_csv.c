/* libFuzzer target for the CSV and NDJSON record readers: the first byte picks the format and
 * options (line-item orders, date_format, columns=, no_header), the rest is the body. A parse
 * either fails with a message or yields an array of objects that obeys the readers' rules. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engines/records_in.h"

#define F_NDJSON 1
#define F_ORDERS 2
#define F_DATES 4
#define F_COLUMNS 8
#define F_NO_HEADER 16
#define MAX_RECORDS 64

/* A CSV cell is a non-empty string; only line-item orders hold items arrays and totals. */
static int csv_value_ok(const char *key, json_t *v, int orders)
{
    if (json_is_string(v))
        return json_string_length(v) > 0 && json_string_length(v) <= REC_MAX_CELL;
    if (!orders)
        return 0;
    if (strcmp(key, "total") == 0)
        return json_is_real(v);
    if (strcmp(key, "items") != 0 || !json_is_array(v) || json_array_size(v) == 0)
        return 0;
    size_t i;
    json_t *it, *x;
    const char *k;
    json_array_foreach(v, i, it) {
        if (!json_is_object(it))
            return 0;
        json_object_foreach(it, k, x) if (!json_is_string(x) || json_string_length(x) == 0)
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned f = data[0];
    struct rec_in_opts o = {
        .data_type = f & F_ORDERS ? "orders" : "events",
        .columns = f & F_COLUMNS ? "order_id,product_id,quantity,unit_price,created_at" : NULL,
        .no_header = (f & F_NO_HEADER) != 0,
        .date_format = f & F_DATES ? "%m-%d-%Y %H:%M" : NULL,
        .max_records = MAX_RECORDS,
    };
    /* the body in its own allocation, so ASan sees a read past its end */
    size_t n = size - 1;
    char *body = malloc(n ? n : 1);
    memcpy(body, data + 1, n);
    char err[256];
    memset(err, 'x', sizeof(err));
    json_t *v = records_parse(f & F_NDJSON ? REC_NDJSON : REC_CSV, body, n, &o, err, sizeof(err));
    free(body);
    if (v == NULL) {
        if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0')
            abort();   /* every failure says why */
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) > MAX_RECORDS)
        abort();
    size_t i;
    json_t *rec, *x;
    const char *k;
    json_array_foreach(v, i, rec) {
        if (!json_is_object(rec))
            abort();
        if (!(f & F_NDJSON))
            json_object_foreach(rec, k, x) if (!csv_value_ok(k, x, f & F_ORDERS))
                abort();
    }
    json_decref(v);
    return 0;
}
