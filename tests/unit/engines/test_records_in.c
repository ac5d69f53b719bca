/* Unit tests for the record readers: CSV quoting and limits, header checks, order line items,
 * date_format, record limits, NDJSON and XML, and the real (damaged) Online Retail header. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "engines/records_in.h"

static char err[512];

static json_t *parse_n(enum rec_format f, const char *body, size_t n, const struct rec_in_opts *o)
{
    static const struct rec_in_opts none = {.max_records = 10000};
    err[0] = '\0';
    json_t *v = records_parse(f, body, n, o ? o : &none, err, sizeof(err));
    if (v == NULL && err[0] == '\0')
        fprintf(stderr, "records_parse failed without a message\n");
    return v;
}

static json_t *parse(enum rec_format f, const char *body, const struct rec_in_opts *o)
{
    return parse_n(f, body, strlen(body), o);
}

/* got (consumed) equals the JSON text want */
#define CHECK_JSON(got, want)                                                                   \
    do {                                                                                        \
        json_t *g_ = (got), *w_ = json_loads((want), 0, NULL);                                  \
        if (w_ == NULL)                                                                         \
            fprintf(stderr, "%s:%d: bad expected JSON\n", __FILE__, __LINE__);                  \
        if (g_ == NULL || !json_equal(g_, w_)) {                                                \
            char *d_ = g_ ? json_dumps(g_, JSON_SORT_KEYS) : NULL;                              \
            fprintf(stderr, "%s:%d: CHECK_JSON failed: got %s (err '%s'), want %s\n", __FILE__, \
                    __LINE__, d_ ? d_ : "NULL", err, (want));                                   \
            free(d_);                                                                           \
            check_failures++;                                                                   \
        }                                                                                       \
        json_decref(g_);                                                                        \
        json_decref(w_);                                                                        \
    } while (0)

/* parsing fails and the message holds every fragment given */
static void expect_err_(int line, json_t *v, const char *const *frags)
{
    if (v != NULL) {
        fprintf(stderr, "test line %d: expected an error, got records\n", line);
        check_failures++;
        json_decref(v);
        return;
    }
    for (; *frags; frags++)
        if (strstr(err, *frags) == NULL) {
            fprintf(stderr, "test line %d: error '%s' lacks '%s'\n", line, err, *frags);
            check_failures++;
        }
}
#define EXPECT_ERR(v, ...) expect_err_(__LINE__, (v), (const char *const[]){__VA_ARGS__, NULL})

/* ---------- CSV ---------- */

static void test_csv_quoting(void)
{
    CHECK_JSON(parse(REC_CSV, "a,b,c\n1,\"x,y\",\"he said \"\"hi\"\"\"\n", NULL),
               "[{\"a\":\"1\",\"b\":\"x,y\",\"c\":\"he said \\\"hi\\\"\"}]");
    /* CRLF, a quoted empty cell, an unquoted 7" kept as typed */
    CHECK_JSON(parse(REC_CSV, "a,b\r\n\"\",7\" frame\r\n3,4", NULL),
               "[{\"b\":\"7\\\" frame\"},{\"a\":\"3\",\"b\":\"4\"}]");
    /* an embedded newline (LF and CRLF) inside quotes; line numbers count it */
    CHECK_JSON(parse(REC_CSV, "a,b\n\"line1\nline2\",\"x\r\ny\"\n", NULL),
               "[{\"a\":\"line1\\nline2\",\"b\":\"x\\r\\ny\"}]");
    EXPECT_ERR(parse(REC_CSV, "a,b\n\"x\ny\",1\n5,6,7\n", NULL), "line 4 has 3 cells",
               "2 columns");
    /* a lone CR ends a row too; trailing comma gives an empty (absent) last cell */
    CHECK_JSON(parse(REC_CSV, "a,b\r1,\r2,3\r", NULL), "[{\"a\":\"1\"},{\"a\":\"2\",\"b\":\"3\"}]");
    EXPECT_ERR(parse(REC_CSV, "a,b\n\"x\"y,2\n", NULL), "line 2, column 1",
               "two quotes");
}

