/*
 * shared_test.c - the Redis shared state (include/shared.h): the "redis"
 * config section and the message parser, both sides of every limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "conf.h"
#include "shared.h"

#define BASE                                                                                       \
    "{\"listen\":[{\"address\":\"127.0.0.1:8443\"}],\"tls\":{\"certificate\":\"s.crt\",\"key\":"   \
    "\"s.key\",\"device_ca\":\"ca.crt\"},\"routes\":[{\"name\":\"app\",\"host\":\"app.test\","     \
    "\"upstream\":\"http://127.0.0.1:9000\"}]"

static int parse(const char *text, struct conf **out, char *err, size_t errlen)
{
    return conf_parse(text, strlen(text), "t.json", "/etc/zt", CONF_NO_FS, out, err, errlen);
}

static void test_conf_none(void **state)
{
    struct conf *c = NULL;
    char err[512] = "";

    (void)state;
    assert_int_equal(parse(BASE "}", &c, err, sizeof(err)), 0);
    assert_null(c->redis_address);
    assert_null(c->redis_password);
    conf_unref(c);
}

static void test_conf_defaults_and_values(void **state)
{
    struct conf *c = NULL;
    char err[512] = "";

    (void)state;
    assert_int_equal(
        parse(BASE ",\"redis\":{\"address\":\"127.0.0.1:6379\"}}", &c, err, sizeof(err)), 0);
    assert_string_equal(c->redis_host, "127.0.0.1");
    assert_int_equal(c->redis_port, 6379);
    assert_string_equal(c->redis_prefix, "ztproxy:");
    assert_int_equal(c->redis_connect_timeout_ms, 2000);
    assert_null(c->redis_password);
    conf_unref(c);
    c = NULL;
    assert_int_equal(parse(BASE ",\"redis\":{\"address\":\"[::1]:7000\",\"prefix\":\"a:b:\","
                                "\"connect_timeout\":\"100ms\",\"password_file\":\"pw\"}}",
                           &c, err, sizeof(err)),
                     0);
    assert_string_equal(c->redis_host, "::1");
    assert_int_equal(c->redis_port, 7000);
    assert_string_equal(c->redis_prefix, "a:b:");
    assert_int_equal(c->redis_connect_timeout_ms, 100);
    assert_non_null(c->redis_password); /* CONF_NO_FS: a placeholder */
    conf_unref(c);
    c = NULL;
    assert_int_equal(
        parse(BASE ",\"redis\":{\"address\":\"redis.ztproxy.svc:6380\"}}", &c, err, sizeof(err)),
        0);
    assert_string_equal(c->redis_host, "redis.ztproxy.svc");
    assert_int_equal(c->redis_port, 6380);
    conf_unref(c);
}

