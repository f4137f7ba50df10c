"""The NDJSON line of a recorded event, made fast.

Every reader that prints events as JSON (``read``, ``tail``, ``export``)
prints ``json.dumps(RecordedEvent.to_dict(), ensure_ascii=False)``.  Built
that way an event costs ~20 us (a RecordedEvent, a dict, a datetime, the
encoder's per-call set-up).  :func:`chunk_text` makes the same bytes from
the fields a backend keeps -- stream, versions, positions, commit time, and
each event's id, type, data and metadata -- encoding all of a chunk's data in
one call of the C encoder, formatting the commit time once per second, and
caching the JSON of types and stream heads.  Backends that can give their
batches as those fields use it in :meth:`~evstore.core.backend.Backend.ndjson_chunks`.
"""
from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring

from ..model import datetime_to_us, format_timestamp, us_to_datetime

# The encoder json.dumps(obj, ensure_ascii=False) uses, built once.  With
# markers=None it skips the circular-reference check (decoded msgpack has
# no cycles); everything else -- separators, float repr, escaping -- is
# the same, so lines are byte for byte what jsonio.dumps makes.
_encoder = c_make_encoder(None, json.JSONEncoder(ensure_ascii=False).default, encode_basestring,
                          None, ": ", ", ", False, False, True) if c_make_encoder else None

#: What separates values in one call of the encoder: an integer no event is
#: likely to hold (and if one does, the count check below notices).
_MARK = -7140916482290745613


def dumps(obj) -> str:
    """``json.dumps(obj, ensure_ascii=False)``, without its per-call set-up."""
    if _encoder is None:  # pragma: no cover - CPython always has the C encoder
        return json.dumps(obj, ensure_ascii=False)
    if type(obj) is str:
        return encode_basestring(obj)
    return "".join(_encoder(obj, 0))


_MARK_SEP = f", {_MARK}, "


def _plain_ids(joined: str, n: int) -> bool:
    """Whether ``n`` ids joined are all 36 characters of ``0-9a-f-`` (a
    canonical UUID's): then none needs escaping in JSON.  (bytes.translate
    deleting the allowed bytes: several times faster than a regex.)"""
    if len(joined) != 36 * n:
        return False
    try:
        return not joined.encode("ascii").translate(None, b"0123456789abcdef-")
    except UnicodeEncodeError:
        return False


class Stamps:
    """recorded_at text for microsecond times; the date part is computed
    once per second, not once per batch."""

    def __init__(self):
        self.sec = None
        self.prefix = ""

    def __call__(self, us: int) -> str:
        sec, micro = divmod(us, 1_000_000)
        if sec != self.sec:
            self.sec = sec
            self.prefix = format_timestamp(us_to_datetime(sec * 1_000_000))[:19]
        return f"{self.prefix}.{micro:06d}Z"


def _encode_all(values: list) -> list[str]:
    """``dumps`` of each value, in one call of the C encoder: the values are
    encoded as one list with a marker between them, then split on the
    marker.  That is safe because the count is checked (a marker inside a
    value adds one, and then the values are encoded one by one)."""
    if not values:
        return []
    flat = [_MARK] * (2 * len(values) - 1)
    flat[0::2] = values
    encoded = dumps(flat)[1:-1].split(_MARK_SEP)
    if len(encoded) != len(values):
        encoded = [dumps(v) for v in values]
    return encoded


