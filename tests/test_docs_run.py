"""Run the commands shown in the docs, so the docs cannot rot.

Which blocks run (the convention, also stated at the top of docs/RECIPES.md):

- a ```sh block is a complete shell session: run as one bash script with
  `set -euo pipefail`;
- a ```console block shows a session with its output: its `$ ` lines (and
  their `\\` continuation lines) are run, in order, as one script; the output
  lines are not compared (times, ids and paths differ from run to run);
- a ```python block is run with this interpreter;
- anything else (```text, ```json, a bare ```) is shown, never run.

docs/POSTGRES.md's blocks run the same way, but with EVSTORE_DIR naming a
fresh schema on the tests' throwaway PostgreSQL server (the ``pg_url``
fixture; skipped when there is no server, like the other PostgreSQL tests).

README.md's first code block is skipped: it holds CI's set-up commands
(.ci/run runs it, and it installs the package).

Each block runs in a fresh temporary directory with EVSTORE_DIR pointing at a
store inside it (not yet created), `sample_data` linked into it, $SAMPLE set to
the repository's sample_data/, and `evstore` and `python` on PATH (this
interpreter's). A block that calls jq is skipped only when jq is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import conftest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/GUIDE.md", "docs/RECIPES.md", "docs/POSTGRES.md"]
ON_POSTGRES = {"docs/POSTGRES.md"}
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def console_commands(body: str) -> str:
    """The `$ ` lines of a console block, with their continuation lines."""
    out: list[str] = []
    continuing = False
    for line in body.splitlines():
        if continuing:
            out.append(line)
            continuing = line.endswith("\\")
        elif line.startswith("$ "):
            out.append(line[2:])
            continuing = line.endswith("\\")
    return "\n".join(out) + "\n"


def blocks() -> list:
    params = []
    for name in DOCS:
        path = ROOT / name
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        # fences quoted inside HTML comments are not blocks (keep line numbers)
        text = re.sub(r"<!--.*?-->", lambda m: "\n" * m.group().count("\n"),
                      text, flags=re.S)
        for n, m in enumerate(FENCE.finditer(text)):
            if name == "README.md" and n == 0:
                continue  # CI's set-up block: .ci/run runs it
            lang, body = m.group(1), m.group(2)
            line = text.count("\n", 0, m.start()) + 1
            if lang == "sh":
                kind, script = "sh", body
            elif lang == "console":
                kind, script = "sh", console_commands(body)
            elif lang == "python":
                kind, script = "python", body
            else:
                continue
            if not script.strip():
                continue
            params.append(pytest.param(name, kind, script, id=f"{name}:{line}"))
    return params


@pytest.fixture
def doc_env(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "evstore"
    for name in ("python", "python3"):
        (bindir / name).symlink_to(sys.executable)
    work = tmp_path / "work"
    work.mkdir()
    (work / "sample_data").symlink_to(ROOT / "sample_data")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EVSTORE_") and k not in ("NO_COLOR",)}
    env.update(
        PATH=f"{bindir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        EVSTORE_DIR=str(tmp_path / "store"),
        SAMPLE=str(ROOT / "sample_data"),
        HOME=str(tmp_path),
        TMPDIR=str(tmp_path),
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    zygote = conftest._forked(env)
    if zygote is not None:  # forks of a process that imported the CLI (tests/cli_fork.py)
        zygote.command(str(wrapper))
    else:
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m evstore "$@"\n')
        wrapper.chmod(0o755)
    return work, env


def test_some_blocks_are_found():
    ids = [p.id for p in blocks()]
    assert any(i.startswith("docs/RECIPES.md") for i in ids), ids
    assert any(i.startswith("README.md") for i in ids), ids


@pytest.mark.parametrize("doc,kind,script", blocks())
def test_doc_block_runs(doc, kind, script, doc_env, request):
    work, env = doc_env
    if doc in ON_POSTGRES:
        env["EVSTORE_DIR"] = request.getfixturevalue("pg_url")
    if re.search(r"\bjq\b", script) and shutil.which("jq") is None:
        pytest.skip("jq is not installed (apt-get install jq); this block uses it")
    if kind == "sh":
        cmd = ["bash", "-c", "set -euo pipefail\n" + script]
    else:
        cmd = [sys.executable, "-c", script]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n--- script\n{script}\n--- stdout\n"
        f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
