/* Durable jobs over the worker pool: submit, run, progress, finish, restart recovery. */
#include "jobs/jobs.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"

#define MAX_PROGRESS 1024

struct progress {
    char id[UUID_STR_LEN];
    double fraction;
};

/* A worker's write request, on the worker's stack until the loop has applied and committed it. */
struct write_req {
    job_apply_fn apply;
    void *arg;
    int result;
    bool done;
    struct write_req *next;
    uint64_t tx;                 /* the tick transaction it was applied in (db_tx_seq) */
};

struct jobs {
    struct db *db;
    uv_async_t wake;             /* job_write -> loop */
    bool has_wake;
    uv_timer_t rescue;           /* jobs stranded by a storage fault (rescue_cb) */
    struct job_run *live;        /* loop only: every run in memory */
    uint64_t faults_seen;        /* loop only: db_fault_count at the last look */
    bool rescue_due;
    bool rescue_more;            /* the last sweep left stranded jobs for want of pool room */
    bool stopping;               /* under mu: job_write answers TS_E_UNAVAILABLE */
    struct write_req *wq;        /* under mu: waiting to be applied */
    struct write_req *applied;   /* loop only: applied, waiting for the commit */
    pthread_cond_t wq_cond;
    struct pool *pool;           /* background kinds */
    struct pool *fg_pool;        /* foreground kinds, or NULL: pool */
    const struct job_kind *kinds;
    size_t nkinds;
    atomic_bool cancel;
    jobs_finish_fn on_finish;
    void (*on_commit)(void *arg);
    void *on_commit_arg;
    void *on_finish_arg;
    pthread_mutex_t mu;
    struct progress prog[MAX_PROGRESS];
    int nprog;
    int tenant_cap;              /* loop only: queued + running per tenant, 0 = none */
    bool tenant_refused;         /* loop only: the last refusal was tenant_cap's */
};

static const char SQL_INSERT[] =
    "INSERT INTO jobs(id, tenant_id, kind, status, params, created_at) "
    "VALUES(?, ?, ?, 'queued', ?, ?)";
static const char SQL_ACTIVE[] =
    "SELECT count(*) FROM jobs WHERE tenant_id = ? AND kind = ? AND status IN ('queued','running')";
static const char SQL_TENANT_ACTIVE[] =
    "SELECT count(*) FROM jobs WHERE tenant_id = ? AND status IN ('queued','running')";
static const char SQL_START[] =
    "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?";
static const char SQL_FINISH[] =
    "UPDATE jobs SET status = ?, result = ?, error = ?, progress = CASE WHEN ? = 'completed' "
    "THEN 1 ELSE progress END, finished_at = ? WHERE id = ?";
static const char SQL_REQUEUE[] =
    "UPDATE jobs SET status = 'queued', checkpoint = ? WHERE id = ?";
static const char SQL_PROGRESS[] = "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'";
static const char SQL_RECOVER_FAIL[] =
    "UPDATE jobs SET status = 'failed', error = 'interrupted by restart too many times', "
    "finished_at = ? WHERE status = 'running' AND attempts >= ?  AND kind = ?";
static const char SQL_RECOVER_ABANDON[] =
    "SELECT tenant_id, params FROM jobs WHERE status = 'running' AND attempts >= ? AND kind = ?";
static const char SQL_ATTEMPTS_RESET[] = "UPDATE jobs SET attempts = 1 WHERE id = ? AND attempts > 1";
static const char SQL_RECOVER_REQUEUE[] =
    "UPDATE jobs SET status = 'queued' WHERE status = 'running'";
static const char SQL_QUEUED[] =
    "SELECT id, tenant_id, kind, params, checkpoint FROM jobs WHERE status = 'queued' "
    "ORDER BY created_at";
static const char SQL_REQUEUE_KEEP[] = "UPDATE jobs SET status = 'queued' WHERE id = ?";
static const char SQL_STRANDED[] =
    "SELECT id, tenant_id, kind, params, checkpoint FROM jobs WHERE status IN ('queued', "
    "'running') ORDER BY created_at";

