/* desk files: multipart uploads streamed into DATA/files/<uuid> with SHA-256 and type sniffing,
 * metadata, ranged downloads, deletion and a ticket's files, all under ticket visibility. */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/app.h"
#include "api/handler.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/multipart.h"
#include "store/db.h"
#include "surfaces/desk/desk.h"

#define FILES_MAX_PARTS 16
#define FILENAME_MAX_BYTES 255
#define TICKET_ID_MAX 64
#define SNIFF_BYTES 8192
#define READ_CHUNK (64 * 1024)

static const char SQL_INSERT[] =
    "INSERT INTO desk_files(tenant_id, id, ticket_id, uploaded_by, filename, content_type, "
    "size, sha256, created_at) VALUES(?,?,?,?,?,?,?,?,?)";
static const char SQL_GET[] =
    "SELECT id, ticket_id, uploaded_by, filename, content_type, size, sha256, created_at "
    "FROM desk_files WHERE id = ? AND tenant_id = ?";
static const char SQL_BY_TICKET[] =
    "SELECT id, ticket_id, uploaded_by, filename, content_type, size, sha256, created_at "
    "FROM desk_files WHERE tenant_id = ? AND ticket_id = ? ORDER BY created_at, id";
static const char SQL_DELETE[] = "DELETE FROM desk_files WHERE id = ? AND tenant_id = ?";

/* ---- content types ---- */

enum kind { K_NONE, K_PNG, K_JPEG, K_GIF, K_PDF, K_ZIP, K_TEXT };

static const char MIME_DOCX[] =
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
static const char MIME_XLSX[] = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
static const char MIME_PPTX[] =
    "application/vnd.openxmlformats-officedocument.presentationml.presentation";

/* The declared types each detectable kind answers to. */
static const struct {
    const char *mime;
    enum kind kind;
} declared_kinds[] = {
    {"image/png", K_PNG},          {"image/x-png", K_PNG},
    {"image/jpeg", K_JPEG},        {"image/jpg", K_JPEG},
    {"image/pjpeg", K_JPEG},       {"image/gif", K_GIF},
    {"application/pdf", K_PDF},    {"application/x-pdf", K_PDF},
    {"application/zip", K_ZIP},    {"application/x-zip-compressed", K_ZIP},
    {"application/x-zip", K_ZIP},  {MIME_DOCX, K_ZIP},
    {MIME_XLSX, K_ZIP},            {MIME_PPTX, K_ZIP},
    {"text/plain", K_TEXT},
};

static enum kind kind_of_declared(const char *mime)
{
    for (size_t i = 0; i < sizeof(declared_kinds) / sizeof(declared_kinds[0]); i++)
        if (strcmp(declared_kinds[i].mime, mime) == 0)
            return declared_kinds[i].kind;
    return K_NONE;
}

/* Incremental UTF-8 check: text is valid UTF-8 without NUL and other C0 controls (tab, line
 * breaks, form feed and escape allowed). */
struct utf8 {
    int need, len;
    uint32_t cp;
    bool bad;
};

static void utf8_feed(struct utf8 *u, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n && !u->bad; i++) {
        unsigned char b = s[i];
        if (u->need == 0) {
            if (b < 0x80) {
                u->bad = (b < 0x20 && !strchr("\t\n\r\f\x1b", b)) || b == 0x7f || b == 0;
            } else if (b >= 0xc2 && b <= 0xdf) {
                u->need = 1, u->len = 2, u->cp = b & 0x1f;
            } else if (b >= 0xe0 && b <= 0xef) {
                u->need = 2, u->len = 3, u->cp = b & 0x0f;
            } else if (b >= 0xf0 && b <= 0xf4) {
                u->need = 3, u->len = 4, u->cp = b & 0x07;
            } else {
                u->bad = true;
            }
            continue;
        }
        if ((b & 0xc0) != 0x80) {
            u->bad = true;
            continue;
        }
        u->cp = (u->cp << 6) | (b & 0x3f);
        if (--u->need == 0)
            u->bad = (u->len == 3 && u->cp < 0x800) || (u->len == 4 && u->cp < 0x10000) ||
                     (u->cp >= 0xd800 && u->cp <= 0xdfff) || u->cp > 0x10ffff;
    }
}

