/*
 * sso.c - who is behind a request: OpenID Connect login bound to the device
 * certificate, sealed session cookies, bearer tokens, step-up, logout, and
 * the built-in /.zt/ endpoints.
 *
 * Flow of a browser's first visit to a route that needs identity:
 *
 *   GET /page            -> 302 to the provider's authorization endpoint
 *                           (state, nonce, PKCE S256), and a sealed login
 *                           cookie __Host-zt_login_<state> holding state,
 *                           nonce, verifier, return path and the device's
 *                           certificate thumbprint (nothing kept in memory)
 *   GET /.zt/callback    -> the login cookie is opened and must match state
 *                           and the same device; the code is exchanged at
 *                           the token endpoint (libcurl on this loop); the ID
 *                           token is verified (cjose, via jwt.c); a session
 *                           cookie bound to the thumbprint is set; 302 back
 *   GET /page            -> the session cookie opens (no network, no lock)
 *
 * Nothing here blocks a loop: provider calls go through httpc, revocations
 * (which fsync) go through the state thread.
 */
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "accesslog.h"
#include "devtrust.h"
#include "httpc.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "proxy_int.h"
#include "sbuf.h"
#include "session.h"
#include "shared.h"
#include "sso.h"

#define LOGIN_COOKIE "zt_login"
#define LOGIN_BLOB_MAX 3072
#define RETURN_MAX 2048
#define TOKEN_RESPONSE_MAX (256 * 1024)
#define LOCAL_BODY_MAX (64 * 1024)
#define POSTURE_BODY_MAX (16 * 1024)
#define KID_RETRY_US 250000 /* wait for a JWKS refetch that is rate-limited or in flight */
#define KID_RETRY_MAX 12
#define STEPUP_FRESH_S 60 /* a session this young came from the step-up itself */

struct session_revocations *proxy_revocations;

enum sso_wait {
    WAIT_NONE = 0,
    WAIT_TOKEN,       /* code exchange at the token endpoint */
    WAIT_JWKS_LOGIN,  /* refetching keys to verify an ID token */
    WAIT_JWKS_BEARER, /* refetching keys to verify a bearer token */
    WAIT_REVOKE,      /* the state thread persists a revocation */
    WAIT_BODY,        /* reading a small request body for a /.zt/ endpoint */
};

/* The login in progress, as sealed into the login cookie. */
struct sso_login {
    char state[64];
    char nonce[64];
    char verifier[64];
    char provider[64];
    char ret[RETURN_MAX + 1];
    unsigned char thumbprint[32];
    int64_t created;
};

struct sso_job;

/*
 * What a connection keeps across its requests (keep-alive): the session it
 * opened from a cookie, and the identity headers built for it. A hit skips
 * the AES-GCM open, the decoding and the signature; it never skips a check:
 *
 *   - the cookie must be the very same bytes (a different or changed cookie
 *     is opened from scratch); the connection's certificate cannot change,
 *     and the session's thumbprint is compared with it again anyway;
 *   - expiry and idle expiry are checked at every request
 *     (session_check_times(): the same test session_cookie_open() ends with);
 *   - revocation: the session was checked at revocation generation rev_gen;
 *     any revocation anywhere moves the generation, and the next request
 *     opens and checks the cookie again (session_revocations_generation());
 *   - the header block is keyed by the session (serial), the route, the
 *     device tier and the groups decided for this very request (both come
 *     from the live inventory and directory: a change shows at once), and
 *     its assertion is reused only under jwt_assertion_reusable().
 *
 * The cookie is compared with memcmp, not CRYPTO_memcmp: both values came
 * from the peer of this one TLS connection, so the time it takes reveals
 * nothing that peer did not send itself.
 */
struct sso_cache {
    char cname[96]; /* "__Host-" + the session cookie name ("" until first use) */
    int have;       /* sess was opened from cookie[0..cookie_len) */
    char *cookie;
    size_t cookie_len, cookie_cap;
    struct session sess;
    uint64_t rev_gen; /* revocation generation read before sess was checked */
    uint64_t serial;  /* bumped whenever sess is replaced */
    /* X-ZT-User, X-ZT-Email, X-ZT-Assertion for the session of serial */
    int hdr_have;
    uint64_t hdr_serial;
    const struct conf_route *hdr_route;
    int64_t hdr_iat; /* of the assertion inside */
    char *hkey;      /* tier "\n" groups */
    size_t hkey_len, hkey_cap;
    char *hdr;
    size_t hdr_len, hdr_cap;
    /* The Set-Cookie value of the re-sealed session of serial reseal_serial,
     * sealed in second reseal_at: a client that keeps sending the old
     * cookie (a script, a load generator) gets it again within that second
     * instead of a new seal per request (the times inside would be the
     * same; only the nonce would differ). */
    char *reseal;
    size_t reseal_len, reseal_cap;
    int64_t reseal_at;
    uint64_t reseal_serial;
};

/* Seconds an assertion may be handed out again (the worker cache's too). */
#define ASSERTION_REUSE 5

struct sso_req {
    struct sso_cache cache; /* per connection: freed by sso_conn_free() */
    /* Per request from here on: sso_req_free() wipes what was used. */
    struct session sess;
    struct sso_login *login; /* a login callback only (its own allocation) */
    /* The identity of this request, NULL while there is none: &sess, or
     * &cache.sess when the connection's cached session is reused as it is
     * (no copy). */
    const struct session *cur;
    int reseal_cached; /* send cache.reseal as the Set-Cookie of this request */
    int from_bearer;   /* identity from a bearer token (no cookie) */
    /* The large buffers are allocated only by the requests that need them
     * (a re-sealed cookie, a login callback, a bearer token). */
    char *set_cookie[2]; /* SESSION_SET_COOKIE_MAX bytes each */
    int nset;
    enum sso_wait wait;
    struct httpc_req *hreq;
    struct sso_job *job;
    char *id_token; /* NUL-terminated, id_token_len bytes */
    size_t id_token_len;
    char *bearer; /* NUL-terminated, bearer_len bytes */
    size_t bearer_len;
    int provider; /* conf index */
    int local_kind;
    struct evbuffer *body; /* WAIT_BODY */
    struct event *timer;   /* retry after an unknown kid */
    int kid_retries;
    uint64_t body_left;
};

/* ---- the state thread: revocations are written (and fsync'd) here ---- */

struct sso_job {
    struct sso_job *next;
    int by_user; /* 0 id, 1 subject, JOB_SID / JOB_PUSER: back-channel at provider */
    uint8_t id[SESSION_ID_LEN];
    char subject[SESSION_SUBJECT_MAX + 1];
    char provider[SESSION_PROVIDER_MAX + 1];
    char sid[SESSION_SID_MAX + 1];
    struct event_base *reply_base;
    struct conn *c; /* NULL when the connection went away meanwhile */
    int rc;
};

#define JOB_SID 2     /* the provider session sid at provider */
#define JOB_PUSER 3   /* subject at provider */
#define JOB_POSTURE 4 /* a posture report: devtrust's writer answers */

/* The store has one writer at a time: this thread or proxy_revoke(). */
static pthread_mutex_t revoke_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t job_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_cond = PTHREAD_COND_INITIALIZER;
static struct sso_job *job_head, *job_tail;
static pthread_t job_thread;
static int job_running, job_stop;

static void job_done_cb(evutil_socket_t fd, short what, void *arg);

static void job_done_post(void *arg)
{
    job_done_cb(-1, EV_TIMEOUT, arg);
}

/* Jobs are answered on their worker's loop. proxy_replies_stop() (before
 * the worker loops are freed) ends that: a job finished later is parked on
 * reply_orphans (its connection may still point at it) and freed with the
 * store. */
static pthread_mutex_t reply_mtx = PTHREAD_MUTEX_INITIALIZER;
static int replies_off;
static struct sso_job *reply_orphans;

/* Any thread: hand a finished job back to its connection's loop. */
static void job_reply(struct sso_job *j)
{
    pthread_mutex_lock(&reply_mtx);
    if (j->reply_base == NULL) {
        free(j);
    } else if (replies_off || worker_post(j->reply_base, job_done_post, j) == -1) {
        j->next = reply_orphans;
        reply_orphans = j;
    }
    pthread_mutex_unlock(&reply_mtx);
}

void proxy_replies_stop(void)
{
    pthread_mutex_lock(&reply_mtx);
    replies_off = 1;
    pthread_mutex_unlock(&reply_mtx);
}

static void *job_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct sso_job *j;
        int64_t at;

        pthread_mutex_lock(&job_mtx);
        while (job_head == NULL && !job_stop)
            pthread_cond_wait(&job_cond, &job_mtx);
        j = job_head;
        if (j == NULL) {
            pthread_mutex_unlock(&job_mtx);
            break;
        }
        job_head = j->next;
        if (job_head == NULL)
            job_tail = NULL;
        pthread_mutex_unlock(&job_mtx);
        pthread_mutex_lock(&revoke_mtx);
        at = (int64_t)time(NULL);
        if (proxy_revocations == NULL)
            j->rc = -1;
        else if (j->by_user == JOB_SID)
            j->rc = session_revoke_sid(proxy_revocations, j->provider, j->sid, at);
        else if (j->by_user == JOB_PUSER)
            j->rc = session_revoke_provider_user(proxy_revocations, j->provider, j->subject, at);
        else if (j->by_user)
            j->rc = session_revoke_user(proxy_revocations, j->subject, at);
        else
            j->rc = session_revoke_id(proxy_revocations, j->id, at);
        pthread_mutex_unlock(&revoke_mtx);
        if (proxy_revocations != NULL && j->by_user == JOB_SID)
            shared_publish_revoke_scoped(j->provider, j->sid, NULL, at);
        else if (proxy_revocations != NULL && j->by_user == JOB_PUSER)
            shared_publish_revoke_scoped(j->provider, NULL, j->subject, at);
        else if (proxy_revocations != NULL)
            shared_publish_revoke(j->by_user ? j->subject : NULL, j->id, at);
        job_reply(j);
    }
    return NULL;
}

static int job_post(struct sso_job *j)
{
    pthread_mutex_lock(&job_mtx);
    if (!job_running) {
        if (pthread_create(&job_thread, NULL, job_main, NULL) != 0) {
            pthread_mutex_unlock(&job_mtx);
            return -1;
        }
        job_running = 1;
    }
    j->next = NULL;
    if (job_tail != NULL)
        job_tail->next = j;
    else
        job_head = j;
    job_tail = j;
    pthread_cond_signal(&job_cond);
    pthread_mutex_unlock(&job_mtx);
    return 0;
}

static void sso_jobs_stop(void)
{
    pthread_mutex_lock(&job_mtx);
    job_stop = 1;
    pthread_cond_signal(&job_cond);
    pthread_mutex_unlock(&job_mtx);
    if (job_running)
        pthread_join(job_thread, NULL);
    job_running = 0;
}

