/* desk staging workflow: environments, deployments of approved tickets, their status changes
 * (pending -> in_progress -> completed | failed), rollbacks, and each deployment's history. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "store/db.h"
#include "surfaces/desk/desk.h"

#define NAME_MAX_LEN 64
#define URL_MAX 2048
#define VERSION_MAX 64
#define NOTES_MAX 5000
#define REASON_MAX 2000
#define ENVIRONMENTS_MAX 200      /* per tenant */
#define PAGE_MAX 100

static const char SQL_ENV_COLUMNS_LIST[] =
    "SELECT id, name, status, url, current_deployment_id, created_at, updated_at "
    "FROM staging_environments WHERE tenant_id = ? ORDER BY name";
static const char SQL_ENV_GET[] =
    "SELECT id, name, status, url, current_deployment_id, created_at, updated_at "
    "FROM staging_environments WHERE id = ? AND tenant_id = ?";
static const char SQL_ENV_COUNT[] = "SELECT count(*) FROM staging_environments WHERE tenant_id = ?";
static const char SQL_ENV_INSERT[] =
    "INSERT INTO staging_environments(tenant_id, id, name, status, url, created_at, updated_at) "
    "VALUES(?,?,?,?,?,?,?)";
static const char SQL_ENV_SET[] =
    "UPDATE staging_environments SET status = ?, current_deployment_id = ?, updated_at = ? "
    "WHERE id = ? AND tenant_id = ?";

#define DEPLOYMENT_COLUMNS                                                                     \
    "d.id, d.ticket_id, t.number, d.environment_id, e.name, d.approval_id, d.version, "       \
    "d.status, d.deployment_notes, d.requested_by, d.created_at, d.updated_at, "              \
    "d.completed_at, d.rollback_reason"
#define DEPLOYMENT_FROM                                                                        \
    " FROM staging_deployments d JOIN tickets t ON t.id = d.ticket_id "                       \
    "JOIN staging_environments e ON e.id = d.environment_id "

static const char SQL_DEP_GET[] =
    "SELECT " DEPLOYMENT_COLUMNS DEPLOYMENT_FROM "WHERE d.id = ? AND d.tenant_id = ?";
static const char SQL_DEP_FILTER_COUNT[] =
    "SELECT count(*) FROM staging_deployments d WHERE d.tenant_id = ?1 "
    "AND (?2 IS NULL OR d.status = ?2) AND (?3 IS NULL OR d.environment_id = ?3) "
    "AND (?4 IS NULL OR d.ticket_id = ?4)";
static const char SQL_DEP_PAGE[] =
    "SELECT " DEPLOYMENT_COLUMNS DEPLOYMENT_FROM "WHERE d.tenant_id = ?1 "
    "AND (?2 IS NULL OR d.status = ?2) AND (?3 IS NULL OR d.environment_id = ?3) "
    "AND (?4 IS NULL OR d.ticket_id = ?4) "
    "ORDER BY d.created_at DESC, d.id DESC LIMIT ?5 OFFSET ?6";
static const char SQL_DEP_ACTIVE[] =
    "SELECT id FROM staging_deployments WHERE tenant_id = ? AND environment_id = ? "
    "AND status IN ('pending','in_progress')";
static const char SQL_LATEST_APPROVAL[] =
    "SELECT id, status FROM approval_requests WHERE tenant_id = ? AND ticket_id = ? "
    "ORDER BY created_at DESC, id DESC LIMIT 1";
static const char SQL_DEP_INSERT[] =
    "INSERT INTO staging_deployments(tenant_id, id, ticket_id, environment_id, approval_id, "
    "version, status, deployment_notes, requested_by, created_at, updated_at) "
    "VALUES(?,?,?,?,?,?,'pending',?,?,?,?)";
static const char SQL_DEP_SET[] =
    "UPDATE staging_deployments SET status = ?3, updated_at = ?4, "
    "completed_at = CASE WHEN ?3 IN ('completed','failed') THEN ?4 ELSE completed_at END, "
    "rollback_reason = coalesce(?5, rollback_reason) WHERE id = ?1 AND tenant_id = ?2";
static const char SQL_HIST_ADD[] =
    "INSERT INTO staging_deployment_history(tenant_id, id, deployment_id, actor_id, "
    "from_status, to_status, notes, created_at) VALUES(?,?,?,?,?,?,?,?)";
