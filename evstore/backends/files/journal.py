"""A compaction step's file moves, made all-or-nothing by a journal.

Why: compaction replaces a commit-log segment and its index, or a stream's
first segments, with rewritten files.  Renames of several files are not
atomic together, so a step first writes (and fsyncs) every new file under a
``.tmp-compact-`` name, then writes the journal ``STORE/compacting`` (the
renames and removals still to do, sealed by a check line), then does them,
fsyncs the directories, and removes the journal.  A crash at any instant
leaves either no journal (the step never began: the temp files are
leftovers, removed by the next compaction, listed by ``verify``) or a
journal whose every action is idempotent and whose new files are all on
disk: the next writer, before anything else under the writer lock, does the
rest (:func:`finish`).  Every state in between is one readers already cope
with (docs/FORMAT.md, "Forgetting").

After a step, ``evstore.json`` is replaced by an identical file: every open
handle sees a new marker identity and drops the file descriptors, indexes
and tails it cached (as after a repair), so no writer appends to a file
that was just replaced.
"""
from __future__ import annotations

import json
import os

from ...disk import recovery
from ...core.checkline import seal, unseal
from ...disk.segment import fsync_dir, nofollow, open_file, read_small
from ...errors import CorruptStore
from .names import COMPACT_JOURNAL, MARKER


def path(store_dir: str) -> str:
    return os.path.join(store_dir, COMPACT_JOURNAL)


def pending(store_dir: str) -> bool:
    """Whether a step was interrupted (one ``lstat``)."""
    return os.path.lexists(path(store_dir))


def run(store_dir: str, moves: list, unlink: list, rmdir: list = ()) -> None:
    """Do one step (caller holds the writer lock; the files named by
    ``moves`` are complete and fsynced, and so are the directory entries
    that name them: a journal that survives a power cut must find them).
    Paths are relative to the store."""
    body = json.dumps({"moves": moves, "unlink": unlink, "rmdir": list(rmdir)},
                      ensure_ascii=False).encode("utf-8") + b"\n"
    recovery.write_atomic(path(store_dir), seal(body))
    finish(store_dir)


#: At most this many files held open by :func:`hold` for one step.
_HOLD_MAX = 512


def hold(store_dir: str, moves: list, unlink: list) -> list[int]:
    """Open (read-only) the files a step is about to unlink or replace, just
    before :func:`run`; :func:`release` closes them once the writer lock is
    let go.

    Why: a file's blocks (and its pages in the page cache) are freed by its
    last unlink or close, whichever comes last.  Removing a hundred deleted
    streams frees tens of MB, and doing that inside the step made it hold
    the writer lock for hundreds of milliseconds, which appends wait for.
    Held open, the files only lose their names under the lock, as before
    (a crash finds the same directory entries either way; the file system
    reclaims an unlinked file that was open), and their blocks are freed
    after it.  A file that cannot be opened (gone, too many open files) is
    simply not held: it is freed by the step, as it would have been."""
    fds: list[int] = []
    for rel in [dst for _src, dst in moves] + unlink:
        if len(fds) >= _HOLD_MAX:
            break
        try:
            fds.append(open_file(os.path.join(store_dir, rel), os.O_RDONLY))
        except OSError:
            continue  # (a link is not followed: its target is not ours to hold)
    return fds


def release(fds: list[int]) -> None:
    """Close what :func:`hold` opened (after the lock), concurrently: the
    last close of an unlinked file frees its blocks."""
    _each(os.close, fds)
    fds.clear()


def finish(store_dir: str) -> bool:
    """Do what an interrupted step's journal says is left (under the writer
    lock).  Returns whether there was a journal."""
    jp = path(store_dir)
    try:
        with open(jp, "rb", opener=nofollow) as f:
            raw = f.read()
    except FileNotFoundError:
        return False
    try:
        body, sealed = unseal(raw)
        if not sealed:
            raise ValueError("no check line")
        doc = json.loads(body)
        moves, unlink, rmdir = doc["moves"], doc["unlink"], doc["rmdir"]
        for rel in [p for m in moves for p in m] + unlink + rmdir:
            if not isinstance(rel, str) or rel.startswith("/") or ".." in rel.split("/"):
                raise ValueError(f"a path outside the store: {rel!r}")
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptStore(f"{jp}: damaged compaction journal ({e}); run 'evstore verify' "
                           "for a report") from None
    dirs = set()
    for src, dst in moves:
        s, t = os.path.join(store_dir, src), os.path.join(store_dir, dst)
        if os.path.lexists(s):
            os.replace(s, t)  # a rename never writes through a link
        dirs.add(os.path.dirname(t))
    paths = [os.path.join(store_dir, rel) for rel in unlink]
    _each(_unlink, paths)
    dirs.update(os.path.dirname(p) for p in paths)
    paths = [os.path.join(store_dir, rel) for rel in rmdir]
    _each(_rmdir, paths)  # after every unlink: a directory goes once empty
    dirs.update(os.path.dirname(p) for p in paths)
    _each(_fsync_dir, sorted(dirs, key=len, reverse=True))
    bump_generation(store_dir)
    os.unlink(jp)
    fsync_dir(store_dir)
    return True


def generation(store_dir: str):
    """The identity of ``evstore.json``: it changes with every compaction
    step and every repair that moves files (:func:`bump_generation`), so a
    reader that saw the same identity before and after its work read files
    no such step moved meanwhile.  None when there is no marker."""
    try:
        st = os.stat(os.path.join(store_dir, MARKER))
    except OSError:
        return None
    return st.st_ino, st.st_dev, st.st_mtime_ns


def bump_generation(store_dir: str) -> None:
    """Replace ``evstore.json`` by an identical file: open handles notice a
    new identity and drop their caches of files (FileBackend._check_generation)."""
    marker = os.path.join(store_dir, MARKER)
    # synced: a power cut must never leave a torn marker behind the rename
    recovery.write_atomic(marker, read_small(marker, 1 << 16))


#: Threads that unlink a step's files, remove its directories and fsync its
#: directories at once.  Each of those calls waits for the file system's
#: journal, and the file system commits concurrent ones together: a step
#: that removes a hundred streams waits for a few commits, not a hundred.
#: Each kind of action is finished before the next begins, and all of them
#: before the journal goes, so the order a crash can observe is unchanged.
_PARALLEL = 16


def _each(fn, items: list) -> None:
    """``fn`` of every item, concurrently when there are several; the first
    error is raised once all are done (the journal stays: a later writer
    does the rest)."""
    if len(items) < 4:
        for x in items:
            fn(x)
        return
    # Imported here: concurrent.futures brings logging and traceback (~5 ms),
    # which a short command that only opens the store would pay for nothing.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(items))) as ex:
        futures = [ex.submit(fn, x) for x in items]
    for f in futures:
        f.result()


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def _rmdir(p: str) -> None:
    try:
        os.rmdir(p)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # something else is in it: the directory stays, without an id


def _fsync_dir(d: str) -> None:
    if os.path.isdir(d):
        fsync_dir(d)