/* ---- small helpers ----------------------------------------------------- */

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static struct sso_req *sso_req_get(struct conn *c)
{
    if (c->sso == NULL) {
        c->sso = calloc(1, sizeof(*c->sso));
        if (c->sso != NULL)
            c->sso->provider = -1;
    }
    return c->sso;
}

/* Release what the request holds and reset its part of s. */
static void sso_req_end(struct sso_req *s)
{
    int i;

    httpc_cancel(s->hreq);
    if (s->timer != NULL)
        event_free(s->timer);
    if (s->job != NULL)
        s->job->c = NULL; /* freed by job_done_cb */
    if (s->body != NULL)
        evbuffer_free(s->body);
    if (s->id_token != NULL) {
        OPENSSL_cleanse(s->id_token, s->id_token_len);
        free(s->id_token);
    }
    if (s->bearer != NULL) {
        OPENSSL_cleanse(s->bearer, s->bearer_len);
        free(s->bearer);
    }
    for (i = 0; i < 2; i++)
        if (s->set_cookie[i] != NULL) {
            OPENSSL_cleanse(s->set_cookie[i], strlen(s->set_cookie[i]));
            free(s->set_cookie[i]);
        }
    if (s->login != NULL) {
        OPENSSL_cleanse(s->login, sizeof(*s->login));
        free(s->login);
        s->login = NULL;
    }
    /* s->sess is not wiped here: it holds no secret (the cookie does), and
     * the connection keeps the same session in cache.sess anyway. */
    memset(&s->cur, 0, sizeof(*s) - offsetof(struct sso_req, cur));
    s->provider = -1;
}

void sso_req_free(struct conn *c)
{
    if (c->sso != NULL)
        sso_req_end(c->sso);
}

static void cache_drop_headers(struct sso_cache *sc)
{
    sc->hdr_have = 0;
    if (sc->hdr != NULL)
        OPENSSL_cleanse(sc->hdr, sc->hdr_len);
    sc->hdr_len = 0;
}

static void cache_drop(struct sso_cache *sc)
{
    cache_drop_headers(sc);
    if (sc->reseal != NULL)
        OPENSSL_cleanse(sc->reseal, sc->reseal_len);
    sc->reseal_len = 0;
    if (sc->have)
        OPENSSL_cleanse(&sc->sess, sizeof(sc->sess));
    if (sc->cookie != NULL)
        OPENSSL_cleanse(sc->cookie, sc->cookie_len);
    sc->cookie_len = 0;
    sc->have = 0;
}

void sso_conn_free(struct conn *c)
{
    struct sso_req *s = c->sso;

    if (s == NULL)
        return;
    sso_req_end(s);
    cache_drop(&s->cache);
    free(s->cache.cookie);
    free(s->cache.hkey);
    free(s->cache.hdr);
    free(s->cache.reseal);
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
    c->sso = NULL;
}

/* Make *buf hold at least need bytes (contents kept). 0 or -1. */
static int cache_room(char **buf, size_t *cap, size_t need)
{
    char *nb;

    if (need <= *cap)
        return 0;
    nb = malloc(need);
    if (nb == NULL)
        return -1;
    if (*buf != NULL) {
        OPENSSL_cleanse(*buf, *cap);
        free(*buf);
    }
    *buf = nb;
    *cap = need;
    return 0;
}

static void b64url(const unsigned char *in, size_t n, char *out, size_t outlen)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i, o = 0;

    for (i = 0; i + 2 < n && o + 4 < outlen; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        out[o++] = tbl[v >> 6 & 63];
        out[o++] = tbl[v & 63];
    }
    if (i < n && o + 3 < outlen) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = tbl[v >> 6 & 63];
    }
    out[o] = '\0';
}

static int random_token(char *out, size_t outlen, size_t nbytes)
{
    unsigned char buf[48];

    if (nbytes > sizeof(buf) || RAND_bytes(buf, (int)nbytes) != 1)
        return -1;
    b64url(buf, nbytes, out, outlen);
    return 0;
}

/* Value of a query parameter, percent-decoded into out. 0 found, -1 not. */
static int query_param(const char *q, size_t qlen, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name), i = 0;

    while (i < qlen) {
        size_t e = i;
        while (e < qlen && q[e] != '&')
            e++;
        if (e - i > nl && memcmp(q + i, name, nl) == 0 && q[i + nl] == '=') {
            size_t k = i + nl + 1, o = 0;
            while (k < e && o + 1 < outlen) {
                if (q[k] == '%' && k + 2 < e + 1 && k + 2 < qlen + 1) {
                    char hx[3] = {q[k + 1], q[k + 2], 0};
                    char *end;
                    long v = strtol(hx, &end, 16);
                    if (*end != '\0' || v <= 0)
                        return -1;
                    out[o++] = (char)v;
                    k += 3;
                } else if (q[k] == '+') {
                    out[o++] = ' ';
                    k++;
                } else {
                    out[o++] = q[k++];
                }
            }
            if (k < e)
                return -1; /* too long */
            out[o] = '\0';
            return 0;
        }
        i = e + 1;
    }
    return -1;
}

/* Find cookie name=value in the request's Cookie headers. */
static int find_cookie(const struct http_request *req, const char *name, const char **val,
                       size_t *vlen)
{
    size_t nl = strlen(name), i;

    for (i = 0; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        const char *p = h->value, *end = h->value + h->value_len;

        if (!header_is(h, "cookie"))
            continue;
        while (p < end) {
            const char *semi = memchr(p, ';', (size_t)(end - p)), *eq;
            const char *e = semi ? semi : end;
            while (p < e && (*p == ' ' || *p == '\t'))
                p++;
            eq = memchr(p, '=', (size_t)(e - p));
            if (eq != NULL && (size_t)(eq - p) == nl && memcmp(p, name, nl) == 0) {
                *val = eq + 1;
                *vlen = (size_t)(e - eq - 1);
                return 0;
            }
            p = semi ? semi + 1 : end;
        }
    }
    return -1;
}

static const struct http_header *find_header(const struct http_request *req, const char *lower)
{
    size_t i;

    for (i = 0; i < req->nheaders; i++)
        if (header_is(&req->headers[i], lower))
            return &req->headers[i];
    return NULL;
}

int sso_cookie_is_ours(const struct conf *cf, const char *name, size_t len)
{
    if (cf->nproviders == 0 || len < 7 || memcmp(name, "__Host-", 7) != 0)
        return 0;
    if (len >= 7 + sizeof(LOGIN_COOKIE) - 1 && memcmp(name, "__Host-" LOGIN_COOKIE, 15) == 0)
        return 1;
    /* "__Host-" + the session cookie name, compared without building it
     * (once per cookie of every forwarded request). */
    return strlen(cf->session_cookie_name) == len - 7 &&
           memcmp(cf->session_cookie_name, name + 7, len - 7) == 0;
}

static int is_mfa(const struct conf_provider *pv, const struct session *s)
{
    size_t i;

    if (pv->mfa_acr[0] != '\0' && strcmp(s->acr, pv->mfa_acr) == 0)
        return 1;
    /* RFC 8176 methods that are a second factor or stronger; all three
     * letters long, so one length test and inlined compares (this runs for
     * every request of a session). */
    for (i = 0; i < s->namr; i++) {
        const char *m = s->amr[i];

        if (m[0] != '\0' && m[1] != '\0' && m[2] != '\0' && m[3] == '\0' &&
            (memcmp(m, "mfa", 3) == 0 || memcmp(m, "otp", 3) == 0 || memcmp(m, "hwk", 3) == 0 ||
             memcmp(m, "swk", 3) == 0 || memcmp(m, "sms", 3) == 0))
            return 1;
    }
    return 0;
}

static void audit_identity(struct conn *c, const char *event, const char *reason, const char *user)
{
    log_info("sso: %s: %s (request %s, client %s, device %s%s%s)", event, reason, c->reqid,
             c->client, c->peer.device_id, user ? ", user " : "", user ? user : "");
}

/* ---- login ------------------------------------------------------------ */

