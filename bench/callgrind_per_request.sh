#!/usr/bin/env bash
# callgrind_per_request.sh - deterministic instructions per keep-alive request
# of one ztproxy configuration (bench/RESULTS.md, "Per-request cost of
# identity and the decision pipeline").
#
#   bench/callgrind_per_request.sh ZTPROXY CONFIG HOST PORT CERTDIR [COOKIE]
#
# ZTPROXY runs under valgrind --tool=callgrind with CONFIG (listening on
# 127.0.0.1:PORT, one worker); build/ztload sends keep-alive requests for
# HOST over 8 connections with the device certificate CERTDIR/devices/
# bench-1.{crt,key} (CA CERTDIR/ca.crt), with "Cookie: COOKIE" if given.
# Two runs, 10 s and 25 s (CPI_SHORT, CPI_LONG); the difference of the two
# divided by the difference of their request counts cancels start-up,
# shutdown and the TLS handshakes (SSL_do_handshake is subtracted as well,
# in case a slow run did not finish all of them). Prints, per request: the
# whole process, the worker loop, and the audit writer thread.
#
# Configurations and a session cookie: run bench/run.sh once with
# BENCH_KEEP=1 (it prints the kept directory): ztproxy-sso-w1/ztproxy.json
# (routes app.test without identity and sso.test with a session),
# ztproxy-policy-full-w1/ (1,020 rules, inventory, audit log) and sso.jar
# (the cookie: awk -F'\t' '$6 == "__Host-zt_session" {print $6 "=" $7}').
# A cookie older than half the session's idle timeout is re-sealed on every
# request (ztload never takes the Set-Cookie): log in afresh for figures.
#
# Needs valgrind (callgrind_annotate) and python3. Loopback only; the proxy
# is stopped by PID.
set -euo pipefail

[[ $# -ge 5 ]] || { sed -n '2,26p' "$0" >&2; exit 2; }
BIN=$1 CONF=$2 HOST=$3 PORT=$4 CERTS=$5 COOKIE=${6:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ZTLOAD=${ZTLOAD:-$ROOT/build/ztload}
SHORT=${CPI_SHORT:-10}
LONG=${CPI_LONG:-25}
OUT=$(mktemp -d /tmp/cpi.XXXXXX)
PID=

cleanup() {
    [[ -n $PID ]] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    rm -rf -- "$OUT"
}
trap cleanup EXIT

one() { # tag seconds
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$1.cg" "$BIN" -c "$CONF" \
        >"$OUT/$1.stdout" 2>"$OUT/$1.stderr" &
    PID=$!
    for _ in $(seq 300); do
        (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        kill -0 "$PID" 2>/dev/null || { tail -n 20 "$OUT/$1.stderr" >&2; exit 1; }
        sleep 0.2
    done
    local args=(--connect "127.0.0.1:$PORT" --cert "$CERTS/devices/bench-1.crt"
        --key "$CERTS/devices/bench-1.key" --ca "$CERTS/ca.crt" --host "$HOST"
        --mode keepalive -c 8 -t 1 -d "$2" --warmup 0 --json)
    [[ -n $COOKIE ]] && args+=(--header "Cookie: $COOKIE")
    "$ZTLOAD" "${args[@]}" >"$OUT/$1.json"
    kill -TERM "$PID"
    wait "$PID" || true
    PID=
}

one short "$SHORT"
one long "$LONG"
python3 - "$OUT" <<'EOF'
import json, re, subprocess, sys

d = sys.argv[1]

def get(tag):
    j = json.load(open("%s/%s.json" % (d, tag)))
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                          "%s/%s.cg" % (d, tag)], capture_output=True, text=True).stdout
    total = int(re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", out).group(1).replace(",", ""))

    def fn(name):
        m = re.search(r"([\d,]+)\s+\([^)]*\)\s+\S+:" + re.escape(name) + r" ", out)
        return int(m.group(1).replace(",", "")) if m else 0
    hs = fn("SSL_do_handshake")
    return j["requests"], j["non_2xx"] + j["errors"], total - hs, fn("worker_main") - hs, fn("al_main")

a, b = get("short"), get("long")
n = b[0] - a[0]
if n <= 0 or a[1] or b[1]:
    sys.exit("unusable runs: requests %d / %d, non-2xx or errors %d / %d" % (a[0], b[0], a[1], b[1]))
print("requests %d / %d: per request: process %.0f, worker loop %.0f, audit writer %.0f instructions"
      % (a[0], b[0], (b[2] - a[2]) / n, (b[3] - a[3]) / n, (b[4] - a[4]) / n))
EOF
