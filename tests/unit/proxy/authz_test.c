/*
 * authz_test.c - the authorization runtime with a real event loop: rules,
 * directory and GeoIP files on disk, live reloads, trusted proxies, the
 * "policy" config section and the audit line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/thread.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>

#include "auditlog.h"
#include "authz.h"
#include "conf.h"

static char tmpdir[256];
static struct event_base *base;

/* 2026-05-20 (a Wednesday) 10:00 UTC */
#define NOW 1779271200

static const char *RULES =
    "{\"version\":\"v1\",\"rules\":["
    "{\"id\":\"block-embargoed\",\"effect\":\"deny\",\"when\":{\"country\":{\"in\":[\"KP\"]}},"
    "\"deny_message\":\"Not from there.\"},"
    "{\"id\":\"wiki-staff\",\"route\":\"wiki\",\"effect\":\"allow\",\"when\":{\"all\":["
    "{\"group\":\"staff\"},{\"device_tier\":{\"at_least\":\"trusted\"}}]}},"
    "{\"id\":\"admin-net\",\"route\":\"admin\",\"effect\":\"allow\",\"when\":{\"ip\":\"10.0.0.0/"
    "8\"}},"
    "{\"id\":\"geo-de\",\"route\":\"geo\",\"effect\":\"allow\",\"when\":{\"country\":\"DE\"}},"
    "{\"id\":\"geo-unknown\",\"route\":\"geo\",\"effect\":\"allow\",\"when\":{\"all\":["
    "{\"country\":\"unknown\"},{\"path\":{\"prefix\":\"/public\"}}]}},"
    "{\"id\":\"try-contractors\",\"route\":\"wiki\",\"effect\":\"deny\",\"mode\":\"monitor\","
    "\"when\":{\"group\":\"contractors\"}}"
    "]}";

static const char *DIR_V1 =
    "{\"version\":\"d1\",\"groups\":{\"staff\":{},\"eng\":{\"member_of\":[\"staff\"]},"
    "\"contractors\":{},\"oncall\":{}},"
    "\"users\":{\"alice@corp.example\":{\"groups\":[\"eng\",\"oncall\"],\"subject\":\"00u1\"},"
    "\"bob@corp.example\":{\"groups\":[\"contractors\"]}}}";

/* alice is no longer in eng (so not in staff) */
static const char *DIR_V2 =
    "{\"version\":\"d2\",\"groups\":{\"staff\":{},\"eng\":{\"member_of\":[\"staff\"]},"
    "\"contractors\":{},\"oncall\":{}},"
    "\"users\":{\"alice@corp.example\":{\"groups\":[\"oncall\"],\"subject\":\"00u1\"},"
    "\"bob@corp.example\":{\"groups\":[\"contractors\"]}}}";

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", tmpdir, name);
}

/* Replace a file the way editors and deploy tools should: write, rename. */
static void put_file(const char *name, const char *text)
{
    char p[512], t[520];
    FILE *f;

    path_of(p, sizeof(p), name);
    snprintf(t, sizeof(t), "%s.tmp", p);
    f = fopen(t, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(rename(t, p), 0);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/zt-authz-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    base = event_base_new();
    if (base == NULL)
        return -1;
    put_file("rules.json", RULES);
    put_file("dir.json", DIR_V1);
    return 0;
}

static int teardown(void **state)
{
    char cmd[400];

    (void)state;
    authz_stop();
    event_base_free(base);
    base = NULL;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A config with routes wiki, admin, geo and the given "policy" members
 * (without braces; NULL: no policy section). */
static struct conf *make_conf(const char *policy)
{
    char text[4096], err[1024] = "";
    struct conf *c = NULL;

    snprintf(text, sizeof(text),
             "{\"listen\":[{\"address\":\"127.0.0.1:8443\"}],"
             "\"tls\":{\"certificate\":\"s.crt\",\"key\":\"s.key\",\"device_ca\":\"ca.crt\"},"
             "\"routes\":["
             "{\"name\":\"wiki\",\"host\":\"wiki.test\",\"upstream\":\"http://127.0.0.1:9000\"},"
             "{\"name\":\"admin\",\"host\":\"admin.test\",\"upstream\":\"http://127.0.0.1:9000\"},"
             "{\"name\":\"geo\",\"host\":\"geo.test\",\"upstream\":\"http://127.0.0.1:9000\"}]"
             "%s%s%s}",
             policy != NULL ? ",\"policy\":{" : "", policy != NULL ? policy : "",
             policy != NULL ? "}" : "");
    if (conf_parse(text, strlen(text), "zt.json", tmpdir, CONF_NO_FS, &c, err, sizeof(err)) == -1)
        fail_msg("conf: %s", err);
    return c;
}

static void start(const char *policy)
{
    struct conf *c = make_conf(policy);
    char err[1024] = "";

    if (authz_validate(c, err, sizeof(err)) == -1)
        fail_msg("validate: %s", err);
    if (authz_start(base, c, err, sizeof(err)) == -1)
        fail_msg("start: %s", err);
    conf_unref(c);
}

static struct sockaddr_in6 peer_buf;

static const struct sockaddr *v4(const char *ip)
{
    struct sockaddr_in *in = (struct sockaddr_in *)&peer_buf;

    memset(&peer_buf, 0, sizeof(peer_buf));
    in->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
    return (const struct sockaddr *)in;
}

static const struct sockaddr *v6(const char *ip)
{
    memset(&peer_buf, 0, sizeof(peer_buf));
    peer_buf.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, ip, &peer_buf.sin6_addr), 1);
    return (const struct sockaddr *)&peer_buf;
}

static void alice(struct authz_input *in, const char *route)
{
    memset(in, 0, sizeof(*in));
    in->route = route;
    in->user_sub = "00u1";
    in->user_email = "alice@corp.example";
    in->has_identity = 1;
    in->auth_time = NOW - 60;
    in->device_id = "dev-1";
    in->device_tier = authz_tier_index("trusted");
    in->device_score = 80;
    in->peer = v4("192.0.2.10");
    in->method = "GET";
    in->path = "/";
    in->path_len = 1;
    in->now = NOW;
}

static struct authz_result res;

static enum policy_effect eval(const struct authz_input *in)
{
    authz_evaluate(in, &res);
    return res.decision.effect;
}

/* Run the loop (the 1 s file timer, the URL poller) until cond holds or
 * about ms have passed. */
static int wait_for(int (*cond)(void), int ms)
{
    int i;

    for (i = 0; i < ms / 20; i++) {
        if (cond())
            return 1;
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(20000);
    }
    return cond();
}

