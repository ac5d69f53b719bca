/* Power-cut simulation VFS for test builds: unsynced writes live in memory until xSync.
 *
 * The idea is SQLite's own crash test (src/test6.c): wrap the real VFS, keep every write in an
 * overlay that reads go through, and copy it to the real file only when the file is synced.
 * A kill -9 of this process then leaves on disk exactly what a power cut would: the synced
 * writes, none of the others. Unlike test6.c the overlay belongs to the file (its path), not to
 * one handle, because the server opens the same database from several connections (the loop's
 * writer, the checkpointer, the pool's readers) that must all see one page cache — as they do
 * through the kernel's. For the same reason closing a file keeps its overlay: the kernel keeps
 * dirty pages after close(2). A clean exit writes what is left (atexit), as the kernel would
 * later; only a kill loses it.
 *
 * What is covered: the main database, its WAL and rollback journals. The -shm file is shared
 * memory, not data: SQLite rebuilds the WAL index from the WAL when the first connection opens
 * the database after every process is gone (the unix VFS truncates a -shm nobody holds), so the
 * xShm* methods pass straight through. Temp files pass through. Creating and deleting files is
 * taken as durable at once (SQLite syncs the directory where it matters), and a write is lost
 * or kept whole (no torn sectors: the device is reported as POWERSAFE_OVERWRITE only). Memory
 * mapping is off: the io methods are version 2, without xFetch. */
#include "store/vfs_powercut.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

#define BLK 4096

/* What this process has written to one file and not yet synced. valid is the length of the
 * real file's prefix that still belongs to the file (a truncation shortens it until the sync
 * applies it); past valid, bytes not in a block read as zeros (a hole), past size not at all. */
struct node {
    char *path;
    int refs;
    bool unlinked;               /* deleted: out of the registry, alive for its open handles */
    pthread_mutex_t mu;
    sqlite3_int64 size;
    sqlite3_int64 valid;
    unsigned char **blk;         /* blk[i]: bytes [i*BLK, (i+1)*BLK) as written, or NULL */
    size_t nblk;
    size_t ndirty;
    struct node *next;
};

struct pc_file {
    sqlite3_file base;
    struct node *node;           /* NULL: a temp file, passed straight through */
    sqlite3_file *real;          /* the wrapped VFS's file, right after this struct */
};

static sqlite3_vfs *real_vfs;
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER; /* before any node's mu */
static struct node *registry;

/* ---- nodes ---- */

static struct node *node_find(const char *path)
{
    for (struct node *n = registry; n; n = n->next)
        if (strcmp(n->path, path) == 0)
            return n;
    return NULL;
}

static void node_unlink(struct node *n)
{
    for (struct node **p = &registry; *p; p = &(*p)->next)
        if (*p == n) {
            *p = n->next;
            break;
        }
    n->unlinked = true;
}

static void node_drop_blocks(struct node *n, size_t from)
{
    for (size_t i = from; i < n->nblk; i++)
        if (n->blk[i]) {
            free(n->blk[i]);
            n->blk[i] = NULL;
            n->ndirty--;
        }
}

