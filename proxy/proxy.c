/*
 * proxy.c - workers, client connections and the request/response relay.
 *
 * Each worker thread owns an event_base, its own SO_REUSEPORT listeners, its
 * connections and its upstream pools; nothing is shared between workers but
 * the immutable generation (conf + TLS contexts) and the access-log queue.
 *
 * A client connection goes through these states:
 *
 *   HANDSHAKE -> READ_HEAD -> FORWARD -> READ_HEAD ... (keep-alive)
 *                                     \-> TUNNEL    (after 101 Switching)
 *   any state -> CLOSING (flush what is queued, then linger and close)
 *
 * In FORWARD the request body (if any) streams client -> upstream while the
 * response streams upstream -> client; each direction stops reading when
 * the other side's output passes RELAY_HIGH and resumes below RELAY_LOW, so
 * memory per connection is bounded whatever the body size.
 *
 * Pipelined requests wait in the client's input buffer: reading is off
 * while a request is in flight and the next head is parsed only after the
 * response has been sent.
 */
#include <arpa/inet.h>
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include "accesslog.h"
#include "auditlog.h"
#include "authz.h"
#include "devtrust.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "proxy.h"
#include "proxy_int.h"
#include "proxyproto.h"
#include "sbuf.h"
#include "httpc.h"
#include "jwt.h"
#include "tls.h"

static const char *const conn_state_names[] = {"HANDSHAKE", "READ_HEAD", "FORWARD",
                                               "TUNNEL",    "LOCAL",     "CLOSING"};

static struct worker *workers;
static int nworkers;
static int draining;        /* atomic: proxy_shutdown() was called */
static int workers_running; /* atomic: worker threads not yet finished */
static int listen_fds[64][MAX_LISTENERS];
static size_t nlisten;
static int listen_pp[MAX_LISTENERS]; /* proxy_protocol, fixed at start like the address */

static int conn_relay_request(struct conn *c);
#define PIPELINE_MAX (64 * 1024) /* client input held while a request is forwarded */
static int conn_relay_response(struct conn *c);
static void up_free(struct upconn *u);
static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_enable_read(struct conn *c);
static void pp_wait_free(struct pp_wait *pp);

/* ---- generations ------------------------------------------------------- */

struct proxy_gen *proxy_gen_new(struct conf *c, char *err, size_t errlen)
{
    struct proxy_gen *g = calloc(1, sizeof(*g));
    size_t i;

    if (g == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&g->refs, 1);
    g->conf = conf_ref(c);
    g->up_ctx = calloc(c->nroutes, sizeof(*g->up_ctx));
    g->pool_key = calloc(c->nroutes, sizeof(*g->pool_key));
    if (g->up_ctx == NULL || g->pool_key == NULL) {
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    g->tls = tls_server_new(c, err, errlen);
    if (g->tls == NULL)
        goto err;
    for (i = 0; i < c->nroutes; i++) {
        const struct conf_route *r = &c->routes[i];
        char key[1024];

        if (r->upstream_tls) {
            g->up_ctx[i] = tls_upstream_ctx_new(c, i, err, errlen);
            if (g->up_ctx[i] == NULL)
                goto err;
        }
        snprintf(key, sizeof(key), "%s|%s|%s|%d", r->upstream, r->upstream_server_name,
                 r->upstream_ca ? r->upstream_ca : "-", r->upstream_verify);
        g->pool_key[i] = strdup(key);
    }
    /* The rules, directory, GeoIP and inventory settings are validated by
     * the caller (main.c: authz_validate() at start, authz_prepare() on
     * reload), once. */
    if (sso_gen_init(g, err, errlen) == -1)
        goto err;
    return g;
err:
    proxy_gen_unref(g);
    return NULL;
}

const struct conf *proxy_gen_conf(const struct proxy_gen *g)
{
    return g->conf;
}

static struct proxy_gen *gen_ref(struct proxy_gen *g)
{
    atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    return g;
}

void proxy_gen_unref(struct proxy_gen *g)
{
    size_t i;

    if (g == NULL)
        return;
    if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (i = 0; g->conf != NULL && i < g->conf->nroutes; i++) {
        if (g->up_ctx != NULL)
            SSL_CTX_free(g->up_ctx[i]);
        if (g->pool_key != NULL)
            free(g->pool_key[i]);
    }
    free(g->up_ctx);
    free(g->pool_key);
    sso_gen_free(g);
    tls_server_free(g->tls);
    conf_unref(g->conf);
    free(g);
}

/* ---- helpers ----------------------------------------------------------- */

void conn_set_state(struct conn *c, enum conn_state st)
{
    if (c->state != st)
        log_debug("conn %s: %s -> %s", c->client, conn_state_names[c->state], conn_state_names[st]);
    c->state = st;
}

void set_tv(struct timeval *tv, uint64_t ms)
{
    tv->tv_sec = (time_t)(ms / 1000);
    tv->tv_usec = (suseconds_t)((ms % 1000) * 1000);
}

/* A worker's event loop. With epoll, event changes are batched until the
 * loop polls again: a bufferevent that enables writing, writes at once and
 * disables writing again (every TLS response) then costs no epoll_ctl at
 * all. (libevent's caveat - descriptors cloned with dup() - does not apply:
 * a worker registers only sockets it opened itself.) */
static struct event_base *worker_base_new(void)
{
    struct event_config *cfg = event_config_new();
    struct event_base *b;

    if (cfg == NULL)
        return NULL;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    /* No lock: only the worker's thread touches its base (worker_post()). */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    b = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return b;
}

void bev_timeouts(struct bufferevent *bev, uint64_t read_ms, uint64_t write_ms)
{
    struct timeval r, w;

    set_tv(&r, read_ms);
    set_tv(&w, write_ms);
    bufferevent_set_timeouts(bev, read_ms ? &r : NULL, write_ms ? &w : NULL);
}

const char *status_text(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 417:
        return "Expectation Failed";
    case 414:
        return "URI Too Long";
    case 421:
        return "Misdirected Request";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

/* The worker's 16 hex digits, then the sequence number as 16 lower-case
 * hex digits (what "%s%016llx" gave, without snprintf: per request). */
static void conn_new_reqid(struct conn *c)
{
    static const char hex[] = "0123456789abcdef";
    struct worker *w = c->w;
    uint64_t seq = ++w->seq;
    size_t n = strnlen(w->idprefix, sizeof(w->idprefix) - 1), i;

    memcpy(c->reqid, w->idprefix, n);
    for (i = 0; i < 16; i++)
        c->reqid[n + i] = hex[(seq >> (60 - 4 * i)) & 15];
    c->reqid[n + 16] = '\0';
}

void access_log_write(struct conn *c)
{
    struct worker *w = c->w;
    struct timespec mono;
    struct accesslog_entry e;

    /* What the record keeps is all the proxy holds (accesslog.h). */
    _Static_assert(sizeof(c->reqid) - 1 <= ACCESSLOG_REQID_MAX, "reqid");
    _Static_assert(sizeof(c->client) - 1 <= ACCESSLOG_CLIENT_MAX, "client");
    _Static_assert(sizeof(c->peer.device_id) - 1 <= ACCESSLOG_DEVICE_MAX, "device");
    _Static_assert(sizeof(c->method) - 1 <= ACCESSLOG_METHOD_MAX, "method");
    _Static_assert(sizeof(c->host) - 1 <= ACCESSLOG_HOST_MAX, "host");

    clock_gettime(CLOCK_MONOTONIC, &mono);
    metrics_request(c->route != NULL ? c->route->name : NULL, c->status, &c->t_start, &mono);
    if (!accesslog_enabled())
        return;
    /* The data only: the writer thread formats the line (accesslog.c). */
    clock_gettime(CLOCK_REALTIME, &e.ts);
    e.duration_us = (uint64_t)((mono.tv_sec - c->t_start.tv_sec) * 1000000 +
                               (mono.tv_nsec - c->t_start.tv_nsec) / 1000);
    e.bytes_in = c->req_bytes;
    e.bytes_out = c->resp_bytes;
    e.worker = w->id;
    e.status = c->status;
    e.upstream_status = c->resp_started ? c->status : 0;
    e.tls_resumed = c->peer.resumed;
    e.request_id = c->reqid;
    e.client = c->client;
    e.device = c->peer.verified ? c->peer.device_id : NULL;
    e.route = c->route != NULL ? c->route->name : NULL;
    e.method = c->method;
    e.host = c->host;
    e.path = c->path; /* a /.zt/ path's query is left out there */
    e.path_len = c->path_len;
    e.error = c->error;
    accesslog_append(w->logbuf, &e);
    if (evbuffer_get_length(w->logbuf) > 64 * 1024)
        accesslog_submit(w->logbuf);
}

static void conn_reset_request(struct conn *c)
{
    sso_req_free(c);
    c->pending_head = 0;
    c->path = NULL; /* its storage (path_buf) stays for the next request */
    c->path_len = 0;
    c->route = NULL;
    c->method[0] = '\0';
    c->host[0] = '\0';
    c->req_body = HTTP_BODY_NONE;
    c->req_done = 0;
    c->req_bytes = 0;
    c->req_remaining = 0;
    c->websocket = 0;
    c->is_head = 0;
    c->resp_started = 0;
    c->resp_done = 0;
    c->resp_bytes = 0;
    c->status = 0;
    c->error = NULL;
    c->retried = 0;
    c->head_started = 0;
    c->retry_head = NULL; /* its storage (retry_buf) stays */
}

/*
 * Answer with a generated page and close the connection afterwards. msg
 * must be a static string (it is shown to the person and never contains
 * client input).
 */
void conn_respond_error(struct conn *c, int status, const char *msg)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char body[1024];
    int n;

    c->status = status;
    if (c->error == NULL)
        c->error = msg;
    if (c->reqid[0] == '\0')
        conn_new_reqid(c);
    n = snprintf(body, sizeof(body),
                 "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>%d %s</title></head>"
                 "<body><h1>%d %s</h1>\n<p>%s</p>\n<p><small>ztproxy &middot; request id "
                 "%s</small></p></body></html>\n",
                 status, status_text(status), status, status_text(status), msg, c->reqid);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\n"
                        "Content-Length: %d\r\nConnection: close\r\nCache-Control: no-store\r\n"
                        "X-ZT-Request-Id: %s\r\n\r\n",
                        status, status_text(status), n, c->reqid);
    if (!c->is_head)
        evbuffer_add(out, body, (size_t)n);
    c->resp_bytes += (uint64_t)n;
    access_log_write(c);
    conn_close_after_flush(c);
}

