/*
 * proxy_int.h - the proxy module's internal structures, shared by its files
 * (proxy.c: connections and relay; sso.c: login, sessions and the /.zt/
 * endpoints). Not a public contract: nothing outside proxy/ includes it.
 */
#ifndef ZT_PROXY_INT_H
#define ZT_PROXY_INT_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

#include "authz.h"
#include "conf.h"
#include "devtrust.h"
#include "http.h"
#include "tls.h"

#define RELAY_HIGH (256 * 1024)
#define RELAY_LOW (64 * 1024)
#define UPSTREAM_MAX_HEAD (64 * 1024)
#define UPSTREAM_IDLE_MS 30000
#define LINGER_MS 2000
#define MAX_LISTENERS 16

struct proxy_gen {
    atomic_int refs;
    struct conf *conf;
    struct tls_server *tls;
    SSL_CTX **up_ctx; /* per route; NULL for http:// */
    char **pool_key;  /* per route: identifies compatible upstream connections */
    /* identity (NULL without an identity section) */
    struct session_keyring *keyring;
    struct jwt_signer *signer;
    struct sso_provider **providers; /* per conf provider */
};

enum conn_state {
    CST_HANDSHAKE = 0,
    CST_READ_HEAD,
    CST_FORWARD,
    CST_TUNNEL,
    CST_LOCAL, /* answering a /.zt/ endpoint or an authentication step (may wait) */
    CST_CLOSING,
};

struct worker;
struct upconn;

struct conn {
    TAILQ_ENTRY(conn) link;
    struct worker *w;
    struct proxy_gen *gen; /* reference held */
    struct bufferevent *bev;
    enum conn_state state;
    struct event *timer; /* header deadline, linger */
    struct tls_peer peer;
    char client[64]; /* "ip:port" */
    char client_ip[48];
    struct sockaddr_storage peer_addr;
    unsigned nreq;
    int head_started; /* first byte of the current head seen */
    int lingering;
    int io_recent; /* read since the last 1 s sweep (its TLS buffers stay) */

    /* The request in flight. */
    char reqid[33];
    const struct conf_route *route;
    char method[24];
    char host[256];
    char authority[272]; /* the Host header as sent (with port) */
    char *path;          /* normalised path (+ "?query" for the upstream) */
    size_t path_len;
    char *path_buf; /* c->path's storage, kept across requests (path_cap bytes) */
    size_t path_cap;
    int minor;
    int keep_alive;
    int is_head;
    int websocket;
    enum http_body_kind req_body;
    uint64_t req_remaining;
    struct http_chunked req_chunked;
    int req_done;
    uint64_t req_bytes;
    uint64_t max_body;
    struct upconn *up;
    char *retry_head; /* the head, while a retry on a new connection is possible */
    size_t retry_len;
    char *retry_buf; /* retry_head's storage, kept across requests (retry_cap bytes) */
    size_t retry_cap;
    int retried;
    const char *error; /* why the request failed, for the access log */

    int resp_started;
    int status;
    enum http_body_kind resp_body;
    int resp_chunk_out; /* re-chunk to the client */
    uint64_t resp_remaining;
    struct http_chunked resp_chunked;
    int resp_done;
    int up_keep_alive;
    uint64_t resp_bytes;
    struct timespec t_start;

    struct sso_req *sso; /* identity state (the request's, and kept per connection), or NULL */
    size_t pending_head; /* bytes of a parsed head still in the input buffer */
    char ws_xff[256];    /* X-Forwarded-For of an upgraded websocket, for re-checks */
    struct pp_wait *pp;  /* reading the PROXY protocol header (bev still NULL), or NULL */
};

enum up_state { UP_CONNECTING = 0, UP_ACTIVE, UP_IDLE };

struct upconn {
    TAILQ_ENTRY(upconn) link;
    struct worker *w;
    struct pool *pool;
    struct bufferevent *bev;
    enum up_state state;
    struct conn *client; /* when active */
    int reused;
};

struct pool {
    char *key;
    TAILQ_HEAD(upconn_list, upconn) idle;
    int nidle;
};

struct worker {
    int id;
    pthread_t thr;
    struct event_base *base;
    struct evconnlistener *lev[MAX_LISTENERS];
    size_t nlev;
    /* The worker's base has no lock (EVENT_BASE_FLAG_NOLOCK): other
     * threads never touch it, they queue work under mtx and write the
     * eventfd wake_fd, whose event runs the queue on this loop. */
    int wake_fd;
    struct event *wake_ev;
    pthread_mutex_t mtx;
    struct proxy_gen *pending; /* set by the main thread under mtx */
    int stop_requested;        /* ditto */
    struct worker_post *posts; /* ditto: worker_post() calls, in order */
    struct worker_post **posts_tail;
    int woken; /* ditto: wake_fd written and not yet read */
    struct proxy_gen *gen;
    TAILQ_HEAD(conn_list, conn) conns;
    size_t nconns;
    int stopping;
    struct event *grace;
    struct pool **pools;
    size_t npools;
    struct http_header hdrs[HTTP_MAX_HEADERS];
    uint64_t seq;
    char idprefix[17];
    /* Scratch for the request being decided (decisions are synchronous). */
    struct devtrust_verdict verdict;
    struct authz_result authz;
    char tier_name[32];
    char groups[AUTHZ_GROUPS_MAX];
    struct evbuffer *auditbuf;
    struct evbuffer *logbuf;
    struct event *logtimer;
    struct event *rechecktimer;             /* websockets decided again every second */
    struct httpc *httpc;                    /* this loop's HTTP client (IdP calls) */
    struct jwt_assertion_cache *assertions; /* signed X-ZT-Assertion reuse */
    struct event *accept_resume;            /* out of descriptors: accepting resumes */
    unsigned accept_pauses;                 /* since the last warning about them */
    time_t accept_warned;                   /* when that was (at most one per 10 s) */
    size_t conns_peak;                      /* most connections since the last trim */
};

