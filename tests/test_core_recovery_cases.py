"""Crash leftovers that the next writer must handle without losing or hiding
anything: an index shorter than its data, records of a writer that died
before its commit frame, a stream directory that lost its id file, and
handles that stay open while repair rewrites files under them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from evstore import EventStore, NewEvent
from evstore.disk.commitlog import CommitLog
from evstore.errors import CorruptStore
from evstore.disk.index import ENTRY
from evstore.ops import repair, verify
from evstore.disk.streamdir import stream_dir


def evs(n, tag="e"):
    return [NewEvent("T", {"tag": tag, "i": i}) for i in range(n)]


def only(directory: Path, suffix: str) -> list[Path]:
    return sorted(p for p in directory.rglob("*" + suffix))


def index_entries(path: Path) -> list[int]:
    data = path.read_bytes()
    return [o for (o,) in ENTRY.iter_unpack(data)]


def frame_offsets(seg: Path, magic: bytes) -> list[int]:
    """Offsets of the frames in a segment, found from the data alone."""
    from evstore.disk.frames import iter_frames

    fd = os.open(seg, os.O_RDONLY)
    try:
        return [off for off, _ in iter_frames(fd, 0, os.fstat(fd).st_size, magic)]
    finally:
        os.close(fd)


def drop_last_entries(idx: Path, n: int) -> None:
    size = idx.stat().st_size
    os.truncate(idx, size - 8 * n)


def test_log_index_missing_its_last_entries_is_rebuilt_not_holed(tmp_path):
    """A writer killed between its commit frame and the frame's index entries
    leaves the index short; the next commit must not extend it past a hole
    of zeroed entries."""
    d = tmp_path / "s"
    with EventStore(d, sync=False) as es:
        es.append("a", evs(3))
        es.append("b", evs(2))
    (idx,) = only(d / "log", ".idx")
    drop_last_entries(idx, 2)  # the crash: batch "b" committed, not indexed
    with EventStore(d, sync=False) as es:
        es.append("a", evs(4))
        assert [e.position for e in es.read_all()] == list(range(1, 10))
    entries = index_entries(idx)
    assert len(entries) == 9
    (seg,) = only(d / "log", ".log")
    offs = frame_offsets(seg, b"EvL1")
    assert entries == [offs[0]] * 3 + [offs[1]] * 2 + [offs[2]] * 4
    assert verify(d).ok


def test_stream_index_missing_entries_is_rebuilt(tmp_path):
    d = tmp_path / "s"
    with EventStore(d, sync=False) as es:
        es.append("a", evs(5))
    (idx,) = only(d / "streams", ".idx")
    drop_last_entries(idx, 3)  # lost unsynced index tail (power loss)
    with EventStore(d, sync=False) as es:
        es.append("a", evs(2))
        assert [e.version for e in es.read("a")] == list(range(1, 8))
    (seg,) = only(d / "streams", ".seg")
    assert index_entries(idx) == frame_offsets(seg, b"EvS1")
    assert verify(d).ok


def test_records_of_a_writer_that_died_before_committing_are_cut(tmp_path, monkeypatch):
    """Handle A caches the tail of stream "a"; writer B writes its records
    and dies before its commit frame.  A's next append must see past its
    cache, cut B's records and commit its own."""
    d = tmp_path / "s"
    a = EventStore(d, sync=False)
    a.append("a", evs(2, "first"))
    b = EventStore(d, sync=False)

    def die(*args, **kw):
        raise KeyboardInterrupt("writer killed before its commit frame")

    monkeypatch.setattr(CommitLog, "commit", die)
    with pytest.raises(KeyboardInterrupt):
        b.append("a", evs(3, "lost"))
    monkeypatch.undo()
    (seg,) = only(d / "streams", ".seg")
    assert len(frame_offsets(seg, b"EvS1")) == 5  # B's records are on disk
    r = a.append("a", evs(1, "second"))
    assert (r.version, r.position) == (3, 3)
    assert [e.data["tag"] for e in a.read("a")] == ["first", "first", "second"]
    a.close()
    b.close()
    assert verify(d).ok


