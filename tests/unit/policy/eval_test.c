/*
 * eval_test.c - rule evaluation through the public API: every condition,
 * the combinators, default deny, deny wins, route scoping, monitor mode,
 * step-up, fail-closed on stale or missing data, time windows across DST.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "directory.h"
#include "policy.h"

#define NOW 1779271200 /* 2026-05-20 10:00:00Z: Wednesday 12:00 in Berlin */

static const char *const routes[] = {"wiki", "payroll", "api"};

static const char dir_json[] =
    "{\"groups\":{\"staff\":{},\"eng\":{\"member_of\":[\"staff\"]},"
    "\"finance\":{\"member_of\":[\"staff\"]},\"contractors\":{},\"admins\":{}},"
    "\"users\":{\"alice@corp.example\":{\"groups\":[\"eng\"],\"subject\":\"u-alice\"},"
    "\"bob@corp.example\":{\"groups\":[\"finance\",\"contractors\"]}}}";

static struct directory *dir;

static int setup(void **state)
{
    char err[256];

    (void)state;
    dir = directory_parse(dir_json, strlen(dir_json), "dir.json", err, sizeof(err));
    if (dir == NULL) {
        print_error("%s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    directory_unref(dir);
    return 0;
}

static struct policy_attr attrs[] = {{"platform", "linux"}, {"managed", "true"}};

static void base_ctx(struct policy_ctx *c)
{
    policy_ctx_init(c);
    c->route = "api";
    c->identity = 1;
    c->user = "u-alice";
    c->email = "Alice@Corp.Example";
    c->auth_time = NOW - 300;
    c->mfa = 1;
    c->dir = dir;
    assert_int_equal(directory_user_groups(dir, c->user, c->email, &c->groups, &c->ngroups), 0);
    c->device_id = "laptop-1";
    c->device_tier = 3; /* trusted */
    c->device_score = 80;
    c->device_owner = "alice@corp.example";
    c->device_attrs = attrs;
    c->ndevice_attrs = 2;
    c->ip_family = AF_INET;
    inet_pton(AF_INET, "10.1.2.3", c->ip);
    memcpy(c->country, "DE", 3);
    c->method = "GET";
    c->path = "/api/v1/users";
    c->now = NOW;
}

static struct policy *compile(const char *text, const struct directory *d, char *err, size_t errlen)
{
    struct policy_compile_opts o;

    memset(&o, 0, sizeof(o));
    o.name = "rules.json";
    o.routes = routes;
    o.nroutes = 3;
    o.dir = d;
    return policy_compile(text, strlen(text), &o, err, errlen);
}

/* ---- one condition at a time --------------------------------------------- */

typedef void (*mod_cb)(struct policy_ctx *c);

static void m_none(struct policy_ctx *c)
{
    (void)c;
}
static void m_bob(struct policy_ctx *c)
{
    c->user = "u-bob";
    c->email = "bob@corp.example";
    directory_user_groups(dir, c->user, c->email, &c->groups, &c->ngroups);
}
static void m_nobody(struct policy_ctx *c)
{
    c->user = "u-zed";
    c->email = "zed@other.example";
    directory_user_groups(dir, c->user, c->email, &c->groups, &c->ngroups);
}
static void m_noid(struct policy_ctx *c)
{
    c->identity = 0;
}
static void m_basic(struct policy_ctx *c)
{
    c->device_tier = 2;
}
static void m_high(struct policy_ctx *c)
{
    c->device_tier = 4;
}
static void m_stale(struct policy_ctx *c)
{
    c->device_stale = 1;
}
static void m_tier_unknown(struct policy_ctx *c)
{
    c->device_tier = -1;
}
static void m_score60(struct policy_ctx *c)
{
    c->device_score = 60;
}
static void m_mac(struct policy_ctx *c)
{
    static struct policy_attr a[] = {{"platform", "macos"}, {"managed", "false"}};
    c->device_attrs = a;
}
static void m_noattrs(struct policy_ctx *c)
{
    c->ndevice_attrs = 0;
}
static void m_owner_bob(struct policy_ctx *c)
{
    c->device_owner = "bob@corp.example";
}
static void m_owner_sub(struct policy_ctx *c)
{
    c->device_owner = "u-alice";
}
static void m_kp(struct policy_ctx *c)
{
    memcpy(c->country, "KP", 3);
}
static void m_cunknown(struct policy_ctx *c)
{
    memcpy(c->country, "unknown", 8);
}
static void m_cnone(struct policy_ctx *c)
{
    c->country[0] = '\0';
}
static void m_ip_public(struct policy_ctx *c)
{
    inet_pton(AF_INET, "8.8.8.8", c->ip);
}
static void m_ip6(struct policy_ctx *c)
{
    c->ip_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8::1", c->ip);
}
static void m_ip_mapped(struct policy_ctx *c)
{
    c->ip_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:10.9.9.9", c->ip);
}
static void m_ip_none(struct policy_ctx *c)
{
    c->ip_family = 0;
}
static void m_post(struct policy_ctx *c)
{
    c->method = "POST";
}
static void m_admin(struct policy_ctx *c)
{
    c->path = "/admin";
}
static void m_adminx(struct policy_ctx *c)
{
    c->path = "/administrator";
}
static void m_admin_sub(struct policy_ctx *c)
{
    c->path = "/admin/users/1";
}
static void m_deep(struct policy_ctx *c)
{
    c->path = "/api/v1/x/users";
}
static void m_root(struct policy_ctx *c)
{
    c->path = "/";
}
static void m_old_auth(struct policy_ctx *c)
{
    c->auth_time = NOW - 3600;
}
static void m_nomfa(struct policy_ctx *c)
{
    c->mfa = 0;
}
static void m_sat(struct policy_ctx *c)
{
    c->now = NOW + 3 * 86400; /* Saturday */
}
static void m_evening(struct policy_ctx *c)
{
    c->now = NOW + 8 * 3600; /* Wed 20:00 Berlin */
}

struct cond_case {
    const char *when;
    mod_cb mod;
    int allow;          /* 1: the allow rule matches, 2: step-up, 0: default deny */
    const char *reason; /* first reason of the decision, NULL: not checked */
};

static const struct cond_case cond_cases[] = {
    /* user / email / email_domain */
    {"{\"user\":\"u-alice\"}", m_none, 1, "user u-alice == u-alice"},
    {"{\"user\":\"u-alice\"}", m_bob, 0, "r: user u-bob != u-alice"},
    {"{\"user\":{\"in\":[\"u-bob\",\"u-alice\"]}}", m_none, 1, "user u-alice in [u-alice, u-bob]"},
    {"{\"user\":\"u-alice\"}", m_noid, 0, "r: user: no identity"},
    {"{\"email\":\"alice@corp.example\"}", m_none, 1, NULL},
    {"{\"email\":\"ALICE@corp.example\"}", m_none, 1, NULL},
    {"{\"email\":{\"in\":[\"bob@corp.example\"]}}", m_none, 0, NULL},
    {"{\"email_domain\":\"corp.example\"}", m_none, 1, "email_domain Corp.Example == corp.example"},
    {"{\"email_domain\":{\"in\":[\"other.example\",\"x.example\"]}}", m_none, 0, NULL},
    {"{\"email_domain\":\"example\"}", m_none, 0, NULL},
    /* group (nested: alice is in eng, eng is in staff) */
    {"{\"group\":\"staff\"}", m_none, 1, "group staff: member"},
    {"{\"group\":\"eng\"}", m_none, 1, NULL},
    {"{\"group\":\"finance\"}", m_none, 0, "r: group finance: not a member"},
    {"{\"group\":{\"any_of\":[\"finance\",\"eng\"]}}", m_none, 1,
     "group any_of [finance, eng]: member of eng"},
    {"{\"group\":{\"all_of\":[\"staff\",\"finance\"]}}", m_bob, 1, NULL},
    {"{\"group\":{\"all_of\":[\"staff\",\"eng\"]}}", m_bob, 0,
     "r: group all_of [staff, eng]: not a member of eng"},
    {"{\"group\":\"staff\"}", m_nobody, 0, NULL},
    {"{\"group\":\"staff\"}", m_noid, 0, "r: group: no identity"},
    /* device_tier */
    {"{\"device_tier\":\"trusted\"}", m_none, 1, "device_tier trusted == trusted"},
    {"{\"device_tier\":\"trusted\"}", m_high, 0, NULL},
    {"{\"device_tier\":{\"at_least\":\"trusted\"}}", m_high, 1, NULL},
    {"{\"device_tier\":{\"at_least\":\"high\"}}", m_none, 0, "r: device_tier trusted < high"},
    {"{\"device_tier\":{\"at_most\":\"basic\"}}", m_basic, 1, NULL},
    {"{\"device_tier\":{\"at_most\":\"basic\"}}", m_none, 0, "r: device_tier trusted > basic"},
    {"{\"device_tier\":{\"in\":[\"basic\",\"high\"]}}", m_basic, 1, NULL},
    {"{\"device_tier\":{\"in\":[\"basic\",\"high\"]}}", m_none, 0,
     "r: device_tier trusted not in [basic, high]"},
    {"{\"device_tier\":{\"at_least\":\"untrusted\"}}", m_stale, 0,
     "r: device_tier: device trust data is stale"},
    {"{\"device_tier\":{\"at_least\":\"untrusted\"}}", m_tier_unknown, 0,
     "r: device_tier: unknown"},
    /* device_score */
    {"{\"device_score\":{\"at_least\":70}}", m_none, 1, "device_score 80 >= 70"},
    {"{\"device_score\":{\"at_least\":70}}", m_score60, 0, "r: device_score 60 < 70"},
    {"{\"device_score\":{\"at_most\":60}}", m_score60, 1, NULL},
    {"{\"device_score\":{\"at_least\":0}}", m_stale, 0, NULL},
    /* device_attr */
    {"{\"device_attr\":{\"name\":\"platform\",\"equals\":\"linux\"}}", m_none, 1,
     "device_attr platform \"linux\" == \"linux\""},
    {"{\"device_attr\":{\"name\":\"platform\",\"equals\":\"linux\"}}", m_mac, 0, NULL},
    {"{\"device_attr\":{\"name\":\"platform\",\"in\":[\"macos\",\"linux\"]}}", m_mac, 1, NULL},
    {"{\"device_attr\":{\"name\":\"managed\",\"is\":true}}", m_none, 1, NULL},
    {"{\"device_attr\":{\"name\":\"managed\",\"is\":true}}", m_mac, 0,
     "r: device_attr managed \"false\" is not true"},
    {"{\"device_attr\":{\"name\":\"managed\",\"is\":false}}", m_mac, 1, NULL},
    {"{\"device_attr\":{\"name\":\"managed\",\"is\":true}}", m_noattrs, 0,
     "r: device_attr managed: missing"},
    {"{\"device_attr\":{\"name\":\"managed\",\"is\":true}}", m_stale, 0, NULL},
    /* device_owner_is_user */
    {"{\"device_owner_is_user\":true}", m_none, 1, "device owner alice@corp.example is the user"},
    {"{\"device_owner_is_user\":true}", m_owner_sub, 1, NULL},
    {"{\"device_owner_is_user\":true}", m_owner_bob, 0, NULL},
    {"{\"device_owner_is_user\":true}", m_stale, 0, NULL},
    /* country */
    {"{\"country\":\"DE\"}", m_none, 1, "country DE == DE"},
    {"{\"country\":{\"in\":[\"KP\",\"IR\"]}}", m_kp, 1, "country KP in [IR, KP]"},
    {"{\"country\":{\"in\":[\"KP\",\"IR\"]}}", m_none, 0, "r: country DE not in [IR, KP]"},
    {"{\"country\":\"unknown\"}", m_cunknown, 1, NULL},
    {"{\"country\":\"DE\"}", m_cnone, 0, "r: country: not looked up"},
    /* ip */
    {"{\"ip\":\"10.0.0.0/8\"}", m_none, 1, "ip 10.1.2.3 in 10.0.0.0/8"},
    {"{\"ip\":\"10.0.0.0/8\"}", m_ip_public, 0, "r: ip 8.8.8.8 not in 10.0.0.0/8"},
    {"{\"ip\":{\"in\":[\"192.168.0.0/16\",\"2001:db8::/32\"]}}", m_ip6, 1, NULL},
    {"{\"ip\":{\"in\":[\"192.168.0.0/16\",\"2001:db8::/33\"]}}", m_ip6, 1, NULL},
    {"{\"ip\":\"2001:db9::/32\"}", m_ip6, 0, NULL},
    {"{\"ip\":\"10.9.9.0/24\"}", m_ip_mapped, 1, NULL},
    {"{\"ip\":\"10.1.2.3\"}", m_none, 1, NULL},
    {"{\"ip\":\"10.1.2.0/31\"}", m_none, 0, NULL},
    {"{\"ip\":\"0.0.0.0/0\"}", m_ip6, 0, NULL},
    {"{\"ip\":\"10.0.0.0/8\"}", m_ip_none, 0, "r: ip: client address unknown"},
    /* time */
    {"{\"time\":{\"days\":\"mon-fri\",\"between\":[\"08:00\",\"19:00\"],\"tz\":\"Europe/Berlin\"}}",
     m_none, 1, "time Wed 12:00 Europe/Berlin within mon-fri 08:00-19:00"},
    {"{\"time\":{\"days\":\"mon-fri\",\"between\":[\"08:00\",\"19:00\"],\"tz\":\"Europe/Berlin\"}}",
     m_sat, 0, "r: time Sat 12:00 Europe/Berlin outside mon-fri 08:00-19:00"},
    {"{\"time\":{\"days\":\"mon-fri\",\"between\":[\"08:00\",\"19:00\"],\"tz\":\"Europe/Berlin\"}}",
     m_evening, 0, "r: time Wed 20:00 Europe/Berlin outside mon-fri 08:00-19:00"},
    {"{\"time\":{\"days\":[\"sat\",\"sun\"],\"tz\":\"UTC\"}}", m_sat, 1,
     "time Sat 10:00 UTC within sat-sun"},
    {"{\"time\":{\"between\":[\"09:00\",\"10:00\"],\"tz\":\"UTC\"}}", m_none, 0, NULL},
    {"{\"time\":{\"between\":[\"10:00\",\"24:00\"],\"tz\":\"UTC\"}}", m_none, 1, NULL},
    {"{\"time\":{\"between\":[\"11:00\",\"12:00\"],\"tz\":\"Asia/Tokyo\"}}", m_none, 0, NULL},
    {"{\"time\":{\"between\":[\"19:00\",\"20:00\"],\"tz\":\"Asia/Tokyo\"}}", m_none, 1, NULL},
    /* method, path */
    {"{\"method\":\"GET\"}", m_none, 1, "method GET == GET"},
    {"{\"method\":{\"in\":[\"GET\",\"HEAD\"]}}", m_post, 0, "r: method POST not in [GET, HEAD]"},
    {"{\"path\":{\"prefix\":\"/admin\"}}", m_admin, 1, "path /admin under /admin"},
    {"{\"path\":{\"prefix\":\"/admin/\"}}", m_admin_sub, 1, NULL},
    {"{\"path\":{\"prefix\":\"/admin\"}}", m_adminx, 0, "r: path /administrator not under /admin"},
    {"{\"path\":{\"prefix\":\"/\"}}", m_root, 1, NULL},
    {"{\"path\":{\"glob\":\"/api/*/users\"}}", m_none, 1,
     "path /api/v1/users matches /api/*/users"},
    {"{\"path\":{\"glob\":\"/api/*/users\"}}", m_deep, 0, NULL},
    {"{\"path\":{\"glob\":\"/api/**/users\"}}", m_deep, 1, NULL},
    {"{\"path\":{\"glob\":\"/api/**/users\"}}", m_none, 1, NULL},
    {"{\"path\":{\"glob\":\"/**\"}}", m_root, 1, NULL},
    {"{\"path\":{\"glob\":\"/api/**\"}}", m_none, 1, NULL},
    {"{\"path\":{\"glob\":\"/api/v*/u*s\"}}", m_none, 1, NULL},
    {"{\"path\":{\"glob\":\"/api/v2*/users\"}}", m_none, 0, NULL},
    {"{\"path\":{\"glob\":\"/**/v1/**/users/**\"}}", m_none, 1, NULL},
    /* auth_age in an allow rule: step-up */
    {"{\"auth_age\":{\"max\":\"15m\"}}", m_none, 1, "auth_age 5m <= 15m"},
    {"{\"auth_age\":{\"mfa\":true}}", m_none, 1, "auth_age mfa used"},
    {"{\"auth_age\":{\"max\":\"15m\"}}", m_old_auth, 2, "auth_age 1h > 15m"},
    {"{\"auth_age\":{\"mfa\":true}}", m_nomfa, 2, "auth_age mfa not used (required)"},
    {"{\"auth_age\":{\"max\":\"15m\",\"mfa\":true}}", m_nomfa, 2,
     "auth_age 5m <= 15m, mfa not used (required)"},
    /* combinators */
    {"{\"all\":[{\"group\":\"staff\"},{\"country\":\"DE\"}]}", m_none, 1, NULL},
    {"{\"all\":[{\"group\":\"staff\"},{\"country\":\"FR\"}]}", m_none, 0, "r: country DE != FR"},
    {"{\"any\":[{\"group\":\"finance\"},{\"country\":\"DE\"}]}", m_none, 1, "country DE == DE"},
    {"{\"any\":[{\"group\":\"finance\"},{\"country\":\"FR\"}]}", m_none, 0, NULL},
    {"{\"not\":{\"group\":\"finance\"}}", m_none, 1, "group finance: not a member"},
    {"{\"not\":{\"group\":\"staff\"}}", m_none, 0, NULL},
    {"{\"not\":{\"not\":{\"group\":\"staff\"}}}", m_none, 1, NULL},
    /* unknown data never grants, not even through "not" */
    {"{\"not\":{\"device_tier\":\"untrusted\"}}", m_stale, 0, NULL},
    {"{\"not\":{\"group\":\"contractors\"}}", m_noid, 0, NULL},
    {"{\"any\":[{\"device_tier\":\"trusted\"},{\"country\":\"DE\"}]}", m_stale, 1, NULL},
    {"{\"all\":[{\"device_tier\":\"trusted\"},{\"country\":\"DE\"}]}", m_stale, 0, NULL},
};

static void test_conditions(void **state)
{
    char text[2048], err[512];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cond_cases) / sizeof(cond_cases[0]); i++) {
        const struct cond_case *k = &cond_cases[i];
        struct policy_ctx c;
        struct policy_decision d;
        struct policy *p;

        snprintf(text, sizeof(text),
                 "{\"rules\":[{\"id\":\"r\",\"effect\":\"allow\",\"when\":%s}]}", k->when);
        p = compile(text, dir, err, sizeof(err));
        if (p == NULL)
            fail_msg("case %zu: %s", i, err);
        base_ctx(&c);
        k->mod(&c);
        policy_eval(p, &c, &d);
        if (d.effect != (k->allow == 1   ? POLICY_ALLOW
                         : k->allow == 2 ? POLICY_STEP_UP
                                         : POLICY_DENY))
            fail_msg("case %zu %s: got %s (%s)", i, k->when, policy_effect_name(d.effect),
                     d.nreasons > 0 ? policy_decision_reason(&d, 0) : "");
        assert_string_equal(d.rule_id, k->allow ? "r" : "default-deny");
        if (k->reason != NULL) {
            if (d.nreasons == 0)
                fail_msg("case %zu: no reason", i);
            if (strcmp(policy_decision_reason(&d, 0), k->reason) != 0)
                fail_msg("case %zu: reason \"%s\", want \"%s\"", i, policy_decision_reason(&d, 0),
                         k->reason);
        }
        policy_unref(p);
    }
}

