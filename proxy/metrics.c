/*
 * metrics.c - per-worker counters and histograms, rendered for Prometheus.
 *
 * Every counter of the process is one slot of a flat array; a block is one
 * such array. Each worker owns a block (cache-line aligned, allocated once
 * by metrics_init()) and is its only writer: an increment is a relaxed
 * atomic load and store of its own slot, which compiles to a plain
 * load/add/store, never a locked instruction, and no other thread ever
 * writes that cache line. Threads that are not workers share one block and
 * use relaxed atomic additions (rare events: reloads, helper threads).
 *
 * The renderer copies every block with relaxed loads, adds them up and
 * writes the text. A histogram keeps per-bucket (not cumulative) counts and
 * a sum in nanoseconds; its _count is the total of the buckets read, so
 * "+Inf" always equals _count even while workers are counting.
 *
 * Route names, rule ids and (route, effect, rule) triples are interned into
 * fixed, append-only tables: the first sighting copies the name under a
 * mutex, every later lookup is a lock-free probe (acquire loads). Workers
 * keep a small direct-mapped cache from the name's address to its slot,
 * confirmed with a strcmp() against the interned name, so a route name or
 * rule id costs a pointer compare and a short string compare per request.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "authz.h"
#include "devtrust.h"
#include "metrics.h"
#include "shared.h"
#include "policy.h"

/* ---- the counter layout -------------------------------------------------- */

#define NROUTE (METRICS_ROUTES_MAX + 2) /* interned, "(other)", "(none)" */
#define ROUTE_OTHER METRICS_ROUTES_MAX
#define ROUTE_NONE (METRICS_ROUTES_MAX + 1)
#define RULE_OTHER METRICS_RULES_MAX
#define NEFFECT 3                              /* enum policy_effect */
#define NDEC (METRICS_DECISIONS_MAX + NEFFECT) /* interned, then "(other)" per effect */
#define NSTATUS 6                              /* none, 1xx .. 5xx */

enum tls_reason {
    TR_NO_CERT = 0,
    TR_UNKNOWN_CA,
    TR_VERIFY,
    TR_REVOKED,
    TR_EXPIRED,
    TR_NOT_YET_VALID,
    TR_PURPOSE,
    TR_CRL,
    TR_DEVICE_ID,
    TR_PROTOCOL,
    TR_TIMEOUT,
    TR_CLOSED,
    TR_COUNT
};

static const char *const tls_reason_labels[TR_COUNT] = {"no_certificate",
                                                        "unknown_ca",
                                                        "verify_failed",
                                                        "revoked",
                                                        "expired",
                                                        "not_yet_valid",
                                                        "no_client_auth_eku",
                                                        "crl_unavailable",
                                                        "device_id",
                                                        "protocol",
                                                        "timeout",
                                                        "closed"};

static const char *const upstream_labels[METRICS_UP_ERROR_COUNT] = {
    "connect_failed", "connect_timeout", "response_timeout", "bad_response", "tls", "closed"};

static const char *const status_labels[NSTATUS] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};

/* Histogram bounds: nanoseconds and the "le" text Prometheus sees. */
struct bound {
    uint64_t ns;
    const char *le;
};

static const struct bound dur_bounds[] = {
    {100000ull, "0.0001"},  {250000ull, "0.00025"}, {500000ull, "0.0005"},  {1000000ull, "0.001"},
    {2500000ull, "0.0025"}, {5000000ull, "0.005"},  {10000000ull, "0.01"},  {25000000ull, "0.025"},
    {50000000ull, "0.05"},  {100000000ull, "0.1"},  {250000000ull, "0.25"}, {500000000ull, "0.5"},
    {1000000000ull, "1"},   {2500000000ull, "2.5"}, {5000000000ull, "5"},   {10000000000ull, "10"},
    {30000000000ull, "30"}, {60000000000ull, "60"},
};
#define NDUR (sizeof(dur_bounds) / sizeof(dur_bounds[0]))

static const struct bound eval_bounds[] = {
    {1000ull, "0.000001"},  {2500ull, "0.0000025"}, {5000ull, "0.000005"},  {10000ull, "0.00001"},
    {25000ull, "0.000025"}, {50000ull, "0.00005"},  {100000ull, "0.0001"},  {250000ull, "0.00025"},
    {500000ull, "0.0005"},  {1000000ull, "0.001"},  {2500000ull, "0.0025"}, {10000000ull, "0.01"},
};
#define NEVAL (sizeof(eval_bounds) / sizeof(eval_bounds[0]))

/* A histogram's slots: NB buckets, "+Inf", then the sum in nanoseconds. */
#define HIST_SLOTS(nb) ((nb) + 2)

