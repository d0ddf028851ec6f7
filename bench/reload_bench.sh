#!/usr/bin/env bash
# bench/reload_bench.sh: reload under load (issue 7: "rules, directory,
# inventory and GeoIP reloaded every second during a run: no failed request
# and no p99 spike beyond 2x the steady figure").
#
# One whole-pipeline ztproxy (bench/fullpipe.sh: mutual TLS, a logged-in
# session bound to the certificate, device trust with a 1,000-device
# inventory and a posture report, 1,020 rules, directory, GeoIP, audit log,
# identity headers and assertion) in front of one nginx upstream, all on
# 127.0.0.1. bench/ztload sends keep-alive requests with the session cookie
# at a fixed rate (open loop: latency from the scheduled send time, so a
# pause is charged to every request it delayed). Phases alternate against
# the same proxy process:
#   steady  nothing changes
#   reload  every RB_INTERVAL seconds: the rules file, the directory file,
#           the inventory file and the GeoIP database are each replaced
#           (rename of a fresh copy) by their other variant - a real change
#           every time (one rule's path, the directory's version and one
#           user's groups, one device's status, one network's ASN) - and
#           the proxy gets a SIGHUP (a full configuration reload)
# and p50 / p99 / max, errors and non-2xx are reported per phase, with the
# reloads the proxy logged in each phase.
#
# Everything lives in a temporary directory removed at exit (kept with
# BENCH_KEEP=1); every process started here is stopped by PID, also on
# failure or ^C. Any failure exits non-zero with the failing step's output.
# The report goes to stdout and replaces the "Reload under load" section of
# bench/RESULTS.md (between the reload-bench markers; run.sh keeps it).
#
# Settings (environment): RB_PHASE (s per phase, 20), RB_ROUNDS (3),
# RB_RATE (req/s, 1000), RB_CONNS (32), RB_WORKERS (2), RB_INTERVAL (s, 1),
# RB_RELOAD (what the reload phases do: "files sighup", or "files" or
# "sighup" alone to tell their costs apart), RB_PORT_BASE (29560),
# BENCH_RESULTS, BENCH_KEEP.
set -uo pipefail

ROOT=$(cd -- "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
ZTPROXY=${ZTPROXY:-$BUILD_DIR/ztproxy}
ZTLOAD=${ZTLOAD:-}
NGINX=${NGINX:-/usr/sbin/nginx}
PHASE=${RB_PHASE:-20}
ROUNDS=${RB_ROUNDS:-3}
RATE=${RB_RATE:-1000}
CONNS=${RB_CONNS:-32}
WORKERS=${RB_WORKERS:-2}
INTERVAL=${RB_INTERVAL:-1}
RELOAD=${RB_RELOAD:-"files sighup"}
PORT_BASE=${RB_PORT_BASE:-29560}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/RESULTS.md}
HOST=app.test
SSO_HOST=sso.test
PIDS=()

