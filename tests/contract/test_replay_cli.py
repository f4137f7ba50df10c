"""``evstore snapshot`` and ``replay`` as a user runs them, on files and
PostgreSQL: real processes, pipes, a reducer file written by the test, exit
codes, messages.  (Damaged snapshot files, the terminal views and the
reducer path kept beside a store directory are in tests/test_replay_cli.py.)"""
from __future__ import annotations

import json
import os

from conftest import ROOT, ndjson
from evstore import EventStore
from replay_helpers import BALANCE, REDUCER_FILE, acct7, err, one, reducer_file  # noqa: F401


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



def test_automatic_snapshot_failure_warns_but_appends(cli, store_dir, reducer_file):
    cli("config", "snapshot-every", "2")
    cli("config", "reducer", f"{reducer_file}:total")
    r = cli("append", "s", input='{"type": "Boom"}\n{"type": "Boom"}\n')
    assert r.returncode == 0 and one(r)["version"] == 2
    assert "automatic snapshot of 's' at version 2 not saved" in err(r)


