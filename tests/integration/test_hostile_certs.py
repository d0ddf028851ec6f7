#!/usr/bin/env python3
"""Hostile client certificates (issue 7, "Hostile input"): the whole
certificate matrix against a running ztproxy with a real upstream, each case
a real TLS client presenting a certificate made here with the openssl CLI
(nothing is committed; keys live in the temp dir).

Refusals are judged as in test_tls.py: with "unauthenticated": "reject" the
handshake (or, in TLS 1.3, the first read after it) fails and a
"handshake refused" log line names the reason; with "enroll_page" the
handshake completes and every request gets the 403 enroll page, which names
the reason too. Either way nothing reaches the upstream, and a good client is
served afterwards.

Device ids with quotes, CR/LF, NUL, non-ASCII text or 10 KB of text are
refused (docs/config.md "device_id"), and none of those bytes ever reaches a
log line, the access log, the audit log or an upstream header.
"""

import json
import os
import re
import secrets
import ssl
import subprocess

import ztlib
from ztlib import ProxyTestCase

PKI = None  # built once for the module (setUpModule)


def openssl(*args, cwd=None):
    r = subprocess.run(["openssl"] + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(map(str, args)),
                                                      r.stdout.decode(errors="replace")))
    return r.stdout


def der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def san_uri_der(uri):
    """subjectAltName value (GeneralNames) with one URI, as hex for the
    config's DER: syntax, so that any bytes at all can be in it."""
    if isinstance(uri, str):
        uri = uri.encode("utf-8")
    gn = b"\x86" + der_len(len(uri)) + uri  # [6] IA5String, implicit
    return (b"\x30" + der_len(len(gn)) + gn).hex(":").upper()


def cnf_value(s):
    """A value for an openssl config file: every special byte escaped."""
    out = []
    for ch in s:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch in "\\\"'#$;":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


class CertMaker:
    """Issues test certificates with the openssl CLI into dir."""

    def __init__(self, dir, ca_crt, ca_key):
        self.dir = dir
        self.ca_crt = ca_crt
        self.ca_key = ca_key
        os.makedirs(dir, exist_ok=True)

    def path(self, name, ext):
        return os.path.join(self.dir, "%s.%s" % (name, ext))

    def key(self, name, kind="ec"):
        k = self.path(name, "key")
        if kind == "ec":
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", k)
        else:  # "rsa1024", "rsa2048"
            openssl("genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:%s" % kind[3:], "-out", k)
        os.chmod(k, 0o600)
        return k

    def cnf(self, name, cn, ext_lines):
        c = self.path(name, "cnf")
        with open(c, "w", encoding="utf-8") as f:
            f.write("[req]\ndistinguished_name = dn\nprompt = no\nutf8 = yes\n"
                    "string_mask = utf8only\n[dn]\nCN = %s\n[ext]\n%s\n"
                    % (cnf_value(cn), "\n".join(ext_lines)))
        return c

    @staticmethod
    def device_ext(san, client_auth=True, ca=False):
        lines = ["basicConstraints = critical, CA:%s" % ("TRUE" if ca else "FALSE"),
                 "keyUsage = critical, %s" % ("digitalSignature, keyCertSign, cRLSign" if ca
                                              else "digitalSignature"),
                 "subjectKeyIdentifier = hash"]
        if client_auth:
            lines.append("extendedKeyUsage = clientAuth")
        if san is not None:
            lines.append("subjectAltName = DER:%s" % san_uri_der(san))
        return lines

    def issue(self, name, cn, ext_lines, key_kind="ec", md="sha256", days=30,
              issuer=None):
        """A certificate for a new key, signed by issuer (crt, key) or the
        CA. Returns (crt, key)."""
        k = self.key(name, key_kind)
        c = self.cnf(name, cn, ext_lines + ["authorityKeyIdentifier = keyid"])
        csr = self.path(name, "csr")
        openssl("req", "-new", "-key", k, "-config", c, "-out", csr)
        crt = self.path(name, "crt")
        ica, ikey = issuer or (self.ca_crt, self.ca_key)
        openssl("x509", "-req", "-in", csr, "-CA", ica, "-CAkey", ikey,
                "-set_serial", "0x" + secrets.token_hex(8), "-days", str(days), "-" + md,
                "-extfile", c, "-extensions", "ext", "-out", crt)
        return crt, k

    def self_signed(self, name, cn, ext_lines, days=30):
        k = self.key(name)
        c = self.cnf(name, cn, ext_lines)
        crt = self.path(name, "crt")
        openssl("req", "-x509", "-new", "-key", k, "-config", c, "-extensions", "ext",
                "-days", str(days), "-set_serial", "0x" + secrets.token_hex(8), "-out", crt)
        return crt, k

    def chain(self, name, *crts):
        """leaf + intermediates in one PEM file (what the client sends)."""
        p = self.path(name, "chain.pem")
        with open(p, "wb") as out:
            for c in crts:
                with open(c, "rb") as f:
                    out.write(f.read())
        return p


