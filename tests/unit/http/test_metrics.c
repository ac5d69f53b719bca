/* Unit tests of the metrics registry and its Prometheus text output; argv[1] receives a sample. */
#include "../check.h"
#include "http/metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>



/* The whole exposition as a NUL-terminated string the caller frees. */
static char *render(struct metrics *m)
{
    struct buf b;
    buf_init(&b, 8u << 20);
    int r = metrics_write(m, &b);
    CHECK(r == 0);
    char *s = strdup(buf_cstr(&b));
    buf_release(&b);
    return s;
}

/* True when `line` appears as a whole line of text. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = strstr(text, line); p; p = strstr(p + 1, line))
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
    return 0;
}

#define CHECK_LINE(text, line)                                                        \
    do {                                                                              \
        if (!has_line(text, line)) {                                                  \
            fprintf(stderr, "%s:%d: missing line: %s\n", __FILE__, __LINE__, line);   \
            check_failures++;                                                               \
        }                                                                             \
    } while (0)

static size_t count_substr(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static const char *const L_EP[] = {"endpoint"};

static void test_counter_gauge(void)
{
    struct metrics *m = metrics_new();
    struct metric_family *c = metrics_counter(m, "t_requests_total", "Requests.", 1, L_EP);
    struct metric_family *g = metrics_gauge(m, "t_level", "Level.", 0, NULL);
    CHECK(c && g);
    const char *a[] = {"/a"}, *b[] = {"/b"};
    CHECK(metric_inc(c, a, 1) == 0);
    CHECK(metric_inc(c, a, 1) == 0);
    CHECK(metric_inc(c, a, 0.5) == 0);
    CHECK(metric_inc(c, b, 4) == 0);
    CHECK(metric_inc(c, a, -1) == -EINVAL);          /* counters only go up */
    CHECK(metric_inc(c, a, NAN) == -EINVAL);
    CHECK(metric_inc(c, a, INFINITY) == -EINVAL);
    CHECK(metric_set(c, a, 9) == -EINVAL);           /* not a gauge */
    CHECK(metric_observe(c, a, 1) == -EINVAL);       /* not a histogram */
    CHECK(metric_set(g, NULL, 10) == 0);
    CHECK(metric_inc(g, NULL, -3) == 0);             /* gauges go down */
    double v = 0;
    CHECK(metric_value(c, a, &v) == 0 && v == 2.5);
    CHECK(metric_value(g, NULL, &v) == 0 && v == 7);
    const char *z[] = {"/never"};
    CHECK(metric_value(c, z, &v) == -ENOENT);
    char *t = render(m);
    CHECK_LINE(t, "# HELP t_requests_total Requests.");
    CHECK_LINE(t, "# TYPE t_requests_total counter");
    CHECK_LINE(t, "t_requests_total{endpoint=\"/a\"} 2.5");
    CHECK_LINE(t, "t_requests_total{endpoint=\"/b\"} 4");
    CHECK_LINE(t, "# TYPE t_level gauge");
    CHECK_LINE(t, "t_level 7");                       /* no labels: no braces */
    CHECK(strstr(t, "/a") < strstr(t, "/b"));         /* first-seen order */
    free(t);
    metrics_free(m);
}

/* Observations chosen by hand; expected cumulative counts worked out bucket by bucket. */
static void test_histogram(void)
{
    struct metrics *m = metrics_new();
    struct metric_family *h = metrics_histogram(m, "t_duration_seconds", "Latency.", 1, L_EP,
                                                metrics_latency_buckets, 12);
    CHECK(h != NULL);
    const double obs[] = {0.0005, 0.001, 0.003, 0.02, 0.02, 0.3, 7, 11, 100};
    const char *ep[] = {"/x"};
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        CHECK(metric_observe(h, ep, obs[i]) == 0);
    CHECK(metric_observe(h, ep, NAN) == -EINVAL);
    CHECK(metric_inc(h, ep, 1) == -EINVAL);
    char *t = render(m);
    CHECK_LINE(t, "# TYPE t_duration_seconds histogram");
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"0.001\"} 2");  /* 0.0005, 0.001 (le inclusive) */
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"0.005\"} 3");  /* + 0.003 */
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"0.01\"} 3");
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"0.025\"} 5");  /* + 0.02 twice */
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"0.05\"} 5");
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"0.1\"} 5");
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"0.25\"} 5");
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"0.5\"} 6");    /* + 0.3 */
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"1\"} 6");
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"2.5\"} 6");
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"5\"} 6");
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"10\"} 7");     /* + 7 */
    CHECK_LINE(t, "t_duration_seconds_bucket{endpoint=\"/x\",le=\"+Inf\"} 9");   /* + 11, 100 */
    CHECK_LINE(t, "t_duration_seconds_count{endpoint=\"/x\"} 9");
    CHECK(count_substr(t, "t_duration_seconds_bucket{") == 13);
    const char *sum = strstr(t, "t_duration_seconds_sum{endpoint=\"/x\"} ");
    CHECK(sum != NULL);
    if (sum != NULL) {
        double s = strtod(strchr(sum, '}') + 2, NULL);
        CHECK(fabs(s - 118.3445) < 1e-9);   /* 0.0005+0.001+0.003+0.04+0.3+7+11+100 */
    }
    free(t);
    metrics_free(m);
}

