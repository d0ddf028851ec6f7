/*
 * score_test.c - trust scoring: the config (strict, JSON-path errors,
 * defaults), every check type, weights and tiers, hard requirements, the
 * remediation and unknown-device tiers, lost/stolen, staleness, grace
 * periods on both sides, version comparison.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "inventory.h"
#include "posture.h"
#include "score.h"

#define NOW 1714564800 /* 2024-05-01T12:00:00Z */
#define DAY 86400

#define REC(ID, OWNER, MANAGED, STATUS, PLATFORM)                                                  \
    "{\"id\":\"" ID "\",\"serial\":\"s\",\"owner\":\"" OWNER "\",\"managed\":" MANAGED             \
    ",\"status\":\"" STATUS "\",\"platform\":\"" PLATFORM "\",\"os_version\":\"1\","               \
    "\"model\":\"m\",\"enrolled\":\"2024-01-01T00:00:00Z\"}\n"

static const char feed[] = REC("good", "alice@corp.example", "true", "active", "linux")
    REC("unmanaged", "alice@corp.example", "false", "active", "linux")
        REC("lost", "alice@corp.example", "true", "lost", "linux")
            REC("stolen", "alice@corp.example", "true", "stolen", "linux")
                REC("retired", "alice@corp.example", "true", "retired", "linux")
                    REC("mac", "alice@corp.example", "true", "active", "macOS")
                        REC("win", "alice@corp.example", "true", "active", "windows")
                            REC("bsd", "alice@corp.example", "true", "active", "freebsd");

static struct inventory *inv;

static int setup(void **state)
{
    char err[256];

    (void)state;
    if (inventory_parse(feed, sizeof(feed) - 1, NULL, 0, NOW, &inv, err, sizeof(err)) == -1) {
        print_error("%s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    inventory_unref(inv);
    return 0;
}

static const struct inventory_record *rec(const char *id)
{
    const struct inventory_record *r = inventory_lookup(inv, id, strlen(id));
    assert_non_null(r);
    return r;
}

/* A report that passes everything in the default policy. */
static void good_posture(struct posture *p)
{
    memset(p, 0, sizeof(*p));
    p->collected_at = NOW - 60;
    p->received_at = NOW - 30;
    snprintf(p->agent_version, sizeof(p->agent_version), "1.2.3");
    snprintf(p->os_name, sizeof(p->os_name), "debian");
    snprintf(p->os_version, sizeof(p->os_version), "12.4");
    snprintf(p->kernel, sizeof(p->kernel), "6.1.0-18-amd64");
    p->disk_encryption = POSTURE_YES;
    p->firewall = POSTURE_YES;
    p->screen_lock = POSTURE_YES;
    p->auto_updates = POSTURE_YES;
    p->days_since_patch = 3;
    p->uptime_seconds = -1;
}

static void good_input(struct score_input *in, const struct posture *p)
{
    memset(in, 0, sizeof(*in));
    in->record = rec("good");
    in->override = INVENTORY_STATUS_NONE;
    in->posture = p;
    in->now = NOW;
    in->user_email = "alice@corp.example";
}

static struct score_config *config(const char *text)
{
    struct score_config *c = NULL;
    char err[512] = "";

    if (score_config_parse(text, text ? strlen(text) : 0, "t.json", &c, err, sizeof(err)) != 0) {
        print_error("config: %s\n", err);
        fail();
    }
    return c;
}

static const struct score_failure *find_failure(const struct score_result *r, const char *id)
{
    size_t i;

    for (i = 0; i < r->nfailed; i++)
        if (strcmp(r->failed[i].id, id) == 0)
            return &r->failed[i];
    return NULL;
}

/* ---- defaults ----------------------------------------------------------- */

static void test_default_policy(void **state)
{
    struct score_config *c = config(NULL);
    struct score_result r;
    struct score_input in;
    struct posture p;

    (void)state;
    assert_int_equal(score_config_tier_count(c), 5);
    assert_string_equal(score_config_tier_name(c, 0), "untrusted");
    assert_string_equal(score_config_tier_name(c, 1), "identified");
    assert_string_equal(score_config_tier_name(c, 4), "high");
    assert_null(score_config_tier_name(c, 5));
    assert_int_equal(score_config_tier_min(c, 3), 70);
    assert_int_equal(score_config_tier_min(c, 9), -1);
    assert_int_equal(score_config_tier_find(c, "trusted"), 3);
    assert_int_equal(score_config_tier_find(c, "nope"), -1);

    good_posture(&p);
    good_input(&in, &p);
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 100);
    assert_string_equal(r.tier_name, "high");
    assert_int_equal(r.tier, 4);
    assert_int_equal(r.nfailed, 0);
    assert_int_equal(r.flags, 0);
    assert_int_equal(r.stale, 0);

    /* Disk encryption off: -25 points, "trusted", with the remediation text. */
    p.disk_encryption = POSTURE_NO;
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 75);
    assert_string_equal(r.tier_name, "trusted");
    assert_int_equal(r.nfailed, 1);
    assert_string_equal(r.failed[0].id, "disk");
    assert_string_equal(r.failed[0].remediation, "Turn on full-disk encryption.");
    assert_int_equal(r.failed[0].reason, SCORE_REASON_FAILED);
    assert_int_equal(r.failed[0].weight, 25);
    assert_int_equal(r.failed[0].hard, 0);

    /* An empty section is the default policy too. */
    score_config_unref(c);
    c = config("{}");
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 75);
    assert_string_equal(r.tier_name, "trusted");
    score_config_unref(c);
}

/* ---- each check type ---------------------------------------------------- */

enum mut {
    M_NONE = 0,
    M_NO_RECORD,
    M_NO_POSTURE,
    M_INV_STALE,
    M_RECORD,   /* record = arg */
    M_OVERRIDE, /* override = n */
    M_USER,     /* user_email = arg, subject NULL */
    M_SUBJECT,  /* user_subject = arg, email NULL */
    M_NO_USER,
    M_COLLECTED, /* collected_at = NOW - n */
    M_RECEIVED,  /* received_at = NOW - n */
    M_DISK,      /* disk_encryption = n */
    M_FW,
    M_LOCK,
    M_AUTO,
    M_OS, /* os_name = arg, os_version = arg2 */
    M_KERNEL,
    M_PATCH, /* days_since_patch = n */
    M_AGENT, /* agent_version = arg */
};

struct check_case {
    const char *check; /* one check object, weight 100 */
    enum mut mut;
    const char *arg, *arg2;
    long n;
    int fails;  /* 0: passes; else fails with reason */
    int reason; /* enum score_reason */
};

