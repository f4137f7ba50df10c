"""``evstore verify``, ``repair``, ``export`` and ``import``: operating a store."""
from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import (FormatOpt, LockTimeoutOpt, SinceOpt, StoreOpt, UntilOpt, complete_stream, count,
                     fail, store_path)

VERIFY_HELP = """Check every byte of the store.

Checksums, indexes, versions, positions, stream logs against the commit
log, snapshots, checkpoints.

Changes nothing and takes no lock: safe while writers are busy. Prints a
report on stdout (--format json for one JSON object) and exits 0 when the
store is sound, 6 when anything is damaged. Warnings (temp files, an
append that a crash cut short) are harmless and do not change the exit code.

Examples:

\b
    evstore verify
    evstore verify --format json | jq -r '.problems[].message'
    evstore verify || evstore repair --dry-run

Exit codes: 6 damaged (each problem on its own line: file@offset, stream,
version, position, what is wrong), 4 no store there.
"""

REPAIR_HELP = """Bring a damaged store back to its longest sound state.

Takes the writer lock. Rebuilds indexes; restores commit-log frames from the
stream logs' copies of their events and stream logs from the commit log;
moves torn tails, uncommitted leftovers and temp files aside. If some
event has no intact copy left, the store keeps everything before it; the
intact events after it are taken out, written to an NDJSON file in the
quarantine directory, and the report names them. Removed bytes are kept in
STORE/quarantine/repair-*/. Safe to interrupt: run it again.

Examples:

\b
    evstore repair --dry-run           # what it would do; changes nothing
    evstore repair && evstore verify
    evstore repair --format json | jq .lost

Exit codes: 0 the store is sound (afterwards), 6 it is still damaged,
1 locked by a writer (or a compaction) past --lock-timeout, 4 no store
there.
"""

EXPORT_HELP = """Write recorded events as NDJSON, in position order.

The whole store (--all, the default) or the given streams. Streams in
constant memory.

Every line is a recorded event that 'evstore import' reads back
exactly: export | import | export gives the same bytes.

Examples:

\b
    evstore export > backup.ndjson
    evstore export order-1001 order-1002 | jq -c .data

\b
    # incremental backup: everything after the last backup's last position
    last=$(tail -n 1 backup.ndjson | jq .position)
    evstore export --from-position $((last + 1)) >> backup.ndjson
"""

IMPORT_HELP = """Read exported events into the store.

Reads NDJSON from FILE or stdin, keeping ids, streams, versions, positions
and recorded_at.

The input must continue the store exactly: its first position is the
store's next one, each stream's first version is that stream's next one,
and times do not go backwards. Leading events the store already holds (same
ids, streams, versions and positions) are skipped, so an interrupted import
resumes when run again. The whole input is checked before anything is
written (and before a new store is created): bad input is refused with exit
code 5 and the store unchanged. Writes in batches with one fsync each
(--no-sync: none).

--renumber merges instead: each event keeps its stream, version, id, type,
data, metadata and recorded_at but takes the store's next position, in file
order. Events the store already holds (same stream, version and id) are
skipped, so merging twice writes nothing; a stream that does not continue
the store's is exit 3, nothing written.

Ctrl-C (or SIGTERM) stops after the batch being written: it says how many
events are committed; the same command resumes.

Examples:

\b
    evstore import backup.ndjson --store restored/
    evstore export --store old/ | evstore import --store new/
    evstore export --store ci-a/ | evstore import --renumber --store merged/
    evstore import backup.ndjson --dry-run     # what it would write

\b
    # bring a copy up to date
    evstore export --from-position $(( $(evstore info --store copy | jq .head) + 1 )) \\
        | evstore import --store copy

Exit codes: 5 invalid or non-continuing input (nothing written), 3 a
renumbered stream does not continue (nothing written), 130/143 interrupted.
"""


class ReportFormat(str, Enum):
    text = "text"
    json = "json"


ReportFormatOpt = Annotated[ReportFormat, typer.Option(
    "--format", case_sensitive=False,
    help="text (readable lines) or json (one JSON object).")]


