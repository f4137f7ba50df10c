"""The PostgreSQL backend: one store, many machines.

Why: a file lock serialises writers on one machine only; teams with CI
runners or services on several hosts need one store they all write to,
with the same guarantees.  This package keeps a store in one PostgreSQL
schema; docs/POSTGRES.md explains the schema, how positions stay dense and
in commit order, and what that costs.  Modules: :mod:`.connect` (URLs,
connections, error translation), :mod:`.schema` (tables), :mod:`.writes`
(appends and bulk imports), :mod:`.reads`, :mod:`.documents` (snapshots,
checkpoints, settings), :mod:`.forget` (delete, truncate, retention,
compaction), :mod:`.inspect` (info and verify), :mod:`.watch`
(LISTEN/NOTIFY).
"""
from .backend import PostgresBackend

__all__ = ["PostgresBackend"]
