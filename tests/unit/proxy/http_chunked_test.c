/*
 * http_chunked_test.c - http_chunked_init, http_chunked_feed (public API).
 *
 * Every case is decoded three ways (whole, one byte at a time, and split at
 * every position into two pieces); all must give the same payload, status
 * and number of bytes consumed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http.h"

struct result {
    enum http_chunked_status status; /* DONE, ERROR, or MORE if input ran out */
    char payload[16384];
    size_t payload_len;
    size_t consumed; /* total input bytes consumed */
    const char *error;
};

/*
 * Feed in[0..len) in pieces of at most `piece` bytes (0: all at once), or
 * split once at `split` when split != 0. Stops at DONE or ERROR.
 */
static void decode(const char *in, size_t len, size_t piece, size_t split, struct result *r)
{
    struct http_chunked c;
    size_t off = 0;

    memset(r, 0, sizeof(*r));
    r->status = HTTP_CHUNKED_MORE;
    http_chunked_init(&c);
    while (off < len) {
        size_t n = len - off, used = 0, pos = 0;

        if (piece != 0 && n > piece)
            n = piece;
        if (split != 0 && off < split && n > split - off)
            n = split - off;
        /* Drain this piece the way a caller would. */
        while (pos < n) {
            const char *data = NULL;
            size_t data_len = 0;
            enum http_chunked_status st;

            st = http_chunked_feed(&c, in + off + pos, n - pos, &used, &data, &data_len);
            assert_true(used <= n - pos);
            pos += used;
            if (st == HTTP_CHUNKED_DATA) {
                assert_true(data_len > 0);
                assert_true(data >= in + off && data + data_len <= in + off + pos);
                assert_true(r->payload_len + data_len <= sizeof(r->payload));
                memcpy(r->payload + r->payload_len, data, data_len);
                r->payload_len += data_len;
                continue;
            }
            if (st == HTTP_CHUNKED_MORE) {
                assert_int_equal(pos, n);
                continue;
            }
            r->status = st;
            r->consumed = off + pos;
            r->error = c.error;
            return;
        }
        off += n;
    }
    r->consumed = off;
}

struct chunk_case {
    const char *in;
    size_t len; /* 0: strlen(in) */
    enum http_chunked_status status;
    const char *payload; /* for DONE and MORE */
    size_t payload_len;  /* 0: strlen(payload) */
    size_t consumed;     /* for DONE: 0 means all of it */
    const char *error;   /* for ERROR */
};

