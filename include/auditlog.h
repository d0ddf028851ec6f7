/*
 * auditlog.h - the tamper-evident audit log: one JSON line per decision.
 *
 * Workers do not format anything: auditlog_append() copies a decision's data
 * into a compact binary record (numbers, then length-prefixed raw strings;
 * no escaping, no JSON) in a buffer of their own (no lock, no syscall), and
 * auditlog_submit() hands the buffer over. One writer thread formats each
 * record into its JSON line (auditlog_format() is the same formatter),
 * chains and writes it. A record is internal to the process, yet the writer
 * checks every length and count in it: a malformed or truncated one is
 * counted as dropped and skipped, never half-written or chained. The chain
 * is the writer's: every line it writes starts with two members it inserts,
 *
 *   {"prev":"<P>","hash":"<H>","time":"2026-05-20T10:12:13.456Z",...}
 *
 *   H = hex SHA-256 of the line as written without its "hash" member and
 *       without the newline, i.e. of {"prev":"<P>","time":...}
 *   P = H of the line before it in the same file; the first line of a new
 *       (empty) file has P = AUDITLOG_GENESIS. Opening an existing file
 *       continues its chain from its last line.
 *
 * So an edited line no longer matches its own H, and a removed, inserted or
 * reordered line breaks the P link of the line after the gap:
 * auditlog_verify_file() names the first such line. An unkeyed chain cannot
 * stop someone who rewrites every line after the one they changed: keep the
 * last H (auditlog_verify_file() reports it, the writer logs it when it
 * closes a file) somewhere else to anchor it. Lines are never cut; nothing
 * secret is ever in one (identifiers only: no cookies, tokens, queries).
 *
 * Module state is global: one audit log per process.
 */
#ifndef ZT_AUDITLOG_H
#define ZT_AUDITLOG_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"

struct evbuffer;

#define AUDITLOG_GENESIS "0000000000000000000000000000000000000000000000000000000000000000"
#define AUDITLOG_LINE_MAX 65536                /* longer lines are not audit lines */
#define AUDITLOG_QUEUE_MAX (64u * 1024 * 1024) /* record bytes waiting for the writer */
#define AUDITLOG_RECORD_MAX 65536              /* longer records are dropped (counted) */
#define AUDITLOG_PATH_MAX 1024                 /* request path bytes kept in a line */
#define AUDITLOG_FAILING_MAX 16                /* device checks listed in a line */
#define AUDITLOG_BATCH (32u * 1024)            /* a worker hands over its records at this size */

/* One decision. Strings are NUL-terminated; NULL (or -1 for numbers) means
 * not known and is written as null. */
struct auditlog_entry {
    int64_t time_ms; /* Unix milliseconds */
    const char *request_id;
    const char *user;  /* subject ("sub") */
    const char *email; /* e-mail */
    const char *device;
    const char *tier;    /* tier name */
    int score;           /* 0..100, -1 unknown */
    const char *client;  /* client address as text */
    const char *country; /* "DE", "unknown", NULL */
    uint32_t asn;        /* 0: not known (left out) */
    const char *route;
    const char *method;
    const char *path; /* cut at '?' (queries may hold secrets) and at AUDITLOG_PATH_MAX */
    size_t path_len;
    const struct policy_decision *decision; /* effect, rule, reasons, version, monitor */
    const char *const *failing;             /* failing device checks (ids), or NULL */
    size_t nfailing;
    uint64_t eval_ns;
};

/*
 * Start the writer. dest: a file path (opened O_APPEND, created 0640; an
 * existing file's chain is continued), "stdout", "stderr" or "off".
 * 0, or -1 with one line in err (nothing started).
 */
int auditlog_start(const char *dest, char *err, size_t errlen);

/*
 * Switch to dest (SIGHUP: log rotation or a new config). The file is opened
 * here, so errors come back at once (-1, err; the old destination stays);
 * the writer finishes the lines it holds on the old one, then reads the new
 * file's last line to continue its chain.
 */
int auditlog_reopen(const char *dest, char *err, size_t errlen);

/* Is a destination open (not "off", started)? Workers skip building lines when not. */
int auditlog_enabled(void);

/*
 * Append one record for e to buf (a worker's own buffer): e's data copied
 * (strings up to their NUL, the path up to '?' and AUDITLOG_PATH_MAX, at
 * most POLICY_REASONS_MAX reasons, POLICY_MONITOR_MAX monitor results and
 * AUDITLOG_FAILING_MAX failing checks), nothing formatted; e and what it
 * points to may change or go away on return. Allocation only as evbuffer
 * grows its chains; no lock, no syscall. An entry whose record would be
 * longer than AUDITLOG_RECORD_MAX (its line could not be written either)
 * leaves a marker the writer counts as dropped.
 */
void auditlog_append(struct evbuffer *buf, const struct auditlog_entry *e);

/*
 * Append one admin event record to buf (docs/admin-api.md), the writer
 * formats it as: who changed what, when: {"time":"...","event":"admin",
 * "actor":"token:ops","what":"rules put","detail":{...}}. detail_json is
 * compact JSON text without a newline (as json_dumps(JSON_COMPACT) writes
 * it), or NULL (otherwise null is written). It goes through the same queue
 * as the decision records, in order, and is chained like every other line;
 * nothing secret may be in it.
 */
void auditlog_append_admin(struct evbuffer *buf, int64_t time_ms, const char *actor,
                           const char *what, const char *detail_json);

/* Move every byte of buf (whole records from auditlog_append() and
 * auditlog_append_admin(), in order) to the writer. Beyond AUDITLOG_QUEUE_MAX
 * queued bytes the records are dropped and counted. */
void auditlog_submit(struct evbuffer *buf);

/*
 * Format the records in records (all of it is drained) into lines appended
 * to lines: each exactly the text the writer chains, "{"time":...}\n"
 * without "prev"/"hash". Returns the number of lines; adds the malformed or
 * truncated records (and runs of bytes that are no record) to *bad if not
 * NULL. Any thread; no shared state. The writer uses the same code; tests
 * and the fuzzer use this.
 */
size_t auditlog_format(struct evbuffer *records, struct evbuffer *lines, uint64_t *bad);

/* Wait until everything submitted so far is written (tests, shutdown). */
void auditlog_flush(void);

/* Write what is queued, close, and stop the writer. Start may follow. */
void auditlog_stop(void);

struct auditlog_stats {
    uint64_t lines;        /* written */
    uint64_t dropped;      /* lost: queue full or write errors */
    uint64_t write_errors; /* failed write(2) calls */
    char head[65];         /* the H of the last line written ("" none yet) */
};
void auditlog_stats(struct auditlog_stats *out);

/*
 * Check the chain of a file (ztctl audit verify). Returns 0 when every line
 * chains (err then reads "N lines, last hash H"), the 1-based number of the
 * first bad line (an edited line, or the line after a removed, inserted or
 * reordered one; an unterminated last line) with the reason in err, or -1
 * when the file cannot be read (err says why).
 */
int auditlog_verify_file(const char *path, char *err, size_t errlen);

/* The same over bytes in memory. */
int auditlog_verify_buf(const char *data, size_t len, char *err, size_t errlen);

#endif
