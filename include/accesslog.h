/*
 * accesslog.h - JSON-lines access log, written off the event loops.
 *
 * Workers append lines to their own buffer (no lock, no syscall) and hand
 * the buffer over every ~100 ms; one writer thread does the write(2)s.
 */
#ifndef ZT_ACCESSLOG_H
#define ZT_ACCESSLOG_H

#include <stddef.h>

struct evbuffer;

/* dest: a path (opened O_APPEND, created 0640), "stderr" or "off".
 * Starts the writer thread. 0 ok, -1 with errno. */
int accesslog_start(const char *dest);
/* Reopen the destination (after a reload or log rotation). */
int accesslog_reopen(const char *dest);
/* Is logging on? Workers skip formatting when it is off. */
int accesslog_enabled(void);
/* Move all bytes of buf into the writer's queue (buf is left empty). */
void accesslog_submit(struct evbuffer *buf);
/* Flush everything queued and stop the writer thread. */
void accesslog_stop(void);

/* Append s[0..len) to buf as the inside of a JSON string (escaped). */
void accesslog_json_escape(struct evbuffer *buf, const char *s, size_t len);

#endif
