/*
 * inventory_test.c - the inventory feed: strict parsing (every refusal names
 * the record and field), NDJSON, duplicates, the empty-feed guard, lookup.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "inventory.h"

#define T0 1714564800 /* 2024-05-01T12:00:00Z */

/* A valid record with id ID and extra JSON members X (",..." or ""). */
#define REC(ID, X)                                                                                 \
    "{\"id\":\"" ID "\",\"serial\":\"C02XYZ\",\"owner\":\"alice@corp.example\",\"managed\":true,"  \
    "\"status\":\"active\",\"platform\":\"linux\",\"os_version\":\"12.4\",\"model\":\"X1\","       \
    "\"enrolled\":\"2024-01-02T03:04:05Z\"" X "}"

static int parse(const char *text, const struct inventory *prev, unsigned flags,
                 struct inventory **out, char *err, size_t errlen)
{
    return inventory_parse(text, strlen(text), prev, flags, T0, out, err, errlen);
}

static void test_array_good(void **state)
{
    const char *feed = "[\n" REC(
        "dev-1",
        ",\"department\":\"eng\",\"cost_center\":4711,\"ratio\":0.5,"
        "\"shared\":false,\"note\":null") ",\n"
                                          "{\"id\":\"dev-2\",\"serial\":\"\",\"owner\":\"bob@corp."
                                          "example\",\"managed\":false,"
                                          "\"status\":\"lost\",\"platform\":\"macOS\",\"os_"
                                          "version\":\"14.4.1\",\"model\":\"\","
                                          "\"enrolled\":\"2023-12-31T23:00:00-01:00\"}\n]\n";
    const struct inventory_record *r;
    struct inventory *inv = NULL;
    struct inventory_attr a;
    char err[256] = "", hex[65];

    (void)state;
    assert_int_equal(parse(feed, NULL, 0, &inv, err, sizeof(err)), 0);
    assert_int_equal(inventory_count(inv), 2);
    assert_int_equal(inventory_loaded_at(inv), T0);
    assert_int_equal(inventory_version(inv), 1);
    inventory_hash_hex(inv, hex);
    assert_int_equal(strlen(hex), 64);

    r = inventory_lookup(inv, "dev-1", 5);
    assert_non_null(r);
    assert_ptr_equal(r, inventory_record_at(inv, 0));
    assert_string_equal(inventory_record_id(r), "dev-1");
    assert_string_equal(inventory_record_serial(r), "C02XYZ");
    assert_string_equal(inventory_record_owner(r), "alice@corp.example");
    assert_string_equal(inventory_record_platform(r), "linux");
    assert_string_equal(inventory_record_os_version(r), "12.4");
    assert_string_equal(inventory_record_model(r), "X1");
    assert_int_equal(inventory_record_status(r), INVENTORY_STATUS_ACTIVE);
    assert_int_equal(inventory_record_managed(r), 1);
    assert_int_equal(inventory_record_enrolled(r), 1704164645);

    /* Extra fields in feed order; null ones are absent. */
    assert_int_equal(inventory_record_attr_count(r), 4);
    assert_int_equal(inventory_record_attr_at(r, 0, &a), 0);
    assert_string_equal(a.name, "department");
    assert_int_equal(a.type, INVENTORY_ATTR_STRING);
    assert_string_equal(a.str, "eng");
    assert_int_equal(inventory_record_attr_at(r, 1, &a), 0);
    assert_int_equal(a.type, INVENTORY_ATTR_INTEGER);
    assert_int_equal(a.i, 4711);
    assert_int_equal(inventory_record_attr_at(r, 2, &a), 0);
    assert_int_equal(a.type, INVENTORY_ATTR_REAL);
    assert_true(a.real == 0.5);
    assert_int_equal(inventory_record_attr_find(r, "shared", &a), 0);
    assert_int_equal(a.type, INVENTORY_ATTR_BOOL);
    assert_int_equal(a.i, 0);
    assert_int_equal(inventory_record_attr_find(r, "note", &a), -1);
    assert_int_equal(inventory_record_attr_find(r, "owner", &a), -1);
    assert_int_equal(inventory_record_attr_at(r, 4, &a), -1);

    r = inventory_lookup(inv, "dev-2", 5);
    assert_non_null(r);
    assert_string_equal(inventory_record_platform(r), "macos"); /* lower-cased */
    assert_int_equal(inventory_record_status(r), INVENTORY_STATUS_LOST);
    assert_int_equal(inventory_record_managed(r), 0);
    assert_int_equal(inventory_record_enrolled(r), 1704067200); /* 2024-01-01T00:00:00Z */
    assert_int_equal(inventory_record_attr_count(r), 0);

    /* Lookups are exact: length, case, prefixes. */
    assert_null(inventory_lookup(inv, "dev-3", 5));
    assert_null(inventory_lookup(inv, "DEV-1", 5));
    assert_null(inventory_lookup(inv, "dev-1x", 5 + 1));
    assert_non_null(inventory_lookup(inv, "dev-1x", 5));
    assert_null(inventory_lookup(inv, "dev-", 4));
    assert_null(inventory_lookup(inv, "", 0));
    assert_null(inventory_record_at(inv, 2));
    inventory_unref(inv);
}

