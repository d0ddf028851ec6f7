/*
 * devtrust_cache_test.c - the workers' verdict cache (proxy/devtrust.c)
 * must be exact: every verdict a thread gets from it equals the one a
 * thread without a cache computes for the same inputs at the same instant,
 * and it ends exactly when the clock changes the result (posture
 * freshness, grace periods), when the user changes, and on the next
 * request after a posture report, an override or an inventory reload.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "conf.h"
#include "devtrust.h"
#include "posture.h"

#define REC(ID, STATUS, OWNER, EXTRA)                                                              \
    "{\"id\":\"" ID "\",\"serial\":\"s-" ID "\",\"owner\":\"" OWNER "\","                          \
    "\"managed\":true,\"status\":\"" STATUS "\",\"platform\":\"linux\",\"os_version\":\"12.4\","   \
    "\"model\":\"X1\",\"enrolled\":\"2024-01-02T03:04:05Z\"" EXTRA "}\n"

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

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, path), 0);
}

static void start(struct fx *f, const char *section)
{
    char text[4096], err[1024] = "";

    conf_unref(f->conf);
    f->conf = NULL;
    snprintf(text, sizeof(text),
             "{\"listen\":[{\"address\":\"127.0.0.1:8443\"}],"
             "\"tls\":{\"certificate\":\"s.crt\",\"key\":\"s.key\",\"device_ca\":\"ca.crt\"},"
             "\"routes\":[{\"name\":\"app\",\"host\":\"app.test\","
             "\"upstream\":\"http://127.0.0.1:9000\"}],\"device_trust\":%s}",
             section);
    if (conf_parse(text, strlen(text), "t.json", f->dir, CONF_NO_FS, &f->conf, err, sizeof(err)) ==
        -1)
        fail_msg("conf_parse: %s", err);
    if (devtrust_validate(f->conf, err, sizeof(err)) == -1)
        fail_msg("validate: %s", err);
    if (devtrust_start(f->base, f->conf, err, sizeof(err)) == -1)
        fail_msg("start: %s", err);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));

    snprintf(f->dir, sizeof(f->dir), "/tmp/devtrust_cache_test.XXXXXX");
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

static int64_t now(void)
{
    return (int64_t)time(NULL);
}

/* ---- the reference: a verdict from a thread with an empty cache ---------- */

struct ref_job {
    const char *id;
    const char *user;
    int64_t now;
    int brief;
    struct devtrust_verdict v;
};

static void *ref_main(void *arg)
{
    struct ref_job *j = arg;

    if (j->brief)
        devtrust_evaluate_brief(j->id, j->user, j->now, &j->v);
    else
        devtrust_evaluate(j->id, j->user, j->now, &j->v);
    return NULL;
}

/* Everything a verdict says (the arrays up to their counts). */
static void assert_same(const struct devtrust_verdict *a, const struct devtrust_verdict *b)
{
    size_t i;

    assert_int_equal(a->known, b->known);
    assert_int_equal(a->tier, b->tier);
    assert_string_equal(a->tier_name, b->tier_name);
    assert_int_equal(a->score, b->score);
    assert_int_equal(a->inventory_stale, b->inventory_stale);
    assert_int_equal(a->posture_stale, b->posture_stale);
    assert_string_equal(a->status, b->status);
    assert_string_equal(a->owner, b->owner);
    assert_int_equal(a->nfailing, b->nfailing);
    for (i = 0; i < a->nfailing; i++) {
        assert_string_equal(a->failing[i].id, b->failing[i].id);
        assert_string_equal(a->failing[i].remediation, b->failing[i].remediation);
        assert_int_equal(a->failing[i].hard, b->failing[i].hard);
    }
    assert_int_equal(a->nattrs, b->nattrs);
    for (i = 0; i < a->nattrs; i++) {
        assert_string_equal(a->attrs[i].name, b->attrs[i].name);
        assert_string_equal(a->attrs[i].value, b->attrs[i].value);
    }
}

/*
 * Evaluate twice on this thread (the second answer may come from the
 * cache) and once on a new thread (no cache): all three must agree.
 */
static void eval_checked(const char *id, const char *user, int64_t t, int brief,
                         struct devtrust_verdict *out)
{
    struct ref_job j;
    struct devtrust_verdict first;
    pthread_t th;

