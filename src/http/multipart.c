/* multipart/form-data as an incremental state machine: delimiter search with a KMP table so
 * any split of the body gives the same parts, one bounded header buffer, no allocation. */
#include "http/multipart.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

enum {
    S_PREAMBLE,     /* before the first delimiter: discarded */
    S_AFTER,        /* right after a delimiter: "--", padding or CRLF */
    S_AFTER_DASH,   /* one '-' seen */
    S_PAD,          /* transport padding (LWSP) before the CRLF */
    S_PAD_LF,       /* CR seen, LF expected */
    S_HEADERS,      /* a part's header block */
    S_DATA,         /* a part's body, up to the next delimiter */
    S_DONE,         /* after the close delimiter: the epilogue is discarded */
};

const char *mp_strerror(int err)
{
    switch (err) {
    case MP_E_MEDIA_TYPE: return "Content-Type must be multipart/form-data";
    case MP_E_BOUNDARY: return "the body does not use the boundary of Content-Type";
    case MP_E_TRUNCATED: return "the body ends before the closing boundary";
    case MP_E_HEADER_TOO_LONG: return "a part's headers are too long";
    case MP_E_TOO_MANY_PARTS: return "too many parts";
    case MP_E_TOO_MANY_HEADERS: return "a part has too many header lines";
    case MP_E_MALFORMED: return "malformed multipart body";
    default: return "multipart error";
    }
}

/* ---- Content-Type ---- */

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 2046 bchars (space allowed, not last) */
static bool is_bchar(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           strchr("'()+_,-./:=? ", c) != NULL;
}

static const char *skip_ows(const char *s)
{
    while (is_ows(*s))
        s++;
    return s;
}

/* Reads a token or quoted-string value at *s into out (at most cap-1 bytes). Returns the
 * length, or -1 when malformed or too long. */
