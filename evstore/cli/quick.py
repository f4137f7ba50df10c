"""The short commands without typer: a command line this module fully
understands runs the command's body directly.

Why: importing typer (and building its command) is about half of a short
command's process, ~45 of ~95 ms of an ``evstore append S --type T --data J``
(bench/README.md, "CLI start-up"); a shell loop of appends, or a script
reading one short stream at a time, pays it on every call.

What it takes: ``[--store DIR] [-q] [--no-color] append|read ...`` with the
command's own options spelled out in full (``--opt VALUE``, ``--opt=VALUE``,
``-e VALUE``, ``-n VALUE``, ``-q``), in any order, repeated (the last value
wins, as in click), and values whose meaning is plain: any string for a
string option, a plain decimal within the bounds for a number, an exact
``--format`` name.  It then produces the parameters typer would have passed
(``tests/test_cli_quick.py`` checks this against typer's own parsing) and
calls the same body (``cmd_write.append_body``, ``cmd_read.read_body``)
under the same error mapping (:func:`base.guarded`).

Everything else goes to typer unchanged, so that help, errors and
completion stay typer's: ``-h``/``--help`` anywhere, ``--version``, any
option or spelling not listed here (``-e5``, ``-qn 3``, a case-folded
``--format JSON``, ``1e3`` for a number), a missing value or argument, an
extra argument, ``--``, an argument starting with ``-``, shell completion
(``_EVSTORE_COMPLETE``), and every other command.  ``EVSTORE_NO_QUICK=1``
sends every command line to typer (to compare the two, or to rule this
out).

Imports only the standard library and the typer-free ``base.py`` until it
runs a body.
"""
from __future__ import annotations

import os

# Option kinds.
STR, FLAG, INT, FLOAT, LIST, FORMAT = "str", "flag", "int", "float", "list", "format"

#: The root's options this module takes (before the command's name).
ROOT = {"--store": ("store", STR, None), "--quiet": ("quiet", FLAG, None), "-q": ("quiet", FLAG, None),
        "--no-color": ("no_color", FLAG, None)}

#: -q and --no-color after the command's name (app.AFTER_NAME).
AFTER_NAME = {"--quiet": ("quiet", FLAG, None), "-q": ("quiet", FLAG, None),
              "--no-color": ("no_color", FLAG, None)}


class Command:
    """One command this module runs: its options (name -> (parameter, kind,
    lower bound)), its one positional argument, its defaults, and where its
    body is."""

    def __init__(self, options: dict, argument: str, required: bool, defaults: dict, body: tuple):
        self.options = {**options, **AFTER_NAME}
        self.argument = argument
        self.required = required
        self.defaults = defaults
        self.body = body


COMMANDS = {
    "append": Command(
        {"--expected-version": ("expected_version", STR, None), "-e": ("expected_version", STR, None),
         "--type": ("type_", STR, None), "--data": ("data", STR, None),
         "--metadata": ("metadata", STR, None), "--id": ("event_id", STR, None),
         "--batch-size": ("batch_size", INT, 1), "--dry-run": ("dry_run", FLAG, None),
         "--no-sync": ("no_sync", FLAG, None), "--lock-timeout": ("lock_timeout", FLOAT, 0),
         "--store": ("store", STR, None)},
        "stream", True,
        {"expected_version": "any", "type_": None, "data": None, "metadata": None, "event_id": None,
         "batch_size": None, "dry_run": False, "no_sync": False, "lock_timeout": 30.0, "store": None},
        ("cmd_write", "append_body")),
    "read": Command(
        {"--all": ("all_", FLAG, None), "--from": ("from_", INT, 0), "--to": ("to", INT, 0),
         "--limit": ("limit", INT, 0), "-n": ("limit", INT, 0), "--backwards": ("backwards", FLAG, None),
         "--type": ("types", LIST, None), "--stream-prefix": ("stream_prefix", STR, None),
         "--prefix": ("stream_prefix", STR, None), "--since": ("since", STR, None),
         "--until": ("until", STR, None), "--id": ("event_id", STR, None),
         "--format": ("fmt", FORMAT, None), "--wide": ("wide", FLAG, None), "--store": ("store", STR, None)},
        "stream", False,
        {"stream": None, "all_": False, "from_": None, "to": None, "limit": None, "backwards": False,
         "types": None, "stream_prefix": None, "since": None, "until": None, "event_id": None,
         "fmt": None, "wide": False, "store": None},
        ("cmd_read", "read_body")),
}


