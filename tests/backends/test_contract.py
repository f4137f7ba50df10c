"""The backend contract, at the interface level, for every backend kind.

Each test runs on the memory reference and on a real PostgreSQL (the file
backend joins when it moves behind the seam, see conftest.KINDS).  The
semantics tested are those docstrings of evstore.core.backend promise.
"""
from __future__ import annotations

import threading
import time

import pytest

from evstore.core.backend import CheckpointRow, ConsumerBusy
from evstore.core.rules import ANY, STREAM_EXISTS
from evstore.errors import InvalidEvent, StoreLocked, StreamNotFound, WrongExpectedVersion

from .helpers import fill, prep, with_ids


# -- expected versions ------------------------------------------------------------------
def test_any_appends_and_reports(backend):
    r = backend.append("a", prep("T", "U"), ANY)
    assert r.written and r.version_before == 0
    assert tuple(r.result) == ("a", 2, 2, 2)
    r = backend.append("b", prep("T"), ANY)
    assert tuple(r.result) == ("b", 1, 3, 1)
    assert backend.version("a") == 2 and backend.version("b") == 1 and backend.version("c") == 0
    assert backend.head() == 3


def test_no_stream_and_exists(backend):
    with pytest.raises(WrongExpectedVersion) as e:
        backend.append("a", prep("T"), STREAM_EXISTS)
    assert e.value.current == 0
    assert backend.append("a", prep("T"), 0).result.version == 1
    with pytest.raises(WrongExpectedVersion):
        backend.append("a", prep("T"), 0)
    assert backend.append("a", prep("T"), STREAM_EXISTS).result.version == 2
    assert backend.head() == 2


def test_exact_version(backend):
    backend.append("a", prep("T", "T"), 0)
    for wrong in (1, 3, 7):
        with pytest.raises(WrongExpectedVersion) as e:
            backend.append("a", prep("X"), wrong)
        assert (e.value.expected, e.value.current) == (wrong, 2)
    assert backend.append("a", prep("T"), 2).result.version == 3
    assert backend.head() == 3
    assert [ev.type for ev in backend.read_stream("a")] == ["T", "T", "T"]


# -- idempotent retries ------------------------------------------------------------------
@pytest.mark.parametrize("expected", [0, ANY, STREAM_EXISTS])
def test_retry_of_a_stored_batch_writes_nothing(backend, expected):
    backend.append("other", prep("first"), ANY)
    stream = "b" if expected == 0 else "other"  # 0: the batch opens its stream
    batch = prep("T", "U")
    first = backend.append(stream, batch, expected)
    head = backend.head()
    again = backend.append(stream, batch, expected)
    assert not again.written and again.version_before == -1
    assert again.result == first.result
    assert backend.head() == head == 3
    assert with_ids(batch) == [e.id for e in backend.read_stream(stream, lo=again.result.version - 1)]


def test_retry_with_n_after_the_stream_moved_on(backend):
    batch = prep("T", "U")
    backend.append("a", batch, 0)
    backend.append("a", prep("later"), 2)
    r = backend.append("a", batch, 0)
    assert not r.written and (r.result.version, r.result.position) == (2, 2)
    assert backend.head() == 3


def test_partial_retry_is_a_conflict(backend):
    batch = prep("T", "U")
    backend.append("a", batch, 0)
    mixed = batch[:1] + prep("new")
    for expected in (0, ANY, STREAM_EXISTS):
        with pytest.raises(WrongExpectedVersion, match="only part"):
            backend.append("a", mixed, expected)
    assert backend.head() == 2


def test_different_ids_are_a_plain_conflict_with_n_and_new_events_with_any(backend):
    backend.append("a", prep("T"), 0)
    with pytest.raises(WrongExpectedVersion) as e:
        backend.append("a", prep("T"), 0)
    assert "only part" not in str(e.value)
    assert backend.append("a", prep("T"), ANY).written
    assert backend.head() == 2


