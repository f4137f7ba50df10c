"""Checkpoints as files: the file backend's part of :class:`~evstore.core.backend.Backend`.

Why here: the checkpoint feature (:mod:`evstore.features.checkpoints`) keeps
its rules -- names, when a checkpoint may move, one consumer per name -- for
every backend; where a checkpoint lives is the backend's business.  In a
directory (docs/TAIL.md has the reasoning)::

    STORE/checkpoints/<KEY>.json   {"evstore_checkpoint": 1, "name", "position",
                                    "stream", "updated_at"}
                                   {"sha256": hex SHA-256 of the line above}
    STORE/checkpoints/<KEY>.lock   flock'ed by the consumer running under NAME

``KEY`` is :func:`evstore.disk.streamdir.stream_key` of the name: a name never
becomes a path, and the real name is kept inside the file (a file whose name
does not hash to its KEY is reported, never used).  Files are replaced with
:func:`evstore.disk.recovery.write_atomic`, so a reader sees the old
checkpoint or the new one, never a torn one; the bytes are
:mod:`evstore.core.documents`' (a file without a check line, from before
checksums, is used and rewritten with one on its next save).

The ``.lock`` file makes a name single-consumer: two processes delivering
under the same name would each advance it past events only the other saw.
Lock files are never deleted (unlinking a lock file others may hold open is
a classic race); they are empty and cheap.  No directory or file on the way
is followed when it is a symbolic link (a save would land outside the store).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from collections.abc import Iterator

from ...core.backend import CheckpointRow, ConsumerBusy, checkpoint_problems
from ...core.documents import decode_checkpoint, encode_checkpoint
from ...disk.recovery import write_atomic
from ...disk.segment import check_not_link, fsync_dir, listdir, open_file
from ...disk.streamdir import stream_key
from ...errors import CorruptStore, StoreIOError
from .docfile import read_document
from .names import CHECKPOINT_LOCK_SUFFIX, CHECKPOINT_SUFFIX, CHECKPOINTS_DIR

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no single-consumer guard
    fcntl = None


class FileCheckpoints:
    """Mixed into FileBackend: ``self.directory`` and ``self.sync`` come from it."""

    # -- where (also what messages name) ---------------------------------------------
    def checkpoint_root(self) -> str:
        return os.path.join(self.directory, CHECKPOINTS_DIR)

    def checkpoint_path(self, name: str, lock: bool = False) -> str:
        suffix = CHECKPOINT_LOCK_SUFFIX if lock else CHECKPOINT_SUFFIX
        return os.path.join(self.checkpoint_root(), stream_key(name) + suffix)

    def describe_checkpoint(self, name: str, lock: bool = False) -> str:
        return self.checkpoint_path(name, lock)

    # -- the Backend methods -----------------------------------------------------------
    def get_checkpoint(self, name: str) -> CheckpointRow | None:
        path = self.checkpoint_path(name)
        data = read_document(path)
        if data is None:
            return None
        cp = decode_checkpoint(data, path)
        if cp.name != name:
            raise CorruptStore(f"{path}: holds checkpoint {cp.name!r}, not {name!r}")
        return cp

    def checkpoints(self) -> list[CheckpointRow]:
        return _scan(self.directory, strict=True)[0]

    def checkpoint_findings(self) -> tuple[list[CheckpointRow], list[dict]]:
        return _scan(self.directory)

    def put_checkpoint(self, row: CheckpointRow) -> None:
        try:
            self._checkpoint_dir()
            write_atomic(self.checkpoint_path(row.name), encode_checkpoint(row), sync=self.sync)
        except OSError as e:
            raise StoreIOError(f"cannot save checkpoint {row.name!r}: "
                               f"{e.strerror or e}") from e

    def delete_checkpoint(self, name: str) -> bool:
        check_not_link(self.checkpoint_root())
        try:
            os.unlink(self.checkpoint_path(name))
        except FileNotFoundError:
            return False
        except OSError as e:
            raise StoreIOError(f"cannot delete checkpoint {name!r}: {e.strerror or e}") from e
        return True

    @contextmanager
    def hold_checkpoint(self, name: str) -> Iterator[None]:
        """The ``.lock`` file, flock'ed without waiting (ConsumerBusy naming
        the holder's pid).  The kernel drops the lock when its holder dies,
        so a killed consumer never blocks a restart."""
        if fcntl is None:  # pragma: no cover
            yield
            return
        path = self.checkpoint_path(name, lock=True)
        try:
            self._checkpoint_dir()
            fd = open_file(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise StoreIOError(f"cannot open {path}: {e.strerror or e}") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                raise ConsumerBusy(name, f" (pid {pid})" if pid.isdigit() else "") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            try:
                yield
            finally:
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass
        finally:
            os.close(fd)  # closing drops the flock

    def _checkpoint_dir(self) -> None:
        root = self.checkpoint_root()
        if check_not_link(root):  # a link would take writes outside the store
            return
        if not os.path.isdir(root):
            os.makedirs(root, exist_ok=True)
            fsync_dir(os.path.dirname(root))


def _files(root: str):
    try:
        names = sorted(listdir(root))  # never through a link (CorruptStore)
    except FileNotFoundError:
        return
    for n in names:
        key = n[: -len(CHECKPOINT_SUFFIX)]
        if n.endswith(CHECKPOINT_SUFFIX) and len(key) == 32 \
                and all(c in "0123456789abcdef" for c in key):
            yield key, os.path.join(root, n)


def _scan(store_dir: str, strict: bool = False, relative: bool = False):
    """``(rows, problems)``: every checkpoint file that decodes under its
    own name (sorted by name), and an error for each that does not (its
    ``file`` relative to the store).  ``strict``: raise the first damage
    instead; ``relative``: name files relative to the store in messages."""
    rows, problems = [], []
    for key, path in _files(os.path.join(store_dir, CHECKPOINTS_DIR)):
        rel = os.path.relpath(path, store_dir)
        try:
            data = read_document(path)
            if data is None:  # deleted while we listed
                continue
            cp = decode_checkpoint(data, rel if relative else path)
            if stream_key(cp.name) != key:
                raise CorruptStore(f"{rel if relative else path}: holds checkpoint "
                                   f"{cp.name!r}, whose file would be "
                                   f"{stream_key(cp.name)}{CHECKPOINT_SUFFIX}")
        except (CorruptStore, StoreIOError) as e:
            if strict:
                raise
            problems.append({"severity": "error", "kind": "checkpoint", "file": rel,
                             "message": str(e)})
            continue
        rows.append(cp)
    return sorted(rows, key=lambda c: c.name), problems


def verify_files(store_dir: str, versions: dict, head: int):
    """Problems with the checkpoints, for ``evstore verify`` and ``repair``
    (which need no open store): files that do not decode or sit under the
    wrong name (errors: their consumer cannot start), and
    :func:`~evstore.core.backend.checkpoint_problems`' warnings."""
    rows, problems = _scan(store_dir, relative=True)
    yield from problems
    yield from checkpoint_problems(rows, head, lambda name: {"file": os.path.relpath(
        os.path.join(store_dir, CHECKPOINTS_DIR, stream_key(name) + CHECKPOINT_SUFFIX),
        store_dir)})
