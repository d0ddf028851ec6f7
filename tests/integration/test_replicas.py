"""Replicas behind HAProxy with the PROXY protocol v2 (issue 8; docs/deploy.md).

Real processes: Debian's haproxy running deploy/haproxy/haproxy.cfg with test
addresses (checked with haproxy -c first), two ztproxy replicas whose
listener takes a PROXY v2 header from 127.0.0.2 only (HAProxy's "source"),
a real upstream, device certificates, a GeoIP database, rules that name
client addresses and countries, and per-replica access and audit logs.
Clients connect from other loopback addresses (127.0.0.3, .5, .6) so the
client address each layer sees can be told apart from HAProxy's.

  01 the address rules, GeoIP, logs and X-Forwarded-For see is the client's
  02 a forged PROXY header (untrusted peer), no header, a broken header: refused
  03 SIGHUP on both replicas under keep-alive load: no connection dropped
  04 SIGTERM drain, exactly: idle keep-alive closed between requests, the
     request in flight answered with "Connection: close", a fresh connection
     still served, new connections refused, exit 0
  05 SIGKILL one replica under load: only requests begun before HAProxy marks
     it down may fail
  06 rolling restart (SIGTERM, drain, start, ready; A then B) under load:
     no failed request

The load client's retry rule (docs/deploy.md "Zero-downtime restarts"): a
request is retried once, on a new connection, only when it was sent on a
reused keep-alive connection that closed without a single byte of response
(what browsers and HTTP client libraries do). Anything else is a failure.

The health checks here are plain TCP checks of the replicas' TLS port: the
/readyz check of the shipped file needs the admin listener (docs/admin-api.md),
which this test does not configure; the test swaps that one line and says so.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ztlib  # noqa: E402
from ztlib import wait_until  # noqa: E402

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
DEPLOY_CFG = os.path.join(ztlib.SOURCE_DIR, "deploy", "haproxy", "haproxy.cfg")
LB_ADDR = "127.0.0.2"      # HAProxy's source address: the only trusted proxy
CLIENT = "127.0.0.3"       # an ordinary client (GeoIP: DE)
CLIENT_BLOCKED = "127.0.0.5"  # denied by an "ip" rule
CLIENT_KP = "127.0.0.6"    # denied by a "country" rule (GeoIP: KP)
PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def pp2_header(src, sport, dst="127.0.0.1", dport=443, cmd=0x21):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport)
    return PP2_SIG + bytes([cmd, 0x11]) + struct.pack(">H", len(body)) + body


def rules_doc():
    return {"version": "replicas-1", "rules": [
        {"id": "block-kp", "effect": "deny", "when": {"country": "KP"}},
        {"id": "block-five", "effect": "deny", "when": {"ip": CLIENT_BLOCKED}},
        {"id": "allow-local", "effect": "allow", "when": {"ip": "127.0.0.0/8"}},
    ]}


def haproxy_config(fe_port, servers, stats_sock):
    """deploy/haproxy/haproxy.cfg with test addresses. Every edit must apply
    exactly once: a change of the shipped file that breaks one fails here."""
    text = open(DEPLOY_CFG, encoding="utf-8").read()

    def sub(pattern, repl, count=1):
        nonlocal text
        new, n = re.subn(pattern, repl, text, flags=re.M)
        if n != count:
            raise AssertionError("deploy/haproxy/haproxy.cfg: %r matched %d times, expected %d"
                                 % (pattern, n, count))
        text = new

    sub(r"^(\s*)log /dev/log local0 info$", r"\1log stderr format raw local0 info")
    sub(r"^\s*chroot .*\n", "")
    sub(r"^\s*user haproxy\n", "")
    sub(r"^\s*group haproxy\n", "")
    sub(r"^(\s*stats socket) /run/haproxy/admin.sock ", r"\1 %s " % stats_sock)
    sub(r"^(\s*bind) :443$", r"\1 127.0.0.1:%d" % fe_port)
    # 20000 connections need 40000 descriptors: more than a test box allows.
    sub(r"^(\s*maxconn) 20000$", r"\1 1000", count=2)
    # The shipped health check (/readyz on each replica's admin listener),
    # with the test's admin ports (all replicas share 127.0.0.1 here) and a
    # shorter interval.
    sub(r" check port 9443 check-ssl verify none inter 1s ", " check check-ssl verify none "
        "inter 200ms ")
    sub(r"^(\s*default-server send-proxy-v2 .*)$", r"\1 source %s" % LB_ADDR)
    sub(r"^\s*server zt-\w+ 10\.0\.0\.\d+:443\n", "", count=3)
    text = text.rstrip("\n") + "\n" + "".join(
        "    server %s 127.0.0.1:%d port %d\n" % (name, port, admin_port)
        for name, port, admin_port in servers)
    return text


class HAProxy:
    def __init__(self, dir, fe_port, servers):
        self.dir = dir
        self.port = fe_port
        self.sock = os.path.join(dir, "haproxy.sock")
        self.cfg = os.path.join(dir, "haproxy.cfg")
        self.log = os.path.join(dir, "haproxy.log")
        with open(self.cfg, "w", encoding="utf-8") as f:
            f.write(haproxy_config(fe_port, servers, self.sock))
        self.proc = None

    def check(self):
        r = subprocess.run([HAPROXY, "-c", "-f", self.cfg], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        return r.returncode, r.stdout.decode(errors="replace")

    def start(self):
        logf = open(self.log, "ab")
        self.proc = ztlib.spawn([HAPROXY, "-db", "-f", self.cfg], stdout=logf, stderr=logf,
                                stdin=subprocess.DEVNULL)
        logf.close()
        wait_until(lambda: self.proc.poll() is not None or ztlib.port_accepts(self.port), 20,
                   what="haproxy listening")
        if self.proc.poll() is not None:
            raise RuntimeError("haproxy exited: %s" % open(self.log, errors="replace").read())

    def stop(self):
        ztlib.stop_process(self.proc, timeout=5)
        self.proc = None

    def cmd(self, line):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(self.sock)
            s.sendall(line.encode() + b"\n")
            out = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                out += d
            return out.decode(errors="replace")
        finally:
            s.close()

    def status(self):
        """{server name: "UP"/"DOWN"/...} of backend ztproxy."""
        lines = self.cmd("show stat").splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        cols = lines[0][2:].split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(cols, line.split(",")))
            if row.get("pxname") == "ztproxy" and row.get("svname") not in ("BACKEND", None):
                out[row["svname"]] = row.get("status", "")
        return out

    def wait_status(self, name, want, timeout=30):
        wait_until(lambda: self.status().get(name, "").startswith(want), timeout,
                   interval=0.1, what="haproxy: %s %s (now %r)" % (name, want, self.status()))


class Replica:
    """A ztproxy replica in its own directory (config, stderr, logs)."""

    def __init__(self, name, root, pki, upstream_url, shared):
        self.name = name
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = ztlib.free_port()
        self.admin_port = ztlib.free_port()
        self.access_log = os.path.join(self.dir, "access.log")
        self.audit_log = os.path.join(self.dir, "audit.log")
        cfg = ztlib.base_config(pki, self.port,
                                [{"name": "app", "host": "app.test", "upstream": upstream_url}],
                                self.access_log)
        cfg["listen"] = [{"address": "127.0.0.1:%d" % self.port, "proxy_protocol": True}]
        # shutdown_delay: /readyz says 503 for this long before the
        # listeners close, longer than HAProxy needs to mark it down
        # (inter 200ms x fall 2).
        cfg["timeouts"] = {"shutdown_grace": "15s", "header": "3s", "shutdown_delay": "1500ms"}
        cfg["admin"] = {"listen": "127.0.0.1:%d" % self.admin_port}
        cfg["policy"] = {"rules": shared["rules"], "geoip": shared["geoip"],
                         "trusted_proxies": [LB_ADDR + "/32"], "audit_log": self.audit_log,
                         "deny_details": True}
        self.cfg_path = ztlib.write_config(self.dir, cfg)
        self.proxy = ztlib.Proxy(self.dir, self.cfg_path, self.port)

    def start(self):
        off = self.proxy.stderr_size()
        self.proxy.start(wait=False)
        # Not port_accepts(): a probe from 127.0.0.1 is an untrusted peer.
        wait_until(lambda: not self.proxy.alive() or "listening on" in
                   self.proxy.stderr_since(off), 20, what="replica %s listening" % self.name)
        if not self.proxy.alive():
            raise RuntimeError("replica %s exited:\n%s" % (self.name, self.proxy.stderr()))
        return self

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proxy.proc is None:
            return None
        rc = ztlib.stop_process(self.proxy.proc, timeout=timeout, sig=sig)
        self.proxy.proc = None
        return rc


def readyz(replica):
    """GET /readyz on the replica's admin listener: (status, JSON)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", replica.admin_port, timeout=10, context=ctx)
    try:
        c.request("GET", "/readyz")
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


