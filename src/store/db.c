/* SQLite storage: writer connection, per-tick group commit, statement cache, guard, migrations. */
#include "store/db.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/embedded.h"
#include "core/err.h"
#include "core/log.h"
#ifdef TESSERA_TEST_VFS
#include "store/vfs_powercut.h"
#endif

#define STMT_CACHE 1024

struct stmt_slot {
    const char *sql;
    sqlite3_stmt *stmt;
};

/* WAL checkpoints run on their own thread and connection, not in the loop's commits: the
 * writer's automatic checkpoint cost up to a sixth of the loop's time under ingestion. The
 * writer's wal hook wakes the thread once the log passes CKPT_PAGES.
 * The thread copies frames but cannot make the log start over: SQLite restarts the WAL only
 * when a write transaction begins with every frame copied, and under a steady stream of ticks
 * the writer has always appended more before the thread is done, so the log grew without bound
 * (1.1 GB in 35 s of tools/check crash's write mix; every restart then recovered all of it).
 * So once the log passes CKPT_RESTART_PAGES and a pass of the thread has copied all of it, the
 * writer's next commit checkpoints itself, right after it, when nothing can be appended in
 * between: only the frames of the few ticks since are left to copy. RESTART mode also waits
 * (the loop's short busy timeout) for readers of the log to move on, so that the writer's next
 * transaction starts the log over. While a reader holds an old snapshot no pass gets that far,
 * and the log grows until it lets go, as it must. */
#define CKPT_PAGES 4000
#define CKPT_RESTART_PAGES (4 * CKPT_PAGES)
#define WAL_AUTOCHECKPOINT 1000  /* SQLite's default, when there is no checkpointer */
struct checkpointer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    sqlite3 *h;
    bool started, wanted, stop;
    bool caught_up;              /* the last pass copied every frame of the log it saw */
    int64_t runs;
};

/* How the last tick transactions ended, by number, for db_tx_result. A handful end per loop
 * iteration (the server's, the mailer's and the jobs' commits); 64 is far more. */
#define TX_RING 64

struct db {
    sqlite3 *h;
    struct checkpointer ckpt;
    bool in_tx;
    uint64_t tx_seq;             /* number of the tick transaction, counting BEGINs */
    bool committing;             /* db_tick_commit's COMMIT is running (commit_hook_cb) */
    bool must_rollback;          /* a failed tick whose ROLLBACK failed too: retried */
    bool wal_committed;          /* set by wal_hook_cb: a commit reached the WAL */
    struct {
        uint64_t seq;
        int err;
    } tx_ring[TX_RING];
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
    case SQLITE_FULL:
        return TS_E_STORAGE_FULL;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_CORRUPT: /* what storage handed back is not what was written (an EIO on read
                          * comes back as this, via SQLITE_IOERR_CORRUPTFS) */
        return TS_E_STORAGE;
    case SQLITE_NOMEM:
        return TS_E_NO_MEMORY;
    default:
        return TS_E_INTERNAL;
    }
}

/* ---------- storage faults ----------
 * SQLite reports every statement that fails to its error log (SQLITE_CONFIG_LOG), with the
 * result code, on the thread that ran it. A storage fault (I/O error, full disk, failed
 * allocation, pages that read back corrupt) is kept per thread, so the dispatcher can answer the request that met one with
 * 503/507 whatever its handler made of the failed step (a read loop that stops at the error
 * would otherwise answer a short list with 200), and process-wide with its time, for /health. */

static _Thread_local int thread_fault;      /* SQLite result code; 0: none since the clear */
static _Atomic int64_t fault_last_ms;       /* process-wide: the last fault, and when */
static _Atomic int fault_last_rc;
static _Atomic int64_t commit_last_ms;      /* the last tick that committed */
static _Atomic uint64_t fault_count;

static bool rc_is_fault(int rc)
{
    int p = rc & 0xFF;
    return p == SQLITE_IOERR || p == SQLITE_FULL || p == SQLITE_NOMEM || p == SQLITE_CANTOPEN ||
           p == SQLITE_CORRUPT;
}

