/*
 * http.h - strict HTTP/1.1 message parsing (pure: bytes in, results out).
 *
 * No sockets, no clock, no allocation: every function works on caller
 * storage, so it can be unit-tested and fuzzed. Header fields are slices into
 * the caller's buffer, which must stay valid while the result is used.
 *
 * Security posture (RFC 9112 with the strict choices a proxy must make to
 * make request smuggling impossible by construction):
 *  - CRLF line endings only; a bare LF or bare CR anywhere in the head is an
 *    error.
 *  - obs-fold (a header line starting with SP or HTAB) is an error.
 *  - NUL, DEL and control characters other than HTAB in a field value are
 *    errors; bytes 0x80-0xFF (obs-text) are accepted in values only.
 *  - Field names are tokens; whitespace between name and colon is an error.
 *  - Content-Length: digits only, no sign, no list, at most one field; it
 *    together with Transfer-Encoding is an error.
 *  - Transfer-Encoding: only exactly "chunked" (case-insensitive), at most one
 *    field; anything else is 501 for requests, an error for responses.
 *    Transfer-Encoding in an HTTP/1.0 request is an error.
 *  - HTTP/1.1 requests need exactly one valid Host; absolute-form targets
 *    must name the same authority as Host.
 */
#ifndef ZT_HTTP_H
#define ZT_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HTTP_MAX_HEADERS 256

struct http_header {
    const char *name;
    size_t name_len;
    const char *value; /* leading/trailing OWS already trimmed */
    size_t value_len;
};

enum http_parse_status {
    HTTP_PARSE_OK = 0,     /* a complete head was parsed */
    HTTP_PARSE_INCOMPLETE, /* need more bytes; nothing is wrong so far */
    HTTP_PARSE_ERROR       /* malformed or refused: see error_status/error */
};

enum http_body_kind {
    HTTP_BODY_NONE = 0, /* no body (request without CL/TE, 1xx/204/304, HEAD) */
    HTTP_BODY_LENGTH,   /* exactly content_length bytes */
    HTTP_BODY_CHUNKED,  /* chunked transfer coding */
    HTTP_BODY_CLOSE     /* responses only: until the upstream closes */
};

struct http_limits {
    size_t max_request_line; /* request line incl. CRLF; over it -> 414 */
    size_t max_head;         /* whole head incl. final CRLF CRLF; over -> 431 */
    size_t max_headers;      /* header field count (<= HTTP_MAX_HEADERS) -> 431 */
};

struct http_request {
    const char *method;
    size_t method_len;
    const char *target; /* request-target as sent */
    size_t target_len;
    const char *path; /* path part of the target (origin- or absolute-form) */
    size_t path_len;
    const char *query; /* after '?', without it; NULL if none */
    size_t query_len;
    int minor_version; /* 0 or 1 (HTTP/1.0, HTTP/1.1) */

    struct http_header *headers; /* points into caller's array */
    size_t nheaders;
    size_t head_len; /* bytes of the head including the final CRLF CRLF */

    /* Analysis of the head. */
    enum http_body_kind body;
    uint64_t content_length; /* valid when body == HTTP_BODY_LENGTH */
    const char *host;        /* Host value (or absolute-form authority) */
    size_t host_len;         /* without the port */
    int keep_alive;          /* 1.1 default on, 1.0 default off; Connection: close/keep-alive */
    int upgrade_websocket;   /* Connection: upgrade + Upgrade: websocket (GET, 1.1) */
    int expect_continue;     /* Expect: 100-continue */
    int is_head;             /* method is HEAD */
    int is_connect;          /* method is CONNECT (callers refuse it) */

    /* On HTTP_PARSE_ERROR: status to answer (400, 414, 431, 501) and a
     * short static English reason, safe to log and to show. */
    int error_status;
    const char *error;
};

struct http_response {
    int status; /* 100-599 */
    int minor_version;
    const char *reason;
    size_t reason_len;
    struct http_header *headers;
    size_t nheaders;
    size_t head_len;

    enum http_body_kind body;
    uint64_t content_length;
    int keep_alive;        /* upstream will keep the connection open */
    int upgrade_websocket; /* 101 with Upgrade: websocket */
    const char *error;     /* on HTTP_PARSE_ERROR */
};

/*
 * Parse a request head from buf[0..len). headers/cap is caller storage for
 * the fields. Returns HTTP_PARSE_INCOMPLETE while no CRLF CRLF has arrived
 * and no limit is exceeded yet (callers re-call with the longer buffer).
 * Everything in *req is only meaningful when HTTP_PARSE_OK is returned,
 * except error_status/error on HTTP_PARSE_ERROR.
 */
enum http_parse_status http_request_parse(const char *buf, size_t len,
                                          const struct http_limits *lim,
                                          struct http_header *headers, size_t cap,
                                          struct http_request *req);

/*
 * Parse a response head. request_was_head and the status decide whether a
 * body follows (HEAD, 1xx, 204, 304: HTTP_BODY_NONE). A response without
 * Content-Length or chunked is HTTP_BODY_CLOSE.
 */
enum http_parse_status http_response_parse(const char *buf, size_t len, size_t max_head,
                                           int request_was_head, struct http_header *headers,
                                           size_t cap, struct http_response *resp);

/* Case-insensitive comparison of a slice with a NUL-terminated lowercase
 * literal. Returns 1 when equal. */
