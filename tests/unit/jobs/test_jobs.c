/* Unit tests for the worker pool and durable jobs: run, fail, bounded queue, backlog, checkpoint,
 * recovery. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "../check.h"
#include "core/err.h"
#include "jobs/jobs.h"

static char dir[] = "/tmp/tessera-jobs-XXXXXX";
static char path[256];

/* sums 1..n from params {"n": N} using the read-only connection, as a real job reads data */
static int kind_sum(struct job_run *r)
{
    int n = atoi(strchr(r->params, ':') + 1);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(r->db,
                           "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                           "WHERE x < ?) SELECT sum(x) FROM c",
                           -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_int(st, 1, n);
    long long s = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    job_progress(r, 0.5);
    buf_printf(&r->result, "{\"sum\":%lld}", s);
    return 0;
}

static int kind_fail(struct job_run *r)
{
    snprintf(r->error, sizeof(r->error), "deliberate failure");
    return -EIO;
}

/* waits for cancel, then saves where it got to */
static int kind_wait(struct job_run *r)
{
    while (!atomic_load(r->cancel))
        usleep(1000);
    buf_puts(&r->next_checkpoint, "{\"at\":7}");
    return -ECANCELED;
}

/* writes 3 chunks of rows through the loop; after each, the committed row count is visible to
 * the job's own read-only connection (the write is durable before job_write returns) */
static int chunk_apply(struct db *db, void *arg)
{
    int chunk = *(int *)arg;
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO jw(x) VALUES(?)");
    for (int i = 0; i < 10; i++) {
        sqlite3_bind_int(st, 1, chunk * 10 + i);
        sqlite3_step(st);
        sqlite3_reset(st);
    }
    return chunk == 3 ? -EIO : 0; /* the 4th chunk fails: rolled back, nothing kept */
}

