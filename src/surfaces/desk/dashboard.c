/* desk dashboards: overview, ticket and SLA analytics, and the tickets report export (CSV
 * and XLSX files streamed from the spool directory); all computed on the worker pool.
 *
 * Definitions (also in README.md, "## desk"):
 * - period=Nd (1..365, default 30d) is the window [now - N days, now]; overview and SLA
 *   analytics count the tickets CREATED in it. A ticket "complies" when its ticket_sla row
 *   has neither response_breached_at nor resolution_breached_at (a ticket without a row has
 *   no breach); compliance is compliant / tickets * 100, rounded to 0.1, null with no tickets.
 * - analytics/tickets: start_date..end_date (inclusive UTC days; defaults: the 30 days
 *   ending today). created/resolved/closed count created_at/resolved_at/closed_at in each
 *   bucket. Trends split the range's days into halves of floor(n/2) days (the middle day of
 *   an odd range is in neither): *_change_pct = (second - first) / first * 100, rounded to
 *   0.1, null when the first half has none (or the range is one day);
 *   average_resolution_hours = mean(resolved_at - created_at) over tickets resolved in the
 *   range, rounded to 0.01, null when none.
 * - export: up to EXPORT_MAX_ROWS tickets created in the range are written and streamed at
 *   once; a bigger range (up to JOB_MAX_ROWS) answers 202 with a durable "desk.export" job
 *   whose file GET /api/v1/dashboard/reports/export/{job_id} serves once it completes; job
 *   files live in DATA/files/exports and are pruned after 24 hours. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdatomic.h>
#include <xlsxwriter.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "jobs/jobs.h"
#include "surfaces/kinds.h"
#include "surfaces/desk/desk.h"

#define DAY_MS 86400000LL
#define RANGE_MAX_DAYS 366
#define EXPORT_MAX_ROWS 50000      /* more: a desk.export job */
#define JOB_MAX_ROWS 1000000       /* more: refused (XLSX holds 1,048,576 rows) */
#define EXPORT_KEEP_MS (24 * 3600 * 1000LL) /* job files older than this are pruned */
#define RECENT_N 10
#define TOP_N 5
#define BREACHES_N 20

/* ---- queries (prepared per call on the pool's read-only connection) ---- */

static const char SQL_STATS[] =
    "SELECT count(*), coalesce(sum(status = 'open'), 0), coalesce(sum(status = 'in_progress'), 0),"
    " coalesce(sum(status = 'pending'), 0), coalesce(sum(status = 'waiting_on_customer'), 0),"
    " coalesce(sum(status = 'resolved'), 0), coalesce(sum(status = 'closed'), 0) "
    "FROM tickets WHERE tenant_id = ?1 AND created_at >= ?2";
/* compliant tickets among those created in the window, optionally grouped */
static const char SQL_COMPLY[] =
    "SELECT count(*), coalesce(sum(s.response_breached_at IS NULL AND"
    " s.resolution_breached_at IS NULL), 0) "
    "FROM tickets t LEFT JOIN ticket_sla s ON s.ticket_id = t.id AND s.tenant_id = t.tenant_id "
    "WHERE t.tenant_id = ?1 AND t.created_at >= ?2";
static const char SQL_COMPLY_BY_TYPE[] =
    "SELECT t.type, count(*), coalesce(sum(s.response_breached_at IS NULL AND"
    " s.resolution_breached_at IS NULL), 0) "
    "FROM tickets t LEFT JOIN ticket_sla s ON s.ticket_id = t.id AND s.tenant_id = t.tenant_id "
    "WHERE t.tenant_id = ?1 AND t.created_at >= ?2 GROUP BY t.type ORDER BY t.type";
static const char SQL_COMPLY_BY_PRIORITY[] =
    "SELECT t.priority, count(*), coalesce(sum(s.response_breached_at IS NULL AND"
    " s.resolution_breached_at IS NULL), 0) "
    "FROM tickets t LEFT JOIN ticket_sla s ON s.ticket_id = t.id AND s.tenant_id = t.tenant_id "
    "WHERE t.tenant_id = ?1 AND t.created_at >= ?2 GROUP BY t.priority ORDER BY t.priority";
static const char SQL_RECENT[] =
    "SELECT h.ticket_id, t.number, h.actor_id, h.field, h.old_value, h.new_value, h.created_at "
    "FROM ticket_history h JOIN tickets t ON t.id = h.ticket_id AND t.tenant_id = h.tenant_id "
    "WHERE h.tenant_id = ?1 AND h.created_at >= ?2 "
    "ORDER BY h.created_at DESC, h.rowid DESC LIMIT ?3";
static const char SQL_TOP[] =
    "SELECT t.assignee_id, u.name, sum(t.status IN ('resolved', 'closed')) AS done, count(*) "
    "FROM tickets t JOIN users u ON u.id = t.assignee_id AND u.tenant_id = t.tenant_id "
    "WHERE t.tenant_id = ?1 AND t.created_at >= ?2 AND t.assignee_id IS NOT NULL "
    "GROUP BY t.assignee_id ORDER BY done DESC, count(*) DESC, u.name, t.assignee_id LIMIT ?3";
