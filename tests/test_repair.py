"""evstore repair: the cases one by one, its promises (no-op on a sound store,
--dry-run changes nothing, safe to interrupt, takes the writer lock), and the
CLI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import cli_env, run_cli
from evstore import EventStore, NewEvent
from evstore.errors import StoreLocked
from evstore.disk.format import STREAM_MAGIC, encode_frame
from evstore.ops import repair, verify
from evstore.disk.records import stream_payload
from test_verify import files, flip, make_store, tree_digest


def events_of(path):
    with EventStore(path) as es:
        return [e.to_dict() for e in es.read_all()]


def damage_everything(store):
    """Several kinds of damage at once, so that repair has many steps."""
    logs = files(store / "log", ".log")
    flip(logs[1], 200)
    segs = files(store / "streams", ".seg")
    flip(segs[0], 150)
    os.unlink(files(store / "log", ".idx")[0])
    shutil.copyfile(segs[1], os.path.join(os.path.dirname(segs[1]), "0000000000000777.seg"))
    (store / "streams" / ".tmp-abc-1").mkdir()
    (store / "streams" / ".tmp-abc-1" / "id").write_text("half")


def test_sound_store_is_left_byte_for_byte(tmp_path):
    store = make_store(tmp_path / "s")
    before = tree_digest(store)
    report = repair(store)
    assert report.ok and not report.changed
    assert report.quarantine is None
    assert tree_digest(store) == before
    r = run_cli("repair", store=store)
    assert r.returncode == 0 and b"nothing to repair" in r.stdout
    assert tree_digest(store) == before


def test_dry_run_changes_nothing_then_repair_does_it(tmp_path):
    store = make_store(tmp_path / "s")
    want = events_of(store)
    damage_everything(store)
    before = tree_digest(store)
    dry = repair(store, dry_run=True)
    assert dry.dry_run and dry.actions and not dry.ok
    assert tree_digest(store) == before
    r = run_cli("repair", "--dry-run", "--format", "json", store=store)
    assert r.returncode == 0
    assert json.loads(r.stdout)["dry_run"] is True
    assert tree_digest(store) == before
    done = repair(store)
    assert done.ok, [str(p) for p in done.after.problems]
    # the dry run names every stream and commit-log file that repair touches
    assert {a.stream for a in dry.actions if a.stream} == {a.stream for a in done.actions if a.stream}
    assert {a.file for a in dry.actions if a.file and a.file.startswith("log")} <= \
        {a.file for a in done.actions if a.file}
    assert events_of(store) == want
    assert os.path.isdir(done.quarantine)
    manifest = json.load(open(os.path.join(done.quarantine, "manifest.json")))
    assert manifest["removed"] and all(os.path.exists(os.path.join(done.quarantine, e["file"]))
                                       for e in manifest["removed"])


class Interrupted(BaseException):
    pass


def count_mutations(monkeypatch, limit):
    """Make the limit-th change to the file system (rename, unlink, atomic
    write) raise, as a crash or Ctrl-C there would."""
    from evstore.ops import quarantine, repairer

    seen = [0]

    def wrap(fn):
        def inner(*a, **kw):
            seen[0] += 1
            if seen[0] == limit:
                raise Interrupted()
            return fn(*a, **kw)
        return inner

    monkeypatch.setattr(repairer, "write_atomic", wrap(repairer.write_atomic))
    monkeypatch.setattr(os, "replace", wrap(os.replace))
    monkeypatch.setattr(os, "unlink", wrap(os.unlink))
    monkeypatch.setattr(os, "rename", wrap(os.rename))
    monkeypatch.setattr(quarantine, "fsync_file", wrap(quarantine.fsync_file))
    return seen


def test_safe_to_interrupt_anywhere(tmp_path, monkeypatch):
    base = make_store(tmp_path / "base")
    want = events_of(base)
    damage_everything(base)
    with monkeypatch.context() as m:
        probe = shutil.copytree(base, tmp_path / "probe")
        seen = count_mutations(m, -1)
        repair(probe)
        total = seen[0]
    assert total > 5
    for k in range(1, total + 1):
        work = shutil.copytree(base, tmp_path / f"k{k}")
        with monkeypatch.context() as m:
            count_mutations(m, k)
            with pytest.raises(Interrupted):
                repair(work)
        report = repair(work)  # run it again
        assert report.ok, (k, [str(p) for p in report.after.problems])
        assert events_of(work) == want, k
        shutil.rmtree(work)


LOCKER = r"""
import sys
from evstore import EventStore
with EventStore(sys.argv[1]) as es:
    with es.writer_lock():
        print("locked", flush=True)
        sys.stdin.read()  # held until the test closes our stdin
