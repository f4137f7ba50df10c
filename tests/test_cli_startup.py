"""The CLI's start-up shortcuts (evstore/cli/fastparams.py, app._keep_only)
change nothing but the cost: plain coercion gives what typer's own gives, and
a CLI call does not import pydantic.  No timings here (bench/peers.py, (h))."""
from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from evstore.cli.app import build_app
from evstore.cli.fastparams import PlainParam, install

# Not importorskip: a typer without this module would silently turn the
# fast path off (and make these tests skip instead of fail).  pyproject.toml
# pins the typer range these tests were run against.
import typer._coercion as typer_coercion  # noqa: E402


def all_params(command, path=()):
    for p in command.params:
        if getattr(p, "type_descriptor", None) is not None:
            yield path, p
    for name, sub in getattr(command, "commands", {}).items():
        yield from all_params(sub, path + (name,))


SAMPLES = ["0", "1", "7", "-1", "2.5", "1e3", " 3", "007", "x", "", "json", "JSON", "ndjson",
           "table", "text", "a/b", ".", 0, 30.0, 5, True, False, ("a", "b"), ["x"]]


def outcome(runtime, value, param, ctx):
    try:
        return "ok", runtime.coerce(value, param=param, ctx=ctx)
    except Exception as e:  # noqa: BLE001 - the error itself is compared
        return "error", type(e).__name__, getattr(e, "message", str(e))


def test_plain_coercion_agrees_with_typer():
    command = typer.main.get_command(build_app())
    ctx = typer.Context(command)
    checked = 0
    for path, param in all_params(command):
        plain = PlainParam(param.type_descriptor)
        real = typer_coercion.build_runtime_param(param.type_descriptor)
        for value in SAMPLES + [None]:
            want = outcome(real, value, param, ctx)
            got = outcome(plain, value, param, ctx)
            if got[:2] == ("error", "BadParameter") and "is not a choice here; choose" in got[2]:
                # a value outside a choice: the same error, in evstore's words (not pydantic's)
                assert want[:2] == got[:2], (path, param.name, value, want)
                continue
            assert got == want, (path, param.name, value)
            checked += 1
    assert checked > 100


def test_the_fast_path_applies_to_the_installed_typer():
    """fastparams leans on typer's private ``_runtime_param`` slot; a typer
    release that drops or renames it would leave every CLI call paying for
    pydantic without an error anywhere.  This fails then."""
    command = typer.main.get_command(build_app(["--store", "x", "append", "s"]))
    params = [p for _, p in all_params(command)]
    assert params and all(hasattr(p, "_runtime_param") for p in params)
    install(command)
    assert all(isinstance(p._runtime_param, PlainParam) for p in params)


def test_install_covers_every_parameter():
    command = typer.main.get_command(build_app())
    install(command)
    for _, param in all_params(command):
        assert isinstance(param._runtime_param, PlainParam)


def test_only_the_called_command_is_built():
    app = build_app(["--store", "x", "append", "s"])
    assert [c.name for c in app.registered_commands] == ["append"]
    assert not app.registered_groups
    app = build_app(["checkpoints", "list"])
    assert not app.registered_commands and [g.name for g in app.registered_groups] == ["checkpoints"]
    for argv in ([], ["--help"], ["--version"], ["nope"], ["-h", "append"]):
        assert len(build_app(argv).registered_commands) > 5, argv


def test_a_cli_append_does_not_import_pydantic(tmp_path):
    code = ("import sys\n"
            "from evstore.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "sys.stderr.write(str(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic')))\n")
    r = subprocess.run([sys.executable, "-c", code, "--store", str(tmp_path / "s"), "append", "acct-1",
                        "--type", "Deposited", "--data", '{"amount": 1}', "--lock-timeout", "5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('{"stream": "acct-1", "version": 1')
    assert r.stderr.endswith("[]"), r.stderr


OPENS = ("import sys\n"
         "import evstore.core.store as s\n"
         "opens = []\n"
         "init = s.EventStore.__init__\n"
         "def counted(self, *a, **k):\n    opens.append(1)\n    init(self, *a, **k)\n"
         "s.EventStore.__init__ = counted\n"
         "from evstore.cli import main\n"
         "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
         "sys.stderr.write(f'opens={len(opens)}')\n")


@pytest.mark.parametrize("argv", [
    ["append", "acct-1", "--type", "Deposited", "--data", '{"amount": 1}'],
    ["replay", "acct-1"],
    ["snapshot", "acct-1"],
])
def test_a_command_opens_the_store_once(tmp_path, argv):
    """The store's settings (automatic snapshots, the default reducer) are
    read from the store the command opens, not by opening it a second time
    (which costs a PostgreSQL connection on that backend)."""
    store = str(tmp_path / "s")
    for setup in (["append", "acct-1", "--type", "Opened"],
                  ["config", "snapshot-every", "1000"], ["config", "reducer", "merge"]):
        subprocess.run([sys.executable, "-m", "evstore", "--store", store, *setup],
                       capture_output=True, check=True, timeout=60)
    r = subprocess.run([sys.executable, "-c", OPENS, "--store", store, *argv],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.endswith("opens=1"), r.stderr
