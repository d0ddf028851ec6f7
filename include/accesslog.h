/*
 * accesslog.h - JSON-lines access log, written off the event loops.
 *
 * Workers do not format anything: accesslog_append() copies a request's
 * data into a compact binary record (numbers, then the raw strings, whose
 * lengths come first; no escaping, no JSON, no time text) in a buffer of
 * their own (no lock, no syscall), and accesslog_submit() hands the buffer
 * over every ~100 ms. One writer thread formats each record into its JSON
 * line (accesslog_format() is the same formatter) and does the write(2)s:
 *
 *   {"ts":"2026-11-28T10:31:33.036Z","request_id":"...","worker":1,
 *    "client":"127.0.0.1:53572","device":"laptop1","tls_resumed":false,
 *    "route":"app","method":"GET","host":"app.test","path":"/","status":200,
 *    "upstream_status":200,"bytes_in":0,"bytes_out":417,"duration_us":2417}
 *
 * ("error":"..." last when there is one), one line, in this member order.
 * Every string is escaped the same way: '"' and '\\' with a backslash, any
 * other byte below 0x20 or from 0x7f up as \u00XX (one per byte: bytes are
 * not decoded as UTF-8). A record is internal to the process, yet the
 * writer checks every length and field in it: a malformed or truncated one
 * is counted, logged and skipped, never half-written.
 *
 * Module state is global: one access log per process.
 */
#ifndef ZT_ACCESSLOG_H
#define ZT_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct evbuffer;

/*
 * The most bytes of each string a record keeps (longer ones are cut there).
 * They are the sizes of what the proxy holds for a request, so nothing it
 * logs is ever cut: a request id (32 hex digits), "ip:port" (struct conn's
 * client[64]), a device id (DEVICE_ID_MAX), a route name (conf: at most
 * 64), the method and Host as the proxy keeps them (already cut at 23 and
 * 255 bytes when the head is read), the proxy's own error texts, and a path
 * (no longer than the longest request line the configuration allows,
 * limits.request_line <= 1 MiB).
 */
#define ACCESSLOG_REQID_MAX 32
#define ACCESSLOG_CLIENT_MAX 63
#define ACCESSLOG_DEVICE_MAX 128
#define ACCESSLOG_ROUTE_MAX 64
#define ACCESSLOG_METHOD_MAX 23
#define ACCESSLOG_HOST_MAX 255
#define ACCESSLOG_ERROR_MAX 1024
#define ACCESSLOG_PATH_MAX (1024 * 1024)
#define ACCESSLOG_QUEUE_MAX (64u * 1024 * 1024) /* record bytes waiting for the writer */

/* One finished request (or exchange). Strings are NUL-terminated unless a
 * length is given; NULL is written as "" (error: NULL leaves "error" out). */
struct accesslog_entry {
    struct timespec ts;   /* CLOCK_REALTIME: "ts", to the millisecond */
    uint64_t duration_us; /* "duration_us" */
    uint64_t bytes_in;
    uint64_t bytes_out;
    int worker;
    int status;
    int upstream_status; /* 0: no response from the upstream */
    int tls_resumed;
    const char *request_id;
    const char *client;
    const char *device; /* NULL: no verified device */
    const char *route;  /* NULL: no route matched */
    const char *method;
    const char *host;
    const char *path; /* path_len bytes, may hold NULs; NULL: none */
    size_t path_len;
    const char *error; /* why the request failed, or NULL */
};

/* dest: a path (opened O_APPEND, created 0640), "stderr" or "off".
 * Starts the writer thread (again after accesslog_stop()). 0 ok, -1 with
 * errno. */
int accesslog_start(const char *dest);
/* Reopen the destination (after a reload or log rotation): what was queued
 * before still goes to the old one; the writer closes it. */
int accesslog_reopen(const char *dest);
/* Is logging on? Workers skip building records when it is off. */
int accesslog_enabled(void);

/*
 * Append one record for e to buf (a worker's own buffer): e's data copied,
 * nothing formatted; e and what it points to may change or go away on
 * return. Each string is cut at its ACCESSLOG_*_MAX. The path of the
 * proxy's own endpoints ("/.zt/...") is cut at its '?' here: their query
 * holds secrets (the OpenID callback's code and state), which so never
 * enter the queue. Memory only as buf grows; no lock, no syscall.
 */
void accesslog_append(struct evbuffer *buf, const struct accesslog_entry *e);

/* Move all bytes of buf (whole records from accesslog_append()) into the
 * writer's queue (buf is left empty). */
void accesslog_submit(struct evbuffer *buf);

/*
 * Format the records in records (all of it is drained) into lines appended
 * to lines: each exactly the line the writer writes, "{"ts":...}\n".
 * Returns the number of lines; adds the malformed or truncated records
 * (and runs of bytes that are no record) to *bad if not NULL. Any thread;
 * no shared state. The writer uses the same code; tests and the fuzzer use
 * this.
 */
size_t accesslog_format(struct evbuffer *records, struct evbuffer *lines, uint64_t *bad);

/* Records found malformed by the writer since the start (never expected). */
uint64_t accesslog_bad_records(void);

/* Format and write everything queued and stop the writer thread. */
void accesslog_stop(void);

/* Records lost since the start: the queue was full (more than
 * ACCESSLOG_QUEUE_MAX bytes waiting) or the write failed. Also in the
 * metrics (ztproxy_log_records_dropped_total{log="access"}). */
uint64_t accesslog_dropped(void);

#endif
