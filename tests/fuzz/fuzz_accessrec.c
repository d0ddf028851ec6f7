/*
 * fuzz_accessrec.c - the access log's record decoder and formatter
 * (accesslog_format(), the code the writer thread runs on what workers
 * submit). Records are internal data, but the decoder must hold against
 * any bytes: never crash or read outside a record, count what it cannot
 * read, and only ever produce whole lines. Invariants: every line is one
 * valid JSON object "{"ts":"...}\n" with no other newline; the same bytes
 * give the same lines whether they arrive in one chunk or two; any input
 * yields at least one line or one bad count. Then the other side: the
 * input's bytes as an entry's strings, appended and formatted, give one
 * line whose members read back as those strings (cut at their limits).
 *
 * Built by CMake with -DZT_FUZZ=ON (build-fuzz/fuzz_accessrec), then
 *   build-fuzz/fuzz_accessrec -max_total_time=120 tests/fuzz/corpus/accessrec
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "accesslog.h"

static void check_lines(const char *p, size_t len)
{
    while (len > 0) {
        const char *nl = memchr(p, '\n', len);
        size_t n;
        json_t *o;
        json_error_t jerr;

        if (nl == NULL)
            abort(); /* half a line */
        n = (size_t)(nl - p);
        if (n < 8 || memcmp(p, "{\"ts\":\"", 7) != 0 || p[n - 1] != '}')
            abort();
        o = json_loadb(p, n, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL,
                       &jerr);
        if (o == NULL || !json_is_object(o))
            abort();
        json_decref(o);
        p += n + 1;
        len -= n + 1;
    }
}

/* The member key of o is the string s[0..n) (bytes as \u00XX: code points). */
static void check_member(json_t *o, const char *key, const uint8_t *s, size_t n)
{
    json_t *v = json_object_get(o, key);
    const unsigned char *u;
    size_t i, j = 0, l;

    if (!json_is_string(v))
        abort();
    u = (const unsigned char *)json_string_value(v);
    l = json_string_length(v);
    /* Bytes from 0x80 up come back as U+0080..U+00FF, two bytes each. */
    for (i = 0; i < n; i++) {
        if (s[i] < 0x80) {
            if (j >= l || u[j] != s[i])
                abort();
            j++;
        } else {
            if (j + 1 >= l || u[j] != (0xc0 | s[i] >> 6) || u[j + 1] != (0x80 | (s[i] & 0x3f)))
                abort();
            j += 2;
        }
    }
    if (j != l)
        abort();
}

/* data as the strings of an entry: method, host, path, error (cut at NULs
 * where the entry's strings are NUL-terminated). */
static void roundtrip(const uint8_t *data, size_t size)
{
    struct evbuffer *rec = evbuffer_new(), *out = evbuffer_new();
    struct accesslog_entry e;
    char method[ACCESSLOG_METHOD_MAX + 1], host[ACCESSLOG_HOST_MAX + 1], err[64];
    size_t q = size / 4, ml, hl, el, pl;
    uint64_t bad = 0;
    json_t *o;
    json_error_t jerr;

    if (rec == NULL || out == NULL)
        abort();
    ml = strnlen((const char *)data, q < ACCESSLOG_METHOD_MAX ? q : ACCESSLOG_METHOD_MAX);
    memcpy(method, data, ml);
    method[ml] = '\0';
    hl = strnlen((const char *)data + q, q < ACCESSLOG_HOST_MAX ? q : ACCESSLOG_HOST_MAX);
    memcpy(host, data + q, hl);
    host[hl] = '\0';
    el = strnlen((const char *)data + 2 * q, q < sizeof(err) - 1 ? q : sizeof(err) - 1);
    memcpy(err, data + 2 * q, el);
    err[el] = '\0';
    memset(&e, 0, sizeof(e));
    e.ts.tv_sec = 1795861893;
    e.method = method;
    e.host = host;
    e.error = err;
    e.path = (const char *)data + 3 * q;
    e.path_len = size - 3 * q;
    accesslog_append(rec, &e);
    if (accesslog_format(rec, out, &bad) != 1 || bad != 0)
        abort();
    o = json_loadb((const char *)evbuffer_pullup(out, -1), evbuffer_get_length(out),
                   JSON_DISABLE_EOF_CHECK | JSON_ALLOW_NUL, &jerr);
    if (o == NULL)
        abort();
    check_member(o, "method", (const uint8_t *)method, ml);
    check_member(o, "host", (const uint8_t *)host, hl);
    check_member(o, "error", (const uint8_t *)err, el);
    pl = e.path_len;
    if (pl >= 5 && memcmp(e.path, "/.zt/", 5) == 0 && memchr(e.path, '?', pl) != NULL)
        pl = (size_t)((const char *)memchr(e.path, '?', pl) - e.path);
    check_member(o, "path", (const uint8_t *)e.path, pl);
    json_decref(o);
    evbuffer_free(rec);
    evbuffer_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct evbuffer *in = evbuffer_new(), *out1 = evbuffer_new(), *out2 = evbuffer_new();
    struct evbuffer *piece = evbuffer_new();
    uint64_t bad1 = 0, bad2 = 0;
    size_t n1, n2, l1;
    const char *t1, *t2;

    if (in == NULL || out1 == NULL || out2 == NULL || piece == NULL)
        abort();
    evbuffer_add(in, data, size);
    n1 = accesslog_format(in, out1, &bad1);
    if (evbuffer_get_length(in) != 0 || (size > 0 && n1 + bad1 == 0))
        abort();
    l1 = evbuffer_get_length(out1);
    t1 = (const char *)evbuffer_pullup(out1, -1);
    check_lines(t1, l1);

    /* The same bytes in two chunks: the same lines. */
    evbuffer_add(in, data, size / 2);
    evbuffer_add(piece, data + size / 2, size - size / 2);
    evbuffer_add_buffer(in, piece);
    n2 = accesslog_format(in, out2, &bad2);
    t2 = (const char *)evbuffer_pullup(out2, -1);
    if (n2 != n1 || bad2 != bad1 || evbuffer_get_length(out2) != l1 ||
        (l1 > 0 && memcmp(t1, t2, l1) != 0))
        abort();

    roundtrip(data, size);

    evbuffer_free(in);
    evbuffer_free(out1);
    evbuffer_free(out2);
    evbuffer_free(piece);
    return 0;
}