void conn_respond_local(struct conn *c, int status, const char *headers, const char *ctype,
                        const char *body, size_t body_len, int keep)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    const struct conf *cf = c->gen->conf;

    if (c->pending_head > 0) {
        evbuffer_drain(in, c->pending_head);
        c->pending_head = 0;
    }
    /* A body we did not read is still on the wire: close after answering. */
    if (!c->req_done || !c->keep_alive || c->w->stopping)
        keep = 0;
    c->status = status;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\n%sContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                        "X-ZT-Request-Id: %s\r\n\r\n",
                        status, status_text(status), headers ? headers : "", ctype, body_len,
                        keep ? "" : "Connection: close\r\n", c->reqid);
    if (!c->is_head && body_len > 0)
        evbuffer_add(out, body, body_len);
    c->resp_bytes += body_len;
    access_log_write(c);
    if (!keep) {
        conn_close_after_flush(c);
        return;
    }
    conn_reset_request(c);
    c->reqid[0] = '\0';
    conn_set_state(c, CST_READ_HEAD);
    bev_timeouts(c->bev, cf->timeout_keepalive_ms, cf->timeout_send_ms);
    conn_enable_read(c);
    if (evbuffer_get_length(in) > 0) {
        /* Pipelined: continue from the loop, not from inside this call. */
        bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    }
}

static void conn_respond_enroll(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const struct conf *cf = c->gen->conf;
    char body[2048];
    int n;

    c->status = 403;
    c->error = "device not enrolled";
    n = snprintf(body, sizeof(body),
                 "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Device not "
                 "enrolled</title></head><body><h1>This device is not enrolled</h1>\n"
                 "<p>Access to internal applications requires a device certificate issued to "
                 "this device. Your browser did not present a valid one (%s).</p>\n"
                 "<p>%s%s%s</p>\n<p><small>ztproxy &middot; request id %s</small></p>"
                 "</body></html>\n",
                 c->peer.reason[0] ? c->peer.reason : "no certificate",
                 cf->tls_enroll_url ? "Enroll this device at <a href=\""
                                    : "Ask IT to enroll "
                                      "this device.",
                 cf->tls_enroll_url ? cf->tls_enroll_url : "",
                 cf->tls_enroll_url ? "\">the enrollment page</a>, then restart the browser." : "",
                 c->reqid);
    evbuffer_add_printf(out,
                        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html; charset=utf-8\r\n"
                        "Content-Length: %d\r\nConnection: close\r\nCache-Control: no-store\r\n"
                        "X-ZT-Request-Id: %s\r\n\r\n",
                        n, c->reqid);
    if (!c->is_head)
        evbuffer_add(out, body, (size_t)n);
    c->resp_bytes += (uint64_t)n;
    access_log_write(c);
    conn_close_after_flush(c);
}

/* ---- closing ----------------------------------------------------------- */

/* The one timer of a connection: the header deadline, or the end of the
 * lingering close. */
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    if (c->lingering) {
        conn_free(c);
        return;
    }
    c->error = "header timeout";
    conn_respond_error(c, 408, "The request was not received in time.");
}

/*
 * Closing after an error: the client may still be sending (a body we
 * refused). Closing at once would make the kernel answer with RST and the
 * client could lose our response, so we half-close and discard input for a
 * little while (nginx's lingering close).
 */
static void conn_start_linger(struct conn *c)
{
    struct timeval tv;
    evutil_socket_t fd = bufferevent_getfd(c->bev);

    if (c->lingering)
        return;
    c->lingering = 1;
    if (fd >= 0)
        shutdown(fd, SHUT_WR);
    evbuffer_drain(bufferevent_get_input(c->bev),
                   evbuffer_get_length(bufferevent_get_input(c->bev)));
    bufferevent_disable(c->bev, EV_WRITE);
    conn_enable_read(c);
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    set_tv(&tv, LINGER_MS);
    evtimer_add(c->timer, &tv);
}

void conn_close_after_flush(struct conn *c)
{
    if (c->up != NULL) {
        c->up->client = NULL;
        up_free(c->up);
        c->up = NULL;
    }
    conn_set_state(c, CST_CLOSING);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_disable(c->bev, EV_READ);
    bev_timeouts(c->bev, 0, c->gen->conf->timeout_send_ms);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_start_linger(c);
    else
        bufferevent_enable(c->bev, EV_WRITE);
}

void conn_free(struct conn *c)
{
    struct worker *w = c->w;

    if (c->up != NULL) {
        c->up->client = NULL;
        up_free(c->up);
        c->up = NULL;
    }
    TAILQ_REMOVE(&w->conns, c, link);
    w->nconns--;
    metrics_count(METRICS_CONN_CLOSED);
    pp_wait_free(c->pp);
    c->pp = NULL;
    if (c->timer != NULL)
        event_free(c->timer);
    if (c->bev != NULL)
        bufferevent_free(c->bev);
    conn_reset_request(c);
    free(c->path_buf);
    free(c->retry_buf);
    sso_conn_free(c);
    proxy_gen_unref(c->gen);
    OPENSSL_cleanse(&c->peer, sizeof(c->peer));
    free(c);
    if (w->stopping && w->nconns == 0)
        event_base_loopbreak(w->base);
}

/* ---- upstream connections --------------------------------------------- */

static struct pool *pool_find(struct worker *w, const char *key)
{
    struct pool **np, *p;
    size_t i;

    for (i = 0; i < w->npools; i++)
        if (strcmp(w->pools[i]->key, key) == 0)
            return w->pools[i];
    /* Pools are allocated one by one: a TAILQ head must not move. */
    p = calloc(1, sizeof(*p));
    np = realloc(w->pools, (w->npools + 1) * sizeof(*w->pools));
    if (p == NULL || np == NULL) {
        free(p);
        if (np != NULL)
            w->pools = np;
        return NULL;
    }
    w->pools = np;
    p->key = strdup(key);
    TAILQ_INIT(&p->idle);
    w->pools[w->npools++] = p;
    return p;
}

static void up_free(struct upconn *u)
{
    if (u->state == UP_IDLE && u->pool != NULL) {
        TAILQ_REMOVE(&u->pool->idle, u, link);
        u->pool->nidle--;
    }
    if (u->bev != NULL)
        bufferevent_free(u->bev);
    free(u);
}

static void up_idle_read_cb(struct bufferevent *bev, void *arg)
{
    /* An idle upstream connection must not send anything: drop it. */
    up_free(arg);
}

static void up_idle_event_cb(struct bufferevent *bev, short what, void *arg)
{
    up_free(arg);
}

/* Reading on, unless it is on already: bufferevent_enable() re-adds the
 * read event every time (a timer heap update), and bev_timeouts() has
 * re-armed an enabled read event with its new timeout already. */
static inline void bev_enable_read(struct bufferevent *bev)
{
    if (!(bufferevent_get_enabled(bev) & EV_READ))
        bufferevent_enable(bev, EV_READ);
}

/* The response is complete: keep the upstream connection or close it. */
static void up_release(struct conn *c)
{
    struct upconn *u = c->up;
    int keep;

    if (u == NULL)
        return;
    c->up = NULL;
    u->client = NULL;
    keep = c->up_keep_alive && c->req_done && !c->websocket && u->pool != NULL &&
           c->route != NULL && u->pool->nidle < c->route->pool_size && !c->w->stopping &&
           evbuffer_get_length(bufferevent_get_input(u->bev)) == 0;
    if (!keep) {
        up_free(u);
        return;
    }
    u->state = UP_IDLE;
    u->reused = 1;
    TAILQ_INSERT_HEAD(&u->pool->idle, u, link);
    u->pool->nidle++;
    bufferevent_setcb(u->bev, up_idle_read_cb, NULL, up_idle_event_cb, u);
    bufferevent_setwatermark(u->bev, EV_WRITE, 0, 0);
    bev_timeouts(u->bev, UPSTREAM_IDLE_MS, 0);
    bev_enable_read(u->bev);
}

static void up_read_cb(struct bufferevent *bev, void *arg);
static void up_write_cb(struct bufferevent *bev, void *arg);
static void up_event_cb(struct bufferevent *bev, short what, void *arg);

static struct upconn *up_connect(struct conn *c)
{
    struct worker *w = c->w;
    const struct conf_route *r = c->route;
    size_t ri = (size_t)(r - c->gen->conf->routes);
    struct upconn *u;
    struct pool *p;
    SSL *ssl = NULL;

