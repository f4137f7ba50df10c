"""One process per short command (issue 15): `evstore append`, a plain
`evstore read` of a short stream and `evstore --help`, each a whole process,
against `python -c pass` and the python3+sqlite3 scripts that do the same.

    python bench/bench_startup.py              # 20 interleaved runs, ~30 s
    python bench/bench_startup.py --runs 40

Every command runs once per round, in turn (a disturbance hits all alike);
the median of the rounds is printed, wall and CPU, and each one's ratio to
the python3+sqlite3 script.  "no fast path" rows are the same commands with
EVSTORE_NO_QUICK=1 (typer parses them).  Byte code is cached (as in an
installed evstore); the store and the SQLite file live in a temporary
directory (--dir to choose it).  Results: bench/results/startup.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from peers import SQLITE_APPEND, clean_env, evstore_command, run_child  # noqa: E402

#: `read S` through sqlite3 as a script would do it: the short stream's rows
#: as NDJSON (the seed's schema, as SQLITE_APPEND writes it).
SQLITE_READ = """
import json, sqlite3, sys
con = sqlite3.connect(sys.argv[1])
out = sys.stdout.write
for pos, stream, version, etype, data, meta, at in con.execute(
        "SELECT id, aggregate_id, version, type, data, metadata, recorded_at"
        " FROM events WHERE aggregate_id = ? ORDER BY version", (sys.argv[2],)):
    out(json.dumps({"stream": stream, "version": version, "position": pos, "type": etype,
                    "data": json.loads(data), "metadata": json.loads(meta), "recorded_at": at}) + "\\n")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--dir", default=None, help="where the store and the SQLite file go")
    ap.add_argument("--json", default=str(BENCH_DIR / "results" / "startup.json"))
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="evstore-startup-", dir=args.dir))
    try:
        env = clean_env()
        slow = clean_env(EVSTORE_NO_QUICK="1")
        evstore = evstore_command()
        store, db = root / "store", root / "db.sqlite3"
        (root / "append.py").write_text(SQLITE_APPEND)
        (root / "read.py").write_text(SQLITE_READ)
        data = json.dumps({"account": "acct-7", "amount": 10, "note": "deposit"})
        short = "\n".join(json.dumps({"type": "Deposited", "data": {"amount": i}}) for i in range(10))
        subprocess.run([*evstore, "--store", str(store), "append", "short"], input=short.encode(),
                       env=env, check=True, capture_output=True)
        for _ in range(10):
            run_child([sys.executable, str(root / "append.py"), str(db), "short", "Deposited", data], env)
        sqlite3.connect(db).close()
        append = [*evstore, "--store", str(store), "append", "acct-1", "--type", "Deposited", "--data", data]
        read = [*evstore, "--store", str(store), "read", "short"]
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], env),
            "python -c 'import typer'": ([sys.executable, "-c", "import typer"], env),
            "python3+sqlite3 append script": (
                [sys.executable, str(root / "append.py"), str(db), "acct-1", "Deposited", data], env),
            "python3+sqlite3 read script (10 events)": (
                [sys.executable, str(root / "read.py"), str(db), "short"], env),
            "evstore append S --type T --data J": (append, env),
            "evstore append, no fast path": (append, slow),
            "evstore read S (10 events)": (read, env),
            "evstore read S, no fast path": (read, slow),
            "evstore --help": ([*evstore, "--help"], env),
        }
        runs = {k: [] for k in commands}
        for _ in range(2):  # warm up: page cache, .pyc files
            for cmd, e in commands.values():
                run_child(cmd, e)
        for _ in range(args.runs):
            for label, (cmd, e) in commands.items():
                runs[label].append(run_child(cmd, e))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    out = {label: {"wall_ms": 1000 * statistics.median(w for w, _ in rs),
                   "cpu_ms": 1000 * statistics.median(c for _, c in rs), "runs": len(rs)}
           for label, rs in runs.items()}
    script = out["python3+sqlite3 append script"]
    print(f"\nmedian of {args.runs} interleaved runs; ratios: to the python3+sqlite3 append script\n")
    print(f"| {'command':42} | {'wall':>9} | {'CPU':>9} | {'wall / script':>13} | {'CPU / script':>12} |")
    print(f"|{'-' * 44}|{'-' * 10}:|{'-' * 10}:|{'-' * 14}:|{'-' * 13}:|")
    for label, fig in out.items():
        print(f"| {label:42} | {fig['wall_ms']:6.1f} ms | {fig['cpu_ms']:6.1f} ms | "
              f"{fig['wall_ms'] / script['wall_ms']:12.2f}x | {fig['cpu_ms'] / script['cpu_ms']:11.2f}x |")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
