/*
 * accesslog.c - the access log: records copied on the workers, formatted
 * and written by one thread (include/accesslog.h has the line).
 *
 * Why the writer formats the lines: the time text, JSON escaping and
 * number formatting were most of the access log's cost on the worker event
 * loops, the bottleneck. A worker now copies the request's numbers and
 * strings into a binary record in its own buffer; the writer turns each
 * record into exactly the line the worker used to write. Measured with
 * bench/callgrind_per_request.sh (one route, no policy): access_log_write()
 * 1,631 -> 807 instructions per request on the worker (accesslog_append()
 * 553 of them, metrics_request() 125), the writer ~1.8k per line.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "accesslog.h"
#include "log.h"
#include "metrics.h"
#include "rec.h"
#include "sbuf.h"
#include "thread.h"

/* ---- records (workers) --------------------------------------------------- */

/*
 * A record is what a worker hands over for one line: the request's data
 * copied, nothing formatted. Native byte order (it never leaves the
 * process); every multi-byte field is read and written with memcpy (the
 * evbuffer gives no alignment).
 *
 *   header  8 bytes: magic AC_MAGIC0 AC_MAGIC1, type AC_REC_REQUEST, 0,
 *           u32 total length (header included)
 *   numbers struct ac_rec, which also holds the length of each string
 *   strings request id, client, device, route, method, host, path, error:
 *           their bytes one after the other, nothing between them
 *
 * The total is exactly AC_REC_FIXED + the string lengths, each of which is
 * at most its ACCESSLOG_*_MAX; the writer checks all of it (and every
 * field with fewer valid values than its type) before it formats anything.
 */
#define AC_MAGIC0 0xac
#define AC_MAGIC1 0x5e
#define AC_REC_HDR REC_HDR
#define AC_REC_REQUEST 1

enum ac_str { AC_S_REQID, AC_S_CLIENT, AC_S_DEVICE, AC_S_ROUTE, AC_S_METHOD, AC_S_HOST, AC_NSHORT };

#define AC_F_RESUMED 0x1 /* "tls_resumed":true */
#define AC_F_ERROR 0x2   /* an "error" member (error_len bytes, maybe 0) */

/* The numbers of a record (no padding: copied as it is). */
struct ac_rec {
    int64_t ts_sec;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t duration_us;
    uint32_t ts_nsec; /* < 1e9 */
    int32_t worker;
    int32_t status;
    int32_t upstream_status;
    uint32_t path_len;            /* <= ACCESSLOG_PATH_MAX */
    uint16_t error_len;           /* <= ACCESSLOG_ERROR_MAX; 0 without AC_F_ERROR */
    uint8_t short_len[AC_NSHORT]; /* in the order of enum ac_str, each <= its max */
    uint8_t flags;
    uint8_t zero[3];
};
_Static_assert(sizeof(struct ac_rec) == 64, "struct ac_rec has padding");
_Static_assert(ACCESSLOG_HOST_MAX <= 255 && ACCESSLOG_DEVICE_MAX <= 255 &&
                   ACCESSLOG_CLIENT_MAX <= 255 && ACCESSLOG_REQID_MAX <= 255 &&
                   ACCESSLOG_ROUTE_MAX <= 255 && ACCESSLOG_METHOD_MAX <= 255,
               "short string length > u8");
_Static_assert(ACCESSLOG_ERROR_MAX < 65536, "error length > u16");

#define AC_REC_FIXED (AC_REC_HDR + sizeof(struct ac_rec))
#define AC_REC_MAX                                                                                 \
    (AC_REC_FIXED + ACCESSLOG_REQID_MAX + ACCESSLOG_CLIENT_MAX + ACCESSLOG_DEVICE_MAX +            \
     ACCESSLOG_ROUTE_MAX + ACCESSLOG_METHOD_MAX + ACCESSLOG_HOST_MAX + ACCESSLOG_ERROR_MAX +       \
     ACCESSLOG_PATH_MAX)

static const size_t ac_short_max[AC_NSHORT] = {
    ACCESSLOG_REQID_MAX, ACCESSLOG_CLIENT_MAX, ACCESSLOG_DEVICE_MAX,
    ACCESSLOG_ROUTE_MAX, ACCESSLOG_METHOD_MAX, ACCESSLOG_HOST_MAX,
};

/* Length of s up to max (s NULL: 0). */
static inline size_t ac_len(const char *s, size_t max)
{
    return s != NULL ? strnlen(s, max) : 0;
}