    p = pool_find(w, c->gen->pool_key[ri]);
    if (p != NULL && (u = TAILQ_FIRST(&p->idle)) != NULL) {
        TAILQ_REMOVE(&p->idle, u, link);
        p->nidle--;
        u->state = UP_ACTIVE;
        u->client = c;
        bufferevent_setcb(u->bev, up_read_cb, up_write_cb, up_event_cb, u);
        return u;
    }
    u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->w = w;
    u->pool = p;
    u->client = c;
    u->state = UP_CONNECTING;
    if (r->upstream_tls) {
        ssl = SSL_new(c->gen->up_ctx[ri]);
        if (ssl == NULL) {
            free(u);
            return NULL;
        }
        SSL_set_tlsext_host_name(ssl, r->upstream_server_name);
        if (r->upstream_verify)
            SSL_set1_host(ssl, r->upstream_server_name);
        u->bev = bufferevent_openssl_socket_new(w->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (u->bev != NULL)
            bufferevent_openssl_set_allow_dirty_shutdown(u->bev, 1);
    } else {
        u->bev = bufferevent_socket_new(w->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (u->bev == NULL) {
        if (ssl != NULL)
            SSL_free(ssl);
        free(u);
        return NULL;
    }
    bufferevent_setcb(u->bev, up_read_cb, up_write_cb, up_event_cb, u);
    /* libevent applies the write timeout to connect(). */
    bev_timeouts(u->bev, 0, c->gen->conf->timeout_upstream_connect_ms);
    if (bufferevent_socket_connect(u->bev, (struct sockaddr *)&r->upstream_addr,
                                   (int)r->upstream_addrlen) == -1) {
        /* Immediate failure (e.g. refused on loopback) is reported through
         * the event callback by libevent; a -1 here means no socket. */
        up_free(u);
        return NULL;
    }
    return u;
}

/* ---- building the upstream request ------------------------------------ */

/* Is this header named by a token of any Connection header? */
static int named_in_connection(const struct http_header *hs, size_t n, const struct http_header *h)
{
    char name[64];
    size_t i;

    if (h->name_len >= sizeof(name))
        return 0;
    /* Framing and routing are the proxy's business: "Connection: host" or
     * "Connection: content-length" must not make us drop them. */
    if (header_is(h, "host") || header_is(h, "content-length") || header_is(h, "transfer-encoding"))
        return 0;
    for (i = 0; i < h->name_len; i++) {
        char ch = h->name[i];
        name[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
    }
    name[h->name_len] = '\0';
    for (i = 0; i < n; i++)
        if (header_is(&hs[i], "connection") &&
            http_list_has_token(hs[i].value, hs[i].value_len, name))
            return 1;
    return 0;
}

#define HC_HOP 0x1   /* hop-by-hop: never forwarded */
#define HC_SPOOF 0x2 /* asserted by the proxy alone: client values dropped */
#define HC_COOKIE 0x4
#define HC_CLEN 0x8
#define HC_ZTRID 0x10 /* X-ZT-Request-Id */

/* Classify a header name with one switch on its length: this runs for
 * every header of every request and response. */
static unsigned header_class(const struct http_header *h)
{
    unsigned k = 0;

    if (h->name_len >= 5 && http_caseeq_n(h->name, "x-zt-", 5)) {
        k = HC_SPOOF;
        if (header_is(h, "x-zt-request-id"))
            k |= HC_ZTRID;
        return k;
    }
    /* Some frameworks (CGI, PHP, Django, Rails) map '_' and '-' to the same
     * name, so "X_ZT_User" would reach an app as X-ZT-User: no name with an
     * underscore is forwarded (as nginx does by default). */
    if (memchr(h->name, '_', h->name_len) != NULL)
        return HC_SPOOF;
    /* Every X-Forwarded-* (Port, Server, Prefix, Ssl...) is the proxy's to say. */
    if (h->name_len > 12 && http_caseeq_n(h->name, "x-forwarded-", 12))
        return HC_SPOOF;
    switch (h->name_len) {
    case 2:
        return header_is(h, "te") ? HC_HOP : 0;
    case 6:
        if (header_is(h, "expect"))
            return HC_SPOOF;
        return header_is(h, "cookie") ? HC_COOKIE : 0;
    case 7:
        return header_is(h, "trailer") || header_is(h, "upgrade") ? HC_HOP : 0;
    case 9:
        return header_is(h, "forwarded") || header_is(h, "x-real-ip") ? HC_SPOOF : 0;
    case 10:
        return header_is(h, "connection") || header_is(h, "keep-alive") ? HC_HOP : 0;
    case 11:
        return header_is(h, "x-client-ip") ? HC_SPOOF : 0;
    case 13:
        /* identity and URL overrides some servers and frameworks honour */
        return header_is(h, "x-remote-user") || header_is(h, "x-rewrite-url") ||
                       header_is(h, "x-remote-addr")
                   ? HC_SPOOF
                   : 0;
    case 14:
        if (header_is(h, "x-original-url") || header_is(h, "true-client-ip"))
            return HC_SPOOF;
        return header_is(h, "content-length") ? HC_SPOOF | HC_CLEN : 0;
    case 15:
        return header_is(h, "x-forwarded-for") ? HC_SPOOF : 0;
    case 16:
        if (header_is(h, "proxy-connection"))
            return HC_HOP;
        return header_is(h, "x-forwarded-host") ? HC_SPOOF : 0;
    case 17:
        if (header_is(h, "transfer-encoding"))
            return HC_HOP;
        return header_is(h, "x-forwarded-proto") ? HC_SPOOF : 0;
    case 18:
        return header_is(h, "proxy-authenticate") ? HC_HOP : 0;
    case 19:
        return header_is(h, "proxy-authorization") ? HC_HOP : 0;
    default:
        return 0;
    }
}

/* Does any Connection header name something beyond the usual
 * close / keep-alive / upgrade? Only then is named_in_connection() needed. */
static int connection_names_headers(const struct http_header *hs, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        const struct http_header *h = &hs[i];
        if (h->name_len == 10 && header_is(h, "connection") &&
            !(h->value_len == 5 && http_caseeq_n(h->value, "close", 5)) &&
            !(h->value_len == 10 && http_caseeq_n(h->value, "keep-alive", 10)) &&
            !(h->value_len == 7 && http_caseeq_n(h->value, "upgrade", 7)))
            return 1;
    }
    return 0;
}

/* The session and login cookies are the proxy's credentials: the upstream
 * never sees them (an app could otherwise log or leak them). */
static void add_cookie_without_ours(const struct conf *cf, const struct http_header *h,
                                    struct sbuf *out)
{
    const char *p = h->value, *end = h->value + h->value_len;
    int first = 1;

    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *e = semi ? semi : end, *eq, *t = e;

        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        eq = memchr(p, '=', (size_t)(t - p));
        if (t > p && !sso_cookie_is_ours(cf, p, eq ? (size_t)(eq - p) : (size_t)(t - p))) {
            sbuf_add(out, first ? "Cookie: " : "; ", first ? 8 : 2);
            sbuf_add(out, p, (size_t)(t - p));
            first = 0;
        }
        p = semi ? semi + 1 : end;
    }
    if (!first)
        sbuf_lit(out, "\r\n");
}

static void build_upstream_head(struct conn *c, const struct http_request *req, struct sbuf *out)
{
    int conn_named = connection_names_headers(req->headers, req->nheaders);
    size_t i;

    sbuf_str(out, c->method);
    sbuf_lit(out, " ");
    sbuf_add(out, c->path, c->path_len);
    sbuf_lit(out, " HTTP/1.1\r\n");
    for (i = 0; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        unsigned k = header_class(h);
        if ((k & (HC_HOP | HC_SPOOF)) ||
            (conn_named && named_in_connection(req->headers, req->nheaders, h)))
            continue;
        if ((k & HC_COOKIE) && c->gen->conf->nproviders > 0) {
            add_cookie_without_ours(c->gen->conf, h, out);
            continue;
        }
        sbuf_add(out, h->name, h->name_len);
        sbuf_lit(out, ": ");
        sbuf_add(out, h->value, h->value_len);
        sbuf_lit(out, "\r\n");
    }
    if (c->websocket)
        sbuf_lit(out, "Connection: upgrade\r\nUpgrade: websocket\r\n");
    if (c->req_body == HTTP_BODY_LENGTH) {
        sbuf_lit(out, "Content-Length: ");
        sbuf_u64(out, c->req_remaining);
        sbuf_lit(out, "\r\n");
    } else if (c->req_body == HTTP_BODY_CHUNKED) {
        sbuf_lit(out, "Transfer-Encoding: chunked\r\n");
    }
    sbuf_lit(out, "X-Forwarded-For: ");
    sbuf_str(out, c->client_ip);
    sbuf_lit(out, "\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: ");
    sbuf_add(out, req->host, req->host_len);
    sbuf_lit(out, "\r\nX-ZT-Device: ");
    sbuf_str(out, c->peer.device_id);
    sbuf_lit(out, "\r\nX-ZT-Request-Id: ");
    sbuf_str(out, c->reqid);
    sbuf_lit(out, "\r\n");
    decide_upstream_headers(c, out);
    sso_upstream_headers(c, out);
    sbuf_lit(out, "\r\n");
}

/* ---- the request head ------------------------------------------------- */

static int conn_start_upstream(struct conn *c, const char *head, size_t len)
{
    struct upconn *u = up_connect(c);

    if (u == NULL) {
        metrics_upstream_error(c->route->name, METRICS_UP_CONNECT_FAILED);
        conn_respond_error(c, 502, "The application could not be reached.");
        return -1;
    }
    c->up = u;
    if (c->req_body == HTTP_BODY_NONE && !c->websocket && !c->retried && u->reused) {
        /* Keep a copy so a request that meets a pooled connection the
         * upstream just closed can be retried once on a new one. */
        c->retry_head = NULL;
        if (len > c->retry_cap) {
            free(c->retry_buf);
            c->retry_cap = 0;
            c->retry_buf = malloc(len < 4096 ? 4096 : len);
            if (c->retry_buf != NULL)
                c->retry_cap = len < 4096 ? 4096 : len;
        }
        if (c->retry_buf != NULL) {
            memcpy(c->retry_buf, head, len);
            c->retry_head = c->retry_buf;
            c->retry_len = len;
        }
    }
    if (u->state == UP_ACTIVE && u->reused && c->req_done && !c->websocket &&
        !c->route->upstream_tls && evbuffer_get_length(bufferevent_get_output(u->bev)) == 0) {
        /* A whole request (nothing follows it: no body, no tunnel) on an
         * idle pooled connection: write it now rather than register for
         * writability and write on the next loop turn (two epoll_ctl and a
         * wake-up per request). What the socket does not take, or an error,
         * is left to the bufferevent as usual. */
        struct evbuffer *out = bufferevent_get_output(u->bev);
        int wr;
        bufferevent_disable(u->bev, EV_WRITE);
        evbuffer_add(out, head, len);
        /* libevent keeps the start of a socket bufferevent's output frozen
         * outside its own write callback: thaw it as that callback does */
        evbuffer_unfreeze(out, 1);
        wr = evbuffer_write(out, bufferevent_getfd(u->bev));
        evbuffer_freeze(out, 1);
        if (wr < 0 || evbuffer_get_length(out) > 0)
            bufferevent_enable(u->bev, EV_WRITE);
        bev_timeouts(u->bev, c->gen->conf->timeout_upstream_response_ms,
                     c->gen->conf->timeout_upstream_response_ms);
        bev_enable_read(u->bev);
        return 0;
    }
    evbuffer_add(bufferevent_get_output(u->bev), head, len);
    if (u->state == UP_ACTIVE)
        bev_timeouts(u->bev, c->req_done ? c->gen->conf->timeout_upstream_response_ms : 0,
                     c->gen->conf->timeout_upstream_response_ms);
    bufferevent_enable(u->bev, EV_READ | EV_WRITE);
    return 0;
}

/* dst = the first len bytes of src, cut to fit, NUL-terminated (what
 * snprintf "%.*s" did, without formatting). */
static void copy_field(char *dst, size_t size, const char *src, size_t len)
{
    if (len >= size)
        len = size - 1;
    if (len > 0)
        memcpy(dst, src, len);
    dst[len] = '\0';
}

/*
 * Parse and act on a request head in the input buffer. Returns -1 when the
 * connection was freed or is closing, 0 otherwise.
 */
int conn_read_head(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    const struct conf *cf = c->gen->conf;
    struct http_limits lim = {cf->limit_request_line, cf->limit_header_size,
                              cf->limit_header_count};
    struct http_request req;
    enum http_parse_status st;
    size_t len = evbuffer_get_length(in), n;
    const char *buf, *perr = NULL;
    struct sbuf head;
    char headbuf[8192];
    char *path;
    size_t plen;
    int rc;

    if (len == 0)
        return 0;
    if (!c->head_started) {
        c->head_started = 1;
        clock_gettime(CLOCK_MONOTONIC, &c->t_start);
        conn_new_reqid(c);
    }
    n = len < cf->limit_header_size ? len : cf->limit_header_size;
    buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    if (buf == NULL) {
        conn_respond_error(c, 500, "Out of memory.");
        return -1;
    }
    memset(&req, 0, sizeof(req));
    st = http_request_parse(buf, n, &lim, c->w->hdrs, HTTP_MAX_HEADERS, &req);
    if (st == HTTP_PARSE_INCOMPLETE) {
        if (n >= cf->limit_header_size) {
            conn_respond_error(c, 431, "The request head is too large.");
            return -1;
        }
        /* The header deadline runs from the first byte of a head that did
         * not come whole (a head that did is parsed at once and needs no
         * timer: two timer changes fewer per request). */
        if (!evtimer_pending(c->timer, NULL)) {
            struct timeval tv;
            set_tv(&tv, cf->timeout_header_ms);
            evtimer_add(c->timer, &tv);
            bev_timeouts(c->bev, cf->timeout_header_ms, cf->timeout_send_ms);
        }
        return 0;
    }
    if (evtimer_pending(c->timer, NULL))
        evtimer_del(c->timer);
    if (st == HTTP_PARSE_ERROR) {
        c->error = req.error;
        conn_respond_error(c, req.error_status ? req.error_status : 400,
                           req.error ? req.error : "Malformed request.");
        return -1;
    }
    c->nreq++;
    c->minor = req.minor_version;
    c->keep_alive = req.keep_alive;
    c->is_head = req.is_head;
    copy_field(c->method, sizeof(c->method), req.method, req.method_len);
    copy_field(c->host, sizeof(c->host), req.host, req.host ? req.host_len : 0);
    {
        size_t i;
        c->authority[0] = '\0';
        for (i = 0; i < req.nheaders; i++)
            if (header_is(&req.headers[i], "host"))
                copy_field(c->authority, sizeof(c->authority), req.headers[i].value,
                           req.headers[i].value_len);
        if (c->authority[0] == '\0')
            copy_field(c->authority, sizeof(c->authority), c->host, strlen(c->host));
    }

    if (c->gen != c->w->gen && c->peer.verified) {
        /* A reload happened since this connection was accepted: its
         * certificate must still pass the new CA and CRL (a revocation
         * reaches open keep-alive connections on their next request). */
        char why[160];
        if (tls_server_recheck(c->w->gen->tls, c->gen->tls, bufferevent_openssl_get_ssl(c->bev),
                               why, sizeof(why)) == -1) {
            log_warnx("tls: open connection from %s (device %s) closed: %s", c->client,
                      c->peer.device_id, why);
            c->error = "certificate no longer valid";
            conn_respond_error(c, 403, "This device's certificate is no longer accepted.");
            return -1;
        }
        proxy_gen_unref(c->gen);
        c->gen = gen_ref(c->w->gen);
        cf = c->gen->conf;
    }
    if (c->peer.verified == 0) {
        /* enroll_page mode: nothing but the enroll page, ever. */
        conn_respond_enroll(c);
        return -1;
    }
    if (req.is_connect) {
        conn_respond_error(c, 405, "CONNECT is not supported.");
        return -1;
    }
    if (req.method_len != strlen(c->method)) {
        conn_respond_error(c, 501, "Method not supported.");
        return -1;
    }
    /* Domain fronting: the TLS server name and the Host must agree. */
    if (c->peer.sni[0] != '\0' && (strlen(c->peer.sni) != req.host_len ||
                                   strncasecmp(c->peer.sni, req.host, req.host_len) != 0)) {
        conn_respond_error(c, 421, "The Host header does not match the TLS server name.");
        return -1;
    }

    c->path = NULL;
    plen = req.path_len + 1 + (req.query ? req.query_len + 1 : 0);
    if (plen > c->path_cap) { /* grows once or twice per connection */
        size_t cap = plen < 256 ? 256 : plen;

        free(c->path_buf);
        c->path_cap = 0;
        c->path_buf = malloc(cap);
        if (c->path_buf == NULL) {
            conn_respond_error(c, 500, "Out of memory.");
            return -1;
        }
        c->path_cap = cap;
    }
    path = c->path_buf;
    c->path = path;
    if (http_path_normalize(req.path, req.path_len, 0, path, &plen, &perr) == -1) {
        /* Retry with encoded slashes allowed: the route decides. */
        const char *perr2 = NULL;
        if (http_path_normalize(req.path, req.path_len, HTTP_PATH_ALLOW_ENCODED_SLASH, path, &plen,
                                &perr2) == -1) {
            c->path_len = 0;
            c->error = perr2;
            conn_respond_error(c, 400, "The request path is malformed.");
            return -1;
        }
        c->route = conf_route_match(cf, req.host, req.host_len, path, plen);
        if (c->route == NULL || !c->route->allow_encoded_slash) {
            c->path_len = plen;
            c->error = perr;
            conn_respond_error(c, 400, "The request path is malformed.");
            return -1;
        }
    } else {
        c->route = conf_route_match(cf, req.host, req.host_len, path, plen);
    }
    c->path_len = plen;
    if (c->route == NULL) {
        conn_respond_error(c, 404, "No application is configured for this address.");
        return -1;
    }
    if (req.query != NULL) {
        path[plen] = '?';
        memcpy(path + plen + 1, req.query, req.query_len);
        c->path_len = plen + 1 + req.query_len;
        path[c->path_len] = '\0';
    }

    c->req_body = req.body;
    c->req_remaining = req.content_length;
    c->max_body = c->route->max_body_size;
    if (req.body == HTTP_BODY_LENGTH && c->max_body != 0 && req.content_length > c->max_body) {
        conn_respond_error(c, 413, "The request body is larger than this application accepts.");
        return -1;
    }
    if (req.body == HTTP_BODY_CHUNKED)
        http_chunked_init(&c->req_chunked);
    c->req_done =
        req.body == HTTP_BODY_NONE || (req.body == HTTP_BODY_LENGTH && req.content_length == 0);
    c->websocket = req.upgrade_websocket && c->route->websocket;
    c->pending_head = req.head_len;

    /* Built-in endpoints, then identity. Both may answer themselves, or
     * wait (reading off) and come back through conn_read_head(). */
    if (sso_is_builtin(c->path, plen)) {
        if (sso_builtin(c, &req) == SSO_HANDLED && sso_waiting_body(c)) {
            evbuffer_drain(in, req.head_len);
            c->pending_head = 0;
            conn_set_state(c, CST_LOCAL);
            bev_timeouts(c->bev, cf->timeout_body_ms, cf->timeout_send_ms);
            conn_enable_read(c);
            return sso_local_body(c);
        }
        return -1;
    }
    if (sso_authenticate(c, &req) == SSO_HANDLED)
        return -1;
    if (decide_request(c, &req) == DECIDE_HANDLED)
        return -1;

    sbuf_init(&head, headbuf, sizeof(headbuf));
    build_upstream_head(c, &req, &head);
    if (head.failed) {
        sbuf_free(&head);
        conn_respond_error(c, 500, "Out of memory.");
        return -1;
    }
    evbuffer_drain(in, req.head_len);
    c->pending_head = 0;
    conn_set_state(c, CST_FORWARD);
    if (req.expect_continue && !c->req_done)
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    rc = conn_start_upstream(c, head.p, head.len);
    sbuf_free(&head);
    if (rc == -1)
        return -1;
    /* Body: read from the client with the body timeout; no body: reading
     * stays on while the upstream answers (see conn_read_cb: pipelined
     * requests wait in the input buffer), without a read timeout. */
    if (!c->req_done) {
        bev_timeouts(c->bev, cf->timeout_body_ms, cf->timeout_send_ms);
        return conn_relay_request(c);
    }
    bev_timeouts(c->bev, 0, cf->timeout_send_ms);
    return 0;
}

/* ---- relaying bodies -------------------------------------------------- */

/*
 * Move n bytes from src to dst. Small pieces are copied so they join the
 * chain that holds the head we just wrote: one TLS record and one write
 * instead of two. Large ones move whole chains without copying.
 */
static void relay_move(struct evbuffer *src, struct evbuffer *dst, size_t n)
{
    char tmp[4096];

    if (n <= sizeof(tmp)) {
        evbuffer_remove(src, tmp, n);
        evbuffer_add(dst, tmp, n);
    } else {
        evbuffer_remove_buffer(src, dst, n);
    }
}

/*
 * Move a chunked body from src to dst. emit: re-encode as chunked (else copy
 * payload only). Returns 1 when the last chunk was consumed, 0 when more
 * input is needed, -1 on a framing error (*err set).
 */
static int relay_chunked(struct evbuffer *src, struct evbuffer *dst, struct http_chunked *ck,
                         int emit, uint64_t *bytes, uint64_t limit, const char **err)
{
    while (evbuffer_get_length(src) > 0 && evbuffer_get_length(dst) < RELAY_HIGH) {
        struct evbuffer_iovec v;
        size_t consumed = 0, dlen = 0, pre;
        const char *data = NULL;
        enum http_chunked_status st;

        if (evbuffer_peek(src, -1, NULL, &v, 1) < 1)
            break;
        st = http_chunked_feed(ck, v.iov_base, v.iov_len, &consumed, &data, &dlen);
        if (st == HTTP_CHUNKED_ERROR) {
            *err = ck->error ? ck->error : "malformed chunked body";
            return -1;
        }
        if (st == HTTP_CHUNKED_DATA && dlen > 0) {
            pre = (size_t)(data - (const char *)v.iov_base);
            *bytes += dlen;
            if (limit != 0 && *bytes > limit) {
                *err = "body too large";
                return -1;
            }
            evbuffer_drain(src, pre);
            if (emit)
                evbuffer_add_printf(dst, "%zx\r\n", dlen);
            relay_move(src, dst, dlen);
            if (emit)
                evbuffer_add(dst, "\r\n", 2);
            evbuffer_drain(src, consumed - pre - dlen);
        } else {
            evbuffer_drain(src, consumed);
        }
        if (st == HTTP_CHUNKED_DONE) {
            if (emit)
                evbuffer_add(dst, "0\r\n\r\n", 5);
            return 1;
        }
        if (consumed == 0 && st == HTTP_CHUNKED_MORE)
            break;
    }
    return 0;
}

/* Client -> upstream. Returns -1 if the connection was freed/closing. */
static int conn_relay_request(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out;
    const char *err = NULL;

    if (c->up == NULL || c->req_done)
        return 0;
    out = bufferevent_get_output(c->up->bev);
    if (c->req_body == HTTP_BODY_LENGTH) {
        size_t n = evbuffer_get_length(in);
        if (n > c->req_remaining)
            n = (size_t)c->req_remaining;
        if (n > 0) {
            relay_move(in, out, n);
            c->req_remaining -= n;
            c->req_bytes += n;
        }
        if (c->req_remaining == 0)
            c->req_done = 1;
    } else if (c->req_body == HTTP_BODY_CHUNKED) {
        int rc = relay_chunked(in, out, &c->req_chunked, 1, &c->req_bytes, c->max_body, &err);
        if (rc == -1) {
            c->error = err;
            c->keep_alive = 0;
            if (c->resp_started) {
                /* Too late for an error page: cut both sides. */
                conn_free(c);
                return -1;
            }
            if (strcmp(err, "body too large") == 0)
                conn_respond_error(c, 413,
                                   "The request body is larger than this application "
                                   "accepts.");
            else
                conn_respond_error(c, 400, "The request body is malformed.");
            return -1;
        }
        if (rc == 1)
            c->req_done = 1;
    }
    if (c->req_done) {
        const struct conf *cf = c->gen->conf;
        bev_timeouts(c->bev, 0, cf->timeout_send_ms);
        /* The upstream's answer is awaited from now on, not during the upload. */
        if (c->up->state == UP_ACTIVE)
            bev_timeouts(c->up->bev, cf->timeout_upstream_response_ms,
                         cf->timeout_upstream_response_ms);
        return 0;
    }
    if (evbuffer_get_length(out) >= RELAY_HIGH) {
        /* Backpressure: resume from up_write_cb below RELAY_LOW. */
        bufferevent_disable(c->bev, EV_READ);
        bufferevent_setwatermark(c->up->bev, EV_WRITE, RELAY_LOW, 0);
    } else {
        conn_enable_read(c);
    }
    return 0;
}

static void conn_request_done(struct conn *c);

/* Upstream -> client. Returns -1 if the connection was freed/closing. */
static int conn_relay_response(struct conn *c)
{
    struct upconn *u = c->up;
    struct evbuffer *in, *out = bufferevent_get_output(c->bev);
    const char *err = NULL;

    if (u == NULL)
        return 0;
    in = bufferevent_get_input(u->bev);
    if (c->state == CST_TUNNEL) {
        evbuffer_add_buffer(out, in);
    } else if (c->resp_body == HTTP_BODY_LENGTH) {
        size_t n = evbuffer_get_length(in);
        if (n > c->resp_remaining)
            n = (size_t)c->resp_remaining;
        if (n > 0) {
            relay_move(in, out, n);
            c->resp_remaining -= n;
            c->resp_bytes += n;
        }
        if (c->resp_remaining == 0)
            c->resp_done = 1;
    } else if (c->resp_body == HTTP_BODY_CHUNKED) {
        int rc =
            relay_chunked(in, out, &c->resp_chunked, c->resp_chunk_out, &c->resp_bytes, 0, &err);
        if (rc == -1) {
            log_warnx("upstream %s: %s (request %s)", c->route->upstream, err, c->reqid);
            c->error = "malformed chunked response from upstream";
            metrics_upstream_error(c->route->name, METRICS_UP_BAD_RESPONSE);
            access_log_write(c);
            conn_free(c);
            return -1;
        }
        if (rc == 1)
            c->resp_done = 1;
    } else if (c->resp_body == HTTP_BODY_CLOSE) {
        size_t n = evbuffer_get_length(in);
        if (n > 0) {
            if (c->resp_chunk_out)
                evbuffer_add_printf(out, "%zx\r\n", n);
            c->resp_bytes += n;
            relay_move(in, out, n);
            if (c->resp_chunk_out)
                evbuffer_add(out, "\r\n", 2);
        }
    } else {
        c->resp_done = 1;
    }
    if (c->resp_done) {
        conn_request_done(c);
        return -1; /* c may be gone or reset: callers stop here */
    }
    if (evbuffer_get_length(out) >= RELAY_HIGH) {
        bufferevent_disable(u->bev, EV_READ);
        bufferevent_setwatermark(c->bev, EV_WRITE, RELAY_LOW, 0);
    } else {
        bufferevent_enable(u->bev, EV_READ);
    }
    return 0;
}

/*
 * The client's TLS layer reads ahead (tls.c): one read(2) takes what the
 * socket holds - a whole record, often more - instead of a record header
 * and then its body. bufferevent_openssl only reads again when the socket
 * is readable, and reads only the record it is in: records already in
 * OpenSSL's buffer are ours to start. After each read callback and each
 * time reading is turned back on, a connection with bytes waiting there
 * gets its read event run in this loop turn (a partial record just finds
 * the socket empty and waits for the rest as usual).
 */
static void bev_tls_pending(struct bufferevent *bev)
{
    bufferevent_data_cb rcb = NULL;
    SSL *ssl;

    bufferevent_getcb(bev, &rcb, NULL, NULL, NULL);
    if (rcb == NULL || !(bufferevent_get_enabled(bev) & EV_READ)) /* freed, or not reading */
        return;
    ssl = bufferevent_openssl_get_ssl(bev);
    if (ssl != NULL && SSL_has_pending(ssl))
        event_active(&bev->ev_read, EV_READ, 1);
}

/* An idle client connection gives its TLS read and write buffers (~34 KiB)
 * back to the allocator; OpenSSL allocates them again when the connection
 * is used. Nothing happens while a buffer holds data. */
static void conn_tls_trim(struct conn *c)
{
    SSL *ssl;

    if (c->bev == NULL || c->state != CST_READ_HEAD ||
        evbuffer_get_length(bufferevent_get_input(c->bev)) > 0 ||
        evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
        return;
    ssl = bufferevent_openssl_get_ssl(c->bev);
    if (ssl != NULL)
        SSL_free_buffers(ssl);
}

static void conn_enable_read(struct conn *c)
{
    bev_enable_read(c->bev);
    bev_tls_pending(c->bev);
}

/*
 * Encrypt and write the client's output now, in this loop turn, instead of
 * registering for writability and writing when epoll says so: for a response
 * that fits the socket buffer (nearly all) that saves two epoll_ctl and a
 * loop wake-up per request. bufferevent_openssl has no flush for this; its
 * write event runs exactly the write it would run on EPOLLOUT (and keeps
 * waiting for writability itself when the socket does not take it all).
 */
static void conn_write_soon(struct conn *c)
{
    if (c->bev != NULL && c->state != CST_HANDSHAKE &&
        evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
        event_active(&c->bev->ev_write, EV_WRITE, 1);
}

/* The response has been handed to the client's output buffer. */
static void conn_request_done(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    int keep;

    access_log_write(c);
    /* A response that finished before the request body did: the rest of the
     * body is still on the wire, so this connection cannot carry another
     * request. */
    if (!c->req_done)
        c->keep_alive = 0;
    keep = c->keep_alive && !c->w->stopping;
    up_release(c);
    if (!keep) {
        conn_close_after_flush(c);
        return;
    }
    conn_reset_request(c);
    c->reqid[0] = '\0';
    conn_set_state(c, CST_READ_HEAD);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bev_timeouts(c->bev, c->gen->conf->timeout_keepalive_ms, c->gen->conf->timeout_send_ms);
    conn_enable_read(c);
    conn_write_soon(c);
    if (evbuffer_get_length(in) > 0)
        conn_read_head(c); /* pipelined */
}

/* ---- the response head ------------------------------------------------ */

static int conn_response_head(struct conn *c)
{
    struct upconn *u = c->up;
    struct evbuffer *in = bufferevent_get_input(u->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    struct http_response resp;
    enum http_parse_status st;
    size_t len, n, i;
    const char *buf;

    for (;;) {
        len = evbuffer_get_length(in);
        if (len == 0)
            return 0;
        n = len < UPSTREAM_MAX_HEAD ? len : UPSTREAM_MAX_HEAD;
        buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
        memset(&resp, 0, sizeof(resp));
        st = http_response_parse(buf, n, UPSTREAM_MAX_HEAD, c->is_head, c->w->hdrs,
                                 HTTP_MAX_HEADERS, &resp);
        if (st == HTTP_PARSE_INCOMPLETE) {
            if (n >= UPSTREAM_MAX_HEAD)
                break;
            return 0;
        }
        if (st == HTTP_PARSE_ERROR)
            break;
        if (resp.status >= 100 && resp.status < 200 && resp.status != 101) {
            /* Interim responses: we answered Expect ourselves. */
            evbuffer_drain(in, resp.head_len);
            continue;
        }
        if (resp.status == 101 && !(c->websocket && resp.upgrade_websocket))
            break;
        goto ok;
    }
    log_warnx("upstream %s: malformed response head (%s), request %s", c->route->upstream,
              resp.error ? resp.error : "too large", c->reqid);
    c->error = "malformed response from upstream";
    c->keep_alive = 0;
    metrics_upstream_error(c->route->name, METRICS_UP_BAD_RESPONSE);
    conn_respond_error(c, 502, "The application sent an invalid response.");
    return -1;
ok:
    c->retry_head = NULL;
    c->resp_started = 1;
    c->status = resp.status;
    c->resp_body = resp.body;
    c->resp_remaining = resp.content_length;
    c->up_keep_alive = resp.keep_alive;
    c->resp_chunk_out = 0;
    if (resp.body == HTTP_BODY_CHUNKED)
        http_chunked_init(&c->resp_chunked);
    if (resp.body == HTTP_BODY_CLOSE) {
        if (c->minor >= 1)
            c->resp_chunk_out = 1;
        else
            c->keep_alive = 0;
    } else if (resp.body == HTTP_BODY_CHUNKED) {
        if (c->minor >= 1)
            c->resp_chunk_out = 1;
        else
            c->keep_alive = 0;
    }
    if (!c->req_done)
        c->keep_alive = 0; /* see conn_request_done() */

    {
        int conn_named = connection_names_headers(resp.headers, resp.nheaders);
        struct sbuf hb;
        char hbuf[4096];

        sbuf_init(&hb, hbuf, sizeof(hbuf));
        sbuf_lit(&hb, "HTTP/1.1 ");
        sbuf_u64(&hb, (uint64_t)resp.status);
        sbuf_lit(&hb, " ");
        sbuf_add(&hb, resp.reason, resp.reason_len);
        sbuf_lit(&hb, "\r\n");
        for (i = 0; i < resp.nheaders; i++) {
            const struct http_header *h = &resp.headers[i];
            unsigned k = header_class(h);
            if ((k & (HC_HOP | HC_ZTRID)) ||
                (conn_named && named_in_connection(resp.headers, resp.nheaders, h)))
                continue;
            if ((k & HC_CLEN) && resp.body != HTTP_BODY_LENGTH &&
                !(c->is_head || resp.status == 304))
                continue;
            sbuf_add(&hb, h->name, h->name_len);
            sbuf_lit(&hb, ": ");
            sbuf_add(&hb, h->value, h->value_len);
            sbuf_lit(&hb, "\r\n");
        }
        if (resp.status == 101) {
            sbuf_lit(&hb, "Connection: upgrade\r\nUpgrade: websocket\r\n");
        } else {
            if (c->resp_chunk_out)
                sbuf_lit(&hb, "Transfer-Encoding: chunked\r\n");
            if (!c->keep_alive || c->w->stopping)
                sbuf_lit(&hb, "Connection: close\r\n");
            else if (c->minor == 0)
                sbuf_lit(&hb, "Connection: keep-alive\r\n");
        }
        sso_response_headers(c, &hb);
        sbuf_lit(&hb, "X-ZT-Request-Id: ");
        sbuf_str(&hb, c->reqid);
        sbuf_lit(&hb, "\r\n\r\n");
        evbuffer_add(out, hb.p, hb.len);
        sbuf_free(&hb);
    }
    evbuffer_drain(in, resp.head_len);

    if (resp.status == 101) {
        /* From here on: bytes both ways, no HTTP. */
        access_log_write(c);
        conn_set_state(c, CST_TUNNEL);
        c->req_done = 1;
        bev_timeouts(c->bev, c->gen->conf->timeout_upstream_response_ms,
                     c->gen->conf->timeout_send_ms);
        bev_timeouts(u->bev, c->gen->conf->timeout_upstream_response_ms,
                     c->gen->conf->timeout_send_ms);
        conn_enable_read(c);
        if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
            evbuffer_add_buffer(bufferevent_get_output(u->bev), bufferevent_get_input(c->bev));
    }
    return 0;
}

/* ---- upstream callbacks ----------------------------------------------- */

static void up_read_cb(struct bufferevent *bev, void *arg)
{
    struct upconn *u = arg;
    struct conn *c = u->client;

    if (c == NULL) {
        up_free(u);
        return;
    }
    if (!c->resp_started && c->state != CST_TUNNEL) {
        if (conn_response_head(c) == -1 || !c->resp_started)
            return;
    }
    conn_relay_response(c);
}

static void up_write_cb(struct bufferevent *bev, void *arg)
{
    struct upconn *u = arg;
    struct conn *c = u->client;

    if (c == NULL)
        return;
    if (evbuffer_get_length(bufferevent_get_output(bev)) <= RELAY_LOW) {
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        if (c->state == CST_TUNNEL) {
            conn_enable_read(c);
            if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
                evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(c->bev));
        } else if (c->state == CST_FORWARD && !c->req_done) {
            conn_relay_request(c);
        }
    }
}

static void up_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct upconn *u = arg;
    struct conn *c = u->client;
    const struct conf *cf;

    if (c == NULL) {
        up_free(u);
        return;
    }
    cf = c->gen->conf;
    if (what & BEV_EVENT_CONNECTED) {
        evutil_socket_t fd = bufferevent_getfd(bev);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        u->state = UP_ACTIVE;
        bev_timeouts(bev, c->req_done ? cf->timeout_upstream_response_ms : 0,
                     cf->timeout_upstream_response_ms);
        return;
    }
    if (what & BEV_EVENT_EOF && (c->resp_started || c->state == CST_TUNNEL)) {
        /* Drain what is left, then finish. */
        if (evbuffer_get_length(bufferevent_get_input(bev)) > 0 && conn_relay_response(c) == -1)
            return;
        if (c->state == CST_TUNNEL) {
            c->up = NULL;
            u->client = NULL;
            up_free(u);
            conn_close_after_flush(c);
            return;
        }
        if (c->resp_body == HTTP_BODY_CLOSE) {
            if (c->resp_chunk_out)
                evbuffer_add(bufferevent_get_output(c->bev), "0\r\n\r\n", 5);
            c->up_keep_alive = 0;
            c->resp_done = 1;
            conn_request_done(c);
            return;
        }
        log_warnx("upstream %s closed mid-response, request %s", c->route->upstream, c->reqid);
        c->error = "upstream closed mid-response";
        metrics_upstream_error(c->route->name, METRICS_UP_CLOSED);
        access_log_write(c);
        conn_free(c);
        return;
    }
    if (c->resp_started || c->state == CST_TUNNEL) {
        /* Error or timeout after the head went out: all we can do is cut. */
        log_warnx("upstream %s: %s after response started, request %s", c->route->upstream,
                  (what & BEV_EVENT_TIMEOUT) ? "timeout" : "error", c->reqid);
        if (c->state != CST_TUNNEL) {
            c->error = (what & BEV_EVENT_TIMEOUT) ? "upstream timeout" : "upstream error";
            metrics_upstream_error(c->route->name, (what & BEV_EVENT_TIMEOUT)
                                                       ? METRICS_UP_RESPONSE_TIMEOUT
                                                       : METRICS_UP_CLOSED);
            access_log_write(c);
        }
        conn_free(c);
        return;
    }
    /* Nothing received yet. A reused connection that the upstream closed
     * while idle: retry once on a fresh one if the request is replayable. */
    if (u->reused && c->retry_head != NULL && !(what & BEV_EVENT_TIMEOUT)) {
        char *head = c->retry_head;
        c->retry_head = NULL;
        c->retried = 1;
        c->up = NULL;
        u->client = NULL;
        up_free(u);
        log_debug("upstream %s: pooled connection closed, retrying request %s", c->route->upstream,
                  c->reqid);
        conn_start_upstream(c, head, c->retry_len); /* head: c->retry_buf, not copied again */
        return;
    }
    c->up = NULL;
    u->client = NULL;
    if (what & BEV_EVENT_TIMEOUT) {
        log_warnx("upstream %s: timeout (%s), request %s", c->route->upstream,
                  u->state == UP_CONNECTING ? "connect" : "response", c->reqid);
        metrics_upstream_error(c->route->name, u->state == UP_CONNECTING
                                                   ? METRICS_UP_CONNECT_TIMEOUT
                                                   : METRICS_UP_RESPONSE_TIMEOUT);
        up_free(u);
        c->error = "upstream timeout";
        conn_respond_error(c, 504, "The application did not answer in time.");
        return;
    }
    {
        int e = EVUTIL_SOCKET_ERROR();
        unsigned long se = bufferevent_get_openssl_error(bev);
        char sbuf[160] = "";
        if (se != 0)
            ERR_error_string_n(se, sbuf, sizeof(sbuf));
        log_warnx("upstream %s: %s%s%s, request %s", c->route->upstream,
                  u->state == UP_CONNECTING ? "connect failed: " : "error: ",
                  se != 0 ? sbuf : (e ? evutil_socket_error_to_string(e) : "closed"), "", c->reqid);
        metrics_upstream_error(c->route->name, se != 0 ? METRICS_UP_TLS
                                               : u->state == UP_CONNECTING
                                                   ? METRICS_UP_CONNECT_FAILED
                                                   : METRICS_UP_CLOSED);
    }
    up_free(u);
    c->error = "upstream unreachable";
    conn_respond_error(c, 502, "The application could not be reached.");
}

/* ---- client callbacks ------------------------------------------------- */

static void conn_handshake_done(struct conn *c)
{
    const struct conf *cf = c->gen->conf;

    tls_server_peer(c->gen->tls, bufferevent_openssl_get_ssl(c->bev), &c->peer);
    metrics_tls_handshake(c->peer.verified, c->peer.resumed, c->peer.reason);
    if (!c->peer.verified) {
        log_warnx("tls: handshake refused from %s: %s", c->client, c->peer.reason);
        if (cf->tls_unauthenticated == CONF_UNAUTH_REJECT) {
            conn_free(c);
            return;
        }
    } else {
        log_debug("tls: %s device %s%s", c->client, c->peer.device_id,
                  c->peer.resumed ? " (resumed)" : "");
    }
    conn_set_state(c, CST_READ_HEAD);
    /* Draining: the first request is awaited no longer than a head. */
    bev_timeouts(c->bev, c->w->stopping ? cf->timeout_header_ms : cf->timeout_keepalive_ms,
                 cf->timeout_send_ms);
    conn_enable_read(c);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        conn_read_head(c);
    else
        conn_tls_trim(c); /* many connections wait a while for their first request */
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    if (what & BEV_EVENT_CONNECTED) {
        conn_handshake_done(c);
        return;
    }
    if (c->state == CST_HANDSHAKE) {
        char reason[200];
        unsigned long e, first = 0;
        while ((e = bufferevent_get_openssl_error(bev)) != 0)
            if (first == 0)
                first = e;
        if (what & BEV_EVENT_TIMEOUT)
            snprintf(reason, sizeof(reason), "handshake timeout");
        else
            tls_handshake_error(bufferevent_openssl_get_ssl(bev), first, reason, sizeof(reason));
        metrics_tls_handshake(0, 0, reason);
        /* A peer that just hangs up (port probes, health checks, a client
         * stopping) is not a security event; a refused certificate is. */
        if (strstr(reason, "unexpected eof") != NULL ||
            strstr(reason, "closed during handshake") != NULL)
            log_info("tls: handshake refused from %s: %s", c->client, reason);
        else
            log_warnx("tls: handshake refused from %s: %s", c->client, reason);
        conn_free(c);
        return;
    }
    if (c->state == CST_CLOSING) {
        conn_free(c);
        return;
    }
    if (c->state == CST_FORWARD && c->req_done && (what & BEV_EVENT_EOF) &&
        !(what & BEV_EVENT_ERROR) && c->up != NULL) {
        /* The client finished sending while its request is with the
         * upstream (reading stays on meanwhile): answer, then close. */
        c->keep_alive = 0;
        bufferevent_disable(bev, EV_READ);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (c->state == CST_READ_HEAD && c->head_started) {
            c->error = "header timeout";
            conn_respond_error(c, 408, "The request was not received in time.");
            return;
        }
        if (c->state == CST_FORWARD && !c->req_done && !c->resp_started) {
            c->error = "body timeout";
            conn_respond_error(c, 408, "The request body was not received in time.");
            return;
        }
        if (c->state == CST_FORWARD)
            c->error = (what & BEV_EVENT_WRITING) ? "client send timeout" : "client timeout";
    } else if (c->state == CST_FORWARD) {
        c->error = "client closed connection";
    }
    if (c->state == CST_READ_HEAD && !c->head_started)
        log_debug("conn: %s closed between requests after %u: %s", c->client, c->nreq,
                  (what & BEV_EVENT_TIMEOUT) ? "keep-alive idle timeout"
                  : (what & BEV_EVENT_EOF)   ? "client closed"
                                             : "read error");
    if (c->state == CST_FORWARD)
        access_log_write(c);
    if (c->state == CST_TUNNEL && (what & BEV_EVENT_EOF) && c->up != NULL) {
        /* Client finished sending: pass the rest on, then close. */
        evbuffer_add_buffer(bufferevent_get_output(c->up->bev), bufferevent_get_input(bev));
    }
    conn_free(c);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    c->io_recent = 1;
    switch (c->state) {
    case CST_READ_HEAD:
        conn_read_head(c);
        break;
    case CST_FORWARD:
        /* With the request complete, what comes now is a pipelined request:
         * it waits in the input buffer, reading stops past a bound. */
        if (conn_relay_request(c) == 0 && c->req_done &&
            evbuffer_get_length(bufferevent_get_input(bev)) >= PIPELINE_MAX)
            bufferevent_disable(bev, EV_READ);
        break;
    case CST_TUNNEL:
        if (c->up != NULL) {
            struct evbuffer *out = bufferevent_get_output(c->up->bev);
            evbuffer_add_buffer(out, bufferevent_get_input(bev));
            if (evbuffer_get_length(out) >= RELAY_HIGH) {
                bufferevent_disable(bev, EV_READ);
                bufferevent_setwatermark(c->up->bev, EV_WRITE, RELAY_LOW, 0);
            }
        }
        break;
    case CST_LOCAL:
        sso_local_body(c);
        break;
    case CST_CLOSING:
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
        break;
    default:
        break;
    }
    bev_tls_pending(bev); /* c may be gone: bev is held by libevent until we return */
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    size_t left = evbuffer_get_length(bufferevent_get_output(bev));

    if (c->state == CST_CLOSING) {
        if (left == 0)
            conn_start_linger(c);
        return;
    }
    if (left <= RELAY_LOW && c->up != NULL) {
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        bufferevent_enable(c->up->bev, EV_READ);
        if (evbuffer_get_length(bufferevent_get_input(c->up->bev)) > 0)
            conn_relay_response(c);
    }
}

/* ---- accepting -------------------------------------------------------- */

/* Hand the socket to TLS: the handshake starts (CST_HANDSHAKE). Takes fd;
 * on failure the connection is freed. */
static void conn_start_tls(struct conn *c, evutil_socket_t fd)
{
    const struct conf *cf = c->gen->conf;
    SSL *ssl = tls_server_ssl_new(c->gen->tls);

    if (ssl == NULL) {
        evutil_closesocket(fd);
        log_warnx("accept: out of memory");
        conn_free(c);
        return;
    }
    c->bev = bufferevent_openssl_socket_new(c->w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        SSL_free(ssl);
        evutil_closesocket(fd);
        conn_free(c);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    bev_timeouts(c->bev, cf->timeout_handshake_ms, cf->timeout_handshake_ms);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* "ip" and "ip:port" of an AF_INET/AF_INET6 address ("?" otherwise). */
static void addr_text(const struct sockaddr *sa, char *ipout, size_t iplen, char *full,
                      size_t fulllen)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        port = ntohs(a->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
    }
    snprintf(ipout, iplen, "%s", ip);
    snprintf(full, fulllen, "%s:%d", ip, port);
}

static void conn_set_client(struct conn *c, const struct sockaddr *sa)
{
    addr_text(sa, c->client_ip, sizeof(c->client_ip), c->client, sizeof(c->client));
}

/*
 * PROXY protocol v2 (proxyproto.h): on a proxy_protocol listener the load
 * balancer's header comes first, before the TLS ClientHello. It is read
 * here, on the worker's loop, with non-blocking recv()s of exactly the
 * bytes the parser still needs, so nothing of the TLS stream is consumed;
 * then the socket goes to the TLS bufferevent as usual. The whole header
 * must arrive within timeouts.handshake. From then on the client address
 * is the header's source everywhere: access and audit logs, the rules (IP,
 * country), X-Forwarded-For to the upstream.
 */
struct pp_wait {
    struct event *ev;
    evutil_socket_t fd;
    struct timespec deadline;
    size_t have, need;
    uint8_t buf[PROXYPROTO_MAX_HEADER];
};

static void pp_wait_free(struct pp_wait *pp)
{
    if (pp == NULL)
        return;
    if (pp->ev != NULL)
        event_free(pp->ev);
    if (pp->fd >= 0)
        evutil_closesocket(pp->fd);
    free(pp);
}

static void pp_done(struct conn *c, const struct proxyproto_header *h)
{
    struct pp_wait *pp = c->pp;
    evutil_socket_t fd = pp->fd;

    if (h->command == PROXYPROTO_CMD_PROXY) {
        char via[64];
        snprintf(via, sizeof(via), "%s", c->client);
        memcpy(&c->peer_addr, &h->src, h->addrlen);
        conn_set_client(c, (const struct sockaddr *)&h->src);
        log_debug("proxy protocol: client %s via %s", c->client, via);
    } else {
        /* LOCAL: the balancer's own connection (a health check). */
        log_debug("proxy protocol: LOCAL connection from %s", c->client);
    }
    pp->fd = -1;
    pp_wait_free(pp);
    c->pp = NULL;
    conn_start_tls(c, fd);
}

static void pp_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct pp_wait *pp = c->pp;
    struct proxyproto_header h;
    struct timespec now;
    struct timeval tv;
    char err[PROXYPROTO_ERR_MAX];
    int64_t left_ms;

    if (what & EV_TIMEOUT) {
        log_warnx("proxy protocol: %s sent no complete header within timeouts.handshake "
                  "(%zu bytes), closed",
                  c->client, pp->have);
        conn_free(c);
        return;
    }
    for (;;) {
        ssize_t n = recv(fd, pp->buf + pp->have, pp->need - pp->have, 0);
        size_t need = 0;
        enum proxyproto_status st;

        if (n == -1 && errno == EINTR)
            continue;
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n == -1) {
            log_warn("proxy protocol: %s: recv", c->client);
            conn_free(c);
            return;
        }
        if (n == 0) {
            log_info("proxy protocol: %s closed the connection before a complete header (%zu "
                     "bytes)",
                     c->client, pp->have);
            conn_free(c);
            return;
        }
        pp->have += (size_t)n;
        st = proxyproto_parse(pp->buf, pp->have, sizeof(pp->buf), &h, &need, err, sizeof(err));
        if (st == PROXYPROTO_ERROR) {
            log_warnx("proxy protocol: connection from %s refused: %s", c->client, err);
            conn_free(c);
            return;
        }
        if (st == PROXYPROTO_DONE) {
            pp_done(c, &h);
            return;
        }
        pp->need = need;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    left_ms = (int64_t)(pp->deadline.tv_sec - now.tv_sec) * 1000 +
              (pp->deadline.tv_nsec - now.tv_nsec) / 1000000;
    set_tv(&tv, left_ms > 0 ? (uint64_t)left_ms : 1);
    event_add(pp->ev, &tv);
}

/* Start waiting for the header. Takes fd; -1 (fd closed) on failure. */
static int pp_wait_start(struct conn *c, evutil_socket_t fd)
{
    uint64_t ms = c->gen->conf->timeout_handshake_ms;
    struct pp_wait *pp = calloc(1, sizeof(*pp));
    struct timeval tv;

    if (pp == NULL) {
        evutil_closesocket(fd);
        return -1;
    }
    pp->fd = fd;
    pp->need = PROXYPROTO_FIXED_LEN;
    clock_gettime(CLOCK_MONOTONIC, &pp->deadline);
    pp->deadline.tv_sec += (time_t)(ms / 1000);
    pp->deadline.tv_nsec += (long)(ms % 1000) * 1000000;
    if (pp->deadline.tv_nsec >= 1000000000) {
        pp->deadline.tv_sec++;
        pp->deadline.tv_nsec -= 1000000000;
    }
    pp->ev = event_new(c->w->base, fd, EV_READ, pp_read_cb, c);
    c->pp = pp;
    if (pp->ev == NULL)
        return -1; /* conn_free() closes fd */
    set_tv(&tv, ms);
    event_add(pp->ev, &tv);
    return 0;
}

/* Which of this worker's listeners l is (its index in the config), -1. */
static int worker_listener_index(const struct worker *w, struct evconnlistener *l)
{
    evutil_socket_t fd = evconnlistener_get_fd(l);
    size_t j;

    for (j = 0; j < nlisten; j++)
        if (listen_fds[w->id][j] == fd)
            return (int)j;
    return -1;
}

static void worker_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int salen, void *arg)
{
    struct worker *w = arg;
    struct proxy_gen *g = w->gen;
    struct conn *c;
    int one = 1, li = worker_listener_index(w, l);

    if (w->stopping || w->nconns >= g->conf->limit_connections) {
        evutil_closesocket(fd);
        return;
    }
    if (li >= 0 && listen_pp[li]) {
        /* Only a trusted balancer may tell us who the client is; the list
         * is the running generation's (trusted_proxies reload on SIGHUP). */
        const struct conf_listener *cl =
            (size_t)li < g->conf->nlisteners ? &g->conf->listeners[li] : NULL;
        if (cl == NULL || !cl->proxy_protocol ||
            !proxyproto_peer_trusted(sa, cl->trusted_proxies, cl->ntrusted_proxies)) {
            char ip[48], who[64];
            addr_text(sa, ip, sizeof(ip), who, sizeof(who));
            log_warnx("proxy protocol: connection from %s refused: not in trusted_proxies", who);
            evutil_closesocket(fd);
            return;
        }
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        evutil_closesocket(fd);
        log_warnx("accept: out of memory");
        return;
    }
    c->w = w;
    c->gen = gen_ref(g);
    if ((size_t)salen <= sizeof(c->peer_addr))
        memcpy(&c->peer_addr, sa, (size_t)salen);
    conn_set_client(c, sa);
    c->timer = evtimer_new(w->base, conn_timer_cb, c);
    TAILQ_INSERT_TAIL(&w->conns, c, link);
    w->nconns++;
    if (w->nconns > w->conns_peak)
        w->conns_peak = w->nconns;
    metrics_count(METRICS_CONN_ACCEPTED);
    if (c->timer == NULL) {
        evutil_closesocket(fd);
        conn_free(c);
        return;
    }
    if (li >= 0 && listen_pp[li]) {
        if (pp_wait_start(c, fd) == -1)
            conn_free(c);
        return;
    }
    conn_start_tls(c, fd);
}

/* Out of descriptors (or memory): accept() fails while the connection
 * waits in the kernel's queue, so the listener would wake the loop again at
 * once, forever. Stop listening for a moment instead; connections already
 * open close meanwhile (timeouts) and give their descriptors back. */
#define ACCEPT_PAUSE_MS 250

static void worker_accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    size_t i;

    (void)fd;
    (void)what;
    if (w->stopping)
        return;
    for (i = 0; i < w->nlev; i++)
        if (w->lev[i] != NULL)
            evconnlistener_enable(w->lev[i]);
}

static void worker_accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct worker *w = arg;
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval tv;
    size_t i;

