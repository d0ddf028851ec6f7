#!/usr/bin/env python3
"""ab_interleave.py - keep-alive loads on two or more proxies, run in turns.

    ab_interleave.py --ztload PATH --side NAME PIDS ARGS_JSON --side ... \
        [--order NAME,NAME,...] [--warmup S] [--cycles N] [--slice S] [--gap S]

Each --side is one ztload (ARGS_JSON: its arguments as a JSON list, without
--warmup, -d and --json) against a proxy whose processes are PIDS
(comma-separated: every process whose CPU counts for it; two sides may name
the same process). All the ztload processes start at once with the same
measured duration and warm up together. From then on exactly one runs at a
time: the others are stopped (SIGSTOP), their connections open and idle. A
cycle gives each side, in --order, [SLICE running] then [GAP with nobody
running]: the gap lets the side that just ran finish what it queued (the
audit writer hands a batch on at least every 100 ms) before the next starts,
so no side pays for another. Slices are timed against the monotonic clock
(no drift) and every side gets the same running time, so the ratio of two
sides' request counts is the ratio of their throughputs. A slow phase of
the machine longer than a cycle hits every side alike, which runs made
seconds apart cannot promise.

CPU: the user+sys ticks (/proc/PID/stat) of a side's processes from the
start of its slice to the start of the next side's (its gap included) are
that side's. Processes serving two sides (one proxy, two routes) are split
that way too.

Prints one JSON object: "sides" (name -> the ztload result, running
seconds, CPU ticks, and from them "rps", requests per second of running
time, and "cpu_us_per_req"), clk_tck and the settings. Latency figures of
these runs mean nothing (a request can be in flight while its client is
stopped): only request counts and CPU are read from them.

Interrupted (SIGINT, SIGTERM), it resumes and stops its ztload processes
before exiting, so that none is left stopped.
"""
import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time


def ticks(pids):
    t = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone: bench/run.sh notices a dead proxy itself
        t += int(rest[11]) + int(rest[12])  # utime, stime: fields 14 and 15
    return t


class Interrupted(Exception):
    pass


def on_signal(sig, frame):
    raise Interrupted(signal.Signals(sig).name)


def parse_side(name, pids, args):
    """(pids, argv) of one --side, or exit with what is wrong."""
    try:
        pl = [int(p) for p in pids.split(",") if p]
    except ValueError:
        pl = []
    if not pl or any(p <= 0 for p in pl):
        sys.exit("ab_interleave: --side %s: PIDS must be positive process ids, comma-separated, "
                 "not %r" % (name, pids))
    try:
        argv = json.loads(args)
    except ValueError as e:
        sys.exit("ab_interleave: --side %s: ARGS_JSON is not JSON (%s)" % (name, e))
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        sys.exit("ab_interleave: --side %s: ARGS_JSON must be a list of strings" % name)
    for a in argv:
        if a in ("--warmup", "-d", "--duration", "--json"):
            sys.exit("ab_interleave: --side %s: ARGS_JSON must not hold %s (set here)" % (name, a))
    return pl, argv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ztload", required=True)
    ap.add_argument("--side", nargs=3, action="append", metavar=("NAME", "PIDS", "ARGS_JSON"),
                    required=True)
    ap.add_argument("--order", help="comma-separated side names (default: as given)")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--slice", type=float, default=0.5)
    ap.add_argument("--gap", type=float, default=0.15)
    o = ap.parse_args()
    if not all(math.isfinite(x) for x in (o.slice, o.gap, o.warmup)) or \
            o.cycles < 1 or o.slice <= 0 or o.gap < 0 or o.warmup < 0:
        sys.exit("ab_interleave: need cycles >= 1, slice > 0, gap >= 0, warmup >= 0")
    names = [s[0] for s in o.side]
    if len(names) < 2 or len(set(names)) != len(names):
        sys.exit("ab_interleave: two or more sides with distinct names")
    order = o.order.split(",") if o.order else names
    if sorted(order) != sorted(names):
        sys.exit("ab_interleave: --order must name every side once")

    if not os.access(o.ztload, os.X_OK):
        sys.exit("ab_interleave: --ztload %s: not an executable file" % o.ztload)
    measured = o.cycles * len(order) * (o.slice + o.gap)
    parsed = {name: parse_side(name, pids, args) for name, pids, args in o.side}
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sides = {}

    def signal_side(name, sig):
        try:
            sides[name]["proc"].send_signal(sig)
        except ProcessLookupError:
            pass

    def sleep_until(when):
        d = when - time.monotonic()
        if d > 0:
            time.sleep(d)

    interrupted = None
    try:
        for name in names:
            pl, argv = parsed[name]
            sides[name] = {
                "proc": subprocess.Popen([o.ztload] + argv + [
                    "--warmup", "%.3f" % o.warmup, "-d", "%.3f" % measured, "--json"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE),
                "pids": pl,
                "cpu": 0,
                "run_s": 0.0,
            }
        t = time.monotonic() + o.warmup
        # Warm-up: all run (connections, caches). Then only the first.
        sleep_until(t)
        for name in order[1:]:
            signal_side(name, signal.SIGSTOP)
        for c in range(o.cycles):
            for i, name in enumerate(order):
                s = sides[name]
                c0 = ticks(s["pids"])
                r0 = time.monotonic()
                sleep_until(t + o.slice)
                signal_side(name, signal.SIGSTOP)
                s["run_s"] += time.monotonic() - r0
                sleep_until(t + o.slice + o.gap)
                s["cpu"] += ticks(s["pids"]) - c0
                t += o.slice + o.gap
                if c < o.cycles - 1 or i < len(order) - 1:
                    signal_side(order[(i + 1) % len(order)], signal.SIGCONT)
    except Interrupted as e:
        interrupted = str(e)
    finally:
        for name in sides:
            signal_side(name, signal.SIGCONT)
            if interrupted is not None:
                signal_side(name, signal.SIGTERM)
    if interrupted is not None:
        for s in sides.values():
            s["proc"].communicate()
        sys.exit("ab_interleave: %s: stopped, no result" % interrupted)
    out = {"clk_tck": os.sysconf("SC_CLK_TCK"), "cycles": o.cycles, "slice_s": o.slice,
           "gap_s": o.gap, "warmup_s": o.warmup, "order": order, "sides": {}}
    status = 0
    for name in names:
        s = sides[name]
        stdout, stderr = s["proc"].communicate()
        res = None
        try:
            res = json.loads(stdout.decode() or "null")
        except ValueError:
            pass
        if s["proc"].returncode != 0 or res is None:
            sys.stderr.write("ab_interleave: ztload for %s failed (exit %s): %s\n"
                             % (name, s["proc"].returncode, stderr.decode()[-500:]))
            status = 1
        side = {"r": res, "run_s": round(s["run_s"], 4), "cpu_ticks": s["cpu"]}
        n = res.get("requests") if isinstance(res, dict) else None
        if n and s["run_s"] > 0:
            side["rps"] = round(n / s["run_s"], 1)
            side["cpu_us_per_req"] = round(s["cpu"] * 1e6 / out["clk_tck"] / n, 2)
        out["sides"][name] = side
    print(json.dumps(out))
    return status


if __name__ == "__main__":
    sys.exit(main())
