"""``evstore snapshot``, ``replay`` and ``config`` as a user runs them: real
processes, pipes, a reducer file written by the test, exit codes, messages."""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest
from cli_helpers import read_pty
from conftest import ROOT, cli_env, ndjson

from evstore import EventStore, NewEvent

ACCT7 = (ROOT / "sample_data" / "acct-7.ndjson").read_text(encoding="utf-8")
BALANCE = str(ROOT / "sample_data" / "reducers.py") + ":balance"

REDUCER_FILE = '''
def total(state, event):
    """Sums amounts; fails on purpose on an event typed Boom."""
    state = dict(state or {"total": 0})
    if event["type"] == "Boom":
        return state["missing"]
    state["total"] += event["data"].get("amount", 0)
    state["last_type"] = event["type"]
    return state


def setty(state, event):
    return {"tags": {"a"}}
'''


@pytest.fixture
def acct7(cli):
    r = cli("append", "acct-7", input=ACCT7)
    assert r.returncode == 0, r.stderr
    return cli


@pytest.fixture
def reducer_file(tmp_path):
    f = tmp_path / "my_reducers.py"
    f.write_text(REDUCER_FILE)
    return f


def err(r) -> str:
    return r.stderr.decode()


def one(r):
    [obj] = ndjson(r.stdout)
    return obj


def test_replay_prints_the_state(acct7):
    r = acct7("replay", "acct-7", "--reducer", BALANCE)
    assert r.returncode == 0 and r.stderr == b""
    assert one(r) == {"stream": "acct-7", "version": 59, "state": {
        "owner": "Ольга Иванова", "currency": "EUR", "balance": -15700, "status": "open",
        "overdrawn_count": 1}}
    r = acct7("replay", "acct-7", "--reducer", BALANCE, "--to-version", "52")
    assert one(r)["version"] == 52 and one(r)["state"]["balance"] == 32800
    r = acct7("replay", "acct-7", "-r", "count", "--format", "json")
    assert json.loads(r.stdout) == {"stream": "acct-7", "version": 59, "state": {
        "AccountOpened": 1, "Deposited": 6, "Withdrawn": 51, "Overdrawn": 1}}
    r = acct7("replay", "acct-7", "--to-version", "1")  # merge, the default
    assert one(r)["state"] == {"owner": "Ольга Иванова", "currency": "EUR"}


def test_replay_at_a_time(acct7, store_dir):
    r = acct7("append", "acct-7", "--type", "Deposited", "--data", '{"amount": 100}')
    with EventStore(store_dir) as s:
        evs = list(s.read("acct-7"))
    first, last = evs[0].to_dict()["recorded_at"], evs[-1].to_dict()["recorded_at"]
    r = acct7("replay", "acct-7", "-r", BALANCE, "--at", first)
    assert one(r)["version"] == 59  # the first batch: all 59 share a recorded_at
    r = acct7("replay", "acct-7", "-r", BALANCE, "--at", last)
    assert one(r) == {"stream": "acct-7", "version": 60, "state": {**one(
        acct7("replay", "acct-7", "-r", BALANCE))["state"]}}
    r = acct7("replay", "acct-7", "--at", "2000-01-01T00:00:00+01:00")
    assert r.returncode == 4 and "no event of 'acct-7' was recorded at or before" in err(r)
    r = acct7("replay", "acct-7", "--at", "tomorrow")
    assert r.returncode == 2 and "RFC 3339" in err(r) and r.stdout == b""
    r = acct7("replay", "acct-7", "--at", last, "--to-version", "3")
    assert r.returncode == 2 and "not both" in err(r)


def test_steps_ndjson_and_filters(acct7):
    r = acct7("replay", "acct-7", "-r", BALANCE, "--steps")
    assert r.returncode == 0
    steps = ndjson(r.stdout)
    assert [s["version"] for s in steps] == list(range(1, 60))
    assert all(list(s) == ["version", "type", "changes", "state"] for s in steps)
    assert steps[53] == {"version": 54, "type": "Withdrawn", "changes": [
        {"op": "change", "path": ["balance"], "old": 12800, "new": -7200}],
        "state": {"owner": "Ольга Иванова", "currency": "EUR", "balance": -7200,
                  "status": "open", "overdrawn_count": 0}}
    assert "folding from the first event" in err(r)
    r = acct7("replay", "acct-7", "-r", BALANCE, "--steps", "--type", "Overdrawn",
              "--type", "AccountOpened")
    assert [(s["version"], s["type"]) for s in ndjson(r.stdout)] == [
        (1, "AccountOpened"), (55, "Overdrawn")]
    r = acct7("replay", "acct-7", "-r", BALANCE, "--steps", "--from-version", "57",
              "--format", "json")
    got = json.loads(r.stdout)
    assert [s["version"] for s in got] == [57, 58, 59] and got[-1]["state"]["balance"] == -15700
    r = acct7("replay", "acct-7", "--type", "Deposited")
    assert r.returncode == 2 and "go with --steps" in err(r)


