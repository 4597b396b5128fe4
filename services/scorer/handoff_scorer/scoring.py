"""Score a lead against the ideal-customer profile (ICP). Pure: no I/O, no database, no clock.

How a lead is scored
--------------------
**Fit** says how closely the person and their company match the ICP. Each fit criterion
(industry, company size, country, job title, technologies) has a weight: the most points it
can give. A lead earns the points of the best option it matches in each criterion, and
nothing for a criterion it does not match or leaves blank. Technologies add up instead: each
listed technology the company uses earns the same points, up to the weight. The fit score is
the share of all available points the lead earned, from 0 to 100, and the grade (A best ...
D worst) follows from the ICP's thresholds on that score.

**Disqualifiers** override fit: a free-mail address, a competitor's domain or a student job
title makes the grade D whatever the score, and each reason is listed on the lead.

**Engagement** says how warm the lead is right now. Each activity (webinar, pricing-page
visit, demo request ...) is worth the points the ICP gives its type, halved every
`half_life_days`, so last week's demo request counts for more than last year's. The total
sets the engagement level from 1 (hot) to 4 (cold).

Every score comes with its contributions, so sales and marketing can see why a lead got its
grade: one per fit criterion (the points earned of the most it could give) and one per
activity type the lead has (its decayed points of what those activities would be worth today).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from handoff_schemas.events import Activity, Contribution, FitGrade, LeadProfile

_SECONDS_PER_DAY = 86_400.0


def _normalise_text(value: str) -> str:
    """Case- and spacing-insensitive form, so "E-Commerce " equals "e-commerce"."""
    return " ".join(value.split()).casefold()


def _normalise_domain(value: str) -> str:
    """Lower-case host name without surrounding whitespace or the DNS root dot."""
    return value.strip().rstrip(".").lower()


def _check_domain(value: str) -> str:
    domain = _normalise_domain(value)
    if not domain or "@" in domain or any(char.isspace() or char == "/" for char in domain):
        raise ValueError(f"{value!r} is not a domain name (expected e.g. 'gmail.com')")
    return domain


def _check_country_code(value: str) -> str:
    code = value.strip().upper()
    if len(code) != 2 or not (code.isascii() and code.isalpha()):
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (e.g. 'DE')")
    return code


Points = Annotated[float, Field(gt=0)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Keyword = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Domain = Annotated[str, AfterValidator(_check_domain)]
CountryCode = Annotated[str, AfterValidator(_check_country_code)]
ActivityType = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class _IcpPart(BaseModel):
    # A typo in a published ICP must fail loudly instead of silently scoring nothing.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _TieredOption(_IcpPart):
    points: Points


def _check_within_weight(options: Sequence[_TieredOption], info: ValidationInfo) -> None:
    weight = info.data.get("weight")
    if weight is None:
        return  # the weight itself is invalid and already reported
    for index, option in enumerate(options):
        if option.points > weight:
            raise ValueError(
                f"{info.field_name}[{index}].points ({option.points:g}) exceeds the "
                f"criterion's weight ({weight:g})"
            )


class IndustryCriterion(_IcpPart):
    """Target industries; a lead in any of them earns the full weight (case-insensitive)."""

    weight: Points
    names: list[Text] = Field(min_length=1)


class EmployeeRange(_TieredOption):
    """A company-size band, both ends inclusive; `max` null means no upper bound."""

    min: int = Field(ge=0)
    max: int | None = Field(default=None, ge=0)

    @field_validator("max")
    @classmethod
    def _max_not_below_min(cls, value: int | None, info: ValidationInfo) -> int | None:
        low = info.data.get("min")
        if value is not None and low is not None and value < low:
            raise ValueError(f"max ({value}) must not be below min ({low})")
        return value

    def contains(self, employees: int) -> bool:
        """Whether a company of this many employees falls in the band."""
        return self.min <= employees and (self.max is None or employees <= self.max)


class EmployeeCriterion(_IcpPart):
    """Company-size bands; the best-paying band the lead falls in counts."""

    weight: Points
    ranges: list[EmployeeRange] = Field(min_length=1)

    @field_validator("ranges")
    @classmethod
    def _ranges_within_weight(
        cls, value: list[EmployeeRange], info: ValidationInfo
    ) -> list[EmployeeRange]:
        _check_within_weight(value, info)
        return value


class CountryRegion(_TieredOption):
    """A group of countries (e.g. DACH) worth the same points; `name` is only a label."""

    name: Text | None = None
    codes: list[CountryCode] = Field(min_length=1)


class CountryCriterion(_IcpPart):
    """Target countries by ISO alpha-2 code; the best-paying region containing the lead's counts."""

    weight: Points
    regions: list[CountryRegion] = Field(min_length=1)

    @field_validator("regions")
    @classmethod
    def _regions_within_weight(
        cls, value: list[CountryRegion], info: ValidationInfo
    ) -> list[CountryRegion]:
        _check_within_weight(value, info)
        return value


