/* commerce.md section 2.1: the metric engine (metrics.h) and GET /api/v1/analytics/metrics.
 * Every figure is added up from the ingested records by rollup.c (rollup rows of clean days,
 * base rows for the rest); the definitions are in README.md "### Metrics and rollups".
 *
 * Time: the figures cover exactly [start, end). Buckets are the calendar periods (hours, days,
 * ISO weeks from Monday, months, quarters) of the query's time zone (UTC by default) that
 * intersect the range, each labelled with the period's start in UTC; the first and last may
 * be partial. Aggregations that look inside a bucket (transactions avg/min/max, the min/max
 * of average_order_value and conversion, inventory avg/min/max) do so per day of the bucket in
 * that time zone (per bucket for hourly). */
#include "surfaces/commerce/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "core/err.h"
#include "engines/tzif.h"
#include "surfaces/commerce/common.h"
#include "surfaces/commerce/rfm.h"
#include "surfaces/commerce/rollup.h"

#define MINUTE_MS 60000LL
#define FILTER_VALUE_MAX 100
#define WINDOW_MAX_MS (3653 * CM_DAY_MS)

/* ---- names and what goes with what ---- */

enum metric { M_REVENUE, M_TRANSACTIONS, M_CUSTOMERS, M_INVENTORY, M_CONVERSION, M_AOV, M_N };
enum gran { G_HOURLY, G_DAILY, G_WEEKLY, G_MONTHLY, G_QUARTERLY, G_N };
enum agg { A_SUM, A_AVG, A_COUNT, A_MIN, A_MAX, A_N };

static const char *const METRICS[M_N] = {"revenue", "transactions", "customers", "inventory",
                                         "conversion", "average_order_value"};
static const char *const GRANS[G_N] = {"hourly", "daily", "weekly", "monthly", "quarterly"};
static const char *const AGGS[A_N] = {"sum", "avg", "count", "min", "max"};

#define AG(x) (1u << (x))
#define AG_ALL (AG(A_SUM) | AG(A_AVG) | AG(A_COUNT) | AG(A_MIN) | AG(A_MAX))
/* the aggregations each metric defines (README), and the one used when none is given */
static const unsigned AGG_OK[M_N] = {
    AG_ALL, AG_ALL, AG(A_SUM) | AG(A_COUNT), AG_ALL, AG_ALL, AG(A_AVG) | AG(A_MIN) | AG(A_MAX)};
static const enum agg AGG_DEFAULT[M_N] = {A_SUM, A_COUNT, A_COUNT, A_SUM, A_AVG, A_AVG};

/* the filters each metric takes: region/channel/currency and segments describe orders,
 * categories products; web events carry none of them */
enum { F_DIMS = 1, F_CAT = 2, F_SEG = 4 };
static const unsigned FILTERS_OK[M_N] = {F_DIMS | F_CAT | F_SEG, F_DIMS | F_CAT | F_SEG,
                                         F_DIMS | F_CAT | F_SEG, F_CAT, 0,
                                         F_DIMS | F_CAT | F_SEG};

/* the longest range per granularity, in days */
static const int64_t SPAN_MAX_DAYS[G_N] = {31, 1096, 3653, 3653, 3653};

/* additional_metrics of each point */
static const char *const EXTRA[M_N][2] = {
    {"orders", "average_order_value"}, {"revenue", "average_order_value"}, {"orders", "revenue"},
    {"snapshots", "change"},           {"sessions", "converted_sessions"}, {"orders", "revenue"}};

