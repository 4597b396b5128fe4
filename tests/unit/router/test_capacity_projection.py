"""Capacity headroom, pure: rep and team headroom, utilisation, the projection of hours until
a team is full, and the level marketing paces campaigns by.

Expected values are worked out by hand from the definitions in the module docstring
(headroom of active reps only, utilisation = 1 - headroom / capacity, hours = headroom /
(intake - release), saturated with no free slot or a backlog), not read back from the code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handoff_router.capacity import (
    LEVELS,
    TeamLoad,
    Thresholds,
    headroom_level,
    hours_until_saturation,
    per_hour,
    rep_headroom,
    team_load,
    utilisation,
)
from handoff_schemas import CapacityLevel

OK, BUSY, SATURATED = CapacityLevel.OK, CapacityLevel.BUSY, CapacityLevel.SATURATED
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

rates = st.floats(min_value=0, max_value=10_000, allow_nan=False, allow_infinity=False)
headrooms = st.integers(min_value=0, max_value=100_000)
ratios = st.floats(min_value=0, max_value=1, allow_nan=False)


def load(**overrides: object) -> TeamLoad:
    values: dict[str, object] = {
        "team_id": "t1",
        "name": "Inbound",
        "capacity": 10,
        "working": 4,
        "headroom": 6,
        "backlog": 0,
        "oldest_queued_at": None,
        "intake_per_hour": 0.0,
        "release_per_hour": 0.0,
        **overrides,
    }
    return TeamLoad(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("capacity", "working", "active", "expected"),
    [
        (5, 0, True, 5),
        (5, 3, True, 2),
        (5, 5, True, 0),
        (2, 5, True, 0),  # capacity lowered below what the rep works: no room, never negative
        (5, 0, False, 0),  # paused: no room however empty
        (0, 0, True, 0),
    ],
)
def test_rep_headroom(capacity: int, working: int, active: bool, expected: int) -> None:
    assert rep_headroom(capacity, working, active=active) == expected


@pytest.mark.parametrize(
    ("capacity", "headroom", "expected"),
    [(10, 10, 0.0), (10, 6, 0.4), (10, 2, 0.8), (10, 0, 1.0), (4, 1, 0.75), (0, 0, 1.0)],
)
def test_utilisation_is_the_share_of_slots_in_use(
    capacity: int, headroom: int, expected: float
) -> None:
    assert utilisation(capacity, headroom) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("headroom", "intake", "release", "expected"),
    [
        (6, 3.0, 1.0, 3.0),  # 6 free slots, 2 more leads an hour than leave: 3 hours
        (1, 1.25, 0.5, 1 / 0.75),
        (6, 2.0, 2.0, None),  # as many leave as arrive: never full
        (6, 1.0, 4.0, None),  # emptying
        (6, 0.0, 0.0, None),  # nothing moves
        (0, 3.0, 1.0, 0.0),  # already full
        (0, 0.0, 5.0, 0.0),  # already full, even while emptying
    ],
)
def test_hours_until_saturation(
    headroom: int, intake: float, release: float, expected: float | None
) -> None:
    hours = hours_until_saturation(headroom, intake, release)
    assert hours == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("utilisation_", "backlog", "expected"),
    [
        (0.0, 0, OK),
        (0.79, 0, OK),
        (0.8, 0, BUSY),
        (0.99, 0, BUSY),
        (1.0, 0, SATURATED),
        (0.5, 1, SATURATED),  # leads wait even though someone has room (territories)
    ],
)
def test_levels_with_the_default_thresholds(
    utilisation_: float, backlog: int, expected: CapacityLevel
) -> None:
    assert headroom_level(utilisation_, Thresholds(), backlog=backlog) == expected


def test_thresholds_come_from_settings_and_must_be_ordered() -> None:
    assert headroom_level(0.6, Thresholds(busy=0.5)) == BUSY
    assert headroom_level(0.95, Thresholds(busy=0.5, saturated=0.9)) == SATURATED
    for busy, saturated in ((0.0, 1.0), (0.9, 0.8), (0.5, 1.5)):
        with pytest.raises(ValueError, match="0 < busy <= saturated <= 1"):
            Thresholds(busy=busy, saturated=saturated)


def test_per_hour_averages_over_the_window() -> None:
    assert per_hour(5, 4) == 1.25
    assert per_hour(0, 4) == 0
    with pytest.raises(ValueError, match="rate window"):
        per_hour(5, 0)


def test_team_load_from_counts() -> None:
    queued_at = NOW - timedelta(minutes=3)
    team = team_load(
        {
            "team_id": "t1",
            "name": "Inbound",
            "capacity": 4,
            "working": 4,
            "headroom": 0,
            "backlog": 1,
            "oldest_queued_at": queued_at,
            "intake": 5,
            "released": 2,
        },
        window_hours=4,
    )
    assert (team.intake_per_hour, team.release_per_hour) == (1.25, 0.5)
    assert team.utilisation == 1.0
    assert team.hours_until_saturation == 0.0
    assert team.level() == SATURATED
    assert team.oldest_age_seconds(NOW) == 180.0


def test_a_team_without_reps_is_saturated_and_an_empty_backlog_has_no_age() -> None:
    empty = load(capacity=0, working=0, headroom=0)
    assert empty.utilisation == 1.0
    assert empty.level() == SATURATED
    assert empty.oldest_age_seconds(NOW) is None


def test_a_filling_team_projects_when_it_is_full() -> None:
    team = load(capacity=10, working=4, headroom=6, intake_per_hour=5.0, release_per_hour=2.0)
    assert team.utilisation == pytest.approx(0.4)
    assert team.hours_until_saturation == pytest.approx(2.0)
    assert team.level(Thresholds(busy=0.4)) == BUSY
    assert team.level() == OK


def _as_number(hours: float | None) -> float:
    return float("inf") if hours is None else hours


@given(headrooms, rates, rates)
def test_projection_is_never_negative(headroom: int, intake: float, release: float) -> None:
    hours = hours_until_saturation(headroom, intake, release)
    assert hours is None or hours >= 0
    assert (hours == 0) == (headroom == 0)


@given(headrooms, rates, rates, rates)
def test_more_intake_never_gives_more_hours(
    headroom: int, intake: float, more: float, release: float
) -> None:
    slower = hours_until_saturation(headroom, intake, release)
    faster = hours_until_saturation(headroom, intake + more, release)
    assert _as_number(faster) <= _as_number(slower)


@given(headrooms, rates, rates, rates)
def test_more_release_never_gives_fewer_hours(
    headroom: int, intake: float, release: float, more: float
) -> None:
    before = hours_until_saturation(headroom, intake, release)
    after = hours_until_saturation(headroom, intake, release + more)
    assert _as_number(after) >= _as_number(before)


@given(
    ratios,
    ratios,
    st.integers(min_value=0, max_value=5),
    st.floats(min_value=0.01, max_value=1),
    st.floats(min_value=0, max_value=1),
)
def test_level_is_monotone_in_utilisation(
    low: float, high: float, backlog: int, busy: float, saturated_share: float
) -> None:
    low, high = sorted((low, high))
    thresholds = Thresholds(busy=busy, saturated=busy + (1 - busy) * saturated_share)
    at_low = headroom_level(low, thresholds, backlog=backlog)
    at_high = headroom_level(high, thresholds, backlog=backlog)
    assert LEVELS.index(at_low) <= LEVELS.index(at_high)
    # a backlog never makes a team look emptier
    assert LEVELS.index(headroom_level(low, thresholds)) <= LEVELS.index(at_low)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=50),
            st.integers(min_value=0, max_value=80),
            st.booleans(),
        ),
        max_size=20,
    )
)
def test_team_headroom_is_within_capacity_and_utilisation_within_0_and_1(
    reps: list[tuple[int, int, bool]],
) -> None:
    capacity = sum(c for c, _, active in reps if active)
    free = sum(rep_headroom(c, w, active=a) for c, w, a in reps)
    assert 0 <= free <= capacity
    share = utilisation(capacity, free)
    assert 0 <= share <= 1
    assert (share == 1) == (free == 0)
