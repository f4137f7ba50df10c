"""Torture: nothing outside the store is ever read or written (issue 6).

A *sentinel* directory beside the store (files, a subdirectory, a decoy
store layout) must keep its exact contents and mtimes whatever is thrown at
the store: hostile stream ids, hostile checkpoint and reducer names,
symlinks planted inside the store (stream dir, segment, log segment,
checkpoint file, lock file, snapshots dir) pointing into the sentinel.
Files the store creates honour the umask and are never world-writable.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import unicodedata

import pytest

from conftest import cli_env, ndjson, run_cli
from evstore import EventStore
from evstore.features.checkpoints import CheckpointStore
from evstore.errors import CorruptStore, EvstoreError, UsageError
from evstore.ops import verify
from evstore.features.snapshots import SnapshotStore
from evstore.disk.streamdir import stream_dir

HOSTILE = ["../x", "a/b", ".", "..", "../../sentinel/f", "/etc/passwd", "CON", "con", "NUL",
           "%2e%2e", "..\\x", "a\\b", "~", "~$HOME", "*", "x" * 200, "é" * 100,
           unicodedata.normalize("NFC", "Å"), unicodedata.normalize("NFD", "Å"),
           "\u212b",  # ANGSTROM SIGN, NFC-normalises to Å
           "Straße", "STRASSE", "strasse", " ", "-rf", "--all", "streams", "log", "evstore.json"]


def snapshot_tree(path):
    """(kind, bytes or target, mtime_ns) of every entry under ``path``."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            if os.path.islink(p):
                out[p] = ("link", os.readlink(p), st.st_mtime_ns)
            elif os.path.isdir(p):
                out[p] = ("dir", None, st.st_mtime_ns)
            else:
                with open(p, "rb") as f:
                    out[p] = ("file", f.read(), st.st_mtime_ns)
    return out


@pytest.fixture
def sentinel(tmp_path):
    s = tmp_path / "sentinel"
    (s / "sub").mkdir(parents=True)
    (s / "f").write_bytes(b"do not touch\n")
    (s / "x").write_bytes(b"x\n")
    (s / "sub" / "g").write_bytes(b"g\n")
    return s


def check_untouched(sentinel, before, tmp_path, allowed=("store", "sentinel")):
    after = snapshot_tree(sentinel)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, f"outside the store changed: {changed}"
    extra = sorted(set(os.listdir(tmp_path)) - set(allowed))
    assert not extra, f"created beside the store: {extra}"


def test_hostile_stream_ids(tmp_path, sentinel, monkeypatch):
    monkeypatch.chdir(sentinel / "sub")  # relative paths would land here
    before = snapshot_tree(sentinel)
    store = tmp_path / "store"
    with EventStore(store) as es:
        for i, s in enumerate(HOSTILE):
            es.append(s, [{"type": "T", "data": {"i": i}}], expected_version=0)
        for i, s in enumerate(HOSTILE):  # each distinct: NFC/NFD, case pairs included
            assert [e.data["i"] for e in es.read(s)] == [i], repr(s)
            es.snapshots.save(s, {"i": i}, 1)
            assert es.snapshots.latest(s).state == {"i": i}
        for bad in ["", "a\x00b", "a\nb", "\x7f", "x" * 201, "é" * 101, 5, None]:
            with pytest.raises(UsageError):
                es.append(bad, [{"type": "T"}])
        assert len(list(es.streams())) == len(HOSTILE)
    # and through the CLI (argv, the expected way hostile names reach it)
    for s in ["../y", "a/../../c", "..", "/tmp"]:
        r = run_cli("append", s, "--type", "C", store=store, cwd=sentinel / "sub")
        assert r.returncode == 0, r.stderr
        assert ndjson(run_cli("read", s, store=store).stdout)[-1]["stream"] == s
    r = run_cli("append", "x" * 201, "--type", "C", store=store)
    assert r.returncode == 2 and b"Traceback" not in r.stderr
    assert verify(store, settle=0).ok
    check_untouched(sentinel, before, tmp_path)