static int alice_denied_on_wiki(void)
{
    struct authz_input in;

    alice(&in, "wiki");
    return eval(&in) == POLICY_DENY;
}

static int alice_allowed_on_wiki(void)
{
    struct authz_input in;

    alice(&in, "wiki");
    return eval(&in) == POLICY_ALLOW;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_not_started_denies(void **state)
{
    struct authz_input in;

    (void)state;
    alice(&in, "wiki");
    assert_false(authz_enabled());
    assert_int_equal(eval(&in), POLICY_DENY);
    assert_string_equal(res.decision.rule_id, "authz-not-running");
}

static void test_no_policy_allows(void **state)
{
    struct authz_input in;

    (void)state;
    start(NULL);
    assert_false(authz_enabled());
    assert_int_equal(authz_tier_index("trusted"), -1);
    alice(&in, "wiki");
    assert_int_equal(eval(&in), POLICY_ALLOW);
    assert_string_equal(res.decision.rule_id, "no-policy");
    assert_string_equal(res.client_ip, "192.0.2.10");
    assert_int_equal(res.decision.nreasons, 0);
}

static void test_allow_deny_with_rule_ids(void **state)
{
    struct authz_input in;
    struct authz_stats st;

    (void)state;
    start("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},\"audit_log\":\"off\"");
    assert_true(authz_enabled());
    assert_false(authz_deny_details());
    assert_int_equal(authz_tier_index("trusted"), 3);
    assert_int_equal(authz_tier_index("nope"), -1);

    alice(&in, "wiki");
    assert_int_equal(eval(&in), POLICY_ALLOW);
    assert_string_equal(res.decision.rule_id, "wiki-staff");
    assert_string_equal(res.decision.version, "v1");
    assert_string_equal(res.groups, "eng,oncall,staff");
    assert_string_equal(res.client_ip, "192.0.2.10");
    assert_string_equal(res.country, "unknown"); /* no GeoIP database */
    assert_true(res.decision.nreasons >= 1);
    assert_string_equal(policy_decision_reason(&res.decision, 0), "group staff: member");

    /* too low a tier: default deny, saying why */
    in.device_tier = authz_tier_index("basic");
    assert_int_equal(eval(&in), POLICY_DENY);
    assert_string_equal(res.decision.rule_id, "default-deny");
    assert_non_null(
        strstr(policy_decision_reason(&res.decision, 0), "device_tier basic < trusted"));

    /* found by e-mail alone, case-insensitively */
    alice(&in, "wiki");
    in.user_sub = "someone-else";
    in.user_email = "Alice@Corp.Example";
    assert_int_equal(eval(&in), POLICY_ALLOW);

    /* bob: not staff; the monitor rule notes what it would have done */
    alice(&in, "wiki");
    in.user_sub = "00u9";
    in.user_email = "bob@corp.example";
    assert_int_equal(eval(&in), POLICY_DENY);
    assert_string_equal(res.decision.rule_id, "default-deny");
    assert_string_equal(res.groups, "contractors");
    assert_int_equal(res.decision.nmonitor, 1);
    assert_string_equal(res.decision.monitor[0].rule_id, "try-contractors");
    assert_int_equal(res.decision.monitor[0].matched, 1);

    /* no identity: no groups */
    alice(&in, "wiki");
    in.has_identity = 0;
    assert_int_equal(eval(&in), POLICY_DENY);
    assert_string_equal(res.groups, "");

    /* a route the rules do not scope: only unscoped rules, so default deny */
    alice(&in, "no-such-route");
    assert_int_equal(eval(&in), POLICY_DENY);
    assert_string_equal(res.decision.rule_id, "default-deny");

    /* the query is not part of the path the rules see */
    alice(&in, "geo");
    in.path = "/public/x?y=1";
    in.path_len = strlen(in.path);
    assert_int_equal(eval(&in), POLICY_ALLOW);
    assert_string_equal(res.decision.rule_id, "geo-unknown");

    authz_stats(&st);
    assert_int_equal(st.enabled, 1);
    assert_int_equal(st.rules, 6);
    assert_string_equal(st.rules_version, "v1");
    assert_int_equal(st.directory_loaded, 1);
    assert_int_equal(st.directory_users, 2);
    assert_string_equal(st.directory_version, "d1");
}

static void test_groups_budget(void **state)
{
    struct authz_input in;

    (void)state;
    start("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},\"audit_log\":\"off\"");
    alice(&in, "wiki");
    in.groups_budget = 10; /* "eng,oncall" fits exactly, ",staff" does not */
    assert_int_equal(eval(&in), POLICY_ALLOW);
    assert_string_equal(res.groups, "eng,oncall");
    assert_int_equal(res.groups_dropped, 1);
    in.groups_budget = 9; /* "eng" then "oncall" would be 10: skipped, "staff" fits */
    eval(&in);
    assert_string_equal(res.groups, "eng,staff");
    assert_int_equal(res.groups_dropped, 1);
    in.groups_budget = 2;
    eval(&in);
    assert_string_equal(res.groups, "");
    assert_int_equal(res.groups_dropped, 3);
}

/* route_groups: only the groups the route's rules name; groups (all of
 * them, for decision records and what-if) and the rules are unaffected. */
static void test_route_groups(void **state)
{
    struct authz_input in;

    (void)state;
    start("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},\"audit_log\":\"off\"");
    alice(&in, "wiki"); /* eng, oncall, staff (through eng) */
    assert_int_equal(eval(&in), POLICY_ALLOW);
    assert_string_equal(res.groups, "eng,oncall,staff");
    /* wiki's rules name staff and contractors (a monitor rule) */
    assert_string_equal(res.route_groups, "staff");
    assert_int_equal(res.route_groups_dropped, 0);
    in.groups_budget = 4; /* "staff" does not fit */
    eval(&in);
    assert_string_equal(res.route_groups, "");
    assert_int_equal(res.route_groups_dropped, 1);
    alice(&in, "admin"); /* no rule of admin names a group */
    eval(&in);
    assert_string_equal(res.groups, "eng,oncall,staff");
    assert_string_equal(res.route_groups, "");
    alice(&in, "nosuchroute"); /* unknown route: the unscoped rules, no groups */
    eval(&in);
    assert_string_equal(res.route_groups, "");
    /* bob: contractors, named by wiki's monitor rule */
    alice(&in, "wiki");
    in.user_sub = "bob";
    in.user_email = "bob@corp.example";
    eval(&in);
    assert_string_equal(res.route_groups, "contractors");
    /* no identity: nothing */
    in.has_identity = 0;
    eval(&in);
    assert_string_equal(res.groups, "");
    assert_string_equal(res.route_groups, "");
}

/* A user removed from a group is denied on the next request once the
 * directory file is read again: no new login, no token expiry. */
static void test_directory_change_is_live(void **state)
{
    struct authz_stats st;
    uint64_t gen;

    (void)state;
    start("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},\"audit_log\":\"off\"");
    assert_true(alice_allowed_on_wiki());
    gen = authz_generation();
    put_file("dir.json", DIR_V2);
    assert_true(wait_for(alice_denied_on_wiki, 5000));
    assert_true(authz_generation() > gen);
    assert_string_equal(res.decision.rule_id, "default-deny");
    assert_string_equal(res.groups, "oncall");
    authz_stats(&st);
    assert_string_equal(st.directory_version, "d2");
    assert_int_equal(st.directory_loads, 1);

    /* a broken directory keeps the last good one */
    put_file("dir.json", "{\"groups\":{},\"users\":{\"x@y.z\":{\"groups\":[\"nope\"]}}}");
    for (int i = 0; i < 100; i++) {
        authz_stats(&st);
        if (st.directory_refused > 0)
            break;
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(20000);
    }
    assert_int_equal(st.directory_refused, 1);
    assert_non_null(strstr(st.last_error, "unknown group"));
    assert_string_equal(st.directory_version, "d2");

    /* and back: allowed again */
    put_file("dir.json", DIR_V1);
    assert_true(wait_for(alice_allowed_on_wiki, 5000));
}

static int rules_refused_once(void)
{
    struct authz_stats st;

    authz_stats(&st);
    return st.rules_refused == 1;
}

static int rules_v2(void)
{
    struct authz_stats st;

    authz_stats(&st);
    return strcmp(st.rules_version, "v2") == 0;
}

/* A broken rules file never goes live: the old rules keep deciding. */
static void test_broken_rules_keep_old(void **state)
{
    struct authz_stats st;

    (void)state;
    start("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},\"audit_log\":\"off\"");
    put_file("rules.json", "{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"group\":"
                           "\"stafff\"}}]}");
    assert_true(wait_for(rules_refused_once, 5000));
    authz_stats(&st);
    assert_non_null(strstr(st.last_error, "rules.json: $.rules[0] (id \"a\").when.group"));
    assert_non_null(strstr(st.last_error, "keeping version \"v1\""));
    assert_true(alice_allowed_on_wiki());
    assert_string_equal(res.decision.rule_id, "wiki-staff");

    /* syntax error too */
    put_file("rules.json", "{\"rules\": [");
    for (int i = 0; i < 150; i++) {
        authz_stats(&st);
        if (st.rules_refused == 2)
            break;
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(20000);
    }
    assert_int_equal(st.rules_refused, 2);
    assert_true(alice_allowed_on_wiki());

    /* a good file goes live */
    put_file("rules.json", "{\"version\":\"v2\",\"rules\":[{\"id\":\"only-admin\",\"route\":"
                           "\"admin\",\"effect\":\"allow\",\"when\":{\"group\":\"staff\"}}]}");
    assert_true(wait_for(rules_v2, 5000));
    assert_true(alice_denied_on_wiki());
    assert_string_equal(res.decision.version, "v2");
}

/* X-Forwarded-For is believed only from a trusted proxy, and then only up
 * to the right-most address that is not a trusted proxy. */
static void test_trusted_proxies(void **state)
{
    static const struct {
        int v6;
        const char *peer;
        const char *xff;
        const char *client;
        enum policy_effect effect;
    } cases[] = {
        /* untrusted peer: its header is ignored */
        {0, "127.0.0.9", "10.1.2.3", "127.0.0.9", POLICY_DENY},
        /* trusted peer: believed */
        {0, "127.0.0.5", "10.1.2.3", "10.1.2.3", POLICY_ALLOW},
        /* no header from a trusted peer: the peer */
        {0, "127.0.0.5", NULL, "127.0.0.5", POLICY_DENY},
        /* trusted hops are skipped from the right */
        {0, "127.0.0.5", "10.9.9.9, 127.0.0.6", "10.9.9.9", POLICY_ALLOW},
        /* a client-written left part is never looked at */
        {0, "127.0.0.5", "10.1.1.1, 192.0.2.1", "192.0.2.1", POLICY_DENY},
        {0, "127.0.0.5", "garbage, 10.1.1.1", "10.1.1.1", POLICY_ALLOW},
        /* ports, brackets, IPv6, v4-mapped, empty elements */
        {0, "127.0.0.5", "10.2.3.4:5678", "10.2.3.4", POLICY_ALLOW},
        {0, "127.0.0.5", "[2001:db8::1]:443", "2001:db8::1", POLICY_DENY},
        {0, "127.0.0.5", "2001:db8::2", "2001:db8::2", POLICY_DENY},
        {0, "127.0.0.5", "::ffff:10.0.0.7", "10.0.0.7", POLICY_ALLOW},
        {0, "127.0.0.5", " 10.3.3.3 ,, ", "10.3.3.3", POLICY_ALLOW},
        {1, "::ffff:127.0.0.5", "10.1.2.3", "10.1.2.3", POLICY_ALLOW},
        {1, "::1", "10.1.2.3", "10.1.2.3", POLICY_ALLOW},
        {1, "2001:db8::5", "10.1.2.3", "2001:db8::5", POLICY_DENY},
        /* every entry a trusted proxy: the left-most */
        {0, "127.0.0.5", "127.0.0.7, 127.0.0.6", "127.0.0.7", POLICY_DENY},
        /* unparseable from a trusted proxy: unknown, never the proxy itself */
        {0, "127.0.0.5", "10.1.1.1, unknown", "", POLICY_DENY},
        {0, "127.0.0.5", "10.1.1.1, 1.2.3", "", POLICY_DENY},
        {0, "127.0.0.5", "[10.1.1.1]", "", POLICY_DENY},
    };
    struct authz_input in;
    size_t i;

    (void)state;
    start("\"rules\":\"rules.json\",\"trusted_proxies\":[\"127.0.0.5/32\",\"127.0.0.6\","
          "\"127.0.0.7\",\"::1/128\"],\"audit_log\":\"off\"");
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        alice(&in, "admin");
        in.peer = cases[i].v6 ? v6(cases[i].peer) : v4(cases[i].peer);
        in.xff = cases[i].xff;
        in.xff_len = cases[i].xff != NULL ? strlen(cases[i].xff) : 0;
        eval(&in);
        if (strcmp(res.client_ip, cases[i].client) != 0 || res.decision.effect != cases[i].effect)
            fail_msg("case %zu (peer %s, xff \"%s\"): client \"%s\" effect %s, expected \"%s\" %s",
                     i, cases[i].peer, cases[i].xff ? cases[i].xff : "-", res.client_ip,
                     policy_effect_name(res.decision.effect), cases[i].client,
                     policy_effect_name(cases[i].effect));
        if (cases[i].client[0] == '\0') {
            /* no address, no country: a country deny rule holds (fail closed) */
            assert_string_equal(res.country, "");
            assert_string_equal(res.decision.rule_id, "block-embargoed");
        }
    }
    /* more than AUTHZ_XFF_HOPS_MAX trusted hops: unknown */
    {
        char xff[1024] = "10.1.1.1";
        for (i = 0; i < AUTHZ_XFF_HOPS_MAX; i++)
            strcat(xff, ", 127.0.0.6");
        alice(&in, "admin");
        in.peer = v4("127.0.0.5");
        in.xff = xff;
        in.xff_len = strlen(xff);
        eval(&in);
        assert_string_equal(res.client_ip, "");
    }
}

