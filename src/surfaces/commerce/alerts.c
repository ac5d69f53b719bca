/* commerce.md section 3.3: alert rules, their evaluation and the alert lifecycle.
 *
 * Definitions (also in README.md, "### Dashboards and alerts"):
 * - A rule watches one metric query with a relative time_window (e.g. "24h") that ends when it
 *   is evaluated; its value is the query's summary total. It trips when value <comparison>
 *   threshold (eq: equal within 1e-9 relative).
 * - Rules of a tenant are evaluated DEBOUNCE_MS after records of the tenant were ingested (or a
 *   rule was created or changed), and every PERIOD_MS (first at start) for every tenant with an
 *   enabled rule; never sooner after the tenant's last evaluation than CM_PACE_FACTOR times as
 *   long as it ran (common.h). The figures are read in the worker pool; the alert rows are
 *   written back on the loop, in the tick's transaction.
 * - A rule that trips while it has no open (active or acknowledged) alert opens one, active.
 *   While it stays tripped its open alert's current_value follows the figure. When it no
 *   longer trips, the open alert (acknowledged or not) is resolved. Disabling or deleting a
 *   rule resolves its open alert; alerts are kept after their rule is deleted.
 * - Acknowledging an active alert records the caller: a user's email, or "api_key:<name>"
 *   for an API key. Acknowledging an acknowledged alert answers it as it is; a resolved one
 *   is 409 CONFLICT. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"
#include "jobs/pool.h"
#include "store/db.h"
#include "surfaces/commerce/common.h"
#include "surfaces/commerce/dashboards.h"
#include "surfaces/commerce/metrics.h"

#define RULES_MAX 500               /* per tenant */
#define NAME_MAX_LEN 200
#define DESC_MAX_LEN 2000
#define QUERY_MAX 16384
#define WINDOW_MAX 32
#define DEBOUNCE_MS 500
#define RETRY_MS 1000
#define PERIOD_MS 60000
#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define SCRATCH_MAX (8u << 20)      /* a rule query's MetricsResponse, read for its total */

static const char *const comparisons[] = {"gt", "gte", "lt", "lte", "eq", NULL};
static const char *const severities[] = {"low", "medium", "high", "critical", NULL};
static const char *const statuses[] = {"active", "acknowledged", "resolved", NULL};

#define RULE_COLS                                                                              \
    "rule_id, name, description, query, metric_type, comparison, threshold, severity, enabled, " \
    "created_by, created_at, updated_at, last_evaluated_at, last_value, last_error"
static const char SQL_RULE_GET[] =
    "SELECT " RULE_COLS " FROM cm_alert_rules WHERE rule_id = ?1 AND tenant_id = ?2";
static const char SQL_RULE_LIST[] =
    "SELECT " RULE_COLS " FROM cm_alert_rules WHERE tenant_id = ?1 "
    "ORDER BY created_at, rule_id LIMIT 500";
static const char SQL_RULE_COUNT[] = "SELECT count(*) FROM cm_alert_rules WHERE tenant_id = ?";
static const char SQL_RULE_INSERT[] =
    "INSERT INTO cm_alert_rules(tenant_id, rule_id, name, description, query, metric_type,"
    " comparison, threshold, severity, enabled, created_by, created_at, updated_at)"
    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)";
static const char SQL_RULE_UPDATE[] =
    "UPDATE cm_alert_rules SET name = ?3, description = ?4, query = ?5, metric_type = ?6,"
    " comparison = ?7, threshold = ?8, severity = ?9, enabled = ?10, updated_at = ?12"
    " WHERE tenant_id = ?1 AND rule_id = ?2";
static const char SQL_RULE_DELETE[] =
    "DELETE FROM cm_alert_rules WHERE tenant_id = ?1 AND rule_id = ?2";
static const char SQL_RULES_ENABLED[] =
    "SELECT rule_id, query, updated_at FROM cm_alert_rules WHERE tenant_id = ?1 AND enabled = 1 "
    "ORDER BY rule_id LIMIT 500";
static const char SQL_RULE_FOR_APPLY[] =
    "SELECT name, metric_type, comparison, threshold, severity, enabled, updated_at "
    "FROM cm_alert_rules WHERE tenant_id = ?1 AND rule_id = ?2";
static const char SQL_RULE_EVALUATED[] =
    "UPDATE cm_alert_rules SET last_evaluated_at = ?3, last_value = ?4, last_error = ?5 "
    "WHERE tenant_id = ?1 AND rule_id = ?2";
static const char SQL_TENANTS_WITH_RULES[] =
    "SELECT DISTINCT tenant_id FROM cm_alert_rules WHERE enabled = 1 LIMIT 10000";
static const char SQL_OPEN_GET[] =
    "SELECT alert_id FROM cm_alerts WHERE tenant_id = ?1 AND rule_id = ?2 "
    "AND status IN ('active','acknowledged')";
