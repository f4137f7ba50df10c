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
StoreOpt = Annotated[Optional[Path], typer.Option(
    "--store", metavar="DIR",
    help="The store directory (default: $EVSTORE_DIR, else ./.evstore).")]
FormatOpt = Annotated[Optional[Format], typer.Option(
    "--format", case_sensitive=False,
    help="Output: ndjson (one JSON object a line; the default off a terminal), "
         "json (one array) or table (the default on a terminal).")]
LockTimeoutOpt = Annotated[float, typer.Option(
    "--lock-timeout", metavar="SECONDS", min=0,
    help="How long to wait for another writer to finish before giving up (exit 1).")]
TypeOpt = Annotated[Optional[list[str]], typer.Option(
    "--type", metavar="TYPE", help="Only events of this type (repeat for several).")]


def store_path(ctx: typer.Context, store: Optional[Path]) -> Path:
    if store is not None:
        return store
    obj = ctx.find_root().obj or {}
    return obj.get("store") or Path(os.environ.get("EVSTORE_DIR") or DEFAULT_STORE)


def open_store(ctx: typer.Context, store: Optional[Path], *, create: bool = False, **kw):
    """Open the store; reading never creates one (a missing store is exit 4)."""
    from ..store import EventStore

    return EventStore(store_path(ctx, store), create=create, **kw)


def pick_format(fmt: Optional[Format]) -> str:
    if fmt is not None:
        return fmt.value
    return "table" if sys.stdout.isatty() else "ndjson"


def stdout_bytes():
    return sys.stdout.buffer


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
        raise SystemExit(_report(str(e), e.exit_code)) from None
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
