#!/usr/bin/env python3
"""What a keep-alive connection keeps between its requests (docs/sessions.md,
"Per-connection cache"; docs/assertion.md, "Reuse") never delays a change:

- a session revoked (logout on another connection) between two requests on
  one connection: the second request is refused;
- a user's groups changed in the directory between two requests on one
  connection: the second decision, X-ZT-Groups and the assertion use the
  new groups, and losing the group the rules need denies the request;
- the rules changed between two requests on one connection: the second
  request is decided by the new rules;
- an assertion handed out again on a connection never outlives its exp
  (lifetime 2 s here, shorter than the 5 s reuse window);
- a client that keeps sending a cookie due for re-sealing gets a valid
  re-sealed cookie with every response (sealed once per second and
  connection).

Real processes: ztproxy, node deploy/dev-idp/server.js, upstream.py; one
TLS connection with the device certificate carries the requests of a test.
"""

import os
import time

import ztlib
from idp import SESSION_COOKIE, SSOTestCase, jwt_decode, main
from ztlib import header_values, wait_until

LIFETIME = 2
IDLE = 10


def rules_doc(version, group="staff"):
    return {"version": version, "rules": [
        {"id": "app-members", "route": "app", "effect": "allow", "when": {"group": group}},
        # Names finance, so the route forwards it (forward_groups "referenced").
        {"id": "app-watch", "route": "app", "effect": "deny", "mode": "monitor",
         "when": {"group": "finance"}},
    ]}


def directory_doc(version, alice_groups):
    return {
        "version": version,
        "groups": {"staff": {}, "finance": {}, "eng": {}},
        "users": {"alice@corp.example": {"groups": alice_groups}},
    }


