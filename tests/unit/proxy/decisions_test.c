/*
 * decisions_test.c - the ring of recent decisions (wrap-around, merge of
 * the per-worker rings, filters, cut fields) and the what-if replay (the
 * aggregation with a fake evaluator, and a real replay through the
 * authorization runtime: record live decisions, replay them against a
 * proposed document).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <event2/event.h>
#include <jansson.h>
#include <netinet/in.h>

#include "authz.h"
#include "conf.h"
#include "decisions.h"
#include "devtrust.h"

/* 2026-05-20 (a Wednesday) 10:00 UTC */
#define NOW 1779271200

static struct sockaddr_in peer4;

/* A minimal input and result for recording (no runtime needed). */
static void fake(struct authz_input *in, struct authz_result *r, const char *route,
                 const char *user, const char *device, enum policy_effect e, const char *rule)
{
    memset(in, 0, sizeof(*in));
    memset(r, 0, sizeof(*r));
    in->route = route;
    in->has_identity = user != NULL;
    in->user_sub = user;
    in->user_email = user;
    in->device_id = device;
    in->device_tier = 3;
    in->device_score = 80;
    in->method = "GET";
    in->path = "/x?token=secret";
    in->path_len = strlen(in->path);
    in->now = NOW;
    peer4.sin_family = AF_INET;
    inet_pton(AF_INET, "192.0.2.7", &peer4.sin_addr);
    in->peer = (const struct sockaddr *)&peer4;
    r->decision.effect = e;
    r->decision.rule_id = rule;
    snprintf(r->client_ip, sizeof(r->client_ip), "192.0.2.7");
    snprintf(r->country, sizeof(r->country), "DE");
    snprintf(r->groups, sizeof(r->groups), "eng,staff");
}

struct collect {
    char ids[64][40];
    int64_t times[64];
    size_t n, stop_after;
};

static int collect_cb(const struct decision *d, void *arg)
{
    struct collect *c = arg;

    if (c->n < 64) {
        snprintf(c->ids[c->n], sizeof(c->ids[0]), "%s", d->request_id);
        c->times[c->n] = d->time_ms;
    }
    c->n++;
    return c->stop_after != 0 && c->n >= c->stop_after ? DECISIONS_STOP : DECISIONS_CONTINUE;
}

static void record_n(unsigned ring, int from, int to)
{
    struct authz_input in;
    struct authz_result r;
    char id[32];
    int i;

    for (i = from; i < to; i++) {
        fake(&in, &r, "wiki", "alice@corp.example", "dev-1", POLICY_ALLOW, "wiki-staff");
        snprintf(id, sizeof(id), "req-%d", i);
        decisions_record(ring, id, &in, NULL, &r);
    }
}

static void test_off(void **state)
{
    struct collect c = {0};

    (void)state;
    assert_int_equal(decisions_start(0, 2), 0);
    assert_int_equal(decisions_capacity(), 0);
    record_n(0, 0, 5);
    assert_int_equal(decisions_walk(collect_cb, &c), 0);
    assert_int_equal(c.n, 0);
    assert_int_equal(decisions_start(DECISIONS_MAX + 1, 1), -1);
    decisions_stop();
}

static void test_wrap_around(void **state)
{
    struct collect c = {0};
    char want[32];
    size_t i;

    (void)state;
    assert_int_equal(decisions_start(8, 1), 0);
    assert_int_equal(decisions_capacity(), 8);
    record_n(0, 0, 3);
    assert_int_equal(decisions_walk(collect_cb, &c), 3);
    assert_string_equal(c.ids[0], "req-2");
    assert_string_equal(c.ids[2], "req-0");
    memset(&c, 0, sizeof(c));
    record_n(0, 3, 20); /* 20 written, the ring keeps the last 8 */
    assert_int_equal(decisions_walk(collect_cb, &c), 8);
    for (i = 0; i < 8; i++) {
        snprintf(want, sizeof(want), "req-%zu", 19 - i);
        assert_string_equal(c.ids[i], want);
    }
    /* exactly one more than the capacity: the oldest goes */
    memset(&c, 0, sizeof(c));
    assert_int_equal(decisions_start(4, 1), 0);
    record_n(0, 0, 5);
    assert_int_equal(decisions_walk(collect_cb, &c), 4);
    assert_string_equal(c.ids[0], "req-4");
    assert_string_equal(c.ids[3], "req-1");
    /* a callback can stop the walk */
    memset(&c, 0, sizeof(c));
    c.stop_after = 2;
    assert_int_equal(decisions_walk(collect_cb, &c), 2);
    decisions_stop();
}

