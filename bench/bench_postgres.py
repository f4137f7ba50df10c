"""evstore on PostgreSQL against its peers, on one throwaway server, in one run.

    python bench/bench_postgres.py --quick     # ~1 minute: small sizes, checks it all works
    python bench/bench_postgres.py             # the full run (bench/README.md)
    python bench/bench_postgres.py --only evstore,baseline --json out.json

The server: tests/pg_server.py's (imported, not copied) -- a cluster made in
a temporary directory, unix socket only, fsync on, stopped at the end; or
the server EVSTORE_TEST_PG=postgresql://... names.  Each peer gets a schema
of its own on that server, so every peer pays for the same disk and server.

Peers:

- evstore        the PostgreSQL backend, through the Backend interface
                 (evstore.backends.open_backend): dense positions in
                 commit order, exact expected versions, idempotent retries.
- eventsourcing  the `eventsourcing` package's PostgresApplicationRecorder
                 (pip install -e '.[bench]'), used directly: a bigserial
                 notification id, LOCK TABLE ... IN EXCLUSIVE MODE per
                 insert so ids commit in order, (originator_id, version) the
                 primary key that makes the optimistic check; state = JSON.
- baseline       Message-DB style: bigserial global position, a plpgsql
                 write function taking a transaction advisory lock per
                 stream and checking the expected version, data as jsonb,
                 one round trip per write.  Fast, but a rolled-back write
                 leaves a hole and writers on different streams commit out
                 of position order, so a follower polling by position can
                 skip events for good (workload "missed").

Workloads (sizes in brackets; --quick makes them small):

- single    durable single-event appends to one stream, exact versions
- batch     durable batches of 100 events
            (these two and the next two: the median of --runs runs, the
            peers' order rotated each run)
- 1stream   4 writer processes on one stream: each reads the version, appends
            one event with it as the exact expected version, retries on a
            conflict; events/s from the first start to the last finish
- 4streams  4 writer processes, a stream each (no conflicts)
- read      read one 100k-event stream and decode every event (best of 3)
- readall   read the whole store by position and decode every event (best of 3)
- latency   a follower process woken by the peer's notification (evstore:
            Backend.watcher(); the others: LISTEN) reads what is new; the
            time from the append's return (its commit acknowledged) to the
            follower holding the event (median, p90, in ms), and the median
            from the append call, which adds the commit's own flush
- missed    4 writer processes on 4 streams and a follower polling "after the
            last position I saw" as fast as it can; afterwards, how many
            committed events it never saw (must be 0 for evstore)

Prints the machine, one table with ratios (evstore/eventsourcing and
evstore/baseline; > 1 means evstore is better) and the targets of issue 14.
Not part of the test suite: run it by hand.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from uuid import uuid4

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))            # the working copy's evstore
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the tests' throwaway server (pg_server.py)


@dataclass(frozen=True)
class Sizes:
    single: int = 2000          # durable single appends
    batches: int = 200          # durable batches of 100
    writers: int = 4            # processes in 1stream / 4streams / missed
    per_writer: int = 500       # appends each in 1stream / 4streams
    read_events: int = 100_000  # the long stream of read / readall
    latency_samples: int = 150
    missed_seconds: float = 5.0
    runs: int = 5               # single/batch/1stream/4streams: medians of this many


QUICK = Sizes(single=200, batches=10, per_writer=60, read_events=10_000,
              latency_samples=30, missed_seconds=1.5, runs=1)
BATCH = 100


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Conflict(Exception):
    """A peer's "wrong expected version"."""


def event(n: int, **extra) -> dict:
    return {"type": "Deposited", "data": {"amount": n % 100, "account": f"acc-{n % 17}",
                                          "note": "x" * 40, **extra},
            "metadata": {"source": "bench"}}


# ---------------------------------------------------------------- peers


