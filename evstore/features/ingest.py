"""Appending an input of any length: one atomic batch, or chunks of N.

A single batch is validated whole before anything is written.  Chunks
(``--batch-size``) are each atomic; when the caller asked for a specific
expected version, every chunk after the first expects the version the
previous chunk left, so another writer slipping in between is a conflict,
never a silent interleaving.
"""
from __future__ import annotations

from itertools import islice
from collections.abc import Iterable

from ..errors import EvstoreError, InvalidEvent
from ..model import AppendResult, PackedEvents
from ..core.rules import ANY, STREAM_EXISTS


def append_events(store, stream: str, events: Iterable, expected=ANY,
                  batch_size: int | None = None, on_chunk=None) -> AppendResult:
    """``on_chunk(result, total)`` is called after each committed chunk
    (the CLI stops there when interrupted)."""
    if batch_size is None:
        batch = events if isinstance(events, PackedEvents) else list(events)
        if not batch:
            raise InvalidEvent("no events to append (the input was empty)")
        res = store.append(stream, batch, expected_version=expected)
        if on_chunk is not None:
            on_chunk(res, res.count)
        return res
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
        if on_chunk is not None:
            on_chunk(res, total)
        if expected not in (ANY, STREAM_EXISTS):
            expected = res.version
    if last is None:
        raise InvalidEvent("no events to append (the input was empty)")
    return AppendResult(stream, last.version, last.position, total)


def plan_append(store, stream: str, events: list, expected=ANY,
                max_bytes: int | None = None) -> AppendResult:
    """``append --dry-run``: what appending ``events`` would do, read-only
    (``store`` None: a store that does not exist yet).  Validates and packs
    every event as the append would, and checks ``expected`` against the
    stream's current version: WrongExpectedVersion (exit 3) on a conflict.
    A retry whose ids are already at the expected versions reports them, as
    the append would, without writing."""
    from ..errors import StreamNotFound, WrongExpectedVersion
    from ..model import DEFAULT_MAX_EVENT_BYTES, check_stream_id, new_ids, normalize, pack_fields
    from ..core.rules import parse_expected

    check_stream_id(stream)
    expected = parse_expected(expected)
    if not events:
        raise InvalidEvent("no events to append (the input was empty)")
    ids = new_ids(len(events))
    evs = [normalize(e, f"event {i + 1}", ids[i]) for i, e in enumerate(events)]
    limit = max_bytes or getattr(store, "max_event_bytes", DEFAULT_MAX_EVENT_BYTES)
    for i, e in enumerate(evs):
        pack_fields(e, limit, f"event {i + 1}")
    current = store.version(stream) if store is not None else 0
    head = store.head() if store is not None else 0
    if store is not None:  # a tombstone refuses it, as the append would
        from ..core.forgetting import check_append
        check_append(store.forgetting().cuts.get(stream), stream)
    if expected == STREAM_EXISTS:
        if current < 1:
            raise WrongExpectedVersion(stream, "exists", current)
    elif expected != ANY and current != expected:
        if current > expected:
            try:  # (removed events are not there to match)
                have = list(store.read(stream, from_version=expected + 1,
                                       to_version=min(expected + len(evs), current)))
            except StreamNotFound:
                have = []
            matches = [h.id == e.id for h, e in zip(have, evs)]
            if len(have) == len(evs) and all(matches):
                return AppendResult(stream, have[-1].version, have[-1].position, len(evs))
            if any(matches):
                raise WrongExpectedVersion(stream, expected, current,
                                           "only part of this batch is already stored")
        raise WrongExpectedVersion(stream, expected, current)
    return AppendResult(stream, current + len(evs), head + len(evs), len(evs))
