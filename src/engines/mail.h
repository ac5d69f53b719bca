/* Outgoing email: an outbox table written in the caller's transaction, delivered after commit
 * over SMTP (libcurl multi on the loop) with retries and backoff, or written as .eml files
 * under DATA/mail/ when no SMTP server is configured. */
#ifndef TS_MAIL_H
#define TS_MAIL_H
#include <stddef.h>
#include <uv.h>

#include "store/db.h"

struct mailer;

struct mail_config {
    const char *data_dir;        /* .eml files go to DATA/mail/ when smtp_url is NULL */
    const char *smtp_url;        /* "smtp://host:port" or "smtps://..."; NULL: files */
    const char *smtp_user;       /* optional */
    const char *smtp_password;   /* optional */
    const char *from;            /* envelope and header From, e.g. "Tessera <no-reply@localhost>" */
    int max_attempts;            /* then the message is marked failed */
};

int mailer_new(uv_loop_t *loop, struct db *db, const struct mail_config *cfg, struct mailer **ret,
               char *err, size_t errlen);
/* Queues a plain-text message (UTF-8) in the tick's transaction. Loop thread. It is sent only
 * after the transaction commits; 0, -EINVAL (bad address / header injection), or TS_E_*. */
int mail_enqueue(struct mailer *m, const char *tenant_id, const char *to, const char *subject,
                 const char *body);
/* Stops timers and transfers; messages not yet sent stay queued for the next start. */
void mailer_close_handles(struct mailer *m);
struct mailer *mailer_free(struct mailer *m);
#endif
