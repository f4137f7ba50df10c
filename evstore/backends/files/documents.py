"""Snapshots as files: the file backend's part of :class:`~evstore.core.backend.Backend`.

Why here: the snapshot feature (:mod:`evstore.features.snapshots`) owns the
document -- its header, state and check line -- and stores bytes; where those
bytes live is the backend's business.  In a directory::

    STORE/snapshots/<kk>/<KEY>/<version:016d>.snap

``KEY`` is :func:`evstore.disk.streamdir.stream_key` of the stream id (never the
id itself) and ``kk`` its first two characters.  Zero-padded names sort as
their versions, so the versions of a stream are one directory listing (names
only).  Files are written with :func:`evstore.disk.recovery.write_atomic`:
readers see a whole file or none, and two processes saving the same snapshot
at once just replace one whole file with another.  No directory on the way is
followed when it is a symbolic link (a save would land outside the store).
"""
from __future__ import annotations

import os
import re

from ...disk.recovery import write_atomic
from ...disk.segment import check_not_link, fsync_dir, nofollow, walk
from ...disk.streamdir import stream_key
from ...errors import CorruptStore, StoreIOError
from .docfile import read_document
from .names import SNAPSHOT_SUFFIX, SNAPSHOTS_DIR

_NAME = re.compile(r"^(\d{16})" + re.escape(SNAPSHOT_SUFFIX) + "$")


class FileSnapshots:
    """Mixed into FileBackend: ``self.directory`` and ``self.sync`` come from it."""

    # -- where (also what messages name) ---------------------------------------------
    def snapshot_root(self) -> str:
        return os.path.join(self.directory, SNAPSHOTS_DIR)

    def snapshot_dir(self, stream: str) -> str:
        key = stream_key(stream)
        return os.path.join(self.snapshot_root(), key[:2], key)

    def snapshot_path(self, stream: str, version: int) -> str:
        return os.path.join(self.snapshot_dir(stream), f"{version:016d}{SNAPSHOT_SUFFIX}")

    def describe_snapshot(self, stream: str, version: int) -> str:
        return self.snapshot_path(stream, version)

    def _check_dirs(self, d: str) -> None:
        for p in (self.snapshot_root(), os.path.dirname(d), d):
            if not check_not_link(p):
                return

    # -- the Backend methods -----------------------------------------------------------
    def snapshot_versions(self, stream: str) -> list[int]:
        d = self.snapshot_dir(stream)
        self._check_dirs(d)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StoreIOError(f"cannot list snapshots of {stream!r}: {e.strerror or e}") from e
        return sorted(int(m.group(1)) for m in map(_NAME.match, names) if m)

    def put_snapshot(self, stream: str, version: int, body: bytes) -> None:
        path = self.snapshot_path(stream, version)
        self._check_dirs(os.path.dirname(path))
        try:
            self._make_dirs(os.path.dirname(path))
            write_atomic(path, body, sync=self.sync)
        except OSError as e:
            raise StoreIOError(f"cannot save snapshot {path}: {e.strerror or e}") from e

    def _make_dirs(self, d: str) -> None:
        """Create the stream's snapshot directory, making each new directory
        entry durable so a saved snapshot cannot vanish with its directory."""
        missing = []
        p = d
        while not os.path.isdir(p):
            missing.append(p)
            p = os.path.dirname(p)
        if not missing:
            return
        os.makedirs(d, exist_ok=True)  # another process may be making it too
        if self.sync:
            for p in reversed(missing):
                fsync_dir(os.path.dirname(p))

    def get_snapshot(self, stream: str, version: int) -> bytes | None:
        path = self.snapshot_path(stream, version)
        self._check_dirs(os.path.dirname(path))
        return read_document(path, lambda reason: StoreIOError(
            f"cannot read snapshot {path}: {reason}"))

    def get_snapshot_head(self, stream: str, version: int, limit: int) -> bytes | None:
        """The first line of the snapshot (at most ``limit`` bytes): a
        reducer's fingerprint is checked without reading a large state.
        CorruptStore when the file is a symbolic link; OSError as it is."""
        path = self.snapshot_path(stream, version)
        self._check_dirs(os.path.dirname(path))
        try:
            with open(path, "rb", opener=nofollow) as f:
                return f.readline(limit)
        except FileNotFoundError:
            return None

    def delete_snapshot(self, stream: str, version: int) -> bool:
        self._check_dirs(self.snapshot_dir(stream))
        try:
            os.unlink(self.snapshot_path(stream, version))
        except FileNotFoundError:
            return False
        return True

    def snapshot_count(self) -> int:
        n = 0
        for _root, _dirs, files in walk(self.snapshot_root()):  # never through a link
            n += sum(1 for name in files if _NAME.match(name))
        return n


__all__ = ["FileSnapshots", "CorruptStore"]