class EvstorePeer:
    name = "evstore"

    @staticmethod
    def unavailable():
        return None

    def __init__(self, url: str, create: bool = True):
        from evstore.backends import open_backend
        self.b = open_backend(url + "&schema=bench_evstore", lock_timeout=60)

    @staticmethod
    def _prep(events):
        from evstore.core.backend import Prepared
        from evstore.model import normalize, pack_fields
        out = []
        for e in events:
            n = normalize(e)
            out.append(Prepared(n.id, n.type, pack_fields(n, 16 << 20)))
        return out

    def append(self, stream, events, expected):
        from evstore.errors import WrongExpectedVersion
        try:
            self.b.append(stream, self._prep(events), expected)
        except WrongExpectedVersion as e:
            raise Conflict(str(e)) from None

    def version(self, stream):
        return self.b.version(stream)

    def read_stream(self, stream):
        return fold(e.data for e in self.b.read_stream(stream))

    def read_all(self):
        return fold(e.data for e in self.b.read_all())

    def poll(self, after):
        """Events after position ``after``: [(position, data)]."""
        return [(e.position, e.data) for e in self.b.read_all(lo=after + 1)]

    def follow(self, after, timeout):
        """Wait for a commit past ``after`` (the backend's watcher)."""
        if not hasattr(self, "_w"):
            self._w = self.b.watcher()
        self._w.wait(after, timeout)
        return self.poll(after)

    def total(self):
        return self.b.head()

    def close(self):
        self.b.close()


class EventsourcingPeer:
    name = "eventsourcing"
    SCHEMA = "bench_es"

    @staticmethod
    def unavailable():
        try:
            import eventsourcing.postgres  # noqa: F401 - only whether it imports
        except ImportError as e:
            return f"not installed (pip install -e '.[bench]'): {e}"
        return None

    def __init__(self, url: str, create: bool = True):
        from eventsourcing.persistence import IntegrityError, StoredEvent
        from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(url)
        if create:
            with connect(url) as c:
                c.execute(f"CREATE SCHEMA IF NOT EXISTS {self.SCHEMA}")
        self._stored, self._integrity = StoredEvent, IntegrityError
        self.ds = PostgresDatastore(d.get("dbname", "postgres"), d.get("host", ""),
                                    d.get("port", 5432), d.get("user", "postgres"),
                                    d.get("password", ""), schema=self.SCHEMA,
                                    originator_id_type="text", lock_timeout=60,
                                    pool_size=2)
        self.rec = PostgresApplicationRecorder(self.ds)
        if create:  # not in the worker processes: concurrent CREATE OR REPLACE FUNCTION fails
            self.rec.create_table()
        self._url = url

    def append(self, stream, events, expected):
        dumps, make = json.dumps, self._stored
        stored = [make(stream, expected + i, e["type"],
                       dumps({"data": e["data"], "metadata": e["metadata"]}).encode())
                  for i, e in enumerate(events, start=1)]
        try:
            self.rec.insert_events(stored)
        except self._integrity as e:
            raise Conflict(str(e)) from None

    def version(self, stream):
        last = self.rec.select_events(stream, desc=True, limit=1)
        return last[0].originator_version if last else 0

    def read_stream(self, stream):
        loads = json.loads
        return fold(loads(s.state)["data"] for s in self.rec.select_events(stream))

    def _page(self, after, limit=10_000):
        return self.rec.select_notifications(after + 1, limit)

    def read_all(self):
        loads, count, total, after = json.loads, 0, 0, 0
        while True:
            page = self._page(after)
            c, t = fold(loads(n.state)["data"] for n in page)
            count, total = count + c, total + t
            if len(page) < 10_000:
                return count, total
            after = page[-1].id

    def poll(self, after):
        loads = json.loads
        return [(n.id, loads(n.state)["data"]) for n in self._page(after)]

    def follow(self, after, timeout):
        if not hasattr(self, "_listen"):
            self._listen = Listener(self._url, self.rec.channel_name)
        self._listen.wait(timeout, lambda: (self.rec.max_notification_id() or 0) > after)
        return self.poll(after)

    def total(self):
        with connect(self._url) as c:
            return c.execute(f"SELECT count(*) FROM {self.SCHEMA}.stored_events").fetchone()[0]

    def close(self):
        if hasattr(self, "_listen"):
            self._listen.close()
        self.ds.close()


