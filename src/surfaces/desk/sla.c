/* desk SLA: rules and business calendar per tenant, each ticket's deadlines (set at creation,
 * moved on by pauses), the breach timer, and the /api/v1/sla routes. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "core/log.h"
#include "engines/bizhours.h"
#include "http/ws.h"
#include "store/db.h"
#include "surfaces/desk/desk.h"

#define HOUR_MS 3600000.0

/* Defaults when a tenant has no rule for a type (hours: first response, resolution). */
static const struct sla_default {
    const char *type;
    double response, resolution;
} defaults[] = {
    {"incident", 4, 24}, {"bug", 24, 72},       {"support", 8, 48},
    {"question", 24, 72}, {"task", 48, 168},    {"feature", 72, 720},
};
#define NDEFAULTS (sizeof(defaults) / sizeof(defaults[0]))

static const char SQL_RULE_FIND[] =
    "SELECT response_time_hours, resolution_time_hours FROM sla_rules "
    "WHERE tenant_id = ?1 AND ticket_type = ?2 AND (priority = ?3 OR priority IS NULL) "
    "ORDER BY priority IS NULL LIMIT 1";
static const char SQL_CAL_GET[] =
    "SELECT utc_offset_minutes, working_days, start_minute, end_minute, holidays, updated_at, "
    "timezone FROM sla_calendars WHERE tenant_id = ?";
static const char SQL_SLA_INSERT[] =
    "INSERT INTO ticket_sla(ticket_id, tenant_id, created_at, response_hours, resolution_hours, "
    "response_deadline, resolution_deadline, paused_since) VALUES(?,?,?,?,?,?,?,?)";
static const char SQL_SLA_GET[] =
    "SELECT response_deadline, resolution_deadline, paused_since, first_response_at, resolved_at, "
    "response_breached_at, resolution_breached_at, response_hours, resolution_hours, created_at "
    "FROM ticket_sla WHERE ticket_id = ? AND tenant_id = ?";
static const char SQL_SLA_CLOCK[] =
    "UPDATE ticket_sla SET resolution_deadline = ?1, paused_since = ?2, paused_ms = paused_ms + ?3, "
    "resolved_at = ?4 WHERE ticket_id = ?5 AND tenant_id = ?6";
static const char SQL_SLA_RESPONDED[] =
    "UPDATE ticket_sla SET first_response_at = ?1 WHERE ticket_id = ?2 AND tenant_id = ?3 "
    "AND first_response_at IS NULL";
static const char SQL_BREACH_RESPONSE[] =
    "UPDATE ticket_sla SET response_breached_at = ?1 WHERE ticket_id = ?2 AND tenant_id = ?3 "
    "AND response_breached_at IS NULL";
static const char SQL_BREACH_RESOLUTION[] =
    "UPDATE ticket_sla SET resolution_breached_at = ?1 WHERE ticket_id = ?2 AND tenant_id = ?3 "
    "AND resolution_breached_at IS NULL";
static const char SQL_BREACH_HISTORY[] =
    "INSERT INTO ticket_history(tenant_id, id, ticket_id, actor_id, field, old_value, new_value, "
    "created_at) VALUES(?,?,?,NULL,'sla_breach',NULL,?,?)";
static const char SQL_BREACH_TICKET[] =
    "SELECT number, coalesce(assignee_id, '') FROM tickets WHERE id = ? AND tenant_id = ?";
static const char SQL_TENANT_ADMINS[] =
    "SELECT id FROM users WHERE tenant_id = ? AND active = 1 AND EXISTS (SELECT 1 FROM "
    "json_each(users.roles) WHERE value IN ('admin','org_admin','master_admin')) LIMIT 200";
static const char SQL_DUE_RESPONSE[] =
    "SELECT ticket_id, tenant_id, response_deadline FROM ticket_sla "
    "WHERE first_response_at IS NULL AND resolved_at IS NULL AND response_breached_at IS NULL "
    "AND response_deadline <= ? ORDER BY response_deadline LIMIT 64";
static const char SQL_DUE_RESOLUTION[] =
    "SELECT ticket_id, tenant_id, resolution_deadline FROM ticket_sla "
    "WHERE paused_since IS NULL AND resolution_breached_at IS NULL "
    "AND resolution_deadline <= ? ORDER BY resolution_deadline LIMIT 64";

/* ---------- rules and calendar ---------- */

static const struct sla_default *default_for(const char *type)
{
    for (size_t i = 0; i < NDEFAULTS; i++)
        if (!strcmp(defaults[i].type, type))
            return &defaults[i];
    return NULL;
}

void desk_sla_default_hours(const char *type, double *ret_response, double *ret_resolution)
{
    const struct sla_default *d = default_for(type);
    *ret_response = d ? d->response : 24;
    *ret_resolution = d ? d->resolution : 72;
}

static void rule_for(struct db *db, const char *tenant_id, const char *type, const char *priority,
                     double *ret_response, double *ret_resolution)
{
    sqlite3_stmt *q = db_stmt(db, SQL_RULE_FIND);
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, type, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, priority, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW) {
        *ret_response = sqlite3_column_double(q, 0);
        *ret_resolution = sqlite3_column_double(q, 1);
    } else {
        desk_sla_default_hours(type, ret_response, ret_resolution);
    }
    sqlite3_reset(q);
}

/* A calendar with its holiday and time-zone storage (c.zone points at zone when set). */
struct sla_cal {
    struct bizcal c;
    int32_t holidays[BIZ_MAX_HOLIDAYS];
    struct tzif zone;
    int64_t updated_at;
};

