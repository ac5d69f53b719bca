/* TZif reader: bounds-checked parse of the 64-bit section, binary search over transitions. */
#include "engines/tzif.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HDR 44
#define MAX_UTOFF (26 * 3600)   /* RFC 8536 keeps offsets within -25:59:59 .. +25:59:59 */

bool tzif_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0, seg = 0;
    if (n == 0 || n > TZIF_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (ch == '/') {
            if (seg == 0)
                return false;
            seg = 0;
            continue;
        }
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '+' || ch == '-'))
            return false;
        seg++;
    }
    return seg > 0;   /* no trailing '/'; '.' is not allowed at all, so no ".." either */
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const uint8_t *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct counts {
    uint32_t isut, isstd, leap, time, type, chr;
};

static int header(const uint8_t *p, size_t len, struct counts *c)
{
    if (len < HDR || memcmp(p, "TZif", 4) != 0)
        return -1;
    c->isut = be32(p + 20);
    c->isstd = be32(p + 24);
    c->leap = be32(p + 28);
    c->time = be32(p + 32);
    c->type = be32(p + 36);
    c->chr = be32(p + 40);
    if (c->time > TZIF_MAX_TRANS || c->type == 0 || c->type > TZIF_MAX_TYPES || c->chr == 0 ||
        c->chr > 4096 || c->leap > 1000 || (c->isut && c->isut != c->type) ||
        (c->isstd && c->isstd != c->type))
        return -1;
    return 0;
}

/* ---------- the POSIX TZ footer ---------- */

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static bool is_alpha(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}

/* A zone abbreviation: 3+ letters, or <...> of letters, digits, '+' and '-'. */
static const char *tz_name(const char *p, const char *end)
{
    const char *q = p;
    if (q < end && *q == '<') {
        for (q++; q < end && *q != '>'; q++)
            if (!is_alpha(*q) && !is_digit(*q) && *q != '+' && *q != '-')
                return NULL;
        return q < end && q - p >= 4 ? q + 1 : NULL;
    }
    while (q < end && is_alpha(*q))
        q++;
    return q - p >= 3 ? q : NULL;
}

static const char *tz_num(const char *p, const char *end, int max, int *ret)
{
    int v = 0, n = 0;
    while (p < end && is_digit(*p) && n < 3) {
        v = v * 10 + (*p++ - '0');
        n++;
    }
    if (n == 0 || v > max)
        return NULL;
    *ret = v;
    return p;
}

/* [+-]hh[:mm[:ss]] in seconds, hours up to max_h. */
static const char *tz_time(const char *p, const char *end, int max_h, int32_t *ret)
{
    int sign = 1, h, m = 0, sec = 0;
    if (p < end && (*p == '+' || *p == '-'))
        sign = *p++ == '-' ? -1 : 1;
    if (!(p = tz_num(p, end, max_h, &h)))
        return NULL;
    if (p < end && *p == ':') {
        if (!(p = tz_num(p + 1, end, 59, &m)))
            return NULL;
        if (p < end && *p == ':' && !(p = tz_num(p + 1, end, 59, &sec)))
            return NULL;
    }
    *ret = sign * (h * 3600 + m * 60 + sec);
    return p;
}

static const char *tz_rule(const char *p, const char *end, struct tzif_rule *r)
{
    if (p >= end || *p != 'M' || !(p = tz_num(p + 1, end, 12, &r->m)) || r->m < 1 || p >= end ||
        *p != '.' || !(p = tz_num(p + 1, end, 5, &r->w)) || r->w < 1 || p >= end || *p != '.' ||
        !(p = tz_num(p + 1, end, 6, &r->d)))
        return NULL;
    r->time = 7200;
    if (p < end && *p == '/' && !(p = tz_time(p + 1, end, 167, &r->time)))
        return NULL;
    return p;
}