static void node_free(struct node *n)
{
    node_drop_blocks(n, 0);
    free(n->blk);
    free(n->path);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

/* The node of path, created from the real file's size on first open. NULL: out of memory. */
static struct node *node_open(const char *path, sqlite3_file *real)
{
    pthread_mutex_lock(&reg_mu);
    struct node *n = node_find(path);
    if (n == NULL && (n = calloc(1, sizeof(*n))) != NULL) {
        sqlite3_int64 size = 0;
        real->pMethods->xFileSize(real, &size);
        n->path = strdup(path);
        if (n->path == NULL) {
            free(n);
            n = NULL;
        } else {
            n->size = n->valid = size;
            pthread_mutex_init(&n->mu, NULL);
            n->next = registry;
            registry = n;
        }
    }
    if (n)
        n->refs++;
    pthread_mutex_unlock(&reg_mu);
    return n;
}

/* A node nobody has open is freed once it holds nothing unsynced (or its file is gone). */
static void node_close(struct node *n)
{
    pthread_mutex_lock(&reg_mu);
    pthread_mutex_lock(&n->mu);
    bool clean = n->ndirty == 0 && n->valid == n->size;
    pthread_mutex_unlock(&n->mu);
    bool gone = --n->refs == 0 && (clean || n->unlinked);
    if (gone && !n->unlinked)
        node_unlink(n);
    pthread_mutex_unlock(&reg_mu);
    if (gone)
        node_free(n);
}

/* ---- the overlay (callers hold n->mu) ---- */

/* Reads from the real file, where a short read is no error: the rest is zeros. */
static int real_read(sqlite3_file *real, void *buf, int len, sqlite3_int64 off)
{
    int rc = real->pMethods->xRead(real, buf, len, off);
    return rc == SQLITE_IOERR_SHORT_READ ? SQLITE_OK : rc;
}

/* The bytes of [off, off+len) that no block holds: from the real file below valid, else 0. */
static int read_below(struct node *n, sqlite3_file *real, unsigned char *buf, int len,
                      sqlite3_int64 off)
{
    memset(buf, 0, (size_t)len);
    if (off >= n->valid)
        return SQLITE_OK;
    sqlite3_int64 take = n->valid - off < len ? n->valid - off : len;
    return real_read(real, buf, (int)take, off);
}

/* Block i, created from what the file holds there now when create is set. */
static int block_get(struct node *n, sqlite3_file *real, size_t i, unsigned char **ret)
{
    if (i >= n->nblk) {
        size_t cap = n->nblk ? n->nblk : 64;
        while (cap <= i)
            cap *= 2;
        unsigned char **b = realloc(n->blk, cap * sizeof(*b));
        if (b == NULL)
            return SQLITE_NOMEM;
        memset(b + n->nblk, 0, (cap - n->nblk) * sizeof(*b));
        n->blk = b;
        n->nblk = cap;
    }
    if (n->blk[i] == NULL) {
        unsigned char *b = malloc(BLK);
        if (b == NULL)
            return SQLITE_NOMEM;
        int rc = read_below(n, real, b, BLK, (sqlite3_int64)i * BLK);
        if (rc != SQLITE_OK) {
            free(b);
            return rc;
        }
        n->blk[i] = b;
        n->ndirty++;
    }
    *ret = n->blk[i];
    return SQLITE_OK;
}

static int overlay_read(struct node *n, sqlite3_file *real, unsigned char *buf, int len,
                        sqlite3_int64 off)
{
    sqlite3_int64 end = off + len, avail = end < n->size ? end : n->size;
    if (avail < end)
        memset(buf, 0, (size_t)len);
    for (sqlite3_int64 at = off; at < avail;) {
        size_t i = (size_t)(at / BLK);
        sqlite3_int64 stop = ((sqlite3_int64)i + 1) * BLK < avail ? ((sqlite3_int64)i + 1) * BLK : avail;
        int piece = (int)(stop - at);
        if (i < n->nblk && n->blk[i]) {
            memcpy(buf + (at - off), n->blk[i] + (at % BLK), (size_t)piece);
        } else {
            int rc = read_below(n, real, buf + (at - off), piece, at);
            if (rc != SQLITE_OK)
                return rc;
        }
        at = stop;
    }
    return avail < end ? SQLITE_IOERR_SHORT_READ : SQLITE_OK;
}

static int overlay_write(struct node *n, sqlite3_file *real, const unsigned char *buf, int len,
                         sqlite3_int64 off)
{
    for (sqlite3_int64 at = off, end = off + len; at < end;) {
        size_t i = (size_t)(at / BLK);
        sqlite3_int64 stop = ((sqlite3_int64)i + 1) * BLK < end ? ((sqlite3_int64)i + 1) * BLK : end;
        unsigned char *b;
        int rc = block_get(n, real, i, &b);
        if (rc != SQLITE_OK)
            return rc;
        memcpy(b + (at % BLK), buf + (at - off), (size_t)(stop - at));
        at = stop;
    }
    if (off + len > n->size)
        n->size = off + len;
    return SQLITE_OK;
}

static void overlay_truncate(struct node *n, sqlite3_int64 size)
{
    if (size < n->size) {
        size_t first = (size_t)((size + BLK - 1) / BLK); /* the first block wholly past size */
        node_drop_blocks(n, first);
        if (size % BLK && first - 1 < n->nblk && n->blk[first - 1])
            memset(n->blk[first - 1] + size % BLK, 0, (size_t)(BLK - size % BLK));
        if (size < n->valid)
            n->valid = size;
    }
    n->size = size;
}

/* What a sync makes durable: the truncation, every block, the size. */
static int overlay_flush(struct node *n, sqlite3_file *real)
{
    const sqlite3_io_methods *m = real->pMethods;
    sqlite3_int64 have = 0;
    int rc = m->xFileSize(real, &have);
    if (rc == SQLITE_OK && have > n->valid)
        rc = m->xTruncate(real, n->valid);
    for (size_t i = 0; rc == SQLITE_OK && n->ndirty && i < n->nblk; i++) {
        if (n->blk[i] == NULL)
            continue;
        sqlite3_int64 at = (sqlite3_int64)i * BLK;
        if (at < n->size)
            rc = m->xWrite(real, n->blk[i], (int)(n->size - at < BLK ? n->size - at : BLK), at);
        if (rc == SQLITE_OK) {
            free(n->blk[i]);
            n->blk[i] = NULL;
            n->ndirty--;
        }
    }
    if (rc == SQLITE_OK)
        rc = m->xFileSize(real, &have);
    if (rc == SQLITE_OK && have != n->size)
        rc = m->xTruncate(real, n->size);
    if (rc == SQLITE_OK)
        n->valid = n->size;
    return rc;
}

/* ---- io methods ---- */

#define REAL(f) (((struct pc_file *)(f))->real)
#define NODE(f) (((struct pc_file *)(f))->node)

static int pc_close(sqlite3_file *f)
{
    if (NODE(f))
        node_close(NODE(f));
    return REAL(f)->pMethods->xClose(REAL(f));
}

static int pc_read(sqlite3_file *f, void *buf, int len, sqlite3_int64 off)
{
    struct node *n = NODE(f);
    if (n == NULL)
        return REAL(f)->pMethods->xRead(REAL(f), buf, len, off);
    pthread_mutex_lock(&n->mu);
    int rc = overlay_read(n, REAL(f), buf, len, off);
    pthread_mutex_unlock(&n->mu);
    return rc;
}

static int pc_write(sqlite3_file *f, const void *buf, int len, sqlite3_int64 off)
{
    struct node *n = NODE(f);
    if (n == NULL)
        return REAL(f)->pMethods->xWrite(REAL(f), buf, len, off);
    pthread_mutex_lock(&n->mu);
    int rc = overlay_write(n, REAL(f), buf, len, off);
    pthread_mutex_unlock(&n->mu);
    return rc;
}

static int pc_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    struct node *n = NODE(f);
    if (n == NULL)
        return REAL(f)->pMethods->xTruncate(REAL(f), size);
    pthread_mutex_lock(&n->mu);
    overlay_truncate(n, size);
    pthread_mutex_unlock(&n->mu);
    return SQLITE_OK;
}