static void test_csv_shape(void)
{
    /* BOM, trimmed header names, empty cells absent, fewer cells absent, blank rows skipped */
    CHECK_JSON(parse(REC_CSV, "\xEF\xBB\xBF id , name ,region\n1,,EU\n\n2\n,,\n3,C,\n", NULL),
               "[{\"id\":\"1\",\"region\":\"EU\"},{\"id\":\"2\"},{\"id\":\"3\",\"name\":\"C\"}]");
    CHECK_JSON(parse(REC_CSV, "\n\nid\n1\n", NULL), "[{\"id\":\"1\"}]");
    EXPECT_ERR(parse(REC_CSV, "\n\nx,x\n", NULL), "line 3: the header names the column 'x'");
    CHECK_JSON(parse(REC_CSV, "id,name\n", NULL), "[]");
    EXPECT_ERR(parse(REC_CSV, "", NULL), "empty");
    EXPECT_ERR(parse(REC_CSV, "a,b\n1,2,3\n", NULL), "line 2 has 3 cells", "named in the header");
    EXPECT_ERR(parse(REC_CSV, "a,,c\n1,2,3\n", NULL), "line 1: header column 2 has no name", "columns=");
    EXPECT_ERR(parse(REC_CSV, "a,b\n1,\"\xff\"\n", NULL), "line 2, column 2 (b)", "UTF-8");
    /* a NUL inside a cell is kept (json strings hold it); in a header name it is refused */
    json_t *v = parse_n(REC_CSV, "a\nx\0y\n", 6, NULL);
    CHECK(v && json_string_length(json_object_get(json_array_get(v, 0), "a")) == 3);
    json_decref(v);
    EXPECT_ERR(parse_n(REC_CSV, "a\0b\n1\n", 6, NULL), "NUL");
}

static void test_csv_header(void)
{
    EXPECT_ERR(parse(REC_CSV, "InvoiceNo,InvoiceNo,InvoiceNo,InvoiceNo,InvoiceDate\n1,2,3,4,5\n",
                     NULL),
               "line 1: the header names the column 'InvoiceNo' more than once",
               "columns 1, 2, 3 and 4", "columns= with 5 comma-separated names");
    EXPECT_ERR(parse(REC_CSV, "x,y,x\n", NULL), "'x' more than once (columns 1 and 3)");

    struct rec_in_opts o = {.columns = " a, b ", .max_records = 100};
    CHECK_JSON(parse(REC_CSV, "h1,h2\n1,2\n", &o), "[{\"a\":\"1\",\"b\":\"2\"}]");
    /* columns= replaces even a damaged header */
    CHECK_JSON(parse(REC_CSV, "h,h\n1,2\n", &o), "[{\"a\":\"1\",\"b\":\"2\"}]");
    o.no_header = true;
    CHECK_JSON(parse(REC_CSV, "h1,h2\n1,2\n", &o),
               "[{\"a\":\"h1\",\"b\":\"h2\"},{\"a\":\"1\",\"b\":\"2\"}]");
    EXPECT_ERR(parse(REC_CSV, "1,2,3\n", &o), "line 1 has 3 cells", "columns=");
    o.columns = "a,b,a";
    EXPECT_ERR(parse(REC_CSV, "1,2\n", &o), "columns= names the column 'a' more than once");
    o.columns = "a,,b";
    EXPECT_ERR(parse(REC_CSV, "1,2\n", &o), "columns= column 2 has no name");
    o.columns = NULL;
    EXPECT_ERR(parse(REC_CSV, "1,2\n", &o), "no_header needs columns=");
}

/* "c1,c2,...,cN\n" then one row of N cells "1,1,...", for the column limit */
static char *wide_csv(int n)
{
    char *s = malloc((size_t)n * 10 + 16), *p = s;
    for (int i = 0; i < n; i++)
        p += sprintf(p, "%sc%d", i ? "," : "", i);
    *p++ = '\n';
    for (int i = 0; i < n; i++)
        p += sprintf(p, "%s1", i ? "," : "");
    strcpy(p, "\n");
    return s;
}

