"""``evstore tail``: following the store (managing checkpoints is
``cmd_checkpoints.py``).

The command is a thin loop over :class:`evstore.features.subscriptions.Subscription`:
print an event, flush, ask for the next one (which acknowledges the one just
printed).  Stopping is always cooperative -- signal handlers and the
stdout-hangup watcher only call ``stop()`` -- so a line is never cut in half
and the checkpoint is saved on the way out.  With ``--exec`` the loop is
:func:`evstore.features.handoff.deliver` instead (the subscription then
counts an event as handled only when its run of CMD exited 0).  docs/TAIL.md
has the design.
"""
from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Optional

import typer

from .common import (FormatOpt, StoreOpt, TypeOpt, WideOpt, complete_checkpoint, complete_stream,
                     fail, open_store, pick_format)
from .early import STOP

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
once, in order, to stdout; after a clean stop, exactly once. Written into a
pipe counts as delivered: if the command after the pipe fails, its events
are not delivered again. When the work matters, use --exec.

--exec CMD (with --checkpoint) runs CMD (with sh -c) for each event, with
the event as one NDJSON line on its stdin, and moves the checkpoint past it
only when CMD exits 0. --batch N hands up to N events (those already
committed) to one run. A failing CMD stops the command with CMD's exit code
and a message naming the position; the next run starts there again. CMD's
output is the command's output (nothing else is printed). CMD's environment
has EVSTORE_POSITION, EVSTORE_STREAM, EVSTORE_VERSION, EVSTORE_TYPE and
EVSTORE_ID (without --batch), and always EVSTORE_COUNT,
EVSTORE_FIRST_POSITION, EVSTORE_LAST_POSITION and EVSTORE_CHECKPOINT. A
stop signal lets the running CMD finish first.

--no-commit reads from the checkpoint but never moves (or creates) it;
'evstore checkpoints set NAME P' moves it when your script is done.

Examples:

\b
    evstore tail acct-1                          # the last 10 events
    evstore tail --all -n 3 --type Deposited

\b
    # follow everything, as a pipeline
    evstore tail -f --all | jq -c '{position, stream, type}'

\b
    # a projector that resumes where it stopped, acknowledging only what
    # ./apply.sh finished (exit 0)
    evstore tail -f --all --checkpoint proj --exec ./apply.sh

\b
    # up to 500 events per run, as NDJSON on the handler's stdin
    evstore tail --all --checkpoint load --batch 500 --exec 'psql -f load.sql'

\b
    # a script that commits by itself
    evstore tail --all --checkpoint job --no-commit --max-count 100 > batch.ndjson
    ./work.sh < batch.ndjson &&
        evstore checkpoints set job "$(tail -n 1 batch.ndjson | jq .position)"

\b
    # wait for the next event of order-7 (at most 30 s)
    evstore tail -f order-7 -n 0 --max-count 1 --idle-timeout 30

Exit codes: 4 when the stream (without -f) or the store does not exist;
1 when another consumer runs under the same --checkpoint NAME; 6 when the
checkpoint's file is damaged; with --exec, a failing CMD's exit code.
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
            "--max-count", metavar="N", min=0,
            help="Stop after N events (printed, or handed to --exec).")] = None,
        idle_timeout: Annotated[Optional[float], typer.Option(
            "--idle-timeout", metavar="SECONDS", min=0,
            help="With -f: stop after this long without a new event.")] = None,
        exec_: Annotated[Optional[str], typer.Option(
            "--exec", metavar="CMD",
            help="With --checkpoint: run CMD (sh -c) with each event on its stdin; the "
                 "checkpoint moves past it only when CMD exits 0.")] = None,
        batch: Annotated[Optional[int], typer.Option(
            "--batch", metavar="N", min=1,
            help="With --exec: up to N events (those already committed) per run of CMD.")] = None,
        no_commit: Annotated[bool, typer.Option(
            "--no-commit",
            help="With --checkpoint: start after it, but never move it "
                 "(see 'evstore checkpoints set').")] = False,
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
        t = _Tail(stream, all_, lines, follow, from_, types, stream_prefix, checkpoint, max_count,
                  idle_timeout, exec_, batch, no_commit, lo, hi, fmt, wide)
        _refuse_combinations(t)
        if t.lines is None and t.from_ is None and t.checkpoint is None:
            t.lines = 10
        signals = STOP
        with signals, open_store(ctx, store) as es:
            from ..errors import StreamNotFound

            if stream is not None and not follow and not es.exists(stream):
                raise StreamNotFound(stream)
            if lo is not None:  # where --since starts: the first event at or after it
                t.lines, t.from_ = None, _first_since(es, stream, lo, stream_prefix)
            fmt_ = pick_format(fmt)
            if _plain_ndjson_tail(es, t, fmt_):
                return
            _consume(es, t, fmt_, signals)



