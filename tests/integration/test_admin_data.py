#!/usr/bin/env python3
"""The admin API's data endpoints (issue 6; docs/admin-api.md): recent
decisions, what-if, devices, the directory and sessions, each with its
refusals, and their effect on the very next request through the proxy.

Real processes: ztproxy with "identity" (the dev IdP), "device_trust" (an
inventory file: devices good (owner alice) and good2 (owner bob), both with
a posture report that scores "high"), "policy" (rules.json, directory.json
as a file, audit.log), "state_dir" and "admin" (a token), upstream.py and
the dev IdP (node). Device "stranger" has a certificate but is in no
inventory ("untrusted").

Routes and rules:
  open   open.test   no identity   open-trusted: allow device_tier >= trusted
  loose  loose.test  bearer        loose-staff:  allow group staff
  app    app.test    any           app-staff:    allow group staff
"""

import json
import os
import time
import unittest

import ztlib
from idp import SSOTestCase, main
from ztlib import wait_until

TOKEN = "tok-admindata-0123456789abcdef"

RULES = {
    "version": "ad-1",
    "rules": [
        {"id": "open-trusted", "route": "open", "effect": "allow",
         "when": {"device_tier": {"at_least": "trusted"}}},
        {"id": "loose-staff", "route": "loose", "effect": "allow", "when": {"group": "staff"}},
        {"id": "app-staff", "route": "app", "effect": "allow", "when": {"group": "staff"}},
    ],
}

# What-if: the open route lets anyone in (stranger gains), the loose route
# needs secops (bob loses).
PROPOSED = {
    "version": "ad-2",
    "rules": [
        {"id": "open-anyone", "route": "open", "effect": "allow",
         "when": {"path": {"prefix": "/"}}},
        {"id": "loose-secops", "route": "loose", "effect": "allow", "when": {"group": "secops"}},
        {"id": "app-staff", "route": "app", "effect": "allow", "when": {"group": "staff"}},
    ],
}


def directory_doc():
    return {
        "version": "d1",
        "groups": {"staff": {}, "eng": {"member_of": ["staff"]}, "secops": {}},
        "users": {
            "alice@corp.example": {"groups": ["eng", "secops"], "subject": "alice"},
            "bob@corp.example": {"groups": ["eng"], "subject": "bob"},
        },
    }