    (void)l;
    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
        log_warnx("accept: %s", evutil_socket_error_to_string(err));
        return;
    }
    if (w->accept_resume == NULL)
        w->accept_resume = evtimer_new(w->base, worker_accept_resume_cb, w);
    if (w->accept_resume == NULL || evtimer_pending(w->accept_resume, NULL))
        return;
    w->accept_pauses++;
    if (time(NULL) - w->accept_warned >= 10) {
        log_warnx("worker %d: accept: %s with %zu connections open (out of descriptors? see "
                  "ulimit -n): not accepting for %d ms at a time (%u times since the last "
                  "warning)",
                  w->id, evutil_socket_error_to_string(err), w->nconns, ACCEPT_PAUSE_MS,
                  w->accept_pauses);
        w->accept_warned = time(NULL);
        w->accept_pauses = 0;
    }
    for (i = 0; i < w->nlev; i++)
        if (w->lev[i] != NULL)
            evconnlistener_disable(w->lev[i]);
    set_tv(&tv, ACCEPT_PAUSE_MS);
    evtimer_add(w->accept_resume, &tv);
}

/* Accept what is already queued on a listener we are about to close. */
static void worker_drain_backlog(struct worker *w, struct evconnlistener *l)
{
    evutil_socket_t lfd = evconnlistener_get_fd(l);
    int n = 0, tries;

    for (tries = 0; tries < 4096; tries++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd == -1) {
            if (errno == EINTR)
                continue;
            break;
        }
        n++;
        worker_accept_cb(l, fd, (struct sockaddr *)&ss, (int)sl, w);
    }
    if (n > 0)
        log_info("worker %d: took %d queued connections before closing the listener", w->id, n);
}

