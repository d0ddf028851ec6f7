/*
 * directory_test.c - the group directory: nesting flattened, cycles named,
 * lookups by subject and by email, strict validation with JSON paths.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "directory.h"

static struct directory *parse(const char *text, char *err, size_t errlen)
{
    return directory_parse(text, strlen(text), "dir.json", err, errlen);
}

/* names of a user's groups, comma-separated, in id (= name) order */
static void names(const struct directory *d, const char *sub, const char *email, char *out,
                  size_t len)
{
    const uint32_t *ids;
    size_t n, i, o = 0;

    out[0] = '\0';
    if (directory_user_groups(d, sub, email, &ids, &n) == -1) {
        snprintf(out, len, "(none)");
        return;
    }
    for (i = 0; i < n; i++)
        o += (size_t)snprintf(out + o, len - o, "%s%s", i > 0 ? "," : "",
                              directory_group_name(d, ids[i]));
}

static void test_nesting(void **state)
{
    const char *text =
        "{\"version\":\"2026-05-01\",\"groups\":{"
        "\"staff\":{},\"eng\":{\"member_of\":[\"staff\"]},"
        "\"sre\":{\"member_of\":[\"eng\",\"oncall\"],\"description\":\"site reliability\"},"
        "\"oncall\":{},\"finance\":{\"member_of\":[\"staff\"]},\"board\":{}},"
        "\"users\":{"
        "\"Alice@Corp.Example\":{\"groups\":[\"sre\"],\"subject\":\"00u1\",\"name\":\"Alice\"},"
        "\"bob@corp.example\":{\"groups\":[\"finance\",\"staff\"]},"
        "\"carol@corp.example\":{}}}";
    char err[512], buf[256];
    struct directory *d = parse(text, err, sizeof(err));
    uint32_t id;

    (void)state;
    if (d == NULL)
        fail_msg("%s", err);
    assert_int_equal(directory_user_count(d), 3);
    assert_int_equal(directory_group_count(d), 6);
    assert_string_equal(directory_version(d), "2026-05-01");
    names(d, NULL, "alice@corp.example", buf, sizeof(buf));
    assert_string_equal(buf, "eng,oncall,sre,staff");
    names(d, "00u1", NULL, buf, sizeof(buf));
    assert_string_equal(buf, "eng,oncall,sre,staff");
    names(d, "00u1", "bob@corp.example", buf, sizeof(buf)); /* subject first */
    assert_string_equal(buf, "eng,oncall,sre,staff");
    names(d, "unknown-sub", "BOB@corp.example", buf, sizeof(buf)); /* then email */
    assert_string_equal(buf, "finance,staff");
    names(d, NULL, "carol@corp.example", buf, sizeof(buf));
    assert_string_equal(buf, "");
    names(d, NULL, "dave@corp.example", buf, sizeof(buf));
    assert_string_equal(buf, "(none)");
    names(d, NULL, NULL, buf, sizeof(buf));
    assert_string_equal(buf, "(none)");
    assert_int_equal(directory_group_find(d, "sre", &id), 0);
    assert_string_equal(directory_group_name(d, id), "sre");
    assert_int_equal(directory_group_find(d, "SRE", &id), -1);
    assert_null(directory_group_name(d, 6));
    {
        const uint32_t ids[] = {1, 4, 9};
        assert_int_equal(directory_ids_contain(ids, 3, 4), 1);
        assert_int_equal(directory_ids_contain(ids, 3, 5), 0);
        assert_int_equal(directory_ids_contain(ids, 0, 1), 0);
    }
    assert_ptr_equal(directory_ref(d), d);
    directory_unref(d);
    directory_unref(d);
    directory_unref(NULL);
}

static void test_serial(void **state)
{
    char err[256];
    struct directory *a = parse("{\"users\":{}}", err, sizeof(err));
    struct directory *b = parse("{\"users\":{}}", err, sizeof(err));

    (void)state;
    assert_non_null(a);
    assert_non_null(b);
    assert_true(directory_serial(a) != directory_serial(b));
    assert_true(directory_serial(a) != 0);
    assert_string_equal(directory_version(a), "");
    directory_unref(a);
    directory_unref(b);
}

struct bad_case {
    const char *text;
    const char *error;
};

