/* Shared by dashboards.c, widgets.c and alerts.c: dashboard definitions and widget evaluation
 * (widgets.c), the dashboards' timer and state (started and stopped with the alert timers,
 * which commerce_timers_start/stop reach through cm_alerts_start/stop), and body checks. */
#ifndef TS_COMMERCE_DASHBOARDS_H
#define TS_COMMERCE_DASHBOARDS_H
#include <jansson.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/json.h"

struct app;
struct db;
struct hctx;

/* Loop thread. Until start (and after stop) ingestion notices are ignored and dashboard
 * WebSocket sessions are refused. stop runs after pool_stop: no evaluation is in flight. */
void cm_dashboards_start(struct app *app);
void cm_dashboards_stop(void);

/* ---- body checks (dashboards.c). Each records a field error (field_error_add) and returns
 * -1, or returns 0; the handler answers TS_E_VALIDATION once every field was looked at. ---- */
bool cm__one_of(const char *s, const char *const *set);     /* s in a NULL-terminated set */
bool cm__id_ok(const char *s);                              /* 1..64 of [A-Za-z0-9._-] */
int cm__ferr(struct hctx *h, const char *field, const char *msg, const json_t *rejected);
/* Member name of o (field "prefix.name"): absent leaves *ret; else a string of min..max. */
int cm__opt_string(struct hctx *h, const json_t *o, const char *prefix, const char *name,
                   size_t min, size_t max, const char **ret);
int cm__req_string(struct hctx *h, const json_t *o, const char *prefix, const char *name,
                   size_t max, const char **ret);
/* obj as a metric query (cm_metric_query_from_json, a widget's group_by left out); its error
 * is recorded under field + "." + the engine's field ("widgets[2].configuration.metric_type"). */
void cm__query_check(struct hctx *h, const json_t *obj, const char *field);
/* sqlite3_step + reset: 0 on SQLITE_DONE, else the mapped TS_E_* code. */
int cm__step_ok(sqlite3_stmt *q);

/* ---- dashboard definitions and widget evaluation (widgets.c) ---- */

#define CM_ID_MAX 64                  /* dashboard and widget ids */
#define CM_WIDGETS_MAX 50
#define CM_WIDGET_DATA_MAX (4u << 20) /* one widget's data */

struct cm_wdef {
    const char *widget_id, *type, *title, *configuration; /* configuration: JSON text */
    int x, y, w, h, refresh_s;
};

struct cm_ddef {
    const char *tenant_id, *dashboard_id, *name, *description, *category, *created_by;
    bool is_public;
    int64_t created_at, updated_at;
    int n;
    struct cm_wdef w[CM_WIDGETS_MAX];
};

/* A dashboard of the tenant from the writer (loop thread) into arena a: 0 or TS_E_NOT_FOUND. */
int cm_ddef_load(struct db *db, struct arena *a, const char *tenant_id, const char *id,
                 struct cm_ddef **ret);
/* The Dashboard object of section 3.1 (plus created_by). */
void cm_dash_json(struct jw *w, const struct cm_ddef *d);

/* One widget's result. */
struct cm_wout {
    int status;               /* 0, or the TS_E_* code of the failure */
    const char *data;         /* JSON text (status 0) */
    const char *error;        /* why it failed */
    uint64_t fp;              /* fingerprint of the figures, or of the error */
    int64_t computed_at;
    const char *cache_status; /* hit, miss, stale */
    bool evaluate;            /* not served from the cache */
};

/* Evaluates one widget on db (any connection; a pool worker's in practice) at now into o,
 * its strings in arena a. Never fails as a whole: o->status says how it went. */
void cm_widget_eval(sqlite3 *db, const char *tenant, const struct cm_wdef *wd, int64_t now,
                    struct arena *a, struct cm_wout *o);
/* FNV-1a of a string, continuing from h (start with CM_FNV_SEED). */
#define CM_FNV_SEED 14695981039346656037ull
uint64_t cm_fnv1a(const char *s, uint64_t h);
#endif
