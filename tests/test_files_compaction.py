"""Compaction on files (the backend's ``compact``, driven with a view built
from its own cuts and rules, as the front end does): readable events keep
their positions, versions, ids and bytes; removed events leave no byte in
any file of the store; the head never goes back."""
from __future__ import annotations

import os
import time

import pytest

from core_helpers import store_files
from evstore import EventStore
from evstore.core.forgetting import Forgetting, Retention
from evstore.core.rules import ANY
from evstore.model import datetime_to_us

SECRET = b"ALICE-SECRET-7f3a"


def view_of(backend):
    return lambda: Forgetting(backend.cuts(), backend.retention_rules(), time.time_ns() // 1000)


def readable(es, view):
    """Every readable event, as dicts, from a raw read of the whole store."""
    b = es.backend
    versions = {}
    out = []
    for e in b.read_all():
        cur = versions.setdefault(e.stream, b.version(e.stream))
        if view.readable(e.stream, e.version, datetime_to_us(e.recorded_at), cur):
            out.append(e.to_dict())
    return out


def store_holds(directory, needle: bytes) -> list[str]:
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                if needle in f.read():
                    found.append(os.path.relpath(p, directory))
    return found


def populate(es, rounds=30):
    for i in range(rounds):
        es.append("cust-alice", [{"type": "Named", "data": {"name": SECRET.decode(), "i": i}}])
        es.append("orders", [{"type": "Placed", "data": {"n": i}}, {"type": "Paid", "data": {"n": i}}])
        es.append(f"ci-{i % 3}", [{"type": "Job", "data": {"i": i}}] * 2)


@pytest.fixture
def es(tmp_path):
    with EventStore(tmp_path / "s", sync=False, segment_bytes=2048) as s:
        yield s


def test_delete_then_compact_leaves_no_byte_and_keeps_every_readable_event(es):
    populate(es)
    b = es.backend
    head = b.head()
    b.cut("cust-alice", ANY, None, False)
    b.cut("orders", ANY, 21, False)
    view = view_of(b)
    want = readable(es, view())
    assert store_holds(es.directory, SECRET)
    out = b.compact(view)
    assert out["events_removed"] == 30 + 20
    assert out["bytes_after"] < out["bytes_before"]
    assert store_holds(es.directory, SECRET) == []
    assert b.head() == head
    with EventStore(es.directory) as other:
        assert [e.to_dict() for e in other.backend.read_all()] == want
        assert other.version("cust-alice") == 30
        assert other.version("orders") == 60
        assert [e.version for e in other.backend.read_stream("orders")][:2] == [21, 22]
        # a soft-deleted stream continues its versions, even with its files gone
        assert other.append("cust-alice", [{"type": "Again"}], expected_version=30).version == 31
        assert other.append("orders", [{"type": "More"}], expected_version=60).version == 61
    assert [e.version for e in b.read_stream("cust-alice")] == [31]


def test_compacting_the_head_keeps_the_head(es):
    populate(es, 5)
    es.append("last", [{"type": "X", "data": {"s": "LAST-MARKER"}}] * 3)
    b = es.backend
    head = b.head()
    b.cut("last", ANY, None, True)
    b.compact(view_of(b))
    assert store_holds(es.directory, b"LAST-MARKER") == []
    with EventStore(es.directory) as other:
        assert other.head() == head
        r = other.append("x", [{"type": "Y"}])
        assert r.position == head + 1


def test_retention_by_count_and_age(es):
    populate(es)
    b = es.backend
    b.set_retention(Retention("ci-", True, None, 4))
    view = view_of(b)
    want = readable(es, view())
    out = b.compact(view)
    assert out["events_removed"] == 60 - 12
    assert [e.to_dict() for e in b.read_all()] == want
    assert {s: c.floor for s, c in b.cuts().items()} == {f"ci-{k}": 17 for k in range(3)}
    # age: everything older than now
    time.sleep(0.01)
    b.set_retention(Retention("orders", False, 5_000_000, None))
    es.append("orders", [{"type": "New"}])
    b.set_retention(Retention("orders", False, 1_000_000, None))
    assert b.compact(view_of(b))["events_removed"] == 0  # all younger than a second


def test_dry_run_changes_nothing(es):
    populate(es, 10)
    b = es.backend
    b.cut("cust-alice", ANY, None, False)
    before = {p: open(os.path.join(r, p), "rb").read()
              for r, _d, fs in os.walk(es.directory) for p in fs}
    out = b.compact(view_of(b), dry_run=True)
    assert out["events_removed"] == 10
    assert out["bytes_after"] < out["bytes_before"]
    after = {p: open(os.path.join(r, p), "rb").read()
             for r, _d, fs in os.walk(es.directory) for p in fs}
    assert before == after
    real = b.compact(view_of(b))
    assert real["events_removed"] == 10


def test_compact_twice_and_append_between(es):
    populate(es, 12)
    b = es.backend
    b.cut("orders", ANY, 5, False)
    b.compact(view_of(b))
    populate(es, 3)
    b.cut("orders", ANY, 20, False)
    view = view_of(b)
    want = readable(es, view())
    b.compact(view)
    assert b.compact(view_of(b))["events_removed"] == 0
    assert [e.to_dict() for e in b.read_all()] == want


def test_verify_accepts_a_store_with_cuts(es):
    populate(es)
    b = es.backend
    b.cut("cust-alice", ANY, None, False)
    b.cut("orders", ANY, 21, False)
    b.set_retention(Retention("ci-", True, None, 4))
    assert es.verify().ok
    b.compact(view_of(b))
    report = es.verify()
    assert report.ok, report.problems
    assert not report.warnings, report.warnings
    es.append("cust-alice", [{"type": "Back"}])
    es.append("orders", [{"type": "Back"}])
    assert es.verify().ok


def _rewrite_cuts(directory, change):
    """Rewrite cuts.json validly sealed (damage a checksum cannot see)."""
    import json
    from evstore.core.checkline import seal, unseal
    p = os.path.join(directory, "cuts.json")
    body, _ = unseal(open(p, "rb").read())
    doc = json.loads(body)
    change(doc["cuts"])
    open(p, "wb").write(seal(json.dumps(doc).encode() + b"\n"))


def test_verify_still_catches_what_no_cut_explains(es):
    populate(es)
    b = es.backend
    b.cut("orders", ANY, 21, False)
    b.compact(view_of(b))
    # the same store, but the cut that explains the missing versions is gone
    _rewrite_cuts(es.directory, lambda cuts: cuts.clear())
    report = es.verify()
    assert not report.ok
    text = " ".join(p.message for p in report.problems)
    assert "orders" in text and "jumps from version 0 to 21" in text


def test_verify_catches_a_stream_log_that_lost_its_first_segment(tmp_path):
    with EventStore(tmp_path / "s", sync=False, segment_bytes=2048) as es:
        populate(es)
        from evstore.disk.streamdir import stream_dir
        d = stream_dir(os.path.join(es.directory, "streams"), "orders")
        first = sorted(n for n in os.listdir(d) if n.endswith(".seg"))[0]
        os.unlink(os.path.join(d, first))
        report = es.verify()
        assert not report.ok
        assert any("missing" in p.message for p in report.problems), report.problems


def test_export_import_export_keeps_gaps_byte_for_byte(es, tmp_path):
    """Positions and versions with gaps (removed events) survive a round
    trip: the imported store holds the same events at the same positions
    and versions, verifies, and exports the same bytes."""
    import io
    from evstore.ops import export_events, import_events
    populate(es)
    b = es.backend
    b.cut("cust-alice", ANY, None, False)
    b.cut("orders", ANY, 21, False)
    es.append("last", [{"type": "L"}])
    b.cut("last", ANY, None, False)  # the head's batch removed: the head stays
    b.compact(view_of(b))
    first = io.BytesIO()
    export_events(es, first)
    src = tmp_path / "export.ndjson"
    src.write_bytes(first.getvalue())
    with EventStore(tmp_path / "copy", sync=False, segment_bytes=2048) as copy:
        with open(src, "rb") as f:
            import_events(copy, f)
        again = io.BytesIO()
        export_events(copy, again)
        assert again.getvalue() == first.getvalue()
        assert copy.version("orders") == 60
        assert [e.version for e in copy.read("orders")][:1] == [21]
        assert copy.verify().ok, copy.verify().problems
        # versions continue after the gap; positions after the imported ones
        assert copy.append("orders", [{"type": "X"}], expected_version=60).version == 61
    assert first.getvalue().count(b"\n") == len(list(b.read_all()))


def test_import_with_a_version_gap_after_the_stores_own_events(tmp_path):
    import io
    from evstore.ops import export_events, import_events
    with EventStore(tmp_path / "b", sync=False) as b:
        b.append("s", [{"type": "Own"}] * 3)  # older than what is imported
    with EventStore(tmp_path / "a", sync=False) as a:
        a.append("s", [{"type": "T", "data": {"i": i}} for i in range(10)])
        a.backend.cut("s", ANY, 6, False)
        a.backend.compact(view_of(a.backend))
        out = io.BytesIO()
        export_events(a, out)
    with EventStore(tmp_path / "b", sync=False) as b:
        import_events(b, io.BytesIO(out.getvalue()))
        assert b.head() == 10
        assert b.backend.cuts()["s"].floor == 6
        assert [e.version for e in b.backend.read_stream("s")] == [6, 7, 8, 9, 10]
        assert [e.position for e in b.backend.read_all()] == [1, 2, 3, 6, 7, 8, 9, 10]
        report = b.verify()
        assert report.ok, report.problems


def test_repair_of_a_store_with_cuts_changes_nothing_and_resurrects_nothing(es):
    populate(es)
    b = es.backend
    b.cut("cust-alice", ANY, None, False)
    b.cut("orders", ANY, 21, False)
    b.compact(view_of(b))
    from evstore.ops import repair
    from core_helpers import tree_digest
    before = tree_digest(es.directory)
    rep = repair(es.directory)
    assert rep.ok and tree_digest(es.directory) == before
    # damage a stream log: repair rebuilds it from the commit log, from the floor on
    from evstore.disk.streamdir import stream_dir
    d = stream_dir(os.path.join(es.directory, "streams"), "orders")
    seg = sorted(n for n in os.listdir(d) if n.endswith(".seg"))[-1]
    with open(os.path.join(d, seg), "r+b") as f:
        f.seek(30)
        f.write(b"\xff\xff")
    assert not es.verify().ok
    rep = repair(es.directory)
    assert rep.ok, rep
    with EventStore(es.directory) as other:
        assert [e.version for e in other.backend.read_stream("orders")][0] == 21
        assert store_holds(es.directory, SECRET) == []
        assert other.verify().ok


def test_repair_before_compaction_keeps_deleted_events_out_of_stream_logs(es):
    """A stream log that lost its records below the floor (compaction's
    first step done, the commit log not yet rewritten) is not refilled."""
    populate(es)
    b = es.backend
    b.cut("orders", ANY, 21, False)
    from evstore.backends.files import compaction
    c = compaction._Compaction(b, view_of(b), b._wlog, False, lambda d, t: None, 0)
    c._stream("orders", 21)  # the stream step alone
    report = es.verify()
    assert report.ok, report.problems
    from evstore.ops import repair
    from evstore.disk.streamdir import stream_dir
    d = stream_dir(os.path.join(es.directory, "streams"), "orders")
    assert min(int(n[:16]) for n in os.listdir(d) if n.endswith(".seg")) == 21
    rep = repair(es.directory)
    assert rep.ok
    assert min(int(n[:16]) for n in os.listdir(d) if n.endswith(".seg")) == 21


def test_snapshots_of_deleted_streams_and_quarantined_copies_go(es):
    from evstore.disk import recovery
    from evstore.disk.streamdir import stream_dir
    populate(es, 6)
    b = es.backend
    b.put_snapshot("cust-alice", 3, b"state with " + SECRET)
    b.put_snapshot("orders", 4, b"orders state")
    # what recovery keeps of a batch that never committed, and a repair's removed events
    seg = os.path.join(stream_dir(os.path.join(es.directory, "streams"), "cust-alice"),
                       "0000000000000001.seg")
    recovery.quarantine(es.directory, seg, 0, b"leftover " + SECRET, "test")
    rdir = os.path.join(es.directory, "quarantine", "repair-x")
    os.makedirs(rdir)
    with open(os.path.join(rdir, "removed-events.ndjson"), "wb") as f:
        f.write(b'{"stream": "cust-alice", "data": "' + SECRET + b'"}\n')
    recovery.quarantine(es.directory, seg, 0, b"unrelated", "test")  # named by the key
    b.cut("cust-alice", ANY, None, False)
    b.cut("orders", ANY, 5, False)
    dry = b.compact(view_of(b), dry_run=True)
    assert store_holds(es.directory, SECRET)
    b.compact(view_of(b))
    assert store_holds(es.directory, SECRET) == []
    assert b.snapshot_versions("cust-alice") == []
    assert b.snapshot_versions("orders") == [4]  # a truncated stream replays from it
    assert dry["bytes_after"] <= dry["bytes_before"]


def test_big_batches_keep_their_suffix(tmp_path):
    """Frames over a MiB (read in pieces): one cut inside, one kept whole."""
    with EventStore(tmp_path / "s", sync=False, segment_bytes=1 << 20) as es:
        big = [{"type": "B", "data": {"i": i, "pad": "p" * 200}} for i in range(6000)]
        es.append("big", big)
        es.append("keep", big[:5000])
        es.append("x", [{"type": "X"}])
        b = es.backend
        b.cut("big", ANY, 4001, False)
        view = view_of(b)
        want = readable(es, view())
        out = b.compact(view)
        assert out["events_removed"] == 4000
        assert [e.to_dict() for e in b.read_all()] == want
        assert es.verify().ok


def _store_with_cuts(tmp_path):
    path = tmp_path / "s"
    with EventStore(path, sync=False, segment_bytes=2048) as es:
        populate(es, 40)
        es.backend.cut("cust-alice", ANY, None, False)
        es.backend.cut("orders", ANY, 41, False)
    return path


def _compact(path):
    with EventStore(path) as es:
        return es.backend.compact(view_of(es.backend))


def test_two_compactions_at_once(tmp_path):
    """Another process's compaction (its temp files carry its pid) and
    another thread's: each keeps the other's work."""
    import threading
    from core_helpers import spawn
    path = _store_with_cuts(tmp_path)
    with EventStore(path) as es:
        want = readable(es, view_of(es.backend)())
    code = ("import sys, time\nfrom evstore import EventStore\n"
            "from evstore.core.forgetting import Forgetting\n"
            "with EventStore(sys.argv[1]) as es:\n"
            "    b = es.backend\n"
            "    b.compact(lambda: Forgetting(b.cuts(), b.retention_rules(), time.time_ns() // 1000))\n")
    p = spawn(code, tmp_path / "s")
    with EventStore(tmp_path / "s") as es:
        b = es.backend
        ts = [threading.Thread(target=b.compact, args=(view_of(b),)) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        _out, err = p.communicate()
        assert p.returncode == 0, err.decode()
        assert [e.to_dict() for e in b.read_all()] == want
        assert store_holds(es.directory, SECRET) == []
        assert es.verify().ok


def pause_before_the_stream_step(monkeypatch):
    """Compactions in this process stop before their stream step's journal
    (its temp files written) until ``go`` is set; ``inside`` says one is there."""
    import threading
    from evstore.backends.files import compact_streams
    inside, go = threading.Event(), threading.Event()
    apply = compact_streams.StreamCompaction._streams_apply

    def paused(self, group):
        inside.set()
        assert go.wait(30)
        return apply(self, group)

    monkeypatch.setattr(compact_streams.StreamCompaction, "_streams_apply", paused)
    return inside, go


def test_a_second_compaction_waits_for_the_one_running(tmp_path, monkeypatch):
    """Most of a compaction runs outside the writer lock, against files
    another compaction could remove meanwhile (CI once saw one list a stream
    directory the other had just deleted).  So a second compaction, in
    another process, waits for the first; then both succeed."""
    import threading
    from core_helpers import spawn
    path = _store_with_cuts(tmp_path)
    with EventStore(path) as es:
        want = readable(es, view_of(es.backend)())
    inside, go = pause_before_the_stream_step(monkeypatch)
    code = ("import sys, time\nfrom evstore import EventStore\n"
            "from evstore.core.forgetting import Forgetting\n"
            "with EventStore(sys.argv[1]) as es:\n"
            "    b = es.backend\n"
            "    print(b.compact(lambda: Forgetting(b.cuts(), b.retention_rules(), "
            "time.time_ns() // 1000))['events_removed'])\n")
    with EventStore(tmp_path / "s") as es:
        b = es.backend
        first = threading.Thread(target=b.compact, args=(view_of(b),))
        first.start()
        try:
            assert inside.wait(30)
            p = spawn(code, tmp_path / "s")
            time.sleep(1.0)
            assert p.poll() is None, "the second compaction did not wait"
        finally:
            go.set()
            first.join()
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
        assert out.decode().strip() == "0"  # the first one had removed everything
        assert [e.to_dict() for e in b.read_all()] == want
        assert store_holds(es.directory, SECRET) == []
        assert es.verify().ok


def test_a_compaction_that_cannot_wait_longer_says_why(tmp_path):
    import fcntl
    from evstore.errors import StoreLocked
    with EventStore(tmp_path / "s", sync=False, lock_timeout=0.2) as es:
        populate(es, 3)
        es.backend.cut("cust-alice", ANY, None, False)
        fd = os.open(tmp_path / "s" / "log", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # what another compaction holds
            t0 = time.monotonic()
            with pytest.raises(StoreLocked, match="a compaction or repair of .* is running "
                                                  r"\(waited 0.2s\)"):
                es.backend.compact(view_of(es.backend))
            assert time.monotonic() - t0 < 5
        finally:
            os.close(fd)
        assert store_holds(es.directory, SECRET)  # nothing was done
        assert es.backend.compact(view_of(es.backend))["events_removed"] == 3


def test_verify_accepts_a_stream_directory_emptied_below_its_floor(tmp_path):
    """What an import leaves when it dies right after raising a stream's
    floor (its own older records gone, the new batch not yet written)."""
    with EventStore(tmp_path / "s", sync=False) as es:
        es.append("s", [{"type": "T"}] * 3)
        with es.backend.bulk() as bulk:
            bulk._w._version_gap("s", *es.backend._stream_tail_locked("s"), 6)
        report = es.verify()
        assert report.ok, report.problems
        assert es.version("s") == 5


def test_an_interrupted_step_is_finished_by_the_next_writer_or_verify(es, monkeypatch):
    """A step killed after its renames, before its deletions: the stream's
    old segment and its copy from the floor both there."""
    from evstore.backends.files import journal
    from evstore.ops import verify
    populate(es)
    b = es.backend
    b.cut("orders", ANY, 21, False)
    real_unlink = os.unlink

    def unlink(path, *a, **kw):
        if str(path).endswith(".seg") and "streams" in str(path):
            raise OSError("killed here")
        return real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(Exception):
        b.compact(view_of(b))
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert journal.pending(es.directory)
    report = verify(es.directory)  # as 'evstore verify STORE' does: no store opened
    assert report.ok, report.problems
    assert not journal.pending(es.directory)
    b.compact(view_of(b))
    assert [e.version for e in b.read_stream("orders")][0] == 21
    assert es.verify().ok


def test_the_commit_log_keeps_what_a_stream_log_still_holds(es, monkeypatch):
    """The commit log's segments are rewritten while the stream step runs
    beside them, with the floors as the stream step will leave them; a
    stream log the step did not cut (here: skipped) makes the segments be
    written again keeping its events, or its records would lose their batch."""
    from evstore.backends.files.compact_streams import StreamCompaction
    populate(es)
    b = es.backend
    b.cut("cust-alice", ANY, None, False)
    b.cut("orders", ANY, 21, False)
    real = StreamCompaction._stream_prepare
    monkeypatch.setattr(StreamCompaction, "_stream_prepare",
                        lambda self, s, floor: None if s == "orders" else real(self, s, floor))
    assert b.compact(view_of(b))["events_removed"] == 30
    report = es.verify()
    assert report.ok, report.problems
    assert store_holds(es.directory, SECRET) == []
    assert [e.version for e in b.read_stream("orders")][:2] == [1, 2]  # raw: still there
    monkeypatch.setattr(StreamCompaction, "_stream_prepare", real)
    assert b.compact(view_of(b))["events_removed"] == 20
    assert [e.version for e in b.read_stream("orders")][:2] == [21, 22]
    assert es.verify().ok


def test_a_failed_stream_step_moves_no_commit_log_segment(es, monkeypatch):
    """The stream step's error reaches the caller, and the commit log's
    rewritten segments, made beside it, are never moved into place."""
    from evstore.backends.files.compact_streams import StreamCompaction
    populate(es)
    b = es.backend
    b.cut("cust-alice", ANY, None, False)
    log = os.path.join(es.directory, "log")

    def failing(self, group):
        raise OSError("the stream step failed")

    monkeypatch.setattr(StreamCompaction, "_streams_apply", failing)
    before = {n: os.stat(os.path.join(log, n)).st_ino for n in os.listdir(log)}
    with pytest.raises(OSError, match="stream step failed"):
        b.compact(view_of(b))
    after = {n: os.stat(os.path.join(log, n)).st_ino for n in os.listdir(log)
             if not n.startswith(".tmp-compact-")}
    assert {n: i for n, i in after.items() if n in before} == before
    assert store_holds(os.path.join(es.directory, "log"), SECRET)
    monkeypatch.undo()
    b.compact(view_of(b))
    assert store_holds(es.directory, SECRET) == []
    assert es.verify().ok


@pytest.mark.parametrize("which", ["first", "after"])
def test_a_damaged_frame_is_never_copied(tmp_path, which):
    """A kept frame whose bytes are damaged in a sealed segment: compaction
    refuses (CorruptStore, not a FrameError that escaped) and no segment of
    the commit log is changed.  "first":
    the damaged frame comes before the first frame that loses an event (the
    copied prefix); "after": among the kept frames copied after one."""
    from evstore.errors import CorruptStore
    d = tmp_path / "s"
    mark = b"KEEP-MARK-0042"
    with EventStore(d, sync=False, segment_bytes=4096) as es:
        for i in range(40):
            if which == "after":
                es.append("gone", [{"type": "G", "data": {"i": i}}])
            data = {"i": i, "m": mark.decode()} if i == 10 else {"i": i}
            es.append("kept", [{"type": "K", "data": data}])
            if which == "first" and i >= 10:
                es.append("gone", [{"type": "G", "data": {"i": i}}])
        es.backend.cut("gone", ANY, None, False)
        with es.backend.writer_lock():  # stream logs synced (as by a durable writer):
            es.backend._sync_streams_locked()  # nothing but compaction reads the segment
    segs = [p for p in (d / "log").iterdir() if p.suffix == ".log"]
    hit = [p for p in segs if mark in p.read_bytes()]
    assert len(hit) == 1 and hit[0] != max(segs)  # a sealed segment
    data = bytearray(hit[0].read_bytes())
    data[data.index(mark) + 3] ^= 0x01
    hit[0].write_bytes(bytes(data))
    before = store_files(d)
    with EventStore(d) as es:
        with pytest.raises(CorruptStore, match="damaged frame"):
            es.backend.compact(view_of(es.backend))
    after = store_files(d)
    # the commit log as it was (the damaged frame left for verify and repair),
    # no temp file left; what may have changed is what comes before the
    # rewrite: the roll (a new empty segment) and the removed stream's log
    assert {k: v for k, v in after.items() if k in before and k.startswith("log/")} == \
        {k: v for k, v in before.items() if k.startswith("log/")}
    assert not [k for k in after if ".tmp-compact" in k]
    assert all(not after[k] for k in after if k not in before)


def _deleted_open_files() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(" (deleted)") and "/streams/" in target:
            out.append(target)  # (a replaced log segment may stay in a reader's cache)
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_files_held_through_a_step_are_closed_after_it(es):
    """journal.hold keeps the files a step unlinks or replaces open so that
    their blocks are freed after the writer lock, not under it; every one
    of them must be closed once the step is done (else the space of a
    removed stream would stay used until the process exits)."""
    populate(es)
    es.backend.cut("cust-alice", ANY, None, False)
    es.backend.cut("orders", ANY, 10, False)
    before = _deleted_open_files()
    es.backend.compact(view_of(es.backend))
    assert _deleted_open_files() == before
    assert not store_holds(es.backend.directory, SECRET)


def test_a_big_removed_batch_after_kept_ones(tmp_path):
    """A run of kept frames is still to be copied when a big frame (read in
    pieces, a batch of its own for the walker) is removed after it."""
    with EventStore(tmp_path / "s", sync=False, segment_bytes=1 << 20) as es:
        big = [{"type": "B", "data": {"i": i, "pad": "p" * 200}} for i in range(6000)]
        es.append("gone", [{"type": "G"}])
        es.append("keep", [{"type": "K", "data": {"i": 1}}])
        es.append("keep", [{"type": "K", "data": {"i": 2}}])
        es.append("gone", big)
        es.append("keep", [{"type": "K", "data": {"i": 3}}])
        es.append("x", [{"type": "X"}])
        b = es.backend
        b.cut("gone", ANY, None, False)
        view = view_of(b)
        want = readable(es, view())
        out = b.compact(view)
        assert out["events_removed"] == 6001
        assert [e.to_dict() for e in b.read_all()] == want
        assert es.verify().ok


# -- verify and repair beside a compaction --------------------------------------------------
def test_verify_that_a_compaction_overlapped_checks_again(tmp_path, monkeypatch):
    """A compaction replaces segments while verify walks them: what verify
    read half before and half after the step looks damaged (seen: "damaged
    frame (short header)", "versions ... are missing").  Verify notices the
    step (evstore.json replaced) and checks again."""
    from evstore.ops import verify
    from evstore.ops.verify_log import LogChecker
    path = _store_with_cuts(tmp_path)
    walk = LogChecker._log_segment
    runs = []

    def compacting_meanwhile(self, run, seg):
        if not runs:
            runs.append(_compact(path))  # between the listing and the walk
        return walk(self, run, seg)

    monkeypatch.setattr(LogChecker, "_log_segment", compacting_meanwhile)
    report = verify(path)
    assert runs and runs[0]["events_removed"] > 0
    assert report.ok, [p.to_dict() for p in report.problems]
    assert report.warnings == []


def test_verify_says_when_compactions_kept_overlapping_it(tmp_path, monkeypatch):
    from evstore.backends.files import journal
    from evstore.ops import verify, verifier
    from evstore.ops.report import Problem
    path = _store_with_cuts(tmp_path)
    run = verifier._Verifier.run
    runs = []

    def damaged_and_moved(self):
        report = run(self)
        report.problems.append(Problem("log", "looks damaged"))
        journal.bump_generation(str(path))  # a step ran meanwhile
        runs.append(1)
        return report

    monkeypatch.setattr(verifier._Verifier, "run", damaged_and_moved)
    report = verify(path)
    assert len(runs) == verifier.ATTEMPTS
    assert not report.ok
    assert [w.kind for w in report.warnings] == ["compaction"]
    assert "run verify again once it is over" in report.warnings[0].message


def test_verify_reports_damage_that_no_compaction_explains_at_once(tmp_path, monkeypatch):
    from evstore.ops import verify, verifier
    path = _store_with_cuts(tmp_path)
    seg = sorted((path / "log").glob("*.log"))[0]
    data = bytearray(seg.read_bytes())
    data[40] ^= 0xFF
    seg.write_bytes(bytes(data))
    run = verifier._Verifier.run
    runs = []
    monkeypatch.setattr(verifier._Verifier, "run", lambda self: runs.append(1) or run(self))
    report = verify(path)
    assert not report.ok and runs == [1]


def test_verify_leaves_a_running_compactions_temp_files_alone(tmp_path):
    import fcntl
    import subprocess
    import sys
    from evstore.ops import verify
    path = _store_with_cuts(tmp_path)
    maker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (path / "log" / f".tmp-compact-{maker.pid}-0000000000000001.log").write_bytes(b"x")
        (path / "log" / ".tmp-compact-999999999-0000000000000002.log").write_bytes(b"x")
        assert [w.kind for w in verify(path).warnings] == ["temp", "temp"]  # nobody runs
        fd = os.open(path / "log", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a compaction runs: its work in progress
            report = verify(path)
        finally:
            os.close(fd)
    finally:
        maker.kill()
        maker.wait()
    # the live maker's file is left alone; a dead maker's is still a leftover
    assert report.ok and [w.file for w in report.warnings] == [
        os.path.join("log", ".tmp-compact-999999999-0000000000000002.log")]


def test_repair_still_moves_a_dead_compactions_temp_files(tmp_path):
    """Repair holds the compaction lock itself: that must not make a dead
    compaction's leftovers look like a running one's."""
    from evstore.ops import repair
    path = _store_with_cuts(tmp_path)
    leftover = path / "log" / ".tmp-compact-999999999-0000000000000001.log"
    leftover.write_bytes(b"x")
    report = repair(path)
    assert "move" in [a.action for a in report.actions] and not leftover.exists()


def test_repair_waits_for_a_running_compaction(tmp_path, monkeypatch):
    """Repair moves temp files into quarantine: a running compaction's would
    be taken from under it (its journal then renames nothing and deletes the
    segments the temp file replaced).  So repair waits for it."""
    import threading
    from evstore.errors import StoreLocked
    from evstore.ops import repair, verify
    path = _store_with_cuts(tmp_path)
    with EventStore(path) as es:
        want = readable(es, view_of(es.backend)())
    inside, go = pause_before_the_stream_step(monkeypatch)
    t = threading.Thread(target=_compact, args=(path,))
    t.start()
    try:
        assert inside.wait(30)
        temps = sorted(p.name for p in path.rglob(".tmp-compact-*"))
        assert temps  # the copies it is about to move into place
        with pytest.raises(StoreLocked, match="a compaction or repair of .* is running"):
            repair(path, lock_timeout=0.3)
        assert set(temps) <= {p.name for p in path.rglob(".tmp-compact-*")}  # none moved
    finally:
        go.set()
        t.join()
    with EventStore(path) as es:
        assert [e.to_dict() for e in es.backend.read_all()] == want
    assert verify(path).ok


def test_verify_does_not_check_again_for_a_journal_nobody_is_running(tmp_path, monkeypatch):
    """A journal a crash left (its step is finished by the next writer) is
    not a step under way: damage is reported after one walk, without the
    'compaction moved files' warning."""
    import json as _json
    from evstore.core.checkline import seal
    from evstore.backends.files import journal
    from evstore.ops import verify, verifier
    path = _store_with_cuts(tmp_path)
    seg = sorted((path / "log").glob("*.log"))[0]
    data = bytearray(seg.read_bytes())
    data[40] ^= 0xFF
    seg.write_bytes(bytes(data))
    body = _json.dumps({"moves": [], "unlink": [], "rmdir": []}).encode() + b"\n"
    (path / "compacting").write_bytes(seal(body))
    assert journal.pending(str(path))
    run = verifier._Verifier.run
    runs = []
    monkeypatch.setattr(verifier._Verifier, "run", lambda self: runs.append(1) or run(self))
    import fcntl
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the writer lock is held: verify cannot finish it
        report = verify(path)
    finally:
        os.close(fd)
    assert not report.ok and runs == [1]
    assert "compaction" in [w.kind for w in report.warnings]  # the interrupted step, said once
    assert not any("moved files while verify read them" in w.message for w in report.warnings)
