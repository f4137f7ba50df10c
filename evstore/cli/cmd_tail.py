"""``evstore tail`` and ``evstore checkpoints``: following the store.

The command is a thin loop over :class:`evstore.features.subscriptions.Subscription`:
print an event, flush, ask for the next one (which acknowledges the one just
printed).  Stopping is always cooperative -- signal handlers and the
stdout-hangup watcher only call ``stop()`` -- so a line is never cut in half
and the checkpoint is saved on the way out.  docs/TAIL.md has the design.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Annotated, Optional

import typer

from .common import (FormatOpt, StoreOpt, TypeOpt, WideOpt, complete_checkpoint, complete_stream,
                     fail, open_store, pick_format)

TAIL_HELP = """Print the last events; with -f, follow new ones.

Prints the last events of STREAM (or of the whole store with --all); with
-f, keeps printing new events as they are committed.

Events come oldest first, in version order (position order with --all).
With -f each event is printed and flushed as soon as it is committed, so
pipes into jq or a 'while read' loop see it at once; the command ends with
exit 0 on Ctrl-C/SIGTERM, after --max-count events, after --idle-timeout
seconds without one, or when the reader of its output goes away. With -f a
STREAM that does not exist yet is waited for.

--from starts at a version (a position with --all) instead of the last N.

--checkpoint NAME makes a durable consumer: it starts after the position
saved under NAME (the first time: from the beginning, or where -n/--from
say), and saves each event's position once its line is printed. Run the
same command again and it resumes there: every event is delivered at least
once, in order; after a clean stop, exactly once. See 'evstore checkpoints'.

Examples:

\b
    evstore tail acct-1                          # the last 10 events
    evstore tail --all -n 3 --type Deposited

\b
    # follow everything, as a pipeline
    evstore tail -f --all | jq -c '{position, stream, type}'

\b
    # a projector that resumes where it stopped
    evstore tail -f --all --checkpoint proj | while read -r ev; do
        echo "$ev" | ./apply.sh
    done

\b
    # wait for the next event of order-7 (at most 30 s)
    evstore tail -f order-7 -n 0 --max-count 1 --idle-timeout 30

Exit codes: 4 when the stream (without -f) or the store does not exist;
1 when another consumer runs under the same --checkpoint NAME.
"""

CHECKPOINTS_HELP = """List, delete or reset durable consumers' checkpoints.

A durable consumer is 'evstore tail --checkpoint NAME'.

Without a subcommand, lists them: one line each with the name, the position
the consumer has handled, the store's head, how many positions it is
behind, the stream it follows (null: all), and when it last moved.

Examples:

\b
    evstore checkpoints
    evstore checkpoints --format json | jq '.[] | select(.behind > 1000)'
    evstore checkpoints reset proj               # replay from the beginning
    evstore checkpoints reset proj --to head     # skip to now
    evstore checkpoints delete proj
"""

LIST_HELP = """List the checkpoints (as 'evstore checkpoints').

Example:

\b
    evstore checkpoints list --format table
"""

DELETE_HELP = """Delete the checkpoint NAME. Its consumer, run again, starts afresh.

Refused (exit 1) while a consumer runs under NAME; exit 4 when there is no
such checkpoint.

Example:

\b
    evstore checkpoints delete proj
"""

RESET_HELP = """Move the checkpoint NAME to position P (default 0).

Its consumer resumes at P + 1. Creates the checkpoint when it does not exist.

P is a position in the store ('evstore read --all' shows them), 0 for the
beginning, or 'head' for the current head (skip everything so far). Refused
(exit 1) while a consumer runs under NAME.

Examples:

\b
    evstore checkpoints reset proj                # process everything again
    evstore checkpoints reset proj --to 1200
    evstore checkpoints reset mailer --to head    # a new consumer, from now on

