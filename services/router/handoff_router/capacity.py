"""Capacity headroom, pure (no I/O): how much room a team has, how fast it fills and empties,
how long until it is full at the current rates, and the level marketing paces campaigns by.

- **capacity**: working leads the team's active reps can hold at once (sum of their capacities).
- **working**: leads the team's reps work now (assigned, accepted, contacted), paused reps too.
- **headroom**: free slots of the active reps, the sum of `rep_headroom` over the team: a rep
  above their capacity (it was lowered) takes no room from another rep, a paused rep has none.
- **utilisation**: share of the active reps' slots in use, `1 - headroom / capacity`, from 0
  to 1; 1 for a team with no capacity at all (nothing can be assigned to it).
- **intake per hour**: new leads routed to the team (assigned or queued) during the rate window,
  per hour. A queued lead assigned later by a backlog drain, or a lead given to another rep
  after a missed first touch, is not a new lead (`NOT_NEW_LEADS`).
- **release per hour**: slots sales freed during the window (a lead left the working
  statuses), per hour; a lead taken away to be reassigned frees no slot for new leads
  (`NOT_RELEASES`).
- **hours until saturation**: `headroom / (intake - release)`; 0 when already full; None when
  the net inflow is zero or negative (the team never fills up at the current rates).
- **level**: `saturated` when utilisation reaches the saturated threshold (1: no free slot) or
  leads wait in the backlog, `busy` from the busy threshold, `ok` below it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from handoff_schemas import CapacityLevel

NOT_NEW_LEADS = ("backlog_drain", "sla_reassignment")
"""Rules of routing decisions that move a lead the team already had (not intake)."""

NOT_RELEASES = ("sla_breached",)
"""Release reasons of assignments taken away to give the lead to another rep (not releases)."""

LEVELS = (CapacityLevel.OK, CapacityLevel.BUSY, CapacityLevel.SATURATED)
"""The levels from most to least room."""


@dataclass(frozen=True)
class Thresholds:
    """Utilisation (0-1) from which a team is busy, and saturated."""

    busy: float = 0.8
    saturated: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.busy <= self.saturated <= 1:
            raise ValueError(
                f"thresholds must satisfy 0 < busy <= saturated <= 1, "
                f"got busy={self.busy}, saturated={self.saturated}"
            )


def rep_headroom(capacity: int, working: int, *, active: bool = True) -> int:
    """Free slots of one rep: none when paused or at (or above) capacity."""
    return max(0, capacity - working) if active else 0


def utilisation(capacity: int, headroom: int) -> float:
    """Share of the slots in use, 0-1; 1 when there are no slots at all."""
    if capacity <= 0:
        return 1.0
    return min(1.0, max(0.0, 1 - headroom / capacity))


def per_hour(count: int, window_hours: float) -> float:
    """A count over a window of `window_hours`, as a rate per hour."""
    if window_hours <= 0:
        raise ValueError("the rate window must be longer than zero")
    return count / window_hours


def hours_until_saturation(
    headroom: int, intake_per_hour: float, release_per_hour: float
) -> float | None:
    """Hours until no slot is free if leads keep arriving and leaving at these rates: 0 when
    already full, None when the team does not fill up (net inflow zero or negative)."""
    if headroom <= 0:
        return 0.0
    net_inflow = intake_per_hour - release_per_hour
    if net_inflow <= 0:
        return None
    return headroom / net_inflow


def headroom_level(
    utilisation: float, thresholds: Thresholds = Thresholds(), *, backlog: int = 0
) -> CapacityLevel:
    """The named level of a team at this utilisation (0-1); waiting leads mean saturated."""
    if backlog > 0 or utilisation >= thresholds.saturated:
        return CapacityLevel.SATURATED
    if utilisation >= thresholds.busy:
        return CapacityLevel.BUSY
    return CapacityLevel.OK


@dataclass(frozen=True)
class TeamLoad:
    """One team's load and flow as read at one moment."""

    team_id: str
    name: str
    capacity: int
    working: int
    headroom: int
    backlog: int
    oldest_queued_at: datetime | None
    intake_per_hour: float
    release_per_hour: float

    @property
    def utilisation(self) -> float:
        """Share of the active reps' slots in use, 0-1."""
        return utilisation(self.capacity, self.headroom)

    @property
    def hours_until_saturation(self) -> float | None:
        """Hours until the team is full at the current rates (None: not filling up)."""
        return hours_until_saturation(self.headroom, self.intake_per_hour, self.release_per_hour)

    def level(self, thresholds: Thresholds = Thresholds()) -> CapacityLevel:
        """ok, busy or saturated."""
        return headroom_level(self.utilisation, thresholds, backlog=self.backlog)

    def oldest_age_seconds(self, now: datetime) -> float | None:
        """How long the oldest queued lead has waited, or None when none waits."""
        if self.oldest_queued_at is None:
            return None
        return max(0.0, (now - self.oldest_queued_at).total_seconds())


def team_load(counts: Mapping[str, Any], *, window_hours: float) -> TeamLoad:
    """A team's load from its counts (`RouterRepository.capacity_counts`): the intake and
    release counts over the last `window_hours` become rates per hour."""
    return TeamLoad(
        team_id=str(counts["team_id"]),
        name=str(counts["name"]),
        capacity=int(counts["capacity"]),
        working=int(counts["working"]),
        headroom=int(counts["headroom"]),
        backlog=int(counts["backlog"]),
        oldest_queued_at=counts["oldest_queued_at"],
        intake_per_hour=per_hour(int(counts["intake"]), window_hours),
        release_per_hour=per_hour(int(counts["released"]), window_hours),
    )
