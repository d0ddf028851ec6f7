#!/usr/bin/env python3
"""Shared state in Redis for replicas (issue 8, "Shared state"; docs/deploy.md
"Redis").

Real processes: Debian's redis-server on a free loopback port (no
persistence), two ztproxy replicas A and B sharing it (each with its own
state_dir, rules file and admin listener, the same session keys), the dev
IdP (replica A is the one registered with it), upstream.py. The replicas are
talked to directly: test_replicas.py covers HAProxy in front of them.

  01 a posture report sent through A changes the decision on B
  02 a device marked lost through A's admin API applies on B (delay printed)
  03 a rules put through A's admin API applies on B, in B's history
  04 a session revoked through A's admin API is refused on B
  05 Redis stopped: both keep serving from what they hold, the revocation
     stays in force, /readyz is 200 but "degraded"; a change on A during the
     outage is queued
     Redis back (empty: it had no persistence): both reconnect by
     themselves, the queued change reaches B, a new change propagates
  06 Redis paused (SIGSTOP): the PING finds it, /readyz degraded, requests
     served; SIGCONT: reconnected, a new change propagates
  07 a replica with the wrong password: degraded, logged (no password in
     the log), serving; SIGHUP with an edited redis section: kept, logged
  08 a replica started later, without an admin listener: the rules and the
     posture held in Redis apply when it connects

Redis requires a password (--requirepass): every connection AUTHs first.
"""

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import unittest
import urllib.parse

import ztlib
from idp import SSOTestCase, main
from ztlib import wait_until

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
TOKEN = "tok-redis-0123456789abcdef"
PASSWORD = "redis-pw-5f0c2a9e"
PROPAGATE = 2.0  # seconds: generous on this shared machine; the delay is printed

RULES = {
    "version": "r-1",
    "rules": [
        {"id": "open-trusted", "route": "open", "effect": "allow",
         "when": {"device_tier": {"at_least": "trusted"}}},
        {"id": "app-any", "route": "app", "effect": "allow", "when": {"path": {"prefix": "/"}}},
    ],
}

RULES2 = {
    "version": "r-2",
    "rules": [
        {"id": "open-nobody", "route": "open", "effect": "deny",
         "when": {"path": {"prefix": "/closed"}}},
        {"id": "open-trusted", "route": "open", "effect": "allow",
         "when": {"device_tier": {"at_least": "trusted"}}},
        {"id": "app-any", "route": "app", "effect": "allow", "when": {"path": {"prefix": "/"}}},
    ],
}


