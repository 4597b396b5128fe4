"""The router's service layer as a state machine on the real embedded PostgreSQL.

Hypothesis drives any sequence of: reps joining (any capacity, active or paused), leads of
grades A-C arriving, assigned leads being disqualified, duplicate deliveries of scored events
and status changes, and capacity and availability changes. Each step calls the service layer
in one unit of work, as the consumers and the HTTP routes do (no broker needed). After every
step the database is read with SQL and checked against the router's invariants and against a
model of where every lead should be:

- no assignment ever takes a rep past their capacity (capacity may be lowered below what a rep
  already works: they keep their leads but get no new ones), and paused reps get nothing;
- a rep's `working` is the number of their active assignments;
- a lead has at most one active assignment;
- every lead that arrived is assigned, queued or released, exactly one of them: none is lost;
- while any active rep has room the backlog is empty;
- the backlog drains best grade first, then highest score, then oldest, and the rep who gets a
  lead is an eligible one with the least load;
- a duplicate delivery changes nothing;
- every decision is recorded and announced in the outbox, once.

Only capacity is modelled: there are no routing rules, so every lead goes to the fallback
team, the first one ever created, and reps cover every lead, with no daily cap, hours or
absences. Since that team is whichever came first, this module gets a database of its own,
and each Hypothesis example starts from empty router tables.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, ClassVar, TypeVar

import pytest
import sqlalchemy as sa
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from support.events import scored_lead
from support.infra import Infra, service_database

from handoff_router import service
from handoff_runtime.db import Database, UnitOfWork
from handoff_schemas import (
    FitGrade,
    LeadScoredV1,
    LeadStatus,
    LeadStatusChangedV1,
    decode,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")

SETTINGS = settings(max_examples=25, stateful_step_count=20, deadline=None)

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
"""Every event's own timestamps; the router stamps its rows with its own clock."""

GRADE_RANK = {FitGrade.A: 0, FitGrade.B: 1, FitGrade.C: 2}
SALES_GRADES = sorted(GRADE_RANK)  # D goes to nurture (nurture_from=D), so it never queues

SCORES = st.sampled_from([50, 90]) | st.integers(0, 100)
"""Any score, often the same one, so equal grade and score (oldest first) happen too."""

# --- the database of this module ---------------------------------------------------------


@pytest.fixture(scope="module")
def router_database(infra: Infra) -> Iterator[str]:
    """A fresh database on the session's server with the router's migrations applied."""
    with service_database(infra.database_url, "router") as url:
        yield url


# --- what the database holds, read with SQL ------------------------------------------------


@dataclass(frozen=True)
class RepRow:
    capacity: int
    working: int
    active: bool


@dataclass(frozen=True)
class AssignmentRow:
    lead_id: str
    rep_id: str
    active: bool
    release_reason: str | None


@dataclass(frozen=True)
class BacklogRow:
    lead_id: str
    grade: str
    score: float
    queued_at: datetime


@dataclass(frozen=True)
class RoutedRow:
    state: str
    rep_id: str | None
    grade: str
    score: float
    icp_version: int


@dataclass
class Snapshot:
    """The router's state, without the `updated_at` stamps a duplicate delivery may touch."""

    reps: dict[str, RepRow] = field(default_factory=dict)
    assignments: list[AssignmentRow] = field(default_factory=list)  # oldest first
    backlog: list[BacklogRow] = field(default_factory=list)  # in the order it drains
    routed: dict[str, RoutedRow] = field(default_factory=dict)
    decisions: dict[str, list[str]] = field(default_factory=dict)  # lead -> outcomes, in order
    outbox: dict[str, int] = field(default_factory=dict)  # lead -> events staged

    def owners(self, lead_id: str) -> list[str]:
        """The reps holding an active assignment of the lead."""
        return [a.rep_id for a in self.assignments if a.lead_id == lead_id and a.active]


