/* recs.md section 1, training: POST /internal/ml/training/trigger, GET
 * /internal/ml/training/{job_id}, GET /internal/ml/models, and the durable "recs.train" job that
 * reads a tenant's interactions, trains a model (src/engines/mf.h), stores its vectors, evaluates
 * the same configuration on a holdout split with full ranking, and hands the model to serving. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"
#include "engines/hashembed.h"
#include "engines/mf.h"
#include "jobs/jobs.h"
#include "store/db.h"
#include "surfaces/kinds.h"
#include "surfaces/recs/recs.h"
#include "surfaces/recs/usage.h"

#define MIN_DIM 8
#define MAX_EPOCHS 200
#define MAX_READ_INTERACTIONS 20000000  /* rows one job reads; past it: narrow data_range */
#define MAX_FACTOR_FLOATS (64L << 20)   /* (users + items) x dim: 256 MB of factors */
#define MIN_POSITIVE_PAIRS 10
#define VEC_CHUNK 2000                  /* vector rows per job_write */
#define EVAL_K 10
#define EVAL_MAX_USERS 10000            /* full ranking for at most this many test users */
#define HOLDOUT_FRAC 0.2
#define CONTENT_DIM RECS_DEFAULT_DIM    /* two-tower item tower input (hashembed) */
#define MODELS_LIST_MAX 200

/* ---------------------------------------------------------------- model types */

/* Defaults per type, and the measured cost used for estimates until the tenant has trained
 * that type here once: seconds per (interaction x epoch x dimension) for a whole job (both
 * fits, evaluation and storing), measured on the 2-core benchmark machine. */
struct model_def {
    const char *type, *prefix;
    int dim, epochs;
    double lr, reg;
    double rate_s;
};

static const struct model_def model_defs[] = {
    {"matrix_factorization", "mf", 128, 10, 0.01, 0.1, 1.6e-8},
    {"two_tower", "tt", 64, 10, 0.003, 0.01, 1.2e-7},
    {"gnn", "gnn", 64, 10, 0.01, 0.01, 1.2e-7},
};
#define ALS_ALPHA 10.0
#define ALS_CG_STEPS 3
#define GCN_LAYERS 2
#define TT_BATCH 256
#define GCN_BATCH 1024

static const struct model_def *model_def(const char *type)
{
    for (size_t i = 0; type && i < sizeof model_defs / sizeof model_defs[0]; i++)
        if (strcmp(model_defs[i].type, type) == 0)
            return &model_defs[i];
    return NULL;
}

/* A training configuration: validated from the request, stored as the job's params, read back
 * by the job. */
struct train_cfg {
    const struct model_def *def;
    int dim, epochs, cg_steps, layers;
    double lr, reg, alpha;
    bool cholesky;
    int64_t seed;
    int64_t start_ms, end_ms;          /* inclusive; start 0 = from the first interaction */
    const char *start_date, *end_date; /* as given (NULL when absent) */
};

static void cfg_defaults(struct train_cfg *c, const struct model_def *def)
{
    *c = (struct train_cfg){.def = def, .dim = def->dim, .epochs = def->epochs, .lr = def->lr,
                            .reg = def->reg, .alpha = ALS_ALPHA, .cg_steps = ALS_CG_STEPS,
                            .layers = GCN_LAYERS, .seed = 42};
}

static void cfg_json(struct jw *w, const struct train_cfg *c)
{
    jw_kint(w, "embedding_dim", c->dim);
    jw_kdouble(w, "learning_rate", c->lr);
    jw_kint(w, "epochs", c->epochs);
    jw_kdouble(w, "regularization", c->reg);
    if (c->def->prefix[0] == 'm') {
        jw_kdouble(w, "alpha", c->alpha);
        jw_kstr(w, "solver", c->cholesky ? "cholesky" : "cg");
        jw_kint(w, "cg_steps", c->cg_steps);
    }
    if (c->def->prefix[0] == 'g')
        jw_kint(w, "layers", c->layers);
    jw_kint(w, "seed", c->seed);
}

/* ---------------------------------------------------------------- request validation */

static int bad(struct hctx *h, const char *field, const char *msg)
{
    return fail(h, TS_E_VALIDATION, field, msg);
}

static int hp_int(struct hctx *h, json_t *v, const char *field, int64_t min, int64_t max,
                  int64_t *ret)
{
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return bad(h, field, arena_printf(h->arena, "%s must be an integer from %lld to %lld",
                                          field, (long long)min, (long long)max));
    *ret = json_integer_value(v);
    return 0;
}

/* A number in (min, max] (min_open) or [min, max]. */
static int hp_num(struct hctx *h, json_t *v, const char *field, double min, bool min_open,
                  double max, double *ret)
{
    double x = json_is_number(v) ? json_number_value(v) : NAN;
    if (!json_is_number(v) || !isfinite(x) || (min_open ? x <= min : x < min) || x > max)
        return bad(h, field, arena_printf(h->arena, "%s must be a number %s %g and at most %g",
                                          field, min_open ? "above" : "of at least", min, max));
    *ret = x;
    return 0;
}

/* One hyperparameter by name; 1 when the name is not one of ours. */
static int hp_one(struct hctx *h, struct train_cfg *c, const char *key, json_t *v)
{
    const char *f = arena_printf(h->arena, "training_config.hyperparameters.%s", key);
    bool mf = c->def->prefix[0] == 'm', gnn = c->def->prefix[0] == 'g';
    int64_t i;
    int r;
    if (!strcmp(key, "embedding_dim")) {
        r = hp_int(h, v, f, MIN_DIM, RECS_MAX_DIM, &i);
        c->dim = (int)i;
    } else if (!strcmp(key, "epochs")) {
        r = hp_int(h, v, f, 1, MAX_EPOCHS, &i);
        c->epochs = (int)i;
    } else if (!strcmp(key, "learning_rate")) {
        r = hp_num(h, v, f, 0, true, 1, &c->lr);
    } else if (!strcmp(key, "regularization")) {
        r = hp_num(h, v, f, 0, mf, 100, &c->reg);
    } else if (!strcmp(key, "seed")) {
        r = hp_int(h, v, f, 0, INT64_C(9007199254740991), &c->seed);
    } else if (mf && !strcmp(key, "alpha")) {
        r = hp_num(h, v, f, 0, true, 1000, &c->alpha);
    } else if (mf && !strcmp(key, "cg_steps")) {
        r = hp_int(h, v, f, 1, 64, &i);
        c->cg_steps = (int)i;
    } else if (mf && !strcmp(key, "solver")) {
        const char *s = json_string_value(v);
        if (s == NULL || (strcmp(s, "cg") && strcmp(s, "cholesky")))
            return bad(h, f, arena_printf(h->arena, "%s must be cg or cholesky", f));
        c->cholesky = !strcmp(s, "cholesky");
        r = 0;
    } else if (gnn && !strcmp(key, "layers")) {
        r = hp_int(h, v, f, 1, 4, &i);
        c->layers = (int)i;
    } else {
        return 1;
    }
    return r;
}

