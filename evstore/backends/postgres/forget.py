"""Forgetting on PostgreSQL: cuts, retention rules, and compaction.

The rules themselves live in :mod:`evstore.core.forgetting`; this module
keeps their state in rows and removes rows.  Decisions, with why:

- **A delete or truncate writes one row** (``cuts``) under the writer lock
  appends take (the ``head`` row), so an expected version is exact and an
  append after it sees a tombstone.  The events' rows stay until
  ``compact``: deleting a long stream's rows in that transaction would hold
  every writer of the store for as long as the DELETE takes.
- **Readers cache** the cuts and rules by a generation number (the one row
  of ``forgetting``), which every change increments in its transaction:
  one primary-key lookup per read when nothing changed, and the same one
  statement reloads everything when something did, from one snapshot.
- **Lock order**, the same everywhere: the writers' lock, ``head``, then
  the ``forgetting`` row.  Appends take the first two; ``cut`` and an
  import that records a stream's floor take all three; ``set_retention``
  and each compaction transaction take only the last.  So no cycle exists,
  changes of cuts and rules wait for a compaction step in progress, and
  appends never wait for compaction -- except behind a ``cut`` that is
  itself waiting for one step.
- **Compaction goes stream by stream, lowest versions first**, and removes
  in each transaction only a prefix of what a stream still stores: so what
  a stream stores is always one run of versions ending at its version
  (``verify`` checks exactly that), whatever rules change while it runs.
  Each transaction asks ``view()`` again under the ``forgetting`` lock (no
  cut or rule can change until it commits), deletes the rows, records
  their positions in ``removed`` and each stream's last removed version in
  ``removed_versions`` and, for deleted streams, deletes the
  snapshots at or below the deletion.  A crash loses at most the
  transaction in flight; nothing readable is ever deleted.
- **Then a plain VACUUM** of ``events`` and ``snapshots``: it makes the
  freed space reusable without blocking readers or writers.  Not VACUUM
  FULL, which rewrites the tables (so no file holds the removed bytes) but
  locks them against every reader and writer while it runs:
  docs/POSTGRES.md, "Forgetting", says when and how to run it.
- **bytes_after** counts the removed rows' space as given back: a plain
  VACUUM keeps it inside the table files, where the store's next rows
  reuse it before the files grow, so the files' size (``info``) hardly
  moves and would say nothing about what compaction did.  The rows' size
  is estimated from their columns (the dry run reports the same figure);
  when the VACUUM did shrink the files further, their size is reported.
"""
from __future__ import annotations

from types import MappingProxyType

from ...core.forgetting import Cut, Retention, plan_cut
from .writes import _ms, add_removed, batched, runs

#: rows of one stream a compaction statement looks at, at most
STREAM_ROWS = 10_000
#: rows one compaction transaction deletes, about (streams at a time x rows each)
CHUNK = 10_000
#: streams one compaction statement looks at, at most
STREAMS = 200
#: a stored event's bytes beyond its body, stream id (twice: the row and an
#: index) and type: tuple header and line pointer, the fixed-size columns,
#: and its entries in the three indexes
ROW_FIXED = 148
#: the same for a snapshot (tuple header, version, the primary key's entry)
SNAPSHOT_FIXED = 64


SNAPSHOT_SIZE = f"pg_column_size(sn.body) + octet_length(sn.stream) * 2 + {SNAPSHOT_FIXED}"


