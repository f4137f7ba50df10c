"""A throwaway PostgreSQL server for the tests, started by the tests.

Why the tests start their own server: the PostgreSQL backend's promises
(dense positions in commit order, atomic batches, nothing lost when the
server crashes) are only worth what a real server proves, and a developer
should not need to set one up.  So:

- ``EVSTORE_TEST_PG=postgresql://...`` points at an existing server (each
  test still gets its own schema, so a shared server is fine);
- else, when ``initdb`` and ``pg_ctl`` are on the PATH, a cluster is made in
  a temporary directory (about a second), listening on a unix socket only,
  and stopped at the end.  PostgreSQL refuses to run as root, and the tests
  and CI do run as root: then the cluster belongs to the ``postgres`` user
  and its commands run through ``runuser``;
- else the PostgreSQL tests are skipped with a visible reason, unless
  ``EVSTORE_REQUIRE_PG=1`` (CI sets it), which turns that skip into a failure.

The fault tests need to crash and restart the server, so :class:`PgServer`
exposes ``stop(mode)`` and ``start()``; with an external server those tests
are skipped (we do not crash someone else's server).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from urllib.parse import quote

REQUIRE = os.environ.get("EVSTORE_REQUIRE_PG") == "1"


class PgUnavailable(Exception):
    """No server given and no binaries to start one: the reason says which."""


def _as_owner(cmd: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *cmd] if owner else cmd


class PgServer:
    """A cluster in a temporary directory, or an external server's URL."""

    def __init__(self):
        self.external = os.environ.get("EVSTORE_TEST_PG") or None
        self.tmp = self.data = self.sock = None
        self.owner = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> "PgServer":
        if self.external:
            return self
        if self.data is None:
            self._init()
        self._pg_ctl("-o", f"-k {self.sock} -c listen_addresses='' -c fsync=on",
                     "-l", os.path.join(self.tmp, "server.log"), "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """``fast`` is a clean shutdown; ``immediate`` is a crash (no
        checkpoint: the next start replays the WAL)."""
        if self.external or self.data is None:
            return
        self._pg_ctl("-m", mode, "-w", "-t", "60", "stop", check=False)

    def cleanup(self) -> None:
        if self.external or self.tmp is None:
            return
        self.stop("fast")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = self.data = None

    @property
    def can_crash(self) -> bool:
        return not self.external

    @property
    def url(self) -> str:
        if self.external:
            return self.external
        return f"postgresql://postgres@/postgres?host={quote(self.sock, safe='')}"

    def url_for(self, schema: str) -> str:
        base = self.url
        return base + ("&" if "?" in base else "?") + f"schema={schema}"

    # -- internals ---------------------------------------------------------------------
    def _init(self) -> None:
        initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
        if not initdb or not pg_ctl:
            raise PgUnavailable(
                "no PostgreSQL server: set EVSTORE_TEST_PG=postgresql://... or put "
                "initdb and pg_ctl on the PATH (Debian: apt-get install postgresql)")
        self.owner = "postgres" if os.geteuid() == 0 else None
        self.tmp = tempfile.mkdtemp(prefix="evstore-pg-")
        self.data = os.path.join(self.tmp, "data")
        self.sock = os.path.join(self.tmp, "sock")
        os.mkdir(self.sock)
        if self.owner:
            shutil.chown(self.tmp, self.owner)
            shutil.chown(self.sock, self.owner)
            os.chmod(self.tmp, 0o755)
        r = subprocess.run(_as_owner([initdb, "-D", self.data, "--locale=C.UTF-8", "-A", "trust",
                                      "-U", "postgres", "--no-sync"], self.owner),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise PgUnavailable(f"initdb failed: {r.stderr.strip() or r.stdout.strip()}")

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        cmd = _as_owner([shutil.which("pg_ctl") or "pg_ctl", "-D", self.data, *args], self.owner)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if check and r.returncode != 0:
            log = ""
            try:
                with open(os.path.join(self.tmp, "server.log")) as f:
                    log = f.read()[-2000:]
            except OSError:
                pass
            raise PgUnavailable(f"pg_ctl {' '.join(args)} failed: {r.stderr.strip()}\n{log}")


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Until the server accepts a connection (after a restart)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(_plain(url), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _plain(url: str) -> str:
    """The URL without our ``schema`` parameter, which libpq does not know."""
    from evstore.backends.postgres.connect import split_url
    return split_url(url)[0]