# -- atomic batches and exact round trips ---------------------------------------------------
def test_a_refused_batch_writes_nothing(backend):
    backend.append("a", prep("T"), ANY)
    big = prep(*["T"] * 50)
    with pytest.raises(WrongExpectedVersion):
        backend.append("a", big, 5)
    assert backend.head() == 1 and backend.version("a") == 1
    assert [e.position for e in backend.read_all()] == [1]


ROUND_TRIP = [
    {"z": 1, "a": 2, "m": {"y": [], "b": {}}},
    {"big": 2 ** 64 - 1, "small": -2 ** 63, "zero": 0, "neg": -1},
    {"f": 0.1, "g": -1.5e300, "h": 5e-324, "i": 1.0, "j": -0.0},
    {"é": "日本語 \u2028 \U0001F600 \x7f", "": "empty key"},
    [[[[{"deep": [1, [2, [3]]]}]]]],
    "just a string", 12, None, True, [],
]


def test_json_round_trips_exactly(backend):
    events = [{"type": f"T{i}", "data": d, "metadata": {"k": d}} for i, d in enumerate(ROUND_TRIP)]
    backend.append("a", prep(*events), ANY)
    got = list(backend.read_stream("a"))
    assert [e.data for e in got] == ROUND_TRIP
    assert [e.metadata for e in got] == [{"k": d} for d in ROUND_TRIP]
    for e, want in zip(got, ROUND_TRIP):
        if isinstance(want, dict):
            assert list(e.data) == list(want)  # key order
    assert repr([e.data for e in got]) == repr(ROUND_TRIP)  # -0.0, float vs int


def test_one_recorded_at_per_batch_and_never_going_back(backend):
    backend.append("a", prep("T", "U"), ANY)
    future = int((time.time() + 3600) * 1e6)
    with backend.bulk() as bulk:
        bulk.write("b", 1, 3, future, [p.blob for p in prep("imported")])
    backend.append("c", prep("V"), ANY)
    evs = list(backend.read_all())
    assert evs[0].recorded_at == evs[1].recorded_at
    assert evs[3].recorded_at >= evs[2].recorded_at


# -- reading --------------------------------------------------------------------------------
def test_stream_reads_bounds_limits_types(backend):
    fill(backend, "a:A b:B a:B a:A a:B b:A a:A")  # a has versions 1..5: A B A B A
    def vs(**kw):
        return [e.version for e in backend.read_stream("a", **kw)]
    assert vs() == [1, 2, 3, 4, 5]
    assert vs(lo=2, hi=4) == [2, 3, 4]
    assert vs(lo=2, hi=4, backwards=True) == [4, 3, 2]
    assert vs(backwards=True, limit=2) == [5, 4]
    assert vs(limit=2) == [1, 2]
    assert vs(types=["B"]) == [2, 4]
    assert vs(types=["A"], backwards=True, limit=2) == [5, 3]
    assert vs(lo=9) == [] and vs(limit=0) == [] and vs(lo=4, hi=2) == []
    assert vs(hi=99) == [1, 2, 3, 4, 5]
    evs = list(backend.read_stream("a"))
    assert [e.position for e in evs] == [1, 3, 4, 5, 7]


def test_missing_stream_raises_when_called(backend):
    with pytest.raises(StreamNotFound):
        backend.read_stream("nope")
    fill(backend, "a:T")
    with pytest.raises(StreamNotFound):
        backend.read_stream("nope")


def test_all_reads_order_filters(backend):
    fill(backend, "ab:A b:B a:B ab:A c:B aa:A")
    def ps(**kw):
        return [e.position for e in backend.read_all(**kw)]
    assert ps() == [1, 2, 3, 4, 5, 6]
    assert ps(backwards=True) == [6, 5, 4, 3, 2, 1]
    assert ps(lo=2, hi=5) == [2, 3, 4, 5]
    assert ps(lo=2, hi=5, backwards=True, limit=2) == [5, 4]
    assert ps(prefix="a") == [1, 3, 4, 6]
    assert ps(prefix="ab", types=["A"]) == [1, 4]
    assert ps(types=["B"], limit=2) == [2, 3]
    assert ps(types=["nope"]) == []
    assert ps(lo=7) == []
    assert [e.stream for e in backend.read_all()] == ["ab", "b", "a", "ab", "c", "aa"]


