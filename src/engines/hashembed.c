/* Content embeddings from hashed word and character n-grams through a seeded ±1 projection. */
#include "engines/hashembed.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Fixed seed of the projection ("tessera!" as bytes): changing it changes every vector, so
 * it goes with HASHEMBED_VERSION. */
#define HE_SEED 0x7465737365726121ULL
#define HE_MAX_WORD 64      /* longer runs are cut (bounded n-gram work per word) */
#define HE_MAX_DIM 1024    /* values of out past it stay 0 */

/* Feature spaces: a byte mixed into the hash so a word "phone" and a tag "phone" differ where
 * they should (whole tag, whole category) and meet where they should (words, grams). */
enum { SP_WORD = 'w', SP_BIGRAM = 'b', SP_GRAM = 'c', SP_TAG = 't', SP_CATEGORY = 'k' };

/* Group weights: each group's projected vector is normalised, then scaled by its weight. */
#define W_TITLE_WORDS 1.0f
#define W_TITLE_GRAMS 0.6f
#define W_DESC_WORDS 0.7f
#define W_DESC_GRAMS 0.4f
#define W_CATEGORY 1.4f
#define W_TAGS 1.6f
#define W_TAG_GRAMS 0.6f
#define W_BIGRAM 0.7f       /* a bigram against a unigram inside a word group */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* FNV-1a over the space byte and the text, finished with a 64-bit mixer. */
static uint64_t feature_hash(int space, const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    h = (h ^ (unsigned char)space) * 0x100000001b3ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return mix64(h ^ HE_SEED);
}

/* One group being accumulated in projected space. */
struct group {
    float *v;
    int dim;
    int nfeat;
};

/* Adds w times the projection row of feature f: dim signs drawn 64 at a time from a
 * splitmix64 stream seeded by the feature hash, so the "matrix" is never stored. */
static void group_add(struct group *g, uint64_t f, float w)
{
    uint64_t state = f;
    g->nfeat++;
    for (int j = 0; j < g->dim; j += 64) {
        state += 0x9e3779b97f4a7c15ULL;
        uint64_t bits = mix64(state);
        int n = g->dim - j < 64 ? g->dim - j : 64;
        for (int b = 0; b < n; b++)
            g->v[j + b] += (bits >> b & 1) ? w : -w;
    }
}

/* Normalises the group and adds weight times it to out; then clears it. */
static void group_flush(struct group *g, float weight, float *out)
{
    double ss = 0;
    for (int j = 0; j < g->dim; j++)
        ss += (double)g->v[j] * g->v[j];
    if (g->nfeat > 0 && ss > 0) {
        float s = (float)(weight / sqrt(ss));
        for (int j = 0; j < g->dim; j++)
            out[j] += s * g->v[j];
    }
    memset(g->v, 0, sizeof(float) * (size_t)g->dim);
    g->nfeat = 0;
}

static bool is_word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

static const char *const stop_words[] = {
    "a",  "an", "and", "are", "as",   "at",   "be",   "by",   "for", "from", "in", "is",
    "it", "of", "on",  "or",  "that", "the",  "this", "to",   "with", "its", "was", "were",
};

static bool is_stop(const char *w, size_t n)
{
    for (size_t i = 0; i < sizeof(stop_words) / sizeof(stop_words[0]); i++)
        if (strlen(stop_words[i]) == n && memcmp(stop_words[i], w, n) == 0)
            return true;
    return false;
}

/* Character 3- and 4-grams of "<word>" (boundary marks make prefixes and suffixes count). */
static void add_grams(struct group *g, const char *w, size_t n, float weight)
{
    char buf[HE_MAX_WORD + 2];
    buf[0] = '<';
    memcpy(buf + 1, w, n);
    buf[n + 1] = '>';
    size_t len = n + 2;
    for (size_t k = 3; k <= 4; k++)
        for (size_t i = 0; i + k <= len; i++)
            group_add(g, feature_hash(SP_GRAM, buf + i, k), weight);
}

/* Walks the words of text (lowercased into a scratch word), feeding unigrams and bigrams to
 * words and character grams to grams (either may be NULL). Returns the words seen. */
