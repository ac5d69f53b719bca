/* Recs usage: per-tenant counters in memory flushed to rc_usage_daily each second, monthly
 * api_calls quotas by plan, and GET /api/v1/usage. */
#include "surfaces/recs/usage.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "core/log.h"
#include "store/db.h"

#define TENANT_ID_MAX 64
#define PENDING_DAYS 4      /* distinct UTC days between two flushes (a day rolls over once) */
#define PLAN_TTL_MS 1000    /* a changed tenants.plan is seen within this */
#define FLUSH_MS 1000
#define MAX_RANGE_DAYS 366  /* GET /usage period cap */

struct day_count {
    int32_t day;            /* days since 1970-01-01; 0 = unused slot */
    int64_t api_calls, recommendations, items;
    double latency_sum;
    int64_t latency_n;
};

/* One tenant's counters. month_calls is authoritative for quotas: loaded at start from
 * rc_usage_daily (this month) and counted up in memory since, so a quota check never reads
 * the table. */
struct tenant_usage {
    char tenant_id[TENANT_ID_MAX];
    int32_t month;          /* year * 12 + month - 1 that month_calls counts */
    int64_t month_calls;
    struct day_count pending[PENDING_DAYS];
    bool dirty;
    char plan[24];
    int64_t plan_at_ms;     /* when plan was read; 0 = never */
};

static struct {
    pthread_mutex_t mu;
    struct tenant_usage **slots; /* open addressing, power of two */
    size_t cap, n;
    struct app *app;
    uv_timer_t timer;
    bool running;
} U = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* ---------- days and months ---------- */

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

static int32_t day_of_ms(int64_t ms)
{
    int64_t d = ms / 86400000;
    if (ms < 0 && ms % 86400000)
        d--;
    return (int32_t)d;
}

static int32_t month_of_day(int32_t day)
{
    int y, m, d;
    civil_from_days(day, &y, &m, &d);
    return y * 12 + m - 1;
}

static int32_t month_first_day(int32_t month)
{
    return (int32_t)clock_days_from_civil(month / 12, month % 12 + 1, 1);
}

static void day_format(int32_t day, char out[16])
{
    int y, m, d;
    civil_from_days(day, &y, &m, &d);
    snprintf(out, 16, "%04d-%02d-%02d", y, m, d);
}

/* ---------- the table (caller holds U.mu) ---------- */

static uint64_t str_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

static bool table_grow(void)
{
    size_t cap = U.cap ? U.cap * 2 : 64;
    struct tenant_usage **slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return false;
    for (size_t i = 0; i < U.cap; i++) {
        struct tenant_usage *t = U.slots[i];
        if (t == NULL)
            continue;
        size_t j = str_hash(t->tenant_id) & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = t;
    }
    free(U.slots);
    U.slots = slots;
    U.cap = cap;
    return true;
}

/* The tenant's entry, created (month_calls 0) when absent; NULL on allocation failure. A month
 * other than the entry's starts its count from zero; month < 0 leaves the count alone. */
static struct tenant_usage *tenant_get(const char *tenant_id, int32_t month)
{
    if (tenant_id == NULL || strlen(tenant_id) >= TENANT_ID_MAX)
        return NULL;
    if (U.n * 2 >= U.cap && !table_grow())
        return NULL;
    size_t j = str_hash(tenant_id) & (U.cap - 1);
    for (; U.slots[j]; j = (j + 1) & (U.cap - 1))
        if (strcmp(U.slots[j]->tenant_id, tenant_id) == 0) {
            struct tenant_usage *t = U.slots[j];
            if (month >= 0 && t->month != month) { /* a new month starts from zero */
                t->month = month;
                t->month_calls = 0;
            }
            return t;
        }
    struct tenant_usage *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    snprintf(t->tenant_id, sizeof(t->tenant_id), "%s", tenant_id);
    t->month = month >= 0 ? month : month_of_day(day_of_ms(clock_now_ms()));
    U.slots[j] = t;
    U.n++;
    return t;
}