static size_t login_encode(const struct sso_login *l, char *out, size_t outlen)
{
    char tp[65];
    int n;

    device_thumbprint_hex(l->thumbprint, tp);
    n = snprintf(out, outlen, "%s\t%s\t%s\t%s\t%s\t%lld\t%s", l->state, l->nonce, l->verifier,
                 l->provider, tp, (long long)l->created, l->ret);
    return n < 0 || (size_t)n >= outlen ? 0 : (size_t)n;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

static int login_decode(char *in, struct sso_login *l)
{
    char *f[7], *save = in;
    size_t i;

    for (i = 0; i < 7; i++) {
        f[i] = save;
        if (i < 6) {
            char *tab = strchr(save, '\t');
            if (tab == NULL)
                return -1;
            *tab = '\0';
            save = tab + 1;
        }
    }
    if (strlen(f[0]) >= sizeof(l->state) || strlen(f[1]) >= sizeof(l->nonce) ||
        strlen(f[2]) >= sizeof(l->verifier) || strlen(f[3]) >= sizeof(l->provider) ||
        strlen(f[4]) != 64 || strlen(f[6]) > RETURN_MAX)
        return -1;
    memcpy(l->state, f[0], strlen(f[0]) + 1);
    memcpy(l->nonce, f[1], strlen(f[1]) + 1);
    memcpy(l->verifier, f[2], strlen(f[2]) + 1);
    memcpy(l->provider, f[3], strlen(f[3]) + 1);
    for (i = 0; i < 32; i++) {
        int hi = hexval(f[4][2 * i]), lo = hexval(f[4][2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        l->thumbprint[i] = (unsigned char)(hi << 4 | lo);
    }
    l->created = strtoll(f[5], NULL, 10);
    memcpy(l->ret, f[6], strlen(f[6]) + 1);
    return 0;
}

static void respond_503(struct conn *c, const char *why)
{
    c->error = why;
    conn_respond_error(c, 503,
                       "The sign-in service cannot be reached right now, so new sign-ins are not "
                       "possible. Existing sessions keep working. Try again in a minute.");
}

/* The browser's round trip to the provider. stepup_age >= 0: re-authenticate
 * (prompt=login, max_age); mfa: ask for the MFA acr. */
static enum sso_verdict start_login(struct conn *c, const struct http_request *req, int pidx,
                                    long long stepup_age, int mfa)
{
    const struct conf *cf = c->gen->conf;
    const struct conf_provider *pv = &cf->providers[pidx];
    struct sso_provider *rt = c->gen->providers[pidx];
    struct sso_meta *meta = NULL;
    struct jwt_keyset *keys = NULL;
    struct sso_login l;
    unsigned char vbuf[32], md[32];
    char challenge[64], blob[LOGIN_BLOB_MAX], sealed[2 * LOGIN_BLOB_MAX], cookie_name[96];
    char setc[3 * LOGIN_BLOB_MAX], redirect_uri[600], err[256];
    char *e_cid = NULL, *e_ru = NULL, *e_scope = NULL, *e_acr = NULL;
    struct evbuffer *loc = NULL;
    size_t blen;
    unsigned int mdlen = 0;

    sso_provider_snapshot(rt, &meta, &keys, err, sizeof(err));
    jwt_keyset_unref(keys);
    if (meta == NULL || !sso_provider_up(rt)) {
        log_warnx("sso: provider %s not available: %s (request %s)", pv->name,
                  err[0] ? err : "not answering", c->reqid);
        sso_meta_unref(meta);
        respond_503(c, "identity provider unavailable");
        return SSO_HANDLED;
    }
    memset(&l, 0, sizeof(l));
    if (random_token(l.state, sizeof(l.state), 16) == -1 ||
        random_token(l.nonce, sizeof(l.nonce), 16) == -1 || RAND_bytes(vbuf, 32) != 1) {
        sso_meta_unref(meta);
        conn_respond_error(c, 500, "Internal error.");
        return SSO_HANDLED;
    }
    b64url(vbuf, 32, l.verifier, sizeof(l.verifier));
    EVP_Digest(l.verifier, strlen(l.verifier), md, &mdlen, EVP_sha256(), NULL);
    b64url(md, 32, challenge, sizeof(challenge));
    snprintf(l.provider, sizeof(l.provider), "%s", pv->name);
    /* Same-site only: the return target is this route's own normalised
     * path and query, never a full URL (no open redirect). */
    if (c->path_len > RETURN_MAX || c->path_len == 0 || c->path[0] != '/' ||
        (c->path_len > 1 && c->path[1] == '/'))
        snprintf(l.ret, sizeof(l.ret), "/");
    else
        snprintf(l.ret, sizeof(l.ret), "%.*s", (int)c->path_len, c->path);
    memcpy(l.thumbprint, c->peer.thumbprint, 32);
    l.created = now_s();
    blen = login_encode(&l, blob, sizeof(blob));
    if (blen == 0 || session_blob_seal(c->gen->keyring, LOGIN_COOKIE, blob, blen, sealed,
                                       sizeof(sealed)) == -1) {
        sso_meta_unref(meta);
        conn_respond_error(c, 500, "Internal error.");
        return SSO_HANDLED;
    }
    snprintf(cookie_name, sizeof(cookie_name), "%s_%.12s", LOGIN_COOKIE, l.state);
    session_set_cookie(setc, sizeof(setc), cookie_name, sealed,
                       (int64_t)(cf->login_timeout_ms / 1000));

    snprintf(redirect_uri, sizeof(redirect_uri), "https://%.*s/.zt/callback",
             (int)(find_header(req, "host") ? find_header(req, "host")->value_len : 0),
             find_header(req, "host") ? find_header(req, "host")->value : "");
    e_cid = httpc_urlencode(pv->client_id);
    e_ru = httpc_urlencode(redirect_uri);
    e_scope = httpc_urlencode(pv->scopes);
    e_acr = httpc_urlencode(pv->mfa_acr);
    loc = evbuffer_new();
    evbuffer_add_printf(loc,
                        "%s%cresponse_type=code&client_id=%s&redirect_uri=%s&scope=%s&state=%s"
                        "&nonce=%s&code_challenge=%s&code_challenge_method=S256",
                        meta->authorization_endpoint,
                        strchr(meta->authorization_endpoint, '?') ? '&' : '?', e_cid, e_ru, e_scope,
                        l.state, l.nonce, challenge);
    if (stepup_age >= 0)
        evbuffer_add_printf(loc, "&prompt=login&max_age=%lld", stepup_age);
    if (mfa && pv->mfa_acr[0] != '\0')
        evbuffer_add_printf(loc, "&acr_values=%s", e_acr);
    evbuffer_add(loc, "", 1);
    {
        char *hdrs = NULL;
        size_t hl = strlen((const char *)evbuffer_pullup(loc, -1)) + strlen(setc) + 64;
        hdrs = malloc(hl);
        snprintf(hdrs, hl, "Location: %s\r\nSet-Cookie: %s\r\n",
                 (const char *)evbuffer_pullup(loc, -1), setc);
        c->status = 302;
        audit_identity(c, stepup_age >= 0 || mfa ? "step-up" : "login", "redirect to provider",
                       NULL);
        conn_respond_lit(c, 302, hdrs, "text/html; charset=utf-8",
                         "<!doctype html><p>Signing you in&hellip;</p>\n", 1);
        free(hdrs);
    }
    evbuffer_free(loc);
    free(e_cid);
    free(e_ru);
    free(e_scope);
    free(e_acr);
    sso_meta_unref(meta);
    OPENSSL_cleanse(&l, sizeof(l));
    OPENSSL_cleanse(blob, sizeof(blob));
    return SSO_HANDLED;
}

/* ---- the callback ----------------------------------------------------- */

static void login_finish(struct conn *c);

static void jwks_for_login_cb(const struct httpc_response *r, void *arg);
static void kid_retry_cb(evutil_socket_t fd, short what, void *arg);

static enum jwt_result verify_id_token(struct conn *c, struct jwt_claims *claims,
                                       const char **reason, int *unknown_kid)
{
    const struct conf *cf = c->gen->conf;
    struct sso_req *s = c->sso;
    const struct conf_provider *pv = &cf->providers[s->provider];
    struct sso_meta *meta = NULL;
    struct jwt_keyset *keys = NULL;
    const char *aud[1] = {pv->client_id};
    struct jwt_expect ex;
    enum jwt_result rc;

    sso_provider_snapshot(c->gen->providers[s->provider], &meta, &keys, NULL, 0);
    sso_meta_unref(meta);
    if (keys == NULL) {
        *reason = "provider keys not available";
        return JWT_ERR_UNKNOWN_KID;
    }
    memset(&ex, 0, sizeof(ex));
    ex.issuer = pv->issuer;
    ex.audiences = aud;
    ex.naudiences = 1;
    ex.azp = pv->client_id;
    ex.nonce = s->login->nonce;
    ex.now = now_s();
    ex.skew = (int64_t)(pv->clock_skew_ms / 1000);
    rc = jwt_verify(s->id_token, s->id_token_len, keys, &ex, claims, reason);
    jwt_keyset_unref(keys);
    *unknown_kid = rc == JWT_ERR_UNKNOWN_KID;
    return rc;
}

static int fetch_jwks(struct conn *c, httpc_done_cb cb)
{
    struct sso_req *s = c->sso;
    const struct conf_provider *pv = &c->gen->conf->providers[s->provider];
    struct sso_provider *rt = c->gen->providers[s->provider];
    struct sso_meta *meta = NULL;
    struct jwt_keyset *keys = NULL;
    struct httpc_opts o;

    if (!sso_provider_jwks_claim(rt, pv->jwks_min_refresh_ms))
        return -1;
    sso_provider_snapshot(rt, &meta, &keys, NULL, 0);
    jwt_keyset_unref(keys);
    if (meta == NULL) {
        sso_provider_jwks_done(rt, NULL);
        return -1;
    }
    memset(&o, 0, sizeof(o));
    o.url = meta->jwks_uri;
    o.ca_file = pv->ca;
    o.max_body = 256 * 1024;
    s->hreq = httpc_start(c->w->httpc, &o, cb, c);
    sso_meta_unref(meta);
    if (s->hreq == NULL) {
        sso_provider_jwks_done(rt, NULL);
        return -1;
    }
    return 0;
}

/* Publish keys fetched by a worker. */
static void jwks_publish(struct conn *c, const struct httpc_response *r)
{
    struct sso_req *s = c->sso;
    struct sso_provider *rt = c->gen->providers[s->provider];
    struct jwt_keyset *ks = NULL;
    char err[256];

    if (r->status == 200 &&
        jwt_keyset_parse(r->body, r->body_len, NULL, NULL, &ks, err, sizeof(err)) == 0) {
        log_info("sso: provider %s: JWKS refetched after an unknown key id (%zu keys)",
                 c->gen->conf->providers[s->provider].name, jwt_keyset_count(ks));
        sso_provider_jwks_done(rt, ks);
        jwt_keyset_unref(ks);
    } else {
        log_warnx("sso: provider %s: JWKS refetch failed: %s",
                  c->gen->conf->providers[s->provider].name,
                  r->status != 200 ? (r->error ? r->error : "HTTP error") : err);
        sso_provider_jwks_done(rt, NULL);
    }
}

static void login_fail(struct conn *c, int status, const char *reason, const char *page)
{
    audit_identity(c, "login refused", reason, NULL);
    metrics_count(METRICS_LOGIN_FAILED);
    c->error = reason;
    conn_respond_error(c, status, page);
}

static void login_verify_and_finish(struct conn *c, int may_refetch)
{
    struct sso_req *s = c->sso;
    struct jwt_claims *claims = calloc(1, sizeof(*claims));
    const char *reason = NULL;
    int unknown = 0;

    if (claims == NULL) {
        conn_respond_error(c, 500, "Internal error.");
        return;
    }
    if (verify_id_token(c, claims, &reason, &unknown) != JWT_OK) {
        free(claims);
        if (unknown && may_refetch && fetch_jwks(c, jwks_for_login_cb) == 0) {
            s->wait = WAIT_JWKS_LOGIN;
            return;
        }
        /* The keys were fetched a moment ago (or another thread is fetching
         * them): look again shortly rather than fail the login. */
        if (unknown && may_refetch && s->kid_retries < KID_RETRY_MAX) {
            struct timeval tv = {0, KID_RETRY_US};
            s->kid_retries++;
            if (s->timer == NULL)
                s->timer = evtimer_new(c->w->base, kid_retry_cb, c);
            if (s->timer != NULL && evtimer_add(s->timer, &tv) == 0) {
                s->wait = WAIT_JWKS_LOGIN;
                return;
            }
        }
        login_fail(c, 401, reason,
                   "The sign-in could not be verified (the identity token was refused). Please "
                   "try again.");
        return;
    }
    {
        const struct conf *cf = c->gen->conf;
        const char *amr[JWT_AMR_MAX];
        struct session_login in;
        size_t i;

        for (i = 0; i < claims->namr; i++)
            amr[i] = claims->amr[i];
        memset(&in, 0, sizeof(in));
        in.provider = cf->providers[s->provider].name;
        in.subject = claims->sub;
        in.email = claims->email[0] ? claims->email : NULL;
        in.acr = claims->acr[0] ? claims->acr : NULL;
        in.amr = amr;
        in.namr = claims->namr;
        in.auth_time = claims->has_auth_time ? claims->auth_time : claims->iat;
        in.thumbprint = c->peer.thumbprint;
        in.sid = claims->sid[0] ? claims->sid : NULL;
        if (session_init(&s->sess, &in, now_s(), (int64_t)(cf->session_lifetime_ms / 1000),
                         (int64_t)(cf->session_idle_ms / 1000)) == -1) {
            free(claims);
            login_fail(c, 502, "identity token claims unusable",
                       "The sign-in returned an identity this proxy cannot use.");
            return;
        }
    }
    free(claims);
    login_finish(c);
}

static void kid_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    c->sso->wait = WAIT_NONE;
    login_verify_and_finish(c, 1);
}

static void jwks_for_login_cb(const struct httpc_response *r, void *arg)
{
    struct conn *c = arg;

    c->sso->hreq = NULL;
    c->sso->wait = WAIT_NONE;
    jwks_publish(c, r);
    login_verify_and_finish(c, 0);
}

static void token_cb(const struct httpc_response *r, void *arg)
{
    struct conn *c = arg;
    struct sso_req *s = c->sso;
    json_error_t jerr;
    json_t *doc = NULL, *idt;

    s->hreq = NULL;
    s->wait = WAIT_NONE;
    if (r->status == 0) {
        log_warnx("sso: token endpoint unreachable: %s (request %s)", r->error, c->reqid);
        sso_provider_mark_down(c->gen->providers[s->provider]);
        respond_503(c, "token endpoint unreachable");
        return;
    }
    if (r->status != 200) {
        log_warnx("sso: token endpoint answered %ld (request %s)", r->status, c->reqid);
        login_fail(c, 502, "token endpoint refused the code",
                   "The identity provider refused to complete the sign-in. Please try again.");
        return;
    }
    doc = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    idt = doc ? json_object_get(doc, "id_token") : NULL;
    if (!json_is_string(idt) || json_string_length(idt) > JWT_TOKEN_MAX_DEFAULT) {
        json_decref(doc);
        login_fail(c, 502, "token response without a usable id_token",
                   "The identity provider's answer was not understood.");
        return;
    }
    if (s->id_token != NULL) {
        OPENSSL_cleanse(s->id_token, s->id_token_len);
        free(s->id_token);
    }
    s->id_token_len = 0;
    s->id_token = malloc(json_string_length(idt) + 1);
    s->id_token_len = s->id_token != NULL ? json_string_length(idt) : 0;
    if (s->id_token == NULL) {
        json_decref(doc);
        login_fail(c, 503, "out of memory", "The proxy is overloaded: try again.");
        return;
    }
    memcpy(s->id_token, json_string_value(idt), s->id_token_len + 1);
    json_decref(doc);
    login_verify_and_finish(c, 1);
}

static void login_finish(struct conn *c)
{
    const struct conf *cf = c->gen->conf;
    struct sso_req *s = c->sso;
    char sealed[SESSION_COOKIE_MAX], setc[SESSION_SET_COOKIE_MAX], clr[256], name[96];
    char *hdrs;
    size_t hl;

    if (session_cookie_seal(c->gen->keyring, cf->session_cookie_name, &s->sess, sealed,
                            sizeof(sealed), NULL) == -1 ||
        session_set_cookie(setc, sizeof(setc), cf->session_cookie_name, sealed,
                           s->sess.expires_at - now_s()) == -1) {
        conn_respond_error(c, 500, "Internal error.");
        return;
    }
    snprintf(name, sizeof(name), "%s_%.12s", LOGIN_COOKIE, s->login->state);
    session_clear_cookie(clr, sizeof(clr), name);
    hl = strlen(s->login->ret) + strlen(setc) + strlen(clr) + 64;
    hdrs = malloc(hl);
    snprintf(hdrs, hl, "Location: %s\r\nSet-Cookie: %s\r\nSet-Cookie: %s\r\n", s->login->ret, setc,
             clr);
    audit_identity(c, "login", "session issued",
                   s->sess.email[0] ? s->sess.email : s->sess.subject);
    metrics_count(METRICS_LOGIN_OK);
    conn_respond_lit(c, 302, hdrs, "text/html; charset=utf-8", "<!doctype html><p>Signed in.</p>\n",
                     1);
    free(hdrs);
}

static enum sso_verdict handle_callback(struct conn *c, const struct http_request *req)
{
    const struct conf *cf = c->gen->conf;
    struct sso_req *s = sso_req_get(c);
    char state[128], code[1024], cname[96], blob[LOGIN_BLOB_MAX], redirect_uri[600], errp[64];
    const char *cv = NULL;
    const struct http_header *host = find_header(req, "host");
    size_t cvlen = 0, blen = 0, i;
    struct httpc_opts o;
    struct evbuffer *body;
    char *e_code, *e_ru, *e_ver, *e_user, *e_pass;
    struct sso_meta *meta = NULL;
    struct jwt_keyset *keys = NULL;

    if (s == NULL || cf->nproviders == 0) {
        conn_respond_error(c, 404, "Sign-in is not configured here.");
        return SSO_HANDLED;
    }
    if (req->query != NULL &&
        query_param(req->query, req->query_len, "error", errp, sizeof(errp)) == 0) {
        login_fail(c, 403, "provider returned an error",
                   "The identity provider did not sign you in (it returned an error).");
        return SSO_HANDLED;
    }
    if (req->query == NULL ||
        query_param(req->query, req->query_len, "state", state, sizeof(state)) == -1 ||
        query_param(req->query, req->query_len, "code", code, sizeof(code)) == -1 ||
        strlen(state) < 12) {
        login_fail(c, 400, "callback without state or code",
                   "This sign-in link is incomplete. Open the application again.");
        return SSO_HANDLED;
    }
    snprintf(cname, sizeof(cname), "__Host-%s_%.12s", LOGIN_COOKIE, state);
    if (find_cookie(req, cname, &cv, &cvlen) == -1 ||
        session_blob_open(c->gen->keyring, LOGIN_COOKIE, cv, cvlen, blob, sizeof(blob) - 1,
                          &blen) == -1) {
        login_fail(c, 400, "no valid login cookie for this state",
                   "This sign-in was not started here or has expired. Open the application "
                   "again.");
        return SSO_HANDLED;
    }
    blob[blen] = '\0';
    if (s->login == NULL)
        s->login = calloc(1, sizeof(*s->login));
    if (s->login == NULL) {
        OPENSSL_cleanse(blob, sizeof(blob));
        conn_respond_error(c, 500, "Internal error.");
        return SSO_HANDLED;
    }
    if (login_decode(blob, s->login) == -1 || strlen(s->login->state) != strlen(state) ||
        CRYPTO_memcmp(s->login->state, state, strlen(state)) != 0) {
        OPENSSL_cleanse(blob, sizeof(blob));
        login_fail(c, 400, "state mismatch",
                   "This sign-in does not match the one started here. Open the application "
                   "again.");
        return SSO_HANDLED;
    }
    OPENSSL_cleanse(blob, sizeof(blob));
    if (CRYPTO_memcmp(s->login->thumbprint, c->peer.thumbprint, 32) != 0) {
        login_fail(c, 403, "login finished on another device",
                   "This sign-in was started on another device.");
        return SSO_HANDLED;
    }
    if (now_s() - s->login->created > (int64_t)(cf->login_timeout_ms / 1000)) {
        login_fail(c, 400, "login took too long",
                   "This sign-in took too long. Open the application again.");
        return SSO_HANDLED;
    }
    s->provider = -1;
    for (i = 0; i < cf->nproviders; i++)
        if (strcmp(cf->providers[i].name, s->login->provider) == 0)
            s->provider = (int)i;
    if (s->provider < 0) {
        login_fail(c, 400, "login for an unknown provider", "This sign-in is no longer valid.");
        return SSO_HANDLED;
    }
    {
        /* RFC 9207: a provider that names itself in the response must be the
         * one the login was sent to (mix-up attacks). */
        char iss[512];
        if (query_param(req->query, req->query_len, "iss", iss, sizeof(iss)) == 0 &&
            strcmp(iss, cf->providers[s->provider].issuer) != 0) {
            login_fail(c, 400, "authorization response from another issuer",
                       "This sign-in came back from another identity provider.");
            return SSO_HANDLED;
        }
    }
    sso_provider_snapshot(c->gen->providers[s->provider], &meta, &keys, NULL, 0);
    jwt_keyset_unref(keys);
    if (meta == NULL) {
        respond_503(c, "identity provider unavailable");
        return SSO_HANDLED;
    }
    snprintf(redirect_uri, sizeof(redirect_uri), "https://%.*s/.zt/callback",
             (int)(host ? host->value_len : 0), host ? host->value : "");
    e_code = httpc_urlencode(code);
    e_ru = httpc_urlencode(redirect_uri);
    e_ver = httpc_urlencode(s->login->verifier);
    /* RFC 6749 2.3.1: client_secret_basic credentials are form-encoded first. */
    e_user = httpc_urlencode(cf->providers[s->provider].client_id);
    e_pass = httpc_urlencode(cf->providers[s->provider].client_secret);
    body = evbuffer_new();
    evbuffer_add_printf(body,
                        "grant_type=authorization_code&code=%s&redirect_uri=%s"
                        "&code_verifier=%s",
                        e_code, e_ru, e_ver);
    memset(&o, 0, sizeof(o));
    o.method = "POST";
    o.url = meta->token_endpoint;
    o.body = (const char *)evbuffer_pullup(body, -1);
    o.body_len = evbuffer_get_length(body);
    o.basic_user = e_user;
    o.basic_password = e_pass;
    o.ca_file = cf->providers[s->provider].ca;
    o.max_body = TOKEN_RESPONSE_MAX;
    o.timeout_ms = 15000;
    {
        static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
                                           "Accept: application/json", NULL};
        o.headers = hdrs;
        s->hreq = httpc_start(c->w->httpc, &o, token_cb, c);
    }
    OPENSSL_cleanse(e_pass, strlen(e_pass));
    OPENSSL_cleanse(code, sizeof(code));
    free(e_code);
    free(e_ru);
    free(e_ver);
    free(e_user);
    free(e_pass);
    evbuffer_free(body);
    sso_meta_unref(meta);
    if (s->hreq == NULL) {
        respond_503(c, "cannot start token request");
        return SSO_HANDLED;
    }
    s->wait = WAIT_TOKEN;
    conn_set_state(c, CST_LOCAL);
    bufferevent_disable(c->bev, EV_READ);
    return SSO_HANDLED;
}

/* ---- sessions and bearer tokens ---------------------------------------- */

/* Whether two certificate thumbprints are equal: a word at a time with no
 * early exit. (Not secret, and checked again where it matters; this is the
 * per-request re-check, where CRYPTO_memcmp's byte loop showed.) */
static inline int thumbprint_eq(const uint8_t *a, const uint8_t *b)
{
    uint64_t x, y, d = 0;
    size_t i;

    for (i = 0; i < SESSION_THUMBPRINT_LEN; i += sizeof(x)) {
        memcpy(&x, a + i, sizeof(x));
        memcpy(&y, b + i, sizeof(y));
        d |= x ^ y;
    }
    return d == 0;
}

/* Try the session cookie: the session found (also in s->cur), or NULL. */
static const struct session *try_cookie(struct conn *c, const struct http_request *req, int pidx)
{
    const struct conf *cf = c->gen->conf;
    struct sso_req *s = c->sso;
    struct sso_cache *sc = &s->cache;
    const char *v;
    size_t vlen;
    int reseal = 0;
    int64_t now = now_s();
    uint64_t rev_gen = 0;
    enum session_result r;
    const struct session *cur = &s->sess;

    if (sc->cname[0] == '\0')
        snprintf(sc->cname, sizeof(sc->cname), "__Host-%s", cf->session_cookie_name);
    if (find_cookie(req, sc->cname, &v, &vlen) == -1)
        return NULL;
    if (proxy_revocations != NULL)
        rev_gen = session_revocations_generation(proxy_revocations);
    /* The session this connection opened from the same bytes: only the
     * checks that depend on time, and none if nothing was revoked since. */
    if (sc->have && sc->cookie_len == vlen && memcmp(sc->cookie, v, vlen) == 0 &&
        sc->rev_gen == rev_gen && thumbprint_eq(sc->sess.thumbprint, c->peer.thumbprint) &&
        session_check_times(&sc->sess, now, &reseal) == SESSION_OK) {
        cur = &sc->sess;
        goto opened;
    }
    if (sc->have)
        cache_drop(sc); /* opened from scratch below, with every check and audit line */
    r = session_cookie_open(c->gen->keyring, cf->session_cookie_name, v, vlen, now,
                            c->peer.thumbprint, &s->sess, &reseal);
    if (r == SESSION_OK && proxy_revocations != NULL)
        r = session_revocations_check(proxy_revocations, &s->sess);
    if (r == SESSION_WRONG_DEVICE) {
        log_warnx("sso: possible stolen cookie: session of %s (issued for another device "
                  "certificate) presented by device %s from %s, request %s",
                  s->sess.email[0] ? s->sess.email : s->sess.subject, c->peer.device_id, c->client,
                  c->reqid);
        metrics_count(METRICS_COOKIE_WRONG_DEVICE);
        return NULL;
    }
    if (r != SESSION_OK) {
        audit_identity(c, "session refused", session_result_str(r),
                       s->sess.subject[0] ? s->sess.subject : NULL);
        memset(&s->sess, 0, sizeof(s->sess));
        return NULL;
    }
    if (cache_room(&sc->cookie, &sc->cookie_cap, vlen) == 0) {
        memcpy(sc->cookie, v, vlen);
        sc->cookie_len = vlen;
        memcpy(&sc->sess, &s->sess, sizeof(sc->sess));
        sc->rev_gen = rev_gen;
        sc->serial++;
        sc->have = 1;
    }
opened:
    if (strcmp(cur->provider, cf->providers[pidx].name) != 0)
        return NULL; /* signed in with another provider: this route wants its own */
    if (reseal) {
        char sealed[SESSION_COOKIE_MAX];

        if (cur != &s->sess) { /* the cached session stays as its cookie has it */
            memcpy(&s->sess, cur, sizeof(s->sess));
            cur = &s->sess;
        }
        session_touch(&s->sess, now, (int64_t)(cf->session_idle_ms / 1000));
        /* sc->have: s->sess was sc->sess before the touch (a hit, or just stored). */
        if (sc->have && sc->reseal_len > 0 && sc->reseal_serial == sc->serial &&
            sc->reseal_at == now) {
            s->reseal_cached = 1;
        } else if (session_cookie_seal(c->gen->keyring, cf->session_cookie_name, &s->sess, sealed,
                                       sizeof(sealed), NULL) == 0 &&
                   s->nset < 2 &&
                   (s->set_cookie[s->nset] != NULL ||
                    (s->set_cookie[s->nset] = calloc(1, SESSION_SET_COOKIE_MAX)) != NULL) &&
                   session_set_cookie(s->set_cookie[s->nset], SESSION_SET_COOKIE_MAX,
                                      cf->session_cookie_name, sealed,
                                      s->sess.expires_at - now) == 0) {
            size_t n = strlen(s->set_cookie[s->nset]);

            if (sc->have && cache_room(&sc->reseal, &sc->reseal_cap, n + 1) == 0) {
                memcpy(sc->reseal, s->set_cookie[s->nset], n + 1);
                sc->reseal_len = n;
                sc->reseal_at = now;
                sc->reseal_serial = sc->serial;
            }
            s->nset++;
        }
        OPENSSL_cleanse(sealed, sizeof(sealed));
    }
    s->cur = cur;
    return cur;
}

static void jwks_for_bearer_cb(const struct httpc_response *r, void *arg)
{
    struct conn *c = arg;

    c->sso->hreq = NULL;
    c->sso->wait = WAIT_NONE;
    jwks_publish(c, r);
    /* Process the head again: the bearer token is verified with new keys. */
    c->sso->local_kind = 1; /* no second refetch */
    conn_read_head(c);
}

static void respond_401(struct conn *c, const char *error, const char *reason)
{
    char hdr[256];

    snprintf(hdr, sizeof(hdr), "WWW-Authenticate: Bearer error=\"%s\"\r\n", error);
    c->error = reason;
    audit_identity(c, "bearer refused", reason, NULL);
    metrics_count(METRICS_BEARER_REFUSED);
    conn_respond_lit(c, 401, hdr, "application/json",
                     "{\"error\":\"unauthorized\",\"message\":\"a valid bearer token or "
                     "session is required\"}\n",
                     0);
}

/* 1 identity, 0 no token, -1 handled (refused or waiting). */
static int try_bearer(struct conn *c, const struct http_request *req, int pidx)
{
    const struct conf *cf = c->gen->conf;
    const struct conf_provider *pv = &cf->providers[pidx];
    const struct conf_route *r = c->route;
    const struct http_header *h = find_header(req, "authorization");
    struct sso_req *s = c->sso;
    struct jwt_claims *cl;
    struct sso_meta *meta = NULL;
    struct jwt_keyset *keys = NULL;
    struct jwt_expect ex;
    const char *reason = NULL;
    enum jwt_result rc;

    if (h == NULL || h->value_len < 7 || strncasecmp(h->value, "bearer ", 7) != 0)
        return 0;
    if (h->value_len - 7 > JWT_TOKEN_MAX_DEFAULT) {
        respond_401(c, "invalid_token", "bearer token too large");
        return -1;
    }
    if (s->bearer != NULL) {
        OPENSSL_cleanse(s->bearer, s->bearer_len);
        free(s->bearer);
    }
    s->bearer_len = 0;
    s->bearer = malloc(h->value_len - 7 + 1);
    if (s->bearer == NULL) {
        respond_503(c, "out of memory");
        return -1;
    }
    s->bearer_len = h->value_len - 7;
    memcpy(s->bearer, h->value + 7, s->bearer_len);
    s->bearer[s->bearer_len] = '\0';
    sso_provider_snapshot(c->gen->providers[pidx], &meta, &keys, NULL, 0);
    sso_meta_unref(meta);
    if (keys == NULL) {
        respond_503(c, "identity provider keys unavailable");
        return -1;
    }
    cl = calloc(1, sizeof(*cl));
    memset(&ex, 0, sizeof(ex));
    ex.issuer = pv->issuer;
    ex.audiences = (const char *const *)pv->bearer_audiences;
    ex.naudiences = pv->nbearer_audiences;
    ex.now = now_s();
    ex.skew = (int64_t)(pv->clock_skew_ms / 1000);
    rc = cl != NULL ? jwt_verify(s->bearer, s->bearer_len, keys, &ex, cl, &reason)
                    : JWT_ERR_INTERNAL;
    jwt_keyset_unref(keys);
    if (rc == JWT_ERR_UNKNOWN_KID && s->local_kind == 0) {
        s->provider = pidx;
        if (fetch_jwks(c, jwks_for_bearer_cb) == 0) {
            free(cl);
            s->wait = WAIT_JWKS_BEARER;
            conn_set_state(c, CST_LOCAL);
            bufferevent_disable(c->bev, EV_READ);
            return -1;
        }
    }
    if (rc != JWT_OK) {
        free(cl);
        respond_401(c, "invalid_token", reason ? reason : "invalid token");
        return -1;
    }
    if (r->bearer_bound &&
        (!cl->has_cnf_x5t_s256 || !jwt_cnf_x5t_match(cl->cnf_x5t_s256, c->peer.thumbprint))) {
        free(cl);
        respond_401(c, "invalid_token",
                    "token not bound to this device certificate (cnf.x5t#S256)");
        return -1;
    }
    {
        const char *amr[JWT_AMR_MAX];
        struct session_login in;
        size_t i;

        for (i = 0; i < cl->namr; i++)
            amr[i] = cl->amr[i];
        memset(&in, 0, sizeof(in));
        in.provider = pv->name;
        in.subject = cl->sub;
        in.email = cl->email[0] ? cl->email : NULL;
        in.acr = cl->acr[0] ? cl->acr : NULL;
        in.amr = amr;
        in.namr = cl->namr;
        in.auth_time = cl->has_auth_time ? cl->auth_time : (cl->has_iat ? cl->iat : now_s());
        in.thumbprint = c->peer.thumbprint;
        if (session_init(&s->sess, &in, now_s(), 3600, 3600) == -1) {
            free(cl);
            respond_401(c, "invalid_token", "token claims unusable");
            return -1;
        }
    }
    free(cl);
    s->cur = &s->sess;
    s->from_bearer = 1;
    return 1;
}

enum sso_verdict sso_authenticate(struct conn *c, const struct http_request *req)
{
    const struct conf_route *r = c->route;
    const struct conf *cf = c->gen->conf;
    struct sso_req *s;
    int pidx = r->auth_provider, rc;
    int browser = (req->method_len == 3 && memcmp(req->method, "GET", 3) == 0) ||
                  (req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0);

    if (r->auth_mode == CONF_AUTH_NONE || pidx < 0)
        return SSO_CONTINUE;
    s = sso_req_get(c);
    if (s == NULL) {
        conn_respond_error(c, 500, "Internal error.");
        return SSO_HANDLED;
    }
    s->cur = NULL;
    s->nset = 0;
    if (r->auth_mode == CONF_AUTH_BEARER || r->auth_mode == CONF_AUTH_ANY) {
        rc = try_bearer(c, req, pidx);
        if (rc == -1)
            return SSO_HANDLED;
        if (rc == 1)
            goto have;
    }
    if (r->auth_mode == CONF_AUTH_SESSION || r->auth_mode == CONF_AUTH_ANY) {
        if (try_cookie(c, req, pidx))
            goto have;
        if (browser && find_header(req, "authorization") == NULL)
            return start_login(c, req, pidx, -1, 0);
    }
    respond_401(c, "invalid_request", "no session or bearer token");
    return SSO_HANDLED;
have:
    /* Step-up: the route wants a recent or stronger login. */
    if (r->max_auth_age_ms > 0 &&
        now_s() - s->cur->auth_time > (int64_t)(r->max_auth_age_ms / 1000)) {
        if (s->from_bearer || !browser) {
            respond_401(c, "insufficient_user_authentication", "authentication too old");
            return SSO_HANDLED;
        }
        return start_login(c, req, pidx, (long long)(r->max_auth_age_ms / 1000),
                           r->require_mfa && !is_mfa(&cf->providers[pidx], s->cur));
    }
    if (r->require_mfa && !is_mfa(&cf->providers[pidx], s->cur)) {
        if (s->from_bearer || !browser) {
            respond_401(c, "insufficient_user_authentication", "multi-factor login required");
            return SSO_HANDLED;
        }
        /* A login that just came back without MFA would come back without
         * it again: say so instead of sending the browser round in a loop. */
        if (now_s() - s->cur->issued_at < STEPUP_FRESH_S) {
            audit_identity(c, "step-up refused", "fresh login without multi-factor authentication",
                           s->cur->email[0] ? s->cur->email : s->cur->subject);
            c->error = "multi-factor authentication required";
            conn_respond_error(c, 403,
                               "This application needs a sign-in with multi-factor "
                               "authentication, and your sign-in did not use it. Set up a "
                               "second factor with IT, then try again.");
            return SSO_HANDLED;
        }
        return start_login(c, req, pidx, 0, 1);
    }
    return SSO_CONTINUE;
}

/* tier "\n" groups, for the header cache key. */
static int hkey_same(const struct sso_cache *sc, const char *tier, size_t tl, const char *groups,
                     size_t gl)
{
    return sc->hkey_len == tl + 1 + gl && memcmp(sc->hkey, tier, tl) == 0 && sc->hkey[tl] == '\n' &&
           memcmp(sc->hkey + tl + 1, groups, gl) == 0;
}

void sso_upstream_headers(struct conn *c, struct sbuf *out)
{
    const struct conf *cf = c->gen->conf;
    struct sso_req *s = c->sso;
    struct sso_cache *sc;
    char tok[JWT_ASSERTION_MAX];
    struct jwt_assertion a;
    size_t toklen = 0, start, tl, gl;
    const char *tier;
    int64_t now, iat = 0;
    int lifetime = (int)(cf->assertion_lifetime_ms / 1000), cacheable;

    if (s == NULL || s->cur == NULL)
        return;
    sc = &s->cache;
    tier = c->w->tier_name[0] ? c->w->tier_name : "untrusted";
    tl = strlen(tier);
    gl = strlen(c->w->groups);
    now = now_s();
    /* Only a cookie session is kept (s->cur is then sc->sess, or a copy of it touched for its
     * re-seal). */
    cacheable = !s->from_bearer && sc->have && c->gen->signer != NULL;
    if (cacheable && sc->hdr_have && sc->hdr_serial == sc->serial && sc->hdr_route == c->route &&
        hkey_same(sc, tier, tl, c->w->groups, gl) &&
        jwt_assertion_reusable(sc->hdr_iat, now, lifetime, ASSERTION_REUSE)) {
        sbuf_add(out, sc->hdr, sc->hdr_len);
        return;
    }
    start = out->len;
    sbuf_lit(out, "X-ZT-User: ");
    sbuf_str(out, c->route->user_header == CONF_USER_EMAIL && s->cur->email[0] ? s->cur->email
                                                                               : s->cur->subject);
    sbuf_lit(out, "\r\n");
    if (s->cur->email[0]) {
        sbuf_lit(out, "X-ZT-Email: ");
        sbuf_str(out, s->cur->email);
        sbuf_lit(out, "\r\n");
    }
    if (c->gen->signer == NULL)
        return;
    memset(&a, 0, sizeof(a));
    a.iss = cf->assertion_issuer;
    a.aud = c->route->name;
    a.sub = s->cur->subject;
    a.email = s->cur->email[0] ? s->cur->email : NULL;
    a.device = c->peer.device_id;
    a.device_tier = tier;
    {
        /* The live groups (X-ZT-Groups), split for the JSON array. */
        static __thread const char *glist[64];
        static __thread char gbuf[sizeof(c->w->groups)];
        char *p = gbuf;
        size_t n = 0;

        snprintf(gbuf, sizeof(gbuf), "%s", c->w->groups);
        while (*p != '\0' && n < 64) {
            char *comma = strchr(p, ',');
            glist[n++] = p;
            if (comma == NULL)
                break;
            *comma = '\0';
            p = comma + 1;
        }
        a.groups = glist;
        a.ngroups = n;
    }
    a.now = now;
    a.lifetime = lifetime;
    if (jwt_assertion_sign_iat(c->gen->signer, &a, c->w->assertions, tok, sizeof(tok), &toklen,
                               &iat) != 0) {
        log_warnx("sso: cannot sign the assertion for request %s", c->reqid);
        return;
    }
    sbuf_lit(out, "X-ZT-Assertion: ");
    sbuf_add(out, tok, toklen);
    sbuf_lit(out, "\r\n");
    if (!cacheable || out->failed)
        return;
    cache_drop_headers(sc);
    if (cache_room(&sc->hdr, &sc->hdr_cap, out->len - start) == -1 ||
        cache_room(&sc->hkey, &sc->hkey_cap, tl + 1 + gl) == -1)
        return;
    memcpy(sc->hdr, out->p + start, out->len - start);
    sc->hdr_len = out->len - start;
    memcpy(sc->hkey, tier, tl);
    sc->hkey[tl] = '\n';
    memcpy(sc->hkey + tl + 1, c->w->groups, gl);
    sc->hkey_len = tl + 1 + gl;
    sc->hdr_serial = sc->serial;
    sc->hdr_route = c->route;
    sc->hdr_iat = iat;
    sc->hdr_have = 1;
}

void sso_response_headers(struct conn *c, struct sbuf *out)
{
    struct sso_req *s = c->sso;
    int i;

    if (s == NULL)
        return;
    if (s->reseal_cached) {
        sbuf_lit(out, "Set-Cookie: ");
        sbuf_add(out, s->cache.reseal, s->cache.reseal_len);
        sbuf_lit(out, "\r\n");
    }
    for (i = 0; i < s->nset; i++) {
        sbuf_lit(out, "Set-Cookie: ");
        sbuf_str(out, s->set_cookie[i]);
        sbuf_lit(out, "\r\n");
    }
}

int sso_identity(struct conn *c, const char **sub, const char **email, int64_t *auth_time, int *mfa)
{
    struct sso_req *s = c->sso;

    if (s == NULL || s->cur == NULL)
        return 0;
    *sub = s->cur->subject;
    *email = s->cur->email;
    *auth_time = s->cur->auth_time;
    *mfa = c->route->auth_provider >= 0 &&
           is_mfa(&c->gen->conf->providers[c->route->auth_provider], s->cur);
    return 1;
}

int sso_still_valid(struct conn *c, int64_t now)
{
    struct sso_req *s = c->sso;

    if (s == NULL || s->cur == NULL)
        return 0;
    if (!s->from_bearer && now >= s->cur->expires_at) {
        audit_identity(c, "websocket closed", "session expired", s->cur->subject);
        return -1;
    }
    if (proxy_revocations != NULL &&
        session_revocations_check(proxy_revocations, s->cur) == SESSION_REVOKED) {
        audit_identity(c, "websocket closed", "session revoked", s->cur->subject);
        return -1;
    }
    return 0;
}

enum sso_verdict sso_step_up(struct conn *c, const struct http_request *req, int64_t max_age,
                             int mfa)
{
    struct sso_req *s = c->sso;
    int pidx = c->route->auth_provider;
    int browser = (req->method_len == 3 && memcmp(req->method, "GET", 3) == 0) ||
                  (req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0);

    if (pidx < 0)
        return SSO_CONTINUE; /* no provider: the caller denies */
    if (s != NULL && s->cur != NULL && (s->from_bearer || !browser)) {
        respond_401(c, "insufficient_user_authentication",
                    mfa ? "multi-factor login required" : "authentication too old");
        return SSO_HANDLED;
    }
    /* A login that just came back and still falls short would loop. */
    if (s != NULL && s->cur != NULL && now_s() - s->cur->issued_at < STEPUP_FRESH_S &&
        (mfa ? !is_mfa(&c->gen->conf->providers[pidx], s->cur)
             : (max_age >= 0 && now_s() - s->cur->auth_time > max_age)))
        return SSO_CONTINUE;
    return start_login(c, req, pidx, max_age >= 0 ? (long long)max_age : -1, mfa);
}

/* ---- /.zt/ endpoints ---------------------------------------------------- */

int sso_is_builtin(const char *path, size_t len)
{
    return len >= 5 && memcmp(path, "/.zt/", 5) == 0;
}

static void whoami(struct conn *c, const struct http_request *req)
{
    json_t *o = json_object(), *u = json_null(), *d = json_object();
    const struct session *me;
    char tp[65];
    char *txt;

    device_thumbprint_hex(c->peer.thumbprint, tp);
    json_object_set_new(d, "id", json_string(c->peer.device_id));
    json_object_set_new(d, "certificate_sha256", json_string(tp));
    json_object_set_new(d, "tls_resumed", json_boolean(c->peer.resumed));
    if (c->route->auth_mode != CONF_AUTH_NONE && c->route->auth_provider >= 0 &&
        sso_req_get(c) != NULL) {
        c->sso->cur = NULL;
        if ((me = try_cookie(c, req, c->route->auth_provider)) != NULL) {
            json_t *amr = json_array();
            size_t i;
            for (i = 0; i < me->namr; i++)
                json_array_append_new(amr, json_string(me->amr[i]));
            u = json_object();
            json_object_set_new(u, "subject", json_string(me->subject));
            json_object_set_new(u, "email", json_string(me->email));
            json_object_set_new(u, "provider", json_string(me->provider));
            json_object_set_new(u, "auth_time", json_integer(me->auth_time));
            json_object_set_new(u, "session_age_seconds", json_integer(now_s() - me->issued_at));
            json_object_set_new(u, "session_expires_at", json_integer(me->expires_at));
            json_object_set_new(u, "amr", amr);
            json_object_set_new(u, "acr", json_string(me->acr));
        }
    }
    {
        /* What the device-trust layer thinks of this device right now, and
         * what to do about each failing check. */
        struct devtrust_verdict *v = &c->w->verdict;
        json_t *checks = json_array();
        size_t i;

        devtrust_evaluate(c->peer.device_id,
                          json_is_object(u) ? json_string_value(json_object_get(u, "email")) : NULL,
                          now_s(), v);
        json_object_set_new(d, "tier", json_string(v->tier_name));
        json_object_set_new(d, "score", json_integer(v->score));
        json_object_set_new(d, "in_inventory", json_boolean(v->known));
        json_object_set_new(d, "inventory_stale", json_boolean(v->inventory_stale));
        json_object_set_new(d, "posture_stale", json_boolean(v->posture_stale));
        for (i = 0; i < v->nfailing; i++) {
            json_t *ck = json_object();
            json_object_set_new(ck, "check", json_string(v->failing[i].id));
            json_object_set_new(ck, "hard", json_boolean(v->failing[i].hard));
            json_object_set_new(ck, "remediation", json_string(v->failing[i].remediation));
            json_array_append_new(checks, ck);
        }
        json_object_set_new(d, "failing_checks", checks);
    }
    json_object_set_new(o, "user", u);
    json_object_set_new(o, "device", d);
    json_object_set_new(o, "route", json_string(c->route->name));
    txt = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    conn_respond_local(c, 200, "Cache-Control: no-store\r\n", "application/json", txt, strlen(txt),
                       1);
    free(txt);
}

static void logout_respond(struct conn *c)
{
    const struct conf *cf = c->gen->conf;
    struct sso_req *s = c->sso;
    char clr[256], hdrs[4096];
    int pidx = c->route->auth_provider;
    struct sso_meta *meta = NULL;
    struct jwt_keyset *keys = NULL;

    session_clear_cookie(clr, sizeof(clr), cf->session_cookie_name);
    if (pidx >= 0)
        sso_provider_snapshot(c->gen->providers[pidx], &meta, &keys, NULL, 0);
    jwt_keyset_unref(keys);
    if (meta != NULL && meta->end_session_endpoint != NULL) {
        char post[600];
        char *e_post, *e_cid;
        snprintf(post, sizeof(post), "https://%s/", c->authority);
        e_post = httpc_urlencode(post);
        e_cid = httpc_urlencode(cf->providers[pidx].client_id);
        snprintf(hdrs, sizeof(hdrs),
                 "Set-Cookie: %s\r\nLocation: %s%cclient_id=%s&post_logout_redirect_uri=%s\r\n"
                 "Cache-Control: no-store\r\n",
                 clr, meta->end_session_endpoint,
                 strchr(meta->end_session_endpoint, '?') ? '&' : '?', e_cid, e_post);
        free(e_post);
        free(e_cid);
        conn_respond_lit(c, 302, hdrs, "text/html; charset=utf-8",
                         "<!doctype html><p>Signed out.</p>\n", 1);
    } else {
        snprintf(hdrs, sizeof(hdrs), "Set-Cookie: %s\r\nCache-Control: no-store\r\n", clr);
        conn_respond_lit(c, 200, hdrs, "text/html; charset=utf-8",
                         "<!doctype html><p>You are signed out.</p>\n", 1);
    }
    sso_meta_unref(meta);
    (void)s;
}

static void posture_persisted(struct conn *c, int rc);

static void job_done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sso_job *j = arg;
    struct conn *c = j->c;

    if (c != NULL && c->sso != NULL && j->by_user == JOB_POSTURE) {
        c->sso->job = NULL;
        c->sso->wait = WAIT_NONE;
        posture_persisted(c, j->rc);
    } else if (c != NULL && c->sso != NULL) {
        c->sso->job = NULL;
        c->sso->wait = WAIT_NONE;
        if (j->rc == -1)
            log_warnx("sso: revocation could not be persisted (request %s); it applies until "
                      "restart",
                      c->reqid);
        if (j->rc == -1 && c->sso->local_kind == 2)
            conn_respond_error(c, 503,
                               "Signing out could not be recorded right now. Please try "
                               "again in a moment.");
        else if (c->sso->local_kind == 2)
            logout_respond(c);
        else if (j->rc == -1 && c->sso->local_kind == 3)
            /* Back-channel: the provider retries a logout that failed;
             * never acknowledge one that a restart would forget. */
            conn_respond_lit(c, 503, "Cache-Control: no-store\r\n", "text/plain",
                             "revocation not persisted\n", 0);
        else
            conn_respond_lit(c, 200, "Cache-Control: no-store\r\n", "text/plain", "ok\n", 0);
    }
    free(j);
}

