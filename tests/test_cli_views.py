"""Issue 13, sections 3 to 5: terminal views at 60, 80, 100 and 200 columns
(in a real pseudo-terminal), mistakes and their messages, and the small
features (--since/--until, --id, --data @FILE / -, info for people)."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from cli_helpers import error, ok, run, uid
from conftest import ROOT
from evstore import EventStore, NewEvent
from evstore.errors import EventNotFound, UsageError
from evstore.features.timespec import parse_time, parse_window
from test_cli_polish import ANSI, run_tty, widths

COLS = [60, 80, 100, 200]
REDUCER = str(ROOT / "sample_data" / "reducers.py") + ":balance"
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """acct-7 (59 events with metadata), a short stream, two checkpoints."""
    store = tmp_path_factory.mktemp("views") / "store"
    ok(run(store, "append", "acct-7", "--expected-version", "no-stream",
           input=(ROOT / "sample_data" / "acct-7.ndjson").read_bytes()))
    ok(run(store, "append", "acct-1", "--type", "Deposited", "--data", '{"amount": 10}'))
    ok(run(store, "checkpoints", "reset", "projector-of-balances", "--to", "60"))
    ok(run(store, "checkpoints", "reset", "demo", "--to", "3"))
    return store


def screen(args, store, cols):
    rc, out, err = run_tty(args, store, cols=cols, env={"NO_COLOR": "1"})
    assert rc == 0, (args, err)
    text = ANSI.sub("", out)
    if args[0] == "verify":  # plain sentences (with the store's path): the terminal wraps them
        assert re.match(r"store .*: 6\d events in 2 streams, [\d,]+ bytes checked in .*\nsound\n\Z",
                        text), text
        return text
    assert max(widths(text)) <= cols, (args, cols, [w for w in widths(text) if w > cols])
    return text


VIEWS = [["read", "acct-7"], ["read", "--all"], ["tail", "--all", "-n", "5"],
         ["tail", "--all", "-n", "3", "-f", "--idle-timeout", "0.1"], ["streams"], ["checkpoints"],
         ["info"], ["replay", "acct-7", "--reducer", REDUCER, "--steps"], ["verify"],
         ["read", "acct-7", "--wide"]]


@pytest.mark.parametrize("cols", COLS)
def test_every_view_at_four_widths(sample, cols):
    """Each view once per width: it fits, names come first, times give way
    first, --wide folds cells (not headers), replay --steps never wraps back
    to column 0."""
    seen = {" ".join(args): screen(args, sample, cols) for args in VIEWS}
    for text in seen.values():
        assert text.strip()
    # identifying columns get their width first: whole at every width here
    for args in ("read acct-7", "read --all", "tail --all -n 5"):
        text = seen[args]
        assert "acct-7" in text and "Withdrawn" in text and "acct…" not in text, args
    assert "AccountOpened" in seen["read acct-7"]
    assert re.search(r"^acct-1 +1 ", seen["streams"], re.M)
    assert "projector-of-balances" in seen["checkpoints"]
    # ... and the times give way first: whole only where there is room
    assert bool(STAMP.search(seen["read acct-7"])) == (cols >= 80), cols
    # --wide: cells fold, headers do not, nothing is cut
    wide = seen["read acct-7 --wide"]
    assert wide.split("\n")[0].split()[:4] == ["pos", "stream", "ver", "type"]
    assert "…" not in wide and "Иванова" in wide
    # replay --steps: every line of a step is a step head, or indented
    lines = seen[f"replay acct-7 --reducer {REDUCER} --steps"].split("\n")
    steps = [ln for ln in lines if re.match(r"v\d+ ", ln)]
    assert len(steps) == 59
    body = lines[lines.index(steps[0]):lines.index("state at version 59:")]
    assert all(ln.startswith(("v", " ")) or not ln for ln in body), \
        [ln for ln in body if ln and not ln.startswith(("v", " "))][:3]
    assert cols < 100 or '"retry":1' in "".join(body).replace(" ", "")  # the clue of the sample
    assert re.search(r"^bytes +\d+\.\d KiB \([\d,]+ bytes\)", seen["info"], re.M)


def test_metadata_shows_when_there_is_room(sample):
    assert "metadata" not in screen(["read", "acct-7"], sample, 80)
    text = screen(["read", "acct-7"], sample, 200)
    assert "metadata" in text.split("\n")[0] and '"channel":"branch"' in text


def test_a_table_in_a_file_is_never_cut(sample):
    long = "lorem ipsum " * 30 + "THE-END"
    ok(run(sample, "append", "long-" + "x" * 120, "--type", "T" * 50, "--data", json.dumps({"t": long})))
    out = ok(run(sample, "read", "--all", "--format", "table", env={"COLUMNS": "80"})).decode()
    assert "THE-END" in out and "x" * 120 in out and "…" not in out
    assert "metadata" in out and STAMP.search(out)
    out = ok(run(sample, "info", "--format", "table")).decode()
    assert "…" not in out


def test_info_is_json_off_a_terminal(sample):
    data = json.loads(ok(run(sample, "info")))
    assert isinstance(data["bytes"], int) and data["events"] >= 60


# --- section 4: mistakes and messages -------------------------------------------------------------

def test_store_that_is_a_file_is_a_usage_error(tmp_path):
    f = tmp_path / "notastore"
    f.write_text("x")
    for args in (["read", "s"], ["append", "s", "--type", "T"], ["info"], ["verify"]):
        msg = error(run(f, *args), 2)
        assert str(f) in msg and "not a directory" in msg, args
    assert f.read_text() == "x"


def test_format_choices_in_our_words(sample):
    msg = error(run(sample, "read", "acct-1", "--format", "yaml"), 2)
    assert "'yaml'" in msg and "ndjson, json or table" in msg and "Value error" not in msg
    msg = error(run(sample, "verify", "--format", "yaml"), 2)
    assert "text or json" in msg
    assert ok(run(sample, "read", "acct-1", "--format", "JSON")).startswith(b"[")


def test_counts_are_singular_or_plural(tmp_path):
    store = tmp_path / "s"
    ok(run(store, "append", "a", "--type", "T"))
    out = ok(run(store, "verify")).decode()
    assert ": 1 event in 1 stream, " in out, out
    ok(run(store, "append", "b", "--type", "T"))
    assert ": 2 events in 2 streams, " in ok(run(store, "verify")).decode()


def test_one_usage_notation(tmp_path):
    usage = {}
    for cmd in (["read"], ["tail"], ["export"], ["import"], ["append"], ["replay"],
                ["snapshot"], ["checkpoints", "reset"]):
        out = ok(run(tmp_path, *cmd, "--help")).decode()
        usage[cmd[-1]] = re.search(r"Usage: (.*)", out).group(1)
    assert all("{" not in u and "[[" not in u and "]..." not in u.replace("[STREAM]...", "")
               for u in usage.values()), usage
    assert usage["read"].endswith("[OPTIONS] [STREAM]")
    assert usage["append"].endswith("[OPTIONS] STREAM")
    assert usage["export"].endswith("[OPTIONS] [STREAM]...")


def test_ids_starting_with_dollar_are_reserved(sample, tmp_path):
    for args in (["read", "$all"], ["append", "$all", "--type", "T"], ["tail", "$x", "-n", "1"],
                 ["replay", "$all", "-r", "count"]):
        msg = error(run(sample, *args), 2)
        assert "reserved" in msg and "--all" in msg, (args, msg)
    with EventStore(tmp_path / "lib") as es:
        with pytest.raises(UsageError):
            es.append("$x", [NewEvent("T")])
    # an id with a $ later on is ordinary
    ok(run(tmp_path / "s", "append", "a$b", "--type", "T"))


def test_prefix_has_both_spellings(sample):
    a = ok(run(sample, "streams", "--prefix", "acct-1"))
    assert a == ok(run(sample, "streams", "--stream-prefix", "acct-1")) and a.count(b"\n") == 1
    r1 = ok(run(sample, "read", "--all", "--stream-prefix", "acct-1"))
    assert r1 == ok(run(sample, "read", "--all", "--prefix", "acct-1")) and r1.count(b"\n") == 1
    assert ok(run(sample, "tail", "--all", "--prefix", "acct-1", "-n", "5")).count(b"\n") == 1


# --- section 5: --since / --until, --id, --data @FILE and - ------------------------------------

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def test_time_parsing():
    assert parse_time("2026-11-28T12:00:00Z") == NOW
    assert parse_time("2026-11-28T13:00:00+01:00") == NOW
    assert parse_time("2026-11-28") == NOW - timedelta(hours=12)
    for text, delta in (("45s", timedelta(seconds=45)), ("30m", timedelta(minutes=30)),
                        ("2h", timedelta(hours=2)), ("7d", timedelta(days=7)),
                        ("2w", timedelta(weeks=2))):
        assert parse_time(text, NOW) == NOW - delta
    for bad in ("2026-11-28T12:00:00", "yesterday", "7y", "", "-2h"):
        with pytest.raises(UsageError, match="RFC 3339"):
            parse_time(bad, NOW, what="--since")
    assert parse_window("2h", "1h", NOW) == (NOW - timedelta(hours=2), NOW - timedelta(hours=1))
    with pytest.raises(UsageError, match="before --since"):
        parse_window("1h", "2h", NOW)


@pytest.fixture
def dated(store_dir):
    """Five events: 20, 10, 3 days ago, 1 hour ago, now (via import)."""
    now = datetime.now(timezone.utc)
    ages = [timedelta(days=20), timedelta(days=10), timedelta(days=3), timedelta(hours=1),
            timedelta(0)]
    lines = []
    for i, age in enumerate(ages):
        t = (now - age).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lines.append(json.dumps({"stream": "old" if i < 2 else "new", "version": i + 1 if i < 2 else i - 1,
                                 "position": i + 1, "id": uid(i + 1), "type": "T", "data": {"i": i},
                                 "metadata": {}, "recorded_at": t}))
    ok(run(store_dir, "import", input="\n".join(lines) + "\n"))
    return store_dir


def _is(out) -> list:
    return [json.loads(ln)["data"]["i"] for ln in out.decode().splitlines()]


def test_since_and_until(dated):
    assert _is(ok(run(dated, "read", "--all", "--since", "7d"))) == [2, 3, 4]
    assert _is(ok(run(dated, "read", "--all", "--since", "7d", "--until", "2h"))) == [2]
    assert _is(ok(run(dated, "read", "--all", "--until", "5d", "--backwards"))) == [1, 0]
    assert _is(ok(run(dated, "read", "--all", "--since", "30d", "--limit", "2", "--backwards"))) == [4, 3]
    assert _is(ok(run(dated, "read", "new", "--since", "2h"))) == [3, 4]
    assert _is(ok(run(dated, "read", "old", "--since", "15d", "--type", "T"))) == [1]
    day = (datetime.now(timezone.utc) - timedelta(days=15)).strftime("%Y-%m-%d")
    assert _is(ok(run(dated, "read", "--all", "--until", day))) == [0]
    streams = lambda *a: [json.loads(ln)["stream"] for ln in ok(run(dated, "streams", *a)).decode().splitlines()]  # noqa: E731
    assert streams("--since", "7d") == ["new"]
    assert streams("--until", "7d") == ["old"]
    assert streams("--since", "15d", "--until", "5d") == ["old"]
    msg = error(run(dated, "read", "--all", "--since", "last week"), 2)
    assert "--since 'last week'" in msg and "7d" in msg
    error(run(dated, "read", "--all", "--since", "1h", "--until", "2h"), 2)


def test_since_in_the_library(dated):
    with EventStore(dated, create=False) as es:
        cut = datetime.now(timezone.utc) - timedelta(days=5)
        assert [e.data["i"] for e in es.read_all(since=cut)] == [2, 3, 4]
        assert [e.data["i"] for e in es.read("old", until=cut)] == [0, 1]
        with pytest.raises(UsageError):
            list(es.read_all(since=datetime(2026, 1, 1)))  # naive: which zone?


def test_read_by_id(dated):
    out = ok(run(dated, "read", "--id", uid(4)))
    assert [json.loads(out)["data"]["i"]] == [3]
    msg = error(run(dated, "read", "--id", uid(99)), 4)
    assert uid(99) in msg
    error(run(dated, "read", "new", "--id", uid(4)), 2)
    with EventStore(dated, create=False) as es:
        assert es.find(uid(2)).stream == "old"
        with pytest.raises(EventNotFound):
            es.find(uid(99))


def test_data_and_metadata_from_a_file_or_stdin(store_dir, tmp_path):
    f = tmp_path / "d.json"
    f.write_bytes(b'\xef\xbb\xbf{"amount": 7}\n')  # a BOM, as some editors write
    ok(run(store_dir, "append", "s", "--type", "T", "--data", f"@{f}"))
    ok(run(store_dir, "append", "s", "--type", "T", "--data", '{"n": 1}', "--metadata", "-",
           input='{"by": "me"}'))
    evs = [json.loads(ln) for ln in ok(run(store_dir, "read", "s")).decode().splitlines()]
    assert [e["data"] for e in evs] == [{"amount": 7}, {"n": 1}] and evs[1]["metadata"] == {"by": "me"}
    msg = error(run(store_dir, "append", "s", "--type", "T", "--data", f"@{tmp_path}/nope.json"), 2)
    assert "nope.json" in msg
    error(run(store_dir, "append", "s", "--type", "T", "--data", "-", input="{"), 5)
    error(run(store_dir, "append", "s", "--type", "T", "--data", "-", "--metadata", "-"), 2)
    assert len(ok(run(store_dir, "read", "s")).splitlines()) == 2


def test_since_and_until_in_tail_and_export(dated):
    assert _is(ok(run(dated, "tail", "--all", "--since", "7d"))) == [2, 3, 4]
    assert _is(ok(run(dated, "tail", "new", "--since", "2h"))) == [3, 4]
    assert _is(ok(run(dated, "tail", "--all", "--since", "30d", "--until", "5d"))) == [0, 1]
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert _is(ok(run(dated, "tail", "--all", "--since", later, "-f", "--idle-timeout", "0.2"))) == []
    error(run(dated, "tail", "--all", "--since", "7d", "-n", "2"), 2)
    assert _is(ok(run(dated, "export", "--since", "7d"))) == [2, 3, 4]
    assert _is(ok(run(dated, "export", "--since", "15d", "--until", "2h"))) == [1, 2]
    assert _is(ok(run(dated, "export", "old", "new", "--until", "2h"))) == [0, 1, 2]
    assert _is(ok(run(dated, "export", "--since", later))) == []


def test_time_windows_in_a_merged_store(tmp_path):
    """import --renumber keeps each event's time: older events may follow
    newer ones in position order, and no window may assume otherwise."""
    old, new = tmp_path / "old", tmp_path / "new"
    ok(run(old, "append", "a", "--type", "T", "--data", '{"i": 0}'))
    ok(run(new, "append", "b", "--type", "T", "--data", '{"i": 1}'))
    r = run(new, "import", "--renumber", input=ok(run(old, "export")))
    assert r.returncode == 0, r.stderr
    stamps = [json.loads(ln)["recorded_at"] for ln in ok(run(new, "read", "--all")).decode().splitlines()]
    assert stamps[0] > stamps[1]  # older after newer
    t_old = datetime.fromisoformat(stamps[1].replace("Z", "+00:00"))
    t_new = datetime.fromisoformat(stamps[0].replace("Z", "+00:00"))
    assert t_new - t_old > timedelta(microseconds=2)
    mid = (t_old + (t_new - t_old) / 2).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # between the two
    assert _is(ok(run(new, "read", "--all", "--until", mid))) == [0]
    assert _is(ok(run(new, "read", "--all", "--since", mid))) == [1]
    assert _is(ok(run(new, "export", "--until", mid))) == [0]
    assert _is(ok(run(new, "export", "--since", mid))) == [1]
    assert _is(ok(run(new, "tail", "--all", "--until", mid))) == [0]
