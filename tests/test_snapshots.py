"""The snapshot store: layout, the self-checking format, finding the latest
without reading every file, automatic snapshots, and racing writers."""
from __future__ import annotations

import builtins
import json
import logging
import os
import threading

import pytest

from evstore import EventStore, NewEvent
from evstore.errors import CorruptStore, InvalidEvent, NotFound, StreamNotFound, UsageError
from evstore.features.reducers import load_reducer
from evstore.features.autosnap import crossed
from evstore.disk.streamdir import stream_key


def deposits(n, start=0):
    return [NewEvent("Deposited", {"amount": start + i + 1}) for i in range(n)]


@pytest.fixture
def store(store_dir):
    with EventStore(store_dir, sync=False) as s:
        yield s


class Counting:
    """A reducer that counts its calls (the sum of amounts as state)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, state, event):
        self.calls += 1
        return {"sum": (state or {"sum": 0})["sum"] + event["data"]["amount"]}


def test_layout_file_name_and_info_count(store):
    store.append("../x", deposits(3))
    snap = store.snapshots.save("../x", {"b": 1, "a": [1.5, "é", 2 ** 63]}, 2)
    key = stream_key("../x")
    want = os.path.join(store.directory, "snapshots", key[:2], key, "0000000000000002.snap")
    assert snap.path == want and os.path.isfile(want)
    assert store.info()["snapshots"] == 1 == store.snapshots.count()
    lines = open(want, "rb").read().split(b"\n")
    assert len(lines) == 4 and lines[3] == b""
    header = json.loads(lines[0])
    assert header["stream"] == "../x" and header["version"] == 2
    assert header["reducer"] == "merge" and header["fingerprint"].startswith("merge@sha256:")
    assert header["event_id"] == list(store.read("../x"))[1].id
    # exact round trip, key order included
    got = store.snapshots.load("../x", 2)
    assert json.dumps(got.state) == json.dumps({"b": 1, "a": [1.5, "é", 2 ** 63]})
    assert got.to_dict() == {"stream": "../x", "version": 2, "state": got.state,
                             "created_at": header["created_at"]}


def test_save_refuses_what_it_cannot_keep(store):
    with pytest.raises(StreamNotFound):
        store.snapshots.save("nope", {}, 1)
    store.append("s", deposits(2))
    with pytest.raises(NotFound, match="no version 3"):
        store.snapshots.save("s", {}, 3)
    with pytest.raises(UsageError):
        store.snapshots.save("s", {}, 0)
    with pytest.raises(InvalidEvent, match="not a JSON value"):
        store.snapshots.save("s", {"x": {1, 2}}, 1)
    with pytest.raises(InvalidEvent, match="NaN"):
        store.snapshots.save("s", [float("nan")], 1)
    with pytest.raises(UsageError, match="unknown reducer"):
        store.snapshots.save("s", {}, 1, reducer="nope")
    assert store.snapshots.count() == 0


def test_latest_at_or_below(store):
    store.append("s", deposits(30))
    for v in (5, 10, 20):
        store.snapshots.save("s", {"v": v}, v)
    store.snapshots.save("s", {"v": 25}, 25, reducer="count")
    snaps = store.snapshots
    assert snaps.latest("s").version == 25
    assert snaps.latest("s", max_version=24).version == 20
    assert snaps.latest("s", max_version=10).version == 10
    assert snaps.latest("s", max_version=4) is None
    assert snaps.latest("s", reducer="merge").version == 20
    assert snaps.latest("s", reducer="list") is None
    assert snaps.latest("other") is None
    assert [h.version for h in snaps.list("s")] == [5, 10, 20, 25]
    assert [h.reducer for h in snaps.list("s")] == ["merge"] * 3 + ["count"]


def test_latest_opens_one_file_not_all(store, monkeypatch):
    store.append("s", deposits(300))
    for v in range(1, 301):
        store.snapshots.save("s", {"v": v}, v)
    opened = []
    real_open = builtins.open

    def spy(path, *a, **kw):
        if str(path).endswith(".snap"):
            opened.append(os.path.basename(str(path)))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(builtins, "open", spy)
    assert store.snapshots.latest("s", max_version=150).state == {"v": 150}
    assert opened == ["0000000000000150.snap"]
    opened.clear()
    snap, notes = store.snapshots.usable("s", 200, load_reducer("merge"))
    assert snap.version == 200 and notes == []
    assert set(opened) == {"0000000000000200.snap"} and len(opened) == 2  # header + body


def test_damage_is_detected_and_stepped_over(store):
    store.append("s", deposits(10))
    store.snapshots.save("s", {"v": 4}, 4)
    bad = store.snapshots.save("s", {"v": 8}, 8)
    data = bytearray(open(bad.path, "rb").read())
    i = data.index(b'"v": 8')
    data[i + 5:i + 6] = b"9"  # valid JSON, wrong checksum
    open(bad.path, "wb").write(bytes(data))
    with pytest.raises(CorruptStore, match="checksum mismatch"):
        store.snapshots.latest("s")
    snap, notes = store.snapshots.usable("s", 10, load_reducer("merge"))
    assert snap.version == 4
    assert notes == ["the snapshot at version 8 is damaged (checksum mismatch)"]
    # truncated, garbage, a file for another stream
    for junk in (b"", b'{"evstore_snapshot": 1', b"\x00" * 50):
        open(bad.path, "wb").write(junk)
        snap, notes = store.snapshots.usable("s", 10, load_reducer("merge"))
        assert snap.version == 4 and "damaged" in notes[0]
    other = store.snapshots.save("s", {"v": 4}, 4)
    os.replace(other.path, bad.path)  # a version-4 file under the version-8 name
    assert "says version 4" in store.snapshots.header("s", 8).problem


def test_fingerprint_and_event_notes(store, tmp_path):
    store.append("s", deposits(10))
    f = tmp_path / "r.py"
    f.write_text("def r(state, event):\n    return {'n': (state or {'n': 0})['n'] + 1}\n")
    r1 = load_reducer(f"{f}:r")
    store.snapshots.save("s", {"n": 9}, 9, reducer=r1)
    store.snapshots.save("s", {"n": 10}, 10, reducer="count")
    f.write_text("def r(state, event):\n    return {'n': (state or {'n': 0})['n'] + 2}\n")
    r2 = load_reducer(f"{f}:r")
    assert r1.name == r2.name == "r.py:r" and r1.fingerprint != r2.fingerprint
    snap, notes = store.snapshots.usable("s", 10, r2)
    assert snap is None
    assert notes == ["the snapshot at version 10 was made by reducer count, not r.py:r",
                     "the snapshot at version 9 was made by another version of r.py:r "
                     "(its source has changed since)"]
    store.snapshots.save("s", {"n": 5}, 5, reducer=r2, event_id="00000000-0000-0000-0000-000000000000")
    ids = {ev.version: ev.id for ev in store.read("s")}
    snap, notes = store.snapshots.usable("s", 10, r2, event_id=ids.get)
    assert snap is None and "another event" in notes[-1]


def test_crossed():
    assert crossed(10, 0, 9) is None
    assert crossed(10, 9, 10) == 10
    assert crossed(10, 9, 35) == 30
    assert crossed(10, 10, 19) is None
    assert crossed(None, 0, 100) is None


def test_auto_snapshot_on_crossing(store_dir):
    r = Counting()
    with EventStore(store_dir, sync=False, snapshot_every=10, reducer=r) as s:
        s.append("s", deposits(9))
        assert s.snapshots.count() == 0 and r.calls == 0
        s.append("s", deposits(14, 9))  # 9 -> 23 crosses 10 and 20: one snapshot, at 20
        assert [h.version for h in s.snapshots.list("s")] == [20]
        assert r.calls == 20
        s.append("s", deposits(7, 23))  # 23 -> 30: from the snapshot at 20
        assert [h.version for h in s.snapshots.list("s")] == [20, 30]
        assert r.calls == 30
        assert s.snapshots.latest("s").state == {"sum": sum(range(1, 31))}
        assert s.replay("s") == ({"sum": sum(range(1, 31))}, 30)  # store.reducer by default
        assert r.calls == 30  # started from the snapshot at 30


def test_auto_snapshot_failure_does_not_fail_the_append(store_dir, caplog):
    def broken(state, event):
        raise ValueError("bad reducer")

    with EventStore(store_dir, sync=False, snapshot_every=2, reducer=broken) as s:
        with caplog.at_level(logging.WARNING, logger="evstore"):
            res = s.append("s", deposits(3))
        assert res.version == 3 and s.snapshots.count() == 0
    assert "automatic snapshot of 's' at version 2 not saved" in caplog.text
    assert "ValueError: bad reducer" in caplog.text


def test_racing_savers_leave_one_whole_file(store_dir):
    with EventStore(store_dir, sync=False) as s:
        s.append("s", deposits(5))
    big = {"k": list(range(20000))}
    errors = []

    def saver(i):
        try:
            with EventStore(store_dir) as s:  # durable, as a second process would be
                for _ in range(5):
                    s.snapshots.save("s", big, 5)
                    assert s.snapshots.latest("s").state == big  # never a torn file
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=saver, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with EventStore(store_dir) as s:
        assert s.snapshots.count() == 1
        d = s.snapshots.stream_dir("s")
        assert os.listdir(d) == ["0000000000000005.snap"]  # no temp files left


def test_head_of_100k_stream_applies_at_most_1000_events(store_dir):
    """The performance promise: a 100,000-event stream with a snapshot every 1,000."""
    r = Counting()
    with EventStore(store_dir, sync=False, snapshot_every=1000, reducer=r) as s:
        for b in range(100):
            s.append("long", deposits(1000, b * 1000))
        assert s.snapshots.count() == 100
        assert r.calls <= 100_000  # each automatic snapshot folded on from the last
        expected = {"sum": 100_000 * 100_001 // 2}
        r.calls = 0
        assert s.replay("long") == (expected, 100_000)
        assert r.calls == 0
        assert s.replay("long", to_version=99_999)[1] == 99_999
        assert r.calls == 999
        s.append("long", deposits(1, 100_000))
        r.calls = 0
        s.replay("long")
        assert r.calls == 1
