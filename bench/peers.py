"""evstore against its peers, every workload of issue 6, in one run.

    python bench/peers.py --quick        # ~30 s: smaller sizes, single runs
    python bench/peers.py                # full run (1M-event seek and RSS), ~2 minutes
    python bench/peers.py --skip cli,tail --dir /mnt/ssd/tmp

Peers, all on the same disk in the same run:

- sqlite         the seed design (bench_store.SqlitePeer): one `events` table,
                 WAL, synchronous=FULL when durable, OFF for the bulk load.
- eventsourcing  the `eventsourcing` package's SQLiteApplicationRecorder
                 (pip install 'evstore[bench]'); skipped when not installed.
- raw            the limit (bench_store.RawPeer): msgpack records appended to
                 one file, fdatasync per batch when durable.
- evstore        this project's library (bench_store.EvstorePeer) and CLI.

Workloads (a)-(f) are bench_store.py's (durable single appends, durable
batches of 100, no-sync bulk load, stream read, $all read, seek in a long
stream against a short one); this script adds:

- (g) 4 writer processes appending single durable events to one stream, each
      with the exact expected version it just read, retrying on a conflict;
- (h) the cost of one `evstore append` process, against a Python script that
      does the same insert with sqlite3 and against the floor
      `python -c 'import typer, msgpack, filelock'`;
- (i) replay of one stream with the merge reducer, with and without snapshots
      (SQLite: a snapshots table, the same fold);
- (j) tail latency: from a durable commit to a follower process printing it
      (`evstore tail -f` against a SQLite follower polling every 10 ms);
- (k) peak RSS of `evstore read` of the long stream of (f) into /dev/null.

Prints the machine, a table of events/s and ratios against the targets of
issue 6, and writes everything to bench/results/peers.json.  Not part of the
test suite: run it by hand.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))     # the working copy's evstore
sys.path.insert(0, str(BENCH_DIR))

import bench_store as bs  # noqa: E402
from bench_store import (  # noqa: E402
    Bench, Config, EvstorePeer, Peer, RawPeer, SqlitePeer, WrongVersion, log, make_events,
    now_rfc3339, percentile,
)


# ---------------------------------------------------------------- the eventsourcing peer


class EventsourcingPeer(Peer):
    """The `eventsourcing` package's SQLite recorder, used directly.

    One SQLiteApplicationRecorder (table stored_events: originator_id,
    originator_version, topic, state; primary key (originator_id,
    originator_version); rowid = notification id, its global order).  An
    event is stored as topic = type, state = the JSON of {data, metadata,
    timestamp}, at version expected + i: the primary key is the optimistic
    check, as in the package (a conflict raises its IntegrityError).  WAL,
    synchronous=FULL when durable (the package leaves SQLite's default, which
    is FULL), OFF for no-sync runs.  Reads go through select_events /
    select_notifications (pages of 10,000) and decode every state.
    """

    name = "eventsourcing"

    @classmethod
    def unavailable(cls):
        try:
            import eventsourcing.sqlite  # noqa: F401
        except ImportError as e:
            return f"not installed (pip install -e '.[bench]'): {e}"
        return None

    def __init__(self, path: Path, sync: bool) -> None:
        super().__init__(path, sync)
        from eventsourcing.persistence import IntegrityError, StoredEvent
        from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

        path.mkdir(parents=True, exist_ok=True)
        self._stored_event = StoredEvent
        self._integrity_error = IntegrityError
        self.datastore = SQLiteDatastore(str(path / "es.sqlite3"), originator_id_type="text",
                                         lock_timeout=30)
        pool = self.datastore.pool
        create = pool._create_connection
        pragma = f"PRAGMA synchronous={'FULL' if sync else 'OFF'}"

        def create_connection():
            conn = create()
            conn._sqlite_conn.execute(pragma)
            return conn

        pool._create_connection = create_connection
        self.recorder = SQLiteApplicationRecorder(self.datastore)
        self.recorder.create_table()

    def append_batch(self, stream, events, expected):
        timestamp = now_rfc3339()
        dumps = json.dumps
        make = self._stored_event
        stored = [make(stream, expected + i, ev["type"],
                       dumps({"data": ev["data"], "metadata": ev["metadata"],
                              "timestamp": timestamp}).encode())
                  for i, ev in enumerate(events, start=1)]
        try:
            self.recorder.insert_events(stored)
        except self._integrity_error as e:
            raise WrongVersion(f"version {expected + 1} of {stream} is taken") from e

    @staticmethod
    def _fold(stored) -> tuple[int, int]:
        count = total = 0
        loads = json.loads
        for s in stored:
            count += 1
            total += loads(s.state)["data"]["amount"]
        return count, total

    def read_stream(self, stream):
        return self._fold(self.recorder.select_events(stream))

    def read_all(self):
        count = total = 0
        start = 1
        while True:
            page = self.recorder.select_notifications(start, 10_000)
            c, t = self._fold(page)
            count, total = count + c, total + t
            if len(page) < 10_000:
                return count, total
            start = page[-1].id + 1

    def seek_last(self, stream, last_version, n):
        return self._fold(self.recorder.select_events(stream, gt=last_version - n))[0]

    def version(self, stream):
        last = self.recorder.select_events(stream, desc=True, limit=1)
        return last[0].originator_version if last else 0

    def close(self):
        self.datastore.close()


PEERS: dict[str, type[Peer]] = {p.name: p for p in (SqlitePeer, EventsourcingPeer, RawPeer, EvstorePeer)}


def current_version(peer: Peer, stream: str) -> int:
    """The stream's version as a client would read it before an append."""
    if isinstance(peer, SqlitePeer):
        (v,) = peer.con.execute("SELECT max(version) FROM events WHERE aggregate_id = ?",
                                (stream,)).fetchone()
        return v or 0
    if isinstance(peer, EvstorePeer):
        return peer.store.version(stream)
    return peer.version(stream)


