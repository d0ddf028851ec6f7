"""Single sign-on test helpers (Python 3 standard library + the openssl CLI).

- DevIdP: deploy/dev-idp/server.js (the development OpenID provider) as a
  child process, tracked by PID like every other ztlib process; its /dev/*
  endpoints (mint, rotate-keys, logout, events).
- IdPBrowser: plays the browser at the IdP (plain http on 127.0.0.1 with its
  own cookie jar): login form, RP-initiated logout confirmation.
- JOSE helpers: base64url, JWK -> PEM (hand-made DER), ES256 verification
  with `openssl dgst`, certificate thumbprints (cnf x5t#S256).
- SSOTestCase: a ztlib.ProxyTestCase with a dev IdP, the identity
  configuration and the routes app/api/loose/admin/mfa/open, and helpers that
  log in through the proxy like a browser.

Needs node and deploy/dev-idp/node_modules (`npm ci --omit=dev` there, see
tools/setup.sh); without them the SSO test classes are skipped.
"""

import base64
import hashlib
import html
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import unittest
import urllib.parse
from email.utils import parsedate_to_datetime

import ztlib

DEV_IDP_DIR = os.path.join(ztlib.SOURCE_DIR, "deploy", "dev-idp")
SERVER_JS = os.path.join(DEV_IDP_DIR, "server.js")
NODE = os.environ.get("ZT_NODE") or shutil.which("node")
CLIENT_SECRET = "ztproxy-dev-secret"

USERS = {
    # username: (password, email, mfa) -- as in deploy/dev-idp/users.json
    "alice": ("alice-dev-pw", "alice@corp.example", True),
    "bob": ("bob-dev-pw", "bob@corp.example", False),
    "carol": ("carol-dev-pw", "carol@contractor.example", True),
}


def idp_unavailable():
    """Why the dev IdP cannot run here, or None."""
    if not NODE:
        return "node is not installed"
    if not os.path.exists(SERVER_JS):
        return "%s is missing" % SERVER_JS
    if not os.path.isdir(os.path.join(DEV_IDP_DIR, "node_modules", "oidc-provider")):
        return "deploy/dev-idp/node_modules is missing (run: cd deploy/dev-idp && npm ci --omit=dev)"
    return None


# --------------------------------------------------------------------------
# JOSE helpers
# --------------------------------------------------------------------------

def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_dec(s):
    if isinstance(s, bytes):
        s = s.decode()
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_decode(token):
    """(header, payload, signature bytes) of a compact JWS, unverified."""
    h, p, s = token.split(".")
    return json.loads(b64u_dec(h)), json.loads(b64u_dec(p)), b64u_dec(s)


def jwt_compose(header, payload, signature=b""):
    return "%s.%s.%s" % (b64u(json.dumps(header, separators=(",", ":"))),
                         b64u(json.dumps(payload, separators=(",", ":"))), b64u(signature))


def _der(tag, content):
    n = len(content)
    if n < 0x80:
        ln = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        ln = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + ln + content


