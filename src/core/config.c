/* Configuration loading: defaults, then the INI file, then TESSERA_* variables, then flags. */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPT(n, t, f, lo, hi, d, ch, cm, h) {n, t, offsetof(struct config, f), lo, hi, d, ch, cm, h}

const struct config_opt config_opts[] = {
    OPT("data", CFG_STR, data_dir, 0, 0, "./tessera-data", NULL, CMD_ALL, "data directory"),
    OPT("config", CFG_STR, config_file, 0, 0, NULL, NULL, CMD_ALL, "INI file with these options"),
    OPT("listen", CFG_STR, listen, 0, 0, "127.0.0.1:8080", NULL, CMD_SERVE, "HOST:PORT to listen on"),
    OPT("demo", CFG_BOOL, demo, 0, 1, "false", NULL, CMD_SERVE, "load demo data into a fresh data dir"),
    OPT("demo-scale", CFG_DOUBLE, demo_scale, 0.001, 1, "1", NULL, CMD_SERVE,
        "--demo commerce and recs sizes times this (tests load a small demo)"),
    OPT("tls-cert", CFG_STR, tls_cert, 0, 0, NULL, NULL, CMD_SERVE, "PEM certificate chain (enables TLS)"),
    OPT("tls-key", CFG_STR, tls_key, 0, 0, NULL, NULL, CMD_SERVE, "PEM private key"),
    OPT("cors-origin", CFG_LIST, cors_origins, 0, 0, NULL, NULL, CMD_SERVE,
        "allowed CORS origin (repeatable; * for any)"),
    OPT("workers", CFG_INT, workers, 0, 64, "0", NULL, CMD_SERVE,
        "request worker threads (0: twice the CPUs, at least 4)"),
    OPT("job-workers", CFG_INT, job_workers, 0, 64, "0", NULL, CMD_SERVE,
        "background threads for jobs and alert/dashboard evaluations, below the request "
        "workers' priority (0: one per CPU, at least 2)"),
    OPT("durability", CFG_ENUM, durability, 0, 0, "normal", "normal|full", CMD_SERVE,
        "normal: survives a crash; full: also survives power loss"),
    OPT("log-format", CFG_ENUM, log_format, 0, 0, "json", "json|text", CMD_ALL, "log line format"),
    OPT("log-level", CFG_ENUM, log_level, 0, 0, "info", "debug|info|warn|error", CMD_ALL,
        "lowest level logged"),
    OPT("max-connections", CFG_INT, max_connections, 1, 1000000, "16384", NULL, CMD_SERVE,
        "open connection cap"),
    OPT("max-inflight", CFG_INT, max_inflight, 1, 1000000, "1024", NULL, CMD_SERVE,
        "requests handled at once, per class (loop, pool); past it 503 with Retry-After"),
    OPT("shed-queue-ms", CFG_INT, shed_queue_ms, 0, 3600000, "1000", NULL, CMD_SERVE,
        "pool routes get 503 while the oldest request waiting for a worker has waited this long, "
        "or a quarter of it with the queue not empty for all of it (0: only --max-inflight)"),
    OPT("shed-wait-ms", CFG_INT, shed_wait_ms, 0, 3600000, "5000", NULL, CMD_SERVE,
        "a request that waited this long for a worker gets 503 when its turn comes, unrun "
        "(0: never)"),
    OPT("max-body-kb", CFG_INT, max_body_kb, 1, 1048576, "1024", NULL, CMD_SERVE,
        "largest request body (KiB) on ordinary routes"),
    OPT("max-upload-mb", CFG_INT, max_upload_mb, 1, 4096, "25", NULL, CMD_SERVE,
        "largest file upload (MiB); 413 past it"),
    OPT("max-batch-mb", CFG_INT, max_batch_mb, 1, 4096, "64", NULL, CMD_SERVE,
        "largest body (MiB) on batch routes (commerce batch ingest, recs uploads); 413 past it"),
    OPT("max-jobs-per-tenant", CFG_INT, max_jobs_per_tenant, 1, 10000, "16", NULL, CMD_SERVE,
        "queued + running jobs one tenant may have, all kinds together; 429 past it"),
    OPT("max-header-kb", CFG_INT, max_header_kb, 1, 1024, "16", NULL, CMD_SERVE,
        "largest request header block (KiB)"),
    OPT("idle-timeout", CFG_INT, idle_timeout_s, 1, 86400, "60", NULL, CMD_SERVE,
        "seconds a keep-alive connection may sit idle"),
    OPT("header-timeout", CFG_INT, header_timeout_s, 1, 3600, "10", NULL, CMD_SERVE,
        "seconds a client has to send a whole request"),
    OPT("query-guard-ms", CFG_INT, query_guard_ms, 1, 60000, "250", NULL, CMD_SERVE,
        "longest a loop-thread SQL statement may run"),
    OPT("ws-max-message-kb", CFG_INT, ws_max_message_kb, 1, 65536, "1024", NULL, CMD_SERVE,
        "largest WebSocket message (KiB)"),
    OPT("ws-send-queue-kb", CFG_INT, ws_send_queue_kb, 1, 65536, "1024", NULL, CMD_SERVE,
        "WebSocket per-client send queue cap (KiB)"),
    OPT("jwt-ttl", CFG_INT, jwt_ttl_s, 60, 604800, "3600", NULL, CMD_SERVE,
        "access token lifetime (seconds)"),
    OPT("shutdown-deadline", CFG_INT, shutdown_deadline_s, 1, 600, "10", NULL, CMD_SERVE,
        "seconds in-flight requests get on SIGTERM"),
    OPT("sla-check-ms", CFG_INT, sla_check_ms, 50, 600000, "5000", NULL, CMD_SERVE,
        "how often (ms) the desk SLA timer looks for passed deadlines"),
    OPT("recs-quota-starter", CFG_INT, recs_quota_starter, 0, 2000000000, "100000", NULL,
        CMD_SERVE, "recs API calls a month on the starter plan (0: unlimited)"),
    OPT("recs-quota-pro", CFG_INT, recs_quota_pro, 0, 2000000000, "2000000", NULL, CMD_SERVE,
        "recs API calls a month on the pro plan (0: unlimited)"),
    OPT("recs-quota-enterprise", CFG_INT, recs_quota_enterprise, 0, 2000000000, "0", NULL,
        CMD_SERVE, "recs API calls a month on the enterprise plan (0: unlimited)"),
    OPT("recs-ann-min-items", CFG_INT, recs_ann_min_items, 0, 2000000000, "0", NULL,
        CMD_SERVE, "catalogs of at least this many items are served through an approximate IVF "
        "index instead of the exact scan (0, the default: always exact)"),
    OPT("recs-q8-min-items", CFG_INT, recs_q8_min_items, 0, 2000000000, "1024", NULL,
        CMD_SERVE, "catalogs of at least this many items keep an int8 copy of the item matrix "
        "(a quarter of its size) that speeds up the exact scan; answers are the same (0: never)"),
    OPT("recs-exact-index-min-items", CFG_INT, recs_exact_index_min_items, 0, 2000000000,
        "10000", NULL, CMD_SERVE, "catalogs of at least this many items get a cluster index that "
        "finds the exact top k while scoring a few rows; answers are the same (0: never)"),
    OPT("recs-ann-probe-pct", CFG_INT, recs_ann_probe_pct, 1, 100, "2", NULL, CMD_SERVE,
        "share (%) of an IVF index's lists a search scans: more is slower and misses less"),
    OPT("rate-limit", CFG_LIST, rate_limits, 0, 0, NULL, NULL, CMD_SERVE,
        "CLASS=REQUESTS/SECONDS, e.g. auth=20/60 (repeatable)"),
    OPT("default-tenant", CFG_STR, default_tenant, 0, 0, NULL, NULL, CMD_SERVE,
        "tenant domain that self-registration joins"),
    OPT("jwt-secret-file", CFG_STR, jwt_secret_file, 0, 0, NULL, NULL, CMD_SERVE,
        "JWT signing secret (hex); created 0600 on first start [default DATA/jwt.secret]"),
    OPT("password-min-length", CFG_INT, password_min_length, 8, 1024, "10", NULL,
        CMD_SERVE | CMD_USER, "shortest password accepted"),
    OPT("public-url", CFG_STR, public_url, 0, 0, NULL, NULL, CMD_SERVE,
        "base URL in emailed links [default http(s)://LISTEN]"),
    OPT("smtp-url", CFG_STR, smtp_url, 0, 0, NULL, NULL, CMD_SERVE,
        "smtp://host:port or smtps://...; unset: mail is written to DATA/mail/*.eml"),
    OPT("smtp-user", CFG_STR, smtp_user, 0, 0, NULL, NULL, CMD_SERVE, "SMTP user name"),
    OPT("smtp-password", CFG_STR, smtp_password, 0, 0, NULL, NULL, CMD_SERVE, "SMTP password"),
    OPT("smtp-from", CFG_STR, smtp_from, 0, 0, "Tessera <no-reply@localhost>", NULL, CMD_SERVE,
        "From address of outgoing mail"),
    OPT("allow-registration", CFG_BOOL, allow_registration, 0, 1, "false", NULL, CMD_TENANT,
        "let people self-register into this tenant"),
    OPT("default-role", CFG_STR, default_role, 0, 0, "viewer", NULL, CMD_TENANT,
        "role a self-registered user gets"),
    OPT("name", CFG_STR, name, 0, 0, NULL, NULL, CMD_TENANT | CMD_USER, "display name"),
    OPT("domain", CFG_STR, domain, 0, 0, NULL, NULL, CMD_TENANT, "tenant domain"),
    OPT("plan", CFG_ENUM, plan, 0, 0, "starter", "starter|pro|enterprise", CMD_TENANT,
        "subscription plan"),
    OPT("tenant", CFG_STR, tenant, 0, 0, NULL, NULL, CMD_USER, "tenant domain"),
    OPT("email", CFG_STR, email, 0, 0, NULL, NULL, CMD_USER, "user email"),
    OPT("role", CFG_STR, role, 0, 0, NULL, NULL, CMD_USER, "ROLE[,ROLE...]"),
    OPT("password-stdin", CFG_BOOL, password_stdin, 0, 1, "false", NULL, CMD_USER,
        "read the password from standard input"),
    {NULL, CFG_STR, 0, 0, 0, NULL, NULL, 0, NULL},
};

