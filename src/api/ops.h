/* Shared health state for the ops routes (recs /health, learning /api/v1/health, /ws/ops). */
#ifndef TS_OPS_H
#define TS_OPS_H
#include <stdint.h>

#include "api/app.h"

#define OPS_POOL_QUEUE_MAX 1024

struct ops_health {
    const char *status;      /* healthy | degraded | unhealthy */
    const char *database, *cache, *workers, *http;
    int64_t uptime_s;
};

void ops_health_snapshot(struct app *app, struct ops_health *ret);
const char *ops_check_database(struct app *app);  /* "healthy" or "unhealthy" */
#endif