static enum kind kind_of_bytes(const unsigned char *h, size_t n, int64_t size,
                               const struct utf8 *u)
{
    if (n >= 8 && memcmp(h, "\x89PNG\r\n\x1a\n", 8) == 0)
        return K_PNG;
    if (n >= 3 && memcmp(h, "\xff\xd8\xff", 3) == 0)
        return K_JPEG;
    if (n >= 6 && (memcmp(h, "GIF87a", 6) == 0 || memcmp(h, "GIF89a", 6) == 0))
        return K_GIF;
    if (n >= 5 && memcmp(h, "%PDF-", 5) == 0)
        return K_PDF;
    if (n >= 4 && (memcmp(h, "PK\x03\x04", 4) == 0 || memcmp(h, "PK\x05\x06", 4) == 0))
        return K_ZIP;
    if (size > 0 && !u->bad && u->need == 0)
        return K_TEXT;
    return K_NONE;
}

/* An Office Open XML package names its parts word/, xl/ or ppt/ in its first local headers. */
static const char *zip_refine(const unsigned char *h, size_t n)
{
    for (size_t i = 0; i + 30 <= n; i++) {
        if (memcmp(h + i, "PK\x03\x04", 4) != 0)
            continue;
        size_t nlen = (size_t)h[i + 26] | (size_t)h[i + 27] << 8;
        const char *name = (const char *)h + i + 30;
        if (i + 30 + nlen > n)
            break;
        if (nlen > 5 && memcmp(name, "word/", 5) == 0)
            return MIME_DOCX;
        if (nlen > 3 && memcmp(name, "xl/", 3) == 0)
            return MIME_XLSX;
        if (nlen > 4 && memcmp(name, "ppt/", 4) == 0)
            return MIME_PPTX;
    }
    return NULL;
}

static const char *kind_mime(enum kind k)
{
    switch (k) {
    case K_PNG: return "image/png";
    case K_JPEG: return "image/jpeg";
    case K_GIF: return "image/gif";
    case K_PDF: return "application/pdf";
    case K_ZIP: return "application/zip";
    case K_TEXT: return "text/plain";
    default: return "application/octet-stream";
    }
}

/* ---- filenames ---- */

/* Length of the UTF-8 character at s that is kept in a filename, 0 for a byte to drop
 * (invalid, or a C0/C1 control character). */
static size_t filename_char(const unsigned char *s)
{
    size_t len = *s < 0x80 ? 1 : *s >= 0xf0 ? 4 : *s >= 0xe0 ? 3 : 2;
    struct utf8 u = {0};
    size_t have = strnlen((const char *)s, len);
    utf8_feed(&u, s, have);
    if (len == 1)
        return *s < 0x20 || *s == 0x7f ? 0 : 1;
    return have == len && !u.bad && u.need == 0 && !(len == 2 && u.cp < 0xa0) ? len : 0;
}

/* The longest prefix of s[0..n) of at most max bytes that ends on a character boundary. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
        max--;
    return max;
}

/* The user's filename as metadata: its last path component, valid UTF-8 without control
 * characters, spaces trimmed, at most 255 bytes (the stem is cut at a character boundary and
 * a short extension kept). */