class AdminDataTest(SSOTestCase):

    @classmethod
    def routes(cls):
        up = cls.up.url
        return [
            {"name": "open", "host": "open.test", "upstream": up, "auth": {"mode": "none"}},
            {"name": "loose", "host": "loose.test", "upstream": up, "auth": {"mode": "bearer"}},
            {"name": "app", "host": "app.test", "upstream": up, "auth": {"mode": "any"}},
        ]

    @classmethod
    def config_extra(cls):
        cfg = super().config_extra()
        cfg["state_dir"] = cls.state_dir
        cfg["device_trust"] = {"inventory": {"file": "inventory.json", "max_stale": "1h"},
                               "posture": {"rate_limit_per_minute": 10}}
        cfg["policy"] = {"rules": "rules.json", "directory": {"file": "directory.json"},
                         "audit_log": "audit.log", "deny_details": True}
        cfg["admin"] = {"listen": "127.0.0.1:%d" % cls.admin_port, "admin_groups": ["secops"],
                        "token_file": "admin.tokens", "decisions_ring": 1000}
        return cfg

    @classmethod
    def start_proxy(cls, cfg_update=None):
        if not hasattr(cls, "admin_port"):
            cls.pki.device("stranger")
            cls.admin_port = ztlib.free_port()
            cls.state_dir = os.path.join(cls.tmp, "state")
            os.makedirs(cls.state_dir, exist_ok=True)
            cls.dir_path = os.path.join(cls.tmp, "directory.json")
            cls.audit_path = os.path.join(cls.tmp, "audit.log")
            ztlib.write_atomic(os.path.join(cls.tmp, "rules.json"), RULES)
            ztlib.write_atomic(cls.dir_path, directory_doc())
            ztlib.write_atomic(os.path.join(cls.tmp, "inventory.json"), [
                ztlib.inventory_record("good", owner="alice@corp.example"),
                ztlib.inventory_record("good2", owner="bob@corp.example", site="berlin")])
            tokens = os.path.join(cls.tmp, "admin.tokens")
            with open(tokens, "w") as f:
                f.write("ops:%s\n" % TOKEN)
            os.chmod(tokens, 0o600)
        super().start_proxy(cfg_update)
        wait_until(lambda: ztlib.port_accepts(cls.admin_port), 10, what="the admin listener")
        for d in ("good", "good2"):
            r = ztlib.post_posture(cls.port, cls.pki, d, ztlib.posture_report())
            if r.status != 200:
                raise AssertionError("posture of %s: %r" % (d, r))

    # ---------------------------------------------------------------- helpers
    def api(self, method, path, body=None, token=TOKEN, raw=None):
        """One admin call: (status, parsed JSON or text)."""
        st, out, _ = ztlib.admin_call(self.admin_port, self.pki.ca, method, path, body=body,
                                      token=token, raw=raw)
        return st, out

    def send(self, host, path=None, device="good", headers=None):
        path = path or self.unique("ad")
        hl = [("Accept", "application/json")] + list(headers or [])
        r = ztlib.http_request(self.port, "GET", path, hl, pki=self.pki, device=device,
                               host="%s:%d" % (host, self.port), server_hostname=host)
        return path, r

    def bearer(self, user):
        email = "%s@corp.example" % user
        return [("Authorization", "Bearer " + self.idp.mint(claims={"sub": user, "email": email}))]

    def decisions(self, **q):
        qs = "&".join("%s=%s" % kv for kv in q.items())
        st, body = self.api("GET", "/api/v1/decisions" + ("?" + qs if qs else ""))
        self.assertEqual(st, 200, body)
        return body["decisions"]

    def admin_events(self, what):
        return [o for _, _, o in ztlib.read_audit_log(self.audit_path)
                if o is not None and o.get("event") == "admin" and o.get("what") == what]

    def assert_error(self, resp, status, code=None):
        st, body = resp
        self.assertEqual(st, status, body)
        if code is not None:
            self.assertEqual(body["error"], code, body)
        return body

    # ---------------------------------------------------------------- decisions
    def test_decisions(self):
        p_ok, r = self.send("open.test", device="good")
        self.assertEqual(r.status, 200, r)
        p_no, r = self.send("open.test", device="stranger")
        self.assertEqual(r.status, 403, r)

        ds = self.decisions(device="stranger", route="open", limit=50)
        mine = [d for d in ds if d["path"] == p_no]
        self.assertEqual(len(mine), 1, ds)
        d = mine[0]
        self.assertEqual(d["effect"], "deny")
        self.assertEqual(d["rule"], "default-deny")
        self.assertEqual(d["tier"], "untrusted")
        self.assertEqual(d["client_ip"], "127.0.0.1")
        self.assertTrue(d["reasons"], d)
        self.assertTrue(d["request_id"])
        for k in ("time", "method", "user", "email", "score", "country", "monitor", "groups"):
            self.assertIn(k, d)
        ok = [d for d in self.decisions(device="good", effect="allow") if d["path"] == p_ok]
        self.assertEqual(len(ok), 1)
        self.assertEqual(ok[0]["rule"], "open-trusted")
        self.assertEqual(ok[0]["tier"], "high")
        # newest first, filters hold, limit holds
        both = self.decisions(route="open", limit=1000)
        paths = [d["path"] for d in both]
        self.assertLess(paths.index(p_no), paths.index(p_ok))
        self.assertTrue(all(d["route"] == "open" for d in both))
        self.assertEqual(len(self.decisions(limit=1)), 1)
        self.assertEqual(self.decisions(effect="step_up", device="stranger"), [])
        # refusals
        self.assert_error(self.api("GET", "/api/v1/decisions?limit=0"), 400, "bad_query")
        self.assert_error(self.api("GET", "/api/v1/decisions?limit=1001"), 400, "bad_query")
        self.assert_error(self.api("GET", "/api/v1/decisions?limit=5x"), 400, "bad_query")
        self.assert_error(self.api("GET", "/api/v1/decisions?effect=maybe"), 400, "bad_query")
        self.assert_error(self.api("POST", "/api/v1/decisions", {}), 405)
        self.assert_error(self.api("GET", "/api/v1/decisions/x"), 404)
        self.assert_error(self.api("GET", "/api/v1/decisions", token=None), 401)
        self.assert_error(self.api("GET", "/api/v1/decisions", token="wrong-token"), 403)

    # ------------------------------------------------------------------ devices
    def test_devices_list_and_detail(self):
        st, body = self.api("GET", "/api/v1/devices")
        self.assertEqual(st, 200, body)
        by_id = {d["id"]: d for d in body["devices"]}
        self.assertIn("good", by_id)
        self.assertIn("good2", by_id)
        g2 = by_id["good2"]
        self.assertEqual((g2["owner"], g2["status"], g2["tier"], g2["score"]),
                         ("bob@corp.example", "active", "high", 100))
        self.assertEqual(g2["failing"], [])
        self.assertFalse(g2["posture_stale"])
        self.assertIsInstance(g2["posture_age"], int)
        # filters
        st, body = self.api("GET", "/api/v1/devices?owner=bob@corp.example")
        self.assertEqual([d["id"] for d in body["devices"]], ["good2"])
        st, body = self.api("GET", "/api/v1/devices?tier=untrusted&status=active")
        self.assertNotIn("good2", [d["id"] for d in body["devices"]])
        st, body = self.api("GET", "/api/v1/devices?stale=1")
        self.assertNotIn("good2", [d["id"] for d in body["devices"]])
        st, body = self.api("GET", "/api/v1/devices?stale=0&limit=1")
        self.assertEqual(len(body["devices"]), 1)
        self.assert_error(self.api("GET", "/api/v1/devices?stale=maybe"), 400, "bad_query")
        self.assert_error(self.api("GET", "/api/v1/devices?status=gone"), 400, "bad_query")
        self.assert_error(self.api("GET", "/api/v1/devices?limit=-1"), 400, "bad_query")
        self.assert_error(self.api("DELETE", "/api/v1/devices"), 405)

        st, d = self.api("GET", "/api/v1/devices/good2")
        self.assertEqual(st, 200, d)
        self.assertEqual(d["id"], "good2")
        ids = {c["id"]: c for c in d["checks"]}
        self.assertIn("disk", ids)
        self.assertTrue(ids["disk"]["ok"])
        self.assertEqual(ids["disk"]["points"], ids["disk"]["weight"])
        self.assertIn("remediation", ids["disk"])
        self.assertFalse(ids["disk"]["in_grace"])
        self.assertTrue(ids["inventory_active"]["hard"])
        self.assertEqual(sum(c["points"] for c in d["checks"]), 100)
        self.assertEqual(d["inventory"]["serial"], "SN-good2")
        self.assertEqual(d["inventory"]["attributes"]["site"], "berlin")
        self.assertTrue(d["posture"]["disk_encryption"])
        self.assertRegex(d["posture"]["received"], r"^\d{4}-\d\d-\d\dT")

        self.assert_error(self.api("GET", "/api/v1/devices/nobody-has-this"), 404, "not_found")
        self.assert_error(self.api("GET", "/api/v1/devices/bad!id"), 400, "bad_device_id")
        self.assert_error(self.api("GET", "/api/v1/devices/good2/other"), 404)

    def test_device_lost_then_active(self):
        _, r = self.send("open.test", device="good")
        self.assertEqual(r.status, 200, r)
        bad = [
            ({"status": "broken"}, "bad_body"),
            ({}, "bad_body"),
            ({"status": "lost", "why": "x"}, "bad_body"),
            ({"status": 5}, "bad_body"),
            ({"status": "lost", "comment": "x" * 2000}, "bad_body"),
        ]
        for body, code in bad:
            self.assert_error(self.api("PUT", "/api/v1/devices/good/status", body), 400, code)
        self.assert_error(self.api("PUT", "/api/v1/devices/good/status", raw=b"[1]"), 400)
        self.assert_error(self.api("GET", "/api/v1/devices/good/status"), 405)
        _, r = self.send("open.test", device="good")
        self.assertEqual(r.status, 200, "a refused change changed something: %r" % r)

        st, d = self.api("PUT", "/api/v1/devices/good/status",
                         {"status": "lost", "comment": "left on a train"})
        self.assertEqual(st, 200, d)
        self.assertEqual((d["status"], d["override"], d["tier"]), ("lost", True, "untrusted"))
        self.assertIn("device_lost", d["failing"])
        p, r = self.send("open.test", device="good")
        self.assertEqual(r.status, 403, r)
        last = self.decisions(device="good", limit=1)[0]
        self.assertEqual((last["path"], last["effect"], last["status"]), (p, "deny", "lost"))
        # persisted by the writer thread
        ov = os.path.join(self.state_dir, "overrides.json")
        wait_until(lambda: os.path.exists(ov) and json.load(open(ov)).get("good") == "lost", 10,
                   what="overrides.json to say lost")
        ev = wait_until(lambda: self.admin_events("device status"), 10, what="the audit event")
        self.assertEqual(ev[-1]["actor"], "token:ops")
        self.assertEqual(ev[-1]["detail"]["device"], "good")
        self.assertEqual(ev[-1]["detail"]["status"], "lost")
        self.assertEqual(ev[-1]["detail"]["comment"], "left on a train")

        st, d = self.api("PUT", "/api/v1/devices/good/status", {"status": "active"})
        self.assertEqual((st, d["status"], d["tier"]), (200, "active", "high"), d)
        p, r = self.send("open.test", device="good")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.decisions(device="good", limit=1)[0]["effect"], "allow")
        st, d = self.api("PUT", "/api/v1/devices/good/status", {"status": None})
        self.assertEqual((st, d["override"], d["status"]), (200, False, "active"), d)
        wait_until(lambda: "good" not in json.load(open(ov)), 10, what="the override cleared")

    # ---------------------------------------------------------------- directory
    def test_directory_view_and_edit(self):
        st, body = self.api("GET", "/api/v1/directory")
        self.assertEqual(st, 200, body)
        self.assertEqual((body["source"], body["version"]), ("file", "d1"))
        g = {x["name"]: x for x in body["groups"]}
        self.assertEqual(sorted(g["eng"]["members"]), ["alice@corp.example", "bob@corp.example"])
        self.assertEqual(g["staff"]["groups"], ["eng"])
        self.assertEqual(g["eng"]["member_of"], ["staff"])
        self.assertEqual(g["staff"]["members"], [])

        _, r = self.send("loose.test", headers=self.bearer("bob"))
        self.assertEqual(r.status, 200, r)
        st, body = self.api("DELETE", "/api/v1/directory/groups/eng/members/bob@corp.example")
        self.assertEqual(st, 200, body)
        self.assertEqual((body["changed"], body["member"]), (True, False))
        # live before the answer came back
        p, r = self.send("loose.test", headers=self.bearer("bob"))
        self.assertEqual(r.status, 403, r)
        d = self.decisions(route="loose", limit=1)[0]
        self.assertEqual((d["path"], d["effect"], d["groups"]), (p, "deny", []))
        with open(self.dir_path) as f:
            self.assertEqual(json.load(f)["users"]["bob@corp.example"]["groups"], [])
        self.assertTrue(self.admin_events("directory remove"))
        # removing again: not a member
        self.assert_error(self.api("DELETE", "/api/v1/directory/groups/eng/members/"
                                   "bob@corp.example"), 404, "not_member")

        st, body = self.api("PUT", "/api/v1/directory/groups/eng/members/BOB@corp.example")
        self.assertEqual((st, body["changed"], body["user"]), (200, True, "bob@corp.example"))
        _, r = self.send("loose.test", headers=self.bearer("bob"))
        self.assertEqual(r.status, 200, r)
        st, body = self.api("PUT", "/api/v1/directory/groups/eng/members/bob@corp.example")
        self.assertEqual((st, body["changed"]), (200, False))
        self.assertTrue(self.admin_events("directory add"))

        # a new user keyed by e-mail; the parser refuses what is not one
        st, body = self.api("PUT", "/api/v1/directory/groups/staff/members/dan@corp.example")
        self.assertEqual(st, 200, body)
        before = open(self.dir_path).read()
        self.assert_error(self.api("PUT", "/api/v1/directory/groups/staff/members/not-an-email"),
                          422, "invalid_directory")
        self.assert_error(self.api("PUT", "/api/v1/directory/groups/nope/members/bob@corp.example"),
                          404, "unknown_group")
        self.assert_error(self.api("DELETE", "/api/v1/directory/groups/eng/members/x@corp.example"),
                          404, "not_member")
        self.assertEqual(open(self.dir_path).read(), before, "a refused edit changed the file")
        self.assert_error(self.api("POST", "/api/v1/directory/groups/eng/members/bob@corp.example"),
                          405)
        self.assert_error(self.api("PUT", "/api/v1/directory/groups/eng"), 404)
        self.assert_error(self.api("PUT", "/api/v1/directory"), 405)

    # ------------------------------------------------------------------ what-if
    def test_whatif(self):
        _, r = self.send("open.test", device="stranger")
        self.assertEqual(r.status, 403)
        _, r = self.send("loose.test", headers=self.bearer("bob"))
        self.assertEqual(r.status, 200)
        _, r = self.send("loose.test", headers=self.bearer("alice"))
        self.assertEqual(r.status, 200)

        st, body = self.api("POST", "/api/v1/whatif", {"document": PROPOSED})
        self.assertEqual(st, 200, body)
        self.assertGreaterEqual(body["replayed"], 3)
        gains = [g for g in body["gains"]
                 if (g["route"], g["device"], g["user"]) == ("open", "stranger", None)]
        self.assertEqual(len(gains), 1, body["gains"])
        self.assertEqual((gains[0]["was"], gains[0]["now"], gains[0]["rule"]),
                         ("deny", "allow", "open-anyone"))
        self.assertGreaterEqual(gains[0]["count"], 1)
        losses = [g for g in body["losses"] if g["route"] == "loose"]
        self.assertEqual({g["user"] for g in losses}, {"bob@corp.example"}, body["losses"])
        self.assertEqual((losses[0]["was"], losses[0]["now"]), ("allow", "deny"))
        self.assertGreaterEqual(body["by_route"]["loose"]["losses"], 1)
        self.assertGreaterEqual(body["by_route"]["loose"]["unchanged"], 1)  # alice (secops)
        self.assertGreaterEqual(body["by_route"]["open"]["gains"], 1)
        # nothing changed: the live rules still decide as before
        _, r = self.send("open.test", device="stranger")
        self.assertEqual(r.status, 403)

        bad = dict(PROPOSED, rules=PROPOSED["rules"] + [
            {"id": "typo", "route": "open", "effect": "allow", "when": {"group": "stafff"}}])
        body = self.assert_error(self.api("POST", "/api/v1/whatif", {"document": bad}), 422,
                                 "invalid_rules")
        self.assertIn("stafff", body["message"])
        self.assertTrue(body["errors"], body)
        self.assert_error(self.api("POST", "/api/v1/whatif", {}), 400, "bad_body")
        self.assert_error(self.api("POST", "/api/v1/whatif", {"document": []}), 400, "bad_body")
        self.assert_error(self.api("POST", "/api/v1/whatif", {"document": PROPOSED, "x": 1}),
                          400, "bad_body")
        self.assert_error(self.api("GET", "/api/v1/whatif"), 405)

    # ----------------------------------------------------------------- sessions
    def test_session_revoke(self):
        self.next_second()
        login = self.login(user="bob", device="good2")
        cookies = self.session_cookies(login["session"])
        path = self.unique("sess")
        r = self.visit(path, cookies=cookies, device="good2")
        self.assertEqual(r.status, 200, r)
        r = self.visit("/.zt/whoami", cookies=cookies, device="good2",
                       headers={"Accept": "application/json"})
        self.assertEqual(r.status, 200, r)
        sub = r.json()["user"]["subject"]

        refusals = [{}, {"user": "bob", "session_id": "00" * 16}, {"user": ""},
                    {"user": 5}, {"user": "x" * 300}, {"session_id": "zz" * 16},
                    {"session_id": "00" * 15}, {"user": "bob", "extra": 1}]
        for b in refusals:
            self.assert_error(self.api("POST", "/api/v1/sessions/revoke", b), 400, "bad_body")
        self.assert_error(self.api("GET", "/api/v1/sessions/revoke"), 405)
        self.assert_error(self.api("POST", "/api/v1/sessions/other", {"user": "bob"}), 404)

        st, body = self.api("POST", "/api/v1/sessions/revoke", {"user": sub})
        self.assertEqual((st, body), (200, {"revoked": True, "user": sub}))
        r = self.visit(self.unique("sess"), cookies=cookies, device="good2")
        self.assertNotEqual(r.status, 200, "a revoked session still works: %r" % r)
        self.assertIn(r.status, (302, 401), r)
        log = os.path.join(self.state_dir, "revocations.log")
        with open(log) as f:
            self.assertIn(sub, f.read())
        ev = wait_until(lambda: self.admin_events("session revoke"), 10, what="the audit event")
        self.assertEqual(ev[-1]["detail"]["user"], sub)

        sid = os.urandom(16).hex()
        st, body = self.api("POST", "/api/v1/sessions/revoke", {"session_id": sid})
        self.assertEqual((st, body["session_id"]), (200, sid))
        with open(log) as f:
            self.assertIn(sid, f.read().lower())

        # persisted: a restart does not bring the session back
        self.restart_proxy()
        r = self.visit(self.unique("sess"), cookies=cookies, device="good2")
        self.assertIn(r.status, (302, 401), "revoked session after a restart: %r" % r)


