/*
 * main.c - ztproxy: command line, start-up, signals, reload.
 *
 *   ztproxy -c FILE           run in the foreground
 *   ztproxy -c FILE --check   validate the whole configuration and exit
 *
 * SIGHUP re-reads FILE; a configuration that does not validate (or whose
 * certificates or keys do not load) is refused and the running one kept.
 * The expensive part of a reload runs on the reload thread at a lower
 * priority than the workers (see "Reloads" below).
 * SIGTERM/SIGINT stop accepting, let in-flight requests finish within
 * timeouts.shutdown_grace, and exit 0.
 */
#include <getopt.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "accesslog.h"
#include "admin.h"
#include "authz.h"
#include "decisions.h"
#include "devtrust.h"
#include "conf.h"
#include "log.h"
#include "thread.h"
#include "metrics.h"
#include "proxy.h"
#include "session.h"
#include "shared.h"
#include "sso.h"
#include "tls.h"

static const char *conf_file;
static struct proxy_gen *current;
static struct event_base *main_base;
static int stopping;

static void usage(void)
{
    fprintf(stderr, "usage: ztproxy -c FILE [--check]\n");
    exit(2);
}

/* Load and build a generation; NULL (and err) if anything fails. */
static struct proxy_gen *load_generation(int check, char *err, size_t errlen)
{
    struct conf *c = NULL;
    struct proxy_gen *g;

    if (conf_load(conf_file, &c, err, errlen) == -1)
        return NULL;
    /* Providers are fetched on the main loop; --check touches no network. */
    if (!check && sso_registry_sync(main_base, c) == -1) {
        snprintf(err, errlen, "%s: cannot start identity providers", conf_file);
        conf_unref(c);
        return NULL;
    }
    g = proxy_gen_new(c, err, errlen);
    conf_unref(c);
    if (g != NULL && (devtrust_validate(proxy_gen_conf(g), err, errlen) == -1 ||
                      authz_validate(proxy_gen_conf(g), err, errlen) == -1)) {
        proxy_gen_unref(g);
        return NULL;
    }
    return g;
}

/*
 * Reloads. The main thread reads and validates the configuration file and
 * registers its identity providers (cheap, and the registry is the main
 * thread's); the reload thread then builds everything expensive: the TLS
 * contexts (certificates, keys, CRL), the session keys and assertion
 * signer, and the rules, directory and GeoIP database (authz_prepare(),
 * which takes over what did not change). It runs at nice +10 so that the
 * workers always win the CPU while it works; the workers never wait for it.
 * When it is done the main thread swaps the prepared state in (pointer
 * swaps) or, if anything failed, keeps the running one. SIGHUPs that come
 * while a reload is in progress are coalesced into one more reload after
 * it, which reads the files as they are then.
 */
struct reload_job {
    struct loader_job lj; /* first */
    struct conf *c;
    struct proxy_gen *g;
    struct authz_prepared *az;
    int failed;
    char err[1024];
    double main_ms, thread_ms; /* CPU time spent on it, per thread */
};

static struct loader *rl_loader; /* the reload thread, below the workers */
static pthread_mutex_t rl_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct reload_job *rl_done; /* rl_mtx */
static struct event *rl_done_ev;
static struct reload_job *rl_busy; /* main thread: the job with the thread */
static int rl_again;               /* main thread: a SIGHUP came meanwhile */

static double thread_cpu_ms(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == -1)
        return 0;
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void reload_job_free(struct reload_job *j)
{
    if (j == NULL)
        return;
    authz_prepared_free(j->az);
    proxy_gen_unref(j->g);
    conf_unref(j->c);
    free(j);
}

/* The reload thread: build the generation and load the policy inputs. */
static void reload_build(struct reload_job *j)
{
    double t0 = thread_cpu_ms();

    j->g = proxy_gen_new(j->c, j->err, sizeof(j->err));
    if (j->g == NULL || devtrust_validate(j->c, j->err, sizeof(j->err)) == -1 ||
        authz_prepare(j->c, &j->az, j->err, sizeof(j->err)) == -1)
        j->failed = 1;
    j->thread_ms = thread_cpu_ms() - t0;
}

