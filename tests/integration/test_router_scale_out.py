"""Scale-out safety of the router: three router processes in one consumer group, on one
database and broker, route a burst of 200 leads that race for one hot rep's five slots.

The module runs its own PostgreSQL and broker (the router routes to the first team ever
created, so it must not share a database with other modules), the scorer and feedback once
(the launcher's Stack), and three `python -m handoff_router serve` processes. 200 grade-A
leads arrive at once, as single webhooks and batches; the team's one rep holds five. Exactly
five are assigned, and 195 wait in the backlog in drain order; DESIGN.md's capacity
invariants are checked on the tables after each scenario. Then sales lets the
five go one at a time, and each release gives its slot to exactly the head of the backlog.
What the routers published is read back with an independent consumer; the router's tables
are checked directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.kafka import read_topic
from support.processes import Instance, running_instances
from support.system import ADMIN_TOKEN, admin_headers

from handoff_runtime.db import create_engine
from handoff_runtime.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from handoff_runtime.launcher import SERVICES, WEBHOOK_SOURCES_ENV, Stack
from handoff_schemas import LEAD_ROUTING, LEAD_SCORED, LEAD_STATUS, CloudEvent, decode
from handoff_schemas.events import LeadProfile
from handoff_scorer.scoring import load_demo_icp, score_lead

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROUTERS = 3
LEADS = 200
CAPACITIES = {"maria": 5}
"""One hot rep: every lead of the burst races for her five slots."""
TOTAL_CAPACITY = sum(CAPACITIES.values())
ASSIGNED = "handoff.lead.assigned.v1"
QUEUED = "handoff.lead.queued.v1"
NURTURE = "handoff.lead.nurture_requested.v1"
OUTCOMES = frozenset({ASSIGNED, QUEUED, NURTURE})
GROUP_PARTITIONS = LEAD_SCORED.partitions + LEAD_STATUS.partitions
LOCAL = "local"
EVENT_TIMEOUT_S = 20.0
RECENT = (datetime.now(UTC) - timedelta(days=2)).isoformat()
# Fit points for company size under the demo ICP; all three keep the lead grade A.
EMPLOYEES = (250, 100, 2000)


@dataclass(frozen=True)
class ScaleOut:
    """The running system: one scorer, one feedback, three routers in one group."""

    scorer: str
    feedback: str
    routers: list[Instance]
    bootstrap: str
    database_url: str
    team_id: str
    capacity: dict[str, int]
    """Rep id -> capacity."""


@dataclass(frozen=True)
class Burst:
    """The leads of the burst and the one routing outcome each got."""

    lead_ids: list[str]
    outcomes: dict[str, CloudEvent[Any]]

    def of_type(self, event_type: str) -> list[CloudEvent[Any]]:
        return [e for e in self.outcomes.values() if e.type == event_type]


def ideal_lead(index: int) -> dict[str, Any]:
    """A lead the demo ICP grades A; company size varies the score, recent demo requests
    its engagement."""
    return {
        "email": f"buyer{index}@nordwerk{index}.de",
        "name": f"Buyer {index}",
        "company": f"Nordwerk {index} Software",
        "domain": f"nordwerk{index}.de",
        "title": "VP Engineering",
        "industry": "Software",
        "employees": EMPLOYEES[index % len(EMPLOYEES)],
        "country": "DE",
        "source": "hubspot",
        "campaign": "scale-out-burst",
        "activities": [{"type": "demo_requested", "occurred_at": RECENT}] * (index % 4),
    }


def joined_partitions(router: Instance) -> int | None:
    """How many partitions the router's last group assignment gave it (None: not joined)."""
    joined = [r for r in router.log_records() if r.get("event") == "consumer group joined"]
    return int(joined[-1]["partitions"]) if joined else None


