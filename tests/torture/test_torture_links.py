"""Torture: a link planted anywhere in a store leads nowhere (issue 12, item 2).

A populated store (streams, snapshots, checkpoints, settings, a quarantine
file) is copied once per case; in each copy one entry -- every file and
directory the store holds, and the names commands create later
(``fsync-failed``, a new stream's directory, a new checkpoint, ...) -- is
replaced by a symbolic link to a target outside the store: a copy of what
was there plus a secret marker (a file's bytes with the marker appended; a
directory's files plus one named with the marker), or nothing at all (a
dangling link, which a writer following it would create).  Then every
command runs against it.  Nothing outside the store may change, and the
marker may never reach stdout or stderr: the store reads only its own,
validated files.  Commands may fail (exit 1, 2, 5 or 6); none may crash.

The commands run in one driver process per case (each in-process, its
stdout and stderr redirected to files), which keeps the default run short;
``EVSTORE_TORTURE=long`` also plants dangling links at every entry.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import cli_env
from core_helpers import LONG
from evstore import EventStore
from evstore.disk import recovery
from evstore.disk.streamdir import stream_dir
from evstore.features.checkpoints import CheckpointStore
from evstore.features.snapshots import SnapshotStore
from test_torture_security import snapshot_tree

SECRET = "SECRET-3c1f9a-must-not-be-printed"

DRIVER = r"""
import json, os, sys
from evstore.cli import main

def commands(work):
    return [
        ["info"], ["info", "--streams"], ["streams"], ["read", "v"], ["read", "--all"],
        ["tail", "v"], ["tail", "--all", "--checkpoint", "cp", "--max-count", "3"],
        ["tail", "--all", "--checkpoint", "cp2", "--max-count", "3"],
        ["checkpoints"], ["config"],
        ["append", "v", "--type", "X", "--no-sync", "--lock-timeout", "2"],
        ["append", "new", "--type", "X", "--no-sync", "--lock-timeout", "2"],
        ["append", "w", "--type", "X", "--no-sync", "--lock-timeout", "2"],
        ["snapshot", "v"], ["snapshot", "w"], ["snapshot", "v", "--show"], ["replay", "v"],
        ["config", "snapshot-every", "3", "--lock-timeout", "2"],
        ["export"], ["import", os.path.join(work, "in.ndjson"), "--lock-timeout", "2"],
        ["verify"], ["repair", "--lock-timeout", "2"], ["verify"],
        ["append", "v", "--type", "Y", "--no-sync", "--lock-timeout", "2"], ["read", "--all"],
    ]

