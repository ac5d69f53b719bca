/* XML record reader (expat, streaming): the root element holds one element per record, whose
 * attributes and child elements are its fields. DTDs are refused before expat reads them. */
#include "engines/xmlrec.h"

#include <expat.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FEED_CHUNK (1u << 20)   /* XML_Parse takes an int length */

/* One open element below the root: a record (depth 2) or a field (depth 3..). Its fields are
 * its attributes and child elements; a field with none is text. */
struct xnode {
    char *name;
    unsigned long line;
    json_t *obj;        /* fields by name */
    json_t *vals;       /* child element values in order, while the array form is possible */
    char *first;        /* name of the first child element */
    char *dup;          /* first field name seen twice */
    size_t nfields;     /* attributes + child elements */
    size_t nelems;      /* child elements */
    bool same;          /* every child element has the name in first */
    bool attrs;
    bool first_container;   /* the first child element has fields of its own */
    char *text;         /* text content after leading whitespace, at most REC_MAX_CELL bytes */
    size_t tlen, tcap;
};

struct xrun {
    XML_Parser p;
    const struct rec_in_opts *o;
    json_t *out;
    char *root;
    int depth;   /* of the innermost open element; the root is 1 */
    struct xnode st[REC_XML_MAX_DEPTH + 1];
    char *err;
    size_t errlen;
    bool failed;
};

static bool xml_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool all_space(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!xml_space(s[i]))
            return false;
    return true;
}

/* Records the first error, prefixed with the line when at_line, and stops the parser. */
__attribute__((format(printf, 3, 4))) static void fail(struct xrun *x, bool at_line,
                                                       const char *fmt, ...)
{
    if (x->failed)
        return;
    x->failed = true;
    size_t used = 0;
    if (at_line) {
        int w = snprintf(x->err, x->errlen, "line %lu: ",
                         (unsigned long)XML_GetCurrentLineNumber(x->p));
        used = w > 0 && (size_t)w < x->errlen ? (size_t)w : 0;
    }
    va_list ap;
    va_start(ap, fmt);
    if (x->errlen > used)
        vsnprintf(x->err + used, x->errlen - used, fmt, ap);
    va_end(ap);
    XML_StopParser(x->p, XML_FALSE);
}

static void node_clear(struct xnode *n)
{
    free(n->name);
    free(n->first);
    free(n->dup);
    free(n->text);
    json_decref(n->obj);
    json_decref(n->vals);
    memset(n, 0, sizeof(*n));
}

static int node_open(struct xnode *n, const char *name, unsigned long line)
{
    memset(n, 0, sizeof(*n));
    n->name = strdup(name);
    n->line = line;
    n->obj = json_object();
    n->vals = json_array();
    n->same = true;
    return n->name && n->obj && n->vals ? 0 : -1;
}

/* The array form: a field whose child elements all share one name and that has no attributes,
 * with two or more children, or one that is itself a group (<items><item>..</item></items>). */
static bool node_is_array(const struct xnode *n, int depth)
{
    return depth >= 3 && !n->attrs && n->nelems > 0 && n->same &&
           (n->nelems >= 2 || n->first_container);
}

/* Adds a field (value stolen; NULL = an empty field, absent) to node n at depth. */
static void node_add(struct xrun *x, struct xnode *n, int depth, const char *key, json_t *value,
                     bool attr, bool container)
{
    n->nfields++;
    if (attr) {
        n->attrs = true;
    } else if (++n->nelems == 1) {
        n->first = strdup(key);
        n->first_container = container;
    } else if (n->same && (n->first == NULL || strcmp(n->first, key) != 0)) {
        n->same = false;
    }
    bool maybe_array = depth >= 3 && !n->attrs && n->same;
    if (!maybe_array)
        json_array_clear(n->vals);
    /* an array's length is bounded by the body alone, like the rows of a CSV file */
    if (n->nfields > REC_XML_MAX_FIELDS && !maybe_array)
        fail(x, true, "<%s> has more than %d fields", n->name, REC_XML_MAX_FIELDS);
    if (value == NULL || x->failed) {
        json_decref(value);
        return;
    }
    if (maybe_array)
        json_array_append(n->vals, value);
    if (json_object_get(n->obj, key) == NULL)
        json_object_set(n->obj, key, value);
    else if (n->dup == NULL)
        n->dup = strdup(key);
    json_decref(value);
}

/* The value of a closed element, or NULL for an empty field (and on failure). */
static json_t *node_value(struct xrun *x, struct xnode *n, int depth)
{
    if (n->nfields == 0 && depth >= 3) {
        size_t len = n->tlen;
        while (len && xml_space(n->text[len - 1]))
            len--;
        if (len == 0)
            return NULL;
        json_t *s = json_stringn(n->text, len);
        if (s == NULL)
            fail(x, true, "<%s> holds text that is not valid UTF-8", n->name);
        return s;
    }
    if (node_is_array(n, depth))
        return json_incref(n->vals);
    if (n->dup) {
        fail(x, true, "<%s> (from line %lu) has the field '%s' more than once", n->name, n->line,
             n->dup);
        return NULL;
    }
    return json_incref(n->obj);
}