/* The footer's daylight-saving rule, when it has the supported form. */
static void footer_parse(const char *p, const char *end, struct tzif *z)
{
    int32_t std, dst;
    z->has_rule = false;
    if (!(p = tz_name(p, end)) || !(p = tz_time(p, end, 24, &std)) || p >= end)
        return;   /* no daylight saving: the last transition's offset stays */
    if (!(p = tz_name(p, end)))
        return;
    dst = std - 3600;
    if (p < end && *p != ',' && !(p = tz_time(p, end, 24, &dst)))
        return;
    if (p >= end || *p != ',' || !(p = tz_rule(p + 1, end, &z->dst_start)) || p >= end ||
        *p != ',' || !(p = tz_rule(p + 1, end, &z->dst_end)) || p != end)
        return;
    z->std_off = -std;     /* POSIX offsets are west-positive */
    z->dst_off = -dst;
    z->has_rule = true;
}

int tzif_parse(const uint8_t *data, size_t len, struct tzif *z)
{
    struct counts c;
    if (len > TZIF_FILE_MAX || header(data, len, &c) < 0 || data[4] < '2')
        return -1;
    /* skip the version 1 (32-bit) block */
    size_t v1 = (size_t)c.time * 5 + (size_t)c.type * 6 + c.chr + (size_t)c.leap * 8 + c.isstd + c.isut;
    if (HDR + v1 > len)
        return -1;
    const uint8_t *p = data + HDR + v1;
    size_t rest = len - HDR - v1;
    if (header(p, rest, &c) < 0 || c.leap != 0)   /* leap-second ("right/") zones: not UTC-based */
        return -1;
    size_t need = (size_t)c.time * 9 + (size_t)c.type * 6 + c.chr + c.isstd + c.isut;
    if (HDR + need > rest)
        return -1;
    const uint8_t *times = p + HDR, *idx = times + (size_t)c.time * 8, *types = idx + c.time;
    int32_t utoff[TZIF_MAX_TYPES];
    for (uint32_t i = 0; i < c.type; i++) {
        int32_t o = (int32_t)be32(types + (size_t)i * 6);
        if (o <= -MAX_UTOFF || o >= MAX_UTOFF || types[i * 6 + 5] >= c.chr)
            return -1;
        utoff[i] = o;
    }
    for (uint32_t i = 0; i < c.time; i++) {
        int64_t t = be64(times + (size_t)i * 8);
        if (idx[i] >= c.type || (i > 0 && t <= z->at[i - 1]) || t < -(INT64_C(1) << 52) ||
            t > (INT64_C(1) << 52))
            return -1;
        z->at[i] = t;
        z->off[i] = utoff[idx[i]];
    }
    z->ntrans = c.time;
    z->initial_off = utoff[0];
    z->has_rule = false;
    const char *f = (const char *)p + HDR + need, *fend = (const char *)data + len;
    if (f < fend && *f == '\n') {
        const char *nl = memchr(f + 1, '\n', (size_t)(fend - f - 1));
        if (nl && nl - f <= 256)
            footer_parse(f + 1, nl, z);
    }
    return 0;
}

int tzif_load(const char *name, struct tzif *z)
{
    if (!tzif_name_valid(name))
        return -1;
    char path[sizeof(TZIF_DIR) + TZIF_NAME_MAX + 2];
    snprintf(path, sizeof(path), "%s/%s", TZIF_DIR, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    uint8_t *buf = NULL;
    int r = -1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= HDR &&
        st.st_size <= TZIF_FILE_MAX && (buf = malloc((size_t)st.st_size))) {
        size_t got = 0, want = (size_t)st.st_size;
        while (got < want) {
            ssize_t k = read(fd, buf + got, want - got);
            if (k <= 0)
                break;
            got += (size_t)k;
        }
        if (got == want && tzif_parse(buf, want, z) == 0) {
            snprintf(z->name, sizeof(z->name), "%s", name);
            r = 0;
        }
    }
    free(buf);
    close(fd);
    return r;
}

