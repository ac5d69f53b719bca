/* The router: pre-split route patterns, segment matching with {params}, 405 Allow and surfaces. */
#include "api/route.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEGS 12

struct compiled {
    const struct route *route;
    enum surface surface;
    int nsegs;
    const char *seg[MAX_SEGS];   /* literal, or "{name}" */
    size_t seglen[MAX_SEGS];
};

struct router {
    struct compiled *c;
    size_t n;
};

static int split_pattern(const char *path, struct compiled *c)
{
    if (path[0] != '/')
        return -EINVAL;
    const char *p = path + 1;
    c->nsegs = 0;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (c->nsegs == MAX_SEGS || len == 0)
            return -EINVAL;
        c->seg[c->nsegs] = p;
        c->seglen[c->nsegs] = len;
        c->nsegs++;
        p += len + (slash ? 1 : 0);
    }
    return 0;
}

static bool seg_is_param(const struct compiled *c, int i)
{
    return c->seglen[i] > 2 && c->seg[i][0] == '{' && c->seg[i][c->seglen[i] - 1] == '}';
}

static bool same_shape(const struct compiled *a, const struct compiled *b)
{
    if (a->nsegs != b->nsegs || strcmp(a->route->method, b->route->method) != 0)
        return false;
    for (int i = 0; i < a->nsegs; i++) {
        bool pa = seg_is_param(a, i), pb = seg_is_param(b, i);
        if (pa != pb)
            return false;
        if (!pa && (a->seglen[i] != b->seglen[i] || memcmp(a->seg[i], b->seg[i], a->seglen[i])))
            return false;
    }
    return true;
}

static int router_add(struct router *r, const struct route *rt, enum surface s, char *err,
                      size_t errlen)
{
    struct compiled *c = &r->c[r->n];
    c->route = rt;
    c->surface = s;
    if (rt->handler == NULL || rt->method == NULL || split_pattern(rt->path, c) < 0) {
        snprintf(err, errlen, "route %s %s: bad row", rt->method ? rt->method : "?", rt->path);
        return -EINVAL;
    }
    if (rt->permission == NULL || rt->rate_class == NULL ||
        (strcmp(rt->permission, "public") == 0) != ((rt->flags & RF_PUBLIC) != 0)) {
        snprintf(err, errlen, "route %s %s: needs a permission and rate class", rt->method,
                 rt->path);
        return -EINVAL;
    }
    for (size_t i = 0; i < r->n; i++) {
        if (same_shape(&r->c[i], c)) {
            snprintf(err, errlen, "duplicate route %s %s", rt->method, rt->path);
            return -EINVAL;
        }
    }
    r->n++;
    return 0;
}

struct router *router_new(const struct route_table *tables, size_t ntables, char *err,
                          size_t errlen)
{
    size_t total = 0;
    for (size_t t = 0; t < ntables; t++)
        total += tables[t].n;
    struct router *r = calloc(1, sizeof(*r));
    r->c = calloc(total ? total : 1, sizeof(*r->c));
    for (size_t t = 0; t < ntables; t++) {
        for (size_t i = 0; i < tables[t].n; i++) {
            if (router_add(r, &tables[t].routes[i], tables[t].surface, err, errlen) < 0)
                return router_free(r);
        }
    }
    return r;
}

struct router *router_free(struct router *r)
{
    if (r == NULL)
        return NULL;
    free(r->c);
    free(r);
    return NULL;
}

size_t router_count(const struct router *r)
{
    return r->n;
}

const struct route *router_route(const struct router *r, size_t i, enum surface *ret_surface)
{
    if (i >= r->n)
        return NULL;
    if (ret_surface)
        *ret_surface = r->c[i].surface;
    return r->c[i].route;
}

/* Number of leading segments of c that the request path matches. */
static int prefix_match(const struct compiled *c, char **seg, int nseg)
{
    int i = 0;
    for (; i < nseg && i < c->nsegs; i++) {
        if (seg_is_param(c, i))
            continue;
        if (strlen(seg[i]) != c->seglen[i] || memcmp(seg[i], c->seg[i], c->seglen[i]) != 0)
            break;
    }
    return i;
}

static void allow_add(char *allow, size_t cap, const char *method)
{
    if (strstr(allow, method) != NULL)
        return;
    size_t len = strlen(allow);
    snprintf(allow + len, cap - len, "%s%s", len ? ", " : "", method);
}

int router_match(const struct router *r, const char *method, char *path, struct arena *a,
                 struct route_match *ret)
{
    char *seg[MAX_SEGS + 1];
    int nseg = 0;
    memset(ret, 0, sizeof(*ret));
    ret->surface = SURF_RECS;
    char *p = path[0] == '/' ? path + 1 : path;
    while (*p && nseg <= MAX_SEGS) {
        seg[nseg++] = p;
        char *slash = strchr(p, '/');
        if (slash == NULL)
            break;
        *slash = '\0';
        p = slash + 1;
        if (*p == '\0')
            break; /* trailing slash is ignored */
    }
    int best_prefix = 0, best_literals = -1;
    bool path_found = false, ambiguous = false;
    const struct compiled *best = NULL;
    for (size_t i = 0; i < r->n; i++) {
        const struct compiled *c = &r->c[i];
        int m = prefix_match(c, seg, nseg);
        if (m > best_prefix) {
            best_prefix = m;
            ret->surface = c->surface;
            ambiguous = false;
        } else if (m == best_prefix && m > 0 && c->surface != ret->surface) {
            ambiguous = true; /* /api/v1/<unknown>: no one surface owns it */
        }
        if (m != nseg || c->nsegs != nseg)
            continue;
        if (strcmp(c->route->method, method) != 0) {
            path_found = true;
            ret->surface = c->surface;
            allow_add(ret->allow, sizeof(ret->allow), c->route->method);
            continue;
        }
        int literals = 0; /* "/users/me" beats "/users/{id}" */
        for (int k = 0; k < nseg; k++)
            literals += !seg_is_param(c, k);
        if (literals > best_literals) {
            best_literals = literals;
            best = c;
        }
    }
    if (best != NULL) {
        ret->route = best->route;
        ret->surface = best->surface;
        ret->allow[0] = '\0';
        for (int k = 0; k < nseg && ret->nparams < HTTP_MAX_PARAMS; k++) {
            if (!seg_is_param(best, k))
                continue;
            struct http_param *hp = &ret->params[ret->nparams++];
            hp->name = arena_strndup(a, best->seg[k] + 1, best->seglen[k] - 2);
            const char *v = http_url_decode(a, seg[k], strlen(seg[k]), false);
            hp->value = v ? v : seg[k];
        }
        return 0;
    }
    if (path_found) {
        allow_add(ret->allow, sizeof(ret->allow), "OPTIONS");
        return TS_E_METHOD_NOT_ALLOWED;
    }
    if (ambiguous)
        ret->surface = SURF_RECS;
    return TS_E_NOT_FOUND;
}
