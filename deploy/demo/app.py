#!/usr/bin/env python3
"""The demo's "sample internal app": shows what ztproxy tells an upstream.

    python3 deploy/demo/app.py --port 9000

Every request gets a page listing the request line and the headers the app
received, with the identity headers the proxy sets (X-ZT-*) and the
X-Forwarded-* ones highlighted. Ask for JSON (Accept: application/json, or
?format=json) to get the same as a machine-readable object. Listens on
127.0.0.1 only: in the demo, only the proxy talks to it. Standard library only.
"""

import argparse
import html
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

IDENTITY_EXPLAINED = {
    "x-zt-device": "device id from the client certificate (mutual TLS)",
    "x-zt-user": "the signed-in person",
    "x-zt-email": "the person's email",
    "x-zt-groups": "the person's groups, looked up live",
    "x-zt-device-tier": "how healthy the device is",
    "x-zt-request-id": "id of this request in the proxy's logs",
    "x-zt-assertion": "JWT signed by the proxy (verify with /.zt/jwks.json)",
    "x-forwarded-for": "the client's address as the proxy saw it",
    "x-forwarded-proto": "the scheme the client used",
    "x-forwarded-host": "the host the client asked for",
}


def classify(name):
    n = name.lower()
    if n.startswith("x-zt-"):
        return "zt"
    if n.startswith("x-forwarded-"):
        return "fwd"
    return ""


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Sample internal app</title>
<style>
 body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
 h1 {{ font-size: 1.4em; }}
 .who {{ background: #eef6ee; border: 1px solid #9c9; padding: .8em 1em; border-radius: 6px; }}
 table {{ border-collapse: collapse; width: 100%; margin-top: 1em; }}
 th, td {{ text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd;
          vertical-align: top; }}
 td.v {{ font-family: ui-monospace, monospace; word-break: break-all; }}
 tr.zt {{ background: #fff3c4; font-weight: 600; }}
 tr.fwd {{ background: #e3f0ff; }}
 .note {{ color: #666; font-weight: normal; font-size: .9em; }}
 .legend span {{ padding: 0 .5em; margin-right: 1em; }}
</style></head>
<body>
<h1>Sample internal app</h1>
<p class="who">{who}</p>
<p><code>{method} {target} {version}</code> from <code>{peer}</code></p>
<p class="legend"><span style="background:#fff3c4">X-ZT-*: identity set by ztproxy</span>
<span style="background:#e3f0ff">X-Forwarded-*: set by ztproxy</span></p>
<table>
<tr><th>header</th><th>value</th></tr>
{rows}
</table>
<p class="note">Every client-sent X-ZT-* header is removed by the proxy before it adds its own,
so an app can trust them as long as only the proxy can reach it.</p>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "zt-demo-app/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("app: %s - %s\n" % (self.address_string(), fmt % args))

    def collect(self):
        headers = [[k, v] for k, v in self.headers.items()]
        lower = {k.lower(): v for k, v in headers}
        return {
            "method": self.command,
            "target": self.path,
            "version": self.request_version,
            "peer": "%s:%d" % self.client_address[:2],
            "device": lower.get("x-zt-device"),
            "user": lower.get("x-zt-user"),
            "request_id": lower.get("x-zt-request-id"),
            "headers": headers,
            "identity_headers": {k: v for k, v in headers
                                 if classify(k) in ("zt", "fwd")},
        }

    def wants_json(self):
        q = parse_qs(urlsplit(self.path).query)
        if q.get("format", [""])[0] == "json":
            return True
        accept = self.headers.get("Accept", "")
        return "application/json" in accept and "text/html" not in accept

    def respond(self, send_body=True):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            # drain (and ignore) a request body, bounded
            left = min(length, 10 * 1024 * 1024)
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        info = self.collect()
        if self.wants_json():
            body = json.dumps(info, indent=2).encode() + b"\n"
            ctype = "application/json"
        else:
            rows = []
            for k, v in info["headers"]:
                cls = classify(k)
                note = IDENTITY_EXPLAINED.get(k.lower())
                rows.append('<tr class="%s"><td>%s%s</td><td class="v">%s</td></tr>' % (
                    cls, html.escape(k),
                    ' <span class="note">(%s)</span>' % html.escape(note) if note else "",
                    html.escape(v)))
            if info["device"]:
                who = "Hello! Your request came through ztproxy from device <b>%s</b>%s." % (
                    html.escape(info["device"]),
                    (" as <b>%s</b>" % html.escape(info["user"])) if info["user"] else "")
            else:
                who = ("No <code>X-ZT-Device</code> header: this request did not come "
                       "through ztproxy.")
            body = PAGE.format(who=who, method=html.escape(info["method"]),
                               target=html.escape(info["target"]),
                               version=html.escape(info["version"]),
                               peer=html.escape(info["peer"]),
                               rows="\n".join(rows)).encode()
            ctype = "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self):
        self.respond()

    def do_HEAD(self):
        self.respond(send_body=False)

    do_POST = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET
    do_PATCH = do_GET


def main():
    ap = argparse.ArgumentParser(description="ztproxy demo: sample internal app")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    args = ap.parse_args()
    srv = ThreadingHTTPServer((args.bind, args.port), Handler)
    srv.daemon_threads = True
    print("sample app on http://%s:%d/" % (args.bind, srv.server_address[1]), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
