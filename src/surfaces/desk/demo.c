/* desk demo data for `tessera serve --demo`: 300 tickets over the last 90 days with comments,
 * history, SLA rows (24x7 default deadlines, late responses and resolutions recorded as
 * breaches), approval requests and two deployments. Reproducible: a fixed-seed generator
 * drives every choice and every time is an offset from the moment of seeding. */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "api/app.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/ids.h"
#include "surfaces/desk/desk.h"

#define DEMO_TICKETS 300
#define DEMO_DAYS 90
#define MIN_MS 60000LL
#define HOUR_MS 3600000LL
#define DAY_MS 86400000LL

enum { Q_USER, Q_TICKET, Q_COMMENT, Q_HISTORY, Q_SLA, Q_COUNTER, Q_APPROVAL, Q_ENV, Q_ENV_SET,
       Q_DEPLOY, Q_DEPLOY_HIST, Q_N };

static const char *const sql[Q_N] = {
    [Q_USER] = "SELECT id FROM users WHERE tenant_id = ? AND email = ?",
    [Q_TICKET] = "INSERT INTO tickets(tenant_id, id, number, title, description, type, priority, "
                 "status, requester_id, assignee_id, resolution_notes, created_at, updated_at, "
                 "first_response_at, resolved_at, closed_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [Q_COMMENT] = "INSERT INTO ticket_comments(tenant_id, id, ticket_id, author_id, content, "
                  "is_internal, created_at) VALUES(?,?,?,?,?,?,?)",
    [Q_HISTORY] = "INSERT INTO ticket_history(tenant_id, id, ticket_id, actor_id, field, "
                  "old_value, new_value, created_at) VALUES(?,?,?,?,?,?,?,?)",
    [Q_SLA] = "INSERT INTO ticket_sla(ticket_id, tenant_id, created_at, response_hours, "
              "resolution_hours, response_deadline, resolution_deadline, paused_since, "
              "first_response_at, resolved_at, response_breached_at, resolution_breached_at) "
              "VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
    [Q_COUNTER] = "INSERT INTO desk_counters(tenant_id, last_ticket) VALUES(?1, ?2) "
                  "ON CONFLICT(tenant_id) DO UPDATE SET last_ticket = max(last_ticket, ?2)",
    [Q_APPROVAL] = "INSERT INTO approval_requests(tenant_id, id, ticket_id, description, "
                   "requester_id, approver_id, status, comments, decided_by, created_at, "
                   "decided_at) VALUES(?,?,?,?,?,?,?,?,?,?,?)",
    [Q_ENV] = "SELECT id FROM staging_environments WHERE tenant_id = ? AND name = ?",
    [Q_ENV_SET] = "UPDATE staging_environments SET status = ?, current_deployment_id = ?, "
                  "updated_at = ? WHERE id = ? AND tenant_id = ?",
    [Q_DEPLOY] = "INSERT INTO staging_deployments(tenant_id, id, ticket_id, environment_id, "
                 "approval_id, version, status, deployment_notes, requested_by, created_at, "
                 "updated_at, completed_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
    [Q_DEPLOY_HIST] = "INSERT INTO staging_deployment_history(tenant_id, id, deployment_id, "
                      "actor_id, from_status, to_status, notes, created_at) VALUES(?,?,?,?,?,?,?,?)",
};

enum { U_ADMIN, U_AGENT, U_APPROVER, U_DEVELOPER, U_VIEWER, U_LEARNER, U_TRAINER, U_N };
static const char *const user_roles[U_N] = {"admin", "agent", "approver", "developer",
                                            "viewer", "learner", "trainer"};

struct seed {
    sqlite3 *db;
    const char *tenant;
    sqlite3_stmt *q[Q_N];
    char users[U_N][UUID_STR_LEN];
    uint32_t rng;
    int64_t now;
};

/* The demo's one source of choices: xorshift32 from a fixed seed. */
static uint32_t rnd(struct seed *s, uint32_t n)
{
    uint32_t x = s->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s->rng = x;
    return x % n;
}

/* A pick from weighted choices: weights sum to 100. */
static int weighted(struct seed *s, const int *weights, int n)
{
    int r = (int)rnd(s, 100);
    for (int i = 0; i < n - 1; i++) {
        if (r < weights[i])
            return i;
        r -= weights[i];
    }
    return n - 1;
}

static void bind_opt_text(sqlite3_stmt *q, int i, const char *v)
{
    if (v && v[0])
        sqlite3_bind_text(q, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(q, i);
}

static void bind_opt_time(sqlite3_stmt *q, int i, int64_t v)
{
    if (v)
        sqlite3_bind_int64(q, i, v);
    else
        sqlite3_bind_null(q, i);
}

/* Steps a bound insert and resets it; 0 or TS_E_INTERNAL. */
static int run(sqlite3_stmt *q)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return rc == SQLITE_DONE ? 0 : TS_E_INTERNAL;
}

static int lookup(struct seed *s, int which, const char *key, char out[UUID_STR_LEN])
{
    sqlite3_stmt *q = s->q[which];
    sqlite3_bind_text(q, 1, s->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, key, -1, SQLITE_TRANSIENT);
    int found = sqlite3_step(q) == SQLITE_ROW;
    if (found)
        snprintf(out, UUID_STR_LEN, "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_reset(q);
    return found ? 0 : TS_E_INTERNAL;
}

static int history(struct seed *s, const char *ticket, const char *actor, const char *field,
                   const char *old_value, const char *new_value, int64_t at)
{
    char id[UUID_STR_LEN];
    id_uuid7(id);
    sqlite3_stmt *q = s->q[Q_HISTORY];
    sqlite3_bind_text(q, 1, s->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 3, ticket, -1, SQLITE_TRANSIENT);
    bind_opt_text(q, 4, actor);
    sqlite3_bind_text(q, 5, field, -1, SQLITE_STATIC);
    bind_opt_text(q, 6, old_value);
    bind_opt_text(q, 7, new_value);
    sqlite3_bind_int64(q, 8, at);
    return run(q);
}

static int comment(struct seed *s, const char *ticket, const char *author, const char *content,
                   int64_t at)
{
    char id[UUID_STR_LEN];
    id_uuid7(id);
    sqlite3_stmt *q = s->q[Q_COMMENT];
    sqlite3_bind_text(q, 1, s->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 3, ticket, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 4, author, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, content, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 6, 0);
    sqlite3_bind_int64(q, 7, at);
    return run(q);
}

/* ---- one ticket ---- */

static const char *const types[] = {"incident", "bug", "support", "question", "task", "feature"};
static const int type_weights[] = {12, 20, 28, 15, 13, 12};
static const char *const priorities[] = {"low", "medium", "high", "critical"};
static const int priority_weights[] = {30, 40, 20, 10};
static const char *const subjects[] = {
    "the VPN", "email on mobile", "the payroll portal", "the course player", "the floor 3 printer",
    "the CRM export", "single sign-on", "the expense app", "the wiki search", "the shared drive",
    "video calls", "the onboarding checklist",
};
static const char *const title_forms[] = {
    "Outage: %s is unreachable",          /* incident */
    "Error when saving in %s",            /* bug */
    "Cannot get %s to work",              /* support */
    "How do I set up %s?",                /* question */
    "Renew the licence for %s",           /* task */
    "Add dark mode to %s",                /* feature */
};
static const char *const first_replies[] = {
    "Thanks for the report, I am looking into it now.",
    "Could you send a screenshot of what you see?",
    "I can reproduce this and have started on a fix.",
};
static const char *const followups[] = {
    "Here is the screenshot; it happens every morning.",
    "Thanks, that is much better already.",
    "Still seeing it after a restart, unfortunately.",
};

struct demo_ticket {
    char id[UUID_STR_LEN], number[DESK_TICKET_NUMBER_LEN];
    const char *type, *priority, *status, *requester, *assignee;
    int64_t created, first_response, resolved, closed, paused, updated;
    double resp_hours, reso_hours;
    int extra_comments; /* after the first response: 0..2 */
};

/* The final status of a ticket of a given age: old ones are mostly done. */
static const char *status_for(struct seed *s, int64_t age)
{
    static const char *const st[] = {"open", "in_progress", "pending", "waiting_on_customer",
                                     "resolved", "closed"};
    static const int old_w[] = {3, 4, 2, 3, 18, 70};
    static const int mid_w[] = {15, 25, 5, 15, 30, 10};
    static const int new_w[] = {50, 30, 0, 20, 0, 0};
    const int *w = age > 14 * DAY_MS ? old_w : age > 3 * DAY_MS ? mid_w : new_w;
    return st[weighted(s, w, 6)];
}

static bool is_done(const char *status)
{
    return !strcmp(status, "resolved") || !strcmp(status, "closed");
}

/* Plans times: response, resolution and closing, all before now. */
static void ticket_plan(struct seed *s, struct demo_ticket *t, int64_t created)
{
    t->created = created;
    t->type = types[weighted(s, type_weights, 6)];
    t->priority = priorities[weighted(s, priority_weights, 4)];
    t->status = status_for(s, s->now - created);
    t->requester = s->users[U_VIEWER + rnd(s, 3)];
    bool unassigned = !strcmp(t->status, "open") && rnd(s, 100) < 35;
    t->assignee = unassigned ? NULL : s->users[rnd(s, 100) < 85 ? U_AGENT : U_ADMIN];
    desk_sla_default_hours(t->type, &t->resp_hours, &t->reso_hours);
    int64_t room = s->now - created - MIN_MS;
    /* a response after 5%..125% of the response time: about one in five comes late */
    int64_t fr = (int64_t)(t->resp_hours * HOUR_MS * (5 + rnd(s, 121)) / 100);
    t->first_response = created + (fr < room / 2 ? fr : room / 2);
    int64_t after = s->now - t->first_response - MIN_MS;
    int64_t work = (int64_t)(t->reso_hours * HOUR_MS * (10 + rnd(s, 100)) / 100);
    int64_t step = t->first_response + (work < after / 2 ? work : after / 2);
    t->resolved = t->closed = t->paused = 0;
    if (is_done(t->status)) {
        t->resolved = t->paused = step;
        int64_t close = step + DAY_MS + rnd(s, 2 * DAY_MS);
        if (!strcmp(t->status, "closed") && close < s->now)
            t->closed = close;
        else
            t->status = "resolved";
    } else if (!strcmp(t->status, "pending") || !strcmp(t->status, "waiting_on_customer")) {
        t->paused = step;
    }
    /* the last comment falls at end * extra / (extra + 1) (ticket_activity) */
    t->extra_comments = (int)rnd(s, 3);
    int64_t end = t->paused ? t->paused : s->now - MIN_MS;
    int64_t last = t->first_response + (end - t->first_response) * t->extra_comments /
                                           (t->extra_comments + 1);
    t->updated = t->closed ? t->closed : t->paused ? t->paused : last;
}

static int ticket_insert(struct seed *s, struct demo_ticket *t, int number)
{
    char title[160], desc[400];
    int subject = (int)rnd(s, sizeof(subjects) / sizeof(subjects[0]));
    int form = 0;
    while (strcmp(types[form], t->type))
        form++;
    snprintf(title, sizeof(title), title_forms[form], subjects[subject]);
    snprintf(desc, sizeof(desc),
             "Reported through the portal: %s. It affects my daily work; details in the comments.",
             title);
    id_uuid7(t->id);
    desk_ticket_number(number, t->number);
    sqlite3_stmt *q = s->q[Q_TICKET];
    sqlite3_bind_text(q, 1, s->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 3, number);
    sqlite3_bind_text(q, 4, title, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, desc, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, t->type, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, t->priority, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 8, t->status, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 9, t->requester, -1, SQLITE_STATIC);
    bind_opt_text(q, 10, t->assignee);
    bind_opt_text(q, 11, t->resolved ? "Fixed and confirmed with the requester." : NULL);
    sqlite3_bind_int64(q, 12, t->created);
    sqlite3_bind_int64(q, 13, t->updated);
    sqlite3_bind_int64(q, 14, t->first_response);
    bind_opt_time(q, 15, t->resolved);
    bind_opt_time(q, 16, t->closed);
    return run(q);
}

/* 24x7 deadlines from the creation; a late response or resolution is a breach at its deadline.
 * A paused ticket whose clock stopped past its deadline breached too; running tickets past
 * their deadline are left to the breach timer. */
static int ticket_sla(struct seed *s, const struct demo_ticket *t)
{
    int64_t rd = t->created + (int64_t)(t->resp_hours * HOUR_MS);
    int64_t sd = t->created + (int64_t)(t->reso_hours * HOUR_MS);
    sqlite3_stmt *q = s->q[Q_SLA];
    sqlite3_bind_text(q, 1, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, s->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, t->created);
    sqlite3_bind_double(q, 4, t->resp_hours);
    sqlite3_bind_double(q, 5, t->reso_hours);
    sqlite3_bind_int64(q, 6, rd);
    sqlite3_bind_int64(q, 7, sd);
    bind_opt_time(q, 8, t->paused);
    sqlite3_bind_int64(q, 9, t->first_response);
    bind_opt_time(q, 10, t->resolved);
    bind_opt_time(q, 11, t->first_response > rd ? rd : 0);
    bind_opt_time(q, 12, t->paused > sd ? sd : 0);
    return run(q);
}

/* Comments (the first by the agent is the first response) and history rows. */
static int ticket_activity(struct seed *s, const struct demo_ticket *t)
{
    const char *staff = t->assignee ? t->assignee : s->users[U_AGENT];
    int r = history(s, t->id, t->requester, "created", NULL, t->number, t->created);
    if (r == 0)
        r = comment(s, t->id, s->users[U_AGENT], first_replies[rnd(s, 3)], t->first_response);
    int64_t end = t->paused ? t->paused : s->now - MIN_MS;
    int extra = t->extra_comments;
    for (int i = 1; r == 0 && i <= extra; i++) {
        int64_t at = t->first_response + (end - t->first_response) * i / (extra + 1);
        r = comment(s, t->id, i == 1 ? t->requester : staff,
                    i == 1 ? followups[rnd(s, 3)] : "Thanks, I have updated the ticket.", at);
    }
    if (r == 0 && t->assignee)
        r = history(s, t->id, staff, "assignee_id", NULL, t->assignee, t->first_response);
    if (r == 0 && strcmp(t->status, "open"))
        r = history(s, t->id, staff, "status", "open", "in_progress", t->first_response);
    if (r == 0 && t->paused) {
        const char *to = t->resolved ? "resolved" : t->status;
        r = history(s, t->id, staff, "status", "in_progress", to, t->paused);
    }
    if (r == 0 && t->closed)
        r = history(s, t->id, staff, "status", "resolved", "closed", t->closed);
    return r;
}

/* ---- approvals and deployments ---- */

static int approval(struct seed *s, const struct demo_ticket *t, const char *status,
                    const char *comments, char ret_id[UUID_STR_LEN], int64_t *ret_decided)
{
    int64_t at = t->first_response + HOUR_MS;
    int64_t decided = strcmp(status, "pending") ? at + 3 * HOUR_MS : 0;
    if (decided >= s->now)
        decided = s->now - MIN_MS;
    id_uuid7(ret_id);
    sqlite3_stmt *q = s->q[Q_APPROVAL];
    sqlite3_bind_text(q, 1, s->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, ret_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, "Feature change: approve building and deploying it to staging.", -1,
                      SQLITE_STATIC);
    sqlite3_bind_text(q, 5, s->users[U_AGENT], -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, s->users[U_APPROVER], -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, status, -1, SQLITE_STATIC);
    bind_opt_text(q, 8, comments);
    bind_opt_text(q, 9, decided ? s->users[U_APPROVER] : NULL);
    sqlite3_bind_int64(q, 10, at);
    bind_opt_time(q, 11, decided);
    int r = run(q);
    if (r == 0)
        r = history(s, t->id, s->users[U_AGENT], "approval", NULL, "pending", at);
    if (r == 0 && decided)
        r = history(s, t->id, s->users[U_APPROVER], "approval", "pending", status, decided);
    *ret_decided = decided ? decided : at;
    return r;
}

static int deploy_step(struct seed *s, const char *dep, const char *from, const char *to,
                       const char *notes, int64_t at)
{
    char id[UUID_STR_LEN];
    id_uuid7(id);
    sqlite3_stmt *q = s->q[Q_DEPLOY_HIST];
    sqlite3_bind_text(q, 1, s->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, dep, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, s->users[U_DEVELOPER], -1, SQLITE_STATIC);
    bind_opt_text(q, 5, from);
    sqlite3_bind_text(q, 6, to, -1, SQLITE_STATIC);
    bind_opt_text(q, 7, notes);
    sqlite3_bind_int64(q, 8, at);
    return run(q);
}

/* A finished deployment (completed or failed) with its three steps; a completed one is live
 * on its environment, a failed one leaves it available. */
static int deployment(struct seed *s, const struct demo_ticket *t, const char *approval_id,
                      const char *env_name, const char *version, const char *status, int64_t at)
{
    char env[UUID_STR_LEN], id[UUID_STR_LEN];
    int r = lookup(s, Q_ENV, env_name, env);
    if (r < 0)
        return r;
    int64_t done = at + 20 * MIN_MS < s->now ? at + 20 * MIN_MS : s->now;
    id_uuid7(id);
    sqlite3_stmt *q = s->q[Q_DEPLOY];
    sqlite3_bind_text(q, 1, s->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, env, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, approval_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, version, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, status, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 8, "Demo build of the approved feature.", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 9, s->users[U_DEVELOPER], -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 10, at);
    sqlite3_bind_int64(q, 11, done);
    sqlite3_bind_int64(q, 12, done);
    r = run(q);
    if (r == 0)
        r = deploy_step(s, id, NULL, "pending", NULL, at);
    if (r == 0)
        r = deploy_step(s, id, "pending", "in_progress", NULL, at + MIN_MS);
    if (r == 0)
        r = deploy_step(s, id, "in_progress", status,
                        strcmp(status, "completed") ? "Migrations failed; see the build log." : NULL,
                        done);
    if (r == 0 && !strcmp(status, "completed")) {
        q = s->q[Q_ENV_SET];
        sqlite3_bind_text(q, 1, "in_use", -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 3, done);
        sqlite3_bind_text(q, 4, env, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 5, s->tenant, -1, SQLITE_STATIC);
        r = run(q);
    }
    return r;
}

/* Feature tickets: the oldest four approved (two of them deployed), one rejected, and the
 * newest one still pending. */
static int approvals_seed(struct seed *s, const struct demo_ticket *tickets, int n)
{
    int idx[DEMO_TICKETS], nf = 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(tickets[i].type, "feature"))
            idx[nf++] = i;
    if (nf < 6)
        return TS_E_INTERNAL; /* the fixed seed always makes plenty */
    char id[UUID_STR_LEN];
    int64_t at;
    int r = 0;
    for (int k = 0; r == 0 && k < 4; k++) {
        const struct demo_ticket *t = &tickets[idx[nf - 6 + k]];
        r = approval(s, t, "approved", "Approved for staging.", id, &at);
        if (r == 0 && k == 2)
            r = deployment(s, t, id, "staging-2", "2.3.0-rc.1", "failed", at + HOUR_MS / 2);
        if (r == 0 && k == 3)
            r = deployment(s, t, id, "staging-1", "2.3.1", "completed", at + HOUR_MS / 2);
    }
    if (r == 0)
        r = approval(s, &tickets[idx[nf - 2]], "rejected", "Out of scope for this quarter.", id,
                     &at);
    if (r == 0)
        r = approval(s, &tickets[idx[nf - 1]], "pending", NULL, id, &at);
    return r;
}

/* ---- the whole seed ---- */

static int seed_run(struct seed *s)
{
    static struct demo_ticket tickets[DEMO_TICKETS]; /* --demo start-up only */
    for (int i = 0; i < U_N; i++) {
        char email[128];
        snprintf(email, sizeof(email), "%s@demo.tessera.local", user_roles[i]);
        if (lookup(s, Q_USER, email, s->users[i]) < 0)
            return TS_E_INTERNAL;
    }
    int64_t span = DEMO_DAYS * DAY_MS / DEMO_TICKETS, start = s->now - DEMO_DAYS * DAY_MS;
    int r = 0;
    for (int i = 0; r == 0 && i < DEMO_TICKETS; i++) {
        struct demo_ticket *t = &tickets[i];
        ticket_plan(s, t, start + i * span + rnd(s, (uint32_t)(span - MIN_MS)));
        r = ticket_insert(s, t, i + 1);
        if (r == 0)
            r = ticket_sla(s, t);
        if (r == 0)
            r = ticket_activity(s, t);
    }
    if (r == 0)
        r = approvals_seed(s, tickets, DEMO_TICKETS);
    if (r == 0) {
        sqlite3_stmt *q = s->q[Q_COUNTER];
        sqlite3_bind_text(q, 1, s->tenant, -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 2, DEMO_TICKETS);
        r = run(q);
    }
    return r;
}

int desk_demo_seed(sqlite3 *db, const char *tenant_id)
{
    struct seed s = {.db = db, .tenant = tenant_id, .rng = 0x7e55e7a1u, .now = clock_now_ms()};
    int r = 0;
    for (int i = 0; r == 0 && i < Q_N; i++)
        if (sqlite3_prepare_v2(db, sql[i], -1, &s.q[i], NULL) != SQLITE_OK)
            r = TS_E_INTERNAL;
    if (r == 0)
        r = seed_run(&s);
    for (int i = 0; i < Q_N; i++)
        sqlite3_finalize(s.q[i]);
    return r;
}