/* Any thread: run fn(arg) on the loop of the worker whose event base is
 * base (the only way into a worker's loop from another thread). 0 queued;
 * -1 base is no worker's, or out of memory (fn will not run). Work still
 * queued when the workers stop is dropped without running. */
int worker_post(struct event_base *base, void (*fn)(void *arg), void *arg);

struct session_keyring;
struct jwt_signer;
struct sso_provider;
struct sso_req;

/* The global session revocation store (NULL without identity). */
extern struct session_revocations *proxy_revocations;

/* proxy.c: shared helpers */
void set_tv(struct timeval *tv, uint64_t ms);
void bev_timeouts(struct bufferevent *bev, uint64_t read_ms, uint64_t write_ms);
const char *status_text(int status);
void access_log_write(struct conn *c);
void conn_free(struct conn *c);
void conn_close_after_flush(struct conn *c);
void conn_set_state(struct conn *c, enum conn_state st);
/* A generated page; msg is a static string. Closes the connection after. */
void conn_respond_error(struct conn *c, int status, const char *msg);
/* Is h named lower (a lower-case literal)? Inline: the literal's length is
 * known at compile time, so most names are refused on their length, and
 * the rest compared a word at a time against constants. */
HTTP_INLINE int header_is(const struct http_header *h, const char *lower)
{
    return h->name_len == strlen(lower) && http_caseeq_n(h->name, lower, strlen(lower));
}
/* Process the request head in the input buffer (again, after an
 * asynchronous authentication step). -1 when the connection is gone or
 * closing. */
int conn_read_head(struct conn *c);
/* A local response: status, extra header lines (each ending in CRLF, may be
 * NULL), a content type and body. keep: keep the connection open after. */
void conn_respond_local(struct conn *c, int status, const char *headers, const char *ctype,
                        const char *body, size_t body_len, int keep);
/* The same with a string literal body: its length is counted, never typed. */
#define conn_respond_lit(c, status, headers, ctype, lit, keep)                                     \
    conn_respond_local((c), (status), (headers), (ctype), (lit), sizeof(lit) - 1, (keep))

/* sso.c: the request-time identity layer */
enum sso_verdict {
    SSO_CONTINUE = 0, /* identity settled (or not needed): forward */
    SSO_HANDLED       /* a response was sent or is pending: stop here */
};
/* Built-in endpoints under /.zt/ (path is the normalised path). */
int sso_is_builtin(const char *path, size_t len);
enum sso_verdict sso_builtin(struct conn *c, const struct http_request *req);
/* Identity for a route that needs it: cookie or bearer, step-up, login. */
enum sso_verdict sso_authenticate(struct conn *c, const struct http_request *req);
/* Identity headers for the upstream (X-ZT-User, X-ZT-Email, X-ZT-Assertion). */
struct sbuf;
void sso_upstream_headers(struct conn *c, struct sbuf *out);
/* Extra response headers (a re-sealed session cookie). */
void sso_response_headers(struct conn *c, struct sbuf *out);
/* Is this Cookie header entry one of ours (never forwarded upstream)? */
int sso_cookie_is_ours(const struct conf *cf, const char *name, size_t len);
/* The request's identity, if any: 1 and the fields (owned by c). */
int sso_identity(struct conn *c, const char **sub, const char **email, int64_t *auth_time,
                 int *mfa);
/* The rules asked for a fresher or stronger login: redirect (browser), 401
 * (API client), or SSO_CONTINUE when it cannot help (the caller denies). */
enum sso_verdict sso_step_up(struct conn *c, const struct http_request *req, int64_t max_age,
                             int mfa);

/* decide.c: device trust and the rules */
enum decide_verdict { DECIDE_ALLOW = 0, DECIDE_HANDLED };
enum decide_verdict decide_request(struct conn *c, const struct http_request *req);
/* An upgraded websocket, once a second: the rules, the directory, the
 * device's record, the session's revocation may have changed since the
 * upgrade. 0 still allowed, -1 close it. */
int decide_tunnel_recheck(struct conn *c);
/* Is the request's session still good (not revoked, not expired)? 0 / -1. */
int sso_still_valid(struct conn *c, int64_t now);
/* X-ZT-Device-Tier and X-ZT-Groups for the upstream. */
void decide_upstream_headers(struct conn *c, struct sbuf *out);

/* A /.zt/ endpoint reading a small body: feed it / is it waiting? */
int sso_local_body(struct conn *c);
int sso_waiting_body(const struct conn *c);
/* End the request's identity state (cancels anything in flight). What the
 * connection keeps across its requests (the opened session, the identity
 * headers) stays until sso_conn_free(). */
void sso_req_free(struct conn *c);
/* Free all identity state of the connection (conn_free()). */
void sso_conn_free(struct conn *c);
/* Per generation: load the key ring and the assertion signer. */
int sso_gen_init(struct proxy_gen *g, char *err, size_t errlen);
void sso_gen_free(struct proxy_gen *g);

#endif
