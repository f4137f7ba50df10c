"""The library against a plain in-memory model, on every backend.

A hypothesis ``RuleBasedStateMachine`` drives two ``EventStore`` handles on
one store -- a directory, a PostgreSQL schema or a memory store, a fresh one
per program (on files each handle has its own small ``segment_bytes``, so
segments roll all the time and the handles' cached tails go stale under
each other) and,
side by side, a model that is nothing but a dict ``stream -> [event]`` and a
list for ``$all``.  Every rule does the same thing to both and compares the
answers; the invariants (after every step) compare everything the store can
be asked: ``$all``, every stream, every version, ``head``.

What the model encodes (the invariants, the event JSON, the library API):

* expected versions ``any``, ``no-stream`` (= 0), ``exists``, an integer;
  a retry whose ids already sit at N+1..N+k succeeds without writing, a
  retry that matches only part of them is a conflict;
* positions dense 1..head, versions contiguous 1..n, one ``recorded_at``
  per batch, never decreasing in position order;
* JSON in = JSON out, compared as JSON text (key order, -0.0, 1 vs 1.0 vs
  True, Unicode as given, explicit nulls, 64-bit edge integers);
* ``read``/``read_all`` ranges are inclusive whatever the direction, types
  filter before ``limit`` counts, ``limit`` keeps the newest N backwards;
* forgetting: ``delete`` (soft: the stream goes on at V+1; hard: a
  tombstone refuses appends), ``truncate``, ``retention`` max-count rules
  per stream and per prefix (the stream's own rule wins, then the longest
  prefix) hide events at once; versions count them and positions keep their
  numbers (gaps); ``compact`` removes the bytes of exactly the events no
  reader can see (a rule cleared afterwards does not bring them back, and a
  retry no longer finds them).  The model applies these rules itself.

``EVSTORE_TORTURE=long`` runs many more and longer programs.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import uuid
from datetime import timezone

import pytest
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,
                                 precondition, rule, run_state_machine_as_test)

from evstore import ANY, NO_STREAM, STREAM_EXISTS, EventStore, NewEvent
from evstore.errors import (InvalidEvent, StreamDeleted, StreamNotFound, UsageError,
                            WrongExpectedVersion)

LONG = os.environ.get("EVSTORE_TORTURE") == "long"

# Ids that are ordinary streams (never paths), prefixes of each other, case
# variants, and one of exactly 200 UTF-8 bytes.
STREAMS = ["acct-1", "acct-10", "acct-2", "A", "a", "ordér-✓", "../x", "a/b", ".",
           "..", "CON", "%2e%2e", "é" * 100]
PREFIXES = [None, "", "acct", "acct-1", "a", ".", "é", "%", "zz"]
TYPES = ["Deposited", "Withdrawn", "Ünïcode τύπος", "x"]

INT_EDGES = [0, 1, -1, 2**31 - 1, -2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
             -2**63, -2**63 + 1, 2**64 - 1]
ints = st.one_of(st.sampled_from(INT_EDGES), st.integers(-2**63, 2**64 - 1))
floats = st.one_of(st.sampled_from([0.0, -0.0, 1.0, 0.1, -1.5, 1e308, 5e-324, 2.0**53]),
                   st.floats(allow_nan=False, allow_infinity=False))
texts = st.one_of(
    st.sampled_from(["", "\x00", "\u2028", "😀", "é", "e\u0301", '"\\', "\ufeff"]),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
)
json_values = st.recursive(
    st.none() | st.booleans() | ints | floats | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)

ABSENT = object()


@st.composite
def new_events(draw):
    """One event as the caller passes it, and what the store must record
    (``id`` None: the store makes one)."""
    etype = draw(st.sampled_from(TYPES))
    form = draw(st.sampled_from(["dict", "new"]))
    eid = draw(st.one_of(st.none(), st.uuids().map(str), st.uuids().map(lambda u: str(u).upper())))
    want_id = None if eid is None else str(uuid.UUID(eid))
    if form == "new":
        data = draw(st.none() | json_values)
        meta = draw(st.none() | json_values)
        ev = NewEvent(etype, data, meta, eid)
        # NewEvent's None means "not given": {} (the documented defaults)
        return ev, etype, {} if data is None else data, {} if meta is None else meta, want_id
    data = draw(st.just(ABSENT) | json_values)  # json_values includes explicit null
    meta = draw(st.just(ABSENT) | json_values)
    ev = {"type": etype}
    if data is not ABSENT:
        ev["data"] = data
    if meta is not ABSENT:
        ev["metadata"] = meta
    if eid is not None:
        ev["id"] = eid
    if draw(st.booleans()):  # a recorded event piped back: these are ignored
        ev.update({"stream": "elsewhere", "version": 99, "position": 99,
                   "recorded_at": "2000-01-01T00:00:00.000000Z"})
    return (ev, etype, {} if data is ABSENT else data, {} if meta is ABSENT else meta, want_id)


def canon(ev: dict) -> str:
    """A recorded event as exact JSON text (key order, types and all)."""
    return json.dumps(ev, ensure_ascii=False, allow_nan=False)


def recorded(ev) -> dict:
    d = ev.to_dict()
    assert d["recorded_at"].endswith("Z")
    assert ev.recorded_at.tzinfo is not None
    assert ev.recorded_at.utcoffset() == timezone.utc.utcoffset(None)
    return d


BAD_EVENTS = [
    {"type": "T", "data": {"n": 2**64}},
    {"type": "T", "data": [-2**63 - 1]},
    {"type": "T", "metadata": {"x": float("nan")}},
    {"type": "T", "data": float("inf")},
    {"type": ""},
    {"data": {}},
    {"type": 7},
    {"type": "T", "id": "not-a-uuid"},
    {"type": "T", "data": {1: "non-string key"}},
    {"type": "T", "data": {"s": {1, 2}}},
    NewEvent("T", {"bytes": b"\x00"}),
]


_programs = itertools.count(1)


class StoreVsModel(RuleBasedStateMachine):
    #: set per run by test_store_vs_model: "files", "postgres" or "memory",
    #: and for postgres the session server
    kind = "files"
    pg_server = None

    def __init__(self):
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="evmodel-")
        n = next(_programs)
        if self.kind == "files":
            self.path = os.path.join(self.tmp, "store")
        elif self.kind == "postgres":
            self.schema = f"model{os.getpid()}_{n}"
            self.path = self.pg_server.url_for(self.schema)
        else:
            self.path = f"memory:model-{os.getpid()}-{n}"
        self.handles = [self.open(sync=False, segment_bytes=300),
                        self.open(sync=False, segment_bytes=1500)]
        self.streams: dict[str, list[dict]] = {}  # stream -> recorded events (to_dict)
        self.all: list[dict] = []
        self.batches: list[tuple[str, int, list[dict]]] = []  # (stream, version before, events)
        # forgetting: stream -> (floor, hard); (target, is prefix) -> max_count;
        # the positions compact removed
        self.cuts: dict[str, tuple[int, bool]] = {}
        self.rules: dict[tuple[str, bool], int] = {}
        self.gone: set[int] = set()

    def teardown(self):
        try:
            for h in self.handles:
                h.close()
            event(f"events at the end: {'<10' if len(self.all) < 10 else '<30' if len(self.all) < 30 else '30+'}")
            if self.all:
                with self.open() as es:  # a fresh handle sees the same
                    report = es.verify()
                    assert report.ok, [str(p) for p in report.problems]
                    assert [canon(recorded(e)) for e in es.read_all()] == \
                        [canon(strip(e)) for e in self.readable_all()]
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self.kind == "postgres":
                import psycopg
                with psycopg.connect(self.pg_server.url, autocommit=True) as c:
                    c.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def open(self, segment_bytes=None, **kw) -> EventStore:
        """A handle on this program's store (small segments on files)."""
        if self.kind == "files" and segment_bytes is not None:
            kw["segment_bytes"] = segment_bytes
        return EventStore(self.path, **kw)

    # -- the model --------------------------------------------------------------------
    def version(self, stream: str) -> int:
        return len(self.streams.get(stream, ()))

    def max_count(self, stream: str) -> int | None:
        if (stream, False) in self.rules:
            return self.rules[(stream, False)]
        found = [(len(t), n) for (t, p), n in self.rules.items() if p and stream.startswith(t)]
        return max(found)[1] if found else None

    def readable(self, ev: dict) -> bool:
        s = ev["stream"]
        floor, hard = self.cuts.get(s, (1, False))
        n = self.max_count(s)
        return (ev["position"] not in self.gone and not hard and ev["version"] >= floor
                and (n is None or ev["version"] > self.version(s) - n))

    def readable_stream(self, stream: str) -> list[dict]:
        return [e for e in self.streams.get(stream, []) if self.readable(e)]

    def readable_all(self) -> list[dict]:
        return [e for e in self.all if self.readable(e)]

    def stored(self, events: list[dict]) -> list[dict]:
        """What a retry can still find: compact removed the rest."""
        return [e for e in events if e["position"] not in self.gone]

    def expected_outcome(self, stream, expected, ids):
        """What the model says an append does: ("write", None),
        ("idempotent", (version, position)) or ("conflict", None)."""
        cur = self.version(stream)
        if expected in (ANY, STREAM_EXISTS):
            # a retry: the stream's last k events carry exactly these ids
            if cur >= 1 and any(i is not None for i in ids):
                have = self.stored(self.streams[stream][max(cur - len(ids), 0):])
                if len(have) == len(ids) and all(i is not None and h["id"] == i
                                                 for h, i in zip(have, ids)):
                    return "idempotent", (have[-1]["version"], have[-1]["position"])
                if {h["id"] for h in have} & set(ids):
                    return "conflict", None
            if expected == ANY:
                return "write", None
            return ("write", None) if cur >= 1 else ("conflict", None)
        n = 0 if expected == NO_STREAM else expected
        if n == cur:
            return "write", None
        if n < cur:
            have = self.stored(self.streams[stream][n:n + len(ids)])
            if len(have) == len(ids) and all(i is not None and h["id"] == i
                                             for h, i in zip(have, ids)):
                return "idempotent", (have[-1]["version"], have[-1]["position"])
        return "conflict", None

    def do_append(self, h, stream, events, want, expected, model_expected=ABSENT):
        """``want``: [(type, data, metadata, id or None)] per event;
        ``expected`` goes to the store, ``model_expected`` (default: the
        same) is what it means."""
        es = self.handles[h]
        head = len(self.all)
        ids = [w[3] for w in want]
        if model_expected is ABSENT:
            model_expected = expected
        given = [i for i in ids if i is not None]
        if len(set(given)) < len(given):  # one id twice in a batch
            with pytest.raises(InvalidEvent, match="is also the id of"):
                es.append(stream, events, expected_version=expected)
            return
        if self.cuts.get(stream, (1, False))[1]:
            note(f"append h{h} {stream!r}: a tombstone")
            with pytest.raises(StreamDeleted):
                es.append(stream, events, expected_version=expected)
            return
        outcome, at = self.expected_outcome(stream, model_expected, ids)
        note(f"append h{h} {stream!r} x{len(events)} expected={expected!r} -> {outcome}")
        event(f"append: {outcome}")
        if outcome == "conflict":
            try:
                es.append(stream, events, expected_version=expected)
            except WrongExpectedVersion as e:
                assert e.current == self.version(stream)
                return
            raise AssertionError(f"append to {stream!r} with expected {expected!r} "
                                 f"(current {self.version(stream)}) did not conflict")
        result = es.append(stream, events, expected_version=expected)
        if outcome == "idempotent":
            assert tuple(result) == (stream, at[0], at[1], len(events)), result
            return
        cur = self.version(stream)
        k = len(events)
        assert tuple(result) == (stream, cur + k, head + k, k), (result, cur, head)
        got = list(es.read_all(from_position=head + 1))
        assert [e.position for e in got] == list(range(head + 1, head + k + 1))
        stamps = {e.recorded_at for e in got}
        assert len(stamps) == 1, "one recorded_at per batch"
        if self.all:
            assert got[0].recorded_at >= self.all[-1]["_at"], "recorded_at went back"
        batch = []
        for i, (ev, (etype, data, meta, eid)) in enumerate(zip(got, want)):
            if eid is None:  # made by the store: a canonical UUID, new in this batch
                assert str(uuid.UUID(ev.id)) == ev.id
                assert ev.id not in [b["id"] for b in batch]
                eid = ev.id
            rec = {"stream": stream, "version": cur + 1 + i, "position": head + 1 + i,
                   "id": eid, "type": etype, "data": data, "metadata": meta,
                   "recorded_at": recorded(ev)["recorded_at"]}
            assert canon(recorded(ev)) == canon(rec)
            rec["_at"] = ev.recorded_at
            batch.append(rec)
        self.streams.setdefault(stream, []).extend(batch)
        self.all.extend(batch)
        self.batches.append((stream, cur, batch))

    # -- rules --------------------------------------------------------------------------
    @initialize(batches=st.lists(st.tuples(st.sampled_from(STREAMS),
                                           st.lists(new_events(), min_size=1, max_size=4)),
                                 min_size=1, max_size=4))
    def seed(self, batches):
        """Start with a few batches, so that short programs read real data."""
        for stream, batch in batches:
            self.do_append(0, stream, [b[0] for b in batch], [b[1:] for b in batch], ANY)

    @rule(h=st.integers(0, 1), stream=st.sampled_from(STREAMS),
          batch=st.lists(new_events(), min_size=1, max_size=6), data=st.data())
    def append(self, h, stream, batch, data):
        cur = self.version(stream)
        kind = data.draw(st.sampled_from(
            ["any", "no-stream", "exists", "right", "wrong", "string-int"]), label="kind")
        if kind == "any":
            expected = data.draw(st.sampled_from([ANY, None]))
        elif kind == "no-stream":
            expected = NO_STREAM
        elif kind == "exists":
            expected = STREAM_EXISTS
        elif kind == "right":
            expected = cur
        elif kind == "string-int":
            expected = str(cur)
        else:
            expected = data.draw(st.integers(0, cur + 3).filter(lambda n: n != cur),
                                 label="wrong")
        model_expected = expected
        if expected is None:
            model_expected = ANY
        elif isinstance(expected, str) and expected.isdigit():
            model_expected = int(expected)
        self.do_append(h, stream, [b[0] for b in batch], [b[1:] for b in batch],
                       expected, model_expected)

    @precondition(lambda self: self.batches)
    @rule(h=st.integers(0, 1), data=st.data(),
          how=st.sampled_from(["same", "same-as-dicts", "prefix", "one-changed",
                               "extended", "any"]))
    def retry(self, h, data, how):
        """Retry an earlier batch with its ids and the version before it."""
        stream, before, batch = data.draw(st.sampled_from(self.batches), label="batch")
        events = [NewEvent(b["type"], b["data"], b["metadata"], b["id"]) for b in batch]
        want = [(b["type"], b["data"] if b["data"] is not None else {},
                 b["metadata"] if b["metadata"] is not None else {}, b["id"]) for b in batch]
        if how == "same-as-dicts":
            events = [{k: v for k, v in b.items() if k != "_at"} for b in batch]
            want = [(b["type"], b["data"], b["metadata"], b["id"]) for b in batch]
        elif how == "prefix":
            j = data.draw(st.integers(1, len(batch)), label="prefix")
            events, want = events[:j], want[:j]
        elif how == "one-changed":
            j = data.draw(st.integers(0, len(batch) - 1), label="changed")
            fresh = str(uuid.UUID(int=data.draw(st.integers(0, 2**128 - 1))))
            events[j] = events[j]._replace(id=fresh)
            want[j] = want[j][:3] + (fresh,)
        elif how == "extended":
            fresh = str(uuid.UUID(int=data.draw(st.integers(0, 2**128 - 1))))
            events.append(NewEvent("x", {}, {}, fresh))
            want.append(("x", {}, {}, fresh))
        head = len(self.all)
        self.do_append(h, stream, events, want, ANY if how == "any" else before)
        if how in ("same", "same-as-dicts", "prefix"):
            assert len(self.all) == head  # nothing written

    @rule(h=st.integers(0, 1), stream=st.sampled_from(STREAMS),
          good=st.lists(new_events(), max_size=3), bad=st.sampled_from(BAD_EVENTS),
          expected=st.sampled_from([ANY, NO_STREAM, STREAM_EXISTS]))
    def append_invalid(self, h, stream, good, bad, expected):
        """An invalid event anywhere in a batch: InvalidEvent, nothing written
        (the invariants check nothing moved)."""
        events = [g[0] for g in good] + [bad]
        try:
            self.handles[h].append(stream, events, expected_version=expected)
        except InvalidEvent:
            return
        raise AssertionError(f"accepted an invalid event {bad!r}")

    @rule(h=st.integers(0, 1), stream=st.sampled_from(STREAMS),
          lo=st.integers(0, 30), hi=st.none() | st.integers(0, 30),
          limit=st.none() | st.integers(0, 8), backwards=st.booleans(),
          types=st.none() | st.lists(st.sampled_from(TYPES + ["Nope"]), max_size=2))
    def read(self, h, stream, lo, hi, limit, backwards, types):
        model = self.readable_stream(stream)
        if not model:
            try:
                list(self.handles[h].read(stream, from_version=lo, to_version=hi,
                                          backwards=backwards, limit=limit, types=types))
            except StreamNotFound:
                return
            raise AssertionError(f"read of stream {stream!r} with nothing readable did not raise "
                             "StreamNotFound")
        got = self.handles[h].read(stream, from_version=lo, to_version=hi,
                                   backwards=backwards, limit=limit, types=types)
        want = select(model, "version", lo, hi, limit, backwards, types)
        assert [canon(recorded(e)) for e in got] == [canon(strip(e)) for e in want]

    @rule(h=st.integers(0, 1), lo=st.integers(0, 60), hi=st.none() | st.integers(0, 60),
          limit=st.none() | st.integers(0, 8), backwards=st.booleans(),
          types=st.none() | st.lists(st.sampled_from(TYPES + ["Nope"]), max_size=2),
          prefix=st.sampled_from(PREFIXES))
    def read_all(self, h, lo, hi, limit, backwards, types, prefix):
        model = [e for e in self.readable_all()
                 if prefix is None or e["stream"].startswith(prefix)]
        got = self.handles[h].read_all(from_position=lo, to_position=hi, limit=limit,
                                       backwards=backwards, types=types, stream_prefix=prefix)
        want = select(model, "position", lo, hi, limit, backwards, types)
        assert [canon(recorded(e)) for e in got] == [canon(strip(e)) for e in want]

    @rule(h=st.integers(0, 1), prefix=st.sampled_from(PREFIXES))
    def streams_(self, h, prefix):
        got = [(s.stream, s.version, s.first_recorded_at, s.last_recorded_at)
               for s in self.handles[h].streams(prefix)]
        want = [(s, self.version(s), evs[0]["_at"], evs[-1]["_at"])
                for s, evs in sorted((s, self.readable_stream(s)) for s in self.streams)
                if evs and (prefix is None or s.startswith(prefix))]
        assert got == want

    @rule(h=st.integers(0, 1), segment_bytes=st.integers(200, 2000),
          sync=st.sampled_from([False, False, True]))
    def reopen(self, h, segment_bytes, sync):
        self.handles[h].close()
        self.handles[h] = self.open(sync=sync, segment_bytes=segment_bytes)

    @rule(h=st.integers(0, 1), stream=st.sampled_from(STREAMS), hard=st.booleans(),
          how=st.sampled_from(["any", "right", "wrong"]))
    def delete(self, h, stream, hard, how):
        cur = self.version(stream)
        expected = {"any": ANY, "right": cur, "wrong": cur + 1}[how]
        floor, was_hard = self.cuts.get(stream, (1, False))
        es = self.handles[h]
        note(f"delete h{h} {stream!r} hard={hard} expected={expected!r}")
        if was_hard and not hard:
            with pytest.raises(StreamDeleted):
                es.delete(stream, expected_version=expected, hard=hard)
            return
        if was_hard:
            assert es.delete(stream, expected_version=expected, hard=True).to_dict() == \
                {"stream": stream, "version": cur, "deleted": "hard"}
            return
        if cur == 0:
            with pytest.raises(StreamNotFound):
                es.delete(stream, expected_version=expected, hard=hard)
            return
        if how == "wrong":
            with pytest.raises(WrongExpectedVersion):
                es.delete(stream, expected_version=expected, hard=hard)
            return
        event(f"delete: {'hard' if hard else 'soft'}")
        assert es.delete(stream, expected_version=expected, hard=hard).to_dict() == \
            {"stream": stream, "version": cur, "deleted": "hard" if hard else "soft"}
        self.cuts[stream] = (cur + 1, hard)

    @rule(h=st.integers(0, 1), stream=st.sampled_from(STREAMS), data=st.data())
    def truncate(self, h, stream, data):
        cur = self.version(stream)
        before = data.draw(st.integers(0, cur + 2), label="before")
        floor, hard = self.cuts.get(stream, (1, False))
        es = self.handles[h]
        note(f"truncate h{h} {stream!r} before={before}")
        if hard:
            with pytest.raises(StreamDeleted):
                es.truncate(stream, before)
        elif cur == 0:
            with pytest.raises(StreamNotFound):
                es.truncate(stream, before)
        elif not 1 <= before <= cur + 1:
            with pytest.raises(UsageError):
                es.truncate(stream, before)
        else:
            event("truncate")
            floor = max(floor, before)
            assert es.truncate(stream, before).to_dict() == \
                {"stream": stream, "version": cur, "before": floor}
            self.cuts[stream] = (floor, False)

    @rule(h=st.integers(0, 1), data=st.data(), prefix=st.booleans(),
          count=st.sampled_from([None, 7, 9]))
    def retention(self, h, data, prefix, count):
        """max-count rules of at least 7, the longest batch: a new batch is
        always readable when it is written (the model learns its ids)."""
        target = data.draw(st.sampled_from([p for p in PREFIXES if p is not None] if prefix
                                           else STREAMS), label="target")
        note(f"retention h{h} {target!r} prefix={prefix} max_count={count}")
        event("retention: " + ("clear" if count is None else "set"))
        shown = self.handles[h].retention(target, max_count=count, prefix=prefix,
                                          clear=count is None)
        if count is None:
            self.rules.pop((target, prefix), None)
        else:
            self.rules[(target, prefix)] = count
            assert (shown[0].target, shown[0].prefix, shown[0].max_count) == (target, prefix, count)

    @rule(h=st.integers(0, 1), dry_run=st.booleans())
    def compact(self, h, dry_run):
        doomed = {e["position"] for e in self.all
                  if e["position"] not in self.gone and not self.readable(e)}
        note(f"compact h{h} dry_run={dry_run}: {len(doomed)} events")
        event("compact: " + ("nothing" if not doomed else "dry run" if dry_run else "removes"))
        got = self.handles[h].compact(dry_run=dry_run)
        assert got["events_removed"] == len(doomed), (got, sorted(doomed))
        if not dry_run:
            self.gone |= doomed

    # -- invariants -----------------------------------------------------------------------
    @invariant()
    def everything_matches_the_model(self):
        readable = self.readable_all()
        for es in self.handles:
            assert es.head() == len(self.all)
            got = [recorded(e) for e in es.read_all()]
            positions = [e["position"] for e in got]
            assert positions == sorted(set(positions))
            assert [canon(e) for e in got] == [canon(strip(e)) for e in readable]
            stamps = [e.recorded_at for e in es.read_all(backwards=True)][::-1]
            assert stamps == sorted(stamps), "recorded_at decreases in position order"
        es = self.handles[0]
        for s in STREAMS:
            assert es.version(s) == self.version(s), s
            model = self.readable_stream(s)
            assert es.exists(s) == bool(model), s
            if model:
                got = [recorded(e) for e in es.read(s)]
                assert [e["version"] for e in got] == list(range(got[0]["version"],
                                                                 self.version(s) + 1))
                assert [canon(e) for e in got] == [canon(strip(e)) for e in model]


