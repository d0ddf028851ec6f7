#!/usr/bin/env python3
"""Groups forwarded per route: X-ZT-Groups and the assertion's "groups"
carry only the groups the route's rules name (route "forward_groups":
"referenced", the default), or all of the user's groups when the route
says "forward_groups": "all" (docs/policy.md, docs/assertion.md).

Real processes: ztproxy, the dev IdP (bearer tokens signed by it),
upstream.py. frank is in staff, finance and secops; the rules of both
routes name only staff.
"""

import os
import subprocess

import ztlib
from idp import SSOTestCase, jwt_decode, main
from ztlib import header_values, wait_until


def rules_doc():
    return {"version": "g-1", "rules": [
        {"id": "wiki-staff", "route": "wiki", "effect": "allow", "when": {"group": "staff"}},
        {"id": "tools-staff", "route": "tools", "effect": "allow", "when": {"group": "staff"}},
        {"id": "wiki-watch", "route": "wiki", "effect": "deny", "mode": "monitor",
         "when": {"group": "contractors"}},
    ]}


def directory_doc():
    return {
        "version": "d-1",
        "groups": {"staff": {}, "finance": {}, "secops": {}, "contractors": {}},
        "users": {
            "frank@corp.example": {"groups": ["staff", "finance", "secops"], "subject": "frank"},
            "gina@corp.example": {"groups": ["staff", "contractors"], "subject": "gina"},
        },
    }


class GroupsForwardTest(SSOTestCase):

    @classmethod
    def routes(cls):
        up = cls.up.url
        return [
            # Browser sign-in (the class waits for it to redirect to the IdP).
            {"name": "app", "host": "app.test", "upstream": up, "auth": {"mode": "any"}},
            # The default: only the groups the rules name.
            {"name": "wiki", "host": "loose.test", "upstream": up, "auth": {"mode": "bearer"}},
            # Opted into all of the user's groups.
            {"name": "tools", "host": "admin.test", "upstream": up, "forward_groups": "all",
             "auth": {"mode": "bearer"}},
        ]

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
            ztlib.write_atomic(rules, rules_doc())
            ztlib.write_atomic(os.path.join(cls.tmp, "directory.json"), directory_doc())
        super().start_proxy(cfg_update)

    def call(self, host, sub, email):
        tok = self.idp.mint(claims={"sub": sub, "email": email})
        path = self.unique("groups")
        r = self.visit(path, host=host, headers=[("Authorization", "Bearer " + tok),
                                                 ("X-ZT-Groups", "spoofed")])
        self.assertEqual(r.status, 200, r)
        wait_until(lambda: self.upstream_saw(path), 10, what="%s at the upstream" % path)
        rec = self.upstream_heads(path)[0]
        assertion = header_values(rec, "x-zt-assertion")
        self.assertEqual(len(assertion), 1, rec)
        return header_values(rec, "x-zt-groups"), jwt_decode(assertion[0])[1].get("groups")

    def test_01_only_the_groups_the_rules_name(self):
        hdr, claim = self.call("loose.test", "frank", "frank@corp.example")
        self.assertEqual(hdr, ["staff"], "X-ZT-Groups on a route whose rules name only staff")
        self.assertEqual(claim, ["staff"], "assertion groups on that route")

    def test_02_monitor_rules_count_as_named(self):
        # gina: staff + contractors; wiki's monitor rule names contractors.
        hdr, claim = self.call("loose.test", "gina", "gina@corp.example")
        self.assertEqual(hdr, ["contractors,staff"])
        self.assertEqual(claim, ["contractors", "staff"])

    def test_03_forward_groups_all(self):
        hdr, claim = self.call("admin.test", "frank", "frank@corp.example")
        self.assertEqual(hdr, ["finance,secops,staff"])
        self.assertEqual(claim, ["finance", "secops", "staff"])

    def test_04_bad_forward_groups_refused(self):
        cfg = ztlib.base_config(self.pki, ztlib.free_port(),
                                [dict(self.routes()[1], forward_groups="some")],
                                os.path.join(self.tmp, "x.log"), **self.config_extra())
        path = ztlib.write_config(self.tmp, cfg, name="bad.json")
        res = subprocess.run([ztlib.ZTPROXY_BIN, "-c", path, "--check"], cwd=self.tmp,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, timeout=60)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn(b'$.routes[0].forward_groups: expected "referenced" or "all", got "some"',
                      res.stderr + res.stdout)


if __name__ == "__main__":
    main()
