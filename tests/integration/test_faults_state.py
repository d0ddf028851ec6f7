#!/usr/bin/env python3
"""Faults (issue 7): the state directory full, then back; kill -9.

Real processes: ztproxy with identity (the dev IdP), device trust (an
inventory file), an admin listener, and state_dir on a small tmpfs of its
own (mount -t tmpfs, unmounted in tearDownClass; the test runs as root).

The contract under test (docs/operations.md "Failure modes"): a posture
report, a session revocation or a device status override is acknowledged
(200) only once it is written and fsync'd. When the state directory cannot take it, the agent,
the admin and the identity provider's back-channel logout get an error
(503) instead of an acknowledgement that a restart would forget; the
proxy keeps serving and keeps the change in force in memory; when space
returns, writes succeed again without a restart, and the changes that were
only in memory are written too. After kill -9 and a restart everything
that was acknowledged is still in force.
"""

import errno
import json
import os
import signal
import subprocess
import time

import ztlib
from idp import SSOTestCase, main
from ztlib import inventory_record, posture_report, wait_until

TOKEN = "faults-" + os.urandom(12).hex()


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        k, _, v = line.rpartition(" ")
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


class StateDirFullTest(SSOTestCase):
    """state_dir is a 512 KiB tmpfs; "filler" files use up the rest."""

    mounted = None

    @classmethod
    def config_extra(cls):
        cfg = super().config_extra()
        cfg["device_trust"] = {"inventory": {"file": "inventory.json", "max_stale": "1h"},
                               "posture": {"rate_limit_per_minute": 600}}
        cfg["admin"] = {"listen": "127.0.0.1:%d" % cls.admin_port, "token_file": "admin.tokens"}
        return cfg

    @classmethod
    def start_proxy(cls, cfg_update=None):
        if cls.mounted is None:
            state = os.path.join(cls.tmp, "state")
            os.makedirs(state, mode=0o700, exist_ok=True)
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs",
                                state], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                raise RuntimeError("cannot mount a tmpfs on %s (the test needs root): %s" % (
                    state, r.stdout.decode(errors="replace")))
            cls.mounted = state
            cls.state = state
            cls.admin_port = ztlib.free_port()
            ztlib.write_admin_tokens(cls.tmp, "ops:" + TOKEN)
            ztlib.write_atomic(os.path.join(cls.tmp, "inventory.json"),
                               [inventory_record("good"), inventory_record("good2")])
        super().start_proxy(cfg_update)

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.proxy is not None:
                cls.proxy.stop()
        finally:
            if cls.mounted is not None:
                subprocess.run(["umount", "-l", cls.mounted])
                cls.mounted = None
            super().tearDownClass()

    # ---------------------------------------------------------------- helpers
    def api(self, method, path, body=None):
        st, out, _ = ztlib.admin_call(self.admin_port, self.pki.ca, method, path, body=body,
                                      token=TOKEN)
        return st, out

    def metrics(self):
        st, body = self.api("GET", "/metrics")
        self.assertEqual(st, 200, body)
        return parse_metrics(body)

    def fill(self):
        """Use up every free byte of the state tmpfs."""
        n = 0
        while True:
            path = os.path.join(self.state, "filler-%d" % n)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
            finally:
                os.close(fd)
            st = os.statvfs(self.state)
            if st.f_bavail == 0:
                return
            n += 1
            if n > 64:
                raise AssertionError("cannot fill %s" % self.state)

    def unfill(self):
        for name in os.listdir(self.state):
            if name.startswith("filler-"):
                os.unlink(os.path.join(self.state, name))

    def post(self, device, uptime):
        return ztlib.post_posture(self.port, self.pki, device,
                                  posture_report(uptime_seconds=uptime))

    def device_uptime(self, device):
        st, doc = self.api("GET", "/api/v1/devices/" + device)
        self.assertEqual(st, 200, doc)
        p = doc.get("posture")
        return None if p is None else p.get("uptime_seconds")

    def revoke(self, user):
        return self.api("POST", "/api/v1/sessions/revoke", {"user": user})

    def serving(self):
        st, _ = self.api("GET", "/healthz")
        self.assertEqual(st, 200)
        r = self.visit(self.unique("open"), host="open.test")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(self.proxy.alive())

    def kill9_restart(self):
        os.kill(self.proxy.proc.pid, signal.SIGKILL)
        self.proxy.proc.wait(10)
        ztlib.stop_process(self.proxy.proc)
        type(self).start_proxy()
        type(self).wait_sso_ready()
        wait_until(lambda: ztlib.port_accepts(self.admin_port), 10, what="the admin listener")

    # ------------------------------------------------------------------ tests
    def test_state_dir_full_then_back(self):
        bob = self.login("bob")["session"]
        carol = self.login("carol")["session"]
        for s in (bob, carol):
            self.assertEqual(self.visit(self.unique("pre"), cookies=self.session_cookies(s)).status,
                             200)
        # Acknowledged while there is space.
        self.assertEqual(self.post("good2", 2002).status, 200)
        self.assertEqual(self.post("good", 1000).status, 200)
        st, body = self.revoke("early-user")
        self.assertEqual(st, 200, body)
        st, body = self.api("PUT", "/api/v1/devices/good2/status", {"status": "stolen"})
        self.assertEqual(st, 200, body)

        m0 = self.metrics()
        self.fill()
        # Small appends may still fit the last page of a file: go on until
        # the disk really refuses. Every answer is 200 (persisted) or 503.
        acked, refused = [], None
        for i in range(1, 60):
            r = self.post("good", 1000 + i)
            self.assertIn(r.status, (200, 503), r)
            if r.status == 503:
                refused = r
                break
            acked.append(1000 + i)
        self.assertIsNotNone(refused, "60 posture reports acknowledged on a full state dir: "
                             "the proxy acknowledges reports it has not persisted")
        doc = refused.json()
        self.assertEqual(doc.get("error"), "unavailable", doc)
        self.assertIn("try again", doc.get("message", ""), doc)
        self.assertIsNotNone(refused.header("retry-after"), refused)
        # The report that was refused is in force in memory all the same
        # (reports can only lower trust when they say so: never fail open).
        self.assertEqual(self.device_uptime("good"), 1000 + len(acked) + 1)

        revoked_ok, rev_refused = [], None
        for i in range(1, 60):
            # long subjects: the last page of the log fills up quickly
            user = "full-user-%d-%s" % (i, "x" * 200)
            st, body = self.revoke(user)
            self.assertIn(st, (200, 503), body)
            if st == 503:
                rev_refused = body
                break
            revoked_ok.append(user)
        self.assertIsNotNone(rev_refused, "revocations acknowledged on a full state dir")
        self.assertEqual(rev_refused.get("error"), "revoke_failed", rev_refused)

        # A device status override (a stolen laptop) is not acknowledged
        # either; it is in force at once all the same.
        st, body = self.api("PUT", "/api/v1/devices/good/status", {"status": "lost"})
        self.assertEqual(st, 503, body)
        self.assertIn("overrides.json", body.get("message", ""), body)
        st, doc = self.api("GET", "/api/v1/devices/good")
        self.assertEqual(doc.get("status"), "lost", doc)

        # The identity provider's back-channel logout is not acknowledged
        # either (the provider may retry); carol is out at once anyway.
        res = self.idp.logout_user("carol")
        try:
            bc = res.get("backchannel", [])
            self.assertTrue(bc, res)
            self.assertFalse([b for b in bc if b.get("ok")],
                             "back-channel logout acknowledged on a full disk: %r" % res)
        finally:
            self.next_second()
        wait_until(lambda: self.visit(self.unique("carol"), cookies=self.session_cookies(
            carol)).status == 302, 10, interval=0.2, what="carol's session refused")

        # Meanwhile the proxy serves, and says what is wrong.
        self.serving()
        self.assertEqual(self.visit(self.unique("bob"), cookies=self.session_cookies(bob)).status,
                         200)
        m = self.metrics()
        self.assertGreater(m.get("ztproxy_state_persist_errors_total", 0),
                           m0.get("ztproxy_state_persist_errors_total", 0))
        k = 'ztproxy_posture_reports_total{result="unavailable"}'
        self.assertGreater(m.get(k, 0), m0.get(k, 0))
        self.assertIn("cannot write", self.proxy.stderr())
        self.assertIn("revocation not persisted", self.proxy.stderr())

        # Space returns: writes succeed again without a restart.
        self.unfill()
        r = self.post("good", 5000)
        self.assertEqual(r.status, 200, r)
        st, body = self.revoke("bob")
        self.assertEqual(st, 200, body)
        st, body = self.api("PUT", "/api/v1/devices/good/status", {"status": "lost"})
        self.assertEqual(st, 200, body)
        self.assertEqual(self.visit(self.unique("bob-revoked"),
                                    cookies=self.session_cookies(bob)).status, 302)

        # kill -9 and restart: every acknowledged change is still in force,
        # and so are those that were only in memory when space returned.
        self.kill9_restart()
        self.assertEqual(self.device_uptime("good"), 5000)
        self.assertEqual(self.device_uptime("good2"), 2002)
        for dev, status in (("good", "lost"), ("good2", "stolen")):
            st, doc = self.api("GET", "/api/v1/devices/" + dev)
            self.assertEqual(doc.get("status"), status, "override of %s lost: %r" % (dev, doc))
        for name, s in (("bob", bob), ("carol", carol)):
            r = self.visit(self.unique("after-" + name), cookies=self.session_cookies(s))
            self.assert_to_idp(r, "%s's revoked session after kill -9" % name)
        with open(os.path.join(self.state, "revocations.log")) as f:
            text = f.read()
        for u in ["early-user"] + revoked_ok:
            self.assertIn(" %s\n" % u, text, "acknowledged revocation of %s lost" % u)
        self.serving()


if __name__ == "__main__":
    main()
