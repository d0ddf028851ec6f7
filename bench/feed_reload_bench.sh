#!/usr/bin/env bash
# bench/feed_reload_bench.sh: does reloading the device inventory pause
# requests? (issue 4: "100,000 devices load in <= 1 s and reloading does not
# pause requests").
#
# One ztproxy (device trust with a 100,000-device inventory file and a rule
# that asks for the device tier, so every request reads the inventory) in
# front of one nginx upstream, all on 127.0.0.1. bench/ztload drives
# keep-alive mTLS requests at a fixed rate (open loop: latency is measured
# from the scheduled send time, so a stalled proxy is charged for every
# request it delayed). Phases alternate in the same run, against the same
# proxy process:
#   quiet   the inventory file is left alone
#   reload  the file is rewritten every 200 ms (rename of a fresh copy; no
#           two rewrites have the same bytes, so every reload the proxy picks
#           up is a full parse of 100,000 records and a snapshot swap)
# and p50 / p99 / max latency are reported per phase, with the number of
# reloads the proxy logged during each reload phase.
#
# Everything lives in a temporary directory removed at exit (kept with
# BENCH_KEEP=1); every process started here is stopped by PID. The report
# goes to stdout and replaces the "Feed reload under load" section of
# bench/RESULTS.md (between the feed-reload markers; run.sh keeps it).
#
# Settings (environment): FRB_DURATION (s per phase, 10), FRB_ROUNDS (2),
# FRB_RATE (req/s, 2000), FRB_CONNS (32), FRB_DEVICES (100000),
# FRB_WORKERS (1), FRB_INTERVAL (s between rewrites, 0.2), BENCH_RESULTS.
set -uo pipefail

ROOT=$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
ZTPROXY=${ZTPROXY:-$BUILD_DIR/ztproxy}
ZTLOAD=${ZTLOAD:-}
NGINX=${NGINX:-/usr/sbin/nginx}
DURATION=${FRB_DURATION:-10}
ROUNDS=${FRB_ROUNDS:-2}
RATE=${FRB_RATE:-2000}
CONNS=${FRB_CONNS:-32}
DEVICES=${FRB_DEVICES:-100000}
WORKERS=${FRB_WORKERS:-1}
INTERVAL=${FRB_INTERVAL:-0.2}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/RESULTS.md}
KEEP=${BENCH_KEEP:-0}
HOST=app.test

