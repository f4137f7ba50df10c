"""Appending on PostgreSQL: dense positions in commit order, atomically,
in two round trips.

Why it is shaped like this: positions must be dense and become visible in
order across writers on many machines, and a follower that has read up to
P must never later find an event below P.  So every writing transaction
takes, in this order:

1. ``pg_advisory_xact_lock_shared(writers)`` -- shared among appenders; a
   bulk import holds it exclusively for its whole run (several commits),
   as the file backend's bulk writer holds the writer lock;
2. the one ``head`` row ``FOR UPDATE`` -- the writer lock proper.

Everything the rule needs (the stream's version, the stored ids of a
retry) is read *after* the lock, in later statements, so under READ
COMMITTED each sees every commit made before ours; positions are assigned
from ``head`` under that lock, and the lock is released by COMMIT, after
the commit is durable and visible.  The next writer can only then read
``head``: commits are serialised in position order.  The cost: one commit
flush at a time per store (docs/POSTGRES.md, "What dense positions cost").

Round trips (psycopg's pipeline mode sends several statements and waits
once): the first sends BEGIN, the lock timeout, both locks, the stream's
state (with its tombstone, if ``delete --hard`` left one:
:func:`evstore.core.forgetting.check_append` refuses the append before the
rule) and the stored events the retry rule may ask for; Python then applies
:func:`evstore.core.rules.decide` -- the one implementation of the rule --
and the second sends the insert (which also moves ``streams`` and ``head``
and notifies) with COMMIT.  The rule's window depends on the stream's
version, which is only known after the first round trip, so the first
fetches a superset that does not depend on it (:func:`window_query`) and
:func:`rules.retry_window` picks the window out of it.  Without pipeline
support in libpq (< 14) the same statements run one by one.

Why not one round trip: the row checksum (:func:`row_crc`, which ``verify``
recomputes) covers the position and the commit time, both known only
under the ``head`` lock, and PostgreSQL has no CRC-32 of its own; and the
rule would need a second implementation in SQL.  (Sending each round trip
as one simple-protocol message instead of a pipeline, and the insert as
text, was measured against this path and gained nothing: bench/README.md.)

``--lock-timeout`` becomes ``SET LOCAL lock_timeout`` (both waits above),
and ``--no-sync`` ``SET LOCAL synchronous_commit = off``.
"""
from __future__ import annotations

import zlib
from contextlib import contextmanager, nullcontext
from typing import Sequence

from ...core import rules
from ...core.backend import BulkSession
from ...core.forgetting import Cut, check_append
from ...model import AppendResult
from ...errors import InvalidEvent
from .schema import REMOVED_BLOCK, channel, lock_key


BIGINT_MAX = 2**63 - 1  #: versions are bigint; a larger expected version is a conflict


def row_crc(stream: str, version: int, position: int, recorded_us: int, blob: bytes) -> int:
    """The checksum ``verify`` recomputes: the row's place, time and bytes."""
    head = f"{stream}\0{version}\0{position}\0{recorded_us}\0".encode("utf-8")
    return zlib.crc32(blob, zlib.crc32(head))


def _ms(seconds: float) -> int:
    """lock_timeout in ms; 0 would mean "wait forever" to PostgreSQL."""
    return max(1, int(seconds * 1000))


def batched(conn):
    """One round trip for the statements run inside (pipeline mode), or a
    no-op where libpq cannot pipeline."""
    from psycopg import Pipeline
    return conn.pipeline() if Pipeline.is_supported() else nullcontext()


def _begin(conn, q: dict, timeout: float, sync: bool, shared: bool) -> None:
    """BEGIN and take the writer locks (module docstring), inside the
    caller's pipeline.  One statement each: the extended protocol of a
    pipeline takes no multi-statement strings."""
    conn.execute("BEGIN")
    conn.execute(f"SET LOCAL lock_timeout = {_ms(timeout)}")
    if not sync:
        conn.execute("SET LOCAL synchronous_commit = off")
    if shared:
        conn.execute(q["lock_writers"])
    conn.execute(q["lock_head"])


def begin_locked(conn, q: dict, timeout: float, sync: bool, shared: bool = True) -> tuple:
    """BEGIN and take the writer locks in one round trip; returns
    ``(head position, last recorded_us)``."""
    with batched(conn):
        _begin(conn, q, timeout, sync, shared)
        cur = conn.execute(q["head"])
    return cur.fetchone()


