"""EventStore.version remembers what it found and catches up through the
commit log's batch heads; these tests hold it to a second handle's writes."""
from __future__ import annotations

import random

from evstore import EventStore, NewEvent


def test_version_follows_another_handles_writes(tmp_path):
    path = tmp_path / "store"
    rnd = random.Random(7)
    with EventStore(path, sync=False, segment_bytes=2000) as writer, \
            EventStore(path) as reader:
        truth: dict[str, int] = {}
        for step in range(400):
            stream = f"s{rnd.randrange(6)}"
            # small gaps (caught up through batch heads) and, now and then,
            # a gap longer than the catch-up window (asks the stream log)
            for _ in range(1 if rnd.random() < 0.9 else 300):
                s = stream if rnd.random() < 0.5 else f"s{rnd.randrange(6)}"
                n = rnd.randrange(1, 4)
                writer.append(s, [NewEvent("T", {"i": i}) for i in range(n)])
                truth[s] = truth.get(s, 0) + n
            probe = f"s{rnd.randrange(7)}"  # s6 is never written
            assert reader.version(probe) == truth.get(probe, 0), (step, probe)
        for s, v in truth.items():
            assert reader.version(s) == v == writer.version(s)


def test_version_after_the_store_is_replaced(tmp_path):
    """A store rebuilt under an open handle (as repair does) must not be
    answered from the handle's memory of the old one."""
    import shutil

    a, b = tmp_path / "a", tmp_path / "b"
    with EventStore(a) as es:
        es.append("x", [NewEvent("T", {})] * 1)
    with EventStore(b) as es:
        es.append("x", [NewEvent("T", {})] * 5)
    reader = EventStore(a)
    try:
        assert reader.version("x") == 1
        shutil.rmtree(a)
        shutil.copytree(b, a)
        assert reader.version("x") == 5
    finally:
        reader.close()


def test_writers_keep_only_the_tails_others_did_not_move(tmp_path):
    """Two writer handles take turns on overlapping streams with exact
    expected versions: each must forget the cached tail of every stream the
    other wrote to, and only those."""
    path = tmp_path / "store"
    rnd = random.Random(3)
    truth: dict[str, int] = {}
    with EventStore(path, sync=False, segment_bytes=600) as a, \
            EventStore(path, sync=False, segment_bytes=900) as b:
        for step in range(600):
            es = a if rnd.random() < 0.5 else b
            stream = f"s{rnd.randrange(5)}"
            n = rnd.randrange(1, 3)
            r = es.append(stream, [NewEvent("T", {"step": step})] * n,
                          expected_version=truth.get(stream, 0) or "no-stream")
            truth[stream] = truth.get(stream, 0) + n
            assert r.version == truth[stream]
        for s, v in truth.items():
            assert [e.version for e in a.read(s)] == list(range(1, v + 1))
    from evstore.ops import verify

    assert verify(path, settle=0).ok
