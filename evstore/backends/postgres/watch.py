"""Waking followers on PostgreSQL: LISTEN/NOTIFY plus a catch-up by position.

Why both: a notification only says "something committed" (each append
notifies its last position, delivered at COMMIT); the events themselves
are always read by position from the head, so a notification that is
lost, merged with another or arrives late can delay a follower but never
make it skip an event.  The LISTEN runs on a connection of the watcher's
own, which never runs a query after its LISTEN: queries go through the
backend's thread connection.  (Querying on the connection that psycopg's
``notifies()`` generator is reading from deadlocks; here nothing reads
that connection but :meth:`PgWatcher._drain`, which only consumes input.)

When the listening connection is lost (a server restart), the watcher
falls back to checking the head every ``RETRY`` seconds and listens again
as soon as the server lets it.
"""
from __future__ import annotations

from ...core.backend import Watcher
from .schema import channel

RETRY = 0.25


class PgWatcher(Watcher):
    def __init__(self, backend):
        super().__init__(backend)
        self._listen = None
        self._listen_now()

    def _listen_now(self) -> bool:
        try:
            conn = self.backend.target.connect()
        except Exception:  # noqa: BLE001 - retried on the next wait
            return False
        try:
            from psycopg import sql
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(
                channel(self.backend.target.schema))))
        except Exception:  # noqa: BLE001
            conn.close()
            return False
        self._listen = conn
        return True

    def _fds(self) -> list[int]:
        if self._listen is None and not self._listen_now():
            return []
        return [self._listen.fileno()]

    def _timeout(self, left):
        if self._listen is None:
            return RETRY if left is None else min(left, RETRY)
        return left

    def _drain(self, fd: int) -> None:
        """Consume what the server sent.  Readable without a notification
        means the server spoke for itself, which an idle session only does
        to say it is going away: then a ping decides, so a dead connection
        is dropped instead of waking ``select`` over and over."""
        pg = self._listen.pgconn
        got = 0
        try:
            pg.consume_input()
            while pg.notifies() is not None:
                got += 1
            if not got:
                self._listen.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - the connection is gone: listen again later
            self._drop()

    def _drop(self) -> None:
        conn, self._listen = self._listen, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        self._drop()
        super().close()