static void reload_run(struct loader_job *lj)
{
    struct reload_job *j = (struct reload_job *)lj;

    reload_build(j);
    pthread_mutex_lock(&rl_mtx);
    rl_done = j;
    pthread_mutex_unlock(&rl_mtx);
    event_active(rl_done_ev, EV_READ, 0);
}

static void reload_drop(struct loader_job *lj)
{
    reload_job_free((struct reload_job *)lj);
}

static void reload_refused(const char *why)
{
    log_warnx("reload refused, keeping the running configuration: %s", why);
}

/* Main thread: read the configuration, hand the rest to the thread. */
static void reload_begin(void)
{
    char err[1024];
    struct reload_job *j;
    struct conf *c = NULL;
    double t0 = thread_cpu_ms();

    log_info("SIGHUP: reloading %s", conf_file);
    metrics_count(METRICS_RELOAD_BEGIN); /* a refusal is a begin without an OK */
    if (conf_load(conf_file, &c, err, sizeof(err)) == -1) {
        reload_refused(err);
        return;
    }
    if (sso_registry_sync(main_base, c) == -1) {
        reload_refused("cannot start identity providers");
        conf_unref(c);
        return;
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL) {
        reload_refused("out of memory");
        conf_unref(c);
        return;
    }
    j->c = c;
    j->main_ms = thread_cpu_ms() - t0;
    rl_busy = j;
    loader_post(rl_loader, &j->lj);
}

/* Main thread: swap a built reload in (or refuse it). */
static void reload_finish(struct reload_job *j)
{
    char err[1024];
    struct conf *c = j->c;
    double t0 = thread_cpu_ms();

    if (j->failed) {
        reload_refused(j->err);
        return;
    }
    if (devtrust_reconfigure(c, err, sizeof(err)) == -1) {
        reload_refused(err);
        return;
    }
    /* authz_commit() takes the prepared state whatever happens. */
    if (authz_commit(j->az, err, sizeof(err)) == -1) {
        j->az = NULL;
        reload_refused(err);
        return;
    }
    j->az = NULL;
    if (admin_reconfigure(c, err, sizeof(err)) == -1)
        log_warnx("admin API: keeping the running listener: %s", err);
    shared_reconfigure(c);
    log_set_level(c->log_level);
    if (accesslog_reopen(c->access_log) == -1)
        log_warn("access log %s: cannot reopen, keeping the old one", c->access_log);
    proxy_reload(j->g);
    proxy_gen_unref(current);
    current = j->g;
    j->g = NULL;
    metrics_count(METRICS_RELOAD_OK);
    j->main_ms += thread_cpu_ms() - t0;
    log_info("reload done: new connections use the new configuration (CPU: main thread %.1f ms, "
             "reload thread %.1f ms)",
             j->main_ms, j->thread_ms);
}

static void reload_done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct reload_job *j;

    (void)fd;
    (void)what;
    (void)arg;
    pthread_mutex_lock(&rl_mtx);
    j = rl_done;
    rl_done = NULL;
    pthread_mutex_unlock(&rl_mtx);
    if (j == NULL)
        return;
    rl_busy = NULL;
    if (stopping)
        log_info("reload abandoned: shutting down");
    else
        reload_finish(j);
    reload_job_free(j);
    if (rl_again && !stopping) {
        rl_again = 0;
        reload_begin();
    }
}

static int reload_start(char *err, size_t errlen)
{
    rl_done_ev = event_new(main_base, -1, 0, reload_done_cb, NULL);
    if (rl_done_ev == NULL) {
        snprintf(err, errlen, "reload: cannot create its event");
        return -1;
    }
    rl_loader = loader_start("reload", reload_run, reload_drop);
    if (rl_loader == NULL) {
        snprintf(err, errlen, "reload: cannot start its thread");
        return -1;
    }
    return 0;
}