static void test_rings_merge(void **state)
{
    struct collect c = {0};
    size_t i;

    (void)state;
    /* 3 rings of 4: every ring keeps its own newest 4 */
    assert_int_equal(decisions_start(12, 3), 0);
    record_n(0, 0, 2);
    record_n(1, 2, 4);
    record_n(2, 4, 6);
    record_n(4, 6, 8); /* ring 4 % 3 == 1 */
    record_n(0, 8, 10);
    assert_int_equal(decisions_walk(collect_cb, &c), 10);
    /* newest first overall */
    for (i = 1; i < c.n; i++)
        assert_true(c.times[i - 1] >= c.times[i]);
    assert_string_equal(c.ids[9], "req-0");
    memset(&c, 0, sizeof(c));
    /* ring 1 wraps: its oldest go (2, 3, 6, 7, 10..15), the other rings
     * keep theirs (0, 1, 8, 9 and 4, 5) */
    record_n(1, 10, 20);
    assert_int_equal(decisions_walk(collect_cb, &c), 10);
    assert_string_equal(c.ids[0], "req-19");
    assert_string_equal(c.ids[3], "req-16");
    assert_string_equal(c.ids[4], "req-9");
    assert_string_equal(c.ids[9], "req-0");
    for (i = 0; i < c.n; i++)
        assert_string_not_equal(c.ids[i], "req-15");
    decisions_stop();
}

struct first {
    json_t *json;
    int incomplete, path_cut, groups_cut;
    size_t nattrs;
    char path[300], groups[64], attr0[64];
    struct decisions_filter f;
    size_t matched;
};

static int first_cb(const struct decision *d, void *arg)
{
    struct first *f = arg;

    if (f->json == NULL) {
        f->json = decisions_to_json(d);
        f->incomplete = d->incomplete;
        f->path_cut = d->path_cut;
        f->groups_cut = d->groups_cut;
        f->nattrs = d->nattrs;
        snprintf(f->path, sizeof(f->path), "%s", d->path);
        snprintf(f->groups, sizeof(f->groups), "%s", d->groups);
        if (d->nattrs > 0)
            snprintf(f->attr0, sizeof(f->attr0), "%s=%s", d->attrs[0].name, d->attrs[0].value);
    }
    return DECISIONS_STOP;
}