/* ---- workers ---------------------------------------------------------- */

static void worker_log_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    accesslog_submit(w->logbuf);
    auditlog_submit(w->auditbuf);
}

/*
 * After a burst of connections (a flood of handshakes, a load test) the
 * allocator keeps what all of them freed: tens of KiB each, hundreds of MiB
 * after 10,000. Give it back to the system once the count has fallen to
 * half its peak. Once a second at most, and only after a real burst.
 */
#define TRIM_MIN_PEAK 1000

static void worker_trim_memory(struct worker *w)
{
    if (w->conns_peak >= TRIM_MIN_PEAK && w->nconns < w->conns_peak / 2) {
#ifdef __GLIBC__
        malloc_trim(0);
#endif
        w->conns_peak = w->nconns;
    }
}

/*
 * Long-lived connections are not grandfathered: once a second every
 * upgraded websocket is decided again (rules, directory, device record,
 * session revocation, CRL) and closed when the answer is no longer allow.
 * The same walk gives back the TLS buffers of connections idle since the
 * last one.
 */
static void worker_recheck_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct conn *c, *next;

    for (c = TAILQ_FIRST(&w->conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (!c->io_recent)
            conn_tls_trim(c); /* idle for a second at least */
        c->io_recent = 0;
        if (c->state != CST_TUNNEL || c->route == NULL)
            continue;
        if (c->gen != w->gen) {
            char why[160];
            if (tls_server_recheck(w->gen->tls, c->gen->tls, bufferevent_openssl_get_ssl(c->bev),
                                   why, sizeof(why)) == -1) {
                log_warnx("tls: websocket from %s (device %s) closed: %s", c->client,
                          c->peer.device_id, why);
                conn_free(c);
                continue;
            }
        }
        if (decide_tunnel_recheck(c) == -1)
            conn_free(c);
    }
    worker_trim_memory(w);
}

