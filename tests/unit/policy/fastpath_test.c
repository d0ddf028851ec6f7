/*
 * fastpath_test.c - the evaluation shortcuts (group prefilter per rule,
 * group bitset, reasons formatted at compile time, quick leaves) decide and
 * explain exactly like the general evaluation.
 *
 * Differential: the same rules written so that no shortcut applies (a group
 * leaf wrapped in a one-element "any", a policy compiled without the
 * directory so that group tests go through the directory by name) must give
 * the same effect, deciding rule, reasons and monitor results for many
 * generated requests.
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

#define NOW 1779271200 /* 2026-05-20 10:00:00Z */
#define NGROUPS 12
#define NUSERS 40

static const char *const routes[] = {"wiki", "payroll", "api"};
static const char *const countries[] = {"DE", "FR", "US", "KP", "unknown", ""};
static const char *const methods[] = {"GET", "POST", "HEAD"};
static const char *const paths[] = {"/", "/p1/x", "/p2", "/api/v1/r1/items", "/p10"};

static struct directory *dir;
static char users[NUSERS][32];

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static void add(char **b, size_t *n, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    int w;

    for (;;) {
        va_start(ap, fmt);
        w = vsnprintf(*b + *n, *cap - *n, fmt, ap);
        va_end(ap);
        assert_true(w >= 0);
        if ((size_t)w < *cap - *n) {
            *n += (size_t)w;
            return;
        }
        *cap *= 2;
        *b = realloc(*b, *cap);
        assert_non_null(*b);
    }
}

