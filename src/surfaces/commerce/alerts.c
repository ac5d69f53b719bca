/* commerce.md section 3.3: alert rules, their evaluation and the alert lifecycle. */
#include "api/app.h"
#include "surfaces/commerce/common.h"

const struct route_table commerce_alerts_table = {SURF_COMMERCE, NULL, 0};

void cm_alerts_on_ingest(struct app *app, const char *tenant_id)
{
    (void)app;
    (void)tenant_id;
}

void cm_alerts_start(struct app *app)
{
    (void)app;
}

void cm_alerts_stop(void)
{
}