static int name_index(const char *const *names, int n, const char *s)
{
    for (int i = 0; s && i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

/* ---- checking ---- */

static int bad(const char **field, const char **message, const char *f, const char *m)
{
    *field = f;
    *message = m;
    return -1;
}

static bool currency_valid(const char *c)
{
    return strlen(c) == 3 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' &&
           c[2] >= 'A' && c[2] <= 'Z';
}

static int check_list(const char *const *v, int n, const char *field, struct arena *a,
                      const char **ret_field, const char **ret_message)
{
    if (n < 0 || n > CM_FILTER_MAX)
        return bad(ret_field, ret_message, field,
                   arena_printf(a, "%s takes at most %d values", field, CM_FILTER_MAX));
    for (int i = 0; i < n; i++)
        if (v[i] == NULL || !v[i][0] || strlen(v[i]) > FILTER_VALUE_MAX)
            return bad(ret_field, ret_message, field,
                       arena_printf(a, "each %s value is 1 to %d characters", field,
                                    FILTER_VALUE_MAX));
    return 0;
}

static int check_filters(const struct cm_metric_query *q, int m, struct arena *a,
                         const char **field, const char **message)
{
    struct { const char *const *v; int n; const char *name; unsigned kind; } lists[] = {
        {q->categories, q->ncategories, "filters.product_category", F_CAT},
        {q->segments, q->nsegments, "filters.customer_segment", F_SEG},
        {q->regions, q->nregions, "filters.region", F_DIMS},
        {q->channels, q->nchannels, "filters.channel", F_DIMS},
    };
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        if (check_list(lists[i].v, lists[i].n, lists[i].name, a, field, message) < 0)
            return -1;
        if (lists[i].n > 0 && !(FILTERS_OK[m] & lists[i].kind))
            return bad(field, message, lists[i].name,
                       arena_printf(a, "%s does not apply to %s", lists[i].name, METRICS[m]));
    }
    for (int i = 0; i < q->nsegments; i++)
        if (!cm_rfm_segment_known(q->segments[i]))
            return bad(field, message, "filters.customer_segment",
                       arena_printf(a, "unknown customer segment '%s' (champions, loyal, new, "
                                       "potential, need_attention, at_risk, hibernating)",
                                    q->segments[i]));
    if (q->currency && !currency_valid(q->currency))
        return bad(field, message, "filters.currency",
                   "filters.currency must be an ISO 4217 code such as EUR");
    if (q->currency && !(FILTERS_OK[m] & F_DIMS))
        return bad(field, message, "filters.currency",
                   arena_printf(a, "filters.currency does not apply to %s", METRICS[m]));
    return 0;
}

static int check_time(const struct cm_metric_query *q, int g, struct arena *a,
                      const char **field, const char **message)
{
    if (q->end_ms <= q->start_ms)
        return bad(field, message, "time_range", "time_range.end must be after time_range.start");
    if (q->end_ms - q->start_ms > SPAN_MAX_DAYS[g] * CM_DAY_MS)
        return bad(field, message, "time_range",
                   arena_printf(a, "a %s query spans at most %lld days", GRANS[g],
                                (long long)SPAN_MAX_DAYS[g]));
    /* the comparison period reaches as far back again */
    if (q->start_ms < INT64_MIN / 4 || q->end_ms > INT64_MAX / 4)
        return bad(field, message, "time_range", "time_range is out of range");
    if (q->timezone) {
        if (!tzif_name_valid(q->timezone))
            return bad(field, message, "timezone",
                       "timezone must be an IANA time zone name such as Europe/Berlin");
        struct tzif *z = arena_alloc(a, sizeof(*z));
        if (tzif_load(q->timezone, z) < 0)
            return bad(field, message, "timezone", "timezone is not a known time zone");
    }
    return 0;
}

int cm_metric_query_check(const struct cm_metric_query *q, struct arena *a, const char **field,
                          const char **message)
{
    int m = name_index(METRICS, M_N, q->metric_type);
    int g = name_index(GRANS, G_N, q->granularity);
    if (q->metric_type == NULL)
        return bad(field, message, "metric_type", "metric_type is required");
    if (m < 0)
        return bad(field, message, "metric_type",
                   "metric_type must be one of revenue, transactions, customers, inventory, "
                   "conversion, average_order_value");
    if (g < 0)
        return bad(field, message, "granularity",
                   "granularity must be one of hourly, daily, weekly, monthly, quarterly");
    if (q->aggregation) {
        int ag = name_index(AGGS, A_N, q->aggregation);
        if (ag < 0)
            return bad(field, message, "aggregation",
                       "aggregation must be one of sum, avg, count, min, max");
        if (!(AGG_OK[m] & AG(ag)))
            return bad(field, message, "aggregation",
                       arena_printf(a, "aggregation %s is not defined for %s", AGGS[ag],
                                    METRICS[m]));
    }
    if (check_filters(q, m, a, field, message) < 0)
        return -1;
    return check_time(q, g, a, field, message);
}

/* ---- from a JSON object (widgets, alert rules) ---- */

/* "24h", "7d", "30m", "4w" */
static bool window_parse(const char *s, int64_t *ret_ms)
{
    char *end = NULL;
    if (s == NULL || s[0] < '0' || s[0] > '9')
        return false;
    long long n = strtoll(s, &end, 10);
    int64_t unit = 0;
    if (end && end[0] && !end[1])
        unit = end[0] == 'm' ? MINUTE_MS : end[0] == 'h' ? CM_HOUR_MS
             : end[0] == 'd' ? CM_DAY_MS : end[0] == 'w' ? 7 * CM_DAY_MS : 0;
    if (unit == 0 || n <= 0 || n > WINDOW_MAX_MS / unit)
        return false;
    *ret_ms = (int64_t)n * unit;
    return true;
}

/* A string member (absent or null: NULL). -1 when present and not a string. */
static int json_str(const json_t *obj, const char *key, const char **ret)
{
    const json_t *v = json_object_get(obj, key);
    *ret = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    *ret = json_string_value(v);
    return 0;
}

/* A list member: an array of strings, or one string. */
static int json_list(const json_t *obj, const char *key, const char **out, int *n)
{
    const json_t *v = json_object_get(obj, key);
    *n = 0;
    if (v == NULL || json_is_null(v))
        return 0;
    if (json_is_string(v)) {
        out[(*n)++] = json_string_value(v);
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) > CM_FILTER_MAX)
        return -1;
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_string(e))
            return -1;
        out[(*n)++] = json_string_value(e);
    }
    return 0;
}

