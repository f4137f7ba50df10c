"""Checkpoints: where a named, durable consumer has got to in ``$all``.

A checkpoint is one position P meaning "every event at or before P has been
handled"; its consumer resumes at P + 1.  A position works for every kind of
consumer (the whole store, one stream, a filter): positions only grow, so
"after P" is well defined whatever the consumer reads.

Files (docs/TAIL.md has the reasoning)::

    STORE/checkpoints/<KEY>.json   {"evstore_checkpoint": 1, "name", "position",
                                    "stream", "updated_at"}
                                   {"sha256": hex SHA-256 of the line above}
    STORE/checkpoints/<KEY>.lock   flock'ed by the consumer running under NAME

``KEY`` is :func:`evstore.disk.streamlog.stream_key` of the name: a name never
becomes a path, and the real name is kept inside the file (a file whose name
does not hash to its KEY is reported, never used).  ``stream`` records what
the consumer followed last (``null`` for ``$all``); it is informational.
Files are replaced with :func:`evstore.disk.recovery.write_atomic`, so a reader
sees the old checkpoint or the new one, never a torn one.  The check line
(:mod:`evstore.features.checkline`) makes a flipped bit damage (exit 6 naming
the file) instead of a position that silently skips or repeats events.  A
file without one was written by an evstore from before checksums: it is
used, ``verify`` warns about it, and its next save adds the line.

The ``.lock`` file makes a name single-consumer: two processes delivering
under the same name would each advance it past events only the other saw.
Lock files are never deleted (unlinking a lock file others may hold open is
a classic race); they are empty and cheap.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator, NamedTuple

from ..errors import CorruptStore, NotFound, StoreIOError, StoreLocked, UsageError
from ..disk.records import check_id_text, format_timestamp
from ..disk.recovery import write_atomic
from ..disk.segment import check_not_link, listdir, nofollow, open_file
from ..disk.streamlog import stream_key
from .checkline import seal, unseal

from ..backends.files.names import CHECKPOINTS_DIR  # noqa: E402  (M2 removes this)
FORMAT = 1
MAX_NAME_BYTES = 200
from ..backends.files.names import CHECKPOINT_LOCK_SUFFIX as LOCK_SUFFIX, CHECKPOINT_SUFFIX as SUFFIX  # noqa: E402

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no single-consumer guard
    fcntl = None


class CheckpointNotFound(NotFound):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"checkpoint not found: {name!r}")


class CheckpointBusy(StoreLocked):
    """Another consumer is running under this name (exit 1)."""


class Checkpoint(NamedTuple):
    name: str
    position: int
    stream: str | None  #: what the consumer followed last; None: $all
    updated_at: str
    sealed: bool = True  #: False: a file from before checksums (rewritten on the next save)

    def to_dict(self, head: int | None = None) -> dict:
        d = {"name": self.name, "position": self.position}
        if head is not None:
            d["head"] = head
            d["behind"] = max(head - self.position, 0)
        d["stream"] = self.stream
        d["updated_at"] = self.updated_at
        return d


def check_name(name: object) -> str:
    """Checkpoint names follow the rules of stream ids (SPEC §1)."""
    return check_id_text(name, "checkpoint name", MAX_NAME_BYTES)


def encode(name: str, position: int, stream: str | None, updated_at: str) -> bytes:
    return seal((json.dumps({"evstore_checkpoint": FORMAT, "name": name, "position": position,
                             "stream": stream, "updated_at": updated_at},
                            ensure_ascii=False) + "\n").encode("utf-8"))


def decode(data: bytes, path: str, key: str | None = None) -> Checkpoint:
    """Parse a checkpoint file; CorruptStore (exit 6) says what is wrong."""
    try:
        body, sealed = unseal(data)
        d = json.loads(body)
        if not isinstance(d, dict) or d.get("evstore_checkpoint") != FORMAT:
            raise ValueError("not an evstore checkpoint (format 1)")
        name, pos, stream = d["name"], d["position"], d.get("stream")
        if not isinstance(name, str) or not name:
            raise ValueError("its name is not a non-empty string")
        if isinstance(pos, bool) or not isinstance(pos, int) or pos < 0:
            raise ValueError(f"position {pos!r} is not a whole number >= 0")
        if stream is not None and not isinstance(stream, str):
            raise ValueError("its stream is not a string")
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptStore(f"{path}: damaged checkpoint ({e}); set, reset or delete it "
                           "with 'evstore checkpoints set|reset|delete NAME'") from None
    if key is not None and stream_key(name) != key:
        raise CorruptStore(f"{path}: holds checkpoint {name!r}, whose file would be "
                           f"{stream_key(name)}{SUFFIX}")
    return Checkpoint(name, pos, stream, str(d.get("updated_at") or ""), sealed)


class CheckpointStore:
    """The checkpoints of one store.  Cheap to make; holds no open files."""

    def __init__(self, store):
        self.store = store
        #: a backend that keeps checkpoints as rows (PostgreSQL, memory);
        #: None: a directory, where this module keeps one file per checkpoint
        self.rows = store.backend if store.directory is None else None
        self.root = None if self.rows is not None else \
            os.path.join(store.directory, CHECKPOINTS_DIR)

    def path(self, name: str, suffix: str = SUFFIX) -> str:
        return os.path.join(self.root, stream_key(check_name(name)) + suffix)

    # -- reading -----------------------------------------------------------------------
    def get(self, name: str) -> Checkpoint | None:
        """The checkpoint saved under ``name``, or None when there is none."""
        if self.rows is not None:
            r = self.rows.get_checkpoint(check_name(name))
            return None if r is None else Checkpoint(r.name, r.position, r.stream, r.updated_at)
        path = self.path(name)
        try:
            with open(path, "rb", opener=nofollow) as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreIOError(f"cannot read {path}: {e.strerror or e}") from e
        cp = decode(data, path)
        if cp.name != name:
            raise CorruptStore(f"{path}: holds checkpoint {cp.name!r}, not {name!r}")
        return cp

    def list(self) -> list[Checkpoint]:
        """Every checkpoint, sorted by name.  A damaged file raises CorruptStore."""
        if self.rows is not None:
            return [Checkpoint(r.name, r.position, r.stream, r.updated_at)
                    for r in self.rows.checkpoints()]
        found = []
        for key, path in _files(self.root):
            try:
                with open(path, "rb", opener=nofollow) as f:
                    data = f.read()
            except FileNotFoundError:  # deleted while we listed
                continue
            except OSError as e:
                raise StoreIOError(f"cannot read {path}: {e.strerror or e}") from e
            found.append(decode(data, path, key))
        return sorted(found, key=lambda c: c.name)

    # -- writing -----------------------------------------------------------------------
    def save(self, name: str, position: int, stream: str | None = None) -> Checkpoint:
        """Replace the checkpoint atomically (and durably when the store syncs)."""
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise UsageError(f"invalid checkpoint position {position!r}")
        cp = Checkpoint(name, position, stream,
                        format_timestamp(datetime.now(timezone.utc)))
        if self.rows is not None:
            from ..core.backend import CheckpointRow
            self.rows.put_checkpoint(CheckpointRow(check_name(name), position, stream,
                                                   cp.updated_at))
            return cp
        path = self.path(name)
        try:
            self._make_root()
            write_atomic(path, encode(name, position, stream, cp.updated_at),
                         sync=self.store.sync)
        except OSError as e:
            raise StoreIOError(f"cannot save checkpoint {name!r}: {e.strerror or e}") from e
        return cp

    def delete(self, name: str) -> None:
        """Remove a checkpoint; its consumer, if it restarts, begins afresh.
        Refused (CheckpointBusy) while a consumer runs under the name."""
        with self.hold(name):
            if self.rows is not None:
                if not self.rows.delete_checkpoint(name):
                    raise CheckpointNotFound(name)
                return
            try:
                os.unlink(self.path(name))
            except FileNotFoundError:
                raise CheckpointNotFound(name) from None
            except OSError as e:
                raise StoreIOError(f"cannot delete checkpoint {name!r}: {e.strerror or e}") from e

    def reset(self, name: str, position: int = 0) -> Checkpoint:
        """Set ``name`` to ``position`` (0: from the beginning), creating it
        when absent.  Refused while a consumer runs under the name, and past
        the store's head (no event there has been handled)."""
        return self.set(name, position, force=True)

    def set(self, name: str, position: int, force: bool = False) -> Checkpoint:
        """Move ``name`` to ``position`` -- "every event up to it is handled"
        -- creating it when absent: the commit of a consumer that manages its
        own (``tail --no-commit``).  Refused (UsageError) past the store's
        head, and backwards (which delivers events again) or over a damaged
        file unless ``force``; refused (CheckpointBusy) while a consumer runs
        under the name."""
        head = self.store.head()
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise UsageError(f"invalid position {position!r}: must be a whole number >= 0")
        if position > head:
            raise UsageError(f"position {position} is past the store's head ({head}): "
                             "no event there has been handled")
        with self.hold(name):
            old = None
            try:
                old = self.get(name)
            except CorruptStore:
                if not force:  # resetting (forcing) is how a damaged checkpoint is fixed
                    raise
            if old is not None and position < old.position and not force:
                raise UsageError(
                    f"checkpoint {name!r} is at {old.position}: moving it back to {position} "
                    f"delivers events again (force it to: --force)")
            return self.save(name, position, old.stream if old else None)

    @contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Be the only user of ``name`` until the block ends (non-blocking:
        CheckpointBusy when another consumer holds it).  The kernel drops the
        lock when its holder dies, so a killed consumer never blocks a restart."""
        if self.rows is not None:  # the backend's hold (ConsumerBusy: exit 1)
            with self.rows.hold_checkpoint(check_name(name)):
                yield
            return
        path = self.path(name, LOCK_SUFFIX)
        if fcntl is None:  # pragma: no cover
            yield
            return
        try:
            self._make_root()
            fd = open_file(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise StoreIOError(f"cannot open {path}: {e.strerror or e}") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                raise CheckpointBusy(
                    f"checkpoint {name!r} is in use by another consumer"
                    + (f" (pid {pid})" if pid.isdigit() else "")) from None
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

    def _make_root(self) -> None:
        if check_not_link(self.root):  # a link would take writes outside the store
            return
        if not os.path.isdir(self.root):
            os.makedirs(self.root, exist_ok=True)
            from ..disk.segment import fsync_dir
            fsync_dir(os.path.dirname(self.root))


def _files(root: str):
    try:
        names = sorted(listdir(root))  # never through a link (CorruptStore)
    except FileNotFoundError:
        return
    for n in names:
        key = n[: -len(SUFFIX)]
        if n.endswith(SUFFIX) and len(key) == 32 and all(c in "0123456789abcdef" for c in key):
            yield key, os.path.join(root, n)


def verify_files(store_dir: str, versions: dict, head: int):
    """Problems with the checkpoints, for ``evstore verify``: files that do
    not parse or sit under the wrong name (errors: their consumer cannot
    start) and positions past the head (warnings: events the consumer saw
    are gone, e.g. after a repair; it will resume at the head)."""
    root = os.path.join(store_dir, CHECKPOINTS_DIR)
    for key, path in _files(root):
        rel = os.path.relpath(path, store_dir)
        try:
            with open(path, "rb", opener=nofollow) as f:
                cp = decode(f.read(), rel, key)
        except (CorruptStore, OSError) as e:
            yield {"severity": "error", "kind": "checkpoint", "file": rel, "message": str(e)}
            continue
        if not cp.sealed:
            yield {"severity": "warning", "kind": "checkpoint", "file": rel,
                   "message": f"checkpoint {cp.name!r} has no checksum (written by an older "
                              "evstore); its consumer's next save adds one"}
        if cp.position > head:
            yield {"severity": "warning", "kind": "checkpoint", "file": rel,
                   "position": cp.position,
                   "message": f"checkpoint {cp.name!r} is at position {cp.position}, past "
                              f"the store's head ({head}); its consumer will resume at the head"}


def checkpoint_rows(store, head: int) -> list[dict]:
    """``info``'s checkpoint rows: each checkpoint and how far behind the
    head it is, a damaged file as a row saying so; sorted by name."""
    from ..disk.segment import nofollow

    if store.directory is None:  # a backend that keeps checkpoints as rows
        return [c.to_dict(head) for c in CheckpointStore(store).list()]
    rows = []
    for key, path in _files(CheckpointStore(store).root):
        try:
            with open(path, "rb", opener=nofollow) as f:
                cp = decode(f.read(), path, key)
        except (OSError, CorruptStore):
            rows.append({"name": None, "file": os.path.relpath(path, store.directory),
                         "damaged": True})
            continue
        rows.append(cp.to_dict(head))
    return sorted(rows, key=lambda r: (r.get("name") is None, r.get("name") or ""))
