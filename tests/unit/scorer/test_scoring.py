"""The scorer's pure scoring model: fit criteria, disqualifiers, engagement, grades, ICP rules."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from handoff_schemas.events import Activity, Contribution, FitGrade, LeadProfile
from handoff_scorer.scoring import (
    Engagement,
    EngagementLevels,
    GradeThresholds,
    IcpDocument,
    ScoreResult,
    engagement_points,
    load_demo_icp,
    score_lead,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

# Weights add up to 100, so a lead's fit score equals the points it earns.
BASE_ICP: dict[str, Any] = {
    "name": "Test ICP",
    "description": "Software and fintech companies in DACH and the US.",
    "fit": {
        "industries": {"weight": 40, "names": ["Software", "Fintech"]},
        "employees": {
            "weight": 30,
            "ranges": [
                {"min": 50, "max": 199, "points": 20},
                {"min": 200, "max": 1000, "points": 30},
                {"min": 100, "max": None, "points": 10},
            ],
        },
        "countries": {
            "weight": 20,
            "regions": [
                {"name": "DACH", "codes": ["DE", "AT", "CH"], "points": 20},
                {"codes": ["US"], "points": 10},
            ],
        },
        "titles": {
            "weight": 10,
            "seniority": [
                {"keywords": ["manager"], "points": 4},
                {"keywords": ["vp", "vice president", "chief"], "points": 10},
            ],
        },
    },
    "disqualifiers": {
        "free_mail_domains": ["gmail.com"],
        "competitor_domains": ["rival.io"],
        "student_keywords": ["student", "intern"],
    },
    "engagement": {
        "signals": {"demo_requested": 40, "webinar_attended": 10},
        "half_life_days": 10,
        "levels": {"1": 40, "2": 20, "3": 5},
    },
    "grades": {"A": 80, "B": 60, "C": 40},
}

_DELETE = object()


def icp_dict(**edits: Any) -> dict[str, Any]:
    """BASE_ICP with edits keyed by dotted path ("fit.employees.ranges.0.max"); _DELETE drops."""
    document = copy.deepcopy(BASE_ICP)
    for path, value in edits.items():
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if value is _DELETE:
            del node[key]
        else:
            node[key] = value
    return document


def make_icp(**edits: Any) -> IcpDocument:
    return IcpDocument.model_validate(icp_dict(**edits))


def make_lead(**fields: Any) -> LeadProfile:
    fields.setdefault("email", "ada@acme.io")
    return LeadProfile(**fields)


def activity(activity_type: str, *, days_ago: float) -> Activity:
    return Activity(type=activity_type, occurred_at=NOW - timedelta(days=days_ago))


def contribution(result: ScoreResult, criterion: str) -> Contribution:
    (found,) = [c for c in result.contributions if c.criterion == criterion]
    return found


ICP = make_icp()


# --- fit criteria -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("industry", "points", "matched"),
    [
        ("Software", 40, "Software"),
        ("software", 40, "software"),
        ("  FINTECH ", 40, "FINTECH"),
        ("Retail", 0, None),
        ("Software Consulting", 0, None),
        (None, 0, None),
    ],
)
def test_industry(industry: str | None, points: float, matched: str | None) -> None:
    result = score_lead(make_lead(industry=industry), ICP, now=NOW)
    assert contribution(result, "industries") == Contribution(
        criterion="industries", matched=matched, points=points, max_points=40
    )


@pytest.mark.parametrize(
    ("employees", "points"),
    [
        (None, 0),
        (0, 0),
        (49, 0),
        (50, 20),
        (150, 20),  # 50-199 (20) beats the open-ended 100+ (10): the best range wins
        (199, 20),
        (200, 30),
        (1000, 30),
        (1001, 10),
        (5_000_000, 10),
    ],
)
def test_employees(employees: int | None, points: float) -> None:
    result = score_lead(make_lead(employees=employees), ICP, now=NOW)
    assert contribution(result, "employees") == Contribution(
        criterion="employees",
        matched=None if points == 0 else str(employees),
        points=points,
        max_points=30,
    )


@pytest.mark.parametrize(
    ("country", "points", "matched"),
    [
        ("DE", 20, "DE"),
        ("ch", 20, "CH"),
        ("US", 10, "US"),
        ("FR", 0, None),
        (None, 0, None),
    ],
)
def test_country(country: str | None, points: float, matched: str | None) -> None:
    result = score_lead(make_lead(country=country), ICP, now=NOW)
    assert contribution(result, "countries") == Contribution(
        criterion="countries", matched=matched, points=points, max_points=20
    )


def test_country_codes_in_the_icp_are_case_insensitive() -> None:
    icp = make_icp(**{"fit.countries.regions": [{"codes": [" se "], "points": 5}]})
    result = score_lead(make_lead(country="SE"), icp, now=NOW)
    assert contribution(result, "countries").points == 5


@pytest.mark.parametrize(
    ("title", "points", "matched"),
    [
        ("VP Sales", 10, "VP"),
        ("vp, sales", 10, "vp"),
        ("Vice  President, Marketing", 10, "Vice  President"),
        ("Chief Technology Officer", 10, "Chief"),
        ("Sales Manager", 4, "Manager"),
        ("Manager to the VP", 10, "VP"),  # the best tier wins, wherever it sits in the title
        ("Mischief Manager", 4, "Manager"),  # "chief" only as a whole word
        ("Senior Managers", 0, None),
        ("Engineer", 0, None),
        (None, 0, None),
    ],
)
def test_title(title: str | None, points: float, matched: str | None) -> None:
    result = score_lead(make_lead(title=title), ICP, now=NOW)
    assert contribution(result, "titles") == Contribution(
        criterion="titles", matched=matched, points=points, max_points=10
    )


TECH_ICP = make_icp(
    **{
        "fit.technologies": {
            "weight": 10,
            "points_each": 4,
            "names": ["Kubernetes", "Google  Cloud", "Stripe"],
        }
    }
)


@pytest.mark.parametrize(
    ("technologies", "points", "matched"),
    [
        (["Kubernetes"], 4, "Kubernetes"),
        (["Stripe", "Kubernetes"], 8, "Stripe, Kubernetes"),  # in the lead's order
        (["kubernetes", " STRIPE "], 8, "kubernetes, STRIPE"),  # the lead's own spelling
        (["google cloud"], 4, "google cloud"),
        (["Google\tCloud "], 4, "Google\tCloud"),
        (["Stripe", "Google Cloud", "Kubernetes"], 10, "Stripe, Google Cloud, Kubernetes"),
        (["Stripe", "stripe", " Stripe"], 4, "Stripe"),  # the same technology counts once
        (["Kubernetes", "Salesforce"], 4, "Kubernetes"),
        (["Salesforce", "HubSpot"], 0, None),
        (["Kube"], 0, None),
        (["Stripe Connect"], 0, None),  # whole names only
        (["  "], 0, None),
        ([], 0, None),
    ],
)
def test_technologies(technologies: list[str], points: float, matched: str | None) -> None:
    result = score_lead(make_lead(technologies=technologies), TECH_ICP, now=NOW)
    assert contribution(result, "technologies") == Contribution(
        criterion="technologies", matched=matched, points=points, max_points=10
    )


def test_technologies_count_towards_the_fit_score_after_the_titles() -> None:
    lead = make_lead(industry="Software", employees=500, country="DE", technologies=["Stripe"])
    result = score_lead(lead, TECH_ICP, now=NOW)

    # 40 + 30 + 20 + 0 + 4 of 110
    assert result.score == 85.45
    assert [c.criterion for c in result.contributions] == [
        "industries",
        "employees",
        "countries",
        "titles",
        "technologies",
    ]


def test_technologies_alone_can_make_an_icp() -> None:
    icp = make_icp(
        **{
            "fit": {"technologies": {"weight": 10, "points_each": 10, "names": ["AWS"]}},
        }
    )
    assert score_lead(make_lead(technologies=["aws"]), icp, now=NOW).score == 100
    assert score_lead(make_lead(), icp, now=NOW).score == 0


def test_a_lead_without_data_gets_every_criterion_with_zero_points() -> None:
    result = score_lead(make_lead(), ICP, now=NOW)

    assert result.score == 0
    assert result.grade is FitGrade.D
    assert [(c.criterion, c.matched, c.points) for c in result.contributions] == [
        ("industries", None, 0),
        ("employees", None, 0),
        ("countries", None, 0),
        ("titles", None, 0),
    ]


def test_the_score_is_the_share_of_available_points() -> None:
    lead = make_lead(industry="Fintech", employees=120, country="US", title="Manager")
    # 40 + 20 + 10 + 4 of 100
    assert score_lead(lead, ICP, now=NOW).score == 74


def test_omitted_criteria_do_not_count() -> None:
    icp = make_icp(**{"fit.employees": _DELETE, "fit.countries": _DELETE, "fit.titles": _DELETE})
    result = score_lead(make_lead(industry="Software"), icp, now=NOW)

    assert result.score == 100
    assert [c.criterion for c in result.contributions] == ["industries"]


def test_the_score_is_rounded_to_two_decimals() -> None:
    icp = make_icp(**{"fit.countries": _DELETE, "fit.titles": _DELETE})
    # 20 of the 70 points industries and employees offer
    assert score_lead(make_lead(employees=60), icp, now=NOW).score == 28.57


# --- disqualifiers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "domain", "title", "expected"),
    [
        ("ada@gmail.com", None, None, ["free_mail:gmail.com"]),
        ("Ada@GMail.COM", None, None, ["free_mail:gmail.com"]),
        ("ada@acme.io", " Gmail.com. ", None, ["free_mail:gmail.com"]),
        ("ada@gmail.com", "acme.io", None, []),  # the company domain, when known, decides
        ("ada@gmail.com", "  ", None, ["free_mail:gmail.com"]),
        ("bob@rival.io", None, None, ["competitor:rival.io"]),
        ("bob@eu.rival.io", None, None, ["competitor:rival.io"]),
        ("bob@notrival.io", None, None, []),
        ("eve@acme.io", None, "Working Student", ["student:student"]),
        ("eve@acme.io", None, "Marketing INTERN", ["student:intern"]),
        ("eve@acme.io", None, "International Sales Director", []),
        (
            "eve@gmail.com",
            None,
            "Student intern",
            ["free_mail:gmail.com", "student:student", "student:intern"],
        ),
        ("ada@acme.io", None, "VP Sales", []),
    ],
)
def test_disqualifiers(
    email: str, domain: str | None, title: str | None, expected: list[str]
) -> None:
    result = score_lead(make_lead(email=email, domain=domain, title=title), ICP, now=NOW)
    assert result.disqualifiers == expected


def test_a_disqualifier_forces_grade_d_but_keeps_the_fit_score() -> None:
    ideal = {"industry": "Software", "employees": 500, "country": "DE", "title": "VP Sales"}

    fine = score_lead(make_lead(**ideal), ICP, now=NOW)
    disqualified = score_lead(make_lead(email="ada@gmail.com", **ideal), ICP, now=NOW)

    assert (fine.score, fine.grade) == (100, FitGrade.A)
    assert (disqualified.score, disqualified.grade) == (100, FitGrade.D)


# --- grades -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "grade"),
    [
        (100, FitGrade.A),
        (80, FitGrade.A),
        (79.99, FitGrade.B),
        (60, FitGrade.B),
        (59.99, FitGrade.C),
        (40, FitGrade.C),
        (39.99, FitGrade.D),
        (0, FitGrade.D),
    ],
)
def test_grade_thresholds(score: float, grade: FitGrade) -> None:
    assert ICP.grades.grade_for(score) is grade


@pytest.mark.parametrize(
    ("fields", "score", "grade"),
    [
        ({"industry": "Software", "employees": 300, "country": "US"}, 80, FitGrade.A),
        ({"industry": "Software", "employees": 300, "title": "Manager"}, 74, FitGrade.B),
        ({"industry": "Software", "employees": 60}, 60, FitGrade.B),
        ({"industry": "Software"}, 40, FitGrade.C),
        ({"employees": 300, "title": "Manager"}, 34, FitGrade.D),
    ],
)
def test_grades_of_scored_leads(fields: dict[str, Any], score: float, grade: FitGrade) -> None:
    result = score_lead(make_lead(**fields), ICP, now=NOW)
    assert (result.score, result.grade) == (score, grade)


# --- engagement ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "level"),
    [(100, 1), (40, 1), (39.99, 2), (20, 2), (19.99, 3), (5, 3), (4.99, 4), (0, 4)],
)
def test_engagement_level_thresholds(points: float, level: int) -> None:
    assert ICP.engagement.levels.level_for(points) == level


@pytest.mark.parametrize(
    ("activities", "level"),
    [
        ([], 4),
        ([activity("webinar_attended", days_ago=0)], 3),
        ([activity("webinar_attended", days_ago=0), activity("webinar_attended", days_ago=0)], 2),
        ([activity("demo_requested", days_ago=0)], 1),
        ([activity("demo_requested", days_ago=10)], 2),  # one half-life later: 20 points
        ([activity("demo_requested", days_ago=30)], 3),  # three half-lives: 5 points
        ([activity("demo_requested", days_ago=40)], 4),
    ],
)
def test_engagement_levels_of_scored_leads(activities: list[Activity], level: int) -> None:
    assert score_lead(make_lead(activities=activities), ICP, now=NOW).engagement_level == level


@pytest.mark.parametrize(
    ("days_ago", "points"),
    [(0, 40), (10, 20), (20, 10), (5, 40 * 0.5**0.5), (-3, 40)],  # the future counts as now
)
def test_each_half_life_halves_the_points(days_ago: float, points: float) -> None:
    earned = engagement_points(
        [activity("demo_requested", days_ago=days_ago)], ICP.engagement, now=NOW
    )
    assert earned == pytest.approx(points)


def test_activity_types_match_case_insensitively() -> None:
    earned = engagement_points([activity(" Demo_Requested", days_ago=0)], ICP.engagement, now=NOW)
    assert earned == 40


def test_activity_times_without_a_timezone_are_refused_not_guessed() -> None:
    with pytest.raises(ValidationError, match="occurred_at"):
        Activity(type="demo_requested", occurred_at=datetime(2025, 5, 22, 12, 0))


def test_unknown_activity_types_score_zero_but_are_shown() -> None:
    activities = [
        activity("podcast_listened", days_ago=1),
        activity("webinar_attended", days_ago=10),
    ]
    result = score_lead(make_lead(activities=activities), ICP, now=NOW)

    assert engagement_points(activities[:1], ICP.engagement, now=NOW) == 0
    assert result.contributions[4:] == [
        Contribution(criterion="engagement:podcast_listened", matched=None, points=0, max_points=0),
        Contribution(
            criterion="engagement:webinar_attended",
            matched="webinar_attended",
            points=5,
            max_points=10,
        ),
    ]


def test_engagement_contributions_add_up_per_activity_type() -> None:
    activities = [activity("demo_requested", days_ago=10), activity("demo_requested", days_ago=20)]
    result = score_lead(make_lead(activities=activities), ICP, now=NOW)

    assert contribution(result, "engagement:demo_requested") == Contribution(
        criterion="engagement:demo_requested", matched="demo_requested", points=30, max_points=80
    )
    assert result.engagement_level == 2


def test_the_result_is_frozen() -> None:
    result = score_lead(make_lead(), ICP, now=NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.score = 100  # type: ignore[misc]


# --- ICP validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edits", "loc"),
    [
        ({"colour": "blue"}, ("colour",)),
        ({"fit.industries.name": ["Software"]}, ("fit", "industries", "name")),
        ({"fit.industries.weight": 0}, ("fit", "industries", "weight")),
        ({"fit.industries.names": []}, ("fit", "industries", "names")),
        ({"grades.C": 70}, ("grades", "C")),
        ({"grades.B": 80}, ("grades", "B")),
        ({"grades.A": 101}, ("grades", "A")),
        ({"fit.employees.ranges.0.max": 10}, ("fit", "employees", "ranges", 0, "max")),
        ({"fit.employees.ranges.1.points": 31}, ("fit", "employees", "ranges")),
        (
            {"fit.countries.regions.0.codes": ["DEU"]},
            ("fit", "countries", "regions", 0, "codes", 0),
        ),
        (
            {"fit.titles.seniority.0.keywords": ["  "]},
            ("fit", "titles", "seniority", 0, "keywords", 0),
        ),
        ({"fit": {}}, ("fit",)),
        (
            {"fit.technologies": {"weight": 10, "points_each": 5, "names": ["AWS"], "name": "x"}},
            ("fit", "technologies", "name"),
        ),
        (
            {"fit.technologies": {"weight": 10, "names": ["AWS"]}},
            ("fit", "technologies", "points_each"),
        ),
        (
            {"fit.technologies": {"weight": 10, "points_each": 0, "names": ["AWS"]}},
            ("fit", "technologies", "points_each"),
        ),
        (
            {"fit.technologies": {"weight": 10, "points_each": 11, "names": ["AWS"]}},
            ("fit", "technologies", "points_each"),
        ),
        (
            {"fit.technologies": {"weight": 0, "points_each": 5, "names": ["AWS"]}},
            ("fit", "technologies", "weight"),
        ),
        (
            {"fit.technologies": {"weight": 10, "points_each": 5, "names": []}},
            ("fit", "technologies", "names"),
        ),
        (
            {"fit.technologies": {"weight": 10, "points_each": 5, "names": ["AWS", " "]}},
            ("fit", "technologies", "names", 1),
        ),
        (
            {"fit.technologies": {"weight": 10, "points_each": 5, "names": ["AWS", " aws"]}},
            ("fit", "technologies", "names"),
        ),
        (
            {
                "fit.technologies": {
                    "weight": 10,
                    "points_each": 5,
                    "names": ["Google Cloud", "google  cloud"],
                }
            },
            ("fit", "technologies", "names"),
        ),
        (
            {"disqualifiers.free_mail_domains": ["ada@gmail.com"]},
            ("disqualifiers", "free_mail_domains", 0),
        ),
        ({"engagement.half_life_days": 0}, ("engagement", "half_life_days")),
        ({"engagement.half_life_days": -30}, ("engagement", "half_life_days")),
        ({"engagement.half_life_days": float("nan")}, ("engagement", "half_life_days")),
        ({"engagement.levels.2": 40}, ("engagement", "levels", "2")),
        ({"engagement.levels.3": 0}, ("engagement", "levels", "3")),
        ({"engagement.signals": {"demo": 5, "Demo": 6}}, ("engagement", "signals")),
    ],
)
def test_invalid_icps_are_rejected_naming_the_field(
    edits: dict[str, Any], loc: tuple[str | int, ...]
) -> None:
    with pytest.raises(ValidationError) as raised:
        make_icp(**edits)

    assert loc in [error["loc"] for error in raised.value.errors()]
    assert ".".join(map(str, loc)) in str(raised.value)


def test_an_icp_round_trips_through_json() -> None:
    assert IcpDocument.model_validate_json(ICP.model_dump_json()) == ICP
    assert ICP.model_dump()["engagement"]["levels"] == {"1": 40, "2": 20, "3": 5}


# --- properties ---------------------------------------------------------------------------

INDUSTRIES = ["Software", "Fintech", "E-commerce", "Retail", "Health"]
COUNTRIES = ["DE", "AT", "US", "GB", "FR", "SE"]
TITLE_WORDS = ["vp", "Head", "director", "Chief", "manager", "engineer", "of", "sales", "Student"]
ACTIVITY_TYPES = ["demo_requested", "webinar_attended", "email_clicked", "podcast_listened"]
TECHNOLOGIES = ["Kubernetes", "AWS", "Google Cloud", "Stripe", "Salesforce", "COBOL"]

points = st.floats(min_value=0.1, max_value=100)
slack = st.floats(min_value=0, max_value=20)


def three_descending(low: float, high: float) -> st.SearchStrategy[list[float]]:
    return st.lists(
        st.floats(min_value=low, max_value=high), min_size=3, max_size=3, unique=True
    ).map(lambda values: sorted(values, reverse=True))


@st.composite
def employee_ranges(draw: st.DrawFn) -> dict[str, Any]:
    low = draw(st.integers(0, 5000))
    high = draw(st.none() | st.integers(low, 10_000))
    return {"min": low, "max": high, "points": draw(points)}


country_regions = st.fixed_dictionaries(
    {"codes": st.lists(st.sampled_from(COUNTRIES), min_size=1, max_size=3), "points": points}
)
seniority_tiers = st.fixed_dictionaries(
    {
        "keywords": st.lists(st.sampled_from(TITLE_WORDS[:5]), min_size=1, max_size=3),
        "points": points,
    }
)


def tiered(draw: st.DrawFn, key: str, options: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A criterion with one to three options and a weight at least the best option's points."""
    drawn: list[dict[str, Any]] = draw(st.lists(options, min_size=1, max_size=3))
    return {"weight": max(option["points"] for option in drawn) + draw(slack), key: drawn}


