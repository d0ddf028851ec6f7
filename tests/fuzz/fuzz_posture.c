/*
 * fuzz_posture.c - every device-trust parser that takes JSON from outside:
 * posture reports (and their persisted form), the scoring config and the
 * grace state. Each input is tried against all four. Invariants: refusals
 * explain themselves; an accepted report survives posture_to_json() ->
 * posture_from_json() unchanged; the scorer stays in range on anything.
 *
 *   clang -std=c11 -g -O1 -D_GNU_SOURCE -Iinclude -fsanitize=fuzzer,address,undefined \
 *       tests/fuzz/fuzz_posture.c device/posture.c device/score.c device/inventory.c \
 *       -ljansson -lcrypto -lm -o /tmp/fuzz_posture \
 *       && /tmp/fuzz_posture -max_total_time=180 tests/fuzz/corpus/posture
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "posture.h"
#include "score.h"

#define NOW 1714564800

static void check_result(const struct score_config *c, const struct score_result *r)
{
    size_t i;

    if (r->score < 0 || r->score > 100 || r->tier < 0 ||
        (size_t)r->tier >= score_config_tier_count(c) || r->nfailed > SCORE_MAX_FAILURES ||
        strcmp(r->tier_name, score_config_tier_name(c, (size_t)r->tier)) != 0)
        abort();
    for (i = 0; i < r->nfailed; i++)
        if (r->failed[i].id == NULL || r->failed[i].remediation == NULL)
            abort();
}

static void same(const struct posture *a, const struct posture *b)
{
    if (a->has_device_id != b->has_device_id || strcmp(a->device_id, b->device_id) != 0 ||
        a->collected_at != b->collected_at || a->received_at != b->received_at ||
        strcmp(a->agent_version, b->agent_version) != 0 || strcmp(a->os_name, b->os_name) != 0 ||
        strcmp(a->os_version, b->os_version) != 0 || strcmp(a->kernel, b->kernel) != 0 ||
        a->disk_encryption != b->disk_encryption || a->firewall != b->firewall ||
        a->screen_lock != b->screen_lock || a->auto_updates != b->auto_updates ||
        a->days_since_patch != b->days_since_patch || a->uptime_seconds != b->uptime_seconds)
        abort();
}

static void round_trip(const struct posture *p)
{
    char buf[POSTURE_JSON_MAX], buf2[POSTURE_JSON_MAX], err[512];
    struct posture q;
    int n;

    n = posture_to_json(p, buf, sizeof(buf));
    if (n <= 0)
        abort();
    if (posture_from_json(buf, (size_t)n, &q, err, sizeof(err)) != 0)
        abort();
    same(p, &q);
    if (posture_to_json(&q, buf2, sizeof(buf2)) != n || memcmp(buf, buf2, (size_t)n) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct score_config *def;
    const char *text = (const char *)data;
    struct score_config *cfg = NULL;
    struct score_grace g, g2;
    struct score_result r;
    struct score_input in;
    struct posture p;
    char err[512], buf[SCORE_GRACE_JSON_MAX];
    int n;

    if (def == NULL && score_config_parse(NULL, 0, "default", &def, err, sizeof(err)) == -1)
        abort();
    memset(&in, 0, sizeof(in));
    in.now = NOW + 3600;
    in.user_email = "alice@corp.example";

    /* 1. An agent report. */
    err[0] = '\0';
    if (posture_parse(text, size, NOW, &p, err, sizeof(err)) == 0) {
        round_trip(&p);
        in.posture = &p;
        score_eval(def, &in, &r);
        check_result(def, &r);
    } else if (err[0] == '\0') {
        abort();
    }

    /* 2. A persisted report. */
    err[0] = '\0';
    if (posture_from_json(text, size, &p, err, sizeof(err)) == 0) {
        round_trip(&p);
    } else if (err[0] == '\0') {
        abort();
    }

    /* 3. A scoring config: score a device against it, with grace state. */
    err[0] = '\0';
    if (score_config_parse(text, size, "fuzz", &cfg, err, sizeof(err)) == 0) {
        struct posture good;
        memset(&good, 0, sizeof(good));
        good.collected_at = good.received_at = NOW;
        memcpy(good.agent_version, "1.0", 4);
        memcpy(good.os_name, "debian", 7);
        memcpy(good.os_version, "12", 3);
        good.disk_encryption = POSTURE_NO;
        good.days_since_patch = 40;
        score_grace_init(&g);
        in.posture = &good;
        in.grace = &g;
        score_eval(cfg, &in, &r);
        check_result(cfg, &r);
        (void)score_grace_update(cfg, &g, &r, in.now);
        in.now += 86400 * 8;
        score_eval(cfg, &in, &r);
        check_result(cfg, &r);
        in.posture = NULL;
        score_eval(cfg, &in, &r);
        check_result(cfg, &r);
        score_config_unref(cfg);
    } else if (err[0] == '\0' || cfg != NULL) {
        abort();
    }

    /* 4. Grace state. */
    err[0] = '\0';
    if (score_grace_from_json(text, size, &g, err, sizeof(err)) == 0) {
        n = score_grace_to_json(&g, buf, sizeof(buf));
        if (n <= 0 || score_grace_from_json(buf, (size_t)n, &g2, err, sizeof(err)) != 0 ||
            g2.n != g.n)
            abort();
    } else if (err[0] == '\0') {
        abort();
    }
    return 0;
}