static const char SQL_HIST_LIST[] =
    "SELECT id, actor_id, from_status, to_status, notes, created_at "
    "FROM staging_deployment_history WHERE tenant_id = ? AND deployment_id = ? "
    "ORDER BY created_at, id";

/* ---- checks ---- */

static bool name_valid(const char *s)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
            return false;
    return true;
}

static bool url_valid(const char *u)
{
    return (!strncmp(u, "https://", 8) || !strncmp(u, "http://", 7)) && !strpbrk(u, " \t\r\n\"<>");
}

/* dot-separated [0-9A-Za-z-]+ identifiers (semver pre-release and build parts) */
static const char *idents_skip(const char *p)
{
    for (;;) {
        const char *start = p;
        while (isalnum((unsigned char)*p) || *p == '-')
            p++;
        if (p == start)
            return NULL;
        if (*p != '.')
            return p;
        p++;
    }
}

/* Semver-ish: an optional "v", MAJOR.MINOR or MAJOR.MINOR.PATCH (at most 9 digits each), then
 * optional "-pre.release" and "+build" parts. */
static bool version_valid(const char *v)
{
    const char *p = v[0] == 'v' ? v + 1 : v;
    int parts = 0;
    for (;;) {
        size_t n = 0;
        while (isdigit((unsigned char)p[n]))
            n++;
        if (n == 0 || n > 9)
            return false;
        p += n;
        parts++;
        if (*p != '.' || parts == 3)
            break;
        p++;
    }
    if (parts < 2)
        return false;
    if (*p == '-' && (p = idents_skip(p + 1)) == NULL)
        return false;
    if (*p == '+' && (p = idents_skip(p + 1)) == NULL)
        return false;
    return *p == '\0';
}

/* ---- environments ---- */

static void env_json(struct jw *w, sqlite3_stmt *q)
{
    jw_obj_open(w);
    jw_kstr(w, "id", col_text(q, 0));
    jw_kstr(w, "name", col_text(q, 1));
    jw_kstr(w, "status", col_text(q, 2));
    jw_kstr(w, "url", (const char *)sqlite3_column_text(q, 3));
    jw_kstr(w, "current_deployment_id", (const char *)sqlite3_column_text(q, 4));
    jw_kiso(w, "created_at", sqlite3_column_int64(q, 5));
    jw_kiso(w, "updated_at", sqlite3_column_int64(q, 6));
    jw_obj_close(w);
}

static int environments_list(struct hctx *h)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_ENV_COLUMNS_LIST);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "environments");
    jw_arr_open(&w);
    int n = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        env_json(&w, q);
        n++;
    }
    sqlite3_reset(q);
    jw_arr_close(&w);
    jw_kint(&w, "total", n);
    return out_end(h, &w);
}

static int env_count(struct hctx *h)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_ENV_COUNT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    int n = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : 0;
    sqlite3_reset(q);
    return n;
}

static int env_insert(sqlite3_stmt *q, const char *tenant_id, const char *id, const char *name,
                      const char *status, const char *url)
{
    int64_t now = clock_now_ms();
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, url, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 6, now);
    sqlite3_bind_int64(q, 7, now);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc;
}

static int env_write(struct hctx *h, const char *id)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_ENV_GET);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_reset(q);
        return TS_E_INTERNAL;
    }
    h->out.len = 0;
    struct jw w;
    jw_init(&w, &h->out);
    env_json(&w, q);
    sqlite3_reset(q);
    return jw_finish(&w) < 0 ? TS_E_INTERNAL : 0;
}

static int environment_create(struct hctx *h)
{
    const char *name, *url, *status;
    int r = body_string(h, "name", NAME_MAX_LEN, true, &name);
    if (r == 0 && !name_valid(name))
        r = fail(h, TS_E_VALIDATION, "name", "name takes letters, digits, '-', '_' and '.'");
    if (r == 0)
        r = body_string(h, "url", URL_MAX, false, &url);
    if (r == 0 && url && !url_valid(url))
        r = fail(h, TS_E_VALIDATION, "url", "url must be an http(s) URL");
    if (r == 0)
        r = body_string(h, "status", 16, false, &status);
    if (r == 0 && status && strcmp(status, "available") && strcmp(status, "maintenance"))
        r = fail(h, TS_E_VALIDATION, "status", "a new environment is available or maintenance");
    if (r == 0 && env_count(h) >= ENVIRONMENTS_MAX)
        r = fail(h, TS_E_UNPROCESSABLE, "name",
                 arena_printf(h->arena, "at most %d environments per organization",
                              ENVIRONMENTS_MAX));
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    char id[UUID_STR_LEN];
    id_uuid7(id);
    int rc = env_insert(db_stmt(h->app->db, SQL_ENV_INSERT), h->tenant_id, id, name,
                        status ? status : "available", url);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return fail(h, TS_E_CONFLICT, "name", "an environment with this name exists");
    if (rc != SQLITE_DONE)
        return TS_E_INTERNAL;
    h->audit_target = arena_strdup(h->arena, id);
    h->status = 201;
    return env_write(h, id);
}