static int hp_parse(struct hctx *h, struct train_cfg *c, json_t *hp)
{
    if (hp == NULL || json_is_null(hp))
        return 0;
    if (!json_is_object(hp))
        return bad(h, "training_config.hyperparameters",
                   "training_config.hyperparameters must be an object");
    const char *key;
    json_t *v;
    json_object_foreach(hp, key, v) {
        int r = hp_one(h, c, key, v);
        if (r < 0)
            return r;
        if (r > 0)
            return bad(h, arena_printf(h->arena, "training_config.hyperparameters.%s", key),
                       arena_printf(h->arena,
                                    "unknown hyperparameter for %s: %s (known: embedding_dim, "
                                    "learning_rate, epochs, regularization, seed%s)",
                                    c->def->type, key,
                                    c->def->prefix[0] == 'm' ? ", alpha, solver, cg_steps"
                                    : c->def->prefix[0] == 'g' ? ", layers" : ""));
    }
    return 0;
}

/* Whether an ISO 8601 text is a bare date (then an end_date covers its whole day). */
static bool iso_is_date(const char *s) { return strlen(s) == 10; }

static int range_date(struct hctx *h, json_t *dr, const char *key, const char **ret_s,
                      int64_t *ret_ms)
{
    json_t *v = json_object_get(dr, key);
    if (v == NULL || json_is_null(v))
        return 0;
    const char *f = arena_printf(h->arena, "training_config.data_range.%s", key);
    int64_t ms;
    if (!json_is_string(v) || json_string_length(v) > 40 ||
        clock_parse_iso8601(json_string_value(v), &ms) < 0)
        return bad(h, f, arena_printf(h->arena, "%s must be an ISO 8601 date or time such as "
                                                "2025-01-31 or 2025-01-31T12:00:00Z", f));
    *ret_s = json_string_value(v);
    *ret_ms = ms;
    return 0;
}

static int range_parse(struct hctx *h, struct train_cfg *c, json_t *dr, int64_t now)
{
    c->start_ms = 0;
    c->end_ms = now;
    if (dr == NULL || json_is_null(dr))
        return 0;
    if (!json_is_object(dr))
        return bad(h, "training_config.data_range", "training_config.data_range must be an object");
    int64_t s = 0, e = now;
    int r = range_date(h, dr, "start_date", &c->start_date, &s);
    if (r == 0)
        r = range_date(h, dr, "end_date", &c->end_date, &e);
    if (r < 0)
        return r;
    if (c->end_date && iso_is_date(c->end_date))
        e += 86400000 - 1;
    if (c->start_date && c->end_date && e <= s)
        return bad(h, "training_config.data_range.end_date",
                   "training_config.data_range.end_date must be after start_date");
    c->start_ms = s;
    c->end_ms = e;
    return 0;
}

static int cfg_parse(struct hctx *h, struct train_cfg *c)
{
    json_t *tc = json_object_get(h->body, "training_config");
    if (tc == NULL || json_is_null(tc))
        return bad(h, "training_config", "Missing required field: training_config");
    if (!json_is_object(tc))
        return bad(h, "training_config", "training_config must be an object");
    json_t *mt = json_object_get(tc, "model_type");
    if (mt == NULL || json_is_null(mt))
        return bad(h, "training_config.model_type",
                   "Missing required field: training_config.model_type");
    const struct model_def *def = model_def(json_string_value(mt));
    if (def == NULL)
        return bad(h, "training_config.model_type",
                   "training_config.model_type must be matrix_factorization, two_tower or gnn");
    cfg_defaults(c, def);
    const char *key;
    json_t *v;
    json_object_foreach(tc, key, v) {
        if (strcmp(key, "model_type") && strcmp(key, "hyperparameters") &&
            strcmp(key, "data_range"))
            return bad(h, arena_printf(h->arena, "training_config.%s", key),
                       arena_printf(h->arena, "unknown field training_config.%s", key));
    }
    int r = hp_parse(h, c, json_object_get(tc, "hyperparameters"));
    return r < 0 ? r : range_parse(h, c, json_object_get(tc, "data_range"), clock_now_ms());
}

/* Internal routes: a tenant_id in the body must be the key's own (it never picks the tenant). */
static int check_body_tenant(struct hctx *h)
{
    json_t *v = json_object_get(h->body, "tenant_id");
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return bad(h, "tenant_id", "tenant_id must be a string");
    if (strcmp(json_string_value(v), h->tenant_id) != 0)
        return fail(h, TS_E_FORBIDDEN, "tenant_id",
                    "tenant_id must be the tenant of the API key making the call");
    return 0;
}

/* ---------------------------------------------------------------- POST trigger */

struct trigger {
    struct train_cfg cfg;
    int64_t interactions;        /* in the range now */
    double seconds;              /* estimate */
    int err;
};

static const char SQL_RANGE_COUNT[] =
    "SELECT count(*) FROM rc_interactions WHERE tenant_id = ?1 AND timestamp >= ?2 "
    "AND timestamp <= ?3";
/* The tenant's last finished model of the type: what one unit of work took here. */
static const char SQL_LAST_RATE[] =
    "SELECT j.finished_at - j.started_at, m.interactions, m.dim, "
    "json_extract(m.hyperparameters, '$.epochs') FROM rc_models m JOIN jobs j ON j.id = m.job_id "
    "WHERE m.tenant_id = ?1 AND m.model_type = ?2 AND m.status = 'ready' "
    "AND j.finished_at > j.started_at AND m.interactions > 0 "
    "ORDER BY m.completed_at DESC LIMIT 1";

/* Pool: how much data the range holds and what that will cost. */
static void trigger_work(struct hctx *h)
{
    struct trigger *t = h->state;
    sqlite3_stmt *q = NULL;
    t->err = TS_E_INTERNAL;
    if (sqlite3_prepare_v2(h->db, SQL_RANGE_COUNT, -1, &q, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, t->cfg.start_ms);
    sqlite3_bind_int64(q, 3, t->cfg.end_ms);
    if (sqlite3_step(q) == SQLITE_ROW)
        t->interactions = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    double rate = t->cfg.def->rate_s;
    if (sqlite3_prepare_v2(h->db, SQL_LAST_RATE, -1, &q, NULL) == SQLITE_OK) {
        sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, t->cfg.def->type, -1, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_ROW) {
            double units = (double)sqlite3_column_int64(q, 1) * sqlite3_column_int64(q, 2) *
                           sqlite3_column_int64(q, 3);
            if (units > 0)
                rate = sqlite3_column_double(q, 0) / 1000.0 / units;
        }
        sqlite3_finalize(q);
    }
    t->seconds = rate * (double)t->interactions * t->cfg.epochs * t->cfg.dim;
    t->err = 0;
}

static void params_json(struct jw *w, const struct train_cfg *c)
{
    jw_obj_open(w);
    jw_kstr(w, "model_type", c->def->type);
    cfg_json(w, c);
    jw_kint(w, "start_ms", c->start_ms);
    jw_kint(w, "end_ms", c->end_ms);
    jw_kstr(w, "start_date", c->start_date);
    jw_kstr(w, "end_date", c->end_date);
    jw_obj_close(w);
}