static const char SQL_ALERT_INSERT[] =
    "INSERT INTO cm_alerts(tenant_id, alert_id, rule_id, title, description, severity, status,"
    " metric_type, comparison, threshold_value, current_value, created_at, updated_at)"
    " VALUES(?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7, ?8, ?9, ?10, ?11, ?11)";
static const char SQL_ALERT_VALUE[] =
    "UPDATE cm_alerts SET current_value = ?3, updated_at = ?4 WHERE tenant_id = ?1 "
    "AND alert_id = ?2";
static const char SQL_ALERT_RESOLVE[] =
    "UPDATE cm_alerts SET status = 'resolved', resolved_at = ?3, updated_at = ?3,"
    " current_value = coalesce(?4, current_value) "
    "WHERE tenant_id = ?1 AND rule_id = ?2 AND status IN ('active','acknowledged')";
#define ALERT_COLS                                                                              \
    "alert_id, rule_id, title, description, severity, status, metric_type, comparison, "         \
    "threshold_value, current_value, created_at, updated_at, acknowledged_at, acknowledged_by, " \
    "resolved_at"
static const char SQL_ALERT_GET[] =
    "SELECT " ALERT_COLS " FROM cm_alerts WHERE alert_id = ?1 AND tenant_id = ?2";
static const char SQL_ALERT_ACK[] =
    "UPDATE cm_alerts SET status = 'acknowledged', acknowledged_at = ?3, acknowledged_by = ?4,"
    " acknowledged_by_id = ?5, updated_at = ?3 "
    "WHERE tenant_id = ?1 AND alert_id = ?2 AND status = 'active'";
static const char SQL_ALERT_LIST[] =
    "SELECT " ALERT_COLS " FROM cm_alerts WHERE tenant_id = ?1 AND (?2 IS NULL OR severity = ?2)"
    " AND (?3 IS NULL OR status = ?3) ORDER BY created_at DESC, alert_id DESC LIMIT ?4";
static const char SQL_ALERT_SUMMARY[] =
    "SELECT status, severity, count(*) FROM cm_alerts WHERE tenant_id = ?1"
    " AND (?2 IS NULL OR severity = ?2) AND (?3 IS NULL OR status = ?3) GROUP BY 1, 2";
static const char SQL_USER_EMAIL[] = "SELECT email FROM users WHERE id = ?1 AND tenant_id = ?2";
static const char SQL_KEY_NAME[] = "SELECT name FROM api_keys WHERE id = ?1 AND tenant_id = ?2";

static bool trips(double value, const char *cmp, double threshold)
{
    if (!strcmp(cmp, "gt"))
        return value > threshold;
    if (!strcmp(cmp, "gte"))
        return value >= threshold;
    if (!strcmp(cmp, "lt"))
        return value < threshold;
    if (!strcmp(cmp, "lte"))
        return value <= threshold;
    return fabs(value - threshold) <= 1e-9 * fmax(1.0, fabs(threshold));
}

static const char *cmp_words(const char *cmp)
{
    return !strcmp(cmp, "gt")    ? "above"
           : !strcmp(cmp, "gte") ? "at or above"
           : !strcmp(cmp, "lt")  ? "below"
           : !strcmp(cmp, "lte") ? "at or below"
                                 : "equal to";
}

/* ---------- evaluation state (loop thread) ---------- */

struct tstate {
    struct tstate *next;
    char tenant_id[UUID_STR_LEN];
    bool marked;             /* evaluate when the debounce timer fires */
    bool busy;               /* an evaluation is in the pool */
    uint64_t not_before_ns;  /* the next evaluation, paced by the last one's cost */
};

static struct {
    bool started;
    struct app *app;
    uv_timer_t debounce, period;
    struct tstate *tenants;
} st;

static struct tstate *tstate_get(const char *tenant)
{
    for (struct tstate *t = st.tenants; t; t = t->next)
        if (!strcmp(t->tenant_id, tenant))
            return t;
    struct tstate *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    snprintf(t->tenant_id, sizeof(t->tenant_id), "%s", tenant);
    t->next = st.tenants;
    st.tenants = t;
    return t;
}

static void debounce_cb(uv_timer_t *t);

/* Fires in ms, or sooner if it is armed for sooner. */
static void debounce_arm(uint64_t ms)
{
    if (st.started)
        cm_timer_arm_sooner(&st.debounce, debounce_cb, ms);
}

/* The tenant's rules are evaluated shortly (after this tick's records commit). */
static void tenant_mark(const char *tenant)
{
    if (!st.started)
        return;
    struct tstate *t = tstate_get(tenant);
    if (t == NULL)
        return;
    t->marked = true;
    debounce_arm(DEBOUNCE_MS);
}

void cm_alerts_on_ingest(struct app *app, const char *tenant_id)
{
    (void)app;
    tenant_mark(tenant_id);
}

/* ---------- evaluation (pool) ---------- */