/* After the main loop: a reload still being built is dropped. */
static void reload_stop(void)
{
    loader_stop(rl_loader); /* a job not started is dropped */
    rl_loader = NULL;
    reload_job_free(rl_done);
    rl_done = NULL;
    rl_busy = NULL;
    if (rl_done_ev != NULL)
        event_free(rl_done_ev);
    rl_done_ev = NULL;
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    if (stopping) {
        log_info("SIGHUP ignored: shutting down");
        return;
    }
    if (rl_busy != NULL) {
        if (!rl_again)
            log_info("SIGHUP: a reload is in progress; one more follows it");
        rl_again = 1;
        return;
    }
    reload_begin();
}

/*
 * Revocations must not wait for an operator's SIGHUP: the CRL file is
 * watched (a stat a second) and a change reloads like SIGHUP does.
 */
static struct stat crl_seen;

static void crl_watch_cb(evutil_socket_t fd, short what, void *arg)
{
    const struct conf *c = proxy_gen_conf(current);
    struct stat st;

    if (c->tls_crl == NULL || stat(c->tls_crl, &st) == -1)
        return;
    if (st.st_mtim.tv_sec == crl_seen.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == crl_seen.st_mtim.tv_nsec && st.st_size == crl_seen.st_size &&
        st.st_ino == crl_seen.st_ino)
        return;
    if (crl_seen.st_ino != 0) {
        log_info("%s changed: reloading", c->tls_crl);
        on_sighup(SIGHUP, 0, NULL);
    }
    crl_seen = st;
}

/*
 * Once a minute, give the allocator's free pages back to the system: glibc
 * returns only the top of a heap by itself. After the first minute of a
 * mixed load, malloc_trim(0) released 1.7 MB of a 31 MB process. It walks
 * the free chunks of the arena (well under a millisecond for tens of MiB),
 * here on the main thread, never on a worker's loop.
 */
static void trim_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

/* Every THREAD_WATCH_MS: a loader thread starved at idle priority is raised (thread.h). */
static void bg_watch_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    thread_watchdog(thread_now_ms());
}

/* While the workers drain, the main loop keeps running: the admin
 * listener answers /readyz with 503 (so load balancers and readiness probes
 * stop sending), and the feeds stay fresh for the requests still in flight.
 * The loop ends when the last worker has finished. */
static void drain_check_cb(evutil_socket_t fd, short what, void *arg)
{
    if (proxy_workers_running() == 0)
        event_base_loopbreak(main_base);
}

static struct event *ev_drain, *ev_delay;

/* Close the listeners and drain (after timeouts.shutdown_delay). */
static void drain_start_cb(evutil_socket_t fd, short what, void *arg)
{
    struct timeval tick = {0, 50000};

    log_info("shutting down: closing the listeners, in-flight requests may finish");
    proxy_shutdown();
    if (ev_drain == NULL)
        ev_drain = event_new(main_base, -1, EV_PERSIST, drain_check_cb, NULL);
    if (ev_drain == NULL || event_add(ev_drain, &tick) == -1)
        event_base_loopbreak(main_base);
}

/*
 * SIGTERM/SIGINT. With timeouts.shutdown_delay, /readyz says 503 at once
 * while everything goes on being served for that long, so that the load
 * balancer's health checks take this replica out before its listeners
 * close (a connection the balancer opens in the moment a listener closes
 * would be reset); then the drain. A second signal skips the delay.
 */
