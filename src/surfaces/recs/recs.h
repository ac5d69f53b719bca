/* What every part of the recs surface agrees on: validation rules (recs.md section 9), the
 * interaction types and their weights, how vectors are stored, how models are named, and the
 * serving registry that training hands finished models to. */
#ifndef TS_RECS_H
#define TS_RECS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- section 9 ---- */
/* user_id / item_id: [A-Za-z0-9_-]{1,128} */
bool recs_id_valid(const char *s);
/* category: lowercase alphanumeric and hyphens, at most 64 */
bool recs_category_valid(const char *s);
#define RECS_MAX_TAGS 20
#define RECS_MAX_TAG_LEN 32

/* ---- interactions ---- */
/* The seven types and their implicit-feedback weights: positive ones add preference with
 * confidence 1 + alpha * weight; a user-item pair whose summed weight is <= 0 counts as a
 * "not preferred" observation (p = 0) with confidence 1 + alpha * |weight|. */
struct recs_itype {
    const char *name;
    float weight;
};
extern const struct recs_itype recs_itypes[];
extern const size_t recs_itypes_count;
/* Weight of a type name; false if unknown. */
bool recs_itype_weight(const char *name, float *ret);

/* ---- vectors ---- */
/* Stored as BLOBs of little-endian float32 (this host is little-endian; checked at build). */
#define RECS_DEFAULT_DIM 128
#define RECS_MAX_DIM 512
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "vector blobs are little-endian");

/* ---- models ---- */
/* model_version = prefix-N, N counting per tenant and type from 1: mf-3, tt-1, gnn-2. Before
 * any training, serving uses content embeddings plus popularity: "content-pop-0". */
#define RECS_CONTENT_MODEL "content-pop-0"
const char *recs_model_prefix(const char *model_type); /* "mf", "tt", "gnn"; NULL if unknown */

/* ---- training (src/surfaces/recs/ml.c) ----
 * Queues a "recs.train" job of model_type ("matrix_factorization", ...) with that type's
 * default hyperparameters over all of the tenant's interactions up to now, as the trigger
 * route would; ret_job_id gets UUID_STR_LEN bytes. Loop thread. 0, -EINVAL (unknown type), or
 * jobs_submit's error. */
struct jobs;
int recs_train_submit(struct jobs *jobs, const char *tenant_id, const char *model_type,
                      char *ret_job_id);

/* ---- serving registry (src/surfaces/recs/serving.c) ----
 * Process-wide: per tenant the in-memory matrices of its current model (and of any older
 * version asked for by model_version). Training calls recs_serving_model_ready from the loop
 * thread (inside the job_write that marked the model ready and current); serving loads the new
 * version's vectors on a worker and switches to it atomically. */
struct app;
int recs_serving_start(struct app *app);
void recs_serving_stop(void);
void recs_serving_model_ready(const char *tenant_id, const char *model_version);
/* The data side calls this on the loop thread once per user whose interactions it just
 * stored (inside the request or job_write apply that wrote them is fine, before the commit:
 * serving reads the user's latest interaction id on the writer connection, so it can tell a
 * worker snapshot that does not have them yet). It drops the user's cached recommendations and
 * folds the new interactions into their vector (and into popularity) in the pool, so the next
 * recommendation reflects them without retraining. */
void recs_serving_user_changed(const char *tenant_id, const char *user_id);
#endif