static int pc_sync(sqlite3_file *f, int flags)
{
    struct node *n = NODE(f);
    int rc = SQLITE_OK;
    if (n) {
        pthread_mutex_lock(&n->mu);
        rc = overlay_flush(n, REAL(f));
        pthread_mutex_unlock(&n->mu);
    }
    return rc == SQLITE_OK ? REAL(f)->pMethods->xSync(REAL(f), flags) : rc;
}

static int pc_file_size(sqlite3_file *f, sqlite3_int64 *ret_size)
{
    struct node *n = NODE(f);
    if (n == NULL)
        return REAL(f)->pMethods->xFileSize(REAL(f), ret_size);
    pthread_mutex_lock(&n->mu);
    *ret_size = n->size;
    pthread_mutex_unlock(&n->mu);
    return SQLITE_OK;
}

static int pc_lock(sqlite3_file *f, int lock)
{
    return REAL(f)->pMethods->xLock(REAL(f), lock);
}

static int pc_unlock(sqlite3_file *f, int lock)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), lock);
}

static int pc_check_reserved(sqlite3_file *f, int *ret)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), ret);
}

/* A size hint would let the real VFS grow the real file behind the overlay: ignored. */
static int pc_file_control(sqlite3_file *f, int op, void *arg)
{
    if (NODE(f) && op == SQLITE_FCNTL_SIZE_HINT)
        return SQLITE_OK;
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}

