/* IANA time zones from TZif files (RFC 8536): UTC offset at an instant, and the instant of a
 * local wall-clock time. No TZ, setenv or localtime: a loaded zone is plain data, safe to read
 * from any thread. */
#ifndef TS_TZIF_H
#define TS_TZIF_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TZIF_DIR "/usr/share/zoneinfo"
#define TZIF_NAME_MAX 64
#define TZIF_FILE_MAX (512 * 1024)
#define TZIF_MAX_TRANS 1200          /* the largest Debian file (Asia/Hebron) has 310 */
#define TZIF_MAX_TYPES 256

/* A POSIX TZ footer rule "Mm.w.d[/time]": day d (0 Sunday) of week w (1..5, 5 the last) of
 * month m, at time seconds of local time then in force (-167 h .. 167 h). */
struct tzif_rule {
    int m, w, d;
    int32_t time;
};

/* One zone: transition instants (unix seconds, ascending) with the UTC offset (seconds) in
 * force from each, and the offset before the first. Only the version 2+ 64-bit section is
 * read. After the last transition (Debian's files list them through 2037) the footer's
 * daylight-saving rule applies when it has the common "std off dst [off],Mm.w.d[/t],Mm.w.d[/t]"
 * form; any other footer leaves the last transition's offset in force. */
struct tzif {
    char name[TZIF_NAME_MAX + 1];
    size_t ntrans;
    int64_t at[TZIF_MAX_TRANS];
    int32_t off[TZIF_MAX_TRANS];     /* offset from at[i] on */
    int32_t initial_off;             /* before at[0] (time type 0) */
    bool has_rule;                   /* the footer's rule applies after the last transition */
    int32_t std_off, dst_off;
    struct tzif_rule dst_start, dst_end;
};

/* True for a zone name made of [A-Za-z0-9_+-] segments separated by '/', at most 64 chars. */
bool tzif_name_valid(const char *name);
/* Parse a TZif image; -1 when it is not a well-formed version 2+ file within the limits. */
int tzif_parse(const uint8_t *data, size_t len, struct tzif *z);
/* Load TZIF_DIR/<name>; -1 on a bad name, a missing or unreadable file, or a bad image. */
int tzif_load(const char *name, struct tzif *z);
/* UTC offset (ms) in force at unix ms t. */
int64_t tzif_offset_ms(const struct tzif *z, int64_t t_ms);
/* The first instant (unix ms) whose local time (t + offset) is >= local_ms: the usual
 * local-to-UTC mapping; in a fall-back overlap the earlier instant, in a spring-forward gap
 * the transition itself. Nondecreasing in local_ms. */
int64_t tzif_utc_of_local_ms(const struct tzif *z, int64_t local_ms);
#endif
