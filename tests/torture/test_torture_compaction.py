"""Torture: compaction on files, crashed at every step.

A workload appends (durably), deletes and truncates, compacts, and appends
again, in-process under :class:`faultfs.Shim`.  Then the store is rebuilt as
a crash at chosen operations would leave it -- every write kept (a process
killed with SIGKILL: the kernel keeps its pages), or only what was fsynced
(a power cut), or a random mix -- and opened as after a reboot.  What must
hold:

- opening needs no repair, and ``verify`` is clean;
- every event still present is the event that was written at its position
  (nothing renumbered, nothing invented), and the head never goes back;
- every durably acknowledged event that the store's cuts leave readable is
  still there, and readable through its stream too;
- a delete that returned is still in force;
- the store takes new appends; after the whole workload no file of the
  store holds the deleted stream's marker.

By default a sample of the crash points (a few seconds);
``EVSTORE_TORTURE=long`` tries every operation of the compaction.
"""
from __future__ import annotations

import os
import random
import shutil
import sys
import time
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import faultfs  # noqa: E402

import evstore.disk.recovery  # noqa: E402
from evstore import EventStore  # noqa: E402
from evstore.core.forgetting import Forgetting  # noqa: E402
from evstore.core.rules import ANY  # noqa: E402

LONG = os.environ.get("EVSTORE_TORTURE") == "long"
MARKER = "ERASE-ME-5b1d"


def view_of(b):
    return lambda: Forgetting(b.cuts(), b.retention_rules(), time.time_ns() // 1000)


def run(root: str, segment_bytes: int):
    """The workload; returns (shim, events by position (1-based list), marks)."""
    store_dir = os.path.join(root, "store")
    shim = faultfs.Shim(root)
    written = [None]  # index = position
    with shim:
        es = EventStore(store_dir, sync=True, segment_bytes=segment_bytes)
        b = es.backend

        def put(stream, n, pad=0, data=None):
            evs = [{"type": "T", "data": data or {"i": i, "p": "x" * pad},
                    "id": str(uuid.uuid4())} for i in range(n)]
            r = es.append(stream, evs)
            for k, e in enumerate(evs):
                written.append((stream, r.version - n + 1 + k, e["id"]))
            shim.mark("ack", r.position)

        for i in range(8):
            put("a", 1 + i % 3, 20)
            put("x", 2, data={"secret": MARKER})
            put("b", 1, 40)
        b.cut("x", ANY, None, False)
        shim.mark("cut", "x")
        b.cut("a", ANY, 6, False)
        shim.mark("cut", "a")
        shim.mark("compact")
        b.compact(view_of(b))
        shim.mark("compacted")
        put("a", 2)
        put("x", 1)
        es.close()
    return shim, written


def check(crash_dir: str, ops, cut: int, written):
    durable = 0
    cuts_done = set()
    for op in ops[:cut]:
        if op[0] == "mark" and op[1] == "ack":
            durable = op[2]
        if op[0] == "mark" and op[1] == "cut":
            cuts_done.add(op[2])
    store_dir = os.path.join(crash_dir, "store")
    saved = evstore.disk.recovery.current_boot_id
    evstore.disk.recovery.current_boot_id = lambda: "rebooted-" + uuid.uuid4().hex
    try:
        with EventStore(store_dir) as es:
            b = es.backend
            head = b.head()
            assert head >= durable, f"head {head}, {durable} acknowledged"
            present = {}
            for e in b.read_all():
                assert 1 <= e.position < len(written), e
                assert (e.stream, e.version, e.id) == written[e.position], e
                present[e.position] = e
            cuts = b.cuts()
            assert cuts_done <= set(cuts), f"cuts {cuts_done} were acknowledged, {set(cuts)} kept"
            view = Forgetting(cuts, b.retention_rules(), time.time_ns() // 1000)
            versions = {}
            for p in range(1, head + 1):
                stream, v, _id = written[p]
                cur = versions.setdefault(stream, b.version(stream))
                if v >= view.first_version(stream, cur):
                    assert p in present, f"readable event at position {p} ({stream} v{v}) is gone"
            for stream in ("a", "b", "x"):
                first = view.first_version(stream, versions.get(stream, 0))
                want = [written[p][2] for p in range(1, head + 1)
                        if written[p][0] == stream and written[p][1] >= first]
                if want:
                    got = [e.id for e in b.read_stream(stream, first)]
                    assert got == want, stream
            report = es.verify()
            assert report.ok, [str(p) for p in report.problems]
            r = es.append("b", [{"type": "After"}])
            assert r.position == head + 1
        with EventStore(store_dir) as es:
            assert es.head() == head + 1
            report = es.verify()
            assert report.ok, [str(p) for p in report.problems]
    finally:
        evstore.disk.recovery.current_boot_id = saved


def store_holds(directory, needle: bytes) -> list[str]:
    found = []
    for r, _d, fs in os.walk(directory):
        for f in fs:
            with open(os.path.join(r, f), "rb") as fh:
                if needle in fh.read():
                    found.append(os.path.relpath(os.path.join(r, f), directory))
    return found


def torture(tmp_path, segment_bytes, modes, sample, seed=0):
    root = tmp_path / "run"
    root.mkdir()
    shim, written = run(str(root), segment_bytes)
    ops = shim.ops
    start = next(i for i, op in enumerate(ops) if op[0] == "mark" and op[1] == "compact")
    end = next(i for i, op in enumerate(ops) if op[0] == "mark" and op[1] == "compacted")
    points = list(range(start, end + 2)) + [len(ops)]
    rng = random.Random(seed)
    if sample is not None and len(points) > sample:
        points = sorted(rng.sample(points, sample)) + [len(ops)]
    for cut in points:
        mode = rng.choice(modes)
        crash = tmp_path / f"crash-{cut}-{mode}"
        tree = faultfs.crash_image(ops, cut, shim.root_ino, rng, mode,
                                   keep_ns=0.0 if mode == "none" else 0.5)
        faultfs.materialize(tree, str(crash))
        try:
            check(str(crash), ops, cut, written)
        except (AssertionError, Exception) as e:
            raise AssertionError(f"crash after op {cut}/{len(ops)} "
                                 f"({ops[cut - 1] if cut else None!r:.150}), mode {mode}: "
                                 f"{type(e).__name__}: {e}") from e
        shutil.rmtree(crash, ignore_errors=True)
    # the whole workload: nothing of the deleted stream's first events is left
    full = tmp_path / "full"
    faultfs.materialize(faultfs.crash_image(ops, len(ops), shim.root_ino, rng, "all"), str(full))
    assert store_holds(str(full), MARKER.encode()) == []


@pytest.mark.parametrize("segment_bytes", [300, 64 * 1024])
def test_compaction_killed_at_sampled_steps(tmp_path, segment_bytes):
    """SIGKILL (every write kept) at a sample of the compaction's operations."""
    torture(tmp_path, segment_bytes, ("all",), None if LONG else 12)


@pytest.mark.parametrize("seed", [1, 2])
def test_compaction_power_cut_at_sampled_steps(tmp_path, seed):
    """A power cut (only what was fsynced, or a random mix of the rest)."""
    torture(tmp_path, 300, faultfs.MODES, None if LONG else 10, seed)


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="every step of every mode: EVSTORE_TORTURE=long "
                    "(the default run samples them above)")
@pytest.mark.parametrize("mode", faultfs.MODES)
def test_compaction_every_step(tmp_path, mode):
    """Every operation of the compaction, in every mode (long)."""
    torture(tmp_path, 300, (mode,), None)
