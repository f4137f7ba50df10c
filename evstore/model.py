"""The event model: events as the library sees them, their rules, and
their canonical bytes.

``NewEvent`` is what callers append; ``RecordedEvent`` what they read back.
Both are immutable.  This module also holds the rules a value must satisfy
before any byte of it is written (valid stream ids, JSON values only, 64-bit
integers, finite floats, UUID ids, the size limit) and the packed form of an
event's four fields (``pack_events``) that every backend stores as given.
Why at the bottom of the layers, beside ``errors``: the front end, the
features and every backend speak in these terms; none of them should have
to reach into a backend's byte format (``evstore.disk``) to do so.
"""
from __future__ import annotations

import re
import os
import unicodedata
from datetime import datetime, timedelta, timezone

import msgpack

from .plain import named_tuple  # not typing.NamedTuple: start-up time (see there)
from .errors import InvalidEvent, UsageError

TYPE_CHECKING = False  # not typing's: importing typing costs ~5 ms of start-up
if TYPE_CHECKING:  # annotations only (they stay strings)
    from typing import Any

MAX_STREAM_ID_BYTES = 200
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1  # msgpack's uint64: the largest integer it can hold

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class InvalidStreamId(UsageError):
    """A stream id that the naming rules below do not allow."""


def check_id_text(value: object, what: str, max_bytes: int, error=UsageError) -> str:
    """The rules for names that are never paths (stream ids, and
    checkpoint names alike): non-empty Unicode, at most ``max_bytes`` UTF-8
    bytes, no control characters.  Raises ``error`` naming ``what``."""
    if not isinstance(value, str) or not value:
        raise error(f"invalid {what}: must be a non-empty string")
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise error(f"invalid {what} {value!r}: not valid Unicode") from None
    if n > max_bytes:
        raise error(f"invalid {what}: {n} UTF-8 bytes, at most {max_bytes} allowed")
    for ch in value:
        if unicodedata.category(ch) == "Cc":
            raise error(f"invalid {what} {value!r}: contains a control character")
    return value


def check_stream_id(stream: object, *, new: bool = True) -> str:
    """Return ``stream`` if it is a valid stream id, else raise InvalidStreamId.

    Ids that start with ``$`` are reserved (``$all`` names the whole store in
    the docs and in other stores' vocabulary; reading ``$all`` as a stream
    would silently read nothing): refused for anything named by a caller.
    ``new=False`` is for ids already on disk (verify, repair), written before
    the rule existed: they are not damage."""
    check_id_text(stream, "stream id", MAX_STREAM_ID_BYTES, InvalidStreamId)
    if new and stream.startswith("$"):
        raise InvalidStreamId(f"invalid stream id {stream!r}: ids that start with '$' are "
                              "reserved ($all is the whole store: read it with --all, "
                              "or read_all() in Python)")
    return stream


@named_tuple
class NewEvent:
    """An event to append.  ``id`` is made by the store when it is None."""

    type: str
    data: Any = None
    metadata: Any = None
    id: str | None = None


@named_tuple
class RecordedEvent:
    """An event as stored: immutable, with its place in the stream and store."""

    stream: str
    version: int
    position: int
    id: str
    type: str
    data: Any
    metadata: Any
    recorded_at: datetime

    def to_dict(self) -> dict:
        """The recorded event's JSON object, keys in the documented order
        (docs/CLI-JSON.md)."""
        return {
            "stream": self.stream,
            "version": self.version,
            "position": self.position,
            "id": self.id,
            "type": self.type,
            "data": self.data,
            "metadata": self.metadata,
            "recorded_at": format_timestamp(self.recorded_at),
        }


@named_tuple
class AppendResult:
    """What an append reports: the stream's new version, the last event's
    position, and how many events the append wrote."""

    stream: str
    version: int
    position: int
    count: int

    def to_dict(self) -> dict:
        return {"stream": self.stream, "version": self.version,
                "position": self.position, "count": self.count}


# --- time -------------------------------------------------------------------

def us_to_datetime(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def datetime_to_us(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError("timestamp must carry a timezone")
    delta = dt - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


_last_formatted: tuple = (None, "")


def format_timestamp(dt: datetime) -> str:
    """RFC 3339, UTC, microseconds, ``Z``: 2026-11-28T12:00:00.123456Z.

    Every event of a batch carries the same datetime object (LogBatch.events),
    so the last one formatted is remembered: a quarter of the CPU of
    ``evstore read`` went here, once per event (issue 15)."""
    global _last_formatted
    last = _last_formatted
    if last[0] is dt:
        return last[1]
    if dt.tzinfo is not timezone.utc:
        dt = dt.astimezone(timezone.utc)
    if dt.year >= 1000:  # isoformat pads years to 4 digits, strftime may not
        text = dt.isoformat(timespec="microseconds")[:-6] + "Z"
    else:
        text = f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond:06d}Z"
    _last_formatted = (dt, text)
    return text


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or an offset; a date alone is midnight UTC)."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}") from None
    if dt.tzinfo is None:
        if "T" in s or " " in s:
            raise ValueError(f"timestamp {text!r} needs a timezone (e.g. Z)")
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


