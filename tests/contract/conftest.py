"""One fixture, a fresh store of every kind: the contract suite's only way in.

Every test under tests/contract/ uses only the library's public API and the
CLI, so the same test holds every backend to the same behaviour:

- ``location`` (library tests): ``files`` (a directory that does not exist
  yet), ``postgres`` (a URL naming a fresh ``schema=`` on the session's
  throwaway server, see tests/pg_server.py) and ``memory`` (``memory:NAME``).
- ``store_dir`` (CLI tests; it replaces tests/conftest.py's fixture of that
  name, so ``cli`` and ``cli_helpers.run`` use it): ``files`` and
  ``postgres`` only -- a memory store does not outlive the process, and each
  CLI run is a process.  For ``files`` it is a ``Path``, for ``postgres`` the
  URL, as a string.

``helpers.store_exists(location)`` says whether a store was created, without asking
evstore (the tests of "a read creates nothing" must not trust the code they
check): the directory, or the schema in the catalogue.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

KINDS = ["files", "postgres", "memory"]
CLI_KINDS = ["files", "postgres"]
_names = itertools.count(1)


def make_location(kind: str, request, tmp_path: Path):
    """A store of ``kind`` that does not exist yet (a new one each call)."""
    if kind == "files":
        return tmp_path / f"store{next(_names)}"
    if kind == "postgres":
        return fresh_schema(request)
    return f"memory:contract-{os.getpid()}-{next(_names)}"


def fresh_schema(request) -> str:
    """A URL naming a new schema on the session's server, dropped when
    ``request``'s scope ends."""
    server = request.getfixturevalue("pg_server")
    schema = f"c{os.getpid()}_{next(_names)}"

    def drop():
        import psycopg
        try:
            with psycopg.connect(server.url, autocommit=True, connect_timeout=5) as c:
                c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except psycopg.Error:
            pass  # a test that stopped the server; the cluster goes away anyway

    request.addfinalizer(drop)
    return server.url_for(schema)


@pytest.fixture(params=KINDS)
def location(request, tmp_path):
    """A fresh store of each kind, for library tests (a str or a Path)."""
    return make_location(request.param, request, tmp_path)


@pytest.fixture(params=CLI_KINDS)
def store_dir(request, tmp_path):
    """A fresh store of each kind a CLI process can reach."""
    return make_location(request.param, request, tmp_path)


def module_store(request, tmp_path_factory):
    """A fresh store of ``request.param``'s kind for a module-scoped fixture
    (tables of refused inputs share one store: they must not write)."""
    if request.param == "files":
        return tmp_path_factory.mktemp("store") / "store"
    return fresh_schema(request)


@pytest.fixture
def another(request, tmp_path):
    """``another(kind)``: one more fresh store, of a kind the test names
    (for moving a store from one backend to another)."""
    return lambda kind: make_location(kind, request, tmp_path)


#: The CLI files every default run holds PostgreSQL to.  The others are the
#: file store's long CLI tables (every refused input, every JSON value, every
#: view), moved here so they can run on PostgreSQL too: each of their cases
#: starts several CLI processes that each connect to the server, which would
#: double the default run.  They run on PostgreSQL with EVSTORE_CONTRACT=full,
#: which .ci/run sets; on files they always run.
PG_DEFAULT_FILES = {"test_cli.py", "test_follow.py", "test_processes.py", "test_library.py",
                    "test_model_stateful.py", "test_forgetting.py"}
FULL = os.environ.get("EVSTORE_CONTRACT") == "full"


def pytest_report_header(config):
    if not FULL:
        return ("contract: the CLI tables of tests/contract run on files; on PostgreSQL only "
                "with EVSTORE_CONTRACT=full (as .ci/run does)")
    return None


def pytest_collection_modifyitems(config, items):
    if FULL:
        return
    keep, drop = [], []
    for item in items:
        path = Path(str(item.fspath))
        on_pg = getattr(item, "callspec", None) and "postgres" in item.callspec.id.split("-")
        if path.parent.name == "contract" and on_pg and path.name not in PG_DEFAULT_FILES:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
