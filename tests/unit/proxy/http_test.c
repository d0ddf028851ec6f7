/*
 * http_test.c - http_request_parse, http_response_parse, http_token_eq,
 * http_list_has_token (public API only).
 *
 * Table-driven: every valid case is also fed as each of its prefixes (which
 * must be INCOMPLETE) and every invalid case must fail on the whole buffer
 * and never succeed on a prefix. Limits are tested on both sides.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http.h"

static const struct http_limits def_limits = {8192, 32768, 100};

static struct http_header hdrs[HTTP_MAX_HEADERS];

static enum http_parse_status req_parse(const char *raw, size_t len, const struct http_limits *lim,
                                        struct http_request *req)
{
    return http_request_parse(raw, len, lim, hdrs, HTTP_MAX_HEADERS, req);
}

static int slice_eq(const char *s, size_t len, const char *want)
{
    if (want == NULL)
        return s == NULL;
    return s != NULL && strlen(want) == len && memcmp(s, want, len) == 0;
}

/* ---- valid requests ---------------------------------------------------- */

struct req_ok {
    const char *raw;
    const char *method;
    const char *path;
    const char *query; /* NULL: none */
    const char *host;  /* NULL: none */
    int minor;
    enum http_body_kind body;
    uint64_t cl;
    int keep_alive;
    int websocket;
    int expect;
    size_t nheaders;
};

static const struct req_ok req_ok_cases[] = {
    {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/", NULL, "a", 1, HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com:8443\r\n\r\n", "GET", "/a/b", "x=1&y",
     "example.com", 1, HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET /? HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/", "", "a", 1, HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET /a?b?c HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/a", "b?c", "a", 1, HTTP_BODY_NONE, 0, 1, 0,
     0, 1},
    {"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n", "POST", "/up", NULL, "a", 1,
     HTTP_BODY_LENGTH, 42, 1, 0, 0, 2},
    {"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "POST", "/up", NULL, "a", 1,
     HTTP_BODY_LENGTH, 0, 1, 0, 0, 2},
    {"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n", "POST", "/up", NULL, "a", 1,
     HTTP_BODY_LENGTH, 7, 1, 0, 0, 2},
    {"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n", "POST", "/up",
     NULL, "a", 1, HTTP_BODY_LENGTH, UINT64_C(9223372036854775807), 1, 0, 0, 2},
    {"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "POST", "/up", NULL, "a",
     1, HTTP_BODY_CHUNKED, 0, 1, 0, 0, 2},
    {"POST /up HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  ChUnKeD \t\r\n\r\n", "POST", "/up", NULL,
     "a", 1, HTTP_BODY_CHUNKED, 0, 1, 0, 0, 2},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "GET", "/", NULL, "a", 1,
     HTTP_BODY_NONE, 0, 0, 0, 0, 2},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n", "GET", "/", NULL, "a", 1,
     HTTP_BODY_NONE, 0, 0, 0, 0, 2},
    {"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", "GET", "/", NULL, "a", 1,
     HTTP_BODY_NONE, 0, 1, 0, 0, 2},
    {"GET / HTTP/1.0\r\n\r\n", "GET", "/", NULL, NULL, 0, HTTP_BODY_NONE, 0, 0, 0, 0, 0},
    {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", "GET", "/", NULL, NULL, 0, HTTP_BODY_NONE,
     0, 1, 0, 0, 1},
    {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", "GET", "/", NULL, NULL, 0,
     HTTP_BODY_NONE, 0, 0, 0, 0, 1},
    {"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: "
     "WebSocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
     "GET", "/chat", NULL, "a", 1, HTTP_BODY_NONE, 0, 1, 1, 0, 4},
    {"POST /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "POST",
     "/chat", NULL, "a", 1, HTTP_BODY_NONE, 0, 1, 0, 0, 3},
    {"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", "GET", "/chat", NULL, "a", 1,
     HTTP_BODY_NONE, 0, 1, 0, 0, 2},
    {"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n", "GET", "/chat",
     NULL, "a", 1, HTTP_BODY_NONE, 0, 1, 0, 0, 3},
    {"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n", "PUT", "/f",
     NULL, "a", 1, HTTP_BODY_LENGTH, 5, 1, 0, 1, 3},
    {"PUT /f HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", "PUT", "/f", NULL,
     NULL, 0, HTTP_BODY_LENGTH, 5, 0, 0, 0, 2},
    {"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD", "/x", NULL, "a", 1, HTTP_BODY_NONE, 0, 1, 0, 0,
     1},
    {"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "OPTIONS", "*", NULL, "a", 1, HTTP_BODY_NONE, 0, 1, 0,
     0, 1},
    {"GET http://Example.COM/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n", "GET", "/p", "q",
     "Example.COM", 1, HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET HTTPS://example.com:443 HTTP/1.1\r\nHost: EXAMPLE.com:8443\r\n\r\n", "GET", "/", NULL,
     "example.com", 1, HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET http://example.com?q HTTP/1.1\r\nHost: example.com\r\n\r\n", "GET", "/", "q",
     "example.com", 1, HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET http://example.com/ HTTP/1.0\r\n\r\n", "GET", "/", NULL, "example.com", 0, HTTP_BODY_NONE,
     0, 0, 0, 0, 0},
    {"GET http://[::1]:8080/x HTTP/1.1\r\nHost: [::1]\r\n\r\n", "GET", "/x", NULL, "[::1]", 1,
     HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", "CONNECT", NULL, NULL,
     "example.com", 1, HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET / HTTP/1.1\r\nHost: 127.0.0.1:65535\r\n\r\n", "GET", "/", NULL, "127.0.0.1", 1,
     HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET / HTTP/1.1\r\nHost: [2001:db8::1]:1\r\n\r\n", "GET", "/", NULL, "[2001:db8::1]", 1,
     HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET / HTTP/1.1\r\nHost: my_host-1.example\r\n\r\n", "GET", "/", NULL, "my_host-1.example", 1,
     HTTP_BODY_NONE, 0, 1, 0, 0, 1},
    {"GET / HTTP/1.1\r\nHost:a\r\nX-Empty:\r\nX-Sp: \t \r\nX-Obs: caf\xc3\xa9\r\n\r\n", "GET", "/",
     NULL, "a", 1, HTTP_BODY_NONE, 0, 1, 0, 0, 4},
    {"M-SEARCH /~u!$&'()*+,;=:@%20 HTTP/1.1\r\nHost: a\r\n\r\n", "M-SEARCH", "/~u!$&'()*+,;=:@%20",
     NULL, "a", 1, HTTP_BODY_NONE, 0, 1, 0, 0, 1},
};

