"""The lead lifecycle as sales reports it: allowed moves, late and duplicate reports, reasons,
working statuses, nurture.

The expected lifecycle is written out here, not read from the module, so a wrong table is
caught. The funnel's steps:

    assigned -> accepted -> contacted -> qualified -> converted -> won | lost
    assigned | accepted | contacted -> disqualified | recycled
    qualified -> lost
    won, lost, disqualified, recycled are final.

A report may skip steps: every status ahead of the current one is allowed.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handoff_feedback.lifecycle import (
    ALLOWED,
    FINAL,
    NEEDS_REASON,
    REQUALIFY_AFTER_DAYS,
    TRANSITIONS,
    Disposition,
    Reason,
    Report,
    ReportInvalid,
    State,
    TransitionRefused,
    check_report,
    decide,
    is_working,
    nurture_request,
)
from handoff_schemas import LeadStatus, NurtureReason

S = LeadStatus
T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)

EXPECTED_AHEAD: dict[LeadStatus, frozenset[LeadStatus]] = {
    S.ASSIGNED: frozenset(
        {S.ACCEPTED, S.CONTACTED, S.QUALIFIED, S.CONVERTED, S.WON, S.LOST, S.DISQUALIFIED}
        | {S.RECYCLED}
    ),
    S.ACCEPTED: frozenset(
        {S.CONTACTED, S.QUALIFIED, S.CONVERTED, S.WON, S.LOST, S.DISQUALIFIED, S.RECYCLED}
    ),
    S.CONTACTED: frozenset({S.QUALIFIED, S.CONVERTED, S.WON, S.LOST, S.DISQUALIFIED, S.RECYCLED}),
    S.QUALIFIED: frozenset({S.CONVERTED, S.WON, S.LOST}),
    S.CONVERTED: frozenset({S.WON, S.LOST}),
    S.WON: frozenset(),
    S.LOST: frozenset(),
    S.DISQUALIFIED: frozenset(),
    S.RECYCLED: frozenset(),
}
EXPECTED_FINAL = frozenset({S.WON, S.LOST, S.DISQUALIFIED, S.RECYCLED})
NEEDS_A_REASON = frozenset({S.DISQUALIFIED, S.RECYCLED, S.LOST})
# How far along the funnel a status is; every allowed move goes strictly forward.
FUNNEL_STEP = {
    S.ASSIGNED: 0,
    S.ACCEPTED: 1,
    S.CONTACTED: 2,
    S.QUALIFIED: 3,
    S.CONVERTED: 4,
    S.WON: 5,
    S.LOST: 5,
    S.DISQUALIFIED: 5,
    S.RECYCLED: 5,
}

NURTURABLE: dict[Reason, tuple[NurtureReason, int]] = {
    Reason.NO_BUDGET: (NurtureReason.NO_BUDGET, 90),
    Reason.NO_TIMELINE: (NurtureReason.NO_TIMELINE, 60),
    Reason.NO_AUTHORITY: (NurtureReason.NO_AUTHORITY, 30),
    Reason.NO_NEED: (NurtureReason.NO_NEED, 120),
    Reason.UNREACHABLE: (NurtureReason.UNREACHABLE, 30),
}
NOT_NURTURABLE = [Reason.BAD_FIT, Reason.DUPLICATE, Reason.COMPETITOR, Reason.OTHER]

TODAY = date(2025, 6, 1)


def report(status: LeadStatus, at: datetime = T0, **more: object) -> Report:
    reason = Reason.NO_BUDGET if status in NEEDS_A_REASON else None
    return Report(status=status, occurred_at=at, **{"reason": reason, **more})  # type: ignore[arg-type]


def pair_param(current: LeadStatus, requested: LeadStatus) -> object:
    return pytest.param(current, requested, id=f"{current}->{requested}")


# --- the transition table ----------------------------------------------------------------


def test_the_expected_tables_cover_every_status() -> None:
    assert set(EXPECTED_AHEAD) == set(LeadStatus) == set(FUNNEL_STEP) == set(TRANSITIONS)
    assert FINAL == EXPECTED_FINAL


@pytest.mark.parametrize(
    ("current", "requested"),
    [pair_param(c, r) for c, r in itertools.product(LeadStatus, LeadStatus)],
)
def test_a_newer_report_moves_the_lead_exactly_when_the_status_is_ahead(
    current: LeadStatus, requested: LeadStatus
) -> None:
    newer = report(requested, T0 + timedelta(minutes=1))

    if requested in EXPECTED_AHEAD[current]:
        assert decide(current, T0, newer) is Disposition.APPLIED
        assert decide(current, None, newer) is Disposition.APPLIED
    elif requested is current:
        assert decide(current, T0, newer) is Disposition.DUPLICATE
    else:
        with pytest.raises(TransitionRefused) as refused:
            decide(current, T0, newer)
        assert refused.value.current is current
        assert refused.value.requested is requested


@pytest.mark.parametrize(
    ("current", "requested"),
    [pair_param(c, r) for c, r in itertools.product(LeadStatus, LeadStatus) if c is not r],
)
def test_an_older_report_never_moves_the_lead_and_is_never_refused(
    current: LeadStatus, requested: LeadStatus
) -> None:
    older = report(requested, T0 - timedelta(seconds=1))

    assert decide(current, T0, older) is Disposition.LATE


@pytest.mark.parametrize(
    ("current", "requested"),
    [pair_param(c, r) for c, r in itertools.product(LeadStatus, LeadStatus) if c is not r],
)
def test_a_report_at_the_same_instant_moves_forward_only(
    current: LeadStatus, requested: LeadStatus
) -> None:
    # CRMs often report in whole seconds: two steps in one second must both count, in
    # whatever order they arrive.
    expected = Disposition.APPLIED if requested in EXPECTED_AHEAD[current] else Disposition.LATE
    assert decide(current, T0, report(requested, T0)) is expected


@pytest.mark.parametrize("current", sorted(set(LeadStatus) - {S.ASSIGNED}), ids=str)
def test_a_refusal_names_exactly_the_statuses_allowed_instead(current: LeadStatus) -> None:
    # (from assigned every other status is ahead: nothing is refused)
    backwards = next(
        (s for s in LeadStatus if s is not current and s not in EXPECTED_AHEAD[current]), None
    )
    assert backwards is not None
    with pytest.raises(TransitionRefused) as refused:
        decide(current, T0, report(backwards, T0 + timedelta(hours=1)))

    allowed = refused.value.allowed
    assert len(allowed) == len(set(allowed))
    assert set(allowed) == EXPECTED_AHEAD[current] == ALLOWED[current]
    message = str(refused.value)
    assert f"cannot go from {current} to {backwards}" in message
    listed = message.split("allowed: ", 1)[1]
    if EXPECTED_AHEAD[current]:
        assert set(listed.split(", ")) == {str(s) for s in EXPECTED_AHEAD[current]}
    else:
        assert listed == "none (final status)"


def test_every_step_goes_forward_and_final_statuses_have_none() -> None:
    for status, steps in TRANSITIONS.items():
        assert all(FUNNEL_STEP[s] > FUNNEL_STEP[status] for s in steps)
        assert bool(steps) is (status not in EXPECTED_FINAL)


# --- what a report must carry -----------------------------------------------------------

BLANK_NOTES = [None, "", "   ", "\t\n"]


def test_the_statuses_needing_a_reason_are_disqualify_recycle_and_lose() -> None:
    assert NEEDS_REASON == NEEDS_A_REASON


@pytest.mark.parametrize("status", sorted(NEEDS_A_REASON), ids=str)
def test_leaving_the_funnel_without_a_reason_is_invalid(status: LeadStatus) -> None:
    with pytest.raises(ReportInvalid, match=str(status)) as invalid:
        check_report(Report(status, T0, reason=None, note="a note is not a reason"))
    assert invalid.value.field == "reason"


@pytest.mark.parametrize("note", BLANK_NOTES, ids=repr)
@pytest.mark.parametrize("status", sorted(NEEDS_A_REASON), ids=str)
def test_reason_other_without_a_note_is_invalid(status: LeadStatus, note: str | None) -> None:
    with pytest.raises(ReportInvalid, match="other") as invalid:
        check_report(Report(status, T0, reason=Reason.OTHER, note=note))
    assert invalid.value.field == "note"


@pytest.mark.parametrize("status", sorted(NEEDS_A_REASON), ids=str)
def test_reason_other_with_a_note_and_named_reasons_without_one_are_valid(
    status: LeadStatus,
) -> None:
    check_report(Report(status, T0, reason=Reason.OTHER, note="bought through a reseller"))
    for reason in set(Reason) - {Reason.OTHER}:
        check_report(Report(status, T0, reason=reason))


@pytest.mark.parametrize("status", sorted(set(LeadStatus) - NEEDS_A_REASON), ids=str)
def test_moving_forward_needs_no_reason(status: LeadStatus) -> None:
    check_report(Report(status, T0))


@pytest.mark.parametrize("status", sorted(set(LeadStatus) - {S.WON}), ids=str)
def test_an_amount_goes_only_with_won(status: LeadStatus) -> None:
    check_report(Report(S.WON, T0, amount=48_000.0))
    with pytest.raises(ReportInvalid) as invalid:
        check_report(report(status, amount=10.0))
    assert invalid.value.field == "amount"


# --- working statuses --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (S.ASSIGNED, True),
        (S.ACCEPTED, True),
        (S.CONTACTED, True),
        (S.QUALIFIED, False),
        (S.CONVERTED, False),
        (S.WON, False),
        (S.LOST, False),
        (S.DISQUALIFIED, False),
        (S.RECYCLED, False),
    ],
    ids=str,
)
def test_only_assigned_accepted_and_contacted_leads_take_up_capacity(
    status: LeadStatus, expected: bool
) -> None:
    assert is_working(status) is expected


# --- nurture -----------------------------------------------------------------------------


def test_every_reason_is_either_nurturable_or_not() -> None:
    assert set(NURTURABLE) | set(NOT_NURTURABLE) == set(Reason)
    assert not set(NURTURABLE) & set(NOT_NURTURABLE)
    assert set(REQUALIFY_AFTER_DAYS) == set(NURTURABLE)


@pytest.mark.parametrize("reason", list(NURTURABLE), ids=str)
@pytest.mark.parametrize("status", [S.DISQUALIFIED, S.RECYCLED], ids=str)
def test_a_nurturable_drop_goes_to_marketing_with_a_requalify_date(
    status: LeadStatus, reason: Reason
) -> None:
    nurture_reason, days = NURTURABLE[reason]

    assert nurture_request(status, reason, today=TODAY) == (
        nurture_reason,
        TODAY + timedelta(days=days),
    )


@pytest.mark.parametrize(
    ("reason", "today", "expected"),
    [
        (Reason.NO_BUDGET, date(2024, 12, 15), date(2025, 3, 15)),
        (Reason.NO_TIMELINE, date(2024, 1, 1), date(2024, 3, 1)),  # leap year: 31 + 29
        (Reason.NO_AUTHORITY, date(2025, 2, 1), date(2025, 3, 3)),
        (Reason.NO_NEED, date(2025, 11, 1), date(2026, 3, 1)),
        (Reason.UNREACHABLE, date(2025, 12, 15), date(2026, 1, 14)),
    ],
    ids=str,
)
def test_the_requalify_date_crosses_months_and_years(
    reason: Reason, today: date, expected: date
) -> None:
    answer = nurture_request(S.RECYCLED, reason, today=today)

    assert answer is not None
    assert answer[1] == expected


def test_a_deployment_sets_its_own_nurture_reasons_and_days() -> None:
    days = {Reason.NO_BUDGET: 14, Reason.OTHER: 7}

    assert nurture_request(S.DISQUALIFIED, Reason.NO_BUDGET, today=TODAY, after_days=days) == (
        NurtureReason.NO_BUDGET,
        date(2025, 6, 15),
    )
    assert nurture_request(S.RECYCLED, Reason.OTHER, today=TODAY, after_days=days) == (
        NurtureReason.OTHER,
        date(2025, 6, 8),
    )
    assert nurture_request(S.RECYCLED, Reason.NO_TIMELINE, today=TODAY, after_days=days) is None


@pytest.mark.parametrize("reason", [*NOT_NURTURABLE, None], ids=str)
@pytest.mark.parametrize("status", [S.DISQUALIFIED, S.RECYCLED], ids=str)
def test_a_drop_not_worth_nurturing_is_not_sent_to_marketing(
    status: LeadStatus, reason: Reason | None
) -> None:
    assert nurture_request(status, reason, today=TODAY) is None


@pytest.mark.parametrize("reason", [*Reason, None], ids=str)
@pytest.mark.parametrize("status", sorted(set(LeadStatus) - {S.DISQUALIFIED, S.RECYCLED}), ids=str)
def test_only_disqualified_or_recycled_leads_are_nurtured(
    status: LeadStatus, reason: Reason | None
) -> None:
    assert nurture_request(status, reason, today=TODAY) is None


# --- properties: delivery order does not matter -----------------------------------------


@st.composite
def real_sequences(draw: st.DrawFn) -> list[Report]:
    """What really happened to one lead: a walk along the funnel's steps from assigned, at
    non-decreasing times (whole seconds, so some steps share an instant)."""
    current, at, steps = S.ASSIGNED, T0, []
    while TRANSITIONS[current] and bool(draw(st.booleans())):
        current = draw(st.sampled_from(sorted(TRANSITIONS[current])))
        at += timedelta(seconds=draw(st.integers(min_value=0, max_value=3)))
        steps.append(report(current, at))
    return steps


def fold(reports: list[Report]) -> tuple[State, list[Disposition]]:
    state, dispositions = State(), []
    for r in reports:
        state, disposition = state.after(r)
        dispositions.append(disposition)
    return state, dispositions


@given(data=st.data(), sequence=real_sequences())
def test_any_order_of_a_real_sequence_with_repeats_ends_where_the_sequence_ends(
    data: st.DataObject, sequence: list[Report]
) -> None:
    in_order, dispositions = fold(sequence)
    repeats = data.draw(st.lists(st.sampled_from(sequence), max_size=4)) if sequence else []
    shuffled = data.draw(st.permutations(sequence + repeats))

    delivered, _ = fold(shuffled)

    assert all(d is Disposition.APPLIED for d in dispositions)
    assert delivered == in_order
    if sequence:
        assert in_order == State(sequence[-1].status, sequence[-1].occurred_at)


@given(
    reports=st.lists(
        st.builds(
            report,
            st.sampled_from(list(LeadStatus)),
            st.integers(min_value=-5, max_value=30).map(lambda s: T0 + timedelta(seconds=s)),
        ),
        max_size=25,
    )
)
def test_whatever_arrives_a_lead_never_moves_backwards(reports: list[Report]) -> None:
    state = State()
    for r in reports:
        try:
            after, disposition = state.after(r)
        except TransitionRefused:
            assert r.status not in EXPECTED_AHEAD[state.status]
            continue
        if disposition is Disposition.APPLIED:
            assert FUNNEL_STEP[after.status] > FUNNEL_STEP[state.status]
            assert state.since is None or (after.since is not None and after.since >= state.since)
        else:
            assert after == state
        state = after