static void test_escapes_and_utf8(void **state)
{
    const char *feed = "[" REC("d\\u002d1", ",\"city\":\"K\\u00f6ln \\ud83d\\ude00\","
                                            "\"site\":\"Z\xc3\xbcrich\\/\\\"HQ\\\"\"") "]";
    const struct inventory_record *r;
    struct inventory *inv = NULL;
    struct inventory_attr a;
    char err[256] = "";

    (void)state;
    assert_int_equal(parse(feed, NULL, 0, &inv, err, sizeof(err)), 0);
    r = inventory_lookup(inv, "d-1", 3);
    assert_non_null(r);
    assert_int_equal(inventory_record_attr_find(r, "city", &a), 0);
    assert_string_equal(a.str, "K\xc3\xb6ln \xf0\x9f\x98\x80");
    assert_int_equal(inventory_record_attr_find(r, "site", &a), 0);
    assert_string_equal(a.str, "Z\xc3\xbcrich/\"HQ\"");
    inventory_unref(inv);
}

static void test_ndjson_good(void **state)
{
    const char *feed = "\n  " REC("a", "") "\r\n\n" REC("b", ",\"x\":1") "\n   \n" REC("c", "");
    struct inventory *inv = NULL;
    char err[256] = "";

    (void)state;
    assert_int_equal(parse(feed, NULL, 0, &inv, err, sizeof(err)), 0);
    assert_int_equal(inventory_count(inv), 3);
    assert_non_null(inventory_lookup(inv, "a", 1));
    assert_non_null(inventory_lookup(inv, "b", 1));
    assert_non_null(inventory_lookup(inv, "c", 1));
    assert_string_equal(inventory_record_id(inventory_record_at(inv, 2)), "c");
    inventory_unref(inv);
}

struct bad_case {
    const char *feed;
    const char *expect; /* the whole message */
};

#define A(X) "[" REC("d1", "") "," X "]"
#define BADREC(FIELD_JSON)                                                                         \
    "[{\"id\":\"d1\",\"serial\":\"s\",\"owner\":\"o\",\"managed\":true,\"status\":\"active\","     \
    "\"platform\":\"linux\",\"os_version\":\"1\",\"model\":\"m\",\"enrolled\":"                    \
    "\"2024-01-01T00:00:00Z\"," FIELD_JSON "}]"

