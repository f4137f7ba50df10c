"""The in-memory reference backend: small enough to be obviously right.

Why it exists: it is the model the other backends are compared with (the
contract suite runs the same tests on it; the stateful model test drives it
beside the real thing), and it proves the seam without any I/O.  So it
favours plainness over speed: one lock guards everything, every event is a
tuple in one list indexed by position, and events are kept as the packed
bytes every backend stores and decoded on each read (so a caller mutating
what it appended or read changes nothing stored).

Nothing survives the process.  ``MemoryBackend.named(NAME)`` returns the
same instance for the same name within a process, so two EventStore
handles can share one store, as two handles on a directory do.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Sequence

from ..core import rules
from ..core.backend import (
    BACKEND_FORMAT, Appended, Backend, BulkSession, CheckpointRow, ConsumerBusy, DenseCheck,
    Prepared, StreamRow, Watcher, decode_event, merge_settings,
)
from ..disk.records import AppendResult
from ..errors import InvalidEvent, StoreLocked, StoreNotFound, StreamNotFound

CHUNK = 256  # events copied out per lock hold while reading


def _clock() -> int:
    """Microseconds since the epoch (a module function: tests replace it)."""
    return time.time_ns() // 1000


class Row(NamedTuple):
    stream: str
    version: int
    position: int
    recorded_us: int
    blob: bytes


class _State:
    """One store's contents, shared by every handle on it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows: list[Row] = []                 # position - 1 -> Row
        self.streams: dict[str, list[int]] = {}   # stream -> its positions
        self.last_us = 0
        self.created = False
        self.snapshots: dict[tuple[str, int], bytes] = {}
        self.checkpoints: dict[str, CheckpointRow] = {}
        self.held: set[str] = set()
        self.settings: dict = {}
        self.watchers: set = set()