def ca_subject_cn(pki):
    out = openssl("x509", "-in", pki.ca, "-noout", "-subject", "-nameopt", "multiline")
    m = re.search(r"commonName\s*=\s*(.+)", out.decode())
    return m.group(1).strip()


# Weird device ids: each is put in the SAN URI and (where it fits in 64
# characters) in the subject CN, so that both id sources meet it.
TEN_KB = ('A"\\\n<\u00e9>\r\'' * 2000)[:10240]
WEIRD_IDS = {
    "quotes": 'dev"ice\'q"uote',
    "newline": "dev\r\nX-ZT-User: injected\nice",
    "nul": "dev\x00ice-nul",
    "unicode": "d\u00e9vice-\u2603-\u00fc",
    "tenkb": TEN_KB,
}
# Substrings that must never show up raw anywhere (logs, headers).
WEIRD_MARKERS = ['dev"ice', "\r\nX-ZT-User", "X-ZT-User: injected", "dev\x00ice",
                 "d\u00e9vice", "\u2603", 'A"\\', "<\u00e9>"]


def setUpModule():
    global PKI
    d = ztlib.make_tmpdir("zt-hostile-certs-")
    PKI = ztlib.make_pki(os.path.join(d, "pki"))
    PKI.tmp = d
    m = CertMaker(os.path.join(d, "made"), PKI.ca, PKI.ca_key)
    PKI.made = {}
    ca_cn = ca_subject_cn(PKI)
    # a leaf signed by the real CA for each case
    dev = CertMaker.device_ext
    PKI.made["rsa2048"] = m.issue("rsa2048", "rsa2048", dev("urn:ztproxy:device:rsa2048"),
                                  key_kind="rsa2048")
    PKI.made["rsa1024"] = m.issue("rsa1024", "rsa1024", dev("urn:ztproxy:device:rsa1024"),
                                  key_kind="rsa1024")
    PKI.made["sha1"] = m.issue("sha1", "sha1", dev("urn:ztproxy:device:sha1"), md="sha1")
    PKI.made["ca_leaf"] = m.issue("ca_leaf", "ca-leaf", dev("urn:ztproxy:device:ca-leaf",
                                                            ca=True))
    PKI.made["no_client_auth"] = m.issue("no_client_auth", "nca",
                                         dev("urn:ztproxy:device:nca", client_auth=False) +
                                         ["extendedKeyUsage = serverAuth"])
    # self-signed, with the CA's own name as subject and issuer
    PKI.made["self_signed"] = m.self_signed("self_signed", ca_cn,
                                            dev("urn:ztproxy:device:self-signed"))
    # a CA of its own with exactly our CA's names (subject = issuer = ours)
    evil = CertMaker(os.path.join(d, "samename"), None, None)
    same_ca = evil.self_signed("ca", ca_cn, ["basicConstraints = critical, CA:TRUE",
                                             "keyUsage = critical, keyCertSign, cRLSign",
                                             "subjectKeyIdentifier = hash"], days=3650)
    evil.ca_crt, evil.ca_key = same_ca
    PKI.made["same_names_ca"] = evil.issue("leaf", "good", dev("urn:ztproxy:device:good"))
    # an intermediate under our root (make-ca.sh: pathlen:0)
    inter = m.issue("inter", "ztproxy issuing CA",
                    ["basicConstraints = critical, CA:TRUE, pathlen:0",
                     "keyUsage = critical, keyCertSign, cRLSign",
                     "subjectKeyIdentifier = hash"], days=365)
    leaf, lkey = m.issue("via_inter", "via-inter", dev("urn:ztproxy:device:via-inter"),
                         issuer=inter)
    PKI.made["via_intermediate_pathlen0"] = (m.chain("via_inter", leaf, inter[0]), lkey)
    # weird device ids
    for name, text in WEIRD_IDS.items():
        cn = text if len(text) <= 64 and "\x00" not in text else "ztproxy device (id in SAN URI)"
        PKI.made["id_" + name] = m.issue("id_" + name, cn,
                                         dev("urn:ztproxy:device:".encode() +
                                             text.encode("utf-8")))