def test_stream_dir_without_id_gets_it_back_and_keeps_its_events(tmp_path):
    """A stream directory whose ``id`` was lost (a power cut, a careless
    hand) is named by the hash of its stream's id, so the writer puts the id
    back; it never wipes the segments, which hold committed events."""
    d = tmp_path / "s"
    with EventStore(d, sync=False) as es:
        es.append("acct", evs(4))
    sdir = Path(stream_dir(str(d / "streams"), "acct"))
    (sdir / "id").unlink()
    segs_before = {p.name: p.read_bytes() for p in sdir.glob("*.seg")}
    with EventStore(d, sync=False) as es:
        r = es.append("acct", evs(1), expected_version=4)
        assert r.version == 5
    assert (sdir / "id").read_bytes() == b"acct"
    for name, data in segs_before.items():
        assert (sdir / name).read_bytes()[:len(data)] == data
    with EventStore(d, sync=False) as es:
        assert [e.version for e in es.read("acct")] == [1, 2, 3, 4, 5]
    assert verify(d).ok


def test_stream_dir_with_a_foreign_id_is_refused(tmp_path):
    d = tmp_path / "s"
    with EventStore(d, sync=False) as es:
        es.append("acct", evs(2))
    sdir = Path(stream_dir(str(d / "streams"), "acct"))
    (sdir / "id").write_bytes(b"other")
    with EventStore(d, sync=False) as es:
        with pytest.raises(CorruptStore, match="belongs to 'other'"):
            es.append("acct", evs(1))
        with pytest.raises(CorruptStore, match="belongs to 'other'"):
            list(es.read("acct"))


def test_open_handles_follow_a_repair_that_rewrote_files(tmp_path):
    """A long-lived handle (a service) keeps cached descriptors and tails
    while an operator repairs the store; afterwards it must read and write
    what the repaired files hold, not what its caches remember."""
    d = tmp_path / "s"
    h = EventStore(d, sync=False)
    for i in range(6):
        h.append("s%d" % (i % 2), evs(3, "b%d" % i))
    assert len(list(h.read_all())) == 18
    # Damage the commit log in the middle and a stream tail; repair rewrites
    # them (restoring the log frame from the stream-log copy).
    (seg,) = only(d / "log", ".log")
    offs = frame_offsets(seg, b"EvL1")
    data = bytearray(seg.read_bytes())
    data[offs[2] + 20] ^= 0xFF
    seg.write_bytes(bytes(data))
    report = repair(d)
    assert report.ok and report.changed
    with EventStore(d) as fresh:
        want = [e.to_dict() for e in fresh.read_all()]
    assert len(want) == 18
    assert [e.to_dict() for e in h.read_all()] == want
    r = h.append("s0", evs(1, "after"))
    assert (r.version, r.position) == (10, 19)
    h.close()
    assert verify(d).ok


@pytest.mark.parametrize("bit", [0x01, 0x80])
def test_a_flipped_length_in_the_last_frame_is_damage_not_a_torn_tail(tmp_path, bit):
    """The last commit frame is complete but a bit of its header length is
    flipped, so it reads as incomplete.  Its trailer and checksum prove it
    whole (an acknowledged batch): the writer must refuse to cut it, and
    repair must bring the batch back."""
    path = tmp_path / "store"
    with EventStore(path) as es:
        es.append("a", evs(1, "one"))
        es.append("a", evs(2, "two"))
    seg = only(path / "log", ".log")[-1]
    data = bytearray(seg.read_bytes())
    start = len(data) - int.from_bytes(data[-4:], "big") - 16
    data[start + 5] ^= bit  # a length far longer than the file
    seg.write_bytes(bytes(data))
    with EventStore(path) as es:
        assert [e.data["tag"] for e in es.read_all()] == ["one"]  # readers stop before it
        with pytest.raises(CorruptStore, match="length field is damaged"):
            es.append("a", evs(1, "three"))
    assert seg.read_bytes() == bytes(data)  # nothing cut
    assert not verify(path, settle=0).ok
    repair(path)
    assert verify(path, settle=0).ok
    with EventStore(path) as es:
        assert [e.data["tag"] for e in es.read_all()] == ["one", "two", "two"]


def test_a_torn_last_frame_is_still_cut(tmp_path):
    """The counterpart: a frame cut short by a crash is cut by the next writer."""
    path = tmp_path / "store"
    with EventStore(path) as es:
        es.append("a", evs(1, "one"))
        es.append("a", evs(2, "two"))
    seg = only(path / "log", ".log")[-1]
    data = seg.read_bytes()
    last = data[len(data) - int.from_bytes(data[-4:], "big") - 16:]
    with open(seg, "ab") as f:  # an append in flight, torn by the crash
        f.write(last[:-3])
    with EventStore(path) as es:
        es.append("a", evs(1, "three"))
        assert [e.data["tag"] for e in es.read_all()] == ["one", "two", "two", "three"]
    assert verify(path, settle=0).ok


