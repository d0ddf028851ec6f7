#!/usr/bin/env python3
"""Configuration lifecycle: --check (errors name the file and the JSON
path), SIGHUP with a broken config (keeps serving, says why), SIGHUP with a
good one (applies to new connections, CRL included), SIGTERM (exits 0)."""

import copy
import os
import re
import shutil
import subprocess
import unittest

import ztlib
from ztlib import (Proxy, Upstream, base_config, free_port, is_refused, make_pki,
                   make_tmpdir, remove_tmpdir, wait_until, write_config)

RELOAD_REFUSED = re.compile(r"reload", re.I)
REFUSAL_WORDS = re.compile(r"refus|fail|error|invalid|keep|reject|unchanged|ignor", re.I)


class ReloadTest(unittest.TestCase):
    """A fresh proxy per test (tests change its config)."""

    def assert_refused_on_open(self, c, what):
        """The next request on open connection c is answered 403 or the
        connection is closed."""
        c.send(ztlib.build_request("GET", "/"))
        try:
            r = c.read_response()
        except (ztlib.ConnectionClosed, OSError, ConnectionError):
            r = None
        self.assertTrue(r is None or r.status == 403, "%s: %r" % (what, r))

    @classmethod
    def setUpClass(cls):
        cls.tmp = make_tmpdir("zt-ReloadTest-")
        cls.ups = {}
        try:
            cls.pki = make_pki(os.path.join(cls.tmp, "pki"))
            cls.pki.device("later")
            cls.pki.device("later2")
            cls.pki.device("later3")
            cls.pki.device("later4")
            cls.ups["main"] = Upstream(cls.tmp, "main").start()
            cls.ups["new"] = Upstream(cls.tmp, "new").start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for u in cls.ups.values():
            u.stop()
        remove_tmpdir(cls.tmp)

    def setUp(self):
        self.dir = os.path.join(self.tmp, self._testMethodName)
        os.makedirs(self.dir)
        self.port = free_port()
        self.access_log = os.path.join(self.dir, "access.log")
        self.cfg = base_config(
            self.pki, self.port,
            [{"name": "app", "host": "app.test", "upstream": self.ups["main"].url}],
            self.access_log, timeouts={"shutdown_grace": "2s"})
        self.cfg_path = write_config(self.dir, self.cfg)
        type(self).proxy = Proxy(self.dir, self.cfg_path, self.port)
        self.proxy = type(self).proxy
        self.proxy.start()

    def tearDown(self):
        self.proxy.stop()
        report = self.proxy.sanitizer_report()
        type(self).proxy = None
        self.assertEqual(report, [], "the proxy's sanitizer reported problems")

    def get(self, path="/", host="app.test", device="good"):
        return ztlib.http_request(self.port, "GET", path, pki=self.pki, host=host,
                                  device=device)

    def reload_with(self, cfg):
        off = self.proxy.stderr_size()
        write_config(self.cfg_path, cfg)
        self.proxy.sighup()
        return off

    def assert_reload_refused(self, off, what):
        line = self.proxy.wait_log(
            off, lambda l: RELOAD_REFUSED.search(l) and REFUSAL_WORDS.search(l),
            timeout=10, what="a log line saying the reload (%s) was refused" % what)
        self.assertTrue(self.proxy.alive(), "proxy died on a bad reload (%s)" % what)
        r = self.get("/after-bad-reload")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("x-upstream"), "main")
        return line

    # -- bad reloads ------------------------------------------------------
    def test_sighup_broken_json_keeps_serving(self):
        self.assertEqual(self.get().status, 200)
        off = self.reload_with('{ "listen": [ broken')
        self.assert_reload_refused(off, "broken JSON")
        # and again: still fine
        self.assertEqual(self.get().status, 200)

    def test_sighup_invalid_config_keeps_serving(self):
        cfg = copy.deepcopy(self.cfg)
        cfg["bogus_key"] = 1
        cfg["routes"][0]["upstream"] = self.ups["new"].url  # must NOT apply
        off = self.reload_with(cfg)
        self.assert_reload_refused(off, "unknown key")
        text = self.proxy.stderr_since(off)
        self.assertIn("$.bogus_key", text, "the refusal does not name the JSON path")

    def test_sighup_missing_certificate_keeps_serving(self):
        cfg = copy.deepcopy(self.cfg)
        cfg["tls"]["certificate"] = os.path.join(self.dir, "does-not-exist.crt")
        off = self.reload_with(cfg)
        self.assert_reload_refused(off, "missing certificate")

    # -- good reloads -----------------------------------------------------
    def test_sighup_applies_new_route(self):
        r = self.get(host="new.test")
        self.assertIn(r.status, (404, 421), r)
        cfg = copy.deepcopy(self.cfg)
        cfg["routes"].append({"name": "new", "host": "new.test",
                              "upstream": self.ups["new"].url})
        self.reload_with(cfg)

        def new_route_works():
            r = self.get(host="new.test")
            return r.status == 200 and r.header("x-upstream") == "new"
        wait_until(new_route_works, 10, interval=0.2, what="the new route after SIGHUP")
        r = self.get()
        self.assertEqual((r.status, r.header("x-upstream")), (200, "main"))

    def test_sighup_changes_upstream(self):
        cfg = copy.deepcopy(self.cfg)
        cfg["routes"][0]["upstream"] = self.ups["new"].url
        self.reload_with(cfg)
        wait_until(lambda: self.get().header("x-upstream") == "new", 10, interval=0.2,
                   what="the changed upstream after SIGHUP")

    def test_sighup_good_then_bad_keeps_the_good(self):
        cfg = copy.deepcopy(self.cfg)
        cfg["routes"].append({"name": "new", "host": "new.test",
                              "upstream": self.ups["new"].url})
        self.reload_with(cfg)
        wait_until(lambda: self.get(host="new.test").status == 200, 10, interval=0.2,
                   what="the new route after SIGHUP")
        off = self.reload_with("not json at all")
        self.proxy.wait_log(off, lambda l: RELOAD_REFUSED.search(l) and REFUSAL_WORDS.search(l),
                            timeout=10, what="reload refused line")
        r = self.get(host="new.test")
        self.assertEqual((r.status, r.header("x-upstream")), (200, "new"))

    def test_sighup_reloads_crl(self):
        self.assertEqual(self.get(device="later").status, 200)
        self.pki.revoke("later")
        self.proxy.sighup()

        def refused():
            return is_refused(self.port, self.pki, "later")[0]
        wait_until(refused, 10, interval=0.2, what="'later' refused after CRL reload")
        self.assertEqual(self.get(device="good").status, 200)

    def test_revocation_reaches_open_connection_without_sighup(self):
        # Open keep-alive connections of two devices; one is then revoked.
        # The proxy notices the CRL file change by itself, and the next
        # request on the revoked device's open connection is refused while
        # the other device's open connection keeps working.
        with ztlib.connect(self.port, self.pki, "later3") as c, \
                ztlib.connect(self.port, self.pki, "later4") as c4:
            for conn in (c, c4):
                conn.send(ztlib.build_request("GET", "/"))
                self.assertEqual(conn.read_response().status, 200)
            self.pki.revoke("later3")
            wait_until(lambda: is_refused(self.port, self.pki, "later3")[0], 15, interval=0.3,
                       what="'later3' refused after the CRL file changed")
            self.assert_refused_on_open(c, "revoked device's open connection still served")
            c4.send(ztlib.build_request("GET", "/"))
            self.assertEqual(c4.read_response().status, 200,
                             "another device's open connection did not survive the reload")

    def test_open_connection_across_reloads(self):
        # A reload that leaves the device CA and CRL as they were keeps an
        # open keep-alive connection (only the clock is checked again); a
        # reload to another device CA refuses its next request.
        other = ztlib.make_pki(os.path.join(self.tmp, "other-pki"))
        with ztlib.connect(self.port, self.pki, "good") as c:
            c.send(ztlib.build_request("GET", "/"))
            self.assertEqual(c.read_response().status, 200)
            off = self.reload_with(copy.deepcopy(self.cfg))
            self.proxy.wait_log(off, lambda l: "reload done" in l, what="the reload")
            for _ in range(3):
                c.send(ztlib.build_request("GET", "/"))
                self.assertEqual(c.read_response().status, 200,
                                 "open connection refused after a reload that changed nothing")
            cfg = copy.deepcopy(self.cfg)
            cfg["tls"]["device_ca"] = other.ca
            cfg["tls"]["crl"] = other.crl
            off = self.reload_with(cfg)
            self.proxy.wait_log(off, lambda l: "reload done" in l, what="the CA reload")
            self.assert_refused_on_open(c, "open connection of another CA's device still served")

    def test_revoked_device_cannot_resume_session(self):
        ctx = ztlib.client_context(self.pki, "later2", "1.3")
        with ztlib.connect(self.port, context=ctx) as c:
            c.send(ztlib.build_request("GET", "/"))
            self.assertEqual(c.read_response().status, 200)
            session = c.sock.session
        # sanity: resumption works before the revocation
        with ztlib.connect(self.port, context=ctx, session=session) as c:
            c.send(ztlib.build_request("GET", "/"))
            self.assertEqual(c.read_response().status, 200)
            if c.sock.session_reused:
                session = c.sock.session
        self.pki.revoke("later2")
        self.proxy.sighup()
        wait_until(lambda: is_refused(self.port, self.pki, "later2")[0], 10, interval=0.2,
                   what="'later2' refused after CRL reload")
        # Resuming the old session must not get around the CRL.
        try:
            c = ztlib.connect(self.port, context=ctx, session=session, timeout=15)
        except (OSError, ConnectionError):
            return
        with c:
            try:
                c.send(ztlib.build_request("GET", "/"))
                r = c.read_response()
            except (ztlib.ConnectionClosed, OSError, ConnectionError):
                return
            self.fail("revoked device resumed its session and got %r (reused=%s)"
                      % (r, c.sock.session_reused))

    # -- SIGTERM ----------------------------------------------------------
    def test_sigterm_exits_0(self):
        with ztlib.connect(self.port, self.pki, "good") as c:
            c.send(ztlib.build_request("GET", "/"))
            self.assertEqual(c.read_response().status, 200)
            # an idle keep-alive connection is open while we stop it
            rc = self.proxy.stop(timeout=15)
        self.assertEqual(rc, 0, "ztproxy exited with %r on SIGTERM" % rc)
        self.assertFalse(ztlib.port_accepts(self.port))

    def test_sigterm_with_request_in_flight_exits_0(self):
        c = ztlib.connect(self.port, self.pki, "good")
        try:
            c.send(ztlib.build_request("GET", "/hang"))
            wait_until(lambda: "/hang" in self.ups["main"].targets(), 10,
                       what="/hang at the upstream")
            rc = self.proxy.stop(timeout=15)  # grace is 2 s
        finally:
            c.close()
        self.assertEqual(rc, 0, "ztproxy exited with %r on SIGTERM" % rc)


