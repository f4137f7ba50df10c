"""Benchmark evstore against a SQLite "seed design" and a raw-file limit.

    python bench/bench_store.py                 # full run (a few minutes)
    python bench/bench_store.py --quick         # smaller sizes, ~1 minute
    python bench/bench_store.py --only sqlite,raw --dir /mnt/ssd/tmp

Every peer runs the same workloads in one process, on the same disk, and the
results are printed as one table (events/s, and evstore/sqlite ratios) and
written to bench/results/latest.json. See bench/README.md for what each
workload measures and how to read the numbers.

Peers (each a small class with the same methods; add new ones to PEERS):

- sqlite   the seed design: one `events` table in SQLite (WAL), an append is
           BEGIN IMMEDIATE; SELECT max(version) (optimistic check); INSERT;
           COMMIT. synchronous=FULL when durable, OFF otherwise.
- raw      the limit: msgpack records appended with os.write to one file,
           os.fdatasync per append when durable; reads unpack the whole file.
           No index, no lock, no checksums: what the disk and msgpack cost.
- evstore  this project, through its public API only. Skipped with a
           message when `import evstore` fails (the core is not written yet).

Standard library plus msgpack. The working copy's evstore is used (the
repository root is put first on sys.path).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import msgpack

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))     # benchmark the working copy, not an installed evstore


# ---------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Config:
    single: int            # (a) durable appends of one event each
    batches: int           # (b) durable appends of `batch_size` events each
    batch_size: int
    bulk: int              # (c) no-sync events loaded into one stream ...
    bulk_batch: int        #     ... in appends of this many
    seek_big: int          # (f) the long stream's length
    seek_small: int        #     the short stream's length
    seek_last: int         #     events read from the end
    seek_iters: int        #     timed seeks per stream (indexed peers)
    scan_iters: int        #     timed seeks per stream (peers that scan)
    repeats: int           # (a)(b)(c) runs per peer, fresh store each
    read_repeats: int      # (d)(e) runs per peer, same store


FULL = Config(single=2000, batches=200, batch_size=100, bulk=100_000, bulk_batch=1000,
              seek_big=1_000_000, seek_small=1000, seek_last=10, seek_iters=200, scan_iters=3,
              repeats=3, read_repeats=5)
QUICK = Config(single=1000, batches=100, batch_size=100, bulk=100_000, bulk_batch=1000,
               seek_big=100_000, seek_small=1000, seek_last=10, seek_iters=100, scan_iters=2,
               repeats=1, read_repeats=3)

FILLER = "bench payload: lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod"


def make_events(start: int, count: int) -> list[dict]:
    """`count` input events; each `data` is about 100 bytes of JSON."""
    return [{"type": "Deposited",
             "data": {"amount": i, "note": f"deposit {i:09d} {FILLER}"[:70]},
             "metadata": {}}
            for i in range(start, start + count)]


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class WrongVersion(Exception):
    """A peer's optimistic check failed; never expected in this benchmark."""


# ---------------------------------------------------------------- peers
#
# Every peer has the same methods. `expected` is the stream's current version
# before the append (every append here is an optimistic-concurrency append).
# Reads return (count, sum of data["amount"]) so that every peer decodes every
# event's data and the benchmark can check it read what it wrote.


