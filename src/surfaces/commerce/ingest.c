/* commerce.md: ingestion: batch (JSON, CSV, NDJSON, XML), batch status, stream, sources (section 1).
 *
 * A batch goes through three steps. The request's pool step parses the body and checks the
 * request (every violation in one 400); the loop's done step registers the source, stores the
 * batch row and its records (cm_batch_payloads) and submits a commerce.ingest job, answering
 * 201 at once. The job checks each record on a worker and hands chunks of checked records to the loop
 * (job_write), which upserts the good ones, keeps the rejects and advances the batch's counters
 * in the same transaction: processed_records is where a resumed job goes on. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/app.h"
#include "api/handler.h"
#include "api/observe.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/log.h"
#include "engines/records_in.h"
#include "jobs/jobs.h"
#include "store/db.h"
#include "surfaces/commerce/common.h"
#include "surfaces/commerce/records.h"
#include "surfaces/kinds.h"

#define BATCH_MAX 10000          /* records per batch (contract 1.1) */
/* Records per job_write: one savepoint on the loop. Each chunk's savepoint copies, and the
 * tick's commit writes, every page its rows touch, and orders land on random pages of the
 * per-customer index and aggregate: 5,000 orders a chunk took a quarter to a third less
 * server CPU per order than 1,000 (README "Throughput"), for a longer hold of the loop
 * (about 0.1 s). */
#define CHUNK 5000
#define ERRORS_LISTED 100        /* rejects listed in a batch status */
#define CONFIG_MAX (16 * 1024)   /* a source's configuration, as JSON text */
#define DEFAULT_RATE 50000.0     /* records/s assumed until a batch has been measured */
/* Bodies up to this size are parsed and checked on the loop (well under a millisecond), so a
 * small batch is not queued behind jobs that hold the pool's workers; larger ones go to the
 * pool, so a multi-megabyte body never holds up the loop. */
#define LOOP_PARSE_MAX (16 * 1024)

/* The server, for the chunk writes a job hands to the loop (notifications need it). Set when
 * serving starts, before any job's write can be applied. */
static struct app *ingest_app;

/* Records per second of recent batches, from started_at to completed_at (loop thread only). */
static double measured_rate = DEFAULT_RATE;

/* ---- parsed records handed from the request to its job ----
 *
 * The request's pool step has the records parsed already; the job takes them from here rather
 * than parsing the stored payload again. The payload stays the durable copy: a job resumed after
 * a restart, or one whose records were not handed over, parses it. */

#define HANDOFF_MAX 32
static struct {
    char batch_id[UUID_STR_LEN];
    json_t *records;
} handoff[HANDOFF_MAX];
static pthread_mutex_t handoff_mu = PTHREAD_MUTEX_INITIALIZER;

static void handoff_put(const char *batch_id, json_t *records)
{
    pthread_mutex_lock(&handoff_mu);
    for (int i = 0; i < HANDOFF_MAX; i++) {
        if (handoff[i].records == NULL) {
            snprintf(handoff[i].batch_id, UUID_STR_LEN, "%s", batch_id);
            handoff[i].records = json_incref(records);
            break;
        }
    }
    pthread_mutex_unlock(&handoff_mu);
}

/* The records of batch_id (the caller owns the reference), or NULL. */
static json_t *handoff_take(const char *batch_id)
{
    json_t *out = NULL;
    pthread_mutex_lock(&handoff_mu);
    for (int i = 0; i < HANDOFF_MAX && out == NULL; i++) {
        if (handoff[i].records && strcmp(handoff[i].batch_id, batch_id) == 0) {
            out = handoff[i].records;
            handoff[i].records = NULL;
        }
    }
    pthread_mutex_unlock(&handoff_mu);
    return out;
}

void cm_ingest_start(struct app *app)
{
    ingest_app = app;
    /* the writer's temp_store and cache size, which chunks need, are set by db_open */
}

void cm_ingest_stop(void)
{
    pthread_mutex_lock(&handoff_mu);
    for (int i = 0; i < HANDOFF_MAX; i++) {
        json_decref(handoff[i].records);
        handoff[i].records = NULL;
    }
    pthread_mutex_unlock(&handoff_mu);
}

/* ---- request fields ---- */

static const char TYPE_LIST[] = "transactions, products, customers, inventory, orders, events";

static bool source_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 50)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return false;
    }
    return true;
}

/* source_id and data_type, as JSON values (v) or query text (s); every violation is added. */
static const char *check_source_id(struct hctx *h, const json_t *v, const char *s)
{
    if (v)
        s = json_string_value(v);
    if ((v == NULL || json_is_null(v)) && s == NULL) {
        field_error_add(h, "source_id", "Source ID is required", NULL);
        return NULL;
    }
    if (s == NULL || !source_id_ok(s) || (v && strlen(s) != json_string_length(v))) {
        json_t *rej = v ? NULL : json_string(s);
        field_error_add(h, "source_id",
                        "Source ID must be 3-50 characters: letters, digits and hyphens",
                        v ? v : rej);
        json_decref(rej);
        return NULL;
    }
    return s;
}

static int check_data_type(struct hctx *h, const json_t *v, const char *s)
{
    if (v)
        s = json_string_value(v);
    if ((v == NULL || json_is_null(v)) && s == NULL) {
        field_error_add(h, "data_type", "Data type is required", NULL);
        return -1;
    }
    int t = cm_type_of(s);
    if (t < 0) {
        json_t *rej = v ? NULL : json_string(s);
        field_error_add(h, "data_type",
                        arena_printf(h->arena, "Data type must be one of: %s", TYPE_LIST),
                        v ? v : rej);
        json_decref(rej);
    }
    return t;
}

static const char *const FORMATS[] = {"json", "csv", "xml", "parquet", NULL};

static const char *check_format(struct hctx *h, const json_t *v, const char *s, bool required)
{
    if (v)
        s = json_string_value(v);
    if ((v == NULL || json_is_null(v)) && s == NULL) {
        if (required)
            field_error_add(h, "format", "Format is required", NULL);
        return NULL;
    }
    for (int i = 0; s && FORMATS[i]; i++)
        if (strcmp(s, FORMATS[i]) == 0)
            return FORMATS[i];
    json_t *rej = v ? NULL : json_string(s);
    field_error_add(h, "format", "Format must be one of: json, csv, xml, parquet", v ? v : rej);
    json_decref(rej);
    return NULL;
}

