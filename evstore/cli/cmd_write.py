"""``evstore append``."""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .common import LockTimeoutOpt, StoreOpt, complete_stream, open_store

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


def register(app: typer.Typer) -> None:
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
        from ..core.rules import parse_expected
        from ..features.jsonio import dumps
        from ..model import check_stream_id

        expected = parse_expected(expected_version)  # UsageError: exit 2, before any store
        check_stream_id(stream)  # before the store is created
        events = _input(type_, data, metadata, event_id, batch_size)
        events = _read_first(events, batch_size, dry_run)
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
    """The events to append, each checked as it is read (errors name the
    input line or the option): stdin's documents, or the one ``--type``
    event.  Lazy: nothing is read from stdin until the caller iterates."""
    from ..features.jsonio import iter_documents
    from ..model import check_repeated_id, normalize
    from .common import fail, json_option

    seen: dict = {}  # ids of this batch (or chunk): where each was first seen
    count = [0]

    def checked(obj, where):
        # Validate now (errors name the input line), but hand the store the
        # dict itself: a NewEvent cannot tell an explicit null from absent.
        ev = normalize(obj, where)
        if batch_size is not None and count[0] % batch_size == 0:
            seen.clear()  # each chunk is a batch of its own
        count[0] += 1
        if isinstance(obj, dict) and obj.get("id") is not None:
            check_repeated_id(seen, ev, where)
        return obj

    if type_ is None:
        if data is not None or metadata is not None or event_id is not None:
            raise fail("--data, --metadata and --id go with --type", 2)
        if sys.stdin is None or sys.stdin.isatty():
            raise fail("no events: pass --type, or pipe JSON events to stdin "
                       "(see 'evstore append --help')", 2)
        return _reading(checked(obj, label) for label, obj in iter_documents(
            sys.stdin.buffer, empty_array="stdin: an empty array: no events to append"))
    ev = {"type": type_}
    if data == "-" and metadata == "-":
        raise fail("--data - and --metadata - cannot both read stdin; use @FILE for one", 2)
    if data is not None:
        ev["data"] = json_option(data, "--data")
    if metadata is not None:
        ev["metadata"] = json_option(metadata, "--metadata")
    if event_id is not None:
        ev["id"] = event_id
    return iter([checked(ev, "--type event")])


def _read_first(events, batch_size, dry_run):
    """``events`` with the whole batch (or the first chunk) already read and
    checked: refused input must not even create the store.  One batch is
    packed as it is read (held as its packed bytes, not as dicts)."""
    from itertools import chain, islice

    from ..errors import InvalidEvent

    if batch_size is None and not dry_run:
        from ..model import DEFAULT_MAX_EVENT_BYTES, pack_events

        first = events = pack_events(events, DEFAULT_MAX_EVENT_BYTES)
    else:
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
    from ..features.ingest import append_events
    from ..features.settings import append_options
    from . import interrupts

    done = {"count": 0, "last": None}

    def committed(res, total):
        # the safe point: a signal that arrived during this chunk stops here
        done["count"], done["last"] = total, res
        if interrupts.pending():
            raise interrupts.Interrupted(interrupts.signum(), _stopped(stream, done))

    try:
        with interrupts.deferred(), open_store(ctx, store, create=True, sync=sync,
                                               lock_timeout=lock_timeout) as es:
            auto = append_options(es)  # the store's automatic snapshots
            return append_events(es, stream, events, expected, batch_size, committed), auto
    except interrupts.Interrupted as e:
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
    from ..features.snapshots import crossed
    from .usercode import auto_snapshot_after

    before = result.version - result.count
    if crossed(auto["snapshot_every"], before, result.version) is not None:
        with open_store(ctx, store) as es:
            auto_snapshot_after(es, stream, before, result.version,
                                auto["snapshot_every"], auto["reducer"])


def _reading(events):
    """Events from stdin; waiting for the next one, a signal stops at once
    (the append around it defers signals while it writes)."""
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
    from .common import store_path

    if not store_exists(store_path(ctx, store)):
        return plan_append(None, stream, events, expected)
    with open_store(ctx, store) as es:
        return plan_append(es, stream, events, expected)
