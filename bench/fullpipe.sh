# shellcheck shell=bash
# bench/fullpipe.sh: the whole-pipeline ztproxy, shared by bench/run.sh,
# bench/reload_bench.sh and bench/soak.sh. Sourced, not run.
#
# "Whole pipeline" means everything a request can go through at once:
# mutual TLS (device CA + CRL), a route with "auth": {"mode": "session"} and
# the session cookie of a real login at the development OpenID provider
# (deploy/dev-idp) bound to the load client's certificate, device trust (an
# inventory of 1,000 devices in which the load client's device is active and
# managed, plus a posture report that passes every check: score 100, tier
# "high"), 1,020 rules over 101 routes (10 of them on the route under test,
# which ends in an allow), a group directory, a GeoIP database, the audit log
# to a file, and identity headers plus the signed X-ZT-Assertion to the
# upstream.
#
# The caller sets, before calling anything here:
#   ROOT, TMP, CERTS (certs/make-*.sh output with devices/bench-1.*),
#   UP_PORT (the upstream), IDP_PORT (the dev IdP), SSO_HOST (the route's
#   host, in the server certificate), PIDS (array of PIDs to stop at exit),
#   log() (prints to stderr).
# Files go to $TMP/full (FP_DIR).
#
# Settings (environment, read by fp_write_conf): FP_SESSION_CACHE_SIZE
# (tls.session_cache_size, 20480: ztproxy's default), FP_KEEPALIVE
# (timeouts.keepalive, "300s"), FP_LOG_LEVEL (log_level, "warn"; "debug"
# logs why each connection closed between requests).

FP_DIR=${FP_DIR:-${TMP:-/nonexistent}/full}
FP_USER=bob # a dev IdP user without MFA (bob@corp.example): the login needs no one-time code
FP_ROUTE=sso            # the route under test (host $SSO_HOST, auth: session)
FP_IDP_DIR=$ROOT/deploy/dev-idp
FP_IDP_PID=
FP_IDP_CLIENT_PORT= # the proxy port the IdP client is registered for
FP_COOKIE=

# fp_unavailable: prints why the whole pipeline cannot be set up here and
# returns 0, or returns 1 when everything it needs is present.
fp_unavailable() {
    fp_idp_unavailable && return 0
    command -v perl >/dev/null || { echo "perl is not installed"; return 0; }
    perl -MMaxMind::DB::Writer::Tree -e 1 2>/dev/null ||
        { echo "perl MaxMind::DB::Writer is missing (Debian: libmaxmind-db-writer-perl)"; return 0; }
    return 1
}

# fp_idp_unavailable: the same for the dev IdP and the login alone.
fp_idp_unavailable() {
    command -v node >/dev/null || { echo "node is not installed"; return 0; }
    command -v curl >/dev/null || { echo "curl is not installed"; return 0; }
    [[ -d $FP_IDP_DIR/node_modules/oidc-provider ]] ||
        { echo "deploy/dev-idp/node_modules is missing (cd deploy/dev-idp && npm ci --omit=dev)"; return 0; }
    return 1
}

# fp_start_idp PROXY_PORT: the dev OpenID provider on 127.0.0.1:IDP_PORT with
# one client whose redirect URI is https://SSO_HOST:PROXY_PORT/.zt/callback.
# Sets FP_IDP_PID. Returns 1 (with the IdP's stderr printed) on failure.
fp_start_idp() {
    local port=$1 d=$TMP/idp i
    if [[ -n $FP_IDP_PID ]] && kill -0 "$FP_IDP_PID" 2>/dev/null; then
        [[ $FP_IDP_CLIENT_PORT == "$port" ]] && return 0
        log "the dev IdP runs for port $FP_IDP_CLIENT_PORT, not $port"
        return 1
    fi
    mkdir -p "$d/state"
    cat >"$d/clients.json" <<JSON
{ "clients": [{
    "client_id": "ztproxy", "client_secret": "bench-dev-secret", "client_name": "ztproxy (bench)",
    "redirect_uris": ["https://$SSO_HOST:$port/.zt/callback"],
    "post_logout_redirect_uris": ["https://$SSO_HOST:$port/"],
    "token_endpoint_auth_method": "client_secret_basic",
    "id_token_signed_response_alg": "RS256" }] }
JSON
    (cd "$FP_IDP_DIR" && exec node server.js --port "$IDP_PORT" --issuer "http://127.0.0.1:$IDP_PORT" \
        --clients "$d/clients.json" --state-dir "$d/state") >"$d/stdout.log" 2>"$d/stderr.log" &
    FP_IDP_PID=$!
    PIDS+=("$FP_IDP_PID")
    for ((i = 0; i < 300; i++)); do
        if grep -q '^dev-idp ready' "$d/stdout.log" 2>/dev/null; then
            FP_IDP_CLIENT_PORT=$port
            log "dev IdP pid $FP_IDP_PID on 127.0.0.1:$IDP_PORT"
            return 0
        fi
        kill -0 "$FP_IDP_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "the dev IdP did not start; its output:"
    tail -n 20 "$d/stdout.log" "$d/stderr.log" >&2
    return 1
}