class Peer:
    name = "?"
    seek_by_scan = False           # True: seek_last reads everything, latency is not an index's

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this peer cannot run here, or None when it can."""
        return None

    def __init__(self, path: Path, sync: bool) -> None:
        self.path = path
        self.sync = sync

    def prepare(self, events: list[dict]) -> list:
        """Turn input events into this peer's own input objects (not timed)."""
        return events

    def append_one(self, stream: str, event, expected: int) -> None:
        self.append_batch(stream, [event], expected)

    def append_batch(self, stream: str, events: list, expected: int) -> None:
        raise NotImplementedError

    def bulk_load(self, stream: str, batches, expected: int) -> int:
        for batch in batches:
            self.append_batch(stream, batch, expected)
            expected += len(batch)
        return expected

    def read_stream(self, stream: str) -> tuple[int, int]:
        raise NotImplementedError

    def read_all(self) -> tuple[int, int]:
        raise NotImplementedError

    def seek_last(self, stream: str, last_version: int, n: int) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SqlitePeer(Peer):
    """The seed design: one table, a unique (aggregate_id, version) index."""

    name = "sqlite"
    COLUMNS = "id, aggregate_id, version, type, data, metadata, recorded_at"

    def __init__(self, path: Path, sync: bool) -> None:
        super().__init__(path, sync)
        path.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(path / "events.sqlite3", isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute(f"PRAGMA synchronous={'FULL' if sync else 'OFF'}")
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, aggregate_id TEXT,"
            " version INTEGER, type TEXT, data BLOB, metadata BLOB, recorded_at TEXT)")
        self.con.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS events_stream_version ON events(aggregate_id, version)")

    def append_batch(self, stream, events, expected):
        cur = self.con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            (current,) = cur.execute(
                "SELECT max(version) FROM events WHERE aggregate_id = ?", (stream,)).fetchone()
            if (current or 0) != expected:
                raise WrongVersion(f"expected {expected}, current is {current or 0}")
            recorded_at = now_rfc3339()
            cur.executemany(
                "INSERT INTO events (aggregate_id, version, type, data, metadata, recorded_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(stream, expected + i, ev["type"], json.dumps(ev["data"]).encode(),
                  json.dumps(ev["metadata"]).encode(), recorded_at)
                 for i, ev in enumerate(events, start=1)])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def _fold(self, rows) -> tuple[int, int]:
        count = total = 0
        loads = json.loads
        for row_id, stream, version, type_, data, metadata, recorded_at in rows:
            data = loads(data)
            loads(metadata)
            count += 1
            total += data["amount"]
        return count, total

    def read_stream(self, stream):
        return self._fold(self.con.execute(
            f"SELECT {self.COLUMNS} FROM events WHERE aggregate_id = ? AND version >= ?"
            " ORDER BY version", (stream, 1)))

    def read_all(self):
        return self._fold(self.con.execute(
            f"SELECT {self.COLUMNS} FROM events WHERE id >= ? ORDER BY id", (1,)))

    def seek_last(self, stream, last_version, n):
        return self._fold(self.con.execute(
            f"SELECT {self.COLUMNS} FROM events WHERE aggregate_id = ? AND version >= ?"
            " ORDER BY version", (stream, last_version - n + 1)))[0]

    def close(self):
        self.con.close()


class RawPeer(Peer):
    """The floor: msgpack records appended to one file, nothing else.

    A record is [stream, version, position, id, type, data, metadata,
    recorded_at], the same content evstore stores. Versions and the position
    live in memory (rebuilt by a scan on open). Reading a stream or seeking
    means unpacking the whole file: the comparison for seeks is marked as a
    scan, not an index lookup.
    """

    name = "raw"
    seek_by_scan = True

    def __init__(self, path: Path, sync: bool) -> None:
        super().__init__(path, sync)
        path.mkdir(parents=True, exist_ok=True)
        self.file = path / "events.msgpack"
        created = not self.file.exists()
        self.fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created and sync:
            dir_fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self.packer = msgpack.Packer(use_bin_type=True)
        self.versions: dict[str, int] = {}
        self.position = 0
        for record in self._records():
            self.versions[record[0]] = record[1]
            self.position = record[2]

    def append_batch(self, stream, events, expected):
        if self.versions.get(stream, 0) != expected:
            raise WrongVersion(f"expected {expected}, current is {self.versions.get(stream, 0)}")
        recorded_at = now_rfc3339()
        pack = self.packer.pack
        position = self.position
        chunks = []
        for i, ev in enumerate(events, start=1):
            chunks.append(pack([stream, expected + i, position + i, str(uuid.uuid4()), ev["type"],
                                ev["data"], ev["metadata"], recorded_at]))
        buf = memoryview(b"".join(chunks))
        while buf:
            buf = buf[os.write(self.fd, buf):]
        if self.sync:
            os.fdatasync(self.fd)
        self.versions[stream] = expected + len(events)
        self.position = position + len(events)

    def _records(self):
        with open(self.file, "rb") as f:
            yield from msgpack.Unpacker(f, raw=False, use_list=False, read_size=1 << 20)

    def read_stream(self, stream):
        count = total = 0
        for record in self._records():
            if record[0] == stream:
                count += 1
                total += record[5]["amount"]
        return count, total

    def read_all(self):
        count = total = 0
        for record in self._records():
            count += 1
            total += record[5]["amount"]
        return count, total

    def seek_last(self, stream, last_version, n):
        first = last_version - n + 1
        return sum(1 for r in self._records() if r[0] == stream and r[1] >= first)

    def close(self):
        os.close(self.fd)


