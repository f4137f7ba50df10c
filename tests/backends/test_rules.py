"""The expected-version and retry rule as a pure function (evstore.core.rules):
the table every backend's append obeys."""
from __future__ import annotations

import pytest

from evstore.core.rules import (
    ANY, NO_STREAM, STREAM_EXISTS, AlreadyStored, Stored, continues, decide,
    parse_expected, retry_window,
)
from evstore.errors import UsageError, WrongExpectedVersion

A, B, C, D = "a", "b", "c", "d"  # ids


def stored(*ids, first_version=1, first_position=10):
    return [Stored(i, first_version + n, first_position + n) for n, i in enumerate(ids)]


def test_parse_expected():
    assert parse_expected(None) == ANY and parse_expected(NO_STREAM) == 0
    assert parse_expected("exists") == STREAM_EXISTS and parse_expected("12") == 12
    for bad in (-1, True, "x", "-3", 1.5):
        with pytest.raises(UsageError):
            parse_expected(bad)


@pytest.mark.parametrize("expected, current, count, window", [
    (ANY, 0, 2, None), (ANY, 5, 2, (4, 5)), (ANY, 1, 3, (1, 1)),
    (STREAM_EXISTS, 0, 1, None), (STREAM_EXISTS, 3, 1, (3, 3)),
    (0, 0, 2, None), (0, 5, 2, (1, 2)), (3, 5, 4, (4, 5)), (5, 3, 1, None), (3, 3, 1, None),
])
def test_retry_window(expected, current, count, window):
    assert retry_window(expected, current, count) == window


def test_writes():
    assert decide("s", ANY, 0, [A]) is None
    assert decide("s", ANY, 2, [A], stored(C, D)[1:]) is None
    assert decide("s", 2, 2, [A]) is None
    assert decide("s", STREAM_EXISTS, 1, [A], stored(C)) is None


def test_conflicts_on_versions():
    with pytest.raises(WrongExpectedVersion):
        decide("s", STREAM_EXISTS, 0, [A])
    with pytest.raises(WrongExpectedVersion):
        decide("s", 4, 2, [A])
    with pytest.raises(WrongExpectedVersion) as e:
        decide("s", 1, 2, [A], stored(C, first_version=2))
    assert "only part" not in str(e.value)


def test_retries():
    got = decide("s", 0, 5, [A, B], stored(A, B))
    assert got == AlreadyStored(2, 11, 2)
    assert decide("s", ANY, 2, [A, B], stored(A, B)) == AlreadyStored(2, 11, 2)
    assert decide("s", STREAM_EXISTS, 2, [A, B], stored(A, B)) == AlreadyStored(2, 11, 2)


@pytest.mark.parametrize("expected", [0, ANY, STREAM_EXISTS])
def test_partial_retries_are_conflicts(expected):
    for ids, have in (([A, C], stored(A, B)), ([B, A], stored(A, B)), ([A, B, C], stored(A, B))):
        with pytest.raises(WrongExpectedVersion, match="only part"):
            decide("s", expected, 2, ids, have)


def test_continues():
    assert continues("s", 1, 1, 5, 0, 0, 5) is None
    assert "position 1" in continues("s", 1, 1, 5, 0, 1, 0)
    # without gaps (a backend that does not record them): exactly
    assert "position 3" in continues("s", 1, 3, 5, 0, 1, 0)
    assert "version 3" in continues("s", 3, 2, 5, 0, 1, 0)
    # with gaps: events removed upstream; a stream may start past 1 or go on past its version
    assert continues("s", 3, 2, 5, 0, 1, 0, gaps=True) is None
    assert continues("s", 5, 2, 5, 3, 1, 0, gaps=True) is None
    assert "version 1" in continues("s", 1, 2, 5, 1, 1, 0)  # never back
    assert "version 3" in continues("s", 3, None, 5, 1, 1, 0)  # renumbered: exactly
    assert "earlier" in continues("s", 1, 1, 4, 0, 0, 5)
    assert continues("s", 1, None, 4, 0, 7, 5) is None  # renumbered: older times allowed
    # a backend that records gaps: forward gaps are removed events, never backwards
    assert continues("s", 1, 3, 5, 0, 1, 0, gaps=True) is None
    assert continues("s", 3, 2, 5, 1, 1, 0, gaps=True) is None
    assert "position 1" in continues("s", 2, 1, 5, 1, 1, 0, gaps=True)
    assert "version 1" in continues("s", 1, 2, 5, 1, 1, 0, gaps=True)
    assert "version 3" in continues("s", 3, None, 5, 1, 1, 0, gaps=True)  # renumbering: exact