#define OSMIN                                                                                      \
    "{\"id\":\"c\",\"type\":\"os_version_min\",\"weight\":100,\"min\":{\"linux\":\"6.1\","         \
    "\"debian\":\"12\",\"macos\":\"14.0\",\"windows\":\"10.0.19045\"}}"
#define CK(T) "{\"id\":\"c\",\"type\":\"" T "\",\"weight\":100}"

static const struct check_case check_cases[] = {
    {CK("status_active"), M_NONE, NULL, NULL, 0, 0, 0},
    {CK("status_active"), M_RECORD, "retired", NULL, 0, 1, SCORE_REASON_FAILED},
    {CK("status_active"), M_RECORD, "lost", NULL, 0, 1, SCORE_REASON_FAILED},
    {CK("status_active"), M_OVERRIDE, NULL, NULL, INVENTORY_STATUS_RETIRED, 1, SCORE_REASON_FAILED},
    {CK("status_active"), M_NO_RECORD, NULL, NULL, 0, 1, SCORE_REASON_NO_RECORD},
    {CK("status_active"), M_INV_STALE, NULL, NULL, 0, 1, SCORE_REASON_STALE_INVENTORY},
    {CK("managed"), M_NONE, NULL, NULL, 0, 0, 0},
    {CK("managed"), M_RECORD, "unmanaged", NULL, 0, 1, SCORE_REASON_FAILED},
    {CK("managed"), M_NO_RECORD, NULL, NULL, 0, 1, SCORE_REASON_NO_RECORD},
    {CK("managed"), M_INV_STALE, NULL, NULL, 0, 1, SCORE_REASON_STALE_INVENTORY},
    {CK("owner_is_user"), M_NONE, NULL, NULL, 0, 0, 0},
    {CK("owner_is_user"), M_USER, "Alice@Corp.EXAMPLE", NULL, 0, 0, 0},
    {CK("owner_is_user"), M_USER, "bob@corp.example", NULL, 0, 1, SCORE_REASON_FAILED},
    {CK("owner_is_user"), M_SUBJECT, "alice@corp.example", NULL, 0, 0, 0},
    {CK("owner_is_user"), M_SUBJECT, "ALICE@corp.example", NULL, 0, 1, SCORE_REASON_FAILED},
    {CK("owner_is_user"), M_NO_USER, NULL, NULL, 0, 1, SCORE_REASON_NO_USER},
    {CK("owner_is_user"), M_NO_RECORD, NULL, NULL, 0, 1, SCORE_REASON_NO_RECORD},
    {"{\"id\":\"c\",\"type\":\"posture_max_age\",\"max_age\":\"1h\",\"weight\":100}", M_COLLECTED,
     NULL, NULL, 3600, 0, 0},
    {"{\"id\":\"c\",\"type\":\"posture_max_age\",\"max_age\":\"1h\",\"weight\":100}", M_COLLECTED,
     NULL, NULL, 3601, 1, SCORE_REASON_STALE_POSTURE},
    /* the older of collected and received counts */
    {"{\"id\":\"c\",\"type\":\"posture_max_age\",\"max_age\":3600,\"weight\":100}", M_RECEIVED,
     NULL, NULL, 3601, 1, SCORE_REASON_STALE_POSTURE},
    {"{\"id\":\"c\",\"type\":\"posture_max_age\",\"max_age\":\"1h\",\"weight\":100}", M_NO_POSTURE,
     NULL, NULL, 0, 1, SCORE_REASON_NO_POSTURE},
    {CK("disk_encryption"), M_NONE, NULL, NULL, 0, 0, 0},
    {CK("disk_encryption"), M_DISK, NULL, NULL, POSTURE_NO, 1, SCORE_REASON_FAILED},
    {CK("disk_encryption"), M_DISK, NULL, NULL, POSTURE_UNKNOWN, 1, SCORE_REASON_UNKNOWN},
    {CK("disk_encryption"), M_NO_POSTURE, NULL, NULL, 0, 1, SCORE_REASON_NO_POSTURE},
    {CK("firewall"), M_NONE, NULL, NULL, 0, 0, 0},
    {CK("firewall"), M_FW, NULL, NULL, POSTURE_NO, 1, SCORE_REASON_FAILED},
    {CK("firewall"), M_FW, NULL, NULL, POSTURE_UNKNOWN, 1, SCORE_REASON_UNKNOWN},
    {CK("screen_lock"), M_NONE, NULL, NULL, 0, 0, 0},
    {CK("screen_lock"), M_LOCK, NULL, NULL, POSTURE_NO, 1, SCORE_REASON_FAILED},
    {CK("screen_lock"), M_LOCK, NULL, NULL, POSTURE_UNKNOWN, 1, SCORE_REASON_UNKNOWN},
    {CK("auto_updates"), M_NONE, NULL, NULL, 0, 0, 0},
    {CK("auto_updates"), M_AUTO, NULL, NULL, POSTURE_NO, 1, SCORE_REASON_FAILED},
    {CK("auto_updates"), M_AUTO, NULL, NULL, POSTURE_UNKNOWN, 1, SCORE_REASON_UNKNOWN},
    {CK("auto_updates"), M_NO_POSTURE, NULL, NULL, 0, 1, SCORE_REASON_NO_POSTURE},
    /* os_version_min: the OS name compares os.version, "linux" the kernel. */
    {OSMIN, M_NONE, NULL, NULL, 0, 0, 0},
    {OSMIN, M_OS, "debian", "11.9", 0, 1, SCORE_REASON_FAILED},
    {OSMIN, M_OS, "debian", "12", 0, 0, 0},
    {OSMIN, M_KERNEL, "5.10.0-28-amd64", NULL, 0, 1, SCORE_REASON_FAILED},
    {OSMIN, M_KERNEL, "6.1", NULL, 0, 0, 0},
    {OSMIN, M_KERNEL, "", NULL, 0, 1, SCORE_REASON_UNKNOWN},
    {OSMIN, M_OS, "ubuntu", "22.04", 0, 0, 0}, /* only "linux" (platform) matches */
    {OSMIN, M_OS, "debian", "bookworm", 0, 1, SCORE_REASON_UNKNOWN},
    {OSMIN, M_RECORD, "mac", NULL, 0, 1, SCORE_REASON_FAILED}, /* macos key vs "12.4" */
    {OSMIN, M_RECORD, "bsd", NULL, 0, 0, 0},                   /* debian key still matches */
    {OSMIN, M_NO_POSTURE, NULL, NULL, 0, 1, SCORE_REASON_NO_POSTURE},
    {OSMIN, M_OS, "freebsd", "14.0", 0, 1, SCORE_REASON_UNKNOWN}, /* no key for it */
    {OSMIN, M_OS, "macos", "14.0", 0, 0, 0},
    {OSMIN, M_OS, "macos", "14", 0, 0, 0},
    {OSMIN, M_OS, "macos", "13.6.7", 0, 1, SCORE_REASON_FAILED},
    {OSMIN, M_OS, "windows", "10.0.19045", 0, 0, 0},
    {OSMIN, M_OS, "windows", "10.0.22631", 0, 0, 0},
    {OSMIN, M_OS, "windows", "10.0.9999", 0, 1, SCORE_REASON_FAILED},
    {"{\"id\":\"c\",\"type\":\"patch_age_max\",\"max_days\":30,\"weight\":100}", M_PATCH, NULL,
     NULL, 30, 0, 0},
    {"{\"id\":\"c\",\"type\":\"patch_age_max\",\"max_days\":30,\"weight\":100}", M_PATCH, NULL,
     NULL, 31, 1, SCORE_REASON_FAILED},
    {"{\"id\":\"c\",\"type\":\"patch_age_max\",\"max_days\":30,\"weight\":100}", M_PATCH, NULL,
     NULL, -1, 1, SCORE_REASON_UNKNOWN},
    {"{\"id\":\"c\",\"type\":\"agent_version_min\",\"min\":\"1.2.0\",\"weight\":100}", M_NONE, NULL,
     NULL, 0, 0, 0},
    {"{\"id\":\"c\",\"type\":\"agent_version_min\",\"min\":\"1.2.0\",\"weight\":100}", M_AGENT,
     "1.10.0", NULL, 0, 0, 0},
    {"{\"id\":\"c\",\"type\":\"agent_version_min\",\"min\":\"1.2.0\",\"weight\":100}", M_AGENT,
     "1.1.9", NULL, 0, 1, SCORE_REASON_FAILED},
    {"{\"id\":\"c\",\"type\":\"agent_version_min\",\"min\":\"1.2.0\",\"weight\":100}", M_AGENT,
     "1.2", NULL, 0, 0, 0},
    {"{\"id\":\"c\",\"type\":\"agent_version_min\",\"min\":\"1.2.0\",\"weight\":100}", M_AGENT,
     "1.2.0-rc1", NULL, 0, 0, 0},
};

