#!/usr/bin/env python3
"""Faults (issue 7): the identity provider down, and Redis down while a
revocation is made.

  IdPDownTest     the dev IdP is stopped by PID. An existing session keeps
                  working (sessions are local); a bearer token signed with
                  a known key keeps working, also after tokens with an
                  unknown kid made the proxy try (and fail) to refresh the
                  JWKS: the last good keys are kept. A new login gets a
                  clear 503 page, not a hang. When the IdP is back, a login
                  works again without restarting the proxy.
                  (test_sso.py test_08 covers the callback while the IdP is
                  down and a proxy started while it is down.)
  RedisDownRevocationTest
                  two replicas sharing Redis (test_redis.py's harness):
                  Redis stopped, a session revoked through replica A's admin
                  API is acknowledged (persisted in A's state_dir) and in
                  force on A; it survives kill -9 and a restart of A while
                  Redis is still down; when Redis is back it reaches
                  replica B. Nothing acknowledged is lost.
"""

import os
import re
import signal
import time

import test_redis
import ztlib
from idp import SSOTestCase, USERS, main
from ztlib import wait_until


class IdPDownTest(SSOTestCase):

    def bearer(self, token, path):
        return self.visit(path, host="loose.test",
                          headers=[("Authorization", "Bearer " + token)])

    def test_idp_down_and_back(self):
        s = self.login("alice")["session"]
        good = self.idp.mint(claims={"iss": self.idp.issuer, "aud": "ztproxy", "sub": "bob",
                                     "email": USERS["bob"][1]})
        unknown = [self.idp.mint(claims={"iss": self.idp.issuer, "aud": "ztproxy",
                                         "sub": "bob", "email": USERS["bob"][1]},
                                 ephemeral=True) for _ in range(3)]
        self.assertEqual(self.bearer(good, self.unique("tok-up")).status, 200)
        off = self.proxy_log_offset()
        self.idp.stop()
        try:
            self.assertEqual(self.visit(self.unique("sess-down"),
                                        cookies=self.session_cookies(s)).status, 200)
            self.assertEqual(self.bearer(good, self.unique("tok-down")).status, 200)
            # Unknown kids: the proxy tries the JWKS again (jwks_min_refresh
            # 1s), the fetch fails, the token is refused...
            for i, tok in enumerate(unknown):
                t0 = time.monotonic()
                r = self.bearer(tok, self.unique("unknown-%d" % i))
                self.assertEqual(r.status, 401, r)
                self.assertLess(time.monotonic() - t0, 30, "a JWKS refresh hung the request")
                time.sleep(1.1)
            # ... and the keys it had are kept.
            self.assertEqual(self.bearer(good, self.unique("tok-after-refresh")).status, 200)
            self.assertEqual(self.visit(self.unique("sess-after-refresh"),
                                        cookies=self.session_cookies(s)).status, 200)

            def new_visit_503():
                r = self.visit(self.unique("new-down"))
                return r if r.status == 503 else None
            r = wait_until(new_visit_503, 15, interval=0.5, what="503 for a new login")
            text = (r.body or b"").decode("utf-8", errors="replace").lower()
            self.assertTrue(re.search(r"sign.?in", text), text[:300])
            self.assertIsNotNone(r.header("x-zt-request-id"))
            self.assertTrue(self.proxy.alive())
            log = self.proxy.stderr_since(off)
            self.assertRegex(log.lower(), r"jwks|keys", "no log line about the JWKS refresh")
        finally:
            self.idp.restart()
        self.wait_sso_ready(timeout=60)
        s2 = self.login("carol")["session"]
        self.assertEqual(self.visit(self.unique("up-again"),
                                    cookies=self.session_cookies(s2)).status, 200)
        self.assertEqual(self.bearer(good, self.unique("tok-up-again")).status, 200)


class RedisDownRevocationTest(test_redis.RedisSharedStateTest):

    def test_revocation_while_redis_is_down(self):
        cookies = self.session_cookies(self.login("bob")["session"])
        for r in (self.a, self.b):
            self.assertEqual(self.send(r, host="app.test", cookies=cookies).status, 200)
        off = self.a.proxy.stderr_size()
        self.redis.stop()
        self.a.proxy.wait_log(off, lambda t: "connection lost" in t, timeout=20,
                              what="A sees Redis gone")
        st, body = self.a.api("POST", "/api/v1/sessions/revoke", {"user": "bob"}, pki=self.pki)
        self.assertEqual(st, 200, body)  # acknowledged: in A's revocations.log
        self.assertIn(self.send(self.a, host="app.test", cookies=cookies).status, (302, 401))

        # A crashes and comes back while Redis is still down: in force.
        os.kill(self.a.proxy.proc.pid, signal.SIGKILL)
        self.a.proxy.proc.wait(10)
        ztlib.stop_process(self.a.proxy.proc)
        cfg = self.replica_config("a", self.port, self.a.admin_port)
        self.a.start(cfg)
        type(self).proxy = self.a.proxy
        # A fresh process answers 503 to a login until it has the provider's
        # discovery document: wait for it, so that the answer below is the
        # revoked session's (a login redirect), whatever the timing.
        type(self).wait_sso_ready(timeout=30)
        self.assertIn(self.send(self.a, host="app.test", cookies=cookies).status, (302, 401),
                      "an acknowledged revocation was lost by kill -9 while Redis was down")

        # Redis back: the revocation reaches B.
        self.redis.start()
        for r in (self.a, self.b):
            wait_until(lambda r=r: self.readyz(r)[1]["redis"]["connected"], 30,
                       what="reconnected")
        wait_until(lambda: self.send(self.b, host="app.test", cookies=cookies).status
                   in (302, 401), 20,
                   what="the revocation made while Redis was down reaches B")
        for r in (self.a, self.b):
            self.assertTrue(r.proxy.alive())


# Only the test above from test_redis.py's class.
for _name in dir(test_redis.RedisSharedStateTest):
    if _name.startswith("test_"):
        setattr(RedisDownRevocationTest, _name, None)


if __name__ == "__main__":
    main()
