/* commerce.md: business metrics (section 2.1) over the rollups. */
#include "api/app.h"

const struct route_table commerce_metrics_table = {SURF_COMMERCE, NULL, 0};
