#!/usr/bin/env python3
"""/metrics on the admin listener (docs/admin-api.md, "Metrics"): real
traffic through a real ztproxy moves the counters it should.

Real processes: ztproxy with an "admin" section (HTTPS on its own loopback
port with the proxy's server certificate; /metrics needs no credential), a
"policy" (rules.json, directory.json) and "device_trust" (an inventory
file), upstream.py, and a route whose upstream is a closed port.

Routes:
  app   app.test     upstream.py   allow /ok... (rule app-ok), deny /secret (rule app-secret),
                                   everything else default-deny
  down  other.test   closed port   allow everything (rule down-any): 502

The test reads /metrics, drives traffic (allowed, denied, default-denied,
an upstream that is down, TLS handshakes without a certificate / revoked /
from another CA, a bad and a good SIGHUP, a posture report), reads
/metrics again and checks that each counter moved by what was done. Every
document is parsed strictly: HELP and TYPE before each family's samples,
`name{labels} value` lines, histogram buckets cumulative with "+Inf" equal
to _count.

Needs the admin listener (branch "admin"): without it the proxy refuses
the "admin" section and the test fails in setUpClass, saying so.
"""

import http.client
import json
import os
import re
import ssl
import subprocess
import unittest

import ztlib
from idp import SSOTestCase
from ztlib import (Proxy, Upstream, base_config, free_port, is_refused, make_pki, make_tmpdir,
                   remove_tmpdir, wait_until, write_config)

RULES = {
    "version": "m-1",
    "rules": [
        {"id": "app-secret", "route": "app", "effect": "deny",
         "when": {"path": {"prefix": "/secret"}}},
        {"id": "app-ok", "route": "app", "effect": "allow",
         "when": {"path": {"prefix": "/ok"}}},
        {"id": "down-any", "route": "down", "effect": "allow", "when": {"ip": "127.0.0.0/8"}},
    ],
}

DIRECTORY = {
    "version": "d-1",
    "groups": {"staff": {}},
    "users": {"alice@corp.example": {"groups": ["staff"], "subject": "alice"}},
}

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_labels(text):
    out, pos = {}, 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        if not m:
            raise AssertionError("bad labels %r" % text)
        out[m.group(1)] = m.group(2)
        pos = m.end()
    return tuple(sorted(out.items()))


def parse_exposition(text):
    """{(name, labels-tuple): value}, checking the format as it goes."""
    samples, families, types = {}, [], {}
    family = help_for = None
    if not text.endswith("\n"):
        raise AssertionError("the exposition does not end with a newline")
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP "):
            name, _, helptext = line[7:].partition(" ")
            if not helptext:
                raise AssertionError("HELP without text: %r" % line)
            if name in families:
                raise AssertionError("family %s announced twice" % name)
            help_for, family = name, None
            families.append(name)
            continue
        if line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            if name != help_for:
                raise AssertionError("TYPE %s not right after its HELP" % name)
            if typ not in ("counter", "gauge", "histogram"):
                raise AssertionError("type %r" % typ)
            if typ == "counter" and not name.endswith("_total"):
                raise AssertionError("counter %s without _total" % name)
            family, types[name] = name, typ
            continue
        if line.startswith("#") or not line:
            raise AssertionError("unexpected line %r" % line)
        m = SAMPLE.match(line)
        if not m:
            raise AssertionError("bad sample line %r" % line)
        name, labels, value = m.group(1), parse_labels(m.group(3) or ""), float(m.group(4))
        if family is None:
            raise AssertionError("sample %r before any TYPE" % line)
        ok = (name == family if types[family] != "histogram" else
              name in (family + "_bucket", family + "_sum", family + "_count"))
        if not ok:
            raise AssertionError("sample %s in family %s" % (name, family))
        if (name, labels) in samples:
            raise AssertionError("duplicate sample %r" % line)
        samples[(name, labels)] = value
    for fam, typ in types.items():
        if typ == "histogram":
            check_histogram(samples, fam)
    return samples


