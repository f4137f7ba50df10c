"""JSON pipes, whole processes: evstore's CLI against what a shell user
would reach for instead (issue 15).

    python bench/bench_pipes.py                # 100,000 events, 3 runs each
    python bench/bench_pipes.py --events 20000 --runs 1   # quick look

Every figure is a whole process started from this script, stdout to a file,
as a pipeline would run it; the best of ``--runs`` is kept (the least
disturbed by other work on the machine).  The peers, on the same events:

- **sqlite3 shell**: the SQLite command-line tool on the seed's schema (one
  table, a unique (stream, version) index, WAL, ``synchronous=FULL``) with
  an ``event_id`` column added, so that it can print what evstore prints:
  ``select json_object(...)`` for reads, ``insert`` for one-event appends;
- **python3 + sqlite3**: the short script a user writes (json.loads +
  executemany in one transaction; a cursor loop + json.dumps for reads);
- **sqlite-utils** (``pip install sqlite-utils``; skipped when absent): its
  ``insert --nl`` for appends, one process per append.

Printed: events/s (reads and batch appends) or ms per process (one append
per process), and evstore's ratio to each peer (> 1: evstore is faster);
for reads also the CPU seconds (user + sys, the least of the runs) and the
CPU ratio to the first peer, steadier than the wall clock on a shared
machine.  ``--reads-only`` stops after the reads (results file untouched).
Not a test: nothing fails; the table is the result (bench/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE events (id INTEGER PRIMARY KEY, aggregate_id TEXT, version INTEGER,
    event_id TEXT, type TEXT, data BLOB, metadata BLOB, recorded_at TEXT);
CREATE UNIQUE INDEX events_stream_version ON events(aggregate_id, version);
"""

JSON_OBJECT = ("json_object('stream', aggregate_id, 'version', version, 'position', id, "
               "'id', event_id, 'type', type, 'data', json(data), 'metadata', json(metadata), "
               "'recorded_at', recorded_at)")

READ_SCRIPT = """
import json, sqlite3, sys
con = sqlite3.connect(sys.argv[1])
out = sys.stdout.write
for pos, stream, version, eid, etype, data, meta, at in con.execute(
        "SELECT id, aggregate_id, version, event_id, type, data, metadata, recorded_at"
        " FROM events WHERE aggregate_id = ? ORDER BY version", (sys.argv[2],)):
    out(json.dumps({"stream": stream, "version": version, "position": pos, "id": eid,
                    "type": etype, "data": json.loads(data), "metadata": json.loads(meta),
                    "recorded_at": at}) + "\\n")
"""

APPEND_SCRIPT = """
import datetime, json, sqlite3, sys, uuid
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA synchronous=FULL")
stream = sys.argv[2]
at = datetime.datetime.now(datetime.timezone.utc).isoformat()
cur = con.cursor()
cur.execute("BEGIN IMMEDIATE")
(v,) = cur.execute("SELECT coalesce(max(version), 0) FROM events WHERE aggregate_id = ?",
                   (stream,)).fetchone()
rows = []
for line in sys.stdin:
    ev = json.loads(line)
    v += 1
    rows.append((stream, v, ev.get("id") or str(uuid.uuid4()), ev["type"],
                 json.dumps(ev.get("data", {})), json.dumps(ev.get("metadata", {})), at))
cur.executemany("INSERT INTO events (aggregate_id, version, event_id, type, data, metadata,"
                " recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
cur.execute("COMMIT")
"""