enum {
    M_EVENT = 0,
    M_TLSF = M_EVENT + METRICS_EVENT_COUNT,
    M_EVAL = M_TLSF + TR_COUNT,
    M_REQ = M_EVAL + HIST_SLOTS(NEVAL),
    M_DUR = M_REQ + NROUTE * NSTATUS,
    M_UP = M_DUR + NROUTE * HIST_SLOTS(NDUR),
    M_DEC = M_UP + NROUTE * METRICS_UP_ERROR_COUNT,
    M_TOTAL = M_DEC + NDEC
};

struct mblock {
    _Atomic uint64_t v[M_TOTAL];
};

/*
 * The name -> slot cache of one worker (owner thread only): open addressing
 * on the name's address, so a hit costs a multiply and a compare, no string
 * work. An address is only trusted while the memory behind it cannot have
 * been given to another name: the rule cache is emptied whenever
 * authz_generation() moves (a rules snapshot is only freed after a newer one
 * was published), the route cache when the worker adopts a new
 * configuration (metrics_thread_names_changed()). It is also emptied when
 * 3/4 full (addresses of names that are gone pile up across reloads).
 */
struct ncache_entry {
    const char *p;
    uint32_t slot;
};

struct ncache {
    uint32_t mask, used;
    struct ncache_entry *e;
};

#define ROUTE_CACHE 1024 /* entries, powers of two */
#define RULE_CACHE 8192

struct mworker {
    struct mblock blk; /* first: the allocation is cache-line aligned */
    struct ncache routes, rules;
    uint64_t rules_epoch; /* authz_generation() the rule cache belongs to */
    struct ncache_entry route_cache[ROUTE_CACHE];
    struct ncache_entry rule_cache[RULE_CACHE];
} __attribute__((aligned(64)));

static struct mblock shared_block;
static struct mworker *workers; /* written once by metrics_init() before workers exist */
static int nworkers;
static int64_t start_time;
static _Thread_local struct mworker *tl_worker;

