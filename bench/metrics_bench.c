/*
 * metrics_bench.c - what the /metrics hooks add to a request, on one core.
 *
 * Built by CMake with everything else (from the repository root):
 *   cmake --build build --target metrics_bench && build/metrics_bench
 *
 * Times, in thread CPU time, batches of simulated requests doing exactly
 * the hook calls the proxy makes:
 *   keep-alive request: metrics_request() + metrics_decision()
 *   new connection:     the above + accepted, handshake, closed
 * over 8 routes and 64 rule ids (route names and rule ids at stable
 * addresses, as in a live config and rules snapshot), on a worker block
 * (metrics_thread_init()) and, for comparison, on the shared block
 * (relaxed atomic additions), then with two threads counting at once on
 * their own blocks (no shared cache line: the per-thread cost must not
 * change). Reports the median batch time per request.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"

#define BATCH 1024
#define BATCHES 2000
#define NROUTES 8
#define NRULES 64

static char routes[NROUTES][16];
static char rules[NRULES][24];

static uint64_t cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A request: keep-alive (hooks per request) or on a new connection. */
static inline void one(unsigned i, int newconn, const struct timespec *t0,
                       const struct timespec *t1)
{
    const char *route = routes[i % NROUTES];

    if (newconn) {
        metrics_count(METRICS_CONN_ACCEPTED);
        metrics_tls_handshake(1, (int)(i & 1), "");
    }
    metrics_decision(route, (int)(i % 3 == 0), rules[(i * 7) % NRULES], 2000 + (i % 5000));
    metrics_request(route, i % 10 == 0 ? 403 : 200, t0, t1);
    if (newconn)
        metrics_count(METRICS_CONN_CLOSED);
}

/* Median ns per request over BATCHES batches. mode: 0 empty loop,
 * 1 keep-alive hooks, 2 new-connection hooks. */
static double run(int mode)
{
    static uint64_t t[BATCHES];
    struct timespec t0 = {100, 0}, t1 = {100, 0};
    volatile unsigned sink = 0;
    unsigned i, b;

    for (b = 0; b < BATCHES; b++) {
        uint64_t s = cpu_ns();
        for (i = 0; i < BATCH; i++) {
            unsigned k = b * BATCH + i;
            t1.tv_nsec = (long)(k % 3000000);
            if (mode == 0)
                sink += k; /* the loop and the clock arithmetic alone */
            else
                one(k, mode == 2, &t0, &t1);
        }
        t[b] = cpu_ns() - s;
    }
    (void)sink;
    qsort(t, BATCHES, sizeof(t[0]), cmp_u64);
    return (double)t[BATCHES / 2] / BATCH;
}

struct targ {
    int worker;
    double keepalive, newconn;
};

static void *thread_main(void *p)
{
    struct targ *a = p;

    metrics_thread_init(a->worker);
    a->keepalive = run(1);
    a->newconn = run(2);
    return NULL;
}

int main(int argc, char **argv)
{
    struct targ th[2] = {{0, 0, 0}, {1, 0, 0}};
    pthread_t thr[2];
    double base, ka_shared, nc_shared;
    int i;

    for (i = 0; i < NROUTES; i++)
        snprintf(routes[i], sizeof(routes[i]), "route-%d", i);
    for (i = 0; i < NRULES; i++)
        snprintf(rules[i], sizeof(rules[i]), "rule-%02d", i);
    if (metrics_init(2) == -1)
        return 1;
    if (argc > 1 && strcmp(argv[1], "--worker-only") == 0) {
        /* For valgrind --tool=callgrind: the worker path alone. */
        thread_main(&th[0]);
        printf("worker block: keep-alive %.1f, new connection %.1f ns/request\n", th[0].keepalive,
               th[0].newconn);
        return 0;
    }
    /* This thread is no worker: the shared block (atomic additions). */
    run(1); /* warm-up: interning, caches */
    base = run(0);
    ka_shared = run(1);
    nc_shared = run(2);

    /* One worker alone, then two at once. */
    pthread_create(&thr[0], NULL, thread_main, &th[0]);
    pthread_join(thr[0], NULL);
    printf("baseline loop                       %6.1f ns/request\n", base);
    printf("worker block, keep-alive request    %6.1f ns/request (hooks: %.1f ns)\n",
           th[0].keepalive, th[0].keepalive - base);
    printf("worker block, new connection        %6.1f ns/request (hooks: %.1f ns)\n", th[0].newconn,
           th[0].newconn - base);
    printf("shared block, keep-alive request    %6.1f ns/request (hooks: %.1f ns)\n", ka_shared,
           ka_shared - base);
    printf("shared block, new connection        %6.1f ns/request (hooks: %.1f ns)\n", nc_shared,
           nc_shared - base);
    for (i = 0; i < 2; i++)
        pthread_create(&thr[i], NULL, thread_main, &th[i]);
    for (i = 0; i < 2; i++)
        pthread_join(thr[i], NULL);
    printf("two workers at once, keep-alive     %6.1f / %6.1f ns/request\n", th[0].keepalive,
           th[1].keepalive);
    printf("two workers at once, new connection %6.1f / %6.1f ns/request\n", th[0].newconn,
           th[1].newconn);
    return 0;
}