/* Loop: queue the job and answer 202 with the estimate. */
static int trigger_done(struct hctx *h)
{
    struct trigger *t = h->state;
    recs_usage_add(h->tenant_id, 1, 0, 0, recs_elapsed_ms(h));
    if (t->err < 0)
        return t->err;
    struct buf params;
    buf_init(&params, 4096);
    struct jw w;
    jw_init(&w, &params);
    params_json(&w, &t->cfg);
    char id[UUID_STR_LEN];
    int r = jw_finish(&w);
    if (r == 0)
        r = jobs_submit(h->app->jobs, h->tenant_id, "recs.train", buf_cstr(&params), id);
    buf_release(&params);
    if (r == TS_E_RATE_LIMITED)
        h->err_message = jobs_refusal(h->app->jobs,
                                      "a training job is already queued or running for this "
                                      "tenant; poll GET /internal/ml/training/{job_id} and retry "
                                      "when it has finished");
    if (r < 0)
        return r == -EINVAL ? TS_E_INTERNAL : r;
    h->audit_target = arena_strdup(h->arena, id);
    h->status = 202;
    out_begin(h, &w);
    jw_kstr(&w, "job_id", id);
    jw_kstr(&w, "status", "queued");
    /* minutes, rounded up to a tenth: small jobs say 0.1 rather than a misleading 0 or 1 */
    jw_kdouble(&w, "estimated_duration_minutes", fmax(0.1, ceil(t->seconds / 6.0) / 10.0));
    return out_end(h, &w);
}

/* The type's default configuration over all of the tenant's interactions up to now, queued
 * without a request (the --demo tenant's first model, src/surfaces/recs/demo.c). */
int recs_train_submit(struct jobs *jobs, const char *tenant_id, const char *model_type,
                      char *ret_job_id)
{
    const struct model_def *def = model_def(model_type);
    if (def == NULL)
        return -EINVAL;
    struct train_cfg c;
    cfg_defaults(&c, def);
    c.start_ms = 0;
    c.end_ms = clock_now_ms();
    struct buf params;
    buf_init(&params, 4096);
    struct jw w;
    jw_init(&w, &params);
    params_json(&w, &c);
    int r = jw_finish(&w);
    if (r == 0)
        r = jobs_submit(jobs, tenant_id, "recs.train", buf_cstr(&params), ret_job_id);
    buf_release(&params);
    return r;
}

static int trigger(struct hctx *h)
{
    int r = recs_quota_check(h);
    if (r < 0)
        return r;
    struct trigger *t = arena_calloc(h->arena, sizeof *t);
    r = check_body_tenant(h);
    if (r == 0)
        r = cfg_parse(h, &t->cfg);
    if (r < 0) {
        recs_usage_add(h->tenant_id, 1, 0, 0, recs_elapsed_ms(h));
        return r;
    }
    h->state = t;
    r = api_defer_to_pool(h, trigger_work, trigger_done);
    if (r < 0)
        recs_usage_add(h->tenant_id, 1, 0, 0, recs_elapsed_ms(h));
    return r;
}

/* ---------------------------------------------------------------- GET job, GET models */

static const char SQL_JOB_GET[] =
    "SELECT j.id, j.status, j.progress, j.params, j.error, j.created_at, j.started_at, "
    "j.finished_at, m.model_version, m.metrics, m.losses, j.result FROM jobs j "
    "LEFT JOIN rc_models m ON m.tenant_id = j.tenant_id AND m.job_id = j.id "
    "WHERE j.id = ?1 AND j.tenant_id = ?2 AND j.kind = 'recs.train'";

static void iso_or_null(struct jw *w, const char *key, int64_t ms)
{
    char b[40];
    jw_key(w, key);
    if (ms <= 0) {
        jw_null(w);
        return;
    }
    clock_iso8601(ms, 0, b, sizeof b);
    jw_str(w, b);
}

/* Loop: a job's state joined with its model's live losses. */
static void job_row_json(struct hctx *h, struct jw *w, sqlite3_stmt *q)
{
    (void)h;
    json_t *p = json_loads(col_text(q, 3), 0, NULL);
    const char *status = col_text(q, 1);
    bool done = !strcmp(status, "completed");
    jw_obj_open(w);
    jw_kstr(w, "job_id", col_text(q, 0));
    jw_kstr(w, "status", status);
    jw_kdouble(w, "progress", sqlite3_column_double(q, 2));
    jw_kstr(w, "model_type", json_string_value(json_object_get(p, "model_type")));
    jw_kstr(w, "model_version", done && sqlite3_column_type(q, 8) == SQLITE_TEXT
                                    ? col_text(q, 8) : NULL);
    jw_key(w, "hyperparameters");
    jw_obj_open(w);
    const char *key;
    json_t *v;
    json_object_foreach(p, key, v) {
        if (!strcmp(key, "model_type") || !strcmp(key, "start_ms") || !strcmp(key, "end_ms") ||
            !strcmp(key, "start_date") || !strcmp(key, "end_date"))
            continue;
        if (json_is_integer(v))
            jw_kint(w, key, json_integer_value(v));
        else if (json_is_number(v))
            jw_kdouble(w, key, json_number_value(v));
        else
            jw_kstr(w, key, json_string_value(v));
    }
    jw_obj_close(w);
    jw_key(w, "data_range");
    jw_obj_open(w);
    iso_or_null(w, "start_date", json_integer_value(json_object_get(p, "start_ms")));
    iso_or_null(w, "end_date", json_integer_value(json_object_get(p, "end_ms")));
    jw_obj_close(w);
    jw_key(w, "metrics");
    if (done && sqlite3_column_type(q, 9) == SQLITE_TEXT)
        jw_raw(w, col_text(q, 9));
    else
        jw_null(w);
    jw_key(w, "losses");
    jw_raw(w, sqlite3_column_type(q, 10) == SQLITE_TEXT ? col_text(q, 10) : "[]");
    iso_or_null(w, "created_at", sqlite3_column_int64(q, 5));
    iso_or_null(w, "started_at", sqlite3_column_int64(q, 6));
    iso_or_null(w, "completed_at", sqlite3_column_int64(q, 7));
    jw_kstr(w, "error", sqlite3_column_type(q, 4) == SQLITE_TEXT ? col_text(q, 4) : NULL);
    jw_obj_close(w);
    json_decref(p);
}

static int job_get(struct hctx *h)
{
    int r = recs_quota_check(h);
    if (r < 0)
        return r;
    const char *id = http_param_get(h->req, "job_id");
    r = row_body(h, SQL_JOB_GET, id ? id : "", "job_id", "training job", job_row_json);
    recs_usage_add(h->tenant_id, 1, 0, 0, recs_elapsed_ms(h));
    return r;
}

static const char SQL_MODELS[] =
    "SELECT model_version, model_type, status, is_current, dim, hyperparameters, metrics, users, "
    "items, interactions, created_at, completed_at, job_id FROM rc_models WHERE tenant_id = ?1 "
    "ORDER BY created_at DESC, model_version LIMIT ?2";