static void worker_grace_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    log_info("worker %d: shutdown grace period over, %zu connections cut", w->id, w->nconns);
    event_base_loopbreak(w->base);
}

static void worker_begin_stop(struct worker *w)
{
    struct conn *c, *next;
    struct timeval tv;
    size_t i;

    if (w->stopping)
        return;
    /* Connections the kernel completed but we have not accepted yet would
     * be reset by the close: take them first, they are requests on their
     * way (a load balancer already counts them as sent to us). */
    for (i = 0; i < w->nlev; i++)
        worker_drain_backlog(w, w->lev[i]);
    w->stopping = 1;
    for (i = 0; i < w->nlev; i++) {
        evconnlistener_free(w->lev[i]);
        w->lev[i] = NULL;
    }
    w->nlev = 0;
    /* Idle keep-alive connections that already carried a request close now
     * (between requests: a client retries a request on a reused connection
     * that closed without answering, RFC 9112 9.3.1). Busy ones close after
     * their response, which says "Connection: close". New connections
     * (header, handshake, first request) are served: their client has no
     * reason to retry; the first request must come within timeouts.header.
     * All within timeouts.shutdown_grace. */
    for (c = TAILQ_FIRST(&w->conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->state == CST_READ_HEAD && !c->head_started && c->nreq > 0)
            conn_free(c);
        else if (c->state == CST_READ_HEAD && !c->head_started)
            bev_timeouts(c->bev, c->gen->conf->timeout_header_ms, c->gen->conf->timeout_send_ms);
    }
    if (w->nconns == 0) {
        event_base_loopbreak(w->base);
        return;
    }
    set_tv(&tv, w->gen->conf->timeout_shutdown_grace_ms);
    w->grace = evtimer_new(w->base, worker_grace_cb, w);
    evtimer_add(w->grace, &tv);
}

