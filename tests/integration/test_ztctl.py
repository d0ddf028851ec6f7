#!/usr/bin/env python3
"""ztctl, the security team's command line: policy lint / test / explain,
audit verify, help and usage errors. Runs the real binary.

  ZTCTL_BIN      the binary (default $ZT_BUILD_DIR/ztctl, else $ZT_SOURCE_DIR/build/ztctl)
  ZT_SOURCE_DIR  the repository root (default: two levels above this file)
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("ZT_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD_DIR = os.environ.get("ZT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
ZTCTL_BIN = os.environ.get("ZTCTL_BIN") or os.path.join(BUILD_DIR, "ztctl")
DEMO_RULES = os.path.join(SOURCE_DIR, "deploy", "demo", "rules.json")
DEMO_TESTS = os.path.join(SOURCE_DIR, "deploy", "demo", "rules.tests.json")

TIERS = "(known: untrusted, identified, basic, trusted, high)"
WED_10 = "2026-05-20T10:00:00+02:00"  # Wednesday 10:00 in Berlin

DIRECTORY = {
    "version": "d1",
    "groups": {"staff": {}, "eng": {"member_of": ["staff"]},
               "finance": {"member_of": ["staff"]}, "contractors": {}},
    "users": {"alice@corp.example": {"groups": ["eng"], "subject": "00u1abc"},
              "bob@corp.example": {"groups": ["finance"]},
              "carol@partner.example": {"groups": ["contractors"]}},
}


def rules_doc(*rules, version=None):
    doc = {"rules": list(rules)}
    if version is not None:
        doc["version"] = version
    return doc


class ZtctlTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.access(ZTCTL_BIN, os.X_OK):
            raise RuntimeError("ztctl not built: %s" % ZTCTL_BIN)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ztctl-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    # ---- helpers ---------------------------------------------------------

    def run_ztctl(self, *args):
        """Run ztctl in the temp dir; returns (code, stdout, stderr)."""
        p = subprocess.run([ZTCTL_BIN] + list(args), cwd=self.tmp, capture_output=True,
                           text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def write(self, name, content):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content, indent=1))
        return name  # relative: ztctl runs in self.tmp, messages name it so

    def assert_usage(self, *args, msg=None):
        code, out, err = self.run_ztctl(*args)
        self.assertEqual(code, 2, "%r: %s%s" % (args, out, err))
        self.assertIn("Try 'ztctl help", err)
        if msg is not None:
            self.assertIn(msg, err)
        return err

    # ---- policy lint -----------------------------------------------------

    def test_lint_demo_ok(self):
        code, out, err = self.run_ztctl("policy", "lint", DEMO_RULES)
        self.assertEqual((code, out, err), (0, "ok: 6 rules, version demo-1\n", ""))

    def test_lint_ok_without_version(self):
        f = self.write("r.json", rules_doc(
            {"id": "a", "effect": "allow", "when": {"group": "staff"}}))
        self.assertEqual(self.run_ztctl("policy", "lint", f),
                         (0, "ok: 1 rule, version (none)\n", ""))

    def test_lint_unknown_tier_exact(self):
        f = self.write("rules.json", rules_doc(
            {"id": "a", "effect": "allow", "when": {"group": "staff"}},
            {"id": "payroll", "route": "payroll", "effect": "allow",
             "when": {"all": [{"group": "finance"},
                              {"device_tier": {"at_least": "hgh"}}]}}))
        code, out, err = self.run_ztctl("policy", "lint", f)
        self.assertEqual(code, 1)
        self.assertEqual(out, "")
        self.assertEqual(err, 'rules.json: $.rules[1] (id "payroll").when.all[1].device_tier'
                              '.at_least: unknown tier "hgh" %s\n' % TIERS)

    def test_lint_errors_exact(self):
        cases = [
            (rules_doc({"id": "a", "effect": "allow", "when": {"usr": "x"}}),
             'r.json: $.rules[0] (id "a").when.usr: unknown key (expected all, any, not, '),
            (rules_doc({"id": "a", "effect": "allow", "when": {"group": "x"}},
                       {"id": "a", "effect": "allow", "when": {"group": "y"}}),
             'r.json: $.rules[1].id: duplicate id "a" (also $.rules[0])\n'),
            (rules_doc({"id": "a", "effect": "allow",
                        "when": {"time": {"between": ["08:00", "08:00"], "tz": "UTC"}}}),
             'r.json: $.rules[0] (id "a").when.time.between: empty time window '
             '(start equals end)\n'),
            (rules_doc({"id": "a", "effect": "allow",
                        "when": {"time": {"days": "mon", "tz": "Europe/Berln"}}}),
             'r.json: $.rules[0] (id "a").when.time.tz: unknown time zone "Europe/Berln"'),
            (rules_doc({"id": "a", "effect": "deny", "when": {"country": "de"}}),
             'r.json: $.rules[0] (id "a").when.country: invalid country "de" (ISO 3166 '
             'alpha-2 in upper case, e.g. "DE", or "unknown")\n'),
            ('{"rules": [], "rules": []}', 'r.json:1:'),
        ]
        for doc, want in cases:
            with self.subTest(want=want):
                f = self.write("r.json", doc)
                code, out, err = self.run_ztctl("policy", "lint", f)
                self.assertEqual(code, 1, err)
                self.assertEqual(out, "")
                if want.endswith("\n"):
                    self.assertEqual(err, want)
                else:
                    self.assertTrue(err.startswith(want), err)
                    self.assertEqual(err.count("\n"), 1, err)

    def test_lint_routes(self):
        code, out, err = self.run_ztctl("policy", "lint", DEMO_RULES, "--routes", "wiki")
        self.assertEqual(code, 1)
        self.assertEqual(err, '%s: $.rules[4] (id "payroll").route: unknown route "payroll" '
                              '(known: wiki)\n' % DEMO_RULES)
        code, out, err = self.run_ztctl("policy", "lint", "--routes=wiki,payroll,git",
                                        DEMO_RULES)
        self.assertEqual((code, out), (0, "ok: 6 rules, version demo-1\n"))

    def test_lint_tiers(self):
        f = self.write("r.json", rules_doc(
            {"id": "a", "effect": "allow", "when": {"device_tier": {"at_least": "top"}}}))
        self.assertEqual(self.run_ztctl("policy", "lint", f, "--tiers", "low,mid,top")[0], 0)
        code, out, err = self.run_ztctl("policy", "lint", f)
        self.assertEqual(code, 1)
        self.assertIn('unknown tier "top" %s' % TIERS, err)
        self.assert_usage("policy", "lint", f, "--tiers", "low,,top", msg="empty item")

    def test_lint_directory(self):
        d = self.write("dir.json", DIRECTORY)
        self.assertEqual(self.run_ztctl("policy", "lint", DEMO_RULES, "--directory", d)[0], 0)
        f = self.write("r.json", rules_doc(
            {"id": "a", "effect": "allow", "when": {"group": "stafff"}}))
        code, out, err = self.run_ztctl("policy", "lint", f, "--directory", d)
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith('r.json: $.rules[0] (id "a").when.group: '), err)
        self.assertIn('"stafff"', err)
        bad = self.write("bad-dir.json", {"groups": {"a": {"member_of": ["a"]}}, "users": {}})
        code, out, err = self.run_ztctl("policy", "lint", DEMO_RULES, "--directory", bad)
        self.assertEqual(code, 1)
        self.assertIn("cycle", err)

    def test_lint_unreadable(self):
        code, out, err = self.run_ztctl("policy", "lint", "no-such-file.json")
        self.assertEqual(code, 1)
        self.assertIn("no-such-file.json", err)

    # ---- policy test -----------------------------------------------------

    def test_demo_tests_pass(self):
        code, out, err = self.run_ztctl("policy", "test", DEMO_RULES, DEMO_TESTS)
        self.assertEqual(code, 0, out + err)
        self.assertEqual(err, "")
        with open(DEMO_TESTS) as f:
            n = len(json.load(f))
        self.assertEqual(out, "%d passed, 0 failed\n" % n)
        # -v lists every test
        code, out, err = self.run_ztctl("policy", "test", "-v", DEMO_RULES, DEMO_TESTS)
        self.assertEqual(code, 0)
        self.assertEqual(out.count("\nok   ") + out.startswith("ok   "), n)

    def test_demo_tests_cover_every_rule(self):
        with open(DEMO_RULES) as f:
            rules = json.load(f)["rules"]
        with open(DEMO_TESTS) as f:
            tests = json.load(f)
        decided = {t["expect"].get("rule") for t in tests}
        effects = {t["expect"]["effect"] for t in tests}
        self.assertEqual(effects, {"allow", "deny", "step_up"})
        for r in rules:
            if r.get("mode") == "monitor":
                self.assertTrue(any(r["id"] in t["name"] or "monitor" in t["name"]
                                    for t in tests), r["id"])
            else:
                self.assertIn(r["id"], decided)
        self.assertTrue(any("DST" in t["name"] for t in tests))

    def test_failures_counted_with_reasons(self):
        ctx = {"route": "wiki", "user": "alice@corp.example", "groups": ["staff"],
               "device_tier": "trusted", "country": "DE", "method": "GET", "path": "/",
               "time": WED_10}
        tests = [
            {"name": "staff ok", "context": ctx,
             "expect": {"effect": "allow", "rule": "wiki-staff"}},
            {"name": "basic device", "context": dict(ctx, device_tier="basic"),
             "expect": {"effect": "allow"}},
            {"name": "wrong rule", "context": ctx,
             "expect": {"effect": "allow", "rule": "payroll"}},
            {"name": "payroll step-up",
             "context": dict(ctx, route="payroll", groups=["finance"], device_tier="high",
                             auth_age="1h", mfa=True),
             "expect": {"effect": "allow", "rule": "payroll"}},
        ]
        t = self.write("t.json", tests)
        code, out, err = self.run_ztctl("policy", "test", DEMO_RULES, t)
        self.assertEqual(code, 1, err)
        lines = out.splitlines()
        self.assertEqual(lines[-1], "1 passed, 3 failed")
        self.assertIn('FAIL "basic device": expected allow, got deny (rule default-deny)', lines)
        self.assertIn("  reason: wiki-staff: device_tier basic < trusted", lines)
        self.assertIn('FAIL "wrong rule": expected allow (rule payroll), got allow '
                      '(rule wiki-staff)', lines)
        self.assertIn("  reason: group staff: member", lines)
        self.assertIn('FAIL "payroll step-up": expected allow (rule payroll), got step_up '
                      '(rule payroll)', lines)
        self.assertIn("  step-up: max_age 900s, mfa required", lines)
        self.assertIn("  reason: auth_age 1h > 15m, mfa used", lines)
        self.assertNotIn("staff ok", out)

    def test_missing_data_fails_closed(self):
        # no country, no path: the deny rules match on unknown data
        t = self.write("t.json", [
            {"name": "no country",
             "context": {"route": "wiki", "user": "a@corp.example", "groups": ["staff"],
                         "device_tier": "trusted", "path": "/"},
             "expect": {"effect": "deny", "rule": "block-embargoed"}},
            {"name": "no path",
             "context": {"route": "wiki", "user": "a@corp.example", "groups": ["staff"],
                         "device_tier": "trusted", "country": "DE"},
             "expect": {"effect": "deny", "rule": "wiki-admin-finance-only"}}])
        self.assertEqual(self.run_ztctl("policy", "test", DEMO_RULES, t)[:2],
                         (0, "2 passed, 0 failed\n"))

    def test_tests_file_strict(self):
        tests = [
            {"name": "a", "context": {"route": "wiki", "usr": "x", "groups": "staff",
                                      "device_score": 101},
             "expect": {"effect": "alow", "rul": "x"}},
            {"name": "a", "context": {"time": "2026-03-29T01:30:00"},
             "expect": {"effect": "deny"}},
            {"context": {}, "expect": {"effect": "deny"}},
            {"name": "d", "context": {"device_tier": "hgh"}, "expect": {"effect": "deny"}},
            {"name": "e", "context": {"path": "/a%00b"}, "expect": {"effect": "deny"}},
            {"name": "f", "context": {"device_attrs": {"managed": 1}},
             "expect": {"effect": "deny"}, "extra": 1},
        ]
        t = self.write("tests.json", tests)
        code, out, err = self.run_ztctl("policy", "test", DEMO_RULES, t)
        self.assertEqual(code, 1)
        self.assertEqual(out, "")  # no test ran, no summary
        for want in [
            'tests.json: $[0] (name "a").context.usr: unknown key (expected route, user,',
            'tests.json: $[0] (name "a").context.groups: expected an array of group names, '
            'got a string',
            'tests.json: $[0] (name "a").context.device_score: device score 101 out of range',
            'tests.json: $[0] (name "a").expect.effect: expected "allow", "deny" or "step_up"',
            'tests.json: $[0] (name "a").expect.rul: unknown key (expected effect, rule)',
            'tests.json: $[1] (name "a").name: duplicate name (also $[0])',
            'tests.json: $[1] (name "a").context.time: invalid time "2026-03-29T01:30:00" '
            '(RFC 3339 with an offset',
            'tests.json: $[2].name: required key is missing',
            'tests.json: $[3] (name "d").context.device_tier: unknown tier "hgh" ' + TIERS,
            'tests.json: $[4] (name "e").context.path: invalid path "/a%00b"',
            'tests.json: $[5] (name "f").context.device_attrs.managed: expected a string or '
            'a boolean, got an integer',
            'tests.json: $[5] (name "f").extra: unknown key',
            'tests.json: invalid tests file: no test was run',
        ]:
            self.assertIn(want, err)

    def test_tests_file_shape(self):
        for content, want in [
            ('{"name": "x"}', "tests.json: $: expected an array of tests, got an object"),
            ("[]", "tests.json: $: expected 1..100000 tests, got 0"),
            ('[{"name": "a", "name": "b"}]', "tests.json:1:"),
        ]:
            with self.subTest(content=content):
                t = self.write("tests.json", content)
                code, out, err = self.run_ztctl("policy", "test", DEMO_RULES, t)
                self.assertEqual((code, out), (1, ""))
                self.assertTrue(err.startswith(want), err)

    def test_tests_with_directory(self):
        d = self.write("dir.json", DIRECTORY)
        base = {"route": "wiki", "device_tier": "trusted", "country": "DE", "path": "/",
                "method": "GET"}
        t = self.write("t.json", [
            # alice by subject: eng -> staff (nested)
            {"name": "alice", "context": dict(base, user="00u1abc"),
             "expect": {"effect": "allow", "rule": "wiki-staff"}},
            # bob by email: finance -> staff, may see /admin
            {"name": "bob admin", "context": dict(base, user="bob@corp.example", path="/admin"),
             "expect": {"effect": "allow", "rule": "wiki-staff"}},
            # groups in the test are ignored: the directory decides
            {"name": "carol", "context": dict(base, user="carol@partner.example",
                                              groups=["staff"]),
             "expect": {"effect": "deny", "rule": "default-deny"}},
            {"name": "stranger", "context": dict(base, user="eve@corp.example"),
             "expect": {"effect": "deny", "rule": "default-deny"}},
        ])
        code, out, err = self.run_ztctl("policy", "test", DEMO_RULES, t, "--directory", d)
        self.assertEqual((code, out), (0, "4 passed, 0 failed\n"), err)
        self.assertIn('warning: t.json: $[2] (name "carol").context.groups: ignored', err)

    def test_tests_routes_checked(self):
        t = self.write("t.json", [
            {"name": "git", "context": {"route": "git", "country": "DE"},
             "expect": {"effect": "deny"}}])
        code, out, err = self.run_ztctl("policy", "test", DEMO_RULES, t)
        self.assertEqual((code, out), (0, "1 passed, 0 failed\n"))
        self.assertIn('no rule names route "git"', err)
        code, out, err = self.run_ztctl("policy", "test", DEMO_RULES, t,
                                        "--routes", "wiki,payroll")
        self.assertEqual(code, 1)
        self.assertIn('t.json: $[0] (name "git").context.route: unknown route "git" '
                      '(known: wiki, payroll)', err)

    def test_tests_time_formats(self):
        ctx = {"route": "payroll", "user": "bob@corp.example", "groups": ["finance"],
               "device_tier": "high", "country": "DE", "path": "/", "method": "GET",
               "mfa": True}
        t = self.write("t.json", [
            {"name": "utc", "context": dict(ctx, time="2026-05-20T06:00:00Z", auth_age="1m"),
             "expect": {"effect": "allow"}},
            {"name": "fraction", "context": dict(ctx, time="2026-05-20T16:59:59.999-00:00",
                                                 auth_age="14m59s"),
             "expect": {"effect": "allow"}},
            {"name": "one second before", "context": dict(ctx, time="2026-05-20T05:59:59z",
                                                          auth_age="1m"),
             "expect": {"effect": "deny"}},
            {"name": "auth_time", "context": dict(ctx, time=WED_10,
                                                  auth_time="2026-05-20T07:50:00Z"),
             "expect": {"effect": "allow"}},
            {"name": "auth_time too old",
             "context": dict(ctx, time=WED_10, auth_time="2026-05-20T07:44:59Z"),
             "expect": {"effect": "step_up"}},
            {"name": "no auth time", "context": dict(ctx, time=WED_10),
             "expect": {"effect": "step_up"}},
        ])
        code, out, err = self.run_ztctl("policy", "test", DEMO_RULES, t)
        self.assertEqual((code, out, err), (0, "6 passed, 0 failed\n", ""))

    # ---- policy explain --------------------------------------------------

    PAYROLL = ["--route", "payroll", "--user", "bob@corp.example", "--group", "finance",
               "--group", "staff", "--tier", "high", "--attr", "managed=true",
               "--country", "DE", "--ip", "10.1.2.3", "--method", "GET", "--path", "/"]

    def test_explain_dst(self):
        # Monday after spring forward: 07:30+01:00 is 08:30 CEST, inside office hours
        code, out, err = self.run_ztctl("policy", "explain", DEMO_RULES, *self.PAYROLL,
                                        "--at", "2026-03-30T07:30:00+01:00", "--auth-age",
                                        "5m", "--mfa")
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0], "decision: allow (rule payroll)")
        for r in ["group finance: member", "device_tier high >= high",
                  "time Mon 08:30 Europe/Berlin within mon-fri 08:00-19:00",
                  "auth_age 5m <= 15m, mfa used"]:
            self.assertIn("  reason: " + r, lines)
        self.assertIn("rules:", lines)
        self.assertIn("  block-embargoed (deny, enforce, all routes)", lines)
        self.assertIn("    [false]   country DE not in [CU, IR, KP, SY]", lines)
        # Monday after fall back: 07:30+02:00 is 06:30 CET, outside
        code, out, err = self.run_ztctl("policy", "explain", DEMO_RULES, *self.PAYROLL,
                                        "--at", "2026-10-26T07:30:00+02:00", "--auth-age",
                                        "5m", "--mfa")
        self.assertEqual(code, 0, err)
        self.assertIn("decision: deny (rule default-deny)", out)
        self.assertIn("  reason: payroll: time Mon 06:30 Europe/Berlin outside mon-fri "
                      "08:00-19:00", out)

    def test_explain_step_up_and_monitor(self):
        code, out, err = self.run_ztctl("policy", "explain", DEMO_RULES, *self.PAYROLL,
                                        "--at", WED_10, "--auth-age", "2h")
        self.assertEqual(code, 0, err)
        self.assertIn("decision: step_up (rule payroll)", out)
        self.assertIn("  reason: auth_age 2h > 15m, mfa not used (required)", out)
        args = [a if a != "GET" else "POST" for a in self.PAYROLL]
        args = [a if a != "10.1.2.3" else "203.0.113.9" for a in args]
        code, out, err = self.run_ztctl("policy", "explain", DEMO_RULES, *args,
                                        "--at", WED_10, "--auth-age", "1m", "--mfa")
        self.assertIn("decision: allow (rule payroll)", out)
        self.assertIn("  monitor: payroll-writes-office-only matched, would decide deny", out)

    def test_explain_json(self):
        code, out, err = self.run_ztctl("policy", "explain", DEMO_RULES, "--route=wiki",
                                        "--user", "alice@corp.example", "--group", "staff",
                                        "--tier", "trusted", "--country", "KP", "--json")
        self.assertEqual(code, 0, err)
        j = json.loads(out)
        self.assertEqual(j["decision"], "deny")
        self.assertEqual(j["rule"], "block-embargoed")
        self.assertEqual(j["version"], "demo-1")
        self.assertEqual(j["deny_message"], "Access from your location is not permitted.")
        self.assertIn("country KP in [CU, IR, KP, SY]", j["reasons"])
        ids = [r["id"] for r in j["rules"]]
        self.assertEqual(ids, ["block-embargoed", "lost-or-unmanaged", "wiki-staff",
                               "wiki-admin-finance-only"])

    def test_explain_directory(self):
        d = self.write("dir.json", DIRECTORY)
        code, out, err = self.run_ztctl("policy", "explain", DEMO_RULES, "--directory", d,
                                        "--route", "wiki", "--user", "00u1abc", "--tier",
                                        "trusted", "--country", "DE", "--path", "/admin/x")
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0], "directory groups: eng, staff")
        self.assertEqual(lines[1], "decision: deny (rule wiki-admin-finance-only)")
        self.assertIn("  reason: path /admin/x under /admin", lines)
        self.assertIn("  reason: group finance: not a member", lines)
        code, out, err = self.run_ztctl("policy", "explain", DEMO_RULES, "--directory", d,
                                        "--route", "wiki", "--user", "bob@corp.example",
                                        "--json", "--country", "DE")
        self.assertEqual(json.loads(out)["groups"], ["finance", "staff"])

    def test_explain_no_identity(self):
        code, out, err = self.run_ztctl("policy", "explain", DEMO_RULES, "--route", "wiki",
                                        "--no-identity", "--country", "DE", "--path", "/")
        self.assertEqual(code, 0, err)
        self.assertIn("decision: deny (rule default-deny)", out)
        self.assertIn("  reason: wiki-staff: group: no identity", out)

    def test_explain_bad_values(self):
        base = ["policy", "explain", DEMO_RULES]
        for args, msg in [
            (["--at", "2026-03-29T01:30:00"], "--at: invalid time"),
            (["--at", "2026-02-29T01:30:00Z"], "--at: invalid time"),
            (["--at", "2026-03-29 01:30"], "--at: invalid time"),
            (["--score", "101"], "--score: expected an integer 0..100"),
            (["--score", "7x"], "--score"),
            (["--auth-age", "15"], "--auth-age: invalid duration"),
            (["--auth-age", "5m", "--auth-time", "2026-03-29T01:30:00Z"], "not both"),
            (["--tier", "hgh"], '--tier: unknown tier "hgh" ' + TIERS),
            (["--ip", "10.1.2"], '--ip: invalid IP address "10.1.2"'),
            (["--country", "de"], '--country: invalid country "de"'),
            (["--path", "admin"], "--path: invalid path"),
            (["--attr", "managed"], "--attr: expected NAME=VALUE"),
            (["--route", "wiki", "--route", "payroll"], "option '--route' given twice"),
            (["--routes", "wiki,payroll", "--route", "git"], '--route: unknown route "git"'),
            (["--no-identity", "--user", "x"], "--no-identity cannot be used"),
            (["--directory", "d.json", "--group", "staff"], "--group cannot be used"),
            (["--user"], "option '--user' needs a value"),
            (["--mfa=yes"], "option '--mfa' takes no value"),
            (["--frobnicate"], "unknown option '--frobnicate'"),
        ]:
            with self.subTest(args=args):
                self.assert_usage(*(base + args), msg=msg)

    # ---- audit verify ----------------------------------------------------

    def test_audit_verify(self):
        self.assert_usage("audit", "verify", msg="missing FILE")
        self.assert_usage("audit", msg="missing subcommand")
        code, out, err = self.run_ztctl("audit", "verify", "no-such.log")
        self.assertEqual(code, 1, out + err)
        self.assertTrue(err.startswith("no-such.log"), err)
        # A chain built by the contract in include/auditlog.h: H = SHA-256 of the
        # line without its "hash" member; each "prev" is the H of the line before.
        prev, lines = "0" * 64, []
        for i in range(4):
            rest = '"time":"2026-05-20T10:12:1%d.000Z","user":"u%d","effect":"allow"}' % (i, i)
            h = hashlib.sha256(('{"prev":"%s",%s' % (prev, rest)).encode()).hexdigest()
            lines.append('{"prev":"%s","hash":"%s",%s' % (prev, h, rest))
            prev = h
        good = self.write("good.log", "\n".join(lines) + "\n")
        code, out, err = self.run_ztctl("audit", "verify", good)
        self.assertEqual((code, err), (0, ""))
        self.assertTrue(out.startswith("ok: good.log: "), out)
        self.assertIn(prev, out)  # the last hash, to anchor the chain elsewhere
        for name, bad, line in [
                ("edited", [lines[0], lines[1].replace('"u1"', '"u9"')] + lines[2:], 2),
                ("removed", [lines[0]] + lines[2:], 2),
                ("reordered", [lines[0], lines[2], lines[1], lines[3]], 2),
                ("inserted", lines[:3] + [lines[1]] + lines[3:], 4)]:
            with self.subTest(name=name):
                f = self.write(name + ".log", "\n".join(bad) + "\n")
                code, out, err = self.run_ztctl("audit", "verify", f)
                self.assertEqual((code, out), (1, ""))
                self.assertTrue(err.startswith("%s:%d: " % (f, line)), err)

    # ---- help and usage --------------------------------------------------

    def test_help(self):
        for args in (["--help"], ["-h"], ["help"]):
            code, out, err = self.run_ztctl(*args)
            self.assertEqual(code, 0)
            self.assertIn("policy lint FILE", out)
            self.assertIn("audit verify FILE", out)
        for args, want in [(["help", "policy", "test"], "usage: ztctl policy test"),
                           (["policy", "lint", "--help"], "usage: ztctl policy lint"),
                           (["policy", "explain", "-h"], "usage: ztctl policy explain"),
                           (["help", "audit", "verify"], "usage: ztctl audit verify"),
                           (["help", "policy"], "usage: ztctl policy explain")]:
            with self.subTest(args=args):
                code, out, err = self.run_ztctl(*args)
                self.assertEqual((code, err), (0, ""))
                self.assertTrue(want in out, out)

    def test_usage_errors(self):
        code, out, err = self.run_ztctl()
        self.assertEqual(code, 2)
        self.assertIn("usage: ztctl COMMAND", err)
        self.assert_usage("frob", msg="unknown command 'frob'")
        self.assert_usage("help", "frob", msg="no such command: 'frob'")
        self.assert_usage("policy", msg="missing subcommand")
        self.assert_usage("policy", "frob", msg="unknown subcommand 'frob'")
        self.assert_usage("policy", "lint", msg="missing FILE")
        self.assert_usage("policy", "lint", "a", "b", msg="too many arguments")
        self.assert_usage("policy", "lint", DEMO_RULES, "--route", "x",
                          msg="unknown option '--route'")
        self.assert_usage("policy", "lint", DEMO_RULES, "-x", msg="unknown option '-x'")
        self.assert_usage("policy", "test", DEMO_RULES, msg="missing TESTS")
        self.assert_usage("policy", "test", msg="missing FILE and TESTS")
        self.assert_usage("policy", "test", DEMO_RULES, DEMO_TESTS, "x",
                          msg="too many arguments")
        self.assert_usage("policy", "test", DEMO_RULES, DEMO_TESTS, "--directory", "a",
                          "--directory", "b", msg="option '--directory' given twice")
        self.assert_usage("policy", "explain", msg="missing FILE")


if __name__ == "__main__":
    unittest.main(verbosity=2)
