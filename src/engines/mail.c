/* Outgoing email: outbox rows queued in the caller's transaction, delivered after commit over
 * SMTP (libcurl multi driven by uv_poll + uv_timer on the loop) with backoff, or as .eml files.
 *
 * Delivery never trusts memory: a scan reads committed rows (status 'queued', due now) and the
 * scan only runs while no write transaction is open, so a message whose request rolled back, or
 * whose tick has not committed yet, is never sent. Outcomes are written with db_write_begin like
 * every other loop write; the mailer's uv_check handle commits them in the check phase (the
 * same phase the server commits its tick in), because a timer-driven write is not followed by a
 * response that would make the server commit.
 *
 * The SMTP transfers themselves run on one mail thread of the mailer's own (a libcurl multi it
 * drives with curl_multi_poll), not on the loop: libcurl's done phase of an SMTP upload waits
 * *blocking* for the server's reply to the final "." (curl issue #8555; QUIT likewise), so a
 * server that takes the message and never answers stalled the whole loop for
 * CURLOPT_SERVER_RESPONSE_TIMEOUT. The loop hands the thread ready easy handles and gets them
 * back finished (two lists under one mutex, a uv_async); everything else — the outbox, its
 * writes, the backoff — stays on the loop. Each message gets its own connection
 * (CURLOPT_FORBID_REUSE): one a server stopped answering on would otherwise be reused by the
 * retry, which then timed out the same way. At shutdown every socket is shut down first, so
 * nothing waits at all. */
#include "engines/mail.h"

#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/ids.h"
#include "core/log.h"

#define MAIL_ADDR_MAX 254            /* RFC 5321 path limit minus the angle brackets */
#define MAIL_LOCAL_MAX 64
#define MAIL_TENANT_MAX 128
#define MAIL_SUBJECT_MAX 500
#define MAIL_BODY_MAX (64 * 1024)
#define MAIL_MSG_MAX (MAIL_BODY_MAX * 4 + 16 * 1024) /* quoted-printable is at most ~3.1x */
#define MAIL_LINE_MAX 998            /* RFC 5322 2.1.1 */
#define MAIL_QP_LINE 76              /* RFC 2045 6.7 (5) */
#define MAIL_MAX_TRANSFERS 4
#define MAIL_FILE_BATCH 32
#define MAIL_KICK_MS 5               /* enqueue -> scan: after this tick's commit */
#define MAIL_DEFER_MS 5              /* a transaction is open: look again shortly */
#define MAIL_RESCAN_MAX_MS (10 * 60 * 1000)
#define MAIL_BACKOFF_MAX_MS (10 * 60 * 1000)
#define MAIL_SMTP_TIMEOUT_MS 30000
#define MAIL_CONNECT_TIMEOUT_MS 10000
#define MAIL_RESPONSE_TIMEOUT_S 5    /* bounds libcurl's blocking wait after the final "." */
#define MAIL_MAX_FDS 32              /* 4 connections, a happy-eyeballs pair each, with room */
#define MAIL_POLL_MS 1000            /* the mail thread's longest sleep (a wakeup cuts it short) */
#define MAIL_DEFAULT_ATTEMPTS 8
#define MAIL_ERROR_MAX 512

struct mail_row {
    char id[UUID_STR_LEN];
    char *to, *subject, *body;
    int attempts;
    int64_t created_at;
};

/* One message on its way. The loop owns it, except between xfer_hand_over and the mail
 * thread's done_push: then the thread does, and the loop touches nothing but the list links. */
struct mail_xfer {
    struct mailer *m;
    CURL *easy;
    struct curl_slist *rcpt;
    struct buf msg;
    size_t off;
    char id[UUID_STR_LEN];
    int attempts;                    /* before this one */
    char errbuf[CURL_ERROR_SIZE];
    CURLcode res;                    /* set by the mail thread when the transfer is done */
    long code;                       /* the last SMTP reply code */
    bool linked;                     /* in m->xfers (counted in m->nxfers) */
    struct mail_xfer *prev, *next;   /* m->xfers: every message in flight (loop) */
    struct mail_xfer *tnext;         /* m->inbox / m->done (under m->mu) */
};

struct mailer {
    uv_loop_t *loop;
    struct db *db;
    char *mail_dir;                  /* file mode */
    char *smtp_url, *smtp_user, *smtp_password;
    char *from_header, *from_addr;   /* "Name <a@b>" and "a@b" */
    const char *from_domain;         /* inside from_addr: Message-ID right-hand side */
    int max_attempts;
    bool handles_inited, closing, need_commit, curl_inited;
    bool recover;                    /* an outcome write was lost: requeue stale 'sending' rows */
    uint64_t tx;                     /* the tick transaction of the last outcome write */
    int handles_open;
    uv_timer_t scan_timer;
    uv_check_t commit_check;
    uv_async_t done_async;           /* the mail thread finished transfers */
    CURLM *multi;                    /* NULL in file mode; the mail thread's while it runs */
    struct mail_xfer *xfers;
    int nxfers;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;              /* guards what follows */
    bool stop;
    struct mail_xfer *inbox, *done;  /* loop -> thread, thread -> loop */
    curl_socket_t fds[MAIL_MAX_FDS]; /* every socket curl has open, to cut them at shutdown */
    int nfds;
};

