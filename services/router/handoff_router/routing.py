"""The router's rules as pure functions: which team, who may take a lead, who gets it, what
waits.

Team: the ordered routing rules are tried in turn; the first whose conditions all hold for
the lead (country, industry, company-size band, fit grade, product interest, language — an empty
condition holds for every lead) names the team; when none matches, the fallback (default)
team takes the lead.

Rep: a rep is eligible for a lead when active, not out of office, within working hours (when
the team respects them), under their daily cap of new leads, and covering the lead (each
territory or segment the rep lists must include the lead's value). An eligible rep with room
(working < capacity) can be chosen. Among those the least loaded wins (working / capacity,
divided by the rep's weight so a weight-2 rep takes twice the share); a tie goes to the rep
whose last assignment is oldest (never-assigned first), so nobody wins every tie; the rep id
breaks what is left, for determinism.

Low-fit leads go to nurture. The backlog drains best fit grade first, then highest score,
then oldest — each queued lead to a rep eligible for it.

A lead is routed once per sales cycle. Scored again in the same cycle, it keeps its place; a
lead that re-qualified after nurture comes back with a higher cycle and, once sales has let
it go (released, or in nurture), is routed again like a new lead. A lead still with sales
(assigned or queued) keeps its place in any cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from handoff_schemas import Candidate, FitGrade

_GRADE_RANK = {FitGrade.A: 0, FitGrade.B: 1, FitGrade.C: 2, FitGrade.D: 3}

SIZE_BANDS: tuple[tuple[str, int, int | None], ...] = (
    ("small", 0, 49),
    ("mid", 50, 199),
    ("large", 200, 999),
    ("enterprise", 1000, None),
)
"""Company-size bands by employee count (inclusive ranges)."""


def size_band(employees: int | None) -> str | None:
    """The company-size band of an employee count, or None when unknown."""
    if employees is None:
        return None
    for name, low, high in SIZE_BANDS:
        if employees >= low and (high is None or employees <= high):
            return name
    return None


@dataclass(frozen=True)
class LeadFacts:
    """What routing looks at in a lead."""

    grade: FitGrade
    score: float = 0.0
    country: str | None = None
    industry: str | None = None
    employees: int | None = None
    product_interest: str | None = None
    language: str | None = None

    @property
    def size_band(self) -> str | None:
        """The company-size band of the lead."""
        return size_band(self.employees)


def _norm(value: str | None) -> str | None:
    return " ".join(value.lower().split()) if value else None


def _holds(allowed: frozenset[str], value: str | None) -> bool:
    """An empty condition holds for every lead; otherwise the lead's value must be listed."""
    return not allowed or (value is not None and _norm(value) in allowed)


@dataclass(frozen=True)
class Coverage:
    """Territories and segments: which leads a rule or a rep takes (empty = any)."""

    countries: frozenset[str] = frozenset()
    industries: frozenset[str] = frozenset()
    size_bands: frozenset[str] = frozenset()
    grades: frozenset[str] = frozenset()
    product_interests: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()

    @classmethod
    def of(cls, **values: Sequence[str] | None) -> Coverage:
        """Build coverage from lists as stored or posted, normalising case and spaces."""
        return cls(
            **{
                k: frozenset(n for n in (_norm(v) for v in vs or ()) if n)
                for k, vs in values.items()
            }
        )

    def misses(self, lead: LeadFacts) -> str | None:
        """Why the lead falls outside this coverage, or None when it is covered."""
        checks = (
            ("country", self.countries, lead.country),
            ("industry", self.industries, lead.industry),
            ("size band", self.size_bands, lead.size_band),
            ("grade", self.grades, lead.grade.value),
            ("product interest", self.product_interests, lead.product_interest),
            ("language", self.languages, lead.language),
        )
        for what, allowed, value in checks:
            if not _holds(allowed, value):
                return f"{what} {value or 'unknown'} not covered"
        return None


@dataclass(frozen=True)
class Rule:
    """One routing rule: leads it covers go to its team."""

    name: str
    team_id: str
    conditions: Coverage


def match_rule(rules: Sequence[Rule], lead: LeadFacts) -> Rule | None:
    """The first rule, in order, whose conditions all hold for the lead."""
    return next((r for r in rules if r.conditions.misses(lead) is None), None)


@dataclass(frozen=True)
class WorkingHours:
    """When a rep works: local start and end time on the listed ISO weekdays (1 = Monday)."""

    timezone: str
    start: time
    end: time
    days: frozenset[int] = frozenset({1, 2, 3, 4, 5})

    def contains(self, moment: datetime) -> bool:
        """Whether `moment` (aware) falls inside these hours."""
        local = moment.astimezone(ZoneInfo(self.timezone))
        return local.isoweekday() in self.days and self.start <= local.time() < self.end