static void test_fields_and_cuts(void **state)
{
    struct authz_input in;
    struct authz_result r;
    struct devtrust_verdict v;
    struct policy_attr attrs[2] = {{"platform", "linux"}, {"status", "active"}};
    struct first f;
    char longpath[DECISIONS_PATH_MAX + 50];

    (void)state;
    assert_int_equal(decisions_start(4, 1), 0);
    memset(&v, 0, sizeof(v));
    snprintf(v.tier_name, sizeof(v.tier_name), "trusted");
    snprintf(v.status, sizeof(v.status), "active");
    fake(&in, &r, "wiki", "alice@corp.example", "dev-1", POLICY_DENY, "default-deny");
    in.attrs = attrs;
    in.nattrs = 2;
    in.device_owner = "alice@corp.example";
    in.mfa = 1;
    decisions_record(0, "r1", &in, &v, &r);
    memset(&f, 0, sizeof(f));
    decisions_walk(first_cb, &f);
    assert_non_null(f.json);
    assert_false(f.incomplete);
    /* the query is never kept */
    assert_string_equal(f.path, "/x");
    assert_string_equal(json_string_value(json_object_get(f.json, "path")), "/x");
    assert_string_equal(json_string_value(json_object_get(f.json, "effect")), "deny");
    assert_string_equal(json_string_value(json_object_get(f.json, "rule")), "default-deny");
    assert_string_equal(json_string_value(json_object_get(f.json, "tier")), "trusted");
    assert_string_equal(json_string_value(json_object_get(f.json, "country")), "DE");
    assert_string_equal(json_string_value(json_object_get(f.json, "client_ip")), "192.0.2.7");
    assert_int_equal(json_array_size(json_object_get(f.json, "groups")), 2);
    assert_true(json_is_true(json_object_get(f.json, "mfa")));
    assert_int_equal(f.nattrs, 2);
    assert_string_equal(f.attr0, "platform=linux");
    json_decref(f.json);

    /* a long path is cut and the record is not replayable */
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    in.path = longpath;
    in.path_len = strlen(longpath);
    decisions_record(0, "r2", &in, &v, &r);
    memset(&f, 0, sizeof(f));
    decisions_walk(first_cb, &f);
    assert_true(f.incomplete);
    assert_true(f.path_cut);
    assert_int_equal(strlen(f.path), DECISIONS_PATH_MAX);
    json_decref(f.json);

    /* a path of exactly the limit is kept whole */
    longpath[DECISIONS_PATH_MAX] = '\0';
    in.path_len = DECISIONS_PATH_MAX;
    decisions_record(0, "r3", &in, &v, &r);
    memset(&f, 0, sizeof(f));
    decisions_walk(first_cb, &f);
    assert_false(f.incomplete);
    assert_false(f.path_cut);
    json_decref(f.json);

    /* groups that did not fit the budget: not replayable */
    in.path = "/";
    in.path_len = 1;
    r.groups_dropped = 1;
    decisions_record(0, "r4", &in, &v, &r);
    memset(&f, 0, sizeof(f));
    decisions_walk(first_cb, &f);
    assert_true(f.incomplete);
    assert_true(f.groups_cut);
    json_decref(f.json);
    decisions_stop();
}

/* Fill the record's string buffer to every possible end: whatever fits is
 * kept whole, the rest is left out and the record is incomplete (ASan
 * checks the bounds; a fuzzer found the exactly-full case). */
static void test_blob_full(void **state)
{
    struct authz_input in;
    struct authz_result r;
    struct policy_attr attrs[DECISIONS_ATTRS_MAX];
    static char vals[DECISIONS_ATTRS_MAX][200];
    struct first f;
    size_t len, i, nincomplete = 0;

    (void)state;
    /* one slot: a write past its end leaves the allocation (ASan) */
    assert_int_equal(decisions_start(1, 1), 0);
    for (len = 1; len < 200; len++) {
        fake(&in, &r, "wiki", "alice@corp.example", "dev-1", POLICY_ALLOW, "wiki-staff");
        for (i = 0; i < DECISIONS_ATTRS_MAX; i++) {
            memset(vals[i], 'v', sizeof(vals[i]));
            vals[i][(len + i) % sizeof(vals[i])] = '\0';
            vals[i][sizeof(vals[i]) - 1] = '\0';
            attrs[i].name = "n";
            attrs[i].value = vals[i];
        }
        in.attrs = attrs;
        in.nattrs = DECISIONS_ATTRS_MAX;
        decisions_record(0, "full", &in, NULL, &r);
        memset(&f, 0, sizeof(f));
        decisions_walk(first_cb, &f);
        assert_non_null(f.json);
        /* the attributes that did not fit make it incomplete, nothing else */
        assert_int_equal(f.incomplete, f.nattrs < DECISIONS_ATTRS_MAX);
        nincomplete += f.incomplete;
        assert_string_equal(f.groups, "eng,staff");
        json_decref(f.json);
    }
    /* both sides of the limit were tried */
    assert_true(nincomplete > 0 && nincomplete < 199);
    decisions_stop();
}

static int match_cb(const struct decision *d, void *arg)
{
    struct first *f = arg;

    if (decisions_match(&f->f, d))
        f->matched++;
    return DECISIONS_CONTINUE;
}