def queries(s: str) -> dict:
    return {
        # one statement, one snapshot: the generation, and everything when it moved
        "cached": (
            f"SELECT f.generation,"
            f" CASE WHEN f.generation IS DISTINCT FROM %s THEN (SELECT coalesce(json_agg("
            f"json_build_array(stream, floor, hard, deleted)), '[]') FROM {s}.cuts) END,"
            f" CASE WHEN f.generation IS DISTINCT FROM %s THEN (SELECT coalesce(json_agg("
            f"json_build_array(target, prefix, max_age_us, max_count)), '[]')"
            f" FROM {s}.retention) END"
            f" FROM {s}.forgetting f"),
        "lock": f"SELECT generation FROM {s}.forgetting FOR UPDATE",
        "cut_state": (f"SELECT coalesce(st.version, 0), c.floor, c.hard, c.deleted"
                      f" FROM (SELECT %s::text AS stream) x"
                      f" LEFT JOIN {s}.streams st ON st.stream = x.stream"
                      f" LEFT JOIN {s}.cuts c ON c.stream = x.stream"),
        "put_cut": (f"INSERT INTO {s}.cuts VALUES (%s, %s, %s, %s) ON CONFLICT (stream)"
                    f" DO UPDATE SET floor = EXCLUDED.floor, hard = EXCLUDED.hard,"
                    f" deleted = EXCLUDED.deleted"),
        "put_rule": (f"INSERT INTO {s}.retention VALUES (%s, %s, %s, %s)"
                     f" ON CONFLICT (target, prefix) DO UPDATE SET"
                     f" max_age_us = EXCLUDED.max_age_us, max_count = EXCLUDED.max_count"),
        "drop_rule": f"DELETE FROM {s}.retention WHERE target = %s AND prefix = %s",
        "prefixed": (f"SELECT stream FROM {s}.streams WHERE starts_with(stream, %s)"
                     f" AND stream > %s ORDER BY stream LIMIT 1000"),
        # the lowest stored versions of several streams (after a version each)
        "lowest": (
            f"SELECT x.stream, st.version, e.version, e.position, e.recorded_us, e.size"
            f" FROM unnest(%s::text[], %s::bigint[]) AS x(stream, after)"
            f" JOIN {s}.streams st ON st.stream = x.stream"
            f" CROSS JOIN LATERAL (SELECT ev.version, ev.position, ev.recorded_us,"
            f" pg_column_size(ev.body) + octet_length(ev.stream) * 2 + octet_length(ev.type)"
            f" + {ROW_FIXED} AS size FROM {s}.events ev"
            f" WHERE ev.stream = x.stream AND ev.version > x.after"
            f" ORDER BY ev.version LIMIT %s) e ORDER BY x.stream, e.version"),
        "delete": f"DELETE FROM {s}.events WHERE position = ANY(%s::bigint[])",
        "drop_snapshots": (f"WITH d AS (DELETE FROM {s}.snapshots sn"
                           f" USING unnest(%s::text[], %s::bigint[]) AS x(stream, deleted)"
                           f" WHERE sn.stream = x.stream AND sn.version <= x.deleted"
                           f" RETURNING {SNAPSHOT_SIZE} AS size)"
                           f" SELECT count(*), coalesce(sum(size), 0) FROM d"),
        "count_snapshots": (f"SELECT count(*), coalesce(sum({SNAPSHOT_SIZE}), 0)"
                            f" FROM {s}.snapshots sn JOIN unnest(%s::text[], %s::bigint[])"
                            f" AS x(stream, deleted) ON sn.stream = x.stream"
                            f" AND sn.version <= x.deleted"),
    }


# -- reading the state --------------------------------------------------------------------
def cached(b) -> tuple:
    """``(generation, cuts, rules)``, revalidated with one statement.
    A store that does not exist, or was made by an earlier version and not
    written since, has nothing removed.  ``cuts`` is a read-only mapping:
    every reader of this handle shares it."""
    with b.session("read") as conn:
        if not b.current(conn):
            return (None, MappingProxyType({}), ())
        have = b._forget_cache
        gen = None if have is None else have[0]
        row = conn.execute(b.fq["cached"], (gen, gen)).fetchone()
    if have is not None and row[0] == gen:
        return have
    cuts = MappingProxyType({s: Cut(s, floor, hard, deleted)
                             for s, floor, hard, deleted in row[1]})
    rules = tuple(Retention(t, p, age, count) for t, p, age, count in row[2])
    b._forget_cache = fresh = (row[0], cuts, rules)
    return fresh


# -- changing it --------------------------------------------------------------------------
def _begin(conn, b, timeout: float, head: bool) -> None:
    """BEGIN and the locks of a change (module docstring: for a cut, the
    writers' lock and ``head`` first, then ``forgetting``)."""
    conn.execute("BEGIN")
    conn.execute(f"SET LOCAL lock_timeout = {_ms(timeout)}")
    if not b.sync:
        conn.execute("SET LOCAL synchronous_commit = off")
    if head:
        conn.execute(b.q["lock_writers"])
        conn.execute(b.q["lock_head"])
    conn.execute(b.fq["lock"])


