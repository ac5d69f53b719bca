/* The audit log: one row per state-changing call, written in the call's own tick. */
#ifndef TS_AUDIT_H
#define TS_AUDIT_H
#include "store/db.h"

struct audit_entry {
    const char *tenant_id, *actor_id, *actor_kind, *method, *route, *path, *target;
    int status;
    const char *request_id;
};

int audit_write(struct db *db, const struct audit_entry *e);
#endif
