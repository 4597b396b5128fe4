"""The funnel definitions the shared KPIs rest on: which stage a status report proves, what
counts as a first touch, what each event says about a lead, and the conversion rates.

The expected stages are written out here, not read from the module, so a wrong table is
caught. The funnel:

    leads -> mql -> assigned -> accepted -> contacted -> qualified -> converted -> won
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from handoff_feedback.kpi_models import FUNNEL, Stage
from handoff_feedback.kpis import (
    assigned_facts,
    breach_facts,
    conversion_rates,
    created_facts,
    is_touch,
    outcome_of,
    queued_facts,
    scored_facts,
    stage_reached,
    status_facts,
)
from handoff_schemas import (
    FitGrade,
    LeadAssignedV1,
    LeadCreatedV1,
    LeadProfile,
    LeadQueuedV1,
    LeadScoredV1,
    LeadSlaBreachedV1,
    LeadStatus,
    LeadStatusChangedV1,
    RoutingDecision,
)

S = LeadStatus
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
STEPS = ["leads", "mql", "assigned", "accepted", "contacted", "qualified", "converted", "won"]


def change(to: S, frm: S | None = None, **extra: object) -> LeadStatusChangedV1:
    return LeadStatusChangedV1.model_validate(
        {
            "lead_id": "L1",
            "from_status": frm,
            "to_status": to,
            "rep_id": "rep-anna",
            "team_id": "team-inbound",
            "occurred_at": T0,
            "working": to in {S.ASSIGNED, S.ACCEPTED, S.CONTACTED},
            **extra,
        }
    )


def test_the_funnel_runs_from_lead_to_won_in_order() -> None:
    assert [stage.step for stage in FUNNEL] == STEPS
    assert sorted(FUNNEL) == list(FUNNEL)


@pytest.mark.parametrize(
    ("to", "frm", "reached"),
    [
        (S.ASSIGNED, None, Stage.ASSIGNED),
        (S.ACCEPTED, S.ASSIGNED, Stage.ACCEPTED),
        (S.CONTACTED, S.ASSIGNED, Stage.CONTACTED),  # contact without accepting first
        (S.QUALIFIED, S.ASSIGNED, Stage.QUALIFIED),  # counts as accepted and contacted too
        (S.WON, S.QUALIFIED, Stage.WON),  # a skipped converted is implied
        (S.LOST, S.QUALIFIED, Stage.QUALIFIED),
        (S.LOST, S.CONVERTED, Stage.CONVERTED),  # lost after converted counts as converted
        (S.LOST, None, Stage.QUALIFIED),  # lost is only reachable from qualified
        (S.DISQUALIFIED, S.ACCEPTED, Stage.ACCEPTED),
        (S.DISQUALIFIED, S.CONTACTED, Stage.CONTACTED),
        (S.RECYCLED, S.ASSIGNED, Stage.ASSIGNED),
        (S.RECYCLED, None, Stage.ASSIGNED),  # leaving sales proves the lead reached it
    ],
)
def test_a_status_report_proves_the_furthest_stage_it_implies(
    to: S, frm: S | None, reached: Stage
) -> None:
    assert stage_reached(to, frm) == reached


def test_contact_or_any_later_stage_is_a_touch_and_leaving_from_a_working_status_is_not() -> None:
    touches = {s for s in LeadStatus if is_touch(s)}
    assert touches == {S.CONTACTED, S.QUALIFIED, S.CONVERTED, S.WON, S.LOST}


def test_every_sales_status_means_the_lead_reached_sales_and_no_report_moves_it_back() -> None:
    for to in LeadStatus:
        for frm in [None, *LeadStatus]:
            reached = stage_reached(to, frm)
            assert reached >= Stage.ASSIGNED
            assert reached >= stage_reached(to)
            if frm is not None:
                assert reached >= stage_reached(frm)


def test_conversion_rates_divide_each_stage_by_the_one_before_and_are_null_without_a_base() -> None:
    reached = dict(zip(STEPS, [10, 6, 6, 3, 0, 0, 0, 0], strict=True))
    assert conversion_rates(reached) == {
        "leads_to_mql": 0.6,
        "mql_to_assigned": 1.0,
        "assigned_to_accepted": 0.5,
        "accepted_to_contacted": 0.0,
        "contacted_to_qualified": None,
        "qualified_to_converted": None,
        "converted_to_won": None,
    }
    assert conversion_rates(dict.fromkeys(STEPS, 3))["converted_to_won"] == 1.0
    assert conversion_rates({**dict.fromkeys(STEPS, 3), "mql": 2})["leads_to_mql"] == 0.6667


def test_a_lead_created_carries_its_attribution_and_counts_as_a_lead() -> None:
    created = LeadCreatedV1(
        lead_id="L1",
        received_at=T0,
        lead=LeadProfile(email="katrin@nordwerk.de", campaign="webinar", source="hubspot"),
    )
    facts = created_facts(created)
    assert (facts.created_at, facts.campaign, facts.source) == (T0, "webinar", "hubspot")
    assert facts.stage == Stage.LEADS


def test_the_router_handing_a_lead_to_sales_makes_it_an_mql() -> None:
    decision = RoutingDecision(
        rule="default", team_id="team-inbound", icp_version=1, score=80, grade=FitGrade.A
    )
    assigned = assigned_facts(
        LeadAssignedV1(
            lead_id="L1",
            rep_id="rep-anna",
            rep_name="Anna",
            team_id="team-inbound",
            assigned_at=T0,
            decision=decision,
        )
    )
    assert (assigned.stage, assigned.mql_at, assigned.assigned_at) == (Stage.ASSIGNED, T0, T0)
    assert (assigned.team_id, assigned.rep_id, assigned.owned_at) == (
        "team-inbound",
        "rep-anna",
        T0,
    )
    queued = queued_facts(
        LeadQueuedV1(lead_id="L1", team_id="team-inbound", queued_at=T0, decision=decision)
    )
    assert (queued.stage, queued.mql_at, queued.assigned_at) == (Stage.MQL, T0, None)
    assert (queued.team_id, queued.rep_id) == ("team-inbound", None)


def test_a_breach_records_when_the_sla_was_missed_and_proves_the_assignment() -> None:
    breach = breach_facts(
        LeadSlaBreachedV1(
            lead_id="L1",
            rep_id="rep-ben",
            team_id="team-inbound",
            assigned_at=T0,
            due_at=T0 + timedelta(hours=1),
            breached_at=T0 + timedelta(hours=1, seconds=3),
            reassignments=1,
        )
    )
    assert breach.sla_breached_at == T0 + timedelta(hours=1, seconds=3)
    assert (breach.stage, breach.assigned_at) == (Stage.ASSIGNED, T0)
    assert breach.rep_id is None  # the breaching rep is about to lose the lead, not own it


def test_a_score_keeps_the_grade_with_its_time() -> None:
    scored = LeadScoredV1(
        lead_id="L1",
        icp_version=2,
        score=71.5,
        grade=FitGrade.B,
        engagement_level=2,
        contributions=[],
        scored_at=T0,
        received_at=T0,
        lead=LeadProfile(email="katrin@nordwerk.de"),
    )
    facts = scored_facts(scored)
    assert (facts.fit_grade, facts.score, facts.graded_at) == ("B", 71.5, T0)


def test_a_later_stage_without_contact_is_the_first_touch() -> None:
    facts = status_facts(change(S.QUALIFIED, S.ASSIGNED))
    assert (facts.stage, facts.touched_at) == (Stage.QUALIFIED, T0)
    assert (facts.rep_id, facts.team_id, facts.owned_at) == ("rep-anna", "team-inbound", T0)
    assert status_facts(change(S.ACCEPTED, S.ASSIGNED)).touched_at is None
    assert status_facts(change(S.DISQUALIFIED, S.ASSIGNED, reason="no_need")).touched_at is None


def test_outcomes_keep_the_reason_and_the_won_amount() -> None:
    won = outcome_of("ev-1", change(S.WON, S.CONVERTED, amount=12000.1))
    assert won is not None
    assert (won.event_id, won.status, won.amount) == ("ev-1", "won", Decimal("12000.1"))
    lost = outcome_of("ev-2", change(S.LOST, S.CONVERTED, reason="competitor"))
    assert lost is not None
    assert (lost.status, lost.reason, lost.amount, lost.rep_id) == (
        "lost",
        "competitor",
        None,
        "rep-anna",
    )
    assert outcome_of("ev-3", change(S.CONTACTED, S.ASSIGNED)) is None
