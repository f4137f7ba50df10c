"""``evstore snapshot``, ``replay`` and ``config``: a stream's state."""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .usercode import guarded, to_stderr
from .common import (FormatOpt, LockTimeoutOpt, StoreOpt, TypeOpt, complete_stream, count, note,
                     open_store, pick_format)

REDUCER_HELP = ("The reducer: merge, count, last, list, path/to/file.py:function or "
                "package.module:function. Default: the store's reducer setting "
                "(evstore config reducer), else merge.")

SNAPSHOT_HELP = """Save (or show) a stream's state at a version.

Replays of STREAM then start there.

Compute and save: folds the events into state with the reducer, starting
from the latest usable snapshot at or below --version (default: the current
version), saves it and prints {"stream", "version", "state", "created_at"}.
--show prints the latest snapshot at or below --version instead (made by
--reducer, when given). --state saves a state computed elsewhere as the
state at --version (which must exist), for --reducer.

A snapshot is only used by replays with the reducer that made it, and only
while its source is unchanged. To save one automatically every N events,
set it once for the store: evstore config snapshot-every N.

Examples:

\b
    evstore snapshot acct-7 --reducer sample_data/reducers.py:balance
    evstore snapshot acct-7 --show --version 40

\b
    # a state computed elsewhere, for the default reducer (merge)
    echo '{"balance": 0}' | evstore snapshot acct-7 --state - --version 12

Exit codes: 2 a reducer that cannot be loaded, 4 no such stream, version or
snapshot, 5 --state is not JSON, 6 the snapshot file is damaged.
"""

REPLAY_HELP = """Rebuild a stream's state at a version or time.

Prints the state of STREAM at a version (default: the current one) or a time.

Folds the events with the reducer from the latest usable snapshot at or
below the version (--no-snapshot: from the first event) and prints
{"stream", "version", "state"}. --at TIME (RFC 3339) replays to the last
event recorded at or before TIME.

--steps is the debugging view: every event applied and what it changed
(added, removed and changed paths, with old and new values). Off a terminal
it prints NDJSON {"version", "type", "changes", "state"} per event; on a
terminal, a readable view. --type and --from-version choose which steps are
shown; the state still folds through every event. It also says (on stderr
off a terminal) why the replay started where it did.

--verify-snapshots rebuilds from the first event and compares every stored
snapshot made by the reducer; each mismatch is printed with the first path
that differs, and the exit code is 6 if there is any.

Examples:

\b
    evstore replay acct-7 --reducer sample_data/reducers.py:balance
    evstore replay acct-7 --reducer sample_data/reducers.py:balance --at 2026-01-01T00:00:00Z

\b
    # how did acct-7 go negative? the first step below zero:
    evstore replay acct-7 --reducer sample_data/reducers.py:balance --steps \\
      | jq -c 'select(.state.balance < 0)' | head -1

\b
    evstore replay order-1013 --reducer count --steps --type PaymentReceived
    evstore replay acct-7 --verify-snapshots --reducer sample_data/reducers.py:balance

Exit codes: 1 the reducer raised (the message names the event), 2 bad
arguments or a reducer that cannot be loaded, 4 no such stream, version or
event at that time, 6 a snapshot does not match the events.
"""

CONFIG_HELP = """Show or change the store's settings.

snapshot-every N: every append that crosses a multiple of N versions saves
a snapshot of that stream (off to stop), after the append's result is
printed; one not made within $EVSTORE_SNAPSHOT_TIMEOUT seconds (default 5)
is skipped with a note. reducer R: the reducer used by those snapshots and
the default of replay and snapshot. A file reducer is kept as typed; a
relative path is looked up in the current directory, then in the directory
holding the store. Without KEY, prints the settings as JSON.

Examples:

\b
    evstore config snapshot-every 1000
    evstore config reducer sample_data/reducers.py:balance
    evstore config                      # {"snapshot_every": 1000, "reducer": "sample_data/reducers.py:balance"}
    evstore config snapshot-every off
"""

ReducerOpt = Annotated[Optional[str], typer.Option(
    "--reducer", "-r", metavar="R", help=REDUCER_HELP)]

#: Replays applying at least this many events show a progress bar (on a
#: terminal's stderr only).
PROGRESS_FROM = 20_000
MAX_NOTES = 5


def _reducer_spec(es, reducer: Optional[str]):
    """``--reducer``, or the store's ``reducer`` setting (read from the
    store already open, never by opening it again)."""
    if reducer is not None:
        return reducer
    from ..features.settings import default_reducer

    return default_reducer(es)