static struct day_count *pending_slot(struct tenant_usage *t, int32_t day)
{
    struct day_count *latest = &t->pending[0];
    for (int i = 0; i < PENDING_DAYS; i++) {
        if (t->pending[i].day == day)
            return &t->pending[i];
        if (t->pending[i].day == 0) {
            t->pending[i].day = day;
            return &t->pending[i];
        }
        if (t->pending[i].day > latest->day)
            latest = &t->pending[i];
    }
    return latest; /* more days than slots without a flush: the newest one takes it */
}

static void pending_add(struct tenant_usage *t, const struct day_count *c)
{
    struct day_count *p = pending_slot(t, c->day);
    p->api_calls += c->api_calls;
    p->recommendations += c->recommendations;
    p->items += c->items;
    p->latency_sum += c->latency_sum;
    p->latency_n += c->latency_n;
    t->dirty = true;
}

/* ---------- counting ---------- */

void recs_usage_add(const char *tenant_id, int api_calls, int recommendations, int items_indexed,
                    double latency_ms)
{
    int32_t day = day_of_ms(clock_now_ms());
    struct day_count c = {day, api_calls > 0 ? api_calls : 0,
                          recommendations > 0 ? recommendations : 0,
                          items_indexed > 0 ? items_indexed : 0, latency_ms >= 0 ? latency_ms : 0,
                          latency_ms >= 0};
    pthread_mutex_lock(&U.mu);
    struct tenant_usage *t = tenant_get(tenant_id, month_of_day(day));
    if (t) {
        pending_add(t, &c);
        t->month_calls += c.api_calls;
    }
    pthread_mutex_unlock(&U.mu);
    if (t == NULL)
        log_msg(LOG_WARN, "recs usage: counts of tenant %s dropped (out of memory)",
                tenant_id ? tenant_id : "-");
}

double recs_elapsed_ms(const struct hctx *h)
{
    if (h->req == NULL)
        return -1;
    return (double)(clock_mono_ns() - h->req->start_ns) / 1e6;
}

int64_t recs_plan_limit(const struct app *app, const char *plan)
{
    const struct config *c = app->cfg;
    if (plan && !strcmp(plan, "pro"))
        return c->recs_quota_pro;
    if (plan && !strcmp(plan, "enterprise"))
        return c->recs_quota_enterprise;
    return c->recs_quota_starter;
}

static const char SQL_PLAN[] = "SELECT plan FROM tenants WHERE id = ?1";

/* tenants.plan through h's connection (writer on the loop, the worker's reader in the pool). */
static void plan_read(struct hctx *h, char out[24])
{
    snprintf(out, 24, "starter");
    sqlite3_stmt *q = NULL;
    bool cached = h->app && h->app->db && h->db == db_handle(h->app->db);
    if (cached)
        q = db_stmt(h->app->db, SQL_PLAN);
    else if (sqlite3_prepare_v2(h->db, SQL_PLAN, -1, &q, NULL) != SQLITE_OK)
        q = NULL;
    if (q == NULL)
        return;
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW)
        snprintf(out, 24, "%s", col_text(q, 0));
    if (cached)
        sqlite3_reset(q);
    else
        sqlite3_finalize(q);
}

/* The plan (refreshed after PLAN_TTL_MS) and this month's calls of h's tenant. */
static void quota_state(struct hctx *h, char plan[24], int64_t *ret_used)
{
    int64_t now = clock_now_ms();
    int32_t month = month_of_day(day_of_ms(now));
    bool fresh = false;
    pthread_mutex_lock(&U.mu);
    struct tenant_usage *t = tenant_get(h->tenant_id, month);
    if (t && t->plan_at_ms && now - t->plan_at_ms < PLAN_TTL_MS && now >= t->plan_at_ms) {
        memcpy(plan, t->plan, 24);
        fresh = true;
    }
    *ret_used = t ? t->month_calls : 0;
    pthread_mutex_unlock(&U.mu);
    if (fresh)
        return;
    plan_read(h, plan); /* outside the lock: a read may take a moment */
    pthread_mutex_lock(&U.mu);
    t = tenant_get(h->tenant_id, month);
    if (t) {
        memcpy(t->plan, plan, 24);
        t->plan_at_ms = now;
        *ret_used = t->month_calls;
    }
    pthread_mutex_unlock(&U.mu);
}

