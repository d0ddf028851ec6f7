/*
 * thread.h - helpers for ztproxy's background threads.
 */
#ifndef ZT_THREAD_H
#define ZT_THREAD_H

/*
 * Lower the calling thread's scheduling priority by nice_inc (Linux: a
 * thread's nice value is its own; the workers keep theirs). Background
 * work - loading files and feeds, reloads, writing logs - must not delay
 * requests when the cores are busy; it only gets less of a contended CPU,
 * never none. Logs a warning naming what when the kernel refuses.
 */
void thread_lower_priority(int nice_inc, const char *what);

#endif
