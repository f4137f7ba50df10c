"""The command line on every backend a process can reach (files, PostgreSQL):
exit codes and messages, reads by id and by time, tail, snapshots and
replay, streams, info, export/import round trips.  Real processes only."""
from __future__ import annotations

import json
import time

from cli_helpers import dumps, error, events_of, ndjson_input, ok, run, uid
from conftest import ndjson

from .helpers import kind_of, store_exists


def batch(n, first_id=1, type_="T"):
    return [{"type": type_, "data": {"i": i}, "id": uid(first_id + i)} for i in range(n)]


def test_expected_version_conflicts_are_exit_3(store_dir):
    error(run(store_dir, "append", "s", "--type", "A", "--expected-version", "exists"), 3,
          startswith="wrong expected version: expected exists, current is 0")
    ok(run(store_dir, "append", "s", "--expected-version", "no-stream",
           input=ndjson_input(batch(2))))
    for expected, shown in [("no-stream", "0"), ("1", "1"), ("5", "5")]:
        msg = error(run(store_dir, "append", "s", "--type", "A",
                        "--expected-version", expected), 3)
        assert msg.startswith(f"wrong expected version: expected {shown}, current is 2"), msg
    # a retry of the same batch is a success that writes nothing; a partial one is exit 3
    assert json.loads(ok(run(store_dir, "append", "s", "--expected-version", "0",
                             input=ndjson_input(batch(2))))) == \
        {"stream": "s", "version": 2, "position": 2, "count": 2}
    error(run(store_dir, "append", "s", "--expected-version", "0",
              input=ndjson_input(batch(1) + batch(1, 9))), 3)
    assert [e["version"] for e in events_of(run(store_dir, "read", "s"))] == [1, 2]


def test_missing_store_and_stream_are_exit_4_and_create_nothing(store_dir):
    for args in (["read", "s"], ["read", "--all"], ["tail", "s"], ["info"], ["streams"],
                 ["export", "--all"], ["replay", "s"], ["snapshot", "s", "--show"],
                 ["read", "--id", uid(1)]):
        msg = error(run(store_dir, *args), 4)
        assert "no event store" in msg, (args, msg)
    assert not store_exists(store_dir)
    ok(run(store_dir, "append", "s", "--type", "A"))
    assert error(run(store_dir, "read", "t"), 4) == "stream not found: 't'"
    error(run(store_dir, "tail", "t"), 4)
    error(run(store_dir, "replay", "t"), 4)
    error(run(store_dir, "snapshot", "s", "--show"), 4)
    assert "no event with id" in error(run(store_dir, "read", "--id", uid(7)), 4)


def test_read_by_id_and_by_time(store_dir):
    ok(run(store_dir, "append", "early", input=ndjson_input(batch(1))))
    time.sleep(0.01)
    ok(run(store_dir, "append", "early", input=ndjson_input(batch(1, 2))))
    [cut] = events_of(run(store_dir, "read", "early", "--from", "2"))
    time.sleep(0.01)
    ok(run(store_dir, "append", "late", input=ndjson_input(batch(1, 10))))
    [found] = events_of(run(store_dir, "read", "--id", uid(2)))
    assert found == cut
    at = cut["recorded_at"]
    assert [e["stream"] for e in events_of(run(store_dir, "read", "--all", "--until", at))] == \
        ["early", "early"]
    assert [e["stream"] for e in events_of(run(store_dir, "read", "--all", "--since", at))] == \
        ["early", "late"]
    assert [e["version"] for e in events_of(run(store_dir, "read", "early", "--since", at))] == [2]
    assert [e["stream"] for e in ndjson(ok(run(store_dir, "streams", "--since", at)))] == \
        ["early", "late"]


def test_reads_and_tail_without_follow(store_dir):
    ok(run(store_dir, "append", "a", input=ndjson_input(batch(12))))
    ok(run(store_dir, "append", "b", input=ndjson_input(batch(3, 100, "U"))))
    assert [e["version"] for e in events_of(run(store_dir, "tail", "a"))] == list(range(3, 13))
    assert [e["version"] for e in events_of(run(store_dir, "tail", "a", "-n", "2"))] == [11, 12]
    assert [e["position"] for e in events_of(run(store_dir, "tail", "--all", "-n", "4"))] == \
        [12, 13, 14, 15]
    got = events_of(run(store_dir, "read", "--all", "--from", "2", "--to", "14", "--backwards",
                        "--limit", "3", "--type", "U"))
    assert [e["position"] for e in got] == [14, 13]
    got = events_of(run(store_dir, "read", "a", "--from", "3", "--to", "6", "--backwards"))
    assert [e["version"] for e in got] == [6, 5, 4, 3]
    assert [e["stream"] for e in events_of(run(store_dir, "read", "--all",
                                               "--stream-prefix", "b"))] == ["b"] * 3
    streams = ndjson(ok(run(store_dir, "streams")))
    assert [(s["stream"], s["version"]) for s in streams] == [("a", 12), ("b", 3)]
    assert list(streams[0]) == ["stream", "version", "first_recorded_at", "last_recorded_at"]


