"""``evstore append``.

The command's body (:func:`append_body`) is typer-free, and so is this
module's import: ``quick.py`` runs the body without loading typer for a
command line it fully understands; :func:`register` builds the typer
command (which calls the same body) only when typer parses.  No ``from
__future__ import annotations`` here: the typer signature's annotations are
evaluated inside :func:`register`, where ``typer`` is imported.
"""
import sys

from .base import open_store

APPEND_HELP = """Append events to STREAM, atomically.

With --type, appends that one event. Without it, reads events from stdin:
one JSON object per line (NDJSON) or one JSON array. Everything read from
stdin is one atomic batch unless --batch-size splits it. Each event is
{"type": ..., "data": ..., "metadata": ..., "id": ...}; only "type" is
required, and recorded events (from read or export) are accepted as they are.

Prints {"stream", "version", "position", "count"}: the stream's new version,
the last event's position, and how many events were appended.

Examples:

\b
    evstore append acct-1 --type Deposited --data '{"amount": 10}'

\b
    # the whole file or nothing; fail (exit 3) if someone else wrote first
    evstore append acct-1 --expected-version 4 < events.ndjson

\b
    # safe to retry: same ids at the same versions succeed without writing
    jq -c '.[]' batch.json | evstore append order-7 --expected-version 0

    # check a batch without writing it
    evstore append acct-1 --expected-version 4 --dry-run < events.ndjson

Ctrl-C (or SIGTERM) stops after the batch being committed and says what was
committed (exit 130, 143).

Exit codes: 3 wrong expected version, 5 invalid input (nothing written).
"""


def register(app) -> None:
    from typing import Annotated, Optional

    import typer

    from .common import LockTimeoutOpt, StoreOpt, complete_stream

    @app.command("append", help=APPEND_HELP, no_args_is_help=True)
    def append(
        ctx: typer.Context,
        stream: Annotated[str, typer.Argument(
            metavar="STREAM", help="The stream to append to, e.g. acct-1.",
            autocompletion=complete_stream)],
        expected_version: Annotated[str, typer.Option(
            "--expected-version", "-e", metavar="any|no-stream|exists|N",
            help="Only append if the stream is at this version: any (default), "
                 "no-stream (it has no events), exists (it has some) or a number. "
                 "Checked under the writer lock.")] = "any",
        type_: Annotated[Optional[str], typer.Option(
            "--type", metavar="TYPE", help="Append one event of this type (instead of reading stdin).")] = None,
        data: Annotated[Optional[str], typer.Option(
            "--data", metavar="JSON", help="With --type: the event's data (default {}); "
            "@FILE reads it from FILE, - from stdin.")] = None,
        metadata: Annotated[Optional[str], typer.Option(
            "--metadata", metavar="JSON", help="With --type: the event's metadata (default {}); "
            "@FILE or - as for --data.")] = None,
        event_id: Annotated[Optional[str], typer.Option(
            "--id", metavar="UUID", help="With --type: the event's id (default: a new UUID).")] = None,
        batch_size: Annotated[Optional[int], typer.Option(
            "--batch-size", metavar="N", min=1,
            help="Commit every N events from stdin, each chunk atomic (for inputs "
                 "larger than memory).")] = None,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Check everything (the events, --expected-version against the "
                              "stream) and print what would be appended; write nothing.")] = False,
        no_sync: Annotated[bool, typer.Option(
            "--no-sync", help="Do not wait for the disk (fsync): faster, but a power "
                              "loss may lose the append.")] = False,
        lock_timeout: LockTimeoutOpt = 30.0,
        store: StoreOpt = None,
    ) -> None:
        append_body(ctx, stream=stream, expected_version=expected_version, type_=type_, data=data,
                    metadata=metadata, event_id=event_id, batch_size=batch_size, dry_run=dry_run,
                    no_sync=no_sync, lock_timeout=lock_timeout, store=store)


def append_body(ctx, *, stream: str, expected_version: str, type_, data, metadata, event_id,
                batch_size, dry_run: bool, no_sync: bool, lock_timeout: float, store) -> None:
    """The command itself, given the parsed parameters (from typer, or from
    ``quick.py``).  ``ctx`` is click's context or a :class:`base.Root`."""
    from ..core.rules import parse_expected
    from ..features.jsonio import dumps
    from ..model import check_stream_id

    expected = parse_expected(expected_version)  # UsageError: exit 2, before any store
    check_stream_id(stream)  # before the store is created
    events = _read_first(_input(type_, data, metadata, event_id, batch_size), batch_size, dry_run)
    if dry_run:
        result = _dry_run(ctx, store, stream, list(events), expected)
        sys.stdout.write(dumps({**result.to_dict(), "dry_run": True}) + "\n")
        return
    result, auto = _commit(ctx, store, stream, events, expected, batch_size,
                           sync=not no_sync, lock_timeout=lock_timeout)
    # The acknowledgement first: an automatic snapshot runs after it, in
    # a child process with a time limit, and can neither delay nor fail it.
    sys.stdout.write(dumps(result.to_dict()) + "\n")
    sys.stdout.flush()
    _auto_snapshot(ctx, store, stream, result, auto)


