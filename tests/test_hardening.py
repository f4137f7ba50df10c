"""Small checks of the hardening against untrusted store content: index
offsets, undecodable commit-log payloads, links inside the store."""
from __future__ import annotations

import os

import msgpack
import pytest

from evstore.errors import CorruptStore
from evstore.disk.format import STREAM_MAGIC, FrameError, encode_frame
from evstore.disk.records import MalformedBatch, decode_batch, decode_batch_head
from evstore.disk.frames import read_frame
from evstore.disk.segment import SegmentWriter, open_file


@pytest.mark.parametrize("offset", [-1, 2**63 - 1, 2**63, 2**64 - 1, 10**6])
def test_read_frame_offset_outside_the_file_is_a_frame_error(tmp_path, offset):
    p = tmp_path / "seg"
    p.write_bytes(encode_frame(STREAM_MAGIC, b"\x90"))
    fd = os.open(p, os.O_RDONLY)
    try:
        with pytest.raises(FrameError):
            read_frame(fd, offset, STREAM_MAGIC)
    finally:
        os.close(fd)


@pytest.mark.parametrize("payload", [b"", b"\x95", b"\xc1", b"\x94\xa1s\x01\x02\x03",
                                     msgpack.packb(["s", 3, 3, 1]),
                                     msgpack.packb(["s", 1, 1, 1, "id", "T", {}]),
                                     msgpack.packb([1, 1, 1, 1, "id", "T", {}, {}]),
                                     msgpack.packb(["s", "1", 1, 1, "id", "T", {}, {}]),
                                     msgpack.packb(["s", True, 1, 1, "id", "T", {}, {}])])
def test_malformed_batches_are_corrupt_store_and_value_error(payload):
    for decode in (decode_batch, decode_batch_head):
        with pytest.raises(MalformedBatch) as e:
            decode(payload)
        assert isinstance(e.value, ValueError) and isinstance(e.value, CorruptStore)


def test_a_good_batch_still_decodes():
    payload = msgpack.packb(["s", 1, 2, 3, "id", "T", {}, {}])
    assert decode_batch_head(payload) == ("s", 1, 2, 3, 1)
    assert decode_batch(payload).count == 1


@pytest.mark.skipif(not getattr(os, "O_NOFOLLOW", 0), reason="no O_NOFOLLOW")
def test_links_are_not_opened(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"x")
    link = tmp_path / "0000000000000001.seg"
    os.symlink(target, link)
    with pytest.raises(CorruptStore, match="is a symbolic link") as e:
        SegmentWriter(str(link))
    assert str(link) in str(e.value)
    with pytest.raises(CorruptStore):
        open_file(str(link), os.O_RDONLY)
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    with pytest.raises(CorruptStore):
        open_file(str(tmp_path / "dangling"), os.O_WRONLY | os.O_CREAT)
    assert not (tmp_path / "missing").exists()
    assert target.read_bytes() == b"x"


def _store_with_events(d, n=6):
    from evstore import EventStore

    with EventStore(d, segment_bytes=160) as s:
        for i in range(n):
            s.append("a", [{"type": "T", "data": {"i": i}}])


def test_verify_reports_a_link_planted_in_the_store(tmp_path):
    from evstore.ops import verify

    d = tmp_path / "s"
    _store_with_events(d)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, d / "streams" / "zz")
    report = verify(d)
    assert not report.ok
    assert any(p.kind == "link" and "symbolic link" in p.message for p in report.problems)


def test_a_link_in_place_of_the_log_directory_is_refused(tmp_path):
    from evstore import EventStore

    d = tmp_path / "s"
    _store_with_events(d)
    real = tmp_path / "real-log"
    os.rename(d / "log", real)
    os.symlink(real, d / "log")
    with pytest.raises(CorruptStore, match="symbolic link"):
        with EventStore(d) as s:
            s.head()


