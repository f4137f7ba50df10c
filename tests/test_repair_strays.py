"""Stray segments: a segment file under a name that does not match what it
holds (copied or renamed by hand), in the commit log and in stream logs.

Found by tests/test_damage.py::test_random_damage: ``log/81.log`` copied to
``log/2.log`` plus one flipped byte in a stream segment made repair walk the
stray before segment 41, call 41..80 a gap, cut the store at position 53 and
take 58 intact events out.  A stray is removed (and reported); the real
segments' events all stay.
"""
from __future__ import annotations

import glob
import os
import shutil

import pytest

from evstore import EventStore
from evstore.ops import repair, verify
from test_damage import build, locate

LOG = "log/{:016d}.log"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = build(tmp_path_factory.mktemp("strays") / "store")
    with EventStore(path) as es:
        events = [e.to_dict() for e in es.read_all()]
    assert len(events) == 111
    # the damage below relies on this layout
    assert sorted(os.listdir(os.path.join(path, "log"))) == [
        f"{n:016d}.{ext}" for n in (1, 41, 81) for ext in ("idx", "log")]
    return path, events


@pytest.fixture
def store(pristine, tmp_path):
    path = str(tmp_path / "store")
    shutil.copytree(pristine[0], path)
    return path


def flip(path, offset, xor=0x01):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ xor]))


def flip_copies(store, position, kinds=("log", "streams")):
    """Flip a byte in the middle of ``position``'s frame (log) and/or record (streams)."""
    where, _ids = locate(store)
    for rel, a, b in where[position]:
        if rel.split(os.sep)[0] in kinds and "0000000000000002" not in rel:
            flip(os.path.join(store, rel), (a + b) // 2)


def stream_seg(store, stream_dir_prefix="40"):
    return sorted(glob.glob(os.path.join(store, "streams", stream_dir_prefix, "*",
                                         "0000000000000001.seg")))[0]


def check_all_kept(store, events, report):
    assert report.after.ok, [str(p) for p in report.after.problems]
    assert verify(store).ok
    assert report.removed_events == 0 and not report.lost
    with EventStore(store) as es:
        assert [e.to_dict() for e in es.read_all()] == events
        for stream in {e["stream"] for e in events}:
            assert [e.to_dict() for e in es.read(stream)] == \
                [e for e in events if e["stream"] == stream]
    assert sorted(n for n in os.listdir(os.path.join(store, "log")) if n.endswith(".log")) == \
        [f"{n:016d}.log" for n in (1, 41, 81)]
    again = repair(store)
    assert again.before.ok and not again.actions


def test_stray_log_copy_before_the_real_segment(store, pristine):
    """The case hypothesis found: 81.log copied as 2.log, and a flipped byte
    in a stream segment."""
    shutil.copyfile(os.path.join(store, LOG.format(81)), os.path.join(store, LOG.format(2)))
    flip(stream_seg(store), 1476)
    report = verify(store)
    assert not report.ok
    stray = [p for p in report.problems if p.file == LOG.format(2)]
    assert stray and "stray copy" in stray[0].message and "starts with position 81" in \
        stray[0].message
    # the real segments are not blamed for what the stray repeats
    assert not [p for p in report.problems if p.file in (LOG.format(41), LOG.format(81))]
    fixed = repair(store)
    assert any(a.action == "stray" and a.file == LOG.format(2) for a in fixed.actions)
    assert not any(a.action == "cut" for a in fixed.actions)
    check_all_kept(store, pristine[1], fixed)


def test_stray_log_copy_alone(store, pristine):
    shutil.copyfile(os.path.join(store, LOG.format(81)), os.path.join(store, LOG.format(2)))
    check_all_kept(store, pristine[1], repair(store))


def test_stray_log_copy_of_the_first_segment_past_the_end(store, pristine):
    """1.log copied as 777.log, and a hole (both copies of a position
    damaged) later: the stray's events are in the store, not taken out."""
    shutil.copyfile(os.path.join(store, LOG.format(1)), os.path.join(store, LOG.format(777)))
    flip_copies(store, 60)
    fixed = repair(store)
    assert fixed.after.ok
    with EventStore(store) as es:
        head = es.head()
    assert head < 60
    # every intact event after the cut is taken out, once; none of the
    # stray's (positions 1..40, still in the store) is
    import json

    kept = [json.loads(line) for line in open(fixed.events_file, encoding="utf-8")]
    assert sorted(e["position"] for e in kept) == [p for p in range(head + 1, 112) if p != 60]
    assert fixed.removed_events == len(kept)
    assert not os.path.exists(os.path.join(store, LOG.format(777)))


def test_a_damaged_frame_is_filled_from_a_stray_copy(store, pristine):
    """41.log copied as 2.log; then position 54's frame in 41.log *and* its
    stream record are damaged: the stray copy still holds an intact frame of
    it, which repair uses instead of cutting the store."""
    shutil.copyfile(os.path.join(store, LOG.format(41)), os.path.join(store, LOG.format(2)))
    flip_copies(store, 54)
    assert not verify(store).ok
    fixed = repair(store)
    assert any(a.action == "restore" and "0000000000000002.log" in a.message
               for a in fixed.actions)
    check_all_kept(store, pristine[1], fixed)


def test_a_renamed_segment_is_kept_under_its_right_name(store, pristine):
    """41.log renamed (not copied) to 40.log: the only copy of its frames."""
    os.rename(os.path.join(store, LOG.format(41)), os.path.join(store, LOG.format(40)))
    os.unlink(os.path.join(store, "log", f"{41:016d}.idx"))
    report = verify(store)
    assert any(p.file == LOG.format(40) and "misnamed" in p.message for p in report.problems)
    check_all_kept(store, pristine[1], repair(store))


@pytest.mark.parametrize("name", [777, 5])
def test_stray_stream_segment(store, pristine, name):
    """A stream segment copied under another version's name, plus a damaged
    commit-log frame of that stream, so that repair needs the stream copies."""
    seg = stream_seg(store)
    stray = seg.replace("0000000000000001.seg", f"{name:016d}.seg")
    shutil.copyfile(seg, stray)
    flip_copies(store, 54, kinds=("log",))  # position 54 belongs to 'ordér-✓' (streams/40)
    report = verify(store)
    rel = os.path.relpath(stray, store)
    assert any(p.file == rel and "stray copy" in p.message for p in report.problems), \
        [str(p) for p in report.problems]
    fixed = repair(store)
    assert not os.path.exists(stray)
    check_all_kept(store, pristine[1], fixed)
