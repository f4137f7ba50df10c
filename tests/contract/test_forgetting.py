"""Forgetting, the same on every backend (files, PostgreSQL, memory): delete
(soft and hard), truncate, retention (max_count, max_age, per stream and per
prefix) and compact, as readers, followers, replay, snapshots, export and
info see them.  Public API only.

What is promised (docs/GUIDE.md, "Forgetting"): a removed event is gone from
every read at once; versions count removed events and positions are never
renumbered; a follower never misses or repeats a readable event; compact
removes only what no reader can see, and afterwards the store verifies.
"""
from __future__ import annotations

import io
import json
import threading
from datetime import datetime, timedelta, timezone

import pytest

from evstore import EventStore, NewEvent, StreamNotFound, WrongExpectedVersion
from evstore.errors import EventNotFound, NotFound, StreamDeleted, UsageError


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012x}"


def evs(n: int, type_: str = "T", **data) -> list[NewEvent]:
    return [NewEvent(type_, {"i": i, **data}) for i in range(n)]


def merge(state, event):
    return {**(state or {}), **event["data"]}


@pytest.fixture
def store(location):
    with EventStore(location, sync=False) as es:
        yield es


def pv(events) -> list[tuple]:
    return [(e.stream, e.version, e.position) for e in events]


def test_soft_delete_hides_the_stream_and_it_continues_at_v_plus_1(store):
    for _ in range(3):
        store.append("a", evs(1))
    store.append("b", evs(2))
    store.snapshots.save("a", {"old": True}, 3, merge)
    assert store.delete("a", expected_version=3).to_dict() == \
        {"stream": "a", "version": 3, "deleted": "soft"}
    with pytest.raises(StreamNotFound):
        list(store.read("a"))
    assert not store.exists("a") and store.version("a") == 3
    assert [s.stream for s in store.streams()] == ["b"]
    assert pv(store.read_all()) == [("b", 1, 4), ("b", 2, 5)]
    assert pv(store.read_all(backwards=True, limit=1)) == [("b", 2, 5)]
    assert store.head() == 5
    for call in (lambda: store.replay("a", merge), lambda: store.snapshots.save("a", {}, 3)):
        with pytest.raises(StreamNotFound):
            call()
    assert store.snapshots.latest("a") is None  # the old incarnation's
    assert store.delete("a").version == 3       # again: harmless
    # the stream goes on at V+1, and starts afresh
    with pytest.raises(WrongExpectedVersion):
        store.append("a", evs(1), expected_version=0)
    assert store.append("a", [NewEvent("T", {"new": 1})], expected_version=3).version == 4
    assert pv(store.read("a")) == [("a", 4, 6)]
    assert store.replay("a", merge) == ({"new": 1}, 4)
    row = next(iter(store.streams("a")))
    assert (row.version, row.first_recorded_at) == (4, list(store.read("a"))[0].recorded_at)


def test_hard_delete_leaves_a_tombstone(store):
    store.append("a", evs(2))
    assert store.delete("a", hard=True).deleted == "hard"
    with pytest.raises(StreamDeleted) as e:
        store.append("a", evs(1))
    assert e.value.exit_code == 3 and "was deleted" in str(e.value)
    with pytest.raises(StreamDeleted):
        store.append("a", evs(1), expected_version=2)
    assert store.delete("a", hard=True).to_dict() == {"stream": "a", "version": 2,
                                                      "deleted": "hard"}
    for call in (lambda: store.delete("a"), lambda: store.truncate("a", 1)):
        with pytest.raises(StreamDeleted):
            call()
    assert store.head() == 2 and list(store.read_all()) == []


def test_refused_deletes_change_nothing(store):
    with pytest.raises(StreamNotFound):
        store.delete("never")
    store.append("a", evs(2))
    with pytest.raises(WrongExpectedVersion) as e:
        store.delete("a", expected_version=1)
    assert e.value.current == 2
    with pytest.raises(UsageError):
        store.delete("$all")
    assert [e.version for e in store.read("a")] == [1, 2]
    store.append("a", evs(1), expected_version=2)  # no tombstone either