def conflict_errors() -> tuple[type[BaseException], ...]:
    from evstore.errors import WrongExpectedVersion
    return (WrongVersion, WrongExpectedVersion)


# ---------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Extra:
    writers: int               # (g) processes
    per_writer: int            #     durable single-event appends each
    cli_iters: int             # (h) runs of each command
    replay_events: int         # (i) stream length
    snapshot_every: int
    tail_samples: int          # (j) commits timed per follower


FULL_EXTRA = Extra(writers=4, per_writer=500, cli_iters=40, replay_events=100_000,
                   snapshot_every=1000, tail_samples=150)
QUICK_EXTRA = Extra(writers=4, per_writer=200, cli_iters=15, replay_events=20_000,
                    snapshot_every=1000, tail_samples=40)


def clean_env(**extra) -> dict:
    """The environment for child processes: the working copy first on the
    path, byte-code caching on (a real install has .pyc files; a
    PYTHONDONTWRITEBYTECODE=1 shell would charge every run the compile)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EVSTORE_") and k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME")}
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def run_child(cmd: list[str], env: dict, stdin_data: bytes | None = None) -> tuple[float, float]:
    """(wall s, CPU s) of one child process; it must exit 0."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE if stdin_data else subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if stdin_data:
        p.stdin.write(stdin_data)
        p.stdin.close()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {err.decode(errors='replace')}")
    return wall, ru.ru_utime + ru.ru_stime


def evstore_command() -> list[str]:
    script = Path(sys.executable).parent / "evstore"
    return [str(script)] if script.exists() else [sys.executable, "-m", "evstore"]


# ---------------------------------------------------------------- (g) concurrent writers


def _writer(name: str, path: str, stream: str, first: int, n: int, barrier, out) -> None:
    peer = PEERS[name](Path(path), sync=True)
    conflicts = 0
    errors = conflict_errors()
    try:
        events = peer.prepare(make_events(first, n))
        barrier.wait()
        t0 = time.monotonic()
        for ev in events:
            while True:
                expected = current_version(peer, stream)
                try:
                    peer.append_one(stream, ev, expected)
                    break
                except errors:
                    conflicts += 1
        out.put((name, conflicts, t0, time.monotonic()))
    finally:
        peer.close()


