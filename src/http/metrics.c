/* A Prometheus metrics registry with per-family locks and a text exposition format 0.0.4 writer. */
#include "http/metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAME_LEN 128
#define MAX_HELP_LEN 1024
#define MAX_HOOKS 8
#define TABLE_MIN 16
#define OTHER_VALUE "other"
#define OVERFLOW_NAME "tessera_metrics_series_overflow_total"
#define OVERFLOW_HELP "Observations recorded in a family's \"other\" series (series cap or bad label value)."

/* One label combination. values[] point into the same allocation, after buckets[]. */
struct series {
    struct series *hnext;          /* hash chain */
    struct series *next;           /* first-seen order, for output */
    uint64_t hash;
    double value;                  /* counter, gauge; histogram sum */
    uint64_t count;                /* histogram observations */
    uint64_t *buckets;             /* histogram: nbounds + 1 (+Inf), not cumulative */
    char *values[];
};

struct metric_family {
    struct metric_family *next;
    enum metric_type type;
    char *name, *help;
    int nlabels;
    char *labels[METRICS_MAX_LABELS];
    double bounds[METRICS_MAX_BUCKETS];
    int nbounds;
    metric_gauge_fn fn;            /* callback gauge: value read at scrape time */
    void *fn_arg;

    pthread_mutex_t lock;          /* guards everything below */
    struct series **table;
    size_t tsize, nseries;
    struct series *head, *tail;
    uint64_t overflows;
};

struct collect_hook {
    metrics_collect_fn fn;
    void *arg;
};

struct metrics {
    pthread_mutex_t lock;          /* guards the family list and hooks; held while writing */
    struct metric_family *head, *tail;
    struct collect_hook hooks[MAX_HOOKS];
    int nhooks;
};

const double metrics_latency_buckets[12] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                            0.25,  0.5,   1,    2.5,   5,    10};

/* ---- names and values ---- */

static bool name_char_ok(char c, bool first, bool colon)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
        return true;
    if (c == ':')
        return colon;
    return !first && c >= '0' && c <= '9';
}

static bool name_ok(const char *s, bool colon)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > MAX_NAME_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!name_char_ok(s[i], i == 0, colon))
            return false;
    return true;
}

/* Length of the UTF-8 sequence at s (0 if invalid): no overlongs, surrogates or > U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t left)
{
    unsigned c = s[0];
    size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || n > left)
        return 0;
    unsigned cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    static const unsigned min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

static bool value_ok(const char *v)
{
    if (v == NULL)
        return false;
    size_t n = strnlen(v, METRICS_MAX_VALUE_LEN + 1);
    if (n > METRICS_MAX_VALUE_LEN)
        return false;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const unsigned char *)v + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

static bool values_ok(const struct metric_family *f, const char *const values[])
{
    if (f->nlabels > 0 && values == NULL)
        return false;
    for (int i = 0; i < f->nlabels; i++)
        if (!value_ok(values[i]))
            return false;
    return true;
}

static uint64_t values_hash(const struct metric_family *f, const char *const values[])
{
    uint64_t h = 14695981039346656037ull;
    for (int i = 0; i < f->nlabels; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
            h = (h ^ *p) * 1099511628211ull;
        h = (h ^ 0xFF) * 1099511628211ull;  /* 0xFF never occurs in UTF-8 */
    }
    return h;
}

/* ---- series table ---- */

static struct series *series_alloc(const struct metric_family *f, const char *const values[],
                                   uint64_t hash)
{
    size_t off = sizeof(struct series) + (size_t)f->nlabels * sizeof(char *);
    off = (off + alignof(uint64_t) - 1) & ~(alignof(uint64_t) - 1);
    size_t nb = f->type == METRIC_HISTOGRAM ? (size_t)f->nbounds + 1 : 0;
    size_t size = off + nb * sizeof(uint64_t);
    for (int i = 0; i < f->nlabels; i++)
        size += strlen(values[i]) + 1;
    struct series *s = calloc(1, size);
    if (s == NULL)
        return NULL;
    s->hash = hash;
    s->buckets = nb ? (uint64_t *)((char *)s + off) : NULL;
    char *p = (char *)s + off + nb * sizeof(uint64_t);
    for (int i = 0; i < f->nlabels; i++) {
        size_t n = strlen(values[i]) + 1;
        s->values[i] = memcpy(p, values[i], n);
        p += n;
    }
    return s;
}