static const struct bad_case bad_cases[] = {
    {"x", "inventory: $: expected a JSON array of records or NDJSON objects"},
    {"\xef\xbb\xbf[]", "inventory: $: expected a JSON array of records or NDJSON objects"},
    {"[1]", "inventory: $[0]: expected an object, got 1"},
    {A("\"x\""), "inventory: $[1]: expected an object, got \"x\""},
    {A("[]"), "inventory: $[1]: expected an object, got an array"},
    {"[{\"id\":\"d1\"}]", "inventory: $[0].serial: required field is missing"},
    {A("{\"id\":\"d2\",\"serial\":\"s\",\"owner\":\"o\",\"managed\":true,\"status\":\"active\","
       "\"platform\":\"linux\",\"os_version\":\"1\",\"model\":\"m\"}"),
     "inventory: $[1].enrolled: required field is missing"},
    {A(REC("d2", ",\"managed\":true")), "inventory: $[1].managed: duplicate key"},
    {A(REC("d2", ",\"x\":1,\"x\":2")), "inventory: $[1].x: duplicate key"},
    {A(REC("d2", ",\"x\":null,\"x\":2")), "inventory: $[1].x: duplicate key"},
    {"[" REC("d1", "") "," REC("d2", "") "," REC("d1", "") "]",
     "inventory: $[2].id: duplicate device id \"d1\" (also at $[0])"},
    {"[{\"id\":5}]", "inventory: $[0].id: expected 1-128 characters of [A-Za-z0-9._:-], got 5"},
    {"[{\"id\":\"a b\"}]",
     "inventory: $[0].id: expected 1-128 characters of [A-Za-z0-9._:-], got \"a b\""},
    {"[{\"id\":\"\"}]",
     "inventory: $[0].id: expected 1-128 characters of [A-Za-z0-9._:-], got \"\""},
    {"[{\"serial\":7}]", "inventory: $[0].serial: expected a string, got 7"},
    {"[{\"owner\":\"\"}]", "inventory: $[0].owner: expected 1 to 256 bytes, got 0"},
    {"[{\"owner\":\"a b\"}]",
     "inventory: $[0].owner: control characters and spaces are not allowed"},
    {"[{\"model\":\"a\\tb\"}]", "inventory: $[0].model: control characters are not allowed"},
    {"[{\"managed\":\"yes\"}]", "inventory: $[0].managed: expected true or false, got \"yes\""},
    {"[{\"managed\":1}]", "inventory: $[0].managed: expected true or false, got 1"},
    {"[{\"status\":\"gone\"}]", "inventory: $[0].status: expected \"active\", \"lost\", \"stolen\" "
                                "or \"retired\", got \"gone\""},
    {"[{\"status\":\"Active\"}]",
     "inventory: $[0].status: expected \"active\", \"lost\", \"stolen\" or \"retired\", got "
     "\"Active\""},
    {"[{\"status\":\"none\"}]", "inventory: $[0].status: expected \"active\", \"lost\", \"stolen\" "
                                "or \"retired\", got \"none\""},
    {"[{\"status\":null}]",
     "inventory: $[0].status: expected \"active\", \"lost\", \"stolen\" or \"retired\", got null"},
    {"[{\"platform\":\"mac os\"}]",
     "inventory: $[0].platform: expected 1-32 characters of [A-Za-z0-9._-] like \"linux\", got "
     "\"mac os\""},
    {"[{\"os_version\":\"\"}]", "inventory: $[0].os_version: expected 1 to 64 bytes, got 0"},
    {"[{\"enrolled\":\"2024-02-30T00:00:00Z\"}]",
     "inventory: $[0].enrolled: expected an RFC 3339 time like \"2024-05-01T12:00:00Z\", got "
     "\"2024-02-30T00:00:00Z\""},
    {"[{\"enrolled\":1714564800}]",
     "inventory: $[0].enrolled: expected an RFC 3339 time like \"2024-05-01T12:00:00Z\", got "
     "1714564800"},
    {BADREC("\"tags\":[\"a\"]"),
     "inventory: $[0].tags: expected a string, number, boolean or null (nested objects and arrays "
     "are not supported), got an array"},
    {BADREC("\"loc\":{\"city\":\"x\"}"),
     "inventory: $[0].loc: expected a string, number, boolean or null (nested objects and arrays "
     "are not supported), got an object"},
    {BADREC("\"a b\":1"),
     "inventory: $[0].a b: extra field names must be 1-64 characters of [A-Za-z0-9._-]"},
    {BADREC("\"\":1"),
     "inventory: $[0].: extra field names must be 1-64 characters of [A-Za-z0-9._-]"},
    {BADREC("\"n\":99999999999999999999"),
     "inventory: $[0]: JSON syntax error at line 1 column 157: integer out of range"},
    {BADREC("\"n\":1e999"),
     "inventory: $[0]: JSON syntax error at line 1 column 157: real number overflow"},
    {BADREC("\"n\":01"),
     "inventory: $[0]: JSON syntax error at line 1 column 158: expected ',' or '}'"},
    {BADREC("\"n\":-"), "inventory: $[0]: JSON syntax error at line 1 column 157: invalid number"},
    {BADREC("\"n\":1."), "inventory: $[0]: JSON syntax error at line 1 column 157: invalid number"},
    {BADREC("\"n\":tru"),
     "inventory: $[0]: JSON syntax error at line 1 column 157: expected a value"},
    {BADREC("\"n\":\"a\\u0000\""),
     "inventory: $[0]: JSON syntax error at line 1 column 159: \\u0000 is not allowed"},
    {BADREC("\"n\":\"\\ud800\""),
     "inventory: $[0]: JSON syntax error at line 1 column 158: unpaired surrogate in a \\u escape"},
    {BADREC("\"n\":\"\\udc00\\ud800\""),
     "inventory: $[0]: JSON syntax error at line 1 column 158: unpaired surrogate in a \\u escape"},
    {BADREC("\"n\":\"\\x\""),
     "inventory: $[0]: JSON syntax error at line 1 column 158: invalid escape in a string"},
    {BADREC("\"n\":\"\\u12G4\""),
     "inventory: $[0]: JSON syntax error at line 1 column 158: invalid \\u escape"},
    {BADREC("\"n\":\"a\tb\""),
     "inventory: $[0]: JSON syntax error at line 1 column 159: control character in a string"},
    {BADREC("\"n\":\"\xc0\xaf\""),
     "inventory: $[0]: JSON syntax error at line 1 column 158: invalid UTF-8 in a string"},
    {BADREC("\"n\":\"\xed\xa0\x80\""),
     "inventory: $[0]: JSON syntax error at line 1 column 158: invalid UTF-8 in a string"},
    {BADREC("\"n\":\"\xf4\x90\x80\x80\""),
     "inventory: $[0]: JSON syntax error at line 1 column 158: invalid UTF-8 in a string"},
    {"[\n" REC("d1", "") ",\n]",
     "inventory: $[1]: JSON syntax error at line 3 column 1: expected a value"},
    {"[" REC("d1", "") " " REC("d2", "") "]",
     "inventory: $: JSON syntax error at line 1 column 180: expected ',' or ']'"},
    {"[" REC("d1", ""),
     "inventory: $: JSON syntax error at line 1 column 179: expected ',' or ']'"},
    {"[" REC("d1", "") ",",
     "inventory: $: JSON syntax error at line 1 column 180: expected a record, got the end of the "
     "feed"},
    {"[{\"id\" \"d1\"}]", "inventory: $[0]: JSON syntax error at line 1 column 8: expected ':'"},
    {"[{\"id\":\"d1\",}]",
     "inventory: $[0]: JSON syntax error at line 1 column 13: expected a key string"},
    {"[{\"id\":\"d1\"",
     "inventory: $[0]: JSON syntax error at line 1 column 12: expected ',' or '}'"},
    {"[{\"id\":\"d1", "inventory: $[0]: JSON syntax error at line 1 column 8: unterminated string"},
    {"[] []",
     "inventory: $: JSON syntax error at line 1 column 4: data after the end of the array"},
    /* NDJSON: the line, then the path inside the record. */
    {REC("d1", "") "\n\n"
                   "{\"id\":\"d2\",\"managed\":\"no\"}",
     "inventory: line 3: $.managed: expected true or false, got \"no\""},
    {REC("d1", "") "\n" REC("d2", "") "\n\n" REC("d1", ""),
     "inventory: line 4: $.id: duplicate device id \"d1\" (also on line 1)"},
    {"{\"id\":\n\"d1\"}", "inventory: line 1: $: JSON syntax error at column 7: expected a value"},
    {REC("d1", "") " " REC("d2", ""),
     "inventory: line 1: $: JSON syntax error at column 179: data after the record (one object per "
     "line)"},
    {REC("d1", "") "\n[1]", "inventory: line 2: $: expected an object, got an array"},
    {REC("d1", "") "\n\"x\"", "inventory: line 2: $: expected an object, got \"x\""},
};

