#!/usr/bin/env python3
"""Access rules in the running proxy (issue 5; docs/policy.md "Operating
rules"): the live directory, GeoIP countries from the client address,
X-Forwarded-For only from trusted proxies, a broken rules file on reload,
monitor-mode rules, and the hash-chained audit log (ztctl audit verify).

Real processes: ztproxy with a "policy" section (rules.json, directory.json,
a GeoIP database written by geoip_writer.pl, trusted_proxies 127.0.0.5/32,
audit.log, deny_details), the dev IdP (node; bearer tokens from /dev/mint
and a browser login), upstream.py. Clients connect from 127.0.0.1,
127.0.0.2 (DE), 127.0.0.3 (KP) and 127.0.0.5 (the trusted proxy) by binding
their socket.

Routes:
  app    app.test    SSO (mode any)   allow group staff
  loose  loose.test  bearer           allow group staff
  admin  admin.test  bearer           allow group staff + auth_age 15m (step-up)
  open   open.test   no identity      deny country KP; allow 127.0.0.0/8;
                                      a monitor-mode deny on /monitored
  other  other.test  no identity      deny country KP or "unknown"; allow 127.0.0.0/8
"""

import json
import os
import re
import shutil
import subprocess
import time
import unittest

import ztlib
from idp import SSOTestCase, USERS, main
from ztlib import header_values, wait_until

ZEROS = "0" * 64
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def rules_doc(version, broken=False):
    rules = [
        {"id": "app-staff", "route": "app", "effect": "allow", "when": {"group": "staff"}},
        {"id": "loose-staff", "route": "loose", "effect": "allow", "when": {"group": "staff"}},
        {"id": "admin-fresh", "route": "admin", "effect": "allow",
         "when": {"all": [{"group": "staff"}, {"auth_age": {"max": "15m"}}]}},
        {"id": "block-kp", "route": "open", "effect": "deny", "when": {"country": "KP"},
         "deny_message": "Access from your location is not permitted."},
        {"id": "watch-monitored", "route": "open", "effect": "deny", "mode": "monitor",
         "when": {"path": {"prefix": "/monitored"}}},
        {"id": "open-local", "route": "open", "effect": "allow", "when": {"ip": "127.0.0.0/8"}},
        {"id": "block-unplaced", "route": "other", "effect": "deny",
         "when": {"country": {"in": ["KP", "unknown"]}}},
        {"id": "other-local", "route": "other", "effect": "allow", "when": {"ip": "127.0.0.0/8"}},
    ]
    if broken:
        # Would lift the KP block if it went live; refused for the misspelt group.
        rules = [r for r in rules if r["id"] != "block-kp"]
        rules[1] = dict(rules[1], when={"group": "stafff"})
    return {"version": version, "rules": rules}


def directory_doc(version, alice_groups=("eng",), dave_groups=("eng",), erin_groups=()):
    return {
        "version": version,
        "groups": {"staff": {}, "eng": {"member_of": ["staff"]},
                   "finance": {"member_of": ["staff"]}},
        "users": {
            "alice@corp.example": {"groups": list(alice_groups), "subject": "alice"},
            "bob@corp.example": {"groups": ["finance"]},
            "dave@corp.example": {"groups": list(dave_groups), "subject": "dave"},
            "erin@corp.example": {"groups": list(erin_groups), "subject": "erin"},
        },
    }


