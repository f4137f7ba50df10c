"""The NDJSON fast paths print exactly what the generic path prints.

``read --all``, ``tail --all`` and ``export`` format events straight from the
file backend's commit-log frames (Backend.ndjson_chunks), and ``read STREAM``
through core/lines.py's formatter, instead of ``json.dumps(ev.to_dict())``
per event; the bytes must not change.  The generic path is what a filter
or a limit selects, so each command is compared with itself plus a limit no
store reaches.
"""
from __future__ import annotations

import json

import pytest

from evstore import EventStore, NewEvent
from evstore.core.lines import event_chunks

from conftest import run_cli

BIG = 10 ** 9

DATA = [
    {"text": "é✓𝄞 \u2028 \"quoted\" \\ back\nslash\x00", "emoji": "🙂"},
    {"big": 2 ** 64 - 1, "small": -2 ** 63, "zero": 0, "neg": -1},
    {"floats": [0.1, 1e300, -0.0, 2.5e-308, 123456789.125, -1.5]},
    {"nested": {"a": [1, {"b": [None, True, False, {"c": {}}]}], "z": []}},
    [1, "two", 3.0],
    "a string",
    12345678901234567890,
    None,
    {"dup-ish": 1, "Dup-ish": 2, "": ""},
]
META = [{}, {"corr": "x-1", "n": 7}, {"ü": ["ß", 1.25]}]


def build(path, segment_bytes=2048):
    with EventStore(path, segment_bytes=segment_bytes) as es:
        for i in range(60):
            stream = ["acct-1", "ünï-çødé", "s \"q\"", "x"][i % 4]
            batch = [NewEvent(type=["Deposited", "Typé ✓", "T\"x"][(i + k) % 3],
                              data=DATA[(i + k) % len(DATA)], metadata=META[(i * k) % len(META)])
                     for k in range(1 + i % 4)]
            es.append(stream, batch)
    return path


def generic(events) -> bytes:
    return "".join(json.dumps(ev.to_dict(), ensure_ascii=False) + "\n"
                   for ev in events).encode("utf-8")


def joined(chunks) -> bytes:
    out, n = [], 0
    for data, count in chunks:
        assert data.count(b"\n") == count
        out.append(data)
        n += count
    return b"".join(out)


def test_the_formatters_give_the_generic_bytes(tmp_path):
    a = build(tmp_path / "a")
    assert len([p for p in (a / "log").iterdir() if p.suffix == ".log"]) > 2  # several segments
    with EventStore(a) as es:
        head = es.head()
        whole = generic(es.read_all())
        for lo, hi in [(1, head), (1, 1), (7, head), (5, 33), (head, head), (head + 1, head)]:
            want = generic(es.read_all(from_position=lo, to_position=hi))
            assert joined(es.ndjson_all(lo, hi, workers=1)) == want, (lo, hi)
            assert joined(event_chunks(es.read_all(from_position=lo, to_position=hi),
                                       size=5)) == want
        assert joined(es.ndjson_all()) == whole
        for s in ("acct-1", "ünï-çødé", "s \"q\"", "x"):
            assert joined(event_chunks(es.read(s), size=3)) == generic(es.read(s))


def test_the_fast_path_is_not_taken_when_events_are_removed(tmp_path):
    a = build(tmp_path / "a")
    with EventStore(a) as es:
        assert es.ndjson_all() is not None
        es.truncate("acct-1", before=3)
        assert es.ndjson_all() is None
    r = run_cli("read", "--all", store=a)
    assert r.returncode == 0, r.stderr
    with EventStore(a) as es:
        assert r.stdout == generic(es.read_all())
        assert all(not (e.stream == "acct-1" and e.version < 3) for e in es.read_all())


@pytest.mark.parametrize("args", [
    ["read", "--all"], ["read", "--all", "--from", "9", "--to", "40"], ["read", "acct-1"],
    ["read", "ünï-çødé", "--from", "2", "--to", "9"], ["tail", "--all", "-n", "17"],
    ["tail", "--all", "-n", "1000"], ["tail", "--all", "--from", "12"], ["tail", "--all", "-n", "0"],
])
def test_cli_fast_and_generic_paths_print_the_same_bytes(tmp_path, args):
    a = build(tmp_path / "a")
    extra = ["--max-count", str(BIG)] if args[0] == "tail" else ["--limit", str(BIG)]
    fast = run_cli(*args, store=a)
    slow = run_cli(*args, *extra, store=a)
    assert fast.returncode == slow.returncode == 0, (fast.stderr, slow.stderr)
    assert fast.stderr == slow.stderr == b""
    assert fast.stdout == slow.stdout
    assert fast.stdout or args[-1] == "0"


