/*
 * fuzz_shared.c - shared_msg_parse(), the parser of the messages replicas
 * exchange through Redis (include/shared.h): whoever can write to Redis can
 * send anything. Invariants: a refusal explains itself ("shared: $..."); an
 * accepted message has the fields its type promises, within their limits.
 *
 *   CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DZT_FUZZ=ON \
 *       && cmake --build build-fuzz -j2 --target fuzz_shared \
 *       && build-fuzz/fuzz_shared -max_total_time=120 tests/fuzz/corpus/shared
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "posture.h"
#include "shared.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct shared_msg m;
    char err[512];

    err[0] = '\0';
    if (shared_msg_parse((const char *)data, size, &m, err, sizeof(err)) == -1) {
        if (strncmp(err, "shared: $", 9) != 0 || m.root != NULL)
            abort();
        return 0;
    }
    if (m.origin == NULL || strlen(m.origin) == 0 || strlen(m.origin) > 64)
        abort();
    switch (m.type) {
    case SHARED_POSTURE:
        if (m.report == NULL || m.report_len != strlen(m.report) || m.report_len > POSTURE_JSON_MAX)
            abort();
        break;
    case SHARED_REVOKE:
        if ((m.user == NULL) == (m.session == NULL) || m.at < 1 ||
            (m.session != NULL && strlen(m.session) != 32) ||
            (m.user != NULL && (strlen(m.user) == 0 || strlen(m.user) > 255)))
            abort();
        break;
    case SHARED_OVERRIDE:
        if (m.device == NULL || strlen(m.device) == 0)
            abort();
        break;
    case SHARED_RULES:
        if (m.id == NULL || m.author == NULL || m.comment == NULL || m.document == NULL ||
            m.document_len != strlen(m.document) || m.document_len > POLICY_FILE_MAX)
            abort();
        break;
    default:
        abort();
    }
    shared_msg_reset(&m);
    if (m.root != NULL)
        abort();
    return 0;
}
