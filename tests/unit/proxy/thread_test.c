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
#include <unistd.h>

#include <cmocka.h>

#include "thread.h"

struct loader {
    pthread_t th;
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    pid_t tid;
    struct bg_thread *bt;
    int stage; /* 0 starting, 1 registered, 2 busy, 3 go: end the job, 4 job ended, 5 go: exit */
};

static void wait_stage(struct loader *l, int stage)
{
    pthread_mutex_lock(&l->mtx);
    while (l->stage < stage)
        pthread_cond_wait(&l->cond, &l->mtx);
    pthread_mutex_unlock(&l->mtx);
}

static void set_stage(struct loader *l, int stage)
{
    pthread_mutex_lock(&l->mtx);
    l->stage = stage;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mtx);
}

static void *loader_main(void *arg)
{
    struct loader *l = arg;

    l->tid = (pid_t)syscall(SYS_gettid);
    l->bt = thread_background("test loader");
    set_stage(l, 1);
    wait_stage(l, 2);
    thread_job_begin(l->bt);
    set_stage(l, 3);
    wait_stage(l, 4);
    thread_job_end(l->bt);
    set_stage(l, 5);
    wait_stage(l, 6);
    thread_background_end(l->bt);
    return NULL;
}

static void loader_start(struct loader *l)
{
    l->stage = 0;
    pthread_mutex_init(&l->mtx, NULL);
    pthread_cond_init(&l->cond, NULL);
    assert_int_equal(pthread_create(&l->th, NULL, loader_main, l), 0);
    wait_stage(l, 1);
}

static void loader_finish(struct loader *l)
{
    set_stage(l, 6);
    pthread_join(l->th, NULL);
    pthread_mutex_destroy(&l->mtx);
    pthread_cond_destroy(&l->cond);
}

static int nice_of(pid_t tid)
{
    errno = 0;
    return getpriority(PRIO_PROCESS, (id_t)tid);
}

static void test_watchdog_raises_a_starved_job(void **state)
{
    struct loader l;
    uint64_t t0, before = thread_promotions();

    (void)state;
    loader_start(&l);
    /* Whatever the privilege: below the workers, never above. */
    assert_int_equal(nice_of(l.tid), 10);
    if (!thread_idle_permitted()) {
        fprintf(stderr, "[thread] SCHED_IDLE not permitted here: checking the nice 10 fallback\n");
        assert_null(l.bt);
        assert_int_equal(sched_getscheduler(l.tid), SCHED_OTHER);
        set_stage(&l, 2);
        wait_stage(&l, 3);
        assert_int_equal(thread_watchdog(thread_now_ms() + 60000), 0);
        assert_int_equal(sched_getscheduler(l.tid), SCHED_OTHER);
        set_stage(&l, 4);
        wait_stage(&l, 5);
        loader_finish(&l);
        return;
    }
    assert_non_null(l.bt);
    assert_int_equal(sched_getscheduler(l.tid), SCHED_IDLE);

    /* Between jobs: never raised, however long it waits. */
    assert_int_equal(thread_watchdog(thread_now_ms() + 60000), 0);
    assert_int_equal(sched_getscheduler(l.tid), SCHED_IDLE);

    set_stage(&l, 2);
    wait_stage(&l, 3);
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
    assert_true(thread_promotions() == before + 1);

    /* The job ends: back to idle for the next one. */
    set_stage(&l, 4);
    wait_stage(&l, 5);
    assert_int_equal(sched_getscheduler(l.tid), SCHED_IDLE);
    assert_int_equal(nice_of(l.tid), 10);
    assert_int_equal(thread_watchdog(thread_now_ms() + 60000), 0);
    loader_finish(&l);
}

/* Threads that stop free their slot: loaders restart with the config. */
static void test_slots_are_reused(void **state)
{
    int i;

    (void)state;
    for (i = 0; i < 3 * THREAD_BG_MAX; i++) {
        struct loader l;

        loader_start(&l);
        if (thread_idle_permitted())
            assert_non_null(l.bt);
        else
            assert_null(l.bt);
        set_stage(&l, 2);
        wait_stage(&l, 3);
        set_stage(&l, 4);
        wait_stage(&l, 5);
        loader_finish(&l);
    }
}

/* Beyond THREAD_BG_MAX at once: the extra thread runs at nice 10, unwatched. */
static void test_table_full(void **state)
{
    struct loader l[THREAD_BG_MAX + 1];
    int i;

    (void)state;
    for (i = 0; i <= THREAD_BG_MAX; i++)
        loader_start(&l[i]);
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
        set_stage(&l[i], 2);
        wait_stage(&l[i], 3);
        set_stage(&l[i], 4);
        wait_stage(&l[i], 5);
        loader_finish(&l[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_watchdog_raises_a_starved_job),
        cmocka_unit_test(test_slots_are_reused),
        cmocka_unit_test(test_table_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
