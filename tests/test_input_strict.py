"""Input is never silently changed (issue 12 item 6, issue 13 §4): unknown
fields, duplicate keys and repeated ids are exit 5 naming the line and key;
a retried batch is an idempotent success for every expected-version form."""
from __future__ import annotations

import json

import pytest

from conftest import ndjson
from evstore import EventStore
from evstore.errors import InvalidEvent, WrongExpectedVersion

ID1 = "6f1c2e6a-0000-4000-8000-000000000001"
ID2 = "6f1c2e6a-0000-4000-8000-000000000002"
ID3 = "6f1c2e6a-0000-4000-8000-000000000003"


@pytest.mark.parametrize("line,needle", [
    ('{"type":"Deposited","dat":{"amount":5}}', 'line 1: unknown field "dat" (did you mean "data"?)'),
    ('{"type":"T","meta":{"by":"x"}}', 'line 1: unknown field "meta"'),
    ('{"type":"T","data":{"a":1,"a":2}}', 'line 1: duplicate key "a"'),
    ('{"type":"T","type":"U"}', 'line 1: duplicate key "type"'),
    ('{"type":"T","metadata":{"x":[{"b":1,"b":2}]}}', 'line 1: duplicate key "b"'),
    ('null', "line 1: expected a JSON object (an event), got null"),
    ('[]', "an empty array: no events to append"),
])
def test_input_that_would_be_changed_is_exit_5(cli, store_dir, line, needle):
    r = cli("append", "s", input=line + "\n")
    assert r.returncode == 5, r.stderr
    assert r.stdout == b""
    assert needle in r.stderr.decode()
    assert not store_dir.exists()  # nothing written, not even a store


def test_the_line_is_named(cli):
    r = cli("append", "s", input='{"type":"A"}\n\n{"type":"B","dta":1}\n')
    assert r.returncode == 5
    assert r.stderr.decode().startswith('evstore: error: line 3: unknown field "dta"')


def test_recorded_event_fields_are_accepted_and_ignored(cli):
    ev = {"stream": "x", "version": 9, "position": 9, "id": ID1, "type": "T", "data": {"a": 1},
          "metadata": {}, "recorded_at": "2026-01-01T00:00:00.000000Z"}
    r = cli("append", "s", input=json.dumps(ev) + "\n")
    assert r.returncode == 0, r.stderr
    got = ndjson(cli("read", "s").stdout)[0]
    assert (got["stream"], got["version"], got["id"], got["data"]) == ("s", 1, ID1, {"a": 1})


def test_a_utf8_bom_is_accepted(cli):
    r = cli("append", "s", input=b'\xef\xbb\xbf{"type":"T","data":{"k":"\xc3\xa9"}}\n')
    assert r.returncode == 0, r.stderr
    assert ndjson(cli("read", "s").stdout)[0]["data"] == {"k": "é"}


def test_a_repeated_id_in_one_batch_is_exit_5(cli, store_dir):
    lines = [{"type": "A", "id": ID1}, {"type": "B", "id": ID2}, {"type": "C", "id": ID1}]
    r = cli("append", "s", input="".join(json.dumps(e) + "\n" for e in lines))
    assert r.returncode == 5
    assert f'line 3: "id" {ID1} is also the id of line 1' in r.stderr.decode()
    assert not store_dir.exists()


@pytest.mark.parametrize("expected", ["any", "exists", "no-stream", "0"])
def test_read_append_retry_is_idempotent(cli, expected):
    first = "".join(json.dumps({"type": t}) + "\n" for t in ("A", "B", "C"))
    assert cli("append", "s", input=first).returncode == 0
    before = cli("read", "s").stdout
    r = cli("append", "s", "-e", expected, input=before)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"stream": "s", "version": 3, "position": 3, "count": 3}
    assert cli("read", "s").stdout == before  # nothing written


def test_part_of_the_last_events_is_a_conflict(cli):
    first = "".join(json.dumps({"type": t}) + "\n" for t in ("A", "B", "C"))
    assert cli("append", "s", input=first).returncode == 0
    events = ndjson(cli("read", "s").stdout)
    again = json.dumps(events[1]) + "\n" + json.dumps({"type": "D", "id": ID3}) + "\n"
    r = cli("append", "s", "-e", "any", input=again)
    assert r.returncode == 3, r.stderr
    assert "only part of this batch is already stored" in r.stderr.decode()
    assert len(ndjson(cli("read", "s").stdout)) == 3


# --- the library --------------------------------------------------------------------------------

def test_library_refuses_unknown_fields_and_repeated_ids(tmp_path):
    with EventStore(tmp_path / "s") as es:
        with pytest.raises(InvalidEvent, match='event 1: unknown field "dat"'):
            es.append("a", [{"type": "T", "dat": {}}])
        with pytest.raises(InvalidEvent, match=f'event 2: "id" {ID1} is also the id of event 1'):
            es.append("a", [{"type": "T", "id": ID1}, {"type": "U", "id": ID1}])
        assert es.version("a") == 0


@pytest.mark.parametrize("expected", ["any", "exists", 0, 1])
def test_library_retry_is_idempotent_for_every_form(tmp_path, expected):
    with EventStore(tmp_path / "s") as es:
        es.append("a", [{"type": "Z"}])
        batch = [{"type": "T", "id": ID1}, {"type": "U", "id": ID2}]
        es.append("a", batch)
        if expected == 0:  # no-stream: the batch that started the stream
            es2 = EventStore(tmp_path / "t")
            es2.append("a", batch, expected_version=0)
            res = es2.append("a", batch, expected_version="no-stream")
            assert (res.version, res.count) == (2, 2) and es2.version("a") == 2
            es2.close()
            return
        res = es.append("a", batch, expected_version=expected)
        assert (res.version, res.position, res.count) == (3, 3, 2)
        assert es.version("a") == 3
        with pytest.raises(WrongExpectedVersion, match="only part"):
            es.append("a", [{"type": "U", "id": ID2}, {"type": "V", "id": ID3}],
                      expected_version=expected)
        assert es.version("a") == 3
