/*
 * sso_registry.c - provider discovery and JWKS, fetched on the main
 * thread's loop and published as immutable snapshots for the workers.
 *
 * Workers read a provider's state under its mutex only long enough to take
 * references (once per login or bearer verification, never per cookie
 * check). A worker that meets an unknown kid may refetch the JWKS itself,
 * at most once per jwks_min_refresh across all threads.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "httpc.h"
#include "jwt.h"
#include "log.h"
#include "sso.h"

#define PROBE_MS 5000 /* discovery re-read: is the provider up? */
#define JWKS_REFRESH_MS (10 * 60 * 1000)
#define RETRY_MIN_MS 2000
#define RETRY_MAX_MS 5000 /* a provider that comes back is used within seconds */
#define MAX_PROVIDERS 64

enum fetch_step { STEP_IDLE = 0, STEP_DISCOVERY, STEP_JWKS };

struct sso_provider {
    char *key; /* issuer|client_id */
    char *name;
    char *issuer;
    char *ca;
    pthread_mutex_t mtx;
    struct sso_meta *meta;   /* under mtx */
    struct jwt_keyset *keys; /* under mtx */
    char error[256];         /* under mtx: why meta/keys are missing or stale */
    uint64_t jwks_at_ms;     /* under mtx: monotonic time of the last JWKS fetch */
    int jwks_busy;           /* under mtx */
    int down;                /* under mtx: the last discovery fetch failed */
    /* main thread only */
    enum fetch_step step;
    struct httpc_req *req;
    struct event *timer;
    uint64_t backoff_ms;
    struct sso_meta *pending_meta;
};

