/* commerce.md section 3.1-3.2: dashboards, their data and the dashboard WebSocket.
 *
 * Definitions (also in README.md, "### Dashboards and alerts"):
 * - A widget's configuration is a metric query (cm_metric_query_from_json) plus an optional
 *   "group_by": region|channel|currency for bar_chart, pie_chart, map and table widgets of the
 *   order metrics. Its data: metric_card {"value": summary.total, "metric": MetricsResponse};
 *   with group_by {"group_by", "metric_type", "groups": [{key, value, total_records}] by value
 *   descending, "truncated"}; otherwise the MetricsResponse itself.
 * - Visibility: public dashboards to everyone of the tenant; the others to admins and their
 *   creator (API keys see public ones only).
 * - The widget cache (loop thread) is keyed by tenant, dashboard, widget and configuration.
 *   An entry younger than the widget's refresh_interval is served: "hit" when the tenant has
 *   no new records since it was computed, "stale" when it has (the figure is then as of
 *   computed_at; ?refresh=true recomputes). Older or absent entries are computed: "miss".
 *   last_updated is the oldest computed_at served; next_refresh the first time a widget's
 *   figure expires (computed_at + refresh_interval).
 * - WS /ws/dashboards/{id}: on connect and on a client {"type":"refresh"} the session gets
 *   dashboard_refresh {dashboard, last_updated, next_refresh} followed by every widget's
 *   current data (widget_update, or error for a failing widget). After ingestion (debounced,
 *   DEBOUNCE_MS after the first record, and no sooner after the dashboard's last evaluation
 *   than CM_PACE_FACTOR times as long as it ran: common.h) the subscribed dashboards are
 *   re-evaluated and only widgets whose figures changed are sent; a PUT of the definition sends dashboard_refresh
 *   and every widget to all subscribers; DELETE sends an error and closes with 4404. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "core/ids.h"
#include "http/ws.h"
#include "jobs/pool.h"
#include "store/db.h"
#include "surfaces/commerce/common.h"
#include "surfaces/commerce/dashboards.h"
#include "surfaces/commerce/metrics.h"

#define NAME_MAX_LEN 200
#define DESC_MAX_LEN 2000
#define DASHBOARDS_MAX 500           /* per tenant */
#define CONFIG_MAX 16384             /* bytes of one widget configuration */
#define POS_MAX 10000
#define REFRESH_MIN_S 5
#define REFRESH_MAX_S 86400
#define REFRESH_DEFAULT_S 60
#define DEBOUNCE_MS 300              /* after the first ingestion notice */
#define RETRY_MS 500                 /* after the pool refused a task */
#define CACHE_BYTES_MAX (32u << 20)
#define CACHE_ENTRIES_MAX 8192
#define CACHE_BUCKETS 1024
#define CHANNELS_MAX 4096
#define SESSIONS_MAX 10000
#define CLOSE_DELETED 4404
#define CHANNEL_NAME_MAX 160         /* commerce:dashboard:<tenant>:<dashboard> */

static const char *const categories[] = {"executive", "operations", "finance", "marketing", NULL};
static const char *const widget_types[] = {"metric_card", "line_chart", "bar_chart",
                                           "pie_chart",   "table",      "map",      NULL};
static const char *const group_dims[] = {"region", "channel", "currency", NULL};
/* metric types whose figures come from orders, so region/channel/currency split them */
static const char *const order_metrics[] = {"revenue", "transactions", "customers",
                                            "average_order_value", NULL};

static const char SQL_DASH_LIST[] =
    "SELECT dashboard_id FROM cm_dashboards WHERE tenant_id = ?1 "
    "AND (is_public = 1 OR ?2 = 1 OR created_by = ?3) ORDER BY created_at, dashboard_id LIMIT 500";
static const char SQL_DASH_COUNT[] = "SELECT count(*) FROM cm_dashboards WHERE tenant_id = ?";
static const char SQL_DASH_INSERT[] =
    "INSERT INTO cm_dashboards(tenant_id, dashboard_id, name, description, category, is_public,"
    " created_by, created_at, updated_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)";
static const char SQL_DASH_UPDATE[] =
    "UPDATE cm_dashboards SET name = ?3, description = ?4, category = ?5, is_public = ?6,"
    " updated_at = ?7 WHERE tenant_id = ?1 AND dashboard_id = ?2";
static const char SQL_DASH_DELETE[] =
    "DELETE FROM cm_dashboards WHERE tenant_id = ?1 AND dashboard_id = ?2";
static const char SQL_WIDGETS_DELETE[] =
    "DELETE FROM cm_widgets WHERE tenant_id = ?1 AND dashboard_id = ?2";
static const char SQL_WIDGET_INSERT[] =
    "INSERT INTO cm_widgets(tenant_id, dashboard_id, seq, widget_id, type, title, pos_x, pos_y,"
    " pos_w, pos_h, configuration, refresh_interval) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)";

bool cm__one_of(const char *s, const char *const *set)
{
    for (; s && *set; set++)
        if (!strcmp(s, *set))
            return true;
    return false;
}

bool cm__id_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > CM_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", s[i]))
            return false;
    return true;
}

static bool caller_is_admin(const struct hctx *h)
{
    return h->who.kind == PRINCIPAL_USER && (h->who.roles & ROLES_ADMINS);
}

static bool visible(const struct hctx *h, const struct cm_ddef *d)
{
    return d->is_public || caller_is_admin(h) ||
           (h->user_id && d->created_by && !strcmp(h->user_id, d->created_by));
}

/* The caller's dashboard named by the path, or 404 (unknown, other tenant, not visible). */
static int dash_find(struct hctx *h, struct cm_ddef **ret)
{
    const char *id = http_param_get(h->req, "dashboard_id");
    struct cm_ddef *d;
    int r = cm_ddef_load(h->app->db, h->arena, h->tenant_id, id, &d);
    if (r == 0 && !visible(h, d))
        r = TS_E_NOT_FOUND;
    if (r < 0)
        return fail(h, r, "dashboard_id", "dashboard not found");
    *ret = d;
    return 0;
}

/* ---------- the widget cache (loop thread) ---------- */

