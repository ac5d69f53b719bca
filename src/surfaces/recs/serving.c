/* recs.md: serving — recommendations and embeddings (sections 1, 5), the in-memory model
 * registry, fold-in, the per-user cache. */
#include "api/app.h"
#include "surfaces/recs/recs.h"

const struct route_table recs_serving_table = {SURF_RECS, NULL, 0};

int recs_serving_start(struct app *app)
{
    (void)app;
    return 0;
}

void recs_serving_stop(void)
{
}

void recs_serving_model_ready(const char *tenant_id, const char *model_version)
{
    (void)tenant_id;
    (void)model_version;
}

void recs_serving_user_changed(const char *tenant_id, const char *user_id)
{
    (void)tenant_id;
    (void)user_id;
}
