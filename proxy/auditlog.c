/*
 * auditlog.c - the audit log: records copied on the workers, formatted,
 * chained and written by one thread (include/auditlog.h has the format).
 *
 * Why the writer computes the chain: a hash chain is a sequence, and the
 * only place where the sequence of lines is known without a lock on every
 * request is the one thread that writes them. Why it formats the lines too:
 * escaping and number and date formatting were most of the audit log's cost
 * on the worker event loop, the bottleneck; a worker now only copies the
 * entry's data into a binary record in its own buffer, and the writer turns
 * each record into the JSON line, inserting "prev" and "hash" as it goes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "fileio.h"
#include "auditlog.h"
#include "rec.h"
#include "sbuf.h"
#include "log.h"
#include "metrics.h"
#include "thread.h"

/* {"prev":"<64 hex>",  then  "hash":"<64 hex>",  then the worker's members */
#define AL_PREV_KEY "{\"prev\":\""
#define AL_PREV_KEY_LEN 9
#define AL_PREV_LEN (AL_PREV_KEY_LEN + 64 + 2) /* 75 */
#define AL_HASH_KEY "\"hash\":\""
#define AL_HASH_KEY_LEN 8
#define AL_HASH_LEN (AL_HASH_KEY_LEN + 64 + 2) /* 74 */
#define AL_HEAD_LEN (AL_PREV_LEN + AL_HASH_LEN)

static const char al_hex[] = "0123456789abcdef";

/* SHA-256 fetched once (EVP_sha256() looks the implementation up again at
 * every EVP_DigestInit_ex(), which cost more than hashing a line). Falls
 * back to EVP_sha256() if the fetch fails. Never freed: one per process. */
static const EVP_MD *al_sha256(void)
{
    static _Atomic(EVP_MD *) md;
    EVP_MD *m = atomic_load(&md), *expect = NULL;

    if (m != NULL)
        return m;
    m = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (m == NULL)
        return EVP_sha256();
    if (!atomic_compare_exchange_strong(&md, &expect, m)) {
        EVP_MD_free(m);
        m = expect;
    }
    return m;
}

/* "000102...ff": the two hex digits of each byte value. */
static const char al_hex2[513] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                                 "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
                                 "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
                                 "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
                                 "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
                                 "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
                                 "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
                                 "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

static void al_tohex(const unsigned char *h, char *out)
{
    size_t i;

    for (i = 0; i < 32; i++)
        memcpy(out + 2 * i, al_hex2 + 2 * h[i], 2);
    out[64] = '\0';
}

