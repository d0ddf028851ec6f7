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
 * thread_watchdog(), called by the main thread once a second, raises a
 * loader that has been on one job for more than THREAD_STARVE_MS at
 * SCHED_IDLE to SCHED_OTHER at nice 10 until that job ends: a saturated
 * machine delays a reload by a second, never forever.
 */
#define THREAD_BG_MAX 8
#define THREAD_STARVE_MS 1000

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
/* How many times thread_watchdog() raised a loader since start. */
uint64_t thread_promotions(void);

#endif
