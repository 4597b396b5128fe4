"""The lead lifecycle on the real stack: feedback as a process on its own PostgreSQL and
broker, fed routing events on Kafka and status reports over signed HTTP.

- Status intake is signed (Standard Webhooks) and idempotent per delivery; bad reports are
  4xx problem+json naming the field.
- A report that comes before feedback saw the assignment waits, and is applied once the
  assignment arrives.
- Late and duplicate reports never move a lead backwards: any order of the reports of a real
  sequence, with repeats, and wherever the assignment falls among them, ends in the state
  the sequence ends in (Hypothesis, on the database itself).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook
from support.events import scored_lead
from support.infra import embedded_infra
from support.kafka import produce, read_topic
from support.processes import running_instances
from support.waiting import wait_for

from handoff_feedback import service
from handoff_feedback.consumers import feedback_consumer
from handoff_feedback.lifecycle import TRANSITIONS, Policy, Reason, Report
from handoff_feedback.repository import FeedbackRepository
from handoff_feedback.service import Sighting
from handoff_runtime.db import Database
from handoff_runtime.statements import statements_sent
from handoff_schemas import (
    LEAD_CREATED,
    LEAD_ROUTING,
    LEAD_STATUS,
    CloudEvent,
    FitGrade,
    LeadAssignedV1,
    LeadCreatedV1,
    LeadNurtureRequestedV1,
    LeadProfile,
    LeadQueuedV1,
    LeadStatus,
    NurtureReason,
    RoutingDecision,
    decode,
    encode,
    new_event,
)

pytestmark = pytest.mark.integration

S = LeadStatus
CRM_SECRET = "whsec_" + "Y3JtLXNlY3JldC1jcm0tc2VjcmV0LWNybS1zZWNyZXQ="


@dataclass
class Feedback:
    url: str
    database_url: str
    bootstrap: str


@pytest.fixture(scope="module")
def feedback() -> Iterator[Feedback]:
    with embedded_infra("handoff-feedback-") as infra:
        workdir = infra.workdir
        database_url = infra.database_url
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
            "HANDOFF_FEEDBACK_WEBHOOK_SOURCES": json.dumps(
                {"local": {"signed": False}, "crm": {"secrets": [CRM_SECRET]}}
            ),
        }
        with running_instances(
            "handoff_feedback", 1, env=env, port_env="HANDOFF_FEEDBACK_PORT", workdir=workdir
        ) as (instance,):
            yield Feedback(instance.base_url, database_url, infra.bootstrap)


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=20, headers={"webhook-source": "local"}) as client:
        yield client


def new_lead_id() -> str:
    return f"lead_{uuid.uuid4().hex}"


def assigned(lead_id: str, *, rep_id: str = "rep_1", cycle: int = 1) -> LeadAssignedV1:
    return LeadAssignedV1(
        lead_id=lead_id,
        rep_id=rep_id,
        rep_name="Maria Keller",
        team_id="team_1",
        assigned_at=datetime.now(UTC),
        decision=RoutingDecision(
            rule="fallback_team", team_id="team_1", icp_version=1, score=80, grade=FitGrade.A
        ),
        cycle=cycle,
    )


async def publish(bootstrap: str, topic: str, data: Any, source: str) -> None:
    event = new_event(data, source=source, subject=data.lead_id)
    await produce(bootstrap, topic, [(data.lead_id.encode(), encode(event))])


async def created_on_kafka(feedback: Feedback, lead_id: str) -> None:
    created = LeadCreatedV1(
        lead_id=lead_id,
        received_at=datetime.now(UTC),
        lead=LeadProfile(email=f"{lead_id}@example.com", campaign="spring"),
    )
    await publish(feedback.bootstrap, LEAD_CREATED.name, created, "/handoff/scorer")


async def history(http: httpx.AsyncClient, feedback: Feedback, lead_id: str) -> dict[str, Any]:
    answer = await http.get(f"{feedback.url}/v1/leads/{lead_id}/history")
    return answer.json() if answer.status_code == 200 else {}


async def assigned_in_feedback(http: httpx.AsyncClient, feedback: Feedback, lead_id: str) -> None:
    await publish(feedback.bootstrap, LEAD_ROUTING.name, assigned(lead_id), "/handoff/router")

    async def owned() -> bool:
        return (await history(http, feedback, lead_id)).get("status") == "assigned"

    assert await wait_for(owned), f"feedback never saw {lead_id} assigned"


def status_url(feedback: Feedback, lead_id: str) -> str:
    return f"{feedback.url}/v1/leads/{lead_id}/status"


# --- a report before the assignment -----------------------------------------------------


async def test_a_report_before_the_assignment_waits_for_it_and_is_applied_then(
    feedback: Feedback, http: httpx.AsyncClient
) -> None:
    lead_id = new_lead_id()
    unknown = await http.post(status_url(feedback, lead_id), json={"status": "contacted"})
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"

    await created_on_kafka(feedback, lead_id)

    async def known() -> bool:
        return (await history(http, feedback, lead_id)).get("status") == "new"

    assert await wait_for(known)
    now = datetime.now(UTC)
    # The rep was quick: contacted and (reported second, but earlier) accepted, before
    # feedback heard of the assignment.
    for status, at in (("contacted", now), ("accepted", now - timedelta(seconds=30))):
        early = await http.post(
            status_url(feedback, lead_id),
            json={"status": status, "occurred_at": at.isoformat(), "actor": "rep_1"},
        )
        assert early.status_code == 202, early.text
        assert early.json()["disposition"] == "pending"
    waiting = await history(http, feedback, lead_id)
    assert [p["change"]["status"] for p in waiting["pending"]] == ["accepted", "contacted"]

    await publish(feedback.bootstrap, LEAD_ROUTING.name, assigned(lead_id), "/handoff/router")

    async def applied() -> bool:
        return (await history(http, feedback, lead_id)).get("status") == "contacted"

    assert await wait_for(applied)
    story = await history(http, feedback, lead_id)
    assert story["pending"] == []
    # (the history is in the order things happened: the rep's steps came before feedback
    # heard of the assignment)
    steps = sorted((h["to_status"], h["disposition"]) for h in story["history"])
    assert steps == [
        ("accepted", "applied"),
        ("assigned", "applied"),
        ("contacted", "applied"),
        ("created", "applied"),
    ]
    records = await read_topic(
        feedback.bootstrap, LEAD_STATUS.name, until=2, where=lambda r: r.key == lead_id.encode()
    )
    changes = [decode(r.value).data for r in records]
    assert [(c.from_status, c.to_status) for c in changes] == [
        (S.ASSIGNED, S.ACCEPTED),
        (S.ACCEPTED, S.CONTACTED),
    ]
    assert all((c.rep_id, c.team_id, c.cycle) == ("rep_1", "team_1", 1) for c in changes)
    assert [c.working for c in changes] == [True, True]


async def test_a_report_naming_the_next_owner_waits_for_the_reassignment(
    feedback: Feedback, http: httpx.AsyncClient
) -> None:
    """The CRM saw the lead reassigned to rep_2 before feedback did: rep_2's first touch,
    naming rep_2, waits for that assignment instead of being applied to rep_1's (where the
    router would not count it as rep_2's first touch). A late report from rep_1, who no
    longer owns the lead, is kept in the history and moves nothing."""
    lead_id = new_lead_id()
    await created_on_kafka(feedback, lead_id)
    await assigned_in_feedback(http, feedback, lead_id)  # to rep_1

    touched = await http.post(
        status_url(feedback, lead_id), json={"status": "contacted", "rep_id": "rep_2"}
    )
    assert touched.status_code == 202, touched.text
    assert touched.json()["disposition"] == "pending"
    assert (touched.json()["status"], touched.json()["rep_id"]) == ("assigned", "rep_1")
    waiting = await history(http, feedback, lead_id)
    assert [p["change"]["rep_id"] for p in waiting["pending"]] == ["rep_2"]

    await publish(
        feedback.bootstrap, LEAD_ROUTING.name, assigned(lead_id, rep_id="rep_2"), "/handoff/router"
    )

    async def applied() -> bool:
        return (await history(http, feedback, lead_id)).get("status") == "contacted"

    assert await wait_for(applied)
    story = await history(http, feedback, lead_id)
    assert (story["rep_id"], story["pending"]) == ("rep_2", [])
    records = await read_topic(
        feedback.bootstrap, LEAD_STATUS.name, until=1, where=lambda r: r.key == lead_id.encode()
    )
    change = decode(records[0].value).data
    assert (change.to_status, change.rep_id) == (S.CONTACTED, "rep_2")

    stale = await http.post(
        status_url(feedback, lead_id), json={"status": "qualified", "rep_id": "rep_1"}
    )
    assert stale.status_code == 200, stale.text
    assert (stale.json()["disposition"], stale.json()["status"]) == ("late", "contacted")
    current = await http.post(
        status_url(feedback, lead_id), json={"status": "qualified", "rep_id": "rep_2"}
    )
    assert (current.json()["disposition"], current.json()["status"]) == ("applied", "qualified")
    steps = [
        (h["to_status"], h["disposition"])
        for h in (await history(http, feedback, lead_id))["history"]
    ]
    assert steps.count(("qualified", "late")) == 1
    assert ("contacted", "applied") in steps


# --- signed, idempotent intake and what it refuses --------------------------------------


def signed(body: dict[str, Any], *, delivery_id: str | None = None) -> dict[str, Any]:
    content = json.dumps(body)
    delivery_id = delivery_id or f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "webhook-source": "crm",
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(CRM_SECRET).sign(delivery_id, now, content),
    }
    return {"content": content, "headers": headers}


async def test_status_reports_are_signed_and_idempotent_per_delivery(
    feedback: Feedback, http: httpx.AsyncClient
) -> None:
    lead_id = new_lead_id()
    await created_on_kafka(feedback, lead_id)
    await assigned_in_feedback(http, feedback, lead_id)
    url = status_url(feedback, lead_id)
    async with httpx.AsyncClient(timeout=20) as bare:
        missing = await bare.post(url, json={"status": "accepted"})
        assert missing.status_code == 401
        forged = signed({"status": "accepted"})
        forged["headers"]["webhook-signature"] = (
            "v1,AAAA" + forged["headers"]["webhook-signature"][7:]
        )
        assert (await bare.post(url, **forged)).status_code == 401

        delivery = signed({"status": "accepted", "actor": "rep_1"})
        first = await bare.post(url, **delivery)
        assert first.status_code == 200, first.text
        assert first.json()["disposition"] == "applied"
        again = await bare.post(url, **delivery)
        assert again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        same_id = signed({"status": "contacted"}, delivery_id=delivery["headers"]["webhook-id"])
        assert (await bare.post(url, **same_id)).status_code == 409

    story = await history(http, feedback, lead_id)
    assert [h["to_status"] for h in story["history"]] == ["created", "assigned", "accepted"]
    assert story["history"][-1]["actor"] == "rep_1"


async def test_bad_reports_are_refused_naming_the_field_and_moves_backwards_list_the_allowed(
    feedback: Feedback, http: httpx.AsyncClient
) -> None:
    lead_id = new_lead_id()
    await created_on_kafka(feedback, lead_id)
    await assigned_in_feedback(http, feedback, lead_id)
    url = status_url(feedback, lead_id)
    future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    for body, field in (
        ({"status": "disqualified"}, "body.reason"),
        ({"status": "recycled", "reason": "other"}, "body.note"),
        ({"status": "accepted", "amount": 10}, "body.amount"),
        ({"status": "accepted", "occurred_at": future}, "body.occurred_at"),
        ({"status": "promoted"}, "body.status"),
        ({"status": "won", "amount": -5}, "body.amount"),
        ({"status": "accepted", "occurred_at": "2025-01-01T10:00:00"}, "body.occurred_at"),
        ({"status": "accepted", "occurred_at": "0001-01-01T00:00:00+14:00"}, "body.occurred_at"),
    ):
        answer = await http.post(url, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in answer.json()["errors"]], (body, answer.json())

    now = datetime.now(UTC)
    qualified = await http.post(url, json={"status": "qualified", "occurred_at": now.isoformat()})
    assert qualified.json()["disposition"] == "applied"  # contacted was skipped: allowed
    backwards = await http.post(
        url, json={"status": "contacted", "occurred_at": (now + timedelta(seconds=1)).isoformat()}
    )
    assert backwards.status_code == 409
    problem = backwards.json()
    assert sorted(problem["allowed"]) == ["converted", "lost", "won"]
    assert problem["current_status"] == "qualified"
    late = await http.post(
        url, json={"status": "contacted", "occurred_at": (now - timedelta(hours=1)).isoformat()}
    )
    assert late.status_code == 200
    assert (late.json()["disposition"], late.json()["status"]) == ("late", "qualified")
    repeat = await http.post(url, json={"status": "qualified"})
    assert (repeat.json()["disposition"], repeat.json()["status"]) == ("duplicate", "qualified")
    won = await http.post(url, json={"status": "won", "amount": 48000.5, "actor": "rep_1"})
    assert won.json()["status"] == "won"

    story = await history(http, feedback, lead_id)
    # in the order things happened: the late report is the oldest
    assert [(h["to_status"], h["disposition"]) for h in story["history"]] == [
        ("contacted", "late"),
        ("created", "applied"),
        ("assigned", "applied"),
        ("qualified", "applied"),
        ("qualified", "duplicate"),
        ("won", "applied"),
    ]
    assert story["history"][-1]["amount"] == "48000.50"


# --- any order, any repeats: the same end ------------------------------------------------


@st.composite
def real_sequences(draw: st.DrawFn) -> list[Report]:
    """What really happened to one lead after its assignment: a walk along the funnel's
    steps at non-decreasing whole-second times."""
    current, at, steps = S.ASSIGNED, datetime.now(UTC).replace(microsecond=0), []
    while TRANSITIONS[current] and bool(draw(st.booleans())):
        current = draw(st.sampled_from(sorted(TRANSITIONS[current])))
        at -= timedelta(seconds=draw(st.integers(min_value=0, max_value=3)))
        reason = Reason.NO_BUDGET if current in {S.DISQUALIFIED, S.RECYCLED, S.LOST} else None
        amount = 1000.0 if current is S.WON else None
        steps.append(Report(current, at, reason=reason, amount=amount))
    # times were drawn going back from now (never in the future): put them in order
    return [
        Report(s.status, t, reason=s.reason, amount=s.amount)
        for s, t in zip(steps, sorted(s.occurred_at for s in steps), strict=True)
    ]


ASSIGNMENT = "assignment"


async def _deliver(db: Database, lead_id: str, arrivals: list[Report | str]) -> None:
    async with db.unit_of_work() as uow:
        await service.leads_seen(uow, [Sighting(lead_id, 1, datetime.now(UTC), engaged=True)])
    for arrival in arrivals:
        async with db.unit_of_work() as uow:
            if arrival == ASSIGNMENT:
                await service.leads_routed(uow, [assigned(lead_id)], Policy())
            else:
                assert isinstance(arrival, Report)
                await service.report_status(
                    uow, lead_id, arrival, actor="crm", delivery_id=None, policy=Policy()
                )


async def _end_state(db: Database, lead_id: str) -> tuple[Any, ...]:
    """The lead's row, the statuses announced for it, and how many nurture requests."""
    async with db.engine.connect() as conn:
        lead = (
            await conn.execute(
                sa.text("SELECT status, status_at FROM feedback.leads WHERE lead_id = :id"),
                {"id": lead_id},
            )
        ).one()
        values = (
            await conn.execute(
                sa.text("SELECT value FROM feedback.outbox WHERE key = :id ORDER BY id"),
                {"id": lead_id},
            )
        ).scalars()
        events = [json.loads(v) for v in values]
    announced = [
        e["data"]["to_status"] for e in events if e["type"] == "handoff.lead.status_changed.v1"
    ]
    nurtures = sum(e["type"] == "handoff.lead.nurture_requested.v1" for e in events)
    return lead.status, lead.status_at, announced, nurtures


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), sequence=real_sequences())
def test_any_order_with_repeats_and_the_assignment_anywhere_ends_as_the_sequence_does(
    feedback: Feedback, data: st.DataObject, sequence: list[Report]
) -> None:
    repeats = data.draw(st.lists(st.sampled_from(sequence), max_size=3)) if sequence else []
    arrivals: list[Report | str] = data.draw(st.permutations([*sequence, *repeats, ASSIGNMENT]))
    in_order, shuffled = new_lead_id(), new_lead_id()

    async def both() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        # the service's own units of work on the real database (the running feedback
        # process relays what they stage; the test reads the outbox itself)
        db = Database(feedback.database_url, schema="feedback", source="/handoff/feedback")
        try:
            await _deliver(db, in_order, [ASSIGNMENT, *sequence])
            await _deliver(db, shuffled, arrivals)
            return await _end_state(db, in_order), await _end_state(db, shuffled)
        finally:
            await db.dispose()

    loop = asyncio.new_event_loop()
    try:
        expected, got = loop.run_until_complete(both())
    finally:
        loop.close()

    last = sequence[-1] if sequence else None
    assert expected[:2] == ((last.status.value, last.occurred_at) if last else ("assigned", None))
    assert got[:2] == expected[:2]
    # every status announced moved the lead forward; the last one announced is the end
    assert set(got[2]) <= {s.status.value for s in sequence}
    assert (got[2][-1] if got[2] else None) == (last.status.value if last else None)
    nurtured = last is not None and last.status in {S.DISQUALIFIED, S.RECYCLED}
    assert got[3] == expected[3] == int(nurtured)


