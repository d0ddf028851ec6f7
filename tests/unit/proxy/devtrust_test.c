/*
 * devtrust_test.c - the device-trust runtime with a real event loop: file
 * feeds reloaded on change, refused feeds keeping the last good snapshot,
 * staleness, posture submission (403/400/413/429), persistence across a
 * restart (with a truncated last line), admin overrides, reconfigure, and a
 * URL feed against a real HTTP server (200 + ETag, 304, 500 and retries).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <netinet/in.h>

#include "conf.h"
#include "devtrust.h"
#include "posture.h"

#define REC(ID, STATUS, EXTRA)                                                                     \
    "{\"id\":\"" ID "\",\"serial\":\"s-" ID "\",\"owner\":\"alice@corp.example\","                 \
    "\"managed\":true,\"status\":\"" STATUS "\",\"platform\":\"linux\",\"os_version\":\"12.4\","   \
    "\"model\":\"X1\",\"enrolled\":\"2024-01-02T03:04:05Z\"" EXTRA "}\n"

#define FEED_ACTIVE                                                                                \
    REC("dev-1", "active", ",\"department\":\"eng\",\"cost_center\":4711")                         \
    REC("dev-2", "active", "") REC("dev-3", "active", "")
#define FEED_LOST                                                                                  \
    REC("dev-1", "lost", ",\"department\":\"eng\",\"cost_center\":4711")                           \
    REC("dev-2", "active", "") REC("dev-3", "active", "")

struct fx {
    char dir[64];
    char feed[128];
    struct event_base *base;
    struct conf *conf;
};

static void write_file(const char *path, const char *text)
{
    char tmp[256];
    FILE *f;

    /* Like an export job: write aside, then rename into place. */
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, path), 0);
}

static struct conf *make_conf(struct fx *f, const char *section, int with_state)
{
    char text[4096], err[1024] = "";
    struct conf *c = NULL;

    snprintf(text, sizeof(text),
             "{\"listen\":[{\"address\":\"127.0.0.1:8443\"}],"
             "\"tls\":{\"certificate\":\"s.crt\",\"key\":\"s.key\",\"device_ca\":\"ca.crt\"},"
             "\"routes\":[{\"name\":\"app\",\"host\":\"app.test\","
             "\"upstream\":\"http://127.0.0.1:9000\"}]%s%s%s%s%s}",
             with_state ? ",\"state_dir\":\"" : "", with_state ? f->dir : "",
             with_state ? "/state\"" : "", section != NULL ? ",\"device_trust\":" : "",
             section != NULL ? section : "");
    if (conf_parse(text, strlen(text), "t.json", f->dir, CONF_NO_FS, &c, err, sizeof(err)) == -1)
        fail_msg("conf_parse: %s", err);
    return c;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    snprintf(f->dir, sizeof(f->dir), "/tmp/devtrust_test.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->feed, sizeof(f->feed), "%s/inventory.json", f->dir);
    f->base = event_base_new();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];

    devtrust_stop();
    conf_unref(f->conf);
    event_base_free(f->base);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void start(struct fx *f, const char *section, int with_state)
{
    char err[1024] = "";

    conf_unref(f->conf);
    f->conf = make_conf(f, section, with_state);
    if (devtrust_validate(f->conf, err, sizeof(err)) == -1)
        fail_msg("validate: %s", err);
    if (devtrust_start(f->base, f->conf, err, sizeof(err)) == -1)
        fail_msg("start: %s", err);
}

/* Run the loop in 50 ms slices until cond holds (at most 10 s). */
static int spin_until(struct fx *f, int (*cond)(void *), void *arg)
{
    int i;

    for (i = 0; i < 200; i++) {
        struct timeval tv = {0, 50000};
        if (cond(arg))
            return 1;
        event_base_loopexit(f->base, &tv);
        event_base_dispatch(f->base);
    }
    return cond(arg);
}

static int64_t now(void)
{
    return (int64_t)time(NULL);
}

static int has_failing(const struct devtrust_verdict *v, const char *id)
{
    size_t i;

    for (i = 0; i < v->nfailing; i++) {
        if (strcmp(v->failing[i].id, id) == 0)
            return 1;
    }
    return 0;
}

static const char *attr(const struct devtrust_verdict *v, const char *name)
{
    size_t i;

    for (i = 0; i < v->nattrs; i++) {
        if (strcmp(v->attrs[i].name, name) == 0)
            return v->attrs[i].value;
    }
    return NULL;
}

static void report(char *buf, size_t len, const char *device_id, const char *disk)
{
    char ts[POSTURE_TIME_MAX];

    assert_int_equal(posture_time_format(now() - 60, ts, sizeof(ts)), 0);
    snprintf(buf, len,
             "{%s%s%s\"collected_at\":\"%s\",\"agent_version\":\"1.2.3\","
             "\"os\":{\"name\":\"debian\",\"version\":\"12.4\",\"kernel\":\"6.1.0-18-amd64\"},"
             "\"disk_encryption\":%s,\"firewall\":true,\"screen_lock\":true,"
             "\"auto_updates\":true,\"days_since_patch\":3}",
             device_id ? "\"device_id\":\"" : "", device_id ? device_id : "",
             device_id ? "\"," : "", ts, disk);
}

static struct devtrust_stats stats_now(void)
{
    struct devtrust_stats st;