static void test_bad_feeds(void **state)
{
    size_t i;

    int bad = 0;

    (void)state;
    for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        struct inventory *inv = NULL;
        char err[512] = "";
        int rc = parse(bad_cases[i].feed, NULL, 0, &inv, err, sizeof(err));
        if (rc != -1 || strcmp(err, bad_cases[i].expect) != 0) {
            print_error("case %zu: rc %d\n  got:    %s\n  expect: %s\n", i, rc, err,
                        bad_cases[i].expect);
            bad++;
        }
        assert_null(inv);
    }
    assert_int_equal(bad, 0);
}

/* A valid record with one field's value replaced by VALUE (a JSON string body). */
static void make_record(char *out, size_t len, const char *field, const char *value)
{
    static const char *const names[] = {"id",         "serial", "owner", "platform",
                                        "os_version", "model",  NULL};
    static const char *const vals[] = {"d1", "s", "o", "linux", "1", "m"};
    size_t off, i;

    off = (size_t)snprintf(out, len,
                           "[{\"managed\":true,\"status\":\"active\","
                           "\"enrolled\":\"2024-01-01T00:00:00Z\"");
    for (i = 0; names[i] != NULL; i++)
        off += (size_t)snprintf(out + off, len - off, ",\"%s\":\"%s\"", names[i],
                                strcmp(names[i], field) == 0 ? value : vals[i]);
    snprintf(out + off, len - off, "}]");
}

