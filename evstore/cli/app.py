"""The typer application: global options and the list of commands.

Each group of commands lives in its own module with a ``register(app)``
function; this file only wires them together.  Modules import the library
(and rich) inside their command functions, so that ``evstore`` starts fast.
"""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from .. import __version__

#: The order commands appear in ``--help``; each ``cmd_*.py`` module in this
#: package registers its own commands.
COMMAND_ORDER = ("cmd_write", "cmd_read", "cmd_tail", "cmd_checkpoints", "cmd_state", "cmd_forget", "cmd_ops")

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


def build_app(argv: Optional[list[str]] = None) -> typer.Typer:
    """The application; given the command line ``argv``, only the command it
    names is turned into a click command (see :func:`_keep_only`)."""
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
        store: Annotated[Optional[str], typer.Option(
            "--store", envvar="EVSTORE_DIR", show_envvar=True, metavar="DIR|URL",
            help="The store: a directory, or a postgresql:// URL (default: $EVSTORE_DIR, "
                 "else ./.evstore).")] = None,
        version: Annotated[bool, typer.Option(
            "--version", callback=_version, is_eager=True,
            help="Print the version and exit.")] = False,
        quiet: Annotated[bool, typer.Option(
            "--quiet", "-q",
            help="No notes, hints or progress bars on stderr (errors are still shown).")] = False,
        no_color: Annotated[bool, typer.Option(
            "--no-color", help="No colour in tables and views on a terminal (also: $NO_COLOR, "
                               "EVSTORE_NO_COLOR=1).")] = False,
    ) -> None:
        from .base import OPTIONS

        OPTIONS["quiet"] = quiet
        OPTIONS["no_color"] = no_color
        ctx.obj = {"store": store}

    import importlib
    import pkgutil

    found = [m.name for m in pkgutil.iter_modules(_package_path())
             if m.name.startswith("cmd_")]
    found.sort(key=lambda n: (COMMAND_ORDER.index(n) if n in COMMAND_ORDER else 99, n))
    for name in found:
        importlib.import_module(f".{name}", __package__).register(app)
    if argv is not None:
        _keep_only(app, argv)
    _flags_after_the_name(app)
    _one_usage_notation()
    return app


def _one_usage_notation() -> None:
    """Usage lines in one notation, the usual one: ``STREAM`` required,
    ``[STREAM]`` optional, ``[STREAM]...`` any number.  Typer (0.2x) wraps a
    required argument in braces and an optional one in brackets around any
    metavar, brackets included (``{STREAM}``, ``[[STREAM]]``).  It relies on
    typer's ``TyperArgument._usage_display_name``; without it, typer's
    own notation stays."""
    from typer.core import TyperArgument

    if not hasattr(TyperArgument, "_usage_display_name") or getattr(
            TyperArgument, "__evstore_usage__", False):
        return

    def usage_name(self) -> str:
        name = (self.metavar or self.name or "").upper() if self.metavar is None else self.metavar
        name = name.removesuffix("...").strip("[]{}")
        many = "..." if self.nargs != 1 else ""
        return f"{name}{many}" if self.required else f"[{name}]{many}"

    TyperArgument._usage_display_name = usage_name
    TyperArgument.__evstore_usage__ = True


def _set_flag(key: str):
    def callback(value: bool) -> None:
        if value:  # never unsets what the root's callback (run first) set
            from .base import OPTIONS

            OPTIONS[key] = True
    return callback


#: -q and --no-color, also accepted after the command's name: every command
#: gets them as keyword parameters that only switch OPTIONS on.
AFTER_NAME = {
    "quiet": Annotated[bool, typer.Option(
        "--quiet", "-q", callback=_set_flag("quiet"),
        help="No notes, hints or progress bars on stderr (errors are still shown).")],
    "no_color": Annotated[bool, typer.Option(
        "--no-color", callback=_set_flag("no_color"),
        help="No colour in tables and views on a terminal.")],
}


def _flags_after_the_name(app: typer.Typer) -> None:
    """``evstore tail -f --all -q`` works as well as ``evstore -q tail ...``:
    each command's function is wrapped in one that takes (and drops) the
    AFTER_NAME parameters.  Only the commands kept by :func:`_keep_only` are
    wrapped, so a plain call pays for one."""
    infos = list(app.registered_commands)
    for group in app.registered_groups:
        sub = group.typer_instance
        infos += sub.registered_commands
        if sub.registered_callback is not None:
            infos.append(sub.registered_callback)
    for info in infos:
        if info.callback is not None and not hasattr(info.callback, "__evstore_flags__"):
            info.callback = _wrap(info.callback)


def _wrap(fn):
    import functools
    import inspect
    from typing import get_type_hints

    sig = inspect.signature(fn, eval_str=True)
    if any(name in sig.parameters for name in AFTER_NAME):
        return fn

    @functools.wraps(fn)
    def command(*args, **kwargs):
        for name in AFTER_NAME:
            kwargs.pop(name, None)
        return fn(*args, **kwargs)

    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False, annotation=ann)
             for name, ann in AFTER_NAME.items()]
    command.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])
    command.__annotations__ = {**get_type_hints(fn, include_extras=True), **AFTER_NAME}
    command.__evstore_flags__ = True
    return command


def _keep_only(app: typer.Typer, argv: list[str]) -> None:
    """Drop the commands that ``argv`` does not call.

    typer builds a click command for every registered command on each call,
    evaluating every parameter's annotations: about 10 ms of an ``evstore
    append`` (bench/README.md, workload (h)).  When ``argv`` is plainly
    ``[--store DIR] [-q] [--no-color] COMMAND ...``, only COMMAND is kept;
    anything else (other root options, --help, an unknown name) keeps them
    all, so help texts and "no such command" errors are unchanged."""
    from .early import command_name

    wanted = command_name(argv)
    if wanted is None:
        return

    def name(info) -> Optional[str]:
        return info.name or (info.typer_instance.info.name if hasattr(info, "typer_instance") else None)

    commands = [c for c in app.registered_commands if c.name == wanted]
    groups = [g for g in app.registered_groups if name(g) == wanted]
    if len(commands) + len(groups) == 1:
        app.registered_commands = commands
        app.registered_groups = groups


def _package_path() -> list[str]:
    import os

    return [os.path.dirname(__file__)]
