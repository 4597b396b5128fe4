"""A lead is routed once per sales cycle: scored again it keeps its place, and only after it
re-qualified (a higher cycle) and sales let it go is it routed again."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handoff_router.routing import routes_again

STATES = ["assigned", "queued", "released", "nurture"]


@pytest.mark.parametrize("state", ["released", "nurture"])
def test_a_requalified_lead_sales_let_go_is_routed_again(state: str) -> None:
    assert routes_again(state, cycle=1, scored_cycle=2)
    assert routes_again(state, cycle=2, scored_cycle=3)


@pytest.mark.parametrize("state", ["assigned", "queued"])
def test_a_lead_still_with_sales_keeps_its_place_in_a_new_cycle(state: str) -> None:
    assert not routes_again(state, cycle=1, scored_cycle=2)


@given(st.sampled_from(STATES), st.integers(min_value=1, max_value=50), st.integers(0, 50))
def test_a_lead_scored_again_in_the_same_or_an_earlier_cycle_is_never_routed_again(
    state: str, scored_cycle: int, behind: int
) -> None:
    assert not routes_again(state, cycle=scored_cycle + behind, scored_cycle=scored_cycle)