static const struct job_kind *kind_find(struct jobs *j, const char *name)
{
    for (size_t i = 0; i < j->nkinds; i++)
        if (strcmp(j->kinds[i].name, name) == 0)
            return &j->kinds[i];
    return NULL;
}

/* The errors of a database that cannot serve just now, which a job is not failed for. */
static bool storage_fault(int err)
{
    return err == TS_E_STORAGE || err == TS_E_STORAGE_FULL || err == TS_E_NO_MEMORY ||
           err == TS_E_BUSY;
}

/* ---- write requests from workers ---- */

static void writes_wake_all(struct jobs *j, struct write_req *list, int result)
{
    pthread_mutex_lock(&j->mu);
    for (struct write_req *w = list, *next; w; w = next) {
        next = w->next;
        if (result < 0)
            w->result = result;
        w->done = true;
    }
    pthread_cond_broadcast(&j->wq_cond);
    pthread_mutex_unlock(&j->mu);
}

/* Loop, after the tick: a write whose transaction was rolled back (a storage fault, by whichever
 * commit ended it) fails with that error instead of reporting success. */
static void writes_outcome(struct jobs *j, struct write_req *list)
{
    for (struct write_req *w = list; w; w = w->next) {
        int t = db_tx_result(j->db, w->tx);
        if (t < 0 && w->result >= 0)
            w->result = t;
    }
}

/* Loop: applies every queued request under its own savepoint, commits, then wakes the
 * workers. A busy commit keeps them waiting; the next wake-up retries it. */
static void writes_apply(uv_async_t *a)
{
    struct jobs *j = a->data;
    pthread_mutex_lock(&j->mu);
    struct write_req *list = j->wq;
    j->wq = NULL;
    pthread_mutex_unlock(&j->mu);
    struct write_req *rev = NULL;
    for (struct write_req *w = list, *next; w; w = next) { /* queued newest first */
        next = w->next;
        w->next = rev;
        rev = w;
    }
    for (struct write_req *w = rev, *next; w; w = next) {
        next = w->next;
        db_request_start(j->db);
        db_fault_clear();
        int r = db_write_begin(j->db);
        if (r == 0)
            r = w->apply(j->db, w->arg);
        if (db_fault_get() < 0) /* whatever apply made of it, as for a request */
            r = db_fault_get();
        w->tx = db_tx_seq(j->db); /* before the savepoint ends: that may end the tick too */
        db_request_end(j->db, r >= 0);
        w->result = r;
        w->next = j->applied;
        j->applied = w;
    }
    if (j->applied == NULL)
        return;
    if (db_tick_commit(j->db) == TS_E_BUSY) {
        uv_async_send(&j->wake); /* another process holds the lock: retry */
        return;
    }
    struct write_req *done = j->applied;
    j->applied = NULL;
    writes_outcome(j, done);
    if (j->on_commit)
        j->on_commit(j->on_commit_arg);
    writes_wake_all(j, done, 0);
}

int job_write(struct job_run *r, job_apply_fn apply, void *arg)
{
    struct jobs *j = r->jobs;
    struct write_req w = {apply, arg, 0, false, NULL};
    pthread_mutex_lock(&j->mu);
    if (j->stopping || !j->has_wake) {
        pthread_mutex_unlock(&j->mu);
        return TS_E_UNAVAILABLE;
    }
    w.next = j->wq;
    j->wq = &w;
    uv_async_send(&j->wake);
    while (!w.done)
        pthread_cond_wait(&j->wq_cond, &j->mu);
    pthread_mutex_unlock(&j->mu);
    if (storage_fault(w.result))
        r->met_fault = true; /* the kind may word it as its own failure: job_work knows better */
    return w.result;
}

bool job_error_transient(const struct job_run *r, int err)
{
    return err < 0 && err != -ECANCELED && (storage_fault(err) || r->met_fault ||
                                            db_fault_get() < 0);
}

/* Loop: no more writes; queued ones are answered TS_E_UNAVAILABLE, applied ones get their
 * commit first. */
