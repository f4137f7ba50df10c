"""The exception tree of evstore.

Every error a user can meet is one of these, and each maps to exactly one exit
code of the command line (docs/GUIDE.md lists them).  The library raises them; only the CLI
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


class StreamDeleted(EvstoreError):
    """The stream was deleted with ``--hard`` (a tombstone): it takes no
    more events, and cannot be truncated or soft-deleted."""

    exit_code = 3

    def __init__(self, stream: str):
        self.stream = stream
        super().__init__(f"stream {stream!r} was deleted (--hard): it takes no more events")


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


class DamagedCopyWarning(UserWarning):
    """A reader met a damaged copy of an event and served the intact one
    (every event is stored twice: its stream log and the commit log).  The
    data read is right; the store needs ``evstore verify`` and ``repair``.
    Issued with :func:`warnings.warn` (the library never prints); the
    command line shows it once on stderr."""


class ImportConflict(EvstoreError):
    """``import --renumber``: a stream of the input does not continue the
    store's (it starts past the stream's next version, or the store holds
    different events at its versions).  Nothing was written."""

    exit_code = 3


class Interrupted(BaseException):
    """A signal asked the command line to stop (its handlers raise this:
    evstore.cli.interrupts); ``what`` says what was done.

    A BaseException, so that no ``except Exception`` swallows it.  It lives
    here, not with the handlers, so that the code that runs user code
    (reducers) can tell a signal from whatever the user's code raised: a
    reducer never raises this, and a signal is never the reducer's failure."""

    def __init__(self, signum: int, what: str = "", forced: bool = False):
        super().__init__(signum)
        self.signum = signum
        self.what = what
        #: a second signal, while the command was finishing a write
        self.forced = forced

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self) -> str:
        return "evstore: interrupted" + (f": {self.what}" if self.what else "")
