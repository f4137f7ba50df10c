"""The byte form of a checkpoint and of the settings, sealed with a check line.

Why here, below the backends: a directory store keeps each checkpoint and its
settings as a small JSON file ending with a check line
(:mod:`evstore.core.checkline`), and those bytes are part of the store's
format (docs/FORMAT.md).  The file backend writes and reads them; the
checkpoint and settings features re-export :func:`decode_checkpoint` and
:func:`decode_settings` for callers that hold such bytes.  A backend that
keeps checkpoints as rows (memory, PostgreSQL) never sees these bytes.

A checkpoint::

    {"evstore_checkpoint": 1, "name": ..., "position": ..., "stream": ..., "updated_at": ...}
    {"sha256": "<hex SHA-256 of the line above>"}

The settings: one JSON object (indented by one space), then the check line.
A document without a check line (written before they carried one, or by
hand) decodes with ``sealed`` False: it is used, ``verify`` warns about it,
and the next save adds the line.  Anything else that does not decode is
damage: CorruptStore (exit 6) naming ``where`` and saying what to do.
"""
from __future__ import annotations

import json

from ..errors import CorruptStore
from .backend import CheckpointRow
from .checkline import seal, unseal

CHECKPOINT_FORMAT = 1  #: ``evstore_checkpoint``'s value


def encode_checkpoint(row: CheckpointRow) -> bytes:
    return seal((json.dumps({"evstore_checkpoint": CHECKPOINT_FORMAT, "name": row.name,
                             "position": row.position, "stream": row.stream,
                             "updated_at": row.updated_at},
                            ensure_ascii=False) + "\n").encode("utf-8"))


def decode_checkpoint(data: bytes, where: str) -> CheckpointRow:
    """The checkpoint in ``data``; CorruptStore (exit 6) says what is wrong."""
    try:
        body, sealed = unseal(data)
        d = json.loads(body)
        if not isinstance(d, dict) or d.get("evstore_checkpoint") != CHECKPOINT_FORMAT:
            raise ValueError(f"not an evstore checkpoint (format {CHECKPOINT_FORMAT})")
        name, pos, stream = d["name"], d["position"], d.get("stream")
        if not isinstance(name, str) or not name:
            raise ValueError("its name is not a non-empty string")
        if isinstance(pos, bool) or not isinstance(pos, int) or pos < 0:
            raise ValueError(f"position {pos!r} is not a whole number >= 0")
        if stream is not None and not isinstance(stream, str):
            raise ValueError("its stream is not a string")
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptStore(f"{where}: damaged checkpoint ({e}); set, reset or delete it "
                           "with 'evstore checkpoints set|reset|delete NAME'") from None
    return CheckpointRow(name, pos, stream, str(d.get("updated_at") or ""), sealed)


def encode_settings(settings: dict) -> bytes:
    return seal((json.dumps(settings, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))


def decode_settings(raw: bytes, where: str) -> tuple[dict, bool]:
    """``(settings, sealed)`` from a document's bytes; CorruptStore (exit 6)
    naming ``where`` when they are damaged."""
    try:
        body, sealed = unseal(raw)
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptStore(f"{where}: the store's settings are damaged ({e}); delete the file "
                           "(or run 'evstore repair') and set them again with "
                           "'evstore config'") from None
    return data, sealed