def test_hostile_checkpoint_and_reducer_names(tmp_path, sentinel, monkeypatch):
    monkeypatch.chdir(sentinel / "sub")
    before = snapshot_tree(sentinel)
    store = tmp_path / "store"
    with EventStore(store) as es:
        es.append("s", [{"type": "T", "data": {"a": 1}}])
        cps = CheckpointStore(es)
        for i, name in enumerate(HOSTILE):
            cps.save(name, 1)
            assert cps.get(name).position == 1
            assert os.path.realpath(cps.path(name)).startswith(os.path.realpath(store) + os.sep)
        with pytest.raises(UsageError):
            cps.save("a\x00b", 1)
        with es.subscribe(checkpoint="../../sentinel/f", idle_timeout=0.05) as sub:
            list(sub)
    for name in ["../cp", "../../sentinel/x", ".."]:
        r = run_cli("tail", "--all", "-f", "--checkpoint", name, "--idle-timeout", "0.1", store=store)
        assert r.returncode == 0, r.stderr
    for reducer in ["../sentinel/f", "../../sentinel/x:f", "sentinel.f:g", "..", "/etc/passwd:x",
                    "os:system", "CON"]:
        r = run_cli("replay", "s", "--reducer", reducer, store=store)
        assert r.returncode in (1, 2), (reducer, r.returncode, r.stderr)
        assert b"Traceback" not in r.stderr
    check_untouched(sentinel, before, tmp_path)


def test_reducer_file_outside_is_not_written_beside(tmp_path, sentinel):
    """A reducer file given by path is read (that is its point) but nothing
    is written beside it: no __pycache__ in the user's directory."""
    red = sentinel / "sub" / "red.py"
    red.write_text("def f(state, event):\n    return (state or 0) + 1\n")
    store = tmp_path / "store"
    run_cli("append", "s", "--type", "T", store=store).check_returncode()
    before = snapshot_tree(sentinel)
    # as a user runs it: bytecode caches allowed, and kept beside sources
    plain = {"PYTHONPYCACHEPREFIX": "", "PYTHONDONTWRITEBYTECODE": ""}
    r = run_cli("replay", "s", "--reducer", f"{red}:f", store=store, env=plain)
    assert r.returncode == 0, r.stderr
    assert ndjson(r.stdout)[0]["state"] == 1
    r = run_cli("snapshot", "s", "--reducer", f"{red}:f", store=store, env=plain)
    assert r.returncode == 0, r.stderr
    check_untouched(sentinel, before, tmp_path)


# --- symlinks planted inside the store -------------------------------------------------

def _store(tmp_path):
    store = tmp_path / "store"
    with EventStore(store) as es:
        es.append("v", [{"type": "T", "data": {"i": 0}}])
        es.append("w", [{"type": "T", "data": {"i": 0}}])
        es.snapshots.save("v", {"i": 0}, 1)
        CheckpointStore(es).save("cp", 1)
    return store


def _attempt_writes(store):
    """Every kind of write; each may be refused, none may escape."""
    outcomes = []
    for op in ("append-v", "append-w", "snapshot", "checkpoint", "read", "verify"):
        try:
            with EventStore(store, lock_timeout=2) as es:
                if op == "append-v":
                    es.append("v", [{"type": "X"}])
                elif op == "append-w":
                    es.append("w", [{"type": "X"}])
                elif op == "snapshot":
                    es.snapshots.save("v", {"i": 9}, 1)
                elif op == "checkpoint":
                    CheckpointStore(es).save("cp", 2)
                elif op == "read":
                    list(es.read("v")), list(es.read_all())
                else:
                    es.verify()
            outcomes.append((op, "ok"))
        except EvstoreError as e:
            outcomes.append((op, type(e).__name__))
    r = run_cli("append", "v", "--type", "Y", store=store)  # and the CLI
    assert b"Traceback" not in r.stderr
    outcomes.append(("cli-append", r.returncode))
    return outcomes