def check_histogram(samples, fam):
    counts = [(labels, v) for (n, labels), v in samples.items() if n == fam + "_count"]
    for labels, count in counts:
        buckets = []
        for (n, bl), v in samples.items():
            d = dict(bl)
            le = d.pop("le", None)
            if n == fam + "_bucket" and tuple(sorted(d.items())) == labels:
                buckets.append((float("inf") if le == "+Inf" else float(le), v))
        buckets.sort()
        if not buckets or buckets[-1][0] != float("inf"):
            raise AssertionError("%s%r has no +Inf bucket" % (fam, labels))
        prev = 0
        for le, v in buckets:
            if v < prev:
                raise AssertionError("%s%r buckets not cumulative" % (fam, labels))
            prev = v
        if buckets[-1][1] != count:
            raise AssertionError("%s%r: +Inf %s != count %s" % (fam, labels, buckets[-1][1],
                                                               count))
        if (fam + "_sum", labels) not in samples:
            raise AssertionError("%s%r has no _sum" % (fam, labels))


def key(name, **labels):
    return (name, tuple(sorted(labels.items())))


def admin_section(cls):
    """The "admin" section on a new port (cls.admin_port), with a token file
    (the API needs a credential; /metrics does not)."""
    cls.admin_port = free_port()
    token_file = os.path.join(cls.tmp, "admin.tokens")
    with open(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write("ops:%s\n" % os.urandom(24).hex())
    return {"listen": "127.0.0.1:%d" % cls.admin_port, "token_file": token_file}


class MetricsClient:
    """Reads /metrics from the admin listener (cls.admin_port)."""

    def fetch(self, path="/metrics", headers=None, method="GET"):
        ctx = ssl.create_default_context(cafile=self.pki.ca)
        ctx.check_hostname = False  # the server certificate names app.test, 127.0.0.1, ...
        conn = http.client.HTTPSConnection("127.0.0.1", self.admin_port, context=ctx,
                                           timeout=30)
        try:
            conn.request(method, path, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.getheader("Content-Type") or "", r.read().decode()
        finally:
            conn.close()

    def metrics(self):
        status, ctype, body = self.fetch()
        self.assertEqual(status, 200, body[:500])
        self.assertTrue(ctype.startswith("text/plain"), ctype)
        self.assertIn("version=0.0.4", ctype)
        return parse_exposition(body)

    def wait_value(self, k, pred, what):
        """Poll /metrics until pred(value of k, 0 when absent) holds."""
        last = {}

        def check():
            last["m"] = self.metrics()
            return pred(last["m"].get(k, 0.0))
        try:
            wait_until(check, 15, what=what)
        except AssertionError:
            self.fail("%s: %s is %r" % (what, k, last.get("m", {}).get(k)))
        return last["m"]


class MetricsTest(MetricsClient, unittest.TestCase):

    proxy = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = make_tmpdir("zt-MetricsTest-")
        cls.ups = {}
        try:
            cls.pki = make_pki(os.path.join(cls.tmp, "pki"))
            cls.up = cls.ups["main"] = Upstream(cls.tmp, "main").start()
            ztlib.write_atomic(os.path.join(cls.tmp, "rules.json"), RULES)
            ztlib.write_atomic(os.path.join(cls.tmp, "directory.json"), DIRECTORY)
            ztlib.write_atomic(os.path.join(cls.tmp, "inventory.json"),
                               [ztlib.inventory_record("good")])
            cls.state_dir = os.path.join(cls.tmp, "state")
            os.makedirs(cls.state_dir)
            cls.port = free_port()
            cls.closed_port = free_port()  # nothing listens there
            cls.access_log = os.path.join(cls.tmp, "access.log")
            cls.cfg = base_config(
                cls.pki, cls.port,
                [{"name": "app", "host": "app.test", "upstream": cls.up.url},
                 {"name": "down", "host": "other.test",
                  "upstream": "http://127.0.0.1:%d" % cls.closed_port}],
                cls.access_log,
                state_dir=cls.state_dir,
                device_trust={"inventory": {"file": "inventory.json", "max_stale": "1h"}},
                policy={"rules": "rules.json", "directory": {"file": "directory.json"},
                        "audit_log": "audit.log"},
                admin=admin_section(cls))
            cls.cfg_path = write_config(cls.tmp, cls.cfg)
            cls.require_admin_listener()
            cls.proxy = Proxy(cls.tmp, cls.cfg_path, cls.port).start()
            wait_until(lambda: ztlib.port_accepts(cls.admin_port), 10,
                       what="the admin listener")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def require_admin_listener(cls):
        r = subprocess.run([ztlib.ZTPROXY_BIN, "-c", cls.cfg_path, "--check"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                           cwd=cls.tmp)
        if r.returncode != 0:
            out = r.stdout.decode(errors="replace")
            if "admin" in out:
                raise AssertionError(
                    "this ztproxy has no admin listener (merge branch 'admin'): /metrics "
                    "is served there. --check said: " + out.strip())
            raise AssertionError("the test config does not validate: " + out.strip())

    @classmethod
    def tearDownClass(cls):
        report = []
        if cls.proxy is not None:
            cls.proxy.stop()
            report = cls.proxy.sanitizer_report()
            cls.proxy = None
        for u in cls.ups.values():
            u.stop()
        remove_tmpdir(cls.tmp)
        if report:
            raise AssertionError("the proxy's sanitizer reported: %s" % report[:5])

    def send(self, host, path, device="good"):
        return ztlib.http_request(self.port, "GET", path, [("Accept", "application/json")],
                                  pki=self.pki, device=device, host=host)

    # ------------------------------------------------------------------ tests
    def test_no_credential_needed_and_well_formed(self):
        status, ctype, body = self.fetch()
        self.assertEqual(status, 200, body[:300])
        m = parse_exposition(body)
        for fam in ("ztproxy_requests_total", "ztproxy_decisions_total",
                    "ztproxy_request_duration_seconds", "ztproxy_policy_eval_duration_seconds",
                    "ztproxy_tls_handshake_failures_total", "ztproxy_upstream_errors_total",
                    "ztproxy_connections_active", "ztproxy_config_reloads_total",
                    "ztproxy_inventory_feed_age_seconds", "ztproxy_directory_age_seconds"):
            self.assertIn("# TYPE %s " % fam, body)
        # Loaded at start: the rules, the directory and the inventory.
        self.assertEqual(m[key("ztproxy_rules")], len(RULES["rules"]))
        self.assertEqual(m[key("ztproxy_directory_users")], 1)
        self.assertIn(key("ztproxy_directory_age_seconds"), m)
        self.assertIn(key("ztproxy_inventory_feed_age_seconds"), m)
        self.assertEqual(m[key("ztproxy_inventory_stale")], 0)
        self.assertEqual(m[key("ztproxy_inventory_devices")], 1)
        # Read-only.
        status, _, _ = self.fetch(method="POST", headers={"Content-Type": "application/json"})
        self.assertEqual(status, 405)

    def test_traffic_moves_the_counters(self):
        before = self.metrics()

        def moved(k, n, what):
            want = before.get(k, 0.0) + n
            m = self.wait_value(k, lambda v: v >= want, what)
            self.assertEqual(m.get(k, 0.0), want, "%s: %s" % (what, k))
            return m

        for i in range(3):
            r = self.send("app.test", "/ok/%d" % i)
            self.assertEqual(r.status, 200, r)
        for i in range(2):
            r = self.send("app.test", "/secret/%d" % i)
            self.assertEqual(r.status, 403, r)
        r = self.send("app.test", "/elsewhere")
        self.assertEqual(r.status, 403, r)
        r = self.send("other.test", "/x")
        self.assertEqual(r.status, 502, r)
        for device in (None, "revoked", "evil"):
            refused, detail = is_refused(self.port, self.pki, device)
            self.assertTrue(refused, "%s was not refused: %s" % (device, detail))

        moved(key("ztproxy_requests_total", route="app", status="2xx"), 3, "allowed requests")
        moved(key("ztproxy_requests_total", route="app", status="4xx"), 3, "denied requests")
        moved(key("ztproxy_requests_total", route="down", status="5xx"), 1, "502 on down")
        moved(key("ztproxy_decisions_total", route="app", effect="allow", rule="app-ok"), 3,
              "allow decisions")
        moved(key("ztproxy_decisions_total", route="app", effect="deny", rule="app-secret"), 2,
              "deny decisions")
        moved(key("ztproxy_decisions_total", route="app", effect="deny", rule="default-deny"), 1,
              "default-deny decision")
        moved(key("ztproxy_decisions_total", route="down", effect="allow", rule="down-any"), 1,
              "allow on down")
        moved(key("ztproxy_upstream_errors_total", route="down", kind="connect_failed"), 1,
              "upstream connect refused")
        moved(key("ztproxy_tls_handshake_failures_total", reason="no_certificate"), 1,
              "handshake without a certificate")
        moved(key("ztproxy_tls_handshake_failures_total", reason="revoked"), 1,
              "handshake with a revoked certificate")
        moved(key("ztproxy_tls_handshake_failures_total", reason="unknown_ca"), 1,
              "handshake from another CA")
        m = moved(key("ztproxy_request_duration_seconds_count", route="app"), 6,
                  "request durations")
        self.assertEqual(m[key("ztproxy_request_duration_seconds_bucket", route="app",
                               le="+Inf")], m[key("ztproxy_request_duration_seconds_count",
                                                  route="app")])
        self.assertGreater(m[key("ztproxy_request_duration_seconds_sum", route="app")],
                           before.get(key("ztproxy_request_duration_seconds_sum", route="app"),
                                      0.0))
        self.assertGreaterEqual(
            m[key("ztproxy_policy_eval_duration_seconds_count")] -
            before[key("ztproxy_policy_eval_duration_seconds_count")], 7)
        self.assertGreaterEqual(
            m[key("ztproxy_tls_handshakes_total")] - before[key("ztproxy_tls_handshakes_total")],
            7)
        self.assertGreaterEqual(
            m[key("ztproxy_connections_accepted_total")] -
            before[key("ztproxy_connections_accepted_total")], 10)
        # Nothing else was sent to the down route, nothing reached it.
        self.assertNotIn(key("ztproxy_requests_total", route="down", status="2xx"), m)

    def test_active_connections(self):
        base = self.metrics()[key("ztproxy_connections_active")]
        conns = [ztlib.connect(self.port, self.pki, "good") for _ in range(3)]
        try:
            for c in conns:  # a request each: the handshake is surely done
                c.send(ztlib.build_request("GET", "/ok/active"))
                self.assertEqual(c.read_response().status, 200)
            self.wait_value(key("ztproxy_connections_active"), lambda v: v >= base + 3,
                            "three open connections")
        finally:
            for c in conns:
                c.close()
        self.wait_value(key("ztproxy_connections_active"), lambda v: v <= base,
                        "the connections closed")

    def test_reloads(self):
        before = self.metrics()
        ok = key("ztproxy_config_reloads_total", result="success")
        bad = key("ztproxy_config_reloads_total", result="failure")
        good_text = open(self.cfg_path).read()
        off = self.proxy.stderr_size()
        write_config(self.cfg_path, "{ this is not json")
        try:
            self.proxy.sighup()
            self.proxy.wait_log(off, lambda l: "reload refused" in l, what="reload refused")
        finally:
            write_config(self.cfg_path, good_text)
        m = self.wait_value(bad, lambda v: v >= before[bad] + 1, "a refused reload")
        self.assertEqual(m[bad], before[bad] + 1)
        self.assertEqual(m[ok], before[ok])
        off = self.proxy.stderr_size()
        self.proxy.sighup()
        self.proxy.wait_log(off, lambda l: "reload done" in l, what="reload done")
        m = self.wait_value(ok, lambda v: v >= before[ok] + 1, "a good reload")
        self.assertEqual(m[ok], before[ok] + 1)
        self.assertEqual(m[bad], before[bad] + 1)
        # Still serving, still counting.
        r = self.send("app.test", "/ok/after-reload")
        self.assertEqual(r.status, 200, r)

    def test_rules_file_loads_and_refusals(self):
        before = self.metrics()
        ok = key("ztproxy_rules_loads_total", result="success")
        bad = key("ztproxy_rules_loads_total", result="refused")
        path = os.path.join(self.tmp, "rules.json")
        try:
            ztlib.write_atomic(path, '{"rules": [ {"id": "x", "effect": "allow", "when": {')
            m = self.wait_value(bad, lambda v: v >= before[bad] + 1, "refused rules file")
            self.assertEqual(m[bad], before[bad] + 1)
            self.assertEqual(m[key("ztproxy_rules")], len(RULES["rules"]))  # kept
            more = dict(RULES, version="m-2",
                        rules=RULES["rules"] + [{"id": "app-extra", "route": "app",
                                                 "effect": "allow",
                                                 "when": {"path": {"prefix": "/extra"}}}])
            ztlib.write_atomic(path, more)
            m = self.wait_value(ok, lambda v: v >= before[ok] + 1, "new rules file")
            self.assertEqual(m[key("ztproxy_rules")], len(RULES["rules"]) + 1)
            r = self.send("app.test", "/extra/1")
            self.assertEqual(r.status, 200, r)
            self.wait_value(key("ztproxy_decisions_total", route="app", effect="allow",
                                rule="app-extra"), lambda v: v == 1, "a decision by the new rule")
        finally:
            ztlib.write_atomic(path, RULES)
        self.wait_value(key("ztproxy_rules"), lambda v: v == len(RULES["rules"]),
                        "the original rules back")

    def test_posture_reports(self):
        before = self.metrics()
        k = key("ztproxy_posture_reports_total", result="accepted")
        r = ztlib.post_posture(self.port, self.pki, "good", ztlib.posture_report())
        self.assertEqual(r.status, 200, r)
        self.wait_value(k, lambda v: v == before[k] + 1, "an accepted posture report")
        kr = key("ztproxy_posture_reports_total", result="refused")
        r = ztlib.post_posture(self.port, self.pki, "good", b"{not json")
        self.assertEqual(r.status, 400, r)
        self.wait_value(kr, lambda v: v == before[kr] + 1, "a refused posture report")


class MetricsSSOTest(MetricsClient, SSOTestCase):
    """The identity counters: a login, a refused callback, a session cookie
    presented by another device, a refused bearer token (the dev IdP; skipped
    like the other SSO tests when it is not installed)."""

    @classmethod
    def config_extra(cls):
        cfg = super().config_extra()
        cfg["admin"] = admin_section(cls)
        return cfg

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            wait_until(lambda: ztlib.port_accepts(cls.admin_port), 10, what="the admin listener")
        except BaseException:
            cls.tearDownClass()
            raise

    def test_identity_counters(self):
        before = self.metrics()
        ok = key("ztproxy_logins_total", result="success")
        bad = key("ztproxy_logins_total", result="failure")
        stolen = key("ztproxy_session_cookie_wrong_device_total")
        bearer = key("ztproxy_bearer_refused_total")

        s = self.login("alice")["session"]
        m = self.wait_value(ok, lambda v: v >= before[ok] + 1, "a login")
        self.assertEqual(m[ok], before[ok] + 1)
        self.assertEqual(m[bad], before[bad])

        r = self.visit("/.zt/callback?state=short&code=x")
        self.assertEqual(r.status, 400, r)
        self.wait_value(bad, lambda v: v == before[bad] + 1, "a refused callback")

        r = self.visit(self.unique("stolen"), cookies=self.session_cookies(s), device="good2")
        self.assert_to_idp(r, "a session cookie from another device")
        self.wait_value(stolen, lambda v: v == before[stolen] + 1, "a stolen cookie")

        r = self.visit(self.unique("bearer"), host="loose.test",
                       headers={"Authorization": "Bearer not.a.token"})
        self.assertEqual(r.status, 401, r)
        m = self.wait_value(bearer, lambda v: v == before[bearer] + 1, "a refused bearer token")
        self.assertEqual(m[ok], before[ok] + 1)
        self.assertEqual(m[bad], before[bad] + 1)


if __name__ == "__main__":
    ztlib.main()