def test_truncate_hides_the_versions_below(store):
    store.append("s", evs(3, "A"))
    store.append("o", evs(1))
    store.append("s", evs(3, "B"))
    assert store.truncate("s", 3).to_dict() == {"stream": "s", "version": 6, "before": 3}
    assert [e.version for e in store.read("s")] == [3, 4, 5, 6]
    assert [e.version for e in store.read("s", from_version=1, to_version=4)] == [3, 4]
    assert [e.version for e in store.read("s", backwards=True, limit=2)] == [6, 5]
    assert [e.version for e in store.read("s", backwards=True, to_version=2)] == []
    assert [e.version for e in store.read("s", types=["A"])] == [3]
    assert [e.version for e in store.read("s", limit=1)] == [3]
    assert [e.position for e in store.read_all()] == [3, 4, 5, 6, 7]
    assert [e.position for e in store.read_all(limit=2)] == [3, 4]
    assert store.truncate("s", 2).before == 3  # floors never go down
    for bad in (0, 8):
        with pytest.raises(UsageError):
            store.truncate("s", bad)
    with pytest.raises(StreamNotFound):
        store.truncate("never", 1)
    # before = version + 1: nothing of it is readable
    assert store.truncate("o", 2).before == 2
    with pytest.raises(StreamNotFound):
        list(store.read("o"))
    assert store.find(list(store.read("s"))[0].id).version == 3


def test_find_does_not_find_a_removed_event(store):
    store.append("s", [NewEvent("T", {}, None, uid(1)), NewEvent("T", {}, None, uid(2))])
    store.truncate("s", 2)
    with pytest.raises(EventNotFound):
        store.find(uid(1))
    assert store.find(uid(2)).version == 2


def test_find_skips_a_removed_event_for_a_readable_one_with_the_same_id(store):
    # ids are unique within a batch, not within a store: two streams may
    # carry the same id, and removing the first must not hide the second
    store.append("old", [NewEvent("T", {"k": 0}, None, uid(7))])
    store.append("new", [NewEvent("T", {"k": 1}, None, uid(8)),
                         NewEvent("T", {"k": 2}, None, uid(7))])
    store.append("later", [NewEvent("T", {"k": 3}, None, uid(7))])
    assert (store.find(uid(7)).stream, store.find(uid(7)).position) == ("old", 1)
    store.delete("old")
    for _ in range(2):
        ev = store.find(uid(7))
        assert (ev.stream, ev.version, ev.position, ev.data) == ("new", 2, 3, {"k": 2})
        store.compact()
    store.truncate("new", 3)
    assert store.find(uid(7)).stream == "later"
    store.delete("later")
    with pytest.raises(EventNotFound):
        store.find(uid(7))


def test_replay_of_a_truncated_stream_needs_a_snapshot_at_or_above_the_cut(store):
    for i in range(1, 7):
        store.append("s", [NewEvent("Set", {f"k{i}": i})])
    store.snapshots.save("s", {"at": 2}, 2, merge)
    store.truncate("s", 4)
    with pytest.raises(NotFound) as e:
        store.replay("s", merge)
    assert e.value.exit_code == 4
    assert "before version 4" in str(e.value) and "snapshot" in str(e.value)
    store.snapshots.save("s", {"at": 3}, 3, merge)  # the state after the cut's last event
    assert store.replay("s", merge) == ({"at": 3, "k4": 4, "k5": 5, "k6": 6}, 6)
    assert store.replay("s", merge, to_version=4) == ({"at": 3, "k4": 4}, 4)
    with pytest.raises(NotFound):
        store.replay("s", merge, to_version=2)
    with pytest.raises(NotFound):
        store.replay("s", merge, use_snapshots=False)
    store.snapshots.save("s", {"at": 5}, 5, merge)
    assert store.replay("s", merge) == ({"at": 5, "k6": 6}, 6)
    at = list(store.read("s", from_version=5))[0].recorded_at
    assert store.replay("s", merge, at=at)[1] == 5


