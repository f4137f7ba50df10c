"""PostgresBackend: the Backend interface over psycopg connections.

Why per-thread connections: a Backend serves every thread of a process, a
psycopg connection runs one statement at a time, and no read keeps a
transaction open across a ``yield`` (reads page by key), so each thread
simply owns one autocommit connection, made on first use and remade after
a lost connection.  Writes open their transaction explicitly (see
:mod:`.writes`); bulk imports, checkpoint holds and watchers take
connections of their own, because they hold something (a lock, a LISTEN)
for longer than one call.

Tables are created by the first write, never by a read: reading a store
whose schema does not exist reads as empty, and ``create=False`` (every
command that only reads) is StoreNotFound, exit 4.
"""
from __future__ import annotations

import select
import threading
from contextlib import contextmanager
from typing import Sequence

from ...core.backend import Appended, Backend, CheckpointRow, Prepared
from ...errors import StoreNotFound
from . import documents, forget, inspect, reads, schema, writes
from .connect import Target, driver


def _alive(conn) -> bool:
    """Whether an idle connection may still have its server, without a
    round trip.  The socket of an idle connection that LISTENs to nothing
    becomes readable only when the server speaks on its own -- in practice
    to say it is going away (a restart, a terminated session) -- or closes
    it; either way a new connection is the answer.  Checked before each use,
    so the first statement after a server restart does not fail on a
    connection that died in the meantime."""
    if conn.closed or conn.broken:
        return False
    try:
        ready, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return not ready


