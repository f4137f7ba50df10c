"""Points in time as users type them: ``--since 7d``, ``--until
2026-11-28T12:00:00Z``.

One parser for every command that takes a time, so that they all accept the
same spellings and refuse the rest with the same message:

- RFC 3339 / ISO 8601 with a timezone (``2026-11-28T12:00:00Z``,
  ``2026-11-28T13:00:00+01:00``, fractions of a second allowed); a date
  alone (``2026-11-28``) is midnight UTC; a date and time without a zone
  is refused rather than guessed;
- relative, counted back from now: a whole number and a unit, ``45s``,
  ``30m``, ``2h``, ``7d``, ``2w`` (seconds, minutes, hours, days, weeks).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from ..errors import UsageError

_RELATIVE = re.compile(r"(\d{1,9})([smhdw])\Z")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DATE = re.compile(r"\d{4}-\d\d-\d\d\Z")


def parse_time(text: str, now: datetime | None = None, *, what: str = "time") -> datetime:
    """``text`` as an aware UTC datetime; ``now`` (default: the clock) is
    what relative times count back from.  Raises UsageError naming ``what``
    (e.g. "--since") and the accepted forms."""
    s = text.strip()
    m = _RELATIVE.match(s)
    if m:
        now = now or datetime.now(timezone.utc)
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        if _DATE.match(s):
            return datetime.fromisoformat(s).replace(tzinfo=timezone.utc)
        t = datetime.fromisoformat(s[:-1] + "+00:00" if s[-1:] in ("Z", "z") else s)
    except ValueError:
        t = None
    if t is None or t.tzinfo is None:
        why = "has no timezone (add Z for UTC)" if t is not None else "is not a time"
        raise UsageError(f"{what} {text!r} {why}; give an RFC 3339 time such as "
                         "2026-11-28T12:00:00Z, a date such as 2026-11-28, or a time "
                         "back from now such as 45s, 30m, 2h, 7d or 2w")
    return t.astimezone(timezone.utc)


def parse_window(since: str | None, until: str | None, now: datetime | None = None):
    """(since, until) parsed with one ``now``, so that ``--since 2h --until
    1h`` is a one-hour window; refuses a window that ends before it starts."""
    now = now or datetime.now(timezone.utc)
    lo = None if since is None else parse_time(since, now, what="--since")
    hi = None if until is None else parse_time(until, now, what="--until")
    if lo is not None and hi is not None and hi < lo:
        raise UsageError(f"--until {until!r} is before --since {since!r}")
    return lo, hi
