#!/usr/bin/env bash
# The ztproxy demo: the whole pipeline on loopback.
#   - a device CA, a server certificate, device certificates (one revoked)
#   - the development OpenID provider (deploy/dev-idp, users alice/bob/carol)
#   - an inventory feed, a posture report, trust tiers
#   - the demo rules (deploy/demo/rules.json) with a live directory and GeoIP
#   - a sample internal app that shows the headers it receives
#   - ztproxy in front of it, with its admin API, /metrics and the security
#     console on a loopback admin listener (token in run/admin.tokens)
# Stays in the foreground; Ctrl-C stops everything it started.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
run=$here/run
bin=$top/build/ztproxy
proxy_port=${DEMO_PROXY_PORT:-8443}
app_port=${DEMO_APP_PORT:-9080}
idp_port=${DEMO_IDP_PORT:-9000}
admin_port=${DEMO_ADMIN_PORT:-9443}

[ -x "$bin" ] || { echo "demo: $bin is missing: run ./run.sh demo" >&2; exit 1; }
mkdir -p "$run"
pki=$run/pki
"$top/certs/make-ca.sh" "$pki" --name "ztproxy demo device CA" >/dev/null
"$top/certs/make-server.sh" "$pki" wiki.corp.example payroll.corp.example localhost 127.0.0.1 >/dev/null
"$top/certs/make-device.sh" "$pki" demo-laptop >/dev/null
"$top/certs/make-device.sh" "$pki" stolen-laptop >/dev/null
"$top/certs/make-device.sh" "$pki" unknown-laptop >/dev/null
"$top/certs/revoke-device.sh" "$pki" stolen-laptop >/dev/null

# The identity provider's view of this demo.
cat >"$run/idp-clients.json" <<JSON
{ "clients": [ {
  "client_id": "ztproxy", "client_secret": "ztproxy-dev-secret",
  "redirect_uris": ["https://wiki.corp.example:$proxy_port/.zt/callback",
                    "https://payroll.corp.example:$proxy_port/.zt/callback"],
  "post_logout_redirect_uris": ["https://wiki.corp.example:$proxy_port/",
                                "https://payroll.corp.example:$proxy_port/"],
  "token_endpoint_auth_method": "client_secret_basic" } ] }
JSON
umask 077
printf 'ztproxy-dev-secret\n' >"$run/idp-secret"
umask 022

# What the asset system knows (the inventory feed).
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cat >"$run/inventory.json" <<JSON
[
  {"id": "demo-laptop", "serial": "DEMO-001", "owner": "alice@corp.example",
   "managed": true, "status": "active", "platform": "linux", "os_version": "12",
   "model": "demo", "enrolled": "2026-01-05T09:00:00Z"},
  {"id": "stolen-laptop", "serial": "DEMO-002", "owner": "bob@corp.example",
   "managed": true, "status": "stolen", "platform": "linux", "os_version": "12",
   "model": "demo", "enrolled": "2026-01-05T09:00:00Z"}
]
JSON

# Who is in which group (the live directory).
cat >"$run/directory.json" <<JSON
{ "groups": { "staff": {}, "eng": {"member_of": ["staff"]}, "finance": {"member_of": ["staff"]} },
  "users": { "alice@corp.example": {"groups": ["eng"]},
             "bob@corp.example": {"groups": ["staff"]},
             "carol@corp.example": {"groups": ["finance"]} } }
JSON
cp "$here/rules.json" "$run/rules.json"

# The security team's admin token (the console signs in with it).
if [ ! -s "$run/admin.tokens" ]; then
  (umask 077; echo "demo:$(openssl rand -hex 24)" >"$run/admin.tokens")
fi
admin_token=$(sed -n 's/^demo://p' "$run/admin.tokens")

# Loopback is "Germany" in the demo's GeoIP database (MaxMind's writer).
if [ ! -f "$run/geo.mmdb" ]; then
  perl "$top/tests/integration/geoip_writer.pl" "$run/geo.mmdb" 127.0.0.0/8=DE >/dev/null
fi

