"""``streams``, ``info``, where the store is (``--store``, ``$EVSTORE_DIR``,
``./.evstore``), store creation, and damage surfacing as exit 6."""
from __future__ import annotations

import json
import os

import pytest

from cli_helpers import (
    RFC3339_US,
    all_errors,
    error,
    events_of,
    lines_of,
    ndjson_input,
    ok,
    run,
    run_many,
)
from conftest import run_cli


@pytest.fixture(scope="module")
def three_streams(tmp_path_factory):
    path = tmp_path_factory.mktemp("streams") / "store"
    ok(run(path, "append", "acct-1", input=ndjson_input([{"type": "A"}] * 3)))
    ok(run(path, "append", "order-9", "--type", "O"))
    ok(run(path, "append", "acct-2", input=ndjson_input([{"type": "B"}] * 2)))
    ok(run(path, "append", "acct-1", "--type", "C"))
    return path, events_of(run(path, "read", "--all"))


def test_streams_lists_each_stream_once(three_streams):
    path, every = three_streams
    results = run_many(path, {"all": (["streams"], None),
                              "acct": (["streams", "--prefix", "acct-"], None),
                              "none": (["streams", "--prefix", "zzz"], None),
                              "json": (["streams", "--format", "json"], None)})
    out = ok(results["all"])
    rows = lines_of(out)
    assert out.decode().count("\n") == len(rows) == 3
    for row in rows:
        assert list(row) == ["stream", "version", "first_recorded_at", "last_recorded_at"]
        evs = [e for e in every if e["stream"] == row["stream"]]
        assert row["version"] == evs[-1]["version"] == len(evs)
        assert row["first_recorded_at"] == evs[0]["recorded_at"]
        assert row["last_recorded_at"] == evs[-1]["recorded_at"]
        assert RFC3339_US.match(row["first_recorded_at"]) and RFC3339_US.match(row["last_recorded_at"])
    assert {r["stream"]: r["version"] for r in rows} == {"acct-1": 4, "order-9": 1, "acct-2": 2}
    assert sorted(r["stream"] for r in lines_of(ok(results["acct"]))) == ["acct-1", "acct-2"]
    assert ok(results["none"]) == b""
    assert sorted(json.loads(ok(results["json"])), key=str) == sorted(rows, key=str)


def test_info_totals(three_streams, tmp_path):
    from evstore import EventStore

    path, every = three_streams
    EventStore(tmp_path / "empty").close()
    results = {"full": run(path, "info"), "empty": run(tmp_path / "empty", "info")}
    full = lines_of(ok(results["full"]))
    empty = lines_of(ok(results["empty"]))
    assert len(full) == len(empty) == 1
    full, empty = full[0], empty[0]
    for info in (full, empty):
        assert {"streams", "events", "bytes", "segments", "snapshots", "format_version"} <= set(info)
        assert all(type(info[k]) is int for k in ("streams", "events", "bytes", "segments", "snapshots"))
        assert info["format_version"] == 1 and info["snapshots"] == 0
    assert (full["streams"], full["events"]) == (3, len(every)) == (3, 7)
    assert (empty["streams"], empty["events"]) == (0, 0)
    on_disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    assert 0 < full["bytes"] <= on_disk
    assert full["segments"] >= 1


def test_streams_and_info_on_a_missing_store(tmp_path):
    store = tmp_path / "missing"
    results = run_many(store, {"streams": (["streams"], None), "info": (["info"], None),
                               "prefix": (["streams", "--prefix", "a"], None)})
    msgs = all_errors(results, 4)
    assert set(msgs.values()) == {f"no event store at {store} (pass --store DIR or set EVSTORE_DIR)"}
    assert list(tmp_path.iterdir()) == []


# --- where the store is ----------------------------------------------------------------------

def test_store_resolution(tmp_path):
    """``--store`` (before or after the command), else $EVSTORE_DIR, else ./.evstore."""
    a, b, c, cwd = (tmp_path / n for n in ("a", "b", "c", "cwd"))
    cwd.mkdir()
    env_c = {"EVSTORE_DIR": str(c)}
    ok(run_cli("--store", a, "append", "s", "--type", "A", cwd=cwd))
    ok(run_cli("append", "s", "--type", "B", "--store", b, cwd=cwd))
    ok(run_cli("append", "s", "--type", "C", env=env_c, cwd=cwd))
    ok(run_cli("append", "s", "--type", "D", cwd=cwd))
    # the command's --store beats $EVSTORE_DIR
    ok(run_cli("append", "s", "--type", "B2", "--store", b, env=env_c, cwd=cwd))
    reads = {
        "a": run_cli("read", "s", "--store", a),
        "b": run_cli("--store", b, "read", "s"),
        "c": run_cli("read", "s", env=env_c),
        "default": run_cli("read", "s", cwd=cwd),
    }
    types = {k: [e["type"] for e in events_of(r)] for k, r in reads.items()}
    assert types == {"a": ["A"], "b": ["B", "B2"], "c": ["C"], "default": ["D"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c", "cwd"]
    assert [p.name for p in cwd.iterdir()] == [".evstore"]


def test_store_before_the_command_beats_evstore_dir(tmp_path):
    a, c = tmp_path / "a", tmp_path / "c"
    ok(run_cli("--store", a, "append", "s", "--type", "A", env={"EVSTORE_DIR": str(c)}))
    assert not c.exists()
    assert [e["type"] for e in events_of(run_cli("--store", a, "read", "s",
                                                 env={"EVSTORE_DIR": str(c)}))] == ["A"]


def test_concurrent_creation_of_a_store(tmp_path, monkeypatch):
    """Deterministic version of the race: a second process appends while
    this one is between making the directories and writing the marker."""
    import evstore.backends.files.engine as store_mod
    from evstore import EventStore

    store = tmp_path / "store"
    real = store_mod.recovery.write_atomic
    other = []

    def racing(path, data, sync=True):
        if str(path).endswith("evstore.json") and not other:
            other.append(run_cli("append", "s", "--type", "Other", store=store))
        return real(path, data, sync)

    monkeypatch.setattr(store_mod.recovery, "write_atomic", racing)
    with EventStore(store) as es:
        es.append("s", [{"type": "Mine"}])
    assert other, "the marker was not written through recovery.write_atomic"
    ok(other[0])
    assert sorted(e["type"] for e in events_of(run(store, "read", "s"))) == ["Mine", "Other"]


# --- damage ------------------------------------------------------------------------------------

def test_a_flipped_byte_in_the_commit_log_is_exit_6(tmp_path):
    store = tmp_path / "store"
    for i in range(6):
        ok(run(store, "append", f"s{i % 2}", "--no-sync", "--type", "T",
               "--data", f'{{"i": {i}, "pad": "{"x" * 40}"}}'))
    seg = store / "log" / "0000000000000001.log"
    raw = bytearray(seg.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    seg.write_bytes(bytes(raw))
    # events before the damage may already be on stdout: read streams
    msg = error(run(store, "read", "--all"), 6, stdout_empty=False)
    assert "0000000000000001.log" in msg, msg
