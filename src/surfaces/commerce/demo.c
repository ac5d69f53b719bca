/* The --demo shop (issue 5 "Demo data"). */
#include "api/app.h"

int commerce_demo_seed(sqlite3 *db, const char *tenant_id)
{
    (void)db;
    (void)tenant_id;
    return 0;
}