static const char SQL_INSERT[] =
    "INSERT INTO outbox(tenant_id, id, to_addr, subject, body, status, attempts, next_attempt_at,"
    " created_at) VALUES(?, ?, ?, ?, ?, 'queued', 0, ?, ?)";
/* Delivery is the server's own work, not a tenant's request: it scans every tenant's rows. */
static const char SQL_DUE[] =
    "SELECT id, to_addr, subject, body, attempts, created_at FROM outbox "
    "WHERE status = 'queued' AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?";
static const char SQL_NEXT_DUE[] =
    "SELECT min(next_attempt_at) FROM outbox WHERE status = 'queued'";
static const char SQL_SENDING[] =
    "UPDATE outbox SET status = 'sending' WHERE id = ? AND status = 'queued'";
static const char SQL_SENT[] =
    "UPDATE outbox SET status = 'sent', attempts = attempts + 1, sent_at = ?, last_error = NULL "
    "WHERE id = ?";
static const char SQL_RETRY[] =
    "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?";
static const char SQL_REQUEUE[] =
    "UPDATE outbox SET status = 'queued' WHERE id = ? AND status = 'sending'";
static const char SQL_RECOVER[] = "UPDATE outbox SET status = 'queued' WHERE status = 'sending'";

static void mailer_kick(struct mailer *m, uint64_t delay_ms);

/* ---------- validation ---------- */

static bool is_atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static bool is_ldh(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

/* dot-atom of atext (local part) or of letters, digits and hyphens (domain): no empty atoms */
static bool dot_atom_valid(const char *p, size_t n, bool domain)
{
    if (n == 0 || p[0] == '.' || p[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '.') {
            if (p[i + 1] == '.')
                return false;
            if (domain && (p[i - 1] == '-' || p[i + 1] == '-'))
                return false;
        } else if (domain ? !is_ldh(c) : !is_atext(c)) {
            return false;
        }
    }
    return !domain || (p[0] != '-' && p[n - 1] != '-');
}

/* addr-spec as SMTP carries it: local@domain, ASCII, no quoting, comments or literals. Rejects
 * by construction everything that could end a header or add a recipient: CR, LF, spaces,
 * commas, angle brackets, quotes, semicolons. */
static bool mail_addr_valid(const char *a)
{
    size_t n = strnlen(a, MAIL_ADDR_MAX + 1);
    const char *at = memchr(a, '@', n);
    if (n > MAIL_ADDR_MAX || at == NULL || memchr(at + 1, '@', n - (size_t)(at - a) - 1))
        return false;
    size_t local = (size_t)(at - a);
    return local <= MAIL_LOCAL_MAX && dot_atom_valid(a, local, false) &&
           dot_atom_valid(at + 1, n - local - 1, true);
}

/* Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (len == 0 || i + len > n)
            return false;
        uint32_t cp = len == 1 ? c : (uint32_t)(c & (0x7F >> len));
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

/* One header line's worth of UTF-8: no CR, LF or other control characters except TAB. */
static bool subject_valid(const char *s)
{
    size_t n = strnlen(s, MAIL_SUBJECT_MAX + 1);
    if (n > MAIL_SUBJECT_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7F)
            return false;
    }
    return utf8_valid((const unsigned char *)s, n);
}

static bool body_valid(const char *s)
{
    size_t n = strnlen(s, MAIL_BODY_MAX + 1);
    return n <= MAIL_BODY_MAX && utf8_valid((const unsigned char *)s, n);
}

/* "Name <a@b>" or "a@b", printable ASCII; ret_addr gets a copy of the addr-spec. */
static int from_parse(const char *from, char **ret_addr)
{
    for (const char *p = from; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7F)
            return -EINVAL;
    const char *lt = strrchr(from, '<');
    size_t n = strlen(from);
    char *addr = lt ? strndup(lt + 1, n - (size_t)(lt - from) - 1) : strdup(from);
    if (addr == NULL)
        return -ENOMEM;
    if (lt && (n == 0 || from[n - 1] != '>' || strlen(addr) == 0))
        addr[0] = '\0';
    else if (lt)
        addr[strlen(addr) - 1] = '\0';
    if (!mail_addr_valid(addr)) {
        free(addr);
        return -EINVAL;
    }
    *ret_addr = addr;
    return 0;
}

/* ---------- composing the RFC 5322 message ---------- */

static void rfc5322_date(int64_t unix_ms, char *out, size_t n)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, n, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static bool needs_encoding(const char *s)
{
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p >= 0x80)
            return true;
    return strstr(s, "=?") != NULL; /* would read as an encoded-word */
}

/* RFC 2047 B encoding in words of at most 75 characters (45 input bytes), never splitting a
 * UTF-8 sequence, folded with CRLF SP. */
