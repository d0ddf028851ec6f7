#!/usr/bin/env python3
"""ztctl as a client of a running proxy's admin API (issue 6; docs/ztctl.md
"Talking to a running proxy"): every subcommand once against a live proxy,
asserting on what ztctl prints, its exit code and the effect on the next
request through the proxy; and the connection settings: flags, environment,
config file, a token file that is not private (refused before any network
call), a wrong token, a non-admin certificate, a wrong CA, no server.

Real processes: ztproxy with "policy" (rules.json, directory.json,
audit.log), "state_dir", "device_trust" (an inventory file: good owned by
alice, good2 owned by bob, both posting a posture report that scores "high")
and "admin" (admin_groups ["secops"], a token file), upstream.py, and the
built ztctl. Certificate "admin1" is an admin (its CN is alice's subject);
"good" is a device nobody made admin.

Route "app" needs no login. Rule "trusted-open" allows /open for devices of
tier trusted or better, so a rule change or a device marked lost shows in
the very next request.
"""

import json
import os
import socket
import subprocess

import ztlib
from ztlib import wait_until

ZTCTL_BIN = os.environ.get("ZTCTL_BIN") or os.path.join(ztlib.BUILD_DIR, "ztctl")
TOKEN = "tok-ztctl-0123456789abcdef"

RULES = {
    "version": "zc-1",
    "rules": [
        {"id": "trusted-open", "route": "app", "effect": "allow",
         "when": {"all": [{"path": {"prefix": "/open"}},
                          {"device_tier": {"at_least": "trusted"}}]}},
    ],
}

WITH_SECRET = {
    "version": "zc-2",
    "rules": RULES["rules"] + [
        {"id": "allow-secret", "route": "app", "effect": "allow",
         "when": {"path": {"prefix": "/secret"}}},
    ],
}

# Invalid twice: an unknown tier in rule 0, an unknown group in rule 1.
BAD = {
    "version": "zc-bad",
    "rules": [
        {"id": "bad-tier", "route": "app", "effect": "allow",
         "when": {"device_tier": {"at_least": "hgh"}}},
        {"id": "bad-group", "route": "app", "effect": "allow", "when": {"group": "stafff"}},
    ],
}

NOBODY = {"version": "zc-none", "rules": [
    {"id": "only-secret", "route": "app", "effect": "allow",
     "when": {"path": {"prefix": "/secret"}}}]}


def directory_doc():
    return {
        "version": "d1",
        "groups": {"staff": {}, "secops": {"member_of": ["staff"]}},
        "users": {
            "alice@corp.example": {"groups": ["secops"], "subject": "admin1"},
            "bob@corp.example": {"groups": ["staff"], "subject": "good2"},
        },
    }


