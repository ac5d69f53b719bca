/* Unit tests for the business-hours engine: hand-worked cases, and random spans on several
 * calendars compared with a brute-force minute-by-minute walk that uses gmtime_r/timegm. */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "../check.h"
#include "engines/bizhours.h"

#define MIN_MS 60000LL
#define HOUR_MS 3600000LL

/* unix ms of a UTC date and time */
static int64_t utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    return (int64_t)timegm(&tm) * 1000;
}

static int32_t day_of(int y, int mo, int d)
{
    return (int32_t)(utc(y, mo, d, 0, 0) / 86400000);
}

/* ---------- the brute force: is the minute starting at t working time? ---------- */

static int brute_working(const struct bizcal *c, int64_t t)
{
    time_t local = (time_t)((t + (int64_t)c->utc_offset_min * MIN_MS) / 1000);
    struct tm tm;
    gmtime_r(&local, &tm);
    if (!(c->days_mask & (1u << tm.tm_wday)))
        return 0;
    int32_t today = day_of(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    for (size_t i = 0; i < c->nholidays; i++)
        if (c->holidays[i] == today)
            return 0;
    int m = tm.tm_hour * 60 + tm.tm_min;
    return m >= c->start_min && m < c->end_min;
}

static int64_t brute_add(const struct bizcal *c, int64_t start, int64_t dur)
{
    int64_t t = start;
    for (int64_t left = dur; left > 0; t += MIN_MS)
        if (brute_working(c, t))
            left -= MIN_MS;
    return t;
}

static int64_t brute_between(const struct bizcal *c, int64_t a, int64_t b)
{
    int64_t n = 0;
    for (int64_t t = a; t < b; t += MIN_MS)
        n += brute_working(c, t) ? MIN_MS : 0;
    return n;
}

/* ---------- calendars ---------- */

static int32_t hol_a[3], hol_b[2];

static void cal_office(struct bizcal *c) /* Mon-Fri 09:00-17:00 UTC, two holidays */
{
    bizcal_24x7(c);
    c->days_mask = 0x3e;
    c->start_min = 9 * 60;
    c->end_min = 17 * 60;
    hol_a[0] = day_of(2024, 12, 25);
    hol_a[1] = day_of(2024, 12, 26);
    hol_a[2] = day_of(2025, 1, 1);
    c->holidays = hol_a;
    c->nholidays = 3;
}

static void cal_east(struct bizcal *c) /* Sun-Thu 08:00-16:30 at UTC+03:00 */
{
    bizcal_24x7(c);
    c->utc_offset_min = 180;
    c->days_mask = 0x1f;
    c->start_min = 8 * 60;
    c->end_min = 16 * 60 + 30;
    hol_b[0] = day_of(2024, 12, 29);
    hol_b[1] = day_of(2025, 1, 2);
    c->holidays = hol_b;
    c->nholidays = 2;
}

static void cal_late(struct bizcal *c) /* every day 22:00-24:00 at UTC-05:30 */
{
    bizcal_24x7(c);
    c->utc_offset_min = -330;
    c->start_min = 22 * 60;
    c->end_min = 1440;
}

static void cal_weekend(struct bizcal *c) /* Sat+Sun all day at UTC+14 */
{
    bizcal_24x7(c);
    c->utc_offset_min = 840;
    c->days_mask = 0x41;
}

/* ---------- tests ---------- */

static void test_dates(void)
{
    for (int32_t z = -1000; z < 80000; z += 37) {
        int y, m, d;
        biz_civil_from_days(z, &y, &m, &d);
        CHECK_INT(day_of(y, m, d), z);
        CHECK_INT(biz_days_from_civil(y, m, d), z);
        time_t t = (time_t)z * 86400;
        struct tm tm;
        gmtime_r(&t, &tm);
        CHECK_INT(biz_weekday(z), tm.tm_wday);
    }
    CHECK_INT(biz_days_from_civil(2024, 2, 29), day_of(2024, 2, 29));
}

static void test_hand_worked(void)
{
    struct bizcal c;
    bizcal_24x7(&c);
    CHECK(bizcal_valid(&c));
    int64_t t0 = utc(2024, 3, 1, 10, 17);
    CHECK_INT(bizhours_add(&c, t0, 5 * HOUR_MS + 123), t0 + 5 * HOUR_MS + 123);
    CHECK_INT(bizhours_between(&c, t0, t0 + 777), 777);

    cal_office(&c);
    CHECK(bizcal_valid(&c));
    /* Friday 2024-03-01 16:00 + 2h -> Monday 10:00 */
    CHECK_INT(bizhours_add(&c, utc(2024, 3, 1, 16, 0), 2 * HOUR_MS), utc(2024, 3, 4, 10, 0));
    /* Saturday night + 1h -> Monday 10:00 */
    CHECK_INT(bizhours_add(&c, utc(2024, 3, 2, 23, 0), HOUR_MS), utc(2024, 3, 4, 10, 0));
    /* exactly a full day lands on the day's end, not the next morning */
    CHECK_INT(bizhours_add(&c, utc(2024, 3, 4, 9, 0), 8 * HOUR_MS), utc(2024, 3, 4, 17, 0));
    /* Tuesday 2024-12-24 16:00 + 2h: 25th, 26th holidays -> Friday 27th 10:00 */
    CHECK_INT(bizhours_add(&c, utc(2024, 12, 24, 16, 0), 2 * HOUR_MS), utc(2024, 12, 27, 10, 0));
    /* 24 business hours from Monday 09:00 = Wednesday 17:00 */
    CHECK_INT(bizhours_add(&c, utc(2024, 3, 4, 9, 0), 24 * HOUR_MS), utc(2024, 3, 6, 17, 0));
    /* a week of wall time holds 40 business hours */
    CHECK_INT(bizhours_between(&c, utc(2024, 3, 4, 0, 0), utc(2024, 3, 11, 0, 0)), 40 * HOUR_MS);
    /* the weekend holds none */
    CHECK_INT(bizhours_between(&c, utc(2024, 3, 1, 17, 0), utc(2024, 3, 4, 9, 0)), 0);
    CHECK_INT(bizhours_between(&c, utc(2024, 3, 4, 12, 0), utc(2024, 3, 4, 11, 0)), 0);
    CHECK_INT(bizhours_add(&c, utc(2024, 3, 4, 12, 0), 0), utc(2024, 3, 4, 12, 0));

    cal_east(&c);
    /* Thursday 2024-03-07 16:00 local (13:00Z) + 1h -> Sunday 08:30 local (05:30Z) */
    CHECK_INT(bizhours_add(&c, utc(2024, 3, 7, 13, 0), HOUR_MS), utc(2024, 3, 10, 5, 30));

    /* invalid calendars */
    struct bizcal bad = c;
    bad.days_mask = 0;
    CHECK(!bizcal_valid(&bad));
    bad = c;
    bad.start_min = bad.end_min;
    CHECK(!bizcal_valid(&bad));
    bad = c;
    bad.utc_offset_min = 900;
    CHECK(!bizcal_valid(&bad));
    int32_t unsorted[2] = {20000, 19999};
    bad = c;
    bad.holidays = unsorted;
    bad.nholidays = 2;
    CHECK(!bizcal_valid(&bad));
}

static void test_never(void)
{
    /* only Mondays work, and every Monday for 31 years is a holiday */
    static int32_t mondays[1700];
    struct bizcal c;
    bizcal_24x7(&c);
    c.days_mask = 0x02;
    size_t n = 0;
    int32_t first = day_of(2024, 1, 1); /* a Monday */
    for (int32_t d = first; n < 1700; d += 7)
        mondays[n++] = d;
    c.holidays = mondays;
    c.nholidays = n;
    CHECK_INT(bizhours_add(&c, utc(2024, 1, 1, 0, 0), HOUR_MS), BIZ_NEVER);
    CHECK_INT(bizhours_between(&c, utc(2024, 1, 1, 0, 0), utc(2024, 3, 1, 0, 0)), 0);
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Random minute-aligned starts around the holidays, durations up to 60 business hours. */
static void test_random(void (*make)(struct bizcal *), const char *name, int cases)
{
    struct bizcal c;
    make(&c);
    CHECK(bizcal_valid(&c));
    int64_t base = utc(2024, 12, 20, 0, 0);
    int bad = 0;
    for (int i = 0; i < cases; i++) {
        int64_t start = base + (int64_t)(next_rand() % (20 * 1440)) * MIN_MS;
        int64_t dur = (int64_t)(next_rand() % (60 * 60 + 1)) * MIN_MS;
        int64_t got = bizhours_add(&c, start, dur), want = brute_add(&c, start, dur);
        if (got != want) {
            fprintf(stderr, "%s: add(%lld, %lld) = %lld, brute %lld\n", name, (long long)start,
                    (long long)dur, (long long)got, (long long)want);
            bad++;
        }
        int64_t end = start + (int64_t)(next_rand() % (10 * 1440)) * MIN_MS;
        int64_t b = bizhours_between(&c, start, end), bw = brute_between(&c, start, end);
        if (b != bw) {
            fprintf(stderr, "%s: between(%lld, %lld) = %lld, brute %lld\n", name,
                    (long long)start, (long long)end, (long long)b, (long long)bw);
            bad++;
        }
        /* between undoes add for any start */
        CHECK_INT(bizhours_between(&c, start, got), dur);
    }
    CHECK_INT(bad, 0);
}

/* The SLA pause: deadline = add(created, D); paused [p, q); resumed deadline =
 * add(deadline, between(p, q)). The working time from creation to the new deadline, not
 * counting the pause, is exactly D (brute force). */
static void test_pause_resume(void (*make)(struct bizcal *), int cases)
{
    struct bizcal c;
    make(&c);
    int64_t base = utc(2024, 12, 20, 0, 0);
    for (int i = 0; i < cases; i++) {
        int64_t created = base + (int64_t)(next_rand() % (10 * 1440)) * MIN_MS;
        int64_t d = (int64_t)(1 + next_rand() % (30 * 60)) * MIN_MS;
        int64_t deadline = bizhours_add(&c, created, d);
        int64_t p = created + (int64_t)(next_rand() % (uint64_t)((deadline - created) / MIN_MS + 1)) * MIN_MS;
        int64_t q = p + (int64_t)(next_rand() % (5 * 1440)) * MIN_MS;
        int64_t moved = bizhours_add(&c, deadline, bizhours_between(&c, p, q));
        int64_t counted = brute_between(&c, created, p) + brute_between(&c, q, moved);
        if (moved < q) /* the pause ran past the (moved) deadline only if no work remained */
            counted = brute_between(&c, created, p);
        CHECK_INT(counted, d);
        CHECK(moved >= deadline);
    }
}

int main(void)
{
    test_dates();
    test_hand_worked();
    test_never();
    test_random(bizcal_24x7, "24x7", 100);
    test_random(cal_office, "office", 150);
    test_random(cal_east, "east", 150);
    test_random(cal_late, "late", 150);
    test_random(cal_weekend, "weekend", 100);
    test_pause_resume(cal_office, 150);
    test_pause_resume(cal_east, 100);
    test_pause_resume(bizcal_24x7, 50);
    CHECK_DONE();
}