static const char SQL_BREACHES[] =
    "SELECT * FROM ("
    " SELECT t.id, t.number, t.title, t.type, t.priority, 'response', s.response_deadline,"
    "  s.response_breached_at AS at FROM ticket_sla s JOIN tickets t ON t.id = s.ticket_id"
    " WHERE s.tenant_id = ?1 AND t.tenant_id = ?1 AND s.response_breached_at >= ?2"
    " UNION ALL"
    " SELECT t.id, t.number, t.title, t.type, t.priority, 'resolution', s.resolution_deadline,"
    "  s.resolution_breached_at AS at FROM ticket_sla s JOIN tickets t ON t.id = s.ticket_id"
    " WHERE s.tenant_id = ?1 AND t.tenant_id = ?1 AND s.resolution_breached_at >= ?2"
    ") ORDER BY at DESC, 2 DESC LIMIT ?3";
/* per UTC day (index from the range start) counts of one timestamp column */
static const char SQL_DAYS_CREATED[] =
    "SELECT (created_at - ?2) / 86400000, count(*) FROM tickets "
    "WHERE tenant_id = ?1 AND created_at >= ?2 AND created_at < ?3 GROUP BY 1";
static const char SQL_DAYS_RESOLVED[] =
    "SELECT (resolved_at - ?2) / 86400000, count(*) FROM tickets "
    "WHERE tenant_id = ?1 AND resolved_at >= ?2 AND resolved_at < ?3 GROUP BY 1";
static const char SQL_DAYS_CLOSED[] =
    "SELECT (closed_at - ?2) / 86400000, count(*) FROM tickets "
    "WHERE tenant_id = ?1 AND closed_at >= ?2 AND closed_at < ?3 GROUP BY 1";
static const char SQL_RESOLUTION_AVG[] =
    "SELECT count(*), avg(resolved_at - created_at) FROM tickets "
    "WHERE tenant_id = ?1 AND resolved_at >= ?2 AND resolved_at < ?3";
static const char SQL_EXPORT_COUNT[] =
    "SELECT count(*) FROM tickets WHERE tenant_id = ?1 AND created_at >= ?2 AND created_at < ?3";
static const char SQL_EXPORT[] =
    "SELECT t.number, t.title, t.type, t.priority, t.status, r.email, a.email, t.created_at,"
    " t.resolved_at, t.closed_at "
    "FROM tickets t LEFT JOIN users r ON r.id = t.requester_id AND r.tenant_id = t.tenant_id"
    " LEFT JOIN users a ON a.id = t.assignee_id AND a.tenant_id = t.tenant_id "
    "WHERE t.tenant_id = ?1 AND t.created_at >= ?2 AND t.created_at < ?3 "
    "ORDER BY t.created_at, t.number";

/* ---- dates ---- */

static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *ret_y, int *ret_m, int *ret_d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *ret_y = (int)(yoe + era * 400 + (m <= 2));
    *ret_m = m;
    *ret_d = d;
}

static void day_label(int64_t day, char out[11])
{
    int y, m, d;
    civil_from_days(day, &y, &m, &d);
    snprintf(out, 11, "%04d-%02d-%02d", y, m, d);
}

/* A YYYY-MM-DD query parameter as a day number (days since 1970-01-01); def when absent. */
static int query_date(struct hctx *h, const char *name, int64_t def, int64_t *ret)
{
    const char *v = http_query_get(h->req, name);
    if (v == NULL) {
        *ret = def;
        return 0;
    }
    int y, m, d;
    char tail;
    if (strlen(v) != 10 || v[4] != '-' || v[7] != '-' ||
        sscanf(v, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || y < 1970 || y > 9999 || m < 1 ||
        m > 12 || d < 1)
        return fail(h, TS_E_VALIDATION, name, "must be a date YYYY-MM-DD");
    int64_t day = days_from_civil(y, m, d);
    int y2, m2, d2;
    civil_from_days(day, &y2, &m2, &d2);
    if (y2 != y || m2 != m || d2 != d)
        return fail(h, TS_E_VALIDATION, name, "no such calendar day");
    *ret = day;
    return 0;
}

/* start_date..end_date, inclusive days: end >= start, at most RANGE_MAX_DAYS days. */
static int query_range(struct hctx *h, int64_t *ret_start, int64_t *ret_end)
{
    int64_t today = clock_now_ms() / DAY_MS, start, end;
    int r = query_date(h, "end_date", today, &end);
    if (r == 0)
        r = query_date(h, "start_date", end - 29, &start);
    if (r < 0)
        return r;
    if (end < start)
        return fail(h, TS_E_VALIDATION, "end_date", "end_date must not be before start_date");
    if (end - start + 1 > RANGE_MAX_DAYS)
        return fail(h, TS_E_VALIDATION, "end_date", "the range is at most 366 days");
    *ret_start = start;
    *ret_end = end;
    return 0;
}

/* period=Nd with N in 1..365 (default 30d): the window's start in unix ms. */
static int query_period(struct hctx *h, int64_t *ret_since)
{
    const char *v = http_query_get(h->req, "period");
    int n = 30;
    if (v != NULL) {
        char *end = NULL;
        errno = 0;
        long l = (v[0] >= '0' && v[0] <= '9') ? strtol(v, &end, 10) : 0;
        if (end == NULL || end == v || strcmp(end, "d") || errno || l < 1 || l > 365)
            return fail(h, TS_E_VALIDATION, "period", "period must be Nd with N from 1 to 365");
        n = (int)l;
    }
    *ret_since = clock_now_ms() - (int64_t)n * DAY_MS;
    return 0;
}

/* ---- shared pool plumbing ---- */

struct dash {
    int err;                   /* set by the pool work */
    const char *err_field, *err_message;
    int64_t since, start_day, end_day;
    const char *group_by;
    bool xlsx;
    int64_t rows;              /* tickets in the export's range */
    int fd;                    /* the export file, unlinked; -1 when none */
    int64_t size;
    char filename[64];
};

/* A statement on a pool reader with ?1 = the tenant, ?2 = a, ?3 = b; NULL on failure. */
static sqlite3_stmt *prep_on(sqlite3 *db, const char *tenant_id, const char *sql, int64_t a,
                             int64_t b)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        sqlite3_finalize(q);
        return NULL;
    }
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 2, a);
    sqlite3_bind_int64(q, 3, b);
    return q;
}

