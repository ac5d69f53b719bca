/* The tessera command: serve, admin, backup, version; signals and the ordered shutdown. */
#include <errno.h>
#include <jansson.h>
#include <llhttp.h>
#include <signal.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "api/app.h"
#include "surfaces/recs/recs.h"
#include "surfaces/recs/usage.h"
#include "api/observe.h"
#include "auth/identity.h"
#include "auth/perms.h"
#include "auth/session.h"
#include "auth/throttle.h"
#include "engines/mail.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/json.h"
#include "core/log.h"
#include "http/http.h"
#include "http/tls.h"
#include "http/ws.h"
#include "jobs/jobs.h"
#include "surfaces/kinds.h"
#include "jobs/pool.h"
#include "store/db.h"
#include "version.h"

#define EXIT_USAGE 2
#define DEMO_PASSWORD "tessera-demo"
#define DEMO_DOMAIN "demo.tessera.local"

static int usage_error(const char *msg)
{
    fprintf(stderr, "tessera: %s\n", msg);
    return EXIT_USAGE;
}

/* Creates the data dir if needed and checks it is a writable directory. */
static int data_dir_prepare(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) < 0) {
        if (errno != ENOENT || mkdir(dir, 0700) < 0) {
            snprintf(err, errlen, "data dir '%s' is unusable: %s", dir, strerror(errno));
            return -EINVAL;
        }
    } else if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "data dir '%s' is not a directory", dir);
        return -EINVAL;
    }
    if (access(dir, W_OK | X_OK) < 0) {
        snprintf(err, errlen, "data dir '%s' is not writable", dir);
        return -EINVAL;
    }
    char files[4096];
    snprintf(files, sizeof(files), "%s/files", dir);
    if (mkdir(files, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create the files dir in %.400s: %s", dir, strerror(errno));
        return -EINVAL;
    }
    return 0;
}

static char *db_path_of(const char *dir)
{
    size_t n = strlen(dir) + 16;
    char *p = malloc(n);
    snprintf(p, n, "%s/tessera.db", dir);
    return p;
}

/* Servers raise the descriptor limit to the hard maximum: every connection is one fd. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* ---------- demo data ---------- */