Prints the checkpoint as one JSON object.
"""


def register(app: typer.Typer) -> None:
    @app.command("tail", help=TAIL_HELP)
    def tail(
        ctx: typer.Context,
        stream: Annotated[Optional[str], typer.Argument(
            metavar="[STREAM]", autocompletion=complete_stream,
            help="The stream to follow (omit with --all).", show_default=False)] = None,
        all_: Annotated[bool, typer.Option("--all", help="Every stream, in position order.")] = False,
        lines: Annotated[Optional[int], typer.Option(
            "-n", "--lines", metavar="N", min=0, show_default=False,
            help="Start with the last N events (default 10; with --checkpoint, a new "
                 "checkpoint starts from the beginning unless -n is given).")] = None,
        follow: Annotated[bool, typer.Option(
            "-f", "--follow", help="Keep printing new events as they are committed.")] = False,
        from_: Annotated[Optional[int], typer.Option(
            "--from", metavar="V|P", min=0,
            help="Start at this version (a position with --all) instead of the last N.")] = None,
        types: TypeOpt = None,
        stream_prefix: Annotated[Optional[str], typer.Option(
            "--stream-prefix", "--prefix", metavar="S",
            help="With --all: only streams whose id starts with S.")] = None,
        checkpoint: Annotated[Optional[str], typer.Option(
            "--checkpoint", metavar="NAME", autocompletion=complete_checkpoint,
            help="A durable consumer: resume after the position saved under NAME, "
                 "and save each event's position once it is printed.")] = None,
        max_count: Annotated[Optional[int], typer.Option(
            "--max-count", metavar="N", min=0, help="Stop after printing N events.")] = None,
        idle_timeout: Annotated[Optional[float], typer.Option(
            "--idle-timeout", metavar="SECONDS", min=0,
            help="With -f: stop after this long without a new event.")] = None,
        since: Annotated[Optional[str], typer.Option(
            "--since", metavar="TIME", help="Start at the first event recorded at or after TIME "
            "(forms as in 'evstore read --help') instead of the last N.")] = None,
        until: Annotated[Optional[str], typer.Option(
            "--until", metavar="TIME", help="Stop before the first event recorded after TIME.")] = None,
        fmt: FormatOpt = None,
        wide: WideOpt = False,
        store: StoreOpt = None,
    ) -> None:
        from ..features.timespec import parse_window

        if all_ == (stream is not None):
            raise fail("give a STREAM or --all (one of them)", 2)
        lo, hi = parse_window(since, until)
        if lo is not None and (lines is not None or from_ is not None or checkpoint is not None):
            raise fail("give one of -n, --from, --since or --checkpoint: each says where to start", 2)
        if stream_prefix is not None and not all_:
            raise fail("--stream-prefix goes with --all", 2)
        if lines is not None and from_ is not None:
            raise fail("give -n or --from, not both (-n counts back from the end; "
                       "--from starts at a given place)", 2)
        if idle_timeout is not None and not follow:
            raise fail("--idle-timeout goes with -f", 2)
        if lines is None and from_ is None and checkpoint is None:
            lines = 10
        signals = _StopSignals()
        with signals, open_store(ctx, store) as es:
            from ..errors import StreamNotFound

            if stream is not None and not follow and es.version(stream) == 0:
                raise StreamNotFound(stream)
            from ..features.subscriptions import Subscription

            if lo is not None:  # where --since starts: the first event at or after it
                lines, from_ = None, _first_since(es, stream, lo, stream_prefix)

            sub = Subscription(
                es, stream, last=lines,
                from_position=from_ if all_ else None,
                from_version=from_ if stream is not None else None,
                checkpoint=checkpoint, idle_timeout=idle_timeout, max_count=max_count,
                types=types, stream_prefix=stream_prefix, follow=follow,
                wake=os.environ.get("EVSTORE_TAIL_WAKE", "auto"))
            with sub:
                signals.target = sub
                from .common import note

                for text in sub.notes:
                    note(f"note: {text}")
                if follow:
                    _watch_stdout(sub)
                with _closed_pipe_is_fine():
                    _print(sub if hi is None else _until(sub, hi), pick_format(fmt),
                           flush_each=follow or checkpoint is not None, wide=wide)

    cp = typer.Typer(help=CHECKPOINTS_HELP, no_args_is_help=False)

    @cp.callback(invoke_without_command=True)
    def checkpoints(ctx: typer.Context, fmt: FormatOpt = None, wide: WideOpt = False,
                    store: StoreOpt = None) -> None:
        if ctx.invoked_subcommand is None:
            _list(ctx, store, fmt, wide)

    @cp.command("list", help=LIST_HELP)
    def list_(ctx: typer.Context, fmt: FormatOpt = None, wide: WideOpt = False,
              store: StoreOpt = None) -> None:
        _list(ctx, _parent_store(ctx, store), fmt or ctx.parent.params.get("fmt"),
              wide or bool(ctx.parent.params.get("wide")))

    @cp.command("delete", help=DELETE_HELP, no_args_is_help=True)
    def delete(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(
            metavar="NAME", help="The checkpoint's name.", autocompletion=complete_checkpoint)],
        store: StoreOpt = None,
    ) -> None:
        from ..features.checkpoints import CheckpointStore

        with open_store(ctx, _parent_store(ctx, store)) as es:
            CheckpointStore(es).delete(name)
        from .common import note

        note(f"deleted checkpoint {name!r}")

    @cp.command("reset", help=RESET_HELP, no_args_is_help=True)
    def reset(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(
            metavar="NAME", help="The checkpoint's name.", autocompletion=complete_checkpoint)],
        to: Annotated[str, typer.Option(
            "--to", metavar="P|head", help="The position handled so far: 0 (the beginning), "
                                           "a position, or head.")] = "0",
        store: StoreOpt = None,
    ) -> None:
        from ..features.checkpoints import CheckpointStore
        from ..features.jsonio import dumps

        with open_store(ctx, _parent_store(ctx, store)) as es:
            if to.strip().lower() == "head":
                position = es.head()
            elif to.strip().isdigit():
                position = int(to.strip())
            else:
                raise fail(f"invalid --to {to!r}: a position (0 or more) or head", 2)
            cp_ = CheckpointStore(es).reset(name, position)
            sys.stdout.write(dumps(cp_.to_dict(es.head())) + "\n")

    app.add_typer(cp, name="checkpoints")


def _first_since(es, stream, since, prefix) -> int:
    """The version (position with --all) of the first event recorded at or
    after ``since``; one past the end when there is none yet."""
    if stream is not None:
        first = next(iter(es.read(stream, since=since, limit=1)), None) if es.version(stream) else None
        return first.version if first is not None else es.version(stream) + 1
    first = next(iter(es.read_all(since=since, limit=1, stream_prefix=prefix)), None)
    return first.position if first is not None else es.head() + 1


def _until(events, until):
    """The events up to ``until``: recorded_at never decreases with position,
    so the first one after it ends the run (it is not handled, so a
    checkpoint does not move past it)."""
    for ev in events:
        if ev.recorded_at > until:
            return
        yield ev


# -- output ------------------------------------------------------------------------------------

def _print(sub, fmt: str, *, flush_each: bool, wide: bool = False) -> None:
    """Print events as the subscription hands them out.  With ``flush_each``
    every line is flushed before the next event is asked for, which is what
    lets the subscription count the previous one as handled."""
    if fmt == "table" and not flush_each:
        from .render import events_table

        events_table(sub, wide=wide)
        return
    if fmt == "table":
        write = _line_printer(wide)
        for ev in sub:
            write(ev)
        return
    from ..features.jsonio import Writer

    w = Writer(sys.stdout.buffer, fmt, flush_each=flush_each)
    try:
        for ev in sub:
            w.write(ev.to_dict())
    finally:
        w.close()


def _line_printer(wide: bool = False):
    """One rich line per event (a terminal view of ``tail -f``): rendered to
    a string and written by us, so a closed pipe is our BrokenPipeError."""
    from .render import console, event_line, width

    con = console()
    out = sys.stdout

    def write(ev) -> None:
        t = event_line(ev, width(), wide=wide)
        with con.capture() as cap:  # (print() ignores a Text's own no_wrap)
            con.print(t, crop=not wide, no_wrap=not wide, overflow="fold" if wide else "ellipsis")
        out.write(cap.get())
        out.flush()

    return write


def _parent_store(ctx: typer.Context, store):
    """``evstore checkpoints --store X delete NAME`` works as well as
    ``evstore checkpoints delete NAME --store X``."""
    if store is None and ctx.parent is not None:
        store = ctx.parent.params.get("store")
    return store


def _list(ctx: typer.Context, store, fmt, wide: bool = False) -> None:
    from ..features.checkpoints import CheckpointStore

    with open_store(ctx, store) as es:
        head = es.head()
        rows = [c.to_dict(head) for c in CheckpointStore(es).list()]
    fmt_ = pick_format(fmt)
    if fmt_ == "table":
        from .render import dict_table

        for r in rows:
            r["stream"] = "(all)" if r["stream"] is None else r["stream"]
        dict_table(rows, title="checkpoints", wide=wide)
        return
    from ..features.jsonio import Writer

    with _closed_pipe_is_fine():
        w = Writer(sys.stdout.buffer, fmt_)
        for r in rows:
            w.write(r)
        w.close()


@contextmanager
def _closed_pipe_is_fine():
    """The reader of stdout went away (``| head``): stop quietly, exit 0.
    Caught here because typer turns a BrokenPipeError that reaches it into
    exit 1 before evstore's own handler can see it."""
    try:
        yield
    except BrokenPipeError:
        from .common import _quiet_broken_pipe

        _quiet_broken_pipe()