async def read_snapshot(db: Database) -> Snapshot:
    snap = Snapshot()
    async with db.engine.connect() as conn:

        async def rows(sql: str) -> list[Any]:
            return list((await conn.execute(sa.text(sql))).all())

        for rep_id, capacity, working, active in await rows(
            "SELECT id, capacity, working, active FROM router.reps"
        ):
            snap.reps[rep_id] = RepRow(capacity, working, active)
        snap.assignments = [
            AssignmentRow(*row)
            for row in await rows(
                "SELECT lead_id, rep_id, active, release_reason FROM router.assignments ORDER BY id"
            )
        ]
        snap.backlog = [
            BacklogRow(*row)
            for row in await rows(
                "SELECT lead_id, grade, score, queued_at FROM router.backlog"
                " ORDER BY grade, score DESC, queued_at"
            )
        ]
        for lead_id, *rest in await rows(
            "SELECT lead_id, state, rep_id, grade, score, icp_version FROM router.routed_leads"
        ):
            snap.routed[lead_id] = RoutedRow(*rest)
        for lead_id, outcome in await rows(
            "SELECT lead_id, outcome FROM router.decisions ORDER BY id"
        ):
            snap.decisions.setdefault(lead_id, []).append(outcome)
        for key, n in await rows("SELECT key, count(*) FROM router.outbox GROUP BY key"):
            snap.outbox[key] = n
    return snap


# --- the model -----------------------------------------------------------------------------


@dataclass
class LeadModel:
    lead_id: str
    seq: int  # arrival order: among equal grade and score, the earlier arrival queued first
    scored: LeadScoredV1
    state: str = "new"  # -> assigned | queued | released
    rep_id: str | None = None
    outcomes: list[str] = field(default_factory=list)  # the decisions the router should record
    release: LeadStatusChangedV1 | None = None

    @property
    def priority(self) -> tuple[int, float, int]:
        return (GRADE_RANK[self.scored.grade], -self.scored.score, self.seq)


@dataclass
class RepModel:
    capacity: int
    active: bool


def new_lead(seq: int, grade: FitGrade, score: int) -> LeadModel:
    return LeadModel(
        f"lead-{seq:03d}", seq, scored_lead(f"lead-{seq:03d}", at=NOW, grade=grade, score=score)
    )


async def route(uow: UnitOfWork, batch: list[LeadScoredV1]) -> list[str]:
    """Route scored leads as the consumer does (a batch of one or more)."""
    return await service.route_scored_leads(uow, batch, nurture_from=FitGrade.D)


def status_change(lead: LeadModel, to_status: LeadStatus, *, working: bool) -> LeadStatusChangedV1:
    return LeadStatusChangedV1(
        lead_id=lead.lead_id,
        from_status=LeadStatus.CONTACTED,
        to_status=to_status,
        rep_id=lead.rep_id,
        reason=None if working else "no_budget",
        actor="rep",
        occurred_at=NOW,
        working=working,
    )


