"""Store settings kept beside the data: ``STORE/settings.json``.

Library callers pass ``snapshot_every``/``reducer`` to ``EventStore``; shell
users cannot, so the command line reads them from here (``evstore config``
sets them).  The file is small JSON, replaced atomically::

    {"snapshot_every": 1000, "reducer": "sample_data/reducers.py:balance"}

The last line is a check line (:mod:`evstore.features.checkline`): a changed
byte is damage (exit 6 naming the file, found by ``verify``; ``repair`` moves
the file to quarantine, which leaves the defaults), never a silently
different setting.  A file without a check line (written before settings
carried one, or by hand) is used as it is, and the next ``evstore config``
change rewrites it with one.

A file reducer is kept as typed; a relative path is resolved when used, in
the current directory and then beside the store (``load_reducer``'s
``base``), so a store moved with its workspace keeps working.  ``reducer`` is
also the default reducer of ``evstore replay`` and
``snapshot``: set it once, and every replay, snapshot and automatic snapshot
agrees on it (and so can share snapshots).
"""
from __future__ import annotations

import json
import os

from ..errors import CorruptStore, UsageError
from ..disk.recovery import write_atomic
from ..disk.segment import nofollow
from .checkline import seal, unseal

from ..backends.files.names import SETTINGS_FILE as FILE  # noqa: E402  (M2 removes this)
KEYS = ("snapshot_every", "reducer")


def path(store_dir) -> str:
    return os.path.join(str(store_dir), FILE)


def _kept_by_backend(where) -> dict | None:
    """The settings when a backend keeps them itself (PostgreSQL, memory);
    None when they are this module's file in a directory.  ``where``: an
    EventStore, a directory or a location (opened for reading only)."""
    from ..backends import is_memory, is_url

    backend = getattr(where, "backend", None)
    if backend is not None:
        return backend.settings() if where.directory is None else None
    if not (is_url(where) or is_memory(where)):
        return None
    from ..backends import open_backend
    from ..errors import StoreNotFound
    try:
        backend = open_backend(where, create=False)
    except StoreNotFound:
        return {}
    try:
        return backend.settings()
    finally:
        backend.close()


def load(where) -> dict:
    """The settings, ``{}`` when none were ever set (or there is no store).
    ``where``: an EventStore, a directory or a location."""
    kept = _kept_by_backend(where)
    if kept is not None:
        return {k: v for k, v in kept.items() if k in KEYS and v is not None}
    if getattr(where, "backend", None) is not None:
        where = where.directory
    p = path(where)
    try:
        with open(p, "rb", opener=nofollow) as f:  # never a link's target
            raw = f.read()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise CorruptStore(f"{p}: cannot read the store's settings: {e.strerror or e}") from None
    return {k: v for k, v in decode(raw, p).items() if k in KEYS and v is not None}


def decode(raw: bytes, where: str) -> dict:
    """The settings object in a file's bytes; CorruptStore (exit 6) naming
    ``where`` when they are damaged."""
    try:
        body, _sealed = unseal(raw)
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptStore(f"{where}: the store's settings are damaged ({e}); delete the file "
                           "(or run 'evstore repair') and set them again with "
                           "'evstore config'") from None
    return data


def verify_file(store_dir):
    """Problems with the settings file, for ``evstore verify`` (dicts as
    :func:`evstore.features.checkpoints.verify_files` yields them)."""
    p = path(store_dir)
    rel = os.path.relpath(p, str(store_dir))
    try:
        with open(p, "rb", opener=nofollow) as f:
            raw = f.read()
    except FileNotFoundError:
        return
    except (OSError, CorruptStore) as e:
        yield {"severity": "error", "kind": "settings", "file": rel,
               "message": f"cannot read the store's settings: {getattr(e, 'strerror', None) or e}"}
        return
    try:
        decode(raw, rel)
    except CorruptStore as e:
        yield {"severity": "error", "kind": "settings", "file": rel, "message": str(e)}
        return
    if not unseal(raw)[1]:
        yield {"severity": "warning", "kind": "settings", "file": rel,
               "message": "the settings have no checksum (written by an older evstore or by "
                          "hand); the next 'evstore config' change adds one"}


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
    """Change settings (None unsets) under the writer lock, so two changes
    at once cannot lose one another; returns the new settings."""
    checked = {k: check(k, v) for k, v in values.items()}
    if store.directory is None:  # a backend that keeps settings itself
        new = store.backend.update_settings(checked)
        return {k: new[k] for k in KEYS if new.get(k) is not None}
    with store.writer_lock():
        current = load(store.directory)
        current.update(checked)
        current = {k: current[k] for k in KEYS if current.get(k) is not None}
        write_atomic(path(store.directory),
                     seal((json.dumps(current, ensure_ascii=False, indent=1) + "\n").encode("utf-8")),
                     sync=store.sync)
    return current


def append_options(store_dir) -> dict:
    """``EventStore`` keyword arguments for a writer: automatic snapshots
    when ``snapshot_every`` is set (with ``merge`` when no reducer is)."""
    s = load(store_dir)
    if not s.get("snapshot_every"):
        return {}
    return {"snapshot_every": s["snapshot_every"], "reducer": s.get("reducer") or "merge"}


def default_reducer(store_dir) -> str | None:
    return load(store_dir).get("reducer")
