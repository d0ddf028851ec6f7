#!/usr/bin/env bash
# bench/run.sh: compare ztproxy with nginx and HAProxy as mutual-TLS reverse
# proxies in front of one shared nginx upstream, all on 127.0.0.1.
#
# Everything (certificates, configs, logs, pid files) lives in a temporary
# directory that is removed at exit (kept with BENCH_KEEP=1). Every process
# started here is stopped by PID on exit, also on failure or ^C.
# Results: Markdown on stdout and in bench/RESULTS.md. See bench/README.md.
set -uo pipefail

ROOT=$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
ZTPROXY=${ZTPROXY:-$BUILD_DIR/ztproxy}
ZTLOAD=${ZTLOAD:-}
NGINX=${NGINX:-/usr/sbin/nginx}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}

DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
WORKERS=${BENCH_WORKERS:-"1 2"}
PROXIES=${BENCH_PROXIES:-"ztproxy nginx haproxy"}
MODES=${BENCH_MODES-"keepalive newconn resume"}
CONNS_KEEPALIVE=${BENCH_CONNS_KEEPALIVE:-64}
CONNS_NEWCONN=${BENCH_CONNS_NEWCONN:-16}
CLIENT_THREADS=${BENCH_CLIENT_THREADS:-2}
RATE=${BENCH_RATE:-2000}
RATE_CONNS=${BENCH_RATE_CONNS:-32}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
IDLE_HOLD=${BENCH_IDLE_HOLD:-3}
TLS_MAX=${BENCH_TLS_MAX:-}
# Logged-in session (SSO) vs no identity on the same ztproxy: 1 runs it when
# node and deploy/dev-idp/node_modules are there, 0 skips it.
SSO=${BENCH_SSO:-1}
# The whole decision pipeline (1,020 rules over 101 routes, an inventory of
# 1,000 devices, the audit log) vs the same ztproxy without it: 1 runs it.
POLICY=${BENCH_POLICY:-1}
# The whole pipeline (bench/fullpipe.sh: mTLS, a logged-in session bound to
# the certificate, device trust with posture, 1,020 rules, directory, GeoIP,
# audit log, identity headers and assertion) vs nginx, HAProxy and nginx +
# auth_request, alternating, BENCH_FULL_ROUNDS rounds: 1 runs it.
FULL=${BENCH_FULL:-1}
FULL_ROUNDS=${BENCH_FULL_ROUNDS:-4}
# Rounds of the alternating A/B pairs of the SSO and policy suites.
PAIR_ROUNDS=${BENCH_PAIR_ROUNDS:-3}
# Interleaved runs (bench/ab_interleave.py) of the SSO, policy and
# whole-pipeline suites: every side's load runs in turn, BENCH_AB_SLICE
# seconds each with BENCH_AB_GAP seconds of nobody between, BENCH_AB_CYCLES
# times per run, BENCH_AB_RUNS runs (order reversed every other run). The
# ratios the targets are judged on. 0 skips them.
AB=${BENCH_AB:-1}
AB_RUNS=${BENCH_AB_RUNS:-5}
AB_CYCLES=${BENCH_AB_CYCLES:-10}
AB_SLICE=${BENCH_AB_SLICE:-0.5}
AB_GAP=${BENCH_AB_GAP:-0.15}
FULL_PROXIES=${BENCH_FULL_PROXIES:-"ztproxy-full nginx haproxy nginx-authreq"}
# Below the ephemeral range (32768+ by default): a load-client socket could
# otherwise sit on a proxy's port when the proxy is restarted.
PORT_BASE=${BENCH_PORT_BASE:-29440}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/RESULTS.md}
KEEP=${BENCH_KEEP:-0}

declare -A PORT=()
HOST=app.test
SSO_HOST=sso.test
DIR_TAG= # prefix of the per-proxy directories ("full-" in the whole-pipeline suite)
FAILED=() # steps that failed: the script exits 1 after writing the report

# shellcheck source=fullpipe.sh
. "$ROOT/bench/fullpipe.sh"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes

PIDS=()          # every process we started, stopped in reverse order at exit
declare -A PROXY_PID=()
declare -A PROXY_EXTRA_PID=() # a second process whose CPU counts for the proxy (nginx-authreq's authz)

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

# children of a PID (nginx workers), as recorded while it runs
child_pids() {
    local pid=$1
    cat "/proc/$pid/task/"*/children 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$' || true
}

stop_tree() {
    local pid=$1 kids
    kids=$(child_pids "$pid")
    stop_pid "$pid"
    for k in $kids; do stop_pid "$k"; done
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_tree "${PIDS[i]}"
    done
    if [[ -n ${TMP:-} && -d $TMP ]]; then
        if [[ $KEEP == 1 ]]; then
            log "kept $TMP"
        else
            rm -rf -- "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

forget_pid() {
    local pid=$1 i
    for i in "${!PIDS[@]}"; do
        [[ ${PIDS[i]} == "$pid" ]] && unset 'PIDS[i]'
    done
    PIDS=("${PIDS[@]}")
}

wait_port() {
    local port=$1 pid=$2 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# utime+stime of a process and its children, in clock ticks
cpu_ticks() {
    local total=0 p stat rest
    for p in "$1" $(child_pids "$1"); do
        stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        rest=${stat##*) }          # fields after "(comm)": state is field 3
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))   # fields 14 and 15
    done
    echo "$total"
}

# busy ticks of the whole machine (all CPUs), from /proc/stat
machine_busy_ticks() {
    local cpu user nice system idle iowait irq softirq steal rest
    read -r cpu user nice system idle iowait irq softirq steal rest </proc/stat
    echo $((user + nice + system + irq + softirq + steal))
}

# VmRSS of a process and its children, in KiB
rss_kib() {
    local total=0 p v
    for p in "$1" $(child_pids "$1"); do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# ---------------------------------------------------------------- setup

[[ $(id -u) == 0 ]] || log "warning: not root; nginx 'user root;' and ulimit -n may fail"
for b in "$NGINX" "$HAPROXY" openssl python3; do
    command -v "$b" >/dev/null || die "$b not found"
done
ulimit -Hn 65536 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if ((NOFILE < IDLE_CONNS + 1000)); then
    log "warning: ulimit -n is $NOFILE; the idle test may be limited"
fi

TMP=$(mktemp -d /tmp/ztbench.XXXXXX)
chmod 700 "$TMP"
FP_DIR=$TMP/full
log "work directory $TMP"
JSONL=$TMP/results.jsonl
: >"$JSONL"

# ztload: the CMake one if it is newer than its source, else compile it here.
if [[ -z $ZTLOAD ]]; then
    if [[ -x $BUILD_DIR/ztload && $BUILD_DIR/ztload -nt $ROOT/bench/ztload.c ]]; then
        ZTLOAD=$BUILD_DIR/ztload
    else
        ZTLOAD=$TMP/ztload
        log "compiling bench/ztload.c"
        cc -std=c11 -O2 -Wall -Wextra -Werror -Wshadow -Wformat=2 -D_GNU_SOURCE \
            -o "$ZTLOAD" "$ROOT/bench/ztload.c" -lssl -lcrypto -lpthread -lm ||
            die "cannot compile ztload"
    fi
fi

# Eight consecutive free ports from PORT_BASE on (others may be testing on this machine).
for ((try = 0; try < 50; try++, PORT_BASE += 10)); do
    all_free=1
    for ((i = 0; i < 8; i++)); do
        port_free $((PORT_BASE + i)) || { all_free=0; break; }
    done
    ((all_free)) && break
done
((all_free)) || die "no free ports near BENCH_PORT_BASE"
read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range
if ((PORT_BASE + 7 >= EPH_LO && PORT_BASE <= EPH_HI)); then
    log "warning: ports $PORT_BASE-$((PORT_BASE + 7)) are in the ephemeral range $EPH_LO-$EPH_HI"
fi
UP_PORT=$PORT_BASE
# ztproxy-full (the whole pipeline) takes ztproxy's port: they never run at once.
PORT=([ztproxy]=$((PORT_BASE + 1)) [nginx]=$((PORT_BASE + 2)) [haproxy]=$((PORT_BASE + 3))
    [ztproxy-full]=$((PORT_BASE + 1)) [nginx-authreq]=$((PORT_BASE + 5)))
IDP_PORT=$((PORT_BASE + 4))
AUTHZ_PORT=$((PORT_BASE + 6)) # nginx + auth_request: the authorization service
AB_PORT=$((PORT_BASE + 7))    # the policy suite's interleaved runs: ztproxy with the whole pipeline

# Certificates, from the project's scripts.
CERTS=$TMP/certs
for s in make-ca.sh make-server.sh make-device.sh; do
    [[ -x $ROOT/certs/$s ]] || die "certs/$s missing"
done
"$ROOT/certs/make-ca.sh" "$CERTS" >"$TMP/certs.log" 2>&1 || { cat "$TMP/certs.log"; die "make-ca.sh failed"; }
"$ROOT/certs/make-server.sh" "$CERTS" "$HOST" "$SSO_HOST" >>"$TMP/certs.log" 2>&1 || { cat "$TMP/certs.log"; die "make-server.sh failed"; }
"$ROOT/certs/make-device.sh" "$CERTS" bench-1 >>"$TMP/certs.log" 2>&1 || { cat "$TMP/certs.log"; die "make-device.sh failed"; }
for f in ca.crt crl.pem server.crt server.key devices/bench-1.crt devices/bench-1.key; do
    [[ -s $CERTS/$f ]] || die "certificate scripts did not produce $CERTS/$f"
done
cat "$CERTS/server.crt" "$CERTS/server.key" >"$CERTS/server.pem"
chmod 600 "$CERTS/server.pem"
TLSARGS=(--cert "$CERTS/devices/bench-1.crt" --key "$CERTS/devices/bench-1.key"
    --ca "$CERTS/ca.crt" --host "$HOST")
[[ -n $TLS_MAX ]] && TLSARGS+=(--tls-max "$TLS_MAX")

# ---------------------------------------------------------------- upstream

mkdir -p "$TMP/upstream/logs" "$TMP/upstream/tmp"
cat >"$TMP/upstream/nginx.conf" <<EOF
# Shared upstream for all proxies: one worker, tiny keep-alive responses.
user root;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $TMP/upstream/nginx.pid;
error_log $TMP/upstream/logs/error.log warn;
events { worker_connections 16384; }
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
        listen 127.0.0.1:$UP_PORT reuseport backlog=4096;
        default_type text/plain;
        location / { return 200 "ok\n"; }
$(fp_echo_location)
    }
}
EOF
"$NGINX" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf" -g 'daemon off;' \
    >"$TMP/upstream/stdout.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_port "$UP_PORT" "$UP_PID" || { cat "$TMP/upstream/stdout.log" "$TMP/upstream/logs/error.log" 2>/dev/null; die "upstream nginx did not start"; }
log "upstream nginx pid $UP_PID on 127.0.0.1:$UP_PORT"

# ---------------------------------------------------------------- proxies

