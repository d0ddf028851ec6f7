#!/usr/bin/env python3
"""The admin API (issue 6; docs/admin-api.md): its own TLS listener,
credentials (an admin certificate whose identity the live directory puts in
an admin group, or a token), CSRF, health, and the rules endpoints: get,
validate, put, history, diff, rollback, explain.

Real processes: ztproxy with "policy" (rules.json, directory.json, audit.log),
"state_dir" (the rules history) and "admin" (admin_groups ["secops"], a token
file, a console folder), and upstream.py. Admin certificates come from the
device CA: "admin1" (subject CN admin1 = alice's directory subject), and
"carol" (an e-mail SAN carol@corp.example, made here with the openssl CLI);
"good" is a device nobody made admin.

The route "app" needs no login; the rules decide on the path, so a changed
rule shows in the very next request through the proxy.
"""

import http.client
import json
import os
import signal
import ssl
import subprocess
import threading
import time
import unittest

import ztlib
from ztlib import wait_until

TOKEN = "tok-0123456789abcdef-admin"
OTHER_TOKEN = "tok-0123456789abcdef-other"


def rules_doc(version, *extra_prefixes):
    rules = [{"id": "open-path", "route": "app", "effect": "allow",
              "when": {"path": {"prefix": "/open"}}}]
    for p in extra_prefixes:
        rules.append({"id": "allow-" + p.strip("/"), "route": "app", "effect": "allow",
                      "when": {"path": {"prefix": p}}})
    return {"version": version, "rules": rules}


def directory_doc(alice_groups=("secops",)):
    return {
        "version": "d1",
        "groups": {"staff": {}, "secops": {"member_of": ["staff"]}, "eng": {}},
        "users": {
            "alice@corp.example": {"groups": list(alice_groups), "subject": "admin1"},
            "carol@corp.example": {"groups": ["secops"]},
            "bob@corp.example": {"groups": ["eng"], "subject": "good2"},
            "dave@corp.example": {"groups": ["secops"], "subject": "revoked"},
        },
    }