/* Where is the writer? Next to this file: ../../integration. */
static void geoip_make(const char *out, const char *maps)
{
    char dir[512], cmd[1536];
    const char *src = __FILE__, *cut = strstr(src, "unit/proxy/authz_test.c");

    if (cut != NULL && src[0] == '/')
        snprintf(dir, sizeof(dir), "%.*sintegration", (int)(cut - src), src);
    else
        snprintf(dir, sizeof(dir), "../integration");
    snprintf(cmd, sizeof(cmd), "perl '%s/geoip_writer.pl' '%s' %s", dir, out, maps);
    if (system(cmd) != 0)
        fail_msg("%s failed: is libmaxmind-db-writer-perl installed (tools/setup.sh)?", cmd);
}

static int geo_reloaded(void)
{
    struct authz_input in;

    alice(&in, "geo");
    in.peer = v4("127.0.0.9");
    eval(&in);
    return strcmp(res.country, "FR") == 0;
}

static void test_geoip_countries(void **state)
{
    static const struct {
        const char *peer;
        const char *country;
        uint32_t asn;
        enum policy_effect effect;
        const char *rule;
    } cases[] = {
        {"127.0.0.2", "DE", 0, POLICY_ALLOW, "geo-de"},
        {"127.0.0.3", "KP", 0, POLICY_DENY, "block-embargoed"},
        {"10.20.30.40", "US", 64500, POLICY_DENY, "default-deny"},
        {"127.0.0.9", "unknown", 0, POLICY_DENY, "default-deny"},
    };
    char db[512], err[1024];
    struct authz_input in;
    struct authz_stats st;
    struct conf *c;
    size_t i;

    (void)state;
    path_of(db, sizeof(db), "geo.mmdb");
    geoip_make(db, "");
    start("\"rules\":\"rules.json\",\"geoip\":\"geo.mmdb\",\"audit_log\":\"off\"");
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        alice(&in, "geo");
        in.peer = v4(cases[i].peer);
        eval(&in);
        if (strcmp(res.country, cases[i].country) != 0 || res.asn != cases[i].asn ||
            res.decision.effect != cases[i].effect ||
            strcmp(res.decision.rule_id, cases[i].rule) != 0)
            fail_msg("%s: country %s asn %u %s by %s", cases[i].peer, res.country, res.asn,
                     policy_effect_name(res.decision.effect), res.decision.rule_id);
    }
    /* the same client over IPv6 (v4-mapped) */
    alice(&in, "geo");
    in.peer = v6("::ffff:127.0.0.2");
    eval(&in);
    assert_string_equal(res.country, "DE");
    assert_string_equal(res.client_ip, "127.0.0.2");
    /* "unknown" is a value rules can name */
    alice(&in, "geo");
    in.peer = v4("127.0.0.9");
    in.path = "/public/a";
    in.path_len = strlen(in.path);
    assert_int_equal(eval(&in), POLICY_ALLOW);
    assert_string_equal(res.decision.rule_id, "geo-unknown");

    /* the database is reloaded when its file changes */
    geoip_make(db, "127.0.0.9/32=FR 127.0.0.2/32=DE");
    assert_true(wait_for(geo_reloaded, 5000));
    authz_stats(&st);
    assert_int_equal(st.geoip_loads, 1);

    /* a broken database is refused; the last good one stays */
    put_file("geo.mmdb", "not a database");
    for (i = 0; i < 150; i++) {
        authz_stats(&st);
        if (st.geoip_refused > 0)
            break;
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(20000);
    }
    assert_int_equal(st.geoip_refused, 1);
    assert_true(geo_reloaded());

    /* and validation refuses it */
    c = make_conf("\"rules\":\"rules.json\",\"geoip\":\"geo.mmdb\"");
    assert_int_equal(authz_validate(c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "geo.mmdb: cannot open the GeoIP database"));
    conf_unref(c);
}

