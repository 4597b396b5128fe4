"""Re-qualification of nurtured leads, on the real stack (scorer and router processes, a real
PostgreSQL and broker). Sales disqualifies two leads to nurture, as the feedback service
announces it on `lead.status`: one whose re-qualify date has passed, one whose date is still
ahead. When both people engage again, the first goes back to sales as its second cycle, its
first cycle kept as history; the second stays in nurture with the engagement recorded."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from support.infra import embedded_infra
from support.kafka import produce, read_topic
from support.processes import running_instances
from support.system import admin_headers

from handoff_schemas import (
    LEAD_ROUTING,
    LEAD_SCORED,
    LEAD_STATUS,
    CloudEvent,
    LeadNurtureRequestedV1,
    LeadStatus,
    LeadStatusChangedV1,
    NurtureReason,
    decode,
    encode,
    new_event,
)
from handoff_scorer.scoring import load_demo_icp

pytestmark = pytest.mark.integration

ASSIGNED = "handoff.lead.assigned.v1"


@dataclass
class Stack:
    bootstrap: str
    scorer: str
    router: str


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with embedded_infra("handoff-requalify-") as infra:
        workdir = infra.workdir
        env = {
            **os.environ,
            "DATABASE_URL": infra.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
            "HANDOFF_SCORER_WEBHOOK_SOURCES": json.dumps({"local": {"signed": False}}),
        }
        with (
            running_instances(
                "handoff_scorer", 1, env=env, port_env="HANDOFF_SCORER_PORT", workdir=workdir
            ) as (scorer,),
            running_instances(
                "handoff_router", 1, env=env, port_env="HANDOFF_ROUTER_PORT", workdir=workdir
            ) as (router,),
        ):
            yield Stack(infra.bootstrap, scorer.base_url, router.base_url)


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 20
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.1)


async def published(
    stack: Stack, topic: str, lead_id: str, *, until: int, timeout_s: float = 20
) -> list[CloudEvent[Any]]:
    """The lead's events on `topic` (assignments only, on the routing topic)."""
    records = await read_topic(
        stack.bootstrap,
        topic,
        until=until,
        timeout_s=timeout_s,
        where=lambda r: (
            r.key == lead_id.encode()
            and (topic != LEAD_ROUTING.name or decode(r.value).type == ASSIGNED)
        ),
    )
    return [decode(r.value) for r in records]


def person(email: str, activity: str, at: datetime) -> dict[str, Any]:
    """A lead the demo ICP grades A, with one engagement."""
    return {
        "email": email,
        "company": "Nordwerk Software",
        "title": "VP Engineering",
        "industry": "Software",
        "employees": 250,
        "country": "DE",
        "activities": [{"type": activity, "occurred_at": at.isoformat()}],
    }


def disqualified_to_nurture(
    assigned: CloudEvent[Any], requalify_on: date
) -> list[tuple[bytes, bytes]]:
    """What the feedback service publishes when sales disqualifies a lead for no budget: the
    status change, then the nurture request with its re-qualify date."""
    lead_id = assigned.data.lead_id
    now = datetime.now(UTC)
    change = LeadStatusChangedV1(
        lead_id=lead_id,
        from_status=LeadStatus.ASSIGNED,
        to_status=LeadStatus.DISQUALIFIED,
        rep_id=assigned.data.rep_id,
        reason="no_budget",
        actor="crm",
        occurred_at=now,
        working=False,
        team_id=assigned.data.team_id,
        cycle=1,
    )
    nurture = LeadNurtureRequestedV1(
        lead_id=lead_id,
        reason=NurtureReason.NO_BUDGET,
        requalify_on=requalify_on,
        requested_at=now,
        requested_by="feedback",
    )
    return [
        (lead_id.encode(), encode(new_event(data, source="/handoff/feedback", subject=lead_id)))
        for data in (change, nurture)
    ]