struct rule_result {
    char rule_id[UUID_STR_LEN + 28];
    char time_window[WINDOW_MAX];
    int64_t updated_at;
    double value;
    int status;
    char error[256];
};

struct alert_task {
    struct pool_task task;
    struct tstate *t;
    char tenant_id[UUID_STR_LEN];
    int64_t now;
    uint64_t started_ns, ended_ns; /* the work's run, for the pacing */
    int n;
    struct rule_result r[RULES_MAX];
};

static void rule_eval(sqlite3 *db, const char *tenant, const char *query_text, int64_t now,
                      struct rule_result *res)
{
    json_t *qo = json_loads(query_text, 0, NULL);
    struct arena *a = arena_new(4096);
    struct cm_metric_query q;
    const char *field = "query", *msg = "not a JSON object";
    const char *win = json_string_value(json_object_get(qo, "time_window"));
    snprintf(res->time_window, sizeof(res->time_window), "%s", win ? win : "");
    if (!json_is_object(qo) || cm_metric_query_from_json(qo, now, a, &q, &field, &msg) < 0) {
        res->status = TS_E_VALIDATION;
        snprintf(res->error, sizeof(res->error), "query.%s: %s", field, msg);
    } else {
        struct buf b;
        buf_init(&b, SCRATCH_MAX);
        struct jw w;
        jw_init(&w, &b);
        struct cm_metric_result mr = {0};
        res->status = cm_metric_eval(db, tenant, &q, false, &w, &mr, res->error, sizeof(res->error));
        res->value = mr.total;
        if (res->status < 0 && !res->error[0])
            snprintf(res->error, sizeof(res->error), "%s", err_message(res->status));
        buf_release(&b);
    }
    arena_free(a);
    json_decref(qo);
}

static void task_work(struct pool_task *pt, struct pool_worker *w)
{
    struct alert_task *t = (struct alert_task *)pt;
    sqlite3_stmt *q;
    t->started_ns = t->ended_ns = clock_mono_ns();
    if (w->db == NULL || sqlite3_prepare_v2(w->db, SQL_RULES_ENABLED, -1, &q, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(q, 1, t->tenant_id, -1, SQLITE_STATIC);
    while (t->n < RULES_MAX && sqlite3_step(q) == SQLITE_ROW) {
        struct rule_result *r = &t->r[t->n++];
        snprintf(r->rule_id, sizeof(r->rule_id), "%s", col_text(q, 0));
        r->updated_at = sqlite3_column_int64(q, 2);
        rule_eval(w->db, t->tenant_id, col_text(q, 1), t->now, r);
    }
    sqlite3_finalize(q);
    t->ended_ns = clock_mono_ns();
}

static int alert_open(struct db *db, const char *tenant, const struct rule_result *res,
                      sqlite3_stmt *rule, int64_t now)
{
    char id[UUID_STR_LEN], desc[512];
    id_uuid7(id);
    const char *metric = col_text(rule, 1), *cmp = col_text(rule, 2);
    snprintf(desc, sizeof(desc), "%s%s%s is %.10g, %s the threshold %.10g", metric,
             res->time_window[0] ? " over the last " : "", res->time_window, res->value,
             cmp_words(cmp), sqlite3_column_double(rule, 3));
    sqlite3_stmt *q = db_stmt(db, SQL_ALERT_INSERT);
    sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 3, res->rule_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, col_text(rule, 0), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 5, desc, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 6, col_text(rule, 4), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 7, metric, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 8, cmp, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(q, 9, sqlite3_column_double(rule, 3));
    sqlite3_bind_double(q, 10, res->value);
    sqlite3_bind_int64(q, 11, now);
    return cm__step_ok(q);
}

/* The rule's open alert follows its figure: opened, updated or resolved. */
static int alert_follow(struct db *db, const char *tenant, const struct rule_result *res,
                        sqlite3_stmt *rule, int64_t now)
{
    bool tripped = trips(res->value, col_text(rule, 2), sqlite3_column_double(rule, 3));
    sqlite3_stmt *q = db_stmt(db, SQL_OPEN_GET);
    sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, res->rule_id, -1, SQLITE_STATIC);
    char open[UUID_STR_LEN] = "";
    if (sqlite3_step(q) == SQLITE_ROW)
        snprintf(open, sizeof(open), "%s", col_text(q, 0));
    sqlite3_reset(q);
    if (tripped && !open[0])
        return alert_open(db, tenant, res, rule, now);
    if (tripped) {
        q = db_stmt(db, SQL_ALERT_VALUE);
        sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, open, -1, SQLITE_STATIC);
        sqlite3_bind_double(q, 3, res->value);
        sqlite3_bind_int64(q, 4, now);
        return cm__step_ok(q);
    }
    if (!open[0])
        return 0;
    q = db_stmt(db, SQL_ALERT_RESOLVE);
    sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, res->rule_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, now);
    sqlite3_bind_double(q, 4, res->value);
    return cm__step_ok(q);
}

