/*
 * fuzz_directory.c - the group directory parser on arbitrary bytes: never
 * crash, never leak, explain every refusal; what parses answers lookups.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "directory.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct directory *d;
    const uint32_t *ids;
    char err[512];
    size_t n, i;
    uint32_t id;

    err[0] = '\0';
    d = directory_parse((const char *)data, size, "fuzz.json", err, sizeof(err));
    if (d == NULL) {
        if (err[0] == '\0')
            abort();
        return 0;
    }
    for (i = 0; i < directory_group_count(d); i++) {
        const char *name = directory_group_name(d, (uint32_t)i);
        if (name == NULL || directory_group_find(d, name, &id) != 0 || id != i)
            abort();
    }
    if (directory_user_groups(d, "u1", "alice@corp.example", &ids, &n) == 0) {
        for (i = 0; i < n; i++)
            if (ids[i] >= directory_group_count(d) || (i > 0 && ids[i] <= ids[i - 1]))
                abort();
    }
    (void)directory_group_find(d, "staff", &id);
    directory_unref(d);
    return 0;
}