static int add_text(const char *text, size_t max, struct group *words, struct group *grams)
{
    char prev[HE_MAX_WORD], cur[HE_MAX_WORD], pair[2 * HE_MAX_WORD + 1];
    size_t nprev = 0;
    int count = 0;
    size_t i = 0;
    while (text && i < max && text[i]) {
        while (i < max && text[i] && !is_word_byte((unsigned char)text[i]))
            i++;
        size_t n = 0;
        while (i < max && text[i] && is_word_byte((unsigned char)text[i])) {
            unsigned char c = (unsigned char)text[i++];
            if (n < HE_MAX_WORD)
                cur[n++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        if (n == 0 || is_stop(cur, n))
            continue;
        count++;
        if (words) {
            group_add(words, feature_hash(SP_WORD, cur, n), 1.0f);
            if (nprev) {
                memcpy(pair, prev, nprev);
                pair[nprev] = ' ';
                memcpy(pair + nprev + 1, cur, n);
                group_add(words, feature_hash(SP_BIGRAM, pair, nprev + 1 + n), W_BIGRAM);
            }
        }
        if (grams)
            add_grams(grams, cur, n, 1.0f);
        memcpy(prev, cur, n);
        nprev = n;
    }
    return count;
}

/* A whole tag or category as one token: lowercased, surrounding blanks trimmed. */
static void add_whole(struct group *g, int space, const char *s, float weight)
{
    char buf[256];
    size_t n = 0;
    while (*s == ' ' || *s == '\t')
        s++;
    for (; *s && n < sizeof(buf); s++)
        buf[n++] = (char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s);
    while (n && (buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    if (n)
        group_add(g, feature_hash(space, buf, n), weight);
}

void hashembed(const char *title, const char *description, const char *category,
               const char *const *tags, int ntags, int dim, float *out)
{
    if (dim <= 0)
        return;
    memset(out, 0, sizeof(float) * (size_t)dim);
    if (dim > HE_MAX_DIM)
        dim = HE_MAX_DIM;
    float a[HE_MAX_DIM], b[HE_MAX_DIM];
    memset(a, 0, sizeof(float) * (size_t)dim);
    memset(b, 0, sizeof(float) * (size_t)dim);
    struct group g1 = {a, dim, 0}, g2 = {b, dim, 0};

    add_text(title, HASHEMBED_MAX_TEXT, &g1, &g2);
    group_flush(&g1, W_TITLE_WORDS, out);
    group_flush(&g2, W_TITLE_GRAMS, out);
    add_text(description, HASHEMBED_MAX_TEXT, &g1, &g2);
    group_flush(&g1, W_DESC_WORDS, out);
    group_flush(&g2, W_DESC_GRAMS, out);
    if (category && *category) {
        add_whole(&g1, SP_CATEGORY, category, 2.0f);
        add_text(category, 256, &g1, NULL);
        group_flush(&g1, W_CATEGORY, out);
    }
    if (ntags > HASHEMBED_MAX_TAGS)
        ntags = HASHEMBED_MAX_TAGS;
    for (int t = 0; tags && t < ntags; t++) {
        if (tags[t] == NULL)
            continue;
        add_whole(&g1, SP_TAG, tags[t], 2.0f);
        add_text(tags[t], 256, &g1, &g2);
    }
    group_flush(&g1, W_TAGS, out);
    group_flush(&g2, W_TAG_GRAMS, out);

    double ss = 0;
    for (int j = 0; j < dim; j++)
        ss += (double)out[j] * out[j];
    if (ss > 0) {
        float s = (float)(1.0 / sqrt(ss));
        for (int j = 0; j < dim; j++)
            out[j] *= s;
    }
}

/* The input as the embedding sees it, hashed with lengths so fields cannot run together. */
static uint64_t hash_field(uint64_t h, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n > HASHEMBED_MAX_TEXT)
        n = HASHEMBED_MAX_TEXT;
    h = mix64(h ^ (uint64_t)n);
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return h;
}

void hashembed_features_hash(const char *title, const char *description, const char *category,
                             const char *const *tags, int ntags, int dim, char ret[17])
{
    uint64_t h = mix64(HE_SEED ^ ((uint64_t)HASHEMBED_VERSION << 32) ^ (uint64_t)(unsigned)dim);
    h = hash_field(h, title);
    h = hash_field(h, description);
    h = hash_field(h, category);
    if (ntags > HASHEMBED_MAX_TAGS)
        ntags = HASHEMBED_MAX_TAGS;
    h = mix64(h ^ (uint64_t)(ntags > 0 ? ntags : 0));
    for (int t = 0; tags && t < ntags; t++)
        h = hash_field(h, tags[t]);
    snprintf(ret, 17, "%016llx", (unsigned long long)mix64(h));
}
