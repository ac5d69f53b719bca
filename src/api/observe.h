/* The dispatcher's cross-cutting services: rate limits, response cache, metrics. */
#ifndef TS_OBSERVE_H
#define TS_OBSERVE_H
#include <stdbool.h>
#include <stddef.h>

#include "api/app.h"

int observe_init(struct app *app, char *err, size_t errlen);
/* Installs the SQL profile hook; call before opening any connection. */
void observe_db_hook(struct app *app);
void observe_free(struct app *app);
void observe_peer_address(struct request *req, char *out, size_t n);
/* Takes a token for principal in class; sets X-RateLimit-* headers. 0 or TS_E_RATE_LIMITED. */
int observe_rate_take(struct hctx *h, const char *rate_class, const char *principal);
/* true when a cached response was sent for this request. */
bool observe_cache_lookup(struct hctx *h, const struct route *rt);
void observe_cache_store(struct hctx *h, const struct route *rt);
/* Marks a tenant's data changed (every committed write); cached responses go stale. */
void observe_tenant_changed(struct app *app, const char *tenant_id);
void observe_request(struct app *app, struct request *req, double ms);
#endif