struct worker_post {
    struct worker_post *next;
    void (*fn)(void *arg);
    void *arg;
};

/* Under w->mtx: make the worker's loop run worker_wake_cb() soon. */
static void worker_wake_locked(struct worker *w)
{
    uint64_t one = 1;

    if (w->woken)
        return;
    w->woken = 1;
    if (write(w->wake_fd, &one, sizeof(one)) != (ssize_t)sizeof(one))
        log_warnx("worker %d: cannot wake its loop: %s", w->id, strerror(errno));
}

int worker_post(struct event_base *base, void (*fn)(void *arg), void *arg)
{
    struct worker_post *p;
    int i;

    for (i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];

        if (w->base != base)
            continue;
        p = malloc(sizeof(*p));
        if (p == NULL)
            return -1;
        p->next = NULL;
        p->fn = fn;
        p->arg = arg;
        pthread_mutex_lock(&w->mtx);
        *w->posts_tail = p;
        w->posts_tail = &p->next;
        worker_wake_locked(w);
        pthread_mutex_unlock(&w->mtx);
        return 0;
    }
    return -1;
}

static void worker_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct proxy_gen *g;
    struct worker_post *posts;
    uint64_t n;
    int stop;

    (void)what;
    pthread_mutex_lock(&w->mtx);
    if (read(fd, &n, sizeof(n)) == -1 && errno != EAGAIN)
        log_warnx("worker %d: wake: %s", w->id, strerror(errno));
    w->woken = 0;
    g = w->pending;
    w->pending = NULL;
    stop = w->stop_requested;
    posts = w->posts;
    w->posts = NULL;
    w->posts_tail = &w->posts;
    pthread_mutex_unlock(&w->mtx);
    while (posts != NULL) {
        struct worker_post *p = posts;
        posts = p->next;
        p->fn(p->arg);
        free(p);
    }
    if (g != NULL) {
        proxy_gen_unref(w->gen);
        w->gen = g;
        metrics_thread_names_changed();
        log_debug("worker %d: new configuration in use", w->id);
    }
    if (stop)
        worker_begin_stop(w);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct timeval tv = {0, 100000}, one_s = {1, 0};
    struct conn *c;
    size_t i;

    metrics_thread_init(w->id);
    w->logtimer = event_new(w->base, -1, EV_PERSIST, worker_log_timer_cb, w);
    event_add(w->logtimer, &tv);
    w->rechecktimer = event_new(w->base, -1, EV_PERSIST, worker_recheck_cb, w);
    event_add(w->rechecktimer, &one_s);
    event_base_dispatch(w->base);

    while ((c = TAILQ_FIRST(&w->conns)) != NULL)
        conn_free(c);
    for (i = 0; i < w->npools; i++) {
        struct upconn *u;
        while ((u = TAILQ_FIRST(&w->pools[i]->idle)) != NULL)
            up_free(u);
        free(w->pools[i]->key);
        free(w->pools[i]);
    }
    free(w->pools);
    w->pools = NULL;
    w->npools = 0;
    /* bufferevents are finalised by deferred callbacks: run them. */
    event_base_loop(w->base, EVLOOP_NONBLOCK);
    accesslog_submit(w->logbuf);
    auditlog_submit(w->auditbuf);
    authz_thread_release();
    devtrust_thread_release();
    __atomic_sub_fetch(&workers_running, 1, __ATOMIC_RELEASE);
    return NULL;
}

