#!/usr/bin/env python3
"""SIGHUP reloads (issue 7): what did not change is not loaded again, what
changed always is, and SIGHUPs coalesce without losing the last change.

- A SIGHUP with the rules, directory and GeoIP inputs unchanged keeps the
  running compiled rules: the log says "unchanged ... (not compiled
  again)" and no "rules ... loaded" line appears.
- A rules file rewritten with the same size (only the version's last
  character differs) is compiled and served.
- A changed directory alone makes the (unchanged) rules compile again
  against it.
- Many SIGHUPs, each after a new version of the configuration and the
  rules (4,000 rules, so that a load takes a while and SIGHUPs arrive
  while one is in progress): the proxy ends in the last version of both
  files, serves throughout, and completes at most one reload per SIGHUP.
"""

import json
import os

import ztlib
from ztlib import wait_until

TOKEN = "skip-" + os.urandom(12).hex()


def rules_doc(version, fillers=0):
    rules = [{"id": "eng-only", "route": "app", "effect": "deny",
              "when": {"all": [{"path": {"prefix": "/eng"}}, {"not": {"group": "eng"}}]}},
             {"id": "app-known", "route": "app", "effect": "allow",
              "when": {"device_tier": {"at_least": "identified"}}}]
    rules += [{"id": "filler-%d" % i, "route": "app", "effect": "deny",
               "when": {"path": {"prefix": "/never/%d/%s" % (i, version)}}}
              for i in range(fillers)]
    return {"version": version, "rules": rules}


def directory_doc(version):
    return {"version": version,
            "groups": {"staff": {}, "eng": {"member_of": ["staff"]}},
            "users": {"alice@corp.example": {"groups": ["eng"]}}}