@SETTINGS
class RouterInvariants(RuleBasedStateMachine):
    """Steps through the router's use cases; `db` and `event_loop` are bound by the test."""

    db: ClassVar[Database]
    event_loop: ClassVar[asyncio.AbstractEventLoop]

    reps = Bundle("reps")
    leads = Bundle("leads")

    def __init__(self) -> None:
        super().__init__()
        self.team_id = ""
        self.rep_models: dict[str, RepModel] = {}
        self.lead_models: dict[str, LeadModel] = {}
        self.run(self._reset())
        self.before = self.after = self.run(read_snapshot(self.db))

    async def _reset(self) -> None:
        """Empty every router table (teams, reps, assignments, routed_leads, backlog,
        decisions, outbox, processed_events and whatever later migrations added)."""
        async with self.db.engine.begin() as conn:
            tables = (
                await conn.execute(
                    sa.text(
                        "SELECT tablename FROM pg_tables"
                        " WHERE schemaname = 'router' AND tablename <> 'alembic_version'"
                    )
                )
            ).scalars()
            listed = ", ".join(f'router."{table}"' for table in tables)
            await conn.execute(sa.text(f"TRUNCATE {listed} RESTART IDENTITY CASCADE"))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.event_loop.run_until_complete(coro)

    def step(self, action: Callable[[UnitOfWork], Coroutine[Any, Any, T]]) -> T:
        """One use case in its own unit of work; snapshots the database after it (the state
        before it is the one the previous step left: nothing else writes)."""

        async def in_unit_of_work() -> T:
            async with self.db.unit_of_work() as uow:
                return await action(uow)

        self.before = self.after
        result = self.run(in_unit_of_work())
        self.after = self.run(read_snapshot(self.db))
        return result

    # model helpers

    def working(self, rep_id: str) -> int:
        return sum(
            1 for m in self.lead_models.values() if m.state == "assigned" and m.rep_id == rep_id
        )

    def eligible(self) -> list[str]:
        return [
            rep_id
            for rep_id, rep in self.rep_models.items()
            if rep.active and self.working(rep_id) < rep.capacity
        ]

    def queue(self) -> list[LeadModel]:
        return sorted(
            (m for m in self.lead_models.values() if m.state == "queued"), key=lambda m: m.priority
        )

    def give(self, lead: LeadModel) -> None:
        """Take the router's assignment of `lead` into the model: it must have gone to an
        eligible rep (active, below capacity) with the least load at that moment."""
        owners = self.after.owners(lead.lead_id)
        assert len(owners) == 1, f"{lead.lead_id} should now be assigned; owners: {owners}"
        rep_id = owners[0]
        eligible = self.eligible()
        assert rep_id in eligible, f"{lead.lead_id} went to {rep_id}, who had no room"
        loads = {r: Fraction(self.working(r), self.rep_models[r].capacity) for r in eligible}
        assert loads[rep_id] == min(loads.values()), f"{rep_id} was not least loaded: {loads}"
        lead.state, lead.rep_id = "assigned", rep_id
        lead.outcomes.append("assigned")

    def drain(self) -> list[str]:
        """The leads the backlog should have given to reps with room, best first."""
        drained = []
        while (queue := self.queue()) and self.eligible():
            self.give(queue[0])
            drained.append(queue[0].lead_id)
        return drained

    def has_assigned_leads(self) -> bool:
        return any(m.state == "assigned" for m in self.lead_models.values())

    # rules

    @initialize(target=reps, capacity=st.integers(1, 2))
    def create_team(self, capacity: int) -> str:
        """The team, with a first rep with room, so that 20 steps reach a full team, a
        backlog and releases often; `add_rep` adds reps of any capacity, active or not."""
        return self.start(capacity)

    def start(self, capacity: int) -> str:
        team = self.step(lambda uow: service.create_team(uow, "Sales"))
        self.team_id = team.id
        return self.new_rep(capacity, active=True)

    @rule(target=reps, capacity=st.integers(0, 4), active=st.booleans())
    def add_rep(self, capacity: int, active: bool) -> str:
        return self.new_rep(capacity, active)

    def new_rep(self, capacity: int, active: bool) -> str:
        n = len(self.rep_models) + 1
        rep = self.step(
            lambda uow: service.create_rep(
                uow,
                team_id=self.team_id,
                name=f"Rep {n}",
                email=f"rep{n}@acme.io",
                capacity=capacity,
                weight=1.0,
                active=active,
            )
        )
        self.rep_models[rep.id] = RepModel(capacity, active)
        self.drain()
        return rep.id

    @rule(target=leads, grade=st.sampled_from(SALES_GRADES), score=SCORES)
    def lead_arrives(self, grade: FitGrade, score: int) -> str:
        return self.arrive(grade, score)

    def arrive(self, grade: FitGrade, score: int) -> str:
        """A scored lead comes in: to a rep with room if any, else to the backlog."""
        lead = new_lead(len(self.lead_models) + 1, grade, score)
        (outcome,) = self.step(lambda uow: route(uow, [lead.scored]))
        self.routed(lead, outcome)
        return lead.lead_id

    @rule(
        target=leads,
        arrivals=st.lists(st.tuples(st.sampled_from(SALES_GRADES), SCORES), min_size=2, max_size=4),
    )
    def leads_arrive_in_one_batch(
        self, arrivals: list[tuple[FitGrade, int]]
    ) -> MultipleResults[str]:
        """Scored leads consumed in one batch (the rules, team and reps read once): each is
        routed as if it had come alone, in order."""
        first = len(self.lead_models) + 1
        batch = [new_lead(first + n, grade, score) for n, (grade, score) in enumerate(arrivals)]
        outcomes = self.step(lambda uow: route(uow, [lead.scored for lead in batch]))
        for lead, outcome in zip(batch, outcomes, strict=True):
            self.routed(lead, outcome)
        return multiple(*(lead.lead_id for lead in batch))

    def routed(self, lead: LeadModel, outcome: str) -> None:
        """Take the router's outcome for a new lead into the model: assigned if any rep had
        room when it came, else queued."""
        room = bool(self.eligible())
        self.lead_models[lead.lead_id] = lead
        if room:
            assert outcome == "assigned"
            self.give(lead)
        else:
            assert outcome == "queued"
            lead.state = "queued"
            lead.outcomes.append("queued")

    @precondition(lambda self: self.has_assigned_leads())
    @rule(data=st.data())
    def lead_released(self, data: st.DataObject) -> None:
        assigned = [m.lead_id for m in self.lead_models.values() if m.state == "assigned"]
        self.release(data.draw(st.sampled_from(assigned), label="assigned lead"))

    def release(self, lead_id: str) -> None:
        """Sales disqualifies an assigned lead: its slot is freed and goes to the head of the
        backlog if the rep can use it."""
        lead = self.lead_models[lead_id]
        assert lead.rep_id is not None
        rep_id, rep = lead.rep_id, self.rep_models[lead.rep_id]
        change = status_change(lead, LeadStatus.DISQUALIFIED, working=False)
        head = next(iter(self.queue()), None)
        assert self.step(lambda uow: service.release_lead(uow, change)) is True
        lead.state, lead.release = "released", change
        self.drain()

        # priority, read from the database: a slot the rep can use goes to the lead that was
        # first in the backlog before the step, and only to it
        backlog_before = [row.lead_id for row in self.before.backlog]
        backlog_after = [row.lead_id for row in self.after.backlog]
        slot_usable = rep.active and self.before.reps[rep_id].working - 1 < rep.capacity
        if backlog_before and slot_usable:
            assert head is not None
            assert backlog_before[0] == head.lead_id, (backlog_before, head.lead_id)
            assert backlog_after == backlog_before[1:], (backlog_before, backlog_after)
            assert self.after.owners(head.lead_id) == [rep_id]
        else:
            assert backlog_after == backlog_before

    @rule(lead=leads, data=st.data())
    def delivered_again(self, lead: str, data: st.DataObject) -> None:
        """A duplicate delivery of the lead's scored event or (once it happened) of its
        release, or a status change that keeps the lead worked (through the consumer's entry
        point, which may record a first touch): no capacity, owner or queue place changes."""
        model = self.lead_models[lead]
        kinds = ["scored", "still worked"] + (["release"] if model.release else [])
        kind = data.draw(st.sampled_from(kinds), label="delivery")
        if kind == "scored":
            scored = model.scored
            outcome = self.step(lambda uow: route(uow, [scored]))
            assert outcome == ["rescored"]
        elif kind == "release":
            release = model.release
            assert release is not None
            assert self.step(lambda uow: service.release_lead(uow, release)) is False
        else:
            worked = status_change(model, LeadStatus.CONTACTED, working=True)
            self.step(lambda uow: service.lead_status_changed(uow, worked))
        assert self.after == self.before

    @rule(rep=reps, capacity=st.integers(0, 5))
    def change_capacity(self, rep: str, capacity: int) -> None:
        self.update(rep, capacity=capacity)

    @rule(rep=reps, active=st.booleans())
    def set_active(self, rep: str, active: bool) -> None:
        self.update(rep, active=active)

    def update(self, rep: str, *, capacity: int | None = None, active: bool | None = None) -> None:
        """Change a rep's capacity or availability (None: unchanged); new room drains."""
        self.step(
            lambda uow: service.update_rep(uow, rep, capacity=capacity, active=active, weight=None)
        )
        model = self.rep_models[rep]
        model.capacity = model.capacity if capacity is None else capacity
        model.active = model.active if active is None else active
        self.drain()

    # invariants, on the database as the last step left it

    def check(self) -> None:
        """Every invariant (for a sequence driven by hand)."""
        self.no_assignment_beyond_capacity()
        self.working_counts_active_assignments()
        self.at_most_one_active_assignment_per_lead()
        self.every_lead_in_exactly_one_state()
        self.backlog_empty_while_any_rep_has_room()
        self.router_agrees_with_model()

    @invariant()
    def no_assignment_beyond_capacity(self) -> None:
        for rep_id, rep in self.after.reps.items():
            before = self.before.reps.get(rep_id)
            was = before.working if before else 0
            assert rep.working <= max(rep.capacity, was), (rep_id, was, rep)
            if was >= rep.capacity or not rep.active:
                assert rep.working <= was, (rep_id, was, rep)

    @invariant()
    def working_counts_active_assignments(self) -> None:
        active = Counter(a.rep_id for a in self.after.assignments if a.active)
        for rep_id, rep in self.after.reps.items():
            assert rep.working == active[rep_id], (rep_id, rep, active[rep_id])

    @invariant()
    def at_most_one_active_assignment_per_lead(self) -> None:
        active = Counter(a.lead_id for a in self.after.assignments if a.active)
        assert all(n == 1 for n in active.values()), active

    @invariant()
    def every_lead_in_exactly_one_state(self) -> None:
        snap = self.after
        arrived = set(self.lead_models)
        assigned = {a.lead_id for a in snap.assignments if a.active}
        queued = [row.lead_id for row in snap.backlog]
        released = {lead for lead, row in snap.routed.items() if row.state == "released"}
        assert len(queued) == len(set(queued))
        assert not assigned & set(queued), assigned & set(queued)
        assert not assigned & released, assigned & released
        assert not set(queued) & released, set(queued) & released
        assert len(arrived) == len(assigned) + len(queued) + len(released)
        assert assigned | set(queued) | released == arrived
        assert set(snap.routed) == arrived
        for lead in assigned:
            assert snap.routed[lead].state == "assigned"
            assert snap.routed[lead].rep_id == snap.owners(lead)[0]
        for lead in queued:
            assert snap.routed[lead].state == "queued"

    @invariant()
    def backlog_empty_while_any_rep_has_room(self) -> None:
        room = [
            r for r, rep in self.after.reps.items() if rep.active and rep.working < rep.capacity
        ]
        assert not (room and self.after.backlog), (room, self.after.backlog)

    @invariant()
    def router_agrees_with_model(self) -> None:
        snap = self.after
        for lead_id, lead in self.lead_models.items():
            assert snap.routed[lead_id].state == lead.state, (lead_id, lead.state)
            if lead.state == "assigned":
                assert snap.owners(lead_id) == [lead.rep_id]
            assert snap.decisions.get(lead_id, []) == lead.outcomes, lead_id
            # every decision is announced, and only decisions are
            assert snap.outbox.get(lead_id, 0) == len(lead.outcomes), lead_id
        assert [row.lead_id for row in snap.backlog] == [m.lead_id for m in self.queue()]
        assert set(snap.reps) == set(self.rep_models)
        for rep_id, rep in snap.reps.items():
            model = self.rep_models[rep_id]
            assert (rep.capacity, rep.active) == (model.capacity, model.active), rep_id
            assert rep.working == self.working(rep_id), rep_id


