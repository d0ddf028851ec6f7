/*
 * proxyproto_test.c - the PROXY protocol v2 parser (proxyproto.h): every
 * field, both sides of every limit, incremental input one byte at a time,
 * the early refusal of what is not a v2 header, TLV bounds and CRC32C; the
 * trusted-peer match; and the listener options in the config
 * ($.listen[].proxy_protocol / trusted_proxies).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>

#include "conf.h"
#include "proxyproto.h"

static const uint8_t SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A header: ver/cmd byte, fam/proto byte, then body[0..n). Returns its length. */
static size_t mk(uint8_t *out, uint8_t vc, uint8_t fp, const uint8_t *body, size_t n)
{
    memcpy(out, SIG, 12);
    out[12] = vc;
    out[13] = fp;
    out[14] = (uint8_t)(n >> 8);
    out[15] = (uint8_t)n;
    if (n > 0)
        memcpy(out + 16, body, n);
    return 16 + n;
}

/* 192.0.2.10:51000 -> 198.51.100.1:443 */
static const uint8_t TCP4_ADDR[12] = {192, 0, 2, 10, 198, 51, 100, 1, 0xC7, 0x38, 0x01, 0xBB};

static enum proxyproto_status parse(const uint8_t *b, size_t len, size_t max,
                                    struct proxyproto_header *h, size_t *need, char *err)
{
    memset(h, 0xA5, sizeof(*h));
    err[0] = '\0';
    return proxyproto_parse(b, len, max, h, need, err, PROXYPROTO_ERR_MAX);
}

static void test_tcp4(void **state)
{
    uint8_t b[64];
    size_t n = mk(b, 0x21, 0x11, TCP4_ADDR, sizeof(TCP4_ADDR)), need = 0;
    struct proxyproto_header h;
    char err[PROXYPROTO_ERR_MAX];
    const struct sockaddr_in *s, *d;
    char ip[32];

    (void)state;
    assert_int_equal(n, 28);
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_DONE);
    assert_int_equal(h.command, PROXYPROTO_CMD_PROXY);
    assert_int_equal(h.len, 28);
    assert_int_equal(need, 28);
    assert_int_equal(h.ntlvs, 0);
    assert_int_equal(h.addrlen, sizeof(struct sockaddr_in));
    s = (const struct sockaddr_in *)&h.src;
    d = (const struct sockaddr_in *)&h.dst;
    assert_int_equal(s->sin_family, AF_INET);
    inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
    assert_string_equal(ip, "192.0.2.10");
    assert_int_equal(ntohs(s->sin_port), 51000);
    inet_ntop(AF_INET, &d->sin_addr, ip, sizeof(ip));
    assert_string_equal(ip, "198.51.100.1");
    assert_int_equal(ntohs(d->sin_port), 443);
}

static void test_tcp6(void **state)
{
    uint8_t body[36], b[64];
    size_t n, need = 0;
    struct proxyproto_header h;
    char err[PROXYPROTO_ERR_MAX], ip[64];
    const struct sockaddr_in6 *s;

    (void)state;
    inet_pton(AF_INET6, "2001:db8::7", body);
    inet_pton(AF_INET6, "2001:db8::1", body + 16);
    body[32] = 0x30;
    body[33] = 0x39; /* 12345 */
    body[34] = 0x20;
    body[35] = 0xFB; /* 8443 */
    n = mk(b, 0x21, 0x21, body, sizeof(body));
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_DONE);
    assert_int_equal(h.len, 52);
    assert_int_equal(h.addrlen, sizeof(struct sockaddr_in6));
    s = (const struct sockaddr_in6 *)&h.src;
    assert_int_equal(s->sin6_family, AF_INET6);
    inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
    assert_string_equal(ip, "2001:db8::7");
    assert_int_equal(ntohs(s->sin6_port), 12345);
    assert_int_equal(ntohs(((const struct sockaddr_in6 *)&h.dst)->sin6_port), 8443);
}

