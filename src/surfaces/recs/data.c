/* recs.md: catalog, interactions and usage (sections 2, 5: items, interactions, usage; quotas). */
#include "api/app.h"

const struct route_table recs_data_table = {SURF_RECS, NULL, 0};