static size_t count_matching(const char *user, const char *device, const char *route,
                             const char *effect)
{
    struct first f;

    memset(&f, 0, sizeof(f));
    f.f.user = user;
    f.f.device = device;
    f.f.route = route;
    f.f.effect = effect;
    decisions_walk(match_cb, &f);
    return f.matched;
}

static void test_filters(void **state)
{
    struct authz_input in;
    struct authz_result r;

    (void)state;
    assert_int_equal(decisions_start(16, 2), 0);
    fake(&in, &r, "wiki", "alice@corp.example", "dev-1", POLICY_ALLOW, "wiki-staff");
    in.user_sub = "00u1";
    decisions_record(0, "a", &in, NULL, &r);
    fake(&in, &r, "wiki", "bob@corp.example", "dev-2", POLICY_DENY, "default-deny");
    decisions_record(1, "b", &in, NULL, &r);
    fake(&in, &r, "payroll", "bob@corp.example", "dev-2", POLICY_STEP_UP, "payroll");
    decisions_record(0, "c", &in, NULL, &r);
    fake(&in, &r, "payroll", NULL, "dev-3", POLICY_DENY, "default-deny");
    decisions_record(1, "d", &in, NULL, &r);

    assert_int_equal(count_matching(NULL, NULL, NULL, NULL), 4);
    assert_int_equal(count_matching("", "", "", ""), 4);
    assert_int_equal(count_matching("00u1", NULL, NULL, NULL), 1);
    assert_int_equal(count_matching("ALICE@corp.example", NULL, NULL, NULL), 1);
    assert_int_equal(count_matching("bob@corp.example", NULL, NULL, NULL), 2);
    assert_int_equal(count_matching(NULL, "dev-2", NULL, NULL), 2);
    assert_int_equal(count_matching(NULL, "dev-", NULL, NULL), 0);
    assert_int_equal(count_matching(NULL, NULL, "payroll", NULL), 2);
    assert_int_equal(count_matching(NULL, NULL, NULL, "deny"), 2);
    assert_int_equal(count_matching(NULL, NULL, NULL, "step_up"), 1);
    assert_int_equal(count_matching("bob@corp.example", "dev-2", "wiki", "deny"), 1);
    assert_int_equal(count_matching("bob@corp.example", "dev-2", "wiki", "allow"), 0);
    decisions_stop();
}

/* ---- what-if with a fake evaluator ----------------------------------------- */

/* The proposal: bob is allowed everywhere, everyone else denied. */
static enum policy_effect fake_eval(const struct policy *p, const struct decision *d,
                                    const char **rule, void *arg)
{
    (void)p;
    (*(int *)arg)++;
    if (strcmp(d->user_email, "bob@corp.example") == 0) {
        *rule = "bob-anywhere";
        return POLICY_ALLOW;
    }
    *rule = "default-deny";
    return POLICY_DENY;
}

static struct decision rec(const char *route, const char *user, const char *device,
                           enum policy_effect e)
{
    struct decision d;

    memset(&d, 0, sizeof(d));
    d.route = route;
    d.user_sub = user;
    d.user_email = user;
    d.device_id = device;
    d.effect = e;
    d.rule_id = "old";
    d.request_id = d.method = d.path = d.tier_name = d.owner = d.status = d.client_ip = d.country =
        d.groups = "";
    d.has_identity = 1;
    return d;
}

static json_t *find_change(json_t *arr, const char *route, const char *user)
{
    size_t i;
    json_t *v;

    json_array_foreach(arr, i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "route")), route) == 0 &&
            strcmp(json_string_value(json_object_get(v, "user")), user) == 0)
            return v;
    }
    return NULL;
}