def wait_for_stable_group(routers: list[Instance], timeout_s: float = 30) -> dict[str, int]:
    """Until every router has joined and their latest assignments cover the group's
    partitions exactly once between them (the rebalances after each join are over)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = {r.name: joined_partitions(r) for r in routers}
        known = [c for c in counts.values() if c is not None]
        if len(known) == len(routers) and sum(known) == GROUP_PARTITIONS:
            return {name: c or 0 for name, c in counts.items()}
        assert time.monotonic() < deadline, f"the router group did not settle: {counts}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def scale_out() -> Iterator[ScaleOut]:
    with ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="handoff-scale-out-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        postgres = EmbeddedPostgres(workdir / "pg", temporary=True)
        database_url = postgres.start()
        cleanup.callback(postgres.stop)
        kafka = EmbeddedKafka(port=free_port(), log_path=workdir / "tansu.log")
        bootstrap = kafka.start()
        cleanup.callback(kafka.stop)

        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "HANDOFF_SCORER_PORT": str(free_port()),
            "HANDOFF_FEEDBACK_PORT": str(free_port()),
            WEBHOOK_SOURCES_ENV: json.dumps({LOCAL: {"signed": False}}),
            "HANDOFF_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        # Stack creates the topics, migrates and starts scorer and feedback; the routers
        # are started separately, three of them, on the same database and broker.
        services = Stack(workdir, env=env, services=[s for s in SERVICES if s.name != "router"])
        cleanup.callback(services.stop)
        services.start()
        routers = cleanup.enter_context(
            running_instances(
                "handoff_router",
                ROUTERS,
                env=services.child_env(),
                port_env="HANDOFF_ROUTER_PORT",
                workdir=workdir,
            )
        )
        partitions = wait_for_stable_group(routers)
        print(f"router group partitions (scored + status topics): {partitions}")

        scorer, feedback = services.url("scorer"), services.url("feedback")
        with httpx.Client(timeout=10, headers=admin_headers()) as client:
            icp = client.post(f"{scorer}/v1/icp", json=load_demo_icp().model_dump(mode="json"))
            assert icp.status_code == 201, icp.text
            team = client.post(f"{routers[0].base_url}/v1/teams", json={"name": "Inbound EMEA"})
            assert team.status_code == 201, team.text
            team_id = team.json()["id"]
            capacity: dict[str, int] = {}
            # Each rep is created through a different router instance.
            for router, (name, slots) in zip(routers, CAPACITIES.items(), strict=False):
                rep = client.post(
                    f"{router.base_url}/v1/reps",
                    json={
                        "team_id": team_id,
                        "name": name,
                        "email": f"{name}@handoff.dev",
                        "capacity": slots,
                    },
                )
                assert rep.status_code == 201, rep.text
                capacity[rep.json()["id"]] = slots
        yield ScaleOut(
            scorer=scorer,
            feedback=feedback,
            routers=routers,
            bootstrap=bootstrap,
            database_url=database_url,
            team_id=team_id,
            capacity=capacity,
        )


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    headers = {"webhook-source": LOCAL, **admin_headers()}
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
async def engine(scale_out: ScaleOut) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(scale_out.database_url, pool_size=2)
    yield engine
    await engine.dispose()


async def routing_outcomes(
    bootstrap: str, lead_ids: list[str], timeout_s: float = 30
) -> dict[str, list[CloudEvent[Any]]]:
    """Every routing outcome (assigned, queued, nurture) of each lead, read from offset 0,
    waiting until each lead has at least one or the timeout passes."""
    keys = {lead_id.encode() for lead_id in lead_ids}
    deadline = time.monotonic() + timeout_s
    extra = 0
    while True:
        records = await read_topic(
            bootstrap,
            LEAD_ROUTING.name,
            until=len(keys) + extra,
            timeout_s=max(1.0, deadline - time.monotonic()),
            where=lambda r: r.key in keys and decode(r.value).type in OUTCOMES,
        )
        found: dict[str, list[CloudEvent[Any]]] = {}
        for record in records:
            found.setdefault(record.key.decode(), []).append(decode(record.value))
        if len(found) == len(keys) or time.monotonic() >= deadline:
            return found
        extra = len(records) - len(found)  # repeats of some leads' outcomes: read past them


async def routing_event(
    bootstrap: str, lead_id: str, event_type: str, timeout_s: float = EVENT_TIMEOUT_S
) -> CloudEvent[Any] | None:
    """The first event of `event_type` about `lead_id` on the routing topic, if any in time."""
    records = await read_topic(
        bootstrap,
        LEAD_ROUTING.name,
        until=1,
        timeout_s=timeout_s,
        where=lambda r: r.key == lead_id.encode() and decode(r.value).type == event_type,
    )
    return decode(records[0].value) if records else None


async def wait_for(check: Any, timeout_s: float = EVENT_TIMEOUT_S) -> Any:
    """Poll `check` until it returns something truthy or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


def drain_key(item: dict[str, Any]) -> tuple[str, float, datetime]:
    """Backlog order: best grade, then highest score, then oldest."""
    return (item["grade"], -item["score"], datetime.fromisoformat(item["queued_at"]))


async def reps_everywhere(http: httpx.AsyncClient, system: ScaleOut) -> list[dict[str, Any]]:
    """GET /v1/reps on every router instance: they share one database, so they agree."""
    answers = await asyncio.gather(*(http.get(f"{r.base_url}/v1/reps") for r in system.routers))
    views = [sorted(a.json(), key=lambda rep: rep["id"]) for a in answers]
    assert all(a.status_code == 200 for a in answers)
    assert all(v == views[0] for v in views), "router instances disagree about the reps"
    return views[0]


