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

int64_t tzif_offset_ms(const struct tzif *z, int64_t t_ms)
{
    long i = trans_at(z, floor_div(t_ms, 1000));
    return (int64_t)(i < 0 ? z->initial_off : z->off[i]) * 1000;
}

int64_t tzif_utc_of_local_ms(const struct tzif *z, int64_t local_ms)
{
    /* Segments [at[i], at[i+1]) each have one offset; the answer is at or after
     * local - MAX_UTOFF, so walk forward from the segment holding that instant to the first
     * one whose local end passes local_ms; within it the answer is max(start, local - off). */
    int64_t lo_s = floor_div(local_ms, 1000) - MAX_UTOFF;
    for (long i = trans_at(z, lo_s);; i++) {
        int64_t off = (int64_t)(i < 0 ? z->initial_off : z->off[i]) * 1000;
        int64_t start = i < 0 ? INT64_MIN : z->at[i] * 1000;
        bool last = (size_t)(i + 1) >= z->ntrans;
        int64_t cand = local_ms - off;
        if (cand < start)
            cand = start;
        if (last || cand < z->at[i + 1] * 1000)
            return cand;
    }
}
