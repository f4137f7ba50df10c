"""``evstore read``, ``streams`` and ``info``: looking at what is stored.

As in ``cmd_write.py``: importing this module does not import typer, and
``read``'s body (:func:`read_body`) runs without it (``quick.py``); the
typer commands are built in :func:`register`.
"""
import sys

from .base import open_store, pick_format

READ_HELP = """Print a stream's events (or every event with --all).

The events of STREAM, or of the whole store with --all. They come in
version order (position order with --all). --from and --to bound the
range inclusively in either direction; --backwards prints that range
newest first, and --limit then keeps the newest N. Output streams in
constant memory, however long the stream.

Examples:

\b
    evstore read acct-1 | jq -c '{version, type, amount: .data.amount}'
    evstore read acct-1 --backwards --limit 1          # the latest event
    evstore read acct-1 --from 10 --to 20 --type Deposited
    evstore read --all --from 1000 --stream-prefix order- --format json
    evstore read --all --since 7d --type DeployFailed     # this week's failures
    evstore read --id 0b6c1e9e-5d8a-4f57-9a64-2c1d7f0e4b11 # one event, by id

Exit codes: 4 when the stream (or the store, or the --id) does not exist.
"""

STREAMS_HELP = """List the streams, with versions and times.

One line each with its id, version, and first and last recorded_at.

Examples:

\b
    evstore streams
    evstore streams --prefix acct- | jq -r .stream
"""

INFO_HELP = """Print the store's totals as one JSON object.

Its keys: streams, events, bytes, segments, snapshots, format_version and
more (docs/CLI-JSON.md lists them).

Example:

\b
    evstore info | jq .events
    evstore info | jq '.checkpoints[] | {name, behind}'     # consumer lag
    evstore info --streams | jq -c '.per_stream[] | {stream, events, bytes}'
"""


def emit_events(events, fmt: str, *, flush_each: bool = False, wide: bool = False) -> int:
    """Write events in the chosen format; returns how many were written."""
    if fmt == "table":
        from .render import events_table

        return events_table(events, wide=wide)
    from ..features.jsonio import Writer

    from .base import stdout_pipe

    w = Writer(sys.stdout.buffer, fmt, flush_each=flush_each)
    with stdout_pipe():
        try:
            for ev in events:
                w.write(ev.to_dict())
        finally:
            w.close()
    return w.count


def emit_chunks(chunks, fmt: str) -> int:
    """Write ``(bytes, count)`` pieces of NDJSON lines (see
    :meth:`EventStore.ndjson_all`) as ``fmt``; returns how many events."""
    from ..features.jsonio import Writer

    from .base import stdout_pipe

    w = Writer(sys.stdout.buffer, fmt)
    with stdout_pipe():
        try:
            for data, count in chunks:
                w.text(data, count)
        finally:
            w.close()
    return w.count