def test_reads_cross_page_boundaries(backend):
    backend.append("a", prep(*["T"] * 2500), ANY)
    assert [e.version for e in backend.read_stream("a")] == list(range(1, 2501))
    assert [e.position for e in backend.read_all(backwards=True, lo=10)] == list(range(2500, 9, -1))
    assert len(list(backend.read_all(limit=1500))) == 1500


def test_find_by_id(backend):
    batch = prep("T", "U")
    backend.append("a", batch, ANY)
    assert backend.find(batch[1].id).version == 2
    assert backend.find("00000000-0000-4000-8000-000000000000") is None


def test_streams_sorted_by_code_point_with_prefix(backend):
    fill(backend, "b:T a:T é:T Z:T a:U ab:T")
    rows = list(backend.streams())
    assert [r.stream for r in rows] == sorted(["b", "a", "é", "Z", "ab"])
    assert [r.version for r in rows] == [1, 2, 1, 1, 1]
    assert rows[1].first_recorded_us <= rows[1].last_recorded_us
    assert [r.stream for r in backend.streams("a")] == ["a", "ab"]


def test_an_absent_store_reads_as_empty(backend):
    assert backend.head() == 0 and backend.version("a") == 0
    assert list(backend.read_all()) == [] and list(backend.streams()) == []
    assert backend.checkpoints() == [] and backend.settings() == {}
    assert backend.snapshot_versions("a") == []
    assert backend.stats()["events"] == 0 and backend.verify() == []


def test_a_second_handle_sees_the_same_store(open_same):
    a, b = open_same(), open_same()
    a.append("s", prep("T"), 0)
    assert b.version("s") == 1
    with pytest.raises(WrongExpectedVersion):
        b.append("s", prep("T"), 0)


# -- waiting --------------------------------------------------------------------------------
def test_watcher_wakes_on_commit_times_out_and_stops(open_same):
    reader, writer = open_same(), open_same()
    w = reader.watcher()
    try:
        t = time.monotonic()
        assert w.wait(0, 0.15) == 0
        assert time.monotonic() - t >= 0.14
        timer = threading.Timer(0.1, lambda: writer.append("s", prep("T"), ANY))
        timer.start()
        t = time.monotonic()
        assert w.wait(0, 10) == 1
        assert time.monotonic() - t < 5
        timer.join()
        threading.Timer(0.1, w.wake).start()
        t = time.monotonic()
        assert w.wait(1, 10) == 1
        assert time.monotonic() - t < 5
    finally:
        w.close()


# -- bulk writes ------------------------------------------------------------------------------
def test_bulk_keeps_what_it_is_given_and_refuses_what_does_not_continue(backend):
    us = 1_700_000_000_000_000
    blobs = [p.blob for p in prep("T", "U")]
    with backend.bulk() as bulk:
        assert bulk.head == 0
        bulk.write("a", 1, 1, us, blobs)
        # backwards is refused everywhere (a forward gap is removed events,
        # which a backend that keeps_gaps records: tests/test_files_compaction.py)
        with pytest.raises(InvalidEvent, match="position"):
            bulk.write("a", 3, 2, us, blobs)
        with pytest.raises(InvalidEvent, match="version"):
            bulk.write("a", 2, 3, us, blobs)
        if not bulk.keeps_gaps:
            with pytest.raises(InvalidEvent, match="position"):
                bulk.write("a", 3, 5, us, blobs)
            with pytest.raises(InvalidEvent, match="version"):
                bulk.write("a", 5, 3, us, blobs)
        with pytest.raises(InvalidEvent, match="earlier"):
            bulk.write("b", 1, 3, us - 1, blobs)
        bulk.sync()
        r = bulk.write("b", 1, None, us - 5, blobs)  # renumbered: older times allowed
        assert (r.version, r.position) == (2, 4)
        assert bulk.version("a") == 2 and bulk.head == 4
    evs = list(backend.read_all())
    assert [(e.stream, e.version, e.position) for e in evs] == [
        ("a", 1, 1), ("a", 2, 2), ("b", 1, 3), ("b", 2, 4)]
    assert int(evs[0].recorded_at.timestamp() * 1e6) == us
    assert backend.verify() == []


