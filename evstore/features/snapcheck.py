"""``replay --verify-snapshots``: rebuild a stream from its first event and
compare every stored snapshot with the state at its version.

Why apart from :mod:`evstore.features.replay`: replay *uses* snapshots and
trusts one whose header fits; this check distrusts them all, folding with
replay's own pieces (its plan, reducer call and state check) so that it
judges snapshots by exactly what a replay would have computed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from .reducers import load_reducer
from .replay import (PROGRESS_EVERY, Plan, _directory, _failed, _view, plan_events,
                     check_state, diff, readable_span)


@dataclass
class Mismatch:
    stream: str
    version: int
    reason: str
    path: list | None = None
    snapshot: Any = None
    rebuilt: Any = None

    def to_dict(self) -> dict:
        d = {"stream": self.stream, "version": self.version, "reason": self.reason}
        if self.path is not None:
            d.update(path=self.path, snapshot=self.snapshot, rebuilt=self.rebuilt)
        return d


@dataclass
class VerifyReport:
    stream: str
    reducer: str
    checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _normal(value):
    """``value`` as it would read back from a snapshot file."""
    return json.loads(json.dumps(value, ensure_ascii=False))


def verify_snapshots(store, stream: str, reducer=None,
                     progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Rebuild ``stream`` from its first event and compare every stored
    snapshot with the state at its version.

    Snapshots made by another reducer (or another version of this one) are
    not compared -- this reducer cannot say what they should hold, and no
    replay with it would use them -- and are listed in ``skipped``.  Damaged
    files, snapshots beyond the stream's end or made for other events, and
    states that differ are mismatches; for a differing state, the first
    differing path with both values.
    """
    from .snapshots import SnapshotStore

    r = load_reducer(reducer, base=_directory(store))
    first, current = readable_span(store, stream)
    view = _view(store)
    base = 0 if view is None else view.replay_base(stream, first)
    cut = None if view is None else view.cuts.get(stream)
    deleted = cut.deleted if cut is not None else 0
    snaps = SnapshotStore(store)
    rep = VerifyReport(stream, r.name)
    todo = _snapshots_to_check(snaps, rep, r, stream, base, deleted, current)
    state, start = None, first - 1
    if base and todo:
        # the events before the cut are gone: the oldest snapshot is where
        # the rebuild starts (it is what a replay would start from)
        start = min(todo)
        del todo[start]
        try:
            state = snaps.load(stream, start).state
        except Exception as e:  # noqa: BLE001 - damaged: nothing to start from
            rep.mismatches.append(Mismatch(stream, start, f"damaged: {e}"))
            return rep
        rep.skipped.append(f"version {start}: where the rebuild starts (the events before "
                           f"version {first} are no longer readable)")
    if todo:
        _rebuild_and_compare(store, snaps, rep, Plan(stream, r, max(todo), start, state),
                             sorted(todo), progress)
    return rep


def _snapshots_to_check(snaps, rep: VerifyReport, r, stream: str, base: int, deleted: int,
                        current: int) -> dict:
    """The stored snapshots this reducer can judge (version -> header).
    The others go into the report now: skipped when made before a delete,
    below the readable events or by another reducer; a mismatch when
    damaged or beyond the stream's end."""
    todo: dict[int, Any] = {}
    for h in snaps.list(stream):
        v = h.version
        if v <= deleted:
            rep.skipped.append(f"version {v}: made before the stream was deleted")
        elif v < base:
            rep.skipped.append(f"version {v}: the events up to it are no longer readable")
        elif h.problem:
            rep.mismatches.append(Mismatch(stream, v, h.problem))
        elif v > current:
            rep.mismatches.append(Mismatch(
                stream, v, f"beyond the stream's current version {current}"))
        elif h.fingerprint != r.fingerprint:
            rep.skipped.append(f"version {v}: made by {h.reducer}"
                               + (" (another version of it)" if h.reducer == r.name else ""))
        else:
            todo[v] = h
    return todo


def _rebuild_and_compare(store, snaps, rep: VerifyReport, p: Plan, marks: list,
                         progress) -> None:
    """Fold the stream from ``p.start`` to ``p.version`` and compare the
    state with the snapshot at each version in ``marks`` (sorted)."""
    stream, state = p.stream, p.state
    fn = p.reducer.fast
    i = 0
    for ev, d in plan_events(store, p):
        try:
            state = fn(state, d)
        except BaseException as e:  # noqa: BLE001 - even SystemExit (see _failed)
            raise _failed(p, ev, state, e) from e
        if progress is not None and ev.version % PROGRESS_EVERY == 0:
            progress(ev.version, p.version)
        if ev.version == marks[i]:
            rep.mismatches.extend(_compare(snaps, stream, ev, p, state))
            rep.checked += 1
            i += 1
    if progress is not None:
        progress(p.version, p.version)
    rep.mismatches.sort(key=lambda m: m.version)


def _compare(snaps, stream, ev, p, state) -> list[Mismatch]:
    from ..errors import CorruptStore

    v = ev.version
    try:
        snap = snaps.load(stream, v)
    except CorruptStore as e:
        return [Mismatch(stream, v, "damaged: " + str(e).rpartition(": ")[2])]
    if snap.event_id is not None and snap.event_id != ev.id:
        return [Mismatch(stream, v, f"made for event {snap.event_id}, but the event at "
                                    f"version {v} is {ev.id}")]
    check_state(p, state, v)
    changes = diff(snap.state, _normal(state))
    if not changes:
        return []
    c = changes[0]
    reason = {"add": "the snapshot lacks a value the rebuilt state has",
              "remove": "the snapshot has a value the rebuilt state lacks"}.get(
        c["op"], "the state differs")
    return [Mismatch(stream, v, reason, c["path"], c.get("old"), c.get("new"))]


__all__ = ["Mismatch", "VerifyReport", "verify_snapshots"]