static int al_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* 64 lower-case hex digits -> 32 bytes. 0 or -1. */
static int al_fromhex(const char *s, unsigned char *out)
{
    size_t i;

    for (i = 0; i < 32; i++) {
        int hi = al_hexval(s[2 * i]), lo = al_hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

/* Does the line start with our two members? Then prev/hash are set. */
static int al_line_split(const char *line, size_t len, unsigned char *prev, unsigned char *hash)
{
    if (len <= AL_HEAD_LEN || memcmp(line, AL_PREV_KEY, AL_PREV_KEY_LEN) != 0 ||
        line[AL_PREV_KEY_LEN + 64] != '"' || line[AL_PREV_KEY_LEN + 65] != ',' ||
        memcmp(line + AL_PREV_LEN, AL_HASH_KEY, AL_HASH_KEY_LEN) != 0 ||
        line[AL_PREV_LEN + AL_HASH_KEY_LEN + 64] != '"' ||
        line[AL_PREV_LEN + AL_HASH_KEY_LEN + 65] != ',' ||
        al_fromhex(line + AL_PREV_KEY_LEN, prev) == -1 ||
        al_fromhex(line + AL_PREV_LEN + AL_HASH_KEY_LEN, hash) == -1)
        return -1;
    return 0;
}

/*
 * The chain value of a line as written: SHA-256 of the line without its
 * "hash" member. A line that is not one of ours (damaged, foreign) is
 * hashed whole, so a chain continued after it is still well defined.
 */
static int al_line_digest(EVP_MD_CTX *md, const char *line, size_t len, unsigned char *out)
{
    unsigned char p[32], h[32];
    unsigned int n = 0;
    int ok;

    if (EVP_DigestInit_ex(md, al_sha256(), NULL) != 1)
        return -1;
    if (al_line_split(line, len, p, h) == 0)
        ok = EVP_DigestUpdate(md, line, AL_PREV_LEN) == 1 &&
             EVP_DigestUpdate(md, line + AL_HEAD_LEN, len - AL_HEAD_LEN) == 1;
    else
        ok = EVP_DigestUpdate(md, line, len) == 1;
    if (!ok || EVP_DigestFinal_ex(md, out, &n) != 1 || n != 32)
        return -1;
    return 0;
}

/* ---- records (workers) --------------------------------------------------- */

/*
 * A record is what a worker hands over for one line: the entry's data
 * copied, nothing formatted. Native byte order (it never leaves the
 * process); every multi-byte field is read and written with memcpy (the
 * evbuffer gives no alignment).
 *
 *   header   8 bytes: magic AL_MAGIC0 AL_MAGIC1, type, 0, u32 total length
 *                     (header included)
 *   decision struct al_rec_dec (the numbers), then AL_DEC_NSTR strings in
 *            the order of enum al_dec_str, then, when has_decision: the
 *            reasons (one string holding reason_buf's bytes in use, then
 *            nreasons u16 offsets into it, each at a NUL-terminated reason),
 *            nmonitor x (u8 rule effect, u8 matched 0/1/2, u8 would decide,
 *            string rule id); then nfailing strings (failing check ids)
 *   admin    i64 time_ms, then the strings actor, what, detail
 *   oversize the header alone: an entry whose record would be longer than
 *            AUDITLOG_RECORD_MAX (its line would be too long to write);
 *            the writer counts it as dropped
 *
 * A string is a u16 length (AL_STR_NULL: none, written as null) and that
 * many bytes. The writer checks every length and count against the record
 * and the limits below before it formats anything.
 */
#define AL_MAGIC0 0xa7
#define AL_MAGIC1 0x1d
#define AL_REC_HDR REC_HDR
#define AL_STR_NULL 0xffffu

enum { AL_REC_DECISION = 1, AL_REC_ADMIN = 2, AL_REC_OVERSIZE = 3 };

enum al_dec_str {
    AL_S_REQUEST_ID,
    AL_S_USER,
    AL_S_EMAIL,
    AL_S_DEVICE,
    AL_S_TIER,
    AL_S_CLIENT,
    AL_S_COUNTRY,
    AL_S_ROUTE,
    AL_S_METHOD,
    AL_S_PATH,
    AL_S_RULE,
    AL_S_VERSION,
    AL_DEC_NSTR
};

/* The numbers of a decision record (no padding: copied as it is). */
struct al_rec_dec {
    int64_t time_ms;
    uint64_t eval_ns;
    int64_t step_up_max_age;
    uint64_t reasons_dropped;
    uint64_t monitor_dropped;
    int32_t score; /* < 0: unknown */
    uint32_t asn;
    uint8_t has_decision; /* 0: no decision members at all */
    uint8_t effect;       /* enum policy_effect */
    uint8_t step_up_mfa;
    uint8_t path_cut;
    uint8_t nreasons; /* <= POLICY_REASONS_MAX */
    uint8_t nmonitor; /* <= POLICY_MONITOR_MAX */
    uint8_t nfailing; /* <= AUDITLOG_FAILING_MAX */
    uint8_t zero;
};
_Static_assert(sizeof(struct al_rec_dec) == 56, "struct al_rec_dec has padding");
/* The longest string a record can hold (an admin record's) fits in a u16. */
_Static_assert(AUDITLOG_RECORD_MAX - AL_REC_HDR - 8 - 6 < AL_STR_NULL, "string length > u16");

static void al_hdr(unsigned char *o, int type, size_t total)
{
    uint32_t l = (uint32_t)total;

    o[0] = AL_MAGIC0;
    o[1] = AL_MAGIC1;
    o[2] = (unsigned char)type;
    o[3] = 0;
    memcpy(o + 4, &l, 4);
}

/* A record being built in [o, end). */
struct al_wr {
    unsigned char *o, *end;
};

/* Put a string (s NULL: null); -1 when it does not fit. */
static inline int al_put_str(struct al_wr *w, const char *s, size_t n)
{
    uint16_t l = s != NULL ? (uint16_t)n : (uint16_t)AL_STR_NULL;

    if ((size_t)(w->end - w->o) < 2 + n)
        return -1;
    memcpy(w->o, &l, 2);
    if (s != NULL)
        rec_copy_small(w->o + 2, s, n);
    w->o += 2 + (s != NULL ? n : 0);
    return 0;
}

static inline int al_put_cstr(struct al_wr *w, const char *s)
{
    return al_put_str(w, s, s != NULL ? strlen(s) : 0);
}

/* An entry too long for a record: a marker the writer counts as dropped. */
static void al_put_oversize(struct evbuffer *out)
{
    unsigned char h[AL_REC_HDR];

    al_hdr(h, AL_REC_OVERSIZE, AL_REC_HDR);
    evbuffer_add(out, h, sizeof(h));
}

/* The decision record of e into buf[0..cap): its length, or 0 when it
 * does not fit (cap is at most AUDITLOG_RECORD_MAX). */
static size_t al_build_decision(const struct auditlog_entry *e, unsigned char *buf, size_t cap)
{
    const struct policy_decision *d = e->decision;
    struct al_wr w = {buf + AL_REC_HDR + sizeof(struct al_rec_dec), buf + cap};
    struct al_rec_dec f;
    size_t i, plen = 0, nfail = 0;
    int bad = 0;

    if (cap < AL_REC_HDR + sizeof(f))
        return 0;
    memset(&f, 0, sizeof(f));
    f.time_ms = e->time_ms;
    f.eval_ns = e->eval_ns;
    f.score = e->score >= 0 ? (int32_t)e->score : -1;
    f.asn = e->asn;
    if (e->path != NULL) {
        /* Cut at '?' (queries may hold secrets) and at AUDITLOG_PATH_MAX. */
        const char *q = memchr(e->path, '?', e->path_len);

        plen = q != NULL ? (size_t)(q - e->path) : e->path_len;
        if (plen > AUDITLOG_PATH_MAX)
            plen = AUDITLOG_PATH_MAX;
        f.path_cut = plen < e->path_len && e->path[plen] != '?';
    }
    /* In the order of enum al_dec_str. */
    bad |= al_put_cstr(&w, e->request_id);
    bad |= al_put_cstr(&w, e->user);
    bad |= al_put_cstr(&w, e->email);
    bad |= al_put_cstr(&w, e->device);
    bad |= al_put_cstr(&w, e->tier);
    bad |= al_put_cstr(&w, e->client);
    bad |= al_put_cstr(&w, e->country);
    bad |= al_put_cstr(&w, e->route);
    bad |= al_put_cstr(&w, e->method);
    bad |= al_put_str(&w, e->path, plen);
    if (d != NULL) {
        size_t nreasons = d->nreasons < POLICY_REASONS_MAX ? d->nreasons : POLICY_REASONS_MAX;
        size_t nmon = d->nmonitor < POLICY_MONITOR_MAX ? d->nmonitor : POLICY_MONITOR_MAX;
        size_t blob = 0;

        f.has_decision = 1;
        /* policy_effect_name() writes anything else as "deny". */
        f.effect =
            (uint8_t)(d->effect == POLICY_ALLOW || d->effect == POLICY_STEP_UP ? d->effect
                                                                               : POLICY_DENY);
        f.step_up_mfa = d->step_up_mfa != 0;
        f.step_up_max_age = d->step_up_max_age;
        f.reasons_dropped = d->reasons_dropped;
        f.monitor_dropped = d->monitor_dropped;
        f.nreasons = (uint8_t)nreasons;
        f.nmonitor = (uint8_t)nmon;
        bad |= al_put_cstr(&w, d->rule_id);
        bad |= al_put_cstr(&w, d->version != NULL ? d->version : "");
        /* The reasons: the bytes of reason_buf in use, one copy, and the
         * offsets of the NUL-terminated reasons in it. */
        if (nreasons > 0)
            blob = d->reason_used < POLICY_REASON_BUF ? d->reason_used : POLICY_REASON_BUF;
        if (al_put_str(&w, d->reason_buf, blob) == -1 ||
            (size_t)(w.end - w.o) < 2 * nreasons + 3 * nmon)
            return 0;
        memcpy(w.o, d->reason_off, 2 * nreasons);
        w.o += 2 * nreasons;
        for (i = 0; i < nmon && !bad; i++) {
            const struct policy_monitor_result *m = &d->monitor[i];

            if ((size_t)(w.end - w.o) < 3)
                return 0;
            w.o[0] = (unsigned char)m->rule_effect;
            w.o[1] = m->matched == 2 ? 2 : m->matched != 0;
            w.o[2] = (unsigned char)m->would_decide;
            w.o += 3;
            bad |= al_put_cstr(&w, m->rule_id != NULL ? m->rule_id : "");
        }
    } else {
        bad |= al_put_str(&w, NULL, 0); /* rule */
        bad |= al_put_str(&w, NULL, 0); /* version */
    }
    if (e->nfailing > 0 && e->failing != NULL) {
        nfail = e->nfailing < AUDITLOG_FAILING_MAX ? e->nfailing : AUDITLOG_FAILING_MAX;
        for (i = 0; i < nfail && !bad; i++)
            bad |= al_put_cstr(&w, e->failing[i] != NULL ? e->failing[i] : "");
        f.nfailing = (uint8_t)nfail;
    }
    if (bad)
        return 0;
    al_hdr(buf, AL_REC_DECISION, (size_t)(w.o - buf));
    memcpy(buf + AL_REC_HDR, &f, sizeof(f));
    return (size_t)(w.o - buf);
}

void auditlog_append(struct evbuffer *out, const struct auditlog_entry *e)
{
    unsigned char stack[4096], *big;
    size_t n;

    /* Built on the stack in one pass, then one evbuffer_add(); a record
     * that does not fit there (paths and reasons near their limits) is
     * built again in a buffer of the largest size. */
    n = al_build_decision(e, stack, sizeof(stack));
    if (n > 0) {
        evbuffer_add(out, stack, n);
        return;
    }
    big = malloc(AUDITLOG_RECORD_MAX);
    if (big == NULL)
        return; /* out of memory: no record rather than half of one */
    n = al_build_decision(e, big, AUDITLOG_RECORD_MAX);
    if (n > 0)
        evbuffer_add(out, big, n);
    else
        al_put_oversize(out);
    free(big);
}

void auditlog_append_admin(struct evbuffer *out, int64_t time_ms, const char *actor,
                           const char *what, const char *detail_json)
{
    unsigned char *buf = malloc(AUDITLOG_RECORD_MAX);
    struct al_wr w;

    if (buf == NULL)
        return;
    w.o = buf + AL_REC_HDR + 8;
    w.end = buf + AUDITLOG_RECORD_MAX;
    memcpy(buf + AL_REC_HDR, &time_ms, 8);
    if (al_put_cstr(&w, actor) == 0 && al_put_cstr(&w, what) == 0 &&
        al_put_cstr(&w, detail_json) == 0) {
        al_hdr(buf, AL_REC_ADMIN, (size_t)(w.o - buf));
        evbuffer_add(out, buf, (size_t)(w.o - buf));
    } else {
        al_put_oversize(out);
    }
    free(buf);
}

/* ---- formatting records into lines (the writer thread) ------------------ */

/* Length of a valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t al_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t need, i;
    unsigned char lo = 0x80, hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf)
        need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < need + 1)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i <= need; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return need + 1;
}

/* Bit c set: byte c goes into a JSON string as it is (printable ASCII but
 * '"' (0x22) and '\\' (0x5c)). */
static const uint64_t al_plain[4] = {0xfffffffb00000000u, 0x7fffffffefffffffu, 0, 0};

/* 1 when none of the 8 bytes at p needs escaping (the same test as
 * al_plain, eight bytes at a time: no byte below 0x20, none with the high
 * bit, no 0x7f, '"' or '\\'). */
static inline int al_plain8(const unsigned char *p)
{
    const uint64_t one = 0x0101010101010101u, high = 0x8080808080808080u;
    uint64_t x, q, bs, del;

    memcpy(&x, p, sizeof(x));
    q = x ^ (one * 0x22);
    bs = x ^ (one * 0x5c);
    del = x ^ (one * 0x7f);
    /* (v - one) & ~v has a high bit set iff some byte of v is zero; with
     * (one * 0x20) instead of one: iff some byte is below 0x20 (bytes
     * with the high bit set are caught by x itself). */
    return ((x | ((x - one * 0x20) & ~x) | ((q - one) & ~q) | ((bs - one) & ~bs) |
             ((del - one) & ~del)) &
            high) == 0;
}

/* s[0..len) as the inside of a JSON string: printable ASCII and valid UTF-8
 * as they are, controls as \u00XX, invalid bytes as U+FFFD. The result never
 * holds a raw newline, which is what keeps one decision on one line. */
static void al_escape(struct sbuf *b, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, start = 0, n;
    char esc[6];

    while (i < len) {
        unsigned char c;

        /* The common case: a run of printable ASCII that needs nothing. */
        while (i + 8 <= len && al_plain8(u + i))
            i += 8;
        /* The last 0-7 bytes: the 8 ending at len (overlapping what was
         * checked already) when the string is that long. */
        if (i < len && i + 8 > len && len >= 8 && al_plain8(u + len - 8))
            i = len;
        while (i < len && (al_plain[u[i] >> 6] >> (u[i] & 63) & 1))
            i++;
        if (i == len)
            break;
        c = u[i];
        if (c >= 0x80) {
            n = al_utf8_len(u + i, len - i);
            if (n > 0) {
                i += n;
                continue;
            }
        }
        if (i > start)
            sbuf_add(b, s + start, i - start);
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sbuf_add(b, esc, 2);
        } else if (c >= 0x80) {
            sbuf_add(b, "\\ufffd", 6);
        } else {
            esc[0] = '\\';
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = al_hex[c >> 4];
            esc[5] = al_hex[c & 15];
            sbuf_add(b, esc, 6);
        }
        i++;
        start = i;
    }
    if (len > start)
        sbuf_add(b, s + start, len - start);
}

/* ,"key": - key a string literal (one copy of a constant length). */
#define AL_KEY(b, key) sbuf_lit((b), ",\"" key "\":")

/* "2026-05-20T10:12:13.456Z" (24 bytes) for Unix milliseconds t. */
static void al_time(struct sbuf *b, int64_t t)
{
    char ts[96];
    struct tm tm;
    time_t sec = (time_t)(t / 1000);
    int ms = (int)(t % 1000), y;
    static __thread time_t last_sec = -1;
    static __thread char last_text[19]; /* "YYYY-MM-DDTHH:MM:SS" of last_sec */

    if (ms < 0) {
        ms += 1000;
        sec--;
    }
    if (sec == last_sec) { /* most lines: the same second as the one before */
        memcpy(ts, last_text, 19);
        ts[19] = '.';
        ts[20] = (char)('0' + ms / 100);
        ts[21] = (char)('0' + ms / 10 % 10);
        ts[22] = (char)('0' + ms % 10);
        ts[23] = 'Z';
        sbuf_add(b, ts, 24);
        return;
    }
    if (gmtime_r(&sec, &tm) == NULL)
        memset(&tm, 0, sizeof(tm));
    y = tm.tm_year + 1900;
    if (y < 0 || y > 9999) {
        snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
        sbuf_str(b, ts);
        return;
    }
    ts[0] = (char)('0' + y / 1000);
    ts[1] = (char)('0' + y / 100 % 10);
    ts[2] = (char)('0' + y / 10 % 10);
    ts[3] = (char)('0' + y % 10);
    ts[4] = '-';
    ts[5] = (char)('0' + (tm.tm_mon + 1) / 10);
    ts[6] = (char)('0' + (tm.tm_mon + 1) % 10);
    ts[7] = '-';
    ts[8] = (char)('0' + tm.tm_mday / 10);
    ts[9] = (char)('0' + tm.tm_mday % 10);
    ts[10] = 'T';
    ts[11] = (char)('0' + tm.tm_hour / 10);
    ts[12] = (char)('0' + tm.tm_hour % 10);
    ts[13] = ':';
    ts[14] = (char)('0' + tm.tm_min / 10);
    ts[15] = (char)('0' + tm.tm_min % 10);
    ts[16] = ':';
    ts[17] = (char)('0' + tm.tm_sec / 10);
    ts[18] = (char)('0' + tm.tm_sec % 10);
    ts[19] = '.';
    ts[20] = (char)('0' + ms / 100);
    ts[21] = (char)('0' + ms / 10 % 10);
    ts[22] = (char)('0' + ms % 10);
    ts[23] = 'Z';
    sbuf_add(b, ts, 24);
    memcpy(last_text, ts, 19);
    last_sec = sec;
}

/* ,"key":"<s escaped>" or ,"key":null; pre is ,"key":" (prelen bytes). */
static inline void al_str_n(struct sbuf *b, const char *pre, size_t prelen, const char *s,
                            size_t len)
{
    if (s == NULL) {
        sbuf_add(b, pre, prelen - 1);
        sbuf_add(b, "null", 4);
        return;
    }
    sbuf_add(b, pre, prelen);
    al_escape(b, s, len);
    sbuf_add(b, "\"", 1);
}

/* key: a string literal. */
#define AL_STR_N(b, key, s, n)                                                                     \
    al_str_n((b), ",\"" key "\":\"", sizeof(",\"" key "\":\"") - 1, (s), (n))

/* A record being read: every read is checked against end. */
struct al_rd {
    const unsigned char *p, *end;
    int bad;
};

static inline __attribute__((always_inline)) void al_rd_get(struct al_rd *r, void *out, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        memset(out, 0, n);
        return;
    }
    memcpy(out, r->p, n);
    r->p += n;
}