static void test_validate_errors(void **state)
{
    static const struct {
        const char *rules;
        const char *expect;
    } cases[] = {
        {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"group\":\"stafff\"}}]}",
         "rules.json: $.rules[0] (id \"a\").when.group: unknown group \"stafff\""},
        {"{\"rules\":[{\"id\":\"a\",\"route\":\"wik\",\"effect\":\"allow\",\"when\":{\"group\":"
         "\"staff\"}}]}",
         "unknown route \"wik\""},
        {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"device_tier\":{\"at_least\":"
         "\"hgh\"}}}]}",
         "unknown tier \"hgh\""},
        {"{\"rules\":[", "JSON syntax error"},
    };
    char err[1024];
    struct conf *c;
    size_t i;

    (void)state;
    c = make_conf("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"}");
    assert_int_equal(authz_validate(c, err, sizeof(err)), 0);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        put_file("rules.json", cases[i].rules);
        err[0] = '\0';
        assert_int_equal(authz_validate(c, err, sizeof(err)), -1);
        if (strstr(err, cases[i].expect) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].expect);
        /* and the runtime refuses to start on it */
        assert_int_equal(authz_start(base, c, err, sizeof(err)), -1);
        assert_false(authz_enabled());
    }
    put_file("rules.json", RULES);
    put_file("dir.json",
             "{\"groups\":{\"a\":{\"member_of\":[\"b\"]},\"b\":{\"member_of\":[\"a\"]}},"
             "\"users\":{}}");
    assert_int_equal(authz_validate(c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cycle"));
    conf_unref(c);

    /* a missing rules file */
    c = make_conf("\"rules\":\"missing.json\"");
    assert_int_equal(authz_validate(c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "missing.json: cannot read"));
    conf_unref(c);

    /* no section: nothing to check */
    c = make_conf(NULL);
    assert_int_equal(authz_validate(c, err, sizeof(err)), 0);
    conf_unref(c);
}

static void test_conf_section(void **state)
{
    static const struct {
        const char *policy;
        const char *expect;
    } bad[] = {
        {"\"directory\":{\"file\":\"d.json\"}", "$.policy.rules: required key is missing"},
        {"\"rules\":\"r.json\",\"frob\":1", "$.policy.frob: unknown key"},
        {"\"rules\":\"r.json\",\"directory\":{\"file\":\"a\",\"url\":\"https://x\"}",
         "$.policy.directory: expected exactly one of"},
        {"\"rules\":\"r.json\",\"directory\":{}", "$.policy.directory: expected exactly one of"},
        {"\"rules\":\"r.json\",\"directory\":{\"file\":\"a\",\"poll\":\"5s\"}",
         "$.policy.directory.poll: only valid with \"url\""},
        {"\"rules\":\"r.json\",\"directory\":{\"url\":\"ftp://x\"}",
         "$.policy.directory.url: expected an http:// or https:// URL"},
        {"\"rules\":\"r.json\",\"directory\":{\"url\":\"https://x\",\"poll\":\"10ms\"}",
         "$.policy.directory.poll: duration out of range"},
        {"\"rules\":\"r.json\",\"directory\":{\"url\":\"https://x\",\"x\":1}",
         "$.policy.directory.x: unknown key"},
        {"\"rules\":\"r.json\",\"trusted_proxies\":\"10.0.0.1\"",
         "$.policy.trusted_proxies: expected an array"},
        {"\"rules\":\"r.json\",\"trusted_proxies\":[\"10.0.0.1/8\"]",
         "$.policy.trusted_proxies[0]: \"10.0.0.1/8\" has bits set after the prefix"},
        {"\"rules\":\"r.json\",\"trusted_proxies\":[\"10.0.0.0/8\",\"proxy.local\"]",
         "$.policy.trusted_proxies[1]: expected an IPv4 or IPv6 address or CIDR"},
        {"\"rules\":\"r.json\",\"trusted_proxies\":[\"10.0.0.0/33\"]",
         "$.policy.trusted_proxies[0]: expected an IPv4 or IPv6"},
        {"\"rules\":\"r.json\",\"trusted_proxies\":[5]",
         "$.policy.trusted_proxies[0]: expected a string"},
        {"\"rules\":\"r.json\",\"audit_log\":\"\"", "$.policy.audit_log: expected a file path"},
        {"\"rules\":\"r.json\",\"deny_details\":\"yes\"",
         "$.policy.deny_details: expected true or false"},
        {"\"rules\":5", "$.policy.rules: expected a string"},
    };
    char text[2048], err[1024];
    struct conf *c;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text),
                 "{\"listen\":[{\"address\":\"127.0.0.1:8443\"}],"
                 "\"tls\":{\"certificate\":\"s.crt\",\"key\":\"s.key\",\"device_ca\":\"ca.crt\"},"
                 "\"routes\":[{\"name\":\"wiki\",\"host\":\"wiki.test\",\"upstream\":"
                 "\"http://127.0.0.1:9000\"}],\"policy\":{%s}}",
                 bad[i].policy);
        c = NULL;
        err[0] = '\0';
        assert_int_equal(
            conf_parse(text, strlen(text), "zt.json", "/etc/zt", CONF_NO_FS, &c, err, sizeof(err)),
            -1);
        if (strstr(err, bad[i].expect) == NULL)
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, bad[i].expect);
    }

    /* defaults and resolution */
    c = make_conf("\"rules\":\"rules.json\"");
    assert_non_null(c->policy_rules);
    assert_non_null(strstr(c->policy_rules, "/rules.json"));
    assert_null(c->policy_dir_file);
    assert_null(c->policy_dir_url);
    assert_null(c->policy_geoip);
    assert_int_equal(c->npolicy_trusted_proxies, 0);
    assert_string_equal(c->policy_audit_log, "stdout");
    assert_int_equal(c->policy_deny_details, 0);
    conf_unref(c);
    c = make_conf("\"rules\":\"/abs/rules.json\",\"directory\":{\"url\":\"https://dir.test/d\"},"
                  "\"trusted_proxies\":[\"10.0.0.0/8\",\"2001:db8::/32\",\"192.0.2.1\"],"
                  "\"audit_log\":\"audit.log\",\"deny_details\":true");
    assert_string_equal(c->policy_rules, "/abs/rules.json");
    assert_string_equal(c->policy_dir_url, "https://dir.test/d");
    assert_int_equal(c->policy_dir_poll_ms, 30000);
    assert_int_equal(c->policy_dir_timeout_ms, 10000);
    assert_int_equal(c->npolicy_trusted_proxies, 3);
    assert_int_equal(c->policy_trusted_proxies[0].bits, 8);
    assert_int_equal(c->policy_trusted_proxies[1].family, AF_INET6);
    assert_int_equal(c->policy_trusted_proxies[2].bits, 32);
    assert_non_null(strstr(c->policy_audit_log, "/audit.log"));
    assert_int_equal(c->policy_deny_details, 1);
    conf_unref(c);
    c = make_conf(NULL);
    assert_null(c->policy_rules);
    conf_unref(c);
}

