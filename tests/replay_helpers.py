"""Shared by the replay CLI tests (tests/test_replay_cli.py, file-only, and
tests/contract/test_replay_cli.py, every backend): the sample account, its
reducer, a reducer file written by the test, and small result helpers."""
from __future__ import annotations

import pytest

from conftest import ROOT, ndjson

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