/* The same conditions in a deny rule: unknown data makes a deny rule match. */
static void test_deny_fails_closed(void **state)
{
    static const struct {
        const char *when;
        mod_cb mod;
        int deny;
    } cases[] = {
        {"{\"device_tier\":\"untrusted\"}", m_stale, 1},
        {"{\"not\":{\"device_tier\":\"trusted\"}}", m_stale, 1},
        {"{\"not\":{\"device_attr\":{\"name\":\"managed\",\"is\":true}}}", m_stale, 1},
        {"{\"device_tier\":\"untrusted\"}", m_none, 0},
        {"{\"country\":{\"in\":[\"KP\"]}}", m_cnone, 1},
        {"{\"not\":{\"ip\":\"10.0.0.0/8\"}}", m_ip_none, 1},
        {"{\"not\":{\"ip\":\"10.0.0.0/8\"}}", m_none, 0},
        {"{\"not\":{\"ip\":\"10.0.0.0/8\"}}", m_ip_public, 1},
        {"{\"auth_age\":{\"max\":\"1m\"}}", m_none, 0}, /* no step-up in deny rules */
        {"{\"not\":{\"auth_age\":{\"max\":\"1m\"}}}", m_none, 1},
    };
    char text[2048], err[512];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct policy_ctx c;
        struct policy_decision d;
        struct policy *p;
        snprintf(text, sizeof(text),
                 "{\"rules\":[{\"id\":\"d\",\"effect\":\"deny\",\"when\":%s},"
                 "{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"user\":\"u-alice\"}}]}",
                 cases[i].when);
        p = compile(text, NULL, err, sizeof(err));
        if (p == NULL)
            fail_msg("case %zu: %s", i, err);
        base_ctx(&c);
        cases[i].mod(&c);
        policy_eval(p, &c, &d);
        if ((d.effect == POLICY_DENY) != cases[i].deny)
            fail_msg("case %zu %s: got %s", i, cases[i].when, policy_effect_name(d.effect));
        assert_string_equal(d.rule_id, cases[i].deny ? "d" : "a");
        policy_unref(p);
    }
}