static void test_local(void **state)
{
    uint8_t b[64];
    size_t n, need = 0;
    struct proxyproto_header h;
    char err[PROXYPROTO_ERR_MAX];

    (void)state;
    /* HAProxy's health checks: LOCAL, UNSPEC, no body. */
    n = mk(b, 0x20, 0x00, NULL, 0);
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_DONE);
    assert_int_equal(h.command, PROXYPROTO_CMD_LOCAL);
    assert_int_equal(h.len, 16);
    assert_int_equal(h.src.ss_family, AF_UNSPEC);
    assert_int_equal(h.addrlen, 0);
    /* LOCAL with addresses: they are ignored, not returned. */
    n = mk(b, 0x20, 0x11, TCP4_ADDR, sizeof(TCP4_ADDR));
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_DONE);
    assert_int_equal(h.command, PROXYPROTO_CMD_LOCAL);
    assert_int_equal(h.src.ss_family, AF_UNSPEC);
    assert_int_equal(h.len, 28);
    /* LOCAL over UNIX or UDP: fine too, nothing is taken from it. */
    n = mk(b, 0x20, 0x12, TCP4_ADDR, sizeof(TCP4_ADDR));
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_DONE);
}

/* Byte by byte: MORE (need 16, then the whole length) until the last byte. */
static void test_incremental(void **state)
{
    uint8_t body[12 + 7], b[64];
    size_t n, i, need;
    struct proxyproto_header h;
    char err[PROXYPROTO_ERR_MAX];

    (void)state;
    memcpy(body, TCP4_ADDR, 12);
    body[12] = 0x04; /* PP2_TYPE_NOOP, 4 bytes */
    body[13] = 0;
    body[14] = 4;
    memset(body + 15, 0xEE, 4);
    n = mk(b, 0x21, 0x11, body, sizeof(body));
    for (i = 0; i < n; i++) {
        need = 0;
        assert_int_equal(parse(b, i, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_MORE);
        assert_int_equal(need, i < 16 ? 16 : n);
        assert_true(need > i);
    }
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_DONE);
    assert_int_equal(h.len, n);
    assert_int_equal(h.ntlvs, 1);
    /* Bytes after the header (the TLS ClientHello) are not the parser's. */
    b[n] = 0x16;
    assert_int_equal(parse(b, n + 1, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_DONE);
    assert_int_equal(h.len, n);
}

struct bad {
    const char *name;
    uint8_t vc, fp;
    size_t body_len;
    size_t cut; /* 0: the whole header; else only the first cut bytes */
    const char *expect;
};

static void test_refused(void **state)
{
    static const struct bad cases[] = {
        {"version 1", 0x11, 0x11, 12, 0, "byte 12: version 1, expected 2"},
        {"version 3", 0x31, 0x11, 12, 13, "byte 12: version 3, expected 2"},
        {"command 2", 0x22, 0x11, 12, 0, "byte 12: command 2, expected 0 (LOCAL) or 1 (PROXY)"},
        {"command 15", 0x2F, 0x11, 12, 13, "command 15"},
        {"family 4", 0x21, 0x41, 12, 0, "byte 13: address family 4 / transport 1"},
        {"transport 3", 0x20, 0x13, 12, 14, "transport 3, expected 0-3 / 0-2"},
        {"PROXY UNSPEC", 0x21, 0x00, 0, 14, "PROXY command with UNSPEC over UNSPEC"},
        {"PROXY UNIX", 0x21, 0x31, 216, 0, "PROXY command with STREAM over UNIX"},
        {"PROXY UDP4", 0x21, 0x12, 12, 0, "PROXY command with DGRAM over INET"},
        {"PROXY TCP4 short", 0x21, 0x11, 11, 0,
         "bytes 14-15: length 11 is shorter than the 12-byte INET address block"},
        {"PROXY TCP6 short", 0x21, 0x21, 35, 16, "shorter than the 36-byte INET6 address block"},
        {"LOCAL TCP6 short", 0x20, 0x21, 12, 0, "shorter than the 36-byte INET6"},
        {"TLV header cut", 0x21, 0x11, 14, 0, "byte 28: 2 bytes left, too short for a TLV"},
    };
    uint8_t body[300], b[400];
    size_t i, n, need;
    struct proxyproto_header h;
    char err[PROXYPROTO_ERR_MAX];

    (void)state;
    memset(body, 0, sizeof(body));
    memcpy(body, TCP4_ADDR, 12);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        n = mk(b, cases[i].vc, cases[i].fp, body, cases[i].body_len);
        if (cases[i].cut != 0)
            n = cases[i].cut;
        if (parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err) != PROXYPROTO_ERROR ||
            strstr(err, cases[i].expect) == NULL)
            fail_msg("case %s: got \"%s\", expected \"%s\"", cases[i].name, err, cases[i].expect);
    }
}