static void test_histogram_unlabelled(void)
{
    struct metrics *m = metrics_new();
    const double b[] = {1, 2};
    struct metric_family *h = metrics_histogram(m, "t_size_bytes", "Sizes.", 0, NULL, b, 2);
    CHECK(metric_observe(h, NULL, 2) == 0);
    CHECK(metric_observe(h, NULL, 3) == 0);
    char *t = render(m);
    CHECK_LINE(t, "t_size_bytes_bucket{le=\"1\"} 0");
    CHECK_LINE(t, "t_size_bytes_bucket{le=\"2\"} 1");
    CHECK_LINE(t, "t_size_bytes_bucket{le=\"+Inf\"} 2");
    CHECK_LINE(t, "t_size_bytes_sum 5");
    CHECK_LINE(t, "t_size_bytes_count 2");
    free(t);
    metrics_free(m);
}

static void test_escaping(void)
{
    struct metrics *m = metrics_new();
    struct metric_family *c = metrics_counter(m, "t_escape_total", "Help with \\ and\nnewline \"q\".",
                                              1, L_EP);
    const char *v[] = {"a\\b\"c\nd"};
    CHECK(metric_inc(c, v, 1) == 0);
    const char *u[] = {"caf\xc3\xa9 \xe2\x82\xac"};   /* valid UTF-8 passes through */
    CHECK(metric_inc(c, u, 1) == 0);
    char *t = render(m);
    CHECK_LINE(t, "# HELP t_escape_total Help with \\\\ and\\nnewline \"q\".");
    CHECK_LINE(t, "t_escape_total{endpoint=\"a\\\\b\\\"c\\nd\"} 1");
    CHECK_LINE(t, "t_escape_total{endpoint=\"caf\xc3\xa9 \xe2\x82\xac\"} 1");
    free(t);
    metrics_free(m);
}