class Load:
    """Client threads from CLIENT through HAProxy: GET /load/... in a
    bounded loop until stopped. keepalive: one connection per thread, reused;
    else a new connection per request. The retry rule is in the module doc."""

    def __init__(self, port, pki, threads=3, keepalive=False, max_requests=20000):
        self.port = port
        self.ctx = ztlib.client_context(pki, "good")
        self.nthreads = threads
        self.keepalive = keepalive
        self.max_requests = max_requests
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.fail_started = []  # time.monotonic() when each failed request began
        self.retries = 0
        self.connects = 0
        self.conn_close = 0  # responses that said "Connection: close"
        self.threads = []

    def _connect(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=30,
                                       source_address=(CLIENT, 0))
        try:
            s = self.ctx.wrap_socket(raw, server_hostname="app.test")
        except BaseException:
            raw.close()
            raise
        with self.lock:
            self.connects += 1
        return ztlib.HTTPConn(s, 30)

    def _once(self, c, path):
        """(response or None, got_any_byte, error)."""
        try:
            c.send(ztlib.build_request("GET", path))
            return c.read_response(), True, None
        except ztlib.ConnectionClosed as e:
            return None, bool(e.partial), e
        except (ssl.SSLError, OSError) as e:
            return None, bool(c.buf), e

    def _run(self, tid):
        c, reused, n = None, False, 0
        while not self.stop_ev.is_set() and n < self.max_requests:
            n += 1
            path = "/load/%d/%d" % (tid, n)
            began = time.monotonic()
            try:
                if c is None:
                    c, reused = self._connect(), False
                r, got, err = self._once(c, path)
                if r is None and reused and not got:
                    # Reused and closed without a byte: retry once, new connection.
                    c.close()
                    with self.lock:
                        self.retries += 1
                    c, reused = self._connect(), False
                    r, got, err = self._once(c, path)
            except Exception as e:  # noqa: BLE001 - every error is a failure, counted
                r, err = None, e
            if r is None or r.status != 200:
                with self.lock:
                    self.failures.append((path, repr(err) if r is None else "status %d" % r.status))
                    self.fail_started.append(began)
                if c is not None:
                    c.close()
                c = None
                continue
            with self.lock:
                self.ok += 1
            closing = (r.header("connection") or "").lower() == "close"
            if closing:
                with self.lock:
                    self.conn_close += 1
            if closing or not self.keepalive:
                c.close()
                c = None
            else:
                reused = True
        if c is not None:
            c.close()

    def start(self):
        for i in range(self.nthreads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def count(self):
        with self.lock:
            return self.ok + len(self.failures)

    def wait_more(self, n, timeout=120):
        """Wait until n more requests have completed (ok or failed)."""
        target = self.count() + n
        wait_until(lambda: self.count() >= target or not any(t.is_alive() for t in self.threads),
                   timeout, interval=0.05, what="%d more requests" % n)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(120)
        return self

    def summary(self):
        return ("ok %d, failed %d, retried %d, connections %d, Connection: close %d; failures: %r"
                % (self.ok, len(self.failures), self.retries, self.connects, self.conn_close,
                   self.failures[:10]))


class ReplicasTest(unittest.TestCase):
    proxy = None  # for ztlib's log dump on failure: the replica A

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(HAPROXY):
            raise AssertionError("haproxy is not installed (Debian: haproxy; tools/setup.sh)")
        why = ztlib.geoip_writer_unavailable()
        if why:
            raise AssertionError("cannot build the test GeoIP database: " + why)
        cls.tmp = ztlib.make_tmpdir("zt-replicas-")
        cls.replicas = []
        cls.haproxy = None
        cls.up = None
        try:
            cls.pki = ztlib.make_pki(os.path.join(cls.tmp, "pki"))
            cls.up = ztlib.Upstream(cls.tmp, "main").start()
            shared = {"rules": os.path.join(cls.tmp, "rules.json"),
                      "geoip": os.path.join(cls.tmp, "geo.mmdb")}
            ztlib.write_atomic(shared["rules"], rules_doc())
            ztlib.make_geoip(shared["geoip"], "%s/32=DE" % CLIENT, "%s/32=KP" % CLIENT_KP,
                             "%s/32=US" % LB_ADDR, "127.0.0.7/32=FR")
            cls.a = Replica("a", cls.tmp, cls.pki, cls.up.url, shared).start()
            cls.b = Replica("b", cls.tmp, cls.pki, cls.up.url, shared).start()
            cls.replicas = [cls.a, cls.b]
            cls.proxy = cls.a.proxy
            cls.haproxy = HAProxy(cls.tmp, ztlib.free_port(),
                                  [("zt-a", cls.a.port, cls.a.admin_port),
                                   ("zt-b", cls.b.port, cls.b.admin_port)])
            rc, out = cls.haproxy.check()
            if rc != 0:
                raise AssertionError("haproxy -c refused the test config:\n" + out)
            cls.haproxy.start()
            cls.haproxy.wait_status("zt-a", "UP")
            cls.haproxy.wait_status("zt-b", "UP")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        reports = []
        if getattr(cls, "haproxy", None) is not None and cls.haproxy.proc is not None:
            cls.haproxy.stop()
        for r in getattr(cls, "replicas", []):
            r.stop()
            reports += ["%s: %s" % (r.name, l) for l in r.proxy.sanitizer_report()]
        if getattr(cls, "up", None) is not None:
            cls.up.stop()
        ztlib.remove_tmpdir(cls.tmp)
        if reports:
            raise AssertionError("a replica's sanitizer reported: %s" % reports[:5])

    # ---------------------------------------------------------------- helpers
    def via_lb(self, path, src=CLIENT, headers=None):
        return ztlib.http_request(self.haproxy.port, "GET", path, headers, pki=self.pki,
                                  source_address=(src, 0))

    def logged(self, replica_list, pred, reader, what, timeout=10):
        def find():
            for r in replica_list:
                for e in reader(r):
                    if pred(e):
                        return r, e
            return None
        return wait_until(find, timeout, what=what)

    def access(self, path, timeout=10):
        return self.logged(self.replicas, lambda e: e.get("path") == path,
                           lambda r: ztlib.read_access_log(r.access_log),
                           "the access log line of %s" % path, timeout)

    def audit(self, path, timeout=10):
        return self.logged(self.replicas, lambda e: e is not None and e.get("path") == path,
                           lambda r: [o for _n, _raw, o in ztlib.read_audit_log(r.audit_log)],
                           "the audit line of %s" % path, timeout)

    def direct(self, replica, prefix=b"", src="127.0.0.1", device="good"):
        """A TLS connection straight to a replica from src, after sending
        prefix (a PROXY header) on the raw socket. Returns an HTTPConn."""
        raw = socket.create_connection(("127.0.0.1", replica.port), timeout=15,
                                       source_address=(src, 0))
        try:
            if prefix:
                raw.sendall(prefix)
            s = ztlib.client_context(self.pki, device).wrap_socket(raw,
                                                                   server_hostname="app.test")
        except BaseException:
            raw.close()
            raise
        return ztlib.HTTPConn(s, 15)

    def refused(self, replica, prefix=b"", src="127.0.0.1"):
        """True when no HTTP response ever comes back."""
        try:
            c = self.direct(replica, prefix, src)
        except (ssl.SSLError, OSError):
            return True
        try:
            c.send(ztlib.build_request("GET", "/must-not-arrive"))
            c.read_response()
            return False
        except (ztlib.ConnectionClosed, ssl.SSLError, OSError):
            return True
        finally:
            c.close()

    # ---------------------------------------------------------------- tests
    def test_01_the_client_address_is_the_real_one(self):
        path = "/real-client"
        r = self.via_lb(path, headers=[("X-Forwarded-For", "198.51.100.66")])
        self.assertEqual(r.status, 200, r)
        head = wait_until(lambda: [h for h in self.up.heads() if h.get("target") == path], 10,
                          what="the request at the upstream")[0]
        # The upstream: the client's address, not HAProxy's, not the forged one.
        self.assertEqual(ztlib.header_values(head, "x-forwarded-for"), [CLIENT], head)
        _rep, acc = self.access(path)
        self.assertTrue(acc["client"].startswith(CLIENT + ":"), acc)
        _rep, aud = self.audit(path)
        self.assertEqual(aud["client"], CLIENT, aud)
        self.assertEqual(aud["country"], "DE", aud)
        self.assertEqual(aud["rule"], "allow-local", aud)

        # The rules decide on the client's address and country too.
        for src, rule, path in ((CLIENT_BLOCKED, "block-five", "/blocked-ip"),
                                (CLIENT_KP, "block-kp", "/blocked-country")):
            r = self.via_lb(path, src=src)
            self.assertEqual(r.status, 403, r)
            _rep, aud = self.audit(path)
            self.assertEqual((aud["client"], aud["effect"], aud["rule"]), (src, "deny", rule), aud)
        self.assertNotIn(path, self.up.targets())

        # Both replicas served (leastconn over sequential requests spreads them).
        for i in range(6):
            self.assertEqual(self.via_lb("/spread-%d" % i).status, 200)
        served = set()
        for i in range(6):
            rep, e = self.access("/spread-%d" % i)
            served.add(rep.name)
            self.assertTrue(e["client"].startswith(CLIENT + ":"), e)
        self.assertEqual(served, {"a", "b"})

    def test_02_forged_or_missing_headers_are_refused(self):
        a = self.a
        # The positive control: HAProxy's address with a good header works,
        # and the header's source becomes the client.
        c = self.direct(a, pp2_header("127.0.0.7", 40007), src=LB_ADDR)
        c.send(ztlib.build_request("GET", "/direct-good"))
        r = c.read_response()
        c.close()
        self.assertEqual(r.status, 200, r)
        _rep, aud = self.audit("/direct-good")
        self.assertEqual((aud["client"], aud["country"]), ("127.0.0.7", "FR"), aud)

        cases = [
            ("forged header from an untrusted peer", pp2_header("127.0.0.7", 40008),
             "127.0.0.1", "connection from 127.0.0.1:"),
            ("no header from an untrusted peer", b"", CLIENT, "connection from %s:" % CLIENT),
            ("no header from the trusted proxy", b"", LB_ADDR, "a TLS handshake record"),
            ("a v1 header from the trusted proxy", b"PROXY TCP4 127.0.0.7 127.0.0.1 1 443\r\n",
             LB_ADDR, "PROXY protocol v1 text header"),
            ("a truncated header from the trusted proxy", pp2_header("127.0.0.7", 1)[:20],
             LB_ADDR, None),
        ]
        for what, prefix, src, log in cases:
            with self.subTest(what):
                off = a.proxy.stderr_size()
                if log is None:
                    # 20 bytes of a 28-byte header, then nothing: the
                    # handshake timeout (10s) ends it, no response ever.
                    s = socket.create_connection(("127.0.0.1", a.port), timeout=30,
                                                 source_address=(src, 0))
                    s.sendall(prefix)
                    s.settimeout(30)
                    data = s.recv(100)
                    s.close()
                    self.assertEqual(data, b"")
                    a.proxy.wait_log(off, lambda l: "no complete header within" in l,
                                     what="the timeout line")
                    continue
                self.assertTrue(self.refused(a, prefix, src), what)
                line = a.proxy.wait_log(off, lambda l: "proxy protocol: connection from" in l
                                        and "refused" in l, what="the refusal line")
                self.assertIn(log, line)
        self.assertNotIn("/must-not-arrive", self.up.targets())
        # Nothing of that reached the logs as a request.
        for rep in self.replicas:
            for e in ztlib.read_access_log(rep.access_log):
                self.assertNotEqual(e.get("path"), "/must-not-arrive")

    def test_03_sighup_under_load_drops_no_connection(self):
        load = Load(self.haproxy.port, self.pki, threads=3, keepalive=True).start()
        try:
            load.wait_more(30)
            for rep in self.replicas * 2:
                off = rep.proxy.stderr_size()
                rep.proxy.sighup()
                rep.proxy.wait_log(off, lambda l: "reload done" in l, timeout=20,
                                   what="reload done on %s" % rep.name)
                load.wait_more(20)
        finally:
            load.stop()
        sys.stderr.write("[sighup] %s\n" % load.summary())
        self.assertEqual(load.failures, [], load.summary())
        self.assertEqual(load.retries, 0, load.summary())
        # One connection per thread, never closed: keep-alive survived.
        self.assertEqual(load.connects, 3, load.summary())
        self.assertGreater(load.ok, 100, load.summary())

    def test_04_sigterm_drains_exactly(self):
        a = self.a
        self.haproxy.cmd("set server ztproxy/zt-a state maint")  # only our connections
        try:
            idle = self.direct(a, pp2_header("127.0.0.7", 41001), src=LB_ADDR)
            idle.send(ztlib.build_request("GET", "/drain-idle"))
            self.assertEqual(idle.read_response().status, 200)
            busy = self.direct(a, pp2_header("127.0.0.7", 41002), src=LB_ADDR)
            busy.send(ztlib.build_request("GET", "/slow?ms=2000"))
            wait_until(lambda: "/slow?ms=2000" in self.up.targets(), 10,
                       what="the slow request at the upstream")
            fresh = self.direct(a, pp2_header("127.0.0.7", 41003), src=LB_ADDR)
            silent = self.direct(a, pp2_header("127.0.0.7", 41004), src=LB_ADDR)

            off = a.proxy.stderr_size()
            self.assertEqual(readyz(a)[0], 200)
            os.kill(a.proxy.proc.pid, signal.SIGTERM)
            a.proxy.wait_log(off, lambda l: "SIGTERM" in l, what="the SIGTERM line")
            # timeouts.shutdown_delay: not ready at once, still serving
            st, body = readyz(a)
            self.assertEqual(st, 503, body)
            self.assertTrue(any("shutting down" in r for r in body["reasons"]), body)
            self.assertTrue(ztlib.port_accepts(a.port), "the listener stays open during the delay")
            # A second SIGTERM skips the rest of the delay: the drain starts.
            os.kill(a.proxy.proc.pid, signal.SIGTERM)
            a.proxy.wait_log(off, lambda l: "not waiting for the shutdown delay" in l,
                             what="the second SIGTERM")
            # The idle keep-alive connection is closed, between requests.
            data, closed = idle.read_until_close(10)
            self.assertEqual((data, closed), (b"", True))
            # New connections are refused: the listener is closed.
            wait_until(lambda: not ztlib.port_accepts(a.port), 10, what="listener closed")
            # The fresh connection's first request is served, and says close.
            fresh.send(ztlib.build_request("GET", "/drain-fresh"))
            r = fresh.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("connection"), "close", r)
            # The request in flight completes, with Connection: close.
            r = busy.read_response()
            self.assertEqual((r.status, r.header("connection")), (200, "close"), r)
            for c in (busy, fresh):
                self.assertEqual(c.read_until_close(10), (b"", True))
                c.close()
            idle.close()
            # A fresh connection that never sends a request is closed after
            # timeouts.header (3s), not kept until shutdown_grace (15s) ends.
            self.assertEqual(silent.read_until_close(30), (b"", True))
            silent.close()
            self.assertEqual(a.proxy.proc.wait(30), 0)
            a.proxy.proc = None
            self.assertNotIn("grace period over", a.proxy.stderr_since(off))
        finally:
            if not a.proxy.alive():
                a.start()
            self.haproxy.cmd("set server ztproxy/zt-a state ready")
        self.haproxy.wait_status("zt-a", "UP")

    def test_05_kill_one_replica_under_load(self):
        threads = 4
        load = Load(self.haproxy.port, self.pki, threads=threads, keepalive=False).start()
        try:
            load.wait_more(40)
            self.b.stop(sig=signal.SIGKILL)
            self.haproxy.wait_status("zt-b", "DOWN")
            down_seen = time.monotonic()
            load.wait_more(80)
        finally:
            load.stop()
            self.b.start()
        sys.stderr.write("[kill] %s\n" % load.summary())
        # Only requests that met the killed replica may fail: those in flight,
        # and those whose connection reached B's listener while the killed
        # process was being torn down (the kernel still completes handshakes
        # into its backlog, then resets them: HAProxy cannot redispatch an
        # established connection). So a thread may lose more than one, but
        # none once HAProxy has marked B down - and B is gone for good.
        late = [f for f, t in zip(load.failures, load.fail_started) if t >= down_seen]
        self.assertEqual(late, [], load.summary())
        self.assertLessEqual(len(load.failures), 3 * threads, load.summary())
        self.assertGreater(load.ok, 100, load.summary())
        self.haproxy.wait_status("zt-b", "UP")
        # After the kill everything went to A, and succeeded.
        self.assertEqual(self.via_lb("/after-kill").status, 200)

    def test_06_rolling_restart_under_load_fails_nothing(self):
        ka = Load(self.haproxy.port, self.pki, threads=3, keepalive=True).start()
        nc = Load(self.haproxy.port, self.pki, threads=2, keepalive=False).start()
        try:
            ka.wait_more(30)
            for rep, name in ((self.a, "zt-a"), (self.b, "zt-b")):
                off = rep.proxy.stderr_size()
                rc = rep.stop(sig=signal.SIGTERM, timeout=30)
                self.assertEqual(rc, 0, rep.proxy.stderr_since(off))
                self.assertIn("SIGTERM", rep.proxy.stderr_since(off))
                ka.wait_more(20)
                rep.start()
                self.haproxy.wait_status(name, "UP")
                ka.wait_more(30)
                nc.wait_more(10)
        finally:
            ka.stop()
            nc.stop()
        sys.stderr.write("[rolling keep-alive] %s\n[rolling new-conn] %s\n"
                         % (ka.summary(), nc.summary()))
        self.assertEqual(ka.failures, [], ka.summary())
        self.assertEqual(nc.failures, [], nc.summary())
        self.assertEqual(nc.retries, 0)
        self.assertGreater(ka.ok + nc.ok, 150)
        # The keep-alive clients did move: each replica's restart closed
        # their connections (cleanly, with a retry at most).
        self.assertGreater(ka.connects, 3, ka.summary())


if __name__ == "__main__":
    ztlib.main()
