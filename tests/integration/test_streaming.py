#!/usr/bin/env python3
"""Bodies streamed both ways (chunked, large, close-delimited), keep-alive,
pipelining, HEAD, Expect: 100-continue and WebSocket pass-through."""

import hashlib
import os
import threading

import ztlib
from ztlib import ProxyTestCase, build_request, pattern_sha256

MiB = 1024 * 1024
LARGE = 128 * MiB


def chunked_body(parts, ext=False):
    out = b""
    for i, p in enumerate(parts):
        out += b"%x%s\r\n%s\r\n" % (len(p), b";ext=1" if ext and i == 0 else b"", p)
    return out + b"0\r\n\r\n"


def _rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _is_sanitized(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"__asan_init" in data or b"__tsan_init" in data


class StreamingTest(ProxyTestCase):

    @classmethod
    def config_extra(cls):
        return {"limits": {"body_size": "1g"}}

    def test_chunked_upload(self):
        parts = [os.urandom(n) for n in (1, 100, 4096, 70000, 3)]
        data = b"".join(parts)
        raw = build_request("POST", "/upload", [("Transfer-Encoding", "chunked")]) + \
            chunked_body(parts, ext=True)
        with self.conn() as c:
            c.send(raw)
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"upstream": "main", "length": len(data),
                                    "sha256": hashlib.sha256(data).hexdigest()})

    def test_chunked_upload_with_trailer(self):
        data = b"hello, trailer"
        raw = build_request("POST", "/upload", [("Transfer-Encoding", "chunked")]) + \
            b"%x\r\n%s\r\n0\r\nX-Checksum: abc\r\n\r\n" % (len(data), data)
        with self.conn() as c:
            c.send(raw)
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["sha256"], hashlib.sha256(data).hexdigest())
            # the connection is still in sync afterwards
            c.send(build_request("GET", "/after-trailer"))
            self.assertEqual(c.read_response().status, 200)

    def test_chunked_upload_slow_pieces(self):
        # The body arrives in many small writes; the proxy must stream it.
        parts = [os.urandom(1000) for _ in range(50)]
        with self.conn() as c:
            c.send(build_request("PUT", "/upload", [("Transfer-Encoding", "chunked")]))
            for p in parts:
                c.send(b"%x\r\n%s\r\n" % (len(p), p))
            c.send(b"0\r\n\r\n")
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["sha256"], hashlib.sha256(b"".join(parts)).hexdigest())

    def test_chunked_download(self):
        size = 5 * MiB + 12345
        r = self.get("/download?size=%d&chunked=1" % size)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body_length, size)
        self.assertEqual(r.body_sha256, pattern_sha256(size))

    def test_close_delimited_download(self):
        # The upstream answers without Content-Length and closes: the proxy
        # must still deliver the exact body, framed for the client.
        size = 3 * MiB + 7
        r = self.get("/download?size=%d&close=1" % size)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body_length, size)
        self.assertEqual(r.body_sha256, pattern_sha256(size))

    def test_large_upload_content_length(self):
        with self.conn(timeout=120) as c:
            c.send(build_request("POST", "/upload", [("Content-Length", str(LARGE))]))
            for part in ztlib.pattern_chunks(LARGE, MiB):
                c.send(part)
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["length"], LARGE)
        self.assertEqual(r.json()["sha256"], pattern_sha256(LARGE))

    def test_large_upload_chunked(self):
        size = 64 * MiB
        with self.conn(timeout=120) as c:
            c.send(build_request("POST", "/upload", [("Transfer-Encoding", "chunked")]))
            for part in ztlib.pattern_chunks(size, MiB):
                c.send(b"%x\r\n" % len(part) + part + b"\r\n")
            c.send(b"0\r\n\r\n")
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["length"], size)
        self.assertEqual(r.json()["sha256"], pattern_sha256(size))

    def test_large_download(self):
        with self.conn(timeout=120) as c:
            c.send(build_request("GET", "/download?size=%d" % LARGE))
            r = c.read_response(sink=lambda b: None)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body_length, LARGE)
        self.assertEqual(r.body_sha256, pattern_sha256(LARGE))

    def test_large_download_chunked(self):
        size = 64 * MiB
        with self.conn(timeout=120) as c:
            c.send(build_request("GET", "/download?size=%d&chunked=1" % size))
            r = c.read_response(sink=lambda b: None)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body_length, size)
        self.assertEqual(r.body_sha256, pattern_sha256(size))

    def test_keepalive_reuse(self):
        with self.conn() as c:
            ids = set()
            for i in range(6):
                if i % 2:
                    body = os.urandom(1000 + i)
                    c.send(build_request("POST", "/upload", body=body))
                    r = c.read_response()
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.json()["sha256"], hashlib.sha256(body).hexdigest())
                else:
                    c.send(build_request("GET", "/echo?i=%d" % i))
                    r = c.read_response()
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(r.json()["query"], "i=%d" % i)
                self.assertNotEqual((r.header("connection") or "").lower(), "close")
                ids.add(r.header("x-zt-request-id"))
            self.assertEqual(len(ids), 6)

    def test_pipelining(self):
        body = b"pipelined body"
        raw = (build_request("GET", "/echo?n=1") +
               build_request("POST", "/upload", body=body) +
               build_request("GET", "/echo?n=3"))
        with self.conn() as c:
            c.send(raw)
            r1 = c.read_response()
            r2 = c.read_response()
            r3 = c.read_response()
        self.assertEqual((r1.status, r2.status, r3.status), (200, 200, 200))
        self.assertEqual(r1.json()["query"], "n=1")
        self.assertEqual(r2.json()["sha256"], hashlib.sha256(body).hexdigest())
        self.assertEqual(r3.json()["query"], "n=3")
        # one access log line per request
        for r in (r1, r2, r3):
            rid = r.header("x-zt-request-id")
            self.assertTrue(rid)
            self.wait_access(lambda e: e.get("request_id") == rid,
                             what="access log entry for %s" % rid)

    def test_pipelining_three_gets(self):
        raw = b"".join(build_request("GET", "/echo?p=%d" % i) for i in range(3))
        with self.conn() as c:
            c.send(raw)
            qs = [c.read_response().json()["query"] for _ in range(3)]
        self.assertEqual(qs, ["p=0", "p=1", "p=2"])

    def test_head_then_get(self):
        with self.conn() as c:
            c.send(build_request("HEAD", "/download?size=1000"))
            r = c.read_response(method="HEAD")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body_length, 0)
            c.send(build_request("GET", "/echo?after=head"))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["query"], "after=head")

    def test_204_then_get(self):
        with self.conn() as c:
            c.send(build_request("GET", "/status?code=204") + build_request("GET", "/echo?x=1"))
            r = c.read_response()
            self.assertEqual(r.status, 204)
            r = c.read_response()
            self.assertEqual(r.json()["query"], "x=1")

    def test_expect_100_continue(self):
        body = os.urandom(50000)
        with self.conn() as c:
            c.send(build_request("POST", "/upload",
                                 [("Expect", "100-continue"), ("Content-Length", str(len(body)))]))
            # Wait (bounded) for the interim response, as curl does; RFC 9110
            # lets a client send the body anyway if none comes.
            c.settimeout(5)
            got = None
            try:
                got = c.read_head()
            except Exception:
                pass
            c.settimeout(30)
            if got is not None and got[1] != 100:
                self.fail("expected 100 Continue or nothing, got %r" % (got,))
            c.send(body)
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["sha256"], hashlib.sha256(body).hexdigest())

    def test_request_sent_byte_by_byte(self):
        body = b"0123456789"
        raw = build_request("POST", "/upload", [("X-Slow", "yes")], body=body)
        with self.conn() as c:
            for i in range(len(raw)):
                c.send(raw[i:i + 1])
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["sha256"], hashlib.sha256(body).hexdigest())

    def test_connection_close_honoured(self):
        with self.conn() as c:
            c.send(build_request("GET", "/echo", [("Connection", "close")]))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertIn("close", (r.header("connection") or "").lower())
            rest, closed = c.read_until_close(timeout=10)
            self.assertEqual(rest, b"")
            self.assertTrue(closed, "connection not closed after Connection: close")

    def test_http10_request(self):
        with self.conn() as c:
            c.send(build_request("GET", "/echo", version="HTTP/1.0"))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["path"], "/echo")
            rest, closed = c.read_until_close(timeout=10)
            self.assertTrue(closed, "HTTP/1.0 connection without keep-alive not closed")

    def test_download_backpressure(self):
        # A client that stops reading must not make the proxy buffer the
        # whole response: its memory stays bounded (every direction has a
        # watermark). Not meaningful under a sanitizer (quarantine).
        if _is_sanitized(ztlib.ZTPROXY_BIN):
            self.skipTest("sanitizer build")
        size = 256 * MiB
        base = _rss(self.proxy.proc.pid)
        with self.conn(timeout=120) as c:
            c.send(build_request("GET", "/download?size=%d" % size))
            c.read_head()
            # Give the upstream time to push as much as the proxy accepts.
            import time
            peak = base
            for _ in range(30):
                time.sleep(0.1)
                peak = max(peak, _rss(self.proxy.proc.pid))
            self.assertLess(peak - base, 64 * MiB,
                            "proxy RSS grew by %d MiB for a client that does not read"
                            % ((peak - base) // MiB))
            h = hashlib.sha256()
            got = len(c.buf)
            h.update(c.buf)
            c.buf.clear()
            while got < size:
                data = c.sock.recv(1 << 20)
                if not data:
                    break
                h.update(data)
                got += len(data)
        self.assertEqual(got, size)
        self.assertEqual(h.hexdigest(), pattern_sha256(size))

    def test_upload_backpressure(self):
        # The upstream does not read the body for a few seconds: the proxy
        # must hold the client back rather than buffer the upload.
        if _is_sanitized(ztlib.ZTPROXY_BIN):
            self.skipTest("sanitizer build")
        size = 256 * MiB
        base = _rss(self.proxy.proc.pid)
        result = {}
        c = self.conn(timeout=120)

        def sender():
            try:
                c.send(build_request("POST", "/upload?pause=3",
                                     [("Content-Length", str(size))]))
                for part in ztlib.pattern_chunks(size, MiB):
                    c.send(part)
                result["resp"] = c.read_response()
            except Exception as e:  # noqa: BLE001
                result["error"] = e

        t = threading.Thread(target=sender)
        t.start()
        try:
            import time
            peak = base
            for _ in range(25):
                time.sleep(0.1)
                peak = max(peak, _rss(self.proxy.proc.pid))
            t.join(120)
        finally:
            c.close()
        self.assertFalse(t.is_alive(), "upload did not finish")
        self.assertNotIn("error", result)
        self.assertLess(peak - base, 64 * MiB,
                        "proxy RSS grew by %d MiB while the upstream did not read"
                        % ((peak - base) // MiB))
        r = result["resp"]
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["length"], size)
        self.assertEqual(r.json()["sha256"], pattern_sha256(size))

    def test_pipelining_order_with_slow_first(self):
        raw = (build_request("GET", "/slow?ms=700") + build_request("GET", "/echo?n=2") +
               build_request("GET", "/download?size=100000"))
        with self.conn() as c:
            c.send(raw)
            r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
        self.assertEqual(r1.body, b"slow from main\n")
        self.assertEqual(r2.json()["query"], "n=2")
        self.assertEqual(r3.body_sha256, pattern_sha256(100000))

    def test_parallel_connections(self):
        errors = []

        def worker(i):
            try:
                for j in range(5):
                    size = 100000 + i * 1000 + j
                    r = self.get("/download?size=%d" % size)
                    if r.status != 200 or r.body_sha256 != pattern_sha256(size):
                        errors.append((i, j, r.status))
            except Exception as e:  # noqa: BLE001
                errors.append((i, repr(e)))

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        self.assertEqual(errors, [])


class WebSocketTest(ProxyTestCase):

    @classmethod
    def routes(cls):
        return [{"name": "app", "host": "app.test", "upstream": cls.up.url},
                {"name": "nows", "host": "nows.test", "upstream": cls.up.url,
                 "websocket": False}]

    def test_websocket_echo(self):
        with self.conn() as c:
            r, key = ztlib.ws_handshake(c)
            self.assertEqual(r.status, 101, r)
            self.assertEqual((r.header("upgrade") or "").lower(), "websocket")
            self.assertEqual(r.header("sec-websocket-accept"), ztlib.ws_accept(key))
            ztlib.ws_send(c, 0x1, b"hello, websocket")
            self.assertEqual(ztlib.ws_recv(c), (True, 0x1, b"hello, websocket"))
            big = os.urandom(200000)
            ztlib.ws_send(c, 0x2, big)
            self.assertEqual(ztlib.ws_recv(c), (True, 0x2, big))
            mid = os.urandom(300)
            ztlib.ws_send(c, 0x2, mid)
            self.assertEqual(ztlib.ws_recv(c), (True, 0x2, mid))
            ztlib.ws_send(c, 0x9, b"ping")
            self.assertEqual(ztlib.ws_recv(c), (True, 0xA, b"ping"))
            ztlib.ws_send(c, 0x8, b"\x03\xe8bye")
            fin, op, payload = ztlib.ws_recv(c)
            self.assertEqual(op, 0x8)
            self.assertEqual(payload, b"\x03\xe8bye")
            data, closed = c.read_until_close(timeout=10)
            self.assertTrue(closed, "connection not closed after the websocket close")

    def test_websocket_upstream_sees_identity(self):
        before = len(self.up.heads())
        with self.conn() as c:
            r, key = ztlib.ws_handshake(c, extra=[("X-ZT-User", "spoof")])
            self.assertEqual(r.status, 101, r)
        heads = self.up.heads()[before:]
        ws = [h for h in heads if h["target"] == "/ws"]
        self.assertEqual(len(ws), 1)
        names = {n.lower(): v for n, v in ws[0]["headers"]}
        self.assertEqual(names.get("x-zt-device"), "good")
        self.assertNotIn("x-zt-user", names)
        self.assertEqual(names.get("upgrade", "").lower(), "websocket")

    def test_websocket_disabled_route(self):
        with self.conn(server_hostname="nows.test") as c:
            r, key = ztlib.ws_handshake(c, host="nows.test")
            self.assertNotEqual(r.status, 101, "websocket passed on a route with websocket false")


if __name__ == "__main__":
    ztlib.main()