def chunk_text(batches, stamps=None, types=None, heads=None) -> str:
    """The NDJSON text (each line ending in a newline) of commit-log
    batches, each given as its decoded payload: [stream, first version,
    first position, recorded_us, id, type, data, metadata, id, ...].

    No Python code runs per event: the data of all events is encoded in
    one call of the C encoder, and their metadata in another
    (:func:`_encode_all`); the pieces of every line -- per batch its stream
    head and commit time, per event its version, position, id, type, data
    and metadata, and the constant text between them -- are laid into one
    list by slice assignments and joined once.  Ids are canonical UUIDs
    (checked), so they need no escaping; types come from a cache (the JSON
    text from the type to the data's key, ``", "type": T, "data": "``).
    """
    stamps = stamps or Stamps()
    types = {} if types is None else types
    heads = {} if heads is None else heads
    datas, metas, ids, tys, pres, tails, vs, ps = [], [], [], [], [], [], [], []
    for b in batches:
        stream, fv, fp, us = b[0], b[1], b[2], b[3]
        n = (len(b) - 4) >> 2
        datas += b[6::4]
        metas += b[7::4]
        ids += b[4::4]
        tys += b[5::4]
        vs += range(fv, fv + n)
        ps += range(fp, fp + n)
        pre = heads.get(stream)
        if pre is None:
            if len(heads) > 65536:
                heads.clear()
            pre = heads[stream] = f'{{"stream": {dumps(stream)}, "version": '
        pres += [pre] * n
        tails += [f', "recorded_at": "{stamps(us)}"}}\n'] * n
    n = len(ids)
    if not n:
        return ""
    if not _plain_ids("".join(ids), n):
        ids = [dumps(i)[1:-1] for i in ids]
    missing = set(tys).difference(types)
    if missing:
        if len(types) + len(missing) > 65536:
            types.clear()
            missing = set(tys)
        for t in missing:
            types[t] = f'", "type": {dumps(t)}, "data": '
    pieces = [', "position": '] * (11 * n)
    pieces[0::11] = pres
    pieces[1::11] = map(str, vs)
    pieces[3::11] = map(str, ps)
    pieces[4::11] = [', "id": "'] * n
    pieces[5::11] = ids
    pieces[6::11] = map(types.__getitem__, tys)
    pieces[7::11] = _encode_all(datas)
    pieces[8::11] = [', "metadata": '] * n
    pieces[9::11] = _encode_all(metas)
    pieces[10::11] = tails
    return "".join(pieces)


def event_text(events, stamps=None, types=None, heads=None) -> str:
    """The NDJSON text of RecordedEvents (each line ending in a newline):
    the same bytes as ``dumps(ev.to_dict())`` each, made by :func:`chunk_text`
    (consecutive events of one batch given as one).  For backends without a fast path of
    their own, and for reads of one stream."""
    to_us = _Micros()
    batches, cur, n = [], None, 0
    for ev in events:
        us = to_us(ev.recorded_at)
        if cur is not None and ev.version == cur[1] + n and ev.position == cur[2] + n \
                and us == cur[3] and ev.stream == cur[0]:
            cur += (ev.id, ev.type, ev.data, ev.metadata)
            n += 1
        else:
            cur = [ev.stream, ev.version, ev.position, us, ev.id, ev.type, ev.data, ev.metadata]
            batches.append(cur)
            n = 1
    return chunk_text(batches, stamps, types, heads)


class _Micros:
    """datetime -> microseconds since the epoch; the events of a batch
    share one datetime object, so the last one is remembered."""

    def __init__(self):
        self.dt = None
        self.us = 0

    def __call__(self, dt) -> int:
        if dt is not self.dt:
            self.dt, self.us = dt, datetime_to_us(dt)
        return self.us


def event_chunks(events, size: int = 1024):
    """``(bytes, count)`` pieces of the NDJSON of RecordedEvents, each line
    ending in a newline (the shape of :meth:`Backend.ndjson_chunks`).  An
    error from ``events`` comes after the piece of the events before it."""
    stamps, types, heads = Stamps(), {}, {}
    buf = []
    try:
        for ev in events:
            buf.append(ev)
            if len(buf) >= size:
                yield event_text(buf, stamps, types, heads).encode("utf-8"), len(buf)
                buf = []
    except Exception:
        # damage met mid-way: the events read before it are printed first,
        # as an event-by-event writer would have printed them
        if buf:
            yield event_text(buf, stamps, types, heads).encode("utf-8"), len(buf)
        raise
    if buf:
        yield event_text(buf, stamps, types, heads).encode("utf-8"), len(buf)


def array_items(data: bytes, first: bool) -> bytes:
    """NDJSON lines (each ending in a newline) as items of a JSON array
    written as ``[\\n`` item ``,\\n`` item ... ``\\n]\\n``: each item preceded
    by ``,\\n``, or ``[\\n`` for the array's first.  Safe because a JSON line
    holds no raw newline (json escapes them inside strings)."""
    return (b"[\n" if first else b",\n") + data[:-1].replace(b"\n", b",\n")