static void test_csv_limits(void)
{
    char *s = wide_csv(REC_MAX_COLUMNS);
    json_t *v = parse(REC_CSV, s, NULL);
    CHECK(v && json_object_size(json_array_get(v, 0)) == REC_MAX_COLUMNS);
    json_decref(v);
    free(s);
    s = wide_csv(REC_MAX_COLUMNS + 1);
    EXPECT_ERR(parse(REC_CSV, s, NULL), "line 1: more than 256 columns");
    free(s);

    /* a cell of exactly 64 KiB (quoted, with doubled quotes counting once) passes; one more fails */
    size_t big = REC_MAX_CELL;
    s = malloc(big * 2 + 64);
    strcpy(s, "a,b\n1,\"");
    size_t at = strlen(s);
    for (size_t i = 0; i < big; i++) {
        if (i % 2 == 0)
            s[at++] = '"';   /* written "" */
        s[at++] = i % 2 ? 'x' : '"';
    }
    strcpy(s + at, "\"\n");
    v = parse(REC_CSV, s, NULL);
    CHECK(v && json_string_length(json_object_get(json_array_get(v, 0), "b")) == big);
    json_decref(v);
    strcpy(s + at, "y\"\n");
    EXPECT_ERR(parse(REC_CSV, s, NULL), "line 2, column 2", "longer than 65536");
    free(s);

    EXPECT_ERR(parse(REC_CSV, "a,b\n1,2\n3,\"abc\n\ndef\n", NULL),
               "line 3, column 2: the quoted cell that starts here has no closing quote");
    EXPECT_ERR(parse(REC_CSV, "\"a\nb", NULL), "line 1, column 1", "no closing quote");

    struct rec_in_opts o = {.max_records = 3};
    v = parse(REC_CSV, "id\n1\n2\n3\n", &o);
    CHECK(v && json_array_size(v) == 3);
    json_decref(v);
    EXPECT_ERR(parse(REC_CSV, "id\n1\n2\n3\n4\n", &o), "more than 3 records");
}

static json_t *order_by_id(json_t *orders, const char *id)
{
    size_t i;
    json_t *o;
    json_array_foreach(orders, i, o) {
        const char *oid = json_string_value(json_object_get(o, "order_id"));
        if (oid && strcmp(oid, id) == 0)
            return o;
    }
    return NULL;
}