/* Both sides of each length limit. */
static void test_field_limits(void **state)
{
    static const struct {
        const char *field;
        size_t max;
    } lim[] = {
        {"id", 128},      {"serial", 128},    {"owner", 256},
        {"platform", 32}, {"os_version", 64}, {"model", 128},
    };
    char feed[4096], val[300], err[512];
    size_t i, extra;

    (void)state;
    for (i = 0; i < sizeof(lim) / sizeof(lim[0]); i++) {
        for (extra = 0; extra <= 1; extra++) {
            struct inventory *inv = NULL;
            memset(val, 'a', lim[i].max + extra);
            val[lim[i].max + extra] = '\0';
            make_record(feed, sizeof(feed), lim[i].field, val);
            err[0] = '\0';
            if (extra == 0) {
                if (parse(feed, NULL, 0, &inv, err, sizeof(err)) != 0) {
                    print_error("%s at %zu: %s\n", lim[i].field, lim[i].max, err);
                    fail();
                }
                inventory_unref(inv);
            } else {
                char prefix[64];
                assert_int_equal(parse(feed, NULL, 0, &inv, err, sizeof(err)), -1);
                snprintf(prefix, sizeof(prefix), "inventory: $[0].%s: expected ", lim[i].field);
                assert_memory_equal(err, prefix, strlen(prefix));
            }
        }
    }
}