static uint8_t al_rd_u8(struct al_rd *r)
{
    uint8_t v;

    al_rd_get(r, &v, 1);
    return v;
}

/* A string: *s NULL for a null one (or a bad record). */
static inline __attribute__((always_inline)) void al_rd_str(struct al_rd *r, const char **s,
                                                            size_t *n)
{
    uint16_t l;

    *s = NULL;
    *n = 0;
    al_rd_get(r, &l, 2);
    if (r->bad || l == AL_STR_NULL)
        return;
    if ((size_t)(r->end - r->p) < l) {
        r->bad = 1;
        return;
    }
    *s = (const char *)r->p;
    *n = l;
    r->p += l;
}

static int al_effect_ok(unsigned v)
{
    return v == POLICY_ALLOW || v == POLICY_DENY || v == POLICY_STEP_UP;
}

/*
 * The text of a run of members, kept with the record bytes it was
 * formatted from (key: the numbers that go into it, then the raw strings).
 * Consecutive decisions mostly differ only in time, request id, path and
 * evaluation time: the members from "user" to "route" (one person, one
 * device, one route) and from "effect" to "device_failing" (the same
 * rules, the same device state) are byte for byte those of the line
 * before. Formatting is a function of these bytes, so a record whose key
 * equals the memo's gets the memo's text, with no escaping or number
 * formatting (the checks of the record's structure ran on those same
 * bytes, and passed, when the text was made). One memo per run, per
 * batch of records (al_records()).
 */
