"""One whole document file of a store directory, read: a checkpoint, the
settings, a snapshot, the cuts or the retention rules.

Why one function: each of these is read the same way, and the way is a rule
of the file backend, so it lives once.  Never through a symbolic link, nor
from a FIFO or directory at the name (damage: CorruptStore naming the path,
from :func:`evstore.disk.segment.open_file`, so a document can never be read
from outside the store, nor wait for a FIFO's writer); no file is ``None``, not an error (the document has not
been written yet, or was deleted while a directory was listed); any other
failure is the caller's error, because what it means differs: an unreadable
checkpoint or snapshot is an IO error (exit 1), unreadable settings are
damage (exit 6), and each message names its document in its own words.

Not :func:`evstore.disk.segment.read_small`: that returns at most a fixed
number of bytes, which suits a marker or a state line.  A snapshot's state or
a long list of cuts has no such bound, and a document cut at a limit would
read as damage.
"""
from __future__ import annotations

from collections.abc import Callable

from ...disk.segment import nofollow
from ...errors import StoreIOError


def read_document(path: str, error: Callable[[str], Exception] | None = None) -> bytes | None:
    """The bytes of the file at ``path``, or ``None`` when there is none.

    A symbolic link, FIFO or directory raises CorruptStore; any other OSError raises
    ``error(reason)`` (default: StoreIOError ``cannot read PATH: REASON``),
    chained to the OSError."""
    try:
        with open(path, "rb", opener=nofollow) as f:  # never a link's target
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        reason = e.strerror or str(e)
        raise (error(reason) if error else
               StoreIOError(f"cannot read {path}: {reason}")) from e
