/* desk's shared pieces: who may see a ticket, history rows, TKT numbers, notifications. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "engines/mail.h"
#include "http/ws.h"
#include "store/db.h"
#include "surfaces/desk/desk.h"

static const char SQL_TICKET_FIND[] =
    "SELECT id, number, type, priority, status, requester_id, coalesce(assignee_id, ''), "
    "created_at FROM tickets WHERE id = ? AND tenant_id = ?";
static const char SQL_HISTORY_ADD[] =
    "INSERT INTO ticket_history(tenant_id, id, ticket_id, actor_id, field, old_value, new_value, "
    "created_at) VALUES(?,?,?,?,?,?,?,?)";
static const char SQL_NOTIFY_PREFS[] =
    "SELECT email, preferences FROM users WHERE id = ? AND tenant_id = ? AND active = 1";
static const char SQL_NOTIFY_ADD[] =
    "INSERT INTO notifications(tenant_id, id, user_id, kind, title, message, ticket_id, "
    "created_at) VALUES(?,?,?,?,?,?,?,?)";

bool desk_is_staff(const struct hctx *h)
{
    return h->who.kind == PRINCIPAL_USER && (h->who.roles & ROLES_DESK_STAFF);
}

void desk_ticket_number(int64_t number, char out[DESK_TICKET_NUMBER_LEN])
{
    snprintf(out, DESK_TICKET_NUMBER_LEN, "TKT-%03lld", (long long)number);
}

int desk_ticket_find(struct hctx *h, const char *ticket_id, const char *field,
                     struct desk_ticket *ret)
{
    struct db *db = h->app->db;
    sqlite3_stmt *q = db_stmt(db, SQL_TICKET_FIND);
    sqlite3_bind_text(q, 1, ticket_id ? ticket_id : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_reset(q);
        return fail(h, TS_E_NOT_FOUND, field, "ticket not found");
    }
    struct desk_ticket t;
    memset(&t, 0, sizeof(t));
    snprintf(t.id, sizeof(t.id), "%s", col_text(q, 0));
    desk_ticket_number(sqlite3_column_int64(q, 1), t.number);
    snprintf(t.type, sizeof(t.type), "%s", col_text(q, 2));
    snprintf(t.priority, sizeof(t.priority), "%s", col_text(q, 3));
    snprintf(t.status, sizeof(t.status), "%s", col_text(q, 4));
    snprintf(t.requester_id, sizeof(t.requester_id), "%s", col_text(q, 5));
    snprintf(t.assignee_id, sizeof(t.assignee_id), "%s", col_text(q, 6));
    t.created_at = sqlite3_column_int64(q, 7);
    sqlite3_reset(q);
    /* requesters see their own tickets only; to them the others do not exist */
    if (!desk_is_staff(h) && (h->user_id == NULL || strcmp(t.requester_id, h->user_id) != 0))
        return fail(h, TS_E_NOT_FOUND, field, "ticket not found");
    *ret = t;
    return 0;
}

int desk_history_add(struct hctx *h, const char *ticket_id, const char *field,
                     const char *old_value, const char *new_value)
{
    struct db *db = h->app->db;
    int r = db_write_begin(db);
    if (r < 0)
        return r;
    char id[UUID_STR_LEN];
    id_uuid7(id);
    sqlite3_stmt *q = db_stmt(db, SQL_HISTORY_ADD);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, ticket_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, field, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, old_value, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, new_value, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 8, clock_now_ms());
    return sqlite3_step(q) == SQLITE_DONE ? 0 : TS_E_INTERNAL;
}

/* ---- notifications ---- */

static const char *const kind_names[] = {"ticket_assigned",    "ticket_comment",
                                         "ticket_status",      "approval_requested",
                                         "approval_decided",   "sla_breach",
                                         "deployment"};
/* desk.md's preference names: email_<what> and in_app_<what> */
static const char *const pref_what[] = {"ticket_assigned", "comments",  "status_changes",
                                        "approvals",       "approvals", "sla_breach",
                                        "deployments"};

const char *desk_notify_kind_name(enum desk_notify_kind kind)
{
    return kind_names[kind];
}

const char *desk_pref_key(enum desk_notify_kind kind, bool email)
{
    static char keys[2][7][40];
    char *k = keys[email][kind];
    if (!k[0])
        snprintf(k, 40, "%s_%s", email ? "email" : "in_app", pref_what[kind]);
    return k;
}

/* Preferences live in users.preferences under "desk_notifications"; every channel defaults
 * on, except email for comments and status changes (they are frequent). */
static bool pref_on(json_t *prefs, enum desk_notify_kind kind, bool email)
{
    json_t *v = json_object_get(json_object_get(prefs, "desk_notifications"),
                                desk_pref_key(kind, email));
    if (json_is_boolean(v))
        return json_is_true(v);
    return !(email && (kind == DESK_N_COMMENT || kind == DESK_N_STATUS));
}

static int notify_row(struct app *app, const char *tenant_id, const char *user_id,
                      enum desk_notify_kind kind, const char *title, const char *message,
                      const char *ticket_id, char id[UUID_STR_LEN])
{
    id_uuid7(id);
    sqlite3_stmt *q = db_stmt(app->db, SQL_NOTIFY_ADD);
    sqlite3_bind_text(q, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, kind_names[kind], -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, title, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, message, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, ticket_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 8, clock_now_ms());
    return sqlite3_step(q) == SQLITE_DONE ? 0 : TS_E_INTERNAL;
}

static void notify_push(struct app *app, const char *tenant_id, const char *user_id,
                        const char *id, enum desk_notify_kind kind, const char *title,
                        const char *ticket_id)
{
    char channel[128];
    snprintf(channel, sizeof(channel), "desk:%s:user:%s", tenant_id, user_id);
    struct buf b;
    buf_init(&b, 8192);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kstr(&w, "type", "notification");
    jw_kstr(&w, "id", id);
    jw_kstr(&w, "kind", kind_names[kind]);
    jw_kstr(&w, "title", title);
    jw_kstr(&w, "ticket_id", ticket_id);
    jw_obj_close(&w);
    if (jw_finish(&w) == 0)
        ws_hub_publish(app->hub, channel, b.data, b.len);
    buf_release(&b);
}

int desk_notify(struct app *app, const char *tenant_id, const char *actor_id,
                const char *user_id, enum desk_notify_kind kind, const char *title,
                const char *message, const char *ticket_id)
{
    if (user_id == NULL || !user_id[0] || (actor_id && strcmp(actor_id, user_id) == 0))
        return 0;
    sqlite3_stmt *q = db_stmt(app->db, SQL_NOTIFY_PREFS);
    sqlite3_bind_text(q, 1, user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, tenant_id, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_reset(q);
        return 0; /* gone or inactive: nobody to tell */
    }
    char email[256];
    snprintf(email, sizeof(email), "%s", col_text(q, 0));
    json_t *prefs = json_loads(col_text(q, 1), 0, NULL);
    sqlite3_reset(q);
    bool in_app = pref_on(prefs, kind, false), by_mail = pref_on(prefs, kind, true);
    json_decref(prefs);
    int r = db_write_begin(app->db);
    char id[UUID_STR_LEN] = "";
    if (r == 0 && in_app)
        r = notify_row(app, tenant_id, user_id, kind, title, message, ticket_id, id);
    if (r == 0 && by_mail)
        r = mail_enqueue(app->mailer, tenant_id, email, title, message) < 0 ? TS_E_INTERNAL : 0;
    if (r == 0 && in_app)
        notify_push(app, tenant_id, user_id, id, kind, title, ticket_id);
    return r;
}
