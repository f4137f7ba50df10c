"""``info`` and ``verify`` on PostgreSQL.

Why verify a database: PostgreSQL keeps what it was given, but a store can
still be wrong -- rows edited or deleted by hand, a restore of some tables
and not others, a bug.  Verify reads every event once, in position order,
a page at a time, and checks what the file backend's verify checks: dense
positions and versions (:class:`~evstore.core.backend.DenseCheck`), each
row's checksum, that each body decodes to the id and type stored beside
it, and that ``head``, ``streams`` and ``snapshots`` agree with the events.

Events removed on purpose (compaction, or gaps an import kept) are not
damage: their positions are marked in ``removed`` by the transaction that
removed them, so a missing position is sound exactly when it is marked
there (and a stored one must not be).  Within a stream (removed events are
a prefix of their stream, and compaction removes the lowest stored first)
a version may be missing only at or below the last
version recorded as removed in ``removed_versions`` (rows below it may
still be stored, when compaction has not reached them or an import jumped
over them), and the stored versions end at the version the catalogue says.
"""
from __future__ import annotations

from ...core.backend import BACKEND_FORMAT, DenseCheck, decode_event
from ...errors import CorruptStore
from .schema import REMOVED_BLOCK
from .writes import row_crc

PAGE = 2000

#: The bytes of a store: the main fork of its tables, their indexes, their
#: TOAST tables and those tables' indexes.  Not the free-space and
#: visibility maps (``pg_total_relation_size`` counts them): VACUUM creates
#: them, so they would make a compaction look as if it grew the store.
SIZE = ("SELECT coalesce(sum(pg_relation_size(x.oid)), 0) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " CROSS JOIN LATERAL (SELECT c.oid UNION ALL"
        "  SELECT c.reltoastrelid WHERE c.reltoastrelid <> 0 UNION ALL"
        "  SELECT i.indexrelid FROM pg_index i"
        "  WHERE c.reltoastrelid <> 0 AND i.indrelid = c.reltoastrelid) x(oid)"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'i')")


def stats(b) -> dict:
    out = {"backend": b.kind, "streams": 0, "events": 0, "bytes": 0, "segments": 0,
           "snapshots": 0, "format_version": BACKEND_FORMAT,
           "first_recorded_us": None, "last_recorded_us": None}
    with b.session("info") as conn:
        if not b.tables(conn):
            return out
        s = b.ident
        removed = (f"(SELECT coalesce(sum(n), 0) FROM {s}.removed)"
                   if b.current(conn) else "0")
        row = conn.execute(
            f"SELECT (SELECT position FROM {s}.head) - {removed},"
            f" (SELECT count(*) FROM {s}.streams),"
            f" (SELECT format_version FROM {s}.head),"
            f" (SELECT count(*) FROM {s}.snapshots),"
            f" (SELECT recorded_us FROM {s}.events ORDER BY position LIMIT 1),"
            f" (SELECT recorded_us FROM {s}.events ORDER BY position DESC LIMIT 1),"
            f" ({SIZE})",
            (b.target.schema,)).fetchone()
    (out["events"], out["streams"], out["format_version"], out["snapshots"], out["first_recorded_us"],
     out["last_recorded_us"], out["bytes"]) = row
    out["bytes"] = int(out["bytes"])
    out["events"] = int(out["events"])
    return out


class StoredCheck(DenseCheck):
    """:class:`DenseCheck` for a store whose events may have been removed
    on purpose (module docstring): ``removed`` maps a block of the
    ``removed`` table to its bits as text ('0'/'1', bit 0 = the block's
    first position); ``through`` a stream to its last removed version."""

    def __init__(self, removed: dict[int, str], through: dict[str, int]):
        super().__init__()
        self.removed = removed
        self.through = through

    def add(self, stream: str, version: int, position: int, recorded_us: int) -> None:
        if position > self.position + 1:
            self.covered(self.position + 1, position - 1)
            self.position = position - 1
        if self._skip(position, position, False) == position:  # its bit is set
            self.problem("removed", f"position {position} is recorded as removed but holds "
                         "an event", stream=stream, version=version, position=position)
        if self.versions.get(stream, 0) + 1 < version <= self.through.get(stream, 0) + 1:
            self.versions[stream] = version - 1  # the versions skipped were removed
        super().add(stream, version, position, recorded_us)

    def _skip(self, p: int, hi: int, removed: bool) -> int:
        """The first position in ``p..hi`` that is not (``removed``) or is
        (not ``removed``) recorded as removed; ``hi + 1`` when none."""
        end = "0" if removed else "1"
        while p <= hi:
            block, i = divmod(p - 1, REMOVED_BLOCK)
            stop = min(REMOVED_BLOCK, i + hi - p + 1)
            bits = self.removed.get(block)
            j = (i if removed else -1) if bits is None else bits.find(end, i, stop)
            if j >= 0:
                return p + j - i
            p += stop - i
        return hi + 1

    def covered(self, lo: int, hi: int) -> None:
        """Positions ``lo..hi`` hold no event: each must have been removed."""
        p = self._skip(lo, hi, True)
        while p <= hi:
            end = self._skip(p, hi, False) - 1
            what = f"position {p}" if end == p else f"positions {p} to {end}"
            self.problem("positions", f"{what}: no event, and none was removed there",
                         position=p)
            p = self._skip(end + 1, hi, True)


def verify(b) -> list[dict]:
    """Everything is read in one REPEATABLE READ, read-only transaction: the
    head, the removed positions, the events, the catalogue, the snapshots
    and the checkpoints as one moment's commits left them.  Read in several
    transactions (as readers do), a writer or a compaction committing
    between two of them makes a sound store look damaged (a catalogue row
    newer than the events read before it).  The snapshot held costs the
    server only what any long read costs (VACUUM keeps older row versions
    until it ends); writers never wait for it."""
    with b.session("verify") as conn:
        if not b.tables(conn):
            return []
        current = b.current(conn)
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        check = _check(b, conn, current)
        conn.execute("COMMIT")
    return check.problems


def _check(b, conn, current: bool) -> "StoredCheck":
    head = conn.execute(f"SELECT position FROM {b.ident}.head").fetchone()[0]
    blocks, through = [], {}
    if current:
        blocks = conn.execute(f"SELECT block, bits::text, n FROM {b.ident}.removed").fetchall()
        through = dict(conn.execute(
            f"SELECT stream, through FROM {b.ident}.removed_versions").fetchall())
    check = StoredCheck({block: bits for block, bits, _n in blocks}, through)
    for block, bits, n in blocks:
        if bits.count("1") != n:
            check.problem("removed", f"the removed positions' block {block} counts {n} but "
                          f"marks {bits.count('1')}")
    _events(b, conn, check)
    if check.position < head:
        check.covered(check.position + 1, head)
    elif check.position > head:
        check.problem("head", f"the head row says position {head}, the events end at "
                      f"{check.position}", position=head)
    versions = _streams(b, conn, check)
    _snapshots(b, conn, check, versions)
    rows = conn.execute(f"SELECT name, position FROM {b.ident}.checkpoints ORDER BY name")
    for name, position in rows.fetchall():
        if position > head:
            check.problem("checkpoint", f"checkpoint {name!r} is at position "
                          f"{position}, past the store's head ({head}); its consumer "
                          "will resume at the head", severity="warning", position=position)
    return check


def _events(b, conn, check: DenseCheck) -> None:
    sql = (f"SELECT stream, version, position, recorded_us, body, id::text, type, crc"
           f" FROM {b.ident}.events WHERE position > %s ORDER BY position LIMIT %s")
    last = 0
    while True:
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


def _streams(b, conn, check: StoredCheck) -> dict[str, int]:
    """Check the catalogue against the events and the removed versions;
    returns the catalogue's versions."""
    versions: dict[str, int] = {}
    sql = (f"SELECT stream, version FROM {b.ident}.streams WHERE stream > %s"
           " ORDER BY stream LIMIT %s")
    last = ""
    while True:
        rows = conn.execute(sql, (last, PAGE)).fetchall()
        for stream, version in rows:
            versions[stream] = version
            # every event removed: nothing stored, and the removed versions say so
            want = check.versions.get(stream, check.through.get(stream, 0))
            if version != want:
                check.problem("stream", f"the streams table says version {version}, the "
                              f"events end at {want}", stream=stream, version=version)
        if len(rows) < PAGE:
            break
        last = rows[-1][0]
    for stream in check.versions.keys() - versions.keys():
        check.problem("stream", "events of a stream missing from the streams table",
                      stream=stream)
    return versions


def _snapshots(b, conn, check: DenseCheck, versions: dict[str, int]) -> None:
    rows = conn.execute(f"SELECT stream, version FROM {b.ident}.snapshots").fetchall()
    for stream, version in rows:
        have = versions.get(stream, 0)
        if version > have:
            check.problem("snapshot", f"a snapshot at version {version} of a stream at "
                          f"version {have}", stream=stream, version=version)
