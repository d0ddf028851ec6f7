/*
 * admin_token_test.c - the admin token file: parse errors name the line,
 * matching is exact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "admin_token.h"

#define T1 "0123456789abcdef0123"
#define T2 "ZYXWVUTSRQPONMLKJIHG"

static void test_parse_and_match(void **state)
{
    const char *text = "# admins\n\nops:" T1 "\r\nci-bot.2:" T2 "\n";
    char err[256] = "";
    struct admin_tokens *t;

    (void)state;
    t = admin_tokens_parse(text, strlen(text), "a.tokens", err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(admin_tokens_count(t), 2);
    assert_string_equal(admin_tokens_match(t, T1, strlen(T1)), "ops");
    assert_string_equal(admin_tokens_match(t, T2, strlen(T2)), "ci-bot.2");
    /* a prefix, a longer token, another token, an empty one: no */
    assert_null(admin_tokens_match(t, T1, strlen(T1) - 1));
    assert_null(admin_tokens_match(t, T1 "x", strlen(T1) + 1));
    assert_null(admin_tokens_match(t, "0123456789abcdef0124", 20));
    assert_null(admin_tokens_match(t, "", 0));
    assert_null(admin_tokens_match(NULL, T1, strlen(T1)));
    admin_tokens_free(t);

    /* an empty file: no tokens, nothing matches */
    t = admin_tokens_parse("", 0, "a.tokens", err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(admin_tokens_count(t), 0);
    assert_null(admin_tokens_match(t, T1, strlen(T1)));
    admin_tokens_free(t);
}

static const struct {
    const char *text, *expect;
} bad[] = {
    {"ops\n", "a.tokens:1: expected \"name:token\""},
    {"\n:" T1 "\n", "a.tokens:2: expected a name of 1..64"},
    {"o p:" T1 "\n", "a.tokens:1: expected a name"},
    {"ops:short\n", "a.tokens:1: the token of \"ops\" must be 16..1024 bytes"},
    {"ops:0123456789 abcdef\n", "a.tokens:1: the token of \"ops\" must be printable ASCII"},
    {"ops:" T1 "\nops:" T2 "\n", "a.tokens:2: the name \"ops\" is used twice"},
    {"ops:" T1 "\nci:" T1 "\n", "a.tokens:2: \"ci\" has the same token as \"ops\""},
};

static void test_parse_errors(void **state)
{
    char err[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_null(
            admin_tokens_parse(bad[i].text, strlen(bad[i].text), "a.tokens", err, sizeof(err)));
        if (strstr(err, bad[i].expect) == NULL)
            fail_msg("case %zu: got \"%s\", expected \"%s\"", i, err, bad[i].expect);
        /* never the token itself */
        assert_null(strstr(err, "0123456789"));
    }
}

static void test_limits(void **state)
{
    char err[256] = "", *text, tok[ADMIN_TOKEN_MAX + 2];
    struct admin_tokens *t;
    size_t i, off = 0, cap = (ADMIN_TOKENS_MAX + 1) * 40;

    (void)state;
    /* the longest token: accepted; one byte more: refused */
    memset(tok, 'a', sizeof(tok));
    text = malloc(cap);
    assert_non_null(text);
    off = (size_t)snprintf(text, cap, "x:%.*s\n", ADMIN_TOKEN_MAX, tok);
    t = admin_tokens_parse(text, off, "a", err, sizeof(err));
    assert_non_null(t);
    assert_string_equal(admin_tokens_match(t, tok, ADMIN_TOKEN_MAX), "x");
    admin_tokens_free(t);
    off = (size_t)snprintf(text, cap, "x:%.*s\n", ADMIN_TOKEN_MAX + 1, tok);
    assert_null(admin_tokens_parse(text, off, "a", err, sizeof(err)));
    /* ADMIN_TOKENS_MAX tokens: fine; one more: refused */
    off = 0;
    for (i = 0; i < ADMIN_TOKENS_MAX; i++)
        off += (size_t)snprintf(text + off, cap - off, "n%zu:tok-%016zu\n", i, i);
    t = admin_tokens_parse(text, off, "a", err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(admin_tokens_count(t), ADMIN_TOKENS_MAX);
    admin_tokens_free(t);
    off += (size_t)snprintf(text + off, cap - off, "last:tok-%016d\n", 0);
    assert_null(admin_tokens_parse(text, off, "a", err, sizeof(err)));
    assert_non_null(strstr(err, "more than 1024 tokens"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_match),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
