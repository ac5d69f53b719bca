/* The job-kind table: every durable job kind, its function and its limits, in one place.
 * Surfaces add their kinds here (exports, batch ingestion, training, embeddings). */
#include "surfaces/kinds.h"

const struct job_kind job_kinds[] = {
    /* name, run, max active per tenant, max runs in a row without progress, abandon,
     * foreground (on the request workers: the rest of a request a client waits on) */
    {"desk.export", desk_export_job, 2, 3},   /* tickets report past 50,000 rows */
    {"commerce.rollup", cm_rollup_job, 1, 3}, /* recomputes dirty days of the rollups */
    {"commerce.ingest", cm_ingest_job, 16, 5, cm_ingest_abandon, true}, /* a batch, in chunks */
    {"recs.train", recs_train_job, 1, 3},     /* one model: read, fit, store, evaluate */
    {NULL, NULL, 0, 0},
};

const size_t job_kinds_count = sizeof(job_kinds) / sizeof(job_kinds[0]) - 1;
