/*
 * devtrust.c - the device-trust runtime around the pure inventory, posture
 * and score modules: feed sources, the loader and writer threads, the
 * per-device store, and per-request evaluation.
 *
 * Threads and what they touch:
 *
 *   main loop  the feed source (stat timer or httpc polling), reconfigure,
 *              start/stop, and the loader's completions (done_ev);
 *   loader     reads feed files and parses feeds (inventory_parse), then
 *              publishes the snapshot under pub_mtx (a pointer swap);
 *   writer     appends to state_dir/posture.log (one fsync per batch),
 *              compacts it, rewrites overrides.json;
 *   workers    devtrust_evaluate(), devtrust_posture_submit(): pub_mtx for
 *              a few instructions (take references), one shard mutex for a
 *              struct copy, w_mtx to queue a line. No lock here is ever held
 *              across I/O or parsing, so a slow disk or a huge feed never
 *              stalls a request.
 *
 * Lock order: shard mutex -> w_mtx; pub_mtx is never held with another.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "fileio.h"
#include "conf.h"
#include "jsonconf.h"
#include "devtrust.h"
#include "feedcache.h"
#include "httpc.h"
#include "inventory.h"
#include "log.h"
#include "thread.h"
#include "posture.h"
#include "shared.h"
#include "score.h"

#define DT_SHARDS 64                           /* power of two */
#define DT_WQUEUE_MAX 65536                    /* lines waiting for the writer */
#define DT_COMPACT_MIN (16u * 1024 * 1024)     /* compact posture.log beyond this... */
#define DT_TOKEN_MAX 4096                      /* bearer token file */
#define DT_RETRY_FIRST_MS 1000                 /* first retry after a fetch error */
#define DT_GRACE_PREFIX "{\"grace_device\":\"" /* grace lines in posture.log */

enum dt_format { DT_FORMAT_AUTO = 0, DT_FORMAT_JSON, DT_FORMAT_NDJSON };
enum dt_kind { DT_SRC_NONE = 0, DT_SRC_FILE, DT_SRC_URL };

/* ---- settings: the "device_trust" section, validated ------------------- */

struct dt_settings {
    enum dt_kind kind;
    char *file; /* paths resolved against the config's directory */
    char *url;
    char *ca;
    char *client_cert;
    char *client_key;
    char *token_file;
    uint64_t poll_ms;
    uint64_t timeout_ms;
    int64_t max_stale_s;
    int allow_empty;
    enum dt_format format;
    int rate_per_min;
    struct score_config *score; /* owned */
};

struct dt_vctx {
    const char *name;
    const char *basedir;
    char *err;
    size_t errlen;
    int failed;
};

static int dt_fail(struct dt_vctx *vx, const char *jpath, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int dt_fail(struct dt_vctx *vx, const char *jpath, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (vx->failed)
        return -1;
    vx->failed = 1;
    n = snprintf(vx->err, vx->errlen, "%s: %s: ", vx->name, jpath);
    if (n < 0 || (size_t)n >= vx->errlen)
        return -1;
    va_start(ap, fmt);
    vsnprintf(vx->err + n, vx->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static int dt_check_keys(struct dt_vctx *cx, const char *jpath, json_t *obj,
                         const char *const *allowed)
{
    char key[200], p[256];
    int rc = jsonconf_check_keys(obj, allowed, key, sizeof(key));

    if (rc == -1)
        return dt_fail(cx, jpath, "expected an object, got %s", jsonconf_type_name(obj));
    if (rc == 1) {
        snprintf(p, sizeof(p), "%s.%s", jpath, key);
        return dt_fail(cx, p, "unknown key");
    }
    return 0;
}

/* A string value without NUL bytes; *out borrowed from the JSON (NULL: absent). */
static int dt_get_string(struct dt_vctx *vx, json_t *obj, const char *jpath, const char *key,
                         const char **out)
{
    json_t *v = json_object_get(obj, key);
    char p[256];

    *out = NULL;
    if (v == NULL)
        return 0;
    snprintf(p, sizeof(p), "%s.%s", jpath, key);
    if (!json_is_string(v))
        return dt_fail(vx, p, "expected a string, got %s", jsonconf_type_name(v));
    if (json_string_length(v) != strlen(json_string_value(v)))
        return dt_fail(vx, p, "string contains a NUL byte");
    if (json_string_length(v) == 0)
        return dt_fail(vx, p, "expected a non-empty string");
    *out = json_string_value(v);
    return 0;
}

/* "500ms", "10s", "2m", "1h", "7d" or a number of seconds -> ms. */
static int dt_duration_parse(const json_t *v, uint64_t *ms)
{
    const char *s;
    size_t n;
    uint64_t days = 0;

    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0 || json_integer_value(v) > 1000000000)
            return -1;
        *ms = (uint64_t)json_integer_value(v) * 1000;
        return 0;
    }
    if (!json_is_string(v))
        return -1;
    s = json_string_value(v);
    n = strlen(s);
    if (n >= 2 && s[n - 1] == 'd') {
        size_t i;
        for (i = 0; i + 1 < n; i++) {
            if (s[i] < '0' || s[i] > '9' || days > 100000)
                return -1;
            days = days * 10 + (uint64_t)(s[i] - '0');
        }
        *ms = days * 86400 * 1000;
        return 0;
    }
    return conf_duration_parse(s, ms);
}

static int dt_get_duration(struct dt_vctx *vx, json_t *obj, const char *jpath, const char *key,
                           uint64_t min, uint64_t max, uint64_t def, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    char p[256];
    uint64_t ms;

    *out = def;
    if (v == NULL)
        return 0;
    snprintf(p, sizeof(p), "%s.%s", jpath, key);
    if (dt_duration_parse(v, &ms) == -1) {
        if (json_is_string(v))
            return dt_fail(vx, p,
                           "expected a duration like \"10s\", \"30m\", \"1h\", \"7d\" or a "
                           "number of seconds, got \"%s\"",
                           json_string_value(v));
        return dt_fail(vx, p, "expected a duration (string or seconds), got %s",
                       jsonconf_type_name(v));
    }
    if (ms < min || ms > max)
        return dt_fail(vx, p, "expected a duration from %llus to %llus, got %llus",
                       (unsigned long long)(min / 1000), (unsigned long long)(max / 1000),
                       (unsigned long long)(ms / 1000));
    *out = ms;
    return 0;
}

static char *dt_path_resolve(const char *basedir, const char *p)
{
    char *out;
    size_t n;

    if (p[0] == '/' || basedir == NULL || basedir[0] == '\0')
        return strdup(p);
    n = strlen(basedir) + strlen(p) + 2;
    out = malloc(n);
    if (out != NULL)
        snprintf(out, n, "%s/%s", basedir, p);
    return out;
}

/* A file: resolved, a readable regular file; secret: private to its owner. */
static int dt_get_file(struct dt_vctx *vx, json_t *obj, const char *jpath, const char *key,
                       int secret, char **out)
{
    const char *raw;
    char p[256];
    struct stat st;

    *out = NULL;
    if (dt_get_string(vx, obj, jpath, key, &raw) == -1)
        return -1;
    if (raw == NULL)
        return 0;
    snprintf(p, sizeof(p), "%s.%s", jpath, key);
    *out = dt_path_resolve(vx->basedir, raw);
    if (*out == NULL)
        return dt_fail(vx, p, "out of memory");
    if (stat(*out, &st) == -1)
        return dt_fail(vx, p, "cannot read \"%s\": %s", *out, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return dt_fail(vx, p, "\"%s\" is not a regular file", *out);
    if (access(*out, R_OK) == -1)
        return dt_fail(vx, p, "cannot read \"%s\": %s", *out, strerror(errno));
    if (secret && (st.st_mode & 077))
        return dt_fail(vx, p,
                       "\"%s\" holds a secret and must not be accessible by group or others "
                       "(chmod 600)",
                       *out);
    return 0;
}

static void dt_settings_free(struct dt_settings *s)
{
    free(s->file);
    free(s->url);
    free(s->ca);
    free(s->client_cert);
    free(s->client_key);
    free(s->token_file);
    score_config_unref(s->score);
    memset(s, 0, sizeof(*s));
}

static int dt_parse_inventory(struct dt_vctx *vx, json_t *inv, struct dt_settings *s)
{
    static const char *const keys[] = {
        "file",      "url",         "poll",       "timeout",
        "ca",        "client_cert", "client_key", "bearer_token_file",
        "max_stale", "allow_empty", "format",     NULL};
    static const char *const url_only[] = {"poll",       "timeout",           "ca", "client_cert",
                                           "client_key", "bearer_token_file", NULL};
    const char *jpath = "$.device_trust.inventory";
    const char *url = NULL, *fmt = NULL;
    json_t *v;
    uint64_t ms;
    char p[256];
    size_t i;

    if (dt_check_keys(vx, jpath, inv, keys) == -1)
        return -1;
    if ((json_object_get(inv, "file") != NULL) == (json_object_get(inv, "url") != NULL))
        return dt_fail(vx, jpath, "expected exactly one of \"file\" or \"url\"");
    if (json_object_get(inv, "file") != NULL) {
        s->kind = DT_SRC_FILE;
        if (dt_get_file(vx, inv, jpath, "file", 0, &s->file) == -1)
            return -1;
        for (i = 0; url_only[i] != NULL; i++) {
            if (json_object_get(inv, url_only[i]) != NULL) {
                snprintf(p, sizeof(p), "%s.%s", jpath, url_only[i]);
                return dt_fail(vx, p, "only with \"url\", not with \"file\"");
            }
        }
    } else {
        s->kind = DT_SRC_URL;
        if (dt_get_string(vx, inv, jpath, "url", &url) == -1)
            return -1;
        snprintf(p, sizeof(p), "%s.url", jpath);
        if (url == NULL)
            return dt_fail(vx, p, "expected a string");
        if ((strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0) ||
            strlen(url) > 2048)
            return dt_fail(vx, p, "expected an http:// or https:// URL of at most 2048 bytes");
        for (i = 0; url[i] != '\0'; i++) {
            if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
                return dt_fail(vx, p, "the URL contains a space or a control character");
        }
        s->url = strdup(url);
        if (s->url == NULL)
            return dt_fail(vx, p, "out of memory");
        if (dt_get_duration(vx, inv, jpath, "poll", 1000, 86400 * 1000ULL, 30000, &s->poll_ms) ==
                -1 ||
            dt_get_duration(vx, inv, jpath, "timeout", 1000, 600 * 1000ULL, 10000,
                            &s->timeout_ms) == -1 ||
            dt_get_file(vx, inv, jpath, "ca", 0, &s->ca) == -1 ||
            dt_get_file(vx, inv, jpath, "client_cert", 0, &s->client_cert) == -1 ||
            dt_get_file(vx, inv, jpath, "client_key", 1, &s->client_key) == -1 ||
            dt_get_file(vx, inv, jpath, "bearer_token_file", 1, &s->token_file) == -1)
            return -1;
        if ((s->client_cert == NULL) != (s->client_key == NULL)) {
            int nocert = s->client_cert == NULL;
            snprintf(p, sizeof(p), "%s.%s", jpath, nocert ? "client_cert" : "client_key");
            return dt_fail(vx, p, "required with \"%s\"", nocert ? "client_key" : "client_cert");
        }
        if (strncmp(url, "http://", 7) == 0 && (s->token_file != NULL || s->client_cert != NULL)) {
            snprintf(p, sizeof(p), "%s.%s", jpath,
                     s->token_file != NULL ? "bearer_token_file" : "client_cert");
            return dt_fail(vx, p, "needs an https:// url (credentials would travel in clear)");
        }
    }
    if (dt_get_duration(vx, inv, jpath, "max_stale", 1000, 365 * 86400 * 1000ULL, 86400 * 1000ULL,
                        &ms) == -1)
        return -1;
    s->max_stale_s = (int64_t)(ms / 1000);
    v = json_object_get(inv, "allow_empty");
    if (v != NULL && !json_is_boolean(v)) {
        snprintf(p, sizeof(p), "%s.allow_empty", jpath);
        return dt_fail(vx, p, "expected true or false, got %s", jsonconf_type_name(v));
    }
    s->allow_empty = v != NULL && json_is_true(v);
    if (dt_get_string(vx, inv, jpath, "format", &fmt) == -1)
        return -1;
    if (fmt == NULL || strcmp(fmt, "auto") == 0) {
        s->format = DT_FORMAT_AUTO;
    } else if (strcmp(fmt, "json") == 0) {
        s->format = DT_FORMAT_JSON;
    } else if (strcmp(fmt, "ndjson") == 0) {
        s->format = DT_FORMAT_NDJSON;
    } else {
        snprintf(p, sizeof(p), "%s.format", jpath);
        return dt_fail(vx, p, "expected \"auto\", \"json\" or \"ndjson\", got \"%s\"", fmt);
    }
    return 0;
}

/* Parse and check the whole section into s (zeroed first). 0, or -1 + err. */
static int dt_settings_parse(const struct conf *c, struct dt_settings *s, char *err, size_t errlen)
{
    static const char *const keys[] = {"inventory", "scoring", "posture", NULL};
    static const char *const pkeys[] = {"rate_limit_per_minute", NULL};
    struct dt_vctx vx = {c->path != NULL ? c->path : "config", c->basedir, err, errlen, 0};
    json_t *dt = c->device_trust, *o, *v;

    memset(s, 0, sizeof(*s));
    s->rate_per_min = 6;
    s->max_stale_s = 86400;
    if (dt != NULL) {
        if (dt_check_keys(&vx, "$.device_trust", dt, keys) == -1)
            goto err;
        o = json_object_get(dt, "inventory");
        if (o != NULL && dt_parse_inventory(&vx, o, s) == -1)
            goto err;
        o = json_object_get(dt, "posture");
        if (o != NULL) {
            if (dt_check_keys(&vx, "$.device_trust.posture", o, pkeys) == -1)
                goto err;
            v = json_object_get(o, "rate_limit_per_minute");
            if (v != NULL) {
                if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                    json_integer_value(v) > 600) {
                    dt_fail(&vx, "$.device_trust.posture.rate_limit_per_minute",
                            "expected an integer 1..600");
                    goto err;
                }
                s->rate_per_min = (int)json_integer_value(v);
            }
        }
    }
    if (score_config_from_json(dt != NULL ? json_object_get(dt, "scoring") : NULL, vx.name,
                               "$.device_trust.scoring", &s->score, err, errlen) == -1)
        goto err;
    return 0;
err:
    dt_settings_free(s);
    return -1;
}

static int dt_streq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

/* Same source: nothing to restart on reload. */
static int dt_source_same(const struct dt_settings *a, const struct dt_settings *b)
{
    return a->kind == b->kind && dt_streq(a->file, b->file) && dt_streq(a->url, b->url) &&
           dt_streq(a->ca, b->ca) && dt_streq(a->client_cert, b->client_cert) &&
           dt_streq(a->client_key, b->client_key) && dt_streq(a->token_file, b->token_file) &&
           a->poll_ms == b->poll_ms && a->timeout_ms == b->timeout_ms;
}

/* ---- published state ---------------------------------------------------- */

static pthread_mutex_t pub_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct inventory *pub_inv;      /* last good snapshot, or NULL */
static struct score_config *pub_score; /* never NULL while started */
static int pub_configured;             /* a feed source is configured */
static int64_t pub_fresh_at;           /* when the live data was last confirmed */
static int64_t pub_max_stale;          /* seconds */
/* Bumped (under pub_mtx) whenever pub_inv, pub_score, pub_configured or
 * pub_max_stale change: workers keep their own references and take pub_mtx
 * only when it moved (see dt_thread_snapshot()). */
static uint64_t pub_epoch;
static void dt_thread_drop(void);
static unsigned pub_flags; /* INVENTORY_ALLOW_EMPTY */
static enum dt_format pub_format;
static uint64_t pub_gen; /* bumped when the source changes: late loads are dropped */
/* status, also under pub_mtx */
static uint64_t st_ok, st_unchanged, st_refused, st_fetch_err;
static char st_error[DEVTRUST_ERR_MAX];

static _Atomic int dt_started;
static _Atomic int dt_rate = 6;
static _Atomic uint64_t ct_accepted, ct_refused, ct_limited, ct_unavailable, ct_persist_err;

static size_t dt_count(const struct inventory *inv)
{
    return inv != NULL ? inventory_count(inv) : 0;
}

static int64_t dt_now(void)
{
    return (int64_t)time(NULL);
}

/* A fetch error (the feed could not be read at all): counted and kept. */
static void dt_fetch_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void dt_fetch_error(const char *fmt, ...)
{
    char buf[sizeof(st_error)];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&pub_mtx);
    st_fetch_err++;
    memcpy(st_error, buf, sizeof(st_error));
    pthread_mutex_unlock(&pub_mtx);
    log_warnx("device trust: %s; keeping the last good inventory", buf);
}

