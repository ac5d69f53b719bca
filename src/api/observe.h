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
/* A request of this tenant changed data in the current tick. */
void observe_tenant_wrote(struct app *app, const char *tenant_id);
/* The tick committed: every tenant that wrote gets a new cache generation. Bumping only
 * after the commit means a pool reader that looked the generation up afterwards sees the
 * committed data; one that looked it up before cannot store its (older) answer. */
void observe_tick_committed(struct app *app);
void observe_request(struct app *app, struct request *req, double ms);
#endif
