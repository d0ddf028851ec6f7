"""Data plane I/O paths: reading stays on while a request is with the
upstream (pipelined requests wait in the input buffer, bounded), and the
response is written in the same loop turn."""

import time

from ztlib import ProxyTestCase, build_request


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