# --- a consumed batch is applied as its events one at a time -----------------------------


def lifecycle_events(a: str, b: str, c: str, d: str, e: str) -> list[CloudEvent[Any]]:
    """Lead a comes in twice, is scored and assigned, then reassigned; lead b (seen before,
    with a report waiting for its assignment) is scored for a second cycle and assigned;
    lead c waits in a backlog, then is assigned; lead d goes to nurture; lead e is assigned
    and then reported queued (too late to override the assignment); a nurture request
    feedback itself made for d comes back and is not followed. The routing outcomes
    interleave, as they do on their topic."""

    def created(lead_id: str) -> LeadCreatedV1:
        profile = LeadProfile(email=f"{lead_id}@example.com", campaign="spring")
        return LeadCreatedV1(lead_id=lead_id, received_at=datetime.now(UTC), lead=profile)

    def queued(lead_id: str) -> LeadQueuedV1:
        decision = assigned(lead_id).decision
        return LeadQueuedV1(
            lead_id=lead_id, team_id="team_1", queued_at=datetime.now(UTC), decision=decision
        )

    def nurtured(lead_id: str, by: Literal["router", "feedback"]) -> LeadNurtureRequestedV1:
        return LeadNurtureRequestedV1(
            lead_id=lead_id,
            reason=NurtureReason.LOW_FIT,
            note="fit grade D",
            requested_at=datetime.now(UTC),
            requested_by=by,
        )

    story: list[Any] = [
        created(a),
        created(a),
        created(c),
        scored_lead(a, email=f"{a}@example.com", cycle=1),
        scored_lead(b, email=f"{b}@example.com", cycle=2),
        queued(c),
        assigned(a),
        nurtured(d, "router"),
        assigned(b, cycle=2),
        assigned(e),
        nurtured(d, "feedback"),
        queued(e),
        assigned(c),
        assigned(a, rep_id="rep_2"),
    ]
    return [new_event(data, source="/handoff/tests", subject=data.lead_id) for data in story]