static const struct bad_case bad_cases[] = {
    {"{", "dir.json:1:1: JSON syntax error: string or '}' expected near end of file"},
    {"{\"groups\":{}}", "dir.json: $.users: required key is missing"},
    {"{\"users\":{},\"extra\":1}",
     "dir.json: $.extra: unknown key (expected one of: version, groups, users)"},
    {"{\"users\":[]}", "dir.json: $.users: expected an object keyed by email, got an array"},
    {"{\"users\":{\"alice\":{}}}",
     "dir.json: $.users[\"alice\"]: expected an email address as the key"},
    {"{\"users\":{\"a@x.example\":{\"groups\":[\"staff\"]}}}",
     "dir.json: $.users[\"a@x.example\"].groups[0]: unknown group \"staff\" (declare it under "
     "$.groups)"},
    {"{\"groups\":{\"staff\":{}},\"users\":{\"a@x.example\":{\"groups\":[\"staff\",\"staff\"]}}}",
     "dir.json: $.users[\"a@x.example\"].groups[1]: group \"staff\" is listed twice"},
    {"{\"groups\":{\"staff\":{}},\"users\":{\"a@x.example\":{\"groups\":\"staff\"}}}",
     "dir.json: $.users[\"a@x.example\"].groups: expected an array of group names, got a string"},
    {"{\"users\":{\"a@x.example\":{\"role\":\"x\"}}}",
     "dir.json: $.users[\"a@x.example\"].role: unknown key (expected one of: groups, subject, "
     "name)"},
    {"{\"users\":{\"a@x.example\":{},\"A@X.example\":{}}}",
     "dir.json: $.users[\"A@X.example\"]: duplicate user (emails are compared "
     "case-insensitively)"},
    {"{\"users\":{\"a@x.example\":{\"subject\":\"s1\"},\"b@x.example\":{\"subject\":\"s1\"}}}",
     "dir.json: $.users[\"b@x.example\"].subject: subject \"s1\" is used by another user"},
    {"{\"users\":{\"a@x.example\":{\"subject\":\"\"}}}",
     "dir.json: $.users[\"a@x.example\"].subject: expected a subject: 1..255 printable bytes"},
    {"{\"groups\":{\"a,b\":{}},\"users\":{}}",
     "dir.json: $.groups[\"a,b\"]: invalid group name (1..256 printable bytes, no ',', no "
     "leading or trailing space)"},
    {"{\"groups\":{\"a\":{\"member_of\":[\"b\"]},\"b\":{\"member_of\":[\"c\"]},"
     "\"c\":{\"member_of\":[\"a\"]}},\"users\":{}}",
     "dir.json: $.groups[\"c\"].member_of: group nesting has a cycle: a -> b -> c -> a"},
    {"{\"groups\":{\"a\":{\"member_of\":[\"a\"]}},\"users\":{}}",
     "dir.json: $.groups[\"a\"].member_of: group nesting has a cycle: a -> a"},
    {"{\"groups\":{\"x\":{},\"a\":{\"member_of\":[\"x\",\"b\"]},\"b\":{\"member_of\":[\"a\"]}},"
     "\"users\":{}}",
     "dir.json: $.groups[\"b\"].member_of: group nesting has a cycle: a -> b -> a"},
    {"{\"groups\":{\"a\":{\"member_of\":[\"zz\"]}},\"users\":{}}",
     "dir.json: $.groups[\"a\"].member_of[0]: unknown group \"zz\" (declare it under $.groups)"},
    {"{\"groups\":{\"a\":{\"members\":[]}},\"users\":{}}",
     "dir.json: $.groups[\"a\"].members: unknown key (expected one of: member_of, description)"},
    {"{\"groups\":[],\"users\":{}}", "dir.json: $.groups: expected an object, got an array"},
    {"{\"version\":1,\"users\":{}}", "dir.json: $.version: expected a string of at most 128 bytes"},
    {"{\"users\":{\"a\\\"b@x.example\":{\"x\":1}}}",
     "dir.json: $.users[\"a\\\"b@x.example\"].x: unknown key (expected one of: groups, subject, "
     "name)"},
};

static void test_bad(void **state)
{
    char err[512];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        struct directory *d = parse(bad_cases[i].text, err, sizeof(err));
        if (d != NULL)
            fail_msg("case %zu parsed", i);
        if (strcmp(err, bad_cases[i].error) != 0)
            fail_msg("case %zu:\n got: %s\nwant: %s", i, err, bad_cases[i].error);
    }
}

