"""Recovery that happens by itself, under the writer lock, when a store opens
or a writer takes the lock after a crash.

Three things can be left behind (docs/FORMAT.md, "Crashes"):

1. A torn commit-log tail: a frame a writer was writing when it died.  It was
   never acknowledged; it is cut, and its bytes are kept in ``quarantine/``.
   Damage *followed by intact frames* is not a torn tail and is never cut
   here: that is CorruptStore, for ``evstore repair``.
2. Stream-log records of a batch whose commit-log frame never completed: they
   are invisible to readers already (a stream is trusted only as far as its
   last record agrees with the log) and the next writer of that stream cuts
   them, again into ``quarantine/``.
3. After a power loss, stream-log copies of committed batches that never
   reached the disk (stream logs are not fsynced per commit; the commit log
   is).  ``sync-state`` records the boot during which unsynced stream writes
   may have happened and the position up to which stream logs are known
   durable; when the machine has rebooted since, the commit log is replayed
   into the stream logs from that position.
"""
from __future__ import annotations

import errno
import json
import os
import time

from ..errors import CorruptStore
from .format import MAX_PAYLOAD, STREAM_MAGIC, encode_frame
from .records import stream_payload
from ..model import pack_fields
from .segment import (
    check_not_link, fsync_dir, fsync_file, nofollow, not_a_file, open_file, read_small, write_all,
)

from ..backends.files.names import FSYNC_FAILED, QUARANTINE, STATE_FILE  # noqa: E402,F401
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def current_boot_id() -> str | None:
    try:
        with open(BOOT_ID_PATH) as f:
            return f.read().strip() or None
    except OSError:
        return None


def load_state(store_dir: str) -> tuple[str | None, int]:
    """(boot id, synced position); (None, 0) when absent or unreadable (a
    link included), which makes the next reconciliation start from the
    beginning: slow, never wrong."""
    try:
        d = json.loads(read_small(os.path.join(store_dir, STATE_FILE)))
        return d.get("boot_id"), int(d.get("synced_position", 0))
    except (OSError, ValueError, TypeError, AttributeError, CorruptStore):
        return None, 0


def read_failed_flag(store_dir: str) -> str | None:
    """Why the store refuses writes (``fsync-failed``), or None when it does
    not.  The flag is read without following a link and only a short line of
    printable text is ever shown: a link or anything else there still marks
    the store as failed, but its content is not repeated."""
    path = os.path.join(store_dir, FSYNC_FAILED)
    try:
        raw = read_small(path, 1024)
    except FileNotFoundError:
        return None
    except CorruptStore:  # a link, a FIFO, a directory: still the flag
        what = "a symbolic link" if os.path.islink(path) else "not a regular file"
        return f"an fsync failed ({FSYNC_FAILED} is {what}, not read)"
    except OSError:
        return "an fsync failed"
    text = raw.decode("utf-8", "replace").strip()
    if not text or len(text) > 500 or any(not c.isprintable() for c in text):
        return "an fsync failed"
    return text


