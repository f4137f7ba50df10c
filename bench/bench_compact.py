"""Benchmark compaction on files (issue 16).

    python bench/bench_compact.py            # ~256 MiB store, half of it removed
    python bench/bench_compact.py --quick    # ~64 MiB
    python bench/bench_compact.py --mib 1024 --dir /mnt/ssd/tmp

Two figures, against the issue's targets:

1. **Throughput**: the bytes compaction rewrites per second (the commit-log
   segments and stream segments it copies, plus what it reads to decide),
   against the raw copy speed of the same disk: reading and writing the
   same number of bytes with plain ``read``/``write`` and one ``fsync`` per
   file.  Target: at least 0.5x the raw copy.
2. **Appends during compaction**: p99 latency of durable one-event appends
   (a writer process appending as fast as it can) while compaction runs,
   against the same writer with no compaction.  Target: at most 5x idle.

The store: 200 streams, 10-event batches of ~500-byte events, interleaved;
then every other stream is deleted, so compaction removes half the events
and rewrites nearly every segment.  Results go to bench/results/compact.json.
Standard library, msgpack and evstore itself (the working copy).
"""
from __future__ import annotations

import argparse
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

from evstore import EventStore  # noqa: E402
from evstore.core.forgetting import Forgetting  # noqa: E402
from evstore.core.rules import ANY  # noqa: E402

STREAMS = 200
BATCH = 10

APPENDER = r"""
import os, sys, time
from evstore import EventStore
path, seconds, stop = sys.argv[1], float(sys.argv[2]), sys.argv[3]
lat = []
with EventStore(path) as es:
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end and not os.path.exists(stop):
        t = time.perf_counter()
        es.append(f"live-{i % 7}", [{"type": "Tick", "data": {"i": i}}])
        lat.append(time.perf_counter() - t)
        i += 1
print(" ".join(f"{x:.6f}" for x in lat))
"""


def build(path: Path, mib: int) -> int:
    pad = "x" * 400
    n = 0
    with EventStore(path, sync=False) as es:
        b = 0
        while True:
            s = f"s-{b % STREAMS}"
            es.append(s, [{"type": "T", "data": {"b": b, "i": i, "pad": pad}}
                          for i in range(BATCH)])
            n += BATCH
            b += 1
            if b % 200 == 0 and _bytes(path) >= mib << 20:
                return n


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def raw_copy(src: Path, dst: Path, nbytes: int) -> float:
    """Seconds to read and write ``nbytes`` of the store's segment files
    (whole files, in order) with plain I/O and one fsync per file."""
    files = sorted(p for p in src.rglob("*") if p.suffix in (".log", ".seg"))
    dst.mkdir()
    done = 0
    t = time.perf_counter()
    for k, p in enumerate(files):
        if done >= nbytes:
            break
        with open(p, "rb") as f, open(dst / f"{k}.bin", "wb") as g:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                g.write(chunk)
                done += len(chunk)
            g.flush()
            os.fsync(g.fileno())
    return time.perf_counter() - t, done


def appends(path: Path, seconds: float, stop: Path):
    p = subprocess.Popen([sys.executable, "-c", APPENDER, str(path), str(seconds), str(stop)],
                         stdout=subprocess.PIPE, env={**os.environ,
                                                      "PYTHONPATH": str(BENCH_DIR.parent)})
    return p


def p99(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    mib = 64 if args.quick else args.mib
    root = Path(tempfile.mkdtemp(prefix="evstore-bench-compact-", dir=args.dir))
    try:
        store = root / "store"
        events = build(store, mib)
        with EventStore(store) as es:  # as a store closed by a durable writer:
            with es.backend.writer_lock():  # stream logs synced, sync-state at the head
                es.backend._sync_streams_locked()
        before = _bytes(store)
        with EventStore(store) as es:
            for k in range(0, STREAMS, 2):
                es.backend.cut(f"s-{k}", ANY, None, False)
        # idle appends
        stop = root / "stop"
        idle = appends(store, 3.0, stop)
        idle_lat = [float(x) for x in idle.communicate()[0].split()]
        # appends during compaction
        busy = appends(store, 3600.0, stop)
        time.sleep(0.5)
        with EventStore(store) as es:
            b = es.backend
            t = time.perf_counter()
            out = b.compact(lambda: Forgetting(b.cuts(), b.retention_rules(),
                                               time.time_ns() // 1000))
            secs = time.perf_counter() - t
        stop.touch()
        busy_out = busy.communicate()[0].split()
        busy_lat = [float(x) for x in busy_out]
        # the bytes compaction wrote: the store's segment bytes after it
        rewritten = out["bytes_after"]
        raw_secs, raw_bytes = raw_copy(store, root / "copy", before)
        result = {
            "events": events, "store_mib": round(before / 2**20, 1),
            "events_removed": out["events_removed"],
            "bytes_before": out["bytes_before"], "bytes_after": out["bytes_after"],
            "compact_seconds": round(secs, 3),
            "compact_mib_s_read": round(before / 2**20 / secs, 1),
            "compact_mib_s_written": round(rewritten / 2**20 / secs, 1),
            "raw_copy_mib_s": round(raw_bytes / 2**20 / raw_secs, 1),
            "append_p99_idle_ms": round(p99(idle_lat) * 1000, 3),
            "append_p99_compacting_ms": round(p99(busy_lat) * 1000, 3) if busy_lat else None,
            "append_median_idle_ms": round(statistics.median(idle_lat) * 1000, 3),
            "append_median_compacting_ms": (round(statistics.median(busy_lat) * 1000, 3)
                                            if busy_lat else None),
            "appends_during": len(busy_lat),
            # the machine may be shared: its load when the run ended (1, 5, 15 min)
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }
        result["ratio_vs_raw_copy"] = round(result["compact_mib_s_read"]
                                            / result["raw_copy_mib_s"], 2)
        if busy_lat:
            result["p99_ratio"] = round(result["append_p99_compacting_ms"]
                                        / result["append_p99_idle_ms"], 2)
        print(json.dumps(result, indent=1))
        out_dir = BENCH_DIR / "results"
        out_dir.mkdir(exist_ok=True)
        runs_path = out_dir / "compact.json"
        runs = json.loads(runs_path.read_text()) if runs_path.exists() else []
        runs.append({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "quick": args.quick, **result})
        runs_path.write_text(json.dumps(runs, indent=1) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
