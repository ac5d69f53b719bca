/* Streaming JSON writer: commas, nesting and string escaping into a bounded buffer; and the
 * nesting check run on JSON from outside before it is parsed. */
#include "core/json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

bool json_too_deep(const char *s, size_t n, int max)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                return true;
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--; /* a stray closer never buys room for more openers */
        }
    }
    return false;
}

void jw_init(struct jw *w, struct buf *b)
{
    memset(w, 0, sizeof(*w));
    w->b = b;
    w->first[0] = true;
}

static void jw_put(struct jw *w, const char *s, size_t n)
{
    if (w->err == 0) {
        int r = buf_append(w->b, s, n);
        if (r < 0)
            w->err = r;
    }
}

static void jw_before_value(struct jw *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (!w->first[w->depth])
        jw_put(w, ",", 1);
    w->first[w->depth] = false;
}

static void jw_open(struct jw *w, const char *c)
{
    jw_before_value(w);
    if (w->depth >= JW_MAX_DEPTH) {
        w->err = w->err ? w->err : -E2BIG;
        return;
    }
    jw_put(w, c, 1);
    w->first[++w->depth] = true;
}

static void jw_close(struct jw *w, const char *c)
{
    if (w->depth == 0) {
        w->err = w->err ? w->err : -EINVAL;
        return;
    }
    w->depth--;
    jw_put(w, c, 1);
}

void jw_obj_open(struct jw *w) { jw_open(w, "{"); }
void jw_obj_close(struct jw *w) { jw_close(w, "}"); }
void jw_arr_open(struct jw *w) { jw_open(w, "["); }
void jw_arr_close(struct jw *w) { jw_close(w, "]"); }

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        len = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

int json_escape(struct buf *b, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0;
    int r = 0;
    while (i < n && r == 0) {
        unsigned char c = s[i];
        size_t len = utf8_seq_len(s + i, n - i);
        if (len == 1 && c >= 0x20 && c != '"' && c != '\\') {
            i++;
            run++;
            continue;
        }
        if (len > 1) {
            i += len;
            run += len;
            continue;
        }
        r = buf_append(b, s + i - run, run);
        run = 0;
        if (r < 0)
            break;
        char esc[8];
        if (len == 0)
            r = buf_puts(b, "\\ufffd");
        else if (c == '"')
            r = buf_puts(b, "\\\"");
        else if (c == '\\')
            r = buf_puts(b, "\\\\");
        else if (c == '\n')
            r = buf_puts(b, "\\n");
        else if (c == '\r')
            r = buf_puts(b, "\\r");
        else if (c == '\t')
            r = buf_puts(b, "\\t");
        else {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            r = buf_puts(b, esc);
        }
        i++;
    }
    if (r == 0 && run > 0)
        r = buf_append(b, s + i - run, run);
    return r;
}

static void jw_quoted(struct jw *w, const char *s, size_t n)
{
    jw_put(w, "\"", 1);
    if (w->err == 0) {
        int r = json_escape(w->b, s, n);
        if (r < 0)
            w->err = r;
    }
    jw_put(w, "\"", 1);
}

void jw_key(struct jw *w, const char *k)
{
    jw_before_value(w);
    jw_quoted(w, k, strlen(k));
    jw_put(w, ":", 1);
    w->after_key = true;
}

void jw_strn(struct jw *w, const char *s, size_t n)
{
    if (s == NULL) {
        jw_null(w);
        return;
    }
    jw_before_value(w);
    jw_quoted(w, s, n);
}

void jw_str(struct jw *w, const char *s)
{
    jw_strn(w, s, s ? strlen(s) : 0);
}

void jw_int(struct jw *w, int64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);
    jw_before_value(w);
    jw_put(w, tmp, (size_t)n);
}

void jw_double(struct jw *w, double v)
{
    if (!isfinite(v)) {
        jw_null(w);
        return;
    }
    char tmp[40];
    int n;
    if (v == (double)(int64_t)v && fabs(v) < 1e15)
        n = snprintf(tmp, sizeof(tmp), "%" PRId64, (int64_t)v);
    else
        n = snprintf(tmp, sizeof(tmp), "%.15g", v);
    jw_before_value(w);
    jw_put(w, tmp, (size_t)n);
}

void jw_bool(struct jw *w, bool v)
{
    jw_before_value(w);
    jw_put(w, v ? "true" : "false", v ? 4 : 5);
}

void jw_null(struct jw *w)
{
    jw_before_value(w);
    jw_put(w, "null", 4);
}

void jw_raw(struct jw *w, const char *json)
{
    jw_before_value(w);
    jw_put(w, json, strlen(json));
}

int jw_finish(struct jw *w)
{
    if (w->err == 0 && (w->depth != 0 || w->after_key))
        w->err = -EINVAL;
    return w->err;
}

void jw_kstr(struct jw *w, const char *k, const char *v) { jw_key(w, k); jw_str(w, v); }
void jw_kint(struct jw *w, const char *k, int64_t v) { jw_key(w, k); jw_int(w, v); }
void jw_kdouble(struct jw *w, const char *k, double v) { jw_key(w, k); jw_double(w, v); }
void jw_kbool(struct jw *w, const char *k, bool v) { jw_key(w, k); jw_bool(w, v); }