@dataclass
class _Tail:
    """``evstore tail``'s options, as the pieces of the command share them."""

    stream: Optional[str]
    all_: bool
    lines: Optional[int]
    follow: bool
    from_: Optional[int]
    types: Optional[list]
    stream_prefix: Optional[str]
    checkpoint: Optional[str]
    max_count: Optional[int]
    idle_timeout: Optional[float]
    exec_: Optional[str]
    batch: Optional[int]
    no_commit: bool
    lo: object  # --since, parsed
    hi: object  # --until, parsed
    fmt: object
    wide: bool


def _refuse_combinations(t: _Tail) -> None:
    """Options that do not go together: exit 2 naming them, before the
    store is opened."""
    if t.lo is not None and (t.lines is not None or t.from_ is not None
                             or t.checkpoint is not None):
        raise fail("give one of -n, --from, --since or --checkpoint: each says where to start", 2)
    if t.stream_prefix is not None and not t.all_:
        raise fail("--stream-prefix goes with --all", 2)
    if t.lines is not None and t.from_ is not None:
        raise fail("give -n or --from, not both (-n counts back from the end; "
                   "--from starts at a given place)", 2)
    if t.idle_timeout is not None and not t.follow:
        raise fail("--idle-timeout goes with -f", 2)
    if t.exec_ is not None and t.checkpoint is None:
        raise fail("--exec goes with --checkpoint NAME (the checkpoint is what moves "
                   "when CMD succeeds)", 2)
    if t.exec_ is not None and not t.exec_.strip():
        raise fail("--exec: the command is empty", 2)
    if t.hi is not None and t.checkpoint is not None:
        raise fail("--until does not go with --checkpoint (a consumer does not skip "
                   "events); stop with --max-count or --idle-timeout", 2)
    if t.batch is not None and t.exec_ is None:
        raise fail("--batch goes with --exec", 2)
    if t.no_commit and t.checkpoint is None:
        raise fail("--no-commit goes with --checkpoint NAME", 2)
    if t.exec_ is not None and (t.fmt is not None or t.wide):
        raise fail("--format and --wide do not go with --exec (CMD gets NDJSON; "
                   "its output is the command's output)", 2)


def _plain_ndjson_tail(es, t: _Tail, fmt_: str) -> bool:
    """The fast path: the last events of ``$all`` as NDJSON, with nothing
    to follow, filter or hand on, copied as the backend's ready lines.
    False when it does not apply (the subscription then does the work)."""
    if not (t.all_ and not t.follow and t.checkpoint is None and t.exec_ is None
            and not t.types and t.stream_prefix is None and t.hi is None
            and t.max_count is None and fmt_ == "ndjson"):
        return False
    from ..features.subscriptions import ndjson_tail

    chunks = ndjson_tail(es, t.lines, t.from_)
    if chunks is None:
        return False
    from .cmd_read import emit_chunks

    with _closed_pipe_is_fine():
        emit_chunks(chunks, fmt_)
    return True


def _consume(es, t: _Tail, fmt_: str, signals) -> None:
    """The subscription's events printed (or handed to --exec) until it
    ends; ``signals`` stop it cooperatively, so the checkpoint is saved on
    the way out."""
    from ..features.subscriptions import Subscription

    sub = Subscription(
        es, t.stream, last=t.lines,
        from_position=t.from_ if t.all_ else None,
        from_version=t.from_ if t.stream is not None else None,
        checkpoint=t.checkpoint, idle_timeout=t.idle_timeout, max_count=t.max_count,
        types=t.types, stream_prefix=t.stream_prefix, follow=t.follow,
        wake=os.environ.get("EVSTORE_TAIL_WAKE", "auto"),
        ack="manual" if t.exec_ is not None else "auto", commit=not t.no_commit)
    with sub:
        signals.target = sub
        from .common import note

        for text in sub.notes:
            note(f"note: {text}")
        if t.follow:
            _watch_stdout(sub)
        if t.exec_ is not None:
            from ..features.handoff import deliver

            deliver(sub, t.exec_, t.batch or 1)
            return
        with _closed_pipe_is_fine():
            _print(sub if t.hi is None else _until(sub, t.hi, t.follow), fmt_,
                   flush_each=t.follow or t.checkpoint is not None, wide=t.wide)


def _first_since(es, stream, since, prefix) -> int:
    """The version (position with --all) of the first event recorded at or
    after ``since``; one past the end when there is none yet."""
    if stream is not None:
        first = next(iter(es.read(stream, since=since, limit=1)), None) if es.exists(stream) else None
        return first.version if first is not None else es.version(stream) + 1
    first = next(iter(es.read_all(since=since, limit=1, stream_prefix=prefix)), None)
    return first.position if first is not None else es.head() + 1


def _until(events, until, follow: bool):
    """The events recorded up to ``until``.  Following, the first event
    after it ends the run (new commits only get later; it is not handled, so
    a checkpoint does not move past it); otherwise later ones are skipped (a
    merged store's times need not follow its positions)."""
    for ev in events:
        if ev.recorded_at > until:
            if follow:
                return
            continue
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