class PostgresBackend(Backend):
    kind = "postgresql"

    def __init__(self, url: str, *, create: bool = True, lock_timeout: float = 30.0,
                 sync: bool = True):
        driver()  # UsageError naming the extra when psycopg is missing
        self.target = Target(url)
        self.location = str(self.target)
        self.lock_timeout = lock_timeout
        self.sync = sync
        self._local = threading.local()
        self._conns: list = []
        self._conns_lock = threading.Lock()
        self._ready = False     # the store exists
        self._current = False   # ... with every table of this version (schema.NEWEST)
        self._forget_cache = None  # (generation, cuts, rules): see forget.cached
        from psycopg import sql
        with self.session("open") as conn:
            self.ident = sql.Identifier(self.target.schema).as_string(conn)
            if not create and not self.tables(conn):
                raise StoreNotFound(self.target)
        self.q = writes.queries(self.ident, self.target.schema)
        self.rq = reads.queries(self.ident)
        self.fq = forget.queries(self.ident)

    # -- connections ------------------------------------------------------------------
    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None and not _alive(conn):
            conn.close()
            conn = None
        if conn is None or conn.closed or conn.broken:
            conn = self.target.connect()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def session(self, what: str, timeout: float | None = None):
        """This thread's connection, with driver errors translated; a
        failed transaction is rolled back, a broken connection dropped."""
        conn = self._conn()
        with self.target.translating(what, timeout):
            try:
                yield conn
            except BaseException:
                writes.rollback(conn)
                if conn.closed or conn.broken:
                    self._local.conn = None
                raise

    def tables(self, conn) -> bool:
        """Whether the store's tables exist (remembered once seen)."""
        if not self._ready:
            self._state(conn)
        return self._ready

    def current(self, conn) -> bool:
        """Whether the store has every table of this version, forgetting's
        included (remembered once seen).  A store made by an earlier version
        gets them on its next write (:meth:`ensure`); until then, reads find
        nothing removed, as that version left it."""
        if not self._current:
            self._state(conn)
        return self._current

    def _state(self, conn) -> None:
        st = schema.state(conn, self.target.schema)
        self._ready, self._current = st > 0, st == 2

    def ensure(self, conn) -> None:
        """Create the store on the first write, or upgrade one made by an
        earlier version (one query on a handle's first write, then nothing)."""
        if not self.current(conn):
            schema.create(conn, self.target.schema)
            self._ready = self._current = True

    # -- writing ------------------------------------------------------------------------
    def append(self, stream: str, events: Sequence[Prepared], expected) -> Appended:
        t = self.lock_timeout
        with self.session("append", t) as conn:
            self.ensure(conn)
            result, written, before = writes.append(conn, self.q, stream, events, expected,
                                                    t, self.sync)
            self._after_commit(conn)
        return Appended(result, written, before)

    def _after_commit(self, conn) -> None:
        """Nothing; the fault tests replace it to lose the connection
        between COMMIT and the acknowledgement."""

    def bulk(self, timeout: float | None = None):
        t = self.lock_timeout if timeout is None else timeout
        with self.session("bulk write", t) as conn:
            self.ensure(conn)
        return writes.bulk_session(self.target, self.q, t, self.sync)

    # -- reading --------------------------------------------------------------------------
    def exists(self) -> bool:
        with self.session("open") as conn:
            return self.tables(conn)

    def head(self) -> int:
        with self.session("read") as conn:
            if not self.tables(conn):
                return 0
            return conn.execute(self.rq["head"]).fetchone()[0]

    def version(self, stream: str) -> int:
        with self.session("read") as conn:
            if not self.tables(conn):
                return 0
            row = conn.execute(self.q["version"], (stream,)).fetchone()
            return row[0] if row else 0

    def read_stream(self, stream, lo=1, hi=None, backwards=False, limit=None, types=None):
        return reads.read_stream(self, stream, lo, hi, backwards, limit, types)

    def read_all(self, lo=1, hi=None, backwards=False, limit=None, types=None, prefix=None):
        return reads.read_all(self, lo, hi, backwards, limit, types, prefix)

    def find(self, event_id: str, accept=None):
        return reads.find(self, event_id, accept)

    def streams(self, prefix=None):
        return reads.streams(self, prefix)

    def watcher(self):
        from .watch import PgWatcher
        return PgWatcher(self)

    # -- small documents --------------------------------------------------------------------
    def put_snapshot(self, stream, version, body):
        documents.put_snapshot(self, stream, version, body)

    def get_snapshot(self, stream, version):
        return documents.get_snapshot(self, stream, version)

    def snapshot_versions(self, stream):
        return documents.snapshot_versions(self, stream)

    def delete_snapshot(self, stream, version):
        return documents.delete_snapshot(self, stream, version)

    def get_checkpoint(self, name):
        return documents.get_checkpoint(self, name)

    def put_checkpoint(self, row: CheckpointRow):
        documents.put_checkpoint(self, row)

    def delete_checkpoint(self, name):
        return documents.delete_checkpoint(self, name)

    def checkpoints(self):
        return documents.checkpoints(self)

    def hold_checkpoint(self, name):
        return documents.hold_checkpoint(self, name)

    def settings(self):
        return documents.settings(self)

    def update_settings(self, changes):
        return documents.update_settings(self, changes)

    # -- forgetting (evstore/core/forgetting.py holds the rules; forget.py the SQL) -------
    def cut(self, stream, expected, before, hard):
        return forget.cut(self, stream, expected, before, hard)

    def cuts(self):
        return forget.cached(self)[1]

    def retention_rules(self):
        return list(forget.cached(self)[2])

    def forgetting_state(self):
        """``(cuts(), retention_rules())`` from one query: what a reader's
        view needs, at the one-query-per-read price."""
        _gen, cuts, rules = forget.cached(self)
        return cuts, list(rules)

    def set_retention(self, rule):
        forget.set_retention(self, rule)

    def compact(self, view, dry_run=False, progress=None):
        return forget.compact(self, view, dry_run, progress)

    # -- whole store ------------------------------------------------------------------------
    def stats(self) -> dict:
        return inspect.stats(self)

    def verify(self) -> list[dict]:
        return inspect.verify(self)

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._local = threading.local()