static enum sso_verdict revoke_async(struct conn *c, int by_user, const char *subject,
                                     const uint8_t *id, int kind)
{
    struct sso_req *s = c->sso;
    struct sso_job *j = calloc(1, sizeof(*j));

    if (j == NULL) {
        conn_respond_error(c, 500, "Internal error.");
        return SSO_HANDLED;
    }
    j->by_user = by_user;
    if (subject != NULL)
        snprintf(j->subject, sizeof(j->subject), "%s", subject);
    if (id != NULL)
        memcpy(j->id, id, SESSION_ID_LEN);
    j->reply_base = c->w->base;
    j->c = c;
    s->job = j;
    s->wait = WAIT_REVOKE;
    s->local_kind = kind;
    conn_set_state(c, CST_LOCAL);
    bufferevent_disable(c->bev, EV_READ);
    if (job_post(j) == -1) {
        s->job = NULL;
        free(j);
        conn_respond_error(c, 500, "Internal error.");
    }
    return SSO_HANDLED;
}

/* Like revoke_async() for a back-channel logout: what (JOB_SID or
 * JOB_PUSER) names value (a sid or a subject) at provider. */
static void revoke_async_scoped(struct conn *c, int what, const char *provider, const char *value)
{
    struct sso_req *s = c->sso;
    struct sso_job *j = calloc(1, sizeof(*j));

    if (j == NULL) {
        conn_respond_error(c, 500, "Internal error.");
        return;
    }
    j->by_user = what;
    snprintf(j->provider, sizeof(j->provider), "%s", provider);
    if (what == JOB_SID)
        snprintf(j->sid, sizeof(j->sid), "%s", value);
    else
        snprintf(j->subject, sizeof(j->subject), "%s", value);
    j->reply_base = c->w->base;
    j->c = c;
    s->job = j;
    s->wait = WAIT_REVOKE;
    s->local_kind = 3;
    conn_set_state(c, CST_LOCAL);
    bufferevent_disable(c->bev, EV_READ);
    if (job_post(j) == -1) {
        s->job = NULL;
        free(j);
        conn_respond_error(c, 500, "Internal error.");
    }
}