static sqlite3_stmt *prep(struct hctx *h, const char *sql, int64_t a, int64_t b)
{
    return prep_on(h->db, h->tenant_id, sql, a, b);
}

static double round_to(double v, double unit)
{
    return round(v / unit) * unit;
}

static void jw_kpct(struct jw *w, const char *k, int64_t part, int64_t whole)
{
    jw_key(w, k);
    if (whole <= 0)
        jw_null(w);
    else
        jw_double(w, round_to(100.0 * (double)part / (double)whole, 0.1));
}

/* ---- GET /api/v1/dashboard/overview ---- */

static int overview_stats(struct hctx *h, struct jw *w, int64_t since)
{
    sqlite3_stmt *q = prep(h, SQL_STATS, since, 0);
    if (q == NULL || sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_finalize(q);
        return TS_E_INTERNAL;
    }
    static const char *const keys[] = {"total", "open", "in_progress", "pending",
                                       "waiting_on_customer", "resolved", "closed"};
    jw_key(w, "ticket_stats");
    jw_obj_open(w);
    for (int i = 0; i < 7; i++)
        jw_kint(w, keys[i], sqlite3_column_int64(q, i));
    jw_obj_close(w);
    sqlite3_finalize(q);
    return 0;
}

static int compliance(struct hctx *h, struct jw *w, const char *key, int64_t since)
{
    sqlite3_stmt *q = prep(h, SQL_COMPLY, since, 0);
    if (q == NULL || sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_finalize(q);
        return TS_E_INTERNAL;
    }
    jw_kpct(w, key, sqlite3_column_int64(q, 1), sqlite3_column_int64(q, 0));
    sqlite3_finalize(q);
    return 0;
}

static int overview_recent(struct hctx *h, struct jw *w, int64_t since)
{
    sqlite3_stmt *q = prep(h, SQL_RECENT, since, RECENT_N);
    if (q == NULL)
        return TS_E_INTERNAL;
    jw_key(w, "recent_activity");
    jw_arr_open(w);
    while (sqlite3_step(q) == SQLITE_ROW) {
        char num[DESK_TICKET_NUMBER_LEN];
        desk_ticket_number(sqlite3_column_int64(q, 1), num);
        jw_obj_open(w);
        jw_kstr(w, "ticket_id", col_text(q, 0));
        jw_kstr(w, "ticket_number", num);
        jw_kstr(w, "actor_id", (const char *)sqlite3_column_text(q, 2));
        jw_kstr(w, "field", col_text(q, 3));
        jw_kstr(w, "old_value", (const char *)sqlite3_column_text(q, 4));
        jw_kstr(w, "new_value", (const char *)sqlite3_column_text(q, 5));
        jw_kiso(w, "created_at", sqlite3_column_int64(q, 6));
        jw_obj_close(w);
    }
    jw_arr_close(w);
    sqlite3_finalize(q);
    return 0;
}

static int overview_top(struct hctx *h, struct jw *w, int64_t since)
{
    sqlite3_stmt *q = prep(h, SQL_TOP, since, TOP_N);
    if (q == NULL)
        return TS_E_INTERNAL;
    jw_key(w, "top_assignees");
    jw_arr_open(w);
    while (sqlite3_step(q) == SQLITE_ROW) {
        jw_obj_open(w);
        jw_kstr(w, "assignee_id", col_text(q, 0));
        jw_kstr(w, "name", col_text(q, 1));
        jw_kint(w, "resolved", sqlite3_column_int64(q, 2));
        jw_kint(w, "assigned", sqlite3_column_int64(q, 3));
        jw_obj_close(w);
    }
    jw_arr_close(w);
    sqlite3_finalize(q);
    return 0;
}

