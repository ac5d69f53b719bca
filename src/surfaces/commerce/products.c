/* commerce.md: product performance (section 2.3). */
#include "api/app.h"

const struct route_table commerce_products_table = {SURF_COMMERCE, NULL, 0};