static int subject_put(struct buf *b, const char *s)
{
    if (!needs_encoding(s))
        return buf_printf(b, "Subject: %s\r\n", s);
    int r = buf_puts(b, "Subject:");
    size_t n = strlen(s), i = 0;
    while (r == 0 && i < n) {
        size_t k = n - i < 45 ? n - i : 45;
        while (i + k < n && ((unsigned char)s[i + k] & 0xC0) == 0x80)
            k--;
        char b64[sodium_base64_ENCODED_LEN(45, sodium_base64_VARIANT_ORIGINAL)];
        sodium_bin2base64(b64, sizeof(b64), (const unsigned char *)s + i, k,
                          sodium_base64_VARIANT_ORIGINAL);
        r = buf_printf(b, "%s=?UTF-8?B?%s?=", i ? "\r\n " : " ", b64);
        i += k;
    }
    return r < 0 ? r : buf_puts(b, "\r\n");
}

/* Calls fn for each line of s; CRLF, LF and a lone CR all end a line. */
static int lines_each(const char *s, int (*fn)(struct buf *, const char *, size_t), struct buf *b)
{
    const char *p = s;
    while (*p) {
        size_t len = strcspn(p, "\r\n");
        int r = fn(b, p, len);
        if (r < 0)
            return r;
        p += len;
        if (p[0] == '\r' && p[1] == '\n')
            p += 2;
        else if (*p)
            p++;
    }
    return 0;
}

static int line_7bit(struct buf *b, const char *p, size_t n)
{
    int r = buf_append(b, p, n);
    return r < 0 ? r : buf_puts(b, "\r\n");
}

/* RFC 2045 6.7: '=' and non-printables as =XX, trailing white space encoded, soft line breaks
 * keep every encoded line within 76 characters. */
static int line_qp(struct buf *b, const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        unsigned char c = (unsigned char)p[i];
        bool ws = c == ' ' || c == '\t';
        bool literal = (c >= 33 && c <= 126 && c != '=') || (ws && i + 1 < n);
        char tok[3] = {(char)c, 0, 0};
        size_t len = 1;
        if (!literal) {
            tok[0] = '=', tok[1] = hex[c >> 4], tok[2] = hex[c & 15];
            len = 3;
        }
        /* room for the token plus a possible soft break "=" on this line */
        if (col + len > MAIL_QP_LINE - 1 && !(i + 1 == n && col + len <= MAIL_QP_LINE)) {
            r = buf_puts(b, "=\r\n");
            col = 0;
        }
        if (r == 0)
            r = buf_append(b, tok, len);
        col += len;
    }
    return r < 0 ? r : buf_puts(b, "\r\n");
}

/* 7bit when every byte is ASCII and every line fits; otherwise quoted-printable, which any
 * SMTP server carries (8bit would need 8BITMIME, which curl does not negotiate). */
static bool body_is_7bit(const char *s)
{
    size_t line = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 0x80)
            return false;
        line = (*p == '\r' || *p == '\n') ? 0 : line + 1;
        if (line > MAIL_LINE_MAX)
            return false;
    }
    return true;
}

static int msg_build(const struct mailer *m, const struct mail_row *row, struct buf *b)
{
    char date[64];
    rfc5322_date(row->created_at, date, sizeof(date));
    bool plain = body_is_7bit(row->body);
    int r = buf_printf(b, "Date: %s\r\nFrom: %s\r\nTo: %s\r\n", date, m->from_header, row->to);
    if (r == 0)
        r = subject_put(b, row->subject);
    if (r == 0)
        r = buf_printf(b,
                       "Message-ID: <%s@%s>\r\nMIME-Version: 1.0\r\n"
                       "Content-Type: text/plain; charset=utf-8\r\n"
                       "Content-Transfer-Encoding: %s\r\n\r\n",
                       row->id, m->from_domain, plain ? "7bit" : "quoted-printable");
    if (r == 0)
        r = lines_each(row->body, plain ? line_7bit : line_qp, b);
    return r;
}

/* ---------- recording outcomes (loop thread, the tick's transaction) ---------- */

/* Outcomes are written in the tick's transaction. One that is rolled back instead (an I/O
 * error, a full disk) leaves its row 'sending' with nothing in flight, which only the start-up
 * recovery would requeue: noticed here, the next scan with no transfer running requeues it. */
static void tx_watch(struct mailer *m)
{
    uint64_t now = db_tx_seq(m->db);
    if (m->tx && m->tx != now && db_tx_result(m->db, m->tx) < 0)
        m->recover = true;
    m->tx = now;
}

static void commit_check_cb(uv_check_t *h)
{
    struct mailer *m = h->data;
    int r = m->need_commit ? db_tick_commit(m->db) : 0;
    tx_watch(m);
    if (r == TS_E_BUSY) {
        mailer_kick(m, MAIL_DEFER_MS); /* busy: keep the loop awake and commit next iteration */
        return;
    }
    m->need_commit = false;
    uv_check_stop(h);
}

/* The statement for one write in the tick's transaction, or NULL (logged) when the database is
 * busy or the statement cannot be prepared. */