static int pc_sector_size(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}

/* Never atomic or sequential writes: those would let SQLite skip syncs a real disk needs. */
static int pc_device_characteristics(sqlite3_file *f)
{
    int c = REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
    return NODE(f) ? c & SQLITE_IOCAP_POWERSAFE_OVERWRITE : c;
}

static int pc_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), region, size, extend, pp);
}

static int pc_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}

static void pc_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}

static int pc_shm_unmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

static const sqlite3_io_methods pc_io = {
    2, pc_close, pc_read, pc_write, pc_truncate, pc_sync, pc_file_size, pc_lock, pc_unlock,
    pc_check_reserved, pc_file_control, pc_sector_size, pc_device_characteristics,
    pc_shm_map, pc_shm_lock, pc_shm_barrier, pc_shm_unmap, NULL, NULL,
};

/* ---- vfs methods ---- */

static int pc_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
                   int *ret_flags)
{
    (void)vfs;
    struct pc_file *p = (struct pc_file *)f;
    p->node = NULL;
    p->real = (sqlite3_file *)(p + 1);
    p->base.pMethods = NULL;
    int rc = real_vfs->xOpen(real_vfs, name, p->real, flags, ret_flags);
    if (rc != SQLITE_OK) {
        if (p->real->pMethods)
            p->real->pMethods->xClose(p->real);
        return rc;
    }
    const int data = SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL |
                     SQLITE_OPEN_SUPER_JOURNAL;
    if (name && (flags & data) && (p->node = node_open(name, p->real)) == NULL) {
        p->real->pMethods->xClose(p->real);
        return SQLITE_NOMEM;
    }
    p->base.pMethods = &pc_io;
    return SQLITE_OK;
}

/* Unlinking discards what was never synced; handles still open keep their view (POSIX). */
static int pc_delete(sqlite3_vfs *vfs, const char *path, int dir_sync)
{
    (void)vfs;
    pthread_mutex_lock(&reg_mu);
    struct node *n = node_find(path), *dead = NULL;
    if (n) {
        node_unlink(n);
        if (n->refs == 0)
            dead = n;
    }
    pthread_mutex_unlock(&reg_mu);
    if (dead)
        node_free(dead);
    return real_vfs->xDelete(real_vfs, path, dir_sync);
}

/* The unix VFS calls an empty file absent; so must a file whose content is only in memory. */
static int pc_access(sqlite3_vfs *vfs, const char *path, int flags, int *ret)
{
    (void)vfs;
    if (flags == SQLITE_ACCESS_EXISTS) {
        pthread_mutex_lock(&reg_mu);
        struct node *n = node_find(path);
        if (n) {
            pthread_mutex_lock(&n->mu);
            *ret = n->size > 0;
            pthread_mutex_unlock(&n->mu);
        }
        pthread_mutex_unlock(&reg_mu);
        if (n)
            return SQLITE_OK;
    }
    return real_vfs->xAccess(real_vfs, path, flags, ret);
}

static int pc_full_pathname(sqlite3_vfs *vfs, const char *path, int len, char *out)
{
    (void)vfs;
    return real_vfs->xFullPathname(real_vfs, path, len, out);
}

static void *pc_dl_open(sqlite3_vfs *vfs, const char *path)
{
    (void)vfs;
    return real_vfs->xDlOpen(real_vfs, path);
}

static void pc_dl_error(sqlite3_vfs *vfs, int len, char *msg)
{
    (void)vfs;
    real_vfs->xDlError(real_vfs, len, msg);
}