static int overview(struct hctx *h)
{
    int64_t since;
    int r = query_period(h, &since);
    if (r < 0)
        return r;
    struct jw w;
    out_begin(h, &w);
    r = overview_stats(h, &w, since);
    if (r == 0)
        r = compliance(h, &w, "sla_compliance", since);
    if (r == 0)
        r = overview_recent(h, &w, since);
    if (r == 0)
        r = overview_top(h, &w, since);
    return r < 0 ? r : out_end(h, &w);
}

/* ---- GET /api/v1/dashboard/analytics/tickets ---- */

struct day_counts {
    int64_t created[RANGE_MAX_DAYS], resolved[RANGE_MAX_DAYS], closed[RANGE_MAX_DAYS];
};

static int day_fill(struct hctx *h, const char *sql, int64_t from, int64_t to, int64_t n,
                    int64_t *out)
{
    sqlite3_stmt *q = prep(h, sql, from, to);
    if (q == NULL)
        return TS_E_INTERNAL;
    while (sqlite3_step(q) == SQLITE_ROW) {
        int64_t i = sqlite3_column_int64(q, 0);
        if (i >= 0 && i < n)
            out[i] = sqlite3_column_int64(q, 1);
    }
    sqlite3_finalize(q);
    return 0;
}

/* The bucket key of a day: itself (day), its ISO week's Monday (week), its month's 1st. */
static int64_t bucket_of(int64_t day, const char *group_by)
{
    if (!strcmp(group_by, "week"))
        return day - ((day + 3) % 7 + 7) % 7; /* 1970-01-01 was a Thursday */
    if (!strcmp(group_by, "month")) {
        int y, m, d;
        civil_from_days(day, &y, &m, &d);
        return day - (d - 1);
    }
    return day;
}

static void series(struct jw *w, const struct day_counts *c, int64_t start, int64_t n,
                   const char *group_by)
{
    jw_key(w, "data");
    jw_arr_open(w);
    for (int64_t i = 0; i < n;) {
        int64_t key = bucket_of(start + i, group_by), cr = 0, rs = 0, cl = 0;
        for (; i < n && bucket_of(start + i, group_by) == key; i++) {
            cr += c->created[i];
            rs += c->resolved[i];
            cl += c->closed[i];
        }
        char label[11];
        day_label(key, label);
        if (!strcmp(group_by, "month"))
            label[7] = '\0';
        jw_obj_open(w);
        jw_kstr(w, "period", label);
        jw_kint(w, "created", cr);
        jw_kint(w, "resolved", rs);
        jw_kint(w, "closed", cl);
        jw_obj_close(w);
    }
    jw_arr_close(w);
}

static void change_pct(struct jw *w, const char *k, const int64_t *v, int64_t n)
{
    int64_t half = n / 2, first = 0, second = 0;
    for (int64_t i = 0; i < half; i++) {
        first += v[i];
        second += v[n - half + i];
    }
    jw_key(w, k);
    if (first == 0)
        jw_null(w);
    else
        jw_double(w, round_to(100.0 * (double)(second - first) / (double)first, 0.1));
}

static int ticket_analytics(struct hctx *h)
{
    int64_t start, end;
    const char *g = http_query_get(h->req, "group_by");
    int r = query_range(h, &start, &end);
    if (r < 0)
        return r;
    if (g == NULL)
        g = "day";
    if (strcmp(g, "day") && strcmp(g, "week") && strcmp(g, "month"))
        return fail(h, TS_E_VALIDATION, "group_by", "group_by must be day, week or month");
    int64_t n = end - start + 1, from = start * DAY_MS, to = (end + 1) * DAY_MS;
    struct day_counts *c = arena_alloc(h->arena, sizeof(*c));
    memset(c, 0, sizeof(*c));
    r = day_fill(h, SQL_DAYS_CREATED, from, to, n, c->created);
    if (r == 0)
        r = day_fill(h, SQL_DAYS_RESOLVED, from, to, n, c->resolved);
    if (r == 0)
        r = day_fill(h, SQL_DAYS_CLOSED, from, to, n, c->closed);
    sqlite3_stmt *q = r == 0 ? prep(h, SQL_RESOLUTION_AVG, from, to) : NULL;
    if (q == NULL || sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_finalize(q);
        return TS_E_INTERNAL;
    }
    struct jw w;
    out_begin(h, &w);
    series(&w, c, start, n, g);
    jw_key(&w, "trends");
    jw_obj_open(&w);
    change_pct(&w, "created_change_pct", c->created, n);
    change_pct(&w, "resolved_change_pct", c->resolved, n);
    jw_key(&w, "average_resolution_hours");
    if (sqlite3_column_int64(q, 0) == 0)
        jw_null(&w);
    else
        jw_double(&w, round_to(sqlite3_column_double(q, 1) / 3600000.0, 0.01));
    jw_obj_close(&w);
    sqlite3_finalize(q);
    return out_end(h, &w);
}

