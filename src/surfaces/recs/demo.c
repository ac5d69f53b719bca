/* The --demo catalog and interactions (issue 6 "Demo data"). */
#include "api/app.h"

int recs_demo_seed(sqlite3 *db, const char *tenant_id)
{
    (void)db;
    (void)tenant_id;
    return 0;
}
