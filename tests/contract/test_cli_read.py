"""``evstore read`` on files and PostgreSQL: ranges, direction, limits, type
and prefix filters, output formats, and its errors -- against one store of
each kind built once per module.

Expectations are computed from the store's own ``read --all`` (itself checked
against how the store was built), so every query pins exact events.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli_helpers import (
    RFC3339_US,
    all_errors,
    dumps,
    error,
    events_of,
    ndjson_input,
    ok,
    run,
    run_many,
    uid,
)
from conftest import cli_env

from .conftest import CLI_KINDS, module_store
from .helpers import kind_of, store_exists

S_TYPES = "ABCABCABCA"  # the types of s's versions 1..10


@pytest.fixture(scope="module", params=CLI_KINDS)
def built(request, tmp_path_factory):
    """s v1-6 (pos 1-6), order-1 v1-2 (7-8), order-2 v1 (9), s v7-10 (10-13), acct-1 v1 (14)."""
    path = module_store(request, tmp_path_factory)
    s = [{"type": t, "data": {"v": i + 1}, "id": uid(i + 1)} for i, t in enumerate(S_TYPES)]
    ok(run(path, "append", "s", input=ndjson_input(s[:6])))
    ok(run(path, "append", "order-1", input=ndjson_input([{"type": "X"}, {"type": "X"}])))
    ok(run(path, "append", "order-2", "--type", "Y"))
    ok(run(path, "append", "s", input=ndjson_input(s[6:])))
    ok(run(path, "append", "acct-1", "--type", "X"))
    r = run(path, "read", "--all")
    every = events_of(r)
    return path, every, r.stdout


def test_all_is_dense_and_in_commit_order(built):
    _, every, _ = built
    assert [e["position"] for e in every] == list(range(1, 15))
    assert [(e["stream"], e["version"]) for e in every] == (
        [("s", v) for v in range(1, 7)] + [("order-1", 1), ("order-1", 2), ("order-2", 1)]
        + [("s", v) for v in range(7, 11)] + [("acct-1", 1)])
    assert [e["type"] for e in every if e["stream"] == "s"] == list(S_TYPES)
    assert [e["id"] for e in every if e["stream"] == "s"] == [uid(i) for i in range(1, 11)]
    stamps = [e["recorded_at"] for e in every]
    assert all(RFC3339_US.match(t) for t in stamps)
    assert stamps == sorted(stamps)  # non-decreasing in position order


def _s(*versions):
    return [("s", v) for v in versions]


def _p(*positions):
    return list(positions)


# name -> (args, expected): (stream, version) pairs for a stream, positions for --all
STREAM_QUERIES = {
    "whole": (["s"], _s(*range(1, 11))),
    "from-to": (["s", "--from", "3", "--to", "6"], _s(3, 4, 5, 6)),
    "from-to back": (["s", "--from", "3", "--to", "6", "--backwards"], _s(6, 5, 4, 3)),
    "back limit": (["s", "--backwards", "--limit", "2"], _s(10, 9)),
    "from-to back limit": (["s", "--from", "3", "--to", "6", "--backwards", "--limit", "2"], _s(6, 5)),
    "limit": (["s", "--limit", "2"], _s(1, 2)),
    "-n": (["s", "-n", "3", "--from", "9"], _s(9, 10)),
    "from": (["s", "--from", "8"], _s(8, 9, 10)),
    "from 0": (["s", "--from", "0", "--to", "1"], _s(1)),
    "to beyond": (["s", "--from", "10", "--to", "99"], _s(10)),
    "from beyond": (["s", "--from", "11"], []),
    "to 0": (["s", "--to", "0"], []),
    "limit 0": (["s", "--limit", "0"], []),
    "one": (["s", "--from", "7", "--to", "7", "--backwards"], _s(7)),
    "type": (["s", "--type", "A"], _s(1, 4, 7, 10)),
    "types": (["s", "--type", "A", "--type", "C"], _s(1, 3, 4, 6, 7, 9, 10)),
    "type back limit": (["s", "--type", "B", "--backwards", "--limit", "2"], _s(8, 5)),
    "type range": (["s", "--type", "C", "--from", "4", "--to", "9"], _s(6, 9)),
    "type none": (["s", "--type", "Nope"], []),
    "other stream": (["order-1"], [("order-1", 1), ("order-1", 2)]),
}
ALL_QUERIES = {
    "all range": (["--from", "5", "--to", "9"], _p(5, 6, 7, 8, 9)),
    "all back limit": (["--backwards", "--limit", "3"], _p(14, 13, 12)),
    "all range back limit": (["--from", "5", "--to", "9", "--backwards", "--limit", "2"], _p(9, 8)),
    "all prefix": (["--stream-prefix", "order-"], _p(7, 8, 9)),
    "all prefix back": (["--stream-prefix", "order-", "--backwards"], _p(9, 8, 7)),
    "all prefix exact": (["--stream-prefix", "order-1"], _p(7, 8)),
    "all prefix none": (["--stream-prefix", "zzz"], []),
    "all prefix type": (["--stream-prefix", "order-", "--type", "X"], _p(7, 8)),
    "all type": (["--type", "X"], _p(7, 8, 14)),
    "all type from": (["--type", "A", "--from", "5"], _p(10, 13)),
    "all limit": (["--limit", "2", "--from", "13"], _p(13, 14)),
    "all beyond": (["--from", "15"], []),
}


def test_queries(built):
    path, every, _ = built
    by_key = {(e["stream"], e["version"]): e for e in every}
    by_pos = {e["position"]: e for e in every}
    cases = {k: (["read", *a], None) for k, (a, _) in STREAM_QUERIES.items()}
    cases.update({k: (["read", "--all", *a], None) for k, (a, _) in ALL_QUERIES.items()})
    results = run_many(path, cases)
    wrong = {}
    for name, r in results.items():
        args, want = STREAM_QUERIES.get(name) or ALL_QUERIES[name]
        expected = [by_key[k] if isinstance(k, tuple) else by_pos[k] for k in want]
        got = events_of(r)
        if got != expected:
            wrong[name] = [(e["stream"], e["version"], e["position"]) for e in got]
    assert not wrong, wrong


def test_formats(built):
    path, every, all_out = built
    results = run_many(path, {
        "ndjson": (["read", "--all", "--format", "ndjson"], None),
        "json": (["read", "--all", "--format", "json"], None),
        "json s": (["read", "s", "--format", "json", "--backwards", "--limit", "2"], None),
        "json empty": (["read", "s", "--format", "json", "--from", "11"], None),
        "json empty all": (["read", "--all", "--format", "json", "--type", "Nope"], None),
        "JSON": (["read", "s", "--format", "JSON", "--to", "1"], None),
    })
    assert ok(results["ndjson"]) == all_out
    out = ok(results["json"]).decode()
    assert json.loads(out) == every
    lines = out.split("\n")
    assert lines[0] == "[" and lines[-2:] == ["]", ""]
    assert [line.rstrip(",") for line in lines[1:-2]] == [dumps(e) for e in every]
    assert json.loads(ok(results["json s"])) == [every[12], every[11]]
    assert ok(results["json empty"]) == b"[]\n"
    assert ok(results["json empty all"]) == b"[]\n"
    assert json.loads(ok(results["JSON"])) == [every[0]]


def test_read_errors(built):
    path, _, _ = built
    results = run_many(path, {
        "missing stream": (["read", "nope"], None),
        "missing stream with range": (["read", "nope", "--from", "2", "--backwards"], None),
        "neither": (["read"], None),
        "both": (["read", "s", "--all"], None),
        "negative limit": (["read", "s", "--limit", "-1"], None),
        "negative from": (["read", "s", "--from", "-1"], None),
        "negative to": (["read", "--all", "--to", "-3"], None),
        "from not a number": (["read", "s", "--from", "x"], None),
        "prefix without all": (["read", "s", "--stream-prefix", "o"], None),
        "bad format": (["read", "s", "--format", "xml"], None),
        "unknown option": (["read", "s", "--bogus"], None),
        "bad stream id": (["read", "a\tb"], None),
        "empty stream id": (["read", ""], None),
    })
    msgs = all_errors({k: v for k, v in results.items() if k.startswith("missing")}, 4)
    assert msgs == {"missing stream": "stream not found: 'nope'",
                    "missing stream with range": "stream not found: 'nope'"}
    msgs = all_errors({k: v for k, v in results.items() if not k.startswith("missing")}, 2)
    assert msgs["neither"] == "give a STREAM or --all (one of them)"


def test_read_on_a_missing_store_is_exit_4_and_creates_nothing(store_dir, tmp_path):
    store = store_dir
    results = run_many(store, {
        "stream": (["read", "s"], None),
        "all": (["read", "--all"], None),
        "json": (["read", "--all", "--format", "json"], None),
    })
    msgs = all_errors(results, 4)
    assert msgs["stream"].startswith("no event store"), msgs["stream"]
    if kind_of(store) == "files":
        assert msgs["stream"] == f"no event store at {store} (pass --store DIR or set EVSTORE_DIR)"
        assert list(tmp_path.iterdir()) == []
    assert not store_exists(store)


def test_read_all_on_an_empty_store(store_dir):
    # a setting is a write: it makes a store that holds no events
    ok(run(store_dir, "config", "snapshot-every", "5"))
    results = run_many(store_dir, {
        "ndjson": (["read", "--all"], None),
        "json": (["read", "--all", "--format", "json"], None),
        "stream": (["read", "s"], None),
    })
    assert ok(results["ndjson"]) == b""
    assert ok(results["json"]) == b"[]\n"
    error(results["stream"], 4, "stream not found: 's'")


# --- a reader that goes away --------------------------------------------------------------

@pytest.fixture(scope="module", params=CLI_KINDS)
def long_store(request, tmp_path_factory):
    path = module_store(request, tmp_path_factory)
    ok(run(path, "append", "long", "--no-sync",
           input=ndjson_input({"type": "T", "data": {"i": i, "pad": "x" * 100}} for i in range(3000))))
    return path


def _head(store, read_args):
    script = (f"set +o pipefail; {sys.executable} -m evstore {read_args} | head -n 1; "
              "echo \"evstore-exit=${PIPESTATUS[0]}\" >&2")
    return subprocess.run(["bash", "-c", script], capture_output=True, env=cli_env(store),
                          timeout=60)


@pytest.mark.parametrize("read_args", ["read long", "read --all --format json"])
def test_head_closes_the_pipe_quietly(long_store, read_args):
    r = _head(long_store, read_args)
    assert r.returncode == 0
    assert r.stdout.count(b"\n") == 1
    # nothing on stderr but our own exit-status line: no traceback, no message
    assert r.stderr.decode().startswith("evstore-exit="), r.stderr


def test_head_closing_the_pipe_is_exit_0(long_store):
    r = _head(long_store, "read long")
    assert r.stderr == b"evstore-exit=0\n"