@st.composite
def icps(draw: st.DrawFn) -> IcpDocument:
    criteria = draw(
        st.sets(
            st.sampled_from(["industries", "employees", "countries", "titles", "technologies"]),
            min_size=1,
        )
    )
    fit: dict[str, Any] = {}
    if "industries" in criteria:
        names = draw(st.lists(st.sampled_from(INDUSTRIES), min_size=1, unique=True))
        fit["industries"] = {"weight": draw(points), "names": names}
    if "employees" in criteria:
        fit["employees"] = tiered(draw, "ranges", employee_ranges())
    if "countries" in criteria:
        fit["countries"] = tiered(draw, "regions", country_regions)
    if "titles" in criteria:
        fit["titles"] = tiered(draw, "seniority", seniority_tiers)
    if "technologies" in criteria:
        names = draw(st.lists(st.sampled_from(TECHNOLOGIES[:5]), min_size=1, unique=True))
        each = draw(points)
        fit["technologies"] = {"weight": each + draw(slack), "names": names, "points_each": each}
    grade_a, grade_b, grade_c = draw(three_descending(0.01, 100))
    level_1, level_2, level_3 = draw(three_descending(0.01, 200))
    return IcpDocument.model_validate(
        {
            "name": "Generated",
            "description": "",
            "fit": fit,
            "disqualifiers": {
                "free_mail_domains": ["gmail.com"],
                "competitor_domains": ["rival.io"],
                "student_keywords": ["student"],
            },
            "engagement": {
                "signals": draw(
                    st.dictionaries(st.sampled_from(ACTIVITY_TYPES[:3]), points, min_size=1)
                ),
                "half_life_days": draw(st.floats(min_value=0.1, max_value=365)),
                "levels": {"1": level_1, "2": level_2, "3": level_3},
            },
            "grades": {"A": grade_a, "B": grade_b, "C": grade_c},
        }
    )