static int tenant_count(sqlite3 *h)
{
    sqlite3_stmt *st;
    int n = 0;
    sqlite3_prepare_v2(h, "SELECT count(*) FROM tenants", -1, &st, NULL);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* One demo tenant with one user per role, all with the same known password; the commerce and
 * recs data sized by --demo-scale. */
static int demo_seed(sqlite3 *h, double scale)
{
    char err[256], tid[UUID_STR_LEN], uid[UUID_STR_LEN], hash[IDENTITY_HASH_LEN];
    if (tenant_count(h) > 0)
        return 0;
    if (identity_password_hash(DEMO_PASSWORD, hash) < 0)
        return -ENOMEM;
    sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    int r = identity_tenant_create(h, "Demo Company", DEMO_DOMAIN, "enterprise", true, "viewer",
                                   tid, err, sizeof(err));
    for (int i = 0; r == 0 && role_names[i]; i++) {
        char email[128], name[128];
        snprintf(email, sizeof(email), "%s@%s", role_names[i], DEMO_DOMAIN);
        snprintf(name, sizeof(name), "Demo %s", role_names[i]);
        r = identity_user_create(h, DEMO_DOMAIN, email, name, role_names[i], hash, uid, NULL,
                                 err, sizeof(err));
    }
    if (r == 0 && (r = desk_staging_seed_demo(h, tid)) < 0)
        snprintf(err, sizeof(err), "staging environments: %s", sqlite3_errmsg(h));
    if (r == 0 && (r = desk_demo_seed(h, tid)) < 0)
        snprintf(err, sizeof(err), "desk demo data: %s", sqlite3_errmsg(h));
    if (r == 0 && (r = commerce_demo_seed(h, tid, scale)) < 0)
        snprintf(err, sizeof(err), "commerce demo data: %s", sqlite3_errmsg(h));
    if (r == 0 && (r = recs_demo_seed(h, tid, scale)) < 0)
        snprintf(err, sizeof(err), "recs demo data: %s", sqlite3_errmsg(h));
    if (r < 0) {
        sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
        log_msg(LOG_ERROR, "demo data: %s", err);
        return r;
    }
    return sqlite3_exec(h, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 1 : TS_E_BUSY;
}

static void demo_print(const char *url)
{
    printf("demo tenant: %s (password for every account: %s)\n", DEMO_DOMAIN, DEMO_PASSWORD);
    for (int i = 0; role_names[i]; i++)
        printf("  %-13s %s@%s\n", role_names[i], role_names[i], DEMO_DOMAIN);
    printf("open %s/docs\n", url);
    fflush(stdout);
}

/* ---------- serve ---------- */

struct serve_state {
    struct app app;
    uv_signal_t sigterm, sigint;
    uv_timer_t test_clock;
    const char *test_clock_file;
    int signals;
    struct tls_ctx *tls;
};

/* TESSERA_TEST_CLOCK_FILE: a testing aid, never set in production. The file holds a number of
 * milliseconds added to the wall clock (SLA deadlines, breach timer, tokens, rate limits), so
 * API tests can move time forward; it is re-read every 50 ms. */
static void test_clock_cb(uv_timer_t *t)
{
    struct serve_state *st = t->data;
    FILE *f = fopen(st->test_clock_file, "r");
    long long ms;
    if (f && fscanf(f, "%lld", &ms) == 1)
        clock_set_offset_ms(ms);
    if (f)
        fclose(f);
}

static void test_clock_start(struct serve_state *st)
{
    st->test_clock_file = getenv("TESSERA_TEST_CLOCK_FILE");
    uv_timer_init(st->app.loop, &st->test_clock);
    st->test_clock.data = st;
    uv_unref((uv_handle_t *)&st->test_clock);
    if (st->test_clock_file == NULL)
        return;
    log_msg(LOG_WARN, "test clock active: wall time is shifted by the ms in %s",
            st->test_clock_file);
    test_clock_cb(&st->test_clock);
    uv_timer_start(&st->test_clock, test_clock_cb, 50, 50);
}

static void closing_done(struct server *s)
{
    struct serve_state *st = server_arg(s);
    struct app *app = &st->app;
    jobs_stop_writes(app->jobs); /* a job waiting on the loop must not hold pool_stop up */
    pool_stop(app->bg_pool);     /* running jobs have been asked to checkpoint */
    pool_stop(app->pool);
    jobs_close_handles(app->jobs);
    dispatch_close_handles(app);
    server_close_handles(app->server);
    pool_close_handles(app->bg_pool);
    pool_close_handles(app->pool);
    ws_hub_close_handles(app->hub);
    mailer_close_handles(app->mailer);
    desk_sla_timer_stop();
    commerce_timers_stop();
    recs_serving_stop();
    recs_usage_stop();
    recs_data_stop();
    log_msg(LOG_INFO, "drained; shutting down");
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct serve_state *st = h->data;
    struct app *app = &st->app;
    if (st->signals++ > 0) {
        log_msg(LOG_WARN, "second signal: closing all connections now");
        server_close_all(app->server);
        return;
    }
    log_msg(LOG_INFO, "signal %d: draining", signum);
    app->draining = true;
    app->ready = false;
    ws_hub_close_all(app->hub, 1001, "server shutting down");
    jobs_cancel_all(app->jobs);
    server_drain(app->server, app->cfg->shutdown_deadline_s * 1000, closing_done);
}

/* A job's writes were committed: cached reads of the tenants they touched are stale. */
static void jobs_committed(void *arg)
{
    observe_tick_committed(arg);
}

static void jobs_finished(void *arg, const char *tenant_id, const char *job_id, const char *kind,
                          const char *status)
{
    struct app *app = arg;
    char channel[160], msg[512];
    snprintf(channel, sizeof(channel), "jobs:%s", tenant_id);
    snprintf(msg, sizeof(msg), "{\"type\":\"job\",\"job_id\":\"%s\",\"kind\":\"%s\",\"status\":\"%s\"}",
             job_id, kind, status);
    ws_hub_publish(app->hub, channel, msg, strlen(msg));
}

static int serve_open(struct serve_state *st, char *err, size_t errlen)
{
    struct app *app = &st->app;
    struct config *cfg = app->cfg;
    observe_db_hook(app);
    int r = db_open(app->db_path, strcmp(cfg->durability, "full") == 0, cfg->query_guard_ms,
                    &app->db, err, errlen);
    if (r < 0)
        return r;
    if (cfg->demo && demo_seed(db_handle(app->db), cfg->demo_scale) < 0) {
        snprintf(err, errlen, "could not load demo data");
        return -EINVAL;
    }
    r = auth_open(cfg->data_dir, cfg->jwt_secret_file, cfg->jwt_ttl_s, &app->auth, err, errlen);
    if (r < 0)
        return -EINVAL;
    app->throttle = throttle_new(65536);
    struct mail_config mc = {cfg->data_dir, cfg->smtp_url, cfg->smtp_user, cfg->smtp_password,
                             cfg->smtp_from, 8};
    if (mailer_new(app->loop, app->db, &mc, &app->mailer, err, errlen) < 0)
        return -EINVAL;
    /* Requests: twice the CPUs, at least 4, so heavy reads still find a thread while others
     * run (the threads are niced below the loop). Background work (rollups, exports, training,
     * re-evaluations) has its own threads, niced below those: a rollup of a busy day or a
     * training run takes seconds, and neither a thread nor a request worker's share of the CPU
     * goes to it while requests want them. A batch's processing is the rest of its request
     * (the client polls its status): that kind runs on the request workers (foreground). */
    int ncpu = (int)uv_available_parallelism();
    int workers = cfg->workers ? cfg->workers : (ncpu * 2 > 4 ? ncpu * 2 : 4);
    int bg = cfg->job_workers ? cfg->job_workers : (ncpu > 2 ? ncpu : 2);
    pool_new(app->loop, workers, 1024, POOL_NICE_REQUESTS, app->db_path, &app->pool);
    pool_new(app->loop, bg, 1024, POOL_NICE_BACKGROUND, app->db_path, &app->bg_pool);
    pool_prefer_loop_thread();
    jobs_new(app->loop, app->db, app->bg_pool, job_kinds, job_kinds_count, &app->jobs);
    jobs_set_foreground_pool(app->jobs, app->pool);
    jobs_set_tenant_cap(app->jobs, app->cfg->max_jobs_per_tenant);
    jobs_on_finish(app->jobs, jobs_finished, app);
    jobs_on_commit(app->jobs, jobs_committed, app);
    app->router = app_router_new(err, errlen);
    if (app->router == NULL)
        return -EINVAL;
    struct ws_limits wl = {(size_t)cfg->ws_max_message_kb * 1024,
                           (size_t)cfg->ws_send_queue_kb * 1024, 30000, 75000};
    app->hub = ws_hub_new(app->loop, &wl);
    if (observe_init(app, err, errlen) < 0)
        return -EINVAL;
    if (cfg->tls_cert || cfg->tls_key) {
        if (!cfg->tls_cert || !cfg->tls_key) {
            snprintf(err, errlen, "--tls-cert and --tls-key go together");
            return -EINVAL;
        }
        st->tls = tls_ctx_new(cfg->tls_cert, cfg->tls_key, err, errlen);
        if (st->tls == NULL)
            return -EINVAL;
    }
    return 0;
}

static int serve_listen(struct serve_state *st, char *err, size_t errlen)
{
    struct app *app = &st->app;
    struct config *cfg = app->cfg;
    struct server_limits lim = {
        .max_url = HTTP_URL_MAX,
        .max_header_bytes = (size_t)cfg->max_header_kb * 1024,
        .max_headers = HTTP_HEADERS_MAX,
        .max_body = (size_t)cfg->max_body_kb * 1024,
        .idle_timeout_ms = cfg->idle_timeout_s * 1000,
        .header_timeout_ms = cfg->header_timeout_s * 1000,
        .max_connections = cfg->max_connections,
        .spool_dir = app->spool_dir,
    };
    struct server_hooks hooks = {
        .on_request = dispatch_request,
        .on_error = dispatch_error,
        .body_limit = dispatch_body_limit,
        .tick = dispatch_tick,
        .tick_arg = app,
        .on_sent = dispatch_sent,
        .arg = st,
    };
    app->server = server_new(app->loop, &lim, &hooks);
    dispatch_start(app);
    server_set_tls(app->server, st->tls);
    return server_listen(app->server, cfg->listen, err, errlen);
}

static void serve_close(struct serve_state *st)
{
    struct app *app = &st->app;
    observe_free(app);
    app->mailer = mailer_free(app->mailer);
    app->throttle = throttle_free(app->throttle);
    app->auth = auth_free(app->auth);
    free(app->public_url);
    app->hub = ws_hub_free(app->hub);
    app->server = server_free(app->server);
    app->jobs = jobs_free(app->jobs);
    app->pool = pool_free(app->pool);
    app->bg_pool = pool_free(app->bg_pool);
    app->router = router_free(app->router);
    app->db = db_close(app->db);
    st->tls = tls_ctx_free(st->tls);
    free(app->db_path);
}

static int cmd_serve(struct config *cfg)
{
    char err[512];
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    if (data_dir_prepare(cfg->data_dir, err, sizeof(err)) < 0)
        return usage_error(err);
    static struct serve_state st;
    static char spool[4200];
    snprintf(spool, sizeof(spool), "%s/files/tmp", cfg->data_dir);
    mkdir(spool, 0700);
    memset(&st, 0, sizeof(st));
    struct app *app = &st.app;
    app->cfg = cfg;
    app->spool_dir = spool;
    app->loop = uv_default_loop();
    app->db_path = db_path_of(cfg->data_dir);
    app->started_ms = clock_now_ms();
    int r = serve_open(&st, err, sizeof(err));
    if (r == 0)
        r = serve_listen(&st, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "tessera: %s\n", err);
        if (app->server) {
            server_close_handles(app->server);
        }
        if (app->pool) {
            jobs_stop_writes(app->jobs);
            pool_stop(app->bg_pool);
            pool_stop(app->pool);
            pool_close_handles(app->bg_pool);
            pool_close_handles(app->pool);
            jobs_close_handles(app->jobs);
        }
        if (app->hub)
            ws_hub_close_handles(app->hub);
        if (app->mailer)
            mailer_close_handles(app->mailer);
        uv_run(app->loop, UV_RUN_DEFAULT);
        serve_close(&st);
        uv_loop_close(app->loop);
        return r == -EINVAL ? EXIT_USAGE : 1;
    }
    uv_signal_init(app->loop, &st.sigterm);
    uv_signal_init(app->loop, &st.sigint);
    st.sigterm.data = st.sigint.data = &st;
    uv_signal_start(&st.sigterm, on_signal, SIGTERM);
    uv_signal_start(&st.sigint, on_signal, SIGINT);
    /* unreferenced: they never keep the loop alive, but stay armed until the very end so a
     * late signal during final cleanup is absorbed instead of killing the process */
    uv_unref((uv_handle_t *)&st.sigterm);
    uv_unref((uv_handle_t *)&st.sigint);
    test_clock_start(&st);
    char url[300];
    snprintf(url, sizeof(url), "%s://%s", st.tls ? "https" : "http", cfg->listen);
    app->public_url = strdup(cfg->public_url ? cfg->public_url : url);
    printf("tessera %s listening on %s\n", TESSERA_VERSION, url);
    if (cfg->demo)
        demo_print(url);
    fflush(stdout);
    int recovered = jobs_recover(app->jobs);
    if (recovered > 0)
        log_msg(LOG_INFO, "resumed %d queued jobs", recovered);
    desk_sla_timer_start(app);
    commerce_timers_start(app);
    recs_serving_start(app);
    recs_demo_start(app);
    recs_usage_start(app);
    recs_data_start(app);
    app->ready = true;
    uv_run(app->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&st.sigterm, NULL);
    uv_close((uv_handle_t *)&st.sigint, NULL);
    uv_close((uv_handle_t *)&st.test_clock, NULL);
    uv_run(app->loop, UV_RUN_DEFAULT);
    serve_close(&st);
    uv_loop_close(app->loop);
    return 0;
}

/* ---------- admin, backup, version ---------- */

static int open_admin_db(const struct config *cfg, sqlite3 **ret, char *err, size_t errlen)
{
    if (data_dir_prepare(cfg->data_dir, err, errlen) < 0)
        return -EINVAL;
    char *path = db_path_of(cfg->data_dir);
    sqlite3 *h;
    int rc = sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    free(path);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database: %s", sqlite3_errstr(rc));
        sqlite3_close(h);
        return -EINVAL;
    }
    sqlite3_busy_timeout(h, 10000); /* a running server holds the lock only for one tick */
    sqlite3_exec(h, "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON", NULL, NULL, NULL);
    if (db_migrate(h, err, errlen) < 0) {
        sqlite3_close(h);
        return -EINVAL;
    }
    *ret = h;
    return 0;
}

