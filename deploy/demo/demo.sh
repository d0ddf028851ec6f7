#!/usr/bin/env bash
# The ztproxy demo: a device CA and certificates, a sample internal app,
# ztproxy in front of it. Stays in the foreground; Ctrl-C stops everything.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
run=$here/run
bin=$top/build/ztproxy
proxy_port=${DEMO_PROXY_PORT:-8443}
app_port=${DEMO_APP_PORT:-9080}

[ -x "$bin" ] || { echo "demo: $bin is missing: run ./run.sh demo" >&2; exit 1; }
mkdir -p "$run"
pki=$run/pki
"$top/certs/make-ca.sh" "$pki" --name "ztproxy demo device CA" >/dev/null
"$top/certs/make-server.sh" "$pki" wiki.corp.example localhost 127.0.0.1 >/dev/null
"$top/certs/make-device.sh" "$pki" demo-laptop >/dev/null
"$top/certs/make-device.sh" "$pki" stolen-laptop >/dev/null
"$top/certs/revoke-device.sh" "$pki" stolen-laptop >/dev/null

cat >"$run/ztproxy.json" <<JSON
{
  "listen": [{ "address": "127.0.0.1:$proxy_port" }],
  "workers": 2,
  "tls": {
    "certificate": "pki/server.crt",
    "key": "pki/server.key",
    "device_ca": "pki/ca.crt",
    "crl": "pki/crl.pem"
  },
  "device_id": { "source": "san_uri", "prefix": "urn:ztproxy:device:" },
  "access_log": "access.log",
  "routes": [
    { "name": "wiki", "host": "wiki.corp.example", "upstream": "http://127.0.0.1:$app_port" }
  ]
}
JSON

pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo; echo "demo stopped"
}
trap cleanup INT TERM EXIT

python3 "$here/app.py" --port "$app_port" >"$run/app.log" 2>&1 &
pids+=($!)
"$bin" -c "$run/ztproxy.json" 2>"$run/ztproxy.log" &
pids+=($!)

for _ in $(seq 1 50); do
  (echo >"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null && break
  sleep 0.1
done
if ! kill -0 "${pids[1]}" 2>/dev/null; then
  echo "demo: ztproxy did not start:" >&2; cat "$run/ztproxy.log" >&2; exit 1
fi

r="--resolve wiki.corp.example:$proxy_port:127.0.0.1 --cacert $pki/ca.crt"
u="https://wiki.corp.example:$proxy_port/"
cat <<TXT

ztproxy demo is running (proxy https://wiki.corp.example:$proxy_port -> app http://127.0.0.1:$app_port)

With the demo device certificate (works; the app shows the headers it was given):
  curl $r --cert $pki/devices/demo-laptop.pem $u

Without a device certificate (refused in the TLS handshake):
  curl $r $u

With a revoked device certificate (refused):
  curl $r --cert $pki/devices/stolen-laptop.pem $u

A spoofed identity header is stripped before the app sees it:
  curl $r --cert $pki/devices/demo-laptop.pem -H 'X-ZT-User: ceo@corp.example' $u

Logs: $run/ztproxy.log (diagnostics), $run/access.log (one JSON line per request)
Press Ctrl-C to stop.
TXT
wait -n "${pids[@]}" || true
echo "demo: a process exited; stopping" >&2
