"""Replay as a library: properties (snapshots never change the answer, --at
is --to-version of the right event, changes rebuild each state), steps,
reducers and their fingerprints, and verifying snapshots."""
from __future__ import annotations

import json
import tempfile
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from evstore import EventStore, NewEvent
from evstore.errors import NotFound, StreamNotFound, UsageError
from evstore.model import us_to_datetime
from evstore.features.reducers import BUILTINS, ReducerError, load_reducer
from evstore.features.replay import (apply_changes, diff, path_text, plan, replay, steps,
                                     version_at)
from evstore.features.snapcheck import verify_snapshots

settings.register_profile("evstore-replay", deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile("evstore-replay")

# --- strategies -----------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5))
keys = st.sampled_from(["a", "b", "c", "a.b", "é", "0"])
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(keys, inner, max_size=4), max_leaves=12)
data_values = st.dictionaries(keys, json_values, max_size=3) | json_values
events = st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), data_values),
                  min_size=1, max_size=30)


def nested(state, event):
    """A user-style reducer with nested state: lists that grow and shrink."""
    state = json.loads(json.dumps(state)) if state else {"seen": {}, "log": [], "n": 0}
    t = event["type"]
    state["n"] += 1
    state["seen"][t] = state["seen"].get(t, 0) + 1
    if t == "C" and state["log"]:
        state["log"].pop(0)
    else:
        state["log"].append({"v": event["version"], "d": event["data"]})
    state.pop("last_b", None) if t == "A" else state.update(last_b=event["data"])
    return state


REDUCERS = ["merge", "count", "last", "list", nested]