int recs_quota_check(struct hctx *h)
{
    char plan[24];
    int64_t used;
    quota_state(h, plan, &used);
    int64_t limit = recs_plan_limit(h->app, plan);
    if (limit <= 0 || used < limit)
        return 0;
    /* calls in flight may pass together at the edge; the overshoot is at most their number */
    return fail(h, TS_E_QUOTA, NULL,
                arena_printf(h->arena,
                             "monthly API call quota of the %s plan used up: %lld of %lld calls "
                             "this month (UTC); it resets on the 1st",
                             plan, (long long)used, (long long)limit));
}

/* ---------- flushing ---------- */

static const char SQL_FLUSH[] =
    "INSERT INTO rc_usage_daily(tenant_id, day, api_calls, recommendations_served, "
    "items_indexed, latency_ms_sum, latency_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
    "ON CONFLICT(tenant_id, day) DO UPDATE SET api_calls = api_calls + excluded.api_calls, "
    "recommendations_served = recommendations_served + excluded.recommendations_served, "
    "items_indexed = items_indexed + excluded.items_indexed, "
    "latency_ms_sum = latency_ms_sum + excluded.latency_ms_sum, "
    "latency_count = latency_count + excluded.latency_count";

struct flush_row {
    char tenant_id[TENANT_ID_MAX];
    struct day_count c;
};

/* Takes every pending count out of the table (under the lock) into a new array. */
static struct flush_row *pending_take(size_t *ret_n)
{
    size_t n = 0, cap = 0;
    struct flush_row *rows = NULL;
    pthread_mutex_lock(&U.mu);
    for (size_t i = 0; i < U.cap; i++) {
        struct tenant_usage *t = U.slots[i];
        if (t == NULL || !t->dirty)
            continue;
        for (int d = 0; d < PENDING_DAYS; d++) {
            if (t->pending[d].day == 0)
                continue;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 16;
                struct flush_row *nr = realloc(rows, nc * sizeof(*rows));
                if (nr == NULL)
                    goto out; /* the rest stays pending for the next flush */
                rows = nr;
                cap = nc;
            }
            memcpy(rows[n].tenant_id, t->tenant_id, TENANT_ID_MAX);
            rows[n++].c = t->pending[d];
            memset(&t->pending[d], 0, sizeof(t->pending[d]));
        }
        t->dirty = false;
    }
out:
    pthread_mutex_unlock(&U.mu);
    *ret_n = n;
    return rows;
}

/* Puts counts that could not be written back in the table. */
static void pending_return(const struct flush_row *rows, size_t n)
{
    pthread_mutex_lock(&U.mu);
    for (size_t i = 0; i < n; i++) {
        struct tenant_usage *t = tenant_get(rows[i].tenant_id, -1);
        if (t)
            pending_add(t, &rows[i].c); /* month_calls counted them already */
    }
    pthread_mutex_unlock(&U.mu);
}