def test_info_names_the_backend(store_dir):
    ok(run(store_dir, "append", "a", input=ndjson_input(batch(3))))
    info = json.loads(ok(run(store_dir, "info")))
    want = {"files": "files", "postgres": "postgresql"}[kind_of(store_dir)]
    assert info["backend"] == want
    assert (info["streams"], info["events"]) == (1, 3)
    # the keys every store's info has, whatever holds it
    missing = {"streams", "events", "bytes", "segments", "snapshots", "format_version"} - set(info)
    assert not missing, f"info lacks {sorted(missing)}: {info}"
    assert info["bytes"] > 0
    if want == "postgresql":
        assert info["segments"] == 0


def test_repair_is_for_directories(store_dir):
    ok(run(store_dir, "append", "a", "--type", "T"))
    if kind_of(store_dir) == "files":
        ok(run(store_dir, "verify"))
        return
    ok(run(store_dir, "verify"))
    assert "director" in error(run(store_dir, "repair"), 2)


REDUCER = """
def total(state, event):
    state = state or {"n": 0}
    return {"n": state["n"] + event["data"]["i"]}
"""


def test_snapshots_and_replay(store_dir, tmp_path):
    (tmp_path / "red.py").write_text(REDUCER)
    red = f"{tmp_path / 'red.py'}:total"
    for i in range(1, 6):
        ok(run(store_dir, "append", "s", "--type", "T", "--data", dumps({"i": i})))
    [third] = events_of(run(store_dir, "read", "s", "--from", "3", "--to", "3"))
    snap = json.loads(ok(run(store_dir, "snapshot", "s", "--reducer", red, "--version", "2")))
    assert (snap["version"], snap["state"]) == (2, {"n": 3})
    assert json.loads(ok(run(store_dir, "snapshot", "s", "--show")))["state"] == {"n": 3}
    out = json.loads(ok(run(store_dir, "replay", "s", "--reducer", red)))
    assert out == {"stream": "s", "version": 5, "state": {"n": 15}}
    out = json.loads(ok(run(store_dir, "replay", "s", "--reducer", red, "--to-version", "4")))
    assert (out["version"], out["state"]) == (4, {"n": 10})
    out = json.loads(ok(run(store_dir, "replay", "s", "--reducer", red,
                            "--at", third["recorded_at"])))
    assert (out["version"], out["state"]) == (3, {"n": 6})
    r = run(store_dir, "replay", "s", "--reducer", red, "--steps", "--no-snapshot")
    assert r.returncode == 0
    steps = ndjson(r.stdout)
    assert [(s["version"], s["state"]) for s in steps] == \
        [(v, {"n": v * (v + 1) // 2}) for v in range(1, 6)]
    r = run(store_dir, "replay", "s", "--reducer", red, "--verify-snapshots")
    assert r.returncode == 0, r.stderr
    ok(run(store_dir, "snapshot", "s", "--state", '{"n": -1}', "--version", "4",
           "--reducer", red))
    r = run(store_dir, "replay", "s", "--reducer", red, "--verify-snapshots")
    assert r.returncode == 6, r.stderr


def test_export_import_export_is_byte_identical(store_dir, another):
    ok(run(store_dir, "append", "a", input=ndjson_input(batch(3))))
    ok(run(store_dir, "append", "b", "--type", "Ü", "--data", dumps([2**64 - 1, -2**63, 0.1])))
    ok(run(store_dir, "append", "a", "--type", "T", "--metadata", '{"z": 1, "a": 2}'))
    first = ok(run(store_dir, "export", "--all"))
    assert len(first.split(b"\n")) == 6
    copy = another(kind_of(store_dir))
    assert str(copy) != str(store_dir)
    ok(run(copy, "import", input=first))
    assert ok(run(copy, "export", "--all")) == first


def test_files_to_postgres_to_files_is_byte_identical(another):
    files, pg, back = another("files"), another("postgres"), another("files")
    ok(run(files, "append", "a", input=ndjson_input(batch(40))))
    ok(run(files, "append", "ü/../x", "--type", "T", "--data", dumps({"z": 2**64 - 1, "a": 0.5})))
    ok(run(files, "append", "a", "--type", "T", "--metadata", dumps(["𝄞", None])))
    first = ok(run(files, "export", "--all"))
    ok(run(pg, "import", input=first))
    assert ok(run(pg, "export", "--all")) == first
    ok(run(back, "import", input=ok(run(pg, "export", "--all"))))
    assert ok(run(back, "export", "--all")) == first
    assert ok(run(back, "verify")) is not None
