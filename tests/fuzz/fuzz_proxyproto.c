/*
 * fuzz_proxyproto.c - proxyproto_parse() on untrusted bytes, as a load
 * balancer (or anyone reaching a proxy_protocol listener) sends them.
 *
 * Invariants beyond "no crash, no out-of-bounds read": the verdict on the
 * whole input agrees with the verdict reached by feeding it the way the
 * proxy reads the socket (exactly *need bytes at a time); MORE always asks
 * for more than it has; DONE never claims more bytes than it was given or
 * than the limit; a PROXY result has an IPv4 or IPv6 source, a LOCAL one
 * none; every error has a message. The first input byte (when there are at
 * least two) picks the size limit, so the limit's edges are explored too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proxyproto_header full, step;
    char err[PROXYPROTO_ERR_MAX], err2[PROXYPROTO_ERR_MAX];
    size_t max = PROXYPROTO_MAX_HEADER, need = 0, have, n2 = 0;
    enum proxyproto_status st, st2;
    uint8_t *copy;

    if (size >= 2 && data[0] == 0xFF) {
        max = 16 + (size_t)data[1] * 4;
        data += 2;
        size -= 2;
    }
    /* A copy of exactly size bytes: ASan catches any read past the end. */
    copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);

    err[0] = '\0';
    st = proxyproto_parse(copy, size, max, &full, &need, err, sizeof(err));
    switch (st) {
    case PROXYPROTO_MORE:
        if (need <= size)
            abort();
        break;
    case PROXYPROTO_DONE:
        if (full.len > size || full.len > max || full.len < PROXYPROTO_FIXED_LEN ||
            need != full.len)
            abort();
        if (full.command == PROXYPROTO_CMD_PROXY &&
            !(full.src.ss_family == AF_INET || full.src.ss_family == AF_INET6))
            abort();
        if (full.command == PROXYPROTO_CMD_LOCAL && full.addrlen != 0)
            abort();
        break;
    case PROXYPROTO_ERROR:
        if (err[0] == '\0')
            abort();
        break;
    default:
        abort();
    }

    /* As the proxy reads: what the parser asks for, never more. */
    have = size < PROXYPROTO_FIXED_LEN ? size : PROXYPROTO_FIXED_LEN;
    for (;;) {
        err2[0] = '\0';
        st2 = proxyproto_parse(copy, have, max, &step, &n2, err2, sizeof(err2));
        if (st2 != PROXYPROTO_MORE)
            break;
        if (n2 <= have)
            abort();
        if (have == size)
            break;
        have = n2 < size ? n2 : size;
    }
    if (st2 != st)
        abort();
    if (st == PROXYPROTO_DONE && (step.len != full.len || step.command != full.command ||
                                  memcmp(&step.src, &full.src, sizeof(full.src)) != 0))
        abort();
    free(copy);
    return 0;
}
