"""``evstore tail -f`` as real processes: concurrent writers, torn appends,
SIGKILL and restart with a checkpoint, SIGINT/SIGTERM, closed pipes, the
idle timeout and latency."""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import ROOT, cli_env, ndjson, run_cli
from evstore import EventStore, NewEvent
from evstore.features.checkpoints import CheckpointStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pipes")


_running: list[subprocess.Popen] = []


def _kill_all() -> None:
    while _running:
        p = _running.pop()
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture(autouse=True)
def _no_follower_outlives_its_test():
    # A broken follower must fail a test, not hang it on a blocking read:
    # killing it ends the read with EOF.
    watchdog = threading.Timer(60, _kill_all)
    watchdog.daemon = True
    watchdog.start()
    yield
    watchdog.cancel()
    _kill_all()


class Follower:
    """``evstore tail ARGS`` with stdout in a file (or a pipe)."""

    def __init__(self, store, *args, pipe=False, env=None, tmp=None):
        self.out_path = None
        e = cli_env(store)
        e.update(env or {})
        if pipe:
            out = subprocess.PIPE
        else:
            self.out_path = os.path.join(tmp, f"follower-{time.monotonic_ns()}.out")
            out = open(self.out_path, "wb")
        self.p = subprocess.Popen([sys.executable, "-m", "evstore", "tail", *map(str, args)],
                                  stdout=out, stderr=subprocess.PIPE, env=e)
        _running.append(self.p)
        if not pipe:
            out.close()

    def text(self) -> bytes:
        with open(self.out_path, "rb") as f:
            return f.read()

    def events(self) -> list:
        data = self.text()
        return ndjson(data[: data.rfind(b"\n") + 1])  # complete lines only

    def wait_for(self, n: int, timeout: float = 20) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            evs = self.events()
            if len(evs) >= n:
                return evs
            assert self.p.poll() is None, self.p.stderr.read()
            time.sleep(0.02)
        raise AssertionError(f"follower printed {len(self.events())} events, waited for {n}")

    def stop(self, sig=signal.SIGINT, timeout: float = 10) -> tuple[int, bytes]:
        self.p.send_signal(sig)
        _, err = self.p.communicate(timeout=timeout)
        return self.p.returncode, err


WRITER = textwrap.dedent("""
    import random, sys, time
    sys.path.insert(0, {root!r})
    from evstore import EventStore, NewEvent
    path, tag, batches, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    for i in range(batches):
        # A handle per append: the core's writers cache segment sizes across
        # appends, which other processes' appends make stale (see docs/TAIL.md).
        with EventStore(path, sync=False, segment_bytes=4096) as es:
            n = rng.randint(1, 4)
            es.append(f"{{tag}}-{{i % 3}}", [NewEvent(rng.choice("XY"), {{"w": tag, "i": i, "k": k}})
                                          for k in range(n)])
        if rng.random() < 0.3:
            time.sleep(rng.random() * 0.003)
""").format(root=str(ROOT))

