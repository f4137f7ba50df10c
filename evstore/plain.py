"""Stand-ins for the standard library pieces that cost a short command
most of its start-up, for the modules every command imports.

Why: of an ``evstore append`` whose target is about 60 ms for the whole
process (bench/README.md, "CLI start-up"), ``import dataclasses`` costs
~10 ms (it imports ``inspect``, which imports ``ast``, ``dis`` and
``tokenize``), ``import typing`` ~5, ``import pathlib`` ~4 (``fnmatch``,
``urllib.parse``, ``ipaddress``) and ``import hashlib`` ~3 (it loads
OpenSSL).  Each stand-in gives exactly what the original gives for the use
made of it here; ``tests/test_plain.py`` compares them.

Both decorators take a
class written as for those modules, annotated fields with optional defaults
(``from __future__ import annotations`` keeps the annotations strings, so
nothing is evaluated), and build the same class:

* :func:`dataclass`: the plain form of ``@dataclasses.dataclass`` (no
  arguments, no ``field()``), for the disk layer's mutable state records:
  ``__init__`` (fields in order, positional or keyword, defaults),
  ``__repr__`` (``Name(field=value, ...)``), ``__eq__`` (same class, equal
  fields) and ``__hash__ = None``, as dataclasses makes them.
  ``dataclasses.fields``/``replace``/``asdict`` do not apply to these.
* :func:`named_tuple`: what ``class Name(typing.NamedTuple)`` makes, the
  ``collections.namedtuple`` class with the class body's methods,
  properties and docstring on it.

* :func:`path_str`: ``str(pathlib.Path(p))``, the normalised spelling of a
  store's directory (messages and file names keep it).
* :func:`sha256_hex`: ``hashlib.sha256(data).hexdigest()``; small inputs
  (stream ids, settings, checkpoints) through the interpreter's own module,
  which needs no OpenSSL, large ones (a big snapshot) through hashlib, about
  6x faster on them.

Modules off the start-up path may keep using the originals.
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


def named_tuple(cls):
    """The ``collections.namedtuple`` class of ``cls``'s annotated fields
    (defaults from the class body), carrying the class body's other
    attributes, as ``typing.NamedTuple`` builds it."""
    from collections import namedtuple

    annotations = cls.__dict__.get("__annotations__", {})
    names = list(annotations)
    defaults = [cls.__dict__[n] for n in names if n in cls.__dict__]
    if any(n not in cls.__dict__ for n in names[len(names) - len(defaults):]):
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    nt = namedtuple(cls.__name__, names, defaults=defaults or None, module=cls.__module__)
    nt.__annotations__ = dict(annotations)
    nt.__qualname__ = cls.__qualname__
    for key, value in cls.__dict__.items():
        if key in names or key in ("__dict__", "__weakref__", "__annotations__", "__module__", "__qualname__"):
            continue
        if key == "__doc__" and value is None:
            continue
        setattr(nt, key, value)
    return nt


def path_str(p) -> str:
    """``str(pathlib.Path(p))`` for a single ``p`` (a str or an
    ``os.PathLike``), on POSIX: empty and ``.`` parts dropped, repeated and
    trailing slashes folded, a leading ``//`` kept (POSIX gives it a meaning
    of its own), ``.`` for nothing left."""
    import os

    s = os.fspath(p)
    if not isinstance(s, str):
        raise TypeError("argument should be a str or an os.PathLike object where __fspath__ "
                        f"returns a str, not {type(s).__name__!r}")
    root = ""
    if s.startswith("/"):
        root = "//" if s.startswith("//") and not s.startswith("///") else "/"
    rest = "/".join(part for part in s.split("/") if part and part != ".")
    return (root + rest) or "."


#: Above this many bytes, hashlib's SHA-256 (OpenSSL): its import (~3 ms)
#: is then small next to the hashing it saves.
SMALL_HASH = 64 * 1024

try:  # the interpreter's own SHA-256 (3.12 names it _sha2)
    from _sha2 import sha256 as _small_sha256
except ImportError:
    try:
        from _sha256 import sha256 as _small_sha256
    except ImportError:
        _small_sha256 = None


def sha256_hex(data) -> str:
    """``hashlib.sha256(data).hexdigest()`` of bytes (or a bytes-like)."""
    if _small_sha256 is None or len(data) > SMALL_HASH:
        import hashlib

        return hashlib.sha256(data).hexdigest()
    return _small_sha256(data).hexdigest()
