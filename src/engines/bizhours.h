/* Business-hours arithmetic: adding and measuring working time on a tenant calendar. Pure. */
#ifndef TS_BIZHOURS_H
#define TS_BIZHOURS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engines/tzif.h"

#define BIZ_DAY_MS 86400000LL
#define BIZ_MAX_HOLIDAYS 400
#define BIZ_NEVER INT64_MAX      /* bizhours_add's answer when no working time exists */

/* A working calendar in an IANA zone (zone set: offsets and daylight-saving transitions from
 * its TZif data) or in one fixed UTC offset (zone NULL: utc_offset_min). Working time is
 * [start_min, end_min) of local wall-clock time on each working day that is not a holiday;
 * each local day's boundaries are mapped to UTC with the offset in force at that local time
 * (tzif_utc_of_local_ms), so a 09:00-17:00 day is 8 hours on either side of a DST change
 * and 7 or 9 only when the change falls inside the window. The default, bizcal_24x7, makes
 * every millisecond working time. */
struct bizcal {
    int utc_offset_min;          /* local = UTC + offset; -840 .. 840 */
    unsigned days_mask;          /* bit d set: weekday d works (0 Sunday .. 6 Saturday) */
    int start_min, end_min;      /* 0 <= start < end <= 1440 */
    const int32_t *holidays;     /* local day numbers (days since 1970-01-01), ascending */
    size_t nholidays;
    const struct tzif *zone;     /* NULL: the fixed utc_offset_min */
};

void bizcal_24x7(struct bizcal *c);
/* True when the calendar has its fields in range (mask non-empty, hours ordered, holidays sorted). */
bool bizcal_valid(const struct bizcal *c);
bool bizcal_is_24x7(const struct bizcal *c);
/* Days since 1970-01-01 for a proleptic Gregorian date; and back. */
int32_t biz_days_from_civil(int y, int m, int d);
void biz_civil_from_days(int32_t z, int *ret_y, int *ret_m, int *ret_d);
int biz_weekday(int32_t day);    /* 0 Sunday .. 6 Saturday */
/* The instant (unix ms) at which dur_ms of working time has elapsed from start_ms. With
 * dur_ms 0 the result is start_ms. BIZ_NEVER when the calendar has no working time within
 * the next ~30 years (a calendar whose working days are all holidays). */
int64_t bizhours_add(const struct bizcal *c, int64_t start_ms, int64_t dur_ms);
/* Working time (ms) in [a_ms, b_ms); 0 when b_ms <= a_ms. */
int64_t bizhours_between(const struct bizcal *c, int64_t a_ms, int64_t b_ms);
#endif
