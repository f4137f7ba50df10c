"""What the command bodies share that needs no typer: the store a command
names, output formats, messages on stderr, and the one place where library
errors become exit codes and one-line messages (:func:`guarded`).

Kept free of typer, click and rich (and of anything that imports them), so
that the short commands run without loading them (``quick.py``);
``common.py`` adds what only typer's side needs (option types, completion)
and re-exports these names.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from enum import Enum

from ..errors import EvstoreError

TYPE_CHECKING = False  # not typing's: importing typing costs start-up time (evstore/__init__.py)
if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_STORE = ".evstore"


class Format(str, Enum):
    ndjson = "ndjson"
    json = "json"
    table = "table"


class Exit(Exception):
    """End the command with ``exit_code`` (the message, if any, is already
    on stderr: :func:`fail`).  Handled by :func:`guarded`, on both paths."""

    def __init__(self, code: int = 0) -> None:
        super().__init__(code)
        self.exit_code = code


class Root:
    """What a command body needs of click's root context when typer is not
    there (``quick.py``): the root's ``--store`` (or $EVSTORE_DIR), as
    ``ctx.find_root().obj`` holds it."""

    __slots__ = ("obj",)

    def __init__(self, store) -> None:
        self.obj = {"store": store}

    def find_root(self) -> "Root":
        return self


def location(store):
    """A store's location as the library takes it: a PostgreSQL URL stays
    the string it is (a Path would fold its ``//``), anything else is a
    directory (a Path)."""
    from pathlib import Path

    from ..backends import is_url

    return store if is_url(store) else Path(store)


def store_path(ctx, store) -> "Path | str":
    """The store: --store, else $EVSTORE_DIR, else ./.evstore; a directory
    (a Path) or a PostgreSQL URL (a str).  For a directory, a file there is a
    usage mistake (exit 2), not a damaged store (6).  ``ctx`` is click's
    context or a :class:`Root`."""
    return location(_store_location(ctx, store))


def _store_location(ctx, store) -> str:
    """:func:`store_path`'s work, a directory given as its normalised string
    (what ``str(Path(...))`` gives) rather than a Path: the short commands
    open the store without importing pathlib (start-up time)."""
    from ..backends import is_url
    from ..plain import path_str

    if store is None:
        obj = ctx.find_root().obj or {}
        store = obj.get("store") or os.environ.get("EVSTORE_DIR") or DEFAULT_STORE
    if is_url(store):
        return store
    store = path_str(store)
    if os.path.exists(store) and not os.path.isdir(store):
        raise fail(f"{store} is not a directory, so not a store; pass --store DIR "
                   "(a store is a directory)", 2)
    return store


def open_store(ctx, store, *, create: bool = False, **kw):
    """Open the store; reading never creates one (a missing store is exit 4)."""
    from ..core.store import EventStore

    return EventStore(_store_location(ctx, store), create=create, **kw)


def pick_format(fmt: "Format | None") -> str:
    if fmt is not None:
        return fmt.value
    return "table" if sys.stdout.isatty() else "ndjson"


def stdout_bytes():
    return sys.stdout.buffer


#: Set once by the global options (app.py, quick.py): --quiet and --no-color.
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


def fail(message: str, code: int) -> Exit:
    """Print one line on stderr and return the Exit to raise."""
    sys.stderr.write(f"evstore: error: {message}\n")
    sys.stderr.flush()
    return Exit(code)


@contextmanager
def stdout_pipe():
    """The reader of stdout went away (``| head``): end quietly with exit 0.
    Needed inside commands: typer turns an escaping EPIPE into exit 1."""
    try:
        yield
    except BrokenPipeError:
        _quiet_broken_pipe()
        raise Exit(0) from None


def _quiet_broken_pipe() -> None:
    """stdout's reader went away (``| head``): stop quietly, exit 0."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def guarded(call) -> None:
    """Run ``call()`` (a whole command: typer's parsing and the body, or the
    body alone) and end the process: every outcome becomes an exit code, and
    every error one line on stderr, never a traceback.  click's exceptions
    are known by name, so that this module needs no typer."""
    debug = os.environ.get("EVSTORE_DEBUG") == "1"
    try:
        rc = call()
        if isinstance(rc, int) and rc:
            raise SystemExit(rc)
    except SystemExit as e:
        # typer answers EPIPE with sys.exit(1) after wrapping sys.stdout in a
        # PacifyFlushWrapper: that is a closed pipe, exit 0 for evstore.
        if e.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            _quiet_broken_pipe()
            raise SystemExit(0) from None
        raise
    except Exit as e:
        raise SystemExit(e.exit_code) from None
    except EvstoreError as e:
        if debug:
            raise
        raise SystemExit(_report(_with_hint(e), e.exit_code)) from None
    except BrokenPipeError:
        _quiet_broken_pipe()
        raise SystemExit(0) from None
    except KeyboardInterrupt:
        sys.stderr.write("evstore: interrupted\n")
        raise SystemExit(130) from None
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, exit 1
        name = type(e).__name__
        if name == "Exit" and hasattr(e, "exit_code"):  # typer.Exit (click's)
            raise SystemExit(e.exit_code) from None
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
    on the same line, after the documented prefix, which scripts match on."""
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
