/*
 * authz.c - the authorization runtime (include/authz.h).
 *
 * Threads:
 *   main    authz_start/_reconfigure/_stop; a 1 s timer that stat()s the
 *           rules, directory and GeoIP files and frees retired snapshots;
 *           the directory URL poller (httpc). Posts jobs to the loader.
 *   loader  reads, parses, compiles and publishes (ld_mtx held while it
 *           does: reconfigure takes the same lock, so loads never race).
 *   workers authz_evaluate(): a pointer compare against the published
 *           generation; only after a publish a short mutex to swap the
 *           thread's snapshot reference.
 *
 * The snapshot (struct az_state) is immutable and refcounted; it holds
 * references to the rules (struct policy), the directory, the GeoIP handle
 * and the settings (trusted proxies, route index). A snapshot whose last
 * reference goes away on a worker is not freed there (a big directory takes
 * a while to free): it is queued and the main timer frees it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <maxminddb.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "auditlog.h"
#include "authz.h"
#include "conf.h"
#include "devtrust.h"
#include "directory.h"
#include "httpc.h"
#include "log.h"
#include "thread.h"
#include "policy.h"
#include "score.h"

#define AZ_TOKEN_MAX 8192
#define AZ_RETRY_FIRST_MS 1000

/* ---- small helpers -------------------------------------------------------- */

static char *az_strdup(const char *s, int *oom)
{
    char *d;

    if (s == NULL)
        return NULL;
    d = strdup(s);
    if (d == NULL)
        *oom = 1;
    return d;
}

static uint32_t az_hash(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

/*
 * Read a whole file (at most max bytes) into a NUL-terminated buffer.
 * st gets the opened file's fstat(). 0, or -1 with err.
 */
static int az_read_file(const char *path, size_t max, char **out, size_t *outlen, struct stat *st,
                        char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0, cap;
    int fd, rc = -1;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, st) == -1 || !S_ISREG(st->st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)st->st_size > max) {
        snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
        goto out;
    }
    cap = (size_t)st->st_size + 1;
    buf = malloc(cap);
    if (buf == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto out;
    }
    for (;;) {
        ssize_t n;

        if (len + 1 == cap) {
            /* It grew while we read: take up to max. */
            char *nb;
            if (cap - 1 >= max) {
                snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
                goto out;
            }
            cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            nb = realloc(buf, cap);
            if (nb == NULL) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto out;
            }
            buf = nb;
        }
        n = read(fd, buf + len, cap - 1 - len);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    close(fd);
    return rc;
}

static int az_sha256(const char *data, size_t len, unsigned char *out)
{
    unsigned int n = 0;

    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

/* ---- addresses ------------------------------------------------------------ */

struct az_addr {
    int family; /* 0 unknown, AF_INET (a[0..3]) or AF_INET6 */
    uint8_t a[16];
};

static const uint8_t az_v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* IPv4-mapped IPv6 becomes IPv4: the same client, one form for matching,
 * GeoIP and logs. */
static void az_addr_norm(struct az_addr *x)
{
    if (x->family == AF_INET6 && memcmp(x->a, az_v4mapped, 12) == 0) {
        memmove(x->a, x->a + 12, 4);
        memset(x->a + 4, 0, 12);
        x->family = AF_INET;
    }
}

static int az_addr_from_sa(const struct sockaddr *sa, struct az_addr *x)
{
    memset(x, 0, sizeof(*x));
    if (sa == NULL)
        return -1;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        x->family = AF_INET;
        memcpy(x->a, &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        x->family = AF_INET6;
        memcpy(x->a, &in6->sin6_addr, 16);
        az_addr_norm(x);
    } else {
        return -1;
    }
    return 0;
}

/*
 * One X-Forwarded-For element (already trimmed): "1.2.3.4", "1.2.3.4:5678",
 * "2001:db8::1", "[2001:db8::1]" or "[2001:db8::1]:5678". Anything else
 * (RFC 7239 obfuscated names, "unknown", garbage) is -1.
 */
static int az_addr_parse(const char *s, size_t n, struct az_addr *x)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    const char *colon;
    size_t i;

    memset(x, 0, sizeof(*x));
    if (n == 0)
        return -1;
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        size_t hl;
        if (close == NULL)
            return -1;
        hl = (size_t)(close - s - 1);
        if (close + 1 != s + n) {
            if (close[1] != ':' || close + 2 == s + n)
                return -1;
            for (i = (size_t)(close + 2 - s); i < n; i++)
                if (!isdigit((unsigned char)s[i]))
                    return -1;
        }
        if (hl == 0 || hl >= sizeof(tmp))
            return -1;
        memcpy(tmp, s + 1, hl);
        tmp[hl] = '\0';
        if (inet_pton(AF_INET6, tmp, x->a) != 1)
            return -1;
        x->family = AF_INET6;
        az_addr_norm(x);
        return 0;
    }
    if (n >= sizeof(tmp))
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (inet_pton(AF_INET6, tmp, x->a) == 1) {
        x->family = AF_INET6;
        az_addr_norm(x);
        return 0;
    }
    colon = memchr(tmp, ':', n);
    if (colon != NULL) {
        /* IPv4 with a port: exactly one colon then digits */
        for (i = (size_t)(colon - tmp) + 1; i < n; i++)
            if (!isdigit((unsigned char)tmp[i]))
                return -1;
        if ((size_t)(colon - tmp) + 1 == n)
            return -1;
        tmp[colon - tmp] = '\0';
    }
    if (inet_pton(AF_INET, tmp, x->a) != 1)
        return -1;
    x->family = AF_INET;
    return 0;
}

/* Address text. IPv4 by hand: glibc's inet_ntop() goes through sprintf. */
static void az_addr_text(const struct az_addr *x, char *out, size_t len)
{
    if (x->family == AF_INET && len >= 16) {
        char *p = out;
        int i;

        for (i = 0; i < 4; i++) {
            unsigned v = x->a[i];
            if (v >= 100)
                *p++ = (char)('0' + v / 100);
            if (v >= 10)
                *p++ = (char)('0' + v / 10 % 10);
            *p++ = (char)('0' + v % 10);
            *p++ = i < 3 ? '.' : '\0';
        }
        return;
    }
    if (inet_ntop(x->family, x->a, out, (socklen_t)len) == NULL)
        out[0] = '\0';
}

static int az_cidr_match(const struct conf_cidr *r, const struct az_addr *x)
{
    unsigned full, rest;

    if (r->family != x->family)
        return 0;
    full = r->bits / 8;
    rest = r->bits % 8;
    if (memcmp(r->addr, x->a, full) != 0)
        return 0;
    if (rest != 0) {
        uint8_t m = (uint8_t)(0xff << (8 - rest));
        if ((x->a[full] & m) != r->addr[full])
            return 0;
    }
    return 1;
}

/* ---- settings (from struct conf; immutable, refcounted) -------------------- */

enum az_dir_kind { AZ_DIR_NONE = 0, AZ_DIR_FILE, AZ_DIR_URL };

struct az_route_slot {
    const char *name; /* into settings.routes */
    int index;        /* -1: empty slot */
};

struct az_settings {
    _Atomic unsigned refs;
    char *rules; /* NULL: no policy section */
    enum az_dir_kind dir_kind;
    char *dir_file, *dir_url, *dir_ca, *dir_token_file;
    uint64_t dir_poll_ms, dir_timeout_ms;
    char *geoip;
    struct conf_cidr *trusted;
    size_t ntrusted;
    char *audit_log;
    int deny_details;
    char **routes;
    size_t nroutes;
    char **tiers;
    size_t ntiers;
    /* route name -> index into routes, open addressing, power of two */
    struct az_route_slot *rtab;
    uint32_t rmask;
};

static void az_settings_free(struct az_settings *s)
{
    size_t i;

    if (s == NULL)
        return;
    free(s->rules);
    free(s->dir_file);
    free(s->dir_url);
    free(s->dir_ca);
    free(s->dir_token_file);
    free(s->geoip);
    free(s->trusted);
    free(s->audit_log);
    for (i = 0; i < s->nroutes; i++)
        free(s->routes[i]);
    free(s->routes);
    for (i = 0; i < s->ntiers; i++)
        free(s->tiers[i]);
    free(s->tiers);
    free(s->rtab);
    free(s);
}