/* One rule's result, unless the rule changed (or went) while it was evaluated: that change
 * marked the tenant again, so a fresh result follows. */
static int result_apply(struct db *db, const char *tenant, const struct rule_result *res,
                        int64_t now)
{
    sqlite3_stmt *rule = db_stmt(db, SQL_RULE_FOR_APPLY);
    sqlite3_bind_text(rule, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(rule, 2, res->rule_id, -1, SQLITE_STATIC);
    if (sqlite3_step(rule) != SQLITE_ROW || !sqlite3_column_int(rule, 5) ||
        sqlite3_column_int64(rule, 6) != res->updated_at) {
        sqlite3_reset(rule);
        return 0;
    }
    sqlite3_stmt *q = db_stmt(db, SQL_RULE_EVALUATED);
    sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, res->rule_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, now);
    if (res->status == 0)
        sqlite3_bind_double(q, 4, res->value);
    else
        sqlite3_bind_null(q, 4);
    sqlite3_bind_text(q, 5, res->status == 0 ? NULL : res->error, -1, SQLITE_STATIC);
    int r = cm__step_ok(q);
    if (r == 0 && res->status == 0)
        r = alert_follow(db, tenant, res, rule, now);
    sqlite3_reset(rule);
    return r;
}

static void tenant_kick(struct tstate *t);

static void task_done(struct pool_task *pt, int status)
{
    struct alert_task *t = (struct alert_task *)pt;
    if (!st.started || status < 0 || st.app->draining) {
        if (st.started)
            t->t->busy = false;
        free(t);
        return;
    }
    struct db *db = st.app->db;
    db_request_start(db);
    int r = db_write_begin(db);
    for (int i = 0; i < t->n && r == 0; i++)
        r = result_apply(db, t->tenant_id, &t->r[i], t->now);
    db_request_end(db, r == 0);
    if (r < 0) {
        log_msg(LOG_WARN, "alerts: cannot record the evaluation of tenant %s: %s", t->tenant_id,
                err_message(r));
        t->t->marked = true; /* busy database: the retry timer tries again */
        debounce_arm(RETRY_MS);
    }
    t->t->busy = false;
    t->t->not_before_ns = cm_pace_until_ns(t->started_ns, t->ended_ns);
    if (t->t->marked && !uv_is_active((uv_handle_t *)&st.debounce))
        tenant_kick(t->t);
    free(t);
}

static void tenant_kick(struct tstate *t)
{
    if (!st.started || st.app->draining || t->busy || !t->marked)
        return;
    uint64_t now = clock_mono_ns();
    if (now < t->not_before_ns) {
        debounce_arm((t->not_before_ns - now) / 1000000 + 1);
        return;
    }
    struct alert_task *task = calloc(1, sizeof(*task));
    if (task == NULL) {
        debounce_arm(RETRY_MS);
        return;
    }
    task->t = t;
    snprintf(task->tenant_id, sizeof(task->tenant_id), "%s", t->tenant_id);
    task->now = clock_now_ms();
    task->task.work = task_work;
    task->task.done = task_done;
    if (pool_submit(st.app->bg_pool, &task->task) < 0) {
        free(task);
        debounce_arm(RETRY_MS);
        return;
    }
    t->marked = false;
    t->busy = true;
}

static void debounce_cb(uv_timer_t *timer)
{
    (void)timer;
    if (!st.started || st.app->draining)
        return;
    for (struct tstate *t = st.tenants; t; t = t->next)
        tenant_kick(t);
}

/* Every tenant with an enabled rule, so windows that move past old records are seen too. */
static void period_cb(uv_timer_t *timer)
{
    (void)timer;
    if (!st.started || st.app->draining)
        return;
    sqlite3_stmt *q = db_stmt(st.app->db, SQL_TENANTS_WITH_RULES);
    while (sqlite3_step(q) == SQLITE_ROW) {
        struct tstate *t = tstate_get(col_text(q, 0));
        if (t)
            t->marked = true;
    }
    sqlite3_reset(q);
    for (struct tstate *t = st.tenants; t; t = t->next)
        tenant_kick(t);
}

/* ---------- rules: JSON and validation ---------- */

static void jw_kdouble_or_null(struct jw *w, const char *k, sqlite3_stmt *q, int col)
{
    jw_key(w, k);
    if (sqlite3_column_type(q, col) == SQLITE_NULL)
        jw_null(w);
    else
        jw_double(w, sqlite3_column_double(q, col));
}