static void on_sigterm(evutil_socket_t sig, short what, void *arg)
{
    uint64_t ms = proxy_gen_conf(current)->timeout_shutdown_delay_ms;
    struct timeval delay = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    const char *name = sig == SIGTERM ? "SIGTERM" : "SIGINT";

    if (stopping == 1 && ev_delay != NULL && event_pending(ev_delay, EV_TIMEOUT, NULL)) {
        log_info("%s again: not waiting for the shutdown delay", name);
        event_del(ev_delay);
        drain_start_cb(-1, 0, NULL);
        return;
    }
    if (stopping)
        return;
    stopping = 1;
    proxy_mark_draining();
    if (ms == 0) {
        log_info("%s: shutting down (in-flight requests may finish)", name);
        drain_start_cb(-1, 0, NULL);
        return;
    }
    log_info("%s: shutting down in %llu ms: /readyz answers 503, requests are still served", name,
             (unsigned long long)ms);
    ev_delay = evtimer_new(main_base, drain_start_cb, NULL);
    if (ev_delay == NULL || evtimer_add(ev_delay, &delay) == -1)
        drain_start_cb(-1, 0, NULL);
}

/*
 * Every client connection holds a descriptor, and one more for its upstream
 * while it forwards. The usual soft RLIMIT_NOFILE (1024) would cut the
 * default limits.connections (10,000 per worker) short with EMFILE, so take
 * the hard limit, and say when even that is below what the configuration
 * allows (the workers then pause accepting while out of descriptors).
 */