static json_t *attr_value(const char *s)
{
    return *s ? json_string(s) : NULL;   /* "" is an absent field, as an empty CSV cell is */
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct xrun *x = ud;
    if (x->failed)
        return;
    if (x->depth == REC_XML_MAX_DEPTH) {
        fail(x, true, "<%s> is nested more than %d elements deep", name, REC_XML_MAX_DEPTH);
        return;
    }
    int d = ++x->depth;
    if (d == 1) {
        x->root = strdup(name);
        return;
    }
    struct xnode *parent = &x->st[d - 1];
    if (d >= 3 && parent->tlen > 0) {
        fail(x, true, "<%s> holds both text and elements; a field is either text or a group of "
                      "fields", parent->name);
        return;
    }
    if (d == 2 && x->o->max_records && json_array_size(x->out) >= x->o->max_records) {
        fail(x, false, "more than %zu records", x->o->max_records);
        return;
    }
    struct xnode *n = &x->st[d];
    if (node_open(n, name, (unsigned long)XML_GetCurrentLineNumber(x->p)) < 0) {
        fail(x, true, "out of memory");
        return;
    }
    for (size_t i = 0; atts[i] && !x->failed; i += 2)
        node_add(x, n, d, atts[i], attr_value(atts[i + 1]), true, false);
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    struct xrun *x = ud;
    (void)name;   /* expat has checked that it matches the start tag */
    if (x->failed)
        return;
    int d = x->depth--;
    if (d == 1)
        return;
    struct xnode *n = &x->st[d];
    json_t *v = node_value(x, n, d);
    if (x->failed) {
        json_decref(v);
        return;
    }
    if (d == 2) {
        records__fix_dates(v, x->o->date_format);
        json_array_append_new(x->out, v);
    } else {
        node_add(x, &x->st[d - 1], d - 1, n->name, v, false, n->nfields > 0);
    }
    node_clear(n);
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
    struct xrun *x = ud;
    size_t n = len > 0 ? (size_t)len : 0;
    if (x->failed)
        return;
    struct xnode *node = &x->st[x->depth];
    /* whitespace between elements, or before a field's text; expat splits text at newlines
     * and entity references, so whitespace inside a field's text arrives alone too */
    if (all_space(s, n) && (x->depth <= 2 || node->nfields > 0 || node->tlen == 0))
        return;
    if (x->depth == 1) {
        fail(x, true, "text directly inside the root element <%s>; it must hold one element per "
                      "record", x->root);
        return;
    }
    if (x->depth == 2) {
        fail(x, true, "record <%s> holds text; a record's fields are its child elements and "
                      "attributes, and the records sit inside one root element", node->name);
        return;
    }
    if (node->nfields > 0) {
        fail(x, true, "<%s> holds text next to attributes or child elements; a field is either "
                      "text or a group of fields", node->name);
        return;
    }
    if (node->tlen == 0)
        while (n && xml_space(*s))
            s++, n--;
    if (node->tlen + n > REC_MAX_CELL) {
        fail(x, true, "<%s> holds more than %d bytes of text", node->name, REC_MAX_CELL);
        return;
    }
    if (node->tlen + n > node->tcap) {   /* expat hands text over line by line: double */
        size_t cap = node->tcap ? node->tcap : 64;
        while (cap < node->tlen + n)
            cap *= 2;
        char *t = realloc(node->text, cap);
        if (t == NULL) {
            fail(x, true, "out of memory");
            return;
        }
        node->text = t;
        node->tcap = cap;
    }
    memcpy(node->text + node->tlen, s, n);
    node->tlen += n;
}

/* A DOCTYPE could declare entities (billion laughs, external files): refuse it outright. */
static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
    (void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
    fail(ud, true, "DOCTYPE declarations are not accepted (no DTDs or entities); remove the "
                   "<!DOCTYPE ...> line");
}

static void XMLCALL on_entity(void *ud, const XML_Char *name, int is_param, const XML_Char *value,
                              int value_length, const XML_Char *base, const XML_Char *sysid,
                              const XML_Char *pubid, const XML_Char *notation)
{
    (void)is_param, (void)value, (void)value_length, (void)base, (void)sysid, (void)pubid,
        (void)notation;
    fail(ud, true, "entity declarations are not accepted (%s)", name);
}

static void feed(struct xrun *x, const char *data, size_t n)
{
    size_t off = 0;
    do {
        size_t len = n - off < FEED_CHUNK ? n - off : FEED_CHUNK;
        if (XML_Parse(x->p, data + off, (int)len, off + len == n) == XML_STATUS_ERROR) {
            if (!x->failed)
                snprintf(x->err, x->errlen, "line %lu, column %lu: %s",
                         (unsigned long)XML_GetCurrentLineNumber(x->p),
                         (unsigned long)XML_GetCurrentColumnNumber(x->p) + 1,
                         XML_ErrorString(XML_GetErrorCode(x->p)));
            x->failed = true;
            return;
        }
        off += len;
    } while (off < n);
}

json_t *records__xml_parse(const char *data, size_t n, const struct rec_in_opts *o, char *err,
                           size_t errlen)
{
    struct xrun x = {.o = o, .out = json_array(), .err = err, .errlen = errlen};
    x.p = XML_ParserCreate(NULL);   /* the encoding comes from the document (UTF-8 default) */
    if (x.p == NULL || x.out == NULL) {
        snprintf(err, errlen, "out of memory");
        x.failed = true;
    } else {
        XML_SetUserData(x.p, &x);
        XML_SetElementHandler(x.p, on_start, on_end);
        XML_SetCharacterDataHandler(x.p, on_text);
        XML_SetStartDoctypeDeclHandler(x.p, on_doctype);
        XML_SetEntityDeclHandler(x.p, on_entity);
        XML_SetParamEntityParsing(x.p, XML_PARAM_ENTITY_PARSING_NEVER);
        feed(&x, data, n);
    }
    for (int i = 0; i <= REC_XML_MAX_DEPTH; i++)
        node_clear(&x.st[i]);
    free(x.root);
    if (x.p)
        XML_ParserFree(x.p);
    if (x.failed) {
        json_decref(x.out);
        return NULL;
    }
    return x.out;
}
