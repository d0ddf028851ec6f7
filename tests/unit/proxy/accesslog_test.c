/*
 * accesslog_test.c - the access log's records: what accesslog_append()
 * copies (limits, the /.zt/ query cut), the lines accesslog_format() makes
 * of them (escaping, empty and missing fields, byte for byte what the
 * worker formatted before), malformed records counted and skipped, and the
 * writer thread writing the same lines.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <jansson.h>

#include "../../../proxy/sbuf.h"
#include "accesslog.h"

/* The record layout (proxy/accesslog.c): an 8-byte header (magic, type, 0,
 * u32 total), 64 bytes of numbers, then the strings. */
#define REC_HDR 8
#define REC_FIXED 72
#define OFF_TOTAL 4
#define OFF_NSEC (REC_HDR + 32)
#define OFF_PATH_LEN (REC_HDR + 48)
#define OFF_ERROR_LEN (REC_HDR + 52)
#define OFF_SHORT_LEN (REC_HDR + 54)
#define OFF_FLAGS (REC_HDR + 60)
#define OFF_ZERO (REC_HDR + 61)

static void entry_init(struct accesslog_entry *e)
{
    memset(e, 0, sizeof(*e));
    e->ts.tv_sec = 1795861893; /* 2026-11-28T10:31:33Z */
    e->ts.tv_nsec = 36999999;
    e->duration_us = 2417;
    e->bytes_in = 0;
    e->bytes_out = 417;
    e->worker = 1;
    e->status = 200;
    e->upstream_status = 200;
    e->request_id = "43327027ca6645cf0000000000000001";
    e->client = "127.0.0.1:53572";
    e->device = "laptop1";
    e->route = "app";
    e->method = "GET";
    e->host = "app.test";
    e->path = "/";
    e->path_len = 1;
}

/* The record of e, as bytes (caller frees). */
static unsigned char *record_of(const struct accesslog_entry *e, size_t *len)
{
    struct evbuffer *b = evbuffer_new();
    unsigned char *r;

    assert_non_null(b);
    accesslog_append(b, e);
    *len = evbuffer_get_length(b);
    assert_true(*len >= REC_FIXED);
    r = malloc(*len);
    assert_non_null(r);
    evbuffer_remove(b, r, *len);
    evbuffer_free(b);
    return r;
}

/* Format rec[0..len): the lines as a string (caller frees); *n lines, *bad. */
static char *format_bytes(const void *rec, size_t len, size_t *n, uint64_t *bad)
{
    struct evbuffer *in = evbuffer_new(), *out = evbuffer_new();
    size_t l;
    char *s;

    assert_non_null(in);
    assert_non_null(out);
    evbuffer_add(in, rec, len);
    *bad = 0;
    *n = accesslog_format(in, out, bad);
    assert_int_equal(evbuffer_get_length(in), 0);
    l = evbuffer_get_length(out);
    s = malloc(l + 1);
    assert_non_null(s);
    evbuffer_remove(out, s, l);
    s[l] = '\0';
    evbuffer_free(in);
    evbuffer_free(out);
    return s;
}

/* The line of e (one line, no bad record). */
static char *line_of(const struct accesslog_entry *e)
{
    size_t len, n;
    uint64_t bad;
    unsigned char *r = record_of(e, &len);
    char *s = format_bytes(r, len, &n, &bad);

    assert_int_equal(n, 1);
    assert_int_equal(bad, 0);
    free(r);
    return s;
}

/* ---- the old formatter ---------------------------------------------------- */

/* What access_log_write() formatted on the worker before the records, kept
 * verbatim but for where the data comes from: the new lines must be these
 * bytes. */
