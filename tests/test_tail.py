"""``evstore tail`` without -f, ``subscribe()`` in-process, checkpoints and
``evstore checkpoints``.  The concurrent, signal and crash cases are in
test_tail_follow.py."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ndjson
from evstore import EventStore, NewEvent
from evstore.backends.files.checkpoints import verify_files
from evstore.features.checkpoints import CheckpointBusy, CheckpointStore
from evstore.errors import CorruptStore, UsageError
from evstore.features.subscriptions import Subscription


def fill(es, spec):
    """spec: [(stream, [types...]), ...] -> one batch per item."""
    for stream, types in spec:
        es.append(stream, [NewEvent(t, {"n": i}) for i, t in enumerate(types)])


@pytest.fixture
def store(store_dir):
    es = EventStore(store_dir)
    fill(es, [("a", ["A", "B"]), ("b", ["A"]), ("a", ["C"]), ("ab", ["B", "B", "A"]), ("b", ["C"])])
    yield es
    es.close()


def positions(evs):
    return [e.position for e in evs]


# -- the library ------------------------------------------------------------------------------

def test_catch_up_all_and_stream(store):
    assert positions(Subscription(store, follow=False)) == list(range(1, 9))
    assert [(e.version, e.position) for e in Subscription(store, "a", follow=False)] == \
        [(1, 1), (2, 2), (3, 4)]
    assert positions(Subscription(store, follow=False, from_position=4)) == [4, 5, 6, 7, 8]
    assert [e.version for e in Subscription(store, "a", follow=False, from_version=2)] == [2, 3]
    assert [e.version for e in Subscription(store, "a", follow=False, from_position=3)] == [3]
    assert positions(Subscription(store, follow=False, last=3)) == [6, 7, 8]
    assert positions(Subscription(store, follow=False, last=2, types=["A"])) == [3, 7]
    assert positions(Subscription(store, follow=False, stream_prefix="a", types=["B"])) == [2, 5, 6]
    assert positions(Subscription(store, "b", follow=False, last=0)) == []
    assert positions(Subscription(store, "nope", follow=False)) == []


def test_bad_arguments(store):
    for kw in ({"stream": "a", "stream_prefix": "x"}, {"from_version": 2},
               {"from_position": 1, "last": 2}, {"max_count": -1}, {"idle_timeout": "x"},
               {"wake": "sometimes"}, {"checkpoint": ""}, {"checkpoint": "a\nb"},
               {"poll_interval": float("nan")}):
        with pytest.raises(UsageError):
            Subscription(store, **kw)


def test_follow_sees_new_events_and_stops_from_another_thread(store):
    sub = store.subscribe(from_position=9)
    got = []

    def consume():
        for ev in sub:
            got.append(ev.position)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(3):
        store.append("late", [NewEvent("L", {"i": i}), NewEvent("L", {"i": i})])
    deadline = time.monotonic() + 5
    while len(got) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    sub.stop()
    t.join(5)
    assert not t.is_alive()
    assert got == list(range(9, 15))


def test_stop_before_iterating_and_max_count_and_idle(store):
    sub = store.subscribe()
    sub.stop()
    assert list(sub) == []
    assert positions(store.subscribe(max_count=3)) == [1, 2, 3]
    t = time.monotonic()
    assert positions(store.subscribe(from_position=8, idle_timeout=0.2)) == [8]
    assert 0.15 < time.monotonic() - t < 3


@pytest.mark.parametrize("wake", ["poll", "auto"])
def test_stream_follower_waits_for_a_new_stream(store, wake):
    got = []
    sub = store.subscribe("new", wake=wake, idle_timeout=5)
    t = threading.Thread(target=lambda: got.extend(sub))
    t.start()
    time.sleep(0.1)
    store.append("other", [NewEvent("X")])
    store.append("new", [NewEvent("N1"), NewEvent("N2")])
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    sub.stop()
    t.join(5)
    assert [(e.stream, e.version, e.position) for e in got] == [("new", 1, 10), ("new", 2, 11)]


# -- checkpoints ---------------------------------------------------------------------------------

def test_checkpoint_resumes_exactly_after_clean_stops(store):
    seen = []
    for _ in range(4):  # 3 + 3 + 2 + 0
        with store.subscribe(checkpoint="c", follow=False, max_count=3) as sub:
            seen += positions(sub)
    assert seen == list(range(1, 9))
    assert CheckpointStore(store).get("c").position == 8


def test_checkpoint_advances_only_after_the_consumer_comes_back(store):
    cps = CheckpointStore(store)
    sub = store.subscribe(checkpoint="c", checkpoint_interval=0)
    ev = next(sub)
    assert ev.position == 1 and cps.get("c").position == 0  # in hand: not handled yet
    next(sub)
    assert cps.get("c").position == 1
    sub.close()  # event 2 was in hand: stays unacknowledged
    assert cps.get("c").position == 1
    assert positions(store.subscribe(checkpoint="c", follow=False)) == list(range(2, 9))


def test_breaking_out_leaves_the_event_in_hand_for_next_time(store):
    with store.subscribe(checkpoint="c") as sub:
        for ev in sub:
            if ev.position == 4:
                break  # crashed while handling 4
    assert positions(store.subscribe(checkpoint="c", follow=False)) == [4, 5, 6, 7, 8]


def test_filtered_consumer_checkpoint_moves_past_skipped_events(store):
    with store.subscribe("b", checkpoint="only-b", follow=False) as sub:
        assert positions(sub) == [3, 8]
    assert CheckpointStore(store).get("only-b").position == 8
    with store.subscribe(checkpoint="typed", follow=False, types=["C"]) as sub:
        assert positions(sub) == [4, 8]
    store.append("z", [NewEvent("Z")])
    with store.subscribe(checkpoint="typed", follow=False, types=["C"]) as sub:
        assert positions(sub) == []
    assert CheckpointStore(store).get("typed").position == 9


def test_stream_consumer_resumes_by_position(store):
    with store.subscribe("a", checkpoint="ca", follow=False, max_count=2) as sub:
        assert [e.version for e in sub] == [1, 2]
    store.append("a", [NewEvent("D")])
    with store.subscribe("a", checkpoint="ca", follow=False) as sub:
        assert [(e.version, e.position) for e in sub] == [(3, 4), (4, 9)]


def test_seed_only_applies_to_a_new_checkpoint(store):
    with store.subscribe(checkpoint="s", follow=False, last=2) as sub:
        assert positions(sub) == [7, 8]
    sub = store.subscribe(checkpoint="s", follow=False, from_position=1)
    assert positions(sub) == [] and "ignored" in sub.notes[0]
    # a new consumer "from now on" exists (at the head) before any event comes
    with store.subscribe(checkpoint="now", follow=False, last=0) as sub:
        assert positions(sub) == []
    assert CheckpointStore(store).get("now").position == 8


def test_one_consumer_per_name(store):
    with store.subscribe(checkpoint="solo"):
        with pytest.raises(CheckpointBusy, match="in use"):
            store.subscribe(checkpoint="solo")
        with pytest.raises(CheckpointBusy):
            CheckpointStore(store).delete("solo")
        with store.subscribe(checkpoint="other", follow=False) as other:
            assert len(list(other)) == 8
    with store.subscribe(checkpoint="solo", follow=False) as again:
        assert len(list(again)) == 8


def test_checkpoint_names_never_become_paths(store):
    cps = CheckpointStore(store)
    names = ["../x", "a/b", ".", "..", "CON", "%2e%2e", "proj", "Proj", "ü ✓"]
    for i, n in enumerate(names):
        cps.reset(n, i)
    assert {c.name: c.position for c in cps.list()} == {n: i for i, n in enumerate(names)}
    root = os.path.join(store.directory, "checkpoints")
    assert all(len(f.split(".")[0]) == 32 for f in os.listdir(root))
    assert not os.path.exists(os.path.join(store.directory, "x"))


def test_damaged_and_misplaced_checkpoints(store):
    cps = CheckpointStore(store)
    cps.reset("good", 3)
    with open(cps.path("bad"), "w") as f:
        f.write('{"evstore_checkpoint": 1, "name": "bad", "posit')
    with pytest.raises(CorruptStore, match="damaged checkpoint"):
        store.subscribe(checkpoint="bad")
    # a file copied under another name is never used as that name
    with open(cps.path("good"), "rb") as f, open(cps.path("copy"), "wb") as g:
        g.write(f.read())
    with pytest.raises(CorruptStore, match="holds checkpoint 'good'"):
        cps.get("copy")
    found = list(verify_files(store.directory, {}, store.head()))
    assert sorted(p["severity"] for p in found) == ["error", "error"]
    cps.reset("bad", 0)  # resetting repairs it
    assert cps.get("bad").position == 0


def test_verify_checks_checkpoints(store):
    from evstore.ops import verify

    with store.subscribe(checkpoint="fine", follow=False) as sub:
        list(sub)
    report = verify(store)
    assert report.ok and not [w for w in report.warnings if w.kind == "checkpoint"]
    with open(CheckpointStore(store).path("fine"), "w") as f:
        f.write("{}")
    report = verify(store)
    assert not report.ok and report.problems[0].kind == "checkpoint"
    assert report.problems[0].file.startswith("checkpoints" + os.sep)


def test_checkpoint_past_the_head_resumes_at_the_head(store):
    cps = CheckpointStore(store)
    cps.save("ahead", 50)
    assert [p["severity"] for p in verify_files(store.directory, {}, store.head())] == ["warning"]
    sub = store.subscribe(checkpoint="ahead", follow=False)
    assert list(sub) == [] and "past the store's head" in sub.notes[0]
    store.append("a", [NewEvent("New")])
    assert positions(store.subscribe(checkpoint="ahead", follow=False)) == [9]
    with pytest.raises(UsageError, match="past the store's head"):
        cps.reset("ahead", 100)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.tuples(st.sampled_from(["s1", "s2", "t1"]),
                                  st.lists(st.sampled_from("XYZ"), min_size=1, max_size=4)),
                        min_size=1, max_size=12),
       stream=st.sampled_from([None, "s1", "t1", "zz"]),
       types=st.one_of(st.none(), st.sets(st.sampled_from("XYZ"), min_size=1)),
       prefix=st.sampled_from([None, "s", "t1"]),
       chunks=st.lists(st.integers(1, 5), min_size=1, max_size=30))
def test_consuming_in_pieces_equals_reading(tmp_path_factory, batches, stream, types, prefix, chunks):
    """Consuming under one checkpoint in several clean runs of max_count
    events delivers exactly the filtered $all, once, in order."""
    path = tmp_path_factory.mktemp("p") / "s"
    with EventStore(path, sync=False) as es:
        fill(es, batches)
        if stream is not None:
            prefix = None
        want = [e.id for e in es.read_all(types=types, stream_prefix=prefix)
                if stream is None or e.stream == stream]
        got = []
        for k in chunks + [None]:
            with es.subscribe(stream, checkpoint="c", follow=False, max_count=k, types=types,
                              stream_prefix=prefix) as sub:
                got += [e.id for e in sub]
        assert got == want


# -- the command line, without -f --------------------------------------------------------------

def test_tail_last_n_oldest_first(cli, store):
    store.close()
    r = cli("tail", "--all")
    assert r.returncode == 0, r.stderr
    assert [e["position"] for e in ndjson(r.stdout)] == list(range(1, 9))
    r = cli("tail", "--all", "-n", "2")
    assert [e["position"] for e in ndjson(r.stdout)] == [7, 8]
    r = cli("tail", "a", "-n", "2", "--type", "A", "--type", "C")
    assert [(e["version"], e["type"]) for e in ndjson(r.stdout)] == [(1, "A"), (3, "C")]
    r = cli("tail", "--all", "--from", "6", "--stream-prefix", "ab")
    assert [e["position"] for e in ndjson(r.stdout)] == [6, 7]
    r = cli("tail", "a", "--from", "2", "--format", "json")
    assert [e["version"] for e in json.loads(r.stdout)] == [2, 3]
    r = cli("read", "--all", "--from", "7")
    assert cli("tail", "--all", "-n", "2").stdout == r.stdout  # same bytes as read


def test_tail_errors(cli, store):
    store.close()
    r = cli("tail", "nope")
    assert (r.returncode, r.stdout) == (4, b"") and b"stream not found" in r.stderr
    assert cli("tail", "--all", store=store.path / "missing").returncode == 4
    assert not (store.path / "missing").exists()
    for args in (["tail"], ["tail", "a", "--all"], ["tail", "a", "--stream-prefix", "x"],
                 ["tail", "a", "-n", "1", "--from", "1"], ["tail", "a", "--idle-timeout", "1"],
                 ["tail", "a", "-n", "-1"]):
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith(b"evstore: error:") and b"Traceback" not in r.stderr


def test_tail_checkpoint_without_follow(cli, store):
    store.close()
    r = cli("tail", "--all", "--checkpoint", "batch", "--max-count", "5")
    assert [e["position"] for e in ndjson(r.stdout)] == [1, 2, 3, 4, 5]
    r = cli("tail", "--all", "--checkpoint", "batch", "--from", "1")
    assert [e["position"] for e in ndjson(r.stdout)] == [6, 7, 8]
    assert b"--from" not in r.stderr and b"from_position ignored" in r.stderr
    r = cli("checkpoints")
    assert ndjson(r.stdout) == [{"name": "batch", "position": 8, "head": 8, "behind": 0,
                                 "stream": None,
                                 "updated_at": ndjson(r.stdout)[0]["updated_at"]}]


def test_checkpoints_command(cli, store):
    store.close()
    cli("tail", "a", "--checkpoint", "pa", "--max-count", "1")
    cli("tail", "--all", "--checkpoint", "pall", "-n", "3", "--max-count", "1")
    rows = ndjson(cli("checkpoints").stdout)
    assert [(r["name"], r["position"], r["behind"], r["stream"]) for r in rows] == \
        [("pa", 1, 7, "a"), ("pall", 6, 2, None)]
    assert ndjson(cli("checkpoints", "list").stdout) == rows
    assert json.loads(cli("checkpoints", "--format", "json").stdout) == rows
    r = cli("checkpoints", "reset", "pa", "--to", "head")
    assert json.loads(r.stdout)["position"] == 8 and r.returncode == 0
    assert json.loads(cli("checkpoints", "reset", "pa").stdout)["position"] == 0
    assert cli("checkpoints", "reset", "pa", "--to", "99").returncode == 2
    assert cli("checkpoints", "reset", "pa", "--to", "soon").returncode == 2
    assert cli("checkpoints", "delete", "pa").returncode == 0
    r = cli("checkpoints", "delete", "pa")
    assert r.returncode == 4 and b"checkpoint not found" in r.stderr
    assert [r["name"] for r in ndjson(cli("checkpoints").stdout)] == ["pall"]
    assert cli("checkpoints", store=store.path / "missing").returncode == 4
    r = cli("checkpoints", "--format", "table")
    assert b"pall" in r.stdout and r.returncode == 0


def test_help_has_examples(cli):
    for args in (["tail"], ["checkpoints"], ["checkpoints", "list"], ["checkpoints", "delete"],
                 ["checkpoints", "reset"]):
        r = cli(*args, "--help")
        assert r.returncode == 0 and b"Example" in r.stdout, args