static void test_stale_reason(void **state)
{
    const char *text = "{\"rules\":[{\"id\":\"wiki\",\"effect\":\"allow\",\"when\":{\"all\":["
                       "{\"group\":\"staff\"},{\"device_tier\":{\"at_least\":\"trusted\"}}]}}]}";
    struct policy_decision d;
    struct policy_ctx c;
    char err[256];
    struct policy *p = compile(text, dir, err, sizeof(err));

    (void)state;
    assert_non_null(p);
    base_ctx(&c);
    c.device_stale = 1;
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(d.rule_id, "default-deny");
    assert_int_equal(d.nreasons, 1);
    assert_string_equal(policy_decision_reason(&d, 0),
                        "wiki: device_tier: device trust data is stale");
    policy_unref(p);
}

/* ---- semantics ------------------------------------------------------------------ */

static const char semantics[] =
    "{\"version\":\"v7\",\"rules\":["
    "{\"id\":\"embargo\",\"effect\":\"deny\",\"when\":{\"country\":{\"in\":[\"KP\",\"IR\"]}},"
    " \"deny_message\":\"Not from there.\"},"
    "{\"id\":\"wiki-staff\",\"route\":\"wiki\",\"effect\":\"allow\",\"when\":{\"group\":\"staff\"}}"
    ","
    "{\"id\":\"wiki-no-contractors\",\"route\":\"wiki\",\"effect\":\"deny\","
    " \"when\":{\"group\":\"contractors\"}},"
    "{\"id\":\"pay\",\"route\":[\"payroll\"],\"effect\":\"allow\",\"when\":{\"all\":["
    "  {\"group\":\"finance\"},{\"auth_age\":{\"max\":\"15m\",\"mfa\":true}}]}},"
    "{\"id\":\"pay-alt\",\"route\":\"payroll\",\"effect\":\"allow\",\"when\":{\"all\":["
    "  "
    "{\"group\":\"finance\"},{\"any\":[{\"auth_age\":{\"max\":\"1h\"}},{\"ip\":\"192.0.2.0/"
    "24\"}]}]}},"
    "{\"id\":\"api-eng\",\"route\":[\"api\",\"wiki\"],\"effect\":\"allow\",\"when\":{\"group\":"
    "\"eng\"}},"
    "{\"id\":\"mon-deny-de\",\"mode\":\"monitor\",\"effect\":\"deny\",\"when\":{\"country\":\"DE\"}"
    "},"
    "{\"id\":\"mon-allow-bob\",\"mode\":\"monitor\",\"effect\":\"allow\",\"route\":\"api\","
    " \"when\":{\"user\":\"u-bob\"}}"
    "]}";

