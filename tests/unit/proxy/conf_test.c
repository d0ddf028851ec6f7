/*
 * conf_test.c - configuration validation: every error names its JSON path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "conf.h"

#define BASE_TLS "\"tls\":{\"certificate\":\"s.crt\",\"key\":\"s.key\",\"device_ca\":\"ca.crt\"}"
#define BASE_ROUTE "{\"name\":\"app\",\"host\":\"app.test\",\"upstream\":\"http://127.0.0.1:9000\"}"

static int parse(const char *text, struct conf **out, char *err, size_t errlen)
{
    return conf_parse(text, strlen(text), "t.json", "/etc/zt", CONF_NO_FS, out, err, errlen);
}

static void test_minimal_defaults(void **state)
{
    const char *text =
        "{\"listen\":[{\"address\":\"127.0.0.1:8443\"}]," BASE_TLS ",\"routes\":[" BASE_ROUTE "]}";
    struct conf *c = NULL;
    char err[512] = "";

    (void)state;
    assert_int_equal(parse(text, &c, err, sizeof(err)), 0);
    assert_non_null(c);
    assert_string_equal(c->tls_certificate, "/etc/zt/s.crt");
    assert_int_equal(c->tls_unauthenticated, CONF_UNAUTH_REJECT);
    assert_int_equal(c->tls_session_cache_server, 1);
    assert_int_equal(c->devid_source, DEVICE_ID_SAN_URI);
    assert_string_equal(c->devid_prefix, "urn:ztproxy:device:");
    assert_int_equal(c->timeout_header_ms, 10000);
    assert_int_equal(c->limit_header_size, 32768);
    assert_int_equal(c->limit_header_count, 100);
    assert_true(c->workers >= 1);
    assert_int_equal(c->nroutes, 1);
    assert_string_equal(c->routes[0].path_prefix, "/");
    assert_int_equal(c->routes[0].upstream_port, 9000);
    assert_int_equal(c->routes[0].upstream_tls, 0);
    assert_int_equal(c->routes[0].websocket, 1);
    assert_int_equal(c->routes[0].max_body_size, 1024ULL * 1024 * 1024);
    conf_unref(c);
}

struct bad_case {
    const char *text;
    const char *expect; /* substring of the error */
};

