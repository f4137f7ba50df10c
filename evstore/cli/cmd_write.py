"""``evstore append``."""
from __future__ import annotations

import sys
from pathlib import Path
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
        no_sync: Annotated[bool, typer.Option(
            "--no-sync", help="Do not wait for the disk (fsync): faster, but a power "
                              "loss may lose the append.")] = False,
        lock_timeout: LockTimeoutOpt = 30.0,
        store: StoreOpt = None,
    ) -> None:
        from itertools import chain, islice

        from ..errors import InvalidEvent
        from ..features.jsonio import dumps, iter_documents
        from ..disk.records import check_stream_id, normalize
        from ..core.store import parse_expected
        from .common import fail, json_option

        try:
            expected = parse_expected(expected_version)
        except Exception as e:  # UsageError
            raise fail(str(e), 2)
        check_stream_id(stream)  # before the store is created

        def checked(obj, where):
            # Validate now (errors name the input line), but hand the store the
            # dict itself: a NewEvent cannot tell an explicit null from absent.
            normalize(obj, where)
            return obj

        if type_ is None:
            if data is not None or metadata is not None or event_id is not None:
                raise fail("--data, --metadata and --id go with --type", 2)
            if sys.stdin is None or sys.stdin.isatty():
                raise fail("no events: pass --type, or pipe JSON events to stdin "
                           "(see 'evstore append --help')", 2)
            events = (checked(obj, label) for label, obj in iter_documents(sys.stdin.buffer))
        else:
            ev = {"type": type_}
            if data == "-" and metadata == "-":
                raise fail("--data - and --metadata - cannot both read stdin; use @FILE for one", 2)
            if data is not None:
                ev["data"] = json_option(data, "--data")
            if metadata is not None:
                ev["metadata"] = json_option(metadata, "--metadata")
            if event_id is not None:
                ev["id"] = event_id
            events = iter([checked(ev, "--type event")])
        # Refused input must not even create the store: read (and check) the
        # whole batch, or the first chunk, before opening it.
        first = list(events if batch_size is None else islice(events, batch_size))
        if not first:
            raise InvalidEvent("no events to append (the input was empty)")
        events = chain(first, events)

        from ..features.ingest import append_events
        from .cmd_state import auto_snapshot_options  # the store's automatic snapshots

        with open_store(ctx, store, create=True, sync=not no_sync,
                        lock_timeout=lock_timeout, **auto_snapshot_options(ctx, store)) as es:
            result = append_events(es, stream, events, expected, batch_size)
        sys.stdout.write(dumps(result.to_dict()) + "\n")
