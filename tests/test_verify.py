"""evstore verify: sound stores pass, damage is reported with its place, and
nothing is ever changed -- also while a writer is busy."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import cli_env, run_cli
from core_helpers import tree_digest
from evstore import EventStore, NewEvent
from evstore.ops import verify


def make_store(path, n=60, streams=3, segment_bytes=4096):
    with EventStore(path, segment_bytes=segment_bytes) as es:
        for i in range(n):
            es.append(f"s{i % streams}",
                      [NewEvent("T", {"i": i, "pad": "x" * 40, "u": "é✓"}) for _ in range(1 + i % 4)])
    return path


def files(path, suffix):
    return sorted(os.path.join(r, f) for r, _d, fs in os.walk(path) for f in fs if f.endswith(suffix))


def test_sound_store_passes_and_nothing_changes(tmp_path):
    store = make_store(tmp_path / "s")
    before = tree_digest(store)
    report = verify(store)
    assert report.ok, report.problems
    assert report.stats["events"] == sum(1 + i % 4 for i in range(60))
    assert report.stats["streams"] == 3
    assert report.warnings == []
    assert tree_digest(store) == before


def test_library_method_and_report_shape(tmp_path):
    make_store(tmp_path / "s")
    with EventStore(tmp_path / "s") as es:
        report = es.verify()
    d = report.to_dict()
    assert d["ok"] is True and d["problems"] == [] and d["head"] == d["events"]
    json.dumps(d)


def test_cli_sound_exit_0_text_and_json(tmp_path):
    store = make_store(tmp_path / "s")
    r = run_cli("verify", store=store)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip().splitlines()[-1] == "sound"
    assert r.stderr == b""  # no progress bar off a terminal
    r = run_cli("verify", "--format", "json", store=store)
    assert r.returncode == 0
    d = json.loads(r.stdout)
    assert d["ok"] is True and d["events"] > 0


def test_cli_missing_store_is_exit_4_and_creates_nothing(tmp_path):
    r = run_cli("verify", store=tmp_path / "nope")
    assert r.returncode == 4
    assert not (tmp_path / "nope").exists()


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def test_flipped_log_byte_is_reported_with_file_offset_position(tmp_path):
    store = make_store(tmp_path / "s")
    seg = files(store / "log", ".log")[1]
    flip(seg, 300)
    r = run_cli("verify", "--format", "json", store=store)
    assert r.returncode == 6
    d = json.loads(r.stdout)
    assert not d["ok"]
    p = d["problems"][0]
    assert p["file"] == os.path.relpath(seg, store) and p["offset"] <= 300
    assert p["position"] is not None and "checksum" in p["message"]
    text = run_cli("verify", store=store)
    assert text.returncode == 6
    assert b"error: log/" in text.stdout


def test_flipped_stream_record_names_stream_and_version(tmp_path):
    store = make_store(tmp_path / "s")
    seg = files(store / "streams", ".seg")[0]
    flip(seg, 200)
    report = verify(store)
    assert not report.ok
    p = report.problems[0]
    assert p.kind == "stream" and p.stream in ("s0", "s1", "s2") and p.version is not None


def test_wrong_index_entry(tmp_path):
    store = make_store(tmp_path / "s")
    idx = files(store / "streams", ".idx")[0]
    flip(idx, 13)
    report = verify(store)
    assert [p.kind for p in report.problems] == ["stream-index"]
    assert "index entry for version 2" in report.problems[0].message


def test_missing_index_and_deleted_stream_dir(tmp_path):
    store = make_store(tmp_path / "s")
    os.unlink(files(store / "log", ".idx")[0])
    report = verify(store)
    assert [p.kind for p in report.problems] == ["log-index"]
    import shutil

    shutil.rmtree(os.path.dirname(files(store / "streams", ".seg")[0]))
    report = verify(store)
    assert any("no stream directory" in p.message for p in report.problems)


def test_temp_file_is_a_warning_only(tmp_path):
    store = make_store(tmp_path / "s")
    (store / "log" / ".tmp-0000000000000099.log-1-2").write_bytes(b"half")
    report = verify(store)
    assert report.ok
    assert [w.kind for w in report.warnings] == ["temp"]


def test_torn_tail_after_a_crash_is_harmless(tmp_path):
    """An append that died half-way through its commit-log frame."""
    store = make_store(tmp_path / "s")
    last = files(store / "log", ".log")[-1]
    with open(last, "ab") as f:
        f.write(b"EvL1\x00\x00\x01\x00partial")
    (store / "sync-state").unlink()  # no proof that anything past the head committed
    report = verify(store)
    assert report.ok, report.problems
    assert any("never committed" in w.message for w in report.warnings)


def test_truncated_log_tail_of_committed_events_is_damage(tmp_path):
    """Cutting committed frames off the end: sync-state and the stream logs
    both show that positions are missing."""
    store = make_store(tmp_path / "s")
    last = files(store / "log", ".log")[-1]
    os.truncate(last, os.path.getsize(last) - 20)
    report = verify(store)
    assert not report.ok
    kinds = {p.kind for p in report.problems}
    assert "log" in kinds and "sync-state" in kinds


def test_fsync_failed_flag_is_reported(tmp_path):
    store = make_store(tmp_path / "s")
    (store / "fsync-failed").write_text("fsync of the commit log failed at position 3\n")
    report = verify(store)
    assert [p.kind for p in report.problems] == ["fsync-failed"]


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_and_serial_agree(tmp_path, workers):
    store = make_store(tmp_path / "s", n=80, streams=7)
    flip(files(store / "streams", ".seg")[3], 150)
    a = verify(store, workers=workers)
    b = verify(store, workers=1)
    assert [p.to_dict() for p in a.problems] == [p.to_dict() for p in b.problems]
    assert not a.ok


WRITER = r"""
import random, sys, time
from evstore import EventStore, NewEvent
deadline = time.time() + float(sys.argv[2])
with EventStore(sys.argv[1], sync=sys.argv[3] == "1", segment_bytes=16384) as es:
    i = 0
    while time.time() < deadline:
        es.append(f"s{random.randrange(12)}",
                  [NewEvent("T", {"i": i}) for _ in range(random.randint(1, 6))])
        i += 1