/* The owner's increment: no other thread writes this slot. */
static inline void own_add(_Atomic uint64_t *p, uint64_t n)
{
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void slot_add(struct mworker *w, size_t i, uint64_t n)
{
    if (w != NULL)
        own_add(&w->blk.v[i], n);
    else
        atomic_fetch_add_explicit(&shared_block.v[i], n, memory_order_relaxed);
}

/* ---- interning ----------------------------------------------------------- */

struct itab {
    uint32_t cap;  /* names */
    uint32_t mask; /* index size - 1 (a power of two, at least 2 * cap) */
    _Atomic uint32_t count;
    _Atomic uint32_t *idx; /* 0 empty, else slot + 1 */
    char (*names)[METRICS_NAME_MAX + 1];
    pthread_mutex_t mtx;
};

static _Atomic uint32_t route_idx[2 * METRICS_ROUTES_MAX];
static char route_names[METRICS_ROUTES_MAX][METRICS_NAME_MAX + 1];
static struct itab routes = {METRICS_ROUTES_MAX, 2 * METRICS_ROUTES_MAX - 1, 0, route_idx,
                             route_names,        PTHREAD_MUTEX_INITIALIZER};

static _Atomic uint32_t rule_idx[2 * METRICS_RULES_MAX];
static char rule_names[METRICS_RULES_MAX][METRICS_NAME_MAX + 1];
static struct itab rules = {METRICS_RULES_MAX, 2 * METRICS_RULES_MAX - 1, 0, rule_idx,
                            rule_names,        PTHREAD_MUTEX_INITIALIZER};

/* Decision series: key = route slot | effect << 9 | rule slot << 11. */
static _Atomic uint32_t dec_idx[2 * METRICS_DECISIONS_MAX];
static uint32_t dec_keys[METRICS_DECISIONS_MAX];
static _Atomic uint32_t dec_count;
static pthread_mutex_t dec_mtx = PTHREAD_MUTEX_INITIALIZER;

_Static_assert(NROUTE <= (1u << 9), "route slot must fit 9 bits");
_Static_assert(METRICS_RULES_MAX + 1 <= (1u << 13), "rule slot must fit 13 bits");

static uint32_t fnv1a(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

/* Probe for s; *at gets the empty index slot where it would go. */
static int itab_probe(const struct itab *t, const char *s, size_t len, uint32_t h, uint32_t *at,
                      uint32_t *slot)
{
    uint32_t i;

    for (i = h & t->mask;; i = (i + 1) & t->mask) {
        uint32_t v = atomic_load_explicit(&t->idx[i], memory_order_acquire);
        if (v == 0) {
            *at = i;
            return 0;
        }
        if (memcmp(t->names[v - 1], s, len) == 0 && t->names[v - 1][len] == '\0') {
            *slot = v - 1;
            return 1;
        }
    }
}

/* The slot of name s, interning it on first sight; t->cap ("(other)") when
 * the table is full or s is empty or too long. */
static uint32_t itab_intern(struct itab *t, const char *s)
{
    size_t len = strnlen(s, METRICS_NAME_MAX + 1);
    uint32_t h, at, slot;

    if (len == 0 || len > METRICS_NAME_MAX)
        return t->cap;
    h = fnv1a(s, len);
    if (itab_probe(t, s, len, h, &at, &slot))
        return slot;
    if (atomic_load_explicit(&t->count, memory_order_relaxed) >= t->cap)
        return t->cap;
    pthread_mutex_lock(&t->mtx);
    if (!itab_probe(t, s, len, h, &at, &slot)) {
        slot = atomic_load_explicit(&t->count, memory_order_relaxed);
        if (slot < t->cap) {
            memcpy(t->names[slot], s, len);
            t->names[slot][len] = '\0';
            atomic_store_explicit(&t->idx[at], slot + 1, memory_order_release);
            atomic_store_explicit(&t->count, slot + 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&t->mtx);
    return slot;
}

static void ncache_clear(struct ncache *c)
{
    memset(c->e, 0, ((size_t)c->mask + 1) * sizeof(*c->e));
    c->used = 0;
}

/* The same through the worker's cache: the probes after the first. */
static uint32_t itab_lookup_slow(struct itab *t, struct ncache *c, const char *s, uint32_t i)
{
    struct ncache_entry *e;
    uint32_t slot;

    if (c == NULL)
        return itab_intern(t, s);
    for (;; i = (i + 1) & c->mask) {
        e = &c->e[i];
        if (e->p == s)
            return e->slot;
        if (e->p == NULL)
            break;
    }
    /* "(other)" is cached too: once the table is full it stays full, and a
     * name that is too long stays too long. */
    slot = itab_intern(t, s);
    if (c->used + 1 > (c->mask + 1) / 4 * 3) {
        ncache_clear(c);
        return slot;
    }
    c->used++;
    e->p = s;
    e->slot = slot;
    return slot;
}

/* The slot of s through the worker's cache (NULL: no cache, by content).
 * The common case, inlined: one multiply, one load, one compare. */
static inline uint32_t itab_lookup(struct itab *t, struct ncache *c, const char *s)
{
    uint32_t i = 0;

    if (c != NULL) {
        i = (uint32_t)(((uint64_t)(uintptr_t)s * 0x9e3779b97f4a7c15ull) >> 40) & c->mask;
        if (c->e[i].p == s)
            return c->e[i].slot;
    }
    return itab_lookup_slow(t, c, s, i);
}

static uint32_t route_slot(struct mworker *w, const char *route)
{
    if (route == NULL)
        return ROUTE_NONE;
    return itab_lookup(&routes, w ? &w->routes : NULL, route);
}

static uint32_t dec_series(uint32_t route, uint32_t effect, uint32_t rule)
{
    const uint32_t mask = 2 * METRICS_DECISIONS_MAX - 1;
    uint32_t key = route | effect << 9 | rule << 11, i, v, slot = METRICS_DECISIONS_MAX + effect;
    uint32_t h = (key * 2654435761u) >> 16;

    for (i = h & mask;; i = (i + 1) & mask) {
        v = atomic_load_explicit(&dec_idx[i], memory_order_acquire);
        if (v == 0)
            break;
        if (dec_keys[v - 1] == key)
            return v - 1;
    }
    if (atomic_load_explicit(&dec_count, memory_order_relaxed) >= METRICS_DECISIONS_MAX)
        return slot;
    pthread_mutex_lock(&dec_mtx);
    for (i = h & mask;; i = (i + 1) & mask) {
        v = atomic_load_explicit(&dec_idx[i], memory_order_acquire);
        if (v == 0 || dec_keys[v - 1] == key)
            break;
    }
    if (v != 0) {
        slot = v - 1;
    } else {
        uint32_t n = atomic_load_explicit(&dec_count, memory_order_relaxed);
        if (n < METRICS_DECISIONS_MAX) {
            dec_keys[n] = key;
            atomic_store_explicit(&dec_idx[i], n + 1, memory_order_release);
            atomic_store_explicit(&dec_count, n + 1, memory_order_release);
            slot = n;
        }
    }
    pthread_mutex_unlock(&dec_mtx);
    return slot;
}

/* ---- set-up ------------------------------------------------------------- */

int metrics_init(int n)
{
    struct mworker *w = NULL;
    int i;

    if (workers != NULL || n <= 0)
        return 0;
    start_time = (int64_t)time(NULL);
    if (posix_memalign((void **)&w, 64, (size_t)n * sizeof(*w)) != 0)
        return -1;
    memset(w, 0, (size_t)n * sizeof(*w));
    for (i = 0; i < n; i++) {
        w[i].routes.mask = ROUTE_CACHE - 1;
        w[i].routes.e = w[i].route_cache;
        w[i].rules.mask = RULE_CACHE - 1;
        w[i].rules.e = w[i].rule_cache;
    }
    workers = w;
    nworkers = n;
    return 0;
}

void metrics_thread_init(int worker)
{
    if (workers != NULL && worker >= 0 && worker < nworkers)
        tl_worker = &workers[worker];
}

void metrics_thread_names_changed(void)
{
    struct mworker *w = tl_worker;

    if (w != NULL) {
        ncache_clear(&w->routes);
        ncache_clear(&w->rules);
    }
}

/* ---- counting ----------------------------------------------------------- */

void metrics_count(enum metrics_event e)
{
    if ((unsigned)e < METRICS_EVENT_COUNT)
        slot_add(tl_worker, M_EVENT + (size_t)e, 1);
}

void metrics_add(enum metrics_event e, uint64_t n)
{
    if ((unsigned)e < METRICS_EVENT_COUNT && n > 0)
        slot_add(tl_worker, M_EVENT + (size_t)e, n);
}

static int has(const char *s, const char *sub)
{
    return strstr(s, sub) != NULL;
}

/*
 * The reasons come from OpenSSL (X509_verify_cert_error_string(),
 * ERR_reason_error_string()) and from tls.c / proxy.c; the unit test pins
 * OpenSSL's texts so a change there fails the build's tests, not the labels.
 */
static enum tls_reason tls_classify(const char *r)
{
    if (r == NULL || r[0] == '\0')
        return TR_PROTOCOL;
    if (has(r, "no client certificate") || has(r, "did not return a certificate"))
        return TR_NO_CERT;
    if (has(r, "handshake timeout"))
        return TR_TIMEOUT;
    if (has(r, "closed during handshake") || has(r, "unexpected eof"))
        return TR_CLOSED;
    if (has(r, "CRL") || has(r, "revocation"))
        return TR_CRL;
    if (has(r, "revoked"))
        return TR_REVOKED;
    if (has(r, "has expired"))
        return TR_EXPIRED;
    if (has(r, "not yet valid"))
        return TR_NOT_YET_VALID;
    if (has(r, "purpose"))
        return TR_PURPOSE;
    if (has(r, "device id"))
        return TR_DEVICE_ID;
    if (has(r, "issuer certificate") || has(r, "self-signed") || has(r, "self signed") ||
        has(r, "not trusted") || has(r, "untrusted"))
        return TR_UNKNOWN_CA;
    /* "tlsv1 alert ..." is an alert the client sent about our certificate:
     * a protocol matter, not the device's certificate. */
    if (has(r, "certificate") && !has(r, "alert"))
        return TR_VERIFY;
    return TR_PROTOCOL;
}

const char *metrics_tls_reason_label(const char *reason)
{
    return tls_reason_labels[tls_classify(reason)];
}

void metrics_tls_handshake(int verified, int resumed, const char *reason)
{
    struct mworker *w = tl_worker;

    if (!verified) {
        slot_add(w, M_TLSF + (size_t)tls_classify(reason), 1);
        return;
    }
    slot_add(w, M_EVENT + METRICS_TLS_OK, 1);
    if (resumed)
        slot_add(w, M_EVENT + METRICS_TLS_RESUMED, 1);
}

static void hist_observe(struct mworker *w, size_t base, const struct bound *b, size_t nb,
                         uint64_t ns)
{
    size_t i = 0;

    while (i < nb && ns > b[i].ns)
        i++;
    slot_add(w, base + i, 1);
    slot_add(w, base + nb + 1, ns);
}

void metrics_request(const char *route, int status, const struct timespec *start,
                     const struct timespec *end)
{
    struct mworker *w = tl_worker;
    uint32_t r = route_slot(w, route);
    size_t cls = status >= 100 && status <= 599 ? (size_t)(status / 100) : 0;

    slot_add(w, M_REQ + (size_t)r * NSTATUS + cls, 1);
    if (start != NULL && end != NULL && (start->tv_sec != 0 || start->tv_nsec != 0)) {
        int64_t ns = ((int64_t)end->tv_sec - (int64_t)start->tv_sec) * 1000000000 +
                     ((int64_t)end->tv_nsec - (int64_t)start->tv_nsec);
        hist_observe(w, M_DUR + (size_t)r * HIST_SLOTS(NDUR), dur_bounds, NDUR,
                     ns > 0 ? (uint64_t)ns : 0);
    }
}

void metrics_decision(const char *route, int effect, const char *rule, uint64_t eval_ns)
{
    struct mworker *w = tl_worker;
    uint32_t r = route_slot(w, route);
    uint32_t e = effect >= 0 && effect < NEFFECT ? (uint32_t)effect : (uint32_t)POLICY_DENY;
    uint32_t k;

    if (w != NULL) {
        uint64_t g = authz_generation();
        if (g != w->rules_epoch) {
            ncache_clear(&w->rules);
            w->rules_epoch = g;
        }
    }
    k = rule != NULL ? itab_lookup(&rules, w ? &w->rules : NULL, rule) : RULE_OTHER;

    slot_add(w, M_DEC + dec_series(r, e, k), 1);
    hist_observe(w, M_EVAL, eval_bounds, NEVAL, eval_ns);
}

void metrics_upstream_error(const char *route, enum metrics_upstream_error kind)
{
    struct mworker *w = tl_worker;

    if ((unsigned)kind >= METRICS_UP_ERROR_COUNT)
        return;
    slot_add(w, M_UP + (size_t)route_slot(w, route) * METRICS_UP_ERROR_COUNT + (size_t)kind, 1);
}

/* ---- rendering ---------------------------------------------------------- */

static void snap_add(uint64_t *s, struct mblock *b)
{
    size_t i;

    for (i = 0; i < M_TOTAL; i++)
        s[i] += atomic_load_explicit(&b->v[i], memory_order_relaxed);
}

static void family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, double quote and newline escaped. */
static void label_value(struct evbuffer *out, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            evbuffer_add(out, "\\\\", 2);
        else if (*s == '"')
            evbuffer_add(out, "\\\"", 2);
        else if (*s == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, s, 1);
    }
}

/* `route="name"` into buf, escaped like label_value() (names are at most
 * METRICS_NAME_MAX: buf holds any of them). */
static void route_label(char *buf, size_t len, const char *name)
{
    size_t k = 0;

    k += (size_t)snprintf(buf, len, "route=\"");
    for (; *name != '\0' && k + 4 < len; name++) {
        if (*name == '\\' || *name == '"' || *name == '\n')
            buf[k++] = '\\';
        buf[k++] = *name == '\n' ? 'n' : *name;
    }
    buf[k++] = '"';
    buf[k] = '\0';
}

static const char *route_name(uint32_t slot)
{
    if (slot == ROUTE_NONE)
        return "(none)";
    if (slot >= METRICS_ROUTES_MAX)
        return "(other)";
    return route_names[slot];
}

static const char *rule_name(uint32_t slot)
{
    return slot >= METRICS_RULES_MAX ? "(other)" : rule_names[slot];
}

static void sample(struct evbuffer *out, const char *name, uint64_t v)
{
    evbuffer_add_printf(out, "%s %llu\n", name, (unsigned long long)v);
}

/* name{key="value"} v for a fixed set of values. */
static void sample_l(struct evbuffer *out, const char *name, const char *key, const char *val,
                     uint64_t v)
{
    evbuffer_add_printf(out, "%s{%s=\"", name, key);
    label_value(out, val);
    evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)v);
}

static void seconds(struct evbuffer *out, uint64_t ns)
{
    evbuffer_add_printf(out, "%llu.%09llu", (unsigned long long)(ns / 1000000000ull),
                        (unsigned long long)(ns % 1000000000ull));
}

/* One histogram series; labels "" or `route="x"`. */
static void histogram(struct evbuffer *out, const char *name, const char *labels, const uint64_t *h,
                      const struct bound *b, size_t nb)
{
    const char *sep = labels[0] != '\0' ? "," : "";
    const char *open = labels[0] != '\0' ? "{" : "", *close = labels[0] != '\0' ? "}" : "";
    uint64_t cum = 0;
    size_t i;

    for (i = 0; i < nb; i++) {
        cum += h[i];
        evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep, b[i].le,
                            (unsigned long long)cum);
    }
    cum += h[nb];
    evbuffer_add_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                        (unsigned long long)cum);
    evbuffer_add_printf(out, "%s_sum%s%s%s ", name, open, labels, close);
    seconds(out, h[nb + 1]);
    evbuffer_add_printf(out, "\n%s_count%s%s%s %llu\n", name, open, labels, close,
                        (unsigned long long)cum);
}