def write_failed_flag(store_dir: str, why: str) -> None:
    """Record a failed fsync for every process; never through a link (a
    planted one is left as it is: readers take it as the flag anyway)."""
    try:
        fd = open_file(os.path.join(store_dir, FSYNC_FAILED),
                       os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    except (OSError, CorruptStore):
        return
    try:
        os.write(fd, (why + "\n").encode("utf-8", "replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


def save_state(store_dir: str, boot_id: str | None, synced: int) -> None:
    """Write ``sync-state`` atomically and durably."""
    write_atomic(os.path.join(store_dir, STATE_FILE),
                 json.dumps({"boot_id": boot_id, "synced_position": synced}).encode())


def write_atomic(path: str, data: bytes, sync: bool = True) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync dir."""
    d = os.path.dirname(path)
    tmp = os.path.join(d, f".tmp-{os.path.basename(path)}-{os.getpid()}-{time.monotonic_ns()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        write_all(fd, data)
        if sync:
            fsync_file(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError as e:
        os.unlink(tmp)  # no temp file left behind
        if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            # a directory planted at the name: damage, named
            raise not_a_file(path, "a directory") from None
        raise
    if sync:
        fsync_dir(d)


def quarantine(store_dir: str, source: str, offset: int, data: bytes, reason: str) -> str:
    """Keep removed bytes beside the store, with a note of where they came from.

    Never through a link (``quarantine`` linked outside the store is
    CorruptStore), and all or nothing: a failed write (a full disk) removes
    the ``.bin`` and ``.json`` it made before the error goes up."""
    qdir = make_dir(store_dir, QUARANTINE)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    base = os.path.join(qdir, f"{stamp}-{os.getpid()}-{time.monotonic_ns() % 10**9:09d}")
    note = {"source": os.path.relpath(source, store_dir), "offset": offset,
            "bytes": len(data), "reason": reason,
            "removed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    made: list[str] = []
    try:
        for path, body in ((base + ".bin", data),
                           (base + ".json", (json.dumps(note, indent=1) + "\n").encode())):
            fd = open_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            made.append(path)
            try:
                write_all(fd, body)
                fsync_file(fd)
            finally:
                os.close(fd)
        fsync_dir(qdir)
    except BaseException:
        for path in made:
            try:
                os.unlink(path)
            except OSError:
                pass
        raise
    return base + ".bin"


def make_dir(store_dir: str, name: str) -> str:
    """``STORE/name``, made if absent, refused (CorruptStore) if a link."""
    path = os.path.join(store_dir, name)
    if not check_not_link(path):
        try:
            os.mkdir(path)
        except FileExistsError:
            check_not_link(path)  # another process made it meanwhile
    return path


def cut_log_tail(store_dir: str, log) -> str | None:
    """Cut a torn tail off the last commit-log segment (caller holds the lock
    and has refreshed ``log``).  Returns the quarantine file, if any."""
    t = log.tail
    if not t.trailing or not log.list_segments():
        return None
    path = log.path(t.seg_first)
    with open(path, "r+b", opener=nofollow) as f:
        f.seek(t.end)
        data = f.read()
        kept = None
        if data:
            how = "a write a power cut interrupted" if t.trailing == "damaged" else t.trailing
            kept = quarantine(store_dir, path, t.end, data,
                              f"torn commit-log tail ({how}: {t.trailing_reason})")
        f.truncate(t.end)
        fsync_file(f.fileno())
    t.trailing = ""
    return kept


def fix_log_index(log, rebuild: bool = False) -> None:
    """Make the last segment's index hold exactly one entry per committed
    position (it is a cache: extend it from the data, drop extra entries).

    ``rebuild``: rewrite it whole and sync it.  That index is not synced per
    commit, so after a power cut it may be short, hold zeros, or point past
    frames that never reached the disk: after a reboot it is rebuilt once
    rather than trusted entry by entry."""
    from .index import OffsetIndex
    from .commitlog import IDX_SUFFIX

    if not log.list_segments():
        return
    idx = OffsetIndex(log.path(log.tail.seg_first, IDX_SUFFIX), writable=True)
    try:
        if rebuild:
            idx.truncate(0)
        log.reindex_tail(idx)
        if rebuild:
            idx.sync()
    finally:
        idx.close()


def materialize(stream_log, batch, is_committed, segment_bytes: int) -> bool:
    """Make sure a stream log holds the records of a committed batch; returns
    True if it had to write any.  Used after a reboot and by repair."""
    from ..errors import CorruptStore

    tail = stream_log.tail(is_committed, whole_batches=False)
    if tail.version >= batch.last_version:
        return False
    if tail.version < batch.first_version - 1:
        raise CorruptStore(
            f"stream {batch.stream!r}: versions {tail.version + 1}..{batch.first_version - 1} "
            "are missing from its stream log; run 'evstore repair'"
        )
    if tail.cut_from is not None:
        stream_log.cut(tail, lambda *a: None)
    if not stream_log.exists():
        stream_log.create()
    skip = tail.version - (batch.first_version - 1)
    frames = []
    for ev in batch.events(skip):
        blob = pack_fields(ev, MAX_PAYLOAD)  # the bytes its commit-log frame holds
        frames.append(encode_frame(STREAM_MAGIC, stream_payload(
            ev.version, ev.position, batch.recorded_us, blob)))
    stream_log.append(tail, frames, segment_bytes)
    return True


def sync_streams(touched) -> None:
    """fsync what the stream logs wrote since a point: the segments holding
    the versions written and the segments after them, their indexes, each
    stream's ``id`` file and the directories that name them (stream, shard,
    ``streams/``).  ``touched`` yields (stream_log, lowest version written).
    Only after this may ``sync-state`` say these streams are durable."""
    import bisect

    from ..backends.files.names import ID_FILE, STREAM_IDX as IDX_SUFFIX

    dirs: dict[str, None] = {}
    for sl, low in touched:
        firsts = sl.list_segments()
        start = max(bisect.bisect_right(firsts, low) - 1, 0)
        paths = [os.path.join(sl.dir, ID_FILE)]
        for first in firsts[start:]:
            paths += [sl.path(first), sl.path(first, IDX_SUFFIX)]
        for path in paths:
            try:
                fd = open_file(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # an index not made yet is rebuilt from its segment
            try:
                fsync_file(fd)
            finally:
                os.close(fd)
        shard = os.path.dirname(sl.dir)
        dirs[sl.dir] = dirs[shard] = dirs[os.path.dirname(shard)] = None
    for d in dirs:
        fsync_dir(d)