class Plan:
    """A command line understood: what typer would have produced from it."""

    __slots__ = ("command", "root_store", "options", "params")

    def __init__(self, command: str, root_store, options: dict, params: dict):
        self.command = command
        self.root_store = root_store    # ctx.find_root().obj["store"]
        self.options = options          # base.OPTIONS: quiet, no_color
        self.params = params            # the body's keyword arguments

    def __repr__(self) -> str:
        return f"Plan({self.command!r}, {self.root_store!r}, {self.options!r}, {self.params!r})"


class _Decline(Exception):
    """Not a command line this module is sure of: typer parses it."""


def parse(argv: list[str], environ=os.environ) -> Plan | None:
    """The plan for ``argv``, or None: typer's to parse."""
    if environ.get("EVSTORE_NO_QUICK") == "1" or _completing(environ):
        return None
    if any(arg in ("-h", "--help") for arg in argv):
        return None
    try:
        return _parse(argv, environ)
    except _Decline:
        return None


def _completing(environ) -> bool:
    return any(key.startswith("_") and (key.endswith("_COMPLETE") or key.startswith("_TYPER"))
               for key in environ)


def _parse(argv: list[str], environ) -> Plan:
    options = {"quiet": False, "no_color": False}
    root_store = None
    i = 0
    while i < len(argv) and argv[i][:1] == "-" and len(argv[i]) > 1:
        dest, kind, value, i = _option(argv, i, ROOT)
        if dest == "store":
            root_store = value
        else:
            options[dest] = True
    if i >= len(argv) or argv[i] not in COMMANDS:
        raise _Decline
    name = argv[i]
    command = COMMANDS[name]
    params = dict(command.defaults)
    lists: dict = {}
    positional = []
    i += 1
    while i < len(argv):
        arg = argv[i]
        if arg[:1] == "-":  # an option, "--", or "-" alone (click's argument; not ours)
            dest, kind, value, i = _option(argv, i, command.options)
            if dest in options:
                options[dest] = True
            elif kind == LIST:
                lists.setdefault(dest, []).append(value)
            else:
                params[dest] = value
        else:
            positional.append(arg)
            i += 1
    if len(positional) > 1 or (command.required and not positional):
        raise _Decline
    if positional:
        params[command.argument] = positional[0]
    params.update(lists)
    if root_store is None:  # the root's --store reads $EVSTORE_DIR (empty: unset), as click does
        root_store = environ.get("EVSTORE_DIR") or None
    return Plan(name, root_store, options, params)


def _option(argv: list[str], i: int, table: dict):
    """The option at ``argv[i]``: (parameter, kind, value, next index)."""
    arg = argv[i]
    name, eq, attached = arg.partition("=")
    if eq and not name.startswith("--"):
        raise _Decline  # "-e=5" is "-e" "=5" to click: typer's to say
    spec = table.get(name)
    if spec is None:
        raise _Decline
    dest, kind, low = spec
    if kind == FLAG:
        if eq:
            raise _Decline  # click: "does not take a value"
        return dest, kind, True, i + 1
    if eq:
        raw, i = attached, i + 1
    elif i + 1 < len(argv):
        raw, i = argv[i + 1], i + 2  # click takes the next argument, even one starting with "-"
    else:
        raise _Decline  # a missing value: typer words the error
    return dest, kind, _value(kind, raw, low), i


def _value(kind: str, raw: str, low):
    if kind in (STR, LIST):
        return raw
    if kind == FORMAT:
        from .base import Format

        for member in Format:
            if member.value == raw:
                return member
        raise _Decline  # other spellings (JSON) and wrong names: typer's
    from .fastparams import _SLOW, plain_number

    number = plain_number(raw, int if kind == INT else float, low)
    if number is _SLOW:
        raise _Decline
    return number


def run(plan: Plan) -> None:
    """Run the planned command as typer would have: never returns."""
    from .base import OPTIONS, Root, guarded
    from .warn import install

    install()  # the library's warnings as one line on stderr
    OPTIONS.update(plan.options)
    body = body_of(plan.command)
    guarded(lambda: body(Root(plan.root_store), **plan.params))


def body_of(command: str):
    """The body function of ``command`` (looked up on each call: tests replace it)."""
    from importlib import import_module

    module, name = COMMANDS[command].body
    return getattr(import_module(f".{module}", __package__), name)
