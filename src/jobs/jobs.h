/* Durable jobs: rows in `jobs` (queued -> running -> completed/failed) run by the worker pool,
 * resumed after a restart from their checkpoint, announced when they finish. */
#ifndef TS_JOBS_H
#define TS_JOBS_H
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

#include "core/buf.h"
#include "core/ids.h"
#include "jobs/pool.h"
#include "store/db.h"

struct jobs;
struct job_run;

/* One row of the job-kind table: what a kind runs and its limits. */
struct job_kind {
    const char *name;
    /* Runs on a worker thread with a read-only connection. Returns 0 (result JSON in
     * r->result), -ECANCELED after saving r->checkpoint when r->cancel is set (the job is
     * resumed at next start), or another negative code with r->error set. */
    int (*run)(struct job_run *r);
    int max_active_per_tenant;   /* queued + running; past it submit fails */
    int max_attempts;            /* runs in a row without progress (job_attempts_reset) before
                                  * a restart fails the job: a job that crashes the server is
                                  * not retried for ever, one that advances is never dropped */
    /* Loop thread, in jobs_recover's transaction, or NULL: the job is being failed past
     * max_attempts; leave what it tracks in a final state (a commerce batch: failed), so no
     * client waits on it for ever. */
    int (*abandon)(struct db *db, const char *tenant_id, const char *params);
    /* Runs on the foreground pool (jobs_set_foreground_pool) rather than the background one:
     * the rest of a request a client is waiting on (a batch's processing), which must not wait
     * for spare CPU as rollups, exports and training do. */
    bool foreground;
};

struct job_run {
    struct jobs *jobs;
    char id[UUID_STR_LEN];
    char *tenant_id;
    const struct job_kind *kind;
    char *params;                /* JSON text */
    char *checkpoint;            /* JSON text from an earlier attempt, or NULL */
    sqlite3 *db;                 /* the worker's read-only connection */
    atomic_bool *cancel;
    struct buf result;           /* JSON the job produces */
    struct buf next_checkpoint;  /* set before returning -ECANCELED */
    char error[256];
    int status;
    struct pool_task task;
    struct job_run *next_live;   /* jobs.c: every run in memory, queued in the pool or running */
    bool met_fault;              /* jobs.c: a job_write of this run met a storage fault */
};

typedef void (*jobs_finish_fn)(void *arg, const char *tenant_id, const char *job_id,
                               const char *kind, const char *status);

/* loop may be NULL (no job_write: tests of the job table alone). */
int jobs_new(uv_loop_t *loop, struct db *db, struct pool *pool, const struct job_kind *kinds,
             size_t nkinds, struct jobs **ret);
/* The pool foreground kinds run on (the request workers); without it they use jobs_new's. */
void jobs_set_foreground_pool(struct jobs *j, struct pool *pool);
/* Caps the queued + running jobs of one tenant, all kinds together (0, the default: only each
 * kind's max_active_per_tenant). So one tenant cannot fill the pool's queue for all. */
void jobs_set_tenant_cap(struct jobs *j, int max);
/* Closes the loop handle job_write uses; before the final loop run. */
void jobs_close_handles(struct jobs *j);
/* On start: running rows go back to queued (or failed past max_attempts), queued rows run. */
int jobs_recover(struct jobs *j);
/* Inserts a queued row in the tick's transaction and hands the job to the pool. Loop thread.
 * -EINVAL unknown kind, TS_E_RATE_LIMITED over the kind's or the tenant's cap, TS_E_BUSY. */
int jobs_submit(struct jobs *j, const char *tenant_id, const char *kind, const char *params_json,
                char ret_id[UUID_STR_LEN]);
/* After jobs_submit answered TS_E_RATE_LIMITED (loop thread): the client's message, the
 * tenant cap's own when that cap refused, else kind_message (the kind's cap, which the caller
 * words). */
const char *jobs_refusal(const struct jobs *j, const char *kind_message);
/* Worker thread: a write request the loop applies. The loop runs apply(db, arg) on the writer
 * under its own savepoint in the tick's transaction (rolled back if apply returns < 0), commits,
 * and only then wakes the caller: a job that checkpoints after job_write returns 0 knows the
 * write is durable. Returns apply's result, or TS_E_UNAVAILABLE once the server is stopping
 * (nothing applied: checkpoint and return -ECANCELED). apply may use db_stmt. */
typedef int (*job_apply_fn)(struct db *db, void *arg);
int job_write(struct job_run *r, job_apply_fn apply, void *arg);
/* Worker thread: did the run fail with err because storage failed (err a storage fault's code,
 * a job_write of it met one, or a read on this thread did)? Then the job runs again once the
 * fault has passed: a kind should not record the failure as final (a batch as failed). */
bool job_error_transient(const struct job_run *r, int err);
/* Loop thread, inside a job_write apply: the job's work so far is stored for good (its next run
 * resumes past it), so its run count starts again from this run (see max_attempts). */
int job_attempts_reset(struct db *db, const char *job_id);
/* Worker thread: records progress 0..1 (applied by the loop). */
void job_progress(struct job_run *r, double fraction);
void jobs_on_finish(struct jobs *j, jobs_finish_fn fn, void *arg);
/* Called on the loop after job_write requests were committed (caches of what they wrote are
 * stale now). */
void jobs_on_commit(struct jobs *j, void (*fn)(void *arg), void *arg);
/* Asks running jobs to checkpoint and stop. */
void jobs_cancel_all(struct jobs *j);
/* Loop: from now on job_write answers TS_E_UNAVAILABLE (workers blocked in it are released);
 * before pool_stop, which waits for running jobs. */
void jobs_stop_writes(struct jobs *j);
/* Loop thread: applies pending progress updates (called every tick). */
void jobs_apply_progress(struct jobs *j);
struct jobs *jobs_free(struct jobs *j);
#endif
