/* RFC 4180 CSV tokenizer over a buffer in memory: one row at a time, each row's cells copied
 * (unquoted, doubled quotes undone) into a bounded per-row buffer, never the whole body. */
#ifndef TS_CSV_H
#define TS_CSV_H
#include <stddef.h>

#define CSV_MAX_COLUMNS 256
#define CSV_MAX_CELL (64 * 1024)   /* bytes of one cell after unquoting */

struct csv_reader {
    const char *p, *end;
    size_t line;                   /* 1-based line of the byte at p */
    size_t row_line;               /* line where the current row started */
    char *buf;                     /* the current row's cells, each NUL-terminated */
    size_t len, cap;
    size_t ncells;
    size_t off[CSV_MAX_COLUMNS];   /* cell i is buf + off[i], clen[i] bytes */
    size_t clen[CSV_MAX_COLUMNS];
};

/* Starts reading data[0..n); a UTF-8 byte order mark at the start is skipped. */
void csv_reader_init(struct csv_reader *r, const char *data, size_t n);
void csv_reader_free(struct csv_reader *r);
/* Reads the next row: 1 with the row's cells in r, 0 at the end of the input, -1 with a message
 * in err (line and column, what is wrong) on a malformed or over-limit row. Rows end at LF, CRLF
 * or a lone CR outside quotes; a quoted cell may hold commas, quotes written "" and newlines. */
int csv_row_next(struct csv_reader *r, char *err, size_t errlen);
/* Cell i of the current row (NUL-terminated; *ret_len bytes, which may include NULs). */
const char *csv_cell(const struct csv_reader *r, size_t i, size_t *ret_len);

#endif