static struct az_settings *az_settings_ref(struct az_settings *s)
{
    if (s != NULL)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

static void az_settings_unref(struct az_settings *s)
{
    if (s != NULL && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
        az_settings_free(s);
}

static int az_route_find(const struct az_settings *s, const char *name)
{
    uint32_t i;

    if (name == NULL || s->rtab == NULL)
        return -1;
    for (i = az_hash(name) & s->rmask;; i = (i + 1) & s->rmask) {
        const struct az_route_slot *sl = &s->rtab[i];
        if (sl->index < 0)
            return -1;
        if (strcmp(sl->name, name) == 0)
            return sl->index;
    }
}

static int az_settings_from_conf(const struct conf *c, struct az_settings **out, char *err,
                                 size_t errlen)
{
    struct az_settings *s = calloc(1, sizeof(*s));
    struct score_config *sc = NULL;
    int oom = 0;
    size_t i, size;

    *out = NULL;
    if (s == NULL)
        goto oom;
    s->refs = 1;
    s->audit_log = az_strdup(c->policy_rules != NULL ? c->policy_audit_log : "off", &oom);
    if (c->policy_rules == NULL) {
        if (oom)
            goto oom;
        *out = s;
        return 0;
    }
    s->rules = az_strdup(c->policy_rules, &oom);
    if (c->policy_dir_file != NULL) {
        s->dir_kind = AZ_DIR_FILE;
        s->dir_file = az_strdup(c->policy_dir_file, &oom);
    } else if (c->policy_dir_url != NULL) {
        s->dir_kind = AZ_DIR_URL;
        s->dir_url = az_strdup(c->policy_dir_url, &oom);
        s->dir_ca = az_strdup(c->policy_dir_ca, &oom);
        s->dir_token_file = az_strdup(c->policy_dir_token_file, &oom);
        s->dir_poll_ms = c->policy_dir_poll_ms;
        s->dir_timeout_ms = c->policy_dir_timeout_ms;
    }
    s->geoip = az_strdup(c->policy_geoip, &oom);
    s->deny_details = c->policy_deny_details;
    if (c->npolicy_trusted_proxies > 0) {
        s->trusted = calloc(c->npolicy_trusted_proxies, sizeof(*s->trusted));
        if (s->trusted == NULL)
            goto oom;
        memcpy(s->trusted, c->policy_trusted_proxies,
               c->npolicy_trusted_proxies * sizeof(*s->trusted));
        s->ntrusted = c->npolicy_trusted_proxies;
    }
    if (oom)
        goto oom;

    /* Routes, in config order: the policy's route index i is routes[i]. */
    s->routes = calloc(c->nroutes + 1, sizeof(char *));
    if (s->routes == NULL)
        goto oom;
    for (i = 0; i < c->nroutes; i++) {
        s->routes[i] = az_strdup(c->routes[i].name, &oom);
        if (oom)
            goto oom;
        s->nroutes = i + 1;
    }
    for (size = 8; size < 2 * s->nroutes; size *= 2)
        ;
    s->rtab = malloc(size * sizeof(*s->rtab));
    if (s->rtab == NULL)
        goto oom;
    s->rmask = (uint32_t)size - 1;
    for (i = 0; i < size; i++)
        s->rtab[i].index = -1;
    for (i = 0; i < s->nroutes; i++) {
        uint32_t j = az_hash(s->routes[i]) & s->rmask;
        while (s->rtab[j].index >= 0)
            j = (j + 1) & s->rmask;
        s->rtab[j].name = s->routes[i];
        s->rtab[j].index = (int)i;
    }

    /* Tiers: the device-trust scoring's, so ordinals agree with devtrust. */
    if (score_config_from_json(c->device_trust != NULL ? json_object_get(c->device_trust, "scoring")
                                                       : NULL,
                               c->path, "$.device_trust.scoring", &sc, err, errlen) == -1)
        goto err;
    s->ntiers = score_config_tier_count(sc);
    s->tiers = calloc(s->ntiers + 1, sizeof(char *));
    if (s->tiers == NULL)
        goto oom;
    for (i = 0; i < s->ntiers; i++) {
        s->tiers[i] = az_strdup(score_config_tier_name(sc, i), &oom);
        if (oom)
            goto oom;
    }
    score_config_unref(sc);
    *out = s;
    return 0;
oom:
    snprintf(err, errlen, "policy: out of memory");
err:
    score_config_unref(sc);
    az_settings_free(s);
    return -1;
}

/* ---- GeoIP ------------------------------------------------------------------ */

struct az_geo {
    _Atomic unsigned refs;
    int has_asn; /* the database type carries autonomous_system_number */
    MMDB_s db;
    char *path;     /* as opened */
    struct stat st; /* the file's, taken before opening it */
    int st_ok;
};

static struct az_geo *az_geo_open(const char *path, char *err, size_t errlen)
{
    struct az_geo *g = calloc(1, sizeof(*g));
    int rc;

    if (g == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    /* Stat first: a file replaced between the stat and the open is seen as
     * changed next time, never the other way round. */
    g->st_ok = stat(path, &g->st) == 0;
    g->path = strdup(path);
    if (g->path == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(g);
        return NULL;
    }
    rc = MMDB_open(path, MMDB_MODE_MMAP, &g->db);
    if (rc != MMDB_SUCCESS) {
        snprintf(err, errlen, "%s: cannot open the GeoIP database: %s%s%s", path, MMDB_strerror(rc),
                 rc == MMDB_IO_ERROR ? ": " : "", rc == MMDB_IO_ERROR ? strerror(errno) : "");
        free(g->path);
        free(g);
        return NULL;
    }
    g->refs = 1;
    /* Looking for a key a record does not have walks the whole map: only
     * ask for the ASN where the database type says it is there. */
    g->has_asn = g->db.metadata.database_type != NULL &&
                 (strstr(g->db.metadata.database_type, "ASN") != NULL ||
                  strstr(g->db.metadata.database_type, "ISP") != NULL ||
                  strstr(g->db.metadata.database_type, "Enterprise") != NULL);
    return g;
}

static struct az_geo *az_geo_ref(struct az_geo *g)
{
    if (g != NULL)
        atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    return g;
}

static void az_geo_unref(struct az_geo *g)
{
    if (g != NULL && atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1) {
        MMDB_close(&g->db);
        free(g->path);
        free(g);
    }
}

/* Country (and ASN when the database has it). Pure lookups, no allocation:
 * MMDB_get_value() callocs its path array, MMDB_aget_value() does not. */
static const char *const az_path_country[] = {"country", "iso_code", NULL};
static const char *const az_path_asn[] = {"autonomous_system_number", NULL};

static void az_geo_lookup(const struct az_geo *g, const struct az_addr *x, char *country,
                          size_t clen, uint32_t *asn)
{
    struct sockaddr_storage ss;
    MMDB_lookup_result_s res;
    MMDB_entry_data_s data;
    int merr = MMDB_SUCCESS;

    snprintf(country, clen, "unknown");
    *asn = 0;
    memset(&ss, 0, sizeof(ss));
    if (x->family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, x->a, 4);
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, x->a, 16);
    }
    /* The db is only read; libmaxminddb documents lookups on a shared,
     * opened MMDB_s as thread-safe. The cast drops const for its API. */
    res = MMDB_lookup_sockaddr((MMDB_s *)&g->db, (const struct sockaddr *)&ss, &merr);
    if (merr != MMDB_SUCCESS || !res.found_entry)
        return;
    if (MMDB_aget_value(&res.entry, &data, az_path_country) == MMDB_SUCCESS && data.has_data &&
        data.type == MMDB_DATA_TYPE_UTF8_STRING && data.data_size == 2 &&
        isupper((unsigned char)data.utf8_string[0]) &&
        isupper((unsigned char)data.utf8_string[1]) && clen >= 3) {
        country[0] = data.utf8_string[0];
        country[1] = data.utf8_string[1];
        country[2] = '\0';
    }
    if (g->has_asn && MMDB_aget_value(&res.entry, &data, az_path_asn) == MMDB_SUCCESS &&
        data.has_data) {
        if (data.type == MMDB_DATA_TYPE_UINT32)
            *asn = data.uint32;
        else if (data.type == MMDB_DATA_TYPE_UINT16)
            *asn = data.uint16;
    }
}

/* ---- the published snapshot ------------------------------------------------- */

struct az_state {
    _Atomic unsigned refs;
    struct az_state *next_dead;
    struct az_settings *set; /* never NULL */
    struct policy *policy;   /* NULL: no policy configured */
    struct directory *dir;   /* NULL: none (yet) */
    struct az_geo *geo;      /* NULL: countries are "unknown" */
};

static pthread_mutex_t dead_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct az_state *dead_list; /* dead_mtx */
static _Atomic int az_defer_free;  /* the main timer frees retired snapshots */

static void az_state_free(struct az_state *s)
{
    policy_unref(s->policy);
    directory_unref(s->dir);
    az_geo_unref(s->geo);
    az_settings_unref(s->set);
    free(s);
}

static struct az_state *az_state_ref(struct az_state *s)
{
    if (s != NULL)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

static void az_state_unref(struct az_state *s)
{
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (atomic_load(&az_defer_free)) {
        pthread_mutex_lock(&dead_mtx);
        s->next_dead = dead_list;
        dead_list = s;
        pthread_mutex_unlock(&dead_mtx);
        return;
    }
    az_state_free(s);
}

static void az_dead_drain(void)
{
    struct az_state *l, *n;

    pthread_mutex_lock(&dead_mtx);
    l = dead_list;
    dead_list = NULL;
    pthread_mutex_unlock(&dead_mtx);
    for (; l != NULL; l = n) {
        n = l->next_dead;
        az_state_free(l);
    }
}

static pthread_mutex_t pub_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct az_state *pub_state; /* pub_mtx; NULL: not started */
static _Atomic uint64_t pub_gen = 1;
static _Atomic int pub_enabled;
static _Atomic int pub_deny_details;

static _Thread_local struct az_state *tl_state;
static _Thread_local uint64_t tl_gen;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void az_tl_destroy(void *p)
{
    az_state_unref(p);
}

static void az_tl_init(void)
{
    if (pthread_key_create(&tl_key, az_tl_destroy) != 0)
        fatalx("policy: cannot create a thread key");
}

/* This thread's snapshot: the published one, re-referenced only after a
 * publish. Common path: one atomic load and a compare. */
static struct az_state *az_current(void)
{
    uint64_t g = atomic_load_explicit(&pub_gen, memory_order_acquire);
    struct az_state *old, *s;