static void writes_stop(struct jobs *j)
{
    if (j->applied && db_tick_commit(j->db) != TS_E_BUSY) {
        writes_outcome(j, j->applied);
        writes_wake_all(j, j->applied, 0);
        j->applied = NULL;
    }
    pthread_mutex_lock(&j->mu);
    j->stopping = true;
    struct write_req *list = j->wq;
    j->wq = NULL;
    pthread_mutex_unlock(&j->mu);
    writes_wake_all(j, list, TS_E_UNAVAILABLE);
    if (j->applied) {
        writes_wake_all(j, j->applied, TS_E_UNAVAILABLE);
        j->applied = NULL;
    }
}

#define RESCUE_EVERY_MS 2000    /* how often the rescue timer looks (rescue_cb) */
#define RESCUE_MORE_MS 50       /* the next look after one the pool had no room to finish */
#define RESCUE_WINDOW_MS 10000  /* a fault this recent, with no commit since, is not over */
static void rescue_cb(uv_timer_t *t);

int jobs_new(uv_loop_t *loop, struct db *db, struct pool *pool, const struct job_kind *kinds,
             size_t nkinds, struct jobs **ret)
{
    struct jobs *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return -ENOMEM;
    j->db = db;
    j->pool = pool;
    j->kinds = kinds;
    j->nkinds = nkinds;
    atomic_init(&j->cancel, false);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->wq_cond, NULL);
    if (loop && uv_async_init(loop, &j->wake, writes_apply) == 0) {
        j->wake.data = j;
        j->has_wake = true;
        uv_timer_init(loop, &j->rescue);
        j->rescue.data = j;
        j->faults_seen = db_fault_count();
        uv_timer_start(&j->rescue, rescue_cb, RESCUE_EVERY_MS, RESCUE_EVERY_MS);
        uv_unref((uv_handle_t *)&j->rescue); /* never what keeps the loop alive */
    }
    *ret = j;
    return 0;
}

void jobs_close_handles(struct jobs *j)
{
    if (j == NULL || !j->has_wake)
        return;
    writes_stop(j);
    uv_close((uv_handle_t *)&j->wake, NULL);
    uv_close((uv_handle_t *)&j->rescue, NULL);
    j->has_wake = false;
}

struct jobs *jobs_free(struct jobs *j)
{
    if (j == NULL)
        return NULL;
    pthread_cond_destroy(&j->wq_cond);
    pthread_mutex_destroy(&j->mu);
    free(j);
    return NULL;
}

void jobs_on_commit(struct jobs *j, void (*fn)(void *arg), void *arg)
{
    j->on_commit = fn;
    j->on_commit_arg = arg;
}

void jobs_on_finish(struct jobs *j, jobs_finish_fn fn, void *arg)
{
    j->on_finish = fn;
    j->on_finish_arg = arg;
}

void jobs_cancel_all(struct jobs *j)
{
    atomic_store(&j->cancel, true);
}

void jobs_stop_writes(struct jobs *j)
{
    if (j && j->has_wake)
        writes_stop(j);
}

static struct job_run *run_free(struct job_run *r)
{
    if (r == NULL)
        return NULL;
    free(r->tenant_id);
    free(r->params);
    free(r->checkpoint);
    buf_release(&r->result);
    buf_release(&r->next_checkpoint);
    free(r);
    return NULL;
}

static void job_work(struct pool_task *t, struct pool_worker *w)
{
    struct job_run *r = (struct job_run *)((char *)t - offsetof(struct job_run, task));
    r->db = w->db;
    db_fault_clear();
    r->status = r->kind->run(r);
    /* failing while storage failed (a read here, a write it asked for) is not the job's
     * failure, whatever the kind made of it: it runs again once the fault has passed */
    if (r->status < 0 && r->status != -ECANCELED && (r->met_fault || db_fault_get() < 0))
        r->status = r->met_fault ? TS_E_STORAGE : db_fault_get();
}

static int exec_stmt(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : db_err(rc);
}