class EvstorePeer(Peer):
    """This project, through the public library API only."""

    name = "evstore"

    @classmethod
    def unavailable(cls):
        try:
            from evstore import EventStore, NewEvent  # noqa: F401
        except ImportError as e:
            return f"`from evstore import EventStore, NewEvent` failed: {e}"
        return None

    def __init__(self, path: Path, sync: bool) -> None:
        super().__init__(path, sync)
        from evstore import EventStore, NewEvent
        self._new_event = NewEvent
        self._stack = contextlib.ExitStack()
        self.store = self._stack.enter_context(EventStore(str(path), sync=sync))

    def prepare(self, events):
        return [self._new_event(ev["type"], ev["data"]) for ev in events]

    def append_one(self, stream, event, expected):
        self.store.append(stream, [event], expected_version=expected)

    def append_batch(self, stream, events, expected):
        self.store.append(stream, events, expected_version=expected)

    @staticmethod
    def _fold(events) -> tuple[int, int]:
        count = total = 0
        for ev in events:
            count += 1
            total += ev.data["amount"]
        return count, total

    def read_stream(self, stream):
        return self._fold(self.store.read(stream, from_version=1))

    def read_all(self):
        return self._fold(self.store.read_all(from_position=1))

    def seek_last(self, stream, last_version, n):
        return self._fold(self.store.read(stream, from_version=last_version - n + 1))[0]

    def close(self):
        self._stack.close()


PEERS: dict[str, type[Peer]] = {p.name: p for p in (SqlitePeer, RawPeer, EvstorePeer)}


# ---------------------------------------------------------------- measuring


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(fn, *args):
    """(seconds, result) of one call, after a garbage collection."""
    gc.collect()
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def rate_result(events: int, runs: list[float], **extra) -> dict:
    seconds = statistics.median(runs)
    return {"events": events, "seconds": seconds, "events_per_s": events / seconds,
            "runs_s": runs, **extra}


