"""Forgetting: which stored events are no longer readable, as pure rules.

Why a module of pure functions: delete, truncate and retention make events
unreadable at once and ``compact`` removes their bytes later; readers,
followers, replay, export and every backend's compaction must agree, to the
event, on what is gone.  Backends keep the state durably (a :class:`Cut`
per stream, the :class:`Retention` rules) and apply :func:`plan_cut` under
their writer lock, as they apply :func:`evstore.core.rules.decide`; the
front end builds one :class:`Forgetting` view per read and filters with it;
compaction removes exactly what the view says is unreadable.

The shape that makes it simple: in every stream the removed events are a
*prefix* of its versions.  Delete and truncate move a floor up (floors never
go down), ``--max-count N`` keeps the newest N, ``--max-age`` keeps what is
younger, and a stream's commit times never go back.  So "readable" is one
number per stream -- its first readable version -- and, within a commit-log
batch (one stream, one time), the readable events are a suffix of the batch.

Decisions kept here, where the contract is silent:

- A stream's *version* counts removed events: after deleting a stream at V,
  ``version`` is still V and the next append is V+1.
- Retention: a stream's own rule wins over prefix rules; among prefix rules
  the longest matching prefix wins.  A rule hides events at once; clearing
  it shows them again until ``compact`` has removed their bytes.  Delete and
  truncate are final at once.
- Deleting a stream that never had events is StreamNotFound; deleting a
  soft-deleted stream again changes nothing; a tombstoned stream refuses
  everything but another hard delete (StreamDeleted).
- ``truncate --before V`` takes 1 <= V <= version + 1 (V = version + 1
  removes every event but keeps the stream's versions, like a soft delete
  that replay cannot start over from).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..plain import named_tuple  # not typing.NamedTuple: start-up time (see there)
from ..errors import StreamDeleted, StreamNotFound, UsageError, WrongExpectedVersion
from .rules import ANY, STREAM_EXISTS


@named_tuple
class Cut:
    """What delete and truncate removed from one stream, for good."""

    stream: str
    floor: int = 1      #: versions below it are not readable (1: nothing cut)
    hard: bool = False  #: a tombstone: no event is readable, appends are refused
    deleted: int = 0    #: the stream's version when it was last deleted (0: never)


@named_tuple
class Retention:
    """A retention rule for one stream or for every stream with a prefix."""

    target: str                 #: a stream id, or a prefix
    prefix: bool                #: whether ``target`` is a prefix
    max_age_us: int | None      #: keep events recorded less than this long ago
    max_count: int | None       #: keep the newest N versions


def plan_cut(old: Cut | None, stream: str, version: int, expected,
             before: int | None, hard: bool) -> Cut:
    """The cut after a delete (``before`` None) or a truncate, decided
    under the writer lock from the stream's stored ``version``.  Raises
    StreamNotFound, StreamDeleted, WrongExpectedVersion or UsageError with
    nothing changed."""
    if old is not None and old.hard:
        if before is None and hard:
            return old                       # deleting a tombstone again: done
        raise StreamDeleted(stream)
    if version < 1:
        raise StreamNotFound(stream)
    if expected == STREAM_EXISTS or expected == ANY:
        pass
    elif expected != version:
        raise WrongExpectedVersion(stream, expected, version)
    floor = old.floor if old is not None else 1
    deleted = old.deleted if old is not None else 0
    if before is None:
        return Cut(stream, version + 1, hard, version)
    if before < 1 or before > version + 1:
        raise UsageError(f"cannot truncate {stream!r} before version {before}: "
                         f"its version is {version} (use 1 to {version + 1})")
    return Cut(stream, max(floor, before), False, deleted)


def check_append(cut: Cut | None, stream: str) -> None:
    """Refuse an append to a tombstoned stream (under the writer lock)."""
    if cut is not None and cut.hard:
        raise StreamDeleted(stream)


def parse_duration(text: str) -> int:
    """``90d``, ``12h``, ``30m``, ``45s`` as microseconds; UsageError else."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    t = text.strip() if isinstance(text, str) else ""
    if len(t) < 2 or t[-1] not in units or not t[:-1].isascii() or not t[:-1].isdigit():
        raise UsageError(f"invalid duration {text!r}: a whole number and a unit, "
                         "e.g. 90d, 12h, 30m or 45s")
    n = int(t[:-1])
    if n < 1:
        raise UsageError(f"invalid duration {text!r}: must be at least 1{t[-1]}")
    return n * units[t[-1]] * 1_000_000


def format_duration(us: int) -> str:
    """The shortest exact spelling of a duration that parses back."""
    s = us // 1_000_000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


class Forgetting:
    """What is readable at one instant: the cuts, the retention rules and
    the clock, frozen.  One view per read, so a read is consistent with
    itself while rules change beside it."""

    __slots__ = ("cuts", "stream_rules", "prefix_rules", "now_us")

    def __init__(self, cuts: Mapping[str, Cut], rules: Sequence[Retention], now_us: int):
        self.cuts = cuts
        self.stream_rules = {r.target: r for r in rules if not r.prefix}
        # longest prefix first: the first match is the one that applies
        self.prefix_rules = sorted((r for r in rules if r.prefix),
                                   key=lambda r: len(r.target), reverse=True)
        self.now_us = now_us

    @property
    def empty(self) -> bool:
        """Nothing is removed anywhere: readers need not look."""
        return not self.cuts and not self.stream_rules and not self.prefix_rules

    def rule_for(self, stream: str) -> Retention | None:
        rule = self.stream_rules.get(stream)
        if rule is not None:
            return rule
        for r in self.prefix_rules:
            if stream.startswith(r.target):
                return r
        return None

    def counts_versions(self, stream: str) -> bool:
        """Whether readability depends on the stream's current version
        (a ``max_count`` rule): then callers must pass it."""
        rule = self.rule_for(stream)
        return rule is not None and rule.max_count is not None

    def first_version(self, stream: str, version: int) -> int:
        """The first version that delete, truncate and ``max_count`` leave
        readable, given the stream's current ``version`` (version + 1: none)."""
        cut = self.cuts.get(stream)
        if cut is not None and cut.hard:
            return version + 1
        first = cut.floor if cut is not None else 1
        rule = self.rule_for(stream)
        if rule is not None and rule.max_count is not None:
            first = max(first, version - rule.max_count + 1)
        return first

    def oldest_us(self, stream: str) -> int | None:
        """Events recorded before this are past ``max_age`` (None: no rule)."""
        rule = self.rule_for(stream)
        if rule is None or rule.max_age_us is None:
            return None
        return self.now_us - rule.max_age_us

    def readable(self, stream: str, version: int, recorded_us: int, current: int) -> bool:
        """Whether one stored event is readable (``current``: its stream's version)."""
        if version < self.first_version(stream, current):
            return False
        oldest = self.oldest_us(stream)
        return oldest is None or recorded_us >= oldest

    def replay_base(self, stream: str, first_readable: int) -> int | None:
        """Where a replay must start when the stream's first readable event
        is ``first_readable``: 0 (the reducer's initial state: nothing
        before it was kept, or everything before it was deleted), else the
        lowest snapshot version it may start from (a snapshot at or above
        ``first_readable - 1`` that is not older than the last delete)."""
        if first_readable <= 1:
            return 0
        cut = self.cuts.get(stream)
        if cut is not None and cut.deleted and first_readable - 1 == cut.deleted:
            return 0
        return first_readable - 1