/* The route slots in use, in render order: interned, "(other)", "(none)". */
static size_t route_slots(uint32_t *out)
{
    uint32_t n = atomic_load_explicit(&routes.count, memory_order_acquire), i;
    size_t k = 0;

    for (i = 0; i < n; i++)
        out[k++] = i;
    out[k++] = ROUTE_OTHER;
    out[k++] = ROUTE_NONE;
    return k;
}

static void render_data_plane(struct evbuffer *out, const uint64_t *s)
{
    uint32_t rs[NROUTE];
    uint64_t acc = s[M_EVENT + METRICS_CONN_ACCEPTED], closed = s[M_EVENT + METRICS_CONN_CLOSED];
    uint32_t ndec = atomic_load_explicit(&dec_count, memory_order_acquire), i;
    size_t nr = route_slots(rs), j, k;
    char labels[8 + 2 * METRICS_NAME_MAX + 2];

    family(out, "ztproxy_connections_accepted_total", "counter", "Client connections accepted.");
    sample(out, "ztproxy_connections_accepted_total", acc);
    family(out, "ztproxy_connections_active", "gauge", "Client connections open now.");
    sample(out, "ztproxy_connections_active", acc > closed ? acc - closed : 0);

    family(out, "ztproxy_tls_handshakes_total", "counter",
           "TLS handshakes that established a verified device certificate.");
    sample(out, "ztproxy_tls_handshakes_total", s[M_EVENT + METRICS_TLS_OK]);
    family(out, "ztproxy_tls_handshakes_resumed_total", "counter",
           "Verified TLS handshakes that resumed a session (ticket).");
    sample(out, "ztproxy_tls_handshakes_resumed_total", s[M_EVENT + METRICS_TLS_RESUMED]);
    family(out, "ztproxy_tls_handshake_failures_total", "counter",
           "TLS handshakes that did not establish a verified device, by reason.");
    for (j = 0; j < TR_COUNT; j++)
        sample_l(out, "ztproxy_tls_handshake_failures_total", "reason", tls_reason_labels[j],
                 s[M_TLSF + j]);

    family(out, "ztproxy_requests_total", "counter",
           "Requests answered, by route and status class (none: no response was sent).");
    for (j = 0; j < nr; j++)
        for (k = 0; k < NSTATUS; k++) {
            uint64_t v = s[M_REQ + rs[j] * NSTATUS + k];
            if (v == 0)
                continue;
            evbuffer_add(out, "ztproxy_requests_total{route=\"", 30);
            label_value(out, route_name(rs[j]));
            evbuffer_add_printf(out, "\",status=\"%s\"} %llu\n", status_labels[k],
                                (unsigned long long)v);
        }

    family(out, "ztproxy_request_duration_seconds", "histogram",
           "Time from the first byte of a request head to the end of its response, by route.");
    for (j = 0; j < nr; j++) {
        const uint64_t *h = &s[M_DUR + rs[j] * HIST_SLOTS(NDUR)];
        uint64_t n = 0;
        for (k = 0; k <= NDUR; k++)
            n += h[k];
        if (n == 0)
            continue;
        route_label(labels, sizeof(labels), route_name(rs[j]));
        histogram(out, "ztproxy_request_duration_seconds", labels, h, dur_bounds, NDUR);
    }

    family(out, "ztproxy_decisions_total", "counter",
           "Rules decisions, by route, effect and deciding rule.");
    for (i = 0; i < NDEC; i++) {
        uint32_t key, route, effect, rule;
        uint64_t v = s[M_DEC + i];
        if (v == 0)
            continue;
        if (i < ndec) {
            key = dec_keys[i];
            route = key & 0x1ff;
            effect = key >> 9 & 0x3;
            rule = key >> 11;
        } else if (i >= METRICS_DECISIONS_MAX) {
            route = ROUTE_OTHER;
            effect = i - METRICS_DECISIONS_MAX;
            rule = RULE_OTHER;
        } else {
            continue; /* counted between reading ndec and the blocks: next time */
        }
        evbuffer_add(out, "ztproxy_decisions_total{route=\"", 31);
        label_value(out, route_name(route));
        evbuffer_add_printf(out, "\",effect=\"%s\",rule=\"",
                            policy_effect_name((enum policy_effect)effect));
        label_value(out, rule_name(rule));
        evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)v);
    }

    family(out, "ztproxy_policy_eval_duration_seconds", "histogram",
           "Time to evaluate the rules for one request.");
    histogram(out, "ztproxy_policy_eval_duration_seconds", "", &s[M_EVAL], eval_bounds, NEVAL);

    family(out, "ztproxy_upstream_errors_total", "counter",
           "Requests that failed at the upstream, by route and kind.");
    for (j = 0; j < nr; j++)
        for (k = 0; k < METRICS_UP_ERROR_COUNT; k++) {
            uint64_t v = s[M_UP + rs[j] * METRICS_UP_ERROR_COUNT + k];
            if (v == 0)
                continue;
            evbuffer_add(out, "ztproxy_upstream_errors_total{route=\"", 37);
            label_value(out, route_name(rs[j]));
            evbuffer_add_printf(out, "\",kind=\"%s\"} %llu\n", upstream_labels[k],
                                (unsigned long long)v);
        }

    {
        uint64_t begun = s[M_EVENT + METRICS_RELOAD_BEGIN], ok = s[M_EVENT + METRICS_RELOAD_OK];
        family(out, "ztproxy_config_reloads_total", "counter",
               "Configuration reloads (SIGHUP or a changed CRL), by result.");
        sample_l(out, "ztproxy_config_reloads_total", "result", "success", ok);
        sample_l(out, "ztproxy_config_reloads_total", "result", "failure",
                 begun > ok ? begun - ok : 0);
    }
    family(out, "ztproxy_logins_total", "counter", "SSO login callbacks, by result.");
    sample_l(out, "ztproxy_logins_total", "result", "success", s[M_EVENT + METRICS_LOGIN_OK]);
    sample_l(out, "ztproxy_logins_total", "result", "failure", s[M_EVENT + METRICS_LOGIN_FAILED]);
    family(out, "ztproxy_session_cookie_wrong_device_total", "counter",
           "Session cookies presented over another device's certificate (possible theft).");
    sample(out, "ztproxy_session_cookie_wrong_device_total",
           s[M_EVENT + METRICS_COOKIE_WRONG_DEVICE]);
    family(out, "ztproxy_bearer_refused_total", "counter", "Bearer tokens refused.");
    sample(out, "ztproxy_bearer_refused_total", s[M_EVENT + METRICS_BEARER_REFUSED]);
    family(out, "ztproxy_log_records_dropped_total", "counter",
           "Audit and access log records lost: the writer's queue was full (the disk "
           "did not keep up) or the write failed.");
    sample_l(out, "ztproxy_log_records_dropped_total", "log", "audit",
             s[M_EVENT + METRICS_AUDIT_DROPPED]);
    sample_l(out, "ztproxy_log_records_dropped_total", "log", "access",
             s[M_EVENT + METRICS_ACCESS_DROPPED]);
    family(out, "ztproxy_loader_raised_total", "counter",
           "Loader jobs (reloads, rules, directory, GeoIP, inventory) raised from idle "
           "priority because they were starved of CPU.");
    sample(out, "ztproxy_loader_raised_total", s[M_EVENT + METRICS_LOADER_RAISED]);
}

