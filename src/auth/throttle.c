/* Login throttling: an open-addressed table of 64-bit key hashes with failure counts. */
#include "auth/throttle.h"

#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

#define PROBE 16

struct slot {
    uint64_t key;              /* 0 = empty */
    int failures;
    int64_t last_ms, locked_until_ms;
};

struct throttle {
    struct slot *slots;
    size_t n;
    unsigned char salt[crypto_shorthash_KEYBYTES];
};

struct throttle *throttle_new(size_t max_keys)
{
    struct throttle *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->n = max_keys < PROBE ? PROBE : max_keys;
    t->slots = calloc(t->n, sizeof(*t->slots));
    if (t->slots == NULL) {
        free(t);
        return NULL;
    }
    randombytes_buf(t->salt, sizeof(t->salt)); /* keyed hash: no crafted collisions */
    return t;
}

struct throttle *throttle_free(struct throttle *t)
{
    if (t) {
        free(t->slots);
        free(t);
    }
    return NULL;
}

static uint64_t key_hash(const struct throttle *t, const char *key)
{
    uint64_t h;
    crypto_shorthash((unsigned char *)&h, (const unsigned char *)key, strlen(key), t->salt);
    return h ? h : 1;
}

/* The key's slot; with create, a free or the stalest slot in its probe window is taken. */
static struct slot *slot_find(struct throttle *t, const char *key, int create)
{
    uint64_t h = key_hash(t, key);
    int64_t now = clock_now_ms();
    struct slot *victim = NULL;
    for (size_t i = 0; i < PROBE; i++) {
        struct slot *s = &t->slots[(h + i) % t->n];
        if (s->key == h) {
            if (now - s->last_ms > (int64_t)THROTTLE_FORGET_S * 1000)
                s->failures = 0, s->locked_until_ms = 0;
            return s;
        }
        bool empty = s->key == 0, victim_empty = victim && victim->key == 0;
        if (victim == NULL || (empty && !victim_empty) ||
            (!empty && !victim_empty && s->last_ms < victim->last_ms))
            victim = s; /* an empty slot, else the stalest */
    }
    if (!create)
        return NULL;
    memset(victim, 0, sizeof(*victim));
    victim->key = h;
    victim->last_ms = now;
    return victim;
}

int throttle_check(struct throttle *t, const char *key)
{
    struct slot *s = slot_find(t, key, 0);
    int64_t now = clock_now_ms();
    if (s == NULL || s->locked_until_ms <= now)
        return 0;
    return (int)((s->locked_until_ms - now + 999) / 1000);
}

void throttle_fail(struct throttle *t, const char *key)
{
    struct slot *s = slot_find(t, key, 1);
    int64_t now = clock_now_ms();
    s->failures++;
    s->last_ms = now;
    if (s->failures > THROTTLE_FREE) {
        int shift = s->failures - THROTTLE_FREE - 1;
        int64_t secs = shift >= 20 ? THROTTLE_MAX_S : (int64_t)THROTTLE_BASE_S << shift;
        if (secs > THROTTLE_MAX_S)
            secs = THROTTLE_MAX_S;
        s->locked_until_ms = now + secs * 1000;
    }
}

void throttle_clear(struct throttle *t, const char *key)
{
    struct slot *s = slot_find(t, key, 0);
    if (s)
        memset(s, 0, sizeof(*s));
}