BASELINE_DDL = """
CREATE SCHEMA IF NOT EXISTS bench_mdb;
CREATE TABLE IF NOT EXISTS bench_mdb.messages (
    global_position bigserial PRIMARY KEY,
    stream_name text NOT NULL,
    position bigint NOT NULL,
    id uuid NOT NULL UNIQUE,
    type text NOT NULL,
    data jsonb,
    metadata jsonb,
    time timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_stream ON bench_mdb.messages (stream_name, position);
CREATE OR REPLACE FUNCTION bench_mdb.write_batch(
    _stream text, _ids uuid[], _types text[], _datas jsonb[], _metas jsonb[], _expected bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE _version bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(_stream));
    SELECT coalesce(max(position), 0) INTO _version
        FROM bench_mdb.messages WHERE stream_name = _stream;
    IF _expected IS NOT NULL AND _version <> _expected THEN
        RAISE EXCEPTION 'Wrong expected version: % (Stream: %, Stream Version: %)',
            _expected, _stream, _version USING ERRCODE = 'P0001';
    END IF;
    INSERT INTO bench_mdb.messages (stream_name, position, id, type, data, metadata)
        SELECT _stream, _version + t.i, t.id, t.type, t.data, t.meta
        FROM unnest(_ids, _types, _datas, _metas) WITH ORDINALITY AS t(id, type, data, meta, i);
    PERFORM pg_notify('bench_mdb', '');
    RETURN _version + array_length(_ids, 1);
END $$;
"""


class BaselinePeer:
    """Message DB's design (its write_message function, batched): see the
    module docstring.  Reads decode the jsonb text the server sends."""

    name = "baseline"

    @staticmethod
    def unavailable():
        return None

    def __init__(self, url: str, create: bool = True):
        self._url = url
        self.c = connect(url)
        if create:
            self.c.execute(BASELINE_DDL)

    def append(self, stream, events, expected):
        import psycopg
        try:
            self.c.execute("SELECT bench_mdb.write_batch(%s, %s::uuid[], %s, %s::jsonb[],"
                           " %s::jsonb[], %s)",
                           (stream, [str(uuid4()) for _ in events], [e["type"] for e in events],
                            [json.dumps(e["data"]) for e in events],
                            [json.dumps(e["metadata"]) for e in events], expected))
        except psycopg.errors.RaiseException as e:
            raise Conflict(str(e)) from None

    def version(self, stream):
        return self.c.execute("SELECT coalesce(max(position), 0) FROM bench_mdb.messages"
                              " WHERE stream_name = %s", (stream,)).fetchone()[0]

    def _rows(self, sql, params):
        """Pages by key, as the others read; data as text, decoded here."""
        loads, key = json.loads, params[-1]
        while True:
            rows = self.c.execute(sql, (*params[:-1], key)).fetchall()
            for r in rows:
                yield r[0], loads(r[1])
            if len(rows) < 10_000:
                return
            key = rows[-1][2]

    def read_stream(self, stream):
        return fold(d for _, d in self._rows(
            "SELECT global_position, data::text, position FROM bench_mdb.messages"
            " WHERE stream_name = %s AND position > %s ORDER BY position LIMIT 10000",
            (stream, 0)))

    def poll(self, after):
        return list(self._rows(
            "SELECT global_position, data::text, global_position FROM bench_mdb.messages"
            " WHERE global_position > %s ORDER BY global_position LIMIT 10000", (after,)))

    def read_all(self):
        return fold(d for _, d in self.poll(0))

    def follow(self, after, timeout):
        if not hasattr(self, "_listen"):
            self._listen = Listener(self._url, "bench_mdb")
        self._listen.wait(timeout, lambda: self.poll_head() > after)
        return self.poll(after)

    def poll_head(self):
        return self.c.execute("SELECT coalesce(max(global_position), 0)"
                              " FROM bench_mdb.messages").fetchone()[0]

    def total(self):
        return self.c.execute("SELECT count(*) FROM bench_mdb.messages").fetchone()[0]

    def close(self):
        if hasattr(self, "_listen"):
            self._listen.close()
        self.c.close()


