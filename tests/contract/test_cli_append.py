"""``evstore append`` as a process, on files and PostgreSQL: results,
expected versions, idempotent retries, chunked batches, and every way input
is refused.  (The file lock's timeout is tested in tests/test_writer_lock.py.)

Refused input must leave the store as it was (``tree()``: on files every
file byte for byte, elsewhere every event and stream), whichever line the
problem is on.
"""
from __future__ import annotations

import json

import pytest

from cli_helpers import (
    RFC3339_US,
    all_errors,
    appended,
    error,
    events_of,
    ndjson_input,
    ok,
    run,
    run_many,
    uid,
)

from .conftest import CLI_KINDS, module_store
from .helpers import fingerprint as tree
from .helpers import store_exists

# What the CLI adds after the documented message, on the same line (scripts match the prefix).
RETRY = "; re-read the stream, then retry with --expected-version {}"
NO_EVENTS = "; the stream has no events yet (--expected-version no-stream starts it)"


def batch(n, first_id=1, type_="T"):
    return [{"type": type_, "data": {"i": i}, "id": uid(first_id + i)} for i in range(n)]


# --- results ----------------------------------------------------------------------------

def test_append_reports_version_position_count(store_dir):
    appended(run(store_dir, "append", "acct-1", "--type", "Deposited", "--data", '{"amount": 10}'),
             "acct-1", 1, 1, 1)
    appended(run(store_dir, "append", "acct-2", input=b'\n{"type": "A"}\n\n{"type": "B"}\n\n'),
             "acct-2", 2, 3, 2)
    appended(run(store_dir, "append", "acct-1", input=b'[{"type": "C"}, {"type": "D"}, {"type": "E"}]'),
             "acct-1", 4, 6, 3)
    evs = events_of(run(store_dir, "read", "--all"))
    assert [(e["stream"], e["version"], e["position"], e["type"]) for e in evs] == [
        ("acct-1", 1, 1, "Deposited"), ("acct-2", 1, 2, "A"), ("acct-2", 2, 3, "B"),
        ("acct-1", 2, 4, "C"), ("acct-1", 3, 5, "D"), ("acct-1", 4, 6, "E")]
    # a batch shares one commit time; later batches are not earlier
    assert evs[1]["recorded_at"] == evs[2]["recorded_at"]
    assert evs[3]["recorded_at"] == evs[4]["recorded_at"] == evs[5]["recorded_at"]
    assert [e["recorded_at"] for e in evs] == sorted(e["recorded_at"] for e in evs)
    assert all(RFC3339_US.match(e["recorded_at"]) for e in evs)


def test_no_sync_appends_and_reads_back(store_dir):
    appended(run(store_dir, "append", "s", "--no-sync", input=ndjson_input(batch(3))), "s", 3, 3, 3)
    appended(run(store_dir, "append", "s", "--no-sync", "--type", "X"), "s", 4, 4, 1)
    assert [e["id"] for e in events_of(run(store_dir, "read", "s", "--to", "3"))] == [
        uid(1), uid(2), uid(3)]


# --- expected versions ---------------------------------------------------------------------

def test_expected_version_any_no_stream_exists_n(store_dir):
    appended(run(store_dir, "append", "s", "-e", "no-stream", "--type", "A"), "s", 1, 1, 1)
    appended(run(store_dir, "append", "s", "--expected-version", "exists", "--type", "B"), "s", 2, 2, 1)
    appended(run(store_dir, "append", "s", "--expected-version", "2", "--type", "C"), "s", 3, 3, 1)
    appended(run(store_dir, "append", "s", "--expected-version", "any", "--type", "D"), "s", 4, 4, 1)
    appended(run(store_dir, "append", "t", "--expected-version", "0", "--type", "E"), "t", 1, 5, 1)
    before = tree(store_dir)
    results = run_many(store_dir, {
        "3": (["append", "s", "--expected-version", "3", "--type", "X"], None),
        "5": (["append", "s", "--expected-version", "5", "--type", "X"], None),
        "no-stream": (["append", "s", "--expected-version", "no-stream", "--type", "X"], None),
        "exists": (["append", "new", "--expected-version", "exists", "--type", "X"], None),
        "1 on new": (["append", "new", "--expected-version", "1"], ndjson_input(batch(2))),
    })
    assert all_errors(results, 3) == {
        "3": "wrong expected version: expected 3, current is 4" + RETRY.format(4),
        "5": "wrong expected version: expected 5, current is 4" + RETRY.format(4),
        "no-stream": "wrong expected version: expected 0, current is 4" + RETRY.format(4),
        "exists": "wrong expected version: expected exists, current is 0" + NO_EVENTS,
        "1 on new": "wrong expected version: expected 1, current is 0" + RETRY.format(0),
    }
    assert tree(store_dir) == before