static void rule_json(struct hctx *h, struct jw *w, sqlite3_stmt *q)
{
    (void)h;
    jw_obj_open(w);
    jw_kstr(w, "rule_id", col_text(q, 0));
    jw_kstr(w, "name", col_text(q, 1));
    jw_kstr(w, "description", col_text(q, 2));
    jw_key(w, "query");
    jw_raw(w, col_text(q, 3));
    jw_kstr(w, "metric_type", col_text(q, 4));
    jw_kstr(w, "comparison", col_text(q, 5));
    jw_kdouble(w, "threshold", sqlite3_column_double(q, 6));
    jw_kstr(w, "severity", col_text(q, 7));
    jw_kbool(w, "enabled", sqlite3_column_int(q, 8));
    jw_kstr(w, "created_by", (const char *)sqlite3_column_text(q, 9));
    jw_kiso(w, "created_at", sqlite3_column_int64(q, 10));
    jw_kiso(w, "updated_at", sqlite3_column_int64(q, 11));
    jw_kiso(w, "last_evaluated_at", sqlite3_column_int64(q, 12));
    jw_kdouble_or_null(w, "last_value", q, 13);
    jw_kstr(w, "last_error", (const char *)sqlite3_column_text(q, 14));
    jw_obj_close(w);
}

/* Answers the rule as the whole (enveloped) body, or 404. */
static int rule_answer(struct hctx *h, const char *id)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_RULE_GET);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    int r;
    if (sqlite3_step(q) == SQLITE_ROW) {
        struct jw w;
        cm_ok_begin(h, &w);
        rule_json(h, &w, q);
        r = cm_ok_end(h, &w);
    } else {
        r = fail(h, TS_E_NOT_FOUND, "rule_id", "alert rule not found");
    }
    sqlite3_reset(q);
    return r;
}

struct rule {
    const char *name, *description, *query, *metric_type, *comparison, *severity;
    double threshold;
    bool enabled;
};

static void rule_query_parse(struct hctx *h, const json_t *qo, struct rule *r)
{
    if (!json_is_object(qo)) {
        cm__ferr(h, "query", "query must be a metric query object", qo);
        return;
    }
    char *text = json_dumps(qo, JSON_COMPACT);
    if (text == NULL || strlen(text) > QUERY_MAX) {
        cm__ferr(h, "query", arena_printf(h->arena, "query is larger than %d bytes", QUERY_MAX), NULL);
        free(text);
        return;
    }
    r->query = arena_strdup(h->arena, text);
    free(text);
    json_t *win = json_object_get(qo, "time_window");
    if (json_object_get(qo, "time_range"))
        cm__ferr(h, "query.time_range",
                 "an alert rule watches a window ending when it is evaluated: give time_window, "
                 "not time_range", json_object_get(qo, "time_range"));
    else if (!json_is_string(win))
        cm__ferr(h, "query.time_window", "query.time_window is required (e.g. \"24h\", \"7d\")", win);
    else if (json_string_length(win) >= WINDOW_MAX)
        cm__ferr(h, "query.time_window", "query.time_window is too long", win);
    else
        cm__query_check(h, qo, "query");
    const char *metric = json_string_value(json_object_get(qo, "metric_type"));
    r->metric_type = metric ? arena_strdup(h->arena, metric) : r->metric_type;
}

static void enum_member(struct hctx *h, const json_t *b, const char *name, const char *const *set,
                        const char *words, bool required, const char **ret)
{
    const char *v = NULL;
    int bad = required ? cm__req_string(h, b, NULL, name, 32, &v)
                       : cm__opt_string(h, b, NULL, name, 1, 32, &v);
    if (bad || v == NULL)
        return;
    if (cm__one_of(v, set))
        *ret = v;
    else
        cm__ferr(h, name, arena_printf(h->arena, "%s must be one of %s", name, words),
                 json_object_get(b, name));
}

/* Applies the body to r: on create every required field; on update the fields given. */
static int rule_parse(struct hctx *h, struct rule *r, bool create)
{
    const json_t *b = h->body;
    if (create)
        cm__req_string(h, b, NULL, "name", NAME_MAX_LEN, &r->name);
    else
        cm__opt_string(h, b, NULL, "name", 1, NAME_MAX_LEN, &r->name);
    cm__opt_string(h, b, NULL, "description", 0, DESC_MAX_LEN, &r->description);
    json_t *qo = json_object_get(b, "query");
    if (qo)
        rule_query_parse(h, qo, r);
    else if (create)
        cm__ferr(h, "query", "query is required", NULL);
    enum_member(h, b, "comparison", comparisons, "gt, gte, lt, lte, eq", create, &r->comparison);
    enum_member(h, b, "severity", severities, "low, medium, high, critical", create, &r->severity);
    json_t *th = json_object_get(b, "threshold");
    if (th && (!json_is_number(th) || !isfinite(json_number_value(th))))
        cm__ferr(h, "threshold", "threshold must be a number", th);
    else if (th)
        r->threshold = json_number_value(th);
    else if (create)
        cm__ferr(h, "threshold", "threshold is required", NULL);
    json_t *en = json_object_get(b, "enabled");
    if (en && !json_is_boolean(en))
        cm__ferr(h, "enabled", "enabled must be true or false", en);
    else if (en)
        r->enabled = json_is_true(en);
    if (h->nferrs > 0) {
        h->err_message = "Request validation failed";
        return TS_E_VALIDATION;
    }
    return 0;
}

