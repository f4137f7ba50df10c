"""Real damage, driven by hypothesis: flipped bytes in every kind of file,
truncations, deleted indexes, duplicated segments, temp files left behind.

For every damage: either verify reports it, or the store still reads back
exactly; and after repair, verify passes, the store holds a prefix of the
original events, and every event the damage did not destroy in *both* of its
copies (commit-log frame and stream record) is still there -- in the store,
or (after an event that is lost for good) in the quarantine's
removed-events.ndjson.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evstore import EventStore, NewEvent
from evstore.errors import CorruptStore
from evstore.disk.format import LOG_MAGIC, STREAM_MAGIC
from evstore.ops import repair, verify
from evstore.disk.frames import walk
from evstore.disk.heads import batch_head, record_head

from core_helpers import LONG


def build(path):
    with EventStore(path, segment_bytes=3000) as es:
        i = 0
        for b in range(45):
            stream = ["acct-1", "acct-2", "ordér-✓", "x"][b % 4 if b % 7 else 0]
            n = 1 + (b * 5) % 4
            es.append(stream, [NewEvent("Deposited", {"i": i + k, "note": "n" * (b % 9)},
                                        {"by": "test"} if k % 2 else {}) for k in range(n)])
            i += n
        for stream in ("acct-1", "x"):  # snapshots are files of the store too
            es.snapshots.save(stream, {"seen": es.version(stream)}, es.version(stream) - 1)
        try:  # ... and checkpoints (issue 3), when this evstore has them
            from evstore.features.checkpoints import CheckpointStore
        except ImportError:
            pass
        else:
            CheckpointStore(es).save("projector", es.head() // 2)
        from evstore.features import settings
        settings.update(es, snapshot_every=1000)  # settings carry a checksum too
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = build(tmp_path_factory.mktemp("pristine") / "store")
    with EventStore(path) as es:
        events = [e.to_dict() for e in es.read_all()]
    return path, events, locate(path)


def locate(path):
    """position -> [(file, start, end) of its log frame, of its stream record]
    and stream -> its id file."""
    where = {}
    ids = {}
    for root, _d, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            rel = os.path.relpath(p, path)
            if f.endswith(".log"):
                fd = os.open(p, os.O_RDONLY)
                for ok, off, end, x in walk(fd, LOG_MAGIC, os.fstat(fd).st_size):
                    _s, _fv, fp, _us, n, _hl = batch_head(x)
                    for q in range(fp, fp + n):
                        where.setdefault(q, []).append((rel, off, end))
                os.close(fd)
            elif f.endswith(".seg"):
                fd = os.open(p, os.O_RDONLY)
                for ok, off, end, x in walk(fd, STREAM_MAGIC, os.fstat(fd).st_size):
                    where.setdefault(record_head(x)[1], []).append((rel, off, end))
                os.close(fd)
            elif f == "id":
                ids[open(p, encoding="utf-8").read()] = rel
    return where, ids


def store_files(path):
    out = []
    for root, _d, files in os.walk(path):
        for f in sorted(files):
            p = os.path.join(root, f)
            if f != "writer.lock" and os.path.getsize(p) > 0:
                out.append(os.path.relpath(p, path))
    return sorted(out)


# --- damage ----------------------------------------------------------------------

damage_ops = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.floats(0, 1, exclude_max=True),
              st.integers(1, 4), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("delete-index"), st.integers(0, 10**6)),
    st.tuples(st.just("duplicate"), st.integers(0, 10**6), st.integers(2, 400)),
    st.tuples(st.just("temp"), st.sampled_from(["", "log", "streams"])),
)


def apply(path, op, touched):
    """Damage the store; record destroyed byte ranges in ``touched``."""
    files = store_files(path)
    kind = op[0]
    if kind == "flip":
        _k, i, frac, n, xor = op
        rel = files[i % len(files)]
        p = os.path.join(path, rel)
        size = os.path.getsize(p)
        off = int(frac * size)
        n = min(n, size - off)
        with open(p, "r+b") as f:
            f.seek(off)
            data = bytearray(f.read(n))
            for j in range(len(data)):
                data[j] ^= xor
            f.seek(off)
            f.write(data)
        touched.setdefault(rel, []).append((off, off + n))
        return f"flip {n} bytes ^{xor:#x} at {rel}@{off}"
    if kind == "truncate":
        _k, i, frac = op
        rel = files[i % len(files)]
        p = os.path.join(path, rel)
        size = os.path.getsize(p)
        new = int(frac * size)
        os.truncate(p, new)
        touched.setdefault(rel, []).append((new, size))
        return f"truncate {rel} to {new} of {size}"
    if kind == "delete-index":
        idx = [f for f in files if f.endswith(".idx")]
        rel = idx[op[1] % len(idx)]
        os.unlink(os.path.join(path, rel))
        return f"delete {rel}"
    if kind == "duplicate":
        segs = [f for f in files if f.endswith((".log", ".seg"))]
        rel = segs[op[1] % len(segs)]
        d, name = os.path.split(rel)
        new = os.path.join(d, f"{op[2]:016d}{name[16:]}")
        if os.path.exists(os.path.join(path, new)):
            return "duplicate skipped (name taken)"
        shutil.copyfile(os.path.join(path, rel), os.path.join(path, new))
        return f"duplicate {rel} as {new}"
    if kind == "temp":
        with open(os.path.join(path, op[1], ".tmp-evstore.json-123-456"), "wb") as f:
            f.write(b'{"format": "evst')
        return "temp file"
    raise AssertionError(op)


def hit(touched, loc) -> bool:
    rel, a, b = loc
    return any(x < b and a < y for x, y in touched.get(rel, ()))


def destroyed(events, where, ids, touched) -> set:
    """Positions none of whose copies is intact any more."""
    out = set()
    id_hit = {s for s, rel in ids.items() if rel in touched}
    for ev in events:
        p = ev["position"]
        locs = where[p]
        log = [l for l in locs if l[0].startswith("log")]
        rec = [l for l in locs if l[0].startswith("streams")]
        log_gone = all(hit(touched, l) for l in log)
        rec_gone = all(hit(touched, l) for l in rec) or ev["stream"] in id_hit
        if log_gone and rec_gone:
            out.add(p)
    return out


def read_back(path):
    with EventStore(path) as es:
        return [e.to_dict() for e in es.read_all()], {
            s.stream: [e.to_dict() for e in es.read(s.stream)] for s in es.streams()}


def check_damage(pristine, ops):
    src, events, (where, ids) = pristine
    work = tempfile.mkdtemp(prefix="evdamage-")
    try:
        path = os.path.join(work, "store")
        shutil.copytree(src, path)
        touched = {}
        log = [apply(path, op, touched) for op in ops]
        report = verify(path)
        if report.ok:  # harmless damage: the store reads back exactly
            all_, per_stream = read_back(path)
            assert all_ == events, log
            for stream, evs in per_stream.items():
                assert evs == [e for e in events if e["stream"] == stream], log
        try:
            fixed = repair(path)
        except CorruptStore as e:  # a flipped digit can make the marker name a newer format
            meta = json.loads(open(os.path.join(path, "evstore.json"), "rb").read())
            assert meta["format_version"] > 1 and "newer" in str(e), log
            return
        assert fixed.after.ok, (log, [str(p) for p in fixed.after.problems])
        assert verify(path).ok
        after, per_stream = read_back(path)
        k = len(after)
        assert after == events[:k], log
        for stream, evs in per_stream.items():
            assert evs == [e for e in after if e["stream"] == stream], log
        gone = destroyed(events, where, ids, touched)
        kept = {}
        if fixed.events_file and os.path.exists(fixed.events_file):
            for line in open(fixed.events_file, encoding="utf-8"):
                ev = json.loads(line)
                kept[ev["position"]] = ev
        for ev in events[k:]:
            if ev["position"] not in gone:
                assert kept.get(ev["position"]) == ev, (log, ev["position"], k)
        if not gone and "sync-state" not in touched:
            assert k == len(events), (log, k)
        if k < len(events):
            assert fixed.lost or fixed.removed_events, log
        again = repair(path)
        assert again.before.ok and not again.actions, log
    finally:
        shutil.rmtree(work)


@pytest.mark.slow
@settings(max_examples=300 if LONG else 25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(damage_ops, min_size=1, max_size=2))
def test_random_damage(pristine, ops):
    check_damage(pristine, ops)


KINDS = ["evstore.json", "sync-state", "log/*.log", "log/*.idx", "streams/*.seg",
         "streams/*.idx", "streams/*/id", "snapshots/*.snap", "checkpoints/*.json",
         "settings.json"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("frac", [0.0, 0.37, 0.99])
def test_flip_in_every_kind_of_file(pristine, kind, frac):
    src = pristine[0]
    files = store_files(src)
    pick = [i for i, f in enumerate(files) if _matches(f, kind)]
    if not pick and kind.startswith("checkpoints"):
        pytest.skip("this evstore has no checkpoints")
    assert pick, kind
    check_damage(pristine, [("flip", pick[len(pick) // 2], frac, 1, 0x20)])


@pytest.mark.parametrize("kind", KINDS)
def test_truncate_every_kind_of_file(pristine, kind):
    files = store_files(pristine[0])
    pick = [i for i, f in enumerate(files) if _matches(f, kind)]
    if not pick and kind.startswith("checkpoints"):
        pytest.skip("this evstore has no checkpoints")
    check_damage(pristine, [("truncate", pick[0], 0.5)])


def _matches(rel: str, kind: str) -> bool:
    if kind in ("evstore.json", "sync-state", "settings.json"):
        return rel == kind
    if kind == "streams/*/id":
        return rel.startswith("streams") and rel.endswith("/id")
    top, ext = kind.split("/*")
    return rel.startswith(top) and rel.endswith(ext)


def test_both_copies_of_an_event_lost(pristine):
    """A hole that no copy can fill: the store keeps everything before it,
    the intact events after it go to removed-events.ndjson, and the report
    names the lost position."""
    src, events, (where, _ids) = pristine
    p = len(events) // 2
    ops = []
    files = store_files(src)
    for rel, a, b in where[p]:
        size = os.path.getsize(os.path.join(src, rel))
        ops.append(("flip", files.index(rel), (a + b) / 2 / size, 1, 0x01))
    check_damage(pristine, ops)
    work = tempfile.mkdtemp()
    try:
        path = os.path.join(work, "s")
        shutil.copytree(src, path)
        for op in ops:
            apply(path, op, {})
        fixed = repair(path)
        assert [x["positions"] for x in fixed.lost] == [[p, p]]
        # a batch is never restored in part: the store ends before p's batch
        frame = [loc for loc in where[p] if loc[0].startswith("log")][0]
        start = min(q for q, locs in where.items() if frame in locs)
        assert fixed.removed_events == len(events) - start
        with EventStore(path) as es:
            assert es.head() == start - 1
    finally:
        shutil.rmtree(work)
