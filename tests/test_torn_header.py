"""A power cut that tears a frame's header at a sector boundary.

A device writes a sector whole or not at all, so an append that a power cut
interrupted can leave the piece of its frame on one side of a sector
boundary and zeros on the other, also when the boundary falls inside the
frame's magic or its length field.  That is a torn append (cut by itself
after a reboot), not damage; a frame that was whole and then lost a bit is
still damage.
"""
from __future__ import annotations

import os

import pytest

from evstore.disk.format import LOG_MAGIC, encode_frame
from evstore.disk.frames import SECTOR, torn_by_power_cut

FRAME = encode_frame(LOG_MAGIC, b"\x98" + b"\xa1a" + bytes(range(1, 100)))


def _file(tmp_path, pos: int, frame: bytes) -> int:
    path = tmp_path / "seg"
    path.write_bytes(b"\x01" * pos + frame)
    return os.open(path, os.O_RDONLY)


def _lose(frame: bytes, pos: int, sector: int) -> bytes:
    """``frame`` written at ``pos`` with the piece in file sector ``sector``
    (0: the one holding pos) never landed: zeros."""
    out = bytearray(frame)
    lo = max(sector * SECTOR - pos, 0)
    hi = min((sector + 1) * SECTOR - pos, len(frame))
    out[lo:hi] = bytes(hi - lo)
    return bytes(out)


@pytest.mark.parametrize("pos", [509, 510, 511, 506, 505, 504])
@pytest.mark.parametrize("lost", [0, 1])
def test_a_header_cut_by_a_sector_boundary_is_torn(tmp_path, pos, lost):
    fd = _file(tmp_path, pos, _lose(FRAME, pos, lost))
    try:
        assert torn_by_power_cut(fd, pos, LOG_MAGIC)
    finally:
        os.close(fd)


@pytest.mark.parametrize("pos", [0, 509, 506])
def test_a_whole_frame_with_a_flipped_bit_is_not_torn(tmp_path, pos):
    frame = bytearray(FRAME)
    frame[20] ^= 0x04
    fd = _file(tmp_path, pos, bytes(frame))
    try:
        assert not torn_by_power_cut(fd, pos, LOG_MAGIC)
    finally:
        os.close(fd)