/* Strict YYYY-MM-DD to a day number. */
static bool date_parse(const char *s, int32_t *ret)
{
    int y, m, d, n = 0;
    if (!s || strlen(s) != 10 || sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) != 3 || n != 10 ||
        s[4] != '-' || s[7] != '-' || y < 1970 || y > 9999 || m < 1 || m > 12 || d < 1 || d > 31)
        return false;
    int32_t z = biz_days_from_civil(y, m, d);
    int yy, mm, dd;
    biz_civil_from_days(z, &yy, &mm, &dd);
    if (yy != y || mm != m || dd != d)
        return false;
    *ret = z;
    return true;
}

static void date_format(int32_t z, char out[16])
{
    int y, m, d;
    biz_civil_from_days(z, &y, &m, &d);
    snprintf(out, 16, "%04d-%02d-%02d", y, m, d);
}

static int cmp_day(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Sorted, deduplicated holidays from a JSON array of dates; -1 on a bad entry. */
static int holidays_parse(json_t *arr, int32_t *out, size_t *ret_n)
{
    size_t i, n = 0;
    json_t *v;
    if (!json_is_array(arr) || json_array_size(arr) > BIZ_MAX_HOLIDAYS)
        return -1;
    json_array_foreach(arr, i, v) {
        if (!date_parse(json_string_value(v), &out[n]))
            return -1;
        n++;
    }
    qsort(out, n, sizeof(out[0]), cmp_day);
    size_t k = 0;
    for (i = 0; i < n; i++)
        if (k == 0 || out[i] != out[k - 1])
            out[k++] = out[i];
    *ret_n = k;
    return 0;
}

static void cal_load(struct db *db, const char *tenant_id, struct sla_cal *cal)
{
    bizcal_24x7(&cal->c);
    cal->updated_at = 0;
    sqlite3_stmt *q = db_stmt(db, SQL_CAL_GET);
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW) {
        struct bizcal c = {sqlite3_column_int(q, 0), (unsigned)sqlite3_column_int(q, 1),
                           sqlite3_column_int(q, 2), sqlite3_column_int(q, 3), cal->holidays, 0};
        json_t *arr = json_loads(col_text(q, 4), 0, NULL);
        const char *tz = (const char *)sqlite3_column_text(q, 6);
        if (tz && tzif_load(tz, &cal->zone) == 0) {
            c.zone = &cal->zone;
        } else if (tz) {
            log_msg(LOG_WARN, "sla: tenant %s: time zone %s is not in %s; using the UTC offset",
                    tenant_id, tz, TZIF_DIR);
        }
        if (holidays_parse(arr, cal->holidays, &c.nholidays) == 0 && bizcal_valid(&c)) {
            cal->c = c;
            cal->updated_at = sqlite3_column_int64(q, 5);
        } else {
            log_msg(LOG_WARN, "sla: tenant %s has an unreadable calendar; using 24x7", tenant_id);
        }
        json_decref(arr);
    }
    sqlite3_reset(q);
}

static int64_t hours_ms(double hours)
{
    return (int64_t)llround(hours * HOUR_MS);
}

/* ---------- per-ticket clock ---------- */

struct sla_row {
    int64_t response_deadline, resolution_deadline, paused_since, first_response_at, resolved_at;
    int64_t response_breached_at, resolution_breached_at, created_at;
    double response_hours, resolution_hours;
};

static bool sla_row_get(struct db *db, const char *tenant_id, const char *ticket_id,
                        struct sla_row *ret)
{
    sqlite3_stmt *q = db_stmt(db, SQL_SLA_GET);
    sqlite3_bind_text(q, 1, ticket_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, tenant_id, -1, SQLITE_STATIC);
    bool found = sqlite3_step(q) == SQLITE_ROW;
    if (found) {
        ret->response_deadline = sqlite3_column_int64(q, 0);
        ret->resolution_deadline = sqlite3_column_int64(q, 1);
        ret->paused_since = sqlite3_column_int64(q, 2);
        ret->first_response_at = sqlite3_column_int64(q, 3);
        ret->resolved_at = sqlite3_column_int64(q, 4);
        ret->response_breached_at = sqlite3_column_int64(q, 5);
        ret->resolution_breached_at = sqlite3_column_int64(q, 6);
        ret->response_hours = sqlite3_column_double(q, 7);
        ret->resolution_hours = sqlite3_column_double(q, 8);
        ret->created_at = sqlite3_column_int64(q, 9);
    }
    sqlite3_reset(q);
    return found;
}

/* Statuses that stop the resolution clock. */
static bool status_stops(const char *s)
{
    return !strcmp(s, "pending") || !strcmp(s, "waiting_on_customer") || !strcmp(s, "resolved") ||
           !strcmp(s, "closed");
}

static bool status_done(const char *s)
{
    return !strcmp(s, "resolved") || !strcmp(s, "closed");
}

static void publish_breach(struct app *app, const char *tenant_id, const char *ticket_id,
                           const char *number, const char *kind, int64_t deadline, int64_t now)
{
    char channel[128];
    snprintf(channel, sizeof(channel), "desk:%s:sla", tenant_id);
    struct buf b;
    buf_init(&b, 4096);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kstr(&w, "type", "sla_breach");
    jw_kstr(&w, "ticket_id", ticket_id);
    jw_kstr(&w, "ticket_number", number);
    jw_kstr(&w, "breach_type", kind);
    jw_kiso(&w, "deadline", deadline);
    jw_kiso(&w, "breached_at", now);
    jw_obj_close(&w);
    if (jw_finish(&w) == 0)
        ws_hub_publish(app->hub, channel, b.data, b.len);
    buf_release(&b);
}

