/*
 * rec.h - what the audit and access log queues share: workers append binary
 * records (a header starting with two magic bytes and giving the record's
 * length, then the fields) that the writer thread decodes and formats.
 */
#ifndef ZT_REC_H
#define ZT_REC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <event2/buffer.h>

#define REC_HDR 8 /* bytes of a record header */

/* n bytes from s to o, for the short strings the audit and access log
 * records copy (ids, names, an address): two possibly overlapping
 * fixed-size copies each, which the compiler inlines, instead of a call to
 * memcpy(). */
static inline void rec_copy_small(unsigned char *o, const char *s, size_t n)
{
    uint64_t a, b, c, d;
    uint32_t x, y;

    if (n >= 8) {
        if (n > 32) {
            memcpy(o, s, n);
        } else if (n > 16) {
            memcpy(&a, s, 8);
            memcpy(&b, s + 8, 8);
            memcpy(&c, s + n - 16, 8);
            memcpy(&d, s + n - 8, 8);
            memcpy(o, &a, 8);
            memcpy(o + 8, &b, 8);
            memcpy(o + n - 16, &c, 8);
            memcpy(o + n - 8, &d, 8);
        } else {
            memcpy(&a, s, 8);
            memcpy(&b, s + n - 8, 8);
            memcpy(o, &a, 8);
            memcpy(o + n - 8, &b, 8);
        }
    } else if (n >= 4) {
        memcpy(&x, s, 4);
        memcpy(&y, s + n - 4, 4);
        memcpy(o, &x, 4);
        memcpy(o + n - 4, &y, 4);
    } else if (n > 0) {
        o[0] = (unsigned char)s[0];
        o[n / 2] = (unsigned char)s[n / 2];
        o[n - 1] = (unsigned char)s[n - 1];
    }
}
/*
 * Skip from the start of in (where no valid header is) to the next byte
 * sequence that reads as a header (m0 m1 ..., hdr_len() > 0) of a record
 * lying wholly in in, or to the end. Returns the bytes to drain.
 */
static inline size_t rec_resync(struct evbuffer *in, unsigned char m0, unsigned char m1,
                                size_t (*hdr_len)(const unsigned char *h))
{
    const char magic[2] = {(char)m0, (char)m1};
    size_t total = evbuffer_get_length(in);
    struct evbuffer_ptr p;
    unsigned char h[REC_HDR];

    if (evbuffer_ptr_set(in, &p, 1, EVBUFFER_PTR_SET) == -1)
        return total;
    for (;;) {
        size_t l;

        p = evbuffer_search(in, magic, 2, &p);
        if (p.pos < 0)
            return total;
        if ((size_t)p.pos + REC_HDR <= total &&
            evbuffer_copyout_from(in, &p, h, REC_HDR) == REC_HDR && (l = hdr_len(h)) > 0 &&
            (size_t)p.pos + l <= total)
            return (size_t)p.pos;
        if (evbuffer_ptr_set(in, &p, 1, EVBUFFER_PTR_ADD) == -1)
            return total;
    }
}

/*
 * How many records b holds (good ones, and each run of bytes that is none,
 * as the writers count them), without draining it: for counting what is
 * dropped when a queue is full.
 */
static inline size_t rec_count(struct evbuffer *b, size_t (*hdr_len)(const unsigned char *h))
{
    size_t pos = 0, total = evbuffer_get_length(b), n = 0;
    struct evbuffer_ptr p;
    unsigned char h[REC_HDR];

    if (total == 0 || evbuffer_ptr_set(b, &p, 0, EVBUFFER_PTR_SET) == -1)
        return 0;
    for (;;) {
        size_t l = 0;

        if (evbuffer_copyout_from(b, &p, h, REC_HDR) == REC_HDR)
            l = hdr_len(h);
        n++;
        if (l == 0 || l >= total - pos)
            break; /* the last one, or the rest as one */
        pos += l;
        if (evbuffer_ptr_set(b, &p, l, EVBUFFER_PTR_ADD) == -1)
            break;
    }
    return n;
}

/* Lines in b (each ends with a newline), without draining it: for counting
 * what a failed write loses. */
static inline size_t rec_count_lines(struct evbuffer *b)
{
    struct evbuffer_ptr p;
    size_t n = 0;

    if (evbuffer_ptr_set(b, &p, 0, EVBUFFER_PTR_SET) == -1)
        return 0;
    for (;;) {
        p = evbuffer_search(b, "\n", 1, &p);
        if (p.pos < 0)
            return n;
        n++;
        if (evbuffer_ptr_set(b, &p, 1, EVBUFFER_PTR_ADD) == -1)
            return n;
    }
}

#endif
