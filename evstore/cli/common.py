"""What every command shares: the store option, output formats, and the one
place where library errors become exit codes and one-line messages."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import EvstoreError

DEFAULT_STORE = ".evstore"


class Format(str, Enum):
    ndjson = "ndjson"
    json = "json"
    table = "table"


# No envvar here: $EVSTORE_DIR is read by the global --store (app.py), so that
# `evstore --store DIR cmd` is not overridden by the environment.
StoreOpt = Annotated[Optional[str], typer.Option(
    "--store", metavar="DIR|URL",
    help="The store: a directory, or a postgresql:// URL (default: $EVSTORE_DIR, "
         "else ./.evstore).")]
FormatOpt = Annotated[Optional[Format], typer.Option(
    "--format", case_sensitive=False,
    help="Output: ndjson (one JSON object a line; the default off a terminal), "
         "json (one array) or table (the default on a terminal).")]
LockTimeoutOpt = Annotated[float, typer.Option(
    "--lock-timeout", metavar="SECONDS", min=0,
    help="How long to wait for another writer to finish before giving up (exit 1).")]
WideOpt = Annotated[bool, typer.Option(
    "--wide", help="Tables: show every cell whole, wrapped over several lines "
                   "(default: cut to the terminal's width with an ellipsis).")]
SinceOpt = Annotated[Optional[str], typer.Option(
    "--since", metavar="TIME",
    help="Only events recorded at or after TIME: RFC 3339 (2026-11-28T12:00:00Z), a date "
         "(2026-11-28, midnight UTC), or back from now: 45s, 30m, 2h, 7d, 2w.")]
UntilOpt = Annotated[Optional[str], typer.Option(
    "--until", metavar="TIME", help="Only events recorded at or before TIME (forms as --since).")]
TypeOpt = Annotated[Optional[list[str]], typer.Option(
    "--type", metavar="TYPE", help="Only events of this type (repeat for several).")]


def _completion_store(ctx: typer.Context):
    """The store a command being completed names, opened for reading; None
    when there is none there (completion never creates a store)."""
    from ..backends import store_exists
    from ..core.store import EventStore

    path = None
    c = ctx
    while c is not None and path is None:
        path = c.params.get("store")
        c = c.parent
    path = location(path or os.environ.get("EVSTORE_DIR") or DEFAULT_STORE)
    if not store_exists(path):
        return None
    # lock_timeout=0: a store whose opening would wait for the writer lock
    # (a reboot to reconcile) completes nothing rather than hang the shell
    return EventStore(path, create=False, lock_timeout=0)


def complete_stream(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of a STREAM argument: the store's stream ids that
    start with what was typed.  Never raises and never creates a store: any
    trouble (no store, damage, a lock) just completes nothing."""
    try:
        from itertools import islice

        es = _completion_store(ctx)
        if es is None:
            return []
        with es:
            return [s.stream for s in islice(es.streams(prefix=incomplete or None), 500)]
    except Exception:  # noqa: BLE001 - completion must never break the shell
        return []


