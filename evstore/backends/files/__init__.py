"""The file backend: a store in a directory (docs/FORMAT.md).

``engine`` (FileBackend: appends, reads, locking, durability), ``bulk`` (the
import's writer), ``locking`` (the writer lock), ``watch`` (waking followers)
and ``names`` (every file name of the store) sit on :mod:`evstore.disk`, the
byte format.  Loaded lazily: :mod:`evstore.disk` imports ``names``, which must
not pull the engine in.
"""


def __getattr__(name: str):
    if name == "FileBackend":
        from .engine import FileBackend
        return FileBackend
    raise AttributeError(name)