static int flush_row_write(struct db *db, const struct flush_row *row)
{
    char day[16];
    day_format(row->c.day, day);
    sqlite3_stmt *q = db_stmt(db, SQL_FLUSH);
    if (q == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(q, 1, row->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, day, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, row->c.api_calls);
    sqlite3_bind_int64(q, 4, row->c.recommendations);
    sqlite3_bind_int64(q, 5, row->c.items);
    sqlite3_bind_double(q, 6, row->c.latency_sum);
    sqlite3_bind_int64(q, 7, row->c.latency_n);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

/* Writes the pending counts in the tick's transaction, all under one savepoint. Loop thread. */
static void usage_flush(struct db *db)
{
    size_t n;
    struct flush_row *rows = pending_take(&n);
    if (n == 0) {
        free(rows);
        return;
    }
    int r = db_write_begin(db);
    if (r == 0) {
        db_request_start(db);
        for (size_t i = 0; i < n && r == 0; i++)
            r = flush_row_write(db, &rows[i]);
        r = db_request_end(db, r == 0) < 0 && r == 0 ? TS_E_INTERNAL : r;
    }
    if (r < 0) {
        log_msg(LOG_WARN, "recs usage: flush of %zu rows failed (%s); retrying", n,
                err_message(r));
        pending_return(rows, n);
    }
    free(rows);
}

static void flush_timer_cb(uv_timer_t *t)
{
    struct app *app = t->data;
    usage_flush(app->db);
}

static const char SQL_MONTH_LOAD[] =
    "SELECT tenant_id, SUM(api_calls) FROM rc_usage_daily WHERE day >= ?1 AND day <= ?2 "
    "GROUP BY tenant_id";

/* This month's flushed api calls per tenant, so quotas hold across restarts. */
static int month_load(struct db *db)
{
    int32_t today = day_of_ms(clock_now_ms());
    int32_t month = month_of_day(today);
    char first[16], last[16];
    day_format(month_first_day(month), first);
    day_format(month_first_day(month + 1) - 1, last);
    sqlite3_stmt *q = db_stmt(db, SQL_MONTH_LOAD);
    if (q == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(q, 1, first, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 2, last, -1, SQLITE_TRANSIENT);
    int rc;
    pthread_mutex_lock(&U.mu);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct tenant_usage *t = tenant_get(col_text(q, 0), month);
        if (t)
            t->month_calls = sqlite3_column_int64(q, 1);
    }
    pthread_mutex_unlock(&U.mu);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

int recs_usage_start(struct app *app)
{
    U.app = app;
    int r = month_load(app->db);
    if (r < 0)
        log_msg(LOG_WARN, "recs usage: cannot load this month's counts: %s", err_message(r));
    uv_timer_init(app->loop, &U.timer);
    U.timer.data = app;
    uv_timer_start(&U.timer, flush_timer_cb, FLUSH_MS, FLUSH_MS);
    U.running = true;
    return r;
}

void recs_usage_stop(void)
{
    if (!U.running)
        return;
    U.running = false;
    uv_timer_stop(&U.timer);
    uv_close((uv_handle_t *)&U.timer, NULL);
    usage_flush(U.app->db); /* committed when the database closes */
}

/* ---------- GET /api/v1/usage ---------- */

/* A YYYY-MM-DD or ISO 8601 date-time parameter as its UTC day. 1 absent, 0 ok, <0 failed. */
static int date_param(struct hctx *h, const char *name, int32_t *ret_day)
{
    const char *v = http_query_get(h->req, name);
    if (v == NULL || *v == '\0')
        return 1;
    int64_t ms;
    if (strlen(v) > 40 || clock_parse_iso8601(v, &ms) < 0)
        return fail(h, TS_E_VALIDATION, name, "must be a date YYYY-MM-DD or an ISO 8601 time");
    *ret_day = day_of_ms(ms);
    return 0;
}

/* Start and end days of the asked period: the current UTC month when neither is given;
 * one alone is completed to the end (or start) of its month. */
static int usage_period(struct hctx *h, int32_t *ret_start, int32_t *ret_end)
{
    int32_t start = 0, end = 0;
    int rs = date_param(h, "start_date", &start);
    if (rs < 0)
        return rs;
    int re = date_param(h, "end_date", &end);
    if (re < 0)
        return re;
    int32_t today = day_of_ms(clock_now_ms());
    if (rs == 1 && re == 1) {
        start = month_first_day(month_of_day(today));
        end = month_first_day(month_of_day(today) + 1) - 1;
    } else if (rs == 1) {
        start = month_first_day(month_of_day(end));
    } else if (re == 1) {
        end = month_first_day(month_of_day(start) + 1) - 1;
    }
    if (end < start)
        return fail(h, TS_E_VALIDATION, "end_date", "must not be before start_date");
    if (end - start + 1 > MAX_RANGE_DAYS)
        return fail(h, TS_E_VALIDATION, "end_date", "the period may span at most 366 days");
    *ret_start = start;
    *ret_end = end;
    return 0;
}

static const char SQL_USAGE_SUM[] =
    "SELECT COALESCE(SUM(api_calls), 0), COALESCE(SUM(recommendations_served), 0), "
    "COALESCE(SUM(items_indexed), 0), COALESCE(SUM(latency_ms_sum), 0), "
    "COALESCE(SUM(latency_count), 0) FROM rc_usage_daily "
    "WHERE tenant_id = ?1 AND day >= ?2 AND day <= ?3";

/* Flushed counts of the period from the table plus what is still pending in memory. */
static int usage_sum(struct hctx *h, int32_t start, int32_t end, struct day_count *ret)
{
    char a[16], b[16];
    day_format(start, a);
    day_format(end, b);
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_USAGE_SUM);
    if (q == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, a, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 3, b, -1, SQLITE_TRANSIENT);
    struct day_count s = {0};
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        s.api_calls = sqlite3_column_int64(q, 0);
        s.recommendations = sqlite3_column_int64(q, 1);
        s.items = sqlite3_column_int64(q, 2);
        s.latency_sum = sqlite3_column_double(q, 3);
        s.latency_n = sqlite3_column_int64(q, 4);
    }
    sqlite3_reset(q);
    if (rc != SQLITE_ROW)
        return db_err(rc);
    pthread_mutex_lock(&U.mu);
    struct tenant_usage *t = tenant_get(h->tenant_id, month_of_day(day_of_ms(clock_now_ms())));
    for (int i = 0; t && i < PENDING_DAYS; i++) {
        const struct day_count *p = &t->pending[i];
        if (p->day == 0 || p->day < start || p->day > end)
            continue;
        s.api_calls += p->api_calls;
        s.recommendations += p->recommendations;
        s.items += p->items;
        s.latency_sum += p->latency_sum;
        s.latency_n += p->latency_n;
    }
    pthread_mutex_unlock(&U.mu);
    *ret = s;
    return 0;
}

static double round2(double x)
{
    return (double)(int64_t)(x * 100 + (x >= 0 ? 0.5 : -0.5)) / 100;
}

/* The quota object: this UTC month's calls against the plan's limit (null when unlimited). */
static void quota_write(struct hctx *h, struct jw *w)
{
    char plan[24];
    int64_t used;
    quota_state(h, plan, &used);
    int64_t limit = recs_plan_limit(h->app, plan);
    jw_key(w, "quota");
    jw_obj_open(w);
    jw_kstr(w, "plan", plan);
    jw_key(w, "api_calls_limit");
    if (limit > 0)
        jw_int(w, limit);
    else
        jw_null(w);
    jw_kint(w, "api_calls_used", used);
    jw_key(w, "percentage_used");
    if (limit > 0)
        jw_double(w, round2(100.0 * (double)used / (double)limit));
    else
        jw_null(w);
    jw_obj_close(w);
}

/* Counted before it reads, so the answer includes this call. Not quota-checked: a tenant
 * over its quota must still be able to see why. */
int recs_usage_get(struct hctx *h)
{
    recs_usage_add(h->tenant_id, 1, 0, 0, -1);
    int32_t start = 0, end = 0;
    int r = usage_period(h, &start, &end);
    struct day_count s = {0};
    if (r == 0)
        r = usage_sum(h, start, end, &s);
    if (r < 0)
        return r;
    char a[16], b[16];
    day_format(start, a);
    day_format(end, b);
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "period");
    jw_obj_open(&w);
    jw_kstr(&w, "start", a);
    jw_kstr(&w, "end", b);
    jw_obj_close(&w);
    jw_key(&w, "metrics");
    jw_obj_open(&w);
    jw_kint(&w, "api_calls", s.api_calls);
    jw_kint(&w, "recommendations_served", s.recommendations);
    jw_kint(&w, "items_indexed", s.items);
    jw_kdouble(&w, "average_latency_ms", s.latency_n ? round2(s.latency_sum / s.latency_n) : 0);
    jw_obj_close(&w);
    quota_write(h, &w);
    return out_end(h, &w);
}
