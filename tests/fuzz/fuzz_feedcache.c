/*
 * fuzz_feedcache.c - the feed cache's meta file parser (read back from the
 * state directory, so untrusted): never crash, never leak, always explain
 * a refusal, and an accepted meta holds only what the contract allows.
 *
 *   CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DZT_FUZZ=ON &&
 *   cmake --build build-fuzz --target fuzz_feedcache &&
 *   build-fuzz/fuzz_feedcache -max_total_time=60 tests/fuzz/corpus/feedcache
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "feedcache.h"

static int clean(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1), i;

    if (n > max)
        return 0;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct feedcache_meta m;
    char err[512];

    err[0] = '\0';
    if (feedcache_meta_parse((const char *)data, size, "meta", &m, err, sizeof(err)) == 0) {
        if (m.url[0] == '\0' || !clean(m.url, FEEDCACHE_URL_MAX) ||
            !clean(m.etag, FEEDCACHE_VALIDATOR_MAX) ||
            !clean(m.last_modified, FEEDCACHE_VALIDATOR_MAX) || m.fetched_at < 0 ||
            m.fetched_at > (1LL << 40))
            abort();
    } else if (err[0] == '\0' || strncmp(err, "meta: ", 6) != 0) {
        abort(); /* every refusal says where */
    }
    return 0;
}
