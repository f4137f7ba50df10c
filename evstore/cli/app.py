"""The typer application: global options and the list of commands.

Each group of commands lives in its own module with a ``register(app)``
function; this file only wires them together.  Modules import the library
(and rich) inside their command functions, so that ``evstore`` starts fast.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import __version__

#: The order commands appear in ``--help``; each ``cmd_*.py`` module in this
#: package registers its own commands.
COMMAND_ORDER = ("cmd_write", "cmd_read", "cmd_tail", "cmd_state", "cmd_ops")

HELP = """An event store on local files.

Every stream is an append-only, segmented log; every event also has a dense
global position, so you can follow the whole store in commit order.

Examples:

\b
    evstore append acct-1 --type Deposited --data '{"amount": 10}'
    jq -c '.[]' events.json | evstore append acct-1 --expected-version 0
    evstore read acct-1 | jq .data
    evstore tail -f --all --checkpoint projector
"""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"evstore {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer.Typer(
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        store: Annotated[Optional[Path], typer.Option(
            "--store", envvar="EVSTORE_DIR", show_envvar=True, metavar="DIR",
            help="The store directory (default: $EVSTORE_DIR, else ./.evstore).")] = None,
        version: Annotated[bool, typer.Option(
            "--version", callback=_version, is_eager=True,
            help="Print the version and exit.")] = False,
    ) -> None:
        ctx.obj = {"store": store}

    import importlib
    import pkgutil

    found = [m.name for m in pkgutil.iter_modules(_package_path())
             if m.name.startswith("cmd_")]
    found.sort(key=lambda n: (COMMAND_ORDER.index(n) if n in COMMAND_ORDER else 99, n))
    for name in found:
        importlib.import_module(f".{name}", __package__).register(app)
    return app


def _package_path() -> list[str]:
    import os

    return [os.path.dirname(__file__)]