/* SIGHUP: a new config turns the rules off and on again. */
static void test_reconfigure(void **state)
{
    struct authz_input in;
    struct conf *c;
    char err[1024];

    (void)state;
    start("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},\"audit_log\":\"off\"");
    assert_true(alice_allowed_on_wiki());

    c = make_conf(NULL);
    assert_int_equal(authz_reconfigure(c, err, sizeof(err)), 0);
    conf_unref(c);
    assert_false(authz_enabled());
    alice(&in, "admin");
    assert_int_equal(eval(&in), POLICY_ALLOW);
    assert_string_equal(res.decision.rule_id, "no-policy");

    /* a config whose rules do not compile is refused, nothing changes */
    put_file("rules2.json",
             "{\"rules\":[{\"id\":\"x\",\"effect\":\"allow\",\"when\":{\"grup\":1}}]}");
    c = make_conf("\"rules\":\"rules2.json\",\"audit_log\":\"off\"");
    assert_int_equal(authz_reconfigure(c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "rules2.json: $.rules[0] (id \"x\").when.grup"));
    conf_unref(c);
    assert_false(authz_enabled());

    c = make_conf("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},"
                  "\"audit_log\":\"off\",\"deny_details\":true");
    assert_int_equal(authz_reconfigure(c, err, sizeof(err)), 0);
    conf_unref(c);
    assert_true(authz_enabled());
    assert_true(authz_deny_details());
    assert_true(alice_allowed_on_wiki());
    assert_int_equal(eval(&in), POLICY_DENY); /* admin from 192.0.2.10 */
}