struct centry {
    struct centry *hnext, *lprev, *lnext;
    char *key;               /* tenant \x1f dashboard \x1f widget */
    char *config;
    int refresh_s;
    uint64_t gen, fp;
    int64_t computed_at;
    char *data;
    size_t bytes;
};

static struct {
    struct centry *buckets[CACHE_BUCKETS];
    struct centry *head, *tail;  /* most recently used first */
    size_t bytes, n;
} cache;

static char *ckey(struct arena *a, const char *tenant, const char *dash, const char *widget)
{
    return arena_printf(a, "%s\x1f%s\x1f%s", tenant, dash, widget);
}

static struct centry **cache_slot(const char *key)
{
    struct centry **pp = &cache.buckets[cm_fnv1a(key, CM_FNV_SEED) % CACHE_BUCKETS];
    while (*pp && strcmp((*pp)->key, key))
        pp = &(*pp)->hnext;
    return pp;
}

static void lru_unlink(struct centry *e)
{
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        cache.head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        cache.tail = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void lru_front(struct centry *e)
{
    e->lnext = cache.head;
    if (cache.head)
        cache.head->lprev = e;
    cache.head = e;
    if (cache.tail == NULL)
        cache.tail = e;
}

static void cache_remove(struct centry *e)
{
    struct centry **pp = cache_slot(e->key);
    *pp = e->hnext;
    lru_unlink(e);
    cache.bytes -= e->bytes;
    cache.n--;
    free(e->key);
    free(e->config);
    free(e->data);
    free(e);
}

static struct centry *cache_find(const char *key)
{
    struct centry *e = *cache_slot(key);
    if (e) {
        lru_unlink(e);
        lru_front(e);
    }
    return e;
}

static void cache_put(const char *key, const struct cm_wdef *wd, uint64_t gen, const struct cm_wout *o)
{
    struct centry *old = *cache_slot(key);
    if (old)
        cache_remove(old);
    size_t bytes = sizeof(struct centry) + strlen(key) + strlen(wd->configuration) +
                   strlen(o->data) + 3;
    if (bytes > CACHE_BYTES_MAX / 8)
        return; /* one huge widget must not flush every other */
    while (cache.tail && (cache.bytes + bytes > CACHE_BYTES_MAX || cache.n >= CACHE_ENTRIES_MAX))
        cache_remove(cache.tail);
    struct centry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return;
    e->key = strdup(key);
    e->config = strdup(wd->configuration);
    e->data = strdup(o->data);
    if (!e->key || !e->config || !e->data) {
        free(e->key), free(e->config), free(e->data), free(e);
        return;
    }
    e->refresh_s = wd->refresh_s;
    e->gen = gen;
    e->fp = o->fp;
    e->computed_at = o->computed_at;
    e->bytes = bytes;
    struct centry **pp = cache_slot(key);
    e->hnext = *pp;
    *pp = e;
    lru_front(e);
    cache.bytes += bytes;
    cache.n++;
}

/* Every entry of one dashboard (its definition changed or it is gone). */
static void cache_drop_dashboard(const char *tenant, const char *dash)
{
    char prefix[UUID_STR_LEN + CM_ID_MAX + 4];
    int n = snprintf(prefix, sizeof(prefix), "%s\x1f%s\x1f", tenant, dash);
    for (struct centry *e = cache.head, *next; e; e = next) {
        next = e->lnext;
        if (!strncmp(e->key, prefix, (size_t)n))
            cache_remove(e);
    }
}

static void cache_clear(void)
{
    while (cache.head)
        cache_remove(cache.head);
}

/* ---------- tenants' data generations (loop thread) ---------- */

/* A tenant's generation grows when ingestion tells us records are about to commit and again
 * when the debounce timer fires after the commit: a figure computed from a snapshot taken
 * in between is therefore never taken for current. */
struct tgen {
    struct tgen *next;
    char tenant_id[UUID_STR_LEN];
    uint64_t gen;
    bool marked;             /* new records since the debounce timer last ran */
};

static struct tgen *tgens;

static struct tgen *tgen_find(const char *tenant, bool create)
{
    for (struct tgen *t = tgens; t; t = t->next)
        if (!strcmp(t->tenant_id, tenant))
            return t;
    if (!create)
        return NULL;
    struct tgen *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    snprintf(t->tenant_id, sizeof(t->tenant_id), "%s", tenant);
    t->next = tgens;
    tgens = t;
    return t;
}

static uint64_t tgen_get(const char *tenant)
{
    struct tgen *t = tgen_find(tenant, false);
    return t ? t->gen : 0;
}

/* ---------- subscribers (loop thread) ---------- */

struct sub {
    struct sub *next;
    struct ws_session *s;
    bool want_refresh;       /* owes a dashboard_refresh and every widget */
    bool in_flight;          /* the running evaluation will send it */
};

struct base {
    char widget_id[CM_ID_MAX + 1];
    uint64_t fp;
};

struct channel {
    struct channel *next;
    char name[CHANNEL_NAME_MAX];
    char tenant_id[UUID_STR_LEN];
    char dashboard_id[CM_ID_MAX + 1];
    struct sub *subs;
    int nbase;
    bool have_base;          /* base holds what subscribers were last sent */
    struct base base[CM_WIDGETS_MAX];
    bool busy;               /* an evaluation is in the pool */
    bool want_data;          /* new records since the last evaluation started */
    bool want_definition;    /* the definition changed: refresh every subscriber */
    uint64_t not_before_ns;  /* the next evaluation for new records, paced by the last one */
};

static struct {
    bool started;
    struct app *app;
    uv_timer_t timer;
    struct channel *channels;
    int nchannels, nsessions;
} st;

static const char CHANNEL_PREFIX[] = "commerce:dashboard:";

static struct channel *channel_find(const char *name)
{
    for (struct channel *c = st.channels; c; c = c->next)
        if (!strcmp(c->name, name))
            return c;
    return NULL;
}

static void channel_name(char *out, size_t n, const char *tenant, const char *dash)
{
    snprintf(out, n, "%s%s:%s", CHANNEL_PREFIX, tenant, dash);
}

/* The channel of a session's name (commerce:dashboard:<tenant>:<dashboard>), made on first use. */
static struct channel *channel_get(const char *name)
{
    struct channel *c = channel_find(name);
    if (c || st.nchannels >= CHANNELS_MAX)
        return c;
    const char *rest = name + strlen(CHANNEL_PREFIX), *colon = strchr(rest, ':');
    if (strncmp(name, CHANNEL_PREFIX, strlen(CHANNEL_PREFIX)) || colon == NULL ||
        colon - rest >= UUID_STR_LEN || strlen(colon + 1) > CM_ID_MAX)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    snprintf(c->name, sizeof(c->name), "%s", name);
    snprintf(c->tenant_id, sizeof(c->tenant_id), "%.*s", (int)(colon - rest), rest);
    snprintf(c->dashboard_id, sizeof(c->dashboard_id), "%s", colon + 1);
    c->next = st.channels;
    st.channels = c;
    st.nchannels++;
    return c;
}

static void channel_free(struct channel *c)
{
    for (struct channel **pp = &st.channels; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    for (struct sub *s = c->subs, *next; s; s = next) {
        next = s->next;
        free(s);
        st.nsessions--;
    }
    st.nchannels--;
    free(c);
}

static void channel_maybe_free(struct channel *c)
{
    if (c->subs == NULL && !c->busy)
        channel_free(c);
}

static bool channel_wants(const struct channel *c)
{
    if (c->want_data || c->want_definition)
        return true;
    for (const struct sub *s = c->subs; s; s = s->next)
        if (s->want_refresh)
            return true;
    return false;
}

/* ---------- messages ---------- */

static void msg_begin(struct jw *w, struct buf *b, const char *type)
{
    buf_init(b, CM_WIDGET_DATA_MAX + 4096);
    jw_init(w, b);
    jw_obj_open(w);
    jw_kstr(w, "type", type);
}

static void msg_send(struct jw *w, struct buf *b, struct ws_session *only, struct channel *c)
{
    char ts[40];
    clock_iso8601(clock_now_ms(), 1, ts, sizeof(ts));
    jw_kstr(w, "timestamp", ts);
    jw_obj_close(w);
    if (jw_finish(w) == 0) {
        if (only)
            ws_session_send_text(only, b->data, b->len);
        else
            for (struct sub *s = c->subs; s; s = s->next)
                ws_session_send_text(s->s, b->data, b->len);
    }
    buf_release(b);
}

static void send_widget(struct channel *c, struct ws_session *only, const struct cm_wdef *wd,
                        const struct cm_wout *o)
{
    struct jw w;
    struct buf b;
    msg_begin(&w, &b, o->status == 0 ? "widget_update" : "error");
    jw_kstr(&w, "widget_id", wd->widget_id);
    if (o->status == 0) {
        jw_key(&w, "data");
        jw_raw(&w, o->data);
    } else {
        jw_kstr(&w, "error", o->error);
    }
    msg_send(&w, &b, only, c);
}

static void send_error(struct channel *c, struct ws_session *only, const char *error)
{
    struct jw w;
    struct buf b;
    msg_begin(&w, &b, "error");
    jw_kstr(&w, "error", error);
    msg_send(&w, &b, only, c);
}

/* last_updated and next_refresh of a set of widget results. */
static void data_times(const struct cm_ddef *d, const struct cm_wout *o, int64_t now,
                       int64_t *ret_last, int64_t *ret_next)
{
    int64_t last = 0, next = 0;
    for (int i = 0; i < d->n; i++) {
        int64_t at = o[i].status == 0 ? o[i].computed_at : now;
        int64_t due = at + (int64_t)d->w[i].refresh_s * 1000;
        if (o[i].status == 0 && (last == 0 || at < last))
            last = at;
        if (next == 0 || due < next)
            next = due;
    }
    *ret_last = last ? last : now;
    *ret_next = next ? next : now + REFRESH_DEFAULT_S * 1000;
}

/* dashboard_refresh, then every widget's data (or error). */
static void send_refresh(struct channel *c, struct ws_session *only, const struct cm_ddef *d,
                         const struct cm_wout *o, int64_t now)
{
    int64_t last, next;
    data_times(d, o, now, &last, &next);
    struct jw w;
    struct buf b;
    msg_begin(&w, &b, "dashboard_refresh");
    jw_key(&w, "data");
    jw_obj_open(&w);
    jw_key(&w, "dashboard");
    cm_dash_json(&w, d);
    jw_kiso(&w, "last_updated", last);
    jw_kiso(&w, "next_refresh", next);
    jw_obj_close(&w);
    msg_send(&w, &b, only, c);
    for (int i = 0; i < d->n; i++)
        send_widget(c, only, &d->w[i], &o[i]);
}

/* ---------- re-evaluation for subscribers (pool task) ---------- */

struct eval_task {
    struct pool_task task;
    struct arena *a;
    struct channel *c;
    struct cm_ddef *d;
    uint64_t gen;
    int64_t now;
    bool definition;         /* refresh every subscriber */
    uint64_t started_ns, ended_ns; /* the work's run, for the pacing */
    struct cm_wout out[CM_WIDGETS_MAX];
};

static void channel_kick(struct channel *c);

static void timer_cb(uv_timer_t *t);

/* Fires in ms, or sooner if it is armed for sooner. */
static void timer_arm(uint64_t ms)
{
    if (st.started)
        cm_timer_arm_sooner(&st.timer, timer_cb, ms);
}

static void eval_work(struct pool_task *t, struct pool_worker *w)
{
    struct eval_task *e = (struct eval_task *)t;
    e->started_ns = clock_mono_ns();
    for (int i = 0; i < e->d->n; i++) {
        if (w->db == NULL) {
            e->out[i].status = TS_E_UNAVAILABLE;
            e->out[i].error = "no database connection";
            continue;
        }
        cm_widget_eval(w->db, e->d->tenant_id, &e->d->w[i], e->now, e->a, &e->out[i]);
    }
    e->ended_ns = clock_mono_ns();
}

static uint64_t *base_of(struct channel *c, const char *widget_id)
{
    for (int i = 0; i < c->nbase; i++)
        if (!strcmp(c->base[i].widget_id, widget_id))
            return &c->base[i].fp;
    return NULL;
}

/* Sends what changed since the subscribers' last state (all of it on a definition change),
 * then the owed refreshes; the new state becomes the baseline. */
static void eval_publish(struct eval_task *e)
{
    struct channel *c = e->c;
    const struct cm_ddef *d = e->d;
    if (e->definition) {
        send_refresh(c, NULL, d, e->out, e->now);
    } else if (c->have_base) {
        for (int i = 0; i < d->n; i++) {
            uint64_t *old = base_of(c, d->w[i].widget_id);
            if (old == NULL || *old != e->out[i].fp)
                send_widget(c, NULL, &d->w[i], &e->out[i]);
        }
    }
    c->nbase = d->n;
    for (int i = 0; i < d->n; i++) {
        snprintf(c->base[i].widget_id, sizeof(c->base[i].widget_id), "%s", d->w[i].widget_id);
        c->base[i].fp = e->out[i].fp;
    }
    c->have_base = true;
    for (struct sub *s = c->subs; s; s = s->next) {
        if (s->in_flight && !e->definition)
            send_refresh(c, s->s, d, e->out, e->now);
        s->in_flight = false;
    }
}

static void eval_done(struct pool_task *t, int status)
{
    struct eval_task *e = (struct eval_task *)t;
    struct channel *c = e->c;
    if (!st.started) { /* stopped: the channels are gone already */
        arena_free(e->a);
        return;
    }
    c->busy = false;
    if (status == 0)
        c->not_before_ns = cm_pace_until_ns(e->started_ns, e->ended_ns);
    if (status == 0 && !st.app->draining) {
        char *key;
        for (int i = 0; i < e->d->n; i++) {
            if (e->out[i].status != 0)
                continue;
            key = ckey(e->a, c->tenant_id, c->dashboard_id, e->d->w[i].widget_id);
            cache_put(key, &e->d->w[i], e->gen, &e->out[i]);
        }
        eval_publish(e);
    } else if (status < 0) { /* cancelled: whoever waited for a refresh still does */
        for (struct sub *s = c->subs; s; s = s->next) {
            s->want_refresh |= s->in_flight;
            s->in_flight = false;
        }
    }
    arena_free(e->a);
    if (channel_wants(c))
        channel_kick(c);
    channel_maybe_free(c);
}

/* The channel's dashboard is gone: tell its subscribers and close them. */
static void channel_gone(struct channel *c)
{
    for (struct sub *s = c->subs; s; s = s->next) {
        send_error(c, s->s, "dashboard not found: it was deleted");
        ws_session_close(s->s, CLOSE_DELETED, "dashboard deleted");
        s->want_refresh = s->in_flight = false;
    }
    c->want_data = c->want_definition = false;
}

/* Only new records wait out the pacing (common.h): a subscriber's refresh and a changed
 * definition are answered at once. */
static bool channel_paced(const struct channel *c, uint64_t now)
{
    if (now >= c->not_before_ns || c->want_definition)
        return false;
    for (const struct sub *s = c->subs; s; s = s->next)
        if (s->want_refresh)
            return false;
    return true;
}

/* Starts an evaluation of the channel's dashboard if one is wanted and none is running. */
static void channel_kick(struct channel *c)
{
    if (!st.started || st.app->draining || c->busy || !channel_wants(c))
        return;
    uint64_t now = clock_mono_ns();
    if (channel_paced(c, now)) {
        timer_arm((c->not_before_ns - now) / 1000000 + 1);
        return;
    }
    struct arena *a = arena_new(16384); /* the task's memory, freed when it is done */
    if (a == NULL) {
        timer_arm(RETRY_MS);
        return;
    }
    struct eval_task *e = arena_calloc(a, sizeof(*e));
    e->a = a;
    e->c = c;
    e->now = clock_now_ms();
    e->gen = tgen_get(c->tenant_id);
    if (cm_ddef_load(st.app->db, a, c->tenant_id, c->dashboard_id, &e->d) < 0) {
        arena_free(a);
        channel_gone(c);
        return;
    }
    e->definition = c->want_definition;
    e->task.work = eval_work;
    e->task.done = eval_done;
    if (pool_submit(st.app->bg_pool, &e->task) < 0) {
        arena_free(a);
        timer_arm(RETRY_MS); /* the pool is full: try again shortly */
        return;
    }
    c->busy = true;
    c->want_data = c->want_definition = false;
    for (struct sub *s = c->subs; s; s = s->next) {
        s->in_flight = s->want_refresh;
        s->want_refresh = false;
    }
}

/* Fires DEBOUNCE_MS after the first ingestion notice, RETRY_MS after a refused task, or when a
 * paced channel may run again. */
static void timer_cb(uv_timer_t *t)
{
    (void)t;
    if (!st.started || st.app->draining)
        return;
    for (struct tgen *g = tgens; g; g = g->next) {
        if (!g->marked)
            continue;
        g->marked = false;
        g->gen++; /* the records have committed by now */
        for (struct channel *c = st.channels; c; c = c->next)
            if (!strcmp(c->tenant_id, g->tenant_id))
                c->want_data = true;
    }
    for (struct channel *c = st.channels; c; c = c->next)
        channel_kick(c);
}

void cm_dashboards_on_ingest(struct app *app, const char *tenant_id)
{
    (void)app;
    if (!st.started)
        return; /* a job resumed before serving: nobody subscribes yet, the cache is empty */
    struct tgen *g = tgen_find(tenant_id, true);
    if (g == NULL)
        return;
    g->gen++;
    g->marked = true;
    timer_arm(DEBOUNCE_MS);
}

/* The definition changed (PUT, on the loop, before the commit: the task reads the definition
 * from the writer here, so it sees the change). */
static void dashboard_changed(const char *tenant, const char *dash)
{
    char name[CHANNEL_NAME_MAX];
    channel_name(name, sizeof(name), tenant, dash);
    cache_drop_dashboard(tenant, dash);
    struct channel *c = channel_find(name);
    if (c == NULL)
        return;
    c->want_definition = true;
    c->have_base = false;
    channel_kick(c);
}

/* ---------- the WebSocket ---------- */

static void ws_open_cb(struct ws_session *s, void *user)
{
    (void)user;
    struct channel *c = st.started ? channel_get(ws_session_channel(s)) : NULL;
    struct sub *sub = c ? calloc(1, sizeof(*sub)) : NULL;
    if (sub == NULL) {
        if (c)
            channel_maybe_free(c);
        ws_session_close(s, 1011, "cannot subscribe");
        return;
    }
    sub->s = s;
    sub->want_refresh = true;
    sub->next = c->subs;
    c->subs = sub;
    st.nsessions++;
    channel_kick(c);
}

static void ws_close_cb(struct ws_session *s, void *user)
{
    (void)user;
    struct channel *c = st.started ? channel_find(ws_session_channel(s)) : NULL;
    if (c == NULL)
        return;
    for (struct sub **pp = &c->subs; *pp; pp = &(*pp)->next) {
        if ((*pp)->s == s) {
            struct sub *dead = *pp;
            *pp = dead->next;
            free(dead);
            st.nsessions--;
            break;
        }
    }
    channel_maybe_free(c);
}

static struct sub *sub_of(struct channel *c, struct ws_session *s)
{
    for (struct sub *x = c ? c->subs : NULL; x; x = x->next)
        if (x->s == s)
            return x;
    return NULL;
}

/* Clients may ask for the whole dashboard again: {"type":"refresh"}. */
static void ws_message_cb(struct ws_session *s, void *user, const char *text, size_t n,
                          bool binary)
{
    (void)user;
    struct channel *c = st.started ? channel_find(ws_session_channel(s)) : NULL;
    struct sub *sub = sub_of(c, s);
    if (sub == NULL)
        return;
    json_t *m = binary ? NULL : json_loadb(text, n, 0, NULL);
    const char *type = json_string_value(json_object_get(m, "type"));
    if (type && !strcmp(type, "refresh")) {
        sub->want_refresh = true;
        channel_kick(c);
    } else {
        send_error(c, s, "unknown message: send {\"type\":\"refresh\"} for the whole dashboard");
    }
    json_decref(m);
}

static const struct ws_handlers ws_handlers = {ws_open_cb, ws_message_cb, ws_close_cb};

static int ws_route(struct hctx *h)
{
    struct cm_ddef *d;
    int r = dash_find(h, &d);
    if (r < 0)
        return r;
    if (!st.started || st.nsessions >= SESSIONS_MAX || st.nchannels >= CHANNELS_MAX)
        return fail(h, TS_E_UNAVAILABLE, NULL, "too many dashboard subscribers; retry later");
    char name[CHANNEL_NAME_MAX];
    channel_name(name, sizeof(name), h->tenant_id, d->dashboard_id);
    return ws_upgrade(h->req, h->app->hub, name, NULL, &ws_handlers, h->app);
}

/* ---------- GET /dashboards/{id}/data ---------- */

struct data_state {
    struct cm_ddef *d;
    struct cm_wout out[CM_WIDGETS_MAX];
    uint64_t gen;
    int64_t now;
};

static int data_write(struct hctx *h, struct data_state *ds)
{
    const struct cm_ddef *d = ds->d;
    int64_t last, next;
    data_times(d, ds->out, ds->now, &last, &next);
    struct jw w;
    cm_ok_begin(h, &w);
    jw_obj_open(&w);
    jw_kstr(&w, "dashboard_id", d->dashboard_id);
    jw_key(&w, "data");
    jw_obj_open(&w);
    for (int i = 0; i < d->n; i++) {
        const struct cm_wout *o = &ds->out[i];
        jw_key(&w, d->w[i].widget_id);
        jw_obj_open(&w);
        jw_kstr(&w, "widget_id", d->w[i].widget_id);
        jw_key(&w, "data");
        if (o->status == 0)
            jw_raw(&w, o->data);
        else
            jw_null(&w);
        jw_kstr(&w, "status", o->status == 0 ? "success" : "error");
        if (o->status != 0)
            jw_kstr(&w, "error_message", o->error);
        jw_kstr(&w, "cache_status", o->cache_status);
        jw_kiso(&w, "computed_at", o->computed_at);
        jw_obj_close(&w);
    }
    jw_obj_close(&w);
    jw_kiso(&w, "last_updated", last);
    jw_kiso(&w, "next_refresh", next);
    jw_obj_close(&w);
    return cm_ok_end(h, &w);
}

static void data_work(struct hctx *h)
{
    struct data_state *ds = h->state;
    for (int i = 0; i < ds->d->n; i++)
        if (ds->out[i].evaluate)
            cm_widget_eval(h->db, h->tenant_id, &ds->d->w[i], ds->now, h->arena, &ds->out[i]);
}

static int data_done(struct hctx *h)
{
    struct data_state *ds = h->state;
    for (int i = 0; i < ds->d->n; i++) {
        const struct cm_wout *o = &ds->out[i];
        if (o->evaluate && o->status == 0)
            cache_put(ckey(h->arena, h->tenant_id, ds->d->dashboard_id, ds->d->w[i].widget_id),
                      &ds->d->w[i], ds->gen, o);
    }
    return data_write(h, ds);
}

/* Serves the widget from the cache when its entry is still within the refresh interval. */
static void data_from_cache(struct hctx *h, struct data_state *ds, int i, bool force)
{
    const struct cm_wdef *wd = &ds->d->w[i];
    struct cm_wout *o = &ds->out[i];
    struct centry *e =
        force ? NULL : cache_find(ckey(h->arena, h->tenant_id, ds->d->dashboard_id, wd->widget_id));
    o->cache_status = "miss";
    o->evaluate = true;
    if (e == NULL || strcmp(e->config, wd->configuration) || e->refresh_s != wd->refresh_s ||
        ds->now - e->computed_at >= (int64_t)wd->refresh_s * 1000)
        return;
    o->evaluate = false;
    o->cache_status = e->gen == ds->gen ? "hit" : "stale";
    o->data = arena_strdup(h->arena, e->data); /* entries may go before the response does */
    o->fp = e->fp;
    o->computed_at = e->computed_at;
}

static int data_route(struct hctx *h)
{
    struct cm_query q;
    bool force;
    int r = cm_query_parse(h, &q);
    if (r == 0)
        r = cm_param_bool(h, &q, "refresh", false, &force);
    struct data_state *ds = arena_calloc(h->arena, sizeof(*ds));
    if (r == 0)
        r = dash_find(h, &ds->d);
    if (r < 0)
        return r;
    ds->now = clock_now_ms();
    ds->gen = tgen_get(h->tenant_id);
    bool any = false;
    for (int i = 0; i < ds->d->n; i++) {
        data_from_cache(h, ds, i, force);
        any |= ds->out[i].evaluate;
    }
    h->state = ds;
    if (!any)
        return data_write(h, ds);
    return api_defer_to_pool(h, data_work, data_done);
}

/* ---------- create, update, delete ---------- */

int cm__ferr(struct hctx *h, const char *field, const char *msg, const json_t *v)
{
    field_error_add(h, field, msg, v);
    return -1;
}

/* An optional string member: 0 (ret untouched when absent), -1 after recording the error. */
int cm__opt_string(struct hctx *h, const json_t *o, const char *prefix, const char *name,
                      size_t min, size_t max, const char **ret)
{
    json_t *v = json_object_get(o, name);
    const char *field = prefix ? arena_printf(h->arena, "%s.%s", prefix, name) : name;
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return cm__ferr(h, field, arena_printf(h->arena, "%s must be a string", field), v);
    size_t n = json_string_length(v);
    if (n < min || n > max || strlen(json_string_value(v)) != n)
        return cm__ferr(h, field,
                    arena_printf(h->arena, "%s must be %zu to %zu characters", field, min, max), v);
    *ret = arena_strdup(h->arena, json_string_value(v));
    return 0;
}

int cm__req_string(struct hctx *h, const json_t *o, const char *prefix, const char *name,
                      size_t max, const char **ret)
{
    if (json_object_get(o, name) == NULL) {
        const char *field = prefix ? arena_printf(h->arena, "%s.%s", prefix, name) : name;
        return cm__ferr(h, field, arena_printf(h->arena, "%s is required", field), NULL);
    }
    return cm__opt_string(h, o, prefix, name, 1, max, ret);
}

static int int_member(struct hctx *h, const json_t *o, const char *field, int min, int max,
                      int *ret)
{
    json_t *v = json_object_get(o, strrchr(field, '.') ? strrchr(field, '.') + 1 : field);
    if (v == NULL)
        return cm__ferr(h, field, arena_printf(h->arena, "%s is required", field), NULL);
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return cm__ferr(h, field,
                    arena_printf(h->arena, "%s must be an integer in %d..%d", field, min, max), v);
    *ret = (int)json_integer_value(v);
    return 0;
}

static void position_parse(struct hctx *h, const json_t *wj, const char *p, struct cm_wdef *w)
{
    json_t *pos = json_object_get(wj, "position");
    const char *field = arena_printf(h->arena, "%s.position", p);
    if (!json_is_object(pos)) {
        cm__ferr(h, field, pos ? "position must be an object {x, y, w, h}" : "position is required",
             pos);
        return;
    }
    int_member(h, pos, arena_printf(h->arena, "%s.x", field), 0, POS_MAX, &w->x);
    int_member(h, pos, arena_printf(h->arena, "%s.y", field), 0, POS_MAX, &w->y);
    int_member(h, pos, arena_printf(h->arena, "%s.w", field), 1, POS_MAX, &w->w);
    int_member(h, pos, arena_printf(h->arena, "%s.h", field), 1, POS_MAX, &w->h);
}

/* group_by: which widgets may split their figure, and by what. */
static void group_by_check(struct hctx *h, const json_t *cfg, const char *p, const char *type)
{
    json_t *gb = json_object_get(cfg, "group_by");
    const char *field = arena_printf(h->arena, "%s.configuration.group_by", p);
    const char *metric = json_string_value(json_object_get(cfg, "metric_type"));
    if (gb == NULL || json_is_null(gb))
        return;
    if (!cm__one_of(json_string_value(gb), group_dims))
        cm__ferr(h, field, "group_by must be one of region, channel, currency", gb);
    else if (!cm__one_of(type, (const char *const[]){"bar_chart", "pie_chart", "map", "table", NULL}))
        cm__ferr(h, field, "group_by is for bar_chart, pie_chart, map and table widgets", gb);
    else if (metric && !cm__one_of(metric, order_metrics))
        cm__ferr(h, field, "group_by splits order metrics (revenue, transactions, customers, "
                       "average_order_value)", gb);
}

/* A metric query (a widget's configuration, an alert rule's query) as the metric engine reads
 * it; its error is recorded under field ("widgets[2].configuration" + ".metric_type"). A
 * widget's group_by is its own member, not the engine's. */
void cm__query_check(struct hctx *h, const json_t *obj, const char *field)
{
    json_t *qo = json_copy((json_t *)obj);
    json_object_del(qo, "group_by");
    struct cm_metric_query q;
    const char *f = NULL, *msg = NULL;
    if (cm_metric_query_from_json(qo, clock_now_ms(), h->arena, &q, &f, &msg) < 0) {
        json_t *bad = f ? json_object_get(obj, f) : NULL;
        cm__ferr(h, f ? arena_printf(h->arena, "%s.%s", field, f) : field,
                 msg ? msg : "not a valid metric query", bad);
    }
    json_decref(qo);
}

static void config_parse(struct hctx *h, const json_t *wj, const char *p, struct cm_wdef *w)
{
    json_t *cfg = json_object_get(wj, "configuration");
    const char *field = arena_printf(h->arena, "%s.configuration", p);
    if (!json_is_object(cfg)) {
        cm__ferr(h, field, cfg ? "configuration must be a metric query object" : "configuration is required", cfg);
        return;
    }
    char *text = json_dumps(cfg, JSON_COMPACT);
    if (text == NULL || strlen(text) > CONFIG_MAX) {
        cm__ferr(h, field, arena_printf(h->arena, "configuration is larger than %d bytes", CONFIG_MAX), NULL);
        free(text);
        return;
    }
    w->configuration = arena_strdup(h->arena, text);
    free(text);
    group_by_check(h, cfg, p, w->type);
    cm__query_check(h, cfg, field);
}

static void widget_parse(struct hctx *h, const json_t *wj, size_t i, struct cm_wdef *w)
{
    const char *p = arena_printf(h->arena, "widgets[%zu]", i);
    if (!json_is_object(wj)) {
        cm__ferr(h, p, "a widget must be an object", wj);
        return;
    }
    w->widget_id = NULL;
    if (cm__opt_string(h, wj, p, "widget_id", 1, CM_ID_MAX, &w->widget_id) == 0 && w->widget_id &&
        !cm__id_ok(w->widget_id))
        cm__ferr(h, arena_printf(h->arena, "%s.widget_id", p),
             "widget_id may use letters, digits, '-', '_' and '.'", json_object_get(wj, "widget_id"));
    if (cm__req_string(h, wj, p, "type", 32, &w->type) == 0 && w->type && !cm__one_of(w->type, widget_types)) {
        cm__ferr(h, arena_printf(h->arena, "%s.type", p),
             "type must be one of metric_card, line_chart, bar_chart, pie_chart, table, map",
             json_object_get(wj, "type"));
        w->type = NULL;
    }
    cm__req_string(h, wj, p, "title", NAME_MAX_LEN, &w->title);
    position_parse(h, wj, p, w);
    w->refresh_s = REFRESH_DEFAULT_S;
    if (json_object_get(wj, "refresh_interval"))
        int_member(h, wj, arena_printf(h->arena, "%s.refresh_interval", p), REFRESH_MIN_S,
                   REFRESH_MAX_S, &w->refresh_s);
    config_parse(h, wj, p, w);
}

/* widget ids: the given ones must be unique; the others get one. */
static void widget_ids(struct hctx *h, struct cm_ddef *d, const json_t *arr)
{
    for (int i = 0; i < d->n; i++) {
        for (int j = 0; j < i && d->w[i].widget_id; j++) {
            if (d->w[j].widget_id && !strcmp(d->w[i].widget_id, d->w[j].widget_id)) {
                json_t *wj = json_array_get(arr, (size_t)i);
                cm__ferr(h, arena_printf(h->arena, "widgets[%d].widget_id", i),
                     "widget_id repeats an earlier widget's", json_object_get(wj, "widget_id"));
                break;
            }
        }
    }
    for (int i = 0; i < d->n; i++) {
        if (d->w[i].widget_id == NULL) {
            char id[UUID_STR_LEN];
            id_uuid7(id);
            d->w[i].widget_id = arena_strdup(h->arena, id);
        }
    }
}

static void widgets_parse(struct hctx *h, struct cm_ddef *d, const json_t *arr)
{
    if (!json_is_array(arr)) {
        cm__ferr(h, "widgets", "widgets must be an array", arr);
        return;
    }
    if (json_array_size(arr) > CM_WIDGETS_MAX) {
        cm__ferr(h, "widgets", arena_printf(h->arena, "at most %d widgets", CM_WIDGETS_MAX), NULL);
        return;
    }
    d->n = (int)json_array_size(arr);
    for (int i = 0; i < d->n; i++) {
        memset(&d->w[i], 0, sizeof(d->w[i]));
        widget_parse(h, json_array_get(arr, (size_t)i), (size_t)i, &d->w[i]);
    }
    widget_ids(h, d, arr);
}

/* Applies the body to d: on create every required field; on update the fields given. */
static int body_parse(struct hctx *h, struct cm_ddef *d, bool create)
{
    const json_t *b = h->body;
    if (create)
        cm__req_string(h, b, NULL, "name", NAME_MAX_LEN, &d->name);
    else
        cm__opt_string(h, b, NULL, "name", 1, NAME_MAX_LEN, &d->name);
    cm__opt_string(h, b, NULL, "description", 0, DESC_MAX_LEN, &d->description);
    const char *cat = d->category;
    if ((create ? cm__req_string(h, b, NULL, "category", 32, &cat)
                : cm__opt_string(h, b, NULL, "category", 1, 32, &cat)) == 0 && cat) {
        if (cm__one_of(cat, categories))
            d->category = cat;
        else
            cm__ferr(h, "category", "category must be one of executive, operations, finance, marketing",
                 json_object_get(b, "category"));
    }
    json_t *pub = json_object_get(b, "is_public");
    if (pub && !json_is_boolean(pub))
        cm__ferr(h, "is_public", "is_public must be true or false", pub);
    else if (pub)
        d->is_public = json_is_true(pub);
    json_t *widgets = json_object_get(b, "widgets");
    if (widgets)
        widgets_parse(h, d, widgets);
    if (h->nferrs > 0) {
        h->err_message = "Request validation failed";
        return TS_E_VALIDATION;
    }
    return 0;
}

int cm__step_ok(sqlite3_stmt *q)
{
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

static int widgets_store(struct hctx *h, const struct cm_ddef *d)
{
    struct db *db = h->app->db;
    sqlite3_stmt *q = db_stmt(db, SQL_WIDGETS_DELETE);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, d->dashboard_id, -1, SQLITE_STATIC);
    int r = cm__step_ok(q);
    for (int i = 0; i < d->n && r == 0; i++) {
        const struct cm_wdef *w = &d->w[i];
        q = db_stmt(db, SQL_WIDGET_INSERT);
        sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, d->dashboard_id, -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 3, i);
        sqlite3_bind_text(q, 4, w->widget_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 5, w->type, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 6, w->title, -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 7, w->x);
        sqlite3_bind_int(q, 8, w->y);
        sqlite3_bind_int(q, 9, w->w);
        sqlite3_bind_int(q, 10, w->h);
        sqlite3_bind_text(q, 11, w->configuration, -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 12, w->refresh_s);
        r = cm__step_ok(q);
    }
    return r;
}

static int dash_store(struct hctx *h, const struct cm_ddef *d, bool create, bool widgets)
{
    sqlite3_stmt *q = db_stmt(h->app->db, create ? SQL_DASH_INSERT : SQL_DASH_UPDATE);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, d->dashboard_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, d->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, d->description ? d->description : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, d->category, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 6, d->is_public);
    if (create) {
        sqlite3_bind_text(q, 7, h->user_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 8, d->created_at);
    } else {
        sqlite3_bind_int64(q, 7, d->updated_at);
    }
    int r = cm__step_ok(q);
    return r == 0 && widgets ? widgets_store(h, d) : r;
}

