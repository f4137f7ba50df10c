"""Appending an input of any length: one atomic batch, or chunks of N.

A single batch is validated whole before anything is written.  Chunks
(``--batch-size``) are each atomic; when the caller asked for a specific
expected version, every chunk after the first expects the version the
previous chunk left, so another writer slipping in between is a conflict,
never a silent interleaving.
"""
from __future__ import annotations

from itertools import islice
from typing import Iterable

from ..errors import EvstoreError, InvalidEvent
from ..disk.records import AppendResult, PackedEvents
from ..core.store import ANY, STREAM_EXISTS


def append_events(store, stream: str, events: Iterable, expected=ANY,
                  batch_size: int | None = None) -> AppendResult:
    if batch_size is None:
        batch = events if isinstance(events, PackedEvents) else list(events)
        if not batch:
            raise InvalidEvent("no events to append (the input was empty)")
        return store.append(stream, batch, expected_version=expected)
    it = iter(events)
    total, last = 0, None
    while True:
        try:
            chunk = list(islice(it, batch_size))
        except EvstoreError as e:
            if total:
                e.args = (f"{e}; {total} events were already committed in earlier "
                          f"batches (up to version {last.version})",)
            raise
        if not chunk:
            break
        res = store.append(stream, chunk, expected_version=expected)
        total += res.count
        last = res
        if expected not in (ANY, STREAM_EXISTS):
            expected = res.version
    if last is None:
        raise InvalidEvent("no events to append (the input was empty)")
    return AppendResult(stream, last.version, last.position, total)