static int print_created(const char *fields[][2], int n)
{
    struct buf b;
    buf_init(&b, 4096);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    for (int i = 0; i < n; i++)
        jw_kstr(&w, fields[i][0], fields[i][1]);
    jw_obj_close(&w);
    jw_finish(&w);
    printf("%s\n", buf_cstr(&b));
    buf_release(&b);
    return 0;
}

static int admin_create_tenant(struct config *cfg)
{
    char err[512], id[UUID_STR_LEN];
    sqlite3 *h;
    if (open_admin_db(cfg, &h, err, sizeof(err)) < 0)
        return usage_error(err);
    int r = identity_tenant_create(h, cfg->name, cfg->domain, cfg->plan, cfg->allow_registration,
                                   cfg->default_role, id, err, sizeof(err));
    sqlite3_close(h);
    if (r < 0)
        return usage_error(err);
    const char *f[][2] = {{"id", id}, {"name", cfg->name}, {"domain", cfg->domain},
                          {"plan", cfg->plan ? cfg->plan : "starter"}, {"status", "active"}};
    return print_created(f, 5);
}

static int read_password(char *out, size_t n, int min_len)
{
    if (fgets(out, (int)n, stdin) == NULL)
        return -EINVAL;
    out[strcspn(out, "\r\n")] = '\0';
    return (int)strlen(out) >= min_len ? 0 : -EINVAL;
}

