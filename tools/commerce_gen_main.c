/* commerce-gen: writes the deterministic shop of commerce_gen.c as NDJSON files or as
 * ready-to-post batch bodies for POST /api/v1/ingest/batch (tools/bench/commerce). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "commerce_gen.h"

#define RECORD_MAX 4096 /* one record's JSON: every string in it is short and generated */
#define BATCH_MAX 10000 /* the batch route's limit (contract 1.1) */

enum format { F_NDJSON, F_BATCH };

struct out {
    const char *dir, *source_id;
    enum format format;
    int batch_size;
    FILE *f[CG_KIND_N];
    long in_file[CG_KIND_N], files[CG_KIND_N], total[CG_KIND_N];
    long items;                  /* order line items written */
    char rec[RECORD_MAX];
    size_t len;
};

/* ---------- one record's JSON ---------- */

static void put(struct out *o, const char *s)
{
    size_t n = strlen(s);
    if (o->len + n < RECORD_MAX) {
        memcpy(o->rec + o->len, s, n);
        o->len += n;
    }
}

static void put_key(struct out *o, const char *key)
{
    put(o, o->len > 1 ? ",\"" : "\"");
    put(o, key);
    put(o, "\":");
}

static void put_str(struct out *o, const char *key, const char *v)
{
    if (!v)
        return;
    put_key(o, key);
    put(o, "\"");
    for (const char *s = v; *s && o->len + 2 < RECORD_MAX; s++) {
        if (*s == '"' || *s == '\\')
            o->rec[o->len++] = '\\';
        o->rec[o->len++] = *s;
    }
    put(o, "\"");
}

static void put_int(struct out *o, const char *key, long long v)
{
    char b[32];
    snprintf(b, sizeof(b), "%lld", v);
    put_key(o, key);
    put(o, b);
}

/* Ten-thousandths as a decimal number: 129900 -> 12.99. */
static void put_money(struct out *o, const char *key, int64_t m)
{
    char b[48];
    int64_t a = m < 0 ? -m : m;
    int n = snprintf(b, sizeof(b), "%s%lld.%04lld", m < 0 ? "-" : "", (long long)(a / 10000),
                     (long long)(a % 10000));
    while (b[n - 1] == '0' && b[n - 2] != '.')
        b[--n] = '\0';
    put_key(o, key);
    put(o, b);
}

static void put_time(struct out *o, const char *key, int64_t ms)
{
    char b[32];
    cg_iso8601(ms, b);
    put_str(o, key, b);
}

static void format_order(struct out *o, const struct cg_order *r)
{
    put_str(o, "order_id", r->order_id);
    put_str(o, "customer_id", r->customer_id);
    put_time(o, "created_at", r->created_at);
    put_money(o, "total", r->total_m);
    put_str(o, "currency", r->currency);
    put_str(o, "status", r->status);
    put_str(o, "channel", r->channel);
    put_str(o, "region", r->region);
    put(o, ",\"items\":[");
    for (int i = 0; i < r->nitems; i++) {
        char b[160];
        const struct cg_item *it = &r->items[i];
        int64_t p = it->unit_price_m;
        snprintf(b, sizeof(b), "%s{\"product_id\":\"%s\",\"quantity\":%d,\"unit_price\":%lld.%02lld}",
                 i ? "," : "", it->product_id, it->quantity, (long long)(p / 10000),
                 (long long)(p % 10000 / 100));
        put(o, b);
    }
    put(o, "]");
}

