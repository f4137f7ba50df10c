"""Benchmark replay: with and without snapshots, and the merge fold itself.

    python bench/bench_replay.py              # 100k and 1M events (about a minute)
    python bench/bench_replay.py --quick      # 100k only
    python bench/bench_replay.py --sizes 100000,1000000 --dir /mnt/ssd/tmp --keep

For each size, one stream of N events ({"amount", "n", "note"} data, about
80 bytes) is loaded with no-sync appends of 1,000 events, into two stores:
one plain, one with automatic snapshots every 1,000 events (merge).  Timed:

- load time of each store (the difference is what automatic snapshots cost
  writers);
- replay to the head: with snapshots (it starts from the one at N and
  applies 0 events), and with --no-snapshot (all N);
- replay to N-1 with snapshots: the worst case, 999 events after a snapshot;
- replay --at a time (the binary search over recorded_at, then the fold);
- verify_snapshots: a full rebuild compared with N/1000 snapshots;
- the merge fold alone, in memory, over prebuilt event dicts: the pure
  ``merge`` (what --steps calls) and the in-place twin (what replay calls).

Medians of repeats; results printed as a table and written to
bench/results/replay.json with the machine's description.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # the working copy's evstore

from evstore import EventStore, NewEvent  # noqa: E402
from evstore.features.reducers import BUILTINS  # noqa: E402
from evstore.features.replay import plan, replay, verify_snapshots  # noqa: E402

EVERY = 1000
BATCH = 1000
NOTE = "replay bench: lorem ipsum dolor sit amet"


def events(start: int, n: int):
    return [NewEvent("Deposited", {"amount": i, "n": i % 100, "note": NOTE})
            for i in range(start, start + n)]


def load(path: str, n: int, snapshots: bool) -> float:
    kw = {"snapshot_every": EVERY, "reducer": "merge"} if snapshots else {}
    t = time.perf_counter()
    with EventStore(path, sync=False, **kw) as s:
        for start in range(0, n, BATCH):
            s.append("bench", events(start, min(BATCH, n - start)))
    return time.perf_counter() - t


def timed(fn, repeats: int) -> tuple[float, object]:
    runs, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), out


def fold_rate(n: int, fast: bool) -> float:
    fn = BUILTINS["merge"][1 if fast else 0]
    evs = [{"stream": "bench", "version": i + 1, "type": "Deposited",
            "data": {"amount": i, "n": i % 100, "note": NOTE}, "metadata": {}}
           for i in range(n)]
    best = None
    for _ in range(3):
        state = None
        t = time.perf_counter()
        for e in evs:
            state = fn(state, e)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return n / best


def bench_size(root: str, n: int, repeats: int) -> dict:
    plain, snap = os.path.join(root, f"plain-{n}"), os.path.join(root, f"snap-{n}")
    r = {"events": n}
    r["load_plain_s"] = load(plain, n, False)
    r["load_with_auto_snapshots_s"] = load(snap, n, True)
    with EventStore(snap) as s:
        p = plan(s, "bench", "merge")
        r["snapshots"] = s.snapshots.count()
        r["head_events_applied_with_snapshots"] = p.to_apply
        r["replay_head_with_snapshots_s"], (state, v) = timed(
            lambda: replay(s, "bench", "merge"), repeats)
        assert v == n and state["amount"] == n - 1
        r["replay_head_no_snapshot_s"], (state2, _) = timed(
            lambda: replay(s, "bench", "merge", use_snapshots=False), max(1, repeats // 2))
        assert state2 == state
        r["replay_head_minus_1_with_snapshots_s"], _ = timed(
            lambda: replay(s, "bench", "merge", to_version=n - 1), repeats)
        mid = next(s.read("bench", from_version=n // 2, to_version=n // 2)).recorded_at
        r["replay_at_time_s"], _ = timed(lambda: replay(s, "bench", "merge", at=mid), repeats)
        r["verify_snapshots_s"], rep = timed(lambda: verify_snapshots(s, "bench", "merge"), 1)
        assert rep.ok and rep.checked == r["snapshots"]
    r["replay_no_snapshot_events_per_s"] = n / r["replay_head_no_snapshot_s"]
    r["speedup_head"] = r["replay_head_no_snapshot_s"] / r["replay_head_with_snapshots_s"]
    return r


def machine() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k events only")
    ap.add_argument("--sizes", help="comma-separated stream lengths (default 100000,1000000)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", help="where to make the stores (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="leave the stores on disk")
    ap.add_argument("--json", default=str(BENCH_DIR / "results" / "replay.json"))
    args = ap.parse_args()
    sizes = ([100_000] if args.quick else
             [int(x) for x in (args.sizes or "100000,1000000").split(",")])
    root = tempfile.mkdtemp(prefix="evstore-bench-replay-", dir=args.dir)
    results = {"machine": machine(), "snapshot_every": EVERY, "sizes": []}
    try:
        results["merge_fold_events_per_s"] = {
            "pure": fold_rate(200_000, fast=False), "in_place": fold_rate(200_000, fast=True)}
        for n in sizes:
            print(f"... {n:,} events", file=sys.stderr)
            results["sizes"].append(bench_size(root, n, args.repeats))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"stores kept in {root}", file=sys.stderr)
    report(results)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")


def report(res: dict) -> None:
    m = res["machine"]
    print(f"Python {m['python']} on {m['platform']}, {m['cpus']} CPUs; "
          f"snapshot every {res['snapshot_every']} events")
    f = res["merge_fold_events_per_s"]
    print(f"merge fold in memory: {f['pure']:,.0f} events/s (pure), "
          f"{f['in_place']:,.0f} events/s (in place)\n")
    rows = [("load, no snapshots", "load_plain_s"),
            ("load, auto snapshots", "load_with_auto_snapshots_s"),
            ("replay head, snapshots", "replay_head_with_snapshots_s"),
            ("replay head, --no-snapshot", "replay_head_no_snapshot_s"),
            ("replay head-1, snapshots", "replay_head_minus_1_with_snapshots_s"),
            ("replay --at mid-stream", "replay_at_time_s"),
            ("verify snapshots", "verify_snapshots_s")]
    head = f"{'':28}" + "".join(f"{s['events']:>14,}" for s in res["sizes"])
    print(head)
    for label, key in rows:
        print(f"{label:28}" + "".join(f"{s[key] * 1000:>12.1f}ms" for s in res["sizes"]))
    print(f"{'events applied at head':28}"
          + "".join(f"{s['head_events_applied_with_snapshots']:>14}" for s in res["sizes"]))
    print(f"{'no-snapshot events/s':28}"
          + "".join(f"{s['replay_no_snapshot_events_per_s']:>14,.0f}" for s in res["sizes"]))
    print(f"{'speedup at head':28}" + "".join(f"{s['speedup_head']:>13,.0f}x" for s in res["sizes"]))


if __name__ == "__main__":
    main()