# Dies in the middle of an append: the stream records and half of the
# commit-log frame are written, under the lock, and never acknowledged.
CRASHER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    from evstore import EventStore
    from evstore.disk.format import LOG_MAGIC, encode_frame
    from evstore.disk.records import log_payload
    from evstore.model import normalize, pack_fields
    es = EventStore(sys.argv[1], sync=False, segment_bytes=4096)
    with es.writer_lock() as log:
        blobs = [pack_fields(normalize({{"type": "Torn"}}), 1 << 20) for _ in range(3)]
        frame = encode_frame(LOG_MAGIC, log_payload("torn", 1, log.tail.head + 1,
                                                    time.time_ns() // 1000, blobs))
        w, _, _ = log.writer(es.segment_bytes)
        os.write(w.fd, frame[: len(frame) // 2])
        time.sleep(0.05)   # followers look at the torn frame meanwhile
        os._exit(0)        # the kernel drops the lock; the next writer cuts the tail
""").format(root=str(ROOT))


def run_script(script: str, *args) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", script, *map(str, args)])
    _running.append(p)
    return p


def test_followers_and_concurrent_writers(store_dir, tmp_path):
    with EventStore(store_dir) as es:
        es.append("seed", [NewEvent("Seed")])
    all_f = Follower(store_dir, "-f", "--all", "--from", "1", tmp=tmp_path)
    stream_f = Follower(store_dir, "-f", "w1-0", "--from", "1", tmp=tmp_path)  # not there yet
    typed_f = Follower(store_dir, "-f", "--all", "--checkpoint", "typed", "--type", "Y",
                       "--stream-prefix", "w2", tmp=tmp_path)
    writers = [run_script(WRITER, store_dir, f"w{k}", 120, k) for k in range(3)]
    crashers = []
    for _ in range(3):
        time.sleep(0.1)
        crashers.append(run_script(CRASHER, store_dir))
        for c in crashers:
            c.wait(30)
    for w in writers:
        assert w.wait(60) == 0
    with EventStore(store_dir) as es:  # the next writer cuts the last torn tail
        es.append("end", [NewEvent("End")])
        want_all = [e.to_dict() for e in es.read_all()]
        want_stream = [e.to_dict() for e in es.read("w1-0")]
        want_typed = [e.to_dict() for e in es.read_all(types=["Y"], stream_prefix="w2")]
        head = es.head()
        assert len(os.listdir(os.path.join(store_dir, "log"))) > 4  # segments rolled
    assert not any(e["stream"] == "torn" for e in want_all)
    assert all_f.wait_for(len(want_all)) == want_all
    assert stream_f.wait_for(len(want_stream)) == want_stream
    assert typed_f.wait_for(len(want_typed)) == want_typed
    for f in (all_f, stream_f, typed_f):
        assert f.stop() == (0, b"")
    assert all_f.events() == want_all  # nothing after the end either
    with EventStore(store_dir) as es:
        assert CheckpointStore(es).get("typed").position == head


def test_sigkill_then_restart_with_the_checkpoint(store_dir, tmp_path):
    with EventStore(store_dir) as es:
        es.append("seed", [NewEvent("Seed")])
    writer = run_script(WRITER, store_dir, "w", 400, 1)
    first = Follower(store_dir, "-f", "--all", "--checkpoint", "proj", tmp=tmp_path)
    first.wait_for(100)
    with EventStore(store_dir) as es:  # saves come at least every 0.2 s
        deadline = time.monotonic() + 10
        while CheckpointStore(es).get("proj").position < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
    first.p.kill()
    first.p.wait(10)
    printed = first.events()
    with EventStore(store_dir) as es:
        saved = CheckpointStore(es).get("proj").position
    assert 1 <= saved <= printed[-1]["position"]
    assert [e["position"] for e in printed] == list(range(1, len(printed) + 1))

    second = Follower(store_dir, "-f", "--all", "--checkpoint", "proj", tmp=tmp_path)
    assert writer.wait(60) == 0
    with EventStore(store_dir) as es:
        want = [e.to_dict() for e in es.read_all()]
    again = second.wait_for(len(want) - saved)
    assert second.stop() == (0, b"")
    # resumed right after the checkpoint: the only duplicates are the events
    # printed after the last save, and nothing is lost
    assert again == want[saved:]
    assert printed == want[: len(printed)]

    # after a clean stop: exactly once
    with EventStore(store_dir) as es:
        assert CheckpointStore(es).get("proj").position == len(want)
        es.append("after", [NewEvent("After")])
    r = run_cli("tail", "--all", "--checkpoint", "proj", store=store_dir)
    assert [e["stream"] for e in ndjson(r.stdout)] == ["after"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_mid_backlog(store_dir, sig):
    with EventStore(store_dir, sync=False) as es:
        for i in range(40):
            es.append(f"s{i % 5}", [NewEvent("Big", {"i": i, "k": k, "pad": "x" * 500})
                                    for k in range(100)])
    f = Follower(store_dir, "-f", "--all", "--checkpoint", "c", pipe=True)
    head = [f.p.stdout.readline() for _ in range(5)]  # the follower is now mid-backlog
    f.p.send_signal(sig)
    rest = f.p.stdout.read()  # keep reading: it may be blocked on a full pipe
    f.p.wait(10)
    assert (f.p.returncode, f.p.stderr.read()) == (0, b"")
    out = b"".join(head) + rest
    assert out.endswith(b"\n")  # no half line
    evs = ndjson(out)
    assert 5 <= len(evs) < 4000
    with EventStore(store_dir) as es:  # a clean stop acknowledges what it printed
        assert CheckpointStore(es).get("c").position == evs[-1]["position"]


def test_closed_pipe_ends_quietly(store_dir):
    with EventStore(store_dir, sync=False) as es:
        for i in range(20):
            es.append("s", [NewEvent("Big", {"pad": "x" * 1000}) for _ in range(100)])
    # the reader goes while we write a backlog larger than the pipe
    for args in (["--all", "--from", "1"], ["-f", "--all", "--from", "1"]):
        f = Follower(store_dir, *args, pipe=True)
        f.p.stdout.readline()
        f.p.stdout.close()
        f.p.wait(10)
        assert (f.p.returncode, f.p.stderr.read()) == (0, b""), args
    # the reader goes while the follower waits for events that never come
    f = Follower(store_dir, "-f", "--all", "-n", "1", pipe=True)
    f.p.stdout.readline()
    t = time.monotonic()
    f.p.stdout.close()
    f.p.wait(10)
    assert (f.p.returncode, f.p.stderr.read()) == (0, b"")
    assert time.monotonic() - t < 5
    # the shell's view of it
    r = subprocess.run(["bash", "-c", f"{sys.executable} -m evstore tail -f --all | head -n 2"
                       " > /dev/null; echo ${PIPESTATUS[*]}"],
                       capture_output=True, env=cli_env(store_dir), timeout=20)
    assert (r.stdout, r.stderr) == (b"0 0\n", b"")


def test_idle_timeout_max_count_and_a_stream_that_appears(store_dir):
    with EventStore(store_dir) as es:
        es.append("s", [NewEvent("A")])
    t = time.monotonic()
    r = run_cli("tail", "-f", "--all", "-n", "0", "--idle-timeout", "0.3", store=store_dir)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    assert 0.3 <= time.monotonic() - t < 5
    f = Follower(store_dir, "-f", "later", "--max-count", "2", pipe=True)
    time.sleep(0.3)
    with EventStore(store_dir) as es:
        es.append("later", [NewEvent("L1"), NewEvent("L2"), NewEvent("L3")])
    out, err = f.p.communicate(timeout=10)
    assert (f.p.returncode, err) == (0, b"")
    assert [e["type"] for e in ndjson(out)] == ["L1", "L2"]


def test_one_consumer_per_checkpoint_name(store_dir, tmp_path):
    with EventStore(store_dir) as es:
        es.append("s", [NewEvent("A")])
    a = Follower(store_dir, "-f", "--all", "--checkpoint", "x", tmp=tmp_path)
    a.wait_for(1)
    r = run_cli("tail", "-f", "--all", "--checkpoint", "x", store=store_dir)
    assert r.returncode == 1 and b"in use by another consumer" in r.stderr
    r = run_cli("checkpoints", "delete", "x", store=store_dir)
    assert r.returncode == 1 and b"in use" in r.stderr
    b = Follower(store_dir, "-f", "--all", "--checkpoint", "y", tmp=tmp_path)
    assert b.wait_for(1) == a.events()
    assert a.stop() == (0, b"") and b.stop(signal.SIGTERM) == (0, b"")


def test_table_lines_when_following(store_dir):
    with EventStore(store_dir) as es:
        es.append("acct-1", [NewEvent("Deposited", {"amount": 10})])
    r = run_cli("tail", "-f", "--all", "--format", "table", "--max-count", "1", store=store_dir)
    assert r.returncode == 0
    line = r.stdout.decode()
    assert line.count("\n") == 1 and "acct-1@1" in line and "Deposited" in line


@pytest.mark.parametrize("wake", ["auto", "poll"])
def test_latency(store_dir, wake):
    """The promise: a committed event appears within 100 ms (median)."""
    with EventStore(store_dir) as es:
        es.append("s", [NewEvent("A")])
        f = Follower(store_dir, "-f", "--all", "--from", "2", pipe=True,
                     env={"EVSTORE_TAIL_WAKE": wake})
        es.append("s", [NewEvent("Warmup")])
        f.p.stdout.readline()
        lat = []
        for i in range(15):
            time.sleep(0.02)
            t = time.perf_counter()
            es.append("s", [NewEvent("T", {"i": i})])
            assert json.loads(f.p.stdout.readline())["data"] == {"i": i}
            lat.append(time.perf_counter() - t)
    f.p.send_signal(signal.SIGINT)
    f.p.communicate(timeout=10)
    assert f.p.returncode == 0
    assert statistics.median(lat) < 0.1, lat


def test_stop_from_another_thread_while_idle(store_dir):
    """The library's stop(): wakes a waiting subscription at once."""
    with EventStore(store_dir) as es:
        sub = es.subscribe(wake="poll", poll_interval=10)
        done = threading.Event()
        t = threading.Thread(target=lambda: (list(sub), done.set()))
        t.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        sub.stop()
        assert done.wait(5) and time.monotonic() - t0 < 1


# -- core bugs found while following (docs/TAIL.md, "Found in the core") -----------------------

def test_an_empty_next_segment_does_not_hang_readers(store_dir):
    with EventStore(store_dir) as es:
        es.append("s", [NewEvent("A")])
    open(os.path.join(store_dir, "log", f"{2:016d}.log"), "wb").close()
    r = subprocess.run([sys.executable, "-m", "evstore", "tail", "--all"], capture_output=True,
                       env=cli_env(store_dir), timeout=3)  # hangs: TimeoutExpired
    assert r.returncode == 0 and len(ndjson(r.stdout)) == 1


def test_writers_in_several_processes_keep_their_handles(store_dir):
    script = textwrap.dedent("""
        import os, sys, time
        sys.path.insert(0, {root!r})
        from evstore import EventStore, NewEvent
        with EventStore(sys.argv[1], sync=False) as es:
            while not os.path.exists(sys.argv[2]):  # start together
                time.sleep(0.005)
            for i in range(300):
                es.append("shared", [NewEvent("X", {{"i": i}})])
    """).format(root=str(ROOT))
    EventStore(store_dir).close()
    go = store_dir.parent / "go"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(store_dir), str(go)],
                              stderr=subprocess.DEVNULL) for _ in range(3)]
    _running.extend(procs)
    time.sleep(0.5)
    go.touch()
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    with EventStore(store_dir) as es:
        assert es.version("shared") == 900