def test_idempotent_retry(store_dir):
    ok(run(store_dir, "append", "s", "--type", "First"))
    body = ndjson_input(batch(3, first_id=10))
    appended(run(store_dir, "append", "s", "-e", "1", input=body), "s", 4, 4, 3)
    ok(run(store_dir, "append", "other", "--type", "X"))
    before = tree(store_dir)
    # the same batch again at the same expected version: success, nothing written,
    # reporting the versions and positions it already has
    appended(run(store_dir, "append", "s", "-e", "1", input=body), "s", 4, 4, 3)
    # a prefix of it is also already there
    appended(run(store_dir, "append", "s", "-e", "1", input=ndjson_input(batch(2, first_id=10))),
             "s", 3, 3, 2)
    appended(run(store_dir, "append", "s", "-e", "1", "--type", "T", "--id", uid(10)), "s", 2, 2, 1)
    assert tree(store_dir) == before
    partial = batch(2, first_id=10)
    partial[1]["id"] = uid(99)
    results = run_many(store_dir, {
        # only some ids match: a conflict
        "partial": (["append", "s", "-e", "1"], ndjson_input(partial)),
        # the same ids at another version are not a retry
        "shifted": (["append", "s", "-e", "2"], body),
        # more events than are stored after N: not a retry either
        "longer": (["append", "s", "-e", "1"], ndjson_input(batch(4, first_id=10))),
    })
    msgs = all_errors(results, 3)
    assert msgs["partial"].startswith("wrong expected version: expected 1, current is 4")
    assert msgs["shifted"].startswith("wrong expected version: expected 2, current is 4")
    assert msgs["longer"].startswith("wrong expected version: expected 1, current is 4")
    assert tree(store_dir) == before


def test_batch_size_commits_atomic_chunks(store_dir):
    ok(run(store_dir, "append", "s", "--type", "Before"))
    appended(run(store_dir, "append", "s", "--batch-size", "3", "-e", "1",
                 input=ndjson_input(batch(7))), "s", 8, 8, 7)
    evs = events_of(run(store_dir, "read", "s", "--from", "2"))
    assert [(e["version"], e["position"], e["id"]) for e in evs] == [
        (i + 2, i + 2, uid(i + 1)) for i in range(7)]
    # each chunk is one commit (one recorded_at): 3 + 3 + 1
    stamps = [e["recorded_at"] for e in evs]
    assert stamps[0] == stamps[1] == stamps[2] and stamps[3] == stamps[4] == stamps[5]
    assert stamps == sorted(stamps)

    # a bad event in the second chunk: the first chunk stays, the second is
    # entirely absent, and the message says what was committed
    lines = ndjson_input(batch(3, first_id=20)) + b'{"type": "ok"}\n{"type": ""}\n{"type": "ok"}\n'
    msg = error(run(store_dir, "append", "s", "--batch-size", "3", input=lines), 5)
    assert "line 5" in msg and "3 events were already committed" in msg, msg
    evs = events_of(run(store_dir, "read", "s", "--from", "9"))
    assert [e["id"] for e in evs] == [uid(20), uid(21), uid(22)]


