/*
 * log.h - diagnostic logging (stderr), in the style of OpenBSD's log.c.
 *
 * log_warn() appends strerror(errno); every function keeps errno intact and
 * checks the level before formatting. Never pass tokens, cookies,
 * Authorization values or keys: callers log identifiers, not secrets.
 * Non-printable bytes in the formatted line are escaped as \xNN.
 */
#ifndef ZT_LOG_H
#define ZT_LOG_H

#include <stdarg.h>

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO = 1, LOG_LEVEL_WARN = 2 };

void log_init(const char *progname);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
int log_level_parse(const char *s, enum log_level *out); /* 0 ok, -1 unknown */

void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Startup and impossible states only: log and exit(1). */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Log the OpenSSL error queue (and clear it) with a prefix, at warn level. */
void log_ssl_errors(const char *what);

/* An always-on invariant check: logs file:line and aborts. */
#define ZT_BUG_ON(cond)                                                                            \
    do {                                                                                           \
        if (cond)                                                                                  \
            fatalx("BUG at %s:%d: %s", __FILE__, __LINE__, #cond);                                 \
    } while (0)

#endif