/* ---- GET /api/v1/dashboard/analytics/sla ---- */

static int sla_breaches(struct hctx *h, struct jw *w, int64_t since)
{
    sqlite3_stmt *q = prep(h, SQL_BREACHES, since, BREACHES_N);
    if (q == NULL)
        return TS_E_INTERNAL;
    jw_key(w, "breaches");
    jw_arr_open(w);
    while (sqlite3_step(q) == SQLITE_ROW) {
        char num[DESK_TICKET_NUMBER_LEN];
        desk_ticket_number(sqlite3_column_int64(q, 1), num);
        jw_obj_open(w);
        jw_kstr(w, "ticket_id", col_text(q, 0));
        jw_kstr(w, "ticket_number", num);
        jw_kstr(w, "title", col_text(q, 2));
        jw_kstr(w, "type", col_text(q, 3));
        jw_kstr(w, "priority", col_text(q, 4));
        jw_kstr(w, "kind", col_text(q, 5));
        jw_kiso(w, "deadline", sqlite3_column_int64(q, 6));
        jw_kiso(w, "breached_at", sqlite3_column_int64(q, 7));
        jw_obj_close(w);
    }
    jw_arr_close(w);
    sqlite3_finalize(q);
    return 0;
}

static int sla_grouped(struct hctx *h, struct jw *w, const char *key, const char *sql,
                       int64_t since)
{
    sqlite3_stmt *q = prep(h, sql, since, 0);
    if (q == NULL)
        return TS_E_INTERNAL;
    jw_key(w, key);
    jw_obj_open(w);
    while (sqlite3_step(q) == SQLITE_ROW)
        jw_kpct(w, col_text(q, 0), sqlite3_column_int64(q, 2), sqlite3_column_int64(q, 1));
    jw_obj_close(w);
    sqlite3_finalize(q);
    return 0;
}

static int sla_analytics(struct hctx *h)
{
    int64_t since;
    int r = query_period(h, &since);
    if (r < 0)
        return r;
    struct jw w;
    out_begin(h, &w);
    r = compliance(h, &w, "compliance_rate", since);
    if (r == 0)
        r = sla_breaches(h, &w, since);
    if (r == 0) {
        jw_key(&w, "trends");
        jw_obj_open(&w);
        r = sla_grouped(h, &w, "by_type", SQL_COMPLY_BY_TYPE, since);
        if (r == 0)
            r = sla_grouped(h, &w, "by_priority", SQL_COMPLY_BY_PRIORITY, since);
        jw_obj_close(&w);
    }
    return r < 0 ? r : out_end(h, &w);
}

/* ---- GET /api/v1/dashboard/reports/export ---- */

static const char *const EXPORT_HEADER[] = {
    "ticket_number", "title", "type", "priority", "status", "requester_email",
    "assignee_email", "created_at", "resolved_at", "closed_at"};
#define EXPORT_COLS 10

/* One row's cells as text: times ISO 8601 UTC, NULL as "". */
static void export_cells(sqlite3_stmt *q, char num[DESK_TICKET_NUMBER_LEN], char ts[3][40],
                         const char *cells[EXPORT_COLS])
{
    desk_ticket_number(sqlite3_column_int64(q, 0), num);
    cells[0] = num;
    for (int i = 1; i < 7; i++)
        cells[i] = col_text(q, i);
    for (int i = 0; i < 3; i++) {
        ts[i][0] = '\0';
        if (sqlite3_column_type(q, 7 + i) != SQLITE_NULL)
            clock_iso8601(sqlite3_column_int64(q, 7 + i), 0, ts[i], 40);
        cells[7 + i] = ts[i];
    }
}

/* RFC 4180 field; a cell a spreadsheet would read as a formula gets a leading apostrophe. */
static void csv_cell(FILE *f, const char *s)
{
    bool formula = strchr("=+-@\t\r", s[0]) != NULL && s[0] != '\0';
    fputc('"', f);
    if (formula)
        fputc('\'', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void csv_row(FILE *f, const char *const *cells)
{
    for (int i = 0; i < EXPORT_COLS; i++) {
        if (i)
            fputc(',', f);
        csv_cell(f, cells[i]);
    }
    fputs("\r\n", f);
}

/* Progress and cancellation of a job run (job NULL: a direct export, neither). */
struct export_progress {
    struct job_run *job;
    int64_t total;
};

/* After each row: reports progress every 1000 rows; true when the job must stop. */
static bool export_tick(const struct export_progress *p, int64_t row)
{
    if (p->job == NULL || row % 1000)
        return false;
    job_progress(p->job, p->total > 0 ? (double)row / (double)p->total : 0);
    return atomic_load(p->job->cancel);
}

static int export_csv(sqlite3_stmt *q, const char *path, const struct export_progress *p)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return TS_E_INTERNAL;
    csv_row(f, EXPORT_HEADER);
    int rc, r = 0;
    int64_t row = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        char num[DESK_TICKET_NUMBER_LEN], ts[3][40];
        const char *cells[EXPORT_COLS];
        export_cells(q, num, ts, cells);
        csv_row(f, cells);
        if (export_tick(p, ++row)) {
            r = -ECANCELED;
            break;
        }
    }
    if (r == 0 && (rc != SQLITE_DONE || ferror(f)))
        r = TS_E_INTERNAL;
    if (fclose(f) != 0 && r == 0)
        r = TS_E_INTERNAL;
    return r;
}