static int listen_socket(const struct conf_listener *l)
{
    int fd, one = 1;

    fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1 ||
        bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) == -1 ||
        listen(fd, l->backlog) == -1) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int proxy_start(struct proxy_gen *g)
{
    const struct conf *cf = g->conf;
    int i;
    size_t j;

    nworkers = cf->workers;
    nlisten = cf->nlisteners;
    if (metrics_init(nworkers) == -1)
        log_warnx("metrics: out of memory, workers share one counter block");
    workers = calloc((size_t)nworkers, sizeof(*workers));
    if (workers == NULL)
        return -1;
    /* Bind everything first so that a bad address fails the start. */
    for (i = 0; i < nworkers; i++) {
        for (j = 0; j < nlisten; j++) {
            listen_fds[i][j] = listen_socket(&cf->listeners[j]);
            if (listen_fds[i][j] == -1) {
                log_warn("listen %s", cf->listeners[j].text);
                return -1;
            }
        }
    }
    for (j = 0; j < nlisten && j < MAX_LISTENERS; j++)
        listen_pp[j] = cf->listeners[j].proxy_protocol;
    for (i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        unsigned char rnd[8];

        w->id = i;
        w->base = worker_base_new();
        if (w->base == NULL)
            return -1;
        pthread_mutex_init(&w->mtx, NULL);
        TAILQ_INIT(&w->conns);
        w->gen = gen_ref(g);
        w->logbuf = evbuffer_new();
        w->auditbuf = evbuffer_new();
        if (RAND_bytes(rnd, sizeof(rnd)) != 1)
            return -1;
        for (j = 0; j < sizeof(rnd); j++)
            snprintf(w->idprefix + 2 * j, 3, "%02x", rnd[j]);
        w->posts_tail = &w->posts;
        w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->wake_fd == -1)
            return -1;
        w->wake_ev = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, worker_wake_cb, w);
        if (w->wake_ev == NULL || event_add(w->wake_ev, NULL) == -1)
            return -1;
        w->httpc = httpc_new(w->base);
        w->assertions = jwt_assertion_cache_new(5);
        if (w->httpc == NULL || w->assertions == NULL)
            return -1;
        for (j = 0; j < nlisten; j++) {
            w->lev[j] = evconnlistener_new(w->base, worker_accept_cb, w, LEV_OPT_CLOSE_ON_FREE, -1,
                                           listen_fds[i][j]);
            if (w->lev[j] == NULL)
                return -1;
            evconnlistener_set_error_cb(w->lev[j], worker_accept_error_cb);
        }
        w->nlev = nlisten;
        __atomic_add_fetch(&workers_running, 1, __ATOMIC_RELAXED);
        if (pthread_create(&w->thr, NULL, worker_main, w) != 0)
            return -1;
    }
    for (j = 0; j < nlisten; j++)
        log_info("listening on %s (%d workers)%s", cf->listeners[j].text, nworkers,
                 listen_pp[j] ? ", PROXY protocol v2 from trusted proxies only" : "");
    return 0;
}

void proxy_reload(struct proxy_gen *g)
{
    int i;
    size_t j;

    for (j = 0; j < nlisten; j++) {
        int pp = j < g->conf->nlisteners && g->conf->listeners[j].proxy_protocol;
        if (pp != listen_pp[j])
            log_warnx("listener %zu: turning proxy_protocol %s needs a restart; until then its "
                      "connections %s",
                      j, pp ? "on" : "off",
                      listen_pp[j] ? "must still send the header and are refused from "
                                     "everyone (no trusted_proxies)"
                                   : "are taken without a header");
    }

    for (i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        struct proxy_gen *old;

        pthread_mutex_lock(&w->mtx);
        old = w->pending;
        w->pending = gen_ref(g);
        worker_wake_locked(w);
        pthread_mutex_unlock(&w->mtx);
        proxy_gen_unref(old);
    }
}

void proxy_shutdown(void)
{
    int i;

    __atomic_store_n(&draining, 1, __ATOMIC_RELAXED);
    for (i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        pthread_mutex_lock(&w->mtx);
        w->stop_requested = 1;
        worker_wake_locked(w);
        pthread_mutex_unlock(&w->mtx);
    }
}

void proxy_mark_draining(void)
{
    __atomic_store_n(&draining, 1, __ATOMIC_RELAXED);
}

int proxy_draining(void)
{
    return __atomic_load_n(&draining, __ATOMIC_RELAXED);
}

int proxy_workers_running(void)
{
    return __atomic_load_n(&workers_running, __ATOMIC_ACQUIRE);
}

void proxy_join(void)
{
    int i;

    for (i = 0; i < nworkers; i++) {
        struct worker *w = &workers[i];
        pthread_join(w->thr, NULL);
        if (w->grace != NULL)
            event_free(w->grace);
        if (w->accept_resume != NULL)
            event_free(w->accept_resume);
        event_free(w->wake_ev);
        close(w->wake_fd);
        while (w->posts != NULL) { /* nobody left to answer: dropped */
            struct worker_post *p = w->posts;
            w->posts = p->next;
            free(p);
        }
        event_free(w->logtimer);
        event_free(w->rechecktimer);
        evbuffer_free(w->logbuf);
        evbuffer_free(w->auditbuf);
        httpc_free(w->httpc);
        jwt_assertion_cache_free(w->assertions);
        proxy_gen_unref(w->gen);
        proxy_gen_unref(w->pending);
        event_base_free(w->base);
        pthread_mutex_destroy(&w->mtx);
    }
    free(workers);
    workers = NULL;
    nworkers = 0;
}
