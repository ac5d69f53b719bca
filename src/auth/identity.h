/* Tenants and users in the store: creation with validation, the role set, password hashing. */
#ifndef TS_IDENTITY_H
#define TS_IDENTITY_H
#include <sodium.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/ids.h"

#define IDENTITY_HASH_LEN crypto_pwhash_STRBYTES

bool identity_role_valid(const char *role);

/* argon2id via libsodium (interactive limits). Slow on purpose: never call it on the loop. */
int identity_password_hash(const char *password, char out[IDENTITY_HASH_LEN]);

/* Each returns 0, -EINVAL with a reason in err (bad field), -EEXIST (duplicate), or TS_E_*. */
int identity_tenant_create(sqlite3 *db, const char *name, const char *domain, const char *plan,
                           bool allow_registration, const char *default_role,
                           char ret_id[UUID_STR_LEN], char *err, size_t errlen);
int identity_user_create(sqlite3 *db, const char *tenant_domain, const char *email,
                         const char *name, const char *roles_csv, const char *password_hash,
                         char ret_id[UUID_STR_LEN], char *ret_tenant_id, char *err,
                         size_t errlen);
/* Writes roles_csv as a JSON array into out (validated). */
int identity_roles_json(const char *roles_csv, char *out, size_t n, char *err, size_t errlen);
#endif
