/*
 * httpc.c - libcurl multi-socket on libevent, in the shape of curl's
 * hiperfifo example: curl tells us which sockets to watch and when to
 * wake it; the loop tells curl when a socket is ready.
 */
#include <stdlib.h>
#include <sys/queue.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>

#include "httpc.h"
#include "log.h"

struct httpc_req;

struct httpc {
    struct event_base *base;
    TAILQ_HEAD(httpc_req_list, httpc_req) reqs;
    CURLM *multi;
    struct event *timer;
    int running;
};

struct httpc_sock {
    struct event *ev;
    struct httpc *h;
};

struct httpc_req {
    TAILQ_ENTRY(httpc_req) link;
    struct httpc *h;
    CURL *easy;
    struct curl_slist *headers;
    struct evbuffer *body;
    char *post;
    size_t max_body;
    int too_big;
    char *etag;
    char *last_modified;
    char errbuf[CURL_ERROR_SIZE];
    int linked;
    httpc_done_cb cb;
    void *arg;
};

static void httpc_check_done(struct httpc *h)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        struct httpc_req *r = NULL;
        struct httpc_response resp;
        char *ctype = NULL;

        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        memset(&resp, 0, sizeof(resp));
        if (msg->data.result != CURLE_OK || r->too_big) {
            resp.status = 0;
            resp.error = r->too_big     ? "response body too large"
                         : r->errbuf[0] ? r->errbuf
                                        : curl_easy_strerror(msg->data.result);
        } else {
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &resp.status);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_CONTENT_TYPE, &ctype);
        }
        evbuffer_add(r->body, "", 1); /* NUL-terminate */
        resp.body_len = evbuffer_get_length(r->body) - 1;
        resp.body = (const char *)evbuffer_pullup(r->body, -1);
        resp.etag = r->etag;
        resp.last_modified = r->last_modified;
        resp.content_type = ctype;
        curl_multi_remove_handle(h->multi, msg->easy_handle);
        if (r->cb != NULL)
            r->cb(&resp, r->arg);
        r->cb = NULL;
        httpc_cancel(r);
    }
}

static void httpc_event_cb(evutil_socket_t fd, short what, void *arg)
{
    struct httpc *h = arg;
    int flags = 0;

    if (what & EV_READ)
        flags |= CURL_CSELECT_IN;
    if (what & EV_WRITE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(h->multi, fd, flags, &h->running);
    httpc_check_done(h);
}

static void httpc_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct httpc *h = arg;

    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &h->running);
    httpc_check_done(h);
}

static int httpc_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct httpc *h = userp;
    struct httpc_sock *hs = socketp;
    short kind;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (hs != NULL) {
            event_free(hs->ev);
            free(hs);
            curl_multi_assign(h->multi, s, NULL);
        }
        return 0;
    }
    kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0) |
                   EV_PERSIST);
    if (hs == NULL) {
        hs = calloc(1, sizeof(*hs));
        if (hs == NULL)
            return -1;
        hs->h = h;
        curl_multi_assign(h->multi, s, hs);
    } else {
        event_free(hs->ev);
    }
    hs->ev = event_new(h->base, s, kind, httpc_event_cb, h);
    if (hs->ev == NULL)
        return -1;
    event_add(hs->ev, NULL);
    return 0;
}

static int httpc_timer_set_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct httpc *h = userp;
    struct timeval tv;

    (void)multi;
    if (timeout_ms < 0) {
        evtimer_del(h->timer);
        return 0;
    }
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    evtimer_add(h->timer, &tv);
    return 0;
}

struct httpc *httpc_new(struct event_base *base)
{
    static int global_done;
    struct httpc *h;

    if (!global_done) {
        /* Called from the main thread before workers start. */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return NULL;
        global_done = 1;
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->base = base;
    TAILQ_INIT(&h->reqs);
    h->multi = curl_multi_init();
    h->timer = evtimer_new(base, httpc_timer_cb, h);
    if (h->multi == NULL || h->timer == NULL) {
        httpc_free(h);
        return NULL;
    }
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, httpc_socket_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, httpc_timer_set_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
}

void httpc_free(struct httpc *h)
{
    if (h == NULL)
        return;
    if (h->multi != NULL) {
        struct httpc_req *r;
        while ((r = TAILQ_FIRST(&h->reqs)) != NULL) {
            r->cb = NULL;
            httpc_cancel(r);
        }
        curl_multi_cleanup(h->multi);
    }
    if (h->timer != NULL)
        event_free(h->timer);
    free(h);
}

static size_t httpc_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct httpc_req *r = userdata;
    size_t n = size * nmemb;