def test_a_cached_tail_sees_a_segment_rolled_by_a_writer_that_died(tmp_path):
    """Writer b remembers stream x's tail.  Writer c, with smaller segments,
    rolls x to a new segment at that tail and dies before its commit frame,
    so the head does not move and b's memory still looks current.  b must
    not write the same versions into the old segment: c's orphan segment
    would shadow them (verify: 'repeats versions already seen')."""
    path = tmp_path / "store"
    b = EventStore(path, segment_bytes=100_000)
    c = EventStore(path, segment_bytes=1)
    try:
        b.append("x", evs(3, "b"))
        c.append("y", evs(1))
        b.append("x", evs(1, "b"))  # b caches x's tail after c's commit

        class Killed(BaseException):
            pass

        def die(*_a, **_k):
            raise Killed()

        c.backend._wlog.commit = die  # c dies between its stream records and its commit
        with pytest.raises(Killed):
            c.append("x", evs(1, "orphan"))
        orphan = Path(c.backend._wstreams["x"].path(5))
        assert orphan.exists() and orphan.stat().st_size > 0
        b.append("x", evs(1, "b2"))
        assert not orphan.exists()
    finally:
        b.close()
        c.close()
    with EventStore(path) as es:
        assert [e.data["tag"] for e in es.read("x")] == ["b"] * 4 + ["b2"]
    report = verify(path, settle=0)
    assert report.ok, [str(p) for p in report.problems]


# --- a commit-log tail torn by a power cut ----------------------------------------------------
def _last_frame_torn(tmp_path, monkeypatch, tear, reboot):
    """Three acknowledged appends, then the bytes ``tear(frame)`` of an
    unacknowledged fourth frame at the end of the commit log, as a power cut
    (``reboot``) or something else left them.  Returns the store's path."""
    import evstore.disk.recovery as recovery
    from evstore.disk.format import LOG_MAGIC, encode_frame

    d = tmp_path / "s"
    with EventStore(d) as es:
        es.append("a", evs(3))
    frame = encode_frame(LOG_MAGIC, b"\x94" + b"p" * 300)  # any payload: it is never decoded
    (seg,) = only(d / "log", ".log")
    with open(seg, "ab") as f:
        f.write(tear(frame))
    if reboot:
        monkeypatch.setattr(recovery, "current_boot_id", lambda: "after-the-power-cut")
    return d


TEARS = {
    "first page lost": lambda fr: b"\0" * 200 + fr[200:],
    "last page lost": lambda fr: fr[:200] + b"\0" * (len(fr) - 200),
    "size extended, no data": lambda fr: b"\0" * len(fr),
}


@pytest.mark.parametrize("tear", TEARS.values(), ids=TEARS.keys())
def test_a_power_cut_tear_is_cut_after_a_reboot(tmp_path, monkeypatch, tear):
    d = _last_frame_torn(tmp_path, monkeypatch, tear, reboot=True)
    with EventStore(d) as es:
        assert es.head() == 3
        assert es.append("a", evs(1)).position == 4
    assert verify(d).ok
    assert len(only(d / "quarantine", ".bin")) == 1


@pytest.mark.parametrize("tear", TEARS.values(), ids=TEARS.keys())
def test_zeros_without_a_reboot_are_damage(tmp_path, monkeypatch, tear):
    """A killed process leaves a short frame, never zeros: without a reboot
    the same bytes are damage, refused and left for repair."""
    d = _last_frame_torn(tmp_path, monkeypatch, tear, reboot=False)
    with EventStore(d) as es:
        with pytest.raises(CorruptStore, match="damaged bytes after position 3"):
            es.append("a", evs(1))


def test_a_flipped_bit_in_the_last_frame_is_not_a_power_cut(tmp_path, monkeypatch):
    """A whole frame with one bad bit may be an acknowledged batch: even
    after a reboot it is never cut."""
    def flip(fr):
        b = bytearray(fr)
        b[100] ^= 0x10
        return bytes(b)
    d = _last_frame_torn(tmp_path, monkeypatch, flip, reboot=True)
    with EventStore(d) as es:
        with pytest.raises(CorruptStore, match="damaged bytes after position 3"):
            es.append("a", evs(1))


