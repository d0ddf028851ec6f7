/*
 * rules_test.c - validation of rules files: every error names the rule id
 * and the JSON path, and a file that fails never yields a policy. The
 * messages are asserted exactly: they are the interface the security team
 * reads in `ztctl policy lint` and in the reload log.
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
#include "policy.h"

static const char *const routes[] = {"wiki", "payroll"};

struct bad_case {
    const char *text;
    const char *error; /* exact */
};

static const struct bad_case bad_cases[] = {
    {"{", "rules.json:1:1: JSON syntax error: string or '}' expected near end of file"},
    {"[]", "rules.json: $: expected an object, got an array"},
    {"{\"rules\":[],\"x\":1}", "rules.json: $.x: unknown key (expected version, rules)"},
    {"{\"rules\":{}}", "rules.json: $.rules: expected an array of rules, got an object"},
    {"{}", "rules.json: $.rules: required key is missing"},
    {"{\"version\":5,\"rules\":[]}", "rules.json: $.version: expected a string, got an integer"},
    {"{\"rules\":[5]}", "rules.json: $.rules[0]: expected a rule (an object), got an integer"},
    {"{\"rules\":[{\"effect\":\"allow\",\"when\":{\"user\":\"a\"}}]}",
     "rules.json: $.rules[0].id: required key is missing"},
    {"{\"rules\":[{\"id\":\"Bad Id\",\"effect\":\"allow\",\"when\":{\"user\":\"a\"}}]}",
     "rules.json: $.rules[0].id: invalid id \"Bad Id\" (1..64 of [a-z0-9_.-], not "
     "\"default-deny\")"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"user\":\"a\"}},{\"id\":\"b\","
     "\"effect\":\"allow\",\"when\":{\"user\":\"a\"}},{\"id\":\"a\",\"effect\":\"deny\",\"when\":{"
     "\"user\":\"a\"}}]}",
     "rules.json: $.rules[2].id: duplicate id \"a\" (also $.rules[0])"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"permit\",\"when\":{\"user\":\"a\"}}]}",
     "rules.json: $.rules[0] (id \"a\").effect: expected \"allow\" or \"deny\""},
    {"{\"rules\":[{\"id\":\"a\",\"when\":{\"user\":\"a\"}}]}",
     "rules.json: $.rules[0] (id \"a\").effect: required key is missing (\"allow\" or \"deny\")"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\"}]}",
     "rules.json: $.rules[0] (id \"a\").when: required key is missing"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"user\":\"a\"},\"colour\":\"red\"}]"
     "}",
     "rules.json: $.rules[0] (id \"a\").colour: unknown key (expected id, effect, route, mode, "
     "description, deny_message, when)"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"mode\":\"audit\",\"when\":{\"user\":\"a\"}}]"
     "}",
     "rules.json: $.rules[0] (id \"a\").mode: expected \"enforce\" or \"monitor\""},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"route\":\"wik\",\"when\":{\"user\":\"a\"}}]"
     "}",
     "rules.json: $.rules[0] (id \"a\").route: unknown route \"wik\" (known: wiki, payroll)"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"route\":[],\"when\":{\"user\":\"a\"}}]}",
     "rules.json: $.rules[0] (id \"a\").route: empty list (leave \"route\" out to apply to every "
     "route)"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"route\":[\"wiki\",\"wiki\"],\"when\":{"
     "\"user\":\"a\"}}]}",
     "rules.json: $.rules[0] (id \"a\").route[1]: route \"wiki\" is listed twice"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"deny_message\":\"no\",\"when\":{\"user\":"
     "\"a\"}}]}",
     "rules.json: $.rules[0] (id \"a\").deny_message: only a deny rule has a deny_message"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{}}]}",
     "rules.json: $.rules[0] (id \"a\").when: a condition has exactly one key (all, any, not, "
     "user, email, email_domain, group, device_tier, device_score, device_attr, "
     "device_owner_is_user, country, ip, time, method, path, auth_age); combine several with "
     "\"all\""},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"user\":\"a\",\"email\":\"b@c\"}}]"
     "}",
     "rules.json: $.rules[0] (id \"a\").when: a condition has exactly one key (found more); "
     "combine several with \"all\""},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"usr\":\"a\"}}]}",
     "rules.json: $.rules[0] (id \"a\").when.usr: unknown key (expected all, any, not, user, "
     "email, email_domain, group, device_tier, device_score, device_attr, device_owner_is_user, "
     "country, ip, time, method, path, auth_age)"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"all\":[]}}]}",
     "rules.json: $.rules[0] (id \"a\").when.all: empty list (an empty \"all\"/\"any\" is "
     "ambiguous: write the conditions)"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"any\":[{\"user\":\"a\"},{\"user\":"
     "5}]}}]}",
     "rules.json: $.rules[0] (id \"a\").when.any[1].user: expected a string or {\"in\": [...]}, "
     "got an integer"},
    {"{\"rules\":[{\"id\":\"payroll\",\"effect\":\"allow\",\"when\":{\"all\":[{\"group\":"
     "\"finance\"},{\"device_tier\":{\"at_least\":\"hgh\"}}]}}]}",
     "rules.json: $.rules[0] (id \"payroll\").when.all[1].device_tier.at_least: unknown tier "
     "\"hgh\" (known: untrusted, identified, basic, trusted, high)"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"device_tier\":{\"at_least\":"
     "\"high\",\"at_most\":\"basic\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.device_tier: expected exactly one of: at_least, "
     "at_most, in"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"device_tier\":{\"in\":[\"basic\","
     "\"basic\"]}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.device_tier.in[1]: tier \"basic\" is listed twice"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"device_score\":{\"at_least\":101}}"
     "}]}",
     "rules.json: $.rules[0] (id \"a\").when.device_score.at_least: expected an integer 0..100"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"group\":\"stafff\"}}]}",
     "rules.json: $.rules[0] (id \"a\").when.group: unknown group \"stafff\" (not in the "
     "directory)"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"group\":{\"any_of\":[]}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.group.any_of: empty list"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"country\":\"de\"}}]}",
     "rules.json: $.rules[0] (id \"a\").when.country: invalid country \"de\" (ISO 3166 alpha-2 in "
     "upper case, e.g. \"DE\", or \"unknown\")"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"country\":{\"in\":[\"KP\",\"XX\"]}"
     "}}]}",
     "rules.json: $.rules[0] (id \"a\").when.country.in[1]: \"XX\" is not an ISO 3166 country "
     "code"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"country\":{\"in\":[\"KP\",\"KP\"]}"
     "}}]}",
     "rules.json: $.rules[0] (id \"a\").when.country.in[1]: \"KP\" is listed twice"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"ip\":\"10.0.0.0/33\"}}]}",
     "rules.json: $.rules[0] (id \"a\").when.ip: invalid CIDR \"10.0.0.0/33\" (e.g. "
     "\"10.0.0.0/8\", \"2001:db8::/32\")"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"ip\":{\"in\":[\"10.0.0.0/"
     "8\",\"10.0.0.1/8\"]}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.ip.in[1]: \"10.0.0.1/8\" has bits set after the /8 "
     "prefix"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"ip\":\"fe80::/10x\"}}]}",
     "rules.json: $.rules[0] (id \"a\").when.ip: invalid CIDR \"fe80::/10x\" (e.g. \"10.0.0.0/8\", "
     "\"2001:db8::/32\")"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"time\":{\"days\":\"mon-fri\","
     "\"between\":[\"08:00\",\"19:00\"],\"tz\":\"Europe/Berln\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.time.tz: unknown time zone \"Europe/Berln\" (not in "
     "/usr/share/zoneinfo)"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"time\":{\"days\":\"mon-fri\","
     "\"between\":[\"08:00\",\"19:00\"],\"tz\":\"../../etc/passwd\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.time.tz: invalid time zone name \"../../etc/passwd\""},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"time\":{\"days\":\"mon-fri\","
     "\"between\":[\"08:00\",\"19:00\"]}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.time.tz: required key is missing (e.g. "
     "\"Europe/Berlin\", \"UTC\")"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"time\":{\"days\":\"mon-fri\","
     "\"between\":[\"8:00\",\"19:00\"],\"tz\":\"UTC\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.time.between[0]: expected \"HH:MM\" (24-hour), got "
     "\"8:00\""},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"time\":{\"days\":\"mon-fri\","
     "\"between\":[\"08:00\",\"08:00\"],\"tz\":\"UTC\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.time.between: empty time window (start equals end)"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"time\":{\"days\":\"mon-fri\","
     "\"between\":[\"08:00\"],\"tz\":\"UTC\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.time.between: expected [\"HH:MM\", \"HH:MM\"] (start, "
     "end)"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"time\":{\"days\":[\"mon\",\"wed\","
     "\"mon\"],\"tz\":\"UTC\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.time.days[2]: \"mon\" repeats a day already listed"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"time\":{\"days\":[\"mon-fri\","
     "\"wed\"],\"tz\":\"UTC\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.time.days[1]: \"wed\" repeats a day already listed"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"time\":{\"days\":\"monday\","
     "\"tz\":\"UTC\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.time.days: invalid days \"monday\" (a day sun, mon, "
     "tue, wed, thu, fri, sat or a range such as \"mon-fri\")"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"time\":{\"between\":[\"24:00\","
     "\"08:00\"],\"tz\":\"UTC\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.time.between[0]: \"24:00\" is not a time of day "
     "(24:00 is only allowed as the end)"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"time\":{\"tz\":\"UTC\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.time: expected \"days\", \"between\" or both"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"method\":\"get\"}}]}",
     "rules.json: $.rules[0] (id \"a\").when.method: methods are case-sensitive and upper case: "
     "\"get\""},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"path\":{\"prefix\":\"admin\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.path.prefix: a path starts with '/': \"admin\""},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"path\":{\"glob\":\"/a/**x/"
     "b\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.path.glob: '**' must be a whole segment "
     "(\"/a/**/b\"): \"/a/**x/b\""},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"path\":{\"prefix\":\"/"
     "a\",\"glob\":\"/b\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.path: expected exactly one of: prefix, glob"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"auth_age\":{\"max\":\"15 "
     "minutes\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.auth_age.max: expected a duration such as \"30s\", "
     "\"15m\", \"8h\", \"1d\", got \"15 minutes\""},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"auth_age\":{\"mfa\":false}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.auth_age.mfa: expected true (leave \"mfa\" out when "
     "MFA is not required)"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"auth_age\":{}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.auth_age: expected \"max\" (e.g. \"15m\"), \"mfa\": "
     "true, or both"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"device_attr\":{\"name\":"
     "\"platform\"}}}]}",
     "rules.json: $.rules[0] (id \"a\").when.device_attr: expected \"name\" and exactly one of: "
     "equals, in, is"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"device_attr\":{\"equals\":\"x\"}}}"
     "]}",
     "rules.json: $.rules[0] (id \"a\").when.device_attr.name: required key is missing"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"device_owner_is_user\":false}}]}",
     "rules.json: $.rules[0] (id \"a\").when.device_owner_is_user: expected true (to require the "
     "opposite, wrap it in \"not\")"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"email\":\"not-an-email\"}}]}",
     "rules.json: $.rules[0] (id \"a\").when.email: invalid email \"not-an-email\""},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"not\":{\"not\":{\"not\":{\"not\":{"
     "\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{"
     "\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{"
     "\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"not\":{\"user\":"
     "\"a\"}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}}]}",
     "rules.json: $.rules[0] (id "
     "\"a\").when.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not.not."
     "not.not.not.not.not.not.not.not.not.not.not.not: conditions nested deeper than 32"},
    {"{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"user\":\"a\"}},{\"id\":\"a\","
     "\"effect\":\"allow\",\"when\":{\"user\":\"a\"}}],\"rules\":[]}",
     "rules.json:1:114: JSON syntax error: duplicate object key near '\"rules\"'"},
};

