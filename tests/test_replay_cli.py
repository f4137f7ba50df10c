"""``evstore snapshot``, ``replay`` and ``config`` on a store directory: real
processes, pipes, a reducer file written by the test, exit codes, messages."""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

from cli_helpers import read_pty
from conftest import ROOT, cli_env, ndjson

from evstore import EventStore, NewEvent
from replay_helpers import ACCT7, BALANCE, acct7, err, one, reducer_file  # noqa: F401

# Tests that hold on every backend are in tests/contract/test_replay_cli.py.


def test_damaged_snapshot(acct7, store_dir):
    acct7("snapshot", "acct-7", "--version", "30")
    with EventStore(store_dir) as s:
        path = s.snapshots.path("acct-7", 30)
    data = open(path, "rb").read().replace(b'"EUR"', b'"USD"')
    open(path, "wb").write(data)
    r = acct7("snapshot", "acct-7", "--show")
    assert r.returncode == 6 and "checksum mismatch" in err(r)
    r = acct7("replay", "acct-7", "--steps", "--to-version", "31")
    assert r.returncode == 0 and len(ndjson(r.stdout)) == 31
    assert "the snapshot at version 30 is damaged (checksum mismatch)" in err(r)


def test_verify_snapshots(acct7, store_dir):
    for v in ("10", "20", "30"):
        acct7("snapshot", "acct-7", "-r", BALANCE, "--version", v)
    acct7("snapshot", "acct-7", "-r", "count", "--version", "40")
    r = acct7("replay", "acct-7", "-r", BALANCE, "--verify-snapshots")
    assert r.returncode == 0 and r.stdout == b""
    assert "compared 3 snapshots made by reducers.py:balance" in err(r)
    assert "version 40: made by count" in err(r)
    # tamper: a wrong balance at 20, saved as a well-formed snapshot
    acct7("snapshot", "acct-7", "-r", BALANCE, "--version", "20", "--state",
          '{"owner": "Ольга Иванова", "currency": "EUR", "balance": 1, "status": "open", '
          '"overdrawn_count": 0}')
    with EventStore(store_dir) as s:  # and a flipped byte at 30
        path = s.snapshots.path("acct-7", 30)
    data = bytearray(open(path, "rb").read())
    data[-5] ^= 0x01
    open(path, "wb").write(bytes(data))
    r = acct7("replay", "acct-7", "-r", BALANCE, "--verify-snapshots")
    assert r.returncode == 6
    rows = ndjson(r.stdout)
    assert [(m["version"], m.get("path")) for m in rows] == [(20, ["balance"]), (30, None)]
    assert rows[0]["snapshot"] == 1 and rows[0]["rebuilt"] != 1
    assert rows[1]["reason"].startswith("damaged")
    assert "2 snapshots of 'acct-7' do not match its events" in err(r)
    r = acct7("replay", "acct-7", "--verify-snapshots", "--to-version", "3")
    assert r.returncode == 2



def test_config_and_automatic_snapshots(cli, store_dir, tmp_path):
    r = cli("config")
    assert r.returncode == 4
    r = cli("config", "snapshot-every", "25")
    assert one(r) == {"snapshot_every": 25, "reducer": None}
    rel = os.path.relpath(ROOT / "sample_data" / "reducers.py", tmp_path) + ":balance"
    r = cli("config", "reducer", rel, cwd=tmp_path)
    assert one(r) == {"snapshot_every": 25, "reducer": rel}  # kept as typed
    # from another directory: found beside the store (the store is in tmp_path)
    r = cli("append", "acct-7", input=ACCT7, cwd=tmp_path / "..")
    assert one(r)["version"] == 59
    with EventStore(store_dir) as s:
        assert [h.version for h in s.snapshots.list("acct-7")] == [50]  # 59 crossed 25, 50
        assert {h.reducer for h in s.snapshots.list("acct-7")} == {"reducers.py:balance"}
    cli("append", "acct-7", "--type", "Deposited", "--data", '{"amount": 1}')
    # the setting is replay's default reducer too, and its snapshots are used
    r = cli("replay", "acct-7", "--steps")
    assert [s["version"] for s in ndjson(r.stdout)] == list(range(51, 61))
    assert ndjson(r.stdout)[-1]["state"]["balance"] == -15699
    assert one(cli("config", "snapshot-every")) == {"snapshot_every": 25}
    for args, code in [(("config", "snapshot-every", "many"), 2),
                       (("config", "reducer", "nope.py:f"), 2),
                       (("config", "colour", "red"), 2),
                       (("config", "reducer", "count", "--unset"), 2)]:
        r = cli(*args)
        assert r.returncode == code and r.stdout == b"", args
    assert one(cli("config", "snapshot-every", "off")) == {"snapshot_every": None,
                                                           "reducer": rel}
    assert one(cli("config", "reducer", "--unset")) == {"snapshot_every": None, "reducer": None}