def tearDownModule():
    if PKI is not None:
        ztlib.remove_tmpdir(PKI.tmp)


def client_ctx(crt, key, ca):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.check_hostname = True
    # The client must be able to present what the server has to refuse
    # (RSA-1024, SHA-1): its own checks off.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(crt, key)
    return ctx


# case -> (certificate: a PKI device name or a PKI.made key, reason keywords)
REFUSED = {
    "expired": ("dev:expired", ["expired"]),
    "not_yet_valid": ("dev:notyet", ["not yet valid"]),
    "same_names_ca": ("same_names_ca", ["signature failure", "unable to get local issuer",
                                        "self-signed", "self signed"]),
    "self_signed": ("self_signed", ["self-signed", "self signed", "signature failure"]),
    "no_client_auth": ("no_client_auth", ["purpose"]),
    "ca_leaf": ("ca_leaf", ["ca certificate", "ca:true"]),
    "revoked": ("dev:revoked", ["revoked"]),
    "rsa1024": ("rsa1024", ["key too weak", "key too small"]),
    "sha1": ("sha1", ["digest algorithm too weak", "md too weak"]),
    "via_intermediate_pathlen0": ("via_intermediate_pathlen0", ["path length"]),
}
for _name in WEIRD_IDS:
    REFUSED["id_" + _name] = ("id_" + _name, ["device id"])


def cert_files(spec):
    if spec.startswith("dev:"):
        d = spec[4:]
        return PKI.device_crt(d), PKI.device_key(d)
    return PKI.made[spec]