@pytest.mark.parametrize("args", [["read", "--all"], ["read", "big"], ["tail", "--all", "-n", "3000"]])
def test_damage_midway_prints_what_came_before_it_like_the_generic_path(tmp_path, args):
    """A damaged batch in both copies: exit 6, and the events before it on
    stdout, as the event-by-event path prints them (the fast paths format
    a chunk of ~1024 events at a time).  ``tail -n N``'s generic path
    prints nothing here: it finds where to start by reading back from the
    head, through the damage; the fast path prints what precedes it."""
    a = tmp_path / "a"
    with EventStore(a) as es:
        for i in range(300):
            es.append("big", [NewEvent(type="T", data={"tag": f"tag{10 * i + k:05d}"})
                              for k in range(10)])
    for d in ("log", "streams"):
        for p in a.joinpath(d).rglob("*"):
            if p.is_file() and b"tag02500" in p.read_bytes():
                data = bytearray(p.read_bytes())
                data[data.find(b"tag02500") + 4] ^= 1
                p.write_bytes(bytes(data))
    extra = ["--max-count", str(BIG)] if args[0] == "tail" else ["--limit", str(BIG)]
    fast = run_cli(*args, store=a)
    slow = run_cli(*args, *extra, store=a)
    assert fast.returncode == slow.returncode == 6, (fast.stderr, slow.stderr)
    assert fast.stdout == slow.stdout or (args[0] == "tail" and slow.stdout == b"")
    assert [json.loads(line)["position"] for line in fast.stdout.splitlines()] == \
        list(range(1, 2501))


# --- read STREAM: the stream log, and the commit log for the rest of a big batch ---

def build_batches(path):
    """Streams mixing single events, batches shorter and longer than the
    run that sends a read to the commit log (ndjson.RUN), batches over
    1024 events, and other streams' batches in between."""
    with EventStore(path, segment_bytes=64 * 1024) as es:
        for i, size in enumerate([1, 1, 15, 16, 17, 40, 1, 1300, 2, 33, 1, 2100, 16, 5]):
            es.append("big", [NewEvent(type=["Deposited", "Typé ✓", "T\"x"][k % 3],
                                       data=DATA[(i + k) % len(DATA)],
                                       metadata=META[(i * k) % len(META)]) for k in range(size)])
            es.append(f"other-{i % 3}", [NewEvent(type="O", data={"i": i, "k": k})
                                         for k in range(1 + 20 * (i % 2))])
    return path


RANGES = [(1, None), (1, 1), (2, 40), (17, 18), (20, 3000), (40, 1400), (1380, 3700),
          (3000, None), (5, 5), (3714, None), (9999, None), (30, 29)]


def stream_bytes(es, stream, lo, hi):
    return joined(es.ndjson_stream(stream, lo, hi))


@pytest.mark.parametrize("big", [False, True])
def test_read_stream_fast_path_gives_the_generic_bytes(tmp_path, monkeypatch, big):
    from evstore.backends.files import ndjson
    from evstore.disk import bigframe

    a = build_batches(tmp_path / "a")
    if big:  # every frame but the smallest is 'big': decoded lazily, a STEP at a time
        monkeypatch.setattr(bigframe, "BIG", 200)
        monkeypatch.setattr(bigframe, "STEP", 7)
    jumps = []
    real = ndjson._range_pieces
    monkeypatch.setattr(ndjson, "_range_pieces",
                        lambda d, lo, hi, c=None: jumps.append((lo, hi)) or real(d, lo, hi, c))
    with EventStore(a) as es:
        assert es.version("big") == 3548
        for lo, hi in RANGES:
            want = generic(es.read("big", from_version=lo, to_version=hi))
            assert stream_bytes(es, "big", lo, hi) == want, (lo, hi)
        for s in ("other-0", "other-1", "other-2"):
            assert stream_bytes(es, s, 1, None) == generic(es.read(s))
        assert joined(es.ndjson_all(1, None, workers=1)) == generic(es.read_all())
    assert jumps  # the commit log gave the rest of the long batches


def test_read_stream_fast_path_falls_back_when_events_are_removed(tmp_path):
    from evstore.errors import StreamNotFound

    a = build_batches(tmp_path / "a")
    with EventStore(a) as es:
        with pytest.raises(StreamNotFound):
            es.ndjson_stream("nobody")
        es.truncate("big", before=30)
        assert es.ndjson_stream("big") is None
        assert es.ndjson_stream("other-1") is not None
        es.retention("other-", max_count=3, prefix=True)
        assert es.ndjson_stream("other-1") is None
    for s in ("big", "other-1"):
        r = run_cli("read", s, store=a)
        assert r.returncode == 0, r.stderr
        with EventStore(a) as es:
            assert r.stdout == generic(es.read(s))
    assert json.loads(run_cli("read", "big", store=a).stdout.splitlines()[0])["version"] == 30
    assert len(run_cli("read", "other-1", store=a).stdout.splitlines()) == 3


