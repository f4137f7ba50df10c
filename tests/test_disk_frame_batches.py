"""``frames.frame_batches``: iter_frames a buffer at a time (compaction's
walker).  It must give exactly iter_frames' frames, in order, with every
frame checked, and raise the same FrameError at the same offset on damage,
after the frames before it; big frames and frames longer than a buffer come
through walk."""
from __future__ import annotations

import os

import pytest

from evstore.disk import bigframe, frames
from evstore.disk.format import HEADER_SIZE, LOG_MAGIC, TRAILER_SIZE, FrameError, encode_frame


def _file(tmp_path, payloads):
    p = tmp_path / "seg"
    p.write_bytes(b"".join(encode_frame(LOG_MAGIC, x) for x in payloads))
    return p


def _batched(fd, size, chunk):
    out = []
    for buf, base, spans in frames.frame_batches(fd, 0, size, LOG_MAGIC, {}, chunk=chunk):
        for off, end in spans:
            if buf is None:  # a big frame: base is its BigPayload
                out.append((off, base.read_all()))
            else:
                out.append((off, bytes(buf[off - base + HEADER_SIZE:end - base - TRAILER_SIZE])))
    return out


def _plain(fd, size):
    return [(off, p.read_all() if isinstance(p, bigframe.BigPayload) else bytes(p))
            for off, p in frames.iter_frames(fd, 0, size, LOG_MAGIC, {})]


@pytest.mark.parametrize("chunk", [64, 1000, 1 << 20])
def test_same_frames_as_iter_frames(tmp_path, chunk):
    payloads = [bytes([i % 251]) * (i * 37 % 900 + 1) for i in range(300)]
    payloads.insert(150, b"B" * (bigframe.BIG + 10))  # a big frame, checked by walk
    p = _file(tmp_path, payloads)
    fd = os.open(p, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        got = _batched(fd, size, chunk)
        assert got == _plain(fd, size)
        assert [x for _off, x in got] == payloads
    finally:
        os.close(fd)


@pytest.mark.parametrize("where", ["payload", "trailer", "magic"])
def test_damage_raises_at_its_offset_after_the_frames_before(tmp_path, where):
    payloads = [b"x" * 200 for _ in range(50)]
    p = _file(tmp_path, payloads)
    frame = len(encode_frame(LOG_MAGIC, payloads[0]))
    bad = 30 * frame
    at = {"payload": bad + HEADER_SIZE + 5, "trailer": bad + frame - 1, "magic": bad}[where]
    data = bytearray(p.read_bytes())
    data[at] ^= 0x40
    p.write_bytes(bytes(data))
    fd = os.open(p, os.O_RDONLY)
    try:
        seen = []
        with pytest.raises(FrameError) as e:
            for _buf, _base, spans in frames.frame_batches(fd, 0, len(data), LOG_MAGIC, {}):
                seen += [off for off, _end in spans]
        assert e.value.offset == bad
        assert seen == [i * frame for i in range(30)]
        with pytest.raises(FrameError) as e2:
            list(frames.iter_frames(fd, 0, len(data), LOG_MAGIC, {}))
        assert str(e2.value) == str(e.value)
    finally:
        os.close(fd)