int http_token_eq(const char *s, size_t len, const char *lower_literal);

/* Does the comma-separated list value contain the token (case-insensitive)? */
int http_list_has_token(const char *value, size_t len, const char *lower_token);

/* The word-at-a-time helpers below must be inlined at every call for a
 * literal's words and masks to become constants. */
#if defined(__GNUC__)
#define HTTP_INLINE static inline __attribute__((always_inline))
#else
#define HTTP_INLINE static inline
#endif

/* Bytes 0..n of a word: the caller's n (1..8) bytes at p, zero-extended. */
HTTP_INLINE uint64_t http_load_n_(const char *p, size_t n)
{
    uint64_t x = 0;
    uint32_t w4;
    uint16_t w2;

    if (n == 8) {
        memcpy(&x, p, 8);
    } else if (n == 4) {
        memcpy(&w4, p, 4);
        x = w4;
    } else if (n == 2) {
        memcpy(&w2, p, 2);
        x = w2;
    } else {
        x = (unsigned char)p[0];
    }
    return x;
}

/* One word of http_caseeq_n(): 0x20 is OR-ed into s's bytes where the
 * literal has an ASCII letter (of either case), nowhere else. So a
 * lower-case letter matches itself and its upper-case form, an upper-case
 * letter in the literal matches nothing (as in http_token_eq()), and every
 * other byte only itself. Bytes of lw above the word's width are 0 and match
 * the zero-extended s. */
HTTP_INLINE int http_caseeq_word_(uint64_t sw, uint64_t lw)
{
    const uint64_t low7 = 0x7f7f7f7f7f7f7f7fu, high = 0x8080808080808080u;
    uint64_t t = (lw | 0x2020202020202020u) & low7; /* case folded, high bit cleared */
    /* per byte, without carries: high bit set iff t >= 'a', iff t > 'z' */
    uint64_t ge_a = t + 0x1f1f1f1f1f1f1f1fu, gt_z = t + 0x0505050505050505u;
    uint64_t letter = ge_a & ~gt_z & ~lw & high;

    return (sw | (letter >> 2)) == lw;
}

/*
 * The same result as http_token_eq(s, n, lower) when lower has n bytes
 * before its NUL (callers compare lengths first), a few words at a time:
 * reads exactly s[0..n) and lower[0..n), with overlapping loads. Inline so
 * that a literal's words and masks fold into constants.
 */
HTTP_INLINE int http_caseeq_n(const char *s, const char *lower, size_t n)
{
    size_t i, w;

    if (n == 0)
        return 1;
    w = n >= 8 ? 8 : n >= 4 ? 4 : n >= 2 ? 2 : 1;
    for (i = 0; i + w < n; i += w) {
        if (!http_caseeq_word_(http_load_n_(s + i, w), http_load_n_(lower + i, w)))
            return 0;
    }
    return http_caseeq_word_(http_load_n_(s + n - w, w), http_load_n_(lower + n - w, w));
}

/* ---- chunked transfer coding ------------------------------------------ */

enum http_chunked_status {
    HTTP_CHUNKED_MORE = 0, /* consumed what it could; feed more bytes */
    HTTP_CHUNKED_DATA,     /* *data, *data_len: a slice of payload */
    HTTP_CHUNKED_DONE,     /* last chunk and trailers consumed */
    HTTP_CHUNKED_ERROR
};

struct http_chunked {
    int state;
    uint64_t remaining; /* payload bytes left in the current chunk */
    size_t line_len;    /* bytes seen on the current size/trailer line */
    size_t trailer_len; /* bytes of trailer section so far */
    const char *error;
};

/* Start decoding a chunked body. Chunk sizes beyond 2^60, size lines or
 * trailer sections longer than 4 KiB, and bare LF are errors. Chunk
 * extensions are accepted and discarded; trailers are validated and
 * discarded. */
void http_chunked_init(struct http_chunked *c);

/*
 * Decode from in[0..len). Sets *consumed to the number of input bytes used
 * (the caller drains them) and, when the result is HTTP_CHUNKED_DATA, sets
 * *data to a slice of in[] holding payload (at most one slice per call).
 * Call repeatedly until the input is used up or DONE/ERROR is returned.
 */
enum http_chunked_status http_chunked_feed(struct http_chunked *c, const char *in, size_t len,
                                           size_t *consumed, const char **data, size_t *data_len);

/* ---- path normalisation ----------------------------------------------- */

#define HTTP_PATH_ALLOW_ENCODED_SLASH 0x1

/*
 * Normalise the path of a request target (no query) for routing and rules:
 * percent-decode unreserved characters (ALPHA DIGIT - . _ ~), upper-case the
 * hex of every other escape, merge repeated '/', remove "." and ".."
 * segments (RFC 3986 5.2.4; ".." never climbs above "/"). The path must
 * start with '/'. Rejected (returns -1, *err set to a static reason):
 * invalid escapes, %00, a raw NUL or control character, a raw backslash,
 * and %2F or %5C unless HTTP_PATH_ALLOW_ENCODED_SLASH is given (a decoded
 * slash or backslash would change how some upstreams split the path). out needs len + 1 bytes; the
 * result is NUL-terminated and *out_len excludes the NUL.
 */
int http_path_normalize(const char *path, size_t len, unsigned flags, char *out, size_t *out_len,
                        const char **err);

#endif