static void old_line(struct sbuf *b, const struct accesslog_entry *e)
{
    char ts_text[24];
    struct tm tm;

    gmtime_r(&e->ts.tv_sec, &tm);
    strftime(ts_text, sizeof(ts_text), "%Y-%m-%dT%H:%M:%S", &tm);
    sbuf_lit(b, "{\"ts\":\"");
    sbuf_str(b, ts_text);
    {
        char ms[6] = {'.',
                      (char)('0' + e->ts.tv_nsec / 100000000),
                      (char)('0' + e->ts.tv_nsec / 10000000 % 10),
                      (char)('0' + e->ts.tv_nsec / 1000000 % 10),
                      'Z',
                      '"'};
        sbuf_add(b, ms, 6);
    }
    sbuf_lit(b, ",\"request_id\":\"");
    sbuf_str(b, e->request_id);
    sbuf_lit(b, "\",\"worker\":");
    sbuf_u64(b, (uint64_t)e->worker);
    sbuf_lit(b, ",\"client\":\"");
    sbuf_str(b, e->client);
    sbuf_lit(b, "\",\"device\":\"");
    if (e->device != NULL)
        sbuf_str(b, e->device);
    if (e->tls_resumed)
        sbuf_lit(b, "\",\"tls_resumed\":true,\"route\":\"");
    else
        sbuf_lit(b, "\",\"tls_resumed\":false,\"route\":\"");
    if (e->route != NULL)
        sbuf_str(b, e->route);
    sbuf_lit(b, "\",\"method\":\"");
    sbuf_json(b, e->method, strlen(e->method));
    sbuf_lit(b, "\",\"host\":\"");
    sbuf_json(b, e->host, strlen(e->host));
    sbuf_lit(b, "\",\"path\":\"");
    if (e->path != NULL) {
        size_t n = e->path_len;
        if (n >= 5 && memcmp(e->path, "/.zt/", 5) == 0) {
            const char *q = memchr(e->path, '?', n);
            if (q != NULL)
                n = (size_t)(q - e->path);
        }
        sbuf_json(b, e->path, n);
    }
    sbuf_lit(b, "\",\"status\":");
    sbuf_u64(b, (uint64_t)e->status);
    sbuf_lit(b, ",\"upstream_status\":");
    sbuf_u64(b, (uint64_t)e->upstream_status);
    sbuf_lit(b, ",\"bytes_in\":");
    sbuf_u64(b, e->bytes_in);
    sbuf_lit(b, ",\"bytes_out\":");
    sbuf_u64(b, e->bytes_out);
    sbuf_lit(b, ",\"duration_us\":");
    sbuf_u64(b, e->duration_us);
    if (e->error != NULL) {
        sbuf_lit(b, ",\"error\":\"");
        sbuf_json(b, e->error, strlen(e->error));
        sbuf_lit(b, "\"");
    }
    sbuf_lit(b, "}\n");
}

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* n random bytes from set (NULL: any byte but NUL) into s, NUL-terminated. */
static void rnd_str(char *s, size_t n, const char *set)
{
    size_t i, k = set != NULL ? strlen(set) : 0;

    for (i = 0; i < n; i++)
        s[i] = set != NULL ? set[rnd() % k] : (char)(1 + rnd() % 255);
    s[n] = '\0';
}

/* ---- tests ---------------------------------------------------------------- */

static void test_golden(void **state)
{
    struct accesslog_entry e;
    char *s;

    (void)state;
    entry_init(&e);
    s = line_of(&e);
    assert_string_equal(
        s,
        "{\"ts\":\"2026-11-28T10:31:33.036Z\",\"request_id\":\"43327027ca6645cf0000000000000001\","
        "\"worker\":1,\"client\":\"127.0.0.1:53572\",\"device\":\"laptop1\",\"tls_resumed\":false,"
        "\"route\":\"app\",\"method\":\"GET\",\"host\":\"app.test\",\"path\":\"/\",\"status\":200,"
        "\"upstream_status\":200,\"bytes_in\":0,\"bytes_out\":417,\"duration_us\":2417}\n");
    free(s);

    e.tls_resumed = 1;
    e.status = 502;
    e.upstream_status = 0;
    e.bytes_in = 18446744073709551615u;
    e.error = "upstream unreachable";
    e.ts.tv_nsec = 999999999;
    s = line_of(&e);
    assert_string_equal(
        s,
        "{\"ts\":\"2026-11-28T10:31:33.999Z\",\"request_id\":\"43327027ca6645cf0000000000000001\","
        "\"worker\":1,\"client\":\"127.0.0.1:53572\",\"device\":\"laptop1\",\"tls_resumed\":true,"
        "\"route\":\"app\",\"method\":\"GET\",\"host\":\"app.test\",\"path\":\"/\",\"status\":502,"
        "\"upstream_status\":0,\"bytes_in\":18446744073709551615,\"bytes_out\":417,"
        "\"duration_us\":2417,\"error\":\"upstream unreachable\"}\n");
    free(s);
}

