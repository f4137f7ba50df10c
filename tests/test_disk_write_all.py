"""disk.segment.write_all: every byte written, however short each os.write is."""
from __future__ import annotations

import os

from evstore.disk import segment


def test_write_all_finishes_after_short_writes(tmp_path, monkeypatch):
    real = os.write
    calls = []

    def short(fd, data):  # at most 3 bytes a call, as a nearly full disk may do
        calls.append(len(data))
        return real(fd, bytes(data[:3]))

    monkeypatch.setattr(os, "write", short)
    p = tmp_path / "f"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT)
    try:
        segment.write_all(fd, b"0123456789")
        segment.write_all(fd, bytearray(b"ab"))
        segment.write_all(fd, b"")
    finally:
        os.close(fd)
    assert p.read_bytes() == b"0123456789ab"
    assert len(calls) == 5  # 4 for ten bytes, 1 for two, none for nothing