static int json_filters(const json_t *obj, struct cm_metric_query *q, struct arena *a,
                        const char **field, const char **message)
{
    const json_t *f = json_object_get(obj, "filters");
    if (f == NULL || json_is_null(f))
        return 0;
    if (!json_is_object(f))
        return bad(field, message, "filters", "filters must be an object");
    struct { const char *key; const char **out; int *n; } lists[] = {
        {"product_category", q->categories, &q->ncategories},
        {"customer_segment", q->segments, &q->nsegments},
        {"region", q->regions, &q->nregions},
        {"channel", q->channels, &q->nchannels},
    };
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        if (json_list(f, lists[i].key, lists[i].out, lists[i].n) < 0)
            return bad(field, message, arena_printf(a, "filters.%s", lists[i].key),
                       arena_printf(a, "filters.%s must be a list of at most %d strings",
                                    lists[i].key, CM_FILTER_MAX));
    if (json_str(f, "currency", &q->currency) < 0)
        return bad(field, message, "filters.currency", "filters.currency must be a string");
    return 0;
}

static int json_time(const json_t *obj, int64_t now_ms, struct cm_metric_query *q,
                     const char **field, const char **message)
{
    const char *window, *start, *end;
    const json_t *tr = json_object_get(obj, "time_range");
    if (json_str(obj, "time_window", &window) < 0)
        return bad(field, message, "time_window", "time_window must be a string such as 24h");
    if (window) {
        int64_t len;
        if (!window_parse(window, &len))
            return bad(field, message, "time_window",
                       "time_window is a count and a unit m, h, d or w, such as 24h or 7d");
        q->start_ms = now_ms - len;
        q->end_ms = now_ms;
        return 0;
    }
    if (!json_is_object(tr))
        return bad(field, message, "time_range", "time_window or time_range is required");
    if (json_str(tr, "start", &start) < 0 || start == NULL ||
        clock_parse_iso8601(start, &q->start_ms) < 0)
        return bad(field, message, "time_range.start",
                   "time_range.start must be an ISO 8601 date-time");
    if (json_str(tr, "end", &end) < 0 || end == NULL || clock_parse_iso8601(end, &q->end_ms) < 0)
        return bad(field, message, "time_range.end", "time_range.end must be an ISO 8601 date-time");
    return 0;
}

int cm_metric_query_from_json(const json_t *obj, int64_t now_ms, struct arena *a,
                              struct cm_metric_query *q, const char **field, const char **message)
{
    memset(q, 0, sizeof(*q));
    if (!json_is_object(obj))
        return bad(field, message, "query", "the metric query must be an object");
    static const char *const keys[] = {"metric_type", "granularity", "aggregation", "timezone"};
    const char **outs[] = {&q->metric_type, &q->granularity, &q->aggregation, &q->timezone};
    for (int i = 0; i < 4; i++)
        if (json_str(obj, keys[i], outs[i]) < 0)
            return bad(field, message, keys[i], arena_printf(a, "%s must be a string", keys[i]));
    if (q->granularity == NULL)
        q->granularity = "daily";
    const json_t *cmp = json_object_get(obj, "include_comparison");
    if (cmp && !json_is_boolean(cmp) && !json_is_null(cmp))
        return bad(field, message, "include_comparison", "include_comparison must be a boolean");
    q->include_comparison = json_is_true(cmp);
    if (json_time(obj, now_ms, q, field, message) < 0 ||
        json_filters(obj, q, a, field, message) < 0)
        return -1;
    return cm_metric_query_check(q, a, field, message);
}

/* ---- time grids ---- */

/* Cells [edge[i], edge[i+1]) for i < n, edge[0] = the range start, edge[n] = its end;
 * label[i] = the start of the calendar period cell i lies in. */
struct grid {
    int n;
    int64_t *edge;
    int64_t *label;
};

struct ctx {
    sqlite3 *db;
    struct arena *a;
    const struct cm_metric_query *q;
    enum metric m;
    enum gran g;
    enum agg ag;
    const struct tzif *z;      /* NULL: UTC */
    struct cm_filter f;
};

static int64_t offset_at(const struct ctx *c, int64_t t)
{
    return c->z ? tzif_offset_ms(c->z, t) : 0;
}

static int64_t local_day(const struct ctx *c, int64_t t)
{
    return cm_floor_div(t + offset_at(c, t), CM_DAY_MS);
}

/* The first instant of a local calendar day (its midnight, or the end of a gap over it). */
static int64_t day_start(const struct ctx *c, int64_t day)
{
    return c->z ? tzif_utc_of_local_ms(c->z, day * CM_DAY_MS) : day * CM_DAY_MS;
}

static int64_t month_first(int64_t day, int months_per_period, int add)
{
    int64_t z = day + 719468, era = (z >= 0 ? z : z - 146096) / 146097, doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    int64_t m = mp < 10 ? mp + 3 : mp - 9, y = yoe + era * 400 + (m <= 2);
    int64_t idx = y * 12 + (m - 1);
    idx = idx - ((idx % months_per_period) + months_per_period) % months_per_period;
    idx += add * months_per_period;
    int64_t yy = cm_floor_div(idx, 12);
    return clock_days_from_civil(yy, (int)(idx - yy * 12) + 1, 1);
}

/* The first day of the period holding day, and of the next period. */
static int64_t period_first(enum gran g, int64_t day)
{
    switch (g) {
    case G_WEEKLY:
        return day - ((day + 3) % 7 + 7) % 7; /* 1970-01-01 was a Thursday */
    case G_MONTHLY:
        return month_first(day, 1, 0);
    case G_QUARTERLY:
        return month_first(day, 3, 0);
    default:
        return day;
    }
}

