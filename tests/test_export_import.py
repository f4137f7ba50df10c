"""evstore export / import: the round trip is exact (export | import |
export gives the same bytes, and the commit log itself comes out the same),
bad input is refused whole, and incremental backups work."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import cli_env, ndjson, run_cli
from core_helpers import LONG, tree_digest as digest
from evstore import EventStore, NewEvent
from evstore.errors import InvalidEvent, StreamNotFound
from evstore.features.jsonio import Writer
from evstore.ops import export_events, import_events, verify
from evstore.ops import importer
from evstore.core.lines import _MARK

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 64) - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from([_MARK, [_MARK], "\x00", "\\", '"', "\u2028", "é✓𝄞"]))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=10)
streams = st.sampled_from(["acct-1", "../x", "CON", "a/b", "ordér ✓", "%2e%2e", "A", "a"])
batch = st.tuples(streams, st.lists(st.tuples(
    st.sampled_from(["Deposited", "Withdrawn", "Ünïcode", "\x00odd"]), json_value, json_value),
    min_size=1, max_size=5))


def build(path, batches, sync=False):
    with EventStore(path, sync=sync) as es:
        for stream, evs in batches:
            es.append(stream, [NewEvent(t, d, m) for t, d, m in evs])


def export_bytes(path, **kw) -> bytes:
    out = io.BytesIO()
    with EventStore(path, create=False) as es:
        export_events(es, out, **kw)
    return out.getvalue()


def log_bytes(path) -> bytes:
    d = os.path.join(path, "log")
    return b"".join(open(os.path.join(d, f), "rb").read()
                    for f in sorted(os.listdir(d)) if f.endswith(".log"))


@pytest.mark.slow
@settings(max_examples=200 if LONG else 10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(batch, min_size=1, max_size=12), workers=st.sampled_from([1, 2]))
def test_round_trip_is_exact(batches, workers):
    work = tempfile.mkdtemp(prefix="evexp-")
    try:
        a, b = os.path.join(work, "a"), os.path.join(work, "b")
        build(a, batches)
        first = export_bytes(a)
        # the same bytes 'evstore read --all' prints
        ref = io.BytesIO()
        with EventStore(a) as es:
            w = Writer(ref)
            for ev in es.read_all():
                w.write(ev.to_dict())
            w.close()
        assert first == ref.getvalue()
        src = os.path.join(work, "a.ndjson")
        with open(src, "wb") as f:
            f.write(first)
        with EventStore(b) as es, open(src, "rb") as f:
            res = import_events(es, f, workers=workers, batch_size=7)
        assert res.events == first.count(b"\n")
        assert export_bytes(b) == first
        assert log_bytes(b) == log_bytes(a)  # the original batches, byte for byte
        assert verify(b).ok
    finally:
        shutil.rmtree(work)


def test_parallel_check_of_a_large_file(tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "PARALLEL_BYTES", 1)
    a = tmp_path / "a"
    build(a, [(f"s{i % 5}", [("T", {"i": i, "pad": "p" * (i % 50)}, {})] * (1 + i % 9))
              for i in range(400)])
    data = export_bytes(a)
    (tmp_path / "a.ndjson").write_bytes(data)
    for workers in (1, 3):
        dst = tmp_path / f"b{workers}"
        with EventStore(dst) as es, open(tmp_path / "a.ndjson", "rb") as f:
            import_events(es, f, workers=workers)
        assert export_bytes(dst) == data
        assert log_bytes(dst) == log_bytes(a)


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_parallel_export_is_the_same(tmp_path, monkeypatch, fmt):
    from evstore.backends.files import ndjson

    a = tmp_path / "a"
    build(a, [(f"s{i % 7}", [("T", {"i": i}, {"m": i % 3} if i % 2 else {})] * (1 + i % 5))
              for i in range(300)])
    one = export_bytes(a, workers=1, fmt=fmt)
    monkeypatch.setattr(ndjson, "TASK_EVENTS", 37)
    assert export_bytes(a, workers=2, fmt=fmt) == one
    assert export_bytes(a, workers=2, fmt=fmt, from_position=100) == \
        export_bytes(a, workers=1, fmt=fmt, from_position=100)


def test_parallel_export_inside_big_batches_is_the_same(tmp_path, monkeypatch):
    """Tasks that start inside huge batches (checked once per process, then
    entered from the marks the process left) give the bytes of one process."""
    from evstore.backends.files import ndjson
    from evstore.disk import bigframe

    a = tmp_path / "a"
    build(a, [("small", [("T", {"i": 0}, {})]),
              ("big", [("T", {"i": i, "s": "x" * (i % 9)}, {"m": i % 4}) for i in range(700)]),
              ("small", [("U", {"i": 1}, {})] * 3),
              ("big", [("T", {"i": i}, {}) for i in range(450)])])
    one = export_bytes(a, workers=1)
    monkeypatch.setattr(bigframe, "BIG", 200)
    monkeypatch.setattr(bigframe, "STEP", 16)
    for task in (37, 100, 1000):
        monkeypatch.setattr(ndjson, "TASK_EVENTS", task)
        assert export_bytes(a, workers=2) == one, task
        assert export_bytes(a, workers=3, from_position=250) == \
            export_bytes(a, workers=1, from_position=250), task


def test_cli_pipe_and_file(tmp_path):
    a = tmp_path / "a"
    build(a, [("acct-1", [("Deposited", {"amount": 10}, {})] * 3), ("acct-2", [("X", [], None)])])
    env = cli_env()
    cmd = (f"{sys.executable} -m evstore export --store {a} | "
           f"{sys.executable} -m evstore import --store {tmp_path / 'b'}")
    p = subprocess.run(cmd, shell=True, env=env, capture_output=True)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"events": 4, "batches": 2, "streams": 2,
                                    "first_position": 1, "last_position": 4,
                                    "seconds": json.loads(p.stdout)["seconds"], "skipped": 0}
    assert p.stderr == b""
    first = run_cli("export", store=a).stdout
    assert run_cli("export", store=tmp_path / "b").stdout == first
    (tmp_path / "e.ndjson").write_bytes(first)
    r = run_cli("import", tmp_path / "e.ndjson", "--no-sync", store=tmp_path / "c")
    assert r.returncode == 0, r.stderr
    assert run_cli("export", store=tmp_path / "c").stdout == first
    # a JSON array (export --format json) is read too
    arr = run_cli("export", "--format", "json", store=a).stdout
    r = run_cli("import", store=tmp_path / "d", input=arr)
    assert r.returncode == 0, r.stderr
    assert run_cli("export", store=tmp_path / "d").stdout == first


def test_export_streams_and_from_position(tmp_path):
    a = tmp_path / "a"
    build(a, [("s1", [("T", {"i": 1}, {})]), ("s2", [("T", {"i": 2}, {})] * 2),
              ("s1", [("T", {"i": 3}, {})]), ("s3", [("T", {}, {})])])
    evs = ndjson(run_cli("export", "s1", "s2", store=a).stdout)
    assert [(e["stream"], e["position"]) for e in evs] == [("s1", 1), ("s2", 2), ("s2", 3), ("s1", 4)]
    evs = ndjson(run_cli("export", "--from-position", "3", store=a).stdout)
    assert [e["position"] for e in evs] == [3, 4, 5]
    evs = ndjson(run_cli("export", "s1", "s2", "--from-position", "3", store=a).stdout)
    assert [e["position"] for e in evs] == [3, 4]
    r = run_cli("export", "nope", store=a)
    assert r.returncode == 4 and r.stdout == b""
    assert run_cli("export", "--all", "s1", store=a).returncode == 2
    with EventStore(a) as es, pytest.raises(StreamNotFound):
        export_events(es, io.BytesIO(), streams=["nope"])


def test_incremental_backup(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build(a, [("s", [("T", {"i": i}, {})]) for i in range(5)])
    assert run_cli("import", store=b, input=run_cli("export", store=a).stdout).returncode == 0
    build(a, [("s", [("T", {"i": i}, {})]) for i in range(5, 9)] + [("t", [("U", 1, 2)])])
    with EventStore(b) as es:
        head = es.head()
    more = run_cli("export", "--from-position", str(head + 1), store=a).stdout
    r = run_cli("import", store=b, input=more)
    assert r.returncode == 0, r.stderr
    assert run_cli("export", store=b).stdout == run_cli("export", store=a).stdout
    # the same increment again is already there: recognised and skipped
    before = run_cli("export", store=b).stdout
    r = run_cli("import", store=b, input=more)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["skipped"] == 5 and json.loads(r.stdout)["events"] == 0
    assert run_cli("export", store=b).stdout == before


def lines_of(store):
    return run_cli("export", store=store).stdout.decode().splitlines()


@pytest.mark.parametrize("edit,line,why", [
    # a missing line is a gap in positions, which removed events leave too;
    # but removed events are a prefix of their stream: a gap inside one is not
    (lambda ls: ls[:2] + ls[3:], 4, b"version 3 does not follow version 1"),
    (lambda ls: ls[:2] + [ls[3], ls[2]] + ls[4:], 4, b"position 3 does not follow position 4"),
    (lambda ls: ls[:3] + [ls[3].replace('"version": 2', '"version": 3')] + ls[4:], 4,
     b"version 3 does not follow version 1"),
    (lambda ls: ls[:1] + [ls[1].replace('"recorded_at": "20', '"recorded_at": "19')] + ls[2:], 2,
     b"recorded_at is earlier"),
    (lambda ls: ls[:4] + ['{"type": "T"'] + ls[4:], 5, b"invalid JSON"),
    (lambda ls: ls[:4] + ['{"type": "T", "data": {}}'] + ls[4:], 5, b"missing 'stream'"),
    (lambda ls: ls[:5] + [ls[5].replace('"data": {', '"data": {"big": 1e999, ')] + ls[6:], 6,
     b"NaN/Infinity"),
])
def test_bad_input_is_refused_whole(tmp_path, edit, line, why):
    a = tmp_path / "a"
    build(a, [(f"s{i % 2}", [("T", {"i": i}, {})]) for i in range(8)])
    bad = "\n".join(edit(lines_of(a))) + "\n"
    b = tmp_path / "b"
    build(b, [("other", [("T", {}, {})])])
    # into an empty store: refused, and no store is left behind
    r = run_cli("import", store=tmp_path / "new", input=bad)
    assert r.returncode == 5, r.stderr
    assert f"line {line}".encode() in r.stderr and why in r.stderr, r.stderr
    assert r.stdout == b""
    assert not (tmp_path / "new").exists()
    # into a store that holds something: refused, not a byte changed
    before = digest(b)
    good = "\n".join(lines_of(a)) + "\n"
    r = run_cli("import", store=b, input=good)
    assert r.returncode == 5 and b"line 1: position 1 is not the store's next position (2)" in r.stderr and b"--renumber" in r.stderr
    assert digest(b) == before


def test_versions_must_continue_the_store(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    build(b, [("s", [("T", {}, {})])])
    build(a, [("other", [("T", {}, {})]), ("s", [("T", {}, {})])])
    more = run_cli("export", "--from-position", "2", store=a).stdout
    r = run_cli("import", store=b, input=more)
    assert r.returncode == 5
    assert b"stream 's': version 1 does not continue version 1" in r.stderr
    with EventStore(b) as es:
        with pytest.raises(InvalidEvent):
            import_events(es, io.BytesIO(more))
        assert es.head() == 1


def test_progress_is_reported_through_the_seam(tmp_path):
    from evstore.ops import Progress

    class Record(Progress):
        def __init__(self):
            self.phases, self.events = [], 0

        def begin(self, label, total_bytes=None, total_events=None):
            self.phases.append(label)

        def advance(self, events=0, nbytes=0):
            self.events += events

    a = tmp_path / "a"
    build(a, [("s", [("T", {}, {})] * 4)])
    p = Record()
    with EventStore(a) as es:
        export_events(es, io.BytesIO(), progress=p)
        verify(es, progress=p)
    assert p.phases == ["export", "verify"] and p.events == 8
