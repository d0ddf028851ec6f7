/*
 * log.c - diagnostic logging to stderr.
 *
 * One write(2) per line so lines from worker threads do not interleave.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "log.h"

static const char *log_progname = "ztproxy";
static volatile int log_level = LOG_LEVEL_INFO;

void log_init(const char *progname)
{
    log_progname = progname;
}

void log_set_level(enum log_level level)
{
    log_level = level;
}

enum log_level log_get_level(void)
{
    return (enum log_level)log_level;
}

int log_level_parse(const char *s, enum log_level *out)
{
    if (strcmp(s, "debug") == 0)
        *out = LOG_LEVEL_DEBUG;
    else if (strcmp(s, "info") == 0)
        *out = LOG_LEVEL_INFO;
    else if (strcmp(s, "warn") == 0)
        *out = LOG_LEVEL_WARN;
    else
        return -1;
    return 0;
}

static void log_emit(const char *tag, const char *fmt, va_list ap, const char *suffix)
    __attribute__((format(printf, 2, 0)));

static void log_emit(const char *tag, const char *fmt, va_list ap, const char *suffix)
{
    char msg[1024], line[4200];
    struct timespec ts;
    struct tm tm;
    size_t n = 0, i;
    int len;

    len = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (len < 0)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    len = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s[%d] %s: ", ts.tv_nsec / 1000000,
                   log_progname, (int)getpid(), tag);
    if (len < 0)
        return;
    n += (size_t)len;
    /* Escape anything that is not printable ASCII: log lines carry
     * client-controlled strings (SNI, paths) and must stay one line. */
    for (i = 0; msg[i] != '\0' && n < sizeof(line) - 8; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            line[n++] = (char)c;
        } else {
            len = snprintf(line + n, sizeof(line) - n, "\\x%02x", c);
            n += (size_t)len;
        }
    }
    if (suffix != NULL) {
        len = snprintf(line + n, sizeof(line) - n, ": %s", suffix);
        if (len > 0)
            n += (size_t)len < sizeof(line) - n ? (size_t)len : sizeof(line) - n - 1;
    }
    if (n >= sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, n) == -1) {
        /* nowhere left to report it */
    }
}

#define LOG_BODY(level, tag, suffix)                                                               \
    do {                                                                                           \
        va_list ap;                                                                                \
        int saved = errno;                                                                         \
        if ((level) < log_level) {                                                                 \
            errno = saved;                                                                         \
            return;                                                                                \
        }                                                                                          \
        va_start(ap, fmt);                                                                         \
        log_emit(tag, fmt, ap, suffix);                                                            \
        va_end(ap);                                                                                \
        errno = saved;                                                                             \
    } while (0)

void log_warn(const char *fmt, ...)
{
    LOG_BODY(LOG_LEVEL_WARN, "warn", strerror(errno));
}

void log_warnx(const char *fmt, ...)
{
    LOG_BODY(LOG_LEVEL_WARN, "warn", NULL);
}

void log_info(const char *fmt, ...)
{
    LOG_BODY(LOG_LEVEL_INFO, "info", NULL);
}

void log_debug(const char *fmt, ...)
{
    LOG_BODY(LOG_LEVEL_DEBUG, "debug", NULL);
}

void fatal(const char *fmt, ...)
{
    va_list ap;
    const char *err = strerror(errno);

    va_start(ap, fmt);
    log_emit("fatal", fmt, ap, err);
    va_end(ap);
    exit(1);
}

void fatalx(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_emit("fatal", fmt, ap, NULL);
    va_end(ap);
    exit(1);
}

void log_ssl_errors(const char *what)
{
    unsigned long e;
    char buf[256];

    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        log_warnx("%s: %s", what, buf);
    }
}
