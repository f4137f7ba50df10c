"""The tables of one store, and creating them on the first write.

One PostgreSQL schema per store (``?schema=NAME``, default ``evstore``), so
one database holds any number of stores.  docs/POSTGRES.md explains every
column; the decisions that matter:

- ``head`` is one row: the last position and the last commit time.  Every
  append locks it (``FOR UPDATE``) before it reads anything, assigns
  positions under that lock and keeps it until COMMIT, so commit order is
  position order and positions are dense.  No sequence: a sequence hands
  out numbers outside the transaction, so rollbacks leave holes and
  commits land out of order, and a follower reading "after position P"
  would skip an event that commits late.
- ``events.body`` is the event's packed bytes (the file backend's bytes),
  never jsonb, which reorders keys and drops duplicates: JSON comes back
  exactly as written.  ``type`` is kept beside it as UTF-8 ``bytea`` for
  server-side type filters (``text`` cannot hold every string a type may
  be); ``crc`` covers the row for ``verify``.
- stream ids and names are ``text COLLATE "C"``: byte order of UTF-8 is
  code-point order, which is how Python sorts them on every backend.
- Created in one transaction under an advisory lock, so two first writers
  on two machines do not race each other's ``CREATE``.
"""
from __future__ import annotations

import hashlib

from ...core.backend import BACKEND_FORMAT

TABLES = ("head", "events", "streams", "snapshots", "checkpoints", "settings")

DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.head (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    position bigint NOT NULL,
    recorded_us bigint NOT NULL,
    format_version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.events (
    position bigint PRIMARY KEY,
    stream text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    id uuid NOT NULL,
    type bytea NOT NULL,
    recorded_us bigint NOT NULL,
    body bytea NOT NULL,
    crc bigint NOT NULL,
    UNIQUE (stream, version)
);
CREATE INDEX IF NOT EXISTS events_id ON {s}.events (id);
CREATE TABLE IF NOT EXISTS {s}.streams (
    stream text COLLATE "C" PRIMARY KEY,
    version bigint NOT NULL,
    first_recorded_us bigint NOT NULL,
    last_recorded_us bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.snapshots (
    stream text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (stream, version)
);
CREATE TABLE IF NOT EXISTS {s}.checkpoints (
    name text COLLATE "C" PRIMARY KEY,
    position bigint NOT NULL,
    stream text COLLATE "C",
    updated_at text NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.settings (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    body text NOT NULL
);
INSERT INTO {s}.head VALUES (true, 0, 0, {fmt}) ON CONFLICT DO NOTHING;
"""


def lock_key(schema: str, purpose: str) -> int:
    """A signed 64-bit advisory-lock key for (schema, purpose): advisory
    locks are database-wide, so the schema is part of the key."""
    digest = hashlib.sha256(f"evstore\0{schema}\0{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a store (an identifier under 64 bytes)."""
    return "evstore_" + hashlib.sha256(schema.encode()).hexdigest()[:24]


def exists(conn, schema: str) -> bool:
    row = conn.execute("SELECT to_regclass(format('%%I.head', %s::text)) IS NOT NULL",
                       (schema,)).fetchone()
    return bool(row[0])


def create(conn, schema: str) -> None:
    """Create the store's schema and tables (idempotent, concurrency-safe)."""
    from psycopg import sql

    ident = sql.Identifier(schema).as_string(conn)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema, "create"),))
        conn.execute(DDL.format(s=ident, fmt=BACKEND_FORMAT))