def _der_uint(i):
    b = i.to_bytes(max(1, (i.bit_length() + 7) // 8), "big")
    if b[0] & 0x80:
        b = b"\x00" + b
    return _der(0x02, b)


def _pem(der, label="PUBLIC KEY"):
    body = base64.b64encode(der).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, "\n".join(lines), label)


OID_RSA = bytes.fromhex("06092a864886f70d010101")
OID_EC = bytes.fromhex("06072a8648ce3d0201")
OID_P256 = bytes.fromhex("06082a8648ce3d030107")


def rsa_jwk_to_der(jwk):
    n = int.from_bytes(b64u_dec(jwk["n"]), "big")
    e = int.from_bytes(b64u_dec(jwk["e"]), "big")
    rsapub = _der(0x30, _der_uint(n) + _der_uint(e))
    return _der(0x30, _der(0x30, OID_RSA + b"\x05\x00") + _der(0x03, b"\x00" + rsapub))


def ec_jwk_to_der(jwk):
    if jwk.get("crv") != "P-256":
        raise ValueError("not a P-256 key: %r" % jwk)
    point = b"\x04" + b64u_dec(jwk["x"]) + b64u_dec(jwk["y"])
    return _der(0x30, _der(0x30, OID_EC + OID_P256) + _der(0x03, b"\x00" + point))


def jwk_to_pem(jwk):
    if jwk.get("kty") == "RSA":
        return _pem(rsa_jwk_to_der(jwk))
    if jwk.get("kty") == "EC":
        return _pem(ec_jwk_to_der(jwk))
    raise ValueError("unsupported kty in %r" % jwk)


def es256_sig_to_der(sig):
    if len(sig) != 64:
        raise ValueError("an ES256 signature is 64 bytes, got %d" % len(sig))
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    return _der(0x30, _der_uint(r) + _der_uint(s))


def verify_es256(token, jwk, workdir):
    """Verify a compact ES256 JWS with the openssl CLI. Returns (ok, detail)."""
    h, p, s = token.split(".")
    sig = b64u_dec(s)
    tag = hashlib.sha256(token.encode()).hexdigest()[:16]
    pub = os.path.join(workdir, "es256-%s.pem" % tag)
    sigf = os.path.join(workdir, "es256-%s.sig" % tag)
    data = os.path.join(workdir, "es256-%s.in" % tag)
    with open(pub, "w") as f:
        f.write(jwk_to_pem(jwk))
    with open(sigf, "wb") as f:
        f.write(es256_sig_to_der(sig))
    with open(data, "wb") as f:
        f.write(("%s.%s" % (h, p)).encode())
    r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pub, "-signature", sigf, data],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode(errors="replace").strip()
    return r.returncode == 0 and "Verified OK" in out, out


