"""ztagent sending reports (docs/ztagent.md): --once and the daemon loop.

Two parts:

  StubServerTest   a mutual-TLS HTTPS stub in this process (Python's ssl,
                   client certificate required) that answers what each test
                   queues: 2xx, 400 with a message, 429 with Retry-After, a
                   stall. Checks exit codes, messages, the request itself,
                   --resolve, certificate verification, backoff and SIGTERM.

  ProxyEndpointTest  the real ztproxy with "state_dir" and "device_trust":
                   `ztagent --once` with a device certificate must get 200,
                   and a second report inside the rate limit 429.

Environment: ZTAGENT_BIN (default $ZT_BUILD_DIR/ztagent, else
$ZT_SOURCE_DIR/build/ztagent) and those of ztlib.py.
"""

import http.server
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ztlib  # noqa: E402
from test_agent_print import check_schema  # noqa: E402

ZTAGENT_BIN = os.environ.get("ZTAGENT_BIN") or os.path.join(ztlib.BUILD_DIR, "ztagent")
ENDPOINT = "/.zt/device/posture"


def agent_env():
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("ZTAGENT_") or k == "CREDENTIALS_DIRECTORY":
            del e[k]
    return e


def run_agent(*args, timeout=60):
    return subprocess.run([ZTAGENT_BIN] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout, env=agent_env(),
                          stdin=subprocess.DEVNULL)


def setup_pki(dir):
    """CA, server certificate for ztlib.SERVER_NAMES, devices good and good2,
    and an unrelated CA (evil) -- the ztlib PKI."""
    return ztlib.make_pki(dir)


class Stub:
    """HTTPS server requiring a client certificate from pki.ca. Each request is
    recorded; answers come from a queue (default: 200 "ok")."""

    def __init__(self, pki):
        self.records = []
        self.answers = []
        self.lock = threading.Lock()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                cert = self.connection.getpeercert()
                cn = None
                for rdn in cert.get("subject", ()):
                    for k, v in rdn:
                        if k == "commonName":
                            cn = v
                with stub.lock:
                    stub.records.append({"path": self.path, "headers": dict(self.headers),
                                         "body": body, "cn": cn, "t": time.monotonic()})
                    ans = stub.answers.pop(0) if stub.answers else (200, b"ok\n", {})
                status, text, hdrs = ans
                if status == "stall":
                    time.sleep(text)
                    return
                self.send_response(status)
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server_crt, pki.server_key)
        ctx.load_verify_locations(pki.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", ztlib.free_port()), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, status, text=b"", headers=None):
        with self.lock:
            self.answers.append((status, text, headers or {}))

    def count(self):
        with self.lock:
            return len(self.records)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class StubServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(ZTAGENT_BIN):
            raise RuntimeError("ztagent binary %s does not exist (build it first)" % ZTAGENT_BIN)
        cls.tmp = ztlib.make_tmpdir("zt-agent-stub-")
        cls.pki = setup_pki(os.path.join(cls.tmp, "pki"))
        cls.stub = Stub(cls.pki)

    @classmethod
    def tearDownClass(cls):
        cls.stub.stop()
        ztlib.remove_tmpdir(cls.tmp)

    def setUp(self):
        with self.stub.lock:
            self.stub.records.clear()
            self.stub.answers.clear()

    def args(self, device="good", host="app.test", ca=None, path=ENDPOINT):
        return ["--url", "https://%s:%d%s" % (host, self.stub.port, path),
                "--resolve", "%s:%d:127.0.0.1" % (host, self.stub.port),
                "--cert", self.pki.device_crt(device), "--key", self.pki.device_key(device),
                "--ca", ca or self.pki.ca]

    def test_once_accepted(self):
        r = run_agent("--once", *self.args())
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 0, err)
        self.assertIn("report accepted (HTTP 200)", err)
        self.assertEqual(self.stub.count(), 1)
        rec = self.stub.records[0]
        self.assertEqual(rec["path"], ENDPOINT)
        self.assertEqual(rec["cn"], "good")
        self.assertEqual(rec["headers"].get("Content-Type"), "application/json")
        self.assertRegex(rec["headers"].get("User-Agent", ""), r"^ztagent/\d")
        self.assertNotIn(b"\n", rec["body"])  # compact on the wire
        check_schema(self, json.loads(rec["body"]))

    def test_bare_origin_gets_the_endpoint_path(self):
        r = run_agent("--once", *self.args(path=""))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.stub.records[0]["path"], ENDPOINT)

    def test_refused_400_exit_3_with_message(self):
        msg = b"posture: $.disk_encryption: expected true, false or \"unknown\", got 3\n"
        self.stub.answer(400, msg)
        r = run_agent("--once", *self.args())
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 3, err)
        self.assertIn("HTTP 400: " + msg.decode().strip(), err)

    def test_json_error_message(self):
        # ztproxy's refusal: {"error": ..., "message": "posture: ..."}
        self.stub.answer(400, json.dumps({"error": "rejected", "message":
                                          "posture: $.os.arch: unknown key"}).encode())
        r = run_agent("--once", *self.args())
        self.assertEqual(r.returncode, 3)
        self.assertIn("HTTP 400: posture: $.os.arch: unknown key\n", r.stderr.decode())

    def test_other_device_403_and_rate_limit_429(self):
        self.stub.answer(403, b"posture: report for another device\n")
        r = run_agent("--once", *self.args())
        self.assertEqual(r.returncode, 3)
        self.assertIn("HTTP 403", r.stderr.decode())
        self.stub.answer(429, b"", {"Retry-After": "30"})
        r = run_agent("--once", *self.args())
        self.assertEqual(r.returncode, 3)
        self.assertIn("HTTP 429: (no message)", r.stderr.decode())

    def test_hostile_message_is_sanitised(self):
        self.stub.answer(400, b"bad\x1b[31m field\r\nsecond line")
        r = run_agent("--once", *self.args())
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 3)
        self.assertIn("HTTP 400: bad?[31m field", err)
        self.assertNotIn("second line", err)

    def test_wrong_ca_is_network_failure(self):
        r = run_agent("--once", *self.args(ca=os.path.join(self.pki.evil_dir, "ca.crt")))
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 1, err)
        self.assertRegex(err, r"(?i)certificate")
        self.assertEqual(self.stub.count(), 0)

    def test_wrong_host_name_is_network_failure(self):
        r = run_agent("--once", *self.args(host="nothere.test"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(self.stub.count(), 0)

    def test_client_cert_of_other_ca_refused_by_server(self):
        r = run_agent("--once", *self.args(device="evil"))
        self.assertEqual(r.returncode, 1, r.stderr)

    def test_timeout(self):
        self.stub.answer("stall", 8)
        t0 = time.monotonic()
        r = run_agent("--once", "--timeout", "2", *self.args())
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr.decode(), r"(?i)timeout|timed out")
        self.assertLess(time.monotonic() - t0, 7)

    # -- the daemon -----------------------------------------------------------

    def start_daemon(self, *extra):
        errpath = os.path.join(self.tmp, "agent-%s.stderr" % self.id().rsplit(".", 1)[-1])
        errf = open(errpath, "wb")
        p = ztlib.spawn([ZTAGENT_BIN, "--interval", "10", *self.args(), *extra],
                        stdout=subprocess.DEVNULL, stderr=errf, stdin=subprocess.DEVNULL,
                        env=agent_env())
        errf.close()
        self.addCleanup(ztlib.stop_process, p)

        def log():
            with open(errpath, encoding="utf-8", errors="replace") as f:
                return f.read()
        return p, log

    def stop_quickly(self, p):
        t0 = time.monotonic()
        rc = ztlib.stop_process(p, timeout=10)
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 3, "SIGTERM did not stop it promptly")

    def test_daemon_reports_then_stops_on_sigterm(self):
        p, log = self.start_daemon()
        ztlib.wait_until(lambda: self.stub.count() >= 1, 15, what="the first report")
        m = ztlib.wait_until(lambda: re.search(r"report accepted \(HTTP 200\); next in (\d+) s",
                                               log()), 5, what="the log line")
        self.assertTrue(9 <= int(m.group(1)) <= 11, m.group(0))  # 10 s +-10 %
        self.stop_quickly(p)
        self.assertIn("stopping", log())

    def test_daemon_backoff_and_retry_after(self):
        self.stub.answer(500, b"boom")
        self.stub.answer(429, b"slow down", {"Retry-After": "25"})
        p, log = self.start_daemon()
        m = ztlib.wait_until(lambda: re.search(r"HTTP 500: boom; retry 1 in (\d+) s", log()), 10,
                             what="the first failure")
        self.assertTrue(9 <= int(m.group(1)) <= 11, m.group(0))  # min(interval, 30) +-10 %
        m = ztlib.wait_until(lambda: re.search(r"HTTP 429: slow down; retry 2 in (\d+) s",
                                               log()), 20, what="the second failure")
        self.assertEqual(int(m.group(1)), 25)  # Retry-After is longer than the backoff
        self.assertEqual(self.stub.count(), 2)
        self.stop_quickly(p)  # during the sleep

    def test_daemon_sigterm_during_transfer(self):
        self.stub.answer("stall", 20)
        p, log = self.start_daemon("--timeout", "60")
        ztlib.wait_until(lambda: self.stub.count() >= 1, 10, what="the request")
        time.sleep(0.5)
        self.stop_quickly(p)