static void test_semantics(void **state)
{
    struct policy_decision d;
    struct policy_ctx c;
    char err[256];
    struct policy *p = compile(semantics, dir, err, sizeof(err));

    (void)state;
    if (p == NULL)
        fail_msg("%s", err);
    assert_string_equal(policy_version(p), "v7");
    assert_int_equal(policy_rule_count(p), 8);
    assert_int_equal(policy_route_count(p), 3);
    assert_int_equal(policy_route_index(p, "payroll"), 1);
    assert_int_equal(policy_route_index(p, "nope"), -1);
    assert_int_equal(policy_tier_index(p, "high"), 4);
    assert_string_equal(policy_tier_name(p, 0), "untrusted");
    assert_null(policy_tier_name(p, 5));

    /* Route scoping: alice (eng) on wiki via wiki-staff (first allow in file order). */
    base_ctx(&c);
    c.route = "wiki";
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW);
    assert_string_equal(d.rule_id, "wiki-staff");
    assert_string_equal(d.version, "v7");
    assert_null(d.deny_message);
    /* route_index wins over the name. */
    c.route_index = policy_route_index(p, "api");
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW);
    assert_string_equal(d.rule_id, "api-eng");
    /* A route without rules for alice: default deny, reasons name the rules. */
    c.route_index = -1;
    c.route = "payroll";
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(d.rule_id, "default-deny");
    assert_int_equal(d.nreasons, 2);
    assert_string_equal(policy_decision_reason(&d, 0), "pay: group finance: not a member");
    assert_string_equal(policy_decision_reason(&d, 1), "pay-alt: group finance: not a member");
    /* Unknown route: only the unscoped rules. */
    c.route = "elsewhere";
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(policy_decision_reason(&d, 0), "no allow rule applies to this route");

    /* Deny wins over an allow that matches, wherever it is in the file. */
    base_ctx(&c);
    m_bob(&c);
    c.route = "wiki";
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(d.rule_id, "wiki-no-contractors");
    assert_string_equal(policy_decision_reason(&d, 0), "group contractors: member");
    /* Unscoped deny applies everywhere, with its message. */
    base_ctx(&c);
    m_kp(&c);
    c.route = "api";
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(d.rule_id, "embargo");
    assert_string_equal(d.deny_message, "Not from there.");
    assert_string_equal(policy_decision_reason(&d, 0), "country KP in [IR, KP]");

    /* Monitor mode: reported, never decides. */
    base_ctx(&c);
    c.route = "api";
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW);
    assert_string_equal(d.rule_id, "api-eng");
    assert_int_equal(d.nmonitor, 2);
    assert_string_equal(d.monitor[0].rule_id, "mon-deny-de");
    assert_int_equal(d.monitor[0].matched, 1);
    assert_int_equal(d.monitor[0].would_decide, POLICY_DENY);
    assert_string_equal(d.monitor[1].rule_id, "mon-allow-bob");
    assert_int_equal(d.monitor[1].matched, 0);
    assert_int_equal(d.monitor[1].would_decide, POLICY_ALLOW);
    /* bob on api: default deny, the monitor allow would have allowed. */
    m_bob(&c);
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_int_equal(d.monitor[1].matched, 1);
    assert_int_equal(d.monitor[1].would_decide, POLICY_ALLOW);
    /* monitor rules are scoped too */
    c.route = "wiki";
    policy_eval(p, &c, &d);
    assert_int_equal(d.nmonitor, 1);
    policy_unref(p);
}

