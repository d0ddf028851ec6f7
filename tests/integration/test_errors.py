#!/usr/bin/env python3
"""Errors the proxy answers itself: 502 (upstream refuses), 504 (upstream
silent), 408/close (slow client), 404 (unknown host), 413/414/431 (limits),
each on both sides of the limit where there is one."""

import socket
import ssl
import time

import ztlib
from ztlib import ProxyTestCase, build_request

GENEROUS = 15  # seconds: upper bound for things configured to take ~1 s


class ErrorsTest(ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.dead_port = ztlib.free_port()  # nothing listens there
        super().setUpClass()

    @classmethod
    def routes(cls):
        return [
            {"name": "app", "host": "app.test", "upstream": cls.up.url},
            {"name": "small", "host": "small.test", "upstream": cls.up.url,
             "max_body_size": "1k"},
            {"name": "dead", "host": "other.test",
             "upstream": "http://127.0.0.1:%d" % cls.dead_port},
        ]

    @classmethod
    def config_extra(cls):
        return {
            "timeouts": {"header": "1s", "body": "1s", "keepalive": "2s", "handshake": "1s",
                         "upstream_response": "1s", "upstream_connect": "2s"},
            "limits": {"header_size": "4k", "header_count": 20, "request_line": "1k"},
        }

    def assert_not_forwarded(self, before, tag):
        self.sentinel(tag)
        new = [t for t in self.up.targets()[before:] if not t.startswith("/sentinel-")]
        self.assertEqual(new, [], "the upstream received requests it should not have")

    # -- upstream failures ----------------------------------------------
    def test_502_upstream_refuses(self):
        r = self.get("/anything", host="other.test")
        self.assertEqual(r.status, 502, r)
        self.assertTrue(r.body, "502 without a page")
        rid = r.header("x-zt-request-id")
        e = self.wait_access(lambda e: e.get("status") == 502 and
                             (rid is None or e.get("request_id") == rid))
        self.assertEqual(e.get("route"), "dead")

    def test_502_keeps_connection_usable_or_closes_cleanly(self):
        with self.conn(server_hostname="other.test") as c:
            c.send(build_request("GET", "/x", host="other.test"))
            r = c.read_response()
            self.assertEqual(r.status, 502)
        self.sentinel("after-502")

    def test_504_upstream_never_answers(self):
        t0 = time.monotonic()
        with self.conn(timeout=GENEROUS) as c:
            c.send(build_request("GET", "/hang"))
            try:
                r = c.read_response()
            except socket.timeout:
                self.fail("no 504 within %ss" % GENEROUS)
        self.assertEqual(r.status, 504, r)
        self.assertLess(time.monotonic() - t0, GENEROUS + 1)
        self.assertIn("/hang", self.up.targets())

    # -- slow or idle clients ---------------------------------------------
    def assert_closed_or_408(self, c, what):
        """Within GENEROUS seconds the proxy answers 408 or closes."""
        c.settimeout(GENEROUS)
        try:
            r = c.read_response()
        except ztlib.ConnectionClosed:
            return  # closed without a response: fine
        except socket.timeout:
            self.fail("%s: connection still open after %ss" % (what, GENEROUS))
        except (ConnectionError, ssl.SSLError, OSError):
            return
        self.assertEqual(r.status, 408, "%s: %r" % (what, r))

    def test_slow_header_times_out(self):
        before = len(self.up.heads())
        with self.conn() as c:
            c.send(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n")
            self.assert_closed_or_408(c, "incomplete head")
        self.assert_not_forwarded(before, "slow-header")

    def test_slow_header_trickle_times_out(self):
        # Bytes keep coming, but the head is never complete: the header
        # timeout counts from the first byte, not from the last one.
        with self.conn() as c:
            c.send(b"GET /trickle HTTP/1.1\r\nHost: app.test\r\n")
            deadline = time.monotonic() + GENEROUS
            closed = False
            while time.monotonic() < deadline:
                try:
                    c.send(b"X-A: b\r\n")
                except (ConnectionError, ssl.SSLError, OSError):
                    closed = True
                    break
                data, closed = c.read_until_close(timeout=0.3)
                if closed or data:
                    if data and not data.startswith(b"HTTP/1.1 408"):
                        # 431 (too many headers) would also end it; but the
                        # header limit is far (20 fields at 3/s > 1 s timeout)
                        self.assertRegex(data[:12], rb"HTTP/1\.[01] (408|431)")
                    closed = True
                    break
            self.assertTrue(closed, "a trickled head was not cut off")

    def test_handshake_timeout(self):
        # TCP connected, TLS never started.
        with ztlib.connect_plain(self.port, timeout=GENEROUS) as c:
            try:
                data, closed = c.read_until_close(timeout=GENEROUS)
            except OSError:
                closed = True
            self.assertTrue(closed, "a connection that never starts TLS is still open")

    def test_idle_connection_closed(self):
        with self.conn() as c:
            self.assert_closed_or_408(c, "idle connection")

    def test_idle_after_request_closed(self):
        with self.conn() as c:
            c.send(build_request("GET", "/first"))
            self.assertEqual(c.read_response().status, 200)
            self.assert_closed_or_408(c, "idle keep-alive connection")

    def test_slow_body_times_out(self):
        with self.conn() as c:
            c.send(build_request("POST", "/upload", [("Content-Length", "1000")]) + b"x" * 10)
            c.settimeout(GENEROUS)
            try:
                r = c.read_response()
                self.assertIn(r.status, (408, 400, 504), r)
            except (ztlib.ConnectionClosed, ConnectionError, ssl.SSLError):
                pass
            except socket.timeout:
                self.fail("slow body: connection still open after %ss" % GENEROUS)
        self.sentinel("slow-body")
        self.assertFalse([e for e in self.up.complete() if e["target"] == "/upload"
                          and e["body_length"] == 1000],
                         "the upstream recorded a complete body that was never sent")

    # -- routing ----------------------------------------------------------
    def test_404_unknown_host(self):
        before = len(self.up.heads())
        r = self.get("/echo", host="unknown.test", server_hostname="app.test")
        self.assertIn(r.status, (404, 421), r)
        self.assert_not_forwarded(before, "unknown-host")

    # -- body size limit ---------------------------------------------------
    def test_413_content_length_over_limit(self):
        before = len(self.up.heads())
        r = self.req("POST", "/upload", body=b"x" * 1025, host="small.test")
        self.assertEqual(r.status, 413, r)
        self.assert_not_forwarded(before, "413-cl")

    def test_content_length_at_limit_ok(self):
        r = self.req("POST", "/upload", body=b"y" * 1024, host="small.test")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["length"], 1024)

    def test_413_chunked_over_limit(self):
        with self.conn(server_hostname="small.test") as c:
            c.send(build_request("POST", "/upload", [("Transfer-Encoding", "chunked")],
                                 host="small.test"))
            status = None
            try:
                for _ in range(8):
                    c.send(b"200\r\n" + b"z" * 512 + b"\r\n")
                c.send(b"0\r\n\r\n")
            except (ConnectionError, ssl.SSLError, OSError):
                pass
            c.settimeout(GENEROUS)
            try:
                status = c.read_response().status
            except (ztlib.ConnectionClosed, ConnectionError, ssl.SSLError, OSError):
                status = None
            self.assertEqual(status, 413)
            data, closed = c.read_until_close(timeout=GENEROUS)
            self.assertTrue(closed, "connection not closed after a chunked 413")
        self.sentinel("413-chunked")
        self.assertFalse([e for e in self.up.complete() if e["target"] == "/upload"
                          and e["body_length"] > 1024],
                         "the upstream received a complete over-limit body")

    def test_chunked_at_limit_ok(self):
        body = b"c" * 1024
        raw = build_request("POST", "/upload", [("Transfer-Encoding", "chunked")],
                            host="small.test") + b"400\r\n" + body + b"\r\n0\r\n\r\n"
        with self.conn(server_hostname="small.test") as c:
            c.send(raw)
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["length"], 1024)

    # -- head limits --------------------------------------------------------
    def test_431_header_size(self):
        before = len(self.up.heads())
        r = self.get("/big-head", [("X-Big", "a" * 5000)])
        self.assertEqual(r.status, 431, r)
        self.assert_not_forwarded(before, "431-size")

    def test_header_size_below_limit_ok(self):
        r = self.get("/echo", [("X-Big", "a" * 2500)])
        self.assertEqual(r.status, 200, r)

    def test_431_header_count(self):
        before = len(self.up.heads())
        r = self.get("/many", [("X-H-%d" % i, "v") for i in range(25)])
        self.assertEqual(r.status, 431, r)
        self.assert_not_forwarded(before, "431-count")

    def test_header_count_at_limit_ok(self):
        # Host + 19 = 20 fields
        r = self.get("/echo", [("X-H-%d" % i, "v") for i in range(19)])
        self.assertEqual(r.status, 200, r)

    def test_414_request_line(self):
        before = len(self.up.heads())
        r = self.get("/" + "a" * 1100)
        self.assertEqual(r.status, 414, r)
        self.assert_not_forwarded(before, "414")

    def test_request_line_below_limit_ok(self):
        r = self.get("/" + "b" * 900)
        self.assertEqual(r.status, 200, r)

    # -- malformed upstream responses ----------------------------------------
    def test_malformed_upstream_response_is_502(self):
        for kind in ("cl_te", "dup_cl", "bare_lf", "garbage"):
            with self.subTest(kind=kind):
                r = self.get("/bad?kind=%s" % kind)
                self.assertEqual(r.status, 502, r)

    def test_bad_chunk_from_upstream_not_passed_as_complete(self):
        # The head is already on its way when the bad chunk arrives: the
        # proxy may answer 502, or must cut the response short; it must not
        # hand the client a cleanly terminated response.
        with self.conn() as c:
            c.send(build_request("GET", "/bad?kind=bad_chunk"))
            try:
                r = c.read_response()
            except (ztlib.ConnectionClosed, ConnectionError, ssl.SSLError, ValueError):
                return
            self.assertEqual(r.status, 502, r)