# fp_sso_login PROXY_PORT: logs FP_USER in through the proxy at PROXY_PORT
# (route host SSO_HOST, auth: session) with curl, as deploy/demo/login.sh
# does, presenting the bench-1 certificate (the session is bound to it).
# Prints "name=value" of the session cookie; returns 1 with a reason logged.
fp_sso_login() {
    local port=$1 url="https://$SSO_HOST:$1/" jar=$TMP/sso.jar idpjar=$TMP/sso-idp.jar
    local loc='' form action cb i
    local tls=(--resolve "$SSO_HOST:$port:127.0.0.1" --cacert "$CERTS/ca.crt"
        --cert "$CERTS/devices/bench-1.crt" --key "$CERTS/devices/bench-1.key")
    rm -f "$jar" "$idpjar"
    # until the proxy has read the provider's discovery document: no redirect yet
    for ((i = 0; i < 100; i++)); do
        loc=$(curl -sS -o /dev/null -w '%{redirect_url}' "${tls[@]}" -c "$jar" "$url" 2>/dev/null)
        [[ $loc == "http://127.0.0.1:$IDP_PORT/"* ]] && break
        sleep 0.2
    done
    [[ $loc == "http://127.0.0.1:$IDP_PORT/"* ]] ||
        { log "sso: the proxy did not redirect to the provider (got '$loc')"; return 1; }
    form=$(curl -sS -L -c "$idpjar" -b "$idpjar" "$loc")
    action=$(printf '%s' "$form" | sed -nE 's#.*<form[^>]*action="([^"]+)".*#\1#p' | head -n 1)
    [[ $action == /* ]] && action="http://127.0.0.1:$IDP_PORT$action"
    [[ -n $action ]] || { log "sso: no login form at the provider"; return 1; }
    cb=$(curl -sS -o /dev/null -w '%{redirect_url}' -c "$idpjar" -b "$idpjar" \
        --data-urlencode "login=$FP_USER" --data-urlencode "password=$FP_USER-dev-pw" "$action")
    for ((i = 0; i < 10; i++)); do
        [[ -z $cb || $cb == https://* ]] && break
        cb=$(curl -sS -o /dev/null -w '%{redirect_url}' -c "$idpjar" -b "$idpjar" "$cb")
    done
    [[ $cb == https://* ]] || { log "sso: the provider did not send us back to the proxy"; return 1; }
    curl -sS -o /dev/null "${tls[@]}" -b "$jar" -c "$jar" "$cb" || return 1
    awk -F'\t' '$6 == "__Host-zt_session" {print $6 "=" $7}' "$jar" | tail -n 1
}

# fp_write_files: rules (two variants), inventory (two variants), directory
# (two variants) and GeoIP database (two variants) in FP_DIR; the live files
# are rules.json, inventory.json, directory.json and geo.mmdb (copies of the
# "a" variants). The variants differ by a real change that does not touch the
# route under test's decision (reload_bench.sh swaps them).
fp_write_files() {
    mkdir -p "$FP_DIR"
    python3 - "$FP_DIR" "$FP_ROUTE" "$FP_USER" <<'EOF' || return 1
import json, sys
d, bench_route, user = sys.argv[1:]

def rules(variant):
    # 10 unscoped rules, then 10 on each of route0..route99 and the route under
    # test: 1,020 in all. For the route under test: 3 deny rules on /adminK
    # paths (the user is in no gK group, so /admin0 is denied), 3 group rules
    # (the user is in none of them: they are evaluated and do not match), 3
    # "lost device" deny rules (device attribute), and the allow rule that
    # decides: GET/HEAD from a managed device. Variant "b" changes route0's
    # first deny rule (its path) and the version.
    r = []
    for i in range(5):
        r.append({"id": "deny-country-%d" % i, "effect": "deny",
                  "when": {"country": {"in": ["KP", "IR", "SY", "CU",
                                               ["BY", "RU", "VE", "MM", "AF"][i]]}}})
    for i in range(5):
        r.append({"id": "monitor-%d" % i, "effect": "deny", "mode": "monitor",
                  "when": {"all": [{"method": {"in": ["POST", "DELETE"]}},
                                   {"not": {"ip": {"in": ["10.%d.0.0/16" % i]}}}]}})
    for rt in ["route%d" % i for i in range(100)] + [bench_route]:
        for k in range(9):
            if k % 3 == 0:
                prefix = "/admin%d" % k
                if variant == "b" and rt == "route0" and k == 0:
                    prefix = "/admin0-b"
                r.append({"id": "%s-deny-%d" % (rt, k), "route": rt, "effect": "deny",
                          "when": {"all": [{"path": {"prefix": prefix}},
                                           {"not": {"group": "g%d" % k}}]}})
            elif k % 3 == 1:
                r.append({"id": "%s-grp-%d" % (rt, k), "route": rt, "effect": "allow",
                          "when": {"all": [{"group": "g%d" % k},
                                           {"device_tier": {"at_least": "trusted"}}]}})
            else:
                r.append({"id": "%s-lost-%d" % (rt, k), "route": rt, "effect": "deny",
                          "when": {"device_attr": {"name": "status", "equals": "lost"}}})
        r.append({"id": "%s-managed" % rt, "route": rt, "effect": "allow",
                  "when": {"all": [{"method": {"in": ["GET", "HEAD"]}},
                                   {"device_attr": {"name": "managed", "is": True}},
                                   {"device_tier": {"at_least": "trusted"}},
                                   {"path": {"prefix": "/"}}]}})
    return {"version": "bench-full-" + variant, "rules": r}

def inventory(variant):
    # 1,000 devices; bench-1..bench-64 (the load client's certificates) active
    # and managed in both variants; variant "b" marks dev-999 lost.
    inv = []
    for i in range(1000):
        dev = "bench-%d" % (i + 1) if i < 64 else "dev-%d" % i
        inv.append({"id": dev, "serial": "S%06d" % i, "owner": "user%d@corp.example" % i,
                    "managed": True,
                    "status": "lost" if (variant == "b" and dev == "dev-999") else "active",
                    "platform": "linux", "os_version": "12", "model": "bench",
                    "enrolled": "2026-01-05T09:00:00Z"})
    return inv

def directory(variant):
    # groups g0..g8 (named by the rules), staff and eng; 1,000 users; the
    # benchmark user is in eng (so staff) only. Variant "b" moves user7.
    groups = {"staff": {}, "eng": {"member_of": ["staff"]}}
    for k in range(9):
        groups["g%d" % k] = {"member_of": ["staff"]}
    users = {"%s@corp.example" % user: {"groups": ["eng"]}}
    for i in range(1000):
        g = ["g%d" % (i % 9)]
        if variant == "b" and i == 7:
            g = ["g0"]
        users["user%d@corp.example" % i] = {"groups": g}
    return {"version": "bench-dir-" + variant, "groups": groups, "users": users}

for v in ("a", "b"):
    json.dump(rules(v), open("%s/rules-%s.json" % (d, v), "w"), indent=1)
    json.dump(inventory(v), open("%s/inventory-%s.json" % (d, v), "w"))
    json.dump(directory(v), open("%s/directory-%s.json" % (d, v), "w"), indent=1)
EOF
    # GeoIP: loopback in DE (no country rule denies it); the variants differ in 10/8's ASN.
    perl "$ROOT/tests/integration/geoip_writer.pl" "$FP_DIR/geo-a.mmdb" \
        127.0.0.0/8=DE 10.0.0.0/8=US:64500 192.0.2.0/24=KP || return 1
    perl "$ROOT/tests/integration/geoip_writer.pl" "$FP_DIR/geo-b.mmdb" \
        127.0.0.0/8=DE 10.0.0.0/8=US:64501 192.0.2.0/24=KP || return 1
    local f
    for f in rules.json inventory.json directory.json; do
        cp "$FP_DIR/${f%.json}-a.json" "$FP_DIR/$f" || return 1
    done
    cp "$FP_DIR/geo-a.mmdb" "$FP_DIR/geo.mmdb" || return 1
    mkdir -p "$FP_DIR/state" "$FP_DIR/assertion-keys"
    chmod 700 "$FP_DIR/state" "$FP_DIR/assertion-keys"
    (umask 077 && printf 'bench-dev-secret\n' >"$FP_DIR/idp-secret")
}

# fp_write_conf W PORT OUTDIR: OUTDIR/ztproxy.json, the whole-pipeline proxy
# on 127.0.0.1:PORT with W workers, reading the files of fp_write_files.
# Routes: FP_ROUTE (host SSO_HOST, auth session, every group forwarded) and
# route0..route99 (hosts rN.test, no identity), all to the upstream. The
# access log and the audit log go to OUTDIR.
fp_write_conf() {
    local w=$1 port=$2 d=$3 routes
    mkdir -p "$d"
    routes=$(python3 -c 'import json,sys; print(",\n".join("    " + json.dumps({"name": "route%d" % i, "host": "r%d.test" % i, "upstream": sys.argv[1], "auth": {"mode": "none"}}) for i in range(100)))' "http://127.0.0.1:$UP_PORT")
    cat >"$d/ztproxy.json" <<EOF
{
  "listen": [{ "address": "127.0.0.1:$port", "backlog": 4096 }],
  "workers": $w,
  "tls": {
    "certificate": "$CERTS/server.crt",
    "key": "$CERTS/server.key",
    "device_ca": "$CERTS/ca.crt",
    "crl": "$CERTS/crl.pem",
    "session_cache_size": ${FP_SESSION_CACHE_SIZE:-20480}
  },
  "access_log": "$d/access.log",
  "log_level": "${FP_LOG_LEVEL:-warn}",
  "state_dir": "$FP_DIR/state",
  "timeouts": { "keepalive": "${FP_KEEPALIVE:-300s}" },
  "limits": { "connections": 20000 },
  "identity": {
    "providers": [{ "name": "staff", "issuer": "http://127.0.0.1:$IDP_PORT", "client_id": "ztproxy",
                    "client_secret_file": "$FP_DIR/idp-secret" }],
    "session": { "keys": "$FP_DIR/session-keys.json" },
    "assertion": { "keys_dir": "$FP_DIR/assertion-keys", "issuer": "ztproxy-bench" }
  },
  "device_trust": { "inventory": { "file": "$FP_DIR/inventory.json", "max_stale": "24h" } },
  "policy": {
    "rules": "$FP_DIR/rules.json",
    "directory": { "file": "$FP_DIR/directory.json" },
    "geoip": "$FP_DIR/geo.mmdb",
    "audit_log": "$d/audit.log"
  },
  "routes": [
    { "name": "$FP_ROUTE", "host": "$SSO_HOST", "upstream": "http://127.0.0.1:$UP_PORT",
      "auth": { "mode": "session" }, "forward_groups": "all" },
$routes
  ]
}
EOF
}

# fp_post_posture PORT: the load client's device reports a posture that
# passes every check of the default scoring policy (score 100, tier "high").
fp_post_posture() {
    local port=$1 code now
    now=$(date -u '+%Y-%m-%dT%H:%M:%SZ')
    code=$(curl -sS -o "$TMP/posture.out" -w '%{http_code}' --resolve "$SSO_HOST:$port:127.0.0.1" \
        --cacert "$CERTS/ca.crt" --cert "$CERTS/devices/bench-1.crt" --key "$CERTS/devices/bench-1.key" \
        -H 'Content-Type: application/json' --data-binary @- "https://$SSO_HOST:$port/.zt/device/posture" <<JSON
{"device_id": "bench-1", "collected_at": "$now", "agent_version": "1.2.3",
 "os": {"name": "debian", "version": "12.4", "kernel": "6.1.0-18-amd64"},
 "disk_encryption": true, "firewall": true, "screen_lock": true, "auto_updates": true,
 "days_since_patch": 1, "uptime_seconds": 3600}
JSON
    )
    if [[ $code != 2?? ]]; then
        log "posture report refused: HTTP $code: $(head -c 300 "$TMP/posture.out")"
        return 1
    fi
}

# fp_check PORT COOKIE: the cookie gets the app (200), whoami says the user
# and tier "high", the upstream sees the identity headers and an assertion,
# /admin0 is denied (403) and the allow came from the route's allow rule.
# Returns 1 with the reason logged.
fp_check() {
    local port=$1 cookie=$2 code body
    local c=(-sS --resolve "$SSO_HOST:$port:127.0.0.1" --cacert "$CERTS/ca.crt"
        --cert "$CERTS/devices/bench-1.crt" --key "$CERTS/devices/bench-1.key" -H "Cookie: $cookie")
    code=$(curl "${c[@]}" -o /dev/null -w '%{http_code}' "https://$SSO_HOST:$port/")
    [[ $code == 200 ]] || { log "full pipeline: the session cookie got HTTP $code on /, not 200"; return 1; }
    body=$(curl "${c[@]}" "https://$SSO_HOST:$port/.zt/whoami")
    [[ $body == *'"high"'* && $body == *"$FP_USER@"* ]] ||
        { log "full pipeline: whoami does not say user $FP_USER and tier high: $(head -c 400 <<<"$body")"; return 1; }
    body=$(curl "${c[@]}" "https://$SSO_HOST:$port/_bench_echo")
    [[ $body == *"user=$FP_USER@"* && $body == *"device=bench-1 "* && $body == *"groups=eng,staff "* &&
        $body == *"assertion=eyJ"* ]] ||
        { log "full pipeline: the upstream did not get the identity headers: $(head -c 200 <<<"$body")"; return 1; }
    code=$(curl "${c[@]}" -o /dev/null -w '%{http_code}' "https://$SSO_HOST:$port/admin0/x")
    [[ $code == 403 ]] || { log "full pipeline: /admin0/x got HTTP $code, not 403"; return 1; }
    return 0
}

# fp_echo_location: an nginx location for the upstream that echoes what the
# proxy forwarded (checked once by fp_check, never benchmarked).
fp_echo_location() {
    cat <<'EOF'
        location = /_bench_echo {
            return 200 "user=$http_x_zt_user device=$http_x_zt_device groups=$http_x_zt_groups tier=$http_x_zt_device_tier assertion=$http_x_zt_assertion\n";
        }
EOF
}

# ---------------------------------------------------------------- standalone
# For scripts that run only the whole-pipeline ztproxy (reload_bench.sh,
# soak.sh): process handling, certificates, upstream, IdP, proxy, login.

fp_stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

# nginx workers of a master, recorded while it runs
fp_child_pids() {
    cat "/proc/$1/task/"*/children 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$' || true
}

fp_cleanup() {
    local rc=$? i kids k
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kids=$(fp_child_pids "${PIDS[i]}")
        fp_stop_pid "${PIDS[i]}"
        for k in $kids; do fp_stop_pid "$k"; done
    done
    if [[ -n ${TMP:-} && -d $TMP ]]; then
        if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf -- "$TMP"; fi
    fi
    exit "$rc"
}

fp_wait_port() {
    local port=$1 pid=$2 i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

fp_port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# fp_standalone_setup W PORT_BASE: everything up to a checked, logged-in
# whole-pipeline ztproxy. Sets TMP, CERTS, UP_PORT, ZT_PORT, IDP_PORT,
# UP_PID, ZT_PID, ZTLOAD, FP_COOKIE, LOADARGS (ztload target, certificate
# and cookie arguments). Dies (non-zero exit, the failing step's output
# printed) on any failure. Needs ZTPROXY, NGINX, BUILD_DIR, HOST, SSO_HOST,
# log, die, and the EXIT trap set to fp_cleanup by the caller.
fp_standalone_setup() {
    local w=$1 base=$2 try why
    [[ -x $ZTPROXY ]] || die "$ZTPROXY not found (build first)"
    for b in "$NGINX" openssl python3 curl; do command -v "$b" >/dev/null || die "$b not found"; done
    if why=$(fp_unavailable); then die "$why"; fi
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

    TMP=$(mktemp -d /tmp/ztfullbench.XXXXXX)
    chmod 700 "$TMP"
    FP_DIR=$TMP/full
    log "work directory $TMP"

    if [[ -z ${ZTLOAD:-} ]]; then
        if [[ -x $BUILD_DIR/ztload && $BUILD_DIR/ztload -nt $ROOT/bench/ztload.c ]]; then
            ZTLOAD=$BUILD_DIR/ztload
        else
            ZTLOAD=$TMP/ztload
            cc -std=c11 -O2 -D_GNU_SOURCE -o "$ZTLOAD" "$ROOT/bench/ztload.c" -lssl -lcrypto \
                -lpthread -lm || die "cannot compile ztload"
        fi
    fi

    for ((try = 0; try < 50; try++, base += 10)); do
        fp_port_free "$base" && fp_port_free $((base + 1)) && fp_port_free $((base + 2)) && break
    done
    fp_port_free "$base" || die "no free ports"
    UP_PORT=$base
    ZT_PORT=$((base + 1))
    IDP_PORT=$((base + 2))

    CERTS=$TMP/certs
    { "$ROOT/certs/make-ca.sh" "$CERTS" && "$ROOT/certs/make-server.sh" "$CERTS" "$HOST" "$SSO_HOST" &&
        "$ROOT/certs/make-device.sh" "$CERTS" bench-1 &&
        "$ROOT/certs/make-device.sh" "$CERTS" bench-2 --start 20200101000000Z --end 20210101000000Z; } \
        >"$TMP/certs.log" 2>&1 || { cat "$TMP/certs.log" >&2; die "certificate scripts failed"; }

    mkdir -p "$TMP/upstream/logs" "$TMP/upstream/tmp"
    cat >"$TMP/upstream/nginx.conf" <<EOC
user root;
worker_processes 1;
pid $TMP/upstream/nginx.pid;
error_log $TMP/upstream/logs/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $TMP/upstream/tmp/body;
    proxy_temp_path $TMP/upstream/tmp/proxy;
    fastcgi_temp_path $TMP/upstream/tmp/fastcgi;
    uwsgi_temp_path $TMP/upstream/tmp/uwsgi;
    scgi_temp_path $TMP/upstream/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$UP_PORT;
        default_type text/plain;
        location / { return 200 "ok\n"; }
$(fp_echo_location)
    }
}
EOC
    "$NGINX" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" -g 'daemon off;' \
        >"$TMP/upstream/stdout.log" 2>&1 &
    UP_PID=$!
    PIDS+=("$UP_PID")
    fp_wait_port "$UP_PORT" "$UP_PID" ||
        { cat "$TMP/upstream/stdout.log" "$TMP/upstream/logs/error.log" >&2 2>/dev/null; die "upstream nginx did not start"; }

    fp_start_idp "$ZT_PORT" || die "the dev IdP did not start"
    log "writing the rules, inventory, directory and GeoIP files"
    fp_write_files || die "cannot write the whole-pipeline files"
    fp_write_conf "$w" "$ZT_PORT" "$TMP/zt"
    "$ZTPROXY" -c "$TMP/zt/ztproxy.json" >"$TMP/zt/stdout.log" 2>"$TMP/zt/stderr.log" &
    ZT_PID=$!
    PIDS+=("$ZT_PID")
    fp_wait_port "$ZT_PORT" "$ZT_PID" || { tail -n 30 "$TMP/zt/stderr.log" >&2; die "ztproxy did not start"; }
    log "ztproxy pid $ZT_PID on 127.0.0.1:$ZT_PORT (workers $w)"
    fp_post_posture "$ZT_PORT" || die "the posture report was refused"
    FP_COOKIE=$(fp_sso_login "$ZT_PORT") || FP_COOKIE=
    [[ -n $FP_COOKIE ]] || { tail -n 20 "$TMP/zt/stderr.log" >&2; die "the login through the proxy failed"; }
    log "logged in as $FP_USER (session cookie bound to the bench-1 certificate)"
    fp_check "$ZT_PORT" "$FP_COOKIE" || { tail -n 20 "$TMP/zt/stderr.log" >&2; die "the whole-pipeline check failed"; }
    LOADARGS=(--connect "127.0.0.1:$ZT_PORT" --host "$SSO_HOST" --cert "$CERTS/devices/bench-1.crt"
        --key "$CERTS/devices/bench-1.key" --ca "$CERTS/ca.crt" --header "Cookie: $FP_COOKIE")
}

# fp_results_section RESULTS NAME REPORT: replace the section between
# "<!-- NAME:begin -->" and "<!-- NAME:end -->" in RESULTS with the file
# REPORT (which carries the markers), or append it; other sections are kept.
fp_results_section() {
    python3 - "$1" "$2" "$3" <<'PYEOF'
import os, sys
path, name, new = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
old = open(path).read() if os.path.exists(path) else ""
b, e = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
if b in old and e in old:
    i, j = old.index(b), old.index(e) + len(e)
    text = old[:i] + new.strip("\n") + old[j:]
else:
    text = old.rstrip("\n") + ("\n\n" if old else "") + new.strip("\n") + "\n"
open(path + ".tmp", "w").write(text)
os.replace(path + ".tmp", path)
PYEOF
}