"""


def test_no_false_alarms_while_a_writer_appends(tmp_path):
    store = tmp_path / "live"
    make_store(store, n=10)
    w = subprocess.Popen([sys.executable, "-c", WRITER, str(store), "4", "0"], env=cli_env())
    try:
        time.sleep(0.3)
        runs = 0
        deadline = time.time() + 3
        while time.time() < deadline:
            report = verify(store, workers=1 if runs % 2 else 2)
            assert report.ok, [str(p) for p in report.problems]
            runs += 1
        assert runs >= 3
    finally:
        w.wait(timeout=30)
    assert w.returncode == 0
    assert verify(store).ok


def test_a_torn_last_index_entry_is_harmless(tmp_path):
    """A power cut can leave the last index entry half written: verify
    warns (the next writer overwrites it), and after one append all is clean."""
    from evstore import EventStore
    from evstore.ops import verify as run_verify

    d = tmp_path / "s"
    with EventStore(d) as es:
        for i in range(3):
            es.append("a", [{"type": "T", "data": {"i": i}}])
    idxs = sorted((d / "log").glob("*.idx"))[-1:] + sorted((d / "streams").glob("*/*/*.idx"))[-1:]
    for p in idxs:
        with open(p, "ab") as f:
            f.write(b"\x00\x00\x01")
    report = run_verify(d)
    assert report.ok, [str(p) for p in report.problems]
    assert sum("partial entry" in w.message for w in report.warnings) == 2
    with EventStore(d) as es:
        es.append("a", [{"type": "T", "data": {"i": 3}}])
        assert [e.data["i"] for e in es.read("a")] == [0, 1, 2, 3]
    report = run_verify(d)
    assert report.ok and not any("partial entry" in w.message for w in report.warnings)