def test_readme_command(cli, tmp_path):
    """The command proposed for README's first line, verbatim but the store."""
    cmd = (f"{sys.executable} -m evstore --store {tmp_path}/demo append acct-7 "
           f"--expected-version 0 < sample_data/acct-7.ndjson > /dev/null && "
           f"{sys.executable} -m evstore --store {tmp_path}/demo replay acct-7 "
           f"--reducer sample_data/reducers.py:balance --steps | tail -n 3")
    r = subprocess.run(["sh", "-c", cmd], capture_output=True, cwd=ROOT, env=cli_env())
    assert r.returncode == 0, r.stderr
    steps = ndjson(r.stdout)
    assert [s["version"] for s in steps] == [57, 58, 59]
    assert steps[-1]["state"]["balance"] == -15700


def test_help_has_examples(cli):
    for cmd in ("snapshot", "replay", "config"):
        r = cli(cmd, "--help")
        assert r.returncode == 0 and b"Examples:" in r.stdout, cmd


# --- on a terminal ---------------------------------------------------------------------------------

def run_tty(args, store, stdout_tty=True, timeout=60):
    """Run the CLI with stderr (and stdout, unless stdout_tty is False) on a
    pseudo-terminal; returns (rc, stdout bytes, terminal bytes)."""
    master, slave = pty.openpty()
    out = slave if stdout_tty else subprocess.PIPE
    env = cli_env(store, COLUMNS="120")
    p = subprocess.Popen([sys.executable, "-m", "evstore", *args], stdin=subprocess.DEVNULL,
                         stdout=out, stderr=slave, env=env)
    os.close(slave)
    seen = read_pty(master, p, timeout)
    stdout = p.stdout.read() if p.stdout else b""
    rc = p.wait(timeout)
    os.close(master)
    return rc, stdout, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode("utf-8", "replace"))


def test_steps_rich_view_on_a_terminal(acct7, store_dir):
    rc, _, screen = run_tty(["replay", "acct-7", "-r", BALANCE, "--steps",
                             "--from-version", "53", "--to-version", "55"], store_dir)
    assert rc == 0
    assert "replay acct-7 with reducers.py:balance: folding versions 1..55" in screen
    assert "v53" in screen and "Withdrawn" in screen and '"retry":1' in screen
    assert "~ balance: 32800 -> 12800" in screen
    assert "~ overdrawn_count: 0 -> 1" in screen
    assert "state at version 55:" in screen and '"balance": -7200' in screen


def test_progress_bar_only_on_a_terminal(store_dir):
    with EventStore(store_dir, sync=False) as s:
        for b in range(25):
            s.append("big", [NewEvent("D", {"amount": 1})] * 1000)
    rc, out, screen = run_tty(["replay", "big", "-r", "count"], store_dir, stdout_tty=False)
    assert rc == 0 and json.loads(out)["state"] == {"D": 25000}
    assert "replay big" in screen and "25000/25000" in screen
    r = subprocess.run([sys.executable, "-m", "evstore", "replay", "big", "-r", "count"],
                       capture_output=True, env=cli_env(store_dir))
    assert r.stderr == b"" and json.loads(r.stdout)["state"] == {"D": 25000}
