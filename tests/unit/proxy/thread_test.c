/*
 * thread_test.c - loader threads at idle priority and the watchdog that
 * raises a starved one (thread.h). Reads each thread's real scheduling
 * policy and nice value back from the kernel. As root (CI) the process may
 * leave SCHED_IDLE, so the watchdog path runs; without the privilege the
 * fallback (nice 10, no watchdog) is what is checked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "thread.h"

struct tloader {
    pthread_t th;
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    pid_t tid;
    struct bg_thread *bt;
    int spin_ms;        /* the job burns this much CPU before it waits */
    uint64_t job_began; /* thread_now_ms() right after thread_job_begin() */
    int stage; /* 0 starting, 1 registered, 2 busy, 3 go: end the job, 4 job ended, 5 go: exit */
};

static void wait_stage(struct tloader *l, int stage)
{
    pthread_mutex_lock(&l->mtx);
    while (l->stage < stage)
        pthread_cond_wait(&l->cond, &l->mtx);
    pthread_mutex_unlock(&l->mtx);
}

static void set_stage(struct tloader *l, int stage)
{
    pthread_mutex_lock(&l->mtx);
    l->stage = stage;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mtx);
}

static void *tl_main(void *arg)
{
    struct tloader *l = arg;

    l->tid = (pid_t)syscall(SYS_gettid);
    l->bt = thread_background("test loader");
    set_stage(l, 1);
    wait_stage(l, 2);
    thread_job_begin(l->bt);
    l->job_began = thread_now_ms();
    if (l->spin_ms > 0) {
        struct timespec a, b;

        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
        do
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        while ((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 < l->spin_ms);
    }
    set_stage(l, 3);
    wait_stage(l, 4);
    thread_job_end(l->bt);
    set_stage(l, 5);
    wait_stage(l, 6);
    thread_background_end(l->bt);
    return NULL;
}

static void tl_start(struct tloader *l)
{
    l->stage = 0;
    l->spin_ms = 0;
    pthread_mutex_init(&l->mtx, NULL);
    pthread_cond_init(&l->cond, NULL);
    assert_int_equal(pthread_create(&l->th, NULL, tl_main, l), 0);
    wait_stage(l, 1);
}

static void tl_finish(struct tloader *l)
{
    set_stage(l, 6);
    pthread_join(l->th, NULL);
    pthread_mutex_destroy(&l->mtx);
    pthread_cond_destroy(&l->cond);
}

/* The thread starts its job (thread_job_begin) and reports back. */
static void tl_begin_job(struct tloader *l)
{
    set_stage(l, 2);
    wait_stage(l, 3);
}

/* The thread ends its job (thread_job_end) and reports back. */
static void tl_end_job(struct tloader *l)
{
    set_stage(l, 4);
    wait_stage(l, 5);
}

/* One job from start to end, then the thread exits. */
static void tl_one_job(struct tloader *l)
{
    tl_begin_job(l);
    tl_end_job(l);
    tl_finish(l);
}

static int nice_of(pid_t tid)
{
    errno = 0;
    return getpriority(PRIO_PROCESS, (id_t)tid);
}

static void test_watchdog_raises_a_starved_job(void **state)
{
    struct tloader l;
    uint64_t t0;

    (void)state;
    tl_start(&l);
    /* Whatever the privilege: below the workers, never above. */
    assert_int_equal(nice_of(l.tid), 10);
    if (!thread_idle_permitted()) {
        fprintf(stderr, "[thread] SCHED_IDLE not permitted here: checking the nice 10 fallback\n");
        assert_null(l.bt);
        assert_int_equal(sched_getscheduler(l.tid), SCHED_OTHER);
        tl_begin_job(&l);
        assert_int_equal(thread_watchdog(thread_now_ms() + 60000), 0);
        assert_int_equal(sched_getscheduler(l.tid), SCHED_OTHER);
        tl_end_job(&l);
        tl_finish(&l);
        return;
    }
    assert_non_null(l.bt);
    assert_int_equal(sched_getscheduler(l.tid), SCHED_IDLE);

    /* Between jobs: never raised, however long it waits. */
    assert_int_equal(thread_watchdog(thread_now_ms() + 60000), 0);
    assert_int_equal(sched_getscheduler(l.tid), SCHED_IDLE);

    tl_begin_job(&l);
    t0 = thread_now_ms();
    /* A job younger than THREAD_STARVE_MS stays idle. */
    assert_int_equal(thread_watchdog(t0), 0);
    assert_int_equal(thread_watchdog(t0 + THREAD_STARVE_MS / 2), 0);
    assert_int_equal(sched_getscheduler(l.tid), SCHED_IDLE);
    /* Older: raised to SCHED_OTHER, keeping nice 10; once. */
    assert_int_equal(thread_watchdog(t0 + THREAD_STARVE_MS + 100), 1);
    assert_int_equal(sched_getscheduler(l.tid), SCHED_OTHER);
    assert_int_equal(nice_of(l.tid), 10);
    assert_int_equal(thread_watchdog(t0 + 10 * THREAD_STARVE_MS), 0);

    /* The job ends: back to idle for the next one. */
    tl_end_job(&l);
    assert_int_equal(sched_getscheduler(l.tid), SCHED_IDLE);
    assert_int_equal(nice_of(l.tid), 10);
    assert_int_equal(thread_watchdog(thread_now_ms() + 60000), 0);
    tl_finish(&l);
}

/* A job that gets the CPU it wants is not raised, however long it takes. */
static void test_watchdog_leaves_a_running_job(void **state)
{
    struct tloader l;

    (void)state;
    tl_start(&l);
    if (!thread_idle_permitted()) {
        assert_null(l.bt);
        tl_one_job(&l);
        return;
    }
    l.spin_ms = 150;
    tl_begin_job(&l);
    /* 150 ms of CPU in a job 260 ms old: more than half a core. */
    assert_int_equal(thread_watchdog(l.job_began + THREAD_STARVE_MS + 60), 0);
    assert_int_equal(sched_getscheduler(l.tid), SCHED_IDLE);
    /* The same 150 ms in a job 1 s old: starved, raised. */
    assert_int_equal(thread_watchdog(l.job_began + 1000), 1);
    assert_int_equal(sched_getscheduler(l.tid), SCHED_OTHER);
    tl_end_job(&l);
    assert_int_equal(sched_getscheduler(l.tid), SCHED_IDLE);
    tl_finish(&l);
}

/* Threads that stop free their slot: loaders restart with the config. */
static void test_slots_are_reused(void **state)
{
    int i;

    (void)state;
    for (i = 0; i < 3 * THREAD_BG_MAX; i++) {
        struct tloader l;

        tl_start(&l);
        if (thread_idle_permitted())
            assert_non_null(l.bt);
        else
            assert_null(l.bt);
        tl_one_job(&l);
    }
}

/* Beyond THREAD_BG_MAX at once: the extra thread runs at nice 10, unwatched. */
static void test_table_full(void **state)
{
    struct tloader l[THREAD_BG_MAX + 1];
    int i;

    (void)state;
    for (i = 0; i <= THREAD_BG_MAX; i++)
        tl_start(&l[i]);
    for (i = 0; i < THREAD_BG_MAX; i++) {
        if (thread_idle_permitted()) {
            assert_non_null(l[i].bt);
            assert_int_equal(sched_getscheduler(l[i].tid), SCHED_IDLE);
        } else {
            assert_null(l[i].bt);
        }
    }
    assert_null(l[THREAD_BG_MAX].bt);
    assert_int_equal(sched_getscheduler(l[THREAD_BG_MAX].tid), SCHED_OTHER);
    assert_int_equal(nice_of(l[THREAD_BG_MAX].tid), 10);
    for (i = 0; i <= THREAD_BG_MAX; i++) {
        tl_one_job(&l[i]);
    }
}

/* ---- loaders ------------------------------------------------------------ */

struct tjob {
    struct loader_job lj; /* first */
    int id;
};

static pthread_mutex_t q_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static int q_order[16], q_ran, q_dropped[16], q_ndropped, q_hold, q_holding, q_policy;
static pid_t q_tid;

static void q_run(struct loader_job *lj)
{
    struct tjob *j = (struct tjob *)lj;

    pthread_mutex_lock(&q_mtx);
    q_tid = (pid_t)syscall(SYS_gettid);
    q_policy = sched_getscheduler(0);
    q_order[q_ran++] = j->id;
    q_holding = 1;
    pthread_cond_broadcast(&q_cond);
    while (q_hold)
        pthread_cond_wait(&q_cond, &q_mtx);
    q_holding = 0;
    pthread_mutex_unlock(&q_mtx);
    free(j); /* run owns the job */
}

static void q_drop(struct loader_job *lj)
{
    struct tjob *j = (struct tjob *)lj;

    q_dropped[q_ndropped++] = j->id;
    free(j);
}

static void q_post(struct loader *l, int id)
{
    struct tjob *j = calloc(1, sizeof(*j));

    assert_non_null(j);
    j->id = id;
    loader_post(l, &j->lj);
}

static void q_wait_ran(int n)
{
    pthread_mutex_lock(&q_mtx);
    while (q_ran < n || (q_hold && !q_holding))
        pthread_cond_wait(&q_cond, &q_mtx);
    pthread_mutex_unlock(&q_mtx);
}

static void q_release(void)
{
    pthread_mutex_lock(&q_mtx);
    q_hold = 0;
    pthread_cond_broadcast(&q_cond);
    pthread_mutex_unlock(&q_mtx);
}

/* A loader with jobs 1..n posted; returns once job 1 runs (and holds). */
static struct loader *q_start_held(int n)
{
    struct loader *l;
    int i;

    q_ran = q_ndropped = 0;
    q_hold = 1;
    l = loader_start("test queue", q_run, q_drop);
    assert_non_null(l);
    for (i = 1; i <= n; i++)
        q_post(l, i);
    q_wait_ran(1);
    assert_int_equal(q_order[0], 1);
    return l;
}

/* Jobs run one at a time, in order, at idle priority, watched while they run. */
static void test_loader_runs_in_order(void **state)
{
    struct loader *l;
    uint64_t t0;
    int i;

    (void)state;
    l = q_start_held(5);
    assert_int_equal(q_policy, thread_idle_permitted() ? SCHED_IDLE : SCHED_OTHER);
    assert_int_equal(nice_of(q_tid), 10);
    t0 = thread_now_ms();
    if (thread_idle_permitted()) {
        /* The job is watched: held past THREAD_STARVE_MS it is raised. */
        assert_int_equal(thread_watchdog(t0 + THREAD_STARVE_MS + 500), 1);
        assert_int_equal(sched_getscheduler(q_tid), SCHED_OTHER);
    } else {
        assert_int_equal(thread_watchdog(t0 + THREAD_STARVE_MS + 500), 0);
    }
    q_release();
    q_wait_ran(5);
    for (i = 0; i < 5; i++)
        assert_int_equal(q_order[i], i + 1);
    /* Raised for job 1 only: job 2 started at idle priority again. */
    loader_stop(l);
    assert_int_equal(q_ndropped, 0);
    assert_int_equal(q_ran, 5);
    if (thread_idle_permitted())
        assert_int_equal(q_policy, SCHED_IDLE);
}

static struct loader *stop_me;

static void *stopper(void *arg)
{
    (void)arg;
    loader_stop(stop_me);
    return NULL;
}

/* loader_stop() lets the running job finish and drops the rest, in order. */
static void test_loader_stop_drops_the_rest(void **state)
{
    pthread_t th;
    int i;

    (void)state;
    stop_me = q_start_held(4);
    assert_int_equal(pthread_create(&th, NULL, stopper, NULL), 0);
    /* loader_stop() sets its flag at once, then waits for job 1. */
    usleep(500 * 1000);
    q_release();
    pthread_join(th, NULL);
    assert_int_equal(q_ran, 1);
    assert_int_equal(q_order[0], 1);
    assert_int_equal(q_ndropped, 3);
    for (i = 0; i < 3; i++)
        assert_int_equal(q_dropped[i], i + 2);
    loader_stop(NULL); /* a no-op */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watchdog_raises_a_starved_job),
        cmocka_unit_test(test_watchdog_leaves_a_running_job),
        cmocka_unit_test(test_slots_are_reused),
        cmocka_unit_test(test_table_full),
        cmocka_unit_test(test_loader_runs_in_order),
        cmocka_unit_test(test_loader_stop_drops_the_rest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
