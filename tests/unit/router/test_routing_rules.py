"""The router's pure rules: who may take a lead, who gets it, who is nurtured, what waits first.

Expected outcomes are computed from the rules in the module docstring (eligible = active and
working < capacity; least loaded = working / capacity / weight; ties to the oldest last
assignment, never-assigned first; then rep id), not read back from the implementation.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handoff_router.routing import RepLoad, backlog_priority, choose_rep, goes_to_nurture
from handoff_schemas import Candidate, FitGrade

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

A, B, C, D = FitGrade.A, FitGrade.B, FitGrade.C, FitGrade.D


def ago(minutes: int) -> datetime:
    return NOW - timedelta(minutes=minutes)


def rep(
    rep_id: str,
    working: int = 0,
    capacity: int = 5,
    *,
    active: bool = True,
    weight: float = 1.0,
    last: datetime | None = None,
) -> RepLoad:
    return RepLoad(
        rep_id=rep_id,
        name=f"Rep {rep_id}",
        working=working,
        capacity=capacity,
        active=active,
        weight=weight,
        last_assigned_at=last,
    )


def chosen_id(reps: Sequence[RepLoad]) -> str | None:
    chosen, _ = choose_rep(reps)
    return chosen.rep_id if chosen else None


def by_id(candidates: list[Candidate]) -> dict[str, Candidate]:
    return {c.rep_id: c for c in candidates}


def has_room(r: RepLoad) -> bool:
    """Eligibility as documented, independent of RepLoad.has_room."""
    return r.active and r.working < r.capacity


def exact_load(r: RepLoad) -> Fraction:
    """The documented load in exact arithmetic: working / capacity / weight."""
    return Fraction(r.working, r.capacity) / Fraction(r.weight)


# --- eligibility -------------------------------------------------------------------------


def test_an_inactive_rep_never_gets_a_lead_even_when_empty() -> None:
    reps = [rep("away", 0, 10, active=False), rep("busy", 4, 5, last=ago(1))]

    assert chosen_id(reps) == "busy"
    assert chosen_id([rep("away", 0, 10, active=False)]) is None


def test_a_rep_at_capacity_never_gets_a_lead() -> None:
    reps = [rep("full", 5, 5), rep("almost", 9, 10, last=ago(1))]

    assert chosen_id(reps) == "almost"
    assert chosen_id([rep("full", 5, 5)]) is None


def test_a_rep_above_capacity_after_a_capacity_cut_never_gets_a_lead() -> None:
    reps = [rep("cut", 7, 3), rep("other", 9, 10)]

    assert chosen_id(reps) == "other"
    assert chosen_id([rep("cut", 7, 3)]) is None


def test_a_rep_with_zero_capacity_never_gets_a_lead() -> None:
    reps = [rep("zero", 0, 0), rep("almost", 9, 10, last=ago(1))]

    assert chosen_id(reps) == "almost"
    assert chosen_id([rep("zero", 0, 0)]) is None


def test_a_zero_capacity_rep_counts_as_more_loaded_than_any_rep() -> None:
    assert rep("zero", 0, 0).load > rep("overfull", 10_000, 1, weight=0.01).load
    assert not rep("zero", 0, 0).has_room


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (rep("x", 0, 1), True),
        (rep("x", 4, 5), True),
        (rep("x", 5, 5), False),
        (rep("x", 6, 5), False),
        (rep("x", 0, 0), False),
        (rep("x", 0, 5, active=False), False),
        (rep("x", 5, 5, active=False), False),
    ],
    ids=["empty-cap-1", "one-slot-left", "full", "over", "zero-capacity", "inactive", "both"],
)
def test_has_room_means_active_and_below_capacity(r: RepLoad, expected: bool) -> None:
    assert r.has_room is expected


# --- least loaded wins -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reps", "expected"),
    [
        pytest.param([rep("a", 3, 5), rep("b", 1, 5), rep("c", 2, 5)], "b", id="fewest-leads"),
        pytest.param(
            # 5/10 = 0.5 beats 2/3 = 0.67: share of capacity, not the count of leads.
            [rep("small", 2, 3), rep("large", 5, 10)],
            "large",
            id="share-of-capacity-not-count",
        ),
        pytest.param(
            # Load beats recency: the less loaded rep wins although assigned a second ago.
            [rep("idle", 1, 5), rep("fresh", 0, 5, last=NOW)],
            "fresh",
            id="load-before-recency",
        ),
        pytest.param(
            [rep("z", 0, 5), rep("a", 1, 5)],
            "z",
            id="load-before-rep-id",
        ),
        pytest.param(
            [rep("a", 2, 5, active=False), rep("b", 4, 5), rep("c", 5, 5)],
            "b",
            id="least-loaded-among-eligible-only",
        ),
    ],
)
def test_the_least_loaded_eligible_rep_gets_the_lead(reps: list[RepLoad], expected: str) -> None:
    assert chosen_id(reps) == expected


def test_a_weight_2_rep_at_2_of_4_ties_with_a_weight_1_rep_at_1_of_4() -> None:
    heavy = rep("heavy", 2, 4, weight=2.0)
    light = rep("light", 1, 4, weight=1.0)

    # 2/4/2 = 0.25 and 1/4/1 = 0.25: an exact tie, so the older last assignment decides.
    assert heavy.load == light.load == 0.25
    older_heavy = [
        dataclasses.replace(heavy, last_assigned_at=ago(60)),
        dataclasses.replace(light, last_assigned_at=ago(5)),
    ]
    older_light = [
        dataclasses.replace(heavy, last_assigned_at=ago(5)),
        dataclasses.replace(light, last_assigned_at=ago(60)),
    ]
    assert chosen_id(older_heavy) == "heavy"
    assert chosen_id(older_light) == "light"
    # Same instant: rep id decides ("heavy" < "light").
    same = [dataclasses.replace(r, last_assigned_at=ago(5)) for r in (light, heavy)]
    assert chosen_id(same) == "heavy"


@pytest.mark.parametrize(
    ("reps", "expected"),
    [
        # 3/4/2 = 0.375 < 2/4/1 = 0.5: the weight-2 rep wins while holding more leads.
        pytest.param(
            [rep("light", 2, 4, weight=1.0), rep("heavy", 3, 4, weight=2.0)],
            "heavy",
            id="weight-2-holding-more-still-wins",
        ),
        # 4/4 is full: weight never makes room.
        pytest.param(
            [rep("light", 3, 4, weight=1.0), rep("heavy", 4, 4, weight=2.0)],
            "light",
            id="weight-never-beats-capacity",
        ),
        # 1/4/0.5 = 0.5 < 3/4 = 0.75.
        pytest.param(
            [rep("half", 1, 4, weight=0.5), rep("one", 3, 4, weight=1.0)],
            "half",
            id="half-weight-below",
        ),
        # 2/4/0.5 = 1.0 > 3/4 = 0.75.
        pytest.param(
            [rep("half", 2, 4, weight=0.5), rep("one", 3, 4, weight=1.0)],
            "one",
            id="half-weight-above",
        ),
    ],
)
def test_weight_scales_the_load_down(reps: list[RepLoad], expected: str) -> None:
    assert chosen_id(reps) == expected


def test_a_weight_2_rep_takes_twice_the_share_of_new_leads() -> None:
    reps = [rep("heavy", 0, 30, weight=2.0), rep("light", 0, 30, weight=1.0)]

    final = simulate(reps, leads=30)

    assert working_of(final) == {"heavy": 20, "light": 10}


# --- ties --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reps", "expected"),
    [
        pytest.param(
            [
                rep("a", 1, 5, last=ago(5)),
                rep("b", 1, 5, last=ago(60)),
                rep("c", 1, 5, last=ago(30)),
            ],
            "b",
            id="oldest-last-assignment",
        ),
        pytest.param(
            # The never-assigned rep has the later id and still wins the tie.
            [rep("a", 1, 5, last=ago(10_000)), rep("b", 1, 5)],
            "b",
            id="never-assigned-beats-assigned",
        ),
        pytest.param(
            [rep("b", 0, 5), rep("a", 0, 5), rep("c", 0, 5)],
            "a",
            id="never-assigned-all-rep-id",
        ),
        pytest.param(
            [rep("b", 2, 5, last=ago(7)), rep("a", 2, 5, last=ago(7))],
            "a",
            id="same-instant-rep-id",
        ),
        pytest.param(
            # 1/4 and 2/8 are the same share.
            [rep("a", 2, 8, last=ago(1)), rep("b", 1, 4, last=ago(2))],
            "b",
            id="equal-share-different-capacity",
        ),
        pytest.param(
            # A tie among the least loaded only; the older but busier rep is out of it.
            [
                rep("a", 1, 5, last=ago(1)),
                rep("b", 1, 5, last=ago(2)),
                rep("c", 2, 5, last=ago(99)),
            ],
            "b",
            id="tie-among-least-loaded-only",
        ),
    ],
)
def test_a_tie_goes_to_the_rep_waiting_longest(reps: list[RepLoad], expected: str) -> None:
    assert chosen_id(reps) == expected
    assert chosen_id(list(reversed(reps))) == expected


def test_a_never_assigned_rep_beside_timestamped_reps_does_not_break_routing() -> None:
    # Timestamps come from the database as aware datetimes; a never-assigned rep must not
    # force a comparison between an aware datetime and a naive placeholder.
    reps = [rep("a", 1, 5, last=datetime(2025, 1, 1, tzinfo=UTC)), rep("b", 1, 5), rep("c", 1, 5)]

    assert chosen_id(reps) == "b"


@pytest.mark.parametrize(
    ("waiting", "recent"),
    [
        pytest.param(
            rep("waiting", 2, 5, weight=1.0, last=ago(600)),
            rep("recent", 3, 5, weight=1.5, last=ago(1)),
            id="weight-1.5-vs-1",
        ),
        pytest.param(
            rep("waiting", 1, 10, weight=1.0),
            rep("recent", 3, 10, weight=3.0, last=ago(1)),
            id="weight-3-vs-never-assigned",
        ),
    ],
)
def test_equal_weighted_loads_tie_whatever_the_weight(waiting: RepLoad, recent: RepLoad) -> None:
    assert exact_load(waiting) == exact_load(recent)

    assert chosen_id([waiting, recent]) == "waiting"


# --- nobody eligible, and the explanation of every choice ---------------------------------


def test_nobody_eligible_means_no_rep_and_every_candidate_says_why() -> None:
    reps = [
        rep("away", 0, 5, active=False),
        rep("full", 5, 5),
        rep("zero", 0, 0),
        rep("over", 6, 4),
        rep("away-and-full", 5, 5, active=False),
    ]

    chosen, candidates = choose_rep(reps)

    assert chosen is None
    assert {c.rep_id: c.why for c in candidates} == {
        "away": "inactive",
        "full": "at capacity",
        "zero": "at capacity",
        "over": "at capacity",
        "away-and-full": "inactive",
    }
    assert not any(c.chosen for c in candidates)


def test_no_reps_means_no_rep_and_no_candidates() -> None:
    assert choose_rep([]) == (None, [])


def test_every_rep_is_explained_once_and_exactly_one_is_chosen() -> None:
    reps = [
        rep("d", 3, 5, last=ago(9)),
        rep("a", 1, 5, last=ago(3)),
        rep("c", 0, 5, active=False),
        rep("b", 5, 5),
        rep("e", 1, 5, last=ago(1)),
    ]

    chosen, candidates = choose_rep(reps)

    assert chosen is not None
    assert chosen.rep_id == "a"
    assert sorted(c.rep_id for c in candidates) == ["a", "b", "c", "d", "e"]
    assert [c.rep_id for c in candidates if c.chosen] == ["a"]
    whys = {c.rep_id: c.why for c in candidates}
    assert whys == {
        "a": "least loaded with room",
        "b": "at capacity",
        "c": "inactive",
        "d": "more loaded, or assigned more recently",
        "e": "more loaded, or assigned more recently",
    }
    seen = by_id(candidates)
    for r in reps:
        assert (seen[r.rep_id].working, seen[r.rep_id].capacity) == (r.working, r.capacity)


def test_candidates_are_listed_in_rep_id_order() -> None:
    reps = [rep("c"), rep("a"), rep("b")]

    _, candidates = choose_rep(reps)

    assert [c.rep_id for c in candidates] == ["a", "b", "c"]


def test_the_chosen_rep_is_one_of_the_reps_passed_in() -> None:
    reps = [rep("a", 2, 5), rep("b", 1, 5)]

    chosen, _ = choose_rep(reps)

    assert chosen is reps[1]


# --- nurture -----------------------------------------------------------------------------

# nurture_from -> the grades that go to nurture; written out from the docstring.
NURTURED: dict[FitGrade | None, set[FitGrade]] = {
    None: set(),
    A: {A, B, C, D},
    B: {B, C, D},
    C: {C, D},
    D: {D},
}


@pytest.mark.parametrize("nurture_from", [None, A, B, C, D], ids=lambda g: f"from-{g}")
@pytest.mark.parametrize("grade", [A, B, C, D], ids=lambda g: f"grade-{g}")
def test_leads_at_or_below_the_nurture_grade_go_to_marketing(
    grade: FitGrade, nurture_from: FitGrade | None
) -> None:
    assert goes_to_nurture(grade, nurture_from) is (grade in NURTURED[nurture_from])


def test_without_a_nurture_grade_every_lead_goes_to_sales() -> None:
    assert not any(goes_to_nurture(g, None) for g in FitGrade)


# --- backlog -----------------------------------------------------------------------------


def test_the_backlog_drains_best_grade_then_highest_score_then_oldest() -> None:
    queued = [
        ("b-90-old", B, 90.0, ago(300)),
        ("a-10-new", A, 10.0, ago(1)),
        ("d-99-old", D, 99.0, ago(999)),
        ("a-80-new", A, 80.0, ago(2)),
        ("a-80-old", A, 80.0, ago(200)),
        ("c-50-mid", C, 50.0, ago(50)),
        ("b-90-new", B, 90.0, ago(3)),
        ("b-95-new", B, 95.0, ago(4)),
        ("a-80-mid", A, 80.0, ago(100)),
        ("c-0-old", C, 0.0, ago(900)),
        ("b-0-new", B, 0.0, ago(5)),
        ("a-100-new", A, 100.0, ago(0)),
    ]
    expected = [
        "a-100-new",
        "a-80-old",
        "a-80-mid",
        "a-80-new",
        "a-10-new",
        "b-95-new",
        "b-90-old",
        "b-90-new",
        "b-0-new",
        "c-50-mid",
        "c-0-old",
        "d-99-old",
    ]
    for seed in range(5):
        shuffled = list(queued)
        random.Random(seed).shuffle(shuffled)

        ordered = sorted(shuffled, key=lambda q: backlog_priority(q[1], q[2], q[3]))

        assert [q[0] for q in ordered] == expected


def test_a_better_grade_drains_first_whatever_its_score() -> None:
    assert backlog_priority(A, 0.0, NOW) < backlog_priority(B, 100.0, ago(10_000))
    assert backlog_priority(C, 0.0, NOW) < backlog_priority(D, 100.0, ago(10_000))


# --- properties --------------------------------------------------------------------------

REP_IDS = [f"rep-{n:02d}" for n in range(12)]
WEIGHTS = [0.5, 1.0, 1.5, 2.0, 3.0]
# Powers of two scale a float exactly, so equal loads stay equal floats.
EXACT_WEIGHTS = [0.5, 1.0, 2.0, 4.0]

timestamps = st.none() | st.integers(0, 500).map(ago)


@st.composite
def rep_loads(draw: st.DrawFn, weights: Sequence[float] = WEIGHTS) -> RepLoad:
    return rep(
        draw(st.sampled_from(REP_IDS)),
        draw(st.integers(0, 10)),
        draw(st.integers(0, 10)),
        active=draw(st.booleans()),
        weight=draw(st.sampled_from(weights)),
        last=draw(timestamps),
    )


def teams(weights: Sequence[float] = WEIGHTS) -> st.SearchStrategy[list[RepLoad]]:
    return st.lists(rep_loads(weights), max_size=8, unique_by=lambda r: r.rep_id)


def simulate(reps: Sequence[RepLoad], leads: int) -> list[RepLoad]:
    """Assign leads one by one as the router does; check each assignment is legal."""
    state = list(reps)
    clock = NOW
    for _ in range(leads):
        chosen, _ = choose_rep(state)
        if chosen is None:
            break
        assert has_room(chosen)
        clock += timedelta(seconds=1)
        state = [
            dataclasses.replace(r, working=r.working + 1, last_assigned_at=clock)
            if r is chosen
            else r
            for r in state
        ]
    return state


def working_of(reps: Sequence[RepLoad]) -> dict[str, int]:
    return {r.rep_id: r.working for r in reps}


def free_room(reps: Sequence[RepLoad]) -> int:
    return sum(max(0, r.capacity - r.working) for r in reps if r.active)


@given(reps=teams())
def test_the_chosen_rep_is_always_active_with_room(reps: list[RepLoad]) -> None:
    chosen, _ = choose_rep(reps)

    if chosen is None:
        assert not any(has_room(r) for r in reps)
    else:
        assert chosen.active
        assert chosen.working < chosen.capacity
        assert any(chosen is r for r in reps)


@given(reps=teams())
def test_no_eligible_rep_is_less_loaded_than_the_chosen_one(reps: list[RepLoad]) -> None:
    chosen, _ = choose_rep(reps)

    if chosen is not None:
        lowest = exact_load(chosen)
        assert all(exact_load(r) >= lowest for r in reps if has_room(r))


@given(reps=teams(EXACT_WEIGHTS))
def test_among_equally_loaded_reps_the_longest_waiting_wins(reps: list[RepLoad]) -> None:
    chosen, _ = choose_rep(reps)
    eligible = [r for r in reps if has_room(r)]
    if not eligible:
        assert chosen is None
        return
    lowest = min(exact_load(r) for r in eligible)
    tied = [r for r in eligible if exact_load(r) == lowest]
    never = sorted(r.rep_id for r in tied if r.last_assigned_at is None)
    if never:
        expected = never[0]
    else:
        oldest = min(r.last_assigned_at for r in tied if r.last_assigned_at is not None)
        expected = min(r.rep_id for r in tied if r.last_assigned_at == oldest)

    assert chosen is not None
    assert chosen.rep_id == expected


@given(reps=teams(), data=st.data())
def test_the_choice_does_not_depend_on_the_order_of_reps(
    reps: list[RepLoad], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(reps))

    first, first_candidates = choose_rep(reps)
    second, second_candidates = choose_rep(shuffled)

    assert (first.rep_id if first else None) == (second.rep_id if second else None)
    assert first_candidates == second_candidates


@given(reps=teams())
def test_every_rep_is_explained_exactly_once(reps: list[RepLoad]) -> None:
    chosen, candidates = choose_rep(reps)

    assert sorted(c.rep_id for c in candidates) == sorted(r.rep_id for r in reps)
    picked = [c.rep_id for c in candidates if c.chosen]
    if any(has_room(r) for r in reps):
        assert chosen is not None
        assert picked == [chosen.rep_id]
    else:
        assert picked == []
    seen = by_id(candidates)
    for r in reps:
        c = seen[r.rep_id]
        assert (c.working, c.capacity) == (r.working, r.capacity)
        if not r.active:
            assert c.why == "inactive"
        elif r.working >= r.capacity:
            assert c.why == "at capacity"
        elif c.chosen:
            assert c.why == "least loaded with room"
        else:
            assert c.why == "more loaded, or assigned more recently"


@given(reps=teams(), leads=st.integers(0, 80))
def test_assigning_leads_one_by_one_never_overfills_a_rep(reps: list[RepLoad], leads: int) -> None:
    final = simulate(reps, leads)

    assigned = sum(r.working for r in final) - sum(r.working for r in reps)
    assert assigned == min(leads, free_room(reps))
    for before, after in zip(reps, final, strict=True):
        assert after.working >= before.working
        if after.working > before.working:
            assert before.active
            assert after.working <= after.capacity
    if leads >= free_room(reps):
        assert choose_rep(final)[0] is None


@given(k=st.integers(1, 6), capacity=st.integers(1, 6), extra=st.integers(0, 3))
def test_identical_empty_reps_fill_up_evenly(k: int, capacity: int, extra: int) -> None:
    reps = [rep(REP_IDS[i], 0, capacity) for i in range(k)]
    state = list(reps)
    clock = NOW
    for _ in range(k * capacity):
        chosen, _ = choose_rep(state)
        assert chosen is not None
        clock += timedelta(seconds=1)
        state = [
            dataclasses.replace(r, working=r.working + 1, last_assigned_at=clock)
            if r is chosen
            else r
            for r in state
        ]
        counts = [r.working for r in state]
        # Round robin: nobody is ever more than one lead ahead of anybody else.
        assert max(counts) - min(counts) <= 1

    assert all(r.working == capacity for r in state)
    assert simulate(state, extra) == state


def test_identical_empty_reps_get_their_first_leads_in_rep_id_order() -> None:
    reps = [rep("c", 0, 3), rep("a", 0, 3), rep("b", 0, 3)]
    order: list[str] = []
    state = list(reps)
    clock = NOW
    for _ in range(6):
        chosen, _ = choose_rep(state)
        assert chosen is not None
        order.append(chosen.rep_id)
        clock += timedelta(seconds=1)
        state = [
            dataclasses.replace(r, working=r.working + 1, last_assigned_at=clock)
            if r is chosen
            else r
            for r in state
        ]

    assert order == ["a", "b", "c", "a", "b", "c"]


@given(heavy_share=st.integers(1, 10))
def test_weight_2_keeps_twice_the_leads_of_weight_1(heavy_share: int) -> None:
    reps = [rep("heavy", 0, 100, weight=2.0), rep("light", 0, 100, weight=1.0)]

    final = simulate(reps, leads=3 * heavy_share)

    assert working_of(final) == {"heavy": 2 * heavy_share, "light": heavy_share}


backlog_entries = st.tuples(
    st.sampled_from(list(FitGrade)),
    st.sampled_from([0.0, 12.5, 50.0, 99.99, 100.0]) | st.floats(0, 100),
    st.integers(0, 20).map(ago),
)

GRADE_ORDER = {A: 0, B: 1, C: 2, D: 3}


@given(entries=st.lists(backlog_entries, max_size=30))
def test_the_backlog_order_is_grade_then_score_then_age(
    entries: list[tuple[FitGrade, float, datetime]],
) -> None:
    ordered = sorted(entries, key=lambda e: backlog_priority(*e))

    for (g1, s1, t1), (g2, s2, t2) in pairwise(ordered):
        assert GRADE_ORDER[g1] <= GRADE_ORDER[g2]
        if g1 == g2:
            assert s1 >= s2
            if s1 == s2:
                assert t1 <= t2
