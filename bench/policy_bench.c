/*
 * policy_bench.c - micro-benchmark of policy_eval() on one core.
 *
 * Built by CMake with everything else (from the repository root):
 *   cmake --build build --target policy_bench && build/policy_bench
 *
 * Generates 1,000 rules over 100 routes (10 scoped rules per route, mixed
 * allow/deny; 5 unscoped deny rules and 5 unscoped monitor rules on top; the
 * conditions mix groups, tiers, scores, countries, IP ranges, time windows
 * in three zones, methods, path prefixes and globs, auth age), a directory of
 * 200 groups (nested) and 10,000 users, and 4,096 request contexts. Each
 * context carries the route index (as the proxy resolves it once per route).
 * Times batches of 64 decisions (thread CPU time); reports the median batch
 * time per decision and decisions/s over the whole run, with reasons
 * (as the proxy gets them) - every decision formats its reasons.
 *
 * POLICY_BENCH_APP=FILE: instead, the rules file bench/run.sh writes
 * (write_policy_files: 1,020 rules, routes app and route0..route99) and the
 * request the proxy decides in its whole-pipeline benchmark, every time:
 * GET / on route app from the device bench-1 (tier identified, score 30,
 * its inventory attributes), no identity, 127.0.0.1, country unknown.
 * Under callgrind, the difference of two POLICY_BENCH_BATCHES runs divided
 * by 64 times the difference of their batches is the cost of one decision.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>

#include "directory.h"
#include "policy.h"

#define NROUTES 100
#define NGROUPS 200
#define NUSERS 10000
#define NCTX 4096
#define BATCH 64
#define BATCHES_DEFAULT 40000

static uint64_t rng = 88172645463325252ULL;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

struct sb {
    char *b;
    size_t n, cap;
};

static void sb_add(struct sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#include <stdarg.h>
static void sb_add(struct sb *s, const char *fmt, ...)
{
    va_list ap;
    int w;

    for (;;) {
        va_start(ap, fmt);
        w = vsnprintf(s->b + s->n, s->cap - s->n, fmt, ap);
        va_end(ap);
        if (w >= 0 && (size_t)w < s->cap - s->n) {
            s->n += (size_t)w;
            return;
        }
        s->cap *= 2;
        s->b = realloc(s->b, s->cap);
        if (s->b == NULL)
            abort();
    }
}

static const char *const tiers[] = {"untrusted", "identified", "basic", "trusted", "high"};
static const char *const countries[] = {"DE", "FR", "US", "GB", "NL", "KP", "IR", "JP", "BR", "IN"};
static const char *const zones[] = {"Europe/Berlin", "America/New_York", "Asia/Tokyo"};

static void cond(struct sb *s, int kind)
{
    switch (kind) {
    case 0:
        sb_add(s, "{\"group\":\"g%u\"}", rnd(NGROUPS));
        break;
    case 1: {
        uint32_t g = rnd(NGROUPS);
        sb_add(s, "{\"group\":{\"any_of\":[\"g%u\",\"g%u\",\"g%u\"]}}", g, (g + 67) % NGROUPS,
               (g + 134) % NGROUPS);
        break;
    }
    case 2:
        sb_add(s, "{\"device_tier\":{\"at_least\":\"%s\"}}", tiers[1 + rnd(4)]);
        break;
    case 3:
        sb_add(s, "{\"country\":{\"in\":[\"%s\",\"%s\"]}}", countries[rnd(5)],
               countries[5 + rnd(5)]);
        break;
    case 4:
        sb_add(
            s,
            "{\"time\":{\"days\":\"mon-fri\",\"between\":[\"%02u:00\",\"%02u:00\"],\"tz\":\"%s\"}}",
            6 + rnd(4), 17 + rnd(5), zones[rnd(3)]);
        break;
    case 5:
        sb_add(s, "{\"path\":{\"prefix\":\"/p%u\"}}", rnd(8));
        break;
    case 6:
        sb_add(s, "{\"path\":{\"glob\":\"/api/*/r%u/**\"}}", rnd(4));
        break;
    case 7:
        sb_add(s, "{\"device_score\":{\"at_least\":%u}}", 40 + rnd(50));
        break;
    case 8:
        sb_add(s, "{\"ip\":{\"in\":[\"10.%u.0.0/16\",\"192.168.0.0/16\",\"2001:db8::/32\"]}}",
               rnd(256));
        break;
    case 9:
        sb_add(s, "{\"method\":{\"in\":[\"GET\",\"HEAD\"]}}");
        break;
    default:
        sb_add(s, "{\"auth_age\":{\"max\":\"%uh\"}}", 1 + rnd(12));
        break;
    }
}

static char *make_rules(void)
{
    struct sb s = {malloc(1 << 16), 0, 1 << 16};
    int r, i, k;

    sb_add(&s, "{\"version\":\"bench\",\"rules\":[");
    sb_add(&s, "{\"id\":\"embargo\",\"effect\":\"deny\",\"when\":{\"country\":{\"in\":[\"KP\","
               "\"IR\",\"SY\",\"CU\"]}}}");
    sb_add(&s, ",{\"id\":\"lost\",\"effect\":\"deny\",\"when\":{\"device_attr\":{\"name\":"
               "\"status\",\"equals\":\"lost\"}}}");
    sb_add(&s,
           ",{\"id\":\"untrusted\",\"effect\":\"deny\",\"when\":{\"device_tier\":\"untrusted\"}}");
    sb_add(
        &s,
        ",{\"id\":\"lowscore\",\"effect\":\"deny\",\"when\":{\"device_score\":{\"at_most\":10}}}");
    sb_add(&s, ",{\"id\":\"contractors-night\",\"effect\":\"deny\",\"when\":{\"all\":[{\"group\":"
               "\"g199\"},"
               "{\"time\":{\"between\":[\"22:00\",\"06:00\"],\"tz\":\"Europe/Berlin\"}}]}}");
    for (i = 0; i < 5; i++)
        sb_add(&s,
               ",{\"id\":\"mon%d\",\"effect\":\"deny\",\"mode\":\"monitor\",\"when\":{\"not\":{"
               "\"ip\":\"10.0.0.0/8\"}}}",
               i);
    for (r = 0; r < NROUTES; r++) {
        for (i = 0; i < 10; i++) {
            int deny = i >= 8;
            int n = 1 + (int)rnd(3);
            sb_add(
                &s,
                ",{\"id\":\"r%d-%d\",\"route\":\"route%d\",\"effect\":\"%s\",\"when\":{\"all\":[",
                r, i, r, deny ? "deny" : "allow");
            for (k = 0; k < n; k++) {
                if (k > 0)
                    sb_add(&s, ",");
                cond(&s, deny ? (k == 0 ? 5 + (int)rnd(2) : (int)rnd(11))
                              : (k == 0 ? (int)rnd(2) : (int)rnd(11)));
            }
            sb_add(&s, "]}}");
        }
    }
    sb_add(&s, "]}");
    return s.b;
}

static char *make_dir(void)
{
    struct sb s = {malloc(1 << 16), 0, 1 << 16};
    int g, u;

    sb_add(&s, "{\"groups\":{");
    for (g = 0; g < NGROUPS; g++) {
        if (g >= 20 && g % 3 == 0)
            sb_add(&s, "%s\"g%d\":{\"member_of\":[\"g%d\"]}", g > 0 ? "," : "", g, g % 20);
        else
            sb_add(&s, "%s\"g%d\":{}", g > 0 ? "," : "", g);
    }
    sb_add(&s, "},\"users\":{");
    for (u = 0; u < NUSERS; u++) {
        sb_add(
            &s,
            "%s\"user%d@corp.example\":{\"subject\":\"s%d\",\"groups\":[\"g%u\",\"g%u\",\"g%u\"]}",
            u > 0 ? "," : "", u, u, rnd(NGROUPS / 3) * 3, rnd(NGROUPS / 3) * 3 + 1,
            rnd(NGROUPS / 3) * 3 + 2);
    }
    sb_add(&s, "}}");
    return s.b;
}

/* Thread CPU time: the machine is shared (builds, fuzzers), and preemption
 * must not count as decision time. Wall-clock throughput is reported too. */
