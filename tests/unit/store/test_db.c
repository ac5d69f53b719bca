/* Unit tests for the store: migrations apply once and in order, group commit, guard, readers. */
#include <stdlib.h>
#include <unistd.h>

#include "../check.h"
#include "core/embedded.h"
#include "core/err.h"
#include "store/db.h"

static char dir[] = "/tmp/tessera-db-XXXXXX";
static char path[256];

static int count(sqlite3 *h, const char *sql)
{
    sqlite3_stmt *st;
    int n = -1;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

static void test_migrations(void)
{
    struct db *db;
    char err[256];
    CHECK_INT(db_open(path, false, 250, &db, err, sizeof(err)), 0);
    sqlite3 *h = db_handle(db);
    CHECK_INT(db_schema_version(h), atoi(schema_files[schema_files_count - 1].name));
    CHECK_INT(count(h, "SELECT count(*) FROM schema_migrations"), (int)schema_files_count);
    CHECK_INT(count(h, "SELECT count(*) FROM sqlite_master WHERE name IN ('jobs','tenants','users')"), 3);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    db_close(db);
    /* reopening applies nothing twice */
    CHECK_INT(db_open(path, true, 250, &db, err, sizeof(err)), 0);
    CHECK_INT(count(db_handle(db), "SELECT count(*) FROM schema_migrations"), (int)schema_files_count);
    db_close(db);
}

static const char SQL_INS[] =
    "INSERT INTO tenants(id, name, domain, created_at) VALUES(?, 'T', ?, 0)";

static void test_group_commit(void)
{
    struct db *db;
    char err[256];
    CHECK_INT(db_open(path, false, 250, &db, err, sizeof(err)), 0);
    sqlite3 *reader;
    CHECK_INT(db_open_readonly(path, &reader), 0);
    CHECK(!db_in_write(db));
    for (int i = 0; i < 3; i++) {
        CHECK_INT(db_write_begin(db), 0); /* the first opens the tick's transaction */
        sqlite3_stmt *st = db_stmt(db, SQL_INS);
        char id[16], dom[32];
        snprintf(id, sizeof(id), "t%d", i);
        snprintf(dom, sizeof(dom), "d%d.example", i);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, dom, -1, SQLITE_TRANSIENT);
        CHECK(sqlite3_step(st) == SQLITE_DONE);
    }
    CHECK(db_in_write(db));
    /* not visible to another connection before the tick commits */
    CHECK_INT(count(reader, "SELECT count(*) FROM tenants"), 0);
    CHECK_INT(db_tick_commit(db), 0);
    CHECK(!db_in_write(db));
    CHECK_INT(count(reader, "SELECT count(*) FROM tenants"), 3);
    CHECK_INT(db_stats(db)->commits, 1); /* three writes, one commit */
    /* a reader cannot write */
    CHECK(sqlite3_exec(reader, "DELETE FROM tenants", NULL, NULL, NULL) != SQLITE_OK);
    sqlite3_close(reader);
    db_close(db);
}

/* A failed request's writes vanish; the tick's other writes stay. */
static void test_request_savepoints(void)
{
    struct db *db;
    char err[256];
    CHECK_INT(db_open(path, false, 250, &db, err, sizeof(err)), 0);
    sqlite3 *h = db_handle(db);
    const char *ids[] = {"ok1", "bad", "ok2"};
    for (int i = 0; i < 3; i++) {
        db_request_start(db);
        CHECK_INT(db_write_begin(db), 0);
        sqlite3_stmt *st = db_stmt(db, SQL_INS);
        char dom[32];
        snprintf(dom, sizeof(dom), "%s.sp.example", ids[i]);
        sqlite3_bind_text(st, 1, ids[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, dom, -1, SQLITE_TRANSIENT);
        CHECK(sqlite3_step(st) == SQLITE_DONE);
        CHECK_INT(db_request_end(db, i != 1), 0);
    }
    db_request_start(db); /* a request that writes nothing costs no savepoint */
    CHECK_INT(db_request_end(db, false), 0);
    CHECK_INT(db_tick_commit(db), 0);
    CHECK_INT(count(h, "SELECT count(*) FROM tenants WHERE domain LIKE '%.sp.example'"), 2);
    CHECK_INT(count(h, "SELECT count(*) FROM tenants WHERE id = 'bad'"), 0);
    db_close(db);
}

static void test_guard(void)
{
    struct db *db;
    char err[256];
    CHECK_INT(db_open(path, false, 20, &db, err, sizeof(err)), 0);
    static const char SQL_SLOW[] =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    db_guard_arm(db);
    sqlite3_stmt *st = db_stmt(db, SQL_SLOW);
    int rc = sqlite3_step(st);
    db_guard_disarm(db);
    CHECK_INT(rc, SQLITE_INTERRUPT);
    CHECK_INT(db_err(rc), TS_E_QUERY_TIMEOUT);
    CHECK(db_stats(db)->guard_interrupts >= 1);
    sqlite3_reset(st);
    db_close(db);
}

static void test_classify(void)
{
    char k[16], t[32];
    db_sql_classify("SELECT id FROM tenants WHERE x = ?", k, sizeof(k), t, sizeof(t));
    CHECK_STR(k, "select");
    CHECK_STR(t, "tenants");
    db_sql_classify("  insert INTO jobs(id) VALUES(?)", k, sizeof(k), t, sizeof(t));
    CHECK_STR(k, "insert");
    CHECK_STR(t, "jobs");
    db_sql_classify("UPDATE users SET name = ?", k, sizeof(k), t, sizeof(t));
    CHECK_STR(k, "update");
    CHECK_STR(t, "users");
    db_sql_classify("WITH c(x) AS (SELECT 1) SELECT x FROM c", k, sizeof(k), t, sizeof(t));
    CHECK_STR(k, "select");
    CHECK_STR(t, "c");
    db_sql_classify("SELECT fromage FROM (SELECT 1) ", k, sizeof(k), t, sizeof(t));
    CHECK_STR(t, "select"); /* a subquery names no table: the word that follows is reported */
    db_sql_classify("COMMIT", k, sizeof(k), t, sizeof(t));
    CHECK_STR(k, "commit");
    CHECK_STR(t, "none");
}

int main(void)
{
    test_classify();
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(path, sizeof(path), "%s/t.db", dir);
    test_migrations();
    test_group_commit();
    test_request_savepoints();
    test_guard();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    CHECK_DONE();
}
