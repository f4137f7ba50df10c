"""Forgetting on PostgreSQL: delete, truncate, retention and compaction in
the backend (evstore/backends/postgres/forget.py), against a real server.

Why here and through the backend: these are the promises only the
PostgreSQL backend can break -- a cut taken under the lock appends take, a
tombstone refused inside the append's two round trips, a cache that costs
one statement per read, compaction deleting exactly the unreadable rows in
short transactions while writers and followers go on, a server crash in
the middle of it, verify telling removed events from damage, imports that
keep gaps, and a schema from before forgetting upgraded by a write.  The
front end's semantics (filtered reads, the CLI) are the contract suite's.
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from evstore.backends import open_backend
from evstore.backends.postgres import forget
from evstore.backends.postgres.writes import add_removed
from evstore.core.forgetting import Cut, Forgetting, Retention
from evstore.core.rules import ANY
from evstore.errors import InvalidEvent, StreamDeleted, StreamNotFound, WrongExpectedVersion

from core_helpers import LONG, spawn
from pg_server import wait_ready
from .helpers import fill, prep
from .test_pg_roundtrips import round_trips
from .test_postgres import admin

pytestmark = pytest.mark.usefixtures("pg_server")


@pytest.fixture
def kind():
    """``open_same`` on PostgreSQL only (tests/backends/conftest.py)."""
    return "postgres"


def view_of(b, now_us: int | None = None):
    """The view the front end builds: ``view_of(b)()`` is a fresh one."""
    def view():
        cuts, rules = b.forgetting_state()
        return Forgetting(cuts, rules, now_us if now_us is not None else int(time.time() * 1e6))
    return view


def rows(url: str, table: str, cols: str = "*", order: str = "1") -> list[tuple]:
    from evstore.backends.postgres.connect import split_url
    schema = split_url(url)[1]
    with admin(url) as c:
        return c.execute(f'SELECT {cols} FROM "{schema}".{table} ORDER BY {order}').fetchall()


def removed_positions(url: str) -> list[int]:
    """The positions the ``removed`` bitmap marks."""
    from evstore.backends.postgres.schema import REMOVED_BLOCK
    out = []
    for block, bits in rows(url, "removed", "block, bits::text"):
        out += [block * REMOVED_BLOCK + i + 1 for i, c in enumerate(bits) if c == "1"]
    return out


def readable(b, view) -> list[tuple]:
    """(position, stream, version, id) of every stored event ``view`` keeps."""
    v = view()
    return [(e.position, e.stream, e.version, e.id) for e in b.read_all()
            if v.readable(e.stream, e.version, int(e.recorded_at.timestamp() * 1e6),
                          b.version(e.stream))]


# -- cuts ---------------------------------------------------------------------------------------
def test_delete_and_truncate_are_exact_under_the_writer_lock(open_same):
    a, other = open_same(), open_same()
    with pytest.raises(StreamNotFound):
        a.cut("s", ANY, None, False)
    assert not a.exists()  # a refused delete created no store
    fill(a, "s:T s:T s:T t:T t:T")
    with pytest.raises(StreamNotFound):
        a.cut("nobody", ANY, None, False)
    with pytest.raises(WrongExpectedVersion):
        a.cut("s", 2, None, False)
    assert other.cuts() == {}  # a refused cut changed nothing
    v, cut = a.cut("s", 3, None, False)
    assert (v, tuple(cut)) == (3, ("s", 4, False, 3))
    assert other.cuts()["s"] == cut  # visible to another handle at once
    assert a.version("s") == 3
    assert a.append("s", prep("T"), 3).result.version == 4  # a soft delete continues at V+1
    v, cut = other.cut("t", ANY, 2, False)  # truncate --before 2
    assert (v, tuple(cut)) == (2, ("t", 2, False, 0))
    with pytest.raises(Exception, match="truncate"):
        a.cut("t", ANY, 4, False)  # past version + 1
    v, cut = a.cut("t", 2, None, True)
    assert tuple(cut) == ("t", 3, True, 2)
    with pytest.raises(StreamDeleted):
        other.append("t", prep("T"), ANY)
    with pytest.raises(StreamDeleted):
        other.cut("t", ANY, 3, False)
    assert a.cut("t", ANY, None, True)[1] == cut  # deleting a tombstone again: done
    assert a.head() == 6 and a.version("t") == 2
    assert a.verify() == []


def test_a_tombstone_costs_the_append_no_round_trip(open_same):
    """Nor does a cut cost more than an append, or a rule more than one."""
    b = open_same()
    fill(b, "s:T dead:T")
    assert round_trips(b, lambda: b.cut("dead", ANY, None, True)) == 2  # as an append
    assert round_trips(b, lambda: b.set_retention(Retention("s", False, None, 9))) == 1
    assert round_trips(b, lambda: b.append("s", prep("T"), ANY)) == 2
    with pytest.raises(StreamDeleted):  # found in the first round trip, then ROLLBACK
        b.append("dead", prep("T"), ANY)
    assert b._conn().info.transaction_status == 0 and b.head() == 3


def test_a_hard_delete_beside_appends_is_exact(open_same):
    """Appends race a hard delete: the delete's version is the stream's
    last, and every append after it is refused."""
    b = open_same()
    fill(b, "s:T")
    results: list = []

    def writer():
        w = open_same()
        while True:
            try:
                results.append(w.append("s", prep("T"), ANY).result.version)
            except StreamDeleted:
                return

    t = threading.Thread(target=writer)
    t.start()
    while len(results) < 20:
        time.sleep(0.005)
    v, cut = b.cut("s", ANY, None, True)
    t.join(10)
    assert not t.is_alive() and cut.hard and cut.deleted == v
    assert b.version("s") == v == max(results)  # nothing got in after it


def test_reading_the_cuts_and_rules_is_one_statement(open_same):
    a, other = open_same(), open_same()
    fill(a, "s:T s:T")
    a.forgetting_state()
    assert round_trips(a, a.forgetting_state) == 1      # cached: the generation only
    other.cut("s", ANY, 2, False)
    other.set_retention(Retention("p-", True, None, 5))
    assert round_trips(a, a.forgetting_state) == 1      # changed: the same one statement
    cuts, rules = a.forgetting_state()
    assert list(cuts) == ["s"] and rules == [Retention("p-", True, None, 5)]
    assert round_trips(a, a.cuts) == 1 and round_trips(a, a.retention_rules) == 1


def test_retention_rules_are_set_replaced_and_cleared(open_same):
    a, other = open_same(), open_same()
    assert a.retention_rules() == []  # no store yet: nothing, and nothing created
    a.set_retention(Retention("s", False, 3_600_000_000, None))
    a.set_retention(Retention("s", True, None, 10))
    a.set_retention(Retention("s", False, None, 4))  # replaces the stream's rule
    assert sorted(other.retention_rules()) == [Retention("s", False, None, 4),
                                               Retention("s", True, None, 10)]
    a.set_retention(Retention("s", True, None, None))  # neither: removes it
    assert other.retention_rules() == [Retention("s", False, None, 4)]


# -- compaction ----------------------------------------------------------------------------------
def test_compact_deletes_exactly_the_unreadable_rows(open_same, pg_url):
    b = open_same()
    fill(b, " ".join(["gone:T", "cut:T", "kept:T", "log-1:T", "log-2:T"] * 4))
    for s in ("gone", "cut"):
        for v in (1, 3):
            b.put_snapshot(s, v, b"state")
    b.cut("gone", ANY, None, False)            # soft: versions 1-4 go, snapshots too
    b.cut("cut", ANY, 3, False)               # truncate: versions 1-2 go, snapshots stay
    b.set_retention(Retention("log-", True, None, 1))  # the newest of each log-* only
    view = view_of(b)
    keep = readable(b, view)
    assert len(keep) == 4 + 2 + 1 + 1
    before = rows(pg_url, "events", "position, body")
    stats = b.stats()

    dry = b.compact(view, dry_run=True)
    assert dry["events_removed"] == 20 - 8 and dry["bytes_before"] == stats["bytes"]
    assert 0 < dry["bytes_after"] < dry["bytes_before"]
    assert rows(pg_url, "events", "position, body") == before and b.stats() == stats
    assert removed_positions(pg_url) == [] and b.snapshot_versions("gone") == [1, 3]

    seen = []
    out = b.compact(view, progress=lambda done, total: seen.append((done, total)))
    assert out["events_removed"] == 12 and out["bytes_before"] == stats["bytes"]
    assert out["bytes_after"] == dry["bytes_after"]  # the freed rows' space, as foretold
    assert seen and seen[-1][0] == seen[-1][1]
    assert [(e.position, e.stream, e.version, e.id) for e in b.read_all()] == keep
    after = dict(rows(pg_url, "events", "position, body"))
    assert all(after[p] == body for p, body in before if p in after)  # bytes untouched
    assert b.head() == 20 and b.version("gone") == 4 and b.version("log-1") == 4
    assert b.snapshot_versions("gone") == [] and b.snapshot_versions("cut") == [1, 3]
    assert b.stats()["events"] == 8
    assert dict(rows(pg_url, "removed_versions")) == {"gone": 4, "cut": 2, "log-1": 3,
                                                      "log-2": 3}
    assert b.verify() == []
    assert b.compact(view)["events_removed"] == 0  # nothing left to do
    # a stream deleted at its last events: the head stays, the next append continues
    b.cut("kept", ANY, None, True)
    assert b.compact(view)["events_removed"] == 4
    assert b.head() == 20 and b.append("new", prep("T"), ANY).result.position == 21
    assert removed_positions(pg_url) == [*range(1, 12), 13, 14, 15, 16, 18]
    assert b.verify() == []


def test_compact_rechecks_the_rules_in_each_transaction(open_same, monkeypatch):
    """A rule cleared while compaction runs: the clear waits for the step
    in progress, and the next step obeys it (the events it shows stay)."""
    b, other = open_same(), open_same()
    fill(b, " ".join(["a:T", "b:T"] * 30))
    b.set_retention(Retention("a", False, None, 1))
    b.set_retention(Retention("b", False, None, 1))
    monkeypatch.setattr(forget, "STREAMS", 1)  # one stream per transaction: a, then b
    real = forget._unreadable
    clear = threading.Thread(target=other.set_retention, args=(Retention("b", False, None, None),))

    def spy(conn, backend, view, streams, after, per_stream):
        if streams == ["a"] and conn.info.transaction_status != 0 and not clear.is_alive():
            clear.start()  # inside a's transaction, which holds the forgetting lock
            clear.join(0.3)
            assert clear.is_alive(), "a rule changed in the middle of a compaction step"
        return real(conn, backend, view, streams, after, per_stream)

    monkeypatch.setattr(forget, "_unreadable", spy)
    out = b.compact(view_of(b), progress=lambda done, total: clear.join(10))
    assert not clear.is_alive()
    assert out["events_removed"] == 29  # a's; b's transaction saw the rule cleared
    assert len(list(b.read_stream("b"))) == 30 and len(list(b.read_stream("a"))) == 1
    assert b.verify() == []


def test_verify_tells_removed_events_from_damage(open_same, pg_url):
    b = open_same()
    fill(b, "a:T b:T a:T b:T a:T b:T")
    b.cut("a", ANY, None, False)
    b.compact(view_of(b))
    assert b.verify() == [] and [e.position for e in b.read_all()] == [2, 4, 6]
    s = f'"{b.target.schema}"'
    with admin(pg_url) as c:
        c.execute(f"DELETE FROM {s}.events WHERE position = 4")
    problems = b.verify()
    assert {(p["kind"], p.get("position")) for p in problems} >= {("positions", 4)}
    assert not any(p.get("position") in (1, 3, 5) for p in problems)
    with admin(pg_url) as c:  # the first stored event of a stream removed by hand
        c.execute(f"DELETE FROM {s}.events WHERE position = 2")
        add_removed(c, b.q, [(2, 2)])
    kinds = {(p["kind"], p.get("stream")) for p in b.verify()}
    assert ("versions", "b") in kinds


# -- import --------------------------------------------------------------------------------------
def test_import_keeps_gaps_in_positions_and_versions(open_same, pg_url):
    b = open_same()
    us = 1_700_000_000_000_000
    blob = lambda: [p.blob for p in prep("T")]  # noqa: E731
    with b.bulk() as bulk:
        bulk.write("a", 3, 4, us, blob())        # positions 1-3 and versions 1-2 removed upstream
        bulk.write("b", 1, 5, us, blob())
        bulk.write("a", 4, 9, us + 1, blob())    # positions 6-8 removed
        bulk.write("a", 7, 10, us + 1, blob())   # versions 5-6 removed: so were 3-4 (a prefix)
        with pytest.raises(InvalidEvent, match="version 7"):
            bulk.write("a", 7, 11, us + 1, blob())
        with pytest.raises(InvalidEvent, match="position 10"):
            bulk.write("c", 1, 10, us + 1, blob())
        with pytest.raises(InvalidEvent, match="version 5"):
            bulk.write("z", 5, None, us, blob())  # a merge continues streams exactly
    assert [(e.stream, e.version, e.position) for e in b.read_all()] == [
        ("a", 3, 4), ("b", 1, 5), ("a", 4, 9), ("a", 7, 10)]
    assert removed_positions(pg_url) == [1, 2, 3, 6, 7, 8]
    assert dict(b.cuts()) == {"a": Cut("a", 7, False, 0)}  # its floor, as on files
    assert b.head() == 10 and b.version("a") == 7 and b.stats()["events"] == 4
    assert b.verify() == []
    assert [e.version for e in b.read_stream("a")
            if view_of(b)().readable("a", e.version, 0, 7)] == [7]
    assert b.compact(view_of(b))["events_removed"] == 2 and b.verify() == []
    assert b.append("a", prep("T"), 7).result.position == 11
    b.cut("b", ANY, None, True)
    with pytest.raises(StreamDeleted), b.bulk() as bulk:
        bulk.write("b", 2, 12, us + 2, blob())  # a tombstone refuses an import too
    assert b.head() == 11


def test_removed_positions_across_blocks_and_what_verify_makes_of_them(open_same, pg_url):
    b = open_same()
    us = 1_700_000_000_000_000
    with b.bulk() as bulk:
        bulk.write("a", 1, 1, us, [p.blob for p in prep("T")])
        bulk.write("a", 2, 2200, us, [p.blob for p in prep("T")])  # 2..2199: three blocks
        bulk.write("b", 7, 3000, us, [p.blob for p in prep("T")])  # 2201..2999
    assert removed_positions(pg_url) == [*range(2, 2200), *range(2201, 3000)]
    assert b.stats()["events"] == 3 and b.verify() == []
    s = f'"{b.target.schema}"'
    with admin(pg_url) as c:  # two bits cleared by hand: two real gaps
        c.execute(f"UPDATE {s}.removed SET bits = set_bit(set_bit(bits, 1023, 0), 1022, 0),"
                  f" n = n - 2 WHERE block = 0")
        c.execute(f"UPDATE {s}.removed SET bits = set_bit(bits, 0, 0), n = n - 1"
                  f" WHERE block = 2")
    problems = [(p["kind"], p.get("position"), p["message"]) for p in b.verify()]
    assert problems == [
        ("positions", 1023, "positions 1023 to 1024: no event, and none was removed there"),
        ("positions", 2049, "position 2049: no event, and none was removed there")]
    with admin(pg_url) as c:  # and a stored event marked removed
        c.execute(f"UPDATE {s}.removed SET bits = set_bit(bits, 2199 - 2048, 1)"  # 2200
                  f" WHERE block = 2")
    kinds = {(p["kind"], p.get("position")) for p in b.verify()}
    assert ("removed", 2200) in kinds and ("removed", None) in kinds  # n no longer agrees


def test_compact_removes_what_max_age_hides(open_same):
    b = open_same()
    fill(b, "old:T old:T old:T")
    times = [int(e.recorded_at.timestamp() * 1e6) for e in b.read_stream("old")]
    b.set_retention(Retention("old", False, 1_000_000, None))
    view = view_of(b, now_us=times[1] + 1_000_000)  # the first is older than a second
    gone = sum(t < times[1] for t in times)  # 1 (0 if the clock did not move)
    assert b.compact(view, dry_run=True)["events_removed"] == gone
    assert b.compact(view)["events_removed"] == gone
    assert [e.version for e in b.read_stream("old")] == [1, 2, 3][gone:]
    assert b.verify() == []


# -- upgrade -------------------------------------------------------------------------------------
def test_a_schema_from_before_forgetting_is_upgraded_by_a_write(open_same, pg_url):
    old = open_same()
    fill(old, "s:T s:T")
    s = f'"{old.target.schema}"'
    with admin(pg_url) as c:  # the schema as the version before forgetting made it
        c.execute(f"DROP TABLE {s}.cuts, {s}.retention, {s}.forgetting, {s}.removed,"
                  f" {s}.removed_versions")
    b = open_same()
    assert b.cuts() == {} and b.retention_rules() == [] and b.verify() == []
    assert b.compact(view_of(b))["events_removed"] == 0
    assert b.stats()["events"] == 2 and [e.version for e in b.read_stream("s")] == [1, 2]
    with admin(pg_url) as c:  # reads created nothing
        assert c.execute("SELECT to_regclass(%s)", (f"{s}.cuts",)).fetchone()[0] is None
    assert b.append("s", prep("T"), 2).written  # the first write adds the tables
    b.cut("s", 3, 2, False)
    assert old.cuts()["s"].floor == 2  # a handle that saw the old schema sees them too
    assert b.compact(view_of(b))["events_removed"] == 1 and b.verify() == []


# -- beside writers and followers ---------------------------------------------------------------
def test_compaction_beside_writers_and_a_follower(open_same):
    """Writers append to streams being cut and compacted; a follower reads
    ``$all`` by position.  No writer fails, the follower sees positions in
    order and never loses an event that stays readable, verify is sound."""
    url = open_same.url
    b = open_same()
    fill(b, "w0:T w1:T")
    stop = threading.Event()
    errors: list = []
    acked: dict[str, list] = {"w0": [], "w1": []}

    def writer(name):
        w = open_backend(url, lock_timeout=20)
        try:
            while not stop.is_set():
                batch = prep("T", "U")
                acked[name].append(w.append(name, batch, ANY).result.position)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            w.close()

    seen: list[int] = []
    done = threading.Event()

    def follower():
        f = open_backend(url)
        try:
            while True:
                last = done.is_set()
                seen.extend(e.position for e in f.read_all(lo=(seen[-1] if seen else 0) + 1))
                if last:  # one more read after every write: it must find everything
                    return
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            f.close()

    writers = [threading.Thread(target=writer, args=(n,)) for n in ("w0", "w1")]
    reader = threading.Thread(target=follower)
    for t in (*writers, reader):
        t.start()
    try:
        b.set_retention(Retention("w1", False, None, 10))
        deadline = time.monotonic() + (20 if LONG else 1.5)
        rounds = 0
        while time.monotonic() < deadline or rounds < 3:
            b.cut("w0", ANY, max(1, b.version("w0") - 5), False)
            b.compact(view_of(b))
            rounds += 1
    finally:
        stop.set()
        for t in writers:
            t.join(30)
        done.set()
        reader.join(30)
    assert not errors, errors
    assert seen == sorted(set(seen)), "the follower repeated or went back"
    keep = readable(b, view_of(b))
    assert len(keep) >= 16 and {p for p, *_ in keep} <= set(seen), "a readable event skipped"
    assert acked["w0"] and acked["w1"]
    assert b.verify() == []


# -- a server crash during compaction --------------------------------------------------------------
COMPACTOR = r"""
import sys, time
from evstore.backends import open_backend
from evstore.backends.postgres import forget
from evstore.backends.postgres.writes import add_removed
from evstore.core.forgetting import Forgetting
forget.CHUNK = forget.STREAMS = int(sys.argv[2])  # many small transactions
b = open_backend(sys.argv[1])
def view():
    cuts, rules = b.forgetting_state()
    return Forgetting(cuts, rules, int(time.time() * 1e6))
