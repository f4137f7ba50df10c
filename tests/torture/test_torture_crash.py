"""Torture: SIGKILL writers at random moments, with followers running (issue 6).

One store, many writer processes killed one after another.  Each writer does
one kind of work: single events, batches, segment rolls (tiny
segment_bytes), library snapshot saves, ``evstore snapshot`` (CLI), or
checkpoint saves.  Two followers run through all the kills: a library
subscription (never killed) and ``evstore tail -f --all --checkpoint`` (itself
SIGKILLed and restarted now and then).  After every kill:

* positions dense, versions contiguous, every acknowledged batch
  where its ack said, no partial batch, verify() clean;
* every snapshot file loads (never torn) and holds the state saved for its
  version; the checkpoint holds a value some save was given, never older than
  the last acknowledged save.

At the end both followers saw exactly positions 1..head in order, ids
matching the log (the checkpointed one: each restart resumes with no hole).

By default ~24 kills bounded to ~15 s; EVSTORE_TORTURE=long: 400 kills.
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

from conftest import cli_env
from core_helpers import (
    LONG, check_acked, check_dense, check_streams_agree, json_lines, kill_after_ready, spawn,
)
from evstore import EventStore
from evstore.features.checkpoints import CheckpointStore
from evstore.ops import verify

WRITER = r"""
import json, random, sys
from evstore import EventStore, NewEvent
from evstore.features.checkpoints import CheckpointStore
path, mode, b, seed, seg = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rnd = random.Random(seed)
def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
def state(v):
    return {"v": v, "pad": "s" * (37 * v % 700)}
with EventStore(path, sync=True, segment_bytes=seg) as es:
    cps = CheckpointStore(es)
    say({"ready": True})
    while True:
        k = 1 if mode in ("single", "snapshot", "checkpoint") else rnd.choice([2, 3, 5, 8, 13])
        stream = "snap" if mode == "snapshot" else f"c{rnd.randrange(3)}"
        pad = rnd.randrange(400 if mode == "roll" else 80)
        say({"try": b, "stream": stream, "n": k})
        r = es.append(stream, [NewEvent("T", {"b": b, "i": i, "n": k, "pad": "z" * pad})
                               for i in range(k)])
        say({"ack": b, "version": r.version, "position": r.position, "count": r.count})
        if mode == "snapshot":
            say({"snap_try": r.version})
            es.snapshots.save("snap", state(r.version), r.version)
            say({"snap_ack": r.version})
        elif mode == "checkpoint":
            say({"cp_try": r.position})
            cps.save("cpw", r.position)
            say({"cp_ack": r.position})
        b += 1
"""

SUBSCRIBER = r"""
import json, signal, sys
from evstore import EventStore
es = EventStore(sys.argv[1], create=False)
sub = es.subscribe(from_position=1)
signal.signal(signal.SIGTERM, lambda *a: sub.stop())
for ev in sub:
    sys.stdout.write(json.dumps([ev.position, ev.id]) + "\n")
    sys.stdout.flush()