static void test_csv_line_items(void)
{
    struct rec_in_opts o = {.data_type = "orders", .max_records = 2};
    /* A's rows are not consecutive; A's third row disagrees on customer_id (the first wins) and
     * fills the region the first row left empty; name goes into the item */
    const char *body = "order_id,customer_id,region,product_id,quantity,unit_price,name\n"
                       "A,c1,,p1,2,2.55,Lamp\n"
                       "B,c2,EU,p2,1,10,\n"
                       "A,c9,US,p3,3,0.1,\n";
    json_t *v = parse(REC_CSV, body, &o);
    CHECK(v && json_array_size(v) == 2);
    /* A: 2 x 2.55 + 3 x 0.1 = 5.40; B: 10 */
    CHECK_JSON(json_incref(json_array_get(v, 0)),
               "{\"order_id\":\"A\",\"customer_id\":\"c1\",\"region\":\"US\",\"total\":5.4,"
               "\"items\":[{\"product_id\":\"p1\",\"quantity\":\"2\",\"unit_price\":\"2.55\","
               "\"name\":\"Lamp\"},{\"product_id\":\"p3\",\"quantity\":\"3\","
               "\"unit_price\":\"0.1\"}]}");
    CHECK_JSON(json_incref(json_array_get(v, 1)),
               "{\"order_id\":\"B\",\"customer_id\":\"c2\",\"region\":\"EU\",\"total\":10.0,"
               "\"items\":[{\"product_id\":\"p2\",\"quantity\":\"1\",\"unit_price\":\"10\"}]}");
    json_decref(v);
    /* the record limit counts orders, not rows */
    o.max_records = 1;
    EXPECT_ERR(parse(REC_CSV, body, &o), "more than 1 records");

    /* a non-numeric quantity leaves total absent; a row without order_id is its own order */
    o.max_records = 10;
    v = parse(REC_CSV,
              "order_id,quantity,unit_price\nA,2,1.5\nA,two,1\nB,1,1\n,4,1\nB,1,0.25\n", &o);
    CHECK(v && json_array_size(v) == 3);
    CHECK(json_object_get(order_by_id(v, "A"), "total") == NULL);
    CHECK(json_real_value(json_object_get(order_by_id(v, "B"), "total")) == 1.25);
    CHECK(json_real_value(json_object_get(json_array_get(v, 2), "total")) == 4.0);
    CHECK(json_object_get(json_array_get(v, 2), "order_id") == NULL);
    json_decref(v);

    /* a total column is taken as given, never recomputed */
    v = parse(REC_CSV, "order_id,total,quantity,unit_price\nA,99,1,1\nA,,2,2\n", &o);
    CHECK_JSON(json_incref(json_array_get(v, 0)),
               "{\"order_id\":\"A\",\"total\":\"99\",\"items\":[{\"quantity\":\"1\","
               "\"unit_price\":\"1\"},{\"quantity\":\"2\",\"unit_price\":\"2\"}]}");
    json_decref(v);

    /* orders without line-item columns, and other data types, stay one record per row */
    CHECK_JSON(parse(REC_CSV, "order_id,total\nA,1\nA,2\n", &o),
               "[{\"order_id\":\"A\",\"total\":\"1\"},{\"order_id\":\"A\",\"total\":\"2\"}]");
    o.data_type = "inventory";
    CHECK_JSON(parse(REC_CSV, "product_id,quantity\np,1\np,2\n", &o),
               "[{\"product_id\":\"p\",\"quantity\":\"1\"},{\"product_id\":\"p\","
               "\"quantity\":\"2\"}]");
}

static void test_dates(void)
{
    struct rec_in_opts o = {.date_format = "%m-%d-%Y %H:%M", .max_records = 10};
    CHECK_JSON(parse(REC_CSV,
                     "id,created_at,timestamp,other\n"
                     "1,12-01-2010 08:26,01-31-2011 23:59,12-01-2010 08:26\n"
                     "2,yesterday,02-30-2010 10:00,\n"
                     "3,12-01-2010 08:26 extra,12-01-2010 08:26  ,\n",
                     &o),
               "[{\"id\":\"1\",\"created_at\":\"2010-12-01T08:26:00Z\","
               "\"timestamp\":\"2011-01-31T23:59:00Z\",\"other\":\"12-01-2010 08:26\"},"
               "{\"id\":\"2\",\"created_at\":\"yesterday\",\"timestamp\":\"02-30-2010 10:00\"},"
               "{\"id\":\"3\",\"created_at\":\"12-01-2010 08:26 extra\","
               "\"timestamp\":\"2010-12-01T08:26:00Z\"}]");
    /* an offset in the cell moves the instant to UTC */
    o.date_format = "%Y-%m-%d %H:%M %z";
    CHECK_JSON(parse(REC_NDJSON, "{\"timestamp\":\"2010-12-01 00:30 +0100\",\"n\":1}\n", &o),
               "[{\"timestamp\":\"2010-11-30T23:30:00Z\",\"n\":1}]");
    o.date_format = NULL;
    CHECK_JSON(parse(REC_CSV, "created_at\n12-01-2010 08:26\n", &o),
               "[{\"created_at\":\"12-01-2010 08:26\"}]");
}

/* ---------- NDJSON ---------- */

