#!/usr/bin/env python3
"""TLS session resumption in both places sessions can live ("session_cache":
"server", the default, and "tickets"), TLS 1.2 and 1.3: a resumed connection
still knows its device; a session survives a reload and a CRL change (its
certificate is checked against the new CRL first); a revoked certificate
never resumes; a TLS 1.3 session of the server cache resumes only once."""

import json
import os
import unittest

import ztlib
from ztlib import (Proxy, Upstream, base_config, free_port, is_refused, make_pki,
                   make_tmpdir, remove_tmpdir, wait_until, write_config)


class _ResumptionBase:
    MODE = None  # "server" or "tickets"

    @classmethod
    def setUpClass(cls):
        cls.tmp = make_tmpdir("zt-Resumption-%s-" % cls.MODE)
        cls.up = None
        try:
            cls.pki = make_pki(os.path.join(cls.tmp, "pki"))
            for d in ("r12", "r13", "s12", "s13", "k12", "k13"):
                cls.pki.device(d)
            cls.up = Upstream(cls.tmp, "main").start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.up is not None:
            cls.up.stop()
        remove_tmpdir(cls.tmp)

    def setUp(self):
        self.dir = os.path.join(self.tmp, self._testMethodName)
        os.makedirs(self.dir)
        self.port = free_port()
        self.cfg = base_config(
            self.pki, self.port,
            [{"name": "app", "host": "app.test", "upstream": self.up.url}],
            os.path.join(self.dir, "access.log"), tls={"session_cache": self.MODE})
        self.cfg_path = write_config(self.dir, self.cfg)
        self.proxy = Proxy(self.dir, self.cfg_path, self.port)
        self.proxy.start()
        self.ctxs = {}

    def tearDown(self):
        self.proxy.stop()
        self.assertEqual(self.proxy.sanitizer_report(), [],
                         "the proxy's sanitizer reported problems")

    def visit(self, device, version, session=None):
        """One request; returns (status, device header seen upstream, session,
        reused)."""
        ctx = self.ctxs.setdefault((device, version),
                                   ztlib.client_context(self.pki, device, version))
        with ztlib.connect(self.port, context=ctx, session=session) as c:
            reused = c.sock.session_reused
            c.send(ztlib.build_request("GET", "/echo"))
            r = c.read_response()
            devs = [v for n, v in r.json()["headers"] if n.lower() == "x-zt-device"] \
                if r.status == 200 else []
            return r.status, devs, c.sock.session, reused

    def resumed_visit(self, device, version, session):
        """Up to 3 tries (several workers: a fresh session per connection is
        fine); returns (session, reused)."""
        reused = False
        for _ in range(3):
            status, devs, session, reused = self.visit(device, version, session)
            self.assertEqual(status, 200)
            self.assertEqual(devs, [device], "the device is known on a resumed session")
            if reused:
                break
        return session, reused

    def first_session(self, device, version):
        status, devs, session, reused = self.visit(device, version)
        self.assertEqual((status, devs, reused), (200, [device], False))
        self.assertIsNotNone(session)
        return session

    def revoke_and_wait(self, device):
        self.pki.revoke(device)
        self.proxy.sighup()
        wait_until(lambda: is_refused(self.port, self.pki, device)[0], 15, interval=0.2,
                   what="%r refused after the CRL reload" % device)

    def test_resumes_and_knows_the_device(self):
        for version in ("1.3", "1.2"):
            with self.subTest(version=version):
                session = self.first_session("good", version)
                for _ in range(3):  # again and again: each resumption yields one more
                    session, reused = self.resumed_visit("good", version, session)
                    self.assertTrue(reused, "TLS %s session was not resumed" % version)

    def test_session_resumed_after_crl_change_is_rechecked(self):
        # A session issued before the CRL changed resumes after it (the
        # certificate is checked against the new CRL, and is not on it)...
        for version, dev, other in (("1.3", "s13", "k13"), ("1.2", "s12", "k12")):
            with self.subTest(version=version):
                session = self.first_session(dev, version)
                self.revoke_and_wait(other)
                session, reused = self.resumed_visit(dev, version, session)
                self.assertTrue(reused, "TLS %s session did not survive a CRL change" % version)

    def test_revoked_certificate_does_not_resume(self):
        # ... while a session of a certificate on the new CRL never resumes.
        for version, dev in (("1.3", "r13"), ("1.2", "r12")):
            with self.subTest(version=version):
                session = self.first_session(dev, version)
                session, reused = self.resumed_visit(dev, version, session)
                self.assertTrue(reused, "sanity: TLS %s resumption before the revocation" % version)
                off = self.proxy.stderr_size()
                self.revoke_and_wait(dev)
                # (revoke_and_wait's own probes may reach the upstream until
                # the reload: count from here)
                before = len(self.up.heads())
                ctx = self.ctxs[(dev, version)]
                try:
                    c = ztlib.connect(self.port, context=ctx, session=session, timeout=15)
                except (OSError, ConnectionError):
                    c = None
                if c is not None:
                    with c:
                        try:
                            c.send(ztlib.build_request("GET", "/echo"))
                            r = c.read_response()
                        except (ztlib.ConnectionClosed, OSError, ConnectionError):
                            r = None
                        self.assertIsNone(r, "revoked device resumed its TLS %s session: %r "
                                          "(reused=%s)" % (version, r, c.sock.session_reused))
                self.assertEqual(len(self.up.heads()), before, "a request reached the upstream")
                self.proxy.wait_log(off, lambda l: "refused" in l.lower() and "revoked" in l.lower(),
                                    timeout=10, what="a refusal naming the revocation")


