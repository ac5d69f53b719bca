/* SQLite storage: writer connection, per-tick group commit, statement cache, guard, migrations. */
#include "store/db.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/embedded.h"
#include "core/err.h"
#include "core/log.h"

#define STMT_CACHE 1024

struct stmt_slot {
    const char *sql;
    sqlite3_stmt *stmt;
};

/* WAL checkpoints run on their own thread and connection, not in the loop's commits: the
 * writer's automatic checkpoint cost up to a sixth of the loop's time under ingestion. The
 * writer's wal hook wakes the thread once the log passes CKPT_PAGES. */
#define CKPT_PAGES 4000
struct checkpointer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    sqlite3 *h;
    bool started, wanted, stop;
    int64_t runs;
};

struct db {
    sqlite3 *h;
    struct checkpointer ckpt;
    bool in_tx;
    bool request_open, savepoint_set, keep;
    int guard_ms;
    uint64_t guard_deadline_ns;  /* 0 = disarmed */
    struct db_stats stats;
    struct stmt_slot stmts[STMT_CACHE];
    /* statements handed out since the last sweep: a SELECT left stepped but not reset would
     * hold the connection's read snapshot open (stale reads, no checkpoints) until its next use */
    sqlite3_stmt *used[64];
    int nused;
    bool used_overflow;
};

/* Resets every statement handed out since the last sweep. */
static void stmts_sweep(struct db *db)
{
    if (db->used_overflow) {
        for (sqlite3_stmt *st = sqlite3_next_stmt(db->h, NULL); st; st = sqlite3_next_stmt(db->h, st))
            if (sqlite3_stmt_busy(st))
                sqlite3_reset(st);
    } else {
        for (int i = 0; i < db->nused; i++)
            sqlite3_reset(db->used[i]);
    }
    db->nused = 0;
    db->used_overflow = false;
}

static void stmt_used(struct db *db, sqlite3_stmt *st)
{
    if (db->nused < (int)(sizeof(db->used) / sizeof(db->used[0])))
        db->used[db->nused++] = st;
    else
        db->used_overflow = true;
}

static db_profile_fn profile_fn;
static void *profile_arg;

void db_profile_hook(db_profile_fn fn, void *arg)
{
    profile_fn = fn;
    profile_arg = arg;
}

static int profile_cb(unsigned type, void *ctx, void *p, void *x)
{
    (void)ctx;
    if (type == SQLITE_TRACE_PROFILE && profile_fn) {
        const char *sql = sqlite3_sql(p);
        profile_fn(profile_arg, sql ? sql : "", *(sqlite3_uint64 *)x);
    }
    return 0;
}

static void profile_attach(sqlite3 *h)
{
    if (profile_fn)
        sqlite3_trace_v2(h, SQLITE_TRACE_PROFILE, profile_cb, NULL);
}

static const char *skip_space(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == '(')
        p++;
    return p;
}

static size_t word_len(const char *p)
{
    size_t n = 0;
    while (isalnum((unsigned char)p[n]) || p[n] == '_')
        n++;
    return n;
}

static void copy_lower(char *out, size_t outlen, const char *p, size_t n)
{
    size_t k = 0;
    for (; k < n && k + 1 < outlen; k++)
        out[k] = (char)tolower((unsigned char)p[k]);
    out[k] = '\0';
}

void db_sql_classify(const char *sql, char *kind, size_t kindlen, char *table, size_t tablelen)
{
    const char *p = skip_space(sql);
    size_t n = word_len(p);
    copy_lower(kind, kindlen, p, n);
    if (strcmp(kind, "with") == 0)
        snprintf(kind, kindlen, "select");
    snprintf(table, tablelen, "none");
    /* the table is the word after the first FROM, INTO or UPDATE */
    for (const char *q = p; *q; q++) {
        if (q != sql && (isalnum((unsigned char)q[-1]) || q[-1] == '_'))
            continue;
        size_t w = word_len(q);
        if ((w == 4 && (!strncasecmp(q, "from", 4) || !strncasecmp(q, "into", 4))) ||
            (w == 6 && !strncasecmp(q, "update", 6))) {
            const char *t = skip_space(q + w);
            size_t tl = word_len(t);
            if (tl > 0) {
                copy_lower(table, tablelen, t, tl);
                return;
            }
        }
        if (w > 0)
            q += w - 1;
    }
}

