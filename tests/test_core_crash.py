"""Crashes and torn tails (issue 2, the core proof).

1. A durable writer process is SIGKILLed at random moments, many times; after
   each kill the store holds every acknowledged batch where the ack said,
   each batch all or nothing, positions dense, versions contiguous, verify
   passes, the batch that was in flight can be retried (idempotently: with
   its ids and expected version it is written once, whether or not it made
   it), and writing goes on.
2. Torn tails made by hand: the last commit-log frame cut at every byte
   offset, or its bytes flipped, and the last stream record cut: the store
   either holds the previous batch (and accepts the next) or raises
   CorruptStore -- it never hands back garbage or part of a batch.

(tests/test_damage.py covers random damage anywhere plus repair;
tests/test_tail_damage_not_cut.py that a flipped last frame is not cut.)
"""
from __future__ import annotations

import os
import random
import shutil

import pytest

from core_helpers import (
    LONG, check_acked, check_dense, check_streams_agree, json_lines, kill_after_ready, spawn,
)
from evstore import EventStore, NewEvent
from evstore.errors import CorruptStore, StreamNotFound
from evstore.disk.format import HEADER
from evstore.ops import verify

WRITER = r"""
import json, random, sys, uuid
from evstore import EventStore, NewEvent
path, b, seed, seg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
out = sys.stdout
def say(obj):
    out.write(json.dumps(obj) + "\n")
    out.flush()
with EventStore(path, sync=True, segment_bytes=seg) as es:
    say({"ready": True})
    while True:
        k = rnd.choice([1, 1, 2, 3, 5, 8])
        stream = f"c{rnd.randrange(4)}"
        ids = [str(uuid.uuid4()) for _ in range(k)]
        expected = es.version(stream)
        say({"try": b, "stream": stream, "expected": expected, "ids": ids})
        r = es.append(stream, [NewEvent("T", {"b": b, "i": i, "n": k, "pad": "z" * rnd.randrange(150)},
                                        {"k": k}, ids[i]) for i in range(k)],
                      expected_version=expected)
        say({"ack": b, "version": r.version, "position": r.position, "count": r.count})
        b += 1
"""


def check_batches(events, tries, acked):
    """Every batch present is whole and contiguous; acked ones where acked."""
    by_b: dict[int, list] = {}
    for e in events:
        by_b.setdefault(e.data["b"], []).append(e)
    for b, evs in by_b.items():
        assert b in tries, f"batch {b} was never appended"
        t = tries[b]
        k = len(t["ids"])
        assert [e.id for e in evs] == t["ids"], f"batch {b}: part of it, or a copy"
        assert [e.data["i"] for e in evs] == list(range(k))
        assert len({e.stream for e in evs}) == 1 and evs[0].stream == t["stream"]
        assert [e.position for e in evs] == list(range(evs[0].position, evs[0].position + k))
        assert evs[0].version == t["expected"] + 1, f"batch {b} not at its expected version"
        assert len({e.recorded_at for e in evs}) == 1
    check_acked(by_b, acked)
    return by_b


def test_verify_after_a_kill_between_frame_and_index(tmp_path):
    """The state a SIGKILL leaves between the commit frame and its index
    entries (seen in test_sigkill_at_random_moments): verify must pass."""
    path = tmp_path / "store"
    with EventStore(path, sync=False) as es:
        es.append("a", [NewEvent("T", {"i": i}) for i in range(3)])
        es.append("b", [NewEvent("T", {"i": i}) for i in range(2)])
    idx = last_file(path / "log", ".idx")
    os.truncate(idx, os.path.getsize(idx) - 2 * 8)  # "b" committed, not indexed
    with EventStore(path) as es:  # readers are fine with it
        assert [e.position for e in es.read_all()] == [1, 2, 3, 4, 5]
    report = verify(path, settle=0)
    assert report.ok, [str(p) for p in report.problems]


