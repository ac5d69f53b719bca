/* SQLite storage: the loop's writer connection with group commit per tick, guard, migrations. */
#ifndef TS_DB_H
#define TS_DB_H
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct db;

struct db_stats {
    int64_t commits, busy_retries, guard_interrupts, queries;
    int64_t tx_failures;         /* tick transactions rolled back by a storage fault */
};

/* Opens (creating) path as the writer: WAL, synchronous NORMAL or FULL, foreign keys, a short
 * busy timeout (the loop must not stall on another process). Applies pending migrations. */
int db_open(const char *path, bool durability_full, int guard_ms, struct db **ret, char *err,
            size_t errlen);
struct db *db_close(struct db *db);             /* commits, checkpoints (TRUNCATE), closes */
sqlite3 *db_handle(struct db *db);
const struct db_stats *db_stats(const struct db *db);

/* Starts this tick's write transaction if none is open. Loop thread only.
 * 0, or TS_E_BUSY if another process holds the write lock. */
int db_write_begin(struct db *db);
bool db_in_write(const struct db *db);
/* Brackets one request's handler: its writes go under a savepoint, released on success and
 * rolled back on failure, so a failed request leaves nothing half-written even though it
 * shares the tick's transaction with others. */
void db_request_start(struct db *db);
int db_request_end(struct db *db, bool ok);
/* This request's writes stand even though it fails (a security event it must record, such
 * as revoking a refresh-token family on reuse). */
void db_request_keep(struct db *db);
/* Commits the tick's transaction, if any. 0; TS_E_BUSY (it stays open: retry next iteration);
 * or, when it cannot be made durable (I/O error, full disk, no memory), TS_E_STORAGE,
 * TS_E_STORAGE_FULL or TS_E_NO_MEMORY after rolling it back. */
int db_tick_commit(struct db *db);
/* The number of the open tick transaction (0: none). Whoever answers for a write keeps it and
 * asks db_tx_result once the tick is over: 1 still open, 0 committed, or the error that rolled
 * it back (a failed commit, or SQLite's own rollback after an I/O error). */
uint64_t db_tx_seq(const struct db *db);
int db_tx_result(const struct db *db, uint64_t seq);
/* Storage faults SQLite reported on this thread (its error log): clear before a handler runs,
 * get after it — 0, or TS_E_STORAGE / TS_E_STORAGE_FULL / TS_E_NO_MEMORY. */
void db_fault_clear(void);
int db_fault_get(void);
/* The last storage fault in the process if it happened within window_ms and no tick has
 * committed since (for /health and /ready); else 0. */
int db_fault_recent(int64_t window_ms);
/* How many storage faults SQLite has reported in this process (any thread). */
uint64_t db_fault_count(void);
/* Arms the loop-thread guard: statements stop (SQLITE_INTERRUPT) once guard_ms has passed. */
void db_guard_arm(struct db *db);
void db_guard_disarm(struct db *db);

/* Prepared-statement cache keyed by the SQL text's address (SQL lives in static consts). */
sqlite3_stmt *db_stmt(struct db *db, const char *sql);

/* Statement profiling: fn gets every finished statement's SQL and run time on every connection
 * opened after the hook is set (writer and pool readers; fn must be thread-safe). */
typedef void (*db_profile_fn)(void *arg, const char *sql, uint64_t ns);
void db_profile_hook(db_profile_fn fn, void *arg);
/* Splits SQL into its statement kind ("select", "insert", ...) and first table named. */
void db_sql_classify(const char *sql, char *kind, size_t kindlen, char *table, size_t tablelen);

/* Prepares "INSERT INTO <into> VALUES (...), ..." for nrows rows (bulk loaders). shape has one
 * letter per column: a letter at position k of fixed (at most 3) binds ?k+1 in every row — the
 * same value, e.g. the tenant; any other letter takes the next fresh parameter from ?4 on, row
 * after row. Returns a persistent statement, or NULL. */
sqlite3_stmt *db_rows_insert(sqlite3 *db, const char *into, const char *shape, const char *fixed,
                             int nrows);
/* Read-only connection for a worker thread. */
int db_open_readonly(const char *path, sqlite3 **ret);
/* Applies migrations on an open connection (used by db_open and by `tessera admin`). */
int db_migrate(sqlite3 *h, char *err, size_t errlen);
/* Maps a SQLite result code to a Tessera error code. */
int db_err(int rc);
/* The schema version after migrations (highest applied). */
int db_schema_version(sqlite3 *h);
/* Ready check: runs a real query on the connection. 0 or negative. */
int db_ping(sqlite3 *h);
#endif
