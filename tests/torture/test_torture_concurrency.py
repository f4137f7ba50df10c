"""Torture: many processes x threads on overlapping streams (issue 6).

Every worker thread (several processes, several threads each sharing one
EventStore handle) mixes appends with every expected-version kind (exact --
right or deliberately stale/ahead --, any, no-stream, exists), reads and
snapshot saves on a few shared streams; one thread per process follows $all
with a subscription.  Each attempted append is logged with its wall-clock
interval [ts, te] (µs, the clock recorded_at uses) and its outcome.

The final log is the linearization: an event's ``recorded_at`` is taken under
the writer lock (max(now, previous)), so the stream's version at time t is the
number of its events recorded at or before t.  Checked:

* each successful exact / no-stream append sits right after ``expected``
  (first version == expected + 1) and was committed inside its call;
* each conflict was legitimate: the reported current version differs from
  the expected one and is a version the stream really had during the call,
  and none of the batch's events were written;
* exists succeeded only on a non-empty stream, failed only on an empty one;
* nothing lost or doubled, positions dense, versions contiguous; followers
  and readers saw only dense, ordered, whole batches; snapshots all load.

Bounded to a few seconds (EVSTORE_TORTURE=long: a minute of work).
"""
from __future__ import annotations

import time
from bisect import bisect_right

import pytest

from core_helpers import LONG, check_dense, check_streams_agree, json_lines, spawn
from evstore import EventStore
from evstore.ops import verify

EPS = 2000  # µs of tolerance for the clock, always in favour of legitimacy

WORKER = r"""
import json, random, sys, threading, time, uuid
from evstore import ANY, NO_STREAM, STREAM_EXISTS, EventStore, NewEvent
from evstore.errors import WrongExpectedVersion, StreamNotFound

path, wid, seconds, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
es = EventStore(path, segment_bytes=3000, sync=False)
now = lambda: time.time_ns() // 1000
log, bad, lock = [], [], threading.Lock()
stop = threading.Event()

def worker(tid):
    rnd = random.Random(wid * 100 + tid)
    n = 0
    while not stop.is_set():
        op = rnd.random()
        if op < 0.12:  # a reader: contiguous versions, whole batches
            s = f"s{rnd.randrange(3)}"
            try:
                evs = list(es.read(s))
            except StreamNotFound:
                continue
            if [e.version for e in evs] != list(range(1, len(evs) + 1)):
                bad.append(f"read {s}: versions not contiguous")
            if evs and evs[-1].data["i"] != evs[-1].data["n"] - 1:
                bad.append(f"read {s}: ends inside a batch")
            continue
        if op < 0.18:  # a snapshot save at a version that exists
            s = f"s{rnd.randrange(3)}"
            v = es.version(s)
            if v:
                es.snapshots.save(s, {"v": v, "w": wid}, rnd.randint(1, v))
            continue
        k = rnd.randint(1, 4)
        oid = f"{wid}-{tid}-{n}"
        n += 1
        ids = [str(uuid.uuid4()) for _ in range(k)]
        evs = [NewEvent("T", {"o": oid, "i": i, "n": k}, {}, ids[i]) for i in range(k)]
        kind = rnd.choice(["exact", "exact", "exact", "any", "no-stream", "exists"])
        if kind == "no-stream":
            s = f"n{rnd.randrange(12)}"  # each is created once: the rest conflict
            expected = NO_STREAM
        elif kind == "exists":
            s = rnd.choice(["s0", "s1", "s2", f"x{rnd.randrange(12)}"])
            expected = STREAM_EXISTS
        elif kind == "any":
            s, expected = rnd.choice(["s0", "s1", "s2", f"x{rnd.randrange(12)}"]), ANY
        else:
            s = f"s{rnd.randrange(3)}"
            expected = max(0, es.version(s) + rnd.choice([0, 0, 0, 0, -1, 1]))
        rec = {"o": oid, "kind": kind, "stream": s, "expected": expected, "ids": ids}
        rec["ts"] = now()
        try:
            r = es.append(s, evs, expected_version=expected)
            rec["te"] = now()
            rec.update(ok=True, version=r.version, position=r.position, count=r.count)
        except WrongExpectedVersion as e:
            rec["te"] = now()
            rec.update(ok=False, current=e.current)
        with lock:
            log.append(rec)

def follower():
    last = 0
    sub = es.subscribe(from_position=1, idle_timeout=0.5)
    expect_i = 0
    for e in sub:
        if e.position != last + 1:
            bad.append(f"follower: {e.position} after {last}")
        if e.data["i"] != expect_i:
            bad.append(f"follower: batch {e.data['o']} entered at event {e.data['i']}")
        expect_i = 0 if e.data["i"] == e.data["n"] - 1 else e.data["i"] + 1
        last = e.position
        if stop.is_set() and last >= es.head():
            break
    sub.close()
    with lock:
        log.append({"follower": last})

time.sleep(max(0.0, start - time.time()))
threads = [threading.Thread(target=worker, args=(t,)) for t in range(3)]
threads.append(threading.Thread(target=follower))
for t in threads:
    t.start()
time.sleep(seconds)
stop.set()
for t in threads:
    t.join()
es.close()
for rec in log:
    print(json.dumps(rec))
print(json.dumps({"bad": bad}))
"""


