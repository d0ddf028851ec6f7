/*
 * evalfast_test.c - the non-recursive rule evaluation, the rule guards
 * (method mask, country filter, path prefix byte), the method ids, the
 * per-request attribute cache and the reasons formatted at compile time
 * decide and explain exactly like the general evaluation.
 *
 * Differential: the same rules with every leaf wrapped in a one-element
 * "any" take none of these shortcuts (no rule shape, no guard); the two
 * policies must give the same decision, reasons and monitor results. Plus
 * the exact texts of the cases the shortcuts handle.
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

#include "policy.h"

#define NOW 1779271200 /* 2026-05-20 10:00:00Z */

static const char *const routes[] = {"app", "other"};

static uint64_t rng = 0x2545f4914f6cdd1dULL;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

struct buf {
    char *b;
    size_t n, cap;
};

static void add(struct buf *s, const char *fmt, ...)
{
    va_list ap;
    int w;

    for (;;) {
        va_start(ap, fmt);
        w = vsnprintf(s->b + s->n, s->cap - s->n, fmt, ap);
        va_end(ap);
        assert_true(w >= 0);
        if ((size_t)w < s->cap - s->n) {
            s->n += (size_t)w;
            return;
        }
        s->cap *= 2;
        s->b = realloc(s->b, s->cap);
        assert_non_null(s->b);
    }
}

static struct policy *compile(const char *text)
{
    struct policy_compile_opts o;
    struct policy *p;
    char err[512];

    memset(&o, 0, sizeof(o));
    o.name = "rules.json";
    o.routes = routes;
    o.nroutes = 2;
    p = policy_compile(text, strlen(text), &o, err, sizeof(err));
    if (p == NULL)
        print_error("%s\n%s\n", err, text);
    assert_non_null(p);
    return p;
}

static const char *const methods[] = {"GET",     "HEAD",    "POST",  "PUT",      "DELETE", "PATCH",
                                      "OPTIONS", "CONNECT", "TRACE", "PROPFIND", "GETX",   "P"};
static const char *const anames[] = {"status", "managed", "platform", "s"};
static const char *const avals[] = {"lost", "active", "true", "false", "tru", ""};
static const char *const countries[] = {"DE", "FR", "KP", "IR", "unknown", "SY"};
static const char *const prefixes[] = {"/", "/admin0", "/a", "/b/c"};

/* One leaf of the kinds the shortcuts handle, wrapped or not. */
static void leaf(struct buf *s, int wrapped)
{
    uint32_t k = rnd(7), i, n, st;

    if (wrapped)
        add(s, "{\"any\":[");
    switch (k) {
    case 0:
    case 1:
        n = 1 + rnd(3);
        st = rnd(12);
        add(s, "{\"method\":{\"in\":[");
        for (i = 0; i < n; i++) /* 5 and 12 are coprime: no duplicates */
            add(s, "%s\"%s\"", i > 0 ? "," : "", methods[(st + i * 5) % 12]);
        add(s, "]}}");
        break;
    case 2:
        n = 1 + rnd(3);
        st = rnd(6);
        add(s, "{\"country\":{\"in\":[");
        for (i = 0; i < n; i++)
            add(s, "%s\"%s\"", i > 0 ? "," : "", countries[(st + i) % 6]);
        add(s, "]}}");
        break;
    case 3:
        add(s, "{\"path\":{\"prefix\":\"%s\"}}", prefixes[rnd(4)]);
        break;
    case 4:
        add(s, "{\"device_attr\":{\"name\":\"%s\",\"is\":%s}}", anames[rnd(4)],
            rnd(2) ? "true" : "false");
        break;
    case 5:
        add(s, "{\"device_attr\":{\"name\":\"%s\",\"in\":[\"%s\",\"%s\"]}}", anames[rnd(4)],
            avals[rnd(3)], avals[3 + rnd(3)]);
        break;
    default:
        add(s, "{\"auth_age\":{\"max\":\"1h\"}}");
        break;
    }
    if (wrapped)
        add(s, "]}");
}

static char *make_rules(uint64_t seed, int wrapped)
{
    struct buf s = {malloc(512), 0, 512};
    int i, k;

    rng = seed;
    add(&s, "{\"version\":\"t\",\"rules\":[");
    for (i = 0; i < 24; i++) {
        uint32_t shape = rnd(4), n = 1 + rnd(3);
        add(&s, "%s{\"id\":\"r%d\",\"effect\":\"%s\"", i > 0 ? "," : "", i,
            rnd(3) == 0 ? "deny" : "allow");
        if (rnd(5) == 0)
            add(&s, ",\"mode\":\"monitor\"");
        if (rnd(2))
            add(&s, ",\"route\":\"%s\"", routes[rnd(2)]);
        add(&s, ",\"when\":");
        if (shape == 0) {
            leaf(&s, wrapped);
        } else {
            add(&s, "{\"all\":[");
            for (k = 0; k < (int)n; k++) {
                if (k > 0)
                    add(&s, ",");
                if (shape == 2 && k == 1) {
                    add(&s, "{\"not\":");
                    leaf(&s, wrapped);
                    add(&s, "}");
                } else {
                    leaf(&s, wrapped);
                }
            }
            add(&s, "]}");
        }
        add(&s, "}");
    }
    add(&s, "]}");
    return s.b;
}

