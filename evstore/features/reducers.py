"""Reducers: the built-ins, loading user reducers, and fingerprints.

A reducer is a function ``(state, event) -> state``; ``event`` is the recorded
event as a dict (a recorded event's JSON object) and the first call gets ``state=None``.  It is named
by a *spec*: a built-in name (``merge``, ``count``, ``last``, ``list``),
``path/to/file.py:function`` or ``package.module:function``.

Every loaded reducer carries a *fingerprint*, ``NAME@sha256:HEX``: its name
plus a hash of its source.  Snapshots record it, and a snapshot is only used
by a replay whose reducer has the same fingerprint, so editing a reducer can
never silently mix states computed by its old and new code.  The hash covers
the whole source *file* of a user reducer, not just the function: a reducer
often calls helpers beside it, and a change to one of those changes the
states it builds.  The price is that editing a comment in that file retires
its snapshots (the next replay is longer, never wrong).  Built-ins hash only
their own function's source, so that work elsewhere in this module does not
retire every built-in snapshot.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import marshal
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import EvstoreError, Interrupted, UsageError

DEFAULT = "merge"


def signal_passes(e: BaseException) -> None:
    """Raise ``e`` again when it is a signal, not the user code's failure.

    Whatever a reducer raises -- SystemExit and KeyboardInterrupt included
    -- is its failure, reported with the event it failed on.  But the
    command line's signal handlers raise Interrupted (evstore.errors), which
    no reducer raises: a Ctrl-C or SIGTERM while a reducer runs must end
    the command as any signal does (exit 128+N, "interrupted"), not blame
    the reducer.  (Called inside the ``except`` block that caught ``e``.)"""
    if isinstance(e, Interrupted):
        raise e


class ReducerError(EvstoreError):
    """A reducer failed (raised, or returned a state that is not JSON).

    Exit code 1: the events are fine, the code folding them is not."""

    exit_code = 1


# --- the built-ins -------------------------------------------------------------------
# Each is written twice on purpose: a pure function, which is what users see
# and what ``replay --steps`` calls (it needs the state before each event
# intact), and an in-place twin for plain folds, where copying the state per
# event would make ``list`` quadratic.  Tests check that the twins agree.

def merge(state, event):
    """The state is an object; each event's ``data`` object is merged into it
    key by key (top level only).  Events whose data is not an object change
    nothing."""
    base = state if type(state) is dict else {}
    data = event["data"]
    if type(data) is dict and data:
        return {**base, **data}
    return base


def count(state, event):
    """Events counted by type: ``{"Deposited": 12, "Withdrawn": 3}``."""
    new = dict(state) if state else {}
    t = event["type"]
    new[t] = new.get(t, 0) + 1
    return new


def last(state, event):
    """The ``data`` of the last event."""
    return event["data"]


def list_(state, event):
    """The ``data`` of every event, oldest first."""
    return (list(state) if state else []) + [event["data"]]


def _merge_inplace(state, event):
    data = event["data"]
    if type(state) is not dict:
        state = {}
    if type(data) is dict:
        state.update(data)
    return state


def _count_inplace(state, event):
    if state is None:
        state = {}
    t = event["type"]
    state[t] = state.get(t, 0) + 1
    return state


def _list_inplace(state, event):
    if state is None:
        state = []
    state.append(event["data"])
    return state


BUILTINS: dict[str, tuple[Callable, Callable]] = {
    "merge": (merge, _merge_inplace),
    "count": (count, _count_inplace),
    "last": (last, last),
    "list": (list_, _list_inplace),
}


# --- the loaded reducer ------------------------------------------------------------------

@dataclass(frozen=True)
class Reducer:
    """A reducer ready to fold: its name (for messages), the fingerprint that
    snapshots record, the pure function, and ``fast``: a function that may
    change the state it is given (the same as ``fn`` for user reducers)."""

    name: str
    fingerprint: str
    fn: Callable[[Any, dict], Any]
    fast: Callable[[Any, dict], Any]
    builtin: bool = False

    def __call__(self, state, event):
        return self.fn(state, event)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:32]


def _function_source(fn) -> bytes:
    try:
        return inspect.getsource(fn).encode("utf-8")
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is not None:
            return marshal.dumps(code)
        return repr(fn).encode("utf-8")


def _module_source(fn) -> bytes:
    """The bytes of the file that defines ``fn`` (see the module docstring)."""
    mod = sys.modules.get(getattr(fn, "__module__", None) or "")
    path = getattr(mod, "__file__", None)
    if path and path.endswith(".py"):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            pass
    return _function_source(fn)


@functools.lru_cache(maxsize=None)
def _builtin(name: str) -> Reducer:
    """Built-in reducers change only with evstore itself: fingerprint each
    once per process (inspect.getsource was a third of a replay's cost)."""
    fn, fast = BUILTINS[name]
    return Reducer(name, f"{name}@{_digest(_function_source(fn))}", fn, fast, builtin=True)


def _check_callable(fn, spec: str) -> None:
    if not callable(fn):
        raise UsageError(f"reducer {spec!r}: {type(fn).__name__} object is not callable")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(None, {})
    except TypeError:
        raise UsageError(
            f"reducer {spec!r}: must take two arguments (state, event), its signature "
            f"is {sig}") from None


def _load_file(path: str, func: str, spec: str) -> Reducer:
    if not os.path.exists(path):
        raise UsageError(f"reducer {spec!r}: no such file: {path}")
    if not os.path.isfile(path):
        raise UsageError(f"reducer {spec!r}: {path} is not a file")
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as e:
        raise UsageError(f"reducer {spec!r}: cannot read {path}: {e.strerror or e}") from None
    absolute = os.path.abspath(path)
    # A private module name per file, so that two reducers.py files never
    # share a sys.modules entry and a user's own `reducers` module is untouched.
    modname = "_evstore_reducer_" + hashlib.sha256(absolute.encode()).hexdigest()[:16]
    mod_spec = importlib.util.spec_from_file_location(modname, absolute)
    if mod_spec is None or mod_spec.loader is None:
        raise UsageError(f"reducer {spec!r}: cannot load {path} as Python")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[modname] = module
    try:
        # The bytes read above are the ones run (and fingerprinted), and no
        # __pycache__ is written beside the user's file (an import would).
        exec(compile(source, absolute, "exec", dont_inherit=True), module.__dict__)
    except SyntaxError as e:
        sys.modules.pop(modname, None)
        raise UsageError(f"reducer {spec!r}: syntax error in {path}, line {e.lineno}: {e.msg}") from None
    except BaseException as e:  # noqa: BLE001 - user code (even sys.exit): a bad reducer
        sys.modules.pop(modname, None)
        signal_passes(e)
        raise UsageError(f"reducer {spec!r}: importing {path} failed: "
                         f"{type(e).__name__}: {e}") from None
    fn = _attribute(module, func, spec, path)
    name = f"{os.path.basename(path)}:{func}"
    return Reducer(name, f"{name}@{_digest(source)}", fn, fn)


def _load_module(modname: str, func: str, spec: str) -> Reducer:
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        raise UsageError(f"reducer {spec!r}: no module named {e.name!r} "
                         "(is it on PYTHONPATH? a file needs a path ending in .py)") from None
    except SyntaxError as e:
        raise UsageError(f"reducer {spec!r}: syntax error in {e.filename}, line {e.lineno}: {e.msg}") from None
    except BaseException as e:  # noqa: BLE001 - user code (even sys.exit): a bad reducer
        signal_passes(e)
        raise UsageError(f"reducer {spec!r}: importing {modname} failed: "
                         f"{type(e).__name__}: {e}") from None
    fn = _attribute(module, func, spec, modname)
    name = f"{modname}:{func}"
    return Reducer(name, f"{name}@{_digest(_module_source(fn))}", fn, fn)


def _attribute(module, func: str, spec: str, where: str):
    obj = module
    for part in func.split("."):
        if not part.isidentifier():
            raise UsageError(f"reducer {spec!r}: {func!r} is not a Python name")
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"reducer {spec!r}: {where} has no function {func!r}") from None
    _check_callable(obj, spec)
    return obj