int desk_staging_seed_demo(sqlite3 *db, const char *tenant_id)
{
    static const char *const names[] = {"staging-1", "staging-2"};
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, SQL_ENV_INSERT, -1, &q, NULL) != SQLITE_OK)
        return TS_E_INTERNAL;
    int r = 0;
    for (size_t i = 0; r == 0 && i < sizeof(names) / sizeof(names[0]); i++) {
        char id[UUID_STR_LEN];
        id_uuid7(id);
        if (env_insert(q, tenant_id, id, names[i], "available", NULL) != SQLITE_DONE)
            r = TS_E_INTERNAL;
    }
    sqlite3_finalize(q);
    return r;
}

/* ---- deployments ---- */

struct deployment {
    char id[UUID_STR_LEN], ticket_id[UUID_STR_LEN], environment_id[UUID_STR_LEN];
    char requested_by[UUID_STR_LEN], status[16], env_current[UUID_STR_LEN];
    char env_name[NAME_MAX_LEN + 1], version[VERSION_MAX + 1];
    int64_t number;
};

static void history_json(struct hctx *h, struct jw *w, const char *deployment_id)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_HIST_LIST);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, deployment_id, -1, SQLITE_TRANSIENT);
    jw_key(w, "history");
    jw_arr_open(w);
    while (sqlite3_step(q) == SQLITE_ROW) {
        jw_obj_open(w);
        jw_kstr(w, "id", col_text(q, 0));
        jw_kstr(w, "actor_id", (const char *)sqlite3_column_text(q, 1));
        jw_kstr(w, "from_status", (const char *)sqlite3_column_text(q, 2));
        jw_kstr(w, "to_status", col_text(q, 3));
        jw_kstr(w, "notes", (const char *)sqlite3_column_text(q, 4));
        jw_kiso(w, "created_at", sqlite3_column_int64(q, 5));
        jw_obj_close(w);
    }
    sqlite3_reset(q);
    jw_arr_close(w);
}

static void deployment_json(struct hctx *h, struct jw *w, sqlite3_stmt *q, bool with_history)
{
    char number[DESK_TICKET_NUMBER_LEN];
    desk_ticket_number(sqlite3_column_int64(q, 2), number);
    jw_obj_open(w);
    jw_kstr(w, "id", col_text(q, 0));
    jw_kstr(w, "ticket_id", col_text(q, 1));
    jw_kstr(w, "ticket_number", number);
    jw_kstr(w, "environment_id", col_text(q, 3));
    jw_kstr(w, "environment_name", col_text(q, 4));
    jw_kstr(w, "approval_id", col_text(q, 5));
    jw_kstr(w, "version", col_text(q, 6));
    jw_kstr(w, "status", col_text(q, 7));
    jw_kstr(w, "deployment_notes", (const char *)sqlite3_column_text(q, 8));
    jw_kstr(w, "requested_by", col_text(q, 9));
    jw_kiso(w, "created_at", sqlite3_column_int64(q, 10));
    jw_kiso(w, "updated_at", sqlite3_column_int64(q, 11));
    jw_kiso(w, "completed_at", sqlite3_column_int64(q, 12));
    jw_kstr(w, "rollback_reason", (const char *)sqlite3_column_text(q, 13));
    if (with_history)
        history_json(h, w, col_text(q, 0));
    jw_obj_close(w);
}

/* Writes the deployment with its history as the response body. */
static void deployment_row(struct hctx *h, struct jw *w, sqlite3_stmt *q)
{
    deployment_json(h, w, q, true);
}

