"""The file backend's part of forgetting: cuts and retention rules as
checked documents, tombstones under the writer lock, versions that count
removed events.  (Compaction: tests/test_files_compaction.py.)"""
from __future__ import annotations

import os

import pytest

from evstore import EventStore
from evstore.core.forgetting import Cut, Retention
from evstore.core.rules import ANY
from evstore.errors import CorruptStore, StreamDeleted, StreamNotFound, WrongExpectedVersion


def ev(i, data=None):
    return {"type": "T", "data": data if data is not None else {"i": i}}


@pytest.fixture
def es(tmp_path):
    with EventStore(tmp_path / "s", sync=False) as s:
        yield s


def test_no_document_no_cut(es):
    assert es.backend.cuts() == {}
    assert es.backend.retention_rules() == []
    assert not os.path.exists(os.path.join(es.directory, "cuts.json"))


def test_soft_delete_is_stored_and_seen_by_another_handle(es):
    es.append("a", [ev(1), ev(2)])
    assert es.backend.cut("a", ANY, None, False) == (2, Cut("a", 3, False, 2))
    with EventStore(es.directory) as other:
        assert other.backend.cuts() == {"a": Cut("a", 3, False, 2)}
        # the next event continues the versions
        r = other.append("a", [ev(3)], expected_version=2)
        assert r.version == 3
    assert es.version("a") == 3


def test_truncate_raises_the_floor_and_never_lowers_it(es):
    es.append("a", [ev(i) for i in range(5)])
    assert es.backend.cut("a", ANY, 4, False)[1] == Cut("a", 4, False, 0)
    assert es.backend.cut("a", ANY, 2, False)[1] == Cut("a", 4, False, 0)
    assert es.backend.cuts()["a"].floor == 4


def test_hard_delete_refuses_appends_under_the_lock(es):
    es.append("a", [ev(1)])
    es.backend.cut("a", 1, None, True)
    with pytest.raises(StreamDeleted):
        es.append("a", [ev(2)])
    with EventStore(es.directory) as other:   # another handle, its cache cold
        with pytest.raises(StreamDeleted):
            other.append("a", [ev(2)])
    with pytest.raises(StreamDeleted):
        es.backend.cut("a", ANY, 1, False)
    assert es.version("a") == 1


def test_cut_checks_expected_version_and_existence(es):
    with pytest.raises(StreamNotFound):
        es.backend.cut("nope", ANY, None, False)
    es.append("a", [ev(1)])
    with pytest.raises(WrongExpectedVersion):
        es.backend.cut("a", 5, None, False)
    assert es.backend.cuts() == {}


def test_retention_rules_replace_and_clear(es):
    b = es.backend
    b.set_retention(Retention("ci-", True, 3_600_000_000, None))
    b.set_retention(Retention("ci-", False, None, 5))
    b.set_retention(Retention("ci-", True, None, 10))
    assert sorted(b.retention_rules()) == sorted([Retention("ci-", True, None, 10),
                                                  Retention("ci-", False, None, 5)])
    b.set_retention(Retention("ci-", True, None, None))
    assert b.retention_rules() == [Retention("ci-", False, None, 5)]


def test_a_changed_byte_in_a_document_is_damage(es):
    es.append("a", [ev(1)])
    es.backend.cut("a", ANY, None, False)
    path = os.path.join(es.directory, "cuts.json")
    raw = open(path, "rb").read()
    open(path, "wb").write(raw.replace(b'"floor": 2', b'"floor": 1'))
    with EventStore(es.directory) as other:
        with pytest.raises(CorruptStore, match="cuts.json"):
            other.backend.cuts()


def test_documents_are_cached_by_identity(es, monkeypatch):
    es.append("a", [ev(1)])
    es.backend.cut("a", ANY, None, False)
    es.backend.cuts()
    import evstore.backends.files.forget as forget
    loads = []
    real = forget._Document.load
    monkeypatch.setattr(forget._Document, "load", lambda self: loads.append(1) or real(self))
    for _ in range(5):
        es.backend.cuts()
    assert loads == []
    es.append("b", [ev(1)])
    es.backend.cut("b", ANY, None, False)  # a new file: read again, once
    es.backend.cuts()
    es.backend.cuts()
    assert len(loads) == 1


def test_version_counts_removed_events_when_the_log_is_gone(es):
    """After compaction removed every event of a deleted stream, its version
    comes from its cut (simulated here by removing the stream's files)."""
    es.append("a", [ev(1), ev(2)])
    es.backend.cut("a", ANY, None, False)
    import shutil
    from evstore.disk.streamdir import stream_dir
    shutil.rmtree(stream_dir(os.path.join(es.directory, "streams"), "a"))
    with EventStore(es.directory) as other:
        assert other.version("a") == 2
        assert other.append("a", [ev(3)], expected_version=2).version == 3
        assert [e.version for e in other.read("a")] == [3]