def concurrent_writers(names: list[str], root: Path, x: Extra) -> dict:
    ctx = mp.get_context("fork")
    results = {}
    for name in names:
        path = root / f"writers-{name}"
        PEERS[name](path, sync=True).close()     # create it before the race
        barrier = ctx.Barrier(x.writers)
        out = ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(name, str(path), "acct-1", 1 + k * x.per_writer,
                                                   x.per_writer, barrier, out))
                 for k in range(x.writers)]
        for p in procs:
            p.start()
        rows = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
            if p.exitcode != 0:
                raise RuntimeError(f"(g) {name}: a writer exited {p.exitcode}")
        total = x.writers * x.per_writer
        peer = PEERS[name](path, sync=False)
        try:
            count, _ = peer.read_stream("acct-1")
        finally:
            peer.close()
        if count != total:
            raise AssertionError(f"(g) {name}: {count} events in the stream, expected {total}")
        seconds = max(r[3] for r in rows) - min(r[2] for r in rows)
        results[name] = {"events": total, "writers": x.writers, "seconds": seconds,
                         "events_per_s": total / seconds, "conflicts": sum(r[1] for r in rows)}
        log(f"  (g) {name:13} {total / seconds:>10,.0f} events/s, {results[name]['conflicts']} conflicts retried")
        shutil.rmtree(path, ignore_errors=True)
    return results


# ---------------------------------------------------------------- (h) CLI process cost

SQLITE_APPEND = textwrap.dedent('''\
    """One append through sqlite3, the way a script would do it: what
    `evstore append STREAM --type T --data JSON` does, on the seed design."""
    import datetime, json, sqlite3, sys
    db, stream, type_, data = sys.argv[1:5]
    data = json.loads(data)
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, aggregate_id TEXT,"
                " version INTEGER, type TEXT, data BLOB, metadata BLOB, recorded_at TEXT)")
    con.execute("CREATE UNIQUE INDEX IF NOT EXISTS events_stream_version ON events(aggregate_id, version)")
    con.execute("BEGIN IMMEDIATE")
    (v,) = con.execute("SELECT max(version) FROM events WHERE aggregate_id = ?", (stream,)).fetchone()
    v = (v or 0) + 1
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    cur = con.execute("INSERT INTO events (aggregate_id, version, type, data, metadata, recorded_at)"
                      " VALUES (?, ?, ?, ?, ?, ?)", (stream, v, type_, json.dumps(data).encode(), b"{}", now))
    con.execute("COMMIT")
    print(json.dumps({"stream": stream, "version": v, "position": cur.lastrowid, "count": 1}))
''')


def cli_cost(root: Path, x: Extra) -> dict:
    env = clean_env(PYTHONPYCACHEPREFIX=str(root / "pycache"))
    script = root / "sqlite_append.py"
    script.write_text(SQLITE_APPEND)
    data = json.dumps(make_events(1, 1)[0]["data"])
    evstore = evstore_command()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "floor: import typer, msgpack, filelock": [sys.executable, "-c", "import typer, msgpack, filelock"],
        "sqlite3 script append (FULL)": [sys.executable, str(script), str(root / "cli.sqlite3"), "acct-1",
                                         "Deposited", data],
        "evstore append": evstore + ["--store", str(root / "cli-store"), "append", "acct-1",
                                     "--type", "Deposited", "--data", data],
        "evstore append --no-sync": evstore + ["--store", str(root / "cli-store-nosync"), "append", "acct-1",
                                               "--type", "Deposited", "--data", data, "--no-sync"],
    }
    runs = {k: [] for k in commands}
    for _ in range(2):                            # warm up: page cache, .pyc files, stores created
        for cmd in commands.values():
            run_child(cmd, env)
    for _ in range(x.cli_iters):                  # interleaved, so drifting load hits all alike
        for label, cmd in commands.items():
            runs[label].append(run_child(cmd, env))
    out = {}
    for label, rs in runs.items():
        out[label] = {"wall_ms": statistics.median(r[0] for r in rs) * 1000,
                      "wall_p90_ms": percentile([r[0] for r in rs], 90) * 1000,
                      "cpu_ms": statistics.median(r[1] for r in rs) * 1000, "runs": len(rs)}
        log(f"  (h) {label:40} {out[label]['wall_ms']:7.1f} ms wall, {out[label]['cpu_ms']:7.1f} ms CPU")
    floor = out["floor: import typer, msgpack, filelock"]
    ev = out["evstore append"]
    out["ratios"] = {"evstore_over_floor_wall": ev["wall_ms"] / floor["wall_ms"],
                     "evstore_over_floor_cpu": ev["cpu_ms"] / floor["cpu_ms"],
                     "evstore_over_sqlite_script_wall": ev["wall_ms"] / out["sqlite3 script append (FULL)"]["wall_ms"]}
    out["command"] = " ".join(commands["evstore append"])
    return out


