/* Identifiers: time-ordered UUIDv7 strings from libsodium's CSPRNG. */
#ifndef TS_IDS_H
#define TS_IDS_H
#include <stdbool.h>
#include <stddef.h>

#define UUID_STR_LEN 37 /* 36 chars + NUL */

void id_uuid7(char out[UUID_STR_LEN]);
bool id_is_uuid(const char *s);
#endif
