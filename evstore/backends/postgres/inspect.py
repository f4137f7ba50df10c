"""``info`` and ``verify`` on PostgreSQL.

Why verify a database: PostgreSQL keeps what it was given, but a store can
still be wrong -- rows edited or deleted by hand, a restore of some tables
and not others, a bug.  Verify reads every event once, in position order,
a page at a time, and checks what the file backend's verify checks: dense
positions and versions (:class:`~evstore.core.backend.DenseCheck`), each
row's checksum, that each body decodes to the id and type stored beside
it, and that ``head``, ``streams`` and ``snapshots`` agree with the events.
"""
from __future__ import annotations

from ...core.backend import BACKEND_FORMAT, DenseCheck, decode_event
from ...errors import CorruptStore
from .writes import row_crc

PAGE = 2000


def stats(b) -> dict:
    out = {"backend": b.kind, "streams": 0, "events": 0, "bytes": 0, "segments": 0,
           "snapshots": 0, "format_version": BACKEND_FORMAT,
           "first_recorded_us": None, "last_recorded_us": None}
    with b.session("info") as conn:
        if not b.tables(conn):
            return out
        s = b.ident
        row = conn.execute(
            f"SELECT (SELECT position FROM {s}.head), (SELECT count(*) FROM {s}.streams),"
            f" (SELECT format_version FROM {s}.head),"
            f" (SELECT count(*) FROM {s}.snapshots),"
            f" (SELECT recorded_us FROM {s}.events ORDER BY position LIMIT 1),"
            f" (SELECT recorded_us FROM {s}.events ORDER BY position DESC LIMIT 1),"
            " (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            "  JOIN pg_namespace n ON n.oid = c.relnamespace"
            "  WHERE n.nspname = %s AND c.relkind = 'r')",
            (b.target.schema,)).fetchone()
    (out["events"], out["streams"], out["format_version"], out["snapshots"], out["first_recorded_us"],
     out["last_recorded_us"], out["bytes"]) = row
    out["bytes"] = int(out["bytes"])
    return out


def verify(b) -> list[dict]:
    check = DenseCheck()
    with b.session("verify") as conn:
        if not b.tables(conn):
            return []
        head = conn.execute(f"SELECT position FROM {b.ident}.head").fetchone()[0]
    _events(b, check)
    if check.position != head:
        check.problem("head", f"the head row says position {head}, the events end at "
                      f"{check.position}", position=head)
    _streams(b, check)
    _snapshots(b, check)
    for row in b.checkpoints():
        if row.position > head:
            check.problem("checkpoint", f"checkpoint {row.name!r} is at position "
                          f"{row.position}, past the store's head ({head}); its consumer "
                          "will resume at the head", severity="warning", position=row.position)
    return check.problems


def _events(b, check: DenseCheck) -> None:
    sql = (f"SELECT stream, version, position, recorded_us, body, id::text, type, crc"
           f" FROM {b.ident}.events WHERE position > %s ORDER BY position LIMIT %s")
    last = 0
    while True:
        with b.session("verify") as conn:
            rows = conn.execute(sql, (last, PAGE), binary=True).fetchall()
        for stream, version, position, us, body, eid, etype, crc in rows:
            check.add(stream, version, position, us)
            where = {"stream": stream, "version": version, "position": position}
            if row_crc(stream, version, position, us, bytes(body)) != crc:
                check.problem("checksum", "the event's checksum does not match its row", **where)
                continue
            try:
                ev = decode_event(stream, version, position, us, body)
            except CorruptStore as e:
                check.problem("event", str(e), **where)
                continue
            if ev.id != eid or ev.type.encode("utf-8") != bytes(etype):
                check.problem("event", "the id or type columns differ from the event's body",
                              **where)
        if len(rows) < PAGE:
            return
        last = rows[-1][2]


def _streams(b, check: DenseCheck) -> None:
    seen = set()
    for row in b.streams():
        seen.add(row.stream)
        want = check.versions.get(row.stream, 0)
        if row.version != want:
            check.problem("stream", f"the streams table says version {row.version}, the "
                          f"events end at {want}", stream=row.stream, version=row.version)
    for stream in check.versions.keys() - seen:
        check.problem("stream", "events of a stream missing from the streams table",
                      stream=stream)


def _snapshots(b, check: DenseCheck) -> None:
    with b.session("verify") as conn:
        rows = conn.execute(f"SELECT stream, version FROM {b.ident}.snapshots").fetchall()
    for stream, version in rows:
        have = check.versions.get(stream, 0)
        if version > have:
            check.problem("snapshot", f"a snapshot at version {version} of a stream at "
                          f"version {have}", stream=stream, version=version)