static const struct chunk_case chunk_cases[] = {
    {"0\r\n\r\n", 0, HTTP_CHUNKED_DONE, "", 0, 0, NULL},
    {"5\r\nhello\r\n0\r\n\r\n", 0, HTTP_CHUNKED_DONE, "hello", 0, 0, NULL},
    {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 0, HTTP_CHUNKED_DONE, "hello world", 0, 0, NULL},
    {"A\r\n0123456789\r\n0\r\n\r\n", 0, HTTP_CHUNKED_DONE, "0123456789", 0, 0, NULL},
    {"a\r\n0123456789\r\n0\r\n\r\n", 0, HTTP_CHUNKED_DONE, "0123456789", 0, 0, NULL},
    {"005\r\nhello\r\n000\r\n\r\n", 0, HTTP_CHUNKED_DONE, "hello", 0, 0, NULL},
    {"5;ext=1\r\nhello\r\n0;last\r\n\r\n", 0, HTTP_CHUNKED_DONE, "hello", 0, 0, NULL},
    {"5 ;a=\"q;\\\"x\"\t\r\nhello\r\n0\r\n\r\n", 0, HTTP_CHUNKED_DONE, "hello", 0, 0, NULL},
    {"5\t; e\r\nhello\r\n0\r\n\r\n", 0, HTTP_CHUNKED_DONE, "hello", 0, 0, NULL},
    {"5;\xc3\xa9\r\nhello\r\n0\r\n\r\n", 0, HTTP_CHUNKED_DONE, "hello", 0, 0, NULL},
    {"3\r\n\r\n\0\r\n0\r\n\r\n", 13, HTTP_CHUNKED_DONE, "\r\n\0", 3, 0, NULL}, /* binary payload */
    {"0\r\nTrailer: v\r\nX-Sum: 1 2\t\r\nEmpty:\r\n\r\n", 0, HTTP_CHUNKED_DONE, "", 0, 0, NULL},
    {"0\r\nX: caf\xc3\xa9\r\n\r\n", 0, HTTP_CHUNKED_DONE, "", 0, 0, NULL},
    /* Stops after the last CRLF: the next request is not consumed. */
    {"2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 0, HTTP_CHUNKED_DONE, "hi", 0, 12, NULL},
    /* Runs out of input: MORE, everything consumed. */
    {"", 0, HTTP_CHUNKED_MORE, "", 0, 0, NULL},
    {"5\r\nhel", 0, HTTP_CHUNKED_MORE, "hel", 0, 0, NULL},
    {"5\r\nhello\r\n0\r\n\r", 0, HTTP_CHUNKED_MORE, "hello", 0, 0, NULL},
    {"0\r\nX: y\r\n", 0, HTTP_CHUNKED_MORE, "", 0, 0, NULL},
    /* 15 hex digits are accepted (2^60 - 1), 16 are not, leading zeros count. */
    {"fffffffffffffff\r\nab", 0, HTTP_CHUNKED_MORE, "ab", 0, 0, NULL},
    {"000000000000001\r\nx\r\n0\r\n\r\n", 0, HTTP_CHUNKED_DONE, "x", 0, 0, NULL},
    {"1000000000000000\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "chunk size too large"},
    {"0000000000000001\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "chunk size too large"},
    {"ffffffffffffffffff\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "chunk size too large"},
    /* Size line syntax. */
    {"\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "missing chunk size"},
    {";x\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "missing chunk size"},
    {" 5\r\nhello\r\n0\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "missing chunk size"},
    {"-5\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "missing chunk size"},
    {"0x5\r\nhello\r\n0\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "invalid chunk size"},
    {"5g\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "invalid chunk size"},
    {"5 \r\nhello\r\n0\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "invalid chunk size line"},
    {"5 6\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "invalid chunk size line"},
    {"5\nhello\r\n0\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "bare LF in chunked body"},
    {"5;a\nhello\r\n0\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "bare LF in chunked body"},
    {"5\rhello\r\n0\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "bare CR in chunked body"},
    {"5;a\rb\r\nhello\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "bare CR in chunked body"},
    {"5;a\x01\r\nhello\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0,
     "control character in chunk extension"},
    {"5;a\x7f\r\nhello\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0,
     "control character in chunk extension"},
    {"5;a\0\r\nhello\r\n", 12, HTTP_CHUNKED_ERROR, NULL, 0, 0,
     "control character in chunk extension"},
    /* Data must be followed by exactly CRLF. */
    {"5\r\nhelloX\r\n0\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0,
     "missing CRLF after chunk data"},
    {"5\r\nhello\n0\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "bare LF in chunked body"},
    {"5\r\nhello\rX0\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "missing CRLF after chunk data"},
    {"3\r\nhello\r\n0\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "missing CRLF after chunk data"},
    /* Trailers. */
    {"0\r\n\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "bare LF in chunked body"},
    {"0\r\n\rX", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "bare CR in chunked body"},
    {"0\r\nX: y\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "bare LF in chunked body"},
    {"0\r\nX: y\rZ\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "bare CR in chunked body"},
    {"0\r\n X: y\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "obs-fold trailer line"},
    {"0\r\nX: y\r\n\tz\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "obs-fold trailer line"},
    {"0\r\nX : y\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "whitespace before colon in trailer"},
    {"0\r\n: y\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "empty trailer name"},
    {"0\r\nX\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "trailer line without colon"},
    {"0\r\nX(: y\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "invalid character in trailer name"},
    {"0\r\n(: y\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0, "invalid character in trailer name"},
    {"0\r\nX: a\x01\r\n\r\n", 0, HTTP_CHUNKED_ERROR, NULL, 0, 0,
     "control character in trailer value"},
    /* A smuggling classic: the chunk body is not a request. */
    {"0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n", 0, HTTP_CHUNKED_DONE, "", 0, 5, NULL},
};

static void test_chunked_table(void **state)
{
    static struct result whole, r;
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof(chunk_cases) / sizeof(chunk_cases[0]); i++) {
        const struct chunk_case *t = &chunk_cases[i];
        size_t len = t->len ? t->len : strlen(t->in);

        decode(t->in, len, 0, 0, &whole);
        if (whole.status != t->status)
            fail_msg("chunk case %zu: status %d (%s), want %d", i, whole.status,
                     whole.error ? whole.error : "-", t->status);
        if (t->status == HTTP_CHUNKED_ERROR) {
            assert_non_null(whole.error);
            if (strcmp(whole.error, t->error) != 0)
                fail_msg("chunk case %zu: error %s, want %s", i, whole.error, t->error);
        } else {
            size_t plen = t->payload_len ? t->payload_len : strlen(t->payload);

            assert_int_equal(whole.payload_len, plen);
            assert_memory_equal(whole.payload, t->payload, plen);
            assert_int_equal(whole.consumed, t->consumed ? t->consumed : len);
        }

        /* Byte by byte, and split in two at every position. */
        for (k = 0; k <= len; k++) {
            if (k == 0)
                decode(t->in, len, 1, 0, &r);
            else
                decode(t->in, len, 0, k, &r);
            if (r.status != whole.status || r.payload_len != whole.payload_len ||
                memcmp(r.payload, whole.payload, r.payload_len) != 0 ||
                (r.status != HTTP_CHUNKED_ERROR && r.consumed != whole.consumed) ||
                (r.status == HTTP_CHUNKED_ERROR && strcmp(r.error, whole.error) != 0))
                fail_msg("chunk case %zu: split at %zu differs", i, k);
        }
    }
}

/* Size line: 4096 bytes including CRLF is the maximum. */
static void test_chunked_size_line_limit(void **state)
{
    static char buf[9000];
    static struct result r;
    size_t n;

    (void)state;
    /* "1;" + ext + "\r\n" = 4096 bytes, then "x\r\n0\r\n\r\n". */
    memset(buf, 'e', sizeof(buf));
    memcpy(buf, "1;", 2);
    memcpy(buf + 4094, "\r\nx\r\n0\r\n\r\n", 10);
    n = 4104;
    decode(buf, n, 0, 0, &r);
    assert_int_equal(r.status, HTTP_CHUNKED_DONE);
    assert_int_equal(r.payload_len, 1);
    decode(buf, n, 1, 0, &r);
    assert_int_equal(r.status, HTTP_CHUNKED_DONE);

    /* One more byte of extension: error. */
    memset(buf, 'e', sizeof(buf));
    memcpy(buf, "1;", 2);
    memcpy(buf + 4095, "\r\nx\r\n0\r\n\r\n", 10);
    decode(buf, n + 1, 0, 0, &r);
    assert_int_equal(r.status, HTTP_CHUNKED_ERROR);
    assert_string_equal(r.error, "chunk size line too long");

    /* Without CRLF: fails once the line cannot fit any more. */
    memset(buf, 'e', sizeof(buf));
    memcpy(buf, "1;", 2);
    decode(buf, 4095, 0, 0, &r);
    assert_int_equal(r.status, HTTP_CHUNKED_MORE);
    decode(buf, 4097, 0, 0, &r);
    assert_int_equal(r.status, HTTP_CHUNKED_ERROR);

    /* The limit is per line: many maximal lines are fine. */
    memset(buf, 'e', sizeof(buf));
    memcpy(buf, "1;", 2);
    memcpy(buf + 4094, "\r\nx\r\n1;", 7);
    memcpy(buf + 4099 + 4094, "\r\ny\r\n0\r\n\r\n", 10);
    decode(buf, 4099 + 4094 + 10, 0, 0, &r);
    assert_int_equal(r.status, HTTP_CHUNKED_DONE);
    assert_int_equal(r.payload_len, 2);
}

/* Trailer section: 4096 bytes including the final CRLF is the maximum. */
static void test_chunked_trailer_limit(void **state)
{
    static char buf[8192];
    static struct result r;
    size_t n;

    (void)state;
    /* "0\r\n" + "X: " + v + "\r\n" + "\r\n": trailer = 3 + v + 4. */
    memset(buf, 'v', sizeof(buf));
    memcpy(buf, "0\r\nX: ", 6);
    memcpy(buf + 3 + 4096 - 4, "\r\n\r\n", 4);
    n = 3 + 4096;
    decode(buf, n, 0, 0, &r);
    assert_int_equal(r.status, HTTP_CHUNKED_DONE);
    assert_int_equal(r.consumed, n);

    memset(buf, 'v', sizeof(buf));
    memcpy(buf, "0\r\nX: ", 6);
    memcpy(buf + 3 + 4097 - 4, "\r\n\r\n", 4);
    decode(buf, n + 1, 0, 0, &r);
    assert_int_equal(r.status, HTTP_CHUNKED_ERROR);
    assert_string_equal(r.error, "chunked trailer section too large");

    /* The total counts, not each line: two 2100-byte lines are too many. */
    memset(buf, 'v', sizeof(buf));
    memcpy(buf, "0\r\nA: ", 6);
    memcpy(buf + 3 + 2098, "\r\nB: ", 5);
    memcpy(buf + 3 + 2100 + 2098, "\r\n\r\n", 4);
    decode(buf, 3 + 4200 + 2, 0, 0, &r);
    assert_int_equal(r.status, HTTP_CHUNKED_ERROR);
}

/* DONE and ERROR are sticky and consume nothing. */
static void test_chunked_sticky(void **state)
{
    struct http_chunked c;
    const char *data;
    size_t used, dlen;

    (void)state;
    http_chunked_init(&c);
    assert_int_equal(http_chunked_feed(&c, "0\r\n\r\nXYZ", 8, &used, &data, &dlen),
                     HTTP_CHUNKED_DONE);
    assert_int_equal(used, 5);
    assert_int_equal(http_chunked_feed(&c, "XYZ", 3, &used, &data, &dlen), HTTP_CHUNKED_DONE);
    assert_int_equal(used, 0);

    http_chunked_init(&c);
    assert_int_equal(http_chunked_feed(&c, "z", 1, &used, &data, &dlen), HTTP_CHUNKED_ERROR);
    assert_non_null(c.error);
    assert_int_equal(http_chunked_feed(&c, "0\r\n\r\n", 5, &used, &data, &dlen),
                     HTTP_CHUNKED_ERROR);
    assert_int_equal(used, 0);

    /* One data slice per call; framing before it is consumed with it. */
    http_chunked_init(&c);
    assert_int_equal(http_chunked_feed(&c, "2\r\nab\r\n1\r\nc\r\n", 13, &used, &data, &dlen),
                     HTTP_CHUNKED_DATA);
    assert_int_equal(used, 5);
    assert_int_equal(dlen, 2);
    assert_memory_equal(data, "ab", 2);

    /* Empty input. */
    http_chunked_init(&c);
    assert_int_equal(http_chunked_feed(&c, "", 0, &used, &data, &dlen), HTTP_CHUNKED_MORE);
    assert_int_equal(used, 0);
    assert_null(data);
}

/* A large chunk arrives in many reads and is returned in slices. */
static void test_chunked_large(void **state)
{
    static char buf[70000];
    struct http_chunked c;
    const char *data;
    size_t n, off = 0, used, dlen, total = 0;
    enum http_chunked_status st = HTTP_CHUNKED_MORE;

    (void)state;
    memcpy(buf, "10000\r\n", 7);
    memset(buf + 7, 'z', 65536);
    memcpy(buf + 7 + 65536, "\r\n0\r\n\r\n", 7);
    n = 7 + 65536 + 7;
    http_chunked_init(&c);
    while (off < n && st != HTTP_CHUNKED_DONE) {
        size_t piece = n - off < 1000 ? n - off : 1000;

        st = http_chunked_feed(&c, buf + off, piece, &used, &data, &dlen);
        assert_int_not_equal(st, HTTP_CHUNKED_ERROR);
        if (st == HTTP_CHUNKED_DATA)
            total += dlen;
        off += used;
    }
    assert_int_equal(st, HTTP_CHUNKED_DONE);
    assert_int_equal(total, 65536);
    assert_int_equal(off, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_table),
        cmocka_unit_test(test_chunked_size_line_limit),
        cmocka_unit_test(test_chunked_trailer_limit),
        cmocka_unit_test(test_chunked_sticky),
        cmocka_unit_test(test_chunked_large),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