def test_an_undecodable_committed_frame_names_its_file_and_offset(tmp_path):
    """A frame whose CRC is right but whose payload is not a batch, in the
    middle of the commit log: reading past it says where it is."""
    from evstore import EventStore
    from evstore.disk.format import LOG_MAGIC

    d = tmp_path / "s"
    _store_with_events(d, 3)
    (seg,) = sorted((d / "log").glob("*.log"))[:1]
    data = seg.read_bytes()
    # replace the first frame by a same-length valid frame holding junk
    n = int.from_bytes(data[4:8], "big")
    junk = encode_frame(LOG_MAGIC, msgpack.packb("x" * (n - 2))[:n].ljust(n, b"\0"))
    assert len(junk) == n + 16
    seg.write_bytes(junk + data[n + 16:])
    with EventStore(d) as s:
        with pytest.raises(CorruptStore, match=r"commit log .*0000000000000001\.log.* offset 0"):
            list(s.read_all())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_open_file_refuses_what_is_not_a_regular_file_without_blocking(tmp_path):
    """A FIFO opened for reading would block until a writer came (forever),
    for writing without a reader it fails with ENXIO; a directory opened
    for reading succeeds and fails later.  Each is damage, named."""
    import signal

    fifo = tmp_path / "0000000000000001.log"
    os.mkfifo(fifo)
    (tmp_path / "d").mkdir()
    old = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("open blocked on a FIFO"))
    signal.alarm(5)
    try:
        for flags in (os.O_RDONLY, os.O_WRONLY | os.O_APPEND, os.O_RDWR):
            with pytest.raises(CorruptStore, match="is a FIFO, not a regular file") as e:
                open_file(str(fifo), flags)
            assert str(fifo) in str(e.value)
        for flags in (os.O_RDONLY, os.O_WRONLY):
            with pytest.raises(CorruptStore, match="is a directory, not a regular file"):
                open_file(str(tmp_path / "d"), flags)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    # a directory asked for as one is still fine
    os.close(open_file(str(tmp_path / "d"), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)))


def _checkpointed_store(d):
    from evstore.features.checkpoints import CheckpointStore

    _store_with_events(d, 3)
    from evstore import EventStore

    with EventStore(d) as s:
        s.append("gone", [{"type": "T"}])
        CheckpointStore(s).save("cp", 1)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
@pytest.mark.parametrize("name, argv", [
    ("log/0000000000000001.log", ["read", "--all"]),
    ("log/0000000000000001.idx", ["info"]),
    ("cuts.json", ["read", "a"]),
    ("evstore.json", ["verify"]),
    ("log/0000000000000001.log", ["verify"]),
])
def test_a_fifo_planted_in_the_store_is_damage_not_a_hang(tmp_path, name, argv):
    from conftest import run_cli

    d = tmp_path / "s"
    _checkpointed_store(d)
    p = d / name
    p.unlink(missing_ok=True)  # cuts.json: a name not yet written
    os.mkfifo(p)
    r = run_cli(*argv, store=d, timeout=20)
    err = r.stderr.decode()
    assert r.returncode == 6, err
    assert "Traceback" not in err
    if argv[0] == "verify":  # the report names it
        assert name.split("/")[-1] in r.stdout.decode()
    else:
        assert r.stdout == b"" and str(p) in err and "is a FIFO, not a regular file" in err
    assert p.is_fifo()  # nothing replaced it


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_compact_skips_a_fifo_or_a_link_in_quarantine(tmp_path):
    """compact reads quarantined files to purge those holding removed
    events: never through a link (the target is never read), never
    waiting on a FIFO."""
    from conftest import run_cli

    d = tmp_path / "s"
    _checkpointed_store(d)
    q = d / "quarantine"
    q.mkdir(exist_ok=True)
    os.mkfifo(q / "20260101T000000-1-000000001.bin")
    (q / "20260101T000000-1-000000001.json").write_text("{}")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"gone")
    os.symlink(outside, q / "20260101T000000-2-000000001.bin")
    assert run_cli("delete", "gone", store=d).returncode == 0
    r = run_cli("compact", store=d, timeout=20)
    assert r.returncode == 0, r.stderr.decode()
    assert outside.read_bytes() == b"gone"
    assert (q / "20260101T000000-1-000000001.bin").is_fifo()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_fifo_as_the_fsync_failed_flag_still_refuses_writes(tmp_path):
    from evstore import EventStore
    from evstore.errors import DurabilityError

    d = tmp_path / "s"
    _store_with_events(d, 1)
    os.mkfifo(d / "fsync-failed")
    with EventStore(d) as s, pytest.raises(DurabilityError, match="not a regular file, not read"):
        s.append("a", [{"type": "T"}])