class ProxyEndpointTest(ztlib.ProxyTestCase):
    """The agent against the proxy's POST /.zt/device/posture."""

    @classmethod
    def config_extra(cls):
        state = os.path.join(cls.tmp, "state")
        os.makedirs(state, exist_ok=True)
        return {"state_dir": state,
                "device_trust": {"posture": {"rate_limit_per_minute": 1}}}

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(ZTAGENT_BIN):
            raise RuntimeError("ztagent binary %s does not exist (build it first)" % ZTAGENT_BIN)
        super().setUpClass()

    def once(self, device):
        return run_agent("--once", "--url", "https://app.test:%d%s" % (self.port, ENDPOINT),
                         "--resolve", "app.test:%d:127.0.0.1" % self.port,
                         "--cert", self.pki.device_crt(device),
                         "--key", self.pki.device_key(device), "--ca", self.pki.ca)

    def test_once_accepted_then_rate_limited(self):
        r = self.once("good")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("report accepted (HTTP 200)", r.stderr.decode())
        # rate_limit_per_minute 1: the next reports within the minute are refused
        for _ in range(3):
            r = self.once("good")
            if r.returncode != 0:
                break
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("HTTP 429", r.stderr.decode())
        # the report reached the proxy, not the upstream
        self.assertNotIn(ENDPOINT, self.up.targets())

    def test_report_persisted(self):
        r = self.once("good2")
        self.assertEqual(r.returncode, 0, r.stderr)
        log = os.path.join(self.cfg["state_dir"], "posture.log")

        def persisted():
            try:
                with open(log, encoding="utf-8") as f:
                    return '"agent_version":"0.1.0"' in f.read()
            except FileNotFoundError:
                return False
        ztlib.wait_until(persisted, 10, what="the report in state_dir/posture.log")

    def test_revoked_device_cannot_report(self):
        r = self.once("revoked")
        self.assertEqual(r.returncode, 1, r.stderr)


if __name__ == "__main__":
    ztlib.main()
