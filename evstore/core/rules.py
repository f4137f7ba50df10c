"""The expected-version and idempotent-retry rule, once, for every backend.

Why a module of pure functions: the rule decides whether an append writes,
fails or is a retry of a batch that is already stored, and it must give the
same answer on files, in memory and on PostgreSQL.  Each backend supplies
what it found *under its own lock or transaction* (the stream's current
version and, when asked, the stored events of one window of versions) and
obeys the answer; none re-implements the rule.

The rule (docs/POSTGRES.md and the append command's help say it to users):

- ``ANY``: always writes, unless the batch is a retry (below).
- ``STREAM_EXISTS``: the stream must have at least one event.
- an integer N (``NO_STREAM`` is 0): the current version must be N.
- Retries: a batch whose ids are exactly those of the events stored at the
  versions it would have taken is already there, and the append succeeds
  without writing, reporting those events.  For N that window is N+1..N+k
  (the stream may have moved on since); for ``ANY`` and ``STREAM_EXISTS``
  it is the stream's last k events.  A window that holds *some* of the
  batch's ids but not exactly the batch is a conflict: writing would store
  those ids twice, and not writing would lose the rest.

Decision (kept here, where the spec is silent): ``NO_STREAM`` is the integer
0 in every respect, so its retry window is versions 1..k, like any N.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..plain import named_tuple  # not typing.NamedTuple: start-up time (see there)
from ..errors import UsageError, WrongExpectedVersion

ANY = "any"
NO_STREAM = "no-stream"
STREAM_EXISTS = "exists"


def parse_expected(value) -> object:
    """Normalise an expected version: ANY, STREAM_EXISTS or an int >= 0
    (``NO_STREAM`` becomes 0).  Raises UsageError for anything else."""
    if value is None or value == ANY:
        return ANY
    if value == NO_STREAM:
        return 0
    if value == STREAM_EXISTS:
        return STREAM_EXISTS
    if isinstance(value, bool):
        raise UsageError(f"invalid expected version {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise UsageError(f"invalid expected version {value}: must be >= 0")
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise UsageError(
        f"invalid expected version {value!r}: use any, no-stream, exists or a number"
    )


@named_tuple
class Stored:
    """What a backend tells the rule about one stored event."""

    id: str
    version: int
    position: int


@named_tuple
class AlreadyStored:
    """The verdict for a retry: nothing to write; report these figures."""

    version: int   #: the version of the batch's last event
    position: int  #: the position of the batch's last event
    count: int


def retry_window(expected, current: int, count: int) -> tuple[int, int] | None:
    """The versions (inclusive) whose stored ids the rule needs, or None
    when it needs none (the append writes, or fails on versions alone).

    ``expected`` is a value :func:`parse_expected` returned; ``count`` the
    number of events in the batch."""
    if expected == ANY or expected == STREAM_EXISTS:
        if current < 1:
            return None
        return max(1, current - count + 1), current
    if current > expected:
        return expected + 1, min(expected + count, current)
    return None


def decide(stream: str, expected, current: int, ids: Sequence[str],
           stored: Sequence[Stored] = ()) -> AlreadyStored | None:
    """Apply the rule.  Returns None: write the batch at ``current + 1``;
    AlreadyStored: the batch is there, write nothing.  Raises
    WrongExpectedVersion: write nothing, report a conflict.

    ``stored`` are the events at :func:`retry_window`'s versions, in version
    order (empty when the window was None)."""
    if expected == STREAM_EXISTS and current < 1:
        raise WrongExpectedVersion(stream, STREAM_EXISTS, current)
    if isinstance(expected, int) and current < expected:
        raise WrongExpectedVersion(stream, expected, current)
    retry = _retry(ids, stored)
    if retry is not None:
        return retry
    if set(ids).intersection(s.id for s in stored):
        raise WrongExpectedVersion(stream, expected, current,
                                   "only part of this batch is already stored")
    if isinstance(expected, int) and current != expected:
        raise WrongExpectedVersion(stream, expected, current)
    return None


def _retry(ids: Sequence[str], stored: Sequence[Stored]) -> AlreadyStored | None:
    if len(stored) != len(ids) or not ids:
        return None
    if any(s.id != i for s, i in zip(stored, ids)):
        return None
    return AlreadyStored(stored[-1].version, stored[-1].position, len(ids))


def continues(stream: str, first_version: int, first_position: int | None,
              recorded_us: int, current: int, head: int, last_us: int,
              gaps: bool = False) -> str | None:
    """Why a batch recorded elsewhere (import) does not continue the store,
    or None when it does.  ``first_position`` None means "take the next
    positions" (a renumbering import), which also lets ``recorded_us`` be
    older than the store's last commit: those times belong to another store.

    A batch that keeps its position may leave a gap before it, in the
    positions and in its stream's versions: the events there were removed
    from the store it was exported from (delete, truncate, retention), and
    the backend records them as removed (positions are never reused; the
    stream's versions below ``first_version`` are not readable).  A
    renumbering import must continue each stream exactly.  ``gaps``: the
    backend records such gaps (:attr:`BulkSession.keeps_gaps`); without
    it, a batch must continue the store exactly."""
    gaps = gaps and first_position is not None
    if first_position is not None and (first_position <= head if gaps
                                        else first_position != head + 1):
        return (f"position {first_position} does not continue the store "
                f"(its last position is {head})")
    if first_version <= current or (not gaps and first_version != current + 1):
        return (f"stream {stream!r}: version {first_version} does not continue "
                f"the stream (its version is {current})")
    if first_position is not None and recorded_us < last_us:
        return f"position {first_position}: recorded_at is earlier than the store's last commit"
    return None
