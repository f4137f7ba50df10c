"""What every command shares on typer's side: the option types, shell
completion, and the entry point that runs typer inside the one error
mapping (:func:`evstore.cli.base.guarded`).  What the command bodies need
without typer lives in ``base.py``; its names are re-exported here."""
from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from .base import (  # noqa: F401 - re-exported for the cmd_* modules
    DEFAULT_STORE, OPTIONS, Exit, Format, Root, _quiet_broken_pipe, _report, _usage, _with_hint,
    count, fail, guarded, json_option, location, no_color, note, open_store,
    pick_format, quiet, show_progress, stdout_bytes, stdout_pipe, store_path)


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


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point of the ``evstore`` script, through typer."""
    from .app import build_app
    from .warn import install

    install()  # the library's warnings as one line on stderr
    app = build_app(sys.argv[1:] if argv is None else argv)

    def call():
        # typer.main.get_command + call is what app(...) does; in between,
        # plain coercion of option values spares every call importing pydantic
        # (fastparams.py).
        from .fastparams import install

        command = typer.main.get_command(app)
        install(command)
        return command(args=argv, prog_name="evstore", standalone_mode=False)

    guarded(call)
