"""The lead lifecycle as sales reports it: allowed moves, reasons, working statuses, nurture.

The expected lifecycle is written out here from the module docstring, not read from
TRANSITIONS, so a wrong table is caught:

    assigned -> accepted -> contacted -> qualified -> converted -> won | lost
    assigned | accepted | contacted -> disqualified | recycled
    qualified -> lost
    won, lost, disqualified, recycled are final.
"""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handoff_feedback.lifecycle import (
    NEEDS_REASON,
    REQUALIFY_AFTER_DAYS,
    TRANSITIONS,
    Reason,
    ReasonRequired,
    TransitionRefused,
    check_transition,
    is_working,
    nurture_request,
)
from handoff_schemas import LeadStatus, NurtureReason

S = LeadStatus

EXPECTED_NEXT: dict[LeadStatus, frozenset[LeadStatus]] = {
    S.ASSIGNED: frozenset({S.ACCEPTED, S.CONTACTED, S.DISQUALIFIED, S.RECYCLED}),
    S.ACCEPTED: frozenset({S.CONTACTED, S.DISQUALIFIED, S.RECYCLED}),
    S.CONTACTED: frozenset({S.QUALIFIED, S.DISQUALIFIED, S.RECYCLED}),
    S.QUALIFIED: frozenset({S.CONVERTED, S.LOST}),
    S.CONVERTED: frozenset({S.WON, S.LOST}),
    S.WON: frozenset(),
    S.LOST: frozenset(),
    S.DISQUALIFIED: frozenset(),
    S.RECYCLED: frozenset(),
}
FINAL = frozenset({S.WON, S.LOST, S.DISQUALIFIED, S.RECYCLED})
WORKING = frozenset({S.ASSIGNED, S.ACCEPTED, S.CONTACTED})
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


def refused_pair(current: LeadStatus, requested: LeadStatus) -> bool:
    """Whether the code under test refuses the move (with a valid reason and note)."""
    try:
        check_transition(current, requested, Reason.NO_BUDGET, None)
    except TransitionRefused:
        return True
    return False


def pair_param(current: LeadStatus, requested: LeadStatus) -> object:
    return pytest.param(current, requested, id=f"{current}->{requested}")


def status_param(current: LeadStatus) -> object:
    return pytest.param(current, id=str(current))


# --- the transition table ----------------------------------------------------------------


def test_the_expected_table_covers_every_status() -> None:
    assert set(EXPECTED_NEXT) == set(LeadStatus)
    assert set(FUNNEL_STEP) == set(LeadStatus)


@pytest.mark.parametrize(
    ("current", "requested"),
    [pair_param(c, r) for c, r in itertools.product(LeadStatus, LeadStatus)],
)
def test_a_status_change_is_allowed_exactly_when_the_lifecycle_says_so(
    current: LeadStatus, requested: LeadStatus
) -> None:
    reason = Reason.NO_BUDGET if requested in NEEDS_A_REASON else None

    if requested in EXPECTED_NEXT[current]:
        check_transition(current, requested, reason, None)
    else:
        with pytest.raises(TransitionRefused) as refused:
            check_transition(current, requested, reason, None)
        assert refused.value.current is current
        assert refused.value.requested is requested


@pytest.mark.parametrize("current", [status_param(c) for c in LeadStatus])
def test_a_refusal_names_exactly_the_statuses_allowed_instead(current: LeadStatus) -> None:
    # Staying put is never a move, so it is refused from every status.
    with pytest.raises(TransitionRefused) as refused:
        check_transition(current, current, Reason.NO_BUDGET, "note")

    allowed = refused.value.allowed
    assert len(allowed) == len(set(allowed))
    assert set(allowed) == EXPECTED_NEXT[current]
    message = str(refused.value)
    assert f"cannot go from {current} to {current}" in message
    listed = message.split("allowed: ", 1)[1]
    if EXPECTED_NEXT[current]:
        assert set(listed.split(", ")) == {str(s) for s in EXPECTED_NEXT[current]}
    else:
        assert listed == "none (final status)"


@pytest.mark.parametrize("current", sorted(FINAL))
def test_a_final_status_allows_nothing(current: LeadStatus) -> None:
    for requested in LeadStatus:
        with pytest.raises(TransitionRefused) as refused:
            check_transition(current, requested, Reason.NO_BUDGET, "note")
        assert refused.value.allowed == []
        assert str(refused.value).endswith("allowed: none (final status)")


def test_a_refused_move_is_refused_before_its_reason_is_checked() -> None:
    with pytest.raises(TransitionRefused):
        check_transition(S.WON, S.DISQUALIFIED, None, None)
    with pytest.raises(TransitionRefused):
        check_transition(S.QUALIFIED, S.RECYCLED, Reason.OTHER, None)