static void format_record(struct out *o, const struct cg_record *r)
{
    o->len = 0;
    put(o, "{");
    switch (r->kind) {
    case CG_PRODUCT:
        put_str(o, "product_id", r->u.product.product_id);
        put_str(o, "name", r->u.product.name);
        put_str(o, "category", r->u.product.category);
        put_money(o, "price", r->u.product.price_m);
        put_money(o, "cost", r->u.product.cost_m);
        put_str(o, "sku", r->u.product.sku);
        put_key(o, "active");
        put(o, r->u.product.active ? "true" : "false");
        break;
    case CG_CUSTOMER:
        put_str(o, "customer_id", r->u.customer.customer_id);
        put_time(o, "created_at", r->u.customer.created_at);
        put_str(o, "email", r->u.customer.email);
        put_str(o, "name", r->u.customer.name);
        put_str(o, "region", r->u.customer.region);
        put_str(o, "channel", r->u.customer.channel);
        break;
    case CG_ORDER:
        format_order(o, &r->u.order);
        break;
    case CG_TRANSACTION:
        put_str(o, "transaction_id", r->u.transaction.transaction_id);
        put_money(o, "amount", r->u.transaction.amount_m);
        put_time(o, "timestamp", r->u.transaction.timestamp);
        put_str(o, "type", r->u.transaction.type);
        put_str(o, "order_id", r->u.transaction.order_id);
        put_str(o, "customer_id", r->u.transaction.customer_id);
        put_str(o, "currency", r->u.transaction.currency);
        put_str(o, "channel", r->u.transaction.channel);
        put_str(o, "region", r->u.transaction.region);
        put_str(o, "payment_method", r->u.transaction.payment_method);
        break;
    case CG_INVENTORY:
        put_str(o, "product_id", r->u.inventory.product_id);
        put_int(o, "quantity", r->u.inventory.quantity);
        put_time(o, "timestamp", r->u.inventory.timestamp);
        put_str(o, "warehouse", r->u.inventory.warehouse);
        put_int(o, "reorder_level", r->u.inventory.reorder_level);
        break;
    case CG_EVENT:
        put_str(o, "event_id", r->u.event.event_id);
        put_str(o, "type", r->u.event.type);
        put_time(o, "timestamp", r->u.event.timestamp);
        put_str(o, "session_id", r->u.event.session_id);
        put_str(o, "customer_id", r->u.event.customer_id);
        put_str(o, "product_id", r->u.event.product_id);
        break;
    default:
        break;
    }
    put(o, "}");
}

/* ---------- files ---------- */

static int close_file(struct out *o, enum cg_kind k)
{
    if (!o->f[k])
        return 0;
    if (o->format == F_BATCH)
        fputs("]}\n", o->f[k]);
    int rc = ferror(o->f[k]) | fclose(o->f[k]);
    o->f[k] = NULL;
    o->in_file[k] = 0;
    return rc ? -1 : 0;
}

static int open_file(struct out *o, enum cg_kind k)
{
    char path[4096];
    if (o->format == F_NDJSON)
        snprintf(path, sizeof(path), "%s/%s.ndjson", o->dir, cg_kind_names[k]);
    else
        snprintf(path, sizeof(path), "%s/%s-%06ld.json", o->dir, cg_kind_names[k],
                 o->files[k] + 1);
    if (!(o->f[k] = fopen(path, "w"))) {
        fprintf(stderr, "commerce-gen: %s: %s\n", path, strerror(errno));
        return -1;
    }
    setvbuf(o->f[k], NULL, _IOFBF, 1 << 20);
    o->files[k]++;
    if (o->format == F_BATCH)
        fprintf(o->f[k], "{\"source_id\":\"%s\",\"data_type\":\"%s\",\"format\":\"json\",\"data\":[",
                o->source_id, cg_kind_names[k]);
    return 0;
}