static int param_value(const char **s, char *out, size_t cap)
{
    const char *p = *s;
    size_t n = 0;
    if (*p == '"') {
        p++;
        while (*p && *p != '"') {
            /* only \" and \\ are escapes: browsers send other backslashes as they are */
            if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                p++;
            if (n + 1 >= cap)
                return -1;
            out[n++] = *p++;
        }
        if (*p != '"')
            return -1;
        p++;
    } else {
        while (*p && *p != ';' && !is_ows(*p)) {
            if (n + 1 >= cap)
                return -1;
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    *s = p;
    return (int)n;
}

int mp_boundary_from_content_type(const char *ct, char ret[MP_BOUNDARY_MAX + 1])
{
    static const char media[] = "multipart/form-data";
    if (ct == NULL)
        return MP_E_MEDIA_TYPE;
    const char *s = skip_ows(ct);
    if (strncasecmp(s, media, sizeof(media) - 1) != 0)
        return MP_E_MEDIA_TYPE;
    s = skip_ows(s + sizeof(media) - 1);
    if (*s && *s != ';')
        return MP_E_MEDIA_TYPE;
    char found[MP_BOUNDARY_MAX + 2];
    int have = 0;
    while (*s == ';') {
        s = skip_ows(s + 1);
        const char *name = s;
        while (*s && *s != '=' && *s != ';' && !is_ows(*s))
            s++;
        size_t nlen = (size_t)(s - name);
        s = skip_ows(s);
        if (*s != '=')
            return MP_E_BOUNDARY;
        s = skip_ows(s + 1);
        char value[MP_BOUNDARY_MAX + 2];
        int vlen = param_value(&s, value, sizeof(value));
        bool is_boundary = nlen == 8 && strncasecmp(name, "boundary", 8) == 0;
        if (vlen < 0 && is_boundary)
            return MP_E_BOUNDARY;
        if (vlen < 0)
            return MP_E_MEDIA_TYPE;
        if (is_boundary) {
            if (have++)
                return MP_E_BOUNDARY;
            memcpy(found, value, (size_t)vlen + 1);
        }
        s = skip_ows(s);
    }
    if (*s)
        return MP_E_MEDIA_TYPE;
    size_t n = have ? strlen(found) : 0;
    if (n < 1 || n > MP_BOUNDARY_MAX || found[n - 1] == ' ')
        return MP_E_BOUNDARY;
    for (size_t i = 0; i < n; i++)
        if (!is_bchar(found[i]))
            return MP_E_BOUNDARY;
    memcpy(ret, found, n + 1);
    return 0;
}

/* ---- parser ---- */

void mp_init(struct mp_parser *p, const char *boundary, int max_parts,
             const struct mp_callbacks *cb, void *arg)
{
    memset(p, 0, offsetof(struct mp_parser, hdr)); /* the buffers need no clearing */
    p->cb = cb;
    p->arg = arg;
    p->max_parts = max_parts < MP_PARTS_MAX ? max_parts : MP_PARTS_MAX;
    size_t blen = strnlen(boundary, MP_BOUNDARY_MAX);
    memcpy(p->delim, "\r\n--", 4);
    memcpy(p->delim + 4, boundary, blen);
    p->dlen = 4 + blen;
    /* failure[i]: longest proper prefix of delim[0..i] that is also its suffix */
    size_t k = 0;
    p->fail[0] = 0;
    for (size_t i = 1; i < p->dlen; i++) {
        while (k > 0 && p->delim[i] != p->delim[k])
            k = p->fail[k - 1];
        if (p->delim[i] == p->delim[k])
            k++;
        p->fail[i] = (unsigned char)k;
    }
    p->state = S_PREAMBLE;
    p->matched = 2; /* the body's start counts as a line break: "--boundary" may open it */
}

static int emit(struct mp_parser *p, const char *at, size_t n)
{
    if (n == 0)
        return 0;
    if (p->state == S_PREAMBLE) {
        p->count += n;
        return p->count > MP_PREAMBLE_MAX ? MP_E_BOUNDARY : 0;
    }
    return p->cb->on_part_data ? p->cb->on_part_data(p->arg, at, n) : 0;
}

/* Preamble and part data: looks for the delimiter, passing the bytes before it on. Returns
 * the bytes consumed (up to and including a full delimiter) or a negative code. */
static long scan(struct mp_parser *p, const char *d, size_t n)
{
    size_t i = 0;
    int r;
    while (i < n) {
        if (p->matched == 0) {
            const char *cr = memchr(d + i, '\r', n - i);
            size_t end = cr ? (size_t)(cr - d) : n;
            if ((r = emit(p, d + i, end - i)) < 0)
                return r;
            if (cr == NULL)
                return (long)n;
            p->matched = 1;
            i = end + 1;
            continue;
        }
        char c = d[i];
        if (p->delim[p->matched] == c) {
            i++;
            if (++p->matched == p->dlen) {
                p->matched = 0;
                if (p->state == S_DATA && p->cb->on_part_end && (r = p->cb->on_part_end(p->arg)) < 0)
                    return r;
                p->state = S_AFTER;
                p->count = 0;
                return (long)i;
            }
            continue;
        }
        size_t k = p->matched;
        while (k > 0 && p->delim[k] != c)
            k = p->fail[k - 1];
        if (p->delim[k] == c)
            k++;
        if (k == 0) {
            /* everything held was data, and so is c: the fast path takes it */
            if ((r = emit(p, p->delim, p->matched)) < 0)
                return r;
            p->matched = 0;
            continue;
        }
        if ((r = emit(p, p->delim, p->matched + 1 - k)) < 0)
            return r;
        p->matched = k;
        i++;
    }
    return (long)n;
}

/* Content-Disposition: form-data; name="x"; filename="y". Values are decoded into vals
 * (quoted-string escapes undone), which outlives the call to on_part_begin. */
static int disposition(struct mp_parser *p, const char *v, struct mp_part *part)
{
    const char *s = v;
    while (*s && *s != ';' && !is_ows(*s))
        s++;
    if ((size_t)(s - v) != 9 || strncasecmp(v, "form-data", 9) != 0)
        return MP_E_MALFORMED;
    char *w = p->vals;
    size_t left = sizeof(p->vals);
    bool have_name = false;
    for (;;) {
        s = skip_ows(s);
        if (*s == '\0')
            return 0;
        if (*s != ';')
            return MP_E_MALFORMED;
        s = skip_ows(s + 1);
        if (*s == '\0')
            return 0; /* a trailing ';' */
        const char *name = s;
        while (*s && *s != '=' && *s != ';' && !is_ows(*s))
            s++;
        size_t nlen = (size_t)(s - name);
        s = skip_ows(s);
        if (*s != '=' || nlen == 0)
            return MP_E_MALFORMED;
        s = skip_ows(s + 1);
        int len = param_value(&s, w, left);
        if (len < 0)
            return MP_E_MALFORMED;
        if (nlen == 4 && strncasecmp(name, "name", 4) == 0) {
            if (have_name)
                return MP_E_MALFORMED;
            have_name = true;
            part->name = w;
        } else if (nlen == 8 && strncasecmp(name, "filename", 8) == 0) {
            if (part->filename)
                return MP_E_MALFORMED;
            part->filename = w;
        }
        w += len + 1;
        left -= (size_t)len + 1;
    }
}

static char *trim(char *s, char *end)
{
    while (s < end && is_ows(*s))
        s++;
    while (end > s && is_ows(end[-1]))
        end--;
    *end = '\0';
    return s;
}

/* Parses hdr[0..hlen) (ending in CRLF CRLF, or only CRLF) into part. */
static int headers_parse(struct mp_parser *p, struct mp_part *part)
{
    part->name = "";
    part->filename = NULL;
    part->content_type = NULL;
    char *s = p->hdr, *end = p->hdr + p->hlen - 2; /* drop the blank line's CRLF */
    *end = '\0';
    bool have_cd = false, have_ct = false;
    for (int lines = 0; s < end; lines++) {
        char *eol = strstr(s, "\r\n");
        if (eol == NULL)
            return MP_E_MALFORMED;
        if (lines == MP_PART_HEADERS_MAX)
            return MP_E_TOO_MANY_HEADERS;
        if (memchr(s, '\n', (size_t)(eol - s)) || memchr(s, '\r', (size_t)(eol - s)) ||
            is_ows(*s) || eol == s)
            return MP_E_MALFORMED; /* bare CR/LF, folded or empty line */
        if (memchr(s, '\0', (size_t)(eol - s)))
            return MP_E_MALFORMED;
        char *colon = memchr(s, ':', (size_t)(eol - s));
        if (colon == NULL || colon == s)
            return MP_E_MALFORMED;
        size_t nlen = (size_t)(colon - s);
        char *value = trim(colon + 1, eol);
        int r;
        if (nlen == 19 && strncasecmp(s, "Content-Disposition", 19) == 0) {
            if (have_cd)
                return MP_E_MALFORMED;
            have_cd = true;
            if ((r = disposition(p, value, part)) < 0)
                return r;
        } else if (nlen == 12 && strncasecmp(s, "Content-Type", 12) == 0) {
            if (have_ct)
                return MP_E_MALFORMED;
            have_ct = true;
            part->content_type = value;
        }
        s = eol + 2;
    }
    return have_cd ? 0 : MP_E_MALFORMED;
}

static int headers_byte(struct mp_parser *p, char c)
{
    if (p->hlen >= MP_HEADER_MAX)
        return MP_E_HEADER_TOO_LONG;
    p->hdr[p->hlen++] = c;
    bool done = (p->hlen == 2 && p->hdr[0] == '\r' && p->hdr[1] == '\n') ||
                (p->hlen >= 4 && memcmp(p->hdr + p->hlen - 4, "\r\n\r\n", 4) == 0);
    if (!done)
        return 0;
    if (++p->parts > p->max_parts)
        return MP_E_TOO_MANY_PARTS;
    struct mp_part part;
    p->hdr[p->hlen] = '\0';
    int r = headers_parse(p, &part);
    if (r == 0 && p->cb->on_part_begin)
        r = p->cb->on_part_begin(p->arg, &part);
    if (r < 0)
        return r;
    p->state = S_DATA;
    p->matched = 0;
    return 0;
}

/* One byte after a delimiter. */
static int after_byte(struct mp_parser *p, char c)
{
    switch (p->state) {
    case S_AFTER:
        if (c == '-') {
            p->state = S_AFTER_DASH;
            return 0;
        }
        /* fall through */
    case S_PAD:
        if (is_ows(c)) {
            p->state = S_PAD;
            return ++p->count > MP_PADDING_MAX ? MP_E_MALFORMED : 0;
        }
        if (c == '\r') {
            p->state = S_PAD_LF;
            return 0;
        }
        return MP_E_MALFORMED;
    case S_AFTER_DASH:
        if (c != '-')
            return MP_E_MALFORMED;
        p->state = S_DONE;
        return 0;
    case S_PAD_LF:
        if (c != '\n')
            return MP_E_MALFORMED;
        p->state = S_HEADERS;
        p->hlen = 0;
        return 0;
    }
    return MP_E_MALFORMED;
}

int mp_feed(struct mp_parser *p, const char *data, size_t n)
{
    size_t i = 0;
    while (p->err == 0 && i < n) {
        int r = 0;
        switch (p->state) {
        case S_PREAMBLE:
        case S_DATA: {
            long used = scan(p, data + i, n - i);
            if (used < 0)
                r = (int)used;
            else
                i += (size_t)used;
            break;
        }
        case S_HEADERS:
            r = headers_byte(p, data[i++]);
            break;
        case S_DONE:
            return 0; /* the epilogue means nothing */
        default:
            r = after_byte(p, data[i++]);
        }
        if (r < 0)
            p->err = r;
    }
    return p->err;
}

int mp_finish(struct mp_parser *p)
{
    if (p->err)
        return p->err;
    if (p->state == S_DONE)
        return 0;
    p->err = p->state == S_PREAMBLE ? MP_E_BOUNDARY : MP_E_TRUNCATED;
    return p->err;
}
