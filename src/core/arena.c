/* Per-request arena: bump allocation in chained blocks plus deferred cleanups. */
#include "core/arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct block {
    struct block *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

struct defer {
    struct defer *next;
    arena_defer_fn fn;
    void *arg;
};

struct arena {
    struct block *head;
    struct defer *defers;
    size_t block_size, total;
};

static struct block *block_new(size_t cap)
{
    struct block *b = malloc(sizeof(*b) + cap);
    if (b == NULL)
        abort();
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    return b;
}

struct arena *arena_new(size_t first_block)
{
    struct arena *a = calloc(1, sizeof(*a));
    if (a == NULL)
        abort();
    a->block_size = first_block < 256 ? 256 : first_block;
    a->head = block_new(a->block_size);
    return a;
}

struct arena *arena_free(struct arena *a)
{
    if (a == NULL)
        return NULL;
    for (struct defer *d = a->defers; d != NULL; d = d->next)
        d->fn(d->arg);
    struct block *b = a->head;
    while (b != NULL) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
    free(a);
    return NULL;
}

void *arena_alloc(struct arena *a, size_t n)
{
    size_t need = (n + 15) & ~(size_t)15;
    if (need < n)
        abort();
    struct block *b = a->head;
    if (b->cap - b->used < need) {
        size_t cap = a->block_size * 2;
        if (cap < need)
            cap = need;
        if (cap > 1 << 20 && need <= 1 << 20)
            cap = 1 << 20;
        a->block_size = cap;
        b = block_new(cap);
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->total += need;
    return p;
}

void *arena_calloc(struct arena *a, size_t n)
{
    void *p = arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (n > 0)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}

char *arena_printf(struct arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return arena_strdup(a, "");
    char *p = arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

int arena_defer(struct arena *a, arena_defer_fn fn, void *arg)
{
    struct defer *d = arena_alloc(a, sizeof(*d));
    d->fn = fn;
    d->arg = arg;
    d->next = a->defers;
    a->defers = d;
    return 0;
}

size_t arena_used(const struct arena *a)
{
    return a->total;
}