@contextmanager
def machine_on(url: str) -> Iterator[type[RouterInvariants]]:
    """The state machine bound to the module's database and one event loop of its own."""
    loop = asyncio.new_event_loop()
    database = Database(url, schema="router", source="/handoff/router", pool_size=2)

    class OnThisDatabase(RouterInvariants):
        db = database
        event_loop = loop

    try:
        yield OnThisDatabase
    finally:
        loop.run_until_complete(database.dispose())
        loop.close()


# Passing takes seconds; a failure is shrunk to its shortest sequence, for up to 5 minutes.
@pytest.mark.timeout(600)
def test_router_invariants_hold_for_any_sequence_of_steps(router_database: str) -> None:
    with machine_on(router_database) as machine:
        run_state_machine_as_test(machine, settings=SETTINGS)


def test_the_backlog_drains_best_grade_then_highest_score_then_oldest(
    router_database: str,
) -> None:
    """The drain order with every tie-break, on a fixed sequence (random ones reach equal
    grade and score only now and then), checked on the database rows themselves."""
    with machine_on(router_database) as machine:
        m = machine()
        first_rep = m.start(capacity=1)
        m.check()
        leads = {}
        for name, grade, score in [
            ("first", FitGrade.C, 10),
            ("b50", FitGrade.B, 50),
            ("a10", FitGrade.A, 10),
            ("b50_later", FitGrade.B, 50),
            ("b90", FitGrade.B, 90),
        ]:
            leads[name] = m.arrive(grade, score)
            m.check()
        queued = [leads[n] for n in ("a10", "b90", "b50", "b50_later")]
        assert [row.lead_id for row in m.after.backlog] == queued

        for released, taker in [("first", "a10"), ("a10", "b90"), ("b90", "b50")]:
            m.release(leads[released])
            m.check()
            assert m.after.owners(leads[taker]) == [first_rep]
            queued.remove(leads[taker])
            assert [row.lead_id for row in m.after.backlog] == queued

        second_rep = m.new_rep(capacity=1, active=False)  # no room while paused
        m.check()
        assert [row.lead_id for row in m.after.backlog] == [leads["b50_later"]]
        m.update(second_rep, active=True)
        m.check()
        assert m.after.owners(leads["b50_later"]) == [second_rep]
        assert m.after.backlog == []
        m.teardown()


