/* Health state shared by the ops routes: real checks of the database, pool and server. */
#include <sqlite3.h>

#include "api/ops.h"
#include "core/clock.h"
#include "jobs/pool.h"
#include "store/db.h"
#include "version.h"

const char *app_version(void)
{
    return TESSERA_VERSION;
}

static const char SQL_PING[] = "SELECT count(*) FROM schema_migrations";

/* A storage fault (I/O error, full disk, failed allocation) this recent, with no commit since,
 * makes the database unhealthy: the ping reads pages the cache most likely holds, so a disk
 * that fails every write would still answer it. */
#define OPS_FAULT_WINDOW_MS 10000

/* A real query on the loop's connection: the database answers, or it does not. */
const char *ops_check_database(struct app *app)
{
    sqlite3_stmt *st = db_stmt(app->db, SQL_PING);
    int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
    if (st)
        sqlite3_reset(st);
    bool fault = db_fault_recent(OPS_FAULT_WINDOW_MS) < 0;
    db_fault_clear(); /* reported here as the check's verdict, not as the request's failure */
    return rc == SQLITE_ROW && !fault ? "healthy" : "unhealthy";
}

/* The worker pool: healthy with room in its queue, degraded when it is full or stopped. */
static const char *check_pool(struct app *app)
{
    struct pool_stats s = pool_stats(app->pool);
    return s.queued < OPS_POOL_QUEUE_MAX ? "healthy" : "degraded";
}

/* /health is polled by load balancers many times a second: its database check (a real query)
 * is reused for up to one second. /ready always runs its own. */
static const char *check_database_cached(struct app *app)
{
    static int64_t checked_ms;
    static const char *verdict;
    int64_t now = clock_now_ms();
    if (verdict == NULL || now - checked_ms >= 1000 || now < checked_ms) {
        verdict = ops_check_database(app);
        checked_ms = now;
    }
    return verdict;
}

void ops_health_snapshot(struct app *app, struct ops_health *ret)
{
    ret->database = check_database_cached(app);
    ret->cache = app->cache ? "healthy" : "unhealthy";
    ret->workers = check_pool(app);
    ret->http = app->draining ? "degraded" : "healthy";
    ret->uptime_s = (clock_now_ms() - app->started_ms) / 1000;
    if (ret->database[0] == 'u')
        ret->status = "unhealthy";
    else if (ret->workers[0] == 'd' || ret->http[0] == 'd')
        ret->status = "degraded";
    else
        ret->status = "healthy";
}

