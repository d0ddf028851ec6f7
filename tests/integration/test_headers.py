#!/usr/bin/env python3
"""What the upstream is told: spoofed identity headers removed, hop-by-hop
headers removed, X-Forwarded-*, X-ZT-Device, X-ZT-Request-Id; routing by
Host and path prefix; the access log."""

import hashlib
import os

import ztlib
from ztlib import ProxyTestCase

HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"]


def hdrs(echo, name):
    name = name.lower()
    return [v for n, v in echo["headers"] if n.lower() == name]


class HeadersTest(ProxyTestCase):

    def echo(self, headers=None, **kw):
        r = self.get("/echo", headers, **kw)
        self.assertEqual(r.status, 200, r)
        return r, r.json()

    def test_spoofed_zt_headers_removed(self):
        spoof = [
            ("X-ZT-User", "spoof-user"),
            ("x-zt-user", "spoof-user2"),
            ("X-Zt-Device", "spoof-device"),
            ("X-ZT-DEVICE", "spoof-device2"),
            ("X-ZT-Email", "spoof@evil.example"),
            ("X-ZT-Groups", "spoof-admins"),
            ("X-ZT-Device-Tier", "spoof-high"),
            ("X-ZT-Request-Id", "spoof-request-id"),
            ("X-ZT-Assertion", "spoof.jwt.value"),
            ("x-zt-anything-else", "spoof-other"),
        ]
        r, echo = self.echo(spoof)
        for n, v in echo["headers"]:
            self.assertNotIn("spoof", v.lower(), "client-sent %s: %s reached the upstream" % (n, v))
        self.assertEqual(hdrs(echo, "x-zt-device"), ["good"])
        self.assertEqual(len(hdrs(echo, "x-zt-request-id")), 1)
        self.assertNotEqual(r.header("x-zt-request-id"), "spoof-request-id")

    def test_spoofed_zt_header_named_in_connection(self):
        # Even via Connection the client cannot smuggle an identity header.
        r, echo = self.echo([("Connection", "X-ZT-User"), ("X-ZT-User", "spoof")])
        self.assertEqual(hdrs(echo, "x-zt-user"), [])
        self.assertEqual(hdrs(echo, "x-zt-device"), ["good"])

    def test_forwarded_headers(self):
        r, echo = self.echo([
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "evil.example"),
        ])
        xff = hdrs(echo, "x-forwarded-for")
        self.assertEqual(len(xff), 1, xff)
        self.assertNotIn("6.6.6.6", xff[0], "spoofed X-Forwarded-For was kept")
        self.assertEqual(xff[0].strip(), "127.0.0.1")
        self.assertEqual(hdrs(echo, "x-forwarded-proto"), ["https"])
        xfh = hdrs(echo, "x-forwarded-host")
        self.assertEqual(len(xfh), 1, xfh)
        self.assertIn(xfh[0], ("app.test", "app.test:%d" % self.port))

    def test_forwarded_headers_without_client_values(self):
        r, echo = self.echo()
        self.assertEqual([v.strip() for v in hdrs(echo, "x-forwarded-for")], ["127.0.0.1"])
        self.assertEqual(hdrs(echo, "x-forwarded-proto"), ["https"])
        self.assertEqual(hdrs(echo, "x-forwarded-host"), ["app.test"])

    def test_device_header(self):
        for device in ("good", "good2"):
            r, echo = self.echo(device=device)
            self.assertEqual(hdrs(echo, "x-zt-device"), [device])

    def test_request_id(self):
        r1, e1 = self.echo()
        r2, e2 = self.echo()
        id1, id2 = r1.header("x-zt-request-id"), r2.header("x-zt-request-id")
        self.assertTrue(id1, "no X-ZT-Request-Id in the response: %r" % r1)
        self.assertTrue(id2)
        self.assertNotEqual(id1, id2, "request ids are not unique")
        self.assertEqual(hdrs(e1, "x-zt-request-id"), [id1])
        self.assertEqual(hdrs(e2, "x-zt-request-id"), [id2])
        e = self.wait_access(lambda e: e.get("request_id") == id1,
                             what="access log entry with request_id %s" % id1)
        self.assertEqual(e.get("device"), "good")
        self.assertEqual(e.get("route"), "app")
        self.assertEqual(e.get("method"), "GET")
        self.assertEqual(e.get("path"), "/echo")
        self.assertEqual(e.get("status"), 200)
        self.assertEqual(e.get("upstream_status"), 200)
        self.assertIn("127.0.0.1", str(e.get("client")))

    def test_request_id_on_upstream_error_status(self):
        r = self.get("/status?code=503")
        self.assertEqual(r.status, 503)
        rid = r.header("x-zt-request-id")
        self.assertTrue(rid)
        e = self.wait_access(lambda e: e.get("request_id") == rid)
        self.assertEqual(e.get("status"), 503)
        self.assertEqual(e.get("upstream_status"), 503)

    def test_hop_by_hop_headers_removed(self):
        r, echo = self.echo([
            ("Connection", "keep-alive, X-Custom-Hop"),
            ("X-Custom-Hop", "hop-value"),
            ("Keep-Alive", "timeout=99"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Whatever"),
            ("Upgrade", "h2c"),
            ("X-End-To-End", "kept"),
        ])
        self.assertEqual(hdrs(echo, "x-custom-hop"), [], "header named in Connection forwarded")
        for v in hdrs(echo, "connection"):
            self.assertNotIn("x-custom-hop", v.lower())
        self.assertNotIn("timeout=99", hdrs(echo, "keep-alive"))
        self.assertEqual(hdrs(echo, "proxy-connection"), [])
        self.assertEqual(hdrs(echo, "te"), [])
        self.assertEqual(hdrs(echo, "trailer"), [])
        self.assertEqual(hdrs(echo, "upgrade"), [])
        self.assertEqual(hdrs(echo, "x-end-to-end"), ["kept"])

    def test_end_to_end_headers_kept_in_order(self):
        r, echo = self.echo([
            ("X-Multi", "one"),
            ("Accept", "application/json"),
            ("X-Multi", "two"),
            ("User-Agent", "zt-test/1.0"),
            ("Cookie", "a=b; c=d"),
            ("Authorization", "Bearer not-a-real-token"),
        ])
        self.assertEqual(hdrs(echo, "x-multi"), ["one", "two"])
        self.assertEqual(hdrs(echo, "accept"), ["application/json"])
        self.assertEqual(hdrs(echo, "user-agent"), ["zt-test/1.0"])
        self.assertEqual(hdrs(echo, "cookie"), ["a=b; c=d"])

    def test_response_headers_pass_through(self):
        r = self.get("/")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("x-upstream"), "main")
        self.assertEqual(r.body, b"hello from main\n")

    def test_host_case_insensitive_port_ignored(self):
        r = self.get("/echo", host="APP.Test:%d" % self.port, server_hostname="app.test")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-upstream"), "main")

    def test_query_string_preserved(self):
        r = self.get("/echo?b=2&a=1&c=%41")
        self.assertEqual(r.status, 200)
        echo = r.json()
        self.assertEqual(echo["path"], "/echo")
        self.assertEqual(echo["query"], "b=2&a=1&c=%41")

    def test_curl_request(self):
        rc, status, head, body, err = ztlib.curl(
            self.port, "/echo", self.pki, "good",
            extra=["-H", "X-ZT-User: spoof", "-H", "X-Forwarded-For: 6.6.6.6"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(status, 200, head)
        import json
        echo = json.loads(body)
        self.assertEqual(hdrs(echo, "x-zt-device"), ["good"])
        self.assertEqual(hdrs(echo, "x-zt-user"), [])
        self.assertEqual([v.strip() for v in hdrs(echo, "x-forwarded-for")], ["127.0.0.1"])
        self.assertIn("x-zt-request-id", head.lower())


class RoutingTest(ProxyTestCase):
    UPSTREAMS = ("main", "api", "other")

    @classmethod
    def routes(cls):
        return [
            {"name": "app", "host": "app.test", "upstream": cls.ups["main"].url},
            {"name": "app-api", "host": "app.test", "path_prefix": "/api",
             "upstream": cls.ups["api"].url},
            {"name": "app-api-v2", "host": "app.test", "path_prefix": "/api/v2",
             "upstream": cls.ups["other"].url},
            {"name": "other", "host": "other.test", "upstream": cls.ups["other"].url},
        ]

    def which(self, path, host="app.test"):
        r = self.get(path, host=host)
        self.assertEqual(r.status, 200, "%s%s: %r" % (host, path, r))
        return r.header("x-upstream")

    def test_path_prefix_whole_segments(self):
        self.assertEqual(self.which("/"), "main")
        self.assertEqual(self.which("/api"), "api")
        self.assertEqual(self.which("/api/x"), "api")
        self.assertEqual(self.which("/apix"), "main")
        self.assertEqual(self.which("/api/v2"), "other")
        self.assertEqual(self.which("/api/v2/y"), "other")
        self.assertEqual(self.which("/api/v20"), "api")

    def test_prefix_matched_on_normalised_path(self):
        self.assertEqual(self.which("/x/../api/y"), "api")
        self.assertEqual(self.which("//api//v2/z"), "other")

    def test_host_routing(self):
        self.assertEqual(self.which("/", host="other.test"), "other")
        self.assertEqual(self.which("/api", host="other.test"), "other")

    def test_route_in_access_log(self):
        r = self.get("/api/logged")
        rid = r.header("x-zt-request-id")
        e = self.wait_access(lambda e: e.get("request_id") == rid)
        self.assertEqual(e.get("route"), "app-api")

    def test_unknown_host_not_forwarded(self):
        before = sum(len(u.heads()) for u in self.ups.values())
        r = self.get("/echo", host="unknown.test", server_hostname="app.test")
        self.assertIn(r.status, (404, 421), r)
        self.sentinel("unknown-host")
        after = sum(len(u.heads()) for u in self.ups.values())
        self.assertEqual(after, before + 1, "a request for an unknown host was forwarded")


class UpstreamTLSTest(ProxyTestCase):
    """https:// upstreams: verified against upstream_tls.ca; a wrong CA is a 502."""

    UPSTREAMS = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = ztlib.make_tmpdir("zt-UpstreamTLSTest-")
        cls.ups = {}
        try:
            cls.pki = ztlib.make_pki(os.path.join(cls.tmp, "pki"))
            cls.ups["main"] = ztlib.Upstream(
                cls.tmp, "main", tls=(cls.pki.server_crt, cls.pki.server_key)).start()
            cls.up = cls.ups["main"]
            cls.start_proxy()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def routes(cls):
        return [
            {"name": "app", "host": "app.test", "upstream": cls.up.url,
             "upstream_tls": {"ca": cls.pki.ca, "server_name": "app.test"}},
            {"name": "wrongca", "host": "other.test", "upstream": cls.up.url,
             "upstream_tls": {"ca": os.path.join(cls.pki.evil_dir, "ca.crt")}},
        ]

    def test_https_upstream(self):
        self.assertTrue(self.up.url.startswith("https://"))
        r = self.get("/echo", [("X-ZT-User", "spoof")])
        self.assertEqual(r.status, 200, r)
        echo = r.json()
        self.assertEqual(hdrs(echo, "x-zt-device"), ["good"])
        self.assertEqual(hdrs(echo, "x-zt-user"), [])

    def test_https_upstream_upload(self):
        body = os.urandom(300000)
        r = self.req("POST", "/upload", body=body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["sha256"], hashlib.sha256(body).hexdigest())

    def test_https_upstream_wrong_ca_is_502(self):
        before = len(self.up.heads())
        r = self.get("/echo", host="other.test")
        self.assertEqual(r.status, 502, r)
        self.assertEqual(len(self.up.heads()), before,
                         "the request went to an upstream that failed verification")


if __name__ == "__main__":
    ztlib.main()
