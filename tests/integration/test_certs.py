#!/usr/bin/env python3
"""Integration tests for the certificate scripts in certs/.

Run: python3 tests/integration/test_certs.py   (exits non-zero on failure)
Needs bash and the openssl CLI. The repository root is taken from the
environment variable ZT_SOURCE_DIR, else found relative to this file.
"""

import os
import shutil
import stat
import subprocess
import tempfile
import unittest
from pathlib import Path

ROOT = Path(os.environ.get("ZT_SOURCE_DIR") or Path(__file__).resolve().parents[2])
CERTS = ROOT / "certs"


def run(*args, cwd=None):
    """Run a command, return CompletedProcess with text stdout/stderr."""
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def script(name, *args, cwd=None):
    return run(CERTS / name, *args, cwd=cwd)


def x509_text(path):
    r = run("openssl", "x509", "-in", path, "-noout", "-text")
    assert r.returncode == 0, r.stderr
    return r.stdout


def verify(ca_dir, cert, crl=False, purpose=None):
    args = ["openssl", "verify", "-CAfile", Path(ca_dir) / "ca.crt"]
    if crl:
        args += ["-crl_check", "-CRLfile", Path(ca_dir) / "crl.pem"]
    if purpose:
        args += ["-purpose", purpose]
    r = run(*args, cert)
    return r.returncode, r.stdout + r.stderr


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class CertScriptsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="zt-certs-test-"))
        cls.ca = cls.tmp / "ca"
        r = script("make-ca.sh", cls.ca)
        if r.returncode != 0:
            raise RuntimeError("make-ca.sh failed: " + r.stdout + r.stderr)
        cls.ca_out = r.stdout

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def ok(self, name, *args, cwd=None):
        r = script(name, *args, cwd=cwd)
        self.assertEqual(r.returncode, 0, f"{name} {args}: {r.stdout}{r.stderr}")
        self.assertNotIn("PRIVATE KEY", r.stdout + r.stderr)
        return r

    def device(self, dev_id, *args):
        self.ok("make-device.sh", self.ca, dev_id, *args)
        return self.ca / "devices" / f"{dev_id}.crt"

    # --- CA -------------------------------------------------------------

    def test_ca_files(self):
        for f in ("ca.crt", "ca.key", "crl.pem", "ca/index.txt", "ca/serial",
                  "ca/crlnumber", "ca/openssl.cnf"):
            self.assertTrue((self.ca / f).is_file(), f)
        self.assertEqual(mode(self.ca / "ca.key"), 0o600)
        self.assertNotIn("PRIVATE KEY", self.ca_out)
        self.assertEqual(len(self.ca_out.strip().splitlines()), 1, self.ca_out)
        r = run("openssl", "crl", "-in", self.ca / "crl.pem", "-noout", "-text")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("No Revoked Certificates", r.stdout)

    def test_ca_is_ec_p256(self):
        t = x509_text(self.ca / "ca.crt")
        self.assertIn("id-ecPublicKey", t)
        self.assertIn("NIST CURVE: P-256", t)
        self.assertIn("CA:TRUE", t)
        self.assertIn("Certificate Sign, CRL Sign", t)
        r = run("openssl", "x509", "-in", self.ca / "ca.crt", "-noout", "-checkend",
                str(9 * 365 * 86400))
        self.assertEqual(r.returncode, 0, "CA should be valid for ~10 years")

    def test_ca_rsa(self):
        d = self.tmp / "rsa-ca"
        self.ok("make-ca.sh", d, "--rsa", "--name", "Test RSA CA")
        t = x509_text(d / "ca.crt")
        self.assertIn("rsaEncryption", t)
        self.assertIn("(2048 bit)", t)
        self.assertIn("CN = Test RSA CA", t)
        self.assertEqual(mode(d / "ca.key"), 0o600)
        # An RSA device cert from that CA verifies too.
        self.ok("make-device.sh", d, "rsa-dev", "--rsa")
        rc, out = verify(d, d / "devices" / "rsa-dev.crt", crl=True)
        self.assertEqual(rc, 0, out)
        self.assertIn("rsaEncryption", x509_text(d / "devices" / "rsa-dev.crt"))

    def test_ca_idempotent(self):
        before = {f: (self.ca / f).read_bytes() for f in ("ca.crt", "ca.key", "crl.pem")}
        r = self.ok("make-ca.sh", self.ca)
        self.assertIn("exists", r.stdout)
        for f, data in before.items():
            self.assertEqual((self.ca / f).read_bytes(), data, f)

    def test_ca_regenerates_missing_crl(self):
        d = self.tmp / "crl-regen"
        self.ok("make-ca.sh", d)
        crt = (d / "ca.crt").read_bytes()
        (d / "crl.pem").unlink()
        self.ok("make-ca.sh", d)
        self.assertTrue((d / "crl.pem").is_file())
        self.assertEqual((d / "ca.crt").read_bytes(), crt)

    # --- devices --------------------------------------------------------

    def test_device_cert(self):
        crt = self.device("laptop-01")
        d = self.ca / "devices"
        t = x509_text(crt)
        self.assertIn("Subject: CN = laptop-01", t)
        self.assertIn("URI:urn:ztproxy:device:laptop-01", t)
        self.assertIn("TLS Web Client Authentication", t)
        self.assertIn("Digital Signature", t)
        self.assertIn("id-ecPublicKey", t)
        rc, out = verify(self.ca, crt, crl=True, purpose="sslclient")
        self.assertEqual(rc, 0, out)
        self.assertEqual(mode(d / "laptop-01.key"), 0o600)
        self.assertEqual(mode(d / "laptop-01.pem"), 0o600)
        pem = (d / "laptop-01.pem").read_text()
        self.assertIn("BEGIN CERTIFICATE", pem)
        self.assertIn("PRIVATE KEY", pem)
        # in the CA database
        self.assertIn("/CN=laptop-01", (self.ca / "ca" / "index.txt").read_text())
        # default validity ~365 days
        r = run("openssl", "x509", "-in", crt, "-noout", "-checkend", str(364 * 86400))
        self.assertEqual(r.returncode, 0)
        r = run("openssl", "x509", "-in", crt, "-noout", "-checkend", str(366 * 86400))
        self.assertNotEqual(r.returncode, 0)

    def test_device_days(self):
        crt = self.device("short-lived", "--days", "2")
        r = run("openssl", "x509", "-in", crt, "-noout", "-checkend", str(3 * 86400))
        self.assertNotEqual(r.returncode, 0)

    def test_device_idempotent(self):
        crt = self.device("idem")
        data = crt.read_bytes()
        key = crt.with_suffix(".key").read_bytes()
        r = self.ok("make-device.sh", self.ca, "idem")
        self.assertIn("exists", r.stdout)
        self.assertEqual(crt.read_bytes(), data)
        self.assertEqual(crt.with_suffix(".key").read_bytes(), key)
        # --force reissues
        self.ok("make-device.sh", self.ca, "idem", "--force")
        self.assertNotEqual(crt.read_bytes(), data)
        rc, out = verify(self.ca, crt, crl=True)
        self.assertEqual(rc, 0, out)

    def test_no_client_auth(self):
        crt = self.device("no-client-auth", "--no-client-auth")
        t = x509_text(crt)
        self.assertNotIn("TLS Web Client Authentication", t)
        self.assertIn("TLS Web Server Authentication", t)
        rc, out = verify(self.ca, crt, purpose="sslclient")
        self.assertNotEqual(rc, 0, out)

    def test_no_eku(self):
        crt = self.device("no-eku", "--no-eku")
        t = x509_text(crt)
        self.assertNotIn("Extended Key Usage", t)
        self.assertIn("URI:urn:ztproxy:device:no-eku", t)

    def test_expired(self):
        crt = self.device("expired", "--start", "20200101000000Z", "--end", "20200201000000Z")
        r = run("openssl", "x509", "-in", crt, "-noout", "-dates")
        self.assertIn("notBefore=Jan  1 00:00:00 2020 GMT", r.stdout)
        self.assertIn("notAfter=Feb  1 00:00:00 2020 GMT", r.stdout)
        rc, out = verify(self.ca, crt)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("expired", out)

    def test_not_yet_valid(self):
        crt = self.device("future", "--start", "20990101000000Z", "--end", "20991231000000Z")
        r = run("openssl", "x509", "-in", crt, "-noout", "-dates")
        self.assertIn("notBefore=Jan  1 00:00:00 2099 GMT", r.stdout)
        self.assertIn("notAfter=Dec 31 00:00:00 2099 GMT", r.stdout)
        rc, out = verify(self.ca, crt)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("not yet valid", out)

    def test_revoke(self):
        crt = self.device("stolen")
        other = self.device("bystander")
        rc, out = verify(self.ca, crt, crl=True)
        self.assertEqual(rc, 0, out)
        self.ok("revoke-device.sh", self.ca, "stolen")
        rc, out = verify(self.ca, crt, crl=True)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("certificate revoked", out)
        rc, out = verify(self.ca, other, crl=True)
        self.assertEqual(rc, 0, out)
        # idempotent
        self.ok("revoke-device.sh", self.ca, "stolen")
        rc, out = verify(self.ca, crt, crl=True)
        self.assertIn("certificate revoked", out)
        # make-crl keeps it revoked
        r = self.ok("make-crl.sh", self.ca)
        self.assertIn("crl.pem", r.stdout)
        rc, out = verify(self.ca, crt, crl=True)
        self.assertIn("certificate revoked", out)

    def test_revoke_unknown(self):
        r = script("revoke-device.sh", self.ca, "no-such-device")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("no-such-device", r.stderr)

    def test_any_cwd(self):
        # relative DIR, run from another directory
        self.ok("make-device.sh", "ca", "cwd-dev", cwd=self.tmp)
        self.assertTrue((self.ca / "devices" / "cwd-dev.crt").is_file())
        self.ok("make-crl.sh", "./ca", cwd=self.tmp)

    # --- server ---------------------------------------------------------

    def test_server(self):
        self.ok("make-server.sh", self.ca, "localhost", "127.0.0.1", "::1")
        crt, key = self.ca / "server.crt", self.ca / "server.key"
        t = x509_text(crt)
        self.assertIn("DNS:localhost", t)
        self.assertIn("IP Address:127.0.0.1", t)
        self.assertIn("IP Address:0:0:0:0:0:0:0:1", t)
        self.assertIn("TLS Web Server Authentication", t)
        self.assertEqual(mode(key), 0o600)
        rc, out = verify(self.ca, crt, crl=True, purpose="sslserver")
        self.assertEqual(rc, 0, out)
        data = crt.read_bytes()
        # same names (other order, duplicate) -> unchanged
        self.ok("make-server.sh", self.ca, "::1", "localhost", "127.0.0.1", "localhost")
        self.assertEqual(crt.read_bytes(), data)
        # different names -> reissued
        self.ok("make-server.sh", self.ca, "localhost")
        self.assertNotEqual(crt.read_bytes(), data)
        self.assertNotIn("127.0.0.1", x509_text(crt))

    def test_server_out_rsa(self):
        self.ok("make-server.sh", self.ca, "upstream.test", "--out", "upstream", "--rsa")
        t = x509_text(self.ca / "upstream.crt")
        self.assertIn("DNS:upstream.test", t)
        self.assertIn("rsaEncryption", t)
        self.assertIn("Key Encipherment", t)
        self.assertEqual(mode(self.ca / "upstream.key"), 0o600)

    # --- bad arguments --------------------------------------------------

    def assert_usage(self, name, *args):
        r = script(name, *args)
        self.assertEqual(r.returncode, 2, f"{name} {args}: {r.stdout}{r.stderr}")
        self.assertIn("usage:", r.stderr)

    def test_bad_arguments(self):
        for name in ("make-ca.sh", "make-server.sh", "make-device.sh",
                     "revoke-device.sh", "make-crl.sh"):
            with self.subTest(script=name):
                self.assert_usage(name)
                self.assert_usage(name, self.ca, "x", "--bogus-option")
        self.assert_usage("make-server.sh", self.ca)
        self.assert_usage("make-device.sh", self.ca)
        self.assert_usage("make-device.sh", self.ca, "d", "--days")
        self.assert_usage("make-device.sh", self.ca, "d", "--days", "abc")
        self.assert_usage("make-device.sh", self.ca, "d", "--start", "2020-01-01")
        self.assert_usage("make-crl.sh", self.ca, "extra")

    def test_bad_device_id(self):
        for bad in ("", "-lead", ".hidden", "a/b", "../x", "sp ace", "a" * 129, "é"):
            with self.subTest(device_id=bad):
                r = script("make-device.sh", self.ca, bad)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn("DEVICE_ID", r.stderr)
        self.assertFalse((self.tmp / "x.crt").exists())

    def test_long_device_id(self):
        # 128 characters is valid but does not fit in a CN (max 64): the id is
        # then only in the SAN URI.
        long_a, long_b = "a" * 127 + "1", "a" * 127 + "2"
        crt_a = self.device(long_a)
        crt_b = self.device(long_b)
        t = x509_text(crt_a)
        self.assertIn("URI:urn:ztproxy:device:" + long_a, t)
        self.assertNotIn("CN = " + long_a[:64], t)
        self.device(long_a, "--force")  # older cert of long_a stays in the db
        self.ok("revoke-device.sh", self.ca, long_a)
        rc, out = verify(self.ca, crt_a, crl=True)
        self.assertIn("certificate revoked", out)
        rc, out = verify(self.ca, crt_b, crl=True)
        self.assertEqual(rc, 0, "revoking one long id must not revoke another: " + out)
        crt_64 = self.device("b" * 64)
        self.assertIn("CN = " + "b" * 64, x509_text(crt_64))

    def test_revoke_after_force_revokes_older_cert(self):
        crt = self.device("reissued")
        old = crt.read_bytes()
        self.device("reissued", "--force")
        self.ok("revoke-device.sh", self.ca, "reissued")
        old_path = self.tmp / "reissued-old.crt"
        old_path.write_bytes(old)
        for c in (crt, old_path):
            rc, out = verify(self.ca, c, crl=True)
            self.assertIn("certificate revoked", out)
        # a new certificate after revocation is valid again
        self.device("reissued", "--force")
        rc, out = verify(self.ca, crt, crl=True)
        self.assertEqual(rc, 0, out)

    def test_no_ca(self):
        empty = self.tmp / "empty"
        empty.mkdir(exist_ok=True)
        for args in (("make-device.sh", empty, "d"), ("make-server.sh", empty, "localhost"),
                     ("revoke-device.sh", empty, "d"), ("make-crl.sh", empty)):
            with self.subTest(script=args[0]):
                r = script(*args)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn("no CA", r.stderr)


if __name__ == "__main__":
    unittest.main()
