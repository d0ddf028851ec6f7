/*
 * accesslog.c - the writer thread behind the access log.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "accesslog.h"
#include "log.h"
#include "thread.h"

static pthread_mutex_t al_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t al_cond = PTHREAD_COND_INITIALIZER;
static struct evbuffer *al_queue;
static pthread_t al_thread;
static int al_fd = -1;
static int al_running;
static int al_stop;
static volatile int al_enabled;

static int al_open(const char *dest)
{
    int fd;

    if (strcmp(dest, "off") == 0)
        return -2;
    if (strcmp(dest, "stderr") == 0)
        return dup(STDERR_FILENO);
    fd = open(dest, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    return fd;
}

static void *al_main(void *arg)
{
    struct evbuffer *local = evbuffer_new();
    int done = 0;

    (void)arg;
    thread_lower_priority(5, "access log writer"); /* as the audit log's */
    while (!done) {
        int fd;

        pthread_mutex_lock(&al_mtx);
        while (evbuffer_get_length(al_queue) == 0 && !al_stop)
            pthread_cond_wait(&al_cond, &al_mtx);
        evbuffer_add_buffer(local, al_queue);
        done = al_stop;
        fd = al_fd;
        pthread_mutex_unlock(&al_mtx);

        while (evbuffer_get_length(local) > 0) {
            int n = fd >= 0 ? evbuffer_write(local, fd) : -1;
            if (n <= 0) {
                if (n == -1 && errno == EINTR)
                    continue;
                if (fd >= 0)
                    log_warn("access log: write failed, %zu bytes dropped",
                             evbuffer_get_length(local));
                evbuffer_drain(local, evbuffer_get_length(local));
            }
        }
    }
    evbuffer_free(local);
    return NULL;
}

int accesslog_start(const char *dest)
{
    int fd = al_open(dest);

    if (fd == -1)
        return -1;
    al_queue = evbuffer_new();
    if (al_queue == NULL)
        return -1;
    al_fd = fd >= 0 ? fd : -1;
    al_enabled = fd >= 0;
    if (pthread_create(&al_thread, NULL, al_main, NULL) != 0)
        return -1;
    al_running = 1;
    return 0;
}

int accesslog_reopen(const char *dest)
{
    int fd = al_open(dest), old;

    if (fd == -1)
        return -1;
    pthread_mutex_lock(&al_mtx);
    old = al_fd;
    al_fd = fd >= 0 ? fd : -1;
    al_enabled = fd >= 0;
    pthread_mutex_unlock(&al_mtx);
    /* The writer may be mid-write on the old fd; it holds no reference
     * after it drops the lock, so closing here can only fail that write. */
    if (old >= 0)
        close(old);
    return 0;
}

int accesslog_enabled(void)
{
    return al_enabled;
}

void accesslog_submit(struct evbuffer *buf)
{
    if (evbuffer_get_length(buf) == 0 || !al_running)
        return;
    pthread_mutex_lock(&al_mtx);
    evbuffer_add_buffer(al_queue, buf);
    pthread_cond_signal(&al_cond);
    pthread_mutex_unlock(&al_mtx);
}

void accesslog_stop(void)
{
    if (!al_running)
        return;
    pthread_mutex_lock(&al_mtx);
    al_stop = 1;
    pthread_cond_signal(&al_cond);
    pthread_mutex_unlock(&al_mtx);
    pthread_join(al_thread, NULL);
    al_running = 0;
    if (al_fd >= 0)
        close(al_fd);
    al_fd = -1;
    evbuffer_free(al_queue);
    al_queue = NULL;
}

void accesslog_json_escape(struct evbuffer *buf, const char *s, size_t len)
{
    static const char hx[] = "0123456789abcdef";
    size_t i, start = 0;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            continue;
        if (i > start)
            evbuffer_add(buf, s + start, i - start);
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            evbuffer_add(buf, esc, 2);
        } else {
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hx[c >> 4];
            esc[5] = hx[c & 15];
            evbuffer_add(buf, esc, 6);
        }
        start = i + 1;
    }
    if (len > start)
        evbuffer_add(buf, s + start, len - start);
}
