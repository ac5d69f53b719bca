/* commerce-gen library: a deterministic shop (catalogue, customers, seasonal orders, payments,
 * stock and web sessions) drawn from fixed-seed xoshiro256** streams, one stream per kind of
 * record so that leaving a kind out never changes the others. See commerce_gen.h. */
#include "commerce_gen.h"

#include "core/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WEEK_MS (7 * CG_DAY_MS)
#define HOUR_MS 3600000LL
#define MIN_MS 60000LL
#define M_UNIT 10000LL /* ten-thousandths per currency unit */
#define CENT_M 100LL
#define ID_LEN 32 /* "ord-0000001": room for any int64 sequence number */
/* inventory keeps products × weeks counters: bounded so a huge run fails up front */
#define CG_PRODUCT_WEEKS_MAX 20000000LL

const char *const cg_kind_names[CG_KIND_N] = {"products", "customers", "orders",
                                              "transactions", "inventory", "events"};

/* ---------- PRNG: src/core/rng.h (xoshiro256** seeded by splitmix64) ---------- */

/* Uniform in [0, 1). */
static double rng_unit(struct rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; the bias is below 2^-32). */
static uint32_t rng_below(struct rng *r, uint32_t n)
{
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

static bool rng_chance(struct rng *r, double p)
{
    return rng_unit(r) < p;
}

/* Standard normal (Box-Muller, one value per call). */
static double rng_normal(struct rng *r)
{
    double u = 1.0 - rng_unit(r), v = rng_unit(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* An index into weights[0..n) drawn in proportion to the weights. */
static int rng_weighted(struct rng *r, const double *weights, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += weights[i];
    double x = rng_unit(r) * sum;
    for (int i = 0; i < n - 1; i++) {
        if (x < weights[i])
            return i;
        x -= weights[i];
    }
    return n - 1;
}

/* First index in cum[0..n) (non-decreasing) with cum[i] > x; n - 1 when none. */
static int upper_index(const double *cum, int n, double x)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (cum[mid] > x)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* ---------- calendar ---------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

/* Days since 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's algorithm). */
static void civil_from_days(int64_t z, int *ret_y, int *ret_m, int *ret_d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *ret_y = (int)(yoe + era * 400 + (m <= 2));
    *ret_m = m;
    *ret_d = d;
}

static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int weekday(int64_t days) /* 0 = Sunday */
{
    return (int)(((days % 7) + 11) % 7);
}

void cg_iso8601(int64_t ms, char out[32])
{
    int64_t days = floor_div(ms, CG_DAY_MS), rem = ms - days * CG_DAY_MS;
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, m, d, (int)(rem / HOUR_MS),
             (int)(rem / MIN_MS % 60), (int)(rem / 1000 % 60), (int)(rem % 1000));
}

/* ---------- the shop's vocabulary ---------- */

struct category {
    const char *slug, *code;
    double weight;              /* share of the catalogue and of demand */
    double price_lo, price_hi;  /* USD, drawn log-uniform */
    double margin_lo, margin_hi;
    double month[12];           /* demand by month on top of the shop-wide season */
    const char *nouns[8];
};

static const struct category categories[] = {
    {"electronics", "ELE", 14, 15, 900, 0.12, 0.30,
     {0.9, 0.85, 0.9, 0.9, 0.9, 0.95, 0.95, 1.0, 1.0, 1.0, 1.25, 1.45},
     {"Headphones", "Speaker", "Charger", "Smartwatch", "Tablet", "Camera", "Keyboard", "Monitor"}},
    {"home-kitchen", "HOM", 14, 8, 300, 0.30, 0.50,
     {1.0, 1.0, 1.05, 1.05, 1.0, 0.95, 0.95, 1.0, 1.0, 1.0, 1.05, 1.1},
     {"Blender", "Skillet", "Knife Set", "Coffee Maker", "Towel Set", "Lamp", "Mug", "Storage Box"}},
    {"clothing", "CLO", 16, 10, 160, 0.45, 0.65,
     {0.9, 0.9, 1.05, 1.1, 1.1, 1.05, 0.95, 1.0, 1.05, 1.05, 1.05, 1.15},
     {"T-Shirt", "Jacket", "Jeans", "Sweater", "Sneakers", "Dress", "Scarf", "Hoodie"}},
    {"beauty", "BEA", 9, 5, 80, 0.50, 0.70,
     {1.0, 1.1, 1.0, 1.0, 1.05, 1.0, 0.95, 0.95, 1.0, 1.0, 1.05, 1.2},
     {"Serum", "Moisturizer", "Lipstick", "Shampoo", "Perfume", "Face Mask", "Sunscreen", "Brush Set"}},
    {"sports-outdoors", "SPO", 8, 10, 400, 0.30, 0.50,
     {1.15, 1.0, 1.05, 1.1, 1.15, 1.2, 1.15, 1.05, 0.95, 0.9, 0.85, 0.9},
     {"Yoga Mat", "Tent", "Water Bottle", "Backpack", "Dumbbells", "Bike Helmet", "Running Shoes", "Sleeping Bag"}},
    {"toys-games", "TOY", 7, 8, 120, 0.35, 0.55,
     {0.7, 0.7, 0.75, 0.8, 0.8, 0.85, 0.85, 0.9, 0.9, 1.0, 1.6, 2.3},
     {"Puzzle", "Board Game", "Building Set", "Plush Bear", "Race Car", "Doll House", "Card Game", "Robot Kit"}},
    {"books", "BOO", 8, 6, 45, 0.25, 0.40,
     {1.1, 1.0, 1.0, 1.0, 0.95, 1.05, 1.1, 1.1, 1.0, 0.95, 1.0, 1.2},
     {"Novel", "Cookbook", "Biography", "Travel Guide", "Atlas", "Poetry Collection", "Workbook", "Comic"}},
    {"grocery", "GRO", 7, 2, 40, 0.15, 0.30,
     {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.05, 1.15},
     {"Coffee Beans", "Olive Oil", "Green Tea", "Dark Chocolate", "Granola", "Hot Sauce", "Honey", "Pasta"}},
    {"garden", "GAR", 5, 6, 250, 0.35, 0.55,
     {0.5, 0.6, 1.0, 1.5, 1.7, 1.5, 1.2, 1.0, 0.8, 0.6, 0.5, 0.5},
     {"Planter", "Hose", "Pruner", "Seed Kit", "Lawn Chair", "Bird Feeder", "Garden Gloves", "Solar Light"}},
    {"pet-supplies", "PET", 5, 4, 90, 0.30, 0.50,
     {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.1},
     {"Dog Bed", "Cat Tree", "Leash", "Pet Food", "Chew Toy", "Litter Box", "Aquarium Filter", "Feeder"}},
    {"office", "OFF", 4, 3, 200, 0.30, 0.50,
     {1.15, 1.05, 1.0, 0.95, 0.9, 0.85, 0.95, 1.3, 1.25, 1.0, 0.9, 0.8},
     {"Notebook", "Desk Organizer", "Pen Set", "Office Chair", "Planner", "Stapler", "Label Maker", "Desk Lamp"}},
    {"jewelry", "JEW", 3, 20, 600, 0.45, 0.70,
     {0.9, 1.5, 0.9, 0.95, 1.2, 0.95, 0.9, 0.9, 0.9, 0.95, 1.1, 1.6},
     {"Necklace", "Ring", "Bracelet", "Earrings", "Watch", "Pendant", "Brooch", "Anklet"}},
};
#define NCAT ((int)(sizeof(categories) / sizeof(categories[0])))

static const char *const brands[] = {"Northwind", "Acme", "Lumen", "Orchard", "Bluebird",
                                     "Summit", "Harbor", "Maple & Co", "Vertex", "Pioneer",
                                     "Evergreen", "Nimbus", "Copper", "Atlas", "Willow", "Zephyr"};
static const char *const adjectives[] = {"Classic", "Compact", "Premium", "Eco", "Deluxe",
                                         "Essential", "Pro", "Mini", "Ultra", "Vintage",
                                         "Smart", "Travel", "Everyday", "Signature", "Organic",
                                         "Wireless", "Family", "Studio", "Urban", "Heritage"};
static const char *const colors[] = {"Black", "White", "Blue", "Red", "Green", "Grey", "Sand",
                                     "Navy"};
static const char *const first_names[] = {
    "Emma", "Liam", "Olivia", "Noah", "Ava", "Lucas", "Mia", "Leo", "Sofia", "Elias", "Amelia",
    "Mateo", "Chloe", "Hugo", "Zoe", "Arthur", "Lina", "Jonas", "Nora", "Felix", "Aisha",
    "Omar", "Yuki", "Kenji", "Priya", "Arjun", "Mei", "Wei", "Ines", "Diego", "Lea", "Tom",
    "Clara", "Ben", "Hanna", "Paul", "Grace", "Sam", "Eva", "Max"};
static const char *const last_names[] = {
    "Smith", "Garcia", "Muller", "Rossi", "Dubois", "Kowalski", "Johnson", "Brown", "Tanaka",
    "Kim", "Nguyen", "Silva", "Jensen", "Novak", "Schmidt", "Martin", "Lopez", "Wilson",
    "Patel", "Chen", "Singh", "Fischer", "Moreau", "Bianchi", "Andersson", "Costa", "Murphy",
    "O'Brien", "Walker", "Young", "King", "Hill", "Green", "Baker", "Adams", "Nelson"};

/* Regions with their order currency: most orders are in the tenant default USD. */
enum { R_US, R_CA, R_EU, R_UK, R_APAC, R_LATAM, NREGION };
static const char *const regions[NREGION] = {"US", "CA", "EU", "UK", "APAC", "LATAM"};
static const double region_w[NREGION] = {42, 7, 22, 12, 11, 6};
enum { CH_WEB, CH_MOBILE, CH_MARKETPLACE, CH_RETAIL, NCHANNEL };
static const char *const channels[NCHANNEL] = {"web", "mobile", "marketplace", "retail"};
static const double channel_w[NCHANNEL] = {48, 27, 15, 10};
static const char *const payment_methods[] = {"card", "paypal", "apple_pay", "gift_card",
                                              "bank_transfer"};
static const double payment_w[] = {64, 20, 9, 4, 3};
static const char *const warehouses[] = {"us-east", "eu-west"};

/* Hour of day (UTC) profile of orders and sessions. */
static const double hour_w[24] = {0.9, 0.6, 0.4, 0.3, 0.3, 0.4, 0.7, 1.2, 1.8, 2.3, 2.6, 2.8,
                                  3.0, 2.9, 2.8, 2.8, 2.9, 3.1, 3.4, 3.7, 3.8, 3.4, 2.6, 1.6};
/* Shop-wide demand by weekday (Sunday first) and month: a December peak, a January dip. */
static const double weekday_w[7] = {1.04, 1.06, 1.02, 1.0, 1.0, 0.94, 0.88};
static const double month_w[12] = {0.82, 0.80, 0.92, 0.95, 0.98, 0.95, 0.92, 0.95, 0.97,
                                   1.02, 1.25, 1.60};
#define YEARLY_GROWTH 1.45 /* orders grow 45% a year */

/* ---------- generator state ---------- */

struct product {
    int category;
    int64_t price_m, cost_m;   /* USD */
    bool active;
    int warehouses;            /* 1: us-east only, 2: also eu-west */
};

struct customer {
    int64_t created_at, churn_at; /* churn_at: INT64_MAX for customers who stay */
    int region, channel;
};

struct gen {
    const struct cg_config *c;
    const bool *wants;
    cg_emit_cb emit;
    void *arg;
    int64_t start_ms;            /* midnight UTC of the window's first day */
    int64_t first_day, last_day; /* days since epoch */
    struct product *products;
    double *cat_cum[NCAT];       /* per category: cumulative product popularity */
    int *cat_members[NCAT];
    int cat_n[NCAT];
    double cat_month_cum[12][NCAT]; /* cumulative category demand per month */
    struct customer *customers;
    double *cust_cum;            /* cumulative activity weights in created_at order */
    int64_t *cust_created;       /* sorted created_at, for "who exists at t" */
    int32_t *sold;               /* products × weeks units sold (inventory), or NULL */
    int weeks;
    struct rng r_orders, r_events, r_tx;
    int64_t next_tx, next_event, next_session;
    char ibuf[CG_ITEMS_MAX][ID_LEN];
};

static bool wants(const struct gen *g, enum cg_kind k)
{
    return !g->wants || g->wants[k];
}

void cg_config_demo(struct cg_config *c, int64_t end_ms)
{
    *c = (struct cg_config){.seed = 20240101, .products = 2000, .customers = 20000,
                            .orders = 200000, .days = 548, .end_ms = end_ms, .event_days = 7,
                            .inventory = true, .transactions = true};
}

int cg_config_check(const struct cg_config *c, const char **message)
{
    if (c->products < 1 || c->products > CG_PRODUCTS_MAX)
        *message = "products must be 1..100000";
    else if (c->customers < 1 || c->customers > CG_CUSTOMERS_MAX)
        *message = "customers must be 1..2000000";
    else if (c->orders < 0 || c->orders > CG_ORDERS_MAX)
        *message = "orders must be 0..50000000";
    else if (c->days < 1 || c->days > CG_DAYS_MAX)
        *message = "days must be 1..3650";
    else if (c->event_days < 0 || c->event_days > c->days)
        *message = "event days must be 0..days";
    else if (c->end_ms < (int64_t)c->days * CG_DAY_MS || c->end_ms > 253402300799999LL)
        *message = "end must be after the window start and before year 10000";
    else if (c->inventory &&
             (int64_t)c->products * (c->days / 7 + 2) > CG_PRODUCT_WEEKS_MAX)
        *message = "products x weeks too large for inventory snapshots";
    else
        return 0;
    return -1;
}

static int64_t round_cents(double usd)
{
    return (int64_t)llround(usd * 100.0) * CENT_M;
}

/* Converts a USD price to the order's currency at fixed demo rates, to the cent. */
static int64_t in_currency(int64_t usd_m, const char *currency)
{
    double rate = currency[0] == 'E' ? 0.92 : currency[0] == 'G' ? 0.79 : 1.0;
    if (rate == 1.0)
        return usd_m;
    return (int64_t)llround((double)usd_m * rate / (double)CENT_M) * CENT_M;
}

/* ---------- products ---------- */

static int emit_product(struct gen *g, int i, struct rng *r)
{
    const struct product *p = &g->products[i];
    const struct category *cat = &categories[p->category];
    char id[ID_LEN], sku[32], name[128];
    snprintf(id, sizeof(id), "prod-%05d", i + 1);
    snprintf(sku, sizeof(sku), "%s-%05d-%s", cat->code, i + 1,
             colors[rng_below(r, (uint32_t)(sizeof(colors) / sizeof(colors[0])))]);
    snprintf(name, sizeof(name), "%s %s %s",
             brands[rng_below(r, (uint32_t)(sizeof(brands) / sizeof(brands[0])))],
             adjectives[rng_below(r, (uint32_t)(sizeof(adjectives) / sizeof(adjectives[0])))],
             cat->nouns[rng_below(r, 8)]);
    if (!wants(g, CG_PRODUCT))
        return 0;
    struct cg_record rec = {.kind = CG_PRODUCT,
                            .u.product = {.product_id = id, .name = name, .category = cat->slug,
                                          .sku = sku, .price_m = p->price_m, .cost_m = p->cost_m,
                                          .active = p->active}};
    return g->emit(g->arg, &rec);
}

/* Draws the catalogue and the popularity tables items are drawn from (per category, and
 * category demand per month). */
static int make_products(struct gen *g)
{
    struct rng r;
    rng_seed(&r, g->c->seed, 1);
    int n = g->c->products;
    double cat_w[NCAT];
    for (int k = 0; k < NCAT; k++)
        cat_w[k] = categories[k].weight;
    g->products = calloc((size_t)n, sizeof(*g->products));
    double *pop = calloc((size_t)n, sizeof(*pop));
    if (!g->products || !pop) {
        free(pop);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        struct product *p = &g->products[i];
        p->category = i < NCAT ? i : rng_weighted(&r, cat_w, NCAT);
        const struct category *cat = &categories[p->category];
        double price = exp(log(cat->price_lo) + rng_unit(&r) * log(cat->price_hi / cat->price_lo));
        price = floor(price) + 0.99;
        double margin = cat->margin_lo + rng_unit(&r) * (cat->margin_hi - cat->margin_lo);
        p->price_m = round_cents(price);
        p->cost_m = round_cents(price * (1.0 - margin));
        p->active = !rng_chance(&r, 0.03);
        p->warehouses = rng_chance(&r, 0.4) ? 2 : 1;
        /* a long tail: a few products sell a lot, cheaper ones somewhat more */
        pop[i] = exp(1.1 * rng_normal(&r)) / sqrt(price / cat->price_lo);
        g->cat_n[p->category]++;
    }
    int rc = 0;
    for (int k = 0; k < NCAT; k++) {
        g->cat_members[k] = calloc((size_t)g->cat_n[k] + 1, sizeof(int));
        g->cat_cum[k] = calloc((size_t)g->cat_n[k] + 1, sizeof(double));
        if (!g->cat_members[k] || !g->cat_cum[k])
            rc = -1;
        g->cat_n[k] = 0;
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        int k = g->products[i].category;
        g->cat_cum[k][g->cat_n[k]] = pop[i] + (g->cat_n[k] ? g->cat_cum[k][g->cat_n[k] - 1] : 0);
        g->cat_members[k][g->cat_n[k]++] = i;
    }
    free(pop);
    if (rc)
        return rc;
    for (int m = 0; m < 12; m++) {
        double sum = 0;
        for (int k = 0; k < NCAT; k++) {
            sum += g->cat_n[k] ? categories[k].weight * categories[k].month[m] : 0;
            g->cat_month_cum[m][k] = sum;
        }
    }
    for (int i = 0; rc == 0 && i < n; i++)
        rc = emit_product(g, i, &r);
    return rc;
}

/* A product for an item in month m (0..11): category by the month's demand, then a product by
 * popularity. Products no longer active stopped selling 120 days before the window's end. */
static int pick_product(struct gen *g, struct rng *r, int m, int64_t t)
{
    int i = 0;
    for (int tries = 0; tries < 8; tries++) {
        int k = upper_index(g->cat_month_cum[m], NCAT, rng_unit(r) * g->cat_month_cum[m][NCAT - 1]);
        int n = g->cat_n[k];
        int j = upper_index(g->cat_cum[k], n, rng_unit(r) * g->cat_cum[k][n - 1]);
        i = g->cat_members[k][j];
        if (g->products[i].active || t < g->c->end_ms - 120 * CG_DAY_MS)
            break;
    }
    return i;
}

/* ---------- customers ---------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int emit_customer(struct gen *g, int i, struct rng *r)
{
    const struct customer *cu = &g->customers[i];
    const char *first = first_names[rng_below(r, sizeof(first_names) / sizeof(first_names[0]))];
    const char *last = last_names[rng_below(r, sizeof(last_names) / sizeof(last_names[0]))];
    char id[ID_LEN], email[96], name[96];
    snprintf(id, sizeof(id), "cust-%06d", i + 1);
    snprintf(name, sizeof(name), "%s %s", first, last);
    int at = snprintf(email, sizeof(email), "%s.", first);
    for (const char *s = last; *s && at < (int)sizeof(email) - 24; s++)
        if (*s != '\'')
            email[at++] = *s;
    snprintf(email + at, sizeof(email) - (size_t)at, "%d@example.%s", i + 1,
             i % 3 == 0 ? "com" : i % 3 == 1 ? "org" : "net");
    for (char *s = email; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
    if (!wants(g, CG_CUSTOMER))
        return 0;
    struct cg_record rec = {.kind = CG_CUSTOMER,
                            .u.customer = {.customer_id = id, .email = email, .name = name,
                                           .region = regions[cu->region],
                                           .channel = channels[cu->channel],
                                           .created_at = cu->created_at}};
    return g->emit(g->arg, &rec);
}

/* Customers sign up over the window with the shop's growth (30% existed before it); ids follow
 * sign-up order. Each has an activity weight (a heavy tail of frequent buyers) and a third
 * churn after about a year, so recency-based segments have members. */
static int make_customers(struct gen *g)
{
    struct rng r;
    rng_seed(&r, g->c->seed, 2);
    int n = g->c->customers;
    double span = (double)g->c->end_ms - (double)g->start_ms, grow = log(YEARLY_GROWTH) / 365.0;
    double days = span / CG_DAY_MS;
    g->customers = calloc((size_t)n, sizeof(*g->customers));
    g->cust_cum = calloc((size_t)n, sizeof(double));
    g->cust_created = calloc((size_t)n, sizeof(int64_t));
    if (!g->customers || !g->cust_cum || !g->cust_created)
        return -1;
    for (int i = 0; i < n; i++) {
        double u = rng_unit(&r);
        int64_t t;
        if (rng_chance(&r, 0.3)) /* signed up in the two years before the window */
            t = g->start_ms - (int64_t)(u * 730.0 * CG_DAY_MS);
        else /* inverse CDF of a density growing like the orders */
            t = g->start_ms + (int64_t)(log(1.0 + u * (exp(grow * days) - 1.0)) / grow * CG_DAY_MS);
        g->cust_created[i] = t < g->c->end_ms ? t : g->c->end_ms - 1;
    }
    qsort(g->cust_created, (size_t)n, sizeof(int64_t), cmp_i64);
    double sum = 0;
    for (int i = 0; i < n; i++) {
        struct customer *cu = &g->customers[i];
        cu->created_at = g->cust_created[i];
        cu->region = rng_weighted(&r, region_w, NREGION);
        cu->channel = rng_weighted(&r, channel_w, NCHANNEL);
        cu->churn_at = rng_chance(&r, 0.35)
                           ? cu->created_at + (int64_t)(-log(1.0 - rng_unit(&r)) * 365.0 * CG_DAY_MS)
                           : INT64_MAX;
        sum += exp(0.8 * rng_normal(&r));
        g->cust_cum[i] = sum;
    }
    for (int i = 0; i < n; i++) {
        int rc = emit_customer(g, i, &r);
        if (rc)
            return rc;
    }
    return 0;
}

/* Number of customers signed up at or before t. */
static int customers_at(const struct gen *g, int64_t t)
{
    int lo = 0, hi = g->c->customers;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (g->cust_created[mid] <= t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* A buyer at t, by activity among those signed up by then; churned ones rarely come back. */
static int pick_customer(struct gen *g, struct rng *r, int64_t t)
{
    int n = customers_at(g, t), i = 0;
    if (n == 0)
        n = 1; /* nobody yet: the first customer */
    for (int tries = 0; tries < 4; tries++) {
        i = upper_index(g->cust_cum, n, rng_unit(r) * g->cust_cum[n - 1]);
        if (t < g->customers[i].churn_at || rng_chance(r, 0.08))
            break;
    }
    return i;
}

/* ---------- the season ---------- */

/* Relative demand of a day: growth, weekday, month, Black Friday to Cyber Monday, Christmas. */
static double day_weight(const struct gen *g, int64_t day, struct rng *r)
{
    int y, m, d;
    civil_from_days(day, &y, &m, &d);
    double w = exp(log(YEARLY_GROWTH) * (double)(day - g->first_day) / 365.0);
    w *= weekday_w[weekday(day)] * month_w[m - 1];
    if (m == 11) {
        int64_t nov1 = days_from_civil(y, 11, 1);
        int64_t thanksgiving = nov1 + (4 - weekday(nov1) + 7) % 7 + 21;
        int64_t off = day - thanksgiving;
        if (off == 1)
            w *= 2.6; /* Black Friday */
        else if (off == 2 || off == 3)
            w *= 1.7;
        else if (off == 4)
            w *= 2.3; /* Cyber Monday */
    } else if (m == 12) {
        if (d >= 8 && d <= 20)
            w *= 1.15;
        else if (d == 24 || d == 31)
            w *= 0.7;
        else if (d == 25)
            w *= 0.45;
        else if (d == 26)
            w *= 1.3;
    }
    return w * exp(0.08 * rng_normal(r));
}

static int month_of(int64_t day)
{
    int y, m, d;
    civil_from_days(day, &y, &m, &d);
    return m - 1;
}

/* A time in [day_start, limit) following the hour profile. */
static int64_t time_in_day(struct rng *r, int64_t day_start, int64_t limit)
{
    for (int tries = 0; tries < 16; tries++) {
        int h = rng_weighted(r, hour_w, 24);
        int64_t t = day_start + h * HOUR_MS + (int64_t)(rng_unit(r) * HOUR_MS);
        if (t < limit)
            return t;
    }
    return day_start + (int64_t)(rng_unit(r) * (double)(limit - day_start));
}

/* ---------- orders, payments ---------- */

static const char *order_status(struct rng *r, int64_t age)
{
    double u = rng_unit(r);
    if (u < 0.025)
        return "cancelled";
    if (age > 7 * CG_DAY_MS && u < 0.045)
        return "refunded";
    if (age < 6 * HOUR_MS)
        return rng_chance(r, 0.35) ? "placed" : "paid";
    if (age < 2 * CG_DAY_MS)
        return rng_chance(r, 0.6) ? "paid" : "shipped";
    if (age < 8 * CG_DAY_MS)
        return rng_chance(r, 0.55) ? "shipped" : "delivered";
    return "delivered";
}

static const char *region_currency(struct rng *r, int region)
{
    if (region == R_EU)
        return rng_chance(r, 0.85) ? "EUR" : "USD";
    if (region == R_UK)
        return rng_chance(r, 0.85) ? "GBP" : "USD";
    return "USD";
}

static bool promo_day(int64_t day)
{
    int y, m, d;
    civil_from_days(day, &y, &m, &d);
    return (m == 11 && d >= 20) || (m == 12 && d <= 22);
}

/* Draws one order at time t into o (ids in g's buffers). */
static void draw_order(struct gen *g, int64_t seq, int64_t t, int64_t day, struct cg_order *o,
                       char *oid, char *cid)
{
    struct rng *r = &g->r_orders;
    static const double nitems_w[CG_ITEMS_MAX] = {46, 27, 15, 8, 4};
    static const double qty_w[4] = {82, 13, 4, 1};
    int ci = pick_customer(g, r, t), m = month_of(day);
    const struct customer *cu = &g->customers[ci];
    snprintf(oid, ID_LEN, "ord-%07lld", (long long)seq);
    snprintf(cid, ID_LEN, "cust-%06d", ci + 1);
    o->order_id = oid;
    o->customer_id = cid;
    o->created_at = t;
    o->region = regions[cu->region];
    o->currency = region_currency(r, cu->region);
    o->channel = channels[rng_chance(r, 0.75) ? cu->channel : rng_weighted(r, channel_w, NCHANNEL)];
    o->nitems = 1 + rng_weighted(r, nitems_w, CG_ITEMS_MAX);
    int picked[CG_ITEMS_MAX];
    double discount_p = promo_day(day) ? 0.25 : 0.05;
    o->total_m = 0;
    for (int k = 0; k < o->nitems; k++) {
        int p = pick_product(g, r, m, t);
        for (int tries = 0; tries < 8; tries++) { /* distinct products in one order */
            bool dup = false;
            for (int j = 0; j < k; j++)
                dup |= picked[j] == p;
            if (!dup)
                break;
            p = pick_product(g, r, m, t);
        }
        picked[k] = p;
        struct cg_item *it = &o->items[k];
        snprintf(g->ibuf[k], sizeof(g->ibuf[k]), "prod-%05d", p + 1);
        it->product_id = g->ibuf[k];
        it->quantity = 1 + rng_weighted(r, qty_w, 4);
        int64_t price = g->products[p].price_m;
        if (rng_chance(r, discount_p))
            price = (int64_t)llround((double)price * (0.75 + 0.15 * rng_unit(r)) / CENT_M) * CENT_M;
        it->unit_price_m = in_currency(price, o->currency);
        o->total_m += it->quantity * it->unit_price_m;
    }
    o->status = order_status(r, g->c->end_ms - t);
    if (g->sold && strcmp(o->status, "cancelled") != 0) {
        int w = (int)((t - g->start_ms) / WEEK_MS);
        for (int k = 0; k < o->nitems; k++)
            g->sold[(size_t)picked[k] * (size_t)g->weeks + (size_t)w] += o->items[k].quantity;
    }
}

static int emit_tx(struct gen *g, const struct cg_order *o, const char *type, int64_t at,
                   const char *method)
{
    char id[ID_LEN];
    snprintf(id, sizeof(id), "txn-%07lld", (long long)++g->next_tx);
    struct cg_record rec = {.kind = CG_TRANSACTION,
                            .u.transaction = {.transaction_id = id, .type = type,
                                              .order_id = o->order_id,
                                              .customer_id = o->customer_id,
                                              .currency = o->currency, .channel = o->channel,
                                              .region = o->region, .payment_method = method,
                                              .amount_m = o->total_m, .timestamp = at}};
    return g->emit(g->arg, &rec);
}

/* A sale a minute or so after every paid order; a refund 3-25 days later for refunded ones. */
static int order_transactions(struct gen *g, const struct cg_order *o)
{
    struct rng *r = &g->r_tx;
    const char *s = o->status;
    if (!strcmp(s, "placed") || !strcmp(s, "cancelled"))
        return 0;
    const char *method = payment_methods[rng_weighted(r, payment_w, 5)];
    int64_t sale = o->created_at + 20000 + (int64_t)(rng_unit(r) * 4 * MIN_MS);
    if (sale > g->c->end_ms)
        sale = g->c->end_ms;
    int64_t refund = o->created_at + 3 * CG_DAY_MS + (int64_t)(rng_unit(r) * 22 * CG_DAY_MS);
    if (refund > g->c->end_ms)
        refund = g->c->end_ms;
    if (!g->c->transactions || !wants(g, CG_TRANSACTION))
        return 0;
    int rc = emit_tx(g, o, "sale", sale, method);
    if (rc == 0 && !strcmp(s, "refunded"))
        rc = emit_tx(g, o, "refund", refund, method);
    return rc;
}

/* ---------- web sessions ---------- */

static int emit_event(struct gen *g, const char *type, const char *session, const char *customer,
                      const char *product, int64_t at)
{
    char id[ID_LEN];
    snprintf(id, sizeof(id), "evt-%08lld", (long long)++g->next_event);
    if (at > g->c->end_ms) /* a visit late on the last day: nothing is in the future */
        at = g->c->end_ms;
    struct cg_record rec = {.kind = CG_EVENT,
                            .u.event = {.event_id = id, .type = type, .session_id = session,
                                        .customer_id = customer, .product_id = product,
                                        .timestamp = at}};
    return g->emit(g->arg, &rec);
}

/* The session an online order came from: landing page, a look at each item it bought (and
 * maybe others), the items into the cart, checkout, and a purchase per item at the order's
 * time. */
static int purchase_session(struct gen *g, const struct cg_order *o, int m)
{
    struct rng *r = &g->r_events;
    char ses[ID_LEN], extra[ID_LEN];
    snprintf(ses, sizeof(ses), "ses-%07lld", (long long)++g->next_session);
    int extras = (int)rng_below(r, 3);
    /* steps: landing, extra views, view + cart per item, checkout; evenly spread over the visit */
    int steps = 1 + extras + 2 * o->nitems + 1;
    int64_t span = (3 + rng_below(r, 20)) * MIN_MS, step = span / steps;
    int64_t t = o->created_at - span;
    int rc = emit_event(g, "page_view", ses, o->customer_id, NULL, t);
    for (int k = 0; rc == 0 && k < extras; k++) {
        snprintf(extra, sizeof(extra), "prod-%05d", pick_product(g, r, m, o->created_at) + 1);
        rc = emit_event(g, "product_view", ses, o->customer_id, extra, t += step);
    }
    for (int k = 0; rc == 0 && k < o->nitems; k++) {
        rc = emit_event(g, "product_view", ses, o->customer_id, o->items[k].product_id, t += step);
        if (rc == 0)
            rc = emit_event(g, "add_to_cart", ses, o->customer_id, o->items[k].product_id,
                            t += step);
    }
    if (rc == 0)
        rc = emit_event(g, "checkout", ses, o->customer_id, NULL, t + step / 2);
    for (int k = 0; rc == 0 && k < o->nitems; k++)
        rc = emit_event(g, "purchase", ses, o->customer_id, o->items[k].product_id,
                        o->created_at + k);
    return rc;
}

/* A visit that bought nothing: pages, maybe products, sometimes a cart or an abandoned
 * checkout. A third are signed-in customers. */
static int browse_session(struct gen *g, int64_t day_start, int64_t limit, int m)
{
    struct rng *r = &g->r_events;
    char ses[ID_LEN], cid[ID_LEN], prod[ID_LEN];
    snprintf(ses, sizeof(ses), "ses-%07lld", (long long)++g->next_session);
    int64_t t = time_in_day(r, day_start, limit - 10 * MIN_MS > day_start ? limit - 10 * MIN_MS : limit);
    const char *customer = NULL;
    if (rng_chance(r, 0.35)) {
        int n = customers_at(g, t);
        if (n > 0) {
            snprintf(cid, sizeof(cid), "cust-%06d", (int)rng_below(r, (uint32_t)n) + 1);
            customer = cid;
        }
    }
    int pages = 1 + (int)rng_below(r, 2), rc = 0;
    for (int k = 0; rc == 0 && k < pages; k++, t += 5000 + rng_below(r, 40000))
        rc = emit_event(g, "page_view", ses, customer, NULL, t);
    if (rc || !rng_chance(r, 0.5))
        return rc;
    int views = 1 + (int)rng_below(r, 3);
    for (int k = 0; rc == 0 && k < views; k++, t += 10000 + rng_below(r, 60000)) {
        snprintf(prod, sizeof(prod), "prod-%05d", pick_product(g, r, m, t) + 1);
        rc = emit_event(g, "product_view", ses, customer, prod, t);
    }
    if (rc || !rng_chance(r, 0.3))
        return rc;
    rc = emit_event(g, "add_to_cart", ses, customer, prod, t);
    if (rc == 0 && rng_chance(r, 0.3))
        rc = emit_event(g, "checkout", ses, customer, NULL, t + 20000 + rng_below(r, 60000));
    return rc;
}

/* Browsing visits per online order: sessions convert at about 1 in 12. */
#define BROWSE_PER_ORDER 11.0

/* ---------- the day loop ---------- */

struct day_orders {
    int64_t *times;
    int cap;
};

static int run_day(struct gen *g, int64_t day, int count, struct day_orders *buf, int64_t *seq)
{
    int64_t day_start = day * CG_DAY_MS;
    int64_t limit = day == g->last_day ? g->c->end_ms : day_start + CG_DAY_MS;
    if (limit <= day_start)
        return 0;
    if (count > buf->cap) {
        int64_t *t = realloc(buf->times, (size_t)count * sizeof(int64_t));
        if (!t)
            return -1;
        buf->times = t;
        buf->cap = count;
    }
    for (int i = 0; i < count; i++)
        buf->times[i] = time_in_day(&g->r_orders, day_start, limit);
    qsort(buf->times, (size_t)count, sizeof(int64_t), cmp_i64);
    bool events = g->c->event_days > 0 && wants(g, CG_EVENT) &&
                  day > g->last_day - g->c->event_days;
    int m = month_of(day), online = 0, rc = 0;
    char oid[ID_LEN], cid[ID_LEN];
    for (int i = 0; rc == 0 && i < count; i++) {
        struct cg_record rec = {.kind = CG_ORDER};
        draw_order(g, ++*seq, buf->times[i], day, &rec.u.order, oid, cid);
        if (wants(g, CG_ORDER))
            rc = g->emit(g->arg, &rec);
        if (rc == 0)
            rc = order_transactions(g, &rec.u.order);
        const char *ch = rec.u.order.channel;
        if (rc == 0 && events && (!strcmp(ch, "web") || !strcmp(ch, "mobile"))) {
            online++;
            rc = purchase_session(g, &rec.u.order, m);
        }
    }
    if (events) {
        int browse = (int)llround(online * BROWSE_PER_ORDER);
        for (int i = 0; rc == 0 && i < browse; i++)
            rc = browse_session(g, day_start, limit, m);
    }
    return rc;
}

/* Spreads exactly c->orders over the window's days in proportion to their weights. */
static int run_days(struct gen *g)
{
    int ndays = (int)(g->last_day - g->first_day + 1);
    double *w = calloc((size_t)ndays, sizeof(double));
    struct rng r;
    rng_seed(&r, g->c->seed, 3);
    if (!w)
        return -1;
    double sum = 0;
    for (int i = 0; i < ndays; i++) {
        w[i] = day_weight(g, g->first_day + i, &r);
        if (g->first_day + i == g->last_day) /* today so far */
            w[i] *= (double)(g->c->end_ms - g->last_day * CG_DAY_MS) / CG_DAY_MS;
        sum += w[i];
    }
    struct day_orders buf = {0};
    double cum = 0;
    int64_t done = 0, seq = 0;
    int rc = 0;
    for (int i = 0; rc == 0 && i < ndays; i++) {
        cum += w[i];
        int64_t upto = i == ndays - 1 ? g->c->orders : (int64_t)llround(cum / sum * g->c->orders);
        rc = run_day(g, g->first_day + i, (int)(upto - done), &buf, &seq);
        done = upto;
    }
    free(buf.times);
    free(w);
    return rc;
}

/* ---------- inventory ---------- */

/* Weekly snapshots from the window's first day: stock falls with the week's sales (eu-west
 * carries a third of a product's demand where it stocks it) and is replenished when it drops
 * under the reorder level, so stock-outs happen to best sellers now and then. */
static int run_inventory(struct gen *g)
{
    struct rng r;
    rng_seed(&r, g->c->seed, 6);
    int rc = 0;
    for (int p = 0; rc == 0 && p < g->c->products; p++) {
        const struct product *pr = &g->products[p];
        int32_t *sold = &g->sold[(size_t)p * (size_t)g->weeks];
        double mean = 0;
        for (int w = 0; w < g->weeks; w++)
            mean += sold[w];
        mean /= g->weeks;
        char id[ID_LEN];
        snprintf(id, sizeof(id), "prod-%05d", p + 1);
        for (int h = 0; rc == 0 && h < pr->warehouses; h++) {
            double share = pr->warehouses == 1 ? 1.0 : h == 0 ? 0.67 : 0.33;
            int reorder = 5 + (int)llround(mean * share * 1.5);
            int stock = reorder * (2 + (int)rng_below(&r, 3));
            for (int w = 0; rc == 0 && w < g->weeks; w++) {
                int64_t at = g->start_ms + (int64_t)w * WEEK_MS;
                if (at > g->c->end_ms)
                    break;
                struct cg_record rec = {.kind = CG_INVENTORY,
                                        .u.inventory = {.product_id = id,
                                                        .warehouse = warehouses[h],
                                                        .timestamp = at, .quantity = stock,
                                                        .reorder_level = reorder}};
                rc = g->emit(g->arg, &rec);
                stock -= (int)llround(sold[w] * share);
                if (stock < 0)
                    stock = 0;
                if (stock < reorder && pr->active && !rng_chance(&r, 0.15))
                    stock += reorder * (2 + (int)rng_below(&r, 3));
            }
        }
    }
    return rc;
}

/* ---------- run ---------- */

static void gen_free(struct gen *g)
{
    free(g->products);
    for (int k = 0; k < NCAT; k++) {
        free(g->cat_members[k]);
        free(g->cat_cum[k]);
    }
    free(g->customers);
    free(g->cust_cum);
    free(g->cust_created);
    free(g->sold);
}

int cg_run(const struct cg_config *c, const bool *wantv, cg_emit_cb emit, void *arg)
{
    const char *msg;
    if (cg_config_check(c, &msg) < 0)
        return -1;
    struct gen g = {.c = c, .wants = wantv, .emit = emit, .arg = arg};
    g.last_day = floor_div(c->end_ms - 1, CG_DAY_MS);
    g.first_day = g.last_day - c->days + 1;
    g.start_ms = g.first_day * CG_DAY_MS;
    g.weeks = (int)((c->end_ms - g.start_ms) / WEEK_MS) + 1;
    rng_seed(&g.r_orders, c->seed, 4);
    rng_seed(&g.r_tx, c->seed, 5);
    rng_seed(&g.r_events, c->seed, 7);
    bool inventory = c->inventory && wants(&g, CG_INVENTORY);
    if (inventory && !(g.sold = calloc((size_t)c->products * (size_t)g.weeks, sizeof(int32_t))))
        return -1;
    int rc = make_products(&g);
    if (rc == 0)
        rc = make_customers(&g);
    if (rc == 0)
        rc = run_days(&g);
    if (rc == 0 && inventory)
        rc = run_inventory(&g);
    gen_free(&g);
    return rc;
}