def _relink(path, target) -> None:
    """Move ``path`` (a file or a directory) out of the store to ``target``
    and leave a symbolic link to it in its place."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.copytree(path, target, symlinks=True)
        shutil.rmtree(path)
    else:
        shutil.copy(path, target)
        os.unlink(path)
    os.symlink(target, path)


def _plant_stream_dir(store, out):
    _relink(stream_dir(str(store / "streams"), "v"), out / "vdir")


def _plant_segment(store, out):
    _relink(sorted(glob.glob(stream_dir(str(store / "streams"), "w") + "/*.seg"))[-1], out / "wseg")


def _plant_log_segment(store, out):
    _relink(sorted(glob.glob(str(store / "log" / "*.log")))[-1], out / "log")


def _plant_checkpoint(store, out):
    _relink(CheckpointStore(EventStore(store)).path("cp"), out / "cp")


def _plant_lock(store, out):
    p = store / "writer.lock"
    (out / "lock").write_bytes(b"sentinel lock\n")
    if os.path.lexists(p):
        os.unlink(p)
    os.symlink(out / "lock", p)


def _plant_snapshots(store, out):
    _relink(SnapshotStore(EventStore(store)).stream_dir("v"), out / "snaps")


def _plant_stream_index(store, out):
    _relink(sorted(glob.glob(stream_dir(str(store / "streams"), "w") + "/*.idx"))[-1], out / "widx")


def _plant_stream_shard(store, out):
    _relink(os.path.dirname(stream_dir(str(store / "streams"), "v")), out / "shard")


def _plant_snapshot_file(store, out):
    _relink(SnapshotStore(EventStore(store)).path("v", 1), out / "snap")


@pytest.mark.parametrize("plant", [
    pytest.param(_plant_stream_dir, id="stream-dir"),
    pytest.param(_plant_segment, id="stream-segment"),
    pytest.param(_plant_log_segment, id="log-segment"),
    pytest.param(_plant_checkpoint, id="checkpoint-file"),
    pytest.param(_plant_lock, id="lock-file"),
    pytest.param(_plant_snapshots, id="snapshot-dir"),
    pytest.param(_plant_stream_index, id="stream-index"),
    pytest.param(_plant_stream_shard, id="stream-shard-dir"),
    pytest.param(_plant_snapshot_file, id="snapshot-file"),
])
def test_symlink_planted_in_the_store(tmp_path, sentinel, plant):
    store = _store(tmp_path)
    plant(store, sentinel)
    before = snapshot_tree(sentinel)
    outcomes = _attempt_writes(store)
    check_untouched(sentinel, before, tmp_path)
    print(outcomes)


def test_symlinked_checkpoint_lock_is_refused(tmp_path, sentinel):
    """A consumer's lock file (written with its pid) is never opened through a link."""
    store = _store(tmp_path)
    cps = CheckpointStore(EventStore(store))
    os.symlink(sentinel / "f", cps.path("cp", ".lock"))
    before = snapshot_tree(sentinel)
    with pytest.raises(CorruptStore, match="symbolic link"):
        with cps.hold("cp"):
            pass
    check_untouched(sentinel, before, tmp_path)


def test_symlinked_stream_segment_is_refused_with_its_path(tmp_path, sentinel):
    store = _store(tmp_path)
    _plant_segment(store, sentinel)
    with EventStore(store) as es, pytest.raises(CorruptStore) as e:
        es.append("w", [{"type": "X"}])
    assert ".seg is a symbolic link" in str(e.value)
    assert str(store) in str(e.value)


# --- umask and modes -------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_created_files_honour_the_umask(tmp_path, umask):
    store = tmp_path / "store"
    env = cli_env(store)

    def cli(*args, input=b""):
        return subprocess.run([sys.executable, "-m", "evstore", *args], input=input,
                              capture_output=True, env=env, umask=umask, timeout=60)

    steps = [
        cli("append", "s", "--type", "T", "--data", '{"a": 1}'),
        cli("append", "t", input=b'{"type": "A"}\n{"type": "B"}\n'),
        cli("snapshot", "s"),
        cli("tail", "--all", "-f", "--checkpoint", "c", "--idle-timeout", "0.1"),
        cli("config", "snapshot-every", "2"),
        cli("append", "s", "--type", "T"),
        cli("verify"),
        cli("repair"),
    ]
    code = ("import sys; from evstore import EventStore; "
            "es = EventStore(sys.argv[1], segment_bytes=200); "
            "[es.append('r%d' % (i % 3), [{'type': 'T', 'data': {'p': 'x' * 90}}]) for i in range(12)]; "
            "es.snapshots.save('r0', {}, 1); es.close()")
    steps.append(subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True,
                                env=env, umask=umask, timeout=60))
    for r in steps[:4] + steps[5:7] + steps[8:]:
        assert r.returncode == 0, r.stderr
    seen = 0
    for root, dirs, files in os.walk(tmp_path):
        for name in dirs + files:
            p = os.path.join(root, name)
            mode = os.lstat(p).st_mode & 0o7777
            seen += 1
            assert not mode & 0o002, f"world-writable: {p} {oct(mode)}"
            assert not mode & umask, f"{p}: mode {oct(mode)} ignores umask {oct(umask)}"
    assert seen >= 10
