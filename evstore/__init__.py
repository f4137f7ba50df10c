"""evstore: an event store on local files.

Every stream is a segmented, append-only msgpack log with an offset index;
one commit log gives every event a dense global position.  See README.md and
docs/ for the guarantees; SPEC §4 for this API.
"""
from .errors import (  # noqa: F401
    CorruptStore,
    EvstoreError,
    InvalidEvent,
    StreamNotFound,
    WrongExpectedVersion,
)
from .records import AppendResult, NewEvent, RecordedEvent
from .store import ANY, NO_STREAM, STREAM_EXISTS, EventStore

__version__ = "0.1.0"

__all__ = [
    "EventStore", "NewEvent", "RecordedEvent", "AppendResult",
    "ANY", "NO_STREAM", "STREAM_EXISTS", "__version__",
]