static void filename_clean(const char *in, char out[FILENAME_MAX_BYTES + 1])
{
    const unsigned char *s = (const unsigned char *)in;
    for (const char *p = in; *p; p++)
        if (*p == '/' || *p == '\\')
            s = (const unsigned char *)p + 1;
    char all[MP_HEADER_MAX + 1];
    size_t n = 0, len;
    for (; *s && n + 4 < sizeof(all); s += len ? len : 1) {
        if ((len = filename_char(s)) > 0) {
            memcpy(all + n, s, len);
            n += len;
        }
    }
    all[n] = '\0';
    char *start = all;
    while (*start == ' ')
        start++;
    while (n > (size_t)(start - all) && all[n - 1] == ' ')
        all[--n] = '\0';
    n -= (size_t)(start - all);
    const char *dot = strrchr(start, '.');
    size_t ext = dot && dot != start && strlen(dot) <= 32 ? strlen(dot) : 0;
    if (n > FILENAME_MAX_BYTES) {
        size_t stem = utf8_cut(start, n - ext, FILENAME_MAX_BYTES - ext);
        memcpy(out, start, stem);
        memcpy(out + stem, start + n - ext, ext);
        out[stem + ext] = '\0';
    } else {
        memcpy(out, start, n + 1);
    }
    if (!strcmp(out, ".") || !strcmp(out, "..") || !out[0])
        strcpy(out, "unnamed");
}

/* Content-Disposition: attachment; filename="ascii"; filename*=UTF-8''pct (RFC 6266/5987) */
static const char *disposition_header(struct arena *a, const char *name)
{
    size_t n = strlen(name);
    char *ascii = arena_alloc(a, n + 1), *pct = arena_alloc(a, n * 3 + 1);
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 0x80) {
            while (i + 1 < n && ((unsigned char)name[i + 1] & 0xc0) == 0x80)
                i++;
            ascii[o++] = '_';
        } else {
            ascii[o++] = (c == '"' || c == '\\') ? '_' : (char)c;
        }
    }
    ascii[o] = '\0';
    o = 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("!#$&+-.^_`|~", c))
            pct[o++] = (char)c;
        else
            o += (size_t)sprintf(pct + o, "%%%02X", c);
    }
    pct[o] = '\0';
    return arena_printf(a, "attachment; filename=\"%s\"; filename*=UTF-8''%s", ascii, pct);
}

/* ---- rows ---- */

struct file_row {
    char id[UUID_STR_LEN];
    char ticket_id[UUID_STR_LEN + 16]; /* "" when unattached */
    char uploaded_by[UUID_STR_LEN + 16];
    const char *filename, *content_type;
    int64_t size, created_at;
    char sha256[65];
};

static void row_read(struct hctx *h, sqlite3_stmt *q, struct file_row *f)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->id, sizeof(f->id), "%s", col_text(q, 0));
    snprintf(f->ticket_id, sizeof(f->ticket_id), "%s", col_text(q, 1));
    snprintf(f->uploaded_by, sizeof(f->uploaded_by), "%s", col_text(q, 2));
    f->filename = arena_strdup(h->arena, col_text(q, 3));
    f->content_type = arena_strdup(h->arena, col_text(q, 4));
    f->size = sqlite3_column_int64(q, 5);
    snprintf(f->sha256, sizeof(f->sha256), "%s", col_text(q, 6));
    f->created_at = sqlite3_column_int64(q, 7);
}

static void file_json(struct hctx *h, struct jw *w, const struct file_row *f)
{
    const char *base = h->app->public_url ? h->app->public_url : "";
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    jw_obj_open(w);
    jw_kstr(w, "file_id", f->id);
    jw_kstr(w, "url", arena_printf(h->arena, "%.*s/api/v1/files/%s/download", (int)bl, base,
                                   f->id));
    jw_kstr(w, "filename", f->filename);
    jw_kstr(w, "content_type", f->content_type);
    jw_kint(w, "size", f->size);
    jw_kstr(w, "sha256", f->sha256);
    jw_kstr(w, "ticket_id", f->ticket_id[0] ? f->ticket_id : NULL);
    jw_kstr(w, "uploaded_by", f->uploaded_by);
    jw_kiso(w, "created_at", f->created_at);
    jw_obj_close(w);
}

/* Visibility: an attached file is seen by whoever sees its ticket; an unattached one by its
 * uploader and staff. To everyone else it does not exist. */