class BarProgress:
    """A rich progress bar on stderr: events, bytes, rate and time left.
    Updates are gathered and drawn at most ten times a second, so that
    counting each frame costs the operation almost nothing."""

    def __init__(self):
        self._bar = None
        self._task = None
        self._events = 0
        self._bytes = 0
        self._unit_events = False
        self._next = 0.0

    def begin(self, label, total_bytes=None, total_events=None):
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        from .render import console

        self.end()
        self._events = self._bytes = 0
        self._unit_events = total_bytes is None and total_events is not None
        columns = [TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.fields[events]:,} events"),
                   TextColumn("{task.fields[rate]}")]
        if not self._unit_events:
            columns += [DownloadColumn(), TransferSpeedColumn()]
        columns.append(TimeRemainingColumn())
        self._bar = Progress(*columns, console=console(stderr=True), transient=True)
        self._bar.start()
        total = total_events if self._unit_events else total_bytes
        from rich.markup import escape  # a stream id is not markup

        from .render import safe

        self._task = self._bar.add_task(escape(safe(label)), total=total, events=0, rate="")
        self._t0 = time.monotonic()

    def advance(self, events=0, nbytes=0):
        self._events += events
        self._bytes += nbytes
        now = time.monotonic()
        if now >= self._next and self._bar is not None:
            self._next = now + 0.1
            self._draw(now)

    def _draw(self, now):
        dt = max(now - self._t0, 1e-6)
        self._bar.update(self._task, completed=self._events if self._unit_events else self._bytes,
                         events=self._events, rate=f"{self._events / dt:,.0f} ev/s")

    def end(self):
        if self._bar is not None:
            self._draw(time.monotonic())
            self._bar.stop()
            self._bar = None


def _progress():
    from ..ops.progress import NO_PROGRESS

    from .common import show_progress

    return BarProgress() if show_progress() else NO_PROGRESS


def _existing_store(ctx, store) -> Path:
    """Verify and repair open no EventStore: a damaged store may not open."""
    import os

    from ..errors import StoreNotFound
    from ..backends.files.names import LOG_DIR, MARKER

    path = store_path(ctx, store)
    if not (os.path.isfile(os.path.join(path, MARKER)) or os.path.isdir(os.path.join(path, LOG_DIR))):
        raise StoreNotFound(path)
    return path


def _print_verify(report, out) -> None:
    s = report.stats
    head = (f"store {report.store}: {count(s.get('events', 0), 'event')} in "
            f"{count(s.get('streams', 0), 'stream')}, {count(s.get('bytes_checked', 0), 'byte')} "
            f"checked in {s.get('seconds', 0):.2f}s")
    out.write(head + "\n")
    for p in report.problems:
        out.write(f"error: {p}\n")
    for w in report.warnings:
        out.write(f"warning: {w}\n")
    if report.ok:
        out.write("sound" + (f" ({count(len(report.warnings), 'warning')})" if report.warnings else "") + "\n")
    else:
        out.write(f"damaged: {count(len(report.problems), 'problem')}; 'evstore repair --dry-run' shows "
                  "what repair would do\n")


def _print_repair(report, out) -> None:
    verb = "would" if report.dry_run else "did"
    if report.before is not None and report.before.ok and not report.actions:
        out.write(f"store {report.store} is sound; nothing to repair\n")
        return
    if report.before is not None:
        out.write(f"found {count(len(report.before.problems), 'problem')}, "
                  f"{count(len(report.before.warnings), 'warning')}\n")
        for p in report.before.problems:
            out.write(f"  error: {p}\n")
    out.write(f"repair {verb}:\n")
    for a in report.actions:
        out.write(f"  {a}\n")
    for lost in report.lost:
        out.write(f"LOST: {lost['message']}\n")
    if report.removed_events:
        out.write(f"{count(report.removed_events, 'intact event')} {'would be' if report.dry_run else 'were'} "
                  f"taken out of the store; they are kept in "
                  f"{report.events_file or 'an NDJSON file in the quarantine directory'}\n")
    if report.quarantine and not report.dry_run:
        out.write(f"removed bytes are kept in {report.quarantine}\n")
    if not report.dry_run:
        if report.after is not None and report.after.ok:
            out.write("the store is sound now\n")
        elif report.after is not None:
            out.write(f"the store is still damaged ({count(len(report.after.problems), 'problem')}):\n")
            for p in report.after.problems:
                out.write(f"  error: {p}\n")