def test_retention_max_count_per_stream_and_per_prefix(store):
    for s in ("ci-1", "ci-10", "ci-2", "other"):
        for _ in range(4):
            store.append(s, evs(1))
    got = store.retention("ci-", max_count=3, prefix=True)
    assert [r.to_dict() for r in got] == [{"target": "ci-", "prefix": True, "max_age": None,
                                           "max_count": 3, "in_force": True}]
    store.retention("ci-1", max_count=1, prefix=True)   # longer prefix wins
    store.retention("ci-2", max_count=2)                # a stream's own rule wins
    assert [e.version for e in store.read("ci-1")] == [4]
    assert [e.version for e in store.read("ci-10")] == [4]
    assert [e.version for e in store.read("ci-2")] == [3, 4]
    assert [e.version for e in store.read("other")] == [1, 2, 3, 4]
    shown = store.retention("ci-10")
    assert [(r.target, r.prefix, r.in_force) for r in shown] == [
        ("ci-1", True, True), ("ci-", True, False)]
    assert len(list(store.read_all())) == 1 + 1 + 2 + 4
    # a new event pushes the oldest kept one out, at once
    store.append("ci-2", evs(1))
    assert [e.version for e in store.read("ci-2")] == [4, 5]
    info = store.info()
    assert (info["events"], info["head"], info["streams"]) == (8, 17, 4)
    # clearing a rule shows the events again (nothing was compacted)
    assert store.retention("ci-2", clear=True)[0].target == "ci-"
    assert [e.version for e in store.read("ci-2")] == [3, 4, 5]
    with pytest.raises(UsageError):
        store.retention("x", max_count=0)
    with pytest.raises(UsageError):
        store.retention("x", max_age="12 days")
    with pytest.raises(UsageError):
        store.retention("x", max_count=1, clear=True)
    assert [(r.target, r.prefix) for r in store.retention_rules()] == [
        ("ci-", True), ("ci-1", True)]


def test_retention_max_age_keeps_what_is_younger(store):
    old = datetime(2020, 1, 1, tzinfo=timezone.utc)
    store.append_recorded("s", evs(2), 1, 1, old)
    store.append_recorded("t", evs(1), 1, 3, old + timedelta(days=1))
    store.append("s", evs(2))
    store.append("t", evs(1))
    rules = store.retention("", max_age="30d", prefix=True)
    assert rules[0].max_age == "30d"
    assert [e.version for e in store.read("s")] == [3, 4]
    assert [e.version for e in store.read("s", backwards=True)] == [4, 3]
    assert [e.version for e in store.read("s", from_version=1, limit=1)] == [3]
    assert [e.position for e in store.read_all()] == [4, 5, 6]
    assert store.retention("s", max_age=timedelta(days=365 * 100))[0].max_age == "36500d"
    assert [e.version for e in store.read("s")] == [1, 2, 3, 4]  # its own rule wins
    row = {r.stream: r for r in store.streams()}
    assert row["s"].first_recorded_at == old and row["t"].version == 2
    assert row["t"].first_recorded_at > old + timedelta(days=1)


def test_compact_removes_only_what_is_unreadable(store):
    store.append("gone", evs(3, secret="s3cr3t"))
    store.append("cut", evs(4))
    store.append("kept", evs(2))
    store.snapshots.save("gone", {"x": 1}, 2, merge)
    store.snapshots.save("cut", {"x": 1}, 2, merge)
    store.delete("gone")
    store.truncate("cut", 3)
    before = [e.to_dict() for e in store.read_all()]
    dry = store.compact(dry_run=True)
    assert set(dry) == {"events_removed", "bytes_before", "bytes_after", "seconds"}
    assert dry["events_removed"] == 5 and dry["bytes_after"] <= dry["bytes_before"]
    assert [e.to_dict() for e in store.read_all()] == before
    assert store.snapshots.versions("gone") == [2]
    done = store.compact()
    assert done["events_removed"] == 5 and done["bytes_after"] < done["bytes_before"]
    assert [e.to_dict() for e in store.read_all()] == before
    assert store.compact()["events_removed"] == 0
    assert store.snapshots.versions("gone") == [] and store.snapshots.versions("cut") == [2]
    assert (store.head(), store.version("gone"), store.version("cut")) == (9, 3, 4)
    report = store.verify()
    assert report.ok, [str(p) for p in report.problems]
    # versions and positions go on where they were
    assert tuple(store.append("gone", evs(1), expected_version=3)) == ("gone", 4, 10, 1)
    assert tuple(store.append("cut", evs(1), expected_version=4)) == ("cut", 5, 11, 1)
    assert [e.version for e in store.read("cut")] == [3, 4, 5]
    assert store.replay("cut", merge)[1] == 5
    with EventStore(store.location) as other:  # a fresh handle sees the same
        assert [e.to_dict() for e in other.read_all()] == \
            [e.to_dict() for e in store.read_all()]