static int file_find(struct hctx *h, const char *id, struct file_row *ret)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_GET);
    sqlite3_bind_text(q, 1, id ? id : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        row_read(h, q, ret);
    sqlite3_reset(q);
    if (rc != SQLITE_ROW)
        return fail(h, rc == SQLITE_DONE ? TS_E_NOT_FOUND : db_err(rc), "file_id",
                    "file not found");
    bool visible;
    if (ret->ticket_id[0]) {
        struct desk_ticket t;
        visible = desk_ticket_find(h, ret->ticket_id, "file_id", &t) == 0;
    } else {
        visible = desk_is_staff(h) || (h->user_id && !strcmp(h->user_id, ret->uploaded_by));
    }
    return visible ? 0 : fail(h, TS_E_NOT_FOUND, "file_id", "file not found");
}

static const char *content_path(struct hctx *h, const char *id)
{
    return arena_printf(h->arena, "%s/files/%s", h->app->cfg->data_dir, id);
}

/* ---- upload ---- */

struct upload {
    char boundary[MP_BOUNDARY_MAX + 1];
    char id[UUID_STR_LEN];
    const char *tmp_path;           /* DATA/files/tmp/<id>.part while in flight */
    const char *final_path;         /* DATA/files/<id> */
    bool tmp_live;                  /* tmp_path exists and is ours to remove */
    int fd;
    struct request *req;
    /* the worker's findings */
    int err;
    const char *field, *message;
    bool in_file, in_ticket, have_file, have_ticket, ticket_too_long;
    char ticket_id[TICKET_ID_MAX + 1];
    size_t ticket_len;
    char filename[FILENAME_MAX_BYTES + 1];
    char declared[128];
    crypto_hash_sha256_state sha;
    int64_t size;
    unsigned char head[SNIFF_BYTES];
    size_t head_len;
    struct utf8 utf8;
    char sha_hex[65];
    const char *content_type;
    struct mp_parser mp;
};

static int upload_fail(struct upload *st, int err, const char *field, const char *message)
{
    if (st->err == 0) {
        st->err = err;
        st->field = field;
        st->message = message;
    }
    return err;
}

/* The declared part type, lowercased and without parameters ("" when absent). */
static void declared_type(const char *ct, char out[128])
{
    size_t n = 0;
    if (ct)
        for (; ct[n] && ct[n] != ';' && ct[n] != ' ' && ct[n] != '\t' && n < 127; n++)
            out[n] = (char)((ct[n] >= 'A' && ct[n] <= 'Z') ? ct[n] + 32 : ct[n]);
    out[n] = '\0';
}

static int part_begin_cb(void *arg, const struct mp_part *p)
{
    struct upload *st = arg;
    if (!strcmp(p->name, "file")) {
        if (st->have_file)
            return upload_fail(st, TS_E_VALIDATION, "file", "only one file may be uploaded");
        if (p->filename == NULL)
            return upload_fail(st, TS_E_VALIDATION, "file",
                               "file must be a file part (with a filename)");
        if (!p->filename[0])
            return upload_fail(st, TS_E_VALIDATION, "file", "no file was chosen");
        filename_clean(p->filename, st->filename);
        declared_type(p->content_type, st->declared);
        st->fd = open(st->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (st->fd < 0) /* a full disk is 507, not 500 */
            return upload_fail(st, err_from_errno(errno), NULL, "cannot store the file");
        st->tmp_live = true;
        st->have_file = st->in_file = true;
        crypto_hash_sha256_init(&st->sha);
    } else if (!strcmp(p->name, "ticket_id")) {
        if (st->have_ticket)
            return upload_fail(st, TS_E_VALIDATION, "ticket_id", "ticket_id is given twice");
        st->have_ticket = st->in_ticket = true;
    }
    return 0; /* other fields are ignored */
}

static int write_all(int fd, const char *at, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, at, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        at += w;
        n -= (size_t)w;
    }
    return 0;
}