static int models_list(struct hctx *h)
{
    int r = recs_quota_check(h);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_MODELS);
    if (q == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 2, MODELS_LIST_MAX);
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "models");
    jw_arr_open(&w);
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        jw_obj_open(&w);
        jw_kstr(&w, "model_version", col_text(q, 0));
        jw_kstr(&w, "model_type", col_text(q, 1));
        jw_kstr(&w, "status", col_text(q, 2));
        jw_kbool(&w, "is_current", sqlite3_column_int(q, 3) != 0);
        jw_kint(&w, "dimension", sqlite3_column_int(q, 4));
        jw_key(&w, "hyperparameters");
        jw_raw(&w, col_text(q, 5));
        jw_key(&w, "metrics");
        jw_raw(&w, col_text(q, 6));
        jw_kint(&w, "users", sqlite3_column_int64(q, 7));
        jw_kint(&w, "items", sqlite3_column_int64(q, 8));
        jw_kint(&w, "interactions", sqlite3_column_int64(q, 9));
        iso_or_null(&w, "created_at", sqlite3_column_int64(q, 10));
        iso_or_null(&w, "completed_at", sqlite3_column_int64(q, 11));
        jw_kstr(&w, "job_id", sqlite3_column_type(q, 12) == SQLITE_TEXT ? col_text(q, 12) : NULL);
        jw_obj_close(&w);
    }
    sqlite3_reset(q);
    jw_arr_close(&w);
    recs_usage_add(h->tenant_id, 1, 0, 0, recs_elapsed_ms(h));
    if (r != SQLITE_DONE)
        return db_err(r);
    return out_end(h, &w);
}

/* ---------------------------------------------------------------- the job: data */

/* String -> dense index, open addressing; keys live in the owner's arena. */
struct strmap {
    const char **keys;           /* by index */
    int32_t n, cap;              /* keys */
    int32_t *slots;              /* index + 1; 0 empty */
    uint32_t mask;
};

static uint32_t str_hash(const char *s)
{
    uint64_t x = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        x = (x ^ (unsigned char)*s) * 0x100000001b3ULL;
    return (uint32_t)(x ^ (x >> 32));
}

static int strmap_grow(struct strmap *m)
{
    uint32_t nslots = m->mask ? (m->mask + 1) * 2 : 1024;
    int32_t *slots = calloc(nslots, sizeof *slots);
    const char **keys = realloc(m->keys, (size_t)nslots / 2 * sizeof *keys);
    if (slots == NULL || keys == NULL) {
        free(slots);
        if (keys)
            m->keys = keys;
        return -ENOMEM;
    }
    m->keys = keys;
    m->cap = (int32_t)(nslots / 2);
    for (int32_t i = 0; i < m->n; i++) {
        uint32_t j = str_hash(keys[i]) & (nslots - 1);
        while (slots[j])
            j = (j + 1) & (nslots - 1);
        slots[j] = i + 1;
    }
    free(m->slots);
    m->slots = slots;
    m->mask = nslots - 1;
    return 0;
}

/* The index of key, added (copied into a) when new; -ENOMEM. *ret_added says which. */
static int32_t strmap_put(struct strmap *m, struct arena *a, const char *key, bool *ret_added)
{
    *ret_added = false;
    if (m->n >= m->cap && strmap_grow(m) < 0)
        return -ENOMEM;
    uint32_t j = str_hash(key) & m->mask;
    for (; m->slots[j]; j = (j + 1) & m->mask)
        if (strcmp(m->keys[m->slots[j] - 1], key) == 0)
            return m->slots[j] - 1;
    m->keys[m->n] = arena_strdup(a, key);
    m->slots[j] = ++m->n;
    *ret_added = true;
    return m->n - 1;
}

static void strmap_free(struct strmap *m)
{
    free(m->keys);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* Growable arrays of (row, col, weight) triplets. */
struct triplets {
    int32_t *r, *c;
    float *w;
    int64_t *ts;
    size_t n, cap;
};

static int triplets_push(struct triplets *t, int32_t r, int32_t c, float w, int64_t ts)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 65536;
        int32_t *nr = realloc(t->r, cap * sizeof *nr);
        if (nr)
            t->r = nr;
        int32_t *nc = realloc(t->c, cap * sizeof *nc);
        if (nc)
            t->c = nc;
        float *nw = realloc(t->w, cap * sizeof *nw);
        if (nw)
            t->w = nw;
        int64_t *nt = realloc(t->ts, cap * sizeof *nt);
        if (nt)
            t->ts = nt;
        if (!nr || !nc || !nw || !nt)
            return -ENOMEM;
        t->cap = cap;
    }
    t->r[t->n] = r;
    t->c[t->n] = c;
    t->w[t->n] = w;
    t->ts[t->n] = ts;
    t->n++;
    return 0;
}

static void triplets_free(struct triplets *t)
{
    free(t->r);
    free(t->c);
    free(t->w);
    free(t->ts);
    memset(t, 0, sizeof *t);
}

/* Everything one run of the job holds. */
struct train {
    struct job_run *run;
    struct train_cfg cfg;
    json_t *params;
    struct arena *strings;
    struct strmap users, items;
    int32_t ncatalog;            /* items[0 .. ncatalog) are catalog rows in ix order */
    float *features;             /* two-tower: items x CONTENT_DIM */
    struct mf_csr R;
    int64_t *when;               /* per entry of R: the pair's latest interaction (holdout) */
    int64_t interactions;        /* rows read */
    int64_t positive_pairs;
    char version[64];
    bool begun;                  /* the rc_models row exists */
    /* live losses: the stored JSON array and the phase's progress window */
    struct buf losses;
    int nlosses;
    double prog_lo, prog_hi;
    bool stopping;
    double fit_s, eval_s;
    struct mf_eval ev;
};

static int fail_msg(struct train *t, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_msg(struct train *t, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->run->error, sizeof t->run->error, fmt, ap);
    va_end(ap);
    return rc;
}

static int params_load(struct train *t)
{
    json_t *p = t->params = json_loads(t->run->params, 0, NULL);
    const struct model_def *def = model_def(json_string_value(json_object_get(p, "model_type")));
    if (def == NULL)
        return fail_msg(t, TS_E_INTERNAL, "the job's parameters name no model type");
    struct train_cfg *c = &t->cfg;
    cfg_defaults(c, def);
    c->dim = (int)json_integer_value(json_object_get(p, "embedding_dim"));
    c->epochs = (int)json_integer_value(json_object_get(p, "epochs"));
    c->lr = json_number_value(json_object_get(p, "learning_rate"));
    c->reg = json_number_value(json_object_get(p, "regularization"));
    if (json_object_get(p, "alpha"))
        c->alpha = json_number_value(json_object_get(p, "alpha"));
    if (json_object_get(p, "cg_steps"))
        c->cg_steps = (int)json_integer_value(json_object_get(p, "cg_steps"));
    if (json_object_get(p, "layers"))
        c->layers = (int)json_integer_value(json_object_get(p, "layers"));
    const char *solver = json_string_value(json_object_get(p, "solver"));
    c->cholesky = solver && !strcmp(solver, "cholesky");
    c->seed = json_integer_value(json_object_get(p, "seed"));
    c->start_ms = json_integer_value(json_object_get(p, "start_ms"));
    c->end_ms = json_integer_value(json_object_get(p, "end_ms"));
    c->start_date = json_string_value(json_object_get(p, "start_date"));
    c->end_date = json_string_value(json_object_get(p, "end_date"));
    if (c->dim < MIN_DIM || c->dim > RECS_MAX_DIM || c->epochs < 1 || c->epochs > MAX_EPOCHS)
        return fail_msg(t, TS_E_INTERNAL, "the job's parameters are out of range");
    return 0;
}

