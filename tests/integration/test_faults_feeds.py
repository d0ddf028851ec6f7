#!/usr/bin/env python3
"""Faults (issue 7): the inventory feed and the directory server, both
URLs (ztlib.FeedServer, polled every second), go down, then serve garbage
(invalid JSON, a truncated document, wrong types, 10 MB of junk, HTTP 500),
then good data again.

The whole time the last good state stays in force: device "good" keeps its
tier (route app needs "trusted"; it has a fresh report and the inventory
record, so it is "high") and alice keeps her directory group (checked with
the admin API's explain against the live directory). Each bad document is
refused with a precise log line, counted (ztproxy_inventory_loads_total /
ztproxy_directory_loads_total{result="refused"|"fetch_error"}), and the
feed age grows (ztproxy_inventory_feed_age_seconds). The good data is
picked up when it returns, without a restart. Then inventory.max_stale is
lowered by SIGHUP: with the feed serving garbage past it, the inventory
checks fail closed (403 with a "stale" reason, /readyz 503, the
ztproxy_inventory_stale gauge 1) until good data returns.
"""

import json
import os
import time

import ztlib
from ztlib import inventory_record, posture_report, wait_until

TOKEN = "feeds-" + os.urandom(12).hex()

RULES = {
    "version": "feeds-1",
    "rules": [
        {"id": "app-trusted", "route": "app", "effect": "allow",
         "when": {"device_tier": {"at_least": "trusted"}}},
        {"id": "grp-eng", "route": "grp", "effect": "allow", "when": {"group": "eng"}},
    ],
}


def directory_doc(version, users=("alice",)):
    return {"version": version,
            "groups": {"staff": {}, "eng": {"member_of": ["staff"]}},
            "users": {"%s@corp.example" % u: {"groups": ["eng"], "subject": u} for u in users}}


def inventory_body(devices):
    return json.dumps([inventory_record(d) for d in devices])


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


