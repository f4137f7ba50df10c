"""A stream's directory: its id file, its segment files and their indexes.

A stream lives in ``streams/<kk>/<key>/`` where ``key`` is the first 32 hex
digits of SHA-256 of the stream id's UTF-8 bytes and ``kk`` its first two: the
id itself never becomes a path, so ``../x``, ``CON`` or ``A``/``a`` are just
different keys, on any file system.  The directory holds:

* ``id`` -- the stream id, UTF-8, written before the directory appears
  (created as ``.tmp-*`` then renamed);
* ``NNNNNNNNNNNNNNNN.seg`` -- segments named by the first version they hold,
  one ``EvS1`` frame per event (:mod:`evstore.disk.format`);
* ``NNNNNNNNNNNNNNNN.idx`` -- their offset indexes, one entry per version.

:class:`StreamDir` owns those files (never through a symbolic link) and
nothing of what they hold; :class:`evstore.disk.streamlog.StreamLog` reads
and writes the records.
"""
from __future__ import annotations

import os

from ..plain import sha256_hex  # not hashlib's: start-up time (see there)
from ..backends.files.names import ID_FILE, STREAM_IDX as IDX_SUFFIX, STREAM_SEG as SEG_SUFFIX
from ..errors import CorruptStore
from .segment import check_not_link, listdir, nofollow, open_file, stable_listdir


def stream_key(stream: str) -> str:
    return sha256_hex(stream.encode("utf-8"))[:32]


def stream_dir(root: str, stream: str) -> str:
    key = stream_key(stream)
    return os.path.join(root, key[:2], key)


class StreamDir:
    """The files of one stream's directory, and the descriptors open on them."""

    def __init__(self, root: str, stream: str):
        self.stream = stream
        self.dir = stream_dir(root, stream)
        self._firsts: list[int] = []
        self._fds: dict[int, int] = {}
        self._writer = None
        self._widx = None
        self._writer_first = 0
        self._known = False  #: the id file was seen (it is never removed but by repair)
        self._dir_ok = False  #: the directory was checked not to be a symbolic link

    # -- files ---------------------------------------------------------------
    def exists(self) -> bool:
        return os.path.isfile(os.path.join(self.dir, ID_FILE))

    def path(self, first: int, suffix: str = SEG_SUFFIX) -> str:
        return os.path.join(self.dir, f"{first:016d}{suffix}")

    def _check_dir(self) -> None:
        """Refuse a stream directory (or ``streams/XX`` or ``streams``) that
        is a symbolic link: files opened through it would land outside the
        store.  Checked once per handle, when it first touches the directory."""
        if not self._dir_ok:
            shard = os.path.dirname(self.dir)
            check_not_link(os.path.dirname(shard))
            check_not_link(shard)
            self._dir_ok = check_not_link(self.dir)

    def list_segments(self) -> list[int]:
        self._check_dir()
        try:
            names = stable_listdir(self.dir)
        except FileNotFoundError:
            names = []
        firsts = sorted(int(n[:16]) for n in names
                        if n.endswith(SEG_SUFFIX) and len(n) == 20 and n[:16].isdigit())
        self._firsts = firsts
        return firsts

    def fd(self, first: int) -> int:
        fd = self._fds.get(first)
        if fd is None:
            self._check_dir()
            fd = open_file(self.path(first), os.O_RDONLY)
            self._fds[first] = fd
        return fd

    def close(self) -> None:
        self._drop_all_fds()
        self._close_writer()

    def _close_writer(self) -> None:
        """(StreamLog's: a directory alone has no writer.)"""

    def _index_get(self, first: int, i: int) -> int | None:
        path = self.path(first, IDX_SUFFIX)
        self._check_dir()
        try:
            fd = open_file(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            data = os.pread(fd, 8, 8 * i)
        finally:
            os.close(fd)
        return int.from_bytes(data, "big") if len(data) == 8 else None

    def _index_len(self, first: int) -> int:
        try:
            return os.stat(self.path(first, IDX_SUFFIX)).st_size // 8
        except FileNotFoundError:
            return 0

    def _drop_all_fds(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _drop_fd(self, first: int) -> None:
        fd = self._fds.pop(first, None)
        if fd is not None:
            os.close(fd)

    # -- the id file (lock holder only) ----------------------------------------------
    def create(self) -> bool:
        """Make the directory with its ``id`` file, atomically.  True if it
        wrote anything."""
        if self._known:
            return False
        if self._id_state() == "ok":
            self._known = True
            return False
        if os.path.isdir(self.dir):
            # The directory is only ever renamed into place with its id, so
            # here a power cut lost (part of) the id file, or someone deleted
            # it.  The directory's name is the hash of this stream's id, so
            # the id is known for certain: write it back, and never wipe the
            # segments (they may hold committed events).
            self._write_id()
            self._known = True
            return True
        parent = os.path.dirname(self.dir)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".tmp-{os.path.basename(self.dir)}-{os.getpid()}")
        if os.path.islink(tmp) or os.path.isfile(tmp):
            os.unlink(tmp)  # a leftover (or a planted link) is removed, never followed
        if os.path.isdir(tmp):
            for name in listdir(tmp):
                os.unlink(os.path.join(tmp, name))
        else:
            os.mkdir(tmp)
        with open(os.path.join(tmp, ID_FILE), "wb", opener=nofollow) as f:
            f.write(self.stream.encode("utf-8"))
        os.rename(tmp, self.dir)
        self._known = True
        return True

    def _id_state(self) -> str:
        """"ok", or "missing" when the id file is absent, empty or a cut-short
        prefix of the id -- what a power cut leaves of an unsynced id.  Any
        other content is not this stream's directory: CorruptStore."""
        self._check_dir()
        try:
            with open(os.path.join(self.dir, ID_FILE), "rb", opener=nofollow) as f:
                stored = f.read()
        except FileNotFoundError:
            return "missing"
        want = self.stream.encode("utf-8")
        if stored == want:
            return "ok"
        if want.startswith(stored):
            return "missing"
        raise CorruptStore(
            f"stream directory {self.dir} belongs to "
            f"{stored.decode('utf-8', 'replace')!r}, not {self.stream!r}")

    def _write_id(self) -> None:
        path = os.path.join(self.dir, ID_FILE)
        tmp = f"{path}.tmp-{os.getpid()}"
        self._check_dir()
        with open(tmp, "wb", opener=nofollow) as f:
            f.write(self.stream.encode("utf-8"))
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def check_id(self) -> None:
        """Refuse a directory that holds another stream's id.  An absent or
        cut-short id is accepted: it is what a power cut leaves of a stream
        being created, and the next writer (or reconciliation) rewrites it."""
        self._id_state()