static const char SQL_ITEMS[] =
    "SELECT item_id, title, description, category, tags FROM rc_items WHERE tenant_id = ?1 "
    "ORDER BY ix";
static const char SQL_INTERACTIONS[] =
    "SELECT user_id, item_id, type, timestamp FROM rc_interactions WHERE tenant_id = ?1 "
    "AND timestamp >= ?2 AND timestamp <= ?3 ORDER BY timestamp, id";

/* The catalog item's content vector (two-tower input) from its stored features. */
static void item_features(sqlite3_stmt *q, float *out)
{
    const char *tags[RECS_MAX_TAGS];
    int ntags = 0;
    json_t *tj = json_loads(col_text(q, 4), 0, NULL);
    size_t i;
    json_t *v;
    json_array_foreach(tj, i, v) {
        if (json_is_string(v) && ntags < RECS_MAX_TAGS)
            tags[ntags++] = json_string_value(v);
    }
    hashembed(col_text(q, 1), col_text(q, 2), col_text(q, 3), tags, ntags, CONTENT_DIM, out);
    json_decref(tj);
}

static int features_reserve(struct train *t, int32_t n)
{
    float *f = realloc(t->features, (size_t)n * CONTENT_DIM * sizeof *f);
    if (f == NULL)
        return -ENOMEM;
    t->features = f;
    return 0;
}

/* Catalog items in ix order become the first columns. */
static int load_items(struct train *t, sqlite3 *db)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, SQL_ITEMS, -1, &q, NULL) != SQLITE_OK)
        return TS_E_INTERNAL;
    sqlite3_bind_text(q, 1, t->run->tenant_id, -1, SQLITE_STATIC);
    bool tt = t->cfg.def->prefix[0] == 't', added;
    int rc = 0, s;
    while (rc == 0 && (s = sqlite3_step(q)) == SQLITE_ROW) {
        int32_t ix = strmap_put(&t->items, t->strings, col_text(q, 0), &added);
        if (ix < 0) {
            rc = -ENOMEM;
        } else if (tt && added) {
            if ((ix & 1023) == 0 && (rc = features_reserve(t, ix + 1024)) < 0)
                break;
            item_features(q, t->features + (size_t)ix * CONTENT_DIM);
        }
    }
    if (rc == 0 && s != SQLITE_DONE)
        rc = db_err(s);
    sqlite3_finalize(q);
    t->ncatalog = t->items.n;
    return rc;
}

static int load_interactions(struct train *t, sqlite3 *db, struct triplets *tr)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, SQL_INTERACTIONS, -1, &q, NULL) != SQLITE_OK)
        return TS_E_INTERNAL;
    sqlite3_bind_text(q, 1, t->run->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, t->cfg.start_ms);
    sqlite3_bind_int64(q, 3, t->cfg.end_ms);
    int rc = 0, s;
    bool added;
    while (rc == 0 && (s = sqlite3_step(q)) == SQLITE_ROW) {
        if (++t->interactions > MAX_READ_INTERACTIONS) {
            rc = fail_msg(t, TS_E_VALIDATION, "data_range holds more than %d interactions; "
                          "choose a narrower data_range", MAX_READ_INTERACTIONS);
            break;
        }
        if ((t->interactions & 65535) == 0 && atomic_load(t->run->cancel)) {
            rc = -ECANCELED;
            break;
        }
        float w;
        if (!recs_itype_weight(col_text(q, 2), &w))
            continue;
        int32_t u = strmap_put(&t->users, t->strings, col_text(q, 0), &added);
        int32_t i = strmap_put(&t->items, t->strings, col_text(q, 1), &added);
        rc = u < 0 || i < 0 ? -ENOMEM : triplets_push(tr, u, i, w, sqlite3_column_int64(q, 3));
    }
    if (rc == 0 && s != SQLITE_DONE)
        rc = db_err(s);
    sqlite3_finalize(q);
    return rc;
}

/* when[e]: the latest timestamp among the triplets summed into entry e of R. */
static int pair_times(struct train *t, const struct triplets *tr)
{
    t->when = calloc((size_t)(t->R.nnz ? t->R.nnz : 1), sizeof *t->when);
    if (t->when == NULL)
        return -ENOMEM;
    for (size_t k = 0; k < tr->n; k++) {
        int64_t lo = t->R.indptr[tr->r[k]], hi = t->R.indptr[tr->r[k] + 1];
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (t->R.indices[mid] < tr->c[k])
                lo = mid + 1;
            else
                hi = mid;
        }
        if (tr->ts[k] > t->when[lo])
            t->when[lo] = tr->ts[k];
    }
    return 0;
}

/* Reads the catalog and the range's interactions in one snapshot and builds the matrix. */
static int train_load(struct train *t)
{
    sqlite3 *db = t->run->db;
    struct triplets tr = {0};
    int rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK ? 0 : TS_E_INTERNAL;
    if (rc == 0)
        rc = load_items(t, db);
    if (rc == 0)
        rc = load_interactions(t, db, &tr);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc == 0 && t->cfg.def->prefix[0] == 't' && t->items.n > 0 &&
        (rc = features_reserve(t, t->items.n)) == 0)
        /* items seen only in interactions have no content: a zero input, id embedding only */
        memset(t->features + (size_t)t->ncatalog * CONTENT_DIM, 0,
               (size_t)(t->items.n - t->ncatalog) * CONTENT_DIM * sizeof(float));
    if (rc == 0)
        rc = mf_csr_from_triplets(t->users.n, t->items.n, tr.n, tr.r, tr.c, tr.w, &t->R);
    if (rc == 0)
        rc = pair_times(t, &tr);
    triplets_free(&tr);
    if (rc == -ENOMEM)
        return fail_msg(t, rc, "out of memory reading %lld interactions",
                        (long long)t->interactions);
    if (rc < 0 && rc != -ECANCELED && !t->run->error[0])
        return fail_msg(t, rc, "the tenant's interactions could not be read");
    return rc;
}

