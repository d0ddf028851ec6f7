#!/usr/bin/env python3
"""Mutual TLS: which device certificates get in, which are refused and why,
the enroll page mode, session resumption, ALPN."""

import subprocess

import ztlib
from ztlib import ProxyTestCase, is_refused

# For each refused certificate: the keywords (any one, case-insensitive) the
# "handshake refused" log line must contain to name the reason.
REFUSALS = {
    None: ["no certificate", "no client certificate", "did not return a certificate",
           "certificate required", "no peer certificate", "without a certificate",
           "missing"],
    "evil": ["unable to get local issuer", "unknown ca", "issuer", "untrusted",
             "self-signed", "self signed", "chain"],
    "expired": ["expired"],
    "notyet": ["not yet valid", "not yet"],
    "revoked": ["revoked"],
    "noclientauth": ["purpose", "clientauth", "client auth", "eku", "extended key usage"],
    "noeku": ["eku", "extended key usage", "clientauth", "client auth", "purpose"],
}


class RejectModeTest(ProxyTestCase):

    def assert_refused(self, device, version=None):
        label = "%s (TLS %s)" % (device or "no certificate", version or "default")
        before = len(self.up.heads())
        off = self.proxy.stderr_size()
        refused, detail = is_refused(self.port, self.pki, device, version)
        self.assertTrue(refused, "%s was not refused: %s" % (label, detail))
        keywords = REFUSALS[device]

        def names_reason(l):
            l = l.lower()
            return "handshake refused" in l and any(k in l for k in keywords)
        try:
            self.proxy.wait_log(off, names_reason, timeout=10)
        except AssertionError:
            lines = [l for l in self.proxy.stderr_since(off).splitlines()
                     if "handshake refused" in l.lower()]
            self.fail("%s: no 'handshake refused' line names the reason (one of %r); got %r"
                      % (label, keywords, lines))
        self.assertEqual(len(self.up.heads()), before,
                         "%s: a request reached the upstream" % label)

    def test_good_cert_is_proxied(self):
        r = self.get("/echo")
        self.assertEqual(r.status, 200, r)
        echo = r.json()
        self.assertEqual(echo["path"], "/echo")
        devs = [v for n, v in echo["headers"] if n.lower() == "x-zt-device"]
        self.assertEqual(devs, ["good"])
        e = self.wait_access(lambda e: e.get("path") == "/echo" and e.get("device") == "good")
        self.assertEqual(e.get("route"), "app")
        self.assertEqual(e.get("status"), 200)

    def test_good_cert_tls12_and_tls13(self):
        for version, name in (("1.2", "TLSv1.2"), ("1.3", "TLSv1.3")):
            with self.subTest(version=version):
                with self.conn(version=version) as c:
                    self.assertEqual(c.sock.version(), name)
                    c.send(ztlib.build_request("GET", "/echo"))
                    r = c.read_response()
                    self.assertEqual(r.status, 200, r)

    def test_second_device_is_identified(self):
        r = self.get("/echo", device="good2")
        self.assertEqual(r.status, 200, r)
        devs = [v for n, v in r.json()["headers"] if n.lower() == "x-zt-device"]
        self.assertEqual(devs, ["good2"])

    def test_refused_no_client_certificate(self):
        self.assert_refused(None)

    def test_refused_other_ca(self):
        self.assert_refused("evil")

    def test_refused_expired(self):
        self.assert_refused("expired")

    def test_refused_not_yet_valid(self):
        self.assert_refused("notyet")

    def test_refused_revoked(self):
        self.assert_refused("revoked")

    def test_refused_no_client_auth_eku(self):
        self.assert_refused("noclientauth")

    def test_refused_no_eku(self):
        self.assert_refused("noeku")

    def test_refused_over_tls12_too(self):
        for device in (None, "evil", "expired", "revoked", "noclientauth", "noeku"):
            with self.subTest(device=device):
                self.assert_refused(device, version="1.2")

    def test_still_serving_after_refusals(self):
        for device in (None, "evil", "expired"):
            is_refused(self.port, self.pki, device)
        self.assertTrue(self.proxy.alive())
        self.sentinel("after-refusals")

    def test_session_resumption(self):
        for version in ("1.3", "1.2"):
            with self.subTest(version=version):
                ctx = ztlib.client_context(self.pki, "good", version)
                with self.conn(context=ctx) as c:
                    c.send(ztlib.build_request("GET", "/echo"))
                    self.assertEqual(c.read_response().status, 200)
                    session = c.sock.session
                self.assertIsNotNone(session)
                reused = False
                # Up to 3 tries: with several workers each resumption must work,
                # but a fresh ticket per connection is fine.
                for _ in range(3):
                    with self.conn(context=ctx, session=session) as c:
                        reused = c.sock.session_reused
                        c.send(ztlib.build_request("GET", "/echo"))
                        r = c.read_response()
                        self.assertEqual(r.status, 200, r)
                        # The device is still known on a resumed session.
                        devs = [v for n, v in r.json()["headers"] if n.lower() == "x-zt-device"]
                        self.assertEqual(devs, ["good"])
                        session = c.sock.session
                    if reused:
                        break
                self.assertTrue(reused, "TLS %s session was not resumed" % version)

    def test_alpn_http11_only(self):
        ctx = ztlib.client_context(self.pki, "good", alpn=["h2", "http/1.1"])
        with self.conn(context=ctx) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "http/1.1")
            c.send(ztlib.build_request("GET", "/"))
            self.assertEqual(c.read_response().status, 200)

    def test_curl_good_and_no_cert(self):
        rc, status, head, body, err = ztlib.curl(self.port, "/echo", self.pki, "good")
        self.assertEqual(rc, 0, err)
        self.assertEqual(status, 200, head)
        self.assertIn(b'"x-zt-device"', body.lower())
        rc, status, head, body, err = ztlib.curl(self.port, "/echo", self.pki, None)
        self.assertNotEqual(rc, 0, "curl without a certificate succeeded: %s" % head)
        self.assertIsNone(status, "curl without a certificate got an HTTP response: %s" % head)


