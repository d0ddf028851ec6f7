/*
 * linediff_test.c - the unified diff of the admin API's rules diff.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "linediff.h"

static void check(const char *a, const char *b, size_t ctx, const char *want)
{
    char *d = linediff_unified(a, b, "a", "b", ctx);

    assert_non_null(d);
    assert_string_equal(d, want);
    free(d);
}

static void test_equal_and_empty(void **state)
{
    (void)state;
    check("", "", 3, "");
    check("x\ny\n", "x\ny\n", 3, "");
    check("", "x\n", 3, "--- a\n+++ b\n@@ -0,0 +1,1 @@\n+x\n");
    check("x\n", "", 3, "--- a\n+++ b\n@@ -1,1 +0,0 @@\n-x\n");
    /* a missing final newline is a different line */
    check("x", "x\n", 3, "");
}

static void test_change_with_context(void **state)
{
    (void)state;
    check("1\n2\n3\n4\n5\n6\n7\n8\n9\n", "1\n2\n3\n4\nFIVE\n6\n7\n8\n9\n", 1,
          "--- a\n+++ b\n@@ -4,3 +4,3 @@\n 4\n-5\n+FIVE\n 6\n");
    /* insertion in the middle, no context */
    check("a\nb\nc\n", "a\nb\nnew\nc\n", 0, "--- a\n+++ b\n@@ -2,0 +3,1 @@\n+new\n");
    /* two changes close together: one hunk; far apart: two */
    check("1\n2\n3\n4\n5\n", "x\n2\n3\ny\n5\n", 1,
          "--- a\n+++ b\n@@ -1,5 +1,5 @@\n-1\n+x\n 2\n 3\n-4\n+y\n 5\n");
    check("1\n2\n3\n4\n5\n6\n7\n", "x\n2\n3\n4\n5\n6\ny\n", 1,
          "--- a\n+++ b\n@@ -1,2 +1,2 @@\n-1\n+x\n 2\n@@ -6,2 +6,2 @@\n 6\n-7\n+y\n");
}

static void test_lcs_keeps_common_lines(void **state)
{
    (void)state;
    /* a moved line: the rest stays as context */
    check("a\nb\nc\nd\n", "b\nc\nd\na\n", 0,
          "--- a\n+++ b\n@@ -1,1 +0,0 @@\n-a\n@@ -4,0 +4,1 @@\n+a\n");
}

static void test_big_input_falls_back(void **state)
{
    size_t n = 3000, i;
    char *a = malloc(n * 8 + 1), *b = malloc(n * 8 + 1), *d;
    size_t oa = 0, ob = 0, plus = 0, minus = 0;
    const char *p;

    (void)state;
    assert_non_null(a);
    assert_non_null(b);
    for (i = 0; i < n; i++) {
        oa += (size_t)snprintf(a + oa, n * 8 + 1 - oa, "a%05zu\n", i);
        ob += (size_t)snprintf(b + ob, n * 8 + 1 - ob, "b%05zu\n", i);
    }
    d = linediff_unified(a, b, "a", "b", 3);
    assert_non_null(d);
    for (p = d; (p = strchr(p, '\n')) != NULL; p++) {
        if (p[1] == '+' && p[2] != '+')
            plus++;
        if (p[1] == '-' && p[2] != '-')
            minus++;
    }
    assert_int_equal(plus, n);
    assert_int_equal(minus, n);
    free(d);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_and_empty),
        cmocka_unit_test(test_change_with_context),
        cmocka_unit_test(test_lcs_keeps_common_lines),
        cmocka_unit_test(test_big_input_falls_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
