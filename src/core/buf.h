/* Growable byte buffer with a hard maximum fixed at creation. */
#ifndef TS_BUF_H
#define TS_BUF_H
#include <stddef.h>

struct buf {
    char *data;
    size_t len, cap, max;
};

void buf_init(struct buf *b, size_t max);
void buf_release(struct buf *b);                 /* frees storage, keeps max */
int buf_reserve(struct buf *b, size_t extra);    /* -E2BIG past max */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_putc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_consume(struct buf *b, size_t n);        /* drop n bytes from the front */
char *buf_cstr(struct buf *b);                    /* NUL-terminated view (may grow by 1) */
#endif
