"""Fixtures for the backend tests: a fresh store of each kind per test.

``backend`` is parametrized over every backend kind in ``KINDS``; each test
gets a new, empty store (a new memory store, or a new schema on the one
throwaway PostgreSQL server of the session).  ``open_same`` opens a second
handle on the same store, as a second process would.

The file backend joins ``KINDS`` when it moves behind the seam: add
``"files"`` and a branch in ``_make`` that opens ``tmp_path / "store"``.
"""
from __future__ import annotations

import itertools
import os

import pytest

from pg_server import REQUIRE, PgServer, PgUnavailable

KINDS = ["memory", "postgres"]
_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL server (skipped, or failed under
    EVSTORE_REQUIRE_PG=1, when there is none)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install 'evstore[postgres]'")
    server = PgServer()
    try:
        server.start()
    except PgUnavailable as e:
        server.cleanup()
        _unavailable(str(e))
    yield server
    server.cleanup()


def _unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"EVSTORE_REQUIRE_PG=1 but {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


@pytest.fixture
def pg_url(pg_server):
    """A URL naming a fresh schema (dropped after the test)."""
    schema = f"t{os.getpid()}_{next(_counter)}"
    url = pg_server.url_for(schema)
    yield url
    import psycopg
    try:
        with psycopg.connect(pg_server.url, autocommit=True, connect_timeout=5) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except psycopg.Error:
        pass  # a test that stopped the server; the cluster goes away anyway


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def open_same(kind, request):
    """``open_same(**kw)`` -> a new handle on this test's store."""
    handles = []
    if kind == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"memory:test-{os.getpid()}-{next(_counter)}"

    def make(**kw):
        from evstore.core.backend import open_backend
        b = open_backend(url, **kw)
        handles.append(b)
        return b

    make.url = url
    yield make
    for b in handles:
        b.close()


@pytest.fixture
def backend(open_same):
    return open_same()