def complete_checkpoint(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of a checkpoint's NAME; like :func:`complete_stream`."""
    try:
        from ..features.checkpoints import CheckpointStore

        es = _completion_store(ctx)
        if es is None:
            return []
        with es:
            return [c.name for c in CheckpointStore(es).list() if c.name.startswith(incomplete)]
    except Exception:  # noqa: BLE001 - completion must never break the shell
        return []


def location(store):
    """A store's location as the library takes it: a PostgreSQL URL stays
    the string it is (a Path would fold its ``//``), anything else is a
    directory."""
    from ..backends import is_url

    return store if is_url(store) else Path(store)


def store_path(ctx: typer.Context, store) -> "Path | str":
    """The store: --store, else $EVSTORE_DIR, else ./.evstore; a directory
    (a Path) or a PostgreSQL URL (a str).  For a directory, a file there is a
    usage mistake (exit 2), not a damaged store (6)."""
    from ..backends import is_url

    if store is None:
        obj = ctx.find_root().obj or {}
        store = obj.get("store") or os.environ.get("EVSTORE_DIR") or DEFAULT_STORE
    store = location(store)
    if is_url(store):
        return store
    if os.path.exists(store) and not os.path.isdir(store):
        raise fail(f"{store} is not a directory, so not a store; pass --store DIR "
                   "(a store is a directory)", 2)
    return store


def open_store(ctx: typer.Context, store, *, create: bool = False, **kw):
    """Open the store; reading never creates one (a missing store is exit 4)."""
    from ..core.store import EventStore

    return EventStore(store_path(ctx, store), create=create, **kw)


def pick_format(fmt: Optional[Format]) -> str:
    if fmt is not None:
        return fmt.value
    return "table" if sys.stdout.isatty() else "ndjson"


def stdout_bytes():
    return sys.stdout.buffer


#: Set once by the global options (app.py): --quiet and --no-color.
OPTIONS = {"quiet": False, "no_color": False}


def quiet() -> bool:
    """--quiet: no informational messages on stderr (errors are always shown)."""
    return OPTIONS["quiet"]


def no_color() -> bool:
    """--no-color, $NO_COLOR (any non-empty value) or EVSTORE_NO_COLOR=1."""
    return (OPTIONS["no_color"] or bool(os.environ.get("NO_COLOR"))
            or os.environ.get("EVSTORE_NO_COLOR") == "1")


def note(message: str) -> None:
    """An informational line on stderr (``evstore: MESSAGE``), unless --quiet.
    Every note, hint and summary goes through here; errors go through
    :func:`fail` and are never silenced."""
    if OPTIONS["quiet"]:
        return
    sys.stderr.write(f"evstore: {message}\n")
    sys.stderr.flush()


def show_progress() -> bool:
    """Progress bars: only on a terminal's stderr, and not with --quiet."""
    if OPTIONS["quiet"]:
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def json_option(value: str, name: str):
    """The JSON value of an option like --data: given inline, as ``@FILE``
    (a file holding it) or as ``-`` (stdin).  JSON never starts with ``@`` or
    is ``-`` alone, so the three cannot be mixed up.  A file that cannot be
    read is a usage error (exit 2); bad JSON is invalid input (exit 5)."""
    from ..features.jsonio import loads

    where = name
    if value == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise fail(f"{name} -: reads stdin, but stdin is a terminal; pipe the JSON in", 2)
        text = sys.stdin.buffer.read()
        where = f"{name} (stdin)"
    elif value.startswith("@"):
        try:
            with open(value[1:], "rb") as f:
                text = f.read()
        except OSError as e:
            raise fail(f"{name} {value}: cannot read {value[1:]!r}: {e.strerror or e}", 2) from None
        where = f"{name} {value}"
    else:
        return loads(value, name)
    try:
        text = text.decode("utf-8-sig")  # (a byte order mark, as some editors write, is fine)
    except UnicodeDecodeError as e:
        from ..errors import InvalidEvent

        raise InvalidEvent(f"{where}: not UTF-8 (byte {e.start})") from None
    return loads(text, where)


def count(n: int, word: str, plural: str | None = None) -> str:
    """``count(1, "event")`` -> "1 event", ``count(2, "event")`` -> "2 events"
    (thousands separated): every count in a message goes through here."""
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def fail(message: str, code: int) -> "typer.Exit":
    """Print one line on stderr and return the Exit to raise."""
    sys.stderr.write(f"evstore: error: {message}\n")
    sys.stderr.flush()
    return typer.Exit(code=code)


@contextmanager
def stdout_pipe():
    """The reader of stdout went away (``| head``): end quietly with exit 0.
    Needed inside commands: typer turns an escaping EPIPE into exit 1."""
    try:
        yield
    except BrokenPipeError:
        _quiet_broken_pipe()
        raise typer.Exit(0) from None


def _quiet_broken_pipe() -> None:
    """stdout's reader went away (``| head``): stop quietly, exit 0."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point of the ``evstore`` script."""
    from .app import build_app
    from .warn import install

    install()  # the library's warnings as one line on stderr
    app = build_app(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("EVSTORE_DEBUG") == "1"
    try:
        # typer.main.get_command + call is what app(...) does; in between,
        # plain coercion of option values spares every call importing pydantic
        # (fastparams.py).
        from .fastparams import install

        command = typer.main.get_command(app)
        install(command)
        rc = command(args=argv, prog_name="evstore", standalone_mode=False)
        if isinstance(rc, int) and rc:
            raise SystemExit(rc)
    except SystemExit as e:
        # typer answers EPIPE with sys.exit(1) after wrapping sys.stdout in a
        # PacifyFlushWrapper: that is a closed pipe, exit 0 for evstore.
        if e.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            _quiet_broken_pipe()
            raise SystemExit(0) from None
        raise
    except EvstoreError as e:
        if debug:
            raise
        raise SystemExit(_report(_with_hint(e), e.exit_code)) from None
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except BrokenPipeError:
        _quiet_broken_pipe()
        raise SystemExit(0) from None
    except KeyboardInterrupt:
        sys.stderr.write("evstore: interrupted\n")
        raise SystemExit(130) from None
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, exit 1
        name = type(e).__name__
        if name == "NoArgsIsHelpError":  # bare `evstore` or `evstore append`: teach
            sys.stderr.write(e.format_message().rstrip() + "\n")
            raise SystemExit(2) from None
        if name in ("NoSuchOption", "BadParameter", "UsageError", "MissingParameter",
                    "BadOptionUsage", "BadArgumentUsage"):
            raise SystemExit(_usage(e)) from None
        if name == "Abort":
            raise SystemExit(_report("aborted", 1)) from None
        if debug:
            raise
        if isinstance(e, OSError):
            raise SystemExit(_report(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""), 1)) from None
        raise SystemExit(_report(f"unexpected {name}: {e} (set EVSTORE_DEBUG=1 for a traceback)", 1)) from None
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
    raise SystemExit(0)


def _with_hint(e: EvstoreError) -> str:
    """The library's message, and for a version conflict what to do next --
    on the same line, after the SPEC's prefix, which scripts match on."""
    from ..errors import WrongExpectedVersion

    message = str(e)
    if isinstance(e, WrongExpectedVersion):
        if e.expected == "exists" and e.current == 0:
            message += "; the stream has no events yet (--expected-version no-stream starts it)"
        else:
            message += f"; re-read the stream, then retry with --expected-version {e.current}"
    return message


def _report(message: str, code: int) -> int:
    sys.stderr.write(f"evstore: error: {message}\n")
    return code


def _usage(e) -> int:
    ctx = getattr(e, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    msg = e.format_message() if hasattr(e, "format_message") else str(e)
    msg = " ".join(msg.split())
    sys.stderr.write(f"evstore: error: {msg}{hint}\n")
    return getattr(e, "exit_code", 2) or 2
