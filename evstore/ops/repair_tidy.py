"""Repair, pass C: the rest of the store once the logs are right -- snapshots,
checkpoints and settings, temp leftovers, a damaged marker, the generation,
and the final fsync of everything before ``fsync-failed`` is cleared.
"""
from __future__ import annotations

import os

from ..disk.format import FORMAT_VERSION
from ..disk.recovery import current_boot_id
from ..disk.segment import fsync_dir, fsync_file
from . import layout as L
from .checks import marker_problem
from .repair_common import LogPlan


class Tidier:
    """Pass C; mixed into ``repairer._Repair``."""

    # -- C. the rest --------------------------------------------------------------------------
    def tidy(self, plan: LogPlan) -> None:
        """Everything but the logs, in an order that ends with the store
        synced: caches and leftovers out, the marker whole, then sync-state
        and the fsync-failed flag."""
        self.tidy_snapshots(plan)
        self.tidy_checkpoints(plan)
        self.tidy_settings()
        for path in list(L.temp_leftovers(self.dir)):
            self.q.move_in(path)
            self.act("move", "temp file left by an interrupted write, moved to quarantine",
                     path)
        names = L.listdir(self.ldir)
        segs = set(L.numbered(names, L.LOG_SEG))
        for first in L.numbered(names, L.LOG_IDX):
            if first not in segs:
                p = L.seg_path(self.ldir, first, L.LOG_IDX)
                if not self.dry:
                    os.unlink(p)
                self.act("delete", "index without its segment", p)
        self.tidy_marker()
        self.tidy_sync(plan)

    def tidy_snapshots(self, plan: LogPlan) -> None:
        """A snapshot verify finds wrong moves to quarantine: snapshots are
        caches, recomputed from the events when wanted."""
        if not os.path.isdir(os.path.join(self.dir, L.SNAPSHOTS_DIR)):
            return
        try:
            from .checks import snapshot_findings

            found = list(snapshot_findings(self.dir, plan.versions))
        except ImportError:  # no snapshot module: nothing reads them either
            found = []
        for path, why, stream, _version in found:
            self.q.move_in(path)
            self.act("move", f"{why}; moved to quarantine (snapshots are caches: "
                     "'evstore snapshot' makes a new one)", path, stream=stream)

    def tidy_marker(self) -> None:
        """A damaged store marker is kept in quarantine and written again."""
        marker = os.path.join(self.dir, L.MARKER)
        if not marker_problem(self.dir):
            return
        if not self.dry:
            if os.path.exists(marker):
                with open(marker, "rb", opener=L.opener) as f:
                    self.q.keep(marker, 0, f.read(), "damaged store marker")
            import json

            self._write_atomic(marker, json.dumps({"format": "evstore", "format_version":
                                             FORMAT_VERSION}, indent=1).encode() + b"\n")
        self.act("rewrite", "store marker rewritten", marker)

    def tidy_sync(self, plan: LogPlan) -> None:
        """After a failed fsync (or an unreadable sync-state), fsync
        everything and set sync-state to the new head; a sync-state past the
        head is lowered to it; then the fsync-failed flag is cleared, last,
        because writes are refused until it is gone."""
        from ..disk.recovery import save_state

        flag = os.path.join(self.dir, L.FSYNC_FAILED)
        failed = os.path.exists(flag)
        if failed or self.state_msg:
            if not self.dry:
                self.sync_everything()
                save_state(self.dir, current_boot_id(), plan.head)
            self.act("sync", "every segment and directory fsynced; sync-state set to position "
                     f"{plan.head}", os.path.join(self.dir, L.STATE_FILE))
        elif self.synced > plan.head:
            if not self.dry:
                save_state(self.dir, self.boot, plan.head)
            self.act("rewrite", f"sync-state lowered to the commit log's end ({plan.head})",
                     os.path.join(self.dir, L.STATE_FILE))
        if failed:
            if not self.dry:
                os.unlink(flag)
                fsync_dir(self.dir)
            self.act("delete", "fsync-failed flag cleared: the store is synced again", flag)

    def tidy_checkpoints(self, plan: LogPlan) -> None:
        """A checkpoint file its module calls damaged cannot be read by its
        consumer: it moves to quarantine, and that consumer starts again
        from the beginning (delivery is at least once, so it sees events
        twice, never misses one).  Checkpoints past the head stay: their
        consumers resume at the head."""
        if not os.path.isdir(os.path.join(self.dir, L.CHECKPOINTS_DIR)):
            return
        try:
            from ..backends.files.checkpoints import verify_files
        except ImportError:
            return
        self._quarantine(verify_files(self.dir, dict(plan.versions), plan.head),
                         "damaged checkpoint", "its consumer starts again from the first event")

    def tidy_settings(self) -> None:
        """Damaged settings cannot be trusted (a changed snapshot_every or
        reducer): the file moves to quarantine and the defaults apply until
        ``evstore config`` sets them again."""
        from ..backends.files.settings import verify_file

        self._quarantine(verify_file(self.dir), "damaged settings",
                         "the defaults apply until 'evstore config' sets them again")

    def _quarantine(self, findings, what: str, after: str) -> None:
        """Move the file of each error among a document check's
        ``findings`` into quarantine, saying what follows from it."""
        for item in list(findings):
            if item.get("severity", "error") != "error" or not item.get("file"):
                continue
            path = os.path.join(self.dir, item["file"])
            if os.path.lexists(path):
                self.q.move_in(path)
                self.act("move", f"{item.get('message', what)}; moved to quarantine: {after}", path)

    def mark_generation(self) -> None:
        """Replace the marker with an identical file: its new inode tells
        open EventStore handles that files changed under them (the core can
        compare ``os.stat(marker)`` to what it saw when it opened; see
        docs/OPERATIONS.md, "Other handles")."""
        import json

        marker = os.path.join(self.dir, L.MARKER)
        if marker_problem(self.dir) is None:
            with open(marker, "rb", opener=L.opener) as f:
                data = f.read()
        else:
            data = json.dumps({"format": "evstore", "format_version": FORMAT_VERSION},
                              indent=1).encode() + b"\n"
        self._write_atomic(marker, data)

    def sync_everything(self) -> None:
        for root, dirs, files in os.walk(self.dir):
            rel = L.rel(self.dir, root).split(os.sep)[0]
            if rel == L.QUARANTINE:
                dirs[:] = []
                continue
            for name in files:
                if name.endswith((L.LOG_SEG, L.STREAM_SEG)) or name in (L.ID_FILE, L.MARKER):
                    with L.opened(os.path.join(root, name)) as fd:
                        fsync_file(fd)
            fsync_dir(root)
