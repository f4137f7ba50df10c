"""Huge batches cost bounded memory (issue 15): a batch is one commit-log
frame, and readers, verify and append handle a big one a piece at a time
(evstore/disk/bigframe.py, model.pack_events).

The lazy path is exercised on small data by lowering ``bigframe.BIG`` (and
``STEP``) so that every frame but the smallest counts as big; the memory
itself is checked on a 60k-event batch by measuring child processes' peak
RSS.  bench/bench_memory.py measures the 1M-event figures."""
from __future__ import annotations

import subprocess
import sys

import pytest

from evstore import EventStore, NewEvent
from evstore.disk import bigframe
from evstore.errors import CorruptStore
from evstore.ops import verify

from conftest import cli_env, ndjson, run_cli


@pytest.fixture
def small_big(monkeypatch):
    """Frames over 200 bytes are 'big'; lazy batches mark every 3rd event."""
    monkeypatch.setattr(bigframe, "BIG", 200)
    monkeypatch.setattr(bigframe, "STEP", 3)


def fill(path) -> None:
    with EventStore(path) as es:
        es.append("a", [NewEvent("T", {"i": 0})])  # small: the usual path
        es.append("b", [NewEvent("U" if i % 3 else "T", {"i": i, "s": "x" * (i % 7)}, {"m": i})
                        for i in range(40)])
        es.append("a", [NewEvent("T", {"i": i}) for i in range(1, 12)])
        es.append("c", [NewEvent("T", {"i": i}) for i in range(25)])


QUERIES = [dict(), dict(to_position=10), dict(from_position=5, to_position=60),
           dict(backwards=True), dict(backwards=True, limit=7), dict(from_position=30, limit=4),
           dict(types=["U"]), dict(types=["T"], backwards=True, limit=5), dict(stream_prefix="c"),
           dict(from_position=77, to_position=77), dict(from_position=41, backwards=True)]


def read_everything(path):
    with EventStore(path) as es:
        out = [list(es.read_all(**q)) for q in QUERIES]
        out.append([list(es.read(s, backwards=b)) for s in "abc" for b in (False, True)])
        out.append([es.version(s) for s in "abc"] + [es.head()])
    return out


def test_lazy_batches_read_as_whole_ones_do(tmp_path, monkeypatch):
    fill(tmp_path / "s")
    whole = read_everything(tmp_path / "s")
    monkeypatch.setattr(bigframe, "BIG", 200)
    monkeypatch.setattr(bigframe, "STEP", 3)
    lazy = read_everything(tmp_path / "s")
    assert lazy == whole
    assert [e.position for e in lazy[0]] == list(range(1, 78))
    with EventStore(tmp_path / "s") as es:  # the lazy path really ran
        assert len(list(es.read_all())) == 77
        assert any(es.backend._reader_log()._big.values())


def test_a_damaged_big_frame_is_never_decoded(tmp_path, small_big):
    fill(tmp_path / "s")
    seg = tmp_path / "s" / "log" / "0000000000000001.log"
    data = bytearray(seg.read_bytes())
    at = data.index(b"EvL1", 10)  # the second frame: batch "b" (positions 2..41)
    data[at + 400] ^= 0x01  # a byte well inside it: its first events precede it
    seg.write_bytes(bytes(data))
    with EventStore(tmp_path / "s") as es:
        got = []
        with pytest.raises(CorruptStore, match="checksum"):
            for ev in es.read_all():
                got.append(ev)
        assert [e.position for e in got] == [1]
    report = verify(str(tmp_path / "s"), workers=1)
    assert not report.ok
    assert any("checksum" in p.message for p in report.problems), report.problems