/* ---- the per-device store: posture, grace, override, rate limit -------- */

struct dt_entry {
    struct dt_entry *next;
    uint64_t hash;
    int has_posture;
    struct posture posture;
    struct score_grace grace;
    enum inventory_status override;
    int bucket_init;
    double tokens; /* rate limit: token bucket */
    int64_t tokens_at;
    uint64_t seq; /* dt_touch(): changes with posture, grace or override */
    char id[DEVICE_ID_MAX + 1];
};

struct dt_shard {
    pthread_mutex_t mtx;
    struct dt_entry **tab;
    size_t cap; /* power of two */
    size_t n;
};

static struct dt_shard shards[DT_SHARDS];
static _Atomic size_t store_n;
static uint64_t hash_seed;
static _Atomic uint64_t dt_seq; /* never reset: a seq is never reused */

/* e (shard locked) changed: its posture, grace or override. The workers'
 * verdict caches key on e->seq (dt_evaluate()). */
static void dt_touch(struct dt_entry *e)
{
    e->seq = atomic_fetch_add(&dt_seq, 1) + 1;
}

static uint64_t dt_hash(const char *id)
{
    uint64_t h = 1469598103934665603ULL ^ hash_seed;

    while (*id != '\0') {
        h ^= (unsigned char)*id++;
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static struct dt_shard *dt_shard_of(uint64_t h)
{
    return &shards[h & (DT_SHARDS - 1)];
}

static int dt_id_valid(const char *id)
{
    size_t i;

    if (id == NULL || id[0] == '\0')
        return 0;
    for (i = 0; id[i] != '\0'; i++) {
        unsigned char c = (unsigned char)id[i];
        if (i >= DEVICE_ID_MAX)
            return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* The characters dt_id_valid() allows, as a table for the per-request scan. */
static const unsigned char dt_id_chars[256] = {
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1,
    ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1,
    ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['.'] = 1, ['_'] = 1,
    [':'] = 1, ['-'] = 1,
};

/*
 * dt_id_valid() and dt_hash() in one pass, per request: 1 with *len and
 * *hash set, or 0 (invalid id).
 */
static int dt_id_scan(const char *id, size_t *len, uint64_t *hash)
{
    uint64_t h = 1469598103934665603ULL ^ hash_seed;
    size_t i;

    if (id == NULL || id[0] == '\0')
        return 0;
    for (i = 0; id[i] != '\0'; i++) {
        unsigned char c = (unsigned char)id[i];
        if (i >= DEVICE_ID_MAX || !dt_id_chars[c])
            return 0;
        h ^= c;
        h *= 1099511628211ULL;
    }
    *len = i;
    *hash = h ^ (h >> 29);
    return 1;
}

/* Find id in its (locked) shard; create it if asked and the store has room. */
static struct dt_entry *dt_find(struct dt_shard *sh, const char *id, uint64_t h, int create)
{
    struct dt_entry *e;
    size_t b;

    if (sh->tab != NULL) {
        b = (size_t)(h >> 6) & (sh->cap - 1);
        for (e = sh->tab[b]; e != NULL; e = e->next) {
            if (e->hash == h && strcmp(e->id, id) == 0)
                return e;
        }
    }
    if (!create)
        return NULL;
    if (sh->n + 1 > sh->cap - sh->cap / 4 || sh->tab == NULL) {
        size_t ncap = sh->tab == NULL ? 64 : sh->cap * 2, i;
        struct dt_entry **nt = calloc(ncap, sizeof(*nt));
        if (nt == NULL)
            return NULL;
        for (i = 0; i < sh->cap; i++) {
            while ((e = sh->tab[i]) != NULL) {
                sh->tab[i] = e->next;
                b = (size_t)(e->hash >> 6) & (ncap - 1);
                e->next = nt[b];
                nt[b] = e;
            }
        }
        free(sh->tab);
        sh->tab = nt;
        sh->cap = ncap;
    }
    if (atomic_fetch_add(&store_n, 1) >= DEVTRUST_MAX_DEVICES) {
        atomic_fetch_sub(&store_n, 1);
        return NULL;
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        atomic_fetch_sub(&store_n, 1);
        return NULL;
    }
    e->hash = h;
    snprintf(e->id, sizeof(e->id), "%s", id);
    score_grace_init(&e->grace);
    b = (size_t)(h >> 6) & (sh->cap - 1);
    e->next = sh->tab[b];
    sh->tab[b] = e;
    sh->n++;
    return e;
}

static void dt_store_init(void)
{
    size_t i;

    for (i = 0; i < DT_SHARDS; i++) {
        memset(&shards[i], 0, sizeof(shards[i]));
        pthread_mutex_init(&shards[i].mtx, NULL);
    }
    atomic_store(&store_n, 0);
    if (RAND_bytes((unsigned char *)&hash_seed, sizeof(hash_seed)) != 1)
        hash_seed = (uint64_t)time(NULL) ^ (uint64_t)getpid();
}

static void dt_store_free(void)
{
    struct dt_entry *e;
    size_t i, b;

    for (i = 0; i < DT_SHARDS; i++) {
        for (b = 0; b < shards[i].cap; b++) {
            while ((e = shards[i].tab[b]) != NULL) {
                shards[i].tab[b] = e->next;
                free(e);
            }
        }
        free(shards[i].tab);
        pthread_mutex_destroy(&shards[i].mtx);
        memset(&shards[i], 0, sizeof(shards[i]));
    }
    atomic_store(&store_n, 0);
}

/* ---- the writer thread: posture.log and overrides.json ------------------ */

struct dt_wjob {
    struct dt_wjob *next;
    devtrust_persisted_cb cb; /* NULL: nobody waits for this line */
    void *cb_arg;
    size_t len;
    char line[]; /* ends with '\n' */
};

static pthread_mutex_t w_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t w_cond = PTHREAD_COND_INITIALIZER;
static struct dt_wjob *w_head, *w_tail;
static size_t w_queued;
static int w_overrides; /* rewrite overrides.json (from memory): coalesced, never fails */
static int w_stop, w_running;
static pthread_t w_thread;
/* Below: set at start, then the writer thread's alone. */
static char *w_dir;          /* state_dir; NULL: no persistence */
static int w_fd = -1;        /* posture.log, O_APPEND */
static off_t w_size;         /* bytes known to be good in posture.log */
static off_t w_compact_size; /* compact when w_size grows beyond this */

/* Ask the writer to rewrite overrides.json. Any thread. */
static void dt_persist_overrides(void)
{
    if (w_dir == NULL)
        return;
    pthread_mutex_lock(&w_mtx);
    w_overrides = 1;
    pthread_cond_signal(&w_cond);
    pthread_mutex_unlock(&w_mtx);
}

/*
 * Queue a line for posture.log. Any thread; may be called with a shard
 * mutex held. 0, or -1 when the queue is full (the caller decides what that
 * means). No persistence configured: 0 (cb is not called). When cb is set
 * and 0 is returned, the writer calls cb(cb_arg, ok) once the line is on
 * disk (fsync'd: ok 1) or could not be written (ok 0).
 */
static int dt_persist_cb(const char *line, size_t len, devtrust_persisted_cb cb, void *cb_arg)
{
    struct dt_wjob *j;
    int rc = -1;

    if (w_dir == NULL)
        return 0;
    j = malloc(sizeof(*j) + len + 1);
    if (j == NULL)
        return -1;
    j->next = NULL;
    j->cb = cb;
    j->cb_arg = cb_arg;
    j->len = len;
    memcpy(j->line, line, len);
    j->line[len] = '\0';
    pthread_mutex_lock(&w_mtx);
    if (w_queued < DT_WQUEUE_MAX && !w_stop) {
        if (w_tail != NULL)
            w_tail->next = j;
        else
            w_head = j;
        w_tail = j;
        w_queued++;
        pthread_cond_signal(&w_cond);
        j = NULL;
        rc = 0;
    }
    pthread_mutex_unlock(&w_mtx);
    free(j);
    return rc;
}

static int dt_persist(const char *line, size_t len)
{
    return dt_persist_cb(line, len, NULL, NULL);
}

static int dt_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc;

    if (fd == -1)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

/* Write a whole file atomically: tmp, fsync, rename, fsync the directory. */
static int dt_write_atomic(const char *dir, const char *name, const char *data, size_t len)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    int fd, rc = -1;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1)
        return -1;
    if (fileio_write_all(fd, data, len) == 0 && fsync(fd) == 0)
        rc = 0;
    if (close(fd) == -1)
        rc = -1;
    if (rc == 0 && rename(tmp, path) == -1)
        rc = -1;
    if (rc == 0)
        rc = dt_fsync_dir(dir);
    if (rc == -1)
        unlink(tmp);
    return rc;
}

/* A growable byte buffer with a hard maximum. */
struct dt_buf {
    char *p;
    size_t len, cap, max;
};

static int dt_buf_add(struct dt_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 4096;
        char *np;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        if (ncap > b->max)
            return -1;
        np = realloc(b->p, ncap);
        if (np == NULL)
            return -1;
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* The posture.log lines of one entry (shard locked). */
static int dt_entry_lines(const struct dt_entry *e, struct dt_buf *b)
{
    char line[POSTURE_JSON_MAX + 1], g[SCORE_GRACE_JSON_MAX];
    int n;

    if (e->has_posture) {
        n = posture_to_json(&e->posture, line, sizeof(line) - 1);
        if (n < 0)
            return -1;
        line[n++] = '\n';
        if (dt_buf_add(b, line, (size_t)n) == -1)
            return -1;
    }
    if (e->grace.n > 0) {
        if (score_grace_to_json(&e->grace, g, sizeof(g)) < 0)
            return -1;
        n = snprintf(line, sizeof(line), DT_GRACE_PREFIX "%s\",\"grace\":%s}\n", e->id, g);
        if (n < 0 || (size_t)n >= sizeof(line) || dt_buf_add(b, line, (size_t)n) == -1)
            return -1;
    }
    return 0;
}

/*
 * Rewrite posture.log from memory: the latest report and grace state per
 * device, nothing else. Runs at start (before the writer) and on the writer
 * thread. Lines queued meanwhile are appended after it: at worst a duplicate
 * of what the compaction already wrote.
 */
static int dt_compact(void)
{
    struct dt_buf b = {NULL, 0, 0, (size_t)1 << 34};
    char path[PATH_MAX];
    struct dt_entry *e;
    size_t i, k;
    int rc = -1, fd;

    for (i = 0; i < DT_SHARDS; i++) {
        pthread_mutex_lock(&shards[i].mtx);
        for (k = 0; k < shards[i].cap; k++) {
            for (e = shards[i].tab[k]; e != NULL; e = e->next) {
                if (dt_entry_lines(e, &b) == -1) {
                    pthread_mutex_unlock(&shards[i].mtx);
                    goto out;
                }
            }
        }
        pthread_mutex_unlock(&shards[i].mtx);
    }
    if (dt_write_atomic(w_dir, "posture.log", b.p != NULL ? b.p : "", b.len) == -1)
        goto out;
    snprintf(path, sizeof(path), "%s/posture.log", w_dir);
    fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd == -1)
        goto out;
    if (w_fd != -1)
        close(w_fd);
    w_fd = fd;
    w_size = (off_t)b.len;
    w_compact_size =
        (off_t)b.len * 2 > (off_t)DT_COMPACT_MIN ? (off_t)b.len * 2 : (off_t)DT_COMPACT_MIN;
    rc = 0;
out:
    free(b.p);
    return rc;
}

/* Serialises writers of overrides.json: the writer thread and
 * devtrust_set_override_sync() (same temporary file). */
static pthread_mutex_t ov_mtx = PTHREAD_MUTEX_INITIALIZER;

static int dt_overrides_write_locked(void);

static int dt_overrides_write(void)
{
    int rc;

    pthread_mutex_lock(&ov_mtx);
    rc = dt_overrides_write_locked();
    pthread_mutex_unlock(&ov_mtx);
    return rc;
}

static int dt_overrides_write_locked(void)
{
    json_t *o = json_object();
    struct dt_entry *e;
    char *text = NULL;
    size_t i, k;
    int rc = -1;

    if (o == NULL)
        return -1;
    for (i = 0; i < DT_SHARDS; i++) {
        pthread_mutex_lock(&shards[i].mtx);
        for (k = 0; k < shards[i].cap; k++) {
            for (e = shards[i].tab[k]; e != NULL; e = e->next) {
                if (e->override != INVENTORY_STATUS_NONE)
                    json_object_set_new(o, e->id, json_string(inventory_status_name(e->override)));
            }
        }
        pthread_mutex_unlock(&shards[i].mtx);
    }
    text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    if (text != NULL)
        rc = dt_write_atomic(w_dir, "overrides.json", text, strlen(text));
    free(text);
    json_decref(o);
    return rc;
}

static void dt_persist_failed(const char *what)
{
    atomic_fetch_add(&ct_persist_err, 1);
    log_warn("device trust: %s/%s: cannot write (state kept in memory, retried on the next write)",
             w_dir, what);
}

static void *dt_writer_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct dt_wjob *list, *j, *waiting = NULL;
        int wrote = 0, overrides = 0, failed = 0;

        pthread_mutex_lock(&w_mtx);
        while (w_head == NULL && !w_overrides && !w_stop)
            pthread_cond_wait(&w_cond, &w_mtx);
        list = w_head;
        w_head = w_tail = NULL;
        w_queued = 0;
        overrides = w_overrides;
        w_overrides = 0;
        pthread_mutex_unlock(&w_mtx);
        if (list == NULL && !overrides)
            break; /* stopping, and everything is written */
        if (list != NULL && w_fd == -1 && dt_compact() == -1)
            failed = 1; /* an earlier failure closed it: start over from memory */
        while ((j = list) != NULL) {
            list = j->next;
            if (!failed) {
                if (fileio_write_all(w_fd, j->line, j->len) == -1) {
                    failed = 1;
                } else {
                    w_size += (off_t)j->len;
                    wrote = 1;
                }
            }
            if (j->cb != NULL) {
                j->next = waiting; /* answered once the batch is fsync'd */
                waiting = j;
            } else {
                free(j);
            }
        }
        if (!failed && wrote && fsync(w_fd) == -1)
            failed = 1;
        /* Only now may a report be acknowledged: written and fsync'd. A
         * report of a failed batch is refused, even if its line made it
         * to the file: never acknowledged and then lost. */
        while ((j = waiting) != NULL) {
            waiting = j->next;
            atomic_fetch_add(failed ? &ct_unavailable : &ct_accepted, 1);
            j->cb(j->cb_arg, !failed);
            free(j);
        }
        if (failed) {
            /* Memory has it all: drop the file's tail, rewrite it next time. */
            dt_persist_failed("posture.log");
            if (w_fd != -1) {
                if (ftruncate(w_fd, w_size) == -1)
                    log_warn("device trust: posture.log: truncate");
                close(w_fd);
                w_fd = -1;
            }
        } else if (w_size > w_compact_size && dt_compact() == -1) {
            dt_persist_failed("posture.log (compaction)");
        }
        if (overrides && dt_overrides_write() == -1)
            dt_persist_failed("overrides.json");
    }
    return NULL;
}