    if (tl_gen == g)
        return tl_state;
    pthread_once(&tl_once, az_tl_init);
    pthread_mutex_lock(&pub_mtx);
    s = az_state_ref(pub_state);
    g = atomic_load_explicit(&pub_gen, memory_order_relaxed);
    pthread_mutex_unlock(&pub_mtx);
    old = tl_state;
    tl_state = s;
    tl_gen = g;
    pthread_setspecific(tl_key, s);
    az_state_unref(old);
    return s;
}

static void az_rg_drop(void);

void authz_thread_release(void)
{
    struct az_state *old = tl_state;

    az_rg_drop();

    tl_state = NULL;
    tl_gen = 0;
    if (old != NULL) {
        pthread_setspecific(tl_key, NULL);
        az_state_unref(old);
    }
}

/* Publish s (takes the reference); NULL unpublishes. */
static void az_publish(struct az_state *s)
{
    struct az_state *old;

    pthread_mutex_lock(&pub_mtx);
    old = pub_state;
    pub_state = s;
    atomic_store_explicit(&pub_enabled, s != NULL && s->policy != NULL, memory_order_relaxed);
    atomic_store_explicit(&pub_deny_details, s != NULL && s->set->deny_details,
                          memory_order_relaxed);
    atomic_fetch_add_explicit(&pub_gen, 1, memory_order_release);
    pthread_mutex_unlock(&pub_mtx);
    az_state_unref(old);
}

/* ---- statistics --------------------------------------------------------------- */

static pthread_mutex_t st_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct authz_stats st; /* st_mtx; the counters and last_error */
static char *st_dir_etag;     /* st_mtx: validator of the last accepted URL body */
static uint64_t st_dir_etag_gen;

static void az_error(uint64_t *counter, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Count and remember a failure, and log it. */
static void az_error(uint64_t *counter, const char *fmt, ...)
{
    char buf[AUTHZ_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&st_mtx);
    if (counter != NULL)
        (*counter)++;
    snprintf(st.last_error, sizeof(st.last_error), "%s", buf);
    pthread_mutex_unlock(&st_mtx);
    log_warnx("policy: %s", buf);
}

static void az_count(uint64_t *counter)
{
    pthread_mutex_lock(&st_mtx);
    (*counter)++;
    if (counter == &st.directory_loads || counter == &st.directory_unchanged)
        st.directory_fresh_at = (int64_t)time(NULL);
    pthread_mutex_unlock(&st_mtx);
}

/* ---- loading (loader thread, or main thread at start/reconfigure) ----------- */

static pthread_mutex_t ld_mtx = PTHREAD_MUTEX_INITIALIZER;
/* Everything below is ld_mtx's. The invariant: ld_policy was compiled with
 * ld_set's routes and tiers. */
static struct az_settings *ld_set;
static struct policy *ld_policy;
static char *ld_rules_text; /* the bytes ld_policy came from */
static size_t ld_rules_len;
static struct directory *ld_dir;
static unsigned char ld_dir_hash[32]; /* of the bytes ld_dir came from */
static struct az_geo *ld_geo;
static uint64_t ld_gen; /* bumped when the sources change: stale jobs are dropped */

static struct policy *az_compile(const struct az_settings *s, const char *text, size_t len,
                                 const struct directory *dir, char *err, size_t errlen)
{
    struct policy_compile_opts o;

    memset(&o, 0, sizeof(o));
    o.name = s->rules;
    o.tiers = (const char *const *)s->tiers;
    o.ntiers = s->ntiers;
    o.routes = (const char *const *)s->routes;
    o.nroutes = s->nroutes;
    o.dir = dir;
    return policy_compile(text, len, &o, err, errlen);
}

static struct directory *az_dir_parse(const char *name, const char *text, size_t len, char *err,
                                      size_t errlen)
{
    return directory_parse(text, len, name, err, errlen);
}

/* Build a snapshot of ld_* and publish it (ld_mtx held). */
static int az_publish_ld(void)
{
    struct az_state *s = calloc(1, sizeof(*s));

    if (s == NULL) {
        az_error(NULL, "out of memory: the running rules stay");
        return -1;
    }
    s->refs = 1;
    s->set = az_settings_ref(ld_set);
    s->policy = ld_policy != NULL ? policy_ref(ld_policy) : NULL;
    s->dir = ld_dir != NULL ? directory_ref(ld_dir) : NULL;
    s->geo = az_geo_ref(ld_geo);
    az_publish(s);
    pthread_mutex_lock(&st_mtx);
    st.enabled = ld_policy != NULL;
    st.generation = atomic_load(&pub_gen);
    st.rules = ld_policy != NULL ? policy_rule_count(ld_policy) : 0;
    snprintf(st.rules_version, sizeof(st.rules_version), "%s",
             ld_policy != NULL ? policy_version(ld_policy) : "");
    st.directory_loaded = ld_dir != NULL;
    st.directory_users = ld_dir != NULL ? directory_user_count(ld_dir) : 0;
    st.directory_groups = ld_dir != NULL ? directory_group_count(ld_dir) : 0;
    snprintf(st.directory_version, sizeof(st.directory_version), "%s",
             ld_dir != NULL ? directory_version(ld_dir) : "");
    st.geoip_loaded = ld_geo != NULL;
    pthread_mutex_unlock(&st_mtx);
    return 0;
}

static void az_rules_loaded_log(const char *how)
{
    log_info("policy: rules %s %s: %zu rules, version \"%s\"", ld_set->rules, how,
             policy_rule_count(ld_policy), policy_version(ld_policy));
}

/* The rules file changed (loader, ld_mtx held). */
static void az_load_rules(void)
{
    char err[AUTHZ_ERR_MAX];
    struct policy *p;
    struct stat sb;
    char *text = NULL;
    size_t len = 0;

    if (ld_set == NULL || ld_set->rules == NULL)
        return;
    if (az_read_file(ld_set->rules, POLICY_FILE_MAX, &text, &len, &sb, err, sizeof(err)) == -1) {
        az_error(&st.rules_refused, "rules %s refused, keeping version \"%s\": %s", ld_set->rules,
                 ld_policy != NULL ? policy_version(ld_policy) : "", err);
        return;
    }
    if (ld_rules_text != NULL && len == ld_rules_len && memcmp(text, ld_rules_text, len) == 0) {
        free(text); /* touched, not changed */
        return;
    }
    p = az_compile(ld_set, text, len, ld_dir, err, sizeof(err));
    if (p == NULL) {
        az_error(&st.rules_refused, "rules refused, keeping version \"%s\" (%zu rules): %s",
                 ld_policy != NULL ? policy_version(ld_policy) : "",
                 ld_policy != NULL ? policy_rule_count(ld_policy) : 0, err);
        free(text);
        return;
    }
    policy_unref(ld_policy);
    ld_policy = p;
    free(ld_rules_text);
    ld_rules_text = text;
    ld_rules_len = len;
    az_count(&st.rules_loads);
    az_rules_loaded_log("reloaded");
    az_publish_ld();
}

/*
 * A new directory is in: bind the rules to it. If the rules name a group
 * that the directory no longer has, they cannot be compiled against it:
 * the running rules stay (they look groups up by name, and nobody is in a
 * group that does not exist, so such conditions simply do not hold), and
 * this is logged and counted so the rules get fixed.
 */
static void az_rebind(void)
{
    char err[AUTHZ_ERR_MAX];
    struct policy *p;

    if (ld_rules_text == NULL)
        return;
    p = az_compile(ld_set, ld_rules_text, ld_rules_len, ld_dir, err, sizeof(err));
    if (p == NULL) {
        az_error(&st.directory_rebind_failures,
                 "the rules no longer match the directory (they keep running; their conditions "
                 "on missing groups do not hold): %s",
                 err);
        return;
    }
    policy_unref(ld_policy);
    ld_policy = p;
}

/* New directory bytes (loader, ld_mtx held). what names the source.
 * 1: in use (new or the same as before), 0: refused. */
static int az_load_dir_bytes(const char *what, const char *data, size_t len)
{
    char err[AUTHZ_ERR_MAX];
    unsigned char h[32];
    struct directory *d;

    if (az_sha256(data, len, h) == 0 && ld_dir != NULL && memcmp(h, ld_dir_hash, 32) == 0) {
        az_count(&st.directory_unchanged);
        return 1;
    }
    d = az_dir_parse(what, data, len, err, sizeof(err));
    if (d == NULL) {
        az_error(&st.directory_refused,
                 "directory refused, keeping the last good one (%zu users): %s",
                 ld_dir != NULL ? directory_user_count(ld_dir) : 0, err);
        return 0;
    }
    directory_unref(ld_dir);
    ld_dir = d;
    memcpy(ld_dir_hash, h, 32);
    az_count(&st.directory_loads);
    log_info("policy: directory %s loaded: %zu users, %zu groups, version \"%s\"", what,
             directory_user_count(d), directory_group_count(d), directory_version(d));
    az_rebind();
    az_publish_ld();
    return 1;
}

static void az_load_dir_file(void)
{
    char err[AUTHZ_ERR_MAX];
    struct stat sb;
    char *text = NULL;
    size_t len = 0;

    if (ld_set == NULL || ld_set->dir_kind != AZ_DIR_FILE)
        return;
    if (az_read_file(ld_set->dir_file, DIRECTORY_FILE_MAX, &text, &len, &sb, err, sizeof(err)) ==
        -1) {
        az_error(&st.directory_refused, "directory refused, keeping the last good one: %s", err);
        return;
    }
    (void)az_load_dir_bytes(ld_set->dir_file, text, len);
    free(text);
}

static void az_load_geoip(void)
{
    char err[AUTHZ_ERR_MAX];
    struct az_geo *g;

    if (ld_set == NULL || ld_set->geoip == NULL)
        return;
    g = az_geo_open(ld_set->geoip, err, sizeof(err));
    if (g == NULL) {
        az_error(&st.geoip_refused, "GeoIP database refused, keeping the last good one: %s", err);
        return;
    }
    az_geo_unref(ld_geo);
    ld_geo = g;
    az_count(&st.geoip_loads);
    log_info("policy: GeoIP database %s loaded (%s, built %llu)", ld_set->geoip,
             g->db.metadata.database_type, (unsigned long long)g->db.metadata.build_epoch);
    az_publish_ld();
}

/* ---- the loader thread ----------------------------------------------------------- */

enum az_job_kind { AZ_JOB_RULES = 0, AZ_JOB_DIR_FILE, AZ_JOB_DIR_BODY, AZ_JOB_GEOIP, AZ_JOB_N };

struct az_job {
    struct loader_job lj; /* first */
    enum az_job_kind kind;
    uint64_t gen;
    char *data; /* AZ_JOB_DIR_BODY */
    size_t len;
    char *etag, *last_modified;
};

static struct loader *az_loader;      /* below the workers: a load must not delay requests */
static _Atomic int az_busy[AZ_JOB_N]; /* a job of this kind is queued or running */

static void az_job_free(struct az_job *j)
{
    if (j == NULL)
        return;
    free(j->data);
    free(j->etag);
    free(j->last_modified);
    free(j);
}

static void az_job_run(struct az_job *j)
{
    pthread_mutex_lock(&ld_mtx);
    if (j->gen == ld_gen) {
        switch (j->kind) {
        case AZ_JOB_RULES:
            az_load_rules();
            break;
        case AZ_JOB_DIR_FILE:
            az_load_dir_file();
            break;
        case AZ_JOB_DIR_BODY:
            /* Only a body we accepted (or already had) may be answered
             * with 304 later. */
            if (ld_set != NULL && ld_set->dir_kind == AZ_DIR_URL &&
                az_load_dir_bytes(ld_set->dir_url, j->data, j->len) == 1) {
                pthread_mutex_lock(&st_mtx);
                free(st_dir_etag);
                st_dir_etag = j->etag;
                st_dir_etag_gen = j->gen;
                j->etag = NULL;
                pthread_mutex_unlock(&st_mtx);
            }
            break;
        case AZ_JOB_GEOIP:
            az_load_geoip();
            break;
        case AZ_JOB_N:
            break;
        }
    }
    pthread_mutex_unlock(&ld_mtx);
}

static void az_loader_run(struct loader_job *lj)
{
    struct az_job *j = (struct az_job *)lj;

    az_job_run(j);
    atomic_store(&az_busy[j->kind], 0);
    az_job_free(j);
}

static void az_loader_drop(struct loader_job *lj)
{
    struct az_job *j = (struct az_job *)lj;

    atomic_store(&az_busy[j->kind], 0);
    az_job_free(j);
}

static void az_post(struct az_job *j)
{
    if (az_loader == NULL) {
        az_job_free(j);
        return;
    }
    atomic_store(&az_busy[j->kind], 1);
    loader_post(az_loader, &j->lj);
}

static void az_post_kind(enum az_job_kind kind, uint64_t gen)
{
    struct az_job *j = calloc(1, sizeof(*j));

    if (j == NULL)
        return; /* the next tick tries again */
    j->kind = kind;
    j->gen = gen;
    az_post(j);
}

/* ---- sources on the main loop ---------------------------------------------------- */

struct az_watch {
    char *path;
    struct stat seen;
    int seen_ok;
    int missing; /* the stat error was logged */
    enum az_job_kind kind;
};

struct az_src {
    uint64_t gen;
    struct az_watch w[3]; /* rules, directory file, GeoIP */
    /* directory URL */
    char *url, *ca, *token_file;
    uint64_t poll_ms, timeout_ms;
    struct httpc *httpc;
    struct httpc_req *req;
    struct event *url_timer;
    unsigned attempt;
    char *token;
    struct stat token_st;
};

static struct event_base *az_base;
static struct event *az_tick_ev;
static struct az_src *az_src;
static int az_started;

static int az_stat_same(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void az_src_free(struct az_src *s)
{
    size_t i;

    if (s == NULL)
        return;
    if (s->req != NULL)
        httpc_cancel(s->req);
    httpc_free(s->httpc);
    if (s->url_timer != NULL)
        event_free(s->url_timer);
    for (i = 0; i < 3; i++)
        free(s->w[i].path);
    free(s->url);
    free(s->ca);
    free(s->token_file);
    if (s->token != NULL) {
        OPENSSL_cleanse(s->token, strlen(s->token));
        free(s->token);
    }
    free(s);
}

static void az_watch_tick(struct az_src *s, struct az_watch *w)
{
    struct stat sb;

    if (w->path == NULL || atomic_load(&az_busy[w->kind]))
        return;
    if (stat(w->path, &sb) == -1) {
        if (!w->missing)
            az_error(NULL, "%s: cannot stat: %s (the last good copy stays in use)", w->path,
                     strerror(errno));
        w->missing = 1;
        w->seen_ok = 0;
        return;
    }
    w->missing = 0;
    if (w->seen_ok && az_stat_same(&sb, &w->seen))
        return;
    w->seen = sb;
    w->seen_ok = 1;
    az_post_kind(w->kind, s->gen);
}

/* Once a second: stat() the files, free retired snapshots. */
static void az_tick(evutil_socket_t fd, short what, void *arg)
{
    size_t i;

    (void)fd;
    (void)what;
    (void)arg;
    if (az_src != NULL)
        for (i = 0; i < 3; i++)
            az_watch_tick(az_src, &az_src->w[i]);
    az_dead_drain();
}

static void az_timer_in(struct event *ev, uint64_t ms)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    evtimer_add(ev, &tv);
}

static uint32_t az_rand(void)
{
    uint32_t r;

    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        r = (uint32_t)rand();
    return r;
}

static void az_url_next(struct az_src *s)
{
    uint64_t spread = s->poll_ms / 5;

    /* poll +-10%: replicas asking one directory service drift apart */
    az_timer_in(s->url_timer,
                s->poll_ms - s->poll_ms / 10 + (spread ? az_rand() % (spread + 1) : 0));
}

static void az_url_retry(struct az_src *s)
{
    unsigned shift;
    uint64_t d;

    s->attempt++;
    shift = s->attempt - 1 > 20 ? 20 : s->attempt - 1;
    d = (uint64_t)AZ_RETRY_FIRST_MS << shift;
    if (d > s->poll_ms)
        d = s->poll_ms;
    az_timer_in(s->url_timer, d / 2 + az_rand() % (d / 2 + 1));
}

/* Re-read the bearer token file when it changes (tokens rotate). */
static int az_token_refresh(struct az_src *s)
{
    char err[AUTHZ_ERR_MAX];
    struct stat sb;
    char *buf = NULL;
    size_t len = 0, i;

    if (s->token_file == NULL)
        return 0;
    if (stat(s->token_file, &sb) == -1) {
        az_error(&st.directory_fetch_errors, "directory bearer_token_file %s: %s", s->token_file,
                 strerror(errno));
        return -1;
    }
    if (s->token != NULL && az_stat_same(&sb, &s->token_st))
        return 0;
    if (az_read_file(s->token_file, AZ_TOKEN_MAX, &buf, &len, &sb, err, sizeof(err)) == -1) {
        az_error(&st.directory_fetch_errors, "directory bearer_token_file: %s", err);
        return -1;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    for (i = 0; i < len; i++)
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f)
            break; /* it goes into a header line: nothing that could split it */
    if (len == 0 || i != len) {
        OPENSSL_cleanse(buf, len);
        free(buf);
        az_error(&st.directory_fetch_errors,
                 "directory bearer_token_file %s: expected one token of printable characters",
                 s->token_file);
        return -1;
    }
    if (s->token != NULL) {
        OPENSSL_cleanse(s->token, strlen(s->token));
        free(s->token);
    }
    s->token = buf;
    s->token_st = sb;
    return 0;
}

static void az_url_done(const struct httpc_response *r, void *arg)
{
    struct az_src *s = arg;
    struct az_job *j;

    s->req = NULL;
    if (r->status == 200) {
        j = calloc(1, sizeof(*j));
        if (j != NULL) {
            j->kind = AZ_JOB_DIR_BODY;
            j->gen = s->gen;
            j->len = r->body_len;
            j->data = malloc(r->body_len + 1);
            j->etag = r->etag != NULL ? strdup(r->etag) : NULL;
        }
        if (j == NULL || j->data == NULL) {
            az_job_free(j);
            az_error(&st.directory_fetch_errors, "directory %s: out of memory for %zu bytes",
                     s->url, r->body_len);
            az_url_retry(s);
            return;
        }
        memcpy(j->data, r->body, r->body_len);
        j->data[r->body_len] = '\0';
        az_post(j);
        s->attempt = 0;
        az_url_next(s);
        return;
    }
    if (r->status == 304) {
        az_count(&st.directory_unchanged);
        s->attempt = 0;
        az_url_next(s);
        return;
    }
    if (r->status == 0)
        az_error(&st.directory_fetch_errors, "directory %s: %s", s->url,
                 r->error != NULL ? r->error : "failed");
    else
        az_error(&st.directory_fetch_errors, "directory %s: HTTP %ld", s->url, r->status);
    az_url_retry(s);
}

static void az_url_fetch(evutil_socket_t fd, short what, void *arg)
{
    struct az_src *s = arg;
    char inm[1100], auth[AZ_TOKEN_MAX + 32];
    const char *hdrs[4];
    struct httpc_opts o;
    size_t n = 0;

    (void)fd;
    (void)what;
    if (s->req != NULL)
        return;
    if (atomic_load(&az_busy[AZ_JOB_DIR_BODY])) {
        az_url_next(s); /* the loader is still on the last one */
        return;
    }
    if (az_token_refresh(s) == -1) {
        az_url_retry(s);
        return;
    }
    hdrs[n++] = "Accept: application/json";
    inm[0] = '\0';
    pthread_mutex_lock(&st_mtx);
    if (st_dir_etag != NULL && st_dir_etag_gen == s->gen && strlen(st_dir_etag) < 1000)
        snprintf(inm, sizeof(inm), "If-None-Match: %s", st_dir_etag);
    pthread_mutex_unlock(&st_mtx);
    if (inm[0] != '\0')
        hdrs[n++] = inm;
    if (s->token != NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", s->token);
        hdrs[n++] = auth;
    }
    hdrs[n] = NULL;
    memset(&o, 0, sizeof(o));
    o.url = s->url;
    o.headers = hdrs;
    o.timeout_ms = (long)s->timeout_ms;
    o.connect_timeout_ms = s->timeout_ms < 5000 ? (long)s->timeout_ms : 5000;
    o.max_body = DIRECTORY_FILE_MAX;
    o.ca_file = s->ca;
    s->req = httpc_start(s->httpc, &o, az_url_done, s);
    OPENSSL_cleanse(auth, sizeof(auth));
    if (s->req == NULL) {
        az_error(&st.directory_fetch_errors, "directory %s: cannot start the request", s->url);
        az_url_retry(s);
    }
}

/* Sources for settings set (main thread). Files already loaded are given
 * with the stat of what was read, so they are not loaded twice. */
static struct az_src *az_src_new(const struct az_settings *set, uint64_t gen,
                                 const struct stat *seen, const int *seen_ok)
{
    struct az_src *s = calloc(1, sizeof(*s));
    const char *paths[3];
    int oom = 0;
    size_t i;

    if (s == NULL)
        return NULL;
    s->gen = gen;
    paths[0] = set->rules;
    paths[1] = set->dir_kind == AZ_DIR_FILE ? set->dir_file : NULL;
    paths[2] = set->geoip;
    s->w[0].kind = AZ_JOB_RULES;
    s->w[1].kind = AZ_JOB_DIR_FILE;
    s->w[2].kind = AZ_JOB_GEOIP;
    for (i = 0; i < 3; i++) {
        s->w[i].path = az_strdup(paths[i], &oom);
        if (seen != NULL && seen_ok[i]) {
            s->w[i].seen = seen[i];
            s->w[i].seen_ok = 1;
        }
    }
    if (set->dir_kind == AZ_DIR_URL) {
        s->url = az_strdup(set->dir_url, &oom);
        s->ca = az_strdup(set->dir_ca, &oom);
        s->token_file = az_strdup(set->dir_token_file, &oom);
        s->poll_ms = set->dir_poll_ms;
        s->timeout_ms = set->dir_timeout_ms;
        if (!oom) {
            s->httpc = httpc_new(az_base);
            s->url_timer = evtimer_new(az_base, az_url_fetch, s);
            if (s->httpc == NULL || s->url_timer == NULL)
                oom = 1;
            else
                az_timer_in(s->url_timer, 0);
        }
    }
    if (oom) {
        az_src_free(s);
        return NULL;
    }
    return s;
}

/* ---- start, reconfigure, validate, stop ---------------------------------------- */

/* Everything a config needs, loaded now (main thread). */
struct az_loaded {
    struct az_settings *set;
    struct policy *policy;
    char *rules_text;
    size_t rules_len;
    struct directory *dir;
    int dir_new; /* dir was loaded here (else it is the running one) */
    unsigned char dir_hash[32];
    struct az_geo *geo;
    struct stat seen[3];
    int seen_ok[3];
    /* Taken over from the running state (the input did not change). */
    int policy_kept, dir_kept, geo_kept;
};

/* Would a and b compile the same rules text into the same policy? */
static int az_compile_same(const struct az_settings *a, const struct az_settings *b)
{
    size_t i;

    if (a == NULL || b == NULL || a->rules == NULL || b->rules == NULL ||
        strcmp(a->rules, b->rules) != 0 || a->ntiers != b->ntiers || a->nroutes != b->nroutes)
        return 0;
    for (i = 0; i < a->ntiers; i++)
        if (strcmp(a->tiers[i], b->tiers[i]) != 0)
            return 0;
    for (i = 0; i < a->nroutes; i++)
        if (strcmp(a->routes[i], b->routes[i]) != 0)
            return 0;
    return 1;
}

static int az_geo_same_file(const struct az_geo *g, const char *path)
{
    struct stat sb;

    return g != NULL && g->st_ok && strcmp(g->path, path) == 0 && stat(path, &sb) == 0 &&
           sb.st_dev == g->st.st_dev && sb.st_ino == g->st.st_ino && sb.st_size == g->st.st_size &&
           sb.st_mtim.tv_sec == g->st.st_mtim.tv_sec &&
           sb.st_mtim.tv_nsec == g->st.st_mtim.tv_nsec &&
           sb.st_ctim.tv_sec == g->st.st_ctim.tv_sec && sb.st_ctim.tv_nsec == g->st.st_ctim.tv_nsec;
}

static void az_loaded_free(struct az_loaded *l)
{
    az_settings_unref(l->set);
    policy_unref(l->policy);
    free(l->rules_text);
    directory_unref(l->dir);
    az_geo_unref(l->geo);
    memset(l, 0, sizeof(*l));
}

/*
 * Load what c names. keep_dir: the running directory, used when the source
 * is a URL (it stays until the URL delivers). reuse: an input whose content
 * is the running one's (rules text and the settings it is compiled with,
 * directory bytes by SHA-256, GeoIP file by device, inode, size, mtime and
 * ctime) is taken over from the running state instead of parsed again.
 * Any thread (ld_mtx is taken only to look at the running state).
 */
static int az_load_all(const struct conf *c, struct directory *keep_dir, int reuse,
                       struct az_loaded *l, char *err, size_t errlen)
{
    char e2[AUTHZ_ERR_MAX];
    char *text = NULL;
    size_t len = 0;

    memset(l, 0, sizeof(*l));
    if (az_settings_from_conf(c, &l->set, err, errlen) == -1)
        return -1;
    if (l->set->rules == NULL)
        return 0;
    if (l->set->dir_kind == AZ_DIR_FILE) {
        if (az_read_file(l->set->dir_file, DIRECTORY_FILE_MAX, &text, &len, &l->seen[1], e2,
                         sizeof(e2)) == -1) {
            snprintf(err, errlen, "policy directory: %s", e2);
            goto err;
        }
        l->seen_ok[1] = 1;
        if (az_sha256(text, len, l->dir_hash) == -1)
            memset(l->dir_hash, 0, sizeof(l->dir_hash));
        else if (reuse) {
            pthread_mutex_lock(&ld_mtx);
            if (ld_dir != NULL && ld_set != NULL && ld_set->dir_kind == AZ_DIR_FILE &&
                memcmp(ld_dir_hash, l->dir_hash, 32) == 0) {
                l->dir = directory_ref(ld_dir);
                l->dir_kept = 1;
            }
            pthread_mutex_unlock(&ld_mtx);
        }
        if (l->dir == NULL) {
            l->dir = az_dir_parse(l->set->dir_file, text, len, err, errlen);
            if (l->dir == NULL)
                goto err;
            l->dir_new = 1;
        }
        free(text);
        text = NULL;
    } else if (l->set->dir_kind == AZ_DIR_URL && keep_dir != NULL) {
        l->dir = directory_ref(keep_dir);
    }
    if (l->set->geoip != NULL) {
        if (stat(l->set->geoip, &l->seen[2]) == 0)
            l->seen_ok[2] = 1;
        if (reuse) {
            pthread_mutex_lock(&ld_mtx);
            if (az_geo_same_file(ld_geo, l->set->geoip)) {
                l->geo = az_geo_ref(ld_geo);
                l->geo_kept = 1;
            }
            pthread_mutex_unlock(&ld_mtx);
        }
        if (l->geo == NULL)
            l->geo = az_geo_open(l->set->geoip, err, errlen);
        if (l->geo == NULL)
            goto err;
    }
    if (az_read_file(l->set->rules, POLICY_FILE_MAX, &l->rules_text, &l->rules_len, &l->seen[0], e2,
                     sizeof(e2)) == -1) {
        snprintf(err, errlen, "policy rules: %s", e2);
        goto err;
    }
    l->seen_ok[0] = 1;
    if (reuse) {
        pthread_mutex_lock(&ld_mtx);
        /* The same text, compiled with the same routes and tiers against
         * the same directory object: the running policy is this one. */
        if (ld_policy != NULL && ld_rules_text != NULL && ld_rules_len == l->rules_len &&
            memcmp(ld_rules_text, l->rules_text, l->rules_len) == 0 && ld_dir == l->dir &&
            az_compile_same(ld_set, l->set)) {
            l->policy = policy_ref(ld_policy);
            l->policy_kept = 1;
        }
        pthread_mutex_unlock(&ld_mtx);
    }
    if (l->policy == NULL)
        l->policy = az_compile(l->set, l->rules_text, l->rules_len, l->dir, err, errlen);
    if (l->policy == NULL)
        goto err;
    return 0;
err:
    free(text);
    az_loaded_free(l);
    return -1;
}

int authz_validate(const struct conf *c, char *err, size_t errlen)
{
    struct az_loaded l;

    if (c->policy_rules == NULL)
        return 0;
    if (az_load_all(c, NULL, 0, &l, err, errlen) == -1)
        return -1;
    az_loaded_free(&l);
    return 0;
}

/* Swap l in (main thread): the loader state, the published snapshot, the
 * sources, the audit log. Takes l's references. */
static int az_apply(struct az_loaded *l, char *err, size_t errlen)
{
    struct az_src *src;
    uint64_t gen;
    int enabled = l->set->rules != NULL;

    /* Only this thread changes ld_gen: the new sources' jobs carry the next
     * value, which becomes current when l is committed below. Until then
     * (and if this fails) the running sources go on as they were. */
    pthread_mutex_lock(&ld_mtx);
    gen = ld_gen + 1;
    pthread_mutex_unlock(&ld_mtx);
    src = enabled ? az_src_new(l->set, gen, l->seen, l->seen_ok) : NULL;
    if (enabled && src == NULL) {
        snprintf(err, errlen, "policy: out of memory");
        return -1;
    }
    if (auditlog_reopen(l->set->audit_log, err, errlen) == -1) {
        az_src_free(src);
        return -1;
    }

    pthread_mutex_lock(&ld_mtx);
    ld_gen = gen;
    az_settings_unref(ld_set);
    ld_set = l->set;
    policy_unref(ld_policy);
    ld_policy = l->policy;
    free(ld_rules_text);
    ld_rules_text = l->rules_text;
    ld_rules_len = l->rules_len;
    if (l->dir_new || l->dir == NULL)
        memcpy(ld_dir_hash, l->dir_hash, 32);
    directory_unref(ld_dir);
    ld_dir = l->dir;
    if (l->dir_new && l->dir != NULL) {
        pthread_mutex_lock(&st_mtx);
        st.directory_fresh_at = (int64_t)time(NULL);
        pthread_mutex_unlock(&st_mtx);
    }
    az_geo_unref(ld_geo);
    ld_geo = l->geo;
    if (enabled && l->policy_kept)
        log_info("policy: rules %s unchanged: %zu rules, version \"%s\" (not compiled again)",
                 ld_set->rules, policy_rule_count(ld_policy), policy_version(ld_policy));
    else if (enabled)
        az_rules_loaded_log("loaded");
    if (l->dir_kept)
        log_debug("policy: directory %s unchanged (not parsed again)", ld_set->dir_file);
    if (l->geo_kept)
        log_debug("policy: GeoIP database %s unchanged (not opened again)", ld_set->geoip);
    memset(l, 0, sizeof(*l));
    az_publish_ld();
    pthread_mutex_unlock(&ld_mtx);

    az_src_free(az_src);
    az_src = src;
    return 0;
}

int authz_start(struct event_base *main_base, const struct conf *c, char *err, size_t errlen)
{
    struct az_loaded l;
    struct timeval sec = {1, 0};

    if (az_started) {
        snprintf(err, errlen, "policy: already started");
        return -1;
    }
    if (az_load_all(c, NULL, 0, &l, err, errlen) == -1)
        return -1;
    az_base = main_base;
    memset(&st, 0, sizeof(st));
    if (auditlog_start("off", err, errlen) == -1) {
        az_loaded_free(&l);
        return -1;
    }
    az_loader = loader_start("policy loader", az_loader_run, az_loader_drop);
    if (az_loader == NULL) {
        snprintf(err, errlen, "policy: cannot start the loader thread");
        auditlog_stop();
        az_loaded_free(&l);
        return -1;
    }
    az_tick_ev = event_new(main_base, -1, EV_PERSIST, az_tick, NULL);
    if (az_tick_ev == NULL || event_add(az_tick_ev, &sec) == -1) {
        snprintf(err, errlen, "policy: cannot start the file timer");
        az_loaded_free(&l);
        az_started = 1;
        authz_stop();
        return -1;
    }
    atomic_store(&az_defer_free, 1);
    az_started = 1;
    if (c->policy_rules == NULL)
        log_warnx("policy: no policy configured (no \"policy\" section): no rules, every "
                  "verified device and identity is allowed on every route");
    else if (c->policy_dir_url != NULL)
        log_info("policy: directory %s: fetching; until it arrives no user is in any group",
                 c->policy_dir_url);
    else if (c->policy_dir_file == NULL)
        log_warnx("policy: no directory configured: no user is in any group");
    if (az_apply(&l, err, errlen) == -1) {
        az_loaded_free(&l);
        authz_stop();
        return -1;
    }
    return 0;
}

struct authz_prepared {
    struct az_loaded l;
    int was; /* authz_enabled() when prepared */
};

void authz_prepared_free(struct authz_prepared *p)
{
    if (p == NULL)
        return;
    az_loaded_free(&p->l);
    free(p);
}

int authz_prepare(const struct conf *c, struct authz_prepared **out, char *err, size_t errlen)
{
    struct authz_prepared *p;
    struct directory *keep = NULL;

    *out = NULL;
    if (!az_started) {
        snprintf(err, errlen, "policy: not started");
        return -1;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "policy: out of memory");
        return -1;
    }
    pthread_mutex_lock(&ld_mtx);
    /* The same URL: its directory stays. Another URL: the current one stays
     * until the new URL delivers (it is most likely the same directory
     * served from elsewhere; a gap would deny every group rule). */
    if (ld_set != NULL && ld_set->dir_kind == AZ_DIR_URL && c->policy_dir_url != NULL &&
        ld_dir != NULL)
        keep = directory_ref(ld_dir);
    p->was = ld_set != NULL && ld_set->rules != NULL;
    pthread_mutex_unlock(&ld_mtx);
    if (az_load_all(c, keep, 1, &p->l, err, errlen) == -1) {
        directory_unref(keep);
        free(p);
        return -1;
    }
    directory_unref(keep);
    *out = p;
    return 0;
}

int authz_commit(struct authz_prepared *p, char *err, size_t errlen)
{
    int rc;

    if (!az_started) {
        snprintf(err, errlen, "policy: not started");
        authz_prepared_free(p);
        return -1;
    }
    rc = az_apply(&p->l, err, errlen);
    if (rc == 0 && p->was && !authz_enabled())
        log_warnx("policy: the \"policy\" section was removed: no rules, every verified device "
                  "and identity is allowed on every route");
    authz_prepared_free(p);
    return rc;
}

int authz_reconfigure(const struct conf *c, char *err, size_t errlen)
{
    struct authz_prepared *p;

    if (authz_prepare(c, &p, err, errlen) == -1)
        return -1;
    return authz_commit(p, err, errlen);
}

void authz_stop(void)
{
    if (!az_started)
        return;
    if (az_tick_ev != NULL)
        event_free(az_tick_ev);
    az_tick_ev = NULL;
    az_src_free(az_src);
    az_src = NULL;
    loader_stop(az_loader);
    az_loader = NULL;
    auditlog_stop();
    authz_thread_release();
    az_publish(NULL);
    pthread_mutex_lock(&ld_mtx);
    ld_gen++;
    az_settings_unref(ld_set);
    ld_set = NULL;
    policy_unref(ld_policy);
    ld_policy = NULL;
    free(ld_rules_text);
    ld_rules_text = NULL;
    ld_rules_len = 0;
    directory_unref(ld_dir);
    ld_dir = NULL;
    az_geo_unref(ld_geo);
    ld_geo = NULL;
    pthread_mutex_unlock(&ld_mtx);
    pthread_mutex_lock(&st_mtx);
    free(st_dir_etag);
    st_dir_etag = NULL;
    pthread_mutex_unlock(&st_mtx);
    /* Snapshots still held by other threads are freed by their last unref. */
    atomic_store(&az_defer_free, 0);
    az_dead_drain();
    az_base = NULL;
    az_started = 0;
}

int authz_enabled(void)
{
    return atomic_load_explicit(&pub_enabled, memory_order_relaxed);
}

int authz_deny_details(void)
{
    return atomic_load_explicit(&pub_deny_details, memory_order_relaxed);
}

uint64_t authz_generation(void)
{
    return atomic_load_explicit(&pub_gen, memory_order_acquire);
}

void authz_stats(struct authz_stats *out)
{
    pthread_mutex_lock(&st_mtx);
    *out = st;
    out->generation = atomic_load(&pub_gen);
    pthread_mutex_unlock(&st_mtx);
}

/* ---- admin: proposed rules, install, directory questions ------------------- */

static pthread_mutex_t inst_mtx = PTHREAD_MUTEX_INITIALIZER; /* one install at a time */

/* The live settings and directory (references), for compiling a proposal. */
static int az_live_refs(struct az_settings **set, struct directory **dir, char *err, size_t errlen)
{
    pthread_mutex_lock(&ld_mtx);
    *set = az_settings_ref(ld_set);
    *dir = ld_dir != NULL ? directory_ref(ld_dir) : NULL;
    pthread_mutex_unlock(&ld_mtx);
    if (*set == NULL || (*set)->rules == NULL) {
        az_settings_unref(*set);
        directory_unref(*dir);
        *set = NULL;
        *dir = NULL;
        snprintf(err, errlen, "no policy configured (no \"policy\" section)");
        return -1;
    }
    return 0;
}

static struct policy *az_compile_as(const struct az_settings *s, const char *name, const char *text,
                                    size_t len, const struct directory *dir, char *err,
                                    size_t errlen)
{
    struct policy_compile_opts o;

    memset(&o, 0, sizeof(o));
    o.name = name;
    o.tiers = (const char *const *)s->tiers;
    o.ntiers = s->ntiers;
    o.routes = (const char *const *)s->routes;
    o.nroutes = s->nroutes;
    o.dir = dir;
    return policy_compile(text, len, &o, err, errlen);
}

struct policy *authz_compile_text(const char *text, size_t len, char *err, size_t errlen)
{
    struct az_settings *set;
    struct directory *dir;
    struct policy *p;