def test_a_cleanly_closed_store_reads_on_another_boot_without_the_lock(tmp_path, monkeypatch):
    """A store closed cleanly and opened after a reboot (or on another
    machine, say a CI artifact) is read without taking the writer lock, so a
    read-only copy works; the first writer then does the reboot checks."""
    import evstore.disk.recovery as recovery
    from evstore.backends.files.locking import WriterLock

    d = tmp_path / "s"
    with EventStore(d) as es:
        es.append("a", evs(3))
    monkeypatch.setattr(recovery, "current_boot_id", lambda: "another-boot")

    def no_lock(self, timeout=None):
        raise AssertionError("a reader took the writer lock")
    monkeypatch.setattr(WriterLock, "hold", no_lock)
    with EventStore(d, create=False) as es:
        assert [e.version for e in es.read("a")] == [1, 2, 3]
        assert es.head() == 3


def test_a_failed_index_write_after_the_commit_does_not_fail_the_append(tmp_path, monkeypatch):
    """The commit frame is the commit point: the commit log's index entries
    are written after it, and failing to write that cache must not report a
    committed batch as failed (a retry would then duplicate it)."""
    import errno

    from evstore.disk.index import OffsetIndex

    d = tmp_path / "s"
    with EventStore(d) as es:
        es.append("a", evs(2))
    real = OffsetIndex.extend

    def full_disk(self, start, offsets):
        if os.sep + "log" + os.sep in self.path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, start, offsets)
    with EventStore(d) as es:
        monkeypatch.setattr(OffsetIndex, "extend", full_disk)
        r = es.append("a", evs(1, "third"))
        assert (r.version, r.position) == (3, 3)
        monkeypatch.setattr(OffsetIndex, "extend", real)
        es.append("a", evs(1, "fourth"))
        assert [e.data["tag"] for e in es.read("a")] == ["e", "e", "third", "fourth"]
    assert verify(d).ok


def test_a_torn_uncommitted_batch_in_a_stream_log_is_cut_not_refused(tmp_path):
    """A power cut during an append that never committed can leave its
    stream records torn sector by sector: zeros, then an intact later record
    of the same batch.  Nothing committed lies there: readers see the
    committed events and the next writer cuts the rest into quarantine/."""
    from evstore.disk.format import STREAM_MAGIC, encode_frame
    from evstore.disk.records import stream_payload
    import msgpack

    d = tmp_path / "s"
    with EventStore(d) as es:
        es.append("a", evs(2))
        head = es.head()
    (seg,) = only(Path(stream_dir(str(d / "streams"), "a")), ".seg")
    blob = msgpack.packb(["00000000-0000-4000-8000-000000000009", "T", {"x": 1}, {}])[1:]
    in_flight = [encode_frame(STREAM_MAGIC, stream_payload(3 + i, head + 1 + i, 1, blob))
                 for i in range(2)]
    with open(seg, "ab") as f:
        f.write(b"\0" * len(in_flight[0]) + in_flight[1])  # its first record never landed
    with EventStore(d) as es:
        assert [e.version for e in es.read("a")] == [1, 2]
        assert es.append("a", evs(1, "next"), expected_version=2).version == 3
        assert [e.data["tag"] for e in es.read("a")] == ["e", "e", "next"]
    assert verify(d).ok
    assert only(d / "quarantine", ".bin")


def test_a_failed_sync_while_rolling_a_segment_poisons_the_store(tmp_path, monkeypatch):
    """Rolling to a new commit-log segment syncs the old one first; if that
    fails, the frames in it may not be on disk: the same as a failed fsync."""
    import errno

    from evstore.disk.commitlog import CommitLog
    from evstore.errors import DurabilityError

    d = tmp_path / "s"
    es = EventStore(d, segment_bytes=200)
    es.append("a", evs(2))

    def eio(self, idx):
        raise OSError(errno.EIO, "Input/output error")
    monkeypatch.setattr(CommitLog, "reindex_tail", eio)
    with pytest.raises(DurabilityError, match="while rolling"):
        for i in range(10):  # until the segment rolls
            es.append("a", evs(1))
    monkeypatch.undo()
    with pytest.raises(DurabilityError, match="refusing to write"):
        es.append("a", evs(1))
    es.close()
    assert (d / "fsync-failed").exists()
