"""evstore: an event store on local files.

Every stream is a segmented, append-only msgpack log with an offset index;
one commit log gives every event a dense global position.  See README.md and
docs/ for the guarantees; docs/GUIDE.md describes this API.
"""
# Not `from typing import TYPE_CHECKING`: importing typing costs a few
# milliseconds before the CLI can install its signal handlers (cli/__init__.py).
TYPE_CHECKING = False

from .errors import (  # noqa: F401
    CorruptStore,
    EventNotFound,
    EvstoreError,
    InvalidEvent,
    StreamNotFound,
    WrongExpectedVersion,
)

if TYPE_CHECKING:
    from .model import AppendResult, NewEvent, RecordedEvent
    from .core.rules import ANY, NO_STREAM, STREAM_EXISTS
    from .core.store import EventStore

# The store and records modules load on first use (PEP 562), so that
# `evstore --help` and the CLI's argument parsing do not pay for them
# (bench/README.md, workload (h)).
_LAZY = {"AppendResult": "model", "NewEvent": "model", "RecordedEvent": "model",
         "ANY": "core.rules", "NO_STREAM": "core.rules", "STREAM_EXISTS": "core.rules",
         "EventStore": "core.store"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

__version__ = "0.1.0"

__all__ = [
    "EventStore", "NewEvent", "RecordedEvent", "AppendResult",
    "ANY", "NO_STREAM", "STREAM_EXISTS", "__version__",
]
