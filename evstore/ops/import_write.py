"""Import, pass 2's pieces: the plan's result, holding the input's events
against the store's own (a rerun skips what the store already holds), the
read views of a store the plan checks against, and the writer that puts the
checked batches through the backend's bulk session.

``CheckedInput.plan`` and ``.write`` (importer.py) drive them.  Kept apart
from checking (import_check.py), which never sees a store.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from ..model import datetime_to_us


@dataclass
class ImportResult:
    events: int = 0
    batches: int = 0
    streams: int = 0
    first_position: int | None = None
    last_position: int | None = None
    seconds: float = 0.0
    #: events of the input the store already held (a resumed or repeated import)
    skipped: int = 0
    #: events in the input
    total: int = 0
    #: stopped early (``stop()``): events and last_position say how far it got
    interrupted: bool = False
    dry_run: bool = False

    def to_dict(self) -> dict:
        d = {"events": self.events, "batches": self.batches, "streams": self.streams,
             "first_position": self.first_position, "last_position": self.last_position,
             "seconds": round(self.seconds, 3), "skipped": self.skipped}
        if self.dry_run:
            d["dry_run"] = True
        return d


@dataclass
class _Plan:
    events: int = 0
    skipped: int = 0
    batches: int = 0
    streams: int = 0
    first_p: int | None = None
    last_p: int | None = None
    #: stream -> the last version already in the store (events up to it are skipped)
    floors: dict = field(default_factory=dict)

    def result(self, seconds: float, total: int) -> ImportResult:
        return ImportResult(self.events, self.batches, self.streams, self.first_p, self.last_p,
                            seconds, skipped=self.skipped, total=total, dry_run=True)


def _event_id(blob: bytes) -> str:
    return msgpack.unpackb(b"\x94" + blob, raw=False, strict_map_key=False)[0]


def _compare(have: list, stream: str, fv: int, blobs: list, fp: int | None = None):
    """None when the store's events ``have`` are these (same stream, ids,
    versions and, when ``fp`` is given, positions); else (index of the
    first that differs, what the store holds instead)."""
    for i, blob in enumerate(blobs):
        h = have[i] if i < len(have) else None
        if h is None:
            return i, "no event" if fp is not None else "missing"
        eid = _event_id(blob)
        if (h.stream != stream or h.version != fv + i or h.id != eid
                or (fp is not None and h.position != fp + i)):
            return i, (f"a different event (stream {h.stream!r} version {h.version}, id {h.id}; "
                       f"the input has {stream!r} version {fv + i}, id {eid})")
    return None


class _ReadView:
    """The store as the plan sees it without the lock (None: no store)."""

    def __init__(self, store):
        self.store = store

    def version(self, stream: str) -> int:
        return self.store.version(stream) if self.store is not None else 0

    def read(self, stream: str, lo: int, hi: int) -> list:
        from ..errors import NotFound

        if self.store is None:
            return []
        try:
            return list(self.store.read(stream, from_version=lo, to_version=hi))
        except NotFound:
            return []

    def read_all(self, lo: int, hi: int) -> list:
        if self.store is None:
            return []
        return list(self.store.read_all(from_position=lo, to_position=hi))

    def last_us(self, stream: str) -> int:
        v = self.version(stream)
        have = self.read(stream, v, v) if v else []
        return datetime_to_us(have[0].recorded_at) if have else 0


class _LockedView(_ReadView):
    """The same, under the writer lock: versions from the writer's tails."""

    def __init__(self, store, bulk):
        super().__init__(store)
        self.bulk = bulk

    def version(self, stream: str) -> int:
        return self.bulk.version(stream)


def _store_tail(store) -> tuple[int, int]:
    """(last position, its recorded_us) of ``store`` (None: no store): the
    last event, read like any other (on every backend)."""
    if store is None:
        return 0, 0
    for ev in store.read_all(backwards=True, limit=1):
        return ev.position, datetime_to_us(ev.recorded_at)
    return 0, 0


class _BatchWriter:
    """Writes checked batches through the backend's bulk session
    (:meth:`evstore.core.backend.Backend.bulk`), which excludes other writers
    for the whole import, making them durable once per ``batch_size`` events
    (or only at the end with ``--no-sync``).  See docs/OPERATIONS.md, "Import"."""

    def __init__(self, store, sync: bool, batch_size: int):
        self.store = store
        self.sync = sync
        self.batch_size = batch_size
        self.unsynced = 0

    def __enter__(self):
        # Read before the session: a backend's reads may wait for its lock
        # (memory's does).  A session that knows the exact figure under
        # its lock says so (``last_recorded_us``); each write is checked
        # against the store anyway.
        self.last_us = _store_tail(self.store)[1]
        self._cm = self.store.bulk()
        self.bulk = self._cm.__enter__()
        return self

    def write(self, stream, fv, fp, us, blobs):
        """``fp`` None: the batch takes the next positions (a merge)."""
        res = self.bulk.write(stream, fv, fp, us, blobs)
        self.unsynced += res.count
        if self.sync and self.unsynced >= self.batch_size:
            self.bulk.sync()
            self.unsynced = 0
        return res

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None and self.sync:
                self.bulk.finish()
        finally:
            self._cm.__exit__(exc_type, exc, tb)
        return False