static void test_step_up(void **state)
{
    struct policy_decision d;
    struct policy_ctx c;
    char err[256];
    struct policy *p = compile(semantics, dir, err, sizeof(err));

    (void)state;
    assert_non_null(p);
    base_ctx(&c);
    m_bob(&c);
    memcpy(c.country, "FR", 3);
    c.route = "payroll";
    /* fresh MFA login: allowed by "pay" */
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW);
    assert_string_equal(d.rule_id, "pay");
    /* 30 minutes old: "pay" needs a step-up, but "pay-alt" (1h) allows */
    c.auth_time = NOW - 1800;
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW);
    assert_string_equal(d.rule_id, "pay-alt");
    /* 2 hours old: the first rule that step-up would satisfy decides */
    c.auth_time = NOW - 7200;
    assert_int_equal(policy_eval(p, &c, &d), POLICY_STEP_UP);
    assert_string_equal(d.rule_id, "pay");
    assert_int_equal(d.step_up_max_age, 900);
    assert_int_equal(d.step_up_mfa, 1);
    assert_int_equal(d.nreasons, 1);
    assert_string_equal(policy_decision_reason(&d, 0), "auth_age 2h > 15m, mfa used");
    /* no MFA, fresh: still step-up for MFA */
    c.auth_time = NOW - 60;
    c.mfa = 0;
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW); /* pay-alt needs no MFA */
    assert_string_equal(d.rule_id, "pay-alt");
    /* from the allowed network the old login does not matter for pay-alt */
    c.auth_time = NOW - 7200;
    c.mfa = 1;
    inet_pton(AF_INET, "192.0.2.7", c.ip);
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW);
    assert_string_equal(d.rule_id, "pay-alt");
    /* a failing non-auth condition means no step-up: re-login would not help */
    base_ctx(&c);
    c.route = "payroll";
    c.auth_time = NOW - 7200;
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(d.rule_id, "default-deny");
    /* deny beats step-up */
    m_bob(&c);
    m_kp(&c);
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(d.rule_id, "embargo");
    policy_unref(p);
}

