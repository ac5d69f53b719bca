/* desk feature approvals: submit a ticket for approval (named or least-loaded approver), list,
 * read, approve or reject once, and a ticket's approval history. */
#include <stdio.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "auth/session.h"
#include "core/clock.h"
#include "store/db.h"
#include "surfaces/desk/desk.h"

#define DESCRIPTION_MAX 5000
#define COMMENTS_MAX 5000
#define PAGE_MAX 100

#define REQUEST_COLUMNS                                                                       \
    "a.id, a.ticket_id, t.number, a.description, a.requester_id, a.approver_id, a.status, "  \
    "a.comments, a.created_at, a.decided_at, a.decided_by"

static const char SQL_GET[] =
    "SELECT " REQUEST_COLUMNS " FROM approval_requests a JOIN tickets t ON t.id = a.ticket_id "
    "WHERE a.id = ? AND a.tenant_id = ?";
static const char SQL_COUNT[] =
    "SELECT count(*) FROM approval_requests a WHERE a.tenant_id = ?1 "
    "AND (?2 IS NULL OR a.status = ?2) AND (?3 IS NULL OR a.approver_id = ?3)";
static const char SQL_PAGE[] =
    "SELECT " REQUEST_COLUMNS " FROM approval_requests a JOIN tickets t ON t.id = a.ticket_id "
    "WHERE a.tenant_id = ?1 AND (?2 IS NULL OR a.status = ?2) "
    "AND (?3 IS NULL OR a.approver_id = ?3) "
    "ORDER BY a.created_at DESC, a.id DESC LIMIT ?4 OFFSET ?5";
static const char SQL_PENDING_FOR_TICKET[] =
    "SELECT id FROM approval_requests WHERE tenant_id = ? AND ticket_id = ? AND status = 'pending'";
static const char SQL_USER_ROLES[] =
    "SELECT roles FROM users WHERE id = ? AND tenant_id = ? AND active = 1";
/* the active holder of a role (not the requester) with the fewest pending requests; ties by id */
static const char SQL_LEAST_LOADED[] =
    "SELECT u.id, (SELECT count(*) FROM approval_requests a WHERE a.tenant_id = u.tenant_id "
    "AND a.approver_id = u.id AND a.status = 'pending') AS load FROM users u "
    "WHERE u.tenant_id = ?1 AND u.active = 1 AND u.id <> ?2 "
    "AND EXISTS (SELECT 1 FROM json_each(u.roles) WHERE value = ?3) ORDER BY load, u.id LIMIT 1";
static const char SQL_INSERT[] =
    "INSERT INTO approval_requests(tenant_id, id, ticket_id, description, requester_id, "
    "approver_id, status, created_at) VALUES(?,?,?,?,?,?,'pending',?)";
static const char SQL_DECIDE[] =
    "UPDATE approval_requests SET status = ?, comments = ?, decided_by = ?, decided_at = ? "
    "WHERE id = ? AND tenant_id = ? AND status = 'pending'";
/* every request and decision of a ticket as events, oldest first */
static const char SQL_HISTORY[] =
    "SELECT id, 'requested', requester_id, approver_id, description, created_at, 0 AS k "
    "FROM approval_requests WHERE tenant_id = ?1 AND ticket_id = ?2 "
    "UNION ALL SELECT id, status, decided_by, approver_id, comments, decided_at, 1 "
    "FROM approval_requests WHERE tenant_id = ?1 AND ticket_id = ?2 AND status <> 'pending' "
    "ORDER BY 6, 7, 1";