static int part_data_cb(void *arg, const char *at, size_t n)
{
    struct upload *st = arg;
    if (st->in_file) {
        if (write_all(st->fd, at, n) < 0)
            return upload_fail(st, err_from_errno(errno), NULL, "cannot store the file");
        crypto_hash_sha256_update(&st->sha, (const unsigned char *)at, n);
        st->size += (int64_t)n;
        size_t take = n < SNIFF_BYTES - st->head_len ? n : SNIFF_BYTES - st->head_len;
        memcpy(st->head + st->head_len, at, take);
        st->head_len += take;
        utf8_feed(&st->utf8, (const unsigned char *)at, n);
    } else if (st->in_ticket) {
        size_t take = n < TICKET_ID_MAX - st->ticket_len ? n : TICKET_ID_MAX - st->ticket_len;
        memcpy(st->ticket_id + st->ticket_len, at, take);
        st->ticket_len += take;
        st->ticket_too_long |= take < n;
    }
    return 0;
}

static int part_end_cb(void *arg)
{
    struct upload *st = arg;
    st->in_file = st->in_ticket = false;
    return 0;
}

static const struct mp_callbacks upload_cbs = {part_begin_cb, part_data_cb, part_end_cb};

/* Type from the bytes; a declared type that contradicts bytes of a known kind is refused. */
static void upload_type(struct upload *st)
{
    enum kind got = kind_of_bytes(st->head, st->head_len, st->size, &st->utf8);
    enum kind said = kind_of_declared(st->declared);
    /* no bytes contradict nothing: an empty file keeps a declared text type, else is opaque */
    if (st->size == 0) {
        st->content_type = said == K_TEXT ? "text/plain" : kind_mime(K_NONE);
        return;
    }
    bool vague = !st->declared[0] || !strcmp(st->declared, "application/octet-stream");
    bool clash = !vague && (said != K_NONE ? said != got : got != K_NONE && got != K_TEXT);
    if (clash) {
        upload_fail(st, TS_E_VALIDATION, "file", "the file's declared type does not match its content");
        return;
    }
    st->content_type = kind_mime(got);
    if (got == K_ZIP) {
        const char *ooxml = zip_refine(st->head, st->head_len);
        if (ooxml)
            st->content_type = ooxml;
        else if (!strcmp(st->declared, MIME_DOCX) || !strcmp(st->declared, MIME_XLSX) ||
                 !strcmp(st->declared, MIME_PPTX))
            st->content_type = strcmp(st->declared, MIME_DOCX) == 0   ? MIME_DOCX
                               : strcmp(st->declared, MIME_XLSX) == 0 ? MIME_XLSX
                                                                      : MIME_PPTX;
    }
}

static int upload_parse(struct upload *st)
{
    struct request *req = st->req;
    mp_init(&st->mp, st->boundary, FILES_MAX_PARTS, &upload_cbs, st);
    int r = 0;
    if (req->body_fd >= 0) {
        char *chunk = malloc(READ_CHUNK);
        if (chunk == NULL)
            return upload_fail(st, TS_E_INTERNAL, NULL, "out of memory");
        off_t off = 0;
        ssize_t n;
        while (r == 0 && (n = pread(req->body_fd, chunk, READ_CHUNK, off)) != 0) {
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                r = upload_fail(st, TS_E_INTERNAL, NULL, "cannot read the upload");
                break;
            }
            r = mp_feed(&st->mp, chunk, (size_t)n);
            off += n;
        }
        free(chunk);
    } else {
        r = mp_feed(&st->mp, req->body.data ? req->body.data : "", req->body.len);
    }
    if (r == 0)
        r = mp_finish(&st->mp);
    if (r >= MP_E_MEDIA_TYPE && r <= MP_E_MALFORMED)
        return upload_fail(st, TS_E_BAD_REQUEST, "body", mp_strerror(r));
    return r < 0 ? upload_fail(st, r, NULL, NULL) : 0;
}

