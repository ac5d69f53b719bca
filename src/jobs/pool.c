/* Worker pool: threads with read-only SQLite connections, a bounded FIFO, completions handed
 * to the loop through an eventfd it polls.
 *
 * Not uv_async: its receiving side spins (up to a thousand pause loops, then yields) while a
 * sender is between marking the handle pending and writing its eventfd. When the workers and
 * the loop share one CPU, that write wakes the loop, which preempts the worker mid-send and spins
 * on it: a tenth of the loop's time in the recs benchmark. Here a worker writes the eventfd only
 * when the done list was empty, after letting go of the lock. */
#include "jobs/pool.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/log.h"
#include "store/db.h"

struct pool {
    uv_loop_t *loop;
    int efd;                               /* written by workers when done goes non-empty */
    uv_poll_t poll;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pool_task *qhead, *qtail;       /* waiting */
    struct pool_task *dhead, *dtail;       /* done, for the loop */
    int queued, queue_max, running;
    uint64_t backlog_since_ns;             /* when the queue last went from empty to not; 0: empty */
    bool stopping;
    int nthreads, nice;
    pthread_t *threads;
    struct pool_worker *workers;
    struct pool_stats stats;
};

static void push(struct pool_task **head, struct pool_task **tail, struct pool_task *t)
{
    t->next = NULL;
    if (*tail)
        (*tail)->next = t;
    else
        *head = t;
    *tail = t;
}

static struct pool_task *pop(struct pool_task **head, struct pool_task **tail)
{
    struct pool_task *t = *head;
    if (t) {
        *head = t->next;
        if (*head == NULL)
            *tail = NULL;
    }
    return t;
}

struct worker_arg {
    struct pool *p;
    struct pool_worker *w;
};

/* Workers yield the CPU to the loop thread: a burst of argon2id or an aggregation must not
 * raise the latency of the point reads the loop serves (Linux applies nice per thread). */
static void worker_deprioritise(int nice)
{
    struct sched_param sp = {0};
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice) < 0)
        log_msg(LOG_DEBUG, "worker: cannot lower priority");
}

/* struct sched_attr of sched_setattr(2); glibc 2.36 declares neither. */
struct sched_attr_v1 {
    uint32_t size, sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
    uint32_t sched_util_min, sched_util_max;
};

/* The loop asks for short slices. Nice alone does not keep it from waiting: the EEVDF scheduler
 * (Linux 6.6+) lets a running task finish its slice before a waking one of any weight gets the
 * CPU, and the loop wakes thousands of times a second; when the pool shared its CPU, the loop
 * spent more time runnable-but-waiting than running (tools/check soak measures both). Since
 * Linux 6.12 a fair task's sched_runtime is its slice, and a task with a shorter slice preempts
 * at wakeup. Older kernels ignore the field, CFS already preempts by weight, and an error leaves
 * the default: nothing to do either way. */
void pool_prefer_loop_thread(void)
{
    struct sched_attr_v1 a = {.size = sizeof(a), .sched_policy = SCHED_OTHER,
                              .sched_runtime = 100 * 1000 /* ns: the kernel's smallest slice */};
    if (syscall(SYS_sched_setattr, 0, &a, 0) < 0)
        log_msg(LOG_DEBUG, "loop: cannot shorten its scheduler slice");
}

static void *worker_loop(void *arg)
{
    struct worker_arg wa = *(struct worker_arg *)arg;
    free(arg);
    struct pool *p = wa.p;
    worker_deprioritise(p->nice);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->qhead == NULL && !p->stopping)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->qhead == NULL && p->stopping)
            break;
        struct pool_task *t = pop(&p->qhead, &p->qtail);
        if (--p->queued == 0)
            p->backlog_since_ns = 0;
        p->running++;
        pthread_mutex_unlock(&p->mu);
        t->status = 0;
        t->work(t, wa.w);
        pthread_mutex_lock(&p->mu);
        p->running--;
        bool wake = p->dhead == NULL; /* else the loop has a wake-up coming for the list */
        push(&p->dhead, &p->dtail, t);
        pthread_mutex_unlock(&p->mu);
        if (wake) {
            uint64_t one = 1;
            while (write(p->efd, &one, sizeof one) < 0 && errno == EINTR)
                ;
        }
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void pool_drain_done(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    struct pool_task *list = p->dhead;
    p->dhead = p->dtail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list) {
        struct pool_task *t = list;
        list = t->next;
        p->stats.completed++;
        t->done(t, t->status);
    }
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    (void)status, (void)events;
    struct pool *p = h->data;
    uint64_t n;
    /* read before draining: a task pushed after the drain's swap writes again */
    while (read(p->efd, &n, sizeof n) < 0 && errno == EINTR)
        ;
    pool_drain_done(p);
}

