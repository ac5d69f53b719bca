/* What the identity surface's files share: the token body, preferences, route tables. */
#ifndef TS_SURF_IDENTITY_H
#define TS_SURF_IDENTITY_H
#include "api/route.h"
#include "auth/identity.h"
#include "auth/session.h"
#include "core/json.h"

struct token_user {
    const char *id, *tenant_id, *email, *name;
    unsigned roles;
};

/* The one login/refresh body every contract reads (DESIGN.md "Shared auth routes"). */
int identity_token_body(struct hctx *h, const struct issued *t, const struct token_user *u);
/* The stored preferences merged over the defaults: leaderboardPrivacy "public",
 * predictiveAnalyticsEnabled true, notifications {email: true, in_app: true}. */
void identity_preferences(struct jw *w, const char *stored_json);
/* Validates a preferences patch (known keys and types only). 0 or TS_E_VALIDATION. */
int identity_preferences_patch(struct hctx *h, json_t *patch, const char *stored_json,
                               char **ret_json);
int identity_logout(struct hctx *h);
/* Writes a user object (desk shape plus Tessera's extra fields) from a users row selected
 * with identity_user_columns. */
#define IDENTITY_USER_COLUMNS \
    "id, email, name, roles, tenant_id, avatar_url, department, active, email_confirmed, " \
    "last_login, created_at, manager_id"
void identity_user_json(struct jw *w, sqlite3_stmt *q);

extern const struct route_table identity_shared_table;
extern const struct route_table identity_learning_table;
extern const struct route_table identity_desk_table;
extern const struct route_table identity_lms_table;
extern const struct route_table identity_recs_table;
#endif
