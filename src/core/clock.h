/* Wall and monotonic clocks, injectable for tests of anything with time in it. */
#ifndef TS_CLOCK_H
#define TS_CLOCK_H
#include <stddef.h>
#include <stdint.h>

typedef int64_t (*clock_source_fn)(void);

int64_t clock_now_ms(void);          /* unix ms (wall) */
uint64_t clock_mono_ns(void);        /* monotonic ns */
void clock_set_source(clock_source_fn fn); /* NULL restores the real clock */
/* Shifts the wall clock by offset ms for every thread (the server's test clock). */
void clock_set_offset_ms(int64_t offset);
/* Writes "YYYY-MM-DDTHH:MM:SSZ" (or with .mmm when with_ms) into out (>= 32 bytes). */
void clock_iso8601(int64_t unix_ms, int with_ms, char *out, size_t n);
#endif