/* On a worker: parse the spooled body, stream the file part to its temp file, hash, sniff. */
static void upload_work(struct hctx *h)
{
    struct upload *st = h->state;
    int r = upload_parse(st);
    if (r == 0 && !st->have_file)
        r = upload_fail(st, TS_E_VALIDATION, "file", "the form has no file part named file");
    if (r == 0) {
        unsigned char digest[crypto_hash_sha256_BYTES];
        crypto_hash_sha256_final(&st->sha, digest);
        sodium_bin2hex(st->sha_hex, sizeof(st->sha_hex), digest, sizeof(digest));
        upload_type(st);
    }
    if (st->fd >= 0 && st->err == 0 && fdatasync(st->fd) < 0)
        upload_fail(st, err_from_errno(errno), NULL, "cannot store the file");
    if (st->fd >= 0)
        close(st->fd);
    st->fd = -1;
}

/* The request's end: a temp file still ours is removed (failure, or the pool never ran). */
static void upload_cleanup(void *arg)
{
    struct upload *st = arg;
    if (st->fd >= 0)
        close(st->fd);
    if (st->tmp_live)
        unlink(st->tmp_path);
}

static int upload_insert(struct hctx *h, struct upload *st, const char *ticket_id, int64_t now)
{
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_INSERT);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, st->id, -1, SQLITE_STATIC);
    if (ticket_id)
        sqlite3_bind_text(q, 3, ticket_id, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, 3);
    sqlite3_bind_text(q, 4, h->user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, st->filename, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, st->content_type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 7, st->size);
    sqlite3_bind_text(q, 8, st->sha_hex, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 9, now);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : db_err(rc);
}

/* Back on the loop: check the ticket, move the file into place, write the row. */
static int upload_done(struct hctx *h)
{
    struct upload *st = h->state;
    if (st->err)
        return fail(h, st->err, st->field, st->message);
    const char *ticket_id = NULL;
    struct desk_ticket t;
    if (st->have_ticket) {
        st->ticket_id[st->ticket_len] = '\0';
        if (st->ticket_too_long || !st->ticket_len || desk_ticket_find(h, st->ticket_id,
                                                                       "ticket_id", &t) < 0)
            return fail(h, TS_E_VALIDATION, "ticket_id", "ticket_id must be a visible ticket");
        ticket_id = t.id;
    }
    int r = db_write_begin(h->app->db);
    if (r < 0)
        return r;
    if (rename(st->tmp_path, st->final_path) < 0) {
        int e = errno;
        log_msg(LOG_ERROR, "files: rename %s: %s", st->tmp_path, strerror(e));
        return fail(h, err_from_errno(e), NULL, "cannot store the file");
    }
    st->tmp_live = false;
    int64_t now = clock_now_ms();
    if ((r = upload_insert(h, st, ticket_id, now)) < 0) {
        unlink(st->final_path);
        return r;
    }
    h->audit_target = arena_strdup(h->arena, st->id);
    struct file_row f = {.filename = st->filename, .content_type = st->content_type,
                         .size = st->size, .created_at = now};
    snprintf(f.id, sizeof(f.id), "%s", st->id);
    snprintf(f.ticket_id, sizeof(f.ticket_id), "%s", ticket_id ? ticket_id : "");
    snprintf(f.uploaded_by, sizeof(f.uploaded_by), "%s", h->user_id);
    memcpy(f.sha256, st->sha_hex, sizeof(f.sha256));
    h->status = 201;
    struct jw w;
    jw_init(&w, &h->out);
    file_json(h, &w, &f);
    return jw_finish(&w) < 0 ? TS_E_INTERNAL : 0;
}