    if (az_live_refs(&set, &dir, err, errlen) == -1)
        return NULL;
    p = az_compile_as(set, "rules", text, len, dir, err, errlen);
    az_settings_unref(set);
    directory_unref(dir);
    return p;
}

/*
 * policy_compile()'s line "rules: $.rules[0] (id "a").when.x: message" ->
 * path (the " (id ...)" part dropped, "$.rules[0]" renumbered to index
 * when index >= 0) and message. A line without a JSON path (a syntax error
 * "rules:1:5: ...") gets the path "$".
 */
static int az_err_entry(json_t *arr, const char *line, long index, const char *rule_id)
{
    const char *p = line, *msg, *sep;
    char path[1024];
    size_t n = 0;
    json_t *e;

    if (strncmp(p, "rules: ", 7) == 0)
        p += 7;
    else if (strncmp(p, "rules:", 6) == 0)
        p += 6;
    if (p[0] != '$') {
        snprintf(path, sizeof(path), "$");
        msg = p;
    } else {
        sep = strstr(p, ": ");
        if (sep == NULL) {
            snprintf(path, sizeof(path), "$");
            msg = p;
        } else {
            const char *q = p;

            msg = sep + 2;
            if (index >= 0 && strncmp(q, "$.rules[0]", 10) == 0) {
                n = (size_t)snprintf(path, sizeof(path), "$.rules[%ld]", index);
                q += 10;
            }
            while (q < sep && n + 1 < sizeof(path)) {
                if (strncmp(q, " (id \"", 6) == 0) {
                    const char *close = strstr(q + 6, "\")");
                    if (close != NULL && close < sep) {
                        q = close + 2;
                        continue;
                    }
                }
                path[n++] = *q++;
            }
            path[n] = '\0';
        }
    }
    e = json_pack("{s:s?,s:s,s:s}", "rule", rule_id, "path", path, "message", msg);
    if (e == NULL || json_array_append_new(arr, e) == -1)
        return -1;
    return 0;
}

/* Compile doc (a JSON value) alone; 0 ok, -1 and err. */
static int az_try(const struct az_settings *set, const struct directory *dir, json_t *doc,
                  char *err, size_t errlen)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    struct policy *p;

