"""Many real writer processes, and readers racing them (issue 2, the core proof).

Writers on one hot stream with exact expected versions (retrying on
WrongExpectedVersion), writers on the same stream with ``any``, and writers
on many streams of their own, all at once; afterwards no event is lost or
doubled, versions are contiguous, positions dense, and every exact append
reported ``expected + count``.  Readers in other processes never see
position P+1 before P, nor part of a batch.
"""
from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from core_helpers import LONG, check_dense, check_streams_agree, json_lines, spawn
from evstore import EventStore, NewEvent
from evstore.ops import verify

WRITER = r"""
import json, random, sys, time, uuid
from evstore import ANY, EventStore, NewEvent
from evstore.errors import WrongExpectedVersion

path, role, wid, n, start, seed = sys.argv[1:7]
n, start = int(n), float(start)
rnd = random.Random(int(seed))
out = sys.stdout
with EventStore(path, segment_bytes=2500) as es:
    time.sleep(max(0.0, start - time.time()))  # all writers start together
    own = {}
    for b in range(n):
        k = rnd.randint(1, 4)
        bid = f"{role}{wid}-{b}"
        ids = [str(uuid.uuid4()) for _ in range(k)]
        evs = [NewEvent("T", {"b": bid, "i": i, "n": k, "pad": "p" * rnd.randrange(60)},
                        {"w": wid}, ids[i]) for i in range(k)]
        retries = 0
        if role == "exact":
            stream = "hot"
            while True:
                expected = es.version(stream)
                try:
                    r = es.append(stream, evs, expected_version=expected)
                    break
                except WrongExpectedVersion:
                    retries += 1
        elif role == "any":
            stream, expected = "hot", "any"
            r = es.append(stream, evs, expected_version=ANY)
        else:  # many streams: its own (exact versions it tracks itself) and shared ones
            if rnd.random() < 0.6:
                stream = f"own-{wid}-{rnd.randrange(5)}"
                expected = own.get(stream, 0)
                r = es.append(stream, evs, expected_version=expected)  # must never conflict
                own[stream] = r.version
            else:
                stream, expected = f"shared-{rnd.randrange(3)}", "any"
                r = es.append(stream, evs)
        out.write(json.dumps({"b": bid, "role": role, "stream": stream, "expected": expected,
                              "version": r.version, "position": r.position, "count": r.count,
                              "ids": ids, "retries": retries}) + "\n")
        out.flush()
"""


def test_many_writers_one_stream_and_many_streams(tmp_path):
    path = tmp_path / "store"
    EventStore(path).close()
    n = 120 if LONG else 30
    roles = ["exact"] * 3 + ["any"] * 2 + ["many"] * 2
    start = time.time() + 1.0
    procs = [spawn(WRITER, path, role, w, n, start, 1000 + w) for w, role in enumerate(roles)]
    acks = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        acks.extend(json_lines(out))
    assert len(acks) == n * len(roles)

    with EventStore(path) as es:
        events = list(es.read_all())
        by_stream = check_dense(events)
        check_streams_agree(es, by_stream)
    assert len(events) == sum(a["count"] for a in acks)
    by_id = {e.id: e for e in events}
    assert len(by_id) == len(events), "an event id appears twice"
    assert set(by_id) == {i for a in acks for i in a["ids"]}, "lost or unexpected events"
    for a in acks:
        evs = [by_id[i] for i in a["ids"]]
        k = a["count"]
        assert k == len(a["ids"])
        # the batch sits where its append said, contiguous, in order, intact
        assert [e.position for e in evs] == list(range(a["position"] - k + 1, a["position"] + 1)), a
        assert [e.version for e in evs] == list(range(a["version"] - k + 1, a["version"] + 1)), a
        assert {e.stream for e in evs} == {a["stream"]}
        assert [(e.data["b"], e.data["i"], e.data["n"]) for e in evs] == \
            [(a["b"], i, k) for i in range(k)]
        if isinstance(a["expected"], int):
            assert a["version"] == a["expected"] + k, a
        if a["role"] == "many":
            assert a["retries"] == 0
    # the exact writers' results chain: every version of "hot" was acked once
    hot = sorted((a["version"] - a["count"] + 1, a["version"]) for a in acks if a["stream"] == "hot")
    assert [lo for lo, _ in hot] == [1] + [hi + 1 for _, hi in hot[:-1]]
    report = verify(path, settle=0)
    assert report.ok, [str(p) for p in report.problems]
    print("exact-writer retries:", sum(a["retries"] for a in acks))


BATCH_WRITER = r"""
import random, sys, time
from evstore import EventStore, NewEvent
path, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
deadline = time.time() + seconds
b = 0
with EventStore(path, sync=False, segment_bytes=4000) as es:
    while time.time() < deadline:
        k = rnd.randint(1, 5)
        es.append(f"r{rnd.randrange(4)}",
                  [NewEvent("T", {"b": b, "i": i, "n": k, "pad": "x" * rnd.randrange(80)})
                   for i in range(k)])
        b += 1
print(b)
"""

