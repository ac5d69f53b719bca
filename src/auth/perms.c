/* The role-to-permission table (documented in the README) and the single permission check. */
#include "auth/perms.h"

#include <string.h>

#include "core/err.h"

const char *const role_names[] = {"admin",   "org_admin", "manager",  "viewer",
                                  "learner", "trainer",   "approver", "agent",
                                  "developer", "master_admin", NULL};

#define ADMINS ROLES_ADMINS
/* desk staff: everyone who works tickets; other roles are requesters (their own tickets) */
#define DESK_STAFF ROLES_DESK_STAFF

const struct permission permissions[] = {
    {"session", ROLE_ALL, 0, 0, "own session: logout, own profile"},
    {"profile.write", ROLE_ALL, 0, 0, "update own profile"},
    {"users.list", ADMINS, 0, 0, "list the tenant's users"},
    {"users.read", ADMINS | ROLE_MANAGER | ROLE_AGENT | ROLE_APPROVER, ROLE_ALL, 0,
     "read a user (others read only themselves)"},
    {"users.role", ROLE_MASTER_ADMIN, 0, 0, "change a user's role"},
    {"customer.read", ROLE_ALL, 0, 0, "read own tenant (lms customer)"},
    {"customer.users", ADMINS | ROLE_MANAGER, 0, 0, "list own tenant's users (lms)"},
    {"tenant.read", ROLE_ALL, 0, SCOPE_READ, "read own tenant (recs)"},
    {"apikeys.manage", ADMINS | ROLE_DEVELOPER, 0, 0, "list, create and revoke API keys"},
    {"audit.read", ADMINS, 0, 0, "read the tenant's audit log"},
    /* desk (requesters see only tickets they raised: checked by desk_ticket_find) */
    {"tickets.create", ROLE_ALL, 0, 0, "raise a ticket"},
    {"tickets.read", ROLE_ALL, 0, 0, "read tickets (requesters: their own)"},
    {"tickets.comment", ROLE_ALL, 0, 0, "comment on a visible ticket (internal: staff)"},
    {"tickets.update", DESK_STAFF, 0, 0, "edit, assign and move tickets through the workflow"},
    {"tickets.delete", ADMINS, 0, 0, "delete a ticket"},
    {"sla.read", DESK_STAFF, 0, 0, "read SLA rules, status and metrics"},
    {"sla.admin", ADMINS, 0, 0, "change SLA rules and calendar; list breaches"},
    {"approvals.request", DESK_STAFF, 0, 0, "submit a ticket for approval; read approvals"},
    {"approvals.decide", ROLE_APPROVER | ROLE_MASTER_ADMIN, 0, 0, "approve or reject"},
    {"staging.read", DESK_STAFF, 0, 0, "read environments and deployments"},
    {"staging.deploy", DESK_STAFF, 0, 0, "request a deployment of an approved ticket"},
    {"staging.admin", ADMINS, 0, 0, "create environments, update deployments, roll back"},
    {"dashboard.read", DESK_STAFF, 0, 0, "desk dashboards, analytics and exports"},
    {"notifications", ROLE_ALL, 0, 0, "own notifications and their preferences"},
    {"files.write", ROLE_ALL, 0, 0, "upload files; delete own (admins: any)"},
    {"files.read", ROLE_ALL, 0, 0, "read files of visible tickets"},
    /* recs: public routes take user tokens or API keys; internal routes only internal-scope keys */
    {"recs.read", ROLE_ALL, 0, SCOPE_READ | SCOPE_INTERNAL,
     "recommendations, item embeddings, usage"},
    {"recs.write", ADMINS | ROLE_MANAGER | ROLE_DEVELOPER, 0, SCOPE_WRITE | SCOPE_INTERNAL,
     "upload items, track interactions"},
    {"recs.internal", 0, 0, SCOPE_INTERNAL, "internal ML and data routes (service keys)"},
    /* commerce */
    {"commerce.read", ROLE_ALL, 0, SCOPE_READ, "analytics, dashboards, alerts, sources, quality"},
    {"commerce.ingest", ADMINS | ROLE_MANAGER | ROLE_DEVELOPER, 0, SCOPE_WRITE,
     "send batch and stream records"},
    {"commerce.sources", ADMINS, 0, 0, "create and update data sources"},
    {"commerce.dashboards", ADMINS, 0, 0, "create, update and delete dashboards"},
    {"commerce.alerts.ack", ADMINS | ROLE_MANAGER, 0, SCOPE_WRITE, "acknowledge alerts"},
    {"commerce.alerts.rules", ADMINS, 0, 0, "create, update and delete alert rules"},
};

const size_t permissions_count = sizeof(permissions) / sizeof(permissions[0]);

const struct permission *perm_find(const char *name)
{
    for (size_t i = 0; i < permissions_count; i++)
        if (strcmp(permissions[i].name, name) == 0)
            return &permissions[i];
    return NULL;
}

int role_bit(const char *name)
{
    for (int i = 0; role_names[i]; i++)
        if (strcmp(role_names[i], name) == 0)
            return i;
    return -1;
}

const char *role_primary(unsigned roles)
{
    /* most privileged first: what a single-role contract field ("role") shows */
    static const int order[] = {9, 0, 1, 2, 5, 6, 7, 8, 4, 3};
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        if (roles & (1u << order[i]))
            return role_names[order[i]];
    return "viewer";
}

int perm_check(const struct permission *p, const struct principal *who, const char *self)
{
    if (who->kind == PRINCIPAL_API_KEY)
        return (p->key_scopes & who->scopes) ? 0 : TS_E_FORBIDDEN;
    if (who->kind != PRINCIPAL_USER)
        return TS_E_UNAUTHENTICATED;
    if (who->roles & p->roles_any)
        return 0;
    if ((who->roles & p->roles_self) && self != NULL && strcmp(self, who->user_id) == 0)
        return 0;
    return TS_E_FORBIDDEN;
}

void perm_each_held(unsigned roles, void (*fn)(void *arg, const char *name), void *arg)
{
    for (size_t i = 0; i < permissions_count; i++)
        if (roles & permissions[i].roles_any)
            fn(arg, permissions[i].name);
}
