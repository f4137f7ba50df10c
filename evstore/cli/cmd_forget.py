"""``evstore delete``, ``truncate``, ``retention`` and ``compact``: forgetting.

Thin: each command parses, calls one library method (``EventStore.delete``,
``truncate``, ``retention``, ``compact``) and prints its JSON; the rules are
in :mod:`evstore.core.forgetting`, what each promises in docs/GUIDE.md
("Forgetting").
"""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .common import (FormatOpt, LockTimeoutOpt, StoreOpt, complete_stream, fail, open_store,
                     pick_format)

DELETE_HELP = """Delete STREAM: its events are no longer readable.

At once, read, tail, replay and snapshot of it are exit 4, it leaves
'evstore streams', and read --all, tail --all and export skip its events.
The stream keeps its version: the next append continues at version V+1
(so --expected-version V works) and starts the stream afresh.

--hard leaves a tombstone instead: every later append to STREAM is
refused (exit 3, "stream ... was deleted").

The events' bytes stay in the store's files until 'evstore compact'
removes them (then no file holds them: see "Forgetting" in docs/GUIDE.md).

Prints {"stream", "version", "deleted": "soft"|"hard"}.

Examples:

\b
    evstore delete cart-17
    evstore delete order-42 --expected-version 7     # only if nobody wrote since
    evstore delete customer-9 --hard && evstore compact

Exit codes: 4 no such stream, 3 wrong expected version or already deleted
with --hard.
"""

TRUNCATE_HELP = """Forget the events of STREAM before version V.

Events with versions below V are no longer readable, at once; the others
keep their versions and positions. V runs from 1 to the stream's version
+ 1. A truncate below an earlier one changes nothing.

replay and snapshot start from a snapshot at version V-1 or later, so save
one first (or replay says why it cannot, exit 4). 'evstore compact'
removes the bytes; snapshots of a truncated stream are kept.

Prints {"stream", "version", "before"}: the stream's (unchanged) version
and the version it now starts at.

Examples:

\b
    evstore snapshot order-42 --version 999 && evstore truncate order-42 --before 1000
    evstore truncate ci-build-7 --before 500 && evstore compact

Exit codes: 4 no such stream (or deleted), 2 V out of range, 3 deleted
with --hard.
"""

RETENTION_HELP = """Set, clear or show how long events are kept.

--max-age keeps only the events recorded less than DURATION ago (90d,
12h, 30m, 45s); --max-count keeps only the newest N versions. Give
STREAM for one stream, or --prefix P for every stream whose id starts
with P (including streams created later). Setting a rule replaces the
target's rule with exactly the limits given; --clear removes it.

Rules apply when reading, at once: older events are no longer readable
(they leave gaps, nothing is renumbered). Clearing a rule shows them again
until 'evstore compact' has removed their bytes. A stream's own rule wins
over prefix rules; among prefix rules the longest prefix wins.

Prints the rules that match, one JSON object a line, the one in force
first: {"target", "prefix", "max_age", "max_count", "in_force"}. With no
STREAM and no --prefix: every rule of the store.

Examples:

\b
    evstore retention --prefix ci-job- --max-age 30d
    evstore retention metrics-cpu --max-count 10000
    evstore retention ci-job-77             # the rules in force for it
    evstore retention --prefix ci-job- --clear
    evstore retention                       # every rule

Exit codes: 2 bad duration or count, 4 no store (when showing).
"""

COMPACT_HELP = """Remove the bytes of events no longer readable.

Deleted, truncated and retained-out events, and the snapshots of deleted
streams, are removed from the store's files (or tables): afterwards no
file of the store contains them. Every readable event keeps its
position, version, id and bytes. Runs while readers, writers and
followers work; a crash at any point leaves every readable event
readable: run it again. One compaction (or repair) of a store runs at a
time: a second one waits for it (at most --lock-timeout).

Prints {"events_removed", "bytes_before", "bytes_after", "seconds"}.
--dry-run prints the same object for what it would remove and changes
nothing. A progress bar on a terminal.

Examples:

\b
    evstore compact --dry-run
    evstore delete customer-9 && evstore compact

Exit codes: 4 no store there, 1 locked by a writer (or another
compaction, or a repair) past --lock-timeout.
"""