static struct policy *compile_with(const char *text, const struct directory *d, char *err,
                                   size_t errlen)
{
    struct policy_compile_opts o;

    memset(&o, 0, sizeof(o));
    o.name = "rules.json";
    o.routes = routes;
    o.nroutes = 2;
    o.dir = d;
    return policy_compile(text, strlen(text), &o, err, errlen);
}

static void test_bad_rules(void **state)
{
    const char *dj = "{\"groups\":{\"staff\":{},\"finance\":{}},\"users\":{}}";
    char err[1024];
    struct directory *d = directory_parse(dj, strlen(dj), "d", err, sizeof(err));
    size_t i;

    (void)state;
    assert_non_null(d);
    for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        struct policy *p;
        err[0] = '\0';
        p = compile_with(bad_cases[i].text, d, err, sizeof(err));
        if (p != NULL)
            fail_msg("case %zu compiled: %s", i, bad_cases[i].text);
        if (strcmp(err, bad_cases[i].error) != 0)
            fail_msg("case %zu:\n got: %s\nwant: %s", i, err, bad_cases[i].error);
    }
    directory_unref(d);
}

/* Without a route list or a directory, names are accepted (linting). */
static void test_lint_mode(void **state)
{
    const char *text = "{\"rules\":[{\"id\":\"a\",\"route\":[\"x\",\"y\"],\"effect\":\"allow\","
                       "\"when\":{\"group\":\"anything\"}},"
                       "{\"id\":\"b\",\"route\":\"y\",\"effect\":\"deny\","
                       "\"when\":{\"group\":\"other\"}}]}";
    char err[256];
    struct policy *p = policy_compile(text, strlen(text), NULL, err, sizeof(err));

    (void)state;
    if (p == NULL)
        fail_msg("%s", err);
    assert_int_equal(policy_route_count(p), 2);
    assert_int_equal(policy_route_index(p, "x"), 0);
    assert_int_equal(policy_route_index(p, "y"), 1);
    assert_string_equal(policy_version(p), "");
    assert_ptr_equal(policy_ref(p), p);
    policy_unref(p);
    policy_unref(p);
    policy_unref(NULL);
}

