"""The suite's forked CLI calls (tests/cli_fork.py) behave as executed ones:
same exit codes, stdout, stderr, stdin, environment and working directory."""
from __future__ import annotations

import subprocess

import conftest
from conftest import run_cli


def _both(monkeypatch, *args, **kw):
    forked = run_cli(*args, **kw)
    monkeypatch.setenv("EVSTORE_TEST_EXEC", "1")
    executed = run_cli(*args, **kw)
    monkeypatch.delenv("EVSTORE_TEST_EXEC")
    return forked, executed


def test_forked_calls_match_executed_ones(tmp_path, monkeypatch):
    assert conftest._forked(conftest.cli_env()) is not None  # the zygote is in use
    line = '{"type": "T", "data": {"x": 1}}\n'
    for i, (args, kw) in enumerate([
        (("append", "s", "--expected-version", "any"), {"input": line}),
        (("read", "s"), {}),
        (("read", "nope"), {}),                                   # exit 4, stderr
        (("append", "s", "--expected-version", "x"), {"input": line}),  # exit 2
        (("info",), {"env": {"EVSTORE_DIR": "rel"}, "cwd": tmp_path}),  # env and cwd
    ]):
        kw.setdefault("store", tmp_path / f"store{i}")
        forked, executed = _both(monkeypatch, *args, **kw)
        if args[0] == "append" and forked.returncode == 0:
            # the second run is a retry of the first (no ids: a new event)
            assert (forked.returncode, executed.returncode) == (0, 0)
            continue
        assert (forked.returncode, forked.stdout, forked.stderr) == \
            (executed.returncode, executed.stdout, executed.stderr), args


def test_a_forked_call_that_hangs_is_killed(tmp_path):
    assert run_cli("append", "s", "--type", "T", store=tmp_path / "s").returncode == 0
    try:
        run_cli("tail", "-f", "--all", store=tmp_path / "s", timeout=1.5)
    except subprocess.TimeoutExpired:
        return
    raise AssertionError("tail -f returned")