static int rule_store(struct hctx *h, const char *id, const struct rule *r, bool create,
                      int64_t now)
{
    sqlite3_stmt *q = db_stmt(h->app->db, create ? SQL_RULE_INSERT : SQL_RULE_UPDATE);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, r->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, r->description ? r->description : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, r->query, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, r->metric_type, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, r->comparison, -1, SQLITE_STATIC);
    sqlite3_bind_double(q, 8, r->threshold);
    sqlite3_bind_text(q, 9, r->severity, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 10, r->enabled);
    if (create)
        sqlite3_bind_text(q, 11, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 12, now);
    return cm__step_ok(q);
}

static int open_alerts_resolve(struct hctx *h, const char *rule_id, int64_t now)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_ALERT_RESOLVE);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, rule_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, now);
    sqlite3_bind_null(q, 4);
    return cm__step_ok(q);
}

/* ---------- rules: routes ---------- */

static int rule_create(struct hctx *h)
{
    struct rule r = {.enabled = true};
    int rc = rule_parse(h, &r, true);
    if (rc < 0)
        return rc;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_RULE_COUNT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    int64_t n = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_reset(q);
    if (n >= RULES_MAX)
        return fail(h, TS_E_UNPROCESSABLE, NULL,
                    arena_printf(h->arena, "a tenant has at most %d alert rules", RULES_MAX));
    char id[UUID_STR_LEN];
    id_uuid7(id);
    rc = db_write_begin(h->app->db);
    if (rc == 0)
        rc = rule_store(h, id, &r, true, clock_now_ms());
    if (rc < 0)
        return rc;
    tenant_mark(h->tenant_id);
    h->status = 201;
    h->audit_target = arena_strdup(h->arena, id);
    return rule_answer(h, id);
}

/* The stored rule named by the path, as a struct rule in the arena; or 404. */
static int rule_load(struct hctx *h, const char *id, struct rule *r)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_RULE_GET);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_reset(q);
        return fail(h, TS_E_NOT_FOUND, "rule_id", "alert rule not found");
    }
    r->name = arena_strdup(h->arena, col_text(q, 1));
    r->description = arena_strdup(h->arena, col_text(q, 2));
    r->query = arena_strdup(h->arena, col_text(q, 3));
    r->metric_type = arena_strdup(h->arena, col_text(q, 4));
    r->comparison = arena_strdup(h->arena, col_text(q, 5));
    r->threshold = sqlite3_column_double(q, 6);
    r->severity = arena_strdup(h->arena, col_text(q, 7));
    r->enabled = sqlite3_column_int(q, 8);
    sqlite3_reset(q);
    return 0;
}

static int rule_update(struct hctx *h)
{
    const char *id = http_param_get(h->req, "rule_id");
    struct rule r;
    int rc = rule_load(h, id, &r);
    if (rc == 0)
        rc = rule_parse(h, &r, false);
    if (rc == 0)
        rc = db_write_begin(h->app->db);
    int64_t now = clock_now_ms();
    if (rc == 0)
        rc = rule_store(h, id, &r, false, now);
    if (rc == 0 && !r.enabled)
        rc = open_alerts_resolve(h, id, now); /* nothing watches them any more */
    if (rc < 0)
        return rc;
    tenant_mark(h->tenant_id);
    return rule_answer(h, id);
}

static int rule_delete(struct hctx *h)
{
    const char *id = http_param_get(h->req, "rule_id");
    struct rule r;
    int rc = rule_load(h, id, &r);
    if (rc == 0)
        rc = db_write_begin(h->app->db);
    if (rc == 0)
        rc = open_alerts_resolve(h, id, clock_now_ms());
    if (rc == 0) {
        sqlite3_stmt *q = db_stmt(h->app->db, SQL_RULE_DELETE);
        sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
        rc = cm__step_ok(q);
    }
    if (rc < 0)
        return rc;
    h->status = 204;
    return 0;
}

static int rule_get(struct hctx *h)
{
    return rule_answer(h, http_param_get(h->req, "rule_id"));
}

static int rule_list(struct hctx *h)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_RULE_LIST);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    struct jw w;
    cm_ok_begin(h, &w);
    jw_obj_open(&w);
    jw_key(&w, "rules");
    jw_arr_open(&w);
    int n = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        rule_json(h, &w, q);
        n++;
    }
    sqlite3_reset(q);
    jw_arr_close(&w);
    jw_kint(&w, "total", n);
    jw_obj_close(&w);
    return cm_ok_end(h, &w);
}

/* ---------- alerts ---------- */