def test_a_lead_that_requalifies_before_its_release_arrives_is_routed_again_on_release(
    router_database: str,
) -> None:
    """The re-qualified lead's `lead.scored` (cycle 2) and sales' release of cycle 1 travel on
    different topics, so the router may read them in either order. Read the scored event
    first: the lead stays with its owner until the release, which then routes it again; a
    late report from cycle 1 afterwards neither frees nor touches the cycle-2 assignment."""

    async def scenario() -> None:
        db = Database(router_database, schema="router", source="/handoff/router", pool_size=2)
        routing = service.RoutingPolicy(nurture_from=FitGrade.D)
        try:
            async with db.unit_of_work() as uow:
                team = await service.create_team(uow, f"Cycles {uuid.uuid4().hex[:6]}")
            async with db.unit_of_work() as uow:
                rep = await service.create_rep(
                    uow, team_id=team.id, name="Cy", email="cy@acme.io", capacity=3, weight=1.0
                )
            rules = [{"name": "cycles", "team_id": team.id, "conditions": {}}]
            async with db.unit_of_work() as uow:
                await service.replace_rules(uow, rules)
            lead_id = f"lead_{uuid.uuid4().hex}"
            first = scored_lead(lead_id, at=NOW, score=90)
            again = first.model_copy(update={"cycle": 2})

            async def outcome(scored: LeadScoredV1) -> str:
                async with db.unit_of_work() as uow:
                    (routed,) = await route(uow, [scored])
                    return routed

            async def report(status: LeadStatus, cycle: int, *, working: bool) -> None:
                change = LeadStatusChangedV1(
                    lead_id=lead_id,
                    from_status=LeadStatus.CONTACTED,
                    to_status=status,
                    rep_id=rep.id,
                    reason=None if working else "no_budget",
                    occurred_at=NOW,
                    working=working,
                    cycle=cycle,
                )
                async with db.unit_of_work() as uow:
                    await service.lead_status_changed(uow, change, routing)

            async def owners() -> list[tuple[int, bool, Any]]:
                async with db.engine.connect() as conn:
                    rows = await conn.execute(
                        sa.text(
                            "SELECT cycle, active, first_touched_at FROM router.assignments "
                            "WHERE lead_id = :id ORDER BY id"
                        ),
                        {"id": lead_id},
                    )
                    return [(r.cycle, r.active, r.first_touched_at) for r in rows]

            assert await outcome(first) == "assigned"
            assert await outcome(again) == "rescored"  # still with its cycle-1 owner
            assert await owners() == [(1, True, None)]

            await report(LeadStatus.DISQUALIFIED, 1, working=False)
            assert await owners() == [(1, False, None), (2, True, None)]

            await report(LeadStatus.LOST, 1, working=False)  # late, from cycle 1
            await report(LeadStatus.CONTACTED, 1, working=True)
            assert await owners() == [(1, False, None), (2, True, None)]
            await report(LeadStatus.CONTACTED, 2, working=True)
            assert [(c, a, t is not None) for c, a, t in await owners()] == [
                (1, False, False),
                (2, True, True),
            ]
            async with db.engine.connect() as conn:
                values = (
                    await conn.execute(
                        sa.text(
                            "SELECT value FROM router.outbox WHERE key = :id "
                            "AND headers->>'ce_type' = 'handoff.lead.assigned.v1' ORDER BY id"
                        ),
                        {"id": lead_id},
                    )
                ).scalars()
                cycles = [decode(v).data.cycle for v in values]
            assert cycles == [1, 2]
        finally:
            await db.dispose()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