/* ---- loading the state directory at start ------------------------------- */

/* Read a whole file (at most max bytes) into a NUL-terminated buffer.
 * 0; 1 if it does not exist; -1 with errno. */
static int dt_read_file(const char *path, size_t max, char **out, size_t *outlen,
                        struct stat *stout)
{
    struct stat st;
    char *buf = NULL;
    size_t len = 0, cap;
    int fd, saved;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return errno == ENOENT ? 1 : -1;
    if (fstat(fd, &st) == -1)
        goto err;
    if (!S_ISREG(st.st_mode)) {
        errno = EINVAL;
        goto err;
    }
    if ((uint64_t)st.st_size > max) {
        errno = EFBIG;
        goto err;
    }
    cap = (size_t)st.st_size + 1;
    buf = malloc(cap + 1);
    if (buf == NULL)
        goto err;
    for (;;) {
        ssize_t n;
        if (len == cap) {
            /* It grew while we read: take up to max. */
            char *nb;
            if (cap > max) {
                errno = EFBIG;
                goto err;
            }
            cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            nb = realloc(buf, cap + 1);
            if (nb == NULL)
                goto err;
            buf = nb;
        }
        n = read(fd, buf + len, cap - len);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            goto err;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    if (stout != NULL)
        *stout = st;
    return 0;
err:
    saved = errno;
    close(fd);
    free(buf);
    errno = saved;
    return -1;
}

static int dt_load_grace_line(const char *line, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root, *id, *g;
    struct score_grace grace;
    struct dt_entry *e;
    struct dt_shard *sh;
    char *text = NULL;
    uint64_t h;
    int rc = -1;

    root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(err, errlen, "JSON syntax error: %s", jerr.text);
        return -1;
    }
    id = json_object_get(root, "grace_device");
    g = json_object_get(root, "grace");
    if (!json_is_string(id) || !dt_id_valid(json_string_value(id)) || !json_is_object(g)) {
        snprintf(err, errlen, "expected {\"grace_device\": id, \"grace\": {...}}");
        goto out;
    }
    text = json_dumps(g, JSON_COMPACT);
    if (text == NULL || score_grace_from_json(text, strlen(text), &grace, err, errlen) == -1)
        goto out;
    h = dt_hash(json_string_value(id));
    sh = dt_shard_of(h);
    pthread_mutex_lock(&sh->mtx);
    e = dt_find(sh, json_string_value(id), h, 1);
    if (e != NULL) {
        e->grace = grace;
        dt_touch(e);
    }
    pthread_mutex_unlock(&sh->mtx);
    if (e == NULL)
        snprintf(err, errlen, "the device store is full");
    else
        rc = 0;
out:
    free(text);
    json_decref(root);
    return rc;
}

static int dt_load_posture_line(const char *line, size_t len, char *err, size_t errlen)
{
    struct posture p;
    struct dt_entry *e;
    struct dt_shard *sh;
    uint64_t h;

    if (posture_from_json(line, len, &p, err, errlen) == -1)
        return -1;
    if (!p.has_device_id || !dt_id_valid(p.device_id)) {
        snprintf(err, errlen, "no device_id");
        return -1;
    }
    h = dt_hash(p.device_id);
    sh = dt_shard_of(h);
    pthread_mutex_lock(&sh->mtx);
    e = dt_find(sh, p.device_id, h, 1);
    if (e != NULL) {
        e->posture = p;
        e->has_posture = 1;
        dt_touch(e);
    }
    pthread_mutex_unlock(&sh->mtx);
    if (e == NULL) {
        snprintf(err, errlen, "the device store is full");
        return -1;
    }
    return 0;
}

/*
 * posture.log: one line per report or grace change, latest wins. A last line
 * without its newline is what a crash mid-append leaves: ignored (the
 * compaction that follows drops it). Any other bad line is skipped and
 * logged: a damaged line must not keep the proxy from starting.
 */
static int dt_state_load(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX], lerr[DEVTRUST_ERR_MAX];
    char *buf = NULL, *line, *nl;
    size_t len = 0, lineno = 0, loaded = 0, bad = 0;
    json_t *ov = NULL;
    json_error_t jerr;
    int r;

    if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
        snprintf(err, errlen, "device trust: state_dir %s: %s", dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof(path), "%s/posture.log", dir);
    r = dt_read_file(path, (size_t)1 << 34, &buf, &len, NULL);
    if (r == -1) {
        snprintf(err, errlen, "device trust: %s: %s", path, strerror(errno));
        return -1;
    }
    for (line = buf; r == 0 && line < buf + len; line = nl + 1) {
        lineno++;
        nl = memchr(line, '\n', (size_t)(buf + len - line));
        if (nl == NULL) {
            log_warnx("device trust: %s:%zu: ignoring a truncated last line (%zu bytes)", path,
                      lineno, (size_t)(buf + len - line));
            break;
        }
        if (nl == line)
            continue;
        if ((size_t)(nl - line) > strlen(DT_GRACE_PREFIX) &&
            memcmp(line, DT_GRACE_PREFIX, strlen(DT_GRACE_PREFIX)) == 0)
            r = dt_load_grace_line(line, (size_t)(nl - line), lerr, sizeof(lerr));
        else
            r = dt_load_posture_line(line, (size_t)(nl - line), lerr, sizeof(lerr));
        if (r == -1) {
            log_warnx("device trust: %s:%zu: ignored: %s", path, lineno, lerr);
            bad++;
        } else {
            loaded++;
        }
        r = 0;
    }
    free(buf);

    snprintf(path, sizeof(path), "%s/overrides.json", dir);
    if (access(path, F_OK) == 0) {
        const char *id;
        json_t *v;

        ov = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (ov == NULL || !json_is_object(ov)) {
            /* Not starting beats silently forgetting that a laptop was stolen. */
            snprintf(err, errlen, "device trust: %s: %s", path,
                     ov == NULL ? jerr.text : "expected an object");
            json_decref(ov);
            return -1;
        }
        json_object_foreach(ov, id, v)
        {
            enum inventory_status s;
            struct dt_entry *e;
            uint64_t h = dt_hash(id);
            struct dt_shard *sh = dt_shard_of(h);

            if (!dt_id_valid(id) || !json_is_string(v) ||
                inventory_status_parse(json_string_value(v), &s) == -1) {
                snprintf(err, errlen, "device trust: %s: \"%s\": expected a device id and a status",
                         path, id);
                json_decref(ov);
                return -1;
            }
            pthread_mutex_lock(&sh->mtx);
            e = dt_find(sh, id, h, 1);
            if (e != NULL) {
                e->override = s;
                dt_touch(e);
            }
            pthread_mutex_unlock(&sh->mtx);
        }
        json_decref(ov);
    }
    if (dt_compact() == -1) {
        snprintf(err, errlen, "device trust: %s/posture.log: cannot write: %s", dir,
                 strerror(errno));
        return -1;
    }
    log_info("device trust: %s: %zu state lines loaded, %zu ignored, %zu devices", dir, loaded, bad,
             atomic_load(&store_n));
    return 0;
}

/* ---- the loader thread: read and parse feeds, publish snapshots ---------- */