static sqlite3_stmt *write_stmt(struct mailer *m, const char *sql)
{
    int r = db_write_begin(m->db);
    if (r < 0) {
        log_msg(LOG_WARN, "mail: cannot write the outbox: %s", err_message(r));
        m->recover = true;
        return NULL;
    }
    tx_watch(m);
    m->need_commit = true;
    if (m->handles_inited && !m->closing)
        uv_check_start(&m->commit_check, commit_check_cb);
    return db_stmt(m->db, sql);
}

static int step_done(struct mailer *m, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW)
        return 0;
    log_msg(LOG_ERROR, "mail: outbox write failed: %s", sqlite3_errmsg(db_handle(m->db)));
    return db_err(rc) ? db_err(rc) : TS_E_INTERNAL;
}

static int outbox_by_id(struct mailer *m, const char *sql, const char *id)
{
    sqlite3_stmt *st = write_stmt(m, sql);
    if (st == NULL)
        return TS_E_BUSY;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    return step_done(m, st);
}

static void record_sent(struct mailer *m, const char *id)
{
    sqlite3_stmt *st = write_stmt(m, SQL_SENT);
    if (st == NULL)
        return; /* stays 'sending': requeued (and sent again) at the next start */
    sqlite3_bind_int64(st, 1, clock_now_ms());
    sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
    if (step_done(m, st) == 0)
        log_msg(LOG_DEBUG, "mail %s sent", id);
}

static int64_t backoff_ms(int attempts)
{
    int64_t ms = 1000;
    for (int i = 0; i < attempts && ms < MAIL_BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms < MAIL_BACKOFF_MAX_MS ? ms : MAIL_BACKOFF_MAX_MS;
}

/* attempts_before + 1 attempts made; retried after 2^attempts s (capped), or failed for good. */
static void record_failure(struct mailer *m, const char *id, int attempts_before, bool permanent,
                           const char *error)
{
    int attempts = attempts_before + 1;
    bool give_up = permanent || attempts >= m->max_attempts;
    sqlite3_stmt *st = write_stmt(m, SQL_RETRY);
    if (st == NULL)
        return;
    sqlite3_bind_text(st, 1, give_up ? "failed" : "queued", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, attempts);
    sqlite3_bind_int64(st, 3, clock_now_ms() + (give_up ? 0 : backoff_ms(attempts)));
    sqlite3_bind_text(st, 4, error, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, id, -1, SQLITE_TRANSIENT);
    if (step_done(m, st) == 0)
        log_msg(give_up ? LOG_ERROR : LOG_WARN, "mail %s: attempt %d %s: %s", id, attempts,
                give_up ? "failed, giving up" : "failed, will retry", error);
}

/* ---------- file mode ---------- */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* DATA/mail/<id>.eml, written under a temporary name and renamed, so a reader never sees half
 * a message. */
static int eml_write(const struct mailer *m, const char *id, const struct buf *msg)
{
    char path[4096], tmp[4096];
    if (snprintf(path, sizeof(path), "%s/%s.eml", m->mail_dir, id) >= (int)sizeof(path) ||
        snprintf(tmp, sizeof(tmp), "%s/.%s.eml.tmp", m->mail_dir, id) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int r = write_all(fd, msg->data, msg->len);
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0)
        unlink(tmp);
    return r;
}

static void deliver_file(struct mailer *m, const struct mail_row *row)
{
    struct buf msg;
    buf_init(&msg, MAIL_MSG_MAX);
    int r = msg_build(m, row, &msg);
    if (r == 0)
        r = eml_write(m, row->id, &msg);
    buf_release(&msg);
    if (r == 0) {
        record_sent(m, row->id);
        return;
    }
    char e[MAIL_ERROR_MAX];
    snprintf(e, sizeof(e), "writing mail/%.36s.eml: %.200s", row->id, strerror(-r));
    record_failure(m, row->id, row->attempts, false, e);
}

/* ---------- SMTP mode: libcurl multi on the mail thread ---------- */

static void xfer_link(struct mailer *m, struct mail_xfer *x)
{
    x->next = m->xfers;
    if (m->xfers)
        m->xfers->prev = x;
    m->xfers = x;
    x->linked = true;
    m->nxfers++;
}

static void xfer_free(struct mailer *m, struct mail_xfer *x)
{
    if (x->linked) {
        if (x->prev)
            x->prev->next = x->next;
        else
            m->xfers = x->next;
        if (x->next)
            x->next->prev = x->prev;
        m->nxfers--;
    }
    curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->rcpt);
    buf_release(&x->msg);
    free(x);
}

static void xfer_finish(struct mailer *m, struct mail_xfer *x)
{
    if (x->res == CURLE_OK) {
        record_sent(m, x->id);
    } else {
        char e[MAIL_ERROR_MAX];
        snprintf(e, sizeof(e), "%s%s%s (SMTP %ld)", curl_easy_strerror(x->res),
                 x->errbuf[0] ? ": " : "", x->errbuf, x->code);
        record_failure(m, x->id, x->attempts, x->code >= 500 && x->code < 600, e); /* permanent */
    }
    xfer_free(m, x);
}