write_ztproxy_conf() {
    local w=$1 d=$2
    cat >"$d/ztproxy.json" <<EOF
{
  "listen": [{ "address": "127.0.0.1:${PORT[ztproxy]}", "backlog": 4096 }],
  "workers": $w,
  "tls": {
    "certificate": "$CERTS/server.crt",
    "key": "$CERTS/server.key",
    "device_ca": "$CERTS/ca.crt",
    "crl": "$CERTS/crl.pem"
  },
  "access_log": "$d/access.log",
  "log_level": "warn",
  "timeouts": { "keepalive": "300s" },
  "limits": { "connections": 20000 },
  "routes": [
    { "name": "app", "host": "$HOST", "upstream": "http://127.0.0.1:$UP_PORT" }
  ]
}
EOF
}

# write_nginx_conf W DIR [authreq]: with "authreq", nginx + auth_request:
# every request first asks the authorization service (a second nginx on
# AUTHZ_PORT, keep-alive) with a subrequest, passing the client
# certificate's fingerprint and DN as a real deployment would.
write_nginx_conf() {
    local w=$1 d=$2 port=${PORT[nginx]} authz_up='' authz_loc='' authreq=''
    if [[ ${3:-} == authreq ]]; then
        port=${PORT[nginx-authreq]}
        authz_up="upstream authz { server 127.0.0.1:$AUTHZ_PORT; keepalive 64; keepalive_requests 1000000; }"
        authreq="auth_request /_auth;"
        authz_loc="location = /_auth {
            internal;
            proxy_pass http://authz;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_pass_request_body off;
            proxy_set_header Content-Length \"\";
            proxy_set_header X-Original-URI \$request_uri;
            proxy_set_header X-Original-Method \$request_method;
            proxy_set_header X-Original-Host \$host;
            proxy_set_header X-Client-Cert-Fingerprint \$ssl_client_fingerprint;
            proxy_set_header X-Client-Cert-Subject \$ssl_client_s_dn;
            proxy_set_header X-Client-Cert-Verify \$ssl_client_verify;
        }"
    fi
    mkdir -p "$d/logs" "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
# nginx as a mutual-TLS terminating reverse proxy.
user root;
worker_processes $w;
worker_rlimit_nofile $NOFILE;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections $NOFILE; }
http {
    access_log $d/access.log;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream app {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    $authz_up
    server {
        listen 127.0.0.1:$port ssl backlog=4096;
        server_name $HOST;
        ssl_certificate $CERTS/server.crt;
        ssl_certificate_key $CERTS/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_verify_client on;
        ssl_client_certificate $CERTS/ca.crt;
        ssl_crl $CERTS/crl.pem;
        location / {
            $authreq
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Client-Cert-Subject \$ssl_client_s_dn;
        }
        $authz_loc
    }
}
EOF
}

# write_authz_conf W DIR: the authorization service of nginx + auth_request,
# a second nginx answering 204 to every subrequest (no access log).
write_authz_conf() {
    local w=$1 d=$2
    mkdir -p "$d/logs" "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
# The authorization service behind nginx + auth_request: allow everything.
user root;
worker_processes $w;
worker_rlimit_nofile $NOFILE;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$AUTHZ_PORT backlog=4096;
        location / { return 204; }
    }
}
EOF
}

write_haproxy_conf() {
    local w=$1 d=$2
    cat >"$d/haproxy.cfg" <<EOF
# HAProxy as a mutual-TLS terminating reverse proxy.
global
    nbthread $w
    # maxconn above what the fd limit allows for 2 fds per connection: the idle
    # test holds client connections only (upstream connections are shared).
    maxconn $((IDLE_CONNS + 2000))
    no strict-limits
    log stdout format raw local0
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout http-keep-alive 300s
    timeout http-request 10s
    maxconn $((IDLE_CONNS + 2000))

frontend mtls
    bind 127.0.0.1:${PORT[haproxy]} ssl crt $CERTS/server.pem ca-file $CERTS/ca.crt crl-file $CERTS/crl.pem verify required alpn http/1.1
    http-request set-header X-Client-Cert-Subject %[ssl_c_s_dn]
    default_backend app

backend app
    http-reuse always
    server up 127.0.0.1:$UP_PORT
EOF
}

# start_proxy NAME W -> sets PROXY_PID[NAME], returns 1 on failure
start_proxy() {
    local try
    for try in 1 2 3; do
        start_proxy_once "$@" && return 0
        grep -qi 'address already in use' "$TMP/$DIR_TAG$1-w$2/stderr.log" "$TMP/$DIR_TAG$1-w$2/authz/stderr.log" 2>/dev/null || return 1
        log "$1: port ${PORT[$1]} busy, retrying"
        sleep 2
    done
    return 1
}

start_proxy_once() {
    local name=$1 w=$2 d=$TMP/$DIR_TAG$1-w$2 pid apid
    mkdir -p "$d"
    case $name in
    ztproxy-full)
        [[ -x $ZTPROXY ]] || { log "ztproxy-full: $ZTPROXY not found (build it first)"; echo "binary $ZTPROXY not found" >"$d/stderr.log"; return 1; }
        fp_write_conf "$w" "${PORT[$name]}" "$d"
        "$ZTPROXY" -c "$d/ztproxy.json" >"$d/stdout.log" 2>"$d/stderr.log" &
        pid=$!
        ;;
    nginx-authreq)
        write_authz_conf "$w" "$d/authz"
        "$NGINX" -p "$d/authz" -c "$d/authz/nginx.conf" -g 'daemon off;' \
            >"$d/authz/stdout.log" 2>"$d/authz/stderr.log" &
        apid=$!
        PIDS+=("$apid")
        if ! wait_port "$AUTHZ_PORT" "$apid"; then
            log "the authorization nginx of nginx-authreq did not start; its stderr:"
            tail -n 20 "$d/authz/stderr.log" "$d/authz/logs/error.log" 2>/dev/null >&2
            cp "$d/authz/stderr.log" "$d/stderr.log" 2>/dev/null
            stop_tree "$apid"
            forget_pid "$apid"
            return 1
        fi
        PROXY_EXTRA_PID[$name]=$apid
        write_nginx_conf "$w" "$d" authreq
        "$NGINX" -p "$d" -c "$d/nginx.conf" -g 'daemon off;' >"$d/stdout.log" 2>"$d/stderr.log" &
        pid=$!
        ;;
    ztproxy)
        if [[ ! -x $ZTPROXY ]]; then
            log "ztproxy: $ZTPROXY not found (build it first)"
            echo "binary $ZTPROXY not found" >"$d/stderr.log"
            return 1
        fi
        write_ztproxy_conf "$w" "$d"
        "$ZTPROXY" -c "$d/ztproxy.json" >"$d/stdout.log" 2>"$d/stderr.log" &
        pid=$!
        ;;
    nginx)
        write_nginx_conf "$w" "$d"
        "$NGINX" -p "$d" -c "$d/nginx.conf" -g 'daemon off;' >"$d/stdout.log" 2>"$d/stderr.log" &
        pid=$!
        ;;
    haproxy)
        write_haproxy_conf "$w" "$d"
        # -db: foreground; logs go to stdout, i.e. a file, like the others' access logs.
        "$HAPROXY" -db -f "$d/haproxy.cfg" >"$d/access.log" 2>"$d/stderr.log" &
        pid=$!
        ;;
    esac
    PIDS+=("$pid")
    PROXY_PID[$name]=$pid
    if ! wait_port "${PORT[$name]}" "$pid"; then
        log "$name (workers=$w) did not start; its stderr:"
        tail -n 40 "$d/stderr.log" "$d/logs/error.log" 2>/dev/null >&2
        stop_proxy "$name"
        return 1
    fi
    sleep 0.3 # let nginx workers come up
    log "$name workers=$w pid $pid on 127.0.0.1:${PORT[$name]}"
    return 0
}

stop_proxy() {
    local name=$1 pid=${PROXY_PID[$1]:-} apid=${PROXY_EXTRA_PID[$1]:-}
    if [[ -n $pid ]]; then
        stop_tree "$pid"
        forget_pid "$pid"
        unset 'PROXY_PID[$name]'
    fi
    if [[ -n $apid ]]; then
        stop_tree "$apid"
        forget_pid "$apid"
        unset 'PROXY_EXTRA_PID[$name]'
    fi
}

proxy_alive() {
    local pid=${PROXY_PID[$1]:-} apid=${PROXY_EXTRA_PID[$1]:-}
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] ||
        return 1
    [[ -z $apid ]] || { kill -0 "$apid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$apid/stat" 2>/dev/null) != Z ]]; }
}

# proxy_cpu_ticks NAME: utime+stime of the proxy's processes (both nginx
# instances for nginx-authreq)
proxy_cpu_ticks() {
    local t=0 apid=${PROXY_EXTRA_PID[$1]:-}
    [[ -n ${PROXY_PID[$1]:-} ]] && t=$(cpu_ticks "${PROXY_PID[$1]}")
    [[ -n $apid ]] && t=$((t + $(cpu_ticks "$apid")))
    echo "$t"
}

# ---------------------------------------------------------------- runs

CLK_TCK=$(getconf CLK_TCK)

# record KEY=VALUE... JSON: one result line for the report
record() {
    local json=$1; shift
    python3 - "$JSONL" "$json" "$@" <<'EOF'
import json, sys
path, res, *kv = sys.argv[1:]
row = {}
for item in kv:
    k, _, v = item.partition("=")
    row[k] = v
try:
    row["r"] = json.loads(res) if res else None
except ValueError:
    row["r"] = None
with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")
EOF
}

# bench_run PROXY W MODE LABEL ztload-args... : one measured ztload run
bench_run() {
    local proxy=$1 w=$2 mode=$3 label=$4; shift 4
    local pid=${PROXY_PID[$proxy]:-} c0=0 c1=0 u0 u1 m0 m1 t0 t1 out errf cmd status=ok
    errf=$TMP/ztload.err
    cmd="ztload $*"
    [[ -n $pid ]] && c0=$(proxy_cpu_ticks "$proxy")
    u0=$(cpu_ticks "$UP_PID")
    m0=$(machine_busy_ticks)
    t0=$EPOCHREALTIME
    out=$("$ZTLOAD" "$@" --json 2>"$errf")
    t1=$EPOCHREALTIME
    m1=$(machine_busy_ticks)
    u1=$(cpu_ticks "$UP_PID")
    [[ -n $pid ]] && c1=$(proxy_cpu_ticks "$proxy")
    if [[ -s $errf ]]; then
        sed 's/^/    /' "$errf" | head -n 5 >&2
    fi
    if [[ -z $out ]]; then
        status=failed
    fi
    if [[ -n $pid ]] && ! proxy_alive "$proxy"; then
        status=crashed
        log "$proxy DIED during '$label'; its stderr:"
        tail -n 40 "$TMP/$DIR_TAG$proxy-w$w/stderr.log" >&2
    fi
    record "$out" proxy="$proxy" workers="$w" mode="$mode" label="$label" status="$status" \
        cpu_us=$(((c1 - c0) * 1000000 / CLK_TCK)) upstream_cpu_us=$(((u1 - u0) * 1000000 / CLK_TCK)) \
        machine_cpu_us=$(((m1 - m0) * 1000000 / CLK_TCK)) elapsed_s="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" \
        cmd="$cmd"
    if [[ -n $out ]]; then
        python3 -c 'import json,sys; r=json.loads(sys.argv[1]); l=r["latency_us"]; print("    %-9s %-8s rps %9.1f  hs/s %8.1f  resumed %5.1f%%  p50 %6d  p99 %7d us  2xx %d  non2xx %d  errors %d" % (sys.argv[2], sys.argv[3], r["rps"], r["handshakes_per_s"], 100*r["resumed_frac"], l["p50"], l["p99"], r["ok_2xx"], r["non_2xx"], r["errors"]))' "$out" "$proxy" "$mode" >&2
    fi
    [[ $status == ok ]]
}