def progress(done, total):
    print("step", done, total, flush=True)
    time.sleep(0.01)
print(b.compact(view, progress=progress), flush=True)
"""


def _crash_during_compaction(pg_server, open_same, streams: int, per_stream: int, steps: int):
    url = open_same.url
    b = open_same()
    with b.bulk() as bulk:  # quickly: many streams, one batch each
        us = int(time.time() * 1e6)
        for i in range(streams):
            bulk.write(f"s{i}", 1, None, us, [p.blob for p in prep(*["T"] * per_stream)])
    for i in range(0, streams, 2):
        b.cut(f"s{i}", ANY, None, i % 4 == 0)          # soft and hard deletes
    b.cut("s1", ANY, per_stream // 2, False)
    keep = readable(b, view_of(b))
    p = spawn(COMPACTOR, url, 3)
    for _ in range(steps):
        line = p.stdout.readline()
        assert line.startswith(b"step"), line + p.stderr.read()
    pg_server.stop("immediate")
    p.wait(30)
    pg_server.start()
    wait_ready(pg_server.url)
    b = open_backend(url)
    try:
        assert len(list(b.read_all())) > len(keep), "the crash came after the compaction"
        assert readable(b, view_of(b)) == keep        # every readable event readable
        assert b.verify() == []
        out = b.compact(view_of(b))                  # finishing it removes the rest
        assert [(e.position, e.stream, e.version, e.id) for e in b.read_all()] == keep
        assert b.verify() == [] and b.compact(view_of(b))["events_removed"] == 0
        assert out["events_removed"] > 0
    finally:
        b.close()


def test_a_server_crash_during_compaction_loses_nothing_readable(pg_server, open_same):
    if not pg_server.can_crash:
        pytest.skip("EVSTORE_TEST_PG points at a server we do not crash")
    _crash_during_compaction(pg_server, open_same, 40, 6, 3)


@pytest.mark.slow
@pytest.mark.parametrize("steps", [1, 5, 20, 60] if LONG else [10])
def test_server_crashes_at_many_steps_of_compaction(pg_server, open_same, steps):
    if not pg_server.can_crash:
        pytest.skip("EVSTORE_TEST_PG points at a server we do not crash")
    _crash_during_compaction(pg_server, open_same, 400 if LONG else 120, 8, steps)


# -- erasure: what the docs' recipe promises ---------------------------------------------------
def test_compact_then_vacuum_full_leaves_no_file_of_the_tables_holding_the_events(
        pg_server, open_same, pg_url):
    """docs/POSTGRES.md: ``compact`` deletes the rows (no query finds them);
    VACUUM FULL and a CHECKPOINT leave no file of the store's tables,
    indexes or TOAST data holding their bytes."""
    if not pg_server.can_crash:
        pytest.skip("EVSTORE_TEST_PG: the server's files are not ours to read")
    import os
    b = open_same()
    marker = "ERASE-ME-7f3a"
    for i in range(30):
        b.append("customer-42", prep({"type": "T", "data": {"name": marker, "i": i,
                                                            "pad": "x" * (i * 300)}}), ANY)
        b.append("other", prep({"type": "T", "data": {"i": i}}), ANY)
    b.put_snapshot("customer-42", 30, json.dumps({"name": marker}).encode())
    b.cut("customer-42", ANY, None, True)
    assert b.compact(view_of(b))["events_removed"] == 30
    s = b.target.schema
    with admin(pg_url) as c:
        for table in ("events", "snapshots"):
            n = c.execute(f'SELECT count(*) FROM "{s}".{table}'
                          " WHERE position(%s::bytea IN body) > 0", (marker.encode(),)).fetchone()
            assert n[0] == 0
        c.execute(f'VACUUM FULL "{s}".events, "{s}".snapshots')
        c.execute("CHECKPOINT")
        paths = [r[0] for r in c.execute(
            "SELECT pg_relation_filepath(x.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " CROSS JOIN LATERAL (SELECT c.oid UNION ALL SELECT c.reltoastrelid"
            "  WHERE c.reltoastrelid <> 0) x(oid) WHERE n.nspname = %s", (s,))]
    data = pg_server.data
    held = []
    for rel in paths:
        base = os.path.join(data, rel)
        for name in os.listdir(os.path.dirname(base)):
            if name == os.path.basename(base) or name.startswith(os.path.basename(base) + "."):
                with open(os.path.join(os.path.dirname(base), name), "rb") as f:
                    if marker.encode() in f.read():
                        held.append(name)
    assert paths and held == []
    assert len(list(b.read_stream("other"))) == 30 and b.verify() == []


def test_export_import_export_keeps_gaps_byte_identical(open_same, pg_server):
    from conftest import run_cli
    b = open_same()
    fill(b, "a:T b:T a:T b:T a:T")
    b.cut("b", ANY, None, False)
    b.compact(view_of(b))
    copy = pg_server.url_for(b.target.schema + "_copy")
    try:
        first = run_cli("export", "--all", store=open_same.url)
        assert first.returncode == 0
        r = run_cli("import", store=copy, input=first.stdout)
        assert r.returncode == 0, r.stderr
        again = run_cli("export", "--all", store=copy)
        assert again.stdout == first.stdout
        assert run_cli("verify", store=copy).returncode == 0
    finally:
        with admin(copy) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{b.target.schema}_copy" CASCADE')
