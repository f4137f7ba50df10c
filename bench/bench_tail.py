"""Benchmark ``evstore tail -f``: how soon a follower sees a commit, what it
costs while the store is idle, and how fast it catches up.

    python bench/bench_tail.py                 # about 30 seconds
    python bench/bench_tail.py --quick         # about 10 seconds
    python bench/bench_tail.py --samples 500 --dir /mnt/ssd/tmp --no-sync

For each way of waiting -- ``notify`` (inotify, the default on Linux) and
``poll`` (stat the commit log with a back-off; forced with
EVSTORE_TAIL_WAKE=poll) -- one ``evstore tail -f --all -n 0`` subprocess
follows a store while this process appends single events at random
intervals (5-50 ms, seeded).  Measured:

- latency: from ``append()`` returning (durable: after its fsync) to the
  event's line being read from the follower's stdout.  The line can be
  ready before the append returns (readers see a commit before its fsync
  ends), so small numbers are expected; the median and p99 are reported.
  Also from the ``append()`` call (the append's own time included: an
  upper bound on commit-to-line), and the append's median time;
- idle CPU: the follower's CPU time (``/proc/PID/schedstat``, in ns) over
  ``--idle`` seconds with no writes, as a percentage of one core, and its
  wake-ups per second (voluntary context switches).

Then, once: catching up on the prefilled backlog (``tail --all --from 1``
into /dev/null), without and with ``--checkpoint`` (which saves at most
every 0.2 s while behind), in events per second.

Results are printed as a table and written to bench/results/tail.json with
the machine's description.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))  # the working copy's evstore

from evstore import EventStore, NewEvent  # noqa: E402


def env(wake: str, store: str) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("EVSTORE_")}
    e["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["EVSTORE_DIR"] = store
    e["EVSTORE_TAIL_WAKE"] = wake
    return e


def cpu_ns(pid: int) -> int:
    """CPU time of ``pid`` in ns: schedstat is precise, stat has 10 ms ticks."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 10**9 // os.sysconf("SC_CLK_TCK")


