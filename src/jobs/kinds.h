/* The job-kind table (src/jobs/kinds.c), terminated by a row with a NULL name. */
#ifndef TS_KINDS_H
#define TS_KINDS_H
#include "jobs/jobs.h"

extern const struct job_kind job_kinds[];
extern const size_t job_kinds_count;
#endif
