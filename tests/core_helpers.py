"""Helpers shared by the core proof tests (concurrency, crashes): worker
scripts run as real processes, and the store-wide checks every one of them
ends with."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import cli_env

LONG = os.environ.get("EVSTORE_TORTURE") == "long"


def spawn(code: str, *args, **kw) -> subprocess.Popen:
    """Run ``python -c code args...`` as a real process, stdout piped."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                            env=cli_env(), **kw)


def json_lines(out: bytes) -> list[dict]:
    """Complete JSON lines only: a process killed mid-write leaves at most a
    partial last line, which was never acknowledged."""
    lines = out.decode("utf-8", "replace").split("\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def check_dense(events) -> dict[str, list]:
    """Positions 1..n in order, every stream's versions 1..m in order;
    returns stream -> its events."""
    assert [e.position for e in events] == list(range(1, len(events) + 1)), \
        "positions are not dense 1..head"
    by_stream: dict[str, list] = {}
    for e in events:
        by_stream.setdefault(e.stream, []).append(e)
    for s, evs in by_stream.items():
        assert [e.version for e in evs] == list(range(1, len(evs) + 1)), \
            f"stream {s!r}: versions are not contiguous"
    stamps = [e.recorded_at for e in events]
    assert stamps == sorted(stamps), "recorded_at decreases in position order"
    return by_stream


def check_streams_agree(es, by_stream) -> None:
    """Each stream read on its own equals its events in $all."""
    for s, evs in by_stream.items():
        assert es.version(s) == len(evs), s
        assert [e.to_dict() for e in es.read(s)] == [e.to_dict() for e in evs], s


def check_acked(by_batch: dict, acked: dict) -> None:
    """Every acknowledged batch is present, and where its acknowledgement
    said: ``acked`` maps a batch number to the append's reported
    version, position and count; ``by_batch`` maps it to its events."""
    for b, a in acked.items():
        assert b in by_batch, f"acknowledged batch {b} is lost"
        evs = by_batch[b]
        assert (evs[-1].version, evs[-1].position, len(evs)) == \
            (a["version"], a["position"], a["count"]), f"batch {b} moved"


def kill_after_ready(p: subprocess.Popen, delay: float) -> bytes:
    """Wait for a spawned writer's "ready" line, let it run ``delay``
    seconds, SIGKILL it, and return what it printed after "ready"."""
    import signal
    import time

    assert b"ready" in p.stdout.readline(), p.stderr.read()
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    # not communicate(): it reads the raw pipe and would skip what
    # readline() above already buffered
    out, err = p.stdout.read(), p.stderr.read()
    p.stdout.close()
    p.stderr.close()
    assert p.returncode == -signal.SIGKILL, err.decode()
    return out


def store_files(path) -> dict:
    """Every file of a store with its bytes, by relative path: the "store
    untouched" check.  writer.lock is left out: its holder line changes with
    every writer and is not data."""
    out = {}
    for root, _dirs, names in os.walk(path):
        for f in names:
            if f == "writer.lock":
                continue
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = fh.read()
    return out


def tree_digest(path) -> dict:
    """:func:`store_files` with each file's SHA-256 instead of its bytes."""
    import hashlib

    return {k: hashlib.sha256(v).hexdigest() for k, v in store_files(path).items()}
