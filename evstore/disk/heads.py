"""A frame's head read by slicing its payload, not by msgpack: a commit-log
batch's (:func:`batch_head`) and a stream record's (:func:`record_head`).

Why: verify walks every frame of a store and compaction rewrites every
segment; both need only each batch's stream, first version, first position,
time and count, and msgpack's Unpacker costs more per frame than the rest of
their work.  These parsers read just those fields (a payload whose CRC was
checked), and say where the events' packed fields begin.
"""
from __future__ import annotations

from . import bigframe
from .records import RECORD_HEAD


def _uint(p, i: int):
    """(value, next index) of the msgpack unsigned integer at ``p[i]``."""
    b = p[i]
    if b < 0x80:
        return b, i + 1
    if b == 0xCC:
        return p[i + 1], i + 2
    if b == 0xCD:
        return int.from_bytes(p[i + 1:i + 3], "big"), i + 3
    if b == 0xCE:
        return int.from_bytes(p[i + 1:i + 5], "big"), i + 5
    if b == 0xCF:
        return int.from_bytes(p[i + 1:i + 9], "big"), i + 9
    raise ValueError(f"expected an unsigned integer, found type byte 0x{b:02x}")



def batch_head(p) -> tuple[str, int, int, int, int, int]:
    """(stream, first_version, first_position, recorded_us, count, length of
    the head) of a commit-log payload: the events' packed fields follow the
    head.  A gap frame gives ("", 0, first_position, recorded_us, positions
    covered, its length): no event follows.  Raises ValueError (or UnicodeDecodeError) when it is malformed.
    ``p`` may be a ``bigframe.BigPayload`` (``walk(big=True)``)."""
    if isinstance(p, bigframe.BigPayload):
        p = p.prefix()
    b = p[0]
    if 0x90 <= b <= 0x9F:
        items, i = b & 0x0F, 1
    elif b == 0xDC:
        items, i = int.from_bytes(p[1:3], "big"), 3
    elif b == 0xDD:
        items, i = int.from_bytes(p[1:5], "big"), 5
    else:
        raise ValueError("commit-log payload is not an array")
    if items == 5 and p[i] == 0xA0:  # a gap frame: ["", 0, first_position, us, count]
        if p[i + 1] != 0:
            raise ValueError("a gap frame's version is not 0")
        fp, j = _uint(p, i + 2)
        us, j = _uint(p, j)
        count, j = _uint(p, j)
        if fp < 1 or count < 1:
            raise ValueError("a gap frame covers no position")
        return "", 0, fp, us, count, j
    if items < 8 or (items - 4) % 4:
        raise ValueError(f"commit-log payload has {items} items, not 4 + 4 per event")
    b = p[i]
    if 0xA0 <= b <= 0xBF:
        n, i = b & 0x1F, i + 1
    elif b == 0xD9:
        n, i = p[i + 1], i + 2
    elif b == 0xDA:
        n, i = int.from_bytes(p[i + 1:i + 3], "big"), i + 3
    elif b == 0xDB:
        n, i = int.from_bytes(p[i + 1:i + 5], "big"), i + 5
    else:
        raise ValueError("commit-log payload does not start with a stream id")
    stream = bytes(p[i:i + n]).decode("utf-8")
    i += n
    fv, i = _uint(p, i)
    fp, i = _uint(p, i)
    us, i = _uint(p, i)
    return stream, fv, fp, us, (items - 4) // 4, i


def batch_stream(p, i: int = 0):
    """(stream id as UTF-8 bytes, count) of the commit-log payload that
    starts at ``p[i]``, in the common short form (an array of at most 65535
    items, a stream id of 1 to 31 bytes), else None: then :func:`batch_head`
    reads it (gap frames, long ids, big frames, and malformed heads, which
    it rejects).  ``p``: the payload (a memoryview) or the bytes of a
    buffer holding it (``frames.frame_batches``).

    Why: compaction decides each frame by its stream alone, and most frames
    belong to a stream that loses nothing; this costs a fraction of
    :func:`batch_head` (no integer decoded, no string built)."""
    t = type(p)
    if t is not bytes and t is not memoryview:
        return None
    b = p[i]
    if b == 0xDC:
        items, i = (p[i + 1] << 8) | p[i + 2], i + 3
    elif 0x98 <= b <= 0x9F:
        items, i = b & 0x0F, i + 1
    else:
        return None
    c = p[i]
    if items < 8 or items & 3 or not 0xA1 <= c <= 0xBF:
        return None
    return bytes(p[i + 1:i + 1 + (c & 0x1F)]), (items - 4) >> 2


def record_head(p) -> tuple[int, int, int, int]:
    """(version, position, recorded_us, length of this head) of a stream
    record payload; what follows the head is the event's packed fields, byte
    for byte the same as in its commit-log frame.  Raises ValueError."""
    if len(p) >= 28 and p[0] == 0x97 and p[1] == 0xCF and p[10] == 0xCF and p[19] == 0xCF:
        _, _, v, _, pos, _, us = RECORD_HEAD.unpack_from(p)
        return v, pos, us, 28
    if len(p) < 4 or p[0] != 0x97:
        raise ValueError("stream record is not a 7-item array")
    v, i = _uint(p, 1)
    pos, i = _uint(p, i)
    us, i = _uint(p, i)
    return v, pos, us, i