enum dt_result {
    DT_LOAD_OK = 0,
    DT_LOAD_UNCHANGED,
    DT_LOAD_REFUSED,
    DT_LOAD_ERROR,
    DT_LOAD_DROPPED
};

struct dt_ljob {
    struct loader_job lj; /* first */
    struct dt_ljob *next; /* on l_done */
    uint64_t gen;
    enum dt_kind kind;
    char *path; /* DT_SRC_FILE */
    char *data; /* DT_SRC_URL: the body (owned) */
    size_t len;
    char *etag; /* the body's validators, kept by the source if it is good */
    char *last_modified;
    int64_t fetched_at; /* DT_SRC_URL: when the response arrived */
    enum dt_result result;
    char *url;      /* DT_SRC_URL: the feed's URL, for the feed cache */
    int from_cache; /* the body came from the feed cache (do not store it again) */
    int touch;      /* a 304: only renew the feed cache's fetched_at */
};

static pthread_mutex_t l_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct dt_ljob *l_done;   /* loaded, for the main loop (l_mtx) */
static struct loader *dt_loader; /* below the workers: a load must not delay requests */
static struct event *l_done_ev;  /* on the main loop: completions */

static void dt_ljob_free(struct dt_ljob *j)
{
    if (j == NULL)
        return;
    free(j->path);
    free(j->data);
    free(j->etag);
    free(j->last_modified);
    free(j->url);
    free(j);
}

/* Keep the last good URL feed in the state directory (loader thread or
 * start: blocking file I/O). A failure costs only the cache: logged. */
static void dt_cache_store(const struct dt_ljob *j, const char *data, size_t len, int same)
{
    char err[512];
    int r;

    if (w_dir == NULL || j->kind != DT_SRC_URL || j->url == NULL || j->from_cache)
        return;
    if (same || j->touch)
        r = feedcache_touch(w_dir, j->url, j->etag, j->last_modified, j->fetched_at, err,
                            sizeof(err));
    else
        r = feedcache_save(w_dir, j->url, j->etag, j->last_modified, j->fetched_at, data, len, err,
                           sizeof(err));
    if (r == -1)
        log_warnx("device trust: feed cache not updated: %s", err);
}

/* The format the config asks for, by the first non-space byte. */
static int dt_format_check(enum dt_format f, const char *data, size_t len, char *err, size_t errlen)
{
    size_t i = 0;

    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
        i++;
    if (i == len || f == DT_FORMAT_AUTO)
        return 0;
    if (f == DT_FORMAT_JSON && data[i] != '[') {
        snprintf(err, errlen, "inventory: $: expected a JSON array of records (format \"json\")");
        return -1;
    }
    if (f == DT_FORMAT_NDJSON && data[i] != '{') {
        snprintf(err, errlen,
                 "inventory: $: expected NDJSON, one record object per line "
                 "(format \"ndjson\")");
        return -1;
    }
    return 0;
}

/*
 * Read (for a file) and parse a feed, and publish it if it is good. Runs on
 * the loader thread, and once on the main thread at start. Never replaces
 * good data with bad: a refused feed only counts and logs.
 */
static void dt_load_run(struct dt_ljob *j)
{
    char err[DEVTRUST_ERR_MAX], hex[65];
    unsigned char hash[32], prevhash[32];
    unsigned int hlen = 0;
    struct inventory *prev = NULL, *inv = NULL, *old = NULL;
    const char *data;
    char *fbuf = NULL;
    size_t len;
    int64_t fresh_at, now = dt_now();
    size_t count;
    uint64_t version;
    unsigned flags;
    enum dt_format format;
    uint64_t gen;
    struct stat st;
    const char *what = j->kind == DT_SRC_FILE ? j->path
                       : j->from_cache        ? "url (feed cache)"
                                              : "url";

    if (j->touch) {
        dt_cache_store(j, NULL, 0, 1);
        j->result = DT_LOAD_UNCHANGED;
        return;
    }
    pthread_mutex_lock(&pub_mtx);
    gen = pub_gen;
    prev = inventory_ref(pub_inv);
    flags = pub_flags;
    format = pub_format;
    pthread_mutex_unlock(&pub_mtx);
    if (j->gen != gen) {
        j->result = DT_LOAD_DROPPED;
        goto out;
    }
    if (j->kind == DT_SRC_FILE) {
        int r = dt_read_file(j->path, INVENTORY_MAX_BYTES, &fbuf, &len, &st);
        if (r != 0) {
            dt_fetch_error("inventory %s: cannot read: %s", j->path,
                           r == 1 ? "no such file" : strerror(errno));
            j->result = DT_LOAD_ERROR;
            goto out;
        }
        data = fbuf;
        /* The file's age is the feed's age: an export that stopped shows. */
        fresh_at = st.st_mtime < now ? (int64_t)st.st_mtime : now;
    } else {
        data = j->data;
        len = j->len;
        fresh_at = j->fetched_at;
    }
    if (EVP_Digest(data, len, hash, &hlen, EVP_sha256(), NULL) != 1 || hlen != 32) {
        dt_fetch_error("inventory %s: cannot hash the feed", what);
        j->result = DT_LOAD_ERROR;
        goto out;
    }
    if (prev != NULL) {
        inventory_hash(prev, prevhash);
        if (memcmp(hash, prevhash, sizeof(hash)) == 0) {
            /* The same bytes again: only the freshness changes. */
            pthread_mutex_lock(&pub_mtx);
            if (j->gen == pub_gen) {
                if (fresh_at > pub_fresh_at)
                    __atomic_store_n(&pub_fresh_at, fresh_at, __ATOMIC_RELAXED);
                st_unchanged++;
                st_error[0] = '\0';
                j->result = DT_LOAD_UNCHANGED;
            } else {
                j->result = DT_LOAD_DROPPED;
            }
            pthread_mutex_unlock(&pub_mtx);
            if (j->result == DT_LOAD_UNCHANGED)
                dt_cache_store(j, data, len, 1);
            goto out;
        }
    }
    if (dt_format_check(format, data, len, err, sizeof(err)) == -1 ||
        inventory_parse(data, len, prev, flags, now, &inv, err, sizeof(err)) == -1) {
        pthread_mutex_lock(&pub_mtx);
        st_refused++;
        snprintf(st_error, sizeof(st_error), "%s", err);
        pthread_mutex_unlock(&pub_mtx);
        log_warnx("device trust: inventory %s refused, keeping the last good one (%zu devices): "
                  "%s",
                  what, dt_count(prev), err);
        j->result = DT_LOAD_REFUSED;
        goto out;
    }
    inventory_hash_hex(inv, hex);
    count = inventory_count(inv);
    version = inventory_version(inv);
    pthread_mutex_lock(&pub_mtx);
    if (j->gen == pub_gen) {
        old = pub_inv;
        pub_inv = inv;
        __atomic_store_n(&pub_fresh_at, fresh_at, __ATOMIC_RELAXED);
        __atomic_add_fetch(&pub_epoch, 1, __ATOMIC_RELEASE);
        st_ok++;
        st_error[0] = '\0';
        inv = NULL;
        j->result = DT_LOAD_OK;
    } else {
        j->result = DT_LOAD_DROPPED;
    }
    pthread_mutex_unlock(&pub_mtx);
    if (j->result == DT_LOAD_OK) {
        log_info("device trust: inventory %s loaded: %zu devices, version %llu, sha256 %.16s", what,
                 count, (unsigned long long)version, hex);
        dt_cache_store(j, data, len, 0);
    }
out:
    /* The old snapshot may be big: freed here, off the workers' loops. */
    inventory_unref(old);
    inventory_unref(inv);
    inventory_unref(prev);
    free(fbuf);
}

static void dt_loader_run(struct loader_job *lj)
{
    struct dt_ljob *j = (struct dt_ljob *)lj;

    dt_load_run(j);
    pthread_mutex_lock(&l_mtx);
    j->next = l_done;
    l_done = j;
    pthread_mutex_unlock(&l_mtx);
    event_active(l_done_ev, EV_READ, 0);
}

static void dt_loader_drop(struct loader_job *lj)
{
    dt_ljob_free((struct dt_ljob *)lj);
}

static void dt_loader_post(struct dt_ljob *j)
{
    if (dt_loader == NULL) {
        dt_ljob_free(j);
        return;
    }
    loader_post(dt_loader, &j->lj);
}

/* ---- the feed source, on the main loop ---------------------------------- */

struct dt_source {
    struct event_base *base;
    enum dt_kind kind;
    uint64_t gen;
    struct event *timer;
    int busy; /* a job is with the loader */
    /* file */
    char *file;
    struct stat seen; /* as last handed to the loader */
    int seen_ok;
    int missing; /* the stat error was logged */
    /* url */
    char *url, *ca, *client_cert, *client_key, *token_file;
    uint64_t poll_ms, timeout_ms;
    struct httpc *httpc;
    struct httpc_req *req;
    char *etag, *last_modified; /* validators of the last good body */
    unsigned attempt;           /* consecutive fetch errors */
    char *token;
    struct stat token_st;
};

static struct dt_source *src;
static struct event_base *dt_base;

static uint32_t dt_rand(void)
{
    uint32_t r;

    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        r = (uint32_t)rand();
    return r;
}

static void dt_source_free(struct dt_source *s)
{
    if (s == NULL)
        return;
    if (s->req != NULL)
        httpc_cancel(s->req);
    httpc_free(s->httpc);
    if (s->timer != NULL)
        event_free(s->timer);
    free(s->file);
    free(s->url);
    free(s->ca);
    free(s->client_cert);
    free(s->client_key);
    free(s->token_file);
    free(s->etag);
    free(s->last_modified);
    if (s->token != NULL) {
        OPENSSL_cleanse(s->token, strlen(s->token));
        free(s->token);
    }
    free(s);
}

static void dt_timer_in(struct dt_source *s, uint64_t ms)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    evtimer_add(s->timer, &tv);
}