static struct sso_provider *providers[MAX_PROVIDERS];
static size_t nproviders;
static struct httpc *main_httpc;
static struct event_base *main_base;

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void sso_meta_unref(struct sso_meta *m)
{
    if (m == NULL)
        return;
    if (atomic_fetch_sub_explicit((_Atomic int *)&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(m->authorization_endpoint);
    free(m->token_endpoint);
    free(m->end_session_endpoint);
    free(m->jwks_uri);
    free(m);
}

/* Record why the provider is not (fully) usable: "what: detail". */
static void set_error(struct sso_provider *p, const char *what, const char *detail)
{
    pthread_mutex_lock(&p->mtx);
    snprintf(p->error, sizeof(p->error), "%s: %.200s", what, detail);
    pthread_mutex_unlock(&p->mtx);
}

static void schedule(struct sso_provider *p, uint64_t ms)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    evtimer_add(p->timer, &tv);
}

static void fetch_failed(struct sso_provider *p)
{
    pthread_mutex_lock(&p->mtx);
    p->down = 1;
    pthread_mutex_unlock(&p->mtx);
    p->step = STEP_IDLE;
    p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : RETRY_MIN_MS;
    if (p->backoff_ms > RETRY_MAX_MS)
        p->backoff_ms = RETRY_MAX_MS;
    /* Jitter: 75%..125% so replicas do not retry in step. */
    schedule(p, p->backoff_ms * (75 + (uint64_t)(rand() % 51)) / 100);
}

/* A URL from the discovery document must be http(s) and, unless the issuer
 * is plain http (dev), https. */
static char *url_member(json_t *doc, const char *key, int required, const char *issuer,
                        const char **why)
{
    json_t *v = json_object_get(doc, key);
    const char *s;

    if (v == NULL) {
        if (required)
            *why = key;
        return NULL;
    }
    if (!json_is_string(v)) {
        *why = key;
        return NULL;
    }
    s = json_string_value(v);
    if (strncmp(s, "https://", 8) != 0 &&
        !(strncmp(issuer, "http://", 7) == 0 && strncmp(s, "http://", 7) == 0)) {
        *why = key;
        return NULL;
    }
    return strdup(s);
}

static void start_fetch(struct sso_provider *p);

static void jwks_fetched(const struct httpc_response *r, void *arg)
{
    struct sso_provider *p = arg;
    struct jwt_keyset *ks = NULL, *old;
    struct sso_meta *oldm;
    char err[256];

    p->req = NULL;
    if (r->status != 200) {
        set_error(p, "jwks", r->error ? r->error : "unexpected HTTP status");
        log_warnx("sso: provider %s: cannot fetch JWKS: %s", p->name,
                  r->error ? r->error : "unexpected HTTP status");
        sso_meta_unref(p->pending_meta);
        p->pending_meta = NULL;
        fetch_failed(p);
        return;
    }
    if (jwt_keyset_parse(r->body, r->body_len, NULL, NULL, &ks, err, sizeof(err)) == -1) {
        set_error(p, "jwks", err);
        log_warnx("sso: provider %s: JWKS refused: %s", p->name, err);
        sso_meta_unref(p->pending_meta);
        p->pending_meta = NULL;
        fetch_failed(p);
        return;
    }
    pthread_mutex_lock(&p->mtx);
    old = p->keys;
    oldm = p->meta;
    p->keys = ks;
    p->meta = p->pending_meta;
    p->pending_meta = NULL;
    p->jwks_at_ms = mono_ms();
    p->error[0] = '\0';
    pthread_mutex_unlock(&p->mtx);
    jwt_keyset_unref(old);
    sso_meta_unref(oldm);
    if (oldm == NULL)
        log_info("sso: provider %s ready (%zu signing keys)", p->name, jwt_keyset_count(ks));
    p->step = STEP_IDLE;
    p->backoff_ms = 0;
    schedule(p, PROBE_MS);
}

static void discovery_fetched(const struct httpc_response *r, void *arg)
{
    struct sso_provider *p = arg;
    struct httpc_opts o;
    struct sso_meta *m;
    const char *why = NULL;
    json_error_t jerr;
    json_t *doc, *iss;

    p->req = NULL;
    if (r->status != 200) {
        set_error(p, "discovery", r->error ? r->error : "unexpected HTTP status");
        log_warnx("sso: provider %s: discovery failed: %s", p->name,
                  r->error ? r->error : "unexpected HTTP status");
        fetch_failed(p);
        return;
    }
    doc = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL || !json_is_object(doc)) {
        set_error(p, "discovery", "not a JSON object");
        log_warnx("sso: provider %s: discovery document is not a JSON object", p->name);
        json_decref(doc);
        fetch_failed(p);
        return;
    }
    /* OpenID Connect Discovery 4.3: the issuer must be exactly ours. */
    iss = json_object_get(doc, "issuer");
    if (!json_is_string(iss) || strcmp(json_string_value(iss), p->issuer) != 0) {
        set_error(p, "discovery", "the document names another issuer");
        log_warnx("sso: provider %s: discovery names another issuer", p->name);
        json_decref(doc);
        fetch_failed(p);
        return;
    }
    m = calloc(1, sizeof(*m));
    m->refs = 1;
    m->authorization_endpoint = url_member(doc, "authorization_endpoint", 1, p->issuer, &why);
    m->token_endpoint = url_member(doc, "token_endpoint", 1, p->issuer, &why);
    m->jwks_uri = url_member(doc, "jwks_uri", 1, p->issuer, &why);
    m->end_session_endpoint = url_member(doc, "end_session_endpoint", 0, p->issuer, &why);
    json_decref(doc);
    if (why != NULL || m->authorization_endpoint == NULL || m->token_endpoint == NULL ||
        m->jwks_uri == NULL) {
        set_error(p, "discovery: missing or bad", why ? why : "endpoint");
        log_warnx("sso: provider %s: discovery: missing or bad %s", p->name,
                  why ? why : "endpoint");
        sso_meta_unref(m);
        fetch_failed(p);
        return;
    }
    pthread_mutex_lock(&p->mtx);
    p->down = 0;
    if (p->meta != NULL && p->keys != NULL && mono_ms() - p->jwks_at_ms < JWKS_REFRESH_MS) {
        /* A probe: the provider answers; keys are recent enough. */
        struct sso_meta *old = p->meta;
        p->meta = m;
        p->error[0] = '\0';
        pthread_mutex_unlock(&p->mtx);
        sso_meta_unref(old);
        p->step = STEP_IDLE;
        p->backoff_ms = 0;
        schedule(p, PROBE_MS);
        return;
    }
    pthread_mutex_unlock(&p->mtx);
    p->pending_meta = m;
    p->step = STEP_JWKS;
    memset(&o, 0, sizeof(o));
    o.url = m->jwks_uri;
    o.ca_file = p->ca;
    o.max_body = 256 * 1024;
    p->req = httpc_start(main_httpc, &o, jwks_fetched, p);
    if (p->req == NULL) {
        sso_meta_unref(p->pending_meta);
        p->pending_meta = NULL;
        fetch_failed(p);
    }
}

static void start_fetch(struct sso_provider *p)
{
    struct httpc_opts o;
    char url[1024];

    if (p->step != STEP_IDLE)
        return;
    /* OpenID Connect Discovery 4.1: issuer + "/.well-known/openid-configuration" */
    snprintf(url, sizeof(url), "%s%s.well-known/openid-configuration", p->issuer,
             p->issuer[strlen(p->issuer) - 1] == '/' ? "" : "/");
    memset(&o, 0, sizeof(o));
    o.url = url;
    o.ca_file = p->ca;
    o.max_body = 256 * 1024;
    p->step = STEP_DISCOVERY;
    p->req = httpc_start(main_httpc, &o, discovery_fetched, p);
    if (p->req == NULL)
        fetch_failed(p);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    start_fetch(arg);
}