def strict(value):
    """``value`` with its JSON types made visible, so 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return (type(value).__name__, value)


def fill(store, evs, batch_sizes):
    i = 0
    sizes = iter(batch_sizes)
    while i < len(evs):
        n = max(1, next(sizes, 1))
        store.append("s", [NewEvent(t, d) for t, d in evs[i:i + n]])
        i += n


# --- properties ------------------------------------------------------------------------------

@PROFILE
@given(evs=events, points=st.sets(st.integers(1, 30)), reducer=st.sampled_from(REDUCERS),
       batches=st.lists(st.integers(1, 5)), data=st.data())
def test_replay_with_snapshots_equals_replay_without(evs, points, reducer, batches, data):
    with tempfile.TemporaryDirectory() as d, EventStore(d + "/s", sync=False) as s:
        fill(s, evs, batches)
        n = len(evs)
        for v in sorted(p for p in points if p <= n):
            state, _ = replay(s, "s", reducer, to_version=v, use_snapshots=False)
            s.snapshots.save("s", state, v, reducer)
        target = data.draw(st.integers(0, n), label="to_version")
        with_snaps = replay(s, "s", reducer, to_version=target)
        without = replay(s, "s", reducer, to_version=target, use_snapshots=False)
        assert strict(with_snaps) == strict(without)
        assert with_snaps[1] == target
        p = plan(s, "s", reducer, to_version=target)
        below = [v for v in points if v <= target]
        assert p.start == (max(below) if below else 0)


@PROFILE
@given(gaps=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 3)), min_size=1, max_size=12),
       probe=st.integers(-2, 40))
def test_at_is_to_version_of_last_event_at_or_before(gaps, probe):
    """Batches recorded at chosen times (equal times allowed, as within a
    batch); --at T must be --to-version of the last event at or before T."""
    base = 1_700_000_000_000_000
    with tempfile.TemporaryDirectory() as d, EventStore(d + "/s", sync=False) as s:
        times = []  # recorded_at (µs) of each version
        t = base
        for size, gap in gaps:
            t += gap
            s.append_recorded("s", [{"type": "A", "data": {"i": len(times) + k}}
                                    for k in range(size)],
                              len(times) + 1, s.head() + 1, t)
            times.extend([t] * size)
        when = us_to_datetime(base + probe)
        want = max((v for v, tv in enumerate(times, 1) if tv <= base + probe), default=0)
        if want == 0:
            with pytest.raises(NotFound, match="at or before"):
                version_at(s, "s", when)
            return
        assert version_at(s, "s", when) == want
        assert replay(s, "s", "list", at=when) == replay(s, "s", "list", to_version=want)
        text = (when + timedelta(hours=2)).isoformat().replace("+00:00", "+02:00")
        assert version_at(s, "s", text.replace("+02:00", "Z")) >= want  # a string works too


@settings(PROFILE, max_examples=400)
@given(old=json_values, new=json_values)
@example(old=[1, 2, 3, 4], new=[1])
@example(old={"a": [{"b": 1}, 2, 3]}, new={"a": [{"b": 1.0}]})
def test_changes_applied_to_old_give_new(old, new):
    changes = diff(old, new)
    assert strict(apply_changes(old, changes)) == strict(new)
    assert (changes == []) == (strict(old) == strict(new))
    json.dumps(changes)  # plain JSON, for NDJSON output


@PROFILE
@given(evs=events, reducer=st.sampled_from(REDUCERS), types=st.sets(st.sampled_from("ABC")),
       start=st.integers(1, 30))
def test_steps_changes_rebuild_every_state(evs, reducer, types, start):
    with tempfile.TemporaryDirectory() as d, EventStore(d + "/s", sync=False) as s:
        fill(s, evs, [3])
        p = plan(s, "s", reducer, use_snapshots=False)
        full = list(steps(s, p))
        assert [x.version for x in full] == list(range(1, len(evs) + 1))
        prev = None
        for x in full:
            assert strict(apply_changes(prev, x.changes)) == strict(x.state)
            assert x.to_dict() == {"version": x.version, "type": x.type,
                                   "changes": x.changes, "state": x.state}
            prev = x.state
        assert strict(p.result) == strict(replay(s, "s", reducer)[0])
        # filters choose what is shown, never what is folded
        q = plan(s, "s", reducer, use_snapshots=False, show_from=start)
        shown = list(steps(s, q, types=types or None, from_version=start))
        assert [x.version for x in shown] == [
            v for v, (t, _) in enumerate(evs, 1) if v >= start and (not types or t in types)]
        by_version = {x.version: x for x in full}
        for x in shown:
            assert strict(x.state) == strict(by_version[x.version].state)
            assert strict(x.changes) == strict(by_version[x.version].changes)


@PROFILE
@given(evs=events, name=st.sampled_from(sorted(BUILTINS)))
def test_builtin_fast_twins_agree_with_pure(evs, name):
    pure, fast = BUILTINS[name]
    a = b = None
    for v, (t, d) in enumerate(evs, 1):
        e = {"version": v, "type": t, "data": d}
        before = json.dumps(a)
        a = pure(a, e)
        b = fast(b, e)
        assert strict(a) == strict(b)
    assert before is not None and json.dumps(pure(json.loads(before), e)) == json.dumps(a)


# --- examples ------------------------------------------------------------------------------------

def test_builtins_on_a_small_stream(store_dir):
    with EventStore(store_dir, sync=False) as s:
        s.append("s", [NewEvent("A", {"x": 1, "y": 1}), NewEvent("B", {"x": 2}),
                       NewEvent("A", [1]), {"type": "C", "data": None}])
        assert replay(s, "s") == ({"x": 2, "y": 1}, 4)
        assert replay(s, "s", "count") == ({"A": 2, "B": 1, "C": 1}, 4)
        assert replay(s, "s", "last") == (None, 4)
        assert replay(s, "s", "list", to_version=3) == ([{"x": 1, "y": 1}, {"x": 2}, [1]], 3)
        assert replay(s, "s", to_version=0) == (None, 0)
        assert s.replay("s", "count", to_version=2) == ({"A": 1, "B": 1}, 2)
        with pytest.raises(NotFound, match="no version 5"):
            replay(s, "s", to_version=5)
        with pytest.raises(StreamNotFound):
            replay(s, "nope")
        with pytest.raises(UsageError, match="not both"):
            replay(s, "s", to_version=1, at="2030-01-01")
        with pytest.raises(UsageError, match="RFC 3339"):
            replay(s, "s", at="soon")


def test_a_raising_reducer_names_the_event(store_dir):
    def r(state, event):
        if event["version"] == 3:
            return state["missing"]
        return {**(state or {}), event["type"]: event["version"]}

    with EventStore(store_dir, sync=False) as s:
        s.append("acct-1", [NewEvent("Opened"), NewEvent("Deposited"), NewEvent("Withdrawn")])
        for run_it in (lambda: replay(s, "acct-1", r),
                       lambda: list(steps(s, plan(s, "acct-1", r)))):
            with pytest.raises(ReducerError) as e:
                run_it()
            msg = str(e.value)
            assert e.value.exit_code == 1
            for part in ("'acct-1'", "version 3", "Withdrawn", "KeyError: 'missing'",
                         "state keys before it: Opened, Deposited", "test_replay.py:"):
                assert part in msg, (part, msg)


def test_a_non_json_state_is_an_error_that_says_so(store_dir):
    with EventStore(store_dir, sync=False) as s:
        s.append("s", [NewEvent("A")])
        with pytest.raises(ReducerError, match="not JSON .* set is not a JSON value"):
            replay(s, "s", lambda st, ev: {"x": {1}})


def test_reducer_specs(tmp_path, monkeypatch):
    f = tmp_path / "mine.py"
    f.write_text("def apply(state, event):\n    return 1\nNOT = 3\n"
                 "def one(state):\n    return state\n")
    r = load_reducer(f"{f}:apply")
    assert (r.name, r(None, {})) == ("mine.py:apply", 1)
    assert r.fingerprint.startswith("mine.py:apply@sha256:")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_reducer("mine:apply").name == "mine:apply"
    assert load_reducer(None).name == "merge" == load_reducer(BUILTINS["merge"][0]).name
    bad = {"nope": "unknown reducer", f"{f}": "name the function",
           f"{f}:missing": "has no function 'missing'", f"{f}:NOT": "not callable",
           f"{f}:one": "two arguments", f"{tmp_path}/none.py:f": "no such file",
           "no_such_module_xyz:f": "no module named", "a b:c": "neither", "": "expected"}
    for spec, why in bad.items():
        with pytest.raises(UsageError, match=why):
            load_reducer(spec)
    (tmp_path / "broken.py").write_text("def f(:\n")
    with pytest.raises(UsageError, match="syntax error .* line 1"):
        load_reducer(f"{tmp_path}/broken.py:f")


def test_editing_a_reducer_retires_its_snapshots(store_dir, tmp_path):
    f = tmp_path / "r.py"
    f.write_text("def r(state, event):\n    return (state or 0) + 1\n")
    with EventStore(store_dir, sync=False) as s:
        s.append("s", [NewEvent("A")] * 1 + [NewEvent("A") for _ in range(9)])
        s.snapshots.save("s", 5, 5, reducer=f"{f}:r")
        assert plan(s, "s", f"{f}:r").start == 5
        f.write_text("def r(state, event):\n    return (state or 0) + 2  # doubled\n")
        p = plan(s, "s", f"{f}:r")
        assert p.start == 0 and "another version of r.py:r" in p.notes[0]
        assert replay(s, "s", f"{f}:r") == (20, 10)


def test_verify_snapshots(store_dir):
    with EventStore(store_dir, sync=False) as s:
        s.append("s", [NewEvent("A", {"n": i, "deep": {"k": [i]}}) for i in range(10)])
        for v in (3, 6, 9):
            s.snapshots.save("s", replay(s, "s", to_version=v)[0], v)
        s.snapshots.save("s", {"A": 4}, 4, reducer="count")
        rep = verify_snapshots(s, "s")
        assert rep.ok and rep.checked == 3 and rep.skipped == ["version 4: made by count"]
        # a wrong state saved with a valid checksum: the first differing path
        s.snapshots.save("s", {"n": 6, "deep": {"k": [7]}}, 6)
        path = s.snapshots.path("s", 9)
        with open(path, "r+b") as fh:  # flip a byte: damaged
            fh.seek(60)
            b = fh.read(1)
            fh.seek(60)
            fh.write(bytes([b[0] ^ 1]))
        rep = verify_snapshots(s, "s")
        assert [(m.version, m.path) for m in rep.mismatches] == [(6, ["n"]), (9, None)]
        m6 = rep.mismatches[0]
        assert (m6.snapshot, m6.rebuilt) == (6, 5)
        assert rep.mismatches[1].reason.startswith("damaged")
        s.snapshots.save("s", {"n": 5, "deep": {"k": [4]}}, 6)
        rep = verify_snapshots(s, "s")
        assert rep.mismatches[0].path == ["deep", "k", 0]


def test_path_text():
    assert path_text([]) == "(state)"
    assert path_text(["items", 0, "qty"]) == "items[0].qty"
    assert path_text(["a.b", "c d"]) == '["a.b"]["c d"]'


def test_steps_are_right_even_for_a_reducer_that_edits_its_input(store_dir):
    """A reducer that changes the state it is given (against the rules) must
    not hide its own changes in --steps."""
    def sloppy(state, event):
        state = state if state is not None else {"total": 0, "seen": []}
        state["total"] += event["data"]["amount"]
        state["seen"].append(event["version"])
        return state

    with EventStore(store_dir, sync=False) as s:
        s.append("s", [NewEvent("D", {"amount": a}) for a in (5, 7, 9)])
        got = [x.changes for x in steps(s, plan(s, "s", sloppy))][1:]
        assert got == [
            [{"op": "change", "path": ["total"], "old": 5, "new": 12},
             {"op": "add", "path": ["seen", 1], "new": 2}],
            [{"op": "change", "path": ["total"], "old": 12, "new": 21},
             {"op": "add", "path": ["seen", 2], "new": 3}]]


def test_changes_format_example():
    old = {"status": "placed", "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 1}],
           "tracking": "1Z"}
    new = {"status": "paid", "items": [{"sku": "a", "qty": 2}], "paid": 500}
    assert diff(old, new) == [
        {"op": "remove", "path": ["tracking"], "old": "1Z"},
        {"op": "change", "path": ["status"], "old": "placed", "new": "paid"},
        {"op": "change", "path": ["items", 0, "qty"], "old": 1, "new": 2},
        {"op": "remove", "path": ["items", 1], "old": {"sku": "b", "qty": 1}},
        {"op": "add", "path": ["paid"], "new": 500}]
    assert diff(None, {"a": 1}) == [{"op": "change", "path": [], "old": None, "new": {"a": 1}}]
    assert diff(1, 1.0) == [{"op": "change", "path": [], "old": 1, "new": 1.0}]
    assert diff(True, 1) != []
