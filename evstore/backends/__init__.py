"""Backends: the places a store's events live (see :mod:`evstore.core.backend`).

Each backend is imported only when a store of its kind is opened, so the
command line never pays for a driver it does not use.
"""


def is_url(location) -> bool:
    """Whether ``--store``/``EVSTORE_DIR``/``EventStore(...)`` names a
    PostgreSQL store rather than a directory (anything else is a directory)."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def is_memory(location) -> bool:
    return isinstance(location, str) and location.startswith("memory:")


def open_backend(location, *, create: bool = True, lock_timeout: float = 30.0,
                 sync: bool = True, segment_bytes: int = 64 * 1024 * 1024):
    """The backend for ``location``: a PostgreSQL URL, ``memory:NAME``, or
    else a directory (``segment_bytes`` only matters there).  ``create=False``
    raises StoreNotFound when the store does not exist."""
    if is_memory(location):
        from .memory import MemoryBackend
        return MemoryBackend.named(location[len("memory:"):], create=create,
                                   lock_timeout=lock_timeout, sync=sync)
    if is_url(location):
        from .postgres import PostgresBackend
        return PostgresBackend(location, create=create, lock_timeout=lock_timeout, sync=sync)
    from .files.engine import FileBackend
    return FileBackend(location, create=create, lock_timeout=lock_timeout, sync=sync,
                       segment_bytes=segment_bytes)


def store_exists(location) -> bool:
    """Whether a store is there, without creating anything (a dry run,
    completion, an import deciding whether it creates the store)."""
    if is_url(location) or is_memory(location):
        from ..errors import StoreNotFound
        try:
            open_backend(location, create=False).close()
        except StoreNotFound:
            return False
        return True
    import os

    from .files.names import MARKER
    return os.path.isfile(os.path.join(location, MARKER))