/* Too little data to learn from or to hold out a test split: a clear error, no model row. */
static int train_check(struct train *t)
{
    int32_t eval_users = 0;
    t->positive_pairs = 0;
    for (int32_t u = 0; u < t->R.nrows; u++) {
        int32_t p = mf_csr_row_positives(&t->R, u);
        t->positive_pairs += p;
        eval_users += p >= 2;
    }
    if (t->positive_pairs < MIN_POSITIVE_PAIRS || eval_users < 1 || t->items.n < 2)
        return fail_msg(t, TS_E_VALIDATION,
                        "too few interactions to train: the data range holds %lld interactions "
                        "giving %lld positively weighted user-item pairs and %d users with 2 or "
                        "more of them (at least %d pairs, 2 items and 1 such user are needed)",
                        (long long)t->interactions, (long long)t->positive_pairs, eval_users,
                        MIN_POSITIVE_PAIRS);
    if ((int64_t)(t->users.n + (int64_t)t->items.n) * t->cfg.dim > MAX_FACTOR_FLOATS)
        return fail_msg(t, TS_E_VALIDATION,
                        "%d users and %d items at embedding_dim %d exceed the %ld MB factor "
                        "limit; lower embedding_dim or narrow data_range", t->users.n,
                        t->items.n, t->cfg.dim, MAX_FACTOR_FLOATS * 4 / (1 << 20));
    return 0;
}

/* ---------------------------------------------------------------- the job: writes */

static const char SQL_MODEL_BY_JOB[] =
    "SELECT model_version FROM rc_models WHERE tenant_id = ?1 AND job_id = ?2";
static const char SQL_MODEL_NEXT_SEQ[] =
    "SELECT COALESCE(MAX(seq), 0) + 1 FROM rc_models WHERE tenant_id = ?1 AND model_type = ?2";
static const char SQL_MODEL_INSERT[] =
    "INSERT INTO rc_models(tenant_id, model_version, model_type, seq, status, job_id, dim, "
    "hyperparameters, data_range, created_at) VALUES(?1, ?2, ?3, ?4, 'training', ?5, ?6, ?7, ?8, ?9)";
static const char SQL_MODEL_RESTART[] =
    "UPDATE rc_models SET status = 'training', is_current = 0, losses = '[]', metrics = '{}', "
    "created_at = ?3 WHERE tenant_id = ?1 AND model_version = ?2";
static const char SQL_VECTORS_DELETE[] =
    "DELETE FROM rc_model_vectors WHERE tenant_id = ?1 AND model_version = ?2";
/* Models left 'training' by a job that was failed without finishing (restarted too often):
 * never ready, so their vectors only take space. */
static const char SQL_STALE_MODELS[] =
    "SELECT m.model_version FROM rc_models m JOIN jobs j ON j.id = m.job_id "
    "WHERE m.tenant_id = ?1 AND m.status = 'training' AND j.status = 'failed'";
static const char SQL_MODEL_FAILED[] =
    "UPDATE rc_models SET status = 'failed', is_current = 0, completed_at = ?3 "
    "WHERE tenant_id = ?1 AND model_version = ?2";

static int exec_tv(struct db *db, const char *sql, const char *tenant, const char *version)
{
    sqlite3_stmt *q = db_stmt(db, sql);
    if (q == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, version, -1, SQLITE_STATIC);
    int s = sqlite3_step(q);
    sqlite3_reset(q);
    return s == SQLITE_DONE || s == SQLITE_ROW ? 0 : db_err(s);
}

static int stale_models_fail(struct db *db, const char *tenant)
{
    sqlite3_stmt *q = db_stmt(db, SQL_STALE_MODELS);
    if (q == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
    char stale[16][64];
    int n = 0, rc = 0;
    while (n < 16 && sqlite3_step(q) == SQLITE_ROW)
        snprintf(stale[n++], sizeof stale[0], "%s", col_text(q, 0));
    sqlite3_reset(q);
    for (int i = 0; i < n && rc == 0; i++) {
        rc = exec_tv(db, SQL_VECTORS_DELETE, tenant, stale[i]);
        sqlite3_stmt *f = rc == 0 ? db_stmt(db, SQL_MODEL_FAILED) : NULL;
        if (f) {
            sqlite3_bind_text(f, 1, tenant, -1, SQLITE_STATIC);
            sqlite3_bind_text(f, 2, stale[i], -1, SQLITE_STATIC);
            sqlite3_bind_int64(f, 3, clock_now_ms());
            rc = sqlite3_step(f) == SQLITE_DONE ? 0 : TS_E_INTERNAL;
            sqlite3_reset(f);
        }
    }
    return rc;
}

static void range_json(struct jw *w, const struct train_cfg *c)
{
    jw_obj_open(w);
    iso_or_null(w, "start_date", c->start_ms);
    iso_or_null(w, "end_date", c->end_ms);
    jw_obj_close(w);
}

/* Loop: the model row, new (next N for the tenant and type) or this job's own from an earlier
 * attempt (its vectors dropped: the run starts over). */
static int model_begin_apply(struct db *db, void *arg)
{
    struct train *t = arg;
    const char *tenant = t->run->tenant_id;
    int rc = stale_models_fail(db, tenant);
    if (rc < 0)
        return rc;
    sqlite3_stmt *q = db_stmt(db, SQL_MODEL_BY_JOB);
    sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, t->run->id, -1, SQLITE_STATIC);
    bool again = sqlite3_step(q) == SQLITE_ROW;
    if (again)
        snprintf(t->version, sizeof t->version, "%s", col_text(q, 0));
    sqlite3_reset(q);
    if (again) {
        rc = exec_tv(db, SQL_VECTORS_DELETE, tenant, t->version);
        q = rc == 0 ? db_stmt(db, SQL_MODEL_RESTART) : NULL;
        if (q == NULL)
            return rc < 0 ? rc : TS_E_INTERNAL;
        sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, t->version, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 3, clock_now_ms());
        int s = sqlite3_step(q);
        sqlite3_reset(q);
        return s == SQLITE_DONE ? 0 : db_err(s);
    }
    q = db_stmt(db, SQL_MODEL_NEXT_SEQ);
    sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, t->cfg.def->type, -1, SQLITE_STATIC);
    int64_t seq = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 1;
    sqlite3_reset(q);
    snprintf(t->version, sizeof t->version, "%s-%lld", t->cfg.def->prefix, (long long)seq);
    struct buf hp, dr;
    buf_init(&hp, 4096);
    buf_init(&dr, 256);
    struct jw w;
    jw_init(&w, &hp);
    jw_obj_open(&w);
    cfg_json(&w, &t->cfg);
    jw_obj_close(&w);
    jw_init(&w, &dr);
    range_json(&w, &t->cfg);
    q = db_stmt(db, SQL_MODEL_INSERT);
    sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, t->version, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, t->cfg.def->type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, seq);
    sqlite3_bind_text(q, 5, t->run->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 6, t->cfg.dim);
    sqlite3_bind_text(q, 7, buf_cstr(&hp), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 8, buf_cstr(&dr), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 9, clock_now_ms());
    int s = sqlite3_step(q);
    sqlite3_reset(q);
    buf_release(&hp);
    buf_release(&dr);
    return s == SQLITE_DONE ? 0 : db_err(s);
}

static const char SQL_LOSSES[] =
    "UPDATE rc_models SET losses = ?3 WHERE tenant_id = ?1 AND model_version = ?2";