async def test_a_nurtured_lead_engaging_after_its_date_is_routed_again_and_before_it_is_not(
    stack: Stack,
) -> None:
    headers = {"webhook-source": "local", **admin_headers()}
    async with httpx.AsyncClient(timeout=20, headers=headers) as http:
        icp = await http.post(
            f"{stack.scorer}/v1/icp", json=load_demo_icp().model_dump(mode="json")
        )
        assert icp.status_code == 201, icp.text
        team = (await http.post(f"{stack.router}/v1/teams", json={"name": "Inbound"})).json()
        rep = await http.post(
            f"{stack.router}/v1/reps",
            json={"team_id": team["id"], "name": "Maria", "email": "maria@x.io", "capacity": 5},
        )
        assert rep.status_code == 201, rep.text

        suffix = uuid.uuid4().hex[:8]
        due_email, waiting_email = f"due.{suffix}@nordwerk.de", f"waiting.{suffix}@nordwerk.de"
        first_touch = datetime.now(UTC) - timedelta(days=60)
        lead_ids = []
        for email in (due_email, waiting_email):
            answer = await http.post(
                f"{stack.scorer}/v1/leads", json=person(email, "demo_requested", first_touch)
            )
            assert answer.status_code == 202, answer.text
            lead_ids.append(answer.json()["lead_id"])
        due, waiting = lead_ids
        firsts = []
        for lead_id in lead_ids:
            (assigned,) = await published(stack, LEAD_ROUTING.name, lead_id, until=1)
            assert assigned.data.cycle == 1
            firsts.append(assigned)

        # Sales disqualifies both for lack of budget: one may come back from yesterday on,
        # the other only next month.
        today = datetime.now(UTC).date()
        await produce(
            stack.bootstrap,
            LEAD_STATUS.name,
            disqualified_to_nurture(firsts[0], today - timedelta(days=1))
            + disqualified_to_nurture(firsts[1], today + timedelta(days=30)),
        )

        async def released() -> bool:
            reps = (await http.get(f"{stack.router}/v1/reps")).json()
            return [r["working"] for r in reps] == [0]

        await eventually(released, "the router frees both slots")

        async def nurtured() -> bool:
            leads = [(await http.get(f"{stack.scorer}/v1/leads/{i}")).json() for i in lead_ids]
            return all(
                lead["outcome"] == "disqualified" and lead["requalify_on"] is not None
                for lead in leads
            )

        await eventually(nurtured, "the scorer knows both are nurtured, and until when")

        # Both people engage again.
        for email in (due_email, waiting_email):
            again = await http.post(
                f"{stack.scorer}/v1/leads",
                json=person(email, "pricing_page_viewed", datetime.now(UTC)),
            )
            assert again.status_code == 202, again.text
            assert again.json()["status"] == "updated"

        # The one whose date has passed goes back to sales as its second cycle.
        assignments = await published(stack, LEAD_ROUTING.name, due, until=2)
        assert [a.data.cycle for a in assignments] == [1, 2]
        scored = await published(stack, LEAD_SCORED.name, due, until=2)
        assert [s.data.cycle for s in scored] == [1, 2]
        lead = (await http.get(f"{stack.scorer}/v1/leads/{due}")).json()
        assert (lead["cycle"], lead["outcome"], lead["requalify_on"]) == (2, None, None)
        routing = (await http.get(f"{stack.router}/v1/leads/{due}/routing")).json()
        assert (routing["state"], routing["cycle"]) == ("assigned", 2)
        assert [(d["outcome"], d["cycle"]) for d in routing["decisions"]] == [
            ("assigned", 1),
            ("assigned", 2),
        ]

        # The other stays in nurture: its engagement is recorded, sales hears nothing.
        async def recorded() -> bool:
            lead = (await http.get(f"{stack.scorer}/v1/leads/{waiting}")).json()
            return len(lead["score_history"]) == 2

        await eventually(recorded, "the scorer records the new engagement")
        lead = (await http.get(f"{stack.scorer}/v1/leads/{waiting}")).json()
        assert (lead["cycle"], lead["outcome"]) == (1, "disqualified")
        assert lead["requalify_on"] == (today + timedelta(days=30)).isoformat()
        assert [a["type"] for a in lead["profile"]["activities"]] == [
            "demo_requested",
            "pricing_page_viewed",
        ]
        # Scored without being announced: no second lead.scored, no second routing.
        assert len(await published(stack, LEAD_SCORED.name, waiting, until=2, timeout_s=2)) == 1
        assert len(await published(stack, LEAD_ROUTING.name, waiting, until=2, timeout_s=1)) == 1
        routing = (await http.get(f"{stack.router}/v1/leads/{waiting}/routing")).json()
        assert (routing["state"], routing["cycle"], len(routing["decisions"])) == ("released", 1, 1)
        reps = (await http.get(f"{stack.router}/v1/reps")).json()
        assert [r["working"] for r in reps] == [1]