def _print_object(obj: dict, fmt: Optional[str] = None) -> None:
    """One JSON object: indented on a terminal, one line off one (and with
    --format ndjson) -- the same rule as 'evstore info' (docs/CLI-JSON.md)."""
    import json

    pretty = fmt != "ndjson" and sys.stdout.isatty()
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2 if pretty else None) + "\n")


class _Progress:
    """A rich progress bar on stderr, started only when a fold is long."""

    def __init__(self, label: str, total: int):
        self.bar = None
        from .common import show_progress

        if total < PROGRESS_FROM or not show_progress():
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        from .render import console

        self.bar = Progress("[progress.description]{task.description}", BarColumn(),
                            MofNCompleteColumn(), TimeRemainingColumn(),
                            console=console(stderr=True), transient=True)
        from rich.markup import escape  # a stream id is not markup

        from .render import safe

        self.task = self.bar.add_task(escape(safe(label)), total=total)
        self.bar.start()

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done)

    def __enter__(self):
        return self if self.bar is not None else None

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


def _notes(notes: list[str]) -> list[str]:
    if len(notes) <= MAX_NOTES:
        return notes
    return notes[: MAX_NOTES - 1] + [f"... and {len(notes) - MAX_NOTES + 1} more like these",
                                     notes[-1]]


def register(app: typer.Typer) -> None:
    @app.command("snapshot", help=SNAPSHOT_HELP, no_args_is_help=True)
    def snapshot(
        ctx: typer.Context,
        stream: Annotated[str, typer.Argument(
            metavar="STREAM", help="The stream, e.g. acct-7.", autocompletion=complete_stream)],
        reducer: ReducerOpt = None,
        version: Annotated[Optional[int], typer.Option(
            "--version", metavar="V", min=1,
            help="The version (default: the current one; with --show, the latest at or below).")] = None,
        show: Annotated[bool, typer.Option(
            "--show", help="Print the latest snapshot at or below --version; save nothing.")] = False,
        state: Annotated[Optional[str], typer.Option(
            "--state", metavar="JSON|-",
            help="Save this state (- reads it from stdin) as the state at --version.")] = None,
        store: StoreOpt = None,
    ) -> None:
        from ..errors import NotFound
        from .common import fail

        if show and state is not None:
            raise fail("--show and --state do not go together", 2)
        if state is not None and version is None:
            raise fail("--state needs --version: the version the state stands for", 2)
        with open_store(ctx, store) as es:
            if show:
                if not es.exists(stream):  # deleted: its old snapshots are not shown
                    from ..errors import StreamNotFound
                    raise StreamNotFound(stream)
                snap = es.snapshots.latest(stream, max_version=version, reducer=reducer)
                if snap is None:
                    if not es.exists(stream):
                        from ..errors import StreamNotFound
                        raise StreamNotFound(stream)
                    below = f" at or below version {version}" if version is not None else ""
                    made = f" made by {reducer}" if reducer is not None else ""
                    raise NotFound(f"no snapshot of {stream!r}{below}{made}")
                _print_object(snap.to_dict())
                return
            spec = _reducer_spec(es, reducer)
            if state is not None:
                from ..features.jsonio import loads
                from ..features.reducers import load_reducer

                with to_stderr():  # loading runs the reducer's module
                    r = load_reducer(spec, base=es.directory)
                text = sys.stdin.read() if state == "-" else state
                value = loads(text, "--state")
                snap = es.snapshots.save(stream, value, version, r)
                _print_object(snap.to_dict())
                return
            from ..features.replay import plan, run

            with to_stderr():  # the reducer's own output never reaches stdout
                p = plan(es, stream, spec, to_version=version)
                with _Progress(f"snapshot {stream}", p.to_apply) as bar:
                    value = run(es, p, bar)
                snap = es.snapshots.save(stream, value, p.version, p.reducer)
            _print_object(snap.to_dict())

    @app.command("replay", help=REPLAY_HELP, no_args_is_help=True)
    def replay(
        ctx: typer.Context,
        stream: Annotated[str, typer.Argument(
            metavar="STREAM", help="The stream to replay, e.g. acct-7.",
            autocompletion=complete_stream)],
        reducer: ReducerOpt = None,
        to_version: Annotated[Optional[int], typer.Option(
            "--to-version", metavar="V", min=0,
            help="Replay up to this version (default: the current one).")] = None,
        at: Annotated[Optional[str], typer.Option(
            "--at", metavar="TIME",
            help="Replay up to the last event recorded at or before TIME "
                 "(RFC 3339, e.g. 2026-11-28T12:00:00Z).")] = None,
        no_snapshot: Annotated[bool, typer.Option(
            "--no-snapshot", help="Fold from the first event; use no snapshot.")] = False,
        steps: Annotated[bool, typer.Option(
            "--steps", help="Show every event applied and what it changed.")] = False,
        types: TypeOpt = None,
        from_version: Annotated[Optional[int], typer.Option(
            "--from-version", metavar="V", min=1,
            help="With --steps: show steps from this version on (the state still "
                 "folds from the start or a snapshot).")] = None,
        verify_snapshots: Annotated[bool, typer.Option(
            "--verify-snapshots",
            help="Rebuild from the first event and compare every stored snapshot "
                 "(exit 6 on any mismatch).")] = False,
        fmt: FormatOpt = None,
        store: StoreOpt = None,
    ) -> None:
        from .common import fail

        if to_version is not None and at is not None:
            raise fail("give --to-version or --at, not both", 2)
        if not steps and (types or from_version is not None):
            raise fail("--type and --from-version go with --steps", 2)
        if verify_snapshots and (steps or to_version is not None or at is not None or no_snapshot):
            raise fail("--verify-snapshots checks every snapshot: it takes no --steps, "
                       "--to-version, --at or --no-snapshot", 2)
        out = pick_format(fmt) if fmt is not None else None
        with open_store(ctx, store) as es:
            spec = _reducer_spec(es, reducer)
            if verify_snapshots:
                _verify(es, stream, spec, out)
                return
            from ..features.replay import plan, run

            with to_stderr():  # loading runs the reducer's module
                p = plan(es, stream, spec, to_version=to_version, at=at,
                         use_snapshots=not no_snapshot,
                         show_from=from_version if steps else None)
            if steps:
                _steps(es, p, types, from_version, out)
                return
            with to_stderr(), _Progress(f"replay {stream}", p.to_apply) as bar:
                value = run(es, p, bar)
            result = {"stream": stream, "version": p.version, "state": value}
            if out == "table":
                _state_view(result)
                return
            _print_object(result, out)

    @app.command("config", help=CONFIG_HELP)
    def config(
        ctx: typer.Context,
        key: Annotated[Optional[str], typer.Argument(
            metavar="KEY", help="snapshot-every or reducer.", show_default=False)] = None,
        value: Annotated[Optional[str], typer.Argument(
            metavar="VALUE", help="The new value.", show_default=False)] = None,
        unset: Annotated[bool, typer.Option("--unset", help="Remove the setting KEY.")] = False,
        store: StoreOpt = None,
        lock_timeout: LockTimeoutOpt = 30.0,
    ) -> None:
        from ..features import settings
        from .common import fail

        if key is None:
            if value is not None or unset:
                raise fail("name the setting to change: snapshot-every or reducer", 2)
            with open_store(ctx, store) as es:
                current = settings.load(es)
            _print_object({k: current.get(k) for k in settings.KEYS})
            return
        name = key.replace("-", "_")
        if name not in settings.KEYS:
            raise fail(f"unknown setting {key!r}: use snapshot-every or reducer", 2)
        if unset == (value is not None):
            if value is None:
                with open_store(ctx, store) as es:
                    current = settings.load(es)
                _print_object({name: current.get(name)})
                return
            raise fail("give a VALUE or --unset, not both", 2)
        with to_stderr():  # checking a reducer runs its module
            settings.check(name, value)  # refuse a bad value before creating a store
        with open_store(ctx, store, create=True, lock_timeout=lock_timeout) as es, to_stderr():
            new = settings.update(es, **{name: value})
        _print_object({k: new.get(k) for k in settings.KEYS})


