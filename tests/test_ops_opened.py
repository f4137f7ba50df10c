"""ops.layout.opened: the one way verify and repair open a store file to read.

It opens at the call (so a caller's ``except OSError`` around the call sees
only the open failing, never a read inside the block), never through a
link, and closes the descriptor when the block ends, however it ends.
"""
from __future__ import annotations

import errno
import os

import pytest

from evstore.ops import layout as L


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_opened_reads_and_closes_after_the_block(tmp_path):
    p = tmp_path / "seg"
    p.write_bytes(b"abc")
    with L.opened(str(p)) as fd:
        assert os.pread(fd, 3, 0) == b"abc"
    assert not _is_open(fd)


def test_opened_closes_when_the_block_raises(tmp_path):
    p = tmp_path / "seg"
    p.write_bytes(b"abc")
    with pytest.raises(OSError, match="inside"):
        with L.opened(str(p)) as fd:
            raise OSError("inside the block")
    assert not _is_open(fd)


def test_opened_raises_at_the_call_for_a_missing_file_or_a_link(tmp_path):
    with pytest.raises(FileNotFoundError):
        L.opened(str(tmp_path / "missing"))
    (tmp_path / "real").write_bytes(b"x")
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(OSError) as e:
        L.opened(str(tmp_path / "link"))
    assert e.value.errno == errno.ELOOP