/* SIGHUP in two steps: nothing changes before the commit; a rules file
 * with the same size (only the version differs) is compiled, not kept. */
static void test_prepare_commit(void **state)
{
    struct authz_prepared *p = NULL;
    struct authz_stats st;
    struct conf *c;
    char err[1024], *v9 = strdup(RULES), *at;

    (void)state;
    assert_non_null(v9);
    at = strstr(v9, "\"v1\"");
    assert_non_null(at);
    at[2] = '9';
    start("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},\"audit_log\":\"off\"");
    c = make_conf("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},"
                  "\"audit_log\":\"off\"");

    /* unchanged: prepared, then dropped */
    assert_int_equal(authz_prepare(c, &p, err, sizeof(err)), 0);
    assert_non_null(p);
    authz_prepared_free(p);

    /* changed, same size: nothing live until the commit */
    put_file("rules.json", v9);
    assert_int_equal(authz_prepare(c, &p, err, sizeof(err)), 0);
    authz_stats(&st);
    assert_string_equal(st.rules_version, "v1");
    assert_int_equal(authz_commit(p, err, sizeof(err)), 0);
    authz_stats(&st);
    assert_string_equal(st.rules_version, "v9");
    assert_true(alice_allowed_on_wiki());

    /* unchanged again: committed, the same rules decide */
    assert_int_equal(authz_prepare(c, &p, err, sizeof(err)), 0);
    assert_int_equal(authz_commit(p, err, sizeof(err)), 0);
    authz_stats(&st);
    assert_string_equal(st.rules_version, "v9");
    assert_true(alice_allowed_on_wiki());

    /* a changed directory alone: the rules are bound to the new one */
    put_file("dir.json", DIR_V2);
    assert_int_equal(authz_prepare(c, &p, err, sizeof(err)), 0);
    assert_int_equal(authz_commit(p, err, sizeof(err)), 0);
    authz_stats(&st);
    assert_string_equal(st.directory_version, "d2");
    assert_false(alice_allowed_on_wiki());

    /* a broken file fails the prepare with the file and the JSON path */
    put_file("rules.json",
             "{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"grup\":1}}]}");
    assert_int_equal(authz_prepare(c, &p, err, sizeof(err)), -1);
    assert_null(p);
    assert_non_null(strstr(err, "rules.json: $.rules[0] (id \"a\").when.grup"));
    authz_stats(&st);
    assert_string_equal(st.rules_version, "v9");
    conf_unref(c);
    free(v9);
}

/* The audit line: exact fields, chained, no query. */
static void test_audit_line(void **state)
{
    struct evbuffer *b = evbuffer_new();
    struct authz_input in;
    char p[512], err[256], *line;
    json_t *o;
    json_error_t jerr;
    size_t len;
    FILE *f;

    (void)state;
    start("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},"
          "\"audit_log\":\"audit.log\"");
    alice(&in, "wiki");
    in.path = "/page?session=secret";
    in.path_len = strlen(in.path);
    eval(&in);
    authz_audit(b, "req-1", &in, NULL, &res);
    alice(&in, "wiki");
    in.user_email = "bob@corp.example";
    in.user_sub = "00u9";
    eval(&in);
    authz_audit(b, "req-2", &in, NULL, &res);
    auditlog_submit(b);
    auditlog_flush();
    evbuffer_free(b);

    path_of(p, sizeof(p), "audit.log");
    assert_int_equal(auditlog_verify_file(p, err, sizeof(err)), 0);
    f = fopen(p, "r");
    assert_non_null(f);
    line = NULL;
    len = 0;
    assert_true(getline(&line, &len, f) > 0);
    assert_null(strstr(line, "secret"));
    o = json_loads(line, 0, &jerr);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "request_id")), "req-1");
    assert_string_equal(json_string_value(json_object_get(o, "user")), "00u1");
    assert_string_equal(json_string_value(json_object_get(o, "email")), "alice@corp.example");
    assert_string_equal(json_string_value(json_object_get(o, "device")), "dev-1");
    assert_string_equal(json_string_value(json_object_get(o, "tier")), "trusted");
    assert_int_equal(json_integer_value(json_object_get(o, "score")), 80);
    assert_string_equal(json_string_value(json_object_get(o, "client")), "192.0.2.10");
    assert_string_equal(json_string_value(json_object_get(o, "country")), "unknown");
    assert_string_equal(json_string_value(json_object_get(o, "route")), "wiki");
    assert_string_equal(json_string_value(json_object_get(o, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(o, "path")), "/page");
    assert_string_equal(json_string_value(json_object_get(o, "effect")), "allow");
    assert_string_equal(json_string_value(json_object_get(o, "rule")), "wiki-staff");
    assert_string_equal(json_string_value(json_object_get(o, "version")), "v1");
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "reasons"), 0)),
                        "group staff: member");
    assert_true(json_is_number(json_object_get(o, "eval_us")));
    json_decref(o);
    assert_true(getline(&line, &len, f) > 0);
    o = json_loads(line, 0, &jerr);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "effect")), "deny");
    assert_string_equal(json_string_value(json_object_get(o, "rule")), "default-deny");
    assert_int_equal(json_array_size(json_object_get(o, "monitor")), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(o, "monitor"), 0), "would_decide")),
                        "deny");
    json_decref(o);
    free(line);
    fclose(f);
}

/* Workers evaluate without pause while the main loop publishes new
 * directories: every decision is consistent, and each worker sees the
 * change on its next request after the publish. */
