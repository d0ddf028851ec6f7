/*
 * posture_test.c - posture reports: every field type-checked, every error
 * names its JSON path, both sides of each limit, persistence round trip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "posture.h"

#define NOW 1714564800 /* 2024-05-01T12:00:00Z */

/* A full valid report; X replaces nothing, it is appended before the brace. */
#define BODY                                                                                       \
    "\"collected_at\":\"2024-05-01T11:59:00Z\",\"agent_version\":\"1.2.3\","                       \
    "\"os\":{\"name\":\"debian\",\"version\":\"12.4\",\"kernel\":\"6.1.0-18-amd64\"},"             \
    "\"disk_encryption\":true,\"firewall\":false,\"screen_lock\":\"unknown\","                     \
    "\"auto_updates\":true,\"days_since_patch\":3"
#define REPORT "{" BODY "}"

static int parse(const char *text, struct posture *p, char *err, size_t errlen)
{
    return posture_parse(text, strlen(text), NOW, p, err, errlen);
}

static void test_good_full(void **state)
{
    const char *text = "{\"device_id\":\"dev-1\"," BODY ",\"uptime_seconds\":3600}";
    struct posture p;
    char err[256] = "";

    (void)state;
    assert_int_equal(parse(text, &p, err, sizeof(err)), 0);
    assert_int_equal(p.has_device_id, 1);
    assert_string_equal(p.device_id, "dev-1");
    assert_int_equal(p.collected_at, NOW - 60);
    assert_int_equal(p.received_at, NOW);
    assert_string_equal(p.agent_version, "1.2.3");
    assert_string_equal(p.os_name, "debian");
    assert_string_equal(p.os_version, "12.4");
    assert_string_equal(p.kernel, "6.1.0-18-amd64");
    assert_int_equal(p.disk_encryption, POSTURE_YES);
    assert_int_equal(p.firewall, POSTURE_NO);
    assert_int_equal(p.screen_lock, POSTURE_UNKNOWN);
    assert_int_equal(p.auto_updates, POSTURE_YES);
    assert_int_equal(p.days_since_patch, 3);
    assert_int_equal(p.uptime_seconds, 3600);
}

static void test_good_minimal(void **state)
{
    const char *text = "{\"collected_at\":\"2024-05-01T13:59:00.123+02:00\",\"agent_version\":"
                       "\"2.0.0-rc1\",\"os\":{\"name\":\"macOS\",\"version\":\"14.4.1\"},"
                       "\"disk_encryption\":\"unknown\",\"firewall\":\"unknown\",\"screen_lock\":"
                       "true,\"auto_updates\":false,\"days_since_patch\":\"unknown\"}";
    struct posture p;
    char err[256] = "";

    (void)state;
    assert_int_equal(parse(text, &p, err, sizeof(err)), 0);
    assert_int_equal(p.has_device_id, 0);
    assert_string_equal(p.device_id, "");
    assert_int_equal(p.collected_at, NOW - 60);
    assert_string_equal(p.os_name, "macos"); /* lower-cased */
    assert_string_equal(p.kernel, "");
    assert_int_equal(p.disk_encryption, POSTURE_UNKNOWN);
    assert_int_equal(p.auto_updates, POSTURE_NO);
    assert_int_equal(p.days_since_patch, -1);
    assert_int_equal(p.uptime_seconds, -1);
}

struct bad_case {
    const char *text;
    const char *expect; /* the whole message */
};

#define WITH(X) "{" BODY "," X "}"