static enum sso_verdict logout(struct conn *c, const struct http_request *req)
{
    struct sso_req *s = sso_req_get(c);
    int pidx = c->route->auth_provider;
    const struct session *me;

    if (s == NULL || pidx < 0) {
        conn_respond_error(c, 404, "Sign-in is not configured here.");
        return SSO_HANDLED;
    }
    s->cur = NULL;
    if ((me = try_cookie(c, req, pidx)) != NULL) {
        audit_identity(c, "logout", "session revoked", me->email[0] ? me->email : me->subject);
        return revoke_async(c, 0, NULL, me->id, 2);
    }
    logout_respond(c);
    return SSO_HANDLED;
}

/* OpenID Connect Back-Channel Logout 1.0: the provider POSTs a logout token. */
static void backchannel_body_done(struct conn *c)
{
    const struct conf *cf = c->gen->conf;
    struct sso_req *s = c->sso;
    int pidx = c->route->auth_provider;
    const struct conf_provider *pv = &cf->providers[pidx];
    size_t len = evbuffer_get_length(s->body);
    char *body = malloc(len + 1), tok[JWT_TOKEN_MAX_DEFAULT + 1];
    const char *aud[1] = {pv->client_id}, *reason = NULL;
    struct sso_meta *meta = NULL;
    struct jwt_keyset *keys = NULL;
    struct jwt_claims *cl = calloc(1, sizeof(*cl));
    struct jwt_expect ex;
    enum jwt_result rc;

    evbuffer_remove(s->body, body, len);
    body[len] = '\0';
    if (query_param(body, len, "logout_token", tok, sizeof(tok)) == -1) {
        free(body);
        free(cl);
        c->error = "no logout_token";
        conn_respond_lit(c, 400, "Cache-Control: no-store\r\n", "application/json",
                         "{\"error\":\"invalid_request\"}\n", 0);
        return;
    }
    free(body);
    sso_provider_snapshot(c->gen->providers[pidx], &meta, &keys, NULL, 0);
    sso_meta_unref(meta);
    memset(&ex, 0, sizeof(ex));
    ex.issuer = pv->issuer;
    ex.audiences = aud;
    ex.naudiences = 1;
    ex.now = now_s();
    ex.skew = (int64_t)(pv->clock_skew_ms / 1000);
    ex.logout_token = 1;
    rc = keys != NULL ? jwt_verify(tok, strlen(tok), keys, &ex, cl, &reason) : JWT_ERR_UNKNOWN_KID;
    jwt_keyset_unref(keys);
    if (rc == JWT_OK &&
        (strlen(cl->sid) > SESSION_SID_MAX || strlen(cl->sub) > SESSION_SUBJECT_MAX)) {
        rc = JWT_ERR_CLAIM; /* no session can carry it: never truncate a revocation key */
        reason = "sid or sub longer than any session can carry";
    }
    if (rc != JWT_OK) {
        audit_identity(c, "back-channel logout refused", reason ? reason : "no keys", NULL);
        free(cl);
        c->error = "logout token refused";
        conn_respond_lit(c, 400, "Cache-Control: no-store\r\n", "application/json",
                         "{\"error\":\"invalid_request\"}\n", 0);
        return;
    }
    /* With sid: only the sessions from that provider session; with only
     * sub: every session of the user from this provider. */
    if (cl->sid[0] != '\0') {
        audit_identity(c, "back-channel logout", "sessions of the provider session (sid) revoked",
                       cl->sub[0] ? cl->sub : NULL);
        revoke_async_scoped(c, JOB_SID, pv->name, cl->sid);
    } else {
        audit_identity(c, "back-channel logout",
                       "every session of the user at the provider revoked", cl->sub);
        revoke_async_scoped(c, JOB_PUSER, pv->name, cl->sub);
    }
    free(cl);
}