def test_compact_keeps_what_a_cleared_rule_shows_again_only_if_not_compacted(store):
    store.append("s", evs(4))
    store.retention("s", max_count=1)
    assert store.compact()["events_removed"] == 3
    store.retention("s", clear=True)
    assert [e.version for e in store.read("s")] == [4]  # compacted: gone for good
    assert store.version("s") == 4 and store.exists("s")


def test_followers_skip_removed_events_and_never_repeat(store):
    store.append("a", evs(2))
    store.append("b", evs(2))
    with store.subscribe(checkpoint="c", idle_timeout=0.2, max_count=2) as sub:
        assert pv(sub) == [("a", 1, 1), ("a", 2, 2)]
    store.append("a", evs(1))                  # position 5
    store.delete("b")                          # positions 3, 4 go
    store.append("c", evs(1))                  # position 6
    with store.subscribe(checkpoint="c", idle_timeout=0.2) as sub:
        assert pv(sub) == [("a", 3, 5), ("c", 1, 6)]
    store.truncate("a", 3)
    with store.subscribe("a", idle_timeout=0.2) as sub:
        assert [e.version for e in sub] == [3]
    with store.subscribe("b", idle_timeout=0.2) as sub:    # deleted: nothing, no error
        assert list(sub) == []
    with store.subscribe("a", from_version=1, idle_timeout=0.2) as sub:
        assert [e.version for e in sub] == [3]
    with store.subscribe(last=10, follow=False) as sub:
        assert [e.position for e in sub] == [5, 6]
    store.append("b", evs(1), expected_version=2)
    with store.subscribe("b", last=5, follow=False) as sub:
        assert [e.version for e in sub] == [3]


def test_a_follower_beside_deletes_and_compaction_misses_and_repeats_nothing(store, location):
    """Writers append to streams kept and to streams they delete at once;
    compaction runs beside them.  The follower must deliver every kept event
    exactly once, in position order."""
    got, done = [], threading.Event()

    def follow():
        with EventStore(location) as es, es.subscribe(idle_timeout=5) as sub:
            for ev in sub:
                got.append((ev.stream, ev.position))
                if done.is_set() and ev.stream == "end":
                    return

    t = threading.Thread(target=follow)
    t.start()
    with EventStore(location, sync=False) as w:
        for i in range(12):
            w.append(f"keep-{i % 3}", evs(2))
            w.append(f"tmp-{i}", evs(2))
            w.delete(f"tmp-{i}")
            if i % 4 == 3:
                w.compact()
        done.set()
        w.append("end", evs(1))
    t.join(30)
    assert not t.is_alive()
    positions = [p for _, p in got]
    assert positions == sorted(set(positions)), "repeated or out of order"
    kept = [(e.stream, e.position) for e in store.read_all()]
    assert [g for g in got if not g[0].startswith("tmp-")] == kept
    assert len(kept) == 12 * 2 + 1


def test_export_writes_what_is_readable_with_its_positions(store):
    from evstore.ops import export_events

    store.append("a", evs(2))
    store.append("b", evs(3))
    store.append("c", evs(1))
    store.truncate("b", 3)
    store.delete("c")
    want = [e.to_dict() for e in store.read_all()]
    for compacted in (False, True):
        out = io.BytesIO()
        export_events(store, out)
        lines = [json.loads(x) for x in out.getvalue().decode().splitlines()]
        assert lines == want and [x["position"] for x in lines] == [1, 2, 5]
        out = io.BytesIO()
        export_events(store, out, streams=["b"])
        assert [json.loads(x)["version"] for x in out.getvalue().decode().splitlines()] == [3]
        with pytest.raises(StreamNotFound):
            export_events(store, io.BytesIO(), streams=["c"])
        store.compact()