PEERS = {p.name: p for p in (EvstorePeer, EventsourcingPeer, BaselinePeer)}


def connect(url: str):
    import psycopg
    return psycopg.connect(url, autocommit=True)


class Listener:
    """LISTEN on a connection of its own; :meth:`wait` returns when a
    notification arrives, ``ready()`` holds, or ``timeout`` passes."""

    def __init__(self, url: str, channel: str):
        self.c = connect(url)
        self.c.execute(f'LISTEN "{channel}"')

    def wait(self, timeout, ready) -> None:
        import select
        if ready():
            return
        select.select([self.c.fileno()], [], [], timeout)
        pg = self.c.pgconn
        pg.consume_input()
        while pg.notifies() is not None:
            pass

    def close(self):
        self.c.close()


def fold(datas) -> tuple[int, int]:
    """(count, sum of amounts): every event decoded and touched."""
    count = total = 0
    for d in datas:
        count += 1
        total += d["amount"]
    return count, total


# ---------------------------------------------------------------- workloads


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def w_single(peer, sz: Sizes, rep: int) -> dict:
    def run():
        for i in range(sz.single):
            peer.append(f"single-{rep}", [event(i)], i)
    return {"events": sz.single, "rate": sz.single / timed(run)}


def w_batch(peer, sz: Sizes, rep: int) -> dict:
    def run():
        for b in range(sz.batches):
            peer.append(f"batch-{rep}", [event(i) for i in range(BATCH)], b * BATCH)
    n = sz.batches * BATCH
    return {"events": n, "rate": n / timed(run)}


def _writer(name, url, stream, count, exact_from_store, start, out):
    """One writer process: ``count`` single appends; with
    ``exact_from_store`` each reads the version first and retries conflicts."""
    try:
        peer = PEERS[name](url, create=False)
        conflicts, version = 0, peer.version(stream)
        start.wait()
        t0 = time.monotonic()
        for i in range(count):
            while True:
                if exact_from_store:
                    version = peer.version(stream)
                try:
                    peer.append(stream, [event(i)], version)
                    version += 1
                    break
                except Conflict:
                    conflicts += 1
                    if not exact_from_store:
                        raise
        out.put(("ok", t0, time.monotonic(), conflicts))
        peer.close()
    except BaseException:  # noqa: BLE001 - reported by the parent
        out.put(("error", traceback.format_exc(), 0, 0))


def _writers(name, url, streams, count, exact, ctx) -> dict:
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(name, url, s, count, exact, start, out))
             for s in streams]
    for p in procs:
        p.start()
    time.sleep(1.0)  # every child connected and read its version
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    errors = [r[1] for r in results if r[0] == "error"]
    if errors:
        raise RuntimeError(errors[0])
    t0, t1 = min(r[1] for r in results), max(r[2] for r in results)
    n = count * len(streams)
    return {"events": n, "rate": n / (t1 - t0), "conflicts": sum(r[3] for r in results)}


def w_one_stream(peer, sz, rep, url, ctx):
    return _writers(peer.name, url, [f"contended-{rep}"] * sz.writers, sz.per_writer, True, ctx)


def w_four_streams(peer, sz, rep, url, ctx):
    return _writers(peer.name, url, [f"own-{rep}-{i}" for i in range(sz.writers)],
                    sz.per_writer, False, ctx)


def w_read(peer, sz: Sizes, rep: int) -> dict:
    left, i = sz.read_events, 0
    while left:  # loaded in batches of 1,000: 100 durable commits for 100k
        n = min(1000, left)
        peer.append("long-1", [event(i + k) for k in range(n)], i)
        i, left = i + n, left - n
    got = []
    secs = best_of(READS, lambda: got.append(peer.read_stream("long-1")))
    assert got[0][0] == sz.read_events, got
    return {"events": sz.read_events, "rate": sz.read_events / secs}


