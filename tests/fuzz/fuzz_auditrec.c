/*
 * fuzz_auditrec.c - the audit log's record decoder and formatter
 * (auditlog_format(), the code the writer thread runs on what workers
 * submit). Records are internal data, but the decoder must hold against
 * any bytes: never crash or read outside a record, count what it cannot
 * read, and only ever produce whole lines. Invariants: every line is
 * "{"time":"...}\n" with no other newline; a decision line (every line but
 * an admin event, whose detail is passed through as given) is one valid
 * JSON object; the same bytes give the same lines whether they arrive in
 * one chunk or two; any input yields at least one line or one bad count.
 *
 * Built by CMake with -DZT_FUZZ=ON (build-fuzz/fuzz_auditrec), then
 *   build-fuzz/fuzz_auditrec -max_total_time=120 tests/fuzz/corpus/auditrec
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <jansson.h>

#include "auditlog.h"

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
        if (n < 11 || memcmp(p, "{\"time\":\"", 9) != 0 || p[n - 1] != '}')
            abort();
        /* An admin line's detail is the caller's JSON text, not checked
         * here; "event":"admin" cannot occur unescaped in a decision line
         * (every string in one is escaped, and no member is "event"). */
        if (memmem(p, n, "\"event\":\"admin\"", 15) == NULL) {
            o = json_loadb(p, n, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL | JSON_ALLOW_NUL,
                           &jerr);
            if (o == NULL || !json_is_object(o))
                abort();
            json_decref(o);
        }
        p += n + 1;
        len -= n + 1;
    }
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
    n1 = auditlog_format(in, out1, &bad1);
    if (evbuffer_get_length(in) != 0 || (size > 0 && n1 + bad1 == 0))
        abort();
    l1 = evbuffer_get_length(out1);
    t1 = (const char *)evbuffer_pullup(out1, -1);
    check_lines(t1, l1);

    /* The same bytes in two chunks: the same lines. */
    evbuffer_add(in, data, size / 2);
    evbuffer_add(piece, data + size / 2, size - size / 2);
    evbuffer_add_buffer(in, piece);
    n2 = auditlog_format(in, out2, &bad2);
    t2 = (const char *)evbuffer_pullup(out2, -1);
    if (n2 != n1 || bad2 != bad1 || evbuffer_get_length(out2) != l1 ||
        (l1 > 0 && memcmp(t1, t2, l1) != 0))
        abort();

    evbuffer_free(in);
    evbuffer_free(out1);
    evbuffer_free(out2);
    evbuffer_free(piece);
    return 0;
}