activities = st.builds(
    Activity,
    type=st.sampled_from(ACTIVITY_TYPES),
    occurred_at=st.floats(min_value=-30, max_value=3650).map(
        lambda days: NOW - timedelta(days=days)
    ),
)


@st.composite
def leads(draw: st.DrawFn) -> LeadProfile:
    return LeadProfile(
        email=draw(st.sampled_from(["ada@acme.io", "bob@gmail.com", "eve@eu.rival.io"])),
        title=draw(
            st.none() | st.lists(st.sampled_from(TITLE_WORDS), min_size=1, max_size=4).map(" ".join)
        ),
        industry=draw(st.none() | st.sampled_from([*INDUSTRIES, " software", "FINTECH"])),
        employees=draw(st.none() | st.integers(0, 20_000)),
        country=draw(st.none() | st.sampled_from([*COUNTRIES, "de", "us"])),
        activities=draw(st.lists(activities, max_size=6)),
        technologies=draw(
            st.lists(st.sampled_from([*TECHNOLOGIES, "kubernetes", " aws "]), max_size=4)
        ),
    )


@given(lead=leads(), icp=icps())
def test_the_score_stays_within_0_and_100(lead: LeadProfile, icp: IcpDocument) -> None:
    result = score_lead(lead, icp, now=NOW)

    assert 0 <= result.score <= 100
    assert result.score == round(result.score, 2)
    assert 1 <= result.engagement_level <= 4