# -- stopping -----------------------------------------------------------------------------------

class _StopSignals:
    """SIGINT, SIGTERM and SIGHUP ask the subscription to stop at its next
    safe point: exit 0, no half line.  (SIGINT and SIGHUP stay ignored when
    we were started with them ignored, as Python and nohup expect.)  A
    second signal is for a consumer stuck writing to a full pipe: it exits
    at once (130), without saving the checkpoint -- at-least-once holds."""

    def __init__(self):
        self.target = None
        self.fired = 0
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is None:
                continue
            old = signal.getsignal(sig)
            if sig != signal.SIGTERM and old == signal.SIG_IGN:
                continue  # nohup, or a background job of a script: leave it ignored
            self._old[sig] = old
            signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame):
        self.fired += 1
        if self.fired > 1:
            os.write(2, b"evstore: interrupted\n")
            os._exit(130)
        if self.target is not None:
            self.target.stop()

    @property
    def target(self):
        return self._target

    @target.setter
    def target(self, sub):
        self._target = sub
        if sub is not None and getattr(self, "fired", 0):
            sub.stop()


def _watch_stdout(sub) -> None:
    """Stop when the reader of our stdout goes away, even while no event
    comes (as GNU ``tail -f`` does): a pipe's write end reports POLLERR once
    its read end is closed.  A daemon thread blocked in poll() costs nothing."""
    import select
    import stat

    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError):
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return

    def watch() -> None:
        p = select.poll()
        p.register(fd, 0)  # POLLERR/POLLHUP/POLLNVAL are always reported
        while True:
            try:
                ready = p.poll()
            except OSError:
                return
            for _, ev in ready:
                if ev & select.POLLNVAL:
                    return
                if ev & (select.POLLERR | select.POLLHUP):
                    sub.stop()
                    return

    threading.Thread(target=watch, name="evstore-stdout-watch", daemon=True).start()
