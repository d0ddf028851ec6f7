#!/usr/bin/env bash
# bench/soak.sh: a mixed load on the whole-pipeline ztproxy for SOAK_MINUTES
# (default 10), sampling its memory (VmRSS) and open file descriptors every
# SOAK_SAMPLE seconds (issue 7: "RSS after a 10-minute mixed run: the same
# as at 1 minute, within noise").
#
# One whole-pipeline ztproxy (bench/fullpipe.sh: mutual TLS, a logged-in
# session bound to the certificate, device trust with a 1,000-device
# inventory and a posture report, 1,020 rules, directory, GeoIP, audit log,
# identity headers and assertion) in front of one nginx upstream, all on
# 127.0.0.1. Six bench/ztload processes run side by side for the whole
# period, each at its own fixed rate (open loop):
#   keepalive  keep-alive requests with the session cookie (allowed)
#   newconn    a new connection and full mTLS handshake per request (allowed)
#   resume     a resumed TLS session per request (allowed)
#   denied     keep-alive requests to /admin0/soak, which a rule denies (403)
#   no-route   a host no route serves (404), server certificate not checked
#   bad-cert   an expired device certificate (the handshake must fail)
# The server-side TLS session cache is bounded to FP_SESSION_CACHE_SIZE
# sessions (default here 1,000; ztproxy's own default is 20,480 at ~11.5 KiB
# each): the newconn stream alone adds SOAK_RATE_NEWCONN x 60 = 1,200 new
# sessions a minute, so the cache is full within the first minute and RSS
# after minute 1 measures leaks, not the cache filling by design (issue 7).
# Keep-alive streams spread their requests over their connections in turn
# (each of the 16 keepalive connections carries ~19 requests/s), so none is
# idle for anywhere near timeouts.keepalive (300 s, FP_KEEPALIVE): a
# connection the proxy closes between requests is unexpected (the
# "idle closes" column, ztload's idle_closed, and closed_idle among errors).
# The report gives RSS at 1 minute, at the end and its maximum, the fd count
# before, at the end of and after the load, every stream's totals and
# latency, and the least-squares slope of RSS over minutes 1..N with its
# standard error: growth or noise.
#
# Everything lives in a temporary directory removed at exit (kept with
# BENCH_KEEP=1); every process started here is stopped by PID, also on
# failure or ^C. A failed step exits non-zero with its output; so does a
# stream whose outcome is not the expected one (after the report is
# written). The report goes to stdout and replaces the "Soak" section of
# bench/RESULTS.md (between the soak markers; run.sh keeps it).
#
# Settings (environment): SOAK_MINUTES (10), SOAK_SAMPLE (s, 10),
# SOAK_WORKERS (2), SOAK_RATE_KEEPALIVE (300), SOAK_RATE_NEWCONN (20),
# SOAK_RATE_RESUME (40), SOAK_RATE_DENIED (20), SOAK_RATE_NOROUTE (10),
# SOAK_RATE_BADCERT (5) (requests/s), SOAK_PORT_BASE (29580),
# FP_SESSION_CACHE_SIZE (1000), FP_KEEPALIVE (300s), FP_LOG_LEVEL (warn;
# debug logs why each connection closed between requests), BENCH_RESULTS,
# BENCH_KEEP.
set -uo pipefail

ROOT=$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
ZTPROXY=${ZTPROXY:-$BUILD_DIR/ztproxy}
ZTLOAD=${ZTLOAD:-}
NGINX=${NGINX:-/usr/sbin/nginx}
MINUTES=${SOAK_MINUTES:-10}
SAMPLE=${SOAK_SAMPLE:-10}
WORKERS=${SOAK_WORKERS:-2}
R_KA=${SOAK_RATE_KEEPALIVE:-300}
R_NEW=${SOAK_RATE_NEWCONN:-20}
R_RES=${SOAK_RATE_RESUME:-40}
R_DENY=${SOAK_RATE_DENIED:-20}
R_404=${SOAK_RATE_NOROUTE:-10}
R_BAD=${SOAK_RATE_BADCERT:-5}
PORT_BASE=${SOAK_PORT_BASE:-29580}
# Read by fp_write_conf (bench/fullpipe.sh).
FP_SESSION_CACHE_SIZE=${FP_SESSION_CACHE_SIZE:-1000}
FP_KEEPALIVE=${FP_KEEPALIVE:-300s}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/RESULTS.md}
HOST=app.test
SSO_HOST=sso.test
PIDS=()