/* Records a breach once: the ticket_sla column, a history row, notifications to the assignee
 * and the tenant's admins, and a push on desk:<tenant>:sla. Loop thread, tick transaction. */
static int breach_record(struct app *app, const char *tenant_id, const char *ticket_id,
                         bool response, int64_t deadline, int64_t now)
{
    struct db *db = app->db;
    int r = db_write_begin(db);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(db, response ? SQL_BREACH_RESPONSE : SQL_BREACH_RESOLUTION);
    sqlite3_bind_int64(q, 1, now);
    sqlite3_bind_text(q, 2, ticket_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    if (sqlite3_changes(db_handle(db)) == 0)
        return 0; /* already recorded */
    const char *kind = response ? "response" : "resolution";
    char id[UUID_STR_LEN];
    id_uuid7(id);
    q = db_stmt(db, SQL_BREACH_HISTORY);
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, ticket_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 5, now);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;

    char number[DESK_TICKET_NUMBER_LEN] = "", assignee[UUID_STR_LEN] = "", title[256];
    q = db_stmt(db, SQL_BREACH_TICKET);
    sqlite3_bind_text(q, 1, ticket_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW) {
        desk_ticket_number(sqlite3_column_int64(q, 0), number);
        snprintf(assignee, sizeof(assignee), "%s", col_text(q, 1));
    }
    sqlite3_reset(q);
    char when[32];
    clock_iso8601(deadline, 0, when, sizeof(when));
    snprintf(title, sizeof(title), "SLA %s breach on %s", kind, number);
    char body[800];
    snprintf(body, sizeof(body), "%s: the %s deadline %s has passed.", number, kind, when);
    r = desk_notify(app, tenant_id, NULL, assignee, DESK_N_SLA_BREACH, title, body, ticket_id);
    /* collect the admins first: desk_notify reuses cached statements */
    char admins[32][UUID_STR_LEN];
    int nadmins = 0;
    q = db_stmt(db, SQL_TENANT_ADMINS);
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    while (sqlite3_step(q) == SQLITE_ROW && nadmins < 32)
        snprintf(admins[nadmins++], UUID_STR_LEN, "%s", col_text(q, 0));
    sqlite3_reset(q);
    for (int i = 0; i < nadmins && r == 0; i++)
        if (strcmp(admins[i], assignee) != 0)
            r = desk_notify(app, tenant_id, NULL, admins[i], DESK_N_SLA_BREACH, title, body,
                            ticket_id);
    if (r == 0)
        publish_breach(app, tenant_id, ticket_id, number, kind, deadline, now);
    return r;
}

int desk_sla_start(struct hctx *h, const struct desk_ticket *t)
{
    struct db *db = h->app->db;
    int r = db_write_begin(db);
    if (r < 0)
        return r;
    double resp, reso;
    rule_for(db, h->tenant_id, t->type, t->priority, &resp, &reso);
    static struct sla_cal cal; /* loop thread only; too big for comfort on the stack */
    cal_load(db, h->tenant_id, &cal);
    int64_t rd = bizhours_add(&cal.c, t->created_at, hours_ms(resp));
    int64_t sd = bizhours_add(&cal.c, t->created_at, hours_ms(reso));
    sqlite3_stmt *q = db_stmt(db, SQL_SLA_INSERT);
    sqlite3_bind_text(q, 1, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, t->created_at);
    sqlite3_bind_double(q, 4, resp);
    sqlite3_bind_double(q, 5, reso);
    sqlite3_bind_int64(q, 6, rd);
    sqlite3_bind_int64(q, 7, sd);
    if (t->status[0] && status_stops(t->status))
        sqlite3_bind_int64(q, 8, t->created_at);
    else
        sqlite3_bind_null(q, 8);
    return sqlite3_step(q) == SQLITE_DONE ? 0 : TS_E_INTERNAL;
}

static int clock_store(struct hctx *h, const char *ticket_id, int64_t deadline, int64_t paused_since,
                       int64_t paused_add, int64_t resolved_at)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_SLA_CLOCK);
    sqlite3_bind_int64(q, 1, deadline);
    if (paused_since)
        sqlite3_bind_int64(q, 2, paused_since);
    else
        sqlite3_bind_null(q, 2);
    sqlite3_bind_int64(q, 3, paused_add);
    if (resolved_at)
        sqlite3_bind_int64(q, 4, resolved_at);
    else
        sqlite3_bind_null(q, 4);
    sqlite3_bind_text(q, 5, ticket_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, h->tenant_id, -1, SQLITE_STATIC);
    return sqlite3_step(q) == SQLITE_DONE ? 0 : TS_E_INTERNAL;
}

int desk_sla_on_status(struct hctx *h, const struct desk_ticket *t, const char *old_status,
                       const char *new_status)
{
    struct db *db = h->app->db;
    struct sla_row s;
    if (!sla_row_get(db, h->tenant_id, t->id, &s))
        return 0; /* a ticket from before SLA tracking */
    int r = db_write_begin(db);
    if (r < 0)
        return r;
    int64_t now = clock_now_ms();
    bool was = s.paused_since != 0, stops = status_stops(new_status);
    bool done = status_done(new_status), was_done = status_done(old_status);
    int64_t resolved_at = done ? (was_done && s.resolved_at ? s.resolved_at : now) : 0;
    if (!was && stops) {
        /* the clock stops now: a deadline already passed is a breach, whatever comes next */
        if (now >= s.resolution_deadline && !s.resolution_breached_at)
            r = breach_record(h->app, h->tenant_id, t->id, false, s.resolution_deadline, now);
        if (r == 0)
            r = clock_store(h, t->id, s.resolution_deadline, now, 0, resolved_at);
    } else if (was && !stops) {
        static struct sla_cal cal;
        cal_load(db, h->tenant_id, &cal);
        int64_t stopped = bizhours_between(&cal.c, s.paused_since, now);
        int64_t deadline = s.resolution_breached_at
                               ? s.resolution_deadline
                               : bizhours_add(&cal.c, s.resolution_deadline, stopped);
        r = clock_store(h, t->id, deadline, 0, stopped, 0);
    } else {
        r = clock_store(h, t->id, s.resolution_deadline, s.paused_since, 0, resolved_at);
    }
    /* resolving without a recorded response: the response clock ends here too */
    if (r == 0 && done && !was_done && !s.first_response_at && !s.response_breached_at &&
        now >= s.response_deadline)
        r = breach_record(h->app, h->tenant_id, t->id, true, s.response_deadline, now);
    return r;
}

