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

    def _records_in_one_segment(self, requests, finished_too):
        """Handshake through memory BIOs, then each of requests in a TLS
        record of its own, all handed to the kernel in one send (with the
        client's Finished when finished_too): the proxy's first read gets
        several records at once. Returns the plaintext read until every
        response arrived (or the proxy stopped answering)."""
        ctx = client_context(self.pki, "good")
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname=DEFAULT_HOST)
        try:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    data = out.read()
                    if data:
                        sock.sendall(data)
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise AssertionError("closed during the handshake")
                    inc.write(chunk)
            if not finished_too:
                sock.sendall(out.read())
                time.sleep(0.2)  # the Finished is taken on its own first
            for raw in requests:
                obj.write(raw)  # one record each
            burst = out.read()
            sock.sendall(burst)
            got = b""
            while got.count(b"HTTP/1.1 200 ") < len(requests):
                try:
                    got += obj.read(65536)
                    continue
                except ssl.SSLWantReadError:
                    pass
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                inc.write(chunk)
            return got
        finally:
            sock.close()

    def test_several_records_in_one_read(self):
        # the proxy's TLS layer reads ahead: records that arrive together
        # are all answered, none waits for more bytes from the client
        reqs = [build_request("GET", "/echo?rec=%d" % i) for i in range(3)]
        got = self._records_in_one_segment(reqs, finished_too=False)
        self.assertEqual(got.count(b"HTTP/1.1 200 "), 3, got[-300:])
        for i in range(3):
            self.assertIn(b"rec=%d" % i, got)

    def test_request_with_the_finished_message(self):
        # a TLS 1.3 client sends its Finished and its first request(s)
        # together: the handshake's read takes the request records too
        reqs = [build_request("GET", "/echo?first=%d" % i) for i in range(2)]
        got = self._records_in_one_segment(reqs, finished_too=True)
        self.assertEqual(got.count(b"HTTP/1.1 200 "), 2, got[-300:])
        self.assertIn(b"first=0", got)
        self.assertIn(b"first=1", got)

    def test_body_records_arrive_together(self):
        # a POST whose body spans several records, all sent at once
        body = b"b" * 70000
        req = build_request("POST", "/echo?post=1", body=body)
        got = self._records_in_one_segment([req[:30000], req[30000:]], finished_too=False)
        self.assertEqual(got.count(b"HTTP/1.1 200 "), 1, got[-300:])
        self.assertIn(b"post=1", got)

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
