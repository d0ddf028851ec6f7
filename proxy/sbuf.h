/*
 * sbuf.h - build a string in a caller's stack buffer, growing to the heap
 * only when it does not fit. The hot path (request and response heads,
 * access log lines) uses it to hand libevent one piece instead of many
 * small evbuffer_add()/printf calls.
 */
#ifndef ZT_SBUF_H
#define ZT_SBUF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct sbuf {
    char *p;
    size_t len;
    size_t cap;
    int heap;   /* p was malloc'd by sbuf_grow() */
    int failed; /* out of memory: the content is incomplete */
};

static inline void sbuf_init(struct sbuf *s, char *stack, size_t cap)
{
    s->p = stack;
    s->len = 0;
    s->cap = cap;
    s->heap = 0;
    s->failed = 0;
}

static inline int sbuf_grow(struct sbuf *s, size_t need)
{
    size_t cap = s->cap * 2;
    char *np;

    while (cap < s->len + need)
        cap *= 2;
    np = s->heap ? realloc(s->p, cap) : malloc(cap);
    if (np == NULL) {
        s->failed = 1;
        return -1;
    }
    if (!s->heap)
        memcpy(np, s->p, s->len);
    s->p = np;
    s->cap = cap;
    s->heap = 1;
    return 0;
}

static inline void sbuf_add(struct sbuf *s, const void *d, size_t n)
{
    if (s->len + n > s->cap && sbuf_grow(s, n) == -1)
        return;
    memcpy(s->p + s->len, d, n);
    s->len += n;
}

#define sbuf_lit(s, lit) sbuf_add((s), (lit), sizeof(lit) - 1)

static inline void sbuf_str(struct sbuf *s, const char *str)
{
    sbuf_add(s, str, strlen(str));
}

static inline void sbuf_u64(struct sbuf *s, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    sbuf_add(s, tmp + i, sizeof(tmp) - i);
}

/* JSON string contents: quotes, backslashes and control bytes escaped. */
static inline void sbuf_json(struct sbuf *s, const char *str, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    size_t i, start = 0;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)str[i];
        char esc[6] = {'\\', 'u', '0', '0', 0, 0};

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            continue;
        sbuf_add(s, str + start, i - start);
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            sbuf_add(s, esc, 2);
        } else {
            esc[4] = hx[c >> 4];
            esc[5] = hx[c & 15];
            sbuf_add(s, esc, 6);
        }
        start = i + 1;
    }
    sbuf_add(s, str + start, n - start);
}

static inline void sbuf_free(struct sbuf *s)
{
    if (s->heap)
        free(s->p);
    s->p = NULL;
    s->heap = 0;
}

#endif