static int upload(struct hctx *h)
{
    if (h->user_id == NULL)
        return fail(h, TS_E_FORBIDDEN, NULL, "uploads need a user");
    struct upload *st = arena_calloc(h->arena, sizeof(*st));
    st->fd = -1;
    st->req = h->req;
    int r = mp_boundary_from_content_type(http_header_get(h->req, "Content-Type"),
                                          st->boundary);
    if (r == MP_E_MEDIA_TYPE)
        return fail(h, TS_E_UNSUPPORTED_MEDIA, "Content-Type",
                    "Content-Type must be multipart/form-data");
    if (r < 0)
        return fail(h, TS_E_BAD_REQUEST, "Content-Type",
                    "Content-Type needs a boundary parameter of 1 to 70 characters");
    id_uuid7(st->id);
    st->tmp_path = arena_printf(h->arena, "%s/%s.part", h->app->spool_dir, st->id);
    st->final_path = content_path(h, st->id);
    h->state = st;
    arena_defer(h->arena, upload_cleanup, st);
    return api_defer_to_pool(h, upload_work, upload_done);
}

/* ---- read ---- */

static int metadata(struct hctx *h)
{
    struct file_row f;
    int r = file_find(h, http_param_get(h->req, "file_id"), &f);
    if (r < 0)
        return r;
    struct jw w;
    jw_init(&w, &h->out);
    file_json(h, &w, &f);
    return jw_finish(&w) < 0 ? TS_E_INTERNAL : 0;
}

static bool parse_u64(const char *s, const char *end, uint64_t *ret)
{
    if (s == end || end - s > 18)
        return false;
    uint64_t v = 0;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *ret = v;
    return true;
}

int desk_range_parse(const char *v, int64_t size, int64_t *off, int64_t *len)
{
    if (v == NULL)
        return 0;
    while (*v == ' ')
        v++;
    if (strncasecmp(v, "bytes=", 6) != 0)
        return 0;
    v += 6;
    const char *dash = strchr(v, '-'), *end = v + strlen(v);
    while (end > v && end[-1] == ' ')
        end--;
    if (dash == NULL || strchr(v, ','))
        return 0;
    uint64_t a, b;
    if (dash == v) {
        if (!parse_u64(dash + 1, end, &b))
            return 0;
        if (b == 0 || size == 0)
            return -1;
        *len = b > (uint64_t)size ? size : (int64_t)b;
        *off = size - *len;
        return 1;
    }
    if (!parse_u64(v, dash, &a))
        return 0;
    if (dash + 1 == end)
        b = (uint64_t)INT64_MAX;
    else if (!parse_u64(dash + 1, end, &b) || b < a)
        return 0;
    if (a >= (uint64_t)size)
        return -1;
    if (b >= (uint64_t)size)
        b = (uint64_t)size - 1;
    *off = (int64_t)a;
    *len = (int64_t)(b - a + 1);
    return 1;
}

static int range_unsatisfiable(struct hctx *h, int64_t size)
{
    http_header_add(h->req, "Content-Range", arena_printf(h->arena, "bytes */%lld",
                                                          (long long)size));
    struct jw w;
    jw_init(&w, &h->out);
    jw_obj_open(&w);
    jw_key(&w, "error");
    jw_obj_open(&w);
    jw_kstr(&w, "code", "RANGE_NOT_SATISFIABLE");
    jw_kstr(&w, "message", "Range not satisfiable");
    jw_key(&w, "details");
    jw_obj_open(&w);
    jw_kstr(&w, "field", "Range");
    jw_kstr(&w, "reason", arena_printf(h->arena, "the file has %lld bytes", (long long)size));
    jw_obj_close(&w);
    jw_obj_close(&w);
    jw_obj_close(&w);
    h->status = 416;
    return jw_finish(&w) < 0 ? TS_E_INTERNAL : 0;
}

