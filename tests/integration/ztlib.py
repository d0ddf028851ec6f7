"""Shared harness of ztproxy's integration tests (Python 3 standard library).

Everything here starts real processes on 127.0.0.1 only, on ports picked by
the kernel, tracks them by PID and stops them by PID. Environment:

  ZTPROXY_BIN    the proxy binary        (default $ZT_SOURCE_DIR/build/ztproxy)
  ZT_SOURCE_DIR  the repository root     (default: two levels above this file)
  ZT_BUILD_DIR   the build directory     (default $ZT_SOURCE_DIR/build)
  ZT_KEEP_TMP=1  keep the temp dirs (configs, logs, certs) for inspection
"""

import atexit
import ctypes
import hashlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("ZT_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD_DIR = os.environ.get("ZT_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
ZTPROXY_BIN = os.environ.get("ZTPROXY_BIN") or os.path.join(BUILD_DIR, "ztproxy")
CERTS_DIR = os.path.join(SOURCE_DIR, "certs")
UPSTREAM_PY = os.path.join(HERE, "upstream.py")
KEEP_TMP = os.environ.get("ZT_KEEP_TMP") == "1"

sys.path.insert(0, HERE)
import upstream as upstream_mod  # noqa: E402  (pattern_sha256 etc.)

pattern_sha256 = upstream_mod.pattern_sha256
pattern_chunks = upstream_mod.pattern_chunks

# Names the test server certificate covers (SNI of every test client).
SERVER_NAMES = ["app.test", "127.0.0.1", "localhost", "other.test", "new.test",
                "nows.test", "api.test", "small.test",
                # single sign-on routes (test_sso.py, test_bearer.py)
                "admin.test", "mfa.test", "loose.test", "open.test"]
DEFAULT_HOST = "app.test"


# --------------------------------------------------------------------------
# processes: tracked by PID, never left behind
# --------------------------------------------------------------------------

_children = {}  # pid -> Popen
_children_lock = threading.Lock()


def _die_with_parent():
    # If the test runner itself is killed (ctest timeout), take the child
    # with it: PR_SET_PDEATHSIG = 1, SIGKILL = 9.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass
    os.setpgrp()


def spawn(argv, **kw):
    """Popen that is tracked by PID and dies with this process."""
    p = subprocess.Popen(argv, preexec_fn=_die_with_parent, **kw)
    with _children_lock:
        _children[p.pid] = p
    return p


def stop_process(p, timeout=10.0, sig=signal.SIGTERM):
    """SIGTERM (or sig), wait up to timeout, then SIGKILL. Returns the exit
    code (negative for a signal), or None if it could not be reaped."""
    if p is None:
        return None
    rc = p.poll()
    if rc is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                rc = p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                rc = None
    with _children_lock:
        _children.pop(p.pid, None)
    return rc


def _kill_all_children():
    with _children_lock:
        procs = list(_children.values())
    for p in procs:
        stop_process(p, timeout=3)


atexit.register(_kill_all_children)


def _on_term(signum, frame):
    _kill_all_children()
    for d in list(_tmpdirs):
        remove_tmpdir(d)
    os._exit(128 + signum)


signal.signal(signal.SIGTERM, _on_term)


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value (returned) or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


_ports_given = set()


def free_port():
    """A loopback port free now and never returned before in this process.
    Nothing holds it until its user binds it, so two calls in a row (a
    proxy's port, then its admin port) could otherwise get the same one."""
    for _ in range(1000):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("free_port: no unused loopback port in 1000 tries")


def port_accepts(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# temp dirs
# --------------------------------------------------------------------------

_tmpdirs = set()


def make_tmpdir(prefix="zt-"):
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.add(d)
    return d


def remove_tmpdir(d):
    _tmpdirs.discard(d)
    if d and not KEEP_TMP:
        shutil.rmtree(d, ignore_errors=True)
    elif d:
        sys.stderr.write("[ztlib] kept %s\n" % d)


# --------------------------------------------------------------------------
# PKI: runs the project's cert scripts
# --------------------------------------------------------------------------

class PKI:
    """A device CA made with certs/*.sh in `dir`, with:

    server.crt/key for SERVER_NAMES; devices good, good2, expired, notyet,
    noclientauth, noeku, revoked (revoked in crl.pem); and a second CA
    "evil" (dir/evil) with its own device "evil".
    """

    DEVICES = ["good", "good2", "expired", "notyet", "noclientauth", "noeku", "revoked"]

    def __init__(self, dir):
        self.dir = dir
        self.evil_dir = os.path.join(dir, "evil")
        self.ca = os.path.join(dir, "ca.crt")
        self.ca_key = os.path.join(dir, "ca.key")
        self.crl = os.path.join(dir, "crl.pem")
        self.server_crt = os.path.join(dir, "server.crt")
        self.server_key = os.path.join(dir, "server.key")

    @staticmethod
    def script(name):
        return os.path.join(CERTS_DIR, name)

    def run(self, name, *args):
        path = self.script(name)
        if not os.path.exists(path):
            raise RuntimeError("cert script %s is missing" % path)
        r = subprocess.run(["bash", path] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120, cwd=self.dir)
        if r.returncode != 0:
            raise RuntimeError("%s %s failed (rc %d):\n%s" % (
                name, " ".join(args), r.returncode, r.stdout.decode(errors="replace")))
        return r.stdout.decode(errors="replace")

    def build(self):
        os.makedirs(self.dir, exist_ok=True)
        self.run("make-ca.sh", self.dir)
        self.run("make-server.sh", self.dir, *SERVER_NAMES)
        self.device("good")
        self.device("good2")
        self.device("expired", "--start", "20200101000000Z", "--end", "20210101000000Z")
        self.device("notyet", "--start", "20400101000000Z", "--end", "20410101000000Z")
        self.device("noclientauth", "--no-client-auth")
        self.device("noeku", "--no-eku")
        self.device("revoked")
        self.revoke("revoked")
        os.makedirs(self.evil_dir, exist_ok=True)
        self.run("make-ca.sh", self.evil_dir)
        self.run("make-device.sh", self.evil_dir, "evil")
        for p in (self.ca, self.crl, self.server_crt, self.server_key,
                  self.device_crt("good"), self.device_crt("evil")):
            if not os.path.exists(p):
                raise RuntimeError("cert scripts did not produce %s" % p)
        # config.md: the server key must not be readable by group or others.
        os.chmod(self.server_key, 0o600)
        return self

    def device(self, device_id, *opts):
        self.run("make-device.sh", self.dir, device_id, *opts)

    def revoke(self, device_id):
        self.run("revoke-device.sh", self.dir, device_id)

    def device_dir(self, device_id):
        return self.evil_dir if device_id == "evil" else self.dir

    def device_crt(self, device_id):
        return os.path.join(self.device_dir(device_id), "devices", device_id + ".crt")

    def device_key(self, device_id):
        return os.path.join(self.device_dir(device_id), "devices", device_id + ".key")


def make_pki(dir):
    return PKI(dir).build()


# --------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------

def write_config(dir_or_path, cfg, name="ztproxy.json"):
    """Write cfg (a dict, or a str written verbatim) as JSON; returns path."""
    path = dir_or_path if dir_or_path.endswith(".json") else os.path.join(dir_or_path, name)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        if isinstance(cfg, str):
            f.write(cfg)
        else:
            json.dump(cfg, f, indent=2)
            f.write("\n")
    os.replace(tmp, path)
    return path


def base_config(pki, port, routes, access_log, **extra):
    """A complete config for one listener on 127.0.0.1:port. extra keys
    (timeouts=..., limits=..., tls=... merged into tls) override."""
    cfg = {
        "listen": [{"address": "127.0.0.1:%d" % port}],
        "workers": 2,
        "tls": {
            "certificate": pki.server_crt,
            "key": pki.server_key,
            "device_ca": pki.ca,
            "crl": pki.crl,
        },
        "access_log": access_log,
        "log_level": "info",
        "routes": routes,
    }
    tls_extra = extra.pop("tls", None)
    if tls_extra:
        cfg["tls"].update(tls_extra)
    cfg.update(extra)
    return cfg


# --------------------------------------------------------------------------
# processes: upstream and proxy
# --------------------------------------------------------------------------

class Upstream:
    """tests/integration/upstream.py as a child process."""

    def __init__(self, dir, name="upstream", tls=None):
        self.dir = dir
        self.name = name
        self.port = None
        self.record = os.path.join(dir, "upstream-%s.jsonl" % name)
        self.log = os.path.join(dir, "upstream-%s.stderr" % name)
        self.tls = tls
        self.proc = None

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def start(self, timeout=10):
        open(self.record, "w").close()
        for _attempt in range(5):
            self.port = free_port()
            argv = [sys.executable, "-u", UPSTREAM_PY, "--port", str(self.port),
                    "--record", self.record, "--name", self.name]
            if self.tls:
                argv += ["--tls", self.tls[0], self.tls[1]]
            errf = open(self.log, "ab")
            self.proc = spawn(argv, stdout=subprocess.PIPE, stderr=errf,
                              stdin=subprocess.DEVNULL)
            errf.close()
            line = _readline_timeout(self.proc.stdout, timeout)
            if line.startswith(b"ready"):
                return self
            stop_process(self.proc)
            self.proc = None
        raise RuntimeError("upstream did not start: %s" % _tail(self.log))

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, timeout=5)
            try:
                self.proc.stdout.close()
            except Exception:
                pass
            self.proc = None

    def records(self):
        out = []
        try:
            with open(self.record, encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def heads(self):
        return [r for r in self.records() if r.get("phase") == "head"]

    def ends(self):
        return [r for r in self.records() if r.get("phase") == "end"]

    def complete(self):
        return [r for r in self.ends() if r.get("complete")]

    def targets(self):
        return [r.get("target") for r in self.heads()]


def _readline_timeout(f, timeout):
    deadline = time.monotonic() + timeout
    buf = b""
    fd = f.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        ch = os.read(fd, 1)
        if not ch:
            break
        buf += ch
    return buf


def _tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-n:])
    except FileNotFoundError:
        return "(no %s)" % path