int desk_sla_on_first_response(struct hctx *h, const struct desk_ticket *t)
{
    struct db *db = h->app->db;
    struct sla_row s;
    if (!sla_row_get(db, h->tenant_id, t->id, &s) || s.first_response_at)
        return 0;
    int r = db_write_begin(db);
    if (r < 0)
        return r;
    int64_t now = clock_now_ms();
    sqlite3_stmt *q = db_stmt(db, SQL_SLA_RESPONDED);
    sqlite3_bind_int64(q, 1, now);
    sqlite3_bind_text(q, 2, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    if (now > s.response_deadline && !s.response_breached_at && !s.resolved_at)
        r = breach_record(h->app, h->tenant_id, t->id, true, s.response_deadline, now);
    return r;
}

/* ---------- the breach timer ---------- */

static uv_timer_t breach_timer;
static bool timer_running;

struct due {
    char ticket_id[UUID_STR_LEN], tenant_id[UUID_STR_LEN];
    int64_t deadline;
};

/* One pass over one clock: every row past its deadline, each recorded under its own savepoint. */
static int breach_sweep(struct app *app, bool response, int64_t now)
{
    static struct due due[64];
    int n = 0;
    sqlite3_stmt *q = db_stmt(app->db, response ? SQL_DUE_RESPONSE : SQL_DUE_RESOLUTION);
    sqlite3_bind_int64(q, 1, now);
    while (n < 64 && sqlite3_step(q) == SQLITE_ROW) {
        snprintf(due[n].ticket_id, UUID_STR_LEN, "%s", col_text(q, 0));
        snprintf(due[n].tenant_id, UUID_STR_LEN, "%s", col_text(q, 1));
        due[n++].deadline = sqlite3_column_int64(q, 2);
    }
    sqlite3_reset(q);
    for (int i = 0; i < n; i++) {
        db_request_start(app->db);
        int r = breach_record(app, due[i].tenant_id, due[i].ticket_id, response, due[i].deadline,
                              now);
        db_request_end(app->db, r == 0);
        if (r < 0) {
            log_msg(LOG_WARN, "sla: cannot record a breach of %s: %s", due[i].ticket_id,
                    err_message(r));
            return r; /* busy or failing: the next tick retries */
        }
    }
    return n;
}

static void breach_timer_cb(uv_timer_t *t)
{
    struct app *app = t->data;
    if (app->draining)
        return;
    int64_t now = clock_now_ms();
    /* a full batch means more may be due: go again on the next tick rather than block */
    int a = breach_sweep(app, true, now);
    int b = a < 0 ? a : breach_sweep(app, false, now);
    if (a == 64 || b == 64)
        uv_timer_start(t, breach_timer_cb, 0, app->cfg->sla_check_ms);
}

void desk_sla_timer_start(struct app *app)
{
    uv_timer_init(app->loop, &breach_timer);
    breach_timer.data = app;
    uv_timer_start(&breach_timer, breach_timer_cb, app->cfg->sla_check_ms, app->cfg->sla_check_ms);
    timer_running = true;
}

void desk_sla_timer_stop(void)
{
    if (!timer_running)
        return;
    timer_running = false;
    uv_timer_stop(&breach_timer);
    uv_close((uv_handle_t *)&breach_timer, NULL);
}

/* ---------- JSON and validation helpers ---------- */

static const char *const types[] = {"bug", "feature", "support", "incident", "question", "task"};
static const char *const priorities[] = {"low", "medium", "high", "critical"};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

static bool one_of(const char *v, const char *const *set, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        if (!strcmp(v, set[i]))
            return true;
    return false;
}

/* Hours with 6 decimals (3.6 ms): fine enough for the sub-second windows tests use. */
static double hours_of(int64_t ms)
{
    return round((double)ms / HOUR_MS * 1e6) / 1e6;
}

static double round2(double v)
{
    return round(v * 100.0) / 100.0;
}

static int hours_field(struct hctx *h, const char *field, double *ret)
{
    json_t *v = json_object_get(h->body, field);
    if (!v)
        return fail(h, TS_E_VALIDATION, field, "required");
    if (!json_is_number(v))
        return fail(h, TS_E_VALIDATION, field, "must be a number of hours");
    double x = json_number_value(v);
    if (!(x >= 0.001) || x > 8760)
        return fail(h, TS_E_VALIDATION, field, "must be between 0.001 and 8760 hours");
    *ret = x;
    return 0;
}

/* ---------- rules ---------- */

static const char SQL_RULES_LIST[] =
    "SELECT ticket_type, priority, response_time_hours, resolution_time_hours, updated_at "
    "FROM sla_rules WHERE tenant_id = ? ORDER BY ticket_type, priority IS NOT NULL, "
    "CASE priority WHEN 'low' THEN 1 WHEN 'medium' THEN 2 WHEN 'high' THEN 3 ELSE 4 END";
static const char SQL_RULE_DELETE[] =
    "DELETE FROM sla_rules WHERE tenant_id = ?1 AND ticket_type = ?2 "
    "AND coalesce(priority, '') = coalesce(?3, '')";
static const char SQL_RULE_INSERT[] =
    "INSERT INTO sla_rules(tenant_id, ticket_type, priority, response_time_hours, "
    "resolution_time_hours, updated_at) VALUES(?,?,?,?,?,?)";

static void rule_write(struct jw *w, const char *type, const char *priority, double resp,
                       double reso, bool is_default, int64_t updated_at)
{
    jw_obj_open(w);
    jw_kstr(w, "ticket_type", type);
    jw_kstr(w, "priority", priority);
    jw_kdouble(w, "response_time_hours", resp);
    jw_kdouble(w, "resolution_time_hours", reso);
    jw_kbool(w, "is_default", is_default);
    jw_kiso(w, "updated_at", updated_at);
    jw_obj_close(w);
}

static int rules_get(struct hctx *h)
{
    bool has_any[NDEFAULTS] = {false};
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "rules");
    jw_arr_open(&w);
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_RULES_LIST);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *type = col_text(q, 0);
        const char *priority = (const char *)sqlite3_column_text(q, 1);
        for (size_t i = 0; !priority && i < NDEFAULTS; i++)
            if (!strcmp(defaults[i].type, type))
                has_any[i] = true;
        rule_write(&w, type, priority, sqlite3_column_double(q, 2), sqlite3_column_double(q, 3),
                   false, sqlite3_column_int64(q, 4));
    }
    sqlite3_reset(q);
    for (size_t i = 0; i < NDEFAULTS; i++)
        if (!has_any[i])
            rule_write(&w, defaults[i].type, NULL, defaults[i].response, defaults[i].resolution,
                       true, 0);
    jw_arr_close(&w);
    return out_end(h, &w);
}