/* XLSX cells are written as strings (never formulas), so no neutralisation is needed.
 * Constant-memory mode flushes each row to a temp file in tmpdir as it is written. */
static int export_xlsx(sqlite3_stmt *q, const char *path, const char *tmpdir,
                       const struct export_progress *p)
{
    lxw_workbook_options opt = {.constant_memory = LXW_TRUE, .tmpdir = (char *)tmpdir};
    lxw_workbook *wb = workbook_new_opt(path, &opt);
    if (wb == NULL)
        return TS_E_INTERNAL;
    lxw_worksheet *ws = workbook_add_worksheet(wb, "tickets");
    lxw_format *bold = workbook_add_format(wb);
    bool ok = ws != NULL && bold != NULL;
    if (ok)
        format_set_bold(bold);
    for (int i = 0; ok && i < EXPORT_COLS; i++)
        ok = worksheet_write_string(ws, 0, (lxw_col_t)i, EXPORT_HEADER[i], bold) == LXW_NO_ERROR;
    int rc = SQLITE_DONE, r = 0;
    lxw_row_t row = 1;
    while (ok && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        char num[DESK_TICKET_NUMBER_LEN], ts[3][40];
        const char *cells[EXPORT_COLS];
        export_cells(q, num, ts, cells);
        for (int i = 0; ok && i < EXPORT_COLS; i++)
            if (cells[i][0])
                ok = worksheet_write_string(ws, row, (lxw_col_t)i, cells[i], NULL) == LXW_NO_ERROR;
        if (export_tick(p, row++)) {
            r = -ECANCELED;
            break;
        }
    }
    if (r == 0 && !(ok && rc == SQLITE_DONE))
        r = TS_E_INTERNAL;
    if (workbook_close(wb) != LXW_NO_ERROR && r == 0)
        r = TS_E_INTERNAL;
    return r;
}

/* Writes the tenant's tickets created in [from, to) to path. */
static int export_write(sqlite3 *db, const char *tenant_id, int64_t from, int64_t to, bool xlsx,
                        const char *path, const char *tmpdir, const struct export_progress *p)
{
    sqlite3_stmt *q = prep_on(db, tenant_id, SQL_EXPORT, from, to);
    int r = q == NULL ? TS_E_INTERNAL
            : xlsx    ? export_xlsx(q, path, tmpdir, p)
                      : export_csv(q, path, p);
    sqlite3_finalize(q);
    return r;
}

static int export_count(sqlite3 *db, const char *tenant_id, int64_t from, int64_t to,
                        int64_t *ret)
{
    sqlite3_stmt *q = prep_on(db, tenant_id, SQL_EXPORT_COUNT, from, to);
    if (q == NULL || sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_finalize(q);
        return TS_E_INTERNAL;
    }
    *ret = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return 0;
}

/* Pool: counts; a range past EXPORT_MAX_ROWS becomes a job (in export_done); else writes the
 * file under the spool dir, opens it and unlinks the name (the fd keeps it alive). */
static void export_work(struct hctx *h)
{
    struct dash *d = h->state;
    int64_t from = d->start_day * DAY_MS, to = (d->end_day + 1) * DAY_MS;
    d->err = export_count(h->db, h->tenant_id, from, to, &d->rows);
    if (d->err < 0 || d->rows > EXPORT_MAX_ROWS)
        return;
    char path[4096], id[UUID_STR_LEN];
    id_uuid7(id);
    snprintf(path, sizeof(path), "%s/export-%s.%s", h->app->spool_dir, id,
             d->xlsx ? "xlsx" : "csv");
    struct export_progress none = {NULL, 0};
    d->err = export_write(h->db, h->tenant_id, from, to, d->xlsx, path, h->app->spool_dir, &none);
    if (d->err == 0) {
        struct stat st;
        d->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (d->fd < 0 || fstat(d->fd, &st) < 0)
            d->err = TS_E_INTERNAL;
        else
            d->size = st.st_size;
    }
    unlink(path);
}

static const char *media_type(bool xlsx)
{
    return xlsx ? "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                : "text/csv; charset=utf-8";
}

