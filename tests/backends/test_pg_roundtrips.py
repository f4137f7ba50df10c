"""The PostgreSQL write path in two round trips, with the rule still decided
once, in Python (evstore.core.rules).

Why these tests: the first round trip fetches the events a retry may match
*before* the stream's version is known, so what it fetches must contain
every window the rule can ask for; and the round-trip count is the point of
the pipelined path, so it is counted on the wire (libpq's protocol trace:
one Sync per pipeline, one Query per simple statement)."""
from __future__ import annotations

import tempfile

import pytest

from evstore.backends.postgres import writes
from evstore.backends import open_backend
from evstore.core.rules import ANY, STREAM_EXISTS, retry_window
from evstore.errors import WrongExpectedVersion

from .helpers import prep

pytestmark = pytest.mark.usefixtures("pg_server")


def test_the_first_round_trip_fetches_every_window_the_rule_can_ask_for(pg_url):
    b = open_backend(pg_url)
    try:
        b.append("other", prep("T"), ANY)  # the tables exist; "s" is empty
        conn = b._conn()
        for current in range(0, 7):
            if current:
                b.append("s", prep("T"), ANY)
            for expected in (ANY, STREAM_EXISTS, *range(0, 9)):
                for count in range(1, 6):
                    sql, params = writes.window_query(b.q, "s", expected, count)
                    got = {r[1] for r in conn.execute(sql, params)}
                    window = retry_window(expected, current, count)
                    need = set() if window is None else set(range(window[0], window[1] + 1))
                    assert need <= got, (expected, current, count)
    finally:
        b.close()


def round_trips(backend, action) -> int:
    """Run ``action`` and count the requests this thread's connection made
    the server answer (Sync of a pipeline or a lone statement; Query)."""
    conn = backend._conn()
    with tempfile.TemporaryFile() as f:
        conn.pgconn.trace(f.fileno())
        conn.pgconn.set_trace_flags(1)  # no timestamps
        try:
            action()
        finally:
            conn.pgconn.untrace()
        f.seek(0)
        lines = f.read().decode("utf-8", "replace").splitlines()
    sent = [ln.split("\t") for ln in lines if "\tF\t" in ln or ln.startswith("F\t")]
    return sum(1 for parts in sent if any(p.strip() in ("Sync", "Query") or
                                          p.startswith("Query") for p in parts))


@pytest.mark.parametrize("expected", [ANY, STREAM_EXISTS, 1])
def test_a_durable_append_takes_two_round_trips(pg_url, expected):
    b = open_backend(pg_url)
    try:
        b.append("a", prep("first"), ANY)  # the schema exists; this handle knows it
        assert round_trips(b, lambda: b.append("a", prep("T", "U"), expected)) == 2
        batch = prep("V")
        b.append("a", batch, ANY)
        # a retry of a stored batch: found in the first, nothing written, COMMIT
        assert round_trips(b, lambda: b.append("a", batch, ANY)) == 2
        assert b.head() == 4
    finally:
        b.close()


def test_a_conflict_after_the_pipelined_read_writes_nothing_and_unlocks(pg_url):
    b = open_backend(pg_url, lock_timeout=0.5)
    try:
        b.append("a", prep("first"), ANY)
        with pytest.raises(WrongExpectedVersion):
            b.append("a", prep("T"), 0)
        assert b._conn().info.transaction_status == 0  # idle: the locks are gone
        b.append("a", prep("U"), 1)  # would time out if head were still locked
        assert [e.type for e in b.read_stream("a")] == ["first", "U"]
    finally:
        b.close()


def test_the_append_statements_are_prepared_once_per_connection(pg_url):
    """psycopg parses and plans a statement on the server once it has seen it
    five times with the same parameter types; ints of varying size (a
    checksum above 2**31, a position above 32767) would change the types."""
    b = open_backend(pg_url)
    try:
        for _ in range(8):
            b.append("a", prep("T"), ANY)
        conn = b._conn()
        with tempfile.TemporaryFile() as f:
            conn.pgconn.trace(f.fileno())
            conn.pgconn.set_trace_flags(1)
            try:
                for _ in range(4):
                    b.append("a", prep("T", "U"), ANY)
                    b.append("a", prep("V"), ANY)
            finally:
                conn.pgconn.untrace()
            f.seek(0)
            parses = [ln for ln in f.read().decode("utf-8", "replace").splitlines()
                      if "\tParse\t" in ln and ("\tF\t" in ln or ln.startswith("F"))]
        assert parses == [] or all("INSERT" not in p for p in parses), parses[:2]
    finally:
        b.close()


@pytest.mark.parametrize("expected", [2**63 - 1, 2**63, 2**70])
def test_an_expected_version_beyond_bigint_is_a_conflict_not_a_driver_error(pg_url, expected):
    b = open_backend(pg_url)
    try:
        b.append("a", prep("first"), ANY)
        with pytest.raises(WrongExpectedVersion):
            b.append("a", prep("T"), expected)
        assert b.head() == 1
    finally:
        b.close()


def test_without_pipeline_support_the_same_statements_run_one_by_one(pg_url, monkeypatch):
    from psycopg import Pipeline
    monkeypatch.setattr(Pipeline, "is_supported", classmethod(lambda cls: False))
    b = open_backend(pg_url, lock_timeout=0.5)
    try:
        batch = prep("T", "U")
        assert b.append("a", batch, 0).written
        assert not b.append("a", batch, 0).written  # the retry is found
        with pytest.raises(WrongExpectedVersion):
            b.append("a", prep("V"), 1)
        assert b.append("a", prep("V"), 2).result.position == 3
        assert round_trips(b, lambda: b.append("a", prep("W"), ANY)) > 2
    finally:
        b.close()


def test_integers_beyond_bigint_still_compare(pg_url):
    """Ints go as bigint for stable prepared statements, but one too large
    for bigint must not turn a plain lookup into a driver error."""
    b = open_backend(pg_url)
    try:
        b.append("a", prep("first"), ANY)
        assert b.get_snapshot("a", 2**70) is None
        assert b.delete_snapshot("a", 2**64) is False
    finally:
        b.close()