def assert_capacity_full(reps: list[dict[str, Any]], system: ScaleOut) -> None:
    """Every rep holds exactly their capacity, none more."""
    assert {r["id"]: r["capacity"] for r in reps} == system.capacity
    for rep in reps:
        assert rep["working"] <= rep["capacity"], f"over capacity: {rep}"
        assert rep["working"] == rep["capacity"], f"a slot stayed free: {rep}"
    assert sum(r["working"] for r in reps) == TOTAL_CAPACITY


async def assert_database_invariants(engine: AsyncEngine) -> dict[str, int]:
    """No lead has two active owners; each rep's `working` is their count of active
    assignments. Returns the number of active and released assignments."""
    async with engine.connect() as conn:
        doubled = (
            await conn.execute(
                sa.text(
                    "SELECT lead_id, count(*) FROM router.assignments WHERE active "
                    "GROUP BY lead_id HAVING count(*) > 1"
                )
            )
        ).all()
        loads = (
            await conn.execute(
                sa.text(
                    "SELECT r.id, r.working, r.capacity, count(a.id) AS active "
                    "FROM router.reps r LEFT JOIN router.assignments a "
                    "ON a.rep_id = r.id AND a.active GROUP BY r.id, r.working, r.capacity"
                )
            )
        ).all()
        by_state = await conn.execute(
            sa.text(
                "SELECT CASE WHEN active THEN 'active' ELSE 'released' END, count(*) "
                "FROM router.assignments GROUP BY 1"
            )
        )
        counts: dict[str, int] = {state: n for state, n in by_state.all()}
    assert doubled == [], f"leads with more than one active owner: {doubled}"
    for rep_id, working, capacity, active in loads:
        assert working == active, f"rep {rep_id}: working {working} but {active} active rows"
        assert working <= capacity, f"rep {rep_id}: working {working} above capacity {capacity}"
    return {"active": counts.get("active", 0), "released": counts.get("released", 0)}


def consumed_per_router(metrics: str) -> int:
    """Scored leads a router instance processed, from its Prometheus counters."""
    pattern = re.compile(
        r"^handoff_events_consumed_total\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.e+]+)$", re.M
    )
    total = 0.0
    for match in pattern.finditer(metrics):
        labels = match["labels"]
        if f'topic="{LEAD_SCORED.name}"' in labels and 'outcome="processed"' in labels:
            total += float(match["value"])
    return int(total)


@pytest.fixture(scope="module")
async def burst(scale_out: ScaleOut, http: httpx.AsyncClient) -> Burst:
    """200 grade-A leads at once: 100 single webhooks and ten batches of 10, concurrently."""
    bodies = [ideal_lead(i) for i in range(LEADS)]
    icp, now = load_demo_icp(), datetime.now(UTC)
    assert {score_lead(LeadProfile.model_validate(b), icp, now=now).grade for b in bodies} == {
        "A"
    }, "the burst must be all grade A under the demo ICP"
    singles = bodies[:100]
    batches = [bodies[i : i + 10] for i in range(100, LEADS, 10)]

    async def post_one(body: dict[str, Any]) -> list[str]:
        answer = await http.post(f"{scale_out.scorer}/v1/leads", json=body)
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "accepted"
        return [str(answer.json()["lead_id"])]

    async def post_batch(leads: list[dict[str, Any]]) -> list[str]:
        answer = await http.post(f"{scale_out.scorer}/v1/leads:batch", json={"leads": leads})
        assert answer.status_code == 202, answer.text
        assert answer.json()["accepted"] == len(leads), answer.text
        return [str(r["lead_id"]) for r in answer.json()["results"]]

    posted = await asyncio.gather(
        *(post_one(b) for b in singles), *(post_batch(b) for b in batches)
    )
    lead_ids = [lead_id for ids in posted for lead_id in ids]
    assert len(set(lead_ids)) == LEADS

    found = await routing_outcomes(scale_out.bootstrap, lead_ids)
    missing = set(lead_ids) - set(found)
    assert not missing, f"{len(missing)} leads got no routing outcome: {sorted(missing)[:5]}"
    repeated = {lead: [e.type for e in events] for lead, events in found.items() if len(events) > 1}
    assert not repeated, f"leads routed more than once: {repeated}"
    return Burst(lead_ids=lead_ids, outcomes={lead: events[0] for lead, events in found.items()})