static int dt_stat_same(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static struct dt_ljob *dt_ljob_file(struct dt_source *s)
{
    struct dt_ljob *j = calloc(1, sizeof(*j));

    if (j == NULL)
        return NULL;
    j->kind = DT_SRC_FILE;
    j->gen = s->gen;
    j->path = strdup(s->file);
    if (j->path == NULL) {
        free(j);
        return NULL;
    }
    return j;
}

/* Once a second: stat() is cheap; reading and parsing is the loader's. */
static void dt_file_tick(evutil_socket_t fd, short what, void *arg)
{
    struct dt_source *s = arg;
    struct dt_ljob *j;
    struct stat st;

    (void)fd;
    (void)what;
    if (s->busy)
        return;
    if (stat(s->file, &st) == -1) {
        if (!s->missing)
            dt_fetch_error("inventory %s: cannot stat: %s", s->file, strerror(errno));
        s->missing = 1;
        s->seen_ok = 0;
        return;
    }
    s->missing = 0;
    if (s->seen_ok && dt_stat_same(&st, &s->seen))
        return;
    j = dt_ljob_file(s);
    if (j == NULL)
        return;
    s->seen = st;
    s->seen_ok = 1;
    s->busy = 1;
    dt_loader_post(j);
}

static void dt_url_fetch(evutil_socket_t fd, short what, void *arg);

static void dt_url_retry(struct dt_source *s)
{
    uint64_t d;
    unsigned shift;

    s->attempt++;
    shift = s->attempt - 1 > 20 ? 20 : s->attempt - 1;
    d = (uint64_t)DT_RETRY_FIRST_MS << shift;
    if (d > s->poll_ms)
        d = s->poll_ms;
    /* Jitter: somewhere in [d/2, d], so replicas do not retry in step. */
    d = d / 2 + dt_rand() % (d / 2 + 1);
    dt_timer_in(s, d);
}

static void dt_url_next(struct dt_source *s)
{
    /* poll +-10%: replicas polling one MDM drift apart. */
    uint64_t spread = s->poll_ms / 5;

    dt_timer_in(s, s->poll_ms - s->poll_ms / 10 + (spread ? dt_rand() % (spread + 1) : 0));
}

/* The token file, re-read when it changes (tokens rotate). 0 or -1. */
static int dt_token_refresh(struct dt_source *s)
{
    struct stat st;
    char *buf = NULL;
    size_t len = 0, i;

    if (s->token_file == NULL)
        return 0;
    if (stat(s->token_file, &st) == -1) {
        dt_fetch_error("inventory url: bearer_token_file %s: %s", s->token_file, strerror(errno));
        return -1;
    }
    if (s->token != NULL && dt_stat_same(&st, &s->token_st))
        return 0;
    if (dt_read_file(s->token_file, DT_TOKEN_MAX, &buf, &len, NULL) != 0) {
        dt_fetch_error("inventory url: bearer_token_file %s: cannot read", s->token_file);
        return -1;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    for (i = 0; i < len; i++) {
        /* It goes into a header line: nothing that could end or split it. */
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f)
            break;
    }
    if (len == 0 || i != len) {
        OPENSSL_cleanse(buf, len);
        free(buf);
        dt_fetch_error("inventory url: bearer_token_file %s: expected one token of printable "
                       "characters",
                       s->token_file);
        return -1;
    }
    if (s->token != NULL) {
        OPENSSL_cleanse(s->token, strlen(s->token));
        free(s->token);
    }
    s->token = buf;
    s->token_st = st;
    return 0;
}

/* After a 304: the feed cache's age follows the confirmation (the file
 * write is the loader thread's). */
static void dt_url_touch_cache(struct dt_source *s)
{
    struct dt_ljob *j;

    if (w_dir == NULL)
        return;
    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return;
    j->kind = DT_SRC_URL;
    j->gen = s->gen;
    j->touch = 1;
    j->fetched_at = dt_now();
    j->url = strdup(s->url);
    if (j->url == NULL) {
        dt_ljob_free(j);
        return;
    }
    dt_loader_post(j);
}

static void dt_url_done(const struct httpc_response *r, void *arg)
{
    struct dt_source *s = arg;
    struct dt_ljob *j;
    int have;

    s->req = NULL;
    if (r->status == 200) {
        j = calloc(1, sizeof(*j));
        if (j != NULL) {
            j->kind = DT_SRC_URL;
            j->gen = s->gen;
            j->len = r->body_len;
            j->data = malloc(r->body_len + 1);
            j->etag = r->etag != NULL ? strdup(r->etag) : NULL;
            j->last_modified = r->last_modified != NULL ? strdup(r->last_modified) : NULL;
            j->fetched_at = dt_now();
            j->url = strdup(s->url); /* NULL: no caching of this body */
        }
        if (j == NULL || j->data == NULL) {
            dt_ljob_free(j);
            dt_fetch_error("inventory url: out of memory for a %zu byte feed", r->body_len);
            dt_url_retry(s);
            return;
        }
        memcpy(j->data, r->body, r->body_len);
        j->data[r->body_len] = '\0';
        s->busy = 1;
        dt_loader_post(j); /* the next poll is scheduled when it is parsed */
        return;
    }
    pthread_mutex_lock(&pub_mtx);
    have = pub_inv != NULL && s->gen == pub_gen;
    if (r->status == 304 && have && (s->etag != NULL || s->last_modified != NULL)) {
        /* The server says our copy is current: it is fresh. */
        __atomic_store_n(&pub_fresh_at, dt_now(), __ATOMIC_RELAXED);
        st_unchanged++;
        st_error[0] = '\0';
    }
    pthread_mutex_unlock(&pub_mtx);
    if (r->status == 304 && have && (s->etag != NULL || s->last_modified != NULL)) {
        s->attempt = 0;
        dt_url_next(s);
        dt_url_touch_cache(s);
        return;
    }
    if (r->status == 0)
        dt_fetch_error("inventory url %s: %s", s->url, r->error != NULL ? r->error : "failed");
    else
        dt_fetch_error("inventory url %s: HTTP %ld", s->url, r->status);
    dt_url_retry(s);
}

static void dt_url_fetch(evutil_socket_t fd, short what, void *arg)
{
    struct dt_source *s = arg;
    char inm[1100], ims[300], auth[DT_TOKEN_MAX + 32];
    const char *hdrs[5];
    struct httpc_opts o;
    size_t n = 0;

    (void)fd;
    (void)what;
    if (s->busy || s->req != NULL)
        return;
    if (dt_token_refresh(s) == -1) {
        dt_url_retry(s);
        return;
    }
    hdrs[n++] = "Accept: application/json, application/x-ndjson";
    if (s->etag != NULL && strlen(s->etag) < 1000) {
        snprintf(inm, sizeof(inm), "If-None-Match: %s", s->etag);
        hdrs[n++] = inm;
    }
    if (s->last_modified != NULL && strlen(s->last_modified) < 200) {
        snprintf(ims, sizeof(ims), "If-Modified-Since: %s", s->last_modified);
        hdrs[n++] = ims;
    }
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
    o.max_body = INVENTORY_MAX_BYTES;
    o.ca_file = s->ca;
    o.client_cert = s->client_cert;
    o.client_key = s->client_key;
    s->req = httpc_start(s->httpc, &o, dt_url_done, s);
    OPENSSL_cleanse(auth, sizeof(auth));
    if (s->req == NULL) {
        dt_fetch_error("inventory url %s: cannot start the request", s->url);
        dt_url_retry(s);
    }
}

/* A loader job came back (main loop). */
static void dt_source_loaded(struct dt_source *s, struct dt_ljob *j)
{
    s->busy = 0;
    if (s->kind != DT_SRC_URL)
        return;
    if (j->result == DT_LOAD_OK || j->result == DT_LOAD_UNCHANGED) {
        /* Only a body we accepted may be answered with 304 later. */
        free(s->etag);
        free(s->last_modified);
        s->etag = j->etag;
        s->last_modified = j->last_modified;
        j->etag = j->last_modified = NULL;
        s->attempt = 0;
    }
    /* A refused feed is retried at the normal pace: the bytes will not fix
     * themselves faster, and each refusal is logged and counted. */
    dt_url_next(s);
}

static void dt_done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dt_ljob *list, *j;

    (void)fd;
    (void)what;
    (void)arg;
    pthread_mutex_lock(&l_mtx);
    list = l_done;
    l_done = NULL;
    pthread_mutex_unlock(&l_mtx);
    while ((j = list) != NULL) {
        list = j->next;
        if (src != NULL && j->gen == src->gen && !j->touch)
            dt_source_loaded(src, j);
        dt_ljob_free(j);
    }
}

static char *dt_strdup_opt(const char *s, int *oom)
{
    char *d;

    if (s == NULL)
        return NULL;
    d = strdup(s);
    if (d == NULL)
        *oom = 1;
    return d;
}

/* A source for the settings; gen is the pub_gen its loads carry. */
static struct dt_source *dt_source_new(struct event_base *base, const struct dt_settings *set,
                                       uint64_t gen)
{
    struct dt_source *s = calloc(1, sizeof(*s));
    int oom = 0;

    if (s == NULL)
        return NULL;
    s->base = base;
    s->kind = set->kind;
    s->gen = gen;
    s->file = dt_strdup_opt(set->file, &oom);
    s->url = dt_strdup_opt(set->url, &oom);
    s->ca = dt_strdup_opt(set->ca, &oom);
    s->client_cert = dt_strdup_opt(set->client_cert, &oom);
    s->client_key = dt_strdup_opt(set->client_key, &oom);
    s->token_file = dt_strdup_opt(set->token_file, &oom);
    s->poll_ms = set->poll_ms;
    s->timeout_ms = set->timeout_ms;
    if (oom)
        goto err;
    if (s->kind == DT_SRC_FILE) {
        struct timeval sec = {1, 0};
        s->timer = event_new(base, -1, EV_PERSIST, dt_file_tick, s);
        if (s->timer == NULL || event_add(s->timer, &sec) == -1)
            goto err;
    } else if (s->kind == DT_SRC_URL) {
        s->httpc = httpc_new(base);
        s->timer = evtimer_new(base, dt_url_fetch, s);
        if (s->httpc == NULL || s->timer == NULL)
            goto err;
        dt_timer_in(s, 0);
    }
    return s;
err:
    dt_source_free(s);
    return NULL;
}

/* ---- public API --------------------------------------------------------- */

int devtrust_validate(const struct conf *c, char *err, size_t errlen)
{
    struct dt_settings s;

    if (dt_settings_parse(c, &s, err, errlen) == -1)
        return -1;
    dt_settings_free(&s);
    return 0;
}

static void dt_pub_apply(struct dt_settings *s)
{
    struct score_config *old;

    pthread_mutex_lock(&pub_mtx);
    old = pub_score;
    pub_score = s->score;
    s->score = NULL;
    pub_max_stale = s->max_stale_s;
    pub_flags = s->allow_empty ? INVENTORY_ALLOW_EMPTY : 0;
    pub_format = s->format;
    pub_configured = s->kind != DT_SRC_NONE;
    __atomic_add_fetch(&pub_epoch, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&pub_mtx);
    atomic_store(&dt_rate, s->rate_per_min);
    score_config_unref(old);
}

void devtrust_stop(void)
{
    struct dt_ljob *j;
    struct dt_wjob *w;

    dt_thread_drop();
    if (!atomic_load(&dt_started))
        return;
    atomic_store(&dt_started, 0);
    dt_source_free(src);
    src = NULL;

    loader_stop(dt_loader);
    dt_loader = NULL;
    while ((j = l_done) != NULL) {
        l_done = j->next;
        dt_ljob_free(j);
    }
    if (l_done_ev != NULL)
        event_free(l_done_ev);
    l_done_ev = NULL;

    /* The writer drains its queue before it exits: everything accepted is on disk. */
    pthread_mutex_lock(&w_mtx);
    w_stop = 1;
    pthread_cond_signal(&w_cond);
    pthread_mutex_unlock(&w_mtx);
    if (w_running)
        pthread_join(w_thread, NULL);
    w_running = 0;
    while ((w = w_head) != NULL) {
        w_head = w->next;
        free(w);
    }
    w_tail = NULL;
    w_queued = 0;
    w_overrides = 0;
    w_stop = 0;
    if (w_fd != -1)
        close(w_fd);
    w_fd = -1;
    free(w_dir);
    w_dir = NULL;

    dt_store_free();
    pthread_mutex_lock(&pub_mtx);
    inventory_unref(pub_inv);
    pub_inv = NULL;
    score_config_unref(pub_score);
    pub_score = NULL;
    pub_configured = 0;
    __atomic_store_n(&pub_fresh_at, 0, __ATOMIC_RELAXED);
    __atomic_add_fetch(&pub_epoch, 1, __ATOMIC_RELEASE);
    pub_gen++;
    pthread_mutex_unlock(&pub_mtx);
    dt_base = NULL;
}

/*
 * At start, before the first poll: publish the last good URL feed from the
 * feed cache, with the age of its original fetch (so max_stale still fails
 * closed). 1 if it was published (cm has its validators), else 0.
 */
static int dt_cache_load(const struct dt_settings *s, uint64_t gen, struct feedcache_meta *cm)
{
    char cerr[512];
    struct dt_ljob j;
    int r;

    if (w_dir == NULL)
        return 0;
    memset(&j, 0, sizeof(j));
    r = feedcache_load(w_dir, s->url, INVENTORY_MAX_BYTES, cm, &j.data, &j.len, cerr, sizeof(cerr));
    if (r == -1)
        log_warnx("device trust: feed cache not used: %s", cerr);
    if (r == 2)
        log_info("device trust: the feed cache is for another URL: not used");
    if (r != 0)
        return 0;
    j.kind = DT_SRC_URL;
    j.gen = gen;
    j.fetched_at = cm->fetched_at;
    j.from_cache = 1;
    dt_load_run(&j);
    free(j.data);
    if (j.result != DT_LOAD_OK)
        return 0;
    log_info("device trust: inventory from the feed cache, fetched %lld s ago; polling %s",
             (long long)(dt_now() - cm->fetched_at), s->url);
    return 1;
}

int devtrust_start(struct event_base *base, const struct conf *c, char *err, size_t errlen)
{
    struct dt_settings s;
    struct feedcache_meta cmeta;
    int cached = 0;
    uint64_t gen;

    if (atomic_load(&dt_started)) {
        snprintf(err, errlen, "device trust: already started");
        return -1;
    }
    if (dt_settings_parse(c, &s, err, errlen) == -1)
        return -1;
    dt_store_init();
    pthread_mutex_lock(&pub_mtx);
    st_ok = st_unchanged = st_refused = st_fetch_err = 0;
    st_error[0] = '\0';
    gen = ++pub_gen;
    pthread_mutex_unlock(&pub_mtx);
    atomic_store(&ct_accepted, 0);
    atomic_store(&ct_refused, 0);
    atomic_store(&ct_limited, 0);
    atomic_store(&ct_unavailable, 0);
    atomic_store(&ct_persist_err, 0);
    if (c->state_dir != NULL) {
        w_dir = strdup(c->state_dir);
        if (w_dir == NULL || dt_state_load(w_dir, err, errlen) == -1) {
            if (w_dir == NULL)
                snprintf(err, errlen, "device trust: out of memory");
            goto err;
        }
    }
    dt_pub_apply(&s);
    dt_base = base;
    l_done_ev = event_new(base, -1, 0, dt_done_cb, NULL);
    if (l_done_ev == NULL) {
        snprintf(err, errlen, "device trust: cannot create an event");
        goto err;
    }
    dt_loader = loader_start("device trust loader", dt_loader_run, dt_loader_drop);
    if (dt_loader == NULL) {
        snprintf(err, errlen, "device trust: cannot start the loader thread");
        goto err;
    }
    if (w_dir != NULL) {
        if (pthread_create(&w_thread, NULL, dt_writer_main, NULL) != 0) {
            snprintf(err, errlen, "device trust: cannot start the writer thread");
            goto err;
        }
        w_running = 1;
    }
    if (s.kind == DT_SRC_FILE) {
        /* Load now, so the first request sees the inventory. */
        struct dt_ljob j;
        memset(&j, 0, sizeof(j));
        j.kind = DT_SRC_FILE;
        j.gen = gen;
        j.path = s.file;
        dt_load_run(&j);
    }
    if (s.kind == DT_SRC_URL)
        cached = dt_cache_load(&s, gen, &cmeta);
    src = dt_source_new(base, &s, gen);
    if (src == NULL) {
        snprintf(err, errlen, "device trust: cannot start the inventory feed source");
        goto err;
    }
    if (cached) {
        /* The first poll revalidates the cached body (If-None-Match). */
        src->etag = cmeta.etag[0] ? strdup(cmeta.etag) : NULL;
        src->last_modified = cmeta.last_modified[0] ? strdup(cmeta.last_modified) : NULL;
    }
    if (s.kind == DT_SRC_FILE) {
        /* Whatever the first tick sees differently from this is a change. */
        if (stat(s.file, &src->seen) == 0)
            src->seen_ok = 1;
    }
    atomic_store(&dt_started, 1);
    dt_settings_free(&s);
    log_info("device trust: started (%s%s%s)",
             src->kind == DT_SRC_FILE  ? "inventory file "
             : src->kind == DT_SRC_URL ? "inventory url "
                                       : "no inventory: every device is unknown",
             src->kind == DT_SRC_FILE  ? src->file
             : src->kind == DT_SRC_URL ? src->url
                                       : "",
             w_dir != NULL ? ", state kept" : "");
    return 0;
err:
    dt_settings_free(&s);
    atomic_store(&dt_started, 1); /* so that stop releases what was started */
    devtrust_stop();
    return -1;
}