/* Mail thread: a transfer is over; the loop records it (done_async_cb). */
static void done_push(struct mailer *m, struct mail_xfer *x)
{
    pthread_mutex_lock(&m->mu);
    x->tnext = m->done;
    m->done = x;
    pthread_mutex_unlock(&m->mu);
    uv_async_send(&m->done_async);
}

static struct mail_xfer *list_take(struct mailer *m, struct mail_xfer **list)
{
    pthread_mutex_lock(&m->mu);
    struct mail_xfer *l = *list;
    *list = NULL;
    pthread_mutex_unlock(&m->mu);
    return l;
}

/* Loop: records what the mail thread has finished, then looks for more to send. */
static void done_async_cb(uv_async_t *a)
{
    struct mailer *m = a->data;
    int n = 0;
    for (struct mail_xfer *x = list_take(m, &m->done), *next; x; x = next, n++) {
        next = x->tnext;
        xfer_finish(m, x);
    }
    if (n && !m->closing)
        mailer_kick(m, 0); /* room for more */
}

static bool thread_stopping(struct mailer *m)
{
    pthread_mutex_lock(&m->mu);
    bool stop = m->stop;
    pthread_mutex_unlock(&m->mu);
    return stop;
}

/* The mail thread: adds what the loop hands over, runs the transfers, hands finished ones back.
 * Only this thread calls the multi (curl_multi_wakeup aside) until it is joined. */
static void *mail_thread(void *arg)
{
    struct mailer *m = arg;
    while (!thread_stopping(m)) {
        for (struct mail_xfer *x = list_take(m, &m->inbox), *next; x; x = next) {
            next = x->tnext;
            if (curl_multi_add_handle(m->multi, x->easy) != CURLM_OK) {
                x->res = CURLE_FAILED_INIT;
                done_push(m, x);
            }
        }
        int running, left;
        curl_multi_perform(m->multi, &running);
        for (CURLMsg *msg; (msg = curl_multi_info_read(m->multi, &left));) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            char *priv = NULL;
            CURL *easy = msg->easy_handle;
            CURLcode res = msg->data.result; /* msg is invalid once the handle is removed */
            curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
            struct mail_xfer *x = (struct mail_xfer *)priv;
            x->res = res;
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &x->code);
            curl_multi_remove_handle(m->multi, easy);
            curl_easy_cleanup(easy); /* here, while the multi is this thread's */
            x->easy = NULL;
            done_push(m, x);
        }
        curl_multi_poll(m->multi, NULL, 0, MAIL_POLL_MS, NULL);
    }
    return NULL;
}

/* Loop: x is ready (easy handle set up); the mail thread takes it from here. */
static void xfer_hand_over(struct mailer *m, struct mail_xfer *x)
{
    pthread_mutex_lock(&m->mu);
    x->tnext = m->inbox;
    m->inbox = x;
    pthread_mutex_unlock(&m->mu);
    curl_multi_wakeup(m->multi);
}

/* CURLOPT_OPENSOCKETFUNCTION / CLOSESOCKETFUNCTION (mail thread): curl's sockets, tracked so
 * shutdown can cut them (and close-on-exec, which curl does not set). */
static curl_socket_t open_socket_cb(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct mailer *m = arg;
    curl_socket_t fd = CURL_SOCKET_BAD;
    pthread_mutex_lock(&m->mu);
    if (purpose == CURLSOCKTYPE_IPCXN && m->nfds < MAIL_MAX_FDS && !m->stop) {
        fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
        if (fd >= 0)
            m->fds[m->nfds++] = fd;
        else
            fd = CURL_SOCKET_BAD;
    }
    pthread_mutex_unlock(&m->mu);
    return fd;
}

static int close_socket_cb(void *arg, curl_socket_t fd)
{
    struct mailer *m = arg;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->nfds; i++)
        if (m->fds[i] == fd) {
            m->fds[i] = m->fds[--m->nfds];
            break;
        }
    int r = close(fd); /* under the lock: shutdown never meets a reused number */
    pthread_mutex_unlock(&m->mu);
    return r;
}

static size_t xfer_read_cb(char *dst, size_t size, size_t nitems, void *arg)
{
    struct mail_xfer *x = arg;
    size_t room = size * nitems, left = x->msg.len - x->off;
    size_t n = left < room ? left : room;
    memcpy(dst, x->msg.data + x->off, n);
    x->off += n;
    return n;
}

static int xfer_setup(struct mailer *m, struct mail_xfer *x, const char *to)
{
    char path[MAIL_ADDR_MAX + 3];
    snprintf(path, sizeof(path), "<%s>", to);
    x->rcpt = curl_slist_append(NULL, path);
    x->easy = curl_easy_init();
    if (x->rcpt == NULL || x->easy == NULL)
        return -ENOMEM;
    CURL *e = x->easy;
    snprintf(path, sizeof(path), "<%s>", m->from_addr);
    curl_easy_setopt(e, CURLOPT_URL, m->smtp_url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_SMTP | CURLPROTO_SMTPS));
