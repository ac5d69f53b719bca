/* Canonical commerce records (src/surfaces/commerce/records.c): money to ten-thousandths
 * exactly, ids, enums, times, defaults, and the failures' paths and check types. */
#include <jansson.h>
#include <stdlib.h>

#include "../check.h"
#include "core/arena.h"
#include "core/clock.h"
#include "surfaces/commerce/records.h"

static struct arena *a;
static const struct cm_check_env env = {"GBP", 1735689600000LL, -1}; /* 2025-01-01 */

static int check(enum cm_type t, const char *json, struct cm_rec *r)
{
    json_t *v = json_loads(json, JSON_DECODE_ANY, NULL);
    int n = cm_record_check(a, t, v, 7, &env, r);
    json_decref(v); /* text of a valid record points into v: read only the numbers after */
    return n;
}

/* price (field 3 of products) in ten-thousandths, or -1 when the record failed */
static long long price_m(const char *price)
{
    char json[160];
    snprintf(json, sizeof(json), "{\"product_id\":\"p\",\"name\":\"n\",\"price\":%s}", price);
    struct cm_rec r;
    return check(CM_PRODUCTS, json, &r) ? -1 : (long long)r.num[3];
}

static void test_money(void)
{
    CHECK_INT(price_m("12"), 120000);
    CHECK_INT(price_m("12.345"), 123450);
    CHECK_INT(price_m("\"2.55\""), 25500);
    CHECK_INT(price_m("1.00005"), 10001);      /* a JSON real, as written */
    CHECK_INT(price_m("\"1.00005\""), 10001);
    CHECK_INT(price_m("\"1.000049999\""), 10000);
    CHECK_INT(price_m("0.00005"), 1);
    CHECK_INT(price_m("\"0.00004\""), 0);
    CHECK_INT(price_m("\"  7.5 \""), 75000);
    CHECK_INT(price_m("\"1e3\""), 10000000);
    CHECK_INT(price_m("\"2.5E-3\""), 25);
    CHECK_INT(price_m("\"0.000000000001\""), 0);
    CHECK_INT(price_m("\"99999999999999\""), 999999999999990000LL);
    CHECK_INT(price_m("\"100000000000001\""), -1); /* past 10^14 units */
    CHECK_INT(price_m("1e300"), -1);
    CHECK_INT(price_m("\"12,5\""), -1);
    CHECK_INT(price_m("\"abc\""), -1);
    CHECK_INT(price_m("true"), -1);
    CHECK_INT(price_m("-1"), -1);              /* accuracy: negative */
    CHECK_INT(price_m("\"-0.00004\""), 0);     /* rounds to zero, which is not negative */
}

static void test_order_failures(void)
{
    struct cm_rec r;
    int n = check(CM_ORDERS,
                  "{\"order_id\":42,\"created_at\":\"2030-01-01T00:00:00Z\",\"total\":\"x\","
                  "\"currency\":\"eur\",\"status\":\"lost\",\"unknown\":[1],"
                  "\"items\":[{\"product_id\":\"p\",\"quantity\":0,\"unit_price\":1},"
                  "{\"quantity\":\"1.5\",\"unit_price\":-2},7]}", &r);
    CHECK_INT(n, 10);
    const char *want[][2] = {
        {"data[7].customer_id", "completeness"},       {"data[7].created_at", "accuracy"},
        {"data[7].total", "validity"},                 {"data[7].currency", "validity"},
        {"data[7].status", "validity"},                {"data[7].items[0].quantity", "accuracy"},
        {"data[7].items[1].product_id", "completeness"}, {"data[7].items[1].quantity", "validity"},
    };
    for (int i = 0; i < 8; i++) {
        CHECK_STR(r.fails[i].field, want[i][0]);
        CHECK_STR(r.fails[i].check_type, want[i][1]);
    }
    CHECK_STR(r.key, "42");
    CHECK_INT(r.nfails, 10); /* and two more past CM_FAILS_MAX: unit_price, the non-object */
}

static void test_defaults_and_types(void)
{
    struct cm_rec r;
    json_t *v = json_loads("{\"order_id\":\"o1\",\"customer_id\":\"c1\","
                           "\"created_at\":\"2024-12-31T23:00:00+01:00\",\"total\":0}", 0, NULL);
    CHECK_INT(cm_record_check(a, CM_ORDERS, v, -1, &env, &r), 0);
    CHECK_STR(r.txt[4], "GBP");      /* the tenant default currency */
    CHECK_STR(r.txt[5], "placed");
    CHECK_STR(r.txt[6], "");
    CHECK_INT(r.num[2], 1735682400000LL);
    json_decref(v);
    v = json_loads("{\"event_id\":\"e\",\"type\":\"purchase\",\"session_id\":\"s\"}", 0, NULL);
    struct cm_check_env stream = {"USD", env.now_ms, 1700000000000LL};
    CHECK_INT(cm_record_check(a, CM_EVENTS, v, -1, &stream, &r), 0);
    CHECK_INT(r.num[2], 1700000000000LL); /* the stream request's timestamp */
    CHECK_INT(cm_record_check(a, CM_EVENTS, v, -1, &env, &r), 1);
    CHECK_STR(r.fails[0].field, "data.timestamp");
    json_decref(v);
    v = json_loads("{\"product_id\":\"p\",\"quantity\":\"5\",\"timestamp\":\"2024-06-01\","
                   "\"warehouse\":7}", 0, NULL);
    CHECK_INT(cm_record_check(a, CM_INVENTORY, v, 0, &env, &r), 0);
    CHECK_STR(r.key, "p/7/2024-06-01T00:00:00.000Z");
    json_decref(v);
    char id[200];
    memset(id, 'x', sizeof(id));
    id[129] = 0;
    char json[300];
    snprintf(json, sizeof(json), "{\"customer_id\":\"%s\"}", id);
    CHECK_INT(check(CM_CUSTOMERS, json, &r), 1);
    CHECK_STR(r.fails[0].check_type, "validity");
    id[128] = 0;
    snprintf(json, sizeof(json), "{\"customer_id\":\"%s\",\"email\":\"a@b.example\"}", id);
    CHECK_INT(check(CM_CUSTOMERS, json, &r), 0);
    CHECK_INT(check(CM_CUSTOMERS, "{\"customer_id\":\"c\",\"email\":\"nope\"}", &r), 1);
    CHECK_INT(check(CM_CUSTOMERS, "[1]", &r), 1);
    CHECK_STR(r.fails[0].field, "data[7]");
    CHECK_INT(check(CM_PRODUCTS, "{\"product_id\":\"p\",\"name\":\"n\",\"active\":\"No\"}", &r),
              0);
    CHECK_INT(r.num[6], 0);
    CHECK_INT(cm_type_of("events"), CM_EVENTS);
    CHECK_INT(cm_type_of("sales"), -1);
}

int main(void)
{
    a = arena_new(4096);
    test_money();
    test_order_failures();
    test_defaults_and_types();
    arena_free(a);
    CHECK_DONE();
}
