/* libFuzzer target: the input's first line is a Content-Type, the rest a multipart body; it is
 * parsed whole and in small chunks, and both runs must see the same parts and the same end. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/multipart.h"

struct tally {
    uint64_t hash;   /* FNV-1a over every event and byte */
    size_t parts;
};

static void mix(struct tally *t, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        t->hash = (t->hash ^ b[i]) * 1099511628211ull;
}

static int begin_cb(void *arg, const struct mp_part *p)
{
    struct tally *t = arg;
    t->parts++;
    mix(t, "B", 1);
    mix(t, p->name, strlen(p->name) + 1);
    if (p->filename)
        mix(t, p->filename, strlen(p->filename) + 1);
    if (p->content_type)
        mix(t, p->content_type, strlen(p->content_type) + 1);
    return 0;
}

static int data_cb(void *arg, const char *at, size_t n)
{
    mix(arg, at, n);
    return 0;
}

static int end_cb(void *arg)
{
    mix(arg, "E", 1);
    return 0;
}

static const struct mp_callbacks cbs = {begin_cb, data_cb, end_cb};

static int run(const char *boundary, const char *body, size_t n, size_t step, struct tally *t)
{
    static struct mp_parser p;
    mp_init(&p, boundary, 64, &cbs, t);
    int r = 0;
    for (size_t i = 0; r == 0 && i < n; i += step)
        r = mp_feed(&p, body + i, n - i < step ? n - i : step);
    return r ? r : mp_finish(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    size_t hlen = nl ? (size_t)(nl - (const char *)data) : 0;
    char ct[512], boundary[MP_BOUNDARY_MAX + 1];
    if (hlen >= sizeof(ct))
        hlen = sizeof(ct) - 1;
    memcpy(ct, data, hlen);
    ct[hlen] = '\0';
    if (memchr(ct, '\0', hlen) || mp_boundary_from_content_type(ct, boundary) != 0)
        strcpy(boundary, "B");
    const char *body = nl ? nl + 1 : (const char *)data;
    size_t n = size - (size_t)(body - (const char *)data);
    struct tally whole = {14695981039346656037ull, 0}, split = whole, bytes = whole;
    int r1 = run(boundary, body, n, n ? n : 1, &whole);
    int r2 = run(boundary, body, n, (size % 13) + 1, &split);
    int r3 = run(boundary, body, n, 1, &bytes);
    if (r1 != r2 || r1 != r3 || whole.hash != split.hash || whole.hash != bytes.hash ||
        whole.parts != split.parts)
        abort(); /* the split changed the result */
    return 0;
}
