"""``export`` and ``import``: moving recorded events between stores as NDJSON.

Export writes each event as ``jsonio.dumps(RecordedEvent.to_dict())`` -- the
bytes ``evstore read --all`` prints -- in position order.  Import reads that
back keeping everything, so ``export | import | export`` is byte-identical.

Export of the whole store takes the backend's NDJSON fast path when it has
one (:meth:`EventStore.ndjson_all`; on files, the commit log's batches
formatted without an object per event, by several processes when large),
which is what makes it faster than reading the same events out of SQLite.
Import is in :mod:`evstore.ops.importer`.
"""
from __future__ import annotations

import heapq

from ..core.lines import array_items, dumps as _dumps
from .progress import NO_PROGRESS


class _Out:
    """NDJSON, or one JSON array, written in large pieces."""

    def __init__(self, out, fmt: str):
        self.out = out
        self.array = fmt == "json"
        self.count = 0
        self.nbytes = 0
        self._parts: list[str] = []
        self._size = 0

    def lines(self, lines: list[str]) -> None:
        if not lines:
            return
        if self.array:
            head = "[\n" if self.count == 0 else ",\n"
            text = head + ",\n".join(lines)
        else:
            text = "\n".join(lines) + "\n"
        self.count += len(lines)
        self._parts.append(text)
        self._size += len(text)
        if self._size >= 1 << 20:
            self.flush()

    def text(self, data: bytes, count: int) -> None:
        """``count`` NDJSON lines, each ending in a newline (a JSON line
        holds no raw newline: json escapes them in strings)."""
        if not count:
            return
        self.flush()
        if self.array:
            data = array_items(data, self.count == 0)
        self.out.write(data)
        self.nbytes += len(data)
        self.count += count

    def flush(self) -> None:
        if self._parts:
            data = "".join(self._parts).encode("utf-8")
            self.out.write(data)
            self.nbytes += len(data)
            self._parts.clear()
            self._size = 0

    def close(self) -> None:
        if self.array:
            self._parts.append("[]\n" if self.count == 0 else "\n]\n")
        self.flush()
        self.out.flush()


def export_events(store, out, *, streams=None, from_position: int = 1, fmt: str = "ndjson",
                  progress=None, workers: int | None = None, since=None, until=None) -> int:
    """Write recorded events to the binary stream ``out`` in position order:
    the whole store, or only ``streams``; from ``from_position`` on, and
    recorded between ``since`` and ``until`` (aware datetimes, inclusive;
    None: open).  Returns how many events were written.  Raises
    StreamNotFound (before writing anything) when a named stream has no
    events.  ``workers``: processes that format events for a whole-store
    export (None: one per CPU when the export is large; 1: none)."""
    progress = progress or NO_PROGRESS
    w = _Out(out, fmt)
    if streams:
        its = [_positions_from(store.read(s, since=since, until=until), from_position)
               for s in dict.fromkeys(streams)]
        progress.begin("export", total_events=sum(store.version(s) for s in dict.fromkeys(streams)))
        try:
            _write_events(w, heapq.merge(*its, key=lambda e: e.position), progress)
            w.close()
        finally:
            progress.end()
        return w.count
    if since is not None or until is not None:
        return _export_window(store, w, max(from_position, 1), since, until, progress)
    start = max(from_position, 1)
    head = store.head()
    total = max(head - start + 1, 0)
    progress.begin("export", total_events=total)
    try:
        chunks = store.ndjson_all(start, head, workers)
        if chunks is None:
            # no fast path: read_all, event by event (which leaves out
            # what delete, truncate and retention made unreadable)
            _write_events(w, store.read_all(from_position=start, to_position=head), progress)
        else:
            for data, count in chunks:
                w.text(data, count)
                progress.advance(events=count)
        w.close()
    finally:
        progress.end()
    return w.count


def _write_events(w, events, progress) -> None:
    buf = []
    for ev in events:
        buf.append(_dumps(ev.to_dict()))
        if len(buf) >= 1024:
            w.lines(buf)
            progress.advance(events=len(buf))
            buf = []
    w.lines(buf)
    progress.advance(events=len(buf))


def _export_window(store, w, start: int, since, until, progress) -> int:
    """The whole store's events recorded in [since, until], through the
    store's own time filter (a merged store's times need not follow its
    positions, so the window is not one range of positions)."""
    progress.begin("export", total_events=max(store.head() - start + 1, 0))
    try:
        _write_events(w, store.read_all(from_position=start, since=since, until=until), progress)
        w.close()
    finally:
        progress.end()
    return w.count


def _positions_from(events, from_position: int):
    for ev in events:
        if ev.position >= from_position:
            yield ev


def iter_events(store, streams, from_position: int = 1, since=None, until=None):
    """RecordedEvents in position order (for ``--format table``)."""
    if streams:
        its = [_positions_from(store.read(s, since=since, until=until), from_position)
               for s in dict.fromkeys(streams)]
        return heapq.merge(*its, key=lambda e: e.position)
    return store.read_all(from_position=max(from_position, 1), since=since, until=until)


def import_events(store, source, **kw):
    from .importer import import_events as run

    return run(store, source, **kw)
