"""Checkpoints that follow the work, not the pipe: ``tail --checkpoint NAME
--exec CMD [--batch N]`` (features/handoff.py), ``--no-commit`` and
``evstore checkpoints set``; and a follower's stop signals from its first
moments (cli/early.py).  On files and PostgreSQL; checkpoints are read back
with ``evstore checkpoints``, as a user would."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cli_helpers import error
from conftest import cli_env, ndjson, run_cli
from evstore import EventStore, NewEvent
from evstore.errors import UsageError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell and signals")


@pytest.fixture
def store(store_dir):
    with EventStore(store_dir, sync=False) as es:
        for i in range(1, 7):
            es.append(f"s{i % 2}", [NewEvent("T" if i % 3 else "U", {"i": i})])
    return store_dir


def position(store, name="c"):
    """Checkpoint ``name``'s position as ``evstore checkpoints`` lists it
    (None: there is no such checkpoint)."""
    r = run_cli("checkpoints", store=store)
    assert r.returncode == 0, r.stderr
    return next((cp["position"] for cp in ndjson(r.stdout) if cp["name"] == name), None)


def lines(path) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().split()


# A handler that records each position it finished, and fails (exit 7) on
# position 3 while the file `broken` exists.
HANDLER = ('read -r line; '
           'if [ -e broken ] && [ "$EVSTORE_POSITION" = 3 ]; then echo oops >&2; exit 7; fi; '
           'echo "$EVSTORE_POSITION" >> done.txt')


@pytest.mark.parametrize("follow", [[], ["-f", "--idle-timeout", "0.3"]])
def test_a_failing_handler_stops_and_the_next_run_redelivers(cli, store, tmp_path, follow):
    """The pipeline failure test: the handler fails at the 3rd event; the
    exit code is the handler's, the checkpoint stays before the 3rd, and a
    rerun with a fixed handler delivers from the 3rd: nothing skipped,
    nothing repeated after success."""
    (tmp_path / "broken").touch()
    r = cli("tail", "--all", "--checkpoint", "c", *follow, "--exec", HANDLER, cwd=tmp_path)
    assert r.returncode == 7, r
    err = r.stderr.decode()
    assert err.startswith("oops\n")  # the handler's stderr passes through
    assert err.split("\n")[1] == ("evstore: error: handler exited with 7 on the event at "
                                  "position 3; checkpoint 'c' stays at 2: the next run starts "
                                  "at position 3")
    assert r.stdout == b""
    assert lines(tmp_path / "done.txt") == ["1", "2"] and position(store) == 2
    (tmp_path / "broken").unlink()
    r = cli("tail", "--all", "--checkpoint", "c", *follow, "--exec", HANDLER, cwd=tmp_path)
    assert (r.returncode, r.stderr) == (0, b"")
    assert lines(tmp_path / "done.txt") == [str(p) for p in range(1, 7)] and position(store) == 6
    r = cli("tail", "--all", "--checkpoint", "c", *follow, "--exec", HANDLER, cwd=tmp_path)
    assert r.returncode == 0 and len(lines(tmp_path / "done.txt")) == 6  # none repeated


def test_the_handler_gets_each_event_and_its_coordinates(cli, store, tmp_path):
    show = ('printf "%s|%s|%s|%s|%s|%s|%s|%s|%s|" "$EVSTORE_POSITION" "$EVSTORE_STREAM" '
            '"$EVSTORE_VERSION" "$EVSTORE_TYPE" "$EVSTORE_ID" "$EVSTORE_COUNT" '
            '"$EVSTORE_FIRST_POSITION" "$EVSTORE_LAST_POSITION" "$EVSTORE_CHECKPOINT"; cat')
    r = cli("tail", "s1", "--checkpoint", "c", "--exec", show,
            env={"EVSTORE_POSITION": "stale"})
    assert (r.returncode, r.stderr) == (0, b"")
    events = ndjson(cli("read", "s1").stdout)
    want = "".join(f"{e['position']}|s1|{e['version']}|{e['type']}|{e['id']}|1|{e['position']}|"
                   f"{e['position']}|c|" + json.dumps(e, ensure_ascii=False) + "\n"
                   for e in events)
    assert r.stdout.decode() == want  # CMD's stdout is the command's stdout
    assert position(store) == 6  # a stream consumer moves past the others' events too


def test_batches(cli, store, tmp_path):
    show = ('echo "run $EVSTORE_COUNT $EVSTORE_FIRST_POSITION $EVSTORE_LAST_POSITION '
            '${EVSTORE_POSITION-none} $(wc -l)"')
    r = cli("tail", "--all", "--checkpoint", "c", "--batch", "4", "--exec", show)
    assert (r.returncode, r.stderr) == (0, b"")
    assert r.stdout.decode().splitlines() == ["run 4 1 4 none 4", "run 2 5 6 none 2"]
    # a failing batch leaves the checkpoint before all of its events
    with EventStore(store, sync=False) as es:
        es.append("s9", [NewEvent("T", {"i": i}) for i in range(5)])
    r = cli("tail", "--all", "--checkpoint", "c", "--batch", "3", "--exec",
            '[ "$EVSTORE_FIRST_POSITION" -lt 10 ]')
    assert r.returncode == 1 and b"2 events from position 10; checkpoint 'c' stays at 9" in r.stderr
    assert position(store) == 9
    # --max-count bounds a batch too
    r = cli("tail", "--all", "--checkpoint", "c", "--batch", "100", "--max-count", "2",
            "--exec", show)
    assert r.stdout.decode().splitlines() == ["run 2 10 11 none 2"] and position(store) == 11


def test_max_count_and_a_killed_handler(cli, store):
    r = cli("tail", "--all", "--checkpoint", "c", "--max-count", "2", "--exec", "cat")
    assert [e["position"] for e in ndjson(r.stdout)] == [1, 2] and position(store) == 2
    r = cli("tail", "--all", "--checkpoint", "c", "--exec", 'kill -9 $$')
    assert r.returncode == 137
    assert b"handler was killed by SIGKILL on the event at position 3" in r.stderr
    assert position(store) == 2


def test_exec_and_no_commit_usage(cli, store):
    for args, words in ((["--exec", "cat"], "--exec goes with --checkpoint"),
                        (["--checkpoint", "c", "--batch", "2"], "--batch goes with --exec"),
                        (["--no-commit"], "--no-commit goes with --checkpoint"),
                        (["--checkpoint", "c", "--exec", "cat", "--format", "json"], "--format"),
                        (["--checkpoint", "c", "--exec", " "], "empty")):
        assert words in error(cli("tail", "--all", *args), 2), args
    r = cli("tail", "--all", "--checkpoint", "c", "--exec", "cat", "--batch", "0")
    assert r.returncode == 2 and r.stdout == b""
    assert position(store) is None  # nothing made


def test_sigterm_lets_the_running_handler_finish(store, tmp_path):
    handler = ('touch started; sleep 0.5; echo "$EVSTORE_POSITION" >> done.txt; rm started')
    p = subprocess.Popen([sys.executable, "-m", "evstore", "tail", "-f", "--all", "--checkpoint",
                          "c", "--exec", handler], cwd=tmp_path, env=cli_env(store),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert (p.returncode, err, out) == (0, b"", b"")
    assert lines(tmp_path / "done.txt") == ["1"] and position(store) == 1


def test_no_commit_reads_from_the_checkpoint_and_never_moves_it(cli, store):
    r = cli("tail", "--all", "--checkpoint", "c", "--no-commit", "--max-count", "2")
    assert [e["position"] for e in ndjson(r.stdout)] == [1, 2]
    assert position(store) is None  # not even created
    cli("checkpoints", "set", "c", "2")
    for _ in range(2):
        r = cli("tail", "--all", "--checkpoint", "c", "--no-commit")
        assert [e["position"] for e in ndjson(r.stdout)] == [3, 4, 5, 6] and position(store) == 2
    r = cli("tail", "--all", "--checkpoint", "c", "--no-commit", "--exec", "false")
    assert r.returncode == 1 and position(store) == 2
    # a --no-commit follower does not hold the name: the script's own commits go through
    p = subprocess.Popen([sys.executable, "-m", "evstore", "tail", "-f", "--all", "--checkpoint",
                          "c", "--no-commit"], env=cli_env(store),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert json.loads(p.stdout.readline())["position"] == 3
        assert json.loads(cli("checkpoints", "set", "c", "3").stdout)["position"] == 3
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and position(store) == 3


def test_checkpoints_set(cli, store):
    r = cli("checkpoints", "set", "c", "4")
    cp = json.loads(r.stdout)
    assert (r.returncode, cp["position"], cp["head"], cp["behind"]) == (0, 4, 6, 2)
    assert json.loads(cli("checkpoints", "set", "c", "5").stdout)["position"] == 5
    assert json.loads(cli("checkpoints", "set", "c", "5").stdout)["position"] == 5  # no move: fine
    assert error(cli("checkpoints", "set", "c", "7"), 2) == \
        "position 7 is past the store's head (6): no event there has been handled"
    assert error(cli("checkpoints", "set", "c", "3"), 2) == \
        "checkpoint 'c' is at 5: moving it back to 3 delivers events again (force it to: --force)"
    assert error(cli("checkpoints", "set", "c", "7", "--force"), 2).startswith("position 7")
    assert json.loads(cli("checkpoints", "set", "c", "3", "--force").stdout)["position"] == 3
    assert json.loads(cli("checkpoints", "set", "c", "head").stdout)["position"] == 6
    assert "invalid P 'soon'" in error(cli("checkpoints", "set", "c", "soon"), 2)
    assert position(store) == 6
    # refused while a consumer runs under the name
    p = subprocess.Popen([sys.executable, "-m", "evstore", "tail", "-f", "--all", "-n", "0",
                          "--checkpoint", "busy"], env=cli_env(store),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while position(store, "busy") is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert "in use by another consumer" in error(cli("checkpoints", "set", "busy", "6"), 1)
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()


def test_manual_acknowledgement_in_the_library(store):
    with EventStore(store, sync=False) as es:
        with es.subscribe(checkpoint="m", follow=False, ack="manual", types=["T"]) as sub:
            got = sub.take(2)
            assert [e.position for e in got] == [1, 2]
            assert sub.position == 0  # handed out is not handled
            sub.ack(1)
            assert sub.position == 1
            with pytest.raises(UsageError):
                sub.ack(4)
            sub.ack(2)
            nxt = sub.take(10)
            assert [e.position for e in nxt] == [4, 5]  # 3 is a U: filtered out
            assert sub.position == 3  # past the filtered event, not past the unacked ones
        assert position(store, "m") == 3  # close() keeps 4 and 5 unacked
        with es.subscribe(checkpoint="m", follow=False, ack="manual", types=["T"]) as sub:
            evs = sub.take(10)
            assert [e.position for e in evs] == [4, 5]
            sub.ack(5)
            assert sub.take(10) == []
        assert position(store, "m") == 6  # the filtered 6th too
        with pytest.raises(UsageError):
            es.subscribe(follow=False).ack(1)


# -- stop signals from the first moment ------------------------------------------------------

SLOW_TYPER = textwrap.dedent("""
    # Loaded at start-up (sitecustomize): makes importing typer slow, so a
    # signal can be sent while the command line is still loading.
    import importlib.abc, os, sys, time

    class Slow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "typer":
                sys.meta_path.remove(self)
                open(os.environ["LOADING_MARKER"], "w").close()
                time.sleep(1.0)
            return None

    sys.meta_path.insert(0, Slow())
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_the_follower_starts_exits_0(store, tmp_path, sig):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_TYPER)
    marker = tmp_path / "loading"
    env = cli_env(store, LOADING_MARKER=str(marker))
    env["PYTHONPATH"] = str(tmp_path / "site") + os.pathsep + env["PYTHONPATH"]
    p = subprocess.Popen([sys.executable, "-m", "evstore", "tail", "-f", "--all",
                          "--checkpoint", "c"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert time.monotonic() < deadline and p.poll() is None, p.stderr.read()
            time.sleep(0.005)
        p.send_signal(sig)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert (p.returncode, err, out) == (0, b"", b"")
    assert position(store) in (None, 0)  # stopped before handing anything out


def test_help_shows_exec_and_set(cli):
    r = cli("tail", "--help")
    assert r.returncode == 0 and b"--exec" in r.stdout and b"--no-commit" in r.stdout
    r = cli("checkpoints", "set", "--help")
    assert r.returncode == 0 and b"Examples:" in r.stdout and b"--force" in r.stdout