def test_verify_checks_big_frames_whole(tmp_path, small_big):
    fill(tmp_path / "s")
    assert verify(str(tmp_path / "s"), workers=1).ok
    # a stream record that differs from the commit log's copy is still found
    sdir = next((tmp_path / "s" / "streams").glob("*/*"))
    seg = next(sdir.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    assert data.count(b"EvS1") >= 1
    seg.write_bytes(bytes(data[:-1]))  # cut the last record short
    assert not verify(str(tmp_path / "s"), workers=1).ok


def test_a_huge_stdin_batch_appends_exactly(tmp_path, small_big):
    lines = "".join('{"type":"t","data":{"n":%d}}\n' % i for i in range(3000))
    r = run_cli("append", "s", "--expected-version", "no-stream", store=tmp_path / "s",
                input=lines)
    assert r.returncode == 0, r.stderr
    evs = ndjson(run_cli("read", "s", store=tmp_path / "s").stdout)
    assert [e["data"]["n"] for e in evs] == list(range(3000))
    assert {e["recorded_at"] for e in evs} == {evs[0]["recorded_at"]}  # one batch
    # an exact retry (same ids at the same versions) succeeds without writing
    again = "".join(f'{{"type":"t","id":"{e["id"]}","data":{{"n":{e["data"]["n"]}}}}}\n' for e in evs)
    r = run_cli("append", "s", "--expected-version", "0", store=tmp_path / "s", input=again)
    assert r.returncode == 0, r.stderr
    assert ndjson(r.stdout)[0]["version"] == 3000
    assert run_cli("read", "--all", store=tmp_path / "s").stdout.count(b"\n") == 3000


# --- peak memory, measured -------------------------------------------------------

LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, ru = os.wait4(pid, 0)
sys.stderr.write(f"\\nRSS {ru.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_mib(store, *args, stdin: bytes = b"", python: str | None = None) -> float:
    """Peak RSS of ``evstore ARGS`` (or of the Python code ``python``, given
    the store as argv[1]), forked from a small launcher (a child of this
    process would be charged with pytest's own RSS); the largest of the
    process and its worker processes."""
    cmd = ["-c", python, str(store)] if python else ["-m", "evstore", "--store", str(store), *args]
    p = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, *cmd], input=stdin,
                       capture_output=True, env=cli_env(), timeout=300)
    assert p.returncode == 0, p.stderr
    return int(p.stderr.decode().rsplit("RSS ", 1)[1]) / 1024


N = 60_000


def test_huge_batch_memory_stays_flat(tmp_path):
    """A 60k-event batch (1.8 MiB of input): appending it costs a few times
    its input (measured: +10 MiB; before: +81 MiB, 45x), and reading ten
    events of it, or its tail, costs what reading a tiny store does
    (measured: +2-3 MiB; before: +30 MiB for --all, +8 MiB for the stream)."""
    tiny = b'{"type":"t","data":{"n":1}}\n'
    base_append = peak_rss_mib(tmp_path / "t", "append", "t", "--no-sync", stdin=tiny)
    base_read = peak_rss_mib(tmp_path / "t", "read", "--all", "--to", "10")
    lines = b"".join(b'{"type":"t","data":{"n":%d}}\n' % i for i in range(N))
    grown = peak_rss_mib(tmp_path / "s", "append", "t", "--no-sync", stdin=lines) - base_append
    mib = len(lines) / 2**20
    assert grown <= 8 * mib + 4, f"append of {mib:.1f} MiB grew the RSS by {grown:.1f} MiB"
    for args in (["read", "--all", "--to", "10"], ["tail", "--all"], ["read", "t", "--to", "10"]):
        # against the same command on the tiny store: `read` takes the CLI's
        # fast path (no typer, a few MiB less), `tail` does not
        base = base_read if args[0] == "read" else peak_rss_mib(tmp_path / "t", *args)
        extra = peak_rss_mib(tmp_path / "s", *args) - base
        assert extra < 6, f"{' '.join(args)}: {extra:.1f} MiB more than on a tiny store"
    # export in two processes (the CLI's choice from 150,000 events on):
    # a task's text is held whole while in flight, so tasks are small, and
    # the parent streams its own share (measured: +12 MiB; with 50,000-event
    # tasks, its own formatted whole: +32 MiB)
    extra = peak_rss_mib(tmp_path / "s", python=EXPORT_2) - base_read
    assert extra < 20, f"export in two processes: {extra:.1f} MiB more than a tiny read"


EXPORT_2 = """import os, sys
from evstore import EventStore
from evstore.ops.transfer import export_events
with EventStore(sys.argv[1]) as es, open(os.devnull, "wb") as out:
    assert export_events(es, out, workers=2) == 60_000
"""


def test_repair_rebuilds_a_stream_log_from_a_big_batch(tmp_path, small_big):
    """Repair rewrites a lost stream log from its commit-log frames, read
    whole: a big frame's payload, not just the first bytes that hold its
    head (which once cut the events of a batch over 4 KiB short)."""
    import glob
    import os

    from evstore.ops import repair

    path = tmp_path / "s"
    with EventStore(path) as es:
        es.append("a", [NewEvent("T", {"i": 0})])
        es.append("b", [NewEvent("T", {"i": i, "s": "x" * 300}) for i in range(40)])
        want = list(es.read("b"))
    (seg,) = [p for p in glob.glob(str(path / "streams" / "*" / "*" / "*.seg"))
              if os.path.getsize(p) > 10_000]  # stream b's: its one big batch
    os.unlink(seg)
    assert not verify(path).ok
    report = repair(path)
    assert report.ok, [str(p) for p in report.after.problems]
    with EventStore(path) as es:
        assert list(es.read("b")) == want