def wakeups(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    return 0


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def follow(store_dir: str, wake: str, samples: int, idle: float, sync: bool, seed: int) -> dict:
    rng = random.Random(seed)
    with EventStore(store_dir) as es:
        nxt = es.head() + 1
    # --from the next position: the warm-up event is printed however late
    # the follower starts, and proves it is up (startup is not latency).
    p = subprocess.Popen([sys.executable, "-m", "evstore", "tail", "-f", "--all",
                          "--from", str(nxt)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(wake, store_dir))
    lat, lat_start, append_s = [], [], []
    try:
        with EventStore(store_dir, sync=sync) as es:
            es.append("bench-warmup", [NewEvent("Warmup")])
            p.stdout.readline()
            time.sleep(0.2)
            for i in range(samples):
                time.sleep(rng.uniform(0.005, 0.05))
                ev = [NewEvent("Tick", {"i": i})]
                ts = time.perf_counter()
                r = es.append(f"bench-{i % 10}", ev)
                t0 = time.perf_counter()
                line = p.stdout.readline()
                t1 = time.perf_counter()
                lat.append(t1 - t0)
                lat_start.append(t1 - ts)
                append_s.append(t0 - ts)
                got = json.loads(line)["position"]
                if got != r.position:
                    raise SystemExit(f"follower printed position {got}, expected {r.position}")
        time.sleep(0.3)  # let the last wake-up settle
        c0, w0, t0 = cpu_ns(p.pid), wakeups(p.pid), time.perf_counter()
        time.sleep(idle)
        c1, w1, t1 = cpu_ns(p.pid), wakeups(p.pid), time.perf_counter()
    finally:
        p.terminate()
        _, err = p.communicate(timeout=10)
    if p.returncode != 0 or err:
        raise SystemExit(f"follower ({wake}) exited {p.returncode}: {err.decode()}")
    ms = [x * 1000 for x in lat]
    ms_start = [x * 1000 for x in lat_start]
    return {"wake": wake, "samples": samples, "median_ms": statistics.median(ms),
            "p90_ms": pct(ms, 90), "p99_ms": pct(ms, 99), "max_ms": max(ms),
            "from_call_median_ms": statistics.median(ms_start),
            "from_call_p99_ms": pct(ms_start, 99),
            "append_median_ms": statistics.median(x * 1000 for x in append_s),
            "idle_seconds": round(t1 - t0, 3),
            "idle_cpu_percent": (c1 - c0) / 1e9 / (t1 - t0) * 100,
            "idle_wakeups_per_s": (w1 - w0) / (t1 - t0)}


def prefill(store_dir: str, n: int) -> None:
    with EventStore(store_dir, sync=False) as es:
        for start in range(0, n, 500):
            es.append(f"fill-{start // 500 % 50}",
                      [NewEvent("Filled", {"i": i, "note": "bench filler " * 4})
                       for i in range(start, min(n, start + 500))])


def catch_up(store_dir: str, n: int) -> dict:
    out = {}
    for label, extra in (("plain", []), ("checkpoint", ["--checkpoint", "bench-catch-up"])):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "evstore", "tail", "--all", "--from", "1",
                            *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           env=env("auto", store_dir))
        dt = time.perf_counter() - t
        if r.returncode:
            raise SystemExit(f"catch-up ({label}) failed: {r.stderr.decode()}")
        out[f"{label}_events_per_s"] = n / dt
        out[f"{label}_s"] = dt
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, shorter idle")
    ap.add_argument("--samples", type=int, help="appends timed per mode (default 200; quick 60)")
    ap.add_argument("--idle", type=float, help="idle seconds measured (default 5; quick 2)")
    ap.add_argument("--prefill", type=int, help="events in the store before (default 100000; "
                                                "quick 20000)")
    ap.add_argument("--no-sync", action="store_true", help="appends without fsync")
    ap.add_argument("--modes", default="notify,poll", help="notify,poll")
    ap.add_argument("--dir", help="where to make the temporary store")
    ap.add_argument("--keep", action="store_true", help="keep the store afterwards")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", default=str(BENCH_DIR / "results" / "tail.json"))
    a = ap.parse_args()
    samples = a.samples or (60 if a.quick else 200)
    idle = a.idle or (2.0 if a.quick else 5.0)
    n = a.prefill if a.prefill is not None else (20_000 if a.quick else 100_000)

    root = tempfile.mkdtemp(prefix="evstore-bench-tail-", dir=a.dir)
    store_dir = os.path.join(root, "store")
    try:
        prefill(store_dir, n)
        rows = [follow(store_dir, m, samples, idle, not a.no_sync, a.seed)
                for m in a.modes.split(",")]
        cu = catch_up(store_dir, n + samples * len(rows) + len(rows)) if n else {}
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)

    print(f"evstore tail -f: {samples} {'no-sync' if a.no_sync else 'durable'} appends per mode, "
          f"5-50 ms apart, store prefilled with {n} events")
    print("latency in ms from append() returning to the line read (and from the call,")
    print("which includes the append itself: an upper bound on commit-to-line)")
    print(f"{'wake':<8}{'median':>8}{'p90':>8}{'p99':>8}{'max':>8}{'call med':>10}"
          f"{'call p99':>10}{'append':>8}{'idle CPU %':>12}{'wakeups/s':>11}")
    for r in rows:
        print(f"{r['wake']:<8}{r['median_ms']:>8.2f}{r['p90_ms']:>8.2f}{r['p99_ms']:>8.2f}"
              f"{r['max_ms']:>8.2f}{r['from_call_median_ms']:>10.2f}{r['from_call_p99_ms']:>10.2f}"
              f"{r['append_median_ms']:>8.2f}{r['idle_cpu_percent']:>12.4f}"
              f"{r['idle_wakeups_per_s']:>11.1f}")
    if cu:
        print(f"catch-up of {n} events into /dev/null: {cu['plain_events_per_s']:,.0f} events/s; "
              f"with --checkpoint {cu['checkpoint_events_per_s']:,.0f} events/s")
    result = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count()},
              "sync": not a.no_sync, "prefill": n, "followers": rows, "catch_up": cu}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