static void deployment_summary_row(struct hctx *h, struct jw *w, sqlite3_stmt *q)
{
    deployment_json(h, w, q, false); /* lists leave the history to the detail route */
}

static int deployment_write(struct hctx *h, const char *id)
{
    return row_body(h, SQL_DEP_GET, id, "deployment_id", "deployment", deployment_row);
}

static int history_add(struct hctx *h, const char *deployment_id, const char *from,
                       const char *to, const char *notes)
{
    char id[UUID_STR_LEN];
    id_uuid7(id);
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_HIST_ADD);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, deployment_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, from, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, to, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, notes, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 8, clock_now_ms());
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : TS_E_INTERNAL;
}

static int env_set(struct hctx *h, const char *env_id, const char *status, const char *current)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_ENV_SET);
    sqlite3_bind_text(q, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, current, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, clock_now_ms());
    sqlite3_bind_text(q, 4, env_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, h->tenant_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : TS_E_INTERNAL;
}

/* The ticket's latest approval request must be approved; its id goes into ret. */
static int approval_required(struct hctx *h, const struct desk_ticket *t, char ret[UUID_STR_LEN])
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_LATEST_APPROVAL);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, t->id, -1, SQLITE_STATIC);
    const char *msg = NULL;
    if (sqlite3_step(q) != SQLITE_ROW)
        msg = arena_printf(h->arena, "%s has no approved approval request", t->number);
    else if (strcmp(col_text(q, 1), "approved"))
        msg = arena_printf(h->arena, "the latest approval request of %s is %s, not approved",
                           t->number, col_text(q, 1));
    else
        snprintf(ret, UUID_STR_LEN, "%s", col_text(q, 0));
    sqlite3_reset(q);
    return msg ? fail(h, TS_E_UNPROCESSABLE, "ticket_id", msg) : 0;
}

/* The environment exists, is not under maintenance and has no active deployment. */
static int environment_free(struct hctx *h, const char *env_id)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_ENV_GET);
    sqlite3_bind_text(q, 1, env_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    int found = sqlite3_step(q) == SQLITE_ROW;
    bool maintenance = found && !strcmp(col_text(q, 2), "maintenance");
    sqlite3_reset(q);
    if (!found)
        return fail(h, TS_E_NOT_FOUND, "environment_id", "environment not found");
    if (maintenance)
        return fail(h, TS_E_CONFLICT, "environment_id", "the environment is under maintenance");
    q = db_stmt(h->app->db, SQL_DEP_ACTIVE);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, env_id, -1, SQLITE_STATIC);
    const char *active = sqlite3_step(q) == SQLITE_ROW ? arena_strdup(h->arena, col_text(q, 0)) : NULL;
    sqlite3_reset(q);
    if (active)
        return fail(h, TS_E_CONFLICT, "environment_id",
                    arena_printf(h->arena, "deployment %s is already active on the environment",
                                 active));
    return 0;
}

struct deploy_request {
    const char *ticket_id, *environment_id, *version, *notes;
};

static int deploy_fields(struct hctx *h, struct deploy_request *d)
{
    int r = body_string(h, "ticket_id", 64, true, &d->ticket_id);
    if (r == 0)
        r = body_string(h, "environment_id", 64, true, &d->environment_id);
    if (r == 0)
        r = body_string(h, "version", VERSION_MAX, true, &d->version);
    if (r == 0 && !version_valid(d->version))
        r = fail(h, TS_E_VALIDATION, "version",
                 "version must look like 1.2.3 (optional v, -pre.release, +build)");
    if (r == 0)
        r = body_string(h, "deployment_notes", NOTES_MAX, false, &d->notes);
    return r;
}

static int deployment_insert(struct hctx *h, const char *id, const struct deploy_request *d,
                             const char *ticket_id, const char *approval_id)
{
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    int64_t now = clock_now_ms();
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_DEP_INSERT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, ticket_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, d->environment_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, approval_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, d->version, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, d->notes, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 8, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 9, now);
    sqlite3_bind_int64(q, 10, now);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return fail(h, TS_E_CONFLICT, "environment_id", "the environment has an active deployment");
    if (rc != SQLITE_DONE)
        return TS_E_INTERNAL;
    return history_add(h, id, NULL, "pending", d->notes);
}