/* METRICS_MAX_SERIES distinct series are kept; the next one goes to "other" and is counted. */
static void test_series_cap(void)
{
    struct metrics *m = metrics_new();
    const char *const ln[] = {"endpoint", "method"};
    struct metric_family *c = metrics_counter(m, "t_capped_total", "Capped.", 2, ln);
    char name[32];
    int bad = 0;
    for (int i = 0; i < METRICS_MAX_SERIES; i++) {
        snprintf(name, sizeof(name), "/p/%d", i);
        const char *v[] = {name, "GET"};
        bad += metric_inc(c, v, 1) != 0;
    }
    CHECK(bad == 0);
    CHECK(metric_family_series(c) == METRICS_MAX_SERIES);
    const char *v0[] = {"/p/0", "GET"};
    CHECK(metric_inc(c, v0, 1) == 0);                   /* existing series still counts */
    const char *n1[] = {"/new/1", "GET"}, *n2[] = {"/new/2", "POST"};
    CHECK(metric_inc(c, n1, 1) == 1);                   /* limit + 1: overflow */
    CHECK(metric_inc(c, n2, 2) == 1);
    const char *badutf[] = {"/p/\xff", "GET"};
    CHECK(metric_inc(c, badutf, 1) == 1);               /* invalid UTF-8 is never stored */
    char longv[METRICS_MAX_VALUE_LEN + 2];
    memset(longv, 'x', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    const char *toolong[] = {longv, "GET"};
    CHECK(metric_inc(c, toolong, 1) == 1);
    const char *nullv[] = {NULL, "GET"};
    CHECK(metric_inc(c, nullv, 1) == 1);
    CHECK(metric_family_series(c) == METRICS_MAX_SERIES + 1);
    CHECK(metric_family_overflows(c) == 5);
    char *t = render(m);
    CHECK_LINE(t, "t_capped_total{endpoint=\"/p/0\",method=\"GET\"} 2");
    CHECK_LINE(t, "t_capped_total{endpoint=\"other\",method=\"other\"} 6");   /* 1+2+1+1+1 */
    CHECK_LINE(t, "tessera_metrics_series_overflow_total{family=\"t_capped_total\"} 5");
    CHECK(strstr(t, "/new/") == NULL);
    CHECK(count_substr(t, "\nt_capped_total{") == METRICS_MAX_SERIES + 1);
    free(t);
    metrics_free(m);
}

/* A real series whose values are all "other" is the overflow series, never a duplicate. */
static void test_other_no_duplicate(void)
{
    struct metrics *m = metrics_new();
    struct metric_family *c = metrics_counter(m, "t_other_total", "Other.", 1, L_EP);
    const char *o[] = {"other"}, *bad[] = {"\xc0\x80"};   /* overlong NUL: invalid */
    CHECK(metric_inc(c, o, 1) == 0);
    CHECK(metric_inc(c, bad, 1) == 1);
    char *t = render(m);
    CHECK(count_substr(t, "t_other_total{endpoint=\"other\"}") == 1);
    CHECK_LINE(t, "t_other_total{endpoint=\"other\"} 2");
    free(t);
    metrics_free(m);
}

static void test_registration(void)
{
    struct metrics *m = metrics_new();
    const char *const le[] = {"le"}, *const dup[] = {"a", "a"}, *const under[] = {"__x"};
    const double inc[] = {1, 2}, dec[] = {2, 1}, inf[] = {1, INFINITY};
    CHECK(metrics_counter(m, "ok_total", "Ok.", 0, NULL) != NULL);
    CHECK(metrics_counter(m, "ok_total", "Again.", 0, NULL) == NULL && errno == EEXIST);
    CHECK(metrics_gauge(m, "1bad", "Bad.", 0, NULL) == NULL);
    CHECK(metrics_gauge(m, "bad-name", "Bad.", 0, NULL) == NULL);
    CHECK(metrics_gauge(m, "no_help", NULL, 0, NULL) == NULL);
    CHECK(metrics_gauge(m, "dup_labels", "D.", 2, dup) == NULL);
    CHECK(metrics_gauge(m, "reserved_label", "R.", 1, under) == NULL);
    CHECK(metrics_gauge(m, "many_labels", "M.", METRICS_MAX_LABELS + 1, dup) == NULL);
    CHECK(metrics_gauge(m, "le_ok_on_gauge", "G.", 1, le) != NULL);
    CHECK(metrics_histogram(m, "h_le", "H.", 1, le, inc, 2) == NULL);
    CHECK(metrics_histogram(m, "h_dec", "H.", 0, NULL, dec, 2) == NULL);
    CHECK(metrics_histogram(m, "h_inf", "H.", 0, NULL, inf, 2) == NULL);
    CHECK(metrics_histogram(m, "h_none", "H.", 0, NULL, inc, 0) == NULL);
    CHECK(metrics_histogram(m, "h_ok", "H.", 0, NULL, inc, 2) != NULL);
    CHECK(metrics_counter(m, "tessera_metrics_series_overflow_total", "X.", 0, NULL) == NULL);
    CHECK(metrics_free(m) == NULL);
    CHECK(metrics_free(NULL) == NULL);
}

static double seven(void *arg)
{
    (void)arg;
    return 7;
}

static void collect(struct metrics *m, void *arg)
{
    (void)m;
    struct metric_family *g = arg;
    const char *v[] = {"tessera"};
    metric_inc(g, v, 1);
}

static void test_callbacks(void)
{
    struct metrics *m = metrics_new();
    const char *const ln[] = {"service"};
    const char *v[] = {"tessera"};
    struct metric_family *fg = metrics_gauge_fn(m, "t_open", "Open.", 1, ln, v, seven, NULL);
    struct metric_family *g = metrics_gauge(m, "t_scrapes", "Scrapes.", 1, ln);
    CHECK(fg && g);
    CHECK(metric_set(fg, v, 1) == -EINVAL);        /* value comes from the callback */
    CHECK(metrics_on_collect(m, collect, g) == 0);
    char *t = render(m);
    CHECK_LINE(t, "t_open{service=\"tessera\"} 7");
    CHECK_LINE(t, "t_scrapes{service=\"tessera\"} 1");
    free(t);
    t = render(m);
    CHECK_LINE(t, "t_scrapes{service=\"tessera\"} 2");
    free(t);
    metrics_free(m);
}

static void test_too_big(void)
{
    struct metrics *m = metrics_new();
    struct metric_family *c = metrics_counter(m, "t_small_total", "Small.", 0, NULL);
    CHECK(metric_inc(c, NULL, 1) == 0);
    struct buf b;
    buf_init(&b, 20);
    CHECK(metrics_write(m, &b) == -E2BIG);
    buf_release(&b);
    metrics_free(m);
}

#define THREADS 4
#define PER_THREAD 20000

struct thread_arg {
    struct metric_family *c, *h;
};

static void *hammer(void *p)
{
    struct thread_arg *a = p;
    const char *v[] = {"/shared"};
    for (int i = 0; i < PER_THREAD; i++) {
        metric_inc(a->c, v, 1);
        metric_observe(a->h, v, (i % 2) ? 0.002 : 20);
    }
    return NULL;
}

static void test_threads(void)
{
    struct metrics *m = metrics_new();
    struct thread_arg a = {
        metrics_counter(m, "t_mt_total", "MT.", 1, L_EP),
        metrics_histogram(m, "t_mt_seconds", "MT.", 1, L_EP, metrics_latency_buckets, 12),
    };
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, hammer, &a);
    for (int i = 0; i < THREADS; i++) {
        char *t = render(m);        /* scrapes race the writers */
        free(t);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    char *t = render(m);
    char line[128];
    snprintf(line, sizeof(line), "t_mt_total{endpoint=\"/shared\"} %d", THREADS * PER_THREAD);
    CHECK_LINE(t, line);
    snprintf(line, sizeof(line), "t_mt_seconds_bucket{endpoint=\"/shared\",le=\"0.005\"} %d",
             THREADS * PER_THREAD / 2);
    CHECK_LINE(t, line);
    snprintf(line, sizeof(line), "t_mt_seconds_bucket{endpoint=\"/shared\",le=\"+Inf\"} %d",
             THREADS * PER_THREAD);
    CHECK_LINE(t, line);
    free(t);
    metrics_free(m);
}

static double conns(void *arg)
{
    return *(const double *)arg;
}

/* The standard families, filled a little, plus tricky series; written to path for promtool. */
static void test_standard(const char *path)
{
    struct metrics *m = metrics_new();
    struct metrics_std s;
    double open = 3;
    CHECK(metrics_std_register(m, &s, "0.1.0", "3.40.1", "1.44.2", conns, NULL, &open) == 0);
    CHECK(metrics_std_register(m, &s, "0.1.0", "3.40.1", "1.44.2", NULL, NULL, NULL) == -EEXIST);
    const char *req[] = {METRICS_SERVICE, "/api/v1/items/{id}", "GET", "200"};
    const char *dur[] = {METRICS_SERVICE, "/api/v1/items/{id}", "GET"};
    const char *err[] = {METRICS_SERVICE, "/api/v1/items/{id}", "not_found"};
    const char *db[] = {METRICS_SERVICE, "select", "items"};
    const char *cache[] = {METRICS_SERVICE, "get", "hit"};
    const char *jobs[] = {METRICS_SERVICE, "export", "completed"};
    const char *svc[] = {METRICS_SERVICE};
    CHECK(metric_inc(s.http_requests, req, 1) == 0);
    CHECK(metric_observe(s.http_duration, dur, 0.004) == 0);
    CHECK(metric_inc(s.http_errors, err, 1) == 0);
    CHECK(metric_inc(s.db_queries, db, 1) == 0);
    CHECK(metric_observe(s.db_duration, db, 0.0001) == 0);
    CHECK(metric_inc(s.cache_ops, cache, 1) == 0);
    CHECK(metric_set(s.cache_hit_rate, svc, 0.75) == 0);
    CHECK(metric_inc(s.jobs, jobs, 1) == 0);
    CHECK(metric_inc(s.ws_conns, svc, 2) == 0);
    CHECK(metric_inc(s.http_conns, svc, 1) == -EINVAL);  /* callback gauge */
    const char *weird[] = {METRICS_SERVICE, "/q\"\\\n", "GET", "500"};
    CHECK(metric_inc(s.http_requests, weird, 1) == 0);
    const char *badreq[] = {METRICS_SERVICE, "/\xfe", "GET", "400"};
    CHECK(metric_inc(s.http_requests, badreq, 1) == 1);
    char *t = render(m);
    CHECK_LINE(t, "tessera_build_info{version=\"0.1.0\",sqlite=\"3.40.1\",libuv=\"1.44.2\"} 1");
    CHECK_LINE(t, "http_requests_total{service=\"tessera\",endpoint=\"/api/v1/items/{id}\",method=\"GET\",status_code=\"200\"} 1");
    CHECK_LINE(t, "http_request_duration_seconds_bucket{service=\"tessera\",endpoint=\"/api/v1/items/{id}\",method=\"GET\",le=\"0.001\"} 0");
    CHECK_LINE(t, "http_request_duration_seconds_bucket{service=\"tessera\",endpoint=\"/api/v1/items/{id}\",method=\"GET\",le=\"0.005\"} 1");
    CHECK_LINE(t, "http_connections_active{service=\"tessera\"} 3");
    CHECK_LINE(t, "ws_connections_active{service=\"tessera\"} 2");
    CHECK_LINE(t, "cache_hit_rate{service=\"tessera\"} 0.75");
    CHECK_LINE(t, "db_query_duration_seconds_bucket{service=\"tessera\",query_type=\"select\",table=\"items\",le=\"0.001\"} 1");
    CHECK_LINE(t, "jobs_total{service=\"tessera\",kind=\"export\",status=\"completed\"} 1");
    CHECK_LINE(t, "# TYPE http_request_duration_seconds histogram");
    CHECK_LINE(t, "tessera_metrics_series_overflow_total{family=\"http_requests_total\"} 1");
    if (path != NULL) {
        FILE *fp = fopen(path, "w");
        CHECK(fp != NULL);
        if (fp != NULL) {
            fputs(t, fp);
            fclose(fp);
        }
    }
    free(t);
    metrics_free(m);
}

/* Scoped by tenant_id: a family with that label shows only the given tenant's series (none for
 * NULL), keeping its HELP and TYPE; families without the label are whole. */
static void test_scoped(void)
{
    static const char *const L_T[] = {"tenant_id", "model"};
    struct metrics *m = metrics_new();
    struct metric_family *q = metrics_gauge(m, "t_quality", "Quality.", 2, L_T);
    struct metric_family *c = metrics_counter(m, "t_hits_total", "Hits.", 1, L_EP);
    const char *ta[] = {"ta", "m1"}, *tb[] = {"tb", "m1"}, *ep[] = {"/x"};
    CHECK(metric_set(q, ta, 1) == 0 && metric_set(q, tb, 2) == 0 && metric_inc(c, ep, 3) == 0);
    struct buf b;
    buf_init(&b, 1u << 20);
    CHECK(metrics_write_scoped(m, &b, "tenant_id", "ta") == 0);
    const char *text = buf_cstr(&b);
    CHECK_LINE(text, "t_quality{tenant_id=\"ta\",model=\"m1\"} 1");
    CHECK(strstr(text, "\"tb\"") == NULL);
    CHECK_LINE(text, "t_hits_total{endpoint=\"/x\"} 3");
    b.len = 0;
    CHECK(metrics_write_scoped(m, &b, "tenant_id", NULL) == 0);
    text = buf_cstr(&b);
    CHECK(strstr(text, "t_quality{") == NULL);
    CHECK_LINE(text, "# TYPE t_quality gauge");
    CHECK_LINE(text, "t_hits_total{endpoint=\"/x\"} 3");
    buf_release(&b);
    char *all = render(m);
    CHECK_LINE(all, "t_quality{tenant_id=\"tb\",model=\"m1\"} 2");
    free(all);
    metrics_free(m);
}

int main(int argc, char **argv)
{
    test_counter_gauge();
    test_histogram();
    test_histogram_unlabelled();
    test_escaping();
    test_series_cap();
    test_other_no_duplicate();
    test_registration();
    test_callbacks();
    test_too_big();
    test_scoped();
    test_threads();
    test_standard(argc > 1 ? argv[1] : NULL);
    if (check_failures) {
        fprintf(stderr, "test_metrics: %d check(s) failed\n", check_failures);
        return 1;
    }
    printf("test_metrics: ok\n");
    return 0;
}