/* Loop: hands an open file to the response, which streams and closes it. */
static void file_respond(struct hctx *h, int fd, int64_t size, bool xlsx, const char *filename)
{
    struct request *req = h->req;
    req->out_fd = fd;
    req->out_off = 0;
    req->out_len = size;
    req->content_type = media_type(xlsx);
    char cd[160];
    snprintf(cd, sizeof(cd), "attachment; filename=\"%s\"", filename);
    http_header_add(req, "Content-Disposition", cd);
    h->status = 200;
}

/* The directory export jobs write to: DATA/files/exports, beside the spool dir. */
static const char *exports_dir(struct hctx *h)
{
    const char *s = h->app->spool_dir;
    const char *slash = strrchr(s, '/');
    return arena_printf(h->arena, "%.*s/exports", slash ? (int)(slash - s) : 0, s);
}

static void job_json(struct jw *w, const char *id, const char *status, double progress,
                     const char *error, int64_t rows)
{
    jw_kstr(w, "job_id", id);
    jw_kstr(w, "status", status);
    jw_kdouble(w, "progress", progress);
    jw_kstr(w, "error", error);
    jw_kint(w, "rows", rows);
    char url[128];
    snprintf(url, sizeof(url), "/api/v1/dashboard/reports/export/%s", id);
    jw_kstr(w, "status_url", url);
}

/* Loop: queues a desk.export job for a big range; answers 202 with where to poll. */
static int export_enqueue(struct hctx *h, struct dash *d)
{
    if (d->rows > JOB_MAX_ROWS)
        return fail(h, TS_E_VALIDATION, "end_date",
                    "the range holds more than 1000000 tickets; choose an earlier end_date");
    struct buf params;
    buf_init(&params, 8192);
    struct jw w;
    jw_init(&w, &params);
    jw_obj_open(&w);
    jw_kint(&w, "start_day", d->start_day);
    jw_kint(&w, "end_day", d->end_day);
    jw_kbool(&w, "xlsx", d->xlsx);
    jw_kint(&w, "rows", d->rows);
    jw_kstr(&w, "filename", d->filename);
    jw_kstr(&w, "dir", exports_dir(h));
    jw_kstr(&w, "tmpdir", h->app->spool_dir);
    jw_obj_close(&w);
    char id[UUID_STR_LEN];
    int r = jw_finish(&w);
    if (r == 0)
        r = jobs_submit(h->app->jobs, h->tenant_id, "desk.export", params.data, id);
    buf_release(&params);
    if (r == TS_E_RATE_LIMITED)
        h->err_message = jobs_refusal(h->app->jobs,
                                      "two exports are already queued or running for this tenant");
    if (r < 0)
        return r == -EINVAL ? TS_E_INTERNAL : r;
    h->audit_target = arena_strdup(h->arena, id);
    h->status = 202;
    out_begin(h, &w);
    job_json(&w, id, "queued", 0, NULL, d->rows);
    return out_end(h, &w);
}

static int export_done(struct hctx *h)
{
    struct dash *d = h->state;
    if (d->err < 0)
        return d->err;
    if (d->rows > EXPORT_MAX_ROWS)
        return export_enqueue(h, d);
    file_respond(h, d->fd, d->size, d->xlsx, d->filename);
    d->fd = -1;
    return 0;
}

static void export_release(void *arg)
{
    struct dash *d = arg;
    if (d->fd >= 0)
        close(d->fd);
    d->fd = -1;
}

static int export_report(struct hctx *h)
{
    const char *type = http_query_get(h->req, "type");
    const char *format = http_query_get(h->req, "format");
    if (type == NULL || strcmp(type, "tickets"))
        return fail(h, TS_E_VALIDATION, "type", "type must be tickets");
    if (format == NULL)
        format = "csv";
    if (strcmp(format, "csv") && strcmp(format, "xlsx"))
        return fail(h, TS_E_VALIDATION, "format", "format must be csv or xlsx");
    struct dash *d = arena_alloc(h->arena, sizeof(*d));
    memset(d, 0, sizeof(*d));
    d->fd = -1;
    int r = query_range(h, &d->start_day, &d->end_day);
    if (r < 0)
        return r;
    d->xlsx = !strcmp(format, "xlsx");
    char a[11], b[11];
    day_label(d->start_day, a);
    day_label(d->end_day, b);
    snprintf(d->filename, sizeof(d->filename), "tickets-%s-%s.%s", a, b, format);
    arena_defer(h->arena, export_release, d);
    h->state = d;
    return api_defer_to_pool(h, export_work, export_done);
}

/* ---- the desk.export job ---- */

/* Removes finished exports older than EXPORT_KEEP_MS from dir (best effort). */
static void exports_prune(const char *dir)
{
    DIR *dh = opendir(dir);
    if (dh == NULL)
        return;
    int64_t cutoff = clock_now_ms() - EXPORT_KEEP_MS;
    struct dirent *e;
    while ((e = readdir(dh)) != NULL) {
        struct stat st;
        char path[4096];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
            (int64_t)st.st_mtime * 1000 < cutoff)
            unlink(path);
    }
    closedir(dh);
}

/* Worker: writes <dir>/<job id>.<ext> (through a temp name, so a file that exists is whole);
 * the result is {"path", "filename", "xlsx", "rows"}. A cancelled run starts over. */
