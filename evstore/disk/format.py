"""The on-disk frame: the one unit every evstore log is made of.

A store is a directory; docs/FORMAT.md describes all of it.  This module owns
the bytes of one *frame*, the self-checking envelope around every record in
every segment file (the commit log and the per-stream logs alike)::

    offset  size  field
    0       4     magic        b"EvL1" (commit-log batch) or b"EvS1" (stream record)
    4       4     length       payload length in bytes, unsigned, big-endian
    8       4     crc          CRC-32 (zlib) of the 4 length bytes then the payload
    12      n     payload      one msgpack value (see below)
    12+n    4     length       the same length again, so files can be walked backwards

A frame is *valid* when the magic matches, both lengths agree and the CRC
matches.  Anything else -- a short read, zeros, flipped bits -- is not a frame,
and is never decoded as one.  Because the CRC covers the length, a flipped
length cannot send a reader into the middle of the next record unnoticed.

Payloads (msgpack arrays; strings UTF-8, integers up to 64 bits):

* commit-log batch ``EvL1``:
  ``[stream, first_version, first_position, recorded_at_us,
  id, type, data, metadata,  id, type, data, metadata, ...]``
  -- one frame per append; the events of the batch follow the 4-field head.
* stream record ``EvS1``:
  ``[version, position, recorded_at_us, id, type, data, metadata]``
  -- one frame per event.

``recorded_at_us`` is microseconds since the Unix epoch, UTC.
"""
from __future__ import annotations

import struct
import zlib

LOG_MAGIC = b"EvL1"
STREAM_MAGIC = b"EvS1"

HEADER = struct.Struct(">4sII")
HEADER_SIZE = 12
TRAILER = struct.Struct(">I")
TRAILER_SIZE = 4
OVERHEAD = HEADER_SIZE + TRAILER_SIZE
assert HEADER.size == HEADER_SIZE
assert TRAILER.size == TRAILER_SIZE

#: A frame's payload may not exceed this (u32 length field, minus slack).
MAX_PAYLOAD = 0xFFFF_FFFF - OVERHEAD

FORMAT_VERSION = 1

_LEN = struct.Struct(">I")
_crc32 = zlib.crc32


class FrameError(ValueError):
    """The bytes at an offset are not a valid frame."""


def encode_frame(magic: bytes, payload: bytes) -> bytes:
    """Wrap ``payload`` in a frame ready to be appended to a segment."""
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError(f"frame payload too large: {n} bytes")
    length = _LEN.pack(n)
    crc = _crc32(payload, _crc32(length))
    return b"".join((magic, length, _LEN.pack(crc), payload, length))


def encode_frame_parts(magic: bytes, parts: list) -> bytes:
    """:func:`encode_frame` of the payload ``b"".join(parts)``, joined once:
    a batch's payload of many events is never copied twice."""
    n = sum(map(len, parts))
    if n > MAX_PAYLOAD:
        raise ValueError(f"frame payload too large: {n} bytes")
    length = _LEN.pack(n)
    crc = _crc32(length)
    for p in parts:
        crc = _crc32(p, crc)
    return b"".join([magic, length, _LEN.pack(crc), *parts, length])


def frame_length_at(buf, pos: int, magic: bytes) -> int:
    """Return the payload length of a frame whose header starts at ``pos``.

    Checks only the magic; the caller must then call :func:`check_frame`.
    Raises FrameError when fewer than a header's bytes are there or the magic
    is wrong.
    """
    if len(buf) - pos < HEADER_SIZE:
        raise FrameError("short header")
    m, n, _ = HEADER.unpack_from(buf, pos)
    if m != magic:
        raise FrameError(f"bad magic {bytes(m)!r}")
    return n


def check_frame(buf, pos: int, magic: bytes):
    """Validate the frame at ``pos`` in ``buf`` and return (payload, end).

    ``payload`` is a memoryview slice (no copy).  Raises FrameError with a
    reason when the frame is short (``"short"`` in the message: it may still be
    being written) or damaged.
    """
    avail = len(buf) - pos
    if avail < HEADER_SIZE:
        raise FrameError("short header")
    m, n, crc = HEADER.unpack_from(buf, pos)
    if m != magic:
        raise FrameError(f"bad magic {bytes(m)!r}")
    end = pos + HEADER_SIZE + n + TRAILER_SIZE
    if end - pos > avail:
        raise FrameError(f"short frame: needs {n + OVERHEAD} bytes, {avail} present")
    (n2,) = _LEN.unpack_from(buf, end - TRAILER_SIZE)
    if n2 != n:
        raise FrameError(f"length mismatch: header {n}, trailer {n2}")
    payload = memoryview(buf)[pos + HEADER_SIZE : end - TRAILER_SIZE]
    if _crc32(payload, _crc32(_LEN.pack(n))) != crc:
        raise FrameError("checksum mismatch")
    return payload, end


def is_short(err: FrameError) -> bool:
    """True when the error only says the frame is incomplete (not garbage)."""
    return str(err).startswith("short")
