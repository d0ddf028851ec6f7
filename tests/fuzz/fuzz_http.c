/*
 * fuzz_http.c - libFuzzer target for include/http.h.
 *
 * The same input is used as a request head, a response head, a chunked
 * body and a path. Beyond "no crash", it checks the properties the proxy
 * relies on, and abort()s when one fails:
 *  - head parsing is incremental: a prefix that errors gives the same error
 *    as the whole buffer, a complete head parses the same from any longer
 *    buffer, and shorter prefixes are INCOMPLETE;
 *  - results only point inside the buffer, and respect the limits;
 *  - chunked decoding gives the same payload, verdict and consumption
 *    whether the input is fed at once, byte by byte or in pieces;
 *  - path normalisation is idempotent, never grows the path and leaves no
 *    "//", "." or ".." segment, no raw '?'/'#' and only upper-case escapes
 *    of non-unreserved bytes.
 * Split points and small limits come from a hash of the input, so they are
 * chosen by (and reproducible from) the fuzzer's input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t hash(const uint8_t *d, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ d[i]) * UINT64_C(0x100000001b3);
    return h;
}

static int inside(const char *p, size_t n, const char *buf, size_t len)
{
    return p >= buf && n <= len && (size_t)(p - buf) <= len - n;
}

/* ---- path ----------------------------------------------------------------- */

static int is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static int upper_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
}

static int any_hex(unsigned char c)
{
    return upper_hex(c) >= 0 || (c >= 'a' && c <= 'f');
}

static void check_normal_path(const char *p, size_t n, unsigned flags)
{
    size_t i;

    CHECK(n >= 1 && p[0] == '/' && p[n] == '\0');
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];

        CHECK(c >= 0x21 && c <= 0x7e && c != '?' && c != '#');
        if (c == '%') {
            int hi, lo;

            CHECK(i + 2 < n);
            hi = upper_hex((unsigned char)p[i + 1]);
            lo = upper_hex((unsigned char)p[i + 2]);
            CHECK(hi >= 0 && lo >= 0);
            c = (unsigned char)(hi * 16 + lo);
            CHECK(c != 0 && !is_unreserved(c));
            CHECK(c != '/' || (flags & HTTP_PATH_ALLOW_ENCODED_SLASH));
        }
        if (c == '/' && p[i] == '/') {
            /* No empty, "." or ".." segment after this slash. */
            size_t rest = n - i - 1;

            CHECK(rest == 0 || p[i + 1] != '/');
            CHECK(!(rest == 1 && p[i + 1] == '.'));
            CHECK(!(rest >= 2 && p[i + 1] == '.' && p[i + 2] == '/'));
            CHECK(!(rest == 2 && p[i + 1] == '.' && p[i + 2] == '.'));
            CHECK(!(rest >= 3 && p[i + 1] == '.' && p[i + 2] == '.' && p[i + 3] == '/'));
        }
    }
    CHECK(memmem(p, n, "//", 2) == NULL && memmem(p, n, "/./", 3) == NULL &&
          memmem(p, n, "/../", 4) == NULL);
    /* no path parameters, no double encoding ("%25" + two hex digits) */
    CHECK(memchr(p, ';', n) == NULL);
    for (i = 0; i + 4 < n; i++)
        CHECK(!(memcmp(p + i, "%25", 3) == 0 && any_hex((unsigned char)p[i + 3]) &&
                any_hex((unsigned char)p[i + 4])));
}