class SeniorityTier(_TieredOption):
    """Job-title keywords worth the same points, e.g. "vp", "head", "vice president"."""

    keywords: list[Keyword] = Field(min_length=1)


class TitleCriterion(_IcpPart):
    """Seniority by job title: whole-word, case-insensitive; the best-paying tier counts."""

    weight: Points
    seniority: list[SeniorityTier] = Field(min_length=1)

    @field_validator("seniority")
    @classmethod
    def _tiers_within_weight(
        cls, value: list[SeniorityTier], info: ValidationInfo
    ) -> list[SeniorityTier]:
        _check_within_weight(value, info)
        return value


class TechnologyCriterion(_IcpPart):
    """Target technologies (case-insensitive): each one the lead's company uses earns
    `points_each`, up to the weight."""

    weight: Points
    names: list[Keyword] = Field(min_length=1)
    points_each: Points

    @field_validator("names")
    @classmethod
    def _names_listed_once(cls, value: list[str]) -> list[str]:
        # Names match case- and spacing-insensitively, so two spellings would count twice.
        seen: set[str] = set()
        for name in value:
            key = _normalise_text(name)
            if key in seen:
                raise ValueError(f"technology {name!r} is listed twice")
            seen.add(key)
        return value

    @field_validator("points_each")
    @classmethod
    def _points_each_within_weight(cls, value: float, info: ValidationInfo) -> float:
        weight = info.data.get("weight")
        if weight is not None and value > weight:
            raise ValueError(f"points_each ({value:g}) exceeds the criterion's weight ({weight:g})")
        return value


class FitCriteria(_IcpPart):
    """The fit criteria an ICP uses; leave one out to ignore it."""

    industries: IndustryCriterion | None = None
    employees: EmployeeCriterion | None = None
    countries: CountryCriterion | None = None
    titles: TitleCriterion | None = None
    technologies: TechnologyCriterion | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Self:
        if not any(
            criterion is not None
            for criterion in (
                self.industries,
                self.employees,
                self.countries,
                self.titles,
                self.technologies,
            )
        ):
            raise ValueError("fit needs at least one criterion (industries, employees, ...)")
        return self


class Disqualifiers(_IcpPart):
    """Leads sales should never get, whatever their fit; any hit makes the grade D.

    Domains match the lead's domain or any subdomain of it ("eu.rival.io" hits "rival.io").
    """

    free_mail_domains: list[Domain] = Field(default_factory=list)
    competitor_domains: list[Domain] = Field(default_factory=list)
    student_keywords: list[Keyword] = Field(default_factory=list)


class EngagementLevels(_IcpPart):
    """Engagement points a lead needs for levels 1 (hot), 2 and 3; below level 3 is 4 (cold)."""

    # JSON says "1", "2", "3" like the levels on LeadScoredV1; Python code may say level_1.
    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    level_1: float = Field(alias="1", gt=0)
    level_2: float = Field(alias="2", gt=0)
    level_3: float = Field(alias="3", gt=0)

    @field_validator("level_2", "level_3")
    @classmethod
    def _below_previous_level(cls, value: float, info: ValidationInfo) -> float:
        level = str(info.field_name)[-1]
        previous = str(int(level) - 1)
        above = info.data.get(f"level_{previous}")
        if above is not None and value >= above:
            raise ValueError(
                f"level {level} ({value:g}) must need fewer points "
                f"than level {previous} ({above:g})"
            )
        return value

    def level_for(self, points: float) -> int:
        """The engagement level for this many (decayed) engagement points."""
        for level, threshold in ((1, self.level_1), (2, self.level_2), (3, self.level_3)):
            if points >= threshold:
                return level
        return 4


class Engagement(_IcpPart):
    """Points per activity type, their half-life in days and the level thresholds."""

    signals: dict[ActivityType, Points] = Field(min_length=1)
    half_life_days: float = Field(gt=0)
    levels: EngagementLevels

    @field_validator("signals")
    @classmethod
    def _normalise_signal_types(cls, value: dict[str, float]) -> dict[str, float]:
        # Activity types are matched case-insensitively, so two spellings would be ambiguous.
        normalised: dict[str, float] = {}
        for activity_type, points in value.items():
            key = activity_type.casefold()
            if key in normalised:
                raise ValueError(f"activity type {activity_type!r} is listed twice")
            normalised[key] = points
        return normalised


