"""Helpers for the contract tests that look at a store from outside evstore."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit


def kind_of(location) -> str:
    s = str(location)
    if s.startswith(("postgresql://", "postgres://")):
        return "postgres"
    return "memory" if s.startswith("memory:") else "files"


def store_exists(location) -> bool:
    """Whether anything was created for this store."""
    kind = kind_of(location)
    if kind == "files":
        return Path(location).exists()
    if kind == "memory":
        raise AssertionError("a memory store cannot be inspected from outside")
    import psycopg
    parts = urlsplit(location)
    query = parse_qs(parts.query)
    schema = query.pop("schema", ["evstore"])[0]
    rest = "&".join(f"{k}={quote(v[0], safe='')}" for k, v in query.items())
    url = parts._replace(query=rest).geturl()
    with psycopg.connect(url, connect_timeout=5) as c:
        return c.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                         (schema,)).fetchone() is not None


def fingerprint(location):
    """What must not change when a command is refused: on files every file
    of the store (so no stray file either), elsewhere every event, stream
    and snapshot as the CLI shows them."""
    from cli_helpers import run, tree
    if kind_of(location) == "files":
        return tree(location)
    out = {}
    for args in (["export", "--all"], ["streams"]):
        r = run(location, *args)
        out[" ".join(args)] = (r.returncode, r.stdout)
    return out
