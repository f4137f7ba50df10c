"""evstore.plain's stand-ins give what the standard library pieces they
replace give (they exist only to keep those imports off a short command's
start-up: bench/README.md, "CLI start-up")."""
from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import pickle
import types
import typing

from hypothesis import given
from hypothesis import strategies as st

from evstore import plain
from evstore.disk.commitlog import Tail
from evstore.disk.frames import ScanResult
from evstore.disk.streamtail import StreamTail
from evstore.model import NewEvent, RecordedEvent


def _twins(make):
    """The same class body under dataclasses and under evstore.plain."""
    return make(dataclasses.dataclass), make(plain.dataclass)


def _record(decorate):
    @decorate
    class Rec:
        """doc"""

        end: int
        status: str
        reason: str = ""
        cut: tuple | None = None

        def twice(self) -> int:
            return 2 * self.end

    return Rec


def test_dataclass_builds_what_dataclasses_builds():
    real, ours = _twins(_record)
    for args, kw in [((1, "eof"), {}), ((2, "short", "why"), {"cut": (1, 2)}),
                     ((), {"end": 3, "status": "damaged", "reason": "crc"})]:
        a, b = real(*args, **kw), ours(*args, **kw)
        assert repr(a) == repr(b)
        assert vars(a) == vars(b)
        assert b == ours(*args, **kw) and b != ours(99, "x")
        assert b.twice() == a.twice()
    assert (ours(1, "eof") == real(1, "eof")) is False  # another class, as with dataclasses
    assert ours.__hash__ is None and ours.__doc__ == "doc"
    assert ours.__match_args__ == real.__match_args__
    for bad in [(), (1, "eof", "r", None, "extra")]:
        for cls in (real, ours):
            try:
                cls(*bad)
            except TypeError:
                continue
            raise AssertionError((cls, bad))


def test_the_disk_records_keep_their_repr_and_equality():
    assert repr(Tail()) == ("Tail(head=0, seg_first=1, end=0, last_recorded_us=0, trailing='', "
                            "trailing_reason='')")
    assert Tail(head=3) == Tail(3) and Tail(head=3) != Tail()
    t = StreamTail()
    t.cut_from = (1, 2)
    assert repr(t) == ("StreamTail(version=0, seg_first=0, end=0, position=0, recorded_us=0, "
                       "cut_from=(1, 2), cut_reason='')")
    assert ScanResult(10, 1, "eof") == ScanResult(end=10, count=1, status="eof", reason="")


def _event_like(base):
    """The same class body, built by typing.NamedTuple (``base``) or, with
    None, by plain.named_tuple."""
    body = {"__doc__": "doc", "__module__": __name__,
            # strings, as under ``from __future__ import annotations`` (the model's case)
            "__annotations__": {"type": "str", "data": "typing.Any", "id": "str | None"},
            "data": None, "id": None,
            "kind": property(lambda self: self.type.upper())}
    if base is None:
        return plain.named_tuple(type("Ev", (), dict(body)))
    return types.new_class("Ev", (base,), exec_body=lambda ns: ns.update(body))


def test_named_tuple_builds_what_typing_builds():
    real, ours = _event_like(typing.NamedTuple), _event_like(None)
    a, b = real("t", 1), ours("t", 1)
    assert repr(a) == repr(b) and tuple(a) == tuple(b) and a == b and hash(a) == hash(b)
    assert ours._fields == real._fields and ours._field_defaults == real._field_defaults
    assert ours.__mro__[1:] == real.__mro__[1:] == (tuple, object)
    assert ours.__doc__ == "doc" and b.kind == "T"
    assert type(b._replace(data=2)) is ours and b._asdict() == a._asdict()
    assert typing.get_type_hints(ours) == typing.get_type_hints(real)  # (typing wraps them in ForwardRef)


def test_the_model_tuples_pickle_and_compare():
    ev = RecordedEvent("s", 1, 1, "id", "T", {"a": 1}, None, None)
    assert pickle.loads(pickle.dumps(ev)) == ev
    assert NewEvent("T") == ("T", None, None, None)
    assert repr(NewEvent("T")) == "NewEvent(type='T', data=None, metadata=None, id=None)"


@given(st.lists(st.sampled_from(["/", "//", "///", ".", "./", "..", "a", "b c", "é", ""]),
                max_size=8).map("".join))
def test_path_str_is_str_of_path(s):
    assert plain.path_str(s) == str(pathlib.Path(s))
    assert plain.path_str(pathlib.Path(s)) == str(pathlib.Path(s))


def test_path_str_refuses_what_path_refuses():
    for bad in (b"x", 3, None):
        try:
            pathlib.Path(bad)
        except TypeError:
            pass
        else:
            raise AssertionError(bad)
        try:
            plain.path_str(bad)
        except TypeError:
            continue
        raise AssertionError(bad)


@given(st.binary(max_size=300))
def test_sha256_is_hashlibs(data):
    assert plain.sha256_hex(data) == hashlib.sha256(data).hexdigest()
    assert plain.sha256_hex(memoryview(data)) == hashlib.sha256(data).hexdigest()


def test_sha256_of_large_inputs_is_hashlibs():
    for n in (plain.SMALL_HASH, plain.SMALL_HASH + 1, 3 * plain.SMALL_HASH):
        data = bytes(range(256)) * (n // 256) + b"x" * (n % 256)
        assert plain.sha256_hex(data) == hashlib.sha256(data).hexdigest()
