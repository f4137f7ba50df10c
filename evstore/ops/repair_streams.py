"""Repair, pass B: rebuild every stream log that differs from the (repaired)
commit log, segment by segment.

The commit log is the truth; a stream-log segment that already holds exactly
the right bytes is not touched, so a sound store stays byte for byte as it was.
"""
from __future__ import annotations

import os
from array import array


from ..disk.format import LOG_MAGIC, STREAM_MAGIC, encode_frame
from ..disk.records import stream_payload
from ..model import unpack
from ..disk.segment import fsync_dir
from ..disk.streamdir import stream_key
from . import layout as L
from ..disk.streamwalk import SOUND, UNREADABLE, stream_records
from ..disk.frames import frame_at, walk
from ..disk.heads import batch_head
from .stream_check import check_stream
from .repair_common import LogPlan, _merge, _starts_at, _line


class StreamRebuilder:
    """Pass B; mixed into ``repairer._Repair``."""

    # -- B. stream logs ---------------------------------------------------------------------
    def fix_streams(self, plan: LogPlan) -> None:
        known = {stream_key(s): s for s in plan.versions}
        digests = {s: tuple(d) for s, d in plan.digests.items()}
        todo = []
        seen = set()
        for key, path in L.stream_dirs(self.sroot) if os.path.isdir(self.sroot) else ():
            if key is None:
                continue
            r = check_stream(self.dir, key, path, plan.head, known, digests, bases=self.bases)
            seen.add(key)
            stream = r.stream
            if stream is not None and plan.versions.get(stream) \
                    and plan.versions[stream] < self._floor(stream):
                self.drop_removed_stream_dir(path, stream)
                continue
            if stream is None or not plan.versions.get(stream):
                self.drop_stream_dir(path, stream, r)
                continue
            if r.rebuild or r.mismatch or r.beyond:
                todo.append((stream, path, r))
                continue
            for first in r.bad_index:
                self.reindex_stream_segment(path, first)
            if r.id_bad:
                self.write_id(path, stream)
        for stream in plan.versions:
            key = stream_key(stream)
            if plan.versions[stream] < self._floor(stream):
                continue  # every event of it was removed: no log to rebuild
            if key not in seen:
                todo.append((stream, os.path.join(self.sroot, key[:2], key), None))
        if not todo:
            return
        if self.dry:
            for stream, path, r in todo:
                why = "missing" if r is None else ("uncommitted records after its end"
                                                   if not (r.rebuild or r.mismatch) else
                                                   "records differ from the commit log")
                self.act("rebuild", f"stream log rebuilt from the commit log ({why})", path,
                         stream=stream, versions=(1, plan.versions[stream]))
            return
        refs = self.truth_refs({s for s, _p, _r in todo})
        self.progress.begin("rebuild streams", total_events=sum(plan.versions[s] for s, _p, _r in todo))
        try:
            for stream, path, r in todo:
                self.rebuild_stream(stream, path, r, refs.get(stream, []), plan.versions[stream])
                self.progress.advance(events=plan.versions[stream])
        finally:
            self.progress.end()

    def _first_version(self, refs) -> int:
        """The first version the commit log holds of a stream (its frames'
        ``refs``), 1 when it holds none."""
        for path, off in refs[:1]:
            with L.opened(path) as fd:
                return batch_head(frame_at(fd, LOG_MAGIC, off, os.fstat(fd).st_size))[1]
        return 1

    def truth_refs(self, streams: set) -> dict:
        """(segment path, offset) of each commit-log frame of ``streams``."""
        refs: dict[str, list] = {}
        for first in L.numbered(L.listdir(self.ldir), L.LOG_SEG):
            path = L.seg_path(self.ldir, first, L.LOG_SEG)
            with L.opened(path) as fd:
                for ok, off, _end, x in walk(fd, LOG_MAGIC, os.fstat(fd).st_size):
                    if ok:
                        stream = batch_head(x)[0]
                        if stream in streams:
                            refs.setdefault(stream, []).append((path, off))
        return refs

    def _truth_records(self, refs):
        """Yield (version, position, us, frame bytes) of a stream's records,
        made from its commit-log frames."""
        from .checks import split_blobs

        for path, off in refs:
            with L.opened(path) as fd:
                payload = frame_at(fd, LOG_MAGIC, off, os.fstat(fd).st_size)
            stream, fv, fp, us, n, hl = batch_head(payload)
            for i, blob in enumerate(split_blobs(payload, hl, n)):
                yield fv + i, fp + i, us, encode_frame(STREAM_MAGIC,
                                                      stream_payload(fv + i, fp + i, us, blob))

    def rebuild_stream(self, stream: str, path: str, r, refs, version: int) -> None:
        if not os.path.isdir(path):
            # like the core: the directory appears with its id already inside
            parent = os.path.dirname(path)
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f".tmp-{os.path.basename(path)}-repair-{os.getpid()}")
            os.makedirs(tmp, exist_ok=True)
            self._write_atomic(os.path.join(tmp, L.ID_FILE), stream.encode("utf-8"))
            os.rename(tmp, path)
            fsync_dir(parent)
            self.act("create", "stream directory was missing; rebuilt from the commit log",
                     path, stream=stream, versions=(1, version))
        elif r is None or r.id_bad:
            self.write_id(path, stream)
        olds = L.numbered(L.listdir(path), L.STREAM_SEG)
        # never below the floor: removed events are not brought back
        start = max(self._floor(stream), self._first_version(refs))
        # segments starting below it hold removed events (the versions from
        # start on are rewritten from the commit log): deleted, not quarantined
        gone = [f for f in olds if f < start]
        for f in gone:
            for suffix in (L.STREAM_SEG, L.STREAM_IDX):
                try:
                    os.unlink(L.seg_path(path, f, suffix))
                except FileNotFoundError:
                    pass
            self.act("delete", "stream segment holding only removed events",
                     L.seg_path(path, f, L.STREAM_SEG), stream=stream)
        olds = [f for f in olds if f not in gone]
        bounds = sorted({start} | {f for f in olds if start <= f <= version
                                   and _starts_at(path, f)})
        truth = (r for r in self._truth_records(refs) if r[0] >= start)
        pending: dict = {}  # version -> [(id, line)] of removed intact records
        kept_total = 0
        for i, lo in enumerate(bounds):
            hi = bounds[i + 1] - 1 if i + 1 < len(bounds) else version
            frames = []
            for _ in range(hi - lo + 1):
                rec = next(truth, None)
                if rec is None:
                    raise RuntimeError(f"stream {stream!r}: the commit log holds fewer events "
                                       f"than its version {version}")
                frames.append(rec)
            kept_total += self._rewrite_stream_segment(stream, path, lo, hi, frames, pending)
        for f in olds:
            if f not in bounds:
                spath = L.seg_path(path, f, L.STREAM_SEG)
                self._drop_stream_records(stream, spath, None, pending,
                                          "segment past the stream's committed end"
                                          if f > version else "a duplicated or misnamed segment")
                for suffix in (L.STREAM_SEG, L.STREAM_IDX):
                    try:
                        os.unlink(L.seg_path(path, f, suffix))
                    except FileNotFoundError:
                        pass
                self.act("delete", "stream segment with nothing committed to keep", spath,
                         stream=stream)
        fsync_dir(path)
        self._settle_removed(refs, pending)

    def _rewrite_stream_segment(self, stream, path, lo, hi, frames, pending) -> int:
        spath = L.seg_path(path, lo, L.STREAM_SEG)
        data = b"".join(f[3] for f in frames)
        entries = array("Q")
        off = 0
        for f in frames:
            entries.append(off)
            off += len(f[3])
        try:
            with open(spath, "rb", opener=L.opener) as fh:
                same = fh.read() == data
        except FileNotFoundError:
            same = False
        if not same:
            by_version = {f[0]: f[3] for f in frames}
            if os.path.exists(spath):
                self._drop_stream_records(stream, spath, by_version, pending,
                                          "not the commit log's record for its version")
            self._write_atomic(spath, data)
            self.act("rewrite", "stream segment rebuilt from the commit log", spath,
                     stream=stream, versions=(lo, hi))
        self._write_index(L.seg_path(path, lo, L.STREAM_IDX), entries, "version", lo,
                          quiet=not same)
        return len(frames)

    def _drop_stream_records(self, stream, spath, by_version, pending, reason) -> None:
        """Quarantine the bytes of ``spath`` that the rebuilt segment does not
        hold, and the intact events among them that the store loses.  With
        ``pending`` (a dict), intact records wait there until the whole
        stream is rebuilt: only those the store no longer holds are kept as
        removed events."""
        with L.opened(spath) as fd:
            removed = []
            for label, off, end, what, x in stream_records(fd):
                if label != SOUND:
                    removed.append((fd, spath, off, end,
                                    what if label == UNREADABLE else f"damaged ({what})"))
                    continue
                v, p, us, hl = what
                if by_version is not None and by_version.get(v) == os.pread(fd, end - off, off):
                    continue
                removed.append((fd, spath, off, end, reason))
                self._removed_event(stream, bytes(x), v, p, pending)
            for item in _merge(removed):
                self.q.keep_range(*item)
                self.act("remove", f"{item[3] - item[2]} bytes: {item[4]}", spath, offset=item[2],
                         bytes=item[3] - item[2], stream=stream)
        self.q.flush()

    def _removed_event(self, stream, payload: bytes, v, p, pending) -> None:
        """An intact record leaves the store: keep it as a recorded event,
        unless it is already in the events file or (decided later, by
        :meth:`_settle_removed`) the store still holds the same event."""
        if any(a <= p <= b for a, b in self.cut_ranges):
            return  # already in the events file, from its commit-log frame
        try:
            rec = unpack(payload)
        except Exception:  # noqa: BLE001 - a record that passed its CRC but does not decode
            return
        line = _line(stream, *rec)
        if pending is None:
            self.q.event(line)
        else:
            pending.setdefault(v, []).append((rec[3], line))

    def _settle_removed(self, refs, pending) -> None:
        if not pending:
            return
        for v, _p, _us, frame in self._truth_records(refs):
            if v in pending:
                eid = unpack(frame[12:-4])[3]
                pending[v] = [x for x in pending[v] if x[0] != eid]
        for v in sorted(pending):
            for _id, line in pending[v]:
                self.q.event(line)
        self.q.flush()

    def drop_removed_stream_dir(self, path: str, stream: str) -> None:
        """The log of a stream whose every event is removed (what an
        interrupted compaction leaves): deleted, not quarantined."""
        self.act("delete", "stream directory whose every event is removed", path, stream=stream)
        if self.dry:
            return
        for name in L.listdir(path):
            p = os.path.join(path, name)
            if name == L.ID_FILE or name.endswith((L.STREAM_SEG, L.STREAM_IDX)):
                os.unlink(p)
        try:
            os.rmdir(path)
        except OSError:
            pass
        fsync_dir(os.path.dirname(path))

    def drop_stream_dir(self, path: str, stream, r) -> None:
        """A stream directory with nothing committed: its records never
        committed (or belong to a stream nobody can name)."""
        if self.dry:
            n = sum(1 for b in r.beyond if b[0] is not None)
            self.q.events += n
            self.act("delete", f"stream directory with no committed event ({n} records moved "
                     "to quarantine)", path, stream=stream)
            return
        for f in L.numbered(L.listdir(path), L.STREAM_SEG):
            spath = L.seg_path(path, f, L.STREAM_SEG)
            self._drop_stream_records(stream or f"<unknown stream, key {os.path.basename(path)}>",
                                      spath, None, None, "no committed event in this stream")
        for name in L.listdir(path):
            p = os.path.join(path, name)
            if name == L.ID_FILE or name.endswith((L.STREAM_SEG, L.STREAM_IDX)):
                os.unlink(p)
            elif os.path.isfile(p):
                self.q.move_in(p)
        try:
            os.rmdir(path)
        except OSError:
            pass
        fsync_dir(os.path.dirname(path))
        self.act("delete", "stream directory with no committed event", path, stream=stream)

    def reindex_stream_segment(self, path: str, first: int) -> None:
        spath = L.seg_path(path, first, L.STREAM_SEG)
        entries = array("Q")
        v = first
        with L.opened(spath) as fd:
            for label, off, _end, what, _x in stream_records(fd):
                if label != SOUND or what[0] != v:
                    break
                entries.append(off)
                v += 1
        self._write_index(L.seg_path(path, first, L.STREAM_IDX), entries, "version", first)

    def write_id(self, path: str, stream: str) -> None:
        ipath = os.path.join(path, L.ID_FILE)
        if not self.dry:
            try:
                with open(ipath, "rb", opener=L.opener) as f:
                    old = f.read()
                if old != stream.encode("utf-8"):
                    self.q.keep(ipath, 0, old, "wrong stream id")
            except FileNotFoundError:
                pass
            self._write_atomic(ipath, stream.encode("utf-8"))
        self.act("rewrite", "stream id file rewritten from the commit log", ipath, stream=stream)