int sso_registry_sync(struct event_base *base, const struct conf *c)
{
    size_t i, j;

    if (main_httpc == NULL && c->nproviders > 0) {
        main_base = base;
        main_httpc = httpc_new(base);
        if (main_httpc == NULL)
            return -1;
    }
    for (i = 0; i < c->nproviders; i++) {
        const struct conf_provider *cp = &c->providers[i];
        char key[2048];
        struct sso_provider *p = NULL;

        snprintf(key, sizeof(key), "%s|%s|%s", cp->issuer, cp->client_id, cp->ca ? cp->ca : "");
        for (j = 0; j < nproviders; j++)
            if (strcmp(providers[j]->key, key) == 0)
                p = providers[j];
        if (p != NULL)
            continue;
        if (nproviders == MAX_PROVIDERS)
            return -1;
        p = calloc(1, sizeof(*p));
        if (p == NULL)
            return -1;
        p->key = strdup(key);
        p->name = strdup(cp->name);
        p->issuer = strdup(cp->issuer);
        p->ca = cp->ca ? strdup(cp->ca) : NULL;
        snprintf(p->error, sizeof(p->error), "discovery not fetched yet");
        pthread_mutex_init(&p->mtx, NULL);
        p->timer = evtimer_new(main_base, timer_cb, p);
        providers[nproviders++] = p;
        start_fetch(p);
    }
    return 0;
}

void sso_registry_free(void)
{
    size_t i;

    for (i = 0; i < nproviders; i++) {
        struct sso_provider *p = providers[i];
        httpc_cancel(p->req);
        event_free(p->timer);
        sso_meta_unref(p->meta);
        sso_meta_unref(p->pending_meta);
        jwt_keyset_unref(p->keys);
        pthread_mutex_destroy(&p->mtx);
        free(p->key);
        free(p->name);
        free(p->issuer);
        free(p->ca);
        free(p);
        providers[i] = NULL;
    }
    nproviders = 0;
    httpc_free(main_httpc);
    main_httpc = NULL;
}

struct sso_provider *sso_provider_get(const struct conf *c, size_t idx)
{
    const struct conf_provider *cp;
    char key[2048];
    size_t j;

    if (idx >= c->nproviders)
        return NULL;
    cp = &c->providers[idx];
    snprintf(key, sizeof(key), "%s|%s|%s", cp->issuer, cp->client_id, cp->ca ? cp->ca : "");
    /* The registry only grows, and only on the main thread before the
     * generation that needs an entry is published. */
    for (j = 0; j < nproviders; j++)
        if (strcmp(providers[j]->key, key) == 0)
            return providers[j];
    return NULL;
}

void sso_provider_snapshot(struct sso_provider *p, struct sso_meta **meta, struct jwt_keyset **keys,
                           char *error, size_t errlen)
{
    pthread_mutex_lock(&p->mtx);
    *meta = p->meta;
    if (*meta != NULL)
        atomic_fetch_add_explicit((_Atomic int *)&(*meta)->refs, 1, memory_order_relaxed);
    *keys = p->keys != NULL ? jwt_keyset_ref(p->keys) : NULL;
    if (error != NULL)
        snprintf(error, errlen, "%s", p->error);
    pthread_mutex_unlock(&p->mtx);
}

int sso_provider_up(struct sso_provider *p)
{
    int up;

    pthread_mutex_lock(&p->mtx);
    up = p->meta != NULL && !p->down;
    pthread_mutex_unlock(&p->mtx);
    return up;
}

void sso_provider_mark_down(struct sso_provider *p)
{
    pthread_mutex_lock(&p->mtx);
    p->down = 1;
    pthread_mutex_unlock(&p->mtx);
}

int sso_provider_jwks_claim(struct sso_provider *p, uint64_t min_refresh_ms)
{
    uint64_t now = mono_ms();
    int ok = 0;

    pthread_mutex_lock(&p->mtx);
    if (!p->jwks_busy && p->meta != NULL && now - p->jwks_at_ms >= min_refresh_ms) {
        p->jwks_busy = 1;
        ok = 1;
    }
    pthread_mutex_unlock(&p->mtx);
    return ok;
}

void sso_provider_jwks_done(struct sso_provider *p, struct jwt_keyset *keys)
{
    struct jwt_keyset *old = NULL;

    pthread_mutex_lock(&p->mtx);
    p->jwks_busy = 0;
    p->jwks_at_ms = mono_ms();
    if (keys != NULL) {
        old = p->keys;
        p->keys = jwt_keyset_ref(keys);
    }
    pthread_mutex_unlock(&p->mtx);
    jwt_keyset_unref(old);
}
