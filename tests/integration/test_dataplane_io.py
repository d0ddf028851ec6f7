"""Data plane I/O paths: reading stays on while a request is with the
upstream (pipelined requests wait in the input buffer, bounded), and the
response is written in the same loop turn."""

import socket
import ssl
import time

from ztlib import DEFAULT_HOST, ProxyTestCase, build_request, client_context


class DataPlaneIOTest(ProxyTestCase):
    def test_pipelined_request_arrives_while_upstream_answers(self):
        with self.conn() as c:
            c.send(build_request("GET", "/slow?ms=400"))
            time.sleep(0.15)  # the first request is with the upstream now
            c.send(build_request("GET", "/echo?n=2"))
            r1 = c.read_response()
            r2 = c.read_response()
            # the connection stays usable
            c.send(build_request("GET", "/echo?n=3"))
            r3 = c.read_response()
        self.assertEqual((r1.status, r2.status, r3.status), (200, 200, 200))
        self.assertEqual(r2.json()["query"], "n=2")
        self.assertEqual(r3.json()["query"], "n=3")
        # the upstream saw them one after the other, in order
        targets = [t for t in self.up.targets() if t.startswith(("/slow", "/echo?n="))]
        self.assertEqual(targets[-3:], ["/slow?ms=400", "/echo?n=2", "/echo?n=3"])

    def test_large_pipelined_burst_while_upstream_answers(self):
        # about 240 KiB of pipelined requests behind a slow one: more than
        # the proxy holds while a request is forwarded, so reading stops
        # and resumes; every request is answered, in order
        pad = "x" * 4000
        n = 60
        raw = build_request("GET", "/slow?ms=300") + b"".join(
            build_request("GET", "/echo?i=%d" % i, headers={"X-Pad": pad}) for i in range(n))
        with self.conn() as c:
            c.send(raw)
            first = c.read_response()
            got = [c.read_response().json()["query"] for _ in range(n)]
        self.assertEqual(first.status, 200)
        self.assertEqual(got, ["i=%d" % i for i in range(n)])
        self.assertTrue(self.proxy.alive())

    def _half_closed_exchange(self, raw):
        """Send raw, then close_notify (TLS half-close: the sending side is
        done), then read until the proxy closes. Returns the plaintext."""
        ctx = client_context(self.pki, "good")
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=15)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname=DEFAULT_HOST)

        def flush():
            data = out.read()
            if data:
                sock.sendall(data)

        def fill():
            data = sock.recv(65536)
            if not data:
                inc.write_eof()
                return False
            inc.write(data)
            return True

        try:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    flush()
                    if not fill():
                        raise AssertionError("closed during the handshake")
            flush()
            obj.write(raw)
            flush()
            try:
                obj.unwrap()  # sends close_notify; the peer's comes later
            except ssl.SSLWantReadError:
                pass
            flush()
            got = b""
            while True:
                try:
                    got += obj.read(65536)
                    continue
                except ssl.SSLWantReadError:
                    pass
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    break
                if not fill():
                    break
            return got
        finally:
            sock.close()

    def test_half_close_while_upstream_answers(self):
        # the client is done sending before the (slow) answer comes: it
        # still gets the whole response, then the connection closes
        got = self._half_closed_exchange(build_request("GET", "/slow?ms=300"))
        self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got[:100])
        self.assertIn(b"slow from", got)

    def test_many_sequential_requests_on_one_connection(self):
        with self.conn() as c:
            for i in range(200):
                c.send(build_request("GET", "/echo?k=%d" % i))
                r = c.read_response()
                self.assertEqual(r.status, 200)
                self.assertEqual(r.json()["query"], "k=%d" % i)


if __name__ == "__main__":
    import unittest

    unittest.main()
