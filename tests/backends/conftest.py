"""Fixtures for the backend tests: a fresh store of each kind per test.

``backend`` is parametrized over every backend kind in ``KINDS``; each test
gets a new, empty store (a new memory store, or a new schema on the one
throwaway PostgreSQL server of the session).  ``open_same`` opens a second
handle on the same store, as a second process would.  The session's server
and ``pg_url`` come from tests/conftest.py (the contract suite uses them
too).

The file backend joins ``KINDS`` when it moves behind the seam: add
``"files"`` and a branch in ``_make`` that opens ``tmp_path / "store"``.
"""
from __future__ import annotations

import itertools
import os

import pytest


KINDS = ["memory", "postgres"]
_counter = itertools.count(1)


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
        from evstore.backends import open_backend
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