static int losses_apply(struct db *db, void *arg)
{
    struct train *t = arg;
    sqlite3_stmt *q = db_stmt(db, SQL_LOSSES);
    sqlite3_bind_text(q, 1, t->run->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, t->version, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, t->losses.data, (int)t->losses.len, SQLITE_STATIC);
    int s = sqlite3_step(q);
    sqlite3_reset(q);
    return s == SQLITE_DONE ? 0 : db_err(s);
}

/* Worker, inside training: the epoch's loss joins the stored array; progress moves. */
static void on_epoch_store(void *arg, int epoch, double loss)
{
    struct train *t = arg;
    if (t->losses.len > 0)
        t->losses.len--; /* drop "]" */
    else
        buf_putc(&t->losses, '[');
    buf_printf(&t->losses, "%s%.9g]", t->nlosses ? "," : "", isfinite(loss) ? loss : 0.0);
    t->nlosses++;
    if (job_write(t->run, losses_apply, t) == TS_E_UNAVAILABLE)
        t->stopping = true;
    job_progress(t->run, t->prog_lo + (t->prog_hi - t->prog_lo) * epoch / t->cfg.epochs);
}

static void on_epoch_quiet(void *arg, int epoch, double loss)
{
    struct train *t = arg;
    (void)loss;
    job_progress(t->run, t->prog_lo + (t->prog_hi - t->prog_lo) * epoch / t->cfg.epochs);
}

struct vec_chunk {
    struct train *t;
    const char *kind;
    const char *const *ids;
    const float *M;
    int32_t from, n;
};

static const char SQL_VECTOR_PUT[] =
    "INSERT OR REPLACE INTO rc_model_vectors(tenant_id, model_version, kind, entity_id, vector) "
    "VALUES(?1, ?2, ?3, ?4, ?5)";

static int vectors_apply(struct db *db, void *arg)
{
    struct vec_chunk *c = arg;
    int d = c->t->cfg.dim;
    sqlite3_stmt *q = db_stmt(db, SQL_VECTOR_PUT);
    if (q == NULL)
        return TS_E_INTERNAL;
    for (int32_t i = c->from; i < c->from + c->n; i++) {
        sqlite3_bind_text(q, 1, c->t->run->tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, c->t->version, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 3, c->kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 4, c->ids[i], -1, SQLITE_STATIC);
        sqlite3_bind_blob(q, 5, c->M + (size_t)i * d, d * (int)sizeof(float), SQLITE_STATIC);
        int s = sqlite3_step(q);
        sqlite3_reset(q);
        if (s != SQLITE_DONE)
            return db_err(s);
    }
    return 0;
}

/* Worker: one side's vectors in chunks (each a short loop transaction). */
static int vectors_store(struct train *t, const char *kind, const struct strmap *ids,
                         const float *M, double p0, double p1)
{
    for (int32_t at = 0; at < ids->n; at += VEC_CHUNK) {
        if (atomic_load(t->run->cancel))
            return -ECANCELED;
        struct vec_chunk c = {t, kind, ids->keys, M, at,
                              ids->n - at < VEC_CHUNK ? ids->n - at : VEC_CHUNK};
        int rc = job_write(t->run, vectors_apply, &c);
        if (rc < 0)
            return rc;
        job_progress(t->run, p0 + (p1 - p0) * (at + c.n) / ids->n);
    }
    return 0;
}

static const char SQL_CURRENT_CLEAR[] =
    "UPDATE rc_models SET is_current = 0 WHERE tenant_id = ?1 AND is_current = 1 "
    "AND model_version <> ?2";
static const char SQL_MODEL_READY[] =
    "UPDATE rc_models SET status = 'ready', is_current = 1, metrics = ?3, losses = ?4, users = ?5, "
    "items = ?6, interactions = ?7, completed_at = ?8 WHERE tenant_id = ?1 AND model_version = ?2";

struct finish {
    struct train *t;
    const char *metrics;
};

/* Loop, the last write: ready and current in one apply, then serving is told. */
static int model_ready_apply(struct db *db, void *arg)
{
    struct finish *f = arg;
    struct train *t = f->t;
    int rc = exec_tv(db, SQL_CURRENT_CLEAR, t->run->tenant_id, t->version);
    sqlite3_stmt *q = rc == 0 ? db_stmt(db, SQL_MODEL_READY) : NULL;
    if (q == NULL)
        return rc < 0 ? rc : TS_E_INTERNAL;
    sqlite3_bind_text(q, 1, t->run->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, t->version, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, f->metrics, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, t->losses.len ? t->losses.data : "[]",
                      t->losses.len ? (int)t->losses.len : 2, SQLITE_STATIC);
    sqlite3_bind_int(q, 5, t->users.n);
    sqlite3_bind_int(q, 6, t->items.n);
    sqlite3_bind_int64(q, 7, t->interactions);
    sqlite3_bind_int64(q, 8, clock_now_ms());
    int s = sqlite3_step(q);
    sqlite3_reset(q);
    if (s != SQLITE_DONE)
        return db_err(s);
    recs_serving_model_ready(t->run->tenant_id, t->version);
    return 0;
}

/* Loop: a run that failed after its row was made: failed, vectors gone. */
static int model_failed_apply(struct db *db, void *arg)
{
    struct train *t = arg;
    int rc = exec_tv(db, SQL_VECTORS_DELETE, t->run->tenant_id, t->version);
    sqlite3_stmt *q = rc == 0 ? db_stmt(db, SQL_MODEL_FAILED) : NULL;
    if (q == NULL)
        return rc < 0 ? rc : TS_E_INTERNAL;
    sqlite3_bind_text(q, 1, t->run->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, t->version, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, clock_now_ms());
    int s = sqlite3_step(q);
    sqlite3_reset(q);
    return s == SQLITE_DONE ? 0 : db_err(s);
}

/* ---------------------------------------------------------------- the job: training */

static void opts_for(const struct train *t, struct mf_opts *o, mf_epoch_fn fn, void *arg)
{
    const struct train_cfg *c = &t->cfg;
    *o = (struct mf_opts){.dim = c->dim, .epochs = c->epochs, .learning_rate = c->lr,
                          .reg = c->reg, .alpha = c->alpha, .seed = (uint64_t)c->seed,
                          .threads = 1, .cg_steps = c->cg_steps, .layers = c->layers,
                          .solver = c->cholesky ? MF_SOLVER_CHOLESKY : MF_SOLVER_CG,
                          .batch = c->def->prefix[0] == 't' ? TT_BATCH : GCN_BATCH,
                          .cancel = t->run->cancel, .on_epoch = fn, .arg = arg};
    if (c->def->prefix[0] == 'm' && c->reg <= 0)
        o->reg = 1e-6;
}

static int fit(const struct train *t, const struct mf_csr *R, const struct mf_opts *o, float *U,
               float *V)
{
    switch (t->cfg.def->prefix[0]) {
    case 'm':
        return als_train(R, o, U, V);
    case 't':
        return two_tower_train(R, t->features, CONTENT_DIM, o, U, V);
    default:
        return lightgcn_train(R, o, U, V);
    }
}

