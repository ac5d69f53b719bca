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

/* A real query on the loop's connection: the database answers, or it does not. */
const char *ops_check_database(struct app *app)
{
    sqlite3_stmt *st = db_stmt(app->db, SQL_PING);
    int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
    if (st)
        sqlite3_reset(st);
    return rc == SQLITE_ROW ? "healthy" : "unhealthy";
}

/* The worker pool: healthy with room in its queue, degraded when it is full or stopped. */
static const char *check_pool(struct app *app)
{
    struct pool_stats s = pool_stats(app->pool);
    return s.queued < OPS_POOL_QUEUE_MAX ? "healthy" : "degraded";
}

void ops_health_snapshot(struct app *app, struct ops_health *ret)
{
    ret->database = ops_check_database(app);
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