static void apply(const struct check_case *k, struct score_input *in, struct posture *p)
{
    switch (k->mut) {
    case M_NONE:
        break;
    case M_NO_RECORD:
        in->record = NULL;
        break;
    case M_NO_POSTURE:
        in->posture = NULL;
        break;
    case M_INV_STALE:
        in->inventory_stale = 1;
        break;
    case M_RECORD:
        in->record = rec(k->arg);
        break;
    case M_OVERRIDE:
        in->override = (enum inventory_status)k->n;
        break;
    case M_USER:
        in->user_email = k->arg;
        break;
    case M_SUBJECT:
        in->user_email = NULL;
        in->user_subject = k->arg;
        break;
    case M_NO_USER:
        in->user_email = NULL;
        break;
    case M_COLLECTED:
        p->collected_at = NOW - k->n;
        p->received_at = NOW - k->n;
        break;
    case M_RECEIVED:
        p->received_at = NOW - k->n;
        break;
    case M_DISK:
        p->disk_encryption = (enum posture_tri)k->n;
        break;
    case M_FW:
        p->firewall = (enum posture_tri)k->n;
        break;
    case M_LOCK:
        p->screen_lock = (enum posture_tri)k->n;
        break;
    case M_AUTO:
        p->auto_updates = (enum posture_tri)k->n;
        break;
    case M_OS:
        snprintf(p->os_name, sizeof(p->os_name), "%s", k->arg);
        snprintf(p->os_version, sizeof(p->os_version), "%s", k->arg2);
        if (strcmp(k->arg, "freebsd") == 0)
            in->record = rec("bsd");
        if (strcmp(k->arg, "macos") == 0)
            in->record = rec("mac");
        if (strcmp(k->arg, "windows") == 0)
            in->record = rec("win");
        break;
    case M_KERNEL:
        snprintf(p->kernel, sizeof(p->kernel), "%s", k->arg);
        break;
    case M_PATCH:
        p->days_since_patch = (int32_t)k->n;
        break;
    case M_AGENT:
        snprintf(p->agent_version, sizeof(p->agent_version), "%s", k->arg);
        break;
    }
}

static void test_check_types(void **state)
{
    char text[1024];
    size_t i;
    int bad = 0;

    (void)state;
    for (i = 0; i < sizeof(check_cases) / sizeof(check_cases[0]); i++) {
        const struct check_case *k = &check_cases[i];
        struct score_config *c;
        struct score_result r;
        struct score_input in;
        struct posture p;
        const struct score_failure *f;

        snprintf(text, sizeof(text),
                 "{\"tiers\":[{\"name\":\"low\",\"min_score\":0},{\"name\":\"ok\",\"min_score\":"
                 "100}],\"unknown_device_tier\":\"ok\",\"checks\":[%s]}",
                 k->check);
        c = config(text);
        good_posture(&p);
        good_input(&in, &p);
        apply(k, &in, &p);
        score_eval(c, &in, &r);
        f = find_failure(&r, "c");
        if (k->fails ? (r.score != 0 || f == NULL || (int)f->reason != k->reason)
                     : (r.score != 100 || f != NULL)) {
            print_error("case %zu (%s, mut %d %s): score %d, reason %s\n", i, k->check, k->mut,
                        k->arg ? k->arg : "", r.score, f ? score_reason_name(f->reason) : "-");
            bad++;
        }
        score_config_unref(c);
    }
    assert_int_equal(bad, 0);
}

/* ---- weights, tiers, thresholds ----------------------------------------- */

#define TIERS4                                                                                     \
    "\"tiers\":[{\"name\":\"untrusted\",\"min_score\":0},{\"name\":\"basic\",\"min_score\":40},"   \
    "{\"name\":\"trusted\",\"min_score\":70},{\"name\":\"high\",\"min_score\":90}]"

