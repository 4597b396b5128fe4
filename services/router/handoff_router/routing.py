"""The router's rules as pure functions: who may take a lead, who gets it, what waits.

A rep is eligible when active and below capacity. Among eligible reps the least loaded wins
(working / capacity, divided by the rep's weight so a weight-2 rep takes twice the share);
a tie goes to the rep whose last assignment is oldest (never-assigned first), so nobody wins
every tie; the rep id breaks what is left, for determinism. Low-fit leads go to nurture.
The backlog drains best fit grade first, then highest score, then oldest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from handoff_schemas import Candidate, FitGrade

_GRADE_RANK = {FitGrade.A: 0, FitGrade.B: 1, FitGrade.C: 2, FitGrade.D: 3}


@dataclass(frozen=True)
class RepLoad:
    """A rep as the routing rules see them: how much they hold and can hold."""

    rep_id: str
    name: str
    working: int
    capacity: int
    active: bool = True
    weight: float = 1.0
    last_assigned_at: datetime | None = None

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


def choose_rep(reps: Sequence[RepLoad]) -> tuple[RepLoad | None, list[Candidate]]:
    """Pick the rep for a lead and explain the choice for every rep considered."""
    eligible = sorted(
        (r for r in reps if r.has_room),
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
            why=_why(r, chosen),
        )
        for r in sorted(reps, key=lambda r: r.rep_id)
    ]
    return chosen, candidates


def _why(rep: RepLoad, chosen: RepLoad | None) -> str:
    if not rep.active:
        return "inactive"
    if rep.working >= rep.capacity:
        return "at capacity"
    if rep is chosen:
        return "least loaded with room"
    return "more loaded, or assigned more recently"


def goes_to_nurture(grade: FitGrade, nurture_from: FitGrade | None) -> bool:
    """Whether a lead's fit is too low for sales: its grade is `nurture_from` or worse
    (None sends every grade to sales)."""
    return nurture_from is not None and _GRADE_RANK[grade] >= _GRADE_RANK[nurture_from]


def backlog_priority(
    grade: FitGrade, score: float, queued_at: datetime
) -> tuple[int, float, datetime]:
    """Sort key of a queued lead: best grade, then highest score, then oldest."""
    return (_GRADE_RANK[grade], -score, queued_at)