class Proxy:
    """The ztproxy binary under test, started with -c config."""

    def __init__(self, dir, config_path, port):
        self.dir = dir
        self.config = config_path
        self.port = port
        self.stderr_path = os.path.join(dir, "proxy.stderr")
        self.stdout_path = os.path.join(dir, "proxy.stdout")
        self.proc = None

    def start(self, wait=True, timeout=10):
        if not os.path.exists(ZTPROXY_BIN):
            raise RuntimeError("proxy binary %s does not exist (build it first)" % ZTPROXY_BIN)
        errf = open(self.stderr_path, "ab")
        outf = open(self.stdout_path, "ab")
        self.proc = spawn([ZTPROXY_BIN, "-c", self.config], stdout=outf, stderr=errf,
                          stdin=subprocess.DEVNULL, cwd=self.dir)
        errf.close()
        outf.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ztproxy exited with %s before listening:\n%s" % (
                    self.proc.returncode, self.stderr()))
            if port_accepts(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError("ztproxy did not listen on %d within %ss:\n%s" % (
            self.port, timeout, self.stderr()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def sighup(self):
        os.kill(self.proc.pid, signal.SIGHUP)

    def stop(self, timeout=15):
        """SIGTERM, wait, SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        rc = stop_process(self.proc, timeout=timeout)
        return rc

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    logs = stderr

    SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                         "runtime error:", "WARNING: ThreadSanitizer")

    def sanitizer_report(self):
        """Lines of stderr where a sanitizer reported a problem."""
        return [l for l in self.stderr().splitlines()
                if any(m in l for m in self.SANITIZER_MARKERS)]

    def stderr_size(self):
        try:
            return os.path.getsize(self.stderr_path)
        except FileNotFoundError:
            return 0

    def stderr_since(self, offset):
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, offset, pred, timeout=10, what="a log line"):
        """Wait until a stderr line written after offset satisfies pred(line);
        returns that line."""
        def check():
            for line in self.stderr_since(offset).splitlines():
                if pred(line):
                    return line
            return None
        return wait_until(check, timeout, what=what)


def read_access_log(path):
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    continue
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except FileNotFoundError:
        pass
    return out


# --------------------------------------------------------------------------
# TLS client
# --------------------------------------------------------------------------

def client_context(pki, device="good", version=None, alpn=None, check_hostname=True):
    """An SSLContext trusting pki.ca, presenting device's certificate (None:
    no client certificate). version: None, "1.2" or "1.3" to pin."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if device is not None:
        ctx.load_cert_chain(pki.device_crt(device), pki.device_key(device))
    if version == "1.2":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class ConnectionClosed(Exception):
    """The peer closed before a complete response arrived."""

    def __init__(self, msg, partial=b""):
        super().__init__(msg)
        self.partial = partial


class Response:
    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) as received
        self.body = body
        self.body_length = None
        self.body_sha256 = None
        self.chunked = False

    def header(self, name):
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def header_all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def set_cookies(self):
        """Every Set-Cookie of the response, parsed (see parse_set_cookie)."""
        return [parse_set_cookie(v) for v in self.header_all("set-cookie")]

    def set_cookie(self, name):
        """The parsed Set-Cookie for name (the last one), or None."""
        found = None
        for c in self.set_cookies():
            if c["name"] == name:
                found = c
        return found

    def __repr__(self):
        return "<Response %s %r headers=%r body=%r>" % (
            self.status, self.reason, self.headers,
            (self.body or b"")[:300])


def parse_set_cookie(value):
    """Parse one Set-Cookie value into {"name", "value", "attrs"}: attrs maps
    lower-cased attribute names to their value (True for flags such as
    Secure or HttpOnly)."""
    parts = value.split(";")
    name, _, val = parts[0].strip().partition("=")
    attrs = {}
    for a in parts[1:]:
        a = a.strip()
        if not a:
            continue
        k, sep, v = a.partition("=")
        attrs[k.strip().lower()] = v.strip() if sep else True
    return {"name": name.strip(), "value": val.strip(), "attrs": attrs}


class HTTPConn:
    """A client connection (TLS or plain) with a small HTTP/1.1 response
    reader that understands Content-Length, chunked and close-delimited
    bodies, HEAD and 1xx."""

    def __init__(self, sock, timeout=30):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        sock.settimeout(timeout)

    # raw I/O
    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        if self.eof:
            return False
        data = self.sock.recv(256 * 1024)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def settimeout(self, t):
        self.sock.settimeout(t)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _read_line(self):
        while True:
            idx = self.buf.find(b"\r\n")
            if idx >= 0:
                line = bytes(self.buf[:idx])
                del self.buf[:idx + 2]
                return line
            if not self._fill():
                raise ConnectionClosed("EOF in a line", bytes(self.buf))

    def read_head(self):
        while True:
            idx = self.buf.find(b"\r\n\r\n")
            if idx >= 0:
                head = bytes(self.buf[:idx + 4])
                del self.buf[:idx + 4]
                break
            if len(self.buf) > 1024 * 1024:
                raise AssertionError("response head over 1 MiB")
            if not self._fill():
                raise ConnectionClosed("EOF before a complete response head", bytes(self.buf))
        lines = head[:-4].split(b"\r\n")
        m = re.match(rb"(HTTP/\d\.\d) (\d{3})(?: (.*))?$", lines[0])
        if not m:
            raise AssertionError("bad status line %r" % lines[0][:200])
        headers = []
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep:
                raise AssertionError("bad response header line %r" % raw[:200])
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        return m.group(1).decode(), int(m.group(2)), (m.group(3) or b"").decode("latin-1"), headers

    def read_response(self, method="GET", sink=None, skip_100=True):
        """Read one response. Body bytes are returned in .body unless sink
        (a callable taking bytes) is given; .body_length and .body_sha256 are
        always set."""
        while True:
            version, status, reason, headers = self.read_head()
            if status == 100 and skip_100:
                continue
            break
        resp = Response(version, status, reason, headers, None)
        h = hashlib.sha256()
        parts = [] if sink is None else None
        total = [0]

        def emit(data):
            total[0] += len(data)
            h.update(data)
            if sink is not None:
                sink(data)
            else:
                parts.append(bytes(data))

        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
            pass
        elif te is not None:
            if te.strip().lower() != "chunked":
                raise AssertionError("unexpected response Transfer-Encoding %r" % te)
            resp.chunked = True
            while True:
                line = self._read_line()
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self._read_line() != b"":
                        pass
                    break
                left = size
                while left > 0:
                    if not self.buf and not self._fill():
                        raise ConnectionClosed("EOF in a chunk")
                    take = min(left, len(self.buf))
                    emit(self.buf[:take])
                    del self.buf[:take]
                    left -= take
                if self._read_line() != b"":
                    raise AssertionError("chunk data not followed by CRLF")
        elif cl is not None:
            left = int(cl)
            while left > 0:
                if not self.buf and not self._fill():
                    raise ConnectionClosed("EOF with %d body bytes missing" % left)
                take = min(left, len(self.buf))
                emit(self.buf[:take])
                del self.buf[:take]
                left -= take
        else:
            # close-delimited
            while True:
                if self.buf:
                    emit(self.buf)
                    self.buf.clear()
                if not self._fill():
                    break
        resp.body = b"".join(parts) if parts is not None else None
        resp.body_length = total[0]
        resp.body_sha256 = h.hexdigest()
        return resp

    def read_until_close(self, timeout=5):
        """Read whatever arrives until EOF/reset or timeout; returns
        (bytes, closed) where closed is True if the peer closed or reset."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        closed = False
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    if not self._fill():
                        closed = True
                        break
                except socket.timeout:
                    break
                except (ConnectionError, ssl.SSLError, OSError):
                    closed = True
                    break
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass
        data = bytes(self.buf)
        self.buf.clear()
        return data, closed


def connect(port, pki=None, device="good", server_hostname=DEFAULT_HOST, context=None,
            session=None, version=None, timeout=30, source_address=None):
    """Open a mutual-TLS connection to the proxy; returns an HTTPConn whose
    .sock is the SSLSocket (handshake done). source_address: (ip, port) to
    bind the client socket to, e.g. ("127.0.0.2", 0) to connect from
    another loopback address."""
    ctx = context or client_context(pki, device, version)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                   source_address=source_address)
    try:
        s = ctx.wrap_socket(raw, server_hostname=server_hostname, session=session)
    except BaseException:
        raw.close()
        raise
    return HTTPConn(s, timeout)


def connect_plain(port, timeout=30):
    return HTTPConn(socket.create_connection(("127.0.0.1", port), timeout=timeout), timeout)


def build_request(method, path, headers=None, body=None, host=DEFAULT_HOST, version="HTTP/1.1"):
    """Serialise a request. headers: list of (name, value) or dict. A Host
    header is added unless host is None or headers has one; Content-Length
    is added for a bytes body unless headers set Content-Length or
    Transfer-Encoding."""
    hl = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {n.lower() for n, _ in hl}
    out = ["%s %s %s\r\n" % (method, path, version)]
    if host is not None and "host" not in names:
        out.append("Host: %s\r\n" % host)
    for n, v in hl:
        out.append("%s: %s\r\n" % (n, v))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        out.append("Content-Length: %d\r\n" % len(body))
    out.append("\r\n")
    data = "".join(out).encode("latin-1")
    if body is not None:
        data += body
    return data


def request(port, raw, pki=None, device="good", server_hostname=DEFAULT_HOST, method="GET",
            timeout=30, **kw):
    """Send raw bytes on a new connection and read one response."""
    with connect(port, pki, device, server_hostname, timeout=timeout, **kw) as c:
        c.send(raw)
        return c.read_response(method)


def admin_call(port, ca, method, path, body=None, token=None, raw=None, headers=None,
               context=None):
    """One call to the admin API on 127.0.0.1:PORT over TLS (server checked
    against CA unless CONTEXT is given). BODY is sent as JSON, RAW as is; a
    write always carries Content-Type: application/json (the API's CSRF rule).
    Returns (status, parsed JSON or text, lower-cased response headers)."""
    h = {}
    if token is not None:
        h["Authorization"] = "Bearer " + token
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None or method in ("POST", "PUT", "DELETE"):
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    if context is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(ca)
        context.check_hostname = False
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=context)
    try:
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        text = r.read().decode("utf-8", errors="replace")
        hdrs = {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()
    out = text
    if hdrs.get("content-type", "").startswith("application/json"):
        out = json.loads(text)
    return r.status, out, hdrs


def http_request(port, method, path, headers=None, body=None, pki=None, device="good",
                 host=DEFAULT_HOST, server_hostname=None, timeout=30, source_address=None):
    """One request on a new connection; returns a Response (.status,
    .headers, .body). source_address: see connect()."""
    sni = server_hostname or (host.split(":")[0] if host and host.split(":")[0] in SERVER_NAMES
                              else DEFAULT_HOST)
    raw = build_request(method, path, headers, body, host)
    return request(port, raw, pki, device, sni, method, timeout, source_address=source_address)


def is_refused(port, pki, device, version=None, server_hostname=DEFAULT_HOST, timeout=15):
    """Try a request with device's certificate. Returns (refused, detail):
    refused is True when no HTTP response was ever received (handshake or
    first read failed, reset, or EOF)."""
    try:
        c = connect(port, pki, device, server_hostname, version=version, timeout=timeout)
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return True, "handshake: %r" % e
    try:
        try:
            c.send(build_request("GET", "/echo"))
        except (ssl.SSLError, ConnectionError, OSError) as e:
            return True, "send: %r" % e
        try:
            resp = c.read_response()
        except ConnectionClosed as e:
            if e.partial:
                return False, "partial response %r" % e.partial[:200]
            return True, "EOF"
        except (ssl.SSLError, ConnectionError, OSError) as e:
            return True, "read: %r" % e
        return False, "got a response: %r" % resp
    finally:
        c.close()


def curl(port, path, pki, device="good", host=DEFAULT_HOST, extra=(), timeout=30):
    """Run curl against the proxy; returns (rc, status, headers_text, body)."""
    args = ["curl", "-sS", "--max-time", str(timeout), "--cacert", pki.ca,
            "--resolve", "%s:%d:127.0.0.1" % (host, port), "-D", "-",
            "-o", "/dev/stdout"]
    if device is not None:
        args += ["--cert", pki.device_crt(device), "--key", pki.device_key(device)]
    args += list(extra)
    args.append("https://%s:%d%s" % (host, port, path))
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout + 10, stdin=subprocess.DEVNULL)
    out = r.stdout
    status = None
    head, body = out, b""
    # skip any 1xx heads
    while True:
        idx = out.find(b"\r\n\r\n")
        if idx < 0:
            head, body = out, b""
            break
        head, body = out[:idx], out[idx + 4:]
        m = re.match(rb"HTTP/[\d.]+ (\d{3})", head)
        if m:
            status = int(m.group(1))
        if status is not None and 100 <= status < 200 and status != 101:
            out = body
            continue
        break
    return r.returncode, status, head.decode("latin-1"), body, r.stderr.decode(errors="replace")


# --------------------------------------------------------------------------
# test case base
# --------------------------------------------------------------------------

class ProxyTestCase(unittest.TestCase):
    """Base class: a fresh temp dir, PKI, upstream(s) and proxy per class.

    Subclasses override routes(cls) and config_extra(cls)."""

    UPSTREAMS = ("main",)
    proxy = None
    tmp = None

    @classmethod
    def routes(cls):
        return [{"name": "app", "host": "app.test", "upstream": cls.up.url}]

    @classmethod
    def config_extra(cls):
        return {}

    @classmethod
    def setUpClass(cls):
        cls.tmp = make_tmpdir("zt-%s-" % cls.__name__)
        cls.ups = {}
        try:
            cls.pki = make_pki(os.path.join(cls.tmp, "pki"))
            for name in cls.UPSTREAMS:
                cls.ups[name] = Upstream(cls.tmp, name).start()
            cls.up = cls.ups[cls.UPSTREAMS[0]]
            cls.start_proxy()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start_proxy(cls, cfg_update=None):
        cls.port = free_port()
        cls.access_log = os.path.join(cls.tmp, "access.log")
        extra = dict(cls.config_extra())
        if cfg_update:
            extra.update(cfg_update)
        cls.cfg = base_config(cls.pki, cls.port, cls.routes(), cls.access_log, **extra)
        cls.cfg_path = write_config(cls.tmp, cls.cfg)
        cls.proxy = Proxy(cls.tmp, cls.cfg_path, cls.port).start()

    @classmethod
    def tearDownClass(cls):
        report = []
        if cls.proxy is not None:
            cls.proxy.stop()
            report = cls.proxy.sanitizer_report()
            if report:
                sys.stderr.write("---- sanitizer report in proxy stderr ----\n%s\n" % _tail(
                    cls.proxy.stderr_path, 60))
            cls.proxy = None
        for u in getattr(cls, "ups", {}).values():
            u.stop()
        remove_tmpdir(cls.tmp)
        if report:
            raise AssertionError("the proxy's sanitizer reported: %s" % report[:5])

    # conveniences
    def get(self, path, headers=None, **kw):
        return http_request(self.port, "GET", path, headers, pki=self.pki, **kw)

    def req(self, method, path, headers=None, body=None, **kw):
        return http_request(self.port, method, path, headers, body, pki=self.pki, **kw)

    def conn(self, device="good", **kw):
        return connect(self.port, self.pki, device, **kw)

    def access_entries(self):
        return read_access_log(self.access_log)

    def wait_access(self, pred, timeout=10, what="an access log entry"):
        def check():
            for e in self.access_entries():
                if pred(e):
                    return e
            return None
        return wait_until(check, timeout, what=what)

    def sentinel(self, tag):
        """A good request on a fresh connection; asserts 200 and returns
        once the upstream has recorded it (orders later record checks)."""
        path = "/sentinel-%s" % tag
        r = self.get(path)
        self.assertEqual(r.status, 200, "sentinel request failed: %r" % r)
        wait_until(lambda: path in self.up.targets(), 10, what="sentinel at upstream")
        return path


class _LogDumpingResult(unittest.TextTestResult):
    def _dump(self, test):
        cls = type(test)
        proxy = getattr(cls, "proxy", None)
        path = getattr(proxy, "stderr_path", None) if proxy else None
        if path is None and getattr(cls, "tmp", None):
            path = os.path.join(cls.tmp, "proxy.stderr")
        if path and os.path.exists(path):
            self.stream.write("\n---- proxy stderr (tail) for %s ----\n%s\n----\n" % (
                test.id(), _tail(path, 25)))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._dump(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._dump(test)


def main():
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_LogDumpingResult)
    unittest.main(testRunner=runner)


# --------------------------------------------------------------------------
# WebSocket client (RFC 6455), enough for echo tests
# --------------------------------------------------------------------------

WS_GUID = upstream_mod.WS_GUID


def ws_accept(key):
    import base64
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def ws_handshake(c, path="/ws", host=DEFAULT_HOST, extra=()):
    """Send the upgrade request on HTTPConn c; returns (Response, key)."""
    import base64
    key = base64.b64encode(os.urandom(16)).decode()
    hdrs = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")] + list(extra)
    c.send(build_request("GET", path, hdrs, host=host))
    return c.read_response(), key


def ws_send(c, opcode, payload, fin=True):
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        hdr = bytes([b0, 0x80 | n])
    elif n < 65536:
        hdr = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        hdr = bytes([b0, 0x80 | 127]) + n.to_bytes(8, "big")
    c.send(hdr + mask + upstream_mod.ws_mask(payload, mask))


def _need(c, n):
    while len(c.buf) < n:
        if not c._fill():
            raise ConnectionClosed("EOF in a websocket frame", bytes(c.buf))


def ws_recv(c):
    """Read one frame; returns (fin, opcode, payload). Server frames must
    not be masked."""
    _need(c, 2)
    b0, b1 = c.buf[0], c.buf[1]
    if b1 & 0x80:
        raise AssertionError("server sent a masked frame")
    ln = b1 & 0x7F
    off = 2
    if ln == 126:
        _need(c, 4)
        ln = int.from_bytes(c.buf[2:4], "big")
        off = 4
    elif ln == 127:
        _need(c, 10)
        ln = int.from_bytes(c.buf[2:10], "big")
        off = 10
    _need(c, off + ln)
    payload = bytes(c.buf[off:off + ln])
    del c.buf[:off + ln]
    return bool(b0 & 0x80), b0 & 0x0F, payload


# --------------------------------------------------------------------------
# device trust and access rules (test_device_trust.py, test_policy.py)
# --------------------------------------------------------------------------

ZTCTL_BIN = os.environ.get("ZTCTL_BIN") or os.path.join(BUILD_DIR, "ztctl")
ZTAGENT_BIN = os.environ.get("ZTAGENT_BIN") or os.path.join(BUILD_DIR, "ztagent")
GEOIP_WRITER = os.path.join(HERE, "geoip_writer.pl")
POSTURE_PATH = "/.zt/device/posture"


def write_admin_tokens(dir, *lines):
    """Write DIR/admin.tokens (mode 0600, as the proxy requires) with one
    "name:token" line each; returns its path."""
    path = os.path.join(dir, "admin.tokens")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write("".join(l + "\n" for l in lines))
    return path


def write_atomic(path, data):
    """Write data (bytes, str, or an object written as JSON) to a temporary
    file next to path and rename() it into place, as an export job or
    geoipupdate does: a watcher never sees half a file."""
    if isinstance(data, (dict, list)):
        data = json.dumps(data, indent=1) + "\n"
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def utc_rfc3339(t=None):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def inventory_record(device_id, status="active", managed=True, owner="alice@corp.example",
                     platform="linux", **extra):
    """One inventory feed record (docs/device-trust.md: all nine fields)."""
    rec = {"id": device_id, "serial": "SN-" + device_id, "owner": owner, "managed": managed,
           "status": status, "platform": platform, "os_version": "12",
           "model": "Test Laptop 1", "enrolled": "2024-01-02T03:04:05Z"}
    rec.update(extra)
    return rec


def posture_report(device_id=None, collected_at=None, **over):
    """A report (docs/posture.md) that passes every check of the default
    scoring policy: score 100, tier "high"."""
    r = {"collected_at": collected_at or utc_rfc3339(), "agent_version": "1.2.3",
         "os": {"name": "debian", "version": "12", "kernel": "6.1.0-18-amd64"},
         "disk_encryption": True, "firewall": True, "screen_lock": True,
         "auto_updates": True, "days_since_patch": 1, "uptime_seconds": 3600}
    if device_id is not None:
        r["device_id"] = device_id
    for k, v in over.items():
        if v is None:
            r.pop(k, None)
        else:
            r[k] = v
    return r


def post_posture(port, pki, device, report, host=DEFAULT_HOST, timeout=30):
    """POST a posture report (dict or raw bytes) to /.zt/device/posture with
    device's certificate; returns the Response."""
    body = report if isinstance(report, bytes) else json.dumps(report).encode()
    return http_request(port, "POST", POSTURE_PATH,
                        [("Content-Type", "application/json"), ("Accept", "application/json")],
                        body, pki=pki, device=device, host=host, timeout=timeout)


def header_values(record, name):
    """Values of header name in an upstream.py head record."""
    name = name.lower()
    return [v for n, v in record.get("headers", []) if n.lower() == name]


def read_audit_log(path):
    """The audit log (docs/policy.md "The audit log"): a list of
    (line_number, raw_line_without_newline, parsed_object_or_None) for the
    complete lines."""
    out = []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return out
    for i, raw in enumerate(data.split(b"\n")[:-1], 1):
        text = raw.decode("utf-8", errors="replace")
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        out.append((i, text, obj))
    return out


def audit_line_hash(raw):
    """The hash a chained audit line should carry: SHA-256 (hex) of the line
    as written without its "hash" member. None if the line has no hash
    member where the docs put it (right after "prev")."""
    m = re.match(r'^(\{"prev":"[0-9a-f]{64}"),"hash":"([0-9a-f]{64})"(,.*)$', raw)
    if not m:
        return None
    return hashlib.sha256((m.group(1) + m.group(3)).encode("utf-8")).hexdigest()


def geoip_writer_unavailable():
    """Why tests/integration/geoip_writer.pl cannot run here, or None."""
    perl = shutil.which("perl")
    if not perl:
        return "perl is not installed"
    r = subprocess.run([perl, "-MMaxMind::DB::Writer::Tree", "-e", "1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        return "MaxMind::DB::Writer is missing (Debian: libmaxmind-db-writer-perl)"
    return None


def make_geoip(out, *maps):
    """Write a test GeoIP database with geoip_writer.pl (maps like
    "127.0.0.2/32=DE"; none: the script's defaults)."""
    r = subprocess.run(["perl", GEOIP_WRITER, out] + list(maps), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    if r.returncode != 0 or not os.path.exists(out):
        raise RuntimeError("geoip_writer.pl failed (rc %d): %s" % (
            r.returncode, r.stdout.decode(errors="replace")))
    return out


class FeedServer:
    """A plain-HTTP inventory feed (http.server in a thread of this process)
    on 127.0.0.1, with a strong ETag (the SHA-256 of the body) and
    If-None-Match -> 304. Every request is logged in .requests as
    {"time", "path", "if_none_match", "status"}. stop() closes the listening
    socket (the feed is down); start() again reuses the port."""

    def __init__(self, body=b"[]", content_type="application/json", path="/devices.json"):
        self.path = path
        self.content_type = content_type
        self.port = None
        self.requests = []
        self.fail_status = None  # answer every request with this status
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None
        self.set_body(body)

    @property
    def url(self):
        return "http://127.0.0.1:%d%s" % (self.port, self.path)

    def set_body(self, body):
        if isinstance(body, str):
            body = body.encode("utf-8")
        with self._lock:
            self.body = body
            self.etag = '"%s"' % hashlib.sha256(body).hexdigest()[:32]

    def count(self, status=None):
        with self._lock:
            return len([r for r in self.requests if status is None or r["status"] == status])

    def start(self):
        import http.server
        feed = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                inm = self.headers.get("If-None-Match")
                with feed._lock:
                    body, etag, fail = feed.body, feed.etag, feed.fail_status
                if fail is not None:
                    status = fail
                elif self.path.split("?")[0] != feed.path:
                    status = 404
                elif inm is not None and inm.strip() == etag:
                    status = 304
                else:
                    status = 200
                with feed._lock:
                    feed.requests.append({"time": time.time(), "path": self.path,
                                          "if_none_match": inm, "status": status})
                self.send_response(status)
                if status == 200:
                    self.send_header("Content-Type", feed.content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("ETag", etag)
                    self.end_headers()
                    self.wfile.write(body)
                elif status == 304:
                    self.send_header("ETag", etag)
                    self.end_headers()
                else:
                    self.send_header("Content-Length", "0")
                    self.end_headers()

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        # free_port(), not 0: the kernel's pick could be a port free_port()
        # already handed to someone who has not bound it yet (a proxy's
        # admin listener), and both would then want it.
        self._httpd = Server(("127.0.0.1", self.port or free_port()), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(10)
            self._httpd = None
            self._thread = None

    def alive(self):
        return self._httpd is not None