static void fuzz_path(const char *in, size_t len)
{
    /* Exactly len + 1 bytes, so ASan sees any overrun. */
    char *out = malloc(len + 1), *out2 = malloc(len + 1), *again = malloc(len + 1);
    size_t out_len = 0, out2_len = 0, again_len = 0;
    const char *err = NULL, *err2 = NULL;
    int rc, rc2;

    CHECK(out != NULL && out2 != NULL && again != NULL);
    rc = http_path_normalize(in, len, 0, out, &out_len, &err);
    rc2 = http_path_normalize(in, len, HTTP_PATH_ALLOW_ENCODED_SLASH, out2, &out2_len, &err2);
    CHECK(rc == 0 || rc == -1);
    CHECK(rc2 == 0 || rc2 == -1);
    if (rc == -1)
        CHECK(err != NULL);
    if (rc2 == -1)
        CHECK(err2 != NULL && rc == -1); /* the flag only widens */
    if (rc == 0) {
        CHECK(rc2 == 0 && out_len == out2_len && memcmp(out, out2, out_len + 1) == 0);
        CHECK(out_len <= len);
        check_normal_path(out, out_len, 0);
        CHECK(http_path_normalize(out, out_len, 0, again, &again_len, &err) == 0);
        CHECK(again_len == out_len && memcmp(again, out, out_len + 1) == 0);
    }
    if (rc2 == 0) {
        CHECK(out2_len <= len);
        check_normal_path(out2, out2_len, HTTP_PATH_ALLOW_ENCODED_SLASH);
        CHECK(http_path_normalize(out2, out2_len, HTTP_PATH_ALLOW_ENCODED_SLASH, again, &again_len,
                                  &err2) == 0);
        CHECK(again_len == out2_len && memcmp(again, out2, out2_len + 1) == 0);
    }
    free(again);
    free(out2);
    free(out);
}

/* ---- chunked -------------------------------------------------------------- */

struct dec {
    enum http_chunked_status status; /* DONE, ERROR, or MORE: input ran out */
    char *payload;
    size_t payload_len;
    size_t consumed;
    const char *error;
};

enum { FEED_WHOLE, FEED_BYTES, FEED_PIECES };

static void decode(const char *in, size_t len, int mode, uint64_t seed, struct dec *r)
{
    struct http_chunked c;
    size_t off = 0;

    r->status = HTTP_CHUNKED_MORE;
    r->payload_len = 0;
    r->consumed = 0;
    r->error = NULL;
    http_chunked_init(&c);
    while (off < len) {
        size_t n = len - off, pos = 0;

        if (mode == FEED_BYTES)
            n = 1;
        else if (mode == FEED_PIECES)
            n = 1 + (size_t)(rng_next(&seed) % (n < 64 ? n : 64));
        while (pos < n) {
            const char *data = NULL;
            size_t used = 0, dlen = 0;
            enum http_chunked_status st;

            st = http_chunked_feed(&c, in + off + pos, n - pos, &used, &data, &dlen);
            CHECK(used <= n - pos);
            if (st == HTTP_CHUNKED_DATA) {
                CHECK(dlen > 0 && used > 0 && data == in + off + pos + used - dlen);
                memcpy(r->payload + r->payload_len, data, dlen);
                r->payload_len += dlen;
                pos += used;
                continue;
            }
            CHECK(data == NULL && dlen == 0);
            pos += used;
            if (st == HTTP_CHUNKED_MORE) {
                CHECK(pos == n);
                continue;
            }
            CHECK(st == HTTP_CHUNKED_DONE || st == HTTP_CHUNKED_ERROR);
            CHECK(st == HTTP_CHUNKED_DONE || c.error != NULL);
            r->status = st;
            r->consumed = off + pos;
            r->error = c.error;
            /* Sticky, consumes nothing more. */
            CHECK(http_chunked_feed(&c, in, len, &used, &data, &dlen) == st && used == 0);
            return;
        }
        off += n;
    }
    r->consumed = off;
}

static void fuzz_chunked(const char *in, size_t len, uint64_t seed)
{
    struct dec a, b;
    int mode;

    a.payload = malloc(len + 1);
    b.payload = malloc(len + 1);
    CHECK(a.payload != NULL && b.payload != NULL);
    decode(in, len, FEED_WHOLE, seed, &a);
    CHECK(a.payload_len <= len && a.consumed <= len);
    for (mode = FEED_BYTES; mode <= FEED_PIECES; mode++) {
        decode(in, len, mode, seed + (uint64_t)mode, &b);
        CHECK(b.status == a.status);
        CHECK(b.payload_len == a.payload_len && memcmp(a.payload, b.payload, a.payload_len) == 0);
        if (a.status == HTTP_CHUNKED_ERROR)
            CHECK(strcmp(a.error, b.error) == 0);
        CHECK(b.consumed == a.consumed);
    }
    free(b.payload);
    free(a.payload);
}