static void test_whatif_aggregation(void **state)
{
    struct decision recs[9];
    json_t *res, *ch, *br;
    int calls = 0;

    (void)state;
    recs[0] = rec("wiki", "bob@corp.example", "dev-2", POLICY_DENY);         /* gain */
    recs[1] = rec("wiki", "bob@corp.example", "dev-2", POLICY_DENY);         /* gain, same group */
    recs[2] = rec("wiki", "bob@corp.example", "dev-2", POLICY_STEP_UP);      /* gain, other "was" */
    recs[3] = rec("wiki", "alice@corp.example", "dev-1", POLICY_ALLOW);      /* loss */
    recs[4] = rec("wiki", "alice@corp.example", "dev-1", POLICY_DENY);       /* unchanged */
    recs[5] = rec("payroll", "bob@corp.example", "dev-2", POLICY_ALLOW);     /* unchanged */
    recs[6] = rec("payroll", "carol@corp.example", "dev-3", POLICY_ALLOW);   /* loss */
    recs[7] = rec("payroll", "carol@corp.example", "dev-3", POLICY_STEP_UP); /* unchanged */
    recs[8] = rec("payroll", "carol@corp.example", "dev-3", POLICY_ALLOW);   /* skipped */
    recs[8].incomplete = 1;

    res = whatif_replay(NULL, recs, 9, fake_eval, &calls);
    assert_non_null(res);
    assert_int_equal(calls, 8); /* the incomplete record is never evaluated */
    assert_int_equal(json_integer_value(json_object_get(res, "replayed")), 8);
    assert_int_equal(json_integer_value(json_object_get(res, "skipped")), 1);

    assert_int_equal(json_array_size(json_object_get(res, "gains")), 2);
    ch = json_array_get(json_object_get(res, "gains"), 0); /* most frequent first */
    assert_string_equal(json_string_value(json_object_get(ch, "user")), "bob@corp.example");
    assert_string_equal(json_string_value(json_object_get(ch, "device")), "dev-2");
    assert_string_equal(json_string_value(json_object_get(ch, "was")), "deny");
    assert_string_equal(json_string_value(json_object_get(ch, "now")), "allow");
    assert_string_equal(json_string_value(json_object_get(ch, "rule")), "bob-anywhere");
    assert_int_equal(json_integer_value(json_object_get(ch, "count")), 2);
    ch = json_array_get(json_object_get(res, "gains"), 1);
    assert_string_equal(json_string_value(json_object_get(ch, "was")), "step_up");
    assert_int_equal(json_integer_value(json_object_get(ch, "count")), 1);

    assert_int_equal(json_array_size(json_object_get(res, "losses")), 2);
    ch = find_change(json_object_get(res, "losses"), "wiki", "alice@corp.example");
    assert_non_null(ch);
    assert_string_equal(json_string_value(json_object_get(ch, "now")), "deny");
    assert_int_equal(json_integer_value(json_object_get(ch, "count")), 1);
    assert_non_null(find_change(json_object_get(res, "losses"), "payroll", "carol@corp.example"));
    assert_null(find_change(json_object_get(res, "losses"), "payroll", "bob@corp.example"));

    br = json_object_get(json_object_get(res, "by_route"), "wiki");
    assert_int_equal(json_integer_value(json_object_get(br, "gains")), 3);
    assert_int_equal(json_integer_value(json_object_get(br, "losses")), 1);
    assert_int_equal(json_integer_value(json_object_get(br, "unchanged")), 1);
    br = json_object_get(json_object_get(res, "by_route"), "payroll");
    assert_int_equal(json_integer_value(json_object_get(br, "gains")), 0);
    assert_int_equal(json_integer_value(json_object_get(br, "losses")), 1);
    assert_int_equal(json_integer_value(json_object_get(br, "unchanged")), 2);
    json_decref(res);

    /* nothing recorded: an empty answer */
    res = whatif_replay(NULL, recs, 0, fake_eval, &calls);
    assert_int_equal(json_integer_value(json_object_get(res, "replayed")), 0);
    assert_int_equal(json_array_size(json_object_get(res, "gains")), 0);
    assert_int_equal(json_object_size(json_object_get(res, "by_route")), 0);
    json_decref(res);
}

/* ---- what-if through the authorization runtime ----------------------------- */

static const char *RULES =
    "{\"version\":\"v1\",\"rules\":["
    "{\"id\":\"block-kp\",\"effect\":\"deny\",\"when\":{\"country\":{\"in\":[\"KP\"]}}},"
    "{\"id\":\"wiki-staff\",\"route\":\"wiki\",\"effect\":\"allow\",\"when\":{\"all\":["
    "{\"group\":\"staff\"},{\"device_tier\":{\"at_least\":\"trusted\"}}]}}]}";

