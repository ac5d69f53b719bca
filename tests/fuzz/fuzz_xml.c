/* libFuzzer target for the XML record reader (expat): the first byte picks date_format and the
 * record limit, the rest is the body. A parse either fails with a message or yields an array
 * of objects no deeper than the depth limit, whose leaves are non-empty strings. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engines/records_in.h"

/* depth counts JSON containers below the record; elements nest at most 8 deep (root = 1,
 * record = 2), so a record holds containers at most 6 deep, and strings one deeper still: the
 * attributes of an element at the deepest level (<d8 a="1"/> is {"a": "1"} at depth 6) */
static int value_ok(json_t *v, int depth)
{
    if (depth > REC_XML_MAX_DEPTH - (json_is_string(v) ? 1 : 2))
        return 0;
    size_t i;
    json_t *x;
    const char *k;
    switch (json_typeof(v)) {
    case JSON_STRING: return json_string_length(v) > 0 && json_string_length(v) <= REC_MAX_CELL;
    case JSON_ARRAY:
        json_array_foreach(v, i, x) if (!value_ok(x, depth + 1)) return 0;
        return 1;
    case JSON_OBJECT:
        if (json_object_size(v) > REC_XML_MAX_FIELDS)
            return 0;
        json_object_foreach(v, k, x) if (!value_ok(x, depth + 1)) return 0;
        return 1;
    default: return 0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    struct rec_in_opts o = {
        .data_type = "orders",
        .date_format = data[0] & 1 ? "%Y-%m-%d" : NULL,
        .max_records = 1 + (data[0] >> 1),
    };
    size_t n = size - 1;
    char *body = malloc(n ? n : 1);
    memcpy(body, data + 1, n);
    char err[256];
    memset(err, 'x', sizeof(err));
    json_t *v = records_parse(REC_XML, body, n, &o, err, sizeof(err));
    free(body);
    if (v == NULL) {
        if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0')
            abort();
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) > o.max_records)
        abort();
    size_t i;
    json_t *rec;
    json_array_foreach(v, i, rec) if (!json_is_object(rec) || json_object_size(rec) >
                                                                  REC_XML_MAX_FIELDS ||
                                      !value_ok(rec, 0))
        abort();
    json_decref(v);
    return 0;
}
