/* commerce.md: customer analytics: RFM segments and profiles (section 2.2). */
#include "api/app.h"

const struct route_table commerce_customers_table = {SURF_COMMERCE, NULL, 0};
