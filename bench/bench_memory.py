"""Peak memory of evstore's commands on stores with huge batches (issue 15).

    python bench/bench_memory.py                       # 1,000,000 events
    python bench/bench_memory.py --events 200000       # quicker
    python bench/bench_memory.py --only read-all-to-10 --keep /tmp/memstores

Builds, in a temporary directory (or --keep DIR, reused when already there):

- **batch**: one stream holding ONE batch of N events (`evstore append` of
  an NDJSON file, the shape of bench_store.make_events: 3-key data, 2-key
  metadata); the append's own peak RSS is measured while building it;
- **small**: N events in batches of 100 over 100 streams (library, no sync);
- **tiny.ndjson**: N tiny events (`{"type":"t","data":{"n":I}}`), appended
  as one batch from stdin into a fresh store: the append target is at most
  8x the input's size.

Then runs every reader on both stores with stdout to /dev/null and prints
its peak RSS (``/usr/bin/time -f %M``: a child of this process would be
charged with this process's RSS), its CPU time (user+sys, robust under load)
and whether it meets the target (at most 64 MiB).  Not a test: no run
fails; the table is the result.  Standard library and evstore only.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

READER_TARGET_MIB = 64
APPEND_FACTOR = 8

#: (name, arguments after `evstore --store S`); {stream} is the batch's stream
READERS = [
    ("read-all-to-10", ["read", "--all", "--to", "10"]),
    ("read-all", ["read", "--all"]),
    ("read-all-json", ["read", "--all", "--format", "json"]),
    ("read-all-back-10", ["read", "--all", "--backwards", "--limit", "10"]),
    ("read-stream", ["read", "{stream}"]),
    ("tail-all", ["tail", "--all"]),
    ("export", ["export"]),
    ("verify", ["verify"]),
    ("info", ["info"]),
]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def measure(args: list[str], stdin=None) -> tuple[float, float, int]:
    """(peak RSS MiB, CPU s user+sys, exit code) of ``evstore args``."""
    cmd = ["/usr/bin/time", "-f", "\n%M %U %S", sys.executable, "-m", "evstore", *args]
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as inp:
        p = subprocess.run(cmd, env=env(), stdin=inp, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    last = p.stderr.decode(errors="replace").strip().splitlines()[-1].split()
    rss_kib, user, system = int(last[0]), float(last[1]), float(last[2])
    return rss_kib / 1024, user + system, p.returncode


def write_events(path: Path, n: int, tiny: bool) -> None:
    import json

    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            if tiny:
                f.write('{"type":"t","data":{"n":%d}}\n' % i)
            else:
                f.write(json.dumps({
                    "type": "Deposited",
                    "data": {"amount": i, "note": f"deposit {i:09d}", "currency": "EUR"},
                    "metadata": {"user": f"u{i % 97}", "source": "bench"}}) + "\n")


def build_small(path: Path, n: int) -> None:
    from evstore import EventStore, NewEvent

    with EventStore(path, sync=False) as es:
        for b in range(n // 100):
            s = f"s-{b % 100}"
            es.append(s, [NewEvent("Deposited", {"amount": b * 100 + i, "note": "x", "c": "EUR"},
                                   {"user": "u", "source": "bench"}) for i in range(100)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--keep", help="build the stores here and keep them (reused if present)")
    ap.add_argument("--only", action="append", help="run only these readers (names above)")
    a = ap.parse_args()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="evstore-mem-"))
    root.mkdir(parents=True, exist_ok=True)
    n = a.events
    rows = []
    try:
        tiny = root / f"tiny-{n}.ndjson"
        if not tiny.exists():
            write_events(tiny, n, tiny=True)
        target = root / "append-target"
        shutil.rmtree(target, ignore_errors=True)
        rss, cpu, rc = measure(["--store", str(target), "append", "t", "--no-sync"], stdin=tiny)
        size_mib = tiny.stat().st_size / 2**20
        rows.append(("append tiny (1 batch)", "-", rss, cpu, rc,
                     f"<= {APPEND_FACTOR}x input ({APPEND_FACTOR * size_mib:.0f} MiB)",
                     rss <= APPEND_FACTOR * size_mib))
        shutil.rmtree(target, ignore_errors=True)

        batch = root / f"batch-{n}"
        if not (batch / "evstore.json").exists():
            src = root / f"events-{n}.ndjson"
            write_events(src, n, tiny=False)
            shutil.rmtree(batch, ignore_errors=True)
            rss, cpu, rc = measure(["--store", str(batch), "append", "big", "--no-sync"], stdin=src)
            rows.append(("append events (1 batch)", "-", rss, cpu, rc,
                         f"<= {APPEND_FACTOR}x input ({APPEND_FACTOR * src.stat().st_size / 2**20:.0f} MiB)",
                         rss <= APPEND_FACTOR * src.stat().st_size / 2**20))
            src.unlink()
        small = root / f"small-{n}"
        if not (small / "evstore.json").exists():
            shutil.rmtree(small, ignore_errors=True)
            build_small(small, n)
        for store, stream in ((batch, "big"), (small, "s-0")):
            for name, args in READERS:
                if a.only and name not in a.only:
                    continue
                args = [x.format(stream=stream) for x in args]
                rss, cpu, rc = measure(["--store", str(store), *args])
                rows.append((name, store.name.split("-")[0], rss, cpu, rc,
                             f"<= {READER_TARGET_MIB} MiB", rss <= READER_TARGET_MIB))
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{n:,} events; peak RSS by /usr/bin/time -f %M; CPU = user + sys\n")
    print(f"| command | store | peak RSS MiB | CPU s | exit | target | met |")
    print("|---|---|---:|---:|---:|---|---|")
    for name, store, rss, cpu, rc, target, ok in rows:
        print(f"| {name} | {store} | {rss:.1f} | {cpu:.2f} | {rc} | {target} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
