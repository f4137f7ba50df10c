"""The exception tree of evstore.

Every error a user can meet is one of these, and each maps to exactly one exit
code of the command line (SPEC §3).  The library raises them; only the CLI
turns them into exit codes, in one place (``evstore.cli.errors``).
"""
from __future__ import annotations


class EvstoreError(Exception):
    """Base of every error evstore raises on purpose."""

    exit_code = 1


class StoreIOError(EvstoreError):
    """An operating-system error while reading or writing the store's files."""

    exit_code = 1


class DurabilityError(StoreIOError):
    """An fsync failed: the data may not be on disk, and this handle will
    never again claim that a write is durable (see docs/FORMAT.md)."""


class StoreLocked(EvstoreError):
    """The writer lock could not be taken within the lock timeout."""

    exit_code = 1


class UsageError(EvstoreError):
    """A bad argument: an invalid stream id, an unknown reducer, ..."""

    exit_code = 2


class WrongExpectedVersion(EvstoreError):
    """The stream's current version is not what the caller expected."""

    exit_code = 3

    def __init__(self, stream: str, expected: object, current: int, detail: str = ""):
        self.stream = stream
        self.expected = expected
        self.current = current
        msg = f"wrong expected version: expected {expected}, current is {current}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class NotFound(EvstoreError):
    """Something named does not exist (stream, store, snapshot, checkpoint)."""

    exit_code = 4


class StreamNotFound(NotFound):
    def __init__(self, stream: str):
        self.stream = stream
        super().__init__(f"stream not found: {stream!r}")


class EventNotFound(NotFound):
    def __init__(self, event_id: str):
        self.event_id = event_id
        super().__init__(f"no event with id {event_id!r} in this store")


class StoreNotFound(NotFound):
    def __init__(self, path: object):
        self.path = path
        super().__init__(
            f"no event store at {path} (pass --store DIR or set EVSTORE_DIR)"
        )


class InvalidEvent(EvstoreError):
    """Input data that cannot be stored; nothing was written."""

    exit_code = 5


class CorruptStore(EvstoreError):
    """The store's files are damaged; the message says which file and where."""

    exit_code = 6
