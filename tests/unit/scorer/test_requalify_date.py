"""When new engagement sends a lead that sales let go back to sales: only a lead disqualified
or recycled to nurture, and only from its re-qualify date on."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handoff_scorer.requalification import should_requalify

TODAY = date(2026, 11, 22)


@pytest.mark.parametrize("outcome", ["disqualified", "recycled"])
def test_a_nurtured_lead_requalifies_on_and_after_its_date(outcome: str) -> None:
    assert should_requalify(outcome, TODAY, TODAY)
    assert should_requalify(outcome, TODAY - timedelta(days=90), TODAY)


@pytest.mark.parametrize("outcome", ["disqualified", "recycled"])
def test_a_nurtured_lead_stays_in_nurture_before_its_date(outcome: str) -> None:
    assert not should_requalify(outcome, TODAY + timedelta(days=1), TODAY)


@pytest.mark.parametrize("outcome", ["disqualified", "recycled"])
def test_a_lead_closed_without_a_requalify_date_never_requalifies(outcome: str) -> None:
    assert not should_requalify(outcome, None, TODAY)


@pytest.mark.parametrize("outcome", ["won", "lost", None])
def test_won_lost_and_open_leads_do_not_requalify_whatever_the_date(outcome: str | None) -> None:
    assert not should_requalify(outcome, TODAY - timedelta(days=1), TODAY)


@given(
    st.sampled_from(["disqualified", "recycled"]),
    st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
    st.integers(min_value=-400, max_value=400),
)
def test_the_date_alone_decides_for_a_nurtured_lead(
    outcome: str, requalify_on: date, days_later: int
) -> None:
    today = requalify_on + timedelta(days=days_later)
    assert should_requalify(outcome, requalify_on, today) == (days_later >= 0)
