"""Issue 7, "make it a pleasure to use": tables that show user data as it is
and fit the terminal, no colour off a terminal, --quiet and --no-color,
version conflicts that say what to do next, a short command list, one rule
for JSON objects, and stream-name completion.  Real processes throughout;
terminal behaviour under a pseudo-terminal of a given size."""
from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios

import pytest
from rich.cells import cell_len

from cli_helpers import error, ok, read_pty, run
from conftest import cli_env
from evstore import EventStore, NewEvent

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|9[0-7])(?:;[0-9;]*)?m")
LONG = "lorem ipsum " * 40 + "THE-END"
LONG_STREAM = "order-" + "x" * 150 + "-tail"


def run_tty(args, store, cols=80, env=None, timeout=60):
    """The CLI with stdout on a pseudo-terminal ``cols`` wide (stderr piped);
    returns (exit code, the terminal's text with \\r\\n as \\n, stderr)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    e = cli_env(store, COLUMNS=str(cols), LINES="50")
    e.update(env or {})
    p = subprocess.Popen([sys.executable, "-m", "evstore", *args], stdin=subprocess.DEVNULL,
                         stdout=slave, stderr=subprocess.PIPE, env=e)
    os.close(slave)
    seen = read_pty(master, p, timeout)
    rc = p.wait(timeout)
    err = p.stderr.read()
    os.close(master)
    return rc, seen.decode("utf-8", "replace").replace("\r\n", "\n"), err


def widths(screen: str) -> list[int]:
    return [cell_len(ANSI.sub("", line)) for line in screen.split("\n")]


@pytest.fixture
def tricky(store_dir):
    """Streams, types and data that look like rich markup, hold control
    characters, are long, or are wide (CJK)."""
    with EventStore(store_dir, sync=False) as es:
        es.append("s", [NewEvent("[bold]x[/bold]", {"a": "[red]r"})])
        es.append("x[red]y", [NewEvent("esc\x1b[31mq", "\u0085")])
        es.append(LONG_STREAM, [NewEvent("VeryLong" + "Z" * 80, {"text": LONG, "n": 1})])
        es.append("ключ-日本語", [NewEvent("日本語タイプ", {"k": "日本語" * 30})])
    ok(run(store_dir, "checkpoints", "reset", "[i]cp[/i]" + "c" * 120, "--to", "2"))
    return store_dir


# --- 1. user data is never markup ---------------------------------------------------------------

def test_table_cells_are_text_not_markup(tricky):
    def table(*args):
        return ok(run(tricky, *args, "--format", "table", env={"COLUMNS": "400"})).decode()

    out = table("read", "--all")
    assert "[bold]x[/bold]" in out and '{"a":"[red]r"}' in out and "x[red]y" in out
    assert "esc\\x1b[31mq" in out and "\\x85" in out  # control characters shown, not sent
    assert "\x1b" not in out and "\x85" not in out
    out = table("streams")
    assert "x[red]y" in out
    out = table("checkpoints")
    assert "[i]cp[/i]" in out
    out = table("tail", "--all", "-n", "4")
    assert "[bold]x[/bold]" in out and "\x1b" not in out


def test_markup_in_a_follower_line_and_a_replayed_state(tricky):
    rc, screen, _ = run_tty(["tail", "s", "-f", "-n", "1", "--idle-timeout", "0.2"], tricky)
    assert rc == 0 and "[bold]x[/bold]" in ANSI.sub("", screen) and '"[red]r"' in screen
    ok(run(tricky, "append", "st", "--type", "T", "--data", '{"[b]k[/b]": "[red]v"}'))
    out = ok(run(tricky, "replay", "st", "--format", "table")).decode()
    assert "[b]k[/b]" in out and "[red]v" in out


# --- 2. colour only on a terminal ---------------------------------------------------------------

def test_no_colour_off_a_terminal_even_when_forced(tricky):
    env = {"NO_COLOR": "", "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"}
    for args in (["read", "--all", "--format", "table"], ["streams", "--format", "table"],
                 ["info", "--format", "table"], ["checkpoints", "--format", "table"],
                 ["tail", "--all", "--format", "table", "-n", "2"]):
        r = run(tricky, *args, env=env)
        assert r.returncode == 0 and b"\x1b" not in r.stdout, args


def test_colour_on_a_terminal_unless_told_not_to(tricky):
    env = {"NO_COLOR": ""}
    rc, screen, _ = run_tty(["read", "s"], tricky, env=env)
    assert rc == 0 and COLOUR.search(screen)
    for args, extra in ((["--no-color", "read", "s"], {}), (["read", "s", "--no-color"], {}),
                        (["read", "s"], {"NO_COLOR": "1"}),
                        (["read", "s"], {"EVSTORE_NO_COLOR": "1"})):
        rc, screen, _ = run_tty(args, tricky, env={**env, **extra})
        assert rc == 0 and "[bold]x[/bold]" in screen and not COLOUR.search(screen), (args, extra)


# --- 3. --quiet ---------------------------------------------------------------------------------

def test_quiet_silences_notes_but_not_errors(tricky):
    r = run(tricky, "replay", "s", "--steps")
    assert r.returncode == 0 and b"evstore: replay s:" in r.stderr
    r = run(tricky, "-q", "replay", "s", "--steps")
    assert ok(r) and json.loads(r.stdout)["version"] == 1
    r = run(tricky, "--quiet", "replay", "s", "--verify-snapshots")
    assert ok(r) == b""
    ok(run(tricky, "checkpoints", "reset", "cp2"))
    r = run(tricky, "checkpoints", "delete", "cp2")
    assert r.returncode == 0 and b"deleted checkpoint" in r.stderr
    ok(run(tricky, "checkpoints", "reset", "cp2"))
    ok(run(tricky, "-q", "checkpoints", "delete", "cp2"))
    ok(run(tricky, "checkpoints", "reset", "cp2"))
    ok(run(tricky, "checkpoints", "delete", "cp2", "-q"))  # after the name works too
    r = run(tricky, "replay", "s", "--steps", "--quiet")
    assert ok(r) and json.loads(r.stdout)["version"] == 1
    # a note from tail: a checkpoint that ignores -n
    ok(run(tricky, "tail", "--all", "--checkpoint", "c3"))
    r = run(tricky, "tail", "--all", "--checkpoint", "c3", "-n", "1")
    assert r.returncode == 0 and b"evstore: note:" in r.stderr
    ok(run(tricky, "-q", "tail", "--all", "--checkpoint", "c3", "-n", "1"))
    # errors are always shown
    error(run(tricky, "-q", "read", "nope"), 4, "stream not found: 'nope'")
    error(run(tricky, "-q", "--no-color", "append", "s", "-e", "0", "--type", "X"), 3,
          startswith="wrong expected version: expected 0, current is 1")


def test_quiet_hides_progress_bars(store_dir):
    with EventStore(store_dir, sync=False) as s:
        for _ in range(21):
            s.append("big", [NewEvent("D", {"amount": 1})] * 1000)
    master, slave = os.openpty()
    try:
        for quiet, want in (([], True), (["-q"], False)):
            p = subprocess.run([sys.executable, "-m", "evstore", *quiet, "replay", "big", "-r", "count"],
                               stdout=subprocess.PIPE, stderr=slave, env=cli_env(store_dir), timeout=60)
            assert p.returncode == 0 and json.loads(p.stdout)["state"] == {"D": 21000}
            seen = b""
            while select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 65536)
            assert (b"replay big" in seen) == want, seen[-300:]
    finally:
        os.close(slave)
        os.close(master)


def test_global_flags_keep_startup_cheap(tmp_path):
    from evstore.cli.app import build_app

    app = build_app(["-q", "--no-color", "--store", "x", "--quiet", "append", "s"])
    assert [c.name for c in app.registered_commands] == ["append"]
    code = ("import sys\n"
            "from evstore.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "sys.stderr.write(str(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('pydantic', 'rich'))))\n")
    r = subprocess.run([sys.executable, "-c", code, "-q", "--no-color", "--store", str(tmp_path / "s"),
                        "append", "a", "--type", "T"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "[]", r.stderr


# --- 4. a version conflict says what to do next --------------------------------------------------

def test_conflict_message_keeps_the_spec_prefix_and_suggests_a_retry(store_dir):
    ok(run(store_dir, "append", "acct-1", "--type", "A"))
    ok(run(store_dir, "append", "acct-1", "--type", "B"))
    msg = error(run(store_dir, "append", "acct-1", "-e", "1", "--type", "C"), 3)
    assert re.match(r"wrong expected version: expected 1, current is 2\b", msg)
    assert msg.endswith("re-read the stream, then retry with --expected-version 2")
    msg = error(run(store_dir, "append", "new", "-e", "exists", "--type", "C"), 3)
    assert msg.startswith("wrong expected version: expected exists, current is 0;")
    assert "no-stream" in msg


# --- 5. tables fit the terminal -----------------------------------------------------------------

TABLES = [["read", "--all"], ["read", LONG_STREAM], ["streams"], ["checkpoints"],
          ["checkpoints", "list"], ["info", "--format", "table"], ["tail", "--all", "-n", "5"]]


@pytest.mark.parametrize("cols", [80, 200])
def test_tables_fit_the_terminal(tricky, cols):
    for args in TABLES:
        rc, screen, err = run_tty(args, tricky, cols=cols)
        assert rc == 0, (args, err)
        assert max(widths(screen)) <= cols, (args, [w for w in widths(screen) if w > cols])
        if (args[0] not in ("checkpoints", "streams")) or cols == 80:
            assert "…" in screen, args  # something was too long, and was cut
        assert "THE-END" not in screen
    rc, screen, _ = run_tty(["streams"], tricky, cols=cols)
    # the id gets its width first: the times give way (to the time of day, or
    # out of the table) before it does
    if cols == 200:
        assert len(re.findall(r"(?<![-:.\d])\d\d:\d\d:\d\d(?![.\d])", screen)) == 2 * 4
        assert LONG_STREAM in screen
    else:
        assert "recorded" not in screen and LONG_STREAM[:60] in screen


@pytest.mark.parametrize("cols", [80, 200])
def test_wide_shows_everything_within_the_width(tricky, cols):
    for args in (["read", LONG_STREAM], ["tail", LONG_STREAM, "-n", "1"], ["info", "--format", "table"],
                 ["streams"], ["checkpoints"]):
        rc, screen, err = run_tty([*args, "--wide"], tricky, cols=cols)
        assert rc == 0, (args, err)
        assert max(widths(screen)) <= cols, args
        # nothing cut: every character is there, folded over several lines
        assert "…" not in screen, args
        text = ANSI.sub("", screen)
        if args[0] in ("read", "tail"):
            assert text.count("ipsum") == 40 and "THE-END" in text, args
        if args[0] in ("read", "tail", "streams"):  # (folded: "-tail" may be split)
            assert text.count("x") >= 150 and "order-" in text, args
        if args[0] == "checkpoints":
            assert text.count("c") >= 120 and "[i]cp[/i]" in text
    rc, screen, _ = run_tty(["tail", LONG_STREAM, "-n", "1", "-f", "--idle-timeout", "0.1"],
                            tricky, cols=cols)
    assert rc == 0 and max(widths(screen)) <= cols and "THE-END" not in screen
    rc, screen, _ = run_tty(["tail", LONG_STREAM, "-n", "1", "-f", "--idle-timeout", "0.1", "--wide"],
                            tricky, cols=cols)
    assert rc == 0 and max(widths(screen)) <= cols
    assert "THE-END" in re.sub(r"\s+", "", ANSI.sub("", screen))


# --- 6. the command list ------------------------------------------------------------------------

def _commands(command, path=()):
    for name, sub in getattr(command, "commands", {}).items():
        yield path + (name,), sub
        yield from _commands(sub, path + (name,))


def test_command_list_is_not_cut(store_dir):
    import typer

    from evstore.cli.app import build_app

    root = typer.main.get_command(build_app())
    names = list(_commands(root))
    assert len(names) > 12
    for path, cmd in names:
        first = cmd.get_short_help_str(limit=1000)
        assert first.endswith(".") and len(first) < 55, (path, first)
        assert cmd.get_short_help_str(limit=55) == first, path
    out = ok(run(store_dir, "--help", env={"COLUMNS": "80"})).decode()
    listing = out.split("Commands:")[1]
    assert "..." not in listing and "…" not in listing
    for path, _ in names:
        r = run(store_dir, *path, "--help")
        assert r.returncode == 0 and b"Example" in r.stdout, path


# --- 7. one rule for JSON objects -----------------------------------------------------------------

def test_single_objects_are_one_line_off_a_terminal_and_indented_on_one(tricky):
    for args in (["info"], ["info", "--format", "json"], ["replay", "s", "--format", "json"],
                 ["replay", "s"], ["snapshot", "s"], ["config"]):
        out = ok(run(tricky, *args))
        assert out.count(b"\n") == 1 and json.loads(out), args
    for args in (["info", "--format", "json"], ["replay", "s"], ["snapshot", "s", "--show"], ["config"]):
        rc, screen, _ = run_tty(args, tricky)
        assert rc == 0 and screen.startswith("{\n  \""), (args, screen[:100])
        assert json.loads(screen)
    for args in (["info", "--format", "ndjson"], ["replay", "s", "--format", "ndjson"]):
        rc, screen, _ = run_tty(args, tricky)
        assert rc == 0 and screen.count("\n") == 1 and json.loads(screen), args


# --- 8. completion ------------------------------------------------------------------------------

def complete(store, words: str, env=None):
    e = {"_EVSTORE_COMPLETE": "complete_bash", "COMP_WORDS": words,
         "COMP_CWORD": str(len(words.split(" ")) - 1)}
    e.update(env or {})
    r = run(store, env=e)
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    return [w for w in r.stdout.decode().split("\n") if w]


def test_stream_names_complete(tricky, tmp_path):
    assert complete(tricky, "evstore read ") == sorted(
        ["s", "x[red]y", LONG_STREAM, "ключ-日本語"])
    assert complete(tricky, "evstore tail x") == ["x[red]y"]
    assert complete(tricky, "evstore replay ord") == [LONG_STREAM]
    assert complete(tmp_path / "other", f"evstore --store {tricky} append s") == ["s"]
    cp = "[i]cp[/i]" + "c" * 120
    assert complete(tricky, "evstore checkpoints delete ") == [cp]
    assert complete(tricky, "evstore tail --all --checkpoint [i") == [cp]
    assert complete(tmp_path / "other", f"evstore checkpoints --store {tricky} reset ") == [cp]
    # no store, or no access: nothing, quietly, and nothing is created
    missing = tmp_path / "missing"
    assert complete(missing, "evstore read ") == []
    assert not missing.exists()


# --- docs/CLI-JSON.md says what is printed ---------------------------------------------------------

def documented_fields() -> dict:
    """Section title -> the field names of its first table, in order."""
    from conftest import ROOT

    text = (ROOT / "docs" / "CLI-JSON.md").read_text(encoding="utf-8")
    out = {}
    for part in re.split(r"^#{2,3} ", text, flags=re.M)[1:]:
        title, _, body = part.partition("\n")
        rows = [line for line in body.split("\n") if line.startswith("| `")]
        out[title.strip()] = [name for row in rows
                              for name in re.findall(r"`(\w+)`", row.split("|")[1])]
    return out


def test_cli_json_doc_matches_the_output(tricky, tmp_path):
    docs = documented_fields()

    def keys(*args, input=None):
        out = ok(run(tricky, *args, input=input))
        return list(json.loads(out.split(b"\n")[0]))

    checks = {
        "Recorded events: `read`, `tail`, `export`": keys("read", "s"),
        "`append`": keys("append", "z", "--type", "T"),
        "`streams`": keys("streams"),
        "`info`": keys("info", "--streams"),
        "`checkpoints`, `checkpoints list`, `checkpoints reset`": keys("checkpoints"),
        "`snapshot`": keys("snapshot", "s"),
        "`replay`": keys("replay", "s"),
        "`replay --steps`": keys("-q", "replay", "s", "--steps", "--no-snapshot"),
        "`config`": keys("config"),
        "`verify --format json`": keys("verify", "--format", "json"),
        "`repair --format json`": keys("repair", "--format", "json", "--dry-run"),
    }
    assert keys("tail", "s", "-n", "1") == keys("export", "s") == checks[
        "Recorded events: `read`, `tail`, `export`"]
    export = ok(run(tricky, "export"))
    r = run(tmp_path / "copy", "import", input=export)
    checks["`import`"] = list(json.loads(ok(r)))
    for title, got in checks.items():
        assert docs[title] == got, title