def test_export_import_export_keeps_the_gaps(store, another):
    from evstore.ops import export_events, import_events

    store.append("a", evs(2))
    store.append("b", evs(2))
    store.append("a", evs(2))
    store.truncate("a", 2)
    store.delete("b")
    first = io.BytesIO()
    export_events(store, first)
    with EventStore(another("memory"), sync=False) as copy:
        import_events(copy, io.BytesIO(first.getvalue()))
        again = io.BytesIO()
        export_events(copy, again)
        assert again.getvalue() == first.getvalue()
        assert copy.version("a") == 4 and copy.head() == 6


def test_info_counts_readable_events_and_keeps_the_head(store):
    store.append("a", evs(3))
    store.append("b", evs(2))
    with store.subscribe(checkpoint="c", idle_timeout=0.1) as sub:
        list(sub)
    store.delete("a")
    info = store.info()
    assert (info["streams"], info["events"], info["head"]) == (1, 2, 5)
    assert info["first_recorded_at"] == list(store.read("b"))[0].to_dict()["recorded_at"]
    assert info["checkpoints"][0]["head"] == 5 and info["checkpoints"][0]["behind"] == 0


def test_reads_are_unchanged_when_nothing_is_removed(store, monkeypatch):
    """Zero cost: with no cut and no rule, a read asks the backend for
    nothing but the events (one cheap look for cuts and rules)."""
    store.append("a", evs(3))

    def no(*a):
        raise AssertionError("filtered a read while nothing is removed")

    for name in ("readable_check", "_last_readable", "_first_readable"):
        monkeypatch.setattr(store, name, no)
    assert [e.version for e in store.read("a", limit=2)] == [1, 2]
    assert len(list(store.read_all(limit=5))) == 3
    assert [s.stream for s in store.streams()] == ["a"] and store.exists("a")
    assert store.info()["events"] == 3
    store.retention("b", max_count=1)  # a rule elsewhere: a's reads stay direct
    assert [e.version for e in store.read("a")] == [1, 2, 3]
    store.retention("a", max_count=5)  # its own: they filter
    with pytest.raises(AssertionError, match="filtered"):
        list(store.read("a"))


@pytest.mark.parametrize("how", ["replay", "steps", "verify_snapshots"])
def test_a_fold_beside_a_compaction_that_removes_part_of_it_is_exit_4_not_a_wrong_state(
        location, how):
    """A replay reads a long stream (many segments on files, more than one
    page of rows on PostgreSQL); another handle truncates it and compacts
    while the fold runs.  The reader then goes on at the first version still
    there, so a fold that did not check returned a state missing the removed
    versions with exit 0 (found: ``replay --reducer count`` gave 63 events at
    version 200, and ``snapshot`` saved that).  Exit 4 instead."""
    from evstore.features.replay import plan, steps
    from evstore.features.snapcheck import verify_snapshots

    kw = {"segment_bytes": 3000, "sync": False}  # (segments: a directory's only)
    with EventStore(location, **kw) as es, EventStore(location, **kw) as other:
        for _ in range(6):
            es.append("x", [{"type": "T", "data": {"pad": "p" * 200}}] * 200)
        folded = []

        def count(state, event):
            folded.append(event["version"])
            if len(folded) == 10:
                other.truncate("x", before=1150)
                other.compact()
            return {"T": (state or {}).get("T", 0) + 1}

        es.snapshots.save("x", {"T": 1200}, 1200, count)  # for verify_snapshots to check
        with pytest.raises(NotFound, match="removed while the replay read them"):
            if how == "replay":
                es.replay("x", count, use_snapshots=False)
            elif how == "steps":
                list(steps(es, plan(es, "x", count, use_snapshots=False)))
            else:
                verify_snapshots(es, "x", count)
        assert folded == list(range(1, len(folded) + 1)), "a fold skipped versions"
        folded.clear()
        # the next run sees the truncated stream: exit 4 as documented, or a snapshot
        with pytest.raises(NotFound, match="no longer readable"):
            es.replay("x", count, use_snapshots=False)