static void job_record_end(struct jobs *j, struct job_run *r, const char *status)
{
    if (db_write_begin(j->db) < 0) {
        log_msg(LOG_ERROR, "job %s: cannot record its end (database busy)", r->id);
        return;
    }
    sqlite3_stmt *st;
    if (strcmp(status, "retry") == 0) { /* as it was, checkpoint and all */
        st = db_stmt(j->db, SQL_REQUEUE_KEEP);
        sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
    } else if (strcmp(status, "queued") == 0) {
        st = db_stmt(j->db, SQL_REQUEUE);
        if (r->next_checkpoint.len)
            sqlite3_bind_text(st, 1, r->next_checkpoint.data, (int)r->next_checkpoint.len,
                              SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(st, 1);
        sqlite3_bind_text(st, 2, r->id, -1, SQLITE_STATIC);
    } else {
        st = db_stmt(j->db, SQL_FINISH);
        sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
        if (r->result.len)
            sqlite3_bind_text(st, 2, r->result.data, (int)r->result.len, SQLITE_TRANSIENT);
        if (r->error[0])
            sqlite3_bind_text(st, 3, r->error, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, status, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, clock_now_ms());
        sqlite3_bind_text(st, 6, r->id, -1, SQLITE_STATIC);
    }
    if (exec_stmt(st) < 0)
        log_msg(LOG_ERROR, "job %s: recording end failed", r->id);
}

static const char *col_or_empty(sqlite3_stmt *q, int i)
{
    const unsigned char *s = sqlite3_column_text(q, i);
    return s ? (const char *)s : "";
}


static void live_remove(struct jobs *j, struct job_run *r)
{
    for (struct job_run **p = &j->live; *p; p = &(*p)->next_live)
        if (*p == r) {
            *p = r->next_live;
            return;
        }
}

static void job_done(struct pool_task *t, int status)
{
    struct job_run *r = (struct job_run *)((char *)t - offsetof(struct job_run, task));
    struct jobs *j = r->jobs;
    live_remove(j, r);
    jobs_apply_progress(j);
    const char *end;
    if (status == -ECANCELED || r->status == -ECANCELED)
        end = "queued"; /* resumed at next start */
    else if (r->status == 0)
        end = "completed";
    else if (storage_fault(r->status)) {
        end = "retry"; /* not the job's failure: it runs again once the fault has passed */
        j->rescue_due = true;
    }
    else {
        end = "failed";
        if (!r->error[0])
            snprintf(r->error, sizeof(r->error), "job failed (%d)", r->status);
    }
    job_record_end(j, r, end);
    if (j->on_finish && strcmp(end, "queued") != 0 && strcmp(end, "retry") != 0)
        j->on_finish(j->on_finish_arg, r->tenant_id, r->id, r->kind->name, end);
    run_free(r);
}

static struct pool *kind_pool(const struct jobs *j, const struct job_kind *k)
{
    return k->foreground && j->fg_pool ? j->fg_pool : j->pool;
}

void jobs_set_foreground_pool(struct jobs *j, struct pool *pool)
{
    j->fg_pool = pool;
}

static int job_start(struct jobs *j, const char *id, const char *tenant, const struct job_kind *k,
                     const char *params, const char *checkpoint)
{
    struct job_run *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->jobs = j;
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->tenant_id = strdup(tenant);
    r->kind = k;
    r->params = strdup(params ? params : "{}");
    r->checkpoint = checkpoint ? strdup(checkpoint) : NULL;
    r->cancel = &j->cancel;
    buf_init(&r->result, 64 << 20);
    buf_init(&r->next_checkpoint, 1 << 20);
    r->task.work = job_work;
    r->task.done = job_done;
    sqlite3_stmt *st = db_stmt(j->db, SQL_START);
    sqlite3_bind_int64(st, 1, clock_now_ms());
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    int rc = exec_stmt(st);
    if (rc == 0)
        rc = pool_submit(kind_pool(j, k), &r->task);
    if (rc < 0) {
        run_free(r);
        return rc;
    }
    r->next_live = j->live;
    j->live = r;
    return rc;
}

/* ---- jobs a storage fault stranded ----
 * A job's start and end are loop writes in the tick like any other, and its own writes go
 * through job_write: a storage fault can roll back its start or its end record, or refuse the
 * write it needed (the job then ends "retry"). Either way its row is left queued or running
 * with no run in memory — what only jobs_recover, at the next start, would pick up. A timer
 * notes the faults; once one has passed (a commit since, or RESCUE_WINDOW_MS without another)
 * such rows start again from their checkpoint, as after a restart. */
static bool run_live(const struct jobs *j, const char *id)
{
    for (const struct job_run *r = j->live; r; r = r->next_live)
        if (strcmp(r->id, id) == 0)
            return true;
    return false;
}

static void rescue_sweep(struct jobs *j)
{
    if (db_write_begin(j->db) < 0) {
        j->rescue_due = true; /* the next look tries again */
        return;
    }
    sqlite3_stmt *q = db_stmt(j->db, SQL_STRANDED);
    int started = 0;
    while (q && sqlite3_step(q) == SQLITE_ROW) {
        const char *id = col_or_empty(q, 0);
        const struct job_kind *k = kind_find(j, col_or_empty(q, 2));
        if (k == NULL || run_live(j, id))
            continue;
        const unsigned char *cp = sqlite3_column_text(q, 4);
        if (pool_room(kind_pool(j, k)) == 0 ||
            job_start(j, id, col_or_empty(q, 1), k, col_or_empty(q, 3),
                      cp ? (const char *)cp : NULL) < 0) {
            j->rescue_due = j->rescue_more = true; /* the pool is full: soon, the rest */
            break;
        }
        started++;
    }
    if (q)
        sqlite3_reset(q);
    if (started) {
        log_msg(LOG_WARN, "jobs: %d job(s) a storage fault had stranded run again", started);
        if (db_tick_commit(j->db) == 0 && j->on_commit)
            j->on_commit(j->on_commit_arg);
    }
}

static void rescue_cb(uv_timer_t *t)
{
    struct jobs *j = t->data;
    uint64_t n = db_fault_count();
    if (n != j->faults_seen) {
        j->faults_seen = n;
        j->rescue_due = true;
    }
    bool more = j->rescue_more;
    if (j->rescue_due && db_fault_recent(RESCUE_WINDOW_MS) == 0) {
        j->rescue_due = j->rescue_more = false;
        rescue_sweep(j);
    }
    if (more != j->rescue_more) { /* a backlog the pool takes as it drains: look often */
        uint64_t every = j->rescue_more ? RESCUE_MORE_MS : RESCUE_EVERY_MS;
        uv_timer_start(t, rescue_cb, every, every);
    }
}

void jobs_set_tenant_cap(struct jobs *j, int max)
{
    j->tenant_cap = max > 0 ? max : 0;
}

const char *jobs_refusal(const struct jobs *j, const char *kind_message)
{
    return j->tenant_refused ? "this tenant has as many jobs queued or running as it may; "
                               "retry when one has finished"
                             : kind_message;
}

/* Counts the tenant's queued + running jobs (of one kind, or all when kind is NULL): is it at
 * max already? */
static bool tenant_at_cap(struct jobs *j, const char *tenant_id, const char *kind, int max)
{
    sqlite3_stmt *st = db_stmt(j->db, kind ? SQL_ACTIVE : SQL_TENANT_ACTIVE);
    sqlite3_bind_text(st, 1, tenant_id, -1, SQLITE_STATIC);
    if (kind)
        sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
    bool at = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) >= max;
    sqlite3_reset(st);
    return at;
}

