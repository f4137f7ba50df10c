"""Cuts and retention rules as files: the file backend's part of forgetting.

Why two small documents: delete and truncate must be final the moment they
return, and every reader must see them on its next read.  So each is a
checked document in the store directory (``cuts.json``, ``retention.json``:
indented JSON, then the check line of :mod:`evstore.core.checkline`),
replaced atomically (:func:`evstore.disk.recovery.write_atomic`) by a writer
holding the writer lock.  A changed byte is damage (exit 6), never a
different floor.

Readers keep the parsed document with the identity of its file (inode,
device, mtime, size): an atomic replacement always makes a new inode, so one
``stat`` tells them whether what they hold is current.  A read of a store
where nothing was ever forgotten costs one failed ``stat`` per document.

The rules themselves (what a cut means, which rule applies) are
:mod:`evstore.core.forgetting`'s; this module only stores them.
"""
from __future__ import annotations

import json
import os
import threading

from ...core.forgetting import Cut, Retention
from ...core.checkline import seal, unseal
from ...disk.recovery import write_atomic
from ...errors import CorruptStore, StoreIOError
from .docfile import read_document
from .names import CUTS_FILE, RETENTION_FILE


def _identity(st: os.stat_result):
    return st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size


class _Document:
    """One checked JSON document, cached by its file's identity."""

    def __init__(self, path: str, key: str, parse):
        self.path = path
        self.key = key
        self._parse = parse
        #: (identity of the file last parsed or None when absent, its value):
        #: one attribute, so a thread never pairs one file's identity with
        #: another's value
        self._state = (None, parse([]))
        self._mutex = threading.Lock()

    def get(self):
        """The current value (one ``stat`` when the file has not changed)."""
        seen, value = self._state
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            if seen is not None:
                value = self._parse([])
                self._state = (None, value)
            return value
        except OSError as e:
            raise StoreIOError(f"cannot read {self.path}: {e.strerror or e}") from e
        ident = _identity(st)
        if ident == seen:
            return value
        with self._mutex:
            value = self._parse(self.load())
            self._state = (ident, value)
        return value

    def load(self) -> list:
        """The document's items, read and checked now; [] when absent."""
        raw = read_document(self.path)
        return [] if raw is None else decode(raw, self.path, self.key)

    def put(self, items: list, sync: bool) -> None:
        body = "{\"%s\": [\n%s\n]}\n" % (self.key, ",\n".join(
            json.dumps(i, ensure_ascii=False, separators=(", ", ": ")) for i in items))
        try:
            write_atomic(self.path, seal(body.encode("utf-8")), sync=sync)
        except OSError as e:
            raise StoreIOError(f"cannot write {self.path}: {e.strerror or e}") from e


def decode(raw: bytes, where: str, key: str) -> list:
    """The items of a forgetting document; CorruptStore naming ``where``
    when the file is damaged (an unsealed file is damage too: evstore has
    always written these with their check line)."""
    try:
        body, sealed = unseal(raw)
        if not sealed:
            raise ValueError("no check line")
        doc = json.loads(body)
        items = doc[key] if isinstance(doc, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ValueError(f"not an object with a list of {key}")
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        raise CorruptStore(f"{where}: damaged ({e}); run 'evstore verify' for a report") from None
    return items


def _cuts(items: list) -> dict[str, Cut]:
    out = {}
    for i in items:
        try:
            c = Cut(i["stream"], int(i["floor"]), bool(i["hard"]), int(i["deleted"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptStore(f"{CUTS_FILE}: a malformed cut ({e})") from None
        out[c.stream] = c
    return out


def _rules(items: list) -> list[Retention]:
    out = []
    for i in items:
        try:
            out.append(Retention(str(i["target"]), bool(i["prefix"]), i["max_age_us"],
                                 i["max_count"]))
        except (KeyError, TypeError) as e:
            raise CorruptStore(f"{RETENTION_FILE}: a malformed rule ({e})") from None
    return out


def cut_item(c: Cut) -> dict:
    return {"stream": c.stream, "floor": c.floor, "hard": c.hard, "deleted": c.deleted}


def rule_item(r: Retention) -> dict:
    return {"target": r.target, "prefix": r.prefix, "max_age_us": r.max_age_us,
            "max_count": r.max_count}


class ForgetDocuments:
    """The two documents of one store directory."""

    def __init__(self, directory: str):
        self.cuts = _Document(os.path.join(directory, CUTS_FILE), "cuts", _cuts)
        self.rules = _Document(os.path.join(directory, RETENTION_FILE), "rules", _rules)

    def put_cuts(self, cuts: dict[str, Cut], sync: bool) -> None:
        """Under the writer lock."""
        self.cuts.put([cut_item(cuts[s]) for s in sorted(cuts)], sync)

    def put_rules(self, rules: list[Retention], sync: bool) -> None:
        """Under the writer lock."""
        self.rules.put([rule_item(r) for r in sorted(rules, key=lambda r: (r.prefix, r.target))],
                       sync)


def load_cuts(directory: str) -> dict[str, Cut]:
    """The cuts of the store in ``directory``, read now (verify, repair);
    CorruptStore when the document is damaged."""
    return _cuts(_Document(os.path.join(directory, CUTS_FILE), "cuts", _cuts).load())