static int admin_create_user(struct config *cfg)
{
    char err[512], id[UUID_STR_LEN], tid[UUID_STR_LEN], pw[1024], hash[IDENTITY_HASH_LEN];
    if (!cfg->password_stdin)
        return usage_error("create-user needs --password-stdin (the password is read from stdin)");
    if (read_password(pw, sizeof(pw), cfg->password_min_length) < 0) {
        snprintf(err, sizeof(err), "password on stdin must be at least %d characters",
                 cfg->password_min_length);
        return usage_error(err);
    }
    int r = identity_password_hash(pw, hash);
    sodium_memzero(pw, sizeof(pw));
    if (r < 0)
        return usage_error("out of memory hashing the password");
    sqlite3 *h;
    if (open_admin_db(cfg, &h, err, sizeof(err)) < 0)
        return usage_error(err);
    r = identity_user_create(h, cfg->tenant, cfg->email, cfg->name, cfg->role, hash, id, tid, err,
                             sizeof(err));
    sqlite3_close(h);
    if (r < 0)
        return usage_error(err);
    const char *f[][2] = {{"id", id}, {"tenant_id", tid}, {"email", cfg->email},
                          {"name", cfg->name}, {"roles", cfg->role}};
    return print_created(f, 5);
}

static int cmd_backup(struct config *cfg)
{
    char err[512];
    if (cfg->nargs != 1)
        return usage_error("backup needs exactly one OUTPUT.db argument");
    sqlite3 *src, *dst;
    if (open_admin_db(cfg, &src, err, sizeof(err)) < 0)
        return usage_error(err);
    if (sqlite3_open(cfg->args[0], &dst) != SQLITE_OK) {
        snprintf(err, sizeof(err), "cannot create '%s': %s", cfg->args[0], sqlite3_errmsg(dst));
        sqlite3_close(dst);
        sqlite3_close(src);
        return usage_error(err);
    }
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    int rc = SQLITE_OK;
    while (b && (rc = sqlite3_backup_step(b, 256)) == SQLITE_OK)
        ;
    sqlite3_backup_finish(b);
    int ok = rc == SQLITE_DONE;
    if (!ok)
        fprintf(stderr, "tessera: backup failed: %s\n", sqlite3_errmsg(dst));
    sqlite3_close(dst);
    sqlite3_close(src);
    if (ok)
        printf("{\"backup\":\"%s\",\"status\":\"completed\"}\n", cfg->args[0]);
    return ok ? 0 : 1;
}

