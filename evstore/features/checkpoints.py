"""Checkpoints: where a named, durable consumer has got to in ``$all``.

A checkpoint is one position P meaning "every event at or before P has been
handled"; its consumer resumes at P + 1.  A position works for every kind of
consumer (the whole store, one stream, a filter): positions only grow, so
"after P" is well defined whatever the consumer reads.

This module keeps the rules for every backend (docs/TAIL.md has the
reasoning): names follow the rules of stream ids; a checkpoint moves back
or over damage only when forced, never past the head; one consumer per name
at a time (two processes delivering under the same name would each advance
it past events only the other saw).  Where a checkpoint lives is the
backend's business (:meth:`Backend.get_checkpoint
<evstore.core.backend.Backend.get_checkpoint>` and the methods after it): a
directory keeps one small checked file per name and an flock'ed lock file
(:mod:`evstore.backends.files.checkpoints`), PostgreSQL a row and an
advisory lock.  ``stream`` records what the consumer followed last
(``null`` for ``$all``); it is informational.  A damaged checkpoint is
damage (exit 6 naming it), never a position that silently skips or repeats
events; one stored without a checksum by an older evstore is used,
``verify`` warns about it, and its next save adds one.
"""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator, NamedTuple

from ..core.backend import CheckpointRow, ConsumerBusy
from ..core.documents import decode_checkpoint
from ..errors import CorruptStore, NotFound, UsageError
from ..model import check_id_text, format_timestamp

MAX_NAME_BYTES = 200

#: Another consumer is running under this name (exit 1).
CheckpointBusy = ConsumerBusy


class CheckpointNotFound(NotFound):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"checkpoint not found: {name!r}")


class Checkpoint(NamedTuple):
    name: str
    position: int
    stream: str | None  #: what the consumer followed last; None: $all
    updated_at: str
    sealed: bool = True  #: False: stored without a checksum (added on the next save)

    def to_dict(self, head: int | None = None) -> dict:
        d = {"name": self.name, "position": self.position}
        if head is not None:
            d["head"] = head
            d["behind"] = max(head - self.position, 0)
        d["stream"] = self.stream
        d["updated_at"] = self.updated_at
        return d


def check_name(name: object) -> str:
    """Checkpoint names follow the rules of stream ids."""
    return check_id_text(name, "checkpoint name", MAX_NAME_BYTES)


def decode(data: bytes, where: str) -> Checkpoint:
    """The checkpoint in a checkpoint file's bytes; CorruptStore (exit 6)
    says what is wrong (:func:`evstore.core.documents.decode_checkpoint`)."""
    return Checkpoint(*decode_checkpoint(data, where))


class CheckpointStore:
    """The checkpoints of one store.  Cheap to make; holds nothing open."""

    def __init__(self, store):
        self.store = store
        self.backend = store.backend

    def path(self, name: str, suffix: str | None = None) -> str:
        """Where the checkpoint is, as messages name it (a directory store:
        its file; ``suffix`` ".lock": its consumer's lock file)."""
        return self.backend.describe_checkpoint(check_name(name),
                                                lock=bool(suffix) and suffix.endswith("lock"))

    # -- reading -----------------------------------------------------------------------
    def get(self, name: str) -> Checkpoint | None:
        """The checkpoint saved under ``name``, or None when there is none."""
        r = self.backend.get_checkpoint(check_name(name))
        return None if r is None else Checkpoint(*r)

    def list(self) -> list[Checkpoint]:
        """Every checkpoint, sorted by name.  A damaged one raises CorruptStore."""
        return [Checkpoint(*r) for r in self.backend.checkpoints()]

    # -- writing -----------------------------------------------------------------------
    def save(self, name: str, position: int, stream: str | None = None) -> Checkpoint:
        """Replace the checkpoint atomically (and durably when the store syncs)."""
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise UsageError(f"invalid checkpoint position {position!r}")
        cp = Checkpoint(check_name(name), position, stream,
                        format_timestamp(datetime.now(timezone.utc)))
        self.backend.put_checkpoint(CheckpointRow(*cp))
        return cp

    def delete(self, name: str) -> None:
        """Remove a checkpoint; its consumer, if it restarts, begins afresh.
        Refused (CheckpointBusy) while a consumer runs under the name."""
        with self.hold(name):
            if not self.backend.delete_checkpoint(name):
                raise CheckpointNotFound(name)

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
        CheckpointBusy when another consumer holds it).  The hold ends when
        its holder dies, so a killed consumer never blocks a restart."""
        with self.backend.hold_checkpoint(check_name(name)):
            yield


def checkpoint_rows(store, head: int) -> list[dict]:
    """``info``'s checkpoint rows: each checkpoint and how far behind the
    head it is, a damaged one as a row saying so; sorted by name."""
    rows, problems = store.backend.checkpoint_findings()
    out = [Checkpoint(*r).to_dict(head) for r in rows]
    out += [{"name": None, "file": p.get("file"), "damaged": True} for p in problems]
    return sorted(out, key=lambda r: (r.get("name") is None, r.get("name") or ""))
