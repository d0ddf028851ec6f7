/*
 * thread.c - helpers for ztproxy's background threads.
 *
 * Loader threads run at SCHED_IDLE with a watchdog (thread.h). Measured
 * with bench/reload_bench.sh (everything reloaded every second under a
 * fixed keep-alive load): at nice 10 the reload phase's p99 reached 2.05x
 * the steady p99 - a woken worker waits behind a loader's burst even at
 * nice 10 - and at SCHED_IDLE 1.2-1.5x. SCHED_IDLE alone can starve a
 * loader for as long as anything else keeps the cores busy, hence the
 * watchdog.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "thread.h"

#define LOADER_NICE 10

struct bg_thread {
    const char *what; /* NULL: a free slot */
    pid_t tid;
    int idle;            /* runs at SCHED_IDLE between jobs */
    int promoted;        /* raised by the watchdog for the current job */
    uint64_t busy_since; /* ms; 0 when between jobs */
    clockid_t cpu_clock; /* the thread's CPU time, readable by the watchdog */
    uint64_t cpu_begin;  /* µs of it when the job began */
};

/* One lock for the table: jobs and watchdog ticks are rare. */
static pthread_mutex_t bg_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct bg_thread bg[THREAD_BG_MAX];
static int bg_n;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static int idle_ok;

static pid_t gettid_(void)
{
    return (pid_t)syscall(SYS_gettid);
}

static uint64_t cpu_us(clockid_t clk)
{
    struct timespec ts;

    if (clock_gettime(clk, &ts) == -1)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void thread_lower_priority(int nice_inc, const char *what)
{
    if (setpriority(PRIO_PROCESS, (id_t)gettid_(), nice_inc) == -1)
        log_warn("%s thread: cannot lower its priority", what);
}

uint64_t thread_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int set_policy(pid_t tid, int policy)
{
    struct sched_param sp;

    memset(&sp, 0, sizeof(sp));
    /* Keeps the thread's nice value (Linux). */
    return sched_setscheduler(tid, policy, &sp);
}

/*
 * Leaving SCHED_IDLE is a privilege (CAP_SYS_NICE or RLIMIT_NICE covering
 * the thread's nice value), and a thread that enters it without one can
 * never leave. So a throwaway thread tries the round trip first.
 */
static void *probe_main(void *arg)
{
    int *ok = arg;

    *ok = 0;
    if (setpriority(PRIO_PROCESS, (id_t)gettid_(), LOADER_NICE) == -1)
        return NULL;
    if (set_policy(0, SCHED_IDLE) == -1)
        return NULL;
    if (set_policy(0, SCHED_OTHER) == 0)
        *ok = 1;
    return NULL;
}

static void probe(void)
{
    pthread_t t;
    int ok = 0;

    if (pthread_create(&t, NULL, probe_main, &ok) == 0)
        pthread_join(t, NULL);
    idle_ok = ok;
    if (idle_ok)
        log_info("loader threads run at idle priority (SCHED_IDLE), raised to nice %d when "
                 "starved (over %d ms on one job with less than half a core)",
                 LOADER_NICE, THREAD_STARVE_MS);
    else
        log_info("loader threads run at nice %d: idle priority needs CAP_SYS_NICE or "
                 "RLIMIT_NICE allowing nice %d (systemd: LimitNICE=+%d)",
                 LOADER_NICE, LOADER_NICE, LOADER_NICE);
}

int thread_idle_permitted(void)
{
    pthread_once(&probe_once, probe);
    return idle_ok;
}

struct bg_thread *thread_background(const char *what)
{
    struct bg_thread *t;
    int i;

    thread_lower_priority(LOADER_NICE, what);
    if (!thread_idle_permitted())
        return NULL;
    pthread_mutex_lock(&bg_mtx);
    for (i = 0; i < bg_n && bg[i].what != NULL; i++)
        ;
    if (i == THREAD_BG_MAX) {
        pthread_mutex_unlock(&bg_mtx);
        log_warnx("%s thread: more than %d loader threads, it stays at nice %d", what,
                  THREAD_BG_MAX, LOADER_NICE);
        return NULL;
    }
    if (i == bg_n)
        bg_n++;
    t = &bg[i];
    t->what = what;
    t->tid = gettid_();
    if (pthread_getcpuclockid(pthread_self(), &t->cpu_clock) != 0)
        t->cpu_clock = CLOCK_THREAD_CPUTIME_ID; /* never seen; then only age counts */
    t->busy_since = 0;
    t->promoted = 0;
    t->idle = set_policy(0, SCHED_IDLE) == 0;
    if (!t->idle)
        log_warn("%s thread: cannot run at idle priority", what);
    pthread_mutex_unlock(&bg_mtx);
    return t;
}

void thread_background_end(struct bg_thread *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&bg_mtx);
    memset(t, 0, sizeof(*t));
    pthread_mutex_unlock(&bg_mtx);
}