static int cmd_version(void)
{
    printf("tessera %s\n", TESSERA_VERSION);
    printf("  libuv %s\n  llhttp %d.%d.%d\n  sqlite %s\n  libsodium %s\n  %s\n  jansson %s\n",
           uv_version_string(), LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH,
           sqlite3_libversion(), sodium_version_string(), tls_version_string(),
           jansson_version_str());
    return 0;
}

/* ---------- routes ---------- */

static void routes_roles(struct jw *w, const char *key, unsigned roles)
{
    jw_key(w, key);
    jw_arr_open(w);
    for (int i = 0; role_names[i]; i++)
        if (roles & (1u << i))
            jw_str(w, role_names[i]);
    jw_arr_close(w);
}

static void routes_scopes(struct jw *w, unsigned scopes)
{
    static const char *const names[] = {"read", "write", "internal"};
    jw_key(w, "scopes");
    jw_arr_open(w);
    for (int i = 0; i < 3; i++)
        if (scopes & (1u << i))
            jw_str(w, names[i]);
    jw_arr_close(w);
}

static void routes_flags(struct jw *w, unsigned flags)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {
        {RF_PUBLIC, "public"},           {RF_JSON_BODY, "json_body"},
        {RF_BIG_BODY, "big_body"},       {RF_WEBSOCKET, "websocket"},
        {RF_NO_METRICS, "no_metrics"},   {RF_SPOOL_BODY, "spool_body"},
        {RF_RATE_TENANT, "rate_tenant"}, {RF_NO_AUDIT, "no_audit"},
        {RF_NO_SHED, "no_shed"},         {RF_CREDENTIAL_OPTIONAL, "credential_optional"},
    };
    _Static_assert(RF_CREDENTIAL_OPTIONAL == 1 << 9,
                   "a flag after RF_CREDENTIAL_OPTIONAL needs its name here");
    jw_key(w, "flags");
    jw_arr_open(w);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (flags & names[i].bit)
            jw_str(w, names[i].name);
    jw_arr_close(w);
}

