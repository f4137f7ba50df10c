"""A damaged last commit-log frame is not a torn tail: the next writer must
refuse (CorruptStore) rather than cut what may be an acknowledged batch."""
import glob

import pytest

from evstore import CorruptStore, EventStore


def test_flipped_bit_in_last_frame_is_not_cut(store_dir):
    with EventStore(store_dir) as s:
        s.append("a", [{"type": "A", "data": {"i": 1}}])
        s.append("b", [{"type": "B", "data": {"i": 99}}])
    [seg] = glob.glob(str(store_dir / "log" / "*.log"))
    data = bytearray(open(seg, "rb").read())
    data[-8] ^= 0x01  # inside the last frame's payload
    open(seg, "wb").write(bytes(data))
    size = len(data)
    with pytest.raises(CorruptStore):
        with EventStore(store_dir) as s:
            s.append("c", [{"type": "C"}])
    assert len(open(seg, "rb").read()) == size  # nothing was cut


def test_verify_agrees_that_a_flipped_last_frame_is_damage(store_dir):
    """verify must not call harmless what writers refuse to cut; repair
    then restores the batch from its stream-log copy."""
    from evstore.ops import repair, verify

    with EventStore(store_dir) as s:
        s.append("a", [{"type": "A", "data": {"i": 1}}])
        s.append("b", [{"type": "B", "data": {"i": 99}}])
    [seg] = glob.glob(str(store_dir / "log" / "*.log"))
    data = bytearray(open(seg, "rb").read())
    data[-8] ^= 0x01
    open(seg, "wb").write(bytes(data))
    (store_dir / "sync-state").unlink()  # as if the writer died before closing
    report = verify(store_dir)
    assert not report.ok
    assert any("not torn" in p.message for p in report.problems)
    assert repair(store_dir).ok
    with EventStore(store_dir) as s:
        assert [e.data for e in s.read_all()] == [{"i": 1}, {"i": 99}]
    assert verify(store_dir).ok