void thread_job_begin(struct bg_thread *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&bg_mtx);
    t->busy_since = thread_now_ms();
    if (t->busy_since == 0)
        t->busy_since = 1;
    t->cpu_begin = cpu_us(CLOCK_THREAD_CPUTIME_ID);
    pthread_mutex_unlock(&bg_mtx);
}

void thread_job_end(struct bg_thread *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&bg_mtx);
    t->busy_since = 0;
    if (t->promoted) {
        t->promoted = 0;
        if (set_policy(0, SCHED_IDLE) == -1) { /* always permitted; never seen */
            t->idle = 0;
            log_warn("%s thread: cannot return to idle priority", t->what);
        }
    }
    pthread_mutex_unlock(&bg_mtx);
}

/*
 * Starved: on its job for more than THREAD_STARVE_MS and, over that time,
 * given less than half a core. A loader that gets the CPU it wants (the
 * usual case: the workers leave idle time) is never raised, however long
 * its job; one that waits behind busy workers (or any other process: every
 * normal thread beats SCHED_IDLE) is raised within a watchdog tick or two.
 */
int thread_watchdog(uint64_t now_ms)
{
    int i, raised = 0;

    pthread_mutex_lock(&bg_mtx);
    for (i = 0; i < bg_n; i++) {
        struct bg_thread *t = &bg[i];
        uint64_t busy = t->busy_since, age, used;

        if (t->what == NULL || !t->idle || t->promoted || busy == 0 || now_ms <= busy)
            continue;
        age = now_ms - busy;
        if (age <= THREAD_STARVE_MS)
            continue;
        used = t->cpu_clock == CLOCK_THREAD_CPUTIME_ID ? 0 : cpu_us(t->cpu_clock) - t->cpu_begin;
        if (used * 2 / 1000 >= age)
            continue; /* it runs: not starved */
        if (set_policy(t->tid, SCHED_OTHER) == 0) {
            t->promoted = 1;
            raised++;
            metrics_count(METRICS_LOADER_RAISED);
            log_info("%s thread: %llu ms on one job with %llu ms of CPU at idle priority, "
                     "raised to nice %d until it ends",
                     t->what, (unsigned long long)age, (unsigned long long)(used / 1000),
                     LOADER_NICE);
        } else {
            /* Not permitted after all (the limits changed): stop trying. */
            t->idle = 0;
            log_warn("%s thread: cannot raise it from idle priority", t->what);
        }
    }
    pthread_mutex_unlock(&bg_mtx);
    return raised;
}

/* ---- loaders ------------------------------------------------------------------ */

struct loader {
    pthread_t th;
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    struct loader_job *head, *tail;
    int stop;
    const char *what;
    void (*run)(struct loader_job *);
    void (*drop)(struct loader_job *);
};

static void *loader_main(void *arg)
{
    struct loader *l = arg;
    struct bg_thread *bt = thread_background(l->what);

    for (;;) {
        struct loader_job *j;

        pthread_mutex_lock(&l->mtx);
        while (l->head == NULL && !l->stop)
            pthread_cond_wait(&l->cond, &l->mtx);
        if (l->stop) {
            pthread_mutex_unlock(&l->mtx);
            break;
        }
        j = l->head;
        l->head = j->next;
        if (l->head == NULL)
            l->tail = NULL;
        pthread_mutex_unlock(&l->mtx);
        j->next = NULL;
        thread_job_begin(bt);
        l->run(j);
        thread_job_end(bt);
    }
    thread_background_end(bt);
    return NULL;
}

struct loader *loader_start(const char *what, void (*run)(struct loader_job *),
                            void (*drop)(struct loader_job *))
{
    struct loader *l = calloc(1, sizeof(*l));
    int rc;

    if (l == NULL)
        return NULL;
    l->what = what;
    l->run = run;
    l->drop = drop;
    pthread_mutex_init(&l->mtx, NULL);
    pthread_cond_init(&l->cond, NULL);
    if ((rc = pthread_create(&l->th, NULL, loader_main, l)) != 0) {
        pthread_mutex_destroy(&l->mtx);
        pthread_cond_destroy(&l->cond);
        free(l);
        errno = rc;
        return NULL;
    }
    return l;
}

void loader_post(struct loader *l, struct loader_job *j)
{
    pthread_mutex_lock(&l->mtx);
    j->next = NULL;
    if (l->tail != NULL)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->mtx);
}

void loader_stop(struct loader *l)
{
    struct loader_job *j;

    if (l == NULL)
        return;
    pthread_mutex_lock(&l->mtx);
    l->stop = 1;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->mtx);
    pthread_join(l->th, NULL);
    while ((j = l->head) != NULL) {
        l->head = j->next;
        if (l->drop != NULL)
            l->drop(j);
    }
    pthread_mutex_destroy(&l->mtx);
    pthread_cond_destroy(&l->cond);
    free(l);
}