    if (text == NULL) {
        snprintf(err, errlen, "rules: out of memory");
        return -1;
    }
    p = az_compile_as(set, "rules", text, strlen(text), dir, err, errlen);
    free(text);
    if (p == NULL)
        return -1;
    policy_unref(p);
    return 0;
}

int authz_validate_text(const char *text, size_t len, json_t **errors)
{
    char err[AUTHZ_ERR_MAX], whole[AUTHZ_ERR_MAX];
    struct az_settings *set = NULL;
    struct directory *dir = NULL;
    json_t *arr = json_array(), *root = NULL, *rules, *top = NULL, *one = NULL, *seen = NULL;
    json_error_t jerr;
    struct policy *p;
    int rc = -1;
    size_t i;

    *errors = arr;
    if (arr == NULL)
        return -1;
    if (az_live_refs(&set, &dir, err, sizeof(err)) == -1) {
        az_err_entry(arr, err, -1, NULL);
        return -1;
    }
    /* The whole document first: valid is the common answer. */
    p = az_compile_as(set, "rules", text, len, dir, whole, sizeof(whole));
    if (p != NULL) {
        policy_unref(p);
        rc = 0;
        goto out;
    }
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        /* Syntax (or not an object): policy_compile() said it precisely. */
        rc = az_err_entry(arr, whole, -1, NULL) == -1 ? -1 : 1;
        goto out;
    }
    /* Top level, with no rules. */
    top = json_deep_copy(root);
    rules = json_object_get(root, "rules");
    if (top == NULL)
        goto out;
    if (json_is_array(rules) && json_object_set_new(top, "rules", json_array()) == -1)
        goto out;
    if (az_try(set, dir, top, err, sizeof(err)) == -1 && az_err_entry(arr, err, -1, NULL) == -1)
        goto out;
    /* Each rule alone, then duplicate ids. */
    seen = json_object();
    if (seen == NULL)
        goto out;
    for (i = 0; json_is_array(rules) && i < json_array_size(rules); i++) {
        json_t *r = json_array_get(rules, i), *idv = json_object_get(r, "id"), *prev;
        const char *id = json_is_string(idv) ? json_string_value(idv) : NULL;

        json_decref(one);
        one = json_pack("{s:[O]}", "rules", r);
        if (one == NULL)
            goto out;
        if (az_try(set, dir, one, err, sizeof(err)) == -1) {
            if (az_err_entry(arr, err, (long)i, id) == -1)
                goto out;
            continue;
        }
        prev = id != NULL ? json_object_get(seen, id) : NULL;
        if (prev != NULL) {
            char line[AUTHZ_ERR_MAX];
            snprintf(line, sizeof(line),
                     "rules: $.rules[%zu].id: duplicate id \"%s\" (also "
                     "$.rules[%lld])",
                     i, id, (long long)json_integer_value(prev));
            if (az_err_entry(arr, line, -1, id) == -1)
                goto out;
        } else if (id != NULL && json_object_set_new(seen, id, json_integer((json_int_t)i)) == -1) {
            goto out;
        }
    }
    /* Nothing found piecewise: the whole document's error (limits, ...). */
    if (json_array_size(arr) == 0 && az_err_entry(arr, whole, -1, NULL) == -1)
        goto out;
    rc = 1;
out:
    if (rc == -1 && json_array_size(arr) == 0) {
        json_t *e = json_pack("{s:n,s:s,s:s}", "rule", "path", "$", "message", "out of memory");
        if (e != NULL)
            json_array_append_new(arr, e);
    }
    json_decref(one);
    json_decref(seen);
    json_decref(top);
    json_decref(root);
    az_settings_unref(set);
    directory_unref(dir);
    return rc;
}