static const struct config_opt *opt_find(const char *name, size_t n, unsigned cmd)
{
    for (const struct config_opt *o = config_opts; o->name; o++) {
        if (!(o->cmds & cmd) || strlen(o->name) != n)
            continue;
        bool same = true;
        for (size_t i = 0; i < n && same; i++) {
            char a = name[i] == '_' ? '-' : (char)tolower((unsigned char)name[i]);
            same = a == o->name[i];
        }
        if (same)
            return o;
    }
    return NULL;
}

static bool enum_has(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return true;
        p += len + (bar ? 1 : 0);
    }
    return false;
}

/* Sets one option from text; `replace_list` clears a list first (lower-priority layer). */
static int opt_set(struct config *c, const struct config_opt *o, const char *v, bool replace_list,
                   char *err, size_t errlen)
{
    void *field = (char *)c + o->offset;
    switch (o->type) {
    case CFG_STR:
    case CFG_ENUM: {
        if (o->type == CFG_ENUM && !enum_has(o->choices, v)) {
            snprintf(err, errlen, "--%s must be one of %s, not '%s'", o->name, o->choices, v);
            return -EINVAL;
        }
        char **s = field;
        free(*s);
        *s = strdup(v);
        return 0;
    }
    case CFG_INT: {
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < o->min || x > o->max) {
            snprintf(err, errlen, "--%s must be an integer in %d..%d, not '%s'", o->name,
                     (int)o->min, (int)o->max, v);
            return -EINVAL;
        }
        *(int *)field = (int)x;
        return 0;
    }
    case CFG_DOUBLE: {
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !(x >= o->min && x <= o->max)) {
            snprintf(err, errlen, "--%s must be a number in %g..%g, not '%s'", o->name, o->min,
                     o->max, v);
            return -EINVAL;
        }
        *(double *)field = x;
        return 0;
    }
    case CFG_BOOL: {
        bool t = !strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on");
        bool f = !strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off");
        if (!t && !f) {
            snprintf(err, errlen, "--%s must be true or false, not '%s'", o->name, v);
            return -EINVAL;
        }
        *(bool *)field = t;
        return 0;
    }
    case CFG_LIST: {
        struct config_list *l = field;
        if (replace_list) {
            for (int i = 0; i < l->n; i++)
                free(l->v[i]);
            l->n = 0;
        }
        /* comma-separated in env/INI, one per flag: both split on commas */
        const char *p = v;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (len > 0) {
                if (l->n == CONFIG_MAX_LIST) {
                    snprintf(err, errlen, "--%s takes at most %d values", o->name,
                             CONFIG_MAX_LIST);
                    return -EINVAL;
                }
                l->v[l->n++] = strndup(p, len);
            }
            p += len + (comma ? 1 : 0);
        }
        return 0;
    }
    }
    return -EINVAL;
}