def test_batch_size_with_expected_version_detects_conflict(store_dir):
    appended(run(store_dir, "append", "s", "--batch-size", "2", "-e", "no-stream",
                 input=ndjson_input(batch(5))), "s", 5, 5, 5)
    error(run(store_dir, "append", "s", "--batch-size", "2", "-e", "no-stream",
              input=ndjson_input(batch(5, first_id=50))), 3,
          "wrong expected version: expected 0, current is 5" + RETRY.format(5))


# --- usage errors (exit 2) --------------------------------------------------------------------

USAGE = [
    ["append", "s", "--bogus"],
    ["append", "s", "--type", "T", "--bogus", "1"],
    ["append", "s", "--expected-version", "foo", "--type", "T"],
    ["append", "s", "--expected-version", "-1", "--type", "T"],
    ["append", "s", "--expected-version", "1.5", "--type", "T"],
    ["append", "s", "--expected-version", "", "--type", "T"],
    ["append", "s", "--data", "{}"],
    ["append", "s", "--metadata", "{}"],
    ["append", "s", "--id", uid(1)],
    ["append", "s", "--batch-size", "0"],
    ["append", "s", "--batch-size", "x"],
    ["append", "s", "--lock-timeout", "-1", "--type", "T"],
    ["append", "s", "--type"],
    ["--bogus", "append", "s", "--type", "T"],
    ["nosuchcommand"],
]


def test_usage_errors_exit_2_and_create_nothing(store_dir):
    results = run_many(store_dir, {" ".join(a): (a, b'{"type": "T"}\n') for a in USAGE})
    msgs = all_errors(results, 2)
    assert msgs["append s --expected-version foo --type T"] == (
        "invalid expected version 'foo': use any, no-stream, exists or a number")
    assert msgs["append s --data {}"] == "--data, --metadata and --id go with --type"
    assert not store_exists(store_dir)


def test_expected_version_must_be_ascii_digits(store_dir):
    results = run_many(store_dir, {v: (["append", "s", "--expected-version", v, "--type", "T"], None)
                                   for v in ("\u0661", "\u00b2")})
    for msg in all_errors(results, 2).values():
        assert msg.startswith("invalid expected version"), msg


# --- invalid input (exit 5), nothing written ---------------------------------------------------

BIG = b'{"type": "T", "data": "' + b"x" * (17 * 1024 * 1024) + b'"}\n'

BAD_STDIN = {
    "invalid json": b'{"type": "T",\n',
    "truncated array": b'[{"type": "T"}, {"type": "U"}',
    "trailing garbage": b'{"type": "T"} x\n',
    "single quotes": b"{'type': 'T'}\n",
    "missing type": b'{"data": {}}\n',
    "empty type": b'{"type": ""}\n',
    "type number": b'{"type": 5}\n',
    "type null": b'{"type": null}\n',
    "type array": b'{"type": ["T"]}\n',
    "type bool": b'{"type": true}\n',
    "NaN": b'{"type": "T", "data": {"x": NaN}}\n',
    "Infinity": b'{"type": "T", "data": [Infinity]}\n',
    "-Infinity in metadata": b'{"type": "T", "metadata": {"m": -Infinity}}\n',
    "2^64": b'{"type": "T", "data": 18446744073709551616}\n',
    "-2^63-1": b'{"type": "T", "data": {"n": -9223372036854775809}}\n',
    "10^30 in metadata": b'{"type": "T", "metadata": [1000000000000000000000000000000]}\n',
    "5000 digits": b'{"type": "T", "data": ' + b"9" * 5000 + b"}\n",
    "1e400": b'{"type": "T", "data": 1e400}\n',
    "-1e400": b'{"type": "T", "data": {"f": -1e400}}\n',
    "id not a uuid": b'{"type": "T", "id": "nope"}\n',
    "id a number": b'{"type": "T", "id": 123}\n',
    "id with extra": ('{"type": "T", "id": "%s0"}\n' % uid(1)).encode(),
    "id empty": b'{"type": "T", "id": ""}\n',
    "not an object": b'5\n',
    "string line": b'"T"\n',
    "array of non-objects": b'[{"type": "T"}, 5]',
    "invalid utf-8": b'{"type": "T", "data": "\xff\xfe"}\n',
    "lone surrogate": b'{"type": "T", "data": "\\ud800"}\n',
    "too deep": b'{"type": "T", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
    "empty input": b"",
    "blank lines only": b"\n\n  \n",
    "over 16 MiB": BIG,
}