    if (evbuffer_get_length(r->body) + n > r->max_body) {
        r->too_big = 1;
        return 0; /* abort the transfer */
    }
    evbuffer_add(r->body, ptr, n);
    return n;
}

static char *header_value(const char *line, size_t n, const char *name)
{
    size_t nl = strlen(name), e;

    if (n <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return NULL;
    line += nl + 1;
    n -= nl + 1;
    while (n > 0 && (*line == ' ' || *line == '\t')) {
        line++;
        n--;
    }
    e = n;
    while (e > 0 && (line[e - 1] == '\r' || line[e - 1] == '\n' || line[e - 1] == ' '))
        e--;
    return strndup(line, e);
}

static size_t httpc_header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct httpc_req *r = userdata;
    size_t n = size * nitems;
    char *v;

    v = header_value(buf, n, "etag");
    if (v != NULL) {
        free(r->etag);
        r->etag = v;
    }
    v = header_value(buf, n, "last-modified");
    if (v != NULL) {
        free(r->last_modified);
        r->last_modified = v;
    }
    return n;
}

struct httpc_req *httpc_start(struct httpc *h, const struct httpc_opts *o, httpc_done_cb cb,
                              void *arg)
{
    struct httpc_req *r = calloc(1, sizeof(*r));
    const char *const *hp;

    if (r == NULL)
        return NULL;
    r->h = h;
    r->cb = cb;
    r->arg = arg;
    r->max_body = o->max_body ? o->max_body : 1024 * 1024;
    r->body = evbuffer_new();
    r->easy = curl_easy_init();
    if (r->body == NULL || r->easy == NULL)
        goto err;
    curl_easy_setopt(r->easy, CURLOPT_URL, o->url);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, httpc_write_cb);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, httpc_header_cb);
    curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(r->easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, o->timeout_ms ? o->timeout_ms : 10000L);
    curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS,
                     o->connect_timeout_ms ? o->connect_timeout_ms : 5000L);
    curl_easy_setopt(r->easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(r->easy, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(r->easy, CURLOPT_USERAGENT, "ztproxy");
    if (o->ca_file != NULL)
        curl_easy_setopt(r->easy, CURLOPT_CAINFO, o->ca_file);
    if (o->client_cert != NULL) {
        curl_easy_setopt(r->easy, CURLOPT_SSLCERT, o->client_cert);
        curl_easy_setopt(r->easy, CURLOPT_SSLKEY, o->client_key);
    }
    if (o->basic_user != NULL) {
        curl_easy_setopt(r->easy, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(r->easy, CURLOPT_USERNAME, o->basic_user);
        curl_easy_setopt(r->easy, CURLOPT_PASSWORD, o->basic_password ? o->basic_password : "");
    }
    for (hp = o->headers; hp != NULL && *hp != NULL; hp++) {
        struct curl_slist *n = curl_slist_append(r->headers, *hp);
        if (n == NULL)
            goto err;
        r->headers = n;
    }
    if (r->headers != NULL)
        curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
    if (o->method != NULL && strcmp(o->method, "POST") == 0) {
        r->post = malloc(o->body_len + 1);
        if (r->post == NULL)
            goto err;
        if (o->body_len > 0)
            memcpy(r->post, o->body, o->body_len);
        r->post[o->body_len] = '\0';
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long)o->body_len);
        curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->post);
    }
    TAILQ_INSERT_TAIL(&h->reqs, r, link);
    r->linked = 1;
    if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK)
        goto err;
    return r;
err:
    r->cb = NULL;
    httpc_cancel(r);
    return NULL;
}

void httpc_cancel(struct httpc_req *r)
{
    if (r == NULL)
        return;
    if (r->linked)
        TAILQ_REMOVE(&r->h->reqs, r, link);
    if (r->easy != NULL) {
        curl_multi_remove_handle(r->h->multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    curl_slist_free_all(r->headers);
    if (r->body != NULL)
        evbuffer_free(r->body);
    if (r->post != NULL) {
        /* Form posts carry authorization codes and verifiers. */
        OPENSSL_cleanse(r->post, strlen(r->post));
        free(r->post);
    }
    free(r->etag);
    free(r->last_modified);
    free(r);
}

char *httpc_urlencode(const char *s)
{
    static const char hx[] = "0123456789ABCDEF";
    size_t n = strlen(s), i, o = 0;
    char *out = malloc(3 * n + 1);

    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hx[c >> 4];
            out[o++] = hx[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}
