/*
 * thread.c - helpers for ztproxy's background threads.
 */
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "thread.h"

void thread_lower_priority(int nice_inc, const char *what)
{
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice_inc) == -1)
        log_warn("%s thread: cannot lower its priority", what);
}