# ---------------------------------------------------------------- (i) replay


def replay_bench(root: Path, x: Extra, repeats: int) -> dict:
    import bench_replay
    from evstore import EventStore
    from evstore.features.reducers import BUILTINS
    from evstore.features.replay import replay

    fold = BUILTINS["merge"][1]                   # the in-place merge evstore's replay uses
    n, every = x.replay_events, x.snapshot_every
    bench_replay.EVERY = every
    out: dict = {"events": n, "snapshot_every": every}

    def med(fn):
        runs = []
        result = None
        for _ in range(repeats):
            t = time.perf_counter()
            result = fn()
            runs.append(time.perf_counter() - t)
        return statistics.median(runs), result

    # evstore: bench_replay's loader, one store with automatic snapshots, one without
    plain, snap = str(root / "replay-plain"), str(root / "replay-snap")
    bench_replay.load(plain, n, False)
    bench_replay.load(snap, n, True)
    with EventStore(plain) as s:
        t, (state, v) = med(lambda: replay(s, "bench", "merge", use_snapshots=False))
    assert v == n and state["amount"] == n - 1
    with EventStore(snap) as s:
        ts, (state2, _) = med(lambda: replay(s, "bench", "merge"))
        ts1, _ = med(lambda: replay(s, "bench", "merge", to_version=n - 1))
    assert state2 == state
    out["evstore"] = {"no_snapshot_s": t, "with_snapshots_s": ts, "head_minus_1_with_snapshots_s": ts1}

    # sqlite: the seed table, plus snapshots(aggregate_id, version, state) saved every `every` events
    path = root / "replay-sqlite"
    peer = SqlitePeer(path, sync=False)
    try:
        con = peer.con
        con.execute("CREATE TABLE snapshots (aggregate_id TEXT, version INTEGER, state BLOB,"
                    " PRIMARY KEY (aggregate_id, version))")
        st = None
        for start in range(0, n, every):
            batch = [{"type": "Deposited", "data": {"amount": i, "n": i % 100, "note": bench_replay.NOTE},
                      "metadata": {}} for i in range(start, min(n, start + every))]
            peer.append_batch("bench", batch, start)
            for ev in batch:
                st = fold(st, ev)
            if (start + len(batch)) % every == 0:
                con.execute("INSERT INTO snapshots VALUES (?, ?, ?)",
                            ("bench", start + len(batch), json.dumps(st).encode()))

        def sqlite_replay(to_version: int, snapshots: bool):
            state, after = None, 0
            if snapshots:
                row = con.execute("SELECT version, state FROM snapshots WHERE aggregate_id = ? AND version <= ?"
                                  " ORDER BY version DESC LIMIT 1", ("bench", to_version)).fetchone()
                if row:
                    after, state = row[0], json.loads(row[1])
            loads = json.loads
            for type_, data, metadata in con.execute(
                    "SELECT type, data, metadata FROM events WHERE aggregate_id = ? AND version > ?"
                    " AND version <= ? ORDER BY version", ("bench", after, to_version)):
                state = fold(state, {"type": type_, "data": loads(data), "metadata": loads(metadata)})
            return state

        q, qstate = med(lambda: sqlite_replay(n, False))
        qs, _ = med(lambda: sqlite_replay(n, True))
        qs1, _ = med(lambda: sqlite_replay(n - 1, True))
        assert qstate == state
        out["sqlite"] = {"no_snapshot_s": q, "with_snapshots_s": qs, "head_minus_1_with_snapshots_s": qs1}
    finally:
        peer.close()
    for name in ("sqlite", "evstore"):
        r = out[name]
        log(f"  (i) {name:8} replay {n:,}: {r['no_snapshot_s'] * 1000:8.1f} ms without snapshots,"
            f" {r['with_snapshots_s'] * 1000:6.2f} ms with, {r['head_minus_1_with_snapshots_s'] * 1000:6.2f} ms"
            f" to head-1 ({every - 1} events after a snapshot)")
    return out