static void request_json(struct jw *w, sqlite3_stmt *q)
{
    char number[DESK_TICKET_NUMBER_LEN];
    desk_ticket_number(sqlite3_column_int64(q, 2), number);
    jw_obj_open(w);
    jw_kstr(w, "id", col_text(q, 0));
    jw_kstr(w, "ticket_id", col_text(q, 1));
    jw_kstr(w, "ticket_number", number);
    jw_kstr(w, "description", col_text(q, 3));
    jw_kstr(w, "requester_id", col_text(q, 4));
    jw_kstr(w, "approver_id", col_text(q, 5));
    jw_kstr(w, "status", col_text(q, 6));
    jw_kstr(w, "comments", (const char *)sqlite3_column_text(q, 7));
    jw_kiso(w, "created_at", sqlite3_column_int64(q, 8));
    jw_kiso(w, "decided_at", sqlite3_column_int64(q, 9));
    jw_kstr(w, "decided_by", (const char *)sqlite3_column_text(q, 10));
    jw_obj_close(w);
}

/* Writes the request as the whole response body; TS_E_NOT_FOUND when it is not the tenant's. */
static void request_row(struct hctx *h, struct jw *w, sqlite3_stmt *q)
{
    (void)h;
    request_json(w, q);
}

static int request_write(struct hctx *h, const char *id)
{
    return row_body(h, SQL_GET, id, "request_id", "approval request", request_row);
}

/* ---- submitting ---- */

/* A named approver must be an active approver or master_admin of the tenant, not the requester. */
static int approver_check(struct hctx *h, const char *approver_id)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_USER_ROLES);
    sqlite3_bind_text(q, 1, approver_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    unsigned roles = sqlite3_step(q) == SQLITE_ROW ? auth_roles_from_json(col_text(q, 0)) : 0;
    sqlite3_reset(q);
    if (!(roles & (ROLE_APPROVER | ROLE_MASTER_ADMIN)))
        return fail(h, TS_E_VALIDATION, "approver_id",
                    "approver_id must be an active approver or master_admin of the organization");
    if (!strcmp(approver_id, h->user_id))
        return fail(h, TS_E_VALIDATION, "approver_id", "a request cannot be approved by its requester");
    return 0;
}

/* The least-loaded approver; master_admins only when the tenant has no other approver. */
static int approver_pick(struct hctx *h, char ret[UUID_STR_LEN])
{
    static const char *const pools[] = {"approver", "master_admin"};
    for (size_t i = 0; i < sizeof(pools) / sizeof(pools[0]); i++) {
        sqlite3_stmt *q = db_stmt(h->app->db, SQL_LEAST_LOADED);
        sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, h->user_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 3, pools[i], -1, SQLITE_STATIC);
        bool found = sqlite3_step(q) == SQLITE_ROW;
        if (found)
            snprintf(ret, UUID_STR_LEN, "%s", col_text(q, 0));
        sqlite3_reset(q);
        if (found)
            return 0;
    }
    return fail(h, TS_E_UNPROCESSABLE, "approver_id",
                "the organization has no active approver other than the requester");
}

static bool ticket_has_pending(struct hctx *h, const char *ticket_id)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_PENDING_FOR_TICKET);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, ticket_id, -1, SQLITE_STATIC);
    bool pending = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_reset(q);
    return pending;
}

static int request_insert(struct hctx *h, const char *id, const struct desk_ticket *t,
                          const char *description, const char *approver_id)
{
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_INSERT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, description, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, approver_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 7, clock_now_ms());
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if ((rc & 0xff) == SQLITE_CONSTRAINT)
        return fail(h, TS_E_CONFLICT, "ticket_id", "the ticket already has a pending approval request");
    return rc == SQLITE_DONE ? 0 : TS_E_INTERNAL;
}

