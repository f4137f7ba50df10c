"""Shared test helpers: temporary stores and the CLI run as a real process."""
from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import itertools

import pytest

from pg_server import REQUIRE, PgServer, PgUnavailable

ROOT = Path(__file__).resolve().parent.parent

# The suite starts well over a thousand Python processes (the CLI, writers,
# followers).  Where the environment forbids bytecode caches
# (PYTHONDONTWRITEBYTECODE, as on our CI machines), each of them would
# compile evstore from source again: ~80 ms of CPU a process, a third of
# the whole run.  Compiled files go to a cache outside the tree instead.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    os.environ.setdefault("PYTHONPYCACHEPREFIX",
                          os.path.join(tempfile.gettempdir(), f"evstore-test-pycache-{os.getuid()}"))

# A shell without job control starts background commands with SIGINT
# ignored, and an ignored signal stays ignored across exec: run from such a
# job (`.ci/run &`), every `evstore tail -f` the tests stop with SIGINT would
# ignore it too.  A handled signal is reset to its default on exec, so
# handling it here gives the children the SIGINT a terminal would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def store_dir(tmp_path) -> Path:
    """A path for a store that does not exist yet."""
    return tmp_path / "store"


def cli_env(store: Path | None = None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVSTORE_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["NO_COLOR"] = "1"
    if store is not None:
        env["EVSTORE_DIR"] = str(store)
    env.update(extra)
    return env


_zygote = None


def _forked(env: dict):
    """The zygote (tests/cli_fork.py) when it can run this call, else None."""
    global _zygote
    if os.environ.get("EVSTORE_TEST_EXEC"):
        return None
    if _zygote is None:
        from cli_fork import Zygote
        _zygote = Zygote(cli_env(), str(ROOT))
        atexit.register(_zygote.close)
    return _zygote if _zygote.usable_for(env) else None


def run_cli(*args, store: Path | None = None, input: str | bytes | None = None,
            env: dict | None = None, timeout: float = 60, cwd=None) -> subprocess.CompletedProcess:
    """Run ``python -m evstore ARGS`` in a process of its own (stdout not a
    tty): forked from a process that has imported the CLI once
    (tests/cli_fork.py explains what that covers), or executed for real."""
    e = cli_env(store)
    if env:
        e.update(env)
    if isinstance(input, str):
        input = input.encode("utf-8")
    zygote = _forked(e)
    if zygote is not None:
        return zygote.run([str(a) for a in args], e, input if input is not None else b"",
                          timeout, cwd)
    return subprocess.run([sys.executable, "-m", "evstore", *map(str, args)],
                          input=input if input is not None else b"",
                          capture_output=True, env=e, timeout=timeout, cwd=cwd)


def ndjson(out: bytes) -> list:
    # split on "\n" only: NDJSON lines may hold U+2028 and other characters
    # that str.splitlines() also treats as line ends
    return [json.loads(line) for line in out.decode("utf-8").split("\n") if line.strip()]


@pytest.fixture
def cli(store_dir):
    """``cli("append", "s", input=...)`` against this test's store."""
    def run(*args, **kw):
        kw.setdefault("store", store_dir)
        return run_cli(*args, **kw)
    return run


# -- the session's throwaway PostgreSQL server (tests/pg_server.py) -----------------
_schemas = itertools.count(1)


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
    schema = f"t{os.getpid()}_{next(_schemas)}"
    url = pg_server.url_for(schema)
    yield url
    import psycopg
    try:
        with psycopg.connect(pg_server.url, autocommit=True, connect_timeout=5) as c:
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except psycopg.Error:
        pass  # a test that stopped the server; the cluster goes away anyway


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: two workers per core.  Most of a test's time is spent
    waiting -- on CLI processes, followers, fsyncs, the PostgreSQL server --
    so a second worker per core keeps the cores busy (on 2 cores: 2m50 with
    one worker per core, 2m20 with two)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return min(2 * cores, 16)


def pytest_collection_modifyitems(config, items):
    """Mark every test that runs on PostgreSQL ``postgres`` (it asks for the
    server, or is the contract suite's PostgreSQL case), so that
    ``pytest -m postgres`` runs exactly those and ``-m 'not postgres'`` the rest."""
    for item in items:
        on_pg = getattr(item, "callspec", None) and "postgres" in item.callspec.id.split("-")
        if on_pg or {"pg_server", "pg_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
