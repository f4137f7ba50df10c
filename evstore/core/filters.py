"""The front end's read filters: range checks, time windows, retention by
age, readability and limits, each a generator over a backend's events, so
that every read (of a stream or of ``$all``) applies them the same way on
every backend."""
from __future__ import annotations

from datetime import timedelta

from ..errors import UsageError
from ..model import datetime_to_us, format_timestamp, us_to_datetime
from .forgetting import parse_duration


def fmt_us(us):
    return None if us is None else format_timestamp(us_to_datetime(us))


def check_range(lo, hi, limit) -> None:
    for name, v in (("from", lo), ("to", hi), ("limit", limit)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise UsageError(f"invalid {name}: {v!r} (must be a whole number >= 0)")


def time_window(since, until):
    """(since, until) as microseconds since the epoch (None: open), or None
    when neither is given; both must be timezone-aware datetimes."""
    if since is None and until is None:
        return None
    out = []
    for name, t in (("since", since), ("until", until)):
        if t is not None and getattr(t, "tzinfo", None) is None:
            raise UsageError(f"invalid {name}: {t!r} (a timezone-aware datetime)")
        out.append(None if t is None else datetime_to_us(t))
    return tuple(out)


def in_window(it, window, backwards: bool, ordered: bool = True):
    """Events of ``it`` recorded in ``window`` (see :func:`time_window`).
    ``ordered``: recorded_at never decreases along ``it`` -- true of a
    stream (append stamps max(now, last), bulk writes refuse an earlier
    time than the stream's last event), so the scan stops at the first event
    past the window's far end.  Not of the whole store: a merge (``import
    --renumber``) keeps each event's time, so older events may follow newer
    ones there, and every event is checked."""
    lo, hi = window
    for ev in it:
        us = datetime_to_us(ev.recorded_at)
        if hi is not None and us > hi:
            if backwards or not ordered:
                continue
            return
        if lo is not None and us < lo:
            if backwards and ordered:
                return
            continue
        yield ev


def max_age_us(max_age) -> int | None:
    """``max_age`` (a duration like "90d", or a timedelta) in microseconds."""
    if max_age is None:
        return None
    if isinstance(max_age, timedelta):
        us = (max_age.days * 86400 + max_age.seconds) * 1_000_000
        if max_age.microseconds or us < 1_000_000:
            raise UsageError(f"invalid max_age {max_age!r}: a whole number of seconds, at least 1")
        return us
    return parse_duration(max_age)


def young(it, oldest: int, backwards: bool):
    """The events of one stream recorded at or after ``oldest`` (its times
    never go back: the old ones come first, or last when backwards)."""
    for ev in it:
        if datetime_to_us(ev.recorded_at) < oldest:
            if backwards:
                return
            continue
        yield ev


def readable_only(it, readable):
    for ev in it:
        if readable(ev):
            yield ev


def limited(it, limit):
    if limit == 0:
        return
    n = 0
    for ev in it:
        yield ev
        n += 1
        if limit is not None and n >= limit:
            return