int devtrust_reconfigure(const struct conf *c, char *err, size_t errlen)
{
    struct dt_settings s, cur;
    struct dt_source *ns = NULL;
    struct inventory *drop = NULL;
    uint64_t gen;
    unsigned flags;
    enum dt_format format;

    if (!atomic_load(&dt_started)) {
        snprintf(err, errlen, "device trust: not started");
        return -1;
    }
    if (dt_settings_parse(c, &s, err, errlen) == -1)
        return -1;
    if (!dt_streq(c->state_dir, w_dir))
        log_warnx("device trust: state_dir changed; the new one is used after a restart");
    memset(&cur, 0, sizeof(cur));
    cur.kind = src->kind;
    cur.file = src->file;
    cur.url = src->url;
    cur.ca = src->ca;
    cur.client_cert = src->client_cert;
    cur.client_key = src->client_key;
    cur.token_file = src->token_file;
    cur.poll_ms = src->poll_ms;
    cur.timeout_ms = src->timeout_ms;
    if (!dt_source_same(&cur, &s)) {
        pthread_mutex_lock(&pub_mtx);
        gen = pub_gen + 1;
        pthread_mutex_unlock(&pub_mtx);
        ns = dt_source_new(dt_base, &s, gen);
        if (ns == NULL) {
            snprintf(err, errlen, "device trust: cannot start the new inventory feed source");
            dt_settings_free(&s);
            return -1;
        }
        pthread_mutex_lock(&pub_mtx);
        pub_gen = gen; /* loads of the old source still in flight are dropped */
        if (s.kind == DT_SRC_NONE) {
            drop = pub_inv;
            pub_inv = NULL;
            __atomic_add_fetch(&pub_epoch, 1, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&pub_mtx);
        inventory_unref(drop);
        dt_source_free(src);
        src = ns;
        log_info("device trust: inventory source changed to %s",
                 s.kind == DT_SRC_FILE  ? s.file
                 : s.kind == DT_SRC_URL ? s.url
                                        : "none (every device is unknown)");
    }
    pthread_mutex_lock(&pub_mtx);
    flags = pub_flags;
    format = pub_format;
    pthread_mutex_unlock(&pub_mtx);
    /* A file refused as empty (or in the wrong format) may be fine now: read it again. */
    if (src->kind == DT_SRC_FILE && ns == NULL &&
        (flags != (s.allow_empty ? INVENTORY_ALLOW_EMPTY : 0u) || format != s.format))
        src->seen_ok = 0;
    dt_pub_apply(&s);
    dt_settings_free(&s);
    return 0;
}

/* Copy src into dst (size > 0), cut to fit, NUL terminated. Per request:
 * snprintf("%s") costs several times more. Returns 1 if it was cut. */
static int dt_copy(char *dst, size_t size, const char *from)
{
    size_t n = strlen(from);
    int cut = n >= size;

    if (cut)
        n = size - 1;
    memcpy(dst, from, n);
    dst[n] = '\0';
    return cut;
}

/* dt_copy() of a string whose length n is known. */
static void dt_copy_n(char *dst, size_t size, const char *from, size_t n)
{
    if (n >= size)
        n = size - 1;
    memcpy(dst, from, n);
    dst[n] = '\0';
}

/*
 * The verdict's attributes, from the text the inventory prepared when the
 * snapshot was parsed: an attribute whose name or value does not fit is
 * left out.
 */
static void dt_attrs_fill(struct devtrust_verdict *out, const struct inventory_record *r)
{
    struct inventory_text t[INVENTORY_TEXT_MAX];
    size_t i, n = inventory_record_texts(r, t, INVENTORY_TEXT_MAX);

    for (i = 0; i < n && out->nattrs < DEVTRUST_MAX_ATTRS; i++) {
        if (t[i].name_len >= sizeof(out->attrs[0].name) ||
            t[i].value_len >= sizeof(out->attrs[0].value))
            continue;
        memcpy(out->attrs[out->nattrs].name, t[i].name, t[i].name_len + 1);
        memcpy(out->attrs[out->nattrs].value, t[i].value, t[i].value_len + 1);
        out->nattrs++;
    }
}

/* Record a changed grace state and queue it for disk. */
static void dt_grace_store(const char *id, uint64_t h, const struct score_grace *g)
{
    struct dt_shard *sh = dt_shard_of(h);
    char gj[SCORE_GRACE_JSON_MAX], line[SCORE_GRACE_JSON_MAX + DEVICE_ID_MAX + 64];
    struct dt_entry *e;
    int n = -1;

    if (score_grace_to_json(g, gj, sizeof(gj)) >= 0)
        n = snprintf(line, sizeof(line), DT_GRACE_PREFIX "%s\",\"grace\":%s}\n", id, gj);
    pthread_mutex_lock(&sh->mtx);
    e = dt_find(sh, id, h, 1);
    if (e != NULL) {
        e->grace = *g;
        dt_touch(e);
        /* Grace state is re-derived on the next request if this is lost. */
        if (n > 0 && (size_t)n < sizeof(line) && dt_persist(line, (size_t)n) == -1)
            atomic_fetch_add(&ct_persist_err, 1);
    }
    pthread_mutex_unlock(&sh->mtx);
}

/*
 * Per-thread references to the published snapshots: a worker takes
 * pub_mtx (and touches the shared refcounts) only when pub_epoch moved,
 * not on every request. A thread's references are dropped when it exits
 * (pthread key destructor) or by devtrust_thread_release().
 */
struct dt_thread_refs {
    uint64_t epoch;
    int valid;
    struct inventory *inv;
    struct score_config *cfg;
    int configured;
    int64_t max_stale;
};

static __thread struct dt_thread_refs dt_tl;
static pthread_key_t dt_tl_key;
static pthread_once_t dt_tl_once = PTHREAD_ONCE_INIT;

/*
 * Per worker: the last verdicts, so that a device's next request copies
 * its verdict instead of scoring it again. Exact: a slot answers only for
 * the same device id and user, the same published snapshot and config
 * (pub_epoch), the same inventory staleness, the same state of the
 * device's store entry (its seq: posture, grace, override), and a now
 * within [from, until], the span over which score_eval() said the clock
 * does not change the result. Direct mapped, DT_VCACHE_SLOTS per thread
 * (allocated on first use, freed with the thread's references); no lock.
 */
#define DT_VCACHE_SLOTS 64
#define DT_VCACHE_USER_MAX 255 /* longer users are scored every time */

struct dt_vslot {
    int used;
    int stale;
    int has_user;
    uint64_t epoch;
    uint64_t seq; /* 0: no store entry */
    int64_t from, until;
    size_t idlen;
    char id[DEVICE_ID_MAX + 1];
    char user[DT_VCACHE_USER_MAX + 1];
    struct devtrust_verdict v;
};

static __thread struct dt_vslot *dt_vc;

static void dt_vcache_free(void)
{
    free(dt_vc);
    dt_vc = NULL;
}

/* s with its NUL into o (both arrays of the same size, s terminated). */
#define DT_STRCPY(o, s) memcpy((o), (s), strnlen((s), sizeof(s) - 1) + 1)

/* The verdict from a slot: the brief part, or all that is in use. Runs on
 * every request of a known device: the owner and each failing check's
 * remediation (256 bytes each, mostly unused) are copied up to their NULs
 * only; ids and attributes are short fixed-size copies. */
static void dt_vcache_copy(struct devtrust_verdict *out, const struct devtrust_verdict *v,
                           int brief)
{
    size_t i;

    memcpy(out, v, offsetof(struct devtrust_verdict, owner));
    DT_STRCPY(out->owner, v->owner);
    if (brief) {
        out->nfailing = 0;
        out->nattrs = 0;
        return;
    }
    out->nfailing = v->nfailing;
    for (i = 0; i < v->nfailing; i++) {
        /* the id whole (a short fixed copy, inlined), the long text to its NUL */
        memcpy(out->failing[i].id, v->failing[i].id, sizeof(v->failing[i].id));
        DT_STRCPY(out->failing[i].remediation, v->failing[i].remediation);
        out->failing[i].hard = v->failing[i].hard;
    }
    out->nattrs = v->nattrs;
    for (i = 0; i < v->nattrs; i++)
        out->attrs[i] = v->attrs[i]; /* 176 bytes, inlined */
}

static void dt_thread_drop(void)
{
    dt_vcache_free();
    inventory_unref(dt_tl.inv);
    score_config_unref(dt_tl.cfg);
    memset(&dt_tl, 0, sizeof(dt_tl));
}

static void dt_tl_destructor(void *arg)
{
    (void)arg;
    dt_thread_drop();
}

static void dt_tl_key_create(void)
{
    pthread_key_create(&dt_tl_key, dt_tl_destructor);
}

static void dt_thread_snapshot(void)
{
    uint64_t e = __atomic_load_n(&pub_epoch, __ATOMIC_ACQUIRE);
    struct inventory *old_inv;
    struct score_config *old_cfg;

    if (dt_tl.valid && dt_tl.epoch == e)
        return;
    pthread_once(&dt_tl_once, dt_tl_key_create);
    pthread_setspecific(dt_tl_key, &dt_tl);
    old_inv = dt_tl.inv;
    old_cfg = dt_tl.cfg;
    pthread_mutex_lock(&pub_mtx);
    dt_tl.epoch = __atomic_load_n(&pub_epoch, __ATOMIC_RELAXED);
    dt_tl.inv = pub_score != NULL ? inventory_ref(pub_inv) : NULL;
    dt_tl.cfg = pub_score != NULL ? score_config_ref(pub_score) : NULL;
    dt_tl.configured = pub_configured;
    dt_tl.max_stale = pub_max_stale;
    dt_tl.valid = 1;
    pthread_mutex_unlock(&pub_mtx);
    inventory_unref(old_inv);
    score_config_unref(old_cfg);
}

void devtrust_thread_release(void)
{
    dt_thread_drop();
}

/* The verdict from a score (devtrust_evaluate() and the admin views). */
static void dt_verdict_fill(struct devtrust_verdict *out, const struct inventory_record *rec,
                            const struct score_result *res, enum inventory_status ovr, int stale,
                            int brief)
{
    size_t i;

    out->known = rec != NULL;
    out->tier = res->tier;
    dt_copy(out->tier_name, sizeof(out->tier_name), res->tier_name);
    out->score = res->score;
    out->inventory_stale = stale;
    out->posture_stale = (res->flags & SCORE_F_STALE_POSTURE) != 0;
    if (ovr != INVENTORY_STATUS_NONE)
        dt_copy(out->status, sizeof(out->status), inventory_status_name(ovr));
    else if (rec != NULL)
        dt_copy(out->status, sizeof(out->status),
                inventory_status_name(inventory_record_status(rec)));
    if (rec != NULL)
        dt_copy_n(out->owner, sizeof(out->owner), inventory_record_owner(rec),
                  inventory_record_owner_len(rec));
    out->nfailing = 0;
    if (brief)
        return; /* devtrust_evaluate_brief(): no failing checks, no attributes */
    for (i = 0; i < res->nfailed && out->nfailing < DEVTRUST_MAX_FAILING; i++) {
        const struct score_failure *f = &res->failed[i];
        if (f->in_grace)
            continue;
        dt_copy_n(out->failing[out->nfailing].id, sizeof(out->failing[0].id), f->id, f->id_len);
        if (f->remediation != NULL)
            dt_copy_n(out->failing[out->nfailing].remediation, sizeof(out->failing[0].remediation),
                      f->remediation, f->remediation_len);
        else
            out->failing[out->nfailing].remediation[0] = '\0';
        out->failing[out->nfailing].hard = f->hard;
        out->nfailing++;
    }
    if (rec != NULL)
        dt_attrs_fill(out, rec);
}

static void dt_evaluate(const char *device_id, const char *user, int64_t now,
                        struct devtrust_verdict *out, int brief)
{
    struct inventory *inv = NULL;
    struct score_config *cfg = NULL;
    const struct inventory_record *rec = NULL;
    struct score_input in;
    struct score_result res;
    struct posture post;
    struct score_grace grace;
    struct dt_vslot *slot = NULL;
    enum inventory_status ovr = INVENTORY_STATUS_NONE;
    int has_post = 0, stale = 0, valid, cand = 0, has_user = user != NULL;
    uint64_t h = 0, seq = 0;
    size_t idlen = 0, ulen = has_user ? strlen(user) : 0;

    dt_thread_snapshot();
    inv = dt_tl.inv;
    cfg = dt_tl.cfg;
    if (cfg == NULL) {
        /* Not started: nothing is known, nothing is trusted. */
        memset(out, 0, offsetof(struct devtrust_verdict, failing));
        out->nattrs = 0;
        out->inventory_stale = 1;
        dt_copy(out->tier_name, sizeof(out->tier_name), "untrusted");
        return;
    }
    stale =
        dt_tl.configured &&
        (inv == NULL || now - __atomic_load_n(&pub_fresh_at, __ATOMIC_RELAXED) > dt_tl.max_stale);
    valid = dt_id_scan(device_id, &idlen, &h);
    if (valid && ulen <= DT_VCACHE_USER_MAX) {
        if (dt_vc == NULL)
            dt_vc = calloc(DT_VCACHE_SLOTS, sizeof(*dt_vc));
        if (dt_vc != NULL) {
            slot = &dt_vc[(h >> 32) & (DT_VCACHE_SLOTS - 1)];
            cand = slot->used && slot->epoch == dt_tl.epoch && slot->stale == stale &&
                   slot->from <= now && now <= slot->until && slot->idlen == idlen &&
                   memcmp(slot->id, device_id, idlen) == 0 && slot->has_user == has_user &&
                   (!has_user || memcmp(slot->user, user, ulen + 1) == 0);
        }
    }
    grace.n = 0; /* only the n entries in use are copied and read */
    if (valid) {
        struct dt_shard *sh = dt_shard_of(h);
        struct dt_entry *e;

        pthread_mutex_lock(&sh->mtx);
        e = dt_find(sh, device_id, h, 0);
        seq = e != NULL ? e->seq : 0;
        if (cand && slot->seq == seq) {
            pthread_mutex_unlock(&sh->mtx);
            dt_vcache_copy(out, &slot->v, brief);
            return;
        }
        if (e != NULL) {
            has_post = e->has_posture;
            if (has_post)
                post = e->posture;
            grace.n = e->grace.n < SCORE_MAX_GRACE ? e->grace.n : SCORE_MAX_GRACE;
            memcpy(grace.e, e->grace.e, grace.n * sizeof(grace.e[0]));
            ovr = e->override;
        }
        pthread_mutex_unlock(&sh->mtx);
        if (inv != NULL)
            rec = inventory_lookup(inv, device_id, idlen);
    }
    memset(&in, 0, sizeof(in));
    in.record = rec;
    in.override = ovr;
    in.inventory_stale = stale;
    in.posture = has_post ? &post : NULL;
    in.now = now;
    in.user_email = user;
    in.user_subject = user;
    in.grace = valid ? &grace : NULL;
    score_eval(cfg, &in, &res);
    if (valid && score_grace_update(cfg, &grace, &res, now)) {
        dt_grace_store(device_id, h, &grace);
        /* Not kept: the next request must see (or retry) the stored state. */
        if (slot != NULL)
            slot->used = 0;
        slot = NULL;
    }

    if (slot == NULL) {
        memset(out, 0, offsetof(struct devtrust_verdict, failing));
        out->nattrs = 0;
        dt_verdict_fill(out, rec, &res, ovr, stale, brief);
        return;
    }
    /* Keyed by what it was computed from (seq as read with the inputs). */
    memset(&slot->v, 0, offsetof(struct devtrust_verdict, failing));
    slot->v.nattrs = 0;
    dt_verdict_fill(&slot->v, rec, &res, ovr, stale, 0);
    slot->used = 1;
    slot->stale = stale;
    slot->epoch = dt_tl.epoch;
    slot->seq = seq;
    slot->from = now;
    slot->until = res.valid_until;
    slot->idlen = idlen;
    memcpy(slot->id, device_id, idlen + 1);
    slot->has_user = has_user;
    if (has_user)
        memcpy(slot->user, user, ulen + 1);
    dt_vcache_copy(out, &slot->v, brief);
}

void devtrust_evaluate(const char *device_id, const char *user, int64_t now,
                       struct devtrust_verdict *out)
{
    dt_evaluate(device_id, user, now, out, 0);
}

void devtrust_evaluate_brief(const char *device_id, const char *user, int64_t now,
                             struct devtrust_verdict *out)
{
    dt_evaluate(device_id, user, now, out, 1);
}

int devtrust_posture_submit(const char *device_id, const char *body, size_t len, int64_t now,
                            char *err, size_t errlen)
{
    return devtrust_posture_submit_cb(device_id, body, len, now, NULL, NULL, err, errlen);
}

int devtrust_posture_submit_cb(const char *device_id, const char *body, size_t len, int64_t now,
                               devtrust_persisted_cb cb, void *cb_arg, char *err, size_t errlen)
{
    char line[POSTURE_JSON_MAX + 1];
    struct posture p;
    struct dt_shard *sh;
    struct dt_entry *e;
    uint64_t h;
    int rc = 0, n, rate;

    err[0] = '\0';
    if (!atomic_load(&dt_started)) {
        snprintf(err, errlen, "posture: the device trust store is not running");
        rc = 503;
        goto out;
    }
    if (!dt_id_valid(device_id)) {
        snprintf(err, errlen, "posture: no valid device id in the client certificate");
        rc = 403;
        goto out;
    }
    if (len > POSTURE_MAX_BYTES) {
        snprintf(err, errlen, "posture: $: report is %zu bytes, the limit is %d", len,
                 POSTURE_MAX_BYTES);
        rc = 413;
        goto out;
    }
    /* Rate limit before parsing: every attempt costs a token. */
    h = dt_hash(device_id);
    sh = dt_shard_of(h);
    rate = atomic_load(&dt_rate);
    pthread_mutex_lock(&sh->mtx);
    e = dt_find(sh, device_id, h, 1);
    if (e == NULL) {
        rc = 503;
    } else {
        if (!e->bucket_init) {
            e->bucket_init = 1;
            e->tokens = rate;
            e->tokens_at = now;
        } else if (now > e->tokens_at) {
            e->tokens += (double)(now - e->tokens_at) * rate / 60.0;
            if (e->tokens > rate)
                e->tokens = rate;
            e->tokens_at = now;
        }
        if (e->tokens < 1.0)
            rc = 429;
        else
            e->tokens -= 1.0;
    }
    pthread_mutex_unlock(&sh->mtx);
    if (rc == 503) {
        snprintf(err, errlen, "posture: the device store is full (%d devices)",
                 DEVTRUST_MAX_DEVICES);
        goto out;
    }
    if (rc == 429) {
        snprintf(err, errlen, "posture: too many reports: at most %d per minute per device", rate);
        goto out;
    }
    if (posture_parse(body, len, now, &p, err, errlen) == -1) {
        rc = 400;
        goto out;
    }
    if (p.has_device_id && strcmp(p.device_id, device_id) != 0) {
        /* The certificate decides who reports; a report cannot speak for another device. */
        snprintf(err, errlen,
                 "posture: $.device_id: the report names \"%s\" but the client certificate is "
                 "\"%s\"",
                 p.device_id, device_id);
        rc = 403;
        goto out;
    }
    p.has_device_id = 1;
    snprintf(p.device_id, sizeof(p.device_id), "%s", device_id);
    n = posture_to_json(&p, line, sizeof(line) - 1);
    if (n < 0) {
        snprintf(err, errlen, "posture: $: cannot serialise the report");
        rc = 400;
        goto out;
    }
    line[n++] = '\n';
    pthread_mutex_lock(&sh->mtx);
    e = dt_find(sh, device_id, h, 1);
    /* Queued under the shard lock: disk order is memory order per device. */
    if (e == NULL || dt_persist_cb(line, (size_t)n, cb, cb_arg) == -1) {
        rc = 503;
    } else {
        e->posture = p;
        e->has_posture = 1;
        dt_touch(e);
        if (cb != NULL && w_dir != NULL)
            rc = DEVTRUST_PENDING;
    }
    pthread_mutex_unlock(&sh->mtx);
    if (rc == 503)
        snprintf(err, errlen, "posture: cannot store the report now; try again later");
    else
        shared_publish_posture(line, (size_t)n - 1);
out:
    /* DEVTRUST_PENDING is counted by the writer: accepted or unavailable. */
    if (rc == 0)
        atomic_fetch_add(&ct_accepted, 1);
    else if (rc == 429)
        atomic_fetch_add(&ct_limited, 1);
    else if (rc == 503)
        atomic_fetch_add(&ct_unavailable, 1);
    else if (rc != DEVTRUST_PENDING)
        atomic_fetch_add(&ct_refused, 1);
    return rc;
}

int devtrust_posture_store(const char *report, size_t len, char *err, size_t errlen)
{
    char line[POSTURE_JSON_MAX + 1], held[POSTURE_JSON_MAX];
    struct posture p;
    struct dt_shard *sh;
    struct dt_entry *e;
    uint64_t h;
    int rc = 0, n;

    if (!atomic_load(&dt_started)) {
        snprintf(err, errlen, "posture: the device trust store is not running");
        return -1;
    }
    if (posture_from_json(report, len, &p, err, errlen) == -1)
        return -1;
    if (!p.has_device_id || !dt_id_valid(p.device_id)) {
        snprintf(err, errlen, "posture: $.device_id: expected the reporting device's id");
        return -1;
    }
    n = posture_to_json(&p, line, sizeof(line) - 1);
    if (n < 0) {
        snprintf(err, errlen, "posture: $: cannot serialise the report");
        return -1;
    }
    line[n++] = '\n';
    h = dt_hash(p.device_id);
    sh = dt_shard_of(h);
    pthread_mutex_lock(&sh->mtx);
    e = dt_find(sh, p.device_id, h, 1);
    if (e == NULL) {
        rc = -1;
    } else if (e->has_posture && e->posture.received_at > p.received_at) {
        rc = 1; /* this replica holds a newer one */
    } else if (e->has_posture && posture_to_json(&e->posture, held, sizeof(held)) == n - 1 &&
               memcmp(held, line, (size_t)n - 1) == 0) {
        rc = 1; /* read back after a reconnect: nothing new */
    } else if (dt_persist(line, (size_t)n) == -1) {
        rc = -1;
    } else {
        e->posture = p;
        e->has_posture = 1;
        dt_touch(e);
    }
    pthread_mutex_unlock(&sh->mtx);
    if (rc == -1)
        snprintf(err, errlen, "posture: the device store is full or the writer is behind");
    return rc;
}

int devtrust_set_override(const char *device_id, const char *status, char *err, size_t errlen)
{
    enum inventory_status s = INVENTORY_STATUS_NONE;
    struct dt_shard *sh;
    struct dt_entry *e;
    uint64_t h;
    int rc = -1;

    if (!atomic_load(&dt_started)) {
        snprintf(err, errlen, "device trust: not started");
        return -1;
    }
    if (!dt_id_valid(device_id)) {
        snprintf(err, errlen, "device id: expected 1-%d of [A-Za-z0-9._:-]", DEVICE_ID_MAX);
        return -1;
    }
    if (status != NULL && inventory_status_parse(status, &s) == -1) {
        snprintf(err, errlen, "status: expected \"active\", \"lost\", \"stolen\" or \"retired\"");
        return -1;
    }
    h = dt_hash(device_id);
    sh = dt_shard_of(h);
    pthread_mutex_lock(&sh->mtx);
    e = dt_find(sh, device_id, h, s != INVENTORY_STATUS_NONE);
    if (e != NULL) {
        e->override = s;
        dt_touch(e);
    }
    if (e != NULL || s == INVENTORY_STATUS_NONE)
        rc = 0;
    pthread_mutex_unlock(&sh->mtx);
    if (rc == 0)
        dt_persist_overrides();
    if (rc == -1)
        snprintf(err, errlen, "device trust: the device store is full (%d devices)",
                 DEVTRUST_MAX_DEVICES);
    else
        log_info("device trust: override for %s: %s", device_id,
                 status != NULL ? status : "cleared");
    return rc;
}

int devtrust_set_override_sync(const char *device_id, const char *status, char *err, size_t errlen)
{
    if (devtrust_set_override(device_id, status, err, errlen) == -1)
        return -1;
    if (w_dir != NULL && dt_overrides_write() == -1) {
        int saved = errno;
        dt_persist_failed("overrides.json");
        snprintf(err, errlen,
                 "device trust: %s/overrides.json: cannot write: %s (the override applies "
                 "until the proxy restarts)",
                 w_dir, strerror(saved));
        return -1;
    }
    return 0;
}

void devtrust_feed_status(int64_t now, int64_t *age, size_t *records, char *err, size_t errlen)
{
    pthread_mutex_lock(&pub_mtx);
    *age = pub_inv == NULL ? -1 : now > pub_fresh_at ? now - pub_fresh_at : 0;
    *records = dt_count(pub_inv);
    snprintf(err, errlen, "%s", st_error);
    pthread_mutex_unlock(&pub_mtx);
}

void devtrust_stats(int64_t now, struct devtrust_stats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&pub_mtx);
    out->configured = pub_configured;
    out->feed_age = pub_inv == NULL ? -1 : now > pub_fresh_at ? now - pub_fresh_at : 0;
    out->inventory_stale =
        pub_configured && (pub_inv == NULL || now - pub_fresh_at > pub_max_stale);
    out->records = dt_count(pub_inv);
    out->version = pub_inv != NULL ? inventory_version(pub_inv) : 0;
    out->loads_ok = st_ok;
    out->loads_unchanged = st_unchanged;
    out->loads_refused = st_refused;
    out->fetch_errors = st_fetch_err;
    snprintf(out->feed_error, sizeof(out->feed_error), "%s", st_error);
    pthread_mutex_unlock(&pub_mtx);
    out->posture_accepted = atomic_load(&ct_accepted);
    out->posture_refused = atomic_load(&ct_refused);
    out->posture_limited = atomic_load(&ct_limited);
    out->posture_unavailable = atomic_load(&ct_unavailable);
    out->persist_errors = atomic_load(&ct_persist_err);
    out->devices = atomic_load(&store_n);
}