int jobs_submit(struct jobs *j, const char *tenant_id, const char *kind, const char *params_json,
                char ret_id[UUID_STR_LEN])
{
    const struct job_kind *k = kind_find(j, kind);
    if (k == NULL)
        return -EINVAL;
    int r = db_write_begin(j->db);
    if (r < 0)
        return r;
    j->tenant_refused = false;
    if (tenant_at_cap(j, tenant_id, kind, k->max_active_per_tenant))
        return TS_E_RATE_LIMITED;
    if (j->tenant_cap > 0 && tenant_at_cap(j, tenant_id, NULL, j->tenant_cap)) {
        j->tenant_refused = true;
        return TS_E_RATE_LIMITED;
    }
    char id[UUID_STR_LEN];
    id_uuid7(id);
    sqlite3_stmt *st = db_stmt(j->db, SQL_INSERT);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, params_json ? params_json : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, clock_now_ms());
    r = exec_stmt(st);
    if (r == 0)
        r = job_start(j, id, tenant_id, k, params_json, NULL);
    if (r < 0)
        return r == -EAGAIN ? TS_E_UNAVAILABLE : r;
    memcpy(ret_id, id, UUID_STR_LEN);
    return 0;
}

/* Tells kind about each of its jobs the restart is about to fail (abandon, in jobs.h). */
static void recover_abandon(struct jobs *j, const struct job_kind *k)
{
    sqlite3_stmt *q = db_stmt(j->db, SQL_RECOVER_ABANDON);
    sqlite3_bind_int(q, 1, k->max_attempts);
    sqlite3_bind_text(q, 2, k->name, -1, SQLITE_STATIC);
    while (sqlite3_step(q) == SQLITE_ROW)
        if (k->abandon(j->db, (const char *)sqlite3_column_text(q, 0),
                       (const char *)sqlite3_column_text(q, 1)) < 0)
            log_msg(LOG_ERROR, "%s: recording an abandoned job failed", k->name);
    sqlite3_reset(q);
}