static void test_ndjson(void)
{
    CHECK_JSON(parse(REC_NDJSON, "\xEF\xBB\xBF{\"a\":1}\n\n  \r\n{\"b\":[1,{\"c\":null}]}\r\n", NULL),
               "[{\"a\":1},{\"b\":[1,{\"c\":null}]}]");
    CHECK_JSON(parse(REC_NDJSON, "", NULL), "[]");
    CHECK_JSON(parse(REC_NDJSON, "{}", NULL), "[{}]");
    EXPECT_ERR(parse(REC_NDJSON, "{\"a\":1}\n\n[1]\n", NULL), "line 3: an array",
               "one JSON object");
    EXPECT_ERR(parse(REC_NDJSON, "{\"a\":1}\n{\"a\":\n", NULL), "line 2, column", "not valid JSON");
    EXPECT_ERR(parse(REC_NDJSON, "{\"a\":1} {\"b\":2}\n", NULL), "line 1");
    EXPECT_ERR(parse(REC_NDJSON, "\"x\"\n", NULL), "line 1: a string");
    struct rec_in_opts o = {.max_records = 2};
    EXPECT_ERR(parse(REC_NDJSON, "{}\n{}\n{}\n", &o), "more than 2 records");
}

/* ---------- XML ---------- */

static void test_xml_records(void)
{
    CHECK_JSON(parse(REC_XML,
                     "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                     "<orders>\n"
                     "  <order order_id=\"A1\" status=\"paid\">\n"
                     "    <customer_id> c1 </customer_id>\n"
                     "    <total>12.50</total>\n"
                     "    <note>Tom &amp; Jerry\n  second line</note>\n"
                     "    <empty/><blank>   </blank>\n"
                     "    <items>\n"
                     "      <item><product_id>p1</product_id><quantity>2</quantity></item>\n"
                     "      <item product_id=\"p2\" quantity=\"1\"/>\n"
                     "    </items>\n"
                     "    <address><city>Leeds</city><zip>LS1</zip></address>\n"
                     "    <tags><tag>a</tag><tag>b</tag></tags>\n"
                     "    <one><only>x</only></one>\n"
                     "  </order>\n"
                     "  <order><order_id>A2</order_id><items><item><product_id>p</product_id>"
                     "</item></items></order>\n"
                     "  <record/>\n"
                     "</orders>\n",
                     NULL),
               "[{\"order_id\":\"A1\",\"status\":\"paid\",\"customer_id\":\"c1\","
               "\"total\":\"12.50\",\"note\":\"Tom & Jerry\\n  second line\","
               "\"items\":[{\"product_id\":\"p1\",\"quantity\":\"2\"},"
               "{\"product_id\":\"p2\",\"quantity\":\"1\"}],"
               "\"address\":{\"city\":\"Leeds\",\"zip\":\"LS1\"},\"tags\":[\"a\",\"b\"],"
               "\"one\":{\"only\":\"x\"}},"
               "{\"order_id\":\"A2\",\"items\":[{\"product_id\":\"p\"}]},{}]");
    CHECK_JSON(parse(REC_XML, "\xEF\xBB\xBF<a/>", NULL), "[]");
    struct rec_in_opts o = {.date_format = "%d/%m/%Y", .max_records = 2};
    CHECK_JSON(parse(REC_XML, "<e><ev><timestamp>05/12/2010</timestamp></ev></e>", &o),
               "[{\"timestamp\":\"2010-12-05T00:00:00Z\"}]");
    EXPECT_ERR(parse(REC_XML, "<e><a/><b/><c/></e>", &o), "more than 2 records");
}