log() { printf '[reload-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=fullpipe.sh
. "$ROOT/bench/fullpipe.sh"
trap fp_cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
FP_LOG_LEVEL=info # the reload lines are counted from the proxy's log
fp_standalone_setup "$WORKERS" "$PORT_BASE"
ERRLOG=$TMP/zt/stderr.log

# Every INTERVAL seconds until killed: swap the four files to their other
# variant (a fresh copy renamed into place), then SIGHUP the proxy.
reloader() {
    local v=b n=0 f
    while :; do
        if [[ " $RELOAD " == *" files "* ]]; then
            for f in rules.json inventory.json directory.json; do
                cp "$FP_DIR/${f%.json}-$v.json" "$FP_DIR/$f.tmp" && mv "$FP_DIR/$f.tmp" "$FP_DIR/$f"
            done
            cp "$FP_DIR/geo-$v.mmdb" "$FP_DIR/geo.mmdb.tmp" && mv "$FP_DIR/geo.mmdb.tmp" "$FP_DIR/geo.mmdb"
        fi
        if [[ " $RELOAD " == *" sighup "* ]]; then
            kill -HUP "$ZT_PID" 2>/dev/null || exit 1
        fi
        n=$((n + 1))
        echo "$n" >"$TMP/rewrites"
        [[ $v == b ]] && v=a || v=b
        sleep "$INTERVAL"
    done
}

lines() { wc -l <"$ERRLOG"; }

: >"$TMP/rows"
CMDLINE="ztload --connect 127.0.0.1:PORT --host $SSO_HOST --cert bench-1.crt --key bench-1.key --ca ca.crt --header 'Cookie: __Host-zt_session=\$SESSION' --mode keepalive --rate $RATE -c $CONNS -t 1 -d $PHASE --warmup 1 --json"
for ((round = 1; round <= ROUNDS; round++)); do
    for phase in steady reload; do
        l0=$(lines)
        rpid=
        echo 0 >"$TMP/rewrites"
        if [[ $phase == reload ]]; then
            reloader &
            rpid=$!
            PIDS+=("$rpid")
        fi
        log "round $round, $phase: ${PHASE}s at $RATE req/s over $CONNS keep-alive connections"
        out=$("$ZTLOAD" "${LOADARGS[@]}" --mode keepalive --rate "$RATE" -c "$CONNS" -t 1 \
            -d "$PHASE" --warmup 1 --json 2>"$TMP/ztload.err")
        rc=$?
        rw=0
        if [[ -n $rpid ]]; then
            fp_stop_pid "$rpid"
            rw=$(cat "$TMP/rewrites")
        fi
        sleep 1.5 # a reload still in flight is counted in this phase
        l1=$(lines)
        if ! kill -0 "$ZT_PID" 2>/dev/null; then
            tail -n 30 "$ERRLOG" >&2
            die "ztproxy died during round $round ($phase)"
        fi
        if [[ $rc != 0 || -z $out ]]; then
            cat "$TMP/ztload.err" >&2
            die "ztload failed (exit $rc) in round $round ($phase)"
        fi
        python3 -c 'import json,sys; r=json.loads(sys.argv[1]); l=r["latency_us"]; print("    %s: %d req, 2xx %d, non-2xx %d, errors %d, p50 %d p99 %d max %d us" % (sys.argv[2], r["requests"], r["ok_2xx"], r["non_2xx"], r["errors"], l["p50"], l["p99"], l["max"]))' "$out" "$phase" >&2
        echo "$round $phase $rw $l0 $l1 $out" >>"$TMP/rows"
    done
done

# The reload lines the proxy logged, per phase.
CMD="RB_PHASE=$PHASE RB_ROUNDS=$ROUNDS RB_RATE=$RATE RB_CONNS=$CONNS RB_WORKERS=$WORKERS RB_INTERVAL=$INTERVAL RB_RELOAD=\"$RELOAD\" bench/reload_bench.sh"
python3 - "$TMP/rows" "$ERRLOG" "$CMD" "$CMDLINE" "$START_DATE" "$TMP/report.md" "$TMP/verdict" "$RELOAD" <<'EOF' || die "cannot write the report"
import json, os, re, statistics, sys
rows_path, errlog, cmd, cmdline, start, out_path, verdict_path, what = sys.argv[1:]
log = open(errlog, errors="replace").read().splitlines()
kinds = [("SIGHUP", re.compile(r"SIGHUP: reloading")),
         ("reload done", re.compile(r"reload done")),
         ("refused", re.compile(r"^(?!.*handshake refused).*refused")),
         ("rules", re.compile(r"policy: rules .* reloaded:")),
         ("directory", re.compile(r"policy: directory .* loaded")),
         ("GeoIP", re.compile(r"policy: GeoIP database .* loaded")),
         ("inventory", re.compile(r"device trust: inventory .* loaded"))]
rows = []
for line in open(rows_path):
    rnd, phase, rw, l0, l1, js = line.split(" ", 5)
    seg = log[int(l0):int(l1)]
    counts = {k: sum(1 for s in seg if rx.search(s)) for k, rx in kinds}
    rows.append((int(rnd), phase, int(rw), counts, json.loads(js)))
load = open("/proc/loadavg").read().split()[:3]
o = ["<!-- reload-bench:begin -->", "## Reload under load (whole pipeline)", "",
     "Generated by `bench/reload_bench.sh` on %s (%d CPUs, load average %s at the end)."
     % (start, os.cpu_count(), " ".join(load)), "",
     "One whole-pipeline ztproxy (mutual TLS, `auth: session` with the cookie of a real login bound "
     "to the certificate, device trust with a 1,000-device inventory and a posture report, "
     "1,020 rules, directory, GeoIP, audit log to a file, identity headers and assertion) "
     "under keep-alive requests at a fixed rate (open loop: latency from the scheduled send "
     "time, so a pause is charged to every request it delayed). *steady*: nothing changes. "
     "*reload*: every second the rules file (one rule toggled), the directory file, the "
     "inventory file and the GeoIP database are replaced by another variant (rename of a fresh "
     "copy) and the proxy gets a SIGHUP (full configuration reload), as selected by "
     "`RB_RELOAD` (%s). The reload columns count the proxy's own log lines in the phase: "
     "*SIGHUP reloads* completed (each re-reads the configuration, certificates, CRL, rules, "
     "directory and GeoIP database and reopens the logs), reloads *refused*, and the loads "
     "done by the file watchers between SIGHUPs (a file changed since the last reload: "
     "rules, directory, GeoIP; the inventory is always reloaded by its own watcher)." % what, "",
     "| round | phase | changes | SIGHUP reloads | refused | watcher: rules | directory | GeoIP | inventory loads | req/s | 2xx | non-2xx | errors | late | p50 µs | p99 µs | p99.9 µs | max µs |",
     "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for rnd, phase, rw, c, r in rows:
    l = r["latency_us"]
    o.append("| %d | %s | %s | %d | %d | %d | %d | %d | %d | %.0f | %d | %d | %d | %d | %d | %d | %d | %d |" % (
        rnd, phase, rw if phase == "reload" else "–", c["reload done"], c["refused"], c["rules"],
        c["directory"], c["GeoIP"], c["inventory"], r["rps"], r["ok_2xx"], r["non_2xx"], r["errors"],
        r.get("late", 0), l["p50"], l["p99"], l["p999"], l["max"]))
steady = [r["latency_us"]["p99"] for _, p, _, _, r in rows if p == "steady"]
reload = [r["latency_us"]["p99"] for _, p, _, _, r in rows if p == "reload"]
failed = sum(r["errors"] + r["non_2xx"] for *_, r in rows)
refused = sum(c["refused"] for _, _, _, c, _ in rows)
med = statistics.median(steady) if steady else 0
worst = max(reload) if reload else 0
ratio = worst / med if med else float("inf")
per_round = []
for rnd in sorted({x[0] for x in rows}):
    s = [r["latency_us"]["p99"] for n, p, _, _, r in rows if n == rnd and p == "steady"]
    z = [r["latency_us"]["p99"] for n, p, _, _, r in rows if n == rnd and p == "reload"]
    if s and z and s[0]:
        per_round.append("%.2f" % (z[0] / s[0]))
ok_fail = failed == 0
ok_p99 = ratio <= 2.0
o += ["",
      "Failed requests (errors + non-2xx) over all phases: **%d** (target 0: %s). "
      "Worst reload-phase p99 %d µs ÷ median steady p99 %d µs = **%.2f** (target ≤ 2: %s); "
      "per round, reload p99 ÷ the steady p99 before it: %s. Reloads refused: %d."
      % (failed, "met" if ok_fail else "**missed**", worst, med, ratio,
         "met" if ok_p99 else "**missed**", ", ".join(per_round) or "–", refused),
      "", "Command (`RB_*` settings in the script's header):", "", "```", cmd,
      "# each phase, against the proxy (the cookie is a credential: not printed):", cmdline,
      "```", "<!-- reload-bench:end -->", ""]
open(out_path, "w").write("\n".join(o))
reloads = sum(c["reload done"] for _, p, _, c, _ in rows if p == "reload")
loads = sum(c["rules"] + c["directory"] + c["GeoIP"] + c["inventory"]
            for _, p, _, c, _ in rows if p == "reload")
open(verdict_path, "w").write("%d %d %d\n" % (reloads, loads, refused))
EOF
cat "$TMP/report.md"
read -r n_reloads n_loads n_refused <"$TMP/verdict"
# A reload phase in which nothing was reloaded measured nothing: fail loudly.
if { [[ " $RELOAD " == *" sighup "* ]] && ((n_reloads == 0)); } ||
    { [[ " $RELOAD " == *" files "* ]] && ((n_loads == 0)); }; then
    grep -iE 'reload|refused|error' "$ERRLOG" | tail -n 20 >&2
    die "the proxy logged $n_reloads completed SIGHUP reloads and $n_loads file loads in the reload phases: nothing was measured"
fi
((n_refused == 0)) || log "warning: the proxy refused $n_refused reloads (see the report)"
fp_results_section "$RESULTS" reload-bench "$TMP/report.md" || die "cannot update $RESULTS"
log "results in $RESULTS"
