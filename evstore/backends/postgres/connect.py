"""Connections to PostgreSQL, and the one place driver errors become ours.

Why one place: a user must meet the same errors on every backend (a locked
store is exit 1 naming the wait, a missing store exit 4, a server that is
down one line naming host, port and database -- never a password, never a
traceback).  Every call into psycopg runs inside :func:`translating`, which
maps the driver's exceptions onto :mod:`evstore.errors` with ``from e``.

psycopg is imported here, lazily: the CLI must start without paying for a
driver that only PostgreSQL stores need, and a machine without the extra
gets a usage error naming the command that installs it.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ...errors import (
    EvstoreError, StoreIOError, StoreLocked, StoreNotFound, UsageError,
)

DEFAULT_SCHEMA = "evstore"
INSTALL = "pip install 'evstore[postgres]'"
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


def driver():
    """The psycopg module, or UsageError (exit 2) naming the install command."""
    try:
        import psycopg
    except ImportError:
        raise UsageError(
            f"PostgreSQL stores need the psycopg driver: {INSTALL}") from None
    return psycopg


def split_url(url: str) -> tuple[str, str]:
    """``(libpq URL without ?schema=, schema)``.  libpq does not know our
    ``schema`` parameter; everything else (``host=/socket/dir``, sslmode,
    passwords from PGPASSWORD or ~/.pgpass) is left to libpq."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    rest = [(k, v) for k, v in query if k != "schema"]
    schema = schemas[-1] if schemas else DEFAULT_SCHEMA
    check_schema(schema)
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


def check_schema(schema: str) -> str:
    if not schema or "\x00" in schema or len(schema.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise UsageError(f"invalid schema name {schema!r}: 1 to {MAX_IDENTIFIER_BYTES} "
                         "bytes, no NUL")
    if schema.startswith("pg_"):
        raise UsageError(f"invalid schema name {schema!r}: names starting with pg_ "
                         "are PostgreSQL's")
    return schema


class Target:
    """Where a store lives, as messages name it: host, port, database,
    schema.  Never holds the password in anything it prints."""

    def __init__(self, url: str):
        self.conninfo, self.schema = split_url(url)
        self.password = urlsplit(url).password
        self.host, self.port, self.database = _describe(self.conninfo)

    def __str__(self) -> str:
        return (f"PostgreSQL at host {self.host}, port {self.port}, "
                f"database {self.database}, schema {self.schema}")

    def redact(self, text: str) -> str:
        if self.password:
            text = text.replace(self.password, "***")
        return text

    def connect(self):
        """A new autocommit connection (StoreIOError, one line, on failure)."""
        psycopg = driver()
        try:
            conn = psycopg.connect(self.conninfo, autocommit=True,
                                   application_name="evstore",
                                   connect_timeout=int(os.environ.get("PGCONNECT_TIMEOUT", 10)))
        except psycopg.Error as e:
            raise StoreIOError(
                f"cannot connect to PostgreSQL at host {self.host}, port {self.port}, "
                f"database {self.database}: {self.redact(_reason(e))}") from e
        _ints_as_bigint(conn)
        return conn

    @contextmanager
    def translating(self, what: str, lock_timeout: float | None = None):
        """Run driver calls, raising evstore errors instead of psycopg's."""
        psycopg = driver()
        try:
            yield
        except EvstoreError:
            raise
        except psycopg.errors.LockNotAvailable as e:
            waited = f" (waited {lock_timeout:g}s)" if lock_timeout is not None else ""
            raise StoreLocked(f"the store ({self}) is locked by another writer{waited}") from e
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as e:
            raise StoreNotFound(self) from e
        except psycopg.OperationalError as e:
            raise StoreIOError(
                f"{what}: lost the connection to PostgreSQL at host {self.host}, port "
                f"{self.port}, database {self.database}: {self.redact(_reason(e))}") from e
        except psycopg.Error as e:
            raise StoreIOError(f"{what} ({self}): {self.redact(_reason(e))}") from e


def _ints_as_bigint(conn) -> None:
    """Send every Python int that fits as ``bigint`` (larger ones as
    ``numeric``, so an absurd version or position still compares instead of
    overflowing).  psycopg otherwise picks the smallest type that holds each
    value, so the same statement would change parameter types as positions
    grow or checksums vary -- and psycopg prepares a statement (parse and
    plan once per connection) only after it has seen it five times with the
    *same* types.  Every integer column and lock key of ours is bigint."""
    from psycopg.types.numeric import IntBinaryDumper, IntDumper

    def upgrade(self, obj, format):
        return self._int8_dumper if -(2**63) <= obj < 2**63 else self._int_numeric_dumper

    for base in (IntDumper, IntBinaryDumper):
        conn.adapters.register_dumper(int, type("Bigint" + base.__name__, (base,),
                                                {"upgrade": upgrade}))


def _reason(e) -> str:
    """The first useful line of a driver message, without libpq's
    "connection to server ... failed:" preamble."""
    text = str(e).strip() or type(e).__name__
    line = text.splitlines()[0].strip()
    if " failed: " in line and line.startswith("connection to server"):
        line = line.split(" failed: ", 1)[1]
    return line


def _describe(conninfo: str) -> tuple[str, str, str]:
    """Host, port and database as libpq will use them, for messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict
        d = conninfo_to_dict(conninfo)
    except Exception:  # noqa: BLE001 - only for messages; libpq reports the real error
        d = {}
    host = d.get("host") or os.environ.get("PGHOST") or "localhost"
    port = d.get("port") or os.environ.get("PGPORT") or "5432"
    user = d.get("user") or os.environ.get("PGUSER") or _login()
    database = d.get("dbname") or os.environ.get("PGDATABASE") or user
    return str(host), str(port), str(database)


def _login() -> str:
    try:
        import getpass
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return "?"