class GradeThresholds(_IcpPart):
    """The lowest fit score (0-100) for grades A, B and C; anything below C is D."""

    A: float = Field(gt=0, le=100)
    B: float = Field(gt=0, le=100)
    C: float = Field(gt=0, le=100)

    @field_validator("B", "C")
    @classmethod
    def _below_better_grade(cls, value: float, info: ValidationInfo) -> float:
        better = {"B": "A", "C": "B"}[str(info.field_name)]
        above = info.data.get(better)
        if above is not None and value >= above:
            raise ValueError(f"{info.field_name} ({value:g}) must be below {better} ({above:g})")
        return value

    def grade_for(self, score: float) -> FitGrade:
        """The grade a fit score earns, ignoring disqualifiers."""
        if score >= self.A:
            return FitGrade.A
        if score >= self.B:
            return FitGrade.B
        if score >= self.C:
            return FitGrade.C
        return FitGrade.D


class IcpDocument(_IcpPart):
    """One ideal-customer profile as marketing and sales publish it (validated strictly)."""

    name: Text
    description: str = Field(max_length=4000)
    fit: FitCriteria
    disqualifiers: Disqualifiers = Field(default_factory=Disqualifiers)
    engagement: Engagement
    grades: GradeThresholds


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """A lead's score against one ICP, with the reasons for it."""

    score: float
    """Fit score, 0..100, rounded to 2 decimals."""
    grade: FitGrade
    """Grade from the fit score; D whenever a disqualifier hit."""
    engagement_level: int
    """1 (hot) ... 4 (cold)."""
    contributions: list[Contribution]
    """One per fit criterion of the ICP, then one per activity type the lead has."""
    disqualifiers: list[str]
    """One "kind:value" per disqualifier hit, e.g. "free_mail:gmail.com"."""


def score_lead(lead: LeadProfile, icp: IcpDocument, *, now: datetime) -> ScoreResult:
    """Score a lead's fit, disqualifiers and engagement against an ICP at the instant `now`.

    Deterministic: the same lead, ICP and `now` always give the same result.
    """
    fit = _fit_contributions(lead, icp.fit)
    earned = sum(contribution.points for contribution in fit)
    available = sum(contribution.max_points for contribution in fit)
    score = round(100 * earned / available, 2)
    # Grade from the rounded score, so the published score and grade always agree.
    disqualifiers = _disqualifier_hits(lead, icp.disqualifiers)
    grade = FitGrade.D if disqualifiers else icp.grades.grade_for(score)

    by_type = _engagement_by_type(lead.activities, icp.engagement, now=now)
    engagement = [
        Contribution(
            criterion=f"engagement:{activity_type}",
            matched=activity_type if tally.known else None,
            points=round(tally.decayed, 2),
            max_points=round(tally.undecayed, 2),
        )
        for activity_type, tally in by_type.items()
    ]
    total = sum(tally.decayed for tally in by_type.values())
    return ScoreResult(
        score=score,
        grade=grade,
        engagement_level=icp.engagement.levels.level_for(total),
        contributions=[*fit, *engagement],
        disqualifiers=disqualifiers,
    )


def engagement_points(
    activities: Iterable[Activity], engagement: Engagement, *, now: datetime
) -> float:
    """Sum of each activity's points halved every `half_life_days` of age (never negative).

    Activities dated after `now` count as brand new; types the ICP does not list score 0.
    Naive datetimes are taken as UTC.
    """
    return sum(
        tally.decayed for tally in _engagement_by_type(activities, engagement, now=now).values()
    )


def load_demo_icp() -> IcpDocument:
    """The demo ICP shipped with the scorer (a B2B SaaS vendor), validated."""
    text = resources.files("handoff_scorer").joinpath("demo_icp.json").read_text(encoding="utf-8")
    return IcpDocument.model_validate_json(text)


def _fit_contributions(lead: LeadProfile, fit: FitCriteria) -> list[Contribution]:
    contributions: list[Contribution] = []
    if fit.industries is not None:
        contributions.append(_industry_contribution(lead.industry, fit.industries))
    if fit.employees is not None:
        contributions.append(_employee_contribution(lead.employees, fit.employees))
    if fit.countries is not None:
        contributions.append(_country_contribution(lead.country, fit.countries))
    if fit.titles is not None:
        contributions.append(_title_contribution(lead.title, fit.titles))
    if fit.technologies is not None:
        contributions.append(_technology_contribution(lead.technologies, fit.technologies))
    return contributions


def _industry_contribution(industry: str | None, criterion: IndustryCriterion) -> Contribution:
    targets = {_normalise_text(name) for name in criterion.names}
    if industry is not None and _normalise_text(industry) in targets:
        return _earned("industries", industry.strip(), criterion.weight, criterion.weight)
    return _missed("industries", criterion.weight)