static void test_weights_and_tiers(void **state)
{
    static const struct {
        int disk, fw, lock, autoupd; /* 1: fails */
        int score;
        const char *tier;
    } cases[] = {
        {0, 0, 0, 0, 100, "high"},     {0, 0, 0, 1, 90, "high"},    /* exactly at 90 */
        {0, 0, 1, 0, 80, "trusted"},   {0, 0, 1, 1, 70, "trusted"}, /* exactly at 70 */
        {0, 1, 1, 0, 60, "basic"},     {1, 0, 0, 0, 50, "basic"},    {1, 0, 0, 1, 40, "basic"},
        {1, 0, 1, 0, 30, "untrusted"}, {1, 1, 1, 1, 0, "untrusted"},
    };
    struct score_config *c = config(
        "{" TIERS4 ",\"checks\":[{\"id\":\"disk\",\"type\":\"disk_encryption\",\"weight\":50},"
        "{\"id\":\"fw\",\"type\":\"firewall\",\"weight\":20},"
        "{\"id\":\"lock\",\"type\":\"screen_lock\",\"weight\":20},"
        "{\"id\":\"autoupd\",\"type\":\"auto_updates\",\"weight\":10}]}");
    struct score_result r;
    struct score_input in;
    struct posture p;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        good_posture(&p);
        good_input(&in, &p);
        p.disk_encryption = cases[i].disk ? POSTURE_NO : POSTURE_YES;
        p.firewall = cases[i].fw ? POSTURE_UNKNOWN : POSTURE_YES;
        p.screen_lock = cases[i].lock ? POSTURE_NO : POSTURE_YES;
        p.auto_updates = cases[i].autoupd ? POSTURE_NO : POSTURE_YES;
        score_eval(c, &in, &r);
        assert_int_equal(r.score, cases[i].score);
        assert_string_equal(r.tier_name, cases[i].tier);
        assert_int_equal(r.nfailed,
                         (size_t)(cases[i].disk + cases[i].fw + cases[i].lock + cases[i].autoupd));
        assert_int_equal(r.tier, score_config_tier_find(c, cases[i].tier));
    }
    score_config_unref(c);

    /* No weights at all: the score is 100 and only hard checks matter. */
    c = config("{" TIERS4 ",\"checks\":[{\"id\":\"disk\",\"type\":\"disk_encryption\"},"
               "{\"id\":\"fw\",\"type\":\"firewall\",\"hard\":true}]}");
    good_posture(&p);
    good_input(&in, &p);
    p.disk_encryption = POSTURE_NO;
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 100);
    assert_string_equal(r.tier_name, "high");
    assert_int_equal(r.nfailed, 1); /* still reported */
    p.firewall = POSTURE_NO;
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 100);
    assert_string_equal(r.tier_name, "untrusted"); /* remediation tier defaults to the lowest */
    score_config_unref(c);
}

/* ---- hard requirements, remediation and unknown-device tiers ------------ */

static void test_hard_and_remediation(void **state)
{
    struct score_config *c = config(NULL);
    struct score_result r;
    struct score_input in;
    struct posture p;

    (void)state;
    /* A stale report fails the hard freshness check: at most "identified". */
    good_posture(&p);
    good_input(&in, &p);
    p.collected_at = p.received_at = NOW - 25 * 3600;
    score_eval(c, &in, &r);
    assert_string_equal(r.tier_name, "identified");
    assert_true(r.flags & SCORE_F_HARD_FAIL);
    assert_true(r.flags & SCORE_F_STALE_POSTURE);
    assert_int_equal(r.stale, 1);
    assert_string_equal(r.failed[0].id, "fresh_posture");
    assert_int_equal(r.failed[0].hard, 1);
    assert_int_equal(r.failed[0].reason, SCORE_REASON_STALE_POSTURE);
    assert_string_equal(
        r.failed[0].remediation,
        "The device agent has not reported recently; make sure ztagent is running.");
    /* ... and the checks that read the report fail as stale rather than pass on old data. */
    assert_int_equal(find_failure(&r, "disk")->reason, SCORE_REASON_STALE_POSTURE);
    assert_int_equal(r.score, 20); /* only "managed" still counts */

    /* A hard failure caps a high score, but never raises a low one. */
    good_posture(&p);
    good_input(&in, &p);
    in.record = rec("retired"); /* status_active (hard) fails */
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 100);
    assert_string_equal(r.tier_name, "identified");
    assert_string_equal(r.failed[0].id, "inventory_active");
    assert_string_equal(r.failed[0].remediation,
                        "This device is not active in the device inventory; contact IT.");
    in.posture = NULL;
    score_eval(c, &in, &r);
    assert_string_equal(r.tier_name, "identified"); /* score 20: the cap changes nothing */
    assert_int_equal(r.score, 20);
    assert_true(r.flags & SCORE_F_NO_POSTURE);
    assert_false(r.flags & SCORE_F_STALE_POSTURE); /* missing is not stale */
    score_config_unref(c);

    /* A custom remediation tier and text. */
    c = config("{" TIERS4 ",\"remediation_tier\":\"basic\",\"checks\":[{\"id\":\"disk\","
               "\"type\":\"disk_encryption\",\"hard\":true,\"weight\":100,\"remediation\":"
               "\"Enable FileVault or LUKS.\"}]}");
    good_posture(&p);
    good_input(&in, &p);
    p.disk_encryption = POSTURE_UNKNOWN;
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 0);
    assert_string_equal(r.tier_name, "untrusted");
    score_config_unref(c);
    c = config("{" TIERS4 ",\"remediation_tier\":\"basic\",\"checks\":[{\"id\":\"disk\","
               "\"type\":\"disk_encryption\",\"hard\":true,\"remediation\":"
               "\"Enable FileVault or LUKS.\"}]}");
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 100);
    assert_string_equal(r.tier_name, "basic");
    assert_string_equal(r.failed[0].remediation, "Enable FileVault or LUKS.");
    assert_int_equal(r.failed[0].reason, SCORE_REASON_UNKNOWN);
    /* Not in the inventory: a hard failure means the lowest tier, not the remediation tier. */
    in.record = NULL;
    score_eval(c, &in, &r);
    assert_string_equal(r.tier_name, "untrusted");
    score_config_unref(c);
}