static void test_xml_errors(void)
{
    EXPECT_ERR(parse(REC_XML,
                     "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n"
                     "<!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]>\n<lolz>&lol2;</lolz>",
                     NULL),
               "line 2", "DOCTYPE");
    EXPECT_ERR(parse(REC_XML,
                     "<!DOCTYPE r SYSTEM \"file:///etc/passwd\"><r><x>&xxe;</x></r>", NULL),
               "DOCTYPE");
    EXPECT_ERR(parse(REC_XML, "<r>\n<o><a>1</a>\n<b>2</o>\n</r>", NULL), "line 3, column",
               "mismatched tag");
    EXPECT_ERR(parse(REC_XML, "", NULL), "no element found");
    EXPECT_ERR(parse(REC_XML, "<r><o>&undefined;</o></r>", NULL), "undefined entity");
    EXPECT_ERR(parse(REC_XML, "<r>\n<o><a>1</a><a>2</a></o></r>", NULL), "line 2",
               "the field 'a' more than once");
    EXPECT_ERR(parse(REC_XML, "<r><o id=\"1\"><id>2</id></o></r>", NULL), "'id' more than once");
    EXPECT_ERR(parse(REC_XML, "<r><o><a>text<b>x</b></a></o></r>", NULL), "<a> holds both text");
    EXPECT_ERR(parse(REC_XML, "<r><o><t cur=\"EUR\">12</t></o></r>", NULL),
               "<t> holds text next to attributes");
    EXPECT_ERR(parse(REC_XML, "<r><o>hello</o></r>", NULL), "record <o> holds text");
    EXPECT_ERR(parse(REC_XML, "<r>hi<o/></r>", NULL), "root element <r>");

}

static void test_xml_limits(void)
{
    char *s = malloc(64 * 1024);
    strcpy(s, "<r><o>");
    for (int d = 3; d <= REC_XML_MAX_DEPTH; d++)
        sprintf(s + strlen(s), "<d%d>", d);
    strcat(s, "x");
    for (int d = REC_XML_MAX_DEPTH; d >= 3; d--)
        sprintf(s + strlen(s), "</d%d>", d);
    strcat(s, "</o></r>");
    /* each level's only child is a group, so each level is a one-element array */
    CHECK_JSON(parse(REC_XML, s, NULL), "[{\"d3\":[[[[{\"d8\":\"x\"}]]]]}]");
    json_t *v;
    strcpy(s, "<r><o>");
    for (int d = 3; d <= REC_XML_MAX_DEPTH + 1; d++)
        sprintf(s + strlen(s), "<d%d>", d);
    strcat(s, "</r>");
    EXPECT_ERR(parse(REC_XML, s, NULL), "<d9> is nested more than 8 elements deep");

    /* fields per record: 256 pass, 257 fail; an array may be longer */
    for (int n = REC_XML_MAX_FIELDS; n <= REC_XML_MAX_FIELDS + 1; n++) {
        strcpy(s, "<r><o>");
        for (int i = 0; i < n; i++)
            sprintf(s + strlen(s), "<f%d>1</f%d>", i, i);
        strcat(s, "</o></r>");
        v = parse(REC_XML, s, NULL);
        if (n == REC_XML_MAX_FIELDS) {
            CHECK(v && json_object_size(json_array_get(v, 0)) == (size_t)n);
            json_decref(v);
        } else {
            EXPECT_ERR(v, "<o> has more than 256 fields");
        }
    }
    strcpy(s, "<r><o><items>");
    for (int i = 0; i < 600; i++)
        strcat(s, "<item><q>1</q></item>");
    strcat(s, "</items></o></r>");
    v = parse(REC_XML, s, NULL);
    CHECK(v && json_array_size(json_object_get(json_array_get(v, 0), "items")) == 600);
    json_decref(v);
    free(s);

    /* a text field of 64 KiB passes, one byte more fails */
    s = malloc(REC_MAX_CELL + 64);
    strcpy(s, "<r><o><t>");
    size_t at = strlen(s);
    memset(s + at, 'x', REC_MAX_CELL);
    strcpy(s + at + REC_MAX_CELL, "</t></o></r>");
    v = parse(REC_XML, s, NULL);
    CHECK(v && json_string_length(json_object_get(json_array_get(v, 0), "t")) == REC_MAX_CELL);
    json_decref(v);
    s[at + REC_MAX_CELL] = 'y';
    strcpy(s + at + REC_MAX_CELL + 1, "</t></o></r>");
    EXPECT_ERR(parse(REC_XML, s, NULL), "more than 65536 bytes of text");
    free(s);
}