static void fault_note(int rc)
{
    if (!rc_is_fault(rc))
        return;
    if (thread_fault == 0 || (rc & 0xFF) == SQLITE_FULL) /* a full disk says the most */
        thread_fault = rc;
    atomic_store(&fault_last_rc, rc);
    atomic_store(&fault_last_ms, clock_now_ms());
    atomic_fetch_add(&fault_count, 1);
}

static void sqlite_log_cb(void *arg, int rc, const char *msg)
{
    (void)arg, (void)msg;
    fault_note(rc);
}

void db_fault_clear(void)
{
    thread_fault = 0;
}

int db_fault_get(void)
{
    return thread_fault ? db_err(thread_fault) : 0;
}

uint64_t db_fault_count(void)
{
    return atomic_load(&fault_count);
}

int db_fault_recent(int64_t window_ms)
{
    int64_t at = atomic_load(&fault_last_ms), now = clock_now_ms();
    if (at == 0 || now - at > window_ms || atomic_load(&commit_last_ms) > at)
        return 0;
    return db_err(atomic_load(&fault_last_rc));
}

/* Failure injection for tests (tests/api/test_faults.py, tools/check faults): when the process
 * runs under libfiu's fiu-run, libfiu is loaded, and SQLite's allocator is wrapped so that
 * every allocation fails while the point "tessera/sqlite/malloc" is enabled (fiu-ctrl) — the
 * way SQLite's own OOM tests fail its allocator (SQLITE_CONFIG_MALLOC). SQLite is built to
 * survive a failed allocation; Tessera's own small allocations abort instead (src/core/arena.c),
 * as redis does, so failing libc's malloc as a whole is not a fault the server claims to
 * survive. Without libfiu nothing is wrapped. */
#define FAULT_SQLITE_MALLOC "tessera/sqlite/malloc"
static int (*fiu_fail_fn)(const char *name);
static sqlite3_mem_methods mem_base;

static void *fault_malloc(int n)
{
    if (fiu_fail_fn(FAULT_SQLITE_MALLOC)) {
        fault_note(SQLITE_NOMEM);
        return NULL;
    }
    return mem_base.xMalloc(n);
}

static void *fault_realloc(void *p, int n)
{
    if (fiu_fail_fn(FAULT_SQLITE_MALLOC)) {
        fault_note(SQLITE_NOMEM);
        return NULL;
    }
    return mem_base.xRealloc(p, n);
}

