/* recs-gen: writes the deterministic catalog and interaction log of recs_gen.c straight into a
 * Tessera data dir's database (tools/bench/recs) and/or as NDJSON files, including each user's
 * planted taste clusters (the ground truth tests compare against). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recs_gen.h"
#include "recs_gen_db.h"

struct opts {
    const char *db, *tenant, *items_out, *users_out, *interactions_out;
    int dim;
};

struct files {
    FILE *items, *users, *interactions;
    long n_items, n_users, n_interactions;
};

static void iso8601(int64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    /* the year is at most 9999 (rg_config_check bounds every time) */
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", (tm.tm_year + 1900) % 10000,
             (tm.tm_mon + 1) % 100, tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100,
             tm.tm_sec % 100, (int)(ms % 1000));
}

/* ---------- NDJSON (generated text needs no escaping beyond " and \) ---------- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* The item as POST /internal/data/items takes it, plus its planted cluster. */
static int item_cb(void *arg, const struct rg_item *it)
{
    struct files *o = arg;
    char created[32];
    iso8601(it->created_at, created);
    fputs("{\"item_id\":", o->items);
    json_str(o->items, it->item_id);
    fputs(",\"title\":", o->items);
    json_str(o->items, it->title);
    fputs(",\"description\":", o->items);
    json_str(o->items, it->description);
    fputs(",\"category\":", o->items);
    json_str(o->items, it->category);
    fputs(",\"tags\":[", o->items);
    for (int i = 0; i < it->ntags; i++) {
        if (i)
            fputc(',', o->items);
        json_str(o->items, it->tags[i]);
    }
    fprintf(o->items, "],\"metadata\":%s,\"created_at\":\"%s\",\"cluster\":%d}\n", it->metadata,
            created, it->cluster);
    o->n_items++;
    return ferror(o->items) ? 1 : 0;
}

static int user_cb(void *arg, const struct rg_user *u)
{
    struct files *o = arg;
    fprintf(o->users, "{\"user_id\":\"%s\",\"clusters\":[%d", u->user_id, u->clusters[0]);
    if (u->nclusters == 2)
        fprintf(o->users, ",%d", u->clusters[1]);
    fprintf(o->users, "],\"shares\":[%.4f", u->share[0]);
    if (u->nclusters == 2)
        fprintf(o->users, ",%.4f", u->share[1]);
    fprintf(o->users, "],\"interactions\":%d}\n", u->interactions);
    o->n_users++;
    return ferror(o->users) ? 1 : 0;
}

/* The interaction as POST /internal/data/interactions takes it, plus its id. */
static int interaction_cb(void *arg, const struct rg_interaction *x)
{
    struct files *o = arg;
    char ts[32];
    iso8601(x->timestamp, ts);
    fprintf(o->interactions,
            "{\"interaction_id\":\"%s\",\"user_id\":\"%s\",\"item_id\":\"%s\","
            "\"interaction_type\":\"%s\",\"timestamp\":\"%s\",\"context\":{\"device_type\":\"%s\","
            "\"session_id\":\"%s\"}}\n",
            x->interaction_id, x->user_id, x->item_id, x->type, ts, x->device_type, x->session_id);
    o->n_interactions++;
    return ferror(o->interactions) ? 1 : 0;
}

static FILE *open_out(const char *path)
{
    if (!path)
        return NULL;
    FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
    if (!f)
        fprintf(stderr, "recs-gen: %s: %s\n", path, strerror(errno));
    return f;
}

static int write_files(const struct rg_config *c, const struct opts *op)
{
    struct files o = {open_out(op->items_out), open_out(op->users_out),
                      open_out(op->interactions_out)};
    int rc = (op->items_out && !o.items) || (op->users_out && !o.users) ||
             (op->interactions_out && !o.interactions);
    struct rg_callbacks cb = {o.items ? item_cb : NULL, o.users ? user_cb : NULL,
                              o.interactions ? interaction_cb : NULL, &o};
    if (rc == 0)
        rc = rg_run(c, &cb) != 0;
    FILE *fs[3] = {o.items, o.users, o.interactions};
    for (int i = 0; i < 3; i++)
        if (fs[i] && fs[i] != stdout && fclose(fs[i]) != 0)
            rc = 1;
    if (rc)
        fprintf(stderr, "recs-gen: writing the NDJSON files failed\n");
    return rc;
}

/* ---------- straight into a database ---------- */

