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
- Forgetting (docs/POSTGRES.md, "Forgetting") adds five tables: ``cuts``
  (what delete and truncate removed, per stream), ``retention`` (the
  rules), ``forgetting`` (one row: a generation number that every change of
  those two tables increments, so readers revalidate their cached copy with
  one primary-key lookup; its row lock also serialises those changes with
  compaction) and ``removed`` (a bitmap of the positions whose events were
  removed on purpose, :func:`.writes.add_removed`) and ``removed_versions`` (per stream, the last
  version removed: removed events are a prefix of their stream), both
  written in the transaction that removes the rows, so ``verify`` tells
  removed events from real damage, to the stream.  A schema made before them is
  upgraded by the first write that finds them missing: the DDL is all
  ``IF NOT EXISTS``, so creating and upgrading are the same statement.
"""
from __future__ import annotations

import hashlib

from ...core.backend import BACKEND_FORMAT

REMOVED_BLOCK = 1024  #: positions per row of the ``removed`` bitmap

TABLES = ("head", "events", "streams", "snapshots", "checkpoints", "settings",
          "cuts", "retention", "forgetting", "removed", "removed_versions")
#: the table whose presence says the schema has every table above (made last)
NEWEST = "removed_versions"

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
CREATE TABLE IF NOT EXISTS {s}.cuts (
    stream text COLLATE "C" PRIMARY KEY,
    floor bigint NOT NULL,
    hard boolean NOT NULL,
    deleted bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.retention (
    target text COLLATE "C" NOT NULL,
    prefix boolean NOT NULL,
    max_age_us bigint,
    max_count bigint,
    PRIMARY KEY (target, prefix)
);
CREATE TABLE IF NOT EXISTS {s}.forgetting (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    generation bigint NOT NULL
);
INSERT INTO {s}.forgetting VALUES (true, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS {s}.removed (
    block bigint PRIMARY KEY,
    bits bit({block}) NOT NULL,
    n bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.removed_versions (
    stream text COLLATE "C" PRIMARY KEY,
    through bigint NOT NULL
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


def state(conn, schema: str) -> int:
    """0: no store; 1: a store made before the newest tables (a write
    upgrades it); 2: every table exists."""
    row = conn.execute("SELECT to_regclass(format('%%I.head', %s::text)) IS NOT NULL,"
                       f" to_regclass(format('%%I.{NEWEST}', %s::text)) IS NOT NULL",
                       (schema, schema)).fetchone()
    return 2 if row[1] else 1 if row[0] else 0


def exists(conn, schema: str) -> bool:
    return state(conn, schema) > 0


def create(conn, schema: str) -> None:
    """Create the store's schema and tables, or add the tables a schema
    made by an earlier version lacks (idempotent, concurrency-safe)."""
    from psycopg import sql

    ident = sql.Identifier(schema).as_string(conn)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema, "create"),))
        conn.execute(DDL.format(s=ident, fmt=BACKEND_FORMAT, block=REMOVED_BLOCK))