class HostileCertBase(ProxyTestCase):
    """One proxy per class on the module's PKI."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = ztlib.make_tmpdir("zt-%s-" % cls.__name__)
        cls.ups = {}
        try:
            cls.pki = PKI
            cls.ups["main"] = ztlib.Upstream(cls.tmp, "main").start()
            cls.up = cls.ups["main"]
            cls.start_proxy()
        except BaseException:
            cls.tearDownClass()
            raise

    def ctx(self, spec):
        crt, key = cert_files(spec)
        return client_ctx(crt, key, self.pki.ca)

    def try_request(self, spec, path="/echo"):
        """One request with that certificate. Returns (status or None, detail)."""
        try:
            c = ztlib.connect(self.port, context=self.ctx(spec), timeout=15)
        except (ssl.SSLError, ConnectionError, OSError) as e:
            return None, "handshake: %r" % e
        with c:
            try:
                c.send(ztlib.build_request("GET", path))
                r = c.read_response()
                return r.status, r
            except ztlib.ConnectionClosed as e:
                return (None, "EOF") if not e.partial else (-1, e.partial)
            except (ssl.SSLError, ConnectionError, OSError) as e:
                return None, "read: %r" % e

    def upstream_heads_except_sentinels(self, before):
        return [h for h in self.up.heads()[before:]
                if not h.get("target", "").startswith("/sentinel-")]

    def assert_clean_logs(self, since):
        """No byte of a weird device id reaches the diagnostics, the access
        log or the audit log; every line is one well-formed entry."""
        err = self.proxy.stderr_since(since)
        for m in WEIRD_MARKERS:
            self.assertNotIn(m, err, "raw certificate text %r in the proxy's log" % m)
        for line in err.splitlines():
            if not line or "Sanitizer" in line:
                continue
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT[\d:.]+Z ztproxy\[\d+\] \w+: ",
                             "a log line that is not a log entry (injected?): %r" % line[:200])
            self.assertFalse(re.search(r"[\x00-\x08\x0b-\x1f\x7f]", line),
                             "control character in a log line: %r" % line[:200])
        for path in (self.access_log, getattr(self, "audit_path", None)):
            if not path or not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                data = f.read()
            for raw in data.split(b"\n")[:-1]:
                text = raw.decode("utf-8")  # must be UTF-8
                obj = json.loads(text)      # one JSON object per line
                self.assertIsInstance(obj, dict)
                for m in WEIRD_MARKERS:
                    self.assertNotIn(m, text, "raw certificate text %r in %s" % (m, path))
                    self.assertNotIn(m, json.dumps(obj, ensure_ascii=False),
                                     "certificate text %r in %s" % (m, path))


class HostileCertRejectTest(HostileCertBase):
    """"unauthenticated": "reject" (the default): the handshake is refused."""

    def test_valid_certificates_proxied(self):
        for spec, device in (("dev:good", "good"), ("rsa2048", "rsa2048")):
            with self.subTest(cert=spec):
                status, r = self.try_request(spec)
                self.assertEqual(status, 200, r)
                echo = r.json()
                devs = [v for n, v in echo["headers"] if n.lower() == "x-zt-device"]
                self.assertEqual(devs, [device])

    def test_refusals(self):
        for case, (spec, keywords) in sorted(REFUSED.items()):
            with self.subTest(case=case):
                self.assert_refused(case, spec, keywords)
        self.assertTrue(self.proxy.alive())
        self.sentinel("after-refusals")

    def assert_refused(self, case, spec, keywords):
        before = len(self.up.heads())
        off = self.proxy.stderr_size()
        status, detail = self.try_request(spec, "/echo/refused-" + case)
        self.assertIsNone(status, "%s was not refused in the handshake: %r" % (case, detail))

        def names_reason(line):
            line = line.lower()
            return "handshake refused" in line and any(k in line for k in keywords)
        try:
            self.proxy.wait_log(off, names_reason, timeout=10)
        except AssertionError:
            lines = [l for l in self.proxy.stderr_since(off).splitlines()
                     if "handshake refused" in l]
            self.fail("%s: no 'handshake refused' line names the reason (one of %r): %r"
                      % (case, keywords, lines))
        self.sentinel("refused-" + case)
        self.assertEqual(self.upstream_heads_except_sentinels(before), [],
                         "%s: a request reached the upstream" % case)
        self.assert_clean_logs(off)

    def test_weird_ids_refused_over_tls12_too(self):
        for name in WEIRD_IDS:
            with self.subTest(id=name):
                crt, key = cert_files("id_" + name)
                ctx = client_ctx(crt, key, self.pki.ca)
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                off = self.proxy.stderr_size()
                refused = False
                try:
                    with ztlib.connect(self.port, context=ctx, timeout=15) as c:
                        c.send(ztlib.build_request("GET", "/echo/tls12-" + name))
                        c.read_response()
                except (ztlib.ConnectionClosed, ssl.SSLError, ConnectionError, OSError):
                    refused = True
                self.assertTrue(refused, name)
                self.proxy.wait_log(off, lambda l: "handshake refused" in l and
                                    "device id" in l, what="the refusal of id %s" % name)
                self.assert_clean_logs(off)
        self.sentinel("tls12-ids")

    def test_still_serving(self):
        for spec, _kw in list(REFUSED.values())[:4]:
            self.try_request(spec)
        self.assertTrue(self.proxy.alive())
        self.sentinel("still-serving")


class HostileCertSubjectCNTest(HostileCertRejectTest):
    """The same matrix with the device id read from the subject CN."""

    @classmethod
    def config_extra(cls):
        return {"device_id": {"source": "subject_cn"}}

    def test_valid_certificates_proxied(self):
        status, r = self.try_request("dev:good")
        self.assertEqual(status, 200, r)
        devs = [v for n, v in r.json()["headers"] if n.lower() == "x-zt-device"]
        self.assertEqual(devs, ["good"])


class HostileCertEnrollPageTest(HostileCertBase):
    """"unauthenticated": "enroll_page": the handshake completes, every
    request gets the 403 enroll page naming the reason, nothing is
    forwarded; requests are access-logged (and the policy's audit log is on)."""

    ENROLL_URL = "https://enroll.corp.example/start"

    @classmethod
    def config_extra(cls):
        return {"tls": {"unauthenticated": "enroll_page", "enroll_url": cls.ENROLL_URL},
                "policy": {"rules": "rules.json", "audit_log": "audit.log"}}

    @classmethod
    def start_proxy(cls, cfg_update=None):
        cls.audit_path = os.path.join(cls.tmp, "audit.log")
        ztlib.write_atomic(os.path.join(cls.tmp, "rules.json"), {"rules": [
            {"id": "local", "effect": "allow", "when": {"ip": "127.0.0.0/8"}}]})
        super().start_proxy(cfg_update)

    def test_refusals_get_enroll_page_with_reason(self):
        for case, (spec, keywords) in sorted(REFUSED.items()):
            with self.subTest(case=case):
                before = len(self.up.heads())
                off = self.proxy.stderr_size()
                # X-ZT-* sent too: the page and the logs must not echo them
                status, r = self.try_request(spec, "/echo/enroll-" + case)
                self.assertEqual(status, 403, "%s: %r" % (case, r))
                body = r.body.decode("utf-8").lower()
                self.assertIn("not enrolled", body)
                self.assertTrue(any(k in body for k in keywords),
                                "%s: the enroll page does not name the reason (%r): %s"
                                % (case, keywords, body[:600]))
                for m in WEIRD_MARKERS:
                    self.assertNotIn(m.lower(), body)
                self.sentinel("enroll-" + case)
                self.assertEqual(self.upstream_heads_except_sentinels(before), [],
                                 "%s: a request reached the upstream" % case)
                self.assert_clean_logs(off)
        # every enroll page is access-logged (without a path: it is never parsed)
        ztlib.wait_until(lambda: len([e for e in self.access_entries()
                                      if e.get("error") == "device not enrolled"]) >= len(REFUSED),
                         10, what="an access log entry for every enroll page")
        self.assert_clean_logs(0)

    def test_good_still_proxied(self):
        status, r = self.try_request("dev:good")
        self.assertEqual(status, 200, r)
        devs = [v for n, v in r.json()["headers"] if n.lower() == "x-zt-device"]
        self.assertEqual(devs, ["good"])
        self.assertTrue(self.proxy.alive())


class IntermediateCATest(ProxyTestCase):
    """A device CA hierarchy whose root allows one intermediate (no pathlen:0):
    a leaf from the issuing intermediate, sent with it by the client, is
    accepted, the root alone being tls.device_ca (docs/certs.md
    "Intermediate CAs"). Without a CRL: X509_V_FLAG_CRL_CHECK would need the
    intermediate's CRL."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = ztlib.make_tmpdir("zt-IntermediateCATest-")
        cls.ups = {}
        try:
            cls.pki = PKI
            m = CertMaker(os.path.join(cls.tmp, "hier"), None, None)
            cls.root = m.self_signed("root", "ztproxy device root", [
                "basicConstraints = critical, CA:TRUE",
                "keyUsage = critical, keyCertSign, cRLSign", "subjectKeyIdentifier = hash"],
                days=3650)
            m.ca_crt, m.ca_key = cls.root
            inter = m.issue("inter", "ztproxy issuing CA", [
                "basicConstraints = critical, CA:TRUE, pathlen:0",
                "keyUsage = critical, keyCertSign, cRLSign", "subjectKeyIdentifier = hash"],
                days=365)
            leaf, key = m.issue("leaf", "via-inter",
                                CertMaker.device_ext("urn:ztproxy:device:via-inter"),
                                issuer=inter)
            cls.chain = (m.chain("leaf", leaf, inter[0]), key)
            cls.leaf_only = (leaf, key)
            cls.ups["main"] = ztlib.Upstream(cls.tmp, "main").start()
            cls.up = cls.ups["main"]
            cls.port = ztlib.free_port()
            cls.access_log = os.path.join(cls.tmp, "access.log")
            cfg = ztlib.base_config(PKI, cls.port, cls.routes(), cls.access_log,
                                    tls={"device_ca": cls.root[0]})
            del cfg["tls"]["crl"]
            cls.cfg_path = ztlib.write_config(cls.tmp, cfg)
            cls.proxy = ztlib.Proxy(cls.tmp, cls.cfg_path, cls.port).start()
        except BaseException:
            cls.tearDownClass()
            raise

    def request(self, crt, key):
        ctx = client_ctx(crt, key, PKI.ca)
        with ztlib.connect(self.port, context=ctx, timeout=15) as c:
            c.send(ztlib.build_request("GET", "/echo"))
            return c.read_response()

    def test_leaf_with_intermediate_accepted(self):
        r = self.request(*self.chain)
        self.assertEqual(r.status, 200, r)
        devs = [v for n, v in r.json()["headers"] if n.lower() == "x-zt-device"]
        self.assertEqual(devs, ["via-inter"])

    def test_leaf_without_its_intermediate_refused(self):
        off = self.proxy.stderr_size()
        before = len(self.up.heads())
        try:
            r = self.request(*self.leaf_only)
            self.fail("a leaf without its intermediate was served: %r" % r)
        except (ztlib.ConnectionClosed, ssl.SSLError, ConnectionError, OSError):
            pass
        self.proxy.wait_log(off, lambda l: "handshake refused" in l and "issuer" in l,
                            what="the refusal naming the missing issuer")
        self.assertEqual(len(self.up.heads()), before)
        self.assertTrue(self.proxy.alive())


if __name__ == "__main__":
    ztlib.main()