async def _lifecycle_state(db: Database, roles: dict[str, str]) -> dict[str, Any]:
    """Each lead's row, history and announcements, under its role's name."""
    state: dict[str, Any] = {}
    async with db.engine.connect() as conn:
        for lead_id, role in roles.items():
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT status, cycle, rep_id, team_id, status_at IS NULL AS open "
                        "FROM feedback.leads WHERE lead_id = :id"
                    ),
                    {"id": lead_id},
                )
            ).one()
            steps = (
                await conn.execute(
                    sa.text(
                        "SELECT from_status, to_status, actor, disposition, cycle, rep_id "
                        "FROM feedback.history WHERE lead_id = :id ORDER BY id"
                    ),
                    {"id": lead_id},
                )
            ).all()
            announced = (
                await conn.execute(
                    sa.text("SELECT topic FROM feedback.outbox WHERE key = :id ORDER BY id"),
                    {"id": lead_id},
                )
            ).scalars()
            state[role] = (tuple(row), [tuple(step) for step in steps], list(announced))
    return state


async def test_a_consumed_batch_ends_where_its_events_one_at_a_time_end(
    feedback: Feedback,
) -> None:
    """Feedback's set-based handler, given the whole batch (as the consumer loop hands it
    over: one handler takes every type), leaves the leads, their histories and
    announcements as applying each event alone does."""
    consumer = feedback_consumer(Policy())
    db = Database(feedback.database_url, schema="feedback", source="/handoff/feedback")
    states = []
    try:
        for grouping in ("one at a time", "as one batch"):
            a, b, c, d, e = (new_lead_id() for _ in range(5))
            async with db.unit_of_work() as uow:
                await service.leads_seen(uow, [Sighting(b, 1, datetime.now(UTC), engaged=True)])
            async with db.unit_of_work() as uow:
                report = Report(S.CONTACTED, datetime.now(UTC))
                waiting = await service.report_status(
                    uow, b, report, actor="crm", delivery_id=None, policy=Policy()
                )
                assert waiting.disposition == service.PENDING
            events = lifecycle_events(a, b, c, d, e)
            if grouping == "one at a time":
                runs = [[event] for event in events]
            else:
                assert len({consumer.batch_handlers[e.type] for e in events}) == 1
                runs = [events]
            for run in runs:
                async with db.unit_of_work() as uow:
                    await consumer.batch_handlers[run[0].type](uow, run)
            states.append(await _lifecycle_state(db, {a: "a", b: "b", c: "c", d: "d", e: "e"}))
    finally:
        await db.dispose()
    one_at_a_time, as_one_batch = states
    assert as_one_batch == one_at_a_time
    lead_a, lead_b = one_at_a_time["a"], one_at_a_time["b"]
    assert lead_a[0][:3] == ("assigned", 1, "rep_2")
    assert [step[1] for step in lead_a[1]] == ["created", "engaged", "assigned", "assigned"]
    assert lead_b[0][:2] == ("contacted", 2)
    assert [step[1] for step in lead_b[1]] == ["created", "requalified", "assigned", "contacted"]
    assert [step[1] for step in one_at_a_time["c"][1]] == ["created", "queued", "assigned"]
    assert one_at_a_time["d"][0][0] == "nurture"
    assert [step[1] for step in one_at_a_time["d"][1]] == ["nurture"]
    assert one_at_a_time["e"][0][0] == "assigned"
    assert [step[1] for step in one_at_a_time["e"][1]] == ["assigned"]