class MemoryBackend(Backend):
    kind = "memory"
    _registry: dict[str, "_State"] = {}
    _registry_lock = threading.Lock()

    def __init__(self, name: str = "", *, lock_timeout: float = 30.0, sync: bool = True,
                 state: "_State | None" = None):
        self.location = f"memory:{name}"
        self.lock_timeout = lock_timeout
        self.sync = sync
        self._s = state if state is not None else _State()

    @classmethod
    def named(cls, name: str, *, create: bool = True, **kw) -> "MemoryBackend":
        """A new handle (with its own options) on the store called ``name``."""
        with cls._registry_lock:
            state = cls._registry.get(name)
            if state is None:
                if not create:
                    raise StoreNotFound(f"memory:{name}")
                state = cls._registry[name] = _State()
        return cls(name, state=state, **kw)

    # -- locking -------------------------------------------------------------------------
    @contextmanager
    def _writing(self, timeout: float | None = None):
        t = self.lock_timeout if timeout is None else timeout
        if not self._s.lock.acquire(timeout=max(t, 0)):
            raise StoreLocked(f"the store {self.location} is locked by another writer "
                              f"(waited {t:g}s)")
        try:
            self._s.created = True
            yield
        finally:
            self._s.lock.release()

    def _write_locked(self, stream: str, first_version: int, us: int,
                      blobs: Sequence[bytes]) -> AppendResult:
        positions = self._s.streams.setdefault(stream, [])
        for i, blob in enumerate(blobs):
            p = len(self._s.rows) + 1
            self._s.rows.append(Row(stream, first_version + i, p, us, bytes(blob)))
            positions.append(p)
        self._s.last_us = max(self._s.last_us, us)
        for w in list(self._s.watchers):
            w.poke()
        return AppendResult(stream, first_version + len(blobs) - 1, len(self._s.rows), len(blobs))

    # -- writing ---------------------------------------------------------------------------
    def append(self, stream: str, events: Sequence[Prepared], expected) -> Appended:
        ids = [e.id for e in events]
        with self._writing():
            current = len(self._s.streams.get(stream, ()))
            window = rules.retry_window(expected, current, len(events))
            stored = self._window(stream, window)
            verdict = rules.decide(stream, expected, current, ids, stored)
            if verdict is not None:
                return Appended(AppendResult(stream, *verdict), False, -1)
            us = max(_clock(), self._s.last_us)
            result = self._write_locked(stream, current + 1, us, [e.blob for e in events])
            return Appended(result, True, current)

    def _window(self, stream: str, window) -> list[rules.Stored]:
        if window is None:
            return []
        positions = self._s.streams.get(stream, [])[window[0] - 1:window[1]]
        return [rules.Stored(decode_event(*self._s.rows[p - 1]).id, self._s.rows[p - 1].version, p)
                for p in positions]

    @contextmanager
    def bulk(self, timeout: float | None = None):
        with self._writing(timeout):
            yield _MemoryBulk(self)

    # -- reading -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self._s.created

    def head(self) -> int:
        with self._s.lock:
            return len(self._s.rows)

    def version(self, stream: str) -> int:
        with self._s.lock:
            return len(self._s.streams.get(stream, ()))

    def read_stream(self, stream, lo=1, hi=None, backwards=False, limit=None, types=None):
        with self._s.lock:
            positions = list(self._s.streams.get(stream, ()))
        if not positions:
            raise StreamNotFound(stream)
        hi = len(positions) if hi is None else min(hi, len(positions))
        picked = positions[max(lo, 1) - 1:hi]
        return self._emit(picked, backwards, limit, types, None)

    def read_all(self, lo=1, hi=None, backwards=False, limit=None, types=None, prefix=None):
        head = self.head()
        hi = head if hi is None else min(hi, head)
        return self._emit(range(max(lo, 1), hi + 1), backwards, limit, types, prefix)

    def _emit(self, positions, backwards: bool, limit, types, prefix) -> Iterator:
        wanted = frozenset(types) if types else None
        order = list(reversed(positions)) if backwards else list(positions)
        n = 0
        for i in range(0, len(order), CHUNK):
            with self._s.lock:
                rows = [self._s.rows[p - 1] for p in order[i:i + CHUNK]]
            for row in rows:
                if limit is not None and n >= limit:
                    return
                if prefix is not None and not row.stream.startswith(prefix):
                    continue
                ev = decode_event(*row)
                if wanted is not None and ev.type not in wanted:
                    continue
                n += 1
                yield ev

    def streams(self, prefix: str | None = None) -> Iterator[StreamRow]:
        with self._s.lock:
            found = [(s, ps) for s, ps in self._s.streams.items()
                     if ps and (prefix is None or s.startswith(prefix))]
            rows = [StreamRow(s, len(ps), self._s.rows[ps[0] - 1].recorded_us,
                              self._s.rows[ps[-1] - 1].recorded_us) for s, ps in found]
        return iter(sorted(rows))

    def watcher(self) -> Watcher:
        w = _MemoryWatcher(self)
        with self._s.lock:
            self._s.watchers.add(w)
        return w

    # -- small documents ------------------------------------------------------------------------
    def put_snapshot(self, stream, version, body):
        with self._s.lock:
            self._s.created = True
            self._s.snapshots[(stream, version)] = bytes(body)

    def get_snapshot(self, stream, version):
        with self._s.lock:
            return self._s.snapshots.get((stream, version))

    def snapshot_versions(self, stream):
        with self._s.lock:
            return sorted(v for s, v in self._s.snapshots if s == stream)

    def delete_snapshot(self, stream, version):
        with self._s.lock:
            return self._s.snapshots.pop((stream, version), None) is not None

    def get_checkpoint(self, name):
        with self._s.lock:
            return self._s.checkpoints.get(name)

    def put_checkpoint(self, row: CheckpointRow):
        with self._s.lock:
            self._s.created = True
            self._s.checkpoints[row.name] = CheckpointRow(*row)

    def delete_checkpoint(self, name):
        with self._s.lock:
            return self._s.checkpoints.pop(name, None) is not None

    def checkpoints(self):
        with self._s.lock:
            return [self._s.checkpoints[k] for k in sorted(self._s.checkpoints)]

    @contextmanager
    def hold_checkpoint(self, name: str):
        with self._s.lock:
            if name in self._s.held:
                raise ConsumerBusy(name)
            self._s.held.add(name)
        try:
            yield
        finally:
            with self._s.lock:
                self._s.held.discard(name)

    def settings(self) -> dict:
        with self._s.lock:
            return dict(self._s.settings)

    def update_settings(self, changes: dict) -> dict:
        with self._writing():
            self._s.settings = merge_settings(self._s.settings, changes)
            return dict(self._s.settings)

    # -- whole-store ------------------------------------------------------------------------------
    def stats(self) -> dict:
        with self._s.lock:
            rows = self._s.rows
            return {"backend": self.kind, "streams": len(self._s.streams), "events": len(rows),
                    "bytes": sum(len(r.blob) for r in rows), "segments": 0,
                    "snapshots": len(self._s.snapshots), "format_version": BACKEND_FORMAT,
                    "first_recorded_us": rows[0].recorded_us if rows else None,
                    "last_recorded_us": rows[-1].recorded_us if rows else None}

    def verify(self) -> list[dict]:
        with self._s.lock:
            rows, snaps = list(self._s.rows), list(self._s.snapshots)
        check = DenseCheck()
        for row in rows:
            check.add(row.stream, row.version, row.position, row.recorded_us)
        for stream, version in snaps:
            if version > check.versions.get(stream, 0):
                check.problem("snapshot", f"a snapshot at version {version} of a stream "
                              f"at version {check.versions.get(stream, 0)}",
                              stream=stream, version=version)
        return check.problems


class _MemoryBulk(BulkSession):
    def __init__(self, backend: MemoryBackend):
        self._b = backend

    @property
    def head(self) -> int:
        return len(self._b._s.rows)

    def version(self, stream: str) -> int:
        return len(self._b._s.streams.get(stream, ()))

    def write(self, stream, first_version, first_position, recorded_us, blobs):
        b = self._b
        why = rules.continues(stream, first_version, first_position, recorded_us,
                              self.version(stream), self.head, b._s.last_us)
        if why:
            raise InvalidEvent(why)
        return b._write_locked(stream, first_version, recorded_us, blobs)

    def sync(self) -> None:
        pass


class _MemoryWatcher(Watcher):
    """Commits write a byte to the watcher's own pipe (see Watcher)."""

    def poke(self) -> None:
        try:
            os.write(self._w, b".")
        except OSError:
            pass  # full: a wake-up is already pending

    def close(self) -> None:
        with self.backend._s.lock:
            self.backend._s.watchers.discard(self)
        super().close()