static struct series *table_find(const struct metric_family *f, const char *const values[],
                                 uint64_t hash)
{
    if (f->table == NULL)
        return NULL;
    for (struct series *s = f->table[hash & (f->tsize - 1)]; s; s = s->hnext) {
        if (s->hash != hash)
            continue;
        int i = 0;
        while (i < f->nlabels && strcmp(s->values[i], values[i]) == 0)
            i++;
        if (i == f->nlabels)
            return s;
    }
    return NULL;
}

static int table_grow(struct metric_family *f)
{
    size_t n = f->tsize ? f->tsize * 2 : TABLE_MIN;
    struct series **t = calloc(n, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    for (struct series *s = f->head; s; s = s->next) {
        s->hnext = t[s->hash & (n - 1)];
        t[s->hash & (n - 1)] = s;
    }
    free(f->table);
    f->table = t;
    f->tsize = n;
    return 0;
}

static struct series *table_add(struct metric_family *f, const char *const values[], uint64_t hash)
{
    if (f->nseries >= f->tsize && table_grow(f) < 0)
        return NULL;
    struct series *s = series_alloc(f, values, hash);
    if (s == NULL)
        return NULL;
    s->hnext = f->table[hash & (f->tsize - 1)];
    f->table[hash & (f->tsize - 1)] = s;
    if (f->tail)
        f->tail->next = s;
    else
        f->head = s;
    f->tail = s;
    f->nseries++;
    return s;
}

/* The all-"other" series; it lives in the table, so it can never duplicate a real one. */
static struct series *series_other(struct metric_family *f)
{
    const char *other[METRICS_MAX_LABELS];
    for (int i = 0; i < f->nlabels; i++)
        other[i] = OTHER_VALUE;
    uint64_t h = values_hash(f, other);
    struct series *s = table_find(f, other, h);
    f->overflows++;
    return s ? s : table_add(f, other, h);
}

/* Finds or creates the series for values[]; *ret_other says it is the overflow series. */
static struct series *series_get(struct metric_family *f, const char *const values[],
                                 bool *ret_other)
{
    *ret_other = false;
    if (!values_ok(f, values)) {
        *ret_other = true;
        return series_other(f);
    }
    uint64_t h = values_hash(f, values);
    struct series *s = table_find(f, values, h);
    if (s != NULL)
        return s;
    if (f->nseries >= METRICS_MAX_SERIES) {
        *ret_other = true;
        return series_other(f);
    }
    return table_add(f, values, h);
}

/* ---- registration ---- */

static struct metric_family *family_free(struct metric_family *f)
{
    if (f == NULL)
        return NULL;
    for (struct series *s = f->head, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    free(f->table);
    for (int i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->lock);
    free(f);
    return NULL;
}

static bool labels_ok(enum metric_type t, int n, const char *const names[])
{
    if (n < 0 || n > METRICS_MAX_LABELS || (n > 0 && names == NULL))
        return false;
    for (int i = 0; i < n; i++) {
        if (!name_ok(names[i], false) || strncmp(names[i], "__", 2) == 0)
            return false;
        if (t == METRIC_HISTOGRAM && strcmp(names[i], "le") == 0)
            return false;
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return false;
    }
    return true;
}

static struct metric_family *family_new(enum metric_type t, const char *name, const char *help,
                                        int nlabels, const char *const labelnames[])
{
    if (!name_ok(name, true) || help == NULL || strlen(help) > MAX_HELP_LEN ||
        !labels_ok(t, nlabels, labelnames)) {
        errno = EINVAL;
        return NULL;
    }
    struct metric_family *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    pthread_mutex_init(&f->lock, NULL);
    f->type = t;
    f->name = strdup(name);
    f->help = strdup(help);
    bool ok = f->name && f->help;
    for (int i = 0; i < nlabels; i++) {
        f->labels[i] = strdup(labelnames[i]);
        f->nlabels++;
        ok = ok && f->labels[i];
    }
    if (!ok) {
        errno = ENOMEM;
        return family_free(f);
    }
    return f;
}

static bool family_exists(const struct metrics *m, const char *name)
{
    if (strcmp(name, OVERFLOW_NAME) == 0)
        return true;
    for (const struct metric_family *f = m->head; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return true;
    return false;
}

/* Links f into m, or frees it if the name is taken. */
static struct metric_family *family_link(struct metrics *m, struct metric_family *f)
{
    if (m == NULL || f == NULL)
        return family_free(f);
    pthread_mutex_lock(&m->lock);
    bool dup = family_exists(m, f->name);
    if (!dup) {
        if (m->tail)
            m->tail->next = f;
        else
            m->head = f;
        m->tail = f;
    }
    pthread_mutex_unlock(&m->lock);
    if (dup) {
        errno = EEXIST;
        return family_free(f);
    }
    return f;
}

struct metrics *metrics_new(void)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (m != NULL)
        pthread_mutex_init(&m->lock, NULL);
    return m;
}

struct metrics *metrics_free(struct metrics *m)
{
    if (m == NULL)
        return NULL;
    for (struct metric_family *f = m->head, *next; f; f = next) {
        next = f->next;
        family_free(f);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
    return NULL;
}

struct metric_family *metrics_counter(struct metrics *m, const char *name, const char *help,
                                      int nlabels, const char *const labelnames[])
{
    return family_link(m, family_new(METRIC_COUNTER, name, help, nlabels, labelnames));
}

struct metric_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                    int nlabels, const char *const labelnames[])
{
    return family_link(m, family_new(METRIC_GAUGE, name, help, nlabels, labelnames));
}

static bool bounds_ok(const double *b, int n)
{
    if (b == NULL || n < 1 || n > METRICS_MAX_BUCKETS)
        return false;
    for (int i = 0; i < n; i++)
        if (!isfinite(b[i]) || (i > 0 && b[i] <= b[i - 1]))
            return false;
    return true;
}

struct metric_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                        int nlabels, const char *const labelnames[],
                                        const double *buckets, int nbuckets)
{
    if (!bounds_ok(buckets, nbuckets)) {
        errno = EINVAL;
        return NULL;
    }
    struct metric_family *f = family_new(METRIC_HISTOGRAM, name, help, nlabels, labelnames);
    if (f != NULL) {
        memcpy(f->bounds, buckets, (size_t)nbuckets * sizeof(double));
        f->nbounds = nbuckets;
    }
    return family_link(m, f);
}

struct metric_family *metrics_gauge_fn(struct metrics *m, const char *name, const char *help,
                                       int nlabels, const char *const labelnames[],
                                       const char *const values[], metric_gauge_fn fn, void *arg)
{
    struct metric_family *f = family_new(METRIC_GAUGE, name, help, nlabels, labelnames);
    if (f == NULL)
        return NULL;
    if (fn == NULL || !values_ok(f, values)) {
        errno = EINVAL;
        return family_free(f);
    }
    if (table_add(f, values, values_hash(f, values)) == NULL) {
        errno = ENOMEM;
        return family_free(f);
    }
    f->fn = fn;
    f->fn_arg = arg;
    return family_link(m, f);
}

int metrics_on_collect(struct metrics *m, metrics_collect_fn fn, void *arg)
{
    if (m == NULL || fn == NULL)
        return -EINVAL;
    int r = -ENOSPC;
    pthread_mutex_lock(&m->lock);
    if (m->nhooks < MAX_HOOKS) {
        m->hooks[m->nhooks++] = (struct collect_hook){fn, arg};
        r = 0;
    }
    pthread_mutex_unlock(&m->lock);
    return r;
}

/* ---- observations ---- */

enum op { OP_INC, OP_SET, OP_OBSERVE };

static bool op_allowed(const struct metric_family *f, enum op op, double v)
{
    if (f == NULL || isnan(v) || f->fn != NULL)
        return false;
    switch (op) {
    case OP_INC:
        return isfinite(v) && (f->type == METRIC_GAUGE || (f->type == METRIC_COUNTER && v >= 0));
    case OP_SET:
        return f->type == METRIC_GAUGE;
    case OP_OBSERVE:
        return f->type == METRIC_HISTOGRAM;
    }
    return false;
}

static void series_apply(const struct metric_family *f, struct series *s, enum op op, double v)
{
    if (op == OP_INC) {
        s->value += v;
    } else if (op == OP_SET) {
        s->value = v;
    } else {
        int i = 0;
        while (i < f->nbounds && v > f->bounds[i])
            i++;
        s->buckets[i]++;     /* i == nbounds is the +Inf bucket */
        s->count++;
        s->value += v;
    }
}

static int family_update(struct metric_family *f, const char *const values[], enum op op, double v)
{
    if (!op_allowed(f, op, v))
        return -EINVAL;
    bool other;
    pthread_mutex_lock(&f->lock);
    struct series *s = series_get(f, values, &other);
    if (s != NULL)
        series_apply(f, s, op, v);
    pthread_mutex_unlock(&f->lock);
    if (s == NULL)
        return -ENOMEM;
    return other ? 1 : 0;
}

int metric_inc(struct metric_family *f, const char *const values[], double by)
{
    return family_update(f, values, OP_INC, by);
}

int metric_set(struct metric_family *f, const char *const values[], double v)
{
    return family_update(f, values, OP_SET, v);
}

int metric_observe(struct metric_family *f, const char *const values[], double v)
{
    return family_update(f, values, OP_OBSERVE, v);
}

int metric_value(struct metric_family *f, const char *const values[], double *ret_value)
{
    if (f == NULL || f->type == METRIC_HISTOGRAM || !values_ok(f, values))
        return -EINVAL;
    if (f->fn != NULL) {
        *ret_value = f->fn(f->fn_arg);
        return 0;
    }
    pthread_mutex_lock(&f->lock);
    struct series *s = table_find(f, values, values_hash(f, values));
    double v = s ? s->value : 0;
    pthread_mutex_unlock(&f->lock);
    if (s == NULL)
        return -ENOENT;
    *ret_value = v;
    return 0;
}

size_t metric_family_series(struct metric_family *f)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->nseries;
    pthread_mutex_unlock(&f->lock);
    return n;
}

