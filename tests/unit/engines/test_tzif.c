/* Unit tests for the TZif reader and zone-aware business hours: hand-known 2024 transitions,
 * offsets compared with glibc's own tz code (TZ + localtime_r, fine in this single-threaded
 * test), and bizhours_add/between across DST weeks against a minute-by-minute brute force
 * that asks localtime_r for each minute's wall-clock time. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../check.h"
#include "engines/bizhours.h"
#include "engines/tzif.h"

#define MIN_MS 60000LL
#define HOUR_MS 3600000LL

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

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static struct tzif berlin, ny;

static void test_names(void)
{
    CHECK(tzif_name_valid("Europe/Berlin"));
    CHECK(tzif_name_valid("America/Argentina/Buenos_Aires"));
    CHECK(tzif_name_valid("Etc/GMT+5"));
    CHECK(tzif_name_valid("UTC"));
    CHECK(!tzif_name_valid(""));
    CHECK(!tzif_name_valid(NULL));
    CHECK(!tzif_name_valid("/etc/passwd"));
    CHECK(!tzif_name_valid("Europe/../../etc/passwd"));
    CHECK(!tzif_name_valid("Europe//Berlin"));
    CHECK(!tzif_name_valid("Europe/Berlin/"));
    CHECK(!tzif_name_valid("Europe/Ber lin"));
    CHECK(!tzif_name_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 65 */
    struct tzif z;
    CHECK_INT(tzif_load("Europe/Nowhere", &z), -1);
    CHECK_INT(tzif_load("Europe", &z), -1);          /* a directory */
    CHECK_INT(tzif_load("../zoneinfo/UTC", &z), -1);
    CHECK_INT(tzif_load("UTC", &z), 0);
    CHECK_INT(tzif_offset_ms(&z, utc(2024, 7, 1, 0, 0)), 0);
}

static void test_parse_bounds(void)
{
    FILE *f = fopen(TZIF_DIR "/Europe/Berlin", "rb");
    CHECK(f != NULL);
    if (!f)
        return;
    static uint8_t buf[8192];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    static struct tzif z;
    CHECK_INT(tzif_parse(buf, n, &z), 0);
    for (size_t cut = 0; cut < n; cut += 37) /* every truncation inside the data is rejected */
        if (cut < n - 40)
            CHECK_INT(tzif_parse(buf, cut, &z), -1);
    uint8_t save = buf[0];
    buf[0] = 'X';
    CHECK_INT(tzif_parse(buf, n, &z), -1);
    buf[0] = save;
    save = buf[4];
    buf[4] = 0; /* version 1 only */
    CHECK_INT(tzif_parse(buf, n, &z), -1);
    buf[4] = save;
    CHECK_INT(tzif_parse(buf, TZIF_FILE_MAX + 1, &z), -1);
}

static void test_hand_known(void)
{
    /* Berlin: CET +60 until 2024-03-31T01:00Z, CEST +120 until 2024-10-27T01:00Z */
    int64_t t = utc(2024, 3, 31, 1, 0);
    CHECK_INT(tzif_offset_ms(&berlin, t - 1), 60 * MIN_MS);
    CHECK_INT(tzif_offset_ms(&berlin, t), 120 * MIN_MS);
    CHECK_INT(tzif_offset_ms(&berlin, utc(2024, 10, 27, 1, 0) - 1), 120 * MIN_MS);
    CHECK_INT(tzif_offset_ms(&berlin, utc(2024, 10, 27, 1, 0)), 60 * MIN_MS);
    /* New York: EST -300 until 2024-03-10T07:00Z, EDT -240 until 2024-11-03T06:00Z */
    t = utc(2024, 3, 10, 7, 0);
    CHECK_INT(tzif_offset_ms(&ny, t - 1), -300 * MIN_MS);
    CHECK_INT(tzif_offset_ms(&ny, t), -240 * MIN_MS);
    CHECK_INT(tzif_offset_ms(&ny, utc(2024, 11, 3, 6, 0) - 1), -240 * MIN_MS);
    CHECK_INT(tzif_offset_ms(&ny, utc(2024, 11, 3, 6, 0)), -300 * MIN_MS);
    /* local to UTC: ordinary, gap (02:30 does not exist in Berlin on 03-31), overlap */
    CHECK_INT(tzif_utc_of_local_ms(&berlin, utc(2024, 3, 31, 9, 0)), utc(2024, 3, 31, 7, 0));
    CHECK_INT(tzif_utc_of_local_ms(&berlin, utc(2024, 3, 30, 9, 0)), utc(2024, 3, 30, 8, 0));
    CHECK_INT(tzif_utc_of_local_ms(&berlin, utc(2024, 3, 31, 2, 30)), utc(2024, 3, 31, 1, 0));
    CHECK_INT(tzif_utc_of_local_ms(&berlin, utc(2024, 10, 27, 2, 30)), utc(2024, 10, 27, 0, 30));
    CHECK_INT(tzif_utc_of_local_ms(&ny, utc(2024, 11, 3, 1, 30)), utc(2024, 11, 3, 5, 30));
}

