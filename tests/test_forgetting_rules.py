"""The pure rules of forgetting (evstore/core/forgetting.py): what delete and
truncate decide under the writer lock, what a tombstone refuses, durations,
and the readable view every reader, follower and compaction applies."""
from __future__ import annotations

import pytest

from evstore.core.forgetting import (Cut, Forgetting, Retention, check_append,
                                     format_duration, parse_duration, plan_cut)
from evstore.core.rules import ANY, STREAM_EXISTS
from evstore.errors import StreamDeleted, StreamNotFound, UsageError, WrongExpectedVersion

DAY = 86400 * 1_000_000


def test_delete_moves_the_floor_past_the_version_and_remembers_it():
    assert plan_cut(None, "s", 5, ANY, None, False) == Cut("s", 6, False, 5)
    assert plan_cut(None, "s", 5, STREAM_EXISTS, None, True) == Cut("s", 6, True, 5)
    assert plan_cut(None, "s", 5, 5, None, False) == Cut("s", 6, False, 5)
    # deleted, continued to 8, deleted again
    assert plan_cut(Cut("s", 6, False, 5), "s", 8, ANY, None, False) == Cut("s", 9, False, 8)


def test_refusals_change_nothing_and_say_why():
    with pytest.raises(StreamNotFound):
        plan_cut(None, "s", 0, ANY, None, False)
    with pytest.raises(StreamNotFound):
        plan_cut(None, "s", 0, ANY, 1, False)
    with pytest.raises(WrongExpectedVersion) as e:
        plan_cut(None, "s", 5, 4, None, False)
    assert (e.value.expected, e.value.current) == (4, 5)
    with pytest.raises(WrongExpectedVersion):
        plan_cut(None, "s", 5, 0, None, False)
    tomb = Cut("s", 6, True, 5)
    assert plan_cut(tomb, "s", 5, ANY, None, True) is tomb  # a hard delete again: done
    for before, hard in ((None, False), (3, False)):
        with pytest.raises(StreamDeleted):
            plan_cut(tomb, "s", 5, ANY, before, hard)


def test_truncate_takes_1_to_version_plus_1_and_floors_never_go_down():
    assert plan_cut(None, "s", 5, ANY, 3, False) == Cut("s", 3, False, 0)
    assert plan_cut(None, "s", 5, ANY, 6, False) == Cut("s", 6, False, 0)
    assert plan_cut(Cut("s", 4, False, 0), "s", 5, ANY, 2, False) == Cut("s", 4, False, 0)
    assert plan_cut(Cut("s", 4, False, 3), "s", 9, ANY, 7, False) == Cut("s", 7, False, 3)
    for bad in (0, 7):
        with pytest.raises(UsageError, match="use 1 to 6"):
            plan_cut(None, "s", 5, ANY, bad, False)


def test_a_tombstone_refuses_appends():
    check_append(None, "s")
    check_append(Cut("s", 6, False, 5), "s")
    with pytest.raises(StreamDeleted) as e:
        check_append(Cut("s", 6, True, 5), "s")
    assert e.value.exit_code == 3


@pytest.mark.parametrize("text, us", [("90d", 90 * DAY), ("12h", 12 * 3600 * 10**6),
                                      ("30m", 1800 * 10**6), ("45s", 45 * 10**6),
                                      (" 1d ", DAY)])
def test_durations(text, us):
    assert parse_duration(text) == us
    assert parse_duration(format_duration(us)) == us


def test_durations_are_spelled_shortest():
    assert [format_duration(parse_duration(t)) for t in ("24h", "60m", "90s", "36h")] == \
        ["1d", "1h", "90s", "36h"]


@pytest.mark.parametrize("bad", ["", "d", "10", "0d", "-1d", "1.5h", "1w", "１d", "1 d", None, 5])
def test_bad_durations(bad):
    with pytest.raises(UsageError):
        parse_duration(bad)


def view(cuts=(), rules=(), now=100 * DAY) -> Forgetting:
    return Forgetting({c.stream: c for c in cuts}, list(rules), now)


def test_an_empty_view_removes_nothing():
    v = view()
    assert v.empty and v.first_version("s", 9) == 1 and v.oldest_us("s") is None
    assert v.readable("s", 1, 0, 9) and v.replay_base("s", 1) == 0
    assert not view(rules=[Retention("x", True, None, 3)]).empty


def test_the_streams_own_rule_wins_then_the_longest_prefix():
    r_all = Retention("", True, DAY, None)
    r_ci = Retention("ci-", True, None, 5)
    r_ci1 = Retention("ci-1", True, None, 2)
    own = Retention("ci-10", False, None, 7)
    v = view(rules=[r_all, r_ci1, own, r_ci])
    assert v.rule_for("ci-10") is own
    assert v.rule_for("ci-11") is r_ci1
    assert v.rule_for("ci-2") is r_ci
    assert v.rule_for("x") is r_all
    assert v.counts_versions("ci-2") and not v.counts_versions("x")


def test_first_version_and_readable():
    v = view(cuts=[Cut("t", 4, False, 0), Cut("h", 6, True, 5), Cut("c", 3, False, 0)],
             rules=[Retention("c", False, None, 2), Retention("old", False, DAY, None)])
    assert v.first_version("t", 9) == 4 and v.first_version("h", 5) == 6
    assert v.first_version("h", 9) == 10          # a tombstone: nothing, ever
    assert v.first_version("c", 3) == 3 and v.first_version("c", 9) == 8
    assert [x for x in range(1, 10) if v.readable("t", x, 0, 9)] == list(range(4, 10))
    assert v.oldest_us("old") == 99 * DAY
    assert not v.readable("old", 1, 99 * DAY - 1, 1) and v.readable("old", 1, 99 * DAY, 1)


def test_replay_base():
    v = view(cuts=[Cut("t", 4, False, 0), Cut("d", 6, False, 5), Cut("dt", 8, False, 5)],
             rules=[Retention("r", False, None, 3)])
    assert v.replay_base("plain", 1) == 0
    assert v.replay_base("t", 4) == 3       # truncated: a snapshot at 3 or later
    assert v.replay_base("d", 6) == 0       # deleted at 5, continued: from scratch
    assert v.replay_base("dt", 8) == 7      # ... then truncated as well
    assert v.replay_base("r", 5) == 4       # retention: like a truncate