static void make_ctx(struct policy_ctx *c, struct policy_attr *attrs)
{
    size_t i, na = rnd(4);

    policy_ctx_init(c);
    c->route_index = (int)rnd(3) - 1;
    c->identity = rnd(3) != 0;
    c->user = "u1";
    c->email = "u1@corp.example";
    c->auth_time = NOW - (int64_t)rnd(7200);
    c->device_tier = 2;
    c->device_score = 50;
    c->device_stale = rnd(12) == 0;
    for (i = 0; i < na; i++) {
        attrs[i].name = anames[rnd(4)];
        attrs[i].value = avals[rnd(6)];
    }
    c->device_attrs = attrs;
    c->ndevice_attrs = na;
    snprintf(c->country, sizeof(c->country), "%s",
             rnd(8) == 0   ? ""
             : rnd(8) == 0 ? "X"
                           : countries[rnd(6)]);
    c->method = rnd(12) == 0 ? NULL : methods[rnd(12)];
    c->path = rnd(12) == 0
                  ? NULL
                  : (const char *const[]){"/", "/admin0/x", "/a", "/b", "/admin01"}[rnd(5)];
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

/* The decision part of an explanation and each rule's "=> result" line:
 * what must not depend on how a rule is written. */
static void explain_outcomes(const char *e, char *out, size_t len)
{
    const char *r = strstr(e, "rules:\n"), *l;
    size_t n = 0;

    assert_non_null(r);
    assert_true((size_t)(r - e) < len);
    memcpy(out, e, (size_t)(r - e));
    n = (size_t)(r - e);
    for (l = strstr(r, "=> "); l != NULL; l = strstr(l + 3, "=> ")) {
        size_t k = strcspn(l, "\n") + 1;
        assert_true(n + k < len);
        memcpy(out + n, l, k);
        n += k;
    }
    out[n] = '\0';
}

static void test_differential(void **state)
{
    static struct policy_decision d1, d2;
    static char e1[32768], e2[32768], o1[8192], o2[8192];
    uint64_t seed;
    int i, effects[3] = {0, 0, 0}, reasons = 0, matched = 0;

    (void)state;
    for (seed = 1; seed <= 40; seed++) {
        char *fast_text = make_rules(seed * 104729, 0), *slow_text = make_rules(seed * 104729, 1);
        struct policy *fast = compile(fast_text), *slow = compile(slow_text);

        rng = seed;
        for (i = 0; i < 300; i++) {
            struct policy_attr attrs[4];
            struct policy_ctx c;
            size_t k;
            make_ctx(&c, attrs);
            policy_eval(fast, &c, &d1);
            policy_eval(slow, &c, &d2);
            assert_same(&d1, &d2);
            effects[d1.effect]++;
            reasons += (int)d1.nreasons;
            for (k = 0; k < d1.nmonitor; k++)
                matched += d1.monitor[k].matched != 0;
            if (i % 25 == 0) {
                /* explain walks the rules in full: same per-rule outcomes */
                policy_explain(fast, &c, e1, sizeof(e1));
                policy_explain(slow, &c, e2, sizeof(e2));
                explain_outcomes(e1, o1, sizeof(o1));
                explain_outcomes(e2, o2, sizeof(o2));
                assert_string_equal(o1, o2);
            }
        }
        policy_unref(fast);
        policy_unref(slow);
        free(fast_text);
        free(slow_text);
    }
    assert_true(effects[POLICY_ALLOW] > 200);
    assert_true(effects[POLICY_DENY] > 200);
    assert_true(effects[POLICY_STEP_UP] > 10);
    assert_true(reasons > 2000);
    assert_true(matched > 100);
}

/* A guard that rejects a rule records the same reason as evaluating it. */
static void test_guard_reasons(void **state)
{
    static const char rules[] =
        "{\"rules\":["
        "{\"id\":\"m\",\"effect\":\"allow\",\"when\":{\"all\":[{\"method\":{\"in\":[\"GET\","
        "\"HEAD\"]}},{\"path\":{\"prefix\":\"/\"}}]}},"
        "{\"id\":\"c\",\"effect\":\"allow\",\"when\":{\"country\":{\"in\":[\"DE\",\"FR\"]}}},"
        "{\"id\":\"p\",\"effect\":\"allow\",\"when\":{\"all\":[{\"path\":{\"prefix\":\"/admin\"}},"
        "{\"method\":\"PROPFIND\"}]}},"
        "{\"id\":\"x\",\"effect\":\"deny\",\"mode\":\"monitor\",\"when\":{\"method\":\"POST\"}}"
        "]}";
    static struct policy_decision d;
    struct policy *p = compile(rules);
    struct policy_ctx c;

    (void)state;
    policy_ctx_init(&c);
    c.method = "POST";
    c.path = "/x";
    memcpy(c.country, "US", 3);
    c.now = NOW;
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(d.rule_id, "default-deny");
    assert_int_equal(d.nreasons, 3);
    assert_string_equal(policy_decision_reason(&d, 0), "m: method POST not in [GET, HEAD]");
    assert_string_equal(policy_decision_reason(&d, 1), "c: country US not in [DE, FR]");
    assert_string_equal(policy_decision_reason(&d, 2), "p: path /x not under /admin");
    assert_int_equal(d.nmonitor, 1);
    assert_int_equal(d.monitor[0].matched, 1);

    /* a method that is no standard one: compared as a string */
    c.method = "PROPFIND";
    c.path = "/admin/y";
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW);
    assert_string_equal(d.rule_id, "p");
    assert_int_equal(d.nreasons, 2);
    assert_string_equal(policy_decision_reason(&d, 1), "method PROPFIND == PROPFIND");
    assert_int_equal(d.monitor[0].matched, 0);

    /* almost a standard method */
    c.method = "GETX";
    c.path = "/";
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(policy_decision_reason(&d, 0), "m: method GETX not in [GET, HEAD]");
    c.method = "HEAD";
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW);
    assert_string_equal(policy_decision_reason(&d, 0), "method HEAD in [GET, HEAD]");
    assert_string_equal(policy_decision_reason(&d, 1), "path / under /");

    /* unknown data is not false: the rule is evaluated and says so */
    c.method = NULL;
    memcpy(c.country, "\0", 1);
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(policy_decision_reason(&d, 0), "m: method: unknown");
    assert_string_equal(policy_decision_reason(&d, 1), "c: country: not looked up");
    policy_unref(p);
}