static void test_unknown_device(void **state)
{
    struct score_config *c = config(NULL);
    struct score_result r;
    struct score_input in;
    struct posture p;

    (void)state;
    good_posture(&p);
    good_input(&in, &p);
    in.record = NULL;
    score_eval(c, &in, &r);
    assert_string_equal(r.tier_name, "untrusted");
    assert_true(r.flags & SCORE_F_UNKNOWN_DEVICE);
    assert_string_equal(r.failed[0].id, "device_unknown");
    assert_int_equal(r.failed[0].reason, SCORE_REASON_NO_RECORD);
    assert_string_equal(r.failed[0].remediation,
                        "This device is not in the device inventory; enroll it or contact IT.");
    assert_int_equal(find_failure(&r, "managed")->reason, SCORE_REASON_NO_RECORD);
    score_config_unref(c);

    /* unknown_device_tier is a cap: a perfect unknown device gets at most that. */
    c = config("{" TIERS4 ",\"unknown_device_tier\":\"basic\",\"checks\":[{\"id\":\"disk\","
               "\"type\":\"disk_encryption\",\"weight\":100}]}");
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 100);
    assert_string_equal(r.tier_name, "basic");
    p.disk_encryption = POSTURE_NO;
    score_eval(c, &in, &r);
    assert_string_equal(r.tier_name, "untrusted");
    score_config_unref(c);
}

static void test_lost_stolen(void **state)
{
    static const struct {
        const char *record;
        enum inventory_status override;
        int lost;
    } cases[] = {
        {"lost", INVENTORY_STATUS_NONE, 1},    {"stolen", INVENTORY_STATUS_NONE, 1},
        {"good", INVENTORY_STATUS_LOST, 1},    {"good", INVENTORY_STATUS_STOLEN, 1},
        {"lost", INVENTORY_STATUS_ACTIVE, 0}, /* the admin found it: override wins */
        {"retired", INVENTORY_STATUS_NONE, 0}, {"good", INVENTORY_STATUS_NONE, 0},
        {NULL, INVENTORY_STATUS_LOST, 1}, /* lost, unknown: still the lowest */
    };
    struct score_config *c =
        config("{" TIERS4 ",\"checks\":[{\"id\":\"disk\",\"type\":\"disk_encryption\","
               "\"weight\":100}]}");
    struct score_result r;
    struct score_input in;
    struct posture p;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        good_posture(&p);
        good_input(&in, &p);
        in.record = cases[i].record ? rec(cases[i].record) : NULL;
        in.override = cases[i].override;
        score_eval(c, &in, &r);
        assert_int_equal(r.score, 100); /* the checks themselves pass */
        if (cases[i].lost) {
            assert_int_equal(r.tier, 0);
            assert_true(r.flags & SCORE_F_LOST);
            assert_string_equal(r.failed[0].id, "device_lost");
            assert_int_equal(r.failed[0].reason, SCORE_REASON_LOST);
            assert_int_equal(r.failed[0].hard, 1);
        } else {
            assert_false(r.flags & SCORE_F_LOST);
            assert_null(find_failure(&r, "device_lost"));
            assert_string_equal(r.tier_name, cases[i].record ? "high" : "untrusted");
        }
    }
    score_config_unref(c);
}

static void test_staleness(void **state)
{
    struct score_config *c = config(NULL);
    struct score_result r;
    struct score_input in;
    struct posture p;

    (void)state;
    /* Exactly 24 h is fresh, a second more is stale. */
    good_posture(&p);
    good_input(&in, &p);
    p.collected_at = NOW - 24 * 3600;
    score_eval(c, &in, &r);
    assert_int_equal(r.stale, 0);
    assert_string_equal(r.tier_name, "high");
    p.collected_at = NOW - 24 * 3600 - 1;
    score_eval(c, &in, &r);
    assert_int_equal(r.stale, 1);
    assert_true(r.flags & SCORE_F_STALE_POSTURE);

    /* A stale inventory fails the inventory checks closed, and says so. */
    good_posture(&p);
    good_input(&in, &p);
    in.inventory_stale = 1;
    score_eval(c, &in, &r);
    assert_int_equal(r.stale, 1);
    assert_true(r.flags & SCORE_F_STALE_INVENTORY);
    assert_int_equal(find_failure(&r, "inventory_active")->reason, SCORE_REASON_STALE_INVENTORY);
    assert_int_equal(find_failure(&r, "managed")->reason, SCORE_REASON_STALE_INVENTORY);
    assert_string_equal(r.tier_name, "identified");
    assert_string_equal(score_reason_name(SCORE_REASON_STALE_INVENTORY), "stale_inventory");
    score_config_unref(c);
}

/* ---- grace periods ------------------------------------------------------ */