/* Step-up demand: the strictest auth_age of the live branches of the rule. */
static void test_step_up_demand(void **state)
{
    static const struct {
        const char *when;
        int64_t age;
        int mfa;
        int expect; /* effect */
    } cases[] = {
        {"{\"auth_age\":{\"max\":\"10m\"}}", 600, 0, POLICY_STEP_UP},
        {"{\"all\":[{\"auth_age\":{\"max\":\"1h\"}},{\"auth_age\":{\"max\":\"10m\"}}]}", 600, 0,
         POLICY_STEP_UP},
        {"{\"all\":[{\"auth_age\":{\"max\":\"1d\"}},{\"auth_age\":{\"mfa\":true}},"
         "{\"auth_age\":{\"max\":\"10m\"}}]}",
         600, 1, POLICY_STEP_UP},
        /* a dead branch contributes nothing */
        {"{\"any\":[{\"all\":[{\"auth_age\":{\"max\":\"1m\",\"mfa\":true}},{\"country\":\"FR\"}]},"
         "{\"auth_age\":{\"max\":\"10m\"}}]}",
         600, 0, POLICY_STEP_UP},
        /* under "not": never a step-up */
        {"{\"not\":{\"auth_age\":{\"max\":\"10m\"}}}", -1, 0, POLICY_ALLOW},
        {"{\"all\":[{\"country\":\"FR\"},{\"auth_age\":{\"max\":\"10m\"}}]}", -1, 0, POLICY_DENY},
        {"{\"all\":[{\"device_tier\":\"trusted\"},{\"auth_age\":{\"max\":\"10m\"}}]}", 600, 0,
         POLICY_STEP_UP},
    };
    char text[2048], err[512];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct policy_ctx c;
        struct policy_decision d;
        struct policy *p;
        snprintf(text, sizeof(text),
                 "{\"rules\":[{\"id\":\"r\",\"effect\":\"allow\",\"when\":%s}]}", cases[i].when);
        p = compile(text, NULL, err, sizeof(err));
        if (p == NULL)
            fail_msg("case %zu: %s", i, err);
        base_ctx(&c);
        c.auth_time = NOW - 86400 * 2;
        c.mfa = 0;
        policy_eval(p, &c, &d);
        if ((int)d.effect != cases[i].expect)
            fail_msg("case %zu: got %s", i, policy_effect_name(d.effect));
        if (d.effect == POLICY_STEP_UP) {
            assert_int_equal(d.step_up_max_age, cases[i].age);
            assert_int_equal(d.step_up_mfa, cases[i].mfa);
        } else {
            assert_int_equal(d.step_up_max_age, -1);
        }
        policy_unref(p);
    }
    /* No identity at all: an auth_age-only rule asks for a login. */
    {
        struct policy_ctx c;
        struct policy_decision d;
        struct policy *p = compile("{\"rules\":[{\"id\":\"r\",\"effect\":\"allow\",\"when\":"
                                   "{\"auth_age\":{\"max\":\"8h\"}}}]}",
                                   NULL, err, sizeof(err));
        assert_non_null(p);
        base_ctx(&c);
        c.identity = 0;
        assert_int_equal(policy_eval(p, &c, &d), POLICY_STEP_UP);
        assert_int_equal(d.step_up_max_age, 8 * 3600);
        policy_unref(p);
    }
}

/* ---- time windows across DST ----------------------------------------------------- */

struct time_case {
    const char *win; /* the "time" object */
    int64_t t;
    int in;
};

#define BER_GAP "{\"days\":\"sun\",\"between\":[\"01:30\",\"03:30\"],\"tz\":\"Europe/Berlin\"}"
#define NY_GAP "{\"days\":\"sun\",\"between\":[\"01:30\",\"03:30\"],\"tz\":\"America/New_York\"}"
#define NIGHT "{\"days\":\"mon-fri\",\"between\":[\"22:00\",\"06:00\"],\"tz\":\"Europe/Berlin\"}"
#define SATNIGHT "{\"days\":\"sat\",\"between\":[\"22:00\",\"06:00\"],\"tz\":\"Europe/Berlin\"}"