# ---------------------------------------------------------------- (j) tail latency

SQLITE_FOLLOW = textwrap.dedent('''\
    """Follow the seed table: poll for rows after the last id every 10 ms,
    print each as a JSON line (the polling a SQLite user would write)."""
    import json, sqlite3, sys, time
    con = sqlite3.connect(sys.argv[1], isolation_level=None)
    last = int(sys.argv[2])
    out = sys.stdout
    while True:
        rows = con.execute("SELECT id, aggregate_id, version, type, data FROM events WHERE id > ?"
                           " ORDER BY id", (last,)).fetchall()
        for row in rows:
            last = row[0]
            out.write(json.dumps({"position": row[0], "stream": row[1], "version": row[2],
                                  "type": row[3], "data": json.loads(row[4])}) + "\\n")
        if rows:
            out.flush()
        else:
            time.sleep(0.01)
''')


def _latencies(proc, append, samples: int, seed: int) -> dict:
    import random
    rng = random.Random(seed)
    append(-1)                                    # the warm-up event proves the follower is up
    proc.stdout.readline()
    time.sleep(0.2)
    ret, call = [], []
    for i in range(samples):
        time.sleep(rng.uniform(0.005, 0.05))
        ts = time.perf_counter()
        position = append(i)
        t0 = time.perf_counter()
        line = proc.stdout.readline()
        t1 = time.perf_counter()
        if json.loads(line)["position"] != position:
            raise AssertionError(f"follower printed {line!r}, expected position {position}")
        ret.append((t1 - t0) * 1000)
        call.append((t1 - ts) * 1000)
    return {"samples": samples, "median_ms": statistics.median(ret), "p99_ms": percentile(ret, 99),
            "from_call_median_ms": statistics.median(call), "from_call_p99_ms": percentile(call, 99)}


