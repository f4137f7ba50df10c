"""``evstore delete``, ``truncate``, ``retention`` and ``compact`` as a user
runs them: the JSON they print, their exit codes and one-line errors, their
help, the progress bar on a terminal only, and the erasure recipe (after
delete and compact no file of the store holds the deleted events).  The
rules themselves are tested through the library (test_forgetting.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from cli_helpers import error, ndjson_input, ok, read_pty, run
from conftest import cli_env, ndjson
from .helpers import kind_of, store_exists


def fill(store, stream, n, **data):
    ok(run(store, "append", stream, input=ndjson_input(
        [{"type": "T", "data": {"i": i, **data}} for i in range(n)])))


def test_delete_soft_and_hard(store_dir):
    fill(store_dir, "s", 3)
    fill(store_dir, "t", 1)
    error(run(store_dir, "delete", "s", "--expected-version", "2"), 3,
          startswith="wrong expected version: expected 2, current is 3")
    assert json.loads(ok(run(store_dir, "delete", "s", "-e", "3"))) == \
        {"stream": "s", "version": 3, "deleted": "soft"}
    error(run(store_dir, "read", "s"), 4)
    assert [r["stream"] for r in ndjson(ok(run(store_dir, "streams")))] == ["t"]
    assert [e["position"] for e in ndjson(ok(run(store_dir, "read", "--all")))] == [4]
    out = json.loads(ok(run(store_dir, "append", "s", "--type", "T", "-e", "3")))
    assert (out["version"], out["position"]) == (4, 5)
    assert json.loads(ok(run(store_dir, "delete", "s", "--hard"))) == \
        {"stream": "s", "version": 4, "deleted": "hard"}
    msg = error(run(store_dir, "append", "s", "--type", "T"), 3)
    assert "'s' was deleted" in msg
    error(run(store_dir, "delete", "nope"), 4)
    error(run(store_dir, "delete", "$all"), 2)


def test_forgetting_in_a_store_that_is_not_there_creates_nothing(store_dir):
    for args in (["delete", "s"], ["truncate", "s", "--before", "1"], ["compact"],
                 ["retention", "s"]):
        error(run(store_dir, *args), 4)
    assert not store_exists(store_dir)


def test_truncate_then_replay_needs_a_snapshot(store_dir):
    fill(store_dir, "s", 5)
    error(run(store_dir, "truncate", "s"), 2, startswith="truncate needs --before V")
    error(run(store_dir, "truncate", "s", "--before", "7"), 2,
          startswith="cannot truncate 's' before version 7: its version is 5 (use 1 to 6)")
    assert json.loads(ok(run(store_dir, "truncate", "s", "--before", "3"))) == \
        {"stream": "s", "version": 5, "before": 3}
    assert [e["version"] for e in ndjson(ok(run(store_dir, "read", "s")))] == [3, 4, 5]
    msg = error(run(store_dir, "replay", "s"), 4)
    assert "before version 3" in msg and "snapshot" in msg
    ok(run(store_dir, "snapshot", "s", "--state", '{"i": 1}', "--version", "2"))
    assert json.loads(ok(run(store_dir, "replay", "s"))) == \
        {"stream": "s", "version": 5, "state": {"i": 4}}


def test_retention_set_show_clear(store_dir):
    fill(store_dir, "ci-1", 4)
    rule = {"target": "ci-", "prefix": True, "max_age": "30d", "max_count": None,
            "in_force": True}
    assert ndjson(ok(run(store_dir, "retention", "--prefix", "ci-", "--max-age", "30d"))) == [rule]
    own = {"target": "ci-1", "prefix": False, "max_age": None, "max_count": 2, "in_force": True}
    assert ndjson(ok(run(store_dir, "retention", "ci-1", "--max-count", "2"))) == \
        [own, {**rule, "in_force": False}]
    assert [e["version"] for e in ndjson(ok(run(store_dir, "read", "ci-1")))] == [3, 4]
    assert ndjson(ok(run(store_dir, "retention"))) == [rule, own]
    assert json.loads(ok(run(store_dir, "retention", "ci-1", "--format", "json"))) == \
        [own, {**rule, "in_force": False}]
    assert ndjson(ok(run(store_dir, "retention", "ci-1", "--clear"))) == [rule]
    assert [e["version"] for e in ndjson(ok(run(store_dir, "read", "ci-1")))] == [1, 2, 3, 4]
    r = run(store_dir, "retention", "--prefix", "ci-", "--clear")
    assert r.returncode == 0 and r.stdout == b"" and b"no retention rule" in r.stderr
    for args, start in [(["ci-1", "--max-age", "3 days"], "invalid duration '3 days'"),
                        (["ci-1", "--max-count", "0"], "Invalid value for '--max-count'"),
                        (["ci-1", "--clear", "--max-count", "3"], "--clear removes the rule"),
                        (["ci-1", "--prefix", "c", "--max-count", "3"], "give STREAM or --prefix"),
                        (["--max-count", "3"], "a rule needs a target")]:
        error(run(store_dir, "retention", *args), 2, startswith=start)


def test_compact_and_the_erasure_recipe(store_dir):
    """The GUIDE's recipe: delete a customer's streams, compact, and no file
    of the store holds their data any more (the file backend: every byte,
    quarantine included)."""
    fill(store_dir, "customer-9", 3, name="Zebediah-Quux")
    fill(store_dir, "order-1", 2)
    ok(run(store_dir, "delete", "customer-9"))
    dry = json.loads(ok(run(store_dir, "compact", "--dry-run")))
    assert list(dry) == ["events_removed", "bytes_before", "bytes_after", "seconds"]
    assert dry["events_removed"] == 3 and dry["bytes_after"] < dry["bytes_before"]
    before = ok(run(store_dir, "export"))
    done = json.loads(ok(run(store_dir, "compact")))
    assert done["events_removed"] == 3 and done["bytes_after"] < done["bytes_before"]
    assert ok(run(store_dir, "export")) == before
    ok(run(store_dir, "verify"))
    assert json.loads(ok(run(store_dir, "compact")))["events_removed"] == 0
    if kind_of(store_dir) == "files":
        for dirpath, _dirs, files in os.walk(store_dir):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as f:
                    assert b"Zebediah-Quux" not in f.read(), os.path.join(dirpath, name)


def test_compact_shows_a_progress_bar_on_a_terminal_only(store_dir):
    fill(store_dir, "s", 2)
    ok(run(store_dir, "delete", "s"))
    master, slave = os.openpty()
    p = subprocess.Popen([sys.executable, "-m", "evstore", "compact", "--dry-run"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                         env=cli_env(store_dir, COLUMNS="80"))
    os.close(slave)
    seen = read_pty(master, p, 60)
    out = p.stdout.read()
    assert p.wait(60) == 0
    os.close(master)
    assert b"compact" in seen and json.loads(out)["events_removed"] == 2
    r = run(store_dir, "compact", "--dry-run")  # stderr is a pipe: nothing
    assert r.stderr == b"" and r.returncode == 0


def test_help_teaches(store_dir):
    for cmd, words in {"delete": ["--hard", "tombstone", "V+1", "compact", "Exit codes"],
                       "truncate": ["--before", "snapshot", "Exit codes"],
                       "retention": ["--max-age", "--max-count", "--prefix", "--clear", "90d"],
                       "compact": ["--dry-run", "events_removed", "no", "file"]}.items():
        text = ok(run(store_dir, cmd, "--help")).decode()
        for w in words:
            assert w in text, (cmd, w)