async def test_a_new_sales_cycle_shows_whichever_of_its_events_feedback_reads_first(
    feedback: Feedback,
) -> None:
    """A lead sales dropped re-qualifies: the scorer's lead.scored and the router's outcome
    for the new cycle (an assignment, a queueing, or nurture for a fit now too low) travel on
    different topics, so either may be read first. Either way the history shows the
    re-qualification, then the outcome, and the lead ends the same."""
    consumer = feedback_consumer(Policy())
    db = Database(feedback.database_url, schema="feedback", source="/handoff/feedback")

    def event_of(data: Any) -> CloudEvent[Any]:
        return new_event(data, source="/handoff/tests", subject=data.lead_id)

    async def consumed(event: CloudEvent[Any]) -> None:
        async with db.unit_of_work() as uow:
            await consumer.batch_handlers[event.type](uow, [event])

    ends: dict[str, tuple[Any, ...]] = {}
    try:
        for first, outcome in (
            ("scored", "assigned"),
            ("outcome", "assigned"),
            ("scored", "queued"),
            ("outcome", "queued"),
            ("scored", "nurture"),
            ("outcome", "nurture"),
        ):
            lead_id = new_lead_id()
            async with db.unit_of_work() as uow:
                await service.leads_seen(
                    uow, [Sighting(lead_id, 1, datetime.now(UTC), engaged=True)]
                )
            await consumed(event_of(assigned(lead_id)))
            async with db.unit_of_work() as uow:
                dropped = Report(S.DISQUALIFIED, datetime.now(UTC), reason=Reason.NO_BUDGET)
                await service.report_status(
                    uow, lead_id, dropped, actor="crm", delivery_id=None, policy=Policy()
                )
            # The scorer's event is made before the router's (which follows from it).
            scored = event_of(scored_lead(lead_id, email=f"{lead_id}@example.com", cycle=2))
            routed: Any = assigned(lead_id, cycle=2)
            if outcome == "queued":
                routed = LeadQueuedV1(
                    lead_id=lead_id,
                    team_id="team_1",
                    queued_at=datetime.now(UTC),
                    decision=routed.decision,
                    cycle=2,
                )
            elif outcome == "nurture":
                routed = LeadNurtureRequestedV1(
                    lead_id=lead_id,
                    reason=NurtureReason.LOW_FIT,
                    note="fit grade D",
                    requested_at=datetime.now(UTC),
                    requested_by="router",
                    cycle=2,
                )
            routed_event = event_of(routed)
            for event in (scored, routed_event) if first == "scored" else (routed_event, scored):
                await consumed(event)
            # In the order the history endpoint shows (time, then id), not `_lifecycle_state`'s
            # order of recording: the step must come before the outcome as a reader sees it.
            async with db.engine.connect() as conn:
                lead = (
                    await conn.execute(
                        sa.text("SELECT status, cycle FROM feedback.leads WHERE lead_id = :id"),
                        {"id": lead_id},
                    )
                ).one()
                steps = (
                    await conn.execute(
                        sa.text(
                            "SELECT to_status, cycle FROM feedback.history WHERE lead_id = :id"
                            " ORDER BY occurred_at, id"
                        ),
                        {"id": lead_id},
                    )
                ).all()
            ends[f"{first} first, {outcome}"] = (tuple(lead), [tuple(step) for step in steps])
    finally:
        await db.dispose()
    for case, (lead, steps) in ends.items():
        outcome = case.rsplit(" ", 1)[1]
        assert lead == (outcome, 2), case
        assert steps == [
            ("created", 1),
            ("assigned", 1),
            ("disqualified", 1),
            ("requalified", 2),
            (outcome, 2),
        ], case