/* ---------- the real export: Online Retail (UCI, CC BY 4.0), damaged header ---------- */

static char *slurp(const char *path, size_t *ret_n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = malloc(1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    buf[n] = '\0';
    *ret_n = n;
    return buf;
}

static void test_online_retail(void)
{
    size_t n = 0;
    char *body = slurp(TS_FIXTURES "/commerce/online-retail-head.csv", &n);
    CHECK(body != NULL);
    if (body == NULL)
        return;
    struct rec_in_opts o = {.data_type = "orders", .max_records = 10000};
    EXPECT_ERR(parse_n(REC_CSV, body, n, &o), "'InvoiceNo' more than once",
               "columns 1, 2, 3 and 4", "columns= with 8 comma-separated names");

    o.columns = "order_id,product_id,description,quantity,created_at,unit_price,customer_id,region";
    o.date_format = "%m-%d-%Y %H:%M";
    json_t *v = parse_n(REC_CSV, body, n, &o);
    CHECK(v != NULL);
    /* 39 lines, 10 invoices (uniq over the first column) */
    CHECK_INT(json_array_size(v), 10);
    /* 536365 by hand: 6x2.55 + 6x3.39 + 8x2.75 + 6x3.39 + 6x3.39 + 2x7.65 + 6x4.25
     *               = 15.30 + 20.34 + 22.00 + 20.34 + 20.34 + 15.30 + 25.50 = 139.12 */
    json_t *a = order_by_id(v, "536365");
    CHECK_INT(json_array_size(json_object_get(a, "items")), 7);
    CHECK(json_real_value(json_object_get(a, "total")) == 139.12);
    CHECK_STR(json_string_value(json_object_get(a, "created_at")), "2010-12-01T08:26:00Z");
    CHECK_STR(json_string_value(json_object_get(a, "customer_id")), "17850");
    CHECK_STR(json_string_value(json_object_get(a, "region")), "United Kingdom");
    CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(a, "items"), 6),
                                                "description")),
              "GLASS STAR FROSTED T-LIGHT HOLDER");
    /* the cancellation C536379: one line, -1 x 27.5 = -27.5 (the validator rejects it) */
    json_t *c = order_by_id(v, "C536379");
    CHECK_INT(json_array_size(json_object_get(c, "items")), 1);
    CHECK(json_real_value(json_object_get(c, "total")) == -27.5);
    /* 536544 without a CustomerID: 1x2.51 + 2x2.51 = 7.53, customer_id absent */
    json_t *e = order_by_id(v, "536544");
    CHECK_INT(json_array_size(json_object_get(e, "items")), 2);
    CHECK(json_real_value(json_object_get(e, "total")) == 7.53);
    CHECK(json_object_get(e, "customer_id") == NULL);
    /* 536381's quoted "AIRLINE LOUNGE,METAL SIGN" stays one cell; 8 lines in the extract */
    json_t *q = order_by_id(v, "536381");
    CHECK_INT(json_array_size(json_object_get(q, "items")), 8);
    CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(q, "items"), 3),
                                                "description")),
              "AIRLINE LOUNGE,METAL SIGN");
    /* 536414: empty description and customer; 56 x 0 = 0 */
    json_t *z = order_by_id(v, "536414");
    CHECK(json_object_get(json_array_get(json_object_get(z, "items"), 0), "description") == NULL);
    CHECK(json_is_real(json_object_get(z, "total")) &&
          json_real_value(json_object_get(z, "total")) == 0.0);
    json_decref(v);
    free(body);
}

int main(void)
{
    test_csv_quoting();
    test_csv_shape();
    test_csv_header();
    test_csv_limits();
    test_csv_line_items();
    test_dates();
    test_ndjson();
    test_xml_records();
    test_xml_errors();
    test_xml_limits();
    test_online_retail();
    CHECK_DONE();
}