static int download(struct hctx *h)
{
    struct file_row f;
    int r = file_find(h, http_param_get(h->req, "file_id"), &f);
    if (r < 0)
        return r;
    int fd = open(content_path(h, f.id), O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0 || sb.st_size != f.size) {
        log_msg(LOG_ERROR, "files: content of %s is missing or changed", f.id);
        if (fd >= 0)
            close(fd);
        return fail(h, TS_E_INTERNAL, NULL, "the file's content is unavailable");
    }
    const char *etag = arena_printf(h->arena, "\"%s\"", f.sha256);
    const char *range = http_header_get(h->req, "Range");
    const char *if_range = http_header_get(h->req, "If-Range");
    if (if_range && strcmp(if_range, etag) != 0)
        range = NULL; /* the client's copy is another version: send it whole */
    int64_t off = 0, len = f.size;
    int kind = desk_range_parse(range, f.size, &off, &len);
    http_header_add(h->req, "ETag", etag);
    http_header_add(h->req, "Accept-Ranges", "bytes");
    if (kind < 0) {
        close(fd);
        return range_unsatisfiable(h, f.size);
    }
    http_header_add(h->req, "Content-Disposition", disposition_header(h->arena, f.filename));
    http_header_add(h->req, "Cache-Control", "private, no-cache");
    if (kind > 0) {
        http_header_add(h->req, "Content-Range",
                        arena_printf(h->arena, "bytes %lld-%lld/%lld", (long long)off,
                                     (long long)(off + len - 1), (long long)f.size));
        h->status = 206;
    }
    struct request *req = h->req;
    req->content_type = strcmp(f.content_type, "text/plain") == 0 ? "text/plain; charset=utf-8"
                                                                 : f.content_type;
    req->out_fd = fd;
    req->out_off = off;
    req->out_len = len;
    return 0;
}

static int by_ticket(struct hctx *h)
{
    struct desk_ticket t;
    int r = desk_ticket_find(h, http_param_get(h->req, "ticket_id"), "ticket_id", &t);
    if (r < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_BY_TICKET);
    sqlite3_bind_text(q, 1, h->tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, t.id, -1, SQLITE_STATIC);
    struct jw w;
    out_begin(h, &w);
    jw_key(&w, "files");
    jw_arr_open(&w);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        struct file_row f;
        row_read(h, q, &f);
        file_json(h, &w, &f);
    }
    sqlite3_reset(q);
    jw_arr_close(&w);
    if (rc != SQLITE_DONE)
        return db_err(rc);
    return out_end(h, &w);
}

/* ---- delete ---- */

static int delete_file(struct hctx *h)
{
    struct file_row f;
    int r = file_find(h, http_param_get(h->req, "file_id"), &f);
    if (r < 0)
        return r;
    if (strcmp(f.uploaded_by, h->user_id ? h->user_id : "") != 0 &&
        !(h->who.roles & ROLES_ADMINS))
        return fail(h, TS_E_FORBIDDEN, "file_id", "only the uploader or an admin may delete a file");
    if ((r = db_write_begin(h->app->db)) < 0)
        return r;
    sqlite3_stmt *q = db_stmt(h->app->db, SQL_DELETE);
    sqlite3_bind_text(q, 1, f.id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->tenant_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc != SQLITE_DONE)
        return db_err(rc);
    const char *path = content_path(h, f.id);
    if (unlink(path) < 0 && errno != ENOENT)
        log_msg(LOG_ERROR, "files: unlink %s: %s", path, strerror(errno));
    struct jw w;
    out_begin(h, &w);
    jw_kstr(&w, "message", "File deleted");
    return out_end(h, &w);
}

static const struct route routes[] = {
    {"POST", "/api/v1/files/upload", upload, "files.write", "default", RUN_LOOP, 0, RF_SPOOL_BODY},
    {"GET", "/api/v1/files/ticket/{ticket_id}", by_ticket, "files.read", "default", RUN_LOOP, 0, 0},
    {"GET", "/api/v1/files/{file_id}", metadata, "files.read", "default", RUN_LOOP, 0, 0},
    {"GET", "/api/v1/files/{file_id}/download", download, "files.read", "default", RUN_LOOP, 0, 0},
    {"DELETE", "/api/v1/files/{file_id}", delete_file, "files.write", "default", RUN_LOOP, 0, 0},
};

const struct route_table desk_files_table = {SURF_DESK, routes, sizeof(routes) / sizeof(routes[0])};
