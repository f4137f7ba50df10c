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