/* What a direct client sends is refused on its first byte. */
static void test_not_a_header(void **state)
{
    static const uint8_t tls[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
    static const char v1[] = "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n";
    static const char http[] = "GET / HTTP/1.1\r\n";
    uint8_t b[32];
    size_t need;
    struct proxyproto_header h;
    char err[PROXYPROTO_ERR_MAX];

    (void)state;
    assert_int_equal(parse(tls, 1, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_ERROR);
    assert_non_null(strstr(err, "byte 0: expected the PROXY protocol v2 signature"));
    assert_non_null(strstr(err, "got 0x16 (a TLS handshake record"));
    assert_int_equal(parse((const uint8_t *)v1, strlen(v1), PROXYPROTO_MAX_HEADER, &h, &need, err),
                     PROXYPROTO_ERROR);
    assert_non_null(strstr(err, "PROXY protocol v1 text header: only v2 is accepted"));
    assert_int_equal(
        parse((const uint8_t *)http, strlen(http), PROXYPROTO_MAX_HEADER, &h, &need, err),
        PROXYPROTO_ERROR);
    assert_non_null(strstr(err, "plain HTTP"));
    /* A signature wrong in its last byte is caught there. */
    memcpy(b, SIG, 12);
    b[11] = 0x0B;
    assert_int_equal(parse(b, 11, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_MORE);
    assert_int_equal(parse(b, 12, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_ERROR);
    assert_non_null(strstr(err, "byte 11:"));
    /* Nothing yet: more. */
    assert_int_equal(parse(b, 0, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_MORE);
    assert_int_equal(need, 16);
}

/* The size limit, both sides; checked from the length field, before the body. */
static void test_max(void **state)
{
    static uint8_t body[PROXYPROTO_MAX_HEADER], b[PROXYPROTO_MAX_HEADER + 64];
    size_t n, need, blen = 100;
    struct proxyproto_header h;
    char err[PROXYPROTO_ERR_MAX];

    (void)state;
    memcpy(body, TCP4_ADDR, 12);
    body[12] = 0x30; /* a TLV spanning the rest */
    body[13] = 0;
    body[14] = (uint8_t)(blen - 15);
    n = mk(b, 0x21, 0x11, body, blen);
    assert_int_equal(parse(b, n, 116, &h, &need, err), PROXYPROTO_DONE);
    assert_int_equal(parse(b, 16, 115, &h, &need, err), PROXYPROTO_ERROR);
    assert_string_equal(err, "bytes 14-15: length 100 makes a 116-byte header, the limit is 115");
    /* The default limit, exactly. */
    blen = PROXYPROTO_MAX_HEADER - 16;
    body[13] = (uint8_t)((blen - 15) >> 8);
    body[14] = (uint8_t)(blen - 15);
    n = mk(b, 0x21, 0x11, body, blen);
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_DONE);
    blen++;
    body[13] = (uint8_t)((blen - 15) >> 8);
    body[14] = (uint8_t)(blen - 15);
    n = mk(b, 0x21, 0x11, body, blen);
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_ERROR);
    /* The largest length field a header can have. */
    b[14] = 0xFF;
    b[15] = 0xFF;
    assert_int_equal(parse(b, 16, 65551, &h, &need, err), PROXYPROTO_MORE);
    assert_int_equal(need, 65551);
}

static void test_tlvs(void **state)
{
    uint8_t body[64], b[128];
    size_t n, need;
    struct proxyproto_header h;
    char err[PROXYPROTO_ERR_MAX];

    (void)state;
    memcpy(body, TCP4_ADDR, 12);
    /* ALPN "h2", then an empty NOOP, then AUTHORITY "a" */
    memcpy(body + 12,
           "\x01\x00\x02h2\x04\x00\x00\x02\x00\x01"
           "a",
           12);
    n = mk(b, 0x21, 0x11, body, 24);
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_DONE);
    assert_int_equal(h.ntlvs, 3);
    /* One byte more: a TLV cannot start in the last byte. */
    n = mk(b, 0x21, 0x11, body, 25);
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_ERROR);
    assert_string_equal(err, "byte 40: 1 bytes left, too short for a TLV (3 bytes)");
    /* The last TLV claims one byte more than there is. */
    body[22] = 2;
    n = mk(b, 0x21, 0x11, body, 24);
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_ERROR);
    assert_string_equal(err, "byte 36: TLV type 0x02 of 2 bytes overruns the header by 1");
    /* A TLV header with a length of 0xFFFF right at the end. */
    memcpy(body + 12, "\x05\xFF\xFF", 3);
    n = mk(b, 0x21, 0x11, body, 15);
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_ERROR);
    assert_non_null(strstr(err, "overruns the header by 65535"));
}

