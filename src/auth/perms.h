/* Roles, API-key scopes and the one role-to-permission table every route names a row of. */
#ifndef TS_PERMS_H
#define TS_PERMS_H
#include <stdbool.h>
#include <stddef.h>

#include "core/ids.h"

enum {
    ROLE_ADMIN = 1u << 0,
    ROLE_ORG_ADMIN = 1u << 1,
    ROLE_MANAGER = 1u << 2,
    ROLE_VIEWER = 1u << 3,
    ROLE_LEARNER = 1u << 4,
    ROLE_TRAINER = 1u << 5,
    ROLE_APPROVER = 1u << 6,
    ROLE_AGENT = 1u << 7,
    ROLE_DEVELOPER = 1u << 8,
    ROLE_MASTER_ADMIN = 1u << 9,
    ROLE_ALL = (1u << 10) - 1,
};

/* API-key scopes (recs.md section 6: "read", "write"; "internal" for service routes). */
enum { SCOPE_READ = 1u << 0, SCOPE_WRITE = 1u << 1, SCOPE_INTERNAL = 1u << 2 };

extern const char *const role_names[];      /* index = bit number; NULL-terminated */

#define ROLES_ADMINS (ROLE_ADMIN | ROLE_ORG_ADMIN | ROLE_MASTER_ADMIN)
#define ROLES_DESK_STAFF                                                                   \
    (ROLES_ADMINS | ROLE_AGENT | ROLE_MANAGER | ROLE_APPROVER | ROLE_DEVELOPER)

/* A row: the roles that hold the permission for any object, the roles that hold it only for
 * themselves (the route's self_param must equal the caller's user id), and the API-key scopes
 * that grant it. */
struct permission {
    const char *name;
    unsigned roles_any;
    unsigned roles_self;
    unsigned key_scopes;
    const char *summary;
};

extern const struct permission permissions[];
extern const size_t permissions_count;

enum principal_kind { PRINCIPAL_NONE, PRINCIPAL_USER, PRINCIPAL_API_KEY };

/* Who is calling, from a verified credential. */
struct principal {
    enum principal_kind kind;
    unsigned roles;                  /* users */
    unsigned scopes;                 /* API keys */
    char tenant_id[UUID_STR_LEN];
    char user_id[UUID_STR_LEN];      /* users */
    char session_id[UUID_STR_LEN];   /* users with a session */
    char key_id[UUID_STR_LEN];       /* API keys */
};

const struct permission *perm_find(const char *name);
int role_bit(const char *name);                       /* bit, or -1 for an unknown role */
const char *role_primary(unsigned roles);             /* highest role held, "viewer" if none */
/* 0 when who may use p; `self` is the route's self_param value (NULL if none).
 * Returns TS_E_FORBIDDEN otherwise. The one place object rules are checked. */
int perm_check(const struct permission *p, const struct principal *who, const char *self);
/* Calls fn for every permission name the roles hold (for login's "permissions"). */
void perm_each_held(unsigned roles, void (*fn)(void *arg, const char *name), void *arg);
#endif
