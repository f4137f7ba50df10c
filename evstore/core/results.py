"""What the front end's forgetting calls and ``streams()`` return: small
named records with the ``to_dict()`` the CLI prints (kept apart from
:mod:`evstore.core.store`, which is the API itself)."""
from __future__ import annotations

from ..model import format_timestamp
from ..plain import named_tuple  # not typing.NamedTuple: start-up time (see there)
from .forgetting import Retention, format_duration


@named_tuple
class Deleted:
    """What :meth:`EventStore.delete` did: ``deleted`` is "soft" or "hard"."""

    stream: str
    version: int
    deleted: str

    def to_dict(self) -> dict:
        return {"stream": self.stream, "version": self.version, "deleted": self.deleted}


@named_tuple
class Truncated:
    """What :meth:`EventStore.truncate` did: versions below ``before`` are
    gone (``before`` is where the stream now starts, at least the one asked)."""

    stream: str
    version: int
    before: int

    def to_dict(self) -> dict:
        return {"stream": self.stream, "version": self.version, "before": self.before}


@named_tuple
class RetentionInfo:
    """One retention rule as users see it: ``max_age`` spelled as a
    duration (``"90d"``), ``in_force``: whether it is the rule that applies
    to what was asked about."""

    target: str
    prefix: bool
    max_age: str | None
    max_count: int | None
    in_force: bool

    @classmethod
    def of(cls, rule: Retention, in_force: bool) -> "RetentionInfo":
        return cls(rule.target, rule.prefix,
                   None if rule.max_age_us is None else format_duration(rule.max_age_us),
                   rule.max_count, in_force)

    def to_dict(self) -> dict:
        return {"target": self.target, "prefix": self.prefix, "max_age": self.max_age,
                "max_count": self.max_count, "in_force": self.in_force}


class StreamInfo(tuple):
    """(stream, version, first_recorded_at, last_recorded_at) of one stream."""

    __slots__ = ()

    def __new__(cls, stream, version, first_recorded_at, last_recorded_at):
        return tuple.__new__(cls, (stream, version, first_recorded_at, last_recorded_at))

    stream = property(lambda s: s[0])
    version = property(lambda s: s[1])
    first_recorded_at = property(lambda s: s[2])
    last_recorded_at = property(lambda s: s[3])

    def to_dict(self) -> dict:
        return {"stream": self.stream, "version": self.version,
                "first_recorded_at": format_timestamp(self.first_recorded_at)
                if self.first_recorded_at else None,
                "last_recorded_at": format_timestamp(self.last_recorded_at)}