async def test_a_burst_over_three_routers_fills_capacity_exactly_and_queues_the_rest(
    scale_out: ScaleOut, burst: Burst, http: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    assigned, queued = burst.of_type(ASSIGNED), burst.of_type(QUEUED)
    assert (len(assigned), len(queued)) == (TOTAL_CAPACITY, LEADS - TOTAL_CAPACITY)
    assert {e.data.decision.grade for e in burst.outcomes.values()} == {"A"}

    # Each rep got exactly their capacity, and every decision saw all the earlier ones:
    # the five assignments were decided with 0, 1, 2, 3 and 4 slots taken.
    assert Counter(e.data.rep_id for e in assigned) == Counter(scale_out.capacity)
    assert all(e.data.team_id == scale_out.team_id for e in burst.outcomes.values())
    assert all(e.data.decision.rule != "backlog_drain" for e in assigned)
    for event in assigned:
        chosen = [c for c in event.data.decision.candidates if c.chosen]
        assert len(chosen) == 1
        assert chosen[0].rep_id == event.data.rep_id
        assert chosen[0].working < chosen[0].capacity
    taken = sorted(sum(c.working for c in e.data.decision.candidates) for e in assigned)
    assert taken == list(range(TOTAL_CAPACITY)), "a decision missed an earlier assignment"
    for event in queued:
        assert all(c.working >= c.capacity for c in event.data.decision.candidates), event
        assert sum(c.working for c in event.data.decision.candidates) == TOTAL_CAPACITY

    assert_capacity_full(await reps_everywhere(http, scale_out), scale_out)

    backlog = (await http.get(f"{scale_out.routers[1].base_url}/v1/backlog")).json()
    assert len(backlog) == LEADS - TOTAL_CAPACITY
    assert {b["lead_id"] for b in backlog} == {e.data.lead_id for e in queued}
    assert all(b["team_id"] == scale_out.team_id for b in backlog)
    assert backlog == sorted(backlog, key=drain_key)
    # The same order follows from what the queued events said, independently of the router.
    expected = sorted(
        queued, key=lambda e: (e.data.decision.grade, -e.data.decision.score, e.data.queued_at)
    )
    assert [b["lead_id"] for b in backlog] == [e.data.lead_id for e in expected]
    assert len({b["score"] for b in backlog}) > 1, "scores should differ across the burst"

    assert await assert_database_invariants(engine) == {"active": TOTAL_CAPACITY, "released": 0}

    metrics = await asyncio.gather(*(http.get(f"{r.base_url}/metrics") for r in scale_out.routers))
    processed = {
        r.name: consumed_per_router(m.text) for r, m in zip(scale_out.routers, metrics, strict=True)
    }
    partitions = {r.name: joined_partitions(r) for r in scale_out.routers}
    print(f"scored leads routed per instance: {processed}; partitions per instance: {partitions}")
    assert sum(processed.values()) == LEADS


async def test_each_release_gives_its_slot_to_exactly_the_head_of_the_backlog(
    scale_out: ScaleOut, burst: Burst, http: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    routers = scale_out.routers
    released = sorted(burst.of_type(ASSIGNED), key=lambda e: e.data.assigned_at)
    for step, event in enumerate(released, start=1):
        lead_id, rep_id = event.data.lead_id, event.data.rep_id

        async def owned_in_feedback(lead: str = lead_id) -> bool:
            answer = await http.get(f"{scale_out.feedback}/v1/leads/{lead}/history")
            return answer.status_code == 200 and answer.json()["status"] == "assigned"

        assert await wait_for(owned_in_feedback), f"feedback never saw {lead_id} assigned"

        before = (await http.get(f"{routers[step % ROUTERS].base_url}/v1/backlog")).json()
        head = before[0]["lead_id"]
        answer = await http.post(
            f"{scale_out.feedback}/v1/leads/{lead_id}/status",
            json={"status": "disqualified", "reason": "no_budget", "actor": "crm"},
        )
        assert answer.status_code == 200, answer.text

        drained = await routing_event(scale_out.bootstrap, head, ASSIGNED)
        assert drained is not None, f"step {step}: the head {head} was not assigned in time"
        assert drained.data.decision.rule == "backlog_drain"
        assert drained.data.rep_id == rep_id, "the freed slot went to another rep"

        # Exactly one lead left the backlog, the head, and every rep is full again.
        after = (await http.get(f"{routers[(step + 1) % ROUTERS].base_url}/v1/backlog")).json()
        assert [b["lead_id"] for b in after] == [b["lead_id"] for b in before[1:]], (
            f"step {step}: the backlog did not lose exactly its head"
        )
        assert_capacity_full(await reps_everywhere(http, scale_out), scale_out)
        assert await assert_database_invariants(engine) == {
            "active": TOTAL_CAPACITY,
            "released": step,
        }

    routing = await read_topic(
        scale_out.bootstrap,
        LEAD_ROUTING.name,
        timeout_s=2,
        where=lambda r: decode(r.value).type == ASSIGNED,
    )
    drains = Counter(decode(r.value).data.decision.rule == "backlog_drain" for r in routing)
    assert drains == {False: TOTAL_CAPACITY, True: TOTAL_CAPACITY}
    per_lead = Counter(r.key for r in routing)
    assert max(per_lead.values()) == 1, "a lead was assigned twice"
