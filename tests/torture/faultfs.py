"""A fault-injecting file layer for evstore's torture tests (no LD_PRELOAD).

:class:`Shim` monkeypatches the ``os`` functions evstore writes with
(``open``/``write``/``pwrite``/``ftruncate``/``fsync``/``fdatasync``/
``rename``/``replace``/``mkdir``/``unlink``/``rmdir``), ``builtins.open`` for
files opened for writing, and ``evstore.disk.segment._fdatasync`` (captured at
import time, so patching ``os.fdatasync`` alone would miss it).  Only paths
under ``root`` are tracked; everything else passes through.

It does two jobs:

* **recording** (power loss): every namespace change (create, mkdir, rename,
  unlink) and every data change (write, truncate, whole-content ``set`` for
  buffered file objects) is logged per inode, together with every
  ``fsync``/``fdatasync`` (of files and of directories).  :func:`crash_image`
  then builds a state a real power cut after op *k* could leave (the real
  file system plays the page cache; the model plays the disk):

  - a file's data up to its last fsync is kept; its later (unsynced) writes
    are all lost, all kept, a prefix of them kept with the last one torn at
    an arbitrary byte, or an arbitrary subset kept (each possibly torn);
  - a namespace change is durable once its directory (the destination's,
    for a rename) was fsynced after it; undurable ones may each be undone,
    and undoing one undoes every later change to the same directory entry.
    Inodes unreachable from ``root`` are gone.

* **faults** (I/O errors): the *n*-th call of a kind (``write``, ``fsync``,
  ``fdatasync``, ``sync`` = either) on a tracked fd raises ``OSError(errno)``,
  once or for every later call too (``sticky``); a write fault may first
  write part of the buffer for real (a short write), failing the next call.

:func:`install_from_env` installs a fault plan in a CLI subprocess (see the
``sitecustomize`` written by ``test_torture_ioerrors.py``).
"""
from __future__ import annotations

import builtins
import errno as _errno
import os
import random
import stat

_real = {name: getattr(os, name) for name in (
    "open", "close", "write", "pwrite", "ftruncate", "fsync", "fdatasync",
    "rename", "replace", "mkdir", "unlink", "rmdir")}
_real_open = builtins.open


class _FileProxy:
    """A buffered file opened for writing: its content is logged (as one
    ``set``) when it is flushed for an fsync and when it is closed."""

    def __init__(self, shim, f, ino):
        object.__setattr__(self, "_shim", shim)
        object.__setattr__(self, "_f", f)
        object.__setattr__(self, "_ino", ino)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __setattr__(self, name, value):
        setattr(self._f, name, value)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        return iter(self._f)

    def _snapshot(self):
        if self._f.closed:
            return
        self._f.flush()
        fd = self._f.fileno()
        with _real_open(f"/proc/self/fd/{fd}", "rb") as r:  # fd may be write-only
            self._shim._log(("set", self._ino, r.read()))

    def close(self):
        if not self._f.closed:
            self._snapshot()
            self._shim._fds.pop(self._f.fileno(), None)
            self._shim._proxies.pop(self._f.fileno(), None)
        self._f.close()


