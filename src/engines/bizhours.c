/* Business-hours arithmetic: walks local days, intersecting each working window with the span. */
#include "engines/bizhours.h"

#define SCAN_DAYS (366 * 30)     /* bound of the day walk: no working time in 30 years = never */

void bizcal_24x7(struct bizcal *c)
{
    c->utc_offset_min = 0;
    c->days_mask = 0x7f;
    c->start_min = 0;
    c->end_min = 1440;
    c->holidays = NULL;
    c->nholidays = 0;
    c->zone = NULL;
}

bool bizcal_valid(const struct bizcal *c)
{
    if (c->utc_offset_min < -840 || c->utc_offset_min > 840)
        return false;
    if ((c->days_mask & 0x7f) == 0 || (c->days_mask & ~0x7fu))
        return false;
    if (c->start_min < 0 || c->end_min > 1440 || c->start_min >= c->end_min)
        return false;
    if (c->nholidays > BIZ_MAX_HOLIDAYS || (c->nholidays && !c->holidays))
        return false;
    for (size_t i = 1; i < c->nholidays; i++)
        if (c->holidays[i] <= c->holidays[i - 1])
            return false;
    return true;
}

bool bizcal_is_24x7(const struct bizcal *c)
{
    return c->days_mask == 0x7f && c->start_min == 0 && c->end_min == 1440 && c->nholidays == 0;
}

/* Howard Hinnant's days_from_civil / civil_from_days */
int32_t biz_days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int era = (y >= 0 ? y : y - 399) / 400;
    int yoe = y - era * 400;
    int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void biz_civil_from_days(int32_t z, int *ret_y, int *ret_m, int *ret_d)
{
    z += 719468;
    int era = (z >= 0 ? z : z - 146096) / 146097;
    int doe = z - era * 146097;
    int yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int y = yoe + era * 400;
    int doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int mp = (5 * doy + 2) / 153;
    int d = doy - (153 * mp + 2) / 5 + 1;
    int m = mp + (mp < 10 ? 3 : -9);
    *ret_y = y + (m <= 2);
    *ret_m = m;
    *ret_d = d;
}

int biz_weekday(int32_t day)
{
    int w = (int)((day + 4) % 7);   /* 1970-01-01 was a Thursday */
    return w < 0 ? w + 7 : w;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static bool is_holiday(const struct bizcal *c, int32_t day)
{
    size_t lo = 0, hi = c->nholidays;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->holidays[mid] == day)
            return true;
        if (c->holidays[mid] < day)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* Offset (ms) in force at UTC instant t, and the UTC instant of a local wall-clock time. */
static int64_t off_at(const struct bizcal *c, int64_t t)
{
    return c->zone ? tzif_offset_ms(c->zone, t) : (int64_t)c->utc_offset_min * 60000;
}

static int64_t utc_of_local(const struct bizcal *c, int64_t local)
{
    return c->zone ? tzif_utc_of_local_ms(c->zone, local) : local - (int64_t)c->utc_offset_min * 60000;
}

/* The working window of a local day as UTC instants [a, b): false when the day does not
 * work. Windows of successive days are ordered and disjoint (utc_of_local is monotone). */
static bool day_window(const struct bizcal *c, int64_t day, int64_t *ret_a, int64_t *ret_b)
{
    if (!(c->days_mask & (1u << biz_weekday((int32_t)day))) || is_holiday(c, (int32_t)day))
        return false;
    *ret_a = utc_of_local(c, day * BIZ_DAY_MS + (int64_t)c->start_min * 60000);
    *ret_b = utc_of_local(c, day * BIZ_DAY_MS + (int64_t)c->end_min * 60000);
    return *ret_b > *ret_a;
}

/* The local day holding UTC instant t, less one: a walk from there misses no window that
 * could contain t (around a transition at midnight t may sit in the previous day's window). */
static int64_t first_day(const struct bizcal *c, int64_t t)
{
    return floor_div(t + off_at(c, t), BIZ_DAY_MS) - 1;
}

int64_t bizhours_add(const struct bizcal *c, int64_t start_ms, int64_t dur_ms)
{
    if (dur_ms <= 0)
        return start_ms;
    if (bizcal_is_24x7(c))
        return start_ms + dur_ms;
    int64_t cur = start_ms, left = dur_ms;
    int64_t day = first_day(c, start_ms);
    for (int i = 0; i < SCAN_DAYS; i++, day++) {
        int64_t a, b;
        if (!day_window(c, day, &a, &b) || cur >= b)
            continue;
        if (cur < a)
            cur = a;
        if (b - cur >= left)
            return cur + left;
        left -= b - cur;
        cur = b;
    }
    return BIZ_NEVER;
}

int64_t bizhours_between(const struct bizcal *c, int64_t a_ms, int64_t b_ms)
{
    if (b_ms <= a_ms)
        return 0;
    if (bizcal_is_24x7(c))
        return b_ms - a_ms;
    int64_t total = 0;
    int64_t last = floor_div(b_ms + off_at(c, b_ms), BIZ_DAY_MS) + 1;
    for (int64_t day = first_day(c, a_ms); day <= last; day++) {
        int64_t a, b;
        if (!day_window(c, day, &a, &b))
            continue;
        if (a < a_ms)
            a = a_ms;
        if (b > b_ms)
            b = b_ms;
        if (b > a)
            total += b - a;
    }
    return total;
}