static void test_conf_bad(void **state)
{
    static const struct {
        const char *redis;
        const char *expect;
    } cases[] = {
        {"5", "$.redis: expected an object"},
        {"{}", "$.redis.address: required key is missing"},
        {"{\"address\":\"127.0.0.1:6379\",\"db\":1}", "$.redis.db: unknown key"},
        {"{\"address\":\"redis local:6379\"}", "$.redis.address: expected \"IPv4:port\""},
        {"{\"address\":\"redis.local\"}", "$.redis.address: expected"},
        {"{\"address\":\"redis.local:x\"}", "$.redis.address: expected"},
        {"{\"address\":\"[redis]:6379\"}", "$.redis.address: expected"},
        {"{\"address\":\"[::1]\"}", "$.redis.address: expected"},
        {"{\"address\":\"127.0.0.1\"}", "$.redis.address: expected"},
        {"{\"address\":\"127.0.0.1:0\"}", "$.redis.address: expected"},
        {"{\"address\":\"127.0.0.1:65536\"}", "$.redis.address: expected"},
        {"{\"address\":6379}", "$.redis.address: expected a string"},
        {"{\"address\":\"127.0.0.1:6379\",\"prefix\":\"a b\"}", "$.redis.prefix: expected"},
        {"{\"address\":\"127.0.0.1:6379\",\"prefix\":"
         "\"01234567890123456789012345678901234567890123456789012345678901234\"}",
         "$.redis.prefix: expected at most 64 bytes"},
        {"{\"address\":\"127.0.0.1:6379\",\"connect_timeout\":\"99ms\"}",
         "$.redis.connect_timeout: duration out of range"},
        {"{\"address\":\"127.0.0.1:6379\",\"connect_timeout\":\"61s\"}",
         "$.redis.connect_timeout: duration out of range"},
        {"{\"address\":\"127.0.0.1:6379\",\"password_file\":\"\"}",
         "$.redis.password_file: expected a file path"},
    };
    char text[1024], err[512];
    struct conf *c;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        c = NULL;
        err[0] = '\0';
        snprintf(text, sizeof(text), BASE ",\"redis\":%s}", cases[i].redis);
        assert_int_equal(parse(text, &c, err, sizeof(err)), -1);
        assert_null(c);
        if (strstr(err, cases[i].expect) == NULL)
            fail_msg("case %zu: \"%s\" does not contain \"%s\"", i, err, cases[i].expect);
    }
    /* the limits' other sides */
    c = NULL;
    assert_int_equal(parse(BASE
                           ",\"redis\":{\"address\":\"127.0.0.1:65535\",\"prefix\":"
                           "\"0123456789012345678901234567890123456789012345678901234567890123\","
                           "\"connect_timeout\":\"60s\"}}",
                           &c, err, sizeof(err)),
                     0);
    conf_unref(c);
}

static int msg(const char *text, struct shared_msg *m, char *err, size_t errlen)
{
    return shared_msg_parse(text, strlen(text), m, err, errlen);
}

static void test_msg_good(void **state)
{
    struct shared_msg m;
    char err[512];

    (void)state;
    assert_int_equal(msg("{\"origin\":\"o\",\"type\":\"revoke\",\"user\":\"alice\",\"at\":5}", &m,
                         err, sizeof(err)),
                     0);
    assert_int_equal(m.type, SHARED_REVOKE);
    assert_string_equal(m.user, "alice");
    assert_null(m.session);
    assert_int_equal(m.at, 5);
    shared_msg_reset(&m);
    assert_null(m.root);
    assert_int_equal(msg("{\"origin\":\"o\",\"type\":\"revoke\",\"session\":"
                         "\"00112233445566778899aabbccddeeff\",\"at\":1}",
                         &m, err, sizeof(err)),
                     0);
    assert_string_equal(m.session, "00112233445566778899aabbccddeeff");
    shared_msg_reset(&m);
    /* back-channel logouts: scoped to a provider */
    assert_int_equal(msg("{\"origin\":\"o\",\"type\":\"revoke\",\"provider\":\"staff\","
                         "\"sid\":\"s-1\",\"at\":7}",
                         &m, err, sizeof(err)),
                     0);
    assert_string_equal(m.provider, "staff");
    assert_string_equal(m.sid, "s-1");
    assert_null(m.user);
    shared_msg_reset(&m);
    assert_int_equal(msg("{\"origin\":\"o\",\"type\":\"revoke\",\"provider\":\"staff\","
                         "\"user\":\"bob\",\"at\":7}",
                         &m, err, sizeof(err)),
                     0);
    assert_string_equal(m.provider, "staff");
    assert_string_equal(m.user, "bob");
    assert_null(m.sid);
    shared_msg_reset(&m);
    assert_int_equal(
        msg("{\"origin\":\"o\",\"type\":\"override\",\"device\":\"d\",\"status\":null}", &m, err,
            sizeof(err)),
        0);
    assert_int_equal(m.type, SHARED_OVERRIDE);
    assert_null(m.status);
    shared_msg_reset(&m);
    assert_int_equal(msg("{\"origin\":\"o\",\"type\":\"override\",\"device\":\"d\",\"status\":"
                         "\"stolen\"}",
                         &m, err, sizeof(err)),
                     0);
    assert_string_equal(m.status, "stolen");
    shared_msg_reset(&m);
    assert_int_equal(msg("{\"origin\":\"o\",\"type\":\"rules\",\"id\":\"1\",\"author\":\"a\","
                         "\"comment\":\"\",\"document\":\"{}\"}",
                         &m, err, sizeof(err)),
                     0);
    assert_int_equal(m.type, SHARED_RULES);
    assert_int_equal(m.document_len, 2);
    assert_string_equal(m.comment, "");
    shared_msg_reset(&m);
    assert_int_equal(
        msg("{\"origin\":\"o\",\"type\":\"posture\",\"report\":\"{}\"}", &m, err, sizeof(err)), 0);
    assert_int_equal(m.report_len, 2);
    shared_msg_reset(&m);
}