/* ---- the admin API's views (main thread; never on the hot path) ---------- */

/* One device, scored for its owner, without recording grace state. */
struct dt_view {
    struct devtrust_verdict v;
    struct score_result res;
    struct posture post;
    int has_post;
    enum inventory_status ovr;
    const struct inventory_record *rec;
};

static void dt_view_eval(const char *id, int64_t now, struct inventory *inv,
                         struct score_config *cfg, int stale, struct dt_view *out)
{
    struct score_input in;
    struct score_grace grace;
    const char *owner = NULL;
    uint64_t h = dt_hash(id);
    struct dt_shard *sh = dt_shard_of(h);
    struct dt_entry *e;

    memset(out, 0, sizeof(*out));
    score_grace_init(&grace);
    out->rec = inv != NULL ? inventory_lookup(inv, id, strlen(id)) : NULL;
    pthread_mutex_lock(&sh->mtx);
    e = dt_find(sh, id, h, 0);
    if (e != NULL) {
        out->has_post = e->has_posture;
        if (e->has_posture)
            out->post = e->posture;
        grace = e->grace;
        out->ovr = e->override;
    }
    pthread_mutex_unlock(&sh->mtx);
    if (out->rec != NULL)
        owner = inventory_record_owner(out->rec);
    memset(&in, 0, sizeof(in));
    in.record = out->rec;
    in.override = out->ovr;
    in.inventory_stale = stale;
    in.posture = out->has_post ? &out->post : NULL;
    in.now = now;
    /* As its owner would be scored: owner_is_user speaks of the device. */
    in.user_email = owner;
    in.user_subject = owner;
    in.grace = &grace;
    score_eval(cfg, &in, &out->res);
    dt_verdict_fill(&out->v, out->rec, &out->res, out->ovr, stale, 0);
}

