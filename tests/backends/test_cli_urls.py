"""The command line on a PostgreSQL URL: never treated as a path.

Real subprocesses against the session's throwaway server (conftest.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import time

from conftest import run_cli


def cli(url, *args, input=None, timeout=60):
    return run_cli("--store", url, *args, input=input, timeout=timeout)


def test_a_url_store_from_append_to_verify(pg_url, tmp_path):
    assert cli(pg_url, "read", "a").returncode == 4           # nothing created by a read
    assert cli(pg_url, "append", "a", "--dry-run", "--type", "T").returncode == 0
    assert cli(pg_url, "info").returncode == 4                 # nor by a dry run
    r = cli(pg_url, "append", "a", "--type", "T", "--data", '{"z": 1, "a": 2}')
    assert r.returncode == 0, r.stderr
    info = json.loads(cli(pg_url, "info").stdout)
    assert (info["backend"], info["segments"], info["events"]) == ("postgresql", 0, 1)
    assert "password" not in info["store"]
    assert json.loads(cli(pg_url, "snapshot", "a").stdout)["state"] == {"z": 1, "a": 2}
    assert cli(pg_url, "verify").returncode == 0
    r = cli(pg_url, "repair")
    assert r.returncode == 2 and b"directories" in r.stderr
    assert not os.path.exists("postgresql:")                   # no directory made from the URL


def test_export_files_import_postgres_export_is_byte_identical(pg_url, tmp_path):
    d = tmp_path / "files"
    for i in range(3):
        assert run_cli("--store", d, "append", f"s{i % 2}", "--type", "T",
                       "--data", json.dumps({"i": i, "big": 2**64 - 1, "f": 0.1})).returncode == 0
    first = run_cli("--store", d, "export", "--all").stdout
    r = cli(pg_url, "import", input=first)
    assert r.returncode == 0, r.stderr
    again = cli(pg_url, "export", "--all").stdout
    assert again == first
    back = tmp_path / "back"
    assert run_cli("--store", back, "import", input=again).returncode == 0
    assert run_cli("--store", back, "export", "--all").stdout == first


def test_tail_follow_with_a_checkpoint_wakes_on_a_commit(pg_url):
    assert cli(pg_url, "append", "a", "--type", "T").returncode == 0
    from conftest import cli_env
    import sys
    p = subprocess.Popen([sys.executable, "-m", "evstore", "--store", pg_url, "tail", "-f",
                          "--all", "--checkpoint", "c"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=cli_env(None))
    try:
        first = p.stdout.readline()
        assert json.loads(first)["position"] == 1
        assert cli(pg_url, "append", "b", "--type", "U").returncode == 0
        t0 = time.monotonic()
        second = p.stdout.readline()
        assert json.loads(second)["position"] == 2 and time.monotonic() - t0 < 5
    finally:
        p.terminate()
        p.wait(10)
    rows = json.loads(cli(pg_url, "checkpoints").stdout.splitlines()[0])
    assert rows["name"] == "c" and rows["position"] >= 1


def test_a_server_that_refuses_is_exit_1_without_the_password():
    r = run_cli("--store", "postgresql://me:s3cret@127.0.0.1:1/db", "read", "a")
    assert r.returncode == 1
    assert b"s3cret" not in r.stderr and b"127.0.0.1" in r.stderr and b"port 1" in r.stderr