# --- validation -----------------------------------------------------------------

def check_json_value(value: Any, where: str) -> None:
    """Raise InvalidEvent unless ``value`` is JSON that evstore stores exactly.

    Iterative (no recursion limit), with the common leaf types tested first:
    this runs for every event appended from Python.
    """
    stack = [value]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t is str or v is None or t is bool:
            continue
        if t is int:
            if -0x8000000000000000 <= v <= 0xFFFFFFFFFFFFFFFF:
                continue
            raise InvalidEvent(f"{where}: integer {v} does not fit in 64 bits")
        if t is dict:
            for k, item in v.items():
                if type(k) is not str:
                    raise InvalidEvent(f"{where}: object key {k!r} is not a string")
                ti = type(item)
                if ti is str or (ti is int and -0x8000000000000000 <= item <= 0xFFFFFFFFFFFFFFFF):
                    continue
                push(item)
        elif t is float:
            if v - v != 0.0:  # inf - inf and nan - nan are nan
                raise InvalidEvent(f"{where}: {v} is not a JSON number (NaN/Infinity)")
        elif t is list or t is tuple:
            extend(v)
        else:
            raise InvalidEvent(f"{where}: {t.__name__} is not a JSON value")


_CANONICAL_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z").match


def canonical_id(value: object, where: str = "id") -> str:
    if not isinstance(value, str):
        raise InvalidEvent(f"{where}: must be a UUID string")
    # Imported here: uuid brings platform (~5 ms at start-up), and only an id
    # not already in canonical form (normalize's fast check) comes here.
    import uuid

    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidEvent(f"{where}: {value!r} is not a valid UUID") from None


def new_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUID strings, from one urandom call."""
    raw = bytearray(os.urandom(16 * n))
    out = []
    for i in range(0, 16 * n, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80
        h = raw[i:i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


#: The fields of an event given to append, and those of a recorded event
#: (from read or export) that append accepts and ignores.  Any other key is
#: refused: a misspelt "dat" must not be stored as an event without data.
EVENT_FIELDS = frozenset(("type", "data", "metadata", "id"))
RECORDED_FIELDS = frozenset(("stream", "version", "position", "recorded_at"))


def check_fields(event: dict, where: str) -> None:
    """InvalidEvent naming the first key that is not an event's field."""
    for key in event:
        if key in EVENT_FIELDS or key in RECORDED_FIELDS:
            continue
        import difflib

        close = difflib.get_close_matches(str(key), sorted(EVENT_FIELDS), n=1, cutoff=0.6)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        raise InvalidEvent(
            f"{where}: unknown field {_quoted(key)}{hint}; an event has \"type\", \"data\", "
            "\"metadata\" and \"id\" (and a recorded event's \"stream\", \"version\", "
            "\"position\" and \"recorded_at\", which are ignored)")


def _quoted(key) -> str:
    import json

    return json.dumps(key, ensure_ascii=False) if isinstance(key, str) else repr(key)