static int rules_put(struct hctx *h)
{
    const char *type, *priority = NULL;
    double resp = 0, reso = 0;
    int r = body_string(h, "ticket_type", 16, true, &type);
    if (r == 0 && !one_of(type, types, 6))
        r = fail(h, TS_E_VALIDATION, "ticket_type",
                 "must be one of bug, feature, support, incident, question, task");
    json_t *pv = json_object_get(h->body, "priority");
    if (r == 0 && pv && !json_is_null(pv)) {
        r = body_string(h, "priority", 16, true, &priority);
        if (r == 0 && !one_of(priority, priorities, 4))
            r = fail(h, TS_E_VALIDATION, "priority", "must be one of low, medium, high, critical");
    }
    if (r == 0)
        r = hours_field(h, "response_time_hours", &resp);
    if (r == 0)
        r = hours_field(h, "resolution_time_hours", &reso);
    if (r == 0 && reso < resp)
        r = fail(h, TS_E_VALIDATION, "resolution_time_hours",
                 "must be at least response_time_hours");
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    int64_t now = clock_now_ms();
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_RULE_DELETE);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, type, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, priority, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    q = db_stmt(h->app->db, SQL_RULE_INSERT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, type, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, priority, -1, SQLITE_STATIC);
    sqlite3_bind_double(q, 4, resp);
    sqlite3_bind_double(q, 5, reso);
    sqlite3_bind_int64(q, 6, now);
    if (sqlite3_step(q) != SQLITE_DONE)
        return TS_E_INTERNAL;
    h->audit_target = arena_printf(h->arena, "sla_rule:%s:%s", type, priority ? priority : "*");
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "rule");
    rule_write(&w, type, priority, resp, reso, false, now);
    return out_end(h, &w);
}

/* ---------- calendar ---------- */

static const char SQL_CAL_PUT[] =
    "INSERT INTO sla_calendars(tenant_id, utc_offset_minutes, working_days, start_minute, "
    "end_minute, holidays, updated_at, timezone) VALUES(?1,?2,?3,?4,?5,?6,?7,?8) "
    "ON CONFLICT(tenant_id) DO UPDATE SET utc_offset_minutes = ?2, working_days = ?3, "
    "start_minute = ?4, end_minute = ?5, holidays = ?6, updated_at = ?7, timezone = ?8";

static void hhmm(int minute, char out[16])
{
    snprintf(out, 16, "%02d:%02d", minute / 60, minute % 60);
}

static bool hhmm_parse(const char *s, int *ret)
{
    int hh, mm, n = 0;
    if (!s || strlen(s) != 5 || s[2] != ':' || sscanf(s, "%2d:%2d%n", &hh, &mm, &n) != 2 ||
        n != 5 || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0))
        return false;
    *ret = hh * 60 + mm;
    return true;
}

static void cal_write(struct hctx *h, struct jw *w, const struct sla_cal *cal)
{
    char t[16], d[16];
    jw_kint(w, "utc_offset_minutes", cal->c.utc_offset_min);
    if (cal->c.zone) {
        jw_kstr(w, "timezone", cal->c.zone->name);
    } else {
        jw_key(w, "timezone");
        jw_null(w);
    }
    jw_key(w, "working_days");
    jw_arr_open(w);
    for (int i = 1; i <= 7; i++) /* Monday first */
        if (cal->c.days_mask & (1u << (i % 7)))
            jw_str(w, day_names[i % 7]);
    jw_arr_close(w);
    hhmm(cal->c.start_min, t);
    jw_kstr(w, "start_time", t);
    hhmm(cal->c.end_min, t);
    jw_kstr(w, "end_time", t);
    jw_key(w, "holidays");
    jw_arr_open(w);
    for (size_t i = 0; i < cal->c.nholidays; i++) {
        date_format(cal->c.holidays[i], d);
        jw_str(w, d);
    }
    jw_arr_close(w);
    jw_kbool(w, "is_default", cal->updated_at == 0);
    jw_kiso(w, "updated_at", cal->updated_at);
    (void)h;
}