static void test_grace(void **state)
{
    struct score_config *c =
        config("{" TIERS4 ",\"checks\":[{\"id\":\"patch\",\"type\":\"patch_age_max\","
               "\"max_days\":30,\"grace\":\"7d\",\"weight\":60},{\"id\":\"disk\",\"type\":"
               "\"disk_encryption\",\"weight\":40,\"grace\":\"1h\",\"hard\":true}]}");
    struct score_grace g, g2;
    struct score_result r;
    struct score_input in;
    struct posture p;
    char buf[SCORE_GRACE_JSON_MAX], err[256];
    const struct score_failure *f;

    (void)state;
    good_posture(&p);
    good_input(&in, &p);
    p.days_since_patch = 40;

    /* Without a grace state, grace is not applied. */
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 40);
    assert_int_equal(find_failure(&r, "patch")->in_grace, 0);

    /* First failure: in grace, not counted, listed with its deadline. */
    score_grace_init(&g);
    in.grace = &g;
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 100);
    assert_string_equal(r.tier_name, "high");
    f = find_failure(&r, "patch");
    assert_non_null(f);
    assert_int_equal(f->in_grace, 1);
    assert_int_equal(f->weight, 0);
    assert_int_equal(f->grace_until, NOW + 7 * DAY);
    assert_int_equal(score_grace_update(c, &g, &r, NOW), 1);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.e[0].check, "patch");
    assert_int_equal(g.e[0].since, NOW);
    /* Still failing later: the start time is kept. */
    in.now = NOW + DAY;
    score_eval(c, &in, &r);
    assert_int_equal(score_grace_update(c, &g, &r, in.now), 0);
    assert_int_equal(g.e[0].since, NOW);

    /* Both sides of the grace: exactly 7 days is still grace, one second more is not. */
    in.now = NOW + 7 * DAY;
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 100);
    in.now = NOW + 7 * DAY + 1;
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 40);
    assert_string_equal(r.tier_name, "basic");
    f = find_failure(&r, "patch");
    assert_int_equal(f->in_grace, 0);
    assert_int_equal(f->weight, 60);

    /* A hard check in grace does not cap the tier; after its grace it does. */
    p.days_since_patch = 1;
    p.disk_encryption = POSTURE_NO;
    in.now = NOW;
    score_grace_init(&g);
    score_eval(c, &in, &r);
    assert_string_equal(r.tier_name, "high");
    assert_false(r.flags & SCORE_F_HARD_FAIL);
    assert_int_equal(score_grace_update(c, &g, &r, in.now), 1); /* disk starts, patch passes */
    assert_int_equal(g.n, 1);
    assert_string_equal(g.e[0].check, "disk");
    in.now = NOW + 3600;
    score_eval(c, &in, &r);
    assert_string_equal(r.tier_name, "high");
    in.now = NOW + 3601;
    score_eval(c, &in, &r);
    assert_string_equal(r.tier_name, "untrusted"); /* remediation tier: the lowest here */
    assert_true(r.flags & SCORE_F_HARD_FAIL);
    assert_string_equal(r.failed[0].id, "disk");
    assert_int_equal(r.failed[0].hard, 1);

    /* Passing again forgets the start: the next failure gets a full grace. */
    p.disk_encryption = POSTURE_YES;
    score_eval(c, &in, &r);
    assert_int_equal(score_grace_update(c, &g, &r, in.now), 1);
    assert_int_equal(g.n, 0);
    assert_int_equal(score_grace_update(c, &g, &r, in.now), 0);

    /* Persistence round trip, and strict reading. */
    p.disk_encryption = POSTURE_NO;
    p.days_since_patch = 99;
    score_eval(c, &in, &r);
    assert_int_equal(score_grace_update(c, &g, &r, NOW), 1);
    assert_int_equal(g.n, 2);
    assert_true(score_grace_to_json(&g, buf, sizeof(buf)) > 0);
    assert_string_equal(buf,
                        "{\"patch\":\"2024-05-01T12:00:00Z\",\"disk\":\"2024-05-01T12:00:00Z\"}");
    assert_int_equal(score_grace_from_json(buf, strlen(buf), &g2, err, sizeof(err)), 0);
    assert_int_equal(g2.n, 2);
    assert_string_equal(g2.e[1].check, "disk");
    assert_int_equal(g2.e[1].since, NOW);
    assert_int_equal(score_grace_to_json(&g, buf, 20), -1);
    score_grace_init(&g2);
    assert_int_equal(score_grace_to_json(&g2, buf, sizeof(buf)), 2);
    assert_string_equal(buf, "{}");
    assert_int_equal(score_grace_from_json("[]", 2, &g2, err, sizeof(err)), -1);
    assert_string_equal(err, "grace: $: expected an object, got an array");
    assert_int_equal(score_grace_from_json("{\"a\":1}", 7, &g2, err, sizeof(err)), -1);
    assert_string_equal(err, "grace: $.a: expected an RFC 3339 time, got 1");
    snprintf(buf, sizeof(buf), "{\"A B\":\"2024-05-01T12:00:00Z\"}");
    assert_int_equal(score_grace_from_json(buf, strlen(buf), &g2, err, sizeof(err)), -1);
    assert_string_equal(err, "grace: $.A B: expected a check id");
    snprintf(buf, sizeof(buf),
             "{\"a\":\"2024-05-01T12:00:00Z\",\"b\":\"2024-05-01T12:00:00Z\","
             "\"c\":\"2024-05-01T12:00:00Z\",\"d\":\"2024-05-01T12:00:00Z\","
             "\"e\":\"2024-05-01T12:00:00Z\",\"f\":\"2024-05-01T12:00:00Z\","
             "\"g\":\"2024-05-01T12:00:00Z\",\"h\":\"2024-05-01T12:00:00Z\","
             "\"i\":\"2024-05-01T12:00:00Z\"}");
    assert_int_equal(score_grace_from_json(buf, strlen(buf), &g2, err, sizeof(err)), -1);
    assert_string_equal(err, "grace: $: more than 8 entries");
    score_config_unref(c);

    /* A check removed from the config drops out of the state. */
    c = config("{" TIERS4 ",\"checks\":[{\"id\":\"disk\",\"type\":\"disk_encryption\","
               "\"weight\":100,\"grace\":\"1h\"}]}");
    score_eval(c, &in, &r);
    assert_int_equal(score_grace_update(c, &g, &r, NOW), 1);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.e[0].check, "disk");
    score_config_unref(c);
}

/* ---- config validation -------------------------------------------------- */

struct cfg_case {
    const char *text;
    const char *expect;
};

#define CHK(X) "{\"checks\":[" X "]}"