static int tenant_exists(sqlite3 *db, const char *tenant)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM tenants WHERE id = ?", -1, &q, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(q, 1, tenant, -1, SQLITE_STATIC);
    int found = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_finalize(q);
    return found;
}

static int write_db(const struct rg_config *c, const struct opts *op, struct rg_db_counts *ret)
{
    sqlite3 *db = NULL;
    char err[512] = "";
    int rc = sqlite3_open_v2(op->db, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK ? 0 : 1;
    if (rc) {
        fprintf(stderr, "recs-gen: %s: %s\n", op->db, db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return 1;
    }
    sqlite3_busy_timeout(db, 10000);
    sqlite3_exec(db, "PRAGMA cache_size=-524288; PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    if (!tenant_exists(db, op->tenant)) {
        fprintf(stderr, "recs-gen: no tenant %s in %s (tessera admin create-tenant)\n",
                op->tenant, op->db);
        sqlite3_close(db);
        return 1;
    }
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        rc = 1;
    if (rc == 0 && rg_db_load(db, op->tenant, c, c->end_ms, op->dim, ret, err, sizeof(err)) < 0)
        rc = 1;
    if (rc == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, sizeof(err), "commit: %s", sqlite3_errmsg(db));
        rc = 1;
    }
    if (rc) {
        fprintf(stderr, "recs-gen: %s\n", err[0] ? err : sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    }
    sqlite3_close(db);
    return rc;
}

/* ---------- options ---------- */

/* "1700000000000" (unix ms) or ISO 8601 "YYYY-MM-DD[THH:MM[:SS[.fff]]][Z]" (UTC). */
static int parse_end(const char *s, int64_t *ret_ms)
{
    char *e;
    errno = 0;
    long long v = strtoll(s, &e, 10);
    if (*e == '\0' && errno == 0 && v > 0) {
        *ret_ms = v;
        return 0;
    }
    int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0, n = 0, k = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3)
        return -1;
    const char *p = s + n;
    if (*p == 'T' || *p == ' ') {
        if (sscanf(p + 1, "%2d:%2d%n", &h, &mi, &k) != 2)
            return -1;
        p += 1 + k;
        if (*p == ':' && sscanf(p + 1, "%2d%n", &sec, &k) == 1) {
            p += 1 + k;
            if (*p == '.' && sscanf(p + 1, "%3d%n", &ms, &k) == 1)
                p += 1 + k;
        }
    }
    if (*p == 'Z')
        p++;
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 59)
        return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                    .tm_min = mi, .tm_sec = sec};
    *ret_ms = (int64_t)timegm(&tm) * 1000 + ms;
    return 0;
}

static int parse_int(const char *s, long lo, long hi, int *ret)
{
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (*e || errno || v < lo || v > hi)
        return -1;
    *ret = (int)v;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *ret)
{
    char *e;
    errno = 0;
    double v = strtod(s, &e);
    if (*e || errno || !(v >= lo && v <= hi))
        return -1;
    *ret = v;
    return 0;
}

static void usage(FILE *f)
{
    fputs("usage: recs-gen [--db PATH --tenant ID] [--items-out FILE] [--users-out FILE]\n"
          "         [--interactions-out FILE] [--scale X] [--seed N] [--items N] [--users N]\n"
          "         [--interactions N] [--clusters K] [--days N] [--end ISO8601|unix-ms]\n"
          "         [--noise X] [--dim N]\n"
          "Generates the recs demo data (defaults: the sizes of `tessera serve --demo`, times\n"
          "--scale, ending now; size options given after --scale override it). --db writes\n"
          "rc_items, rc_item_content and rc_interactions of tenant ID into a data dir's\n"
          "tessera.db (created by `tessera admin`), with created_at = --end. The *-out options\n"
          "write NDJSON (- for stdout): items and interactions in the shapes of the internal\n"
          "data routes, users with their planted taste clusters. The same options (with a fixed\n"
          "--end) give the same records. Prints the counts as JSON on stdout.\n",
          f);
}

enum { O_DB = 256, O_TENANT, O_ITEMS_OUT, O_USERS_OUT, O_INTER_OUT, O_SCALE, O_SEED, O_ITEMS,
       O_USERS, O_INTER, O_CLUSTERS, O_DAYS, O_END, O_NOISE, O_DIM, O_HELP };