/* Attribute reasons formatted at compile time, and more attribute names than
 * the per-request cache has slots. */
static void test_attr_reasons(void **state)
{
    struct buf s = {malloc(512), 0, 512};
    static struct policy_decision d;
    struct policy_attr attrs[3] = {{"managed", "true"}, {"a39", "v"}, {"status", "lost"}};
    struct policy_ctx c;
    struct policy *p;
    int i;

    (void)state;
    add(&s, "{\"rules\":[{\"id\":\"lost\",\"effect\":\"deny\",\"when\":{\"device_attr\":{"
            "\"name\":\"status\",\"in\":[\"lost\",\"stolen\"]}}}");
    for (i = 0; i < 40; i++)
        add(&s,
            ",{\"id\":\"a%d\",\"effect\":\"allow\",\"when\":{\"all\":[{\"device_attr\":{\"name\":"
            "\"a%d\",\"equals\":\"v\"}},{\"not\":{\"device_attr\":{\"name\":\"managed\",\"is\":"
            "true}}}]}}",
            i, i);
    add(&s, ",{\"id\":\"m\",\"effect\":\"allow\",\"when\":{\"device_attr\":{\"name\":"
            "\"managed\",\"is\":true}}}]}");
    p = compile(s.b);
    policy_ctx_init(&c);
    c.device_attrs = attrs;
    c.ndevice_attrs = 3;
    c.now = NOW;
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(d.rule_id, "lost");
    assert_int_equal(d.nreasons, 1);
    assert_string_equal(policy_decision_reason(&d, 0),
                        "device_attr status \"lost\" in [lost, stolen]");

    c.ndevice_attrs = 2; /* no status */
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW);
    assert_string_equal(d.rule_id, "m");
    assert_string_equal(policy_decision_reason(&d, 0), "device_attr managed \"true\" is true");

    attrs[0].value = "false"; /* a39 (beyond the cached slots) decides */
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW);
    assert_string_equal(d.rule_id, "a39");
    assert_string_equal(policy_decision_reason(&d, 0), "device_attr a39 \"v\" == \"v\"");
    assert_string_equal(policy_decision_reason(&d, 1), "device_attr managed \"false\" is not true");

    attrs[0].value = "true"; /* default deny: the first failing condition of each rule */
    attrs[1].name = "b";
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW);
    c.device_attrs = attrs + 1;
    c.ndevice_attrs = 1;
    assert_int_equal(policy_eval(p, &c, &d), POLICY_DENY);
    assert_string_equal(policy_decision_reason(&d, 0), "a0: device_attr a0: missing");
    attrs[1].name = "a0";
    c.device_attrs = attrs;
    c.ndevice_attrs = 2;
    assert_int_equal(policy_eval(p, &c, &d), POLICY_ALLOW);
    assert_string_equal(d.rule_id, "m");
    policy_unref(p);
    free(s.b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_differential),
        cmocka_unit_test(test_guard_reasons),
        cmocka_unit_test(test_attr_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