static void check_req_ok(const struct req_ok *t)
{
    struct http_limits lim = def_limits;
    struct http_request req;
    size_t len = strlen(t->raw), k;
    enum http_parse_status st;

    st = req_parse(t->raw, len, &lim, &req);
    if (st != HTTP_PARSE_OK)
        fail_msg("%s: status %d error %s", t->raw, st, req.error ? req.error : "-");
    assert_true(slice_eq(req.method, req.method_len, t->method));
    assert_true(slice_eq(req.path, req.path_len, t->path));
    assert_true(slice_eq(req.query, req.query_len, t->query));
    assert_true(slice_eq(req.host, req.host_len, t->host));
    assert_int_equal(req.minor_version, t->minor);
    assert_int_equal(req.body, t->body);
    if (t->body == HTTP_BODY_LENGTH)
        assert_true(req.content_length == t->cl);
    assert_int_equal(req.keep_alive, t->keep_alive);
    assert_int_equal(req.upgrade_websocket, t->websocket);
    assert_int_equal(req.expect_continue, t->expect);
    assert_int_equal(req.nheaders, t->nheaders);
    assert_int_equal(req.head_len, len);
    assert_ptr_equal(req.headers, hdrs);
    assert_int_equal(req.is_head, strcmp(t->method, "HEAD") == 0);
    assert_int_equal(req.is_connect, strcmp(t->method, "CONNECT") == 0);
    assert_true(req.target > t->raw && req.target + req.target_len < t->raw + len);

    /* Every prefix is incomplete; a trailing body or next request is ignored. */
    for (k = 0; k < len; k++) {
        st = req_parse(t->raw, k, &lim, &req);
        if (st != HTTP_PARSE_INCOMPLETE)
            fail_msg("%s: prefix %zu gave %d (%s)", t->raw, k, st, req.error ? req.error : "-");
    }
}

static void test_request_ok(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(req_ok_cases) / sizeof(req_ok_cases[0]); i++)
        check_req_ok(&req_ok_cases[i]);
}

static void test_request_headers_slices(void **state)
{
    static const char raw[] = "GET / HTTP/1.1\r\nHost:  a.b \r\nX-A:\t v1 v2\t\r\nX-B:\r\n\r\n";
    struct http_limits lim = def_limits;
    struct http_request req;

    (void)state;
    assert_int_equal(req_parse(raw, sizeof(raw) - 1, &lim, &req), HTTP_PARSE_OK);
    assert_int_equal(req.nheaders, 3);
    assert_true(slice_eq(req.headers[0].name, req.headers[0].name_len, "Host"));
    assert_true(slice_eq(req.headers[0].value, req.headers[0].value_len, "a.b"));
    assert_true(slice_eq(req.headers[1].name, req.headers[1].name_len, "X-A"));
    assert_true(slice_eq(req.headers[1].value, req.headers[1].value_len, "v1 v2"));
    assert_true(slice_eq(req.headers[2].name, req.headers[2].name_len, "X-B"));
    assert_int_equal(req.headers[2].value_len, 0);
    assert_true(slice_eq(req.target, req.target_len, "/"));
}

static void test_request_pipelined(void **state)
{
    static const char raw[] = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                              "GET /b HTTP/1.1\r\nHost: b\r\n\r\n";
    struct http_limits lim = def_limits;
    struct http_request req;
    size_t off;

    (void)state;
    assert_int_equal(req_parse(raw, sizeof(raw) - 1, &lim, &req), HTTP_PARSE_OK);
    assert_int_equal(req.body, HTTP_BODY_LENGTH);
    assert_int_equal(req.content_length, 3);
    off = req.head_len + 3;
    assert_int_equal(req_parse(raw + off, sizeof(raw) - 1 - off, &lim, &req), HTTP_PARSE_OK);
    assert_true(slice_eq(req.path, req.path_len, "/b"));
    assert_true(slice_eq(req.host, req.host_len, "b"));
    assert_int_equal(req.head_len, sizeof(raw) - 1 - off);
}

/* ---- invalid requests -------------------------------------------------- */

struct req_bad {
    const char *raw;
    size_t len; /* 0: strlen(raw) */
    int status;
    const char *error; /* NULL: not checked */
};

