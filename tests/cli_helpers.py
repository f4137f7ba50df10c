"""Assertions shared by the tests/test_cli_*.py files.

Every CLI test runs ``python -m evstore`` as a real process (conftest.run_cli)
and pins three things separately: the exit code, stdout, and stderr.  An
error must be exactly one line ``evstore: error: ...`` on stderr, nothing on
stdout, and never a traceback -- ``error()`` checks all of that at once.
"""
from __future__ import annotations

import json
import os
import re
import select
import time
from pathlib import Path

from conftest import run_cli

RFC3339_US = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")
RECORDED_KEYS = ["stream", "version", "position", "id", "type", "data", "metadata", "recorded_at"]


def uid(n: int) -> str:
    """A fixed, valid (version 4) UUID, so tests can name their ids."""
    return f"00000000-0000-4000-8000-{n:012x}"


def dumps(obj) -> str:
    """The CLI's output form of one JSON value (UTF-8, ``": "`` and ``", "``)."""
    return json.dumps(obj, ensure_ascii=False)


def ndjson_input(events) -> bytes:
    return "".join(dumps(e) + "\n" for e in events).encode("utf-8")


def ok(r) -> bytes:
    """Exit 0 and a quiet stderr; returns stdout."""
    assert r.returncode == 0, (r.returncode, r.stderr.decode("utf-8", "replace"))
    assert r.stderr == b"", r.stderr.decode("utf-8", "replace")
    return r.stdout


def error(r, code: int, message: str | None = None, *, startswith: str | None = None,
          stdout_empty: bool = True) -> str:
    """Exit ``code``, one ``evstore: error:`` line on stderr, nothing on
    stdout; returns the message after the prefix.  ``message`` pins it exactly."""
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == code, (r.returncode, err, r.stdout[:300])
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith("evstore: error: "), repr(err)
    if stdout_empty:
        assert r.stdout == b"", r.stdout[:300]
    msg = err[len("evstore: error: "):-1]
    if message is not None:
        assert msg == message
    if startswith is not None:
        assert msg.startswith(startswith), msg
    return msg


def appended(r, stream: str, version: int, position: int, count: int) -> None:
    """An append's exact stdout."""
    assert ok(r) == (dumps({"stream": stream, "version": version, "position": position,
                            "count": count}) + "\n").encode("utf-8")


def lines_of(out: bytes) -> list:
    """NDJSON split on "\\n" only: conftest.ndjson's str.splitlines() would also
    split inside strings holding U+2028, U+0085 or \\x1c..\\x1e."""
    return [json.loads(line) for line in out.decode("utf-8").split("\n") if line]


def events_of(r) -> list[dict]:
    """Parse a successful read's NDJSON, checking each line is exactly the
    canonical rendering of the parsed event (key order, spacing, Unicode)."""
    out = ok(r)
    lines = out.decode("utf-8").split("\n")
    assert lines[-1] == "", "output must end with a newline"
    evs = [json.loads(line) for line in lines[:-1]]
    for line, ev in zip(lines, evs):
        assert list(ev) == RECORDED_KEYS, list(ev)
        assert line == dumps(ev), line[:300]
        assert RFC3339_US.match(ev["recorded_at"]), ev["recorded_at"]
    return evs


def typed(v) -> list:
    """A flat token list in which JSON's distinctions survive ``==``: 1 vs
    1.0 vs true, 0.0 vs -0.0, and the order of an object's keys.  Flat and
    iterative, so that deeply nested values compare without recursion."""
    out, stack = [], [v]
    while stack:
        x = stack.pop()
        if isinstance(x, tuple):  # an end marker pushed below
            out.append(x[0])
        elif isinstance(x, bool):
            out.append(("b", x))
        elif isinstance(x, int):
            out.append(("i", x))
        elif isinstance(x, float):
            out.append(("f", repr(x)))
        elif isinstance(x, dict):
            out.append("{")
            stack.append(("}",))
            for k, item in reversed(list(x.items())):
                stack.append(item)
                stack.append(("k:" + k,))
        elif isinstance(x, list):
            out.append("[")
            stack.append(("]",))
            stack.extend(reversed(x))
        elif isinstance(x, str):
            out.append(("s", x))
        else:
            assert x is None, type(x)
            out.append(None)
    return out


def tree(root: Path) -> dict:
    """Every file under ``root`` (path -> bytes) and every directory (path ->
    None), except the lock file, whose existence is not data."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[rel + "/"] = None
        for name in filenames:
            if name == "writer.lock":
                continue
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.join(rel, name)] = f.read()
    return out


def run(store: Path, *args, **kw):
    return run_cli(*args, store=store, **kw)


def run_many(store: Path, cases: dict) -> dict:
    """Run independent CLI calls concurrently (name -> (args, input)); for
    the long tables of refused inputs, which must not write anyway."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as ex:
        futures = {name: ex.submit(run_cli, *args, store=store, input=body)
                   for name, (args, body) in cases.items()}
        return {name: f.result() for name, f in futures.items()}


def all_errors(results: dict, code: int, **kw) -> dict:
    """``error()`` for each result; reports every case that fails, not just the first."""
    bad, msgs = {}, {}
    for name, r in results.items():
        try:
            msgs[name] = error(r, code, **kw)
        except AssertionError as e:
            bad[name] = f"{e} (exit {r.returncode}, stderr {r.stderr[:200]!r})"
    assert not bad, "\n".join(f"{k}: {v}" for k, v in bad.items())
    return msgs


def read_pty(master: int, proc, timeout: float) -> bytes:
    """Everything ``proc`` writes to the pseudo-terminal ``master`` until it
    exits (or ``timeout`` passes); a pty must be drained while the child runs,
    or a child that fills it blocks."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    return seen