#define AL_MEMO_KEY 2048
#define AL_MEMO_TEXT 4096

struct al_memo {
    int valid;
    size_t klen, tlen;
    unsigned char key[AL_MEMO_KEY];
    char text[AL_MEMO_TEXT];
};

enum { AL_MEMO_WHO, AL_MEMO_DECISION, AL_MEMO_N };

/* 1 (and the text appended to b) when the memo was made from h + raw. */
static int al_memo_get(const struct al_memo *m, const void *h, size_t hlen,
                       const unsigned char *raw, size_t rlen, struct sbuf *b)
{
    if (!m->valid || m->klen != hlen + rlen || memcmp(m->key, h, hlen) != 0 ||
        memcmp(m->key + hlen, raw, rlen) != 0)
        return 0;
    sbuf_add(b, m->text, m->tlen);
    return 1;
}

/* Keep text (formatted from h + raw) when it fits. */
static void al_memo_put(struct al_memo *m, const void *h, size_t hlen, const unsigned char *raw,
                        size_t rlen, const char *text, size_t tlen)
{
    m->valid = 0;
    if (hlen + rlen > sizeof(m->key) || tlen > sizeof(m->text))
        return;
    memcpy(m->key, h, hlen);
    memcpy(m->key + hlen, raw, rlen);
    memcpy(m->text, text, tlen);
    m->klen = hlen + rlen;
    m->tlen = tlen;
    m->valid = 1;
}

/* The numbers that go into the members from "effect" on. */
struct al_memo_dec {
    int64_t step_up_max_age;
    uint64_t reasons_dropped, monitor_dropped;
    uint8_t has_decision, effect, step_up_mfa, nreasons, nmonitor, nfailing, zero[2];
};

/* The members from "effect" to "device_failing" of a record whose strings
 * up to "version" are read (blob, bloblen, off: the reasons): 0, or -1
 * when the rest of the record is malformed. */
static int al_format_verdict(struct al_rd *r, struct sbuf *b, const struct al_rec_dec *f,
                             const char *const *s, const size_t *n, const char *blob,
                             size_t bloblen, const uint16_t *off)
{
    const char *str, *un[POLICY_MONITOR_MAX];
    size_t len, i, k, nun, unlen[POLICY_MONITOR_MAX];
    char tmp[160];

    if (f->has_decision) {
        AL_STR_N(b, "effect", policy_effect_name((enum policy_effect)f->effect),
                 strlen(policy_effect_name((enum policy_effect)f->effect)));
        AL_STR_N(b, "rule", s[AL_S_RULE], n[AL_S_RULE]);
        AL_KEY(b, "reasons");
        sbuf_add(b, "[", 1);
        for (i = 0; i < f->nreasons; i++) {
            const char *nul;

            if (off[i] >= bloblen || (nul = memchr(blob + off[i], '\0', bloblen - off[i])) == NULL)
                return -1;
            if (i > 0)
                sbuf_add(b, ",", 1);
            sbuf_add(b, "\"", 1);
            al_escape(b, blob + off[i], (size_t)(nul - (blob + off[i])));
            sbuf_add(b, "\"", 1);
        }
        sbuf_add(b, "]", 1);
        if (f->reasons_dropped > 0) {
            snprintf(tmp, sizeof(tmp), ",\"reasons_dropped\":%" PRIu64, f->reasons_dropped);
            sbuf_str(b, tmp);
        }
        if (f->effect == POLICY_STEP_UP) {
            snprintf(tmp, sizeof(tmp), ",\"step_up\":{\"max_age\":%" PRId64 ",\"mfa\":%s}",
                     f->step_up_max_age, f->step_up_mfa ? "true" : "false");
            sbuf_str(b, tmp);
        }
        AL_STR_N(b, "version", s[AL_S_VERSION] != NULL ? s[AL_S_VERSION] : "", n[AL_S_VERSION]);
        /*
         * Monitor rules that matched are written whole; those that did not
         * only by id, under "monitor_unmatched": their would_decide is the
         * decision itself, and with a few monitor rules on a route the
         * entries were a third of every line.
         */
        AL_KEY(b, "monitor");
        sbuf_add(b, "[", 1);
        nun = 0;
        for (i = 0, k = 0; i < f->nmonitor; i++) {
            uint8_t eff = al_rd_u8(r), matched = al_rd_u8(r), would = al_rd_u8(r);

            al_rd_str(r, &str, &len);
            if (r->bad || !al_effect_ok(eff) || matched > 2 || !al_effect_ok(would) || str == NULL)
                return -1;
            if (matched == 0) {
                un[nun] = str;
                unlen[nun++] = len;
                continue;
            }
            sbuf_add(b, k > 0 ? ",{" : "{", k > 0 ? 2 : 1);
            k++;
            sbuf_add(b, "\"rule\":\"", 8);
            al_escape(b, str, len);
            sbuf_lit(b, "\",\"effect\":\"");
            sbuf_str(b, policy_effect_name((enum policy_effect)eff));
            if (matched == 2)
                sbuf_lit(b, "\",\"matched\":\"step_up\",\"would_decide\":\"");
            else
                sbuf_lit(b, "\",\"matched\":true,\"would_decide\":\"");
            sbuf_str(b, policy_effect_name((enum policy_effect)would));
            sbuf_lit(b, "\"}");
        }
        sbuf_add(b, "]", 1);
        if (nun > 0) {
            AL_KEY(b, "monitor_unmatched");
            for (i = 0; i < nun; i++) {
                sbuf_add(b, i > 0 ? ",\"" : "[\"", 2);
                al_escape(b, un[i], unlen[i]);
                sbuf_add(b, "\"", 1);
            }
            sbuf_add(b, "]", 1);
        }
        if (f->monitor_dropped > 0) {
            snprintf(tmp, sizeof(tmp), ",\"monitor_dropped\":%" PRIu64, f->monitor_dropped);
            sbuf_str(b, tmp);
        }
    } else if (s[AL_S_RULE] != NULL || s[AL_S_VERSION] != NULL) {
        return -1;
    }
    if (f->nfailing > 0) {
        AL_KEY(b, "device_failing");
        sbuf_add(b, "[", 1);
        for (i = 0; i < f->nfailing; i++) {
            al_rd_str(r, &str, &len);
            if (r->bad || str == NULL)
                return -1;
            if (i > 0)
                sbuf_add(b, ",", 1);
            sbuf_add(b, "\"", 1);
            al_escape(b, str, len);
            sbuf_add(b, "\"", 1);
        }
        sbuf_add(b, "]", 1);
    }
    if (r->p != r->end)
        return -1; /* bytes left over: not a record we wrote */
    return 0;
}