static int dash_answer(struct hctx *h, const char *id)
{
    struct cm_ddef *d;
    int r = cm_ddef_load(h->app->db, h->arena, h->tenant_id, id, &d);
    if (r < 0)
        return r;
    struct jw w;
    cm_ok_begin(h, &w);
    cm_dash_json(&w, d);
    return cm_ok_end(h, &w);
}

static int create_route(struct hctx *h)
{
    struct cm_ddef *d = arena_calloc(h->arena, sizeof(*d));
    int r = body_parse(h, d, true);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_DASH_COUNT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    int64_t n = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    sqlite3_reset(q);
    if (n >= DASHBOARDS_MAX)
        return fail(h, TS_E_UNPROCESSABLE, NULL,
                    arena_printf(h->arena, "a tenant has at most %d dashboards", DASHBOARDS_MAX));
    char id[UUID_STR_LEN];
    id_uuid7(id);
    d->dashboard_id = arena_strdup(h->arena, id);
    d->created_at = d->updated_at = clock_now_ms();
    r = db_write_begin(h->app->db);
    if (r == 0)
        r = dash_store(h, d, true, true);
    if (r < 0)
        return r;
    h->status = 201;
    h->audit_target = d->dashboard_id;
    return dash_answer(h, d->dashboard_id);
}