def run(store, work):
    results = []
    for argv in commands(work):
        argv = argv + ["--store", store]
        o, e = os.path.join(work, "o"), os.path.join(work, "e")
        sys.stdout.flush(); sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        fo = os.open(o, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        fe = os.open(e, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fo, 1); os.dup2(fe, 2)
        try:
            try:
                main(argv)
                rc = 0
            except SystemExit as x:
                rc = x.code if isinstance(x.code, int) else (0 if x.code is None else 1)
            except BaseException:
                import traceback; traceback.print_exc()
                rc = "crash"
            sys.stdout.flush(); sys.stderr.flush()
        finally:
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
            for fd in (fo, fe) + saved:
                os.close(fd)
        with open(o, "rb") as f1, open(e, "rb") as f2:
            results.append({"argv": argv[:-2], "rc": rc,
                            "out": f1.read().decode("utf-8", "replace"),
                            "err": f2.read().decode("utf-8", "replace")})
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(results, f)

for case in sys.argv[1:]:
    run(os.path.join(case, "store"), os.path.join(case, "work"))
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A store with every kind of file, and an import file of new events."""
    base = tmp_path_factory.mktemp("template")
    store = base / "store"
    with EventStore(store) as es:
        es.append("v", [{"type": "T", "data": {"i": 1}}, {"type": "T", "data": {"i": 2}}])
        es.append("w", [{"type": "T", "data": {"i": 1}}])
        es.snapshots.save("v", {"i": 2}, 2)
        CheckpointStore(es).save("cp", 1)
        from evstore.features import settings
        settings.update(es, snapshot_every=2)
    recovery.quarantine(str(store), str(store / "log" / "x"), 0, b"cut bytes", "a test")
    with open(store / "log" / "0000000000000001.log", "ab") as f:
        f.write(b"EvL1\x00\x00")  # a torn tail: the first writer cuts it into quarantine/
    imp = base / "in.ndjson"
    imp.write_text(json.dumps({"stream": "imp", "type": "I", "data": {}, "version": 1,
                               "position": 7, "id": "6f1b2b5e-0f5e-4a51-9a3c-8f0e8a3d1c01",
                               "recorded_at": "2026-01-01T00:00:00.000000Z", "metadata": None}) + "\n")
    return base


def _entries(store) -> list[str]:
    out = []
    for root, dirs, files in os.walk(store):
        for name in dirs + files:
            out.append(os.path.relpath(os.path.join(root, name), store))
    return sorted(out)


def _later_names(store) -> list[str]:
    """Names the commands above create."""
    es = EventStore(store, create=False)
    try:
        snaps, cps = SnapshotStore(es), CheckpointStore(es)
        names = ["fsync-failed", stream_dir("streams", "new"), cps.path("cp2"),
                 cps.path("cp2", ".lock"), snaps.stream_dir("w"),
                 os.path.dirname(snaps.stream_dir("new"))]
    finally:
        es.close()
    names = [os.path.relpath(n, store) if os.path.isabs(n) else n for n in names]
    return [n for n in names if not os.path.lexists(os.path.join(store, n))]


def _cases(template):
    store = template / "store"
    cases = [(e, "copy") for e in _entries(store)] + [(n, "secret") for n in _later_names(store)]
    cases += [(n, "dangling") for n in _later_names(store)]
    cases += [("writer.lock", "dangling"), ("quarantine", "dangling"), ("settings.json", "secret")]
    if LONG:
        cases += [(e, "dangling") for e in _entries(store)]
    return cases


def _plant(store, rel, how, outside):
    """Replace ``store/rel`` by a link to ``outside/target``."""
    path = store / rel
    target = outside / "target"
    if how == "copy":
        if path.is_dir():
            shutil.copytree(path, target, symlinks=True)
            (target / f"{SECRET}.snap").write_text(SECRET)
            shutil.rmtree(path)
        else:
            target.write_bytes(path.read_bytes() + f"\n{SECRET}\n".encode())
            path.unlink()
    elif how == "secret":
        target.write_text(f"{SECRET}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
    os.symlink(target, path)


def test_every_planted_link_leads_nowhere(template, tmp_path):
    cases = _cases(template)
    assert len(cases) > 30
    dirs = []
    for n, (rel, how) in enumerate(cases):
        case = tmp_path / f"c{n}"
        (case / "outside").mkdir(parents=True)
        (case / "work").mkdir()
        shutil.copytree(template / "store", case / "store", symlinks=True)
        shutil.copy(template / "in.ndjson", case / "work" / "in.ndjson")
        _plant(case / "store", rel, how, case / "outside")
        dirs.append(case)
    before = [snapshot_tree(case / "outside") for case in dirs]
    # two driver processes, each running every command against half the cases
    drivers = [subprocess.Popen([sys.executable, "-c", DRIVER, *map(str, dirs[k::2])],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
               for k in range(2)]
    for d in drivers:
        out, err = d.communicate(timeout=600)
        assert d.returncode == 0, err.decode()
    failures = []
    for case, (rel, how), tree in zip(dirs, cases, before):
        after = snapshot_tree(case / "outside")
        changed = sorted(p for p in set(tree) | set(after) if tree.get(p) != after.get(p))
        if changed:
            failures.append(f"{rel} ({how}): outside changed: {changed}")
        for res in json.loads((case / "work" / "results.json").read_text()):
            where = f"{rel} ({how}): evstore {' '.join(res['argv'])} -> {res['rc']}"
            if SECRET in res["out"] or SECRET in res["err"]:
                failures.append(f"{where}: printed the secret: {res['out'][:200]!r} "
                                f"{res['err'][:300]!r}")
            if res["rc"] == "crash" or "Traceback" in res["err"]:
                failures.append(f"{where}: crashed: {res['err'][-500:]}")
            elif res["rc"] not in (0, 1, 2, 3, 4, 5, 6):
                failures.append(f"{where}: exit {res['rc']}")
    assert not failures, "\n".join(failures)


def test_a_poisoning_never_writes_through_a_link(tmp_path):
    """A failed fsync records itself in fsync-failed; a link planted there
    is neither followed (the target keeps its bytes) nor echoed."""
    from evstore.errors import DurabilityError

    store = tmp_path / "store"
    secret = tmp_path / "secret"
    secret.write_text(f"{SECRET}\n")
    with EventStore(store) as es:
        es.append("s", [{"type": "T"}])
        os.symlink(secret, store / "fsync-failed")
        with pytest.raises(DurabilityError) as e:
            es.backend._poison("fsync of the commit log failed", OSError(5, "Input/output error"))
        assert SECRET not in str(e.value)
    assert secret.read_text() == f"{SECRET}\n"
    with EventStore(store) as es, pytest.raises(DurabilityError) as e:
        es.append("s", [{"type": "T"}])  # still refused: a link there counts as the flag
    assert SECRET not in str(e.value) and "symbolic link" in str(e.value)
