/* recs.md: training (section 1: POST /internal/ml/training/trigger, GET /internal/ml/training/{job_id}). */
#include "api/app.h"

const struct route_table recs_ml_table = {SURF_RECS, NULL, 0};
