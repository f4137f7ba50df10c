"""One EventStore front end over every backend (the seam).

The same library calls on a directory and on the in-memory reference
backend: the front end's rules (validation, expected versions and retries,
time windows, limits, automatic snapshots) do not depend on the backend.
PostgreSQL runs the same through tests/contract/.
"""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from evstore import ANY, NO_STREAM, EventStore
from evstore.errors import EventNotFound, InvalidEvent, StreamNotFound, WrongExpectedVersion

_names = itertools.count()


@pytest.fixture(params=["files", "memory"])
def location(request, tmp_path):
    return str(tmp_path / "store") if request.param == "files" else f"memory:seam-{next(_names)}"


def ev(t="T", **data):
    return {"type": t, "data": data}


def test_the_backend_is_chosen_by_the_location(location):
    with EventStore(location) as s:
        want = "memory" if location.startswith("memory:") else "files"
        assert s.kind == want and s.info()["backend"] == want
        assert (s.directory is None) == (want == "memory")


def test_expected_versions_and_retries_follow_one_rule(location):
    with EventStore(location) as s:
        batch = [dict(ev(i=1), id="11111111-1111-4111-8111-111111111111"),
                 dict(ev(i=2), id="22222222-2222-4222-8222-222222222222")]
        r = s.append("a", batch, NO_STREAM)
        assert (r.version, r.position, r.count) == (2, 2, 2)
        again = s.append("a", batch, NO_STREAM)          # a retry: nothing written
        assert (again.version, again.position) == (2, 2) and s.head() == 2
        with pytest.raises(WrongExpectedVersion):
            s.append("a", [ev()], 1)
        with pytest.raises(WrongExpectedVersion, match="only part of this batch"):
            s.append("a", [batch[1], ev()], 1)
        with pytest.raises(WrongExpectedVersion):
            s.append("b", [ev()], "exists")
        with pytest.raises(InvalidEvent):
            s.append("a", [], ANY)
        assert s.version("a") == 2 and s.version("b") == 0


def test_reads_filters_and_windows(location):
    with EventStore(location) as s:
        for i in range(6):
            s.append("a" if i % 2 else "b", [ev("Odd" if i % 2 else "Even", i=i)])
        assert [e.data["i"] for e in s.read("a", backwards=True, limit=2)] == [5, 3]
        assert [e.data["i"] for e in s.read_all(types=["Even"], limit=2)] == [0, 2]
        assert [e.stream for e in s.read_all(stream_prefix="a")] == ["a"] * 3
        future = datetime.now(timezone.utc) + timedelta(days=1)
        assert list(s.read("a", since=future)) == []
        assert len(list(s.read_all(until=future, limit=4))) == 4
        assert [r.stream for r in s.streams()] == ["a", "b"]
        first = next(iter(s.read_all()))
        assert s.find(first.id) == first
        with pytest.raises(EventNotFound):
            s.find("00000000-0000-4000-8000-000000000000")
        with pytest.raises(StreamNotFound):
            s.read("nope")


def test_automatic_snapshots_on_every_backend(location):
    with EventStore(location, snapshot_every=2, reducer="merge") as s:
        for i in range(5):
            s.append("a", [ev(x=i)])
        assert s.snapshots.versions("a") == [2, 4]
        assert s.snapshots.latest("a").state == {"x": 3}
        assert s.replay("a") == ({"x": 4}, 5)
        s.snapshots.delete("a", 2)
        assert s.snapshots.versions("a") == [4]


def test_the_watcher_wakes_on_a_commit(location):
    import threading
    import time

    with EventStore(location) as s:
        w = s.watcher()
        try:
            assert w.wait(0, 0.05) == 0                      # nothing: the timeout
            t = threading.Timer(0.2, lambda: s.append("a", [ev()]))
            t.start()
            t0 = time.monotonic()
            assert w.wait(0, 10) == 1 and time.monotonic() - t0 < 5
            t.join()
        finally:
            w.close()


def test_import_writes_through_the_bulk_session(location, tmp_path):
    import io

    from evstore.ops import export_events, import_events

    with EventStore(str(tmp_path / "src")) as src:
        for i in range(3):
            src.append(f"s{i % 2}", [ev(i=i)])
        out = io.BytesIO()
        export_events(src, out)
    with EventStore(location) as dst:
        import_events(dst, io.BytesIO(out.getvalue()))
        again = io.BytesIO()
        export_events(dst, again)
    assert again.getvalue() == out.getvalue()


def test_checkpoints_and_settings_are_the_backends(location):
    """The checkpoint and settings features keep nothing themselves: what
    they save, the backend returns (a directory keeps files, the same bytes
    as ever; memory keeps rows), and one consumer per name holds."""
    from evstore.errors import CorruptStore, StoreLocked
    from evstore.features import settings
    from evstore.features.checkpoints import CheckpointStore

    with EventStore(location) as s:
        s.append("a", [ev(), ev()])
        cps = CheckpointStore(s)
        cps.save("c", 1, "a")
        row = s.backend.get_checkpoint("c")
        assert (row.name, row.position, row.stream, row.sealed) == ("c", 1, "a", True)
        assert [r.name for r in s.backend.checkpoints()] == ["c"]
        with s.backend.hold_checkpoint("c"):
            with pytest.raises(StoreLocked, match="in use by another consumer"):
                cps.set("c", 2)
        assert cps.set("c", 2).position == 2 and s.backend.get_checkpoint("c").position == 2
        assert settings.update(s, snapshot_every=3) == {"snapshot_every": 3}
        assert s.backend.settings() == {"snapshot_every": 3} and settings.load(s) == {"snapshot_every": 3}
        cps.delete("c")
        assert s.backend.get_checkpoint("c") is None and s.backend.checkpoints() == []
        if s.directory is not None:  # the same damage rules as before the move
            with open(cps.path("d"), "wb") as f:
                f.write(b'{"evstore_checkpoint": 1, "name": "d", "posit')
            with pytest.raises(CorruptStore, match="damaged checkpoint"):
                cps.get("d")
            rows, problems = s.backend.checkpoint_findings()
            assert rows == [] and problems[0]["file"].startswith("checkpoints")
            assert s.info()["checkpoints"] == [{"name": None, "file": problems[0]["file"],
                                                "damaged": True}]


def test_a_follower_waits_through_the_stores_watcher(location, monkeypatch):
    """subscribe() (and tail -f) wait on store.watcher() on every backend."""
    import threading

    with EventStore(location) as s:
        made = []
        real = s.backend.watcher
        monkeypatch.setattr(s.backend, "watcher", lambda: made.append(1) or real())
        s.append("a", [ev()])
        sub = s.subscribe(idle_timeout=5)
        t = threading.Timer(0.2, lambda: s.append("a", [ev()]))
        t.start()
        got = [next(sub).position, next(sub).position]
        sub.close()
        t.join()
        assert got == [1, 2] and made == [1]