/* "public", "user", "key" or "user,key": which credentials the permission row accepts. */
static const char *routes_auth_kind(const struct route *rt, const struct permission *p)
{
    if (rt->flags & RF_PUBLIC)
        return "public";
    if (p == NULL)
        return "none";
    bool user = (p->roles_any | p->roles_self) != 0, key = p->key_scopes != 0;
    return user && key ? "user,key" : user ? "user" : key ? "key" : "none";
}

static void routes_print_one(const struct route *rt, enum surface s, struct buf *b)
{
    const struct permission *p = (rt->flags & RF_PUBLIC) ? NULL : perm_find(rt->permission);
    struct jw w;
    b->len = 0;
    jw_init(&w, b);
    jw_obj_open(&w);
    jw_kstr(&w, "method", rt->method);
    jw_kstr(&w, "path", rt->path);
    jw_kstr(&w, "surface", surface_name(s));
    jw_kstr(&w, "permission", rt->permission);
    jw_kstr(&w, "auth", routes_auth_kind(rt, p));
    routes_roles(&w, "roles", p ? p->roles_any : 0);
    routes_roles(&w, "self_roles", p ? p->roles_self : 0);
    routes_scopes(&w, p ? p->key_scopes : 0);
    jw_kstr(&w, "self_param", rt->self_param);
    jw_kstr(&w, "rate_class", rt->rate_class);
    jw_kstr(&w, "where", rt->where == RUN_POOL ? "pool" : "loop");
    jw_kint(&w, "cache_ttl_s", rt->cache_ttl_s);
    routes_flags(&w, rt->flags);
    jw_obj_close(&w);
    jw_finish(&w);
    printf("%s\n", buf_cstr(b));
}

