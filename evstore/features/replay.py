"""Replay: fold a stream's events into state, at a version or a time, from
the latest usable snapshot; the step-by-step view.

``plan`` decides where a replay starts and says why (which snapshots it
stepped over), ``run`` folds, ``steps`` folds while reporting what each event
changed (checking snapshots against a rebuild from scratch is
:mod:`evstore.features.snapcheck`).  Only the store's public API is used.

Changes (``Step.changes``) are a list of operations that turn the state
before an event into the state after it::

    {"op": "add",    "path": ["items", 2], "new": {...}}
    {"op": "remove", "path": ["tracking"], "old": "1Z..."}
    {"op": "change", "path": ["balance"], "old": 32800, "new": 12800}

A path is a list of object keys (strings) and array indexes (integers), so
keys containing dots or slashes need no escaping; ``[]`` is the whole state.
Applied in order by :func:`apply_changes` they give the next state exactly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator

from ..errors import InvalidEvent, NotFound, StreamNotFound, UsageError
from ..model import check_json_value, format_timestamp, parse_timestamp
from .reducers import Reducer, ReducerError, load_reducer, signal_passes

PROGRESS_EVERY = 4096


@dataclass
class Plan:
    """Where a replay starts: ``start`` (0, or the snapshot's version) with
    ``state``, and goes to ``version``.  ``notes`` say why, for --steps."""

    stream: str
    reducer: Reducer
    version: int
    start: int
    state: Any
    snapshot: Any = None  # the Snapshot used, or None
    notes: list[str] = field(default_factory=list)
    result: Any = None    # the state at ``version``, once run or steps is done

    @property
    def to_apply(self) -> int:
        return self.version - self.start


def _directory(store):
    """The store's directory (relative reducer files are also looked up
    beside it), or None for a store-like object without one."""
    return getattr(store, "directory", None)


# --- where to stop --------------------------------------------------------------------

def _event_at(store, stream: str, version: int):
    for ev in store.read(stream, from_version=version, to_version=version):
        return ev
    raise NotFound(f"stream {stream!r} has no version {version}")


def _as_datetime(at) -> datetime:
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise UsageError("--at: the time needs a timezone (e.g. 2026-11-28T12:00:00Z)")
        return at
    try:
        return parse_timestamp(str(at))
    except ValueError as e:
        raise UsageError(f"--at: {e}") from None


def readable_span(store, stream: str) -> tuple[int, int]:
    """(the stream's first readable version, its current version).
    Delete, truncate and retention remove a prefix of a stream's versions;
    StreamNotFound when nothing of it is readable."""
    current = store.version(stream)
    if current == 0:
        raise StreamNotFound(stream)
    # (read, not assumed to be 1 when nothing is removed: an import of an
    # export with removed events starts streams above version 1)
    first = next(iter(store.read(stream, limit=1)), None)  # StreamNotFound: none readable
    if first is None:
        raise StreamNotFound(stream)
    return first.version, current


def _view(store):
    """The store's forgetting view (None for a store-like object without one)."""
    f = getattr(store, "forgetting", None)
    return f() if f is not None else None


def version_at(store, stream: str, at, current: int | None = None) -> int:
    """The version of the stream's last event recorded at or before ``at``.

    ``recorded_at`` never decreases along a stream (the store gives each
    commit a time no earlier than the previous one), so this is a binary
    search: about log2(version) single-event reads.  NotFound when the stream
    has no event that early.
    """
    when = _as_datetime(at)
    lo, current = readable_span(store, stream)
    hi = current  # find the largest v in [lo, hi] with t(v) <= when
    first = _event_at(store, stream, lo).recorded_at
    if first > when:
        raise NotFound(f"no event of {stream!r} was recorded at or before "
                       f"{format_timestamp(when)} (its first is at {format_timestamp(first)})")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _event_at(store, stream, mid).recorded_at <= when:
            lo = mid
        else:
            hi = mid - 1
    return lo


def target_version(store, stream: str, to_version=None, at=None) -> int:
    if to_version is not None and at is not None:
        raise UsageError("give a version or a time (--to-version or --at), not both")
    first, current = readable_span(store, stream)
    if at is not None:
        return version_at(store, stream, at, current)
    if to_version is None:
        return current
    if isinstance(to_version, bool) or not isinstance(to_version, int) or to_version < 0:
        raise UsageError(f"invalid version {to_version!r}: must be a whole number >= 0")
    if to_version > current:
        raise NotFound(f"stream {stream!r} has no version {to_version} "
                       f"(its current version is {current})")
    if 0 < to_version < first:
        raise NotFound(f"version {to_version} of {stream!r} is no longer readable: its events "
                       f"before version {first} were deleted, truncated or are past retention")
    return to_version


# --- planning -----------------------------------------------------------------------------

def plan(store, stream: str, reducer=None, to_version=None, at=None,
         use_snapshots: bool = True, show_from: int | None = None) -> Plan:
    """Decide where to start.  ``show_from``: the first version the caller
    wants to see applied (``--steps --from-version``), so a snapshot after
    it cannot be used."""
    r = load_reducer(reducer, base=_directory(store))
    version = target_version(store, stream, to_version, at)
    if version == 0:  # the state before any event: the reducer's first state
        p = Plan(stream, r, 0, 0, None)
        p.notes.append("version 0: the state before the first event")
        return p
    first, _current = readable_span(store, stream)
    view = _view(store)
    # Where folding may begin (Forgetting.replay_base): 0, from the
    # reducer's first state at the first readable event (the whole stream,
    # or what followed a delete); else a snapshot at or after ``base``.
    base = 0 if view is None else view.replay_base(stream, first)
    cut = None if view is None else view.cuts.get(stream)
    lowest = base if base else (cut.deleted + 1 if cut is not None else 1)
    p = Plan(stream, r, version, first - 1 if base == 0 else 0, None)
    if not use_snapshots:
        if base:
            raise NotFound(_truncated(stream, first, "--no-snapshot folds from the first "
                                      "event, and"))
        p.notes.append("--no-snapshot: folding from the first event")
        return p
    limit = version
    if show_from is not None and show_from - 1 < limit:
        limit = max(show_from - 1, 0)
    from .snapshots import SnapshotStore

    snaps = store.snapshots if hasattr(store, "snapshots") else SnapshotStore(store)
    newer = [v for v in snaps.versions(stream) if limit < v <= version]
    if newer:
        p.notes.append(f"{len(newer)} snapshot(s) after version {limit} not used: "
                       f"steps are shown from version {show_from}")
    # (an event before the first readable one is gone: its id cannot be checked)
    snap, notes = snaps.usable(stream, limit, r, min_version=lowest,
                               event_id=lambda v: _event_at(store, stream, v).id
                               if v >= first else None)
    p.notes.extend(notes)
    if snap is None:
        usable = "usable " if notes else ""
        if base:
            raise NotFound(_truncated(stream, first, f"there is no {usable}snapshot at "
                                      f"version {base} to {limit} to start from;"))
        p.notes.append(f"no {usable}snapshot at or below version {limit}: "
                       + ("folding from the first event" if first == 1 else
                          f"folding from version {first}, the first after the delete"))
        return p
    p.start, p.state, p.snapshot = snap.version, snap.state, snap
    p.notes.append(f"started from the snapshot at version {snap.version} "
                   f"(reducer {snap.reducer}, saved {snap.created_at})")
    return p


def _truncated(stream: str, first: int, why: str) -> str:
    """Why a replay cannot start (exit 4)."""
    return (f"cannot replay {stream!r}: its events before version {first} are no longer "
            f"readable (truncated or past retention); {why} a replay needs the state at "
            f"version {first - 1} or later (save one with 'evstore snapshot {stream} "
            f"--state JSON --version V')")


# --- folding ----------------------------------------------------------------------------------

def _event_dicts(events) -> Iterator[tuple[Any, dict]]:
    """(event, its recorded-event dict), formatting each distinct recorded_at once
    (the events of a batch share it, and formatting is the costly part)."""
    last_dt = last_text = None
    for ev in events:
        dt = ev.recorded_at
        if dt != last_dt:
            last_dt, last_text = dt, format_timestamp(dt)
        yield ev, {"stream": ev.stream, "version": ev.version, "position": ev.position,
                   "id": ev.id, "type": ev.type, "data": ev.data, "metadata": ev.metadata,
                   "recorded_at": last_text}


def plan_events(store, p: Plan) -> Iterator[tuple[Any, dict]]:
    """(event, its dict) for each of the plan's versions ``p.start + 1`` to
    ``p.version``, every one of them, in order -- else NotFound (exit 4).

    Why checked: a reader yields what is readable when it reads.  A
    ``compact`` beside a long fold removes the bytes of a range that a
    truncate, delete or retention rule made unreadable after the plan was
    made, and the reader then goes on at the next event still there: folding
    on would give a wrong state (and ``snapshot`` would save it) with no
    error.  The readable versions of a stream are always one run (removals
    take a prefix), so a missing version can only be such a removal."""
    want = p.start + 1
    for ev, d in _event_dicts(store.read(p.stream, from_version=want, to_version=p.version)):
        if ev.version != want:
            break
        yield ev, d
        want += 1
    if want <= p.version:
        raise NotFound(f"cannot replay {p.stream!r}: its events from version {want} on were "
                       "removed while the replay read them (deleted, truncated or past "
                       "retention, and compacted); run it again")


def _failed(p: Plan, ev, state, e: BaseException) -> ReducerError:
    """Whatever a reducer raises -- SystemExit, KeyboardInterrupt and
    GeneratorExit included -- is a ReducerError (exit 1) naming the event.
    A reducer calling ``sys.exit(0)`` must not end a replay as a success
    with no output.  A signal the command line caught (Interrupted) is
    raised again as it is (:func:`signal_passes`); in a library caller's
    process, a Ctrl-C while a reducer runs cannot be told apart from a
    reducer raising KeyboardInterrupt, so it is reported as the reducer's."""
    signal_passes(e)
    if isinstance(state, dict):
        keys = ", ".join(map(str, state)) or "none (an empty object)"
        before = f"state keys before it: {keys}"
    elif state is None:
        before = "state before it: null (the first event)"
    else:
        before = f"state before it: a {type(state).__name__}, not an object"
    where = ""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        import os
        where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
    return ReducerError(
        f"reducer {p.reducer.name} failed on stream {p.stream!r} at version {ev.version} "
        f"(type {ev.type}): {type(e).__name__}{': ' if str(e) else ''}{e}{where}; {before}")


def _not_json(p: Plan, version: int, e: InvalidEvent) -> ReducerError:
    msg = str(e).removeprefix("state: ")
    return ReducerError(f"reducer {p.reducer.name} returned a state that is not JSON after "
                        f"version {version} of {p.stream!r}: {msg}")


def check_state(p: Plan, state, version: int) -> None:
    try:
        check_json_value(state, "state")
    except InvalidEvent as e:
        raise _not_json(p, version, e) from None
    except RecursionError:
        raise ReducerError(f"reducer {p.reducer.name}: the state after version {version} "
                           "is nested too deeply") from None


def run(store, p: Plan, progress: Callable[[int, int], None] | None = None):
    """Fold the plan's events; return the state (checked to be JSON)."""
    state = p.state
    fn = p.reducer.fast
    total = p.to_apply
    if total > 0:
        done = 0
        for ev, d in plan_events(store, p):
            try:
                state = fn(state, d)
            except BaseException as e:  # noqa: BLE001 - user code: report where it failed
                raise _failed(p, ev, state, e) from e
            done += 1
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, total)
        if progress is not None:
            progress(total, total)
    check_state(p, state, p.version)
    p.result = state
    return state