@given(lead=leads(), icp=icps())
def test_scoring_is_deterministic(lead: LeadProfile, icp: IcpDocument) -> None:
    copied = LeadProfile.model_validate_json(lead.model_dump_json())
    assert score_lead(lead, icp, now=NOW) == score_lead(copied, icp, now=NOW)


@given(lead=leads(), icp=icps())
def test_the_grade_follows_the_thresholds(lead: LeadProfile, icp: IcpDocument) -> None:
    result = score_lead(lead, icp, now=NOW)

    if result.disqualifiers:
        expected = FitGrade.D
    elif result.score >= icp.grades.A:
        expected = FitGrade.A
    elif result.score >= icp.grades.B:
        expected = FitGrade.B
    elif result.score >= icp.grades.C:
        expected = FitGrade.C
    else:
        expected = FitGrade.D
    assert result.grade is expected


GOODNESS = {FitGrade.D: 0, FitGrade.C: 1, FitGrade.B: 2, FitGrade.A: 3}


@given(
    grades=three_descending(0.01, 100),
    scores=st.lists(st.floats(min_value=0, max_value=100), min_size=2, max_size=2).map(sorted),
)
def test_a_higher_score_never_gets_a_worse_grade(grades: list[float], scores: list[float]) -> None:
    thresholds = GradeThresholds.model_validate(dict(zip("ABC", grades, strict=True)))
    lower, higher = (thresholds.grade_for(score) for score in scores)
    assert GOODNESS[lower] <= GOODNESS[higher]


