"""Hostile stream ids: each is an ordinary, distinct stream, and
nothing is ever written outside the store directory.

The store lives in a fresh parent directory and the CLI runs from another
fresh directory, so a path built from a raw id (``../x``, ``a/b``, ``..``)
would show up as an extra entry in one of them.
"""
from __future__ import annotations

import os

import pytest

from cli_helpers import all_errors, events_of, lines_of, ok, run_many
from conftest import run_cli

HOSTILE = [
    "../x", "a/b", ".", "..", "CON", "con.txt", "%2e%2e", "NUL", " ", "  ", "Acct", "acct",
    "é", "e\u0301", "héllo→שלום😀", "/etc/passwd", "..\\..\\x", "~", "*", "~$HOME", "-dash",
    "a" * 200, "é" * 100, "😀" * 50,  # exactly 200 UTF-8 bytes
]


def _append(stream, i):
    # "--" so that ids starting with "-" are not options
    return ["append", "--type", "T", "--data", f'{{"i": {i}}}', "--", stream]


@pytest.fixture
def dirs(tmp_path):
    parent, cwd = tmp_path / "parent", tmp_path / "cwd"
    parent.mkdir()
    cwd.mkdir()
    return tmp_path, parent / "store", cwd


def _run_many_in(cwd, store, cases):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as ex:
        futs = {k: ex.submit(run_cli, *a, store=store, cwd=cwd) for k, a in cases.items()}
        return {k: f.result() for k, f in futs.items()}


def test_hostile_ids_are_ordinary_distinct_streams(dirs):
    root, store, cwd = dirs
    assert len(set(HOSTILE)) == len(HOSTILE)
    # the store exists first: creating one concurrently is a known core bug
    # (test_cli_store.py::test_concurrent_creation_of_a_store)
    ok(run_cli("append", "seed", "--type", "Seed", store=store, cwd=cwd))
    # concurrent writers on different streams: also checks the lock serialises them
    results = _run_many_in(cwd, store, {s: _append(s, i) for i, s in enumerate(HOSTILE)})
    for s, r in results.items():
        res = lines_of(ok(r))
        assert len(res) == 1 and res[0]["stream"] == s and res[0]["version"] == 1, (s, res)
    assert sorted(res["position"] for r in results.values() for res in lines_of(r.stdout)) == list(
        range(2, len(HOSTILE) + 2))

    reads = _run_many_in(cwd, store, {s: ["read", "--", s] for s in HOSTILE})
    reads["--all"] = run_cli("read", "--all", store=store, cwd=cwd)
    reads["streams"] = run_cli("streams", store=store, cwd=cwd)
    for i, s in enumerate(HOSTILE):
        [ev] = events_of(reads[s])
        assert (ev["stream"], ev["version"], ev["data"]) == (s, 1, {"i": i}), s
    assert sorted((e["stream"], e["data"]["i"]) for e in events_of(reads["--all"])[1:]) == sorted(
        (s, i) for i, s in enumerate(HOSTILE))
    assert sorted(row["stream"] for row in lines_of(ok(reads["streams"]))) == sorted(HOSTILE + ["seed"])
    assert all(row["version"] == 1 for row in lines_of(reads["streams"].stdout))

    # nothing outside the store, and no raw id inside it
    assert sorted(p.name for p in root.iterdir()) == ["cwd", "parent"]
    assert list(cwd.iterdir()) == []
    assert [p.name for p in store.parent.iterdir()] == ["store"]
    real_store = os.path.realpath(store)
    for dirpath, dirnames, filenames in os.walk(store):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            assert not os.path.islink(path), path
            assert os.path.realpath(path).startswith(real_store + os.sep), path
            for s in HOSTILE:
                if s != ".":  # "." is in every file name with an extension
                    assert s not in name, (s, path)
                assert name != s, (s, path)


def test_stream_id_limits(dirs):
    _, store, cwd = dirs
    ok(run_cli("append", "seed", "--type", "T", store=store))
    too_long = ["a" * 201, "é" * 100 + "x", "😀" * 50 + "a", "a" * 5000]
    control = ["a\tb", "a\nb", "\r", "x\x7f", "\x1b[31mred", "a\u0085b", "\x01"]
    cases = {}
    for s in too_long + control:
        cases["append " + repr(s)] = (["append", "--type", "T", "--", s], None)
        cases["read " + repr(s)] = (["read", "--", s], None)
    cases["append ''"] = (["append", "--type", "T", "--", ""], None)
    cases["read ''"] = (["read", "--", ""], None)
    before = sorted(p for p, _, _ in os.walk(store))
    msgs = all_errors(run_many(store, cases), 2)
    assert msgs["append " + repr("é" * 100 + "x")] == "invalid stream id: 201 UTF-8 bytes, at most 200 allowed"
    assert msgs["read " + repr("a\tb")] == "invalid stream id 'a\\tb': contains a control character"
    assert msgs["append ''"] == "invalid stream id: must be a non-empty string"
    assert sorted(p for p, _, _ in os.walk(store)) == before