    devtrust_stats(now(), &st);
    return st;
}

/* ---- validation ---------------------------------------------------------- */

struct bad {
    const char *section;
    const char *expect;
};

static void test_validate(void **state)
{
    struct fx *f = *state;
    char path[256], err[1024];
    struct conf *c;
    size_t i;
    const struct bad cases[] = {
        {"[]", "t.json: $.device_trust: expected an object, got an array"},
        {"{\"bogus\":1}", "t.json: $.device_trust.bogus: unknown key"},
        {"{\"inventory\":{}}",
         "t.json: $.device_trust.inventory: expected exactly one of \"file\" or \"url\""},
        {"{\"inventory\":{\"file\":\"inventory.json\",\"url\":\"https://x\"}}",
         "$.device_trust.inventory: expected exactly one"},
        {"{\"inventory\":{\"file\":\"missing.json\"}}",
         "$.device_trust.inventory.file: cannot read \""},
        {"{\"inventory\":{\"file\":\"inventory.json\",\"poll\":\"1s\"}}",
         "$.device_trust.inventory.poll: only with \"url\", not with \"file\""},
        {"{\"inventory\":{\"file\":\"inventory.json\",\"format\":\"xml\"}}",
         "$.device_trust.inventory.format: expected \"auto\", \"json\" or \"ndjson\", got "
         "\"xml\""},
        {"{\"inventory\":{\"file\":\"inventory.json\",\"max_stale\":\"soon\"}}",
         "$.device_trust.inventory.max_stale: expected a duration"},
        {"{\"inventory\":{\"file\":\"inventory.json\",\"max_stale\":0}}",
         "$.device_trust.inventory.max_stale: expected a duration from 1s"},
        {"{\"inventory\":{\"file\":\"inventory.json\",\"allow_empty\":\"yes\"}}",
         "$.device_trust.inventory.allow_empty: expected true or false, got a string"},
        {"{\"inventory\":{\"url\":\"ftp://mdm/feed\"}}",
         "$.device_trust.inventory.url: expected an http:// or https:// URL"},
        {"{\"inventory\":{\"url\":\"https://mdm/a b\"}}",
         "$.device_trust.inventory.url: the URL contains a space"},
        {"{\"inventory\":{\"url\":\"https://mdm/feed\",\"poll\":\"500ms\"}}",
         "$.device_trust.inventory.poll: expected a duration from 1s to 86400s, got 0s"},
        {"{\"inventory\":{\"url\":\"http://mdm/feed\",\"bearer_token_file\":\"token\"}}",
         "$.device_trust.inventory.bearer_token_file: needs an https:// url"},
        {"{\"inventory\":{\"url\":\"https://mdm/feed\",\"bearer_token_file\":\"open\"}}",
         "must not be accessible by group or others (chmod 600)"},
        {"{\"inventory\":{\"url\":\"https://mdm/feed\",\"client_key\":\"token\"}}",
         "$.device_trust.inventory.client_cert: required with \"client_key\""},
        {"{\"posture\":{\"rate_limit_per_minute\":0}}",
         "$.device_trust.posture.rate_limit_per_minute: expected an integer 1..600"},
        {"{\"posture\":{\"burst\":1}}", "$.device_trust.posture.burst: unknown key"},
        {"{\"scoring\":{\"checks\":[{\"id\":\"x\",\"type\":\"firewall\",\"weight\":99}]}}",
         "t.json: $.device_trust.scoring.checks: the weights add up to 99"},
    };

    write_file(f->feed, FEED_ACTIVE);
    snprintf(path, sizeof(path), "%s/token", f->dir);
    write_file(path, "s3cr3t\n");
    chmod(path, 0600);
    snprintf(path, sizeof(path), "%s/open", f->dir);
    write_file(path, "s3cr3t\n");
    chmod(path, 0644);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        c = make_conf(f, cases[i].section, 0);
        err[0] = '\0';
        assert_int_equal(devtrust_validate(c, err, sizeof(err)), -1);
        if (strstr(err, cases[i].expect) == NULL)
            fail_msg("case %zu: got \"%s\", expected \"%s\"", i, err, cases[i].expect);
        conf_unref(c);
    }
    /* the good ones: none, a file, a url with everything */
    c = make_conf(f, NULL, 0);
    assert_int_equal(devtrust_validate(c, err, sizeof(err)), 0);
    conf_unref(c);
    c = make_conf(f,
                  "{\"inventory\":{\"file\":\"inventory.json\",\"max_stale\":\"7d\","
                  "\"format\":\"ndjson\",\"allow_empty\":true},\"posture\":{"
                  "\"rate_limit_per_minute\":600},\"scoring\":{}}",
                  0);
    if (devtrust_validate(c, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    conf_unref(c);
    c = make_conf(f,
                  "{\"inventory\":{\"url\":\"https://mdm/feed\",\"poll\":\"30s\",\"timeout\":5,"
                  "\"ca\":\"inventory.json\",\"bearer_token_file\":\"token\","
                  "\"max_stale\":\"1h\"}}",
                  0);
    if (devtrust_validate(c, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    conf_unref(c);
}

/* ---- no section: every device unknown ----------------------------------- */

static void test_no_section(void **state)
{
    struct fx *f = *state;
    struct devtrust_verdict v;
    char err[256];
    int64_t age;
    size_t n;

    start(f, NULL, 0);
    devtrust_evaluate("dev-1", NULL, now(), &v);
    assert_int_equal(v.known, 0);
    assert_string_equal(v.tier_name, "untrusted");
    assert_int_equal(v.tier, 0);
    assert_int_equal(v.inventory_stale, 0);
    assert_string_equal(v.status, "");
    assert_true(has_failing(&v, "device_unknown"));
    devtrust_feed_status(now(), &age, &n, err, sizeof(err));
    assert_int_equal(age, -1);
    assert_int_equal(n, 0);
    /* NULL and malformed ids are unknown devices, not crashes */
    devtrust_evaluate(NULL, NULL, now(), &v);
    assert_int_equal(v.known, 0);
    devtrust_evaluate("bad id with spaces", NULL, now(), &v);
    assert_string_equal(v.tier_name, "untrusted");
}

/* ---- file feed: load, reload, refusals ---------------------------------- */

static int dev1_lost(void *arg)
{
    struct devtrust_verdict v;

    (void)arg;
    devtrust_evaluate("dev-1", NULL, now(), &v);
    return strcmp(v.status, "lost") == 0;
}

static int refused_at_least(void *arg)
{
    return stats_now().loads_refused >= *(uint64_t *)arg;
}

static void test_file_feed(void **state)
{
    struct fx *f = *state;
    struct devtrust_verdict v;
    struct devtrust_stats st;
    char err[DEVTRUST_ERR_MAX];
    uint64_t want;
    int64_t age;
    size_t n;

    write_file(f->feed, FEED_ACTIVE);
    start(f, "{\"inventory\":{\"file\":\"inventory.json\",\"max_stale\":\"1h\"}}", 0);
    devtrust_evaluate("dev-1", "alice@corp.example", now(), &v);
    assert_int_equal(v.known, 1);
    assert_string_equal(v.status, "active");
    assert_string_equal(v.owner, "alice@corp.example");
    assert_int_equal(v.inventory_stale, 0);
    /* no posture yet: the hard fresh_posture check caps it at the remediation tier */
    assert_string_equal(v.tier_name, "identified");
    /* managed (20) + patch (10: a graced check that just started failing) */
    assert_int_equal(v.score, 30);
    assert_string_equal(v.failing[0].id, "fresh_posture");
    assert_int_equal(v.failing[0].hard, 1);
    assert_true(strlen(v.failing[0].remediation) > 0);
    /* brief: the same verdict but the failing checks and the attributes */
    {
        struct devtrust_verdict b;

        memset(&b, 0x5a, sizeof(b));
        devtrust_evaluate_brief("dev-1", "alice@corp.example", now(), &b);
        assert_int_equal(b.known, v.known);
        assert_int_equal(b.tier, v.tier);
        assert_string_equal(b.tier_name, v.tier_name);
        assert_int_equal(b.score, v.score);
        assert_int_equal(b.inventory_stale, v.inventory_stale);
        assert_int_equal(b.posture_stale, v.posture_stale);
        assert_string_equal(b.status, v.status);
        assert_string_equal(b.owner, v.owner);
        assert_int_equal(b.nfailing, 0);
        assert_int_equal(b.nattrs, 0);
        assert_true(v.nfailing > 0 && v.nattrs > 0);
    }
    assert_true(has_failing(&v, "disk"));
    assert_false(has_failing(&v, "managed"));
    assert_string_equal(attr(&v, "platform"), "linux");
    assert_string_equal(attr(&v, "managed"), "true");
    assert_string_equal(attr(&v, "model"), "X1");
    assert_string_equal(attr(&v, "department"), "eng");
    assert_string_equal(attr(&v, "cost_center"), "4711");
    devtrust_evaluate("dev-404", NULL, now(), &v);
    assert_int_equal(v.known, 0);
    assert_string_equal(v.tier_name, "untrusted");
    devtrust_feed_status(now(), &age, &n, err, sizeof(err));
    assert_int_equal(n, 3);
    assert_true(age >= 0 && age < 60);
    assert_string_equal(err, "");

    /* the device is reported lost: untrusted once the loop has seen the change */
    write_file(f->feed, FEED_LOST);
    assert_true(spin_until(f, dev1_lost, NULL));
    devtrust_evaluate("dev-1", NULL, now(), &v);
    assert_string_equal(v.tier_name, "untrusted");
    assert_string_equal(v.failing[0].id, "device_lost");
    st = stats_now();
    assert_int_equal(st.version, 2);
    assert_int_equal(st.loads_ok, 2);
    assert_int_equal(st.loads_refused, 0);

    /* malformed: refused, the last good one stays */
    write_file(f->feed, "[{\"id\":\"dev-1\",");
    want = 1;
    assert_true(spin_until(f, refused_at_least, &want));
    assert_true(dev1_lost(NULL));
    devtrust_feed_status(now(), &age, &n, err, sizeof(err));
    assert_int_equal(n, 3);
    assert_non_null(strstr(err, "inventory: "));

    /* a wrong type names the record and field */
    write_file(f->feed, REC("dev-1", "gone", ""));
    want = 2;
    assert_true(spin_until(f, refused_at_least, &want));
    devtrust_feed_status(now(), &age, &n, err, sizeof(err));
    assert_non_null(strstr(err, "$.status"));
    assert_true(dev1_lost(NULL));

    /* empty when the last one had devices: refused */
    write_file(f->feed, "[]");
    want = 3;
    assert_true(spin_until(f, refused_at_least, &want));
    devtrust_feed_status(now(), &age, &n, err, sizeof(err));
    assert_int_equal(n, 3);
    assert_non_null(strstr(err, "no devices"));
    st = stats_now();
    assert_int_equal(st.version, 2);
    assert_int_equal(st.loads_refused, 3);

    /* duplicates: refused */
    write_file(f->feed, REC("dev-1", "active", "") REC("dev-1", "lost", ""));
    want = 4;
    assert_true(spin_until(f, refused_at_least, &want));
    devtrust_feed_status(now(), &age, &n, err, sizeof(err));
    assert_non_null(strstr(err, "duplicate"));
    assert_true(dev1_lost(NULL));
}

static int active_again(void *arg)
{
    struct devtrust_verdict v;

    (void)arg;
    devtrust_evaluate("dev-1", NULL, now(), &v);
    return strcmp(v.status, "active") == 0;
}

static void test_allow_empty_and_format(void **state)
{
    struct fx *f = *state;
    char err[DEVTRUST_ERR_MAX];
    int64_t age;
    size_t n;

    write_file(f->feed, FEED_ACTIVE);
    start(f, "{\"inventory\":{\"file\":\"inventory.json\",\"format\":\"json\"}}", 0);
    /* NDJSON where "json" was configured: refused at start, nothing loaded */
    devtrust_feed_status(now(), &age, &n, err, sizeof(err));
    assert_int_equal(age, -1);
    assert_non_null(strstr(err, "format \"json\""));
    write_file(f->feed, "[" REC("dev-1", "active", "") "]");
    assert_true(spin_until(f, active_again, NULL));
    devtrust_stop();

    start(f, "{\"inventory\":{\"file\":\"inventory.json\",\"allow_empty\":true}}", 0);
    write_file(f->feed, "");
    {
        struct devtrust_stats st;
        int i;
        for (i = 0; i < 100; i++) {
            struct timeval tv = {0, 50000};
            st = stats_now();
            if (st.records == 0)
                break;
            event_base_loopexit(f->base, &tv);
            event_base_dispatch(f->base);
        }
        assert_int_equal(st.records, 0);
        assert_int_equal(st.loads_refused, 0);
        assert_int_equal(st.version, 2);
    }
}

static void test_max_stale(void **state)
{
    struct fx *f = *state;
    struct devtrust_verdict v;
    struct devtrust_stats st;
    struct timeval tv[2];
    int64_t t = now();

    write_file(f->feed, FEED_ACTIVE);
    start(f, "{\"inventory\":{\"file\":\"inventory.json\",\"max_stale\":\"10m\"}}", 0);
    devtrust_evaluate("dev-1", NULL, t, &v);
    assert_int_equal(v.inventory_stale, 0);
    assert_false(has_failing(&v, "inventory_active"));
    /* 10 minutes later it is still fresh; one more second and it is not */
    devtrust_evaluate("dev-1", NULL, t + 600 - 2, &v);
    assert_int_equal(v.inventory_stale, 0);
    devtrust_evaluate("dev-1", NULL, t + 3600, &v);
    assert_int_equal(v.inventory_stale, 1);
    assert_int_equal(v.known, 1);
    assert_true(has_failing(&v, "inventory_active"));
    assert_true(has_failing(&v, "managed"));
    assert_string_equal(v.tier_name, "untrusted");
    devtrust_stats(t + 3600, &st);
    assert_int_equal(st.inventory_stale, 1);
    devtrust_stop();

    /* an export that stopped: the file's age is the feed's age */
    tv[0].tv_sec = tv[1].tv_sec = (time_t)(t - 7200);
    tv[0].tv_usec = tv[1].tv_usec = 0;
    assert_int_equal(utimes(f->feed, tv), 0);
    start(f, "{\"inventory\":{\"file\":\"inventory.json\",\"max_stale\":\"1h\"}}", 0);
    devtrust_evaluate("dev-1", NULL, now(), &v);
    assert_int_equal(v.inventory_stale, 1);
    assert_int_equal(v.known, 1); /* still known, and a lost device would stay lost */
    /* touching it (the export ran, nothing changed) makes it fresh again */
    assert_int_equal(utimes(f->feed, NULL), 0);
    {
        int i;
        for (i = 0; i < 100; i++) {
            struct timeval s = {0, 50000};
            devtrust_evaluate("dev-1", NULL, now(), &v);
            if (!v.inventory_stale)
                break;
            event_base_loopexit(f->base, &s);
            event_base_dispatch(f->base);
        }
    }
    assert_int_equal(v.inventory_stale, 0);
    st = stats_now();
    assert_int_equal(st.loads_unchanged, 1);
    assert_int_equal(st.version, 1);
}

/* ---- posture ------------------------------------------------------------- */

static void test_posture_submit(void **state)
{
    struct fx *f = *state;
    struct devtrust_verdict v;
    char body[2048], big[POSTURE_MAX_BYTES + 2], err[DEVTRUST_ERR_MAX];
    int64_t t = now();
    int i;

    write_file(f->feed, FEED_ACTIVE);
    start(f,
          "{\"inventory\":{\"file\":\"inventory.json\",\"max_stale\":\"30d\"},"
          "\"posture\":{\"rate_limit_per_minute\":6}}",
          0);
    devtrust_evaluate("dev-1", NULL, t, &v);
    assert_string_equal(v.tier_name, "identified");

    /* a good report (without device_id: the certificate says who) */
    report(body, sizeof(body), NULL, "true");
    assert_int_equal(devtrust_posture_submit("dev-1", body, strlen(body), t, err, sizeof(err)), 0);
    devtrust_evaluate("dev-1", NULL, t, &v);
    assert_int_equal(v.score, 100);
    assert_string_equal(v.tier_name, "high");
    assert_int_equal(v.nfailing, 0);
    assert_int_equal(v.posture_stale, 0);
    /* a later report with the disk unencrypted costs 25 points */
    report(body, sizeof(body), "dev-1", "false");
    assert_int_equal(devtrust_posture_submit("dev-1", body, strlen(body), t, err, sizeof(err)), 0);
    devtrust_evaluate("dev-1", NULL, t, &v);
    assert_int_equal(v.score, 75);
    assert_string_equal(v.tier_name, "trusted");
    assert_true(has_failing(&v, "disk"));
    /* a day later the report is stale */
    devtrust_evaluate("dev-1", NULL, t + 2 * 86400, &v);
    assert_int_equal(v.posture_stale, 1);
    assert_string_equal(v.tier_name, "identified");

    /* another device's report over dev-1's certificate */
    report(body, sizeof(body), "dev-2", "true");
    assert_int_equal(devtrust_posture_submit("dev-1", body, strlen(body), t, err, sizeof(err)),
                     403);
    assert_non_null(strstr(err, "$.device_id"));
    devtrust_evaluate("dev-2", NULL, t, &v);
    assert_string_equal(v.tier_name, "identified"); /* nothing stored for dev-2 */

    /* malformed: 400 naming the field */
    assert_int_equal(
        devtrust_posture_submit("dev-2", "{\"disk_encryption\":3}", 21, t, err, sizeof(err)), 400);
    assert_non_null(strstr(err, "posture: $."));
    report(body, sizeof(body), NULL, "3");
    assert_int_equal(devtrust_posture_submit("dev-2", body, strlen(body), t, err, sizeof(err)),
                     400);
    assert_string_equal(err, "posture: $.disk_encryption: expected true, false or \"unknown\", "
                             "got 3");
    /* too large, before parsing: both sides of the limit */
    memset(big, ' ', sizeof(big));
    report(body, sizeof(body), NULL, "true");
    memcpy(big, body, strlen(body));
    assert_int_equal(
        devtrust_posture_submit("dev-2", big, POSTURE_MAX_BYTES + 1, t, err, sizeof(err)), 413);
    assert_int_equal(devtrust_posture_submit("dev-2", big, POSTURE_MAX_BYTES, t, err, sizeof(err)),
                     0);

    /* rate limit: 6 per minute as a bucket of 6, then one every 10 s */
    for (i = 0; i < 6; i++)
        assert_int_equal(devtrust_posture_submit("dev-3", body, strlen(body), t, err, sizeof(err)),
                         0);
    assert_int_equal(devtrust_posture_submit("dev-3", body, strlen(body), t, err, sizeof(err)),
                     429);
    assert_non_null(strstr(err, "6 per minute"));
    assert_int_equal(devtrust_posture_submit("dev-3", body, strlen(body), t + 9, err, sizeof(err)),
                     429);
    assert_int_equal(devtrust_posture_submit("dev-3", body, strlen(body), t + 20, err, sizeof(err)),
                     0);
    /* another device has its own bucket */
    assert_int_equal(devtrust_posture_submit("dev-1", body, strlen(body), t, err, sizeof(err)), 0);
    /* no certificate id: refused */
    assert_int_equal(devtrust_posture_submit("", body, strlen(body), t, err, sizeof(err)), 403);

    {
        struct devtrust_stats st = stats_now();
        assert_int_equal(st.posture_accepted, 11);
        assert_int_equal(st.posture_limited, 2);
        assert_int_equal(st.posture_refused, 5);
    }
}

static void test_override(void **state)
{
    struct fx *f = *state;
    struct devtrust_verdict v;
    char err[256];

    write_file(f->feed, FEED_LOST);
    start(f, "{\"inventory\":{\"file\":\"inventory.json\"}}", 0);
    assert_int_equal(devtrust_set_override("dev-2", "stolen", err, sizeof(err)), 0);
    devtrust_evaluate("dev-2", NULL, now(), &v);
    assert_string_equal(v.status, "stolen");
    assert_string_equal(v.tier_name, "untrusted");
    /* found: active again before the MDM catches up */
    assert_int_equal(devtrust_set_override("dev-1", "active", err, sizeof(err)), 0);
    devtrust_evaluate("dev-1", NULL, now(), &v);
    assert_string_equal(v.status, "active");
    assert_false(has_failing(&v, "device_lost"));
    assert_int_equal(devtrust_set_override("dev-1", NULL, err, sizeof(err)), 0);
    assert_true(dev1_lost(NULL));
    assert_int_equal(devtrust_set_override("dev-1", "gone", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "status"));
    assert_int_equal(devtrust_set_override("a b", "lost", err, sizeof(err)), -1);
    /* an override for a device the inventory does not know */
    assert_int_equal(devtrust_set_override("dev-9", "lost", err, sizeof(err)), 0);
    devtrust_evaluate("dev-9", NULL, now(), &v);
    assert_string_equal(v.status, "lost");
    assert_int_equal(v.known, 0);
}

/* ---- persistence --------------------------------------------------------- */

static void test_persistence(void **state)
{
    struct fx *f = *state;
    struct devtrust_verdict v;
    char body[2048], err[DEVTRUST_ERR_MAX], path[256], *data;
    const char *section = "{\"inventory\":{\"file\":\"inventory.json\"}}";
    int64_t t = now();
    struct stat st;
    FILE *fp;

    write_file(f->feed, FEED_ACTIVE);
    start(f, section, 1);
    report(body, sizeof(body), NULL, "true");
    assert_int_equal(devtrust_posture_submit("dev-1", body, strlen(body), t, err, sizeof(err)), 0);
    report(body, sizeof(body), NULL, "false");
    assert_int_equal(devtrust_posture_submit("dev-2", body, strlen(body), t, err, sizeof(err)), 0);
    assert_int_equal(devtrust_set_override("dev-3", "lost", err, sizeof(err)), 0);
    devtrust_stop();

    /* restart: the reports and the override are still there */
    start(f, section, 1);
    devtrust_evaluate("dev-1", NULL, t, &v);
    assert_int_equal(v.score, 100);
    assert_string_equal(v.tier_name, "high");
    devtrust_evaluate("dev-2", NULL, t, &v);
    assert_int_equal(v.score, 75);
    devtrust_evaluate("dev-3", NULL, t, &v);
    assert_string_equal(v.status, "lost");
    devtrust_stop();

    /* a crash mid-append leaves a truncated last line; a damaged line too */
    snprintf(path, sizeof(path), "%s/state/posture.log", f->dir);
    fp = fopen(path, "a");
    assert_non_null(fp);
    fputs("this is not json\n{\"device_id\":\"dev-3\",\"collected_at\":\"2024-", fp);
    fclose(fp);
    start(f, section, 1);
    devtrust_evaluate("dev-1", NULL, t, &v);
    assert_int_equal(v.score, 100);
    devtrust_evaluate("dev-3", NULL, t, &v);
    assert_string_equal(v.status, "lost");
    assert_string_equal(v.tier_name, "untrusted");
    /* compacted at start: one line per device, the damage gone */
    assert_int_equal(stat(path, &st), 0);
    data = calloc(1, (size_t)st.st_size + 1);
    fp = fopen(path, "r");
    assert_int_equal(fread(data, 1, (size_t)st.st_size, fp), (size_t)st.st_size);
    fclose(fp);
    assert_null(strstr(data, "not json"));
    assert_int_equal(data[st.st_size - 1], '\n');
    assert_non_null(strstr(data, "\"device_id\":\"dev-1\""));
    assert_non_null(strstr(data, "\"device_id\":\"dev-2\""));
    free(data);
    /* a report sent after the restart survives the next one too */
    report(body, sizeof(body), NULL, "false");
    assert_int_equal(devtrust_posture_submit("dev-1", body, strlen(body), t, err, sizeof(err)), 0);
    devtrust_stop();
    start(f, section, 1);
    devtrust_evaluate("dev-1", NULL, t, &v);
    assert_int_equal(v.score, 75);
}

/* devtrust_posture_submit_cb(): the callback comes once the report is on
 * disk, never before; without a state_dir there is nothing to wait for. */
static _Atomic int ack_calls, ack_ok, ack_on_disk;
static char ack_path[256];

static void ack_cb(void *arg, int ok)
{
    FILE *fp = fopen(ack_path, "r");
    char buf[8192];
    size_t n = 0;

    if (arg != &ack_calls)
        return; /* asserting here would longjmp on the writer thread */
    if (fp != NULL) {
        n = fread(buf, 1, sizeof(buf) - 1, fp);
        fclose(fp);
    }
    buf[n] = '\0';
    atomic_store(&ack_on_disk, strstr(buf, "\"device_id\":\"dev-1\"") != NULL);
    atomic_store(&ack_ok, ok);
    atomic_fetch_add(&ack_calls, 1);
}

static void test_ack_after_persist(void **state)
{
    struct fx *f = *state;
    char body[2048], err[DEVTRUST_ERR_MAX];
    const char *section = "{\"inventory\":{\"file\":\"inventory.json\"}}";
    int64_t t = now();
    int i;

    snprintf(ack_path, sizeof(ack_path), "%s/state/posture.log", f->dir);
    write_file(f->feed, FEED_ACTIVE);
    start(f, section, 1);
    report(body, sizeof(body), NULL, "true");
    assert_int_equal(devtrust_posture_submit_cb("dev-1", body, strlen(body), t, ack_cb, &ack_calls,
                                                err, sizeof(err)),
                     DEVTRUST_PENDING);
    for (i = 0; i < 1000 && atomic_load(&ack_calls) == 0; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&ack_calls), 1);
    assert_int_equal(atomic_load(&ack_ok), 1);
    assert_int_equal(atomic_load(&ack_on_disk), 1);
    /* refused reports never call back */
    assert_int_equal(
        devtrust_posture_submit_cb("dev-1", "{", 1, t, ack_cb, &ack_calls, err, sizeof(err)), 400);
    devtrust_stop();
    assert_int_equal(atomic_load(&ack_calls), 1);
    /* without a state_dir: 0 at once, no callback */
    start(f, section, 0);
    assert_int_equal(devtrust_posture_submit_cb("dev-2", body, strlen(body), t, ack_cb, &ack_calls,
                                                err, sizeof(err)),
                     0);
    devtrust_stop();
    assert_int_equal(atomic_load(&ack_calls), 1);
}

static void test_grace_persisted(void **state)
{
    struct fx *f = *state;
    struct devtrust_verdict v;
    char body[2048], err[DEVTRUST_ERR_MAX], ts[POSTURE_TIME_MAX];
    const char *section =
        "{\"inventory\":{\"file\":\"inventory.json\"},\"scoring\":{\"checks\":["
        "{\"id\":\"patch\",\"type\":\"patch_age_max\",\"max_days\":1,\"grace\":\"7d\","
        "\"weight\":100}]}}";
    int64_t t = now();

    write_file(f->feed, FEED_ACTIVE);
    start(f, section, 1);
    assert_int_equal(posture_time_format(t - 60, ts, sizeof(ts)), 0);
    snprintf(body, sizeof(body),
             "{\"collected_at\":\"%s\",\"agent_version\":\"1.2.3\",\"os\":{\"name\":\"debian\","
             "\"version\":\"12.4\"},\"disk_encryption\":true,\"firewall\":true,"
             "\"screen_lock\":true,\"auto_updates\":true,\"days_since_patch\":5}",
             ts);
    assert_int_equal(devtrust_posture_submit("dev-1", body, strlen(body), t, err, sizeof(err)), 0);
    /* failing, but in grace: not counted, not listed */
    devtrust_evaluate("dev-1", NULL, t, &v);
    assert_int_equal(v.score, 100);
    assert_int_equal(v.nfailing, 0);
    devtrust_stop();
    /* the first-failing time survived the restart: 8 days on it counts */
    start(f, section, 1);
    devtrust_evaluate("dev-1", NULL, t + 8 * 86400, &v);
    assert_int_equal(v.score, 0);
    assert_true(has_failing(&v, "patch"));
}

/* ---- reconfigure --------------------------------------------------------- */

static int dev_b_known(void *arg)
{
    struct devtrust_verdict v;

    (void)arg;
    devtrust_evaluate("dev-b", NULL, now(), &v);
    return v.known;
}

static void test_reconfigure(void **state)
{
    struct fx *f = *state;
    struct devtrust_verdict v;
    char other[256], err[DEVTRUST_ERR_MAX];
    struct conf *c;

    write_file(f->feed, FEED_ACTIVE);
    snprintf(other, sizeof(other), "%s/other.json", f->dir);
    write_file(other, REC("dev-b", "active", ""));
    start(f, "{\"inventory\":{\"file\":\"inventory.json\"}}", 0);
    devtrust_evaluate("dev-1", NULL, now(), &v);
    assert_int_equal(v.known, 1);

    /* new scoring at once; same source: nothing reloaded */
    c = make_conf(f,
                  "{\"inventory\":{\"file\":\"inventory.json\"},\"scoring\":{\"tiers\":["
                  "{\"name\":\"no\",\"min_score\":0},{\"name\":\"yes\",\"min_score\":10}],"
                  "\"checks\":[{\"id\":\"managed\",\"type\":\"managed\",\"weight\":100}]}}",
                  0);
    assert_int_equal(devtrust_validate(c, err, sizeof(err)), 0);
    assert_int_equal(devtrust_reconfigure(c, err, sizeof(err)), 0);
    conf_unref(c);
    devtrust_evaluate("dev-1", NULL, now(), &v);
    assert_string_equal(v.tier_name, "yes");
    assert_int_equal(v.score, 100);

    /* a new file: loaded on the loader thread */
    c = make_conf(f, "{\"inventory\":{\"file\":\"other.json\"}}", 0);
    assert_int_equal(devtrust_reconfigure(c, err, sizeof(err)), 0);
    conf_unref(c);
    assert_true(spin_until(f, dev_b_known, NULL));
    devtrust_evaluate("dev-1", NULL, now(), &v);
    assert_int_equal(v.known, 0);

    /* no section: no inventory, every device unknown, not stale */
    c = make_conf(f, NULL, 0);
    assert_int_equal(devtrust_reconfigure(c, err, sizeof(err)), 0);
    conf_unref(c);
    devtrust_evaluate("dev-b", NULL, now(), &v);
    assert_int_equal(v.known, 0);
    assert_int_equal(v.inventory_stale, 0);
    assert_string_equal(v.tier_name, "untrusted");
}

static int records_0(void *arg)
{
    (void)arg;
    return stats_now().records == 0 && stats_now().version == 2;
}

static void test_reconfigure_allow_empty(void **state)
{
    struct fx *f = *state;
    char err[DEVTRUST_ERR_MAX];
    uint64_t want = 1;
    struct conf *c;

    write_file(f->feed, FEED_ACTIVE);
    start(f, "{\"inventory\":{\"file\":\"inventory.json\"}}", 0);
    write_file(f->feed, "[]");
    assert_true(spin_until(f, refused_at_least, &want));
    assert_int_equal(stats_now().records, 3);
    /* the operator agrees the fleet is gone: the same file is read again */
    c = make_conf(f, "{\"inventory\":{\"file\":\"inventory.json\",\"allow_empty\":true}}", 0);
    assert_int_equal(devtrust_reconfigure(c, err, sizeof(err)), 0);
    conf_unref(c);
    assert_true(spin_until(f, records_0, NULL));
}

/* ---- URL feed against a real HTTP server --------------------------------- */

struct srv {
    int status; /* what /feed answers: 200 (or 304 on a matching ETag), 500 */
    const char *body;
    const char *etag;
    int requests, r200, r304, r500;
    char last_inm[128];
};

static void serve(struct evhttp_request *req, void *arg)
{
    struct srv *s = arg;
    struct evbuffer *out = evbuffer_new();
    const char *inm = evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match");

    s->requests++;
    snprintf(s->last_inm, sizeof(s->last_inm), "%s", inm != NULL ? inm : "");
    if (s->status == 500) {
        s->r500++;
        evhttp_send_reply(req, 500, "Internal Server Error", out);
    } else if (inm != NULL && strcmp(inm, s->etag) == 0) {
        s->r304++;
        evhttp_send_reply(req, 304, "Not Modified", out);
    } else {
        s->r200++;
        evhttp_add_header(evhttp_request_get_output_headers(req), "ETag", s->etag);
        evbuffer_add(out, s->body, strlen(s->body));
        evhttp_send_reply(req, 200, "OK", out);
    }
    evbuffer_free(out);
}

static int records_3(void *arg)
{
    (void)arg;
    return stats_now().records == 3;
}

static int got_304(void *arg)
{
    struct srv *s = arg;
    return s->r304 >= 1 && stats_now().loads_unchanged >= 1;
}

static int retried_500(void *arg)
{
    struct srv *s = arg;
    return s->r500 >= 3 && stats_now().fetch_errors >= 3;
}

static void test_url_feed(void **state)
{
    struct fx *f = *state;
    struct srv s = {200, FEED_ACTIVE, "\"v1\"", 0, 0, 0, 0, ""};
    struct evhttp *http = evhttp_new(f->base);
    struct evhttp_bound_socket *bs;
    struct sockaddr_in sin;
    ev_socklen_t slen = sizeof(sin);
    struct devtrust_verdict v;
    struct devtrust_stats st;
    char section[512], err[DEVTRUST_ERR_MAX];
    int64_t age;
    size_t n;

    evhttp_set_gencb(http, serve, &s);
    bs = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
    assert_non_null(bs);
    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &slen);
    snprintf(section, sizeof(section),
             "{\"inventory\":{\"url\":\"http://127.0.0.1:%d/feed\",\"poll\":\"1s\","
             "\"timeout\":\"5s\",\"max_stale\":\"1h\"}}",
             ntohs(sin.sin_port));
    start(f, section, 0);

    /* not loaded yet: fail closed */
    devtrust_evaluate("dev-1", NULL, now(), &v);
    assert_int_equal(v.inventory_stale, 1);
    assert_true(spin_until(f, records_3, NULL));
    devtrust_evaluate("dev-1", NULL, now(), &v);
    assert_int_equal(v.known, 1);
    assert_int_equal(v.inventory_stale, 0);
    assert_int_equal(s.r200, 1);

    /* the next poll sends the ETag and gets a 304: same snapshot, fresh */
    assert_true(spin_until(f, got_304, &s));
    assert_string_equal(s.last_inm, "\"v1\"");
    st = stats_now();
    assert_int_equal(st.version, 1);
    assert_int_equal(st.loads_ok, 1);
    assert_int_equal(st.records, 3);

    /* the server fails: the last good stays, retried with backoff */
    s.status = 500;
    assert_true(spin_until(f, retried_500, &s));
    devtrust_evaluate("dev-1", NULL, now(), &v);
    assert_int_equal(v.known, 1);
    assert_string_equal(v.status, "active");
    assert_int_equal(v.inventory_stale, 0);
    devtrust_feed_status(now(), &age, &n, err, sizeof(err));
    assert_int_equal(n, 3);
    assert_non_null(strstr(err, "HTTP 500"));
    /* and stale once max_stale has passed without a good answer */
    devtrust_evaluate("dev-1", NULL, now() + 3601, &v);
    assert_int_equal(v.inventory_stale, 1);

    /* back, with the device lost */
    s.status = 200;
    s.body = FEED_LOST;
    s.etag = "\"v2\"";
    assert_true(spin_until(f, dev1_lost, NULL));
    st = stats_now();
    assert_int_equal(st.version, 2);
    assert_string_equal(st.feed_error, "");

    /* a malformed body with 200: refused, the last good kept */
    s.body = "[{";
    s.etag = "\"v3\"";
    {
        uint64_t want = 1;
        assert_true(spin_until(f, refused_at_least, &want));
    }
    assert_true(dev1_lost(NULL));

    devtrust_stop();
    evhttp_free(http);
}

/* ---- many workers at once (run it under TSan) ---------------------------- */

struct worker {
    pthread_t th;
    int id;
    int64_t t;
    atomic_int *stop;
    int bad;
    int submitted;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct devtrust_verdict v;
    char body[2048], err[DEVTRUST_ERR_MAX], dev[32];
    int i = 0;

    snprintf(dev, sizeof(dev), "dev-w%d", w->id);
    report(body, sizeof(body), NULL, "true");
    while (!atomic_load(w->stop)) {
        devtrust_evaluate("dev-1", "alice@corp.example", w->t, &v);
        if (strcmp(v.status, "active") != 0 && strcmp(v.status, "lost") != 0)
            w->bad++;
        devtrust_evaluate(dev, NULL, w->t, &v);
        /* 10 s apart: the bucket always has a token */
        if (devtrust_posture_submit(dev, body, strlen(body), w->t + 10 * i, err, sizeof(err)) == 0)
            w->submitted++;
        i++;
    }
    return NULL;
}

static int status_is(void *arg)
{
    struct devtrust_verdict v;

    devtrust_evaluate("dev-1", NULL, now(), &v);
    return strcmp(v.status, (const char *)arg) == 0;
}

static void test_concurrent(void **state)
{
    struct fx *f = *state;
    struct worker w[4];
    atomic_int stop = 0;
    char err[256];
    int i, k;

    write_file(f->feed, FEED_ACTIVE);
    start(f, "{\"inventory\":{\"file\":\"inventory.json\"}}", 1);
    for (i = 0; i < 4; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].id = i;
        w[i].t = now();
        w[i].stop = &stop;
        assert_int_equal(pthread_create(&w[i].th, NULL, worker_main, &w[i]), 0);
    }
    for (k = 0; k < 4; k++) {
        write_file(f->feed, k % 2 == 0 ? FEED_LOST : FEED_ACTIVE);
        assert_true(spin_until(f, status_is, k % 2 == 0 ? "lost" : "active"));
        assert_int_equal(devtrust_set_override("dev-2", k % 2 ? "lost" : NULL, err, sizeof(err)),
                         0);
    }
    atomic_store(&stop, 1);
    for (i = 0; i < 4; i++) {
        pthread_join(w[i].th, NULL);
        assert_int_equal(w[i].bad, 0);
        assert_true(w[i].submitted > 0);
    }
    devtrust_stop();
    /* everything accepted was written */
    start(f, "{\"inventory\":{\"file\":\"inventory.json\"}}", 1);
    for (i = 0; i < 4; i++) {
        struct devtrust_verdict v;
        char dev[32];
        snprintf(dev, sizeof(dev), "dev-w%d", i);
        devtrust_evaluate(dev, NULL, now(), &v);
        assert_false(has_failing(&v, "fresh_posture"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_validate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_section, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_feed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allow_empty_and_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_posture_submit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_override, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_after_persist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grace_persisted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconfigure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconfigure_allow_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_url_feed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
    };

    /* Before any event_base: the loader thread wakes the main loop. */
    if (evthread_use_pthreads() == -1)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