static const struct cfg_case cfg_cases[] = {
    {"{",
     "t.json: $: JSON syntax error at line 1 column 1: string or '}' expected near end of file"},
    {"[]", "t.json: $: expected an object, got an array"},
    {"{\"tier\":[]}", "t.json: $.tier: unknown key"},
    {"{\"tiers\":[]}", "t.json: $.tiers: expected an array of 1 to 8 tiers, got an array"},
    {"{\"tiers\":{}}", "t.json: $.tiers: expected an array of 1 to 8 tiers, got an object"},
    {"{\"tiers\":[{\"name\":\"a\",\"min_score\":10}]}",
     "t.json: $.tiers[0].min_score: the first (lowest) tier must have min_score 0, so every score "
     "has a tier"},
    {"{\"tiers\":[{\"name\":\"a\",\"min_score\":0},{\"name\":\"b\",\"min_score\":50},{\"name\":"
     "\"c\",\"min_score\":50}]}",
     "t.json: $.tiers[2].min_score: tiers must be in ascending order of min_score: 50 after 50"},
    {"{\"tiers\":[{\"name\":\"a\",\"min_score\":0},{\"name\":\"b\",\"min_score\":60},{\"name\":"
     "\"c\",\"min_score\":40}]}",
     "t.json: $.tiers[2].min_score: tiers must be in ascending order of min_score: 40 after 60"},
    {"{\"tiers\":[{\"name\":\"a\",\"min_score\":0},{\"name\":\"a\",\"min_score\":50}]}",
     "t.json: $.tiers[1].name: duplicate tier name \"a\""},
    {"{\"tiers\":[{\"name\":\"a\",\"min_score\":0},{\"name\":\"b\",\"min_score\":101}]}",
     "t.json: $.tiers[1].min_score: expected an integer 0..100, got 101"},
    {"{\"tiers\":[{\"name\":\"A\",\"min_score\":0}]}",
     "t.json: $.tiers[0].name: expected 1-31 characters of [a-z0-9_-], got \"A\""},
    {"{\"tiers\":[{\"min_score\":0}]}", "t.json: $.tiers[0].name: required key is missing"},
    {"{\"tiers\":[{\"name\":\"a\"}]}", "t.json: $.tiers[0].min_score: required key is missing"},
    {"{\"tiers\":[{\"name\":\"a\",\"min_score\":0,\"color\":\"red\"}]}",
     "t.json: $.tiers[0].color: unknown key"},
    {"{\"remediation_tier\":\"nope\"}",
     "t.json: $.remediation_tier: expected the name of a tier, got \"nope\""},
    {"{\"unknown_device_tier\":3}",
     "t.json: $.unknown_device_tier: expected the name of a tier, got 3"},
    {"{\"tiers\":[{\"name\":\"a\",\"min_score\":0}],\"remediation_tier\":\"identified\"}",
     "t.json: $.remediation_tier: expected the name of a tier, got \"identified\""},
    {CHK("{\"id\":\"x\",\"type\":\"antivirus\",\"weight\":100}"),
     "t.json: $.checks[0].type: unknown check type \"antivirus\" (expected status_active, managed, "
     "owner_is_user, posture_max_age, disk_encryption, firewall, screen_lock, auto_updates, "
     "os_version_min, patch_age_max or agent_version_min)"},
    {CHK("{\"id\":\"x\",\"weight\":100}"), "t.json: $.checks[0].type: required key is missing"},
    {CHK("{\"type\":\"firewall\",\"weight\":100}"),
     "t.json: $.checks[0].id: required key is missing"},
    {CHK("{\"id\":\"x\",\"type\":\"firewall\",\"weight\":100,\"max_days\":3}"),
     "t.json: $.checks[0].max_days: unknown key for a firewall check"},
    {CHK("{\"id\":\"x\",\"type\":\"firewall\",\"weight\":100,\"wieght\":3}"),
     "t.json: $.checks[0].wieght: unknown key for a firewall check"},
    {CHK("{\"id\":\"x\",\"type\":\"firewall\",\"weight\":60},{\"id\":\"y\",\"type\":\"screen_"
         "lock\","
         "\"weight\":45}"),
     "t.json: $.checks: the weights add up to 105; they must add up to 100 (or all be 0)"},
    {CHK("{\"id\":\"x\",\"type\":\"firewall\",\"weight\":60},{\"id\":\"x\",\"type\":\"screen_"
         "lock\","
         "\"weight\":40}"),
     "t.json: $.checks[1].id: duplicate check id \"x\" (also $.checks[0])"},
    {CHK("{\"id\":\"x\",\"type\":\"firewall\",\"weight\":-5}"),
     "t.json: $.checks[0].weight: expected an integer 0..100, got -5"},
    {CHK("{\"id\":\"x\",\"type\":\"firewall\",\"weight\":100,\"hard\":1}"),
     "t.json: $.checks[0].hard: expected true or false, got 1"},
    {CHK("{\"id\":\"device_lost\",\"type\":\"firewall\",\"weight\":100}"),
     "t.json: $.checks[0].id: \"device_lost\" is reserved"},
    {CHK("{\"id\":\"x\",\"type\":\"firewall\",\"weight\":100,\"remediation\":\"\"}"),
     "t.json: $.checks[0].remediation: expected a string of 1 to 255 bytes, got \"\""},
    {CHK("{\"id\":\"x\",\"type\":\"firewall\",\"weight\":100,\"remediation\":\"a\\nb\"}"),
     "t.json: $.checks[0].remediation: control characters are not allowed"},
    {CHK("{\"id\":\"x\",\"type\":\"firewall\",\"weight\":100,\"grace\":\"7w\"}"),
     "t.json: $.checks[0].grace: expected a duration 0s..31536000s like \"90s\", \"15m\", \"24h\", "
     "\"7d\" or seconds, got \"7w\""},
    {CHK("{\"id\":\"x\",\"type\":\"firewall\",\"weight\":100,\"grace\":\"366d\"}"),
     "t.json: $.checks[0].grace: expected a duration 0s..31536000s like \"90s\", \"15m\", \"24h\", "
     "\"7d\" or seconds, got \"366d\""},
    {CHK("{\"id\":\"x\",\"type\":\"posture_max_age\",\"weight\":100}"),
     "t.json: $.checks[0].max_age: required key is missing"},
    {CHK("{\"id\":\"x\",\"type\":\"posture_max_age\",\"max_age\":\"0s\",\"weight\":100}"),
     "t.json: $.checks[0].max_age: expected a duration 1s..31536000s like \"90s\", \"15m\", "
     "\"24h\", \"7d\" or seconds, got \"0s\""},
    {CHK("{\"id\":\"x\",\"type\":\"patch_age_max\",\"max_days\":\"30\",\"weight\":100}"),
     "t.json: $.checks[0].max_days: expected an integer 0..36500, got \"30\""},
    {CHK("{\"id\":\"x\",\"type\":\"agent_version_min\",\"min\":\"v1\",\"weight\":100}"),
     "t.json: $.checks[0].min: expected a version like \"1.2.3\" (at most 31 characters), got "
     "\"v1\""},
    {CHK("{\"id\":\"x\",\"type\":\"os_version_min\",\"min\":{},\"weight\":100}"),
     "t.json: $.checks[0].min: expected an object of 1 to 16 \"os or platform\": \"min version\" "
     "pairs, got an object"},
    {CHK("{\"id\":\"x\",\"type\":\"os_version_min\",\"min\":{\"debian\":12},\"weight\":100}"),
     "t.json: $.checks[0].min.debian: expected a version like \"1.2.3\" (at most 31 characters), "
     "got 12"},
    {CHK("{\"id\":\"x\",\"type\":\"os_version_min\",\"min\":{\"Debian\":\"12\"},\"weight\":100}"),
     "t.json: $.checks[0].min.Debian: OS and platform names are 1-31 characters of [a-z0-9_-]"},
    {CHK("{\"id\":\"a\",\"type\":\"firewall\",\"grace\":60},{\"id\":\"b\",\"type\":\"firewall\","
         "\"grace\":60},{\"id\":\"c\",\"type\":\"firewall\",\"grace\":60},{\"id\":\"d\",\"type\":"
         "\"firewall\",\"grace\":60},{\"id\":\"e\",\"type\":\"firewall\",\"grace\":60},{\"id\":"
         "\"f\",\"type\":\"firewall\",\"grace\":60},{\"id\":\"g\",\"type\":\"firewall\",\"grace\":"
         "60},{\"id\":\"h\",\"type\":\"firewall\",\"grace\":60},{\"id\":\"i\",\"type\":"
         "\"firewall\",\"grace\":60}"),
     "t.json: $.checks: 9 checks have a grace period, the limit is 8"},
    {"{\"checks\":{}}", "t.json: $.checks: expected an array of at most 32 checks, got an object"},
    {"{\"checks\":[1]}", "t.json: $.checks[0]: expected an object, got 1"},
};