    if (brief) {
        devtrust_evaluate_brief(id, user, t, &first);
        devtrust_evaluate_brief(id, user, t, out);
    } else {
        devtrust_evaluate(id, user, t, &first);
        devtrust_evaluate(id, user, t, out);
    }
    memset(&j, 0, sizeof(j));
    j.id = id;
    j.user = user;
    j.now = t;
    j.brief = brief;
    assert_int_equal(pthread_create(&th, NULL, ref_main, &j), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_same(&first, out);
    assert_same(&j.v, out);
}

static int has_failing(const struct devtrust_verdict *v, const char *id)
{
    size_t i;

    for (i = 0; i < v->nfailing; i++)
        if (strcmp(v->failing[i].id, id) == 0)
            return 1;
    return 0;
}

static void submit(const char *id, int64_t collected, int64_t t, int days_since_patch, int disk)
{
    char body[2048], ts[POSTURE_TIME_MAX], err[DEVTRUST_ERR_MAX];

    assert_int_equal(posture_time_format(collected, ts, sizeof(ts)), 0);
    snprintf(body, sizeof(body),
             "{\"collected_at\":\"%s\",\"agent_version\":\"1.2.3\",\"os\":{\"name\":\"debian\","
             "\"version\":\"12.4\",\"kernel\":\"6.1.0\"},\"disk_encryption\":%s,"
             "\"firewall\":true,\"screen_lock\":true,\"auto_updates\":true,"
             "\"days_since_patch\":%d}",
             ts, disk ? "true" : "false", days_since_patch);
    if (devtrust_posture_submit(id, body, strlen(body), t, err, sizeof(err)) != 0)
        fail_msg("posture_submit: %s", err);
}

/* ---- the clock ----------------------------------------------------------- */

static void test_time_bounds(void **state)
{
    struct fx *f = *state;
    struct devtrust_verdict v;
    int64_t t = now();

    write_file(f->feed, REC("dev-1", "active", "alice@corp.example", ",\"cost_center\":4711"));
    start(f, "{\"inventory\":{\"file\":\"inventory.json\",\"max_stale\":\"30d\"},"
             "\"posture\":{\"rate_limit_per_minute\":60},"
             "\"scoring\":{\"checks\":["
             "{\"id\":\"fresh\",\"type\":\"posture_max_age\",\"max_age\":\"1d\",\"hard\":true},"
             "{\"id\":\"disk\",\"type\":\"disk_encryption\",\"weight\":50},"
             "{\"id\":\"patch\",\"type\":\"patch_age_max\",\"max_days\":1,\"grace\":\"1h\","
             "\"weight\":50}]}}");
    /* collected a minute ago: fresh while now <= t - 60 + 86400 */
    submit("dev-1", t - 60, t, 5, 1);
    eval_checked("dev-1", NULL, t, 0, &v);
    assert_int_equal(v.score, 100); /* patch fails, in grace since t */
    assert_false(has_failing(&v, "patch"));
    assert_int_equal(v.posture_stale, 0);
    /* the last second of the grace period, then the first after it */
    eval_checked("dev-1", NULL, t + 3600, 0, &v);
    assert_int_equal(v.score, 100);
    eval_checked("dev-1", NULL, t + 3601, 0, &v);
    assert_int_equal(v.score, 50);
    assert_true(has_failing(&v, "patch"));
    assert_string_equal(v.tier_name, "basic");
    /* the last second of freshness, then the first after it */
    eval_checked("dev-1", NULL, t + 86340, 0, &v);
    assert_int_equal(v.posture_stale, 0);
    assert_false(has_failing(&v, "fresh"));
    eval_checked("dev-1", NULL, t + 86341, 0, &v);
    assert_int_equal(v.posture_stale, 1);
    assert_true(has_failing(&v, "fresh"));
    assert_string_equal(v.tier_name, "untrusted");
    /* a clock that steps back is scored afresh, not answered from later */
    eval_checked("dev-1", NULL, t + 10, 0, &v);
    assert_int_equal(v.posture_stale, 0);
    assert_int_equal(v.score, 100);
}

/* ---- the user, reports, overrides, reloads -------------------------------- */

static int dev1_lost(void *arg)
{
    struct devtrust_verdict v;

    (void)arg;
    devtrust_evaluate("dev-1", "alice@corp.example", now(), &v);
    return strcmp(v.status, "lost") == 0;
}

static void test_inputs(void **state)
{
    struct fx *f = *state;
    struct devtrust_verdict v;
    char err[256];
    int64_t t = now();
    int i;

    write_file(f->feed, REC("dev-1", "active", "alice@corp.example", ",\"cost_center\":4711")
                            REC("dev-2", "active", "bob@corp.example", ""));
    start(f, "{\"inventory\":{\"file\":\"inventory.json\",\"max_stale\":\"30d\"},"
             "\"posture\":{\"rate_limit_per_minute\":60},"
             "\"scoring\":{\"checks\":["
             "{\"id\":\"mine\",\"type\":\"owner_is_user\",\"weight\":50},"
             "{\"id\":\"disk\",\"type\":\"disk_encryption\",\"weight\":50}]}}");
    /* the user: owner, someone else, nobody, owner again */
    eval_checked("dev-1", "alice@corp.example", t, 0, &v);
    assert_false(has_failing(&v, "mine"));
    assert_int_equal(v.score, 50); /* no posture yet: disk fails */
    eval_checked("dev-1", "bob@corp.example", t, 0, &v);
    assert_true(has_failing(&v, "mine"));
    eval_checked("dev-1", NULL, t, 0, &v);
    assert_true(has_failing(&v, "mine"));
    eval_checked("dev-1", "", t, 0, &v);
    assert_true(has_failing(&v, "mine"));
    eval_checked("dev-1", "alice@corp.example", t, 0, &v);
    assert_false(has_failing(&v, "mine"));
    /* brief and full of the same device */
    eval_checked("dev-1", "alice@corp.example", t, 1, &v);
    assert_int_equal(v.nfailing, 0);
    assert_int_equal(v.nattrs, 0);
    assert_string_equal(v.owner, "alice@corp.example");
    eval_checked("dev-1", "alice@corp.example", t, 0, &v);
    assert_int_equal(v.nattrs, 5);
    assert_string_equal(v.attrs[4].value, "4711");
    /* a report takes effect on the next request */
    submit("dev-1", t - 60, t, 0, 1);
    eval_checked("dev-1", "alice@corp.example", t, 0, &v);
    assert_int_equal(v.score, 100);
    submit("dev-1", t - 30, t, 0, 0);
    eval_checked("dev-1", "alice@corp.example", t, 0, &v);
    assert_int_equal(v.score, 50);
    assert_true(has_failing(&v, "disk"));
    /* so does an override, and clearing it */
    assert_int_equal(devtrust_set_override("dev-1", "stolen", err, sizeof(err)), 0);
    eval_checked("dev-1", "alice@corp.example", t, 0, &v);
    assert_string_equal(v.status, "stolen");
    assert_true(has_failing(&v, "device_lost"));
    assert_int_equal(devtrust_set_override("dev-1", NULL, err, sizeof(err)), 0);
    eval_checked("dev-1", "alice@corp.example", t, 0, &v);
    assert_string_equal(v.status, "active");
    assert_false(has_failing(&v, "device_lost"));
    /* and an inventory reload */
    write_file(f->feed, REC("dev-1", "lost", "alice@corp.example", "")
                            REC("dev-2", "active", "bob@corp.example", ""));
    for (i = 0; i < 200 && !dev1_lost(NULL); i++) {
        struct timeval tv = {0, 50000};
        event_base_loopexit(f->base, &tv);
        event_base_dispatch(f->base);
    }
    assert_true(dev1_lost(NULL));
    eval_checked("dev-1", "alice@corp.example", now(), 0, &v);
    assert_int_equal(v.nattrs, 4); /* the reloaded record has no cost_center */
    /* an unknown and an invalid device */
    eval_checked("dev-404", NULL, t, 0, &v);
    assert_int_equal(v.known, 0);
    eval_checked("bad id", NULL, t, 0, &v);
    assert_int_equal(v.known, 0);
    eval_checked(NULL, NULL, t, 0, &v);
    assert_int_equal(v.known, 0);
}

/* More devices than the cache has slots: collisions answer correctly. */
static void test_many_devices(void **state)
{
    struct fx *f = *state;
    struct devtrust_verdict v;
    char *feed = malloc(300 * 512), id[32], user[64];
    size_t off = 0;
    int64_t t = now();
    int i, round;

    assert_non_null(feed);
    for (i = 0; i < 300; i++)
        off += (size_t)snprintf(feed + off, 512,
                                "{\"id\":\"d-%d\",\"serial\":\"s\",\"owner\":\"u%d@corp.example\","
                                "\"managed\":%s,\"status\":\"%s\",\"platform\":\"linux\","
                                "\"os_version\":\"12\",\"model\":\"m\","
                                "\"enrolled\":\"2024-01-02T03:04:05Z\",\"n\":%d}\n",
                                i, i, i % 3 ? "true" : "false", i % 7 ? "active" : "retired", i);
    write_file(f->feed, feed);
    free(feed);
    start(f, "{\"inventory\":{\"file\":\"inventory.json\",\"max_stale\":\"30d\"},"
             "\"posture\":{\"rate_limit_per_minute\":60}}");
    for (i = 0; i < 300; i += 5)
        submit(i % 2 ? "d-1" : "d-2", t - 60, t, 0, i % 4 != 0);
    for (round = 0; round < 2; round++) {
        for (i = 0; i < 300; i++) {
            snprintf(id, sizeof(id), "d-%d", i);
            snprintf(user, sizeof(user), "u%d@corp.example", i);
            eval_checked(id, user, t + round, round, &v);
            assert_int_equal(v.known, 1);
            assert_int_equal(v.status[0], i % 7 ? 'a' : 'r');
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_time_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inputs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_devices, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