def test_a_refusal_is_a_value_error() -> None:
    assert issubclass(TransitionRefused, ValueError)
    assert issubclass(ReasonRequired, ValueError)


def test_every_non_final_status_has_a_way_out_and_final_ones_none() -> None:
    for status in LeadStatus:
        assert bool(TRANSITIONS[status]) is (status not in FINAL)


# --- reasons -----------------------------------------------------------------------------

LEAVING_MOVES = [
    (c, r) for c, nexts in EXPECTED_NEXT.items() for r in sorted(nexts) if r in NEEDS_A_REASON
]
PLAIN_MOVES = [
    (c, r) for c, nexts in EXPECTED_NEXT.items() for r in sorted(nexts) if r not in NEEDS_A_REASON
]
BLANK_NOTES = [None, "", "   ", "\t\n"]


def test_the_moves_needing_a_reason_are_disqualify_recycle_and_lose() -> None:
    assert NEEDS_REASON == NEEDS_A_REASON
    assert len(LEAVING_MOVES) == 8


@pytest.mark.parametrize(("current", "requested"), LEAVING_MOVES, ids=str)
def test_leaving_the_funnel_without_a_reason_is_refused(
    current: LeadStatus, requested: LeadStatus
) -> None:
    with pytest.raises(ReasonRequired, match=str(requested)):
        check_transition(current, requested, None, None)
    with pytest.raises(ReasonRequired):
        check_transition(current, requested, None, "a note is not a reason")


@pytest.mark.parametrize("note", BLANK_NOTES, ids=repr)
@pytest.mark.parametrize(("current", "requested"), LEAVING_MOVES, ids=str)
def test_reason_other_without_a_note_is_refused(
    current: LeadStatus, requested: LeadStatus, note: str | None
) -> None:
    with pytest.raises(ReasonRequired, match="other"):
        check_transition(current, requested, Reason.OTHER, note)


@pytest.mark.parametrize(("current", "requested"), LEAVING_MOVES, ids=str)
def test_reason_other_with_a_note_is_accepted(current: LeadStatus, requested: LeadStatus) -> None:
    check_transition(current, requested, Reason.OTHER, "bought through a reseller")
    check_transition(current, requested, Reason.OTHER, "  x  ")


@pytest.mark.parametrize("reason", [r for r in Reason if r is not Reason.OTHER], ids=str)
@pytest.mark.parametrize(("current", "requested"), LEAVING_MOVES, ids=str)
def test_any_named_reason_needs_no_note(
    current: LeadStatus, requested: LeadStatus, reason: Reason
) -> None:
    check_transition(current, requested, reason, None)
    check_transition(current, requested, reason, "")


@pytest.mark.parametrize(("current", "requested"), PLAIN_MOVES, ids=str)
def test_moving_forward_needs_no_reason(current: LeadStatus, requested: LeadStatus) -> None:
    check_transition(current, requested, None, None)


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


# --- properties --------------------------------------------------------------------------

statuses = st.sampled_from(list(LeadStatus))
reasons = st.none() | st.sampled_from(list(Reason))
notes = st.none() | st.sampled_from(["", "   ", "called twice", "x"])


@given(data=st.data())
def test_any_walk_from_assigned_ends_in_a_final_status_within_5_steps(
    data: st.DataObject,
) -> None:
    current = S.ASSIGNED
    steps = 0
    while steps < 20:  # a bound well above 5, so a cycle fails instead of hanging
        allowed = [s for s in LeadStatus if not refused_pair(current, s)]
        if not allowed:
            break
        current = data.draw(st.sampled_from(allowed))
        steps += 1

    assert steps <= 5
    assert current in FINAL


@given(current=st.sampled_from(sorted(FINAL)), requested=statuses, reason=reasons, note=notes)
def test_a_final_status_never_allows_any_move(
    current: LeadStatus, requested: LeadStatus, reason: Reason | None, note: str | None
) -> None:
    with pytest.raises(TransitionRefused):
        check_transition(current, requested, reason, note)


@given(requests=st.lists(st.tuples(statuses, reasons, notes), max_size=30))
def test_random_status_requests_never_leave_the_lifecycle(
    requests: list[tuple[LeadStatus, Reason | None, str | None]],
) -> None:
    current = S.ASSIGNED
    for requested, reason, note in requests:
        try:
            check_transition(current, requested, reason, note)
        except TransitionRefused:
            assert requested not in TRANSITIONS[current]
            continue
        except ReasonRequired:
            assert requested in TRANSITIONS[current]
            assert (requested in NEEDS_A_REASON and reason is None) or (
                reason is Reason.OTHER and not (note or "").strip()
            )
            continue
        assert requested in TRANSITIONS[current]
        assert FUNNEL_STEP[requested] > FUNNEL_STEP[current]
        assert current not in FINAL
        if not is_working(current):
            assert not is_working(requested)
        current = requested
    assert current in TRANSITIONS
