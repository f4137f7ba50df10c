"""A reducer is the user's code: it cannot fake success or output, nor hold
an append (issue 12 item 5), and a relative reducer path in the settings
is resolved when used (issue 13 §4)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import cli_env, ndjson, run_cli
from evstore import EventStore
from evstore.features.reducers import ReducerError

REDUCERS = '''
import ctypes, os, sys

def exit0(state, event):
    sys.exit(0)

def kbd(state, event):
    raise KeyboardInterrupt

def genexit(state, event):
    raise GeneratorExit

def noisy(state, event):
    print("NOISE print")
    os.write(1, b"NOISE fd1\\n")
    libc = ctypes.CDLL(None)
    libc.printf(b"NOISE libc\\n")
    return {"n": (state or {}).get("n", 0) + 1}

def loop(state, event):
    while True:
        pass

def waiting(state, event):
    open(os.environ["REDUCER_READY"], "w").close()
    while True:
        pass

def boom(state, event):
    raise ValueError("boom")

def count(state, event):
    if os.environ.get("REDUCER_EXITS"):
        sys.exit(0)
    return (state or 0) + 1
'''


@pytest.fixture
def work(tmp_path):
    """A workspace: reducers.py beside a store with two events of stream a."""
    (tmp_path / "reducers.py").write_text(REDUCERS)
    store = tmp_path / "store"
    for t in ("Opened", "Deposited"):
        r = run_cli("append", "a", "--type", t, store=store)
        assert r.returncode == 0, r.stderr
    return tmp_path


def cli(work, *args, **kw):
    kw.setdefault("cwd", work)
    return run_cli(*args, store=work / "store", **kw)


@pytest.mark.parametrize("name,raised", [("exit0", "SystemExit"), ("kbd", "KeyboardInterrupt"),
                                         ("genexit", "GeneratorExit")])
@pytest.mark.parametrize("command", [["replay", "a"], ["replay", "a", "--steps"],
                                     ["snapshot", "a"]])
def test_a_reducer_exiting_is_exit_1_naming_the_event(work, name, raised, command):
    r = cli(work, *command, "--reducer", f"reducers.py:{name}")
    assert r.returncode == 1, r.stderr
    assert r.stdout == b""
    err = r.stderr.decode()
    assert "at version 1 (type Opened)" in err and raised in err, err
    assert err.count("evstore: error:") == 1 and "Traceback" not in err


def test_verify_snapshots_with_an_exiting_reducer_is_exit_1(work):
    assert cli(work, "snapshot", "a", "--reducer", "reducers.py:count").returncode == 0
    r = cli(work, "replay", "a", "--verify-snapshots", "--reducer", "reducers.py:count",
            env={"REDUCER_EXITS": "1"})
    assert r.returncode == 1 and r.stdout == b""
    assert "SystemExit" in r.stderr.decode() and "at version 1" in r.stderr.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("command", [["replay", "a"], ["replay", "a", "--steps"],
                                     ["snapshot", "a"], ["import-time"]])
def test_a_signal_while_a_reducer_runs_is_an_interruption_not_its_failure(work, sig, command):
    """Found: a SIGTERM while a reducer ran was reported as the reducer's
    failure ("reducer ... failed ... Interrupted: 15", exit 1)."""
    ready = work / "ready"
    (work / "slow.py").write_text(
        "import os\nopen(os.environ['REDUCER_READY'], 'w').close()\nwhile True:\n    pass\n"
        "def f(s, e):\n    return s\n")
    if command == ["import-time"]:
        command, reducer = ["replay", "a"], "slow.py:f"
    else:
        reducer = "reducers.py:waiting"
    p = subprocess.Popen([sys.executable, "-m", "evstore", *command, "--reducer", reducer],
                         cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=cli_env(work / "store", REDUCER_READY=str(ready)))
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready.exists()
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 128 + sig, err
    assert out == b"" and err.endswith(b"\n") and err.splitlines()[-1] == b"evstore: interrupted"
    assert b"failed" not in err and b"Traceback" not in err


def test_a_reducer_exiting_at_import_is_a_bad_reducer(work):
    (work / "bad.py").write_text("import sys\nsys.exit(0)\ndef f(s, e):\n    return s\n")
    r = cli(work, "replay", "a", "--reducer", "bad.py:f")
    assert r.returncode == 2 and r.stdout == b""
    assert "SystemExit" in r.stderr.decode()


@pytest.mark.parametrize("command,steps", [(["replay", "a"], False),
                                           (["replay", "a", "--steps"], True),
                                           (["snapshot", "a"], False)])
def test_a_reducer_s_output_never_reaches_stdout(work, command, steps):
    r = cli(work, *command, "--reducer", "reducers.py:noisy")
    assert r.returncode == 0, r.stderr
    lines = ndjson(r.stdout)  # every line is evstore's JSON
    assert b"NOISE" not in r.stdout
    if steps:
        assert [s["state"] for s in lines] == [{"n": 1}, {"n": 2}]
    else:
        assert len(lines) == 1 and lines[0]["state"] == {"n": 2}
    err = r.stderr.decode()
    for what in ("print", "fd1", "libc"):
        assert f"NOISE {what}" in err


def test_a_reducer_s_output_at_config_time_never_reaches_stdout(work):
    (work / "loud.py").write_text("print('LOUD')\ndef f(s, e):\n    return s\n")
    r = cli(work, "config", "reducer", "loud.py:f")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"snapshot_every": None, "reducer": "loud.py:f"}


def _auto(work, reducer, every=1):
    assert cli(work, "config", "snapshot-every", str(every)).returncode == 0
    assert cli(work, "config", "reducer", reducer).returncode == 0


def test_a_looping_reducer_never_holds_an_append(work):
    _auto(work, "reducers.py:loop")
    env = cli_env(work / "store", EVSTORE_SNAPSHOT_TIMEOUT="3")
    started = time.monotonic()
    p = subprocess.Popen([sys.executable, "-m", "evstore", "append", "a", "--type", "T"],
                         cwd=work, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = p.stdout.readline()
        # the acknowledgement comes before any snapshot work ends
        assert p.poll() is None, "the result was printed only at exit"
        assert json.loads(line) == {"stream": "a", "version": 3, "position": 3, "count": 1}
        rest, err = p.communicate(timeout=30)
    finally:
        p.kill()
    took = time.monotonic() - started
    assert p.returncode == 0 and rest == b""
    assert took < 15, took
    err = err.decode()
    assert "automatic snapshot of 'a' skipped: not made within 3 s" in err, err
    events = ndjson(cli(work, "read", "a").stdout)
    assert [e["type"] for e in events] == ["Opened", "Deposited", "T"]  # committed once
    # the abandoned child is gone: nothing of this store loops on
    assert _processes_of(work / "store") == []


def _processes_of(store) -> list[int]:
    """Live processes started for ``store`` (its EVSTORE_DIR in their
    environment; a forked child shares it): unlike ``pgrep -f``, blind to
    other tests' processes running beside this one."""
    want = f"EVSTORE_DIR={store}".encode()
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/environ", "rb") as f:
                    if want in f.read().split(b"\0"):
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def test_a_failing_reducer_is_a_note_not_a_failed_append(work):
    _auto(work, "reducers.py:boom")
    r = cli(work, "append", "a", "--type", "T")
    assert r.returncode == 0, r.stderr
    assert ndjson(r.stdout) == [{"stream": "a", "version": 3, "position": 3, "count": 1}]
    err = r.stderr.decode()
    assert "automatic snapshot of 'a' at version 3 not saved" in err and "boom" in err
    assert err.count("\n") == 1