def cut(b, stream: str, expected, before: int | None, hard: bool) -> tuple[int, Cut]:
    """See :meth:`evstore.core.backend.Backend.cut`: two round trips, as
    an append (the locks and the state; the new cut and COMMIT)."""
    t = b.lock_timeout
    with b.session("delete" if before is None else "truncate", t) as conn:
        if not b.tables(conn):  # no store: StreamNotFound, and nothing created
            plan_cut(None, stream, 0, expected, before, hard)
        b.ensure(conn)
        with batched(conn):
            _begin(conn, b, t, head=True)
            cur = conn.execute(b.fq["cut_state"], (stream,))
        version, floor, was_hard, deleted = cur.fetchone()
        old = None if floor is None else Cut(stream, floor, was_hard, deleted)
        new = plan_cut(old, stream, version, expected, before, hard)  # raises: rolled back
        with batched(conn):
            if new != old:
                conn.execute(b.fq["put_cut"], tuple(new))
                conn.execute(b.q["bump_forgetting"])
            conn.execute("COMMIT")
    return version, new


def set_retention(b, rule: Retention) -> None:
    t = b.lock_timeout
    with b.session("set a retention rule", t) as conn:
        b.ensure(conn)
        with batched(conn):
            _begin(conn, b, t, head=False)
            if rule.max_age_us is None and rule.max_count is None:
                conn.execute(b.fq["drop_rule"], (rule.target, rule.prefix))
            else:
                conn.execute(b.fq["put_rule"], tuple(rule))
            conn.execute(b.q["bump_forgetting"])
            conn.execute("COMMIT")


# -- compaction -------------------------------------------------------------------------------
def _candidates(b, view) -> list[str]:
    """The streams that may store unreadable events: those with a cut and
    those a retention rule names or whose id starts with a rule's prefix."""
    found = set(view.cuts) | set(view.stream_rules)
    for rule in view.prefix_rules:
        last = ""
        while True:
            with b.session("compact") as conn:
                rows = conn.execute(b.fq["prefixed"], (rule.target, last)).fetchall()
            found.update(r[0] for r in rows)
            if len(rows) < 1000:
                break
            last = rows[-1][0]
    return sorted(found)


def _unreadable(conn, b, view, streams: list[str], after: dict,
                per_stream: int) -> dict[str, tuple[list, bool]]:
    """For each of ``streams``: the unreadable prefix of its lowest stored
    rows (versions above ``after``) as ``(version, position, size)`` rows,
    and whether the stream may hold more (every row looked at was
    unreadable and there may be more)."""
    rows = conn.execute(b.fq["lowest"], (streams, [after.get(s, 0) for s in streams],
                                         per_stream)).fetchall()
    by_stream: dict[str, list] = {}
    for stream, current, version, position, us, size in rows:
        by_stream.setdefault(stream, []).append((current, version, position, us, size))
    out = {}
    for stream, got in by_stream.items():
        gone = []
        for current, version, position, us, size in got:
            if view.readable(stream, version, us, current):
                break
            gone.append((version, position, size))
        more = len(gone) == len(got) == per_stream
        out[stream] = (gone, more)
    return out


