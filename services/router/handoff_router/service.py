"""The router's use cases: route a scored lead, release capacity, drain the backlog,
manage teams and reps. Every change of a team happens under that team's routing lock."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any

from handoff_runtime.db import UnitOfWork
from handoff_runtime.problems import DomainError, NotFound
from handoff_schemas import (
    LEAD_ROUTING,
    Candidate,
    FitGrade,
    LeadAssignedV1,
    LeadEscalatedV1,
    LeadNurtureRequestedV1,
    LeadQueuedV1,
    LeadScoredV1,
    LeadSlaBreachedV1,
    LeadStatus,
    LeadStatusChangedV1,
    NurtureReason,
    RoutingDecision,
    utcnow,
)

from .metrics import (
    ESCALATIONS,
    LEADS_ROUTED,
    REASSIGNMENTS,
    SLA_BREACHES,
    count_on_commit,
    observe_on_commit,
)
from .models import Assignment, BacklogEntry, Rep, RoutedLead, RoutingRule, Team
from .repository import DECISIONS, RouterRepository
from .routing import (
    Coverage,
    LeadFacts,
    RepLoad,
    Rule,
    WorkingHours,
    business_deadline,
    choose_rep,
    goes_to_nurture,
    match_rule,
    routes_again,
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
            countries=rep.countries,
            industries=rep.industries,
            size_bands=rep.size_bands,
            languages=rep.languages,
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
        product_interest=scored.lead.product_interest,
        language=scored.lead.language,
    )


async def _team_loads(repo: RouterRepository, team_id: str) -> tuple[list[Rep], list[RepLoad]]:
    """The team's reps, locked, and how the rules see them (caller holds the team lock)."""
    reps = list(await repo.reps(team_id, for_update=True))
    today = await repo.assigned_today(team_id)
    return reps, [_rep_load(r, today.get(r.id, 0)) for r in reps]


@dataclass
class _Routing:
    """What routing a batch of scored leads reads once: the rules, the default team, each
    team's lock and reps (whose day counts it keeps as it assigns), and where the batch's
    leads stand. It lives for one handler call, inside one savepoint: the team locks it took
    go with a rolled-back savepoint, and so does this object."""

    repo: RouterRepository
    routed: dict[str, RoutedLead]
    owners: dict[str, str] = field(default_factory=dict)
    """The owner of each of the batch's accounts that has one, kept as the batch assigns."""
    _rules: list[Rule] | None = None
    _default_team: Team | None = None
    _teams: dict[str, tuple[list[Rep], dict[str, int]]] = field(default_factory=dict)
    _loads: dict[str, RepLoad] = field(default_factory=dict)

    async def rules(self) -> list[Rule]:
        if self._rules is None:
            self._rules = [
                Rule(name=r.name, team_id=r.team_id, conditions=Coverage.of(**r.conditions))
                for r in await self.repo.rules()
            ]
        return self._rules

    async def default_team(self) -> Team | None:
        if self._default_team is None:
            self._default_team = await self.repo.default_team()
        return self._default_team

    async def team_loads(self, team_id: str) -> tuple[list[Rep], list[RepLoad]]:
        """The team's reps and how the rules see them now; the first call for a team takes
        its lock and reads (and locks) its reps."""
        if team_id not in self._teams:
            await self.repo.lock_team(team_id)
            reps = list(await self.repo.reps(team_id, for_update=True))
            self._teams[team_id] = (reps, await self.repo.assigned_today(team_id))
        reps, today = self._teams[team_id]
        return reps, [self._load(r, today.get(r.id, 0)) for r in reps]

    def _load(self, rep: Rep, assigned_today: int) -> RepLoad:
        """How the rules see a rep now. Within the batch only what an assignment changes can
        change (the rep is locked), so the rest is parsed once per rep."""
        known = self._loads.get(rep.id)
        if known is None:
            known = _rep_load(rep, assigned_today)
        elif (known.working, known.last_assigned_at, known.assigned_today) != (
            rep.working,
            rep.last_assigned_at,
            assigned_today,
        ):
            known = replace(
                known,
                working=rep.working,
                last_assigned_at=rep.last_assigned_at,
                assigned_today=assigned_today,
            )
        self._loads[rep.id] = known
        return known

    async def rep(self, rep_id: str) -> Rep | None:
        """A rep as this batch knows it: from the reps of a team the batch has locked and
        read (kept current as it assigns), else read now. Reading only a rep the batch has
        not met keeps an account owner's lookup from costing a query, and the flush of
        everything the batch has written so far, per lead."""
        for reps, _ in self._teams.values():
            for rep in reps:
                if rep.id == rep_id:
                    return rep
        return await self.repo.rep(rep_id)

    def assigned(self, rep: Rep, account_domain: str | None) -> None:
        """Count an assignment this batch made in the rep's day; the rep now owns the lead's
        account (theirs is its newest active assignment)."""
        if account_domain is not None:
            self.owners[account_domain] = rep.id
        if rep.daily_cap is not None and rep.team_id in self._teams:
            today = self._teams[rep.team_id][1]
            today[rep.id] = today.get(rep.id, 0) + 1


