/*
 * score_valid_until_test.c - score_result.valid_until (the instant after
 * which the clock may change a result) and the precomputed lengths of the
 * failures' strings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "score.h"

#define NOW 1714564800

static const char feed[] =
    "{\"id\":\"good\",\"serial\":\"s\",\"owner\":\"alice@corp.example\",\"managed\":true,"
    "\"status\":\"active\",\"platform\":\"linux\",\"os_version\":\"12\",\"model\":\"m\","
    "\"enrolled\":\"2024-01-02T03:04:05Z\"}\n";

static const char policy[] =
    "{\"checks\":["
    "{\"id\":\"fresh\",\"type\":\"posture_max_age\",\"max_age\":\"1h\",\"hard\":true},"
    "{\"id\":\"fresh_long\",\"type\":\"posture_max_age\",\"max_age\":\"1d\"},"
    "{\"id\":\"disk\",\"type\":\"disk_encryption\",\"weight\":60,\"grace\":\"2h\"},"
    "{\"id\":\"fw\",\"type\":\"firewall\",\"weight\":40,\"remediation\":\"Firewall on, please.\"}"
    "]}";

struct fx {
    struct inventory *inv;
    struct score_config *cfg;
    struct posture p;
    struct score_input in;
    struct score_grace g;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    char err[256];

    if (f == NULL ||
        inventory_parse(feed, strlen(feed), NULL, 0, NOW, &f->inv, err, sizeof(err)) == -1 ||
        score_config_parse(policy, strlen(policy), "t", &f->cfg, err, sizeof(err)) == -1)
        return -1;
    f->p.collected_at = NOW - 600;
    f->p.received_at = NOW - 300;
    f->p.disk_encryption = POSTURE_YES;
    f->p.firewall = POSTURE_YES;
    f->p.screen_lock = POSTURE_YES;
    f->p.auto_updates = POSTURE_YES;
    score_grace_init(&f->g);
    f->in.record = inventory_lookup(f->inv, "good", 4);
    f->in.posture = &f->p;
    f->in.now = NOW;
    f->in.grace = &f->g;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    inventory_unref(f->inv);
    score_config_unref(f->cfg);
    free(f);
    return 0;
}

static void test_fresh_posture(void **state)
{
    struct fx *f = *state;
    struct score_result r, r2;

    /* the older of collected and received, plus the shortest max_age */
    score_eval(f->cfg, &f->in, &r);
    assert_int_equal(r.nfailed, 0);
    assert_int_equal(r.valid_until, NOW - 600 + 3600);
    f->in.now = r.valid_until;
    score_eval(f->cfg, &f->in, &r2);
    assert_int_equal(r2.nfailed, 0);
    f->in.now = r.valid_until + 1;
    score_eval(f->cfg, &f->in, &r2);
    assert_int_equal(r2.nfailed, 3); /* fresh, then disk and fw: the report is stale */
    assert_string_equal(r2.failed[0].id, "fresh");
    assert_int_equal(r2.failed[1].reason, SCORE_REASON_STALE_POSTURE);
    /* disk fails for the stale report: in grace (first failing now) */
    assert_int_equal(r2.failed[1].in_grace, 1);
    assert_int_equal(r2.valid_until, f->in.now + 7200);
    /* without grace state fresh_long bounds it (fresh fails, and keeps failing) */
    f->in.grace = NULL;
    score_eval(f->cfg, &f->in, &r2);
    assert_int_equal(r2.valid_until, NOW - 600 + 86400);
}

static void test_no_clock(void **state)
{
    struct fx *f = *state;
    struct score_result r;

    /* no report and no grace state: nothing the clock can change */
    f->in.posture = NULL;
    f->in.grace = NULL;
    score_eval(f->cfg, &f->in, &r);
    assert_int_equal(r.valid_until, INT64_MAX);
    /* with grace state, disk (failing for want of a report) is in grace */
    f->in.grace = &f->g;
    score_eval(f->cfg, &f->in, &r);
    assert_int_equal(r.valid_until, NOW + 7200);
    f->in.grace = NULL;
    /* a report that is already stale stays stale */
    f->in.posture = &f->p;
    f->in.now = NOW + 2 * 86400;
    score_eval(f->cfg, &f->in, &r);
    assert_int_equal(r.valid_until, INT64_MAX);
    assert_int_equal(r.flags & SCORE_F_STALE_POSTURE, SCORE_F_STALE_POSTURE);
}

static void test_grace(void **state)
{
    struct fx *f = *state;
    struct score_result r;

    f->p.disk_encryption = POSTURE_NO;
    f->p.collected_at = f->p.received_at = NOW;
    /* first failing now: in grace until now + 2h, earlier than freshness */
    score_eval(f->cfg, &f->in, &r);
    assert_int_equal(r.nfailed, 1);
    assert_int_equal(r.failed[0].in_grace, 1);
    assert_int_equal(r.valid_until, NOW + 3600);
    assert_int_equal(score_grace_update(f->cfg, &f->g, &r, NOW), 1);
    /* recorded 90 minutes ago: the grace ends first */
    f->g.e[0].since = NOW - 5400;
    score_eval(f->cfg, &f->in, &r);
    assert_int_equal(r.valid_until, NOW + 1800);
    f->in.now = NOW + 1801;
    score_eval(f->cfg, &f->in, &r);
    assert_int_equal(r.failed[0].in_grace, 0);
    assert_int_equal(r.valid_until, NOW + 3600);
    /* unchanged grace state: no update */
    assert_int_equal(score_grace_update(f->cfg, &f->g, &r, f->in.now), 0);
}

static void test_lengths(void **state)
{
    struct fx *f = *state;
    struct score_result r;
    size_t i;

    f->in.record = NULL;
    f->in.override = INVENTORY_STATUS_LOST;
    f->p.firewall = POSTURE_NO;
    f->p.disk_encryption = POSTURE_UNKNOWN;
    f->in.grace = NULL;
    f->in.now = NOW + 86400 * 3;
    score_eval(f->cfg, &f->in, &r);
    assert_true(r.nfailed >= 4);
    assert_string_equal(r.failed[0].id, "device_lost");
    assert_string_equal(r.failed[1].id, "device_unknown");
    for (i = 0; i < r.nfailed; i++) {
        assert_int_equal(r.failed[i].id_len, strlen(r.failed[i].id));
        assert_int_equal(r.failed[i].remediation_len, strlen(r.failed[i].remediation));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fresh_posture, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lengths, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