static int deployment_create(struct hctx *h)
{
    struct deploy_request d;
    struct desk_ticket t;
    char approval_id[UUID_STR_LEN], id[UUID_STR_LEN];
    int r = deploy_fields(h, &d);
    if (r == 0)
        r = desk_ticket_find(h, d.ticket_id, "ticket_id", &t);
    if (r == 0)
        r = approval_required(h, &t, approval_id);
    if (r == 0)
        r = environment_free(h, d.environment_id);
    id_uuid7(id);
    if (r == 0)
        r = deployment_insert(h, id, &d, t.id, approval_id);
    if (r < 0)
        return r;
    h->audit_target = arena_strdup(h->arena, id);
    h->status = 201;
    return deployment_write(h, id);
}

static bool deploy_status_valid(const char *s)
{
    static const char *const all[] = {"pending", "in_progress", "completed", "failed",
                                      "rolled_back"};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (!strcmp(s, all[i]))
            return true;
    return false;
}

static int deployments_list(struct hctx *h)
{
    int page, limit;
    const char *status = http_query_get(h->req, "status");
    const char *env = http_query_get(h->req, "environment_id");
    const char *ticket = http_query_get(h->req, "ticket_id");
    int r = query_int(h, "page", 1, 1, 1000000, &page);
    if (r == 0)
        r = query_int(h, "limit", 20, 1, PAGE_MAX, &limit);
    if (r == 0 && status && !deploy_status_valid(status))
        r = fail(h, TS_E_VALIDATION, "status",
                 "status must be pending, in_progress, completed, failed or rolled_back");
    if (r < 0)
        return r;
    const char *filters[] = {status, env && env[0] ? env : NULL, ticket && ticket[0] ? ticket : NULL};
    sqlite3_stmt *c = db_stmt(h->app->db, SQL_DEP_FILTER_COUNT);
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_DEP_PAGE);
    sqlite3_bind_text(c, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    for (int i = 0; i < 3; i++) {
        sqlite3_bind_text(c, i + 2, filters[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(q, i + 2, filters[i], -1, SQLITE_STATIC);
    }
    int total = sqlite3_step(c) == SQLITE_ROW ? sqlite3_column_int(c, 0) : 0;
    sqlite3_reset(c);
    sqlite3_bind_int(q, 5, limit);
    sqlite3_bind_int64(q, 6, (int64_t)(page - 1) * limit);
    return page_body(h, "deployments", q, deployment_summary_row, total, page, limit);
}

static int deployment_get(struct hctx *h)
{
    return deployment_write(h, http_param_get(h->req, "deployment_id"));
}

/* ---- status changes and rollback ---- */

static int deployment_load(struct hctx *h, const char *id, struct deployment *ret)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_DEP_GET);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_reset(q);
        return fail(h, TS_E_NOT_FOUND, "deployment_id", "deployment not found");
    }
    memset(ret, 0, sizeof(*ret));
    snprintf(ret->id, sizeof(ret->id), "%s", col_text(q, 0));
    snprintf(ret->ticket_id, sizeof(ret->ticket_id), "%s", col_text(q, 1));
    ret->number = sqlite3_column_int64(q, 2);
    snprintf(ret->environment_id, sizeof(ret->environment_id), "%s", col_text(q, 3));
    snprintf(ret->env_name, sizeof(ret->env_name), "%s", col_text(q, 4));
    snprintf(ret->version, sizeof(ret->version), "%s", col_text(q, 6));
    snprintf(ret->status, sizeof(ret->status), "%s", col_text(q, 7));
    snprintf(ret->requested_by, sizeof(ret->requested_by), "%s", col_text(q, 9));
    sqlite3_reset(q);
    q = db_stmt(h->app->db, SQL_ENV_GET);
    sqlite3_bind_text(q, 1, ret->environment_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) == SQLITE_ROW)
        snprintf(ret->env_current, sizeof(ret->env_current), "%s", col_text(q, 4));
    sqlite3_reset(q);
    return 0;
}

