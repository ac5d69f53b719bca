/* Per-request arena: bump allocation in chained blocks, freed all at once. */
#ifndef TS_ARENA_H
#define TS_ARENA_H
#include <stddef.h>

struct arena;
typedef void (*arena_defer_fn)(void *arg);

struct arena *arena_new(size_t first_block);
struct arena *arena_free(struct arena *a);      /* accepts NULL, returns NULL */
void *arena_alloc(struct arena *a, size_t n);   /* 16-byte aligned, never NULL (aborts on OOM) */
void *arena_calloc(struct arena *a, size_t n);
char *arena_strndup(struct arena *a, const char *s, size_t n);
char *arena_strdup(struct arena *a, const char *s);
char *arena_printf(struct arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int arena_defer(struct arena *a, arena_defer_fn fn, void *arg);
size_t arena_used(const struct arena *a);
#endif