static void alert_json(struct jw *w, sqlite3_stmt *q)
{
    jw_obj_open(w);
    jw_kstr(w, "alert_id", col_text(q, 0));
    jw_kstr(w, "rule_id", col_text(q, 1));
    jw_kstr(w, "title", col_text(q, 2));
    jw_kstr(w, "description", col_text(q, 3));
    jw_kstr(w, "severity", col_text(q, 4));
    jw_kstr(w, "status", col_text(q, 5));
    jw_kstr(w, "metric_type", col_text(q, 6));
    jw_kstr(w, "comparison", col_text(q, 7));
    jw_kdouble(w, "threshold_value", sqlite3_column_double(q, 8));
    jw_kdouble(w, "current_value", sqlite3_column_double(q, 9));
    jw_kiso(w, "created_at", sqlite3_column_int64(q, 10));
    jw_kiso(w, "updated_at", sqlite3_column_int64(q, 11));
    if (sqlite3_column_type(q, 12) != SQLITE_NULL) { /* optional in the contract: absent */
        jw_kiso(w, "acknowledged_at", sqlite3_column_int64(q, 12));
        jw_kstr(w, "acknowledged_by", col_text(q, 13));
    }
    if (sqlite3_column_type(q, 14) != SQLITE_NULL)
        jw_kiso(w, "resolved_at", sqlite3_column_int64(q, 14));
    jw_obj_close(w);
}

struct list_args {
    const char *severity, *status;
    int limit;
};

static int list_args_parse(struct hctx *h, struct list_args *a)
{
    struct cm_query q;
    int r = cm_query_parse(h, &q);
    if (r < 0)
        return r;
    a->severity = cm_param(h, &q, NULL, "severity");
    a->status = cm_param(h, &q, NULL, "status");
    const char *limit = cm_param(h, &q, NULL, "limit");
    if (a->severity && !cm__one_of(a->severity, severities))
        return fail(h, TS_E_VALIDATION, "severity", "severity must be one of low, medium, high, critical");
    if (a->status && !cm__one_of(a->status, statuses))
        return fail(h, TS_E_VALIDATION, "status", "status must be one of active, acknowledged, resolved");
    a->limit = LIST_DEFAULT;
    if (limit) {
        char *end;
        long v = strtol(limit, &end, 10);
        if (!limit[0] || *end || v < 1 || v > LIST_MAX)
            return fail(h, TS_E_VALIDATION, "limit", "limit must be an integer in 1..1000");
        a->limit = (int)v;
    }
    return 0;
}

static void summary_json(struct jw *w, sqlite3_stmt *q)
{
    int64_t by_status[3] = {0}, by_sev[4] = {0}, total = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        int64_t n = sqlite3_column_int64(q, 2);
        for (int i = 0; statuses[i]; i++)
            if (!strcmp(col_text(q, 0), statuses[i]))
                by_status[i] += n;
        for (int i = 0; severities[i]; i++)
            if (!strcmp(col_text(q, 1), severities[i]))
                by_sev[i] += n;
        total += n;
    }
    jw_obj_open(w);
    jw_kint(w, "total", total);
    jw_key(w, "by_status");
    jw_obj_open(w);
    for (int i = 0; statuses[i]; i++)
        jw_kint(w, statuses[i], by_status[i]);
    jw_obj_close(w);
    jw_key(w, "by_severity");
    jw_obj_open(w);
    for (int i = 0; severities[i]; i++)
        jw_kint(w, severities[i], by_sev[i]);
    jw_obj_close(w);
    jw_obj_close(w);
}

static void bind_filters(sqlite3_stmt *q, const char *tenant, const struct list_args *a)
{
    sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, a->severity, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, a->status, -1, SQLITE_STATIC);
}

/* Pool: the newest `limit` alerts of the filter and the counts of all of them. */
static int alert_list(struct hctx *h)
{
    struct list_args a;
    int r = list_args_parse(h, &a);
    if (r < 0)
        return r;
    sqlite3_stmt *list, *sum;
    if (sqlite3_prepare_v2(h->db, SQL_ALERT_LIST, -1, &list, NULL) != SQLITE_OK)
        return TS_E_INTERNAL;
    if (sqlite3_prepare_v2(h->db, SQL_ALERT_SUMMARY, -1, &sum, NULL) != SQLITE_OK) {
        sqlite3_finalize(list);
        return TS_E_INTERNAL;
    }
    bind_filters(list, h->tenant_id, &a);
    sqlite3_bind_int(list, 4, a.limit);
    bind_filters(sum, h->tenant_id, &a);
    struct jw w;
    cm_ok_begin(h, &w);
    jw_obj_open(&w);
    jw_key(&w, "alerts");
    jw_arr_open(&w);
    while (sqlite3_step(list) == SQLITE_ROW)
        alert_json(&w, list);
    jw_arr_close(&w);
    jw_key(&w, "summary");
    summary_json(&w, sum);
    jw_obj_close(&w);
    sqlite3_finalize(list);
    sqlite3_finalize(sum);
    return cm_ok_end(h, &w);
}