/* Moves a deployment to `to`, records the step and tells whoever requested it. */
static int deployment_move(struct hctx *h, const struct deployment *d, const char *to,
                           const char *notes, const char *reason)
{
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_DEP_SET);
    sqlite3_bind_text(q, 1, d->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, to, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, clock_now_ms());
    sqlite3_bind_text(q, 5, reason, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return TS_E_INTERNAL;
    r = history_add(h, d->id, d->status, to, notes);
    char number[DESK_TICKET_NUMBER_LEN];
    desk_ticket_number(d->number, number);
    if (r == 0)
        r = desk_notify(h->app, h->tenant_id, h->user_id, d->requested_by, DESK_N_DEPLOYMENT,
                        arena_printf(h->arena, "Deployment %s: %s", to, number),
                        arena_printf(h->arena, "%s %s on %s is now %s.%s%s", number, d->version,
                                     d->env_name, to, notes ? " " : "", notes ? notes : ""),
                        d->ticket_id);
    return r;
}

static bool transition_legal(const char *from, const char *to)
{
    if (!strcmp(from, "pending"))
        return !strcmp(to, "in_progress");
    if (!strcmp(from, "in_progress"))
        return !strcmp(to, "completed") || !strcmp(to, "failed");
    return false;
}

static int deployment_status(struct hctx *h)
{
    const char *status, *notes;
    struct deployment d;
    int r = body_string(h, "status", 16, true, &status);
    if (r == 0 && strcmp(status, "in_progress") && strcmp(status, "completed") &&
        strcmp(status, "failed"))
        r = fail(h, TS_E_VALIDATION, "status", "status must be in_progress, completed or failed");
    if (r == 0)
        r = body_string(h, "notes", NOTES_MAX, false, &notes);
    if (r == 0)
        r = deployment_load(h, http_param_get(h->req, "deployment_id"), &d);
    if (r == 0 && !transition_legal(d.status, status))
        r = fail(h, TS_E_CONFLICT, "status",
                 arena_printf(h->arena, "a %s deployment cannot become %s", d.status, status));
    if (r == 0)
        r = deployment_move(h, &d, status, notes, NULL);
    /* the environment follows: deploying while in progress, in use once completed, free on failure */
    if (r == 0 && !strcmp(status, "in_progress"))
        r = env_set(h, d.environment_id, "deploying", d.id);
    else if (r == 0 && !strcmp(status, "completed"))
        r = env_set(h, d.environment_id, "in_use", d.id);
    else if (r == 0)
        r = env_set(h, d.environment_id, "available", NULL);
    if (r < 0)
        return r;
    return deployment_write(h, d.id);
}

static int deployment_rollback(struct hctx *h)
{
    const char *reason;
    struct deployment d;
    int r = body_string(h, "reason", REASON_MAX, true, &reason);
    if (r == 0)
        r = deployment_load(h, http_param_get(h->req, "deployment_id"), &d);
    if (r == 0 && strcmp(d.status, "completed"))
        r = fail(h, TS_E_CONFLICT, "deployment_id",
                 arena_printf(h->arena, "only a completed deployment rolls back; this one is %s",
                              d.status));
    if (r == 0 && strcmp(d.env_current, d.id))
        r = fail(h, TS_E_CONFLICT, "deployment_id",
                 "a later deployment replaced this one on the environment");
    if (r == 0)
        r = deployment_move(h, &d, "rolled_back", reason, reason);
    if (r == 0)
        r = env_set(h, d.environment_id, "available", NULL);
    if (r < 0)
        return r;
    return deployment_write(h, d.id);
}

static const struct route routes[] = {
    {"GET", "/api/v1/staging/environments", environments_list, "staging.read", "default",
     RUN_LOOP, 0, 0},
    {"POST", "/api/v1/staging/environments", environment_create, "staging.admin", "default",
     RUN_LOOP, 0, RF_JSON_BODY},
    {"POST", "/api/v1/staging/deployments", deployment_create, "staging.deploy", "default",
     RUN_LOOP, 0, RF_JSON_BODY},
    {"GET", "/api/v1/staging/deployments", deployments_list, "staging.read", "default", RUN_LOOP,
     0, 0},
    {"GET", "/api/v1/staging/deployments/{deployment_id}", deployment_get, "staging.read",
     "default", RUN_LOOP, 0, 0},
    {"POST", "/api/v1/staging/deployments/{deployment_id}/status", deployment_status,
     "staging.admin", "default", RUN_LOOP, 0, RF_JSON_BODY},
    {"POST", "/api/v1/staging/deployments/{deployment_id}/rollback", deployment_rollback,
     "staging.admin", "default", RUN_LOOP, 0, RF_JSON_BODY},
};

const struct route_table desk_staging_table = {SURF_DESK, routes,
                                               sizeof(routes) / sizeof(routes[0])};
