/*
 * httpc.h - asynchronous HTTP(S) client on an event loop (libcurl's multi
 * socket interface driven by libevent). Nothing blocks the loop: name
 * resolution uses libcurl's threaded resolver, sockets are watched by the
 * loop, and the callback runs on the loop's thread.
 *
 * Used for everything the proxy asks other services: the identity
 * provider's discovery, JWKS and token endpoints, feeds.
 */
#ifndef ZT_HTTPC_H
#define ZT_HTTPC_H

#include <stddef.h>

struct event_base;
struct httpc;     /* one per event loop; opaque */
struct httpc_req; /* one request in flight; opaque */

struct httpc_response {
    long status;       /* HTTP status, 0 when the exchange failed */
    const char *error; /* NULL, or why it failed (curl's message) */
    const char *body;  /* NUL-terminated; valid during the callback only */
    size_t body_len;
    const char *etag;          /* ETag response header or NULL */
    const char *last_modified; /* Last-Modified response header or NULL */
    const char *content_type;  /* or NULL */
};

/* Called exactly once per request unless it was cancelled. */
typedef void (*httpc_done_cb)(const struct httpc_response *resp, void *arg);

struct httpc_opts {
    const char *method; /* "GET" (default) or "POST" */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" list, or NULL */
    const char *body;           /* for POST; copied */
    size_t body_len;
    const char *basic_user; /* HTTP Basic credentials (client_secret_basic), or NULL */
    const char *basic_password;
    long timeout_ms;         /* whole exchange; default 10 s */
    long connect_timeout_ms; /* default 5 s */
    size_t max_body;         /* response bodies beyond it fail; default 1 MiB */
    const char *ca_file;     /* verify against this CA bundle instead of the system's */
    const char *client_cert; /* PEM client certificate and key, or NULL */
    const char *client_key;
};

/* NULL on failure. */
struct httpc *httpc_new(struct event_base *base);
/* Cancels everything in flight (no callbacks). */
void httpc_free(struct httpc *h);

/*
 * Start a request. Returns a handle (valid until the callback has run or
 * httpc_cancel() was called) or NULL if it could not even be started.
 */
struct httpc_req *httpc_start(struct httpc *h, const struct httpc_opts *o, httpc_done_cb cb,
                              void *arg);
/* Cancel a request in flight: its callback will not run. */
void httpc_cancel(struct httpc_req *r);

/* Percent-encode s for application/x-www-form-urlencoded or a query string
 * into a new string (free with free()). */
char *httpc_urlencode(const char *s);

#endif