static void test_escaping(void **state)
{
    static const char path[] = "/a\"b\\c\n\t\0\x7f\xc3\xa9\xff\xfe(?q=\x01";
    struct accesslog_entry e;
    char *s;

    (void)state;
    entry_init(&e);
    e.method = "G\"E\\T\x01\x1f";
    e.host = "h\x7f\xc3\xa9st\xc3(\xff";
    e.path = path;
    e.path_len = sizeof(path) - 1; /* the NUL inside is a path byte */
    e.error = "bad \"x\"\\\x1b[0m\xe2\x82";
    s = line_of(&e);
    assert_non_null(strstr(s, "\"method\":\"G\\\"E\\\\T\\u0001\\u001f\",\"host\":"
                              "\"h\\u007f\\u00c3\\u00a9st\\u00c3(\\u00ff\",\"path\":"
                              "\"/a\\\"b\\\\c\\u000a\\u0009\\u0000\\u007f\\u00c3\\u00a9\\u00ff"
                              "\\u00fe(?q=\\u0001\","));
    assert_non_null(strstr(s, ",\"error\":\"bad \\\"x\\\"\\\\\\u001b[0m\\u00e2\\u0082\"}\n"));
    /* One line, valid JSON. */
    assert_ptr_equal(strchr(s, '\n'), s + strlen(s) - 1);
    {
        json_error_t jerr;
        json_t *o = json_loads(s, JSON_ALLOW_NUL, &jerr);

        assert_non_null(o);
        assert_string_equal(json_string_value(json_object_get(o, "method")), "G\"E\\T\x01\x1f");
        json_decref(o);
    }
    free(s);
}

static void test_empty_and_missing(void **state)
{
    struct accesslog_entry e;
    char *s;

    (void)state;
    memset(&e, 0, sizeof(e));
    s = line_of(&e); /* every string NULL, every number 0 */
    assert_string_equal(
        s, "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"request_id\":\"\",\"worker\":0,\"client\":\"\","
           "\"device\":\"\",\"tls_resumed\":false,\"route\":\"\",\"method\":\"\",\"host\":\"\","
           "\"path\":\"\",\"status\":0,\"upstream_status\":0,\"bytes_in\":0,\"bytes_out\":0,"
           "\"duration_us\":0}\n");
    free(s);

    entry_init(&e);
    e.request_id = e.client = e.method = e.host = "";
    e.path = "/ignored";
    e.path_len = 0;
    e.error = ""; /* present, empty */
    e.worker = -1;
    e.status = -1;
    s = line_of(&e);
    assert_non_null(
        strstr(s, "\"request_id\":\"\",\"worker\":18446744073709551615,\"client\":\"\""));
    assert_non_null(strstr(s, "\"method\":\"\",\"host\":\"\",\"path\":\"\",\"status\":"
                              "18446744073709551615,"));
    assert_non_null(strstr(s, ",\"error\":\"\"}\n"));
    free(s);
}

static int contains(const unsigned char *r, size_t len, const char *needle)
{
    return memmem(r, len, needle, strlen(needle)) != NULL;
}