class AdminDataBareTest(ztlib.ProxyTestCase):
    """No identity, no directory: the endpoints that need them say so (409),
    the others work; and the same without any policy."""

    POLICY = True

    @classmethod
    def routes(cls):
        return [{"name": n, "host": n + ".test", "upstream": cls.up.url,
                 "auth": {"mode": "none"}} for n in ("open", "loose", "app")]

    @classmethod
    def config_extra(cls):
        cfg = {"state_dir": os.path.join(cls.tmp, "state"),
               "admin": {"listen": "127.0.0.1:%d" % cls.admin_port,
                         "token_file": "admin.tokens"}}
        if cls.POLICY:
            cfg["policy"] = {"rules": "rules.json", "audit_log": "off"}
        return cfg

    @classmethod
    def start_proxy(cls, cfg_update=None):
        cls.admin_port = ztlib.free_port()
        ztlib.write_atomic(os.path.join(cls.tmp, "rules.json"), RULES)
        tokens = os.path.join(cls.tmp, "admin.tokens")
        with open(tokens, "w") as f:
            f.write("ops:%s\n" % TOKEN)
        os.chmod(tokens, 0o600)
        super().start_proxy(cfg_update)
        wait_until(lambda: ztlib.port_accepts(cls.admin_port), 10, what="the admin listener")

    api = AdminDataTest.api
    assert_error = AdminDataTest.assert_error

    def test_refusals_without_identity_or_directory(self):
        st, body = self.api("GET", "/api/v1/directory")
        self.assertEqual(st, 200, body)
        self.assertEqual((body["source"], body["loaded"], body["groups"]), (None, False, []))
        self.assert_error(self.api("PUT", "/api/v1/directory/groups/eng/members/a@corp.example"),
                          409, "not_a_file")
        self.assert_error(self.api("POST", "/api/v1/sessions/revoke", {"user": "bob"}), 409,
                          "no_sessions")
        # a device nobody knows yet can be marked lost before it shows up
        st, body = self.api("PUT", "/api/v1/devices/laptop-9/status", {"status": "stolen"})
        self.assertEqual((st, body["status"], body["known"]), (200, "stolen", False), body)
        st, body = self.api("GET", "/api/v1/devices?status=stolen")
        self.assertEqual([d["id"] for d in body["devices"]], ["laptop-9"])
        if self.POLICY:
            st, body = self.api("POST", "/api/v1/whatif", {"document": PROPOSED})
            self.assertEqual(st, 200, body)
        else:
            self.assert_error(self.api("POST", "/api/v1/whatif", {"document": PROPOSED}), 409,
                              "no_policy")
        st, body = self.api("GET", "/api/v1/decisions")
        self.assertEqual(st, 200, body)


class AdminDataNoPolicyTest(AdminDataBareTest):
    POLICY = False


if __name__ == "__main__":
    main()
