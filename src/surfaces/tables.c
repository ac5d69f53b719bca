/* Every route table the server loads, in one list: main builds its router from it, `tessera
 * routes` prints it, and the route fuzz target matches requests against the same router. */
#include "api/app.h"

const struct route_table *const app_route_tables[] = {
    &ops_route_table,        &live_route_table,          &docs_route_table,
    &learning_route_table,   &identity_shared_table,     &identity_learning_table,
    &identity_desk_auth_table, &identity_desk_table,     &identity_lms_table,
    &identity_recs_table,      &desk_notifications_table, &desk_files_table, &desk_dashboard_table,
    &desk_sla_table, &desk_approvals_table, &desk_staging_table, &desk_tickets_table,
    &commerce_ingest_table, &commerce_metrics_table, &commerce_customers_table,
    &commerce_products_table, &commerce_dashboards_table, &commerce_alerts_table,
    &commerce_quality_table, &recs_data_table, &recs_ml_table, &recs_serving_table,
};

const size_t app_route_tables_count = sizeof(app_route_tables) / sizeof(app_route_tables[0]);

struct router *app_router_new(char *err, size_t errlen)
{
    struct route_table tables[sizeof(app_route_tables) / sizeof(app_route_tables[0])];
    for (size_t i = 0; i < app_route_tables_count; i++)
        tables[i] = *app_route_tables[i];
    return router_new(tables, app_route_tables_count, err, errlen);
}
