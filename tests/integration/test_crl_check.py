"""The CRL check across handshakes: after the CRL's whole check (signature
included) has passed once, later handshakes still refuse revoked
certificates, and every certificate once the CRL has expired."""

import datetime
import os
import subprocess
import time

import ztlib
from ztlib import ProxyTestCase, is_refused

CRL_SECONDS = 20  # long enough for a slow (sanitizer) start


class ExpiringCRLTest(ProxyTestCase):

    @classmethod
    def start_proxy(cls, cfg_update=None):
        # A CRL (revoking "revoked", like the PKI's own) due CRL_SECONDS from now.
        cls.short_crl = os.path.join(cls.tmp, "short-crl.pem")
        subprocess.run(["openssl", "ca", "-config", "ca/openssl.cnf", "-gencrl", "-crlsec",
                        str(CRL_SECONDS), "-out", cls.short_crl],
                       cwd=cls.pki.dir, check=True, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
        out = subprocess.run(["openssl", "crl", "-in", cls.short_crl, "-noout", "-nextupdate"],
                             check=True, stdout=subprocess.PIPE, timeout=60).stdout.decode()
        # nextUpdate=Nov 28 17:20:01 2026 GMT
        cls.next_update = datetime.datetime.strptime(
            out.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z").replace(
                tzinfo=datetime.timezone.utc).timestamp()
        super().start_proxy({"tls": {"crl": cls.short_crl}, "workers": 1})

    def refused(self, device):
        return is_refused(self.port, self.pki, device)

    def test_crl_checked_in_every_handshake(self):
        # several handshakes while the CRL is current: the good device is
        # served each time, the revoked one refused each time
        for i in range(3):
            with self.subTest(round=i):
                r = self.get("/echo")
                self.assertEqual(r.status, 200, r)
                refused, detail = self.refused("revoked")
                self.assertTrue(refused, "revoked device served: %s" % detail)
        self.assertLess(time.time(), self.next_update,
                        "the CRL expired before the first checks (slow start?)")
        # once the CRL is past its nextUpdate, nobody gets in
        while time.time() < self.next_update + 1.5:
            time.sleep(0.5)
        off = self.proxy.stderr_size()
        refused, detail = self.refused("good")
        self.assertTrue(refused, "served with an expired CRL: %s" % detail)
        self.proxy.wait_log(off, lambda l: "handshake refused" in l and "CRL has expired" in l,
                            what="a refusal naming the expired CRL")
        refused, detail = self.refused("revoked")
        self.assertTrue(refused, "revoked device served: %s" % detail)


if __name__ == "__main__":
    import unittest

    unittest.main()