def test_short_log_index_is_rebuilt_before_the_writer_rolls(tmp_path):
    path = tmp_path / "store"
    with EventStore(path, sync=False, segment_bytes=200) as es:
        es.append("a", [NewEvent("T", {"pad": "x" * 100})])
        es.append("b", [NewEvent("T", {"i": i}) for i in range(3)])
    idx = last_file(path / "log", ".idx")
    assert os.path.getsize(path / "log" / (os.path.basename(idx)[:-4] + ".log")) >= 200
    os.truncate(idx, os.path.getsize(idx) - 3 * 8)  # killed before the index entries
    with EventStore(path, sync=False, segment_bytes=200) as es:
        r = es.append("a", [NewEvent("T", {})])  # rolls to a new segment
        assert r.position == 5
        assert len({f for f in os.listdir(path / "log") if f.endswith(".log")}) == 2
    report = verify(path, settle=0)
    assert report.ok, [str(p) for p in report.problems]


@pytest.mark.parametrize("segments", [
    "fixed",
    # every writer its own segment_bytes: a kill between the open(O_CREAT) of
    # a new stream segment and its first write leaves an empty segment that
    # a writer with larger segments must cut (test_empty_stream_segment_...)
    "varying",
])
def test_sigkill_at_random_moments(tmp_path, segments):
    """SIGKILL a durable writer many times.  ``varying``: every writer process
    has its own segment_bytes (the CLI's default differs from an app's)."""
    path = tmp_path / "store"
    rnd = random.Random(int(os.environ.get("EVSTORE_CRASH_SEED", "2")))
    fixed_seg = rnd.choice([400, 900, 2000])
    iterations = 200 if LONG else 10
    tries: dict[int, dict] = {}
    acked: dict[int, dict] = {}
    next_b = 0
    in_flight_seen = {"present": 0, "absent": 0}
    for it in range(iterations):
        seg = rnd.choice([400, 900, 2000, 6000]) if segments == "varying" else fixed_seg
        p = spawn(WRITER, path, next_b, rnd.randrange(10**9), seg)
        lines = json_lines(kill_after_ready(p, rnd.uniform(0, 0.06)))
        for line in lines:
            if "try" in line:
                tries[line["try"]] = line
            elif "ack" in line:
                acked[line["ack"]] = line
        pending = [b for b in tries if b not in acked]
        assert len(pending) <= 1, pending  # one writer: at most one append in flight

        report = verify(path, settle=0)  # before any writer cut a torn tail
        problems = [str(x) for x in report.problems]
        assert not problems, (it, problems)
        with EventStore(path, segment_bytes=seg) as es:
            events = list(es.read_all())
            by_stream = check_dense(events)
            check_streams_agree(es, by_stream)
            by_b = check_batches(events, tries, acked)
            assert set(by_b) <= set(tries)
            assert set(by_b) - set(acked) <= set(pending)
            # retry the batch in flight, as a client that saw no answer would
            for b in pending:
                t = tries[b]
                was = by_b.get(b)
                in_flight_seen["present" if was else "absent"] += 1
                k = len(t["ids"])
                r = es.append(t["stream"], [NewEvent("T", {"b": b, "i": i, "n": k, "pad": "retry"},
                                                     {"k": k}, t["ids"][i]) for i in range(k)],
                              expected_version=t["expected"])
                if was:  # it had committed: nothing written, same place reported
                    assert (r.version, r.position) == (was[-1].version, was[-1].position)
                    assert es.head() == len(events)
                else:
                    assert es.head() == len(events) + k
                acked[b] = {"ack": b, "version": r.version, "position": r.position, "count": k}
            events = list(es.read_all())
            check_dense(events)
            check_batches(events, tries, acked)
            assert set(e.data["b"] for e in events) == set(acked)
        if pending:  # the retry went through the writer lock
            report = verify(path, settle=0)
            problems = [str(x) for x in report.problems]
            assert not problems, (it, problems)
        next_b = max(tries, default=-1) + 1
    with EventStore(path) as es:  # it still takes appends
        r = es.append("after", [NewEvent("T", {"b": -1})])
        assert r.position == sum(a["count"] for a in acked.values()) + 1
    report = verify(path, settle=0)
    problems = [str(x) for x in report.problems]
    assert not problems, problems
    print("in-flight batches at the kill:", in_flight_seen, "acked:", len(acked))