static const struct bad_case bad_cases[] = {
    {"", "posture: $: JSON syntax error at line 1 column 0: '[' or '{' expected near end of file"},
    {"[]", "posture: $: expected an object, got an array"},
    {"3", "posture: $: JSON syntax error at line 1 column 1: '[' or '{' expected near '3'"},
    {"{" BODY "",
     "posture: $: JSON syntax error at line 1 column 233: '}' expected near end of file"},
    {WITH("\"firewall\":true"), "posture: $: JSON syntax error at line 1 column 244: duplicate "
                                "object key near '\"firewall\"'"},
    {WITH("\"frobnicate\":1"), "posture: $.frobnicate: unknown key"},
    {WITH("\"received_at\":\"2024-05-01T11:59:00Z\""), "posture: $.received_at: unknown key"},
    {WITH("\"device_id\":\"a b\""),
     "posture: $.device_id: expected 1-128 characters of [A-Za-z0-9._:-], got \"a b\""},
    {WITH("\"device_id\":7"), "posture: $.device_id: expected a string, got 7"},
    {WITH("\"uptime_seconds\":-1"),
     "posture: $.uptime_seconds: expected an integer 0..3153600000, got -1"},
    {WITH("\"uptime_seconds\":\"1h\""),
     "posture: $.uptime_seconds: expected an integer 0..3153600000, got \"1h\""},
    {WITH("\"uptime_seconds\":1.5"),
     "posture: $.uptime_seconds: expected an integer 0..3153600000, got 1.5"},
    /* Each required key, missing. */
    {"{\"agent_version\":\"1.2.3\"}", "posture: $.collected_at: required key is missing"},
    {"{\"collected_at\":\"2024-05-01T11:59:00Z\"}",
     "posture: $.agent_version: required key is missing"},
    {"{\"collected_at\":\"2024-05-01T11:59:00Z\",\"agent_version\":\"1\"}",
     "posture: $.os: required key is missing"},
    {"{\"collected_at\":\"2024-05-01T11:59:00Z\",\"agent_version\":\"1\",\"os\":{\"name\":\"x\","
     "\"version\":\"1\"}}",
     "posture: $.disk_encryption: required key is missing"},
    {"{\"collected_at\":\"2024-05-01T11:59:00Z\",\"agent_version\":\"1\",\"os\":{\"name\":\"x\","
     "\"version\":\"1\"},\"disk_encryption\":true,\"screen_lock\":true,\"auto_updates\":true,"
     "\"days_since_patch\":1}",
     "posture: $.firewall: required key is missing"},
    {"{\"collected_at\":\"2024-05-01T11:59:00Z\",\"agent_version\":\"1\",\"os\":{\"name\":\"x\","
     "\"version\":\"1\"},\"disk_encryption\":true,\"firewall\":true,\"auto_updates\":true,"
     "\"days_since_patch\":1}",
     "posture: $.screen_lock: required key is missing"},
    {"{\"collected_at\":\"2024-05-01T11:59:00Z\",\"agent_version\":\"1\",\"os\":{\"name\":\"x\","
     "\"version\":\"1\"},\"disk_encryption\":true,\"firewall\":true,\"screen_lock\":true,"
     "\"days_since_patch\":1}",
     "posture: $.auto_updates: required key is missing"},
    {"{\"collected_at\":\"2024-05-01T11:59:00Z\",\"agent_version\":\"1\",\"os\":{\"name\":\"x\","
     "\"version\":\"1\"},\"disk_encryption\":true,\"firewall\":true,\"screen_lock\":true,"
     "\"auto_updates\":true}",
     "posture: $.days_since_patch: required key is missing"},
};

/* One field replaced: REPORT with FIELD's value swapped for VALUE. */
struct field_case {
    const char *field; /* as it appears: "\"firewall\":false" */
    const char *with;  /* its replacement */
    const char *expect;
};

