/* Content embeddings of catalog items without a trained model: hashed word and character
 * n-gram features of title, description, category and tags, projected to `dim` values by a
 * fixed seeded random ±1 projection that is generated from a hash (no table is stored), and
 * L2-normalised. Pure and thread-safe; the same input always gives the same bytes. */
#ifndef TS_HASHEMBED_H
#define TS_HASHEMBED_H
#include <stdint.h>

/* Bumped whenever the features, weights or projection change: stored vectors computed under
 * another version are stale (it is part of hashembed_features_hash). */
#define HASHEMBED_VERSION 1
/* Text beyond these is ignored (bounded work per item). */
#define HASHEMBED_MAX_TEXT 16384
#define HASHEMBED_MAX_TAGS 64

/* Writes dim floats to out (128 by default in recs; values past the 1024th stay 0).
 * Features, each in its own group whose projected vector is normalised and then weighted
 * (so a long description cannot drown the title, and tags/category count more):
 *   title        word unigrams + bigrams (1.0), character 3/4-grams of its words (0.6)
 *   description  word unigrams + bigrams (0.7), character 3/4-grams (0.4)
 *   category     the whole category (1.4, "k:" space) plus its hyphen-separated words
 *   tags         each whole tag (1.6, "t:" space) plus its words; character grams (0.6)
 * Words are ASCII-lowercased runs of letters/digits (bytes >= 0x80 count as letters, so UTF-8
 * words stay whole); a short English stop-word list is skipped. Word and character features
 * share one hash space across fields, so "headphones" in one item's title meets the tag
 * "headphones" of another. Any argument may be NULL or empty; with no feature at all out is
 * all zeros (the only case where it is not unit length). */
void hashembed(const char *title, const char *description, const char *category,
               const char *const *tags, int ntags, int dim, float *out);

/* 16 lowercase hex digits + NUL identifying (version, dim, every feature input): equal
 * strings mean hashembed would write the same vector. */
void hashembed_features_hash(const char *title, const char *description, const char *category,
                             const char *const *tags, int ntags, int dim, char ret[17]);
#endif
