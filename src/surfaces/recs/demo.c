/* The --demo catalog and interactions (issue 6 "Demo data"): recs-gen's planted-cluster data
 * (tools/recs_gen.c; 20,000 items, 50,000 users, 1,000,000 interactions over 90 days at
 * --demo-scale 1) with the items' content embeddings, written straight into rc_items,
 * rc_item_content and rc_interactions inside the demo transaction (tools/recs_gen_db.c); once
 * serving starts, a first matrix-factorization model is queued for training on it. */
#include <stdio.h>
#include <string.h>

#include "api/app.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/ids.h"
#include "core/log.h"
#include "recs_gen.h"
#include "recs_gen_db.h"
#include "surfaces/recs/recs.h"

/* The tenant seeded by this process (none when the data dir already had its demo). */
static char seeded_tenant[UUID_STR_LEN];

int recs_demo_seed(sqlite3 *db, const char *tenant_id, double scale)
{
    uint64_t t0 = clock_mono_ns();
    int64_t now = clock_now_ms();
    struct rg_config c;
    rg_config_demo(&c, scale, now);
    struct rg_db_counts n;
    char err[256];
    if (rg_db_load(db, tenant_id, &c, now, RECS_DEFAULT_DIM, &n, err, sizeof(err)) < 0) {
        log_msg(LOG_ERROR, "recs demo data: %s", err);
        return TS_E_INTERNAL;
    }
    log_msg(LOG_INFO,
            "recs demo data: %lld items, %lld users, %lld interactions in %.1f s (%.1f s "
            "writing, %.1f s indexes)",
            (long long)n.items, (long long)n.users, (long long)n.interactions,
            (double)(clock_mono_ns() - t0) / 1e9, n.write_s, n.index_s);
    snprintf(seeded_tenant, sizeof(seeded_tenant), "%s", tenant_id);
    return 0;
}

void recs_demo_start(struct app *app)
{
    if (seeded_tenant[0] == '\0')
        return;
    char job[UUID_STR_LEN];
    int r = recs_train_submit(app->jobs, seeded_tenant, "matrix_factorization", job);
    if (r < 0)
        log_msg(LOG_ERROR, "recs demo data: the first training job was not queued (%d)", r);
    else
        log_msg(LOG_INFO, "recs demo data: first model training, job %s", job);
    seeded_tenant[0] = '\0';
}