def strip(ev: dict) -> dict:
    return {k: v for k, v in ev.items() if k != "_at"}


def select(events, key, lo, hi, limit, backwards, types):
    """The model of read/read_all's range, type filter, direction and limit."""
    lo = max(lo, 1)
    out = [e for e in events if e[key] >= lo and (hi is None or e[key] <= hi)
           and (not types or e["type"] in types)]
    if backwards:
        out.reverse()
    if limit is not None:
        out = out[:limit]
    return out


#: programs per run: a PostgreSQL program costs a few round trips per step
EXAMPLES = {"files": 30, "memory": 40, "postgres": 8}
#: EVSTORE_TORTURE=long: a PostgreSQL program costs ~5x a directory's (a
#: round trip per call, a VACUUM per compaction), so it gets fewer
LONG_EXAMPLES = {"files": 600, "memory": 600, "postgres": 150}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["files", "postgres", "memory"])
def test_store_vs_model(kind, request):
    """The same programs against each backend (``EVSTORE_TORTURE=long``:
    many more and longer ones)."""
    machine = type(f"StoreVsModel_{kind}", (StoreVsModel,), {"kind": kind})
    if kind == "postgres":
        machine.pg_server = request.getfixturevalue("pg_server")
    run_state_machine_as_test(machine, settings=settings(
        max_examples=LONG_EXAMPLES[kind] if LONG else EXAMPLES[kind],
        stateful_step_count=80 if LONG else 40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                               HealthCheck.data_too_large],
    ))
