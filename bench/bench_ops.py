"""Benchmark evstore's operations (verify, export, import) against SQLite.

    python bench/bench_ops.py               # 200,000 events, medians of 3
    python bench/bench_ops.py --quick       # 100,000 events, one run each
    python bench/bench_ops.py --events 1000000 --dir /mnt/ssd/tmp

Targets (issue 5): verify and export at least 2x the events/s of reading the
same events out of SQLite (bench_store.py's SQLite peer, read_all: every row,
its JSON data and metadata decoded); import at least as fast as evstore's
own no-sync bulk load of the same events (1000-event appends, like workload
(c) of bench_store.py).

Two shapes of the same data:

- bulk:  one stream, appended in batches of 1000 (workload (c) of
         bench_store.py);
- mixed: 100 streams, batches of 10, interleaved (a busy store).

Each is built once per peer (evstore no-sync appends; SQLite with
synchronous=OFF), then timed: SQLite read_all; evstore verify (the library
call, with its default worker processes, and with workers=1), export to a
file, import of that file into a fresh store with and without fsync.  The
table shows events/s and the ratios; bench/results/ops.json keeps every run.
Standard library plus msgpack and evstore itself (the working copy).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

from bench_store import SqlitePeer, machine_info, make_events  # noqa: E402

from evstore import EventStore, NewEvent  # noqa: E402
from evstore.ops import export_events, import_events, verify  # noqa: E402

SHAPES = {"bulk": (1, 1000), "mixed": (100, 10)}


def timed(fn, repeats: int):
    runs = []
    out = None
    for _ in range(repeats):
        gc.collect()
        t = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), runs, out


def batches_of(n: int, streams: int, size: int):
    """(stream, expected version, events) in append order."""
    events = make_events(0, n)
    versions = [0] * streams
    out = []
    for k, i in enumerate(range(0, n, size)):
        s = k % streams
        chunk = events[i:i + size]
        out.append((f"acct-{s}", versions[s], chunk))
        versions[s] += len(chunk)
    return out


def build_evstore(path: Path, plan) -> float:
    prepared = [(s, v, [NewEvent(e["type"], e["data"], e["metadata"]) for e in evs])
                for s, v, evs in plan]
    t = time.perf_counter()
    with EventStore(path, sync=False) as es:
        for s, v, evs in prepared:
            es.append(s, evs, expected_version=v)
    return time.perf_counter() - t


def build_sqlite(path: Path, plan) -> SqlitePeer:
    peer = SqlitePeer(path, sync=False)
    for s, v, evs in plan:
        peer.append_batch(s, peer.prepare(evs), v)
    return peer


def rate(n, seconds):
    return n / seconds if seconds else float("inf")


def run_shape(name: str, n: int, root: Path, repeats: int, log) -> dict:
    streams, size = SHAPES[name]
    plan = batches_of(n, streams, size)
    res: dict = {"events": n, "streams": streams, "batch": size}
    base = root / name
    base.mkdir()

    # the comparator for import: evstore's own no-sync bulk load
    loads = []
    for r in range(repeats):
        p = base / f"load{r}"
        loads.append(build_evstore(p, plan))
        if r:
            shutil.rmtree(p)
    store = base / "load0"
    res["bulk_load_nosync"] = {"seconds": statistics.median(loads), "runs_s": loads,
                               "events_per_s": rate(n, statistics.median(loads))}
    log(f"  {name}: evstore no-sync load {res['bulk_load_nosync']['events_per_s']:,.0f} ev/s")

    peer = build_sqlite(base / "sqlite", plan)
    try:
        med, runs, (count, _total) = timed(peer.read_all, repeats)
        assert count == n
    finally:
        peer.close()
    res["sqlite_read_all"] = {"seconds": med, "runs_s": runs, "events_per_s": rate(n, med)}
    log(f"  {name}: sqlite read_all {rate(n, med):,.0f} ev/s")

    for label, kw in (("verify", {}), ("verify_1_process", {"workers": 1})):
        med, runs, report = timed(lambda: verify(store, **kw), repeats)
        assert report.ok, report.problems
        res[label] = {"seconds": med, "runs_s": runs, "events_per_s": rate(n, med)}
        log(f"  {name}: {label} {rate(n, med):,.0f} ev/s")

    exported = base / "export.ndjson"

    def do_export():
        with EventStore(store) as es, open(exported, "wb") as out:
            return export_events(es, out)

    med, runs, count = timed(do_export, repeats)
    assert count == n
    res["export"] = {"seconds": med, "runs_s": runs, "events_per_s": rate(n, med),
                     "bytes": exported.stat().st_size}
    log(f"  {name}: export {rate(n, med):,.0f} ev/s")

    for label, sync in (("import_nosync", False), ("import_sync", True)):
        def do_import(sync=sync):
            dst = base / "imported"
            shutil.rmtree(dst, ignore_errors=True)
            gc.disable()
            try:
                with EventStore(dst) as es, open(exported, "rb") as f:
                    return import_events(es, f, sync=sync)
            finally:
                gc.enable()

        med, runs, result = timed(do_import, repeats)
        assert result.events == n
        res[label] = {"seconds": med, "runs_s": runs, "events_per_s": rate(n, med)}
        log(f"  {name}: {label} {rate(n, med):,.0f} ev/s")

    # the CLI end to end, once (process start-up included)
    env = dict(os.environ, PYTHONPATH=str(BENCH_DIR.parent))
    for label, args in (("cli_verify", ["verify"]), ("cli_export", ["export"])):
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "evstore", "--store", str(store), *args],
                           stdout=subprocess.DEVNULL, env=env)
        dt = time.perf_counter() - t
        assert p.returncode == 0
        res[label] = {"seconds": dt, "events_per_s": rate(n, dt)}
    def ratio(a, b):
        return res[a]["events_per_s"] / res[b]["events_per_s"]

    res["ratios"] = {
        "verify_vs_sqlite_read": ratio("verify", "sqlite_read_all"),
        "export_vs_sqlite_read": ratio("export", "sqlite_read_all"),
        "import_nosync_vs_bulk_load": ratio("import_nosync", "bulk_load_nosync"),
        "import_sync_vs_bulk_load": ratio("import_sync", "bulk_load_nosync"),
    }
    return res


def table(results: dict) -> str:
    rows = [("workload", *results)]
    keys = [("sqlite_read_all", "SQLite read_all (baseline)"),
            ("verify", "evstore verify"), ("verify_1_process", "evstore verify, 1 process"),
            ("export", "evstore export"), ("bulk_load_nosync", "evstore no-sync bulk load"),
            ("import_nosync", "evstore import --no-sync"), ("import_sync", "evstore import"),
            ("cli_verify", "`evstore verify` (CLI, with start-up)"),
            ("cli_export", "`evstore export` (CLI, with start-up)")]
    for k, label in keys:
        rows.append((label, *(f"{r[k]['events_per_s']:,.0f}/s" for r in results.values())))
    for k, label in (("verify_vs_sqlite_read", "verify / SQLite read (target >= 2)"),
                     ("export_vs_sqlite_read", "export / SQLite read (target >= 2)"),
                     ("import_nosync_vs_bulk_load", "import --no-sync / bulk load (target >= 1)"),
                     ("import_sync_vs_bulk_load", "import / bulk load (target >= 1)")):
        rows.append((label, *(f"{r['ratios'][k]:.2f}x" for r in results.values())))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
        if j == 0:
            lines.append("  ".join("-" * x for x in w))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 events, one run each")
    ap.add_argument("--events", type=int, help="events per shape (default 200,000)")
    ap.add_argument("--repeats", type=int, help="runs per measurement (default 3; 1 with --quick)")
    ap.add_argument("--dir", help="where to make the stores (default: the temp dir)")
    ap.add_argument("--keep", action="store_true", help="leave the stores on disk")
    ap.add_argument("--json", default=str(BENCH_DIR / "results" / "ops.json"),
                    help="where to write the results")
    a = ap.parse_args(argv)
    n = a.events or (100_000 if a.quick else 200_000)
    repeats = a.repeats or (1 if a.quick else 3)
    root = Path(tempfile.mkdtemp(prefix="evstore-bench-ops-", dir=a.dir))

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        machine = machine_info(root)
        log(f"evstore ops benchmark: {n:,} events per shape, {repeats} run(s) each, in {root}")
        results = {name: run_shape(name, n, root, repeats, log) for name in SHAPES}
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(table(results))
    out = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "events": n, "repeats": repeats, "machine": machine, "results": results,
           "elapsed_s": time.perf_counter() - t0}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    log(f"results written to {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