int desk_export_job(struct job_run *r)
{
    json_error_t je;
    json_t *p = json_loads(r->params, 0, &je);
    json_int_t start = json_integer_value(json_object_get(p, "start_day"));
    json_int_t end = json_integer_value(json_object_get(p, "end_day"));
    bool xlsx = json_is_true(json_object_get(p, "xlsx"));
    const char *dir = json_string_value(json_object_get(p, "dir"));
    const char *tmpdir = json_string_value(json_object_get(p, "tmpdir"));
    const char *filename = json_string_value(json_object_get(p, "filename"));
    int rc = 0;
    if (dir == NULL || tmpdir == NULL || filename == NULL || end < start) {
        snprintf(r->error, sizeof(r->error), "bad job parameters");
        json_decref(p);
        return TS_E_INTERNAL;
    }
    mkdir(dir, 0700);
    exports_prune(dir);
    char part[4096], path[4096];
    snprintf(part, sizeof(part), "%s/%s.part", dir, r->id);
    snprintf(path, sizeof(path), "%s/%s.%s", dir, r->id, xlsx ? "xlsx" : "csv");
    int64_t from = start * DAY_MS, to = (end + 1) * DAY_MS, total = 0;
    rc = export_count(r->db, r->tenant_id, from, to, &total);
    struct export_progress pr = {r, total};
    if (rc == 0)
        rc = export_write(r->db, r->tenant_id, from, to, xlsx, part, tmpdir, &pr);
    if (rc == 0 && rename(part, path) < 0)
        rc = TS_E_INTERNAL;
    if (rc < 0) {
        unlink(part);
        if (rc == -ECANCELED)
            buf_puts(&r->next_checkpoint, "{}");
        else
            snprintf(r->error, sizeof(r->error), "the export file could not be written");
    } else {
        struct jw w;
        jw_init(&w, &r->result);
        jw_obj_open(&w);
        jw_kstr(&w, "path", path);
        jw_kstr(&w, "filename", filename);
        jw_kbool(&w, "xlsx", xlsx);
        jw_kint(&w, "rows", total);
        jw_obj_close(&w);
        rc = jw_finish(&w) < 0 ? TS_E_INTERNAL : 0;
    }
    json_decref(p);
    return rc;
}

/* ---- GET /api/v1/dashboard/reports/export/{job_id} ---- */

static const char SQL_JOB[] =
    "SELECT status, progress, result, error, params FROM jobs "
    "WHERE id = ? AND tenant_id = ? AND kind = 'desk.export'";

/* Loop: a completed job's file, else the job's status. */
static int export_job_get(struct hctx *h)
{
    const char *id = http_param_get(h->req, "job_id");
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_JOB);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_reset(q);
        return fail(h, TS_E_NOT_FOUND, "job_id", "export job not found");
    }
    const char *status = arena_strdup(h->arena, col_text(q, 0));
    double progress = sqlite3_column_double(q, 1);
    json_t *res = json_loads(col_text(q, 2), 0, NULL);
    const char *error = sqlite3_column_type(q, 3) == SQLITE_NULL
                            ? NULL : arena_strdup(h->arena, col_text(q, 3));
    json_t *params = json_loads(col_text(q, 4), 0, NULL);
    sqlite3_reset(q);
    int64_t rows = json_integer_value(json_object_get(params, "rows"));
    json_decref(params);
    int r = 0;
    if (!strcmp(status, "completed")) {
        const char *path = json_string_value(json_object_get(res, "path"));
        int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0) {
            file_respond(h, fd, st.st_size, json_is_true(json_object_get(res, "xlsx")),
                         json_string_value(json_object_get(res, "filename")));
        } else {
            if (fd >= 0)
                close(fd);
            r = fail(h, TS_E_NOT_FOUND, "job_id", "the export file has expired");
        }
    } else {
        struct jw w;
        out_begin(h, &w);
        job_json(&w, id, status, progress, error, rows);
        r = out_end(h, &w);
    }
    json_decref(res);
    return r;
}

static const struct route routes[] = {
    {"GET", "/api/v1/dashboard/overview", overview, "dashboard.read", "default", RUN_POOL, 0, 0},
    {"GET", "/api/v1/dashboard/analytics/tickets", ticket_analytics, "dashboard.read", "default",
     RUN_POOL, 0, 0},
    {"GET", "/api/v1/dashboard/analytics/sla", sla_analytics, "dashboard.read", "default",
     RUN_POOL, 0, 0},
    {"GET", "/api/v1/dashboard/reports/export", export_report, "dashboard.read", "default",
     RUN_LOOP, 0, 0},
    {"GET", "/api/v1/dashboard/reports/export/{job_id}", export_job_get, "dashboard.read",
     "default", RUN_LOOP, 0, 0},
};

const struct route_table desk_dashboard_table = {SURF_DESK, routes,
                                                 sizeof(routes) / sizeof(routes[0])};