uint64_t metric_family_overflows(struct metric_family *f)
{
    pthread_mutex_lock(&f->lock);
    uint64_t n = f->overflows;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* ---- exposition ---- */

/* Shortest decimal that reads back as v; NaN and infinities spelled as the format wants. */
static void fmt_num(char out[32], double v)
{
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

/* Escapes backslash and newline, plus double-quote when quoted (label values). */
static int put_escaped(struct buf *out, const char *s, bool quoted)
{
    int r = 0;
    for (; *s && r == 0; s++) {
        if (*s == '\\')
            r = buf_append(out, "\\\\", 2);
        else if (*s == '\n')
            r = buf_append(out, "\\n", 2);
        else if (*s == '"' && quoted)
            r = buf_append(out, "\\\"", 2);
        else
            r = buf_putc(out, *s);
    }
    return r;
}

static int put_label(struct buf *out, bool first, const char *name, const char *value)
{
    int r = buf_printf(out, "%s%s=\"", first ? "" : ",", name);
    if (r == 0)
        r = put_escaped(out, value, true);
    return r < 0 ? r : buf_putc(out, '"');
}

/* name[suffix]{labels[,le="..."]} value */
static int put_sample(struct buf *out, const struct metric_family *f, const struct series *s,
                      const char *suffix, const char *le, double v)
{
    int r = buf_printf(out, "%s%s", f->name, suffix);
    if (r == 0 && (f->nlabels > 0 || le != NULL))
        r = buf_putc(out, '{');
    for (int i = 0; i < f->nlabels && r == 0; i++)
        r = put_label(out, i == 0, f->labels[i], s->values[i]);
    if (r == 0 && le != NULL)
        r = put_label(out, f->nlabels == 0, "le", le);
    if (r == 0 && (f->nlabels > 0 || le != NULL))
        r = buf_putc(out, '}');
    char num[32];
    fmt_num(num, v);
    return r < 0 ? r : buf_printf(out, " %s\n", num);
}

static int put_histogram(struct buf *out, const struct metric_family *f, const struct series *s)
{
    uint64_t cum = 0;
    char le[32];
    int r = 0;
    for (int i = 0; i <= f->nbounds && r == 0; i++) {
        cum += s->buckets[i];
        if (i < f->nbounds)
            fmt_num(le, f->bounds[i]);
        else
            strcpy(le, "+Inf");
        r = put_sample(out, f, s, "_bucket", le, (double)cum);
    }
    if (r == 0)
        r = put_sample(out, f, s, "_sum", NULL, s->value);
    if (r == 0)
        r = put_sample(out, f, s, "_count", NULL, (double)s->count);
    return r;
}

static const char *type_name(enum metric_type t)
{
    return t == METRIC_COUNTER ? "counter" : t == METRIC_GAUGE ? "gauge" : "histogram";
}

static int put_header(struct buf *out, const char *name, const char *help, const char *type)
{
    int r = buf_printf(out, "# HELP %s ", name);
    if (r == 0)
        r = put_escaped(out, help, false);
    return r < 0 ? r : buf_printf(out, "\n# TYPE %s %s\n", name, type);
}

/* Index of the family's label `name`, or -1 (also for a NULL name). */
static int label_index(const struct metric_family *f, const char *name)
{
    for (int i = 0; name && i < f->nlabels; i++)
        if (strcmp(f->labels[i], name) == 0)
            return i;
    return -1;
}

static int family_write(struct metric_family *f, struct buf *out, const char *label,
                        const char *value)
{
    double fnv = f->fn ? f->fn(f->fn_arg) : 0;   /* outside the lock: it may metric_set */
    int r = put_header(out, f->name, f->help, type_name(f->type));
    int scoped = label_index(f, label);
    pthread_mutex_lock(&f->lock);
    for (const struct series *s = f->head; s && r == 0; s = s->next) {
        if (scoped >= 0 && (value == NULL || strcmp(s->values[scoped], value) != 0))
            continue;
        if (f->type == METRIC_HISTOGRAM)
            r = put_histogram(out, f, s);
        else
            r = put_sample(out, f, s, "", NULL, f->fn ? fnv : s->value);
    }
    pthread_mutex_unlock(&f->lock);
    return r;
}

static int overflow_write(struct metrics *m, struct buf *out)
{
    int r = put_header(out, OVERFLOW_NAME, OVERFLOW_HELP, "counter");
    for (struct metric_family *f = m->head; f && r == 0; f = f->next) {
        uint64_t n = metric_family_overflows(f);
        if (n == 0)
            continue;
        r = buf_printf(out, "%s{family=\"", OVERFLOW_NAME);
        if (r == 0)
            r = put_escaped(out, f->name, true);
        if (r == 0)
            r = buf_printf(out, "\"} %llu\n", (unsigned long long)n);
    }
    return r;
}

int metrics_write(struct metrics *m, struct buf *out)
{
    return metrics_write_scoped(m, out, NULL, NULL);
}

int metrics_write_scoped(struct metrics *m, struct buf *out, const char *label,
                         const char *value)
{
    if (m == NULL || out == NULL)
        return -EINVAL;
    pthread_mutex_lock(&m->lock);
    for (int i = 0; i < m->nhooks; i++)
        m->hooks[i].fn(m, m->hooks[i].arg);
    int r = 0;
    for (struct metric_family *f = m->head; f && r == 0; f = f->next)
        r = family_write(f, out, label, value);
    if (r == 0)
        r = overflow_write(m, out);
    pthread_mutex_unlock(&m->lock);
    return r;
}

/* ---- Tessera's standard families ---- */

static const char *const L_SERVICE[] = {"service"};
static const char *const L_HTTP_REQ[] = {"service", "endpoint", "method", "status_code"};
static const char *const L_HTTP_DUR[] = {"service", "endpoint", "method"};
static const char *const L_HTTP_ERR[] = {"service", "endpoint", "error_type"};
static const char *const L_DB[] = {"service", "query_type", "table"};
static const char *const L_CACHE[] = {"service", "operation", "result"};
static const char *const L_JOBS[] = {"service", "kind", "status"};
static const char *const L_BUILD[] = {"version", "sqlite", "libuv"};
static const char *const V_SERVICE[] = {METRICS_SERVICE};

enum std_source { SRC_NONE, SRC_CONNS, SRC_WS };

/* One standard family; off is where metrics_std keeps it. Order is recs.md section 7's. */
struct std_def {
    size_t off;
    enum metric_type type;
    const char *name, *help;
    int nlabels;
    const char *const *labels;
    enum std_source src;
};

#define STD(field) offsetof(struct metrics_std, field)
static const struct std_def std_defs[] = {
    {STD(http_requests), METRIC_COUNTER, "http_requests_total", "Total HTTP requests.", 4,
     L_HTTP_REQ, SRC_NONE},
    {STD(http_duration), METRIC_HISTOGRAM, "http_request_duration_seconds",
     "HTTP request latency.", 3, L_HTTP_DUR, SRC_NONE},
    {STD(http_errors), METRIC_COUNTER, "http_errors_total",
     "HTTP requests answered with an error, by error type.", 3, L_HTTP_ERR, SRC_NONE},
    {STD(http_conns), METRIC_GAUGE, "http_connections_active", "Open HTTP connections.", 1,
     L_SERVICE, SRC_CONNS},
    {STD(db_queries), METRIC_COUNTER, "db_queries_total", "Database queries executed.", 3, L_DB,
     SRC_NONE},
    {STD(db_duration), METRIC_HISTOGRAM, "db_query_duration_seconds", "Database query latency.",
     3, L_DB, SRC_NONE},
    {STD(cache_ops), METRIC_COUNTER, "cache_operations_total", "Response cache operations.", 3,
     L_CACHE, SRC_NONE},
    {STD(cache_hit_rate), METRIC_GAUGE, "cache_hit_rate",
     "Response cache hits over lookups since start (0 to 1).", 1, L_SERVICE, SRC_NONE},
    {STD(ws_conns), METRIC_GAUGE, "ws_connections_active", "Open WebSocket connections.", 1,
     L_SERVICE, SRC_WS},
    {STD(jobs), METRIC_COUNTER, "jobs_total", "Background jobs that reached a status.", 3, L_JOBS,
     SRC_NONE},
    {STD(build_info), METRIC_GAUGE, "tessera_build_info",
     "Tessera build: version and linked library versions.", 3, L_BUILD, SRC_NONE},
};

static struct metric_family *std_family(struct metrics *m, const struct std_def *d,
                                        metric_gauge_fn fn, void *arg)
{
    if (d->type == METRIC_COUNTER)
        return metrics_counter(m, d->name, d->help, d->nlabels, d->labels);
    if (d->type == METRIC_HISTOGRAM)
        return metrics_histogram(m, d->name, d->help, d->nlabels, d->labels,
                                 metrics_latency_buckets, 12);
    if (fn != NULL)
        return metrics_gauge_fn(m, d->name, d->help, d->nlabels, d->labels, V_SERVICE, fn, arg);
    return metrics_gauge(m, d->name, d->help, d->nlabels, d->labels);
}

/* Gauges without a callback start at 0 (build_info at 1) so every family has a sample. */
static int std_initial(struct metrics_std *s, const char *const build[], bool conns_fn, bool ws_fn)
{
    int r = metric_set(s->cache_hit_rate, V_SERVICE, 0);
    if (r >= 0 && !conns_fn)
        r = metric_set(s->http_conns, V_SERVICE, 0);
    if (r >= 0 && !ws_fn)
        r = metric_set(s->ws_conns, V_SERVICE, 0);
    if (r >= 0)
        r = metric_set(s->build_info, build, 1);
    return r < 0 ? r : 0;
}

int metrics_std_register(struct metrics *m, struct metrics_std *ret, const char *version,
                         const char *sqlite_version, const char *libuv_version,
                         metric_gauge_fn conns_fn, metric_gauge_fn ws_fn, void *fn_arg)
{
    if (m == NULL || ret == NULL || version == NULL || sqlite_version == NULL ||
        libuv_version == NULL)
        return -EINVAL;
    struct metrics_std s = {0};
    for (size_t i = 0; i < sizeof(std_defs) / sizeof(std_defs[0]); i++) {
        const struct std_def *d = &std_defs[i];
        metric_gauge_fn fn = d->src == SRC_CONNS ? conns_fn : d->src == SRC_WS ? ws_fn : NULL;
        errno = 0;
        struct metric_family *f = std_family(m, d, fn, fn_arg);
        if (f == NULL)
            return errno ? -errno : -ENOMEM;
        *(struct metric_family **)((char *)&s + d->off) = f;
    }
    const char *const build[] = {version, sqlite_version, libuv_version};
    int r = std_initial(&s, build, conns_fn != NULL, ws_fn != NULL);
    if (r < 0)
        return r;
    *ret = s;
    return 0;
}