BAD_OPTIONS = {
    "data invalid json": ["--type", "T", "--data", "{"],
    "data NaN": ["--type", "T", "--data", "NaN"],
    "data 2^64": ["--type", "T", "--data", "18446744073709551616"],
    "data 1e400": ["--type", "T", "--data", "[1e400]"],
    "metadata -2^63-1": ["--type", "T", "--metadata", "-9223372036854775809"],
    "metadata Infinity": ["--type", "T", "--metadata", '{"a": Infinity}'],
    "id invalid": ["--type", "T", "--id", "nope"],
    "empty type": ["--type", ""],
}


@pytest.fixture(scope="module", params=CLI_KINDS)
def base_store(request, tmp_path_factory):
    path = module_store(request, tmp_path_factory)
    ok(run(path, "append", "s", input=ndjson_input(batch(2))))
    return path


def test_invalid_input_is_exit_5_and_writes_nothing(base_store):
    cases = {name: (["append", "s"], body) for name, body in BAD_STDIN.items()}
    cases.update({name: (["append", "s", *args], None) for name, args in BAD_OPTIONS.items()})
    before = tree(base_store)
    msgs = all_errors(run_many(base_store, cases), 5)
    assert tree(base_store) == before
    # spot checks of the messages: they say where and what
    assert msgs["missing type"] == 'line 1: missing "type"'
    assert msgs["2^64"] == "line 1: integer 18446744073709551616 does not fit in 64 bits"
    assert "size limit of 16777216 bytes" in msgs["over 16 MiB"]
    assert "UUID" in msgs["id not a uuid"]


@pytest.mark.parametrize("array,bad", [(False, {"type": "T", "data": {"n": 2**64}}),
                                       (False, {"type": ""}),
                                       (True, {"type": "T", "metadata": [], "id": "x"}),
                                       (True, {"type": "T", "data": {"n": 2**64}})],
                         ids=["ndjson-int", "ndjson-type", "array-id", "array-int"])
def test_bad_third_event_of_five_writes_nothing(base_store, array, bad):
    events = batch(5, first_id=100)
    events[2] = bad
    body = json.dumps(events).encode() if array else ndjson_input(events)
    before = tree(base_store)
    msg = error(run(base_store, "append", "s", input=body), 5)
    if not (array and "data" in bad):  # an array is parsed whole: no item number then
        assert ("item 3" if array else "line 3") in msg, msg
    assert tree(base_store) == before


def test_size_limit_at_library_level(location):
    """The limit applies to the stored event, exactly at max_event_bytes."""
    from evstore import EventStore
    from evstore.errors import InvalidEvent

    with EventStore(location, max_event_bytes=1000) as es:
        es.append("s", [{"type": "T", "data": "x" * 900}])
        before = [e.to_dict() for e in es.read_all()]
        with pytest.raises(InvalidEvent, match="size limit"):
            es.append("s", [{"type": "T", "data": "ok"}, {"type": "T", "data": "x" * 1000}])
        assert [e.to_dict() for e in es.read_all()] == before
        # find the largest data that fits: it is accepted, one more byte is not
        lo, hi = 900, 1000
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                es.append("probe", [{"type": "T", "data": "y" * mid}])
                lo = mid
            except InvalidEvent:
                hi = mid
        assert 950 < lo < 1000 and hi == lo + 1
        assert [len(e.data) for e in es.read("probe")][-1] == lo


def test_invalid_input_does_not_create_the_store(store_dir):
    error(run(store_dir, "append", "s", input=b'{"type": '), 5)
    error(run(store_dir, "append", "s", input=b'{"type": ""}\n'), 5)
    assert not store_exists(store_dir)


def test_invalid_stream_id_does_not_create_the_store(store_dir):
    error(run(store_dir, "append", "", "--type", "T"), 2)
    assert not store_exists(store_dir)