def make_events(n: int) -> list[dict]:
    return [{"type": "Deposited",
             "data": {"account": f"acct-{i % 97}", "amount": i, "note": f"deposit {i:09d}"},
             "metadata": {"by": "ci", "run": i // 100}}
            for i in range(n)]


#: CPU seconds (user + sys) of each command timed() ran, in order: on a
#: machine shared with other work, CPU time is disturbed far less than the
#: wall clock (best() keeps the least of its runs in best.cpu).
_CPU: list[float] = []


def timed(cmd, *, stdin=None, stdout=None, env=None, shell=False) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(cmd, stdin=stdin, stdout=stdout or subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=env, shell=shell)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    _CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise SystemExit(f"failed: {cmd}: {r.stderr.decode(errors='replace')}")
    return dt


def best(runs: int, fn) -> float:
    k = len(_CPU)
    seconds = min(fn() for _ in range(runs))
    best.cpu = min(_CPU[k:], default=None)
    return seconds


def sqlite_db(path: str, events: list[dict], stream: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(SCHEMA)
    at = "2026-12-06T10:00:00.000000Z"
    con.execute("BEGIN")
    con.executemany(
        "INSERT INTO events (aggregate_id, version, event_id, type, data, metadata, recorded_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(stream, i + 1, str(uuid.uuid4()), e["type"], json.dumps(e["data"]),
          json.dumps(e["metadata"]), at) for i, e in enumerate(events)])
    con.execute("COMMIT")
    con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--appends", type=int, default=20, help="processes for one-event appends")
    ap.add_argument("--reads-only", action="store_true", help="only the reads to NDJSON")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "pipes.json"))
    args = ap.parse_args()
    n = args.events
    sqlite_cli = shutil.which("sqlite3")
    utils = shutil.which("sqlite-utils")
    evstore = [sys.executable, "-m", "evstore"]
    env = dict(os.environ, NO_COLOR="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as an installed package runs
    work = tempfile.mkdtemp(prefix="bench-pipes-", dir=args.dir)
    rows: list[tuple[str, str, dict]] = []
    try:
        events = make_events(n)
        ndjson = os.path.join(work, "in.ndjson")
        with open(ndjson, "w") as f:
            for e in events:
                f.write(json.dumps(e) + "\n")
        out = os.path.join(work, "out.ndjson")

        # -- reads ------------------------------------------------------------------------
        store = os.path.join(work, "store")
        with open(ndjson, "rb") as f:
            timed([*evstore, "--store", store, "append", "S"], stdin=f, env=env)
        db = os.path.join(work, "seed.sqlite3")
        sqlite_db(db, events, "S")

        def ev_cmd(*a):
            def run():
                with open(out, "wb") as o:
                    return timed([*evstore, "--store", store, *a], stdout=o, env=env)
            return run

        reads = {"read S": ev_cmd("read", "S"), "read --all": ev_cmd("read", "--all"),
                 "tail --all": ev_cmd("tail", "--all", "-n", str(n)),
                 "export --all": ev_cmd("export", "--all")}
        peers = {}
        if sqlite_cli:
            def shell():
                with open(out, "wb") as o:
                    return timed([sqlite_cli, db, f"SELECT {JSON_OBJECT} FROM events "
                                  "WHERE aggregate_id = 'S' ORDER BY version"], stdout=o)
            peers["sqlite3 shell"] = best(args.runs, shell), best.cpu

        def script():
            with open(out, "wb") as o:
                return timed([sys.executable, "-c", READ_SCRIPT, db, "S"], stdout=o)
        peers["python3+sqlite3"] = best(args.runs, script), best.cpu
        for name, fn in reads.items():
            rows.append(("read", f"evstore {name}", {"seconds": best(args.runs, fn),
                                                     "cpu_seconds": best.cpu}))
        for name, (s, cpu) in peers.items():
            rows.append(("read", name, {"seconds": s, "cpu_seconds": cpu}))

        if args.reads_only:  # (the results file is left alone)
            return report(rows, n)
        # -- one batch from stdin ---------------------------------------------------------
        def fresh_store():
            d = tempfile.mkdtemp(dir=work)
            with open(ndjson, "rb") as f:
                return timed([*evstore, "--store", os.path.join(d, "s"), "append", "S",
                               "--expected-version", "0"], stdin=f, env=env)

        def fresh_db(cmd_for):
            d = tempfile.mkdtemp(dir=work)
            path = os.path.join(d, "db.sqlite3")
            sqlite_db(path, [], "S")
            with open(ndjson, "rb") as f:
                return timed(cmd_for(path), stdin=f)
        rows.append(("append", "evstore append S < in.ndjson", {"seconds": best(args.runs, fresh_store)}))
        rows.append(("append", "python3+sqlite3", {"seconds": best(
            args.runs, lambda: fresh_db(lambda p: [sys.executable, "-c", APPEND_SCRIPT, p, "S"]))}))
        if utils:
            rows.append(("append", "sqlite-utils insert --nl", {"seconds": best(
                args.runs, lambda: fresh_db(lambda p: [utils, "insert", p, "events", "-", "--nl"]))}))

        # -- one process per append -------------------------------------------------------
        k = args.appends
        line = json.dumps(events[0])
        one = os.path.join(work, "one.ndjson")
        with open(one, "w") as f:
            f.write(line + "\n")
        pstore = os.path.join(work, "pstore")
        pdb = os.path.join(work, "p.sqlite3")
        sqlite_db(pdb, [], "S")
        data = json.dumps(events[0]["data"])
        procs = {
            "evstore append": lambda: timed([*evstore, "--store", pstore, "append", "S", "--type",
                                             "Deposited", "--data", data], env=env),
            "python3+sqlite3": lambda: timed([sys.executable, "-c", APPEND_SCRIPT, pdb, "S"],
                                             stdin=open(one, "rb")),
        }
        if sqlite_cli:
            sql = ("PRAGMA synchronous=FULL; INSERT INTO events (aggregate_id, version, event_id,"
                   " type, data, metadata, recorded_at) SELECT 'S', coalesce(max(version), 0) + 1,"
                   " lower(hex(randomblob(16))), 'Deposited', '" + data + "', '{}',"
                   " strftime('%Y-%m-%dT%H:%M:%fZ') FROM events WHERE aggregate_id = 'S';")
            procs["sqlite3 shell"] = lambda: timed([sqlite_cli, pdb, sql])
        if utils:
            procs["sqlite-utils insert"] = lambda: timed([utils, "insert", pdb, "events", "-",
                                                          "--nl"], stdin=open(one, "rb"))
        times = {name: [] for name in procs}
        for _ in range(k):  # interleaved: a disturbance hits every peer alike
            for name, fn in procs.items():
                times[name].append(fn())
        for name, ts in times.items():
            ts.sort()
            rows.append(("process", name, {"median_ms": 1000 * ts[len(ts) // 2]}))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report(rows, n)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"events": n, "runs": args.runs, "rows": rows}, f, indent=1)


def report(rows, n: int) -> None:
    def section(kind):
        return [(name, fig) for k, name, fig in rows if k == kind]
    print(f"\n{n:,} events; best of the runs; ratio > 1: evstore is faster; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()) + "\n")
    for kind, title in (("read", "reads to NDJSON"), ("append", "one batch from stdin")):
        sec = section(kind)
        if not sec:
            continue
        peers = [(nm, f) for nm, f in sec if not nm.startswith("evstore")]
        cpu = [(nm, f) for nm, f in peers if f.get("cpu_seconds")]
        print(f"| {title} | events/s | " + " | ".join(f"vs {p}" for p, _ in peers)
              + "".join(f" | CPU s | CPU vs {p}" for p, _ in cpu[:1]) + " |")
        print("|---|---:|" + "---:|" * (len(peers) + 2 * len(cpu[:1])))
        for name, fig in sec:
            rate = n / fig["seconds"]
            ratios = " | ".join(f"{pf['seconds'] / fig['seconds']:.2f}x" for _, pf in peers)
            ratios += "".join(f" | {fig['cpu_seconds']:.3f} | {pf['cpu_seconds'] / fig['cpu_seconds']:.2f}x"
                              for _, pf in cpu[:1])
            print(f"| {name} | {rate:,.0f} | {ratios} |")
        print()
    sec = section("process")
    if not sec:
        return
    ev = dict(sec)["evstore append"]["median_ms"]
    print("| one append per process | median ms | evstore's time / this |")
    print("|---|---:|---:|")
    for name, fig in sec:
        print(f"| {name} | {fig['median_ms']:.1f} | {ev / fig['median_ms']:.2f}x |")


if __name__ == "__main__":
    main()