async def _team_for(routing: _Routing, facts: LeadFacts) -> tuple[Team, str]:
    """The team a lead goes to and the rule that decided it."""
    matched = match_rule(await routing.rules(), facts)
    if matched is not None:
        team = await routing.repo.team(matched.team_id)
        if team is not None:
            return team, matched.name
    team = await routing.default_team()
    if team is None:
        raise NoSalesTeam("no sales team exists yet: create one with POST /v1/teams")
    return team, "fallback_team"


async def route_scored_leads(
    uow: UnitOfWork,
    batch: Sequence[LeadScoredV1],
    *,
    nurture_from: FitGrade | None,
    account_owner_full: str = "route_normally",
) -> list[str]:
    """Send each scored lead to nurture, to the least-loaded rep with room, or to the
    backlog, in order, as one at a time would (the rules, teams and reps are read once for
    the batch). Returns the outcomes. A lead the router already holds is not routed twice
    in one sales cycle: only a lead that re-qualified (a higher cycle) after sales let it go
    is routed again, its earlier decisions and assignments kept as its history."""
    repo = RouterRepository(uow.session)
    accounts = {s.account_domain for s in batch if s.account_domain}
    routing = _Routing(
        repo,
        routed=await repo.routed_leads([s.lead_id for s in batch]),
        owners=await repo.account_owners(sorted(accounts)) if accounts else {},
    )
    return [
        await _route(uow, routing, scored, nurture_from, account_owner_full) for scored in batch
    ]


async def _route(
    uow: UnitOfWork,
    routing: _Routing,
    scored: LeadScoredV1,
    nurture_from: FitGrade | None,
    account_owner_full: str,
) -> str:
    repo = routing.repo
    known = routing.routed.get(scored.lead_id)
    if known is not None and not routes_again(known.state, known.cycle, scored.cycle):
        return await _rescored(repo, known, scored)
    now = utcnow()
    if goes_to_nurture(scored.grade, nurture_from):
        decision = _decision(scored, rule=f"nurture_from_grade_{nurture_from}", team_id=None)
        routing.routed[scored.lead_id] = _place(
            repo, scored, known, state="nurture", team_id=None, rep_id=None
        )
        _record_decision(uow, scored, "nurture", decision, now)
        count_on_commit(uow, LEADS_ROUTED, "", "", "nurture")
        await uow.publish(
            LeadNurtureRequestedV1(
                lead_id=scored.lead_id,
                reason=NurtureReason.LOW_FIT,
                note=f"fit grade {scored.grade} (score {scored.score}) is below what sales works",
                requested_at=now,
                requested_by="router",
                cycle=scored.cycle,
            ),
            topic=LEAD_ROUTING.name,
            subject=scored.lead_id,
        )
        return "nurture"
    facts = lead_facts(scored)
    if scored.account_domain and await _route_to_account_owner(
        uow, routing, scored, known, account_owner_full
    ):
        return "account_owner"
    team, rule = await _team_for(routing, facts)
    reps, loads = await routing.team_loads(team.id)
    chosen, candidates = choose_rep(loads, facts, now, respect_hours=team.respect_working_hours)
    decision = _decision(scored, rule=rule, team_id=team.id, candidates=candidates)
    if chosen is None:
        routing.routed[scored.lead_id] = await _queue(
            uow, repo, scored, team.id, decision, now, known=known
        )
        return "queued"
    rep = next(r for r in reps if r.id == chosen.rep_id)
    await _assign_placed(uow, routing, scored, known, rep, decision)
    return "assigned"


async def _assign_placed(
    uow: UnitOfWork,
    routing: _Routing,
    scored: LeadScoredV1,
    known: RoutedLead | None,
    rep: Rep,
    decision: RoutingDecision,
) -> None:
    """Record that the lead routed by `scored` is now the rep's, and assign it."""
    placed = _place(
        routing.repo, scored, known, state="assigned", team_id=rep.team_id, rep_id=rep.id
    )
    routing.routed[scored.lead_id] = placed
    await _assign(uow, routing.repo, scored, rep, decision, placed)
    routing.assigned(rep, scored.account_domain)


