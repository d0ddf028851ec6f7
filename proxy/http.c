/*
 * http.c - strict HTTP/1.1 request and response head parsing.
 *
 * Pure code: no allocation, no I/O, no mutable globals. The caller re-calls
 * the parser with a longer buffer as bytes arrive; every call is one pass
 * over the bytes it has, left to right, so a verdict reached on a prefix
 * (an error, or a complete head) stays the verdict for any longer buffer.
 * Errors are reported at the first byte that makes the head invalid
 * or exceeds a limit, not when the head is complete.
 *
 * Choices made where RFC 9112 leaves room (all on the strict side, because
 * a proxy that is more lenient than its upstream is a smuggling vector):
 *  - An empty line before the request line (RFC 9112 2.2 "SHOULD ignore")
 *    is rejected: a keep-alive client that sends stray CRLF after a body is
 *    broken, and skipping it would make head_len disagree with the bytes
 *    the caller forwards.
 *  - A version of the form "HTTP/" DIGIT "." DIGIT other than 1.0 and 1.1
 *    ("HTTP/2.0", "HTTP/0.9") is 505, reported at the first wrong digit;
 *    anything else malformed is 400.
 *  - An Expect value other than 100-continue is 417. Expect in an HTTP/1.0
 *    request is ignored (RFC 9110 10.1.1).
 *  - "Content-Length: 0" gives HTTP_BODY_LENGTH with content_length 0.
 *  - Host: reg-name restricted to ALPHA DIGIT - . _, or an IPv6 literal in
 *    brackets (hex digits, ':' and '.'; no zone id, no IPvFuture); an
 *    optional port of 1-5 digits <= 65535. host/host_len keep the brackets
 *    of an IPv6 literal. HTTP/1.0 requests without Host leave host NULL.
 *  - absolute-form: scheme http or https (case-insensitive), no userinfo.
 *    path is "/" when the target has none.
 *  - asterisk-form: path is "*" (a slice of the target), only for OPTIONS.
 *  - authority-form (CONNECT only) needs a port; path is NULL.
 *  - The field limit is the smallest of lim->max_headers, cap and
 *    HTTP_MAX_HEADERS.
 */
#include "http.h"

#include <string.h>

/* Character classes: one table lookup per byte on the hot path. */
#define CC_TCHAR 0x01  /* token (RFC 9110 5.6.2) */
#define CC_VALUE 0x02  /* field-value octet: HTAB SP VCHAR obs-text */
#define CC_TARGET 0x04 /* request-target octet: 0x21-0x7E */
#define CC_HOST 0x08   /* accepted reg-name octet: ALPHA DIGIT - . _ */
#define CC_DIGIT 0x10
#define CC_HEX 0x20

static const unsigned char cc[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x07, 0x06, 0x07, 0x07, 0x07, 0x07, 0x07, 0x06, 0x06, 0x07, 0x07, 0x06, 0x0f, 0x0f, 0x06,
    0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x06, 0x06, 0x06, 0x06, 0x06, 0x06,
    0x06, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f,
    0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x06, 0x06, 0x06, 0x07, 0x0f,
    0x07, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x2f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f,
    0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x0f, 0x06, 0x07, 0x06, 0x07, 0x00,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
};

/* State of one parse call: the bytes it may look at and the error. */
struct scan {
    const unsigned char *b;
    size_t end;       /* min(len, max_head): bytes that may belong to the head */
    int at_limit;     /* len >= max_head: running out of bytes means 431 */
    size_t max_field; /* field count limit */
    int status;       /* error status (requests) */
    const char *why;  /* static error reason */
};

/* What the fields say, gathered while they are scanned. */
struct fields {
    size_t nhost;
    const char *host; /* Host value, validated */
    size_t host_len;  /* without the port */
    size_t ncl;
    uint64_t cl;
    size_t nte;
    int conn_close;
    int conn_keep_alive;
    int conn_upgrade;
    int upgrade_ws;
    int expect_continue;
};

