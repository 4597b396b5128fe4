"""The router's use cases: route a scored lead, release capacity, drain the backlog,
manage teams and reps. Every change of a team happens under that team's routing lock."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from typing import Any

from handoff_runtime.db import UnitOfWork
from handoff_runtime.problems import DomainError, NotFound
from handoff_schemas import (
    LEAD_ROUTING,
    Candidate,
    FitGrade,
    LeadAssignedV1,
    LeadNurtureRequestedV1,
    LeadQueuedV1,
    LeadScoredV1,
    LeadStatusChangedV1,
    NurtureReason,
    RoutingDecision,
    utcnow,
)

from .models import Assignment, BacklogEntry, Decision, Rep, RoutedLead, RoutingRule, Team
from .repository import RouterRepository
from .routing import (
    Coverage,
    LeadFacts,
    RepLoad,
    Rule,
    WorkingHours,
    choose_rep,
    goes_to_nurture,
    match_rule,
)


class NoSalesTeam(DomainError):
    """A lead cannot be routed before a team exists."""

    status = 409
    type = "no-team"
    title = "No sales team"


class UnknownTeam(DomainError):
    """A rep was given a team that does not exist."""

    status = 422
    type = "unknown-team"
    title = "Unknown team"


DRAIN_WINDOW = 500
"""How many queued leads one drain looks through for a lead some rep with room may take."""


def _rep_load(rep: Rep, assigned_today: int = 0) -> RepLoad:
    hours = rep.working_hours
    return RepLoad(
        rep_id=rep.id,
        name=rep.name,
        working=rep.working,
        capacity=rep.capacity,
        active=rep.active,
        weight=rep.weight,
        last_assigned_at=rep.last_assigned_at,
        coverage=Coverage.of(
            countries=rep.countries, industries=rep.industries, size_bands=rep.size_bands
        ),
        daily_cap=rep.daily_cap,
        assigned_today=assigned_today,
        out_of_office=tuple(
            (datetime.fromisoformat(o["start"]), datetime.fromisoformat(o["end"]))
            for o in rep.out_of_office
        ),
        working_hours=(
            WorkingHours(
                timezone=rep.timezone,
                start=time.fromisoformat(hours["start"]),
                end=time.fromisoformat(hours["end"]),
                days=frozenset(hours["days"]),
            )
            if hours
            else None
        ),
    )


def lead_facts(scored: LeadScoredV1) -> LeadFacts:
    """What routing looks at in a scored lead."""
    return LeadFacts(
        grade=scored.grade,
        score=scored.score,
        country=scored.lead.country,
        industry=scored.lead.industry,
        employees=scored.lead.employees,
        product_interest=getattr(scored.lead, "product_interest", None),
    )


async def _team_loads(repo: RouterRepository, team_id: str) -> tuple[list[Rep], list[RepLoad]]:
    """The team's reps, locked, and how the rules see them (caller holds the team lock)."""
    reps = list(await repo.reps(team_id, for_update=True))
    today = await repo.assigned_today(team_id)
    return reps, [_rep_load(r, today.get(r.id, 0)) for r in reps]


async def _team_for(repo: RouterRepository, facts: LeadFacts) -> tuple[Team, str]:
    """The team a lead goes to and the rule that decided it."""
    rules = [
        Rule(name=r.name, team_id=r.team_id, conditions=Coverage.of(**r.conditions))
        for r in await repo.rules()
    ]
    matched = match_rule(rules, facts)
    if matched is not None:
        team = await repo.team(matched.team_id)
        if team is not None:
            return team, matched.name
    team = await repo.default_team()
    if team is None:
        raise NoSalesTeam("no sales team exists yet: create one with POST /v1/teams")
    return team, "fallback_team"