def load_reducer(spec=None, base=None) -> Reducer:
    """Turn a spec (None = ``merge``), a callable or a Reducer into a Reducer.

    ``base``: the store's directory, when there is one.  A relative
    ``path/to/file.py`` is looked up in the current directory first, then
    relative to the directory that holds the store, so that a store kept in a
    workspace beside its reducers (and moved or copied with it) finds them
    from anywhere.  Raises UsageError (exit 2), naming what is wrong (and
    where it looked), when it cannot be loaded.
    """
    if spec is None:
        return _builtin(DEFAULT)
    if isinstance(spec, Reducer):
        return spec
    if callable(spec) and not isinstance(spec, str):
        for name, (fn, _fast) in BUILTINS.items():
            if spec is fn:
                return _builtin(name)
        _check_callable(spec, getattr(spec, "__qualname__", repr(spec)))
        name = f"{getattr(spec, '__module__', None) or '?'}:" \
               f"{getattr(spec, '__qualname__', None) or type(spec).__name__}"
        return Reducer(name, f"{name}@{_digest(_module_source(spec))}", spec, spec)
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("reducer: expected a built-in name, FILE.py:FUNCTION or "
                         "MODULE:FUNCTION")
    spec = spec.strip()
    if spec in BUILTINS:
        return _builtin(spec)
    where, sep, func = spec.rpartition(":")
    if not sep or not where or not func:
        if spec.endswith(".py"):
            raise UsageError(f"reducer {spec!r}: name the function too, e.g. {spec}:apply")
        raise UsageError(
            f"unknown reducer {spec!r}: use a built-in ({', '.join(BUILTINS)}), "
            "path/to/file.py:function or package.module:function")
    if where.endswith(".py") or os.sep in where or "/" in where:
        return _load_file(_find_file(where, spec, base), func, spec)
    if not all(p.isidentifier() for p in where.split(".")):
        raise UsageError(f"reducer {spec!r}: {where!r} is neither a .py file nor a module name")
    return _load_module(where, func, spec)


def _find_file(where: str, spec: str, base) -> str:
    """The file a reducer spec names (see :func:`load_reducer`)."""
    if os.path.isabs(where) or os.path.exists(where) or base is None:
        return where
    parent = os.path.dirname(os.path.abspath(str(base)))
    beside = os.path.join(parent, where)
    if os.path.exists(beside):
        return beside
    raise UsageError(
        f"reducer {spec!r}: no such file: {where} (looked for it in the current directory, "
        f"{os.getcwd()}, and in the store's parent directory, {parent})")


def settings_spec(spec: str) -> str:
    """The form of ``spec`` to keep in the store's settings: what the user
    typed (a relative path stays relative, so a store moved or copied with
    its workspace keeps working; it is resolved when used, see
    :func:`load_reducer`).  Loads it first, so a bad spec is refused when it
    is set, not at the next append."""
    load_reducer(spec)
    return spec.strip()