"""


def snap_state(v):
    return {"v": v, "pad": "s" * (37 * v % 700)}


def start_tail(path):
    return subprocess.Popen(
        [sys.executable, "-m", "evstore", "--store", str(path), "tail", "--all", "-f",
         "--checkpoint", "cli", "--format", "ndjson"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())


def check_batches(events, tries, acked):
    """Batches present are whole, in one stream, at contiguous positions;
    acknowledged ones are where their ack said."""
    by_b: dict[int, list] = {}
    for e in events:
        if isinstance(e.data, dict) and "b" in e.data:
            by_b.setdefault(e.data["b"], []).append(e)
    for b, evs in by_b.items():
        assert b in tries, f"batch {b} was never tried"
        t = tries[b]
        assert [e.data["i"] for e in evs] == list(range(t["n"])), f"batch {b}: partial or doubled"
        assert {e.stream for e in evs} == {t["stream"]}
        assert [e.position for e in evs] == list(range(evs[0].position, evs[0].position + t["n"]))
    check_acked(by_b, acked)
    return by_b


@pytest.mark.slow
def test_sigkill_writers_with_followers(tmp_path):
    path = tmp_path / "store"
    EventStore(path).close()
    rnd = random.Random(int(os.environ.get("EVSTORE_CRASH_SEED", "6")))
    kills = 400 if LONG else 24
    budget = 600 if LONG else 15
    t0 = time.monotonic()

    follower = spawn(SUBSCRIBER, path)
    tail = start_tail(path)
    tail_runs: list[bytes] = []
    tries, acked = {}, {}
    snap_tried, snap_acked = set(), set()
    cp_tried, cp_acked = set(), set()
    cli_snaps = 0
    next_b = 0
    modes = {}
    done = 0
    while done < kills and time.monotonic() - t0 < budget:
        mode = rnd.choice(["single", "batch", "roll", "roll", "snapshot", "checkpoint", "cli-snapshot"])
        modes[mode] = modes.get(mode, 0) + 1
        if mode == "cli-snapshot":
            # `evstore snapshot` killed at a random moment (it may never get
            # as far as writing): whatever it leaves must load, or be absent
            if not any(t["stream"] == "snap" for b, t in tries.items() if b in acked):
                continue
            p = subprocess.Popen([sys.executable, "-m", "evstore", "--store", str(path),
                                  "snapshot", "snap", "--reducer", "count"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
            time.sleep(rnd.uniform(0.05, 0.4))
            p.send_signal(signal.SIGKILL)
            p.communicate(timeout=30)
            cli_snaps += p.returncode == 0
        else:
            seg = rnd.choice([300, 700]) if mode == "roll" else 64 << 20
            p = spawn(WRITER, path, mode, next_b, rnd.randrange(10**9), seg)
            for line in json_lines(kill_after_ready(p, rnd.uniform(0, 0.08))):
                for key, store in (("try", tries), ("ack", acked)):
                    if key in line:
                        store[line[key]] = line
                for key, s in (("snap_try", snap_tried), ("snap_ack", snap_acked),
                               ("cp_try", cp_tried), ("cp_ack", cp_acked)):
                    if key in line:
                        s.add(line[key])
            next_b = max(tries, default=-1) + 1
        done += 1
        if rnd.random() < 0.1:  # kill the checkpointed follower too, and restart it
            tail.send_signal(signal.SIGKILL)
            out, _ = tail.communicate(timeout=30)
            tail_runs.append(out)
            tail = start_tail(path)

        report = verify(path, settle=0)
        assert report.ok, (done, mode, [str(x) for x in report.problems])
        with EventStore(path, create=False) as es:
            events = list(es.read_all())
            check_streams_agree(es, check_dense(events))
            check_batches(events, tries, acked)
            snaps = es.snapshots
            for v in snaps.versions("snap"):
                s = snaps.load("snap", v)  # CorruptStore here = a torn snapshot
                if s.reducer == "count":
                    assert s.state == {"T": v}, (v, s)
                else:
                    assert v in snap_tried and s.state == snap_state(v), (v, s)
            assert snap_acked <= set(snaps.versions("snap")), "an acknowledged snapshot is lost"
            cp = CheckpointStore(es).get("cpw")  # CorruptStore here = a torn checkpoint
            if cp_acked:
                assert cp is not None and cp.position in cp_tried, cp
                assert cp.position >= max(cp_acked), "checkpoint went back past an acked save"
            head = es.head()
    elapsed = time.monotonic() - t0
    assert done >= (kills if LONG else 12), f"only {done} kills in {elapsed:.0f}s"

    # drain the followers: every position 1..head, in order, once (per run)
    ids = {e.position: e.id for e in EventStore(path, create=False).read_all()}
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = follower.stdout.readline()
        lines.append(json.loads(line))
        if lines[-1][0] >= head:
            break
    follower.send_signal(signal.SIGTERM)
    rest, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err.decode()
    lines += json_lines(rest)
    assert [p for p, _ in lines] == list(range(1, head + 1)), "subscriber: hole, duplicate or disorder"
    assert all(ids[p] == i for p, i in lines)

    tail.send_signal(signal.SIGKILL)
    tail_runs.append(tail.communicate(timeout=30)[0])
    final = subprocess.run([sys.executable, "-m", "evstore", "--store", str(path), "tail", "--all",
                            "-f", "--checkpoint", "cli", "--idle-timeout", "1.0"],
                           capture_output=True, env=cli_env(), timeout=60)
    assert final.returncode == 0, final.stderr.decode()
    tail_runs.append(final.stdout)
    seen = 0
    for out in tail_runs:
        ps = [(e["position"], e["id"]) for e in json_lines(out)]
        if not ps:
            continue
        assert ps[0][0] <= seen + 1, f"tail --checkpoint resumed at {ps[0][0]} after {seen}: a hole"
        assert [p for p, _ in ps] == list(range(ps[0][0], ps[0][0] + len(ps))), "tail: out of order"
        assert all(ids[p] == i for p, i in ps)
        seen = max(seen, ps[-1][0])
    assert seen == head, (seen, head)
    print(f"{done} kills in {elapsed:.1f}s, modes {modes}, {len(acked)} acked batches, "
          f"{len(tail_runs)} tail runs, {len(snap_acked)} snapshots, cli snapshots {cli_snaps}")
