"""Checks that verify and repair share: the marker, sync-state, index files,
a stream directory's id file, snapshot files, and the pieces of a batch's
payload.  (One stream directory against the commit log's view of it is
:mod:`evstore.ops.stream_check`.)

Each returns findings; none prints or changes anything.
"""
from __future__ import annotations

import os
import re
import sys
import zlib
from array import array

import msgpack

from ..disk.format import FORMAT_VERSION, STREAM_MAGIC
from ..model import check_stream_id, unpack
from ..disk.streamdir import stream_key
from ..disk.frames import frame_at
from ..disk.heads import record_head
from ..disk.streamwalk import SOUND, stream_records
from . import layout as L

_crc32 = zlib.crc32


def store_directory(store) -> str:
    from ..errors import StoreNotFound

    d = getattr(store, "directory", None)
    if d is None:
        d = os.fspath(store)
        if not (os.path.isfile(os.path.join(d, L.MARKER))
                or os.path.isdir(os.path.join(d, L.LOG_DIR))):
            raise StoreNotFound(d)
    return str(d)


def read_state(directory: str):
    """(boot id, synced position, problem text or None) of ``sync-state``."""
    import json

    path = os.path.join(directory, L.STATE_FILE)
    try:
        with open(path, "rb", opener=L.opener) as f:
            raw = f.read()
    except FileNotFoundError:
        return None, 0, None
    except OSError as e:
        return None, 0, f"unreadable ({e.strerror or e})"
    try:
        d = json.loads(raw)
        synced = d["synced_position"]
        boot = d.get("boot_id")
        if type(synced) is not int or synced < 0 or not (boot is None or isinstance(boot, str)):
            raise ValueError("bad field types")
        return boot, synced, None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return None, 0, f"unreadable ({e})"


def marker_problem(directory: str) -> str | None:
    import json

    path = os.path.join(directory, L.MARKER)
    try:
        with open(path, "rb", opener=L.opener) as f:
            meta = json.loads(f.read())
    except FileNotFoundError:
        return "the store marker is missing"
    except (ValueError, OSError) as e:
        return f"the store marker is unreadable ({e})"
    if not isinstance(meta, dict) or meta.get("format") != "evstore":
        return "the store marker does not say format \"evstore\""
    if meta.get("format_version") != FORMAT_VERSION:
        return (f"the store marker says format version {meta.get('format_version')!r}; "
                f"this evstore reads version {FORMAT_VERSION}")
    return None


def read_index(idx_path: str) -> bytes | None:
    """An index file's bytes (None when missing).  Read it *before* the data
    it indexes: writers append data first and index entries after, so every
    entry read first points at data that the later read sees."""
    try:
        with open(idx_path, "rb", opener=L.opener) as f:
            return f.read()
    except FileNotFoundError:
        return None


def index_problem(idx_path: str, expected: array, extra: array | None = None,
                  label: str = "position", first: int = 1, data=False,
                  torn_ok: bool = False) -> str | None:
    """Compare an ``.idx`` file with the offsets the data says it must hold.

    ``expected`` (offsets, in order) must be there exactly; ``extra`` lists
    offsets the index *may* also hold after them (uncommitted records).
    ``data``: the index's bytes as read before the data (see read_index).
    ``torn_ok``: ignore a partial last entry (the caller warns about it).
    """
    if data is False:
        data = read_index(idx_path)
    if data is None:
        return "index file is missing" if len(expected) else None
    if torn_ok:  # a last segment's index: a half-written last entry is harmless
        data = data[:len(data) - len(data) % 8]
    want = be_offsets(expected)
    if len(data) % 8:
        return f"index is {len(data)} bytes, not a whole number of 8-byte entries"
    if data[:len(want)] != want:
        n = len(data) // 8
        for i in range(min(n, len(expected))):
            got = int.from_bytes(data[8 * i:8 * i + 8], "big")
            if got != expected[i]:
                return (f"index entry for {label} {first + i} says offset {got}, "
                        f"the record is at {expected[i]}")
        return (f"index ends after {n} entries; {label}s {first + n}..{first + len(expected) - 1} "
                "have no entry")
    if len(data) > len(want):
        allowed = be_offsets(extra) if extra is not None else b""
        tail = data[len(want):]
        if tail != allowed[:len(tail)]:
            return (f"index holds {len(tail) // 8} entries past the last {label} "
                    f"({first + len(expected) - 1}) that point at no record")
    return None


def be_offsets(a: array) -> bytes:
    b = array("Q", a)
    if b.itemsize != 8:  # pragma: no cover
        return b"".join(x.to_bytes(8, "big") for x in a)
    if sys.byteorder == "little":
        b.byteswap()
    return b.tobytes()


def read_stream_id(path: str):
    """(stream id, None) from a stream directory's ``id`` file, or (None, why)."""
    try:
        with open(os.path.join(path, L.ID_FILE), "rb", opener=L.opener) as f:
            raw = f.read()
    except FileNotFoundError:
        return None, "the stream's id file is missing"
    except OSError as e:
        return None, f"the stream's id file cannot be read ({e.strerror})"
    try:
        sid = raw.decode("utf-8")
        check_stream_id(sid, new=False)
    except Exception as e:  # noqa: BLE001 - UnicodeDecodeError or InvalidStreamId
        return None, f"the stream's id file does not hold a valid stream id ({e})"
    if stream_key(sid) != os.path.basename(path):
        return None, (f"the stream's id file names {sid!r}, which lives in "
                      f"{stream_key(sid)}, not here")
    return sid, None


