/* The audit log writer. Reading it is the GET /api/v1/audit route's job. */
#include "auth/audit.h"

#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"

static const char SQL_AUDIT[] =
    "INSERT INTO audit_log(tenant_id, id, actor_id, actor_kind, method, route, path, target, "
    "status, request_id, created_at) VALUES(?,?,?,?,?,?,?,?,?,?,?)";

int audit_write(struct db *db, const struct audit_entry *e)
{
    int r = db_write_begin(db);
    if (r < 0) {
        log_msg(LOG_ERROR, "audit: cannot write (%d) for %s %s", r, e->method, e->path);
        return r;
    }
    char id[UUID_STR_LEN];
    id_uuid7(id);
    sqlite3_stmt *st = db_stmt(db, SQL_AUDIT);
    sqlite3_bind_text(st, 1, e->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, e->actor_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, e->actor_kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, e->method, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, e->route, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, e->path, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, e->target, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 9, e->status);
    sqlite3_bind_text(st, 10, e->request_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, clock_now_ms());
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}