/* Before SQLite's first use in the process (db_open is the server's). */
static void faults_init(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    sqlite3_config(SQLITE_CONFIG_LOG, sqlite_log_cb, NULL);
    /* no allocation statistics: nothing reads them, and keeping them takes a process-wide mutex
     * on every SQLite malloc and free, which the loop and every worker contend for */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    *(void **)&fiu_fail_fn = dlsym(RTLD_DEFAULT, "fiu_fail");
    if (fiu_fail_fn == NULL || sqlite3_config(SQLITE_CONFIG_GETMALLOC, &mem_base) != SQLITE_OK)
        return;
    sqlite3_mem_methods m = mem_base;
    m.xMalloc = fault_malloc;
    m.xRealloc = fault_realloc;
    if (sqlite3_config(SQLITE_CONFIG_MALLOC, &m) == SQLITE_OK)
        log_msg(LOG_WARN, "libfiu is loaded: SQLite allocations fail while the fiu point "
                          FAULT_SQLITE_MALLOC " is enabled");
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

/* Only the tick commits. After SQLite has rolled the tick's transaction back by itself (see
 * tx_lost), a later statement would run, and commit, on its own: part of a request made
 * durable while the rest of it was lost. Vetoed, that statement fails instead. */
static int commit_hook_cb(void *arg)
{
    struct db *db = arg;
    return db->in_tx && !db->committing;
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
        int log = -1, copied = -1;
        int rc = sqlite3_wal_checkpoint_v2(c->h, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
        pthread_mutex_lock(&c->mu);
        c->caught_up = rc == SQLITE_OK && log > 0 && copied == log;
        if (c->caught_up && log >= CKPT_RESTART_PAGES)
            c->wanted = false; /* the writer finishes (see CKPT_PAGES), or wakes us again */
        c->runs++;
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* SQLite calls it after every commit that reached the WAL, and only then: how db_tick_commit
 * tells a COMMIT that failed from one that committed and then reported an error (an
 * allocation that failed on the way out makes sqlite3_exec answer SQLITE_NOMEM). It also
 * wakes the checkpointer, or without one checkpoints as SQLite's default hook would. */
static int wal_hook_cb(void *arg, sqlite3 *h, const char *name, int pages)
{
    struct db *db = arg;
    struct checkpointer *c = &db->ckpt;
    db->wal_committed = true;
    if (!c->started) {
        if (pages >= WAL_AUTOCHECKPOINT)
            sqlite3_wal_checkpoint(h, name);
    } else if (pages >= CKPT_PAGES) {
        pthread_mutex_lock(&c->mu);
        bool finish = c->caught_up && pages >= CKPT_RESTART_PAGES; /* see CKPT_PAGES */
        c->caught_up = false;
        pthread_mutex_unlock(&c->mu);
        int log = -1, copied = -1;
        if (finish)
            sqlite3_wal_checkpoint_v2(h, name, SQLITE_CHECKPOINT_RESTART, &log, &copied);
        if (log <= 0 || copied != log) {
            pthread_mutex_lock(&c->mu);
            c->wanted = true;
            pthread_cond_signal(&c->cond);
            pthread_mutex_unlock(&c->mu);
        }
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
}

static void ckpt_stop(struct db *db)
{
    struct checkpointer *c = &db->ckpt;
    if (!c->started)
        return;
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
    faults_init(); /* before SQLite's first use, a test VFS's registration included */
#ifdef TESSERA_TEST_VFS /* -Dtest_vfs=true: TESSERA_TEST_VFS=powercut, before the first open */
    if (vfs_powercut_install() < 0) {
        snprintf(err, errlen, "TESSERA_TEST_VFS: cannot install that test VFS");
        return -EINVAL;
    }
#endif
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
    /* when the log starts over its file is cut back to 64 MiB, not left at its largest size */
    if (r == 0)
        r = exec(db->h, "PRAGMA journal_size_limit=67108864", err, errlen);
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
    sqlite3_commit_hook(db->h, commit_hook_cb, db);
    ckpt_start(db, path, durability_full);
    sqlite3_wal_hook(db->h, wal_hook_cb, db);
    *ret = db;
    return 0;
}

struct db *db_close(struct db *db)
{
    if (db == NULL)
        return NULL;
    if (db->h) {
        if (db->in_tx && !sqlite3_get_autocommit(db->h)) {
            sqlite3_busy_timeout(db->h, 2000);
            db->committing = true;
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

/* ---------- the tick's transaction ---------- */

/* Logs a tick rolled back at most once a second: a full disk fails every tick, and the log
 * may well be on that disk. */
static void rollback_log(const char *why, int rc)
{
    static int64_t logged_ms;
    static int64_t missed;
    int64_t now = clock_now_ms();
    if (now - logged_ms < 1000) {
        missed++;
        return;
    }
    log_msg(LOG_ERROR, "the tick's transaction was rolled back: %s: %s (%lld more since the "
                       "last report)", why, sqlite3_errstr(rc), (long long)missed);
    logged_ms = now;
    missed = 0;
}

/* The tick's transaction has ended: committed (err 0) or rolled back (err < 0). */
static void tx_ended(struct db *db, int err)
{
    db->in_tx = false;
    db->tx_ring[db->tx_seq % TX_RING].seq = db->tx_seq;
    db->tx_ring[db->tx_seq % TX_RING].err = err;
    if (err < 0)
        db->stats.tx_failures++;
}

/* After some I/O, disk-full and out-of-memory errors SQLite rolls the whole transaction back by
 * itself ("Response To Errors Within A Transaction", lang_transaction.html). */
static bool tx_lost(const struct db *db)
{
    return db->in_tx && sqlite3_get_autocommit(db->h);
}

/* What a transaction that was lost, or could not commit, fails its requests with. */
static int tx_fault_err(int rc)
{
    if (rc == 0)
        rc = thread_fault ? thread_fault : atomic_load(&fault_last_rc);
    int r = db_err(rc);
    return r == TS_E_STORAGE_FULL || r == TS_E_NO_MEMORY ? r : TS_E_STORAGE;
}

static void tx_check_lost(struct db *db)
{
    if (tx_lost(db)) {
        rollback_log("by SQLite, after", thread_fault ? thread_fault
                                                     : atomic_load(&fault_last_rc));
        tx_ended(db, tx_fault_err(0));
    }
}

/* Rolls back what SQLite still holds open; 0, or -1 when even that failed (retried by the
 * next begin or commit: until it succeeds, nothing is written). */
static int tx_abort(struct db *db)
{
    if (!sqlite3_get_autocommit(db->h))
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    db->must_rollback = !sqlite3_get_autocommit(db->h);
    return db->must_rollback ? -1 : 0;
}

uint64_t db_tx_seq(const struct db *db)
{
    return db->in_tx ? db->tx_seq : 0;
}

int db_tx_result(const struct db *db, uint64_t seq)
{
    if (seq == 0)
        return 0;
    if (db->in_tx && seq == db->tx_seq)
        return 1;
    if (db->tx_ring[seq % TX_RING].seq == seq)
        return db->tx_ring[seq % TX_RING].err;
    return TS_E_STORAGE; /* too old to know: never claim a commit that may not have happened */
}

int db_write_begin(struct db *db)
{
    tx_check_lost(db);
    if (db->must_rollback && tx_abort(db) < 0)
        return TS_E_STORAGE;
    if (!db->in_tx) {
        int rc = sqlite3_exec(db->h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            fault_note(rc);
            return db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
        }
        db->in_tx = true;
        db->tx_seq++;
    }
    if (db->request_open && !db->savepoint_set) {
        int rc = sqlite3_exec(db->h, "SAVEPOINT request", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            fault_note(rc);
            return db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
        }
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
    if (db->savepoint_set && !tx_lost(db)) {
        if (!ok && !db->keep)
            rc = sqlite3_exec(db->h, "ROLLBACK TO request", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db->h, "RELEASE request", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            /* (no memory, say) the request's writes can be neither undone alone nor told apart
             * from the others': the whole tick goes, and every answer that stood on it */
            fault_note(rc);
            rollback_log("a request's savepoint could not end", rc);
            tx_abort(db);
            tx_ended(db, tx_fault_err(rc));
        }
    }
    db->request_open = false;
    db->savepoint_set = false;
    tx_check_lost(db);
    return rc == SQLITE_OK ? 0 : tx_fault_err(rc);
}

int db_tick_commit(struct db *db)
{
    stmts_sweep(db);
    tx_check_lost(db);
    if (db->must_rollback)
        tx_abort(db);
    if (!db->in_tx)
        return 0;
    db->committing = true;
    db->wal_committed = false;
    int rc = sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL);
    db->committing = false;
    if (rc != SQLITE_OK && db->wal_committed && sqlite3_get_autocommit(db->h)) {
        log_msg(LOG_WARN, "COMMIT answered \"%s\" after committing", sqlite3_errstr(rc));
        rc = SQLITE_OK;
    }
    if (rc == SQLITE_OK) {
        db->stats.commits++;
        atomic_store(&commit_last_ms, clock_now_ms());
        tx_ended(db, 0);
        return 0;
    }
    if ((rc & 0xFF) == SQLITE_BUSY) {
        db->stats.busy_retries++;
        return TS_E_BUSY; /* the transaction stays open; COMMIT is retried next iteration */
    }
    /* I/O error, full disk, no memory: the tick's writes cannot be made durable. Roll them back
     * and fail the requests that made them (db_tx_result) instead of retrying forever with every
     * response held — which is what an open transaction would mean. */
    fault_note(rc);
    rollback_log("COMMIT failed", rc);
    tx_abort(db);
    tx_ended(db, tx_fault_err(rc));
    return tx_fault_err(rc);
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
            int rc = sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->stmt, NULL);
            if (rc != SQLITE_OK) {
                fault_note(rc); /* reading the schema can fail too: not in SQLite's error log */
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