static void dt_summary_of(const char *id, const struct dt_view *dv, struct devtrust_summary *s)
{
    memset(s, 0, sizeof(*s));
    s->id = id;
    s->v = &dv->v;
    s->in_inventory = dv->rec != NULL;
    s->has_posture = dv->has_post;
    s->posture_received = dv->has_post ? dv->post.received_at : 0;
    s->override = dv->ovr != INVENTORY_STATUS_NONE;
}

/* The live snapshot and config, referenced (main thread). */
static int dt_admin_refs(int64_t now, struct inventory **inv, struct score_config **cfg, int *stale)
{
    pthread_mutex_lock(&pub_mtx);
    *inv = inventory_ref(pub_inv);
    *cfg = score_config_ref(pub_score);
    *stale = pub_configured && (pub_inv == NULL || now - pub_fresh_at > pub_max_stale);
    pthread_mutex_unlock(&pub_mtx);
    if (*cfg == NULL) {
        inventory_unref(*inv);
        return -1;
    }
    return 0;
}

int devtrust_list(int64_t now, devtrust_list_cb cb, void *arg)
{
    struct inventory *inv = NULL;
    struct score_config *cfg = NULL;
    struct devtrust_summary sum;
    struct dt_view *dv = NULL;
    char **extra = NULL;
    size_t nextra = 0, cap = 0, i, k, n;
    int stale, stop = 0, rc = -1;

    if (!atomic_load(&dt_started) || dt_admin_refs(now, &inv, &cfg, &stale) == -1)
        return -1;
    dv = malloc(sizeof(*dv));
    if (dv == NULL)
        goto out;
    n = dt_count(inv);
    for (i = 0; i < n && !stop; i++) {
        const char *id = inventory_record_id(inventory_record_at(inv, i));

        dt_view_eval(id, now, inv, cfg, stale, dv);
        dt_summary_of(id, dv, &sum);
        stop = cb(&sum, arg) != 0;
    }
    /* Then devices known only from their own state (posture, override). */
    for (i = 0; i < DT_SHARDS && !stop; i++) {
        struct dt_entry *e;

        pthread_mutex_lock(&shards[i].mtx);
        for (k = 0; k < shards[i].cap; k++) {
            for (e = shards[i].tab[k]; e != NULL; e = e->next) {
                if ((!e->has_posture && e->override == INVENTORY_STATUS_NONE) ||
                    (inv != NULL && inventory_lookup(inv, e->id, strlen(e->id)) != NULL))
                    continue;
                if (nextra == cap) {
                    size_t nc = cap == 0 ? 64 : cap * 2;
                    char **ne = realloc(extra, nc * sizeof(*ne));
                    if (ne == NULL) {
                        pthread_mutex_unlock(&shards[i].mtx);
                        goto out;
                    }
                    extra = ne;
                    cap = nc;
                }
                extra[nextra] = strdup(e->id);
                if (extra[nextra] == NULL) {
                    pthread_mutex_unlock(&shards[i].mtx);
                    goto out;
                }
                nextra++;
            }
        }
        pthread_mutex_unlock(&shards[i].mtx);
    }
    for (i = 0; i < nextra && !stop; i++) {
        dt_view_eval(extra[i], now, inv, cfg, stale, dv);
        dt_summary_of(extra[i], dv, &sum);
        stop = cb(&sum, arg) != 0;
    }
    rc = 0;
out:
    for (i = 0; i < nextra; i++)
        free(extra[i]);
    free(extra);
    free(dv);
    inventory_unref(inv);
    score_config_unref(cfg);
    return rc;
}

static json_t *dt_record_json(const struct inventory_record *r)
{
    json_t *o = json_object(), *attrs = json_object();
    struct inventory_attr a;
    char t[POSTURE_TIME_MAX];
    size_t i, n;

    json_object_set_new(o, "device_id", json_string(inventory_record_id(r)));
    json_object_set_new(o, "serial", json_string(inventory_record_serial(r)));
    json_object_set_new(o, "owner", json_string(inventory_record_owner(r)));
    json_object_set_new(o, "platform", json_string(inventory_record_platform(r)));
    json_object_set_new(o, "os_version", json_string(inventory_record_os_version(r)));
    json_object_set_new(o, "model", json_string(inventory_record_model(r)));
    json_object_set_new(o, "status",
                        json_string(inventory_status_name(inventory_record_status(r))));
    json_object_set_new(o, "managed", json_boolean(inventory_record_managed(r)));
    if (inventory_record_enrolled(r) > 0 &&
        posture_time_format(inventory_record_enrolled(r), t, sizeof(t)) == 0)
        json_object_set_new(o, "enrolled", json_string(t));
    n = inventory_record_attr_count(r);
    for (i = 0; i < n; i++) {
        if (inventory_record_attr_at(r, i, &a) == -1)
            break;
        switch (a.type) {
        case INVENTORY_ATTR_STRING:
            json_object_set_new(attrs, a.name, json_string(a.str));
            break;
        case INVENTORY_ATTR_INTEGER:
            json_object_set_new(attrs, a.name, json_integer(a.i));
            break;
        case INVENTORY_ATTR_REAL:
            json_object_set_new(attrs, a.name, json_real(a.real));
            break;
        case INVENTORY_ATTR_BOOL:
            json_object_set_new(attrs, a.name, json_boolean(a.i));
            break;
        }
    }
    json_object_set_new(o, "attributes", attrs);
    return o;
}

/* Every configured check with its outcome, then the device-level verdicts. */
static json_t *dt_checks_json(const struct score_config *cfg, const struct score_result *res)
{
    json_t *a = json_array();
    struct score_check_info ci;
    size_t i, k, n = score_config_check_count(cfg);

    for (k = 0; k < res->nfailed; k++) {
        const struct score_failure *f = &res->failed[k];
        json_t *o;

        if (strcmp(f->id, "device_lost") != 0 && strcmp(f->id, "device_unknown") != 0)
            continue;
        o = json_object();
        json_object_set_new(o, "id", json_string(f->id));
        json_object_set_new(o, "ok", json_false());
        json_object_set_new(o, "points", json_integer(0));
        json_object_set_new(o, "weight", json_integer(0));
        json_object_set_new(o, "hard", json_true());
        json_object_set_new(o, "remediation", json_string(f->remediation));
        json_object_set_new(o, "in_grace", json_false());
        json_object_set_new(o, "reason", json_string(score_reason_name(f->reason)));
        json_array_append_new(a, o);
    }
    for (i = 0; i < n; i++) {
        const struct score_failure *f = NULL;
        json_t *o = json_object();

        if (score_config_check_at(cfg, i, &ci) == -1)
            break;
        for (k = 0; k < res->nfailed; k++)
            if (strcmp(res->failed[k].id, ci.id) == 0)
                f = &res->failed[k];
        json_object_set_new(o, "id", json_string(ci.id));
        json_object_set_new(o, "type", json_string(ci.type));
        json_object_set_new(o, "ok", json_boolean(f == NULL));
        /* A check in its grace period still earns its points. */
        json_object_set_new(o, "points", json_integer(f == NULL || f->in_grace ? ci.weight : 0));
        json_object_set_new(o, "weight", json_integer(ci.weight));
        json_object_set_new(o, "hard", json_boolean(ci.hard));
        json_object_set_new(o, "remediation", json_string(ci.remediation));
        json_object_set_new(o, "in_grace", json_boolean(f != NULL && f->in_grace));
        if (f != NULL)
            json_object_set_new(o, "reason", json_string(score_reason_name(f->reason)));
        if (f != NULL && f->in_grace) {
            char t[POSTURE_TIME_MAX];
            if (posture_time_format(f->grace_until, t, sizeof(t)) == 0)
                json_object_set_new(o, "grace_until", json_string(t));
        }
        json_array_append_new(a, o);
    }
    return a;
}

int devtrust_device(const char *device_id, int64_t now, devtrust_list_cb cb, void *arg,
                    json_t **detail)
{
    struct inventory *inv = NULL;
    struct score_config *cfg = NULL;
    struct devtrust_summary sum;
    struct dt_view *dv = NULL;
    json_t *o = NULL;
    int stale, rc = -1;

    *detail = NULL;
    if (!atomic_load(&dt_started) || !dt_id_valid(device_id) ||
        dt_admin_refs(now, &inv, &cfg, &stale) == -1)
        return -1;
    dv = malloc(sizeof(*dv));
    if (dv == NULL)
        goto out;
    dt_view_eval(device_id, now, inv, cfg, stale, dv);
    if (dv->rec == NULL && !dv->has_post && dv->ovr == INVENTORY_STATUS_NONE) {
        rc = 1;
        goto out;
    }
    o = json_object();
    if (o == NULL)
        goto out;
    json_object_set_new(o, "checks", dt_checks_json(cfg, &dv->res));
    json_object_set_new(o, "inventory", dv->rec != NULL ? dt_record_json(dv->rec) : json_null());
    if (dv->has_post) {
        char line[POSTURE_JSON_MAX + 1], t[POSTURE_TIME_MAX];
        int len = posture_to_json(&dv->post, line, sizeof(line));
        json_t *p = len > 0 ? json_loadb(line, (size_t)len, 0, NULL) : NULL;

        if (p != NULL && posture_time_format(dv->post.received_at, t, sizeof(t)) == 0)
            json_object_set_new(p, "received", json_string(t));
        json_object_set_new(o, "posture", p != NULL ? p : json_null());
    } else {
        json_object_set_new(o, "posture", json_null());
    }
    dt_summary_of(device_id, dv, &sum);
    if (cb != NULL)
        cb(&sum, arg);
    *detail = o;
    o = NULL;
    rc = 0;
out:
    json_decref(o);
    free(dv);
    inventory_unref(inv);
    score_config_unref(cfg);
    return rc;
}