class ZtctlAdminTest(ztlib.ProxyTestCase):

    @classmethod
    def config_extra(cls):
        return {
            "state_dir": cls.state_dir,
            "device_trust": {"inventory": {"file": "inventory.json", "max_stale": "1h"}},
            "policy": {"rules": "rules.json", "directory": {"file": "directory.json"},
                       "audit_log": "audit.log"},
            "admin": {"listen": "127.0.0.1:%d" % cls.admin_port, "admin_groups": ["secops"],
                      "token_file": "admin.tokens"},
        }

    @classmethod
    def start_proxy(cls, cfg_update=None):
        if not os.access(ZTCTL_BIN, os.X_OK):
            raise AssertionError("ztctl not built: %s" % ZTCTL_BIN)
        cls.pki.device("admin1")
        cls.admin_port = ztlib.free_port()
        cls.admin_url = "https://127.0.0.1:%d" % cls.admin_port
        cls.state_dir = os.path.join(cls.tmp, "state")
        os.makedirs(cls.state_dir, exist_ok=True)
        cls.audit_path = os.path.join(cls.tmp, "audit.log")
        ztlib.write_atomic(os.path.join(cls.tmp, "rules.json"), RULES)
        ztlib.write_atomic(os.path.join(cls.tmp, "directory.json"), directory_doc())
        ztlib.write_atomic(os.path.join(cls.tmp, "inventory.json"), [
            ztlib.inventory_record("good", owner="alice@corp.example"),
            ztlib.inventory_record("good2", owner="bob@corp.example")])
        with open(os.path.join(cls.tmp, "admin.tokens"), "w") as f:
            f.write("ops:%s\n" % TOKEN)
        os.chmod(os.path.join(cls.tmp, "admin.tokens"), 0o600)
        # ztctl's own token file: the token alone, private
        cls.token_file = os.path.join(cls.tmp, "ztctl.token")
        with open(cls.token_file, "w") as f:
            f.write("# ops token\n%s\n" % TOKEN)
        os.chmod(cls.token_file, 0o600)
        cls.home = os.path.join(cls.tmp, "home")
        os.makedirs(cls.home)
        super().start_proxy(cfg_update)
        wait_until(lambda: ztlib.port_accepts(cls.admin_port), 10, what="the admin listener")
        for d in ("good", "good2"):
            r = ztlib.post_posture(cls.port, cls.pki, d, ztlib.posture_report())
            if r.status != 200:
                raise AssertionError("posture of %s: %r" % (d, r))

    # ---------------------------------------------------------------- helpers
    def ztctl(self, *args, env=None, conn=True):
        """Run ztctl; with conn, --admin/--token-file/--cacert are added.
        Returns (code, stdout, stderr)."""
        e = {k: v for k, v in os.environ.items() if not k.startswith("ZTCTL_")}
        e["HOME"] = self.home
        e.update(env or {})
        argv = [ZTCTL_BIN] + list(args)
        if conn:
            argv += ["--admin", self.admin_url, "--token-file", self.token_file,
                     "--cacert", self.pki.ca]
        p = subprocess.run(argv, cwd=self.tmp, capture_output=True, text=True, timeout=120,
                           env=e)
        if "Sanitizer" in p.stderr or "runtime error" in p.stderr:
            self.fail("sanitizer report from ztctl %s:\n%s" % (args, p.stderr))
        return p.returncode, p.stdout, p.stderr

    def ok(self, *args, **kw):
        code, out, err = self.ztctl(*args, **kw)
        self.assertEqual(code, 0, "ztctl %s: %s%s" % (" ".join(args), out, err))
        return out, err

    def write(self, name, doc):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(doc if isinstance(doc, str) else json.dumps(doc, indent=1))
        return path

    def status(self, path, device="good"):
        return self.get(path, device=device).status

    def live_version(self):
        out, _ = self.ok("rules", "get", "--json")
        return json.loads(out)["version"]

    def put(self, doc, comment):
        out, _ = self.ok("rules", "put", self.write("put.json", doc), "-m", comment)
        self.assertRegex(out, r"^applied: version \d+ ")
        return int(out.split()[2])

    # ---------------------------------------------------------------- rules
    def test_rules_get_validate_put_history_diff_rollback(self):
        base = self.put(RULES, "baseline")
        out, err = self.ok("rules", "get")
        self.assertEqual(json.loads(out), RULES)
        self.assertIn("version %d by token:ops" % base, err)
        self.assertIn("baseline", err)
        dest = os.path.join(self.tmp, "got.json")
        out, _ = self.ok("rules", "get", "-o", dest)
        self.assertIn("wrote version %d to %s" % (base, dest), out)
        with open(dest) as f:
            self.assertEqual(json.load(f), RULES)

        # validate: ok, then every error with its JSON path; nothing changes
        out, _ = self.ok("rules", "validate", self.write("good.json", WITH_SECRET))
        self.assertIn("ok: ", out)
        self.assertIn("2 rules", out)
        bad = self.write("bad.json", BAD)
        code, out, err = self.ztctl("rules", "validate", bad)
        self.assertEqual(code, 1, err)
        self.assertIn("%s: $.rules[0].when.device_tier.at_least (rule bad-tier): " % bad, err)
        self.assertIn("hgh", err)
        self.assertIn("$.rules[1].when.group (rule bad-group)", err)
        self.assertIn("stafff", err)
        code, out, err = self.ztctl("rules", "validate", self.write("syntax.json", "{\"rules\": [,]}"))
        self.assertEqual(code, 1, err)
        self.assertIn("syntax.json:", err)

        # a bad put changes nothing
        code, out, err = self.ztctl("rules", "put", bad, "-m", "broken")
        self.assertEqual(code, 1, err)
        self.assertIn("invalid, nothing changed", err)
        self.assertEqual(self.live_version(), base)
        self.assertEqual(self.status("/secret/a"), 403)

        # put: live on the next request, in the history with its comment, audited
        v2 = self.put(WITH_SECRET, "let secret in")
        self.assertEqual(v2, base + 1)
        self.assertEqual(self.status("/secret/b"), 200)
        with open(os.path.join(self.tmp, "rules.json")) as f:
            self.assertEqual(json.load(f), WITH_SECRET)
        ev = wait_until(lambda: [o for _, _, o in ztlib.read_audit_log(self.audit_path)
                                 if o and o.get("event") == "admin"
                                 and o.get("detail", {}).get("comment") == "let secret in"],
                        10, what="the audit event of the put")
        self.assertEqual(ev[-1]["actor"], "token:ops")

        out, _ = self.ok("rules", "history")
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("VERSION"), out)
        self.assertTrue(lines[1].startswith("%d " % v2), out)
        self.assertIn("token:ops", lines[1])
        self.assertIn("let secret in", lines[1])
        self.assertIn("baseline", out)

        out, _ = self.ok("rules", "diff", str(base), str(v2))
        self.assertIn("--- version %d" % base, out)
        self.assertIn("+++ version %d" % v2, out)
        self.assertIn("+      \"id\": \"allow-secret\"", out)
        self.assertIn("added: allow-secret", out)
        self.assertIn("removed: (none)", out)
        code, _, err = self.ztctl("rules", "diff", str(base), "99999")
        self.assertEqual(code, 1)
        self.assertIn("404", err)

        # a stale base version is refused
        code, _, err = self.ztctl("rules", "put", self.write("p.json", RULES), "-m", "x",
                                  "--base-version", str(base))
        self.assertEqual(code, 1, err)
        self.assertIn("conflict: the live version is %d" % v2, err)

        # rollback restores the old behaviour
        out, _ = self.ok("rules", "rollback", str(base), "-m", "undo")
        self.assertRegex(out, r"^applied: version %d " % (v2 + 1))
        self.assertEqual(self.status("/secret/c"), 403)
        out, _ = self.ok("rules", "get", "--version", str(v2))
        self.assertEqual(json.loads(out), WITH_SECRET)
        code, _, err = self.ztctl("rules", "rollback", "99999", "-m", "nope")
        self.assertEqual(code, 1)
        self.assertIn("404", err)
        # usage errors need no server
        for args in (("rules", "put", bad), ("rules", "diff", "1"), ("rules", "get", "--version",
                                                                     "x"), ("rules", "frob")):
            code, _, err = self.ztctl(*args)
            self.assertEqual(code, 2, (args, err))
            self.assertIn("Try 'ztctl help", err)

    # ---------------------------------------------------------------- explain, whatif
    def test_explain_live_and_proposed(self):
        self.put(RULES, "explain baseline")
        args = ("explain", "--route", "app", "--user", "alice@corp.example", "--device", "good",
                "--ip", "127.0.0.1", "--country", "DE", "--time", ztlib.utc_rfc3339(),
                "--method", "GET", "--path", "/open/x", "--mfa", "--auth-age", "10m")
        out, _ = self.ok(*args)
        self.assertIn("decision: allow (rule trusted-open)", out)
        self.assertIn("context (live rules):", out)
        self.assertIn("tier high", out)
        self.assertIn("country DE", out)
        self.assertIn("  trusted-open allow: match\n", out)
        self.assertRegex(out, r"\n\s+true\s+\S")
        out, _ = self.ok(*args, "--json")
        o = json.loads(out)
        self.assertEqual((o["decision"], o["rule"]), ("allow", "trusted-open"))
        self.assertEqual(o["context"]["device"], "good")
        self.assertEqual(o["context"]["path"], "/open/x")
        self.assertIs(o["context"]["mfa"], True)
        # against a proposed document: denied there, with reasons
        out, _ = self.ok(*args, "--rules", self.write("nobody.json", NOBODY))
        self.assertIn("decision: deny (rule default-deny)", out)
        self.assertIn("context (proposed rules):", out)
        self.assertRegex(out, r"only-secret allow: no_match\n\s+false\s+\S")
        code, _, err = self.ztctl(*args, "--rules", self.write("bad2.json", BAD))
        self.assertEqual(code, 1)
        self.assertIn("(rule bad-tier)", err)
        code, _, err = self.ztctl("explain", "--route", "app", "--time", "yesterday")
        self.assertEqual(code, 2)
        self.assertIn("--time 'yesterday'", err)

    def test_whatif(self):
        self.put(RULES, "whatif baseline")
        self.assertEqual(self.status("/open/whatif"), 200)
        out, _ = self.ok("whatif", self.write("nobody2.json", NOBODY))
        self.assertRegex(out, r"replayed \d+ recent decisions")
        lose = out[out.index("would lose access:"):out.index("by route:")]
        self.assertRegex(lose, r"app\s+\S+\s+good\s+\d+\s+allow\s+deny\s+default-deny "
                               r"\(trusted-open\)")
        self.assertRegex(out, r"app\s+gains \d+\s+losses [1-9]")
        out, _ = self.ok("whatif", self.write("nobody3.json", NOBODY), "--json")
        o = json.loads(out)
        self.assertTrue(any(x["device"] == "good" and x["route"] == "app" for x in o["losses"]), o)
        self.assertEqual(self.status("/open/whatif2"), 200, "whatif changed the live rules")

    # ---------------------------------------------------------------- devices, decisions
    def test_devices_list_show_set_status(self):
        self.put(RULES, "devices baseline")
        out, _ = self.ok("devices", "list")
        rows = {l.split()[0]: l for l in out.splitlines()[1:] if l.strip()}
        self.assertIn("good", rows)
        self.assertIn("good2", rows)
        self.assertIn("bob@corp.example", rows["good2"])
        self.assertIn("high", rows["good2"])
        out, _ = self.ok("devices", "list", "--owner", "BOB@corp.example")
        ids = [l.split()[0] for l in out.splitlines()[1:-1]]
        self.assertEqual(ids, ["good2"], out)
        out, _ = self.ok("devices", "show", "good2")
        self.assertIn("device   good2", out)
        self.assertIn("tier     high (score 100)", out)
        self.assertRegex(out, r"disk\S*\s+ok")
        code, _, err = self.ztctl("devices", "show", "nobody-has-this")
        self.assertEqual(code, 1)
        self.assertIn("404 not_found", err)

        self.assertEqual(self.status("/open/before-lost", device="good2"), 200)
        out, _ = self.ok("devices", "set-status", "good2", "lost", "-m", "left on a train")
        self.assertIn("device good2: status lost (override), tier untrusted", out)
        self.assertEqual(self.status("/open/after-lost", device="good2"), 403)
        out, _ = self.ok("devices", "list", "--status", "lost")
        self.assertEqual([l.split()[0] for l in out.splitlines()[1:-1]], ["good2"], out)
        self.assertIn("lost*", out)

        out, _ = self.ok("decisions", "--device", "good2", "--effect", "deny", "--limit", "5")
        self.assertIn("/open/after-lost", out.splitlines()[1])
        self.assertIn("default-deny", out.splitlines()[1])
        self.assertRegex(out, r"\n    - ")  # the deny's reasons
        out, _ = self.ok("decisions", "--device", "good2", "--route", "app", "--json")
        ds = json.loads(out)["decisions"]
        self.assertEqual((ds[0]["path"], ds[0]["effect"], ds[0]["status"]),
                         ("/open/after-lost", "deny", "lost"))
        self.assertIn("/open/before-lost", [d["path"] for d in ds])

        out, _ = self.ok("devices", "set-status", "good2", "clear", "-m", "found it")
        self.assertIn("(no override), tier high", out)
        self.assertEqual(self.status("/open/found", device="good2"), 200)
        for args in (("devices", "set-status", "good2", "misplaced", "-m", "x"),
                     ("devices", "set-status", "good2", "lost"),
                     ("decisions", "--effect", "maybe"), ("devices", "list", "--limit", "0")):
            code, _, err = self.ztctl(*args)
            self.assertEqual(code, 2, (args, err))

    def test_sessions_revoke(self):
        # this proxy has no identity section: the API refuses, ztctl says so
        code, out, err = self.ztctl("sessions", "revoke", "--user", "admin1")
        self.assertEqual(code, 1, out + err)
        self.assertIn("409 no_sessions", err)
        code, out, err = self.ztctl("sessions", "revoke", "--session", "0" * 32, "--json")
        self.assertEqual(code, 1)
        self.assertEqual(json.loads(out)["error"], "no_sessions")
        for args in (("sessions", "revoke"), ("sessions", "revoke", "--user", "a", "--session",
                                               "0" * 32), ("sessions", "revoke", "--session",
                                                           "xyz")):
            code, _, err = self.ztctl(*args)
            self.assertEqual(code, 2, (args, err))

    def test_help(self):
        out, _ = self.ok("help", "rules", conn=False)
        for sub in ("get", "validate", "put", "history", "diff", "rollback"):
            self.assertIn("usage: ztctl rules %s" % sub, out)
        self.assertIn("--token-file FILE", out)
        out, _ = self.ok("devices", "set-status", "--help", conn=False)
        self.assertIn("lost|active|stolen|retired|clear", out)
        out, _ = self.ok("help", conn=False)
        for cmd in ("explain", "whatif", "devices", "sessions revoke", "decisions"):
            self.assertIn(cmd, out)
        code, _, err = self.ztctl("devices", "frob")
        self.assertEqual(code, 2)
        self.assertIn("unknown subcommand 'frob'", err)

    # ---------------------------------------------------------------- connection settings
    def test_credentials_and_connection(self):
        # an admin client certificate instead of a token
        out, _ = self.ok("rules", "history", "--admin", self.admin_url, "--cacert", self.pki.ca,
                         "--cert", self.pki.device_crt("admin1"),
                         "--key", self.pki.device_key("admin1"), conn=False)
        self.assertTrue(out.startswith("VERSION"))
        # a certificate nobody made admin: credentials refused
        code, _, err = self.ztctl("rules", "history", "--admin", self.admin_url, "--cacert",
                                  self.pki.ca, "--cert", self.pki.device_crt("good"),
                                  "--key", self.pki.device_key("good"), conn=False)
        self.assertEqual(code, 3, err)
        self.assertIn("refused the credentials (403 forbidden)", err)
        self.assertIn("not in an admin group", err)
        # a wrong token
        wrong = os.path.join(self.tmp, "wrong.token")
        with open(wrong, "w") as f:
            f.write("tok-not-the-right-one-0000\n")
        os.chmod(wrong, 0o600)
        code, _, err = self.ztctl("rules", "history", "--admin", self.admin_url, "--cacert",
                                  self.pki.ca, "--token-file", wrong, conn=False)
        self.assertEqual(code, 3, err)
        self.assertIn("403 forbidden", err)
        self.assertIn("the token is not valid", err)
        self.assertNotIn("tok-not-the-right-one", err)
        # the server's certificate is checked
        code, _, err = self.ztctl("rules", "history", "--admin", self.admin_url, "--cacert",
                                  os.path.join(self.pki.evil_dir, "ca.crt"), "--token-file",
                                  self.token_file, conn=False)
        self.assertEqual(code, 3, err)
        self.assertIn("TLS verification of the server failed", err)
        # nothing listening
        dead = "https://127.0.0.1:%d" % ztlib.free_port()
        code, _, err = self.ztctl("rules", "history", "--admin", dead, "--cacert", self.pki.ca,
                                  "--token-file", self.token_file, conn=False)
        self.assertEqual(code, 3, err)
        self.assertIn("connection refused", err)

        # a token file others can read is refused before any network call
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", ztlib.free_port()))
        lsock.listen(1)
        lsock.setblocking(False)
        self.addCleanup(lsock.close)
        loose = os.path.join(self.tmp, "loose.token")
        with open(loose, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(loose, 0o644)
        code, _, err = self.ztctl("rules", "history", "--admin",
                                  "https://127.0.0.1:%d" % lsock.getsockname()[1],
                                  "--token-file", loose, conn=False)
        self.assertEqual(code, 3, err)
        self.assertIn("mode 0644", err)
        self.assertIn("chmod 600", err)
        with self.assertRaises(BlockingIOError):
            lsock.accept()
        # no credentials at all, a non-https address, --cert without --key: usage
        for args in (("--admin", self.admin_url),
                     ("--admin", "http://127.0.0.1:1", "--token-file", self.token_file),
                     ("--cert", self.pki.device_crt("admin1"))):
            code, _, err = self.ztctl("rules", "history", *args, conn=False)
            self.assertEqual(code, 2, (args, err))

    def test_environment_and_config_file(self):
        env = {"ZTCTL_ADMIN": self.admin_url, "ZTCTL_TOKEN_FILE": self.token_file,
               "ZTCTL_CACERT": self.pki.ca}
        out, _ = self.ok("rules", "history", env=env, conn=False)
        self.assertTrue(out.startswith("VERSION"))
        # a flag beats the environment
        dead = "https://127.0.0.1:%d" % ztlib.free_port()
        code, _, err = self.ztctl("rules", "history", "--admin", dead, env=env, conn=False)
        self.assertEqual(code, 3)
        self.assertIn(dead, err)
        # the default config file, and the environment beats it
        cfgdir = os.path.join(self.home, ".config", "ztctl")
        os.makedirs(cfgdir, exist_ok=True)
        cfg = os.path.join(cfgdir, "config.json")
        self.addCleanup(os.unlink, cfg)
        with open(cfg, "w") as f:
            json.dump({"admin": self.admin_url, "token_file": self.token_file,
                       "cacert": self.pki.ca}, f)
        out, _ = self.ok("devices", "list", conn=False)
        self.assertIn("good2", out)
        code, _, err = self.ztctl("devices", "list", env={"ZTCTL_ADMIN": dead}, conn=False)
        self.assertEqual(code, 3)
        self.assertIn(dead, err)
        # --config FILE, strictly validated
        other = self.write("ztctl-config.json", {"admin": self.admin_url, "token_file":
                                                 self.token_file, "cacert": self.pki.ca,
                                                 "tokn": "x"})
        code, _, err = self.ztctl("devices", "list", "--config", other, conn=False)
        self.assertEqual(code, 2)
        self.assertIn("%s: $.tokn: unknown key" % other, err)
        other = self.write("ztctl-config2.json", {"admin": self.admin_url, "token_file":
                                                  self.token_file, "cacert": self.pki.ca})
        out, _ = self.ok("devices", "show", "good", "--config", other, conn=False)
        self.assertIn("device   good", out)


if __name__ == "__main__":
    ztlib.main()