static void test_zt_query_cut(void **state)
{
    static const struct {
        const char *path, *logged;
    } t[] = {
        {"/.zt/callback?code=SECRET1&state=SECRET2", "/.zt/callback"},
        {"/.zt/?SECRET", "/.zt/"},
        {"/.zt/login?return=/x?y=SECRET", "/.zt/login"},
        {"/.zt?q=kept", "/.zt?q=kept"},
        {"/app/.zt/x?q=kept", "/app/.zt/x?q=kept"},
        {"/.zT/x?q=kept", "/.zT/x?q=kept"},
        {"/.zt/plain", "/.zt/plain"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct accesslog_entry e;
        unsigned char *r;
        size_t len, n;
        uint64_t bad;
        char *s, want[256];

        entry_init(&e);
        e.path = t[i].path;
        e.path_len = strlen(t[i].path);
        r = record_of(&e, &len);
        /* The secret never enters the queue. */
        assert_false(contains(r, len, "SECRET"));
        s = format_bytes(r, len, &n, &bad);
        assert_int_equal(n, 1);
        snprintf(want, sizeof(want), "\"path\":\"%s\",", t[i].logged);
        assert_non_null(strstr(s, want));
        free(s);
        free(r);
    }
}

/* Each string: kept whole at its limit, cut there one byte over. */
static void test_limits(void **state)
{
    static char big[ACCESSLOG_PATH_MAX + 2];
    struct accesslog_entry e;
    const char **field[] = {&e.request_id, &e.client, &e.device, &e.route,
                            &e.method,     &e.host,   &e.error};
    static const size_t max[] = {ACCESSLOG_REQID_MAX, ACCESSLOG_CLIENT_MAX, ACCESSLOG_DEVICE_MAX,
                                 ACCESSLOG_ROUTE_MAX, ACCESSLOG_METHOD_MAX, ACCESSLOG_HOST_MAX,
                                 ACCESSLOG_ERROR_MAX};
    size_t i, base, len, n, l0;
    unsigned char *r;
    uint64_t bad;
    char *s;

    (void)state;
    memset(big, 'a', sizeof(big) - 1);
    entry_init(&e);
    e.request_id = e.client = e.device = e.route = e.method = e.host = "";
    e.path = NULL;
    e.error = "";
    free(record_of(&e, &base));
    assert_int_equal(base, REC_FIXED);
    s = line_of(&e);
    l0 = strlen(s);
    free(s);
    for (i = 0; i < sizeof(max) / sizeof(max[0]); i++) {
        size_t k;

        for (k = max[i] - 1; k <= max[i] + 1; k++) {
            size_t keep = k < max[i] ? k : max[i];

            big[k] = '\0';
            *field[i] = big;
            r = record_of(&e, &len);
            assert_int_equal(len, base + keep);
            s = format_bytes(r, len, &n, &bad);
            assert_int_equal(n, 1);
            assert_int_equal(bad, 0);
            assert_int_equal(strlen(s), l0 + keep);
            free(s);
            free(r);
            big[k] = 'a';
        }
        *field[i] = "";
    }
    /* The path: up to ACCESSLOG_PATH_MAX bytes (a record of its size). */
    e.path = big;
    for (n = ACCESSLOG_PATH_MAX - 1; n <= ACCESSLOG_PATH_MAX + 1; n++) {
        e.path_len = n;
        r = record_of(&e, &len);
        assert_int_equal(len, base + (n < ACCESSLOG_PATH_MAX ? n : ACCESSLOG_PATH_MAX));
        s = format_bytes(r, len, &i, &bad);
        assert_int_equal(i, 1);
        assert_int_equal(bad, 0);
        free(s);
        free(r);
    }
}

/* Random entries: every line is byte for byte what the worker wrote. */
static void test_same_as_old_formatter(void **state)
{
    int it;

    (void)state;
    for (it = 0; it < 3000; it++) {
        struct accesslog_entry e;
        char reqid[33], client[64], device[129], route[65], method[24], host[256], err[100];
        char path[600], stack[2048];
        struct sbuf b;
        char *s;

        memset(&e, 0, sizeof(e));
        e.ts.tv_sec = (time_t)(rnd() % 4102444800u); /* up to 2100 */
        e.ts.tv_nsec = (long)(rnd() % 1000000000u);
        e.duration_us = rnd() >> (rnd() % 64);
        e.bytes_in = rnd() >> (rnd() % 64);
        e.bytes_out = rnd() >> (rnd() % 64);
        e.worker = (int)(rnd() % 64);
        e.status = (int)(rnd() % 600);
        e.upstream_status = rnd() % 2 ? e.status : 0;
        e.tls_resumed = (int)(rnd() % 2);
        rnd_str(reqid, rnd() % 33, "0123456789abcdef");
        rnd_str(client, rnd() % 64, "0123456789.:[]abcdef");
        rnd_str(device, rnd() % 129,
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-");
        rnd_str(route, rnd() % 65, "abcdefghijklmnopqrstuvwxyz0123456789_-");
        rnd_str(method, rnd() % 24, it % 2 ? NULL : "GETPOSTHEAD!#$%&'*+-.^_`|~");
        rnd_str(host, rnd() % 256, it % 3 ? NULL : "abc.-:[]0123456789");
        e.request_id = reqid;
        e.client = client;
        e.device = rnd() % 4 ? device : NULL;
        e.route = rnd() % 4 ? route : NULL;
        e.method = method;
        e.host = host;
        if (rnd() % 8) {
            size_t i, n = rnd() % sizeof(path);

            for (i = 0; i < n; i++)
                path[i] = it % 2 ? (char)rnd() : "/.zt?=&%\"abc\\"[rnd() % 14];
            if (n >= 5 && rnd() % 3 == 0)
                memcpy(path, "/.zt/", 5);
            e.path = path;
            e.path_len = n;
        }
        if (rnd() % 3 == 0) {
            rnd_str(err, rnd() % sizeof(err), NULL);
            e.error = err;
        }
        sbuf_init(&b, stack, sizeof(stack));
        old_line(&b, &e);
        sbuf_add(&b, "", 1);
        s = line_of(&e);
        assert_string_equal(s, b.p);
        sbuf_free(&b);
        free(s);
    }
}

static void put_u32(unsigned char *r, size_t off, uint32_t v)
{
    memcpy(r + off, &v, 4);
}

/* Malformed records: counted, skipped, the good ones around them kept. */
static void test_malformed(void **state)
{
    struct accesslog_entry e;
    unsigned char *r, *m, buf[4096];
    size_t len, n, i;
    uint64_t bad;
    char *good, *s;

    (void)state;
    entry_init(&e);
    e.error = "x";
    r = record_of(&e, &len);
    good = format_bytes(r, len, &n, &bad);
    assert_int_equal(n, 1);
    m = malloc(len);
    assert_non_null(m);

    /* Each field check, one at a time. */
    for (i = 0; i < 9; i++) {
        memcpy(m, r, len);
        switch (i) {
        case 0:
            put_u32(m, OFF_NSEC, 1000000000u);
            break;
        case 1:
            m[OFF_FLAGS] |= 0x4;
            break;
        case 2:
            m[OFF_ZERO + 2] = 1;
            break;
        case 3:
            put_u32(m, OFF_PATH_LEN, 2); /* lengths no longer add up */
            break;
        case 4:
            m[OFF_SHORT_LEN + 4] = ACCESSLOG_METHOD_MAX + 1;
            break;
        case 5:
            m[OFF_FLAGS] &= (unsigned char)~0x2; /* error bytes without "error" */
            break;
        case 6:
            put_u32(m, OFF_TOTAL, (uint32_t)len + 1);
            break;
        case 7:
            m[2] = 2; /* type */
            break;
        case 8:
            m[0] ^= 1; /* magic */
            break;
        }
        s = format_bytes(m, len, &n, &bad);
        assert_int_equal(n, 0);
        assert_int_equal(bad, 1);
        assert_string_equal(s, "");
        free(s);
    }

    /* A time with no text (the year too long): bad, and the text of the
     * second before stays right for the next record. */
    memcpy(m, r, len);
    {
        int64_t far = INT64_C(1) << 52;

        memcpy(m + REC_HDR, &far, 8);
    }
    s = format_bytes(m, len, &n, &bad);
    assert_int_equal(n, 0);
    assert_int_equal(bad, 1);
    free(s);
    s = format_bytes(r, len, &n, &bad);
    assert_string_equal(s, good);
    free(s);

    /* Cut short at every length: no line, one bad. */
    for (i = 1; i < len; i++) {
        s = format_bytes(r, i, &n, &bad);
        assert_int_equal(n, 0);
        assert_int_equal(bad, 1);
        free(s);
    }

    /* Junk before, between and after good records. */
    assert_true(3 * len + 30 < sizeof(buf));
    memcpy(buf, "junk\xac", 5);
    memcpy(buf + 5, r, len);
    memcpy(buf + 5 + len, "\xac\x5e\x01", 3);
    memcpy(buf + 8 + len, r, len);
    memcpy(buf + 8 + 2 * len, r, len - 1); /* the last one cut short */
    s = format_bytes(buf, 8 + 3 * len - 1, &n, &bad);
    assert_int_equal(n, 2);
    assert_int_equal(bad, 3);
    assert_int_equal(strlen(s), 2 * strlen(good));
    assert_memory_equal(s, good, strlen(good));
    assert_memory_equal(s + strlen(good), good, strlen(good));
    free(s);

    /* Every byte flipped in turn: never a crash, whole lines only. */
    for (i = 0; i < len; i++) {
        unsigned v;

        for (v = 1; v < 256; v <<= 1) {
            memcpy(m, r, len);
            m[i] ^= (unsigned char)v;
            s = format_bytes(m, len, &n, &bad);
            assert_true(n + bad >= 1);
            assert_true(n <= 1);
            assert_true(strlen(s) == 0 || s[strlen(s) - 1] == '\n');
            free(s);
        }
    }
    free(m);
    free(r);
    free(good);
}

/* Records split across evbuffer chains (and many in a row): the same lines. */
static void test_chunks(void **state)
{
    struct evbuffer *recs = evbuffer_new(), *in = evbuffer_new(), *out = evbuffer_new();
    struct evbuffer *expect = evbuffer_new();
    struct accesslog_entry e;
    unsigned char *all;
    size_t total, i, n;
    uint64_t bad = 0;
    char path[3000];

    (void)state;
    memset(path, 'p', sizeof(path));
    path[0] = '/';
    entry_init(&e);
    for (i = 0; i < 500; i++) {
        struct sbuf b;
        char stack[4096];

        e.path = path;
        e.path_len = i * 5 % sizeof(path) + 1;
        e.bytes_out = i;
        accesslog_append(recs, &e);
        sbuf_init(&b, stack, sizeof(stack));
        old_line(&b, &e);
        evbuffer_add(expect, b.p, b.len);
        sbuf_free(&b);
    }
    total = evbuffer_get_length(recs);
    all = malloc(total);
    assert_non_null(all);
    evbuffer_remove(recs, all, total);
    /* Chunks of 1..97 bytes, each its own chain. */
    for (i = 0; i < total;) {
        size_t k = 1 + i % 97;

        if (k > total - i)
            k = total - i;
        evbuffer_add_reference(in, all + i, k, NULL, NULL);
        i += k;
    }
    n = accesslog_format(in, out, &bad);
    assert_int_equal(n, 500);
    assert_int_equal(bad, 0);
    assert_int_equal(evbuffer_get_length(out), evbuffer_get_length(expect));
    assert_memory_equal(evbuffer_pullup(out, -1), evbuffer_pullup(expect, -1),
                        evbuffer_get_length(out));
    free(all);
    evbuffer_free(recs);
    evbuffer_free(in);
    evbuffer_free(out);
    evbuffer_free(expect);
}

/* The writer thread writes what accesslog_format() makes, in order. */
static void test_writer(void **state)
{
    char dir[] = "/tmp/zt-accesslog-XXXXXX", path[64], cmd[128];
    struct evbuffer *b = evbuffer_new(), *copy = evbuffer_new(), *lines = evbuffer_new();
    struct accesslog_entry e;
    char got[65536];
    size_t n;
    FILE *f;
    int i;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/access.log", dir);
    assert_int_equal(accesslog_start(path), 0);
    assert_true(accesslog_enabled());
    entry_init(&e);
    for (i = 0; i < 100; i++) {
        e.bytes_in = (uint64_t)i;
        accesslog_append(b, &e);
    }
    evbuffer_add(b, "junk", 4); /* counted, never written */
    evbuffer_add(copy, evbuffer_pullup(b, -1), evbuffer_get_length(b));
    accesslog_submit(b);
    assert_int_equal(evbuffer_get_length(b), 0);
    accesslog_stop();
    assert_int_equal(accesslog_bad_records(), 1);
    assert_int_equal(accesslog_format(copy, lines, NULL), 100);
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(got, 1, sizeof(got), f);
    fclose(f);
    assert_int_equal(n, evbuffer_get_length(lines));
    assert_memory_equal(got, evbuffer_pullup(lines, -1), n);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    evbuffer_free(b);
    evbuffer_free(copy);
    evbuffer_free(lines);
}

/*
 * A destination that stops taking lines (a FIFO nobody reads) costs bounded
 * memory: past ACCESSLOG_QUEUE_MAX queued bytes the records are dropped and
 * counted. A reopen meanwhile sends what was queued before it to the old
 * destination (where the write fails: counted as lost) and the records
 * after it to the new file, and only those.
 */
static void test_writer_bounded_and_reopen(void **state)
{
    char dir[] = "/tmp/zt-accesslog-XXXXXX", fifo[64], path[64], cmd[128];
    struct evbuffer *b = evbuffer_new();
    struct accesslog_entry e;
    uint64_t submitted = 0, dropped;
    char got[4096];
    size_t n, rec_len;
    FILE *f;
    int rd, i;

    (void)state;
    signal(SIGPIPE, SIG_IGN);
    assert_non_null(mkdtemp(dir));
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    snprintf(path, sizeof(path), "%s/new.log", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    rd = open(fifo, O_RDONLY | O_NONBLOCK);
    assert_true(rd >= 0);
    assert_int_equal(accesslog_start(fifo), 0);
    entry_init(&e);
    e.bytes_in = 1;
    accesslog_append(b, &e);
    rec_len = evbuffer_get_length(b);
    evbuffer_drain(b, rec_len);
    /* 1.5 times the bound, in worker-sized batches of 64 KiB. */
    while (submitted * rec_len < (uint64_t)ACCESSLOG_QUEUE_MAX * 3 / 2) {
        while (evbuffer_get_length(b) < 65536) {
            accesslog_append(b, &e);
            submitted++;
        }
        accesslog_submit(b);
        assert_int_equal(evbuffer_get_length(b), 0);
    }
    dropped = accesslog_dropped();
    /* At least what exceeds the queue and the pipe's buffer (64 KiB of
     * lines, each longer than its record) and what the writer holds. */
    assert_true(dropped > 0);
    assert_true(dropped < submitted);
    assert_true((submitted - dropped) * rec_len <= (uint64_t)ACCESSLOG_QUEUE_MAX * 5 / 4);

    assert_int_equal(accesslog_reopen(path), 0);
    e.bytes_in = 424242;
    for (i = 0; i < 3; i++)
        accesslog_append(b, &e);
    accesslog_submit(b);
    close(rd); /* the old destination's writes now fail: EPIPE */
    accesslog_stop();
    /* Everything sent to the FIFO either went into its buffer (a few
     * hundred lines at most) or was counted as lost. */
    assert_true(accesslog_dropped() >= submitted - 65536 / 100);
    assert_true(accesslog_dropped() <= submitted);
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(got, 1, sizeof(got) - 1, f);
    fclose(f);
    got[n] = '\0';
    {
        const char *p = got;
        int count = 0;

        while ((p = strstr(p, "\"bytes_in\":424242,")) != NULL) {
            count++;
            p++;
        }
        assert_int_equal(count, 3);
        assert_null(strstr(got, "\"bytes_in\":1,"));
    }
    /* Stopped, it starts again. */
    assert_int_equal(accesslog_start("off"), 0);
    assert_false(accesslog_enabled());
    accesslog_stop();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    evbuffer_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_empty_and_missing),
        cmocka_unit_test(test_zt_query_cut),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_same_as_old_formatter),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_writer),
        cmocka_unit_test(test_writer_bounded_and_reopen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