static void raise_nofile(const struct conf *c)
{
    struct rlimit rl;
    uint64_t need = (uint64_t)c->workers * c->limit_connections * 2 + 256;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
        log_warn("getrlimit(RLIMIT_NOFILE)");
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
            log_warn("setrlimit(RLIMIT_NOFILE, %llu)", (unsigned long long)rl.rlim_max);
            rl.rlim_cur = old;
        }
    }
    if (rl.rlim_cur != RLIM_INFINITY && (uint64_t)rl.rlim_cur < need)
        log_warnx("descriptors: the limit is %llu, but %d workers x limits.connections %zu need "
                  "about %llu (a client and an upstream connection each): raise it (ulimit -n, "
                  "systemd LimitNOFILE=) or lower limits.connections",
                  (unsigned long long)rl.rlim_cur, c->workers, c->limit_connections,
                  (unsigned long long)need);
    else
        log_info("descriptors: limit %llu", (unsigned long long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"check", no_argument, NULL, 'k'},
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct event *ev_hup, *ev_term, *ev_int, *ev_crl, *ev_trim, *ev_bgwatch;
    const struct timeval one_min = {60, 0};
    struct timeval one_s = {1, 0};
    struct timeval watch_tick = {0, THREAD_WATCH_MS * 1000};
    char err[1024];
    int ch, check = 0;
    sigset_t set;

#ifdef __GLIBC__
    /* One malloc arena for the process, before any thread exists (unless
     * MALLOC_ARENA_MAX says otherwise). With one arena per thread, TLS
     * sessions made on one worker and freed on another (the session cache is
     * shared) left RSS climbing in small steps for good under mixed load:
     * 2 workers, 300 new or resumed handshakes/s, 120 KiB a minute with the
     * heap itself flat (valgrind massif); with one arena RSS stayed flat and
     * keep-alive throughput was the same within noise (bench/RESULTS.md,
     * session 6). Small allocations are served from per-thread caches
     * without the arena lock either way; on many cores, MALLOC_ARENA_MAX=N
     * trades memory for less locking. */
    if (getenv("MALLOC_ARENA_MAX") == NULL)
        mallopt(M_ARENA_MAX, 1);
#endif
    log_init("ztproxy");
    while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            conf_file = optarg;
            break;
        case 'k':
            check = 1;
            break;
        default:
            usage();
        }
    }
    if (conf_file == NULL || optind != argc)
        usage();
    if (tls_init() == -1)
        fatalx("cannot initialise OpenSSL");
    {
        const char *v = getenv("ZT_OPENSSL_EC_DECODE");
        if (v == NULL || strcmp(v, "providers") != 0) {
            int r = tls_ec_decode_shortcut();
            if (r == -1)
                log_warnx("tls: cannot register the direct EC key decoder; certificates are "
                          "decoded the slower way");
            else if (r == 1)
                log_debug("tls: OpenSSL 3.0: EC public keys of certificates decoded directly");
        }
    }
    /* Block these before any thread exists: every thread (workers, loaders,
     * writers, curl's resolvers) inherits the mask, and only this thread
     * takes them, once its handlers are installed. A SIGHUP that came
     * while a helper thread had it unblocked and no handler existed yet
     * would have killed the process. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    /* Before any event_base: workers, the main loop and other threads
     * (the revocation writer) hand events to each other. */
    if (evthread_use_pthreads() == -1)
        fatalx("libevent: no thread support");
    main_base = event_base_new();
    if (main_base == NULL)
        fatalx("event_base_new");
    sso_set_check_mode(check);
    current = load_generation(check, err, sizeof(err));
    if (current == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (check) {
        printf("ok\n");
        proxy_gen_unref(current);
        event_base_free(main_base);
        return 0;
    }
    if (proxy_gen_conf(current)->nproviders > 0 &&
        proxy_revocations_open(proxy_gen_conf(current), err, sizeof(err)) == -1)
        fatalx("%s", err);
    if (devtrust_start(main_base, proxy_gen_conf(current), err, sizeof(err)) == -1)
        fatalx("%s", err);
    if (authz_start(main_base, proxy_gen_conf(current), err, sizeof(err)) == -1)
        fatalx("%s", err);
    /* The admin API's recent decisions: one ring per worker (size: restart). */
    if (decisions_start(proxy_gen_conf(current)->admin_listener != NULL
                            ? proxy_gen_conf(current)->admin_decisions_ring
                            : 0,
                        (size_t)proxy_gen_conf(current)->workers) == -1)
        fatalx("admin: cannot allocate the decisions ring");
    if (admin_start(main_base, proxy_gen_conf(current), err, sizeof(err)) == -1)
        fatalx("%s", err);
    /* After the stores it feeds (revocations, device trust, rules). */
    if (shared_start(main_base, proxy_gen_conf(current), err, sizeof(err)) == -1)
        fatalx("%s", err);

    log_set_level(proxy_gen_conf(current)->log_level);
    raise_nofile(proxy_gen_conf(current));
    if (accesslog_start(proxy_gen_conf(current)->access_log) == -1)
        fatal("access log %s", proxy_gen_conf(current)->access_log);
    if (proxy_start(current) == -1)
        fatalx("cannot start");
    if (reload_start(err, sizeof(err)) == -1)
        fatalx("%s", err);
    ev_hup = evsignal_new(main_base, SIGHUP, on_sighup, NULL);
    ev_term = evsignal_new(main_base, SIGTERM, on_sigterm, NULL);
    ev_int = evsignal_new(main_base, SIGINT, on_sigterm, NULL);
    evsignal_add(ev_hup, NULL);
    evsignal_add(ev_term, NULL);
    evsignal_add(ev_int, NULL);
    ev_crl = event_new(main_base, -1, EV_PERSIST, crl_watch_cb, NULL);
    crl_watch_cb(-1, 0, NULL);
    event_add(ev_crl, &one_s);
    ev_trim = event_new(main_base, -1, EV_PERSIST, trim_cb, NULL);
    event_add(ev_trim, &one_min);
    ev_bgwatch = event_new(main_base, -1, EV_PERSIST, bg_watch_cb, NULL);
    event_add(ev_bgwatch, &watch_tick);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    log_info("ztproxy ready");
    event_base_dispatch(main_base);

    reload_stop();
    proxy_replies_stop();
    proxy_join();
    admin_stop();
    decisions_stop();
    authz_stop();
    devtrust_stop();
    proxy_revocations_close();
    shared_stop(); /* last: the threads above may still have queued writes */
    sso_registry_free();
    log_info("stopped");
    event_free(ev_hup);
    event_free(ev_term);
    event_free(ev_int);
    event_free(ev_crl);
    event_free(ev_trim);
    event_free(ev_bgwatch);
    if (ev_drain != NULL)
        event_free(ev_drain);
    if (ev_delay != NULL)
        event_free(ev_delay);
    event_base_free(main_base);
    proxy_gen_unref(current);
    accesslog_stop();
    return 0;
}
