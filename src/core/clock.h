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
/* Parses ISO 8601: YYYY-MM-DD, optionally [T ]HH:MM[:SS[.fff]] and Z or +HH[:MM] (no zone =
 * UTC). 0 and *ret_ms, or -1 on anything else (out-of-range fields included). */
int clock_parse_iso8601(const char *s, int64_t *ret_ms);
/* Days since 1970-01-01 of a proleptic Gregorian y-m-d. */
int64_t clock_days_from_civil(int64_t y, int m, int d);
#endif