int pool_new(uv_loop_t *loop, int nthreads, int queue_max, int nice, const char *db_path,
             struct pool **ret)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    p->loop = loop;
    p->queue_max = queue_max;
    p->nthreads = nthreads;
    p->nice = nice;
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0 || uv_poll_init(loop, &p->poll, p->efd) < 0) {
        int e = p->efd < 0 ? errno : EMFILE;
        if (p->efd >= 0)
            close(p->efd);
        free(p);
        return -e;
    }
    p->poll.data = p;
    uv_poll_start(&p->poll, UV_READABLE, poll_cb);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = calloc((size_t)nthreads, sizeof(*p->threads));
    p->workers = calloc((size_t)nthreads, sizeof(*p->workers));
    for (int i = 0; i < nthreads; i++) {
        p->workers[i].index = i;
        if (db_path && db_open_readonly(db_path, &p->workers[i].db) < 0)
            log_msg(LOG_ERROR, "worker %d: cannot open read-only database", i);
        struct worker_arg *wa = malloc(sizeof(*wa));
        wa->p = p;
        wa->w = &p->workers[i];
        pthread_create(&p->threads[i], NULL, worker_loop, wa);
    }
    *ret = p;
    return 0;
}

int pool_submit(struct pool *p, struct pool_task *t)
{
    pthread_mutex_lock(&p->mu);
    int r = 0;
    if (p->stopping)
        r = -ESHUTDOWN;
    else if (p->queued >= p->queue_max)
        r = -EAGAIN;
    if (r == 0) {
        t->queued_ns = clock_mono_ns();
        push(&p->qhead, &p->qtail, t);
        if (p->queued++ == 0)
            p->backlog_since_ns = t->queued_ns;
        p->stats.submitted++;
        pthread_cond_signal(&p->cv);
    } else {
        p->stats.rejected++;
    }
    pthread_mutex_unlock(&p->mu);
    return r;
}

struct pool_backlog pool_backlog(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t oldest = p->qhead ? p->qhead->queued_ns : 0, since = p->backlog_since_ns;
    pthread_mutex_unlock(&p->mu);
    uint64_t now = clock_mono_ns();
    return (struct pool_backlog){oldest && now > oldest ? now - oldest : 0,
                                 since && now > since ? now - since : 0};
}

void pool_stop(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->stopping = true;
    struct pool_task *cancel = p->qhead;
    p->qhead = p->qtail = NULL;
    p->queued = 0;
    p->backlog_since_ns = 0;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pool_drain_done(p);
    while (cancel) {
        struct pool_task *t = cancel;
        cancel = t->next;
        t->done(t, -ECANCELED);
    }
}

void pool_close_handles(struct pool *p)
{
    uv_poll_stop(&p->poll);
    uv_close((uv_handle_t *)&p->poll, NULL);
}

struct pool *pool_free(struct pool *p)
{
    if (p == NULL)
        return NULL;
    for (int i = 0; i < p->nthreads; i++)
        sqlite3_close(p->workers[i].db);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    if (p->efd >= 0)
        close(p->efd);
    free(p->threads);
    free(p->workers);
    free(p);
    return NULL;
}

struct pool_stats pool_stats(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    struct pool_stats s = p->stats;
    s.queued = p->queued;
    s.running = p->running;
    pthread_mutex_unlock(&p->mu);
    return s;
}

int pool_room(struct pool *p)
{
    pthread_mutex_lock(&p->mu);
    int room = p->queue_max - p->queued;
    pthread_mutex_unlock(&p->mu);
    return room > 0 ? room : 0;
}

int pool_size(const struct pool *p)
{
    return p->nthreads;
}