def test_read_stream_with_a_damaged_commit_log_batch_reads_the_stream_log(tmp_path):
    """The long batch's commit-log copy is damaged: read STREAM still
    prints every event from the stream log, exactly (read --all fails)."""
    a = tmp_path / "a"
    with EventStore(a) as es:
        es.append("s", [NewEvent(type="T", data={"tag": f"tag{k:05d}"}) for k in range(3000)])
        es.append("s", [NewEvent(type="T", data={"tag": "after"})])
        want = generic(es.read("s"))
    seg = a / "log" / "0000000000000001.log"
    data = bytearray(seg.read_bytes())
    data[data.find(b"tag02500") + 4] ^= 1
    seg.write_bytes(bytes(data))
    r = run_cli("read", "s", store=a)
    assert r.returncode == 0, r.stderr
    assert r.stdout == want
    assert run_cli("read", "--all", store=a).returncode == 6


@pytest.mark.parametrize("args", [["read", "big"], ["read", "big", "--from", "20", "--to", "3000"],
                                  ["read", "big", "--format", "json"],
                                  ["read", "--all", "--format", "json"]])
def test_cli_read_stream_fast_and_generic_paths_print_the_same_bytes(tmp_path, args):
    a = build_batches(tmp_path / "a")
    fast = run_cli(*args, store=a)
    slow = run_cli(*args, "--limit", str(BIG), store=a)
    assert fast.returncode == slow.returncode == 0, (fast.stderr, slow.stderr)
    assert fast.stderr == slow.stderr == b""
    assert fast.stdout == slow.stdout


def test_chunk_text_escapes_what_needs_it():
    """Ids that are not canonical UUIDs (36 characters of 0-9a-f-) are
    escaped like any string; the line is what json.dumps makes of the dict."""
    from evstore.core.lines import Stamps, chunk_text
    from evstore.model import us_to_datetime, format_timestamp

    us = 1_780_000_000_123_456
    odd = ["0b6c1e9e-5d8a-4f57-9a64-2c1d7f0e4b1\"", "0B6C1E9E-5D8A-4F57-9A64-2C1D7F0E4B11",
           "é" * 36, "x", "a\\b" * 12, "0b6c1e9e-5d8a-4f57-9a64-2c1d7f0e4b11"]
    batches = [["s\"1", 7, 100 + 10 * k, us + k, i, f"T{k}%s\n", DATA[k % len(DATA)], META[k % 3]]
               for k, i in enumerate(odd)]
    batches.append(["plain", 1, 200, us, *[x for i in range(5) for x in
                    (f"{i:08d}-5d8a-4f57-9a64-2c1d7f0e4b11", "T", {"i": i}, {})]])
    want = "".join(json.dumps({"stream": b[0], "version": b[1] + j, "position": b[2] + j,
                               "id": b[4 + 4 * j], "type": b[5 + 4 * j], "data": b[6 + 4 * j],
                               "metadata": b[7 + 4 * j],
                               "recorded_at": format_timestamp(us_to_datetime(b[3]))},
                              ensure_ascii=False) + "\n"
                   for b in batches for j in range((len(b) - 4) // 4))
    assert chunk_text(batches, Stamps()) == want
    stamps, types, heads = Stamps(), {}, {}  # one at a time, the caches carried over
    assert "".join(chunk_text([b], stamps, types, heads) for b in batches) == want


def test_read_stream_goes_on_from_the_stream_log_when_the_commit_log_fails(tmp_path, monkeypatch):
    """The commit log fails in the middle of a batch it was asked for (here
    made to, after one piece): the stream log gives the rest, from the first
    event not printed, and no batch is asked of the commit log again."""
    from evstore.backends.files import ndjson
    from evstore.disk import bigframe
    from evstore.errors import CorruptStore

    a = build_batches(tmp_path / "a")
    monkeypatch.setattr(bigframe, "BIG", 200)  # a batch comes a few events at a time
    monkeypatch.setattr(bigframe, "STEP", 7)
    real, calls = ndjson._range_pieces, []

    def failing(d, lo, hi, caches=None, log=None):
        it = real(d, lo, hi, caches, log)
        data, k = next(it)
        calls.append(hi - lo + 1 - k)  # events of the batch not printed
        yield data, k
        raise CorruptStore("made to fail")

    monkeypatch.setattr(ndjson, "_range_pieces", failing)
    with EventStore(a) as es:
        for lo, hi in [(1428, None), (1430, 3300)]:  # in the batch of 2100 (a piece: 1024)
            calls.clear()
            assert stream_bytes(es, "big", lo, hi) == generic(es.read("big", from_version=lo,
                                                                     to_version=hi)), (lo, hi)
            assert len(calls) == 1 and calls[0] > 0, calls  # failed inside the batch, once
