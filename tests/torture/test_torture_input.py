"""Torture: hostile input (issue 6).

* the JSON input path: random and mutated bytes on ``append``/``import``
  stdin give exit 0 (the mutation happened to be valid) or 5 with one line on
  stderr, nothing on stdout, never a traceback, and the store's files
  untouched; the same through the library parser, many more examples;
* the record decoder and frame reader: random / mutated bytes never decode
  as an event and raise only the errors the store catches;
* events around the 16 MiB size limit;
* files the store did not write, planted inside it.
"""
from __future__ import annotations

import io
import json
import os
import random
import uuid

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import ndjson, run_cli
from core_helpers import LONG, store_files as tree
from evstore import EventStore
from evstore.errors import CorruptStore, InvalidEvent
from evstore.disk.format import LOG_MAGIC, STREAM_MAGIC, FrameError, check_frame, encode_frame
from evstore.features.jsonio import iter_documents
from evstore.disk.records import decode_batch, decode_batch_head
from evstore.model import DEFAULT_MAX_EVENT_BYTES, normalize


SEEDS = [
    b'{"type": "A", "data": {"n": 1, "s": "\xc3\xa9"}, "metadata": {"by": "ci"}}\n'
    b'{"type": "B", "data": [1, 2.5, null, true], "id": "6f1c2b1e-8a3c-4d2e-9b1a-0c4d5e6f7a8b"}\n',
    b'[{"type": "A"}, {"type": "B", "data": {"big": 9223372036854775807}}]',
    b'{"type": "A", "data": {"deep": [[[{"x": -1e10}]]]}}\n\n{"type": "C"}\n',
]
TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"18446744073709551616", b"-9223372036854775809",
          b'"type": ""', b'"id": "nope"', b"\xff", b"\xc3", b"\x00", b"[", b"]", b"{", b"}",
          b'"', b"\\", b"\\ud800", b",", b"\n", b"1e999", b"[" * 5000, b'"type": 1']


def mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(6)
        i = rnd.randrange(len(b) + 1)
        if op == 0 and b:  # flip a bit
            j = rnd.randrange(len(b))
            b[j] ^= 1 << rnd.randrange(8)
        elif op == 1:  # insert a random byte
            b[i:i] = bytes([rnd.randrange(256)])
        elif op == 2 and b:  # delete a run
            del b[i:i + rnd.randint(1, 8)]
        elif op == 3:  # truncate
            del b[i:]
        elif op == 4:  # a hostile token
            b[i:i] = rnd.choice(TOKENS)
        else:  # duplicate a chunk
            j = rnd.randrange(len(b) + 1)
            b[i:i] = b[j:j + rnd.randint(1, 30)]
    return bytes(b)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["append", "import"])
def test_cli_stdin_mutation_fuzz(tmp_path, command):
    store = tmp_path / "store"
    run_cli("append", "seed", "--type", "Seed", store=store).check_returncode()
    rnd = random.Random(f"fuzz-{command}")
    outcomes = {}
    for k in range(100 if LONG else 12):
        data = mutate(rnd, rnd.choice(SEEDS))
        if command == "import":  # recorded events: the exporter's shape, mutated
            data = mutate(rnd, run_cli("export", store=store).stdout or SEEDS[0])
        before = tree(store)
        args = ("append", f"f{k}") if command == "append" else ("import",)
        r = run_cli(*args, store=store, input=data)
        err = r.stderr.decode("utf-8", "replace")
        outcomes[r.returncode] = outcomes.get(r.returncode, 0) + 1
        assert "Traceback" not in err, (data, err)
        if r.returncode == 0:
            continue
        assert r.returncode in (5, 2, 3, 4, 6), (r.returncode, data, err)  # import: 4/6/3 are its own
        assert r.stdout == b"", (data, r.stdout)
        assert err.strip() and len(err.strip().splitlines()) == 1, (data, err)
        if command == "append" or r.returncode == 5:
            assert tree(store) == before, f"rejected input changed the store: {data!r} {err}"
    assert outcomes.get(5, 0) >= (10 if LONG else 4), outcomes  # the mutations really were rejected


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=300),
                 st.builds(lambda s, seed: mutate(random.Random(seed), SEEDS[s]),
                           st.integers(0, len(SEEDS) - 1), st.integers(0, 2**32))))