static enum sso_verdict backchannel(struct conn *c, const struct http_request *req)
{
    struct sso_req *s = sso_req_get(c);

    if (s == NULL || c->route->auth_provider < 0) {
        conn_respond_error(c, 404, "Sign-in is not configured here.");
        return SSO_HANDLED;
    }
    if (req->method_len != 4 || memcmp(req->method, "POST", 4) != 0) {
        conn_respond_error(c, 405, "Use POST.");
        return SSO_HANDLED;
    }
    if (req->body != HTTP_BODY_LENGTH || req->content_length > LOCAL_BODY_MAX) {
        conn_respond_error(c, 413,
                           "The logout token must be sent with a Content-Length of at "
                           "most 64 KiB.");
        return SSO_HANDLED;
    }
    s->body = evbuffer_new();
    s->body_left = req->content_length;
    s->wait = WAIT_BODY;
    s->local_kind = 3;
    return SSO_HANDLED; /* the caller drains the head and feeds the body */
}

/* devtrust's writer thread: the report is on disk (ok) or could not be
 * written. The job goes back to the connection's loop. */
static void posture_written(void *arg, int ok)
{
    struct sso_job *j = arg;

    j->rc = ok ? 0 : -1;
    job_reply(j);
}

/* Answer a report that was stored: 200 only once it is persisted (rc 0). */
static void posture_persisted(struct conn *c, int rc)
{
    if (rc == 0) {
        conn_respond_lit(c, 200, "Cache-Control: no-store\r\n", "application/json",
                         "{\"status\":\"accepted\"}\n", 1);
        return;
    }
    c->error = "posture report not persisted";
    log_warnx("posture: report from device %s not acknowledged: the state directory cannot "
              "be written (503, the agent retries)",
              c->peer.device_id);
    conn_respond_lit(c, 503, "Cache-Control: no-store\r\nRetry-After: 30\r\n", "application/json",
                     "{\"error\":\"unavailable\",\"message\":\"posture: the report could not "
                     "be stored now; try again later\"}\n",
                     1);
}

