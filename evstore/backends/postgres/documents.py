"""Snapshots, checkpoints and settings on PostgreSQL: rows, not files.

Why rows: each is a small document replaced whole, which a single-row
upsert does atomically (a reader sees the old row or the new one).  A
checkpoint name has one consumer at a time across every machine: a
*session* advisory lock on a connection of the holder's own, which the
server releases when that connection ends -- so a killed consumer never
blocks its restart, as the kernel's flock does on files.
"""
from __future__ import annotations

import json
from contextlib import contextmanager

from ...core.backend import CheckpointRow, ConsumerBusy, merge_settings
from .schema import lock_key
from .writes import _ms


def put_snapshot(b, stream: str, version: int, body: bytes) -> None:
    with b.session("save a snapshot") as conn:
        b.ensure(conn)
        conn.execute(f"INSERT INTO {b.ident}.snapshots VALUES (%s, %s, %s)"
                     " ON CONFLICT (stream, version) DO UPDATE SET body = EXCLUDED.body",
                     (stream, version, bytes(body)))


def get_snapshot(b, stream: str, version: int) -> bytes | None:
    with b.session("read a snapshot") as conn:
        if not b.tables(conn):
            return None
        row = conn.execute(f"SELECT body FROM {b.ident}.snapshots"
                           " WHERE stream = %s AND version = %s", (stream, version),
                           binary=True).fetchone()
    return bytes(row[0]) if row else None


def snapshot_versions(b, stream: str) -> list[int]:
    with b.session("list snapshots") as conn:
        if not b.tables(conn):
            return []
        return [r[0] for r in conn.execute(
            f"SELECT version FROM {b.ident}.snapshots WHERE stream = %s ORDER BY version",
            (stream,))]


def delete_snapshot(b, stream: str, version: int) -> bool:
    with b.session("delete a snapshot") as conn:
        if not b.tables(conn):
            return False
        cur = conn.execute(f"DELETE FROM {b.ident}.snapshots WHERE stream = %s AND version = %s",
                           (stream, version))
        return cur.rowcount > 0


_CP = "name, position, stream, updated_at"


def get_checkpoint(b, name: str) -> CheckpointRow | None:
    with b.session("read a checkpoint") as conn:
        if not b.tables(conn):
            return None
        row = conn.execute(f"SELECT {_CP} FROM {b.ident}.checkpoints WHERE name = %s",
                           (name,)).fetchone()
    return CheckpointRow(*row) if row else None


def put_checkpoint(b, row: CheckpointRow) -> None:
    with b.session("save a checkpoint") as conn:
        b.ensure(conn)
        conn.execute(f"INSERT INTO {b.ident}.checkpoints ({_CP}) VALUES (%s, %s, %s, %s)"
                     " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position,"
                     " stream = EXCLUDED.stream, updated_at = EXCLUDED.updated_at",
                     (row.name, row.position, row.stream, row.updated_at))


def delete_checkpoint(b, name: str) -> bool:
    with b.session("delete a checkpoint") as conn:
        if not b.tables(conn):
            return False
        cur = conn.execute(f"DELETE FROM {b.ident}.checkpoints WHERE name = %s", (name,))
        return cur.rowcount > 0


def checkpoints(b) -> list[CheckpointRow]:
    with b.session("list checkpoints") as conn:
        if not b.tables(conn):
            return []
        rows = conn.execute(f"SELECT {_CP} FROM {b.ident}.checkpoints ORDER BY name").fetchall()
    return [CheckpointRow(*r) for r in rows]


@contextmanager
def hold_checkpoint(b, name: str):
    """The single-consumer hold (module docstring)."""
    conn = b.target.connect()
    try:
        with b.target.translating("hold a checkpoint"):
            ok = conn.execute("SELECT pg_try_advisory_lock(%s)",
                              (lock_key(b.target.schema, "checkpoint\0" + name),)).fetchone()[0]
        if not ok:
            raise ConsumerBusy(name)
        yield
    finally:
        conn.close()  # ends the session, and with it the advisory lock


def settings(b) -> dict:
    with b.session("read the settings") as conn:
        if not b.tables(conn):
            return {}
        row = conn.execute(f"SELECT body FROM {b.ident}.settings").fetchone()
    return json.loads(row[0]) if row else {}


def update_settings(b, changes: dict) -> dict:
    """Read, merge and write under an advisory lock, so two changes at once
    cannot lose one another."""
    t = b.lock_timeout
    with b.session("change the settings", t) as conn:
        b.ensure(conn)
        conn.execute(f"BEGIN; SET LOCAL lock_timeout = {_ms(t)}")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(b.target.schema, "settings"),))
        row = conn.execute(f"SELECT body FROM {b.ident}.settings").fetchone()
        new = merge_settings(json.loads(row[0]) if row else {}, changes)
        conn.execute(f"INSERT INTO {b.ident}.settings VALUES (true, %s)"
                     " ON CONFLICT (one) DO UPDATE SET body = EXCLUDED.body",
                     (json.dumps(new, ensure_ascii=False),))
        conn.execute("COMMIT")
    return new
