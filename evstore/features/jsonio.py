"""JSON in and out, exactly and in streaming fashion.

Input is parsed strictly: NaN/Infinity, numbers that overflow a float,
integers outside 64 bits and a key given twice in one object are errors that
name the line (and column), so that a bad line 3 of 5 is reported before
anything is written.  Output is UTF-8 JSON
with the keys in the order they were given.
"""
from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator

from ..errors import InvalidEvent
from ..model import INT_MAX, INT_MIN

TYPE_CHECKING = False  # not typing's: importing typing costs ~5 ms of start-up
if TYPE_CHECKING:  # annotations only (they stay strings)
    from typing import IO


class _Reject(ValueError):
    pass


def _parse_constant(name: str):
    raise _Reject(f"{name} is not allowed in JSON input")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Reject(f"number {text} is out of range for a 64-bit float")
    return value


def _parse_int(text: str) -> int:
    if len(text) > 21:
        raise _Reject(f"integer {text[:24]}... does not fit in 64 bits")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise _Reject(f"integer {text} does not fit in 64 bits")
    return value


def _object(pairs: list):
    """An object, refusing a key given twice: JSON parsers disagree on which
    value wins, so keeping one would silently change the input."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _value in pairs:
            if key in seen:
                raise _Reject(f"duplicate key {json.dumps(key, ensure_ascii=False)} "
                              "in an object (each key may appear once)")
            seen.add(key)
    return obj


_decoder = json.JSONDecoder(parse_float=_parse_float, parse_int=_parse_int,
                            parse_constant=_parse_constant, object_pairs_hook=_object)


def loads(text: str, where: str = "input"):
    """Parse one JSON document strictly; InvalidEvent names line and column."""
    return _decode(text, where, lambda e: f"{where}: invalid JSON at line {e.lineno}, "
                                          f"column {e.colno}: {e.msg}")


def _decode_line(line: str, lineno: int):
    return _decode(line, None, lambda e: f"line {lineno}, column {e.colno}: invalid JSON: {e.msg}",
                   lineno)


def _decode(text: str, where, syntax_error, lineno: int = 0):
    """Decode strictly; every failure is one InvalidEvent saying where."""
    try:
        return _decoder.decode(text)
    except json.JSONDecodeError as e:
        raise InvalidEvent(syntax_error(e)) from None
    except _Reject as e:
        why = str(e)
    except RecursionError:
        why = "JSON nested too deeply"
    except ValueError as e:  # e.g. Python's limit on integer digits
        why = str(e)
    raise InvalidEvent(f"{where if where is not None else f'line {lineno}'}: {why}")


def iter_documents(stream: IO[bytes], empty_array: str | None = None
                   ) -> Iterator[tuple[str, object]]:
    """Yield (label, value) for each JSON value on ``stream``: NDJSON (one
    value a line, blank lines skipped) or a single JSON array of values.
    Labels are "line N" (or "item N" inside an array) for error messages.
    A leading UTF-8 byte order mark (some Windows editors write one) is
    skipped.  ``empty_array``: the InvalidEvent message for ``[]``, when an
    empty array is a mistake (else it yields nothing, like empty input)."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="strict", newline="\n")
    try:
        first = ""
        lineno = 0
        for raw in text:
            lineno += 1
            if raw.strip():
                first = raw
                break
        if not first:
            return
        if first.lstrip().startswith("["):
            rest = first + text.read()
            items = loads(rest, "stdin")
            if not isinstance(items, list):
                raise InvalidEvent("stdin: expected a JSON array or one JSON object per line")
            if not items and empty_array is not None:
                raise InvalidEvent(empty_array)
            for i, item in enumerate(items, 1):
                yield f"item {i}", item
            return
        yield f"line {lineno}", _decode_line(first, lineno)
        decode = _decoder.decode
        for raw in text:
            lineno += 1
            if raw.strip():
                try:
                    value = decode(raw)
                except Exception:  # noqa: BLE001 - decoded again below, for the one message
                    value = _decode_line(raw, lineno)
                yield f"line {lineno}", value
    except UnicodeDecodeError as e:
        raise InvalidEvent(f"input is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    finally:
        text.detach()


def dumps(obj) -> str:
    """One JSON value on one line, Unicode kept as is."""
    return json.dumps(obj, ensure_ascii=False)


class Writer:
    """Writes records to a binary stdout as NDJSON or as one JSON array,
    streaming either way.  ``flush_each`` is for followers (tail -f)."""

    def __init__(self, out: IO[bytes], fmt: str = "ndjson", flush_each: bool = False):
        self.out = out
        self.fmt = fmt
        self.flush_each = flush_each
        self.count = 0
        self._buf: list[str] = []

    def write(self, obj) -> None:
        line = json.dumps(obj, ensure_ascii=False)
        if self.fmt == "json":
            line = ("[\n" if self.count == 0 else ",\n") + line
        else:
            line += "\n"
        self.count += 1
        if self.flush_each:
            self.out.write(line.encode("utf-8"))
            self.out.flush()
            return
        self._buf.append(line)
        if len(self._buf) >= 512:
            self._drain()

    def text(self, data: bytes, count: int) -> None:
        """``count`` NDJSON lines already made, each ending in a newline
        (:meth:`EventStore.ndjson_all`); in an array, separated as
        :meth:`write` separates them (a JSON line holds no raw newline)."""
        if not count:
            return
        self._drain()
        if self.fmt == "json":
            from ..core.lines import array_items

            data = array_items(data, self.count == 0)
        self.count += count
        self.out.write(data)
        if self.flush_each:
            self.out.flush()

    def _drain(self) -> None:
        if self._buf:
            self.out.write("".join(self._buf).encode("utf-8"))
            self._buf.clear()

    def close(self) -> None:
        if self.fmt == "json":
            self._buf.append("[]\n" if self.count == 0 else "\n]\n")
        self._drain()
        self.out.flush()