static int calendar_get(struct hctx *h)
{
    static struct sla_cal cal;
    cal_load(h->app->db, h->tenant_id, &cal);
    struct jw w;
    out_begin(h, &w);
    cal_write(h, &w, &cal);
    return out_end(h, &w);
}

static int calendar_parse(struct hctx *h, struct sla_cal *cal)
{
    json_t *b = h->body, *v;
    bizcal_24x7(&cal->c);
    cal->c.holidays = cal->holidays;
    v = json_object_get(b, "utc_offset_minutes");
    if (v && (!json_is_integer(v) || json_integer_value(v) < -840 || json_integer_value(v) > 840))
        return fail(h, TS_E_VALIDATION, "utc_offset_minutes", "must be an integer in -840..840");
    if (v)
        cal->c.utc_offset_min = (int)json_integer_value(v);
    v = json_object_get(b, "timezone");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v) || !tzif_name_valid(json_string_value(v)))
            return fail(h, TS_E_VALIDATION, "timezone",
                        "must be an IANA time zone name such as Europe/Berlin, or null");
        if (tzif_load(json_string_value(v), &cal->zone) < 0)
            return fail(h, TS_E_VALIDATION, "timezone", "is not a known time zone");
        cal->c.zone = &cal->zone;
    }
    v = json_object_get(b, "working_days");
    if (v) {
        size_t i;
        json_t *d;
        unsigned mask = 0;
        if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 7)
            return fail(h, TS_E_VALIDATION, "working_days", "must list 1 to 7 day names");
        json_array_foreach(v, i, d) {
            int k = -1;
            for (int j = 0; j < 7; j++)
                if (json_is_string(d) && !strcmp(json_string_value(d), day_names[j]))
                    k = j;
            if (k < 0)
                return fail(h, TS_E_VALIDATION, "working_days",
                            "day names are mon, tue, wed, thu, fri, sat, sun");
            mask |= 1u << k;
        }
        cal->c.days_mask = mask;
    }
    const char *names[2] = {"start_time", "end_time"};
    int *dst[2] = {&cal->c.start_min, &cal->c.end_min};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(b, names[i]);
        if (v && !hhmm_parse(json_string_value(v), dst[i]))
            return fail(h, TS_E_VALIDATION, names[i], "must be HH:MM (00:00 .. 24:00)");
    }
    if (cal->c.start_min >= cal->c.end_min)
        return fail(h, TS_E_VALIDATION, "end_time", "must be after start_time");
    v = json_object_get(b, "holidays");
    if (v && holidays_parse(v, cal->holidays, &cal->c.nholidays) < 0)
        return fail(h, TS_E_VALIDATION, "holidays",
                    "must be an array of at most 400 dates YYYY-MM-DD");
    return 0;
}

static int calendar_put(struct hctx *h)
{
    static struct sla_cal cal;
    int r = calendar_parse(h, &cal);
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    struct buf hb;
    buf_init(&hb, 16 * BIZ_MAX_HOLIDAYS);
    struct jw hw;
    jw_init(&hw, &hb);
    jw_arr_open(&hw);
    for (size_t i = 0; i < cal.c.nholidays; i++) {
        char d[16];
        date_format(cal.holidays[i], d);
        jw_str(&hw, d);
    }
    jw_arr_close(&hw);
    r = jw_finish(&hw);
    cal.updated_at = clock_now_ms();
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_CAL_PUT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 2, cal.c.utc_offset_min);
    sqlite3_bind_int(q, 3, (int)cal.c.days_mask);
    sqlite3_bind_int(q, 4, cal.c.start_min);
    sqlite3_bind_int(q, 5, cal.c.end_min);
    sqlite3_bind_text(q, 6, hb.data ? hb.data : "[]", (int)hb.len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 7, cal.updated_at);
    if (cal.c.zone)
        sqlite3_bind_text(q, 8, cal.c.zone->name, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 8);
    if (r == 0 && sqlite3_step(q) != SQLITE_DONE)
        r = TS_E_INTERNAL;
    sqlite3_reset(q);
    buf_release(&hb);
    if (r < 0)
        return r;
    h->audit_target = "sla_calendar";
    struct jw w;
    out_begin(h, &w);
    cal_write(h, &w, &cal);
    return out_end(h, &w);
}

/* ---------- one ticket's status ---------- */

#define AT_RISK_FRACTION 0.2

/* Delay past a deadline of a clock that ended at `end` (0: still running, measured to now). */
static int64_t delay_ms(int64_t deadline, int64_t end, int64_t now)
{
    int64_t at = end ? end : now;
    return at > deadline ? at - deadline : 0;
}