class PolicyTest(SSOTestCase):

    version = "p-1"

    @classmethod
    def routes(cls):
        up = cls.up.url
        return [
            {"name": "app", "host": "app.test", "upstream": up, "auth": {"mode": "any"},
             "forward_groups": "all"},
            {"name": "loose", "host": "loose.test", "upstream": up, "auth": {"mode": "bearer"}},
            {"name": "admin", "host": "admin.test", "upstream": up, "auth": {"mode": "bearer"}},
            {"name": "open", "host": "open.test", "upstream": up, "auth": {"mode": "none"}},
            {"name": "other", "host": "other.test", "upstream": up, "auth": {"mode": "none"}},
        ]

    @classmethod
    def config_extra(cls):
        cfg = super().config_extra()
        cfg["policy"] = {
            "rules": "rules.json",
            "directory": {"file": "directory.json"},
            "geoip": "geo.mmdb",
            "trusted_proxies": ["127.0.0.5/32"],
            "audit_log": "audit.log",
            "deny_details": True,
        }
        return cfg

    @classmethod
    def setUpClass(cls):
        why = ztlib.geoip_writer_unavailable()
        if why:
            raise RuntimeError("cannot build the test GeoIP database (run tools/setup.sh): " + why)
        super().setUpClass()

    @classmethod
    def start_proxy(cls, cfg_update=None):
        cls.rules_path = os.path.join(cls.tmp, "rules.json")
        cls.dir_path = os.path.join(cls.tmp, "directory.json")
        cls.audit_path = os.path.join(cls.tmp, "audit.log")
        if not os.path.exists(cls.rules_path):
            ztlib.write_atomic(cls.rules_path, rules_doc(cls.version))
            ztlib.write_atomic(cls.dir_path, directory_doc("d-1"))
            ztlib.make_geoip(os.path.join(cls.tmp, "geo.mmdb"),
                             "127.0.0.2/32=DE", "127.0.0.3/32=KP", "10.0.0.0/8=US:64500")
        super().start_proxy(cfg_update)

    # ---------------------------------------------------------------- helpers
    def send(self, host, path, src="127.0.0.1", headers=None, device="good", method="GET"):
        hl = [("Accept", "application/json")] + list(headers or [])
        return ztlib.http_request(self.port, method, path, hl, pki=self.pki, device=device,
                                  host="%s:%d" % (host, self.port), server_hostname=host,
                                  source_address=(src, 0))

    def bearer(self, sub, email, **claims):
        c = {"sub": sub, "email": email}
        c.update(claims)
        return self.idp.mint(claims=c)

    def call_bearer(self, token, host="loose.test", path=None):
        path = path or self.unique("bearer")
        return path, self.send(host, path, headers=[("Authorization", "Bearer " + token)])

    def request_id(self, r):
        rid = r.header("x-zt-request-id")
        if rid is None and r.status == 403:
            try:
                rid = r.json().get("request_id")
            except ValueError:
                pass
        self.assertTrue(rid, "no request id on %r" % r)
        return rid

    def audit_entry(self, rid, timeout=10):
        """The audit line of request rid: (line_number, raw, obj)."""
        def find():
            for n, raw, obj in ztlib.read_audit_log(self.audit_path):
                if obj is not None and obj.get("request_id") == rid:
                    return n, raw, obj
            return None
        return wait_until(find, timeout, interval=0.1,
                          what="the audit line of request %s in %s" % (rid, self.audit_path))

    def assert_forwarded(self, path, r, what=""):
        self.assertEqual(r.status, 200, "%s: %r" % (what, r))
        wait_until(lambda: self.upstream_saw(path), 10, what="%s at the upstream" % path)
        return self.upstream_heads(path)[0]

    def assert_denied(self, path, r, rule=None, what=""):
        self.assertEqual(r.status, 403, "%s: expected a deny: %r" % (what, r))
        doc = r.json()
        self.assertEqual(doc.get("error"), "access_denied", doc)
        self.assertTrue(doc.get("request_id"), doc)
        if rule is not None:
            self.assertEqual(doc.get("rule"), rule, "%s: %r" % (what, doc))
        self.assertIsInstance(doc.get("reasons"), list, doc)
        # order the upstream check behind a request that is forwarded
        p = self.unique("order")
        self.assert_forwarded(p, self.send("open.test", p, src="127.0.0.2"), "sentinel")
        self.assertFalse(self.upstream_saw(path), "%s: a denied request was forwarded" % what)
        return doc

    def ztctl(self, *args):
        return subprocess.run([ztlib.ZTCTL_BIN] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60, stdin=subprocess.DEVNULL)

    # ------------------------------------------------------------------ 1
    def test_01_group_removed_from_directory(self):
        dave = self.bearer("dave", "dave@corp.example")
        alice_tok = self.bearer("alice", USERS["alice"][1])
        path, r = self.call_bearer(dave)
        rec = self.assert_forwarded(path, r, "dave (eng -> staff) on loose")
        # loose forwards only the groups its rules name; app forwards all.
        self.assertEqual(header_values(rec, "x-zt-groups"), ["staff"], rec)
        self.assertEqual(header_values(rec, "x-zt-user"), ["dave@corp.example"], rec)
        # alice through a browser session on app (SSO).
        s = self.login("alice")["session"]
        p = self.unique("alice-session")
        r = self.visit(p, cookies=self.session_cookies(s))
        rec = self.assert_forwarded(p, r, "alice's session on app")
        self.assertEqual(header_values(rec, "x-zt-groups"), ["eng,staff"], rec)

        # The directory loses alice's and dave's memberships.
        ztlib.write_atomic(self.dir_path, directory_doc("d-2", alice_groups=(), dave_groups=()))

        def dave_denied():
            return self.call_bearer(dave)[1].status == 403
        wait_until(dave_denied, 15, interval=0.2,
                   what="dave denied after the directory dropped his groups")
        path, r = self.call_bearer(dave)
        doc = self.assert_denied(path, r, "default-deny", "dave without groups")
        self.assertIn("staff", " | ".join(doc["reasons"]), doc)
        # The same session cookie, no new login: denied now too.
        p = self.unique("alice-session-after")
        r = self.visit(p, cookies=self.session_cookies(s),
                       headers=[("Accept", "application/json")])
        self.assert_denied(p, r, "default-deny", "alice's existing session without groups")
        _n, _raw, entry = self.audit_entry(self.request_id(r))
        self.assertEqual(entry.get("effect"), "deny", entry)
        self.assertEqual(entry.get("user"), "alice", entry)

        # Memberships back: the same credentials work again.
        ztlib.write_atomic(self.dir_path, directory_doc("d-3"))
        wait_until(lambda: self.call_bearer(dave)[1].status == 200, 15, interval=0.2,
                   what="dave allowed again after the directory restored eng")
        p = self.unique("alice-session-back")
        rec = self.assert_forwarded(p, self.visit(p, cookies=self.session_cookies(s)),
                                    "alice's session after the directory came back")
        self.assertEqual(header_values(rec, "x-zt-groups"), ["eng,staff"], rec)
        path, r = self.call_bearer(alice_tok)
        self.assert_forwarded(path, r, "alice's bearer token")

    # ------------------------------------------------------------------ 1b
    def test_01b_open_websocket_closed_when_groups_change(self):
        # A websocket is not grandfathered: once the directory drops the
        # user's groups, the open tunnel is closed within seconds.
        erin = self.bearer("erin", "erin@corp.example")
        ztlib.write_atomic(self.dir_path, directory_doc("ws-1", erin_groups=("eng",)))
        wait_until(lambda: self.call_bearer(erin)[1].status == 200, 15, interval=0.2,
                   what="erin allowed on loose")
        c = ztlib.connect(self.port, self.pki, "good", server_hostname="loose.test")
        try:
            r, _key = ztlib.ws_handshake(
                c, host="loose.test:%d" % self.port,
                extra=[("Authorization", "Bearer " + erin)])
            self.assertEqual(r.status, 101, r)
            ztlib.ws_send(c, 0x1, b"hello")
            self.assertEqual(ztlib.ws_recv(c)[2], b"hello")
            ztlib.write_atomic(self.dir_path, directory_doc("ws-2", erin_groups=()))
            closed = False
            deadline = time.time() + 15
            while time.time() < deadline:
                try:
                    ztlib.ws_send(c, 0x1, b"ping")
                    ztlib.ws_recv(c)
                except (ztlib.ConnectionClosed, OSError, ConnectionError):
                    closed = True
                    break
                time.sleep(0.3)
            self.assertTrue(closed, "the websocket stayed open after erin lost her groups")
        finally:
            c.close()
        ztlib.write_atomic(self.dir_path, directory_doc("ws-3"))

    # ------------------------------------------------------------------ 2
    def test_02_country_from_client_address(self):
        cases = [
            # (route host, source, expected status, rule, country)
            ("open.test", "127.0.0.2", 200, "open-local", "DE"),
            ("open.test", "127.0.0.3", 403, "block-kp", "KP"),
            # Not in the database: "unknown" is a real country value
            # (docs/policy.md) -- a deny on KP alone does not match it ...
            ("open.test", "127.0.0.1", 200, "open-local", "unknown"),
            # ... and a rule that names "unknown" does.
            ("other.test", "127.0.0.1", 403, "block-unplaced", "unknown"),
            ("other.test", "127.0.0.3", 403, "block-unplaced", "KP"),
            ("other.test", "127.0.0.2", 200, "other-local", "DE"),
        ]
        for host, src, status, rule, country in cases:
            with self.subTest(host=host, src=src):
                path = self.unique("geo")
                r = self.send(host, path, src=src)
                if status == 200:
                    self.assert_forwarded(path, r, "%s from %s" % (host, src))
                else:
                    doc = self.assert_denied(path, r, rule, "%s from %s" % (host, src))
                    if rule == "block-kp":
                        self.assertEqual(doc.get("message"),
                                         "Access from your location is not permitted.", doc)
                _n, _raw, e = self.audit_entry(self.request_id(r))
                self.assertEqual(e.get("client"), src, e)
                self.assertEqual(e.get("country"), country, e)
                self.assertEqual(e.get("rule"), rule, e)
                self.assertEqual(e.get("effect"), "allow" if status == 200 else "deny", e)
                self.assertIsNone(e.get("user"), e)

    # ------------------------------------------------------------------ 3
    def test_03_x_forwarded_for_only_from_trusted_proxies(self):
        cases = [
            # (peer, X-Forwarded-For, status, rule, client, country)
            # untrusted peers: the header is ignored
            ("127.0.0.1", "127.0.0.3", 200, "open-local", "127.0.0.1", "unknown"),
            ("127.0.0.3", "127.0.0.2", 403, "block-kp", "127.0.0.3", "KP"),
            # the trusted proxy 127.0.0.5: believed, from the right
            ("127.0.0.5", "127.0.0.2", 200, "open-local", "127.0.0.2", "DE"),
            ("127.0.0.5", "127.0.0.3", 403, "block-kp", "127.0.0.3", "KP"),
            ("127.0.0.5", "127.0.0.2, 127.0.0.3", 403, "block-kp", "127.0.0.3", "KP"),
            ("127.0.0.5", "127.0.0.3, 127.0.0.2", 200, "open-local", "127.0.0.2", "DE"),
            ("127.0.0.5", "127.0.0.2, 127.0.0.5", 200, "open-local", "127.0.0.2", "DE"),
            # not an address: the client is unknown, country and ip fail closed
            ("127.0.0.5", "unknown", 403, "block-kp", None, None),
        ]
        for peer, xff, status, rule, client, country in cases:
            with self.subTest(peer=peer, xff=xff):
                path = self.unique("xff")
                r = self.send("open.test", path, src=peer, headers=[("X-Forwarded-For", xff)])
                what = "peer %s, X-Forwarded-For %s" % (peer, xff)
                if status == 200:
                    self.assert_forwarded(path, r, what)
                else:
                    self.assert_denied(path, r, rule, what)
                _n, _raw, e = self.audit_entry(self.request_id(r))
                self.assertEqual(e.get("rule"), rule, e)
                self.assertEqual(e.get("client"), client, "%s: %r" % (what, e))
                if country is not None:
                    self.assertEqual(e.get("country"), country, "%s: %r" % (what, e))
                else:
                    self.assertIn(e.get("country"), (None, ""), "%s: %r" % (what, e))

    # ------------------------------------------------------------------ 4
    def test_04_broken_rules_keep_the_old_ones(self):
        old = self.version
        for what, data, detail in [
                ("a misspelt group", rules_doc("p-broken", broken=True), r"stafff"),
                ("a JSON syntax error", json.dumps(rules_doc("p-broken"))[:-2] + ",}",
                 r"(?i)syntax|json")]:
            with self.subTest(broken=what):
                off = self.proxy_log_offset()
                ztlib.write_atomic(self.rules_path, data)
                line = self.proxy.wait_log(
                    off, lambda l: "rules refused" in l, timeout=15,
                    what='"policy: rules refused" for %s' % what)
                self.assertIn('keeping version "%s"' % old, line, line)
                self.assertRegex(line, detail, line)
                self.assertIn("rules.json", line, line)
                # The old rules still decide: the KP block is still there.
                path = self.unique("still-kp")
                r = self.send("open.test", path, src="127.0.0.3")
                self.assert_denied(path, r, "block-kp", "after %s" % what)
                _n, _raw, e = self.audit_entry(self.request_id(r))
                self.assertEqual(e.get("version"), old, e)
                dave = self.bearer("dave", "dave@corp.example")
                path, r = self.call_bearer(dave)
                self.assert_forwarded(path, r, "loose-staff after %s" % what)
        # A good file goes live.
        new = "p-2"
        ztlib.write_atomic(self.rules_path, rules_doc(new))

        def live():
            path = self.unique("new-version")
            r = self.send("open.test", path, src="127.0.0.2")
            if r.status != 200:
                return None
            e = self.audit_entry(self.request_id(r))[2]
            return e.get("version") == new
        wait_until(live, 15, interval=0.3, what='rules version "%s" live' % new)
        type(self).version = new

    # ------------------------------------------------------------------ 5
    def test_05_monitor_rule_does_not_change_the_decision(self):
        path = "/monitored/" + os.urandom(4).hex()
        r = self.send("open.test", path, src="127.0.0.2")
        self.assert_forwarded(path, r, "a request the monitor-mode deny matches")
        _n, _raw, e = self.audit_entry(self.request_id(r))
        self.assertEqual((e.get("effect"), e.get("rule")), ("allow", "open-local"), e)
        mon = [m for m in e.get("monitor") or [] if m.get("rule") == "watch-monitored"]
        self.assertEqual(len(mon), 1, "no monitor entry for watch-monitored: %r" % e)
        self.assertEqual(mon[0].get("effect"), "deny", mon)
        self.assertIs(mon[0].get("matched"), True, mon)
        self.assertEqual(mon[0].get("would_decide"), "deny", mon)
        self.assertNotIn("watch-monitored", e.get("monitor_unmatched") or [], e)
        # A path it does not match: evaluated, listed by id only under
        # monitor_unmatched (it would have decided what the request got).
        path = self.unique("plain")
        r = self.send("open.test", path, src="127.0.0.2")
        self.assert_forwarded(path, r, "a request the monitor rule does not match")
        e = self.audit_entry(self.request_id(r))[2]
        self.assertEqual(e.get("effect"), "allow", e)
        mon = [m for m in e.get("monitor") or [] if m.get("rule") == "watch-monitored"]
        self.assertEqual(mon, [], e)
        self.assertEqual(e.get("monitor_unmatched"), ["watch-monitored"], e)

    # ------------------------------------------------------------------ 6
    def check_common(self, e, raw, rid, what):
        self.assertTrue(raw.startswith('{"prev":"'), "%s: prev is not first: %s" % (what, raw))
        self.assertRegex(e.get("prev", ""), HEX64, what)
        self.assertRegex(e.get("hash", ""), HEX64, what)
        self.assertEqual(ztlib.audit_line_hash(raw), e["hash"],
                         "%s: hash is not the SHA-256 of the line without it: %s" % (what, raw))
        self.assertRegex(e.get("time", ""), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", what)
        self.assertEqual(e.get("request_id"), rid, what)
        self.assertEqual(e.get("device"), "good", what)
        self.assertEqual(e.get("tier"), "untrusted", "%s (no device_trust: unknown device)" % what)
        self.assertTrue(e.get("score") is None or 0 <= e["score"] <= 100, what)
        self.assertEqual(e.get("client"), "127.0.0.1", what)
        self.assertEqual(e.get("country"), "unknown", what)
        self.assertEqual(e.get("method"), "GET", what)
        self.assertEqual(e.get("version"), self.version, what)
        self.assertIsInstance(e.get("reasons"), list, what)
        self.assertTrue(e["reasons"], "%s: no reasons" % what)
        self.assertIsInstance(e.get("monitor"), list, what)
        self.assertIsInstance(e.get("eval_us"), (int, float), what)
        self.assertGreaterEqual(e["eval_us"], 0, what)
        self.assertIn("device_failing", e, what)
        self.assertNotIn("Bearer", raw, "%s: a token in the audit log" % what)
        self.assertNotIn("Authorization", raw, what)
        self.assertNotIn("SECRET", raw, "%s: the query string in the audit log" % what)

    def test_06_audit_log_lines_and_chain(self):
        # allow
        alice = self.bearer("alice", USERS["alice"][1])
        p_allow = self.unique("audit-allow")
        r = self.send("loose.test", p_allow + "?token=SECRET",
                      headers=[("Authorization", "Bearer " + alice)])
        self.assertEqual(r.status, 200, r)
        rid_allow = self.request_id(r)
        # deny: a user the directory does not know
        eve = self.bearer("eve", "eve@corp.example")
        p_deny = self.unique("audit-deny")
        r = self.send("loose.test", p_deny + "?q=SECRET",
                      headers=[("Authorization", "Bearer " + eve)])
        self.assertEqual(r.status, 403, r)
        rid_deny = self.request_id(r)
        # step-up: staff, but the login is an hour old (auth_age max 15m)
        old = self.bearer("alice", USERS["alice"][1], auth_time=int(time.time()) - 3600)
        p_step = self.unique("audit-step")
        r = self.send("admin.test", p_step, headers=[("Authorization", "Bearer " + old)])
        self.assertEqual(r.status, 401, "step-up of a bearer token: %r" % r)
        self.assertIn("insufficient_user_authentication", r.header("www-authenticate") or "", r)
        rid_step = r.header("x-zt-request-id")
        self.assertFalse(self.upstream_saw(p_step), "a step-up request was forwarded")
        # a fresh login on the same rule: allowed
        p_fresh = self.unique("audit-fresh")
        fresh = self.bearer("alice", USERS["alice"][1], auth_time=int(time.time()))
        r = self.send("admin.test", p_fresh, headers=[("Authorization", "Bearer " + fresh)])
        self.assert_forwarded(p_fresh, r, "admin-fresh with a fresh login")

        n_allow, raw, e = self.audit_entry(rid_allow)
        self.check_common(e, raw, rid_allow, "allow line")
        self.assertEqual(e.get("user"), "alice", e)
        self.assertEqual(e.get("email"), "alice@corp.example", e)
        self.assertEqual((e.get("route"), e.get("path")), ("loose", p_allow), e)
        self.assertEqual((e.get("effect"), e.get("rule")), ("allow", "loose-staff"), e)
        self.assertTrue(any("staff" in x for x in e["reasons"]), e)
        self.assertNotIn("step_up", e)

        n_deny, raw, e = self.audit_entry(rid_deny)
        self.check_common(e, raw, rid_deny, "deny line")
        self.assertEqual((e.get("user"), e.get("email")), ("eve", "eve@corp.example"), e)
        self.assertEqual((e.get("route"), e.get("path")), ("loose", p_deny), e)
        self.assertEqual((e.get("effect"), e.get("rule")), ("deny", "default-deny"), e)
        self.assertTrue(any(x.startswith("loose-staff:") for x in e["reasons"]), e)

        if rid_step is not None:
            n_step, raw, e = self.audit_entry(rid_step)
        else:
            # no request id header on the 401: find the line by path
            found = [(n, raw_, o) for n, raw_, o in ztlib.read_audit_log(self.audit_path)
                     if o and o.get("path") == p_step]
            self.assertEqual(len(found), 1, "audit lines for %s: %r" % (p_step, found))
            n_step, raw, e = found[0]
            rid_step = e.get("request_id")
        self.check_common(e, raw, rid_step, "step-up line")
        self.assertEqual((e.get("route"), e.get("path")), ("admin", p_step), e)
        self.assertEqual((e.get("effect"), e.get("rule")), ("step_up", "admin-fresh"), e)
        self.assertEqual(e.get("step_up"), {"max_age": 900, "mfa": False}, e)
        self.assertTrue(any("auth_age" in x for x in e["reasons"]), e)

        # The whole chain, checked here and by ztctl.
        lines = ztlib.read_audit_log(self.audit_path)
        prev = ZEROS
        for n, raw, o in lines:
            self.assertIsNotNone(o, "audit line %d is not JSON: %r" % (n, raw))
            self.assertEqual(o.get("prev"), prev, "line %d: prev does not chain" % n)
            self.assertEqual(ztlib.audit_line_hash(raw), o.get("hash"), "line %d: hash" % n)
            prev = o["hash"]
        if not os.path.exists(ztlib.ZTCTL_BIN):
            self.fail("%s does not exist (build it first)" % ztlib.ZTCTL_BIN)
        snap = os.path.join(self.tmp, "audit-copy.log")
        shutil.copyfile(self.audit_path, snap)
        with open(snap, "rb") as f:
            data = f.read()
        data = data[:data.rfind(b"\n") + 1]  # complete lines only
        with open(snap, "wb") as f:
            f.write(data)
        v = self.ztctl("audit", "verify", snap)
        out = (v.stdout + v.stderr).decode(errors="replace")
        self.assertEqual(v.returncode, 0, "ztctl audit verify on an intact log: %s" % out)
        self.assertIn("ok:", out)
        last_hash = json.loads(data.split(b"\n")[-2].decode())["hash"]
        self.assertIn(last_hash, out, "verify does not report the last hash")

        # Tampered: an edited line fails at that line ...
        rows = data.split(b"\n")[:-1]
        edited = list(rows)
        i = n_deny - 1
        self.assertIn(b'"effect":"deny"', edited[i])
        edited[i] = edited[i].replace(b'"effect":"deny"', b'"effect":"allow"')
        bad = os.path.join(self.tmp, "audit-edited.log")
        with open(bad, "wb") as f:
            f.write(b"\n".join(edited) + b"\n")
        v = self.ztctl("audit", "verify", bad)
        out = (v.stdout + v.stderr).decode(errors="replace")
        self.assertEqual(v.returncode, 1, "an edited line passed: %s" % out)
        self.assertIn("%s:%d:" % (bad, n_deny), out, out)
        # ... a removed line at the line after the gap. Remove a line that
        # has a successor (the order of the lines is the writers' order).
        candidates = [n - 1 for n in (n_allow, n_deny) if n - 1 < len(rows) - 1]
        k = candidates[0] if candidates else len(rows) - 2
        self.assertGreaterEqual(k, 0, "the audit log has fewer than two lines")
        removed = rows[:k] + rows[k + 1:]
        bad2 = os.path.join(self.tmp, "audit-removed.log")
        with open(bad2, "wb") as f:
            f.write(b"\n".join(removed) + b"\n")
        v = self.ztctl("audit", "verify", bad2)
        out = (v.stdout + v.stderr).decode(errors="replace")
        self.assertEqual(v.returncode, 1, "a removed line passed: %s" % out)
        self.assertIn("%s:%d:" % (bad2, k + 1), out, out)


if __name__ == "__main__":
    main()
