#!/usr/bin/env python3
"""Faults (issue 7) on the network side, with real processes:

  UpstreamKillTest   the upstream is killed (SIGKILL) and restarted on the
                     same port while a client sends requests continuously:
                     clean 502s during the outage, every answer within the
                     configured timeouts, and after the restart every request
                     succeeds again without restarting the proxy (keep-alive
                     connections pooled to the dead process are discarded).
  SlowClientsTest    300 clients sending their headers one byte per second do
                     not starve a good client and are all cut at
                     timeouts.header; clients that stop reading a large
                     response do not make the proxy buffer it (RSS stays far
                     below response size x clients) and are closed at
                     timeouts.send, while other clients are served.

test_errors.py already covers a single slow header, the upstream refusing
or stopped (502) and never answering (504); test_faults_flood.py has the
10,000 connections.
"""

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import ztlib
from ztlib import wait_until


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def sanitized(pid):
    """True when the proxy runs under AddressSanitizer: its allocator keeps
    freed memory in a quarantine (hundreds of MiB), so RSS says nothing
    about what the proxy holds; the memory bounds are checked on the normal
    build only."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def restart_upstream_same_port(up, timeout=30):
    """Start upstream.py again on up.port (the proxy's config names it)."""
    deadline = time.monotonic() + timeout
    while True:
        argv = [sys.executable, "-u", ztlib.UPSTREAM_PY, "--port", str(up.port),
                "--record", up.record, "--name", up.name]
        errf = open(up.log, "ab")
        up.proc = ztlib.spawn(argv, stdout=subprocess.PIPE, stderr=errf,
                              stdin=subprocess.DEVNULL)
        errf.close()
        line = ztlib._readline_timeout(up.proc.stdout, 10)
        if line.startswith(b"ready"):
            return
        ztlib.stop_process(up.proc)
        up.proc = None
        if time.monotonic() > deadline:
            raise AssertionError("upstream could not listen on %d again: %s" % (
                up.port, ztlib._tail(up.log)))
        time.sleep(0.2)


class Loader:
    """A thread sending GETs one after another, alternating a keep-alive
    connection and fresh connections; every outcome is recorded as
    (start, end, status or "exception: ...")."""

    def __init__(self, test):
        self.t = test
        self.results = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        ka = None
        i = 0
        while not self.stop.is_set():
            i += 1
            path = "/load-%d" % i
            t0 = time.monotonic()
            try:
                if i % 2:
                    if ka is None:
                        ka = self.t.conn(timeout=60)
                    ka.send(ztlib.build_request("GET", path))
                    r = ka.read_response()
                    if (r.header("connection") or "").lower() == "close":
                        ka.close()
                        ka = None
                else:
                    r = self.t.get(path, timeout=60)
                out = r.status
            except Exception as e:  # recorded, asserted on by the test
                out = "exception: %r" % e
                if ka is not None:
                    ka.close()
                    ka = None
            self.results.append((t0, time.monotonic(), out))
        if ka is not None:
            ka.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        self.thread.join(120)

    def since(self, t):
        return [r for r in self.results if r[0] >= t]

    def wait_count(self, n, after, what):
        wait_until(lambda: len(self.since(after)) >= n, 60, what=what)


class UpstreamKillTest(ztlib.ProxyTestCase):
    CONNECT = 2
    RESPONSE = 5

    @classmethod
    def config_extra(cls):
        return {"timeouts": {"upstream_connect": "%ds" % cls.CONNECT,
                             "upstream_response": "%ds" % cls.RESPONSE}}

    def fill_pools(self):
        """Concurrent keep-alive requests, so that each worker pools upstream
        connections."""
        conns = [self.conn() for _ in range(8)]
        try:
            for c in conns:
                c.send(ztlib.build_request("GET", "/warm"))
            for c in conns:
                self.assertEqual(c.read_response().status, 200)
        finally:
            for c in conns:
                c.close()

    def kill_upstream(self):
        os.kill(self.up.proc.pid, signal.SIGKILL)
        self.up.proc.wait(10)
        ztlib.stop_process(self.up.proc)

    def check_clean(self, results):
        bound = self.CONNECT + self.RESPONSE + 15
        for t0, t1, out in results:
            self.assertIn(out, (200, 502, 503, 504),
                          "not a clean answer while the upstream was killed: %r" % (out,))
            self.assertLess(t1 - t0, bound, "a request hung for %.1fs" % (t1 - t0))

    def test_upstream_killed_and_restarted(self):
        self.fill_pools()
        with Loader(self) as ld:
            ld.wait_count(10, 0, "requests before the kill")
            before = list(ld.results)
            self.assertTrue(all(r[2] == 200 for r in before), before)

            # 1. Killed and back at once: the pooled connections all point
            # to the dead process; nothing may fail once it is back.
            self.fill_pools()
            self.kill_upstream()
            restart_upstream_same_port(self.up)
            back1 = time.monotonic()
            ld.wait_count(20, back1, "requests after a quick restart")

            # 2. A real outage with traffic, then back.
            self.fill_pools()
            kill2 = time.monotonic()
            self.kill_upstream()
            down = time.monotonic()
            ld.wait_count(10, down, "requests during the outage")
            restart_upstream_same_port(self.up)
            back2 = time.monotonic()
            ld.wait_count(20, back2, "requests after the outage")
            results = list(ld.results)

        self.check_clean(results)
        after1 = [r for r in results if back1 <= r[0] and r[1] < kill2]
        self.assertTrue(after1 and all(r[2] == 200 for r in after1),
                        "after a restart of the upstream, requests failed: %r" % (
                            [r[2] for r in after1],))
        outage = [r for r in results if down <= r[0] and r[1] < back2]
        self.assertTrue(outage, "no request during the outage")
        self.assertIn(502, [r[2] for r in outage], [r[2] for r in outage])
        after2 = [r for r in results if r[0] >= back2]
        self.assertTrue(after2 and all(r[2] == 200 for r in after2),
                        "after the upstream came back, requests failed: %r" % (
                            [r[2] for r in after2],))
        self.assertTrue(self.proxy.alive())
        errs = [e for e in self.access_entries() if e.get("status") == 502]
        self.assertTrue(errs and all(e.get("error") for e in errs), errs[:3])


class SlowClientsTest(ztlib.ProxyTestCase):
    HEADER = 4
    SEND = 3

    @classmethod
    def config_extra(cls):
        return {"timeouts": {"header": "%ds" % cls.HEADER, "handshake": "5s",
                             "send": "%ds" % cls.SEND}}

    def test_many_one_byte_per_second_headers(self):
        n = 300
        slow = []
        for _ in range(n):
            slow.append(self.conn(timeout=30))
        req = ztlib.build_request("GET", "/trickle")
        closed = [False] * n
        good = []
        t_first = time.monotonic()
        for step in range(self.HEADER + 3):
            for i, c in enumerate(slow):
                if closed[i]:
                    continue
                try:
                    c.send(req[step:step + 1])
                except (OSError, ssl.SSLError):
                    closed[i] = True
            # a good client in between, each second
            r = self.get("/good-%d" % step, timeout=30)
            good.append(r.status)
            time.sleep(1)
        self.assertEqual(good, [200] * len(good), "a good client was starved")
        # Every trickling connection is answered 408 or closed, none is
        # forwarded, and none outlives timeouts.header by much.
        for i, c in enumerate(slow):
            if not closed[i]:
                data, was_closed = c.read_until_close(timeout=self.HEADER + 15)
                self.assertTrue(was_closed, "slow connection %d still open" % i)
                if data:
                    self.assertIn(b" 408 ", data.split(b"\r\n", 1)[0], data[:100])
            c.close()
        self.assertLess(time.monotonic() - t_first, 120)
        self.assertNotIn("/trickle", self.up.targets())
        self.assertTrue(self.proxy.alive())

    def test_clients_that_stop_reading(self):
        pid = self.proxy.proc.pid
        self.assertEqual(self.get("/warm").status, 200)
        base_rss = rss_kib(pid)
        base_fds = fd_count(pid)
        size = 64 * 1024 * 1024
        n = 16
        ctx = ztlib.client_context(self.pki, "good")
        stuck = []
        for i in range(n):
            raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.settimeout(30)
            raw.connect(("127.0.0.1", self.port))
            s = ctx.wrap_socket(raw, server_hostname=ztlib.DEFAULT_HOST)
            s.sendall(ztlib.build_request("GET", "/download?size=%d&n=%d" % (size, i)))
            stuck.append(s)
        # The upstream has started sending to all of them.
        wait_until(lambda: len([t for t in self.up.targets()
                                if t.startswith("/download?size=%d" % size)]) >= n, 30,
                   what="all downloads at the upstream")
        time.sleep(1)
        peak = rss_kib(pid)
        # Others are served meanwhile, a download included.
        self.assertEqual(self.get("/other").status, 200)
        with self.conn() as c:
            c.send(ztlib.build_request("GET", "/download?size=%d" % (4 * 1024 * 1024)))
            r = c.read_response(sink=lambda b: None)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body_length, 4 * 1024 * 1024)
            self.assertEqual(r.body_sha256, ztlib.pattern_sha256(4 * 1024 * 1024))
        grown_mib = (max(peak, rss_kib(pid)) - base_rss) / 1024
        sys.stderr.write("[stuck readers] RSS grew %.1f MiB for %d x %d MiB\n" % (
            grown_mib, n, size >> 20))
        if not sanitized(pid):
            self.assertLess(grown_mib, 64, "the proxy buffered %.0f MiB for %d clients that do "
                            "not read (%d MiB each would be unbounded)" % (grown_mib, n,
                                                                          size >> 20))
        # timeouts.send closes them (and their upstream connections).
        wait_until(lambda: fd_count(pid) <= base_fds + 4, self.SEND + 30, interval=0.5,
                   what="the proxy to close the stuck connections (fds %d, baseline %d)" % (
                       fd_count(pid), base_fds))
        entries = self.wait_access(lambda e: e.get("error") == "client send timeout", 15,
                                   what="a 'client send timeout' access log entry")
        self.assertTrue(entries)
        for s in stuck:
            s.close()
        self.assertEqual(self.get("/after").status, 200)
        self.assertTrue(self.proxy.alive())


if __name__ == "__main__":
    ztlib.main()