int db_err(int rc)
{
    switch (rc & 0xFF) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return TS_E_BUSY;
    case SQLITE_INTERRUPT:
        return TS_E_QUERY_TIMEOUT;
    case SQLITE_CONSTRAINT:
        return TS_E_CONFLICT;
    case SQLITE_TOOBIG:
        return TS_E_TOO_LARGE;
    default:
        return TS_E_INTERNAL;
    }
}

static int exec(sqlite3 *h, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    int rc = sqlite3_exec(h, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        if (err)
            snprintf(err, errlen, "%s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
    }
    return 0;
}

int db_schema_version(sqlite3 *h)
{
    sqlite3_stmt *st;
    int v = 0;
    if (sqlite3_prepare_v2(h, "SELECT coalesce(max(version),0) FROM schema_migrations", -1, &st,
                           NULL) != SQLITE_OK)
        return 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int migration_apply(sqlite3 *h, int version, const struct embedded_file *f, char *err,
                           size_t errlen)
{
    char e2[512];
    int r = exec(h, (const char *)f->data, e2, sizeof(e2));
    if (r < 0) {
        snprintf(err, errlen, "migration %s failed: %s", f->name, e2);
        return r;
    }
    sqlite3_stmt *st;
    sqlite3_prepare_v2(h, "INSERT INTO schema_migrations(version, name, applied_at) VALUES(?,?,?)",
                       -1, &st, NULL);
    sqlite3_bind_int(st, 1, version);
    sqlite3_bind_text(st, 2, f->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, clock_now_ms());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "recording migration %s: %s", f->name, sqlite3_errmsg(h));
        return TS_E_INTERNAL;
    }
    return 0;
}

/* Applies every embedded schema/NNN_*.sql newer than the database, in one transaction. */
int db_migrate(sqlite3 *h, char *err, size_t errlen)
{
    int r = exec(h,
                 "CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY,"
                 " name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
                 err, errlen);
    if (r < 0)
        return r;
    r = exec(h, "BEGIN IMMEDIATE", err, errlen);
    if (r < 0)
        return r;
    int have = db_schema_version(h), last = 0;
    for (size_t i = 0; i < schema_files_count && r == 0; i++) {
        const struct embedded_file *f = &schema_files[i];
        int version = atoi(f->name);
        if (version <= last) {
            snprintf(err, errlen, "migration %s is out of order", f->name);
            r = TS_E_INTERNAL;
            break;
        }
        last = version;
        if (version > have)
            r = migration_apply(h, version, f, err, errlen);
    }
    if (r < 0) {
        exec(h, "ROLLBACK", NULL, 0);
        return r;
    }
    return exec(h, "COMMIT", err, errlen);
}

static int guard_cb(void *arg)
{
    struct db *db = arg;
    if (db->guard_deadline_ns && clock_mono_ns() > db->guard_deadline_ns) {
        db->stats.guard_interrupts++;
        return 1;
    }
    return 0;
}

static void *ckpt_main(void *arg)
{
    struct checkpointer *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->wanted && !c->stop)
            pthread_cond_wait(&c->cond, &c->mu);
        if (c->stop)
            break;
        c->wanted = false;
        pthread_mutex_unlock(&c->mu);
        /* PASSIVE: copies what no reader still needs, never waits on readers or the writer */
        sqlite3_wal_checkpoint_v2(c->h, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&c->mu);
        c->runs++;
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int wal_hook_cb(void *arg, sqlite3 *h, const char *name, int pages)
{
    (void)h, (void)name;
    struct checkpointer *c = arg;
    if (pages >= CKPT_PAGES) {
        pthread_mutex_lock(&c->mu);
        c->wanted = true;
        pthread_cond_signal(&c->cond);
        pthread_mutex_unlock(&c->mu);
    }
    return SQLITE_OK;
}