/* The JSON line ("{...}\n", without "prev"/"hash") of a decision record's
 * body (after the header): 0, or -1 when the record is malformed (b then
 * holds nothing usable). memo: AL_MEMO_N memos of this batch. */
static int al_format_decision(struct al_rd *r, struct sbuf *b, struct al_memo *memo)
{
    struct al_rec_dec f;
    struct al_memo_dec md;
    const unsigned char *pos[AL_DEC_NSTR];
    const char *s[AL_DEC_NSTR], *blob = NULL;
    size_t n[AL_DEC_NSTR], bloblen = 0, i, start;
    uint16_t off[POLICY_REASONS_MAX];
    int32_t who[2];
    char tmp[8];

    al_rd_get(r, &f, sizeof(f));
    if (r->bad || f.has_decision > 1 || f.step_up_mfa > 1 || f.path_cut > 1 || f.zero != 0 ||
        f.nreasons > POLICY_REASONS_MAX || f.nmonitor > POLICY_MONITOR_MAX ||
        f.nfailing > AUDITLOG_FAILING_MAX || !al_effect_ok(f.effect) ||
        (!f.has_decision && (f.nreasons != 0 || f.nmonitor != 0)))
        return -1;
    for (i = 0; i < AL_DEC_NSTR; i++) {
        pos[i] = r->p;
        al_rd_str(r, &s[i], &n[i]);
    }
    if (f.has_decision) {
        al_rd_str(r, &blob, &bloblen);
        if (blob == NULL)
            return -1;
        al_rd_get(r, off, 2 * (size_t)f.nreasons);
    }
    if (r->bad)
        return -1;

    sbuf_lit(b, "{\"time\":\"");
    al_time(b, f.time_ms);
    sbuf_lit(b, "\"");
    AL_STR_N(b, "request_id", s[AL_S_REQUEST_ID], n[AL_S_REQUEST_ID]);
    /* "user" to "route": the strings user..route as they lie in the record
     * (contiguous), with the score and the ASN. */
    who[0] = f.score;
    memcpy(&who[1], &f.asn, sizeof(f.asn));
    if (!al_memo_get(&memo[AL_MEMO_WHO], who, sizeof(who), pos[AL_S_USER],
                     (size_t)(pos[AL_S_METHOD] - pos[AL_S_USER]), b)) {
        start = b->len;
        AL_STR_N(b, "user", s[AL_S_USER], n[AL_S_USER]);
        AL_STR_N(b, "email", s[AL_S_EMAIL], n[AL_S_EMAIL]);
        AL_STR_N(b, "device", s[AL_S_DEVICE], n[AL_S_DEVICE]);
        AL_STR_N(b, "tier", s[AL_S_TIER], n[AL_S_TIER]);
        AL_KEY(b, "score");
        if (f.score >= 0)
            sbuf_u64(b, (uint64_t)f.score);
        else
            sbuf_lit(b, "null");
        AL_STR_N(b, "client", s[AL_S_CLIENT], n[AL_S_CLIENT]);
        AL_STR_N(b, "country", s[AL_S_COUNTRY], n[AL_S_COUNTRY]);
        if (f.asn != 0) {
            AL_KEY(b, "asn");
            sbuf_u64(b, (uint64_t)f.asn);
        }
        AL_STR_N(b, "route", s[AL_S_ROUTE], n[AL_S_ROUTE]);
        if (!b->failed)
            al_memo_put(&memo[AL_MEMO_WHO], who, sizeof(who), pos[AL_S_USER],
                        (size_t)(pos[AL_S_METHOD] - pos[AL_S_USER]), b->p + start, b->len - start);
    }
    AL_STR_N(b, "method", s[AL_S_METHOD], n[AL_S_METHOD]);
    AL_STR_N(b, "path", s[AL_S_PATH], n[AL_S_PATH]);
    if (f.path_cut)
        sbuf_add(b, ",\"path_cut\":true", 16);
    /* "effect" to "device_failing": everything from the rule string to the
     * end of the record, with the numbers that go into it. */
    memset(&md, 0, sizeof(md));
    md.step_up_max_age = f.step_up_max_age;
    md.reasons_dropped = f.reasons_dropped;
    md.monitor_dropped = f.monitor_dropped;
    md.has_decision = f.has_decision;
    md.effect = f.effect;
    md.step_up_mfa = f.step_up_mfa;
    md.nreasons = f.nreasons;
    md.nmonitor = f.nmonitor;
    md.nfailing = f.nfailing;
    if (al_memo_get(&memo[AL_MEMO_DECISION], &md, sizeof(md), pos[AL_S_RULE],
                    (size_t)(r->end - pos[AL_S_RULE]), b)) {
        r->p = r->end;
    } else {
        start = b->len;
        if (al_format_verdict(r, b, &f, s, n, blob, bloblen, off) == -1)
            return -1;
        if (!b->failed)
            al_memo_put(&memo[AL_MEMO_DECISION], &md, sizeof(md), pos[AL_S_RULE],
                        (size_t)(r->end - pos[AL_S_RULE]), b->p + start, b->len - start);
    }
    sbuf_lit(b, ",\"eval_us\":");
    sbuf_u64(b, f.eval_ns / 1000);
    tmp[0] = '.';
    tmp[1] = (char)('0' + f.eval_ns % 1000 / 100);
    tmp[2] = (char)('0' + f.eval_ns % 100 / 10);
    tmp[3] = (char)('0' + f.eval_ns % 10);
    sbuf_add(b, tmp, 4);
    sbuf_lit(b, "}\n");
    return 0;
}

/* The line of an admin record's body: 0 or -1. */
static int al_format_admin(struct al_rd *r, struct sbuf *b)
{
    int64_t t;
    const char *actor, *what, *detail;
    size_t la, lw, ld;

    al_rd_get(r, &t, 8);
    al_rd_str(r, &actor, &la);
    al_rd_str(r, &what, &lw);
    al_rd_str(r, &detail, &ld);
    if (r->bad || r->p != r->end)
        return -1;
    sbuf_lit(b, "{\"time\":\"");
    al_time(b, t);
    sbuf_lit(b, "\",\"event\":\"admin\"");
    AL_STR_N(b, "actor", actor, la);
    AL_STR_N(b, "what", what, lw);
    AL_KEY(b, "detail");
    /* detail_json is one line of JSON text: up to a NUL (strlen() on the
     * worker), never with a newline; anything else is written as null. */
    if (detail != NULL && ld > 0 && memchr(detail, '\n', ld) == NULL &&
        memchr(detail, '\0', ld) == NULL)
        sbuf_add(b, detail, ld);
    else
        sbuf_lit(b, "null");
    sbuf_lit(b, "}\n");
    return 0;
}

/* Is h (AL_REC_HDR bytes) a record header? Its total length then. */
static size_t al_hdr_len(const unsigned char *h)
{
    uint32_t l;

    memcpy(&l, h + 4, 4);
    if (h[0] != AL_MAGIC0 || h[1] != AL_MAGIC1 || h[3] != 0 || l < AL_REC_HDR ||
        l > AUDITLOG_RECORD_MAX)
        return 0;
    switch (h[2]) {
    case AL_REC_DECISION:
        return l >= AL_REC_HDR + sizeof(struct al_rec_dec) ? l : 0;
    case AL_REC_ADMIN:
        return l >= AL_REC_HDR + 8 + 6 ? l : 0;
    case AL_REC_OVERSIZE:
        return l == AL_REC_HDR ? l : 0;
    default:
        return 0;
    }
}

