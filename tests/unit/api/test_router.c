/* Unit tests for the router: literals, {params}, precedence, 405 Allow, surfaces, bad tables. */
#include "../check.h"
#include "api/route.h"

static int h_any(struct hctx *h)
{
    (void)h;
    return 0;
}

static const struct route desk[] = {
    {"GET", "/api/v1/users/me", h_any, "users.read", "default", RUN_LOOP, 0, 0},
    {"GET", "/api/v1/users/{user_id}", h_any, "users.read", "default", RUN_LOOP, 0, 0},
    {"PUT", "/api/v1/users/{user_id}/role", h_any, "users.admin", "default", RUN_LOOP, 0, 0},
    {"GET", "/api/v1/tickets/{ticket_id}/comments", h_any, "t", "default", RUN_LOOP, 0, 0},
    {"POST", "/api/v1/tickets/{ticket_id}/comments", h_any, "t", "default", RUN_LOOP, 0, 0},
};
static const struct route ops[] = {
    {"GET", "/health", h_any, "public", "none", RUN_LOOP, 0, RF_PUBLIC},
    {"GET", "/api/v1/tenant", h_any, "t", "default", RUN_LOOP, 0, 0},
};

static struct router *build(void)
{
    struct route_table t[] = {{SURF_DESK, desk, 5}, {SURF_RECS, ops, 2}};
    char err[200];
    return router_new(t, 2, err, sizeof(err));
}

static int match(struct router *r, const char *method, const char *path, struct route_match *m)
{
    struct arena *a = arena_new(1024);
    char *p = arena_strdup(a, path);
    int rc = router_match(r, method, p, a, m);
    /* copy params out before the arena goes */
    static char names[HTTP_MAX_PARAMS][64], values[HTTP_MAX_PARAMS][256];
    for (int i = 0; i < m->nparams; i++) {
        snprintf(names[i], sizeof(names[i]), "%s", m->params[i].name);
        snprintf(values[i], sizeof(values[i]), "%s", m->params[i].value);
        m->params[i].name = names[i];
        m->params[i].value = values[i];
    }
    arena_free(a);
    return rc;
}

static void test_matching(void)
{
    struct router *r = build();
    CHECK(r != NULL);
    CHECK_INT(router_count(r), 7);
    struct route_match m;
    CHECK_INT(match(r, "GET", "/api/v1/users/me", &m), 0);
    CHECK_STR(m.route->path, "/api/v1/users/me"); /* literal beats {user_id} */
    CHECK_INT(m.nparams, 0);
    CHECK_INT(match(r, "GET", "/api/v1/users/u-42", &m), 0);
    CHECK_STR(m.route->path, "/api/v1/users/{user_id}");
    CHECK_INT(m.nparams, 1);
    CHECK_STR(m.params[0].name, "user_id");
    CHECK_STR(m.params[0].value, "u-42");
    CHECK_INT(match(r, "GET", "/api/v1/users/a%20b", &m), 0);
    CHECK_STR(m.params[0].value, "a b"); /* decoded */
    CHECK_INT(match(r, "GET", "/api/v1/users/me/", &m), 0); /* trailing slash */
    CHECK_INT(m.surface, SURF_DESK);
    CHECK_INT(match(r, "GET", "/health", &m), 0);
    CHECK_INT(m.surface, SURF_RECS);
    router_free(r);
}

static void test_errors(void)
{
    struct router *r = build();
    struct route_match m;
    CHECK_INT(match(r, "DELETE", "/api/v1/tickets/7/comments", &m), TS_E_METHOD_NOT_ALLOWED);
    CHECK_STR(m.allow, "GET, POST, OPTIONS");
    CHECK_INT(m.surface, SURF_DESK);
    CHECK_INT(match(r, "GET", "/api/v1/tickets/7/nope", &m), TS_E_NOT_FOUND);
    CHECK_INT(m.surface, SURF_DESK); /* longest prefix decides the error format */
    CHECK_INT(match(r, "GET", "/nowhere/at/all", &m), TS_E_NOT_FOUND);
    CHECK_INT(m.surface, SURF_RECS);
    /* /api/v1 is shared by desk and recs here: an unknown sibling belongs to neither */
    CHECK_INT(match(r, "GET", "/api/v1/unknown", &m), TS_E_NOT_FOUND);
    CHECK_INT(m.surface, SURF_RECS);
    CHECK_INT(match(r, "GET", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p", &m), TS_E_NOT_FOUND);
    router_free(r);
}

static void test_bad_tables(void)
{
    char err[200];
    static const struct route dup[] = {
        {"GET", "/x/{a}", h_any, "p", "default", RUN_LOOP, 0, 0},
        {"GET", "/x/{b}", h_any, "p", "default", RUN_LOOP, 0, 0},
    };
    struct route_table t1 = {SURF_DESK, dup, 2};
    CHECK(router_new(&t1, 1, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "duplicate") != NULL);
    static const struct route noperm[] = {
        {"GET", "/y", h_any, NULL, "default", RUN_LOOP, 0, 0},
    };
    struct route_table t2 = {SURF_DESK, noperm, 1};
    CHECK(router_new(&t2, 1, err, sizeof(err)) == NULL);
    static const struct route publicmismatch[] = {
        {"GET", "/z", h_any, "public", "default", RUN_LOOP, 0, 0}, /* public without RF_PUBLIC */
    };
    struct route_table t3 = {SURF_DESK, publicmismatch, 1};
    CHECK(router_new(&t3, 1, err, sizeof(err)) == NULL);
}

int main(void)
{
    test_matching();
    test_errors();
    test_bad_tables();
    CHECK_DONE();
}