def json_kind(value) -> str:
    """What a JSON value is, in JSON's words (for messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array" if value else "an empty array"
    return f"a {type(value).__name__}, not JSON"


def check_repeated_id(seen: dict, ev: "NewEvent", where: str) -> None:
    """InvalidEvent when ``ev``'s id was already used in this batch (``seen``
    maps ids to where they were first seen, and is updated)."""
    first = seen.setdefault(ev.id, where)
    if first != where:
        raise InvalidEvent(f"{where}: \"id\" {ev.id} is also the id of {first}; "
                           "the events of one batch need different ids")


def normalize(event: Any, where: str = "event", new_id: str | None = None) -> NewEvent:
    """Turn a NewEvent or a dict (an input event, or a recorded one) into a
    checked NewEvent with ``data``/``metadata`` defaulted and an id."""
    if isinstance(event, NewEvent):
        etype, data, metadata, eid = event.type, event.data, event.metadata, event.id
    elif isinstance(event, dict):
        if len(event) > 4 or not EVENT_FIELDS.issuperset(event):
            check_fields(event, where)
        if "type" not in event:
            raise InvalidEvent(f"{where}: missing \"type\"")
        etype = event["type"]
        # An explicit null is kept (JSON in = JSON out); only absence means {}.
        data = event["data"] if "data" in event else {}
        metadata = event["metadata"] if "metadata" in event else {}
        eid = event.get("id")
    else:
        raise InvalidEvent(f"{where}: expected a JSON object (an event), got {json_kind(event)}")
    if not isinstance(etype, str) or not etype:
        raise InvalidEvent(f"{where}: \"type\" must be a non-empty string")
    if isinstance(event, NewEvent):
        data = {} if data is None else data
        metadata = {} if metadata is None else metadata
    check_json_value(data, f"{where}: data")
    check_json_value(metadata, f"{where}: metadata")
    if eid is None:
        eid = new_id or new_ids(1)[0]
    elif type(eid) is not str or not _CANONICAL_UUID(eid):
        eid = canonical_id(eid, f"{where}: id")
    return NewEvent(etype, data, metadata, eid)


# --- payloads -------------------------------------------------------------------

_packb = msgpack.packb  # a module function: Packer objects are not thread-safe


def pack_fields(ev: NewEvent, max_bytes: int, where: str = "event") -> bytes:
    """The four packed fields (id, type, data, metadata) of one event, shared
    verbatim by its commit-log frame and its stream record."""
    try:
        blob = _packb([ev.id, ev.type, ev.data, ev.metadata])[1:]  # drop fixarray(4)
    except (UnicodeEncodeError, OverflowError, ValueError, TypeError) as e:
        raise InvalidEvent(f"{where}: cannot be stored: {e}") from None
    if len(blob) > max_bytes:
        raise InvalidEvent(
            f"{where}: {len(blob)} bytes, over the size limit of {max_bytes} bytes"
        )
    return blob


class PackedEvents:
    """A batch checked and packed (:func:`pack_fields`) event by event as it
    is read, its blobs end to end in one buffer: a huge batch from stdin
    costs about its packed size in memory, not that of millions of decoded
    dicts (or of a million bytes objects).  ``blobs`` goes where a list of
    blobs goes; ``len()``, ``[i].id`` and iterating (NewEvents with only their
    ids) are what an exact retry's check needs (EventStore._idempotent)."""

    __slots__ = ("body", "ends", "max_bytes", "own_ids")

    def __init__(self, body: bytearray, ends, max_bytes: int, own_ids: bool = False):
        self.body = body
        self.ends = ends  #: where each blob ends in ``body``
        self.max_bytes = max_bytes
        #: did the caller give any event its own id?  Only then can the batch
        #: be a retry of one already stored (made ids are new).
        self.own_ids = own_ids

    @property
    def blobs(self) -> "PackedBlobs":
        return PackedBlobs(self.body, self.ends)

    def __len__(self) -> int:
        return len(self.ends)

    def __iter__(self):
        return (self[i] for i in range(len(self.ends)))

    def __getitem__(self, i: int) -> "Prepared":
        """Event ``i`` as a backend stores it: its id and type (read from
        the head of its blob) and the blob itself (a memoryview)."""
        if not 0 <= i < len(self.ends):
            raise IndexError(i)
        start = self.ends[i - 1] if i else 0
        end = self.ends[i]
        up = msgpack.Unpacker(raw=False)
        up.feed(self.body[start:min(end, start + 256)])  # the id comes first: 38 bytes packed
        eid = up.unpack()
        try:
            etype = up.unpack()
        except msgpack.OutOfData:  # a type longer than the head fed
            up = msgpack.Unpacker(raw=False)
            up.feed(self.body[start:end])
            eid, etype = up.unpack(), up.unpack()
        return Prepared(eid, etype, memoryview(self.body)[start:end])


@named_tuple
class Prepared:
    """One event ready to store: its id and type (which backends index)
    and ``blob``, :func:`pack_fields` of the whole event -- the exact bytes
    every backend stores, so JSON comes back exactly as it went in (key
    order, 64-bit integers, floats)."""

    id: str
    type: str
    blob: bytes


class PackedBlobs:
    """The blobs of a PackedEvents: iterating gives each (a memoryview)."""

    __slots__ = ("body", "ends")

    def __init__(self, body: bytearray, ends):
        self.body, self.ends = body, ends

    def __len__(self) -> int:
        return len(self.ends)

    def __iter__(self):
        mv, start = memoryview(self.body), 0
        for end in self.ends:
            yield mv[start:end]
            start = end


def pack_events(events, max_bytes: int, labelled: bool = False) -> PackedEvents:
    """Check (:func:`normalize`) and pack each of ``events`` as it comes;
    ids are made for events without one, and an id the caller gave twice is
    InvalidEvent.  May be empty.  ``labelled``: ``events`` gives ``(label,
    event)`` pairs, and the label names the event in the errors of its
    checks (the CLI's "line 5"; "event N" otherwise, and for its size)."""
    from array import array

    body, ends = bytearray(), array("Q")
    # Ids are made in pools (one urandom call each), sized to the batch when
    # its length is known, else growing from 8 to 1024: a one-event append
    # must not pay for a thousand ids it throws away.
    pool, k = [], 0
    size = min(max(len(events), 1), 1024) if hasattr(events, "__len__") else 8
    seen: dict = {}
    for i, e in enumerate(events):
        if k == len(pool):
            pool, k = new_ids(size), 0
            size = min(size * 2, 1024)
        where = f"event {i + 1}"
        label, e = e if labelled else (where, e)
        ev = normalize(e, label, pool[k])
        if ev.id != pool[k]:  # the caller's own id
            check_repeated_id(seen, ev, label)
        else:
            k += 1
        body += pack_fields(ev, max_bytes, where)
        ends.append(len(body))
    return PackedEvents(body, ends, max_bytes, own_ids=bool(seen))


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def unpack(payload) -> list:
    return msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