def register(app) -> None:
    from typing import Annotated, Optional

    import typer

    from .common import FormatOpt, SinceOpt, StoreOpt, TypeOpt, UntilOpt, WideOpt, complete_stream

    @app.command("read", help=READ_HELP)
    def read(
        ctx: typer.Context,
        stream: Annotated[Optional[str], typer.Argument(
            metavar="[STREAM]", autocompletion=complete_stream,
            help="The stream to read (omit with --all).", show_default=False)] = None,
        all_: Annotated[bool, typer.Option("--all", help="Read every stream, in position order.")] = False,
        from_: Annotated[Optional[int], typer.Option(
            "--from", metavar="N", min=0, help="First version (position with --all) to include.")] = None,
        to: Annotated[Optional[int], typer.Option(
            "--to", metavar="N", min=0, help="Last version (position with --all) to include.")] = None,
        limit: Annotated[Optional[int], typer.Option(
            "--limit", "-n", metavar="N", min=0, help="At most N events.")] = None,
        backwards: Annotated[bool, typer.Option("--backwards", help="Newest first.")] = False,
        types: TypeOpt = None,
        stream_prefix: Annotated[Optional[str], typer.Option(
            "--stream-prefix", "--prefix", metavar="S",
            help="With --all: only streams whose id starts with S.")] = None,
        since: SinceOpt = None,
        until: UntilOpt = None,
        event_id: Annotated[Optional[str], typer.Option(
            "--id", metavar="UUID", help="Only the event with this id (exit 4 when there is "
            "none); reads the store from the start.")] = None,
        fmt: FormatOpt = None,
        wide: WideOpt = False,
        store: StoreOpt = None,
    ) -> None:
        read_body(ctx, stream=stream, all_=all_, from_=from_, to=to, limit=limit, backwards=backwards,
                  types=types, stream_prefix=stream_prefix, since=since, until=until, event_id=event_id,
                  fmt=fmt, wide=wide, store=store)

    @app.command("streams", help=STREAMS_HELP)
    def streams(
        ctx: typer.Context,
        prefix: Annotated[Optional[str], typer.Option(
            "--prefix", "--stream-prefix", metavar="S", help="Only streams whose id starts with S.")] = None,
        since: Annotated[Optional[str], typer.Option(
            "--since", metavar="TIME", help="Only streams whose last event was recorded at or "
            "after TIME (forms as in 'evstore read --help').")] = None,
        until: Annotated[Optional[str], typer.Option(
            "--until", metavar="TIME", help="Only streams whose first event was recorded at or "
            "before TIME.")] = None,
        fmt: FormatOpt = None,
        wide: WideOpt = False,
        store: StoreOpt = None,
    ) -> None:
        from ..features.timespec import parse_window

        lo, hi = parse_window(since, until)
        with open_store(ctx, store) as es:
            rows = (s.to_dict() for s in es.streams(prefix=prefix, since=lo, until=hi))
            fmt_ = pick_format(fmt)
            if fmt_ == "table":
                from .render import dict_table

                dict_table(rows, title="streams", wide=wide)
                return
            from ..features.jsonio import Writer

            w = Writer(sys.stdout.buffer, fmt_)
            for row in rows:
                w.write(row)
            w.close()

    @app.command("info", help=INFO_HELP)
    def info(
        ctx: typer.Context,
        fmt: FormatOpt = None,
        per_stream: bool = typer.Option(
            False, "--streams", help="Add per_stream: one row per stream with its events, "
            "bytes, segments and snapshots (reads every stream's tail)."),
        wide: WideOpt = False,
        store: StoreOpt = None,
    ) -> None:
        from ..features.jsonio import dumps

        with open_store(ctx, store) as es:
            data = es.info(per_stream=per_stream)
        if (fmt is not None and fmt.value == "table") or (fmt is None and sys.stdout.isatty()):
            from .render import info_table

            # on a terminal: sizes and counts as people read them ("14.6 KiB")
            info_table(data, wide=wide, human=True)
            return
        if fmt is not None and fmt.value == "ndjson":
            sys.stdout.write(dumps(data) + "\n")
            return
        import json

        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2 if sys.stdout.isatty() else None) + "\n")


def read_body(ctx, *, stream, all_: bool, from_, to, limit, backwards: bool, types, stream_prefix,
              since, until, event_id, fmt, wide: bool, store) -> None:
    """``evstore read`` itself, given the parsed parameters (from typer, or
    from ``quick.py``).  ``ctx`` is click's context or a :class:`base.Root`."""
    from ..features.timespec import parse_window
    from .base import fail

    if event_id is not None:
        if stream is not None or all_:
            raise fail("--id finds one event in the whole store: give no STREAM or --all", 2)
        with open_store(ctx, store) as es:
            emit_events([es.find(event_id)], pick_format(fmt), wide=wide)
        return
    if all_ == (stream is not None):
        raise fail("give a STREAM or --all (one of them)", 2)
    if stream_prefix is not None and not all_:
        raise fail("--stream-prefix goes with --all", 2)
    lo, hi = parse_window(since, until)
    fmt_ = pick_format(fmt)
    plain = fmt_ in ("ndjson", "json") and limit is None and not backwards and not types \
        and stream_prefix is None and lo is None and hi is None
    with open_store(ctx, store) as es:
        if plain:  # every event of the range, as is: the fast formatters
            from ..core.lines import event_chunks

            chunks = es.ndjson_all(from_ or 1, to, workers=1) if all_ else \
                es.ndjson_stream(stream, from_ or 1, to)
            if chunks is None:
                chunks = event_chunks(es.read_all(from_position=from_ or 1, to_position=to)
                                      if all_ else es.read(stream, from_version=from_ or 1,
                                                           to_version=to))
            emit_chunks(chunks, fmt_)
            return
        if all_:
            events = es.read_all(from_position=from_ or 1, to_position=to, limit=limit,
                                 backwards=backwards, types=types, stream_prefix=stream_prefix,
                                 since=lo, until=hi)
        else:
            events = es.read(stream, from_version=from_ or 1, to_version=to,
                             backwards=backwards, limit=limit, types=types, since=lo, until=hi)
        emit_events(events, fmt_, wide=wide)