static void test_msg_bad(void **state)
{
    static const struct {
        const char *text;
        const char *expect;
    } cases[] = {
        {"", "$: not JSON"},
        {"[]", "$: expected an object"},
        {"{\"type\":\"revoke\"}", "$.origin: expected"},
        {"{\"origin\":\"\",\"type\":\"revoke\"}", "$.origin: expected"},
        {"{\"origin\":\"o\"}", "$.type: expected"},
        {"{\"origin\":\"o\",\"type\":\"reboot\"}", "$.type: expected"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"user\":\"a\",\"at\":1,\"x\":1}",
         "$.x: unknown key"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"at\":1}", "exactly one of"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"sid\":\"s\",\"at\":1}",
         "$.provider: a \"sid\" needs"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"provider\":\"p\",\"sid\":\"s\","
         "\"user\":\"u\",\"at\":1}",
         "exactly one of"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"provider\":\"p\",\"session\":"
         "\"00112233445566778899aabbccddeeff\",\"at\":1}",
         "$.provider: not allowed"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"provider\":\"\",\"sid\":\"s\",\"at\":1}",
         "$.provider: expected"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"user\":\"a\",\"session\":"
         "\"00112233445566778899aabbccddeeff\",\"at\":1}",
         "exactly one of"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"user\":\"a\",\"at\":0}", "$.at: expected"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"user\":\"a\",\"at\":\"1\"}", "$.at: expected"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"user\":\"a\"}", "$.at: expected"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"user\":5,\"at\":1}", "$.user: expected"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"session\":\"0011\",\"at\":1}",
         "$.session: expected"},
        {"{\"origin\":\"o\",\"type\":\"revoke\",\"session\":"
         "\"0011223344556677889900AABBCCDDEEFF\",\"at\":1}",
         "$.session: expected"},
        {"{\"origin\":\"o\",\"type\":\"override\",\"device\":\"d\"}", "$.status: expected"},
        {"{\"origin\":\"o\",\"type\":\"override\",\"device\":\"d\",\"status\":\"gone\"}",
         "$.status: expected"},
        {"{\"origin\":\"o\",\"type\":\"override\",\"status\":null}", "$.device: expected"},
        {"{\"origin\":\"o\",\"type\":\"rules\",\"id\":\"1\",\"author\":\"a\",\"document\":\"{}\"}",
         "$.comment: expected"},
        {"{\"origin\":\"o\",\"type\":\"rules\",\"id\":\"1\",\"author\":\"a\",\"comment\":\"\"}",
         "$.document: expected"},
        {"{\"origin\":\"o\",\"type\":\"posture\"}", "$.report: expected"},
        {"{\"origin\":\"o\",\"origin\":\"p\",\"type\":\"posture\",\"report\":\"{}\"}", "not JSON"},
        {"{\"origin\":\"o\",\"type\":\"posture\",\"report\":\"a\\u0000b\"}", "not allowed"},
    };
    struct shared_msg m;
    char err[512];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        assert_int_equal(msg(cases[i].text, &m, err, sizeof(err)), -1);
        assert_null(m.root);
        if (strncmp(err, "shared: ", 8) != 0 || strstr(err, cases[i].expect) == NULL)
            fail_msg("case %zu: \"%s\" does not contain \"%s\"", i, err, cases[i].expect);
    }
}