class Bench:
    def __init__(self, cfg: Config, peers: list[type[Peer]], root: Path) -> None:
        self.cfg = cfg
        self.peers = peers
        self.root = root
        self.results: dict[str, dict] = {p.name: {} for p in peers}
        self._dirs = 0
        self.loaded: dict[str, Path] = {}       # peer -> store from (c), reused by (d)-(f)
        self.keep_loaded = False                # True: (f) leaves the long-stream stores (peers.py reuses them)

    def fresh_dir(self, peer: type[Peer]) -> Path:
        self._dirs += 1
        return self.root / f"{peer.name}-{self._dirs}"

    def rotations(self, repeats: int):
        """Peers in a different order each repeat, so no one always goes first."""
        for r in range(repeats):
            k = r % len(self.peers)
            yield r, self.peers[k:] + self.peers[:k]

    def check(self, peer: Peer, stream: str, expected_count: int) -> None:
        count, _ = peer.read_stream(stream)
        if count != expected_count:
            raise AssertionError(f"{peer.name}: {stream} has {count} events, expected {expected_count}")

    # (a) ------------------------------------------------------------
    def append_one(self) -> None:
        n = self.cfg.single
        runs: dict[str, list] = {p.name: [] for p in self.peers}
        lat: dict[str, list] = {p.name: [] for p in self.peers}
        for r, order in self.rotations(self.cfg.repeats):
            for cls in order:
                peer = cls(self.fresh_dir(cls), sync=True)
                try:
                    events = peer.prepare(make_events(1, n))
                    gc.collect()
                    clock = time.perf_counter
                    each = []
                    t0 = clock()
                    for i, ev in enumerate(events):
                        s = clock()
                        peer.append_one("acct-1", ev, i)
                        each.append(clock() - s)
                    runs[cls.name].append(clock() - t0)
                    lat[cls.name].extend(each)
                    self.check(peer, "acct-1", n)
                finally:
                    peer.close()
                log(f"  (a) {cls.name:8} run {r + 1}: {n / runs[cls.name][-1]:>12,.0f} events/s")
        for name in runs:
            self.results[name]["a_append_one_durable"] = rate_result(
                n, runs[name], p50_us=percentile(lat[name], 50) * 1e6,
                p99_us=percentile(lat[name], 99) * 1e6)

    # (b) ------------------------------------------------------------
    def append_batch(self) -> None:
        nb, size = self.cfg.batches, self.cfg.batch_size
        runs: dict[str, list] = {p.name: [] for p in self.peers}
        for r, order in self.rotations(self.cfg.repeats):
            for cls in order:
                peer = cls(self.fresh_dir(cls), sync=True)
                try:
                    batches = [peer.prepare(make_events(1 + b * size, size)) for b in range(nb)]

                    def work():
                        for b, batch in enumerate(batches):
                            peer.append_batch("acct-1", batch, b * size)

                    seconds, _ = timed(work)
                    runs[cls.name].append(seconds)
                    self.check(peer, "acct-1", nb * size)
                finally:
                    peer.close()
                log(f"  (b) {cls.name:8} run {r + 1}: {nb * size / seconds:>12,.0f} events/s")
        for name in runs:
            self.results[name]["b_append_batch100_durable"] = rate_result(
                nb * size, runs[name], batch_size=size, batches=nb)

    # (c) ------------------------------------------------------------
    def bulk_load(self) -> None:
        n, size = self.cfg.bulk, self.cfg.bulk_batch
        runs: dict[str, list] = {p.name: [] for p in self.peers}
        for r, order in self.rotations(self.cfg.repeats):
            for cls in order:
                path = self.fresh_dir(cls)
                peer = cls(path, sync=False)
                closed = False
                try:
                    batches = [peer.prepare(make_events(i, size)) for i in range(1, n + 1, size)]

                    def work():
                        peer.bulk_load("big", batches, 0)
                        peer.close()            # a store may flush on close: part of the load

                    seconds, _ = timed(work)
                    closed = True
                finally:
                    if not closed:
                        peer.close()
                runs[cls.name].append(seconds)
                previous = self.loaded.get(cls.name)
                if previous is not None:
                    shutil.rmtree(previous, ignore_errors=True)
                self.loaded[cls.name] = path
                log(f"  (c) {cls.name:8} run {r + 1}: {n / seconds:>12,.0f} events/s")
        for name in runs:
            self.results[name]["c_bulk_load_nosync"] = rate_result(n, runs[name], batch_size=size)

    # (d) (e) ---------------------------------------------------------
    def reads(self) -> None:
        n = self.cfg.bulk
        want = sum(range(1, n + 1))
        peers = {}
        try:
            for cls in self.peers:
                seconds, peers[cls.name] = timed(cls, self.loaded[cls.name], False)
                self.results[cls.name]["open_after_bulk_s"] = seconds
            for key, label, method in (("d_read_stream", "(d)", "read_stream"),
                                       ("e_read_all", "(e)", "read_all")):
                runs: dict[str, list] = {p.name: [] for p in self.peers}
                for r, order in self.rotations(self.cfg.read_repeats):
                    for cls in order:
                        peer = peers[cls.name]
                        args = ("big",) if method == "read_stream" else ()
                        seconds, (count, total) = timed(getattr(peer, method), *args)
                        if (count, total) != (n, want):
                            raise AssertionError(f"{cls.name} {method}: read {count} events, sum {total}")
                        runs[cls.name].append(seconds)
                for name in runs:
                    self.results[name][key] = rate_result(n, runs[name])
                    log(f"  {label} {name:8} {n / self.results[name][key]['seconds']:>12,.0f} events/s"
                        f" (median of {len(runs[name])})")
        finally:
            for peer in peers.values():
                peer.close()

    # (f) ------------------------------------------------------------
    def seek(self) -> None:
        cfg = self.cfg
        for cls in self.peers:
            path = self.loaded[cls.name]
            peer = cls(path, sync=False)
            try:
                extra = cfg.seek_big - cfg.bulk
                t0 = time.perf_counter()
                peer.bulk_load("small", [peer.prepare(make_events(1, cfg.seek_small))], 0)
                version = cfg.bulk
                for start in range(cfg.bulk + 1, cfg.seek_big + 1, cfg.bulk_batch):
                    count = min(cfg.bulk_batch, cfg.seek_big + 1 - start)
                    peer.append_batch("big", peer.prepare(make_events(start, count)), version)
                    version += count
                if extra:
                    log(f"  (f) {cls.name:8} loaded {extra:,} more events into 'big'"
                        f" in {time.perf_counter() - t0:.1f} s")
            finally:
                peer.close()
            seconds, peer = timed(cls, path, False)
            result = {"open_s": seconds, "small_events": cfg.seek_small, "big_events": cfg.seek_big,
                      "last": cfg.seek_last, "by_scan": cls.seek_by_scan}
            try:
                iters = cfg.scan_iters if cls.seek_by_scan else cfg.seek_iters
                lat = {"small": [], "big": []}
                size = {"small": cfg.seek_small, "big": cfg.seek_big}
                for stream in ("big", "small"):           # first seek after open, reported alone
                    s = time.perf_counter()
                    got = peer.seek_last(stream, size[stream], cfg.seek_last)
                    result[f"{stream}_first_us"] = (time.perf_counter() - s) * 1e6
                    if got != cfg.seek_last:
                        raise AssertionError(f"{cls.name} seek {stream}: read {got} events")
                gc.collect()
                for _ in range(iters):
                    for stream in ("small", "big"):
                        s = time.perf_counter()
                        peer.seek_last(stream, size[stream], cfg.seek_last)
                        lat[stream].append(time.perf_counter() - s)
            finally:
                peer.close()
            for stream in ("small", "big"):
                result[f"{stream}_us"] = statistics.median(lat[stream]) * 1e6
                result[f"{stream}_p99_us"] = percentile(lat[stream], 99) * 1e6
            result["big_over_small"] = result["big_us"] / result["small_us"]
            result["iterations"] = iters
            self.results[cls.name]["f_seek"] = result
            note = " (full scan)" if cls.seek_by_scan else ""
            log(f"  (f) {cls.name:8} last {cfg.seek_last} of {cfg.seek_small:,}: {result['small_us']:,.0f} µs,"
                f" of {cfg.seek_big:,}: {result['big_us']:,.0f} µs{note}")
            if not self.keep_loaded:
                shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- report


