/* Tenants and users: validated creation, the role set, argon2id password hashes. */
#include "auth/identity.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "auth/perms.h"
#include "core/clock.h"
#include "core/err.h"

bool identity_role_valid(const char *role)
{
    return role_bit(role) >= 0;
}

int identity_password_hash(const char *password, char out[IDENTITY_HASH_LEN])
{
    if (crypto_pwhash_str_alg(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return -ENOMEM;
    return 0;
}

static bool domain_valid(const char *d)
{
    size_t n = strlen(d);
    if (n < 1 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)d[i]) && d[i] != '.' && d[i] != '-')
            return false;
    return true;
}

static bool email_valid(const char *e)
{
    const char *at = strchr(e, '@');
    size_t n = strlen(e);
    return n >= 3 && n <= 254 && at && at != e && at[1] && !strchr(at + 1, '@') &&
           !strpbrk(e, " \t\r\n");
}

int identity_roles_json(const char *roles_csv, char *out, size_t n, char *err, size_t errlen)
{
    size_t o = 0;
    o += (size_t)snprintf(out + o, n - o, "[");
    const char *p = roles_csv;
    int count = 0;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char role[32];
        if (len == 0 || len >= sizeof(role)) {
            snprintf(err, errlen, "role list '%s' is malformed", roles_csv);
            return -EINVAL;
        }
        memcpy(role, p, len);
        role[len] = '\0';
        if (!identity_role_valid(role)) {
            snprintf(err, errlen, "unknown role '%s'", role);
            return -EINVAL;
        }
        if (o + len + 4 >= n)
            return -E2BIG;
        o += (size_t)snprintf(out + o, n - o, "%s\"%s\"", count++ ? "," : "", role);
        p += len + (comma ? 1 : 0);
    }
    if (count == 0) {
        snprintf(err, errlen, "at least one role is required");
        return -EINVAL;
    }
    snprintf(out + o, n - o, "]");
    return 0;
}

static int step_done(sqlite3 *db, sqlite3_stmt *st, char *err, size_t errlen)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return 0;
    snprintf(err, errlen, "%s", sqlite3_errmsg(db));
    if ((rc & 0xFF) == SQLITE_CONSTRAINT)
        return -EEXIST;
    return (rc & 0xFF) == SQLITE_BUSY ? TS_E_BUSY : TS_E_INTERNAL;
}

int identity_tenant_create(sqlite3 *db, const char *name, const char *domain, const char *plan,
                           bool allow_registration, const char *default_role,
                           char ret_id[UUID_STR_LEN], char *err, size_t errlen)
{
    static const char *const plans[] = {"starter", "pro", "enterprise"}; /* recs.md section 6 */
    bool plan_ok = plan == NULL;
    for (int i = 0; i < 3 && !plan_ok; i++)
        plan_ok = strcmp(plan, plans[i]) == 0;
    if (!plan_ok) {
        snprintf(err, errlen, "--plan must be starter, pro or enterprise, not '%s'", plan);
        return -EINVAL;
    }
    if (default_role && !identity_role_valid(default_role)) {
        snprintf(err, errlen, "--default-role: unknown role '%s'", default_role);
        return -EINVAL;
    }
    if (name == NULL || !name[0] || strlen(name) > 200) {
        snprintf(err, errlen, "--name is required (1-200 characters)");
        return -EINVAL;
    }
    if (domain == NULL || !domain_valid(domain)) {
        snprintf(err, errlen, "--domain is required: letters, digits, dots and hyphens");
        return -EINVAL;
    }
    char id[UUID_STR_LEN];
    id_uuid7(id);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db,
                       "INSERT INTO tenants(id, name, domain, plan, created_at, allow_registration,"
                       " default_role) VALUES(?,?,?,?,?,?,?)",
                       -1, &st, NULL);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, domain, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, plan ? plan : "starter", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, clock_now_ms());
    sqlite3_bind_int(st, 6, allow_registration);
    sqlite3_bind_text(st, 7, default_role ? default_role : "viewer", -1, SQLITE_STATIC);
    int r = step_done(db, st, err, errlen);
    sqlite3_finalize(st);
    if (r == -EEXIST)
        snprintf(err, errlen, "a tenant with domain '%s' already exists", domain);
    if (r == 0)
        memcpy(ret_id, id, UUID_STR_LEN);
    return r;
}

static int tenant_id_of(sqlite3 *db, const char *domain, char out[UUID_STR_LEN])
{
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db, "SELECT id FROM tenants WHERE domain = ?", -1, &st, NULL);
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    int r = -ENOENT;
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(out, UUID_STR_LEN, "%s", (const char *)sqlite3_column_text(st, 0));
        r = 0;
    }
    sqlite3_finalize(st);
    return r;
}

int identity_user_create(sqlite3 *db, const char *tenant_domain, const char *email,
                         const char *name, const char *roles_csv, const char *password_hash,
                         char ret_id[UUID_STR_LEN], char *ret_tenant_id, char *err,
                         size_t errlen)
{
    char tenant[UUID_STR_LEN], roles[512];
    if (tenant_domain == NULL || tenant_id_of(db, tenant_domain, tenant) < 0) {
        snprintf(err, errlen, "--tenant: no tenant with domain '%s'",
                 tenant_domain ? tenant_domain : "");
        return -EINVAL;
    }
    if (email == NULL || !email_valid(email)) {
        snprintf(err, errlen, "--email must be an email address");
        return -EINVAL;
    }
    if (name == NULL || !name[0] || strlen(name) > 200) {
        snprintf(err, errlen, "--name is required (1-200 characters)");
        return -EINVAL;
    }
    int r = identity_roles_json(roles_csv ? roles_csv : "", roles, sizeof(roles), err, errlen);
    if (r < 0)
        return r;
    char id[UUID_STR_LEN];
    id_uuid7(id);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(db,
                       "INSERT INTO users(tenant_id, id, email, name, password_hash, roles, "
                       "email_confirmed, created_at) VALUES(?,?,?,?,?,?,1,?)",
                       -1, &st, NULL);
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, email, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, password_hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, roles, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, clock_now_ms());
    r = step_done(db, st, err, errlen);
    sqlite3_finalize(st);
    if (r == -EEXIST)
        snprintf(err, errlen, "user '%s' already exists in tenant '%s'", email, tenant_domain);
    if (r == 0) {
        memcpy(ret_id, id, UUID_STR_LEN);
        if (ret_tenant_id)
            memcpy(ret_tenant_id, tenant, UUID_STR_LEN);
    }
    return r;
}