static const struct bad_case bad_cases[] = {
    {"{", "t.json:1:"},
    {"[]", "$: expected an object"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:8443\"}]," BASE_TLS ",\"routes\":[" BASE_ROUTE
     "],\"frobnicate\":1}",
     "$.frobnicate: unknown key"},
    {"{" BASE_TLS ",\"routes\":[" BASE_ROUTE "]}", "$.listen: required key is missing"},
    {"{\"listen\":[{\"address\":\"localhost:8443\"}]," BASE_TLS ",\"routes\":[" BASE_ROUTE "]}",
     "$.listen[0].address: expected \"IPv4:port\""},
    {"{\"listen\":[{\"address\":\"127.0.0.1:70000\"}]," BASE_TLS ",\"routes\":[" BASE_ROUTE "]}",
     "$.listen[0].address"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\",\"x\":1}]," BASE_TLS ",\"routes\":[" BASE_ROUTE
     "]}",
     "$.listen[0].x: unknown key"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}],\"workers\":0," BASE_TLS
     ",\"routes\":[" BASE_ROUTE "]}",
     "$.workers: expected an integer 1..64"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}],\"tls\":{\"certificate\":\"a\",\"key\":\"b\"},"
     "\"routes\":[" BASE_ROUTE "]}",
     "$.tls.device_ca: required key is missing"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}],\"tls\":{\"certificate\":\"a\",\"key\":\"b\","
     "\"device_ca\":\"c\",\"unauthenticated\":\"allow\"},\"routes\":[" BASE_ROUTE "]}",
     "$.tls.unauthenticated: expected \"reject\" or \"enroll_page\""},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}],\"tls\":{\"certificate\":\"a\",\"key\":\"b\","
     "\"device_ca\":\"c\",\"session_cache\":\"shared\"},\"routes\":[" BASE_ROUTE "]}",
     "$.tls.session_cache: expected \"server\" or \"tickets\", got \"shared\""},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}],\"tls\":{\"certificate\":\"a\",\"key\":\"b\","
     "\"device_ca\":\"c\",\"session_cache\":true},\"routes\":[" BASE_ROUTE "]}",
     "$.tls.session_cache: expected a string, got"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}],\"tls\":{\"certificate\":5,\"key\":\"b\","
     "\"device_ca\":\"c\"},\"routes\":[" BASE_ROUTE "]}",
     "$.tls.certificate: expected a string, got an integer"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
     ",\"timeouts\":{\"header\":\"10 s\"},\"routes\":[" BASE_ROUTE "]}",
     "$.timeouts.header: expected a duration"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
     ",\"timeouts\":{\"headers\":\"10s\"},\"routes\":[" BASE_ROUTE "]}",
     "$.timeouts.headers: unknown key"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
     ",\"limits\":{\"header_count\":257},\"routes\":[" BASE_ROUTE "]}",
     "$.limits.header_count: expected an integer 1..256, got 257"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
     ",\"limits\":{\"header_size\":\"12q\"},\"routes\":[" BASE_ROUTE "]}",
     "$.limits.header_size: expected a size"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
     ",\"device_id\":{\"source\":\"email\"},\"routes\":[" BASE_ROUTE "]}",
     "$.device_id.source: expected \"san_uri\""},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS ",\"routes\":[]}",
     "$.routes: expected an array of 1-4096"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
     ",\"routes\":[{\"name\":\"app\",\"host\":\"app.test\",\"upstream\":\"ftp://x:1\"}]}",
     "$.routes[0].upstream: expected \"http://host:port\" or \"https://host:port\", got "
     "\"ftp://x:1\""},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
     ",\"routes\":[{\"name\":\"app\",\"host\":\"app.test\",\"upstream\":\"http://x:1/path\"}]}",
     "$.routes[0].upstream: expected \"scheme://host:port\" without a path"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS ",\"routes\":[" BASE_ROUTE
     "," BASE_ROUTE "]}",
     "$.routes[1].name: duplicate route name \"app\""},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
     ",\"routes\":[{\"name\":\"App\",\"host\":\"app.test\",\"upstream\":\"http://x:1\"}]}",
     "$.routes[0].name: expected 1-64 characters"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
     ",\"routes\":[{\"name\":\"a\",\"host\":\"app.test:443\",\"upstream\":\"http://x:1\"}]}",
     "$.routes[0].host: expected a host name without port"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
     ",\"routes\":[{\"name\":\"a\",\"host\":\"a.test\",\"path_prefix\":\"api\",\"upstream\":"
     "\"http://x:1\"}]}",
     "$.routes[0].path_prefix: expected a path starting with \"/\""},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
     ",\"routes\":[{\"name\":\"a\",\"host\":\"a.test\",\"upstream\":\"http://x:1\","
     "\"upstream_tls\":{\"verify\":false}}]}",
     "$.routes[0].upstream_tls: only valid with an https:// upstream"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
     ",\"routes\":[{\"name\":\"a\",\"host\":\"a.test\",\"upstream\":\"http://x:1\","
     "\"websocket\":\"yes\"}]}",
     "$.routes[0].websocket: expected true or false"},
    {"{\"listen\":[{\"address\":\"127.0.0.1:1\"}],\"listen\":[]," BASE_TLS
     ",\"routes\":[" BASE_ROUTE "]}",
     "duplicate object key"},
};

static void test_bad_configs(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        struct conf *c = NULL;
        char err[512] = "";
        int rc = parse(bad_cases[i].text, &c, err, sizeof(err));
        if (rc != -1 || strstr(err, bad_cases[i].expect) == NULL)
            fail_msg("case %zu: rc=%d err=\"%s\", expected \"%s\"", i, rc, err,
                     bad_cases[i].expect);
        assert_null(c);
    }
}