def w_read_all(peer, sz: Sizes, rep: int) -> dict:
    got = []
    secs = best_of(READS, lambda: got.append(peer.read_all()))
    return {"events": got[0][0], "rate": got[0][0] / secs}


READS = 3  #: reads are repeated and the best kept: the first also plans and warms


def best_of(n: int, fn) -> float:
    return min(timed(fn) for _ in range(n))


def _follower(name, url, after, expect, ready, out):
    try:
        peer = PEERS[name](url, create=False)
        peer.follow(after, 0.01)  # connect and LISTEN before the writer starts
        ready.set()
        seen, deadline = {}, time.monotonic() + 120
        while len(seen) < expect and time.monotonic() < deadline:
            for pos, data in peer.follow(after, 1.0):
                seen[data["i"]] = time.monotonic()
                after = max(after, pos)
        out.put(("ok", seen))
        peer.close()
    except BaseException:  # noqa: BLE001
        out.put(("error", traceback.format_exc()))


def w_latency(peer, sz, rep, url, ctx) -> dict:
    """Two figures per event: from the append call (so including the
    commit's flush) and from the append's return (the commit acknowledged;
    the follower may see it a little before the writer does: then < 0)."""
    after = last_position(peer)
    ready, out = ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_follower, args=(peer.name, url, after, sz.latency_samples,
                                            ready, out))
    p.start()
    ready.wait(60)
    v = peer.version("latency-1")
    called, acked = {}, {}
    for i in range(sz.latency_samples):
        time.sleep(0.01)
        called[i] = time.monotonic()
        peer.append("latency-1", [event(i, i=i)], v + i)
        acked[i] = time.monotonic()
    status, seen = out.get(timeout=180)
    p.join()
    if status == "error":
        raise RuntimeError(seen)
    from_call = sorted((t - called[i]) * 1000 for i, t in seen.items())
    from_ack = sorted((t - acked[i]) * 1000 for i, t in seen.items())
    return {"events": len(seen), "median_ms": statistics.median(from_ack),
            "p90_ms": from_ack[max(0, int(len(from_ack) * 0.9) - 1)],
            "median_from_call_ms": statistics.median(from_call)}


def last_position(peer) -> int:
    if isinstance(peer, EvstorePeer):
        return peer.b.head()
    if isinstance(peer, EventsourcingPeer):
        return peer.rec.max_notification_id() or 0
    return peer.poll_head()


def _poller(name, url, after, stop, out):
    """Poll "after the last position seen" until told to stop, then once more."""
    try:
        peer = PEERS[name](url, create=False)
        seen = 0
        while not stop.is_set():
            for pos, _ in peer.poll(after):
                seen += 1
                after = max(after, pos)
        for pos, _ in peer.poll(after):
            seen += 1
        out.put(("ok", seen))
        peer.close()
    except BaseException:  # noqa: BLE001
        out.put(("error", traceback.format_exc()))


def _timed_writer(name, url, stream, seconds, start, out):
    try:
        peer = PEERS[name](url, create=False)
        version, n = peer.version(stream), 0
        start.wait()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            peer.append(stream, [event(n)], version)
            version, n = version + 1, n + 1
        out.put(("ok", n))
        peer.close()
    except BaseException:  # noqa: BLE001
        out.put(("error", traceback.format_exc()))


def w_missed(peer, sz, rep, url, ctx) -> dict:
    before = peer.total()
    after = last_position(peer)
    start, stop, out, pout = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    poller = ctx.Process(target=_poller, args=(peer.name, url, after, stop, pout))
    writers = [ctx.Process(target=_timed_writer,
                           args=(peer.name, url, f"miss-{i}", sz.missed_seconds, start, out))
               for i in range(sz.writers)]
    poller.start()
    for w in writers:
        w.start()
    time.sleep(1.0)
    start.set()
    done = [out.get(timeout=600) for _ in writers]
    for w in writers:
        w.join()
    stop.set()
    status, seen = pout.get(timeout=120)
    poller.join()
    errors = [d[1] for d in done if d[0] == "error"] + ([seen] if status == "error" else [])
    if errors:
        raise RuntimeError(errors[0])
    written = peer.total() - before
    return {"events": written, "missed": written - seen}