static int64_t period_next(enum gran g, int64_t first)
{
    switch (g) {
    case G_WEEKLY:
        return first + 7;
    case G_MONTHLY:
        return month_first(first, 1, 1);
    case G_QUARTERLY:
        return month_first(first, 3, 1);
    default:
        return first + 1;
    }
}

static void grid_alloc(struct ctx *c, struct grid *gr, int64_t cap)
{
    gr->n = 0;
    gr->edge = arena_alloc(c->a, (size_t)(cap + 1) * sizeof(int64_t));
    gr->label = arena_alloc(c->a, (size_t)cap * sizeof(int64_t));
}

/* Adds an edge at t (with its label); false when the grid is full. */
static bool grid_cut(struct grid *gr, int64_t cap, int64_t t)
{
    if (t <= gr->edge[gr->n] || gr->n + 1 >= cap)
        return gr->n + 1 < cap;
    gr->n++;
    gr->edge[gr->n] = t;
    gr->label[gr->n] = t;
    return true;
}

static void grid_close(struct grid *gr, int64_t end)
{
    gr->n++;
    gr->edge[gr->n] = end;
}

/* Day-based periods: local midnights of the period starts. */
static int grid_days(struct ctx *c, enum gran g, int64_t start, int64_t end, struct grid *gr)
{
    int64_t cap = (end - start) / (22 * CM_HOUR_MS) + 8;
    grid_alloc(c, gr, cap);
    int64_t p = period_first(g, local_day(c, start));
    gr->edge[0] = start;
    gr->label[0] = day_start(c, p);
    for (;;) {
        p = period_next(g, p);
        int64_t t = day_start(c, p);
        if (t >= end)
            break;
        if (!grid_cut(gr, cap, t))
            return TS_E_INTERNAL;
    }
    grid_close(gr, end);
    return 0;
}

static bool on_local_hour(const struct ctx *c, int64_t t)
{
    return cm_floor_div(t + offset_at(c, t), MINUTE_MS) % 60 == 0;
}

/* Hours: every instant the local clock reads hh:00, found on the minute grid (zones are
 * whole minutes off UTC; a zone that is not gets an edge every two hours at least). */
static int grid_hours(struct ctx *c, int64_t start, int64_t end, struct grid *gr)
{
    int64_t cap = (end - start) / (30 * MINUTE_MS) + 8;
    grid_alloc(c, gr, cap);
    gr->edge[0] = start;
    int64_t t0 = cm_floor_div(start, MINUTE_MS) * MINUTE_MS, last = t0;
    if (c->z == NULL) {
        gr->label[0] = cm_floor_div(start, CM_HOUR_MS) * CM_HOUR_MS;
        for (int64_t t = gr->label[0] + CM_HOUR_MS; t < end; t += CM_HOUR_MS)
            if (!grid_cut(gr, cap, t))
                return TS_E_INTERNAL;
        grid_close(gr, end);
        return 0;
    }
    for (int i = 0; i < 180 && !on_local_hour(c, last); i++)
        last -= MINUTE_MS;
    gr->label[0] = on_local_hour(c, last) ? last : t0;
    last = gr->label[0];
    for (int64_t t = t0 + MINUTE_MS; t < end; t += MINUTE_MS) {
        if (!on_local_hour(c, t) && t - last < 2 * CM_HOUR_MS)
            continue;
        if (!grid_cut(gr, cap, t))
            return TS_E_INTERNAL;
        last = t;
    }
    grid_close(gr, end);
    return 0;
}

static int grid_buckets(struct ctx *c, int64_t start, int64_t end, struct grid *gr)
{
    return c->g == G_HOURLY ? grid_hours(c, start, end, gr) : grid_days(c, c->g, start, end, gr);
}

/* The cells aggregations look inside buckets by: the local days, or the hours themselves. */
static int grid_cells(struct ctx *c, const struct grid *buckets, int64_t start, int64_t end,
                      struct grid *gr)
{
    if (c->g == G_HOURLY) {
        *gr = *buckets;
        return 0;
    }
    return grid_days(c, G_DAILY, start, end, gr);
}

/* first[j] = the first cell of bucket j (first[n] = cells->n); buckets are unions of cells. */
static int *grid_map(struct ctx *c, const struct grid *buckets, const struct grid *cells)
{
    int *first = arena_alloc(c->a, (size_t)(buckets->n + 1) * sizeof(int));
    int i = 0;
    for (int j = 0; j < buckets->n; j++) {
        while (i < cells->n && cells->edge[i] < buckets->edge[j])
            i++;
        first[j] = i;
    }
    first[buckets->n] = cells->n;
    return first;
}

/* ---- one period's series ---- */

struct series {
    int64_t start, end;
    struct grid b;
    double *value, *extra[2];
    double total;
    int64_t records, fresh;
};

static void series_alloc(struct ctx *c, struct series *s)
{
    size_t n = (size_t)s->b.n;
    s->value = arena_calloc(c->a, n * sizeof(double));
    s->extra[0] = arena_calloc(c->a, n * sizeof(double));
    s->extra[1] = arena_calloc(c->a, n * sizeof(double));
}