static const struct time_case time_cases[] = {
    /* Berlin spring forward, 2026-03-29: 02:00 CET -> 03:00 CEST (1 real hour in window) */
    {BER_GAP, 1774744140, 0}, /* 01:29 CET */
    {BER_GAP, 1774744200, 1}, /* 01:30 CET */
    {BER_GAP, 1774746000, 1}, /* 03:00 CEST */
    {BER_GAP, 1774747740, 1}, /* 03:29 CEST */
    {BER_GAP, 1774747800, 0}, /* 03:30 CEST */
    /* Berlin fall back, 2026-10-25: 03:00 CEST -> 02:00 CET (3 real hours in window) */
    {BER_GAP, 1792884540, 0}, /* 01:29 CEST */
    {BER_GAP, 1792884600, 1}, /* 01:30 CEST */
    {BER_GAP, 1792890000, 1}, /* 02:00 CET, the second time */
    {BER_GAP, 1792895340, 1}, /* 03:29 CET */
    {BER_GAP, 1792895400, 0}, /* 03:30 CET */
    /* New York spring forward, 2026-03-08 */
    {NY_GAP, 1772951340, 0}, /* 01:29 EST */
    {NY_GAP, 1772951400, 1}, /* 01:30 EST */
    {NY_GAP, 1772953200, 1}, /* 03:00 EDT */
    {NY_GAP, 1772955000, 0}, /* 03:30 EDT */
    /* New York fall back, 2026-11-01: 01:00-01:30 EST is outside, then inside again */
    {NY_GAP, 1793511000, 1}, /* 01:30 EDT */
    {NY_GAP, 1793512800, 0}, /* 01:00 EST */
    {NY_GAP, 1793514600, 1}, /* 01:30 EST */
    {NY_GAP, 1793521800, 0}, /* 03:30 EST */
    /* overnight windows: "days" is the day the window opens */
    {NIGHT, 1779483600, 1}, /* Fri 23:00 */
    {NIGHT, 1779505200, 1}, /* Sat 05:00 (opened Friday) */
    {NIGHT, 1779570000, 0}, /* Sat 23:00 */
    {NIGHT, 1779678000, 0}, /* Mon 05:00 (opened Sunday) */
    {NIGHT, 1779741000, 1}, /* Mon 22:30 */
    {NIGHT, 1779768000, 0}, /* Tue 06:00 */
    /* overnight across the spring-forward night */
    {SATNIGHT, 1774731600, 1}, /* Sat 22:00 CET */
    {SATNIGHT, 1774756740, 1}, /* Sun 05:59 CEST */
    {SATNIGHT, 1774756800, 0}, /* Sun 06:00 CEST */
};

static void test_time_dst(void **state)
{
    char text[1024], err[512];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(time_cases) / sizeof(time_cases[0]); i++) {
        struct policy_ctx c;
        struct policy_decision d;
        struct policy *p;
        snprintf(text, sizeof(text),
                 "{\"rules\":[{\"id\":\"t\",\"effect\":\"allow\",\"when\":{\"time\":%s}}]}",
                 time_cases[i].win);
        p = compile(text, NULL, err, sizeof(err));
        if (p == NULL)
            fail_msg("case %zu: %s", i, err);
        base_ctx(&c);
        c.now = time_cases[i].t;
        policy_eval(p, &c, &d);
        if ((d.effect == POLICY_ALLOW) != time_cases[i].in)
            fail_msg("case %zu (t=%lld): got %s: %s", i, (long long)time_cases[i].t,
                     policy_effect_name(d.effect), policy_decision_reason(&d, 0));
        policy_unref(p);
    }
}

/* ---- groups with another directory snapshot than the one compiled against ------ */

static void test_directory_rebind(void **state)
{
    const char *d2j = "{\"groups\":{\"aaa\":{},\"finance\":{},\"staff\":{}},"
                      "\"users\":{\"alice@corp.example\":{\"groups\":[\"finance\"]}}}";
    char err[256];
    struct directory *d2 = directory_parse(d2j, strlen(d2j), "d2", err, sizeof(err));
    struct policy *p = compile("{\"rules\":[{\"id\":\"f\",\"effect\":\"allow\","
                               "\"when\":{\"group\":\"finance\"}}]}",
                               dir, err, sizeof(err));
    struct policy_decision d;
    struct policy_ctx c;

    (void)state;
    assert_non_null(d2);
    assert_non_null(p);
    base_ctx(&c);
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY); /* old snapshot: alice not finance */
    c.dir = d2;
    assert_int_equal(directory_user_groups(d2, NULL, c.email, &c.groups, &c.ngroups), 0);
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW); /* new snapshot, looked up by name */
    c.dir = NULL;
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    policy_unref(p);
    directory_unref(d2);
}

/* ---- bounded reasons and monitor results ------------------------------------------ */

