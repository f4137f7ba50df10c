"""The library's promises, the same on every backend (files, PostgreSQL,
memory): expected versions, idempotent retries, atomic batches, exact JSON,
reads in both directions, ``$all`` order, subscriptions with checkpoints,
snapshots and replay.  Public API only."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from evstore import (ANY, NO_STREAM, STREAM_EXISTS, EventStore, InvalidEvent, NewEvent,
                     StreamNotFound, WrongExpectedVersion)


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


def evs(n: int, first_id: int = 1, type_: str = "T") -> list[NewEvent]:
    return [NewEvent(type_, {"i": i}, None, uid(first_id + i)) for i in range(n)]


@pytest.fixture
def store(location):
    with EventStore(location, sync=False) as es:
        yield es


def test_every_expected_version_form(store):
    with pytest.raises(WrongExpectedVersion) as e:
        store.append("s", evs(1), expected_version=STREAM_EXISTS)
    assert e.value.current == 0
    assert tuple(store.append("s", evs(2), expected_version=NO_STREAM)) == ("s", 2, 2, 2)
    with pytest.raises(WrongExpectedVersion):
        store.append("s", evs(1, 10), expected_version=NO_STREAM)
    assert store.append("s", evs(1, 11), expected_version=STREAM_EXISTS).version == 3
    assert store.append("s", evs(1, 12), expected_version=3).version == 4
    with pytest.raises(WrongExpectedVersion) as e:
        store.append("s", evs(1, 13), expected_version=2)
    assert (e.value.current, str(e.value).split(";")[0]) == (
        4, "wrong expected version: expected 2, current is 4")
    assert store.append("s", evs(1, 14), expected_version=ANY).version == 5
    assert store.version("s") == 5 and store.version("absent") == 0
    assert [e.position for e in store.read_all()] == [1, 2, 3, 4, 5]


def test_idempotent_retries_all_none_partial(store):
    first = store.append("s", evs(3), expected_version=NO_STREAM)
    store.append("other", evs(1, 50))
    # all: the same ids where they would go -> success, nothing written
    again = store.append("s", evs(3), expected_version=0)
    assert tuple(again) == tuple(first)
    assert tuple(store.append("s", evs(3), expected_version=ANY)) == tuple(first)
    assert tuple(store.append("s", evs(2, 2), expected_version=1)) == ("s", 3, 3, 2)
    assert store.head() == 4
    # partial: some of the ids match -> a conflict, nothing written
    mixed = evs(2) + evs(1, 99)
    with pytest.raises(WrongExpectedVersion):
        store.append("s", mixed, expected_version=0)
    with pytest.raises(WrongExpectedVersion):
        store.append("s", evs(2, 2) + evs(1, 98), expected_version=ANY)
    # none: new ids at an old version -> a conflict
    with pytest.raises(WrongExpectedVersion):
        store.append("s", evs(2, 200), expected_version=1)
    assert store.head() == 4 and store.version("s") == 3


def test_a_batch_is_atomic(store):
    store.append("s", evs(2))
    bad = evs(4, 10)
    bad[2] = {"type": "T", "data": {"n": 2**64}}
    with pytest.raises(InvalidEvent):
        store.append("s", bad)
    with pytest.raises(InvalidEvent):  # the same id twice in one batch
        store.append("s", evs(2, 20) + evs(1, 20))
    assert store.head() == 2
    r = store.append("s", evs(5, 30))
    got = list(store.read_all(from_position=3))
    assert [e.position for e in got] == [3, 4, 5, 6, 7] and r.position == 7
    assert len({e.recorded_at for e in got}) == 1, "one commit time per batch"


EXACT = [
    {"z": 1, "a": 2, "10": 3, "9": 4, "é": 5, "e\u0301": 6, "": 7, "n": {"y": 1, "x": 2}},
    [2**64 - 1, -2**63, 2**63 - 1, 0, -1, 2**53 + 1],
    [0.1, -0.0, 1e308, 5e-324, 1.0, 1, True, None, "1"],
    "𝄞 😀 שלום \u2028 \x00 \ufeff e\u0301",
    {"deep": [[[{"a": [{}]}]]], "empty": [], "o": {}},
    None,
]


def test_json_comes_back_exactly(store):
    # dicts: NewEvent's None means "not given" ({}), a dict's null is null
    sent = [{"type": "Ünïcode τύπος", "data": v, "metadata": {"m": v}} for v in EXACT]
    store.append("j", sent)
    got = list(store.read("j"))
    for ev, v in zip(got, EXACT):
        assert json.dumps(ev.data, ensure_ascii=False) == json.dumps(v, ensure_ascii=False)
        assert json.dumps(ev.metadata) == json.dumps({"m": v})
        assert ev.type == "Ünïcode τύπος"
        d = ev.to_dict()
        assert list(d) == ["stream", "version", "position", "id", "type", "data",
                           "metadata", "recorded_at"]
        assert d["recorded_at"].endswith("Z") and len(d["recorded_at"]) == 27


@pytest.fixture
def filled(store):
    """a: A B C D; b: A B; ab: C; positions 1..7 as a1 b1 a2 ab1 a3 b2 a4."""
    for stream, t in [("a", "A"), ("b", "A"), ("a", "B"), ("ab", "C"), ("a", "C"),
                      ("b", "B"), ("a", "D")]:
        store.append(stream, [NewEvent(t, {})])
    return store


def test_reads_both_ways_with_bounds_limits_types_prefix(filled):
    s = filled

    def v(it):
        return [e.version for e in it]

    def p(it):
        return [e.position for e in it]

    assert v(s.read("a")) == [1, 2, 3, 4]
    assert v(s.read("a", from_version=2, to_version=3)) == [2, 3]
    assert v(s.read("a", from_version=2, to_version=3, backwards=True)) == [3, 2]
    assert v(s.read("a", backwards=True, limit=2)) == [4, 3]
    assert v(s.read("a", limit=2)) == [1, 2]
    assert v(s.read("a", types=["B", "D"])) == [2, 4]
    assert v(s.read("a", from_version=9)) == []
    assert p(s.read_all()) == list(range(1, 8))
    assert p(s.read_all(from_position=3, to_position=5, backwards=True)) == [5, 4, 3]
    assert p(s.read_all(backwards=True, limit=3)) == [7, 6, 5]
    assert p(s.read_all(types=["A"])) == [1, 2]
    assert p(s.read_all(stream_prefix="a")) == [1, 3, 4, 5, 7]
    assert p(s.read_all(stream_prefix="ab")) == [4]
    assert p(s.read_all(stream_prefix="a", types=["C"], backwards=True, limit=1)) == [5]
    with pytest.raises(StreamNotFound):
        list(s.read("nope"))
    assert [(r.stream, r.version) for r in s.streams()] == [("a", 4), ("ab", 1), ("b", 2)]
    assert [r.stream for r in s.streams("a")] == ["a", "ab"]


def test_another_handle_sees_the_same(filled, location):
    with EventStore(location) as other:
        assert [e.to_dict() for e in other.read_all()] == \
            [e.to_dict() for e in filled.read_all()]
        other.append("a", [NewEvent("E", {})], expected_version=4)
    assert filled.version("a") == 5 and filled.head() == 8


def test_subscriptions_resume_from_their_checkpoint(filled):
    seen = []
    for _ in range(4):  # 3 + 3 + 1 + 0, each a clean stop
        with filled.subscribe(checkpoint="c", idle_timeout=0.2, max_count=3) as sub:
            seen += [e.position for e in sub]
    assert seen == list(range(1, 8))
    filled.append("b", [NewEvent("Z", {})])
    with filled.subscribe(checkpoint="c", idle_timeout=0.2) as sub:
        assert [e.position for e in sub] == [8]
    with filled.subscribe("a", idle_timeout=0.2) as sub:
        assert [e.version for e in sub] == [1, 2, 3, 4]


def test_a_follower_sees_what_another_handle_commits(filled, location):
    import threading
    got = []
    with filled.subscribe(from_position=7, idle_timeout=5, max_count=3) as sub:
        def write():
            with EventStore(location) as other:
                for _ in range(3):
                    time.sleep(0.05)
                    other.append("late", [NewEvent("L", {})])
        t = threading.Thread(target=write)
        t.start()
        got = [e.position for e in sub]
        t.join()
    assert got == [7, 8, 9] or got == [8, 9, 10]


def merge(state, event):
    return {**(state or {}), **event["data"]}


def test_snapshots_manual_and_automatic_and_replay(location):
    with EventStore(location, sync=False, snapshot_every=3, reducer=merge) as s:
        stamps = []
        for i in range(1, 8):
            s.append("acct", [NewEvent("Set", {f"k{i}": i})])
            stamps.append(list(s.read("acct", from_version=i))[0].recorded_at)
        assert [s.snapshots.latest("acct", max_version=v).version
                for v in (3, 5, 6, 7)] == [3, 3, 6, 6]
        assert s.snapshots.latest("acct", max_version=2) is None
        s.snapshots.save("acct", {"manual": True}, 7)
        assert s.snapshots.latest("acct").version == 7
        full = {f"k{i}": i for i in range(1, 8)}
        assert s.replay("acct", merge, to_version=5) == ({f"k{i}": i for i in range(1, 6)}, 5)
        assert s.replay("acct", merge, at=stamps[3]) == (
            {f"k{i}": i for i in range(1, 5)}, 4)
        # from scratch, the manual (wrong) snapshot is not used
        assert s.replay("acct", merge, use_snapshots=False) == (full, 7)
        assert s.replay("acct", merge) == ({"manual": True}, 7)


def test_ids_are_uuids_made_by_the_store(store):
    store.append("s", [{"type": "T"}, NewEvent("T")])
    ids = [e.id for e in store.read("s")]
    assert len(set(ids)) == 2 and all(str(uuid.UUID(i)) == i for i in ids)
