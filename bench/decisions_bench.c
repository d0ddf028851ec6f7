/*
 * decisions_bench.c - what recording a decision in the admin API's ring
 * (decisions_record(), called by decide.c on every request) adds per
 * request, on one core and with two workers recording at once.
 *
 * Built by CMake with everything else (from the repository root):
 *   cmake --build build --target decisions_bench && build/decisions_bench
 *
 * A realistic decision: a signed-in user, a device with 8 attributes, a
 * 40-byte path with a query, 3 groups, 2 reasons, 1 monitor result. The
 * ring holds 10,000 records (the default; -DRING=64 for one that stays in
 * the caches), so the loop wraps it many times and every slot it writes is
 * cold, as in a proxy that is busy. Back to back, the prefetch of the next
 * slot cannot hide that; between real requests it mostly can. Reports
 * thread CPU time per record (median of 31 batches of 100,000).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "authz.h"
#include "decisions.h"
#include "devtrust.h"

#ifndef BATCH
#define BATCH 100000
#endif
#define BATCHES 31
#ifndef RING
#define RING 10000
#endif

static struct authz_input in;
static struct authz_result res;
static struct devtrust_verdict verdict;
static struct policy_attr attrs[8] = {
    {"platform", "linux"},   {"os_version", "12.5"}, {"model", "ThinkPad X1"},
    {"managed", "true"},     {"site", "berlin"},     {"department", "engineering"},
    {"cost_center", "4711"}, {"status", "active"},
};
static struct sockaddr_in peer;

static void setup(void)
{
    const char *path = "/wiki/spaces/ENG/pages/12345?version=3";

    memset(&in, 0, sizeof(in));
    in.route = "wiki";
    in.has_identity = 1;
    in.user_sub = "00u1abcdefgh";
    in.user_email = "alice@corp.example";
    in.auth_time = 1779271200 - 600;
    in.mfa = 1;
    in.device_id = "dev-4f2a9c";
    in.device_tier = 3;
    in.device_score = 85;
    in.device_owner = "alice@corp.example";
    in.attrs = attrs;
    in.nattrs = 8;
    peer.sin_family = AF_INET;
    inet_pton(AF_INET, "192.0.2.10", &peer.sin_addr);
    in.peer = (const struct sockaddr *)&peer;
    in.method = "GET";
    in.path = path;
    in.path_len = strlen(path);
    in.now = 1779271200;
    memset(&res, 0, sizeof(res));
    res.decision.effect = POLICY_ALLOW;
    res.decision.rule_id = "wiki-staff";
    res.decision.version = "v1";
    /* two reasons, laid out as policy_eval() does */
    memcpy(res.decision.reason_buf, "group staff\0device_tier trusted >= trusted", 43);
    res.decision.reason_off[0] = 0;
    res.decision.reason_off[1] = 12;
    res.decision.reason_used = 43;
    res.decision.nreasons = 2;
    res.decision.nmonitor = 1;
    res.decision.monitor[0].rule_id = "try-contractors";
    res.decision.monitor[0].rule_effect = POLICY_DENY;
    snprintf(res.client_ip, sizeof(res.client_ip), "192.0.2.10");
    snprintf(res.country, sizeof(res.country), "DE");
    snprintf(res.groups, sizeof(res.groups), "eng,oncall,staff");
    memset(&verdict, 0, sizeof(verdict));
    snprintf(verdict.tier_name, sizeof(verdict.tier_name), "trusted");
    snprintf(verdict.status, sizeof(verdict.status), "active");
}

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct run {
    unsigned ring;
    double median;
};

static void *bench(void *arg)
{
    struct run *r = arg;
    double t[BATCHES];
    int b, i;

    for (b = 0; b < BATCHES; b++) {
        double t0 = now_ns();
        for (i = 0; i < BATCH; i++)
            decisions_record(r->ring, "0123456789abcdef0000000000000001", &in, &verdict, &res);
        t[b] = (now_ns() - t0) / BATCH;
    }
    qsort(t, BATCHES, sizeof(t[0]), cmp_d);
    r->median = t[BATCHES / 2];
    return NULL;
}

int main(void)
{
    struct run one = {0, 0}, two[2] = {{0, 0}, {1, 0}};
    pthread_t th[2];
    int i;

    setup();
    if (decisions_start(RING, 2) == -1) {
        fprintf(stderr, "decisions_start failed\n");
        return 1;
    }
    bench(&one);
    printf("decisions_record, 1 thread:  %.1f ns per decision (median of %d x %d)\n", one.median,
           BATCHES, BATCH);
    for (i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, bench, &two[i]);
    for (i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    printf("decisions_record, 2 threads: %.1f / %.1f ns per decision (own ring each)\n",
           two[0].median, two[1].median);
    decisions_stop();
    if (decisions_start(0, 2) == 0) {
        struct run off = {0, 0};
        bench(&off);
        printf("decisions_record, off:       %.1f ns per decision\n", off.median);
    }
    return 0;
}