static void test_record_limits(void **state)
{
    char *feed, err[512];
    struct inventory *inv = NULL;
    size_t i, off;

    (void)state;
    /* 64 extra fields are fine, 65 are not. */
    feed = malloc(8192);
    assert_non_null(feed);
    for (int n = 64; n <= 65; n++) {
        off = (size_t)snprintf(feed, 8192,
                               "[{\"id\":\"d1\",\"serial\":\"s\",\"owner\":\"o\","
                               "\"managed\":true,\"status\":\"active\",\"platform\":"
                               "\"linux\",\"os_version\":\"1\",\"model\":\"m\","
                               "\"enrolled\":\"2024-01-01T00:00:00Z\"");
        for (i = 0; i < (size_t)n; i++)
            off += (size_t)snprintf(feed + off, 8192 - off, ",\"a%zu\":%zu", i, i);
        snprintf(feed + off, 8192 - off, "}]");
        err[0] = '\0';
        assert_int_equal(parse(feed, NULL, 0, &inv, err, sizeof(err)), n == 64 ? 0 : -1);
        if (n == 64)
            inventory_unref(inv);
        else
            assert_string_equal(err, "inventory: $[0].a64: more than 64 extra fields");
        inv = NULL;
    }
    free(feed);

    /* Attribute string values: 1024 bytes fine, 1025 not. */
    feed = malloc(4096);
    assert_non_null(feed);
    for (size_t n = 1024; n <= 1025; n++) {
        char *v = malloc(n + 1);
        assert_non_null(v);
        memset(v, 'v', n);
        v[n] = '\0';
        snprintf(feed, 4096, "[" REC("d1", ",\"note\":\"%s\"") "]", v);
        err[0] = '\0';
        assert_int_equal(parse(feed, NULL, 0, &inv, err, sizeof(err)), n == 1024 ? 0 : -1);
        if (n == 1024)
            inventory_unref(inv);
        else
            assert_string_equal(err, "inventory: $[0].note: expected 0 to 1024 bytes, got 1025");
        inv = NULL;
        free(v);
    }
    free(feed);

    /* NDJSON line: 65536 bytes fine, 65537 not (a record padded with spaces). */
    for (size_t n = 65536; n <= 65537; n++) {
        const char *rec = REC("d1", "");
        size_t rl = strlen(rec);
        feed = malloc(n + 1);
        assert_non_null(feed);
        memcpy(feed, rec, rl - 1);
        memset(feed + rl - 1, ' ', n - rl);
        feed[n - 1] = '}';
        feed[n] = '\0';
        err[0] = '\0';
        assert_int_equal(inventory_parse(feed, n, NULL, 0, T0, &inv, err, sizeof(err)),
                         n == 65536 ? 0 : -1);
        if (n == 65536)
            inventory_unref(inv);
        else
            assert_string_equal(err,
                                "inventory: line 1: $: line is 65537 bytes, the limit is 65536");
        inv = NULL;
        free(feed);
    }

    /* The whole feed: refused before it is read. */
    assert_int_equal(
        inventory_parse("[]", (size_t)INVENTORY_MAX_BYTES + 1, NULL, 0, T0, &inv, err, sizeof(err)),
        -1);
    assert_string_equal(err, "inventory: $: the feed is 536870913 bytes, the limit is 536870912");
}

static void test_empty_feed(void **state)
{
    static const char *const empties[] = {"[]", " [ ]\n", "", "\n\n  \n"};
    struct inventory *prev = NULL, *empty_prev = NULL, *inv = NULL;
    char err[512];
    size_t i;

    (void)state;
    assert_int_equal(parse("[" REC("d1", "") "]", NULL, 0, &prev, err, sizeof(err)), 0);
    assert_int_equal(parse("[]", NULL, 0, &empty_prev, err, sizeof(err)), 0);
    for (i = 0; i < sizeof(empties) / sizeof(empties[0]); i++) {
        /* First load: an empty inventory is what it is. */
        assert_int_equal(parse(empties[i], NULL, 0, &inv, err, sizeof(err)), 0);
        assert_int_equal(inventory_count(inv), 0);
        assert_null(inventory_lookup(inv, "d1", 2));
        inventory_unref(inv);
        /* Previous snapshot empty too: fine. */
        assert_int_equal(parse(empties[i], empty_prev, 0, &inv, err, sizeof(err)), 0);
        inventory_unref(inv);
        /* Had devices: refused, unless allowed. */
        inv = NULL;
        assert_int_equal(parse(empties[i], prev, 0, &inv, err, sizeof(err)), -1);
        assert_null(inv);
        assert_string_equal(err, "inventory: $: the feed has no devices but the current inventory "
                                 "has 1; refusing it (set allow_empty to accept an empty "
                                 "inventory)");
        assert_int_equal(parse(empties[i], prev, INVENTORY_ALLOW_EMPTY, &inv, err, sizeof(err)), 0);
        assert_int_equal(inventory_count(inv), 0);
        inventory_unref(inv);
    }
    inventory_unref(prev);
    inventory_unref(empty_prev);
}

