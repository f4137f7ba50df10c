"""Appending on PostgreSQL: dense positions in commit order, atomically.

Why it is shaped like this: positions must be dense and become visible in
order across writers on many machines, and a follower that has read up to
P must never later find an event below P.  So every writing transaction
begins with one round trip that takes, in this order:

1. ``pg_advisory_xact_lock_shared(writers)`` -- shared among appenders; a
   bulk import holds it exclusively for its whole run (several commits),
   as the file backend's bulk writer holds the writer lock;
2. the one ``head`` row ``FOR UPDATE`` -- the writer lock proper.

Everything the rule needs (the stream's version, the stored ids of a
retry) is read *after* the lock, in a new statement, so under READ
COMMITTED it sees every commit made before ours; positions are assigned
from ``head`` under that lock, and the lock is released by COMMIT, after
the commit is durable and visible.  The next writer can only then read
``head``: commits are serialised in position order.  The cost: one commit
flush at a time per store (docs/POSTGRES.md, "What dense positions cost").

``--lock-timeout`` becomes ``SET LOCAL lock_timeout`` (both waits above),
and ``--no-sync`` ``SET LOCAL synchronous_commit = off``.
"""
from __future__ import annotations

import zlib
from contextlib import contextmanager
from typing import Sequence

from ...core import rules
from ...core.backend import BulkSession
from ...disk.records import AppendResult
from ...errors import InvalidEvent
from .schema import channel, lock_key


def row_crc(stream: str, version: int, position: int, recorded_us: int, blob: bytes) -> int:
    """The checksum ``verify`` recomputes: the row's place, time and bytes."""
    head = f"{stream}\0{version}\0{position}\0{recorded_us}\0".encode("utf-8")
    return zlib.crc32(blob, zlib.crc32(head))


def _ms(seconds: float) -> int:
    """lock_timeout in ms; 0 would mean "wait forever" to PostgreSQL."""
    return max(1, int(seconds * 1000))


def begin_locked(conn, q: dict, timeout: float, sync: bool, shared: bool = True) -> tuple:
    """BEGIN and take the writer locks (module docstring); returns
    ``(head position, last recorded_us)``."""
    sets = f"SET LOCAL lock_timeout = {_ms(timeout)};"
    if not sync:
        sets += " SET LOCAL synchronous_commit = off;"
    lock = f" SELECT pg_advisory_xact_lock_shared({q['writers']});" if shared else ""
    conn.execute(f"BEGIN; {sets}{lock}")
    return conn.execute(q["lock_head"]).fetchone()


def rollback(conn) -> None:
    """Roll back whatever is open, if the connection still lives."""
    try:
        if not conn.closed and conn.info.transaction_status != 0:  # 0: idle
            conn.execute("ROLLBACK")
    except Exception:  # noqa: BLE001 - the error being raised matters more
        pass


def queries(ident: str, schema: str) -> dict:
    """The SQL of the write path, with the schema's identifier filled in."""
    s = ident
    return {
        "writers": lock_key(schema, "writers"),
        "lock_head": f"SELECT position, recorded_us FROM {s}.head FOR UPDATE",
        "state": (f"SELECT h.position, h.recorded_us, coalesce(st.version, 0),"
                  f" floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
                  f" FROM {s}.head h LEFT JOIN {s}.streams st ON st.stream = %s"),
        "version": f"SELECT version FROM {s}.streams WHERE stream = %s",
        "window": (f"SELECT id::text, version, position FROM {s}.events"
                   f" WHERE stream = %s AND version BETWEEN %s AND %s ORDER BY version"),
        "insert": (
            f"WITH e AS (INSERT INTO {s}.events"
            f" (position, stream, version, id, type, recorded_us, body, crc)"
            f" SELECT %(p0)s + t.i - 1, %(stream)s, %(v0)s + t.i - 1, t.id, t.type, %(us)s,"
            f" t.body, t.crc FROM unnest(%(ids)s::uuid[], %(types)s::bytea[],"
            f" %(bodies)s::bytea[], %(crcs)s::bigint[]) WITH ORDINALITY AS t(id, type, body, crc, i)),"
            f" st AS (INSERT INTO {s}.streams VALUES (%(stream)s, %(v1)s, %(us)s, %(us)s)"
            f" ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version,"
            f" last_recorded_us = EXCLUDED.last_recorded_us),"
            f" h AS (UPDATE {s}.head SET position = %(p1)s,"
            f" recorded_us = greatest(recorded_us, %(us)s) RETURNING 1)"
            f" SELECT pg_notify(%(channel)s, %(p1)s::text) FROM h"),
        "channel": channel(schema),
    }


