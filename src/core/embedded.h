/* Files compiled into the binary by tools/embed.c (migrations, OpenAPI documents, docs assets). */
#ifndef TS_EMBEDDED_H
#define TS_EMBEDDED_H
#include <stddef.h>

struct embedded_file {
    const char *name;            /* base name */
    const unsigned char *data;   /* NUL-terminated for convenience */
    size_t len;
};

extern const struct embedded_file schema_files[];     /* schema/NNN_name.sql, in order */
extern const size_t schema_files_count;
extern const struct embedded_file openapi_files[];    /* schema/openapi/<surface>.json */
extern const size_t openapi_files_count;
extern const struct embedded_file docs_files[];       /* the /docs page and its assets */
extern const size_t docs_files_count;

const struct embedded_file *embedded_find(const struct embedded_file *files, size_t n,
                                          const char *name);
#endif
