"""Plain coercion of command-line values, so that a CLI call does not pay for
pydantic.

Typer (0.2x) coerces every parameter's value, defaults and absent options
included, through a pydantic ``TypeAdapter``: the first value it sees
imports pydantic and typer's adapter module and builds a schema per
parameter, 60-90 ms of an ``evstore append`` that otherwise takes about as
long (measured with ``python -X importtime`` and cProfile; see
bench/README.md, workload (h)).  evstore's options are simple (str, int and
float with a minimum, bool, Path, str enums, lists of str), so
:func:`install` gives each parameter a plain coercion for the values it is
sure of -- a str for a str, a plain decimal for an int, an exact choice for
an enum -- and hands every other value, and every other kind of parameter,
to typer's own coercion, built on first use.  Bad values therefore get
typer's own errors and messages; only values that need no checking skip
pydantic.

It relies on typer's ``_TyperParameter._runtime_param`` slot (the object
whose ``coerce(value, param=, ctx=)`` typer calls); when a typer without it
is installed, :func:`install` does nothing and typer works as it always did.
"""
from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})\Z")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?\Z")
_SLOW = object()  # "not sure: let typer coerce it"


class PlainParam:
    """Coerces the values it is sure of; passes the rest to typer's own."""

    __slots__ = ("descriptor", "annotation", "info", "_typer")

    def __init__(self, descriptor) -> None:
        self.descriptor = descriptor
        self.annotation = descriptor.annotation
        self.info = descriptor.parameter_info
        self._typer = None

    def coerce(self, value, param, ctx):
        if value is None:
            return () if (param.multiple or param.nargs == -1) else None
        if param.multiple or param.nargs == -1:
            if isinstance(value, (list, tuple)) and getattr(self.annotation, "__origin__", None) is list \
                    and self.annotation.__args__ == (str,) and all(type(v) is str for v in value):
                return list(value)
        else:
            out = self._plain(value, param, ctx)
            if out is not _SLOW:
                return out
        return self._typer_param().coerce(value, param=param, ctx=ctx)

    def _plain(self, value, param, ctx):
        ann, info = self.annotation, self.info
        if info.parser is not None or self.descriptor.file_annotation is not None:
            return _SLOW
        if ann is str:
            return value if type(value) is str else _SLOW
        if ann is bool:
            return value if type(value) is bool else _SLOW
        if ann is int or ann is float:
            if info.clamp:
                return _SLOW
            return plain_number(value, ann, info.min, info.max)
        if ann is Path:
            if (info.path_type is not None or info.resolve_path or info.allow_dash or info.exists
                    or not info.file_okay or not info.dir_okay or info.writable):
                return _SLOW
            if type(value) is str and value:
                value = Path(value)
            if not isinstance(value, Path):
                return _SLOW
            try:
                from typer._param_types import coerce_cli_path
            except ImportError:
                return _SLOW
            return coerce_cli_path(value, info, path_type=Path, param=param, ctx=ctx)
        if isinstance(ann, type) and issubclass(ann, Enum):
            if isinstance(value, ann):
                return value
            if type(value) is str:
                for member in ann:
                    if member.value == value:      # exact: other spellings go to typer
                        return member
                if not any(m.value.lower() == value.lower() for m in ann):
                    raise _not_a_choice(value, [m.value for m in ann])
            return _SLOW
        return _SLOW

    def _typer_param(self):
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(self.descriptor)
        return self._typer


def plain_number(value, ann, lo=None, hi=None):
    """``value`` as an int or float (``ann``) when it is plainly one within
    [lo, hi]; else ``_SLOW`` (typer coerces it, and words any error).  Also
    used by ``quick.py``, which declines what this does not take."""
    if type(value) is str:
        if not (_INT if ann is int else _FLOAT).match(value):
            return _SLOW
        number = ann(value)
    elif type(value) is int or (type(value) is float and ann is float):
        number = ann(value)
    else:
        return _SLOW
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        return _SLOW                       # typer words the error
    return number


def _not_a_choice(value: str, choices: list[str]):
    """A value outside an option's choices, in evstore's words (typer's
    would be pydantic's: "Value error, 'yaml' is not one of ...")."""
    from typer import BadParameter

    listed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    return BadParameter(f"{value!r} is not a choice here; choose {listed}")


def install(command) -> None:
    """Give every typer parameter of ``command`` and its subcommands a
    :class:`PlainParam`, unless it already has a coercion.  The --help option
    is made on first use (``get_help_option``), so that is wrapped too."""
    for param in getattr(command, "params", ()):
        _plain(param)
    original = getattr(command, "get_help_option", None)
    if original is not None:
        def get_help_option(ctx):
            option = original(ctx)
            _plain(option)
            return option

        command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        install(sub)


def _plain(param) -> None:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and getattr(param, "_runtime_param", False) is None:
        param._runtime_param = PlainParam(descriptor)