class Redis:
    def __init__(self, dir, port):
        self.dir = dir
        self.port = port
        self.log = os.path.join(dir, "redis.log")
        self.proc = None

    def start(self):
        logf = open(self.log, "ab")
        self.proc = ztlib.spawn([REDIS, "--port", str(self.port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", self.dir,
                                 "--requirepass", PASSWORD],
                                stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        wait_until(lambda: self.proc.poll() is not None or ztlib.port_accepts(self.port), 20,
                   what="redis-server listening")
        if self.proc.poll() is not None:
            raise RuntimeError("redis-server exited: %s" % open(self.log).read())
        return self

    def stop(self):
        ztlib.stop_process(self.proc, timeout=10)
        self.proc = None

    def cmd(self, *args):
        """AUTH, then one command over RESP; returns the raw reply bytes
        (for checks): "+OK\\r\\n" then the command's reply."""
        import socket
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        try:
            out = b""
            for cmd in (("AUTH", PASSWORD), args):
                out += b"*%d\r\n" % len(cmd)
                for a in cmd:
                    a = a.encode() if isinstance(a, str) else a
                    out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            data = b""
            s.settimeout(2)
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    if data.endswith(b"\r\n"):
                        s.settimeout(0.3)
            except socket.timeout:
                pass
            return data
        finally:
            s.close()


class Replica:
    """One ztproxy replica in its own folder (config, stderr, state)."""

    def __init__(self, dir, port, admin_port):
        self.dir = dir
        self.port = port
        self.admin_port = admin_port
        self.proxy = None
        os.makedirs(dir, exist_ok=True)

    def start(self, cfg):
        path = ztlib.write_config(self.dir, cfg)
        self.proxy = ztlib.Proxy(self.dir, path, self.port).start(timeout=20)
        if "admin" in cfg:
            wait_until(lambda: ztlib.port_accepts(self.admin_port), 20,
                       what="the admin listener")
        return self

    def api(self, method, path, body=None, pki=None):
        st, out, _ = ztlib.admin_call(self.admin_port, pki.ca, method, path, body=body,
                                      token=TOKEN)
        return st, out

class RedisSharedStateTest(SSOTestCase):

    @classmethod
    def routes(cls):
        up = cls.up.url
        return [
            {"name": "open", "host": "open.test", "upstream": up, "auth": {"mode": "none"}},
            {"name": "app", "host": "app.test", "upstream": up, "auth": {"mode": "any"}},
        ]

    @classmethod
    def replica_config(cls, name, port, admin_port):
        # B names Redis by host name: resolved asynchronously (evdns) before
        # every connection attempt.
        host = "127.0.0.1" if name == "a" else "localhost"
        t = cls.tmp
        ident = cls.identity()
        ident["providers"][0]["client_secret_file"] = os.path.join(t, "idp-secret")
        ident["session"]["keys"] = os.path.join(t, "session-keys.json")  # shared
        ident["assertion"]["keys_dir"] = os.path.join(t, "assertion-keys")
        rules = os.path.join(t, "rules-%s.json" % name)
        if not os.path.exists(rules):
            ztlib.write_atomic(rules, RULES)
        return ztlib.base_config(
            cls.pki, port, cls.routes(), os.path.join(t, "access-%s.log" % name),
            state_dir=os.path.join(t, "state-%s" % name), identity=ident,
            device_trust={"inventory": {"file": os.path.join(t, "inventory.json"),
                                        "max_stale": "1h"},
                          "posture": {"rate_limit_per_minute": 60}},
            policy={"rules": rules, "audit_log": "off"},
            admin={"listen": "127.0.0.1:%d" % admin_port,
                   "token_file": os.path.join(t, "admin.tokens")},
            redis={"address": "%s:%d" % (host, cls.redis.port), "prefix": "zt-test:",
                   "connect_timeout": "1s", "password_file": cls.pw_file(name)})

    @classmethod
    def pw_file(cls, name, password=PASSWORD):
        path = os.path.join(cls.tmp, "redis-%s.pw" % name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(password + "\n")
        return path

    @classmethod
    def start_proxy(cls, cfg_update=None):
        t = cls.tmp
        if not hasattr(cls, "redis"):
            cls.redis = Redis(t, ztlib.free_port()).start()
            ztlib.write_atomic(os.path.join(t, "inventory.json"), [
                ztlib.inventory_record("good", owner="alice@corp.example"),
                ztlib.inventory_record("good2", owner="bob@corp.example")])
            tokens = os.path.join(t, "admin.tokens")
            with open(tokens, "w") as f:
                f.write("ops:%s\n" % TOKEN)
            os.chmod(tokens, 0o600)
            cls.pki.device("good2")
        # A: cls.port (the IdP's registration names it), in cls.tmp itself.
        cls.a = Replica(os.path.join(t, "a"), cls.port, ztlib.free_port())
        cls.a.start(cls.replica_config("a", cls.port, cls.a.admin_port))
        cls.proxy = cls.a.proxy  # SSOTestCase stops it and dumps its log
        cls.b = Replica(os.path.join(t, "b"), ztlib.free_port(), ztlib.free_port())
        cls.b.start(cls.replica_config("b", cls.b.port, cls.b.admin_port))
        for r in (cls.a, cls.b):
            wait_until(lambda r=r: cls.readyz(r)[1].get("redis", {}).get("connected"), 20,
                       what="replica connected to redis")

    @classmethod
    def tearDownClass(cls):
        try:
            b = getattr(cls, "b", None)
            if b is not None and b.proxy is not None:
                rc = b.proxy.stop()
                rep = b.proxy.sanitizer_report()
                if rep:
                    raise AssertionError("replica B's sanitizer reported: %s" % rep[:5])
                if rc not in (0, None):
                    raise AssertionError("replica B exited with %r" % rc)
        finally:
            try:
                if getattr(cls, "redis", None) is not None and cls.redis.proc is not None:
                    cls.redis.stop()
            finally:
                super().tearDownClass()

    # ---------------------------------------------------------------- helpers
    @classmethod
    def readyz(cls, replica):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cls.pki.ca)
        ctx.check_hostname = False
        c = http.client.HTTPSConnection("127.0.0.1", replica.admin_port, timeout=30, context=ctx)
        try:
            c.request("GET", "/readyz")
            r = c.getresponse()
            return r.status, json.loads(r.read())
        finally:
            c.close()

    def send(self, replica, host="open.test", device="good", path=None, cookies=None):
        hl = [("Accept", "application/json")]
        if cookies:
            hl.append(("Cookie", "; ".join("%s=%s" % kv for kv in cookies.items())))
        return ztlib.http_request(replica.port, "GET", path or self.unique("r"), hl,
                                  pki=self.pki, device=device,
                                  host="%s:%d" % (host, replica.port), server_hostname=host)

    def until(self, pred, what):
        """Poll until pred() within PROPAGATE s; returns the measured delay."""
        t0 = time.monotonic()
        wait_until(pred, PROPAGATE, interval=0.01, what=what)
        dt = time.monotonic() - t0
        print("\n  %s: %.0f ms" % (what, dt * 1000), flush=True)
        return dt

    def post_posture(self, replica, device, **over):
        r = ztlib.post_posture(replica.port, self.pki, device, ztlib.posture_report(**over))
        self.assertEqual(r.status, 200, r)

    BAD = dict(disk_encryption=False, firewall=False, screen_lock=False, auto_updates=False,
               days_since_patch=400)

    # ---------------------------------------------------------------- tests
    def test_01_posture_through_a_changes_b(self):
        self.post_posture(self.a, "good")
        self.until(lambda: self.send(self.b).status == 200, "good posture via A allowed on B")
        self.post_posture(self.a, "good", **self.BAD)
        self.assertEqual(self.send(self.a).status, 403)
        self.until(lambda: self.send(self.b).status == 403, "bad posture via A denied on B")
        st, dev = self.b.api("GET", "/api/v1/devices/good", pki=self.pki)
        self.assertEqual(st, 200, dev)
        self.assertTrue(dev["failing"], dev)
        # B holds it in its own store: persisted in B's state_dir too
        with open(os.path.join(self.tmp, "state-b", "posture.log")) as f:
            self.assertIn('"disk_encryption":false', f.read().replace(" ", ""))
        # and Redis holds the latest report per device
        self.assertIn(b"good", self.redis.cmd("HKEYS", "zt-test:posture"))
        self.post_posture(self.a, "good")
        self.until(lambda: self.send(self.b).status == 200, "good posture again on B")

    def test_02_lost_through_a_applies_on_b(self):
        self.post_posture(self.b, "good2")
        self.assertEqual(self.send(self.b, device="good2").status, 200)
        st, body = self.a.api("PUT", "/api/v1/devices/good2/status",
                              {"status": "lost", "comment": "left in a taxi"}, pki=self.pki)
        self.assertEqual(st, 200, body)
        self.assertEqual(self.send(self.a, device="good2").status, 403)
        self.until(lambda: self.send(self.b, device="good2").status == 403,
                   "device lost via A refused on B")
        st, dev = self.b.api("GET", "/api/v1/devices/good2", pki=self.pki)
        self.assertEqual((dev["status"], dev["override"]), ("lost", True), dev)
        self.assertEqual(self.redis.cmd("HGET", "zt-test:overrides", "good2"),
                         b"+OK\r\n$4\r\nlost\r\n")
        st, body = self.a.api("PUT", "/api/v1/devices/good2/status", {"status": None},
                              pki=self.pki)
        self.assertEqual(st, 200, body)
        self.until(lambda: self.send(self.b, device="good2").status == 200,
                   "override cleared via A on B")

    def test_03_rules_put_through_a_apply_on_b(self):
        self.post_posture(self.a, "good")
        self.until(lambda: self.send(self.b, path="/closed/x").status == 200, "posture on B")
        st, body = self.a.api("PUT", "/api/v1/rules",
                              {"document": RULES2, "comment": "close /closed"}, pki=self.pki)
        self.assertEqual(st, 200, body)
        self.assertEqual(self.send(self.a, path="/closed/x").status, 403)
        self.until(lambda: self.send(self.b, path="/closed/y").status == 403,
                   "rules put via A live on B")
        self.assertEqual(self.send(self.b, path="/open-still").status, 200)
        st, live = self.b.api("GET", "/api/v1/rules", pki=self.pki)
        self.assertEqual(st, 200, live)
        self.assertEqual(live["rules_version"], "r-2")
        self.assertEqual(live["comment"], "close /closed")
        self.assertEqual(live["author"], "token:ops (via redis)")
        with open(os.path.join(self.tmp, "rules-b.json")) as f:
            self.assertEqual(json.load(f)["version"], "r-2")
        # A's own history is not touched by its own message coming back
        st, hist = self.a.api("GET", "/api/v1/rules/history", pki=self.pki)
        self.assertEqual([v["author"] for v in hist["versions"]].count("token:ops (via redis)"),
                         0, hist)

    def test_04_revocation_through_a_refused_on_b(self):
        self.next_second()
        login = self.login(user="bob", device="good2")
        cookies = self.session_cookies(login["session"])
        self.post_posture(self.b, "good2")
        r = self.send(self.b, host="app.test", device="good2", cookies=cookies)
        self.assertEqual(r.status, 200, "the session (shared keys) works on B: %r" % r)
        r = self.send(self.a, host="app.test", device="good2", cookies=cookies,
                      path="/.zt/whoami")
        sub = r.json()["user"]["subject"]
        st, body = self.a.api("POST", "/api/v1/sessions/revoke", {"user": sub}, pki=self.pki)
        self.assertEqual((st, body), (200, {"revoked": True, "user": sub}))
        self.until(lambda: self.send(self.b, host="app.test", device="good2",
                                     cookies=cookies).status in (302, 401),
                   "session revoked via A refused on B")
        with open(os.path.join(self.tmp, "state-b", "revocations.log")) as f:
            self.assertIn(sub, f.read())
        type(self).revoked_cookies = cookies

    def test_04b_backchannel_logout_on_a_refused_on_b(self):
        """The IdP sends its back-channel logout to one replica (the load
        balancer picks it); the user's sessions must end on every replica."""
        self.next_second()
        login = self.login(user="carol", device="good")
        cookies = self.session_cookies(login["session"])
        r = self.send(self.b, host="app.test", device="good", cookies=cookies)
        self.assertEqual(r.status, 200, "carol's session works on B first: %r" % r)
        tok = self.idp.mint(claims={"sub": "carol", "events": {
            "http://schemas.openid.net/event/backchannel-logout": {}}},
            header={"typ": "logout+jwt"})
        body = ("logout_token=" + urllib.parse.quote(tok)).encode()
        r = self.visit("/.zt/backchannel-logout", method="POST", body=body,
                       headers=[("Content-Type", "application/x-www-form-urlencoded")],
                       device="idp-backchannel")
        self.assertEqual(r.status, 200, r)
        self.until(lambda: self.send(self.b, host="app.test", device="good",
                                     cookies=cookies).status in (302, 401),
                   "back-channel logout via A refused on B")
        # B applied the same scoped revocation (the user at that provider),
        # not a wider one
        with open(os.path.join(self.tmp, "state-b", "revocations.log")) as f:
            lines = [l.split() for l in f if "carol" in l]
        self.assertTrue(lines and all(l[0] == "puser" and l[-1] == "carol" for l in lines),
                        lines)

    def test_04c_metrics(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.pki.ca)
        ctx.check_hostname = False
        c = http.client.HTTPSConnection("127.0.0.1", self.b.admin_port, timeout=30, context=ctx)
        try:
            c.request("GET", "/metrics")
            r = c.getresponse()
            text = r.read().decode()
        finally:
            c.close()
        self.assertEqual(r.status, 200)
        vals = dict(l.rsplit(" ", 1) for l in text.splitlines()
                    if l.startswith("ztproxy_redis_"))
        self.assertEqual(vals.get("ztproxy_redis_connected"), "1", text)
        # the earlier tests' changes made on A were applied on B
        self.assertGreater(int(vals["ztproxy_redis_received_total"]), 0, text)
        self.assertEqual(vals.get('ztproxy_redis_writes_total{result="dropped"}'), "0", text)

    def test_05_redis_down_then_back(self):
        if not hasattr(type(self), "revoked_cookies"):
            self.test_04_revocation_through_a_refused_on_b()
        cookies = type(self).revoked_cookies
        self.post_posture(self.a, "good")
        self.until(lambda: self.send(self.b).status == 200, "posture on B")
        off_a, off_b = self.a.proxy.stderr_size(), self.b.proxy.stderr_size()

        self.redis.stop()
        for r, off in ((self.a, off_a), (self.b, off_b)):
            r.proxy.wait_log(off, lambda t: "connection lost" in t, timeout=20,
                             what="the log says Redis is gone")
            wait_until(lambda r=r: self.readyz(r)[1].get("degraded") is True, 20,
                       what="readyz degraded")
            st, body = self.readyz(r)
            self.assertEqual(st, 200, body)  # ready: serving from its own state
            self.assertTrue(body["ready"], body)
            self.assertFalse(body["redis"]["connected"], body)
            self.assertIn("redis unreachable", body["degraded_reasons"][0])
        # both keep serving with what they hold
        for r in (self.a, self.b):
            self.assertEqual(self.send(r).status, 200)
            self.assertIn(self.send(r, host="app.test", device="good2", cookies=cookies).status,
                          (302, 401), "a revocation seen before the outage stays in force")
        # a change on A during the outage: applied on A, queued for the others
        st, body = self.a.api("PUT", "/api/v1/devices/good/status", {"status": "stolen"},
                              pki=self.pki)
        self.assertEqual(st, 200, body)
        self.assertEqual(self.send(self.a).status, 403)
        self.assertEqual(self.send(self.b).status, 200, "B cannot know yet")
        self.assertGreaterEqual(self.readyz(self.a)[1]["redis"]["queued"], 1)
        self.assertTrue(self.a.proxy.alive() and self.b.proxy.alive())

        # Redis back (empty): both reconnect by themselves; the queued change
        # is flushed and reaches B; a new change propagates.
        off_a, off_b = self.a.proxy.stderr_size(), self.b.proxy.stderr_size()
        self.redis.start()
        for r, off in ((self.a, off_a), (self.b, off_b)):
            r.proxy.wait_log(off, lambda t: "reconnected" in t, timeout=30,
                             what="the log says Redis is back")
            wait_until(lambda r=r: self.readyz(r)[1]["redis"]["connected"], 20,
                       what="readyz connected again")
            self.assertNotIn("degraded_reasons", self.readyz(r)[1])
        wait_until(lambda: self.send(self.b).status == 403, 20,
                   what="the change queued during the outage reaches B")
        self.assertEqual(self.readyz(self.a)[1]["redis"]["queued"], 0)
        st, body = self.a.api("PUT", "/api/v1/devices/good/status", {"status": None},
                              pki=self.pki)
        self.assertEqual(st, 200, body)
        self.until(lambda: self.send(self.b).status == 200, "a change after reconnect on B")
        for r in (self.a, self.b):
            self.assertTrue(r.proxy.alive())
            self.assertEqual(r.proxy.sanitizer_report(), [])

    def test_06_redis_paused(self):
        """A Redis that stops answering without closing (SIGSTOP: a hung
        server, a network that drops packets) is found by the PING and
        reconnected; nothing blocks meanwhile."""
        self.post_posture(self.a, "good")
        self.until(lambda: self.send(self.b).status == 200, "posture on B")
        off = self.b.proxy.stderr_size()
        os.kill(self.redis.proc.pid, signal.SIGSTOP)
        try:
            self.b.proxy.wait_log(off, lambda t: "no answer" in t, timeout=20,
                                  what="B notices Redis does not answer")
            for r in (self.a, self.b):
                wait_until(lambda r=r: self.readyz(r)[1].get("degraded") is True, 20,
                           what="readyz degraded while Redis is paused")
                self.assertEqual(self.send(r).status, 200)
        finally:
            os.kill(self.redis.proc.pid, signal.SIGCONT)
        for r in (self.a, self.b):
            wait_until(lambda r=r: self.readyz(r)[1]["redis"]["connected"], 30,
                       what="connected again after SIGCONT")
        st, body = self.a.api("PUT", "/api/v1/devices/good/status", {"status": "retired"},
                              pki=self.pki)
        self.assertEqual(st, 200, body)
        self.until(lambda: self.send(self.b).status == 403, "a change after the pause on B")
        st, body = self.a.api("PUT", "/api/v1/devices/good/status", {"status": None},
                              pki=self.pki)
        self.assertEqual(st, 200, body)
        self.until(lambda: self.send(self.b).status == 200, "cleared again on B")

    def test_07_wrong_password_and_sighup(self):
        """A replica with the wrong password: refused by Redis, says so in
        /readyz and the log, keeps serving; SIGHUP with an edited redis
        section keeps the running connection and says a restart is needed."""
        c = Replica(os.path.join(self.tmp, "c"), ztlib.free_port(), ztlib.free_port())
        cfg = self.replica_config("c", c.port, c.admin_port)
        cfg["redis"]["password_file"] = self.pw_file("c", "not-the-password")
        c.start(cfg)
        try:
            wait_until(lambda: "AUTH" in self.readyz(c)[1]["redis"]["last_error"], 20,
                       what="readyz names the refused AUTH")
            st, body = self.readyz(c)
            self.assertEqual(st, 200, body)
            self.assertTrue(body["degraded"], body)
            self.assertFalse(body["redis"]["connected"], body)
            c.proxy.wait_log(0, lambda t: "AUTH refused" in t, what="AUTH refused logged")
            self.assertNotIn("not-the-password", c.proxy.stderr())
            self.assertNotIn(PASSWORD, c.proxy.stderr())
            self.post_posture(c, "good")
            self.assertEqual(self.send(c).status, 200, "serves from its own state")
            # not sent to a Redis that refused the AUTH: kept for later
            red = self.readyz(c)[1]["redis"]
            self.assertGreaterEqual(red["queued"], 1, red)
            self.assertEqual(red["published"], 0, red)
        finally:
            self.assertEqual(c.proxy.stop(), 0)
            self.assertEqual(c.proxy.sanitizer_report(), [])

        off = self.b.proxy.stderr_size()
        cfg = self.replica_config("b", self.b.port, self.b.admin_port)
        cfg["redis"]["prefix"] = "other:"
        ztlib.write_config(self.b.dir, cfg)
        self.b.proxy.sighup()
        self.b.proxy.wait_log(off, lambda t: "applies at the next restart" in t,
                              what="the changed section is logged")
        self.b.proxy.wait_log(off, lambda t: "reload done" in t, what="the reload")
        self.assertTrue(self.readyz(self.b)[1]["redis"]["connected"])
        self.post_posture(self.a, "good", **self.BAD)
        self.until(lambda: self.send(self.b).status == 403, "still sharing after SIGHUP on B")
        ztlib.write_config(self.b.dir, self.replica_config("b", self.b.port, self.b.admin_port))
        self.post_posture(self.a, "good")

    def test_08_late_replica_without_admin_reads_the_state(self):
        """A replica started later, without an admin listener (so without a
        rules history), reads the state back on connect: the rules put
        through A and the posture held in Redis apply at once."""
        doc = dict(RULES2, version="r-3")
        st, body = self.a.api("PUT", "/api/v1/rules", {"document": doc, "comment": "r-3"},
                              pki=self.pki)
        self.assertEqual(st, 200, body)
        self.post_posture(self.a, "good")
        d = Replica(os.path.join(self.tmp, "d"), ztlib.free_port(), ztlib.free_port())
        cfg = self.replica_config("d", d.port, d.admin_port)
        del cfg["admin"]
        d.start(cfg)
        try:
            # no posture was ever sent to D: it comes from Redis
            wait_until(lambda: self.send(d, path="/open-d").status == 200, 20,
                       what="D allows good with the posture read from Redis")
            wait_until(lambda: self.send(d, path="/closed/d").status == 403, 20,
                       what="D runs the rules put through A before it started")
            with open(os.path.join(self.tmp, "rules-d.json")) as f:
                self.assertEqual(json.load(f)["version"], "r-3")
            d.proxy.wait_log(0, lambda t: "installed rules" in t, what="the log says so")
        finally:
            self.assertEqual(d.proxy.stop(), 0)
            self.assertEqual(d.proxy.sanitizer_report(), [])


if __name__ == "__main__":
    main()