static int fit_error(struct train *t, int rc)
{
    if (rc == -ECANCELED || rc == TS_E_UNAVAILABLE)
        return -ECANCELED;
    if (rc == -ENOMEM)
        return fail_msg(t, rc, "out of memory training %d users x %d items at dimension %d",
                        t->users.n, t->items.n, t->cfg.dim);
    return fail_msg(t, rc < 0 ? rc : TS_E_INTERNAL, "training failed (%d)", rc);
}

/* The served model: all the range's data, live losses; its vectors stored. */
static int train_final(struct train *t)
{
    size_t d = (size_t)t->cfg.dim;
    float *U = malloc((size_t)t->users.n * d * sizeof *U),
          *V = malloc((size_t)t->items.n * d * sizeof *V);
    if (!U || !V) {
        free(U);
        free(V);
        return fit_error(t, -ENOMEM);
    }
    struct mf_opts o;
    opts_for(t, &o, on_epoch_store, t);
    t->prog_lo = 0.05;
    t->prog_hi = 0.50;
    uint64_t t0 = clock_mono_ns();
    int rc = fit(t, &t->R, &o, U, V);
    t->fit_s = (double)(clock_mono_ns() - t0) / 1e9;
    if (rc == 0 && t->stopping)
        rc = -ECANCELED;
    if (rc == 0)
        rc = vectors_store(t, "item", &t->items, V, 0.50, 0.55);
    if (rc == 0)
        rc = vectors_store(t, "user", &t->users, U, 0.55, 0.60);
    free(U);
    free(V);
    return rc < 0 ? fit_error(t, rc) : 0;
}

/* The same configuration fitted without each user's most recent 20% of positive items,
 * ranked over all items. */
static int train_evaluate(struct train *t)
{
    struct mf_csr tr = {0}, te = {0};
    size_t d = (size_t)t->cfg.dim;
    float *U = malloc((size_t)t->users.n * d * sizeof *U),
          *V = malloc((size_t)t->items.n * d * sizeof *V);
    int rc = U && V ? mf_split_holdout(&t->R, t->when, HOLDOUT_FRAC, 0, &tr, &te)
                    : -ENOMEM;
    struct mf_opts o;
    opts_for(t, &o, on_epoch_quiet, t);
    t->prog_lo = 0.60;
    t->prog_hi = 0.95;
    if (rc == 0)
        rc = fit(t, &tr, &o, U, V);
    uint64_t t0 = clock_mono_ns();
    if (rc == 0)
        rc = mf_eval_full(U, V, (int)d, &tr, &te, EVAL_K, EVAL_MAX_USERS, (uint64_t)t->cfg.seed,
                          &t->ev);
    t->eval_s = (double)(clock_mono_ns() - t0) / 1e9;
    mf_csr_free(&tr);
    mf_csr_free(&te);
    free(U);
    free(V);
    return rc < 0 ? fit_error(t, rc) : 0;
}

static void metrics_json(struct train *t, struct buf *b)
{
    struct jw w;
    jw_init(&w, b);
    jw_obj_open(&w);
    jw_kdouble(&w, "recall_at_10", t->ev.recall);
    jw_kdouble(&w, "ndcg_at_10", t->ev.ndcg);
    jw_kdouble(&w, "popularity_recall_at_10", t->ev.pop_recall);
    jw_kdouble(&w, "popularity_ndcg_at_10", t->ev.pop_ndcg);
    jw_kint(&w, "evaluated_users", t->ev.users);
    jw_kdouble(&w, "holdout_fraction", HOLDOUT_FRAC);
    jw_kstr(&w, "ranking", "full");
    jw_kint(&w, "users", t->users.n);
    jw_kint(&w, "items", t->items.n);
    jw_kint(&w, "interactions", t->interactions);
    jw_kint(&w, "positive_pairs", t->positive_pairs);
    jw_kdouble(&w, "train_seconds", t->fit_s);
    jw_kdouble(&w, "eval_seconds", t->eval_s);
    jw_obj_close(&w);
    jw_finish(&w);
}

static void train_free(struct train *t)
{
    mf_csr_free(&t->R);
    free(t->when);
    strmap_free(&t->users);
    strmap_free(&t->items);
    free(t->features);
    arena_free(t->strings);
    buf_release(&t->losses);
    json_decref(t->params);
}

static int train_stop(struct job_run *r)
{
    r->next_checkpoint.len = 0;
    buf_puts(&r->next_checkpoint, "{\"restart\":true}"); /* a resumed run trains anew */
    return -ECANCELED;
}

int recs_train_job(struct job_run *r)
{
    struct train t = {.run = r, .strings = arena_new(1 << 20)};
    buf_init(&t.losses, 64 * 1024);
    int rc = params_load(&t);
    if (rc == 0)
        rc = train_load(&t);
    job_progress(r, 0.05);
    if (rc == 0)
        rc = train_check(&t);
    if (rc == 0) {
        rc = job_write(r, model_begin_apply, &t);
        t.begun = rc == 0;
        if (rc < 0 && rc != TS_E_UNAVAILABLE)
            fail_msg(&t, rc, "the model row could not be written");
    }
    if (rc == 0)
        rc = train_final(&t);
    if (rc == 0)
        rc = train_evaluate(&t);
    if (rc == 0) {
        struct buf m;
        buf_init(&m, 8192);
        metrics_json(&t, &m);
        struct finish f = {&t, buf_cstr(&m)};
        rc = job_write(r, model_ready_apply, &f);
        if (rc == 0)
            buf_printf(&r->result, "{\"model_version\":\"%s\",\"metrics\":%s}", t.version,
                       buf_cstr(&m));
        else if (rc != TS_E_UNAVAILABLE)
            fail_msg(&t, rc, "the finished model could not be marked ready");
        buf_release(&m);
    }
    if (rc == -ECANCELED || rc == TS_E_UNAVAILABLE) {
        rc = train_stop(r);
    } else if (rc < 0 && t.begun) {
        if (job_write(r, model_failed_apply, &t) == TS_E_UNAVAILABLE)
            rc = train_stop(r);
    }
    if (rc < 0 && rc != -ECANCELED && !r->error[0])
        fail_msg(&t, rc, "training failed");
    if (rc < 0 && rc != -ECANCELED)
        log_msg(LOG_WARN, "recs.train %s (%s): %s", r->id, r->tenant_id, r->error);
    train_free(&t);
    return rc;
}

/* ---------------------------------------------------------------- routes */

static const struct route recs_ml_routes[] = {
    {"POST", "/internal/ml/training/trigger", trigger, "recs.internal", "recs", RUN_LOOP, 0,
     RF_JSON_BODY, NULL},
    {"GET", "/internal/ml/training/{job_id}", job_get, "recs.internal", "recs", RUN_LOOP, 0, 0,
     NULL},
    {"GET", "/internal/ml/models", models_list, "recs.internal", "recs", RUN_LOOP, 0, 0, NULL},
};

const struct route_table recs_ml_table = {SURF_RECS, recs_ml_routes,
                                          sizeof(recs_ml_routes) / sizeof(recs_ml_routes[0])};