def _input(type_, data, metadata, event_id, batch_size):
    """The events to append as ``(label, event)`` pairs, the label naming
    the input line or the option for errors: stdin's documents, or the one
    ``--type`` event.  Lazy: nothing is read from stdin until the caller
    iterates."""
    from ..features.jsonio import iter_documents
    from .base import fail, json_option

    if type_ is None:
        if data is not None or metadata is not None or event_id is not None:
            raise fail("--data, --metadata and --id go with --type", 2)
        if sys.stdin is None or sys.stdin.isatty():
            raise fail("no events: pass --type, or pipe JSON events to stdin "
                       "(see 'evstore append --help')", 2)
        labelled = iter_documents(sys.stdin.buffer,
                                  empty_array="stdin: an empty array: no events to append")
        if batch_size is not None:  # read while chunks are written: see _reading
            labelled = _reading(labelled)
        return labelled
    ev = {"type": type_}
    if data == "-" and metadata == "-":
        raise fail("--data - and --metadata - cannot both read stdin; use @FILE for one", 2)
    if data is not None:
        ev["data"] = json_option(data, "--data")
    if metadata is not None:
        ev["metadata"] = json_option(metadata, "--metadata")
    if event_id is not None:
        ev["id"] = event_id
    return iter([("--type event", ev)])


def _read_first(labelled, batch_size, dry_run):
    """The events with the whole batch (or the first chunk) already read and
    checked: refused input must not even create the store.  One batch is
    checked and packed as it is read (held as its packed bytes, not as
    dicts), its errors naming the input line."""
    from itertools import chain, islice

    from ..errors import InvalidEvent

    if batch_size is None and not dry_run:
        from ..model import DEFAULT_MAX_EVENT_BYTES, pack_events

        first = events = pack_events(labelled, DEFAULT_MAX_EVENT_BYTES, labelled=True)
    else:
        events = _checked(labelled, batch_size)
        first = list(events if batch_size is None else islice(events, batch_size))
        events = chain(first, events)
    if not first:
        raise InvalidEvent("no events to append: stdin was empty")
    return events


def _commit(ctx, store, stream, events, expected, batch_size, *, sync, lock_timeout):
    """Append under deferred signals; returns the result and the store's
    automatic-snapshot options, read from the same open store (one open per
    append: the settings are the store's, read where the store is opened).
    A signal stops at the next committed chunk, saying what was committed."""
    from ..errors import Interrupted
    from ..features.ingest import append_events
    from ..features.settings import append_options
    from . import interrupts

    done = {"count": 0, "last": None}

    def committed(res, total):
        # the safe point: a signal that arrived during this chunk stops here
        done["count"], done["last"] = total, res
        if interrupts.pending():
            raise Interrupted(interrupts.signum(), _stopped(stream, done))

    try:
        with interrupts.deferred(), open_store(ctx, store, create=True, sync=sync,
                                               lock_timeout=lock_timeout) as es:
            auto = append_options(es)  # the store's automatic snapshots
            return append_events(es, stream, events, expected, batch_size, committed), auto
    except Interrupted as e:
        e.what = e.what or _stopped(stream, done)
        raise


def _auto_snapshot(ctx, store, stream, result, auto) -> None:
    """The automatic snapshot an acknowledged append crossed, if any.  The
    store is opened again for it: the writer's was closed before the
    acknowledgement, because closing can still fail (an fsync), and a
    failure must never follow an acknowledgement.  Only appends that cross a
    ``snapshot_every`` boundary pay for this second open."""
    if not auto or not result.count:
        return
    from ..features.autosnap import crossed
    from .usercode import auto_snapshot_after

    before = result.version - result.count
    if crossed(auto["snapshot_every"], before, result.version) is not None:
        with open_store(ctx, store) as es:
            auto_snapshot_after(es, stream, before, result.version,
                                auto["snapshot_every"], auto["reducer"])


def _checked(labelled, batch_size):
    """The events of ``(label, event)`` pairs, each checked as it comes
    (errors name the input line), for a dry run or chunks of ``batch_size``
    (each a batch of its own for repeated ids).  The store gets each dict
    itself: a NewEvent cannot tell an explicit null from absent."""
    from ..model import check_repeated_id, normalize

    seen: dict = {}  # ids of this batch (or chunk): where each was first seen
    for n, (where, obj) in enumerate(labelled):
        ev = normalize(obj, where, "(checked only)")  # (no id is made for a check)
        if batch_size is not None and n % batch_size == 0:
            seen.clear()  # each chunk is a batch of its own
        if isinstance(obj, dict) and obj.get("id") is not None:
            check_repeated_id(seen, ev, where)
        yield obj


def _reading(events):
    """Events from stdin; waiting for the next one, a signal stops at once
    (the append around it defers signals while it writes).  Only for
    --batch-size: one batch is read whole before the store is opened, when
    signals are not deferred anyway."""
    from . import interrupts

    it = iter(events)
    while True:
        with interrupts.immediate():
            ev = next(it, _END)
        if ev is _END:
            return
        yield ev


_END = object()


def _stopped(stream: str, done: dict) -> str:
    """What an interrupted append says it committed."""
    last = done["last"]
    if last is None:
        return "nothing was appended"
    return (f"{done['count']:,} events committed to {stream!r} (up to version {last.version:,}, "
            "position {:,}); the rest of the input was not appended".format(last.position))


def _dry_run(ctx, store, stream, events, expected):
    """``append --dry-run``: read-only, and no store is created."""
    from ..backends import store_exists
    from ..features.ingest import plan_append
    from .base import store_path

    if not store_exists(store_path(ctx, store)):
        return plan_append(None, stream, events, expected)
    with open_store(ctx, store) as es:
        return plan_append(es, stream, events, expected)