def register(app: typer.Typer) -> None:
    @app.command("verify", help=VERIFY_HELP)
    def verify(
        ctx: typer.Context,
        fmt: ReportFormatOpt = ReportFormat.text,
        workers: Annotated[Optional[int], typer.Option(
            "--workers", metavar="N", min=1,
            help="Processes checking stream logs in parallel (default: one per CPU for "
                 "large stores; 1: none).")] = None,
        store: StoreOpt = None,
    ) -> None:
        from ..ops import verify as run_verify

        from ..backends import is_url
        from .common import open_store

        if is_url(store_path(ctx, store)):  # the server checks what it holds
            with open_store(ctx, store) as es:
                report = es.verify()
        else:
            path = _existing_store(ctx, store)
            report = run_verify(path, progress=_progress(), workers=workers)
        if fmt == ReportFormat.json:
            from ..features.jsonio import dumps

            sys.stdout.write(dumps(report.to_dict()) + "\n")
        else:
            _print_verify(report, sys.stdout)
        sys.stdout.flush()
        if not report.ok:
            raise typer.Exit(6)

    @app.command("repair", help=REPAIR_HELP)
    def repair(
        ctx: typer.Context,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Show what repair would do; change nothing.")] = False,
        fmt: ReportFormatOpt = ReportFormat.text,
        lock_timeout: LockTimeoutOpt = 30.0,
        store: StoreOpt = None,
    ) -> None:
        from ..backends import is_url
        from ..ops import repair as run_repair

        if is_url(store_path(ctx, store)):
            raise fail("repair is for store directories: a PostgreSQL store keeps its "
                       "events in transactions, and 'evstore verify' checks it", 2)
        path = _existing_store(ctx, store)
        report = run_repair(path, dry_run=dry_run, lock_timeout=lock_timeout,
                            progress=_progress())
        if fmt == ReportFormat.json:
            from ..features.jsonio import dumps

            sys.stdout.write(dumps(report.to_dict()) + "\n")
        else:
            _print_repair(report, sys.stdout)
        sys.stdout.flush()
        for lost in report.lost:
            sys.stderr.write(f"evstore: warning: {lost['message']}\n")
        if not dry_run and not report.ok:
            raise typer.Exit(6)

    @app.command("export", help=EXPORT_HELP)
    def export(
        ctx: typer.Context,
        streams: Annotated[Optional[list[str]], typer.Argument(
            metavar="[STREAM]...", autocompletion=complete_stream,
            help="Streams to export (default: all).", show_default=False)] = None,
        all_: Annotated[bool, typer.Option("--all", help="Every stream (the default).")] = False,
        from_position: Annotated[int, typer.Option(
            "--from-position", metavar="P", min=1,
            help="Start at position P (for incremental backups).")] = 1,
        since: SinceOpt = None,
        until: UntilOpt = None,
        fmt: FormatOpt = None,
        store: StoreOpt = None,
    ) -> None:
        from ..features.timespec import parse_window
        from ..ops import export_events
        from .common import open_store

        if all_ and streams:
            raise fail("give --all or STREAMs, not both", 2)
        lo, hi = parse_window(since, until)
        fmt_ = fmt.value if fmt is not None else "ndjson"
        with open_store(ctx, store) as es:
            if fmt_ == "table":
                from .cmd_read import emit_events
                from ..ops.transfer import iter_events

                emit_events(iter_events(es, streams or None, from_position, lo, hi), "table")
                return
            export_events(es, sys.stdout.buffer, streams=streams or None, since=lo, until=hi,
                          from_position=from_position, fmt=fmt_, progress=_progress())

    @app.command("import", help=IMPORT_HELP)
    def import_(
        ctx: typer.Context,
        source: Annotated[str, typer.Argument(
            metavar="[FILE|-]", help="NDJSON from 'evstore export' (default: stdin).")] = "-",
        renumber: Annotated[bool, typer.Option(
            "--renumber", help="Merge: keep each event's stream, version, id and time but give "
                               "it the store's next position; events already there are "
                               "skipped.")] = False,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Check everything and print what would be imported; write "
                              "nothing.")] = False,
        batch_size: Annotated[int, typer.Option(
            "--batch-size", metavar="N", min=1,
            help="Events written between two fsyncs.")] = 10_000,
        no_sync: Annotated[bool, typer.Option(
            "--no-sync", help="No fsync at all: fastest; a power loss may lose the import.")] = False,
        lock_timeout: LockTimeoutOpt = 30.0,
        store: StoreOpt = None,
    ) -> None:
        import gc

        from ..errors import Interrupted
        from ..features.jsonio import dumps
        from . import interrupts

        if source == "-":
            if sys.stdin is None or sys.stdin.isatty():
                raise fail("no input: pass a FILE, or pipe 'evstore export' output to stdin", 2)
            src = sys.stdin.buffer
        else:
            try:
                src = open(source, "rb")
            except OSError as e:
                raise fail(f"cannot read {source}: {e.strerror or e}",
                           2 if isinstance(e, FileNotFoundError) else 1)
        path = store_path(ctx, store)
        gc.disable()  # parsed events are not cyclic; the collector only costs time here
        try:
            result = _run_import(ctx, store, path, src, renumber=renumber, dry_run=dry_run,
                                 batch_size=batch_size, sync=not no_sync,
                                 lock_timeout=lock_timeout)
        except Interrupted as e:
            if not e.what:  # stopped before writing, or a second signal while writing
                e.what = ("stopped at once while writing; what was committed is kept: run the "
                          "same command again to resume" if e.forced else
                          "nothing was imported")
            raise
        finally:
            if src is not sys.stdin.buffer:
                src.close()
        if result.interrupted:
            done = result.skipped + result.events
            raise Interrupted(
                interrupts.signum(), f"{done:,} of {result.total:,} events committed; run the "
                                     "same command again to resume")
        sys.stdout.write(dumps(result.to_dict()) + "\n")


