"""Torture: ``evstore compact`` killed with SIGKILL, for real, again and again.

The in-process crash images of test_torture_compaction.py cover every step
of a compaction; this test is the plain version a user would run: a real
``evstore compact`` process on a store with deleted, truncated and
retained-out events, killed at random moments while a writer keeps
appending, then the store opened by a fresh process.  After every kill:

- every event that was readable before (and every acknowledged append) is
  still readable, byte for byte the same, at its position and version;
- nothing removed is readable again;
- ``evstore verify`` is sound (an interrupted step is finished first);

and at the end a compaction that runs to completion leaves no file of the
store holding the deleted streams' marker.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from conftest import cli_env, run_cli  # noqa: E402
from core_helpers import LONG  # noqa: E402

from evstore import EventStore  # noqa: E402

MARKER = "FORGET-ME-91c4"
KILLS = 25 if LONG else 2


def readable(store) -> dict[int, str]:
    with EventStore(store, create=False) as es:
        return {ev.position: json.dumps(ev.to_dict()) for ev in es.read_all()}


def build(store) -> None:
    with EventStore(store, segment_bytes=64 * 1024) as es:
        for round_ in range(12):
            for s in range(10):
                secret = MARKER if s % 3 == 0 else "keep"
                es.append(f"s{s}", [{"type": "T", "data": {"r": round_, "k": k, "v": secret,
                                                            "pad": "x" * 200}}
                                    for k in range(10)])
        for s in range(0, 10, 3):
            es.delete(f"s{s}", hard=s == 0)
        es.truncate("s1", 50)
        es.retention("s2", max_count=30)


def compact_proc(store) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evstore", "--store", str(store), "compact"],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_compact_killed_at_random_moments(tmp_path):
    store = tmp_path / "store"
    build(store)
    rng = random.Random(7)
    # how long a whole compaction takes here, on a copy
    import shutil
    shutil.copytree(store, tmp_path / "probe", symlinks=True)
    t = time.monotonic()
    p = compact_proc(tmp_path / "probe")
    p.communicate(timeout=120)
    full = max(time.monotonic() - t, 0.3)
    before = readable(store)
    assert before and not any(MARKER in v for v in before.values())
    kills = 0
    for i in range(KILLS):
        # a writer keeps appending while compaction runs
        r = run_cli("append", "live", "--type", "T", "--data", json.dumps({"i": i}), store=store)
        assert r.returncode == 0, r.stderr
        p = compact_proc(store)
        time.sleep(rng.uniform(0.05, full))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.communicate(timeout=120)
        now = readable(store)
        with EventStore(store, create=False) as es:
            live = [ev.version for ev in es.read("live")]
        assert live == list(range(1, i + 2))
        for pos, line in before.items():
            assert now.get(pos) == line, f"after kill {i}: position {pos} changed or vanished"
        extra = set(now) - set(before)
        assert all(json.loads(now[p])["stream"] == "live" for p in extra)
        before = now
        v = run_cli("verify", store=store)
        assert v.returncode == 0, v.stdout + v.stderr
    assert kills, "every compaction finished before its kill: nothing was tested"
    r = run_cli("compact", store=store)
    assert r.returncode == 0, r.stderr
    assert readable(store) == before
    for root, _dirs, files in os.walk(store):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert MARKER.encode() not in f.read(), os.path.join(root, name)