static void test_config_errors(void **state)
{
    size_t i;
    int bad = 0;

    (void)state;
    for (i = 0; i < sizeof(cfg_cases) / sizeof(cfg_cases[0]); i++) {
        struct score_config *c = NULL;
        char err[512] = "";
        int rc = score_config_parse(cfg_cases[i].text, strlen(cfg_cases[i].text), "t.json", &c, err,
                                    sizeof(err));
        if (rc != -1 || c != NULL || strcmp(err, cfg_cases[i].expect) != 0) {
            print_error("case %zu: rc %d\n  got:    %s\n  expect: %s\n", i, rc, err,
                        cfg_cases[i].expect);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

static void test_config_good(void **state)
{
    /* The example, with weights that add up to 100. */
    static const char text[] =
        "{\"tiers\":[{\"name\":\"untrusted\",\"min_score\":0},{\"name\":\"identified\","
        "\"min_score\":10},{\"name\":\"basic\",\"min_score\":40},{\"name\":\"trusted\","
        "\"min_score\":70},{\"name\":\"high\",\"min_score\":90}],"
        "\"remediation_tier\":\"identified\",\"unknown_device_tier\":\"untrusted\","
        "\"checks\":[{\"id\":\"inventory_active\",\"type\":\"status_active\",\"hard\":true,"
        "\"remediation\":\"This device is not active in the inventory; contact IT.\"},"
        "{\"id\":\"managed\",\"type\":\"managed\",\"weight\":20},"
        "{\"id\":\"owner\",\"type\":\"owner_is_user\"},"
        "{\"id\":\"fresh_posture\",\"type\":\"posture_max_age\",\"max_age\":\"24h\",\"hard\":true},"
        "{\"id\":\"disk\",\"type\":\"disk_encryption\",\"weight\":25,\"remediation\":\"Turn on "
        "full-disk encryption\"},{\"id\":\"fw\",\"type\":\"firewall\",\"weight\":10},"
        "{\"id\":\"lock\",\"type\":\"screen_lock\",\"weight\":10},"
        "{\"id\":\"os\",\"type\":\"os_version_min\",\"min\":{\"linux\":\"6.1\",\"debian\":\"12\","
        "\"macos\":\"14.0\",\"windows\":\"10.0.19045\"},\"weight\":15},"
        "{\"id\":\"patch\",\"type\":\"patch_age_max\",\"max_days\":30,\"weight\":10,\"grace\":"
        "\"7d\"},{\"id\":\"agent\",\"type\":\"agent_version_min\",\"min\":\"1.0.0\",\"weight\":5},"
        "{\"id\":\"autoupd\",\"type\":\"auto_updates\",\"weight\":5}]}";
    struct score_config *c = config(text), *c2;
    struct score_result r;
    struct score_input in;
    struct posture p;
    json_error_t jerr;
    json_t *root;
    char err[256];

    (void)state;
    good_posture(&p);
    good_input(&in, &p);
    in.user_email = "mallory@corp.example";
    score_eval(c, &in, &r);
    assert_int_equal(r.score, 100);
    assert_string_equal(r.tier_name, "high");
    assert_int_equal(r.nfailed, 1); /* owner: informational, weight 0 */
    assert_string_equal(r.failed[0].id, "owner");
    assert_ptr_equal(score_config_ref(c), c);
    score_config_unref(c);
    score_config_unref(c);
    score_config_unref(NULL);

    /* From a section of an already parsed config, with its path in errors. */
    root = json_loads("{\"device_trust\":{\"checks\":[{\"id\":\"x\",\"type\":\"firewall\","
                      "\"weight\":99}]}}",
                      0, &jerr);
    assert_non_null(root);
    assert_int_equal(score_config_from_json(json_object_get(root, "device_trust"), "ztproxy.json",
                                            "$.device_trust", &c2, err, sizeof(err)),
                     -1);
    assert_string_equal(err, "ztproxy.json: $.device_trust.checks: the weights add up to 99; they "
                             "must add up to 100 (or all be 0)");
    json_decref(root);
    assert_int_equal(
        score_config_from_json(NULL, "ztproxy.json", "$.device_trust", &c2, err, sizeof(err)), 0);
    assert_int_equal(score_config_tier_count(c2), 5);
    score_config_unref(c2);
}

/* ---- versions ----------------------------------------------------------- */

static void test_version_cmp(void **state)
{
    static const struct {
        const char *a, *b;
        int rc, cmp;
    } cases[] = {
        {"10.0.19045", "10.0.9999", 0, 1},
        {"10.0.9999", "10.0.19045", 0, -1},
        {"12", "12.0", 0, 0},
        {"12.0.0", "12", 0, 0},
        {"12.4", "12", 0, 1},
        {"6.1.0-18-amd64", "6.1", 0, 0},
        {"6.1.0-18-amd64", "6.1.1", 0, -1},
        {"6.10", "6.9", 0, 1},
        {"1.2.3", "1.2.3", 0, 0},
        {"01.002", "1.2", 0, 0},
        {"1.2.", "1.2", 0, 0},
        {"1..2", "1", 0, 0},
        {"99999999999999999999999", "99999999999999999999998", 0, 1},
        {"22.04", "22.4", 0, 0},
        {"14.4.1", "14.0", 0, 1},
        {"2.0.0-rc1", "2.0.0", 0, 0},
        {"v1", "1", -1, 0},
        {"", "1", -1, 0},
        {"1", "x", -1, 0},
    };
    size_t i;
    int cmp;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cmp = 42;
        int rc = score_version_cmp(cases[i].a, cases[i].b, &cmp);
        if (rc != cases[i].rc || (rc == 0 && cmp != cases[i].cmp)) {
            print_error("%s vs %s: rc %d cmp %d\n", cases[i].a, cases[i].b, rc, cmp);
            fail();
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_policy),    cmocka_unit_test(test_check_types),
        cmocka_unit_test(test_weights_and_tiers), cmocka_unit_test(test_hard_and_remediation),
        cmocka_unit_test(test_unknown_device),    cmocka_unit_test(test_lost_stolen),
        cmocka_unit_test(test_staleness),         cmocka_unit_test(test_grace),
        cmocka_unit_test(test_config_errors),     cmocka_unit_test(test_config_good),
        cmocka_unit_test(test_version_cmp),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
