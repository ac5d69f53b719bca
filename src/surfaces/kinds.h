/* The job-kind table (src/surfaces/kinds.c): above the surfaces, whose functions it names;
 * the jobs layer takes it as a parameter. Terminated by a row with a NULL name. */
#ifndef TS_KINDS_H
#define TS_KINDS_H
#include "jobs/jobs.h"

extern const struct job_kind job_kinds[];
extern const size_t job_kinds_count;

/* Run functions of the kinds, implemented beside the data they read. */
int desk_export_job(struct job_run *r);   /* src/surfaces/desk/dashboard.c */
int cm_rollup_job(struct job_run *r);     /* src/surfaces/commerce/rollup.c */
int cm_ingest_job(struct job_run *r);     /* src/surfaces/commerce/ingest.c */
int cm_ingest_abandon(struct db *db, const char *tenant_id, const char *params);
int recs_train_job(struct job_run *r);    /* src/surfaces/recs/ml.c */
#endif