void accesslog_append(struct evbuffer *buf, const struct accesslog_entry *e)
{
    const char *str[AC_NSHORT] = {e->request_id, e->client, e->device,
                                  e->route,      e->method, e->host};
    unsigned char stack[1024], *rec = stack, *o;
    struct ac_rec f;
    size_t i, total, plen = 0, elen = 0;
    uint32_t t32;

    memset(&f, 0, sizeof(f));
    total = AC_REC_FIXED;
    for (i = 0; i < AC_NSHORT; i++) {
        size_t n = ac_len(str[i], ac_short_max[i]);

        f.short_len[i] = (uint8_t)n;
        total += n;
    }
    if (e->path != NULL) {
        plen = e->path_len;
        /* The proxy's own endpoints carry secrets in their query (the
         * OpenID callback's code and state): the path only, so the secret
         * is never copied into the queue. */
        if (plen >= 5 && memcmp(e->path, "/.zt/", 5) == 0) {
            const char *q = memchr(e->path, '?', plen);
            if (q != NULL)
                plen = (size_t)(q - e->path);
        }
        if (plen > ACCESSLOG_PATH_MAX)
            plen = ACCESSLOG_PATH_MAX;
    }
    if (e->error != NULL) {
        elen = strnlen(e->error, ACCESSLOG_ERROR_MAX);
        f.flags |= AC_F_ERROR;
    }
    total += plen + elen;
    f.ts_sec = (int64_t)e->ts.tv_sec;
    f.ts_nsec = (uint32_t)e->ts.tv_nsec;
    f.bytes_in = e->bytes_in;
    f.bytes_out = e->bytes_out;
    f.duration_us = e->duration_us;
    f.worker = (int32_t)e->worker;
    f.status = (int32_t)e->status;
    f.upstream_status = (int32_t)e->upstream_status;
    f.path_len = (uint32_t)plen;
    f.error_len = (uint16_t)elen;
    if (e->tls_resumed)
        f.flags |= AC_F_RESUMED;

    /* Built on the stack in one pass, then one evbuffer_add(); a long
     * path's record in a buffer of its size. */
    if (total > sizeof(stack)) {
        rec = malloc(total);
        if (rec == NULL)
            return; /* out of memory: no record rather than half of one */
    }
    rec[0] = AC_MAGIC0;
    rec[1] = AC_MAGIC1;
    rec[2] = AC_REC_REQUEST;
    rec[3] = 0;
    t32 = (uint32_t)total;
    memcpy(rec + 4, &t32, 4);
    memcpy(rec + AC_REC_HDR, &f, sizeof(f));
    o = rec + AC_REC_FIXED;
    for (i = 0; i < AC_NSHORT; i++) {
        rec_copy_small(o, str[i], f.short_len[i]);
        o += f.short_len[i];
    }
    if (plen > 0)
        memcpy(o, e->path, plen);
    o += plen;
    if (elen > 0)
        memcpy(o, e->error, elen);
    evbuffer_add(buf, rec, total);
    if (rec != stack)
        free(rec);
}

/* ---- formatting records into lines (the writer thread) ------------------ */

static const char ac_hex[] = "0123456789abcdef";

/* 1 when none of the 8 bytes at p needs escaping: no byte below 0x20, none
 * from 0x7f up, no '"' or '\\' (auditlog.c's al_plain8()). */
static inline int ac_plain8(const unsigned char *p)
{
    const uint64_t one = 0x0101010101010101u, high = 0x8080808080808080u;
    uint64_t x, q, bs, del;

    memcpy(&x, p, sizeof(x));
    q = x ^ (one * 0x22);
    bs = x ^ (one * 0x5c);
    del = x ^ (one * 0x7f);
    return ((x | ((x - one * 0x20) & ~x) | ((q - one) & ~q) | ((bs - one) & ~bs) |
             ((del - one) & ~del)) &
            high) == 0;
}

/* Bit c set: byte c goes into a JSON string as it is (printable ASCII but
 * '"' (0x22) and '\\' (0x5c)). */
static const uint64_t ac_plain_bits[4] = {0xfffffffb00000000u, 0x7fffffffefffffffu, 0, 0};

static inline int ac_plain(unsigned char c)
{
    return (int)(ac_plain_bits[c >> 6] >> (c & 63) & 1);
}

/*
 * The formatter writes through a plain pointer into a buffer that has room
 * for the longest line the record can make (AC_LINE_MAX(): every string
 * byte escaped to six, every number at 20 digits), checked once per record
 * instead of at every piece of the line.
 */
