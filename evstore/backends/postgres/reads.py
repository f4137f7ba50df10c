"""Reading on PostgreSQL: pages by key, never a cursor held across a yield.

Why pages: a reader may stop half way, be slow, or interleave writes on the
same thread; a page (``WHERE key > last ORDER BY key LIMIT n``) is one
short autocommit statement, so a reader holds no transaction, no snapshot
and no lock between pages, and memory stays bounded however long the
stream.  Each page is a snapshot of committed rows, and positions become
visible in order (:mod:`.writes`), so a page never shows P+1 without P.

Rows come back in binary (``bytea`` as bytes, no hex round trip) and each
event is one msgpack decode of its stored bytes; a page is decoded by
:func:`evstore.core.backend.decode_rows` (one datetime per commit time).
Packing rows on the server (one ``bytea`` per row or per page) would save
little: the profile of a 100k-event read puts the server and psycopg's
row fetching together at about a fifth of the time; the rest is building
the events in Python.
"""
from __future__ import annotations

from ...core.backend import StreamRow, decode_event, decode_rows
from ...errors import StreamNotFound

PAGE = 1000  #: rows per statement
_COLS = "stream, version, position, recorded_us, body"


def queries(s: str) -> dict:
    return {
        "head": f"SELECT position FROM {s}.head",
        "stream_version": f"SELECT version FROM {s}.streams WHERE stream = %s",
        "by_version": f"SELECT {_COLS} FROM {s}.events WHERE stream = %s AND version BETWEEN %s AND %s",
        "by_position": f"SELECT {_COLS} FROM {s}.events WHERE position BETWEEN %s AND %s",
        "by_id": f"SELECT {_COLS} FROM {s}.events WHERE id = %s::uuid ORDER BY position",
        "streams": (f"SELECT stream, version, first_recorded_us, last_recorded_us"
                    f" FROM {s}.streams WHERE stream > %s"),
    }


def read_stream(backend, stream, lo, hi, backwards, limit, types):
    """See :meth:`evstore.core.backend.Backend.read_stream`."""
    with backend.session("read") as conn:
        row = None
        if backend.tables(conn):
            row = conn.execute(backend.rq["stream_version"], (stream,)).fetchone()
    if not row or not row[0]:
        raise StreamNotFound(stream)
    hi = row[0] if hi is None else min(hi, row[0])
    return _pages(backend, backend.rq["by_version"], (stream,), "version", 1,
                  max(lo, 1), hi, backwards, limit, types, None)


def read_all(backend, lo, hi, backwards, limit, types, prefix):
    """See :meth:`evstore.core.backend.Backend.read_all`."""
    head = backend.head()
    hi = head if hi is None else min(hi, head)
    return _pages(backend, backend.rq["by_position"], (), "position", 2,
                  max(lo, 1), hi, backwards, limit, types, prefix)


def _pages(backend, base, params, key, col, lo, hi, backwards, limit, types, prefix):
    filters, extra = "", []
    if types:
        filters += " AND type = ANY(%s::bytea[])"
        extra.append([t.encode("utf-8") for t in types])
    if prefix is not None:
        filters += " AND starts_with(stream, %s)"
        extra.append(prefix)
    sql = f"{base}{filters} ORDER BY {key} {'DESC' if backwards else 'ASC'} LIMIT %s"
    n = 0
    while lo <= hi and (limit is None or n < limit):
        size = PAGE if limit is None else min(PAGE, limit - n)
        with backend.session("read") as conn:
            rows = conn.execute(sql, (*params, lo, hi, *extra, size), binary=True).fetchall()
        yield from decode_rows(rows)
        n += len(rows)
        if len(rows) < size:
            return
        if backwards:
            hi = rows[-1][col] - 1
        else:
            lo = rows[-1][col] + 1


def find(backend, event_id: str, accept=None):
    """The first event by position with this id that ``accept`` accepts
    (ids are unique within a batch only: a few rows at most, by the index)."""
    with backend.session("read") as conn:
        if not backend.tables(conn):
            return None
        rows = conn.execute(backend.rq["by_id"], (event_id,), binary=True).fetchall()
    for row in rows:
        ev = decode_event(*row)
        if accept is None or accept(ev):
            return ev
    return None


def streams(backend, prefix):
    """Stream rows by id, a page at a time (the catalogue may be large)."""
    with backend.session("read") as conn:
        if not backend.tables(conn):
            return
    sql = backend.rq["streams"]
    params: tuple = ()
    if prefix is not None:
        sql += " AND starts_with(stream, %s)"
        params = (prefix,)
    sql += " ORDER BY stream LIMIT %s"
    last = ""
    while True:
        with backend.session("read") as conn:
            rows = conn.execute(sql, (last, *params, PAGE)).fetchall()
        for r in rows:
            yield StreamRow(*r)
        if len(rows) < PAGE:
            return
        last = rows[-1][0]