static int write_cb(void *arg, const struct cg_record *r)
{
    struct out *o = arg;
    enum cg_kind k = r->kind;
    if (!o->f[k] && open_file(o, k) < 0)
        return 1;
    format_record(o, r);
    if (o->format == F_BATCH && o->in_file[k] > 0)
        fputc(',', o->f[k]);
    fwrite(o->rec, 1, o->len, o->f[k]);
    if (o->format == F_NDJSON)
        fputc('\n', o->f[k]);
    o->in_file[k]++;
    o->total[k]++;
    if (k == CG_ORDER)
        o->items += r->u.order.nitems;
    if (o->format == F_BATCH && o->in_file[k] >= o->batch_size && close_file(o, k) < 0)
        return 1;
    return ferror(o->f[k] ? o->f[k] : stdout) ? 1 : 0;
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
    int y, mo, d, h = 0, mi = 0, sec = 0, ms = 0, n = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3)
        return -1;
    const char *p = s + n;
    if (*p == 'T' || *p == ' ') {
        int k = 0;
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

static int parse_types(const char *s, bool *wants)
{
    for (int k = 0; k < CG_KIND_N; k++)
        wants[k] = false;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int k = 0;
        while (k < CG_KIND_N && strcmp(t, cg_kind_names[k]) != 0)
            k++;
        if (k == CG_KIND_N)
            return -1;
        wants[k] = true;
    }
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

static void usage(FILE *f)
{
    fputs("usage: commerce-gen --out DIR [--format ndjson|batch] [--batch-size N]\n"
          "         [--types orders,products,...] [--seed N] [--products N] [--customers N]\n"
          "         [--orders N] [--days N] [--end ISO8601|unix-ms] [--event-days N]\n"
          "         [--no-inventory] [--no-transactions] [--source-id ID]\n"
          "Writes the deterministic demo shop (defaults: the sizes of `tessera serve --demo`,\n"
          "ending now). ndjson: DIR/<type>.ndjson; batch: DIR/<type>-NNNNNN.json bodies for\n"
          "POST /api/v1/ingest/batch. The same options (with a fixed --end) give the same bytes.\n"
          "Prints the record counts per type as JSON on stdout.\n",
          f);
}

static int parse_args(int argc, char **argv, struct cg_config *c, bool *wants, struct out *o)
{
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},        {"format", required_argument, 0, 'f'},
        {"batch-size", required_argument, 0, 'b'}, {"types", required_argument, 0, 't'},
        {"seed", required_argument, 0, 's'},       {"products", required_argument, 0, 'p'},
        {"customers", required_argument, 0, 'c'},  {"orders", required_argument, 0, 'n'},
        {"days", required_argument, 0, 'd'},       {"end", required_argument, 0, 'e'},
        {"event-days", required_argument, 0, 'v'}, {"no-inventory", no_argument, 0, 'I'},
        {"no-transactions", no_argument, 0, 'T'},  {"source-id", required_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
    int ch, bad = 0, idx = 0;
    while (!bad && (ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        switch (ch) {
        case 'o': o->dir = optarg; break;
        case 'f':
            if (!strcmp(optarg, "ndjson")) o->format = F_NDJSON;
            else if (!strcmp(optarg, "batch")) o->format = F_BATCH;
            else bad = 1;
            break;
        case 'b': bad = parse_int(optarg, 1, BATCH_MAX, &o->batch_size) < 0; break;
        case 't': bad = parse_types(optarg, wants) < 0; break;
        case 's': {
            char *e;
            errno = 0;
            c->seed = strtoull(optarg, &e, 10);
            bad = *e || errno;
            break;
        }
        case 'p': bad = parse_int(optarg, 1, CG_PRODUCTS_MAX, &c->products) < 0; break;
        case 'c': bad = parse_int(optarg, 1, CG_CUSTOMERS_MAX, &c->customers) < 0; break;
        case 'n': bad = parse_int(optarg, 0, CG_ORDERS_MAX, &c->orders) < 0; break;
        case 'd': bad = parse_int(optarg, 1, CG_DAYS_MAX, &c->days) < 0; break;
        case 'e': bad = parse_end(optarg, &c->end_ms) < 0; break;
        case 'v': bad = parse_int(optarg, 0, CG_DAYS_MAX, &c->event_days) < 0; break;
        case 'I': c->inventory = false; break;
        case 'T': c->transactions = false; break;
        case 'S': o->source_id = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: bad = 1; break;
        }
        if (bad && ch != '?')
            fprintf(stderr, "commerce-gen: bad value for --%s: %s\n", opts[idx].name, optarg);
    }
    if (bad || optind != argc || !o->dir) {
        usage(stderr);
        return -1;
    }
    if (c->event_days > c->days)
        c->event_days = c->days;
    const char *msg;
    if (cg_config_check(c, &msg) < 0) {
        fprintf(stderr, "commerce-gen: %s\n", msg);
        return -1;
    }
    for (const char *s = o->source_id; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-')) {
            fprintf(stderr, "commerce-gen: --source-id is [A-Za-z0-9-]\n");
            return -1;
        }
    return 0;
}

int main(int argc, char **argv)
{
    struct cg_config c;
    cg_config_demo(&c, (int64_t)time(NULL) * 1000);
    bool wants[CG_KIND_N];
    for (int k = 0; k < CG_KIND_N; k++)
        wants[k] = true;
    static struct out o = {.format = F_NDJSON, .batch_size = BATCH_MAX,
                           .source_id = "commerce-gen"};
    if (parse_args(argc, argv, &c, wants, &o) < 0)
        return 2;
    if (mkdir(o.dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "commerce-gen: %s: %s\n", o.dir, strerror(errno));
        return 1;
    }
    int rc = cg_run(&c, wants, write_cb, &o);
    for (int k = 0; k < CG_KIND_N; k++)
        if (close_file(&o, k) < 0)
            rc = 1;
    if (rc) {
        fprintf(stderr, "commerce-gen: generation failed\n");
        return 1;
    }
    char end[32];
    cg_iso8601(c.end_ms, end);
    printf("{\"seed\":%llu,\"end\":\"%s\",\"days\":%d", (unsigned long long)c.seed, end, c.days);
    for (int k = 0; k < CG_KIND_N; k++)
        if (wants[k])
            printf(",\"%s\":%ld", cg_kind_names[k], o.total[k]);
    if (wants[CG_ORDER])
        printf(",\"items\":%ld", o.items);
    printf(",\"files\":%ld}\n", o.files[0] + o.files[1] + o.files[2] + o.files[3] + o.files[4] +
                                     o.files[5]);
    return 0;
}
