"""What only the PostgreSQL backend has to get right: the schema created on
a write and never on a read, the server's lock timeout, connection errors
that name the server but never the password, the missing driver, verify on
tampered rows, and a connection lost after COMMIT."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from evstore.backends import open_backend
from evstore.core.rules import ANY
from evstore.model import pack_fields, normalize
from evstore.errors import StoreIOError, StoreLocked, StoreNotFound, UsageError

from conftest import cli_env
from .helpers import fill, prep

pytestmark = pytest.mark.usefixtures("pg_server")


def admin(url: str):
    import psycopg
    from evstore.backends.postgres.connect import split_url
    return psycopg.connect(split_url(url)[0], autocommit=True)


def schema_exists(url: str) -> bool:
    from evstore.backends.postgres.connect import split_url
    with admin(url) as c:
        return c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                         (split_url(url)[1],)).fetchone()[0] == 1


def test_reads_create_nothing_and_a_missing_store_is_not_found(pg_url):
    with pytest.raises(StoreNotFound) as e:
        open_backend(pg_url, create=False)
    assert e.value.exit_code == 4
    b = open_backend(pg_url)
    try:
        assert b.head() == 0 and list(b.read_all()) == [] and b.stats()["events"] == 0
        assert b.verify() == [] and b.get_checkpoint("c") is None
        assert not schema_exists(pg_url)
        b.append("a", prep("T"), ANY)
        assert schema_exists(pg_url)
        open_backend(pg_url, create=False).close()
    finally:
        b.close()


def test_postgres_scheme_and_stored_bytes_are_the_packed_event(pg_url):
    url = pg_url.replace("postgresql://", "postgres://", 1)
    b = open_backend(url)
    try:
        ev = normalize({"type": "T", "data": {"b": 1, "a": [1.5, 2 ** 64 - 1]}})
        b.append("a", prep(ev._asdict()), ANY)
        with admin(pg_url) as c:
            body, = c.execute(f'SELECT body FROM "{b.target.schema}".events').fetchone()
        assert bytes(body) == pack_fields(ev, 1 << 20)
    finally:
        b.close()


def test_lock_timeout_is_the_servers_and_raises_store_locked(pg_url):
    b = open_backend(pg_url, lock_timeout=0.3)
    try:
        b.append("a", prep("T"), ANY)
        with admin(pg_url) as other:
            other.execute("BEGIN")
            other.execute(f'SELECT * FROM "{b.target.schema}".head FOR UPDATE')
            t = time.monotonic()
            with pytest.raises(StoreLocked, match="locked by another writer") as e:
                b.append("a", prep("T"), ANY)
            assert e.value.exit_code == 1
            assert 0.25 < time.monotonic() - t < 5
            other.execute("ROLLBACK")
        assert b.append("a", prep("T"), ANY).result.position == 2
    finally:
        b.close()


def test_unreachable_server_names_host_port_database_never_the_password():
    url = "postgresql://bob:s3cr3t-pw@/nodb?host=/nonexistent-dir&port=5999&schema=x"
    with pytest.raises(StoreIOError) as e:
        open_backend(url)
    msg = str(e.value)
    assert "s3cr3t-pw" not in msg and "\n" not in msg
    for part in ("host /nonexistent-dir", "port 5999", "database nodb"):
        assert part in msg


def test_wrong_password_is_one_line_without_the_password(pg_server, pg_url):
    from evstore.backends.postgres.connect import Target
    t = Target(pg_url)
    url = f"postgresql://nobody:hunter2hunter2@/{t.database}?host={t.host}&schema=x"
    with pytest.raises(StoreIOError) as e:
        open_backend(url)
    assert "hunter2" not in str(e.value) and "\n" not in str(e.value)
    assert f"database {t.database}" in str(e.value)


def test_missing_driver_is_a_usage_error_naming_the_extra(pg_url):
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from evstore.backends import open_backend\n"
            "from evstore.errors import UsageError\n"
            "try:\n    open_backend(sys.argv[1])\n"
            "except UsageError as e:\n    print(e.exit_code, e)\n")
    r = subprocess.run([sys.executable, "-c", code, pg_url], capture_output=True, text=True,
                       env=cli_env(), timeout=60)
    assert r.stdout.startswith("2 ") and "pip install 'evstore[postgres]'" in r.stdout, r.stderr
    with pytest.raises(UsageError):
        open_backend(pg_url.replace("schema=", "schema=pg_"))


def test_verify_reports_tampered_rows(pg_url):
    b = open_backend(pg_url)
    try:
        fill(b, "a:T a:U b:T a:V")
        b.put_snapshot("b", 1, b"{}")
        assert b.verify() == []
        s = f'"{b.target.schema}"'
        with admin(pg_url) as c:
            c.execute(f"UPDATE {s}.events SET body = body || '\\x00'::bytea WHERE position = 1")
            c.execute(f"DELETE FROM {s}.events WHERE position = 3")
            c.execute(f"UPDATE {s}.streams SET version = 7 WHERE stream = 'a'")
            c.execute(f"UPDATE {s}.snapshots SET version = 2 WHERE stream = 'b'")
        kinds = {(p["kind"], p.get("position"), p.get("stream")) for p in b.verify()}
        assert ("checksum", 1, "a") in kinds
        assert ("positions", 3, None) in kinds  # the missing one, which was not removed
        assert ("stream", None, "a") in kinds
        assert ("stream", None, "b") in kinds  # its events are gone, its row is not
        assert ("snapshot", None, "b") in kinds
    finally:
        b.close()


def test_a_connection_lost_after_commit_is_retried_without_a_duplicate(pg_url):
    b = open_backend(pg_url)
    try:
        b.append("a", prep("first"), ANY)

        def lose(conn):
            pid = conn.info.backend_pid
            with admin(pg_url) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (pid,))
            conn.execute("SELECT 1")  # the client learns it only now

        cases = [(prep("T", "U"), 1, ("a", 3, 3, 2)), (prep("V"), ANY, ("a", 4, 4, 1))]
        for batch, expected, figures in cases:
            b._after_commit = lose
            with pytest.raises(StoreIOError, match="lost the connection"):
                b.append("a", batch, expected)
            del b._after_commit
            retry = b.append("a", batch, expected)  # a new connection, the same ids
            assert not retry.written and tuple(retry.result) == figures
            assert b.head() == figures[2]
            assert [e.version for e in b.read_stream("a")] == list(range(1, figures[1] + 1))
    finally:
        b.close()