/* Write text to path atomically: a temporary file beside it with path's
 * mode, fsync, rename, fsync of the folder. 0, or -1 with err. */
static int az_write_atomic(const char *path, const char *text, size_t len, char *err, size_t errlen)
{
    char tmp[4096], dirbuf[4096];
    struct stat sb;
    mode_t mode = 0644;
    size_t off = 0;
    char *slash;
    int fd, dfd;

    if (stat(path, &sb) == 0)
        mode = sb.st_mode & 0777;
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= sizeof(tmp)) {
        snprintf(err, errlen, "%.300s: path too long", path);
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd == -1) {
        snprintf(err, errlen, "%.300s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "%.300s: write error: %s", tmp, strerror(errno));
            goto fail;
        }
        off += (size_t)n;
    }
    if (fchmod(fd, mode) == -1 || fsync(fd) == -1) {
        snprintf(err, errlen, "%.300s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) == -1) {
        fd = -1;
        snprintf(err, errlen, "%.300s: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) == -1) {
        snprintf(err, errlen, "%.300s: cannot rename to %.300s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    snprintf(dirbuf, sizeof(dirbuf), "%s", path);
    slash = strrchr(dirbuf, '/');
    if (slash == NULL)
        snprintf(dirbuf, sizeof(dirbuf), ".");
    else if (slash == dirbuf)
        slash[1] = '\0';
    else
        *slash = '\0';
    dfd = open(dirbuf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd != -1) {
        (void)fsync(dfd);
        close(dfd);
    }
    return 0;
fail:
    if (fd != -1)
        close(fd);
    unlink(tmp);
    return -1;
}

int authz_install_rules(const char *text, size_t len, char *err, size_t errlen)
{
    char e2[AUTHZ_ERR_MAX];
    struct policy *p = NULL;
    char *copy = NULL;
    int rc = -1;

    pthread_mutex_lock(&inst_mtx);
    pthread_mutex_lock(&ld_mtx);
    if (ld_set == NULL || ld_set->rules == NULL) {
        snprintf(err, errlen, "no policy configured (no \"policy\" section)");
        goto out;
    }
    p = az_compile_as(ld_set, "rules", text, len, ld_dir, err, errlen);
    if (p == NULL)
        goto out;
    copy = malloc(len + 1);
    if (copy == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    if (az_write_atomic(ld_set->rules, text, len, e2, sizeof(e2)) == -1) {
        snprintf(err, errlen, "the rules file cannot be written: %.900s", e2);
        goto out;
    }
    /* The watcher will see a new stat and post a load: it then reads the
     * very bytes held here and leaves them ("touched, not changed"). */
    policy_unref(ld_policy);
    ld_policy = p;
    p = NULL;
    free(ld_rules_text);
    ld_rules_text = copy;
    ld_rules_len = len;
    copy = NULL;
    az_count(&st.rules_loads);
    az_rules_loaded_log("installed by the admin API");
    if (az_publish_ld() == -1) {
        snprintf(err, errlen,
                 "out of memory publishing the rules (the file is written; they "
                 "take effect on the next reload)");
        goto out;
    }
    rc = 0;
out:
    pthread_mutex_unlock(&ld_mtx);
    pthread_mutex_unlock(&inst_mtx);
    policy_unref(p);
    free(copy);
    return rc;
}

char *authz_rules_text(size_t *len)
{
    char *t = NULL;

    *len = 0;
    pthread_mutex_lock(&ld_mtx);
    if (ld_policy != NULL && ld_rules_text != NULL) {
        t = malloc(ld_rules_len + 1);
        if (t != NULL) {
            memcpy(t, ld_rules_text, ld_rules_len);
            t[ld_rules_len] = '\0';
            *len = ld_rules_len;
        }
    }
    pthread_mutex_unlock(&ld_mtx);
    return t;
}

int authz_user_in_group(const char *user, const char *group)
{
    struct az_state *s = az_current();
    const uint32_t *ids;
    uint32_t gid;
    size_t n;

    if (s == NULL || s->dir == NULL || user == NULL || group == NULL || user[0] == '\0')
        return 0;
    if (directory_group_find(s->dir, group, &gid) == -1)
        return 0;
    if (directory_user_groups(s->dir, user, user, &ids, &n) == -1)
        return 0;
    return directory_ids_contain(ids, n, gid);
}

int authz_tier_index(const char *name)
{
    struct az_state *s = az_current();

    if (s == NULL || s->policy == NULL)
        return -1;
    return policy_tier_index(s->policy, name);
}

/* ---- per request ------------------------------------------------------------- */

static int az_trusted(const struct az_settings *s, const struct az_addr *x)
{
    size_t i;

    for (i = 0; i < s->ntrusted; i++)
        if (az_cidr_match(&s->trusted[i], x))
            return 1;
    return 0;
}

/*
 * The client address. The TCP peer, unless it is a trusted proxy and sent
 * X-Forwarded-For: then walk the list from the right (the entry the trusted
 * proxy appended itself) and take the first address that is not a trusted
 * proxy. Everything to its left was written by the client or by proxies we
 * do not trust, so it is never looked at. All entries trusted: the
 * left-most. An entry that is not an address, or more than
 * AUTHZ_XFF_HOPS_MAX trusted hops: unknown (fail closed), never the peer -
 * a trusted proxy's own address might pass an "ip" rule meant for clients.
 */
static int az_client(const struct az_settings *set, const struct authz_input *in,
                     struct az_addr *out)
{
    struct az_addr peer, x;
    size_t end, hops = 0;
    int have = 0;

    memset(out, 0, sizeof(*out));
    if (az_addr_from_sa(in->peer, &peer) == -1)
        return -1;
    if (in->xff == NULL || in->xff_len == 0 || set->ntrusted == 0 || !az_trusted(set, &peer)) {
        *out = peer;
        return 0;
    }
    end = in->xff_len;
    while (end > 0) {
        size_t start = end, s, e;

        while (start > 0 && in->xff[start - 1] != ',')
            start--;
        s = start;
        e = end;
        while (s < e && (in->xff[s] == ' ' || in->xff[s] == '\t'))
            s++;
        while (e > s && (in->xff[e - 1] == ' ' || in->xff[e - 1] == '\t'))
            e--;
        end = start > 0 ? start - 1 : 0;
        if (s == e) {
            if (start == 0)
                break;
            continue; /* an empty list element (RFC 9110 allows them) */
        }
        if (++hops > AUTHZ_XFF_HOPS_MAX || az_addr_parse(in->xff + s, e - s, &x) == -1)
            return -1;
        *out = x;
        have = 1;
        if (!az_trusted(set, &x))
            return 0;
        if (start == 0)
            break;
    }
    if (!have)
        *out = peer; /* only empty elements: as if there were none */
    return 0;
}

/* The names of ids, comma-separated, into buf (AUTHZ_GROUPS_MAX bytes). */
static void az_groups_into(const struct directory *dir, const uint32_t *ids, size_t n,
                           size_t budget, char *buf, size_t *dropped)
{
    size_t i, used = 0;

    buf[0] = '\0';
    if (budget == 0 || budget > AUTHZ_GROUPS_MAX - 1)
        budget = AUTHZ_GROUPS_MAX - 1;
    for (i = 0; i < n; i++) {
        const char *name = directory_group_name(dir, ids[i]);
        size_t l = name != NULL ? strlen(name) : 0, need = l + (used > 0);

        if (l == 0)
            continue;
        if (used + need > budget) {
            (*dropped)++;
            continue;
        }
        if (used > 0)
            buf[used++] = ',';
        memcpy(buf + used, name, l);
        used += l;
        buf[used] = '\0';
    }
}

static void az_groups(const struct directory *dir, const uint32_t *ids, size_t n, size_t budget,
                      struct authz_result *out)
{
    az_groups_into(dir, ids, n, budget, out->groups, &out->groups_dropped);
}

static uint64_t az_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void az_decision_none(struct policy_decision *d)
{
    d->effect = POLICY_ALLOW;
    d->rule_id = "no-policy";
    d->deny_message = NULL;
    d->version = "";
    d->step_up_max_age = -1;
    d->step_up_mfa = 0;
    d->nreasons = 0;
    d->reasons_dropped = 0;
    d->reason_used = 0;
    d->nmonitor = 0;
    d->monitor_dropped = 0;
}

/*
 * The last GeoIP lookup on this thread, for one published snapshot (the
 * database does not change within it): a connection's requests come from
 * one address, so most lookups repeat the one before. Only the lookup is
 * kept, never a decision.
 */
static _Thread_local struct {
    uint64_t gen; /* tl_gen of the lookup; 0: none */
    struct az_addr addr;
    char country[8];
    uint32_t asn;
} tl_geo;

static void az_geo_lookup_memo(const struct az_state *s, const struct az_addr *x, char *country,
                               size_t clen, uint32_t *asn)
{
    if (s != tl_state || clen != sizeof(tl_geo.country)) {
        az_geo_lookup(s->geo, x, country, clen, asn);
        return;
    }
    if (tl_geo.gen != tl_gen || tl_geo.addr.family != x->family ||
        memcmp(tl_geo.addr.a, x->a, sizeof(x->a)) != 0) {
        az_geo_lookup(s->geo, x, tl_geo.country, sizeof(tl_geo.country), &tl_geo.asn);
        tl_geo.addr = *x;
        tl_geo.gen = tl_gen;
    }
    memcpy(country, tl_geo.country, sizeof(tl_geo.country));
    *asn = tl_geo.asn;
}

#define AZ_OVERRIDE_GROUPS_MAX 256

/* Storage a resolved context points into (caller's stack). */
struct az_ctx_store {
    char pbuf[AUTHZ_PATH_MAX];
    uint32_t gids[AZ_OVERRIDE_GROUPS_MAX];
};

/* in->groups_override -> sorted ids of the groups dir knows; their names
 * (sorted by id, i.e. by name) into out->groups. */
static size_t az_groups_override(const struct directory *dir, const char *list, uint32_t *ids,
                                 size_t max)
{
    const char *p = list;
    size_t n = 0;

    while (*p != '\0') {
        const char *e = strchr(p, ',');
        size_t l = e != NULL ? (size_t)(e - p) : strlen(p), i;
        char name[DIRECTORY_NAME_MAX + 1];
        uint32_t id;

        if (l > 0 && l <= DIRECTORY_NAME_MAX) {
            memcpy(name, p, l);
            name[l] = '\0';
            if (directory_group_find(dir, name, &id) == 0 && n < max) {
                for (i = n; i > 0 && ids[i - 1] > id; i--)
                    ;
                if (i == 0 || ids[i - 1] != id) {
                    memmove(ids + i + 1, ids + i, (n - i) * sizeof(*ids));
                    ids[i] = id;
                    n++;
                }
            }
        }
        if (e == NULL)
            break;
        p = e + 1;
    }
    return n;
}

/*
 * Resolve in into c (for policy p: with by_name the route is matched by
 * name, else by the live index). Strings of c may point into store.
 */
static void az_ctx_build(const struct az_state *s, int by_name, const struct authz_input *in,
                         struct authz_result *out, struct policy_ctx *c, struct az_ctx_store *store)
{
    struct az_addr client;

    policy_ctx_init(c);
    if (by_name) {
        c->route_index = -1;
        c->route = in->route;
    } else {
        c->route_index = az_route_find(s->set, in->route);
    }
    c->identity = in->has_identity;
    if (in->has_identity) {
        c->user = in->user_sub;
        c->email = in->user_email;
        c->auth_time = in->auth_time;
        c->mfa = in->mfa;
        if (s->dir != NULL) {
            c->dir = s->dir;
            if (in->groups_override != NULL) {
                c->groups = store->gids;
                c->ngroups = az_groups_override(s->dir, in->groups_override, store->gids,
                                                AZ_OVERRIDE_GROUPS_MAX);
                az_groups(s->dir, c->groups, c->ngroups, in->groups_budget, out);
            } else if (directory_user_groups(s->dir, in->user_sub, in->user_email, &c->groups,
                                             &c->ngroups) == 0) {
                az_groups(s->dir, c->groups, c->ngroups, in->groups_budget, out);
            }
        }
    }
    c->device_id = in->device_id;
    c->device_tier = in->device_tier;
    c->device_score = in->device_score;
    c->device_owner = in->device_owner;
    c->device_attrs = in->attrs;
    c->ndevice_attrs = in->nattrs;
    c->device_stale = in->device_stale;

    if (az_client(s->set, in, &client) == 0) {
        c->ip_family = client.family;
        memcpy(c->ip, client.a, sizeof(client.a));
        az_addr_text(&client, out->client_ip, sizeof(out->client_ip));
        if (in->country_override == NULL) {
            if (s->geo != NULL)
                az_geo_lookup_memo(s, &client, out->country, sizeof(out->country), &out->asn);
            else
                memcpy(out->country, "unknown", sizeof("unknown"));
        }
    }
    /* else: no address, no country: conditions on them are unknown */
    if (in->country_override != NULL)
        snprintf(out->country, sizeof(out->country), "%s", in->country_override);
    memcpy(c->country, out->country, sizeof(c->country));

    c->method = in->method;
    if (in->path != NULL) {
        const char *q = memchr(in->path, '?', in->path_len);
        size_t n = q != NULL ? (size_t)(q - in->path) : in->path_len;

        if (q == NULL && in->path[n] == '\0') {
            c->path = in->path;
        } else if (n < sizeof(store->pbuf)) {
            memcpy(store->pbuf, in->path, n);
            store->pbuf[n] = '\0';
            c->path = store->pbuf;
        }
        /* else: too long to copy; path conditions are unknown */
    }
    c->now = in->now;
}

/*
 * The directory ids of the groups the rules of a route name, resolved once
 * per published snapshot (rules and directory) and route, on this thread:
 * per request, only the user's groups are matched against them. Valid
 * while tl_gen is tl_rg_gen (tl_state, which holds the policy and the
 * directory they came from, is unchanged).
 */
struct az_rg {
    uint32_t *ids; /* directory ids of the named groups that exist, in name order */
    size_t n;
    int done;
};

struct az_rgset {
    size_t n; /* routes of tl_state's settings */
    struct az_rg r[];
};

static _Thread_local struct az_rgset *tl_rg;
static _Thread_local uint64_t tl_rg_gen;
/* Frees a thread's set when it exits without authz_thread_release(). */
static pthread_key_t rg_key;
static pthread_once_t rg_once = PTHREAD_ONCE_INIT;
static int rg_key_ok;

static void az_rgset_free(void *p)
{
    struct az_rgset *set = p;
    size_t i;

    if (set == NULL)
        return;
    for (i = 0; i < set->n; i++)
        free(set->r[i].ids);
    free(set);
}

static void az_rg_key_init(void)
{
    rg_key_ok = pthread_key_create(&rg_key, az_rgset_free) == 0;
}

static void az_rg_drop(void)
{
    if (tl_rg == NULL)
        return;
    pthread_setspecific(rg_key, NULL);
    az_rgset_free(tl_rg);
    tl_rg = NULL;
    tl_rg_gen = 0;
}

/* The resolved ids of route ri of s (this thread's snapshot, policy
 * s->policy), or NULL (out of memory, or not cacheable): resolve by name. */
static const struct az_rg *az_route_gids(const struct az_state *s, int ri)
{
    struct az_rg *e;
    const char *name;
    size_t i, n;
    uint32_t id;

    if (s != tl_state || s->dir == NULL || ri < 0 || (size_t)ri >= s->set->nroutes)
        return NULL;
    if (tl_rg_gen != tl_gen || tl_rg == NULL) {
        az_rg_drop();
        pthread_once(&rg_once, az_rg_key_init);
        if (!rg_key_ok)
            return NULL;
        tl_rg = calloc(1, sizeof(*tl_rg) + s->set->nroutes * sizeof(tl_rg->r[0]));
        if (tl_rg == NULL)
            return NULL;
        if (pthread_setspecific(rg_key, tl_rg) != 0) {
            free(tl_rg);
            tl_rg = NULL;
            return NULL;
        }
        tl_rg->n = s->set->nroutes;
        tl_rg_gen = tl_gen;
    }
    e = &tl_rg->r[ri];
    if (e->done)
        return e;
    for (n = 0; policy_route_group(s->policy, ri, NULL, n) != NULL; n++)
        ;
    e->ids = malloc((n + 1) * sizeof(*e->ids));
    if (e->ids == NULL)
        return NULL;
    for (i = 0; (name = policy_route_group(s->policy, ri, NULL, i)) != NULL; i++)
        if (directory_group_find(s->dir, name, &id) == 0)
            e->ids[e->n++] = id;
    e->done = 1;
    return e;
}

/* out->route_groups: the user's groups (c->groups, sorted directory ids)
 * that the rules of p applying to the route name, within the same budget.
 * rg: those groups' ids resolved beforehand (az_route_gids), or NULL. */
static void az_groups_route(const struct policy *p, const struct policy_ctx *c,
                            const struct authz_input *in, struct authz_result *out,
                            const struct az_rg *rg)
{
    uint32_t ids[AZ_OVERRIDE_GROUPS_MAX], id;
    const char *name;
    size_t i, n = 0, k;

    if (p == NULL || !c->identity || c->dir == NULL || c->ngroups == 0)
        return;
    for (i = 0;; i++) {
        size_t lo = 0, hi = c->ngroups;

        if (rg != NULL) {
            if (i == rg->n)
                break;
            id = rg->ids[i];
        } else {
            if ((name = policy_route_group(p, c->route_index, c->route, i)) == NULL)
                break;
            if (directory_group_find(c->dir, name, &id) == -1)
                continue;
        }
        while (lo < hi) { /* the user's ids are sorted */
            size_t mid = lo + (hi - lo) / 2;
            if (c->groups[mid] < id)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == c->ngroups || c->groups[lo] != id)
            continue;
        if (n == AZ_OVERRIDE_GROUPS_MAX) {
            out->route_groups_dropped++;
            continue;
        }
        for (k = n; k > 0 && ids[k - 1] > id; k--) /* sorted by id, i.e. by name */
            ids[k] = ids[k - 1];
        ids[k] = id;
        n++;
    }
    az_groups_into(c->dir, ids, n, in->groups_budget, out->route_groups,
                   &out->route_groups_dropped);
}

static void az_result_reset(struct authz_result *out)
{
    out->client_ip[0] = '\0';
    out->country[0] = '\0';
    out->asn = 0;
    out->groups[0] = '\0';
    out->groups_dropped = 0;
    out->route_groups[0] = '\0';
    out->route_groups_dropped = 0;
}

void authz_evaluate(const struct authz_input *in, struct authz_result *out)
{
    uint64_t t0 = az_ns();
    struct az_state *s = az_current();
    struct policy_ctx c;
    struct az_addr client;
    struct az_ctx_store store;

    az_result_reset(out);
    if (s == NULL || s->policy == NULL) {
        az_decision_none(&out->decision);
        if (s == NULL) {
            /* Not started (or stopped): nothing to decide with. */
            out->decision.effect = POLICY_DENY;
            out->decision.rule_id = "authz-not-running";
        }
        if (in->peer != NULL && az_addr_from_sa(in->peer, &client) == 0)
            az_addr_text(&client, out->client_ip, sizeof(out->client_ip));
        out->eval_ns = az_ns() - t0;
        return;
    }
    az_ctx_build(s, 0, in, out, &c, &store);
    az_groups_route(s->policy, &c, in, out,
                    c.identity && c.ngroups > 0 ? az_route_gids(s, c.route_index) : NULL);
    policy_eval(s->policy, &c, &out->decision);
    out->eval_ns = az_ns() - t0;
}

void authz_evaluate_policy(const struct policy *p, const struct authz_input *in,
                           struct authz_result *out)
{
    uint64_t t0 = az_ns();
    struct az_state *s = az_current();
    struct policy_ctx c;
    struct az_ctx_store store;

    az_result_reset(out);
    if (s == NULL || p == NULL) {
        az_decision_none(&out->decision);
        out->decision.effect = POLICY_DENY;
        out->decision.rule_id = "authz-not-running";
        out->eval_ns = az_ns() - t0;
        return;
    }
    az_ctx_build(s, p != s->policy, in, out, &c, &store);
    az_groups_route(p, &c, in, out, NULL);
    policy_eval(p, &c, &out->decision);
    out->eval_ns = az_ns() - t0;
}

json_t *authz_explain_json(const struct policy *p, const struct authz_input *in,
                           struct authz_result *out, char *err, size_t errlen)
{
    struct az_state *s = az_current();
    struct policy_ctx c;
    struct az_ctx_store *store;
    json_t *j;

    az_result_reset(out);
    if (s == NULL || (p == NULL && s->policy == NULL)) {
        snprintf(err, errlen, "no policy configured");
        return NULL;
    }
    if (p == NULL)
        p = s->policy;
    store = malloc(sizeof(*store));
    if (store == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    az_ctx_build(s, p != s->policy, in, out, &c, store);
    policy_eval(p, &c, &out->decision);
    j = policy_explain_json(p, &c);
    free(store);
    if (j == NULL)
        snprintf(err, errlen, "out of memory");
    return j;
}

void authz_audit(struct evbuffer *buf, const char *request_id, const struct authz_input *in,
                 const struct devtrust_verdict *v, const struct authz_result *r)
{
    const char *failing[AUDITLOG_FAILING_MAX];
    struct auditlog_entry e;
    struct timespec ts;
    struct az_state *s;
    size_t i;

    if (!auditlog_enabled())
        return;
    s = tl_state; /* the snapshot r came from (same thread) */
    clock_gettime(CLOCK_REALTIME, &ts);
    memset(&e, 0, sizeof(e));
    e.time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    e.request_id = request_id;
    if (in->has_identity) {
        e.user = in->user_sub;
        e.email = in->user_email;
    }
    e.device = in->device_id;
    if (v != NULL && v->tier_name[0] != '\0')
        e.tier = v->tier_name;
    else if (s != NULL && s->policy != NULL)
        e.tier = policy_tier_name(s->policy, in->device_tier);
    e.score = in->device_score;
    e.client = r->client_ip[0] != '\0' ? r->client_ip : NULL;
    e.country = r->country[0] != '\0' ? r->country : NULL;
    e.asn = r->asn;
    e.route = in->route;
    e.method = in->method;
    e.path = in->path;
    e.path_len = in->path_len;
    e.decision = &r->decision;
    if (v != NULL) {
        for (i = 0; i < v->nfailing && i < AUDITLOG_FAILING_MAX; i++)
            failing[i] = v->failing[i].id;
        e.failing = failing;
        e.nfailing = i;
    }
    e.eval_ns = r->eval_ns;
    auditlog_append(buf, &e);
    /* Hand over in small batches (besides the worker's 100 ms timer): the
     * records are still in the cache when the writer reads them, and the
     * chains go back to the allocator before the worker needs new ones. At
     * 15,000 decisions/s a 100 ms batch is ~1 MB of records streamed through
     * the worker's cache. */
    if (evbuffer_get_length(buf) >= AUDITLOG_BATCH)
        auditlog_submit(buf);
}

/* ---- the admin API's directory view and edits ----------------------------- */

struct directory *authz_directory_ref(void)
{
    struct directory *d = NULL;

    pthread_mutex_lock(&pub_mtx);
    if (pub_state != NULL && pub_state->dir != NULL)
        d = directory_ref(pub_state->dir);
    pthread_mutex_unlock(&pub_mtx);
    return d;
}

int authz_directory_reload(char *err, size_t errlen)
{
    char e2[AUTHZ_ERR_MAX];
    struct stat sb;
    char *text = NULL;
    size_t len = 0;
    int rc = -1;

    pthread_mutex_lock(&ld_mtx);
    if (ld_set == NULL || ld_set->dir_kind != AZ_DIR_FILE) {
        snprintf(err, errlen, "the directory is not a file");
    } else if (az_read_file(ld_set->dir_file, DIRECTORY_FILE_MAX, &text, &len, &sb, e2,
                            sizeof(e2)) == -1) {
        snprintf(err, errlen, "%s", e2);
    } else if (az_load_dir_bytes(ld_set->dir_file, text, len) != 1) {
        pthread_mutex_lock(&st_mtx);
        snprintf(err, errlen, "%s", st.last_error);
        pthread_mutex_unlock(&st_mtx);
    } else {
        rc = 0;
    }
    pthread_mutex_unlock(&ld_mtx);
    free(text);
    return rc;
}