static double money(int64_t m)
{
    return (double)m / CM_MONEY_SCALE;
}

static double aov(const struct cm_acc *a)
{
    return a->n ? (double)a->sum / (double)a->n / CM_MONEY_SCALE : 0;
}

static double rate(const struct cm_acc *a)
{
    return a->x ? (double)a->y / (double)a->x : 0;
}

/* min or max of f over the cells (those with data when `only_with_data`); 0 when none. */
static double cells_extreme(const struct cm_acc *cells, int n, double (*f)(const struct cm_acc *),
                            bool max, bool only_with_data)
{
    double best = 0;
    bool any = false;
    for (int i = 0; i < n; i++) {
        if (only_with_data && cells[i].n == 0 && cells[i].x == 0)
            continue;
        double v = f(&cells[i]);
        if (!any || (max ? v > best : v < best))
            best = v;
        any = true;
    }
    return best;
}

static double count_n(const struct cm_acc *a)
{
    return (double)a->n;
}

/* An orders metric over one bucket (acc) whose cells are cells[0..n). */
static double orders_value(const struct ctx *c, const struct cm_acc *acc,
                           const struct cm_acc *cells, int n)
{
    switch (c->m) {
    case M_REVENUE:
        return c->ag == A_SUM ? money(acc->sum) : c->ag == A_AVG ? aov(acc)
             : c->ag == A_COUNT ? (double)acc->n : !acc->any ? 0
             : money(c->ag == A_MIN ? acc->min : acc->max);
    case M_TRANSACTIONS:
        if (c->ag == A_AVG)
            return n ? (double)acc->n / n : 0;
        if (c->ag == A_MIN || c->ag == A_MAX)
            return cells_extreme(cells, n, count_n, c->ag == A_MAX, false);
        return (double)acc->n;
    default: /* M_AOV */
        if (c->ag == A_MIN || c->ag == A_MAX)
            return cells_extreme(cells, n, aov, c->ag == A_MAX, true);
        return aov(acc);
    }
}

static void orders_extra(const struct ctx *c, const struct cm_acc *acc, double out[2])
{
    out[0] = c->m == M_TRANSACTIONS ? money(acc->sum) : (double)acc->n;
    out[1] = c->m == M_AOV ? money(acc->sum) : aov(acc);
}

static void fold(const struct cm_acc *cells, int from, int to, struct cm_acc *ret)
{
    memset(ret, 0, sizeof(*ret));
    for (int i = from; i < to; i++)
        cm_acc_add(ret, &cells[i]);
}

/* revenue, transactions, average_order_value */
static int eval_orders(struct ctx *c, struct series *s)
{
    struct grid cells;
    int r = grid_cells(c, &s->b, s->start, s->end, &cells);
    if (r < 0)
        return r;
    struct cm_acc *acc = arena_calloc(c->a, (size_t)cells.n * sizeof(*acc)), all;
    r = cm_rollup_read(c->db, CM_SRC_ORDERS, &c->f, cells.edge, cells.n, false, acc);
    if (r < 0)
        return r;
    int *first = grid_map(c, &s->b, &cells);
    for (int j = 0; j < s->b.n; j++) {
        struct cm_acc b;
        fold(acc, first[j], first[j + 1], &b);
        s->value[j] = orders_value(c, &b, acc + first[j], first[j + 1] - first[j]);
        double ex[2];
        orders_extra(c, &b, ex);
        s->extra[0][j] = ex[0];
        s->extra[1][j] = ex[1];
    }
    fold(acc, 0, cells.n, &all);
    s->total = orders_value(c, &all, acc, cells.n);
    s->records = all.n;
    s->fresh = all.fresh;
    return 0;
}

/* distinct counts over each bucket and over the whole range */
static int eval_distinct(struct ctx *c, enum cm_src src, struct series *s, struct cm_acc *ret_all,
                         struct cm_acc **ret_buckets)
{
    struct cm_acc *acc = arena_calloc(c->a, (size_t)s->b.n * sizeof(*acc));
    int64_t whole[2] = {s->start, s->end};
    memset(ret_all, 0, sizeof(*ret_all));
    int r = cm_rollup_read(c->db, src, &c->f, s->b.edge, s->b.n, true, acc);
    if (r == 0)
        r = cm_rollup_read(c->db, src, &c->f, whole, 1, true, ret_all);
    *ret_buckets = acc;
    s->records = ret_all->n;
    s->fresh = ret_all->fresh;
    return r;
}

static int eval_customers(struct ctx *c, struct series *s)
{
    struct cm_acc all, *acc;
    int r = eval_distinct(c, CM_SRC_CUSTOMERS, s, &all, &acc);
    if (r < 0)
        return r;
    for (int j = 0; j < s->b.n; j++) {
        s->value[j] = (double)acc[j].x;
        s->extra[0][j] = (double)acc[j].n;
        s->extra[1][j] = money(acc[j].sum);
    }
    s->total = (double)all.x;
    return 0;
}

static double conversion_value(enum agg ag, const struct cm_acc *a)
{
    return ag == A_COUNT ? (double)a->x : ag == A_SUM ? (double)a->y : rate(a);
}