def _employee_contribution(employees: int | None, criterion: EmployeeCriterion) -> Contribution:
    if employees is not None:
        points = max(
            (band.points for band in criterion.ranges if band.contains(employees)), default=0
        )
        if points:
            return _earned("employees", str(employees), points, criterion.weight)
    return _missed("employees", criterion.weight)


def _country_contribution(country: str | None, criterion: CountryCriterion) -> Contribution:
    if country is not None:
        code = country.strip().upper()
        points = max(
            (region.points for region in criterion.regions if code in region.codes), default=0
        )
        if points:
            return _earned("countries", code, points, criterion.weight)
    return _missed("countries", criterion.weight)


def _title_contribution(title: str | None, criterion: TitleCriterion) -> Contribution:
    best: tuple[float, str] | None = None
    if title is not None:
        for tier in criterion.seniority:
            if best is not None and tier.points <= best[0]:
                continue  # an earlier tier already pays at least as much
            for keyword in tier.keywords:
                found = _find_word(keyword, title)
                if found is not None:
                    best = (tier.points, found)
                    break
    if best is None:
        return _missed("titles", criterion.weight)
    return _earned("titles", best[1], best[0], criterion.weight)


def _technology_contribution(
    technologies: Sequence[str], criterion: TechnologyCriterion
) -> Contribution:
    targets = {_normalise_text(name) for name in criterion.names}
    # Normalised name -> the lead's spelling; a technology the lead lists twice counts once.
    matched: dict[str, str] = {}
    for technology in technologies:
        key = _normalise_text(technology)
        if key in targets and key not in matched:
            matched[key] = technology.strip()
    if not matched:
        return _missed("technologies", criterion.weight)
    points = min(criterion.points_each * len(matched), criterion.weight)
    return _earned("technologies", ", ".join(matched.values()), points, criterion.weight)


def _earned(criterion: str, matched: str, points: float, max_points: float) -> Contribution:
    return Contribution(criterion=criterion, matched=matched, points=points, max_points=max_points)


def _missed(criterion: str, max_points: float) -> Contribution:
    return Contribution(criterion=criterion, matched=None, points=0.0, max_points=max_points)


def _find_word(keyword: str, text: str) -> str | None:
    """The words of `text` spelling `keyword` as whole words (any case, any spacing), if any."""
    match = _word_pattern(keyword).search(text)
    return match.group(0) if match else None


@functools.lru_cache(maxsize=4096)
def _word_pattern(keyword: str) -> re.Pattern[str]:
    """`keyword` as whole words, any case and spacing (compiled once per keyword)."""
    words = r"\s+".join(re.escape(part) for part in keyword.split())
    # Word boundaries so "intern" does not hit "International" nor "cto" hit "Director".
    return re.compile(rf"(?<!\w){words}(?!\w)", flags=re.IGNORECASE)


def _lead_domain(lead: LeadProfile) -> str:
    if lead.domain is not None and lead.domain.strip():
        return _normalise_domain(lead.domain)
    return _normalise_domain(str(lead.email).rpartition("@")[2])


def _on_domain(domain: str, listed: str) -> bool:
    return domain == listed or domain.endswith("." + listed)


def _disqualifier_hits(lead: LeadProfile, rules: Disqualifiers) -> list[str]:
    domain = _lead_domain(lead)
    hits = [
        f"free_mail:{listed}" for listed in rules.free_mail_domains if _on_domain(domain, listed)
    ]
    hits += [
        f"competitor:{listed}" for listed in rules.competitor_domains if _on_domain(domain, listed)
    ]
    if lead.title is not None:
        hits += [
            f"student:{keyword.casefold()}"
            for keyword in rules.student_keywords
            if _find_word(keyword, lead.title) is not None
        ]
    return hits


@dataclass(slots=True)
class _Tally:
    known: bool
    decayed: float = 0.0
    undecayed: float = 0.0


def _engagement_by_type(
    activities: Iterable[Activity], engagement: Engagement, *, now: datetime
) -> dict[str, _Tally]:
    """Decayed and undecayed points per activity type, sorted by type for stable output."""
    now = _as_utc(now)
    tallies: dict[str, _Tally] = {}
    for activity in activities:
        activity_type = activity.type.strip().casefold()
        points = engagement.signals.get(activity_type)
        tally = tallies.setdefault(activity_type, _Tally(known=points is not None))
        if points is None:
            continue
        age_days = max(
            0.0, (now - _as_utc(activity.occurred_at)).total_seconds() / _SECONDS_PER_DAY
        )
        tally.decayed += points * 0.5 ** (age_days / engagement.half_life_days)
        tally.undecayed += points
    return dict(sorted(tallies.items()))


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