async def route_scored_lead(
    uow: UnitOfWork, scored: LeadScoredV1, *, nurture_from: FitGrade | None
) -> str:
    """Send a scored lead to nurture, to the least-loaded rep with room, or to the backlog.
    Returns the outcome. A lead the router already holds is not routed twice."""
    repo = RouterRepository(uow.session)
    known = await repo.routed_lead(scored.lead_id)
    if known is not None:
        return await _rescored(repo, known, scored)
    now = utcnow()
    if goes_to_nurture(scored.grade, nurture_from):
        decision = _decision(scored, rule=f"nurture_from_grade_{nurture_from}", team_id=None)
        repo.add(_routed(scored, state="nurture", team_id=None, rep_id=None))
        repo.add(
            Decision(
                lead_id=scored.lead_id,
                outcome="nurture",
                decided_at=now,
                decision=decision.model_dump(mode="json"),
            )
        )
        await uow.publish(
            LeadNurtureRequestedV1(
                lead_id=scored.lead_id,
                reason=NurtureReason.LOW_FIT,
                note=f"fit grade {scored.grade} (score {scored.score}) is below what sales works",
                requested_at=now,
                requested_by="router",
            ),
            topic=LEAD_ROUTING.name,
            subject=scored.lead_id,
        )
        return "nurture"
    facts = lead_facts(scored)
    team, rule = await _team_for(repo, facts)
    await repo.lock_team(team.id)
    reps, loads = await _team_loads(repo, team.id)
    chosen, candidates = choose_rep(loads, facts, now, respect_hours=team.respect_working_hours)
    decision = _decision(scored, rule=rule, team_id=team.id, candidates=candidates)
    if chosen is None:
        repo.add(_routed(scored, state="queued", team_id=team.id, rep_id=None))
        repo.add(
            BacklogEntry(
                lead_id=scored.lead_id,
                team_id=team.id,
                grade=scored.grade.value,
                score=scored.score,
                queued_at=now,
                scored=scored.model_dump(mode="json"),
            )
        )
        repo.add(
            Decision(
                lead_id=scored.lead_id,
                outcome="queued",
                decided_at=now,
                decision=decision.model_dump(mode="json"),
            )
        )
        await uow.publish(
            LeadQueuedV1(lead_id=scored.lead_id, team_id=team.id, queued_at=now, decision=decision),
            topic=LEAD_ROUTING.name,
            subject=scored.lead_id,
        )
        return "queued"
    rep = next(r for r in reps if r.id == chosen.rep_id)
    repo.add(_routed(scored, state="assigned", team_id=team.id, rep_id=rep.id))
    await _assign(uow, repo, scored, rep, decision)
    return "assigned"


async def _rescored(repo: RouterRepository, known: RoutedLead, scored: LeadScoredV1) -> str:
    """A lead scored again keeps its place; a queued one moves in the backlog."""
    if known.state == "queued":
        entry = await repo.backlog_entry(known.lead_id)
        if entry is not None:
            entry.grade = scored.grade.value
            entry.score = scored.score
            entry.scored = scored.model_dump(mode="json")
    known.grade, known.score, known.icp_version = (
        scored.grade.value,
        scored.score,
        scored.icp_version,
    )
    known.updated_at = utcnow()
    return "rescored"


async def _assign(
    uow: UnitOfWork,
    repo: RouterRepository,
    scored: LeadScoredV1,
    rep: Rep,
    decision: RoutingDecision,
) -> None:
    """Give a lead to a rep: take a slot, record the owner and why, announce it."""
    now = utcnow()
    rep.working += 1
    rep.last_assigned_at = now
    repo.add(
        Assignment(lead_id=scored.lead_id, rep_id=rep.id, team_id=rep.team_id, assigned_at=now)
    )
    repo.add(
        Decision(
            lead_id=scored.lead_id,
            outcome="assigned",
            decided_at=now,
            decision=decision.model_dump(mode="json"),
        )
    )
    await uow.publish(
        LeadAssignedV1(
            lead_id=scored.lead_id,
            rep_id=rep.id,
            rep_name=rep.name,
            team_id=rep.team_id,
            assigned_at=now,
            decision=decision,
        ),
        topic=LEAD_ROUTING.name,
        subject=scored.lead_id,
    )


def _decision(
    scored: LeadScoredV1,
    *,
    rule: str,
    team_id: str | None,
    candidates: list[Candidate] | None = None,
) -> RoutingDecision:
    return RoutingDecision(
        rule=rule,
        team_id=team_id,
        candidates=candidates or [],
        icp_version=scored.icp_version,
        score=scored.score,
        grade=scored.grade,
    )


def _routed(
    scored: LeadScoredV1, *, state: str, team_id: str | None, rep_id: str | None
) -> RoutedLead:
    return RoutedLead(
        lead_id=scored.lead_id,
        state=state,
        team_id=team_id,
        rep_id=rep_id,
        grade=scored.grade.value,
        score=scored.score,
        icp_version=scored.icp_version,
        received_at=scored.received_at,
        updated_at=utcnow(),
    )


async def release_lead(uow: UnitOfWork, change: LeadStatusChangedV1) -> bool:
    """When sales stops working a lead, free its owner's slot and give it to the best queued
    lead at once. Returns whether a slot was freed (a repeat of the release frees nothing)."""
    if change.working:
        return False
    repo = RouterRepository(uow.session)
    assignment = await repo.active_assignment(change.lead_id)
    if assignment is None:
        return False
    await repo.lock_team(assignment.team_id)
    assignment = await repo.active_assignment(change.lead_id, for_update=True)
    if assignment is None:
        return False
    now = utcnow()
    assignment.active = False
    assignment.released_at = now
    assignment.release_reason = change.to_status.value
    rep = await repo.rep(assignment.rep_id, for_update=True)
    if rep is not None:
        rep.working = max(0, rep.working - 1)
    routed = await repo.routed_lead(change.lead_id)
    if routed is not None:
        routed.state = "released"
        routed.updated_at = now
    await repo.flush()
    await drain_backlog(uow, repo, assignment.team_id)
    return True