struct ini_ctx {
    struct config *c;
    unsigned cmd;
    char *err;
    size_t errlen;
    int r;
};

static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
    (void)section;
    struct ini_ctx *x = user;
    const struct config_opt *o = opt_find(name, strlen(name), CMD_ALL);
    if (o == NULL) {
        snprintf(x->err, x->errlen, "unknown option '%s' in config file", name);
        x->r = -EINVAL;
        return 0;
    }
    if (!(o->cmds & x->cmd))
        return 1; /* belongs to another command */
    if (opt_set(x->c, o, value, false, x->err, x->errlen) < 0) {
        x->r = -EINVAL;
        return 0;
    }
    return 1;
}

static int load_env(struct config *c, unsigned cmd, char *err, size_t errlen)
{
    for (const struct config_opt *o = config_opts; o->name; o++) {
        if (!(o->cmds & cmd) || !strcmp(o->name, "config"))
            continue;
        char var[64] = "TESSERA_";
        size_t k = 8;
        for (const char *p = o->name; *p && k < sizeof(var) - 1; p++)
            var[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        var[k] = '\0';
        const char *v = getenv(var);
        if (v && opt_set(c, o, v, true, err, errlen) < 0)
            return -EINVAL;
    }
    return 0;
}

static int load_defaults(struct config *c, unsigned cmd, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    for (const struct config_opt *o = config_opts; o->name; o++)
        if ((o->cmds & cmd) && o->def && opt_set(c, o, o->def, false, err, errlen) < 0)
            return -EINVAL;
    return 0;
}

/* Finds --config FILE (or TESSERA_CONFIG) before everything else is parsed. */
static const char *find_config_file(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            return argv[i + 1];
        if (!strncmp(argv[i], "--config=", 9))
            return argv[i] + 9;
    }
    return getenv("TESSERA_CONFIG");
}