/* One record (rec[0..len), its header valid) as a line into b: 0, or -1. */
static int al_format_rec(const unsigned char *rec, size_t len, struct sbuf *b, struct al_memo *memo)
{
    struct al_rd r = {rec + AL_REC_HDR, rec + len, 0};

    switch (rec[2]) {
    case AL_REC_DECISION:
        return al_format_decision(&r, b, memo);
    case AL_REC_ADMIN:
        return al_format_admin(&r, b);
    default:
        return -1; /* AL_REC_OVERSIZE: its line was too long */
    }
}

/* Called with each formatted line (len bytes before its '\n', which
 * follows): 0, or -1 when the line is refused (counted as bad). */
typedef int (*al_line_fn)(void *arg, const char *line, size_t len);

/*
 * Format the records of in (all of it is drained) and hand each line to
 * fn; returns how many lines fn took. A malformed or truncated record, or
 * bytes that are no record (skipped up to the next header), add one to
 * *bad each, as does each line fn refuses.
 */
static size_t al_records(struct evbuffer *in, al_line_fn fn, void *arg, uint64_t *bad)
{
    char stack[4096];
    struct al_memo memo[AL_MEMO_N];
    struct sbuf sb;
    size_t n = 0;

    memo[AL_MEMO_WHO].valid = memo[AL_MEMO_DECISION].valid = 0;

    while (evbuffer_get_length(in) > 0) {
        unsigned char h[AL_REC_HDR];
        struct evbuffer_iovec v;
        const unsigned char *rec;
        size_t len = 0;

        if (evbuffer_copyout(in, h, AL_REC_HDR) == AL_REC_HDR)
            len = al_hdr_len(h);
        if (len == 0 || len > evbuffer_get_length(in)) {
            /* Not a record, or one cut short: never half a line. */
            (*bad)++;
            evbuffer_drain(in, rec_resync(in, AL_MAGIC0, AL_MAGIC1, al_hdr_len));
            continue;
        }
        /* Where it lies when it is in the first chunk, else made contiguous. */
        if (evbuffer_peek(in, (ev_ssize_t)len, NULL, &v, 1) >= 1 && v.iov_len >= len)
            rec = v.iov_base;
        else
            rec = evbuffer_pullup(in, (ev_ssize_t)len);
        sbuf_init(&sb, stack, sizeof(stack));
        if (rec != NULL && al_format_rec(rec, len, &sb, memo) == 0 && !sb.failed &&
            fn(arg, sb.p, sb.len - 1) == 0)
            n++;
        else
            (*bad)++;
        sbuf_free(&sb);
        evbuffer_drain(in, len);
    }
    return n;
}

static int al_line_to_buf(void *arg, const char *line, size_t len)
{
    return evbuffer_add(arg, line, len + 1) == 0 ? 0 : -1;
}

size_t auditlog_format(struct evbuffer *records, struct evbuffer *lines, uint64_t *bad)
{
    uint64_t b = 0;
    size_t n = al_records(records, al_line_to_buf, lines, &b);

    if (bad != NULL)
        *bad += b;
    return n;
}

/* ---- the writer thread --------------------------------------------------- */

#define AL_REOPEN_NONE (-2)

static pthread_mutex_t al_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t al_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t al_idle = PTHREAD_COND_INITIALIZER;
static struct evbuffer *al_queue;       /* al_mtx */
static struct evbuffer *al_pre;         /* al_mtx: records submitted before a pending reopen */
static int al_reopen = AL_REOPEN_NONE;  /* al_mtx: fd to switch to (-1: off) */
static int al_stopping;                 /* al_mtx */
static uint64_t al_seq_in, al_seq_done; /* al_mtx: submissions taken / finished */
static struct auditlog_stats al_st;     /* al_mtx */
static int al_running;                  /* main thread */
static pthread_t al_thread;
static _Atomic int al_on;

/* Writer-thread state. */
static int al_fd = -1;
static unsigned char al_prev[32];
static uint64_t al_file_lines; /* written to al_fd */

static int al_open(const char *dest, int *fd, char *err, size_t errlen)
{
    *fd = -1;
    if (strcmp(dest, "off") == 0)
        return 0;
    if (strcmp(dest, "stdout") == 0 || strcmp(dest, "stderr") == 0) {
        *fd =
            fcntl(strcmp(dest, "stdout") == 0 ? STDOUT_FILENO : STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    } else {
        /* Read access too: the chain continues from the file's last line. */
        *fd = open(dest, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    }
    if (*fd == -1) {
        snprintf(err, errlen, "audit log %s: cannot open: %s", dest, strerror(errno));
        return -1;
    }
    return 0;
}

/* Continue the chain of what fd already holds (writer thread). */
static void al_chain_init(int fd, EVP_MD_CTX *md)
{
    struct stat st;
    char *buf = NULL;
    size_t want, end, start;
    ssize_t got;

    memset(al_prev, 0, sizeof(al_prev));
    al_file_lines = 0;
    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode) || st.st_size == 0)
        return;
    want = (size_t)st.st_size < AUDITLOG_LINE_MAX + 1 ? (size_t)st.st_size : AUDITLOG_LINE_MAX + 1;
    buf = malloc(want);
    if (buf == NULL)
        goto unreadable;
    got = pread(fd, buf, want, st.st_size - (off_t)want);
    if (got != (ssize_t)want)
        goto unreadable;
    end = want;
    if (buf[end - 1] == '\n') {
        end--;
    } else {
        /* An unterminated last line (a crash, a full disk): end it, so our
         * lines stay lines; the chain goes on from it as it is, and verify
         * will point at it. */
        log_warnx("audit log: the file ends in an unterminated line; continuing after it");
        if (fileio_write_all(fd, "\n", 1) == -1)
            log_warn("audit log: cannot terminate the last line");
    }
    start = end;
    while (start > 0 && buf[start - 1] != '\n')
        start--;
    if (al_line_digest(md, buf + start, end - start, al_prev) == -1)
        memset(al_prev, 0, sizeof(al_prev));
    free(buf);
    return;
unreadable:
    /* stdout redirected to a file is open write-only: we cannot read it. */
    log_warnx("audit log: cannot read the end of the existing file; the chain restarts "
              "from the genesis value here");
    free(buf);
}

static void al_close_fd(void)
{
    char hex[65];

    if (al_fd < 0)
        return;
    if (al_file_lines > 0) {
        al_tohex(al_prev, hex);
        log_info("audit log: closing after %llu lines, last hash %s",
                 (unsigned long long)al_file_lines, hex);
    }
    close(al_fd);
    al_fd = -1;
}

/* Chained lines on their way to out (writer thread only): one
 * evbuffer_add() per batch or 64 KiB instead of two per line. Holds the
 * longest line al_chain_line() accepts. */
static char al_stage[AUDITLOG_LINE_MAX];
static size_t al_stage_len;

/* Hand the stage to out: copied (by_ref 0: more lines follow in this
 * batch), or by reference (the end of the batch: al_write_lines() writes or
 * drops all of out before the stage is used again, so no copy is needed). */
static void al_stage_flush(struct evbuffer *out, int by_ref)
{
    if (al_stage_len > 0 &&
        (!by_ref || evbuffer_add_reference(out, al_stage, al_stage_len, NULL, NULL) != 0))
        evbuffer_add(out, al_stage, al_stage_len);
    al_stage_len = 0;
}

/* Chain one line (len bytes before its newline) into out: 0, or -1 for a
 * line that is not ours (dropped). head holds "{"prev":"<hex of al_prev>","
 * on entry, and the next line's on return. */