def test_json_input_parser_raises_only_invalid_event(data):
    """The parse + validate stage of append: InvalidEvent or good events."""
    try:
        for where, obj in iter_documents(io.BytesIO(data)):
            ev = normalize(obj, where, str(uuid.uuid4()))
            assert isinstance(ev.type, str) and ev.type
    except InvalidEvent as e:
        assert str(e) and "\n" not in str(e)


# --- the record decoder and the frame reader -------------------------------------------

def _valid_batch_payload(rnd):
    k = rnd.randint(1, 3)
    items = ["s", 1, 1, 1_700_000_000_000_000]
    for i in range(k):
        items += [str(uuid.uuid4()), "T", {"i": i, "x": "y" * rnd.randrange(20)}, {}]
    return msgpack.packb(items)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2**32), st.sampled_from([LOG_MAGIC, STREAM_MAGIC]), st.integers(1, 6))
def test_mutated_frames_never_decode(seed, magic, flips):
    """A frame with any byte changed is a FrameError, never a payload."""
    rnd = random.Random(seed)
    payload = _valid_batch_payload(rnd)
    frame = bytearray(encode_frame(magic, payload))
    assert bytes(check_frame(bytes(frame), 0, magic)[0]) == payload
    orig = bytes(frame)
    for _ in range(flips):
        if not frame:
            break
        op = rnd.randrange(3)
        if op == 0:
            j = rnd.randrange(len(frame))
            frame[j] ^= 1 << rnd.randrange(8)
        elif op == 1:
            del frame[rnd.randrange(len(frame)):]
        else:
            j = rnd.randrange(len(frame))
            frame[j] = rnd.randrange(256)
    if bytes(frame) == orig:
        return
    with pytest.raises(FrameError):
        check_frame(bytes(frame), 0, magic)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=200))
def test_random_bytes_are_not_frames(data):
    for magic in (LOG_MAGIC, STREAM_MAGIC):
        try:
            payload, end = check_frame(data, 0, magic)
        except FrameError:
            continue
        # only possible when the bytes really are a frame (magic, lengths, CRC)
        assert data[:end] == encode_frame(magic, bytes(payload))


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=120),
                 st.builds(lambda seed: mutate(random.Random(seed),
                                               _valid_batch_payload(random.Random(seed))),
                           st.integers(0, 2**32))))
def test_decode_batch_raises_only_value_error(payload):
    """decode_batch is what readers call on a CRC-valid frame; its callers
    catch ValueError (commitlog.py), so nothing else may escape."""
    try:
        b = decode_batch(payload)
    except ValueError:
        return
    assert isinstance(b.stream, str)


@pytest.mark.parametrize("payload", [b"", b"\x95", b"\x94\xa1s\x01\x02", b"\xdd\xff\xff\xff\xff"])
def test_decode_batch_head_raises_only_value_error(payload):
    try:
        decode_batch_head(payload)
    except ValueError:
        pass


def _store_with_bad_frame(path, payload):
    es = EventStore(path)
    es.append("s", [{"type": "S"}] * 2)
    es.close()
    log = os.path.join(path, "log")
    seg = sorted(f for f in os.listdir(log) if f.endswith(".log"))[-1]
    with open(os.path.join(log, seg), "ab") as f:
        f.write(encode_frame(LOG_MAGIC, payload))


@pytest.mark.parametrize("payload", [b"\x95", b"\x98\xa1s\x03\x03\x01"])
def test_crc_valid_undecodable_frame_is_reported_as_damage(tmp_path, payload):
    store = tmp_path / "store"
    _store_with_bad_frame(store, payload)
    for args in (["read", "--all"], ["read", "s"], ["info"], ["append", "s", "--type", "X"]):
        r = run_cli(*args, store=store)
        assert r.returncode in (0, 6), (args, r.returncode, r.stderr)
        assert b"unexpected" not in r.stderr, (args, r.stderr)


def test_writer_does_not_append_past_a_wrong_shape_frame(tmp_path):
    store = tmp_path / "store"
    _store_with_bad_frame(store, msgpack.packb(["s", 3, 3, 1]))
    r = run_cli("append", "s", "--type", "X", store=store)
    if r.returncode == 0:  # then the store must still read as a whole
        r2 = run_cli("read", "--all", store=store)
        assert r2.returncode == 0, r2.stderr
    else:
        assert r.returncode == 6, r.stderr


# --- the size limit ------------------------------------------------------------------

