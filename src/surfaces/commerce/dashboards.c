/* commerce.md section 3.1-3.2: dashboards, their data and the dashboard WebSocket. */
#include "api/app.h"
#include "surfaces/commerce/common.h"

const struct route_table commerce_dashboards_table = {SURF_COMMERCE, NULL, 0};

void cm_dashboards_on_ingest(struct app *app, const char *tenant_id)
{
    (void)app;
    (void)tenant_id;
}
