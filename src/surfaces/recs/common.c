/* recs shared rules: section 9 validation, interaction weights, model names. */
#include "surfaces/recs/recs.h"

#include <ctype.h>

bool recs_id_valid(const char *s)
{
    size_t n = 0;
    for (; s && s[n]; n++)
        if (!isalnum((unsigned char)s[n]) && s[n] != '-' && s[n] != '_')
            return false;
    return n >= 1 && n <= 128;
}

bool recs_category_valid(const char *s)
{
    size_t n = 0;
    for (; s && s[n]; n++)
        if (!(islower((unsigned char)s[n]) || isdigit((unsigned char)s[n]) || s[n] == '-'))
            return false;
    return n >= 1 && n <= 64;
}

const struct recs_itype recs_itypes[] = {
    {"view", 1.0f},    {"click", 2.0f},    {"add_to_cart", 3.0f},       {"like", 4.0f},
    {"purchase", 5.0f}, {"dislike", -4.0f}, {"remove_from_cart", -2.0f},
};
const size_t recs_itypes_count = sizeof(recs_itypes) / sizeof(recs_itypes[0]);

bool recs_itype_weight(const char *name, float *ret)
{
    for (size_t i = 0; name && i < recs_itypes_count; i++)
        if (strcmp(recs_itypes[i].name, name) == 0) {
            *ret = recs_itypes[i].weight;
            return true;
        }
    return false;
}

const char *recs_model_prefix(const char *model_type)
{
    if (model_type == NULL)
        return NULL;
    if (!strcmp(model_type, "matrix_factorization"))
        return "mf";
    if (!strcmp(model_type, "two_tower"))
        return "tt";
    if (!strcmp(model_type, "gnn"))
        return "gnn";
    return NULL;
}
