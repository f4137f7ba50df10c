"""Snapshots: a stream's state at a version, saved so replays start there.

A snapshot is a cache.  It is never the only copy of anything: the events are
the truth, and a snapshot that is missing, damaged, made by another reducer or
made for events that are no longer there is simply not used (replay says why)
and is reported by ``replay --verify-snapshots``.

Written once for every backend: this module owns the document, the
backend stores its bytes (``put_snapshot``/``get_snapshot``; in a directory,
one file per snapshot, :mod:`evstore.backends.files.documents`).  Versions
come from ``snapshot_versions`` (in a directory, one listing of names), so
"the latest at or below V" is a bisection and only the chosen snapshot is
read.  A snapshot is three lines of UTF-8 JSON, so ``jq`` can read it::

    line 1  header  {"evstore_snapshot": 1, "stream", "version", "event_id",
                     "reducer", "fingerprint", "created_at"}
    line 2  state   the state, as one line of JSON
    line 3  check   {"sha256": hex SHA-256 of the bytes of lines 1 and 2}

(the check line of :mod:`evstore.core.checkline`, shared with checkpoints
and the settings).

The header comes first and is small, so a reducer's fingerprint can be checked
by reading one short line, however large the state.  ``event_id`` is the id of
the event at ``version``: a snapshot whose event is no longer there (a store
rebuilt under it) is not used.  Backends replace a snapshot atomically:
readers see the old one or the new, whole, and two processes saving the same
snapshot at once just replace one whole snapshot with another.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from ..errors import CorruptStore, InvalidEvent, NotFound, StoreIOError, UsageError
from ..model import check_json_value, check_stream_id, format_timestamp
from ..core.checkline import seal, unseal

FORMAT = 1
_HEADER_LIMIT = 64 * 1024  # a header is a few hundred bytes; more is damage



class SnapshotNotFound(NotFound):
    """No snapshot matches (exit 4)."""


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot's header: everything but the state.  ``problem`` is set
    (and the other fields may be None) when the header cannot be read."""

    stream: str
    version: int
    path: str
    reducer: str | None = None
    fingerprint: str | None = None
    event_id: str | None = None
    created_at: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """A stream's state at ``version``, as saved."""

    stream: str
    version: int
    state: Any
    created_at: str
    reducer: str
    fingerprint: str
    event_id: str | None
    path: str

    def to_dict(self) -> dict:
        """The object ``evstore snapshot`` prints (docs/CLI-JSON.md)."""
        return {"stream": self.stream, "version": self.version, "state": self.state,
                "created_at": self.created_at}


def _now() -> str:
    return format_timestamp(datetime.now(timezone.utc))