def test_snapshots_are_used_and_steps_say_why(acct7, reducer_file):
    r = acct7("snapshot", "acct-7", "-r", BALANCE, "--version", "50")
    snap = one(r)
    assert list(snap) == ["stream", "version", "state", "created_at"]
    assert (snap["version"], snap["state"]["balance"]) == (50, 685100)
    assert one(acct7("snapshot", "acct-7", "--show")) == snap
    r = acct7("replay", "acct-7", "-r", BALANCE, "--steps")
    assert [s["version"] for s in ndjson(r.stdout)] == list(range(51, 60))
    assert "started from the snapshot at version 50" in err(r)
    r = acct7("replay", "acct-7", "-r", BALANCE, "--steps", "--no-snapshot")
    assert len(ndjson(r.stdout)) == 59 and "--no-snapshot" in err(r)
    r = acct7("replay", "acct-7", "-r", BALANCE, "--steps", "--from-version", "45")
    assert [s["version"] for s in ndjson(r.stdout)][0] == 45
    assert "after version 44 not used" in err(r)
    r = acct7("replay", "acct-7", "-r", "merge", "--steps", "--to-version", "51")
    assert "made by reducer reducers.py:balance, not merge" in err(r)
    assert len(ndjson(r.stdout)) == 51
    # the same reducer with changed source: the old snapshots are not used
    acct7("snapshot", "acct-7", "-r", f"{reducer_file}:total", "--version", "40")
    reducer_file.write_text(REDUCER_FILE + "\n# edited\n")
    r = acct7("replay", "acct-7", "-r", f"{reducer_file}:total", "--steps", "--to-version", "41")
    assert "made by another version of my_reducers.py:total" in err(r)
    assert len(ndjson(r.stdout)) == 41


def test_snapshot_show_and_state(acct7):
    r = acct7("snapshot", "acct-7", "--show")
    assert r.returncode == 4 and "no snapshot of 'acct-7'" in err(r) and r.stdout == b""
    r = acct7("snapshot", "acct-7", "--state", "-", "--version", "12", input='{"balance": 7}')
    assert one(r)["state"] == {"balance": 7}
    r = acct7("snapshot", "acct-7", "--state", '{"b": [1, 2.5, "é"]}', "--version", "20",
              "-r", "count")
    assert one(r)["state"] == {"b": [1, 2.5, "é"]}
    assert one(acct7("snapshot", "acct-7", "--show"))["version"] == 20
    assert one(acct7("snapshot", "acct-7", "--show", "--version", "19"))["version"] == 12
    assert one(acct7("snapshot", "acct-7", "--show", "-r", "merge"))["version"] == 12
    # replay (merge) starts from the external state at 12
    assert one(acct7("replay", "acct-7", "--to-version", "12"))["state"] == {"balance": 7}
    assert one(acct7("info"))["snapshots"] == 2
    for args, code, why in [
        (("--state", '{"a": 1}'), 2, "--state needs --version"),
        (("--state", '{"a": 1}', "--version", "60"), 4, "no version 60"),
        (("--state", '{"a": NaN}', "--version", "3"), 5, "NaN"),
        (("--state", "{oops", "--version", "3"), 5, "invalid JSON"),
        (("--show", "--state", "{}", "--version", "3"), 2, "do not go together"),
        (("--version", "60",), 4, "no version 60"),
        (("--show", "--version", "11"), 4, "at or below version 11"),
    ]:
        r = acct7("snapshot", "acct-7", *args)
        assert (r.returncode, r.stdout) == (code, b""), (args, r)
        assert why in err(r), (args, err(r))
    r = acct7("snapshot", "nope")
    assert r.returncode == 4 and "stream not found" in err(r)


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


def test_reducer_errors(acct7, reducer_file, tmp_path):
    acct7("append", "acct-7", "--type", "Boom")
    r = acct7("replay", "acct-7", "-r", f"{reducer_file}:total")
    assert (r.returncode, r.stdout) == (1, b"")
    msg = err(r)
    assert msg.startswith("evstore: error: reducer my_reducers.py:total failed on stream "
                          "'acct-7' at version 60 (type Boom): KeyError: 'missing'")
    assert "state keys before it: total, last_type" in msg and "Traceback" not in msg
    r = acct7("replay", "acct-7", "-r", f"{reducer_file}:total", "--steps")
    assert r.returncode == 1 and "at version 60 (type Boom)" in err(r)
    r = acct7("replay", "acct-7", "-r", f"{reducer_file}:setty")
    assert r.returncode == 1 and "not JSON" in err(r) and "set is not a JSON value" in err(r)
    r = acct7("snapshot", "acct-7", "-r", f"{reducer_file}:setty")
    assert r.returncode == 1 and "not JSON" in err(r)
    (tmp_path / "broken.py").write_text("def f(state, event)\n")
    for spec, why in [
        ("nope", "unknown reducer 'nope'"),
        (str(tmp_path / "missing.py") + ":f", "no such file"),
        (f"{reducer_file}:nothing", "has no function 'nothing'"),
        (str(tmp_path / "broken.py") + ":f", "syntax error"),
        (str(reducer_file), "name the function too"),
        ("no_such_pkg.mod:f", "no module named 'no_such_pkg'"),
    ]:
        for cmd in ("replay", "snapshot"):
            r = acct7(cmd, "acct-7", "--reducer", spec)
            assert (r.returncode, r.stdout) == (2, b""), (spec, r)
            assert why in err(r) and err(r).count("\n") == 1, (spec, err(r))


def test_module_reducer(acct7, reducer_file):
    env = {"PYTHONPATH": f"{reducer_file.parent}{os.pathsep}{ROOT}"}
    r = acct7("replay", "acct-7", "-r", "my_reducers:total", "--to-version", "3", env=env)
    assert one(r)["state"] == {"total": 285000 + 120000, "last_type": "Withdrawn"}


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


def test_automatic_snapshot_failure_warns_but_appends(cli, store_dir, reducer_file):
    cli("config", "snapshot-every", "2")
    cli("config", "reducer", f"{reducer_file}:total")
    r = cli("append", "s", input='{"type": "Boom"}\n{"type": "Boom"}\n')
    assert r.returncode == 0 and one(r)["version"] == 2
    assert "automatic snapshot of 's' at version 2 not saved" in err(r)


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