class FeedFaultsTest(ztlib.ProxyTestCase):
    inv = None
    dirf = None

    @classmethod
    def routes(cls):
        return [{"name": "app", "host": "app.test", "upstream": cls.up.url,
                 "auth": {"mode": "none"}},
                {"name": "grp", "host": "other.test", "upstream": cls.up.url,
                 "auth": {"mode": "none"}}]

    @classmethod
    def config_extra(cls):
        return {
            "state_dir": cls.state_dir,
            "device_trust": {"inventory": {"url": cls.inv.url, "poll": "1s", "timeout": "2s",
                                           "max_stale": cls.max_stale}},
            "policy": {"rules": "rules.json", "deny_details": True,
                       "directory": {"url": cls.dirf.url, "poll": "1s", "timeout": "2s"}},
            "admin": {"listen": "127.0.0.1:%d" % cls.admin_port, "token_file": "admin.tokens"},
        }

    @classmethod
    def setUpClass(cls):
        cls.tmp = ztlib.make_tmpdir("zt-%s-" % cls.__name__)
        cls.ups = {}
        try:
            cls.pki = ztlib.make_pki(os.path.join(cls.tmp, "pki"))
            cls.up = cls.ups["main"] = ztlib.Upstream(cls.tmp, "main").start()
            cls.state_dir = os.path.join(cls.tmp, "state")
            os.makedirs(cls.state_dir)
            ztlib.write_atomic(os.path.join(cls.tmp, "rules.json"), RULES)
            ztlib.write_admin_tokens(cls.tmp, "ops:" + TOKEN)
            cls.admin_port = ztlib.free_port()
            cls.max_stale = "1h"
            cls.inv = ztlib.FeedServer(inventory_body(["good"])).start()
            cls.dirf = ztlib.FeedServer(json.dumps(directory_doc("d-1")),
                                        path="/directory.json").start()
            cls.start_proxy()
            wait_until(lambda: ztlib.port_accepts(cls.admin_port), 10, what="admin listener")
            r = ztlib.post_posture(cls.port, cls.pki, "good", posture_report())
            if r.status != 200:
                raise AssertionError("posture report: %r" % r)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            for f in (cls.inv, cls.dirf):
                if f is not None:
                    f.stop()
        finally:
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

    def app_status(self):
        return ztlib.http_request(self.port, "GET", "/feeds-%s" % os.urandom(4).hex(),
                                  [("Accept", "application/json")], pki=self.pki)

    def assert_device_in_force(self, what):
        r = self.app_status()
        self.assertEqual(r.status, 200, "%s: device good lost its tier: %r" % (what, r))

    def alice_groups(self):
        st, doc = self.api("POST", "/api/v1/explain", {"context": {
            "user": "alice", "email": "alice@corp.example", "route": "grp"}})
        self.assertEqual(st, 200, doc)
        return doc.get("decision"), doc.get("context", {}).get("groups")

    def assert_groups_in_force(self, what):
        decision, groups = self.alice_groups()
        self.assertEqual(decision, "allow", "%s: alice lost her group: %r" % (what, groups))
        self.assertIn("eng", groups or [], what)

    def served_since(self, feed, t, status=200):
        """Polls answered since t with status (a 200 also counts the 304s
        that revalidate it)."""
        ok = (200, 304) if status == 200 else (status,)
        with feed._lock:
            return [r for r in feed.requests if r["time"] >= t and r["status"] in ok]

    def serve_both(self, inv_body, dir_body, status=None):
        """Switch both servers and wait until each has answered a poll with
        it, and one more poll so the proxy had time to process it."""
        t = time.time()
        for f, b in ((self.inv, inv_body), (self.dirf, dir_body)):
            with f._lock:
                f.fail_status = status
            f.set_body(b)
        want = status or 200
        for f in (self.inv, self.dirf):
            wait_until(lambda f=f: len(self.served_since(f, t, want)) >= 2, 30, interval=0.1,
                       what="two polls of %s answered %d" % (f.path, want))

    # ------------------------------------------------------------------ tests
    def test_1_down_then_garbage_then_good(self):
        self.assert_device_in_force("at start")
        self.assert_groups_in_force("at start")
        m0 = self.metrics()
        off = self.proxy.stderr_size()

        # Down: nothing listens.
        t = time.time()
        self.inv.stop()
        self.dirf.stop()
        time.sleep(3)
        self.assert_device_in_force("feeds down")
        self.assert_groups_in_force("feeds down")
        self.inv.start()
        self.dirf.start()
        wait_until(lambda: self.served_since(self.inv, t), 20, what="the feed polled again")

        good_inv = inventory_body(["good"])
        good_dir = json.dumps(directory_doc("d-1"))
        wrong_inv = json.dumps([dict(inventory_record("good"), managed="yes")])
        wrong_dir = json.dumps({"version": "x", "groups": {"eng": {"member_of": 5}},
                                "users": {}})
        junk = (b"\x00\xff{[" * (10 * 1024 * 1024 // 4))
        steps = [
            ("invalid JSON", "{not json", "{not json"),
            ("truncated", good_inv[:len(good_inv) // 2], good_dir[:len(good_dir) // 2]),
            ("wrong types", wrong_inv, wrong_dir),
            ("10 MB of junk", junk, junk),
        ]
        for what, ib, db in steps:
            self.serve_both(ib, db)
            self.assert_device_in_force(what)
            self.assert_groups_in_force(what)
            self.assertTrue(self.proxy.alive(), what)
        self.serve_both(good_inv, good_dir, status=500)
        self.assert_device_in_force("HTTP 500")
        self.assert_groups_in_force("HTTP 500")

        # Logged precisely, counted, and the age shows it.
        log = self.proxy.stderr_since(off)
        inv_lines = [l for l in log.splitlines() if "device trust" in l and "refused" in l]
        self.assertTrue(inv_lines, "no log line for a refused inventory:\n%s" % log[-3000:])
        dir_lines = [l for l in log.splitlines() if "directory" in l and
                     ("refused" in l or "keeping" in l or "error" in l)]
        self.assertTrue(dir_lines, "no log line for a refused directory:\n%s" % log[-3000:])
        m = self.metrics()
        for fam in ("ztproxy_inventory_loads_total", "ztproxy_directory_loads_total"):
            for res in ("refused", "fetch_error"):
                k = '%s{result="%s"}' % (fam, res)
                self.assertGreater(m.get(k, 0), m0.get(k, 0), k)
        self.assertGreaterEqual(m.get("ztproxy_inventory_feed_age_seconds", 0), 3, m)
        self.assertGreaterEqual(m.get("ztproxy_directory_age_seconds", 0), 3, m)
        st, ready = self.api("GET", "/readyz")
        self.assertEqual(st, 200, ready)  # max_stale 1h: old, not stale
        self.assertGreaterEqual(ready["device_trust"]["feed_age"], 3, ready)

        # Good again, with new content: picked up without a restart.
        self.serve_both(inventory_body(["good", "good2"]),
                        json.dumps(directory_doc("d-2", users=("alice", "bob"))))
        wait_until(lambda: self.metrics().get("ztproxy_inventory_devices") == 2, 20,
                   what="the new inventory live")
        wait_until(lambda: self.api("GET", "/readyz")[1]["directory"]["version"] == "d-2", 20,
                   what="the new directory live")
        self.assertLess(self.metrics().get("ztproxy_inventory_feed_age_seconds", 99), 3)
        self.assert_device_in_force("good again")
        self.assert_groups_in_force("good again")
        st, doc = self.api("POST", "/api/v1/explain", {"context": {
            "user": "bob", "email": "bob@corp.example", "route": "grp"}})
        self.assertEqual(doc.get("decision"), "allow", doc)

    def test_2_max_stale_fails_closed(self):
        cfg = dict(self.cfg)
        cfg["device_trust"] = {"inventory": dict(cfg["device_trust"]["inventory"],
                                                 max_stale="3s")}
        off = self.proxy.stderr_size()
        ztlib.write_config(self.cfg_path, cfg)
        self.proxy.sighup()
        self.proxy.wait_log(off, lambda l: "reload" in l.lower(), 20, what="the reload")
        self.serve_both("{not json", "{not json")
        wait_until(lambda: self.app_status().status == 403, 30, interval=0.3,
                   what="device checks fail closed past max_stale")
        r = self.app_status()
        doc = r.json()
        self.assertIn("stale", json.dumps(doc).lower(), doc)
        st, ready = self.api("GET", "/readyz")
        self.assertEqual(st, 503, ready)
        self.assertTrue(ready["device_trust"]["stale"], ready)
        self.assertEqual(self.metrics().get("ztproxy_inventory_stale"), 1)
        # The directory has no max_stale: its last good groups still apply.
        self.assert_groups_in_force("inventory stale")
        # Good data returns: allowed again, ready again.
        self.serve_both(inventory_body(["good", "good2"]),
                        json.dumps(directory_doc("d-2", users=("alice", "bob"))))
        wait_until(lambda: self.app_status().status == 200, 30, interval=0.3,
                   what="allowed once the feed is good again")
        wait_until(lambda: self.api("GET", "/readyz")[0] == 200, 20, what="ready again")
        self.assertEqual(self.metrics().get("ztproxy_inventory_stale"), 0)
        self.assertTrue(self.proxy.alive())


if __name__ == "__main__":
    ztlib.main()
