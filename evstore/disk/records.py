"""The commit log's and stream logs' msgpack payloads: the file backend's
framing of the events :mod:`evstore.model` describes.

Batch payloads (one per append in the commit log), stream records, gap
frames left by compaction, and their decoding with every shape check.  The
event model itself is imported from :mod:`evstore.model`, never from here.
"""
from __future__ import annotations

import struct

import msgpack

from ..plain import named_tuple  # not typing.NamedTuple: start-up time (see there)
from ..errors import CorruptStore
from ..model import PackedBlobs, RecordedEvent, _array_header, _packb, unpack, us_to_datetime


def log_payload(stream: str, first_version: int, first_position: int,
                recorded_us: int, blobs: list[bytes]) -> bytes:
    return b"".join(log_payload_parts(stream, first_version, first_position, recorded_us, blobs))


def log_payload_parts(stream: str, first_version: int, first_position: int,
                      recorded_us: int, blobs: list[bytes]) -> list:
    """:func:`log_payload` as a list of pieces (format.encode_frame_parts)."""
    head = _packb(stream) + _packb(first_version) + _packb(first_position) + _packb(recorded_us)
    head = _array_header(4 + 4 * len(blobs)) + head
    return [head, blobs.body] if isinstance(blobs, PackedBlobs) else [head, *blobs]


#: A stream record's head as writers pack it: fixarray(7), then uint64 x3 (0xcf).
RECORD_HEAD = struct.Struct(">BBQBQBQ")


def stream_payload(version: int, position: int, recorded_us: int, blob: bytes) -> bytes:
    """``[version, position, recorded_us, id, type, data, metadata]``; the
    three numbers as fixed-width msgpack uint64 (valid msgpack, one pack)."""
    return RECORD_HEAD.pack(0x97, 0xCF, version, 0xCF, position, 0xCF, recorded_us) + blob


@named_tuple
class LogBatch:
    """A decoded commit-log frame."""

    stream: str
    first_version: int
    first_position: int
    recorded_us: int
    fields: list  # flat: id, type, data, metadata, id, ...

    @property
    def count(self) -> int:
        return len(self.fields) // 4

    @property
    def last_position(self) -> int:
        return self.first_position + self.count - 1

    @property
    def last_version(self) -> int:
        return self.first_version + self.count - 1

    def events(self, skip: int = 0):
        when = us_to_datetime(self.recorded_us)
        f = self.fields
        v, p = self.first_version, self.first_position
        for i in range(skip, len(f) // 4):
            j = 4 * i
            yield RecordedEvent(self.stream, v + i, p + i, f[j], f[j + 1], f[j + 2], f[j + 3], when)


@named_tuple
class GapBatch:
    """A gap frame: positions ``first_position .. first_position + count - 1``
    whose events ``compact`` removed (docs/FORMAT.md, "Forgetting").  It
    stands where their batches stood, so the commit log still accounts for
    every position: a missing position is provably removed, never lost."""

    stream: str          #: always "" (no stream id is empty)
    first_version: int   #: always 0
    first_position: int
    recorded_us: int     #: the time of the last batch it replaces
    count: int           #: positions covered

    @property
    def fields(self) -> list:
        return []

    @property
    def last_position(self) -> int:
        return self.first_position + self.count - 1

    @property
    def last_version(self) -> int:
        return 0

    def events(self, skip: int = 0):
        return iter(())


#: The stream of a gap frame's head: no stream id is empty.
GAP = ""


def gap_payload(first_position: int, count: int, recorded_us: int) -> bytes:
    """``["", 0, first_position, recorded_us, count]``: a gap frame."""
    return msgpack.packb([GAP, 0, first_position, recorded_us, count])


def is_gap(head) -> bool:
    """Whether a batch head (or batch) is a gap frame's."""
    return head[0] == GAP


class MalformedBatch(CorruptStore, ValueError):
    """A commit-log frame whose payload (its CRC notwithstanding) is not a
    batch.  A ValueError, which the commit log's lookups catch to fall back
    to a scan, and a CorruptStore (exit 6) wherever it is not caught."""


#: What msgpack raises on malformed input: ValueError subclasses (ExtraData,
#: FormatError, StackError), OutOfData (not one), TypeError for odd keys.
_MSGPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException, RecursionError)

_WRONG_SHAPE = ("commit-log frame payload has the wrong shape (want [stream, first_version, "
                "first_position, recorded_us] and 4 fields per event)")


def _check_head(n, stream, first_version, first_position, recorded_us) -> None:
    if (n < 8 or (n - 4) % 4 or type(stream) is not str or type(first_version) is not int
            or type(first_position) is not int or type(recorded_us) is not int):
        raise MalformedBatch(_WRONG_SHAPE)


def _check_gap(n, stream, first_version, first_position, recorded_us, count) -> None:
    if (n != 5 or stream != GAP or first_version != 0 or type(first_position) is not int
            or first_position < 1 or type(recorded_us) is not int or type(count) is not int
            or count < 1):
        raise MalformedBatch("commit-log gap frame has the wrong shape (want "
                             "['', 0, first_position, recorded_us, count])")


def decode_batch(payload) -> LogBatch:
    """Raises MalformedBatch (a ValueError) for anything that is not a batch."""
    try:
        items = unpack(payload)
    except _MSGPACK_ERRORS as e:
        raise MalformedBatch(f"commit-log frame payload does not decode: {e}") from None
    if not isinstance(items, list) or len(items) < 4:
        raise MalformedBatch(_WRONG_SHAPE)
    if len(items) == 5 and items[0] == GAP:
        _check_gap(5, *items)
        return GapBatch(*items)
    _check_head(len(items), *items[:4])
    return LogBatch(items[0], items[1], items[2], items[3], items[4:])


def decode_batch_head(payload) -> tuple[str, int, int, int, int]:
    """(stream, first_version, first_position, recorded_us, count) without
    decoding the events' data.  Raises MalformedBatch (a ValueError) when
    the payload is not a batch, like :func:`decode_batch`."""
    try:
        up = msgpack.Unpacker(raw=False, strict_map_key=True)
        up.feed(payload)
        n = up.read_array_header()
        if n < 8 and n != 5:
            raise MalformedBatch(_WRONG_SHAPE)
        stream = up.unpack()
        first_version = up.unpack()
        first_position = up.unpack()
        recorded_us = up.unpack()
        if n == 5:
            count = up.unpack()
            _check_gap(n, stream, first_version, first_position, recorded_us, count)
            return stream, first_version, first_position, recorded_us, count
    except MalformedBatch:
        raise
    except _MSGPACK_ERRORS as e:
        raise MalformedBatch(
            f"commit-log frame payload does not decode: {type(e).__name__}: {e}") from None
    _check_head(n, stream, first_version, first_position, recorded_us)
    return stream, first_version, first_position, recorded_us, (n - 4) // 4