class IdentityCacheTest(SSOTestCase):

    @classmethod
    def routes(cls):
        return [{"name": "app", "host": "app.test", "upstream": cls.up.url,
                 "auth": {"mode": "any"}}]

    @classmethod
    def identity(cls):
        ident = super().identity()
        ident["assertion"]["lifetime"] = "%ds" % LIFETIME
        # Re-sealed once more than half of it has passed (test_05).
        ident["session"]["idle_timeout"] = "%ds" % IDLE
        return ident

    @classmethod
    def config_extra(cls):
        cfg = super().config_extra()
        cfg["policy"] = {"rules": "rules.json", "directory": {"file": "directory.json"},
                         "audit_log": "audit.log"}
        return cfg

    @classmethod
    def start_proxy(cls, cfg_update=None):
        rules = os.path.join(cls.tmp, "rules.json")
        if not os.path.exists(rules):
            ztlib.write_atomic(rules, rules_doc("r-1"))
            ztlib.write_atomic(os.path.join(cls.tmp, "directory.json"),
                               directory_doc("d-1", ["staff", "finance"]))
        super().start_proxy(cfg_update)

    def setUp(self):
        # Every test starts from the same rules and directory.
        self.set_rules("r-base-%s" % self._testMethodName, "staff")
        self.set_directory("d-base-%s" % self._testMethodName, ["staff", "finance"])

    # ---- helpers ----

    def set_directory(self, version, groups):
        off = self.proxy_log_offset()
        ztlib.write_atomic(os.path.join(self.tmp, "directory.json"), directory_doc(version, groups))
        self.proxy.wait_log(off, lambda t: "directory" in t and 'version "%s"' % version in t,
                            timeout=15, what="directory %s loaded" % version)

    def set_rules(self, version, group):
        off = self.proxy_log_offset()
        ztlib.write_atomic(os.path.join(self.tmp, "rules.json"), rules_doc(version, group))
        self.proxy.wait_log(off, lambda t: "policy: rules" in t and 'version "%s"' % version in t,
                            timeout=15, what="rules %s loaded" % version)

    def keepalive(self):
        return ztlib.connect(self.port, self.pki, "good", server_hostname="app.test")

    def get(self, conn, path, session):
        conn.send(ztlib.build_request(
            "GET", path, [("Cookie", "%s=%s" % (SESSION_COOKIE, session))],
            host="app.test:%d" % self.port))
        return conn.read_response("GET")

    def seen(self, path):
        wait_until(lambda: self.upstream_saw(path), 10, what="%s at the upstream" % path)
        return self.upstream_heads(path)[0]

    def groups_of(self, path):
        rec = self.seen(path)
        tok = header_values(rec, "x-zt-assertion")
        self.assertEqual(len(tok), 1, rec)
        return header_values(rec, "x-zt-groups"), jwt_decode(tok[0])[1].get("groups"), tok[0]

    # ---- tests ----

    def test_01_revoked_between_two_requests_on_one_connection(self):
        s = self.login("alice")["session"]
        try:
            with self.keepalive() as conn:
                for tag in ("first", "second"):  # the second is served from the cache
                    path = self.unique(tag)
                    r = self.get(conn, path, s)
                    self.assertEqual(r.status, 200, r)
                    self.seen(path)
                # Logout on another connection revokes the session...
                r = self.visit("/.zt/logout", cookies=self.session_cookies(s))
                self.assertEqual(r.status, 302, r)
                # ...and the next request on this one is refused.
                path = self.unique("after-revoke")
                r = self.get(conn, path, s)
                self.assert_to_idp(r, "the revoked session on the kept connection")
                self.assertFalse(self.upstream_saw(path),
                                 "a revoked session reached the upstream on a kept connection")
        finally:
            self.next_second()

    def test_02_groups_changed_between_two_requests_on_one_connection(self):
        s = self.login("alice")["session"]
        with self.keepalive() as conn:
            p1 = self.unique("groups-before")
            r = self.get(conn, p1, s)
            self.assertEqual(r.status, 200, r)
            hdr, claim, _ = self.groups_of(p1)
            self.assertEqual(hdr, ["finance,staff"])
            self.assertEqual(claim, ["finance", "staff"])

            self.set_directory("d-no-finance", ["staff"])
            p2 = self.unique("groups-after")
            r = self.get(conn, p2, s)
            self.assertEqual(r.status, 200, r)
            hdr, claim, _ = self.groups_of(p2)
            self.assertEqual(hdr, ["staff"], "X-ZT-Groups after finance was removed")
            self.assertEqual(claim, ["staff"], "assertion groups after finance was removed")

            self.set_directory("d-no-staff", ["eng"])
            p3 = self.unique("groups-none")
            r = self.get(conn, p3, s)
            self.assertEqual(r.status, 403, "alice lost staff: %r" % r)
            self.assertFalse(self.upstream_saw(p3))

    def test_03_rules_changed_between_two_requests_on_one_connection(self):
        s = self.login("alice")["session"]
        with self.keepalive() as conn:
            p1 = self.unique("rules-before")
            self.assertEqual(self.get(conn, p1, s).status, 200)
            self.set_rules("r-eng-only", "eng")
            p2 = self.unique("rules-after")
            r = self.get(conn, p2, s)
            self.assertEqual(r.status, 403, "the new rules want eng: %r" % r)
            self.assertFalse(self.upstream_saw(p2))
            self.set_rules("r-staff-again", "staff")
            p3 = self.unique("rules-again")
            self.assertEqual(self.get(conn, p3, s).status, 200)
            self.seen(p3)

    def test_04_reused_assertion_never_outlives_exp(self):
        s = self.login("alice")["session"]
        prev = None
        with self.keepalive() as conn:
            end = time.time() + 3 * LIFETIME
            while time.time() < end:
                path = self.unique("exp")
                sent = time.time()
                r = self.get(conn, path, s)
                done = time.time()
                self.assertEqual(r.status, 200, r)
                _, _, tok = self.groups_of(path)
                claims = jwt_decode(tok)[1]
                self.assertEqual(claims["exp"] - claims["iat"], LIFETIME, claims)
                # Forwarded after we sent it: at that moment (at least
                # int(sent)) the token must not have expired yet.
                self.assertGreater(claims["exp"], int(sent),
                                   "an expired assertion was forwarded: %r (sent at %.3f)" % (
                                       claims, sent))
                self.assertLessEqual(claims["iat"], int(done), claims)
                if prev is not None and int(prev[0]) == int(done):
                    # Both requests within one second: the same token may
                    # be handed out, but then it is the very same one.
                    if prev[1] == tok:
                        self.assertEqual(jwt_decode(prev[1])[1]["iat"], claims["iat"])
                prev = (sent, tok)
                time.sleep(0.1)

    def test_05_old_cookie_kept_by_the_client(self):
        """A client that keeps sending a cookie due for re-sealing (half of
        the idle timeout gone) gets a Set-Cookie with every response; on one
        connection, within one second, the same value (sealed once); every
        value handed out opens as a valid session."""
        s = self.login("alice")["session"]
        time.sleep(IDLE / 2 + 1.5)  # whole seconds: more than half gone
        seen = []
        with self.keepalive() as conn:
            for i in range(6):
                path = self.unique("reseal")
                before = time.time()
                r = self.get(conn, path, s)
                after = time.time()
                self.assertEqual(r.status, 200, r)
                self.seen(path)
                sc = r.set_cookie(SESSION_COOKIE)
                self.assertIsNotNone(sc, "no re-sealed cookie with request %d: %r" % (i, r))
                self.assertNotEqual(sc["value"], s)
                seen.append((int(before), int(after), sc["value"]))
        for a, b in zip(seen, seen[1:]):
            if a[0] == a[1] == b[0] == b[1]:  # both sealed within one second
                self.assertEqual(a[2], b[2], "re-sealed twice in one second on one connection")
        for value in {v for _, _, v in seen}:
            path = self.unique("resealed-opens")
            r = self.visit(path, cookies=self.session_cookies(value))
            self.assertEqual(r.status, 200, "a re-sealed cookie does not open: %r" % r)
            self.seen(path)


if __name__ == "__main__":
    main()
