#!/usr/bin/env python3
"""Back-channel logout by provider session (OpenID Connect Back-Channel
Logout 1.0, section 2.7): a logout token with "sid" revokes only the
sessions created from that IdP session; one with only "sub" revokes every
session of the user from that provider.

Real processes: ztproxy, the dev IdP (node deploy/dev-idp/server.js),
upstream.py. Two logins of the same user in two separate IdP browser
sessions give two IdP sessions (two sids); ending one of them at the IdP
makes the IdP deliver a back-channel logout token naming that sid.
"""

import json
import time
import urllib.parse

import ztlib
from idp import IdPBrowser, SSOTestCase, main

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class SidLogoutTest(SSOTestCase):

    def ok(self, session, tag):
        path = self.unique(tag)
        r = self.visit(path, cookies=self.session_cookies(session))
        return r.status == 200 and self.upstream_saw(path)

    def wait_refused(self, session, what, off):
        def refused():
            r = self.visit(self.unique("probe"), cookies=self.session_cookies(session))
            return r.status == 302
        try:
            ztlib.wait_until(refused, 10, interval=0.2, what=what)
        except Exception:
            self.fail("%s: still accepted 10 s after the back-channel logout\nIdP events:\n%s\n"
                      "proxy log since:\n%s" % (what, self.dump_idp_events(),
                                               self.proxy.stderr_since(off)))

    def post_logout_token(self, claims):
        tok = self.idp.mint(claims=claims, header={"typ": "logout+jwt"})
        body = ("logout_token=" + urllib.parse.quote(tok)).encode()
        return self.visit("/.zt/backchannel-logout", method="POST", body=body,
                          headers=[("Content-Type", "application/x-www-form-urlencoded")],
                          device="idp-backchannel")

    def test_01_sid_revokes_only_that_idp_session(self):
        # Two IdP sessions of alice (two browsers, each through the login form).
        b1, b2 = IdPBrowser(self.idp), IdPBrowser(self.idp)
        one = self.login("alice", browser=b1)
        two = self.login("alice", browser=b2)
        self.assertTrue(b1.form_shown and b2.form_shown, "each browser must log in afresh")
        s1, s2 = one["session"], two["session"]
        self.assertNotEqual(s1, s2)
        self.assertTrue(self.ok(s1, "one-before"))
        self.assertTrue(self.ok(s2, "two-before"))
        off = self.proxy_log_offset()
        t0 = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
        # End the first IdP session at the IdP itself (not through the
        # proxy's /.zt/logout): the IdP tells the proxy over the back channel.
        b1.end_session(self.idp.issuer + "/session/end?client_id=ztproxy")
        delivered = []
        deadline = time.monotonic() + 10
        while not delivered and time.monotonic() < deadline:
            delivered = [e for e in self.idp.events()
                         if e.get("type") == "backchannel.success" and e.get("sub") == "alice"
                         and e.get("time", "") >= t0]
            if not delivered:
                time.sleep(0.2)
        self.assertTrue(delivered, "the IdP delivered no back-channel logout:\n%s" %
                        self.dump_idp_events())
        self.assertEqual(len(delivered), 1, "one IdP session ended, one logout token: %s" %
                         json.dumps(delivered))
        self.assertTrue(delivered[0].get("sid"), "the IdP's logout token names a sid: %s" %
                        json.dumps(delivered))
        self.wait_refused(s1, "the session of the ended IdP session", off)
        path = self.unique("one-after")
        r = self.visit(path, cookies=self.session_cookies(s1))
        self.assert_to_idp(r, "the logged-out session")
        self.assertFalse(self.upstream_saw(path))
        # The other IdP session of the same user goes on working.
        self.assertTrue(self.ok(s2, "two-after"),
                        "the session of the other IdP session was revoked too\nproxy log:\n%s"
                        % self.proxy.stderr_since(off))
        # The audit says which kind of back-channel logout it was.
        self.assertIn("provider session (sid) revoked", self.proxy.stderr_since(off))
        # And after a restart (the revocation is persisted with its sid).
        self.restart_proxy()
        self.assert_to_idp(self.visit(self.unique("one-restart"),
                                      cookies=self.session_cookies(s1)), "after a restart")
        self.assertTrue(self.ok(s2, "two-restart"))

    def test_02_sub_only_revokes_the_user_at_the_provider(self):
        self.next_second()
        b1 = self.login("bob", browser=IdPBrowser(self.idp))["session"]
        b2 = self.login("bob", browser=IdPBrowser(self.idp))["session"]
        c = self.login("carol")["session"]
        for s in (b1, b2, c):
            self.assertTrue(self.ok(s, "pre"))
        off = self.proxy_log_offset()
        # A real logout token from the IdP's signing key naming only sub.
        r = self.post_logout_token({"sub": "bob", "events": {LOGOUT_EVENT: {}}})
        self.assertEqual(r.status, 200, r)
        for s in (b1, b2):
            self.wait_refused(s, "bob's session after a sub-only logout", off)
        self.assertTrue(self.ok(c, "carol-still"), "another user's session was revoked")
        self.next_second()
        self.assertTrue(self.ok(self.login("bob")["session"], "bob-again"))

    def test_03_sid_only_token(self):
        # "sid" without "sub" is a valid logout token: accepted, and it
        # revokes nothing but the sessions of that (here unknown) sid.
        c = self.login("carol")["session"]
        r = self.post_logout_token({"sub": None, "sid": "no-such-idp-session",
                                    "events": {LOGOUT_EVENT: {}}})
        self.assertEqual(r.status, 200, r)
        self.assertTrue(self.ok(c, "carol-unaffected"))
        # A sid no session can carry (longer than 255 bytes) is refused.
        r = self.post_logout_token({"sid": "s" * 256, "events": {LOGOUT_EVENT: {}}})
        self.assertEqual(r.status, 400, r)
        self.assertTrue(self.ok(c, "carol-unaffected-2"))


if __name__ == "__main__":
    main()