#define AC_LINE_FIXED 512 /* the members' names, punctuation, time and numbers */
#define AC_LINE_MAX(reclen) (AC_LINE_FIXED + 6 * ((reclen)-AC_REC_FIXED))

/* A string literal at o; o moves past it. */
#define AC_LIT(o, lit) ((o) = (char *)memcpy((o), (lit), sizeof(lit) - 1) + sizeof(lit) - 1)

static inline char *ac_u64(char *o, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    memcpy(o, tmp + i, sizeof(tmp) - i);
    return o + sizeof(tmp) - i;
}

/* s[0..len) as the inside of a JSON string at o (room for 6 * len bytes),
 * exactly as the worker escaped it before (sbuf_json()): '"' and '\\' with
 * a backslash, every other byte below 0x20 or from 0x7f up as \u00XX. So
 * the line never holds a raw newline, whatever the bytes. Returns the end. */
static char *ac_escape(char *o, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, start = 0;

    while (i < len) {
        unsigned char c;

        /* The common case: a run of printable ASCII that needs nothing. */
        while (i + 8 <= len && ac_plain8(u + i))
            i += 8;
        /* The last 0-7 bytes: the 8 ending at len (overlapping what was
         * checked already) when the string is that long. */
        if (i < len && i + 8 > len && len >= 8 && ac_plain8(u + len - 8))
            i = len;
        while (i < len && ac_plain(u[i]))
            i++;
        if (i == len)
            break;
        c = u[i];
        memcpy(o, s + start, i - start);
        o += i - start;
        o[0] = '\\';
        if (c == '"' || c == '\\') {
            o[1] = (char)c;
            o += 2;
        } else {
            o[1] = 'u';
            o[2] = '0';
            o[3] = '0';
            o[4] = ac_hex[c >> 4];
            o[5] = ac_hex[c & 15];
            o += 6;
        }
        i++;
        start = i;
    }
    memcpy(o, s + start, len - start);
    return o + (len - start);
}

/* "2026-11-28T10:31:33.036Z" for sec, nsec (nsec < 1e9) at o: the worker's
 * old strftime() text, kept per thread for the second it shows. Returns
 * the end, or NULL when the time has no such text (gmtime_r() fails, or
 * the year is too long). */
static char *ac_time(char *o, int64_t sec, uint32_t nsec)
{
    static __thread int64_t last_sec = INT64_MIN;
    static __thread char last_text[24];
    static __thread size_t last_len;

    if (sec != last_sec) {
        struct tm tm;
        time_t t = (time_t)sec;
        char text[sizeof(last_text)];
        size_t n;

        if ((int64_t)t != sec || gmtime_r(&t, &tm) == NULL)
            return NULL;
        /* Into text first: a failed strftime() leaves part of a text. */
        n = strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm);
        if (n == 0)
            return NULL;
        memcpy(last_text, text, n);
        last_len = n;
        last_sec = sec;
    }
    memcpy(o, last_text, last_len);
    o += last_len;
    o[0] = '.';
    o[1] = (char)('0' + nsec / 100000000);
    o[2] = (char)('0' + nsec / 10000000 % 10);
    o[3] = (char)('0' + nsec / 1000000 % 10);
    o[4] = 'Z';
    return o + 5;
}

/* Check the numbers of a record (rec[0..len), its header checked by
 * ac_hdr_len()) into *f: 0, or -1 when the record is malformed. */
static int ac_check(const unsigned char *rec, size_t len, struct ac_rec *f)
{
    size_t i, want = AC_REC_FIXED;

    memcpy(f, rec + AC_REC_HDR, sizeof(*f));
    if (f->ts_nsec >= 1000000000u || (f->flags & ~(AC_F_RESUMED | AC_F_ERROR)) != 0 ||
        f->zero[0] != 0 || f->zero[1] != 0 || f->zero[2] != 0 || f->path_len > ACCESSLOG_PATH_MAX ||
        f->error_len > ACCESSLOG_ERROR_MAX || (!(f->flags & AC_F_ERROR) && f->error_len != 0))
        return -1;
    for (i = 0; i < AC_NSHORT; i++) {
        if (f->short_len[i] > ac_short_max[i])
            return -1;
        want += f->short_len[i];
    }
    want += (size_t)f->path_len + f->error_len;
    return want == len ? 0 : -1;
}

/* The line of a checked record at o (room for AC_LINE_MAX(its length)).
 * Returns the end, or NULL when the record's time has no text. */