def _spool_name(path, exists: bool) -> str:
    """Where pass 1 spools the input: ``STORE/.tmp-import-*`` (verify calls
    one that a crash left harmless, repair moves it aside); for a store that
    does not exist yet, ``.NAME.importing-*`` files in the nearest existing
    directory above it (the same file system; nothing is created before the
    input is checked, and the store's own directory must stay empty)."""
    import os

    from ..backends import is_url
    from ..backends.files.names import IMPORT_SPOOL

    if is_url(path):  # spooled beside nothing: the system's temp directory
        import tempfile
        return os.path.join(tempfile.gettempdir(), "evstore-import")
    if exists:
        return os.path.join(path, IMPORT_SPOOL)
    d = os.path.abspath(path)
    name = os.path.basename(d)
    d = os.path.dirname(d)
    while not os.path.isdir(d):
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return os.path.join(d, f".{name}.importing")


def _run_import(ctx, store, path, src, *, renumber, dry_run, batch_size, sync, lock_timeout):
    """Check the input before any store is opened or created; create the
    store only to write into it; never remove one (another writer may have
    used it since: a refused or interrupted import leaves what it found).
    Signals stop at once while checking, and after the batch being
    written (made durable) once writing."""
    import time

    from ..backends import store_exists
    from ..model import DEFAULT_MAX_EVENT_BYTES
    from ..ops.importer import check_input
    from .common import open_store
    from . import interrupts

    t0 = time.monotonic()
    exists = store_exists(path)
    if exists or dry_run:
        es = open_store(ctx, store, lock_timeout=lock_timeout) if exists else None
    else:
        es = None
    try:
        max_bytes = es.max_event_bytes if es is not None else DEFAULT_MAX_EVENT_BYTES
        with check_input(src, _spool_name(path, exists), max_bytes=max_bytes, progress=_progress(),
                         renumber=renumber) as inp:
            plan = inp.plan(es)  # refusals here: nothing created, nothing written
            if dry_run:
                return plan.result(time.monotonic() - t0, inp.events)
            if es is None and not plan.events:  # nothing to write: create nothing
                result = plan.result(time.monotonic() - t0, inp.events)
                result.dry_run = False
                return result
            # A store this import creates is written at once (a signal stops
            # after its first batch: no empty store is left); into an existing
            # one, a signal stops at once until the writer lock is held.
            with interrupts.deferred(now=es is None) as begin:
                if es is None:
                    es = open_store(ctx, store, create=True, lock_timeout=lock_timeout)
                result = inp.write(es, batch_size=batch_size, sync=sync, progress=_progress(),
                                   stop=interrupts.pending, on_locked=begin)
                es.close()
    finally:
        if es is not None:
            es.close()
    result.seconds = time.monotonic() - t0
    return result
