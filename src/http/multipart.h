/* A streaming multipart/form-data parser (RFC 7578 over RFC 2046) in bounded memory. */
#ifndef TS_MULTIPART_H
#define TS_MULTIPART_H
#include <stdbool.h>
#include <stddef.h>

#define MP_BOUNDARY_MAX 70          /* RFC 2046: 1..70 characters */
#define MP_HEADER_MAX 8192          /* one part's header block, CRLFs included */
#define MP_PREAMBLE_MAX 4096        /* bytes before the first delimiter */
#define MP_PADDING_MAX 64           /* transport padding after a delimiter */
#define MP_PART_HEADERS_MAX 16      /* header lines in one part (browsers send two or three) */
#define MP_PARTS_MAX 1000           /* parts in one body, whatever a caller asks for */

/* The parser's own errors; a callback's negative return is passed through unchanged. */
enum mp_err {
    MP_E_MEDIA_TYPE = -30100,       /* Content-Type is not multipart/form-data */
    MP_E_BOUNDARY,                  /* no or invalid boundary parameter, or the body never
                                     * uses it (wrong boundary) */
    MP_E_TRUNCATED,                 /* the body ended before the close delimiter */
    MP_E_HEADER_TOO_LONG,           /* a part's header block exceeds MP_HEADER_MAX */
    MP_E_TOO_MANY_PARTS,
    MP_E_TOO_MANY_HEADERS,          /* a part has more than MP_PART_HEADERS_MAX header lines */
    MP_E_MALFORMED,                 /* bad bytes after a delimiter or a bad header line; the
                                     * last: callers test MP_E_MEDIA_TYPE..MP_E_MALFORMED */
};

/* A part's headers as on_part_begin sees them; the strings live until it returns.
 * name is "" when the part has no name; filename and content_type are NULL when absent. */
struct mp_part {
    const char *name;
    const char *filename;
    const char *content_type;
};

/* Each returns 0 to go on, or a negative code that stops the parser and is returned by
 * mp_feed. Data of one part may come in any number of calls. */
struct mp_callbacks {
    int (*on_part_begin)(void *arg, const struct mp_part *part);
    int (*on_part_data)(void *arg, const char *at, size_t n);
    int (*on_part_end)(void *arg);
};

struct mp_parser {
    const struct mp_callbacks *cb;
    void *arg;
    int state;
    int err;                        /* sticky: once failed, every feed returns it */
    int max_parts, parts;
    char delim[MP_BOUNDARY_MAX + 5];    /* "\r\n--" boundary */
    size_t dlen;
    size_t matched;                 /* delimiter bytes matched so far */
    unsigned char fail[MP_BOUNDARY_MAX + 5]; /* KMP failure table of delim */
    size_t count;                   /* preamble bytes, padding bytes */
    size_t hlen;
    char hdr[MP_HEADER_MAX + 1];
    char vals[MP_HEADER_MAX + 1];   /* decoded parameter values */
};

/* Extracts the boundary from a Content-Type value: 0, or MP_E_MEDIA_TYPE / MP_E_BOUNDARY. */
int mp_boundary_from_content_type(const char *content_type, char ret[MP_BOUNDARY_MAX + 1]);
/* boundary: 1..MP_BOUNDARY_MAX characters (from mp_boundary_from_content_type). max_parts is
 * the caller's cap, itself capped at MP_PARTS_MAX. */
void mp_init(struct mp_parser *p, const char *boundary, int max_parts,
             const struct mp_callbacks *cb, void *arg);
/* Feeds the next n bytes. 0, or a negative code (sticky). */
int mp_feed(struct mp_parser *p, const char *data, size_t n);
/* Call at the end of the body: 0 when the close delimiter was seen, else an error. */
int mp_finish(struct mp_parser *p);
/* Its name, for messages. */
const char *mp_strerror(int err);
#endif