static const struct req_bad req_bad_cases[] = {
    /* request line */
    {"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "empty line before request line"},
    {" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid method"},
    {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid method"},
    {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "empty request-target"},
    {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 0, 400, "invalid HTTP version"},
    {"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid HTTP version"},
    {"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid method"},
    {"GET /\tHTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid character in request-target"},
    {"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid character in request-target"},
    {"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid character in request-target"},
    {"GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n", sizeof("GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n") - 1,
     400, "invalid character in request-target"},
    {"GET /a#f HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "fragment in request-target"},
    {"GET / http/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid HTTP version"},
    {"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 0, 400, "invalid HTTP version"},
    {"GET / HTTP/11\r\nHost: a\r\n\r\n", 0, 400, "invalid HTTP version"},
    {"GET / HTTP/1.12\r\nHost: a\r\n\r\n", 0, 400, "invalid HTTP version"},
    {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 0, 505, "unsupported HTTP version"},
    {"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 0, 505, "unsupported HTTP version"},
    {"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 0, 505, "unsupported HTTP version"},
    {"GET /\r\n\r\n", 0, 400, "invalid character in request-target"},
    {"GET / HTTP/1.1\nHost: a\r\n\r\n", 0, 400, "bare LF in request line"},
    {"GET / HTTP/1.1\rHost: a\r\n\r\n", 0, 400, "bare CR in request line"},
    {"GET\n", 0, 400, "bare LF in request line"},
    /* request-target forms */
    {"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "asterisk-form target without OPTIONS"},
    {"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid request-target"},
    {"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid request-target"},
    {"GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid request-target"},
    {"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid authority in request-target"},
    {"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "userinfo in request-target"},
    {"GET http://a:99999/ HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400,
     "invalid authority in request-target"},
    {"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", 0, 400,
     "absolute-form target names another host"},
    {"GET http://a.example/ HTTP/1.1\r\nHost: a.example.evil\r\n\r\n", 0, 400,
     "absolute-form target names another host"},
    {"GET http://a.example/ HTTP/1.0\r\nHost: b\r\n\r\n", 0, 400,
     "absolute-form target names another host"},
    {"GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "invalid request-target"},
    {"CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "CONNECT target is not host:port"},
    {"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 400, "CONNECT target is not host:port"},
    /* header syntax */
    {"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 0, 400, "bare LF in header"},
    {"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 0, 400, "bare CR in header"},
    {"GET / HTTP/1.1\r\nHost: a\r\n\n", 0, 400, "bare LF in header"},
    {"GET / HTTP/1.1\r\nHost: a\r\n\rX", 0, 400, "bare CR in header"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", 0, 400, "obs-fold header line"},
    {"GET / HTTP/1.1\r\n\tHost: a\r\n\r\n", 0, 400, "obs-fold header line"},
    {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 0, 400, "whitespace before colon in header"},
    {"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 0, 400, "whitespace before colon in header"},
    {"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 0, 400, "header line without colon"},
    {"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 0, 400, "empty header name"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX(Y: v\r\n\r\n", 0, 400, "invalid character in header name"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX\xc3: v\r\n\r\n", 0, 400, "invalid character in header name"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 0, 400, "control character in header value"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", 0, 400, "control character in header value"},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
     sizeof("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n") - 1, 400,
     "control character in header value"},
    /* Host */
    {"GET / HTTP/1.1\r\n\r\n", 0, 400, "missing Host"},
    {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 0, 400, "duplicate Host"},
    {"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 0, 400, "duplicate Host"},
    {"GET / HTTP/1.1\r\nHost:\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: a:\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", 0, 400, "invalid Host"},
    {"GET / HTTP/1.1\r\nHost: []\r\n\r\n", 0, 400, "invalid Host"},
    /* Content-Length / Transfer-Encoding */
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 0, 400,
     "duplicate Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", 0, 400, "Content-Length list"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", 0, 400, "invalid Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 0, 400, "invalid Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 0, 400, "invalid Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 0, 400,
     "invalid Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 0, 400, "empty Content-Length"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", 0, 400,
     "Content-Length too large"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 0, 400,
     "Content-Length too large"},
    {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 0,
     400, "Content-Length with Transfer-Encoding"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 0,
     400, "Content-Length with Transfer-Encoding"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
     "chunked\r\n\r\n",
     0, 400, "duplicate Transfer-Encoding"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, 501,
     "unsupported transfer coding"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 0, 501,
     "unsupported transfer coding"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 0, 501,
     "unsupported transfer coding"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 0, 501,
     "unsupported transfer coding"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 0, 501,
     "unsupported transfer coding"},
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 400,
     "Transfer-Encoding in HTTP/1.0"},
    {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 0, 400,
     "whitespace before colon in header"},
    /* Expect */
    {"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\n\r\n", 0, 417,
     "unsupported expectation"},
    {"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 0, 417, "unsupported expectation"},
};

static void test_request_bad(void **state)
{
    struct http_limits lim = def_limits;
    struct http_request req;
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof(req_bad_cases) / sizeof(req_bad_cases[0]); i++) {
        const struct req_bad *t = &req_bad_cases[i];
        size_t len = t->len ? t->len : strlen(t->raw);
        enum http_parse_status st = req_parse(t->raw, len, &lim, &req);

        if (st != HTTP_PARSE_ERROR || req.error_status != t->status ||
            (t->error != NULL && (req.error == NULL || strcmp(req.error, t->error) != 0)))
            fail_msg("case %zu (%s): status %d, %d %s; want %d %s", i, t->raw, st, req.error_status,
                     req.error ? req.error : "-", t->status, t->error);
        for (k = 0; k < len; k++) {
            st = req_parse(t->raw, k, &lim, &req);
            if (st == HTTP_PARSE_OK)
                fail_msg("case %zu: prefix %zu parsed OK", i, k);
            if (st == HTTP_PARSE_ERROR && req.error_status != t->status)
                fail_msg("case %zu: prefix %zu gave %d", i, k, req.error_status);
        }
    }
}

/* Errors are reported before the head is complete. */
static void test_request_early_errors(void **state)
{
    static const char *const cases[] = {
        "GET /\x01",
        "GET / HTTP/1.1\n",
        "GET / HTTP/1.1\r\nX: \x01",
        "GET / HTTP/1.1\r\nHost: a\r\n x",
        "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n",
        "GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n",
        "GET / HTTP/3",
        "GET / HTTX",
        "GET /#",
        "GET ftp://a/ HTTP/1.1\r\n",
        "GET * HTTP/1.1\r\n",
        "GET http://u@a/ HTTP/1.1\r\n",
        "CONNECT a HTTP/1.1\r\n",
    };
    struct http_limits lim = def_limits;
    struct http_request req;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (req_parse(cases[i], strlen(cases[i]), &lim, &req) != HTTP_PARSE_ERROR)
            fail_msg("case %zu not rejected early", i);
    }
}

/* ---- limits ------------------------------------------------------------ */

/* "GET /aaa...a HTTP/1.1\r\n" of exactly n bytes (n >= 16). */
static size_t make_request_line(char *buf, size_t n)
{
    size_t path = n - 15;

    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'a', path - 1);
    memcpy(buf + 4 + path, " HTTP/1.1\r\n", 11);
    return n;
}

static void test_limit_request_line(void **state)
{
    struct http_limits lim = {64, 4096, 10};
    struct http_request req;
    char buf[256];
    size_t n;

    (void)state;
    /* Exactly max_request_line: OK. */
    n = make_request_line(buf, 64);
    memcpy(buf + n, "Host: a\r\n\r\n", 11);
    assert_int_equal(req_parse(buf, n + 11, &lim, &req), HTTP_PARSE_OK);
    assert_int_equal(req.path_len, 64 - 15);

    /* One byte over: 414. */
    n = make_request_line(buf, 65);
    memcpy(buf + n, "Host: a\r\n\r\n", 11);
    assert_int_equal(req_parse(buf, n + 11, &lim, &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 414);
    assert_string_equal(req.error, "request line too long");

    /* Without CRLF yet: 62 non-CR bytes still fit, the 63rd cannot. */
    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "GET /", 5);
    assert_int_equal(req_parse(buf, 62, &lim, &req), HTTP_PARSE_INCOMPLETE);
    assert_int_equal(req_parse(buf, 63, &lim, &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 414);

    /* A CR at the last allowed offset is fine, then waits for LF. */
    n = make_request_line(buf, 64);
    assert_int_equal(req_parse(buf, 63, &lim, &req), HTTP_PARSE_INCOMPLETE);
    assert_int_equal(req_parse(buf, 64, &lim, &req), HTTP_PARSE_INCOMPLETE);

    /* A long method is also caught early. */
    memset(buf, 'G', 100);
    assert_int_equal(req_parse(buf, 100, &lim, &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 414);
}

/* Build "GET / HTTP/1.1\r\nHost: a\r\n" + (count-1) x "X-N: v\r\n" + "\r\n". */
static size_t make_fields(char *buf, size_t count)
{
    size_t n = 0, i;

    memcpy(buf, "GET / HTTP/1.1\r\nHost: a\r\n", 25);
    n = 25;
    for (i = 1; i < count; i++) {
        memcpy(buf + n, "X-N: v\r\n", 8);
        n += 8;
    }
    memcpy(buf + n, "\r\n", 2);
    return n + 2;
}

static void test_limit_header_count(void **state)
{
    static char buf[8192];
    struct http_limits lim = {8192, 65536, 20};
    struct http_request req;
    size_t n;

    (void)state;
    n = make_fields(buf, 20);
    assert_int_equal(req_parse(buf, n, &lim, &req), HTTP_PARSE_OK);
    assert_int_equal(req.nheaders, 20);

    n = make_fields(buf, 21);
    assert_int_equal(req_parse(buf, n, &lim, &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 431);
    assert_string_equal(req.error, "too many header fields");
    /* Detected on the first byte of the 21st field. */
    assert_int_equal(req_parse(buf, 25 + 19 * 8 + 1, &lim, &req), HTTP_PARSE_ERROR);
    assert_int_equal(req_parse(buf, 25 + 19 * 8, &lim, &req), HTTP_PARSE_INCOMPLETE);

    /* cap smaller than max_headers bounds the count too. */
    n = make_fields(buf, 5);
    assert_int_equal(http_request_parse(buf, n, &lim, hdrs, 5, &req), HTTP_PARSE_OK);
    assert_int_equal(http_request_parse(buf, n, &lim, hdrs, 4, &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 431);

    /* Never more than HTTP_MAX_HEADERS. */
    lim.max_headers = HTTP_MAX_HEADERS + 10;
    n = make_fields(buf, HTTP_MAX_HEADERS);
    assert_int_equal(req_parse(buf, n, &lim, &req), HTTP_PARSE_OK);
    n = make_fields(buf, HTTP_MAX_HEADERS + 1);
    assert_int_equal(req_parse(buf, n, &lim, &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 431);
}

static void test_limit_head(void **state)
{
    static char buf[1024];
    struct http_limits lim = {8192, 0, 100};
    struct http_request req;
    size_t n;

    (void)state;
    n = make_fields(buf, 10); /* 25 + 9 * 8 + 2 = 99 */
    assert_int_equal(n, 99);
    memcpy(buf + n, "BODY", 4);

    lim.max_head = 99; /* exactly: OK, even with more bytes after the head */
    assert_int_equal(req_parse(buf, n, &lim, &req), HTTP_PARSE_OK);
    assert_int_equal(req_parse(buf, n + 4, &lim, &req), HTTP_PARSE_OK);
    assert_int_equal(req.head_len, 99);

    lim.max_head = 98; /* one byte short: 431 */
    assert_int_equal(req_parse(buf, n, &lim, &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 431);
    assert_string_equal(req.error, "header section too large");

    /* Incomplete head: 431 as soon as len reaches max_head, not before. */
    assert_int_equal(req_parse(buf, 97, &lim, &req), HTTP_PARSE_INCOMPLETE);
    assert_int_equal(req_parse(buf, 98, &lim, &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 431);

    /* max_head smaller than the request line. */
    lim.max_head = 10;
    assert_int_equal(req_parse(buf, 9, &lim, &req), HTTP_PARSE_INCOMPLETE);
    assert_int_equal(req_parse(buf, 10, &lim, &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 431);
}

/* ---- responses --------------------------------------------------------- */

struct resp_ok {
    const char *raw;
    int was_head;
    int status;
    const char *reason;
    int minor;
    enum http_body_kind body;
    uint64_t cl;
    int keep_alive;
    int websocket;
};

static const struct resp_ok resp_ok_cases[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 0, 200, "OK", 1, HTTP_BODY_LENGTH, 5, 1, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 1, 200, "OK", 1, HTTP_BODY_NONE, 0, 1, 0},
    {"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 0, 200, "", 1, HTTP_BODY_LENGTH, 0, 1, 0},
    {"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", 0, 200, "", 1, HTTP_BODY_LENGTH, 0, 1, 0},
    {"HTTP/1.1 404 Not \tFound\xff\r\nContent-Length: 0\r\n\r\n", 0, 404, "Not \tFound\xff", 1,
     HTTP_BODY_LENGTH, 0, 1, 0},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n", 0, 200, "OK", 1, HTTP_BODY_CHUNKED, 0,
     1, 0},
    {"HTTP/1.1 200 OK\r\n\r\n", 0, 200, "OK", 1, HTTP_BODY_CLOSE, 0, 0, 0},
    {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", 0, 200, "OK", 1,
     HTTP_BODY_LENGTH, 1, 0, 0},
    {"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", 0, 200, "OK", 0, HTTP_BODY_LENGTH, 1, 0, 0},
    {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", 0, 200, "OK", 0,
     HTTP_BODY_LENGTH, 1, 1, 0},
    {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n", 0, 200, "OK", 0, HTTP_BODY_CLOSE, 0, 0,
     0},
    {"HTTP/1.1 204 No Content\r\n\r\n", 0, 204, "No Content", 1, HTTP_BODY_NONE, 0, 1, 0},
    {"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 0, 304, "Not Modified", 1,
     HTTP_BODY_NONE, 0, 1, 0},
    {"HTTP/1.1 100 Continue\r\n\r\n", 0, 100, "Continue", 1, HTTP_BODY_NONE, 0, 1, 0},
    {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 0,
     101, "Switching Protocols", 1, HTTP_BODY_NONE, 0, 1, 1},
    {"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n", 0, 200, "OK", 1,
     HTTP_BODY_LENGTH, 0, 1, 0},
    {"HTTP/1.1 599 X\r\nContent-Length: 0\r\n\r\n", 0, 599, "X", 1, HTTP_BODY_LENGTH, 0, 1, 0},
};

static void test_response_ok(void **state)
{
    struct http_response resp;
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof(resp_ok_cases) / sizeof(resp_ok_cases[0]); i++) {
        const struct resp_ok *t = &resp_ok_cases[i];
        size_t len = strlen(t->raw);
        enum http_parse_status st;

        st = http_response_parse(t->raw, len, 65536, t->was_head, hdrs, HTTP_MAX_HEADERS, &resp);
        if (st != HTTP_PARSE_OK)
            fail_msg("resp %zu: %d %s", i, st, resp.error ? resp.error : "-");
        assert_int_equal(resp.status, t->status);
        assert_true(slice_eq(resp.reason, resp.reason_len, t->reason));
        assert_int_equal(resp.minor_version, t->minor);
        assert_int_equal(resp.body, t->body);
        if (t->body == HTTP_BODY_LENGTH)
            assert_true(resp.content_length == t->cl);
        assert_int_equal(resp.keep_alive, t->keep_alive);
        assert_int_equal(resp.upgrade_websocket, t->websocket);
        assert_int_equal(resp.head_len, len);
        for (k = 0; k < len; k++) {
            st = http_response_parse(t->raw, k, 65536, t->was_head, hdrs, HTTP_MAX_HEADERS, &resp);
            if (st != HTTP_PARSE_INCOMPLETE)
                fail_msg("resp %zu: prefix %zu gave %d", i, k, st);
        }
    }
}

static const struct req_bad resp_bad_cases[] = {
    {"HTTP/1.1 20 OK\r\n\r\n", 0, 0, "invalid status code"},
    {"HTTP/1.1 2000 OK\r\n\r\n", 0, 0, "invalid status line"},
    {"HTTP/1.1 099 X\r\n\r\n", 0, 0, "invalid status code"},
    {"HTTP/1.1 600 X\r\n\r\n", 0, 0, "invalid status code"},
    {"HTTP/1.1 2x0 OK\r\n\r\n", 0, 0, "invalid status code"},
    {"HTTP/2.0 200 OK\r\n\r\n", 0, 0, "unsupported HTTP version"},
    {"HTTP/1.1  200 OK\r\n\r\n", 0, 0, "invalid status code"},
    {"HTTP/1.1\t200 OK\r\n\r\n", 0, 0, "invalid status line"},
    {"http/1.1 200 OK\r\n\r\n", 0, 0, "invalid HTTP version"},
    {"HTTP/1.1 200 OK\n\r\n", 0, 0, "bare LF in status line"},
    {"HTTP/1.1 200 OK\rX\r\n\r\n", 0, 0, "bare CR in status line"},
    {"HTTP/1.1 200 O\x01K\r\n\r\n", 0, 0, "control character in reason phrase"},
    {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 0, 0,
     "duplicate Content-Length"},
    {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0,
     "Content-Length with Transfer-Encoding"},
    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, 0, "unsupported transfer coding"},
    {"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0,
     "Transfer-Encoding in HTTP/1.0"},
    {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, 0, "invalid Content-Length"},
    {"HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n", 0, 0, "obs-fold header line"},
    {"HTTP/1.1 200 OK\r\nX: y\nZ: 1\r\n\r\n", 0, 0, "bare LF in header"},
    {"HTTP/1.1 200 OK\r\nX : y\r\n\r\n", 0, 0, "whitespace before colon in header"},
    /* Framing headers are validated even when no body follows. */
    {"HTTP/1.1 204 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 0, 0,
     "duplicate Content-Length"},
};

static void test_response_bad(void **state)
{
    struct http_response resp;
    size_t i, k;

    (void)state;
    for (i = 0; i < sizeof(resp_bad_cases) / sizeof(resp_bad_cases[0]); i++) {
        const struct req_bad *t = &resp_bad_cases[i];
        size_t len = strlen(t->raw);
        enum http_parse_status st;

        st = http_response_parse(t->raw, len, 65536, 0, hdrs, HTTP_MAX_HEADERS, &resp);
        if (st != HTTP_PARSE_ERROR || resp.error == NULL || strcmp(resp.error, t->error) != 0)
            fail_msg("resp bad %zu: %d %s; want %s", i, st, resp.error ? resp.error : "-",
                     t->error);
        for (k = 0; k < len; k++) {
            st = http_response_parse(t->raw, k, 65536, 0, hdrs, HTTP_MAX_HEADERS, &resp);
            assert_int_not_equal(st, HTTP_PARSE_OK);
        }
    }
}

static void test_response_limits(void **state)
{
    static const char raw[] = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n";
    size_t len = sizeof(raw) - 1;
    struct http_response resp;

    (void)state;
    assert_int_equal(http_response_parse(raw, len, len, 0, hdrs, 2, &resp), HTTP_PARSE_OK);
    assert_int_equal(resp.nheaders, 2);
    assert_int_equal(http_response_parse(raw, len, len - 1, 0, hdrs, 2, &resp), HTTP_PARSE_ERROR);
    assert_string_equal(resp.error, "header section too large");
    assert_int_equal(http_response_parse(raw, len - 2, len - 1, 0, hdrs, 2, &resp),
                     HTTP_PARSE_INCOMPLETE);
    assert_int_equal(http_response_parse(raw, len, len, 0, hdrs, 1, &resp), HTTP_PARSE_ERROR);
    assert_string_equal(resp.error, "too many header fields");
}

/* ---- token helpers ----------------------------------------------------- */

static void test_token_eq(void **state)
{
    (void)state;
    assert_true(http_token_eq("Chunked", 7, "chunked"));
    assert_true(http_token_eq("CHUNKED", 7, "chunked"));
    assert_false(http_token_eq("chunke", 6, "chunked"));
    assert_false(http_token_eq("chunkedx", 8, "chunked"));
    assert_false(http_token_eq("chunked", 6, "chunked"));
    assert_true(http_token_eq("", 0, ""));
    assert_false(http_token_eq("\0", 1, ""));
    assert_false(http_token_eq("c\0hunked", 8, "chunked"));
    /* Only ASCII letters fold: 0xC3 is not 'c'. */
    assert_false(http_token_eq("\xc3hunked", 7, "chunked"));
}

static void test_list_has_token(void **state)
{
    static const struct {
        const char *v;
        const char *tok;
        int want;
    } cases[] = {
        {"close", "close", 1},
        {"Close", "close", 1},
        {" close ", "close", 1},
        {"keep-alive, Upgrade", "upgrade", 1},
        {"keep-alive,Upgrade", "upgrade", 1},
        {"keep-alive ,\tupgrade\t", "upgrade", 1},
        {",,upgrade,,", "upgrade", 1},
        {"upgrades", "upgrade", 0},
        {"x-upgrade", "upgrade", 0},
        {"up grade", "upgrade", 0},
        {"", "close", 0},
        {",", "close", 0},
        {"closeclose", "close", 0},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (http_list_has_token(cases[i].v, strlen(cases[i].v), cases[i].tok) != cases[i].want)
            fail_msg("list case %zu (%s)", i, cases[i].v);
    }
}

/* tchar by its definition (RFC 9110 5.6.2), not by the parser's table. */
static int is_tchar(unsigned c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", (int)c) != NULL);
}

/* Parse raw[0..n) and every prefix of it from `from` on: a prefix that ends
 * before `pos` (the byte under test) must be INCOMPLETE, a longer one
 * INCOMPLETE or the full buffer's verdict. Returns the full verdict. */
static enum http_parse_status req_parse_prefixes(const char *raw, size_t n, size_t from, size_t pos,
                                                 struct http_request *req)
{
    enum http_parse_status st = req_parse(raw, n, &def_limits, req), pst;
    int status = req->error_status;
    const char *err = req->error;
    size_t p;
    struct http_request r;

    for (p = from; p < n; p++) {
        pst = req_parse(raw, p, &def_limits, &r);
        if (pst == HTTP_PARSE_INCOMPLETE)
            continue;
        if (p <= pos || st != HTTP_PARSE_ERROR || pst != st || r.error_status != status ||
            strcmp(r.error, err) != 0)
            fail_msg("prefix %zu of %zu (byte at %zu): %d", p, n, pos, (int)pst);
    }
    req_parse(raw, n, &def_limits, req); /* hdrs[] as parsed from the whole */
    return st;
}

/* Every byte value at every offset of header names of length 1 to 20 (the
 * parser scans names 8 bytes at a time): a tchar is part of the name, ':'
 * ends it, anything else is the error the byte-wise rules give; and every
 * prefix is INCOMPLETE until the byte under test. */
static void test_name_bytes(void **state)
{
    static const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\n";
    static const char pat[] = "Xa-Z9bC-d0eFgh-1IjKl";
    size_t plen = sizeof(pre) - 1, len, k;
    char raw[128], name[32];
    unsigned c;

    (void)state;
    for (len = 1; len <= 20; len++) {
        for (k = 0; k < len; k++) {
            for (c = 0; c < 256; c++) {
                struct http_request req;
                enum http_parse_status st;
                const char *want = NULL;
                size_t n;

                memcpy(name, pat, len);
                name[k] = (char)c;
                memcpy(raw, pre, plen);
                memcpy(raw + plen, name, len);
                memcpy(raw + plen + len, ": v\r\n\r\n", 7);
                n = plen + len + 7;
                if (is_tchar(c))
                    want = NULL;
                else if (c == ':')
                    want = k == 0 ? "empty header name" : NULL;
                else if (k == 0 && (c == ' ' || c == '\t'))
                    want = "obs-fold header line";
                else if (k == 0 && c == '\r')
                    want = "bare CR in header";
                else if (k == 0 && c == '\n')
                    want = "bare LF in header";
                else if (c == ' ' || c == '\t')
                    want = "whitespace before colon in header";
                else if (c == '\r' || c == '\n')
                    want = "header line without colon";
                else
                    want = "invalid character in header name";
                st = req_parse_prefixes(raw, n, plen, plen + k, &req);
                if (want != NULL) {
                    if (st != HTTP_PARSE_ERROR || req.error_status != 400 ||
                        strcmp(req.error, want) != 0)
                        fail_msg("byte 0x%02x at %zu of %zu: %d %s", c, k, len, (int)st,
                                 st == HTTP_PARSE_ERROR ? req.error : "");
                    continue;
                }
                if (st != HTTP_PARSE_OK || req.nheaders != 2 ||
                    hdrs[1].name_len != (c == ':' ? k : len) ||
                    memcmp(hdrs[1].name, name, hdrs[1].name_len) != 0)
                    fail_msg("byte 0x%02x at %zu of %zu: name not whole (%d)", c, k, len, (int)st);
            }
        }
    }
}

/* Every byte value at every offset of header values of length 1 to 24,
 * with every prefix (values are scanned 8 bytes at a time). */
static void test_value_bytes_lengths(void **state)
{
    static const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\nX-V: ";
    static const char pat[] = "aB3~\x80\xff!z-v%\"Q \x7e\xc3\xa9(0)=;q,1W/";
    size_t plen = sizeof(pre) - 1, len, k;
    char raw[128], val[32];
    unsigned c;

    (void)state;
    for (len = 1; len <= 24; len++) {
        for (k = 0; k < len; k++) {
            for (c = 0; c < 256; c++) {
                int ok = c == 0x09 || (c >= 0x20 && c != 0x7f);
                struct http_request req;
                enum http_parse_status st;
                const char *want;
                size_t n, skip = 0, vlen = len;

                memcpy(val, pat, len);
                val[k] = (char)c;
                memcpy(raw, pre, plen);
                memcpy(raw + plen, val, len);
                memcpy(raw + plen + len, "\r\n\r\n", 4);
                n = plen + len + 4;
                st = req_parse_prefixes(raw, n, plen, plen + k, &req);
                if (!ok) {
                    want = c == '\n'   ? "bare LF in header"
                           : c == '\r' ? "bare CR in header"
                                       : "control character in header value";
                    if (st != HTTP_PARSE_ERROR || req.error_status != 400 ||
                        strcmp(req.error, want) != 0)
                        fail_msg("byte 0x%02x at %zu of %zu: accepted", c, k, len);
                    continue;
                }
                /* Leading and trailing whitespace is not part of the value. */
                while (skip < vlen && (val[skip] == ' ' || val[skip] == '\t'))
                    skip++;
                while (vlen > skip && (val[vlen - 1] == ' ' || val[vlen - 1] == '\t'))
                    vlen--;
                if (st != HTTP_PARSE_OK || req.nheaders != 2 || hdrs[1].value_len != vlen - skip ||
                    memcmp(hdrs[1].value, val + skip, vlen - skip) != 0)
                    fail_msg("byte 0x%02x at %zu of %zu: value cut (%d)", c, k, len, (int)st);
            }
        }
    }
}

/* Request line: every byte value at every offset of methods (1-20) and
 * origin-form targets (2-24), and every byte at every offset of the version
 * (which the parser skips whole when it is 1.0 or 1.1). */
static void test_request_line_bytes(void **state)
{
    static const char mpat[] = "GETxyz-!#$%&'*+.^_`|~09";
    static const char tpat[] = "/aB3-._~!$&'()*+,;=:@%2F?x=y/";
    char raw[128];
    size_t len, k, n;
    unsigned c;

    (void)state;
    for (len = 1; len <= 20; len++) {
        for (k = 0; k < len; k++) {
            for (c = 0; c < 256; c++) {
                struct http_request req;
                enum http_parse_status st;
                const char *want;

                memcpy(raw, mpat, len);
                raw[k] = (char)c;
                n = len + (size_t)sprintf(raw + len, " / HTTP/1.1\r\nHost: a\r\n\r\n");
                st = req_parse_prefixes(raw, n, 0, k, &req);
                want = is_tchar(c)           ? NULL
                       : c == '\n'           ? "bare LF in request line"
                       : c == '\r' && k == 0 ? "empty line before request line"
                       : c == ' ' && k > 0   ? "" /* cut: an error further on */
                                             : "invalid method";
                if (want == NULL) {
                    if (st != HTTP_PARSE_OK || req.method_len != len ||
                        memcmp(req.method, raw, len) != 0)
                        fail_msg("method byte 0x%02x at %zu of %zu: %d", c, k, len, (int)st);
                } else if (st != HTTP_PARSE_ERROR || req.error_status != 400 ||
                           (want[0] && strcmp(req.error, want) != 0)) {
                    fail_msg("method byte 0x%02x at %zu of %zu: %d", c, k, len, (int)st);
                }
            }
        }
    }
    for (len = 2; len <= 24; len++) {
        for (k = 1; k < len; k++) {
            for (c = 0; c < 256; c++) {
                struct http_request req;
                enum http_parse_status st;
                const char *want;

                memcpy(raw, "GET ", 4);
                memcpy(raw + 4, tpat, len);
                raw[4 + k] = (char)c;
                n = 4 + len + (size_t)sprintf(raw + 4 + len, " HTTP/1.1\r\nHost: a\r\n\r\n");
                st = req_parse_prefixes(raw, n, 0, 4 + k, &req);
                want = c == '#'               ? "fragment in request-target"
                       : c > 0x20 && c < 0x7f ? NULL
                       : c == '\n'            ? "bare LF in request line"
                       : c == ' '             ? "invalid HTTP version" /* the rest is no version */
                                              : "invalid character in request-target";
                if (want == NULL) {
                    if (st != HTTP_PARSE_OK || req.target_len != len ||
                        memcmp(req.target, raw + 4, len) != 0)
                        fail_msg("target byte 0x%02x at %zu of %zu: %d", c, k, len, (int)st);
                } else if (st != HTTP_PARSE_ERROR || req.error_status != 400 ||
                           strcmp(req.error, want) != 0) {
                    fail_msg("target byte 0x%02x at %zu of %zu: %d %s", c, k, len, (int)st,
                             st == HTTP_PARSE_ERROR ? req.error : "");
                }
            }
        }
    }
    for (k = 0; k < 8; k++) {
        for (c = 0; c < 256; c++) {
            struct http_request req;
            enum http_parse_status st;
            int ok;

            n = (size_t)sprintf(raw, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            raw[6 + k] = (char)c;
            ok = k < 5    ? c == (unsigned char)"HTTP/"[k]
                 : k == 5 ? c == '1'
                 : k == 6 ? c == '.'
                          : c == '0' || c == '1';
            st = req_parse_prefixes(raw, n, 0, 6 + k, &req);
            if (ok ? st != HTTP_PARSE_OK || req.minor_version != raw[13] - '0'
                   : st != HTTP_PARSE_ERROR)
                fail_msg("version byte 0x%02x at %zu: %d", c, k, (int)st);
        }
    }
}

/* Status line: every byte value at every offset of "HTTP/1.1 200" and of
 * reason phrases of length 1 to 24, with every prefix. */
static void test_status_line_bytes(void **state)
{
    static const char rpat[] = "OK all \tfine\x80\xff~!\"(x)-9 z";
    char raw[128];
    size_t len, k, n, p;
    unsigned c;

    (void)state;
    for (len = 0; len <= 24; len++) {
        for (k = 0; k < 12 + len; k++) {
            for (c = 0; c < 256; c++) {
                struct http_response resp, r;
                enum http_parse_status st, pst;
                const char *want;

                memcpy(raw, "HTTP/1.1 200 ", 13);
                memcpy(raw + 13, rpat, len);
                n = 13 + len + (size_t)sprintf(raw + 13 + len, "\r\nContent-Length: 0\r\n\r\n");
                if (k >= 12 && len == 0)
                    break;
                raw[k >= 12 ? k + 1 : k] = (char)c;
                if (k < 12) {
                    int status = (raw[9] - '0') * 100 + (raw[10] - '0') * 10 + (raw[11] - '0');
                    int ok = memcmp(raw, "HTTP/1.", 7) == 0 && (raw[7] == '0' || raw[7] == '1') &&
                             raw[8] == ' ' && status >= 100 && status <= 599;
                    for (p = 9; p < 12; p++)
                        ok = ok && raw[p] >= '0' && raw[p] <= '9';
                    want = ok ? NULL : "";
                } else {
                    want = (c == 0x09 || (c >= 0x20 && c != 0x7f)) ? NULL
                           : c == '\n'                             ? "bare LF in status line"
                           : c == '\r'                             ? "bare CR in status line"
                                       : "control character in reason phrase";
                }
                st = http_response_parse(raw, n, 4096, 0, hdrs, HTTP_MAX_HEADERS, &resp);
                if (want == NULL) {
                    int status = (raw[9] - '0') * 100 + (raw[10] - '0') * 10 + (raw[11] - '0');
                    if (st != HTTP_PARSE_OK || resp.status != status || resp.reason_len != len ||
                        memcmp(resp.reason, raw + 13, len) != 0)
                        fail_msg("status line byte 0x%02x at %zu of %zu: %d", c, k, len, (int)st);
                } else if (st != HTTP_PARSE_ERROR || (want[0] && strcmp(resp.error, want) != 0)) {
                    fail_msg("status line byte 0x%02x at %zu of %zu: %d", c, k, len, (int)st);
                }
                for (p = 0; p < n; p++) {
                    pst = http_response_parse(raw, p, 4096, 0, hdrs, HTTP_MAX_HEADERS, &r);
                    if (pst == HTTP_PARSE_INCOMPLETE)
                        continue;
                    if (p <= (k >= 12 ? k + 1 : k) || st != HTTP_PARSE_ERROR || pst != st ||
                        strcmp(r.error, resp.error) != 0)
                        fail_msg("status line byte 0x%02x at %zu, prefix %zu: %d", c, k, p,
                                 (int)pst);
                }
            }
        }
    }
}

/* The parser reads close, keep-alive and upgrade out of Connection in one
 * pass: keep_alive and upgrade_websocket must be what http_list_has_token()
 * says about each value, for requests (1.0 and 1.1) and responses. */
static void test_connection_tokens(void **state)
{
    static const char *const vals[] = {
        "close",
        "Close",
        "CLOSE",
        " close ",
        "keep-alive",
        "Keep-Alive",
        "upgrade",
        "Upgrade",
        "keep-alive, Upgrade",
        "keep-alive,Upgrade",
        "keep-alive ,\tupgrade\t",
        ",,upgrade,,",
        "close, keep-alive",
        "keep-alive, close",
        "upgrades",
        "x-upgrade",
        "up grade",
        "",
        ",",
        "closeclose",
        "clos",
        "closf",
        "keep-alivf",
        "keep_alive",
        "upgradf",
        "te, close",
        "foo, bar",
        "Upgrade, HTTP2-Settings",
        "keep-alive, keep-alive",
        "\tclose",
        "close\t,",
        "KEEP-ALIVE , UPGRADE , CLOSE",
        "k",
        "keep-alive, x",
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        const char *v = vals[i];
        int cl = http_list_has_token(v, strlen(v), "close");
        int ka = http_list_has_token(v, strlen(v), "keep-alive");
        int up = http_list_has_token(v, strlen(v), "upgrade");
        char raw[512];
        struct http_request req;
        struct http_response resp;
        int n;

        n = snprintf(raw, sizeof(raw),
                     "GET / HTTP/1.1\r\nHost: a\r\nConnection: %s\r\nUpgrade: websocket\r\n\r\n",
                     v);
        assert_int_equal(req_parse(raw, (size_t)n, &def_limits, &req), HTTP_PARSE_OK);
        if (req.keep_alive != !cl || req.upgrade_websocket != up)
            fail_msg("1.1 request, Connection: %s", v);
        n = snprintf(raw, sizeof(raw), "GET / HTTP/1.0\r\nConnection: %s\r\n\r\n", v);
        assert_int_equal(req_parse(raw, (size_t)n, &def_limits, &req), HTTP_PARSE_OK);
        if (req.keep_alive != (ka && !cl))
            fail_msg("1.0 request, Connection: %s", v);
        n = snprintf(raw, sizeof(raw),
                     "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: %s\r\n\r\n", v);
        assert_int_equal(
            http_response_parse(raw, (size_t)n, 4096, 0, hdrs, HTTP_MAX_HEADERS, &resp),
            HTTP_PARSE_OK);
        if (resp.keep_alive != (ka && !cl))
            fail_msg("1.0 response, Connection: %s", v);
    }
}

/* http_caseeq_n() against the byte-wise http_token_eq(), for every pair of
 * byte values (the slice's and the literal's) at every offset of every
 * length up to 24 (the 1-, 2-, 4- and 8-byte words and their overlaps). The
 * slice and literal sit in buffers of exactly n bytes (plus the literal's
 * NUL), so a sanitizer build catches any read past them. */
static void test_caseeq_n(void **state)
{
    static const char base[] = "Content-Type-X9_Ab.c~Z-0";
    size_t n, k;

    (void)state;
    for (n = 0; n <= 24; n++) {
        char *s = malloc(n ? n : 1), *lit = malloc(n + 1);
        size_t j;

        assert_non_null(s);
        assert_non_null(lit);
        for (j = 0; j < n; j++) {
            unsigned char c = (unsigned char)base[j];
            s[j] = (char)c;
            lit[j] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        }
        lit[n] = '\0';
        if (http_caseeq_n(s, lit, n) != 1 || http_token_eq(s, n, lit) != 1)
            fail_msg("length %zu: base differs", n);
        for (k = 0; k < n; k++) {
            char s0 = s[k], l0 = lit[k];
            unsigned cs, cl;

            for (cl = 1; cl < 256; cl++) {
                lit[k] = (char)cl;
                for (cs = 0; cs < 256; cs++) {
                    s[k] = (char)cs;
                    if (http_caseeq_n(s, lit, n) != http_token_eq(s, n, lit))
                        fail_msg("length %zu offset %zu: 0x%02x vs literal 0x%02x", n, k, cs, cl);
                }
            }
            s[k] = s0;
            lit[k] = l0;
        }
        free(s);
        free(lit);
    }
}

/* Every byte value at every offset of a long header value (the parser
 * checks values 8 bytes at a time): accepted exactly when it is a
 * field-value octet (HTAB, SP, VCHAR, obs-text), and the value comes back
 * whole. */
static void test_value_bytes(void **state)
{
    static const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\nX-V: ";
    char raw[256], val[40];
    struct http_request req;
    size_t len = 29, k, plen = sizeof(pre) - 1;
    unsigned c;

    (void)state;
    for (c = 0; c < 256; c++) {
        for (k = 0; k + 1 < len; k++) {
            int ok = c == 0x09 || (c >= 0x20 && c != 0x7f);
            enum http_parse_status st;
            size_t n, skip = 0;

            memset(val, 'v', len);
            val[k] = (char)c;
            memcpy(raw, pre, plen);
            memcpy(raw + plen, val, len);
            memcpy(raw + plen + len, "\r\n\r\n", 4);
            n = plen + len + 4;
            memset(&req, 0, sizeof(req));
            st = req_parse(raw, n, &def_limits, &req);
            if (!ok) {
                if (st != HTTP_PARSE_ERROR)
                    fail_msg("byte 0x%02x at %zu: accepted", c, k);
                continue;
            }
            if (st != HTTP_PARSE_OK || req.nheaders != 2)
                fail_msg("byte 0x%02x at %zu: refused (%d)", c, k, (int)st);
            if (k == 0 && (c == ' ' || c == '\t'))
                skip = 1; /* leading whitespace is not part of the value */
            if (hdrs[1].value_len != len - skip ||
                memcmp(hdrs[1].value, val + skip, len - skip) != 0)
                fail_msg("byte 0x%02x at %zu: value cut", c, k);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_ok),
        cmocka_unit_test(test_request_headers_slices),
        cmocka_unit_test(test_request_pipelined),
        cmocka_unit_test(test_request_bad),
        cmocka_unit_test(test_request_early_errors),
        cmocka_unit_test(test_limit_request_line),
        cmocka_unit_test(test_limit_header_count),
        cmocka_unit_test(test_limit_head),
        cmocka_unit_test(test_response_ok),
        cmocka_unit_test(test_response_bad),
        cmocka_unit_test(test_response_limits),
        cmocka_unit_test(test_token_eq),
        cmocka_unit_test(test_list_has_token),
        cmocka_unit_test(test_value_bytes),
        cmocka_unit_test(test_caseeq_n),
        cmocka_unit_test(test_connection_tokens),

        cmocka_unit_test(test_name_bytes),
        cmocka_unit_test(test_value_bytes_lengths),
        cmocka_unit_test(test_request_line_bytes),
        cmocka_unit_test(test_status_line_bytes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