@pytest.mark.slow
def test_linearizable_version_checks(tmp_path):
    path = tmp_path / "store"
    EventStore(path).close()
    seconds = 60 if LONG else 3
    start = time.time() + 1.0
    procs = [spawn(WORKER, path, w, seconds, start) for w in range(4)]
    recs, bad = [], []
    for p in procs:
        out, err = p.communicate(timeout=seconds + 120)
        assert p.returncode == 0, err.decode()[-3000:]
        for line in json_lines(out):
            if "bad" in line:
                bad += line["bad"]
            elif "o" in line:
                recs.append(line)
    assert not bad, bad[:20]

    with EventStore(path) as es:
        events = list(es.read_all())
        by_stream = check_dense(events)
        check_streams_agree(es, by_stream)
        for s in ("s0", "s1", "s2"):
            for v in es.snapshots.versions(s):
                assert es.snapshots.load(s, v).version == v
    assert verify(path, settle=0).ok

    by_id = {e.id: e for e in events}
    assert len(by_id) == len(events), "an event id twice"
    ok_ids = {i for r in recs if r["ok"] for i in r["ids"]}
    assert set(by_id) == ok_ids, "lost events, or events of a failed append"
    # commit times per stream: version v was current from times[s][v-1]
    times = {s: [int(e.recorded_at.timestamp() * 1_000_000 + 0.5) for e in evs]
             for s, evs in by_stream.items()}

    def version_at(s, t):
        return bisect_right(times.get(s, []), t)

    counts = {}
    for r in recs:
        s, ts, te = r["stream"], r["ts"], r["te"]
        kind = r["kind"]
        key = (kind, r["ok"])
        counts[key] = counts.get(key, 0) + 1
        lo, hi = version_at(s, ts - EPS), version_at(s, te + EPS)
        if r["ok"]:
            evs = [by_id[i] for i in r["ids"]]
            first = evs[0].version
            assert [e.version for e in evs] == list(range(first, first + len(evs)))
            assert (evs[-1].version, evs[-1].position) == (r["version"], r["position"]), r
            assert ts - EPS <= times[s][first - 1] <= te + EPS, f"committed outside its call: {r}"
            if kind == "exact":
                assert first == r["expected"] + 1, f"exact append not right after expected: {r}"
            elif kind == "no-stream":
                assert first == 1, r
            elif kind == "exists":
                assert first >= 2, f"'exists' succeeded on an empty stream: {r}"
        else:
            assert kind != "any", r
            assert not any(i in by_id for i in r["ids"]), f"a conflict wrote events: {r}"
            exp = {"exact": r["expected"], "no-stream": 0}.get(kind)
            cur = r["current"]
            assert lo <= cur <= hi, f"reported current {cur} is not a version of the call's time ({lo}..{hi}): {r}"
            if kind == "exists":
                assert cur == 0 and lo == 0, f"illegitimate 'exists' conflict: {r}"
            else:
                assert cur != exp, r
                assert not (lo == exp == hi), f"illegitimate conflict: {r}"
    exact_ok = counts.get(("exact", True), 0)
    exact_conflicts = counts.get(("exact", False), 0)
    assert exact_ok > 50 and exact_conflicts > 20, counts  # the mix really happened
    assert counts.get(("no-stream", False), 0) > 0 and counts.get(("exists", False), 0) > 0, counts
    print(f"{len(recs)} appends, {len(events)} events, outcomes {counts}")