/* policy_route_group(): the groups each route's rules name (scoped and
 * unscoped rules, monitor ones, nested conditions), each once. */
static void test_route_groups(void **state)
{
    const char *text =
        "{\"rules\":["
        "{\"id\":\"a\",\"route\":\"wiki\",\"effect\":\"allow\",\"when\":{\"all\":["
        "{\"group\":\"staff\"},{\"not\":{\"group\":{\"any_of\":[\"interns\",\"staff\"]}}}]}},"
        "{\"id\":\"b\",\"route\":\"pay\",\"effect\":\"allow\",\"when\":{\"group\":"
        "{\"all_of\":[\"finance\",\"staff\"]}}},"
        "{\"id\":\"c\",\"route\":\"wiki\",\"effect\":\"deny\",\"mode\":\"monitor\","
        "\"when\":{\"group\":\"contractors\"}},"
        "{\"id\":\"d\",\"effect\":\"deny\",\"when\":{\"any\":[{\"country\":\"KP\"},"
        "{\"group\":\"blocked\"}]}},"
        "{\"id\":\"e\",\"route\":\"open\",\"effect\":\"allow\",\"when\":{\"ip\":\"10.0.0.0/8\"}}"
        "]}";
    static const struct {
        const char *route;
        const char *want; /* the names, joined with "," in policy group id order */
    } cases[] = {
        {"wiki", "staff,interns,contractors,blocked"},
        {"pay", "staff,finance,blocked"}, /* staff was interned first: id order */
        {"open", "blocked"},
        {"nosuch", "blocked"},
        {NULL, "blocked"},
    };
    char err[256], got[256];
    struct policy *p = policy_compile(text, strlen(text), NULL, err, sizeof(err));
    const char *g;
    size_t i, k, o;

    (void)state;
    if (p == NULL)
        fail_msg("%s", err);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        o = 0;
        got[0] = '\0';
        for (k = 0; (g = policy_route_group(p, -1, cases[i].route, k)) != NULL; k++)
            o += (size_t)snprintf(got + o, sizeof(got) - o, "%s%s", k ? "," : "", g);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("route %s: got \"%s\", want \"%s\"",
                     cases[i].route ? cases[i].route : "(null)", got, cases[i].want);
    }
    /* by index: the same as by name; an invalid index falls back to the name */
    assert_string_equal(policy_route_group(p, policy_route_index(p, "pay"), NULL, 1), "finance");
    assert_string_equal(policy_route_group(p, 99, "pay", 2), "blocked");
    assert_null(policy_route_group(p, policy_route_index(p, "pay"), NULL, 3));
    policy_unref(p);
}