class AdminTest(ztlib.ProxyTestCase):

    @classmethod
    def config_extra(cls):
        return {
            "state_dir": cls.state_dir,
            "policy": {"rules": "rules.json", "directory": {"file": "directory.json"},
                       "audit_log": "audit.log"},
            "admin": {"listen": "127.0.0.1:%d" % cls.admin_port,
                      "admin_groups": ["secops"],
                      "token_file": "admin.tokens",
                      "console_dir": "console"},
        }

    @classmethod
    def make_email_cert(cls, name, email):
        d = os.path.join(cls.pki.dir, "devices")
        key, csr, crt = (os.path.join(d, name + ext) for ext in (".key", ".csr", ".crt"))
        ext = os.path.join(d, name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName=email:%s\nextendedKeyUsage=clientAuth\n"
                    "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n" % email)
        run = lambda *a: subprocess.run(a, check=True, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, timeout=60)
        run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        run("openssl", "req", "-new", "-key", key, "-subj", "/CN=%s-laptop" % name, "-out", csr)
        run("openssl", "x509", "-req", "-in", csr, "-CA", cls.pki.ca, "-CAkey", cls.pki.ca_key,
            "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", crt)
        os.chmod(key, 0o600)

    @classmethod
    def setUpClass(cls):
        cls.tmp = ztlib.make_tmpdir("zt-AdminTest-")
        cls.ups = {}
        try:
            cls.pki = ztlib.make_pki(os.path.join(cls.tmp, "pki"))
            cls.pki.device("admin1")
            cls.make_email_cert("carol", "carol@corp.example")
            cls.state_dir = os.path.join(cls.tmp, "state")
            os.makedirs(cls.state_dir)
            cls.rules_path = os.path.join(cls.tmp, "rules.json")
            cls.dir_path = os.path.join(cls.tmp, "directory.json")
            cls.audit_path = os.path.join(cls.tmp, "audit.log")
            ztlib.write_atomic(cls.rules_path, rules_doc("r1"))
            ztlib.write_atomic(cls.dir_path, directory_doc())
            tokens = os.path.join(cls.tmp, "admin.tokens")
            with open(tokens, "w") as f:
                f.write("# admin tokens\nops:%s\n" % TOKEN)
            os.chmod(tokens, 0o600)
            os.makedirs(os.path.join(cls.tmp, "console"))
            with open(os.path.join(cls.tmp, "console", "index.html"), "w") as f:
                f.write("<!doctype html><title>ztproxy console</title>\n")
            with open(os.path.join(cls.tmp, "console", "app.js"), "w") as f:
                f.write("// console\n" + "x = 1;\n" * 5000)
            cls.admin_port = ztlib.free_port()
            cls.up = ztlib.Upstream(cls.tmp, "main").start()
            cls.ups["main"] = cls.up
            cls.start_proxy()
            wait_until(lambda: ztlib.port_accepts(cls.admin_port), 10, what="admin listener")
        except BaseException:
            cls.tearDownClass()
            raise

    # ---------------------------------------------------------------- helpers
    def ctx(self, cert):
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        c.load_verify_locations(self.pki.ca)
        c.check_hostname = False
        if cert is not None:
            c.load_cert_chain(self.pki.device_crt(cert), self.pki.device_key(cert))
        return c

    def api(self, method, path, body=None, cert=None, token=TOKEN, headers=None, raw=None):
        """One admin call; returns (status, parsed JSON or text, headers)."""
        return ztlib.admin_call(self.admin_port, None, method, path, body=body, token=token,
                                raw=raw, headers=headers, context=self.ctx(cert))

    def proxy_status(self, path):
        return self.get(path, host="app.test:%d" % self.port, server_hostname="app.test").status

    def live(self):
        st, body, _ = self.api("GET", "/api/v1/rules")
        self.assertEqual(st, 200, body)
        return body

    def put(self, doc, comment="test", **extra):
        b = {"document": doc, "comment": comment}
        b.update(extra)
        return self.api("PUT", "/api/v1/rules", b)

    def read_rules_file(self):
        with open(self.rules_path) as f:
            return json.load(f)

    def audit_admin_events(self):
        return [o for _, _, o in ztlib.read_audit_log(self.audit_path)
                if o is not None and o.get("event") == "admin"]

    # ------------------------------------------------------------------ health
    def test_health_needs_no_credential(self):
        st, body, _ = self.api("GET", "/healthz", token=None)
        self.assertEqual((st, body), (200, "ok\n"))
        st, body, _ = self.api("GET", "/readyz", token=None)
        self.assertEqual(st, 200, body)
        self.assertIs(body["ready"], True)
        self.assertEqual(body["reasons"], [])
        self.assertTrue(body["rules"]["loaded"])
        self.assertTrue(body["directory"]["loaded"])
        self.assertGreaterEqual(body["rules"]["history_version"], 1)

    def test_console_static_files(self):
        st, body, h = self.api("GET", "/", token=None)
        self.assertEqual(st, 200)
        self.assertIn("ztproxy console", body)
        self.assertTrue(h["content-type"].startswith("text/html"))
        self.assertIn("frame-ancestors 'none'", h["content-security-policy"])
        st, body, h = self.api("GET", "/app.js", token=None)
        self.assertEqual(st, 200)
        self.assertEqual(len(body), len("// console\n") + 7 * 5000)
        self.assertTrue(h["content-type"].startswith("text/javascript"))
        for bad in ("/../admin.tokens", "/%2e%2e/admin.tokens", "/.hidden", "/nope.html"):
            st, body, _ = self.api("GET", bad, token=None)
            self.assertEqual(st, 404, bad)
        st, _, _ = self.api("POST", "/index.html", token=None)
        self.assertEqual(st, 405)

    # ------------------------------------------------------------- credentials
    def test_refusals(self):
        # no credential at all: 401, saying how to authenticate
        st, body, h = self.api("GET", "/api/v1/rules", token=None)
        self.assertEqual(st, 401, body)
        self.assertEqual(body["error"], "unauthenticated")
        self.assertIn("Bearer", h.get("www-authenticate", ""))
        # not a Bearer credential: still none
        st, body, _ = self.api("GET", "/api/v1/rules", token=None,
                               headers={"Authorization": "Basic YTpi"})
        self.assertEqual(st, 401, body)
        # a device certificate nobody made admin; one in the directory but not an admin group
        for dev in ("good", "good2"):
            st, body, _ = self.api("GET", "/api/v1/rules", cert=dev, token=None)
            self.assertEqual(st, 403, (dev, body))
            self.assertEqual(body["error"], "forbidden")
        # a wrong token (even with an admin certificate): 403, and never logged
        st, body, _ = self.api("GET", "/api/v1/rules", token=OTHER_TOKEN)
        self.assertEqual(st, 403, body)
        st, body, _ = self.api("GET", "/api/v1/rules", cert="admin1", token=OTHER_TOKEN)
        self.assertEqual(st, 403, body)
        self.assertNotIn(OTHER_TOKEN, self.proxy.stderr())
        self.assertNotIn(TOKEN, self.proxy.stderr())
        # a certificate from another CA, or a revoked one (dave is in secops), does not
        # even get through the handshake
        for dev in ("evil", "revoked"):
            with self.assertRaises((ssl.SSLError, ConnectionError, OSError), msg=dev):
                c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                c.load_verify_locations(self.pki.ca)
                c.check_hostname = False
                c.load_cert_chain(self.pki.device_crt(dev), self.pki.device_key(dev))
                conn = http.client.HTTPSConnection("127.0.0.1", self.admin_port, timeout=30,
                                                   context=c)
                try:
                    conn.request("GET", "/api/v1/rules")
                    conn.getresponse().read()
                finally:
                    conn.close()
        # the good ones: a token, an admin certificate by subject, one by e-mail SAN
        for cert, token in ((None, TOKEN), ("admin1", None), ("carol", None)):
            st, body, _ = self.api("GET", "/api/v1/rules", cert=cert, token=token)
            self.assertEqual(st, 200, (cert, body))
        # an unknown endpoint, once authenticated
        st, body, _ = self.api("GET", "/api/v1/nope")
        self.assertEqual(st, 404, body)
        st, body, _ = self.api("GET", "/api/v2/rules")
        self.assertEqual(st, 404, body)

    def test_group_membership_is_live(self):
        try:
            ztlib.write_atomic(self.dir_path, directory_doc(alice_groups=("eng",)))
            wait_until(lambda: self.api("GET", "/api/v1/rules", cert="admin1",
                                        token=None)[0] == 403, 20,
                       what="alice's certificate to lose admin rights")
            # carol (still in secops) is unaffected
            self.assertEqual(self.api("GET", "/api/v1/rules", cert="carol", token=None)[0], 200)
        finally:
            ztlib.write_atomic(self.dir_path, directory_doc())
            wait_until(lambda: self.api("GET", "/api/v1/rules", cert="admin1",
                                        token=None)[0] == 200, 20,
                       what="alice's certificate to be admin again")

    def test_csrf_writes_refused(self):
        before = self.live()
        doc = rules_doc("csrf", "/csrf")
        body = json.dumps({"document": doc, "comment": "csrf"}).encode()
        # a form post from a browser: not JSON
        for ct in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            st, r, _ = self.api("PUT", "/api/v1/rules", raw=body, headers={"Content-Type": ct})
            self.assertEqual(st, 403, (ct, r))
            self.assertEqual(r["error"], "csrf")
        # JSON, but from another site
        st, r, _ = self.api("PUT", "/api/v1/rules", raw=body,
                            headers={"Origin": "https://evil.example"})
        self.assertEqual(st, 403, r)
        self.assertEqual(r["error"], "csrf")
        st, r, _ = self.api("POST", "/api/v1/rules/rollback", {"version": 1},
                            headers={"Origin": "null"})
        self.assertEqual(st, 403, r)
        # nothing changed
        self.assertEqual(self.live()["version"], before["version"])
        self.assertEqual(self.proxy_status("/csrf"), 403)
        # our own origin is fine (validate changes nothing either way)
        st, r, _ = self.api("POST", "/api/v1/rules/validate", doc,
                            headers={"Origin": "https://127.0.0.1:%d" % self.admin_port})
        self.assertEqual(st, 200, r)

    def test_bad_json_body(self):
        st, r, _ = self.api("PUT", "/api/v1/rules", raw=b'{"document": {"rules": [}')
        self.assertEqual(st, 400, r)
        self.assertEqual(r["error"], "bad_json")
        self.assertEqual(r["line"], 1)
        self.assertGreater(r["position"], 0)
        st, r, _ = self.api("PUT", "/api/v1/rules", {"document": rules_doc("x"), "extra": 1})
        self.assertEqual(st, 400, r)
        self.assertIn("$.extra: unknown key", r["message"])
        # more than 4 MiB: refused before the body is read
        conn = ztlib.HTTPConn(self.ctx(None).wrap_socket(
            ztlib.socket.create_connection(("127.0.0.1", self.admin_port), timeout=30)), 30)
        with conn:
            conn.send(ztlib.build_request(
                "PUT", "/api/v1/rules", [("Authorization", "Bearer " + TOKEN),
                                         ("Content-Type", "application/json"),
                                         ("Content-Length", str(5 * 1024 * 1024))],
                host="127.0.0.1"))
            self.assertEqual(conn.read_response("PUT").status, 413)

    # ------------------------------------------------------------------ rules
    def test_validate(self):
        st, r, _ = self.api("POST", "/api/v1/rules/validate", rules_doc("v", "/a", "/b"))
        self.assertEqual((st, r), (200, {"ok": True, "rules": 3}))
        bad = rules_doc("v", "/a")
        bad["rules"][1]["route"] = "nope"
        st, r, _ = self.api("POST", "/api/v1/rules/validate", bad)
        self.assertEqual(st, 422, r)
        self.assertEqual(r["ok"], False)
        self.assertEqual([(e["rule"], e["path"]) for e in r["errors"]],
                         [("allow-a", "$.rules[1].route")])

    def test_invalid_put_changes_nothing(self):
        before = self.live()
        with open(self.rules_path, "rb") as f:
            file_before = f.read()
        bad = rules_doc("bad", "/bad1", "/bad2", "/bad3")
        bad["rules"][1]["route"] = "wiki"                          # unknown route
        bad["rules"][2]["when"] = {"group": "nosuchgroup"}         # unknown group
        bad["rules"][3]["id"] = "open-path"                        # duplicate id
        bad["extra"] = True                                        # unknown top-level key
        st, r, _ = self.put(bad)
        self.assertEqual(st, 422, r)
        errs = {(e["rule"], e["path"]) for e in r["errors"]}
        self.assertEqual(errs, {(None, "$.extra"), ("allow-bad1", "$.rules[1].route"),
                                ("allow-bad2", "$.rules[2].when.group"),
                                ("open-path", "$.rules[3].id")}, r["errors"])
        for e in r["errors"]:
            self.assertTrue(e["message"], e)
        # nothing changed: version, file, decision
        self.assertEqual(self.live()["version"], before["version"])
        with open(self.rules_path, "rb") as f:
            self.assertEqual(f.read(), file_before)
        self.assertEqual(self.proxy_status("/bad2"), 403)
        self.assertEqual(self.proxy_status("/open"), 200)

    def test_put_history_diff_rollback(self):
        start = self.live()
        v0 = start["version"]
        self.assertEqual(self.proxy_status("/secret"), 403)

        st, r, _ = self.put(rules_doc("r-secret", "/secret"), comment="let /secret in")
        self.assertEqual(st, 200, r)
        v1 = r["version"]
        self.assertEqual(v1, v0 + 1)
        self.assertEqual(r["rules_version"], "r-secret")
        # live on the very next request, written to the rules file
        self.assertEqual(self.proxy_status("/secret"), 200)
        self.assertEqual(self.read_rules_file(), rules_doc("r-secret", "/secret"))
        live = self.live()
        self.assertEqual(live["version"], v1)
        self.assertEqual(live["author"], "token:ops")
        self.assertEqual(live["comment"], "let /secret in")
        self.assertEqual(live["document"], rules_doc("r-secret", "/secret"))
        self.assertRegex(live["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

        # put by an admin certificate: the author is the certificate's identity
        st, r, _ = self.api("PUT", "/api/v1/rules",
                            {"document": rules_doc("r-both", "/secret", "/more"),
                             "comment": "and /more"}, cert="carol", token=None)
        self.assertEqual(st, 200, r)
        v2 = r["version"]
        self.assertEqual(self.proxy_status("/more"), 200)

        # a stale base_version is refused and changes nothing
        st, r, _ = self.put(rules_doc("stale"), base_version=v1)
        self.assertEqual(st, 409, r)
        self.assertEqual(r["version"], v2)
        self.assertEqual(self.proxy_status("/more"), 200)

        # history, newest first
        st, h, _ = self.api("GET", "/api/v1/rules/history")
        self.assertEqual(st, 200, h)
        vs = h["versions"]
        self.assertEqual([v["version"] for v in vs[:3]], [v2, v1, v0])
        self.assertEqual(vs[0]["author"], "cert:carol@corp.example")
        self.assertEqual(vs[0]["rules"], 3)
        self.assertEqual(vs[0]["rules_version"], "r-both")
        self.assertNotIn("document", vs[0])
        self.assertEqual(vs[-1]["version"], 1)
        self.assertEqual(vs[-1]["author"], "file")
        st, one, _ = self.api("GET", "/api/v1/rules/history/%d" % v1)
        self.assertEqual(st, 200, one)
        self.assertEqual(one["document"], rules_doc("r-secret", "/secret"))
        self.assertEqual(self.api("GET", "/api/v1/rules/history/999999")[0], 404)
        self.assertEqual(self.api("GET", "/api/v1/rules/history/x")[0], 400)

        # diff v1 -> v2: /more added, version line changed
        st, d, _ = self.api("GET", "/api/v1/rules/diff?from=%d&to=%d" % (v1, v2))
        self.assertEqual(st, 200, d)
        self.assertEqual(d["rules"], {"added": ["allow-more"], "removed": [], "changed": []})
        self.assertTrue(d["diff"].startswith("--- version %d\n+++ version %d\n@@ " % (v1, v2)),
                        d["diff"])
        self.assertIn('-  "version": "r-secret"', d["diff"])
        self.assertIn('+  "version": "r-both"', d["diff"])
        self.assertIn('+      "id": "allow-more",', d["diff"])
        st, d, _ = self.api("GET", "/api/v1/rules/diff?from=%d&to=%d" % (v2, v0))
        self.assertEqual(st, 200, d)
        self.assertEqual(sorted(d["rules"]["removed"]), ["allow-more", "allow-secret"])
        self.assertEqual(self.api("GET", "/api/v1/rules/diff?from=1")[0], 400)
        self.assertEqual(self.api("GET", "/api/v1/rules/diff?from=1&to=999999")[0], 404)

        # rollback to v0: the old behaviour, as a new version
        st, r, _ = self.api("POST", "/api/v1/rules/rollback", {"version": v0})
        self.assertEqual(st, 200, r)
        v3 = r["version"]
        self.assertEqual(v3, v2 + 1)
        self.assertEqual(self.proxy_status("/secret"), 403)
        self.assertEqual(self.proxy_status("/more"), 403)
        self.assertEqual(self.proxy_status("/open"), 200)
        live = self.live()
        self.assertEqual(live["document"], start["document"])
        self.assertEqual(live["comment"], "rollback to version %d" % v0)
        self.assertEqual(self.api("POST", "/api/v1/rules/rollback", {"version": 999999})[0], 404)

        # every change is in the audit log, chained
        def events():
            ev = self.audit_admin_events()
            return ev if any(e["what"] == "rules rollback" and
                             e["detail"]["version"] == v3 for e in ev) else None
        ev = wait_until(events, 10, what="the admin events in the audit log")
        puts = [e for e in ev if e["what"] == "rules put"]
        self.assertIn(("token:ops", v1), [(e["actor"], e["detail"]["version"]) for e in puts])
        self.assertIn(("cert:carol@corp.example", v2),
                      [(e["actor"], e["detail"]["version"]) for e in puts])
        rb = [e for e in ev if e["what"] == "rules rollback" and e["detail"]["version"] == v3]
        self.assertEqual(rb[0]["detail"]["rollback_to"], v0)
        for _, raw, obj in ztlib.read_audit_log(self.audit_path):
            self.assertEqual(ztlib.audit_line_hash(raw), obj["hash"])

    def test_concurrent_puts(self):
        docs = {"A": rules_doc("c-A", "/conc-a"), "B": rules_doc("c-B", "/conc-b")}
        results = {}
        barrier = threading.Barrier(2)

        def worker(name):
            barrier.wait()
            results[name] = self.put(docs[name], comment="concurrent " + name)

        ts = [threading.Thread(target=worker, args=(n,)) for n in docs]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        self.assertEqual(sorted(results), ["A", "B"])
        for name, (st, r, _) in results.items():
            self.assertEqual(st, 200, (name, r))
        va, vb = results["A"][1]["version"], results["B"][1]["version"]
        self.assertEqual(abs(va - vb), 1)
        later = "A" if va > vb else "B"
        earlier = "B" if later == "A" else "A"
        live = self.live()
        self.assertEqual(live["version"], max(va, vb))
        self.assertEqual(live["document"], docs[later])
        self.assertEqual(self.read_rules_file(), docs[later])
        self.assertEqual(self.proxy_status("/conc-" + later.lower()), 200)
        self.assertEqual(self.proxy_status("/conc-" + earlier.lower()), 403)
        st, h, _ = self.api("GET", "/api/v1/rules/history")
        by_v = {v["version"]: v for v in h["versions"]}
        self.assertEqual(by_v[va]["rules_version"], "c-A")
        self.assertEqual(by_v[vb]["rules_version"], "c-B")
        for v, name in ((va, "A"), (vb, "B")):
            st, one, _ = self.api("GET", "/api/v1/rules/history/%d" % v)
            self.assertEqual(one["document"], docs[name])

    # ---------------------------------------------------------------- explain
    def test_explain(self):
        st, r, _ = self.api("POST", "/api/v1/explain", {"context": {
            "route": "app", "method": "GET", "path": "/open/x", "ip": "203.0.113.9",
            "user": "alice", "email": "alice@corp.example", "device": "good",
            "time": "2026-11-30T09:30:00Z", "mfa": True, "auth_age": "10m"}})
        self.assertEqual(st, 200, r)
        self.assertEqual(r["decision"], "allow")
        self.assertEqual(r["rule"], "open-path")
        self.assertTrue(any(x["id"] == "open-path" and x["result"] == "match"
                            for x in r["rules"]), r["rules"])
        ctx = r["context"]
        self.assertEqual(ctx["groups"], ["secops", "staff"])
        self.assertEqual(ctx["ip"], "203.0.113.9")
        self.assertEqual(ctx["country"], "unknown")       # no GeoIP database
        self.assertEqual(ctx["time"], "2026-11-30T09:30:00Z")
        self.assertEqual(ctx["device"], "good")
        self.assertEqual(ctx["rules"], "live")

        # a proposed document: a group rule, with the groups overridden
        doc = {"version": "p", "rules": [
            {"id": "staff-secret", "route": "app", "effect": "allow",
             "when": {"all": [{"group": "staff"}, {"path": {"prefix": "/secret"}}]}},
            {"id": "no-kp", "effect": "deny", "when": {"country": "KP"}}]}
        # (a deny rule on a country that is not known matches: fail closed)
        base = {"route": "app", "path": "/secret", "email": "bob@corp.example", "country": "DE"}
        st, r, _ = self.api("POST", "/api/v1/explain", {"context": base, "document": doc})
        self.assertEqual(st, 200, r)
        self.assertEqual((r["decision"], r["rule"]), ("deny", "default-deny"))   # bob: eng only
        self.assertEqual(r["context"]["rules"], "proposed")
        st, r, _ = self.api("POST", "/api/v1/explain",
                            {"context": dict(base, groups=["staff"]), "document": doc})
        self.assertEqual((st, r["decision"], r["rule"]), (200, "allow", "staff-secret"))
        st, r, _ = self.api("POST", "/api/v1/explain",
                            {"context": dict(base, groups=["staff"], country="KP"),
                             "document": doc})
        self.assertEqual((st, r["decision"], r["rule"]), (200, "deny", "no-kp"))
        self.assertEqual(r["context"]["country"], "KP")
        # the live rules were not touched by any of this
        self.assertEqual(self.proxy_status("/secret"), 403)

        # bad input: precise 400s / 422
        for ctx, where in (({"route": "app", "colour": 1}, "$.context.colour"),
                           ({"time": "yesterday"}, "$.context.time"),
                           ({"ip": "300.1.1.1"}, "$.context.ip"),
                           ({"country": "de"}, "$.context.country"),
                           ({"groups": "staff"}, "$.context.groups"),
                           ({"tier": "platinum"}, "$.context.tier")):
            st, r, _ = self.api("POST", "/api/v1/explain", {"context": ctx})
            self.assertEqual(st, 400, (ctx, r))
            self.assertIn(where, r["message"])
        bad = dict(doc, rules=[dict(doc["rules"][0], route="nope")])
        st, r, _ = self.api("POST", "/api/v1/explain", {"context": base, "document": bad})
        self.assertEqual(st, 422, r)
        self.assertEqual(r["errors"][0]["path"], "$.rules[0].route")

    def test_token_file_changes_and_sighup(self):
        tokens = os.path.join(self.tmp, "admin.tokens")
        new = "tok-0123456789abcdef-newci"

        def write_tokens(text, mode=0o600):
            tmp = tokens + ".new"
            with open(tmp, "w") as f:
                f.write(text)
            os.chmod(tmp, mode)
            os.replace(tmp, tokens)
        try:
            # a new token works on the next call, a removed one no longer does
            write_tokens("ops:%s\nci:%s\n" % (TOKEN, new))
            st, r, _ = self.api("GET", "/api/v1/rules", token=new)
            self.assertEqual(st, 200, r)
            write_tokens("ops:%s\n" % TOKEN)
            self.assertEqual(self.api("GET", "/api/v1/rules", token=new)[0], 403)
            # a file others can read is refused: the tokens loaded before stay
            write_tokens("ops:%s\nci:%s\n" % (TOKEN, new), mode=0o644)
            self.assertEqual(self.api("GET", "/api/v1/rules", token=new)[0], 403)
            self.assertEqual(self.api("GET", "/api/v1/rules")[0], 200)
            # so is a broken one
            write_tokens("this is not a token file\n")
            self.assertEqual(self.api("GET", "/api/v1/rules")[0], 200)
        finally:
            write_tokens("# admin tokens\nops:%s\n" % TOKEN)
        self.assertEqual(self.api("GET", "/api/v1/rules")[0], 200)
        # SIGHUP: the listener, its credentials and the history carry on
        st, h, _ = self.api("GET", "/api/v1/rules/history")
        off = self.proxy.stderr_size()
        self.proxy.sighup()
        self.proxy.wait_log(off, lambda l: "reload done" in l, what="the reload")
        st2, h2, _ = self.api("GET", "/api/v1/rules/history")
        self.assertEqual((st2, h2), (st, h))
        self.assertEqual(self.api("GET", "/api/v1/rules", cert="admin1", token=None)[0], 200)
        # a new listen address: bound on SIGHUP, the old one closed
        old_port, new_port = self.admin_port, ztlib.free_port()
        cfg = json.loads(json.dumps(self.cfg))
        cfg["admin"]["listen"] = "127.0.0.1:%d" % new_port
        ztlib.write_config(self.cfg_path, cfg)
        off = self.proxy.stderr_size()
        self.proxy.sighup()
        self.proxy.wait_log(off, lambda l: "reload done" in l, what="the reload")
        type(self).cfg = cfg
        type(self).admin_port = new_port
        self.assertFalse(ztlib.port_accepts(old_port))
        st3, h3, _ = self.api("GET", "/api/v1/rules/history")
        self.assertEqual((st3, h3), (st, h))
        # the CSRF origin follows the address
        st, r, _ = self.api("POST", "/api/v1/rules/validate", rules_doc("o"),
                            headers={"Origin": "https://127.0.0.1:%d" % old_port})
        self.assertEqual(st, 403, r)

    # ---------------------------------------------------------------- restart
    def test_z_restart_keeps_rules_and_history(self):
        st, r, _ = self.put(rules_doc("r-restart", "/after-restart"), comment="before restart")
        self.assertEqual(st, 200, r)
        v = r["version"]
        st, h, _ = self.api("GET", "/api/v1/rules/history")
        before = h["versions"]
        self.assertEqual(self.proxy_status("/after-restart"), 200)
        type(self).proxy.stop()
        type(self).proxy = ztlib.Proxy(self.tmp, self.cfg_path, self.port).start()
        wait_until(lambda: ztlib.port_accepts(self.admin_port), 10, what="admin listener")
        self.assertEqual(self.proxy_status("/after-restart"), 200)
        live = self.live()
        self.assertEqual(live["version"], v)
        self.assertEqual(live["document"], rules_doc("r-restart", "/after-restart"))
        st, h, _ = self.api("GET", "/api/v1/rules/history")
        self.assertEqual(h["versions"], before)
        # and the next version number continues
        st, r, _ = self.put(rules_doc("r-next"))
        self.assertEqual((st, r["version"]), (200, v + 1))

    def test_zz_drain_readyz(self):
        """SIGTERM: the admin listener stays up while the workers drain and
        /readyz says 503 (load balancers stop sending); the request in
        flight still gets its answer; then the process exits 0."""
        st, r, _ = self.put(rules_doc("r-drain", "/slow"), comment="drain test")
        self.assertEqual(st, 200, r)
        result = {}

        def slow():
            result["status"] = self.get("/slow?ms=2500", host="app.test:%d" % self.port,
                                        server_hostname="app.test").status

        t = threading.Thread(target=slow)
        t.start()
        wait_until(lambda: any(t.startswith("/slow") for t in self.up.targets()), 10,
                   what="the slow request at the upstream")
        proc = type(self).proxy.proc
        os.kill(proc.pid, signal.SIGTERM)
        seen = {}

        def not_ready():
            st, body, _ = self.api("GET", "/readyz", token=None)
            seen["st"], seen["body"] = st, body
            return st == 503

        wait_until(not_ready, 10, what="/readyz 503 while draining")
        self.assertIs(seen["body"]["ready"], False)
        self.assertTrue(any("shutting down" in x for x in seen["body"]["reasons"]), seen["body"])
        t.join(30)
        self.assertEqual(result.get("status"), 200)
        self.assertEqual(proc.wait(30), 0)
        self.assertEqual(type(self).proxy.sanitizer_report(), [])
        # start it again for whatever runs after
        type(self).proxy = ztlib.Proxy(self.tmp, self.cfg_path, self.port).start()
        wait_until(lambda: ztlib.port_accepts(self.admin_port), 10, what="admin listener")


class AdminNoPolicyTest(ztlib.ProxyTestCase):
    """An admin section without a policy section: health answers, the rules
    endpoints say there is nothing to manage."""

    @classmethod
    def config_extra(cls):
        cls.admin_port = ztlib.free_port()
        tokens = os.path.join(cls.tmp, "admin.tokens")
        with open(tokens, "w") as f:
            f.write("ops:%s\n" % TOKEN)
        os.chmod(tokens, 0o600)
        return {"admin": {"listen": "127.0.0.1:%d" % cls.admin_port, "token_file": tokens}}

    api = AdminTest.api
    ctx = AdminTest.ctx

    def test_no_policy(self):
        wait_until(lambda: ztlib.port_accepts(self.admin_port), 10, what="admin listener")
        st, r, _ = self.api("GET", "/readyz", token=None)
        self.assertEqual(st, 200, r)
        self.assertIs(r["rules"]["loaded"], False)
        for method, path, body in (("GET", "/api/v1/rules", None),
                                   ("PUT", "/api/v1/rules", {"document": rules_doc("x")}),
                                   ("POST", "/api/v1/explain", {"context": {"route": "app"}})):
            st, r, _ = self.api(method, path, body)
            self.assertEqual(st, 409, (path, r))
            self.assertEqual(r["error"], "no_policy")
        # no admin_groups: no certificate is admin
        self.assertEqual(self.api("GET", "/api/v1/rules", cert="good", token=None)[0], 403)
        # the data plane still lets the device through (no rules)
        self.assertEqual(self.get("/x").status, 200)


if __name__ == "__main__":
    ztlib.main()