async def _route_to_account_owner(
    uow: UnitOfWork,
    routing: _Routing,
    scored: LeadScoredV1,
    known: RoutedLead | None,
    when_full: str,
) -> bool:
    """Give a lead of a known account to the account's owner when they have room, or queue
    it for them (policy `queue_for_owner`). Returns whether the owner took it or waits for it;
    False sends the lead through the normal rules."""
    assert scored.account_domain is not None
    repo = routing.repo
    owner_id = routing.owners.get(scored.account_domain)
    owner = await routing.rep(owner_id) if owner_id else None
    if owner is None:
        return False
    team = await repo.team(owner.team_id)
    assert team is not None
    reps, loads = await routing.team_loads(team.id)
    load = next(load for load in loads if load.rep_id == owner.id)
    now = utcnow()
    # The account owner takes the account's leads whatever their territory, but not while
    # inactive, away or (when the team respects it) off shift.
    if load.unavailable(None, now, respect_hours=team.respect_working_hours) is not None:
        return False
    chosen, candidates = choose_rep([load], None, now, respect_hours=team.respect_working_hours)
    decision = _decision(scored, rule="account_owner", team_id=team.id, candidates=candidates)
    if chosen is not None:
        rep = next(r for r in reps if r.id == owner.id)
        await _assign_placed(uow, routing, scored, known, rep, decision)
        return True
    if when_full != "queue_for_owner":
        return False
    routing.routed[scored.lead_id] = await _queue(
        uow, repo, scored, team.id, decision, now, known=known, reserved_for=owner.id
    )
    return True


async def _rescored(repo: RouterRepository, known: RoutedLead, scored: LeadScoredV1) -> str:
    """A lead scored again keeps its place; a queued one moves in the backlog. A lead still
    with sales that re-qualified meanwhile takes on its new cycle, so whatever is announced
    for it next (an assignment from the backlog, a reassignment) carries that cycle."""
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
    if scored.cycle > known.cycle:
        known.scored = scored.model_dump(mode="json")
        # An assigned lead stays in its cycle until sales' release arrives (it may come
        # after the re-qualification, on another topic); the release routes it again.
        if known.state != "assigned":
            known.cycle = scored.cycle
    known.updated_at = utcnow()
    return "rescored"


async def _assign(
    uow: UnitOfWork,
    repo: RouterRepository,
    scored: LeadScoredV1,
    rep: Rep,
    decision: RoutingDecision,
    routed: RoutedLead | None,
) -> None:
    """Give a lead (`routed`: where it stands with the router) to a rep: take a slot,
    record the owner and why, announce it."""
    now = utcnow()
    team = await repo.team(rep.team_id)
    count_on_commit(uow, LEADS_ROUTED, team.name if team else "", rep.team_id, "assigned")
    if routed is not None and scored.cycle > routed.cycle:
        routed.cycle = scored.cycle
    if scored.cycle == 1 and (routed is None or routed.reassignments == 0):
        observe_on_commit(uow, "assigned", (now - scored.received_at).total_seconds())
    rep.working += 1
    rep.last_assigned_at = now
    repo.add(
        Assignment(
            lead_id=scored.lead_id,
            rep_id=rep.id,
            team_id=rep.team_id,
            assigned_at=now,
            cycle=scored.cycle,
            account_domain=scored.account_domain,
        )
    )
    _record_decision(uow, scored, "assigned", decision, now)
    await uow.publish(
        LeadAssignedV1(
            lead_id=scored.lead_id,
            rep_id=rep.id,
            rep_name=rep.name,
            team_id=rep.team_id,
            assigned_at=now,
            decision=decision,
            cycle=scored.cycle,
        ),
        topic=LEAD_ROUTING.name,
        subject=scored.lead_id,
    )