def _on_terminal(out) -> bool:
    return out == "table" or (out is None and sys.stdout.isatty())


def _steps(es, p, types, from_version, out) -> None:
    from ..features.replay import steps

    if _on_terminal(out):
        _steps_view(p, guarded(steps(es, p, types, from_version)), _notes(p.notes),
                    from_version, types)
        return
    for line in _notes(p.notes):
        note(f"replay {p.stream}: {line}")
    from ..features.jsonio import Writer

    w = Writer(sys.stdout.buffer, out or "ndjson")
    try:
        with _Progress(f"replay {p.stream}", p.to_apply) as bar:
            for step in guarded(steps(es, p, types, from_version, bar)):
                w.write(step.to_dict())
    finally:
        w.close()


def _verify(es, stream, spec, out) -> None:
    from ..features.snapcheck import verify_snapshots

    total = es.version(stream)
    with to_stderr(), _Progress(f"verify {stream}", total) as bar:
        rep = verify_snapshots(es, stream, spec, bar)
    rows = [m.to_dict() for m in rep.mismatches]
    if _on_terminal(out):
        if rows:
            from .render import dict_table

            dict_table(({"version": r["version"], "reason": r["reason"],
                         "path": _path(r.get("path")), "snapshot": r.get("snapshot"),
                         "rebuilt": r.get("rebuilt")} for r in rows), title="mismatches")
    else:
        from ..features.jsonio import Writer

        w = Writer(sys.stdout.buffer, out or "ndjson")
        for row in rows:
            w.write(row)
        w.close()
    for line in _notes(rep.skipped):
        note(f"not checked (another reducer's snapshot): {line}")
    note(f"{stream}: compared {count(rep.checked, 'snapshot')} made by {rep.reducer} with a replay "
         f"from the first event; {count(len(rep.mismatches), 'mismatch', 'mismatches')}")
    if rep.mismatches:
        sys.stderr.write(f"evstore: error: {count(len(rep.mismatches), 'snapshot')} of {stream!r} "
                         f"{'does' if len(rep.mismatches) == 1 else 'do'} not match its events\n")
        raise typer.Exit(code=6)