/* A posture report from the device's agent, over its own mTLS connection:
 * the certificate says which device is reporting. */
static void posture_body_done(struct conn *c)
{
    struct sso_req *s = c->sso;
    size_t len = evbuffer_get_length(s->body);
    char err[512], *body = malloc(len + 1);
    struct sso_job *j;
    int rc;

    if (body == NULL) {
        conn_respond_error(c, 500, "Internal error.");
        return;
    }
    evbuffer_remove(s->body, body, len);
    body[len] = '\0';
    j = calloc(1, sizeof(*j));
    if (j == NULL) {
        free(body);
        conn_respond_error(c, 500, "Internal error.");
        return;
    }
    j->by_user = JOB_POSTURE;
    j->reply_base = c->w->base;
    j->c = c;
    rc = devtrust_posture_submit_cb(c->peer.device_id, body, len, now_s(), posture_written, j, err,
                                    sizeof(err));
    free(body);
    if (rc == DEVTRUST_PENDING) {
        /* Answered once posture.log has it on disk (job_done_cb). */
        s->job = j;
        s->wait = WAIT_REVOKE;
        conn_set_state(c, CST_LOCAL);
        return;
    }
    free(j);
    if (rc == 0) {
        posture_persisted(c, 0);
        return;
    }
    {
        json_t *o = json_pack("{s:s,s:s}", "error", rc == 429 ? "rate_limited" : "rejected",
                              "message", err);
        char *txt = json_dumps(o, JSON_COMPACT);
        c->error = "posture report refused";
        log_info("posture: report from device %s refused (%d): %s", c->peer.device_id, rc, err);
        conn_respond_local(c, rc, "Cache-Control: no-store\r\n", "application/json", txt,
                           strlen(txt), 1);
        free(txt);
        json_decref(o);
    }
}

