"""decode_rows, the page decoder of the PostgreSQL reader, against
decode_event, the one-row decoder it must agree with exactly."""
from __future__ import annotations

import pytest

from evstore.core.backend import decode_event, decode_rows
from evstore.errors import CorruptStore
from evstore.model import normalize, pack_fields


def _row(n: int, us: int) -> tuple:
    e = normalize({"type": f"T{n}", "data": {"n": n, "b": [1, {"x": None}]}, "metadata": {"m": n}})
    return ("s-1", n, 10 + n, us, pack_fields(e, 1 << 20))


def test_decode_rows_gives_what_decode_event_gives():
    rows = [_row(1, 5_000_000), _row(2, 5_000_000), _row(3, 7_000_001)]
    got = list(decode_rows(rows))
    assert got == [decode_event(*r) for r in rows]
    assert [type(e) for e in got] == [type(decode_event(*rows[0]))] * 3
    assert got[0].recorded_at is got[1].recorded_at  # one datetime per commit time
    assert got[2].recorded_at != got[1].recorded_at


def test_a_row_that_does_not_decode_raises_decode_events_error():
    rows = [_row(1, 5), ("s-1", 2, 12, 5, b"\xc1 not msgpack")]
    it = decode_rows(rows)
    assert next(it).version == 1
    with pytest.raises(CorruptStore, match="the event at position 12 does not decode"):
        next(it)