@given(
    levels=three_descending(0.01, 200),
    amounts=st.lists(st.floats(min_value=0, max_value=500), min_size=2, max_size=2).map(sorted),
)
def test_more_engagement_never_gets_a_colder_level(
    levels: list[float], amounts: list[float]
) -> None:
    thresholds = EngagementLevels.model_validate(dict(zip("123", levels, strict=True)))
    less, more = (thresholds.level_for(amount) for amount in amounts)
    assert more <= less


@given(lead=leads(), icp=icps(), data=st.data())
def test_adding_a_matching_value_never_lowers_the_score(
    lead: LeadProfile, icp: IcpDocument, data: st.DataObject
) -> None:
    configured = [
        name
        for name in ("industries", "employees", "countries", "titles", "technologies")
        if getattr(icp.fit, name)
    ]
    criterion = data.draw(st.sampled_from(configured))
    field: str
    value: Any
    if criterion == "industries":
        assert icp.fit.industries is not None
        field, value = "industry", data.draw(st.sampled_from(icp.fit.industries.names))
    elif criterion == "employees":
        assert icp.fit.employees is not None
        band = data.draw(st.sampled_from(icp.fit.employees.ranges))
        top = band.max if band.max is not None else band.min + 10_000
        field, value = "employees", data.draw(st.integers(band.min, top))
    elif criterion == "countries":
        assert icp.fit.countries is not None
        region = data.draw(st.sampled_from(icp.fit.countries.regions))
        field, value = "country", data.draw(st.sampled_from(region.codes))
    elif criterion == "titles":
        assert icp.fit.titles is not None
        tier = data.draw(st.sampled_from(icp.fit.titles.seniority))
        keyword = data.draw(st.sampled_from(tier.keywords))
        # Best match counts, so a title that already matched keeps its words and gains one.
        field, value = "title", f"{lead.title or ''} {keyword}".strip()
    else:
        assert icp.fit.technologies is not None
        name = data.draw(st.sampled_from(icp.fit.technologies.names))
        # Technologies add up, so the lead keeps the ones it has and gains one more.
        field, value = "technologies", [*lead.technologies, name]
    blank = lead if field in {"title", "technologies"} else lead.model_copy(update={field: None})

    before = score_lead(blank, icp, now=NOW)
    after = score_lead(blank.model_copy(update={field: value}), icp, now=NOW)

    assert after.score >= before.score
    assert contribution(after, criterion).matched is not None