def insert(conn, q: dict, stream: str, first_version: int, first_position: int,
           us: int, ids: Sequence[str], types: Sequence[str], blobs: Sequence[bytes]) -> None:
    """Write one checked batch inside the caller's locked transaction."""
    n = len(blobs)
    conn.execute(q["insert"], {
        "p0": first_position, "p1": first_position + n - 1,
        "v0": first_version, "v1": first_version + n - 1,
        "stream": stream, "us": us, "channel": q["channel"],
        "ids": list(ids), "types": [t.encode("utf-8") for t in types],
        "bodies": [bytes(b) for b in blobs],
        "crcs": [row_crc(stream, first_version + i, first_position + i, us, bytes(b))
                 for i, b in enumerate(blobs)],
    })


def append_locked(conn, q: dict, stream: str, events, expected):
    """The body of an append, between :func:`begin_locked` and COMMIT.
    Returns ``(AppendResult, written, version_before)``."""
    head, last_us, current, now_us = conn.execute(q["state"], (stream,)).fetchone()
    window = rules.retry_window(expected, current, len(events))
    stored = []
    if window is not None:
        stored = [rules.Stored(*r) for r in conn.execute(q["window"], (stream, *window))]
    ids = [e.id for e in events]
    verdict = rules.decide(stream, expected, current, ids, stored)
    if verdict is not None:
        return AppendResult(stream, *verdict), False, -1
    us = max(now_us, last_us)
    insert(conn, q, stream, current + 1, head + 1, us, ids, [e.type for e in events],
           [e.blob for e in events])
    return AppendResult(stream, current + len(events), head + len(events), len(events)), True, current


class PgBulk(BulkSession):
    """A bulk session on its own connection: the writers' advisory lock
    held exclusively at session level for the whole run, one transaction
    (holding ``head``) between two :meth:`sync` calls."""

    def __init__(self, conn, q: dict, timeout: float, sync: bool):
        self._conn, self._q, self._timeout, self._sync = conn, q, timeout, sync
        self._versions: dict[str, int] = {}
        self._head = self._last_us = 0
        self.unsynced = 0
        self._begin()

    def _begin(self) -> None:
        self._head, self._last_us = begin_locked(self._conn, self._q, self._timeout,
                                                 self._sync, shared=False)

    @property
    def head(self) -> int:
        return self._head

    def version(self, stream: str) -> int:
        v = self._versions.get(stream)
        if v is None:
            row = self._conn.execute(self._q["version"], (stream,)).fetchone()
            v = self._versions[stream] = row[0] if row else 0
        return v

    def write(self, stream, first_version, first_position, recorded_us, blobs):
        why = rules.continues(stream, first_version, first_position, recorded_us,
                              self.version(stream), self._head, self._last_us)
        if why:
            raise InvalidEvent(why)
        from ...core.backend import decode_event
        evs = [decode_event(stream, first_version + i, 0, recorded_us, b)
               for i, b in enumerate(blobs)]
        insert(self._conn, self._q, stream, first_version, self._head + 1, recorded_us,
               [e.id for e in evs], [e.type for e in evs], blobs)
        n = len(blobs)
        self._head += n
        self._last_us = max(self._last_us, recorded_us)
        self._versions[stream] = first_version + n - 1
        self.unsynced += n
        return AppendResult(stream, first_version + n - 1, self._head, n)

    def sync(self) -> None:
        self._conn.execute("COMMIT")
        self.unsynced = 0
        self._begin()

    def end(self) -> None:
        if self._conn.info.transaction_status != 0:
            self._conn.execute("COMMIT")


@contextmanager
def bulk_session(target, q: dict, timeout: float, sync: bool):
    """Run a :class:`PgBulk` on a connection of its own (see writes docs)."""
    conn = target.connect()
    try:
        with target.translating("bulk write", timeout):
            conn.execute(f"SET lock_timeout = {_ms(timeout)}")
            conn.execute("SELECT pg_advisory_lock(%s)", (q["writers"],))
            session = PgBulk(conn, q, timeout, sync)
        try:
            yield session
        finally:
            with target.translating("bulk write", timeout):
                session.end()
    except BaseException:
        rollback(conn)
        raise
    finally:
        conn.close()  # also releases the session's advisory lock