/* conversion min/max: the lowest/highest daily rate among the days with sessions */
static int conversion_extremes(struct ctx *c, struct series *s)
{
    struct grid cells;
    int r = grid_cells(c, &s->b, s->start, s->end, &cells);
    if (r < 0)
        return r;
    struct cm_acc *acc = arena_calloc(c->a, (size_t)cells.n * sizeof(*acc));
    r = cm_rollup_read(c->db, CM_SRC_EVENTS, &c->f, cells.edge, cells.n, true, acc);
    if (r < 0)
        return r;
    int *first = grid_map(c, &s->b, &cells);
    bool max = c->ag == A_MAX;
    for (int j = 0; j < s->b.n; j++)
        s->value[j] = cells_extreme(acc + first[j], first[j + 1] - first[j], rate, max, true);
    s->total = cells_extreme(acc, cells.n, rate, max, true);
    return 0;
}

static int eval_conversion(struct ctx *c, struct series *s)
{
    struct cm_acc all, *acc;
    int r = eval_distinct(c, CM_SRC_EVENTS, s, &all, &acc);
    if (r < 0)
        return r;
    for (int j = 0; j < s->b.n; j++) {
        s->value[j] = conversion_value(c->ag, &acc[j]);
        s->extra[0][j] = (double)acc[j].x;
        s->extra[1][j] = (double)acc[j].y;
    }
    s->total = conversion_value(c->ag, &all);
    if (c->ag == A_MIN || c->ag == A_MAX)
        return conversion_extremes(c, s);
    return 0;
}

/* An inventory figure over cells [from, to): level[i] = the stock at the end of cell i. */
static double inventory_value(enum agg ag, const double *level, const struct cm_acc *acc,
                              int from, int to)
{
    double v = 0;
    if (to <= from)
        return 0;
    switch (ag) {
    case A_SUM:
        return level[to - 1];
    case A_COUNT:
        for (int i = from; i < to; i++)
            v += (double)acc[i].n;
        return v;
    case A_AVG:
        for (int i = from; i < to; i++)
            v += level[i];
        return v / (to - from);
    default:
        v = level[from];
        for (int i = from; i < to; i++)
            if (ag == A_MIN ? level[i] < v : level[i] > v)
                v = level[i];
        return v;
    }
}

static int eval_inventory(struct ctx *c, struct series *s)
{
    struct grid cells;
    struct cm_acc before = {0}, all;
    int r = grid_cells(c, &s->b, s->start, s->end, &cells);
    if (r == 0)
        r = cm_rollup_inventory_before(c->db, &c->f, s->start, &before);
    struct cm_acc *acc = arena_calloc(c->a, (size_t)cells.n * sizeof(*acc));
    if (r == 0)
        r = cm_rollup_read(c->db, CM_SRC_INVENTORY, &c->f, cells.edge, cells.n, false, acc);
    if (r < 0)
        return r;
    double *level = arena_alloc(c->a, (size_t)cells.n * sizeof(double)), at = (double)before.sum;
    for (int i = 0; i < cells.n; i++)
        level[i] = at += (double)acc[i].sum;
    int *first = grid_map(c, &s->b, &cells);
    for (int j = 0; j < s->b.n; j++) {
        int from = first[j], to = first[j + 1];
        double open = from == 0 ? (double)before.sum : level[from - 1];
        s->value[j] = inventory_value(c->ag, level, acc, from, to);
        s->extra[0][j] = inventory_value(A_COUNT, level, acc, from, to);
        s->extra[1][j] = (to > from ? level[to - 1] : open) - open;
    }
    s->total = inventory_value(c->ag, level, acc, 0, cells.n);
    fold(acc, 0, cells.n, &all);
    cm_acc_add(&all, &before);
    s->records = all.n;
    s->fresh = all.fresh;
    return 0;
}

static int eval_series(struct ctx *c, struct series *s)
{
    int r = grid_buckets(c, s->start, s->end, &s->b);
    if (r < 0)
        return r;
    series_alloc(c, s);
    switch (c->m) {
    case M_CUSTOMERS:
        return eval_customers(c, s);
    case M_CONVERSION:
        return eval_conversion(c, s);
    case M_INVENTORY:
        return eval_inventory(c, s);
    default:
        return eval_orders(c, s);
    }
}

/* ---- the response ---- */

static void iso_key(struct jw *w, const char *k, int64_t ms)
{
    char ts[40];
    clock_iso8601(ms, ms % 1000 != 0, ts, sizeof(ts));
    jw_kstr(w, k, ts);
}

static void write_points(const struct ctx *c, struct jw *w, const struct series *s)
{
    jw_arr_open(w);
    for (int j = 0; j < s->b.n; j++) {
        jw_obj_open(w);
        iso_key(w, "timestamp", s->b.label[j]);
        jw_kdouble(w, "value", s->value[j]);
        jw_key(w, "additional_metrics");
        jw_obj_open(w);
        jw_kdouble(w, EXTRA[c->m][0], s->extra[0][j]);
        jw_kdouble(w, EXTRA[c->m][1], s->extra[1][j]);
        jw_obj_close(w);
        jw_obj_close(w);
    }
    jw_arr_close(w);
}

static double pct_change(double now, double before)
{
    return before != 0 ? (now - before) / fabs(before) * 100.0 : 0;
}