/* Every registered route as one JSON line, straight from the route tables the server loads:
 * tools/check isolation reads it, so a new route cannot escape the probe. */
static int cmd_routes(int argc, char **argv)
{
    if (argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
        printf("usage: tessera routes\n  prints every registered route as one JSON line: method, "
               "path, surface, permission, auth, roles, self_roles, scopes, self_param, "
               "rate_class, where, cache_ttl_s, flags\n");
        return 0;
    }
    if (argc > 2)
        return usage_error("routes takes no arguments (try --help)");
    struct buf b;
    buf_init(&b, 64 * 1024);
    for (size_t t = 0; t < app_route_tables_count; t++)
        for (size_t i = 0; i < app_route_tables[t]->n; i++)
            routes_print_one(&app_route_tables[t]->routes[i], app_route_tables[t]->surface, &b);
    buf_release(&b);
    return fflush(stdout) == 0 ? 0 : 1;
}

static const char USAGE[] =
    "tessera serve   [--data DIR] [--listen HOST:PORT] [--demo] [--config FILE] ...\n"
    "       tessera admin create-tenant --data DIR --name NAME --domain DOMAIN [--plan PLAN]\n"
    "       tessera admin create-user   --data DIR --tenant DOMAIN --email EMAIL --name NAME\n"
    "                                   --role ROLE[,ROLE...] --password-stdin\n"
    "       tessera backup  --data DIR OUTPUT.db\n"
    "       tessera routes                         (every registered route, JSON lines)\n"
    "       tessera version";

struct command {
    const char *name, *sub;
    unsigned mask;
    const char *usage;
    int (*run)(struct config *cfg);
};

static const struct command commands[] = {
    {"serve", NULL, CMD_SERVE, "tessera serve [options]", cmd_serve},
    {"admin", "create-tenant", CMD_TENANT, "tessera admin create-tenant [options]",
     admin_create_tenant},
    {"admin", "create-user", CMD_USER, "tessera admin create-user [options] < password",
     admin_create_user},
    {"backup", NULL, CMD_BACKUP, "tessera backup [--data DIR] OUTPUT.db", cmd_backup},
};

static int run_command(const struct command *c, int argc, char **argv)
{
    struct config cfg;
    char err[512];
    int r = config_load(&cfg, c->mask, argc, argv, err, sizeof(err));
    if (r == 1)
        config_print_help(c->mask, c->usage);
    else if (r < 0)
        r = usage_error(err);
    else if (log_init(cfg.log_format, cfg.log_level) < 0)
        r = usage_error("bad --log-format or --log-level");
    else if (c->mask != CMD_BACKUP && cfg.nargs > 0) {
        snprintf(err, sizeof(err), "unexpected argument '%s' (try --help)", cfg.args[0]);
        r = usage_error(err);
    } else
        r = c->run(&cfg);
    if (r == 1)
        r = 0;
    config_free(&cfg);
    return r;
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        printf("usage: %s\n", USAGE);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version"))
        return cmd_version();
    if (!strcmp(argv[1], "routes"))
        return cmd_routes(argc, argv);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        const struct command *c = &commands[i];
        if (strcmp(argv[1], c->name) != 0)
            continue;
        if (c->sub == NULL)
            return run_command(c, argc - 2, argv + 2);
        if (argc >= 3 && !strcmp(argv[2], c->sub))
            return run_command(c, argc - 3, argv + 3);
    }
    if (!strcmp(argv[1], "admin")) {
        if (argc >= 3 && !strcmp(argv[2], "--help")) {
            printf("usage: %s\n", USAGE);
            return 0;
        }
        return usage_error("admin needs create-tenant or create-user (try --help)");
    }
    fprintf(stderr, "tessera: unknown command '%s' (try --help)\n", argv[1]);
    return EXIT_USAGE;
}
