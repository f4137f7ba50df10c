"""`info`: the documented totals and the figures operators watch."""
from __future__ import annotations

import json
import os

from evstore import EventStore, NewEvent
from evstore.features.checkpoints import CheckpointStore


def fill(d):
    with EventStore(d, segment_bytes=400) as es:
        for i in range(12):
            es.append("acct-%d" % (i % 3), [NewEvent("T", {"i": i, "pad": "x" * 40})] * 2)
        es.snapshots.save("acct-0", {"n": 8}, 8)
        cps = CheckpointStore(es)
        cps.save("projector", 20)
        cps.save("mailer", 24)


def test_totals_and_breakdown(tmp_path):
    d = tmp_path / "s"
    fill(d)
    with EventStore(d) as es:
        info = es.info(per_stream=True)
    for key in ("streams", "events", "bytes", "segments", "snapshots", "format_version"):
        assert key in info
    assert (info["streams"], info["events"], info["snapshots"]) == (3, 24, 1)
    on_disk = sum(os.lstat(os.path.join(r, f)).st_size
                  for r, _, fs in os.walk(d) for f in fs)
    assert info["bytes"] == on_disk == sum(info["bytes_by_kind"].values())
    assert info["segments"] == info["log_segments"] + info["stream_segments"] > 4
    assert info["synced_position"] == 24  # close() made the stream logs durable
    assert info["fsync_failed"] is None and info["temp_files"] == 0
    lag = {c["name"]: c["behind"] for c in info["checkpoints"]}
    assert lag == {"mailer": 0, "projector": 4}
    rows = {r["stream"]: r for r in info["per_stream"]}
    assert sorted(rows) == ["acct-0", "acct-1", "acct-2"]
    assert all(r["events"] == 8 for r in rows.values())
    assert rows["acct-0"]["snapshots"] == 1 and rows["acct-1"]["snapshots"] == 0
    assert sum(r["segments"] for r in rows.values()) == info["stream_segments"]


def test_leftovers_and_flags_are_shown(tmp_path, cli):
    d = tmp_path / "s"
    fill(d)
    (d / "streams" / ".tmp-abc-1").mkdir()
    (d / "fsync-failed").write_text("fsync of the commit log failed at position 7 (EIO)\n")
    r = cli("info", "--streams", store=d)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["temp_files"] == 1
    assert "EIO" in info["fsync_failed"]
    assert len(info["per_stream"]) == 3
    r = cli("info", store=d)
    assert "per_stream" not in json.loads(r.stdout)