static void test_msg_limits(void **state)
{
    char *text, err[512];
    struct shared_msg m;
    size_t n;

    (void)state;
    /* user: 255 bytes ok, 256 refused */
    text = malloc(1024);
    assert_non_null(text);
    for (n = 255; n <= 256; n++) {
        int k = snprintf(text, 1024, "{\"origin\":\"o\",\"type\":\"revoke\",\"at\":1,\"user\":\"");
        memset(text + k, 'u', n);
        snprintf(text + k + n, 1024 - (size_t)k - n, "\"}");
        assert_int_equal(msg(text, &m, err, sizeof(err)), n == 255 ? 0 : -1);
        shared_msg_reset(&m);
    }
    /* origin: 64 ok, 65 refused */
    for (n = 64; n <= 65; n++) {
        int k = snprintf(text, 1024, "{\"type\":\"revoke\",\"at\":1,\"user\":\"u\",\"origin\":\"");
        memset(text + k, 'o', n);
        snprintf(text + k + n, 1024 - (size_t)k - n, "\"}");
        assert_int_equal(msg(text, &m, err, sizeof(err)), n == 64 ? 0 : -1);
        shared_msg_reset(&m);
    }
    free(text);
    /* larger than SHARED_MSG_MAX: refused before parsing */
    assert_int_equal(shared_msg_parse("{}", (size_t)SHARED_MSG_MAX + 1, &m, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "too large"));
}

static void test_publish_without_redis_is_noop(void **state)
{
    struct shared_stats st;

    (void)state;
    /* Not started: nothing queued, nothing crashes. */
    shared_publish_revoke("alice", NULL, 1);
    shared_publish_override("d", "lost");
    shared_publish_rules("{}", 2, "a", "c");
    shared_publish_posture("{}", 2);
    shared_stats(0, &st);
    assert_int_equal(st.configured, 0);
    assert_int_equal(st.queued, 0);
}

/* Redis unreachable (nothing listens, the loop never runs): writes queue
 * up to SHARED_QUEUE_MAX, then the oldest is dropped and counted; stop
 * frees what is left. */
static void test_queue_bound(void **state)
{
    struct event_base *base = event_base_new();
    struct shared_stats st;
    struct conf *c = NULL;
    char err[512] = "";
    int i;

    (void)state;
    assert_non_null(base);
    assert_int_equal(parse(BASE ",\"redis\":{\"address\":\"127.0.0.1:1\"}}", &c, err, sizeof(err)),
                     0);
    assert_int_equal(shared_start(base, c, err, sizeof(err)), 0);
    shared_stats(0, &st);
    assert_int_equal(st.configured, 1);
    assert_int_equal(st.connected, 0);
    for (i = 0; i < SHARED_QUEUE_MAX; i++)
        shared_publish_override("dev-1", i % 2 ? "lost" : NULL);
    shared_stats(0, &st);
    assert_int_equal(st.queued, SHARED_QUEUE_MAX);
    assert_int_equal(st.dropped, 0);
    shared_publish_revoke("alice", NULL, 1714564800);
    shared_publish_rules("{}", 2, "token:ops", NULL);
    shared_stats(0, &st);
    assert_int_equal(st.queued, SHARED_QUEUE_MAX);
    assert_int_equal(st.dropped, 2);
    assert_int_equal(st.published, 0);
    /* a report that is not a stored posture report is not shared */
    shared_publish_posture("{}", 2);
    shared_stats(0, &st);
    assert_int_equal(st.dropped, 2);
    shared_stop();
    shared_stats(0, &st);
    assert_int_equal(st.configured, 0);
    assert_int_equal(st.queued, 0);
    conf_unref(c);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf_none),
        cmocka_unit_test(test_conf_defaults_and_values),
        cmocka_unit_test(test_conf_bad),
        cmocka_unit_test(test_msg_good),
        cmocka_unit_test(test_msg_bad),
        cmocka_unit_test(test_msg_limits),
        cmocka_unit_test(test_publish_without_redis_is_noop),
        cmocka_unit_test(test_queue_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