log() { printf '[feed-reload %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

PIDS=()
stop_pid() {
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
cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
    done
    if [[ -n ${TMP:-} && -d $TMP ]]; then
        if [[ $KEEP == 1 ]]; then log "kept $TMP"; else rm -rf -- "$TMP"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

wait_port() {
    local port=$1 pid=$2 i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

[[ -x $ZTPROXY ]] || die "$ZTPROXY not found (build first)"
for b in "$NGINX" openssl python3; do command -v "$b" >/dev/null || die "$b not found"; done

TMP=$(mktemp -d /tmp/ztfeedbench.XXXXXX)
chmod 700 "$TMP"
log "work directory $TMP"

if [[ -z $ZTLOAD ]]; then
    if [[ -x $BUILD_DIR/ztload && $BUILD_DIR/ztload -nt $ROOT/bench/ztload.c ]]; then
        ZTLOAD=$BUILD_DIR/ztload
    else
        ZTLOAD=$TMP/ztload
        cc -std=c11 -O2 -D_GNU_SOURCE -o "$ZTLOAD" "$ROOT/bench/ztload.c" -lssl -lcrypto \
            -lpthread -lm || die "cannot compile ztload"
    fi
fi

PORT_BASE=${FRB_PORT_BASE:-29540}
for ((try = 0; try < 50; try++, PORT_BASE += 10)); do
    port_free "$PORT_BASE" && port_free $((PORT_BASE + 1)) && break
done
UP_PORT=$PORT_BASE
ZT_PORT=$((PORT_BASE + 1))

CERTS=$TMP/certs
{ "$ROOT/certs/make-ca.sh" "$CERTS" && "$ROOT/certs/make-server.sh" "$CERTS" "$HOST" &&
    "$ROOT/certs/make-device.sh" "$CERTS" bench-1; } >"$TMP/certs.log" 2>&1 ||
    { cat "$TMP/certs.log"; die "certificate scripts failed"; }

# Two versions of a DEVICES-record inventory; bench-1 (the load client's
# device) is active and managed in both. They differ in every record's
# "model", so the proxy parses each one afresh.
log "generating two inventories of $DEVICES devices"
python3 - "$TMP" "$DEVICES" <<'EOF' || die "cannot generate the inventories"
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
for v in ("a", "b"):
    with open("%s/inventory-%s.json" % (d, v), "w") as f:
        f.write("[\n")
        for i in range(n):
            dev = "bench-1" if i == 0 else "dev-%06d" % i
            rec = {"id": dev, "serial": "SN%08d" % i, "owner": "user%d@corp.example" % (i % 5000),
                   "managed": True, "status": "active" if i % 97 else "retired",
                   "platform": "linux" if i % 3 else "macos", "os_version": "12.%d" % (i % 9),
                   "model": "Laptop %s-%d" % (v, i % 40), "enrolled": "2024-01-02T03:04:05Z",
                   "department": "dept-%d" % (i % 60)}
            f.write(json.dumps(rec, separators=(",", ":")) + (",\n" if i + 1 < n else "\n"))
        f.write("]\n")
EOF
cp "$TMP/inventory-a.json" "$TMP/inventory.json"
INV_BYTES=$(stat -c %s "$TMP/inventory.json")

cat >"$TMP/rules.json" <<EOF
{"version": "feed-bench", "rules": [
  {"id": "app-known-device", "route": "app", "effect": "allow",
   "when": {"device_tier": {"at_least": "identified"}}}]}
EOF

mkdir -p "$TMP/upstream/logs" "$TMP/upstream/tmp"
cat >"$TMP/upstream/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/upstream/nginx.pid;
error_log $TMP/upstream/logs/error.log warn;
events { worker_connections 4096; }
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
    }
}
EOF
"$NGINX" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" -g 'daemon off;' \
    >"$TMP/upstream/stdout.log" 2>&1 &
PIDS+=($!)
wait_port "$UP_PORT" "$!" || die "upstream nginx did not start"

cat >"$TMP/ztproxy.json" <<EOF
{
  "listen": [{ "address": "127.0.0.1:$ZT_PORT", "backlog": 4096 }],
  "workers": $WORKERS,
  "tls": { "certificate": "$CERTS/server.crt", "key": "$CERTS/server.key",
           "device_ca": "$CERTS/ca.crt", "crl": "$CERTS/crl.pem" },
  "access_log": "$TMP/access.log",
  "log_level": "info",
  "timeouts": { "keepalive": "300s" },
  "device_trust": { "inventory": { "file": "$TMP/inventory.json", "max_stale": "365d" } },
  "policy": { "rules": "$TMP/rules.json", "audit_log": "off" },
  "routes": [ { "name": "app", "host": "$HOST", "upstream": "http://127.0.0.1:$UP_PORT" } ]
}
EOF
"$ZTPROXY" -c "$TMP/ztproxy.json" >"$TMP/ztproxy.out" 2>"$TMP/ztproxy.err" &
ZT_PID=$!
PIDS+=("$ZT_PID")
wait_port "$ZT_PORT" "$ZT_PID" || { tail -20 "$TMP/ztproxy.err"; die "ztproxy did not start"; }
grep -q "inventory .* loaded: $DEVICES devices" "$TMP/ztproxy.err" ||
    { tail -20 "$TMP/ztproxy.err"; die "the inventory was not loaded at start"; }
log "ztproxy pid $ZT_PID on 127.0.0.1:$ZT_PORT, inventory $DEVICES devices ($INV_BYTES bytes)"

LOADARGS=(--connect "127.0.0.1:$ZT_PORT" --host "$HOST" --cert "$CERTS/devices/bench-1.crt"
    --key "$CERTS/devices/bench-1.key" --ca "$CERTS/ca.crt" --mode keepalive --rate "$RATE"
    -c "$CONNS" -t 1 -d "$DURATION" --warmup 1 --json)

# Rewrites the inventory every INTERVAL seconds until killed: a fresh copy
# renamed into place (what an export job should do), alternating a and b,
# with a different amount of trailing white space each time so that no two
# rewrites have the same bytes (the proxy skips bytes it has already
# parsed: every reload it sees must be a full parse).
rewriter() {
    local v=b n=0
    while :; do
        { cat "$TMP/inventory-$v.json" && printf '%*s\n' $((n % 4000)) ''; } \
            >"$TMP/inventory.json.tmp" &&
            mv "$TMP/inventory.json.tmp" "$TMP/inventory.json"
        n=$((n + 1))
        echo "$n" >"$TMP/rewrites"
        [[ $v == b ]] && v=a || v=b
        sleep "$INTERVAL"
    done
}

loads() { grep -c "inventory .* loaded: $DEVICES devices" "$TMP/ztproxy.err"; }

: >"$TMP/rows"
for ((round = 1; round <= ROUNDS; round++)); do
    for phase in quiet reload; do
        l0=$(loads)
        rpid=
        if [[ $phase == reload ]]; then
            rewriter &
            rpid=$!
            PIDS+=("$rpid")
        fi
        log "round $round, $phase: ${DURATION}s at $RATE req/s over $CONNS keep-alive connections"
        out=$("$ZTLOAD" "${LOADARGS[@]}" 2>"$TMP/ztload.err") || true
        rw=0
        if [[ -n $rpid ]]; then
            stop_pid "$rpid"
            rw=$(cat "$TMP/rewrites" 2>/dev/null || echo 0)
        fi
        sleep 1.5 # a reload still in flight is counted in this phase
        l1=$(loads)
        kill -0 "$ZT_PID" 2>/dev/null || { tail -30 "$TMP/ztproxy.err"; die "ztproxy died"; }
        [[ -n $out ]] || { cat "$TMP/ztload.err"; die "ztload failed"; }
        echo "$round $phase $rw $((l1 - l0)) $out" >>"$TMP/rows"
    done
done

CMD="bench/feed_reload_bench.sh  # FRB_DURATION=$DURATION FRB_ROUNDS=$ROUNDS FRB_RATE=$RATE FRB_CONNS=$CONNS FRB_DEVICES=$DEVICES FRB_WORKERS=$WORKERS FRB_INTERVAL=$INTERVAL"
python3 - "$TMP/rows" "$CMD" "$INV_BYTES" "$TMP/report.md" <<'EOF' || die "cannot write the report"
import json, os, sys, time
rows_path, cmd, inv_bytes, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows = []
for line in open(rows_path):
    rnd, phase, rw, loads, js = line.split(" ", 4)
    rows.append((int(rnd), phase, int(rw), int(loads), json.loads(js)))
ncpu = os.cpu_count()
load = open("/proc/loadavg").read().split()[:3]
o = ["<!-- feed-reload-bench:begin -->",
     "## Feed reload under load (device inventory, 100,000 devices)", "",
     "Generated by `bench/feed_reload_bench.sh` on %s (%d CPUs, load average %s at the end)."
     % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), ncpu, " ".join(load)), "",
     "Keep-alive mTLS requests at a fixed rate through one ztproxy (latency from the scheduled "
     "send time: a pause would be charged to every request it delayed), while the "
     "inventory file (%.1f MB) is left alone (*quiet*) or rewritten every 200 ms (*reload*: "
     "no two rewrites have the same bytes, so each reload the proxy picks up is a full parse and swap). "
     "Every request is decided on the device's tier, i.e. reads the live snapshot." % (inv_bytes / 1e6),
     "", "| round | phase | rewrites | reloads | req/s | 2xx | non-2xx | errors | late | p50 µs | p99 µs | p99.9 µs | max µs |",
     "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for rnd, phase, rw, loads, r in rows:
    l = r["latency_us"]
    o.append("| %d | %s | %s | %d | %.0f | %d | %d | %d | %d | %d | %d | %d | %d |" % (
        rnd, phase, rw if phase == "reload" else "–", loads, r["rps"], r["ok_2xx"], r["non_2xx"],
        r["errors"], r.get("late", 0), l["p50"], l["p99"], l["p999"], l["max"]))
