/*
 * session_bench.c - median time to open and check a session cookie (the
 * per-request hot path: session_cookie_open() + session_revocations_check()).
 *
 * Built by CMake with everything else (from the repository root):
 *   cmake --build build --target session_bench && build/session_bench [batches]
 *
 * Times batches of 1000 opens with CLOCK_MONOTONIC and prints the median,
 * 10th and 90th percentile per-open time over the batches.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "session.h"

#define BATCH 1000

static const char ring_json[] =
    "[{\"id\":\"old\",\"key\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\",\"created\":1},"
    "{\"id\":\"new\",\"key\":\"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\",\"created\":2}]";

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    static const char *amr[] = {"pwd", "otp"};
    uint8_t thumb[SESSION_THUMBPRINT_LEN];
    struct session_login login = {
        .provider = "corp-oidc",
        .subject = "00u1abcdefGHIJKLmn0x7",
        .email = "alice.example@corp.example.com",
        .acr = "urn:corp:mfa",
        .amr = amr,
        .namr = 2,
        .auth_time = 1700000000,
        .thumbprint = thumb,
    };
    struct session_keyring *ring = NULL;
    struct session_revocations *rs = NULL;
    struct session s, out;
    char cookie[SESSION_COOKIE_MAX], err[256], dir[] = "/tmp/ztsessbenchXXXXXX";
    size_t len;
    int batches = argc > 1 ? (int)strtol(argv[1], NULL, 10) : 300, b, i, reseal, bad = 0;
    double *per;
    uint8_t id[SESSION_ID_LEN] = {1};

    memset(thumb, 0xab, sizeof(thumb));
    if (session_keyring_parse(ring_json, sizeof(ring_json) - 1, "bench", &ring, err, sizeof(err)) ==
            -1 ||
        session_init(&s, &login, 1700000000, 12 * 3600, 3600) == -1 ||
        session_cookie_seal(ring, "ztsession", &s, cookie, sizeof(cookie), &len) == -1 ||
        mkdtemp(dir) == NULL ||
        session_revocations_open(dir, 12 * 3600, 1700000000, &rs, err, sizeof(err)) == -1) {
        fprintf(stderr, "setup failed: %s\n", err);
        return 1;
    }
    /* A non-empty store, so the check takes its lock and looks up both keys. */
    session_revoke_id(rs, id, 1700000000);
    session_revoke_user(rs, "someone-else", 1700000000);
    per = calloc((size_t)batches, sizeof(*per));
    for (b = -10; b < batches; b++) { /* 10 warm-up batches */
        double t0 = now_ns();
        for (i = 0; i < BATCH; i++) {
            if (session_cookie_open(ring, "ztsession", cookie, len, 1700000100, thumb, &out,
                                    &reseal) != SESSION_OK ||
                session_revocations_check(rs, &out) != SESSION_OK)
                bad++;
        }
        if (b >= 0)
            per[b] = (now_ns() - t0) / BATCH;
    }
    qsort(per, (size_t)batches, sizeof(*per), cmp_double);
    printf("cookie %zu bytes; open+check per call over %d x %d: median %.0f ns, p10 %.0f ns, "
           "p90 %.0f ns%s\n",
           len, batches, BATCH, per[batches / 2], per[batches / 10], per[batches * 9 / 10],
           bad ? " (FAILURES)" : "");
    free(per);
    session_revocations_free(rs);
    session_keyring_unref(ring);
    {
        char p[64];
        snprintf(p, sizeof(p), "%s/revocations.log", dir);
        unlink(p);
        rmdir(dir);
    }
    return bad != 0;
}