class CheckTest(unittest.TestCase):
    """ztproxy -c FILE --check."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = make_tmpdir("zt-CheckTest-")
        try:
            cls.pki = make_pki(os.path.join(cls.tmp, "pki"))
        except BaseException:
            remove_tmpdir(cls.tmp)
            raise
        cls.good = base_config(cls.pki, free_port(),
                               [{"name": "app", "host": "app.test",
                                 "upstream": "http://127.0.0.1:9"}],
                               "off")

    @classmethod
    def tearDownClass(cls):
        remove_tmpdir(cls.tmp)

    def check(self, cfg, name="cfg.json", cwd="/"):
        path = write_config(os.path.join(self.tmp, name), cfg)
        p = ztlib.spawn([ztlib.ZTPROXY_BIN, "-c", path, "--check"], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=cwd)
        try:
            out, err = p.communicate(timeout=30)
        finally:
            ztlib.stop_process(p)
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def assert_error(self, cfg, json_path):
        rc, out, err = self.check(cfg)
        text = out + err
        self.assertEqual(rc, 1, "--check exit %r for a config with a bad %s: %s"
                         % (rc, json_path, text))
        self.assertIn("cfg.json", text, "the error does not name the file: %r" % text)
        self.assertIn(json_path, text, "the error does not name %s: %r" % (json_path, text))
        self.assertNotIn("ok\n", out)

    def mutated(self, fn):
        cfg = copy.deepcopy(self.good)
        fn(cfg)
        return cfg

    def test_valid_config_ok(self):
        rc, out, err = self.check(self.good)
        self.assertEqual((rc, out.strip()), (0, "ok"), err)

    def test_relative_paths_resolved_against_config_dir(self):
        cfg = copy.deepcopy(self.good)
        for k in ("certificate", "key", "device_ca", "crl"):
            cfg["tls"][k] = os.path.relpath(cfg["tls"][k], self.tmp)
        rc, out, err = self.check(cfg, name="relative.json", cwd="/")
        self.assertEqual((rc, out.strip()), (0, "ok"), err)

    def test_bad_upstream_scheme(self):
        cfg = self.mutated(lambda c: c["routes"][0].__setitem__("upstream", "ftp://x"))
        self.assert_error(cfg, "$.routes[0].upstream")

    def test_unknown_tls_key(self):
        self.assert_error(self.mutated(lambda c: c["tls"].__setitem__("frobnicate", 1)),
                          "$.tls.frobnicate")

    def test_unknown_top_level_key(self):
        self.assert_error(self.mutated(lambda c: c.__setitem__("bogus", True)), "$.bogus")

    def test_unknown_route_key(self):
        self.assert_error(self.mutated(lambda c: c["routes"][0].__setitem__("hots", "x")),
                          "$.routes[0].hots")

    def test_workers_wrong_type_and_range(self):
        for v in ("many", 0, 65, 1.5):
            with self.subTest(workers=v):
                self.assert_error(self.mutated(lambda c: c.__setitem__("workers", v)),
                                  "$.workers")

    def test_bad_duration(self):
        self.assert_error(self.mutated(
            lambda c: c.__setitem__("timeouts", {"header": "5 parsecs"})), "$.timeouts.header")

    def test_bad_size(self):
        self.assert_error(self.mutated(
            lambda c: c.__setitem__("limits", {"body_size": "12q"})), "$.limits.body_size")

    def test_header_count_range(self):
        for v in (0, 257):
            with self.subTest(header_count=v):
                self.assert_error(self.mutated(
                    lambda c: c.__setitem__("limits", {"header_count": v})),
                    "$.limits.header_count")

    def test_listen_missing(self):
        self.assert_error(self.mutated(lambda c: c.pop("listen")), "$.listen")

    def test_listen_bad_address(self):
        self.assert_error(self.mutated(
            lambda c: c["listen"][0].__setitem__("address", "localhost")),
            "$.listen[0].address")

    def test_routes_empty(self):
        self.assert_error(self.mutated(lambda c: c.__setitem__("routes", [])), "$.routes")

    def test_route_name_invalid(self):
        self.assert_error(self.mutated(lambda c: c["routes"][0].__setitem__("name", "Wiki App")),
                          "$.routes[0].name")

    def test_route_name_duplicate(self):
        def dup(c):
            c["routes"].append(dict(c["routes"][0], host="other.test"))
        self.assert_error(self.mutated(dup), "$.routes[1].name")

    def test_path_prefix_without_slash(self):
        self.assert_error(self.mutated(
            lambda c: c["routes"][0].__setitem__("path_prefix", "api")),
            "$.routes[0].path_prefix")

    def test_missing_certificate_file(self):
        self.assert_error(self.mutated(
            lambda c: c["tls"].__setitem__("certificate", "/nonexistent/server.crt")),
            "$.tls.certificate")

    def test_key_readable_by_others(self):
        loose = os.path.join(self.tmp, "loose.key")
        shutil.copy(self.pki.server_key, loose)
        os.chmod(loose, 0o644)
        self.assert_error(self.mutated(lambda c: c["tls"].__setitem__("key", loose)),
                          "$.tls.key")

    def test_device_ca_not_a_certificate(self):
        junk = os.path.join(self.tmp, "junk.pem")
        with open(junk, "w") as f:
            f.write("this is not a certificate\n")
        self.assert_error(self.mutated(lambda c: c["tls"].__setitem__("device_ca", junk)),
                          "$.tls.device_ca")

    def test_bad_enum_values(self):
        cases = [
            (lambda c: c["tls"].__setitem__("unauthenticated", "maybe"), "$.tls.unauthenticated"),
            (lambda c: c.__setitem__("log_level", "loud"), "$.log_level"),
            (lambda c: c.__setitem__("access_log", 5), "$.access_log"),
            (lambda c: c.__setitem__("device_id", {"source": "x"}), "$.device_id.source"),
        ]
        for fn, path in cases:
            with self.subTest(path=path):
                self.assert_error(self.mutated(fn), path)

    def test_json_syntax_error(self):
        rc, out, err = self.check('{\n  "listen": [\n    }\n')
        text = out + err
        self.assertEqual(rc, 1, text)
        self.assertRegex(text, r"cfg\.json:\d+:\d+", "syntax error without file:line:col")

    def test_start_with_broken_config_fails(self):
        path = write_config(os.path.join(self.tmp, "broken-start.json"),
                            self.mutated(lambda c: c.__setitem__("bogus", 1)))
        p = ztlib.spawn([ztlib.ZTPROXY_BIN, "-c", path], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            out, err = p.communicate(timeout=30)
        finally:
            ztlib.stop_process(p)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("$.bogus", (out + err).decode(errors="replace"))


if __name__ == "__main__":
    ztlib.main()