static char *ac_format_rec(const unsigned char *rec, const struct ac_rec *f, char *o)
{
    const char *s = (const char *)rec + AC_REC_FIXED;

    AC_LIT(o, "{\"ts\":\"");
    o = ac_time(o, f->ts_sec, f->ts_nsec);
    if (o == NULL)
        return NULL;
    AC_LIT(o, "\",\"request_id\":\"");
    o = ac_escape(o, s, f->short_len[AC_S_REQID]);
    s += f->short_len[AC_S_REQID];
    AC_LIT(o, "\",\"worker\":");
    o = ac_u64(o, (uint64_t)f->worker);
    AC_LIT(o, ",\"client\":\"");
    o = ac_escape(o, s, f->short_len[AC_S_CLIENT]);
    s += f->short_len[AC_S_CLIENT];
    AC_LIT(o, "\",\"device\":\"");
    o = ac_escape(o, s, f->short_len[AC_S_DEVICE]);
    s += f->short_len[AC_S_DEVICE];
    if (f->flags & AC_F_RESUMED)
        AC_LIT(o, "\",\"tls_resumed\":true,\"route\":\"");
    else
        AC_LIT(o, "\",\"tls_resumed\":false,\"route\":\"");
    o = ac_escape(o, s, f->short_len[AC_S_ROUTE]);
    s += f->short_len[AC_S_ROUTE];
    AC_LIT(o, "\",\"method\":\"");
    o = ac_escape(o, s, f->short_len[AC_S_METHOD]);
    s += f->short_len[AC_S_METHOD];
    AC_LIT(o, "\",\"host\":\"");
    o = ac_escape(o, s, f->short_len[AC_S_HOST]);
    s += f->short_len[AC_S_HOST];
    AC_LIT(o, "\",\"path\":\"");
    o = ac_escape(o, s, f->path_len);
    s += f->path_len;
    AC_LIT(o, "\",\"status\":");
    o = ac_u64(o, (uint64_t)f->status);
    AC_LIT(o, ",\"upstream_status\":");
    o = ac_u64(o, (uint64_t)f->upstream_status);
    AC_LIT(o, ",\"bytes_in\":");
    o = ac_u64(o, f->bytes_in);
    AC_LIT(o, ",\"bytes_out\":");
    o = ac_u64(o, f->bytes_out);
    AC_LIT(o, ",\"duration_us\":");
    o = ac_u64(o, f->duration_us);
    if (f->flags & AC_F_ERROR) {
        AC_LIT(o, ",\"error\":\"");
        o = ac_escape(o, s, f->error_len);
        AC_LIT(o, "\"");
    }
    AC_LIT(o, "}\n");
    return o;
}

/* Is h (AC_REC_HDR bytes) a record header? Its total length then, else 0. */
static size_t ac_hdr_len(const unsigned char *h)
{
    uint32_t l;

    memcpy(&l, h + 4, 4);
    if (h[0] != AC_MAGIC0 || h[1] != AC_MAGIC1 || h[2] != AC_REC_REQUEST || h[3] != 0 ||
        l < AC_REC_FIXED || l > AC_REC_MAX)
        return 0;
    return l;
}

/* Lines are staged in one buffer and handed to out in pieces of about this
 * size (one evbuffer_add() per piece instead of one per line). */
#define AC_STAGE 65536

/* Format rec[0..len) (its header checked) into the stage sb (handed to out
 * when it has no room for the line): one more line in *n, or one more bad
 * record in *nbad and nothing added. */
static void ac_format_one(const unsigned char *rec, size_t len, struct sbuf *sb,
                          struct evbuffer *out, size_t *n, uint64_t *nbad)
{
    struct ac_rec f;
    size_t need;
    char *end;

    if (rec == NULL || ac_check(rec, len, &f) == -1) {
        (*nbad)++;
        return;
    }
    need = AC_LINE_MAX(len);
    if (sb->cap - sb->len < need) {
        if (sb->len > 0)
            evbuffer_add(out, sb->p, sb->len);
        sb->len = 0;
        if (sb->cap < need && sbuf_grow(sb, need) == -1) {
            sb->failed = 0;
            (*nbad)++; /* out of memory */
            return;
        }
    }
    end = ac_format_rec(rec, &f, sb->p + sb->len);
    if (end == NULL) {
        (*nbad)++;
        return;
    }
    sb->len = (size_t)(end - sb->p);
    (*n)++;
}