class ServerCacheTest(_ResumptionBase, unittest.TestCase):
    MODE = "server"

    def test_tls13_session_resumes_once(self):
        # The server cache hands a TLS 1.3 session out once: replaying it gets
        # a full handshake (served, not resumed).
        session = self.first_session("good", "1.3")
        replay = session
        session, reused = self.resumed_visit("good", "1.3", session)
        self.assertTrue(reused)
        status, devs, _, reused = self.visit("good", "1.3", replay)
        self.assertEqual((status, devs), (200, ["good"]))
        self.assertFalse(reused, "a TLS 1.3 session was resumed twice")

    def test_session_survives_reload(self):
        for version in ("1.3", "1.2"):
            with self.subTest(version=version):
                session = self.first_session("good2", version)
                off = self.proxy.stderr_size()
                self.proxy.sighup()
                self.proxy.wait_log(off, lambda l: "reload" in l.lower(), timeout=10,
                                    what="a log line about the reload")
                session, reused = self.resumed_visit("good2", version, session)
                self.assertTrue(reused, "TLS %s session did not survive a reload" % version)


    def test_cache_size_bounds_the_table(self):
        # tls.session_cache_size: 1 (applied by a reload): a second device's
        # session pushes the first one out, which then gets a full handshake.
        cfg = json.loads(json.dumps(self.cfg))
        cfg["tls"]["session_cache_size"] = 1
        write_config(self.dir, cfg)
        off = self.proxy.stderr_size()
        self.proxy.sighup()
        self.proxy.wait_log(off, lambda l: "reload done" in l, timeout=10, what="the reload")
        first = self.first_session("s12", "1.2")
        _, reused = self.resumed_visit("s12", "1.2", first)
        self.assertTrue(reused, "a TLS 1.2 session did not resume with a cache of one")
        self.first_session("r12", "1.2")
        status, devs, _, reused = self.visit("s12", "1.2", first)
        self.assertEqual((status, devs), (200, ["s12"]))
        self.assertFalse(reused, "an evicted session was resumed")


class TicketsTest(_ResumptionBase, unittest.TestCase):
    MODE = "tickets"


if __name__ == "__main__":
    unittest.main()
