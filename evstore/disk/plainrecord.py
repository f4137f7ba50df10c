"""A small stand-in for ``dataclasses.dataclass``, for the disk layer's
state records (``Tail``, ``StreamTail``, ``ScanResult``).

Why: these modules are imported by every command, the shortest included,
and ``import dataclasses`` costs ~10 ms of an ``evstore append``'s start-up
(it imports ``inspect``, which imports ``ast``, ``dis`` and ``tokenize``:
bench/README.md, "CLI start-up").  These records use only the plain form
(``@dataclass`` without arguments, fields in annotations, optional defaults
that are immutable values), so this builds the same three methods
dataclasses would: ``__init__`` (fields in order, keyword or positional,
defaults), ``__repr__`` (``Name(field=value, ...)``) and ``__eq__`` (same
class, equal fields); like dataclasses, it sets ``__hash__`` to None (the
records are mutable).  Anything else (``field()``, ``frozen``, ``slots``,
``InitVar``, ``dataclasses.fields``/``replace``) is not supported: use
``dataclasses`` where a module is not on the start-up path.
"""
from __future__ import annotations

_MISSING = object()


def dataclass(cls):
    """Add ``__init__``, ``__repr__`` and ``__eq__`` to ``cls`` from its
    annotated fields, as ``@dataclasses.dataclass`` does for plain fields."""
    names = [n for n in cls.__dict__.get("__annotations__", {}) if not n.startswith("__")]
    defaults = {n: cls.__dict__.get(n, _MISSING) for n in names}
    seen_default = False
    params = []
    for n in names:
        if defaults[n] is _MISSING:
            if seen_default:
                raise TypeError(f"non-default argument {n!r} follows default argument")
            params.append(n)
        else:
            seen_default = True
            params.append(f"{n}=__defaults[{n!r}]")
    body = "".join(f"    self.{n} = {n}\n" for n in names) or "    pass\n"
    source = f"def __init__(self, {', '.join(params)}):\n{body}"
    space = {"__defaults": defaults}
    exec(source, space)  # one function with the fields as parameters, as dataclasses builds it
    init = space["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"

    def __repr__(self):
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)

    cls.__init__ = init
    cls.__repr__ = __repr__
    cls.__eq__ = __eq__
    cls.__hash__ = None
    cls.__match_args__ = tuple(names)
    return cls