static enum http_parse_status fail(struct scan *s, int status, const char *why)
{
    s->status = status;
    s->why = why;
    return HTTP_PARSE_ERROR;
}

/* Out of bytes before the head ended: wait, unless max_head is reached. */
static enum http_parse_status more(struct scan *s)
{
    if (s->at_limit)
        return fail(s, 431, "header section too large");
    return HTTP_PARSE_INCOMPLETE;
}

static unsigned char ascii_lower(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return (unsigned char)(c + ('a' - 'A'));
    return c;
}

static int ascii_caseeq(const char *a, const char *b, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
            return 0;
    }
    return 1;
}

int http_token_eq(const char *s, size_t len, const char *lower_literal)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (lower_literal[i] == '\0')
            return 0;
        if (ascii_lower((unsigned char)s[i]) != (unsigned char)lower_literal[i])
            return 0;
    }
    return lower_literal[len] == '\0';
}

int http_list_has_token(const char *value, size_t len, const char *lower_token)
{
    size_t i = 0;

    while (i < len) {
        size_t start, stop;

        while (i < len && (value[i] == ' ' || value[i] == '\t'))
            i++;
        start = i;
        while (i < len && value[i] != ',')
            i++;
        stop = i;
        while (stop > start && (value[stop - 1] == ' ' || value[stop - 1] == '\t'))
            stop--;
        if (http_token_eq(value + start, stop - start, lower_token))
            return 1;
        i++; /* skip the comma */
    }
    return 0;
}

/*
 * Validate a Host value or an authority: reg-name or [IPv6], then an
 * optional ":port" (1-5 digits, <= 65535). need_port is for CONNECT.
 * Sets *host_len to the length without the port. Returns 0 or -1.
 */
static int host_parse(const char *s, size_t len, int need_port, size_t *host_len)
{
    const unsigned char *b = (const unsigned char *)s;
    size_t i = 0, colons = 0;
    unsigned long port = 0;

    if (len == 0)
        return -1;
    if (b[0] == '[') {
        for (i = 1; i < len && b[i] != ']'; i++) {
            if (b[i] == ':')
                colons++;
            else if (!(cc[b[i]] & CC_HEX) && b[i] != '.')
                return -1;
        }
        if (i == len || colons < 2)
            return -1;
        i++; /* the ']' */
    } else {
        while (i < len && (cc[b[i]] & CC_HOST))
            i++;
        if (i == 0)
            return -1;
    }
    *host_len = i;
    if (i == len)
        return need_port ? -1 : 0;
    if (b[i] != ':' || len - i - 1 < 1 || len - i - 1 > 5)
        return -1;
    for (i++; i < len; i++) {
        if (!(cc[b[i]] & CC_DIGIT))
            return -1;
        port = port * 10 + (unsigned long)(b[i] - '0');
    }
    return port <= 65535 ? 0 : -1;
}