def _event_of_blob_size(size):
    """An input event whose packed (id, type, data, metadata) is ``size`` bytes."""
    eid = str(uuid.uuid4())
    base = len(msgpack.packb([eid, "T", {"p": ""}, {}])) - 1
    n = size - base
    for _ in range(3):  # the str header grows with n
        got = len(msgpack.packb([eid, "T", {"p": "x" * n}, {}])) - 1
        n += size - got
    ev = {"type": "T", "data": {"p": "x" * n}, "id": eid}
    assert len(msgpack.packb([eid, "T", ev["data"], {}])) - 1 == size
    return ev


def test_events_around_the_size_limit(tmp_path):
    store = tmp_path / "store"
    run_cli("append", "s", "--type", "Seed", store=store).check_returncode()
    limit = DEFAULT_MAX_EVENT_BYTES
    before = tree(store)
    over = run_cli("append", "s", store=store, input=json.dumps(_event_of_blob_size(limit + 1)))
    assert over.returncode == 5, over.stderr
    err = over.stderr.decode()
    assert len(err.strip().splitlines()) == 1 and "limit" in err and "Traceback" not in err, err
    assert over.stdout == b""
    assert tree(store) == before, "a rejected event changed the store"
    # in a batch: the whole batch is rejected
    batch = [{"type": "ok"}, _event_of_blob_size(limit + 1)]
    r = run_cli("append", "s", store=store, input=json.dumps(batch))
    assert r.returncode == 5 and tree(store) == before
    ev = _event_of_blob_size(limit)
    under = run_cli("append", "s", store=store, input=json.dumps(ev))
    assert under.returncode == 0, under.stderr
    got = ndjson(run_cli("read", "s", "--from", "2", store=store).stdout)
    assert len(got) == 1 and got[0]["data"] == ev["data"] and got[0]["id"] == ev["id"]
    with EventStore(store, max_event_bytes=1000) as es:  # the library's own limit
        with pytest.raises(InvalidEvent):
            es.append("s", [_event_of_blob_size(1001)])
        assert es.append("s", [_event_of_blob_size(1000)]).version == 3
    assert run_cli("verify", store=store).returncode == 0


# --- files the store did not write ---------------------------------------------------

def test_junk_files_planted_in_the_store(tmp_path):
    store = tmp_path / "store"
    with EventStore(store, segment_bytes=400) as es:
        for i in range(12):
            es.append(f"s{i % 3}", [{"type": "T", "data": {"i": i, "pad": "p" * 50}}])
        es.snapshots.save("s0", {"x": 1}, 1)
        want = [e.to_dict() for e in es.read_all()]
        want_s = {s: [e.to_dict() for e in es.read(s)] for s in ("s0", "s1", "s2")}
    rnd = random.Random(9)
    dirs = [r for r, _d, _f in os.walk(store)]
    names = ["junk", ".hidden", "0000000000000999.log", "0000000000000007.seg", "x.idx",
             "README", "0000000000000002.snap", "zz.tmp", "id.bak", "evstore.json~"]
    planted = []
    for d in dirs:
        for name in rnd.sample(names, 3):
            p = os.path.join(d, name)
            if os.path.exists(p):
                continue
            with open(p, "wb") as f:
                f.write(os.urandom(rnd.randrange(0, 300)))
            planted.append(os.path.relpath(p, store))
        os.mkdir(os.path.join(d, "junkdir"))
    commands = [["read", "--all"], ["read", "s0"], ["streams"], ["info"], ["tail", "--all"],
                ["snapshot", "s0", "--show"], ["replay", "s1"], ["checkpoints"], ["verify"],
                ["export"]]
    results = {}
    for args in commands:
        r = run_cli(*args, store=store)
        err = r.stderr.decode()
        results[" ".join(args)] = r.returncode
        assert "Traceback" not in err and "unexpected" not in err, (args, err)
        assert r.returncode in (0, 6), (args, r.returncode, err)
        if args == ["read", "--all"] and r.returncode == 0:
            assert ndjson(r.stdout) == want, "junk files changed what $all reads"
        if args == ["read", "s0"] and r.returncode == 0:
            assert ndjson(r.stdout) == want_s["s0"]
    # verify either ignores the strays or names them
    v = run_cli("verify", store=store)
    if v.returncode == 6:
        assert any(os.path.basename(p) in v.stdout.decode() + v.stderr.decode() for p in planted)
    # writers work on, and ignore the junk
    r = run_cli("append", "s1", "--type", "After", store=store)
    assert r.returncode in (0, 6), r.stderr
    with EventStore(store, create=False) as es:
        try:
            got = [e.to_dict() for e in es.read_all()]
        except CorruptStore:
            got = None
        if got is not None:
            assert got[:len(want)] == want
    print(results)