/* Starts the checkpoint thread with its own connection; without it the writer checkpoints
 * itself (SQLite's default), so a failure here costs speed, not safety. */
static void ckpt_start(struct db *db, const char *path, bool durability_full)
{
    struct checkpointer *c = &db->ckpt;
    if (sqlite3_open_v2(path, &c->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        sqlite3_close(c->h);
        c->h = NULL;
        return;
    }
    sqlite3_busy_timeout(c->h, 100);
    sqlite3_exec(c->h, durability_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                 NULL, NULL, NULL);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    if (pthread_create(&c->thread, NULL, ckpt_main, c) != 0) {
        sqlite3_close(c->h);
        c->h = NULL;
        return;
    }
    c->started = true;
    sqlite3_wal_autocheckpoint(db->h, 0);
    sqlite3_wal_hook(db->h, wal_hook_cb, c);
}

static void ckpt_stop(struct db *db)
{
    struct checkpointer *c = &db->ckpt;
    if (!c->started)
        return;
    sqlite3_wal_hook(db->h, NULL, NULL);
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    sqlite3_close(c->h);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    c->started = false;
}

int db_open(const char *path, bool durability_full, int guard_ms, struct db **ret, char *err,
            size_t errlen)
{
    struct db *db = calloc(1, sizeof(*db));
    if (db == NULL)
        return -ENOMEM;
    db->guard_ms = guard_ms;
    int rc = sqlite3_open_v2(path, &db->h,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database '%s': %s", path, sqlite3_errstr(rc));
        db_close(db);
        return TS_E_INTERNAL;
    }
    sqlite3_extended_result_codes(db->h, 1);
    profile_attach(db->h);
    int r = exec(db->h, "PRAGMA journal_mode=WAL", err, errlen);
    if (r == 0)
        r = exec(db->h, durability_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                 err, errlen);
    if (r == 0)
        r = exec(db->h, "PRAGMA foreign_keys=ON", err, errlen);
    /* Statement journals of trigger-laden writes stay in memory, and a tick's dirty pages fit
     * the cache instead of spilling to the WAL mid-statement (ingestion measured ~5x). */
    if (r == 0)
        r = exec(db->h, "PRAGMA temp_store=MEMORY; PRAGMA cache_size=-65536", err, errlen);
    if (r == 0) {
        sqlite3_busy_timeout(db->h, 2000); /* migrations may wait; the loop sets 5 ms below */
        r = db_migrate(db->h, err, errlen);
    }
    if (r < 0) {
        db_close(db);
        return r;
    }
    sqlite3_busy_timeout(db->h, 5);
    sqlite3_progress_handler(db->h, 1000, guard_cb, db);
    ckpt_start(db, path, durability_full);
    *ret = db;
    return 0;
}

struct db *db_close(struct db *db)
{
    if (db == NULL)
        return NULL;
    if (db->h) {
        if (db->in_tx) {
            sqlite3_busy_timeout(db->h, 2000);
            if (exec(db->h, "COMMIT", NULL, 0) < 0)
                log_msg(LOG_ERROR, "final commit failed: %s", sqlite3_errmsg(db->h));
        }
        for (int i = 0; i < STMT_CACHE; i++)
            sqlite3_finalize(db->stmts[i].stmt);
        ckpt_stop(db);
        sqlite3_busy_timeout(db->h, 2000);
        sqlite3_wal_checkpoint_v2(db->h, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        sqlite3_close(db->h);
    }
    free(db);
    return NULL;
}

sqlite3 *db_handle(struct db *db)
{
    return db->h;
}

const struct db_stats *db_stats(const struct db *db)
{
    return &db->stats;
}

bool db_in_write(const struct db *db)
{
    return db->in_tx;
}

int db_write_begin(struct db *db)
{
    if (!db->in_tx) {
        int rc = sqlite3_exec(db->h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
        db->in_tx = true;
    }
    if (db->request_open && !db->savepoint_set) {
        int rc = sqlite3_exec(db->h, "SAVEPOINT request", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
        db->savepoint_set = true;
    }
    return 0;
}

void db_request_start(struct db *db)
{
    db->request_open = true;
    db->savepoint_set = false;
    db->keep = false;
}

void db_request_keep(struct db *db)
{
    db->keep = true;
}

int db_request_end(struct db *db, bool ok)
{
    int rc = SQLITE_OK;
    stmts_sweep(db);
    if (db->savepoint_set) {
        if (!ok && !db->keep)
            rc = sqlite3_exec(db->h, "ROLLBACK TO request", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db->h, "RELEASE request", NULL, NULL, NULL);
    }
    db->request_open = false;
    db->savepoint_set = false;
    return rc == SQLITE_OK ? 0 : TS_E_INTERNAL;
}

int db_tick_commit(struct db *db)
{
    stmts_sweep(db);
    if (!db->in_tx)
        return 0;
    int rc = sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        db->stats.busy_retries++;
        return TS_E_BUSY; /* the transaction stays open; COMMIT is retried next iteration */
    }
    db->in_tx = false;
    db->stats.commits++;
    return 0;
}

void db_guard_arm(struct db *db)
{
    db->guard_deadline_ns = clock_mono_ns() + (uint64_t)db->guard_ms * 1000000u;
}

void db_guard_disarm(struct db *db)
{
    db->guard_deadline_ns = 0;
}

sqlite3_stmt *db_stmt(struct db *db, const char *sql)
{
    size_t hash = ((uintptr_t)sql >> 4) % STMT_CACHE;
    for (size_t k = 0; k < STMT_CACHE; k++) {
        struct stmt_slot *s = &db->stmts[(hash + k) % STMT_CACHE];
        if (s->sql == sql) {
            sqlite3_reset(s->stmt);
            sqlite3_clear_bindings(s->stmt);
            db->stats.queries++;
            stmt_used(db, s->stmt);
            return s->stmt;
        }
        if (s->sql == NULL) {
            if (sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->stmt, NULL) !=
                SQLITE_OK) {
                log_msg(LOG_ERROR, "prepare failed: %s: %s", sqlite3_errmsg(db->h), sql);
                return NULL;
            }
            s->sql = sql;
            db->stats.queries++;
            stmt_used(db, s->stmt);
            return s->stmt;
        }
    }
    return NULL; /* cache full: a programmer error, there are not that many statements */
}

sqlite3_stmt *db_rows_insert(sqlite3 *db, const char *into, const char *shape, const char *fixed,
                             int nrows)
{
    sqlite3_str *q = sqlite3_str_new(db);
    sqlite3_str_appendf(q, "INSERT INTO %s VALUES", into);
    for (int r = 0, k = 4; r < nrows; r++) {
        sqlite3_str_appendall(q, r ? ",(" : "(");
        for (const char *c = shape; *c; c++) {
            const char *f = strchr(fixed, *c);
            int param = f ? (int)(f - fixed) + 1 : k++;
            sqlite3_str_appendf(q, "%s?%d", c == shape ? "" : ",", param);
        }
        sqlite3_str_appendall(q, ")");
    }
    char *text = sqlite3_str_finish(q);
    sqlite3_stmt *st = NULL;
    if (text)
        sqlite3_prepare_v3(db, text, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    sqlite3_free(text);
    return st;
}

int db_open_readonly(const char *path, sqlite3 **ret)
{
    sqlite3 *h;
    int rc = sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        sqlite3_close(h);
        return db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
    }
    sqlite3_busy_timeout(h, 5000);
    profile_attach(h);
    *ret = h;
    return 0;
}

int db_ping(sqlite3 *h)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(h, "SELECT count(*) FROM schema_migrations", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : (db_err(rc) ? db_err(rc) : TS_E_INTERNAL);
}