static void write_summary(struct jw *w, const struct series *s, const struct series *prev)
{
    double sum = 0, lo = 0, hi = 0;
    for (int j = 0; j < s->b.n; j++) {
        sum += s->value[j];
        if (j == 0 || s->value[j] < lo)
            lo = s->value[j];
        if (j == 0 || s->value[j] > hi)
            hi = s->value[j];
    }
    jw_key(w, "summary");
    jw_obj_open(w);
    jw_kdouble(w, "total", s->total);
    jw_kdouble(w, "average", s->b.n ? sum / s->b.n : 0);
    jw_kdouble(w, "min", lo);
    jw_kdouble(w, "max", hi);
    jw_kdouble(w, "change_from_previous", s->total - prev->total);
    jw_kdouble(w, "change_percentage", pct_change(s->total, prev->total));
    jw_obj_close(w);
}

static void write_comparison(const struct ctx *c, struct jw *w, const struct series *s,
                             const struct series *prev)
{
    jw_key(w, "comparison");
    jw_obj_open(w);
    jw_key(w, "time_range");
    jw_obj_open(w);
    iso_key(w, "start", prev->start);
    iso_key(w, "end", prev->end);
    jw_obj_close(w);
    jw_key(w, "previous_period");
    write_points(c, w, prev);
    jw_kdouble(w, "previous_total", prev->total);
    jw_kdouble(w, "variance", s->total - prev->total);
    jw_kdouble(w, "variance_percentage", pct_change(s->total, prev->total));
    jw_obj_close(w);
}

static void write_response(const struct ctx *c, struct jw *w, const struct series *s,
                           const struct series *prev, bool cache_hit, uint64_t t0)
{
    const struct cm_metric_query *q = c->q;
    jw_obj_open(w);
    jw_kstr(w, "metric_type", METRICS[c->m]);
    jw_key(w, "time_range");
    jw_obj_open(w);
    iso_key(w, "start", q->start_ms);
    iso_key(w, "end", q->end_ms);
    jw_obj_close(w);
    jw_kstr(w, "granularity", GRANS[c->g]);
    jw_kstr(w, "aggregation", AGGS[c->ag]);
    jw_kstr(w, "timezone", q->timezone ? q->timezone : "UTC");
    jw_key(w, "data");
    write_points(c, w, s);
    write_summary(w, s, prev);
    if (q->include_comparison)
        write_comparison(c, w, s, prev);
    jw_key(w, "metadata");
    jw_obj_open(w);
    jw_kint(w, "total_records", s->records);
    jw_kdouble(w, "query_time_ms", round((double)(clock_mono_ns() - t0) / 1e3) / 1e3);
    jw_kbool(w, "cache_hit", cache_hit);
    jw_kiso(w, "data_freshness", s->fresh);
    jw_obj_close(w);
    jw_obj_close(w);
}

/* ---- evaluation ---- */

/* A JSON array of the strings, or NULL for none. */
static const char *json_of(struct arena *a, const char *const *v, int n)
{
    if (n <= 0)
        return NULL;
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, json_string(v[i]));
    char *s = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    const char *out = s ? arena_strdup(a, s) : "[]";
    free(s);
    return out;
}

static int ctx_init(struct ctx *c, sqlite3 *db, const char *tenant_id,
                    const struct cm_metric_query *q, struct arena *a)
{
    memset(c, 0, sizeof(*c));
    c->db = db;
    c->a = a;
    c->q = q;
    int m = name_index(METRICS, M_N, q->metric_type), g = name_index(GRANS, G_N, q->granularity);
    int ag = m < 0 ? -1 : q->aggregation ? name_index(AGGS, A_N, q->aggregation)
                                         : (int)AGG_DEFAULT[m];
    if (m < 0 || g < 0 || ag < 0)
        return TS_E_VALIDATION;
    c->m = (enum metric)m;
    c->g = (enum gran)g;
    c->ag = (enum agg)ag;
    if (q->timezone) {
        struct tzif *z = arena_alloc(a, sizeof(*z));
        if (tzif_load(q->timezone, z) < 0)
            return TS_E_VALIDATION;
        c->z = z;
    }
    c->f.tenant_id = tenant_id;
    c->f.regions_json = json_of(a, q->regions, q->nregions);
    c->f.channels_json = json_of(a, q->channels, q->nchannels);
    c->f.categories_json = json_of(a, q->categories, q->ncategories);
    c->f.ncategories = q->ncategories;
    c->f.category_one = q->ncategories == 1 ? q->categories[0] : NULL;
    c->f.currency = q->currency;
    c->f.segments = q->nsegments > 0;
    return 0;
}

static int eval_in_snapshot(struct ctx *c, const char *tenant_id, struct series *s,
                            struct series *prev)
{
    const struct cm_metric_query *q = c->q;
    int r = 0;
    if (q->nsegments > 0)
        r = cm_rfm_fill_temp(c->db, tenant_id, clock_now_ms(), q->currency, q->segments,
                             q->nsegments);
    s->start = q->start_ms;
    s->end = q->end_ms;
    prev->start = q->start_ms - (q->end_ms - q->start_ms);
    prev->end = q->start_ms;
    if (r == 0)
        r = eval_series(c, s);
    if (r == 0)
        r = eval_series(c, prev);
    return r;
}