struct reader {
    pthread_t t;
    int release; /* authz_thread_release() at the end, else the destructor */
    _Atomic int stop;
    _Atomic long allows, denies;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    struct authz_result *out = malloc(sizeof(*out));
    struct authz_input in;
    struct sockaddr_in sa;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, "192.0.2.10", &sa.sin_addr);
    while (!atomic_load(&r->stop)) {
        memset(&in, 0, sizeof(in));
        in.route = "wiki";
        in.user_sub = "00u1";
        in.user_email = "alice@corp.example";
        in.has_identity = 1;
        in.device_tier = 3;
        in.device_score = 80;
        in.peer = (const struct sockaddr *)&sa;
        in.method = "GET";
        in.path = "/";
        in.path_len = 1;
        in.now = NOW;
        authz_evaluate(&in, out);
        if (out->decision.effect == POLICY_ALLOW) {
            /* an allow always comes with the groups that made it */
            if (strcmp(out->decision.rule_id, "wiki-staff") != 0 ||
                strstr(out->groups, "staff") == NULL)
                abort();
            atomic_fetch_add(&r->allows, 1);
        } else {
            if (strcmp(out->decision.rule_id, "default-deny") != 0 ||
                strstr(out->groups, "staff") != NULL)
                abort();
            atomic_fetch_add(&r->denies, 1);
        }
    }
    if (r->release)
        authz_thread_release();
    free(out);
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    struct reader r[2];
    long a0, d0;
    int i, k;

    (void)state;
    start("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},\"audit_log\":\"off\"");
    memset(r, 0, sizeof(r));
    for (i = 0; i < 2; i++) {
        r[i].release = i;
        assert_int_equal(pthread_create(&r[i].t, NULL, reader_main, &r[i]), 0);
    }
    for (k = 0; k < 4; k++) {
        put_file("dir.json", k % 2 == 0 ? DIR_V2 : DIR_V1);
        /* wait until both workers have decided the new way */
        a0 = atomic_load(&r[0].allows) + atomic_load(&r[1].allows);
        d0 = atomic_load(&r[0].denies) + atomic_load(&r[1].denies);
        for (i = 0; i < 250; i++) {
            long a = atomic_load(&r[0].allows) + atomic_load(&r[1].allows);
            long d = atomic_load(&r[0].denies) + atomic_load(&r[1].denies);
            if (k % 2 == 0 ? d > d0 + 1000 : a > a0 + 1000)
                break;
            event_base_loop(base, EVLOOP_NONBLOCK);
            usleep(20000);
        }
        assert_true(i < 250);
    }
    for (i = 0; i < 2; i++) {
        atomic_store(&r[i].stop, 1);
        pthread_join(r[i].t, NULL);
    }
    assert_true(r[0].allows > 0 && r[0].denies > 0);
    assert_true(r[1].allows > 0 && r[1].denies > 0);
}

/* ---- directory from a URL ------------------------------------------------------ */

static const char *served_dir;
static int served_count, served_304;

static void serve_dir(struct evhttp_request *req, void *arg)
{
    struct evbuffer *out = evbuffer_new();
    const char *inm = evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match");
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    char etag[32];

    (void)arg;
    served_count++;
    if (auth == NULL || strcmp(auth, "Bearer t0ken") != 0) {
        evhttp_send_reply(req, 401, "Unauthorized", out);
        evbuffer_free(out);
        return;
    }
    snprintf(etag, sizeof(etag), "\"%zu\"", strlen(served_dir));
    if (inm != NULL && strcmp(inm, etag) == 0) {
        served_304++;
        evhttp_send_reply(req, 304, "Not Modified", out);
    } else {
        evhttp_add_header(evhttp_request_get_output_headers(req), "ETag", etag);
        evbuffer_add(out, served_dir, strlen(served_dir));
        evhttp_send_reply(req, 200, "OK", out);
    }
    evbuffer_free(out);
}

static int dir_loaded(void)
{
    struct authz_stats st;

    authz_stats(&st);
    return st.directory_loaded;
}

static int got_304(void)
{
    return served_304 > 0;
}

static void test_directory_url(void **state)
{
    struct evhttp *http = evhttp_new(base);
    struct evhttp_bound_socket *bs;
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    char policy[1024], tok[512];
    FILE *f;

    (void)state;
    evhttp_set_gencb(http, serve_dir, NULL);
    bs = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    assert_non_null(bs);
    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl);
    path_of(tok, sizeof(tok), "token");
    f = fopen(tok, "w");
    fputs("t0ken\n", f);
    fclose(f);
    chmod(tok, 0600);
    served_dir = DIR_V1;
    served_count = served_304 = 0;
    snprintf(policy, sizeof(policy),
             "\"rules\":\"rules.json\",\"directory\":{\"url\":\"http://127.0.0.1:%d/dir\","
             "\"poll\":\"1s\",\"bearer_token_file\":\"token\"},\"audit_log\":\"off\"",
             ntohs(sin.sin_port));
    start(policy);
    /* until the directory arrives nobody is in a group */
    assert_true(alice_denied_on_wiki());
    assert_true(wait_for(dir_loaded, 5000));
    assert_true(alice_allowed_on_wiki());
    /* the same document again: 304, nothing reloaded */
    assert_true(wait_for(got_304, 5000));
    /* alice leaves the group at the source */
    served_dir = DIR_V2;
    assert_true(wait_for(alice_denied_on_wiki, 5000));
    authz_stop();
    evhttp_free(http);
}

/* ---- admin additions ---------------------------------------------------------- */

static const char *RULES_OPEN = "{\"version\":\"v9\",\"rules\":["
                                "{\"id\":\"wiki-all\",\"route\":\"wiki\",\"effect\":\"allow\","
                                "\"when\":{\"group\":\"oncall\"}}]}";