/* Shared state in Redis (include/shared.h): only with a "redis" section. */
static void render_redis(struct evbuffer *out, int64_t now)
{
    struct shared_stats *rs = malloc(sizeof(*rs));

    if (rs == NULL)
        return;
    shared_stats(now, rs);
    if (rs->configured) {
        family(out, "ztproxy_redis_connected", "gauge",
               "1 when both Redis connections are up and subscribed.");
        sample(out, "ztproxy_redis_connected", rs->connected ? 1 : 0);
        family(out, "ztproxy_redis_down_seconds", "gauge",
               "Seconds since Redis was lost (0 while connected).");
        sample(out, "ztproxy_redis_down_seconds",
               rs->down_since > 0 && now > rs->down_since ? (uint64_t)(now - rs->down_since) : 0);
        family(out, "ztproxy_redis_connects_total", "counter", "Connections made to Redis.");
        sample(out, "ztproxy_redis_connects_total", rs->connects);
        family(out, "ztproxy_redis_disconnects_total", "counter", "Connections to Redis lost.");
        sample(out, "ztproxy_redis_disconnects_total", rs->disconnects);
        family(out, "ztproxy_redis_errors_total", "counter",
               "Failed connects, error replies and refused messages.");
        sample(out, "ztproxy_redis_errors_total", rs->errors);
        family(out, "ztproxy_redis_writes_total", "counter",
               "Shared writes, by result (published to Redis, or dropped: queue full).");
        sample_l(out, "ztproxy_redis_writes_total", "result", "published", rs->published);
        sample_l(out, "ztproxy_redis_writes_total", "result", "dropped", rs->dropped);
        family(out, "ztproxy_redis_received_total", "counter",
               "Changes from other replicas applied here.");
        sample(out, "ztproxy_redis_received_total", rs->received);
        family(out, "ztproxy_redis_queued", "gauge", "Shared writes waiting for Redis.");
        sample(out, "ztproxy_redis_queued", rs->queued);
    }
    free(rs);
}