/* Index of the last transition at or before t seconds; -1 before the first. */
static long trans_at(const struct tzif *z, int64_t t)
{
    size_t lo = 0, hi = z->ntrans;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->at[mid] <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (long)lo - 1;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

/* The UTC instant (s) a rule fires in year y, local time then at offset off. */
static int64_t rule_at(const struct tzif_rule *r, int64_t y, int32_t off)
{
    int64_t first = days_from_civil(y, r->m, 1);
    int64_t next = r->m == 12 ? days_from_civil(y + 1, 1, 1) : days_from_civil(y, r->m + 1, 1);
    int wd = (int)(((first + 4) % 7 + 7) % 7);
    int64_t day = first + (r->d - wd + 7) % 7 + (int64_t)(r->w - 1) * 7;
    while (day >= next)
        day -= 7;
    return day * 86400 + r->time - off;
}

/* The stretch [*ret_start, *ret_end) of one offset holding t seconds (INT64_MIN / INT64_MAX
 * for unbounded ends). */
static int32_t segment(const struct tzif *z, int64_t t, int64_t *ret_start, int64_t *ret_end)
{
    long i = trans_at(z, t);
    if ((size_t)(i + 1) < z->ntrans || !z->has_rule) {
        *ret_start = i < 0 ? INT64_MIN : z->at[i];
        *ret_end = (size_t)(i + 1) < z->ntrans ? z->at[i + 1] : INT64_MAX;
        return i < 0 ? z->initial_off : z->off[i];
    }
    /* after the last transition: the footer rule's changes of years y-1 .. y+1 */
    int64_t days = floor_div(t + z->std_off, 86400);
    int64_t y = 1970 + floor_div(days * 400, 146097);   /* the civil year holding `days` */
    while (days_from_civil(y, 1, 1) > days)
        y--;
    while (days_from_civil(y + 1, 1, 1) <= days)
        y++;
    int64_t ch[6];
    int32_t to[6];
    int n = 0;
    for (int64_t k = y - 1; k <= y + 1; k++) {
        int64_t s = rule_at(&z->dst_start, k, z->std_off), e = rule_at(&z->dst_end, k, z->dst_off);
        bool north = s < e;   /* daylight saving inside the calendar year */
        ch[n] = north ? s : e;
        to[n++] = north ? z->dst_off : z->std_off;
        ch[n] = north ? e : s;
        to[n++] = north ? z->std_off : z->dst_off;
    }
    int64_t start = i < 0 ? INT64_MIN : z->at[i];
    int32_t off = i < 0 ? z->initial_off : z->off[i];
    for (int k = 0; k < n; k++) {
        if (ch[k] <= start)
            continue;
        if (ch[k] > t) {
            *ret_start = start;
            *ret_end = ch[k];
            return off;
        }
        start = ch[k];
        off = to[k];
    }
    *ret_start = start;
    *ret_end = INT64_MAX;
    return off;
}

int64_t tzif_offset_ms(const struct tzif *z, int64_t t_ms)
{
    int64_t a, b;
    return (int64_t)segment(z, floor_div(t_ms, 1000), &a, &b) * 1000;
}

int64_t tzif_utc_of_local_ms(const struct tzif *z, int64_t local_ms)
{
    /* The answer is at or after local - MAX_UTOFF: walk the stretches of one offset forward
     * from there to the first whose local end passes local_ms; within it the answer is
     * max(start, local - off). */
    int64_t t = floor_div(local_ms, 1000) - MAX_UTOFF;
    for (;;) {
        int64_t a, b;
        int64_t off = (int64_t)segment(z, t, &a, &b) * 1000;
        int64_t cand = local_ms - off;
        if (a != INT64_MIN && cand < a * 1000)
            cand = a * 1000;
        if (b == INT64_MAX || cand < b * 1000)
            return cand;
        t = b;
    }
}