#endif
    /* STARTTLS when offered; required when there is a password to send */
    curl_easy_setopt(e, CURLOPT_USE_SSL,
                     (long)(m->smtp_user || m->smtp_password ? CURLUSESSL_ALL : CURLUSESSL_TRY));
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, path);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, x->rcpt);
    if (m->smtp_user)
        curl_easy_setopt(e, CURLOPT_USERNAME, m->smtp_user);
    if (m->smtp_password)
        curl_easy_setopt(e, CURLOPT_PASSWORD, m->smtp_password);
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, xfer_read_cb);
    curl_easy_setopt(e, CURLOPT_READDATA, x);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)MAIL_SMTP_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)MAIL_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_SERVER_RESPONSE_TIMEOUT, (long)MAIL_RESPONSE_TIMEOUT_S);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, m);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket_cb);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, m);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
    return 0;
}

/* Marks the row 'sending' and hands it to the mail thread. -EAGAIN: the outbox could not be
 * written now (row untouched, try later); any other failure has been recorded on the row. */
static int deliver_smtp(struct mailer *m, const struct mail_row *row)
{
    if (outbox_by_id(m, SQL_SENDING, row->id) < 0)
        return -EAGAIN;
    struct mail_xfer *x = calloc(1, sizeof(*x));
    int r = x ? 0 : -ENOMEM;
    if (r == 0) {
        x->m = m;
        memcpy(x->id, row->id, UUID_STR_LEN);
        x->attempts = row->attempts;
        buf_init(&x->msg, MAIL_MSG_MAX);
        r = msg_build(m, row, &x->msg);
    }
    if (r == 0)
        r = xfer_setup(m, x, row->to);
    if (r < 0) {
        if (x)
            xfer_free(m, x);
        record_failure(m, row->id, row->attempts, false, strerror(-r));
        return r;
    }
    xfer_link(m, x);
    xfer_hand_over(m, x);
    return 0;
}

/* Loop: stops the mail thread, cutting every socket first so no blocking wait inside libcurl
 * outlasts it. Afterwards the multi is the loop's again. */
static void mail_thread_stop(struct mailer *m)
{
    if (!m->thread_started)
        return;
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    for (int i = 0; i < m->nfds; i++)
        shutdown(m->fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&m->mu);
    curl_multi_wakeup(m->multi);
    pthread_join(m->thread, NULL);
    m->thread_started = false;
}

/* ---------- the delivery scan ---------- */

static bool xfer_running(const struct mailer *m, const char *id)
{
    for (const struct mail_xfer *x = m->xfers; x; x = x->next)
        if (strcmp(x->id, id) == 0)
            return true;
    return false;
}

static void rows_free(struct mail_row *rows, int n)
{
    for (int i = 0; i < n; i++) {
        free(rows[i].to);
        free(rows[i].subject);
        free(rows[i].body);
    }
}

static char *col_dup(sqlite3_stmt *st, int col)
{
    const char *s = (const char *)sqlite3_column_text(st, col);
    return strdup(s ? s : "");
}