"""


def test_takes_the_writer_lock(tmp_path):
    store = make_store(tmp_path / "s")
    p = subprocess.Popen([sys.executable, "-c", LOCKER, str(store)], env=cli_env(),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"locked"
        with pytest.raises(StoreLocked):
            repair(store, lock_timeout=0.2)
        r = run_cli("repair", "--lock-timeout", "0.2", store=store)
        assert r.returncode == 1 and b"locked" in r.stderr
    finally:
        p.stdin.close()
        p.wait(timeout=30)


def test_clears_fsync_failed_and_writes_work_again(tmp_path):
    store = make_store(tmp_path / "s")
    (store / "fsync-failed").write_text("fsync of the commit log failed at position 9\n")
    with pytest.raises(Exception):
        with EventStore(store) as es:
            es.append("s0", [NewEvent("T")])
    report = repair(store)
    assert report.ok and not (store / "fsync-failed").exists()
    assert any(a.action == "sync" for a in report.actions)
    with EventStore(store) as es:
        es.append("s0", [NewEvent("T")])
    assert verify(store).ok


def test_uncommitted_leftover_is_kept_as_events(tmp_path):
    """Records a writer wrote to a stream log before dying, with no commit."""
    store = make_store(tmp_path / "s")
    want = events_of(store)
    with EventStore(store) as es:
        head, version = es.head(), es.version("s1")
    import msgpack

    seg = files(store / "streams", ".seg")
    target = [s for s in seg if open(os.path.join(os.path.dirname(s), "id")).read() == "s1"][-1]
    blob = msgpack.packb(["6f1c2b8e-1b2a-4c3d-8e9f-0a1b2c3d4e5f", "Lost", {"x": 1}, {}])[1:]
    with open(target, "ab") as f:
        f.write(encode_frame(STREAM_MAGIC, stream_payload(version + 1, head + 1, 1, blob)))
    assert verify(store).ok  # harmless: readers ignore it
    assert events_of(store) == want
    report = repair(store)
    assert report.ok and report.removed_events == 1
    [ev] = [json.loads(x) for x in open(report.events_file)]
    assert (ev["stream"], ev["version"], ev["position"], ev["type"]) == ("s1", version + 1,
                                                                       head + 1, "Lost")
    assert events_of(store) == want


def test_lost_log_tail_is_restored_from_stream_copies(tmp_path):
    """The commit log's last segment is gone; every event in it survives in
    its stream log, and sync-state proves the last batch was committed."""
    store = make_store(tmp_path / "s")
    want = events_of(store)
    os.unlink(files(store / "log", ".log")[-1])
    assert not verify(store).ok
    report = repair(store)
    assert report.ok and not report.lost and report.removed_events == 0
    assert any(a.action == "restore" for a in report.actions)
    assert events_of(store) == want


def test_unproven_last_batch_is_not_committed(tmp_path):
    """Without sync-state, the last batch past the log's end may be an
    append that never committed: it leaves the store, kept as events."""
    store = make_store(tmp_path / "s")
    want = events_of(store)
    last = files(store / "log", ".log")[-1]
    os.unlink(last)
    (store / "sync-state").unlink()
    report = repair(store)
    assert report.ok
    got = events_of(store)
    assert got == want[:len(got)] and len(got) < len(want)
    kept = [json.loads(x) for x in open(report.events_file)]
    assert got + sorted(kept, key=lambda e: e["position"]) == want


def test_cli_report_and_exit_codes(tmp_path):
    store = make_store(tmp_path / "s")
    flip(files(store / "log", ".log")[0], 100)
    r = run_cli("repair", store=store)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "restore:" in out and "the store is sound now" in out
    assert run_cli("verify", store=store).returncode == 0
    r = run_cli("repair", "--format", "json", store=store)
    d = json.loads(r.stdout)
    assert d["ok"] and not d["changed"]
    assert run_cli("repair", store=tmp_path / "none").returncode == 4


def test_writer_can_append_after_repair(tmp_path):
    store = make_store(tmp_path / "s")
    flip(files(store / "streams", ".seg")[-1], 60)
    flip(files(store / "log", ".log")[-1], 60)
    assert repair(store).ok
    with EventStore(store) as es:
        for s in ("s0", "s1", "s2", "new"):
            es.append(s, [NewEvent("After")])
    assert verify(store).ok