static double cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* POLICY_BENCH_APP: the proxy's bench request on the bench rules. */
static struct policy *app_setup(const char *file, struct policy_ctx *ctx)
{
    static struct policy_attr attrs[] = {{"platform", "linux"},
                                         {"os_version", "12"},
                                         {"model", "bench"},
                                         {"managed", "true"},
                                         {"status", "active"}};
    static char rnames[NROUTES][16];
    const char *routes[NROUTES + 1];
    struct policy_compile_opts o;
    struct policy *p;
    char err[512];
    size_t i;

    routes[0] = "app";
    for (i = 0; i < NROUTES; i++) {
        snprintf(rnames[i], sizeof(rnames[i]), "route%zu", i);
        routes[i + 1] = rnames[i];
    }
    memset(&o, 0, sizeof(o));
    o.routes = routes;
    o.nroutes = NROUTES + 1;
    p = policy_load(file, &o, err, sizeof(err));
    if (p == NULL) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    for (i = 0; i < NCTX; i++) {
        struct policy_ctx *c = &ctx[i];
        policy_ctx_init(c);
        c->route_index = 0;
        c->device_id = "bench-1";
        c->device_tier = 1;
        c->device_score = 30;
        c->device_owner = "user0@corp.example";
        c->device_attrs = attrs;
        c->ndevice_attrs = sizeof(attrs) / sizeof(attrs[0]);
        c->ip_family = AF_INET;
        c->ip[0] = 127;
        c->ip[3] = 1;
        memcpy(c->country, "unknown", 8);
        c->method = "GET";
        c->path = "/";
        c->now = 1779271200;
    }
    return p;
}