/* Reference CRC-32C with a table, checked against the standard test vector. */
static uint32_t crc32c_ref(const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    uint32_t crc = 0xFFFFFFFFu;
    size_t i;

    if (table[1] == 0) {
        for (i = 0; i < 256; i++) {
            uint32_t c = (uint32_t)i;
            int k;
            for (k = 0; k < 8; k++)
                c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
            table[i] = c;
        }
    }
    for (i = 0; i < n; i++)
        crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

static void test_crc32c(void **state)
{
    uint8_t body[64], b[128];
    size_t n, need;
    uint32_t crc;
    struct proxyproto_header h;
    char err[PROXYPROTO_ERR_MAX];

    (void)state;
    assert_int_equal(crc32c_ref((const uint8_t *)"123456789", 9), 0xE3069283u);
    memcpy(body, TCP4_ADDR, 12);
    memcpy(body + 12, "\x03\x00\x04\x00\x00\x00\x00", 7);
    n = mk(b, 0x21, 0x11, body, 19);
    crc = crc32c_ref(b, n); /* over the header with the value zeroed */
    b[31] = (uint8_t)(crc >> 24);
    b[32] = (uint8_t)(crc >> 16);
    b[33] = (uint8_t)(crc >> 8);
    b[34] = (uint8_t)crc;
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_DONE);
    assert_int_equal(h.ntlvs, 1);
    /* One bit of the client address changed: refused. */
    b[19] ^= 1;
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_ERROR);
    assert_non_null(strstr(err, "byte 28: CRC32C 0x"));
    assert_non_null(strstr(err, "does not match the header"));
    /* A CRC32C TLV of the wrong size. */
    memcpy(body + 12, "\x03\x00\x03\x00\x00\x00", 6);
    n = mk(b, 0x21, 0x11, body, 18);
    assert_int_equal(parse(b, n, PROXYPROTO_MAX_HEADER, &h, &need, err), PROXYPROTO_ERROR);
    assert_string_equal(err, "byte 28: CRC32C TLV of 3 bytes, expected 4");
}

static struct conf_cidr cidr(const char *addr, unsigned bits)
{
    struct conf_cidr c;