class Shim:
    def __init__(self, root, record=True, faults=()):
        self.root = os.path.realpath(str(root))
        self.root_ino = os.stat(self.root).st_ino
        self.record = record
        self.ops: list[tuple] = []
        self._fds: dict[int, tuple[int, bool]] = {}  # fd -> (ino, append)
        self._proxies: dict[int, _FileProxy] = {}
        self.faults = list(faults)  # dicts: kind, nth, errno, sticky, partial
        self.counts = {"write": 0, "fsync": 0, "fdatasync": 0, "sync": 0}
        self.fired: list[tuple] = []
        self._armed: dict[int, int] = {}  # fd -> errno for the next write
        self._saved = {}
        self.active = False
        self._ids: dict[int, int] = {self.root_ino: self.root_ino}  # real ino -> model id
        self._next = 1

    def _id(self, ino, new=False):
        """The model id of a real inode; ``new``: it was just created (inode
        numbers are reused after unlink, files must not be)."""
        if new or ino not in self._ids:
            self._ids[ino] = ("i", self._next)
            self._next += 1
        return self._ids[ino]

    # -- bookkeeping ---------------------------------------------------------
    def _log(self, op):
        if self.record:
            self.ops.append(op)

    def mark(self, *info):
        """Put a marker (e.g. an acknowledgement) into the op log."""
        self._log(("mark",) + info)

    def _tracked(self, path) -> bool:
        if isinstance(path, int):
            return False
        try:
            p = os.path.abspath(os.fsdecode(path))
        except TypeError:
            return False
        if os.path.basename(p) == "writer.lock":
            # the lock holder's line is advice, not store data: faults aimed
            # at "the n-th write" must hit the store's own writes
            return False
        p = os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
        return p == self.root or p.startswith(self.root + os.sep)

    @staticmethod
    def _entry(path):
        p = os.path.abspath(os.fsdecode(path))
        return os.stat(os.path.dirname(p)).st_ino, os.path.basename(p)

    def _ent(self, path):
        d, name = self._entry(path)
        return self._id(d), name

    # -- faults ------------------------------------------------------------------
    def _maybe_fail(self, kind, fd, data=None):
        """Raise the planned error for this call, or return a number of bytes
        to write for real before failing (a short write), or None."""
        if kind == "write" and fd in self._armed:
            e = self._armed.pop(fd)
            self.fired.append((kind, "after-short-write", e, _fd_name(fd)))
            raise OSError(e, os.strerror(e))
        self.counts[kind] += 1
        if kind in ("fsync", "fdatasync"):
            self.counts["sync"] += 1
        for f in self.faults:
            k = f["kind"]
            n = self.counts[k] if k in self.counts and k != "sync" else self.counts["sync"]
            if k == "sync" and kind not in ("fsync", "fdatasync"):
                continue
            if k != "sync" and k != kind:
                continue
            if n == f["nth"] or (f.get("sticky") and n > f["nth"]):
                if kind == "write" and f.get("partial") and data is not None and len(data) > 1 \
                        and n == f["nth"]:
                    part = max(1, int(len(data) * f["partial"]))
                    if part < len(data):
                        self._armed[fd] = f["errno"]
                        return part
                self.fired.append((kind, n, f["errno"], _fd_name(fd)))
                raise OSError(f["errno"], os.strerror(f["errno"]))
        return None

    # -- the patched functions -------------------------------------------------------
    def _open(self, path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is not None or not self._tracked(path):
            return _real["open"](path, flags, mode, dir_fd=dir_fd)
        existed = os.path.lexists(path)
        fd = _real["open"](path, flags, mode)
        st = os.fstat(fd)
        mid = self._id(st.st_ino, new=not existed)
        if not existed:
            self._log(("link", *self._ent(path), mid,
                       "dir" if stat.S_ISDIR(st.st_mode) else "file"))
        if flags & os.O_TRUNC and stat.S_ISREG(st.st_mode):
            self._log(("trunc", mid, 0))
        self._fds[fd] = (mid, bool(flags & os.O_APPEND))
        return fd

    def _close(self, fd):
        self._fds.pop(fd, None)
        self._armed.pop(fd, None)
        return _real["close"](fd)

    def _write(self, fd, data):
        if fd not in self._fds:
            return _real["write"](fd, data)
        ino, append = self._fds[fd]
        part = self._maybe_fail("write", fd, data)
        off = os.fstat(fd).st_size if append else os.lseek(fd, 0, os.SEEK_CUR)
        buf = bytes(data) if part is None else bytes(data[:part])
        n = _real["write"](fd, buf)
        self._log(("write", ino, off, buf[:n]))
        return n

    def _pwrite(self, fd, data, offset):
        if fd not in self._fds:
            return _real["pwrite"](fd, data, offset)
        ino, _ = self._fds[fd]
        part = self._maybe_fail("write", fd, data)
        buf = bytes(data) if part is None else bytes(data[:part])
        n = _real["pwrite"](fd, buf, offset)
        self._log(("write", ino, offset, buf[:n]))
        return n

    def _ftruncate(self, fd, size):
        r = _real["ftruncate"](fd, size)
        if fd in self._fds:
            self._log(("trunc", self._fds[fd][0], size))
        return r

    def _sync(self, kind, real):
        def sync(fd):
            if fd not in self._fds:
                return real(fd)
            proxy = self._proxies.get(fd)
            if proxy is not None:
                proxy._snapshot()
            self._maybe_fail(kind, fd)
            r = real(fd)
            self._log(("fsync", self._fds[fd][0]))
            return r
        return sync

    def _rename(self, real):
        def rename(src, dst, *a, **kw):
            if a or kw or not (self._tracked(src) and self._tracked(dst)):
                return real(src, dst, *a, **kw)
            s = self._ent(src)
            d = self._ent(dst)
            ino = self._id(os.lstat(src).st_ino)
            r = real(src, dst)
            self._log(("rename", s[0], s[1], d[0], d[1], ino))
            return r
        return rename

    def _mkdir(self, path, mode=0o777, *, dir_fd=None):
        r = _real["mkdir"](path, mode, dir_fd=dir_fd)
        if dir_fd is None and self._tracked(path):
            self._log(("link", *self._ent(path), self._id(os.stat(path).st_ino, new=True), "dir"))
        return r

    def _unlinker(self, name):
        def unlink(path, *, dir_fd=None):
            if dir_fd is None and self._tracked(path):
                e = self._ent(path)
                r = _real[name](path)
                self._log(("unlink", *e))
                return r
            return _real[name](path, dir_fd=dir_fd)
        return unlink

    def _bopen(self, file, mode="r", *a, **kw):
        if not isinstance(file, int) and any(c in mode for c in "wax+") and self._tracked(file):
            existed = os.path.lexists(file)
            f = _real_open(file, mode, *a, **kw)
            mid = self._id(os.fstat(f.fileno()).st_ino, new=not existed)
            if not existed:
                self._log(("link", *self._ent(file), mid, "file"))
            if "w" in mode:
                self._log(("trunc", mid, 0))
            proxy = _FileProxy(self, f, mid)
            self._fds[f.fileno()] = (mid, "a" in mode)
            self._proxies[f.fileno()] = proxy
            return proxy
        return _real_open(file, mode, *a, **kw)

    # -- installing ------------------------------------------------------------------
    def install(self):
        import evstore.disk.segment as seg

        patches = {
            (os, "open"): self._open, (os, "close"): self._close,
            (os, "write"): self._write, (os, "pwrite"): self._pwrite,
            (os, "ftruncate"): self._ftruncate,
            (os, "fsync"): self._sync("fsync", _real["fsync"]),
            (os, "fdatasync"): self._sync("fdatasync", _real["fdatasync"]),
            (seg, "_fdatasync"): self._sync("fdatasync", _real["fdatasync"]),
            (os, "rename"): self._rename(_real["rename"]),
            (os, "replace"): self._rename(_real["replace"]),
            (os, "mkdir"): self._mkdir,
            (os, "unlink"): self._unlinker("unlink"), (os, "remove"): self._unlinker("unlink"),
            (os, "rmdir"): self._unlinker("rmdir"),
            (builtins, "open"): self._bopen,
        }
        for (mod, name), fn in patches.items():
            self._saved[(mod, name)] = getattr(mod, name)
            setattr(mod, name, fn)
        self.active = True
        return self

    def uninstall(self):
        for (mod, name), fn in self._saved.items():
            setattr(mod, name, fn)
        self._saved.clear()
        self.active = False

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.uninstall()


def _fd_name(fd) -> str:
    """The base name of the file ``fd`` is open on ("" when unknown)."""
    try:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    except (OSError, TypeError):
        return ""


# -- crash images -----------------------------------------------------------------------
MODES = ("none", "all", "prefix", "subset", "sectors")

#: What a device persists atomically: one write that spans several sectors
#: may reach the disk with any of them missing (they keep their old bytes,
#: or zeros past the old end of the file, whose size may still have grown).
SECTOR = 512


def _apply(buf: bytearray, op, tear=None):
    if op[0] == "write":
        _, _, off, data = op
        if tear is not None:
            data = data[:tear]
        if len(buf) < off:
            buf.extend(b"\0" * (off - len(buf)))
        buf[off:off + len(data)] = data
    elif op[0] == "trunc":
        size = op[2]
        del buf[size:]
        if len(buf) < size:
            buf.extend(b"\0" * (size - len(buf)))
    elif op[0] == "set":
        data = op[2] if tear is None else op[2][:tear]
        buf[:] = data


def _apply_sectors(buf: bytearray, op, rng: random.Random) -> None:
    """Apply a write of which each sector lands or not, independently."""
    _, _, off, data = op
    old = bytes(buf)
    _apply(buf, op)
    end = off + len(data)
    p = off - off % SECTOR
    while p < end:
        lo, hi = max(p, off), min(p + SECTOR, end)
        if rng.random() < 0.5:
            buf[lo:hi] = old[lo:hi].ljust(hi - lo, b"\0")
        p += SECTOR


def _length(op):
    return len(op[3]) if op[0] == "write" else len(op[2]) if op[0] == "set" else 0


def crash_image(ops, cut: int, root_ino: int, rng: random.Random, mode: str = "prefix",
                keep_ns: float = 0.5, assume_durable=None):
    """The tree ({name: subtree-or-bytes}) a power cut after ``ops[:cut]``
    may leave, choosing what was lost with ``rng`` and ``mode``.

    ``assume_durable(i, op)`` may declare op ``i`` durable though no fsync
    covers it (used to step around a known, separately tested bug)."""
    ops = ops[:cut]
    synced_after: dict[int, int] = {}  # ino -> index of its last fsync
    for i, op in enumerate(ops):
        if op[0] == "fsync":
            synced_after[op[1]] = i
    # namespace
    dropped_keys = set()
    cut_dirs = set()
    dirs: dict[int, dict] = {root_ino: {}}
    kinds: dict[int, str] = {}
    for i, op in enumerate(ops):
        if op[0] == "link":
            keys, ddir = [(op[1], op[2])], op[1]
        elif op[0] == "unlink":
            keys, ddir = [(op[1], op[2])], op[1]
        elif op[0] == "rename":
            keys, ddir = [(op[1], op[2]), (op[3], op[4])], op[3]
        else:
            continue
        durable = synced_after.get(ddir, -1) > i or bool(assume_durable and assume_durable(i, op))
        keep = durable or (ddir not in cut_dirs and rng.random() < keep_ns)
        if any(k in dropped_keys for k in keys) or not keep:
            # directory operations reach the disk in order (journaling file
            # systems): once one is lost, so are the later ones in that directory
            dropped_keys.update(keys)
            cut_dirs.add(ddir)
            continue
        if op[0] == "link":
            kinds[op[3]] = op[4]
            if op[4] == "dir":
                dirs.setdefault(op[3], {})
            dirs.setdefault(op[1], {})[op[2]] = op[3]
        elif op[0] == "unlink":
            dirs.setdefault(op[1], {}).pop(op[2], None)
        else:
            ino = dirs.setdefault(op[1], {}).pop(op[2], None)
            if ino is not None:
                dirs.setdefault(op[3], {})[op[4]] = ino
    # data
    per_ino: dict[int, list] = {}
    for i, op in enumerate(ops):
        if op[0] in ("write", "trunc", "set"):
            per_ino.setdefault(op[1], []).append((i, op))
    contents: dict[int, bytes] = {}
    for ino, lst in per_ino.items():
        last_sync = synced_after.get(ino, -1)
        buf = bytearray()
        unsynced = []
        for i, op in lst:
            if i < last_sync or (assume_durable and assume_durable(i, op)):
                _apply(buf, op)
            else:
                unsynced.append(op)
        m = mode if mode != "mixed" else rng.choice(MODES)
        if m == "all":
            for op in unsynced:
                _apply(buf, op)
        elif m == "prefix" and unsynced:
            k = rng.randint(0, len(unsynced))
            for j, op in enumerate(unsynced[:k]):
                tear = None
                if j == k - 1 and _length(op) and rng.random() < 0.7:
                    tear = rng.randint(0, _length(op))
                _apply(buf, op, tear)
        elif m == "sectors" and unsynced:
            # a prefix of the writes, the last of them sector by sector
            k = rng.randint(1, len(unsynced))
            for j, op in enumerate(unsynced[:k]):
                if j == k - 1 and op[0] == "write":
                    _apply_sectors(buf, op, rng)
                else:
                    _apply(buf, op)
        elif m == "subset":
            for op in unsynced:
                if rng.random() < 0.5:
                    tear = rng.randint(0, _length(op)) if _length(op) and rng.random() < 0.3 else None
                    _apply(buf, op, tear)
        contents[ino] = bytes(buf)

    def build(ino, seen=()):
        out = {}
        for name, child in dirs.get(ino, {}).items():
            if kinds.get(child) == "dir":
                if child not in seen:
                    out[name] = build(child, seen + (child,))
            else:
                out[name] = contents.get(child, b"")
        return out

    return build(root_ino)


def materialize(tree: dict, target) -> None:
    os.makedirs(target, exist_ok=True)
    for name, v in tree.items():
        p = os.path.join(target, name)
        if isinstance(v, dict):
            materialize(v, p)
        else:
            with _real_open(p, "wb") as f:
                f.write(v)


# -- CLI subprocesses --------------------------------------------------------------------
ERRNOS = {"ENOSPC": _errno.ENOSPC, "EIO": _errno.EIO}


def install_from_env() -> Shim | None:
    """``EVSTORE_FAULTFS=ROOT;KIND:NTH:ERRNO[:sticky][:partial=F],...``"""
    spec = os.environ.get("EVSTORE_FAULTFS")
    if not spec:
        return None
    root, _, plan = spec.partition(";")
    faults = []
    for item in filter(None, plan.split(",")):
        parts = item.split(":")
        f = {"kind": parts[0], "nth": int(parts[1]), "errno": ERRNOS[parts[2]]}
        for extra in parts[3:]:
            if extra == "sticky":
                f["sticky"] = True
            elif extra.startswith("partial="):
                f["partial"] = float(extra.split("=", 1)[1])
        faults.append(f)
    return Shim(root, record=False, faults=faults).install()