def window_query(q: dict, stream: str, expected, count: int) -> tuple[str, tuple]:
    """The stored events to fetch before the stream's version is known: a
    superset of every window :func:`rules.retry_window` can ask for with
    this ``expected`` and ``count`` (tests/backends/test_pg_roundtrips.py
    checks it against the rule).  For a version N: versions N+1..N+count;
    for ``any`` and ``exists``: the stream's last ``count`` events."""
    if isinstance(expected, int):
        if expected >= BIGINT_MAX:  # no version is that high: fetch nothing
            return q["window"], (stream, 1, 0)
        return q["window"], (stream, expected + 1, min(expected + count, BIGINT_MAX))
    return q["last"], (stream, count)


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
        "lock_writers": f"SELECT pg_advisory_xact_lock_shared({lock_key(schema, 'writers')})",
        "lock_head": f"SELECT 1 FROM {s}.head FOR UPDATE",
        "head": f"SELECT position, recorded_us FROM {s}.head",
        # the tombstone rides along: a cut exists only for a stream with a row
        "state": (f"SELECT h.position, h.recorded_us, coalesce(st.version, 0),"
                  f" floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint,"
                  f" coalesce(c.hard, false)"
                  f" FROM {s}.head h LEFT JOIN {s}.streams st ON st.stream = %s"
                  f" LEFT JOIN {s}.cuts c ON c.stream = st.stream"),
        "version": f"SELECT version FROM {s}.streams WHERE stream = %s",
        "window": (f"SELECT id::text, version, position FROM {s}.events"
                   f" WHERE stream = %s AND version BETWEEN %s AND %s ORDER BY version"),
        "last": (f"SELECT id::text, version, position FROM {s}.events"
                 f" WHERE stream = %s ORDER BY version DESC LIMIT %s"),
        "insert": (
            f"WITH e AS (INSERT INTO {s}.events"
            f" (position, stream, version, id, type, recorded_us, body, crc)"
            f" SELECT %(p0)s + t.i - 1, %(stream)s, %(v0)s + t.i - 1, t.id, t.type, %(us)s,"
            f" t.body, t.crc FROM unnest(%(ids)b::uuid[], %(types)b::bytea[],"
            f" %(bodies)b::bytea[], %(crcs)b::bigint[]) WITH ORDINALITY AS t(id, type, body, crc, i)),"
            f" st AS (INSERT INTO {s}.streams VALUES (%(stream)s, %(v1)s, %(us)s, %(us)s)"
            f" ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version,"
            f" last_recorded_us = EXCLUDED.last_recorded_us),"
            f" h AS (UPDATE {s}.head SET position = %(p1)s,"
            f" recorded_us = greatest(recorded_us, %(us)s) RETURNING 1)"
            f" SELECT pg_notify(%(channel)s, %(p1)s::text) FROM h"),
        "channel": channel(schema),
        # removed positions: one bit each, in rows of REMOVED_BLOCK positions
        "add_removed": (
            f"INSERT INTO {s}.removed (block, bits, n) SELECT x.block,"
            f" ('x' || x.hex)::bit({REMOVED_BLOCK}), x.n"
            f" FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS x(block, hex, n)"
            f" ON CONFLICT (block) DO UPDATE SET bits = {s}.removed.bits | EXCLUDED.bits,"
            f" n = {s}.removed.n + EXCLUDED.n"),
        # the forgetting state's generation (forget.py): every change moves it
        "bump_forgetting": f"UPDATE {s}.forgetting SET generation = generation + 1",
        "cut_of": f"SELECT hard FROM {s}.cuts WHERE stream = %s",
        # an import's version gap: the versions below are not readable (the
        # stream's floor), as after a truncate
        "import_floor": (f"INSERT INTO {s}.cuts VALUES (%s, %s, false, 0) ON CONFLICT (stream)"
                         f" DO UPDATE SET floor = greatest({s}.cuts.floor, EXCLUDED.floor)"),
        "add_removed_versions": (
            f"INSERT INTO {s}.removed_versions SELECT * FROM unnest(%s::text[], %s::bigint[])"
            f" ON CONFLICT (stream) DO UPDATE SET"
            f" through = greatest({s}.removed_versions.through, EXCLUDED.through)"),
    }


def runs(positions) -> list[list[int]]:
    """Ascending positions as maximal ``[lo, hi]`` runs."""
    out: list[list[int]] = []
    for p in positions:
        if out and out[-1][1] == p - 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return out