int cm_metric_eval(sqlite3 *db, const char *tenant_id, const struct cm_metric_query *q,
                   bool cache_hit, struct jw *w, struct cm_metric_result *res, char *err,
                   size_t errlen)
{
    uint64_t t0 = clock_mono_ns();
    struct arena *a = arena_new(1 << 16);
    struct ctx c;
    struct series s, prev;
    memset(&s, 0, sizeof(s));
    memset(&prev, 0, sizeof(prev));
    int r = ctx_init(&c, db, tenant_id, q, a);
    if (r < 0)
        snprintf(err, errlen, "the metric query was not checked");
    /* one read transaction: rollup rows and dirty marks of one snapshot */
    if (r == 0 && sqlite3_exec(db, "SAVEPOINT cm_metric", NULL, NULL, NULL) != SQLITE_OK)
        r = TS_E_INTERNAL;
    else if (r == 0) {
        r = eval_in_snapshot(&c, tenant_id, &s, &prev);
        if (r < 0)
            sqlite3_exec(db, "ROLLBACK TO cm_metric", NULL, NULL, NULL);
        sqlite3_exec(db, "RELEASE cm_metric", NULL, NULL, NULL);
        if (r < 0)
            snprintf(err, errlen, "the figures could not be read: %s", err_message(r));
    }
    if (r == 0)
        write_response(&c, w, &s, &prev, cache_hit, t0);
    if (r == 0 && res) {
        res->total = s.total;
        res->latest = s.b.n ? s.value[s.b.n - 1] : 0;
        res->total_records = s.records;
        res->data_freshness_ms = s.fresh;
    }
    arena_free(a);
    return r;
}

/* ---- GET /api/v1/analytics/metrics ---- */

/* A filter list: filters[name]... / filters.name / filters={JSON}, else a bare name. */
static int http_list(struct hctx *h, const struct cm_query *cq, const char *name,
                     const char **out, int *n)
{
    int r = cm_param_list(h, cq, "filters", name, out, CM_FILTER_MAX, n);
    if (r == 0 && *n == 0)
        r = cm_param_list(h, cq, NULL, name, out, CM_FILTER_MAX, n);
    return r;
}

static const char *http_scalar(struct hctx *h, const struct cm_query *cq, const char *name)
{
    const char *v = cm_param(h, cq, NULL, name);
    return v && v[0] ? v : NULL;
}

int cm_metric_query_from_http(struct hctx *h, struct cm_metric_query *q)
{
    struct cm_query *cq = arena_alloc(h->arena, sizeof(*cq));
    memset(q, 0, sizeof(*q));
    int r = cm_query_parse(h, cq);
    if (r < 0)
        return r;
    q->metric_type = http_scalar(h, cq, "metric_type");
    if (q->metric_type == NULL)
        return fail(h, TS_E_VALIDATION, "metric_type", "metric_type is required");
    q->granularity = http_scalar(h, cq, "granularity");
    if (q->granularity == NULL)
        q->granularity = "daily"; /* contract 7.3 */
    q->aggregation = http_scalar(h, cq, "aggregation");
    q->timezone = http_scalar(h, cq, "timezone");
    r = cm_time_range(h, cq, true, 0, &q->start_ms, &q->end_ms);
    if (r == 0)
        r = http_list(h, cq, "product_category", q->categories, &q->ncategories);
    if (r == 0)
        r = http_list(h, cq, "customer_segment", q->segments, &q->nsegments);
    if (r == 0)
        r = http_list(h, cq, "region", q->regions, &q->nregions);
    if (r == 0)
        r = http_list(h, cq, "channel", q->channels, &q->nchannels);
    if (r == 0) {
        q->currency = cm_param(h, cq, "filters", "currency");
        if (q->currency == NULL || !q->currency[0])
            q->currency = http_scalar(h, cq, "currency");
        r = cm_param_bool(h, cq, "include_comparison", false, &q->include_comparison);
    }
    if (r < 0)
        return r;
    const char *field, *message;
    if (cm_metric_query_check(q, h->arena, &field, &message) < 0)
        return fail(h, TS_E_VALIDATION, field, message);
    return 0;
}

/* Pool: parses, checks and evaluates on the worker's read-only connection. */
static int metrics_get(struct hctx *h)
{
    struct cm_metric_query q;
    int r = cm_metric_query_from_http(h, &q);
    if (r < 0)
        return r;
    struct jw w;
    char err[256];
    cm_ok_begin(h, &w);
    r = cm_metric_eval(h->db, h->tenant_id, &q, false, &w, NULL, err, sizeof(err));
    if (r < 0) {
        h->err_message = arena_strdup(h->arena, err);
        return r == TS_E_VALIDATION ? TS_E_INTERNAL : r;
    }
    return cm_ok_end(h, &w);
}

static const struct route routes[] = {
    {"GET", "/api/v1/analytics/metrics", metrics_get, "commerce.read", "analytics", RUN_POOL, 0,
     0},
};

const struct route_table commerce_metrics_table = {SURF_COMMERCE, routes,
                                                   sizeof(routes) / sizeof(routes[0])};