static void test_admin_compile_eval_overrides(void **state)
{
    struct authz_input in;
    struct authz_result r;
    struct policy *p;
    char err[AUTHZ_ERR_MAX] = "";
    json_t *j;

    (void)state;
    start("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},\"audit_log\":\"off\"");
    /* a proposal: compiled against the live routes, not published */
    p = authz_compile_text(RULES_OPEN, strlen(RULES_OPEN), err, sizeof(err));
    assert_non_null(p);
    alice(&in, "wiki");
    in.device_tier = authz_tier_index("basic");
    assert_int_equal(eval(&in), POLICY_DENY); /* live: tier too low */
    authz_evaluate_policy(p, &in, &r);
    assert_int_equal(r.decision.effect, POLICY_ALLOW);
    assert_string_equal(r.decision.rule_id, "wiki-all");
    assert_string_equal(r.decision.version, "v9");

    /* groups override: not in oncall any more */
    in.groups_override = "staff,nosuchgroup";
    authz_evaluate_policy(p, &in, &r);
    assert_int_equal(r.decision.effect, POLICY_DENY);
    assert_string_equal(r.groups, "staff");
    in.device_tier = authz_tier_index("trusted");
    assert_int_equal(eval(&in), POLICY_ALLOW); /* the live rules honour it too */
    in.groups_override = "";
    assert_int_equal(eval(&in), POLICY_DENY);
    in.groups_override = NULL;

    /* country override */
    in.country_override = "KP";
    assert_int_equal(eval(&in), POLICY_DENY);
    assert_string_equal(res.decision.rule_id, "block-embargoed");
    assert_string_equal(res.country, "KP");
    in.country_override = NULL;

    /* explain with the proposal and with the live rules */
    j = authz_explain_json(p, &in, &r, err, sizeof(err));
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "decision")), "allow");
    assert_string_equal(json_string_value(json_object_get(j, "rule")), "wiki-all");
    json_decref(j);
    j = authz_explain_json(NULL, &in, &r, err, sizeof(err));
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "rule")), "wiki-staff");
    assert_string_equal(r.groups, "eng,oncall,staff");
    json_decref(j);
    policy_unref(p);

    /* a route that does not exist: refused with the path */
    {
        const char *t = "{\"rules\":[{\"id\":\"a\",\"route\":\"nope\",\"effect\":\"allow\","
                        "\"when\":{\"user\":\"x\"}}]}";
        p = authz_compile_text(t, strlen(t), err, sizeof(err));
    }
    assert_null(p);
    assert_non_null(strstr(err, "$.rules[0] (id \"a\").route: unknown route \"nope\""));

    assert_int_equal(authz_user_in_group("alice@corp.example", "staff"), 1);
    assert_int_equal(authz_user_in_group("ALICE@corp.example", "oncall"), 1);
    assert_int_equal(authz_user_in_group("00u1", "staff"), 1);
    assert_int_equal(authz_user_in_group("bob@corp.example", "staff"), 0);
    assert_int_equal(authz_user_in_group("alice@corp.example", "nosuch"), 0);
    assert_int_equal(authz_user_in_group("", "staff"), 0);
}

static void test_admin_validate_text(void **state)
{
    const char *bad = "{\"version\":\"x\",\"rules\":["
                      "{\"id\":\"ok\",\"effect\":\"allow\",\"when\":{\"user\":\"u\"}},"
                      "{\"id\":\"r1\",\"route\":\"wik\",\"effect\":\"allow\",\"when\":{\"user\":"
                      "\"u\"}},"
                      "{\"id\":\"ok\",\"effect\":\"allow\",\"when\":{\"user\":\"u\"}},"
                      "{\"id\":\"r3\",\"effect\":\"allow\",\"when\":{\"all\":[{\"group\":"
                      "\"nosuch\"}]}}]}";
    json_t *errs = NULL, *e;

    (void)state;
    start("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},\"audit_log\":\"off\"");
    assert_int_equal(authz_validate_text(RULES, strlen(RULES), &errs), 0);
    assert_int_equal(json_array_size(errs), 0);
    json_decref(errs);

    assert_int_equal(authz_validate_text(bad, strlen(bad), &errs), 1);
    assert_int_equal(json_array_size(errs), 3);
    e = json_array_get(errs, 0);
    assert_string_equal(json_string_value(json_object_get(e, "rule")), "r1");
    assert_string_equal(json_string_value(json_object_get(e, "path")), "$.rules[1].route");
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "unknown route"));
    e = json_array_get(errs, 1);
    assert_string_equal(json_string_value(json_object_get(e, "rule")), "ok");
    assert_string_equal(json_string_value(json_object_get(e, "path")), "$.rules[2].id");
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "duplicate id"));
    e = json_array_get(errs, 2);
    assert_string_equal(json_string_value(json_object_get(e, "path")),
                        "$.rules[3].when.all[0].group");
    json_decref(errs);

    /* top level and syntax */
    assert_int_equal(authz_validate_text("{\"rules\":[],\"x\":1}", 18, &errs), 1);
    assert_int_equal(json_array_size(errs), 1);
    assert_true(json_is_null(json_object_get(json_array_get(errs, 0), "rule")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(errs, 0), "path")), "$.x");
    json_decref(errs);
    assert_int_equal(authz_validate_text("{\"rules\":[", 10, &errs), 1);
    assert_int_equal(json_array_size(errs), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(errs, 0), "path")), "$");
    json_decref(errs);
}

static int rules_loads(void)
{
    struct authz_stats st;

    authz_stats(&st);
    return (int)st.rules_loads;
}

static void test_admin_install(void **state)
{
    char err[AUTHZ_ERR_MAX] = "", p[512];
    struct authz_input in;
    struct stat sb;
    char *text;
    size_t len;
    int loads;

    (void)state;
    start("\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"},\"audit_log\":\"off\"");
    alice(&in, "wiki");
    in.device_tier = authz_tier_index("basic");
    assert_int_equal(eval(&in), POLICY_DENY);

    /* invalid: nothing changes */
    assert_int_equal(authz_install_rules("{\"rules\":1}", 11, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "$.rules"));
    assert_int_equal(eval(&in), POLICY_DENY);
    text = authz_rules_text(&len);
    assert_non_null(text);
    assert_string_equal(text, RULES);
    free(text);

    loads = rules_loads();
    assert_int_equal(authz_install_rules(RULES_OPEN, strlen(RULES_OPEN), err, sizeof(err)), 0);
    assert_int_equal(eval(&in), POLICY_ALLOW); /* the very next evaluation */
    assert_string_equal(res.decision.version, "v9");
    path_of(p, sizeof(p), "rules.json");
    text = NULL;
    {
        FILE *f = fopen(p, "r");
        char buf[1024];
        size_t n;

        assert_non_null(f);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        assert_string_equal(buf, RULES_OPEN);
    }
    assert_int_equal(stat(p, &sb), 0);
    /* the watcher sees the new file and leaves it: no second load */
    assert_int_equal(rules_loads(), loads + 1);
    wait_for(alice_denied_on_wiki, 2500);
    assert_int_equal(rules_loads(), loads + 1);
    assert_int_equal(eval(&in), POLICY_ALLOW);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_not_started_denies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_policy_allows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allow_deny_with_rule_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_groups_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_change_is_live, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_rules_keep_old, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trusted_proxies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_geoip_countries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validate_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conf_section, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconfigure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_compile_eval_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_validate_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_install, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_commit, setup, teardown),
    };

    evthread_use_pthreads();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