async def test_history_staged_in_a_transaction_is_read_back_in_it(feedback: Feedback) -> None:
    """History rows are staged in the unit of work, not flushed by the ORM: a later run of a
    batch in the same transaction (another lead.created of the lead, after a run of another
    handler) still sees the first one's `created` step, and records an engagement."""
    db = Database(feedback.database_url, schema="feedback", source="/handoff/feedback")
    lead_id = new_lead_id()
    try:
        async with db.unit_of_work() as uow:
            for _ in range(2):
                await service.leads_seen(
                    uow, [Sighting(lead_id, 1, datetime.now(UTC), engaged=True)]
                )
            in_transaction = await FeedbackRepository(uow).history(lead_id)
            assert [step.to_status for step in in_transaction] == ["created", "engaged"]
        async with db.unit_of_work() as uow:
            committed = await FeedbackRepository(uow).history(lead_id)
    finally:
        await db.dispose()
    assert [(s.from_status, s.to_status, s.actor) for s in committed] == [
        (None, "created", "marketing"),
        ("new", "engaged", "marketing"),
    ]


async def test_the_statements_of_a_consumed_batch_do_not_grow_with_it(feedback: Feedback) -> None:
    """A batch of 40 leads' routing outcomes, or of their re-qualifying scores, sends the
    same statements as a batch of 4: the leads are read and locked once, and those whose
    state changed are written back in one statement (the ORM would send an UPDATE per
    lead)."""
    consumer = feedback_consumer(Policy())
    db = Database(feedback.database_url, schema="feedback", source="/handoff/feedback")

    def routed(lead_id: str, n: int) -> Any:
        if n % 3 == 0:
            return assigned(lead_id, rep_id=f"rep_{n % 5}", cycle=2)
        if n % 3 == 1:
            decision = assigned(lead_id).decision
            return LeadQueuedV1(
                lead_id=lead_id, team_id="team_1", queued_at=datetime.now(UTC), decision=decision
            )
        return LeadNurtureRequestedV1(
            lead_id=lead_id,
            reason=NurtureReason.LOW_FIT,
            requested_at=datetime.now(UTC),
            requested_by="router",
        )

    async def apply(data: list[Any]) -> int:
        """Statements sent applying `data` as one run of its handler."""
        run = [new_event(d, source="/handoff/tests", subject=d.lead_id) for d in data]
        with statements_sent(db) as sent:
            async with db.unit_of_work() as uow:
                await consumer.batch_handlers[run[0].type](uow, run)
        return len(sent)

    per_batch: dict[tuple[str, int], int] = {}
    try:
        for size in (4, 40):
            ids = [new_lead_id() for _ in range(size)]
            await apply([scored_lead(i, email=f"{i}@example.com", cycle=1) for i in ids])
            per_batch["requalified", size] = await apply(
                [scored_lead(i, email=f"{i}@example.com", cycle=2) for i in ids]
            )
            per_batch["routed", size] = await apply([routed(i, n) for n, i in enumerate(ids)])
            states = await _lifecycle_state(db, {i: i for i in ids})
            assert {state[0][:2] for state in states.values()} == {
                ("assigned", 2),
                ("queued", 2),
                ("nurture", 2),
            }, states
    finally:
        await db.dispose()
    assert per_batch["requalified", 40] == per_batch["requalified", 4], per_batch
    assert per_batch["routed", 40] == per_batch["routed", 4], per_batch