static int ticket_status(struct hctx *h)
{
    const char *id = http_param_get(h->req, "ticket_id");
    struct desk_ticket t;
    int r = desk_ticket_find(h, id, "ticket_id", &t);
    if (r < 0)
        return r;
    struct sla_row s;
    if (!sla_row_get(h->app->db, h->tenant_id, t.id, &s))
        return fail(h, TS_E_NOT_FOUND, "ticket_id", "the ticket has no SLA record");
    int64_t now = clock_now_ms();
    int64_t resp_end = s.first_response_at ? s.first_response_at : s.resolved_at;
    int64_t reso_end = s.paused_since; /* the clock is stopped there (resolved included) */
    int64_t rdelay = delay_ms(s.response_deadline, resp_end, now);
    int64_t sdelay = s.resolution_breached_at && s.resolved_at
                         ? delay_ms(s.resolution_deadline, s.resolved_at, now)
                         : delay_ms(s.resolution_deadline, reso_end, now);
    const char *status = "compliant";
    if (s.response_breached_at || s.resolution_breached_at || rdelay > 0 || sdelay > 0) {
        status = "breached";
    } else {
        static struct sla_cal cal;
        cal_load(h->app->db, h->tenant_id, &cal);
        bool risk = false;
        if (!resp_end) {
            int64_t left = bizhours_between(&cal.c, now, s.response_deadline);
            risk = left < AT_RISK_FRACTION * s.response_hours * HOUR_MS;
        }
        if (!s.resolved_at) {
            int64_t left = bizhours_between(&cal.c, reso_end ? reso_end : now,
                                            s.resolution_deadline);
            risk = risk || left < AT_RISK_FRACTION * s.resolution_hours * HOUR_MS;
        }
        if (risk)
            status = "at_risk";
    }
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "ticket_id", t.id);
    jw_kstr(&w, "ticket_number", t.number);
    jw_kstr(&w, "sla_status", status);
    jw_kiso(&w, "response_deadline", s.response_deadline);
    jw_kiso(&w, "resolution_deadline", s.resolution_deadline);
    jw_kdouble(&w, "response_delay_hours", hours_of(rdelay));
    jw_kdouble(&w, "resolution_delay_hours", hours_of(sdelay));
    jw_kdouble(&w, "response_time_hours", s.response_hours);
    jw_kdouble(&w, "resolution_time_hours", s.resolution_hours);
    jw_kbool(&w, "paused", s.paused_since != 0 && !s.resolved_at);
    jw_kiso(&w, "first_response_at", s.first_response_at);
    jw_kiso(&w, "resolved_at", s.resolved_at);
    jw_kiso(&w, "response_breached_at", s.response_breached_at);
    jw_kiso(&w, "resolution_breached_at", s.resolution_breached_at);
    return out_end(h, &w);
}

/* ---------- breaches (pool) ---------- */

static const char SQL_BREACHES_COUNT[] =
    "SELECT (SELECT count(*) FROM ticket_sla WHERE tenant_id = ?1 AND response_breached_at >= ?2 "
    "AND response_breached_at < ?3) + (SELECT count(*) FROM ticket_sla WHERE tenant_id = ?1 AND "
    "resolution_breached_at >= ?2 AND resolution_breached_at < ?3)";
static const char SQL_BREACHES_PAGE[] =
    "SELECT s.ticket_id, t.number, t.title, t.type, t.priority, t.status, t.assignee_id, b.kind, "
    "b.deadline, b.at FROM (SELECT ticket_id, 'response' AS kind, response_deadline AS deadline, "
    "response_breached_at AS at FROM ticket_sla WHERE tenant_id = ?1 AND response_breached_at >= ?2 "
    "AND response_breached_at < ?3 UNION ALL SELECT ticket_id, 'resolution', resolution_deadline, "
    "resolution_breached_at FROM ticket_sla WHERE tenant_id = ?1 AND resolution_breached_at >= ?2 "
    "AND resolution_breached_at < ?3) AS b JOIN ticket_sla s ON s.ticket_id = b.ticket_id "
    "JOIN tickets t ON t.id = b.ticket_id AND t.tenant_id = ?1 "
    "ORDER BY b.at DESC, b.ticket_id, b.kind LIMIT ?4 OFFSET ?5";

static int date_query(struct hctx *h, const char *name, int32_t *ret, bool *ret_set)
{
    const char *v = http_query_get(h->req, name);
    *ret_set = v != NULL;
    if (v && !date_parse(v, ret))
        return fail(h, TS_E_VALIDATION, name, "must be a date YYYY-MM-DD");
    return 0;
}