static int request_create(struct hctx *h)
{
    const char *ticket_id, *description, *approver_id;
    int r = body_string(h, "ticket_id", 64, true, &ticket_id);
    if (r == 0)
        r = body_string(h, "description", DESCRIPTION_MAX, true, &description);
    if (r == 0)
        r = body_string(h, "approver_id", 64, false, &approver_id);
    struct desk_ticket t;
    if (r == 0)
        r = desk_ticket_find(h, ticket_id, "ticket_id", &t);
    if (r == 0 && ticket_has_pending(h, t.id))
        r = fail(h, TS_E_CONFLICT, "ticket_id", "the ticket already has a pending approval request");
    char approver[UUID_STR_LEN];
    if (r == 0 && approver_id && approver_id[0]) {
        r = approver_check(h, approver_id);
        snprintf(approver, sizeof(approver), "%s", approver_id);
    } else if (r == 0) {
        r = approver_pick(h, approver);
    }
    char id[UUID_STR_LEN];
    id_uuid7(id);
    if (r == 0)
        r = request_insert(h, id, &t, description, approver);
    if (r == 0)
        r = desk_history_add(h, t.id, "approval", NULL, "pending");
    if (r == 0)
        r = desk_notify(h->app, h->tenant_id, h->user_id, approver, DESK_N_APPROVAL_REQUESTED,
                        arena_printf(h->arena, "Approval requested: %s", t.number), description,
                        t.id);
    if (r < 0)
        return r;
    h->audit_target = arena_strdup(h->arena, id);
    h->status = 201;
    return request_write(h, id);
}

/* ---- reading ---- */

static int requests_list(struct hctx *h)
{
    int page, limit;
    const char *status = http_query_get(h->req, "status");
    const char *approver = http_query_get(h->req, "approver_id");
    int r = query_int(h, "page", 1, 1, 1000000, &page);
    if (r == 0)
        r = query_int(h, "limit", 20, 1, PAGE_MAX, &limit);
    if (r == 0 && status && strcmp(status, "pending") && strcmp(status, "approved") &&
        strcmp(status, "rejected"))
        r = fail(h, TS_E_VALIDATION, "status", "status must be pending, approved or rejected");
    if (r < 0)
        return r;
    if (approver && !approver[0])
        approver = NULL;
    sqlite3_stmt *c = db_stmt(h->app->db, SQL_COUNT);
    sqlite3_bind_text(c, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(c, 2, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(c, 3, approver, -1, SQLITE_STATIC);
    int total = sqlite3_step(c) == SQLITE_ROW ? sqlite3_column_int(c, 0) : 0;
    sqlite3_reset(c);
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_PAGE);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, approver, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 4, limit);
    sqlite3_bind_int64(q, 5, (int64_t)(page - 1) * limit);
    return page_body(h, "requests", q, request_row, total, page, limit);
}

static int request_get(struct hctx *h)
{
    return request_write(h, http_param_get(h->req, "request_id"));
}

static int history(struct hctx *h)
{
    struct desk_ticket t;
    int r = desk_ticket_find(h, http_param_get(h->req, "ticket_id"), "ticket_id", &t);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_HISTORY);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, t.id, -1, SQLITE_STATIC);
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "ticket_id", t.id);
    jw_kstr(&w, "ticket_number", t.number);
    jw_key(&w, "history");
    jw_arr_open(&w);
    int n = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        jw_obj_open(&w);
        jw_kstr(&w, "request_id", col_text(q, 0));
        jw_kstr(&w, "action", col_text(q, 1));
        jw_kstr(&w, "actor_id", col_text(q, 2));
        jw_kstr(&w, "approver_id", col_text(q, 3));
        jw_kstr(&w, "notes", (const char *)sqlite3_column_text(q, 4));
        jw_kiso(&w, "created_at", sqlite3_column_int64(q, 5));
        jw_obj_close(&w);
        n++;
    }
    sqlite3_reset(q);
    jw_arr_close(&w);
    jw_kint(&w, "total", n);
    return out_end(h, &w);
}

/* ---- deciding ---- */

struct pending_request {
    char ticket_id[UUID_STR_LEN], requester_id[UUID_STR_LEN], approver_id[UUID_STR_LEN];
    char status[16];
    int64_t number;
};

static int request_load(struct hctx *h, const char *id, struct pending_request *ret)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_GET);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_reset(q);
        return fail(h, TS_E_NOT_FOUND, "request_id", "approval request not found");
    }
    snprintf(ret->ticket_id, sizeof(ret->ticket_id), "%s", col_text(q, 1));
    ret->number = sqlite3_column_int64(q, 2);
    snprintf(ret->requester_id, sizeof(ret->requester_id), "%s", col_text(q, 4));
    snprintf(ret->approver_id, sizeof(ret->approver_id), "%s", col_text(q, 5));
    snprintf(ret->status, sizeof(ret->status), "%s", col_text(q, 6));
    sqlite3_reset(q);
    return 0;
}