size_t accesslog_format(struct evbuffer *in, struct evbuffer *out, uint64_t *bad)
{
    char stage[AC_STAGE];
    struct sbuf sb;
    size_t n = 0;
    uint64_t nbad = 0;

    sbuf_init(&sb, stage, sizeof(stage));
    while (evbuffer_get_length(in) > 0) {
        unsigned char h[AC_REC_HDR];
        struct evbuffer_iovec v;
        size_t len = 0, off = 0;

        /* Every whole record in the first chunk where it lies, with no
         * call into libevent per record. */
        if (evbuffer_peek(in, -1, NULL, &v, 1) >= 1) {
            const unsigned char *p = v.iov_base;

            while (v.iov_len - off >= AC_REC_HDR) {
                len = ac_hdr_len(p + off);
                if (len == 0 || len > v.iov_len - off)
                    break;
                ac_format_one(p + off, len, &sb, out, &n, &nbad);
                off += len;
            }
        }
        if (off > 0) {
            evbuffer_drain(in, off);
            continue;
        }
        /* A record across chunks, or bytes that are none. */
        len = 0;
        if (evbuffer_copyout(in, h, AC_REC_HDR) == AC_REC_HDR)
            len = ac_hdr_len(h);
        if (len == 0 || len > evbuffer_get_length(in)) {
            /* Not a record, or one cut short: never half a line. */
            nbad++;
            evbuffer_drain(in, rec_resync(in, AC_MAGIC0, AC_MAGIC1, ac_hdr_len));
            continue;
        }
        ac_format_one(evbuffer_pullup(in, (ev_ssize_t)len), len, &sb, out, &n, &nbad);
        evbuffer_drain(in, len);
    }
    if (sb.len > 0)
        evbuffer_add(out, sb.p, sb.len);
    sbuf_free(&sb);
    if (bad != NULL)
        *bad += nbad;
    return n;
}

/* ---- the writer thread --------------------------------------------------- */

#define AL_KEEP (-2) /* al_next: no reopen pending */

static pthread_mutex_t al_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t al_cond = PTHREAD_COND_INITIALIZER;
static struct evbuffer *al_queue; /* al_mtx */
static struct evbuffer *al_pre;   /* al_mtx: queued before a pending reopen */
static int al_next = AL_KEEP;     /* al_mtx: the fd to switch to (-1: off) */
static int al_stop;               /* al_mtx */
static int al_full;               /* al_mtx: dropping since the last warning */
static pthread_t al_thread;
static int al_fd = -1; /* the writer's (main thread before start, after stop) */
static int al_running;
static _Atomic int al_enabled;
static _Atomic uint64_t al_bad;     /* malformed records (never expected) */
static _Atomic uint64_t al_dropped; /* records lost: queue full, write failed */

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

/* Close the descriptors and free the queues (main thread, no writer). */
static void al_teardown(void)
{
    if (al_next >= 0)
        close(al_next);
    al_next = AL_KEEP;
    if (al_fd >= 0)
        close(al_fd);
    al_fd = -1;
    evbuffer_free(al_queue);
    evbuffer_free(al_pre);
    al_queue = al_pre = NULL;
}

static void al_lost(uint64_t n)
{
    atomic_fetch_add(&al_dropped, n);
    metrics_add(METRICS_ACCESS_DROPPED, n);
}

/* Format recs and write the lines to al_fd (writer thread); what cannot be
 * written is counted as lost. */
static void al_write(struct evbuffer *recs, struct evbuffer *local)
{
    uint64_t bad = 0;

    if (evbuffer_get_length(recs) == 0)
        return;
    if (al_fd < 0) {
        evbuffer_drain(recs, evbuffer_get_length(recs)); /* off */
        return;
    }
    accesslog_format(recs, local, &bad);
    if (bad > 0) {
        atomic_fetch_add(&al_bad, bad);
        log_warnx("access log: %llu malformed records dropped", (unsigned long long)bad);
    }
    while (evbuffer_get_length(local) > 0) {
        int n = evbuffer_write(local, al_fd);
        if (n <= 0) {
            if (n == -1 && errno == EINTR)
                continue;
            log_warn("access log: write failed, %zu bytes dropped", evbuffer_get_length(local));
            al_lost(rec_count_lines(local));
            evbuffer_drain(local, evbuffer_get_length(local));
        }
    }
}

