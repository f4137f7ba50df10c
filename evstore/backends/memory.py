"""The in-memory reference backend: small enough to be obviously right.

Why it exists: it is the model the other backends are compared with (the
contract suite runs the same tests on it; the stateful model test drives it
beside the real thing), and it proves the seam without any I/O.  So it
favours plainness over speed: one lock guards everything, every event is a
tuple in one list indexed by position, and events are kept as the packed
bytes every backend stores and decoded on each read (so a caller mutating
what it appended or read changes nothing stored).

Forgetting: cuts and retention rules are two dicts; ``compact`` replaces a
removed event's row by None (its position stays a gap, the head never moves
back) and drops it from its stream's list of positions, so each stream
keeps the suffix of its versions that is still stored; ``versions`` keeps
every stream's version, removed events included.

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
from ..core.forgetting import Cut, Retention, check_append, plan_cut
from ..model import AppendResult
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
        self.rows: list[Row | None] = []          # position - 1 -> Row (None: compacted)
        self.streams: dict[str, list[int]] = {}   # stream -> positions still stored
        self.versions: dict[str, int] = {}        # stream -> version (removed events count)
        self.cuts: dict[str, Cut] = {}
        self.rules: dict[tuple[str, bool], Retention] = {}
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
                      blobs: Sequence[bytes], first_position: int | None = None) -> AppendResult:
        """Store one batch; ``first_position`` past the head (an import of
        an export with removed events) leaves the positions between as gaps."""
        rows = self._s.rows
        if first_position is not None:
            rows.extend([None] * (first_position - 1 - len(rows)))
        positions = self._s.streams.setdefault(stream, [])
        if first_version != self._s.versions.get(stream, 0) + 1:
            # an import that continues a stream past a gap (versions removed
            # where it was exported): what this store held before it is removed too
            for p in positions:
                rows[p - 1] = None
            positions.clear()
        for i, blob in enumerate(blobs):
            p = len(rows) + 1
            rows.append(Row(stream, first_version + i, p, us, bytes(blob)))
            positions.append(p)
        self._s.versions[stream] = first_version + len(blobs) - 1
        self._s.last_us = max(self._s.last_us, us)
        for w in list(self._s.watchers):
            w.poke()
        return AppendResult(stream, first_version + len(blobs) - 1, len(self._s.rows), len(blobs))

    # -- writing ---------------------------------------------------------------------------
    def append(self, stream: str, events: Sequence[Prepared], expected) -> Appended:
        ids = [e.id for e in events]
        with self._writing():
            check_append(self._s.cuts.get(stream), stream)
            current = self._s.versions.get(stream, 0)
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
        positions = self._stored(stream, window[0], window[1])
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
            return self._s.versions.get(stream, 0)

    def _stored(self, stream: str, lo: int, hi: int) -> list[int]:
        """The positions of the stream's stored events with versions in
        [lo, hi] (under the lock): its stored versions are a suffix."""
        positions = self._s.streams.get(stream, [])
        first = self._s.versions.get(stream, 0) - len(positions) + 1
        return positions[max(lo - first, 0):max(hi - first + 1, 0)]

    def read_stream(self, stream, lo=1, hi=None, backwards=False, limit=None, types=None):
        with self._s.lock:
            current = self._s.versions.get(stream, 0)
            if not self._s.streams.get(stream):  # none stored (or all compacted)
                raise StreamNotFound(stream)
            hi = current if hi is None else min(hi, current)
            picked = self._stored(stream, max(lo, 1), hi)
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
                if row is None:  # compacted
                    continue
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
            rows = [StreamRow(s, self._s.versions[s], self._s.rows[ps[0] - 1].recorded_us,
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

    # -- forgetting --------------------------------------------------------------------------------
    def cut(self, stream, expected, before, hard):
        with self._writing():
            version = self._s.versions.get(stream, 0)
            new = plan_cut(self._s.cuts.get(stream), stream, version, expected, before, hard)
            self._s.cuts[stream] = new
            return version, new

    # Without the lock (one copy of a dict is atomic in CPython): compact
    # asks the view while it holds the writer lock.
    def cuts(self):
        return dict(self._s.cuts)

    def retention_rules(self):
        return list(self._s.rules.values())

    def set_retention(self, rule):
        with self._writing():
            key = (rule.target, rule.prefix)
            if rule.max_age_us is None and rule.max_count is None:
                self._s.rules.pop(key, None)
            else:
                self._s.rules[key] = Retention(*rule)

    def compact(self, view, dry_run=False, progress=None):
        """One pass under the writer lock (memory has nothing to copy)."""
        with self._writing():
            s = self._s
            v = view()
            before = self._bytes()
            removed = 0
            freed = 0
            for stream, positions in s.streams.items():
                current = s.versions[stream]
                gone = 0
                for p in positions:  # removed events are a prefix of the stored ones
                    row = s.rows[p - 1]
                    if v.readable(stream, row.version, row.recorded_us, current):
                        break
                    gone += 1
                    freed += len(row.blob)
                if gone and not dry_run:
                    for p in positions[:gone]:
                        s.rows[p - 1] = None
                    del positions[:gone]
                removed += gone
            for key in [k for k in s.snapshots
                        if k[0] in s.cuts and k[1] <= s.cuts[k[0]].deleted]:
                freed += len(s.snapshots[key])
                if not dry_run:
                    del s.snapshots[key]
            if not dry_run:
                for stream in [k for k, ps in s.streams.items() if not ps]:
                    del s.streams[stream]
            if progress is not None:
                progress(before, before)
            return {"events_removed": removed, "bytes_before": before,
                    "bytes_after": before - freed if dry_run else self._bytes()}

    def _bytes(self) -> int:
        """What ``stats`` calls bytes: stored events and snapshots."""
        return (sum(len(r.blob) for r in self._s.rows if r is not None)
                + sum(len(b) for b in self._s.snapshots.values()))

    # -- whole-store ------------------------------------------------------------------------------
    def stats(self) -> dict:
        with self._s.lock:
            rows = [r for r in self._s.rows if r is not None]
            return {"backend": self.kind, "streams": len(self._s.streams), "events": len(rows),
                    "bytes": self._bytes(), "segments": 0,
                    "snapshots": len(self._s.snapshots), "format_version": BACKEND_FORMAT,
                    "first_recorded_us": rows[0].recorded_us if rows else None,
                    "last_recorded_us": rows[-1].recorded_us if rows else None}

    def verify(self) -> list[dict]:
        with self._s.lock:
            rows, snaps = list(self._s.rows), list(self._s.snapshots)
            starts = {s: self._s.versions[s] - len(ps) + 1 for s, ps in self._s.streams.items()}
        check = DenseCheck()
        for stream, first in starts.items():
            check.versions[stream] = first - 1  # compacted: its stored versions start there
        for row in rows:
            if row is None:  # a position compact removed: a known gap
                check.position += 1
                continue
            check.add(row.stream, row.version, row.position, row.recorded_us)
        for stream, version in snaps:
            if version > check.versions.get(stream, 0):
                check.problem("snapshot", f"a snapshot at version {version} of a stream "
                              f"at version {check.versions.get(stream, 0)}",
                              stream=stream, version=version)
        return check.problems


class _MemoryBulk(BulkSession):
    keeps_gaps = True

    def __init__(self, backend: MemoryBackend):
        self._b = backend

    @property
    def head(self) -> int:
        return len(self._b._s.rows)

    def version(self, stream: str) -> int:
        return self._b._s.versions.get(stream, 0)

    def write(self, stream, first_version, first_position, recorded_us, blobs):
        b = self._b
        why = rules.continues(stream, first_version, first_position, recorded_us,
                              self.version(stream), self.head, b._s.last_us, gaps=True)
        if why:
            raise InvalidEvent(why)
        check_append(b._s.cuts.get(stream), stream)
        return b._write_locked(stream, first_version, recorded_us, blobs, first_position)

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