static enum sso_verdict posture(struct conn *c, const struct http_request *req)
{
    struct sso_req *s = sso_req_get(c);

    if (s == NULL) {
        conn_respond_error(c, 500, "Internal error.");
        return SSO_HANDLED;
    }
    if (req->method_len != 4 || memcmp(req->method, "POST", 4) != 0) {
        conn_respond_error(c, 405, "Use POST.");
        return SSO_HANDLED;
    }
    if (req->body != HTTP_BODY_LENGTH || req->content_length > POSTURE_BODY_MAX) {
        conn_respond_lit(c, 413, "Cache-Control: no-store\r\n", "application/json",
                         "{\"error\":\"rejected\",\"message\":\"the report must be sent "
                         "with a Content-Length of at most 16 KiB\"}\n",
                         0);
        return SSO_HANDLED;
    }
    s->body = evbuffer_new();
    s->body_left = req->content_length;
    s->wait = WAIT_BODY;
    s->local_kind = 4;
    return SSO_HANDLED;
}

/* Feed body bytes of a local endpoint. Returns -1 when the connection is
 * gone or closing. */
int sso_local_body(struct conn *c)
{
    struct sso_req *s = c->sso;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t n;

    if (s == NULL || s->wait != WAIT_BODY)
        return 0;
    n = evbuffer_get_length(in);
    if (n > s->body_left)
        n = (size_t)s->body_left;
    evbuffer_remove_buffer(in, s->body, n);
    s->body_left -= n;
    if (s->body_left > 0)
        return 0;
    s->wait = WAIT_NONE;
    bufferevent_disable(c->bev, EV_READ);
    if (s->local_kind == 4)
        posture_body_done(c);
    else
        backchannel_body_done(c);
    return 0;
}

int sso_waiting_body(const struct conn *c)
{
    return c->sso != NULL && c->sso->wait == WAIT_BODY;
}

enum sso_verdict sso_builtin(struct conn *c, const struct http_request *req)
{
    const char *p = c->path + 5;
    size_t n = c->path_len - 5;
    const char *q = memchr(p, '?', n);

    if (q != NULL)
        n = (size_t)(q - p);
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(p, lit, n) == 0)
    if (IS("jwks.json")) {
        size_t len = 0;
        const char *j = c->gen->signer ? jwt_signer_jwks_json(c->gen->signer, &len) : NULL;
        if (j == NULL) {
            conn_respond_error(c, 404, "No assertion keys are configured.");
            return SSO_HANDLED;
        }
        conn_respond_local(c, 200, "Cache-Control: max-age=300\r\n", "application/json", j, len, 1);
        return SSO_HANDLED;
    }
    if (IS("whoami")) {
        whoami(c, req);
        return SSO_HANDLED;
    }
    if (IS("callback"))
        return handle_callback(c, req);
    if (IS("logout"))
        return logout(c, req);
    if (IS("backchannel-logout"))
        return backchannel(c, req);
    if (IS("device/posture"))
        return posture(c, req);
#undef IS
    conn_respond_error(c, 404, "No such ztproxy endpoint.");
    return SSO_HANDLED;
}

/* ---- process-wide state -------------------------------------------------- */

int proxy_revocations_open(const struct conf *c, char *err, size_t errlen)
{
    if (mkdir(c->state_dir, 0700) == -1 && errno != EEXIST) {
        snprintf(err, errlen, "%s: state_dir \"%s\": %s", c->path, c->state_dir, strerror(errno));
        return -1;
    }
    return session_revocations_open(c->state_dir, (int64_t)(c->session_lifetime_ms / 1000), now_s(),
                                    &proxy_revocations, err, errlen);
}

int proxy_revoke(const char *subject, const uint8_t *id, char *err, size_t errlen)
{
    int64_t at = now_s();
    int rc;

    rc = proxy_revoke_apply(subject, id, at, err, errlen);
    if (proxy_revocations != NULL)
        shared_publish_revoke(subject, id, at);
    return rc;
}

int proxy_revoke_apply(const char *subject, const uint8_t *id, int64_t at, char *err, size_t errlen)
{
    int rc;

    pthread_mutex_lock(&revoke_mtx);
    if (proxy_revocations == NULL) {
        snprintf(err, errlen, "sessions are not configured (no identity section)");
        rc = -1;
    } else {
        rc = subject != NULL ? session_revoke_user(proxy_revocations, subject, at)
                             : session_revoke_id(proxy_revocations, id, at);
        if (rc == -1)
            snprintf(err, errlen,
                     "the revocation could not be persisted (it applies until the proxy "
                     "restarts)");
    }
    pthread_mutex_unlock(&revoke_mtx);
    return rc;
}

int proxy_revoke_scoped_apply(const char *provider, const char *sid, const char *subject,
                              int64_t at, char *err, size_t errlen)
{
    int rc;

    pthread_mutex_lock(&revoke_mtx);
    if (proxy_revocations == NULL) {
        snprintf(err, errlen, "sessions are not configured (no identity section)");
        rc = -1;
    } else {
        rc = sid != NULL ? session_revoke_sid(proxy_revocations, provider, sid, at)
                         : session_revoke_provider_user(proxy_revocations, provider, subject, at);
        if (rc == -1)
            snprintf(err, errlen,
                     "the revocation could not be persisted (it applies until the proxy "
                     "restarts)");
    }
    pthread_mutex_unlock(&revoke_mtx);
    return rc;
}

void proxy_revocations_foreach(session_revocation_cb fn, void *arg)
{
    pthread_mutex_lock(&revoke_mtx);
    if (proxy_revocations != NULL)
        session_revocations_foreach(proxy_revocations, fn, arg);
    pthread_mutex_unlock(&revoke_mtx);
}

void proxy_revocations_close(void)
{
    struct sso_job *j;

    sso_jobs_stop();
    pthread_mutex_lock(&reply_mtx);
    while ((j = reply_orphans) != NULL) {
        reply_orphans = j->next;
        free(j);
    }
    pthread_mutex_unlock(&reply_mtx);
    session_revocations_free(proxy_revocations);
    proxy_revocations = NULL;
}

/* ---- per generation ---------------------------------------------------- */

static int check_mode;

void sso_set_check_mode(int on)
{
    check_mode = on;
}

int sso_gen_init(struct proxy_gen *g, char *err, size_t errlen)
{
    const struct conf *cf = g->conf;
    size_t i;

    if (cf->nproviders == 0)
        return 0;
    if (check_mode) {
        /* Validate what exists; what is missing is created at start. */
        if (access(cf->session_keys, F_OK) == 0 &&
            session_keyring_load(cf->session_keys, &g->keyring, err, errlen) == -1)
            return -1;
        if (access(cf->assertion_key, F_OK) == 0 &&
            jwt_signer_load(cf->assertion_key, 0, &g->signer, err, errlen) == -1 &&
            strstr(err, "no key") == NULL)
            return -1;
        return 0;
    }
    if (session_keyring_generate(cf->session_keys, err, errlen) == -1 ||
        session_keyring_load(cf->session_keys, &g->keyring, err, errlen) == -1)
        return -1;
    if (mkdir(cf->assertion_key, 0700) == -1 && errno != EEXIST) {
        snprintf(err, errlen, "%s: $.identity.assertion.keys_dir: cannot create \"%s\": %s",
                 cf->path, cf->assertion_key, strerror(errno));
        return -1;
    }
    if (jwt_signer_load(cf->assertion_key, JWT_SIGNER_CREATE, &g->signer, err, errlen) == -1)
        return -1;
    g->providers = calloc(cf->nproviders, sizeof(*g->providers));
    if (g->providers == NULL)
        return -1;
    for (i = 0; i < cf->nproviders; i++)
        g->providers[i] = sso_provider_get(cf, i);
    return 0;
}

void sso_gen_free(struct proxy_gen *g)
{
    session_keyring_unref(g->keyring);
    jwt_signer_unref(g->signer);
    free(g->providers);
}
