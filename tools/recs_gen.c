/* recs-gen library: planted taste clusters, a catalog whose text reflects them, users with one
 * or two tastes and a funnel-shaped interaction log, from fixed-seed xoshiro256** streams (one
 * per kind of record). See recs_gen.h. */
#include "recs_gen.h"

#include "core/rng.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOUR_MS 3600000LL
#define SEC_MS 1000LL
#define TEXT_MAX 512      /* one generated title, description or metadata */
#define ID_LEN 40
#define NEW_ITEM_SHARE 0.10 /* items first listed inside the window */
#define SESSION_ROWS 8      /* a session holds about this many interactions */

const char *const rg_type_names[RG_NTYPES] = {"view", "click", "add_to_cart", "purchase",
                                              "like", "dislike", "remove_from_cart"};
enum { T_VIEW, T_CLICK, T_CART, T_PURCHASE, T_LIKE, T_DISLIKE, T_REMOVE };

/* ---------- PRNG: src/core/rng.h (xoshiro256** seeded by splitmix64) ---------- */

static double rng_unit(struct rng *r) /* [0, 1) */
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static uint32_t rng_below(struct rng *r, uint32_t n) /* [0, n), n > 0 */
{
    return (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

static bool rng_chance(struct rng *r, double p)
{
    return rng_unit(r) < p;
}

static double rng_normal(struct rng *r)
{
    double u = 1.0 - rng_unit(r), v = rng_unit(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

#define PICK(r, arr) ((arr)[rng_below((r), (uint32_t)(sizeof(arr) / sizeof((arr)[0])))])

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

static int draw_cum(struct rng *r, const double *cum, int n)
{
    return upper_index(cum, n, rng_unit(r) * cum[n - 1]);
}

/* ---------- vocabulary ---------- */

struct category {
    const char *slug;
    double price_lo, price_hi;   /* USD, log-uniform */
    const char *nouns[8];
    const char *phrases[3];      /* what the category's items do, after "It " */
};

static const struct category categories[] = {
    {"electronics", 15, 900,
     {"Headphones", "Speaker", "Charger", "Smartwatch", "Tablet", "Camera", "Keyboard", "Monitor"},
     {"delivers crisp sound and a long battery life", "pairs with every device you own",
      "charges fast over USB-C"}},
    {"home-kitchen", 8, 300,
     {"Blender", "Skillet", "Knife Set", "Coffee Maker", "Towel Set", "Table Lamp", "Mug", "Storage Box"},
     {"makes weeknight cooking easier", "keeps the kitchen tidy", "is dishwasher safe"}},
    {"books", 6, 45,
     {"Novel", "Cookbook", "Biography", "Travel Guide", "Atlas", "Poetry Collection", "Workbook", "Graphic Novel"},
     {"is a page-turner from the first chapter", "comes as a hardcover edition",
      "collects stories worth rereading"}},
    {"clothing", 10, 160,
     {"T-Shirt", "Jacket", "Jeans", "Sweater", "Sneakers", "Dress", "Scarf", "Hoodie"},
     {"fits true to size", "is made of breathable cotton", "layers well in every season"}},
    {"sports-outdoors", 10, 400,
     {"Yoga Mat", "Tent", "Water Bottle", "Backpack", "Dumbbells", "Bike Helmet", "Running Shoes", "Sleeping Bag"},
     {"stands up to mud, rain and long trails", "keeps you moving on training days",
      "weighs less than you expect"}},
    {"beauty", 5, 80,
     {"Serum", "Moisturizer", "Lipstick", "Shampoo", "Perfume", "Face Mask", "Sunscreen", "Brush Set"},
     {"is gentle on sensitive skin", "leaves a light, fresh scent", "is dermatologist tested"}},
    {"toys-games", 8, 120,
     {"Puzzle", "Board Game", "Building Set", "Plush Bear", "Race Car", "Doll House", "Card Game", "Robot Kit"},
     {"keeps kids busy for hours", "brings the family to the table", "sparks creative play"}},
    {"grocery", 2, 40,
     {"Coffee Beans", "Olive Oil", "Green Tea", "Dark Chocolate", "Granola", "Hot Sauce", "Honey", "Pasta"},
     {"tastes rich and fresh", "is sourced from small farms", "makes a quick breakfast"}},
    {"garden", 6, 250,
     {"Planter", "Garden Hose", "Pruner", "Seed Kit", "Lawn Chair", "Bird Feeder", "Garden Gloves", "Solar Light"},
     {"helps the garden grow", "survives sun and frost", "brightens the patio"}},
    {"pet-supplies", 4, 90,
     {"Dog Bed", "Cat Tree", "Leash", "Pet Food", "Chew Toy", "Litter Box", "Aquarium Filter", "Pet Feeder"},
     {"keeps pets happy and healthy", "is vet approved", "survives the toughest chewers"}},
    {"office", 3, 200,
     {"Notebook", "Desk Organizer", "Pen Set", "Office Chair", "Planner", "Stapler", "Label Maker", "Desk Lamp"},
     {"keeps the desk organised", "makes long workdays comfortable", "helps you plan the week"}},
    {"music", 5, 600,
     {"Vinyl Record", "Guitar Strings", "Ukulele", "Drum Pads", "Microphone", "Music Stand", "Digital Piano", "Tuner"},
     {"sounds warm and full", "stays in tune on stage", "suits beginners and players alike"}},
    {"movies", 8, 90,
     {"Blu-ray Box Set", "Documentary", "Film Poster", "Director's Cut", "Anime Series", "Classic Film",
      "Soundtrack", "Projector Screen"},
     {"is restored in high definition", "includes hours of bonus features",
      "makes movie night special"}},
    {"video-games", 15, 300,
     {"Game Controller", "Racing Game", "Puzzle Game", "Gaming Headset", "Role-Playing Game", "Strategy Game",
      "Arcade Stick", "Indie Game"},
     {"plays smoothly at high frame rates", "offers dozens of hours of play", "supports local co-op"}},
    {"jewelry", 20, 600,
     {"Necklace", "Ring", "Bracelet", "Earrings", "Wristwatch", "Pendant", "Brooch", "Anklet"},
     {"is finished in sterling silver", "arrives in a gift box", "is resized for free"}},
    {"health", 5, 150,
     {"Vitamins", "Massage Gun", "Thermometer", "First Aid Kit", "Protein Powder", "Foam Roller", "Sleep Mask",
      "Pill Organizer"},
     {"supports a daily wellness routine", "helps muscles recover", "is travel friendly"}},
};
#define NCAT ((int)(sizeof(categories) / sizeof(categories[0])))

struct style {
    const char *adj;             /* in titles */
    const char *tags[4];         /* tags[0] is the style's name */
    const char *phrase;          /* after "a ... from Brand, " */
};

static const struct style styles[] = {
    {"Vintage", {"vintage", "retro", "heritage", "timeless"}, "inspired by mid-century design"},
    {"Minimal", {"minimalist", "clean-lines", "simple", "modern"}, "with a clean, uncluttered look"},
    {"Trail", {"outdoor", "adventure", "rugged", "weatherproof"}, "built for weekends in the wild"},
    {"Eco", {"eco-friendly", "sustainable", "recycled", "organic"}, "made from recycled and organic materials"},
    {"Luxe", {"luxury", "premium", "handcrafted", "gift"}, "finished by hand with premium materials"},
    {"Value", {"budget", "everyday", "basic", "value-pack"}, "an everyday essential at a friendly price"},
    {"Junior", {"kids", "family", "colorful", "playful"}, "safe and fun for the whole family"},
    {"Pro", {"professional", "performance", "studio", "heavy-duty"}, "trusted by professionals"},
    {"Arcade", {"gaming", "rgb", "esports", "streamer"}, "tuned for long gaming sessions"},
    {"Voyager", {"travel", "compact", "lightweight", "portable"}, "that packs small for any trip"},
    {"Cozy", {"cozy", "soft", "warm", "hygge"}, "soft and warm for slow evenings at home"},
    {"Smart", {"smart-home", "wireless", "app-controlled", "connected"}, "that connects to your phone"},
    {"Artisan", {"artisan", "small-batch", "handmade", "craft"}, "made in small batches by independent makers"},
    {"Active", {"fitness", "training", "workout", "endurance"}, "for daily training and recovery"},
    {"Classic", {"classic", "essential", "bestseller", "staple"}, "the dependable choice for years"},
    {"Metro", {"urban", "streetwear", "city", "commuter"}, "designed for life in the city"},
    {"Holiday", {"festive", "holiday", "seasonal", "party"}, "ready for the holidays"},
    {"Nordic", {"scandinavian", "nordic", "natural-wood", "light"}, "in a bright Scandinavian style"},
    {"Boho", {"bohemian", "boho", "woven", "earthy"}, "with woven textures and earthy colours"},
    {"Forge", {"industrial", "metal", "loft", "raw"}, "in raw metal with a loft feel"},
    {"Tropic", {"tropical", "summer", "beach", "bright"}, "bright as a summer at the beach"},
    {"Noir", {"gothic", "dark", "dramatic", "noir"}, "dark and dramatic"},
    {"Coastal", {"coastal", "nautical", "seaside", "breezy"}, "with a breezy seaside feel"},
    {"Lab", {"science", "stem", "educational", "curious"}, "for curious minds who love science"},
};
#define NSTYLE ((int)(sizeof(styles) / sizeof(styles[0])))

static const char *const brands[] = {
    "Northwind", "Acme", "Lumen", "Orchard", "Bluebird", "Summit", "Harbor", "Maple & Co",
    "Vertex", "Pioneer", "Evergreen", "Nimbus", "Copper", "Atlas", "Willow", "Zephyr",
    "Kestrel", "Juniper", "Ironbark", "Solstice", "Meridian", "Halcyon", "Quill", "Tandem"};
static const char *const colors[] = {"black", "white", "blue", "red", "green", "grey", "sand",
                                     "navy"};
static const char *const extras[] = {"bestseller", "gift-idea", "limited-edition", "sale"};
static const char *const devices[] = {"mobile", "desktop", "tablet"};
static const double device_w[] = {55, 35, 10};

/* Hour of day (UTC) and weekday (Sunday first) shape of activity. */
static const double hour_w[24] = {0.9, 0.6, 0.4, 0.3, 0.3, 0.4, 0.7, 1.2, 1.8, 2.3, 2.6, 2.8,
                                  3.0, 2.9, 2.8, 2.8, 2.9, 3.1, 3.4, 3.7, 3.8, 3.4, 2.6, 1.6};
static const double weekday_w[7] = {1.12, 0.95, 0.96, 0.97, 0.98, 1.02, 1.14};

/* ---------- configuration ---------- */

void rg_config_demo(struct rg_config *c, double scale, int64_t end_ms)
{
    if (!(scale > 0) || scale > 1)
        scale = 1;
    int items = (int)lround(RG_DEMO_ITEMS * scale), users = (int)lround(RG_DEMO_USERS * scale);
    items = items < 1 ? 1 : items;
    users = users < 1 ? 1 : users;
    int n = (int)lround(RG_DEMO_INTERACTIONS * scale);
    int clusters = items / 10 < 1 ? 1 : items / 10;
    clusters = clusters > RG_DEMO_CLUSTERS ? RG_DEMO_CLUSTERS : clusters;
    n = n < users * RG_MIN_PER_USER ? users * RG_MIN_PER_USER : n;
    *c = (struct rg_config){.seed = 20240601, .items = items, .users = users,
                            .interactions = n,
                            .clusters = clusters, .days = RG_DEMO_DAYS, .end_ms = end_ms,
                            .noise = 0.15};
}

int rg_config_check(const struct rg_config *c, const char **ret_message)
{
    const char *m = NULL;
    if (c->items < 1 || c->items > RG_ITEMS_MAX)
        m = "items must be 1..1000000";
    else if (c->users < 1 || c->users > RG_USERS_MAX)
        m = "users must be 1..5000000";
    else if (c->interactions > RG_INTERACTIONS_MAX ||
             (int64_t)c->interactions < (int64_t)c->users * RG_MIN_PER_USER)
        m = "interactions must be 3 x users .. 10000000";
    else if (c->clusters < 1 || c->clusters > RG_CLUSTERS_MAX || c->clusters > c->items)
        m = "clusters must be 1..1000 and at most items";
    else if (c->days < 1 || c->days > RG_DAYS_MAX)
        m = "days must be 1..3650";
    else if (!(c->noise >= 0 && c->noise <= 1))
        m = "noise must be 0..1";
    else if (c->end_ms < (int64_t)(c->days + 400) * RG_DAY_MS || c->end_ms > 253402300799999LL)
        m = "end must leave room for the window and be before year 10000";
    if (m)
        *ret_message = m;
    return m ? -1 : 0;
}

/* ---------- generator state ---------- */

struct cluster {
    int style, primary, secondary;
    int *members;                /* item indexes */
    double *cum;                 /* cumulative popularity over members */
    int n;
    int fallback;                /* its most popular item listed before the window, or -1 */
};

struct item {
    int cluster;
    double pop;
    int64_t created_at;
};

struct row {                     /* one interaction before it is emitted */
    int64_t ts;
    int32_t user, item, session;
    uint32_t seq;
    uint8_t type, device;
};

struct gen {
    const struct rg_config *c;
    const struct rg_callbacks *cb;
    int64_t start_ms;            /* end_ms - days */
    struct cluster *clusters;
    double *cluster_cum;         /* cumulative cluster appeal (users pick tastes by it) */
    struct item *items;
    double *pop_cum;             /* cumulative popularity over all items (noise draws) */
    int pop_fallback;
    double *slot_cum;            /* cumulative activity per hour of the window */
    int nslots;
    struct row *rows;
    size_t nrows;
};

static void gen_free(struct gen *g)
{
    for (int k = 0; g->clusters && k < g->c->clusters; k++) {
        free(g->clusters[k].members);
        free(g->clusters[k].cum);
    }
    free(g->clusters);
    free(g->cluster_cum);
    free(g->items);
    free(g->pop_cum);
    free(g->slot_cum);
    free(g->rows);
}

/* Each cluster: a style and two categories; (style, primary) pairs repeat only past 24 x 16. */
static int make_clusters(struct gen *g, struct rng *r)
{
    int K = g->c->clusters;
    g->clusters = calloc((size_t)K, sizeof(*g->clusters));
    g->cluster_cum = calloc((size_t)K, sizeof(double));
    if (!g->clusters || !g->cluster_cum)
        return -1;
    double sum = 0;
    for (int k = 0; k < K; k++) {
        struct cluster *cl = &g->clusters[k];
        cl->style = k % NSTYLE;
        cl->primary = (k * 5 + k / NSTYLE) % NCAT;
        cl->secondary = (cl->primary + 1 + (int)rng_below(r, NCAT - 1)) % NCAT;
        cl->fallback = -1;
        sum += exp(0.4 * rng_normal(r));
        g->cluster_cum[k] = sum;
    }
    return 0;
}

/* Slots are the window's hours: recent days a little busier, weekends and evenings more. */
static int make_slots(struct gen *g)
{
    g->nslots = g->c->days * 24;
    g->slot_cum = calloc((size_t)g->nslots, sizeof(double));
    if (!g->slot_cum)
        return -1;
    double sum = 0;
    for (int s = 0; s < g->nslots; s++) {
        int64_t t = g->start_ms + (int64_t)s * HOUR_MS;
        int64_t day = t / RG_DAY_MS;
        int wd = (int)(((day % 7) + 11) % 7);
        double growth = 1.0 + 0.3 * s / g->nslots;
        sum += growth * weekday_w[wd] * hour_w[(t % RG_DAY_MS) / HOUR_MS];
        g->slot_cum[s] = sum;
    }
    return 0;
}

/* A moment at or after `from` drawn from the activity shape. */
static int64_t draw_time(struct gen *g, struct rng *r, int64_t from)
{
    int first = 0;
    if (from > g->start_ms)
        first = (int)((from - g->start_ms) / HOUR_MS);
    if (first >= g->nslots)
        first = g->nslots - 1;
    double lo = first ? g->slot_cum[first - 1] : 0, hi = g->slot_cum[g->nslots - 1];
    int s = upper_index(g->slot_cum, g->nslots, lo + rng_unit(r) * (hi - lo));
    int64_t t = g->start_ms + (int64_t)s * HOUR_MS + (int64_t)rng_below(r, (uint32_t)HOUR_MS);
    return t < from ? from : t;
}

/* ---------- items ---------- */

static void lower_dashed(const char *s, char *out, size_t n)
{
    size_t k = 0;
    for (; *s && k + 1 < n; s++)
        if (isalnum((unsigned char)*s))
            out[k++] = (char)tolower((unsigned char)*s);
        else if (*s == ' ' || *s == '-')
            out[k++] = '-';
    out[k] = '\0';
}

static void lower_words(const char *s, char *out, size_t n)
{
    size_t k = 0;
    for (; *s && k + 1 < n; s++)
        out[k++] = (char)tolower((unsigned char)*s);
    out[k] = '\0';
}

/* Draws one item's text and emits it; the draws happen whether or not it is emitted. */
static int emit_item(struct gen *g, int i, struct rng *r)
{
    const struct item *it = &g->items[i];
    const struct cluster *cl = &g->clusters[it->cluster];
    const struct style *st = &styles[cl->style];
    const struct category *cat = &categories[rng_chance(r, 0.85) ? cl->primary : cl->secondary];
    const char *brand = PICK(r, brands), *noun = cat->nouns[rng_below(r, 8)];
    const char *phrase = cat->phrases[rng_below(r, 3)], *color = PICK(r, colors);
    const char *styleword = st->tags[rng_below(r, 2)], *extra = PICK(r, extras);
    bool with_color = rng_chance(r, 0.4), gift = rng_chance(r, 0.2);
    bool with_extra = rng_chance(r, 0.3);
    int t2 = 1 + (int)rng_below(r, 3), t3 = rng_chance(r, 0.5) ? 1 + (int)rng_below(r, 3) : 0;
    double price = exp(log(cat->price_lo) + rng_unit(r) * log(cat->price_hi / cat->price_lo));
    price = floor(price) + 0.99;
    if (!g->cb->item)
        return 0;
    char id[ID_LEN], title[TEXT_MAX], desc[TEXT_MAX], meta[TEXT_MAX], noun_lc[64], noun_tag[64];
    snprintf(id, sizeof(id), "item-%05d", i + 1);
    char hue[16];
    snprintf(hue, sizeof(hue), "%s", color);
    hue[0] = (char)toupper((unsigned char)hue[0]);
    snprintf(title, sizeof(title), "%s %s %s%s%s", brand, st->adj, noun,
             with_color ? " in " : "", with_color ? hue : "");
    lower_words(noun, noun_lc, sizeof(noun_lc));
    lower_dashed(noun, noun_tag, sizeof(noun_tag));
    bool vowel = strchr("aeiou", styleword[0]) != NULL;
    snprintf(desc, sizeof(desc), "%s %s %s from %s, %s. It %s%s. Part of the %s collection.",
             vowel ? "An" : "A", styleword, noun_lc, brand, st->phrase, phrase,
             gift ? " and makes a thoughtful gift" : "", st->tags[0]);
    snprintf(meta, sizeof(meta),
             "{\"brand\":\"%s\",\"price\":%.2f,\"style\":\"%s\",\"taste_cluster\":%d}", brand,
             price, st->tags[0], it->cluster);
    struct rg_item out = {.item_id = id, .title = title, .description = desc,
                          .category = cat->slug, .metadata = meta,
                          .created_at = it->created_at, .cluster = it->cluster};
    out.tags[out.ntags++] = noun_tag;
    out.tags[out.ntags++] = st->tags[0];
    out.tags[out.ntags++] = st->tags[t2];
    if (t3 && t3 != t2)
        out.tags[out.ntags++] = st->tags[t3];
    if (with_color)
        out.tags[out.ntags++] = color;
    if (it->created_at >= g->start_ms)
        out.tags[out.ntags++] = "new-arrival";
    else if (with_extra)
        out.tags[out.ntags++] = extra;
    return g->cb->item(g->cb->arg, &out);
}

/* Clusters get items in proportion to their appeal (each at least one); popularity is
 * log-normal, so a few items per cluster collect most of the traffic. */
static int make_items(struct gen *g, struct rng *r)
{
    int n = g->c->items, K = g->c->clusters;
    g->items = calloc((size_t)n, sizeof(*g->items));
    g->pop_cum = calloc((size_t)n, sizeof(double));
    if (!g->items || !g->pop_cum)
        return -1;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        struct item *it = &g->items[i];
        it->cluster = i < K ? i : draw_cum(r, g->cluster_cum, K);
        it->pop = exp(1.0 * rng_normal(r));
        if (rng_chance(r, NEW_ITEM_SHARE))
            it->created_at =
                g->start_ms + (int64_t)(rng_unit(r) * (double)(g->c->end_ms - g->start_ms));
        else
            it->created_at = g->start_ms - (int64_t)(rng_unit(r) * 365.0 * RG_DAY_MS) - HOUR_MS;
        sum += it->pop;
        g->pop_cum[i] = sum;
        g->clusters[it->cluster].n++;
    }
    for (int k = 0; k < K; k++) {
        struct cluster *cl = &g->clusters[k];
        cl->members = calloc((size_t)cl->n, sizeof(int));
        cl->cum = calloc((size_t)cl->n, sizeof(double));
        if (!cl->members || !cl->cum)
            return -1;
        cl->n = 0;
    }
    g->pop_fallback = -1;
    for (int i = 0; i < n; i++) {
        struct item *it = &g->items[i];
        struct cluster *cl = &g->clusters[it->cluster];
        cl->cum[cl->n] = it->pop + (cl->n ? cl->cum[cl->n - 1] : 0);
        cl->members[cl->n++] = i;
        bool old = it->created_at < g->start_ms;
        if (old && (cl->fallback < 0 || g->items[cl->fallback].pop < it->pop))
            cl->fallback = i;
        if (old && (g->pop_fallback < 0 || g->items[g->pop_fallback].pop < it->pop))
            g->pop_fallback = i;
    }
    for (int i = 0; i < n; i++) {
        int rc = emit_item(g, i, r);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---------- users and their interactions ---------- */

struct user {
    int nclusters, clusters[2];
    double share[2];
    int quota;                   /* rows */
    int64_t join;
    int device;                  /* preferred */
};

/* Row quotas: RG_MIN_PER_USER each, the rest in proportion to log-normal activity by largest
 * remainders (ties by user index), so the total is exactly c->interactions. */
struct rem {
    double frac;
    int user;
};

static int rem_cmp(const void *a, const void *b)
{
    const struct rem *x = a, *y = b;
    if (x->frac != y->frac)
        return x->frac > y->frac ? -1 : 1;
    return x->user - y->user;
}

static int allocate_quotas(struct gen *g, struct rng *r, struct user *us)
{
    int n = g->c->users;
    struct rem *w = malloc((size_t)n * sizeof(*w));
    if (!w)
        return -1;
    double sum = 0;
    for (int u = 0; u < n; u++) {
        w[u] = (struct rem){exp(0.9 * rng_normal(r)), u};
        sum += w[u].frac;
    }
    int64_t spare = (int64_t)g->c->interactions - (int64_t)n * RG_MIN_PER_USER, given = 0;
    for (int u = 0; u < n; u++) {
        double share = (double)spare * w[u].frac / sum, whole = floor(share);
        us[u].quota = RG_MIN_PER_USER + (int)whole;
        given += (int64_t)whole;
        w[u].frac = share - whole;
    }
    qsort(w, (size_t)n, sizeof(*w), rem_cmp);
    for (int k = 0; given < spare; k = (k + 1) % n, given++)
        us[w[k].user].quota++;
    free(w);
    return 0;
}

static void make_user(struct gen *g, struct rng *r, struct user *u)
{
    int K = g->c->clusters;
    u->clusters[0] = draw_cum(r, g->cluster_cum, K);
    u->nclusters = K > 1 && rng_chance(r, 0.4) ? 2 : 1;
    u->share[0] = 1;
    if (u->nclusters == 2) {
        do
            u->clusters[1] = draw_cum(r, g->cluster_cum, K);
        while (u->clusters[1] == u->clusters[0]);
        u->share[0] = 0.55 + 0.15 * rng_unit(r);
        u->share[1] = 1 - u->share[0];
    }
    int64_t span = g->c->end_ms - g->start_ms;
    u->join = rng_chance(r, 0.25) ? g->start_ms + (int64_t)(rng_unit(r) * 0.9 * (double)span)
                                  : g->start_ms;
    double x = rng_unit(r) * 100;
    u->device = x < device_w[0] ? 0 : x < device_w[0] + device_w[1] ? 1 : 2;
}

/* An item listed by time t: in-taste from one of the user's clusters, else (noise, or a
 * cluster with nothing listed yet) by global popularity. Sets *ret_taste. */
static int pick_item(struct gen *g, struct rng *r, const struct user *u, int64_t t, bool *ret_taste)
{
    bool taste = !rng_chance(r, g->c->noise);
    const struct cluster *cl = &g->clusters[u->clusters[u->nclusters == 2 &&
                                                        rng_unit(r) >= u->share[0]]];
    for (int tries = 0; tries < 16; tries++) {
        int i = taste ? cl->members[draw_cum(r, cl->cum, cl->n)]
                      : draw_cum(r, g->pop_cum, g->c->items);
        if (g->items[i].created_at <= t) {
            *ret_taste = taste;
            return i;
        }
    }
    *ret_taste = taste && cl->fallback >= 0;
    int i = *ret_taste ? cl->fallback : g->pop_fallback;
    return i >= 0 ? i : 0;
}

static void push_row(struct gen *g, int user, int item, int session, int device, int type,
                     int64_t ts)
{
    struct row *x = &g->rows[g->nrows];
    *x = (struct row){.ts = ts > g->c->end_ms ? g->c->end_ms : ts, .user = user, .item = item,
                      .session = session, .seq = (uint32_t)g->nrows, .type = (uint8_t)type,
                      .device = (uint8_t)device};
    g->nrows++;
}

/* One engagement with an item: a view, then perhaps a click, a cart, a purchase or a removal;
 * likes mostly on in-taste items, dislikes mostly on the others. At most `left` rows. */
static int engage(struct gen *g, struct rng *r, int user, int item, bool taste, int session,
                  int device, int64_t t, int left)
{
    int types[4], n = 0;
    types[n++] = T_VIEW;
    if (rng_chance(r, taste ? 0.015 : 0.12))
        types[n++] = T_DISLIKE;
    else {
        if (rng_chance(r, taste ? 0.45 : 0.25)) {
            types[n++] = T_CLICK;
            if (rng_chance(r, 0.35)) {
                types[n++] = T_CART;
                double x = rng_unit(r);
                if (x < 0.55)
                    types[n++] = T_PURCHASE;
                else if (x < 0.80)
                    types[n++] = T_REMOVE;
            }
        }
        if (n < 4 && rng_chance(r, taste ? 0.10 : 0.02))
            types[n++] = T_LIKE;
    }
    if (n > left)
        n = left;
    for (int k = 0; k < n; k++) {
        push_row(g, user, item, session, device, types[k], t);
        t += 5 * SEC_MS + (int64_t)rng_below(r, 85000);
    }
    return n;
}

struct session {
    int64_t at;                  /* the next engagement's time */
    int device;
};

static int user_rows(struct gen *g, struct rng *r, int user, const struct user *u,
                     struct session *ss)
{
    int nsess = (u->quota + SESSION_ROWS - 1) / SESSION_ROWS;
    for (int s = 0; s < nsess; s++) {
        ss[s].at = draw_time(g, r, u->join);
        ss[s].device = rng_chance(r, 0.7) ? u->device : (int)rng_below(r, 3);
    }
    for (int left = u->quota; left > 0;) {
        int s = (int)rng_below(r, (uint32_t)nsess);
        bool taste;
        int item = pick_item(g, r, u, ss[s].at, &taste);
        left -= engage(g, r, user, item, taste, s, ss[s].device, ss[s].at, left);
        ss[s].at += 20 * SEC_MS + (int64_t)rng_below(r, 220000);
        /* a session that ran into the end resumes at another time */
        if (ss[s].at > g->c->end_ms - 600 * SEC_MS)
            ss[s].at = draw_time(g, r, u->join);
    }
    return 0;
}

static int row_cmp(const void *a, const void *b)
{
    const struct row *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    if (x->user != y->user)
        return x->user < y->user ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int emit_user(struct gen *g, int u, const struct user *us)
{
    if (!g->cb->user)
        return 0;
    char id[ID_LEN];
    snprintf(id, sizeof(id), "user-%06d", u + 1);
    struct rg_user out = {.user_id = id, .nclusters = us->nclusters,
                          .clusters = {us->clusters[0], us->clusters[1]},
                          .share = {us->share[0], us->share[1]}, .interactions = us->quota};
    return g->cb->user(g->cb->arg, &out);
}

static int make_users(struct gen *g, struct rng *r_users, struct rng *r_rows)
{
    int n = g->c->users;
    struct user *us = calloc((size_t)n, sizeof(*us));
    g->rows = malloc((size_t)g->c->interactions * sizeof(*g->rows));
    int max_quota = 0, rc = 0;
    if (!us || !g->rows || allocate_quotas(g, r_users, us) < 0)
        rc = -1;
    for (int u = 0; rc == 0 && u < n; u++) {
        make_user(g, r_users, &us[u]);
        max_quota = us[u].quota > max_quota ? us[u].quota : max_quota;
    }
    struct session *ss = rc ? NULL : calloc((size_t)max_quota / SESSION_ROWS + 1, sizeof(*ss));
    if (!ss)
        rc = -1;
    for (int u = 0; rc == 0 && u < n; u++)
        rc = user_rows(g, r_rows, u, &us[u], ss);
    for (int u = 0; rc == 0 && u < n; u++)
        rc = emit_user(g, u, &us[u]);
    free(ss);
    free(us);
    return rc;
}

/* UUIDv7: 48 bits of unix ms, version 7, 74 random bits, variant 10. */
static void uuid7(struct rng *r, int64_t ms, char out[ID_LEN])
{
    uint64_t a = rng_next(r), b = rng_next(r);
    uint64_t hi = ((uint64_t)ms << 16) | 0x7000 | (a & 0x0fff);
    uint64_t lo = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
    snprintf(out, ID_LEN, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(hi >> 32),
             (unsigned)((hi >> 16) & 0xffff), (unsigned)(hi & 0xffff), (unsigned)(lo >> 48),
             (unsigned long long)(lo & 0xffffffffffffULL));
}

static int emit_rows(struct gen *g, struct rng *r)
{
    qsort(g->rows, g->nrows, sizeof(*g->rows), row_cmp);
    if (!g->cb->interaction)
        return 0;
    char iid[ID_LEN], uid[ID_LEN], item[ID_LEN], sid[ID_LEN];
    for (size_t k = 0; k < g->nrows; k++) {
        const struct row *x = &g->rows[k];
        uuid7(r, x->ts, iid);
        snprintf(uid, sizeof(uid), "user-%06d", x->user + 1);
        snprintf(item, sizeof(item), "item-%05d", x->item + 1);
        snprintf(sid, sizeof(sid), "ses-%06d-%03d", x->user + 1, x->session + 1);
        struct rg_interaction out = {.interaction_id = iid, .user_id = uid, .item_id = item,
                                     .type = rg_type_names[x->type], .session_id = sid,
                                     .device_type = devices[x->device], .timestamp = x->ts};
        int rc = g->cb->interaction(g->cb->arg, &out);
        if (rc)
            return rc;
    }
    return 0;
}

int rg_run(const struct rg_config *c, const struct rg_callbacks *cb)
{
    const char *msg;
    if (rg_config_check(c, &msg) < 0)
        return -1;
    struct gen g = {.c = c, .cb = cb, .start_ms = c->end_ms - (int64_t)c->days * RG_DAY_MS};
    struct rng r_clusters, r_items, r_users, r_rows, r_ids;
    rng_seed(&r_clusters, c->seed, 1);
    rng_seed(&r_items, c->seed, 2);
    rng_seed(&r_users, c->seed, 3);
    rng_seed(&r_rows, c->seed, 4);
    rng_seed(&r_ids, c->seed, 5);
    int rc = make_clusters(&g, &r_clusters) < 0 || make_slots(&g) < 0 ? -1 : 0;
    if (rc == 0)
        rc = make_items(&g, &r_items);
    if (rc == 0)
        rc = make_users(&g, &r_users, &r_rows);
    if (rc == 0)
        rc = emit_rows(&g, &r_ids);
    gen_free(&g);
    return rc;
}