# ---------------------------------------------------------------- the run


WORKLOADS = [
    ("single", "durable single appends", "rate"),
    ("batch", f"durable batches of {BATCH}", "rate"),
    ("1stream", "4 writers, one stream (exact + retry)", "rate"),
    ("4streams", "4 writers, 4 streams", "rate"),
    ("read", "read one stream", "rate"),
    ("readall", "read all", "rate"),
    ("latency", "follower latency after the commit, median ms", "median_ms"),
    ("missed", "missed by a polling follower", "missed"),
]
TARGETS = {  # issue 14: (against, minimum ratio evstore/peer)
    "single": [("eventsourcing", 1.0), ("baseline", 0.9)],
    "batch": [("eventsourcing", 1.0), ("baseline", 0.9)],
    "1stream": [("eventsourcing", 1.0)],
    "4streams": [("eventsourcing", 1.0), ("baseline", 1.0)],  # baseline: the stretch
    "read": [("eventsourcing", 2.0)],
    "readall": [("eventsourcing", 2.0)],
}


REPEATED = {"single", "batch", "1stream", "4streams"}
FUNCS = {"single": (w_single, False), "batch": (w_batch, False),
         "1stream": (w_one_stream, True), "4streams": (w_four_streams, True),
         "read": (w_read, False), "readall": (w_read_all, False),
         "latency": (w_latency, True), "missed": (w_missed, True)}


def run_all(names, url, sz, ctx, only_workloads) -> dict:
    """Workload by workload, every peer in turn; the repeated workloads
    rotate the peers' order each run and keep the median run, so a change
    of load on a shared machine does not land on one peer only."""
    peers = {n: PEERS[n](url) for n in names}
    results: dict = {n: {} for n in names}
    try:
        for key, label, _ in WORKLOADS:
            if only_workloads and key not in only_workloads:
                continue
            fn, spawns = FUNCS[key]
            samples: dict = {n: [] for n in names}
            for rep in range(sz.runs if key in REPEATED else 1):
                k = rep % len(names)
                for n in names[k:] + names[:k]:
                    log(f"  {label}: {n}" + (f" (run {rep + 1})" if key in REPEATED else ""))
                    args = (peers[n], sz, rep) + ((url, ctx) if spawns else ())
                    try:
                        samples[n].append(fn(*args))
                    except Exception as e:  # noqa: BLE001 - one failure should not hide the rest
                        log(f"  {n}: {key} FAILED: {e}")
                        samples[n].append({"error": str(e)[:500]})
            for n in names:
                results[n][key] = median_run(samples[n])
    finally:
        for p in peers.values():
            p.close()
    return results