class KeyExchangeTest(ProxyTestCase):
    """Every offered key-exchange group and both TLS versions complete with
    an EC device certificate. On OpenSSL 3.0 the proxy has EC public keys
    decoded by OpenSSL's direct EC method (proxy/tls_ecdecode.c), which also
    serves the EC operations that have no provider key: ECDHE with P-256 and
    P-384 takes that path, so it is exercised here by a real client."""

    def s_client(self, *args):
        req = b"GET /echo HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
        p = subprocess.run(
            ["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.port, "-servername",
             "app.test", "-CAfile", self.pki.ca, "-cert", self.pki.device_crt("good"),
             "-key", self.pki.device_key("good"), "-quiet"] + list(args),
            input=req, capture_output=True, timeout=30)
        return p.stdout.decode("latin-1"), p.stderr.decode("latin-1")

    def test_groups_and_versions(self):
        cases = [("-groups", "X25519"), ("-groups", "P-256"), ("-groups", "P-384"),
                 ("-tls1_2", "-groups", "P-256"),
                 # TLS 1.2: the P-256 server certificate needs P-256 in the list
                 ("-tls1_2", "-groups", "X25519:P-256")]
        for args in cases:
            with self.subTest(args=" ".join(args)):
                out, err = self.s_client(*args)
                self.assertTrue(out.startswith("HTTP/1.1 200"), (out[:200], err[-500:]))
                self.assertIn('"x-zt-device"', out.lower().replace("'", '"'), out[:2000])

    def test_group_not_offered_is_refused(self):
        out, err = self.s_client("-groups", "P-521")
        self.assertNotIn("HTTP/1.1", out)


class EnrollPageTest(ProxyTestCase):
    ENROLL_URL = "https://enroll.corp.example/start"

    @classmethod
    def config_extra(cls):
        return {"tls": {"unauthenticated": "enroll_page", "enroll_url": cls.ENROLL_URL}}

    def assert_enroll_page(self, device):
        before = len(self.up.heads())
        r = self.get("/echo", device=device)
        self.assertEqual(r.status, 403, r)
        self.assertIn(b"enroll", r.body.lower())
        self.assertIn(self.ENROLL_URL.encode(), r.body)
        # A request with a body on such a connection: 403 too, nothing forwarded.
        r = self.req("POST", "/upload", body=b"x" * 1000, device=device)
        self.assertEqual(r.status, 403, r)
        self.sentinel("enroll-%s" % device)
        targets = self.up.targets()[before:]
        self.assertEqual([t for t in targets if not t.startswith("/sentinel-")], [],
                         "a request without a valid certificate reached the upstream")

    def test_no_cert_gets_enroll_page(self):
        self.assert_enroll_page(None)

    def test_expired_gets_enroll_page(self):
        self.assert_enroll_page("expired")

    def test_revoked_gets_enroll_page(self):
        self.assert_enroll_page("revoked")

    def test_other_ca_gets_enroll_page(self):
        self.assert_enroll_page("evil")

    def test_noeku_gets_enroll_page(self):
        self.assert_enroll_page("noeku")

    def test_good_cert_still_proxied(self):
        r = self.get("/echo")
        self.assertEqual(r.status, 200, r)
        devs = [v for n, v in r.json()["headers"] if n.lower() == "x-zt-device"]
        self.assertEqual(devs, ["good"])


class DeviceIdSubjectCNTest(ProxyTestCase):
    @classmethod
    def config_extra(cls):
        return {"device_id": {"source": "subject_cn"}}

    def test_device_from_subject_cn(self):
        r = self.get("/echo", device="good2")
        self.assertEqual(r.status, 200, r)
        devs = [v for n, v in r.json()["headers"] if n.lower() == "x-zt-device"]
        self.assertEqual(devs, ["good2"])


class DeviceIdPrefixMismatchTest(ProxyTestCase):
    """A certificate without a SAN URI of the configured prefix has no device
    id: refused, and the reason logged."""

    @classmethod
    def config_extra(cls):
        return {"device_id": {"source": "san_uri", "prefix": "urn:other:device:"}}

    def test_refused_without_device_id(self):
        off = self.proxy.stderr_size()
        refused, detail = is_refused(self.port, self.pki, "good")
        self.assertTrue(refused, "a certificate without a device id was accepted: %s" % detail)
        self.proxy.wait_log(off, lambda l: "handshake refused" in l.lower() and
                            "device" in l.lower(), timeout=10,
                            what="a 'handshake refused' line about the device id")
        self.assertEqual(self.up.heads(), [])


if __name__ == "__main__":
    ztlib.main()