/* ---- heads ---------------------------------------------------------------- */

static struct http_header hdrs[HTTP_MAX_HEADERS];
static struct http_header hdrs2[HTTP_MAX_HEADERS];

static void check_request(const char *buf, size_t len, const struct http_limits *lim, size_t cap,
                          const struct http_request *r)
{
    size_t i, h = r->head_len;

    CHECK(h >= 4 && h <= len && h <= lim->max_head && memcmp(buf + h - 4, "\r\n\r\n", 4) == 0);
    CHECK(r->nheaders <= cap && r->nheaders <= lim->max_headers && r->nheaders <= HTTP_MAX_HEADERS);
    CHECK(r->method == buf && r->method_len > 0);
    CHECK(inside(r->target, r->target_len, buf, h) && r->target_len > 0);
    CHECK((size_t)(r->target - buf) + r->target_len + 11 <= lim->max_request_line);
    CHECK(r->minor_version == 0 || r->minor_version == 1);
    if (r->path != NULL)
        CHECK(inside(r->path, r->path_len, r->target, r->target_len) ||
              (r->path_len == 1 && r->path[0] == '/'));
    if (r->query != NULL)
        CHECK(inside(r->query, r->query_len, r->target, r->target_len) && r->query[-1] == '?');
    if (r->host != NULL)
        CHECK(inside(r->host, r->host_len, buf, h) && r->host_len > 0);
    CHECK(r->minor_version == 0 || r->host != NULL);
    CHECK(r->body == HTTP_BODY_NONE || r->body == HTTP_BODY_LENGTH || r->body == HTTP_BODY_CHUNKED);
    CHECK(r->body != HTTP_BODY_LENGTH || r->content_length <= UINT64_C(0x7fffffffffffffff));
    CHECK(r->body != HTTP_BODY_CHUNKED || r->minor_version == 1);
    CHECK(r->upgrade_websocket == 0 || r->minor_version == 1);
    for (i = 0; i < r->nheaders; i++) {
        const struct http_header *f = &r->headers[i];

        CHECK(inside(f->name, f->name_len, buf, h) && f->name_len > 0);
        CHECK(inside(f->value, f->value_len, buf, h));
        CHECK(memchr(f->value, '\r', f->value_len) == NULL);
        CHECK(memchr(f->value, '\n', f->value_len) == NULL);
        CHECK(memchr(f->value, '\0', f->value_len) == NULL);
        if (f->value_len > 0)
            CHECK(f->value[0] != ' ' && f->value[0] != '\t' && f->value[f->value_len - 1] != ' ' &&
                  f->value[f->value_len - 1] != '\t');
    }
}

static int known_status(int s)
{
    return s == 400 || s == 414 || s == 417 || s == 431 || s == 501 || s == 505;
}

static void fuzz_request(const char *buf, size_t len, const struct http_limits *lim, size_t cap,
                         uint64_t seed)
{
    struct http_request r, p;
    enum http_parse_status st, pst;
    size_t k, step;

    st = http_request_parse(buf, len, lim, hdrs, cap, &r);
    if (st == HTTP_PARSE_OK)
        check_request(buf, len, lim, cap, &r);
    else if (st == HTTP_PARSE_ERROR)
        CHECK(r.error != NULL && known_status(r.error_status));
    else
        CHECK(st == HTTP_PARSE_INCOMPLETE);

    /* Incremental consistency on prefixes: all of them for short inputs. */
    step = len <= 512 ? 1 : len / 64;
    for (k = 0; k < len; k += step) {
        size_t pk = step == 1 ? k : (size_t)(rng_next(&seed) % len);

        pst = http_request_parse(buf, pk, lim, hdrs2, cap, &p);
        if (st == HTTP_PARSE_OK && pk >= r.head_len) {
            CHECK(pst == HTTP_PARSE_OK && p.head_len == r.head_len && p.nheaders == r.nheaders &&
                  p.body == r.body && p.content_length == r.content_length &&
                  p.path_len == r.path_len && p.host_len == r.host_len &&
                  p.keep_alive == r.keep_alive);
        } else if (st == HTTP_PARSE_ERROR) {
            CHECK(pst != HTTP_PARSE_OK);
            if (pst == HTTP_PARSE_ERROR)
                CHECK(p.error_status == r.error_status && strcmp(p.error, r.error) == 0);
        } else {
            CHECK(pst == HTTP_PARSE_INCOMPLETE);
        }
    }

    if (st != HTTP_PARSE_OK)
        return;
    if (r.path != NULL)
        fuzz_path(r.path, r.path_len);
    if (r.body == HTTP_BODY_CHUNKED)
        fuzz_chunked(buf + r.head_len, len - r.head_len, seed);
}