def tail_bench(root: Path, x: Extra) -> dict:
    from evstore import EventStore, NewEvent
    out = {}
    env = clean_env(PYTHONPYCACHEPREFIX=str(root / "pycache"))
    # evstore: `evstore tail -f --all` (inotify wake-ups), durable appends
    store_dir = root / "tail-store"
    with EventStore(str(store_dir)) as es:
        es.append("warm", [NewEvent("Warm")])
        nxt = es.head() + 1
        proc = subprocess.Popen(evstore_command() + ["--store", str(store_dir), "tail", "-f", "--all",
                                                     "--from", str(nxt)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        try:
            out["evstore"] = _latencies(
                proc, lambda i: es.append(f"tail-{i % 10}", [NewEvent("Tick", {"amount": i})]).position,
                x.tail_samples, 7)
        finally:
            proc.terminate()
            proc.wait(10)
    # sqlite: the seed table, durable (FULL) appends, a polling follower
    path = root / "tail-sqlite"
    peer = SqlitePeer(path, sync=True)
    script = root / "sqlite_follow.py"
    script.write_text(SQLITE_FOLLOW)
    versions: dict[str, int] = {}

    def sqlite_append(i):
        stream = f"tail-{i % 10}"
        v = versions.get(stream, 0)
        peer.append_batch(stream, [{"type": "Tick", "data": {"amount": i}, "metadata": {}}], v)
        versions[stream] = v + 1
        return peer.con.execute("SELECT max(id) FROM events").fetchone()[0]

    proc = subprocess.Popen([sys.executable, str(script), str(path / "events.sqlite3"), "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        out["sqlite"] = _latencies(proc, sqlite_append, x.tail_samples, 7)
    finally:
        proc.terminate()
        proc.wait(10)
        peer.close()
    for name, r in out.items():
        log(f"  (j) {name:8} commit -> follower: median {r['median_ms']:.2f} ms (p99 {r['p99_ms']:.2f});"
            f" from the append call: {r['from_call_median_ms']:.2f} ms")
    return out


# ---------------------------------------------------------------- (k) memory


RSS_LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, ru = os.wait4(pid, 0)
sys.stderr.write(f"\\n{ru.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_kib(cmd: list[str], env: dict) -> tuple[int, float, str]:
    """(peak RSS in KiB, wall s, how) of ``cmd``, its stdout to /dev/null.

    Not os.wait4 on a child of this process: Linux charges a child's
    ru_maxrss with the RSS of the process it was forked from (this one,
    hundreds of MB after the loads).  /usr/bin/time -f %M forks from a
    small process; without it, a small Python launcher does the same."""
    if os.access("/usr/bin/time", os.X_OK):
        wrapped, how = ["/usr/bin/time", "-f", "\n%M"] + cmd, "/usr/bin/time -f %M"
    else:
        wrapped, how = [sys.executable, "-c", RSS_LAUNCHER] + cmd, "fork+exec from a small launcher"
    t0 = time.perf_counter()
    p = subprocess.run(wrapped, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    return int(p.stderr.decode().split()[-1]), wall, how


def read_rss(store: Path, events: int, root: Path) -> dict:
    env = clean_env(PYTHONPYCACHEPREFIX=str(root / "pycache"))
    cmd = evstore_command() + ["--store", str(store), "read", "big", "--format", "ndjson"]
    run_child(evstore_command() + ["--store", str(store), "read", "big", "--limit", "1"], env)   # warm up
    rss, wall, how = peak_rss_kib(cmd, env)
    floor_rss, _, _ = peak_rss_kib([sys.executable, "-c", "import typer, msgpack, filelock"], env)
    out = {"events": events, "peak_rss_mib": rss / 1024, "wall_s": wall, "events_per_s": events / wall,
           "floor_rss_mib": floor_rss / 1024, "measured_with": how, "command": " ".join(cmd)}
    log(f"  (k) evstore read of {events:,} events to /dev/null: peak RSS {rss / 1024:.1f} MiB"
        f" (floor {floor_rss / 1024:.1f} MiB), {events / wall:,.0f} events/s through the CLI")
    return out


# ---------------------------------------------------------------- report


def machine(root: Path) -> dict:
    info = bs.machine_info(root)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import PackageNotFoundError, version
        info["eventsourcing"] = version("eventsourcing")
    except (ImportError, PackageNotFoundError):
        info["eventsourcing"] = None
    info["loadavg_start"] = os.getloadavg()
    return info


def ratio(a, b):
    return a / b if a and b else None


def build_table(res: dict, cfg: Config, names: list[str]) -> tuple[list[list[str]], list[dict]]:
    """Rows of the main table and the list of target checks."""
    core = res.get("core", {})
    cols = names
    rows = [["workload"] + cols + ["evstore/sqlite", "target", "met"]]
    checks = []

    def rate(name, key):
        return core.get(name, {}).get(key, {}).get("events_per_s")

    def fmt(v, unit="/s"):
        return "—" if v is None else f"{v:,.0f}{unit}"

    def add(label, cells, ev_ratio, target_text, ok):
        rows.append([label] + cells + ["—" if ev_ratio is None else f"{ev_ratio:.2f}x", target_text,
                                       "—" if ok is None else ("yes" if ok else "NO")])
        if ok is not None:
            checks.append({"workload": label, "target": target_text, "met": ok,
                           "ratio": ev_ratio})

    spec = [
        ("a_append_one_durable", "durable single appends", "sqlite", 1.0, ">= 1x sqlite"),
        ("b_append_batch100_durable", "durable batches of 100", "sqlite", 1.5, ">= 1.5x sqlite"),
        ("c_bulk_load_nosync", "bulk load, no sync", "raw", 0.5, ">= 0.5x raw"),
        ("d_read_stream", "read one stream", "sqlite", 2.0, ">= 2x sqlite"),
        ("e_read_all", "read $all", "sqlite", 2.0, ">= 2x sqlite"),
    ]
    for key, label, against, want, text in spec:
        n = next((r[key]["events"] for r in core.values() if key in r), None)
        ev, base = rate("evstore", key), rate(against, key)
        r_sql = ratio(ev, rate("sqlite", key))
        ok = None if ev is None or base is None else ev / base >= want
        if against == "raw" and ev and base:
            text = f"{text} ({ev / base:.2f}x)"
        add(f"{label} [{n:,}]" if n else label, [fmt(rate(nm, key)) for nm in cols], r_sql, text, ok)

    def seek(name, field):
        s = core.get(name, {}).get("f_seek")
        if not s:
            return None
        return s[field], s["by_scan"]

    for field, label in (("small_us", f"seek last {cfg.seek_last} of {cfg.seek_small:,} (µs)"),
                         ("big_us", f"seek last {cfg.seek_last} of {cfg.seek_big:,} (µs)")):
        cells = []
        for nm in cols:
            s = seek(nm, field)
            cells.append("—" if s is None else f"{s[0]:,.0f}" + (" scan" if s[1] else ""))
        ev, sq = seek("evstore", field), seek("sqlite", field)
        add(label, cells, ratio(sq and sq[0], ev and ev[0]), "", None)
    cells = []
    for nm in cols:
        s = seek(nm, "big_over_small")
        cells.append("—" if s is None else ("n/a" if s[1] else f"{s[0]:.2f}"))
    ev = seek("evstore", "big_over_small")
    add("seek long/short", cells, None, "flat (<= 1.5)", None if ev is None else ev[0] <= 1.5)

    g = res.get("writers")
    if g:
        ev, sq = g.get("evstore", {}).get("events_per_s"), g.get("sqlite", {}).get("events_per_s")
        add(f"{next(iter(g.values()))['writers']} writer processes, one stream",
            [fmt(g.get(nm, {}).get("events_per_s")) for nm in cols], ratio(ev, sq), ">= 1x sqlite",
            None if not ev or not sq else ev >= sq)
    h = res.get("cli")
    if h:
        fl = h["floor: import typer, msgpack, filelock"]["wall_ms"]
        ev = h["evstore append"]["wall_ms"]
        sq = h["sqlite3 script append (FULL)"]["wall_ms"]
        cells = ["—"] * len(cols)
        if "sqlite" in cols:
            cells[cols.index("sqlite")] = f"{sq:.0f} ms"
        if "evstore" in cols:
            cells[cols.index("evstore")] = f"{ev:.0f} ms"
        add(f"CLI append process (floor {fl:.0f} ms)", cells, sq / ev,
            f"<= 1.25x floor ({ev / fl:.2f}x)", ev / fl <= 1.25)
    i = res.get("replay")
    if i:
        for key, label in (("no_snapshot_s", f"replay {i['events']:,}, no snapshots"),
                           ("with_snapshots_s", "replay, with snapshots"),
                           ("head_minus_1_with_snapshots_s", f"replay, {i['snapshot_every'] - 1} after a snapshot")):
            cells = ["—"] * len(cols)
            for nm in ("sqlite", "evstore"):
                if nm in cols and nm in i:
                    ms = i[nm][key] * 1000
                    cells[cols.index(nm)] = f"{ms:,.1f} ms" if ms >= 10 else f"{ms:.2f} ms"
            add(label, cells, ratio(i.get("sqlite", {}).get(key), i.get("evstore", {}).get(key)), "", None)
    j = res.get("tail")
    if j:
        cells = ["—"] * len(cols)
        for nm in ("sqlite", "evstore"):
            if nm in cols and nm in j:
                cells[cols.index(nm)] = f"{j[nm]['from_call_median_ms']:.2f} ms"
        ev = j.get("evstore", {}).get("from_call_median_ms")
        add("tail: append call -> follower prints (median)", cells,
            ratio(j.get("sqlite", {}).get("from_call_median_ms"), ev), "< 100 ms", None if ev is None else ev < 100)
    k = res.get("rss")
    if k:
        cells = ["—"] * len(cols)
        if "evstore" in cols:
            cells[cols.index("evstore")] = f"{k['peak_rss_mib']:.1f} MiB"
        add(f"peak RSS, CLI read of {k['events']:,} events", cells, None, "< 100 MB",
            k["peak_rss_mib"] * 1024 * 1024 < 100e6)
    return rows, checks


def render(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" + "---:|" * (len(rows[0]) - 1)]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


# ---------------------------------------------------------------- main

STEPS = ("core", "rss", "writers", "cli", "replay", "tail")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, single runs")
    ap.add_argument("--only", default=",".join(PEERS), help=f"peers (default {','.join(PEERS)})")
    ap.add_argument("--skip", default="", help=f"steps to skip, from {','.join(STEPS)}")
    ap.add_argument("--dir", type=Path, help="make the stores under DIR (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="leave the stores on disk")
    ap.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "peers.json")
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = ap.parse_args(argv)
    cfg = bs.QUICK if args.quick else bs.FULL
    x = QUICK_EXTRA if args.quick else FULL_EXTRA
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(STEPS):
        ap.error(f"unknown step(s) {', '.join(sorted(skip - set(STEPS)))}")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    if any(n not in PEERS for n in names):
        ap.error(f"peers are {', '.join(PEERS)}")
    skipped = {n: PEERS[n].unavailable() for n in names if PEERS[n].unavailable()}
    for n, why in skipped.items():
        log(f"skipping {n}: {why}")
    names = [n for n in names if n not in skipped]
    if "evstore" not in names:
        ap.error("evstore must be one of the peers")

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="evstore-peers-", dir=args.dir))
    info = machine(root)
    print(f"machine: {info.get('cpu_model', '?')}, {info['nproc']} cores ({info.get('usable_cpus', '?')} usable)")
    print(f"         {info['implementation']} {info['python']}, {info['platform']}")
    print(f"         sqlite {info['sqlite']}, msgpack {info['msgpack']}, eventsourcing {info['eventsourcing']}")
    print(f"         stores in {root} ({info.get('fstype', '?')} on {info.get('device', '?')})")
    print(f"         load average at start {' '.join(f'{v:.2f}' for v in info['loadavg_start'])}"
          f"; mode {'quick' if args.quick else 'full'}; commit {info.get('git_commit')}")
    if info.get("fstype") in ("tmpfs", "ramfs"):
        print("warning: a RAM filesystem: fsync is free, durable numbers mean little (use --dir)")
    sys.stdout.flush()

    res: dict = {}
    started = time.perf_counter()
    try:
        if "core" not in skip:
            log("(a)-(f): bench_store.py's workloads")
            bench = Bench(cfg, [PEERS[n] for n in names], root)
            bench.keep_loaded = True
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
            res["core"] = bench.results
            if "rss" not in skip:
                log("(k) peak RSS of a CLI read of the long stream")
                res["rss"] = read_rss(bench.loaded["evstore"], cfg.seek_big, root)
            for path in bench.loaded.values():
                shutil.rmtree(path, ignore_errors=True)
        if "writers" not in skip:
            log(f"(g) {x.writers} concurrent writer processes")
            res["writers"] = concurrent_writers([n for n in names if n != "raw"], root, x)
        if "cli" not in skip:
            log("(h) CLI process cost per append")
            res["cli"] = cli_cost(root, x)
        if "replay" not in skip:
            log("(i) replay")
            res["replay"] = replay_bench(root, x, 1 if args.quick else 3)
        if "tail" not in skip:
            log("(j) tail latency")
            res["tail"] = tail_bench(root, x)
    finally:
        if args.keep:
            log(f"kept the stores in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    info["loadavg_end"] = os.getloadavg()

    rows, checks = build_table(res, cfg, names)
    print()
    print(render(rows))
    print("\nevstore/sqlite > 1: evstore is faster (seeks, CLI, replay and tail: sqlite's time / evstore's).")
    if args.markdown:
        print()
        print(render_markdown(rows))
    missed = [c for c in checks if not c["met"]]
    print(f"\ntargets met: {len(checks) - len(missed)} of {len(checks)}"
          + (f"; missed: {', '.join(c['workload'] for c in missed)}" if missed else ""))
    print(f"load average at end {' '.join(f'{v:.2f}' for v in info['loadavg_end'])}; total {elapsed:.0f} s")
    report = {"created_at": now_rfc3339(), "mode": "quick" if args.quick else "full", "machine": info,
              "config": asdict(cfg), "extra": asdict(x), "peers": names, "skipped": skipped,
              "elapsed_s": elapsed, "results": res, "checks": checks, "table": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