int main(void)
{
    static const char *const methods[] = {"GET", "POST", "HEAD", "PUT"};
    static struct policy_attr attrs[] = {{"platform", "linux"}, {"managed", "true"}};
    static char emails[NCTX][40], subs[NCTX][16], paths[NCTX][40];
    const char *routes[NROUTES];
    static char rnames[NROUTES][16];
    struct policy_compile_opts o;
    struct policy_ctx *ctx;
    struct policy_decision d;
    struct directory *dir;
    struct policy *p;
    char err[512], *rules, *dj;
    double t0, t1, *batch, total = 0, compile_ms, wall0, wall;
    size_t i, b, counts[3] = {0, 0, 0};
    /* POLICY_BENCH_BATCHES: fewer batches, e.g. under valgrind --tool=callgrind */
    const char *nb = getenv("POLICY_BENCH_BATCHES");
    size_t BATCHES =
        nb != NULL && strtoul(nb, NULL, 10) > 0 ? strtoul(nb, NULL, 10) : BATCHES_DEFAULT;

    for (i = 0; i < NROUTES; i++) {
        snprintf(rnames[i], sizeof(rnames[i]), "route%zu", i);
        routes[i] = rnames[i];
    }
    dj = make_dir();
    dir = directory_parse(dj, strlen(dj), "bench-dir", err, sizeof(err));
    if (dir == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    rules = make_rules();
    memset(&o, 0, sizeof(o));
    o.name = "bench-rules";
    o.routes = routes;
    o.nroutes = NROUTES;
    o.dir = dir;
    t0 = now_ns();
    p = policy_compile(rules, strlen(rules), &o, err, sizeof(err));
    compile_ms = (now_ns() - t0) / 1e6;
    if (p == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    ctx = calloc(NCTX, sizeof(*ctx));
    if (getenv("POLICY_BENCH_APP") != NULL) {
        policy_unref(p);
        p = app_setup(getenv("POLICY_BENCH_APP"), ctx);
        goto run;
    }
    for (i = 0; i < NCTX; i++) {
        struct policy_ctx *c = &ctx[i];
        uint32_t u = rnd(NUSERS);
        policy_ctx_init(c);
        c->route_index = (int)rnd(NROUTES);
        c->identity = 1;
        snprintf(subs[i], sizeof(subs[i]), "s%u", u);
        snprintf(emails[i], sizeof(emails[i]), "user%u@corp.example", u);
        c->user = subs[i];
        c->email = emails[i];
        c->dir = dir;
        directory_user_groups(dir, c->user, c->email, &c->groups, &c->ngroups);
        c->now = 1779271200 + (int64_t)rnd(7 * 86400);
        c->auth_time = c->now - (int64_t)rnd(20 * 3600);
        c->mfa = (int)rnd(2);
        c->device_tier = 1 + (int)rnd(4);
        c->device_score = 20 + (int)rnd(80);
        c->device_attrs = attrs;
        c->ndevice_attrs = 2;
        c->device_owner = c->email;
        c->ip_family = AF_INET;
        c->ip[0] = 10;
        c->ip[1] = (uint8_t)rnd(256);
        c->ip[3] = 7;
        memcpy(c->country, countries[rnd(10) < 9 ? rnd(5) : 5 + rnd(5)], 3);
        c->method = methods[rnd(4)];
        snprintf(paths[i], sizeof(paths[i]), rnd(2) ? "/p%u/x/y" : "/api/v1/r%u/items/9", rnd(8));
        c->path = paths[i];
    }
run:
    /* warm up */
    for (i = 0; i < NCTX; i++)
        policy_eval(p, &ctx[i], &d);
    batch = malloc(BATCHES * sizeof(*batch));
    wall0 = now_ns();
    for (b = 0; b < BATCHES; b++) {
        size_t base = (b * BATCH) % NCTX;
        t0 = cpu_ns();
        for (i = 0; i < BATCH; i++)
            counts[policy_eval(p, &ctx[(base + i) % NCTX], &d)]++;
        t1 = cpu_ns();
        batch[b] = (t1 - t0) / BATCH;
        total += t1 - t0;
    }
    wall = now_ns() - wall0;
    qsort(batch, BATCHES, sizeof(*batch), cmp_d);
    printf("rules: %zu over %zu routes; directory: %zu users, %zu groups; compile %.1f ms\n",
           policy_rule_count(p), policy_route_count(p), directory_user_count(dir),
           directory_group_count(dir), compile_ms);
    printf("decisions: %zu (allow %zu, deny %zu, step_up %zu)\n", BATCHES * BATCH, counts[1],
           counts[0], counts[2]);
    printf("median %.0f ns/decision (p10 %.0f, p90 %.0f, p99 %.0f)\n", batch[BATCHES / 2],
           batch[BATCHES / 10], batch[BATCHES * 9 / 10], batch[BATCHES * 99 / 100]);
    printf("throughput %.2f M decisions/s of CPU time on one core (%.2f M/s wall clock)\n",
           (double)BATCHES * BATCH / total * 1e3, (double)BATCHES * BATCH / wall * 1e3);
    free(batch);
    free(ctx);
    free(rules);
    free(dj);
    policy_unref(p);
    directory_unref(dir);
    return 0;
}