static int al_chain_line(const char *line, size_t len, char *head, struct evbuffer *out,
                         EVP_MD_CTX *md)
{
    unsigned char x[32];
    unsigned int xl = 0;
    char *o;

    if (len < 2 || line[0] != '{' || len > AUDITLOG_LINE_MAX - AL_HEAD_LEN)
        return -1;
    if (EVP_DigestInit_ex(md, al_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(md, head, AL_PREV_LEN) != 1 ||
        EVP_DigestUpdate(md, line + 1, len - 1) != 1 || EVP_DigestFinal_ex(md, x, &xl) != 1)
        return -1;
    al_tohex(x, head + AL_PREV_LEN + AL_HASH_KEY_LEN);
    head[AL_PREV_LEN + AL_HASH_KEY_LEN + 64] = '"'; /* al_tohex() put a NUL there */
    /* {"prev":..., "hash":..., then the members, "}" and the newline, into
     * the stage (handed to out when full and at the end of the batch). */
    if (al_stage_len + AL_HEAD_LEN + len > sizeof(al_stage))
        al_stage_flush(out, 0);
    o = al_stage + al_stage_len;
    memcpy(o, head, AL_HEAD_LEN);
    memcpy(o + AL_HEAD_LEN, line + 1, len);
    al_stage_len += AL_HEAD_LEN + len;
    memcpy(al_prev, x, sizeof(al_prev));
    /* The next line's "prev" is this line's hash, already in hex. */
    memcpy(head + AL_PREV_KEY_LEN, head + AL_PREV_LEN + AL_HASH_KEY_LEN, 64);
    return 0;
}

struct al_chainer {
    char head[AL_HEAD_LEN + 1];
    struct evbuffer *out;
    EVP_MD_CTX *md;
};

static int al_chain_cb(void *arg, const char *line, size_t len)
{
    struct al_chainer *c = arg;

    return al_chain_line(line, len, c->head, c->out, c->md);
}

/* Format the records of in, chain the lines into out; returns how many. */
static size_t al_chain(struct evbuffer *in, struct evbuffer *out, EVP_MD_CTX *md, uint64_t *bad)
{
    struct al_chainer c;
    size_t n;

    /* {"prev":"<64 hex>", then "hash":"<64 hex>", (fixed lengths) */
    memcpy(c.head, AL_PREV_KEY, AL_PREV_KEY_LEN);
    al_tohex(al_prev, c.head + AL_PREV_KEY_LEN);
    memcpy(c.head + AL_PREV_KEY_LEN + 64, "\",", 2);
    memcpy(c.head + AL_PREV_LEN, AL_HASH_KEY, AL_HASH_KEY_LEN);
    memcpy(c.head + AL_PREV_LEN + AL_HASH_KEY_LEN + 64, "\",", 2);
    c.out = out;
    c.md = md;
    n = al_records(in, al_chain_cb, &c, bad);
    al_stage_flush(out, 1);
    return n;
}

struct al_batch {
    uint64_t written, lost, bad, errs;
};

/* Format, chain and write the records of in to al_fd (writer thread). */
static void al_write_lines(struct evbuffer *in, struct evbuffer *out, EVP_MD_CTX *md,
                           struct al_batch *b)
{
    size_t n, lost = 0;

    if (evbuffer_get_length(in) == 0)
        return;
    if (al_fd < 0) {
        b->lost += rec_count(in, al_hdr_len);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    n = al_chain(in, out, md, &b->bad);
    while (evbuffer_get_length(out) > 0) {
        int w = evbuffer_write(out, al_fd);
        if (w > 0)
            continue;
        if (w == -1 && errno == EINTR)
            continue;
        b->errs++;
        lost = rec_count_lines(out);
        log_warn("audit log: write failed, %zu lines lost (the chain shows the gap)", lost);
        evbuffer_drain(out, evbuffer_get_length(out));
    }
    al_file_lines += n - lost;
    b->written += n - lost;
    b->lost += lost;
}

static void *al_main(void *arg)
{
    struct evbuffer *pre = evbuffer_new(), *in = evbuffer_new(), *out = evbuffer_new();
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int done = 0;

    (void)arg;
    /* Behind the workers when the cores are busy (it needs a few percent of
     * one; the queue absorbs the delay, and is bounded). */
    thread_lower_priority(5, "audit log writer");
    if (pre == NULL || in == NULL || out == NULL || md == NULL)
        fatalx("audit log: out of memory");
    if (al_fd >= 0)
        al_chain_init(al_fd, md);
    while (!done) {
        struct al_batch b = {0, 0, 0, 0};
        uint64_t seq;
        int reopen;

        pthread_mutex_lock(&al_mtx);
        while (evbuffer_get_length(al_queue) == 0 && !al_stopping && al_reopen == AL_REOPEN_NONE)
            pthread_cond_wait(&al_work, &al_mtx);
        evbuffer_add_buffer(pre, al_pre);
        evbuffer_add_buffer(in, al_queue);
        seq = al_seq_in;
        reopen = al_reopen;
        al_reopen = AL_REOPEN_NONE;
        done = al_stopping;
        pthread_mutex_unlock(&al_mtx);

        /* What came before the reopen goes to the old file, the rest to
         * the new one. */
        al_write_lines(pre, out, md, &b);
        if (reopen != AL_REOPEN_NONE) {
            al_close_fd();
            al_fd = reopen;
            if (al_fd >= 0)
                al_chain_init(al_fd, md);
        }
        al_write_lines(in, out, md, &b);

        pthread_mutex_lock(&al_mtx);
        al_st.lines += b.written;
        al_st.dropped += b.lost + b.bad;
        metrics_add(METRICS_AUDIT_DROPPED, b.lost + b.bad);
        al_st.write_errors += b.errs;
        if (al_file_lines > 0)
            al_tohex(al_prev, al_st.head);
        al_seq_done = seq;
        pthread_cond_broadcast(&al_idle);
        pthread_mutex_unlock(&al_mtx);
        if (b.bad > 0)
            log_warnx("audit log: %llu malformed submissions dropped", (unsigned long long)b.bad);
    }
    al_close_fd();
    EVP_MD_CTX_free(md);
    evbuffer_free(pre);
    evbuffer_free(in);
    evbuffer_free(out);
    return NULL;
}

int auditlog_start(const char *dest, char *err, size_t errlen)
{
    int fd;

    if (al_running) {
        snprintf(err, errlen, "audit log: already started");
        return -1;
    }
    if (al_open(dest, &fd, err, errlen) == -1)
        return -1;
    al_queue = evbuffer_new();
    al_pre = evbuffer_new();
    if (al_queue == NULL || al_pre == NULL) {
        evbuffer_free(al_queue);
        evbuffer_free(al_pre);
        al_queue = al_pre = NULL;
        if (fd >= 0)
            close(fd);
        snprintf(err, errlen, "audit log: out of memory");
        return -1;
    }
    al_fd = fd;
    al_stopping = 0;
    al_reopen = AL_REOPEN_NONE;
    al_seq_in = al_seq_done = 0;
    memset(&al_st, 0, sizeof(al_st));
    if (pthread_create(&al_thread, NULL, al_main, NULL) != 0) {
        snprintf(err, errlen, "audit log: cannot start the writer thread");
        if (fd >= 0)
            close(fd);
        al_fd = -1;
        evbuffer_free(al_queue);
        evbuffer_free(al_pre);
        al_queue = al_pre = NULL;
        return -1;
    }
    al_running = 1;
    atomic_store(&al_on, fd >= 0);
    return 0;
}

int auditlog_reopen(const char *dest, char *err, size_t errlen)
{
    int fd, old;

    if (!al_running)
        return auditlog_start(dest, err, errlen);
    if (al_open(dest, &fd, err, errlen) == -1)
        return -1;
    pthread_mutex_lock(&al_mtx);
    old = al_reopen;
    al_reopen = fd;
    evbuffer_add_buffer(al_pre, al_queue);
    al_seq_in++;
    pthread_cond_signal(&al_work);
    pthread_mutex_unlock(&al_mtx);
    if (old >= 0) /* two reopens before the writer looked: the first is moot */
        close(old);
    atomic_store(&al_on, fd >= 0);
    return 0;
}

int auditlog_enabled(void)
{
    return atomic_load_explicit(&al_on, memory_order_relaxed);
}

void auditlog_submit(struct evbuffer *buf)
{
    size_t len = evbuffer_get_length(buf);

    if (len == 0)
        return;
    if (!atomic_load_explicit(&al_on, memory_order_relaxed)) {
        evbuffer_drain(buf, len);
        return;
    }
    pthread_mutex_lock(&al_mtx);
    if (evbuffer_get_length(al_queue) + evbuffer_get_length(al_pre) + len > AUDITLOG_QUEUE_MAX) {
        /* The disk is not keeping up: lose records rather than memory, and
         * say so (the count is in the stats). */
        size_t n = rec_count(buf, al_hdr_len);

        al_st.dropped += n;
        pthread_mutex_unlock(&al_mtx);
        metrics_add(METRICS_AUDIT_DROPPED, n);
        evbuffer_drain(buf, len);
        log_warnx("audit log: queue full, %zu bytes of decisions dropped", len);
        return;
    }
    evbuffer_add_buffer(al_queue, buf);
    al_seq_in++;
    pthread_cond_signal(&al_work);
    pthread_mutex_unlock(&al_mtx);
}

void auditlog_flush(void)
{
    uint64_t want;

    if (!al_running)
        return;
    pthread_mutex_lock(&al_mtx);
    want = al_seq_in;
    while (al_seq_done < want)
        pthread_cond_wait(&al_idle, &al_mtx);
    pthread_mutex_unlock(&al_mtx);
}

void auditlog_stop(void)
{
    if (!al_running)
        return;
    pthread_mutex_lock(&al_mtx);
    al_stopping = 1;
    pthread_cond_signal(&al_work);
    pthread_mutex_unlock(&al_mtx);
    pthread_join(al_thread, NULL);
    al_running = 0;
    atomic_store(&al_on, 0);
    if (al_reopen >= 0)
        close(al_reopen);
    al_reopen = AL_REOPEN_NONE;
    evbuffer_free(al_queue);
    evbuffer_free(al_pre);
    al_queue = al_pre = NULL;
}

void auditlog_stats(struct auditlog_stats *out)
{
    pthread_mutex_lock(&al_mtx);
    *out = al_st;
    pthread_mutex_unlock(&al_mtx);
}

/* ---- verification ------------------------------------------------------- */

struct al_verifier {
    EVP_MD_CTX *md;
    unsigned char expect[32];
    uint64_t line;
};

/* 0 good, else the line number with err set. */
static int al_verify_line(struct al_verifier *v, const char *line, size_t len, char *err,
                          size_t errlen)
{
    unsigned char prev[32], hash[32], x[32];

    v->line++;
    if (al_line_split(line, len, prev, hash) == -1 || line[len - 1] != '}') {
        snprintf(err, errlen, "not an audit line (no \"prev\"/\"hash\" members)");
        return (int)v->line;
    }
    if (al_line_digest(v->md, line, len, x) == -1) {
        snprintf(err, errlen, "cannot compute SHA-256");
        return -1;
    }
    if (memcmp(x, hash, 32) != 0) {
        snprintf(err, errlen, "line was altered: its content does not match its \"hash\"");
        return (int)v->line;
    }
    if (memcmp(prev, v->expect, 32) != 0) {
        if (v->line == 1)
            snprintf(err, errlen,
                     "\"prev\" is not the genesis value: lines before it were removed (or the "
                     "file was cut)");
        else
            snprintf(err, errlen,
                     "\"prev\" does not match line %llu: a line was removed, inserted or "
                     "reordered just before this one",
                     (unsigned long long)(v->line - 1));
        return (int)v->line;
    }
    memcpy(v->expect, x, 32);
    return 0;
}

static int al_verify_init(struct al_verifier *v, char *err, size_t errlen)
{
    memset(v, 0, sizeof(*v));
    v->md = EVP_MD_CTX_new();
    if (v->md == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void al_verify_ok(struct al_verifier *v, char *err, size_t errlen)
{
    char hex[65];

    al_tohex(v->expect, hex);
    snprintf(err, errlen, "%llu lines, last hash %s", (unsigned long long)v->line,
             v->line > 0 ? hex : AUDITLOG_GENESIS);
}

int auditlog_verify_buf(const char *data, size_t len, char *err, size_t errlen)
{
    struct al_verifier v;
    size_t off = 0;
    int rc = 0;

    if (al_verify_init(&v, err, errlen) == -1)
        return -1;
    while (off < len && rc == 0) {
        const char *nl = memchr(data + off, '\n', len - off);
        if (nl == NULL) {
            v.line++;
            snprintf(err, errlen, "unterminated last line (an interrupted write?)");
            rc = (int)v.line;
            break;
        }
        rc = al_verify_line(&v, data + off, (size_t)(nl - (data + off)), err, errlen);
        off = (size_t)(nl - data) + 1;
    }
    if (rc == 0)
        al_verify_ok(&v, err, errlen);
    EVP_MD_CTX_free(v.md);
    return rc;
}

int auditlog_verify_file(const char *path, char *err, size_t errlen)
{
    struct al_verifier v;
    char *buf = NULL;
    size_t off = 0, have = 0, cap = AUDITLOG_LINE_MAX + 1;
    int rc = 0, eof = 0;
    FILE *f;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return -1;
    }
    buf = malloc(cap);
    if (buf == NULL || al_verify_init(&v, err, errlen) == -1) {
        if (buf == NULL)
            snprintf(err, errlen, "out of memory");
        free(buf);
        fclose(f);
        return -1;
    }
    /* buf[off..have) is unread; a line must fit in the buffer whole. */
    while (rc == 0) {
        char *nl = memchr(buf + off, '\n', have - off);
        size_t n;

        if (nl != NULL) {
            rc = al_verify_line(&v, buf + off, (size_t)(nl - (buf + off)), err, errlen);
            off = (size_t)(nl - buf) + 1;
            continue;
        }
        if (eof) {
            if (have > off) {
                v.line++;
                snprintf(err, errlen, "unterminated last line (an interrupted write?)");
                rc = (int)v.line;
            }
            break;
        }
        if (off > 0) {
            memmove(buf, buf + off, have - off);
            have -= off;
            off = 0;
        }
        if (have == cap) {
            v.line++;
            snprintf(err, errlen, "line longer than %d bytes: not an audit line",
                     AUDITLOG_LINE_MAX);
            rc = (int)v.line;
            break;
        }
        n = fread(buf + have, 1, cap - have, f);
        have += n;
        if (n == 0) {
            if (ferror(f)) {
                snprintf(err, errlen, "read error: %s", strerror(errno));
                rc = -1;
                break;
            }
            eof = 1;
        }
    }
    if (rc == 0)
        al_verify_ok(&v, err, errlen);
    EVP_MD_CTX_free(v.md);
    free(buf);
    fclose(f);
    return rc;
}