/* Who acknowledges: the user's email, or api_key:<name>. */
static const char *caller_name(struct hctx *h)
{
    bool key = h->who.kind == PRINCIPAL_API_KEY;
    sqlite3_stmt *q = db_stmt(h->app->db, key ? SQL_KEY_NAME : SQL_USER_EMAIL);
    sqlite3_bind_text(q, 1, key ? h->who.key_id : h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    const char *name = NULL;
    if (sqlite3_step(q) == SQLITE_ROW)
        name = key ? arena_printf(h->arena, "api_key:%s", col_text(q, 0))
                   : arena_strdup(h->arena, col_text(q, 0));
    sqlite3_reset(q);
    if (name == NULL)
        name = key ? arena_printf(h->arena, "api_key:%s", h->who.key_id) : h->user_id;
    return name;
}

static int alert_ack(struct hctx *h)
{
    const char *id = http_param_get(h->req, "alert_id");
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_ALERT_GET);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    char status[16] = "";
    if (rc == SQLITE_ROW)
        snprintf(status, sizeof(status), "%s", col_text(q, 5));
    sqlite3_reset(q);
    if (rc != SQLITE_ROW)
        return fail(h, TS_E_NOT_FOUND, "alert_id", "alert not found");
    if (!strcmp(status, "resolved"))
        return fail(h, TS_E_CONFLICT, "alert_id", "the alert is resolved: nothing to acknowledge");
    if (!strcmp(status, "active")) {
        int r = db_write_begin(h->app->db);
        if (r < 0)
            return r;
        sqlite3_stmt *u = db_stmt(h->app->db, SQL_ALERT_ACK);
        sqlite3_bind_text(u, 1, h->tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(u, 2, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(u, 3, clock_now_ms());
        sqlite3_bind_text(u, 4, caller_name(h), -1, SQLITE_STATIC);
        sqlite3_bind_text(u, 5, h->who.kind == PRINCIPAL_API_KEY ? h->who.key_id : h->user_id,
                          -1, SQLITE_STATIC);
        if ((r = cm__step_ok(u)) < 0)
            return r;
    }
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_reset(q);
        return TS_E_INTERNAL;
    }
    struct jw w;
    cm_ok_begin(h, &w);
    jw_obj_open(&w);
    jw_kstr(&w, "alert_id", col_text(q, 0));
    jw_kstr(&w, "status", col_text(q, 5));
    jw_kiso(&w, "acknowledged_at", sqlite3_column_int64(q, 12));
    jw_kstr(&w, "acknowledged_by", col_text(q, 13));
    jw_obj_close(&w);
    sqlite3_reset(q);
    return cm_ok_end(h, &w);
}

/* ---------- start, stop, routes ---------- */

void cm_alerts_start(struct app *app)
{
    st.app = app;
    uv_timer_init(app->loop, &st.debounce);
    uv_timer_init(app->loop, &st.period);
    st.started = true;
    uv_timer_start(&st.period, period_cb, 0, PERIOD_MS);
    cm_dashboards_start(app);
}

void cm_alerts_stop(void)
{
    cm_dashboards_stop();
    if (!st.started)
        return;
    st.started = false;
    uv_timer_stop(&st.debounce);
    uv_timer_stop(&st.period);
    uv_close((uv_handle_t *)&st.debounce, NULL);
    uv_close((uv_handle_t *)&st.period, NULL);
    while (st.tenants) {
        struct tstate *t = st.tenants;
        st.tenants = t->next;
        free(t);
    }
}

static const struct route routes[] = {
    {"GET", "/api/v1/alerts", alert_list, "commerce.read", "commerce", RUN_POOL, 0, 0},
    {"POST", "/api/v1/alerts/{alert_id}/acknowledge", alert_ack, "commerce.alerts.ack",
     "commerce", RUN_LOOP, 0, 0},
    {"GET", "/api/v1/alerts/rules", rule_list, "commerce.read", "commerce", RUN_LOOP, 0, 0},
    {"POST", "/api/v1/alerts/rules", rule_create, "commerce.alerts.rules", "commerce", RUN_LOOP,
     0, RF_JSON_BODY},
    {"GET", "/api/v1/alerts/rules/{rule_id}", rule_get, "commerce.read", "commerce", RUN_LOOP, 0,
     0},
    {"PUT", "/api/v1/alerts/rules/{rule_id}", rule_update, "commerce.alerts.rules", "commerce",
     RUN_LOOP, 0, RF_JSON_BODY},
    {"DELETE", "/api/v1/alerts/rules/{rule_id}", rule_delete, "commerce.alerts.rules",
     "commerce", RUN_LOOP, 0, 0},
};

const struct route_table commerce_alerts_table = {SURF_COMMERCE, routes,
                                                  sizeof(routes) / sizeof(routes[0])};