    memset(&c, 0, sizeof(c));
    if (inet_pton(AF_INET, addr, c.addr) == 1) {
        c.family = AF_INET;
    } else {
        c.family = AF_INET6;
        inet_pton(AF_INET6, addr, c.addr);
    }
    c.bits = bits;
    return c;
}

static int trusted(const char *ip, const struct conf_cidr *nets, size_t n)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ss.ss_family = AF_INET;
    } else {
        ss.ss_family = AF_INET6;
        inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr);
    }
    return proxyproto_peer_trusted((struct sockaddr *)&ss, nets, n);
}

static void test_trusted(void **state)
{
    struct conf_cidr nets[3];
    struct sockaddr_storage unix_ss;

    (void)state;
    nets[0] = cidr("127.0.0.2", 32);
    nets[1] = cidr("10.1.2.0", 23);
    nets[2] = cidr("2001:db8::", 32);
    assert_true(trusted("127.0.0.2", nets, 3));
    assert_false(trusted("127.0.0.1", nets, 3));
    assert_false(trusted("127.0.0.3", nets, 3));
    assert_true(trusted("10.1.2.0", nets, 3));
    assert_true(trusted("10.1.3.255", nets, 3));
    assert_false(trusted("10.1.4.0", nets, 3));
    assert_false(trusted("10.1.1.255", nets, 3));
    assert_true(trusted("2001:db8:ffff::1", nets, 3));
    assert_false(trusted("2001:db9::1", nets, 3));
    assert_true(trusted("::ffff:127.0.0.2", nets, 3)); /* a dual-stack listener */
    assert_false(trusted("::ffff:127.0.0.1", nets, 3));
    assert_false(trusted("127.0.0.2", nets, 0));
    memset(&unix_ss, 0, sizeof(unix_ss));
    unix_ss.ss_family = AF_UNIX;
    assert_false(proxyproto_peer_trusted((struct sockaddr *)&unix_ss, nets, 3));
    assert_false(proxyproto_peer_trusted(NULL, nets, 3));
    nets[0] = cidr("0.0.0.0", 0);
    assert_true(trusted("203.0.113.9", nets, 1));
    assert_false(trusted("2001:db8::1", nets, 1));
}

/* ---- the listener options in the config --------------------------------- */

#define TLS "\"tls\":{\"certificate\":\"s.crt\",\"key\":\"s.key\",\"device_ca\":\"ca.crt\"}"
#define ROUTES                                                                                     \
    "\"routes\":[{\"name\":\"app\",\"host\":\"app.test\",\"upstream\":\"http://127.0.0.1:9\"}]"

static int conf(const char *listen, const char *extra, struct conf **out, char *err)
{
    char text[2048];

    snprintf(text, sizeof(text), "{\"listen\":[%s]," TLS "," ROUTES "%s}", listen, extra);
    err[0] = '\0';
    return conf_parse(text, strlen(text), "t.json", "/etc/zt", CONF_NO_FS, out, err, 512);
}

