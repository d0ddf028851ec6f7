/*
 * fuzz_feed.c - the inventory feed parser: never crash, never leak, always
 * explain a refusal; an accepted feed is consistent (every record is found
 * by its id, and only by it); and the hand-written scanner is never more
 * lenient than jansson: whatever it accepts, json_loadb() accepts too.
 *
 *   clang -std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -fsanitize=fuzzer,address,undefined \
 *       tests/fuzz/fuzz_feed.c device/inventory.c device/posture.c -ljansson -lcrypto -lm \
 *       -o /tmp/fuzz_feed && /tmp/fuzz_feed -max_total_time=180 tests/fuzz/corpus/feed
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "inventory.h"

static const char prev_feed[] =
    "[{\"id\":\"p1\",\"serial\":\"s\",\"owner\":\"o\",\"managed\":true,\"status\":\"active\","
    "\"platform\":\"linux\",\"os_version\":\"1\",\"model\":\"m\",\"enrolled\":"
    "\"2024-01-01T00:00:00Z\"}]";

/* jansson must accept what we accepted (NDJSON: line by line). */
static void check_jansson(const char *data, size_t size)
{
    const char *p = data, *end = data + size, *nl;
    json_error_t jerr;
    json_t *j;
    size_t i = 0, n;

    while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
        i++;
    if (i == size)
        return; /* whitespace only: an empty feed, which jansson has no word for */
    if (data[i] == '[') {
        j = json_loadb(data, size, JSON_REJECT_DUPLICATES, &jerr);
        if (j == NULL)
            abort();
        json_decref(j);
        return;
    }
    for (; p < end; p += n + 1) {
        nl = memchr(p, '\n', (size_t)(end - p));
        n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        for (i = 0; i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'); i++)
            ;
        if (i == n)
            continue;
        j = json_loadb(p, n, JSON_REJECT_DUPLICATES, &jerr);
        if (j == NULL || !json_is_object(j))
            abort();
        json_decref(j);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct inventory *prev;
    struct inventory *inv = NULL;
    struct inventory_attr a, b;
    char err[512], hex[65];
    size_t i, k;

    if (prev == NULL) {
        if (inventory_parse(prev_feed, sizeof(prev_feed) - 1, NULL, 0, 0, &prev, err,
                            sizeof(err)) == -1)
            abort();
    }
    err[0] = '\0';
    /* Odd sizes are reloads over a non-empty snapshot, to reach the empty-feed guard. */
    if (inventory_parse((const char *)data, size, size & 1 ? prev : NULL, 0, 1714564800, &inv, err,
                        sizeof(err)) == -1) {
        if (err[0] == '\0' || inv != NULL)
            abort(); /* every refusal must say why, and leave *out alone */
        return 0;
    }
    check_jansson((const char *)data, size);
    inventory_hash_hex(inv, hex);
    for (i = 0; i < inventory_count(inv); i++) {
        const struct inventory_record *r = inventory_record_at(inv, i);
        const char *id = inventory_record_id(r);
        if (inventory_lookup(inv, id, strlen(id)) != r)
            abort();
        if (inventory_record_status(r) < INVENTORY_STATUS_ACTIVE ||
            inventory_record_status(r) > INVENTORY_STATUS_RETIRED)
            abort();
        if (strlen(inventory_record_owner(r)) == 0 || strlen(inventory_record_platform(r)) == 0 ||
            strlen(inventory_record_os_version(r)) == 0)
            abort();
        (void)strlen(inventory_record_serial(r));
        (void)strlen(inventory_record_model(r));
        for (k = 0; inventory_record_attr_at(r, k, &a) == 0; k++) {
            if (inventory_record_attr_find(r, a.name, &b) != 0 || strcmp(a.name, b.name) != 0)
                abort();
            if (a.type == INVENTORY_ATTR_STRING && strlen(a.str) > INVENTORY_ATTR_VALUE_MAX)
                abort();
        }
        if (k != inventory_record_attr_count(r))
            abort();
    }
    if (inventory_lookup(inv, "no-such-device-\x01", 16) != NULL)
        abort();
    inventory_unref(inv);
    return 0;
}
