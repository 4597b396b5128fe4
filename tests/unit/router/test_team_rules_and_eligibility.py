"""Which team a lead goes to, and which reps may take it."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handoff_router.routing import (
    Coverage,
    LeadFacts,
    RepLoad,
    Rule,
    WorkingHours,
    business_deadline,
    choose_rep,
    match_rule,
    size_band,
)
from handoff_schemas import FitGrade

# A Tuesday, 10:00 in Berlin.
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def lead(**facts: object) -> LeadFacts:
    return LeadFacts(**{"grade": FitGrade.A, "score": 80.0, **facts})  # type: ignore[arg-type]


def rep(rep_id: str, **fields: object) -> RepLoad:
    return RepLoad(**{"rep_id": rep_id, "name": rep_id, "working": 0, "capacity": 5, **fields})  # type: ignore[arg-type]


DACH = Rule("dach", "team-dach", Coverage.of(countries=["DE", "AT", "CH"]))
ENTERPRISE = Rule("enterprise", "team-ent", Coverage.of(size_bands=["enterprise"]))
FINTECH_A = Rule("fintech-a", "team-fin", Coverage.of(industries=["Fintech"], grades=["A"]))


@pytest.mark.parametrize(
    ("employees", "band"),
    [
        (None, None),
        (0, "small"),
        (49, "small"),
        (50, "mid"),
        (199, "mid"),
        (200, "large"),
        (999, "large"),
        (1000, "enterprise"),
        (250_000, "enterprise"),
    ],
)
def test_company_size_bands(employees: int | None, band: str | None) -> None:
    assert size_band(employees) == band


def test_the_first_matching_rule_in_order_wins() -> None:
    big_german = lead(country="DE", employees=5000)
    assert match_rule([DACH, ENTERPRISE], big_german) is DACH
    assert match_rule([ENTERPRISE, DACH], big_german) is ENTERPRISE


def test_all_conditions_of_a_rule_must_hold() -> None:
    assert match_rule([FINTECH_A], lead(industry="fintech", grade=FitGrade.A)) is FINTECH_A
    assert match_rule([FINTECH_A], lead(industry="Fintech", grade=FitGrade.B)) is None
    assert match_rule([FINTECH_A], lead(industry="Software", grade=FitGrade.A)) is None


def test_no_matching_rule_means_the_fallback_team() -> None:
    assert match_rule([DACH, ENTERPRISE], lead(country="US", employees=20)) is None
    assert match_rule([], lead()) is None


def test_an_unknown_lead_value_never_matches_a_condition_on_it() -> None:
    assert match_rule([DACH], lead(country=None)) is None
    assert match_rule([Rule("any", "t", Coverage())], lead(country=None)) is not None


def test_conditions_ignore_case_and_spacing() -> None:
    rule = Rule("r", "t", Coverage.of(industries=["  E-Commerce "], product_interests=["API"]))
    assert match_rule([rule], lead(industry="e-commerce", product_interest="api")) is rule


def test_a_rep_outside_the_lead_territory_is_not_chosen_and_says_why() -> None:
    uk_only = rep("uk", coverage=Coverage.of(countries=["GB"]))
    anyone = rep("any", working=4)
    chosen, candidates = choose_rep([uk_only, anyone], lead(country="DE"), NOW)
    assert chosen is anyone
    why = {c.rep_id: c.why for c in candidates}
    assert why["uk"] == "country DE not covered"


def test_segments_by_industry_and_size_band() -> None:
    smb = rep("smb", coverage=Coverage.of(size_bands=["small", "mid"]))
    fin = rep("fin", coverage=Coverage.of(industries=["Fintech"]))
    assert choose_rep([smb, fin], lead(employees=5000, industry="Fintech"), NOW)[0] is fin
    assert choose_rep([smb, fin], lead(employees=20, industry="Retail"), NOW)[0] is smb
    chosen, candidates = choose_rep([smb, fin], lead(employees=5000, industry="Retail"), NOW)
    assert chosen is None
    assert {c.why for c in candidates} == {
        "size band enterprise not covered",
        "industry Retail not covered",
    }


def test_out_of_office_reps_take_no_leads_until_they_are_back() -> None:
    away = rep("away", out_of_office=((NOW - timedelta(days=1), NOW + timedelta(days=1)),))
    assert choose_rep([away], lead(), NOW)[0] is None
    assert choose_rep([away], lead(), NOW + timedelta(days=1))[0] is away
    assert choose_rep([away], lead(), NOW)[1][0].why == "out of office"


def test_working_hours_count_only_when_the_team_respects_them() -> None:
    berlin = WorkingHours("Europe/Berlin", time(9), time(17))
    new_york = WorkingHours("America/New_York", time(9), time(17))
    early_ny = rep("ny", working_hours=new_york)  # 04:00 in New York
    in_berlin = rep("ber", working_hours=berlin, working=3)
    assert choose_rep([early_ny, in_berlin], lead(), NOW, respect_hours=True)[0] is in_berlin
    assert choose_rep([early_ny, in_berlin], lead(), NOW, respect_hours=False)[0] is early_ny
    saturday = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    assert choose_rep([in_berlin], lead(), saturday, respect_hours=True)[0] is None


def test_a_rep_at_their_daily_cap_gets_no_more_leads_today() -> None:
    capped = rep("capped", daily_cap=3, assigned_today=3)
    fresh = rep("fresh", daily_cap=3, assigned_today=2, working=4)
    chosen, candidates = choose_rep([capped, fresh], lead(), NOW)
    assert chosen is fresh
    assert {c.rep_id: c.why for c in candidates}["capped"] == "daily cap reached"


@given(
    countries=st.lists(st.sampled_from(["DE", "GB", "US", "FR"]), max_size=3),
    lead_country=st.sampled_from(["DE", "GB", "US", "FR", None]),
    working=st.integers(0, 6),
    capacity=st.integers(0, 6),
    cap=st.one_of(st.none(), st.integers(0, 3)),
    today=st.integers(0, 4),
)
def test_a_chosen_rep_always_covers_the_lead_and_has_room(
    countries: list[str],
    lead_country: str | None,
    working: int,
    capacity: int,
    cap: int | None,
    today: int,
) -> None:
    candidate = rep(
        "r",
        coverage=Coverage.of(countries=countries),
        working=working,
        capacity=capacity,
        daily_cap=cap,
        assigned_today=today,
    )
    chosen, _ = choose_rep([candidate], lead(country=lead_country), NOW)
    if chosen is not None:
        assert working < capacity
        assert cap is None or today < cap
        assert not countries or lead_country in countries


def test_a_lead_with_a_preferred_language_goes_to_a_rep_who_speaks_it() -> None:
    german = rep("de", coverage=Coverage.of(languages=["de"]), working=3)
    english = rep("en", coverage=Coverage.of(languages=["EN"]))
    assert choose_rep([german, english], lead(language="DE"), NOW)[0] is german
    assert choose_rep([german, english], lead(language="en"), NOW)[0] is english
    chosen, candidates = choose_rep([german, english], lead(language="fr"), NOW)
    assert chosen is None
    assert {c.why for c in candidates} == {"language fr not covered"}
    rule = Rule("dach-speakers", "t", Coverage.of(languages=["de"]))
    assert match_rule([rule], lead(language="de")) is rule


BERLIN_OFFICE = WorkingHours("Europe/Berlin", time(9), time(17))


@pytest.mark.parametrize(
    ("start", "allowed", "due"),
    [
        # Tuesday 10:00 Berlin + 1 h: within the day.
        (
            datetime(2026, 11, 24, 9, 0, tzinfo=UTC),
            timedelta(hours=1),
            datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        ),
        # Tuesday 07:00 Berlin, before opening: the clock starts at 09:00.
        (
            datetime(2026, 11, 24, 6, 0, tzinfo=UTC),
            timedelta(minutes=30),
            datetime(2026, 11, 24, 8, 30, tzinfo=UTC),
        ),
        # Friday 16:00 Berlin + 2 h: one hour on Friday, one on Monday morning.
        (
            datetime(2026, 11, 27, 15, 0, tzinfo=UTC),
            timedelta(hours=2),
            datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
        ),
        # Saturday: nothing counts until Monday 09:00.
        (
            datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
            timedelta(minutes=15),
            datetime(2026, 11, 30, 8, 15, tzinfo=UTC),
        ),
    ],
)
def test_business_hours_deadlines_count_only_working_time(
    start: datetime, allowed: timedelta, due: datetime
) -> None:
    assert business_deadline(start, allowed, BERLIN_OFFICE) == due


@given(
    start=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
    ),
    minutes=st.integers(0, 5 * 8 * 60),
    extra=st.integers(0, 600),
)
def test_a_business_deadline_is_never_sooner_and_grows_with_the_allowance(
    start: datetime, minutes: int, extra: int
) -> None:
    due = business_deadline(start, timedelta(minutes=minutes), BERLIN_OFFICE)
    assert due >= start + timedelta(minutes=minutes)
    assert business_deadline(start, timedelta(minutes=minutes + extra), BERLIN_OFFICE) >= due