static int count_jw(sqlite3 *h)
{
    sqlite3_stmt *st;
    int n = -1;
    if (sqlite3_prepare_v2(h, "SELECT count(*) FROM jw", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

static int kind_writer(struct job_run *r)
{
    int seen[4];
    for (int c = 0; c < 4; c++) {
        int rc = job_write(r, chunk_apply, &c);
        if (rc != (c == 3 ? -EIO : 0))
            return -EPROTO;
        seen[c] = count_jw(r->db);
    }
    buf_printf(&r->result, "{\"seen\":[%d,%d,%d,%d]}", seen[0], seen[1], seen[2], seen[3]);
    return 0;
}

/* fails as a storage fault would while flaky_fail is set: the job ends "retry", not failed */
static atomic_bool flaky_fail;
static int kind_flaky(struct job_run *r)
{
    (void)r;
    return atomic_load(&flaky_fail) ? TS_E_STORAGE : 0;
}

/* The "sum" kind's abandon: what jobs_recover handed over. */
static int abandoned;
static char abandoned_params[64];
static int abandon_sum(struct db *db, const char *tenant_id, const char *params)
{
    (void)db, (void)tenant_id;
    abandoned++;
    snprintf(abandoned_params, sizeof(abandoned_params), "%s", params);
    return 0;
}

static const struct job_kind kinds[] = {
    {"sum", kind_sum, 2, 3, abandon_sum},
    {"fail", kind_fail, 5, 3},
    {"wait", kind_wait, 5, 3},
    {"writer", kind_writer, 5, 3},
    {"flaky", kind_flaky, 5, 3},
    {"sum_fg", kind_sum, 2, 3, NULL, true},
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

static int finished;
static void on_finish(void *arg, const char *t, const char *id, const char *k, const char *s)
{
    (void)arg, (void)t, (void)id, (void)k, (void)s;
    finished++;
}

static const char *col(sqlite3 *h, const char *id, const char *column, char *out, size_t n)
{
    char sql[200];
    snprintf(sql, sizeof(sql), "SELECT %s FROM jobs WHERE id = ?", column);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(h, sql, -1, &st, NULL);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    out[0] = '\0';
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
}

static void run_until(uv_loop_t *loop, struct db *db, int want)
{
    for (int i = 0; i < 5000 && finished < want; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        db_tick_commit(db);
        usleep(1000);
    }
    db_tick_commit(db);
}

static void test_run_and_fail(uv_loop_t *loop)
{
    struct db *db;
    char err[256], a[UUID_STR_LEN], b[UUID_STR_LEN], c[UUID_STR_LEN], v[256];
    CHECK_INT(db_open(path, false, 250, &db, err, sizeof(err)), 0);
    struct pool *pool;
    CHECK_INT(pool_new(loop, 2, 8, 10, path, &pool), 0);
    struct jobs *j;
    jobs_new(NULL, db, pool, kinds, 3, &j);
    jobs_on_finish(j, on_finish, NULL);
    finished = 0;
    CHECK_INT(jobs_submit(j, "t1", "sum", "{\"n\":100}", a), 0);
    CHECK_INT(jobs_submit(j, "t1", "fail", "{}", b), 0);
    CHECK_INT(jobs_submit(j, "t1", "nope", "{}", c), -EINVAL);
    db_tick_commit(db);
    run_until(loop, db, 2);
    CHECK_INT(finished, 2);
    sqlite3 *h = db_handle(db);
    CHECK_STR(col(h, a, "status", v, sizeof(v)), "completed");
    CHECK_STR(col(h, a, "result", v, sizeof(v)), "{\"sum\":5050}"); /* n(n+1)/2 */
    CHECK_STR(col(h, a, "progress", v, sizeof(v)), "1.0");
    CHECK_STR(col(h, b, "status", v, sizeof(v)), "failed");
    CHECK_STR(col(h, b, "error", v, sizeof(v)), "deliberate failure");
    /* per-tenant cap: 2 active "sum" jobs allowed, the third refused */
    CHECK_INT(jobs_submit(j, "t2", "sum", "{\"n\":1}", c), 0);
    CHECK_INT(jobs_submit(j, "t2", "sum", "{\"n\":2}", c), 0);
    CHECK_INT(jobs_submit(j, "t2", "sum", "{\"n\":3}", c), TS_E_RATE_LIMITED);
    /* a job still running at shutdown checkpoints and stays queued for the next start */
    CHECK_INT(jobs_submit(j, "t2", "wait", "{}", c), 0);
    db_tick_commit(db);
    run_until(loop, db, 4);
    jobs_cancel_all(j);
    pool_stop(pool);
    db_tick_commit(db);
    pool_close_handles(pool);
    uv_run(loop, UV_RUN_DEFAULT);
    pool_free(pool);
    jobs_free(j);
    db_close(db);
}

static void test_recovery(uv_loop_t *loop)
{
    struct db *db;
    char err[256], v[256];
    CHECK_INT(db_open(path, false, 250, &db, err, sizeof(err)), 0);
    sqlite3 *h = db_handle(db);
    /* the earlier "wait" job checkpointed at shutdown: still queued */
    CHECK_INT(sqlite3_exec(h,
                           "INSERT INTO jobs(id, tenant_id, kind, status, params, created_at, "
                           "attempts) VALUES('crashed', 't3', 'sum', 'running', '{\"n\":10}', 1, 1),"
                           "('doomed', 't3', 'sum', 'running', '{\"n\":10}', 2, 3),"
                           "('progressed', 't3', 'sum', 'running', '{\"n\":4}', 3, 3)",
                           NULL, NULL, NULL),
              SQLITE_OK);
    /* its last run stored work for good: not failed for its run count, resumed */
    CHECK_INT(job_attempts_reset(db, "progressed"), 0);
    struct pool *pool;
    pool_new(loop, 2, 8, 10, path, &pool);
    struct jobs *j;
    jobs_new(NULL, db, pool, kinds, 3, &j);
    jobs_on_finish(j, on_finish, NULL);
    finished = 0;
    int started = jobs_recover(j);
    db_tick_commit(db);
    CHECK_INT(started, 3); /* "crashed", "progressed" and the queued "wait" job; "doomed" failed */
    CHECK_INT(abandoned, 1); /* its kind was told, to finish what it tracks */
    CHECK_STR(abandoned_params, "{\"n\":10}");
    run_until(loop, db, 2);
    CHECK_STR(col(h, "progressed", "result", v, sizeof(v)), "{\"sum\":10}");
    CHECK_STR(col(h, "crashed", "status", v, sizeof(v)), "completed");
    CHECK_STR(col(h, "crashed", "result", v, sizeof(v)), "{\"sum\":55}");
    CHECK_STR(col(h, "doomed", "status", v, sizeof(v)), "failed");
    /* shutdown: the waiting job checkpoints and goes back to queued */
    jobs_cancel_all(j);
    pool_stop(pool);
    db_tick_commit(db);
    char sql_id[UUID_STR_LEN] = "";
    sqlite3_stmt *st;
    sqlite3_prepare_v2(h, "SELECT id, status, checkpoint FROM jobs WHERE kind = 'wait'", -1, &st,
                       NULL);
    CHECK(sqlite3_step(st) == SQLITE_ROW);
    snprintf(sql_id, sizeof(sql_id), "%s", (const char *)sqlite3_column_text(st, 0));
    CHECK_STR((const char *)sqlite3_column_text(st, 1), "queued");
    CHECK_STR((const char *)sqlite3_column_text(st, 2), "{\"at\":7}");
    sqlite3_finalize(st);
    pool_close_handles(pool);
    uv_run(loop, UV_RUN_DEFAULT);
    pool_free(pool);
    jobs_free(j);
    db_close(db);
}

static void noop_work(struct pool_task *t, struct pool_worker *w)
{
    (void)w;
    usleep(20000);
    t->status = 0;
}
static int noop_done_count, noop_cancel_count;
static void noop_done(struct pool_task *t, int status)
{
    (void)t;
    if (status == -ECANCELED)
        noop_cancel_count++;
    else
        noop_done_count++;
}

static void test_bounded_queue(uv_loop_t *loop)
{
    struct pool *pool;
    pool_new(loop, 1, 2, 10, NULL, &pool);
    struct pool_task t[6];
    int accepted = 0, refused = 0;
    for (int i = 0; i < 6; i++) {
        t[i].work = noop_work;
        t[i].done = noop_done;
        int r = pool_submit(pool, &t[i]);
        if (r == 0)
            accepted++;
        else if (r == -EAGAIN)
            refused++;
    }
    CHECK(accepted >= 2 && accepted <= 3); /* queue of 2, plus one that may have started */
    CHECK_INT(accepted + refused, 6);
    pool_stop(pool);
    CHECK_INT(noop_done_count + noop_cancel_count, accepted);
    CHECK_INT(pool_submit(pool, &t[0]), -ESHUTDOWN);
    pool_close_handles(pool);
    uv_run(loop, UV_RUN_DEFAULT);
    pool_free(pool);
}

/* A task that holds its worker until its gate opens; running says it started. */
struct gated {
    struct pool_task t;
    atomic_bool open, running;
};

static void gated_work(struct pool_task *t, struct pool_worker *w)
{
    (void)w;
    struct gated *g = (struct gated *)t;
    atomic_store(&g->running, true);
    while (!atomic_load(&g->open))
        usleep(1000);
}

static void gated_wait_running(struct gated *g)
{
    while (!atomic_load(&g->running))
        usleep(1000);
}

#define MS 1000000u

/* pool_backlog: the oldest waiting task's wait, and how long the queue has held a task without
 * a break, which outlives any one task's wait while the queue never empties (what dispatch
 * sheds on when connections, not the queue bound, limit how long the queue gets). */
static void test_backlog(uv_loop_t *loop)
{
    struct pool *pool;
    CHECK_INT(pool_new(loop, 1, 8, 10, NULL, &pool), 0);
    struct gated x = {.t = {.work = gated_work, .done = noop_done}};
    struct gated b = {.t = {.work = gated_work, .done = noop_done}};
    struct gated c = {.t = {.work = gated_work, .done = noop_done}};
    atomic_store(&c.open, true);
    struct pool_backlog z = pool_backlog(pool);
    CHECK(z.wait_ns == 0 && z.standing_ns == 0);
    CHECK_INT(pool_submit(pool, &x.t), 0);
    gated_wait_running(&x); /* the worker is held: what follows waits */
    CHECK_INT(pool_submit(pool, &b.t), 0);
    usleep(60 * 1000);
    CHECK_INT(pool_submit(pool, &c.t), 0);
    struct pool_backlog q = pool_backlog(pool);
    CHECK(q.wait_ns >= 60 * MS && q.standing_ns >= q.wait_ns);
    atomic_store(&x.open, true); /* b runs; c still waits: the queue never emptied */
    gated_wait_running(&b);
    usleep(20 * 1000);
    struct pool_backlog s = pool_backlog(pool);
    CHECK(s.wait_ns >= 20 * MS && s.wait_ns < s.standing_ns);
    CHECK(s.standing_ns >= 80 * MS);
    atomic_store(&b.open, true); /* c runs: nothing waits */
    gated_wait_running(&c);
    struct pool_backlog e = pool_backlog(pool);
    CHECK(e.wait_ns == 0 && e.standing_ns == 0);
    pool_stop(pool);
    pool_close_handles(pool);
    uv_run(loop, UV_RUN_DEFAULT);
    pool_free(pool);
}

/* Stops and frees what a test with a loop-driven pool and jobs made. */
static void teardown(uv_loop_t *loop, struct db *db, struct pool *pool, struct jobs *j)
{
    jobs_stop_writes(j);
    pool_stop(pool);
    pool_close_handles(pool);
    jobs_close_handles(j);
    uv_run(loop, UV_RUN_DEFAULT);
    pool_free(pool);
    jobs_free(j);
    db_close(db);
}

static void test_job_write(uv_loop_t *loop)
{
    struct db *db;
    char err[256], a[UUID_STR_LEN], v[256];
    CHECK_INT(db_open(path, false, 250, &db, err, sizeof(err)), 0);
    sqlite3 *h = db_handle(db);
    CHECK_INT(sqlite3_exec(h, "CREATE TABLE jw(x INTEGER)", NULL, NULL, NULL), SQLITE_OK);
    struct pool *pool;
    pool_new(loop, 2, 8, 10, path, &pool);
    struct jobs *j;
    jobs_new(loop, db, pool, kinds, NKINDS, &j);
    jobs_on_finish(j, on_finish, NULL);
    finished = 0;
    CHECK_INT(jobs_submit(j, "t4", "writer", "{}", a), 0);
    db_tick_commit(db);
    run_until(loop, db, 1);
    CHECK_STR(col(h, a, "status", v, sizeof(v)), "completed");
    CHECK_STR(col(h, a, "result", v, sizeof(v)), "{\"seen\":[10,20,30,30]}");
    CHECK_INT(count_jw(h), 30);
    teardown(loop, db, pool, j);
}

/* Jobs a storage fault left queued, more than the pool's queue holds: once the fault has
 * passed, every one runs again, the sweep going on as the pool drains. */
static void test_rescue_backlog(uv_loop_t *loop)
{
    enum { N = 12 };
    struct db *db;
    char err[256], ids[N][UUID_STR_LEN], v[256], tenant[16], own[300];
    snprintf(own, sizeof(own), "%s/rescue.db", dir); /* the sweep would take others' jobs too */
    CHECK_INT(db_open(own, false, 250, &db, err, sizeof(err)), 0);
    sqlite3 *h = db_handle(db);
    struct pool *pool;
    pool_new(loop, 1, 3, 10, own, &pool);
    struct jobs *j;
    jobs_new(loop, db, pool, kinds, NKINDS, &j);
    jobs_on_finish(j, on_finish, NULL);
    finished = 0;
    atomic_store(&flaky_fail, true);
    for (int i = 0; i < N; i++) { /* one at a time, so the queue never refuses a submit */
        snprintf(tenant, sizeof(tenant), "r%d", i);
        CHECK_INT(jobs_submit(j, tenant, "flaky", "{}", ids[i]), 0);
        db_tick_commit(db);
        for (int k = 0; k < 2000 && strcmp(col(h, ids[i], "status", v, sizeof(v)), "queued"); k++) {
            uv_run(loop, UV_RUN_NOWAIT);
            db_tick_commit(db);
            usleep(1000);
        }
        CHECK_STR(v, "queued");
    }
    CHECK_INT(finished, 0);
    atomic_store(&flaky_fail, false);
    run_until(loop, db, N); /* the first look is 2 s after jobs_new */
    CHECK_INT(finished, N);
    for (int i = 0; i < N; i++)
        CHECK_STR(col(h, ids[i], "status", v, sizeof(v)), "completed");
    teardown(loop, db, pool, j);
}

/* Foreground kinds run on the foreground pool: one finishes while the one background thread
 * is held by a job that waits for cancel, and a background job queued behind that one waits. */
static void test_foreground_pool(uv_loop_t *loop)
{
    struct db *db;
    char err[256], w[UUID_STR_LEN], fg[UUID_STR_LEN], bg[UUID_STR_LEN], v[256];
    CHECK_INT(db_open(path, false, 250, &db, err, sizeof(err)), 0);
    struct pool *back, *front;
    CHECK_INT(pool_new(loop, 1, 8, 19, path, &back), 0);
    CHECK_INT(pool_new(loop, 1, 8, 10, path, &front), 0);
    struct jobs *j;
    jobs_new(loop, db, back, kinds, NKINDS, &j);
    jobs_set_foreground_pool(j, front);
    jobs_on_finish(j, on_finish, NULL);
    finished = 0;
    CHECK_INT(jobs_submit(j, "tf", "wait", "{}", w), 0);
    CHECK_INT(jobs_submit(j, "tf", "sum", "{\"n\":10}", bg), 0);
    CHECK_INT(jobs_submit(j, "tf", "sum_fg", "{\"n\":20}", fg), 0);
    db_tick_commit(db);
    run_until(loop, db, 1);
    CHECK_INT(finished, 1);
    sqlite3 *h = db_handle(db);
    CHECK_STR(col(h, fg, "status", v, sizeof(v)), "completed");
    CHECK_STR(col(h, fg, "result", v, sizeof(v)), "{\"sum\":210}");
    /* handed to the background pool ("running" in the table), waiting behind "wait" */
    CHECK_STR(col(h, bg, "result", v, sizeof(v)), "");
    CHECK(strcmp(col(h, bg, "status", v, sizeof(v)), "completed") != 0);
    jobs_cancel_all(j);
    jobs_stop_writes(j);
    pool_stop(back);
    pool_stop(front);
    db_tick_commit(db);
    pool_close_handles(back);
    pool_close_handles(front);
    jobs_close_handles(j);
    uv_run(loop, UV_RUN_DEFAULT);
    pool_free(back);
    pool_free(front);
    jobs_free(j);
    db_close(db);
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(path, sizeof(path), "%s/j.db", dir);
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_run_and_fail(&loop);
    test_recovery(&loop);
    test_bounded_queue(&loop);
    test_backlog(&loop);
    test_job_write(&loop);
    test_rescue_backlog(&loop);
    test_foreground_pool(&loop);
    uv_loop_close(&loop);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    CHECK_DONE();
}