@given(
    ages=st.lists(st.floats(min_value=-30, max_value=3650), min_size=2, max_size=2).map(sorted),
    signal=points,
    half_life=st.floats(min_value=0.1, max_value=365),
)
def test_decay_is_never_negative_and_never_grows_with_age(
    ages: list[float], signal: float, half_life: float
) -> None:
    engagement = Engagement.model_validate(
        {
            "signals": {"demo_requested": signal},
            "half_life_days": half_life,
            "levels": {"1": 3, "2": 2, "3": 1},
        }
    )
    younger, older = (
        engagement_points([activity("demo_requested", days_ago=age)], engagement, now=NOW)
        for age in ages
    )
    assert 0 <= older <= younger <= signal


@given(many=st.lists(activities, max_size=10), icp=icps())
def test_engagement_points_are_never_negative(many: list[Activity], icp: IcpDocument) -> None:
    assert engagement_points(many, icp.engagement, now=NOW) >= 0


# --- the demo ICP -------------------------------------------------------------------------


def test_the_demo_icp_loads() -> None:
    icp = load_demo_icp()

    assert icp.name
    assert icp.engagement.half_life_days == 30
    assert {"gmail.com", "gmx.de", "proton.me"} <= set(icp.disqualifiers.free_mail_domains)


IDEAL = {
    "title": "CTO",
    "industry": "Fintech",
    "employees": 400,
    "country": "DE",
    "technologies": ["Kubernetes", "Stripe"],
}
HOT = [activity("demo_requested", days_ago=1), activity("pricing_page_viewed", days_ago=0)]


