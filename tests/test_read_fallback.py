"""One damaged copy never hides an intact event (issue 12 item 7): a reader
that meets a damaged stream record serves it from the commit log's copy,
warns once, and succeeds; only when both copies are damaged is it exit 6."""
from __future__ import annotations

import glob
import os
import warnings

import pytest

from conftest import ndjson, run_cli
from evstore import EventStore
from evstore.errors import CorruptStore, DamagedCopyWarning


def _flip(path: str, marker: bytes) -> None:
    """Flip one bit inside ``marker`` (which occurs once in the file)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    i = data.find(marker)
    assert i >= 0 and data.find(marker, i + 1) < 0, (path, marker)
    data[i + 2] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)


def _segment(store, stream: str) -> str:
    for id_file in glob.glob(os.path.join(store, "streams", "*", "*", "id")):
        if open(id_file, "rb").read() == stream.encode():
            segs = sorted(glob.glob(os.path.join(os.path.dirname(id_file), "*.seg")))
            assert len(segs) == 1
            return segs[0]
    raise AssertionError(stream)


@pytest.fixture
def store(tmp_path):
    """Stream s: a batch of 12, another stream's event, then 3 single appends."""
    path = str(tmp_path / "store")
    with EventStore(path) as es:
        es.append("s", [{"type": f"Type{i:02d}", "data": {"i": i}} for i in range(1, 13)])
        es.append("o", [{"type": "Other"}])
        for i in range(13, 16):
            es.append("s", [{"type": f"Type{i:02d}", "data": {"i": i}}])
    return path


@pytest.mark.parametrize("damaged", ["Type07", "Type01", "Type14", "Type15"])
def test_a_damaged_stream_record_is_read_from_the_commit_log(store, damaged):
    before = run_cli("read", "s", store=store)
    assert before.returncode == 0
    _flip(_segment(store, "s"), damaged.encode())
    for args in (["read", "s"], ["read", "s", "--backwards"], ["export", "s"]):
        r = run_cli(*args, store=store)
        assert r.returncode == 0, (args, r.stderr)
        if args == ["read", "s"]:
            assert r.stdout == before.stdout  # every event, byte for byte
        assert len(ndjson(r.stdout)) == 15
        err = r.stderr.decode()
        assert err.count("warning:") == 1, err  # once
        assert "'evstore verify'" in err and "'evstore repair'" in err
    r = run_cli("replay", "s", "--reducer", "count", store=store)
    assert r.returncode == 0 and b'"version": 15' in r.stdout


def test_both_copies_damaged_is_exit_6_with_the_repair_hint(store):
    _flip(_segment(store, "s"), b"Type07")
    _flip(glob.glob(os.path.join(store, "log", "*.log"))[0], b"Type07")
    r = run_cli("read", "s", store=store)
    assert r.returncode == 6
    err = r.stderr.decode()
    assert "version 7 is damaged in both its copies" in err
    assert "the events before version 7 were read" in err  # not presented as a success
    assert "'evstore repair'" in err and err.count("'evstore verify'") == 1
    assert [e["version"] for e in ndjson(r.stdout)] == [1, 2, 3, 4, 5, 6]


def test_library_warns_and_returns_every_event(store):
    with EventStore(store) as es:
        want = [e.to_dict() for e in es.read("s")]
    _flip(_segment(store, "s"), b"Type09")
    with EventStore(store) as es, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [e.to_dict() for e in es.read("s")] == want
        assert [e.to_dict() for e in es.read("s", from_version=9, to_version=9)] == want[8:9]
        assert [e.version for e in es.read("s", backwards=True, limit=8)] == list(range(15, 7, -1))
    assert caught and all(issubclass(w.category, DamagedCopyWarning) for w in caught)
    _flip(glob.glob(os.path.join(store, "log", "*.log"))[0], b"Type09")
    with EventStore(store) as es, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CorruptStore, match="damaged in both its copies"):
            list(es.read("s"))


def test_a_writer_never_reuses_the_versions_a_damaged_tail_hides(store):
    """The stream log's last record damaged: its event is committed, so a
    writer must not cut it and append at its version (exit 6, nothing written)."""
    _flip(_segment(store, "s"), b"Type15")
    r = run_cli("append", "s", "--type", "New", store=store)
    assert r.returncode == 6 and "'evstore repair'" in r.stderr.decode()
    r = run_cli("read", "--all", store=store)
    assert len(ndjson(r.stdout)) == 16
    assert run_cli("repair", store=store).returncode == 0
    r = run_cli("append", "s", "--type", "New", store=store)
    assert r.returncode == 0 and b'"version": 16' in r.stdout, r.stderr
