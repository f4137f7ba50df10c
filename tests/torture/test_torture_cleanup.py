"""Torture: a write that fails leaves nothing half-made behind (issue 12).

Each ENOSPC used to leave an empty ``quarantine/*.bin`` without its
``.json``: what a failed write made is removed before the error goes up.
"""
from __future__ import annotations

import errno
import glob
import os

import pytest

import faultfs
from evstore import EventStore
from evstore.errors import StoreIOError
from evstore.ops import verify
from evstore.ops.quarantine import Quarantine


def _torn_tail(store):
    log = sorted(glob.glob(os.path.join(store, "log", "*.log")))[-1]
    with open(log, "ab") as f:
        f.write(b"EvL1\x00\x00")  # a frame a killed writer began


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_enospc_while_quarantining_a_torn_tail_leaves_no_orphan(tmp_path, nth):
    store = str(tmp_path / "s")
    with EventStore(store) as es:
        es.append("a", [{"type": "T"}])
    _torn_tail(store)
    with faultfs.Shim(tmp_path, record=False,
                      faults=[{"kind": "write", "nth": nth, "errno": errno.ENOSPC}]) as shim:
        try:
            with EventStore(store) as es:
                es.append("a", [{"type": "U"}])
        except StoreIOError:
            pass
    assert shim.fired
    q = os.path.join(store, "quarantine")
    bins = sorted(glob.glob(os.path.join(q, "*.bin")))
    notes = sorted(glob.glob(os.path.join(q, "*.json")))
    assert [b[:-4] for b in bins] == [n[:-5] for n in notes], os.listdir(q)
    with EventStore(store) as es:  # and the next writer, with room, finishes the job
        es.append("a", [{"type": "V"}])
        assert [e.type for e in es.read("a")][-1] == "V"
    bins = glob.glob(os.path.join(q, "*.bin"))
    assert len(bins) == 1 and os.path.getsize(bins[0]) == 6
    assert os.path.exists(bins[0][:-4] + ".json")
    assert verify(store, settle=0).ok


def test_a_repair_quarantine_file_that_cannot_be_written_is_removed(tmp_path):
    store = tmp_path / "s"
    store.mkdir()
    q = Quarantine(str(store), dry_run=False)
    q.keep(str(store / "x"), 0, b"kept", "first")
    with faultfs.Shim(tmp_path, record=False,
                      faults=[{"kind": "write", "nth": 1, "errno": errno.ENOSPC}]):
        with pytest.raises(OSError):
            q.keep(str(store / "y"), 0, b"lost" * 1000, "second")
    assert sorted(os.listdir(q.dir)) == ["0001.bin"] and len(q.entries) == 1
    q.keep(str(store / "z"), 0, b"z", "third")
    assert sorted(os.listdir(q.dir)) == ["0001.bin", "0002.bin"]


def test_two_repair_runs_in_one_second_keep_both_quarantines(tmp_path):
    """Runs of one process within one second used to share a directory, the
    second overwriting the first one's 0001.bin."""
    store = tmp_path / "s"
    store.mkdir()
    q1 = Quarantine(str(store), dry_run=False)
    q1.keep(str(store / "x"), 0, b"first run", "one")
    q2 = Quarantine(str(store), dry_run=False)
    q2.keep(str(store / "y"), 0, b"second run", "two")
    assert q1.dir != q2.dir
    with open(os.path.join(q1.dir, "0001.bin"), "rb") as f:
        assert f.read() == b"first run"
    with open(os.path.join(q2.dir, "0001.bin"), "rb") as f:
        assert f.read() == b"second run"