static const struct field_case field_cases[] = {
    {"\"collected_at\":\"2024-05-01T11:59:00Z\"", "\"collected_at\":1714564740",
     "posture: $.collected_at: expected a string, got 1714564740"},
    {"\"collected_at\":\"2024-05-01T11:59:00Z\"", "\"collected_at\":\"2024-05-01 11:59:00Z\"",
     "posture: $.collected_at: expected an RFC 3339 time like \"2024-05-01T12:00:00Z\", got "
     "\"2024-05-01 11:59:00Z\""},
    {"\"collected_at\":\"2024-05-01T11:59:00Z\"", "\"collected_at\":\"2024-05-01T11:59:00\"",
     "posture: $.collected_at: expected an RFC 3339 time like \"2024-05-01T12:00:00Z\", got "
     "\"2024-05-01T11:59:00\""},
    /* The clock: 5 minutes ahead at most, 30 days behind at most. */
    {"\"collected_at\":\"2024-05-01T11:59:00Z\"", "\"collected_at\":\"2024-05-01T12:05:01Z\"",
     "posture: $.collected_at: is 301 s in the future (the limit is 300 s of clock skew)"},
    {"\"collected_at\":\"2024-05-01T11:59:00Z\"", "\"collected_at\":\"2024-04-01T11:59:59Z\"",
     "posture: $.collected_at: is 30 days old (the limit is 30 days)"},
    {"\"agent_version\":\"1.2.3\"", "\"agent_version\":\"v1.2.3\"",
     "posture: $.agent_version: expected a version like \"1.2.3\", got \"v1.2.3\""},
    {"\"agent_version\":\"1.2.3\"", "\"agent_version\":\"1..2\"",
     "posture: $.agent_version: expected a version like \"1.2.3\", got \"1..2\""},
    {"\"agent_version\":\"1.2.3\"", "\"agent_version\":\"1.2.3.4.5\"",
     "posture: $.agent_version: expected a version like \"1.2.3\", got \"1.2.3.4.5\""},
    {"\"agent_version\":\"1.2.3\"", "\"agent_version\":\"1.2-\"",
     "posture: $.agent_version: expected a version like \"1.2.3\", got \"1.2-\""},
    {"\"agent_version\":\"1.2.3\"", "\"agent_version\":123",
     "posture: $.agent_version: expected a string, got 123"},
    {"\"os\":{\"name\":\"debian\",\"version\":\"12.4\",\"kernel\":\"6.1.0-18-amd64\"}",
     "\"os\":\"debian\"", "posture: $.os: expected an object, got \"debian\""},
    {"\"name\":\"debian\",", "", "posture: $.os.name: required key is missing"},
    {"\"version\":\"12.4\",", "", "posture: $.os.version: required key is missing"},
    {"\"name\":\"debian\"", "\"name\":\"Red Hat\"",
     "posture: $.os.name: expected 1-31 characters of [A-Za-z0-9._-], got \"Red Hat\""},
    {"\"name\":\"debian\"", "\"name\":true", "posture: $.os.name: expected a string, got true"},
    {"\"version\":\"12.4\"", "\"version\":\"\"",
     "posture: $.os.version: expected 1-63 printable characters without spaces, got \"\""},
    {"\"version\":\"12.4\"", "\"version\":12.4",
     "posture: $.os.version: expected a string, got 12.4"},
    {"\"kernel\":\"6.1.0-18-amd64\"", "\"kernel\":\"6.1\\n\"",
     "posture: $.os.kernel: expected at most 127 printable characters, got \"6.1\\n\""},
    {"\"kernel\":\"6.1.0-18-amd64\"", "\"kernel\":\"6.1\",\"arch\":\"x86_64\"",
     "posture: $.os.arch: unknown key"},
    {"\"disk_encryption\":true", "\"disk_encryption\":3",
     "posture: $.disk_encryption: expected true, false or \"unknown\", got 3"},
    {"\"disk_encryption\":true", "\"disk_encryption\":\"yes\"",
     "posture: $.disk_encryption: expected true, false or \"unknown\", got \"yes\""},
    {"\"firewall\":false", "\"firewall\":null",
     "posture: $.firewall: expected true, false or \"unknown\", got null"},
    {"\"firewall\":false", "\"firewall\":0",
     "posture: $.firewall: expected true, false or \"unknown\", got 0"},
    {"\"screen_lock\":\"unknown\"", "\"screen_lock\":\"Unknown\"",
     "posture: $.screen_lock: expected true, false or \"unknown\", got \"Unknown\""},
    {"\"screen_lock\":\"unknown\"", "\"screen_lock\":{}",
     "posture: $.screen_lock: expected true, false or \"unknown\", got an object"},
    {"\"auto_updates\":true", "\"auto_updates\":[true]",
     "posture: $.auto_updates: expected true, false or \"unknown\", got an array"},
    {"\"days_since_patch\":3", "\"days_since_patch\":-1",
     "posture: $.days_since_patch: expected an integer 0..36500 or \"unknown\", got -1"},
    {"\"days_since_patch\":3", "\"days_since_patch\":36501",
     "posture: $.days_since_patch: expected an integer 0..36500 or \"unknown\", got 36501"},
    {"\"days_since_patch\":3", "\"days_since_patch\":\"never\"",
     "posture: $.days_since_patch: expected an integer 0..36500 or \"unknown\", got \"never\""},
    {"\"days_since_patch\":3", "\"days_since_patch\":2.5",
     "posture: $.days_since_patch: expected an integer 0..36500 or \"unknown\", got 2.5"},
};