static void test_durations_and_sizes(void **state)
{
    uint64_t v;

    (void)state;
    assert_int_equal(conf_duration_parse("500ms", &v), 0);
    assert_int_equal(v, 500);
    assert_int_equal(conf_duration_parse("10s", &v), 0);
    assert_int_equal(v, 10000);
    assert_int_equal(conf_duration_parse("2m", &v), 0);
    assert_int_equal(v, 120000);
    assert_int_equal(conf_duration_parse("1h", &v), 0);
    assert_int_equal(v, 3600000);
    assert_int_equal(conf_duration_parse("10", &v), -1);
    assert_int_equal(conf_duration_parse("s", &v), -1);
    assert_int_equal(conf_duration_parse("-1s", &v), -1);
    assert_int_equal(conf_duration_parse("99999999999999999999h", &v), -1);
    assert_int_equal(conf_size_parse("16k", &v), 0);
    assert_int_equal(v, 16384);
    assert_int_equal(conf_size_parse("1g", &v), 0);
    assert_int_equal(v, 1073741824ULL);
    assert_int_equal(conf_size_parse("100", &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(conf_size_parse("1t", &v), -1);
    assert_int_equal(conf_size_parse("", &v), -1);
}

static void test_limits_boundaries(void **state)
{
    struct conf *c = NULL;
    char err[512] = "";
    const char *ok = "{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
                     ",\"limits\":{\"header_count\":256,\"header_size\":256,\"request_line\":64},"
                     "\"routes\":[" BASE_ROUTE "]}";
    const char *bad = "{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS
                      ",\"limits\":{\"header_size\":255},\"routes\":[" BASE_ROUTE "]}";

    (void)state;
    assert_int_equal(parse(ok, &c, err, sizeof(err)), 0);
    assert_int_equal(c->limit_header_count, 256);
    conf_unref(c);
    c = NULL;
    assert_int_equal(parse(bad, &c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "$.limits.header_size: size out of range"));
}

#define ADMIN_BASE                                                                                 \
    "{\"listen\":[{\"address\":\"127.0.0.1:8443\"}]," BASE_TLS ",\"routes\":[" BASE_ROUTE "]"

static void test_admin_section(void **state)
{
    static const struct bad_case bad[] = {
        {ADMIN_BASE ",\"admin\":{\"listen\":\"127.0.0.1:9443\",\"x\":1}}",
         "t.json: $.admin.x: unknown key"},
        {ADMIN_BASE ",\"admin\":[]}", "t.json: $.admin: expected an object"},
        {ADMIN_BASE ",\"admin\":{\"listen\":\"localhost:9\"}}",
         "t.json: $.admin.listen: expected \"IPv4:port\""},
        {ADMIN_BASE ",\"admin\":{\"listen\":\"127.0.0.1:8443\"}}",
         "t.json: $.admin.listen: \"127.0.0.1:8443\" is also $.listen[0]"},
        {ADMIN_BASE ",\"admin\":{\"admin_groups\":\"secops\"}}",
         "t.json: $.admin.admin_groups: expected an array"},
        {ADMIN_BASE ",\"admin\":{\"admin_groups\":[\"a,b\"]}}",
         "t.json: $.admin.admin_groups[0]: expected a group name"},
        {ADMIN_BASE ",\"admin\":{\"decisions_ring\":0}}",
         "t.json: $.admin.decisions_ring: expected an integer 1..1000000, got 0"},
        {ADMIN_BASE ",\"admin\":{\"token_file\":\"\"}}",
         "t.json: $.admin.token_file: expected a file path"},
        {ADMIN_BASE ",\"admin\":{\"console_dir\":7}}",
         "t.json: $.admin.console_dir: expected a string"},
    };
    struct conf *c = NULL;
    char err[512] = "";
    size_t i;

    (void)state;
    /* none: no listener */
    assert_int_equal(parse(ADMIN_BASE "}", &c, err, sizeof(err)), 0);
    assert_null(c->admin_listener);
    conf_unref(c);
    /* empty: every default */
    c = NULL;
    assert_int_equal(parse(ADMIN_BASE ",\"admin\":{}}", &c, err, sizeof(err)), 0);
    assert_non_null(c->admin_listener);
    assert_string_equal(c->admin_listener->text, "127.0.0.1:9443");
    assert_string_equal(c->admin_client_ca, "/etc/zt/ca.crt");
    assert_int_equal(c->nadmin_groups, 0);
    assert_null(c->admin_token_file);
    assert_null(c->admin_console_dir);
    assert_int_equal(c->admin_decisions_ring, 10000);
    conf_unref(c);
    c = NULL;
    assert_int_equal(parse(ADMIN_BASE ",\"admin\":{\"listen\":\"127.0.0.1:9555\",\"client_ca\":"
                                      "\"admin-ca.pem\",\"admin_groups\":[\"secops\",\"sre\"],"
                                      "\"token_file\":\"/s/admin.tokens\",\"console_dir\":"
                                      "\"console\",\"decisions_ring\":50}}",
                           &c, err, sizeof(err)),
                     0);
    assert_string_equal(c->admin_listener->text, "127.0.0.1:9555");
    assert_string_equal(c->admin_client_ca, "/etc/zt/admin-ca.pem");
    assert_int_equal(c->nadmin_groups, 2);
    assert_string_equal(c->admin_groups[1], "sre");
    assert_string_equal(c->admin_token_file, "/s/admin.tokens");
    assert_string_equal(c->admin_console_dir, "/etc/zt/console");
    assert_int_equal(c->admin_decisions_ring, 50);
    conf_unref(c);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = NULL;
        err[0] = '\0';
        assert_int_equal(parse(bad[i].text, &c, err, sizeof(err)), -1);
        assert_null(c);
        if (strstr(err, bad[i].expect) == NULL)
            fail_msg("case %zu: got \"%s\", expected \"%s\"", i, err, bad[i].expect);
    }
}

static void test_route_match(void **state)
{
    const char *text =
        "{\"listen\":[{\"address\":\"127.0.0.1:1\"}]," BASE_TLS ",\"routes\":["
        "{\"name\":\"root\",\"host\":\"App.Test\",\"upstream\":\"http://127.0.0.1:1\"},"
        "{\"name\":\"api\",\"host\":\"app.test\",\"path_prefix\":\"/api/\",\"upstream\":"
        "\"http://127.0.0.1:2\"},"
        "{\"name\":\"apiv2\",\"host\":\"app.test\",\"path_prefix\":\"/api/v2\",\"upstream\":"
        "\"http://127.0.0.1:3\"},"
        "{\"name\":\"other\",\"host\":\"other.test\",\"path_prefix\":\"/x\",\"upstream\":"
        "\"http://127.0.0.1:4\"}]}";
    struct conf *c = NULL;
    char err[512] = "";
    const struct conf_route *r;

    (void)state;
    assert_int_equal(parse(text, &c, err, sizeof(err)), 0);
#define M(h, p) conf_route_match(c, h, strlen(h), p, strlen(p))
    r = M("app.test", "/");
    assert_string_equal(r->name, "root");
    r = M("APP.TEST", "/api");
    assert_string_equal(r->name, "api");
    r = M("app.test", "/api/x");
    assert_string_equal(r->name, "api");
    r = M("app.test", "/apix");
    assert_string_equal(r->name, "root");
    r = M("app.test", "/api/v2/users");
    assert_string_equal(r->name, "apiv2");
    r = M("app.test", "/api/v20");
    assert_string_equal(r->name, "api");
    assert_null(M("other.test", "/"));
    assert_null(M("other.test", "/xy"));
    assert_string_equal(M("other.test", "/x/y")->name, "other");
    assert_null(M("nope.test", "/"));
#undef M
    conf_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_defaults),    cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_durations_and_sizes), cmocka_unit_test(test_limits_boundaries),
        cmocka_unit_test(test_route_match),         cmocka_unit_test(test_admin_section),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