def snapshot_findings(directory: str, versions: dict, live: bool = False):
    """Yield (path, what is wrong, stream, version) for each snapshot file that is damaged
    (its checksum, its header), belongs to no stream of the store, is past
    its stream's version, or was made for another event than the one at its
    version.  The snapshot module reads the files (it owns their format).
    With ``live``, snapshots past the version seen are not judged: a writer
    may have appended and snapshotted since."""
    from ..features import snapshots as snapmod

    root = os.path.join(directory, L.SNAPSHOTS_DIR)
    known = {stream_key(s): s for s in versions}

    snaps = snapmod.SnapshotStore(_SnapshotFiles(directory))
    for key, kpath in L.stream_dirs(root):
        if key is None:
            continue
        stream = known.get(key)
        for name in L.listdir(kpath):
            spath = os.path.join(kpath, name)
            if L.is_temp(name):
                continue
            m = re.match(r"(\d{16})\.snap\Z", name)
            if not m:
                yield spath, "unexpected file among snapshots", None, None
                continue
            version = int(m.group(1))
            if stream is None:
                yield spath, "snapshot of a stream that has no events in this store", None, version
                continue
            try:
                snap = snaps.load(stream, version)
            except Exception as e:  # noqa: BLE001 - CorruptStore, StoreIOError: damaged
                yield spath, f"damaged snapshot: {str(e).rpartition('is damaged: ')[2]}", stream, version
                continue
            have = versions.get(stream, 0)
            if version > have:
                if not live:
                    yield spath, (f"snapshot at version {version}, past the stream's version "
                                  f"({have})"), stream, version
                continue
            if snap.event_id is not None:
                eid = _event_id(os.path.join(directory, L.STREAMS_DIR, key[:2], key), version)
                if eid is not None and eid != snap.event_id:
                    yield spath, (f"snapshot made for another event than the one at version "
                                  f"{version} ({snap.event_id}, the store has {eid})"), stream, version


class _SnapshotFiles:
    """What SnapshotStore needs to read a directory's snapshots: the file
    backend's snapshot storage, without opening the store (verify checks
    stores that may not open)."""

    reducer = None

    def __init__(self, directory: str):
        from ..backends.files.documents import FileSnapshots

        class _Files(FileSnapshots):
            sync = False

        self.directory = directory
        self.backend = _Files()
        self.backend.directory = directory


def _event_id(path: str, version: int):
    """The id of a stream's event at ``version``, from its stream log (None
    when it cannot be read: the stream check reports that)."""
    import bisect

    firsts = L.numbered(L.listdir(path), L.STREAM_SEG)
    i = bisect.bisect_right(firsts, version) - 1
    if i < 0:
        return None
    first = firsts[i]
    spath = L.seg_path(path, first, L.STREAM_SEG)
    try:
        opening = L.opened(spath)
    except OSError:
        return None
    with opening as fd:
        try:
            size = os.fstat(fd).st_size
            data = read_index(L.seg_path(path, first, L.STREAM_IDX)) or b""
            k = version - first
            offs = [int.from_bytes(data[8 * k:8 * k + 8], "big")] if len(data) >= 8 * k + 8 else []
            for off in offs:
                payload = frame_at(fd, STREAM_MAGIC, off, size)
                if payload is not None and record_head(payload)[0] == version:
                    return unpack(payload)[3]
            for label, _off, _end, what, x in stream_records(fd):
                if label == SOUND and what[0] == version:
                    return unpack(x)[3]
        except (ValueError, IndexError):
            return None
    return None


def iter_blobs(payload, hl: int, n: int):
    """:func:`split_blobs`, one blob at a time; a big payload
    (bigframe.BigPayload) is read a chunk at a time, never whole."""
    from ..disk.bigframe import CHUNK, BigPayload

    if not isinstance(payload, BigPayload):
        yield from split_blobs(payload, hl, n)
        return
    off, buf, done = hl, b"", 0  # payload offset of buf[0]
    while done < n:
        more = payload.read_at(off + len(buf), CHUNK)
        if not more:
            raise ValueError("the payload ends inside an event")
        buf += more
        up = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max(len(buf), 1))
        up.feed(buf)
        start = 0
        try:
            while done < n:
                for _ in range(4):
                    up.skip()
                end = up.tell()
                yield buf[start:end]
                start = end
                done += 1
        except msgpack.OutOfData:
            pass
        buf, off = buf[start:], off + start


def split_blobs(payload, hl: int, n: int) -> list[bytes]:
    """The packed fields of each of a batch's ``n`` events, as bytes."""
    up = msgpack.Unpacker(raw=False, strict_map_key=False)
    body = bytes(payload[hl:])
    up.feed(body)
    out = []
    start = 0
    for _ in range(n):
        for _ in range(4):
            up.skip()
        end = up.tell()
        out.append(body[start:end])
        start = end
    return out


def or_none(fn, *args):
    try:
        return fn(*args)
    except (OSError, ValueError):
        return None