URL_OF() { echo "--connect 127.0.0.1:${PORT[$1]}"; }

# The keep-alive load of every comparison; the session route's client (set
# once the bench user has logged in).
KEEPALIVE_ARGS=(--mode keepalive -c "$CONNS_KEEPALIVE" -t "$CLIENT_THREADS")
SSO_ARGS=()

# ---------------------------------------------------------------- interleaved runs

# json_args ARG...: the arguments as a JSON list (for ab_interleave.py)
json_args() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"; }

# proxy_pids NAME: the proxy's processes, comma-separated (nginx: master and
# workers; nginx-authreq: both instances)
proxy_pids() {
    local p list=()
    for p in ${PROXY_PID[$1]:-} ${PROXY_EXTRA_PID[$1]:-}; do
        list+=("$p")
        mapfile -t -O "${#list[@]}" list < <(child_pids "$p")
    done
    (IFS=,; echo "${list[*]}")
}

# run_ab W MODE LABEL ORDER CMD [NAME PIDS ARGS_JSON]...: one interleaved run
# (bench/ab_interleave.py) of the sides given, in ORDER (comma-separated
# names); CMD is what the report prints as its command line
run_ab() {
    local w=$1 mode=$2 label=$3 order=$4 cmd=$5 out status=ok sargs=() pids='' pid
    shift 5
    while (($# >= 3)); do
        sargs+=(--side "$1" "$2" "$3")
        pids+=" ${2//,/ }"
        shift 3
    done
    out=$(python3 "$ROOT/bench/ab_interleave.py" --ztload "$ZTLOAD" "${sargs[@]}" --order "$order" \
        --warmup "$WARMUP" --cycles "$AB_CYCLES" --slice "$AB_SLICE" --gap "$AB_GAP" 2>"$TMP/ab.err") ||
        status=failed
    [[ -s $TMP/ab.err ]] && sed 's/^/    /' "$TMP/ab.err" | head -n 5 >&2
    for pid in $pids; do
        kill -0 "$pid" 2>/dev/null || { status=crashed; log "process $pid DIED during '$label'"; }
    done
    record "$out" proxy=ztproxy workers="$w" mode="$mode" label="$label" status="$status" cmd="$cmd"
    [[ -n $out ]] && python3 -c '
import json, sys
r = json.loads(sys.argv[1])
for name in r["order"]:
    s = r["sides"][name]
    if "rps" in s:
        print("    %-14s %-14s req/s %9.1f  CPU %5.1f us/req  non2xx %d  errors %d" % (sys.argv[2], name,
              s["rps"], s["cpu_us_per_req"], s["r"]["non_2xx"], s["r"]["errors"]))' "$out" "$label" >&2
    [[ $status == ok ]]
}

# ab_cmd: the interleaving settings, for the report's command lines
ab_cmd() {
    echo "ab_interleave.py --cycles $AB_CYCLES --slice $AB_SLICE --gap $AB_GAP --warmup $WARMUP $*"
}

# idle_rss PROXY W: RSS of the proxy before and while holding IDLE_CONNS idle connections
idle_rss() {
    local proxy=$1 w=$2 pid=${PROXY_PID[$1]} before during held ready=$TMP/idle.ready lp out cmd status=ok
    rm -f "$ready"
    # A short keep-alive run first so that lazily allocated state exists in both cases.
    "$ZTLOAD" --connect "127.0.0.1:${PORT[$proxy]}" "${TLSARGS[@]}" -c 4 -d 1 --warmup 0 \
        >/dev/null 2>&1
    sleep 0.5
    before=$(rss_kib "$pid")
    cmd="ztload --connect 127.0.0.1:${PORT[$proxy]} ${TLSARGS[*]} --mode idle -c $IDLE_CONNS -t $CLIENT_THREADS --hold $IDLE_HOLD --ready-file FILE"
    "$ZTLOAD" --connect "127.0.0.1:${PORT[$proxy]}" "${TLSARGS[@]}" --mode idle -c "$IDLE_CONNS" \
        -t "$CLIENT_THREADS" --hold "$IDLE_HOLD" --ready-file "$ready" --timeout 60 --json \
        >"$TMP/idle.out" 2>"$TMP/idle.err" &
    lp=$!
    PIDS+=("$lp")
    while [[ ! -e $ready ]] && kill -0 "$lp" 2>/dev/null; do sleep 0.1; done
    sleep 0.5
    during=$(rss_kib "$pid")
    held=$(cat "$ready" 2>/dev/null || echo 0)
    wait "$lp"
    forget_pid "$lp"
    out=$(cat "$TMP/idle.out")
    sed 's/^/    /' "$TMP/idle.err" | head -n 5 >&2
    [[ -z $out ]] && status=failed
    if ! proxy_alive "$proxy"; then
        status=crashed
        log "$proxy DIED during the idle test; its stderr:"
        tail -n 40 "$TMP/$proxy-w$w/stderr.log" >&2
    fi
    record "$out" proxy="$proxy" workers="$w" mode=idle label=idle status="$status" \
        rss_before="$before" rss_during="$during" held="$held" cmd="$cmd"
    log "    $proxy idle: RSS $before KiB -> $during KiB"
    sleep 1 # let the proxy close the 10k connections
}

run_proxy_suite() {
    local proxy=$1 w=$2 mode conns ok=1
    if ! start_proxy "$proxy" "$w"; then
        record "" proxy="$proxy" workers="$w" mode=start label=start status=failed \
            error="$(tail -n 5 "$TMP/$proxy-w$w/stderr.log" 2>/dev/null | tr '\n' ' ')"
        return
    fi
    # Smoke test: one request must succeed, else the proxy is marked failed.
    if ! "$ZTLOAD" $(URL_OF "$proxy") "${TLSARGS[@]}" -c 1 -d 0.3 --warmup 0 --json \
        >"$TMP/smoke.json" 2>"$TMP/smoke.err" ||
        ! grep -q '"ok_2xx":[1-9]' "$TMP/smoke.json"; then
        log "$proxy workers=$w: smoke test failed:"
        cat "$TMP/smoke.json" "$TMP/smoke.err" >&2
        tail -n 20 "$TMP/$proxy-w$w/stderr.log" >&2
        record "" proxy="$proxy" workers="$w" mode=start label=start status=failed \
            error="smoke test: no 2xx response"
        stop_proxy "$proxy"
        return
    fi
    record "" proxy="$proxy" workers="$w" mode=start label=start status=ok
    if ((IDLE_CONNS > 0)); then
        idle_rss "$proxy" "$w" || true
        proxy_alive "$proxy" || ok=0
    fi
    for mode in $MODES; do
        ((ok)) || { record "" proxy="$proxy" workers="$w" mode="$mode" label="$mode" status=skipped; continue; }
        conns=$CONNS_NEWCONN
        [[ $mode == keepalive ]] && conns=$CONNS_KEEPALIVE
        bench_run "$proxy" "$w" "$mode" "$mode" $(URL_OF "$proxy") "${TLSARGS[@]}" \
            --mode "$mode" -c "$conns" -t "$CLIENT_THREADS" -d "$DURATION" --warmup "$WARMUP" ||
            proxy_alive "$proxy" || ok=0
    done
    if ((ok)) && [[ $RATE != 0 ]]; then
        bench_run "$proxy" "$w" rate "rate" $(URL_OF "$proxy") "${TLSARGS[@]}" \
            --mode keepalive --rate "$RATE" -c "$RATE_CONNS" -t 1 -d "$DURATION" --warmup "$WARMUP" ||
            proxy_alive "$proxy" || ok=0
    fi
    if ((!ok)); then
        record "" proxy="$proxy" workers="$w" mode=start label=crash status=crashed
    fi
    # Errors in the proxy's own diagnostics are worth a look.
    stop_proxy "$proxy"
}

# ---------------------------------------------------------------- SSO

# The dev OpenID provider (deploy/dev-idp) on 127.0.0.1:IDP_PORT, and a
# ztproxy with two routes to the same upstream: app.test without identity
# ("auth": {"mode": "none"}) and sso.test with "auth": {"mode": "session"}. A
# real login through the proxy (curl, as deploy/demo/login.sh does) with the
# benchmark's device certificate gives a session cookie bound to that
# certificate; ztload then sends it with every request to sso.test.
# The provider, the login and the whole-pipeline proxy are in bench/fullpipe.sh.
SSO_COOKIE=
SSO_SKIPPED=

write_ztproxy_sso_conf() {
    local w=$1 d=$2
    (umask 077 && printf 'bench-dev-secret\n' >"$d/idp-secret")
    mkdir -p "$d/state" "$d/assertion-keys"
    chmod 700 "$d/assertion-keys"
    cat >"$d/ztproxy.json" <<JSON
{
  "listen": [{ "address": "127.0.0.1:${PORT[ztproxy]}", "backlog": 4096 }],
  "workers": $w,
  "tls": {
    "certificate": "$CERTS/server.crt",
    "key": "$CERTS/server.key",
    "device_ca": "$CERTS/ca.crt",
    "crl": "$CERTS/crl.pem"
  },
  "access_log": "$d/access.log",
  "log_level": "warn",
  "state_dir": "$d/state",
  "timeouts": { "keepalive": "300s" },
  "limits": { "connections": 20000 },
  "identity": {
    "providers": [{ "name": "staff", "issuer": "http://127.0.0.1:$IDP_PORT", "client_id": "ztproxy",
                    "client_secret_file": "$d/idp-secret" }],
    "session": { "keys": "$TMP/sso-session-keys.json" },
    "assertion": { "keys_dir": "$d/assertion-keys", "issuer": "ztproxy-bench" }
  },
  "routes": [
    { "name": "app", "host": "$HOST", "upstream": "http://127.0.0.1:$UP_PORT", "auth": { "mode": "none" } },
    { "name": "sso", "host": "$SSO_HOST", "upstream": "http://127.0.0.1:$UP_PORT", "auth": { "mode": "session" } }
  ]
}
JSON
}

# ---------------------------------------------------------------- rules

# write_policy_files DIR: rules.json (10 rules on each of 100 routes plus
# the bench route "app", 10 unscoped deny and monitor rules: 1,020 in all)
# and inventory.json (1,000 devices, the bench certificates' among them).
write_policy_files() {
    python3 - "$1" <<'EOF'
import json, sys
d = sys.argv[1]
rules = []
for i in range(5):
    rules.append({"id": "deny-country-%d" % i, "effect": "deny",
                  "when": {"country": {"in": ["KP", "IR", "SY", "CU",
                                               ["BY", "RU", "VE", "MM", "AF"][i]]}}})
for i in range(5):
    rules.append({"id": "monitor-%d" % i, "effect": "deny", "mode": "monitor",
                  "when": {"all": [{"method": {"in": ["POST", "DELETE"]}},
                                   {"not": {"ip": {"in": ["10.%d.0.0/16" % i]}}}]}})
routes = ["route%d" % i for i in range(100)] + ["app"]
for r in routes:
    for k in range(9):
        if k % 3 == 0:
            rules.append({"id": "%s-deny-%d" % (r, k), "route": r, "effect": "deny",
                          "when": {"all": [{"path": {"prefix": "/admin%d" % k}},
                                           {"not": {"group": "g%d" % k}}]}})
        elif k % 3 == 1:
            rules.append({"id": "%s-grp-%d" % (r, k), "route": r, "effect": "allow",
                          "when": {"all": [{"group": "g%d" % k},
                                           {"device_tier": {"at_least": "trusted"}}]}})
        else:
            rules.append({"id": "%s-lost-%d" % (r, k), "route": r, "effect": "deny",
                          "when": {"device_attr": {"name": "status", "equals": "lost"}}})
    rules.append({"id": "%s-managed" % r, "route": r, "effect": "allow",
                  "when": {"all": [{"method": {"in": ["GET", "HEAD"]}},
                                   {"device_attr": {"name": "managed", "is": True}},
                                   {"path": {"prefix": "/"}}]}})
json.dump({"version": "bench-1020", "rules": rules}, open(d + "/rules.json", "w"), indent=1)
inv = []
for i in range(1000):
    dev = "bench-%d" % (i + 1) if i < 64 else "dev-%d" % i
    inv.append({"id": dev, "serial": "S%06d" % i, "owner": "user%d@corp.example" % i,
                "managed": True, "status": "active", "platform": "linux", "os_version": "12",
                "model": "bench", "enrolled": "2026-01-05T09:00:00Z"})
json.dump(inv, open(d + "/inventory.json", "w"))
EOF
}

# write_ztproxy_policy_conf W DIR [PORT [FILE]]: the bench config plus 100
# more routes, device trust, the rules and the audit log, listening on PORT
# (ztproxy's), written to DIR/FILE (ztproxy.json)
write_ztproxy_policy_conf() {
    local w=$1 d=$2 port=${3:-${PORT[ztproxy]}} file=${4:-ztproxy.json} routes
    routes=$(python3 -c 'import json,sys; print(",\n".join(json.dumps({"name": "route%d" % i, "host": "r%d.test" % i, "upstream": sys.argv[1]}) for i in range(100)))' "http://127.0.0.1:$UP_PORT")
    cat >"$d/$file" <<EOF
{
  "listen": [{ "address": "127.0.0.1:$port", "backlog": 4096 }],
  "workers": $w,
  "tls": {
    "certificate": "$CERTS/server.crt",
    "key": "$CERTS/server.key",
    "device_ca": "$CERTS/ca.crt",
    "crl": "$CERTS/crl.pem"
  },
  "access_log": "$d/access.log",
  "log_level": "warn",
  "state_dir": "$d/state",
  "timeouts": { "keepalive": "300s" },
  "limits": { "connections": 20000 },
  "device_trust": { "inventory": { "file": "$d/inventory.json", "max_stale": "24h" } },
  "policy": { "rules": "$d/rules.json", "audit_log": "$d/audit.log" },
  "routes": [
    { "name": "app", "host": "$HOST", "upstream": "http://127.0.0.1:$UP_PORT" },
$routes
  ]
}
EOF
}

# policy_suite W: keep-alive requests through ztproxy without rules and with
# the whole decision pipeline, alternating processes, PAIR_ROUNDS pairs in
# counterbalanced order (none full, full none, ...: a drift of the machine's
# speed within a round does not favour one side)
policy_suite() {
    local w=$1 i kind d pid order
    for ((i = 1; i <= PAIR_ROUNDS; i++)); do
        order="none full"
        if ((i % 2 == 0)); then order="full none"; fi
        for kind in $order; do
            d=$TMP/ztproxy-policy-$kind-w$w
            mkdir -p "$d/state"
            if [[ $kind == none ]]; then
                write_ztproxy_conf "$w" "$d"
            else
                [[ -f $d/rules.json ]] || write_policy_files "$d"
                write_ztproxy_policy_conf "$w" "$d"
            fi
            "$ZTPROXY" -c "$d/ztproxy.json" >"$d/stdout.log" 2>"$d/stderr.log" &
            pid=$!
            PIDS+=("$pid")
            PROXY_PID[ztproxy]=$pid
            if ! wait_port "${PORT[ztproxy]}" "$pid"; then
                log "ztproxy ($kind rules, workers=$w) did not start:"
                tail -n 20 "$d/stderr.log" >&2
                record "" proxy=ztproxy workers="$w" mode=policy label=start status=failed \
                    error="ztproxy ($kind) did not start"
                stop_proxy ztproxy
                return
            fi
            if ! "$ZTLOAD" --connect "127.0.0.1:${PORT[ztproxy]}" "${TLSARGS[@]}" -c 1 -d 0.3 --warmup 0 \
                --json >"$TMP/smoke.json" 2>"$TMP/smoke.err" || ! grep -q '"ok_2xx":[1-9]' "$TMP/smoke.json"; then
                log "policy ($kind): smoke test failed"
                cat "$TMP/smoke.json" "$TMP/smoke.err" >&2
                tail -n 20 "$d/stderr.log" >&2
                record "" proxy=ztproxy workers="$w" mode=policy label=start status=failed \
                    error="smoke test ($kind): no 2xx response"
                stop_proxy ztproxy
                return
            fi
            bench_run ztproxy "$w" "policy-$kind" "policy-$kind-$i" --connect "127.0.0.1:${PORT[ztproxy]}" \
                "${TLSARGS[@]}" --mode keepalive -c "$CONNS_KEEPALIVE" -t "$CLIENT_THREADS" -d "$DURATION" \
                --warmup "$WARMUP" || true
            stop_proxy ztproxy
        done
    done
    if [[ -s $TMP/ztproxy-policy-full-w$w/audit.log ]]; then
        record "" proxy=ztproxy workers="$w" mode=policy label=audit status=ok \
            audit_lines="$(wc -l <"$TMP/ztproxy-policy-full-w$w/audit.log")"
    fi
    if ((AB)); then policy_ab "$w"; fi
}

# policy_ab W: interleaved runs of the two ztproxy processes of the policy
# suite, both up at once (the one with the whole pipeline on AB_PORT)
policy_ab() {
    local w=$1 dn=$TMP/ztproxy-policy-none-w$1 df=$TMP/ztproxy-policy-full-w$1 pn pf i order na fa
    [[ -f $dn/ztproxy.json && -f $df/ztproxy.json ]] || return 0
    write_ztproxy_policy_conf "$w" "$df" "$AB_PORT" ztproxy-ab.json
    "$ZTPROXY" -c "$dn/ztproxy.json" >>"$dn/stdout.log" 2>>"$dn/stderr.log" &
    pn=$!
    PIDS+=("$pn")
    "$ZTPROXY" -c "$df/ztproxy-ab.json" >>"$df/stdout.log" 2>>"$df/stderr.log" &
    pf=$!
    PIDS+=("$pf")
    if ! wait_port "${PORT[ztproxy]}" "$pn" || ! wait_port "$AB_PORT" "$pf"; then
        log "policy (interleaved, workers=$w): a ztproxy did not start"
        record "" proxy=ztproxy workers="$w" mode=policy-ab label=start status=failed \
            error="ztproxy did not start for the interleaved runs"
    else
        na=$(json_args --connect "127.0.0.1:${PORT[ztproxy]}" "${TLSARGS[@]}" "${KEEPALIVE_ARGS[@]}")
        fa=$(json_args --connect "127.0.0.1:$AB_PORT" "${TLSARGS[@]}" "${KEEPALIVE_ARGS[@]}")
        for ((i = 1; i <= AB_RUNS; i++)); do
            order=none,full
            if ((i % 2 == 0)); then order=full,none; fi
            run_ab "$w" policy-ab "policy-ab-$i" "$order" "$(ab_cmd --side none PID_NONE "[--connect \
127.0.0.1:${PORT[ztproxy]} ...]" --side full PID_FULL "[--connect 127.0.0.1:$AB_PORT ...]" --order $order)" \
                none "$pn" "$na" full "$pf" "$fa" || true
        done
    fi
    stop_pid "$pn"
    forget_pid "$pn"
    stop_pid "$pf"
    forget_pid "$pf"
}

# sso_suite W: keep-alive requests on the route without identity and on the
# SSO route with the session cookie, same proxy process, alternating, twice each
sso_suite() {
    local w=$1 d=$TMP/ztproxy-sso-w$1 pid code i
    mkdir -p "$d"
    write_ztproxy_sso_conf "$w" "$d"
    "$ZTPROXY" -c "$d/ztproxy.json" >"$d/stdout.log" 2>"$d/stderr.log" &
    pid=$!
    PIDS+=("$pid")
    PROXY_PID[ztproxy]=$pid
    if ! wait_port "${PORT[ztproxy]}" "$pid"; then
        log "ztproxy (SSO, workers=$w) did not start:"
        tail -n 20 "$d/stderr.log" >&2
        record "" proxy=ztproxy workers="$w" mode=sso label=start status=failed error="ztproxy with identity did not start"
        stop_proxy ztproxy
        return
    fi
    if [[ -z $SSO_COOKIE ]]; then
        SSO_COOKIE=$(fp_sso_login "${PORT[ztproxy]}") || SSO_COOKIE=
        if [[ -z $SSO_COOKIE ]]; then
            record "" proxy=ztproxy workers="$w" mode=sso label=start status=failed error="login through the proxy failed"
            stop_proxy ztproxy
            return
        fi
        log "sso: logged in as $FP_USER (session cookie bound to the bench-1 certificate)"
    fi
    SSO_ARGS=(--cert "$CERTS/devices/bench-1.crt" --key "$CERTS/devices/bench-1.key" --ca "$CERTS/ca.crt"
        --host "$SSO_HOST" --header "Cookie: $SSO_COOKIE")
    # the cookie must reach the app, not a login redirect
    code=$(curl -sS -o /dev/null -w '%{http_code}' --resolve "$SSO_HOST:${PORT[ztproxy]}:127.0.0.1" \
        --cacert "$CERTS/ca.crt" --cert "$CERTS/devices/bench-1.crt" --key "$CERTS/devices/bench-1.key" \
        -H "Cookie: $SSO_COOKIE" "https://$SSO_HOST:${PORT[ztproxy]}/")
    if [[ $code != 200 ]]; then
        log "sso: the session cookie got HTTP $code, not 200"
        record "" proxy=ztproxy workers="$w" mode=sso label=start status=failed error="session cookie refused (HTTP $code)"
        stop_proxy ztproxy
        return
    fi
    record "" proxy=ztproxy workers="$w" mode=sso label=start status=ok
    # Counterbalanced pairs: none session, session none, ...
    for ((i = 1; i <= PAIR_ROUNDS; i++)); do
        if ((i % 2 == 0)); then sso_run_session "$w" "$i"; fi
        bench_run ztproxy "$w" "sso-none" "sso-none-$i" --connect "127.0.0.1:${PORT[ztproxy]}" "${TLSARGS[@]}" \
            --mode keepalive -c "$CONNS_KEEPALIVE" -t "$CLIENT_THREADS" -d "$DURATION" --warmup "$WARMUP" || true
        if ((i % 2 == 1)); then sso_run_session "$w" "$i"; fi
    done
    if ((AB)); then
        local pids none_args sess_args order
        pids=$(proxy_pids ztproxy)
        none_args=$(json_args --connect "127.0.0.1:${PORT[ztproxy]}" "${TLSARGS[@]}" "${KEEPALIVE_ARGS[@]}")
        sess_args=$(json_args --connect "127.0.0.1:${PORT[ztproxy]}" "${SSO_ARGS[@]}" "${KEEPALIVE_ARGS[@]}")
        for ((i = 1; i <= AB_RUNS; i++)); do
            order=none,session
            if ((i % 2 == 0)); then order=session,none; fi
            run_ab "$w" sso-ab "sso-ab-$i" "$order" "$(ab_cmd --side none PID "[--host $HOST ...]" \
                --side session PID "[--host $SSO_HOST --header 'Cookie: __Host-zt_session=\$SESSION' ...]" \
                --order $order)" \
                none "$pids" "$none_args" session "$pids" "$sess_args" || true
        done
    fi
    stop_proxy ztproxy
}

sso_run_session() {
    bench_run ztproxy "$1" "sso-session" "sso-session-$2" --connect "127.0.0.1:${PORT[ztproxy]}" \
        "${SSO_ARGS[@]}" "${KEEPALIVE_ARGS[@]}" -d "$DURATION" --warmup "$WARMUP" || true
}

# ---------------------------------------------------------------- whole pipeline

# full_start NAME W: starts one proxy of the whole-pipeline suite and checks
# it with one request of the suite's own kind; records a failure and returns
# 1 if it does not work. For ztproxy-full: posture report, login (once: the
# cookie stays valid across processes, same session keys) and fp_check.
full_start() {
    local p=$1 w=$2 d=$TMP/full-$1-w$2
    if ! start_proxy "$p" "$w"; then
        record "" proxy="$p" workers="$w" mode=full-start label=start status=failed \
            error="did not start: $(tail -n 3 "$d/stderr.log" 2>/dev/null | tr '\n' ' ')"
        FAILED+=("whole pipeline: $p workers=$w did not start")
        return 1
    fi
    if [[ $p == ztproxy-full ]]; then
        FULL_COOKIE_HDR=
        if ! fp_post_posture "${PORT[$p]}"; then
            record "" proxy="$p" workers="$w" mode=full-start label=start status=failed error="posture report refused"
        else
            [[ -n $FP_COOKIE ]] || FP_COOKIE=$(fp_sso_login "${PORT[$p]}") || FP_COOKIE=
            if [[ -z $FP_COOKIE ]]; then
                record "" proxy="$p" workers="$w" mode=full-start label=start status=failed \
                    error="login through the proxy failed"
            elif ! fp_check "${PORT[$p]}" "$FP_COOKIE"; then
                record "" proxy="$p" workers="$w" mode=full-start label=start status=failed \
                    error="whole-pipeline check failed (see the log)"
            else
                log "full: $FP_USER logged in, device bench-1 tier high, identity headers reach the upstream"
                FULL_COOKIE_HDR="Cookie: $FP_COOKIE"
            fi
        fi
        if [[ -z $FULL_COOKIE_HDR ]]; then
            tail -n 20 "$d/stderr.log" >&2
            FAILED+=("whole pipeline: ztproxy-full workers=$w: set-up failed")
            stop_proxy "$p"
            return 1
        fi
    fi
    if ! "$ZTLOAD" $(URL_OF "$p") "${FULL_ARGS[@]}" --header "$FULL_COOKIE_HDR" -c 1 -d 0.3 --warmup 0 \
        --json >"$TMP/smoke.json" 2>"$TMP/smoke.err" || ! grep -q '"ok_2xx":[1-9]' "$TMP/smoke.json"; then
        log "full: $p workers=$w: smoke test failed:"
        cat "$TMP/smoke.json" "$TMP/smoke.err" >&2
        tail -n 20 "$d/stderr.log" >&2
        record "" proxy="$p" workers="$w" mode=full-start label=start status=failed error="smoke test: no 2xx response"
        FAILED+=("whole pipeline: $p workers=$w: smoke test failed")
        stop_proxy "$p"
        return 1
    fi
    record "" proxy="$p" workers="$w" mode=full-start label=start status=ok
}

# full_suite W: the whole-pipeline ztproxy, nginx, HAProxy and nginx +
# auth_request, all started for W workers, then keep-alive runs with the
# same ztload arguments (route host sso.test, the session cookie) in turn,
# counterbalanced: A B C D, D C B A, ...; then the fixed-rate latency run of
# ztproxy-full.
FULL_ARGS=(--cert "$CERTS/devices/bench-1.crt" --key "$CERTS/devices/bench-1.key" --ca "$CERTS/ca.crt"
    --host "$SSO_HOST")
[[ -n $TLS_MAX ]] && FULL_ARGS+=(--tls-max "$TLS_MAX")
FULL_COOKIE_HDR=
full_suite() {
    local w=$1 p i j up=() order
    DIR_TAG=full-
    # ztproxy-full first: the others are only worth measuring against it
    for p in $FULL_PROXIES; do
        if full_start "$p" "$w"; then
            up+=("$p")
        elif [[ $p == ztproxy-full ]]; then
            break
        fi
    done
    if [[ " ${up[*]} " == *" ztproxy-full "* ]]; then
        for ((i = 1; i <= FULL_ROUNDS; i++)); do
            order=()
            for ((j = 0; j < ${#up[@]}; j++)); do
                if ((i % 2 == 1)); then order+=("${up[j]}"); else order+=("${up[${#up[@]} - 1 - j]}"); fi
            done
            for p in "${order[@]}"; do
                if ! proxy_alive "$p"; then
                    record "" proxy="$p" workers="$w" mode=full label="full-$i" status=crashed
                    FAILED+=("whole pipeline: $p workers=$w died")
                    continue
                fi
                bench_run "$p" "$w" full "full-$i" $(URL_OF "$p") "${FULL_ARGS[@]}" \
                    --header "$FULL_COOKIE_HDR" --mode keepalive -c "$CONNS_KEEPALIVE" \
                    -t "$CLIENT_THREADS" -d "$DURATION" --warmup "$WARMUP" ||
                    FAILED+=("whole pipeline: $p workers=$w run $i failed")
            done
        done
        if ((AB)) && ((${#up[@]} > 1)); then
            local sides=() names=() cmd
            for p in "${up[@]}"; do
                # shellcheck disable=SC2046 # URL_OF is two words
                sides+=("$p" "$(proxy_pids "$p")" "$(json_args $(URL_OF "$p") "${FULL_ARGS[@]}" \
                    --header "$FULL_COOKIE_HDR" "${KEEPALIVE_ARGS[@]}")")
                names+=("$p")
            done
            for ((i = 1; i <= AB_RUNS; i++)); do
                order=()
                for ((j = 0; j < ${#names[@]}; j++)); do
                    if ((i % 2 == 1)); then order+=("${names[j]}"); else order+=("${names[${#names[@]} - 1 - j]}"); fi
                done
                cmd=
                for p in "${names[@]}"; do
                    cmd+="--side $p PIDS '[--connect 127.0.0.1:${PORT[$p]} --host $SSO_HOST ...]' "
                done
                run_ab "$w" full-ab "full-ab-$i" "$(IFS=,; echo "${order[*]}")" \
                    "$(ab_cmd "$cmd--order $(IFS=,; echo "${order[*]}")")" \
                    "${sides[@]}" || FAILED+=("whole pipeline: interleaved run $i (workers=$w) failed")
            done
        fi
        if [[ $RATE != 0 ]] && proxy_alive ztproxy-full; then
            bench_run ztproxy-full "$w" rate rate $(URL_OF ztproxy-full) "${FULL_ARGS[@]}" \
                --header "$FULL_COOKIE_HDR" --mode keepalive --rate "$RATE" -c "$RATE_CONNS" -t 1 \
                -d "$DURATION" --warmup "$WARMUP" || FAILED+=("whole pipeline: ztproxy-full workers=$w rate run failed")
        fi
        if [[ -s $TMP/full-ztproxy-full-w$w/audit.log ]]; then
            record "" proxy=ztproxy-full workers="$w" mode=full-audit label=audit status=ok \
                audit_lines="$(wc -l <"$TMP/full-ztproxy-full-w$w/audit.log")" \
                audit_allow="$(grep -c '"rule":"sso-managed"' "$TMP/full-ztproxy-full-w$w/audit.log")"
        fi
    fi
    for p in "${up[@]}"; do stop_proxy "$p"; done
    DIR_TAG=
}

START_DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
START_S=$SECONDS
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TOP_START=$(ps -eo pcpu=,comm= --sort=-pcpu | head -n 3 | awk '{printf "%s%s %s%%", (NR > 1 ? ", " : ""), $2, $1}')

# Baseline: the upstream directly, plain HTTP, at the same fixed rate.
if [[ $RATE != 0 ]]; then
    log "direct upstream at $RATE req/s"
    bench_run direct 0 rate rate --url "http://127.0.0.1:$UP_PORT/" --host "$HOST" \
        --mode keepalive --rate "$RATE" -c "$RATE_CONNS" -t 1 -d "$DURATION" --warmup "$WARMUP" || true
fi

for w in $WORKERS; do
    for proxy in $PROXIES; do
        log "== $proxy workers=$w"
        run_proxy_suite "$proxy" "$w"
    done
done

if [[ $SSO == 1 && " $PROXIES " == *" ztproxy "* ]]; then
    if why=$(fp_idp_unavailable); then
        log "sso: skipped: $why"
        SSO_SKIPPED=$why
    elif fp_start_idp "${PORT[ztproxy]}"; then
        for w in $WORKERS; do
            log "== ztproxy workers=$w: logged-in session vs no identity"
            sso_suite "$w"
        done
    else
        log "sso: the dev IdP did not start"
        SSO_SKIPPED="the dev IdP did not start"
    fi
fi

if [[ $POLICY == 1 && " $PROXIES " == *" ztproxy "* ]]; then
    for w in $WORKERS; do
        log "== ztproxy workers=$w: the whole decision pipeline vs no rules"
        policy_suite "$w"
    done
fi

if [[ $FULL == 1 ]]; then
    if why=$(fp_unavailable); then
        log "full pipeline: cannot run: $why (BENCH_FULL=0 skips it)"
        record "" proxy=ztproxy-full workers=0 mode=full-start label=start status=failed \
            error="not run: $why (BENCH_FULL=0 skips it)"
        FAILED+=("whole pipeline: $why")
    elif ! fp_start_idp "${PORT[ztproxy]}"; then
        record "" proxy=ztproxy-full workers=0 mode=full-start label=start status=failed \
            error="the dev IdP did not start"
        FAILED+=("whole pipeline: the dev IdP did not start")
    elif ! fp_write_files >"$TMP/full-files.log" 2>&1; then
        cat "$TMP/full-files.log" >&2
        record "" proxy=ztproxy-full workers=0 mode=full-start label=start status=failed \
            error="cannot write the rules, inventory, directory or GeoIP files"
        FAILED+=("whole pipeline: cannot write its files")
    else
        for w in $WORKERS; do
            log "== whole pipeline vs the peers, workers=$w"
            full_suite "$w"
        done
    fi
fi

# Warnings and errors the proxies printed (first few lines each).
for d in "$TMP"/*-w* "$TMP"/*-w*/authz; do
    [[ -d $d ]] || continue
    for f in "$d/stderr.log" "$d/logs/error.log"; do
        if [[ -s $f ]] && grep -qiE 'error|warn|crit|alert|emerg|fatal|abort|sanitizer' "$f"; then
            echo "--- ${d#"$TMP"/}/$(basename "$f") ($(wc -l <"$f") lines):" >>"$TMP/diag.txt"
            grep -iE 'error|warn|crit|alert|emerg|fatal|abort|sanitizer' "$f" | head -n 8 >>"$TMP/diag.txt"
        fi
    done
done

# ---------------------------------------------------------------- report

machine_info() {
    echo "- date: $START_DATE (run took $((SECONDS - START_S)) s)"
    echo "- machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
    echo "- load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg) (busiest processes by ps %CPU at start: $TOP_START)"
    echo "- kernel: $(uname -sr)"
    echo "- $(openssl version)"
    echo "- $("$NGINX" -v 2>&1)"
    echo "- $("$HAPROXY" -v 2>&1 | head -n 1)"
    if [[ -x $ZTPROXY ]]; then
        echo "- ztproxy: $ZTPROXY ($(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo 'no commit'), built $(date -u -r "$ZTPROXY" '+%Y-%m-%d %H:%M UTC'))"
    else
        echo "- ztproxy: not built"
    fi
    echo "- settings: BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_WORKERS=\"$WORKERS\" BENCH_CONNS_KEEPALIVE=$CONNS_KEEPALIVE BENCH_CONNS_NEWCONN=$CONNS_NEWCONN BENCH_CLIENT_THREADS=$CLIENT_THREADS BENCH_RATE=$RATE BENCH_RATE_CONNS=$RATE_CONNS BENCH_IDLE_CONNS=$IDLE_CONNS BENCH_TLS_MAX=${TLS_MAX:-default}"
}

machine_info >"$TMP/machine.md"
python3 - "$JSONL" "$TMP/machine.md" "$TMP/diag.txt" "$PROXIES" "$WORKERS" "$MODES" "$TMP" "${SSO_SKIPPED:-}" >"$TMP/report.md" <<'PYEOF'
import json, os, sys

jsonl, machine, diag, proxies, workers, modes, tmp, sso_skipped = sys.argv[1:]
import re
proxies, workers, modes = proxies.split(), workers.split(), modes.split()
rows = [json.loads(l) for l in open(jsonl) if l.strip()]

def find(proxy, w, mode):
    for r in rows:
        if r["proxy"] == proxy and r["workers"] == str(w) and r["mode"] == mode:
            return r
    return None

def state(proxy, w):
    r = find(proxy, w, "start")
    return r["status"] if r else "not run"

def crashed(proxy, w):
    return any(r["proxy"] == proxy and r["workers"] == str(w) and r["status"] == "crashed"
               for r in rows)

def ok(r):
    return r is not None and r.get("r") is not None

def cpu_per_req(r):
    res = r["r"]
    reqs = res.get("requests_total") or res["requests"]
    return int(r["cpu_us"]) / reqs if reqs else None

NCPU = os.cpu_count() or 1

def others_pct(r):
    # CPU used during the run by processes other than the proxy, the upstream
    # and the load client, in % of the machine: noise from outside the benchmark.
    try:
        el = float(r["elapsed_s"])
        other = (int(r["machine_cpu_us"]) - int(r["cpu_us"]) - int(r["upstream_cpu_us"])
                 - r["r"]["client_cpu_s"] * 1e6)
        return max(0.0, 100.0 * other / (el * 1e6 * NCPU))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None

def fmt(v, nd=0):
    if v is None:
        return "–"
    return f"{v:,.{nd}f}"

def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.2f}"

out = []
p = out.append
p("# ztproxy benchmark results\n")
p("Generated by `bench/run.sh`; see `bench/README.md` for what is measured and how to read it.\n")
p(open(machine).read())

notes = []
for w in workers:
    for proxy in proxies:
        s = state(proxy, w)
        if s != "ok":
            r = find(proxy, w, "start")
            err = (r or {}).get("error", "")
            notes.append(f"- **{proxy} workers={w}: {s}** {err}".rstrip())
        if crashed(proxy, w):
            notes.append(f"- **{proxy} workers={w}: the process died during the run** (see stderr above)")
if notes:
    p("\n## Failures\n")
    out.extend(notes)

titles = {
    "keepalive": "Keep-alive: one mTLS connection per client slot, sequential requests",
    "newconn": "New connection per request: full mTLS handshake, one request, close",
    "resume": "Resumed session per request: TLS resumption (ticket), one request, close",
}
summary = {}
for mode in modes:
    p(f"\n## {titles.get(mode, mode)}\n")
    p("| workers | proxy | req/s | handshakes/s | resumed | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/req | 2xx | non-2xx | errors | other load |")
    p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in workers:
        for proxy in proxies:
            r = find(proxy, w, mode)
            if not ok(r):
                st = r["status"] if r else state(proxy, w)
                p(f"| {w} | {proxy} | {st} | | | | | | | | | | |")
                continue
            res = r["r"]
            lat = res["latency_us"]
            c = cpu_per_req(r)
            summary[(mode, w, proxy)] = (res["rps"], c, lat["p99"])
            hs = fmt(res["handshakes_per_s"]) if mode != "keepalive" else "–"
            rs = f"{100 * res['resumed_frac']:.0f}%" if mode == "resume" else "–"
            flag = " ⚠" if r["status"] != "ok" else ""
            p(f"| {w} | {proxy}{flag} | {fmt(res['rps'])} | {hs} | {rs} | {lat['p50']} | {lat['p99']} | "
              f"{lat['p999']} | {fmt(c, 1)} | {res['ok_2xx']} | {res['non_2xx']} | {res['errors']} | "
              f"{fmt(others_pct(r))}% |")

if "ztproxy" in proxies and len(proxies) > 1:
    p("\n## Ratios (ztproxy / other; req/s above 1 and CPU/req below 1 favour ztproxy)\n")
    p("| mode | workers | req/s vs nginx | req/s vs haproxy | CPU/req vs nginx | CPU/req vs haproxy |")
    p("|---|---|---:|---:|---:|---:|")
    for mode in modes:
        for w in workers:
            z = summary.get((mode, w, "ztproxy"))
            n = summary.get((mode, w, "nginx"))
            h = summary.get((mode, w, "haproxy"))
            zr, zc = (z[0], z[1]) if z else (None, None)
            p(f"| {mode} | {w} | {ratio(zr, n[0] if n else None)} | {ratio(zr, h[0] if h else None)} | "
              f"{ratio(zc, n[1] if n else None)} | {ratio(zc, h[1] if h else None)} |")

# Latency at a fixed rate.
rate_rows = [r for r in rows if r["mode"] == "rate"]
if rate_rows:
    p("\n## Latency at a fixed rate (keep-alive, open-loop pacing, latency from the scheduled time)\n")
    p("| workers | target | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | p50 vs direct | p99 vs direct | proxy CPU µs/req | errors | late | other load |")
    p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    d = find("direct", 0, "rate")
    dl = d["r"]["latency_us"] if ok(d) else None
    if ok(d):
        res = d["r"]
        l = res["latency_us"]
        p(f"| – | upstream directly (plain HTTP) | {fmt(res['rps'])} | {l['p50']} | {l['p90']} | {l['p99']} | "
          f"{l['p999']} | {l['max']} | 1.00 | 1.00 | – | {res['errors']} | {res['late']} | {fmt(others_pct(d))}% |")
    for w in workers:
        for proxy in proxies + ["ztproxy-full"]:
            r = find(proxy, w, "rate")
            if not ok(r):
                continue
            res = r["r"]
            l = res["latency_us"]
            label = "ztproxy, whole pipeline (session cookie, device trust, 1,020 rules, audit)" if proxy == "ztproxy-full" else proxy
            p(f"| {w} | {label} | {fmt(res['rps'])} | {l['p50']} | {l['p90']} | {l['p99']} | {l['p999']} | "
              f"{l['max']} | {ratio(l['p50'], dl['p50'] if dl else None)} | "
              f"{ratio(l['p99'], dl['p99'] if dl else None)} | {fmt(cpu_per_req(r), 1)} | "
              f"{res['errors']} | {res['late']} | {fmt(others_pct(r))}% |")

# Logged-in session vs no identity (same ztproxy process, alternating runs).
def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def fmt_med(xs):
    m = median(xs)
    return "–" if m is None else f"{m:.2f}"


def fmt_list(xs):
    return ", ".join(f"{x:.2f}" for x in xs if x is not None) or "–"


def paired_ratios(rs, base_mode, test_mode):
    """workers -> ([req/s ratios], [CPU/req ratios]) of test ÷ base, one per
    round: runs labelled MODE-i pair with the base run of the same i."""
    by = {}
    for r in rs:
        if not ok(r):
            continue
        i = r["label"].rsplit("-", 1)[-1]
        by[(r["workers"], r["mode"], i)] = (r["r"]["rps"], cpu_per_req(r))
    out = {}
    for (w, mode, i), t in sorted(by.items()):
        if mode != test_mode or (w, base_mode, i) not in by:
            continue
        b = by[(w, base_mode, i)]
        rr, cc = out.setdefault(w, ([], []))
        rr.append(t[0] / b[0] if b[0] else None)
        cc.append(t[1] / b[1] if t[1] is not None and b[1] else None)
    return out


def ab_side(r, name):
    """(req/s over the side's running time, proxy CPU µs/req, failed) of
    one side of an interleaved run (as ab_interleave.py computed them), or None."""
    s = (r["r"].get("sides") or {}).get(name) if ok(r) else None
    if not s or "rps" not in s:
        return None
    return s["rps"], s["cpu_us_per_req"], s["r"]["non_2xx"] + s["r"]["errors"]


def ab_section(mode, tested, peers, names, targets, issue):
    """The interleaved runs of MODE: a table per run and side, the ratios
    tested ÷ each peer per run, and the targets judged on their median.
    targets: (what, peer, threshold, op) with what "req/s" or "CPU/req"."""
    rs = [r for r in rows if r["mode"] == mode]
    if not rs:
        return
    sides = [tested] + peers
    cfg = next((r["r"] for r in rs if ok(r)), {})
    p(f"\n**Interleaved runs (the figures the targets are judged on).** All sides up at once; "
      f"their loads run in turn, {cfg.get('slice_s', '?')} s each with "
      f"{cfg.get('gap_s', '?')} s of nobody between, "
      f"{cfg.get('cycles', '?')} cycles per run, the order reversed every "
      "other run (`bench/ab_interleave.py`). A slow phase of this shared machine longer than "
      "a cycle hits every side alike. req/s is requests ÷ the side's own running time; CPU is "
      "the proxy's utime+stime from the start of its slice to the start of the next side's.\n")
    hdr = "| workers | run | order |"
    for x in sides:
        hdr += f" {names[x]} req/s | {names[x]} CPU µs/req |"
    hdr += " failed |"
    p(hdr)
    p("|---|---|---|" + "---:|---:|" * len(sides) + "---:|")
    per = {}  # (w, what, peer) -> [ratio per run]
    for r in rs:
        if not ok(r):
            p(f"| {r['workers']} | {r['label']} | {r['status']} |" + " |" * (2 * len(sides) + 1))
            continue
        v = {x: ab_side(r, x) for x in sides}
        line = f"| {r['workers']} | {r['label']} | {' '.join(names[x] for x in r['r']['order'])} |"
        for x in sides:
            line += f" {fmt(v[x][0]) if v[x] else '–'} | {fmt(v[x][1], 1) if v[x] else '–'} |"
        line += f" {sum(v[x][2] for x in sides if v[x])} |"
        p(line)
        if r["status"] != "ok" or not v[tested]:
            continue
        for x in peers:
            if v[x]:
                per.setdefault((r["workers"], "req/s", x), []).append(v[tested][0] / v[x][0])
                per.setdefault((r["workers"], "CPU/req", x), []).append(v[tested][1] / v[x][1])
    p("")
    for w in workers:
        for what, x, t, op in targets:
            xs = per.get((w, what, x))
            if not xs:
                continue
            m = median(xs)
            if t is None:
                p(f"- workers={w}: {what} {names[tested]} ÷ {names[x]} {m:.2f} (runs: {fmt_list(xs)}) "
                  "(no target; for reference)")
                continue
            met = m >= t if op == ">=" else m <= t
            p(f"- workers={w}: {what} {names[tested]} ÷ {names[x]} **{m:.2f}** (runs: {fmt_list(xs)}) "
              f"(target {'≥' if op == '>=' else '≤'} {t:.2f}, {issue}): {'met' if met else '**missed**'}")


sso_rows = [r for r in rows if r["mode"] in ("sso-none", "sso-session")]
sso_start = [r for r in rows if r["mode"] == "sso"]
if sso_rows or sso_start or sso_skipped:
    p("\n## Keep-alive with a logged-in session (SSO cookie) vs the same proxy without identity\n")
    p("One ztproxy with two routes to the same upstream: `app.test` (`auth: none`) and "
      "`sso.test` (`auth: session`; every request carries the session cookie of a real "
      "login at the dev OpenID provider, bound to the load client's certificate, and the "
      "upstream gets `X-ZT-User`, `X-ZT-Email` and a signed `X-ZT-Assertion`). Runs "
      "alternate: no identity, session, no identity, session.\n")
    if sso_skipped:
        p(f"Not run: {sso_skipped}.\n")
    for r in sso_start:
        if r["status"] != "ok":
            p(f"- workers={r['workers']}: **{r.get('error', 'failed')}**")
    if sso_rows:
        p("| workers | run | req/s | p50 µs | p99 µs | proxy CPU µs/req | 2xx | non-2xx | errors | other load |")
        p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        best = {}
        for r in sso_rows:
            if not ok(r):
                p(f"| {r['workers']} | {r['label']} | {r['status']} | | | | | | | |")
                continue
            res = r["r"]
            lat = res["latency_us"]
            c = cpu_per_req(r)
            p(f"| {r['workers']} | {r['label']} | {fmt(res['rps'])} | {lat['p50']} | {lat['p99']} | "
              f"{fmt(c, 1)} | {res['ok_2xx']} | {res['non_2xx']} | {res['errors']} | {fmt(others_pct(r))}% |")
            k = (r["workers"], r["mode"])
            b = best.get(k)
            if b is None or res["rps"] > b[0]:
                best[k] = (res["rps"], c)
        pr = paired_ratios(sso_rows, "sso-none", "sso-session")
        p("\nRatios session ÷ no identity: per pair of neighbouring runs (the same round), their "
          "median (the figure to read: drift on this shared machine hits both runs of a pair "
          "alike), and the best run of each kind taken on its own.\n")
        p("| workers | req/s: median of pairs | req/s: pairs | req/s: best of each | CPU/req: median of pairs | CPU/req: pairs | CPU/req: best of each |")
        p("|---|---:|---|---:|---:|---|---:|")
        for w in workers:
            s_, n_ = best.get((w, "sso-session")), best.get((w, "sso-none"))
            if s_ and n_:
                rr, cc = pr.get(w, ([], []))
                p(f"| {w} | {fmt_med(rr)} | {fmt_list(rr)} | {ratio(s_[0], n_[0])} | "
                  f"{fmt_med(cc)} | {fmt_list(cc)} | {ratio(s_[1], n_[1])} |")

ab_section("sso-ab", "session", ["none"], {"session": "session", "none": "no identity"},
           [("req/s", "none", 0.95, ">="), ("CPU/req", "none", None, None)], "issue #3")

pol_rows = [r for r in rows if r["mode"] in ("policy-none", "policy-full")]
pol_start = [r for r in rows if r["mode"] == "policy" and r["label"] == "start"]
pol_audit = {r["workers"]: r.get("audit_lines") for r in rows
             if r["mode"] == "policy" and r["label"] == "audit"}
if pol_rows or pol_start:
    p("\n## Keep-alive with the whole decision pipeline vs no rules\n")
    p("ztproxy without rules, then ztproxy with 101 routes, 1,020 rules (10 per route, "
      "10 unscoped deny and monitor rules), an inventory of 1,000 devices (every request "
      "scores the device and reads its attributes), and the audit log on (one hash-chained "
      "line per decision, to a file). Separate processes, alternating: none, full, none, full.\n")
    for r in pol_start:
        if r["status"] != "ok":
            p(f"- workers={r['workers']}: **{r.get('error', 'failed')}**")
    if pol_rows:
        p("| workers | run | req/s | p50 µs | p99 µs | proxy CPU µs/req | 2xx | non-2xx | errors | other load |")
        p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        best = {}
        for r in pol_rows:
            if not ok(r):
                p(f"| {r['workers']} | {r['label']} | {r['status']} | | | | | | | |")
                continue
            res = r["r"]
            lat = res["latency_us"]
            c = cpu_per_req(r)
            p(f"| {r['workers']} | {r['label']} | {fmt(res['rps'])} | {lat['p50']} | {lat['p99']} | "
              f"{fmt(c, 1)} | {res['ok_2xx']} | {res['non_2xx']} | {res['errors']} | {fmt(others_pct(r))}% |")
            k = (r["workers"], r["mode"])
            b = best.get(k)
            if b is None or res["rps"] > b[0]:
                best[k] = (res["rps"], c)
        pr = paired_ratios(pol_rows, "policy-none", "policy-full")
        p("\nRatios whole pipeline ÷ no rules: per pair of neighbouring runs (the same round), "
          "their median (the figure to read), and the best run of each kind taken on its own.\n")
        p("| workers | req/s: median of pairs | req/s: pairs | req/s: best of each | CPU/req: median of pairs | CPU/req: pairs | CPU/req: best of each | audit lines written |")
        p("|---|---:|---|---:|---:|---|---:|---:|")
        for w in workers:
            f_, n_ = best.get((w, "policy-full")), best.get((w, "policy-none"))
            if f_ and n_:
                rr, cc = pr.get(w, ([], []))
                p(f"| {w} | {fmt_med(rr)} | {fmt_list(rr)} | {ratio(f_[0], n_[0])} | "
                  f"{fmt_med(cc)} | {fmt_list(cc)} | {ratio(f_[1], n_[1])} | {pol_audit.get(w) or '–'} |")

ab_section("policy-ab", "full", ["none"], {"full": "whole pipeline", "none": "no rules"},
           [("req/s", "none", 0.9, ">="), ("CPU/req", "none", None, None)], "issue #5")

# The whole pipeline vs the peers (same run, alternating, same ztload arguments).
full_rows = [r for r in rows if r["mode"] == "full"]
full_start = [r for r in rows if r["mode"] == "full-start"]
full_audit = {r["workers"]: r for r in rows if r["mode"] == "full-audit"}
PEER_NAMES = {"ztproxy-full": "ztproxy (whole pipeline)", "nginx": "nginx", "haproxy": "haproxy",
              "nginx-authreq": "nginx + auth_request"}
if full_rows or full_start:
    p("\n## Whole pipeline vs nginx, HAProxy and nginx + auth_request (keep-alive, same run)\n")
    p("ztproxy with everything on: mutual TLS (device CA + CRL); `auth: session` with the cookie of "
      "a real login at the dev OpenID provider, bound to the load client's certificate; device "
      "trust with a 1,000-device inventory and a posture report (the device scores 100, tier "
      "`high`); 1,020 rules over 101 routes, 10 of them on the route under test, walked on every "
      "request down to its allow rule (which asks for a managed device of tier `trusted` or "
      "better); a 1,000-user directory and a GeoIP database; the audit log to a file; "
      "`X-ZT-User`, `X-ZT-Email`, `X-ZT-Groups`, `X-ZT-Device`, `X-ZT-Device-Tier` and the "
      "signed `X-ZT-Assertion` to the upstream (checked once through the upstream before the "
      "runs). Against it, on the same upstream with the same ztload arguments (host `sso.test`, "
      "the same cookie, 64 keep-alive connections): **nginx** and **haproxy** terminating "
      "mutual TLS and proxying with upstream keep-alive, no authorization (the configurations "
      "of the tables above); **nginx + auth_request**: the same nginx where every request "
      "first makes an `auth_request` subrequest to an authorization service - a second nginx "
      "instance on another loopback port answering 204, reached over keep-alive, given the "
      "client certificate's fingerprint and DN, the original URI, method and host (and the "
      "cookie, as every request header). Its CPU per request is **both nginx instances' "
      "CPU** (masters and workers). All four run at once; runs alternate A B C D, D C B A so "
      "that drift hits all of them alike.\n")
    for r in full_start:
        if r["status"] != "ok":
            p(f"- **{PEER_NAMES.get(r['proxy'], r['proxy'])} workers={r['workers']}: {r.get('error', 'failed')}**")
    if full_rows:
        p("| workers | run | proxy | req/s | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/req | 2xx | non-2xx | errors | other load |")
        p("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        fr = {}  # (w, run, proxy) -> (rps, p99, cpu)
        for r in full_rows:
            name = PEER_NAMES.get(r["proxy"], r["proxy"])
            if not ok(r):
                p(f"| {r['workers']} | {r['label']} | {name} | {r['status']} | | | | | | | | |")
                continue
            res = r["r"]
            lat = res["latency_us"]
            c = cpu_per_req(r)
            fr[(r["workers"], r["label"], r["proxy"])] = (res["rps"], lat["p99"], c)
            flag = " ⚠" if r["status"] != "ok" else ""
            p(f"| {r['workers']} | {r['label']} | {name}{flag} | {fmt(res['rps'])} | {lat['p50']} | "
              f"{lat['p99']} | {lat['p999']} | {fmt(c, 1)} | {res['ok_2xx']} | {res['non_2xx']} | "
              f"{res['errors']} | {fmt(others_pct(r))}% |")
        runs = sorted({k[1] for k in fr})
        peers = [x for x in ("nginx", "haproxy", "nginx-authreq") if any(k[2] == x for k in fr)]

        def best(w, proxy):
            v = [fr[k] for k in fr if k[0] == w and k[2] == proxy]
            if not v:
                return None
            cpus = [x[2] for x in v if x[2] is not None]
            return (max(x[0] for x in v), min(x[1] for x in v), min(cpus) if cpus else None)

        p("\nBest of the runs (highest req/s, lowest p99, lowest CPU/req, each taken on its own):\n")
        p("| workers | proxy | req/s | p99 µs | proxy CPU µs/req |")
        p("|---|---|---:|---:|---:|")
        for w in workers:
            for proxy in ["ztproxy-full"] + peers:
                b = best(w, proxy)
                if b:
                    p(f"| {w} | {PEER_NAMES[proxy]} | {fmt(b[0])} | {b[1]} | {fmt(b[2], 1)} |")
        p("\nRatios ztproxy (whole pipeline) ÷ peer. req/s above 1, p99 and CPU/req below 1 favour "
          "ztproxy. Targets (issue #7): req/s ≥ 1.0× nginx and HAProxy and ≥ 2.0× nginx + "
          "auth_request; p99 ≤ nginx's; CPU per request ≤ 1.0× nginx's.\n")
        hdr = "| workers | runs |"
        for what in ("req/s", "p99", "CPU/req"):
            for x in peers:
                hdr += f" {what} vs {PEER_NAMES[x]} |"
        p(hdr)
        p("|---|---|" + "---:|" * (3 * len(peers)))
        verdicts = []
        for w in workers:
            z = best(w, "ztproxy-full")
            if not z:
                continue
            sets = [("best of each", z, {x: best(w, x) for x in peers})]
            per_run = {}  # (i, peer) -> [ratio per round]
            for run in runs:
                zz = fr.get((w, run, "ztproxy-full"))
                if zz:
                    pv = {x: fr.get((w, run, x)) for x in peers}
                    sets.append((run, zz, pv))
                    for i in range(3):
                        for x in peers:
                            if pv.get(x) and pv[x][i] and zz[i] is not None:
                                per_run.setdefault((i, x), []).append(zz[i] / pv[x][i])
            line = f"| {w} | **median of the rounds** |"
            for i in range(3):
                for x in peers:
                    line += f" **{fmt_med(per_run.get((i, x), []))}** |"
            p(line)
            for label, zv, pv in sets:
                line = f"| {w} | {label} |"
                for i in range(3):
                    for x in peers:
                        line += f" {ratio(zv[i], pv[x][i] if pv.get(x) else None)} |"
                p(line)
            # verdicts on the median of the per-round ratios (each round
            # runs all four back to back, so drift hits them alike)
            targets = [("req/s", 0, "nginx", 1.0, ">="), ("req/s", 0, "haproxy", 1.0, ">="),
                       ("req/s", 0, "nginx-authreq", 2.0, ">="), ("p99", 1, "nginx", 1.0, "<="),
                       ("CPU/req", 2, "nginx", 1.0, "<=")]
            for what, i, x, t, op in targets:
                v = median(per_run.get((i, x), []))
                b = best(w, x)
                if v is None:
                    continue
                bo = f"; best of each {z[i] / b[i]:.2f}" if b and b[i] and z[i] is not None else ""
                met = v >= t if op == ">=" else v <= t
                verdicts.append(f"workers={w}: {what} vs {PEER_NAMES[x]} {v:.2f} "
                                f"(rounds: {fmt_list(per_run[(i, x)])}{bo}) "
                                f"(target {op.replace('>=', '≥').replace('<=', '≤')} {t:.1f}): "
                                f"{'met' if met else '**missed**'}")
        if verdicts:
            p("\nThe same targets on the median of the per-round ratios (a round runs the four "
              "proxies back to back; the best-of ratio compares runs made minutes apart and is "
              "shown for reference). p99 is judged here; where the interleaved runs below exist, "
              "req/s and CPU/req are judged on those (runs seconds apart still see the machine "
              "change speed between them):\n")
            for v in verdicts:
                p(f"- {v}")
        # What the 2.0x target against nginx + auth_request asks of the
        # proxy on this machine: the load client and the upstream share the
        # cores, so their CPU per request caps every proxy's rate.
        for w in workers:
            sh, ar, zc, nc = [], [], [], []
            for r in full_rows:
                if r["workers"] != w or not ok(r):
                    continue
                res = r["r"]
                reqs = res.get("requests_total") or res["requests"]
                if not reqs:
                    continue
                if r["proxy"] == "ztproxy-full":
                    sh.append((res.get("client_cpu_s", 0) * 1e6 + int(r["upstream_cpu_us"])) / reqs)
                    zc.append(cpu_per_req(r))
                elif r["proxy"] == "nginx-authreq":
                    ar.append(res["rps"])
                elif r["proxy"] == "nginx":
                    nc.append(cpu_per_req(r))
            if sh and ar:
                need = NCPU * 1e6 / (2.0 * median(ar)) - median(sh)
                p(f"\nworkers={w}: what 2.0× nginx + auth_request asks here: the load client and "
                  f"the upstream took {median(sh):.1f} µs of CPU per request (median of the ztproxy "
                  f"runs) on the same {NCPU} cores, and nginx + auth_request ran at "
                  f"{fmt(median(ar))} req/s; {fmt(2.0 * median(ar))} req/s would leave the proxy at "
                  f"most **{need:.1f} µs of CPU per request** even with every core busy all the time "
                  f"(ztproxy with the whole pipeline used {fmt(median(zc), 1)}, nginx without any "
                  f"authorization {fmt(median(nc), 1) if nc else '-'}).")
        for w in workers:
            a = full_audit.get(w)
            if a:
                p(f"\nworkers={w}: the audit log got {int(a['audit_lines']):,} lines, "
                  f"{int(a.get('audit_allow') or 0):,} of them allowed by the route's rule `sso-managed`.")

ab_section("full-ab", "ztproxy-full", [x for x in ("nginx", "haproxy", "nginx-authreq")
                                       if any(r["proxy"] == x for r in full_rows)],
           PEER_NAMES if full_rows or full_start else {},
           [("req/s", "nginx", 1.0, ">="), ("req/s", "haproxy", 1.0, ">="),
            ("req/s", "nginx-authreq", 2.0, ">="), ("CPU/req", "nginx", 1.0, "<="),
            ("CPU/req", "haproxy", None, None), ("CPU/req", "nginx-authreq", None, None)], "issue #7")

idle_rows = [r for r in rows if r["mode"] == "idle"]
if idle_rows:
    p("\n## Memory per idle keep-alive mTLS connection\n")
    p("| workers | proxy | idle conns held | failed | dropped by the proxy | RSS before KiB | RSS with conns KiB | KiB / conn |")
    p("|---|---|---:|---:|---:|---:|---:|---:|")
    for w in workers:
        for proxy in proxies:
            r = find(proxy, w, "idle")
            if r is None:
                continue
            if not ok(r):
                p(f"| {w} | {proxy} | {r['status']} | | | | | |")
                continue
            res = r["r"]
            # connections open when the RSS was read (some may have been closed before)
            n = int(r.get("held") or res.get("idle_established", 0))
            b, a = int(r["rss_before"]), int(r["rss_during"])
            per = (a - b) / n if n else None
            p(f"| {w} | {proxy} | {n} | {res.get('idle_failed', 0)} | {res.get('idle_dropped', 0)} | "
              f"{b:,} | {a:,} | {fmt(per, 1)} |")

# Observations the numbers call for, computed, not written by hand.
obs = []
noisy = sorted({f"{r['proxy']} w={r['workers']} {r['mode']}" for r in rows
                if ok(r) and (others_pct(r) or 0) > 10})
if noisy:
    obs.append(f"- Other processes used more than 10% of the machine during {len(noisy)} run(s) "
               f"({', '.join(noisy[:6])}{', ...' if len(noisy) > 6 else ''}): their req/s and "
               "latencies are not comparable; CPU µs/req is the more robust figure.")
for r in rows:
    if not ok(r) or "sides" in r["r"]:
        continue  # the interleaved runs show their failures in their own table
    res = r["r"]
    name = f"{r['proxy']} workers={r['workers']} {r['mode']}"
    if r["mode"] == "resume" and res["handshakes"] and res["resumed_frac"] < 0.9:
        obs.append(f"- {name}: only {100 * res['resumed_frac']:.0f}% of the handshakes were resumed. "
                   "ztload offers the newest ticket the server sent and uses each TLS 1.3 ticket "
                   "once (as OpenSSL and browsers do); around 50% means the server sends no new "
                   "ticket on a resumed connection.")
    if res["errors"] or res["non_2xx"]:
        kinds = ", ".join(f"{k}={v}" for k, v in res["error_kinds"].items() if v)
        obs.append(f"- {name}: {res['errors']} errors ({kinds or 'none'}), {res['non_2xx']} non-2xx responses.")
    if r["mode"] == "idle" and (res.get("idle_failed") or res.get("idle_dropped")):
        obs.append(f"- {name}: {res.get('idle_failed')} idle connections failed, "
                   f"{res.get('idle_dropped')} were dropped while held.")
if obs:
    p("\n## Observations\n")
    out.extend(obs)

p("\n## Command lines\n")
p("Each row above is one `ztload ... --json` run; the proxy CPU is the utime+stime")
p("of all its processes (from `/proc/PID/stat`) over that run, divided by the")
p("requests completed in that run (warm-up included). `$TMP` is the temporary")
p("directory holding the certificates and configurations.\n")
p("```")
seen = set()
for r in rows:
    if "cmd" in r and r["cmd"] not in seen:
        seen.add(r["cmd"])
        p(f"# {r['proxy']} workers={r['workers']} {r['label']}")
        # the session cookie is a credential: not in the report
        p(re.sub(r"--header Cookie: (__Host-zt_session)=\S+", r"--header 'Cookie: \1=$SESSION'",
                 r["cmd"].replace(tmp, "$TMP")))
p("```")
if os.path.exists(diag) and os.path.getsize(diag) > 0:
    p("\n## Diagnostics printed by the proxies\n")
    p("```")
    p(open(diag).read().rstrip())
    p("```")
print("\n".join(out))
PYEOF
cat "$TMP/report.md"
# Keep the sections the other scripts wrote (between their markers), and notes.
for sec in feed-reload-bench reload-bench soak notes; do
    if [[ -f $RESULTS ]] && grep -q "<!-- $sec:begin -->" "$RESULTS"; then
        { echo; sed -n "/<!-- $sec:begin -->/,/<!-- $sec:end -->/p" "$RESULTS"; } >>"$TMP/report.md"
    fi
done
cp "$TMP/report.md" "$RESULTS"
log "results written to $RESULTS"
# Everything that failed, once more at the end, and a non-zero exit.
while read -r line; do
    FAILED+=("$line")
done < <(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r.get("status") in ("failed", "crashed") and not r["mode"].startswith("full"):
        print("%s workers=%s %s: %s %s" % (r["proxy"], r["workers"], r["label"], r["status"], r.get("error", "")))' "$JSONL")
if ((${#FAILED[@]})); then
    log "FAILED (${#FAILED[@]}):"
    printf '  %s\n' "${FAILED[@]}" >&2
    exit 1
fi