static void *acl_writer_main(void *arg)
{
    struct evbuffer *pre = evbuffer_new(), *recs = evbuffer_new(), *local = evbuffer_new();
    int done = 0;

    (void)arg;
    thread_lower_priority(5, "access log writer"); /* as the audit log's */
    if (pre == NULL || recs == NULL || local == NULL)
        fatalx("access log: out of memory");
    while (!done) {
        int next;

        pthread_mutex_lock(&al_mtx);
        while (evbuffer_get_length(al_queue) == 0 && evbuffer_get_length(al_pre) == 0 && !al_stop &&
               al_next == AL_KEEP)
            pthread_cond_wait(&al_cond, &al_mtx);
        evbuffer_add_buffer(pre, al_pre);
        evbuffer_add_buffer(recs, al_queue);
        done = al_stop;
        next = al_next;
        al_next = AL_KEEP;
        pthread_mutex_unlock(&al_mtx);

        /* Formatting is the writer's: outside the lock, off the loops.
         * What was queued before a reopen goes to the old file (a rotated
         * log keeps its last lines), the rest to the new one. Only this
         * thread writes to and closes its descriptor, so a line can never
         * land in a file that was given a closed descriptor's number. */
        al_write(pre, local);
        if (next != AL_KEEP) {
            if (al_fd >= 0)
                close(al_fd);
            al_fd = next;
        }
        al_write(recs, local);
    }
    evbuffer_free(pre);
    evbuffer_free(recs);
    evbuffer_free(local);
    return NULL;
}

int accesslog_start(const char *dest)
{
    int fd;

    if (al_running) {
        errno = EBUSY;
        return -1;
    }
    fd = al_open(dest);
    if (fd == -1)
        return -1;
    al_queue = evbuffer_new();
    al_pre = evbuffer_new();
    if (al_queue == NULL || al_pre == NULL) {
        evbuffer_free(al_queue);
        evbuffer_free(al_pre);
        al_queue = al_pre = NULL;
        if (fd >= 0)
            close(fd);
        errno = ENOMEM;
        return -1;
    }
    al_fd = fd >= 0 ? fd : -1;
    al_next = AL_KEEP;
    al_stop = 0;
    al_full = 0;
    if (pthread_create(&al_thread, NULL, acl_writer_main, NULL) != 0) {
        al_teardown();
        errno = EAGAIN;
        return -1;
    }
    al_running = 1;
    atomic_store(&al_enabled, fd >= 0);
    return 0;
}

int accesslog_reopen(const char *dest)
{
    int fd, old;

    if (!al_running)
        return accesslog_start(dest);
    fd = al_open(dest);
    if (fd == -1)
        return -1;
    if (fd < 0)
        fd = -1; /* off */
    pthread_mutex_lock(&al_mtx);
    old = al_next;
    al_next = fd;
    evbuffer_add_buffer(al_pre, al_queue);
    pthread_cond_signal(&al_cond);
    pthread_mutex_unlock(&al_mtx);
    if (old >= 0) /* two reopens before the writer looked: the first is moot */
        close(old);
    atomic_store(&al_enabled, fd >= 0);
    return 0;
}

int accesslog_enabled(void)
{
    return atomic_load_explicit(&al_enabled, memory_order_relaxed);
}

uint64_t accesslog_bad_records(void)
{
    return atomic_load(&al_bad);
}

uint64_t accesslog_dropped(void)
{
    return atomic_load(&al_dropped);
}

void accesslog_submit(struct evbuffer *buf)
{
    size_t len = evbuffer_get_length(buf), n = 0;
    int warn = 0;

    if (len == 0 || !al_running)
        return;
    pthread_mutex_lock(&al_mtx);
    if (evbuffer_get_length(al_queue) + evbuffer_get_length(al_pre) + len > ACCESSLOG_QUEUE_MAX) {
        /* The destination is not keeping up (a slow disk, a stuck pipe):
         * lose records rather than memory, count them, and say so once per
         * episode. */
        n = rec_count(buf, ac_hdr_len);
        warn = !al_full;
        al_full = 1;
    } else {
        evbuffer_add_buffer(al_queue, buf);
        al_full = 0;
        pthread_cond_signal(&al_cond);
    }
    pthread_mutex_unlock(&al_mtx);
    if (n > 0) {
        evbuffer_drain(buf, len);
        al_lost(n);
        if (warn)
            log_warnx("access log: the writer is %u MiB behind; dropping records until it "
                      "catches up (counted in ztproxy_log_records_dropped_total)",
                      ACCESSLOG_QUEUE_MAX >> 20);
    }
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
    atomic_store(&al_enabled, 0);
    al_teardown();
}
