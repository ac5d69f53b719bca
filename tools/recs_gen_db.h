/* Writes recs-gen's records (tools/recs_gen.h) straight into a Tessera database: rc_items,
 * their content embeddings in rc_item_content (hashembed, as the items route computes them)
 * and rc_interactions, with multi-row prepared inserts. Used by `tessera serve --demo` inside
 * its transaction and by the standalone recs-gen for tools/bench/recs. */
#ifndef RECS_GEN_DB_H
#define RECS_GEN_DB_H
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "recs_gen.h"

struct rg_db_counts {
    int64_t items, users, interactions;
    int64_t types[RG_NTYPES];    /* interactions per rg_type_names entry */
    double write_s, index_s;     /* seconds generating and writing; rebuilding indexes */
};

/* Inside the caller's transaction: the secondary indexes of rc_interactions are dropped for
 * the load and built again after it (one sort each instead of a million random inserts).
 * now_ms is every row's created_at / updated_at; dim the content embedding size. The tenant
 * must have no recs item or interaction yet. 0, or a negative errno / -1 with err set. */
int rg_db_load(sqlite3 *db, const char *tenant_id, const struct rg_config *c, int64_t now_ms,
               int dim, struct rg_db_counts *ret, char *err, size_t errlen);
#endif