async def drain_backlog(uow: UnitOfWork, repo: RouterRepository, team_id: str) -> int:
    """Assign queued leads while any rep of the team has room (caller holds the team's lock):
    in drain order, each lead to the best rep eligible for it; a lead no rep with room may
    take (territory, segment, out of office...) keeps its place for a later drain.
    Returns how many were assigned."""
    team = await repo.team(team_id)
    if team is None:
        return 0
    assigned = 0
    now = utcnow()
    reps, loads = await _team_loads(repo, team_id)
    for entry in await repo.queued_in_order(team_id, limit=DRAIN_WINDOW):
        if not any(load.has_room for load in loads):
            break
        scored = LeadScoredV1.model_validate(entry.scored)
        chosen, candidates = choose_rep(
            loads, lead_facts(scored), now, respect_hours=team.respect_working_hours
        )
        if chosen is None:
            continue
        rep = next(r for r in reps if r.id == chosen.rep_id)
        await repo.remove_from_backlog(entry)
        routed = await repo.routed_lead(scored.lead_id)
        if routed is not None:
            routed.state, routed.rep_id, routed.updated_at = "assigned", rep.id, utcnow()
        decision = _decision(scored, rule="backlog_drain", team_id=team_id, candidates=candidates)
        await _assign(uow, repo, scored, rep, decision)
        await repo.flush()
        assigned += 1
        reps, loads = await _team_loads(repo, team_id)
    return assigned


async def create_team(uow: UnitOfWork, name: str, **profile: Any) -> Team:
    """Create a team; the first team becomes the default (fallback) one."""
    repo = RouterRepository(uow.session)
    team = Team(
        id=uuid.uuid4().hex,
        name=name,
        is_default=not await repo.teams(),
        created_at=utcnow(),
        **profile,
    )
    repo.add(team)
    return team


async def update_team(uow: UnitOfWork, team_id: str, **changes: Any) -> Team:
    """Change a team's name, manager or working-hours policy, or make it the fallback team;
    may drain its backlog."""
    repo = RouterRepository(uow.session)
    if await repo.team(team_id) is None:
        raise NotFound(f"no team {team_id}")
    await repo.lock_team(team_id)
    team = await repo.team(team_id)
    assert team is not None
    if changes.pop("is_default", None):
        for other in await repo.teams():
            other.is_default = other.id == team_id
    for field, value in changes.items():
        if value is not None or field in {"manager_name", "manager_email"}:
            setattr(team, field, value)
    await repo.flush()
    await drain_backlog(uow, repo, team_id)
    return team


async def replace_rules(uow: UnitOfWork, rules: list[dict[str, Any]]) -> list[RoutingRule]:
    """Make `rules` the ordered routing rules (each: name, team_id, conditions)."""
    repo = RouterRepository(uow.session)
    known = {t.id for t in await repo.teams()}
    unknown = [
        {"field": f"body.rules.{i}.team_id", "reason": "no such team"}
        for i, rule in enumerate(rules)
        if rule["team_id"] not in known
    ]
    if unknown:
        raise UnknownTeam("a rule names a team that does not exist", errors=unknown)
    rows = [RoutingRule(position=i, **rule) for i, rule in enumerate(rules)]
    await repo.replace_rules(rows)
    return rows


async def create_rep(
    uow: UnitOfWork,
    *,
    team_id: str,
    name: str,
    email: str,
    capacity: int,
    weight: float = 1.0,
    active: bool = True,
    **profile: Any,
) -> Rep:
    """Add a rep to a team; queued leads flow to them at once if they have room."""
    repo = RouterRepository(uow.session)
    if await repo.team(team_id) is None:
        raise UnknownTeam(
            f"no team {team_id}", errors=[{"field": "body.team_id", "reason": "no such team"}]
        )
    await repo.lock_team(team_id)
    rep = Rep(
        id=uuid.uuid4().hex,
        team_id=team_id,
        name=name,
        email=email,
        capacity=capacity,
        weight=weight,
        active=active,
        created_at=utcnow(),
        **profile,
    )
    repo.add(rep)
    await repo.flush()
    await drain_backlog(uow, repo, team_id)
    return rep


NULLABLE_REP_FIELDS = frozenset({"daily_cap", "working_hours"})
"""Rep fields an update may clear with null; for the others null means "unchanged"."""


async def update_rep(uow: UnitOfWork, rep_id: str, **changes: Any) -> Rep:
    """Change a rep's capacity, weight, availability, coverage or hours; new room drains the
    backlog at once."""
    repo = RouterRepository(uow.session)
    rep = await repo.rep(rep_id)
    if rep is None:
        raise NotFound(f"no rep {rep_id}")
    await repo.lock_team(rep.team_id)
    rep = await repo.rep(rep_id, for_update=True)
    assert rep is not None
    for field, value in changes.items():
        if value is not None or field in NULLABLE_REP_FIELDS:
            setattr(rep, field, value)
    await repo.flush()
    await drain_backlog(uow, repo, rep.team_id)
    return rep