def business_deadline(start: datetime, allowed: timedelta, hours: WorkingHours) -> datetime:
    """When `allowed` working time has passed since `start`, counting only the rep's working
    hours (a lead assigned on Friday evening is due on Monday, not on Saturday)."""
    zone = ZoneInfo(hours.timezone)
    remaining = allowed
    cursor = start.astimezone(zone)
    for _ in range(3660):  # ten years of days: bounded even for a rep who never works
        day = cursor.date()
        if day.isoweekday() in hours.days:
            opens = datetime.combine(day, hours.start, zone)
            closes = datetime.combine(day, hours.end, zone)
            begin = max(cursor, opens)
            if begin < closes:
                if begin + remaining <= closes:
                    return (begin + remaining).astimezone(start.tzinfo)
                remaining -= closes - begin
        cursor = datetime.combine(day + timedelta(days=1), time(0), zone)
    return start + allowed


@dataclass(frozen=True)
class RepLoad:
    """A rep as the routing rules see them: how much they hold and can hold, and what they
    cover."""

    rep_id: str
    name: str
    working: int
    capacity: int
    active: bool = True
    weight: float = 1.0
    last_assigned_at: datetime | None = None
    coverage: Coverage = field(default_factory=Coverage)
    daily_cap: int | None = None
    assigned_today: int = 0
    out_of_office: tuple[tuple[datetime, datetime], ...] = ()
    working_hours: WorkingHours | None = None

    @property
    def has_room(self) -> bool:
        """Whether one more working lead fits."""
        return self.active and self.working < self.capacity

    @property
    def load(self) -> Fraction:
        """Share of capacity in use, scaled down by weight. Exact, so equal loads tie: with
        floats, 3/5/1.5 comes out below 2/5 and would win a tie it should share."""
        if self.capacity <= 0:
            return Fraction(10**9)
        return Fraction(self.working, self.capacity) / Fraction(str(self.weight))

    def unavailable(
        self, lead: LeadFacts | None, now: datetime | None, *, respect_hours: bool = False
    ) -> str | None:
        """Why the rep cannot take this lead now (room aside), or None when they can."""
        if not self.active:
            return "inactive"
        if now is not None and any(start <= now < end for start, end in self.out_of_office):
            return "out of office"
        hours = self.working_hours
        if respect_hours and now is not None and hours is not None and not hours.contains(now):
            return "outside working hours"
        if self.daily_cap is not None and self.assigned_today >= self.daily_cap:
            return "daily cap reached"
        if lead is not None and (miss := self.coverage.misses(lead)) is not None:
            return miss
        return None


def choose_rep(
    reps: Sequence[RepLoad],
    lead: LeadFacts | None = None,
    now: datetime | None = None,
    *,
    respect_hours: bool = False,
) -> tuple[RepLoad | None, list[Candidate]]:
    """Pick the rep for a lead and explain the choice for every rep considered."""
    reasons = {r.rep_id: r.unavailable(lead, now, respect_hours=respect_hours) for r in reps}
    eligible = sorted(
        (r for r in reps if reasons[r.rep_id] is None and r.has_room),
        key=lambda r: (
            r.load,
            r.last_assigned_at is not None,
            r.last_assigned_at or datetime.min,
            r.rep_id,
        ),
    )
    chosen = eligible[0] if eligible else None
    candidates = [
        Candidate(
            rep_id=r.rep_id,
            working=r.working,
            capacity=r.capacity,
            chosen=r is chosen,
            why=_why(r, chosen, reasons[r.rep_id]),
        )
        for r in sorted(reps, key=lambda r: r.rep_id)
    ]
    return chosen, candidates


def _why(rep: RepLoad, chosen: RepLoad | None, unavailable: str | None) -> str:
    if unavailable is not None:
        return unavailable
    if rep.working >= rep.capacity:
        return "at capacity"
    if rep is chosen:
        return "least loaded with room"
    return "more loaded, or assigned more recently"


def goes_to_nurture(grade: FitGrade, nurture_from: FitGrade | None) -> bool:
    """Whether a lead's fit is too low for sales: its grade is `nurture_from` or worse
    (None sends every grade to sales)."""
    return nurture_from is not None and _GRADE_RANK[grade] >= _GRADE_RANK[nurture_from]


OFF_SALES_STATES = frozenset({"released", "nurture"})
"""Router states of a lead that no rep works and no backlog holds."""


def routes_again(state: str, cycle: int, scored_cycle: int) -> bool:
    """Whether a lead the router already holds (in `state`, routed in `cycle`) is routed
    again when scored in `scored_cycle`: only in a later cycle, and only once sales has let
    it go."""
    return scored_cycle > cycle and state in OFF_SALES_STATES


def backlog_priority(
    grade: FitGrade, score: float, queued_at: datetime
) -> tuple[int, float, datetime]:
    """Sort key of a queued lead: best grade, then highest score, then oldest."""
    return (_GRADE_RANK[grade], -score, queued_at)