/* Copies up to max due rows out (the statement is reset before any write touches the table). */
static int rows_due(struct mailer *m, struct mail_row *rows, int max)
{
    sqlite3_stmt *st = db_stmt(m->db, SQL_DUE);
    if (st == NULL)
        return TS_E_INTERNAL;
    sqlite3_bind_int64(st, 1, clock_now_ms());
    sqlite3_bind_int(st, 2, max);
    int n = 0, rc;
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct mail_row *r = &rows[n];
        snprintf(r->id, sizeof(r->id), "%s", (const char *)sqlite3_column_text(st, 0));
        r->to = col_dup(st, 1);
        r->subject = col_dup(st, 2);
        r->body = col_dup(st, 3);
        r->attempts = sqlite3_column_int(st, 4);
        r->created_at = sqlite3_column_int64(st, 5);
        n++;
        if (!r->to || !r->subject || !r->body) {
            rows_free(rows, n);
            n = -ENOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    return n;
}

/* Arms the scan for the earliest queued row still waiting for its retry time. */
static void schedule_next(struct mailer *m)
{
    sqlite3_stmt *st = db_stmt(m->db, SQL_NEXT_DUE);
    if (st == NULL || sqlite3_step(st) != SQLITE_ROW || sqlite3_column_type(st, 0) == SQLITE_NULL) {
        if (st)
            sqlite3_reset(st);
        return; /* nothing queued: the next enqueue kicks */
    }
    int64_t wait = sqlite3_column_int64(st, 0) - clock_now_ms();
    sqlite3_reset(st);
    if (wait > MAIL_RESCAN_MAX_MS)
        wait = MAIL_RESCAN_MAX_MS;
    mailer_kick(m, wait > 0 ? (uint64_t)wait : 0);
}

static void scan_cb(uv_timer_t *t)
{
    struct mailer *m = t->data;
    if (m->closing)
        return;
    if (db_in_write(m->db)) { /* uncommitted rows must not be sent: wait for the commit */
        m->need_commit = true;
        uv_check_start(&m->commit_check, commit_check_cb);
        mailer_kick(m, MAIL_DEFER_MS);
        return;
    }
    if (m->recover && m->nxfers == 0) { /* nothing in flight: every 'sending' row is stale */
        sqlite3_stmt *st = write_stmt(m, SQL_RECOVER);
        if (st && step_done(m, st) == 0)
            m->recover = false;
        mailer_kick(m, MAIL_DEFER_MS); /* scan once the requeue has committed */
        return;
    }
    int room = m->multi ? MAIL_MAX_TRANSFERS - m->nxfers : MAIL_FILE_BATCH;
    if (room <= 0)
        return; /* a finishing transfer kicks again */
    struct mail_row rows[MAIL_FILE_BATCH];
    int n = rows_due(m, rows, room), blocked = 0;
    for (int i = 0; i < n && !blocked; i++) {
        if (m->multi && xfer_running(m, rows[i].id))
            continue; /* its 'sending' mark was rolled back: it is on its way already */
        if (m->multi)
            blocked = deliver_smtp(m, &rows[i]) == -EAGAIN;
        else
            deliver_file(m, &rows[i]);
    }
    if (n > 0)
        rows_free(rows, n);
    if (blocked || n < 0)
        mailer_kick(m, n < 0 ? 1000 : MAIL_DEFER_MS);
    else if (n == room && !m->multi)
        mailer_kick(m, 0); /* a full batch: there may be more */
    else if (n < room)
        schedule_next(m);
}

/* Scan in delay_ms, unless a scan is already due sooner. */
static void mailer_kick(struct mailer *m, uint64_t delay_ms)
{
    if (!m->handles_inited || m->closing)
        return;
    if (uv_is_active((uv_handle_t *)&m->scan_timer) &&
        uv_timer_get_due_in(&m->scan_timer) <= delay_ms)
        return;
    uv_timer_start(&m->scan_timer, scan_cb, delay_ms, 0);
}

/* ---------- public ---------- */

int mail_enqueue(struct mailer *m, const char *tenant_id, const char *to, const char *subject,
                 const char *body)
{
    if (tenant_id == NULL || tenant_id[0] == '\0' || strlen(tenant_id) > MAIL_TENANT_MAX ||
        to == NULL || subject == NULL || body == NULL || !mail_addr_valid(to) ||
        !subject_valid(subject) || !body_valid(body))
        return -EINVAL;
    int r = db_write_begin(m->db); /* write_stmt's begin then only marks the commit due */
    if (r < 0)
        return r;
    sqlite3_stmt *st = write_stmt(m, SQL_INSERT);
    if (st == NULL)
        return TS_E_INTERNAL;
    char id[UUID_STR_LEN];
    id_uuid7(id);
    int64_t now = clock_now_ms();
    sqlite3_bind_text(st, 1, tenant_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, to, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, subject, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, body, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, now);
    sqlite3_bind_int64(st, 7, now);
    r = step_done(m, st);
    sqlite3_clear_bindings(st); /* the strings are the caller's */
    if (r < 0)
        return r;
    mailer_kick(m, MAIL_KICK_MS); /* fires in a later iteration, after this tick's commit */
    return 0;
}

static int mailer_config(struct mailer *m, const struct mail_config *cfg, char *err, size_t errlen)
{
    const char *from = cfg->from ? cfg->from : "Tessera <no-reply@localhost>";
    if (from_parse(from, &m->from_addr) < 0) {
        snprintf(err, errlen, "mail: invalid From address '%s'", from);
        return -EINVAL;
    }
    m->from_domain = strchr(m->from_addr, '@') + 1;
    m->from_header = strdup(from);
    m->max_attempts = cfg->max_attempts > 0 ? cfg->max_attempts : MAIL_DEFAULT_ATTEMPTS;
    if (cfg->smtp_url == NULL) {
        if (cfg->data_dir == NULL) {
            snprintf(err, errlen, "mail: a data directory is needed without --smtp-url");
            return -EINVAL;
        }
        size_t n = strlen(cfg->data_dir) + sizeof("/mail");
        m->mail_dir = malloc(n);
        if (m->mail_dir)
            snprintf(m->mail_dir, n, "%s/mail", cfg->data_dir);
        return m->from_header && m->mail_dir ? 0 : -ENOMEM;
    }
    if (strncmp(cfg->smtp_url, "smtp://", 7) != 0 && strncmp(cfg->smtp_url, "smtps://", 8) != 0) {
        snprintf(err, errlen, "mail: --smtp-url must start with smtp:// or smtps://");
        return -EINVAL;
    }
    m->smtp_url = strdup(cfg->smtp_url);
    m->smtp_user = cfg->smtp_user ? strdup(cfg->smtp_user) : NULL;
    m->smtp_password = cfg->smtp_password ? strdup(cfg->smtp_password) : NULL;
    if (!m->from_header || !m->smtp_url || (cfg->smtp_user && !m->smtp_user) ||
        (cfg->smtp_password && !m->smtp_password))
        return -ENOMEM;
    return 0;
}

static int mailer_transport(struct mailer *m, char *err, size_t errlen)
{
    if (m->mail_dir) {
        if (mkdir(m->mail_dir, 0700) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "mail: cannot create %s: %s", m->mail_dir, strerror(errno));
            return -errno;
        }
        return 0;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "mail: libcurl initialisation failed");
        return TS_E_INTERNAL;
    }
    m->curl_inited = true;
    m->multi = curl_multi_init();
    if (m->multi == NULL)
        return -ENOMEM;
    curl_multi_setopt(m->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)MAIL_MAX_TRANSFERS);
    return 0;
}