static int breaches(struct hctx *h)
{
    int32_t sd = 0, ed = 0;
    bool has_s = false, has_e = false;
    int page, limit;
    int r = date_query(h, "start_date", &sd, &has_s);
    if (r == 0)
        r = date_query(h, "end_date", &ed, &has_e);
    if (r == 0 && has_s && has_e && ed < sd)
        r = fail(h, TS_E_VALIDATION, "end_date", "must not be before start_date");
    if (r == 0)
        r = query_int(h, "page", 1, 1, 1000000, &page);
    if (r == 0)
        r = query_int(h, "limit", 50, 1, 200, &limit);
    if (r < 0)
        return r;
    /* whole UTC days: [start_date 00:00, end_date + 1 00:00) */
    int64_t from = has_s ? sd * BIZ_DAY_MS : 0, to = has_e ? (ed + 1) * BIZ_DAY_MS : INT64_MAX;
    sqlite3 *db = h->db; /* a pool reader: prepared per call */
    sqlite3_stmt *c;
    if (sqlite3_prepare_v2(db, SQL_BREACHES_COUNT, -1, &c, NULL) != SQLITE_OK)
        return TS_E_INTERNAL;
    sqlite3_bind_text(c, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(c, 2, from);
    sqlite3_bind_int64(c, 3, to);
    int64_t total = sqlite3_step(c) == SQLITE_ROW ? sqlite3_column_int64(c, 0) : 0;
    sqlite3_finalize(c);
    if (sqlite3_prepare_v2(db, SQL_BREACHES_PAGE, -1, &c, NULL) != SQLITE_OK)
        return TS_E_INTERNAL;
    sqlite3_bind_text(c, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(c, 2, from);
    sqlite3_bind_int64(c, 3, to);
    sqlite3_bind_int(c, 4, limit);
    sqlite3_bind_int64(c, 5, (int64_t)(page - 1) * limit);
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "breaches");
    jw_arr_open(&w);
    while (sqlite3_step(c) == SQLITE_ROW) {
        char number[DESK_TICKET_NUMBER_LEN];
        desk_ticket_number(sqlite3_column_int64(c, 1), number);
        int64_t deadline = sqlite3_column_int64(c, 8), at = sqlite3_column_int64(c, 9);
        jw_obj_open(&w);
        jw_kstr(&w, "ticket_id", col_text(c, 0));
        jw_kstr(&w, "ticket_number", number);
        jw_kstr(&w, "ticket_title", col_text(c, 2));
        jw_kstr(&w, "ticket_type", col_text(c, 3));
        jw_kstr(&w, "priority", col_text(c, 4));
        jw_kstr(&w, "status", col_text(c, 5));
        jw_kstr(&w, "assignee_id", (const char *)sqlite3_column_text(c, 6));
        jw_kstr(&w, "breach_type", col_text(c, 7));
        jw_kiso(&w, "deadline", deadline);
        jw_kiso(&w, "breached_at", at);
        jw_obj_close(&w);
    }
    sqlite3_finalize(c);
    jw_arr_close(&w);
    jw_kint(&w, "total", total);
    jw_kint(&w, "page", page);
    jw_kint(&w, "limit", limit);
    return out_end(h, &w);
}

/* ---------- metrics (pool) ---------- */

static const char SQL_METRICS[] =
    "SELECT count(*), coalesce(sum(response_breached_at IS NULL AND resolution_breached_at IS NULL), 0), "
    "avg(first_response_at - created_at), avg(resolved_at - created_at), "
    "coalesce(sum((response_breached_at IS NOT NULL) + (resolution_breached_at IS NOT NULL)), 0) "
    "FROM ticket_sla WHERE tenant_id = ? AND created_at >= ?";

static int period_days(struct hctx *h, int *ret)
{
    const char *v = http_query_get(h->req, "period");
    if (!v) {
        *ret = 30;
        return 0;
    }
    int n = 0, len = 0;
    if (sscanf(v, "%3dd%n", &n, &len) != 1 || len != (int)strlen(v) || v[0] < '0' ||
        v[0] > '9' || n < 1 || n > 365)
        return fail(h, TS_E_VALIDATION, "period", "must be Nd with N from 1 to 365, e.g. 30d");
    *ret = n;
    return 0;
}

static void kdouble_or_null(struct jw *w, const char *k, sqlite3_stmt *c, int col, double scale)
{
    jw_key(w, k);
    if (sqlite3_column_type(c, col) == SQLITE_NULL)
        jw_null(w);
    else
        jw_double(w, round2(sqlite3_column_double(c, col) / scale));
}

static int metrics(struct hctx *h)
{
    int days = 30;
    int r = period_days(h, &days);
    if (r < 0)
        return r;
    int64_t since = clock_now_ms() - (int64_t)days * BIZ_DAY_MS;
    sqlite3_stmt *c;
    if (sqlite3_prepare_v2(h->db, SQL_METRICS, -1, &c, NULL) != SQLITE_OK)
        return TS_E_INTERNAL;
    sqlite3_bind_text(c, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(c, 2, since);
    if (sqlite3_step(c) != SQLITE_ROW) {
        sqlite3_finalize(c);
        return TS_E_INTERNAL;
    }
    int64_t n = sqlite3_column_int64(c, 0), ok = sqlite3_column_int64(c, 1);
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "compliance_rate");
    if (n == 0)
        jw_null(&w);
    else
        jw_double(&w, round2(100.0 * (double)ok / (double)n));
    kdouble_or_null(&w, "average_response_time_hours", c, 2, HOUR_MS);
    kdouble_or_null(&w, "average_resolution_time_hours", c, 3, HOUR_MS);
    jw_kint(&w, "breach_count", sqlite3_column_int64(c, 4));
    jw_kint(&w, "ticket_count", n);
    jw_kstr(&w, "period", arena_printf(h->arena, "%dd", days));
    sqlite3_finalize(c);
    return out_end(h, &w);
}

/* ---------- live breach feed ---------- */

static const struct ws_handlers live_handlers = {NULL, NULL, NULL}; /* server pushes only */

static int live(struct hctx *h)
{
    const char *channel = arena_printf(h->arena, "desk:%s:sla", h->tenant_id);
    return ws_upgrade(h->req, h->app->hub, channel, NULL, &live_handlers, NULL);
}

static const struct route routes[] = {
    {"GET", "/api/v1/sla/rules", rules_get, "sla.read", "default", RUN_LOOP, 0, 0},
    {"PUT", "/api/v1/sla/rules", rules_put, "sla.admin", "default", RUN_LOOP, 0, RF_JSON_BODY},
    {"GET", "/api/v1/sla/calendar", calendar_get, "sla.read", "default", RUN_LOOP, 0, 0},
    {"PUT", "/api/v1/sla/calendar", calendar_put, "sla.admin", "default", RUN_LOOP, 0,
     RF_JSON_BODY},
    {"GET", "/api/v1/sla/tickets/{ticket_id}", ticket_status, "sla.read", "default", RUN_LOOP, 0,
     0},
    {"GET", "/api/v1/sla/breaches", breaches, "sla.admin", "default", RUN_POOL, 0, 0},
    {"GET", "/api/v1/sla/metrics", metrics, "sla.read", "default", RUN_POOL, 0, 0},
    {"GET", "/ws/sla", live, "sla.read", "default", RUN_LOOP, 0, RF_WEBSOCKET},
};

const struct route_table desk_sla_table = {SURF_DESK, routes, sizeof(routes) / sizeof(routes[0])};
