/*
 * feedcache_test.c - the URL feed cache (include/feedcache.h): save, load,
 * touch, a cache for another URL, damaged pairs, and the meta parser's
 * refusals with their messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "feedcache.h"

#define URL "https://mdm.corp.example/devices.json"
#define BODY "[{\"id\":\"d1\"}]\n"
#define SHA_EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/zt_feedcache_test.XXXXXX");
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    char p[128];

    (void)state;
    snprintf(p, sizeof(p), "%s/%s", dir, FEEDCACHE_BODY);
    unlink(p);
    snprintf(p, sizeof(p), "%s/%s", dir, FEEDCACHE_META);
    unlink(p);
    rmdir(dir);
    return 0;
}

static void append(const char *name, const char *text)
{
    char p[128];
    FILE *f;

    snprintf(p, sizeof(p), "%s/%s", dir, name);
    f = fopen(p, "a");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_save_load_touch(void **state)
{
    struct feedcache_meta m;
    char err[512] = "", *body = NULL, p[128];
    size_t len = 0;
    struct stat st;

    (void)state;
    /* nothing yet */
    assert_int_equal(feedcache_load(dir, URL, 1 << 20, &m, &body, &len, err, sizeof(err)), 1);
    assert_null(body);
    assert_int_equal(feedcache_touch(dir, URL, NULL, NULL, 5, err, sizeof(err)), 1);

    assert_int_equal(
        feedcache_save(dir, URL, "\"e1\"", NULL, 1700000000, BODY, strlen(BODY), err, sizeof(err)),
        0);
    snprintf(p, sizeof(p), "%s/%s", dir, FEEDCACHE_META);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0077, 0);
    assert_int_equal(feedcache_load(dir, URL, 1 << 20, &m, &body, &len, err, sizeof(err)), 0);
    assert_non_null(body);
    assert_int_equal(len, strlen(BODY));
    assert_memory_equal(body, BODY, len);
    assert_string_equal(m.url, URL);
    assert_string_equal(m.etag, "\"e1\"");
    assert_string_equal(m.last_modified, "");
    assert_int_equal(m.fetched_at, 1700000000);
    free(body);

    /* another URL: ignored; a smaller limit: refused */
    assert_int_equal(feedcache_load(dir, URL "?x", 1 << 20, &m, &body, &len, err, sizeof(err)), 2);
    assert_null(body);
    assert_int_equal(feedcache_load(dir, URL, 4, &m, &body, &len, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "more than the feed limit"));

    /* a 304: only the time moves (and never backwards); new validators stick */
    assert_int_equal(feedcache_touch(dir, URL, NULL, "Tue, 15 Nov 1994 12:45:26 GMT", 1700000100,
                                     err, sizeof(err)),
                     0);
    assert_int_equal(feedcache_touch(dir, URL, NULL, NULL, 1600000000, err, sizeof(err)), 0);
    assert_int_equal(
        feedcache_touch(dir, "https://other/", NULL, NULL, 1800000000, err, sizeof(err)), 1);
    assert_int_equal(feedcache_load(dir, URL, 1 << 20, &m, &body, &len, err, sizeof(err)), 0);
    assert_int_equal(m.fetched_at, 1700000100);
    assert_string_equal(m.etag, "\"e1\"");
    assert_string_equal(m.last_modified, "Tue, 15 Nov 1994 12:45:26 GMT");
    free(body);

    /* a validator that cannot be kept is dropped, the body is still cached */
    assert_int_equal(feedcache_save(dir, URL, "a\nb", NULL, 1700000200, "", 0, err, sizeof(err)),
                     0);
    assert_int_equal(feedcache_load(dir, URL, 1 << 20, &m, &body, &len, err, sizeof(err)), 0);
    assert_string_equal(m.etag, "");
    assert_int_equal(len, 0);
    free(body);
    /* bad arguments */
    assert_int_equal(feedcache_save(dir, "", NULL, NULL, 1, "", 0, err, sizeof(err)), -1);
    assert_int_equal(feedcache_save(dir, URL, NULL, NULL, -1, "", 0, err, sizeof(err)), -1);
}