/* Content-Length: 1*DIGIT, at most 2^63-1. Returns 0 or -1 with *why. */
static int content_length_parse(const char *s, size_t len, uint64_t *out, const char **why)
{
    uint64_t v = 0;
    size_t i;

    if (len == 0) {
        *why = "empty Content-Length";
        return -1;
    }
    for (i = 0; i < len; i++) {
        unsigned d;

        if (s[i] == ',') {
            *why = "Content-Length list";
            return -1;
        }
        if (!(cc[(unsigned char)s[i]] & CC_DIGIT)) {
            *why = "invalid Content-Length";
            return -1;
        }
        d = (unsigned)(s[i] - '0');
        if (v > (UINT64_C(0x7fffffffffffffff) - d) / 10) {
            *why = "Content-Length too large";
            return -1;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* The Connection options the parser acts on, in one pass over the list:
 * the same elements (split at ',', SP and HTAB trimmed) and the same
 * verdicts as http_list_has_token() for "close", "keep-alive", "upgrade". */
static void connection_note(struct fields *f, const char *v, size_t len)
{
    size_t i = 0;

    /* The usual value is one of the three alone: a list of one element
     * without whitespace, so the loop below would find just that. */
    if (len == 10 && http_caseeq_n(v, "keep-alive", 10)) {
        f->conn_keep_alive = 1;
        return;
    }
    if (len == 5 && http_caseeq_n(v, "close", 5)) {
        f->conn_close = 1;
        return;
    }
    while (i < len) {
        size_t start, stop;

        while (i < len && (v[i] == ' ' || v[i] == '\t'))
            i++;
        start = i;
        while (i < len && v[i] != ',')
            i++;
        stop = i;
        while (stop > start && (v[stop - 1] == ' ' || v[stop - 1] == '\t'))
            stop--;
        switch (stop - start) {
        case 5:
            if (http_caseeq_n(v + start, "close", 5))
                f->conn_close = 1;
            break;
        case 7:
            if (http_caseeq_n(v + start, "upgrade", 7))
                f->conn_upgrade = 1;
            break;
        case 10:
            if (http_caseeq_n(v + start, "keep-alive", 10))
                f->conn_keep_alive = 1;
            break;
        default:
            break;
        }
        i++; /* skip the comma */
    }
}

/*
 * Take note of one complete field line. minor is the HTTP minor version;
 * is_request enables the request-only checks (Host, Expect, 501).
 */
static int field_note(struct scan *s, struct fields *f, const struct http_header *h, int is_request,
                      int minor)
{
    const char *why = NULL;

    switch (h->name_len) {
    case 4:
        if (!is_request || !http_caseeq_n(h->name, "host", 4))
            break;
        if (++f->nhost > 1) {
            fail(s, 400, "duplicate Host");
            return -1;
        }
        if (host_parse(h->value, h->value_len, 0, &f->host_len) == -1) {
            fail(s, 400, "invalid Host");
            return -1;
        }
        f->host = h->value;
        break;
    case 6:
        if (!is_request || !http_caseeq_n(h->name, "expect", 6))
            break;
        /* RFC 9110 10.1.1: ignore 100-continue from an HTTP/1.0 client. */
        if (!http_token_eq(h->value, h->value_len, "100-continue")) {
            fail(s, 417, "unsupported expectation");
            return -1;
        }
        f->expect_continue = minor == 1;
        break;
    case 7:
        if (http_caseeq_n(h->name, "upgrade", 7) &&
            http_list_has_token(h->value, h->value_len, "websocket"))
            f->upgrade_ws = 1;
        break;
    case 10:
        if (http_caseeq_n(h->name, "connection", 10))
            connection_note(f, h->value, h->value_len);
        break;
    case 14:
        if (!http_caseeq_n(h->name, "content-length", 14))
            break;
        if (++f->ncl > 1) {
            fail(s, 400, "duplicate Content-Length");
            return -1;
        }
        if (f->nte > 0) {
            fail(s, 400, "Content-Length with Transfer-Encoding");
            return -1;
        }
        if (content_length_parse(h->value, h->value_len, &f->cl, &why) == -1) {
            fail(s, 400, why);
            return -1;
        }
        break;
    case 17:
        if (!http_caseeq_n(h->name, "transfer-encoding", 17))
            break;
        if (++f->nte > 1) {
            fail(s, 400, "duplicate Transfer-Encoding");
            return -1;
        }
        if (f->ncl > 0) {
            fail(s, 400, "Content-Length with Transfer-Encoding");
            return -1;
        }
        if (minor == 0) {
            fail(s, 400, "Transfer-Encoding in HTTP/1.0");
            return -1;
        }
        if (!http_token_eq(h->value, h->value_len, "chunked")) {
            fail(s, is_request ? 501 : 502, "unsupported transfer coding");
            return -1;
        }
        break;
    default:
        break;
    }
    return 0;
}

/* Eight bytes at a time where the compiler lets us find the first
 * interesting byte of a word: ctz of a mask is the first byte in memory on
 * little-endian machines only. Elsewhere the scans go byte by byte. */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HTTP_SWAR 1
#else
#define HTTP_SWAR 0
#endif

#if HTTP_SWAR
/* Of the 8 bytes at p, the high bit of each byte that is not a field-value
 * octet other than HTAB (SP, VCHAR, obs-text: no byte below 0x20 without
 * the high bit, no 0x7f). (v - n * one) & ~v has a high bit set for the
 * first byte of v below n (n <= 0x80) and none before it (a borrow only
 * starts at such a byte; bytes after it may be flagged wrongly), so only
 * the lowest set bit is meaningful: it marks the first byte that is not
 * accepted here. The caller sends that byte to the byte-wise test, which
 * also takes HTAB. */
static inline uint64_t value8_stop(const unsigned char *p)
{
    const uint64_t one = 0x0101010101010101u, high = 0x8080808080808080u;
    uint64_t x, del;

    memcpy(&x, p, sizeof(x));
    del = x ^ (one * 0x7f);
    return (((x - one * 0x20) & ~x) | ((del - one) & ~del)) & high;
}

/* Of the 8 bytes at p, the high bit of each byte that is not ALPHA or '-'
 * (a subset of tchar: the rest, digits too, is left to the byte-wise test).
 * Exact for every byte: each range test adds to 7-bit values, so no carry
 * crosses a byte. */
static inline uint64_t name8_stop(const unsigned char *p)
{
    const uint64_t one = 0x0101010101010101u, high = 0x8080808080808080u;
    uint64_t x, t, f, alpha, dash;

    memcpy(&x, p, sizeof(x));
    t = x & (one * 0x7f);
    f = t | (one * 0x20);                                             /* A-Z folded onto a-z */
    alpha = (f + one * (0x80 - 'a')) & ~(f + one * (0x80 - 'z' - 1)); /* 'a' <= f <= 'z' */
    dash = (t + one * (0x80 - '-')) & ~(t + one * (0x80 - '-' - 1));  /* t == '-' */
    return ~((alpha | dash) & ~x) & high;
}
#endif

/* The first offset from i on (below end) of a byte that is not a tchar;
 * end if there is none. */
static inline size_t name_scan(const unsigned char *b, size_t i, size_t end)
{
#if HTTP_SWAR
    while (i + 8 <= end) {
        uint64_t m = name8_stop(b + i);

        if (m == 0) {
            i += 8;
            continue;
        }
        i += (size_t)__builtin_ctzll(m) >> 3;
        if (!(cc[b[i]] & CC_TCHAR))
            return i;
        i++;
    }
#endif
    while (i < end && (cc[b[i]] & CC_TCHAR))
        i++;
    return i;
}

#if HTTP_SWAR
/* Of the 8 bytes at p, a mask whose lowest set bit marks the first byte
 * that is not a request-target octet (0x21-0x7E) or is '#' (the others may
 * be flagged wrongly, as in value8_stop()). */
static inline uint64_t target8_stop(const unsigned char *p)
{
    const uint64_t one = 0x0101010101010101u, high = 0x8080808080808080u;
    uint64_t x, del, hash;

    memcpy(&x, p, sizeof(x));
    del = x ^ (one * 0x7f);
    hash = x ^ (one * '#');
    return (((x - one * 0x21) & ~x) | ((del - one) & ~del) | ((hash - one) & ~hash) | x) & high;
}
#endif

/* The first offset from i on (below end) of a byte that is '#' or not a
 * request-target octet (CC_TARGET); end if there is none. */
static inline size_t target_scan(const unsigned char *b, size_t i, size_t end)
{
#if HTTP_SWAR
    while (i + 8 <= end) {
        uint64_t m = target8_stop(b + i);

        if (m != 0)
            return i + ((size_t)__builtin_ctzll(m) >> 3);
        i += 8;
    }
#endif
    while (i < end && b[i] != '#' && (cc[b[i]] & CC_TARGET))
        i++;
    return i;
}

/* The first offset from i on (below end) of a byte that is not a
 * field-value octet (CC_VALUE); end if there is none. */
static inline size_t value_scan(const unsigned char *b, size_t i, size_t end)
{
#if HTTP_SWAR
    while (i + 8 <= end) { /* long Cookie values */
        uint64_t m = value8_stop(b + i);

        if (m == 0) {
            i += 8;
            continue;
        }
        i += (size_t)__builtin_ctzll(m) >> 3;
        if (!(cc[b[i]] & CC_VALUE))
            return i;
        i++;
    }
#endif
    while (i < end && (cc[b[i]] & CC_VALUE))
        i++;
    return i;
}

/*
 * Scan field lines from b[i] up to and including the empty line. Stores the
 * fields in headers[], notes them in *f and sets *head_len on success.
 */
static enum http_parse_status fields_parse(struct scan *s, size_t i, struct http_header *headers,
                                           size_t *nheaders, struct fields *f, int is_request,
                                           int minor, size_t *head_len)
{
    const unsigned char *b = s->b;
    /* Locals: stores to headers[] would make the compiler reload them. */
    size_t end = s->end, max_field = s->max_field, n = *nheaders;

    for (;;) {
        struct http_header *h;
        size_t name, name_end, val, val_end;

        if (i == end)
            return more(s);
        if (b[i] == '\r') {
            if (i + 1 == end)
                return more(s);
            if (b[i + 1] != '\n')
                return fail(s, 400, "bare CR in header");
            *head_len = i + 2;
            return HTTP_PARSE_OK;
        }
        if (b[i] == '\n')
            return fail(s, 400, "bare LF in header");
        if (b[i] == ' ' || b[i] == '\t')
            return fail(s, 400, "obs-fold header line");
        if (n >= max_field)
            return fail(s, 431, "too many header fields");

        name = i;
        i = name_scan(b, i, end);
        if (i == end)
            return more(s);
        if (b[i] != ':') {
            if (b[i] == ' ' || b[i] == '\t')
                return fail(s, 400, "whitespace before colon in header");
            if (b[i] == '\r' || b[i] == '\n')
                return fail(s, 400, "header line without colon");
            return fail(s, 400, "invalid character in header name");
        }
        if (i == name)
            return fail(s, 400, "empty header name");
        name_end = i++;

        if (i < end && b[i] == ' ') /* the usual single SP */
            i++;
        while (i < end && (b[i] == ' ' || b[i] == '\t'))
            i++;
        val = i;
        i = value_scan(b, i, end);
        if (i == end)
            return more(s);
        if (b[i] == '\n')
            return fail(s, 400, "bare LF in header");
        if (b[i] != '\r')
            return fail(s, 400, "control character in header value");
        if (i + 1 == end)
            return more(s);
        if (b[i + 1] != '\n')
            return fail(s, 400, "bare CR in header");
        val_end = i;
        /* The value's bytes are field-value octets: only SP and HTAB
         * among them are <= ' '. */
        while (val_end > val && b[val_end - 1] <= ' ')
            val_end--;
        i += 2;

        h = &headers[n++];
        *nheaders = n;
        h->name = (const char *)b + name;
        h->name_len = name_end - name;
        h->value = (const char *)b + val;
        h->value_len = val_end - val;
        if (field_note(s, f, h, is_request, minor) == -1)
            return HTTP_PARSE_ERROR;
    }
}

static size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* "HTTP/" DIGIT "." DIGIT, checked one byte at a time (n = offset). */
static int version_byte_ok(size_t n, unsigned char c)
{
    if (n < 5)
        return c == (unsigned char)"HTTP/"[n];
    if (n == 6)
        return c == '.';
    return (cc[c] & CC_DIGIT) != 0;
}

enum { RL_METHOD, RL_TARGET, RL_VERSION };

/*
 * Request line, byte by byte so that every error (and 414) is reported at
 * the byte that causes it. On success *pos is the offset after its CRLF.
 */
static enum http_parse_status request_line_parse(struct scan *s, size_t max_line,
                                                 struct http_request *req, size_t *pos)
{
    const unsigned char *b = s->b;
    /* The CR must sit at or before this offset for the line to fit. */
    size_t cr_max = max_line > 2 ? max_line - 2 : 0;
    /* Below this offset a byte is there and not over the line limit. */
    size_t lim = min_size(s->end, cr_max);
    size_t i, mark = 0;
    int st = RL_METHOD;

    for (i = 0;; i++) {
        unsigned char c;

        /* Skip the bytes the code below would take without a decision:
         * tchars of the method, target octets other than '#', a version
         * of 1.0 or 1.1. It then decides the byte the skip stops at. */
        if (st == RL_METHOD)
            i = name_scan(b, i, lim);
        else if (st == RL_TARGET)
            i = target_scan(b, i, lim);
        else if (i == mark && lim >= 8 && mark <= lim - 8 && memcmp(b + mark, "HTTP/1.", 7) == 0 &&
                 (b[mark + 7] == '0' || b[mark + 7] == '1'))
            i = mark + 8;
        if (i == s->end)
            return more(s);
        c = b[i];
        if (c == '\n')
            return fail(s, 400, "bare LF in request line");
        if (c != '\r' && i >= cr_max)
            return fail(s, 414, "request line too long");
        switch (st) {
        case RL_METHOD:
            if (cc[c] & CC_TCHAR)
                break;
            if (i == 0 && c == '\r')
                return fail(s, 400, "empty line before request line");
            if (c != ' ' || i == 0)
                return fail(s, 400, "invalid method");
            req->method = (const char *)b;
            req->method_len = i;
            mark = i + 1;
            st = RL_TARGET;
            break;
        case RL_TARGET:
            if (c == '#')
                return fail(s, 400, "fragment in request-target");
            if (cc[c] & CC_TARGET)
                break;
            if (c != ' ')
                return fail(s, 400, "invalid character in request-target");
            if (i == mark)
                return fail(s, 400, "empty request-target");
            req->target = (const char *)b + mark;
            req->target_len = i - mark;
            mark = i + 1;
            st = RL_VERSION;
            break;
        default: /* RL_VERSION */
            if (i - mark < 8) {
                if (!version_byte_ok(i - mark, c))
                    return fail(s, 400, "invalid HTTP version");
                /* A digit other than 1.0/1.1 is refused at once. */
                if ((i - mark == 5 && c != '1') || (i - mark == 7 && c != '0' && c != '1'))
                    return fail(s, 505, "unsupported HTTP version");
                break;
            }
            if (c != '\r')
                return fail(s, 400, "invalid HTTP version");
            if (i + 1 == s->end)
                return more(s);
            if (b[i + 1] != '\n')
                return fail(s, 400, "bare CR in request line");
            req->minor_version = b[mark + 7] - '0';
            *pos = i + 2;
            return HTTP_PARSE_OK;
        }
    }
}

static int method_is(const struct http_request *req, const char *m, size_t mlen)
{
    return req->method_len == mlen && memcmp(req->method, m, mlen) == 0;
}

/* Split the target into path and query, per form. Returns 0 or -1. */
static int target_parse(struct scan *s, struct http_request *req, const char **authority,
                        size_t *authority_host_len)
{
    const char *t = req->target;
    size_t len = req->target_len, i, start;

    *authority = NULL;
    if (req->is_connect) {
        /* authority-form: host ":" port; the caller refuses CONNECT. */
        if (host_parse(t, len, 1, authority_host_len) == -1) {
            fail(s, 400, "CONNECT target is not host:port");
            return -1;
        }
        *authority = t;
        return 0;
    }
    if (t[0] == '/') {
        start = 0;
    } else if (len == 1 && t[0] == '*') {
        if (!method_is(req, "OPTIONS", 7)) {
            fail(s, 400, "asterisk-form target without OPTIONS");
            return -1;
        }
        req->path = t;
        req->path_len = 1;
        return 0;
    } else {
        if (len > 7 && ascii_caseeq(t, "http://", 7)) {
            i = 7;
        } else if (len > 8 && ascii_caseeq(t, "https://", 8)) {
            i = 8;
        } else {
            fail(s, 400, "invalid request-target");
            return -1;
        }
        start = i;
        while (i < len && t[i] != '/' && t[i] != '?') {
            if (t[i] == '@') {
                fail(s, 400, "userinfo in request-target");
                return -1;
            }
            i++;
        }
        if (host_parse(t + start, i - start, 0, authority_host_len) == -1) {
            fail(s, 400, "invalid authority in request-target");
            return -1;
        }
        *authority = t + start;
        start = i;
        if (i == len || t[i] == '?') {
            req->path = "/";
            req->path_len = 1;
        }
    }
    for (i = start; i < len && t[i] != '?'; i++)
        ;
    if (req->path == NULL) {
        req->path = t + start;
        req->path_len = i - start;
    }
    if (i < len) {
        req->query = t + i + 1;
        req->query_len = len - i - 1;
    }
    return 0;
}

enum http_parse_status http_request_parse(const char *buf, size_t len,
                                          const struct http_limits *lim,
                                          struct http_header *headers, size_t cap,
                                          struct http_request *req)
{
    struct scan s;
    struct fields f;
    const char *authority = NULL;
    size_t pos = 0, authority_host_len = 0, head_len = 0;
    enum http_parse_status st;

    memset(req, 0, sizeof(*req));
    memset(&f, 0, sizeof(f));
    req->headers = headers;
    s.b = (const unsigned char *)buf;
    s.end = min_size(len, lim->max_head);
    s.at_limit = len >= lim->max_head;
    s.max_field = min_size(min_size(lim->max_headers, cap), HTTP_MAX_HEADERS);
    s.status = 0;
    s.why = NULL;

    st = request_line_parse(&s, lim->max_request_line, req, &pos);
    if (st != HTTP_PARSE_OK)
        goto out;
    req->is_head = method_is(req, "HEAD", 4);
    req->is_connect = method_is(req, "CONNECT", 7);
    if (target_parse(&s, req, &authority, &authority_host_len) == -1) {
        st = HTTP_PARSE_ERROR;
        goto out;
    }
    st = fields_parse(&s, pos, headers, &req->nheaders, &f, 1, req->minor_version, &head_len);
    if (st != HTTP_PARSE_OK)
        goto out;

    if (req->minor_version == 1 && f.nhost == 0) {
        st = fail(&s, 400, "missing Host");
        goto out;
    }
    if (authority != NULL) {
        if (f.host != NULL &&
            (f.host_len != authority_host_len || !ascii_caseeq(f.host, authority, f.host_len))) {
            st = fail(&s, 400, "absolute-form target names another host");
            goto out;
        }
        req->host = authority;
        req->host_len = authority_host_len;
    } else {
        req->host = f.host;
        req->host_len = f.host_len;
    }

    req->head_len = head_len;
    if (f.nte > 0) {
        req->body = HTTP_BODY_CHUNKED;
    } else if (f.ncl > 0) {
        req->body = HTTP_BODY_LENGTH;
        req->content_length = f.cl;
    } else {
        req->body = HTTP_BODY_NONE;
    }
    if (req->minor_version == 1)
        req->keep_alive = !f.conn_close;
    else
        req->keep_alive = f.conn_keep_alive && !f.conn_close;
    req->upgrade_websocket =
        req->minor_version == 1 && method_is(req, "GET", 3) && f.conn_upgrade && f.upgrade_ws;
    req->expect_continue = f.expect_continue;

out:
    if (st == HTTP_PARSE_ERROR) {
        req->error_status = s.status;
        req->error = s.why;
    }
    return st;
}

/* "HTTP/1.x" SP 3DIGIT [SP reason] CRLF. *pos: offset after the CRLF. */
static enum http_parse_status status_line_parse(struct scan *s, struct http_response *resp,
                                                size_t *pos)
{
    const unsigned char *b = s->b;
    size_t i = 0;

    /* "HTTP/1.x" SP 3DIGIT, all there and valid: the byte-wise code below
     * would take bytes 0-11 without a decision. */
    if (s->end >= 12 && memcmp(b, "HTTP/1.", 7) == 0 && (b[7] == '0' || b[7] == '1') &&
        b[8] == ' ' && (cc[b[9]] & cc[b[10]] & cc[b[11]] & CC_DIGIT))
        i = 12;
    for (;; i++) {
        unsigned char c;

        if (i > 12) /* the reason phrase: skip field-value octets */
            i = value_scan(b, i, s->end);
        if (i == s->end)
            return more(s);
        c = b[i];
        if (c == '\n')
            return fail(s, 502, "bare LF in status line");
        if (i < 8) {
            if (!version_byte_ok(i, c))
                return fail(s, 502, "invalid HTTP version");
            continue;
        }
        if (i == 8) {
            if (b[5] != '1' || (b[7] != '0' && b[7] != '1'))
                return fail(s, 502, "unsupported HTTP version");
            if (c != ' ')
                return fail(s, 502, "invalid status line");
            continue;
        }
        if (i < 12) {
            if (!(cc[c] & CC_DIGIT))
                return fail(s, 502, "invalid status code");
            continue;
        }
        if (i == 12) {
            resp->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
            if (resp->status < 100 || resp->status > 599)
                return fail(s, 502, "invalid status code");
            resp->minor_version = b[7] - '0';
            resp->reason = (const char *)b + 13;
            if (c == ' ')
                continue;
            /* "HTTP/1.1 200" CRLF: no SP, empty reason. */
            if (c != '\r')
                return fail(s, 502, "invalid status line");
            resp->reason = (const char *)b + 12;
        } else if (cc[c] & CC_VALUE) {
            continue;
        } else if (c != '\r') {
            return fail(s, 502, "control character in reason phrase");
        }
        if (i + 1 == s->end)
            return more(s);
        if (b[i + 1] != '\n')
            return fail(s, 502, "bare CR in status line");
        resp->reason_len = (size_t)((const char *)b + i - resp->reason);
        *pos = i + 2;
        return HTTP_PARSE_OK;
    }
}

enum http_parse_status http_response_parse(const char *buf, size_t len, size_t max_head,
                                           int request_was_head, struct http_header *headers,
                                           size_t cap, struct http_response *resp)
{
    struct scan s;
    struct fields f;
    size_t pos = 0, head_len = 0;
    enum http_parse_status st;

    memset(resp, 0, sizeof(*resp));
    memset(&f, 0, sizeof(f));
    resp->headers = headers;
    s.b = (const unsigned char *)buf;
    s.end = min_size(len, max_head);
    s.at_limit = len >= max_head;
    s.max_field = min_size(cap, HTTP_MAX_HEADERS);
    s.status = 0;
    s.why = NULL;

    st = status_line_parse(&s, resp, &pos);
    if (st != HTTP_PARSE_OK)
        goto out;
    st = fields_parse(&s, pos, headers, &resp->nheaders, &f, 0, resp->minor_version, &head_len);
    if (st != HTTP_PARSE_OK)
        goto out;

    resp->head_len = head_len;
    if (request_was_head || resp->status < 200 || resp->status == 204 || resp->status == 304) {
        resp->body = HTTP_BODY_NONE;
    } else if (f.nte > 0) {
        resp->body = HTTP_BODY_CHUNKED;
    } else if (f.ncl > 0) {
        resp->body = HTTP_BODY_LENGTH;
        resp->content_length = f.cl;
    } else {
        resp->body = HTTP_BODY_CLOSE;
    }
    if (resp->minor_version == 1)
        resp->keep_alive = !f.conn_close;
    else
        resp->keep_alive = f.conn_keep_alive && !f.conn_close;
    if (resp->body == HTTP_BODY_CLOSE)
        resp->keep_alive = 0;
    resp->upgrade_websocket = resp->status == 101 && f.upgrade_ws;

out:
    if (st == HTTP_PARSE_ERROR)
        resp->error = s.why;
    return st;
}