def _per_stream(queued: int) -> int:
    """Rows to look at per stream, so that one statement looks at about
    CHUNK rows: a few long streams get many each, many streams few."""
    return max(1, min(STREAM_ROWS, CHUNK // min(queued, STREAMS)))


def _plan(b, view_fn, streams: list[str]) -> tuple[int, int]:
    """What a compaction would remove now: ``(events, bytes)`` (no lock,
    nothing changed; bytes are an estimate of the rows' size)."""
    view = view_fn()
    events = size = 0
    queue, after = list(streams), {}
    while queue:
        per_stream = _per_stream(len(queue))
        batch, queue = queue[:STREAMS], queue[STREAMS:]
        with b.session("compact") as conn:
            found = _unreadable(conn, b, view, batch, after, per_stream)
        for stream, (gone, more) in found.items():
            events += len(gone)
            size += sum(g[2] for g in gone)
            if more:
                after[stream] = gone[-1][0]
                queue.append(stream)
    deleted = {s: c.deleted for s, c in view.cuts.items() if c.deleted}
    if deleted:
        with b.session("compact") as conn:
            _n, body = conn.execute(b.fq["count_snapshots"],
                                   (list(deleted), list(deleted.values()))).fetchone()
        size += int(body)
    return events, size


def compact(b, view_fn, dry_run: bool = False, progress=None) -> dict:
    """See :meth:`evstore.core.backend.Backend.compact` and the module
    docstring."""
    bytes_before = b.stats()["bytes"]
    result = {"events_removed": 0, "bytes_before": bytes_before, "bytes_after": bytes_before}
    with b.session("compact") as conn:
        if not b.current(conn):  # absent, or made before forgetting: nothing is removed
            return result
    view = view_fn()
    if view.empty:
        return result
    streams = _candidates(b, view)
    total = None
    if dry_run or progress is not None:
        events, size = _plan(b, view_fn, streams)
        if dry_run:
            if progress is not None and size:  # the plan is a dry run's whole work
                progress(size, size)
            result.update(events_removed=events, bytes_after=max(0, bytes_before - size))
            return result
        total = size
    done = removed = snaps = freed = 0
    queue = list(streams)
    while queue:
        per_stream = _per_stream(len(queue))
        batch, queue = queue[:STREAMS], queue[STREAMS:]
        found, positions, n, size = _compact_batch(b, view_fn, batch, per_stream)
        snaps += n
        freed += size
        removed += len(positions)
        queue += [s for s, (_gone, more) in found.items() if more]
        done += sum(g[2] for gone, _more in found.values() for g in gone)
        if progress is not None and total:
            progress(min(done, total), total)
    if progress is not None and total:
        progress(total, total)
    result.update(events_removed=removed,
                  bytes_after=_bytes_after(b, bytes_before, freed + done, removed or snaps))
    return result


def _compact_batch(b, view_fn, batch: list, per_stream: int):
    """One transaction of :func:`compact` under the writer lock: the
    unreadable events of up to STREAMS streams (at most ``per_stream``
    each) deleted and recorded as removed, and the snapshots of deleted
    streams dropped.  Returns ``(found, positions, snapshots dropped,
    their bytes)``; ``found`` says which streams have more to remove."""
    t = b.lock_timeout
    with b.session("compact", t) as conn:
        with batched(conn):
            _begin(conn, b, t, head=False)
        view = view_fn()  # under the lock: no cut or rule changes until COMMIT
        found = _unreadable(conn, b, view, batch, {}, per_stream)
        positions = sorted(g[1] for gone, _more in found.values() for g in gone)
        deleted = {s: view.cuts[s].deleted for s in batch
                   if s in view.cuts and view.cuts[s].deleted}
        through = {s: gone[-1][0] for s, (gone, _more) in found.items() if gone}
        with batched(conn):
            if positions:
                conn.execute(b.fq["delete"], (positions,))
                add_removed(conn, b.q, runs(positions))
                conn.execute(b.q["add_removed_versions"],
                             (list(through), list(through.values())))
            if deleted:
                gone_snaps = conn.execute(b.fq["drop_snapshots"],
                                          (list(deleted), list(deleted.values())))
            conn.execute("COMMIT")
        n = size = 0
        if deleted:
            n, size = gone_snaps.fetchone()
    return found, positions, n, int(size)


def _bytes_after(b, bytes_before: int, freed: int, vacuum: bool) -> int:
    """The store's size after a compaction that freed ``freed`` bytes of
    rows, VACUUMed when anything was removed.  The freed rows' space is free
    inside the files (module docstring), unless the VACUUM gave back more
    (empty pages at the end of a table)."""
    if vacuum:
        with b.session("compact") as conn:
            conn.execute(f"VACUUM {b.ident}.events, {b.ident}.snapshots, {b.ident}.removed")
    after = min(b.stats()["bytes"], bytes_before - freed) if freed else b.stats()["bytes"]
    return max(0, after)
