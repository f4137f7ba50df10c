"""Store settings: ``snapshot_every`` and ``reducer``, kept with the store.

Library callers pass ``snapshot_every``/``reducer`` to ``EventStore``; shell
users cannot, so the command line reads them from here (``evstore config``
sets them)::

    {"snapshot_every": 1000, "reducer": "sample_data/reducers.py:balance"}

Where they live is the backend's business (:meth:`Backend.settings
<evstore.core.backend.Backend.settings>`): a directory keeps them in a small
checked JSON file (:mod:`evstore.backends.files.settings`; a changed byte is
damage, exit 6 naming the file, never a silently different setting),
PostgreSQL in a row.  This module validates them and says what they mean,
once for every backend.

A file reducer is kept as typed; a relative path is resolved when used, in
the current directory and then beside the store (``load_reducer``'s
``base``), so a store moved with its workspace keeps working.  ``reducer`` is
also the default reducer of ``evstore replay`` and
``snapshot``: set it once, and every replay, snapshot and automatic snapshot
agrees on it (and so can share snapshots).
"""
from __future__ import annotations

from contextlib import contextmanager

from ..core.documents import decode_settings
from ..errors import StoreNotFound, UsageError

KEYS = ("snapshot_every", "reducer")


@contextmanager
def _backend(where):
    """The backend of ``where``: an EventStore's own, or a location's opened
    for reading (never creating it; StoreNotFound when there is none)."""
    backend = getattr(where, "backend", None)
    if backend is not None:
        yield backend
        return
    from ..core.store import EventStore
    es = EventStore(where, create=False)
    try:
        yield es.backend
    finally:
        es.close()


def load(where) -> dict:
    """The settings, ``{}`` when none were ever set (or there is no store).
    ``where``: an EventStore, a directory or a location."""
    try:
        with _backend(where) as backend:
            kept = backend.settings()
    except StoreNotFound:
        return {}
    return {k: v for k, v in kept.items() if k in KEYS and v is not None}


def path(where) -> str:
    """Where the settings are, as messages name them (a directory store:
    its settings file).  ``where``: an EventStore or a location."""
    with _backend(where) as backend:
        return backend.describe_settings()


def decode(raw: bytes, where: str) -> dict:
    """The settings object in a settings file's bytes; CorruptStore (exit 6)
    naming ``where`` when they are damaged."""
    return decode_settings(raw, where)[0]


def check(key: str, value):
    """Validate one setting; returns the value to keep (None = unset)."""
    if key not in KEYS:
        raise UsageError(f"unknown setting {key!r}: the settings are {', '.join(KEYS)}")
    if value is None:
        return None
    if key == "snapshot_every":
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("off", "0", "none"):
                return None
            if not text.isdigit():
                raise UsageError(f"snapshot_every: {value!r} is not a number (or off)")
            value = int(text)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"snapshot_every: {value!r} must be a whole number >= 1 (or off)")
        return value or None
    from .reducers import settings_spec
    return settings_spec(value)


def update(store, **values) -> dict:
    """Change settings (None unsets) atomically -- two changes at once
    cannot lose one another -- and drop any key this evstore does not know
    (a hand-edited file's); returns the new settings."""
    checked = {k: check(k, v) for k, v in values.items()}
    unknown = {k: None for k in store.backend.settings() if k not in KEYS}
    new = store.backend.update_settings({**unknown, **checked})
    return {k: new[k] for k in KEYS if new.get(k) is not None}


def append_options(store_dir) -> dict:
    """``EventStore`` keyword arguments for a writer: automatic snapshots
    when ``snapshot_every`` is set (with ``merge`` when no reducer is)."""
    s = load(store_dir)
    if not s.get("snapshot_every"):
        return {}
    return {"snapshot_every": s["snapshot_every"], "reducer": s.get("reducer") or "merge"}


def default_reducer(store_dir) -> str | None:
    return load(store_dir).get("reducer")