/* metadata (IngestionMetadata): an object; its known members typed; kept whole as sent. */
static void check_metadata(struct hctx *h, const json_t *m, const char **ret_schema_version)
{
    *ret_schema_version = NULL;
    if (m == NULL || json_is_null(m))
        return;
    if (!json_is_object(m)) {
        field_error_add(h, "metadata", "Metadata must be an object", m);
        return;
    }
    static const char *const text[] = {"source_system", "schema_version", "compression"};
    for (int i = 0; i < 3; i++) {
        const json_t *v = json_object_get(m, text[i]);
        if (v == NULL || json_is_null(v))
            continue;
        if (!json_is_string(v) || json_string_length(v) > 200) {
            field_error_add(h, arena_printf(h->arena, "metadata.%s", text[i]),
                            arena_printf(h->arena, "metadata.%s must be a string of at most 200 "
                                                   "characters", text[i]), v);
            continue;
        }
        if (i == 1)
            *ret_schema_version = json_string_value(v);
    }
    const json_t *ts = json_object_get(m, "extraction_timestamp");
    int64_t ms;
    if (ts && !json_is_null(ts) &&
        (!json_is_string(ts) || clock_parse_iso8601(json_string_value(ts), &ms) < 0))
        field_error_add(h, "metadata.extraction_timestamp",
                        "metadata.extraction_timestamp must be an ISO 8601 date-time", ts);
}

/* ---- POST /api/v1/ingest/batch ---- */

struct batch {
    /* from the handler (loop) */
    bool json;                   /* application/json body */
    enum rec_format fmt;         /* otherwise */
    struct cm_query q;
    /* from the pool step */
    int err;
    const char *source_id;
    int type;
    const char *format;          /* stored in cm_batches.format */
    const char *schema_version;
    char *metadata;              /* JSON text (malloc) */
    json_t *records;             /* owned reference */
    char *payload;               /* JSON text (malloc) of the records; NULL: the body itself */
};

static void batch_release(void *arg)
{
    struct batch *b = arg;
    json_decref(b->records);
    free(b->metadata);
    free(b->payload);
}

static void check_records(struct hctx *h, struct batch *b, const json_t *data)
{
    if (data == NULL || json_is_null(data)) {
        field_error_add(h, "data", "Data is required", NULL);
        return;
    }
    if (!json_is_array(data)) {
        field_error_add(h, "data", "Data must be an array of records", data);
        return;
    }
    size_t n = json_array_size(data);
    if (n == 0)
        field_error_add(h, "data", "Data array cannot be empty", data);
    else if (n > BATCH_MAX)
        field_error_add(h, "data", "Data array cannot hold more than 10,000 records", NULL);
    for (size_t i = 0; i < n && n <= BATCH_MAX; i++)
        if (!json_is_object(json_array_get(data, i)))
            field_error_add(h, arena_printf(h->arena, "data[%zu]", i),
                            "Each record must be a JSON object", json_array_get(data, i));
    if (h->nferrs == 0)
        b->records = json_incref((json_t *)data);
}

/* Pool: a JSON BatchIngestionRequest. */
static void batch_parse_json(struct hctx *h, struct batch *b)
{
    int r = dispatch_validate_body(h, RF_JSON_BODY);
    if (r < 0) {
        b->err = r;
        return;
    }
    const json_t *body = h->body;
    b->source_id = check_source_id(h, json_object_get(body, "source_id"), NULL);
    b->type = check_data_type(h, json_object_get(body, "data_type"), NULL);
    b->format = check_format(h, json_object_get(body, "format"), NULL, true);
    const json_t *meta = json_object_get(body, "metadata");
    check_metadata(h, meta, &b->schema_version);
    check_records(h, b, json_object_get(body, "data"));
    if (h->nferrs == 0 && json_is_object(meta))
        b->metadata = json_dumps(meta, JSON_COMPACT);
}

static const char *const FMT_NAMES[] = {[REC_CSV] = "csv", [REC_NDJSON] = "ndjson",
                                        [REC_XML] = "xml"};
static const char *const FMT_LABELS[] = {[REC_CSV] = "CSV", [REC_NDJSON] = "NDJSON",
                                         [REC_XML] = "XML"};

/* metadata from the query: metadata[...] / metadata.x / metadata={json}, and schema_version. */
static json_t *query_metadata(struct hctx *h, const struct cm_query *q)
{
    static const char *const keys[] = {"source_system", "extraction_timestamp", "schema_version",
                                       "compression"};
    json_t *m = json_object();
    for (int i = 0; i < 4; i++) {
        const char *v = cm_param(h, q, "metadata", keys[i]);
        if (v == NULL && i == 2)
            v = cm_param(h, q, NULL, keys[i]);
        if (v)
            json_object_set_new(m, keys[i], json_string(v));
    }
    return m;
}

/* Pool: a CSV, NDJSON or XML body, the request's fields in the query string. */
static void batch_parse_records(struct hctx *h, struct batch *b)
{
    const struct cm_query *q = &b->q;
    b->source_id = check_source_id(h, NULL, cm_param(h, q, NULL, "source_id"));
    b->type = check_data_type(h, NULL, cm_param(h, q, NULL, "data_type"));
    const char *given = check_format(h, NULL, cm_param(h, q, NULL, "format"), false);
    const char *implied = b->fmt == REC_XML ? "xml" : b->fmt == REC_CSV ? "csv" : "json";
    if (given && strcmp(given, implied) != 0)
        field_error_add(h, "format",
                        arena_printf(h->arena, "format %s does not match the %s body (Content-Type)",
                                     given, FMT_LABELS[b->fmt]), NULL);
    json_t *meta = query_metadata(h, q);
    check_metadata(h, meta, &b->schema_version);
    bool no_header = false;
    bool opts_ok = cm_param_bool(h, q, "no_header", false, &no_header) == 0;
    if (!opts_ok)
        field_error_add(h, "no_header", "no_header must be true or false", NULL);
    if (opts_ok && b->type >= 0) { /* read the body too, so its faults join the others */
        struct rec_in_opts o = {cm_type_names[b->type], cm_param(h, q, NULL, "columns"), no_header,
                                cm_param(h, q, NULL, "date_format"), BATCH_MAX};
        char err[512];
        const char *body = h->req->body.data ? h->req->body.data : "";
        json_t *recs = records_parse(b->fmt, body, h->req->body.len, &o, err, sizeof(err));
        if (recs == NULL && strncmp(err, "more than", 9) == 0)
            field_error_add(h, "data", "Data array cannot hold more than 10,000 records", NULL);
        else if (recs == NULL)
            field_error_add(h, "body",
                            arena_printf(h->arena, "the %s body is malformed: %s",
                                         FMT_LABELS[b->fmt], err), NULL);
        else if (json_array_size(recs) == 0)
            field_error_add(h, "data", "Data array cannot be empty", NULL);
        if (h->nferrs == 0)
            b->records = json_incref(recs);
        json_decref(recs);
    }
    b->format = FMT_NAMES[b->fmt];
    if (b->schema_version) /* it points into meta, released below */
        b->schema_version = arena_strdup(h->arena, b->schema_version);
    if (h->nferrs == 0) {
        b->metadata = json_dumps(meta, JSON_COMPACT);
        b->payload = json_dumps(b->records, JSON_COMPACT);
        if (b->payload == NULL)
            b->err = TS_E_INTERNAL;
    }
    json_decref(meta);
}