/* Offsets at random instants 1970..2100 (after 2037 from the footer rule) agree with
 * glibc's reading of the same zones. */
static void test_vs_glibc(const char *name, int cases)
{
    static struct tzif z;
    CHECK_INT(tzif_load(name, &z), 0);
    setenv("TZ", name, 1);
    tzset();
    int bad = 0;
    for (int i = 0; i < cases; i++) {
        time_t t = (time_t)(next_rand() % (uint64_t)4102444800);
        struct tm tm;
        localtime_r(&t, &tm);
        if (tzif_offset_ms(&z, (int64_t)t * 1000) != (int64_t)tm.tm_gmtoff * 1000) {
            fprintf(stderr, "%s at %lld: %lld, glibc %ld\n", name, (long long)t,
                    (long long)tzif_offset_ms(&z, (int64_t)t * 1000), (long)tm.tm_gmtoff);
            bad++;
        }
    }
    CHECK_INT(bad, 0);
}

/* ---------- business hours across DST, against the wall clock of each minute ---------- */

static int brute_working(const struct bizcal *c, int64_t t)
{
    time_t s = (time_t)(t / 1000);
    struct tm tm;
    localtime_r(&s, &tm);   /* TZ is the calendar's zone */
    if (!(c->days_mask & (1u << tm.tm_wday)))
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

static void dst_week(const struct tzif *z, unsigned mask, int start_min, int end_min, int64_t base,
                     int cases)
{
    struct bizcal c;
    bizcal_24x7(&c);
    c.zone = z;
    c.days_mask = mask;
    c.start_min = start_min;
    c.end_min = end_min;
    CHECK(bizcal_valid(&c));
    setenv("TZ", z->name, 1);
    tzset();
    int bad = 0;
    for (int i = 0; i < cases; i++) {
        int64_t start = base + (int64_t)(next_rand() % (9 * 1440)) * MIN_MS;
        int64_t dur = (int64_t)(next_rand() % (30 * 60 + 1)) * MIN_MS;
        int64_t got = bizhours_add(&c, start, dur), want = brute_add(&c, start, dur);
        int64_t end = start + (int64_t)(next_rand() % (6 * 1440)) * MIN_MS;
        int64_t b = bizhours_between(&c, start, end), bw = brute_between(&c, start, end);
        if (got != want || b != bw) {
            fprintf(stderr, "%s %d-%d: add(%lld,%lld)=%lld brute %lld; between(..%lld)=%lld brute %lld\n",
                    z->name, start_min, end_min, (long long)start, (long long)dur, (long long)got,
                    (long long)want, (long long)end, (long long)b, (long long)bw);
            bad++;
        }
        CHECK_INT(bizhours_between(&c, start, got), dur);
    }
    CHECK_INT(bad, 0);
}

static void test_transition_days(void)
{
    struct bizcal c;
    bizcal_24x7(&c);
    c.zone = &berlin;
    c.days_mask = 0x7f;
    c.start_min = 9 * 60;
    c.end_min = 17 * 60;
    /* 2024-03-31 (clocks forward): 09:00 CEST = 07:00Z .. 17:00 CEST = 15:00Z, 8 hours */
    CHECK_INT(bizhours_between(&c, utc(2024, 3, 31, 0, 0), utc(2024, 4, 1, 0, 0)), 8 * HOUR_MS);
    CHECK_INT(bizhours_add(&c, utc(2024, 3, 31, 7, 0), 8 * HOUR_MS), utc(2024, 3, 31, 15, 0));
    /* Friday 2024-03-29 16:00 CET + 4h: 1h Friday, Sat 09:00 CET + 3h = 11:00Z */
    CHECK_INT(bizhours_add(&c, utc(2024, 3, 29, 15, 0), 4 * HOUR_MS), utc(2024, 3, 30, 11, 0));
    /* Mon-Fri: Friday 16:00 CET + 4h lands Monday 12:00 CEST = 10:00Z */
    c.days_mask = 0x3e;
    CHECK_INT(bizhours_add(&c, utc(2024, 3, 29, 15, 0), 4 * HOUR_MS), utc(2024, 4, 1, 10, 0));
    /* a window holding the change: 00:00-24:00 is 23 h on 03-31 and 25 h on 10-27 */
    c.days_mask = 0x7f;
    c.start_min = 0;
    c.end_min = 1440;
    c.nholidays = 0;
    c.days_mask = 0x01; /* Sundays only, so not 24x7 */
    CHECK_INT(bizhours_between(&c, utc(2024, 3, 30, 0, 0), utc(2024, 4, 1, 0, 0)), 23 * HOUR_MS);
    CHECK_INT(bizhours_between(&c, utc(2024, 10, 26, 0, 0), utc(2024, 10, 29, 0, 0)), 25 * HOUR_MS);
}

int main(void)
{
    test_names();
    CHECK_INT(tzif_load("Europe/Berlin", &berlin), 0);
    CHECK_INT(tzif_load("America/New_York", &ny), 0);
    test_parse_bounds();
    test_hand_known();
    test_transition_days();
    const char *zones[] = {"Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                           "Asia/Kolkata", "America/Sao_Paulo", "Pacific/Chatham", "Asia/Hebron"};
    for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++)
        test_vs_glibc(zones[i], 3000);
    dst_week(&berlin, 0x3e, 9 * 60, 17 * 60, utc(2024, 3, 25, 0, 0), 120);
    dst_week(&berlin, 0x3e, 9 * 60, 17 * 60, utc(2024, 10, 21, 0, 0), 120);
    dst_week(&ny, 0x3e, 9 * 60, 17 * 60, utc(2024, 3, 5, 0, 0), 120);
    dst_week(&ny, 0x3e, 9 * 60, 17 * 60, utc(2024, 10, 29, 0, 0), 120);
    dst_week(&ny, 0x7f, 60, 180, utc(2024, 3, 5, 0, 0), 80);    /* windows holding the change */
    dst_week(&ny, 0x7f, 60, 180, utc(2024, 10, 29, 0, 0), 80);
    dst_week(&berlin, 0x41, 0, 1440, utc(2024, 3, 25, 0, 0), 80);
    dst_week(&berlin, 0x41, 0, 1440, utc(2024, 10, 21, 0, 0), 80);
    /* beyond the listed transitions, from the footer rules */
    CHECK(berlin.has_rule && ny.has_rule);
    CHECK_INT(tzif_offset_ms(&berlin, utc(2050, 3, 27, 1, 0) - 1), 60 * MIN_MS);
    CHECK_INT(tzif_offset_ms(&berlin, utc(2050, 3, 27, 1, 0)), 120 * MIN_MS);
    CHECK_INT(tzif_offset_ms(&ny, utc(2050, 11, 6, 6, 0) - 1), -240 * MIN_MS);
    CHECK_INT(tzif_offset_ms(&ny, utc(2050, 11, 6, 6, 0)), -300 * MIN_MS);
    dst_week(&berlin, 0x3e, 9 * 60, 17 * 60, utc(2050, 3, 21, 0, 0), 80);
    dst_week(&ny, 0x7f, 60, 180, utc(2050, 11, 1, 0, 0), 80);
    dst_week(&berlin, 0x41, 0, 1440, utc(2050, 10, 24, 0, 0), 60);
    CHECK_DONE();
}