def test_the_demo_icp_grades_an_ideal_hot_lead_a_and_hot() -> None:
    lead = make_lead(email="maria@northwind-payments.de", activities=HOT, **IDEAL)
    result = score_lead(lead, load_demo_icp(), now=NOW)

    assert result.score == 100
    assert result.grade is FitGrade.A
    assert result.engagement_level == 1
    assert result.disqualifiers == []


@pytest.mark.parametrize(
    ("fields", "score", "grade"),
    [
        # Fit totals 110 points; 100 of them need no technologies, so leads that send none
        # (as most forms do) can still be A.
        ({**IDEAL, "technologies": []}, 90.91, FitGrade.A),
        ({**IDEAL, "technologies": ["AWS"]}, 95.45, FitGrade.A),
        ({**IDEAL, "technologies": ["AWS", "Azure", "Segment"]}, 100, FitGrade.A),
        (
            {"title": "VP Engineering", "industry": "Software", "employees": 250, "country": "DE"},
            90.91,
            FitGrade.A,
        ),
        (
            {"title": "VP Engineering", "industry": "Software", "employees": 30, "country": "DE"},
            72.73,
            FitGrade.B,
        ),
        (
            {
                "title": "Head of Engineering",
                "industry": "Software",
                "employees": 180,
                "country": "DE",
            },
            81.82,
            FitGrade.A,
        ),
        (
            {"title": "CTO", "industry": "Retail", "employees": 300, "country": "DE"},
            63.64,
            FitGrade.B,
        ),
    ],
)
def test_the_demo_icp_grades_leads_with_and_without_technologies(
    fields: dict[str, Any], score: float, grade: FitGrade
) -> None:
    result = score_lead(make_lead(**fields), load_demo_icp(), now=NOW)
    assert (result.score, result.grade) == (score, grade)


@pytest.mark.parametrize(
    ("title", "points"),
    [("CTO", 25), ("Sales Director", 20), ("Head of Growth", 20), ("Team Lead Data", 10)],
)
def test_the_demo_icp_ranks_seniority(title: str, points: float) -> None:
    result = score_lead(make_lead(title=title), load_demo_icp(), now=NOW)
    assert contribution(result, "titles").points == points


def test_the_demo_icp_grades_a_gmail_lead_d() -> None:
    lead = make_lead(email="maria.schmidt@gmail.com", activities=HOT, **IDEAL)
    result = score_lead(lead, load_demo_icp(), now=NOW)

    assert result.grade is FitGrade.D
    assert "free_mail:gmail.com" in result.disqualifiers