def cert_der(crt_path):
    with open(crt_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def cert_sha256(crt_path):
    return hashlib.sha256(cert_der(crt_path)).digest()


def x5t_s256(crt_path):
    """RFC 8705 cnf "x5t#S256": base64url SHA-256 of the certificate DER."""
    return b64u(cert_sha256(crt_path))


# --------------------------------------------------------------------------
# the dev IdP process
# --------------------------------------------------------------------------

class DevIdP:
    """node deploy/dev-idp/server.js on 127.0.0.1, started and stopped by PID.
    Ready when it prints "dev-idp ready <issuer>" on stdout."""

    def __init__(self, dir, clients, users=None, port=None, state_dir=None, name="idp"):
        self.dir = dir
        self.clients = clients
        self.users = users
        self.port = port
        self.state_dir = state_dir or os.path.join(dir, name + "-state")
        self.log = os.path.join(dir, name + ".stderr")
        self.proc = None

    @property
    def issuer(self):
        return "http://127.0.0.1:%d" % self.port

    url = issuer

    def start(self, timeout=60):
        fixed = self.port is not None
        last = ""
        for _attempt in range(1 if fixed else 4):
            if not fixed:
                self.port = ztlib.free_port()
            argv = [NODE, SERVER_JS, "--port", str(self.port), "--issuer", self.issuer,
                    "--clients", self.clients, "--state-dir", self.state_dir]
            if self.users:
                argv += ["--users", self.users]
            errf = open(self.log, "ab")
            self.proc = ztlib.spawn(argv, stdout=subprocess.PIPE, stderr=errf,
                                    stdin=subprocess.DEVNULL, cwd=DEV_IDP_DIR)
            errf.close()
            deadline = time.monotonic() + timeout
            line = b""
            while time.monotonic() < deadline:
                line = ztlib._readline_timeout(self.proc.stdout, deadline - time.monotonic())
                if line.startswith(b"dev-idp ready") or not line:
                    break
            if line.strip() == ("dev-idp ready %s" % self.issuer).encode():
                return self
            last = "stdout %r, stderr:\n%s" % (line, ztlib._tail(self.log))
            self.stop()
        raise RuntimeError("dev IdP did not start: %s" % last)

    def stop(self):
        if self.proc is not None:
            ztlib.stop_process(self.proc, timeout=10, sig=signal.SIGTERM)
            try:
                self.proc.stdout.close()
            except Exception:
                pass
            self.proc = None

    def restart(self, timeout=60):
        """Stop and start again on the same port and state dir (same keys;
        IdP sessions are lost)."""
        self.stop()
        deadline = time.monotonic() + 15
        while ztlib.port_accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.start(timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    # plain HTTP to the IdP
    def http(self, method, path, body=None, headers=None, timeout=30):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            c.close()

    def dev(self, method, path, obj=None, expect=200):
        body = None
        headers = {}
        if obj is not None:
            body = json.dumps(obj).encode()
            headers["Content-Type"] = "application/json"
        status, _h, data = self.http(method, path, body, headers)
        try:
            doc = json.loads(data.decode() or "null")
        except ValueError:
            doc = data.decode(errors="replace")
        if expect is not None and status != expect:
            raise AssertionError("dev IdP %s %s -> %d %r" % (method, path, status, doc))
        return doc

    def mint(self, **body):
        """POST /dev/mint; returns the token string."""
        return self.dev("POST", "/dev/mint", body)["token"]

    def rotate_keys(self, alg=None, retire=False):
        q = []
        if alg:
            q.append("alg=" + alg)
        if retire:
            q.append("retire=1")
        return self.dev("POST", "/dev/rotate-keys" + ("?" + "&".join(q) if q else ""))

    def logout_user(self, sub):
        return self.dev("POST", "/dev/logout?sub=" + urllib.parse.quote(sub))

    def events(self):
        return self.dev("GET", "/dev/events")["events"]

    def jwks(self):
        return self.dev("GET", "/jwks")

    def keys(self):
        return self.dev("GET", "/dev/keys")["keys"]


class LoginFailed(AssertionError):
    pass


class IdPBrowser:
    """The browser's side at the IdP: a cookie jar (name, path -> value) and
    the login / logout forms. Stops at the first redirect that leaves the IdP
    (to the proxy) and returns that URL."""

    def __init__(self, idp):
        self.idp = idp
        self.jar = {}  # (name, path) -> value
        self.trace = []  # (method, url, status) of every step

    # cookies
    def _store(self, headers, req_path):
        for n, v in headers:
            if n.lower() != "set-cookie":
                continue
            c = ztlib.parse_set_cookie(v)
            path = c["attrs"].get("path") or req_path.rsplit("/", 1)[0] or "/"
            if path is True:
                path = "/"
            dead = c["attrs"].get("max-age") in ("0", "-1")
            exp = c["attrs"].get("expires")
            if isinstance(exp, str):
                try:
                    dead = dead or parsedate_to_datetime(exp).timestamp() < time.time()
                except (TypeError, ValueError):
                    pass
            if dead:
                self.jar.pop((c["name"], path), None)
            else:
                self.jar[(c["name"], path)] = c["value"]

    def _cookie_header(self, path):
        out = []
        for (name, cpath), value in sorted(self.jar.items(), key=lambda kv: -len(kv[0][1])):
            if path == cpath or path.startswith(cpath.rstrip("/") + "/") or cpath == "/":
                out.append("%s=%s" % (name, value))
        return "; ".join(out)

    def request(self, method, url, form=None):
        u = urllib.parse.urlsplit(url)
        if (u.scheme, u.hostname, u.port) != ("http", "127.0.0.1", self.idp.port):
            raise AssertionError("not an IdP URL: %s" % url)
        path = u.path + ("?" + u.query if u.query else "")
        headers = {}
        ck = self._cookie_header(u.path)
        if ck:
            headers["Cookie"] = ck
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        status, hdrs, data = self.idp.http(method, path, body, headers)
        self._store(hdrs, u.path)
        self.trace.append((method, url, status))
        loc = None
        for n, v in hdrs:
            if n.lower() == "location":
                loc = urllib.parse.urljoin(url, v)
        return status, loc, data.decode("utf-8", errors="replace")

    @staticmethod
    def form_action(page, form_id=None):
        pat = r'<form\b[^>]*>' if form_id is None else r'<form\b[^>]*id="%s"[^>]*>' % form_id
        m = re.search(pat, page)
        if not m:
            return None
        a = re.search(r'action="([^"]*)"', m.group(0))
        return html.unescape(a.group(1)) if a else None

    @staticmethod
    def hidden_inputs(page):
        out = {}
        for m in re.finditer(r'<input\b[^>]*type="hidden"[^>]*>', page):
            n = re.search(r'name="([^"]*)"', m.group(0))
            v = re.search(r'value="([^"]*)"', m.group(0))
            if n:
                out[html.unescape(n.group(1))] = html.unescape(v.group(1)) if v else ""
        return out

    def login(self, url, username, password=None, otp=None, max_steps=15):
        """Follow url (the proxy's redirect to /auth) through the login form.
        Returns the URL of the redirect back to the relying party. Sets
        self.form_shown (whether a login form was submitted)."""
        if password is None:
            password = USERS[username][0]
        self.form_shown = False
        method, form = "GET", None
        for _ in range(max_steps):
            status, loc, page = self.request(method, url, form)
            method, form = "GET", None
            if status in (301, 302, 303, 307) and loc:
                if not loc.startswith(self.idp.issuer + "/"):
                    return loc
                url = loc
                continue
            if status == 200 and 'name="login"' in page:
                if self.form_shown:
                    raise LoginFailed("the IdP showed the login form twice: %s" % self.trace)
                action = self.form_action(page)
                if not action:
                    raise LoginFailed("login page without a form action: %s" % page[:500])
                form = {"login": username, "password": password}
                if otp is not None:
                    form["otp"] = otp
                method, url = "POST", urllib.parse.urljoin(url, action)
                self.form_shown = True
                continue
            raise LoginFailed("unexpected IdP answer %d at %s: %s\ntrace: %s" % (
                status, url, page[:800], self.trace))
        raise LoginFailed("login did not finish in %d steps: %s" % (max_steps, self.trace))

    def end_session(self, url, max_steps=8):
        """Follow the proxy's redirect to /session/end: confirm the logout
        form (xsrf, logout=yes). Returns the final redirect URL leaving the
        IdP, or None if the IdP ended on a page of its own."""
        method, form = "GET", None
        for _ in range(max_steps):
            status, loc, page = self.request(method, url, form)
            method, form = "GET", None
            if status in (301, 302, 303, 307) and loc:
                if not loc.startswith(self.idp.issuer + "/"):
                    return loc
                url = loc
                continue
            if status == 200 and 'id="logout"' in page:
                action = self.form_action(page, "logout")
                fields = self.hidden_inputs(page)
                fields.setdefault("logout", "yes")
                method, form, url = "POST", fields, urllib.parse.urljoin(url, action)
                continue
            if status == 200:
                return None
            raise AssertionError("unexpected IdP answer %d at %s: %s" % (status, url, page[:800]))
        raise AssertionError("logout did not finish: %s" % self.trace)


# --------------------------------------------------------------------------
# test case base: proxy + dev IdP + upstream
# --------------------------------------------------------------------------

SSO_HOSTS = ["app.test", "api.test", "loose.test", "admin.test", "mfa.test", "open.test"]
SESSION_COOKIE = "__Host-zt_session"


def q(url):
    """Query parameters of url as a dict of the first values."""
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query,
                                                      keep_blank_values=True).items()}