int job_attempts_reset(struct db *db, const char *job_id)
{
    sqlite3_stmt *st = db_stmt(db, SQL_ATTEMPTS_RESET);
    sqlite3_bind_text(st, 1, job_id, -1, SQLITE_STATIC);
    return exec_stmt(st);
}

int jobs_recover(struct jobs *j)
{
    int r = db_write_begin(j->db);
    if (r < 0)
        return r;
    for (size_t i = 0; i < j->nkinds; i++) {
        if (j->kinds[i].abandon)
            recover_abandon(j, &j->kinds[i]);
        sqlite3_stmt *st = db_stmt(j->db, SQL_RECOVER_FAIL);
        sqlite3_bind_int64(st, 1, clock_now_ms());
        sqlite3_bind_int(st, 2, j->kinds[i].max_attempts);
        sqlite3_bind_text(st, 3, j->kinds[i].name, -1, SQLITE_STATIC);
        exec_stmt(st);
    }
    exec_stmt(db_stmt(j->db, SQL_RECOVER_REQUEUE));
    sqlite3_stmt *q = db_stmt(j->db, SQL_QUEUED);
    int started = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        const struct job_kind *k = kind_find(j, (const char *)sqlite3_column_text(q, 2));
        char id[UUID_STR_LEN], tenant[128];
        snprintf(id, sizeof(id), "%s", (const char *)sqlite3_column_text(q, 0));
        snprintf(tenant, sizeof(tenant), "%s", (const char *)sqlite3_column_text(q, 1));
        if (k == NULL)
            continue;
        char *params = strdup((const char *)sqlite3_column_text(q, 3));
        const unsigned char *cp = sqlite3_column_text(q, 4);
        char *checkpoint = cp ? strdup((const char *)cp) : NULL;
        if (job_start(j, id, tenant, k, params, checkpoint) == 0)
            started++;
        free(params);
        free(checkpoint);
    }
    sqlite3_reset(q);
    return started;
}

void job_progress(struct job_run *r, double fraction)
{
    struct jobs *j = r->jobs;
    pthread_mutex_lock(&j->mu);
    int i = 0;
    while (i < j->nprog && strcmp(j->prog[i].id, r->id) != 0)
        i++;
    if (i == j->nprog && j->nprog < MAX_PROGRESS)
        memcpy(j->prog[j->nprog++].id, r->id, UUID_STR_LEN);
    if (i < j->nprog)
        j->prog[i].fraction = fraction < 0 ? 0 : fraction > 1 ? 1 : fraction;
    pthread_mutex_unlock(&j->mu);
}

void jobs_apply_progress(struct jobs *j)
{
    struct progress local[64];
    int n;
    pthread_mutex_lock(&j->mu);
    n = j->nprog < 64 ? j->nprog : 64;
    memcpy(local, j->prog + j->nprog - n, sizeof(local[0]) * (size_t)n);
    j->nprog -= n;
    pthread_mutex_unlock(&j->mu);
    if (n == 0 || db_write_begin(j->db) < 0)
        return;
    for (int i = 0; i < n; i++) {
        sqlite3_stmt *st = db_stmt(j->db, SQL_PROGRESS);
        sqlite3_bind_double(st, 1, local[i].fraction);
        sqlite3_bind_text(st, 2, local[i].id, -1, SQLITE_STATIC);
        exec_stmt(st);
    }
}
