"""The check line that ends the store's small JSON files.

Snapshots, checkpoints and the settings are small files of JSON lines whose
last line is ``{"sha256": "<hex>"}``: the SHA-256 of every byte before it.
A reader that finds the line verifies it, so one flipped bit (a checkpoint's
``"position": 10`` read as ``18``) is damage that is reported, never a value
that is used.  The line is JSON too, so ``jq`` still reads the files.

:func:`unseal` also tells a file *without* a check line apart (files written
before checkpoints and settings carried one): each caller decides whether
such a file is acceptable.  Removing the line takes more than a flipped bit:
flipping the newline before it (or any byte of it) leaves a last line that is
not a check line, glued to or after the body, which then does not parse as
the single JSON document an unsealed file must be.

Why in ``core``: the snapshot feature seals its documents, and the file
backend seals the checkpoints and settings it keeps as files
(:mod:`evstore.core.documents`): one rule below both.
"""
from __future__ import annotations

import json

from ..plain import sha256_hex  # not hashlib's: start-up time (see there)

KEY = "sha256"


def check_line(body: bytes) -> bytes:
    """The line that seals ``body`` (which ends with a newline)."""
    return (json.dumps({KEY: sha256_hex(body)}) + "\n").encode("ascii")


def seal(body: bytes) -> bytes:
    """``body`` followed by its check line."""
    if not body.endswith(b"\n"):
        body += b"\n"
    return body + check_line(body)


def unseal(data: bytes) -> tuple[bytes, bool]:
    """``(body, True)`` for a sealed file whose checksum matches;
    ``(data, False)`` when the last line is not a check line (an unsealed
    file: the caller decides).  ValueError("checksum mismatch") when the
    check line is there and does not match."""
    if not data.endswith(b"\n"):
        return data, False
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1
    if cut == 0:
        return data, False  # a single line: nothing before a check line
    digest = _digest(data[cut:])
    if digest is None:
        return data, False
    body = data[:cut]
    if sha256_hex(body) != digest:
        raise ValueError("checksum mismatch")
    return body, True


def _digest(line: bytes) -> str | None:
    try:
        d = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(d, dict) and len(d) == 1 and isinstance(d.get(KEY), str):
        return d[KEY]
    return None