static void replace(char *out, size_t len, const char *text, const char *from, const char *to)
{
    const char *p = strstr(text, from);

    assert_non_null(p);
    snprintf(out, len, "%.*s%s%s", (int)(p - text), text, to, p + strlen(from));
}

static void test_bad_reports(void **state)
{
    char text[1024], err[512];
    struct posture p;
    size_t i;
    int bad = 0;

    (void)state;
    for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        err[0] = '\0';
        if (parse(bad_cases[i].text, &p, err, sizeof(err)) != -1 ||
            strcmp(err, bad_cases[i].expect) != 0) {
            print_error("case %zu:\n  got:    %s\n  expect: %s\n", i, err, bad_cases[i].expect);
            bad++;
        }
    }
    for (i = 0; i < sizeof(field_cases) / sizeof(field_cases[0]); i++) {
        replace(text, sizeof(text), REPORT, field_cases[i].field, field_cases[i].with);
        err[0] = '\0';
        if (parse(text, &p, err, sizeof(err)) != -1 || strcmp(err, field_cases[i].expect) != 0) {
            print_error("field case %zu:\n  got:    %s\n  expect: %s\n", i, err,
                        field_cases[i].expect);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

/* Both sides of each limit. */
static void test_limits(void **state)
{
    char text[POSTURE_MAX_BYTES + 2], err[256], id[DEVICE_ID_MAX + 2], buf[512];
    struct posture p;
    size_t n;

    (void)state;
    /* Size: exactly 16 KiB is fine (padded with spaces), one more byte is not. */
    for (n = POSTURE_MAX_BYTES; n <= POSTURE_MAX_BYTES + 1; n++) {
        memset(text, ' ', n);
        memcpy(text, REPORT, strlen(REPORT));
        err[0] = '\0';
        assert_int_equal(posture_parse(text, n, NOW, &p, err, sizeof(err)),
                         n == POSTURE_MAX_BYTES ? 0 : -1);
    }
    assert_string_equal(err, "posture: $: report is 16385 bytes, the limit is 16384");

    /* Clock: exactly 300 s ahead and exactly 30 days old are fine. */
    replace(text, sizeof(text), REPORT, "2024-05-01T11:59:00Z", "2024-05-01T12:05:00Z");
    assert_int_equal(parse(text, &p, err, sizeof(err)), 0);
    replace(text, sizeof(text), REPORT, "2024-05-01T11:59:00Z", "2024-04-01T12:00:00Z");
    assert_int_equal(parse(text, &p, err, sizeof(err)), 0);
    replace(text, sizeof(text), REPORT, "2024-05-01T11:59:00Z", "2024-04-01T11:59:59Z");
    assert_int_equal(parse(text, &p, err, sizeof(err)), -1);

    /* device_id: 128 characters fine, 129 not. */
    for (n = DEVICE_ID_MAX; n <= DEVICE_ID_MAX + 1; n++) {
        memset(id, 'x', n);
        id[n] = '\0';
        snprintf(buf, sizeof(buf), "\"device_id\":\"%s\",\"collected_at\"", id);
        replace(text, sizeof(text), REPORT, "\"collected_at\"", buf);
        assert_int_equal(parse(text, &p, err, sizeof(err)), n == DEVICE_ID_MAX ? 0 : -1);
    }
    /* kernel: 127 fine, 128 not; os.version: 63 fine, 64 not; agent: 31 fine, 32 not. */
    for (n = 127; n <= 128; n++) {
        memset(id, 'k', n);
        id[n] = '\0';
        snprintf(buf, sizeof(buf), "\"kernel\":\"%s\"", id);
        replace(text, sizeof(text), REPORT, "\"kernel\":\"6.1.0-18-amd64\"", buf);
        assert_int_equal(parse(text, &p, err, sizeof(err)), n == 127 ? 0 : -1);
    }
    for (n = 63; n <= 64; n++) {
        memset(id, '9', n);
        id[n] = '\0';
        snprintf(buf, sizeof(buf), "\"version\":\"%s\"", id);
        replace(text, sizeof(text), REPORT, "\"version\":\"12.4\"", buf);
        assert_int_equal(parse(text, &p, err, sizeof(err)), n == 63 ? 0 : -1);
    }
    for (n = 31; n <= 32; n++) {
        memset(id, '1', n);
        id[n] = '\0';
        snprintf(buf, sizeof(buf), "\"agent_version\":\"%s\"", id);
        replace(text, sizeof(text), REPORT, "\"agent_version\":\"1.2.3\"", buf);
        assert_int_equal(parse(text, &p, err, sizeof(err)), -1); /* > 9 digits per component */
    }
    replace(text, sizeof(text), REPORT, "\"agent_version\":\"1.2.3\"",
            "\"agent_version\":\"123456789.123456789.1234567890\"");
    assert_int_equal(parse(text, &p, err, sizeof(err)), -1);
    replace(text, sizeof(text), REPORT, "\"agent_version\":\"1.2.3\"",
            "\"agent_version\":\"123456789.123456789.12345678-rc\""); /* 31 */
    assert_int_equal(parse(text, &p, err, sizeof(err)), 0);
    replace(text, sizeof(text), REPORT, "\"agent_version\":\"1.2.3\"",
            "\"agent_version\":\"123456789.123456789.12345678-rc1\""); /* 32 */
    assert_int_equal(parse(text, &p, err, sizeof(err)), -1);
    /* days_since_patch: 36500 fine; uptime 3153600000 fine, one more not. */
    replace(text, sizeof(text), REPORT, "\"days_since_patch\":3", "\"days_since_patch\":36500");
    assert_int_equal(parse(text, &p, err, sizeof(err)), 0);
    assert_int_equal(p.days_since_patch, 36500);
    replace(text, sizeof(text), REPORT, "\"days_since_patch\":3",
            "\"days_since_patch\":0,\"uptime_seconds\":3153600000");
    assert_int_equal(parse(text, &p, err, sizeof(err)), 0);
    replace(text, sizeof(text), REPORT, "\"days_since_patch\":3",
            "\"days_since_patch\":0,\"uptime_seconds\":3153600001");
    assert_int_equal(parse(text, &p, err, sizeof(err)), -1);
}

static void assert_posture_equal(const struct posture *a, const struct posture *b)
{
    assert_int_equal(a->has_device_id, b->has_device_id);
    assert_string_equal(a->device_id, b->device_id);
    assert_int_equal(a->collected_at, b->collected_at);
    assert_int_equal(a->received_at, b->received_at);
    assert_string_equal(a->agent_version, b->agent_version);
    assert_string_equal(a->os_name, b->os_name);
    assert_string_equal(a->os_version, b->os_version);
    assert_string_equal(a->kernel, b->kernel);
    assert_int_equal(a->disk_encryption, b->disk_encryption);
    assert_int_equal(a->firewall, b->firewall);
    assert_int_equal(a->screen_lock, b->screen_lock);
    assert_int_equal(a->auto_updates, b->auto_updates);
    assert_int_equal(a->days_since_patch, b->days_since_patch);
    assert_int_equal(a->uptime_seconds, b->uptime_seconds);
}

static void test_persist_round_trip(void **state)
{
    const char *text = "{\"device_id\":\"dev-1\"," BODY ",\"uptime_seconds\":3600}";
    struct posture a, b, c;
    char buf[POSTURE_JSON_MAX], buf2[POSTURE_JSON_MAX], err[256] = "";
    int n;

    (void)state;
    assert_int_equal(parse(text, &a, err, sizeof(err)), 0);
    n = posture_to_json(&a, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(buf));
    assert_null(strchr(buf, '\n'));
    assert_non_null(strstr(buf, "\"received_at\":\"2024-05-01T12:00:00Z\""));
    assert_int_equal(posture_from_json(buf, (size_t)n, &b, err, sizeof(err)), 0);
    assert_posture_equal(&a, &b);
    assert_int_equal(posture_to_json(&b, buf2, sizeof(buf2)), n);
    assert_string_equal(buf, buf2);

    /* Minimal report: optional fields stay absent. */
    assert_int_equal(parse(REPORT, &a, err, sizeof(err)), 0);
    a.kernel[0] = '\0';
    n = posture_to_json(&a, buf, sizeof(buf));
    assert_true(n > 0);
    assert_null(strstr(buf, "device_id"));
    assert_null(strstr(buf, "uptime"));
    assert_null(strstr(buf, "kernel"));
    assert_int_equal(posture_from_json(buf, (size_t)n, &c, err, sizeof(err)), 0);
    assert_posture_equal(&a, &c);

    /* State is not checked against a clock: a year-old report still loads. */
    replace(buf, sizeof(buf), REPORT, "\"collected_at\":\"2024-05-01T11:59:00Z\"",
            "\"collected_at\":\"2023-01-01T00:00:00Z\",\"received_at\":\"2023-01-01T00:00:01Z\"");
    assert_int_equal(posture_from_json(buf, strlen(buf), &c, err, sizeof(err)), 0);
    assert_int_equal(c.received_at, 1672531201);
    assert_int_equal(c.collected_at, 1672531200);

    /* A state line must say when it was received. */
    assert_int_equal(posture_from_json(REPORT, strlen(REPORT), &c, err, sizeof(err)), -1);
    assert_string_equal(err, "posture: $.received_at: required key is missing");

    /* Too small a buffer: -1, never a truncated line. */
    assert_int_equal(posture_to_json(&a, buf, 40), -1);
}

static void test_time(void **state)
{
    static const struct {
        const char *s;
        int ok;
        int64_t t;
    } cases[] = {
        {"1970-01-01T00:00:00Z", 1, 0},
        {"2024-05-01T12:00:00Z", 1, NOW},
        {"2024-05-01t12:00:00z", 1, NOW},
        {"2024-05-01T14:00:00+02:00", 1, NOW},
        {"2024-05-01T11:30:00-00:30", 1, NOW},
        {"2024-05-01T12:00:00.999999999Z", 1, NOW},
        {"2024-02-29T00:00:00Z", 1, 1709164800},
        {"2000-02-29T00:00:00Z", 1, 951782400},
        {"1969-12-31T23:59:59Z", 1, -1},
        {"2016-12-31T23:59:60Z", 1, 1483228800},
        {"2023-02-29T00:00:00Z", 0, 0},
        {"1900-02-29T00:00:00Z", 0, 0},
        {"2024-04-31T00:00:00Z", 0, 0},
        {"2024-13-01T00:00:00Z", 0, 0},
        {"2024-00-01T00:00:00Z", 0, 0},
        {"2024-05-01T24:00:00Z", 0, 0},
        {"2024-05-01T12:60:00Z", 0, 0},
        {"2024-05-01T12:00:61Z", 0, 0},
        {"2024-05-01T12:00:00", 0, 0},
        {"2024-05-01T12:00:00.Z", 0, 0},
        {"2024-05-01T12:00:00.1234567890Z", 0, 0},
        {"2024-05-01T12:00:00+0200", 0, 0},
        {"2024-05-01T12:00:00+24:00", 0, 0},
        {"2024-05-01T12:00:00Zjunk", 0, 0},
        {"2024-5-01T12:00:00Z", 0, 0},
        {"0000-01-01T00:00:00Z", 0, 0},
        {"", 0, 0},
    };
    char out[POSTURE_TIME_MAX];
    int64_t t;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        t = 12345;
        int rc = posture_time_parse(cases[i].s, strlen(cases[i].s), &t);
        if (rc != (cases[i].ok ? 0 : -1) || (cases[i].ok && t != cases[i].t)) {
            print_error("%s: rc %d t %lld\n", cases[i].s, rc, (long long)t);
            fail();
        }
    }
    assert_int_equal(posture_time_format(NOW, out, sizeof(out)), 0);
    assert_string_equal(out, "2024-05-01T12:00:00Z");
    assert_int_equal(posture_time_format(-1, out, sizeof(out)), 0);
    assert_string_equal(out, "1969-12-31T23:59:59Z");
    assert_int_equal(posture_time_format(951782400, out, sizeof(out)), 0);
    assert_string_equal(out, "2000-02-29T00:00:00Z");
    assert_int_equal(posture_time_format(253402300800LL, out, sizeof(out)), -1);
    assert_int_equal(posture_time_format(NOW, out, 10), -1);
    /* format and parse agree over a wide range */
    for (t = -62135596800LL; t < 253402300799LL; t += 86399 * 97 + 13) {
        int64_t back;
        assert_int_equal(posture_time_format(t, out, sizeof(out)), 0);
        assert_int_equal(posture_time_parse(out, strlen(out), &back), 0);
        assert_int_equal(back, t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_full),          cmocka_unit_test(test_good_minimal),
        cmocka_unit_test(test_bad_reports),        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_persist_round_trip), cmocka_unit_test(test_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