def replay(store, stream: str, reducer=None, to_version=None, at=None,
           use_snapshots: bool = True, progress=None):
    """The stream's state at ``to_version`` (default: current) or at the last
    event recorded at or before ``at``: ``(state, version)``."""
    p = plan(store, stream, reducer, to_version, at, use_snapshots)
    return run(store, p, progress), p.version


# --- steps and changes ----------------------------------------------------------------------

@dataclass
class Step:
    """One event applied: the event, what it changed, the state after it."""

    version: int
    type: str
    event: Any
    changes: list
    state: Any

    def to_dict(self) -> dict:
        """The NDJSON line of ``replay --steps`` (docs/CLI-JSON.md)."""
        return {"version": self.version, "type": self.type, "changes": self.changes,
                "state": self.state}


def copy_json(value):
    """A deep copy of a JSON value, several times faster than copy.deepcopy."""
    t = type(value)
    if t is dict:
        return {k: copy_json(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [copy_json(v) for v in value]
    return value


def steps(store, p: Plan, types: Iterable[str] | None = None,
          from_version: int | None = None,
          progress: Callable[[int, int], None] | None = None) -> Iterator[Step]:
    """Fold the plan's events, yielding a Step for each one whose version is
    at least ``from_version`` and whose type is in ``types``.

    Every event is folded whatever is shown.  Before the first shown step the
    in-place reducer may be used; from then on only the pure one, so that a
    state already handed to the caller never changes under it.  The state
    before each shown event is copied, so its changes are right even for a
    reducer that (wrongly) edits the state it is given.
    """
    wanted = frozenset(types) if types else None
    lo = from_version or 1
    state = p.state
    fast, pure = p.reducer.fast, p.reducer.fn
    shown = False
    total = p.to_apply
    done = 0
    p.result = state
    if total <= 0:
        return
    for ev, d in plan_events(store, p):
        show = ev.version >= lo and (wanted is None or ev.type in wanted)
        try:
            if show:
                before = copy_json(state)
                state = pure(state, d)
            else:
                before = None
                state = (pure if shown else fast)(state, d)
        except BaseException as e:  # noqa: BLE001 - even SystemExit (see _failed)
            raise _failed(p, ev, before if show else state, e) from e
        done += 1
        if progress is not None and done % PROGRESS_EVERY == 0:
            progress(done, total)
        if show:
            check_state(p, state, ev.version)
            shown = True
            yield Step(ev.version, ev.type, ev, diff(before, state), state)
    if progress is not None:
        progress(total, total)
    if not shown:
        check_state(p, state, p.version)
    p.result = state


def _same_scalar(a, b) -> bool:
    return type(a) is type(b) and a == b


def diff(old, new, path: tuple = ()) -> list[dict]:
    """The operations turning ``old`` into ``new`` (see the module docstring).

    Objects are compared key by key and arrays index by index, recursively;
    anything else (including a change of kind: 1 to 1.0, a list to an
    object) is one ``change`` of the whole value."""
    out: list[dict] = []
    _diff(old, new, list(path), out)
    return out


def _diff(old, new, path: list, out: list) -> None:
    if old is new:
        return
    to, tn = type(old), type(new)
    if to is dict and tn is dict:
        for k in old:
            if k not in new:
                out.append({"op": "remove", "path": path + [k], "old": old[k]})
        for k, v in new.items():
            if k in old:
                _diff(old[k], v, path + [k], out)
            else:
                out.append({"op": "add", "path": path + [k], "new": v})
        return
    if to in (list, tuple) and tn in (list, tuple):
        n = min(len(old), len(new))
        for i in range(n):
            _diff(old[i], new[i], path + [i], out)
        for i in range(len(old) - 1, n - 1, -1):
            out.append({"op": "remove", "path": path + [i], "old": old[i]})
        for i in range(n, len(new)):
            out.append({"op": "add", "path": path + [i], "new": new[i]})
        return
    if to in (dict, list, tuple) or tn in (dict, list, tuple) or not _same_scalar(old, new):
        out.append({"op": "change", "path": path, "old": old, "new": new})


def apply_changes(state, changes: list[dict]):
    """Apply ``changes`` (from :func:`diff`) to a copy of ``state``."""
    state = copy_json(state)
    for c in changes:
        path, op = c["path"], c["op"]
        if not path:
            if op != "change":
                raise ValueError(f"{op} needs a non-empty path")
            state = copy_json(c["new"])
            continue
        parent = state
        for k in path[:-1]:
            parent = parent[k]
        k = path[-1]
        if op == "remove":
            del parent[k]
        elif op == "add" and type(parent) is list:
            parent.insert(k, copy_json(c["new"]))
        elif op in ("add", "change"):
            parent[k] = copy_json(c["new"])
        else:
            raise ValueError(f"unknown change {op!r}")
    return state


def path_text(path: list) -> str:
    """``["items", 0, "qty"]`` as ``items[0].qty`` (for people; JSON keeps the list)."""
    if not path:
        return "(state)"
    out = ""
    for k in path:
        if isinstance(k, int):
            out += f"[{k}]"
        elif k.isidentifier():
            out += ("." if out else "") + k
        else:
            out += f"[{json.dumps(k, ensure_ascii=False)}]"
    return out


__all__ = ["Plan", "Step", "plan", "plan_events", "run", "replay", "steps", "diff",
           "apply_changes", "version_at", "target_version", "readable_span", "path_text",
           "copy_json"]
