"""What verify and repair hand back: problems with their place, and reports
that are plain data (``to_dict()``) for JSON output and for tests."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or, as a warning, odd but harmless) in a store.

    ``file`` is relative to the store directory; ``offset`` a byte offset in
    it.  ``stream``, ``version`` and ``position`` are set when known.
    """

    kind: str
    message: str
    file: str | None = None
    offset: int | None = None
    stream: str | None = None
    version: int | None = None
    position: int | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "file": self.file, "offset": self.offset,
                "stream": self.stream, "version": self.version,
                "position": self.position, "message": self.message}

    def __str__(self) -> str:
        return _where(self.file, self.offset, self.stream,
                      None if self.version is None else (self.version, self.version),
                      None if self.position is None else (self.position, self.position)) \
            + self.message


@dataclass
class VerifyReport:
    """The outcome of :func:`evstore.ops.verify`.

    ``ok`` is True when nothing is damaged; ``warnings`` are harmless
    leftovers (temp files, a torn tail the next writer cuts) and never make
    ``ok`` false.
    """

    store: str
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:
        return self.ok

    def to_dict(self) -> dict:
        return {"ok": self.ok, "store": self.store, **self.stats,
                "problems": [p.to_dict() for p in self.problems],
                "warnings": [w.to_dict() for w in self.warnings]}


@dataclass
class Action:
    """One change repair makes (or, with ``dry_run``, would make)."""

    action: str
    message: str
    file: str | None = None
    offset: int | None = None
    bytes: int | None = None
    stream: str | None = None
    positions: tuple[int, int] | None = None
    versions: tuple[int, int] | None = None

    def to_dict(self) -> dict:
        d = {"action": self.action, "file": self.file, "offset": self.offset,
             "bytes": self.bytes, "stream": self.stream,
             "positions": list(self.positions) if self.positions else None,
             "versions": list(self.versions) if self.versions else None,
             "message": self.message}
        return d

    def __str__(self) -> str:
        return f"{self.action}: " + _where(self.file, self.offset, self.stream,
                                           self.versions, self.positions) + self.message


def _where(file, offset, stream, versions, positions) -> str:
    """Where a problem or an action is, as the text reports say it, ending in
    ": " (empty when nothing is known): one wording for verify's and
    repair's lines, so a reader can match one with the other.  ``versions``
    and ``positions`` are (first, last) spans, or None."""
    where = []
    if file is not None:
        where.append(file if offset is None else f"{file}@{offset}")
    if stream is not None:
        where.append(f"stream {stream!r}")
    if versions:
        a, b = versions
        where.append(f"version {a}" if a == b else f"versions {a}..{b}")
    if positions:
        a, b = positions
        where.append(f"position {a}" if a == b else f"positions {a}..{b}")
    return ", ".join(where) + ": " if where else ""


@dataclass
class RepairReport:
    """What :func:`evstore.ops.repair` found, did, moved aside and lost."""

    store: str
    dry_run: bool
    before: VerifyReport | None = None
    after: VerifyReport | None = None
    actions: list[Action] = field(default_factory=list)
    #: events no copy of which survived: (first position, last position, note)
    lost: list[dict] = field(default_factory=list)
    #: intact events taken out of the store (after an unrecoverable hole, or
    #: never committed); all of them are in ``events_file``
    removed_events: int = 0
    quarantine: str | None = None
    events_file: str | None = None

    @property
    def ok(self) -> bool:
        """The store is sound now (for a dry run: already was)."""
        if self.dry_run:
            return self.before is not None and self.before.ok and not self.actions
        return self.after is not None and self.after.ok

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok, "store": self.store, "dry_run": self.dry_run,
            "changed": self.changed,
            "actions": [a.to_dict() for a in self.actions],
            "lost": self.lost, "removed_events": self.removed_events,
            "quarantine": self.quarantine, "events_file": self.events_file,
            "before": self.before.to_dict() if self.before else None,
            "after": self.after.to_dict() if self.after else None,
        }