def register(app: typer.Typer) -> None:
    @app.command("delete", help=DELETE_HELP, no_args_is_help=True)
    def delete(
        ctx: typer.Context,
        stream: Annotated[str, typer.Argument(
            metavar="STREAM", help="The stream to delete.", autocompletion=complete_stream)],
        expected_version: Annotated[str, typer.Option(
            "--expected-version", "-e", metavar="any|exists|N",
            help="Only delete if the stream is at this version: any (default), exists, or a "
                 "number. Checked under the writer lock.")] = "any",
        hard: Annotated[bool, typer.Option(
            "--hard", help="Leave a tombstone: every later append to STREAM is refused "
                           "(exit 3).")] = False,
        lock_timeout: LockTimeoutOpt = 30.0,
        store: StoreOpt = None,
    ) -> None:
        from ..core.rules import parse_expected
        from ..model import check_stream_id

        expected = parse_expected(expected_version)  # UsageError: exit 2, before any store
        check_stream_id(stream)
        with open_store(ctx, store, lock_timeout=lock_timeout) as es:
            _print(es.delete(stream, expected_version=expected, hard=hard).to_dict())

    @app.command("truncate", help=TRUNCATE_HELP, no_args_is_help=True)
    def truncate(
        ctx: typer.Context,
        stream: Annotated[str, typer.Argument(
            metavar="STREAM", help="The stream to truncate.", autocompletion=complete_stream)],
        before: Annotated[int, typer.Option(
            "--before", metavar="V", min=1,
            help="Forget the versions below V (required).")] = None,
        lock_timeout: LockTimeoutOpt = 30.0,
        store: StoreOpt = None,
    ) -> None:
        from ..model import check_stream_id

        if before is None:
            raise fail("truncate needs --before V: events of versions below V are forgotten "
                       "(see 'evstore truncate --help')", 2)
        check_stream_id(stream)
        with open_store(ctx, store, lock_timeout=lock_timeout) as es:
            _print(es.truncate(stream, before).to_dict())

    @app.command("retention", help=RETENTION_HELP)
    def retention(
        ctx: typer.Context,
        stream: Annotated[Optional[str], typer.Argument(
            metavar="[STREAM]", help="The stream the rule is for (or use --prefix).",
            autocompletion=complete_stream, show_default=False)] = None,
        prefix: Annotated[Optional[str], typer.Option(
            "--prefix", metavar="P", help="The rule is for every stream whose id starts "
                                          "with P.")] = None,
        max_age: Annotated[Optional[str], typer.Option(
            "--max-age", metavar="DURATION",
            help="Keep only events recorded less than this long ago: 90d, 12h, 30m, 45s.")] = None,
        max_count: Annotated[Optional[int], typer.Option(
            "--max-count", metavar="N", min=1, help="Keep only the newest N versions.")] = None,
        clear: Annotated[bool, typer.Option(
            "--clear", help="Remove the rule (the events it hid are readable again until "
                            "compact).")] = False,
        fmt: FormatOpt = None,
        lock_timeout: LockTimeoutOpt = 30.0,
        store: StoreOpt = None,
    ) -> None:
        setting = _check_retention(stream, prefix, max_age, max_count, clear)
        target = stream if stream is not None else prefix
        with open_store(ctx, store, create=setting, lock_timeout=lock_timeout) as es:
            if target is None:
                rules = es.retention_rules()
            else:
                rules = es.retention(target, max_age=max_age, max_count=max_count,
                                     prefix=prefix is not None, clear=clear)
        _print_rules([r.to_dict() for r in rules], target, prefix is not None, fmt)

    @app.command("compact", help=COMPACT_HELP)
    def compact(
        ctx: typer.Context,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Print what compact would remove; change nothing.")] = False,
        lock_timeout: LockTimeoutOpt = 30.0,
        store: StoreOpt = None,
    ) -> None:
        from .cmd_ops import _progress

        bar = _Bytes(_progress())
        with open_store(ctx, store, lock_timeout=lock_timeout) as es:
            try:
                result = es.compact(dry_run=dry_run, progress=bar)
            finally:
                bar.end()
        _print(result)


def _check_retention(stream, prefix, max_age, max_count, clear) -> bool:
    """Usage errors of ``retention`` (exit 2), found before the store is
    opened; returns whether the call sets a rule (and may create the store)."""
    from ..core.forgetting import parse_duration
    from ..model import check_stream_id

    if stream is not None and prefix is not None:
        raise fail("give STREAM or --prefix P, not both", 2)
    if clear and (max_age is not None or max_count is not None):
        raise fail("--clear removes the rule: it does not go with --max-age or --max-count", 2)
    setting = max_age is not None or max_count is not None
    if stream is None and prefix is None and (setting or clear):
        raise fail("a rule needs a target: give STREAM or --prefix P", 2)
    if max_age is not None:
        parse_duration(max_age)
    if stream is not None:
        check_stream_id(stream)
    return setting


def _print_rules(rows: list, target, is_prefix: bool, fmt) -> None:
    """The retention rules ``retention`` shows, in the chosen format (a
    note on stderr when there is none)."""
    if not rows:
        from .common import note

        what = "in this store" if target is None else \
            f"for {'prefix' if is_prefix else 'stream'} {target!r}"
        note(f"no retention rule {what}: every event is kept")
    fmt_ = pick_format(fmt)
    if fmt_ == "table":
        from .render import dict_table

        if rows:
            dict_table(rows, title="retention rules")
        return
    from ..features.jsonio import Writer

    w = Writer(sys.stdout.buffer, fmt_)
    for row in rows:
        w.write(row)
    w.close()


class _Bytes:
    """``progress(done, total)`` in bytes, drawn on a BarProgress (a
    terminal's stderr only; elsewhere NO_PROGRESS draws nothing)."""

    def __init__(self, bar):
        self.bar = bar
        self.done = None

    def __call__(self, done: int, total: int) -> None:
        if self.done is None:
            self.bar.begin("compact", total_bytes=total)
            self.done = 0
        self.bar.advance(nbytes=max(done - self.done, 0))
        self.done = max(done, self.done)

    def end(self) -> None:
        if self.done is not None:
            self.bar.end()


def _print(obj: dict) -> None:
    from ..features.jsonio import dumps

    sys.stdout.write(dumps(obj) + "\n")