static int update_route(struct hctx *h)
{
    struct cm_ddef *d;
    int r = dash_find(h, &d);
    if (r < 0)
        return r;
    r = body_parse(h, d, false);
    if (r < 0)
        return r;
    d->updated_at = clock_now_ms();
    r = db_write_begin(h->app->db);
    if (r == 0)
        r = dash_store(h, d, false, json_object_get(h->body, "widgets") != NULL);
    if (r == 0)
        r = dash_answer(h, d->dashboard_id);
    if (r == 0)
        dashboard_changed(h->tenant_id, d->dashboard_id);
    return r;
}

static int delete_route(struct hctx *h)
{
    struct cm_ddef *d;
    int r = dash_find(h, &d);
    if (r == 0)
        r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_WIDGETS_DELETE);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, d->dashboard_id, -1, SQLITE_STATIC);
    r = cm__step_ok(q);
    q = db_stmt(h->app->db, SQL_DASH_DELETE);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, d->dashboard_id, -1, SQLITE_STATIC);
    if (r == 0)
        r = cm__step_ok(q);
    if (r < 0)
        return r;
    cache_drop_dashboard(h->tenant_id, d->dashboard_id);
    char name[CHANNEL_NAME_MAX];
    channel_name(name, sizeof(name), h->tenant_id, d->dashboard_id);
    struct channel *c = channel_find(name);
    if (c)
        channel_gone(c);
    h->status = 204;
    return 0;
}

