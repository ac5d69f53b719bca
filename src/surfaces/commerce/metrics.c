/* commerce.md: business metrics (section 2.1) over the rollups. */
#include "api/app.h"
#include "surfaces/commerce/common.h"

const struct route_table commerce_metrics_table = {SURF_COMMERCE, NULL, 0};

void cm_rollups_start(struct app *app)
{
    (void)app;
}

void cm_rollups_stop(void)
{
}