static void (*pc_dl_sym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
    (void)vfs;
    return real_vfs->xDlSym(real_vfs, h, sym);
}

static void pc_dl_close(sqlite3_vfs *vfs, void *h)
{
    (void)vfs;
    real_vfs->xDlClose(real_vfs, h);
}

static int pc_randomness(sqlite3_vfs *vfs, int len, char *out)
{
    (void)vfs;
    return real_vfs->xRandomness(real_vfs, len, out);
}

static int pc_sleep(sqlite3_vfs *vfs, int us)
{
    (void)vfs;
    return real_vfs->xSleep(real_vfs, us);
}

static int pc_current_time(sqlite3_vfs *vfs, double *out)
{
    (void)vfs;
    return real_vfs->xCurrentTime(real_vfs, out);
}

static int pc_last_error(sqlite3_vfs *vfs, int len, char *out)
{
    (void)vfs;
    return real_vfs->xGetLastError(real_vfs, len, out);
}

static int pc_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void)vfs;
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

static sqlite3_vfs pc_vfs = {
    2, 0, 0, NULL, "powercut", NULL, pc_open, pc_delete, pc_access, pc_full_pathname,
    pc_dl_open, pc_dl_error, pc_dl_sym, pc_dl_close, pc_randomness, pc_sleep, pc_current_time,
    pc_last_error, pc_current_time64, NULL, NULL, NULL,
};

/* ---- process exit ---- */

/* A clean exit: the kernel would write the dirty pages back later, so write them now. */
static void flush_node_posix(struct node *n)
{
    int fd = open(n->path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t have = lseek(fd, 0, SEEK_END);
    if (have > n->valid && ftruncate(fd, n->valid) != 0)
        log_msg(LOG_ERROR, "powercut VFS: truncating %s at exit failed", n->path);
    for (size_t i = 0; i < n->nblk; i++) {
        sqlite3_int64 at = (sqlite3_int64)i * BLK;
        if (n->blk[i] && at < n->size) {
            size_t len = (size_t)(n->size - at < BLK ? n->size - at : BLK);
            if (pwrite(fd, n->blk[i], len, at) != (ssize_t)len)
                log_msg(LOG_ERROR, "powercut VFS: writing %s at exit failed", n->path);
        }
    }
    if (lseek(fd, 0, SEEK_END) != n->size && ftruncate(fd, n->size) != 0)
        log_msg(LOG_ERROR, "powercut VFS: sizing %s at exit failed", n->path);
    close(fd);
}

static void flush_all_at_exit(void)
{
    pthread_mutex_lock(&reg_mu);
    for (struct node *n = registry; n; n = n->next) {
        pthread_mutex_lock(&n->mu);
        if (n->ndirty || n->valid != n->size)
            flush_node_posix(n);
        pthread_mutex_unlock(&n->mu);
    }
    pthread_mutex_unlock(&reg_mu);
}

/* ---- install ---- */

static int install_result;

static void install_once(void)
{
    const char *v = getenv("TESSERA_TEST_VFS");
    if (v == NULL || v[0] == '\0')
        return;
    if (strcmp(v, "powercut") != 0) {
        log_msg(LOG_ERROR, "TESSERA_TEST_VFS=%s: unknown test VFS (this build has: powercut)", v);
        install_result = -EINVAL;
        return;
    }
    real_vfs = sqlite3_vfs_find(NULL);
    if (real_vfs == NULL) {
        install_result = -ENOENT;
        return;
    }
    pc_vfs.szOsFile = (int)sizeof(struct pc_file) + real_vfs->szOsFile;
    pc_vfs.mxPathname = real_vfs->mxPathname;
    if (sqlite3_vfs_register(&pc_vfs, 1) != SQLITE_OK) {
        install_result = -EIO;
        return;
    }
    atexit(flush_all_at_exit);
    log_msg(LOG_WARN, "TESSERA_TEST_VFS=powercut: a testing aid, never for production; SQLite "
                      "writes stay in memory until synced, so a kill acts as a power cut");
}

int vfs_powercut_install(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_once);
    return install_result;
}
