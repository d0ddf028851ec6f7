/*
 * http_path_test.c - http_path_normalize (public API).
 *
 * Every accepted case is also checked to be a fixed point: normalising the
 * output again gives the same output.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http.h"

struct path_case {
    const char *in;
    size_t len; /* 0: strlen(in) */
    unsigned flags;
    const char *out;   /* NULL: rejected */
    const char *error; /* when rejected */
};

#define SLASH HTTP_PATH_ALLOW_ENCODED_SLASH

static const struct path_case path_cases[] = {
    /* unchanged */
    {"/", 0, 0, "/", NULL},
    {"/a", 0, 0, "/a", NULL},
    {"/a/b/c", 0, 0, "/a/b/c", NULL},
    {"/a/b/", 0, 0, "/a/b/", NULL},
    {"/~user/x-y_z.html", 0, 0, "/~user/x-y_z.html", NULL},
    {"/!$&'()*+,=:@", 0, 0, "/!$&'()*+,=:@", NULL},
    /* path parameters: servlet containers strip them before matching */
    {"/admin;x", 0, 0, NULL, "';' in path"},
    {"/..;/admin", 0, 0, NULL, "';' in path"},
    {"/a;", 0, SLASH, NULL, "';' in path"},
    {"/a%3Bb", 0, 0, "/a%3Bb", NULL},
    {"/a\\b", 0, 0, NULL, "backslash in path"},
    {"/...", 0, 0, "/...", NULL},
    {"/a/.../b", 0, 0, "/a/.../b", NULL},
    {"/.a/..b/a.", 0, 0, "/.a/..b/a.", NULL},
    /* merge slashes */
    {"//", 0, 0, "/", NULL},
    {"///a//b///", 0, 0, "/a/b/", NULL},
    {"//a", 0, 0, "/a", NULL},
    /* dot segments */
    {"/.", 0, 0, "/", NULL},
    {"/..", 0, 0, "/", NULL},
    {"/./", 0, 0, "/", NULL},
    {"/../", 0, 0, "/", NULL},
    {"/a/.", 0, 0, "/a/", NULL},
    {"/a/./", 0, 0, "/a/", NULL},
    {"/a/..", 0, 0, "/", NULL},
    {"/a/../", 0, 0, "/", NULL},
    {"/a/b/..", 0, 0, "/a/", NULL},
    {"/a/./b", 0, 0, "/a/b", NULL},
    {"/a/../b", 0, 0, "/b", NULL},
    {"/a/b/../../c", 0, 0, "/c", NULL},
    {"/../../../etc/passwd", 0, 0, "/etc/passwd", NULL},
    {"/a/../../b", 0, 0, "/b", NULL},
    {"/a//..", 0, 0, "/", NULL},
    {"/a/.//b", 0, 0, "/a/b", NULL},
    {"/a/b/c/./../../g", 0, 0, "/a/g", NULL},
    {"/mid/content=5/../6", 0, 0, "/mid/6", NULL},
    {"/api/../admin", 0, 0, "/admin", NULL},
    /* escapes: unreserved decoded, the rest upper-cased */
    {"/%41%62%7e%2d%5F%2e%30", 0, 0, "/Ab~-_.0", NULL},
    {"/a%20b", 0, 0, "/a%20b", NULL},
    {"/a%3fb%3Fc", 0, 0, "/a%3Fb%3Fc", NULL},
    {"/%c3%a9", 0, 0, "/%C3%A9", NULL},
    {"/%25", 0, 0, "/%25", NULL},
    {"/%25zz", 0, 0, "/%25zz", NULL},
    {"/%25%41", 0, 0, "/%25A", NULL},
    /* double encoding: an upstream decoding twice would see another path */
    {"/%2541", 0, 0, NULL, "double percent-encoding in path"},
    {"/%252e%252e/admin", 0, 0, NULL, "double percent-encoding in path"},
    {"/%252F", 0, SLASH, NULL, "double percent-encoding in path"},
    {"/a%2500", 0, 0, NULL, "double percent-encoding in path"},
    {"/a%252", 0, 0, "/a%252", NULL},
    {"/%25%34%31", 0, 0, NULL, "double percent-encoding in path"},
    {"/%5c..%5c", 0, 0, NULL, "encoded slash or backslash in path"},
    {"/%5c..%5c", 0, SLASH, "/%5C..%5C", NULL},
    {"/a\\..\\admin", 0, 0, NULL, "backslash in path"},
    {"/a\\b", 0, SLASH, NULL, "backslash in path"},
    {"/%ff%FF", 0, 0, "/%FF%FF", NULL},
    /* encoded dots are dots */
    {"/%2e", 0, 0, "/", NULL},
    {"/%2e%2e", 0, 0, "/", NULL},
    {"/a/%2e%2E/b", 0, 0, "/b", NULL},
    {"/a/.%2e/b", 0, 0, "/b", NULL},
    {"/a/%2E./b", 0, 0, "/b", NULL},
    {"/a/%2e%2e%2e/b", 0, 0, "/a/.../b", NULL},
    {"/admin/%2e%2e/%2e%2e/secret", 0, 0, "/secret", NULL},
    /* encoded slash */
    {"/a%2fb", 0, 0, NULL, "encoded slash or backslash in path"},
    {"/a%2Fb", 0, SLASH, "/a%2Fb", NULL},
    {"/a%2fb", 0, SLASH, "/a%2Fb", NULL},
    {"/a/%2e%2e%2fb", 0, SLASH, "/a/..%2Fb", NULL},
    {"/%2e%2e%2f..", 0, SLASH, "/..%2F..", NULL},
    /* invalid escapes */
    {"/%", 0, 0, NULL, "invalid percent-escape in path"},
    {"/%1", 0, 0, NULL, "invalid percent-escape in path"},
    {"/a%", 0, 0, NULL, "invalid percent-escape in path"},
    {"/%G1", 0, 0, NULL, "invalid percent-escape in path"},
    {"/%1G", 0, 0, NULL, "invalid percent-escape in path"},
    {"/%%41", 0, 0, NULL, "invalid percent-escape in path"},
    {"/%/", 0, 0, NULL, "invalid percent-escape in path"},
    {"/%00", 0, 0, NULL, "%00 in path"},
    {"/a%00b", 0, SLASH, NULL, "%00 in path"},
    /* raw bytes */
    {"/a b", 0, 0, NULL, "invalid character in path"},
    {"/a\tb", 0, 0, NULL, "invalid character in path"},
    {"/a\x7f", 0, 0, NULL, "invalid character in path"},
    {"/a\x01", 0, 0, NULL, "invalid character in path"},
    {"/\xc3\xa9", 0, 0, NULL, "invalid character in path"},
    {"/a\0b", 4, 0, NULL, "invalid character in path"},
    {"/a\r\n", 0, 0, NULL, "invalid character in path"},
    {"/a?b", 0, 0, NULL, "'?' or '#' in path"},
    {"/a#b", 0, 0, NULL, "'?' or '#' in path"},
    /* must start with '/' */
    {"", 0, 0, NULL, "path does not start with '/'"},
    {"a/b", 0, 0, NULL, "path does not start with '/'"},
    {"*", 0, 0, NULL, "path does not start with '/'"},
    {"%2F", 0, SLASH, NULL, "path does not start with '/'"},
};