def agg(phase, key):
    v = [r["latency_us"][key] for _, p, _, _, r in rows if p == phase]
    return max(v) if v else 0
o += ["", "Worst over the rounds: quiet p99 %d µs / max %d µs; reload p99 %d µs / max %d µs."
      % (agg("quiet", "p99"), agg("quiet", "max"), agg("reload", "p99"), agg("reload", "max")),
      "", "The proxy stats the file once a second, so at most about one reload per second "
      "happens however often the file is rewritten; *reloads* counts the `inventory ... "
      "loaded` lines the proxy logged in the phase. The parse runs on the loader thread; on a "
      "machine with few cores it competes with the worker for CPU, which is what remains "
      "visible in the reload rows.", "", "Command:", "", "```", cmd, "```",
      "<!-- feed-reload-bench:end -->", ""]
open(out_path, "w").write("\n".join(o))
EOF
cat "$TMP/report.md"

# Replace the section in RESULTS (or append it).
python3 - "$RESULTS" "$TMP/report.md" <<'EOF'
import os, sys
path, new = sys.argv[1], open(sys.argv[2]).read()
old = open(path).read() if os.path.exists(path) else ""
b, e = "<!-- feed-reload-bench:begin -->", "<!-- feed-reload-bench:end -->"
if b in old and e in old:
    i, j = old.index(b), old.index(e) + len(e)
    text = old[:i] + new.rstrip("\n") + old[j:]
else:
    text = old.rstrip("\n") + ("\n\n" if old else "") + new
open(path + ".tmp", "w").write(text)
os.replace(path + ".tmp", path)
EOF
log "results in $RESULTS"