/* A long nesting chain and many users: flattening stays correct. */
static void test_chain(void **state)
{
    size_t cap = 1 << 20, o = 0, i;
    char *text = malloc(cap), err[256], buf[64];
    struct directory *d;
    const uint32_t *ids;
    size_t n;

    (void)state;
    o += (size_t)snprintf(text + o, cap - o, "{\"groups\":{\"g0\":{}");
    for (i = 1; i < 2000; i++)
        o += (size_t)snprintf(text + o, cap - o, ",\"g%zu\":{\"member_of\":[\"g%zu\"]}", i, i - 1);
    o += (size_t)snprintf(text + o, cap - o, "},\"users\":{");
    for (i = 0; i < 1000; i++)
        o += (size_t)snprintf(text + o, cap - o, "%s\"u%zu@x.example\":{\"groups\":[\"g%zu\"]}",
                              i > 0 ? "," : "", i, i * 2);
    snprintf(text + o, cap - o, "}}");
    d = directory_parse(text, strlen(text), "chain", err, sizeof(err));
    if (d == NULL)
        fail_msg("%s", err);
    assert_int_equal(directory_user_groups(d, NULL, "u999@x.example", &ids, &n), 0);
    assert_int_equal(n, 1999); /* g1998 and everything below it */
    assert_int_equal(directory_user_groups(d, NULL, "u0@x.example", &ids, &n), 0);
    assert_int_equal(n, 1);
    snprintf(buf, sizeof(buf), "%s", directory_group_name(d, ids[0]));
    assert_string_equal(buf, "g0");
    directory_unref(d);
    free(text);
}

/* fuzz_directory found: nobody in any group, lookup by subject (NULL + 0). */
static void test_no_memberships(void **state)
{
    const char *text = "{\"groups\": {\"staff\": {}, \"eng\": {\"member_of\": [\"staff\"]}}, "
                       "\"users\": {\"alike@corp.example\": {\"subject\": \"u1\"}}}";
    char err[256];
    struct directory *d = parse(text, err, sizeof(err));
    const uint32_t *ids = NULL;
    size_t n = 1;

    (void)state;
    assert_non_null(d);
    assert_int_equal(directory_user_groups(d, "u1", "alice@corp.example", &ids, &n), 0);
    assert_non_null(ids);
    assert_int_equal(n, 0);
    directory_unref(d);
}

/* The listing view: own group lists and member_of, as written. */
static void test_listing(void **state)
{
    const char *text = "{\"groups\":{\"staff\":{},\"eng\":{\"member_of\":[\"staff\"]},"
                       "\"sre\":{\"member_of\":[\"oncall\",\"eng\"]},\"oncall\":{}},"
                       "\"users\":{\"Alice@Corp.Example\":{\"groups\":[\"sre\"],"
                       "\"subject\":\"00u1\"},\"bob@corp.example\":{\"groups\":[\"staff\","
                       "\"eng\"]},\"carol@corp.example\":{}}}";
    char err[512], buf[256];
    struct directory *d = parse(text, err, sizeof(err));
    const char *email, *subject;
    const uint32_t *ids;
    size_t n, i, k, o;
    uint32_t sre, eng;

    (void)state;
    if (d == NULL)
        fail_msg("%s", err);
    assert_int_equal(directory_group_find(d, "sre", &sre), 0);
    assert_int_equal(directory_group_find(d, "eng", &eng), 0);
    assert_int_equal(directory_group_parents(d, sre, &ids, &n), 0);
    assert_int_equal(n, 2); /* sorted ids: eng < oncall */
    assert_string_equal(directory_group_name(d, ids[0]), "eng");
    assert_string_equal(directory_group_name(d, ids[1]), "oncall");
    assert_int_equal(directory_group_parents(d, eng, &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(directory_group_parents(d, 99, &ids, &n), -1);
    /* users in file order, their own groups only (not flattened) */
    for (i = 0, o = 0; directory_user_at(d, i, &email, &subject, &ids, &n) == 0; i++) {
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s(%s):", i ? " " : "", email,
                              subject != NULL ? subject : "-");
        for (k = 0; k < n; k++)
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s", k ? "," : "",
                                  directory_group_name(d, ids[k]));
    }
    assert_int_equal(i, 3);
    assert_string_equal(buf, "alice@corp.example(00u1):sre bob@corp.example(-):eng,staff "
                             "carol@corp.example(-):");
    directory_unref(d);
}

static void test_load(void **state)
{
    char err[256];

    (void)state;
    assert_null(directory_load("/nonexistent/dir.json", err, sizeof(err)));
    assert_string_equal(err, "/nonexistent/dir.json: cannot open: No such file or directory");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_serial),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_chain),
        cmocka_unit_test(test_no_memberships),
        cmocka_unit_test(test_listing),
        cmocka_unit_test(test_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