static int get_route(struct hctx *h)
{
    struct cm_ddef *d;
    int r = dash_find(h, &d);
    if (r < 0)
        return r;
    struct jw w;
    cm_ok_begin(h, &w);
    cm_dash_json(&w, d);
    return cm_ok_end(h, &w);
}

static int list_route(struct hctx *h)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_DASH_LIST);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 2, caller_is_admin(h));
    sqlite3_bind_text(q, 3, h->user_id, -1, SQLITE_STATIC);
    int n = 0;
    const char **ids = arena_alloc(h->arena, sizeof(*ids) * DASHBOARDS_MAX);
    while (n < DASHBOARDS_MAX && sqlite3_step(q) == SQLITE_ROW)
        ids[n++] = arena_strdup(h->arena, col_text(q, 0));
    sqlite3_reset(q);
    struct jw w;
    cm_ok_begin(h, &w);
    jw_obj_open(&w);
    jw_key(&w, "dashboards");
    jw_arr_open(&w);
    for (int i = 0; i < n; i++) {
        struct cm_ddef *d;
        if (cm_ddef_load(h->app->db, h->arena, h->tenant_id, ids[i], &d) == 0)
            cm_dash_json(&w, d);
    }
    jw_arr_close(&w);
    jw_obj_close(&w);
    return cm_ok_end(h, &w);
}

