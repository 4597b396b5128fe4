"""The in-memory fold of a lead's KPI facts, which lets a batch merge each lead once: it must
be associative (folding a batch first and merging the result into the stored row ends where
merging the facts one by one does), idempotent (a rebuild and the consumer may both merge an
event), and leave a row alone when the facts say nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from handoff_feedback.kpi_models import Stage
from handoff_feedback.kpi_queries import COLUMNS, fact_row, fold
from handoff_feedback.kpis import LeadFacts

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
# Few distinct times and values, so that ties (where the first seen wins) come up often.
times = st.none() | st.integers(0, 3).map(lambda n: T0 + timedelta(hours=n))
names = st.none() | st.sampled_from(["a", "b"])

# A grade and its score come from one scoring: both or neither (they share graded_at).
gradings = st.none() | st.tuples(st.sampled_from("ABCD"), st.sampled_from([10.0, 55.5, 90.0]))
facts = st.builds(
    lambda grading, **rest: LeadFacts(
        fit_grade=grading and grading[0], score=grading and grading[1], **rest
    ),
    grading=gradings,
    lead_id=st.just("lead-1"),
    created_at=times,
    campaign=names,
    source=names,
    graded_at=times,
    stage=st.none() | st.sampled_from(list(Stage)),
    mql_at=times,
    assigned_at=times,
    touched_at=times,
    sla_breached_at=times,
    team_id=names,
    rep_id=names,
    owned_at=times,
)


@given(facts, facts, facts)
def test_folding_is_associative(a: LeadFacts, b: LeadFacts, c: LeadFacts) -> None:
    ra, rb, rc = fact_row(a), fact_row(b), fact_row(c)
    assert fold(fold(ra, rb), rc) == fold(ra, fold(rb, rc))


@given(facts, facts)
def test_merging_facts_again_changes_nothing(a: LeadFacts, b: LeadFacts) -> None:
    """What lets a rebuild overlap with the consumer: an event merged twice (once by each)
    leaves the row as merging it once does."""
    ra, rb = fact_row(a), fact_row(b)
    merged = fold(ra, rb)
    assert fold(merged, ra) == merged
    assert fold(merged, rb) == merged
    assert fold(ra, ra) == ra


@given(facts)
def test_facts_that_say_nothing_change_nothing(a: LeadFacts) -> None:
    row = fact_row(a)
    silent: dict[str, Any] = dict.fromkeys(COLUMNS)
    silent["lead_id"] = a.lead_id
    assert fold(row, silent) == row
    assert fold(silent, row) == row


def test_the_row_keeps_earliest_firsts_furthest_stage_first_attribution_latest_owner() -> None:
    early = LeadFacts("lead-1", created_at=T0, campaign="webinar", stage=Stage.LEADS)
    late = LeadFacts(
        "lead-1",
        created_at=T0 + timedelta(days=1),
        campaign="ebook",
        stage=Stage.ASSIGNED,
        team_id="inbound",
        owned_at=T0 + timedelta(days=1),
    )
    later_owner = LeadFacts("lead-1", team_id="enterprise", owned_at=T0 + timedelta(days=2))
    row = fold(fold(fact_row(late), fact_row(later_owner)), fact_row(early))
    assert (row["created_at"], row["campaign"], row["campaign_at"]) == (T0, "webinar", T0)
    assert row["stage"] == Stage.ASSIGNED
    assert (row["team_id"], row["team_at"]) == ("enterprise", T0 + timedelta(days=2))
