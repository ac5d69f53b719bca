/* What the desk surface's files share: ticket visibility, history rows, notifications, enums. */
#ifndef TS_DESK_H
#define TS_DESK_H
#include <stdbool.h>
#include <stdint.h>

#include "api/route.h"
#include "core/ids.h"

#define DESK_TICKET_NUMBER_LEN 16   /* "TKT-001" .. "TKT-99999999" */

/* A ticket as other desk files need it. */
struct desk_ticket {
    char id[UUID_STR_LEN];
    char number[DESK_TICKET_NUMBER_LEN];
    char type[16], priority[16], status[24];
    char requester_id[UUID_STR_LEN];
    char assignee_id[UUID_STR_LEN];     /* "" when unassigned */
    int64_t created_at;
};

/* True when the caller works tickets (agents, approvers, managers, developers, admins);
 * everyone else is a requester who sees only the tickets they raised. */
bool desk_is_staff(const struct hctx *h);
/* Finds a ticket of the caller's tenant that the caller may see. 0 and ret, or
 * TS_E_NOT_FOUND (h->err_field = field) for unknown, other-tenant or not-visible tickets. */
int desk_ticket_find(struct hctx *h, const char *ticket_id, const char *field,
                     struct desk_ticket *ret);
void desk_ticket_number(int64_t number, char out[DESK_TICKET_NUMBER_LEN]);   /* TKT-001 */
/* A download's Range header (files.c; the route fuzz target calls it too): one byte range of
 * RFC 9110 (a-b, a-, -n). 1: use [*off, *off + *len); 0: no usable Range (absent, malformed or
 * several ranges: the whole file); -1: not satisfiable. */
int desk_range_parse(const char *v, int64_t size, int64_t *off, int64_t *len);
/* Appends one history row (who, field, old, new, now) in the tick's transaction. */
int desk_history_add(struct hctx *h, const char *ticket_id, const char *field,
                     const char *old_value, const char *new_value);

/* Notification kinds (the notifications table's CHECK list). */
enum desk_notify_kind {
    DESK_N_ASSIGNED, DESK_N_COMMENT, DESK_N_STATUS, DESK_N_APPROVAL_REQUESTED,
    DESK_N_APPROVAL_DECIDED, DESK_N_SLA_BREACH, DESK_N_DEPLOYMENT
};
/* Notifies a user: an in-app row (unless their preferences turn that kind off), an email
 * through the outbox (if their preferences ask for it), and a WebSocket push on channel
 * "desk:<tenant_id>:user:<user_id>". Never notifies the caller about their own action.
 * tenant_id is explicit so the SLA timer (no request) can use it with h = NULL. */
int desk_notify(struct app *app, const char *tenant_id, const char *actor_id,
                const char *user_id, enum desk_notify_kind kind, const char *title,
                const char *message, const char *ticket_id);
const char *desk_notify_kind_name(enum desk_notify_kind kind);
/* The preference key of a kind for a channel ("email_ticket_assigned", "in_app_comments"...) */
const char *desk_pref_key(enum desk_notify_kind kind, bool email);
/* SLA hooks (sla.c), called by tickets.c inside the same transaction as the change:
 * deadlines are computed and stored at creation from the rules in force; the clock pauses
 * while a ticket waits on the customer; first response and resolution are recorded. */
int desk_sla_start(struct hctx *h, const struct desk_ticket *t);
int desk_sla_on_status(struct hctx *h, const struct desk_ticket *t, const char *old_status,
                       const char *new_status);
int desk_sla_on_first_response(struct hctx *h, const struct desk_ticket *t);
/* The built-in SLA hours of a ticket type (used when a tenant has no rule for it). */
void desk_sla_default_hours(const char *type, double *ret_response, double *ret_resolution);
#endif