class SSOTestCase(ztlib.ProxyTestCase):
    """A proxy with one identity provider (the dev IdP), the routes of the
    SSO brief, and one upstream. The proxy's port is chosen first because the
    IdP's client registration names it."""

    ASSERTION_ISSUER = "https://ztproxy.test"
    idp = None

    @classmethod
    def routes(cls):
        up = cls.up.url
        return [
            {"name": "app", "host": "app.test", "upstream": up, "auth": {"mode": "any"}},
            {"name": "api", "host": "api.test", "upstream": up,
             "auth": {"mode": "bearer", "bearer_bound": True}},
            {"name": "loose", "host": "loose.test", "upstream": up, "auth": {"mode": "bearer"}},
            {"name": "admin", "host": "admin.test", "upstream": up, "auth": {"max_auth_age": "5s"}},
            {"name": "mfa", "host": "mfa.test", "upstream": up, "auth": {"require_mfa": True}},
            {"name": "open", "host": "open.test", "upstream": up, "auth": {"mode": "none"}},
        ]

    @classmethod
    def identity(cls):
        return {
            "providers": [{"name": "staff", "issuer": cls.idp.issuer, "client_id": "ztproxy",
                           "client_secret_file": "idp-secret", "mfa_acr": "mfa",
                           "jwks_min_refresh": "1s", "clock_skew": "5s"}],
            "session": {"keys": "session-keys.json", "lifetime": "12h", "idle_timeout": "1h",
                        "login_timeout": "10m"},
            "assertion": {"keys_dir": "assertion-keys", "issuer": cls.ASSERTION_ISSUER,
                          "lifetime": "60s"},
        }

    @classmethod
    def config_extra(cls):
        return {"state_dir": "state", "identity": cls.identity()}

    @classmethod
    def clients_doc(cls):
        p = cls.port
        return {"clients": [{
            "client_id": "ztproxy",
            "client_secret": CLIENT_SECRET,
            "client_name": "ztproxy (integration tests)",
            "redirect_uris": ["https://%s:%d/.zt/callback" % (h, p) for h in SSO_HOSTS],
            # logout_respond() builds "https://<Host without port>/"; the
            # with-port form is registered too so either is accepted.
            "post_logout_redirect_uris": ["https://%s/" % h for h in SSO_HOSTS] +
                                         ["https://%s:%d/" % (h, p) for h in SSO_HOSTS],
            "backchannel_logout_uri": "https://app.test:%d/.zt/backchannel-logout" % p,
            "backchannel_logout_session_required": True,
            "token_endpoint_auth_method": "client_secret_basic",
            "id_token_signed_response_alg": "RS256",
            "backchannel_tls": {
                "cert": cls.pki.device_crt("idp-backchannel"),
                "key": cls.pki.device_key("idp-backchannel"),
                "ca": cls.pki.ca,
            },
        }]}

    @classmethod
    def setUpClass(cls):
        why = idp_unavailable()
        if why:
            raise RuntimeError("dev IdP unavailable (run tools/setup.sh): " + why)
        cls.tmp = ztlib.make_tmpdir("zt-%s-" % cls.__name__)
        cls.ups = {}
        try:
            cls.pki = ztlib.make_pki(os.path.join(cls.tmp, "pki"))
            cls.pki.device("idp-backchannel")
            for name in cls.UPSTREAMS:
                cls.ups[name] = ztlib.Upstream(cls.tmp, name).start()
            cls.up = cls.ups[cls.UPSTREAMS[0]]
            cls.port = ztlib.free_port()
            secret = os.path.join(cls.tmp, "idp-secret")
            with open(os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(CLIENT_SECRET + "\n")
            os.chmod(secret, 0o600)
            # An empty key directory: the proxy generates the assertion key
            # in it (test_sso.py's test_00 checks a missing directory too).
            os.makedirs(os.path.join(cls.tmp, "assertion-keys"), mode=0o700, exist_ok=True)
            cls.clients_path = os.path.join(cls.tmp, "idp-clients.json")
            with open(cls.clients_path, "w") as f:
                json.dump(cls.clients_doc(), f, indent=2)
            cls.idp = DevIdP(cls.tmp, cls.clients_path).start()
            cls.start_proxy()
            cls.wait_sso_ready()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start_proxy(cls, cfg_update=None):
        """Start (or start again) on cls.port: the IdP's registration names it."""
        cls.access_log = os.path.join(cls.tmp, "access.log")
        extra = dict(cls.config_extra())
        if cfg_update:
            extra.update(cfg_update)
        cls.cfg = ztlib.base_config(cls.pki, cls.port, cls.routes(), cls.access_log, **extra)
        cls.cfg_path = ztlib.write_config(cls.tmp, cls.cfg)
        cls.proxy = ztlib.Proxy(cls.tmp, cls.cfg_path, cls.port)
        deadline = time.monotonic() + 15
        while ztlib.port_accepts(cls.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        cls.proxy.start(timeout=15)

    @classmethod
    def restart_proxy(cls, wait_ready=True):
        rc = cls.proxy.stop()
        if rc not in (0, None):
            raise AssertionError("ztproxy exited with %r on SIGTERM:\n%s" % (
                rc, ztlib._tail(cls.proxy.stderr_path)))
        cls.start_proxy()
        if wait_ready:
            cls.wait_sso_ready()

    @classmethod
    def wait_sso_ready(cls, timeout=20):
        """Until the proxy has the provider's discovery document: a visit
        without a session is redirected to the IdP."""
        def ready():
            r = cls.visit_cls("/.ready-probe")
            loc = r.header("location") or ""
            return r.status == 302 and loc.startswith(cls.idp.issuer + "/")
        ztlib.wait_until(ready, timeout, interval=0.2, what="the proxy to know the IdP")

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.idp is not None:
                cls.idp.stop()
                cls.idp = None
        finally:
            super().tearDownClass()

    # ---- requests through the proxy, as a browser does them ----

    @classmethod
    def visit_cls(cls, path, host="app.test", cookies=None, device="good", headers=None,
                  method="GET", body=None):
        hl = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if cookies:
            if isinstance(cookies, dict):
                cookies = list(cookies.items())
            hl.append(("Cookie", "; ".join("%s=%s" % kv for kv in cookies)))
        return ztlib.http_request(cls.port, method, path, hl, body, pki=cls.pki, device=device,
                                  host="%s:%d" % (host, cls.port), server_hostname=host)

    def visit(self, path, host="app.test", cookies=None, device="good", headers=None,
              method="GET", body=None):
        return self.visit_cls(path, host, cookies, device, headers, method, body)

    def assert_to_idp(self, r, what="a redirect to the IdP's authorization endpoint"):
        loc = r.header("location") or ""
        self.assertEqual(r.status, 302, "%s expected, got %r" % (what, r))
        self.assertTrue(loc.startswith(self.idp.issuer + "/auth?"),
                        "%s expected, Location is %r" % (what, loc))
        return loc

    def login_cookie(self, r):
        """The __Host-zt_login_* cookie a redirect to the IdP sets: (name, value)."""
        for c in r.set_cookies():
            if c["name"].startswith("__Host-zt_login_") and c["value"]:
                return c["name"], c["value"]
        self.fail("no __Host-zt_login_* cookie in %r" % r)

    def login(self, user="alice", path="/", host="app.test", device="good", browser=None,
              otp=None):
        """A complete browser login through the proxy. Returns a dict: session
        (cookie value), start (first response), callback (the callback URL),
        finish (the proxy's answer to the callback), browser (IdPBrowser)."""
        browser = browser or IdPBrowser(self.idp)
        start = self.visit(path, host=host, device=device)
        loc = self.assert_to_idp(start)
        lname, lvalue = self.login_cookie(start)
        cb = browser.login(loc, user, otp=otp)
        prefix = "https://%s:%d/.zt/callback?" % (host, self.port)
        self.assertTrue(cb.startswith(prefix), "IdP redirected to %r, not %s..." % (cb, prefix))
        u = urllib.parse.urlsplit(cb)
        finish = self.visit(u.path + "?" + u.query, host=host, device=device,
                            cookies={lname: lvalue})
        self.assertEqual(finish.status, 302, "callback: %r" % finish)
        sc = finish.set_cookie(SESSION_COOKIE)
        self.assertIsNotNone(sc, "no session cookie after the callback: %r" % finish)
        self.assertTrue(sc["value"].startswith("v1."), sc)
        return {"session": sc["value"], "start": start, "callback": cb, "finish": finish,
                "browser": browser, "login_cookie": (lname, lvalue), "auth_url": loc}

    def session_cookies(self, value, **more):
        d = {SESSION_COOKIE: value}
        d.update(more)
        return d

    def upstream_heads(self, target):
        return [h for h in self.up.heads() if h.get("target") == target]

    def upstream_saw(self, target):
        return len(self.upstream_heads(target)) > 0

    def unique(self, tag):
        return "/%s-%s" % (tag, b64u(os.urandom(6)))

    @staticmethod
    def next_second():
        """Revoking a user revokes the sessions issued in the same whole
        second too (docs/sessions.md): wait for the next second so a fresh
        login afterwards is not caught by it."""
        t = time.time()
        time.sleep(int(t) + 1.05 - t)

    def proxy_log_offset(self):
        return self.proxy.stderr_size()

    def dump_idp_events(self):
        try:
            return json.dumps(self.idp.events()[-15:], indent=1)
        except Exception as e:  # the IdP may be down
            return "(no events: %r)" % e


class _SSOResult(ztlib._LogDumpingResult):
    def _dump(self, test):
        super()._dump(test)
        idp = getattr(type(test), "idp", None)
        if idp is not None:
            self.stream.write("---- dev IdP stderr (tail) for %s ----\n%s\n----\n" % (
                test.id(), ztlib._tail(idp.log, 15)))


def main():
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_SSOResult)
    unittest.main(testRunner=runner)