/* Before the loop handles exist: the thread only signals done_async about transfers handed
 * over, which needs the handles first. */
static int mail_thread_start(struct mailer *m, char *err, size_t errlen)
{
    if (m->multi == NULL)
        return 0;
    int r = pthread_create(&m->thread, NULL, mail_thread, m);
    if (r != 0) {
        snprintf(err, errlen, "mail: cannot start the mail thread: %s", strerror(r));
        return -r;
    }
    m->thread_started = true;
    return 0;
}

int mailer_new(uv_loop_t *loop, struct db *db, const struct mail_config *cfg, struct mailer **ret,
               char *err, size_t errlen)
{
    struct mailer *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->loop = loop;
    m->db = db;
    pthread_mutex_init(&m->mu, NULL);
    int r = mailer_config(m, cfg, err, errlen);
    if (r == 0)
        r = mailer_transport(m, err, errlen);
    if (r == 0)
        r = mail_thread_start(m, err, errlen);
    /* a crash mid-transfer left rows 'sending': they go out again (at-least-once) */
    sqlite3_stmt *st = r == 0 ? write_stmt(m, SQL_RECOVER) : NULL;
    if (r == 0 && (st == NULL || step_done(m, st) < 0)) {
        snprintf(err, errlen, "mail: cannot recover the outbox (database busy?)");
        r = TS_E_BUSY;
    }
    if (r < 0) {
        if (r == -ENOMEM)
            snprintf(err, errlen, "mail: out of memory");
        mailer_free(m);
        return r;
    }
    uv_timer_init(loop, &m->scan_timer);
    uv_check_init(loop, &m->commit_check);
    uv_async_init(loop, &m->done_async, done_async_cb);
    m->scan_timer.data = m->commit_check.data = m->done_async.data = m;
    m->handles_inited = true;
    m->handles_open = 3;
    uv_check_start(&m->commit_check, commit_check_cb); /* commits the recovery */
    mailer_kick(m, MAIL_KICK_MS);                       /* resumes what is queued */
    *ret = m;
    return 0;
}

static void handle_closed_cb(uv_handle_t *h)
{
    struct mailer *m = h->data;
    m->handles_open--;
}

void mailer_close_handles(struct mailer *m)
{
    if (m == NULL || m->closing)
        return;
    m->closing = true;
    mail_thread_stop(m); /* no blocking end-of-data or QUIT replies to wait for */
    for (struct mail_xfer *x = list_take(m, &m->done), *next; x; x = next) {
        next = x->tnext;
        if (x->res == CURLE_OK)
            xfer_finish(m, x); /* it got through before the cut */
    }
    list_take(m, &m->inbox); /* never taken: still in m->xfers, requeued below */
    while (m->xfers) { /* interrupted: back to the queue for the next start */
        outbox_by_id(m, SQL_REQUEUE, m->xfers->id);
        if (m->multi && m->xfers->easy)
            curl_multi_remove_handle(m->multi, m->xfers->easy);
        xfer_free(m, m->xfers);
    }
    if (m->multi) {
        curl_multi_cleanup(m->multi);
        m->multi = NULL;
    }
    if (m->handles_inited) {
        uv_close((uv_handle_t *)&m->scan_timer, handle_closed_cb);
        uv_close((uv_handle_t *)&m->commit_check, handle_closed_cb);
        uv_close((uv_handle_t *)&m->done_async, handle_closed_cb);
    }
}

/* After mailer_close_handles and a uv_run that let the close callbacks run. The requeue writes
 * of interrupted transfers are in the tick's transaction: db_close commits them. */
struct mailer *mailer_free(struct mailer *m)
{
    if (m == NULL)
        return NULL;
    assert(m->handles_open == 0); /* mailer_close_handles, then uv_run, then mailer_free */
    mail_thread_stop(m);
    while (m->xfers)
        xfer_free(m, m->xfers);
    if (m->multi)
        curl_multi_cleanup(m->multi);
    pthread_mutex_destroy(&m->mu);
    if (m->curl_inited)
        curl_global_cleanup();
    free(m->mail_dir);
    free(m->smtp_url);
    free(m->smtp_user);
    if (m->smtp_password)
        sodium_memzero(m->smtp_password, strlen(m->smtp_password));
    free(m->smtp_password);
    free(m->from_header);
    free(m->from_addr);
    free(m);
    return NULL;
}