static void test_custom_tiers(void **state)
{
    static const char *const tiers[] = {"low", "mid", "top"};
    static const char *const dup[] = {"low", "low"};
    struct policy_compile_opts o;
    char err[256];
    const char *ok = "{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
                     "\"when\":{\"device_tier\":{\"at_least\":\"mid\"}}}]}";
    const char *bad = "{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\","
                      "\"when\":{\"device_tier\":\"trusted\"}}]}";
    struct policy *p;

    (void)state;
    memset(&o, 0, sizeof(o));
    o.tiers = tiers;
    o.ntiers = 3;
    p = policy_compile(ok, strlen(ok), &o, err, sizeof(err));
    assert_non_null(p);
    assert_int_equal(policy_tier_index(p, "top"), 2);
    policy_unref(p);
    assert_null(policy_compile(bad, strlen(bad), &o, err, sizeof(err)));
    assert_string_equal(err, "rules: $.rules[0] (id \"a\").when.device_tier: unknown tier "
                             "\"trusted\" (known: low, mid, top)");
    o.tiers = dup;
    o.ntiers = 2;
    assert_null(policy_compile(ok, strlen(ok), &o, err, sizeof(err)));
    assert_string_equal(err, "rules: $: device tier \"low\" listed twice");
}

static void test_limits(void **state)
{
    char err[256], text[512];
    char id[POLICY_ID_MAX + 2];
    struct policy *p;

    (void)state;
    /* id length: 64 ok, 65 refused */
    memset(id, 'a', sizeof(id));
    id[POLICY_ID_MAX] = '\0';
    snprintf(text, sizeof(text),
             "{\"rules\":[{\"id\":\"%s\",\"effect\":\"deny\","
             "\"when\":{\"user\":\"x\"}}]}",
             id);
    p = compile_with(text, NULL, err, sizeof(err));
    assert_non_null(p);
    policy_unref(p);
    id[POLICY_ID_MAX] = 'a';
    id[POLICY_ID_MAX + 1] = '\0';
    snprintf(text, sizeof(text),
             "{\"rules\":[{\"id\":\"%s\",\"effect\":\"deny\","
             "\"when\":{\"user\":\"x\"}}]}",
             id);
    assert_null(compile_with(text, NULL, err, sizeof(err)));
    /* nesting: 32 levels ok */
    {
        char deep[4096];
        size_t o = 0;
        int i;
        o += (size_t)snprintf(deep + o, sizeof(deep) - o,
                              "{\"rules\":[{\"id\":\"a\",\"effect\":\"allow\",\"when\":");
        for (i = 0; i < 31; i++)
            o += (size_t)snprintf(deep + o, sizeof(deep) - o, "{\"not\":");
        o += (size_t)snprintf(deep + o, sizeof(deep) - o, "{\"user\":\"a\"}");
        for (i = 0; i < 31; i++)
            o += (size_t)snprintf(deep + o, sizeof(deep) - o, "}");
        snprintf(deep + o, sizeof(deep) - o, "}]}");
        p = compile_with(deep, NULL, err, sizeof(err));
        if (p == NULL)
            fail_msg("%s", err);
        policy_unref(p);
    }
    /* a tiny error buffer is still NUL-terminated */
    {
        char tiny[8];
        assert_null(compile_with("{\"rules\":5}", NULL, tiny, sizeof(tiny)));
        assert_int_equal(strlen(tiny), 7);
    }
    /* policy_load: missing file */
    assert_null(policy_load("/nonexistent/rules.json", NULL, err, sizeof(err)));
    assert_string_equal(err, "/nonexistent/rules.json: cannot open: No such file or directory");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_rules),    cmocka_unit_test(test_lint_mode),
        cmocka_unit_test(test_route_groups), cmocka_unit_test(test_custom_tiers),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