/* The proposal: contractors on the wiki too; staff only from 10/8. */
static const char *PROPOSED =
    "{\"version\":\"v2\",\"rules\":["
    "{\"id\":\"wiki-staff\",\"route\":\"wiki\",\"effect\":\"allow\",\"when\":{\"all\":["
    "{\"group\":\"staff\"},{\"ip\":\"10.0.0.0/8\"}]}},"
    "{\"id\":\"wiki-contractors\",\"route\":\"wiki\",\"effect\":\"allow\",\"when\":{\"all\":["
    "{\"group\":\"contractors\"},{\"device_tier\":{\"at_least\":\"trusted\"}}]}}]}";

static const char *DIR =
    "{\"groups\":{\"staff\":{},\"eng\":{\"member_of\":[\"staff\"]},\"contractors\":{}},"
    "\"users\":{\"alice@corp.example\":{\"groups\":[\"eng\"],\"subject\":\"00u1\"},"
    "\"bob@corp.example\":{\"groups\":[\"contractors\"]}}}";

static char tmpdir[256];

static void put(const char *name, const char *text)
{
    char p[512];
    FILE *f;

    snprintf(p, sizeof(p), "%s/%s", tmpdir, name);
    f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void live(struct authz_input *in, const char *email, const char *sub, const char *ip,
                 const char *tier)
{
    static struct sockaddr_in sa;

    memset(in, 0, sizeof(*in));
    in->route = "wiki";
    in->has_identity = 1;
    in->user_email = email;
    in->user_sub = sub;
    in->device_id = "dev-9";
    in->device_tier = authz_tier_index(tier);
    in->device_score = 75;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
    in->peer = (const struct sockaddr *)&sa;
    in->method = "GET";
    in->path = "/";
    in->path_len = 1;
    in->now = NOW;
}

static int add_cb(const struct decision *d, void *arg)
{
    assert_int_equal(whatif_add(arg, d), 0);
    return DECISIONS_CONTINUE;
}

static void test_whatif_replay_authz(void **state)
{
    char text[2048], err[1024] = "", cmd[300];
    struct event_base *base = event_base_new();
    struct conf *c = NULL;
    struct authz_input in;
    struct authz_result *r = calloc(1, sizeof(*r));
    struct policy *p;
    struct whatif *w;
    json_t *res, *ch;
    size_t i;

    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/zt-decisions-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    put("rules.json", RULES);
    put("dir.json", DIR);
    snprintf(text, sizeof(text),
             "{\"listen\":[{\"address\":\"127.0.0.1:8443\"}],"
             "\"tls\":{\"certificate\":\"s.crt\",\"key\":\"s.key\",\"device_ca\":\"ca.crt\"},"
             "\"routes\":[{\"name\":\"wiki\",\"host\":\"wiki.test\","
             "\"upstream\":\"http://127.0.0.1:9000\"}],"
             "\"policy\":{\"rules\":\"rules.json\",\"directory\":{\"file\":\"dir.json\"}}}");
    if (conf_parse(text, strlen(text), "zt.json", tmpdir, CONF_NO_FS, &c, err, sizeof(err)) == -1)
        fail_msg("conf: %s", err);
    if (authz_start(base, c, err, sizeof(err)) == -1)
        fail_msg("start: %s", err);
    conf_unref(c);
    assert_int_equal(decisions_start(100, 2), 0);

    /* alice (staff) from 192.0.2.1 on a trusted device: allowed, 3 times */
    for (i = 0; i < 3; i++) {
        live(&in, "alice@corp.example", "00u1", "192.0.2.1", "trusted");
        authz_evaluate(&in, r);
        assert_int_equal(r->decision.effect, POLICY_ALLOW);
        decisions_record((unsigned)i, "a", &in, NULL, r);
    }
    /* alice from 10.1.2.3: allowed (and stays allowed) */
    live(&in, "alice@corp.example", "00u1", "10.1.2.3", "trusted");
    authz_evaluate(&in, r);
    decisions_record(0, "a2", &in, NULL, r);
    /* bob (contractor) on a trusted device: denied */
    live(&in, "bob@corp.example", NULL, "192.0.2.2", "trusted");
    authz_evaluate(&in, r);
    assert_int_equal(r->decision.effect, POLICY_DENY);
    decisions_record(1, "b", &in, NULL, r);
    /* bob on a basic device: denied, and still denied */
    live(&in, "bob@corp.example", NULL, "192.0.2.2", "basic");
    authz_evaluate(&in, r);
    decisions_record(1, "b2", &in, NULL, r);

    p = authz_compile_text(PROPOSED, strlen(PROPOSED), err, sizeof(err));
    if (p == NULL)
        fail_msg("compile: %s", err);
    w = whatif_new(p, NULL, NULL);
    assert_non_null(w);
    assert_int_equal(decisions_walk(add_cb, w), 6);
    res = whatif_result(w);
    assert_non_null(res);
    whatif_free(w);
    policy_unref(p);
    assert_int_equal(json_integer_value(json_object_get(res, "replayed")), 6);
    assert_int_equal(json_integer_value(json_object_get(res, "skipped")), 0);
    /* alice outside 10/8 loses (3 records, one group); bob on the trusted
     * device gains (by the recorded tier, not the live one); bob on the
     * basic device and alice from 10/8 stay as they were */
    assert_int_equal(json_array_size(json_object_get(res, "losses")), 1);
    ch = json_array_get(json_object_get(res, "losses"), 0);
    assert_string_equal(json_string_value(json_object_get(ch, "user")), "alice@corp.example");
    assert_string_equal(json_string_value(json_object_get(ch, "device")), "dev-9");
    assert_string_equal(json_string_value(json_object_get(ch, "was")), "allow");
    assert_string_equal(json_string_value(json_object_get(ch, "now")), "deny");
    assert_string_equal(json_string_value(json_object_get(ch, "rule")), "default-deny");
    assert_int_equal(json_integer_value(json_object_get(ch, "count")), 3);
    assert_int_equal(json_array_size(json_object_get(res, "gains")), 1);
    ch = json_array_get(json_object_get(res, "gains"), 0);
    assert_string_equal(json_string_value(json_object_get(ch, "user")), "bob@corp.example");
    assert_string_equal(json_string_value(json_object_get(ch, "rule")), "wiki-contractors");
    assert_int_equal(json_integer_value(json_object_get(ch, "count")), 1);
    ch = json_object_get(json_object_get(res, "by_route"), "wiki");
    assert_int_equal(json_integer_value(json_object_get(ch, "gains")), 1);
    assert_int_equal(json_integer_value(json_object_get(ch, "losses")), 3);
    assert_int_equal(json_integer_value(json_object_get(ch, "unchanged")), 2);
    json_decref(res);

    /* the recorded groups count, not the live directory's: bob's recorded
     * groups say contractors, even when the directory changes later */
    put("dir.json", "{\"groups\":{\"staff\":{},\"eng\":{},\"contractors\":{}},"
                    "\"users\":{}}");
    assert_int_equal(authz_directory_reload(err, sizeof(err)), 0);
    p = authz_compile_text(PROPOSED, strlen(PROPOSED), err, sizeof(err));
    assert_non_null(p);
    w = whatif_new(p, NULL, NULL);
    assert_int_equal(decisions_walk(add_cb, w), 6);
    res = whatif_result(w);
    assert_int_equal(json_array_size(json_object_get(res, "gains")), 1);
    json_decref(res);
    whatif_free(w);
    policy_unref(p);

    decisions_stop();
    authz_stop();
    free(r);
    event_base_free(base);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off),
        cmocka_unit_test(test_wrap_around),
        cmocka_unit_test(test_rings_merge),
        cmocka_unit_test(test_fields_and_cuts),
        cmocka_unit_test(test_blob_full),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_whatif_aggregation),
        cmocka_unit_test(test_whatif_replay_authz),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