static void test_conf_listener(void **state)
{
    struct conf *c = NULL;
    char err[512];

    (void)state;
    /* Default: off. */
    assert_int_equal(conf("{\"address\":\"127.0.0.1:1\"}", "", &c, err), 0);
    assert_int_equal(c->listeners[0].proxy_protocol, 0);
    assert_int_equal(c->listeners[0].ntrusted_proxies, 0);
    conf_unref(c);
    c = NULL;
    /* The listener's own list. */
    assert_int_equal(conf("{\"address\":\"127.0.0.1:1\",\"proxy_protocol\":true,"
                          "\"trusted_proxies\":[\"127.0.0.2\",\"10.0.0.0/8\"]},"
                          "{\"address\":\"127.0.0.1:2\"}",
                          "", &c, err),
                     0);
    assert_int_equal(c->listeners[0].proxy_protocol, 1);
    assert_int_equal(c->listeners[0].ntrusted_proxies, 2);
    assert_int_equal(c->listeners[0].trusted_proxies[1].bits, 8);
    assert_int_equal(c->listeners[1].proxy_protocol, 0);
    conf_unref(c);
    c = NULL;
    /* Inherited from policy.trusted_proxies. */
    assert_int_equal(conf("{\"address\":\"127.0.0.1:1\",\"proxy_protocol\":true}",
                          ",\"policy\":{\"rules\":\"r.json\",\"trusted_proxies\":[\"127.0.0.2\"]}",
                          &c, err),
                     0);
    assert_int_equal(c->listeners[0].ntrusted_proxies, 1);
    assert_int_equal(c->listeners[0].trusted_proxies[0].family, AF_INET);
    assert_int_equal(c->listeners[0].trusted_proxies[0].bits, 32);
    conf_unref(c);
    c = NULL;
}

static void test_conf_listener_errors(void **state)
{
    static const struct {
        const char *listen, *extra, *expect;
    } cases[] = {
        {"{\"address\":\"127.0.0.1:1\",\"proxy_protocol\":true}", "",
         "t.json: $.listen[0].proxy_protocol: needs the load balancers' addresses: "
         "\"trusted_proxies\" in this listener or in \"policy\""},
        {"{\"address\":\"127.0.0.1:1\",\"proxy_protocol\":true}",
         ",\"policy\":{\"rules\":\"r.json\"}", "$.listen[0].proxy_protocol: needs"},
        {"{\"address\":\"127.0.0.1:1\",\"proxy_protocol\":\"yes\"}", "",
         "$.listen[0].proxy_protocol: expected"},
        {"{\"address\":\"127.0.0.1:1\",\"trusted_proxies\":[\"127.0.0.2\"]}", "",
         "$.listen[0].trusted_proxies: only valid with \"proxy_protocol\": true"},
        {"{\"address\":\"127.0.0.1:1\",\"proxy_protocol\":true,\"trusted_proxies\":[]}", "",
         "$.listen[0].trusted_proxies: expected an array of 1-64 addresses or CIDRs"},
        {"{\"address\":\"127.0.0.1:1\",\"proxy_protocol\":true,\"trusted_proxies\":\"x\"}", "",
         "$.listen[0].trusted_proxies: expected an array"},
        {"{\"address\":\"127.0.0.1:1\",\"proxy_protocol\":true,\"trusted_proxies\":[7]}", "",
         "$.listen[0].trusted_proxies[0]: expected a string, got"},
        {"{\"address\":\"127.0.0.1:1\"},{\"address\":\"127.0.0.1:2\",\"proxy_protocol\":true,"
         "\"trusted_proxies\":[\"127.0.0.2\",\"lb.example\"]}",
         "", "$.listen[1].trusted_proxies[1]: expected an IPv4 or IPv6 address or CIDR"},
        {"{\"address\":\"127.0.0.1:1\",\"proxy_protocol\":true,"
         "\"trusted_proxies\":[\"10.0.0.1/8\"]}",
         "", "$.listen[0].trusted_proxies[0]: \"10.0.0.1/8\" has bits set after the prefix"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf *c = NULL;
        char err[512];
        if (conf(cases[i].listen, cases[i].extra, &c, err) != -1 || c != NULL ||
            strstr(err, cases[i].expect) == NULL)
            fail_msg("case %zu: got \"%s\", expected \"%s\"", i, err, cases[i].expect);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp4),          cmocka_unit_test(test_tcp6),
        cmocka_unit_test(test_local),         cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_refused),       cmocka_unit_test(test_not_a_header),
        cmocka_unit_test(test_max),           cmocka_unit_test(test_tlvs),
        cmocka_unit_test(test_crc32c),        cmocka_unit_test(test_trusted),
        cmocka_unit_test(test_conf_listener), cmocka_unit_test(test_conf_listener_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
