"""Torture: injected I/O errors (ENOSPC, EIO) on write, fsync and fdatasync.

The fault layer is :mod:`faultfs` (in-process for the library; through a
``sitecustomize`` on PYTHONPATH for the CLI).  What must hold:

- the failing call raises an evstore error (StoreIOError; DurabilityError
  after an fsync failure) -- never a bare OSError or another exception;
  the CLI exits 1 ("unexpected error (I/O, …)") with one line on
  stderr, nothing on stdout and no traceback;
- every batch acknowledged before the fault is still there, in order;
- once an fsync has failed, no later append on any handle claims success
  (the ``fsync-failed`` flag) until ``repair`` clears it;
- with the fault gone, the store reopens, is recoverable (verify clean, or
  repair makes it clean) and takes new appends.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

sys.path.insert(0, os.path.dirname(__file__))
import faultfs  # noqa: E402

from evstore import EventStore  # noqa: E402
from evstore.errors import DurabilityError, EvstoreError, StoreIOError  # noqa: E402
from evstore.ops import repair  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
LONG = os.environ.get("EVSTORE_TORTURE") == "long"
PROFILE = settings(max_examples=400 if LONG else 40, deadline=None, derandomize=not LONG,
                   database=None, suppress_health_check=list(HealthCheck))

fault_st = st.fixed_dictionaries({
    "kind": st.sampled_from(["write", "fsync", "fdatasync", "sync"]),
    "nth": st.integers(1, 40),
    "errno": st.sampled_from([errno.ENOSPC, errno.EIO]),
    "sticky": st.booleans(),
    "partial": st.sampled_from([None, 0.3, 0.9]),
})


def _events(tag, n):
    return [{"type": f"T{tag}", "data": {"i": i, "pad": "p" * 50}, "id": str(uuid.uuid4())}
            for i in range(n)]


def _check_after(store_dir, acked, fsync_failed):
    """Fault removed: reopen, keep every acknowledged batch, recover."""
    with EventStore(store_dir) as s:
        seen = [(e.stream, e.id) for e in s.read_all()]
        want = [(stream, e["id"]) for stream, evs in acked for e in evs]
        # acknowledged batches first, in order; at most one unacknowledged
        # batch (the one that failed after its commit frame) may follow
        assert seen[:len(want)] == want, "an acknowledged batch is missing or out of order"
        extra = seen[len(want):]
        assert len(extra) <= 4
        if fsync_failed:
            with pytest.raises(DurabilityError):
                s.append("z", _events("late", 1))
        report = s.verify()
    if not report.ok or fsync_failed:
        rep = repair(store_dir)
        assert rep.ok, rep
    with EventStore(store_dir) as s:
        assert [(e.stream, e.id) for e in s.read_all()][:len(want)] == want
        s.append("z", _events("after", 1))
        assert s.verify().ok


@PROFILE
@given(fault=fault_st, steps=st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 3)),
                                      min_size=1, max_size=10),
       segment_bytes=st.sampled_from([200, 600, 64 * 1024]))
def test_library_io_errors(tmp_path_factory, fault, steps, segment_bytes):
    root = tmp_path_factory.mktemp("io")
    store_dir = str(root / "store")
    with EventStore(store_dir, segment_bytes=segment_bytes) as s:  # created without faults
        s.append("init", _events("init", 1))
    with EventStore(store_dir) as s0:
        acked = [("init", [{"id": e.id} for e in s0.read_all()])]
    shim = faultfs.Shim(root, record=False, faults=[fault])
    fsync_failed = False
    failures = 0
    store = None
    with shim:
        try:
            store = EventStore(store_dir, segment_bytes=segment_bytes)
        except StoreIOError:
            failures += 1
        if store is not None:
            for i, (stream, n) in enumerate(steps):
                evs = _events(i, n)
                fired = len(shim.fired)
                try:
                    store.append(stream, evs)
                except DurabilityError:
                    fsync_failed = True
                    failures += 1
                except StoreIOError:
                    failures += 1
                else:
                    # never a success after an fsync failure
                    assert not fsync_failed, "append acknowledged after an fsync failed"
                    # only the commit log's index, a cache written after the
                    # commit point, may fail under an acknowledged append
                    failed = [f for f in shim.fired[fired:] if not f[3].endswith(".idx")]
                    assert not failed, f"append acknowledged although {failed} failed under it"
                    acked.append((stream, evs))
            try:
                store.close()
            except (EvstoreError, OSError):  # OSError: test_close_raises_bare_oserror
                pass
    if any(k in ("fsync", "fdatasync") for k, *_ in shim.fired):
        # an fsync that failed inside an append must have poisoned the store
        fsync_failed = fsync_failed or os.path.exists(os.path.join(store_dir, "fsync-failed"))
    _check_after(store_dir, acked, fsync_failed)


def test_close_raises_bare_oserror(tmp_path):
    d = str(tmp_path / "s")
    s = EventStore(d)
    s.append("a", _events("x", 1))
    with faultfs.Shim(tmp_path, record=False,
                      faults=[{"kind": "write", "nth": 1, "errno": errno.ENOSPC}]):
        s.close()  # only bounds reboot recovery: must not raise


def test_fsync_failure_poisons_every_handle(tmp_path):
    """After a failed fsync, another handle (another process, in effect)
    must refuse to write too, until repair."""
    d = str(tmp_path / "s")
    with EventStore(d) as s:
        s.append("a", _events("x", 1))
    other = EventStore(d)
    with faultfs.Shim(tmp_path, record=False,
                      faults=[{"kind": "fdatasync", "nth": 1, "errno": errno.EIO}]):
        with EventStore(d) as s, pytest.raises(DurabilityError):
            s.append("a", _events("y", 1))
    with pytest.raises(DurabilityError):
        other.append("a", _events("z", 1))
    other.close()
    with EventStore(d) as s, pytest.raises(DurabilityError):
        s.append("a", _events("z", 1))
    assert repair(d).ok
    with EventStore(d) as s:
        s.append("a", _events("w", 1))
        assert s.verify().ok


def test_check_catches_a_swallowed_fsync_error(tmp_path, monkeypatch):
    """Sanity check of the property itself: a store whose commit-log fsync
    swallowed its error (a sabotaged copy) must fail the library check."""
    import evstore.backends.files.engine as S

    real = S.FileBackend._sync_log

    def swallowing(self, created):
        try:
            real(self, created)
        except DurabilityError:
            self._failed = None
            os.unlink(os.path.join(self._dir, "fsync-failed"))
    monkeypatch.setattr(S.FileBackend, "_sync_log", swallowing)
    with pytest.raises(AssertionError, match="acknowledged although"):
        test_library_io_errors.hypothesis.inner_test(
            tmp_path_factory=_Factory(tmp_path),
            fault={"kind": "fdatasync", "nth": 1, "errno": errno.EIO, "sticky": False,
                   "partial": None},
            steps=[("a", 1), ("a", 1)], segment_bytes=64 * 1024)


class _Factory:
    def __init__(self, base):
        self.base, self.n = base, 0

    def mktemp(self, name):
        self.n += 1
        p = self.base / f"{name}{self.n}"
        p.mkdir()
        return p


def test_shim_faults_fire(tmp_path):
    """The fault layer has teeth: with the fsync seam bypassed the store
    would not see the error (sanity check of the shim itself)."""
    d = str(tmp_path / "s")
    with EventStore(d) as s:
        s.append("a", _events("x", 1))
    shim = faultfs.Shim(tmp_path, record=False,
                        faults=[{"kind": "write", "nth": 1, "errno": errno.ENOSPC}])
    with shim, EventStore(d) as s, pytest.raises(StoreIOError, match="No space"):
        s.append("a", _events("y", 1))
    assert shim.fired and shim.fired[0][2] == errno.ENOSPC


# -- the CLI ---------------------------------------------------------------------------------
def _cli(store, *args, fault=None, input=b""):
    site = store.parent / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import faultfs\nfaultfs.install_from_env()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVSTORE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(HERE), str(ROOT)])
    env["NO_COLOR"] = "1"
    if fault:
        env["EVSTORE_FAULTFS"] = f"{store.parent};{fault}"
    return subprocess.run([sys.executable, "-m", "evstore", "--store", str(store), *args],
                          input=input, capture_output=True, env=env, timeout=60)


@pytest.mark.parametrize("fault", [
    "write:1:ENOSPC", "write:1:EIO:partial=0.5", "write:2:ENOSPC:sticky",
    "fdatasync:1:EIO", "fdatasync:1:ENOSPC", "fsync:1:EIO", "sync:2:EIO:sticky",
])
def test_cli_io_errors(tmp_path, fault):
    store = tmp_path / "store"
    r = _cli(store, "append", "s", "--type", "A", "--data", '{"n": 1}')
    assert r.returncode == 0, r.stderr
    r = _cli(store, "append", "s", input=b'{"type": "B"}\n{"type": "C"}\n', fault=fault)
    err = r.stderr.decode()
    if r.returncode == 0:
        # the fault did not hit this command (e.g. no directory fsync needed)
        assert "fsync" in fault, (fault, err)
    else:
        assert r.returncode == 1, (r.returncode, err)
        assert r.stdout == b""
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
    # a failed fsync of the commit log poisons the store (the fsync-failed
    # flag); fsyncs of sync-state and of directories do not (see the report)
    failed_sync = (store / "fsync-failed").exists()
    if failed_sync:
        assert r.returncode == 1
    # the acknowledged event survives; the store is readable without the fault
    r2 = _cli(store, "read", "s")
    assert r2.returncode == 0, r2.stderr
    types = [line for line in r2.stdout.decode().splitlines() if line]
    assert '"A"' in types[0]
    if failed_sync:
        r3 = _cli(store, "append", "s", "--type", "D")
        assert r3.returncode == 1 and b"Traceback" not in r3.stderr, r3.stderr
        assert r3.stdout == b""
    r4 = _cli(store, "verify")
    if r4.returncode != 0:
        assert r4.returncode == 6, r4.stderr
        r5 = _cli(store, "repair")
        assert r5.returncode == 0, r5.stderr
    r6 = _cli(store, "append", "s", "--type", "E")
    assert r6.returncode == 0, r6.stderr
    assert _cli(store, "verify").returncode == 0