log() { printf '[soak %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=fullpipe.sh
. "$ROOT/bench/fullpipe.sh"
trap fp_cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

[[ $MINUTES =~ ^[0-9]+$ ]] && ((MINUTES >= 1)) || die "SOAK_MINUTES must be a whole number of minutes >= 1"
[[ $SAMPLE =~ ^[0-9]+$ ]] && ((SAMPLE >= 1)) || die "SOAK_SAMPLE must be a whole number of seconds >= 1"
[[ $FP_SESSION_CACHE_SIZE =~ ^[0-9]+$ ]] || die "FP_SESSION_CACHE_SIZE must be a whole number"
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
fp_standalone_setup "$WORKERS" "$PORT_BASE"
SECS=$((MINUTES * 60))

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$ZT_PID/status" 2>/dev/null || echo 0; }
fd_count() { find "/proc/$ZT_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
cpu_ticks() {
    local stat rest
    stat=$(cat "/proc/$ZT_PID/stat" 2>/dev/null) || { echo 0; return; }
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    echo $((f[11] + f[12]))
}

# name|expected outcome|rate|ztload arguments (cookie added to all but bad-cert's)
KEY=$CERTS/devices/bench-1.key
CRT=$CERTS/devices/bench-1.crt
COMMON=(--connect "127.0.0.1:$ZT_PORT" -t 1 -d "$SECS" --warmup 0 --json)
declare -A SARGS=() SEXPECT=() SRATE=()
STREAMS=(keepalive newconn resume denied no-route bad-cert)
SARGS[keepalive]="--host $SSO_HOST --cert $CRT --key $KEY --ca $CERTS/ca.crt --mode keepalive -c 16"
SARGS[newconn]="--host $SSO_HOST --cert $CRT --key $KEY --ca $CERTS/ca.crt --mode newconn -c 4"
SARGS[resume]="--host $SSO_HOST --cert $CRT --key $KEY --ca $CERTS/ca.crt --mode resume -c 4"
SARGS[denied]="--host $SSO_HOST --path /admin0/soak --cert $CRT --key $KEY --ca $CERTS/ca.crt --mode keepalive -c 2"
SARGS[no-route]="--host no-route.test --insecure --cert $CRT --key $KEY --mode keepalive -c 2"
SARGS[bad-cert]="--host $SSO_HOST --cert $CERTS/devices/bench-2.crt --key $CERTS/devices/bench-2.key --ca $CERTS/ca.crt --mode newconn -c 2"
SEXPECT=([keepalive]=2xx [newconn]=2xx [resume]=2xx [denied]=403 [no-route]=404 [bad-cert]=handshake-refused)
SRATE=([keepalive]=$R_KA [newconn]=$R_NEW [resume]=$R_RES [denied]=$R_DENY [no-route]=$R_404 [bad-cert]=$R_BAD)

: >"$TMP/samples"
sleep 1
echo "0 $(rss_kib) $(fd_count)" >"$TMP/before"
CPU0=$(cpu_ticks)
declare -A SPID=()
for s in "${STREAMS[@]}"; do
    # shellcheck disable=SC2206 # the arguments above have no spaces in them
    args=(${SARGS[$s]})
    [[ $s == bad-cert ]] || args+=(--header "Cookie: $FP_COOKIE")
    "$ZTLOAD" "${COMMON[@]}" "${args[@]}" --rate "${SRATE[$s]}" >"$TMP/$s.json" 2>"$TMP/$s.err" &
    SPID[$s]=$!
    PIDS+=("${SPID[$s]}")
done
T0=$EPOCHREALTIME
log "soak: $MINUTES min, streams ${STREAMS[*]}, ztproxy pid $ZT_PID (workers $WORKERS)"

# Sample until every stream has finished.
next=$SAMPLE
while :; do
    running=0
    for s in "${STREAMS[@]}"; do kill -0 "${SPID[$s]}" 2>/dev/null && running=1; done
    ((running)) || break
    kill -0 "$ZT_PID" 2>/dev/null || { tail -n 40 "$TMP/zt/stderr.log" >&2; die "ztproxy died during the soak"; }
    el=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%d", b - a}')
    if ((el >= next)); then
        echo "$el $(rss_kib) $(fd_count)" >>"$TMP/samples"
        ((el % 60 < SAMPLE)) && log "  ${el}s: RSS $(rss_kib) KiB, $(fd_count) fds"
        next=$((next + SAMPLE))
    fi
    sleep 0.5
done
CPU1=$(cpu_ticks)
rc_all=0
for s in "${STREAMS[@]}"; do
    wait "${SPID[$s]}"
    rc=$?
    if [[ $rc != 0 || ! -s $TMP/$s.json ]]; then
        log "stream $s: ztload failed (exit $rc):"
        cat "$TMP/$s.err" >&2
        rc_all=1
    fi
done
((rc_all == 0)) || die "a load stream failed"
kill -0 "$ZT_PID" 2>/dev/null || { tail -n 40 "$TMP/zt/stderr.log" >&2; die "ztproxy died at the end of the soak"; }
sleep 2 # connections of the streams close
echo "$(rss_kib) $(fd_count)" >"$TMP/after"
AUDIT_LINES=$(wc -l <"$TMP/zt/audit.log")
EXPIRED_LOGGED=$(grep -c 'handshake refused.*certificate has expired' "$TMP/zt/stderr.log")
CPU_S=$(awk -v t=$((CPU1 - CPU0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz}')

CMD="SOAK_MINUTES=$MINUTES SOAK_SAMPLE=$SAMPLE SOAK_WORKERS=$WORKERS SOAK_RATE_KEEPALIVE=$R_KA SOAK_RATE_NEWCONN=$R_NEW SOAK_RATE_RESUME=$R_RES SOAK_RATE_DENIED=$R_DENY SOAK_RATE_NOROUTE=$R_404 SOAK_RATE_BADCERT=$R_BAD FP_SESSION_CACHE_SIZE=$FP_SESSION_CACHE_SIZE FP_KEEPALIVE=$FP_KEEPALIVE bench/soak.sh"
{
    for s in "${STREAMS[@]}"; do
        line="ztload --connect 127.0.0.1:PORT -t 1 -d $SECS --warmup 0 --json ${SARGS[$s]} --rate ${SRATE[$s]}"
        [[ $s == bad-cert ]] || line+=" --header 'Cookie: __Host-zt_session=\$SESSION'"
        echo "# $s (expected: ${SEXPECT[$s]})"
        echo "${line//$TMP/\$TMP}"
    done
} >"$TMP/cmdlines"
EXPECTS=""
for s in "${STREAMS[@]}"; do EXPECTS+="$s=${SEXPECT[$s]} "; done
python3 - "$TMP" "$CMD" "$START_DATE" "$MINUTES" "$EXPECTS" "$AUDIT_LINES" "$CPU_S" "$WORKERS" "$EXPIRED_LOGGED" \
    "$FP_SESSION_CACHE_SIZE" "$R_NEW" "$FP_KEEPALIVE" <<'EOF' || die "cannot write the report"
import json, math, os, sys
(tmp, cmd, start, minutes, expects, audit_lines, cpu_s, workers, expired_logged, cache_size,
 rate_new, keepalive) = sys.argv[1:]
cache_size, new_per_min = int(cache_size), int(float(rate_new) * 60)
expect = dict(e.split("=", 1) for e in expects.split())
streams = list(expect)
res = {s: json.load(open("%s/%s.json" % (tmp, s))) for s in streams}
samples = [tuple(int(x) for x in l.split()) for l in open(tmp + "/samples") if l.strip()]
b_t, b_rss, b_fd = (int(x) for x in open(tmp + "/before").read().split())
a_rss, a_fd = (int(x) for x in open(tmp + "/after").read().split())
load = open("/proc/loadavg").read().split()[:3]

def outcome(s, r):
    st = r["status"]
    if r.get("idle_closed", 0):
        # every keep-alive connection carries a request every few tens of ms
        return False
    if expect[s] == "2xx":
        return r["ok_2xx"] > 0 and r["non_2xx"] == 0 and r["errors"] == 0
    if expect[s] in ("403", "404"):
        # a 4xx answer; the proxy closes the connection after its own error pages
        return r["ok_2xx"] == 0 and st["4xx"] > 0 and st["4xx"] == r["non_2xx"]
    if expect[s] == "handshake-refused":
        # TLS 1.3: the client sees the refusal on its first read (an I/O error)
        return (r["ok_2xx"] == 0 and r["non_2xx"] == 0 and r["errors"] > 0
                and int(expired_logged) > 0)
    return False

o = ["<!-- soak:begin -->", "## Soak: %s minutes of mixed load on the whole pipeline" % minutes, "",
     "Generated by `bench/soak.sh` on %s (%d CPUs, load average %s at the end)." %
     (start, os.cpu_count(), " ".join(load)), "",
     "One whole-pipeline ztproxy (%s workers; mutual TLS, `auth: session` with the cookie of a "
     "real login bound to the certificate, device trust with a 1,000-device inventory and a "
     "posture report, 1,020 rules, directory, GeoIP, audit log to a file, identity headers and "
     "assertion). Six ztload processes run side by side for the whole period, each at a fixed "
     "rate (open loop); memory (VmRSS) and open descriptors of the proxy are sampled every "
     "few seconds. RSS with 10,000 idle keep-alive connections is measured by `bench/run.sh` "
     "(section \"Memory per idle keep-alive mTLS connection\")." % workers, "",
     "The server's TLS session cache is bounded to %d sessions (`tls.session_cache_size`; "
     "ztproxy's default is 20,480, at about 11.5 KiB each): the newconn stream alone adds "
     "%d new sessions a minute, %s: growth of RSS after the first minute is not the cache "
     "filling by design. `timeouts.keepalive` is %s; keep-alive streams use their connections "
     "in turn, so a connection the proxy closes between requests (\"idle closes\") is "
     "unexpected." % (cache_size, new_per_min,
                      "so the cache is full within the first minute" if new_per_min >= cache_size
                      else "**so the cache is NOT full after the first minute (its filling "
                      "shows as growth)**", keepalive), "",
     "| stream | expected | rate /s | requests | 2xx | 4xx | 5xx | errors | error kinds | idle closes | p50 µs | p99 µs | max µs | as expected |",
     "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
unexpected = []
total_req = total_err = 0
for s in streams:
    r = res[s]
    l = r["latency_us"]
    kinds = ", ".join("%s=%d" % (k, v) for k, v in r["error_kinds"].items() if v) or "–"
    good = outcome(s, r)
    if not good:
        unexpected.append(s)
    n = r.get("requests_total") or r["requests"]
    total_req += n
    total_err += r["errors"]
    o.append("| %s | %s | %.0f | %d | %d | %d | %d | %d | %s | %d | %d | %d | %d | %s |" % (
        s, expect[s], r["rate"], n, r["ok_2xx"], r["status"]["4xx"], r["status"]["5xx"], r["errors"],
        kinds, r.get("idle_closed", 0), l["p50"], l["p99"], l["max"], "yes" if good else "**no**"))
o.append("")
o.append("Total: %d requests (handshake attempts for bad-cert), %d errors (the bad-cert stream's "
         "refused handshakes included); ztproxy used %s s of CPU, logged %s handshakes refused "
         "with \"certificate has expired\", and its audit log got %s lines." %
         (total_req, total_err, cpu_s, expired_logged, audit_lines))
if unexpected:
    o.append("")
    o.append("**Not as expected: %s.**" % ", ".join(unexpected))

# Memory.
during = [x for x in samples if x[0] > 0]
def at(t):
    return min(during, key=lambda x: abs(x[0] - t)) if during else None
m1 = at(60)
end = during[-1] if during else None
mx = max(during, key=lambda x: x[1]) if during else None
o += ["", "| | time s | RSS KiB | open fds |", "|---|---:|---:|---:|",
      "| before the load | – | %d | %d |" % (b_rss, b_fd)]
if m1:
    o.append("| at 1 minute (the sample nearest 60 s) | %d | %d | %d |" % m1)
if end:
    o.append("| at the end | %d | %d | %d |" % end)
if mx:
    o.append("| maximum RSS | %d | %d | %d |" % mx)
o.append("| 2 s after the load | – | %d | %d |" % (a_rss, a_fd))
fit = [x for x in during if x[0] >= 60]
o.append("")
if len(fit) >= 3 and fit[-1][0] > fit[0][0]:
    xs = [x[0] / 60.0 for x in fit]
    ys = [float(x[1]) for x in fit]
    n = len(xs)
    mx_, my_ = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx_) ** 2 for x in xs)
    slope = sum((x - mx_) * (y - my_) for x, y in zip(xs, ys)) / sxx
    resid = [y - (my_ + slope * (x - mx_)) for x, y in zip(xs, ys)]
    sd = math.sqrt(sum(e * e for e in resid) / (n - 2)) if n > 2 else 0.0
    se = sd / math.sqrt(sxx) if sxx > 0 else float("inf")
    span = xs[-1] - xs[0]
    growth = slope * span
    base = m1[1] if m1 else ys[0]
    if slope > 0 and slope > 3 * se and growth > 0.01 * base:
        verdict = ("**RSS grows**: %.1f KiB/min (± %.1f), %.0f KiB over minutes %.0f..%.0f, more than "
                   "3 standard errors and more than 1%% of the 1-minute RSS." % (slope, se, growth, xs[0], xs[-1]))
    else:
        verdict = ("No growth beyond noise: the slope is within 3 standard errors of zero or the "
                   "fitted change over the run is under 1%% of the 1-minute RSS (%.0f KiB)." % base)
    o.append("Least-squares fit of RSS over minutes %.0f..%.0f (%d samples): slope **%.1f KiB/min** "
             "(standard error %.1f), residual standard deviation %.0f KiB, fitted change over the "
             "run %.0f KiB. %s" % (xs[0], xs[-1], n, slope, se, sd, growth, verdict))
else:
    o.append("Too short for a fit of RSS over minutes 1..N (fewer than 3 samples after the first "
             "minute): run with SOAK_MINUTES of 3 or more.")
o.append("")
o.append("Open descriptors: %d before the load, %d at its end, %d two seconds after it."
         % (b_fd, end[2] if end else 0, a_fd))
o.append("")
o.append("<details><summary>RSS and fds samples (seconds, KiB, fds)</summary>")
o.append("")
o.append("```")
o.append(" ".join("%d:%d:%d" % x for x in samples))
o.append("```")
o.append("</details>")
o += ["", "Command (`SOAK_*` settings in the script's header), and the six streams it runs "
      "(the cookie is a credential: not printed):", "", "```", cmd, open(tmp + "/cmdlines").read().rstrip(),
      "```", "<!-- soak:end -->", ""]
open(tmp + "/report.md", "w").write("\n".join(o))
open(tmp + "/unexpected", "w").write(" ".join(unexpected))
EOF
cat "$TMP/report.md"
fp_results_section "$RESULTS" soak "$TMP/report.md" || die "cannot update $RESULTS"
log "results in $RESULTS"
UNEXPECTED=$(cat "$TMP/unexpected")
[[ -z $UNEXPECTED ]] || die "streams not as expected: $UNEXPECTED (see the report)"
