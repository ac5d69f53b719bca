/* The API reference: GET /openapi/{surface}.json, GET /docs and its embedded swagger-ui assets. */
#include <string.h>

#include "api/app.h"
#include "core/embedded.h"

#define ASSET_CACHE_CONTROL "public, max-age=86400"

/* The /docs page. Everything it loads comes from this server (no CDN): swagger-ui from
 * /docs/assets/, the documents from /openapi/. The document list is written by docs_page(). */
static const char PAGE_HEAD[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\">\n"
    "<head>\n"
    "<meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>Tessera API reference</title>\n"
    "<link rel=\"stylesheet\" href=\"/docs/assets/swagger-ui.css\">\n"
    "<link rel=\"icon\" type=\"image/png\" href=\"/docs/assets/favicon-32x32.png\" sizes=\"32x32\">\n"
    "</head>\n"
    "<body>\n"
    "<div id=\"swagger-ui\"></div>\n"
    "<script src=\"/docs/assets/swagger-ui-bundle.js\" charset=\"utf-8\"></script>\n"
    "<script src=\"/docs/assets/swagger-ui-standalone-preset.js\" charset=\"utf-8\"></script>\n"
    "<script>\n"
    "window.onload = function () {\n"
    "  window.ui = SwaggerUIBundle({\n"
    "    urls: [\n";

static const char PAGE_TAIL[] =
    "    ],\n"
    "    \"urls.primaryName\": \"recs\",\n"
    "    dom_id: \"#swagger-ui\",\n"
    "    deepLinking: true,\n"
    "    validatorUrl: null,\n"
    "    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],\n"
    "    plugins: [SwaggerUIBundle.plugins.DownloadUrl],\n"
    "    layout: \"StandaloneLayout\"\n"
    "  });\n"
    "};\n"
    "</script>\n"
    "</body>\n"
    "</html>\n";

struct asset_type {
    const char *ext;
    const char *content_type;
};

static const struct asset_type asset_types[] = {
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".png", "image/png"},
    {".map", "application/json"},
};

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && memcmp(s + n - m, suffix, m) == 0;
}

static const char *asset_content_type(const char *name)
{
    for (size_t i = 0; i < sizeof(asset_types) / sizeof(asset_types[0]); i++)
        if (has_suffix(name, asset_types[i].ext))
            return asset_types[i].content_type;
    return NULL;
}

/* The body is the embedded file itself, streamed as the client reads (http.h out_mem): a
 * 270 KB document to a thousand slow readers costs what they read, not 270 KB copies each. */
static void embedded_respond(struct hctx *h, const struct embedded_file *f)
{
    h->req->out_mem = (const char *)f->data;
    h->req->out_off = 0;
    h->req->out_len = (int64_t)f->len;
}

/* The router matches whole segments, so the row takes the file name ("recs.json"); the
 * embedded set holds exactly schema/openapi/<surface>.json, one per surface. */
static int openapi_document(struct hctx *h)
{
    const char *name = http_param_get(h->req, "file");
    const struct embedded_file *f =
        name ? embedded_find(openapi_files, openapi_files_count, name) : NULL;
    if (f == NULL) {
        h->err_message = "no such OpenAPI document: use /openapi/<surface>.json with a surface "
                         "of lms, commerce, learning, desk, recs";
        return TS_E_NOT_FOUND;
    }
    h->req->content_type = "application/json";
    embedded_respond(h, f);
    return 0;
}

static int docs_page(struct hctx *h)
{
    int r = buf_puts(&h->out, PAGE_HEAD);
    for (size_t i = 0; i < openapi_files_count && r >= 0; i++) {
        const char *name = openapi_files[i].name;
        int stem = (int)(strlen(name) - strlen(".json"));
        r = buf_printf(&h->out, "      {url: \"/openapi/%s\", name: \"%.*s\"},\n", name, stem,
                       name);
    }
    if (r >= 0)
        r = buf_puts(&h->out, PAGE_TAIL);
    if (r < 0)
        return TS_E_INTERNAL;
    h->req->content_type = "text/html; charset=utf-8";
    return 0;
}

static int docs_asset(struct hctx *h)
{
    const char *name = http_param_get(h->req, "file");
    const struct embedded_file *f = name ? embedded_find(docs_files, docs_files_count, name) : NULL;
    const char *type = f ? asset_content_type(f->name) : NULL;
    if (type == NULL) {
        h->err_message = "no such asset";
        return TS_E_NOT_FOUND;
    }
    embedded_respond(h, f);
    h->req->content_type = type;
    http_header_add(h->req, "Cache-Control", ASSET_CACHE_CONTROL);
    return 0;
}

static const struct route docs_routes[] = {
    {"GET", "/openapi/{file}", openapi_document, "public", "none", RUN_LOOP, 0, RF_PUBLIC},
    {"GET", "/docs", docs_page, "public", "none", RUN_LOOP, 0, RF_PUBLIC},
    {"GET", "/docs/assets/{file}", docs_asset, "public", "none", RUN_LOOP, 0, RF_PUBLIC},
};

const struct route_table docs_route_table = {SURF_RECS, docs_routes,
                                             sizeof(docs_routes) / sizeof(docs_routes[0])};
