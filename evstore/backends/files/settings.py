"""Settings as a file: the file backend's part of :class:`~evstore.core.backend.Backend`.

Why here: the settings feature (:mod:`evstore.features.settings`) validates
settings and decides what they mean for every backend; a directory keeps
them in ``STORE/settings.json``, small JSON replaced atomically
(:func:`evstore.disk.recovery.write_atomic`) and sealed with a check line
(bytes: :mod:`evstore.core.documents`)::

    {
     "snapshot_every": 1000,
     "reducer": "sample_data/reducers.py:balance"
    }
    {"sha256": "<hex>"}

A changed byte is damage (CorruptStore, exit 6, naming the file; ``verify``
finds it; ``repair`` moves the file to quarantine, which leaves the
defaults), never a silently different setting.  A file without a check line
(written before settings carried one, or by hand) is used as it is, and the
next change rewrites it with one.  Changes are made under the writer lock,
so two at once cannot lose one another.
"""
from __future__ import annotations

import os

from ...core.backend import merge_settings
from ...core.documents import decode_settings, encode_settings
from ...disk.recovery import write_atomic
from ...errors import CorruptStore, StoreIOError
from .docfile import read_document
from .names import SETTINGS_FILE


class FileSettings:
    """Mixed into FileBackend: ``self.directory``, ``self.sync`` and
    ``self.writer_lock`` come from it."""

    def settings_path(self) -> str:
        return os.path.join(self.directory, SETTINGS_FILE)

    def describe_settings(self) -> str:
        return self.settings_path()

    def settings(self) -> dict:
        return read_settings(self.directory)

    def update_settings(self, changes: dict) -> dict:
        with self.writer_lock():
            new = merge_settings(self.settings(), changes)
            try:
                write_atomic(self.settings_path(), encode_settings(new), sync=self.sync)
            except OSError as e:
                raise StoreIOError(f"cannot save the store's settings: "
                                   f"{e.strerror or e}") from e
        return new

    def settings_findings(self) -> list[dict]:
        return list(verify_file(self.directory))


def _raw(store_dir) -> bytes | None:
    p = os.path.join(str(store_dir), SETTINGS_FILE)
    return read_document(p, lambda reason: CorruptStore(
        f"{p}: cannot read the store's settings: {reason}"))


def read_settings(store_dir) -> dict:
    """The settings in ``store_dir`` (``{}`` without a file)."""
    raw = _raw(store_dir)
    if raw is None:
        return {}
    return decode_settings(raw, os.path.join(str(store_dir), SETTINGS_FILE))[0]


def verify_file(store_dir):
    """Problems with the settings file, for ``evstore verify`` and
    ``repair`` (dicts as :func:`.checkpoints.verify_files` yields them)."""
    rel = SETTINGS_FILE
    try:
        raw = _raw(store_dir)
    except CorruptStore as e:
        yield {"severity": "error", "kind": "settings", "file": rel,
               "message": f"cannot read the store's settings: {_reason(e)}"}
        return
    if raw is None:
        return
    try:
        _data, sealed = decode_settings(raw, rel)
    except CorruptStore as e:
        yield {"severity": "error", "kind": "settings", "file": rel, "message": str(e)}
        return
    if not sealed:
        yield {"severity": "warning", "kind": "settings", "file": rel,
               "message": "the settings have no checksum (written by an older evstore or by "
                          "hand); the next 'evstore config' change adds one"}


def _reason(e: CorruptStore) -> str:
    return str(e).split(": cannot read the store's settings: ", 1)[-1]
