/* Unit tests for the hashed content embedding: determinism, unit length, items sharing words
 * and tags closer than unrelated ones, the features hash, and its edge cases. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "engines/hashembed.h"

#define DIM 128

static double dot(const float *a, const float *b, int d)
{
    double s = 0;
    for (int i = 0; i < d; i++)
        s += (double)a[i] * b[i];
    return s;
}

static void embed(const char *title, const char *desc, const char *cat, const char *tags_csv,
                  int dim, float *out)
{
    const char *tags[8];
    char buf[256];
    int n = 0;
    snprintf(buf, sizeof(buf), "%s", tags_csv ? tags_csv : "");
    for (char *p = buf, *t; n < 8 && (t = strtok(p, ",")); p = NULL)
        tags[n++] = t;
    hashembed(title, desc, cat, tags, n, dim, out);
}

static void test_determinism_and_norm(void)
{
    float a[DIM], b[DIM];
    embed("Wireless noise cancelling headphones", "Over-ear, 30 hours of battery", "audio",
          "headphones,bluetooth", DIM, a);
    embed("Wireless noise cancelling headphones", "Over-ear, 30 hours of battery", "audio",
          "headphones,bluetooth", DIM, b);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
    CHECK(fabs(dot(a, a, DIM) - 1.0) < 1e-5);
    /* other dimensions are unit length too */
    float c[512];
    for (int d = 1; d <= 512; d = d * 2 + 1) {
        embed("Wireless headphones", NULL, "audio", "bluetooth", d, c);
        CHECK(fabs(dot(c, c, d) - 1.0) < 1e-5);
    }
    /* case and surrounding blanks of tags and words do not matter */
    embed("WIRELESS Noise cancelling HEADPHONES", "over-ear, 30 HOURS of battery", "audio",
          " Headphones ,BLUETOOTH", DIM, b);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
}

static void test_similar_beats_dissimilar(void)
{
    float phone1[DIM], phone2[DIM], book[DIM], sofa[DIM];
    embed("Galaxy smartphone 5G 128GB", "Android phone with a bright OLED screen", "electronics",
          "smartphone,5g,android", DIM, phone1);
    embed("Pixel smartphone 5G", "Android phone, great camera and OLED display", "electronics",
          "smartphone,android,camera", DIM, phone2);
    embed("A history of medieval Europe", "Kings, wars and monasteries from 500 to 1500",
          "books", "history,medieval", DIM, book);
    embed("Three-seat velvet sofa", "Deep cushions, oak legs", "furniture", "sofa,living-room",
          DIM, sofa);
    double near = dot(phone1, phone2, DIM);
    CHECK(near > 0.5);
    CHECK(near > dot(phone1, book, DIM) + 0.35);
    CHECK(near > dot(phone1, sofa, DIM) + 0.35);
    CHECK(fabs(dot(book, sofa, DIM)) < 0.3);
    /* a shared tag alone pulls two otherwise unrelated items together */
    float t1[DIM], t2[DIM], t3[DIM];
    embed("Alpha", NULL, NULL, "outdoor,camping", DIM, t1);
    embed("Omega", NULL, NULL, "outdoor,camping", DIM, t2);
    embed("Omega", NULL, NULL, "kitchen,baking", DIM, t3);
    CHECK(dot(t1, t2, DIM) > dot(t1, t3, DIM) + 0.3);
    /* a word of a title meets the same word as a tag elsewhere (shared word space) */
    float w1[DIM], w2[DIM], w3[DIM];
    embed("Trail headphones", NULL, NULL, NULL, DIM, w1);
    embed("Quiet", NULL, NULL, "headphones", DIM, w2);
    embed("Quiet", NULL, NULL, "teapot", DIM, w3);
    CHECK(dot(w1, w2, DIM) > dot(w1, w3, DIM) + 0.1);
}

static void test_features_hash(void)
{
    const char *tags[] = {"a", "b"};
    const char *tags2[] = {"ab"};
    char h1[17], h2[17], h3[17], h4[17];
    hashembed_features_hash("t", "d", "c", tags, 2, DIM, h1);
    hashembed_features_hash("t", "d", "c", tags, 2, DIM, h2);
    CHECK_STR(h1, h2);
    CHECK_INT(strlen(h1), 16);
    hashembed_features_hash("t", "d", "c", tags2, 1, DIM, h3); /* fields cannot run together */
    CHECK(strcmp(h1, h3) != 0);
    hashembed_features_hash("t", "d", "c", tags, 2, 64, h4);   /* the dimension is part of it */
    CHECK(strcmp(h1, h4) != 0);
    hashembed_features_hash("td", "", "c", tags, 2, DIM, h4);
    CHECK(strcmp(h1, h4) != 0);
}

static void test_edges(void)
{
    float z[DIM];
    hashembed(NULL, NULL, NULL, NULL, 0, DIM, z);
    int zeros = 0;
    for (int i = 0; i < DIM; i++)
        zeros += z[i] == 0.0f;
    CHECK_INT(zeros, DIM); /* no feature: all zeros, never NaN */
    hashembed("", " ,; ", "", NULL, 0, DIM, z);
    CHECK(dot(z, z, DIM) == 0.0);
    /* long text and long words are bounded and still unit length */
    size_t n = 100000;
    char *big = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        big[i] = (i % 97 == 0) ? ' ' : (char)('a' + i % 26);
    big[n] = '\0';
    hashembed(big, big, "x", NULL, 0, DIM, z);
    CHECK(fabs(dot(z, z, DIM) - 1.0) < 1e-5);
    free(big);
    /* UTF-8 words stay whole and are deterministic */
    float u1[DIM], u2[DIM];
    embed("Café crème brûlée", NULL, NULL, NULL, DIM, u1);
    embed("café crème brûlée", NULL, NULL, NULL, DIM, u2);
    CHECK(memcmp(u1, u2, sizeof(u1)) == 0);
    CHECK(fabs(dot(u1, u1, DIM) - 1.0) < 1e-5);
}

/* Over many random pairs of unrelated one-word titles the cosine stays small: the ±1
 * projection keeps unrelated items near orthogonal (|cos| mostly below 3/sqrt(dim)). */
static void test_unrelated_spread(void)
{
    int big = 0, n = 0;
    float a[DIM], b[DIM];
    char wa[16], wb[16];
    for (int i = 0; i < 200; i++) {
        snprintf(wa, sizeof(wa), "q%dzx%d", i, i * 7);
        snprintf(wb, sizeof(wb), "m%dvy%d", i * 13, i);
        hashembed(wa, NULL, NULL, NULL, 0, DIM, a);
        hashembed(wb, NULL, NULL, NULL, 0, DIM, b);
        big += fabs(dot(a, b, DIM)) > 0.35;
        n++;
    }
    CHECK(big <= n / 50);
}

int main(void)
{
    test_determinism_and_norm();
    test_similar_beats_dissimilar();
    test_features_hash();
    test_edges();
    test_unrelated_spread();
    CHECK_DONE();
}
