/*
 * metrics.h - Prometheus metrics for the admin listener's /metrics
 * (docs/admin-api.md, "Metrics").
 *
 * The hot path must cost a few nanoseconds, so nothing is shared between
 * workers: each worker thread owns a cache-line-aligned block of counters
 * and increments it with relaxed atomic loads and stores (plain moves on
 * x86-64 and arm64: no locked instruction, no lock, no allocation).
 * metrics_render() sums the blocks while the workers run. Threads that are
 * not workers (the main loop: reloads; helper threads) share one extra
 * block and use relaxed atomic additions.
 *
 * Labels are bounded and known:
 *   - route: a route name from the config, interned on first use into a
 *     table of METRICS_ROUTES_MAX names (beyond: "(other)"); requests that
 *     matched no route have route "(none)";
 *   - rule: a rule id, interned into METRICS_RULES_MAX ids (beyond:
 *     "(other)"); rules are reloaded at run time, the table only grows and
 *     never shrinks, so a counter never goes backwards;
 *   - decision series (route, effect, rule): METRICS_DECISIONS_MAX, beyond
 *     that the decision counts as route "(other)", rule "(other)" with its
 *     effect;
 *   - everything else is a fixed enumeration.
 * Interning copies the name into static storage under a mutex the first
 * time a name is seen (at most METRICS_ROUTES_MAX + METRICS_RULES_MAX times
 * in the life of the process); every later lookup is lock-free.
 *
 * On a worker thread the name's ADDRESS finds its slot (a per-thread cache,
 * no string work per request). So on workers, route names and rule ids must
 * come from the live configuration / rules snapshot, unchanged while it
 * lives: the rule cache follows authz_generation() by itself, and the
 * worker calls metrics_thread_names_changed() when it adopts a new
 * configuration (an old one's memory may be reused for new names). Other
 * threads look names up by content.
 *
 * Every function may be called before metrics_init() (it then counts into
 * the shared block), from any thread.
 */
#ifndef ZT_METRICS_H
#define ZT_METRICS_H

#include <stdint.h>
#include <time.h>

struct evbuffer;

#define METRICS_ROUTES_MAX 256
#define METRICS_RULES_MAX 4096
#define METRICS_DECISIONS_MAX 8192
#define METRICS_NAME_MAX 64 /* longer route names / rule ids count as "(other)" */

/*
 * Once, on the main thread, before the workers start: one counter block
 * per worker (0..nworkers-1). A second call does nothing. 0, or -1 when out
 * of memory (every thread then counts into the shared block).
 */
int metrics_init(int nworkers);

/* On worker thread `worker` (its id, 0..nworkers-1), before it counts
 * anything: this thread owns that block from now on. An id out of range
 * leaves the thread on the shared block. */
void metrics_thread_init(int worker);

/* On a worker thread, when it starts using a new configuration: forget the
 * addresses of the names it has seen (see above). */
void metrics_thread_names_changed(void);

/* Plain events. */
enum metrics_event {
    METRICS_CONN_ACCEPTED = 0,   /* a client connection was accepted */
    METRICS_CONN_CLOSED,         /* ... and freed (active = accepted - closed) */
    METRICS_TLS_OK,              /* a handshake established a verified device (see */
    METRICS_TLS_RESUMED,         /* ... of which resumed    metrics_tls_handshake()) */
    METRICS_RELOAD_BEGIN,        /* a configuration reload started (SIGHUP, CRL change) */
    METRICS_RELOAD_OK,           /* ... and was applied (failures = begun - applied) */
    METRICS_LOGIN_OK,            /* an SSO login issued a session */
    METRICS_LOGIN_FAILED,        /* a login callback was refused */
    METRICS_COOKIE_WRONG_DEVICE, /* a session cookie presented by another device */
    METRICS_BEARER_REFUSED,      /* a bearer token was refused */
    METRICS_AUDIT_DROPPED,       /* audit records lost (queue full, write failed) */
    METRICS_ACCESS_DROPPED,      /* access log records lost (queue full, write failed) */
    METRICS_LOADER_RAISED,       /* a starved loader thread was raised from idle priority */
    METRICS_EVENT_COUNT
};
void metrics_count(enum metrics_event e);
/* n events at once. */
void metrics_add(enum metrics_event e, uint64_t n);

/*
 * A TLS handshake ended. verified: it established a verified device
 * (resumed: by session resumption); else reason is the proxy's reason text
 * (tls_handshake_error(), tls_peer.reason, or "handshake timeout"), which is
 * classified and never stored. A handshake that completes without a
 * verified device (the enroll page mode) counts as a failure.
 */
void metrics_tls_handshake(int verified, int resumed, const char *reason);
/* The label a reason is counted under: "no_certificate", "unknown_ca",
 * "verify_failed", "revoked", "expired", "not_yet_valid",
 * "no_client_auth_eku", "crl_unavailable", "device_id", "protocol",
 * "timeout" or "closed". Pure; for tests and logs. */
const char *metrics_tls_reason_label(const char *reason);

/*
 * A request finished: its response was handed to the client (or the
 * connection ended). route: the route's name, NULL when no route matched;
 * status: the status sent, 0 when none; start/end: CLOCK_MONOTONIC from the
 * first byte of the request head to the end (start zero: no duration).
 */
void metrics_request(const char *route, int status, const struct timespec *start,
                     const struct timespec *end);

/* A rules decision: route name, effect (enum policy_effect), deciding rule
 * id (borrowed, only read during the call), evaluation time. */
void metrics_decision(const char *route, int effect, const char *rule, uint64_t eval_ns);

enum metrics_upstream_error {
    METRICS_UP_CONNECT_FAILED = 0, /* refused, unreachable, no socket */
    METRICS_UP_CONNECT_TIMEOUT,
    METRICS_UP_RESPONSE_TIMEOUT, /* no (complete) response in time */
    METRICS_UP_BAD_RESPONSE,     /* malformed head or chunked framing */
    METRICS_UP_TLS,              /* TLS handshake or verification with the upstream */
    METRICS_UP_CLOSED,           /* closed or reset before the response was complete */
    METRICS_UP_ERROR_COUNT
};
void metrics_upstream_error(const char *route, enum metrics_upstream_error kind);

/*
 * Append every metric in the Prometheus text exposition format 0.0.4
 * (Content-Type: text/plain; version=0.0.4; charset=utf-8) to out. Any
 * thread, while the workers run (the admin listener calls it on the main
 * loop); reads the live device-trust and rules statistics too.
 */
void metrics_render(struct evbuffer *out);

#endif