static void test_damaged(void **state)
{
    struct feedcache_meta m;
    char err[512] = "", *body = NULL, p[128];
    size_t len = 0;

    (void)state;
    assert_int_equal(
        feedcache_save(dir, URL, NULL, NULL, 1700000000, BODY, strlen(BODY), err, sizeof(err)), 0);
    /* the body changed behind the meta's back (a crash between the two) */
    append(FEEDCACHE_BODY, "x");
    assert_int_equal(feedcache_load(dir, URL, 1 << 20, &m, &body, &len, err, sizeof(err)), -1);
    assert_null(body);
    assert_non_null(strstr(err, "does not match"));
    /* the body is gone */
    snprintf(p, sizeof(p), "%s/%s", dir, FEEDCACHE_BODY);
    unlink(p);
    assert_int_equal(feedcache_load(dir, URL, 1 << 20, &m, &body, &len, err, sizeof(err)), 1);
    /* a meta that is not JSON */
    append(FEEDCACHE_META, "}");
    assert_int_equal(feedcache_load(dir, URL, 1 << 20, &m, &body, &len, err, sizeof(err)), -1);
    assert_non_null(strstr(err, FEEDCACHE_META ": line 1"));
}

static void test_meta_parse(void **state)
{
    static const struct {
        const char *text, *err;
    } bad[] = {
        {"[]", "m: $: expected an object"},
        {"{\"url\":\"u\",\"fetched_at\":1,\"length\":0,\"sha256\":\"" SHA_EMPTY "\",\"x\":1}",
         "m: $.x: unknown key"},
        {"{\"fetched_at\":1,\"length\":0,\"sha256\":\"" SHA_EMPTY "\"}",
         "m: $.url: expected a string"},
        {"{\"url\":\"\",\"fetched_at\":1,\"length\":0,\"sha256\":\"" SHA_EMPTY "\"}",
         "m: $.url: expected 1..2048 bytes without control characters"},
        {"{\"url\":\"u\",\"etag\":\"a\\u0001\",\"fetched_at\":1,\"length\":0,\"sha256\":"
         "\"" SHA_EMPTY "\"}",
         "m: $.etag: expected 0 or 1..1024 bytes without control characters"},
        {"{\"url\":\"u\",\"fetched_at\":-1,\"length\":0,\"sha256\":\"" SHA_EMPTY "\"}",
         "m: $.fetched_at: expected Unix seconds (an integer >= 0)"},
        {"{\"url\":\"u\",\"fetched_at\":\"1\",\"length\":0,\"sha256\":\"" SHA_EMPTY "\"}",
         "m: $.fetched_at: expected Unix seconds (an integer >= 0)"},
        {"{\"url\":\"u\",\"fetched_at\":1,\"length\":-5,\"sha256\":\"" SHA_EMPTY "\"}",
         "m: $.length: expected an integer >= 0"},
        {"{\"url\":\"u\",\"fetched_at\":1,\"length\":0,\"sha256\":\"E3B0\"}",
         "m: $.sha256: expected 64 lower-case hex digits"},
        {"{\"url\":\"u\",\"fetched_at\":1,\"length\":0}",
         "m: $.sha256: expected 64 lower-case hex digits"},
    };
    struct feedcache_meta m;
    char err[512];
    size_t i;
    const char *good = "{\"url\":\"u\",\"fetched_at\":1,\"length\":0,\"sha256\":\"" SHA_EMPTY "\"}";

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (feedcache_meta_parse(bad[i].text, strlen(bad[i].text), "m", &m, err, sizeof(err)) != -1)
            fail_msg("case %zu accepted", i);
        if (strcmp(err, bad[i].err) != 0)
            fail_msg("case %zu:\n got: %s\nwant: %s", i, err, bad[i].err);
        assert_string_equal(m.url, "");
    }
    /* duplicate keys */
    assert_int_equal(
        feedcache_meta_parse("{\"url\":\"a\",\"url\":\"b\"}", 21, "m", &m, err, sizeof(err)), -1);
    assert_int_equal(feedcache_meta_parse(good, strlen(good), "m", &m, err, sizeof(err)), 0);
    assert_int_equal(m.sha256[0], 0xe3);
    assert_int_equal(m.sha256[31], 0x55);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_save_load_touch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged, setup, teardown),
        cmocka_unit_test(test_meta_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