static void fuzz_response(const char *buf, size_t len, size_t max_head, int was_head, size_t cap,
                          uint64_t seed)
{
    struct http_response r, p;
    enum http_parse_status st, pst;
    size_t i, k, step;

    st = http_response_parse(buf, len, max_head, was_head, hdrs, cap, &r);
    if (st == HTTP_PARSE_ERROR)
        CHECK(r.error != NULL);
    if (st == HTTP_PARSE_OK) {
        CHECK(r.head_len >= 4 && r.head_len <= len && r.head_len <= max_head &&
              memcmp(buf + r.head_len - 4, "\r\n\r\n", 4) == 0);
        CHECK(r.status >= 100 && r.status <= 599);
        CHECK(r.minor_version == 0 || r.minor_version == 1);
        CHECK(inside(r.reason, r.reason_len, buf, r.head_len));
        CHECK(r.nheaders <= cap);
        CHECK(r.body != HTTP_BODY_CLOSE || r.keep_alive == 0);
        CHECK(!was_head || r.body == HTTP_BODY_NONE);
        CHECK(r.upgrade_websocket == 0 || r.status == 101);
        for (i = 0; i < r.nheaders; i++)
            CHECK(inside(r.headers[i].name, r.headers[i].name_len, buf, r.head_len) &&
                  inside(r.headers[i].value, r.headers[i].value_len, buf, r.head_len));
    }

    step = len <= 512 ? 1 : len / 64;
    for (k = 0; k < len; k += step) {
        size_t pk = step == 1 ? k : (size_t)(rng_next(&seed) % len);

        pst = http_response_parse(buf, pk, max_head, was_head, hdrs2, cap, &p);
        if (st == HTTP_PARSE_OK && pk >= r.head_len)
            CHECK(pst == HTTP_PARSE_OK && p.head_len == r.head_len && p.body == r.body &&
                  p.status == r.status);
        else if (st == HTTP_PARSE_ERROR)
            CHECK(pst != HTTP_PARSE_OK &&
                  (pst == HTTP_PARSE_INCOMPLETE || strcmp(p.error, r.error) == 0));
        else
            CHECK(pst == HTTP_PARSE_INCOMPLETE);
    }
    if (st == HTTP_PARSE_OK && r.body == HTTP_BODY_CHUNKED)
        fuzz_chunked(buf + r.head_len, len - r.head_len, seed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    uint64_t seed = hash(data, size), s = seed;
    struct http_limits big = {8192, 16384, 100}, small;
    size_t cap;

    if (size > 65536)
        return 0;
    small.max_request_line = (size_t)(rng_next(&s) % 128);
    small.max_head = (size_t)(rng_next(&s) % 512);
    small.max_headers = (size_t)(rng_next(&s) % 12);
    cap = (size_t)(rng_next(&s) % (HTTP_MAX_HEADERS + 1));

    fuzz_request(buf, size, &big, HTTP_MAX_HEADERS, seed);
    fuzz_request(buf, size, &small, cap, seed + 1);
    fuzz_response(buf, size, 16384, (int)(seed & 1), HTTP_MAX_HEADERS, seed + 2);
    fuzz_response(buf, size, small.max_head, (int)((seed >> 1) & 1), cap, seed + 3);
    fuzz_chunked(buf, size, seed + 4);
    fuzz_path(buf, size);
    return 0;
}