class ConnectionLimitTest(ProxyTestCase):
    """limits.connections: open client connections per worker; beyond it new
    connections are closed."""

    @classmethod
    def config_extra(cls):
        return {"workers": 1, "limits": {"connections": 3}}

    def test_connection_limit(self):
        held = []
        try:
            for i in range(3):
                c = self.conn()
                c.send(build_request("GET", "/held-%d" % i))
                self.assertEqual(c.read_response().status, 200)
                held.append(c)
            refused, detail = ztlib.is_refused(self.port, self.pki, "good", timeout=GENEROUS)
            self.assertTrue(refused, "a 4th connection was served: %s" % detail)
            held.pop().close()
            # a slot is free again (bounded wait: the close must be noticed)
            def served():
                try:
                    return self.get("/after-limit", timeout=5).status == 200
                except (ztlib.ConnectionClosed, ConnectionError, ssl.SSLError, OSError):
                    return False
            ztlib.wait_until(served, GENEROUS, interval=0.2, what="a free connection slot")
        finally:
            for c in held:
                c.close()


class UpstreamDiesTest(ProxyTestCase):
    """The upstream goes away while the proxy runs: 502, and no hang."""

    def test_upstream_stopped_gives_502(self):
        self.assertEqual(self.get("/").status, 200)
        self.up.stop()
        r = self.get("/")
        self.assertIn(r.status, (502, 504), r)
        self.assertTrue(self.proxy.alive())


if __name__ == "__main__":
    ztlib.main()