async def _queue(
    uow: UnitOfWork,
    repo: RouterRepository,
    scored: LeadScoredV1,
    team_id: str,
    decision: RoutingDecision,
    now: datetime,
    *,
    known: RoutedLead | None,
    reserved_for: str | None = None,
) -> RoutedLead:
    """Put a new (or re-qualified, `known`) lead in a team's backlog (for one rep only, when
    `reserved_for`), keep why, and announce `lead.queued`. Returns where the lead stands."""
    placed = _place(repo, scored, known, state="queued", team_id=team_id, rep_id=None)
    repo.add(
        BacklogEntry(
            lead_id=scored.lead_id,
            team_id=team_id,
            grade=scored.grade.value,
            score=scored.score,
            queued_at=now,
            scored=scored.model_dump(mode="json"),
            reserved_rep_id=reserved_for,
        )
    )
    _record_decision(uow, scored, "queued", decision, now)
    team = await repo.team(team_id)
    count_on_commit(uow, LEADS_ROUTED, team.name if team else "", team_id, "queued")
    await uow.publish(
        LeadQueuedV1(
            lead_id=scored.lead_id,
            team_id=team_id,
            queued_at=now,
            decision=decision,
            cycle=scored.cycle,
        ),
        topic=LEAD_ROUTING.name,
        subject=scored.lead_id,
    )
    return placed