def machine_info(root: Path) -> dict:
    info = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "msgpack": ".".join(map(str, msgpack.version)),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    info.update(filesystem_of(root))
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
            text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def filesystem_of(path: Path) -> dict:
    """The mount holding `path` (Linux /proc/mounts), or nothing elsewhere."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return {}
    real = os.path.realpath(path)
    best = None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        if real == mount or real.startswith(mount.rstrip("/") + "/"):
            if best is None or len(mount) > len(best[1]):
                best = (fields[0], mount, fields[2])
    if best is None:
        return {}
    return {"device": best[0], "mount": best[1], "fstype": best[2]}


WORKLOADS = [
    ("a_append_one_durable", "(a) durable append, 1 event each"),
    ("b_append_batch100_durable", "(b) durable append, batches of 100"),
    ("c_bulk_load_nosync", "(c) no-sync bulk load, batches of 1000"),
    ("d_read_stream", "(d) read one stream fully"),
    ("e_read_all", "(e) read $all fully"),
]


def fmt_rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}/s"


def render(results: dict, cfg: Config, names: list[str]) -> str:
    """The results as a plain-text table, peers as columns."""
    have_ratio = "evstore" in results and "sqlite" in results
    header = ["workload"] + names + (["evstore/sqlite"] if have_ratio else [])
    rows = [header]

    def ratio(key: str, field: str, invert: bool = False) -> str:
        if not have_ratio:
            return ""
        a = results["evstore"].get(key, {}).get(field)
        b = results["sqlite"].get(key, {}).get(field)
        if not a or not b:
            return "—"
        return f"{(b / a) if invert else (a / b):.2f}×"

    for key, label in WORKLOADS:
        n = next((r[key]["events"] for r in results.values() if key in r), None)
        label = f"{label} [{n:,} events]" if n else label
        row = [label] + [fmt_rate(results[name].get(key, {}).get("events_per_s")) for name in names]
        rows.append(row + ([ratio(key, "events_per_s")] if have_ratio else []))

    def seek_cell(name: str, field: str) -> str:
        seek = results[name].get("f_seek")
        if seek is None:
            return "—"
        if field == "big_over_small":
            return "n/a (scan)" if seek["by_scan"] else f"{seek[field]:.2f}"
        return f"{seek[field]:,.0f} µs" + (" (scan)" if seek["by_scan"] else "")

    last = cfg.seek_last
    for field, label, inv in (("small_us", f"(f) seek: last {last} of {cfg.seek_small:,} (median)", True),
                              ("big_us", f"(f) seek: last {last} of {cfg.seek_big:,} (median)", True),
                              ("big_over_small", "(f) seek: long / short latency", None)):
        row = [label] + [seek_cell(name, field) for name in names]
        if have_ratio:
            row.append(ratio("f_seek", field, invert=True) if inv else "")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    if have_ratio:
        lines.append("")
        lines.append("evstore/sqlite > 1 means evstore is faster (for seeks: sqlite latency / evstore latency).")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark evstore against a SQLite seed design and a raw msgpack file.")
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and single runs (about a minute)")
    parser.add_argument("--only", default=",".join(PEERS),
                        help=f"comma-separated peers to run (default: {','.join(PEERS)})")
    parser.add_argument("--dir", type=Path, default=None,
                        help="make the temporary stores under this directory (default: the system temp dir);"
                             " put it on the disk you want to measure")
    parser.add_argument("--keep", action="store_true", help="do not delete the temporary stores")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs of (a)(b)(c) per peer (default: 3, or 1 with --quick)")
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "latest.json",
                        help="where to write the results (default: bench/results/latest.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.repeats is not None:
        if args.repeats < 1:
            print("--repeats must be at least 1", file=sys.stderr)
            return 2
        cfg = Config(**{**asdict(cfg), "repeats": args.repeats})
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown or not names:
        print(f"unknown peer(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(PEERS)}",
              file=sys.stderr)
        return 2
    peers, skipped = [], {}
    for name in names:
        reason = PEERS[name].unavailable()
        if reason is None:
            peers.append(PEERS[name])
        else:
            skipped[name] = reason
            log(f"skipping {name}: {reason}")
    if not peers:
        print("no peer can run", file=sys.stderr)
        return 1

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="evstore-bench-", dir=args.dir))
    machine = machine_info(root)
    print(f"machine: {machine['nproc']} CPUs ({machine.get('usable_cpus', '?')} usable),"
          f" {machine['implementation']} {machine['python']}, {machine['platform']}")
    print(f"         sqlite {machine['sqlite']}, msgpack {machine['msgpack']},"
          f" stores in {root} ({machine.get('fstype', '?')} on {machine.get('device', '?')})")
    print(f"mode:    {'quick' if args.quick else 'full'}; peers: {', '.join(p.name for p in peers)}"
          + (f"; skipped: {', '.join(skipped)}" if skipped else ""))
    if machine.get("fstype") in ("tmpfs", "ramfs"):
        print("warning: the stores are on a RAM filesystem, where fsync costs nothing;"
              " durable numbers mean little (use --dir)")
    sys.stdout.flush()

    bench = Bench(cfg, peers, root)
    started = time.perf_counter()
    try:
        log("(a) durable single-event appends")
        bench.append_one()
        log("(b) durable batches")
        bench.append_batch()
        log("(c) no-sync bulk load")
        bench.bulk_load()
        log("(d)(e) reads")
        bench.reads()
        log("(f) seeks")
        bench.seek()
    finally:
        if args.keep:
            log(f"kept the stores in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started

    print()
    print(render(bench.results, cfg, [p.name for p in peers]))
    for name, reason in skipped.items():
        print(f"{name}: skipped ({reason})")
    print(f"\ntotal {elapsed:.0f} s")

    report = {
        "created_at": now_rfc3339(),
        "mode": "quick" if args.quick else "full",
        "machine": machine,
        "config": asdict(cfg),
        "peers": [p.name for p in peers],
        "skipped": skipped,
        "elapsed_s": elapsed,
        "results": bench.results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