def encode(stream: str, version: int, state, reducer: str, fingerprint: str,
           event_id: str | None, created_at: str) -> bytes:
    header = {"evstore_snapshot": FORMAT, "stream": stream, "version": version,
              "event_id": event_id, "reducer": reducer, "fingerprint": fingerprint,
              "created_at": created_at}
    return seal((json.dumps(header, ensure_ascii=False) + "\n"
                 + json.dumps(state, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"))


class SnapshotStore:
    """The snapshots of one store (an EventStore: this uses its backend).
    Cheap to make; holds nothing open."""

    def __init__(self, store):
        self.store = store
        self.backend = store.backend

    # -- where (a directory's backend names files; for tests and messages) --------------
    def stream_dir(self, stream: str) -> str:
        return self.backend.snapshot_dir(stream)

    def path(self, stream: str, version: int) -> str:
        return self.backend.snapshot_path(stream, version)

    def _where(self, stream: str, version: int) -> str:
        return self.backend.describe_snapshot(stream, version)

    def versions(self, stream: str) -> list[int]:
        """The versions that have a snapshot, ascending."""
        return self.backend.snapshot_versions(stream)

    # -- writing ------------------------------------------------------------------------
    def save(self, stream: str, state, version: int, reducer=None, *,
             event_id: str | None = None) -> Snapshot:
        """Save ``state`` as the stream's state at ``version``.

        ``reducer`` (a spec, callable or Reducer; default the store's reducer,
        else ``merge``) is the reducer the state belongs to: only replays with
        that reducer start from it.  The version must exist (NotFound, exit 4)
        and the state must be JSON that round-trips exactly (InvalidEvent,
        exit 5).  Replaces a snapshot already at that version.
        """
        from .reducers import load_reducer

        check_stream_id(stream)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise UsageError(f"invalid snapshot version {version!r}: must be a whole number >= 1")
        r = load_reducer(reducer if reducer is not None else self.store.reducer,
                         base=getattr(self.store, "directory", None))
        try:
            check_json_value(state, "snapshot state")
        except InvalidEvent as e:
            raise InvalidEvent(f"{e} (a snapshot's state must be JSON)") from None
        if event_id is None:
            event_id = self._event_id(stream, version)
        data = encode(stream, version, state, r.name, r.fingerprint, event_id, _now())
        self.backend.put_snapshot(stream, version, data)
        return decode(stream, version, self._where(stream, version), data)

    def _event_id(self, stream: str, version: int) -> str:
        current = self.store.version(stream)
        if current == 0:
            from ..errors import StreamNotFound
            raise StreamNotFound(stream)
        if version > current:
            raise NotFound(f"stream {stream!r} has no version {version} "
                           f"(its current version is {current})")
        for ev in self.store.read(stream, from_version=version, limit=1):
            if ev.version == version:
                return ev.id
            if ev.version == version + 1:
                # the state just before the first readable event (a truncated
                # stream's replays start there): its event is gone, so no id
                return None
            break
        raise NotFound(f"stream {stream!r} has no version {version}"
                       + " that is readable (deleted, truncated or past retention)")

    # -- reading ------------------------------------------------------------------------
    def header(self, stream: str, version: int) -> SnapshotInfo:
        """Read only the first line of a snapshot."""
        path = self._where(stream, version)
        try:
            line = self.backend.get_snapshot_head(stream, version, _HEADER_LIMIT)
        except (OSError, StoreIOError) as e:
            return SnapshotInfo(stream, version, path,
                                problem=f"unreadable: {getattr(e, 'strerror', None) or e}")
        except CorruptStore:
            return SnapshotInfo(stream, version, path, problem=(
                "damaged: it is a symbolic link; evstore does not follow links inside the store"))
        if line is None:
            raise SnapshotNotFound(f"no snapshot of {stream!r} at version {version}")
        try:
            h = self._check_header(line, stream, version)
        except ValueError as e:
            return SnapshotInfo(stream, version, path, problem=str(e))
        return SnapshotInfo(stream, version, path, h["reducer"], h["fingerprint"],
                            h.get("event_id"), h["created_at"])

    @staticmethod
    def _check_header(line: bytes, stream: str, version: int) -> dict:
        if not line.endswith(b"\n"):
            raise ValueError("damaged: the header line is cut short")
        try:
            h = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("damaged: the header is not JSON") from None
        if not isinstance(h, dict) or h.get("evstore_snapshot") != FORMAT:
            raise ValueError("damaged: not an evstore snapshot (format 1)")
        if h.get("stream") != stream:
            raise ValueError(f"damaged: the file is for stream {h.get('stream')!r}")
        if h.get("version") != version:
            raise ValueError(f"damaged: the file says version {h.get('version')!r}")
        for k in ("reducer", "fingerprint", "created_at"):
            if not isinstance(h.get(k), str):
                raise ValueError(f"damaged: the header has no {k}")
        return h

    def load(self, stream: str, version: int) -> Snapshot:
        """The snapshot at exactly ``version``: SnapshotNotFound when there
        is none, CorruptStore (exit 6) when its file is damaged."""
        data = self.backend.get_snapshot(stream, version)
        if data is None:
            raise SnapshotNotFound(f"no snapshot of {stream!r} at version {version}")
        return self._decode(stream, version, self._where(stream, version), data)

    def _decode(self, stream: str, version: int, path: str, data: bytes) -> Snapshot:
        return decode(stream, version, path, data)

    def list(self, stream: str) -> list[SnapshotInfo]:
        """Every snapshot of ``stream``, oldest first (headers only)."""
        check_stream_id(stream)
        return [self.header(stream, v) for v in self.versions(stream)]

    def latest(self, stream: str, max_version: int | None = None,
               reducer=None) -> Snapshot | None:
        """The newest snapshot at or below ``max_version`` (default: any),
        made by ``reducer`` when one is given; None when there is none.

        Raises CorruptStore when the snapshot it picks is damaged: a library
        caller asking for "the latest" should hear about damage, not get an
        older one.  Replays use :meth:`usable`, which steps over damage.
        """
        check_stream_id(stream)
        fingerprint = None
        if reducer is not None:
            from .reducers import load_reducer
            fingerprint = load_reducer(reducer, base=getattr(self.store, "directory", None)).fingerprint
        for v in self._downwards(stream, max_version, self._lowest(stream)):
            if fingerprint is not None:
                h = self.header(stream, v)
                if h.problem is None and h.fingerprint != fingerprint:
                    continue
            return self.load(stream, v)
        return None

    def _downwards(self, stream: str, max_version: int | None,
                   min_version: int = 1) -> Iterator[int]:
        import bisect

        vs = self.versions(stream)
        i = len(vs) if max_version is None else bisect.bisect_right(vs, max_version)
        j = bisect.bisect_left(vs, min_version, 0, i)
        return reversed(vs[j:i])

    def _lowest(self, stream: str) -> int:
        """The lowest version whose snapshot may be used: snapshots of a
        deleted stream at or below its version when deleted belong to
        events that are gone (compact removes them)."""
        f = getattr(self.store, "forgetting", None)
        cut = f().cuts.get(stream) if f is not None else None
        return cut.deleted + 1 if cut is not None else 1

    def usable(self, stream: str, max_version: int, reducer,
               event_id: Callable[[int], str | None] | None = None,
               min_version: int | None = None) -> tuple[Snapshot | None, list[str]]:
        """The newest snapshot at or below ``max_version`` (and at or above
        ``min_version``, default: any after the stream's last delete) that
        ``reducer`` (a loaded Reducer) may start from, and why each newer
        one was not.

        Only headers are read until one matches; a damaged file is stepped
        over (and named), never fatal.  ``event_id(v)`` gives the id of the
        stream's event at v (None: it is not readable, so not checked), to
        reject snapshots made for other events.
        """
        notes: list[str] = []
        if min_version is None:
            min_version = self._lowest(stream)
        for v in self._downwards(stream, max_version, min_version):
            h = self.header(stream, v)
            if h.problem:
                notes.append(f"the snapshot at version {v} is {h.problem}")
                continue
            if h.fingerprint != reducer.fingerprint:
                if h.reducer == reducer.name:
                    notes.append(f"the snapshot at version {v} was made by another version "
                                 f"of {h.reducer} (its source has changed since)")
                else:
                    notes.append(f"the snapshot at version {v} was made by reducer "
                                 f"{h.reducer}, not {reducer.name}")
                continue
            try:
                snap = self.load(stream, v)
            except CorruptStore as e:
                notes.append(f"the snapshot at version {v} is damaged "
                             f"({str(e).rpartition(': ')[2]})")
                continue
            eid = event_id(v) if event_id is not None and snap.event_id is not None else None
            if eid is not None and eid != snap.event_id:
                notes.append(f"the snapshot at version {v} was made for another event at "
                             "that version (the stream was rewritten since)")
                continue
            return snap, notes
        return None, notes

    def count(self) -> int:
        """How many snapshot files the store holds (all streams)."""
        return self.backend.snapshot_count()

    def delete(self, stream: str, version: int) -> None:
        if not self.backend.delete_snapshot(stream, version):
            raise SnapshotNotFound(f"no snapshot of {stream!r} at version {version}")


def decode(stream: str, version: int, path: str, data: bytes) -> Snapshot:
    """A snapshot from its stored bytes; CorruptStore (exit 6) says what is
    wrong, naming ``path`` (a directory's file, else a description)."""

    def damaged(why: str):
        return CorruptStore(f"snapshot {path} (stream {stream!r}, version {version}) "
                            f"is damaged: {why}")

    lines = data.split(b"\n")
    if len(lines) != 4 or lines[3] != b"":
        raise damaged("it does not have the three lines of a snapshot")
    try:
        _body, sealed = unseal(data)
    except ValueError as e:
        raise damaged(str(e)) from None
    if not sealed:
        raise damaged("the checksum line is unreadable")
    try:
        h = SnapshotStore._check_header(lines[0] + b"\n", stream, version)
        state = json.loads(lines[1])
    except ValueError as e:
        raise damaged(str(e).removeprefix("damaged: ")) from None
    return Snapshot(stream, version, state, h["created_at"], h["reducer"],
                    h["fingerprint"], h.get("event_id"), path)