def test_empty_stream_segment_left_by_a_kill(tmp_path):
    """The state a SIGKILL leaves between SegmentWriter's open(O_CREAT) of the
    stream's next segment and its first write (seen in
    test_sigkill_at_random_moments[varying]); the next writer process uses a
    larger segment_bytes."""
    path = tmp_path / "store"
    with EventStore(path, segment_bytes=300) as es:
        for i in range(6):
            es.append("s", [NewEvent("T", {"i": i, "pad": "p" * 60})])
        v = es.version("s")
    sdir = os.path.dirname(last_file(path / "streams", "id"))
    last_seg = sorted(f for f in os.listdir(sdir) if f.endswith(".seg"))[-1]
    assert os.path.getsize(os.path.join(sdir, last_seg)) >= 300  # the next append rolls
    open(os.path.join(sdir, f"{v + 1:016d}.seg"), "wb").close()  # killed here
    with EventStore(path, segment_bytes=64 << 20) as es:
        es.append("s", [NewEvent("T", {"i": i}) for i in range(3)], expected_version=v)
        assert [e.version for e in es.read("s")] == list(range(1, v + 4))
        assert [e.data["i"] for e in es.read("s", from_version=v + 1)] == [0, 1, 2]
    report = verify(path, settle=0)
    assert report.ok, [str(p) for p in report.problems]


# --- torn tails made by hand -----------------------------------------------------------

def frames(path):
    """[(offset, end)] of the frames in a segment file."""
    data = open(path, "rb").read()
    out, pos = [], 0
    while pos < len(data):
        _magic, n, _crc = HEADER.unpack_from(data, pos)
        out.append((pos, pos + 12 + n + 4))
        pos += 12 + n + 4
    return out


def last_file(directory, suffix):
    return sorted(os.path.join(r, f) for r, _d, fs in os.walk(directory)
                  for f in fs if f.endswith(suffix))[-1]


@pytest.fixture(scope="module")
def crash_image(tmp_path_factory):
    """A store as a SIGKILL right after an acknowledged append leaves it (the
    handle never closed), and its events before and after the last batch."""
    base = tmp_path_factory.mktemp("torn")
    live = base / "live"
    es = EventStore(live, sync=True, segment_bytes=1200)
    for i in range(14):
        es.append(f"s{i % 3}", [NewEvent("T", {"i": i, "j": j, "pad": "é" * (i * 3)})
                                for j in range(1 + i % 3)])
    before = [e.to_dict() for e in es.read_all()]
    es.append("t", [NewEvent("Last", {"j": j, "pad": "x" * 40}) for j in range(3)],
              expected_version=0)
    after = [e.to_dict() for e in es.read_all()]
    image = base / "image"
    shutil.copytree(live, image)  # the files as a crash finds them
    es.close()
    return image, before, after


def outcome(path, before, after):
    """Open a damaged store: it reads either as ``before`` (the last batch
    gone, whole) or ``after``, or refuses with CorruptStore; then a write
    either continues what it reads or is refused with CorruptStore."""
    try:
        with EventStore(path) as es:
            got = [e.to_dict() for e in es.read_all()]
            assert got in (before, after), "garbage or part of a batch in $all"
            streams = {}
            for s in sorted({e["stream"] for e in after}):
                try:
                    streams[s] = [e.to_dict() for e in es.read(s)]
                except StreamNotFound:  # right for "t" when $all lost its batch
                    streams[s] = "StreamNotFound"
                except CorruptStore:  # refusing to read damage is fine
                    streams[s] = "refused"
            for s, evs in streams.items():
                assert evs == [e for e in got if e["stream"] == s] or evs == "refused" or \
                    (evs == "StreamNotFound" and not any(e["stream"] == s for e in got)), \
                    f"stream {s!r} disagrees with $all: part of a batch, or garbage"
    except CorruptStore:
        return "refused"
    try:
        with EventStore(path) as es:
            v = es.version("t")
            r = es.append("t", [NewEvent("Next", {"n": 1})], expected_version=v)
            now = [e.to_dict() for e in es.read_all()]
            for s in {e["stream"] for e in now}:
                assert [e["version"] for e in now if e["stream"] == s] == \
                    list(range(1, 1 + sum(e["stream"] == s for e in now))), s
            assert now[:-1] == got and now[-1]["type"] == "Next"
            assert (r.version, r.position) == (v + 1, len(now))
            assert [e.to_dict() for e in es.read("t")] == [e for e in now if e["stream"] == "t"]
        report = verify(path, settle=0)
        assert report.ok, [str(p) for p in report.problems]
        return "recovered" if got == before else "intact"
    except CorruptStore:
        return "refused-write"