def add_removed(conn, q: dict, spans) -> None:
    """Record the positions of the ``[lo, hi]`` runs in ``spans`` (not
    overlapping, never recorded before) as removed on purpose, inside the
    caller's transaction: the one that deletes their rows (compaction) or
    leaves them empty (an import of a store with gaps).

    Why a bitmap (one bit per position, ``REMOVED_BLOCK`` positions a row,
    OR-ed in by one upsert) rather than runs of positions: removing every
    other stream of a store leaves as many runs as removed events, while
    bits cost at most an eighth of a byte per position the store ever had
    (docs/POSTGRES.md)."""
    blocks: dict[int, list[int]] = {}  # block -> [mask, count]
    for lo, hi in spans:
        p = lo
        while p <= hi:
            block, i = divmod(p - 1, REMOVED_BLOCK)
            j = min(REMOVED_BLOCK - 1, i + hi - p)  # the last bit of this block in the run
            m = blocks.setdefault(block, [0, 0])
            m[0] |= ((1 << (j - i + 1)) - 1) << (REMOVED_BLOCK - 1 - j)  # bit 0 leftmost
            m[1] += j - i + 1
            p += j - i + 1
    if blocks:
        keys = sorted(blocks)
        conn.execute(q["add_removed"], (keys, [format(blocks[k][0], f"0{REMOVED_BLOCK // 4}x")
                                               for k in keys], [blocks[k][1] for k in keys]))


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


def append(conn, q: dict, stream: str, events, expected, timeout: float, sync: bool):
    """One append in two round trips (module docstring); the caller's
    session rolls back on any exception.  Returns ``(AppendResult,
    written, version_before)``."""
    ids = [e.id for e in events]
    sql, params = window_query(q, stream, expected, len(ids))
    with batched(conn):
        _begin(conn, q, timeout, sync, shared=True)
        state = conn.execute(q["state"], (stream,))
        fetched = conn.execute(sql, params)
    head, last_us, current, now_us, hard = state.fetchone()
    rows = fetched.fetchall()
    check_append(Cut(stream, hard=True) if hard else None, stream)
    window = rules.retry_window(expected, current, len(ids))
    stored = []
    if window is not None:
        stored = sorted((rules.Stored(*r) for r in rows if window[0] <= r[1] <= window[1]),
                        key=lambda r: r.version)
    verdict = rules.decide(stream, expected, current, ids, stored)
    if verdict is not None:
        conn.execute("COMMIT")
        return AppendResult(stream, *verdict), False, -1
    us = max(now_us, last_us)
    with batched(conn):
        insert(conn, q, stream, current + 1, head + 1, us, ids, [e.type for e in events],
               [e.blob for e in events])
        conn.execute("COMMIT")
    return AppendResult(stream, current + len(ids), head + len(ids), len(ids)), True, current


class PgBulk(BulkSession):
    """A bulk session on its own connection: the writers' advisory lock
    held exclusively at session level for the whole run, one transaction
    (holding ``head``) between two :meth:`sync` calls."""

    keeps_gaps = True  # removed positions and floors (forget.py)

    def __init__(self, conn, q: dict, timeout: float, sync: bool):
        self._conn, self._q, self._timeout, self._sync = conn, q, timeout, sync
        self._versions: dict[str, int] = {}
        self._checked: set[str] = set()  # streams whose tombstone was looked for
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
        if stream not in self._checked:  # a tombstone refuses imports too
            row = self._conn.execute(self._q["cut_of"], (stream,)).fetchone()
            check_append(Cut(stream, hard=True) if row and row[0] else None, stream)
            self._checked.add(stream)
        current = self.version(stream)
        why = rules.continues(stream, first_version, first_position, recorded_us,
                              current, self._head, self._last_us, gaps=True)
        if why:
            raise InvalidEvent(why)
        from ...core.backend import decode_event
        evs = [decode_event(stream, first_version + i, 0, recorded_us, b)
               for i, b in enumerate(blobs)]
        p0 = self._head + 1 if first_position is None else first_position
        if p0 > self._head + 1:  # events removed in the store exported: keep the gap
            add_removed(self._conn, self._q, [(self._head + 1, p0 - 1)])
        if first_version > current + 1:  # so were versions of its stream
            self._version_gap(stream, first_version)
        insert(self._conn, self._q, stream, first_version, p0, recorded_us,
               [e.id for e in evs], [e.type for e in evs], blobs)
        n = len(blobs)
        self._head = p0 + n - 1
        self._last_us = max(self._last_us, recorded_us)
        self._versions[stream] = first_version + n - 1
        self.unsynced += n
        return AppendResult(stream, first_version + n - 1, self._head, n)

    def _version_gap(self, stream: str, first_version: int) -> None:
        """The stream's versions below ``first_version`` were removed where
        the batch comes from: they are recorded as removed, and its floor
        (a cut, as ``truncate`` makes) hides any of them this store holds,
        as on files -- removed events are always a prefix of their stream."""
        c, q = self._conn, self._q
        c.execute(q["add_removed_versions"], ([stream], [first_version - 1]))
        c.execute(q["import_floor"], (stream, first_version))
        c.execute(q["bump_forgetting"])

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