@pytest.mark.parametrize("plant", ["link", "directory"])
def test_append_with_a_stream_index_that_is_not_a_file_is_damage_not_a_crash(tmp_path, plant):
    """The segment opened, its index refused: the half-made writer was kept
    and closing the store crashed (an AttributeError, exit 1)."""
    from conftest import run_cli
    from evstore.disk.streamdir import stream_dir

    d = tmp_path / "s"
    _store_with_events(d, 1)
    idx = d / stream_dir("streams", "a") / "0000000000000001.idx"
    idx.unlink()
    outside = tmp_path / "outside"
    outside.write_bytes(b"")
    if plant == "link":
        os.symlink(outside, idx)
    else:
        idx.mkdir()
    r = run_cli("append", "a", "--type", "T", "--no-sync", store=d, timeout=20)
    err = r.stderr.decode()
    assert r.returncode == 6, err
    assert "unexpected" not in err and "Traceback" not in err and str(idx) in err
    assert outside.read_bytes() == b""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
@pytest.mark.parametrize("plant", ["file", "fifo"])
def test_a_file_where_a_stream_directory_belongs_is_damage_naming_it(tmp_path, plant):
    """Was exit 1, "I/O error in STORE: Not a directory", naming nothing."""
    import shutil

    from conftest import run_cli
    from evstore.disk.streamdir import stream_dir

    d = tmp_path / "s"
    _store_with_events(d, 1)
    sdir = d / stream_dir("streams", "a")
    shutil.rmtree(sdir)
    if plant == "file":
        sdir.write_text("junk\n")
    else:
        os.mkfifo(sdir)
    r = run_cli("append", "a", "--type", "T", "--no-sync", store=d, timeout=20)
    err = r.stderr.decode()
    assert r.returncode == 6, err
    assert f"{sdir} is a {'FIFO' if plant == 'fifo' else 'file'}, not a directory" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_repair_refuses_a_fifo_inside_the_store_and_changes_nothing(tmp_path):
    """Was exit 1 ("not a regular file") after the fix that stopped it
    waiting forever on the FIFO."""
    from conftest import run_cli
    from evstore.disk.streamdir import stream_dir

    d = tmp_path / "s"
    _store_with_events(d, 2)
    idx = d / stream_dir("streams", "a") / "0000000000000001.idx"
    idx.unlink()
    os.mkfifo(idx)
    before = sorted(p.name for p in d.rglob("*"))
    r = run_cli("repair", "--lock-timeout", "2", store=d, timeout=20)
    err = r.stderr.decode()
    assert r.returncode == 6, err
    assert "FIFOs, sockets or devices inside the store" in err and "0000000000000001.idx" in err
    assert sorted(p.name for p in d.rglob("*")) == before and idx.is_fifo()


def test_a_directory_where_sync_state_belongs_is_damage_naming_it(tmp_path):
    """Was exit 1 "I/O error in STORE: Is a directory" (naming nothing),
    and each attempt left a temp file beside it."""
    import shutil

    from conftest import run_cli

    d = tmp_path / "s"
    _store_with_events(d, 1)
    (d / "sync-state").unlink()
    (d / "sync-state").mkdir()
    (d / "sync-state" / "x").write_text("x")
    r = run_cli("info", store=d, timeout=20)
    err = r.stderr.decode()
    assert r.returncode == 6, err
    assert f"{d / 'sync-state'} is a directory, not a regular file" in err
    assert not [p for p in os.listdir(d) if p.startswith(".tmp")]
    shutil.rmtree(d / "sync-state")
    assert run_cli("info", store=d, timeout=20).returncode == 0
