/* Configuration: one option table; flags beat TESSERA_* environment beat the INI file beat defaults. */
#ifndef TS_CONFIG_H
#define TS_CONFIG_H
#include <stdbool.h>
#include <stddef.h>

#define CONFIG_MAX_LIST 16

enum config_type { CFG_STR, CFG_INT, CFG_DOUBLE, CFG_BOOL, CFG_ENUM, CFG_LIST };

/* Which commands accept an option (bit mask). */
enum {
    CMD_SERVE = 1 << 0,
    CMD_TENANT = 1 << 1,
    CMD_USER = 1 << 2,
    CMD_BACKUP = 1 << 3,
    CMD_ALL = 0xF
};

struct config_list {
    int n;
    char *v[CONFIG_MAX_LIST];
};

struct config {
    char *data_dir, *listen, *config_file, *tls_cert, *tls_key;
    char *durability, *log_format, *log_level, *default_tenant;
    char *name, *domain, *plan, *tenant, *email, *role, *default_role;
    char *jwt_secret_file, *public_url, *smtp_url, *smtp_user, *smtp_password, *smtp_from;
    bool demo, password_stdin, allow_registration;
    int password_min_length, max_upload_mb;
    int max_batch_mb;        /* body limit of batch routes (RF_BIG_BODY) */
    int max_jobs_per_tenant; /* queued + running jobs of one tenant, all kinds together */
    int workers, max_connections, max_body_kb, max_header_kb, idle_timeout_s, header_timeout_s;
    int query_guard_ms, ws_max_message_kb, ws_send_queue_kb, jwt_ttl_s, shutdown_deadline_s;
    int sla_check_ms;        /* desk SLA breach timer period */
    int max_inflight;        /* requests handled at once before new ones get 503 */
    int shed_queue_ms;       /* pool routes shed while the pool's queue head waited this long */
    int shed_wait_ms;        /* a request that waited this long for a worker is shed unrun */
    int job_workers;         /* threads of the background pool (0: CPUs, at least 2) */
    int recs_quota_starter, recs_quota_pro, recs_quota_enterprise; /* monthly api calls, 0 = unlimited */
    int recs_ann_min_items;  /* items from which a model gets an IVF index (0: never) */
    int recs_q8_min_items;   /* items from which a model keeps an int8 copy of V (0: never) */
    int recs_exact_index_min_items; /* items from which the exact search has its cluster index */
    int recs_ann_probe_pct;  /* % of the index's lists a search scans */
    double demo_scale;       /* --demo commerce and recs sizes times this */
    struct config_list cors_origins, rate_limits;
    int nargs;
    char *args[4];           /* positional arguments */
};

struct config_opt {
    const char *name;        /* flag name without dashes: "log-format" */
    enum config_type type;
    size_t offset;
    double min, max;         /* CFG_INT and CFG_DOUBLE bounds */
    const char *def;         /* default as text, NULL for none */
    const char *choices;     /* CFG_ENUM: "a|b|c" */
    unsigned cmds;
    const char *help;
};

extern const struct config_opt config_opts[];

/* Loads config for cmd. Returns 0, 1 when --help was asked (help printed to stdout),
 * or -EINVAL with a one-line message in err. */
int config_load(struct config *c, unsigned cmd, int argc, char **argv, char *err, size_t errlen);
void config_free(struct config *c);
void config_print_help(unsigned cmd, const char *usage);
#endif