def _record_decision(
    uow: UnitOfWork,
    scored: LeadScoredV1,
    outcome: str,
    decision: RoutingDecision,
    now: datetime,
) -> None:
    """Keep why the router did what it did, in which sales cycle of the lead (served by
    GET /v1/leads/{id}/routing). Decisions are only ever added: staged in the unit of work,
    with no ORM object each."""
    uow.append(
        DECISIONS,
        {
            "lead_id": scored.lead_id,
            "outcome": outcome,
            "decided_at": now,
            "decision": decision.model_dump(mode="json"),
            "cycle": scored.cycle,
        },
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


def _place(
    repo: RouterRepository,
    scored: LeadScoredV1,
    known: RoutedLead | None,
    *,
    state: str,
    team_id: str | None,
    rep_id: str | None,
) -> RoutedLead:
    """Record where a lead routed by `scored` now stands: a new row for a lead seen for the
    first time; for a lead routed again in a new cycle (`known`), its row starts over (SLA
    misses counted afresh) while its earlier decisions and assignments stay as they are."""
    placed = RoutedLead(
        lead_id=scored.lead_id,
        state=state,
        team_id=team_id,
        rep_id=rep_id,
        grade=scored.grade.value,
        score=scored.score,
        icp_version=scored.icp_version,
        received_at=scored.received_at,
        updated_at=utcnow(),
        scored=scored.model_dump(mode="json"),
        account_domain=scored.account_domain,
        cycle=scored.cycle,
    )
    if known is None:
        repo.add(placed)
        return placed
    known.sqlmodel_update(placed.model_dump())
    return known


FIRST_TOUCH = frozenset({LeadStatus.CONTACTED})
"""Statuses that count as the rep's first touch of a lead (stopping its SLA timer)."""


@dataclass(frozen=True)
class RoutingPolicy:
    """How scored leads are routed (from the router's settings)."""

    nurture_from: FitGrade | None
    account_owner_full: str = "route_normally"


async def lead_status_changed(
    uow: UnitOfWork, change: LeadStatusChangedV1, routing: RoutingPolicy | None = None
) -> None:
    """Sales moved a lead: a first touch stops its SLA timer; leaving the working statuses
    frees the owner's slot (and routes the lead again if it re-qualified meanwhile)."""
    if change.working:
        await record_first_touch(uow, change)
    else:
        await release_lead(uow, change, routing)


async def record_first_touch(uow: UnitOfWork, change: LeadStatusChangedV1) -> bool:
    """Mark the owner's first touch (the SLA is met); a touch reported for an earlier owner,
    or a second one, changes nothing."""
    if change.to_status not in FIRST_TOUCH:
        return False
    repo = RouterRepository(uow.session)
    assignment = await repo.active_assignment(change.lead_id, for_update=True)
    if assignment is None or assignment.first_touched_at is not None:
        return False
    if change.cycle != assignment.cycle:
        return False
    if change.rep_id is not None and change.rep_id != assignment.rep_id:
        return False
    assignment.first_touched_at = change.occurred_at
    routed = await repo.routed_lead(change.lead_id)
    if routed is not None and routed.cycle == 1:
        waited = (change.occurred_at - routed.received_at).total_seconds()
        observe_on_commit(uow, "first_touch", waited)
    return True


async def release_lead(
    uow: UnitOfWork, change: LeadStatusChangedV1, routing: RoutingPolicy | None = None
) -> bool:
    """When sales stops working a lead, free its owner's slot and give it to the best queued
    lead at once. Returns whether a slot was freed (a repeat of the release frees nothing,
    nor does a release from an earlier sales cycle than the owner's). If the lead
    re-qualified while it was still assigned, it is routed again now (with `routing`)."""
    if change.working:
        return False
    repo = RouterRepository(uow.session)
    assignment = await repo.active_assignment(change.lead_id)
    if assignment is None:
        return False
    await repo.lock_team(assignment.team_id)
    assignment = await repo.active_assignment(change.lead_id, for_update=True)
    if assignment is None or change.cycle < assignment.cycle:
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
    pending = LeadScoredV1.model_validate(routed.scored) if routed and routed.scored else None
    if routing is not None and pending is not None and pending.cycle > assignment.cycle:
        await route_scored_leads(
            uow,
            [pending],
            nurture_from=routing.nurture_from,
            account_owner_full=routing.account_owner_full,
        )
    return True


async def drain_backlog(
    uow: UnitOfWork,
    repo: RouterRepository,
    team_id: str,
    *,
    avoid: tuple[str, str] | None = None,
) -> int:
    """Assign queued leads while any rep of the team has room (caller holds the team's lock):
    in drain order, each lead to the best rep eligible for it; a lead no rep with room may
    take (territory, segment, out of office...) keeps its place for a later drain.
    `avoid` = (lead id, rep id): never give that lead back to that rep (it just missed its
    first touch). Returns how many were assigned."""
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
        open_to = [
            load
            for load in loads
            if (avoid is None or (scored.lead_id, load.rep_id) != avoid)
            and (entry.reserved_rep_id is None or load.rep_id == entry.reserved_rep_id)
        ]
        # A lead waiting for its account owner goes to them whatever their territory.
        facts = None if entry.reserved_rep_id else lead_facts(scored)
        chosen, candidates = choose_rep(
            open_to, facts, now, respect_hours=team.respect_working_hours
        )
        if chosen is None:
            continue
        rep = next(r for r in reps if r.id == chosen.rep_id)
        await repo.remove_from_backlog(entry)
        routed = await repo.routed_lead(scored.lead_id)
        if routed is not None:
            routed.state, routed.rep_id, routed.updated_at = "assigned", rep.id, utcnow()
        rule = "sla_reassignment" if avoid and avoid[0] == scored.lead_id else "backlog_drain"
        decision = _decision(scored, rule=rule, team_id=team_id, candidates=candidates)
        await _assign(uow, repo, scored, rep, decision, routed)
        await repo.flush()
        assigned += 1
        reps, loads = await _team_loads(repo, team_id)
    return assigned


async def drain_team(uow: UnitOfWork, team_id: str) -> int:
    """Drain one team's backlog under its lock (for changes that come with time alone)."""
    repo = RouterRepository(uow.session)
    await repo.lock_team(team_id)
    return await drain_backlog(uow, repo, team_id)


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
    for name, value in changes.items():
        if value is not None or name in {"manager_name", "manager_email"}:
            setattr(team, name, value)
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
    for name, value in changes.items():
        if value is not None or name in NULLABLE_REP_FIELDS:
            setattr(rep, name, value)
    await repo.flush()
    await drain_backlog(uow, repo, rep.team_id)
    return rep


@dataclass(frozen=True)
class SlaPolicy:
    """First-touch deadlines per grade, and when to escalate."""

    first_touch: dict[str, timedelta]
    max_reassignments: int
    business_hours: bool = False

    def due(self, assigned_at: datetime, allowed: timedelta, rep: Rep | None) -> datetime:
        """When the first touch is due: `allowed` after assignment, counted only within the
        rep's working hours when the policy says so and the rep has hours."""
        hours = _rep_load(rep).working_hours if rep is not None else None
        if self.business_hours and hours is not None:
            return business_deadline(assigned_at, allowed, hours)
        return assigned_at + allowed

    @property
    def deadline_seconds(self) -> dict[str, float]:
        """The deadlines in seconds, by grade letter."""
        return {grade: d.total_seconds() for grade, d in self.first_touch.items()}


async def breach_first_touch(uow: UnitOfWork, assignment_id: int, policy: SlaPolicy) -> bool:
    """The owner missed the first-touch deadline: free their slot, announce the breach,
    escalate after too many, and give the lead to another eligible rep (or queue it).
    Fires once: it re-checks the assignment under the team's lock, whichever router instance
    gets here. Returns whether it fired."""
    repo = RouterRepository(uow.session)
    assignment = await repo.assignment(assignment_id)
    if assignment is None:
        return False
    await repo.lock_team(assignment.team_id)
    assignment = await repo.assignment(assignment_id, for_update=True)
    routed = await repo.routed_lead(assignment.lead_id) if assignment else None
    if assignment is None or routed is None or routed.scored is None:
        return False
    deadline = policy.first_touch.get(routed.grade)
    now = utcnow()
    if not assignment.active or assignment.first_touched_at is not None or deadline is None:
        return False
    rep = await repo.rep(assignment.rep_id, for_update=True)
    due_at = policy.due(assignment.assigned_at, deadline, rep)
    if due_at > now:
        return False
    assignment.active, assignment.released_at = False, now
    assignment.release_reason = "sla_breached"
    if rep is not None:
        rep.working = max(0, rep.working - 1)
    routed.reassignments += 1
    lead_id = assignment.lead_id
    team = await repo.team(assignment.team_id)
    team_labels = (team.name if team else "", assignment.team_id)
    count_on_commit(uow, SLA_BREACHES, *team_labels)
    await uow.publish(
        LeadSlaBreachedV1(
            lead_id=lead_id,
            rep_id=assignment.rep_id,
            team_id=assignment.team_id,
            assigned_at=assignment.assigned_at,
            due_at=due_at,
            breached_at=now,
            reassignments=routed.reassignments,
        ),
        topic=LEAD_ROUTING.name,
        subject=lead_id,
    )
    if team is not None and routed.reassignments >= policy.max_reassignments:
        count_on_commit(uow, ESCALATIONS, *team_labels)
        await uow.publish(
            LeadEscalatedV1(
                lead_id=lead_id,
                team_id=team.id,
                manager_name=team.manager_name,
                manager_email=team.manager_email,
                reassignments=routed.reassignments,
                reason=f"first touch missed {routed.reassignments} times",
                escalated_at=now,
            ),
            topic=LEAD_ROUTING.name,
            subject=lead_id,
        )
    scored = LeadScoredV1.model_validate(routed.scored)
    routed.state, routed.rep_id, routed.updated_at = "queued", None, now
    repo.add(
        BacklogEntry(
            lead_id=lead_id,
            team_id=assignment.team_id,
            grade=scored.grade.value,
            score=scored.score,
            queued_at=scored.received_at,
            scored=routed.scored,
        )
    )
    await repo.flush()
    # The lead keeps its priority (queued as of when it came in) and goes to the best other
    # eligible rep at once; the freed slot goes to whoever is next in the backlog.
    await drain_backlog(uow, repo, assignment.team_id, avoid=(lead_id, assignment.rep_id))
    if await repo.backlog_entry(lead_id) is None:
        count_on_commit(uow, REASSIGNMENTS, *team_labels)
    else:
        decision = _decision(
            scored, rule="sla_reassignment", team_id=assignment.team_id, candidates=[]
        )
        await uow.publish(
            LeadQueuedV1(
                lead_id=lead_id,
                team_id=assignment.team_id,
                queued_at=now,
                decision=decision,
                cycle=scored.cycle,
            ),
            topic=LEAD_ROUTING.name,
            subject=lead_id,
        )
    return True


async def expire_queued_lead(uow: UnitOfWork, lead_id: str, *, max_age: timedelta) -> bool:
    """A lead that waited longer than `max_age` for room goes to nurture (reason
    `sales_capacity`) instead of rotting in the backlog. Returns whether it did."""
    repo = RouterRepository(uow.session)
    entry = await repo.backlog_entry(lead_id)
    if entry is None:
        return False
    await repo.lock_team(entry.team_id)
    entry = await repo.backlog_entry(lead_id)
    now = utcnow()
    if entry is None or entry.queued_at + max_age > now:
        return False
    await repo.remove_from_backlog(entry)
    scored = LeadScoredV1.model_validate(entry.scored)
    routed = await repo.routed_lead(lead_id)
    if routed is not None:
        routed.state, routed.rep_id, routed.updated_at = "nurture", None, now
    hours = max_age.total_seconds() / 3600
    decision = _decision(scored, rule=f"backlog_older_than_{hours:g}h", team_id=entry.team_id)
    _record_decision(uow, scored, "nurture", decision, now)
    await uow.publish(
        LeadNurtureRequestedV1(
            lead_id=lead_id,
            reason=NurtureReason.SALES_CAPACITY,
            note=f"no rep had room for {hours:g} hours",
            requested_at=now,
            requested_by="router",
            cycle=scored.cycle,
        ),
        topic=LEAD_ROUTING.name,
        subject=lead_id,
    )
    return True
