/* Our worker pool: N threads, each with its own read-only SQLite connection, a bounded queue,
 * and completions handed back to the loop thread through uv_async. */
#ifndef TS_POOL_H
#define TS_POOL_H
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct pool;
struct pool_task;

struct pool_worker {
    int index;
    sqlite3 *db;                 /* read-only; WAL snapshot per transaction */
};

/* work runs on a worker thread; done runs on the loop thread with 0, or -ECANCELED when the
 * pool shut down before the task started (work was not called). */
struct pool_task {
    void (*work)(struct pool_task *t, struct pool_worker *w);
    void (*done)(struct pool_task *t, int status);
    struct pool_task *next;
    int status;
    uint64_t queued_ns;          /* clock_mono_ns() at pool_submit */
};

struct pool_stats {
    int64_t submitted, completed, rejected;
    int queued, running;
};

#define POOL_NICE_REQUESTS 10    /* request workers: below the loop */
#define POOL_NICE_BACKGROUND 19  /* jobs and re-evaluations: below the request workers */

/* Called on the loop thread: ask the scheduler to let it preempt the pool's workers at once. */
void pool_prefer_loop_thread(void);

/* nice: the workers' niceness (SCHED_BATCH, 0..19; the loop stays at 0). db_path may be NULL
 * (no connections, for tests). */
int pool_new(uv_loop_t *loop, int nthreads, int queue_max, int nice, const char *db_path,
             struct pool **ret);
/* 0, -EAGAIN when the queue is full, -ESHUTDOWN after pool_stop. Never calls done on error. */
int pool_submit(struct pool *p, struct pool_task *t);
/* Stops taking tasks, cancels queued ones (their done gets -ECANCELED), waits for running ones,
 * joins the threads. Loop thread; completions are delivered before it returns. */
void pool_stop(struct pool *p);
void pool_close_handles(struct pool *p);
struct pool *pool_free(struct pool *p);
struct pool_stats pool_stats(struct pool *p);
/* The queue now: how long the oldest task still waiting for a worker has waited, and how long
 * tasks have been waiting without a break, the queue never empty (both 0 when none waits). A
 * queue that empties often is a burst being drained; one that stands is a pool that does not
 * keep up, whatever its oldest task's wait (CoDel's "standing queue"). */
struct pool_backlog {
    uint64_t wait_ns, standing_ns;
};
struct pool_backlog pool_backlog(struct pool *p);
/* How many more tasks pool_submit would take now (only the submitting loop thread adds). */
int pool_room(struct pool *p);
int pool_size(const struct pool *p);
#endif