/* ---------- start, stop, routes ---------- */

void cm_dashboards_start(struct app *app)
{
    st.app = app;
    uv_timer_init(app->loop, &st.timer);
    st.started = true;
}

void cm_dashboards_stop(void)
{
    if (!st.started)
        return;
    st.started = false;
    uv_timer_stop(&st.timer);
    uv_close((uv_handle_t *)&st.timer, NULL);
    while (st.channels)
        channel_free(st.channels);
    cache_clear();
    while (tgens) {
        struct tgen *t = tgens;
        tgens = t->next;
        free(t);
    }
}

static const struct route routes[] = {
    {"GET", "/api/v1/dashboards", list_route, "commerce.read", "commerce", RUN_LOOP, 0, 0},
    {"POST", "/api/v1/dashboards", create_route, "commerce.dashboards", "commerce", RUN_LOOP, 0,
     RF_JSON_BODY},
    {"GET", "/api/v1/dashboards/{dashboard_id}", get_route, "commerce.read", "commerce", RUN_LOOP,
     0, 0},
    {"PUT", "/api/v1/dashboards/{dashboard_id}", update_route, "commerce.dashboards", "commerce",
     RUN_LOOP, 0, RF_JSON_BODY},
    {"DELETE", "/api/v1/dashboards/{dashboard_id}", delete_route, "commerce.dashboards",
     "commerce", RUN_LOOP, 0, 0},
    /* on the loop for the widget cache; the widgets it must compute go to the pool */
    {"GET", "/api/v1/dashboards/{dashboard_id}/data", data_route, "commerce.read", "analytics",
     RUN_LOOP, 0, 0},
    {"GET", "/ws/dashboards/{dashboard_id}", ws_route, "commerce.read", "commerce", RUN_LOOP, 0,
     RF_WEBSOCKET},
};

const struct route_table commerce_dashboards_table = {SURF_COMMERCE, routes,
                                                      sizeof(routes) / sizeof(routes[0])};