static void test_version_hash_refs(void **state)
{
    struct inventory *a = NULL, *b = NULL, *c = NULL;
    unsigned char ha[32], hb[32], hc[32];
    char err[256];

    (void)state;
    assert_int_equal(parse("[" REC("d1", "") "]", NULL, 0, &a, err, sizeof(err)), 0);
    assert_int_equal(parse("[" REC("d1", "") "]", a, 0, &b, err, sizeof(err)), 0);
    assert_int_equal(parse("[" REC("d2", "") "]", b, 0, &c, err, sizeof(err)), 0);
    assert_int_equal(inventory_version(a), 1);
    assert_int_equal(inventory_version(b), 2);
    assert_int_equal(inventory_version(c), 3);
    inventory_hash(a, ha);
    inventory_hash(b, hb);
    inventory_hash(c, hc);
    assert_memory_equal(ha, hb, 32);
    assert_memory_not_equal(ha, hc, 32);
    /* A reference keeps the snapshot (and its records) alive. */
    assert_ptr_equal(inventory_ref(a), a);
    inventory_unref(a);
    assert_string_equal(inventory_record_id(inventory_lookup(a, "d1", 2)), "d1");
    inventory_unref(a);
    inventory_unref(b);
    inventory_unref(c);
    inventory_unref(NULL);
    assert_null(inventory_ref(NULL));
}

static void test_status_names(void **state)
{
    enum inventory_status s;

    (void)state;
    assert_int_equal(inventory_status_parse("active", &s), 0);
    assert_int_equal(s, INVENTORY_STATUS_ACTIVE);
    assert_int_equal(inventory_status_parse("stolen", &s), 0);
    assert_int_equal(s, INVENTORY_STATUS_STOLEN);
    assert_int_equal(inventory_status_parse("retired", &s), 0);
    assert_int_equal(inventory_status_parse("none", &s), -1);
    assert_int_equal(inventory_status_parse("LOST", &s), -1);
    assert_string_equal(inventory_status_name(INVENTORY_STATUS_LOST), "lost");
    assert_string_equal(inventory_status_name(INVENTORY_STATUS_NONE), "none");
}

/* Many records: every one is found, misses are not. */
static void test_many_lookups(void **state)
{
    enum { N = 20000 };
    size_t cap = (size_t)N * 220, off = 0, i;
    char *feed = malloc(cap), id[32], err[256];
    struct inventory *inv = NULL;

    (void)state;
    assert_non_null(feed);
    for (i = 0; i < N; i++)
        off += (size_t)snprintf(feed + off, cap - off, REC("dev-%zu", "") "\n", i);
    assert_int_equal(inventory_parse(feed, off, NULL, 0, T0, &inv, err, sizeof(err)), 0);
    assert_int_equal(inventory_count(inv), N);
    for (i = 0; i < N + 100; i++) {
        int n = snprintf(id, sizeof(id), "dev-%zu", i);
        const struct inventory_record *r = inventory_lookup(inv, id, (size_t)n);
        if (i < N) {
            assert_non_null(r);
            assert_string_equal(inventory_record_id(r), id);
        } else {
            assert_null(r);
        }
    }
    inventory_unref(inv);
    free(feed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_array_good),   cmocka_unit_test(test_escapes_and_utf8),
        cmocka_unit_test(test_ndjson_good),  cmocka_unit_test(test_bad_feeds),
        cmocka_unit_test(test_field_limits), cmocka_unit_test(test_record_limits),
        cmocka_unit_test(test_empty_feed),   cmocka_unit_test(test_version_hash_refs),
        cmocka_unit_test(test_status_names), cmocka_unit_test(test_many_lookups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