READER = r"""
import json, os, random, sys, time
from evstore import EventStore, NewEvent
from evstore.errors import StreamNotFound
path, mode, stop_file = sys.argv[1], sys.argv[2], sys.argv[3]
rnd = random.Random(mode)
bad = []
polls = 0
last = 0          # last position seen, always the end of a batch
versions = {}     # stream -> last version seen in $all

def fail(msg):
    if len(bad) < 20:
        bad.append(msg)

def poll(es):
    global last, polls
    polls += 1
    expect_i = 0
    for e in es.read_all(from_position=last + 1):
        if e.position != last + 1:
            fail(f"position {e.position} after {last}")
        if e.version != versions.get(e.stream, 0) + 1:
            fail(f"{e.stream} version {e.version} after {versions.get(e.stream, 0)}")
        if e.data["i"] != expect_i:
            fail(f"position {e.position}: batch {e.data['b']} starts at event {e.data['i']}")
        expect_i = 0 if e.data["i"] == e.data["n"] - 1 else e.data["i"] + 1
        last, versions[e.stream] = e.position, e.version
    if expect_i:
        fail(f"read_all ended inside a batch at position {last}")
    # the head: once reported, readable; the newest event ends its batch
    head = es.head()
    if head and [e.position for e in es.read_all(from_position=head, to_position=head)] != [head]:
        fail(f"head {head} is not readable")
    newest = list(es.read_all(backwards=True, limit=1))
    if newest and newest[0].data["i"] != newest[0].data["n"] - 1:
        fail(f"newest event {newest[0].position} is not the end of its batch")
    # one stream: its version is readable and its last event ends a batch
    s = f"r{rnd.randrange(4)}"
    v = es.version(s)
    if v:
        evs = list(es.read(s, from_version=max(1, v - 8)))
        if [e.version for e in evs][:1 + v - max(1, v - 8)] != list(range(max(1, v - 8), v + 1)):
            fail(f"{s}: versions {[e.version for e in evs]} for version {v}")
        if evs[-1].data["i"] != evs[-1].data["n"] - 1:
            fail(f"{s}: read ends inside batch {evs[-1].data['b']}")
        back = list(es.read(s, backwards=True, limit=3))
        if back and back[0].data["i"] != back[0].data["n"] - 1:
            fail(f"{s}: newest event {back[0].version} is not the end of its batch")

es = EventStore(path, create=False)
while True:
    done = os.path.exists(stop_file)
    if mode == "fresh":  # a new handle (new caches) for every poll
        es.close()
        es = EventStore(path, create=False)
    poll(es)
    if done:
        break
es.close()
print(json.dumps({"polls": polls, "last": last, "violations": bad}))
"""



@pytest.mark.parametrize("mode", [
    "long",  # one handle, polled over and over
    # a new handle per poll lists log/ while the writer rolls segments (the
    # listing race of test_a_segment_missed_by_a_racing_listdir)
    "fresh",
])
def test_readers_never_see_a_gap_or_part_of_a_batch(tmp_path, mode):
    path = tmp_path / "store"
    stop = tmp_path / "writer-done"
    seconds = 8.0 if LONG else 2.5
    EventStore(path).close()
    writer = spawn(BATCH_WRITER, path, seconds, 7)
    readers = [spawn(READER, path, mode, stop) for _ in range(2)]
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err.decode()
    stop.touch()
    batches = int(out)
    with EventStore(path) as es:
        head = es.head()
        events = list(es.read_all())
        check_streams_agree(es, check_dense(events))
    sizes = Counter(e.data["b"] for e in events)
    assert len(sizes) == batches
    assert verify(path, settle=0).ok
    for r in readers:
        out, err = r.communicate(timeout=60)
        assert r.returncode == 0, err.decode()
        (summary,) = json_lines(out)
        assert summary["violations"] == [], summary
        assert summary["last"] == head  # it saw everything, in the end
        assert summary["polls"] >= 20, summary  # it really raced the writer



def test_a_segment_missed_by_a_racing_listdir(tmp_path, monkeypatch):
    """What a reader's listing of log/ may return while the writer rolls two
    segments during it: the newer one, not the older.  A second listing (and
    any later one) sees both."""
    path = tmp_path / "store"
    with EventStore(path, sync=False, segment_bytes=200) as es:
        for i in range(12):
            es.append(f"s{i % 2}", [NewEvent("T", {"i": i, "pad": "x" * 50})])
    logdir = os.path.join(str(path), "log")
    segs = sorted(f for f in os.listdir(logdir) if f.endswith(".log"))
    assert len(segs) >= 4
    hidden = segs[-2]
    real_listdir = os.listdir
    calls = []

    def racing_listdir(d="."):
        names = real_listdir(d)
        if os.path.abspath(d) == os.path.abspath(logdir) and not calls:
            calls.append(d)
            names = [n for n in names if n != hidden]
        return names

    monkeypatch.setattr(os, "listdir", racing_listdir)
    with EventStore(path, create=False) as es:
        got = [e.position for e in es.read_all()]
    assert calls, "the reader never listed log/"
    assert got == list(range(1, 13))