# -- small documents --------------------------------------------------------------------------
def test_snapshots_storage(backend):
    assert backend.get_snapshot("a", 1) is None
    backend.put_snapshot("a", 5, b"five")
    backend.put_snapshot("a", 2, b"two")
    backend.put_snapshot("b", 1, b"\x00\xff")
    backend.put_snapshot("a", 5, b"FIVE")
    assert backend.snapshot_versions("a") == [2, 5]
    assert backend.get_snapshot("a", 5) == b"FIVE" and backend.get_snapshot("b", 1) == b"\x00\xff"
    assert backend.delete_snapshot("a", 2) and not backend.delete_snapshot("a", 2)
    assert backend.snapshot_versions("a") == [5]


def test_checkpoints_storage_and_hold(open_same):
    a, b = open_same(), open_same()
    a.put_checkpoint(CheckpointRow("z", 3, None, "t1"))
    a.put_checkpoint(CheckpointRow("é", 1, "s", "t2"))
    a.put_checkpoint(CheckpointRow("z", 4, "s", "t3"))
    assert b.get_checkpoint("z") == CheckpointRow("z", 4, "s", "t3")
    assert [c.name for c in b.checkpoints()] == ["z", "é"]
    with a.hold_checkpoint("z"):
        with pytest.raises(ConsumerBusy):
            with b.hold_checkpoint("z"):
                pass
        with b.hold_checkpoint("é"):
            pass
    with b.hold_checkpoint("z"):
        pass
    assert b.delete_checkpoint("z") and not b.delete_checkpoint("z")
    assert a.get_checkpoint("z") is None


def test_settings_merge(open_same):
    a, b = open_same(), open_same()
    assert a.update_settings({"snapshot_every": 10, "reducer": "merge"}) == {
        "snapshot_every": 10, "reducer": "merge"}
    assert b.update_settings({"reducer": None}) == {"snapshot_every": 10}
    assert a.settings() == {"snapshot_every": 10}


# -- whole store -------------------------------------------------------------------------------
def test_stats_and_verify(backend):
    fill(backend, "a:T b:T a:U")
    backend.put_snapshot("a", 1, b"{}")
    s = backend.stats()
    assert {k: s[k] for k in ("streams", "events", "segments", "snapshots")} == {
        "streams": 2, "events": 3, "segments": 0, "snapshots": 1}
    assert s["backend"] in ("memory", "postgresql") and s["bytes"] > 0
    assert s["first_recorded_us"] <= s["last_recorded_us"]
    assert backend.verify() == []
    backend.put_snapshot("b", 9, b"{}")
    problems = backend.verify()
    assert [p["kind"] for p in problems] == ["snapshot"] and problems[0]["stream"] == "b"


def test_concurrent_threads_keep_positions_dense(open_same):
    b = open_same()
    def work(i):
        for j in range(20):
            b.append(f"s{i % 2}", prep("T", "U"), ANY)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.position for e in b.read_all()] == list(range(1, 161))
    assert b.version("s0") == b.version("s1") == 80
    assert b.verify() == []


def test_a_bulk_session_excludes_appenders_until_it_ends(open_same):
    importer, writer = open_same(), open_same(lock_timeout=0.3)
    writer.append("w", prep("T"), ANY)
    us = int((time.time() + 60) * 1e6)
    with importer.bulk() as bulk:
        bulk.write("a", 1, 2, us, [p.blob for p in prep("T")])
        bulk.sync()  # a commit in the middle does not let a writer in
        t = time.monotonic()
        with pytest.raises(StoreLocked):
            writer.append("w", prep("T"), ANY)
        assert 0.25 < time.monotonic() - t < 5
        bulk.write("a", 2, 3, us, [p.blob for p in prep("T")])
    assert writer.append("w", prep("T"), ANY).result.position == 4