/* Only the assigned approver or a master_admin decides, never the requester, and only once. */
static int decide_allowed(struct hctx *h, const struct pending_request *p)
{
    if (!strcmp(p->requester_id, h->user_id))
        return fail(h, TS_E_FORBIDDEN, "request_id", "a requester cannot decide their own request");
    if (strcmp(p->approver_id, h->user_id) && !(h->who.roles & ROLE_MASTER_ADMIN))
        return fail(h, TS_E_FORBIDDEN, "request_id",
                    "only the assigned approver or a master_admin decides this request");
    if (strcmp(p->status, "pending"))
        return fail(h, TS_E_CONFLICT, "request_id",
                    arena_printf(h->arena, "the request was already %s", p->status));
    return 0;
}

static int decide_store(struct hctx *h, const char *id, const char *status, const char *comments)
{
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_DECIDE);
    sqlite3_bind_text(q, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, comments, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, clock_now_ms());
    sqlite3_bind_text(q, 5, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, h->tenant_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return TS_E_INTERNAL;
    return sqlite3_changes(db_handle(h->app->db)) == 1
               ? 0
               : fail(h, TS_E_CONFLICT, "request_id", "the request was already decided");
}

static int decide_notify(struct hctx *h, const struct pending_request *p, const char *status,
                         const char *comments)
{
    char number[DESK_TICKET_NUMBER_LEN];
    desk_ticket_number(p->number, number);
    const char *message = comments && comments[0]
                              ? comments
                              : arena_printf(h->arena, "Your approval request for %s was %s.",
                                             number, status);
    return desk_notify(h->app, h->tenant_id, h->user_id, p->requester_id, DESK_N_APPROVAL_DECIDED,
                       arena_printf(h->arena, "Approval %s: %s", status, number), message,
                       p->ticket_id);
}

static int decide(struct hctx *h, const char *status)
{
    const char *id = http_param_get(h->req, "request_id");
    const char *comments;
    struct pending_request p;
    int r = body_string(h, "comments", COMMENTS_MAX, false, &comments);
    if (r == 0)
        r = request_load(h, id, &p);
    if (r == 0)
        r = decide_allowed(h, &p);
    if (r == 0)
        r = decide_store(h, id, status, comments);
    if (r == 0)
        r = desk_history_add(h, p.ticket_id, "approval", "pending", status);
    if (r == 0)
        r = decide_notify(h, &p, status, comments);
    if (r < 0)
        return r;
    return request_write(h, id);
}

static int approve(struct hctx *h)
{
    return decide(h, "approved");
}

static int reject(struct hctx *h)
{
    return decide(h, "rejected");
}

static const struct route routes[] = {
    {"POST", "/api/v1/approvals/requests", request_create, "approvals.request", "default",
     RUN_LOOP, 0, RF_JSON_BODY},
    {"GET", "/api/v1/approvals/requests", requests_list, "approvals.request", "default", RUN_LOOP,
     0, 0},
    {"GET", "/api/v1/approvals/requests/{request_id}", request_get, "approvals.request",
     "default", RUN_LOOP, 0, 0},
    {"POST", "/api/v1/approvals/requests/{request_id}/approve", approve, "approvals.decide",
     "default", RUN_LOOP, 0, RF_JSON_BODY},
    {"POST", "/api/v1/approvals/requests/{request_id}/reject", reject, "approvals.decide",
     "default", RUN_LOOP, 0, RF_JSON_BODY},
    {"GET", "/api/v1/approvals/history/{ticket_id}", history, "approvals.request", "default",
     RUN_LOOP, 0, 0},
};

const struct route_table desk_approvals_table = {SURF_DESK, routes,
                                                 sizeof(routes) / sizeof(routes[0])};
