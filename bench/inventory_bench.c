/*
 * inventory_bench.c - how long a 100,000-device feed takes to parse and
 * index, how long a lookup by device id takes, and what one score_eval()
 * costs. The target is a load in <= 1 s (docs/device-trust.md).
 *
 * Built by CMake with everything else (from the repository root):
 *   cmake --build build --target inventory_bench && build/inventory_bench [records]
 *
 * The feed is generated in memory (JSON array and NDJSON); each load is
 * timed separately and the best and median of 7 runs are reported.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inventory.h"
#include "posture.h"
#include "score.h"

#define RUNS 7

/*
 * CPU time of this process: the build machine is shared (two cores, other
 * builds and fuzzers), so wall time mostly measures the neighbours. Loads
 * also print wall time.
 */
static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct buf {
    char *p;
    size_t len, cap;
};

static void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            abort();
        if ((size_t)n < b->cap - b->len)
            break;
        b->cap = b->cap * 2 + (size_t)n;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL)
            abort();
    }
    b->len += (size_t)n;
}

static const char *const platforms[] = {"linux", "macos", "windows"};
static const char *const versions[] = {"22.04", "14.4.1", "10.0.19045"};
static const char *const statuses[] = {"active", "active", "active", "active", "lost", "retired"};

static struct buf make_feed(size_t n, int ndjson)
{
    struct buf b = {malloc(1 << 20), 0, 1 << 20};
    size_t i;

    if (b.p == NULL)
        abort();
    if (!ndjson)
        buf_printf(&b, "[\n");
    for (i = 0; i < n; i++) {
        buf_printf(&b,
                   "%s{\"id\":\"dev-%08zu\",\"serial\":\"C02X%07zu\",\"owner\":\"user%zu@corp."
                   "example\",\"managed\":%s,\"status\":\"%s\",\"platform\":\"%s\","
                   "\"os_version\":\"%s\",\"model\":\"ThinkPad X1 Carbon Gen %zu\","
                   "\"enrolled\":\"2023-%02zu-%02zuT09:30:00Z\",\"department\":\"dept-%zu\","
                   "\"cost_center\":%zu,\"shared\":%s}%s\n",
                   ndjson || i == 0 ? "" : ",", i, i * 7, i % 5000, i % 10 ? "true" : "false",
                   statuses[i % 6], platforms[i % 3], versions[i % 3], i % 11, i % 12 + 1,
                   i % 28 + 1, i % 40, 1000 + i % 300, i % 17 ? "false" : "true", "");
    }
    if (!ndjson)
        buf_printf(&b, "]\n");
    return b;
}

static void bench_load(const char *what, const struct buf *feed, size_t n, struct inventory **keep)
{
    double t[RUNS], w[RUNS], t0, w0;
    char err[256];
    int r;

    for (r = 0; r < RUNS; r++) {
        struct inventory *inv = NULL;
        t0 = now_ms();
        w0 = wall_ms();
        if (inventory_parse(feed->p, feed->len, NULL, 0, 0, &inv, err, sizeof(err)) == -1) {
            fprintf(stderr, "%s\n", err);
            exit(1);
        }
        t[r] = now_ms() - t0;
        w[r] = wall_ms() - w0;
        if (inventory_count(inv) != n)
            abort();
        if (r == RUNS - 1 && keep != NULL)
            *keep = inv;
        else
            inventory_unref(inv);
    }
    qsort(t, RUNS, sizeof(t[0]), cmp_double);
    qsort(w, RUNS, sizeof(w[0]), cmp_double);
    printf("%-7s %zu records, %.1f MB: parse+index CPU best %.1f ms, median %.1f ms; wall best "
           "%.1f ms, median %.1f ms\n",
           what, n, (double)feed->len / 1e6, t[0], t[RUNS / 2], w[0], w[RUNS / 2]);
}

static void bench_lookup(const struct inventory *inv, size_t n)
{
    enum { BATCH = 1000, BATCHES = 2001 };
    static double per[BATCHES];
    char(*ids)[32] = malloc(BATCH * sizeof(*ids));
    size_t lens[BATCH], b, i, found = 0;
    uint64_t x = 88172645463325252ULL;
    double t0;

    if (ids == NULL)
        abort();
    for (b = 0; b < BATCHES; b++) {
        for (i = 0; i < BATCH; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            /* 1 in 10 misses */
            lens[i] = (size_t)snprintf(ids[i], sizeof(ids[i]), "dev-%08llu",
                                       (unsigned long long)(x % (n + n / 10)));
        }
        t0 = now_ms();
        for (i = 0; i < BATCH; i++)
            found += inventory_lookup(inv, ids[i], lens[i]) != NULL;
        per[b] = (now_ms() - t0) * 1e6 / BATCH;
    }
    qsort(per, BATCHES, sizeof(per[0]), cmp_double);
    printf("lookup: median %.0f ns (batches of %d random ids, ~10%% misses; %zu found)\n",
           per[BATCHES / 2], BATCH, found);
    free(ids);
}

static void bench_score(const struct inventory *inv)
{
    enum { N = 200000 };
    static const char report[] =
        "{\"collected_at\":\"1970-01-02T00:00:00Z\",\"agent_version\":\"1.4.0\",\"os\":{\"name\":"
        "\"debian\",\"version\":\"12.5\",\"kernel\":\"6.1.0-18-amd64\"},\"disk_encryption\":true,"
        "\"firewall\":true,\"screen_lock\":false,\"auto_updates\":\"unknown\","
        "\"days_since_patch\":40}";
    struct score_config *cfg = NULL;
    struct score_grace grace;
    struct score_result res;
    struct score_input in;
    struct posture p;
    char err[256];
    double t0, ns;
    long sum = 0;
    int i;

    if (score_config_parse(NULL, 0, "default", &cfg, err, sizeof(err)) == -1 ||
        posture_parse(report, sizeof(report) - 1, 86400, &p, err, sizeof(err)) == -1) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    score_grace_init(&grace);
    memset(&in, 0, sizeof(in));
    in.record = inventory_lookup(inv, "dev-00000001", 12);
    in.posture = &p;
    in.now = 86400 + 3600;
    in.user_email = "user1@corp.example";
    in.grace = &grace;
    t0 = now_ms();
    for (i = 0; i < N; i++) {
        in.now += i & 1;
        score_eval(cfg, &in, &res);
        sum += res.score;
    }
    ns = (now_ms() - t0) * 1e6 / N;
    printf("score_eval: %.0f ns per call (default policy, %d calls, score %d, tier %s, %zu failing)"
           "\n",
           ns, N, (int)(sum / N), res.tier_name, res.nfailed);
    score_config_unref(cfg);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    struct inventory *inv = NULL;
    struct buf arr = make_feed(n, 0), nd = make_feed(n, 1);

    bench_load("array", &arr, n, NULL);
    bench_load("ndjson", &nd, n, &inv);
    bench_lookup(inv, n);
    bench_score(inv);
    inventory_unref(inv);
    free(arr.p);
    free(nd.p);
    return 0;
}
