/* RFC 4180 CSV tokenizer: bounded rows (256 cells of at most 64 KiB each) read from a buffer. */
#include "engines/csv.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void csv_reader_init(struct csv_reader *r, const char *data, size_t n)
{
    memset(r, 0, sizeof(*r));
    r->p = data;
    r->end = data + n;
    r->line = 1;
    if (n >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0)
        r->p += 3;
}

void csv_reader_free(struct csv_reader *r)
{
    free(r->buf);
    r->buf = NULL;
    r->len = r->cap = 0;
}

const char *csv_cell(const struct csv_reader *r, size_t i, size_t *ret_len)
{
    *ret_len = r->clen[i];
    return r->buf + r->off[i];
}

/* Room for n more bytes in the row buffer. The cell and column limits bound the row to
 * 256 * (64 KiB + 1) bytes, so this never grows past that. */
static int row_reserve(struct csv_reader *r, size_t n)
{
    if (r->len + n <= r->cap)
        return 0;
    size_t cap = r->cap ? r->cap : 1024;
    while (cap < r->len + n)
        cap *= 2;
    char *b = realloc(r->buf, cap);
    if (b == NULL)
        return -1;
    r->buf = b;
    r->cap = cap;
    return 0;
}

static int cell_append(struct csv_reader *r, const char *s, size_t n, char *err, size_t errlen)
{
    if (r->len - r->off[r->ncells] + n > CSV_MAX_CELL) {
        snprintf(err, errlen, "line %zu, column %zu: a cell is longer than %d bytes", r->row_line,
                 r->ncells + 1, CSV_MAX_CELL);
        return -1;
    }
    if (row_reserve(r, n + 1) < 0) {
        snprintf(err, errlen, "line %zu: out of memory", r->row_line);
        return -1;
    }
    memcpy(r->buf + r->len, s, n);
    r->len += n;
    return 0;
}

/* A quoted cell; r->p is past the opening quote. Copies runs between quotes at once. */
static int read_quoted(struct csv_reader *r, char *err, size_t errlen)
{
    size_t start_line = r->line;
    for (;;) {
        const char *q = memchr(r->p, '"', (size_t)(r->end - r->p));
        const char *stop = q ? q : r->end;
        for (const char *c = r->p; c < stop; c++)
            r->line += *c == '\n';
        if (cell_append(r, r->p, (size_t)(stop - r->p), err, errlen) < 0)
            return -1;
        if (q == NULL) {
            snprintf(err, errlen,
                     "line %zu, column %zu: the quoted cell that starts here has no closing "
                     "quote (\")",
                     start_line, r->ncells + 1);
            return -1;
        }
        r->p = q + 1;
        if (r->p < r->end && *r->p == '"') {   /* "" is one quote */
            if (cell_append(r, "\"", 1, err, errlen) < 0)
                return -1;
            r->p++;
            continue;
        }
        break;
    }
    if (r->p < r->end && *r->p != ',' && *r->p != '\n' && *r->p != '\r') {
        snprintf(err, errlen,
                 "line %zu, column %zu: text after the closing quote of a quoted cell; write a "
                 "quote inside a quoted cell as two quotes (\"\")",
                 r->line, r->ncells + 1);
        return -1;
    }
    return 0;
}

/* An unquoted cell runs to the next comma or line end. A quote inside it is kept as a plain
 * character: exports write 7" or 12" in product names without quoting them. */
static int read_plain(struct csv_reader *r, char *err, size_t errlen)
{
    const char *c = r->p;
    while (c < r->end && *c != ',' && *c != '\n' && *c != '\r')
        c++;
    int rc = cell_append(r, r->p, (size_t)(c - r->p), err, errlen);
    r->p = c;
    return rc;
}

int csv_row_next(struct csv_reader *r, char *err, size_t errlen)
{
    if (r->p >= r->end)
        return 0;
    r->ncells = 0;
    r->len = 0;
    r->row_line = r->line;
    for (;;) {
        if (r->ncells == CSV_MAX_COLUMNS) {
            snprintf(err, errlen, "line %zu: more than %d columns", r->row_line, CSV_MAX_COLUMNS);
            return -1;
        }
        r->off[r->ncells] = r->len;
        bool quoted = r->p < r->end && *r->p == '"';
        if (quoted)
            r->p++;
        if ((quoted ? read_quoted(r, err, errlen) : read_plain(r, err, errlen)) < 0)
            return -1;
        if (row_reserve(r, 1) < 0) {
            snprintf(err, errlen, "line %zu: out of memory", r->row_line);
            return -1;
        }
        r->clen[r->ncells] = r->len - r->off[r->ncells];
        r->buf[r->len++] = '\0';
        r->ncells++;
        if (r->p >= r->end)
            return 1;
        char c = *r->p++;
        if (c == ',')
            continue;
        if (c == '\r' && r->p < r->end && *r->p == '\n')
            r->p++;
        r->line++;
        return 1;
    }
}
