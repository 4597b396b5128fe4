"""The router's own Prometheus metrics: what it did with each lead (counted once its
transaction commits), how long leads waited for an owner and a first touch, first-touch SLA
breaches; and capacity gauges per team and, while reps are few enough to keep the series
bounded, per rep (set by the capacity worker on every pass)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

from handoff_runtime.db import UnitOfWork

from .capacity import LEVELS, TeamLoad, Thresholds
from .models import Rep

SERVICE = "router"
TEAM_LABELS = ["service", "team", "team_id"]

LEADS_ROUTED = Counter(
    "handoff_leads_routed_total",
    "Leads the router assigned (each assignment, drains and reassignments included), queued, "
    "or sent to nurture (team empty), by team.",
    [*TEAM_LABELS, "outcome"],
)
LEAD_LATENCY = Histogram(
    "handoff_lead_latency_seconds",
    "From a lead's intake to its first owner (stage assigned) and to its owner's first "
    "touch (stage first_touch), first sales cycle.",
    ["service", "stage"],
    # from sub-second routing to first touches days later
    buckets=(
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
        300,
        900,
        1800,
        3600,
        7200,
        14400,
        28800,
        86400,
        172800,
        604800,
    ),
)
SLA_BREACHES = Counter(
    "handoff_sla_breaches_total", "First-touch deadlines missed, by team.", TEAM_LABELS
)
REASSIGNMENTS = Counter(
    "handoff_lead_reassignments_total",
    "Leads taken from an owner who missed the first touch and given to another rep, by team.",
    TEAM_LABELS,
)
ESCALATIONS = Counter(
    "handoff_escalations_total",
    "Leads escalated to the team manager after repeated missed first touches, by team.",
    TEAM_LABELS,
)
REP_LABELS = ["service", "team", "rep", "rep_id"]

TEAM_CAPACITY = Gauge(
    "handoff_team_capacity",
    "Working leads the team's active reps can hold at once.",
    TEAM_LABELS,
)
TEAM_WORKING = Gauge(
    "handoff_team_working",
    "Leads the team's reps work now (assigned, accepted, contacted).",
    TEAM_LABELS,
)
TEAM_HEADROOM = Gauge(
    "handoff_team_headroom",
    "Free slots of the team's active reps.",
    TEAM_LABELS,
)
TEAM_BACKLOG = Gauge(
    "handoff_team_backlog",
    "Leads waiting in the team's backlog.",
    TEAM_LABELS,
)
TEAM_BACKLOG_OLDEST_AGE = Gauge(
    "handoff_team_backlog_oldest_age_seconds",
    "How long the team's oldest queued lead has waited (0 when none waits).",
    TEAM_LABELS,
)
TEAM_UTILISATION = Gauge(
    "handoff_team_utilisation_ratio",
    "Share of the team's active slots in use, 0-1 (1 when the team has no capacity).",
    TEAM_LABELS,
)
TEAM_INTAKE = Gauge(
    "handoff_team_intake_per_hour",
    "New leads assigned or queued to the team per hour, over the rate window.",
    TEAM_LABELS,
)
TEAM_RELEASE = Gauge(
    "handoff_team_release_per_hour",
    "Slots sales freed in the team per hour, over the rate window.",
    TEAM_LABELS,
)
TEAM_SECONDS_UNTIL_SATURATION = Gauge(
    "handoff_team_seconds_until_saturation",
    "Seconds until the team has no free slot at the current rates (+Inf: not filling up).",
    TEAM_LABELS,
)
TEAM_LEVEL = Gauge(
    "handoff_team_capacity_level",
    "The team's capacity level: 0 ok, 1 busy, 2 saturated.",
    TEAM_LABELS,
)
REP_WORKING = Gauge(
    "handoff_rep_working",
    "Leads the rep works now (only while the router has no more reps than its rep metrics limit).",
    REP_LABELS,
)
REP_CAPACITY = Gauge(
    "handoff_rep_capacity",
    "Working leads the rep can hold (only while the router has no more reps than its rep "
    "metrics limit).",
    REP_LABELS,
)

TEAM_GAUGES = (
    TEAM_CAPACITY,
    TEAM_WORKING,
    TEAM_HEADROOM,
    TEAM_BACKLOG,
    TEAM_BACKLOG_OLDEST_AGE,
    TEAM_UTILISATION,
    TEAM_INTAKE,
    TEAM_RELEASE,
    TEAM_SECONDS_UNTIL_SATURATION,
    TEAM_LEVEL,
)
REP_GAUGES = (REP_WORKING, REP_CAPACITY)


def record_capacity(
    service: str,
    loads: Sequence[TeamLoad],
    reps: Sequence[Rep],
    *,
    now: datetime,
    thresholds: Thresholds,
    rep_limit: int,
) -> None:
    """Replace every capacity series with these loads (teams gone or renamed leave no stale
    series). Runs without awaiting, so a scrape never sees a half-written set."""
    for gauge in (*TEAM_GAUGES, *REP_GAUGES):
        gauge.clear()
    names: dict[str, str] = {}
    for load in loads:
        names[load.team_id] = load.name
        team = (service, load.name, load.team_id)
        hours = load.hours_until_saturation
        TEAM_CAPACITY.labels(*team).set(load.capacity)
        TEAM_WORKING.labels(*team).set(load.working)
        TEAM_HEADROOM.labels(*team).set(load.headroom)
        TEAM_BACKLOG.labels(*team).set(load.backlog)
        TEAM_BACKLOG_OLDEST_AGE.labels(*team).set(load.oldest_age_seconds(now) or 0.0)
        TEAM_UTILISATION.labels(*team).set(load.utilisation)
        TEAM_INTAKE.labels(*team).set(load.intake_per_hour)
        TEAM_RELEASE.labels(*team).set(load.release_per_hour)
        TEAM_SECONDS_UNTIL_SATURATION.labels(*team).set(math.inf if hours is None else hours * 3600)
        TEAM_LEVEL.labels(*team).set(LEVELS.index(load.level(thresholds)))
    if len(reps) > rep_limit:
        return
    for rep in reps:
        member = (service, names.get(rep.team_id, rep.team_id), rep.name, rep.id)
        REP_WORKING.labels(*member).set(rep.working)
        REP_CAPACITY.labels(*member).set(rep.capacity)


def count_on_commit(uow: UnitOfWork, counter: Counter, *labels: str) -> None:
    """Count once the transaction commits (a rolled-back attempt counts nothing)."""
    uow.after_commit.append(counter.labels(SERVICE, *labels).inc)


def observe_on_commit(uow: UnitOfWork, stage: str, seconds: float) -> None:
    """Observe a lead latency once the transaction commits."""
    if seconds >= 0:
        uow.after_commit.append(lambda: LEAD_LATENCY.labels(SERVICE, stage).observe(seconds))