static int parse_one(int ch, const char *v, struct rg_config *c, struct opts *o)
{
    double scale;
    switch (ch) {
    case O_DB: o->db = v; return 0;
    case O_TENANT: o->tenant = v; return 0;
    case O_ITEMS_OUT: o->items_out = v; return 0;
    case O_USERS_OUT: o->users_out = v; return 0;
    case O_INTER_OUT: o->interactions_out = v; return 0;
    case O_SCALE:
        if (parse_double(v, 1e-6, 1, &scale) < 0)
            return -1;
        rg_config_demo(c, scale, c->end_ms);
        return 0;
    case O_SEED: {
        char *e;
        errno = 0;
        c->seed = strtoull(v, &e, 10);
        return *e || errno ? -1 : 0;
    }
    case O_ITEMS: return parse_int(v, 1, RG_ITEMS_MAX, &c->items);
    case O_USERS: return parse_int(v, 1, RG_USERS_MAX, &c->users);
    case O_INTER: return parse_int(v, 1, RG_INTERACTIONS_MAX, &c->interactions);
    case O_CLUSTERS: return parse_int(v, 1, RG_CLUSTERS_MAX, &c->clusters);
    case O_DAYS: return parse_int(v, 1, RG_DAYS_MAX, &c->days);
    case O_END: return parse_end(v, &c->end_ms);
    case O_NOISE: return parse_double(v, 0, 1, &c->noise);
    case O_DIM: return parse_int(v, 1, 512, &o->dim);
    case O_HELP: usage(stdout); exit(0);
    }
    return -1;
}

static int parse_args(int argc, char **argv, struct rg_config *c, struct opts *o)
{
    static const struct option opts[] = {
        {"db", required_argument, 0, O_DB},           {"tenant", required_argument, 0, O_TENANT},
        {"items-out", required_argument, 0, O_ITEMS_OUT},
        {"users-out", required_argument, 0, O_USERS_OUT},
        {"interactions-out", required_argument, 0, O_INTER_OUT},
        {"scale", required_argument, 0, O_SCALE},     {"seed", required_argument, 0, O_SEED},
        {"items", required_argument, 0, O_ITEMS},     {"users", required_argument, 0, O_USERS},
        {"interactions", required_argument, 0, O_INTER},
        {"clusters", required_argument, 0, O_CLUSTERS}, {"days", required_argument, 0, O_DAYS},
        {"end", required_argument, 0, O_END},         {"noise", required_argument, 0, O_NOISE},
        {"dim", required_argument, 0, O_DIM},         {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    /* --end first: --scale re-derives the sizes but keeps the end */
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--end") && parse_end(argv[i + 1], &c->end_ms) < 0)
            return -1;
    int ch, idx = 0;
    while ((ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        if (ch == '?' || parse_one(ch, optarg, c, o) < 0) {
            if (ch != '?')
                fprintf(stderr, "recs-gen: bad value for --%s: %s\n", opts[idx].name, optarg);
            usage(stderr);
            return -1;
        }
    }
    const char *msg;
    if (optind != argc || (!o->db && !o->items_out && !o->users_out && !o->interactions_out) ||
        (o->db && !o->tenant)) {
        usage(stderr);
        return -1;
    }
    if (rg_config_check(c, &msg) < 0) {
        fprintf(stderr, "recs-gen: %s\n", msg);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct rg_config c;
    rg_config_demo(&c, 1, (int64_t)time(NULL) * 1000);
    struct opts o = {.dim = 128};
    if (parse_args(argc, argv, &c, &o) < 0)
        return 2;
    struct rg_db_counts n = {0};
    if ((o.items_out || o.users_out || o.interactions_out) && write_files(&c, &o))
        return 1;
    if (o.db && write_db(&c, &o, &n))
        return 1;
    char end[32];
    iso8601(c.end_ms, end);
    printf("{\"seed\":%llu,\"end\":\"%s\",\"end_ms\":%lld,\"days\":%d,\"items\":%d,\"users\":%d,"
           "\"interactions\":%d,\"clusters\":%d,\"noise\":%g",
           (unsigned long long)c.seed, end, (long long)c.end_ms, c.days, c.items, c.users,
           c.interactions, c.clusters, c.noise);
    if (o.db) {
        printf(",\"types\":{");
        for (int k = 0; k < RG_NTYPES; k++)
            printf("%s\"%s\":%lld", k ? "," : "", rg_type_names[k], (long long)n.types[k]);
        printf("},\"write_s\":%.2f,\"index_s\":%.2f", n.write_s, n.index_s);
    }
    printf("}\n");
    return 0;
}