def median_run(runs: list[dict]) -> dict:
    errors = [r for r in runs if "error" in r]
    if errors or "rate" not in runs[0]:
        return errors[0] if errors else runs[0]
    ordered = sorted(runs, key=lambda r: r["rate"])
    best = dict(ordered[len(ordered) // 2])
    if len(runs) > 1:
        best["rates"] = [r["rate"] for r in runs]
    return best


def fmt(key, r) -> str:
    if r is None:
        return "—"
    if "error" in r:
        return "error"
    if key == "latency":
        return (f"{r['median_ms']:.2f} (p90 {r['p90_ms']:.1f}; from the call "
                f"{r['median_from_call_ms']:.1f})")
    if key == "missed":
        return f"{r['missed']:,} of {r['events']:,}"
    extra = f" ({r['conflicts']} conflicts)" if r.get("conflicts") else ""
    return f"{r['rate']:,.0f}/s{extra}"


def ratio(key, mine, other) -> float | None:
    if not mine or not other or "error" in mine or "error" in other:
        return None
    if key == "missed":
        return None
    if key == "latency":
        return other["median_ms"] / mine["median_ms"]
    return mine["rate"] / other["rate"]


def table(results: dict, names: list[str]) -> str:
    head = ["workload", *names, "evstore/eventsourcing", "evstore/baseline", "targets"]
    rows = [head, ["---"] + ["---:"] * (len(head) - 1)]
    for key, label, _ in WORKLOADS:
        ev = results.get("evstore", {}).get(key)
        cells = [label] + [fmt(key, results.get(n, {}).get(key)) for n in names]
        notes = []
        for other in ("eventsourcing", "baseline"):
            r = ratio(key, ev, results.get(other, {}).get(key))
            cells.append("—" if r is None else f"{r:.2f}x")
            for against, need in TARGETS.get(key, []):
                if against == other and r is not None:
                    notes.append(f"≥{need}x {other[:5]}: {'yes' if r >= need else 'NO'}")
        if key == "latency" and ev and "median_ms" in ev:
            notes.append(f"≤5 ms: {'yes' if ev['median_ms'] <= 5 else 'NO'}")
        if key == "missed" and ev and "missed" in ev:
            notes.append(f"0: {'yes' if ev['missed'] == 0 else 'NO'}")
        cells.append("; ".join(notes))
        rows.append(cells)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def machine(url) -> dict:
    with connect(url) as c:
        server = c.execute("SHOW server_version").fetchone()[0]
        settings = {k: c.execute(f"SHOW {k}").fetchone()[0]
                    for k in ("fsync", "synchronous_commit", "shared_buffers")}
    import psycopg
    try:
        from importlib.metadata import version
        es = version("eventsourcing")
    except Exception:  # noqa: BLE001
        es = None
    return {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load": os.getloadavg(), "python": platform.python_version(),
            "postgresql": server, "server_settings": settings,
            "psycopg": psycopg.__version__, "eventsourcing": es}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: checks it all works")
    ap.add_argument("--only", help="peers, comma-separated (evstore,eventsourcing,baseline)")
    ap.add_argument("--workloads", help="comma-separated: " + ",".join(k for k, _, _ in WORKLOADS))
    ap.add_argument("--json", help="also write the results to this file")
    for f in Sizes.__dataclass_fields__:
        ap.add_argument("--" + f.replace("_", "-"), type=float if f == "missed_seconds" else int)
    args = ap.parse_args(argv)
    sz = QUICK if args.quick else Sizes()
    sz = replace(sz, **{f: getattr(args, f) for f in Sizes.__dataclass_fields__
                        if getattr(args, f) is not None})
    names = [n for n in PEERS if not args.only or n in args.only.split(",")]
    only_workloads = set(args.workloads.split(",")) if args.workloads else None

    from pg_server import PgServer
    server = PgServer().start()
    try:
        from evstore.backends.postgres.connect import split_url
        url = split_url(server.url)[0]
        ctx = mp.get_context("spawn")  # no psycopg connection crosses a fork
        info = machine(url)
        log(f"server {info['postgresql']} ({'external' if server.external else 'throwaway'}),"
            f" sizes {asdict(sz)}")
        for name in list(names):
            why = PEERS[name].unavailable()
            if why:
                log(f"{name}: skipped: {why}")
                names.remove(name)
        results = run_all(names, url, sz, ctx, only_workloads)
        info["load_end"] = os.getloadavg()
    finally:
        server.cleanup()
    print(f"{info['when']}; {info['cores']} cores, load {info['load'][0]:.1f} -> "
          f"{info['load_end'][0]:.1f}; PostgreSQL {info['postgresql']} "
          f"{info['server_settings']}; Python {info['python']}, psycopg {info['psycopg']}, "
          f"eventsourcing {info['eventsourcing']}; {'quick' if args.quick else 'full'} sizes")
    print(table(results, [n for n in names if n in results]))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "sizes": asdict(sz),
                                               "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
