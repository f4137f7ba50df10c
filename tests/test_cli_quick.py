"""The short commands' fast path (evstore/cli/quick.py) changes nothing but
the cost: for every command line it takes, it produces the parameters
typer's own parsing produces, and everything else it leaves to typer.
No timings here (bench/README.md, "CLI start-up")."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import typer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import cli_env, run_cli
from evstore.cli import base, cmd_read, cmd_write, quick
from evstore.cli.app import build_app
from evstore.cli.fastparams import install


@contextlib.contextmanager
def environment(**values):
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def typer_parse(argv: list[str]):
    """What typer's own parsing hands the command's body: (root store,
    OPTIONS, parameters), or ("error", name) when typer refuses the line."""
    calls = []

    def record(ctx, **params):
        calls.append((ctx.find_root().obj["store"], dict(base.OPTIONS), params))

    saved = (cmd_write.append_body, cmd_read.read_body, dict(base.OPTIONS))
    cmd_write.append_body = cmd_read.read_body = record
    base.OPTIONS.update(quiet=False, no_color=False)
    try:
        command = typer.main.get_command(build_app(argv))
        install(command)
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            command(args=argv, prog_name="evstore", standalone_mode=False)
    except Exception as e:  # noqa: BLE001 - which error does not matter here
        return ("error", type(e).__name__)
    finally:
        cmd_write.append_body, cmd_read.read_body = saved[:2]
        base.OPTIONS.clear()
        base.OPTIONS.update(saved[2])
    return calls[0] if calls else ("no call",)


def quick_parse(argv: list[str]):
    plan = quick.parse(argv, os.environ)
    return None if plan is None else (plan.root_store, plan.options, plan.params)


# -- the argv generator -------------------------------------------------------------

TEXT = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", "-", "--", "-x", "--type", "--data", "-e", "-q", "-n", "--help", "-h",
                     "@file", '{"a": 1}', "[1]", "é", "名前", "a=b", "=", " ", "\t"]),
)
NUMBERS = st.sampled_from(["0", "1", "7", "-1", "-0", "2.5", "1e3", " 3", "007", "+3", "1_000",
                           "inf", "nan", "0.0", "30", "99999999999999999999", "x", ""])
PLAIN_NUMBERS = st.sampled_from(["0", "1", "2", "7", "30", "0.5", "-0", "12.25"])
FORMATS = st.sampled_from(["ndjson", "json", "table", "JSON", "Json", "yaml", ""])

APPEND_VALUED = ["--expected-version", "-e", "--type", "--data", "--metadata", "--id", "--store"]
APPEND_NUMBERS = ["--batch-size", "--lock-timeout"]
APPEND_FLAGS = ["--dry-run", "--no-sync", "-q", "--quiet", "--no-color"]
READ_VALUED = ["--type", "--stream-prefix", "--prefix", "--since", "--until", "--id", "--store"]
READ_NUMBERS = ["--from", "--to", "--limit", "-n"]
READ_FLAGS = ["--all", "--backwards", "--wide", "-q", "--quiet", "--no-color"]
ODD = ["--", "-", "--help", "-h", "--version", "--typ", "--Type", "-x", "-qe", "-e5", "-n3",
       "--dry-run=1", "--all=", "-e=5", "--no-such", "---type"]


@st.composite
def option(draw, valued, numbers, flags, clean, formats=False):
    kinds = ["valued"] * 4 + ["number"] * 2 + ["flag"] * 2 + (["format"] if formats else [])
    kind = draw(st.sampled_from(kinds if clean else kinds + ["odd", "positional"]))
    if kind == "flag":
        return [draw(st.sampled_from(flags))]
    if kind == "odd":
        return [draw(st.sampled_from(ODD))]
    if kind == "positional":
        return [draw(TEXT)]
    name = draw(st.sampled_from({"valued": valued, "number": numbers, "format": ["--format"]}[kind]))
    value = draw({"valued": TEXT, "format": FORMATS,
                  "number": PLAIN_NUMBERS if clean else NUMBERS}[kind])
    if draw(st.booleans()):
        return [f"{name}={value}"]
    return [name, value]


@st.composite
def command_line(draw):
    """A command line for the fast path's commands: half of them "clean"
    (only their options, plausible values: mostly taken), the rest with
    anything (odd tokens, extra arguments, bad numbers, other commands)."""
    clean = draw(st.booleans())
    roots = [st.tuples(st.just("--store"), TEXT).map(list), TEXT.map(lambda v: [f"--store={v}"]),
             st.sampled_from([["-q"], ["--quiet"], ["--no-color"]])]
    if not clean:
        roots.append(st.sampled_from([["--version"], ["-x"], ["--"], ["-"]]))
    root = draw(st.lists(st.one_of(*roots), max_size=3))
    names = ["append", "read"] if clean else ["append", "read", "streams", "apend", "--help", "-h"]
    name = draw(st.sampled_from(names))
    if name == "read":
        opts = option(READ_VALUED, READ_NUMBERS, READ_FLAGS, clean, formats=True)
        first = [draw(st.sampled_from(["s", "acct-1", "é"]))] if draw(st.booleans()) else []
    else:
        opts = option(APPEND_VALUED, APPEND_NUMBERS, APPEND_FLAGS, clean)
        first = [draw(st.sampled_from(["s", "acct-1", "名前", ""]))] if draw(st.integers(0, 4)) else []
    rest = draw(st.lists(opts, max_size=6))
    at = draw(st.integers(0, len(rest)))  # the stream anywhere among the options
    args = [a for part in rest[:at] for a in part] + first + [a for part in rest[at:] for a in part]
    return [a for part in root for a in part] + [name] + args


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=command_line(), env_dir=st.sampled_from([None, "", "/tmp/from-env"]))
def test_the_fast_path_declines_or_agrees_with_typer(argv, env_dir):
    with environment(EVSTORE_DIR=env_dir, EVSTORE_NO_QUICK=None):
        got = quick_parse(argv)
        event("taken" if got is not None else "declined")
        if got is not None:
            assert got == typer_parse(argv), argv


@pytest.mark.parametrize("argv", [
    ["append", "s", "--type", "T", "--data", '{"a": 1}'],
    ["--store", "x", "-q", "append", "s", "--type=T", "--data={}", "--metadata", "{}", "--id", "u"],
    ["append", "--type", "T", "s", "-e", "no-stream", "--no-sync", "--lock-timeout", "0.5"],
    ["append", "s", "--type", "-x", "--data", "-", "--no-color"],
    ["append", "s", "--batch-size", "10", "--dry-run"],
    ["append", "s", "--type", "T", "--type", "U"],  # repeated: the last wins
    ["read", "s"],
    ["--no-color", "read", "s", "--from", "2", "--to", "9", "-n", "3", "--backwards", "--format", "json"],
    ["read", "--all", "--type", "A", "--type", "B", "--prefix", "acct-", "--since", "7d"],
    ["read", "--id", "0b6c1e9e-5d8a-4f57-9a64-2c1d7f0e4b11", "--wide", "--format=table"],
    ["read"],
])
def test_common_lines_are_taken_and_agree(argv):
    with environment(EVSTORE_DIR=None, EVSTORE_NO_QUICK=None):
        got = quick_parse(argv)
        assert got is not None, argv
        assert got == typer_parse(argv)


@pytest.mark.parametrize("argv", [
    ["--help"], ["append", "--help"], ["append", "s", "-h"], ["read", "s", "--type", "--help"],
    ["--version"], ["append"], ["append", "s", "t"], ["append", "s", "--type"],
    ["append", "--", "s"], ["append", "-s"], ["append", "s", "-e5"], ["append", "s", "-e=5"],
    ["append", "s", "--dry-run=yes"], ["append", "s", "--typ", "T"], ["append", "s", "--batch-size", "0"],
    ["append", "s", "--batch-size", "1e3"], ["append", "s", "--lock-timeout", "-1"],
    ["read", "s", "--format", "JSON"], ["read", "s", "-qn", "3"], ["read", "a", "b"],
    ["streams"], ["tail", "s"], ["-x", "read", "s"], ["--store"], [],
])
def test_what_the_fast_path_leaves_to_typer(argv):
    assert quick.parse(argv, {}) is None


def test_completion_and_the_switch_go_to_typer():
    argv = ["append", "s", "--type", "T"]
    assert quick.parse(argv, {}) is not None
    assert quick.parse(argv, {"EVSTORE_NO_QUICK": "1"}) is None
    assert quick.parse(argv, {"_EVSTORE_COMPLETE": "complete_bash"}) is None
    assert quick.parse(argv, {"_TYPER_COMPLETE_ARGS": "evstore app"}) is None


def test_the_options_known_are_typers():
    """Every option quick.py takes is one of the command's typer options
    (a renamed option would otherwise be taken here and refused there)."""
    for name, command in quick.COMMANDS.items():
        click_command = typer.main.get_command(build_app([name])).commands[name]
        names = {opt for p in click_command.params for opt in p.opts + p.secondary_opts}
        assert set(command.options) <= names, name


# -- whole processes: the same bytes, with and without the fast path ------------------

#: What a short command must not import (bench/README.md, "CLI start-up"):
#: typer and its kin (the fast path exists to avoid them), and the standard
#: library modules evstore's lower layers import only where they are used
#: (evstore/plain.py and the comments at those imports say what each cost).
HEAVY = ("typer", "click", "rich", "pydantic",
         "dataclasses", "inspect", "typing", "uuid", "platform", "pathlib", "fnmatch", "urllib",
         "hashlib", "shutil", "bz2", "lzma", "concurrent", "logging", "traceback")

#: Runs the CLI and lists the HEAVY modules it imported: those already there
#: before evstore was imported (site, an editable install's finder) are not
#: evstore's doing.
MODULES = ("import sys\nbefore = set(sys.modules)\nfrom evstore.cli import main\n"
           "try:\n    main()\nfinally:\n"
           "    sys.stderr.write('\\nMODULES ' + ' '.join(sorted(m for m in set(sys.modules) - before"
           f" if m.split('.')[0] in {HEAVY!r})))\n")


def loaded(store, *argv, input=b"") -> tuple[int, list[str]]:
    r = subprocess.run([sys.executable, "-c", MODULES, *argv], input=input, capture_output=True,
                       env=cli_env(store), timeout=60)
    return r.returncode, r.stderr.decode().rsplit("MODULES ", 1)[1].split()


def test_the_short_commands_import_nothing_heavy(tmp_path):
    """Neither typer, click and rich nor the standard library modules that
    cost the lower layers most of their start-up (dataclasses, typing, uuid,
    pathlib, hashlib, shutil, concurrent.futures): creating a store, an
    append, a read of a short stream, an append from stdin."""
    store = tmp_path / "s"
    assert loaded(store, "append", "acct-1", "--type", "T", "--data", '{"a": 1}') == (0, [])
    assert loaded(store, "append", "acct-1", "--type", "T", "--data", '{"a": 2}', "-e", "1") == (0, [])
    assert loaded(store, "read", "acct-1") == (0, [])
    assert loaded(store, "append", "acct-1", input=b'{"type": "T"}\n') == (0, [])
    # and the switch, and anything else, still go through typer
    rc, mods = loaded(store, "read", "acct-1", "--format", "JSON")
    assert rc == 0 and "typer" in mods
    rc, mods = loaded(store, "read", "acct-1", "-h")
    assert rc == 0 and "typer" in mods


def masked(out: bytes) -> str:
    text = out.decode("utf-8", "replace")
    text = re.sub(r'"recorded_at": "[^"]*"', '"recorded_at": "T"', text)
    return re.sub(r'"id": "[0-9a-f-]{36}"', '"id": "ID"', text)


CASES = [
    ["append", "s", "--type", "T", "--data", '{"a": 1}'],
    ["append", "s", "--type", "T", "--data", '{"a": 1}', "--metadata", '{"m": "é"}', "-e", "3"],
    ["append", "s", "--type", "T", "-e", "0"],
    ["append", "s", "--type", "T", "-e", "x"],
    ["append", "s", "--type", "T", "--data", '{"a": NaN}'],
    ["append", "s", "--type", "T", "--data", '{"a": 1, "a": 2}'],
    ["append", "s", "--type", "T", "--data", "[1]"],
    ["append", "s", "--type", "", "--data", "{}"],
    ["append", "", "--type", "T"],
    ["append", "s", "--data", "{}"],
    ["append", "s", "--type", "T", "--id", "not-a-uuid"],
    ["append", "s", "--type", "T", "--id", "00000000-0000-4000-8000-000000000001"],
    ["append", "s", "--type", "T", "--data", "@/nonexistent/file"],
    ["append", "s", "--type", "T", "--data", "-", "--metadata", "-"],
    ["append", "s", "--type", "T", "--dry-run"],
    ["append", "s", "--type", "T", "--batch-size", "2"],
    ["append", "s"],
    ["append", "s", "--batch-size", "2"],
    ["append", "new", "--dry-run", "-q", "--no-color"],
    ["--store", "{elsewhere}", "append", "s", "--type", "T"],
    ["append", "s", "--type", "T", "--store", "{afile}"],
    ["read", "s"],
    ["read", "s", "--from", "2", "--to", "2"],
    ["read", "s", "-n", "1", "--backwards", "--format", "json"],
    ["read", "s", "--type", "T", "--type", "U", "--format", "ndjson"],
    ["read", "--all", "--prefix", "s"],
    ["read", "s", "--prefix", "s"],
    ["read", "nope"],
    ["read"],
    ["read", "s", "--all"],
    ["read", "s", "--since", "bad"],
    ["read", "--id", "00000000-0000-4000-8000-000000000009"],
    ["read", "s", "--format", "table", "--wide"],
    ["append", "s", "--type", "T", "-e"],
    ["append", "s", "--typ", "T"],
    ["read", "s", "--from", "-1"],
]
STDIN = b'{"type": "A", "data": {"n": 1}}\n{"type": "B", "metadata": {"k": [1, 2]}}\n{"type": "C"}\n'


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("quick")
    store = root / "store"
    r = run_cli("append", "s", input=STDIN, store=store)
    assert r.returncode == 0, r.stderr
    (root / "afile").write_text("x")
    return root


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(c)[:60] for c in CASES])
def test_whole_process_same_outcome_with_and_without_the_fast_path(seeded, tmp_path, argv):
    outcomes = []
    for switch in ("0", "1"):
        root = tmp_path / switch
        shutil.copytree(seeded, root)
        store = root / "store"
        args = [a.replace("{elsewhere}", str(root / "other")).replace("{afile}", str(root / "afile"))
                for a in argv]
        env = {"EVSTORE_NO_QUICK": switch}
        stdin = b'{"type": "X", "data": {"k": "v"}}\n{"type": "Y"}\n' if args == ["append", "s"] or \
            "--batch-size" in args and "--type" not in args or "-" in args else b""
        r = run_cli(*args, store=store, input=stdin, env=env)
        after = run_cli("read", "--all", store=store, env={"EVSTORE_NO_QUICK": "1"})
        other = run_cli("read", "--all", store=root / "other", env={"EVSTORE_NO_QUICK": "1"})
        outcomes.append((r.returncode, masked(r.stdout), r.stderr.decode().replace(str(root), "ROOT"),
                         after.returncode, masked(after.stdout), other.returncode, masked(other.stdout)))
    assert outcomes[0] == outcomes[1]
    assert "Traceback" not in outcomes[0][2]


def test_whole_process_really_takes_the_fast_path(tmp_path):
    """The comparison above is between two paths: the default one is quick.py."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "evstore", "--store", str(tmp_path / "s"),
                        "append", "s", "--type", "T"], capture_output=True, env=cli_env(), timeout=60)
    assert r.returncode == 0 and b"evstore.cli.quick" in r.stderr and b"typer" not in r.stderr
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "evstore", "--store", str(tmp_path / "s"),
                        "append", "s", "--type", "T"], capture_output=True, timeout=60,
                       env=cli_env(EVSTORE_NO_QUICK="1"))
    assert r.returncode == 0 and b"typer" in r.stderr
    assert json.loads(r.stdout)["version"] == 2


# -- append from stdin checks each event once ------------------------------------------

COUNTING = ("import sys\nimport evstore.model as m\nfrom evstore.cli import main\n"
            "calls = [0]\nnormalize = m.normalize\n"
            "def counted(*a, **k):\n    calls[0] += 1\n    return normalize(*a, **k)\n"
            "m.normalize = counted\n"
            "try:\n    main()\nfinally:\n    sys.stderr.write(f'\\nNORMALIZE {calls[0]}')\n")


def test_append_from_stdin_checks_each_event_once(tmp_path):
    """One batch from stdin: each event is checked (model.normalize) once,
    by the check that packs it and names the input line (it was checked
    twice, with a throwaway id made the first time).  (--dry-run and
    --batch-size still check in the CLI, then again in the store.)"""
    lines = b"".join(b'{"type": "T", "data": {"n": %d}}\n' % i for i in range(50))
    r = subprocess.run([sys.executable, "-c", COUNTING, "append", "s"], input=lines,
                       capture_output=True, env=cli_env(tmp_path / "s"), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.decode().rsplit("NORMALIZE ", 1)[1] == "50"