static int load_flags(struct config *c, unsigned cmd, int argc, char **argv, char *err,
                      size_t errlen)
{
    bool seen_list[64] = {false};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (c->nargs == (int)(sizeof(c->args) / sizeof(c->args[0]))) {
                snprintf(err, errlen, "unexpected argument '%s'", a);
                return -EINVAL;
            }
            c->args[c->nargs++] = strdup(a);
            continue;
        }
        if (!strcmp(a, "--help"))
            return 1;
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        const struct config_opt *o = opt_find(name, n, cmd);
        if (o == NULL) {
            snprintf(err, errlen, "unknown option '%.*s' (try --help)", (int)(n + 2), a);
            return -EINVAL;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (v == NULL && o->type == CFG_BOOL)
            v = "true";
        if (v == NULL) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "option --%s needs a value", o->name);
                return -EINVAL;
            }
            v = argv[++i];
        }
        size_t idx = (size_t)(o - config_opts);
        bool first_list = o->type == CFG_LIST && idx < 64 && !seen_list[idx];
        if (idx < 64)
            seen_list[idx] = true;
        if (opt_set(c, o, v, first_list, err, errlen) < 0)
            return -EINVAL;
    }
    return 0;
}

int config_load(struct config *c, unsigned cmd, int argc, char **argv, char *err, size_t errlen)
{
    if (load_defaults(c, cmd, err, errlen) < 0)
        return -EINVAL;
    const char *file = find_config_file(argc, argv);
    if (file != NULL) {
        struct ini_ctx x = {c, cmd, err, errlen, 0};
        int r = ini_parse(file, ini_cb, &x);
        if (r == -1) {
            snprintf(err, errlen, "cannot open config file '%s'", file);
            return -EINVAL;
        }
        if (x.r < 0)
            return -EINVAL;
        if (r > 0) {
            snprintf(err, errlen, "config file '%s': syntax error on line %d", file, r);
            return -EINVAL;
        }
    }
    if (load_env(c, cmd, err, errlen) < 0)
        return -EINVAL;
    return load_flags(c, cmd, argc, argv, err, errlen);
}

void config_free(struct config *c)
{
    for (const struct config_opt *o = config_opts; o->name; o++) {
        void *field = (char *)c + o->offset;
        if (o->type == CFG_STR || o->type == CFG_ENUM) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (o->type == CFG_LIST) {
            struct config_list *l = field;
            for (int i = 0; i < l->n; i++)
                free(l->v[i]);
            l->n = 0;
        }
    }
    for (int i = 0; i < c->nargs; i++)
        free(c->args[i]);
    c->nargs = 0;
}

void config_print_help(unsigned cmd, const char *usage)
{
    printf("usage: %s\n\noptions (each also read from TESSERA_<NAME> and the --config INI "
           "file; flags win):\n",
           usage);
    for (const struct config_opt *o = config_opts; o->name; o++) {
        if (!(o->cmds & cmd))
            continue;
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s%s", o->name,
                 o->type == CFG_BOOL ? ""
                 : (o->type == CFG_INT || o->type == CFG_DOUBLE) ? " N" : " VALUE");
        printf("  %-28s %s", flag, o->help);
        if (o->type == CFG_ENUM)
            printf(" (%s)", o->choices);
        if (o->def && o->type != CFG_BOOL)
            printf(" [default %s]", o->def);
        printf("\n");
    }
    printf("  %-28s %s\n", "--help", "show this help");
}
