"""Checkpoints and settings carry a check line (features/checkline.py, shared
with snapshots): a changed byte is damage -- ``verify`` exit 6 naming the
file, ``tail --checkpoint`` exit 6 -- never a position that silently skips
events or a setting that silently changes.  Files written before checksums
are still used, and rewritten with one on their next save."""
from __future__ import annotations

import json
import os

import pytest

from cli_helpers import error
from conftest import ndjson
from evstore import EventStore, NewEvent
from evstore.errors import CorruptStore
from evstore.features import checkline, settings
from evstore.features.checkpoints import CheckpointStore, decode


@pytest.fixture
def store(store_dir):
    with EventStore(store_dir) as es:
        es.append("s", [NewEvent("T", {"i": i}) for i in range(1, 21)])
    return store_dir


def checkpoint_file(store, name="c") -> str:
    with EventStore(store) as es:
        return CheckpointStore(es).path(name)


def edit(path, old: bytes, new: bytes) -> None:
    with open(path, "rb") as f:
        data = f.read()
    assert data.count(old) == 1, data
    with open(path, "wb") as f:
        f.write(data.replace(old, new))


def test_a_changed_checkpoint_position_is_damage_not_a_skip(cli, store):
    assert len(ndjson(cli("tail", "--all", "--checkpoint", "c", "--max-count", "10").stdout)) == 10
    path = checkpoint_file(store)
    rel = os.path.relpath(path, store)
    assert cli("verify").returncode == 0
    edit(path, b'"position": 10', b'"position": 18')  # one bit ("0" -> "8"), as in the issue
    r = cli("verify")
    assert r.returncode == 6, r
    assert rel.encode() in r.stdout + r.stderr and b"checksum mismatch" in r.stdout + r.stderr
    r = cli("tail", "--all", "--checkpoint", "c")
    msg = error(r, 6)
    assert rel in msg and "checksum mismatch" in msg
    r = cli("tail", "--all", "--checkpoint", "c", "-f", "--exec", "cat")
    assert error(r, 6) == msg
    # the ways out: set (forced over damage) or reset
    assert cli("checkpoints", "set", "c", "10").returncode == 6
    assert json.loads(cli("checkpoints", "set", "c", "10", "--force").stdout)["position"] == 10
    assert [e["position"] for e in ndjson(cli("tail", "--all", "--checkpoint", "c").stdout)] == \
        list(range(11, 21))


def test_repair_quarantines_a_damaged_checkpoint(cli, store):
    cli("tail", "--all", "--checkpoint", "c", "--max-count", "10")
    edit(checkpoint_file(store), b'"position": 10', b'"position": 18')
    assert cli("repair").returncode == 0
    assert cli("verify").returncode == 0
    assert len(ndjson(cli("tail", "--all", "--checkpoint", "c").stdout)) == 20  # again, none lost


def test_every_flipped_bit_of_a_checkpoint_file_is_detected(tmp_path):
    data = checkline.seal(b'{"evstore_checkpoint": 1, "name": "c", "position": 10, '
                          b'"stream": null, "updated_at": "2026-12-06T07:42:15.310666Z"}\n')
    assert decode(data, "x").position == 10
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(CorruptStore):
                decode(bytes(bad), "x")


def test_every_flipped_bit_of_the_settings_is_detected(store_dir):
    with EventStore(store_dir) as es:
        settings.update(es, snapshot_every=5)
    path = settings.path(store_dir)
    with open(path, "rb") as f:
        data = f.read()
    assert settings.load(store_dir) == {"snapshot_every": 5}
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(CorruptStore):
                settings.decode(bytes(bad), "x")


def test_a_changed_setting_is_damage(cli, store):
    assert cli("config", "snapshot_every", "5").returncode == 0
    edit(os.path.join(store, "settings.json"), b'"snapshot_every": 5', b'"snapshot_every": 7')
    r = cli("verify")
    assert r.returncode == 6 and b"settings.json" in r.stdout + r.stderr
    for args in (["config"], ["append", "s", "--type", "T"], ["replay", "s"]):
        msg = error(cli(*args), 6)
        assert "settings.json" in msg and "checksum mismatch" in msg, args
    assert cli("repair").returncode == 0
    assert cli("verify").returncode == 0
    assert json.loads(cli("config").stdout)["snapshot_every"] is None  # the defaults again


def test_files_from_before_checksums_are_used_and_rewritten(cli, store):
    # what the previous version wrote: one line, no check line
    old_cp = (b'{"evstore_checkpoint": 1, "name": "c", "position": 10, "stream": null, '
              b'"updated_at": "2026-12-01T00:00:00.000000Z"}\n')
    path = checkpoint_file(store)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(old_cp)
    with open(os.path.join(store, "settings.json"), "wb") as f:
        f.write(b'{\n "snapshot_every": 5\n}\n')
    r = cli("verify")
    assert r.returncode == 0, r
    assert b"no checksum" in r.stdout + r.stderr
    assert json.loads(cli("config").stdout)["snapshot_every"] == 5
    # nothing new to deliver, and still the file gets its check line
    assert [e["position"] for e in ndjson(cli("tail", "--all", "--checkpoint", "c",
                                              "--max-count", "0").stdout)] == []
    with open(path, "rb") as f:
        assert checkline.unseal(f.read())[1]
    assert [e["position"] for e in ndjson(cli("tail", "--all", "--checkpoint", "c").stdout)] == \
        list(range(11, 21))
    assert cli("config", "snapshot_every", "6").returncode == 0
    with open(os.path.join(store, "settings.json"), "rb") as f:
        assert checkline.unseal(f.read())[1]
    r = cli("verify")
    assert r.returncode == 0 and b"no checksum" not in r.stdout + r.stderr


def test_snapshots_share_the_check_line(store_dir):
    with EventStore(store_dir) as es:
        es.append("s", [NewEvent("T", {"a": 1})])
        snap = es.snapshots.save("s", {"a": 1}, 1)
        with open(snap.path, "rb") as f:
            data = f.read()
    body, sealed = checkline.unseal(data)
    assert sealed and data == checkline.seal(body)


def test_unreadable_documents_keep_their_exit_codes_and_messages(cli, store):
    """A checkpoint, the settings or a snapshot that is a directory where
    the file belongs: damage naming it (exit 6), like a link or a FIFO
    there, though one reader reads them all (backends/files/docfile.py);
    a directory is no I/O error: nothing was read."""
    cp = checkpoint_file(store)
    os.makedirs(cp)
    msg = error(cli("tail", "--all", "--checkpoint", "c"), 6)
    assert msg == f"{cp} is a directory, not a regular file; evstore reads and writes only its own files", msg
    os.rmdir(cp)
    settings_file = os.path.join(store, "settings.json")
    os.makedirs(settings_file)
    msg = error(cli("config"), 6)
    assert msg.startswith(f"{settings_file} is a directory, not a regular file"), msg
    os.rmdir(settings_file)
    assert cli("snapshot", "s").returncode == 0
    with EventStore(store) as es:
        snap = es.backend.snapshot_path("s", 20)
    os.unlink(snap)
    os.makedirs(snap)
    with EventStore(store) as es, pytest.raises(CorruptStore) as e:
        es.backend.get_snapshot("s", 20)
    assert str(e.value).startswith(f"{snap} is a directory, not a regular file")