cat >"$run/ztproxy.json" <<JSON
{
  "listen": [{ "address": "127.0.0.1:$proxy_port" }],
  "workers": 2,
  "state_dir": "state",
  "tls": {
    "certificate": "pki/server.crt",
    "key": "pki/server.key",
    "device_ca": "pki/ca.crt",
    "crl": "pki/crl.pem"
  },
  "access_log": "access.log",
  "identity": {
    "providers": [{ "name": "staff", "issuer": "http://127.0.0.1:$idp_port",
                    "client_id": "ztproxy", "client_secret_file": "idp-secret",
                    "mfa_acr": "mfa" }],
    "session": { "keys": "session-keys.json" },
    "assertion": { "keys_dir": "assertion-keys", "issuer": "https://ztproxy.demo" }
  },
  "device_trust": {
    "inventory": { "file": "inventory.json", "max_stale": "24h" }
  },
  "policy": {
    "rules": "rules.json",
    "directory": { "file": "directory.json" },
    "geoip": "geo.mmdb",
    "audit_log": "audit.log",
    "deny_details": true
  },
  "admin": {
    "listen": "127.0.0.1:$admin_port",
    "token_file": "admin.tokens",
    "console_dir": "$top/proxy/console"
  },
  "routes": [
    { "name": "wiki", "host": "wiki.corp.example", "upstream": "http://127.0.0.1:$app_port" },
    { "name": "payroll", "host": "payroll.corp.example", "upstream": "http://127.0.0.1:$app_port" }
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

wait_port() {
  for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

python3 "$here/app.py" --port "$app_port" >"$run/app.log" 2>&1 &
pids+=($!)
node "$top/deploy/dev-idp/server.js" --port "$idp_port" --clients "$run/idp-clients.json" \
  --state-dir "$run/idp-state" >"$run/idp.log" 2>&1 &
pids+=($!)
wait_port "$idp_port" || { echo "demo: the identity provider did not start:" >&2; cat "$run/idp.log" >&2; exit 1; }
"$bin" -c "$run/ztproxy.json" 2>"$run/ztproxy.log" &
pids+=($!)
if ! wait_port "$proxy_port" || ! kill -0 "${pids[2]}" 2>/dev/null; then
  echo "demo: ztproxy did not start:" >&2; cat "$run/ztproxy.log" >&2; exit 1
fi

r="--resolve wiki.corp.example:$proxy_port:127.0.0.1 --resolve payroll.corp.example:$proxy_port:127.0.0.1 --cacert $pki/ca.crt"
dev="--cert $pki/devices/demo-laptop.pem"
u="https://wiki.corp.example:$proxy_port"

# The demo laptop's agent reports a healthy posture (what ztagent sends;
# run "build/ztagent --print" to see this machine's real one).
cat >"$run/posture.json" <<JSON
{"collected_at": "$now", "agent_version": "1.0.0",
 "os": {"name": "debian", "version": "12", "kernel": "6.1.0-18-amd64"},
 "disk_encryption": true, "firewall": true, "screen_lock": true, "auto_updates": true,
 "days_since_patch": 3}
JSON
curl -sS $r $dev -H 'Content-Type: application/json' --data-binary @"$run/posture.json" \
  "$u/.zt/device/posture" >/dev/null || echo "demo: warning: the posture report was not accepted" >&2

cat <<TXT

ztproxy demo is running
  proxy    https://wiki.corp.example:$proxy_port  and  https://payroll.corp.example:$proxy_port
  app      http://127.0.0.1:$app_port (shows the headers it receives)
  provider http://127.0.0.1:$idp_port (users alice / alice-dev-pw, bob / bob-dev-pw, carol / carol-dev-pw)

1. No device certificate: refused in the TLS handshake.
   curl $r $u/

2. A revoked device certificate: refused.
   curl $r --cert $pki/devices/stolen-laptop.pem $u/

3. The demo laptop, not signed in: sent to the identity provider (302).
   curl -i $r $dev $u/

4. Sign in as alice with a script that plays the browser (cookies, login form), then
   reach the wiki: the app sees X-ZT-User, X-ZT-Groups, X-ZT-Device-Tier, X-ZT-Assertion.
   deploy/demo/login.sh alice && curl $r $dev -b $run/cookies.alice $u/
   curl $r $dev -b $run/cookies.alice $u/.zt/whoami

5. A spoofed identity header is stripped before the app sees it:
   curl $r $dev -b $run/cookies.alice -H 'X-ZT-User: ceo@corp.example' $u/

6. The rules at work (deploy/demo/rules.json; edit run/rules.json and it reloads):
   curl $r $dev -b $run/cookies.alice $u/admin                  # denied: finance only
   deploy/demo/login.sh bob && curl $r $dev -b $run/cookies.bob $u/   # allowed: staff
   build/ztctl policy explain $run/rules.json --route payroll --user carol@corp.example \\
       --group finance --tier high --country DE --at 2026-03-30T10:00:00+02:00 --auth-age 5m --mfa

7. The security team's side (admin listener, loopback only; token: $admin_token):
   console  https://127.0.0.1:$admin_port/  (the server certificate is the demo's: accept it, or
            import $pki/ca.crt), sign in with the token above
   curl --cacert $pki/ca.crt -H 'Authorization: Bearer $admin_token' https://127.0.0.1:$admin_port/api/v1/decisions
   curl --cacert $pki/ca.crt https://127.0.0.1:$admin_port/readyz
   curl --cacert $pki/ca.crt https://127.0.0.1:$admin_port/metrics

Logs: $run/ztproxy.log (diagnostics), $run/access.log, $run/audit.log (verify: build/ztctl audit verify $run/audit.log)
Press Ctrl-C to stop.
TXT
wait -n "${pids[@]}" || true
echo "demo: a process exited; stopping" >&2