# --- terminal views (rich is imported only here, only on a terminal) -------------------------

def _path(path) -> str:
    from ..features.replay import path_text

    return "" if path is None else path_text(path)


def _state_view(result: dict) -> None:
    from rich.text import Text

    from .render import console, info_table, safe

    con = console()
    con.print(Text(f"{safe(result['stream'])} at version {result['version']}", style="bold"))
    state = result["state"]
    if isinstance(state, dict) and state:
        info_table(state)
    else:
        import json

        con.print_json(json.dumps(state, ensure_ascii=False))


def _step_head(st, ev, total):
    """The line that starts a step (version, type, time, data) and, when it
    does not fit beside the data, the metadata on a line of its own,
    indented like the changes: never wrapped back to column 0.  ``total``:
    the terminal's width (None: a file, nothing cut)."""
    from rich.text import Text

    from .render import compact, cut, fmt_time, safe, time_form

    data = safe(compact(ev.data, None))
    meta = safe(compact(ev.metadata, None)) if ev.metadata else ""
    stamp = ev.to_dict()["recorded_at"]
    head = Text()
    head.append(f"v{st.version:<6}", style="bold")
    head.append(safe(st.type), style="bold cyan")
    head.append(f"  {fmt_time(stamp, time_form(total))}  ", style="dim")  # gives way before the data
    if total is None or len(head) + len(data) + (len(meta) + 2 if meta else 0) <= total:
        head.append(data)
        if meta:
            head.append(f"  {meta}", style="dim")
        return [head]
    head.append(cut(data, max(total - len(head), 1)))
    lines = [head]
    if meta:
        lines.append(Text(cut(f"         {meta}", total), style="dim"))
    return lines


def _steps_view(p, step_iter, notes: list[str], from_version=None, types=None) -> None:
    """Each event (version, type, time, data), then the paths it changed:
    added in green, removed in red, changed as old (red) -> new (green)."""
    from rich.text import Text

    from .render import compact, console, safe, width

    con = console()
    tty = width() is not None
    shown_from = f", showing from version {from_version}" if from_version else ""
    only = f", only {safe(', '.join(types))}" if types else ""
    con.print(Text(f"replay {safe(p.stream)} with {safe(p.reducer.name)}: folding versions "
                   f"{p.start + 1}..{p.version}{shown_from}{only}", style="bold"))
    for n in notes:
        con.print(Text(f"  {safe(n)}", style="dim"))
    shown = 0
    for st in step_iter:
        ev = st.event
        for line in _step_head(st, ev, con.width if tty else None):
            con.print(line, no_wrap=True, crop=True, overflow="ellipsis")
        if not st.changes:
            con.print(Text("         (no change)", style="dim"))
        for c in st.changes:
            t = Text("         ")
            where = safe(_path(c["path"]))
            if c["op"] == "add":
                t.append("+ ", style="green")
                t.append(where, style="bold yellow")
                t.append(" = ")
                t.append(safe(compact(c["new"], 100)), style="green")
            elif c["op"] == "remove":
                t.append("- ", style="red")
                t.append(where, style="bold yellow")
                t.append(" (was ")
                t.append(safe(compact(c["old"], 100)), style="red")
                t.append(")")
            else:
                t.append("~ ", style="yellow")
                t.append(where, style="bold yellow")
                t.append(": ")
                t.append(safe(compact(c["old"], 60)), style="red")
                t.append(" -> ")
                t.append(safe(compact(c["new"], 60)), style="green")
            con.print(t, no_wrap=True, crop=True, overflow="ellipsis")
        shown += 1
    if shown == 0:
        con.print(Text("(no events to show)", style="dim"))
    import json

    con.print(Text(f"state at version {p.version}:", style="bold"))
    con.print_json(json.dumps(p.result, ensure_ascii=False))