def test_an_exiting_or_noisy_reducer_in_an_auto_snapshot(work):
    _auto(work, "reducers.py:exit0")
    r = cli(work, "append", "a", "--type", "T")
    assert r.returncode == 0 and ndjson(r.stdout)[0]["version"] == 3
    assert "SystemExit" in r.stderr.decode()
    _auto(work, "reducers.py:noisy")
    r = cli(work, "append", "a", "--type", "T")
    assert r.returncode == 0 and b"NOISE" not in r.stdout
    assert ndjson(r.stdout) == [{"stream": "a", "version": 4, "position": 4, "count": 1}]
    show = cli(work, "snapshot", "a", "--show")
    assert json.loads(show.stdout)["version"] == 4


# --- the library ------------------------------------------------------------------------------

def test_library_append_is_bounded_by_snapshot_timeout(tmp_path, caplog):
    release = threading.Event()

    def stuck(state, event):
        while not release.is_set():
            time.sleep(0.01)
        return state

    try:
        with EventStore(tmp_path / "s", snapshot_every=1, reducer=stuck,
                        snapshot_timeout=0.3) as es, caplog.at_level(logging.WARNING, "evstore"):
            t0 = time.monotonic()
            assert es.append("a", [{"type": "T"}]).version == 1
            assert time.monotonic() - t0 < 5
            assert "not made within 0.3 s" in caplog.text
            caplog.clear()
            t0 = time.monotonic()
            es.append("a", [{"type": "T"}])  # the first is still running: skipped at once
            assert time.monotonic() - t0 < 0.3
            assert "an earlier one of this store" in caplog.text
            assert es.version("a") == 2
    finally:
        release.set()


def test_library_auto_snapshot_failure_is_a_warning(tmp_path, caplog):
    def exits(state, event):
        raise SystemExit(3)

    with EventStore(tmp_path / "s", snapshot_every=1, reducer=exits) as es, \
            caplog.at_level(logging.WARNING, "evstore"):
        assert es.append("a", [{"type": "T"}]).version == 1
        assert "not saved" in caplog.text and "SystemExit" in caplog.text


def test_library_replay_wraps_system_exit(tmp_path):
    with EventStore(tmp_path / "s") as es:
        es.append("a", [{"type": "T"}])
        with pytest.raises(ReducerError, match=r"version 1 \(type T\): SystemExit"):
            es.replay("a", lambda s, e: sys.exit(0))


# --- relative reducer paths (issue 13 §4) -------------------------------------------------------

def test_a_relative_reducer_setting_follows_the_workspace(work, tmp_path):
    assert cli(work, "config", "reducer", "reducers.py:count").returncode == 0
    from evstore.features import settings
    assert settings.load(work / "store")["reducer"] == "reducers.py:count"
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.move(str(work), moved)
    try:
        # from the workspace: relative to the current directory
        r = run_cli("replay", "a", store="store", cwd=moved)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["state"] == 2
        # from elsewhere: beside the store
        r = run_cli("replay", "a", store=moved / "store", cwd=os.path.dirname(moved))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["state"] == 2
        # not found: the message says where it looked
        os.rename(moved / "reducers.py", moved / "elsewhere.py")
        r = run_cli("replay", "a", store=moved / "store", cwd=os.path.dirname(moved))
        assert r.returncode == 2
        err = r.stderr.decode()
        assert "looked for it in the current directory" in err and str(moved) in err
    finally:
        shutil.rmtree(moved, ignore_errors=True)