static void render_runtimes(struct evbuffer *out, int64_t now)
{
    struct authz_stats *as = malloc(sizeof(*as));
    struct devtrust_stats *ds = malloc(sizeof(*ds));

    if (as == NULL || ds == NULL)
        goto out;
    authz_stats(as);
    devtrust_stats(now, ds);

    family(out, "ztproxy_rules", "gauge", "Rules in the live rules snapshot.");
    sample(out, "ztproxy_rules", as->rules);
    family(out, "ztproxy_rules_loads_total", "counter",
           "Rules files loaded, by result (refused: the last good rules were kept).");
    sample_l(out, "ztproxy_rules_loads_total", "result", "success", as->rules_loads);
    sample_l(out, "ztproxy_rules_loads_total", "result", "refused", as->rules_refused);
    family(out, "ztproxy_directory_loads_total", "counter", "Group directory loads, by result.");
    sample_l(out, "ztproxy_directory_loads_total", "result", "success", as->directory_loads);
    sample_l(out, "ztproxy_directory_loads_total", "result", "unchanged", as->directory_unchanged);
    sample_l(out, "ztproxy_directory_loads_total", "result", "refused", as->directory_refused);
    sample_l(out, "ztproxy_directory_loads_total", "result", "fetch_error",
             as->directory_fetch_errors);
    family(out, "ztproxy_directory_users", "gauge", "Users in the live group directory.");
    sample(out, "ztproxy_directory_users", as->directory_users);
    family(out, "ztproxy_directory_age_seconds", "gauge",
           "Seconds since the directory was last loaded or confirmed unchanged.");
    if (as->directory_loaded && as->directory_fresh_at > 0)
        sample(out, "ztproxy_directory_age_seconds",
               now > as->directory_fresh_at ? (uint64_t)(now - as->directory_fresh_at) : 0);
    family(out, "ztproxy_geoip_loads_total", "counter", "GeoIP database loads, by result.");
    sample_l(out, "ztproxy_geoip_loads_total", "result", "success", as->geoip_loads);
    sample_l(out, "ztproxy_geoip_loads_total", "result", "refused", as->geoip_refused);

    family(out, "ztproxy_inventory_feed_age_seconds", "gauge",
           "Seconds since the inventory feed was last loaded or confirmed.");
    if (ds->configured && ds->feed_age >= 0)
        sample(out, "ztproxy_inventory_feed_age_seconds", (uint64_t)ds->feed_age);
    family(out, "ztproxy_inventory_stale", "gauge",
           "1 when the inventory is older than its max_stale or not loaded.");
    if (ds->configured)
        sample(out, "ztproxy_inventory_stale", ds->inventory_stale ? 1 : 0);
    family(out, "ztproxy_inventory_devices", "gauge", "Devices in the live inventory snapshot.");
    sample(out, "ztproxy_inventory_devices", ds->records);
    family(out, "ztproxy_inventory_loads_total", "counter", "Inventory feed loads, by result.");
    sample_l(out, "ztproxy_inventory_loads_total", "result", "success", ds->loads_ok);
    sample_l(out, "ztproxy_inventory_loads_total", "result", "unchanged", ds->loads_unchanged);
    sample_l(out, "ztproxy_inventory_loads_total", "result", "refused", ds->loads_refused);
    sample_l(out, "ztproxy_inventory_loads_total", "result", "fetch_error", ds->fetch_errors);
    family(out, "ztproxy_posture_reports_total", "counter", "Posture reports, by result.");
    sample_l(out, "ztproxy_posture_reports_total", "result", "accepted", ds->posture_accepted);
    sample_l(out, "ztproxy_posture_reports_total", "result", "refused", ds->posture_refused);
    sample_l(out, "ztproxy_posture_reports_total", "result", "limited", ds->posture_limited);
    sample_l(out, "ztproxy_posture_reports_total", "result", "unavailable",
             ds->posture_unavailable);
    family(out, "ztproxy_state_persist_errors_total", "counter",
           "Device state writes that failed (the state is kept in memory).");
    sample(out, "ztproxy_state_persist_errors_total", ds->persist_errors);
    render_redis(out, now);
out:
    free(as);
    free(ds);
}

void metrics_render(struct evbuffer *out)
{
    uint64_t *s = calloc(M_TOTAL, sizeof(*s));
    int64_t now = (int64_t)time(NULL);
    int i;

    if (s == NULL)
        return;
    for (i = 0; i < nworkers; i++)
        snap_add(s, &workers[i].blk);
    snap_add(s, &shared_block);
    family(out, "ztproxy_start_time_seconds", "gauge", "When the metrics started (Unix time).");
    sample(out, "ztproxy_start_time_seconds", (uint64_t)(start_time > 0 ? start_time : now));
    render_data_plane(out, s);
    render_runtimes(out, now);
    free(s);
}
