/*
 * httpc_test.c - the asynchronous client against a real HTTP server
 * (libevent's evhttp on loopback, in the same loop).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "httpc.h"

struct fixture {
    struct event_base *base;
    struct evhttp *http;
    int port;
    int done;
    long status;
    char body[256];
    char error[256];
    char etag[64];
};

static void serve(struct evhttp_request *req, void *arg)
{
    struct evbuffer *out = evbuffer_new();
    const char *uri = evhttp_request_get_uri(req);

    (void)arg;
    if (strcmp(uri, "/json") == 0) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "ETag", "\"v1\"");
        evbuffer_add_printf(out, "{\"ok\":true}");
        evhttp_send_reply(req, 200, "OK", out);
    } else if (strcmp(uri, "/echo") == 0) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        const char *auth =
            evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
        evbuffer_add_printf(out, "%s|", auth ? auth : "-");
        evbuffer_add_buffer(out, in);
        evhttp_send_reply(req, 200, "OK", out);
    } else if (strcmp(uri, "/big") == 0) {
        char chunk[1024];
        int i;
        memset(chunk, 'x', sizeof(chunk));
        for (i = 0; i < 100; i++)
            evbuffer_add(out, chunk, sizeof(chunk));
        evhttp_send_reply(req, 200, "OK", out);
    } else {
        evhttp_send_reply(req, 404, "Not Found", out);
    }
    evbuffer_free(out);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct evhttp_bound_socket *s;
    struct sockaddr_storage ss;
    ev_socklen_t len = sizeof(ss);

    f->base = event_base_new();
    f->http = evhttp_new(f->base);
    evhttp_set_gencb(f->http, serve, f);
    s = evhttp_bind_socket_with_handle(f->http, "127.0.0.1", 0);
    assert_non_null(s);
    getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&ss, &len);
    f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    evhttp_free(f->http);
    event_base_free(f->base);
    free(f);
    return 0;
}

static void done_cb(const struct httpc_response *r, void *arg)
{
    struct fixture *f = arg;

    f->done++;
    f->status = r->status;
    snprintf(f->body, sizeof(f->body), "%s", r->body ? r->body : "");
    snprintf(f->error, sizeof(f->error), "%s", r->error ? r->error : "");
    snprintf(f->etag, sizeof(f->etag), "%s", r->etag ? r->etag : "");
    event_base_loopbreak(f->base);
}

static void run(struct fixture *f)
{
    struct timeval tv = {10, 0};

    event_base_loopexit(f->base, &tv);
    event_base_dispatch(f->base);
}

static void test_get(void **state)
{
    struct fixture *f = *state;
    struct httpc *h = httpc_new(f->base);
    struct httpc_opts o = {0};
    char url[128];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/json", f->port);
    o.url = url;
    assert_non_null(httpc_start(h, &o, done_cb, f));
    run(f);
    assert_int_equal(f->done, 1);
    assert_int_equal(f->status, 200);
    assert_string_equal(f->body, "{\"ok\":true}");
    assert_string_equal(f->etag, "\"v1\"");
    httpc_free(h);
}

static void test_post_basic_auth(void **state)
{
    struct fixture *f = *state;
    struct httpc *h = httpc_new(f->base);
    struct httpc_opts o = {0};
    char url[128];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo", f->port);
    o.url = url;
    o.method = "POST";
    o.body = "a=1&b=2";
    o.body_len = 7;
    o.basic_user = "client";
    o.basic_password = "secret";
    assert_non_null(httpc_start(h, &o, done_cb, f));
    run(f);
    assert_int_equal(f->status, 200);
    /* base64("client:secret") */
    assert_string_equal(f->body, "Basic Y2xpZW50OnNlY3JldA==|a=1&b=2");
    httpc_free(h);
}

static void test_body_limit(void **state)
{
    struct fixture *f = *state;
    struct httpc *h = httpc_new(f->base);
    struct httpc_opts o = {0};
    char url[128];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/big", f->port);
    o.url = url;
    o.max_body = 10000;
    assert_non_null(httpc_start(h, &o, done_cb, f));
    run(f);
    assert_int_equal(f->status, 0);
    assert_string_equal(f->error, "response body too large");
    httpc_free(h);
}

static void test_refused(void **state)
{
    struct fixture *f = *state;
    struct httpc *h = httpc_new(f->base);
    struct httpc_opts o = {0};

    o.url = "http://127.0.0.1:1/";
    assert_non_null(httpc_start(h, &o, done_cb, f));
    run(f);
    assert_int_equal(f->done, 1);
    assert_int_equal(f->status, 0);
    assert_true(strlen(f->error) > 0);
    httpc_free(h);
}

static void test_cancel(void **state)
{
    struct fixture *f = *state;
    struct httpc *h = httpc_new(f->base);
    struct httpc_opts o = {0};
    struct timeval tv = {0, 300000};
    struct httpc_req *r;
    char url[128];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/json", f->port);
    o.url = url;
    r = httpc_start(h, &o, done_cb, f);
    assert_non_null(r);
    httpc_cancel(r);
    event_base_loopexit(f->base, &tv);
    event_base_dispatch(f->base);
    assert_int_equal(f->done, 0);
    /* and a request still in flight when the client is freed */
    assert_non_null(httpc_start(h, &o, done_cb, f));
    httpc_free(h);
    assert_int_equal(f->done, 0);
}

static void test_urlencode(void **state)
{
    char *s = httpc_urlencode("a b&c=d/é~");

    (void)state;
    assert_string_equal(s, "a%20b%26c%3Dd%2F%C3%A9~");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_basic_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test(test_urlencode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