static void batch_work(struct hctx *h)
{
    struct batch *b = h->state;
    if (b->json)
        batch_parse_json(h, b);
    else
        batch_parse_records(h, b);
    if (b->err < 0)
        return;
    if (h->nferrs > 0) {
        b->err = TS_E_VALIDATION;
        return;
    }
    if (strcmp(b->format, "parquet") == 0)
        b->err = fail(h, TS_E_UNPROCESSABLE, "format",
                      "Parquet is not supported yet: send the records as JSON, or the body as "
                      "CSV, NDJSON or XML");
}

/* ---- sources ---- */

static const char SQL_SOURCE_STATUS[] =
    "SELECT status FROM cm_sources WHERE tenant_id = ? AND source_id = ?";
static const char SQL_SOURCE_REGISTER[] =
    "INSERT INTO cm_sources(tenant_id, source_id, name, type, status, configuration, created_at, "
    "updated_at) VALUES(?1, ?2, ?2, ?3, 'active', '{}', ?4, ?4)";

/* Loop: the source of a request, registered with type on first use. 0, or TS_E_UNPROCESSABLE
 * naming source_id when the source is inactive (it takes no new data until reactivated). */
static int source_use(struct hctx *h, const char *source_id, const char *type)
{
    struct db *db = h->app->db;
    sqlite3_stmt *st = db_stmt(db, SQL_SOURCE_STATUS);
    sqlite3_bind_text(st, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, source_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (strcmp(col_text(st, 0), "inactive") == 0)
            return fail(h, TS_E_UNPROCESSABLE, "source_id",
                        arena_printf(h->arena, "source %s is inactive and takes no new data; "
                                               "set its status to active first", source_id));
        return 0;
    }
    if (rc != SQLITE_DONE)
        return db_err(rc);
    int r = db_write_begin(db);
    if (r < 0)
        return r;
    st = db_stmt(db, SQL_SOURCE_REGISTER);
    sqlite3_bind_text(st, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, source_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, clock_now_ms());
    rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

/* ---- the batch row and its job ---- */

static const char SQL_BATCH_INSERT[] =
    "INSERT INTO cm_batches(tenant_id, batch_id, source_id, data_type, format, metadata, "
    "schema_version, records_received, created_at) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)";
static const char SQL_PAYLOAD_INSERT[] =
    "INSERT INTO cm_batch_payloads(tenant_id, batch_id, payload) VALUES(?, ?, ?)";

/* "PT0.12S", "PT2M5.5S": records at the measured rate, as an ISO 8601 duration (seconds to
 * the millisecond, at least 1 ms). */
static const char *estimate(struct hctx *h, size_t records)
{
    int64_t ms = (int64_t)llround((double)records * 1000.0 / measured_rate);
    if (ms < 1)
        ms = 1;
    char sec[32];
    int n = snprintf(sec, sizeof(sec), "%lld.%03lld", (long long)(ms / 1000 % 60),
                     (long long)(ms % 1000));
    while (n > 0 && sec[n - 1] == '0')
        sec[--n] = 0;
    if (n > 0 && sec[n - 1] == '.')
        sec[--n] = 0;
    if (ms < 60000)
        return arena_printf(h->arena, "PT%sS", sec);
    return arena_printf(h->arena, "PT%lldM%sS", (long long)(ms / 60000), sec);
}

static int batch_store(struct hctx *h, struct batch *b, const char *batch_id, int64_t now)
{
    sqlite3_stmt *st = db_stmt(h->app->db, SQL_BATCH_INSERT);
    sqlite3_bind_text(st, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, batch_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, b->source_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, cm_type_names[b->type], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, b->format, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, b->metadata ? b->metadata : "{}", -1, SQLITE_STATIC);
    if (b->schema_version)
        sqlite3_bind_text(st, 7, b->schema_version, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, (int64_t)json_array_size(b->records));
    sqlite3_bind_int64(st, 9, now);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_err(rc);
    st = db_stmt(h->app->db, SQL_PAYLOAD_INSERT);
    sqlite3_bind_text(st, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, batch_id, -1, SQLITE_STATIC);
    if (b->payload)
        sqlite3_bind_text(st, 3, b->payload, -1, SQLITE_STATIC);
    else /* the JSON body as sent: the job takes its "data" */
        sqlite3_bind_text(st, 3, h->req->body.data, (int)h->req->body.len, SQLITE_STATIC);
    rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

static int batch_done(struct hctx *h)
{
    struct batch *b = h->state;
    if (b->err < 0)
        return b->err;
    int r = source_use(h, b->source_id, b->json ? "api" : "file");
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    char batch_id[UUID_STR_LEN], job_id[UUID_STR_LEN];
    id_uuid7(batch_id);
    int64_t now = clock_now_ms();
    if ((r = batch_store(h, b, batch_id, now)) < 0)
        return r;
    char params[96];
    snprintf(params, sizeof(params), "{\"batch_id\":\"%s\"}", batch_id);
    handoff_put(batch_id, b->records);
    r = jobs_submit(h->app->jobs, h->tenant_id, "commerce.ingest", params, job_id);
    if (r < 0) {
        json_decref(handoff_take(batch_id));
        if (r == TS_E_RATE_LIMITED)
            h->err_message = jobs_refusal(h->app->jobs,
                                          "too many batches are queued or processing for this "
                                          "tenant; retry when one has completed");
        return r == -EINVAL ? TS_E_INTERNAL : r;
    }
    h->audit_target = arena_strdup(h->arena, batch_id);
    h->status = 201;
    size_t n = json_array_size(b->records);
    struct jw w;
    cm_ok_begin(h, &w);
    jw_obj_open(&w);
    jw_kstr(&w, "status", "accepted");
    jw_kstr(&w, "batch_id", batch_id);
    jw_kint(&w, "records_received", (int64_t)n);
    jw_kstr(&w, "validation_status", "pending");
    jw_kstr(&w, "estimated_processing_time", estimate(h, n));
    jw_kiso(&w, "created_at", now);
    jw_kstr(&w, "source_id", b->source_id);
    jw_kstr(&w, "data_type", cm_type_names[b->type]);
    jw_kstr(&w, "format", b->format);
    jw_obj_close(&w);
    return cm_ok_end(h, &w);
}

/* The media type of the body, without parameters. */
static bool media_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    return strncasecmp(ct, type, n) == 0 && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

static int ingest_batch(struct hctx *h)
{
    const char *ct = http_header_get(h->req, "Content-Type");
    struct batch *b = arena_calloc(h->arena, sizeof(*b));
    b->type = -1;
    arena_defer(h->arena, batch_release, b);
    if (ct && media_is(ct, "application/json"))
        b->json = true;
    else if (ct && media_is(ct, "text/csv"))
        b->fmt = REC_CSV;
    else if (ct && (media_is(ct, "application/x-ndjson") || media_is(ct, "application/ndjson")))
        b->fmt = REC_NDJSON;
    else if (ct && (media_is(ct, "application/xml") || media_is(ct, "text/xml")))
        b->fmt = REC_XML;
    else
        return fail(h, TS_E_UNSUPPORTED_MEDIA, "Content-Type",
                    "Content-Type must be application/json, text/csv, application/x-ndjson, "
                    "application/xml or text/xml");
    if (!b->json) {
        int r = cm_query_parse(h, &b->q);
        if (r < 0)
            return r;
    }
    h->state = b;
    if (h->req->body.len <= LOOP_PARSE_MAX) {
        batch_work(h);
        return batch_done(h);
    }
    return api_defer_to_pool(h, batch_work, batch_done);
}

/* ---- the commerce.ingest job ---- */

/* What the job knows of its batch (filled by the loop in batch_begin). */
struct job_batch {
    const char *tenant_id;
    const char *batch_id;
    const char *job_id;
    bool found, done;
    int type;
    char source_id[64];
    int64_t processed, received;
};

static const char SQL_BATCH_BEGIN[] =
    "SELECT status, data_type, source_id, processed_records, records_received FROM cm_batches "
    "WHERE tenant_id = ? AND batch_id = ?";
static const char SQL_BATCH_STARTED[] =
    "UPDATE cm_batches SET started_at = coalesce(started_at, ?) WHERE tenant_id = ? AND batch_id = ?";

/* Loop: where the batch stands; marks it started. Its row was inserted by the request, whose
 * tick has committed by the time this write's commit returns to the job. */
static int batch_begin(struct db *db, void *arg)
{
    struct job_batch *jb = arg;
    sqlite3_stmt *st = db_stmt(db, SQL_BATCH_BEGIN);
    sqlite3_bind_text(st, 1, jb->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, jb->batch_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW)
        return 0; /* the request that made it failed after submitting: nothing to do */
    jb->found = true;
    jb->done = strcmp(col_text(st, 0), "processing") != 0;
    jb->type = cm_type_of(col_text(st, 1));
    snprintf(jb->source_id, sizeof(jb->source_id), "%s", col_text(st, 2));
    jb->processed = sqlite3_column_int64(st, 3);
    jb->received = sqlite3_column_int64(st, 4);
    st = db_stmt(db, SQL_BATCH_STARTED);
    sqlite3_bind_int64(st, 1, clock_now_ms());
    sqlite3_bind_text(st, 2, jb->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, jb->batch_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

/* One chunk of checked records for the loop to store. */
struct chunk {
    const struct job_batch *jb;
    struct cm_chunk c;
    int64_t start;               /* index of its first record: must equal processed_records */
};

static const char SQL_BATCH_AT[] =
    "SELECT processed_records FROM cm_batches WHERE tenant_id = ? AND batch_id = ? "
    "AND status = 'processing'";
static const char SQL_BATCH_ADVANCE[] =
    "UPDATE cm_batches SET processed_records = processed_records + ?, stored_records = "
    "stored_records + ?, failed_records = failed_records + ?, duplicate_records = "
    "duplicate_records + ? WHERE tenant_id = ? AND batch_id = ?";

/* Loop: stores a chunk and advances the batch in the same transaction. A chunk that does not
 * start where the batch stands is refused (nothing is stored twice). */
static int chunk_apply(struct db *db, void *arg)
{
    struct chunk *c = arg;
    const struct job_batch *jb = c->jb;
    sqlite3_stmt *st = db_stmt(db, SQL_BATCH_AT);
    sqlite3_bind_text(st, 1, jb->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, jb->batch_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_int64(st, 0) != c->start)
        return TS_E_CONFLICT;
    struct cm_origin o = {jb->tenant_id, jb->source_id, jb->batch_id, clock_now_ms()};
    int64_t dups = 0;
    int r = cm_chunk_store(db, &o, &c->c, &dups);
    if (r < 0)
        return r;
    if ((r = job_attempts_reset(db, jb->job_id)) < 0) /* a chunk stored is progress */
        return r;
    st = db_stmt(db, SQL_BATCH_ADVANCE);
    sqlite3_bind_int64(st, 1, c->c.nrecords);
    sqlite3_bind_int64(st, 2, c->c.nvalid);
    sqlite3_bind_int64(st, 3, c->c.nrejected);
    sqlite3_bind_int64(st, 4, dups);
    sqlite3_bind_text(st, 5, jb->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, jb->batch_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return db_err(rc);
    if (ingest_app) {
        observe_tenant_wrote(ingest_app, jb->tenant_id);
        if (c->c.nvalid)
            cm_notify_ingested(ingest_app, jb->tenant_id);
    }
    return 0;
}

/* How a batch ended. */
struct batch_end {
    const struct job_batch *jb;
    const char *error;           /* internal failure, or NULL */
};

static const char SQL_BATCH_FINISH[] =
    "UPDATE cm_batches SET status = CASE WHEN ?1 IS NOT NULL OR stored_records = 0 THEN 'failed' "
    "ELSE 'completed' END, validation_status = CASE WHEN failed_records = 0 AND "
    "processed_records = records_received THEN 'passed' ELSE 'failed' END, error = CASE WHEN ?1 "
    "IS NOT NULL THEN ?1 WHEN stored_records = 0 THEN 'no record passed validation' END, "
    "completed_at = ?2 WHERE tenant_id = ?3 AND batch_id = ?4 AND status = 'processing' "
    "RETURNING stored_records - duplicate_records, processed_records, started_at";
static const char SQL_PAYLOAD_DELETE[] =
    "DELETE FROM cm_batch_payloads WHERE tenant_id = ? AND batch_id = ?";
static const char SQL_SOURCE_INGESTED[] =
    "UPDATE cm_sources SET last_ingestion = ?1, updated_at = ?1, total_records = total_records + "
    "?2 WHERE tenant_id = ?3 AND source_id = ?4";

/* Loop: the batch's end, and its source's last_ingestion and total_records (new ids only). */
static int batch_finish(struct db *db, void *arg)
{
    struct batch_end *e = arg;
    const struct job_batch *jb = e->jb;
    int64_t now = clock_now_ms();
    sqlite3_stmt *st = db_stmt(db, SQL_BATCH_FINISH);
    if (e->error)
        sqlite3_bind_text(st, 1, e->error, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_text(st, 3, jb->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, jb->batch_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW)
        return 0; /* finished already */
    int64_t added = sqlite3_column_int64(st, 0), processed = sqlite3_column_int64(st, 1);
    int64_t started = sqlite3_column_int64(st, 2);
    sqlite3_reset(st);
    /* small batches say little about the rate, failed ones nothing */
    if (e->error == NULL && processed >= 1000 && now > started) {
        double rate = (double)processed * 1000.0 / (double)(now - started);
        measured_rate = 0.7 * measured_rate + 0.3 * rate;
    }
    st = db_stmt(db, SQL_PAYLOAD_DELETE);
    sqlite3_bind_text(st, 1, jb->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, jb->batch_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        return TS_E_INTERNAL;
    st = db_stmt(db, SQL_SOURCE_INGESTED);
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int64(st, 2, added);
    sqlite3_bind_text(st, 3, jb->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, jb->source_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (ingest_app)
        observe_tenant_wrote(ingest_app, jb->tenant_id);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

static const char SQL_PAYLOAD[] =
    "SELECT payload FROM cm_batch_payloads WHERE tenant_id = ? AND batch_id = ?";

/* Worker: the batch's records from its stored payload (a JSON body's "data", or an array). */
static json_t *payload_records(sqlite3 *db, const struct job_batch *jb)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, SQL_PAYLOAD, -1, &st, NULL) != SQLITE_OK)
        return NULL;
    sqlite3_bind_text(st, 1, jb->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, jb->batch_id, -1, SQLITE_STATIC);
    json_t *v = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_TEXT)
        v = json_loadb((const char *)sqlite3_column_text(st, 0),
                       (size_t)sqlite3_column_bytes(st, 0), 0, NULL);
    sqlite3_finalize(st);
    if (json_is_object(v)) {
        json_t *data = json_incref(json_object_get(v, "data"));
        json_decref(v);
        v = data;
    }
    if (!json_is_array(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

static int job_checkpoint(struct job_run *r, int64_t next)
{
    r->next_checkpoint.len = 0;
    buf_printf(&r->next_checkpoint, "{\"next\":%lld}", (long long)next);
    return -ECANCELED;
}

/* Records per chunk: CHUNK, or fewer when TESSERA_TEST_INGEST_CHUNK says so (the crash test
 * kills a batch between many chunks, as a 10,000-record batch has only two of CHUNK). Read
 * once, under pthread_once: every worker thread asks (a plain lazy static was a data race,
 * tools/check tsan). */
static int chunk_n;

static void chunk_records_init(void)
{
    const char *e = getenv("TESSERA_TEST_INGEST_CHUNK");
    int v = e ? atoi(e) : 0;
    chunk_n = v >= 1 && v < CHUNK ? v : CHUNK;
}

static int chunk_records(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, chunk_records_init);
    return chunk_n;
}

/* Worker: checks records [start, start + chunk_records()) into recs and makes them c's JSON. Returns
 * how many, or TS_E_INTERNAL. */
static int chunk_check(const json_t *records, const struct job_batch *jb,
                       const struct cm_check_env *env, int64_t start, struct cm_rec *recs,
                       struct chunk *c)
{
    struct arena *a = arena_new(64 * 1024);
    int n = 0;
    for (int64_t i = start, max = chunk_records(); i < jb->received && n < max; i++)
        cm_record_check(a, (enum cm_type)jb->type, json_array_get(records, (size_t)i), i, env,
                        &recs[n++]);
    c->start = start;
    cm_chunk_init(&c->c, (enum cm_type)jb->type);
    int rc = cm_chunk_build(&c->c, recs, n);
    arena_free(a);
    return rc < 0 ? rc : n;
}

/* Worker: every chunk from where the batch stands. 0 when all are stored, -ECANCELED after a
 * checkpoint, or an error (with r->error). */
static int job_chunks(struct job_run *r, struct job_batch *jb, const json_t *records)
{
    char currency[8];
    cm_default_currency(r->db, jb->tenant_id, currency);
    struct cm_check_env env = {currency, clock_now_ms(), -1};
    struct cm_rec *recs = calloc(CHUNK, sizeof(*recs));
    if (recs == NULL)
        return -ENOMEM;
    int rc = 0, n = 0;
    for (int64_t at = jb->processed; at < jb->received && rc == 0; at += n) {
        if (atomic_load(r->cancel)) {
            rc = job_checkpoint(r, at);
            break;
        }
        struct chunk c = {jb};
        env.now_ms = clock_now_ms();
        n = chunk_check(records, jb, &env, at, recs, &c);
        rc = n < 0 ? n : job_write(r, chunk_apply, &c);
        cm_chunk_release(&c.c);
        if (rc == TS_E_UNAVAILABLE)
            rc = job_checkpoint(r, at);
        else if (rc < 0)
            snprintf(r->error, sizeof(r->error), "storing records %lld.. failed (%s)",
                     (long long)at, err_code(rc, SURF_COMMERCE));
        else
            job_progress(r, (double)(at + n) / (double)jb->received);
    }
    free(recs);
    return rc;
}

int cm_ingest_job(struct job_run *r)
{
    json_t *p = json_loads(r->params, 0, NULL);
    struct job_batch jb = {r->tenant_id, json_string_value(json_object_get(p, "batch_id")), r->id};
    int rc = jb.batch_id ? job_write(r, batch_begin, &jb) : TS_E_INTERNAL;
    if (rc == TS_E_UNAVAILABLE)
        rc = job_checkpoint(r, 0);
    json_t *records = jb.batch_id ? handoff_take(jb.batch_id) : NULL;
    if (rc == 0 && jb.found && !jb.done && jb.type >= 0) {
        if (records == NULL)
            records = payload_records(r->db, &jb);
        if (records == NULL || (int64_t)json_array_size(records) != jb.received) {
            snprintf(r->error, sizeof(r->error), "the batch's stored records cannot be read");
            rc = TS_E_INTERNAL;
        } else
            rc = job_chunks(r, &jb, records);
        if (rc != -ECANCELED && !job_error_transient(r, rc)) { /* else run again, not failed */
            struct batch_end e = {&jb, r->error[0] ? r->error : NULL};
            int fr = job_write(r, batch_finish, &e);
            rc = fr == TS_E_UNAVAILABLE ? job_checkpoint(r, jb.received) : rc < 0 ? rc : fr;
        }
    } else if (rc < 0 && rc != -ECANCELED) {
        snprintf(r->error, sizeof(r->error), "the batch could not be started");
    }
    json_decref(records);
    if (rc == 0)
        buf_printf(&r->result, "{\"batch_id\":\"%s\"}", jb.batch_id ? jb.batch_id : "");
    json_decref(p);
    return rc;
}

/* Loop, at start (the job-kind table's abandon): the batch's job is failed after restarts that
 * stored nothing, so the batch ends failed, keeping the records its earlier runs stored. */
int cm_ingest_abandon(struct db *db, const char *tenant_id, const char *params)
{
    json_t *p = json_loads(params ? params : "{}", 0, NULL);
    struct job_batch jb = {tenant_id, json_string_value(json_object_get(p, "batch_id")), NULL};
    int rc = jb.batch_id ? batch_begin(db, &jb) : 0;
    if (rc == 0 && jb.found && !jb.done) {
        struct batch_end e = {&jb, "processing stopped after restarts in a row that stored "
                                   "nothing; send the batch again (records upsert by id)"};
        rc = batch_finish(db, &e);
    }
    json_decref(p);
    return rc;
}

/* ---- GET /api/v1/ingest/batches/{batch_id}/status ---- */

static const char SQL_BATCH_GET[] =
    "SELECT batch_id, source_id, data_type, format, status, validation_status, records_received, "
    "processed_records, stored_records, failed_records, duplicate_records, metadata, "
    "schema_version, error, created_at, coalesce(started_at, created_at), completed_at "
    "FROM cm_batches WHERE batch_id = ?1 AND tenant_id = ?2";
static const char SQL_BATCH_ERRORS[] =
    "SELECT record_index, record_key, field, check_type, reason FROM cm_rejects "
    "WHERE tenant_id = ? AND batch_id = ? ORDER BY record_index, rowid LIMIT ?";

static void batch_errors(struct hctx *h, struct jw *w, const char *batch_id)
{
    sqlite3_stmt *st = db_stmt(h->app->db, SQL_BATCH_ERRORS);
    sqlite3_bind_text(st, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, batch_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, ERRORS_LISTED);
    jw_key(w, "errors");
    jw_arr_open(w);
    while (sqlite3_step(st) == SQLITE_ROW) {
        jw_obj_open(w);
        jw_kint(w, "record_index", sqlite3_column_int64(st, 0));
        jw_kstr(w, "record_id", (const char *)sqlite3_column_text(st, 1));
        jw_kstr(w, "field", col_text(st, 2));
        jw_kstr(w, "check_type", col_text(st, 3));
        jw_kstr(w, "message", col_text(st, 4));
        jw_obj_close(w);
    }
    jw_arr_close(w);
}

static void batch_json(struct hctx *h, struct jw *w, sqlite3_stmt *q)
{
    int64_t total = sqlite3_column_int64(q, 6), done = sqlite3_column_int64(q, 7);
    jw_obj_open(w);
    jw_kstr(w, "batch_id", col_text(q, 0));
    jw_kstr(w, "status", col_text(q, 4));
    jw_key(w, "progress");
    jw_obj_open(w);
    jw_kint(w, "total_records", total);
    jw_kint(w, "processed_records", done);
    jw_kint(w, "failed_records", sqlite3_column_int64(q, 9));
    jw_kdouble(w, "progress_percentage", total ? round(10000.0 * done / total) / 100.0 : 100.0);
    jw_obj_close(w);
    jw_kiso(w, "started_at", sqlite3_column_int64(q, 15));
    if (sqlite3_column_type(q, 16) != SQLITE_NULL)
        jw_kiso(w, "completed_at", sqlite3_column_int64(q, 16));
    batch_errors(h, w, col_text(q, 0));
    jw_kstr(w, "validation_status", col_text(q, 5));
    jw_kint(w, "records_received", total);
    jw_kint(w, "stored_records", sqlite3_column_int64(q, 8));
    jw_kint(w, "duplicate_records", sqlite3_column_int64(q, 10));
    jw_kstr(w, "source_id", col_text(q, 1));
    jw_kstr(w, "data_type", col_text(q, 2));
    jw_kstr(w, "format", col_text(q, 3));
    jw_key(w, "metadata");
    jw_raw(w, col_text(q, 11));
    jw_kstr(w, "schema_version", (const char *)sqlite3_column_text(q, 12));
    jw_kstr(w, "error", (const char *)sqlite3_column_text(q, 13));
    jw_kiso(w, "created_at", sqlite3_column_int64(q, 14));
    jw_obj_close(w);
}

/* The batch as the whole ApiResponse (row_body's writer, re-aimed at the envelope). */
static void batch_row_json(struct hctx *h, struct jw *w, sqlite3_stmt *q)
{
    cm_ok_begin(h, w);
    batch_json(h, w, q);
    cm_ok_end(h, w);
}

static int batch_status(struct hctx *h)
{
    const char *id = http_param_get(h->req, "batch_id");
    return row_body(h, SQL_BATCH_GET, id, "batch_id", "batch", batch_row_json);
}

/* ---- POST /api/v1/ingest/stream ---- */

static const char SQL_SOURCE_STREAMED[] =
    "UPDATE cm_sources SET last_ingestion = ?1, updated_at = ?1, total_records = total_records + "
    "?2 WHERE tenant_id = ?3 AND source_id = ?4";

struct stream_req {
    const char *source_id;
    int type;
    int64_t ts;
    const json_t *data;
    const char *correlation_id;
};

static int stream_fields(struct hctx *h, struct stream_req *s)
{
    const json_t *b = h->body;
    s->source_id = check_source_id(h, json_object_get(b, "source_id"), NULL);
    s->type = check_data_type(h, json_object_get(b, "data_type"), NULL);
    const json_t *ts = json_object_get(b, "timestamp");
    if (ts == NULL || json_is_null(ts))
        field_error_add(h, "timestamp", "Timestamp is required", NULL);
    else if (!json_is_string(ts) || clock_parse_iso8601(json_string_value(ts), &s->ts) < 0)
        field_error_add(h, "timestamp", "Timestamp must be an ISO 8601 date-time", ts);
    s->data = json_object_get(b, "data");
    if (s->data == NULL || json_is_null(s->data))
        field_error_add(h, "data", "Data is required", NULL);
    else if (!json_is_object(s->data))
        field_error_add(h, "data", "Data must be one record: a JSON object", s->data);
    const json_t *cid = json_object_get(b, "correlation_id");
    if (cid && !json_is_null(cid)) {
        if (!json_is_string(cid) || json_string_length(cid) > 128)
            field_error_add(h, "correlation_id",
                            "correlation_id must be a string of at most 128 characters", cid);
        else
            s->correlation_id = json_string_value(cid);
    }
    return h->nferrs ? TS_E_VALIDATION : 0;
}

/* The record (valid or not) stored, its fields bound: a failed record's failures are kept in
 * cm_rejects for the data-quality reports although the request fails. */
static int stream_store(struct hctx *h, const struct cm_origin *o, const struct cm_rec *rec,
                        int64_t *ret_dups)
{
    int r = cm_record_store(h->app->db, o, rec, ret_dups);
    if (r < 0 || rec->nfails == 0)
        return r;
    for (int i = 0; i < rec->nfails && i < CM_FAILS_MAX; i++)
        field_error_add(h, rec->fails[i].field, rec->fails[i].reason, NULL);
    db_request_keep(h->app->db);
    return TS_E_VALIDATION;
}

static int ingest_stream(struct hctx *h)
{
    struct stream_req s = {0};
    int r = stream_fields(h, &s);
    if (r == 0)
        r = source_use(h, s.source_id, "stream");
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    char currency[8] = "";
    if (s.type == CM_ORDERS || s.type == CM_TRANSACTIONS)
        cm_default_currency(h->db, h->tenant_id, currency);
    int64_t now = clock_now_ms();
    struct cm_check_env env = {currency, now, s.ts};
    struct cm_rec rec;
    cm_record_check(h->arena, (enum cm_type)s.type, s.data, -1, &env, &rec);
    struct cm_origin o = {h->tenant_id, s.source_id, NULL, now};
    int64_t dup = 0;
    if ((r = stream_store(h, &o, &rec, &dup)) < 0)
        return r;
    sqlite3_stmt *st = db_stmt(h->app->db, SQL_SOURCE_STREAMED);
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int(st, 2, !dup);
    sqlite3_bind_text(st, 3, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, s.source_id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        return TS_E_INTERNAL;
    cm_notify_ingested(h->app, h->tenant_id);
    double latency = (double)(clock_mono_ns() - h->req->start_ns) / 1e6;
    h->audit_target = rec.key;
    h->status = 202;
    char ts[40];
    clock_iso8601(now, 1, ts, sizeof(ts));
    struct jw w;
    cm_ok_begin(h, &w);
    jw_obj_open(&w);
    jw_kstr(&w, "status", "accepted");
    jw_kstr(&w, "record_id", rec.key);
    jw_kstr(&w, "timestamp", ts);
    jw_kdouble(&w, "processing_latency_ms", round(latency * 1000.0) / 1000.0);
    jw_kstr(&w, "data_type", cm_type_names[s.type]);
    jw_kbool(&w, "duplicate", dup > 0);
    if (s.correlation_id)
        jw_kstr(&w, "correlation_id", s.correlation_id);
    jw_obj_close(&w);
    return cm_ok_end(h, &w);
}

/* ---- sources: GET, POST /api/v1/ingest/sources, PUT /api/v1/ingest/sources/{source_id} ---- */

static const char SQL_SOURCES_COUNT[] =
    "SELECT count(*) FROM cm_sources WHERE tenant_id = ?1 AND (?2 = 0 OR status = 'active')";
static const char SQL_SOURCES_PAGE[] =
    "SELECT source_id, name, type, status, last_ingestion, total_records, configuration, "
    "created_at, updated_at FROM cm_sources WHERE tenant_id = ?1 AND (?2 = 0 OR status = "
    "'active') ORDER BY created_at, source_id LIMIT ?3 OFFSET ?4";
static const char SQL_SOURCE_GET[] =
    "SELECT source_id, name, type, status, last_ingestion, total_records, configuration, "
    "created_at, updated_at FROM cm_sources WHERE source_id = ?1 AND tenant_id = ?2";
static const char SQL_SOURCE_CREATE[] =
    "INSERT INTO cm_sources(tenant_id, source_id, name, type, status, configuration, created_at, "
    "updated_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) ON CONFLICT DO NOTHING";
static const char SQL_SOURCE_UPDATE[] =
    "UPDATE cm_sources SET name = coalesce(?3, name), type = coalesce(?4, type), status = "
    "coalesce(?5, status), configuration = coalesce(?6, configuration), updated_at = ?7 "
    "WHERE tenant_id = ?1 AND source_id = ?2";

static void source_json(struct hctx *h, struct jw *w, sqlite3_stmt *q)
{
    (void)h;
    jw_obj_open(w);
    jw_kstr(w, "source_id", col_text(q, 0));
    jw_kstr(w, "name", col_text(q, 1));
    jw_kstr(w, "type", col_text(q, 2));
    jw_kstr(w, "status", col_text(q, 3));
    jw_kiso(w, "last_ingestion", sqlite3_column_int64(q, 4));
    jw_kint(w, "total_records", sqlite3_column_int64(q, 5));
    jw_key(w, "configuration");
    jw_raw(w, col_text(q, 6));
    jw_kiso(w, "created_at", sqlite3_column_int64(q, 7));
    jw_kiso(w, "updated_at", sqlite3_column_int64(q, 8));
    jw_obj_close(w);
}

static int sources_list(struct hctx *h)
{
    struct cm_query q;
    int page, size;
    bool active_only;
    int r = cm_query_parse(h, &q);
    if (r == 0)
        r = cm_page(h, &q, &page, &size);
    if (r == 0)
        r = cm_param_bool(h, &q, "active_only", true, &active_only);
    if (r < 0)
        return r;
    sqlite3_stmt *st = db_stmt(h->app->db, SQL_SOURCES_COUNT);
    sqlite3_bind_text(st, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, active_only);
    int64_t total = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    st = db_stmt(h->app->db, SQL_SOURCES_PAGE);
    sqlite3_bind_text(st, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, active_only);
    sqlite3_bind_int(st, 3, size);
    sqlite3_bind_int64(st, 4, (int64_t)page * size);
    struct jw w;
    cm_ok_begin(h, &w);
    jw_obj_open(&w);
    jw_key(&w, "content");
    jw_arr_open(&w);
    while (sqlite3_step(st) == SQLITE_ROW)
        source_json(h, &w, st);
    jw_arr_close(&w);
    cm_page_fields(&w, total, page, size);
    jw_obj_close(&w);
    return cm_ok_end(h, &w);
}

static const char *const SOURCE_TYPES[] = {"api", "database", "file", "stream", NULL};
static const char *const SOURCE_STATUSES[] = {"active", "inactive", "error", NULL};

/* An optional enum member of the body; NULL when absent. */
static const char *body_enum(struct hctx *h, const char *field, const char *const *values)
{
    const json_t *v = json_object_get(h->body, field);
    if (v == NULL || json_is_null(v))
        return NULL;
    for (int i = 0; json_is_string(v) && values[i]; i++)
        if (strcmp(json_string_value(v), values[i]) == 0)
            return values[i];
    char list[96] = "";
    for (int i = 0; values[i]; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
                 values[i]);
    field_error_add(h, field, arena_printf(h->arena, "%s must be one of: %s", field, list), v);
    return NULL;
}

/* The writable DataSource fields of the body: name, type, status, configuration. */
struct source_fields {
    const char *name, *type, *status;
    char *configuration;         /* JSON text (malloc) */
};

static void source_fields_release(void *arg)
{
    free(((struct source_fields *)arg)->configuration);
}

static void source_fields(struct hctx *h, struct source_fields *f)
{
    const json_t *name = json_object_get(h->body, "name");
    if (name && !json_is_null(name)) {
        if (!json_is_string(name) || json_string_length(name) == 0 ||
            json_string_length(name) > 200)
            field_error_add(h, "name", "name must be a string of 1-200 characters", name);
        else
            f->name = json_string_value(name);
    }
    f->type = body_enum(h, "type", SOURCE_TYPES);
    f->status = body_enum(h, "status", SOURCE_STATUSES);
    const json_t *conf = json_object_get(h->body, "configuration");
    if (conf && !json_is_null(conf)) {
        char *t = json_is_object(conf) ? json_dumps(conf, JSON_COMPACT) : NULL;
        if (t == NULL || strlen(t) > CONFIG_MAX) {
            field_error_add(h, "configuration",
                            "configuration must be a JSON object of at most 16 KiB", NULL);
            free(t);
        } else {
            f->configuration = t;
        }
    }
    arena_defer(h->arena, source_fields_release, f);
}

static void source_bind(sqlite3_stmt *st, struct hctx *h, const char *id,
                        const struct source_fields *f)
{
    sqlite3_bind_text(st, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    if (f->name)
        sqlite3_bind_text(st, 3, f->name, -1, SQLITE_STATIC);
    if (f->type)
        sqlite3_bind_text(st, 4, f->type, -1, SQLITE_STATIC);
    if (f->status)
        sqlite3_bind_text(st, 5, f->status, -1, SQLITE_STATIC);
    if (f->configuration)
        sqlite3_bind_text(st, 6, f->configuration, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, clock_now_ms());
}

static void source_row(struct hctx *h, struct jw *w, sqlite3_stmt *q)
{
    cm_ok_begin(h, w);
    source_json(h, w, q);
    cm_ok_end(h, w);
}

static int source_create(struct hctx *h)
{
    const char *id = check_source_id(h, json_object_get(h->body, "source_id"), NULL);
    struct source_fields *f = arena_calloc(h->arena, sizeof(*f));
    source_fields(h, f);
    if (h->nferrs)
        return TS_E_VALIDATION;
    struct source_fields def = {f->name ? f->name : id, f->type ? f->type : "api",
                                f->status ? f->status : "active",
                                f->configuration ? f->configuration : "{}"};
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *st = db_stmt(h->app->db, SQL_SOURCE_CREATE);
    source_bind(st, h, id, &def);
    if (sqlite3_step(st) != SQLITE_DONE)
        return TS_E_INTERNAL;
    if (sqlite3_changes(h->db) == 0)
        return fail(h, TS_E_CONFLICT, "source_id",
                    arena_printf(h->arena, "source %s exists already", id));
    h->audit_target = id;
    r = row_body(h, SQL_SOURCE_GET, id, "source_id", "source", source_row);
    h->status = 201;
    return r;
}

static int source_update(struct hctx *h)
{
    const char *id = http_param_get(h->req, "source_id");
    struct source_fields *f = arena_calloc(h->arena, sizeof(*f));
    source_fields(h, f);
    if (h->nferrs)
        return TS_E_VALIDATION;
    if (!f->name && !f->type && !f->status && !f->configuration)
        return fail(h, TS_E_VALIDATION, "body",
                    "give at least one of name, type, status, configuration");
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *st = db_stmt(h->app->db, SQL_SOURCE_UPDATE);
    source_bind(st, h, id, f);
    if (sqlite3_step(st) != SQLITE_DONE)
        return TS_E_INTERNAL;
    if (sqlite3_changes(h->db) == 0)
        return fail(h, TS_E_NOT_FOUND, "source_id", "source not found");
    return row_body(h, SQL_SOURCE_GET, id, "source_id", "source", source_row);
}

static const struct route routes[] = {
    {"POST", "/api/v1/ingest/batch", ingest_batch, "commerce.ingest", "commerce", RUN_LOOP, 0,
     RF_BIG_BODY},
    {"GET", "/api/v1/ingest/batches/{batch_id}/status", batch_status, "commerce.read",
     "commerce", RUN_LOOP, 0, 0},
    {"POST", "/api/v1/ingest/stream", ingest_stream, "commerce.ingest", "stream", RUN_LOOP, 0,
     RF_JSON_BODY | RF_NO_AUDIT},
    {"GET", "/api/v1/ingest/sources", sources_list, "commerce.read", "commerce", RUN_LOOP, 0, 0},
    {"POST", "/api/v1/ingest/sources", source_create, "commerce.sources", "commerce", RUN_LOOP, 0,
     RF_JSON_BODY},
    {"PUT", "/api/v1/ingest/sources/{source_id}", source_update, "commerce.sources", "commerce",
     RUN_LOOP, 0, RF_JSON_BODY},
};

const struct route_table commerce_ingest_table = {SURF_COMMERCE, routes,
                                                  sizeof(routes) / sizeof(routes[0])};