def test_commit_log_cut_at_every_offset_of_the_last_frame(crash_image, tmp_path):
    image, before, after = crash_image
    rel = os.path.relpath(last_file(image / "log", ".log"), image)
    start, end = frames(image / rel)[-1]
    cuts = range(start, end)
    if not LONG:  # the frame's header and end at every offset, its middle sampled
        cuts = sorted(set(range(start, start + 16)) | set(range(end - 8, end)) |
                      set(random.Random(4).sample(range(start, end), min(24, end - start))))
    seen = {}
    for cut in cuts:
        path = tmp_path / f"cut{cut}"
        shutil.copytree(image, path)
        os.truncate(path / rel, cut)
        result = outcome(path, before, after)
        seen[result] = seen.get(result, 0) + 1
        shutil.rmtree(path)
    # a crash leaves a short frame, which is never an acknowledged batch
    # (sync-state does not claim it): the store cuts it and goes on
    assert seen == {"recovered": len(cuts)}, seen


def test_commit_log_last_frame_bytes_flipped(crash_image, tmp_path):
    image, before, after = crash_image
    rel = os.path.relpath(last_file(image / "log", ".log"), image)
    start, end = frames(image / rel)[-1]
    rnd = random.Random(5)
    offsets = sorted(set(range(start, start + 16)) | set(range(end - 8, end)) |
                     set(rnd.sample(range(start, end), min(24, end - start))))
    seen = {}
    for off in offsets:
        path = tmp_path / f"flip{off}"
        shutil.copytree(image, path)
        with open(path / rel, "r+b") as f:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ (1 << (off % 8))]))
        result = outcome(path, before, after)
        seen[result] = seen.get(result, 0) + 1
        shutil.rmtree(path)
    assert "intact" not in seen, seen  # a flipped frame is never read as the batch
    print(seen)


@pytest.mark.parametrize("where", ["inside-last-record", "at-a-record-boundary"])
def test_stream_log_cut_inside_the_last_batch(crash_image, tmp_path, where):
    """The commit log holds the batch; its stream copy lost a tail (damage: no
    process crash does this, stream records are written before the commit).
    Readers must not see part of the batch, and a writer must not take the
    stream's version from the damaged copy and write a version twice."""
    image, before, after = crash_image
    for root, _d, fs in os.walk(image / "streams"):
        if "id" in fs and open(os.path.join(root, "id"), encoding="utf-8").read() == "t":
            sdir = root
    seg = sorted(f for f in os.listdir(sdir) if f.endswith(".seg"))[-1]
    rel = os.path.relpath(os.path.join(sdir, seg), image)
    fr = frames(image / rel)
    assert len(fr) == 3  # the batch of 3 records is alone in its segment
    cut = {"inside-last-record": fr[-1][0] + 5, "at-a-record-boundary": fr[-1][0]}[where]
    path = tmp_path / "store"
    shutil.copytree(image, path)
    os.truncate(path / rel, cut)
    assert outcome(path, before, after) in ("refused", "refused-write", "intact")


def test_stream_log_that_lost_a_whole_committed_batch(crash_image, tmp_path):
    """Damage that drops a stream's last committed batch whole leaves a log
    that ends cleanly at a batch boundary: a writer cannot tell it from an
    intact one without scanning the commit log (docs/FORMAT.md, "What a
    writer checks").  verify finds it, and repair restores it from the
    commit log."""
    from evstore.ops import repair

    image, before, after = crash_image
    for root, _d, fs in os.walk(image / "streams"):
        if "id" in fs and open(os.path.join(root, "id"), encoding="utf-8").read() == "t":
            sdir = root
    seg = sorted(f for f in os.listdir(sdir) if f.endswith(".seg"))[-1]
    path = tmp_path / "store"
    shutil.copytree(image, path)
    os.truncate(path / os.path.relpath(os.path.join(sdir, seg), image), 0)
    report = verify(path, settle=0)
    assert not report.ok
    assert any("t" == p.stream for p in report.problems), [str(p) for p in report.problems]
    repair(path)
    assert verify(path, settle=0).ok
    with EventStore(path) as es:
        assert [e.to_dict() for e in es.read_all()] == after
        assert [e.to_dict() for e in es.read("t")] == [e for e in after if e["stream"] == "t"]
