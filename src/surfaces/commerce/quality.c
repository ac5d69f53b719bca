/* commerce.md: data-quality reports (section 4). */
#include "api/app.h"

const struct route_table commerce_quality_table = {SURF_COMMERCE, NULL, 0};