static void test_bounds(void **state)
{
    char *text = malloc(65536), err[256];
    size_t o = 0, i;
    struct policy_decision d;
    struct policy_ctx c;
    struct policy *p;

    (void)state;
    o += (size_t)snprintf(text + o, 65536 - o, "{\"rules\":[");
    for (i = 0; i < 40; i++)
        o += (size_t)snprintf(text + o, 65536 - o,
                              "%s{\"id\":\"a%zu\",\"effect\":\"allow\",\"when\":{\"email\":"
                              "\"somebody-with-a-long-name-%zu@corp.example\"}},"
                              "{\"id\":\"m%zu\",\"effect\":\"deny\",\"mode\":\"monitor\","
                              "\"when\":{\"country\":\"DE\"}}",
                              i > 0 ? "," : "", i, i, i);
    snprintf(text + o, 65536 - o, "]}");
    p = compile(text, NULL, err, sizeof(err));
    if (p == NULL)
        fail_msg("%s", err);
    base_ctx(&c);
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_true(d.nreasons > 0 && d.nreasons <= POLICY_REASONS_MAX);
    assert_int_equal(d.nreasons + d.reasons_dropped, 40);
    for (i = 0; i < d.nreasons; i++)
        assert_non_null(strstr(policy_decision_reason(&d, i), " != somebody-with-a-long-name-"));
    assert_int_equal(d.nmonitor, POLICY_MONITOR_MAX);
    assert_int_equal(d.monitor_dropped, 40 - POLICY_MONITOR_MAX);
    assert_null(policy_decision_reason(&d, d.nreasons));
    policy_unref(p);
    free(text);
}

/* ---- explain ---------------------------------------------------------------------- */

static void test_explain(void **state)
{
    char err[256], buf[4096], small[64];
    struct policy *p = compile(semantics, dir, err, sizeof(err));
    struct policy_ctx c;
    json_t *j, *rules;
    const char *res;

    (void)state;
    assert_non_null(p);
    base_ctx(&c);
    c.route = "payroll";
    m_bob(&c);
    c.auth_time = NOW - 7200;
    assert_int_equal(policy_explain(p, &c, buf, sizeof(buf)), POLICY_STEP_UP);
    assert_non_null(strstr(buf, "decision: step_up (rule pay)\n"));
    assert_non_null(strstr(buf, "step-up: max_age 900s, mfa required\n"));
    assert_non_null(strstr(buf, "  embargo (deny, enforce, all routes)\n"
                                "    [false]   country DE not in [IR, KP]\n"
                                "    => no_match\n"));
    assert_non_null(strstr(buf, "[step_up] auth_age 2h > 15m, mfa used\n"));
    /* pay-alt: every condition is shown, no short-circuit */
    assert_non_null(strstr(buf, "[false]   ip 10.1.2.3 not in 192.0.2.0/24\n"));
    assert_null(strstr(buf, "wiki-staff"));
    /* a small buffer is cut, not overrun */
    memset(small, 'x', sizeof(small));
    policy_explain(p, &c, small, sizeof(small));
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_non_null(strstr(small, "..."));

    j = policy_explain_json(p, &c);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "decision")), "step_up");
    assert_string_equal(json_string_value(json_object_get(j, "rule")), "pay");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "step_up"), "max_age")),
                     900);
    rules = json_object_get(j, "rules");
    assert_int_equal(json_array_size(rules), 4); /* embargo, pay, pay-alt, mon-deny-de */
    res = json_string_value(json_object_get(json_array_get(rules, 1), "result"));
    assert_string_equal(res, "step_up");
    assert_string_equal(json_string_value(json_object_get(json_array_get(rules, 3), "mode")),
                        "monitor");
    json_decref(j);

    /* Texts quote request values, which need not be UTF-8: explain still
     * answers, each bad byte shown as U+FFFD. */
    memcpy(c.country, "\xff\xc3", 3);
    j = policy_explain_json(p, &c);
    assert_non_null(j);
    {
        char *dump = json_dumps(j, JSON_ENSURE_ASCII);
        assert_non_null(dump);
        assert_non_null(strstr(dump, "country \\uFFFD\\uFFFD not in [IR, KP]"));
        free(dump);
    }
    json_decref(j);
    policy_unref(p);
}

static void test_ctx_addr(void **state)
{
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    struct policy_ctx c;

    (void)state;
    policy_ctx_init(&c);
    assert_int_equal(c.route_index, -1);
    assert_int_equal(c.device_tier, -1);
    memset(&in, 0, sizeof(in));
    in.sin_family = AF_INET;
    inet_pton(AF_INET, "10.1.2.3", &in.sin_addr);
    assert_int_equal(policy_ctx_set_addr(&c, (struct sockaddr *)&in), 0);
    assert_int_equal(c.ip_family, AF_INET);
    assert_int_equal(c.ip[0], 10);
    memset(&in6, 0, sizeof(in6));
    in6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr);
    assert_int_equal(policy_ctx_set_addr(&c, (struct sockaddr *)&in6), 0);
    assert_int_equal(c.ip_family, AF_INET6);
    assert_int_equal(c.ip[2], 0x0d);
    in.sin_family = AF_UNIX;
    assert_int_equal(policy_ctx_set_addr(&c, (struct sockaddr *)&in), -1);
}

static void test_demo_rules(void **state)
{
    char err[512];
    struct policy_compile_opts o;
    struct policy *p;
    static const char *const demo_routes[] = {"wiki", "payroll"};

    (void)state;
    memset(&o, 0, sizeof(o));
    o.routes = demo_routes;
    o.nroutes = 2;
    o.dir = NULL;
    p = policy_load("../../deploy/demo/rules.json", &o, err, sizeof(err));
    if (p == NULL)
        fail_msg("%s", err);
    assert_int_equal(policy_rule_count(p), 6);
    policy_unref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conditions),   cmocka_unit_test(test_deny_fails_closed),
        cmocka_unit_test(test_stale_reason), cmocka_unit_test(test_semantics),
        cmocka_unit_test(test_step_up),      cmocka_unit_test(test_step_up_demand),
        cmocka_unit_test(test_time_dst),     cmocka_unit_test(test_directory_rebind),
        cmocka_unit_test(test_bounds),       cmocka_unit_test(test_explain),
        cmocka_unit_test(test_ctx_addr),     cmocka_unit_test(test_demo_rules),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