static void test_path_table(void **state)
{
    char out[256], again[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
        const struct path_case *t = &path_cases[i];
        size_t len = t->len ? t->len : strlen(t->in), out_len = 99, again_len;
        const char *err = NULL;
        int rc;

        memset(out, 'X', sizeof(out));
        rc = http_path_normalize(t->in, len, t->flags, out, &out_len, &err);
        if (t->out == NULL) {
            if (rc != -1 || err == NULL || strcmp(err, t->error) != 0)
                fail_msg("path %zu (%s): rc %d err %s, want %s", i, t->in, rc, err ? err : "-",
                         t->error);
            continue;
        }
        if (rc != 0 || out_len != strlen(t->out) || strcmp(out, t->out) != 0)
            fail_msg("path %zu (%s): rc %d -> '%s', want '%s'", i, t->in, rc, rc == 0 ? out : "-",
                     t->out);
        /* Never longer than the input; out needs only len + 1 bytes. */
        assert_true(out_len <= len);
        assert_true(out[len + 1] == 'X');
        /* Idempotent. */
        rc = http_path_normalize(out, out_len, t->flags, again, &again_len, &err);
        assert_int_equal(rc, 0);
        assert_int_equal(again_len, out_len);
        assert_string_equal(again, out);
    }
}

/* The output buffer may be exactly len + 1 bytes. */
static void test_path_exact_buffer(void **state)
{
    static const char in[] = "/a/b";
    char *out = malloc(sizeof(in));
    size_t out_len;
    const char *err;

    (void)state;
    assert_non_null(out);
    assert_int_equal(http_path_normalize(in, sizeof(in) - 1, 0, out, &out_len, &err), 0);
    assert_int_equal(out_len, 4);
    assert_string_equal(out, "/a/b");
    free(out);
}

/* A path that is not NUL-terminated: only len bytes are read. */
static void test_path_not_terminated(void **state)
{
    static const char in[] = "/a/b/../cXYZ";
    char out[32];
    size_t out_len;
    const char *err;

    (void)state;
    assert_int_equal(http_path_normalize(in, 9, 0, out, &out_len, &err), 0);
    assert_string_equal(out, "/a/c");
    /* "/a/%4" cut before the second hex digit is an invalid escape. */
    assert_int_equal(http_path_normalize("/a/%41", 5, 0, out, &out_len, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_table),
        cmocka_unit_test(test_path_exact_buffer),
        cmocka_unit_test(test_path_not_terminated),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