class ReloadSkipTest(ztlib.ProxyTestCase):

    @classmethod
    def routes(cls, n=0):
        r = [{"name": "app", "host": "app.test", "upstream": cls.up.url,
              "auth": {"mode": "none"}}]
        if n:
            r.append({"name": "new%d" % n, "host": "new.test", "path_prefix": "/v%d" % n,
                      "upstream": cls.up.url, "auth": {"mode": "none"}})
        return r

    @classmethod
    def config_extra(cls):
        cls.admin_port = ztlib.free_port()
        ztlib.write_admin_tokens(cls.tmp, "ops:" + TOKEN)
        state = os.path.join(cls.tmp, "state")
        os.makedirs(state, exist_ok=True)
        ztlib.write_atomic(os.path.join(cls.tmp, "rules.json"), rules_doc("r-1"))
        ztlib.write_atomic(os.path.join(cls.tmp, "directory.json"), directory_doc("d-1"))
        ztlib.write_atomic(os.path.join(cls.tmp, "inventory.json"),
                           [ztlib.inventory_record("good")])
        return {"state_dir": state,
                "device_trust": {"inventory": {"file": "inventory.json", "max_stale": "1h"}},
                "policy": {"rules": "rules.json", "directory": {"file": "directory.json"}},
                "admin": {"listen": "127.0.0.1:%d" % cls.admin_port,
                          "token_file": "admin.tokens"}}

    def setUp(self):
        wait_until(lambda: ztlib.port_accepts(self.admin_port), 10, what="admin listener")

    def readyz(self):
        st, out, _ = ztlib.admin_call(self.admin_port, self.pki.ca, "GET", "/readyz",
                                      token=TOKEN)
        return out if isinstance(out, dict) else json.loads(out)

    def rules_version(self):
        return self.readyz()["rules"]["version"]

    def write_rules(self, doc):
        ztlib.write_atomic(os.path.join(self.tmp, "rules.json"), doc)

    def write_config(self, n):
        extra = {k: v for k, v in self.cfg.items()
                 if k in ("state_dir", "device_trust", "policy", "admin")}
        cfg = ztlib.base_config(self.pki, self.port, self.routes(n), self.access_log, **extra)
        ztlib.write_config(self.cfg_path, cfg)

    def sighup_and_wait(self):
        off = self.proxy.stderr_size()
        self.proxy.sighup()
        self.proxy.wait_log(off, lambda l: "reload done" in l, 30, what="the reload")
        return self.proxy.stderr_since(off)

    def test_1_unchanged_rules_are_not_compiled_again(self):
        self.assertEqual(self.get("/x").status, 200)
        version = self.rules_version()
        text = self.sighup_and_wait()
        self.assertIn('policy: rules %s unchanged' % os.path.join(self.tmp, "rules.json"),
                      text)
        self.assertIn("(not compiled again)", text)
        self.assertNotRegex(text, r"policy: rules \S+ (re)?loaded")
        self.assertRegex(text, r"reload done: .*\(CPU: main thread [0-9.]+ ms, "
                               r"reload thread [0-9.]+ ms\)")
        self.assertEqual(self.rules_version(), version)
        self.assertEqual(self.get("/x").status, 200)
        self.assertEqual(self.get("/eng/x").status, 403)  # the rules still apply

    def test_2_same_size_change_is_compiled(self):
        self.write_rules(rules_doc("r-1"))
        self.sighup_and_wait()
        self.assertEqual(self.rules_version(), "r-1")
        before = json.dumps(rules_doc("r-1"))
        after = json.dumps(rules_doc("r-2"))
        self.assertEqual(len(before), len(after))
        self.write_rules(rules_doc("r-2"))
        off = self.proxy.stderr_size()
        self.sighup_and_wait()
        # By the SIGHUP, or by the file watcher if it saw the change first:
        # compiled either way, once.
        text = self.proxy.stderr_since(off)
        self.assertRegex(text, r'policy: rules \S+ (re)?loaded: 2 rules, version "r-2"')
        self.assertEqual(self.rules_version(), "r-2")

    def test_3_changed_directory_recompiles_the_rules(self):
        self.write_rules(rules_doc("r-3"))
        self.sighup_and_wait()
        self.assertEqual(self.rules_version(), "r-3")
        self.assertIn("unchanged", self.sighup_and_wait())
        off = self.proxy.stderr_size()
        ztlib.write_atomic(os.path.join(self.tmp, "directory.json"), directory_doc("d-2"))
        self.sighup_and_wait()
        self.assertEqual(self.readyz()["directory"]["version"], "d-2")
        text = self.proxy.stderr_since(off)
        # Either the SIGHUP compiled the rules against the new directory
        # ("loaded"), or the file watcher loaded the directory first (and
        # bound the rules to it), and the SIGHUP then found it all unchanged.
        if 'version "r-3" (not compiled again)' in text:
            self.assertRegex(text, r"policy: directory \S+directory.json loaded")
        else:
            self.assertRegex(text, r'policy: rules \S+ loaded: 2 rules, version "r-3"')
        self.assertEqual(self.get("/x").status, 200)

    def test_4_sighup_storm_ends_in_the_last_content(self):
        n_sent = 0
        last = 0
        off = self.proxy.stderr_size()
        for n in range(1, 31):
            self.write_config(n)
            self.write_rules(rules_doc("storm-%d" % n, fillers=4000))
            self.proxy.sighup()
            n_sent += 1
            last = n
        self.assertTrue(self.proxy.alive())
        wait_until(lambda: self.rules_version() == "storm-%d" % last, 120,
                   what="the last rules version live")

        def last_route_live():
            r = ztlib.http_request(self.port, "GET", "/v%d/x" % last, pki=self.pki,
                                   host="new.test")
            return r.status == 403

        wait_until(last_route_live, 120, interval=0.2, what="the last configuration live")
        r = ztlib.http_request(self.port, "GET", "/v%d/x" % (last - 1), pki=self.pki,
                               host="new.test")
        self.assertEqual(r.status, 404, "a route of an older configuration is live: %r" % r)
        # Every reload begun completes (none lost, none refused); the other
        # SIGHUPs were coalesced into them (or merged by the kernel).

        def settled():
            t = self.proxy.stderr_since(off)
            return t if t.count("SIGHUP: reloading") == t.count("reload done") else None
        text = wait_until(settled, 120, interval=0.2, what="every reload begun completed")
        done = text.count("reload done")
        self.assertGreaterEqual(done, 1)
        self.assertLessEqual(done, n_sent)
        self.assertNotIn("reload refused", text)
        self.assertEqual(self.get("/x").status, 200)
        self.assertEqual(self.proxy.sanitizer_report(), [])


if __name__ == "__main__":
    ztlib.main()
