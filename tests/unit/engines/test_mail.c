/* Unit tests for the mailer: validation, .eml files, commit-before-delivery, crash recovery, and
 * real SMTP delivery to aiosmtpd (python3 -m aiosmtpd) including retry while it is down. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check.h"
#include "core/clock.h"
#include "engines/mail.h"

static char dir[] = "/tmp/tessera-mail-XXXXXX";
static uv_loop_t loop;

/* ---------- helpers ---------- */

static int count(sqlite3 *h, const char *sql)
{
    sqlite3_stmt *st;
    int n = -1;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* one column of the row whose subject is subj, as text ("" when absent or NULL) */
static const char *col(sqlite3 *h, const char *subj, const char *column, char *out, size_t n)
{
    char sql[200];
    snprintf(sql, sizeof(sql), "SELECT %s FROM outbox WHERE subject = ?", column);
    sqlite3_stmt *st;
    out[0] = '\0';
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
        return out;
    sqlite3_bind_text(st, 1, subj, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
}

static long long col_int(sqlite3 *h, const char *subj, const char *column)
{
    char v[64];
    return atoll(col(h, subj, column, v, sizeof(v)));
}

typedef int (*pred_fn)(sqlite3 *h, const void *arg);

/* Runs the loop the way the server does (callbacks, then the tick's commit) until pred holds. */
static int run_until(struct db *db, pred_fn pred, const void *arg, int timeout_ms)
{
    uint64_t end = clock_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    while (clock_mono_ns() < end) {
        uv_run(&loop, UV_RUN_NOWAIT);
        db_tick_commit(db);
        if (pred(db_handle(db), arg))
            return 1;
        usleep(1000);
    }
    return 0;
}

static void run_for(struct db *db, int ms)
{
    uint64_t end = clock_mono_ns() + (uint64_t)ms * 1000000u;
    while (clock_mono_ns() < end) {
        uv_run(&loop, UV_RUN_NOWAIT);
        db_tick_commit(db);
        usleep(1000);
    }
}

static int sent_count_is(sqlite3 *h, const void *arg)
{
    return count(h, "SELECT count(*) FROM outbox WHERE status = 'sent'") == *(const int *)arg;
}

static int status_is(sqlite3 *h, const void *arg)
{
    const char *const *sa = arg; /* {subject, status} */
    char v[32];
    return strcmp(col(h, sa[0], "status", v, sizeof(v)), sa[1]) == 0;
}

static int attempted(sqlite3 *h, const void *arg)
{
    return col_int(h, arg, "attempts") >= 1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *s = calloc(1, 1 << 20);
    size_t n = fread(s, 1, (1 << 20) - 1, f);
    s[n] = '\0';
    fclose(f);
    return s;
}

static struct mailer *close_mailer(struct mailer *m)
{
    mailer_close_handles(m);
    uv_run(&loop, UV_RUN_DEFAULT);
    return mailer_free(m);
}

/* Decodes a message with Python's email package (an independent MIME implementation): prints
 * the decoded Subject, a newline, then the decoded body with LF line ends. */
static char *py_decode(const char *path)
{
    char script[300], cmd[900];
    snprintf(script, sizeof(script), "%s/decode.py", dir);
    FILE *f = fopen(script, "w");
    fputs("import sys, email\nfrom email import policy\n"
          "m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)\n"
          "sys.stdout.write(str(m['subject']) + '\\n' + m.get_content().replace('\\r\\n', '\\n'))\n",
          f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s '%s'", script, path);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return NULL;
    char *s = calloc(1, 1 << 20);
    size_t n = fread(s, 1, (1 << 20) - 1, p);
    s[n] = '\0';
    pclose(p);
    return s;
}

/* RFC 5322 2.1.1 / 2.3: every line ends in CRLF and holds at most 998 characters; with
 * quoted-printable, at most 76. */
static int lines_ok(const char *s, size_t max)
{
    size_t line = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '\n' && (p == s || p[-1] != '\r'))
            return 0;
        if (*p == '\r' && p[1] != '\n')
            return 0;
        line = (*p == '\r' || *p == '\n') ? 0 : line + 1;
        if (line > max)
            return 0;
    }
    return 1;
}

static const char *body_of(const char *msg)
{
    const char *p = strstr(msg, "\r\n\r\n");
    return p ? p + 4 : "";
}

/* ---------- validation ---------- */

static void test_validation(struct mailer *m, struct db *db)
{
    const char *bad[] = {
        "a@b\r\nBcc: x", "a@b\nBcc: x@y", "a@b\rx", "no-at", "a@@b", "a@b@c", "a b@c",
        "a@b,c@d", "<a@b>", "a@b>", "Name <a@b>", "@b", "a@", "a@.b", "a@b.", "a..b@c",
        ".a@b", "a@-b", "a@b-", "a@b_c", "\"q\"@b", "a;b@c", "", "ü@b.de",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = mail_enqueue(m, "t1", bad[i], "s", "b");
        if (r != -EINVAL)
            fprintf(stderr, "address accepted: '%s'\n", bad[i]);
        CHECK_INT(r, -EINVAL);
    }
    /* header injection through the subject */
    CHECK_INT(mail_enqueue(m, "t1", "a@b", "Hi\r\nBcc: victim@x", "b"), -EINVAL);
    CHECK_INT(mail_enqueue(m, "t1", "a@b", "Hi\nBcc: victim@x", "b"), -EINVAL);
    CHECK_INT(mail_enqueue(m, "t1", "a@b", "bell\a", "b"), -EINVAL);
    CHECK_INT(mail_enqueue(m, "t1", "a@b", "bad \xff utf8", "b"), -EINVAL);
    CHECK_INT(mail_enqueue(m, "t1", "a@b", "s", "overlong \xc0\xaf"), -EINVAL);
    CHECK_INT(mail_enqueue(m, "", "a@b", "s", "b"), -EINVAL);
    CHECK_INT(mail_enqueue(m, NULL, "a@b", "s", "b"), -EINVAL);

    /* limits: limit accepted, limit + 1 refused; accepted ones are rolled back with their
     * request, so nothing from here is ever delivered */
    char addr[300], local[70], subj[600];
    char *body = malloc(64 * 1024 + 2);
    memset(local, 'l', 64), local[64] = '\0';
    memset(addr, 'd', 255), addr[255] = '\0';
    memcpy(addr, local, 64), addr[64] = '@';
    addr[120] = '.', addr[200] = '.';
    addr[254] = '\0'; /* 254 characters */
    memset(subj, 's', 501), subj[500] = '\0';
    memset(body, 'x', 64 * 1024 + 1), body[64 * 1024] = '\0';
    for (int i = 64; i < 64 * 1024; i += 70)
        body[i] = '\n';
    db_request_start(db);
    CHECK_INT(mail_enqueue(m, "t1", addr, "limits", "b"), 0);
    CHECK_INT(mail_enqueue(m, "t1", "first.last+tag@sub.example-1.co", "limits", "b"), 0);
    CHECK_INT(mail_enqueue(m, "t1", "a@b", subj, "b"), 0);
    CHECK_INT(mail_enqueue(m, "t1", "a@b", "limits", body), 0);
    db_request_end(db, false);
    addr[254] = 'd', addr[255] = '\0';
    CHECK_INT(mail_enqueue(m, "t1", addr, "s", "b"), -EINVAL); /* 255 */
    local[64] = 'l', local[65] = '\0';
    snprintf(addr, sizeof(addr), "%s@b", local);
    CHECK_INT(mail_enqueue(m, "t1", addr, "s", "b"), -EINVAL); /* local part 65 */
    subj[500] = 's';
    CHECK_INT(mail_enqueue(m, "t1", "a@b", subj, "b"), -EINVAL);
    body[64 * 1024] = 'x';
    CHECK_INT(mail_enqueue(m, "t1", "a@b", "s", body), -EINVAL);
    free(body);
    db_tick_commit(db);
    CHECK_INT(count(db_handle(db), "SELECT count(*) FROM outbox"), 0);
}

/* ---------- file mode ---------- */

static const char UTF8_SUBJECT[] = "Grüße – Prüfung bestanden, schöne Grüße aus Köln und Zürich ✓ 🎉";

static void check_eml_ascii(const char *maildir, sqlite3 *h)
{
    char id[64], path[512];
    col(h, "Hello", "id", id, sizeof(id));
    snprintf(path, sizeof(path), "%s/%s.eml", maildir, id);
    char *s = slurp(path);
    CHECK(s != NULL);
    if (s == NULL)
        return;
    CHECK(lines_ok(s, 998));
    CHECK(strncmp(s, "Date: ", 6) == 0);
    CHECK(strstr(s, "\r\nFrom: Tessera <no-reply@localhost>\r\n") != NULL);
    CHECK(strstr(s, "\r\nTo: user@example.com\r\n") != NULL);
    CHECK(strstr(s, "\r\nSubject: Hello\r\n") != NULL);
    char mid[128];
    snprintf(mid, sizeof(mid), "\r\nMessage-ID: <%s@localhost>\r\n", id);
    CHECK(strstr(s, mid) != NULL);
    CHECK(strstr(s, "\r\nMIME-Version: 1.0\r\n") != NULL);
    CHECK(strstr(s, "\r\nContent-Type: text/plain; charset=utf-8\r\n") != NULL);
    CHECK(strstr(s, "\r\nContent-Transfer-Encoding: 7bit\r\n") != NULL);
    CHECK(strstr(s, "Bcc") == NULL);
    /* LF, CRLF and lone CR all became CRLF; no dot-stuffing in a file */
    CHECK_STR(body_of(s), "line one\r\nline two\r\n.dot line\r\nthree\r\nfour\r\n");
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    free(s);
}

static void check_eml_utf8(const char *maildir, sqlite3 *h, const char *body)
{
    char id[64], path[512];
    col(h, UTF8_SUBJECT, "id", id, sizeof(id));
    snprintf(path, sizeof(path), "%s/%s.eml", maildir, id);
    char *s = slurp(path);
    CHECK(s != NULL);
    if (s == NULL)
        return;
    CHECK(lines_ok(s, 998));
    CHECK(lines_ok(body_of(s), 76));
    CHECK(strstr(s, "\r\nSubject: =?UTF-8?B?") != NULL);
    CHECK(strstr(s, "\r\nContent-Transfer-Encoding: quoted-printable\r\n") != NULL);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        CHECK(*p < 0x80); /* 7-bit clean on the wire */
    char *dec = py_decode(path);
    char want[8192];
    snprintf(want, sizeof(want), "%s\n%s", UTF8_SUBJECT, body);
    CHECK(dec != NULL && strcmp(dec, want) == 0);
    if (dec && strcmp(dec, want) != 0)
        fprintf(stderr, "decoded:\n%s\nwanted:\n%s\n", dec, want);
    free(dec);
    free(s);
}

static int count_files(const char *d, const char *suffix)
{
    DIR *dp = opendir(d);
    int n = 0;
    for (struct dirent *e; dp && (e = readdir(dp));) {
        size_t l = strlen(e->d_name), sl = strlen(suffix);
        if (l >= sl && strcmp(e->d_name + l - sl, suffix) == 0)
            n++;
    }
    if (dp)
        closedir(dp);
    return n;
}

static void test_file_mode(void)
{
    char path[300], data[300], maildir[400], err[256];
    snprintf(path, sizeof(path), "%s/file.db", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(maildir, sizeof(maildir), "%s/mail", data);
    mkdir(data, 0700);
    struct db *db;
    CHECK_INT(db_open(path, false, 250, &db, err, sizeof(err)), 0);
    sqlite3 *h = db_handle(db);
    struct mail_config cfg = {.data_dir = data, .from = NULL, .max_attempts = 3};
    struct mailer *m = NULL;
    CHECK_INT(mailer_new(&loop, db, &cfg, &m, err, sizeof(err)), 0);
    struct stat st;
    CHECK(stat(maildir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
    db_tick_commit(db);
    test_validation(m, db);

    /* the long line forces quoted-printable; '=' and trailing blanks must survive it */
    char body8[4096];
    char longline[2001];
    memset(longline, 'a', 2000), longline[2000] = '\0';
    longline[75] = '=', longline[150] = ' ';
    snprintf(body8, sizeof(body8), "Größe: 5 €, trailing space \nx=y\t\n%s\nend\n", longline);
    CHECK_INT(mail_enqueue(m, "t1", "user@example.com", "Hello",
                           "line one\nline two\r\n.dot line\rthree\nfour"), 0);
    CHECK_INT(mail_enqueue(m, "t1", "other@example.com", UTF8_SUBJECT, body8), 0);
    /* a failed request rolls its enqueue back with its savepoint: never delivered. (A raw
     * ROLLBACK on db_handle would desynchronise struct db, whose tick would then retry a COMMIT
     * with no transaction forever; the savepoint is the path the dispatcher really takes.) */
    db_request_start(db);
    CHECK_INT(mail_enqueue(m, "t1", "ghost@example.com", "never", "rolled back"), 0);
    db_request_end(db, false);
    /* not committed yet: another connection sees nothing and no file was written */
    sqlite3 *ro;
    CHECK_INT(db_open_readonly(path, &ro), 0);
    CHECK_INT(count(ro, "SELECT count(*) FROM outbox"), 0);
    CHECK_INT(count_files(maildir, ".eml"), 0);
    int want = 2;
    CHECK(run_until(db, sent_count_is, &want, 5000));
    run_for(db, 50);
    CHECK_INT(count(ro, "SELECT count(*) FROM outbox WHERE status = 'sent' AND attempts = 1 "
                        "AND sent_at IS NOT NULL AND last_error IS NULL"), 2);
    sqlite3_close(ro);
    CHECK_INT(count(h, "SELECT count(*) FROM outbox"), 2);
    CHECK_INT(count(h, "SELECT count(*) FROM outbox WHERE subject = 'never'"), 0);
    CHECK_INT(count_files(maildir, ".eml"), 2);
    CHECK_INT(count_files(maildir, ".tmp"), 0);
    check_eml_ascii(maildir, h);
    check_eml_utf8(maildir, h, body8);
    m = close_mailer(m);

    /* crash recovery: a row left 'sending' is requeued and delivered by the next mailer */
    CHECK_INT(sqlite3_exec(h,
                           "INSERT INTO outbox(tenant_id, id, to_addr, subject, body, status, "
                           "attempts, next_attempt_at, created_at) VALUES('t1', "
                           "'0190f0f0-0000-7000-8000-000000000001', 'late@example.com', 'crashed',"
                           " 'b', 'sending', 0, 0, 0)",
                           NULL, NULL, NULL),
              SQLITE_OK);
    CHECK_INT(mailer_new(&loop, db, &cfg, &m, err, sizeof(err)), 0);
    want = 3;
    CHECK(run_until(db, sent_count_is, &want, 5000));
    CHECK_INT(count_files(maildir, ".eml"), 3);
    char p2[500];
    snprintf(p2, sizeof(p2), "%s/0190f0f0-0000-7000-8000-000000000001.eml", maildir);
    char *s = slurp(p2);
    CHECK(s && strncmp(s, "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n", 39) == 0);
    free(s);
    m = close_mailer(m);

    /* configuration errors */
    struct mail_config bad = {.data_dir = data, .from = "Evil <a@b>\r\nBcc: x@y"};
    err[0] = '\0';
    CHECK_INT(mailer_new(&loop, db, &bad, &m, err, sizeof(err)), -EINVAL);
    CHECK(err[0] != '\0');
    bad.from = NULL;
    bad.smtp_url = "http://example.com/";
    CHECK_INT(mailer_new(&loop, db, &bad, &m, err, sizeof(err)), -EINVAL);
    db_close(db);
}

/* ---------- SMTP mode against aiosmtpd ---------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static int port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* python3 -m aiosmtpd with the Mailbox handler: every message lands in maildir/new/. */
static pid_t smtp_start(int port, const char *maildir)
{
    char listen[64], log[400];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    snprintf(log, sizeof(log), "%s/aiosmtpd.log", dir);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execl("/usr/bin/python3", "python3", "-m", "aiosmtpd", "-n", "-l", listen, "-c",
              "aiosmtpd.handlers.Mailbox", maildir, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200 && !port_open(port); i++)
        usleep(50000);
    CHECK(port_open(port));
    return pid;
}

static void smtp_stop(pid_t pid)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

/* The maildir message containing needle, or NULL. */
static char *maildir_find(const char *maildir, const char *needle, char *ret_path, size_t n)
{
    char d[400];
    snprintf(d, sizeof(d), "%.390s/new", maildir);
    DIR *dp = opendir(d);
    char *found = NULL;
    for (struct dirent *e; dp && !found && (e = readdir(dp));) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(ret_path, n, "%s/%s", d, e->d_name);
        char *s = slurp(ret_path);
        if (s && strstr(s, needle))
            found = s;
        else
            free(s);
    }
    if (dp)
        closedir(dp);
    return found;
}

static void test_smtp(void)
{
    char path[300], maildir[300], url[64], err[256], v[512], mp[800];
    snprintf(path, sizeof(path), "%s/smtp.db", dir);
    snprintf(maildir, sizeof(maildir), "%s/maildir", dir);
    int port = free_port();
    snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", port);
    pid_t pid = smtp_start(port, maildir);
    struct db *db;
    CHECK_INT(db_open(path, false, 250, &db, err, sizeof(err)), 0);
    sqlite3 *h = db_handle(db);
    struct mail_config cfg = {.smtp_url = url, .from = "Tessera Test <robot@tessera.test>",
                              .max_attempts = 5};
    struct mailer *m = NULL;
    CHECK_INT(mailer_new(&loop, db, &cfg, &m, err, sizeof(err)), 0);
    /* more messages than transfers at once (4) */
    const char *to[] = {"a@example.com", "b@example.com", "c@example.com", "d@example.com",
                        "e@example.com", "f@example.com"};
    char subj[32];
    for (int i = 0; i < 6; i++) {
        snprintf(subj, sizeof(subj), "smtp %d", i);
        CHECK_INT(mail_enqueue(m, "t1", to[i], subj, "Hallo Welt, grüß dich\n.hidden dot\n"), 0);
    }
    int want = 6;
    CHECK(run_until(db, sent_count_is, &want, 10000));
    for (int i = 0; i < 6; i++) {
        snprintf(subj, sizeof(subj), "Subject: smtp %d\n", i);
        char *s = maildir_find(maildir, subj, mp, sizeof(mp));
        CHECK(s != NULL);
        if (s == NULL)
            continue;
        char rcpt[64];
        snprintf(rcpt, sizeof(rcpt), "X-RcptTo: %s", to[i]);
        CHECK(strstr(s, rcpt) != NULL);
        CHECK(strstr(s, "X-MailFrom: robot@tessera.test") != NULL);
        CHECK(strstr(s, "Message-ID: <") && strstr(s, "@tessera.test>"));
        free(s);
        char *dec = py_decode(mp);
        char wanted[128];
        snprintf(wanted, sizeof(wanted), "smtp %d\nHallo Welt, grüß dich\n.hidden dot\n", i);
        CHECK_STR(dec, wanted); /* dot-stuffing undone by the server, QP decoded */
        free(dec);
    }

    /* server down: the attempt fails, is counted, and waits for its backoff */
    smtp_stop(pid);
    CHECK_INT(mail_enqueue(m, "t1", "late@example.com", "retry me", "second try\n"), 0);
    CHECK(run_until(db, attempted, "retry me", 5000));
    CHECK_STR(col(h, "retry me", "status", v, sizeof(v)), "queued");
    CHECK_INT(col_int(h, "retry me", "attempts"), 1);
    CHECK(col_int(h, "retry me", "next_attempt_at") > clock_now_ms() + 500);
    CHECK(strlen(col(h, "retry me", "last_error", v, sizeof(v))) > 0);
    /* back up: delivered on the retry (2 s after the first failure) */
    pid = smtp_start(port, maildir);
    const char *sa[] = {"retry me", "sent"};
    CHECK(run_until(db, status_is, sa, 8000));
    CHECK_INT(col_int(h, "retry me", "attempts"), 2);
    char *s = maildir_find(maildir, "Subject: retry me", mp, sizeof(mp));
    CHECK(s != NULL && strstr(s, "X-RcptTo: late@example.com"));
    free(s);
    smtp_stop(pid);
    m = close_mailer(m);
    db_close(db);
}

/* Nothing listens: with max_attempts 1 the first failure is final. */
static void test_smtp_give_up(void)
{
    char path[300], url[64], err[256], v[512];
    snprintf(path, sizeof(path), "%s/giveup.db", dir);
    snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", free_port());
    struct db *db;
    CHECK_INT(db_open(path, false, 250, &db, err, sizeof(err)), 0);
    struct mail_config cfg = {.smtp_url = url, .max_attempts = 1};
    struct mailer *m = NULL;
    CHECK_INT(mailer_new(&loop, db, &cfg, &m, err, sizeof(err)), 0);
    CHECK_INT(mail_enqueue(m, "t1", "x@example.com", "doomed", "b"), 0);
    const char *sa[] = {"doomed", "failed"};
    CHECK(run_until(db, status_is, sa, 5000));
    CHECK_INT(col_int(db_handle(db), "doomed", "attempts"), 1);
    CHECK(strstr(col(db_handle(db), "doomed", "last_error", v, sizeof(v)), "onnect") != NULL);
    m = close_mailer(m);
    db_close(db);
}

/* A server that accepts but never greets: shutting down mid-transfer leaves the row queued. */
static void test_shutdown_requeues(void)
{
    char path[300], url[64], err[256], v[64];
    snprintf(path, sizeof(path), "%s/stuck.db", dir);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    bind(lfd, (struct sockaddr *)&a, sizeof(a));
    listen(lfd, 8);
    getsockname(lfd, (struct sockaddr *)&a, &len);
    snprintf(url, sizeof(url), "smtp://127.0.0.1:%d", ntohs(a.sin_port));
    struct db *db;
    CHECK_INT(db_open(path, false, 250, &db, err, sizeof(err)), 0);
    struct mail_config cfg = {.smtp_url = url, .smtp_user = "u", .smtp_password = "p"};
    struct mailer *m = NULL;
    CHECK_INT(mailer_new(&loop, db, &cfg, &m, err, sizeof(err)), 0);
    CHECK_INT(mail_enqueue(m, "t1", "x@example.com", "stuck", "b"), 0);
    const char *sa[] = {"stuck", "sending"};
    CHECK(run_until(db, status_is, sa, 5000));
    run_for(db, 100);
    m = close_mailer(m);
    db_tick_commit(db);
    CHECK_STR(col(db_handle(db), "stuck", "status", v, sizeof(v)), "queued");
    CHECK_INT(col_int(db_handle(db), "stuck", "attempts"), 0);
    db_close(db);
    close(lfd);
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    test_file_mode();
    test_smtp();
    test_smtp_give_up();
    test_shutdown_requeues();
    CHECK_INT(uv_loop_close(&loop), 0);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (check_failures == 0 && !getenv("TESSERA_KEEP_TMP") && system(cmd) != 0)
        return 1;
    CHECK_DONE();
}
