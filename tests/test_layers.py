"""The layers of evstore, checked by parsing every module's imports (ast).

Imports point one way, lowest first (README, "Code map"):

  0  evstore.errors, evstore.model, evstore.plain  leaves: the errors, the event model and
     evstore.backends.files.names                   its rules; every file name of a store
  1  evstore.disk                                   the file backend's byte format
  2  evstore.core.backend, evstore.core.rules,      the backend interface and the rules
     evstore.core.forgetting,                       (expected versions; what is readable;
     evstore.core.checkline, evstore.core.documents  checked small documents' bytes;
     evstore.core.lines                              an event's NDJSON line, fast)
  3  evstore.backends                               files, memory, postgres, the registry
  4  evstore.core, evstore (the package)            EventStore, the front end
  5  evstore.features                               written against the front end
  6  evstore.ops                                    verify, repair, export, import
  7  evstore.cli, evstore.__main__                  parsing, rendering, exit codes

A module may import a module of its own rank or lower, at the top or inside
a function alike; the few upward imports that remain are listed in ALLOWED
with the reason each exists.  Only the CLI imports typer or rich, and the
library never prints.
"""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "evstore"

RANKS = [  # (module prefix, rank); the longest matching prefix wins
    ("evstore.errors", 0),
    ("evstore.model", 0),
    ("evstore.plain", 0),
    ("evstore.backends.files.names", 0),
    ("evstore.disk", 1),
    ("evstore.core.backend", 2),
    ("evstore.core.rules", 2),
    ("evstore.core.forgetting", 2),
    ("evstore.core.checkline", 2),
    ("evstore.core.documents", 2),
    ("evstore.core.lines", 2),
    ("evstore.backends", 3),
    ("evstore.core", 4),
    ("evstore", 4),
    ("evstore.features", 5),
    ("evstore.ops", 6),
    ("evstore.cli", 7),
    ("evstore.__main__", 7),
]

#: (importer, imported prefix): upward imports that are allowed, and why.
ALLOWED = {
    # The documented library API: store.snapshots / replay / subscribe / verify
    # are entry points to features, imported when called.
    ("evstore.core.store", "evstore.features"),
    ("evstore.core.store", "evstore.ops"),
    # The file backend's verify is still ops/verifier.py (not yet moved
    # under backends/files/).
    ("evstore.backends.files.engine", "evstore.ops"),
}


def rank(module: str) -> int:
    best, found = -1, None
    for prefix, r in RANKS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
            best, found = len(prefix), r
    assert found is not None, module
    return found


def modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(parts), is_pkg, path


def imports(module: str, is_pkg: bool, path: pathlib.Path):
    """(imported module, line) for every import in the file, resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if is_pkg else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")]
            # `from pkg import mod`: what is imported is mod (pkg's __init__ too, but
            # the __init__ files of evstore's packages are their docstrings)
            for t in subs or [target]:
                yield t, node.lineno


def _is_module(name: str) -> bool:
    p = ROOT.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def violations(extra_allowed=frozenset()):
    out = []
    for module, is_pkg, path in modules():
        own = rank(module)
        for target, line in imports(module, is_pkg, path):
            if not (target == "evstore" or target.startswith("evstore.")):
                continue
            try:
                theirs = rank(target)
            except AssertionError:
                continue
            if theirs <= own:
                continue
            if any(module == a and (target == b or target.startswith(b + "."))
                   for a, b in ALLOWED | set(extra_allowed)):
                continue
            out.append(f"{module}:{line} imports {target} (rank {own} -> {theirs})")
    return out


def test_imports_point_down():
    assert violations() == []


def test_the_check_can_fail(monkeypatch):
    """The check itself works: a rank order turned upside down is caught."""
    monkeypatch.setattr(__import__(__name__), "RANKS",
                        [(p, -r) for p, r in RANKS], raising=True)
    found = violations()
    assert any("evstore.disk" in v for v in found), found


def test_only_the_cli_imports_typer_or_rich():
    bad = []
    for module, is_pkg, path in modules():
        if rank(module) == 7:
            continue
        for target, line in imports(module, is_pkg, path):
            if target.split(".")[0] in ("typer", "rich", "click"):
                bad.append(f"{module}:{line} imports {target}")
    assert bad == []


def test_the_library_never_prints():
    bad = []
    for module, is_pkg, path in modules():
        if rank(module) == 7:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "print":
                bad.append(f"{module}:{node.lineno}")
    assert bad == []


def test_no_feature_knows_a_backend():
    """Features are written once against the front end, the core and the
    event model: none imports a backend or the file backend's disk layer."""
    bad = []
    for module, is_pkg, path in modules():
        if not module.startswith("evstore.features"):
            continue
        for target, line in imports(module, is_pkg, path):
            if target.startswith(("evstore.disk", "evstore.backends")):
                bad.append(f"{module}:{line} imports {target}")
    assert bad == []


def test_the_event_model_is_imported_from_the_model():
    """The event model lives in evstore.model; evstore/disk/records.py only
    borrows it for the disk layer's own modules.  Everything above the disk
    layer (and the tests and benchmarks) imports the model from the model, so
    that the byte format can stop carrying it without breaking anyone."""
    import evstore.disk.records as records
    import evstore.model as model

    borrowed = {n for n, v in vars(records).items()
                if not n.startswith("__") and getattr(model, n, None) is v
                and not isinstance(v, type(model))}
    bad = []
    for top in ("evstore", "tests", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.is_relative_to(PKG / "disk"):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("records"):
                    for a in node.names:
                        if a.name in borrowed:
                            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {a.name}")
    assert bad == []
