/* commerce.md: ingestion: batch (JSON, CSV, NDJSON, XML), batch status, stream, sources (section 1). */
#include "api/app.h"

const struct route_table commerce_ingest_table = {SURF_COMMERCE, NULL, 0};
