/*
 * thread.h - helpers for ztproxy's background threads.
 */
#ifndef ZT_THREAD_H
#define ZT_THREAD_H

#include <stdint.h>

/*
 * Lower the calling thread's scheduling priority by nice_inc (Linux: a
 * thread's nice value is its own; the workers keep theirs). For threads
 * whose work is small and steady (the log writers). Logs a warning naming
 * what when the kernel refuses.
 */
void thread_lower_priority(int nice_inc, const char *what);

/*
 * Loader threads: reloads, rules, directory, inventory, GeoIP. Their jobs
 * are bursts of CPU (parse, compile, index) that must not steal a core from
 * the workers while requests wait, yet must finish even when the workers
 * keep both cores busy.
 *
 * thread_background() is called by the loader thread itself when it
 * starts. It runs at SCHED_IDLE (it gets a core only when no worker wants
 * it) if the process may later raise it back to SCHED_OTHER - CAP_SYS_NICE,
 * or RLIMIT_NICE allowing nice 10 (systemd: LimitNICE=+10); else at nice 10
 * as a fallback (it then still takes ~10% of a contended core). Returns
 * NULL beyond THREAD_BG_MAX threads (the thread then runs at nice 10).
 *
 * The thread brackets each job with thread_job_begin() / thread_job_end().
 * thread_watchdog(), called by the main thread every THREAD_WATCH_MS,
 * raises a loader that has been on one job for more than THREAD_STARVE_MS
 * while getting less than half a core (its own CPU clock says so) to
 * SCHED_OTHER at nice 10 until that job ends: a loader behind busy workers,
 * or behind any other process (every normal thread beats SCHED_IDLE), is
 * delayed by a few tenths of a second, never indefinitely.
 */
#define THREAD_BG_MAX 8
#define THREAD_STARVE_MS 200
#define THREAD_WATCH_MS 100

struct bg_thread;

struct bg_thread *thread_background(const char *what);
/* By the thread, before it exits: frees its slot. */
void thread_background_end(struct bg_thread *t);
void thread_job_begin(struct bg_thread *t);
void thread_job_end(struct bg_thread *t);
/* now_ms on CLOCK_MONOTONIC (thread_now_ms()); returns how many it raised. */
int thread_watchdog(uint64_t now_ms);
uint64_t thread_now_ms(void);
/* 1 when loaders run at SCHED_IDLE, 0 when at nice 10 (not permitted). */
int thread_idle_permitted(void);

/*
 * A loader: one loader thread (thread_background) that runs the jobs posted
 * to it, one at a time, in order, each bracketed by thread_job_begin/end.
 * A job embeds struct loader_job (anywhere: run and drop get it back with
 * the usual container arithmetic, or it is the first member).
 *
 *   run(job)   on the loader thread; owns the job (frees it, or hands it
 *              back to a loop)
 *   drop(job)  on loader_stop()'s caller, for the jobs never started
 */
struct loader_job {
    struct loader_job *next;
};

struct loader;

/* NULL (errno set) when the thread cannot start. */
struct loader *loader_start(const char *what, void (*run)(struct loader_job *),
                            void (*drop)(struct loader_job *));
void loader_post(struct loader *l, struct loader_job *j);
/* Waits for the running job, drops the others, joins; NULL is a no-op. */
void loader_stop(struct loader *l);

#endif
