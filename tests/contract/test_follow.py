"""``tail -f`` as a durable consumer on every backend a process reaches:
``--checkpoint`` delivers every event at least once, in order, with no
skips and no repeats after a clean stop.  (``--exec``, acknowledging only
on the handler's success, is in test_tail_exec.py.)"""
from __future__ import annotations

import signal
import subprocess
import sys

from cli_helpers import ndjson_input, ok, run, uid
from conftest import cli_env, ndjson


def batch(n, first_id=1):
    return [{"type": "T", "data": {"i": first_id + i}, "id": uid(first_id + i)} for i in range(n)]


def positions(r) -> list[int]:
    assert r.returncode == 0, r.stderr
    return [e["position"] for e in ndjson(r.stdout)]


def test_checkpoint_resumes_after_clean_stops(store_dir):
    ok(run(store_dir, "append", "a", input=ndjson_input(batch(4))))
    ok(run(store_dir, "append", "b", input=ndjson_input(batch(3, 10))))
    seen = []
    for _ in range(3):  # --max-count (or, for the last one, idle): a clean stop
        seen += positions(run(store_dir, "tail", "-f", "--all", "--checkpoint", "c",
                              "--max-count", "3", "--idle-timeout", "0.3"))
    assert seen == list(range(1, 8))
    ok(run(store_dir, "append", "a", input=ndjson_input(batch(2, 20))))
    assert positions(run(store_dir, "tail", "-f", "--all", "--checkpoint", "c",
                         "--idle-timeout", "0.3")) == [8, 9]
    # a stream follower keeps its own checkpoint
    assert positions(run(store_dir, "tail", "-f", "b", "--checkpoint", "only-b",
                         "--idle-timeout", "0.3")) == [5, 6, 7]


def test_sigint_is_a_clean_stop_and_nothing_repeats(store_dir):
    ok(run(store_dir, "append", "a", input=ndjson_input(batch(3))))
    p = subprocess.Popen([sys.executable, "-m", "evstore", "tail", "-f", "--all",
                          "--checkpoint", "c"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=cli_env(store_dir))
    got = [p.stdout.readline() for _ in range(3)]
    ok(run(store_dir, "append", "a", input=ndjson_input(batch(2, 10))))
    got += [p.stdout.readline() for _ in range(2)]
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert [e["position"] for e in ndjson(b"".join(got) + out)] == [1, 2, 3, 4, 5]
    ok(run(store_dir, "append", "a", input=ndjson_input(batch(1, 20))))
    assert positions(run(store_dir, "tail", "-f", "--all", "--checkpoint", "c",
                         "--idle-timeout", "0.3")) == [6]