static int setup(void **state)
{
    char *b = malloc(256), err[256];
    size_t n = 0, cap = 256;
    int g, u;

    (void)state;
    add(&b, &n, &cap, "{\"groups\":{");
    for (g = 0; g < NGROUPS; g++)
        add(&b, &n, &cap, "%s\"g%d\":{%s}", g ? "," : "", g,
            g == 5 ? "\"member_of\":[\"g1\"]" : "");
    add(&b, &n, &cap, "},\"users\":{");
    for (u = 0; u < NUSERS; u++) {
        snprintf(users[u], sizeof(users[u]), "user%d@corp.example", u);
        if (u % 7 == 6) /* some users in no group at all */
            add(&b, &n, &cap, "%s\"%s\":{}", u ? "," : "", users[u]);
        else {
            uint32_t g1 = rnd(NGROUPS), g2 = (g1 + 1 + rnd(NGROUPS - 1)) % NGROUPS;
            add(&b, &n, &cap, "%s\"%s\":{\"groups\":[\"g%u\",\"g%u\"]}", u ? "," : "", users[u], g1,
                g2);
        }
    }
    add(&b, &n, &cap, "}}");
    dir = directory_parse(b, n, "dir.json", err, sizeof(err));
    free(b);
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

/* A group condition; wrapped: inside a one-element "any" (no shortcut). */
static void group_cond(char **b, size_t *n, size_t *cap, int wrapped, uint32_t kind, uint32_t g)
{
    if (wrapped)
        add(b, n, cap, "{\"any\":[");
    if (kind == 0)
        add(b, n, cap, "{\"group\":\"g%u\"}", g);
    else
        add(b, n, cap, "{\"group\":{\"any_of\":[\"g%u\",\"g%u\",\"g%u\"]}}", g, (g + 3) % NGROUPS,
            (g + 7) % NGROUPS);
    if (wrapped)
        add(b, n, cap, "]}");
}

static void other_cond(char **b, size_t *n, size_t *cap, uint32_t k)
{
    switch (k % 9) {
    case 0:
        add(b, n, cap, "{\"device_tier\":{\"at_least\":\"trusted\"}}");
        break;
    case 1:
        add(b, n, cap, "{\"country\":{\"in\":[\"DE\",\"FR\"]}}");
        break;
    case 2:
        add(b, n, cap, "{\"ip\":\"10.0.0.0/8\"}");
        break;
    case 3:
        add(b, n, cap, "{\"path\":{\"prefix\":\"/p1\"}}");
        break;
    case 4:
        add(b, n, cap, "{\"device_score\":{\"at_least\":50}}");
        break;
    case 5:
        add(b, n, cap, "{\"auth_age\":{\"max\":\"1h\"}}");
        break;
    case 6:
        add(b, n, cap, "{\"group\":{\"all_of\":[\"g1\",\"g5\"]}}");
        break;
    case 7:
        add(b, n, cap, "{\"not\":{\"group\":\"g2\"}}");
        break;
    default:
        add(b, n, cap, "{\"method\":{\"in\":[\"GET\",\"HEAD\"]}}");
        break;
    }
}

/* The same random rules twice: with shortcuts possible (wrapped 0) or not. */
static char *make_rules(uint64_t seed, int wrapped)
{
    char *b = malloc(1024);
    size_t n = 0, cap = 1024;
    int i, k;

    rng = seed;
    add(&b, &n, &cap, "{\"version\":\"t\",\"rules\":[");
    add(&b, &n, &cap, "{\"id\":\"embargo\",\"effect\":\"deny\",\"when\":{\"country\":\"KP\"}}");
    add(&b, &n, &cap,
        ",{\"id\":\"mon\",\"effect\":\"allow\",\"mode\":\"monitor\",\"when\":{\"all\":[");
    group_cond(&b, &n, &cap, wrapped, 0, 3);
    add(&b, &n, &cap, "]}}");
    for (i = 0; i < 30; i++) {
        int deny = rnd(5) == 0, nk = (int)rnd(3);
        uint32_t route = rnd(4);
        add(&b, &n, &cap, ",{\"id\":\"r%d\",\"effect\":\"%s\"", i, deny ? "deny" : "allow");
        if (route < 3)
            add(&b, &n, &cap, ",\"route\":\"%s\"", routes[route]);
        if (rnd(3) == 0 && nk == 0) {
            add(&b, &n, &cap, ",\"when\":");
            group_cond(&b, &n, &cap, wrapped, rnd(2), rnd(NGROUPS));
            add(&b, &n, &cap, "}");
            continue;
        }
        add(&b, &n, &cap, ",\"when\":{\"all\":[");
        group_cond(&b, &n, &cap, wrapped, rnd(2), rnd(NGROUPS));
        for (k = 0; k < nk; k++) {
            add(&b, &n, &cap, ",");
            other_cond(&b, &n, &cap, rnd(100));
        }
        add(&b, &n, &cap, "]}}");
    }
    add(&b, &n, &cap, "]}");
    return b;
}

static struct policy *compile(const char *text, const struct directory *d)
{
    struct policy_compile_opts o;
    struct policy *p;
    char err[512];

    memset(&o, 0, sizeof(o));
    o.name = "rules.json";
    o.routes = routes;
    o.nroutes = 3;
    o.dir = d;
    p = policy_compile(text, strlen(text), &o, err, sizeof(err));
    if (p == NULL)
        print_error("%s\n", err);
    assert_non_null(p);
    return p;
}

static void make_ctx(struct policy_ctx *c, int i)
{
    uint32_t u = rnd(NUSERS);

    policy_ctx_init(c);
    c->route_index = (int)rnd(4) - 1 + (i % 2); /* some unknown (-1) */
    if (c->route_index > 2)
        c->route_index = 2;
    c->identity = rnd(8) != 0;
    c->user = users[u];
    c->email = users[u];
    c->dir = dir;
    assert_int_equal(directory_user_groups(dir, c->user, c->email, &c->groups, &c->ngroups), 0);
    if (!c->identity) {
        c->groups = NULL;
        c->ngroups = 0;
    }
    c->auth_time = NOW - (int64_t)rnd(7200);
    c->mfa = (int)rnd(2);
    c->device_tier = (int)rnd(6) - 1;
    c->device_score = (int)rnd(101) - 1;
    c->device_stale = rnd(10) == 0;
    c->ip_family = rnd(6) == 0 ? 0 : AF_INET;
    c->ip[0] = rnd(2) ? 10 : 192;
    c->ip[1] = 168;
    snprintf(c->country, sizeof(c->country), "%s", countries[rnd(6)]);
    c->method = methods[rnd(3)];
    c->path = paths[rnd(5)];
    c->now = NOW;
}

static void assert_same(const struct policy_decision *a, const struct policy_decision *b)
{
    size_t i;

    assert_int_equal(a->effect, b->effect);
    assert_string_equal(a->rule_id, b->rule_id);
    assert_int_equal(a->step_up_max_age, b->step_up_max_age);
    assert_int_equal(a->step_up_mfa, b->step_up_mfa);
    assert_int_equal(a->nreasons, b->nreasons);
    assert_int_equal(a->reasons_dropped, b->reasons_dropped);
    for (i = 0; i < a->nreasons; i++)
        assert_string_equal(policy_decision_reason(a, i), policy_decision_reason(b, i));
    assert_int_equal(a->nmonitor, b->nmonitor);
    for (i = 0; i < a->nmonitor; i++) {
        assert_string_equal(a->monitor[i].rule_id, b->monitor[i].rule_id);
        assert_int_equal(a->monitor[i].matched, b->monitor[i].matched);
        assert_int_equal(a->monitor[i].would_decide, b->monitor[i].would_decide);
    }
}

static void test_differential(void **state)
{
    static struct policy_decision d1, d2, d3;
    uint64_t seed;
    int i, effects[3] = {0, 0, 0}, reasons = 0;

    (void)state;
    for (seed = 1; seed <= 20; seed++) {
        char *fast_text = make_rules(seed * 7919, 0), *slow_text = make_rules(seed * 7919, 1);
        struct policy *fast = compile(fast_text, dir), *slow = compile(slow_text, dir);
        struct policy *unbound = compile(fast_text, NULL);

        rng = seed;
        for (i = 0; i < 400; i++) {
            struct policy_ctx c;
            make_ctx(&c, i);
            policy_eval(fast, &c, &d1);
            policy_eval(slow, &c, &d2);
            policy_eval(unbound, &c, &d3);
            assert_same(&d1, &d2);
            assert_same(&d1, &d3);
            effects[d1.effect]++;
            reasons += (int)d1.nreasons;
        }
        policy_unref(fast);
        policy_unref(slow);
        policy_unref(unbound);
        free(fast_text);
        free(slow_text);
    }
    /* the generated requests exercise every outcome */
    assert_true(effects[POLICY_ALLOW] > 100);
    assert_true(effects[POLICY_DENY] > 100);
    assert_true(effects[POLICY_STEP_UP] > 10);
    assert_true(reasons > 1000);
}

static void test_prefilter_reasons(void **state)
{
    static const char rules[] =
        "{\"rules\":["
        "{\"id\":\"a\",\"effect\":\"allow\",\"when\":{\"all\":[{\"group\":\"g0\"},"
        "{\"device_tier\":\"high\"}]}},"
        "{\"id\":\"b\",\"effect\":\"allow\",\"when\":{\"group\":{\"any_of\":[\"g1\",\"g2\"]}}},"
        "{\"id\":\"c\",\"effect\":\"allow\",\"when\":{\"group\":{\"all_of\":[\"g1\",\"g5\"]}}}"
        "]}";
    static struct policy_decision d;
    struct policy *p = compile(rules, dir);
    struct policy_ctx c;
    static const uint32_t none[1] = {0};

    (void)state;
    policy_ctx_init(&c);
    c.identity = 1;
    c.user = c.email = "nobody@corp.example";
    c.dir = dir;
    c.groups = none;
    c.ngroups = 0;
    c.now = NOW;
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(d.rule_id, "default-deny");
    assert_int_equal(d.nreasons, 3);
    assert_string_equal(policy_decision_reason(&d, 0), "a: group g0: not a member");
    assert_string_equal(policy_decision_reason(&d, 1), "b: group any_of [g1, g2]: not a member");
    assert_string_equal(policy_decision_reason(&d, 2),
                        "c: group all_of [g1, g5]: not a member of g1");

    /* no identity: the group leaves are unknown, not false */
    c.identity = 0;
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_int_equal(d.nreasons, 4);
    assert_string_equal(policy_decision_reason(&d, 0), "a: group: no identity");
    assert_string_equal(policy_decision_reason(&d, 1), "a: device_tier: unknown");
    policy_unref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_differential),
        cmocka_unit_test(test_prefilter_reasons),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
