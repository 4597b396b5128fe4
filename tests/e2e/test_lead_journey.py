"""End to end: the three services as processes, driven only through HTTP, with what they
publish read back from Kafka by an independent consumer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from support.kafka import read_topic
from support.system import System, admin_headers
from support.waiting import wait_for

from handoff_schemas import ICP, LEAD_CREATED, LEAD_ROUTING, LEAD_STATUS, decode
from handoff_scorer.scoring import load_demo_icp

pytestmark = pytest.mark.e2e

RECENT = (datetime.now(UTC) - timedelta(days=2)).isoformat()


def ideal_lead(email: str, *, employees: int = 250, activities: int = 2) -> dict[str, Any]:
    """A lead the demo ICP grades A; fewer activities or employees lower its score."""
    return {
        "email": email,
        "name": "Katrin Vogel",
        "company": "Nordwerk Software",
        "domain": "nordwerk.de",
        "title": "VP Engineering",
        "industry": "Software",
        "employees": employees,
        "country": "DE",
        "source": "hubspot",
        "campaign": "webinar-2026-11",
        "activities": [{"type": "demo_requested", "occurred_at": RECENT}] * activities,
    }


@pytest.fixture(scope="module")
def team(system: System) -> dict[str, Any]:
    """One team (the default) with two reps holding one working lead each."""
    admin = admin_headers()
    created = httpx.post(f"{system.router}/v1/teams", json={"name": "Inbound EMEA"}, headers=admin)
    assert created.status_code == 201, created.text
    fallback = httpx.patch(
        f"{system.router}/v1/teams/{created.json()['id']}",
        json={"is_default": True},
        headers=admin,
    )
    assert fallback.json()["is_default"] is True
    reps = [
        httpx.post(
            f"{system.router}/v1/reps",
            json={
                "team_id": created.json()["id"],
                "name": n,
                "email": f"{n}@handoff.dev",
                "capacity": 1,
            },
            headers=admin,
        ).json()
        for n in ("maria", "jonas")
    ]
    return {**created.json(), "reps": reps}


async def post_lead(http: httpx.AsyncClient, system: System, body: dict[str, Any]) -> str:
    answer = await http.post(f"{system.scorer}/v1/leads", json=body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["lead_id"])


async def routing_event(
    system: System, lead_id: str, event_type: str, timeout_s: float = 20
) -> Any:
    """The first event of `event_type` about `lead_id` on the routing topic."""
    records = await read_topic(
        system.bootstrap,
        LEAD_ROUTING.name,
        until=1,
        timeout_s=timeout_s,
        where=lambda r: r.key == lead_id.encode() and decode(r.value).type == event_type,
    )
    assert records, f"no {event_type} for {lead_id} within {timeout_s}s"
    return decode(records[0].value)


async def team_reps(
    http: httpx.AsyncClient, system: System, team: dict[str, Any]
) -> list[dict[str, Any]]:
    """The reps of this module's team (other modules' teams share the router)."""
    reps = (await http.get(f"{system.router}/v1/reps")).json()
    return [r for r in reps if r["team_id"] == team["id"]]


async def team_backlog(
    http: httpx.AsyncClient, system: System, team: dict[str, Any]
) -> list[dict[str, Any]]:
    """This module's team's backlog in drain order."""
    answer = await http.get(f"{system.router}/v1/backlog", params={"team_id": team["id"]})
    return list(answer.json())


async def feedback_status(
    http: httpx.AsyncClient, system: System, lead_id: str, status: str
) -> bool:
    """Whether feedback has the lead at `status` (it follows the routing topic on its own)."""
    answer = await http.get(f"{system.feedback}/v1/leads/{lead_id}/history")
    return answer.status_code == 200 and answer.json().get("status") == status


async def test_bad_input_gets_422_naming_the_field_and_nothing_is_published(
    system: System, http: httpx.AsyncClient
) -> None:
    before = len(await read_topic(system.bootstrap, LEAD_CREATED.name, timeout_s=1))
    malformed = await http.post(
        f"{system.scorer}/v1/leads",
        content=b'{"email": "a@b.io", ',
        headers={"content-type": "application/json"},
    )
    missing_email = await http.post(f"{system.scorer}/v1/leads", json={"name": "No Email"})
    wrong_type = await http.post(
        f"{system.scorer}/v1/leads", json={"email": "x@acme.io", "employees": "lots"}
    )
    for answer, field in (
        (malformed, "body"),
        (missing_email, "body.email"),
        (wrong_type, "body.employees"),
    ):
        assert answer.status_code == 422
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["status"] == 422
        assert problem["type"].endswith("/validation-error")
        assert field in [e["field"] for e in problem["errors"]], problem
    after = len(await read_topic(system.bootstrap, LEAD_CREATED.name, timeout_s=1))
    assert after == before


async def test_low_fit_lead_goes_to_nurture_not_to_sales(
    system: System, team: dict[str, Any], http: httpx.AsyncClient
) -> None:
    lead_id = await post_lead(
        http, system, {"email": "someone@gmail.com", "title": "Student", "country": "BR"}
    )
    event = await routing_event(system, lead_id, "handoff.lead.nurture_requested.v1")
    assert event.data.reason == "low_fit"
    routing = (await http.get(f"{system.router}/v1/leads/{lead_id}/routing")).json()
    assert routing["state"] == "nurture"
    assert routing["rep_id"] is None


async def test_capacity_is_never_exceeded_and_a_release_assigns_the_best_queued_lead(
    system: System, team: dict[str, Any], http: httpx.AsyncClient
) -> None:
    # Two reps with one slot each: the first two leads are assigned, one to each rep.
    first = await post_lead(http, system, ideal_lead("first@nordwerk.de"))
    assigned = await routing_event(system, first, "handoff.lead.assigned.v1")
    second = await post_lead(http, system, ideal_lead("second@nordwerk.de"))
    assigned_second = await routing_event(system, second, "handoff.lead.assigned.v1")
    assert {assigned.data.rep_id, assigned_second.data.rep_id} == {r["id"] for r in team["reps"]}

    # The score travels with the assignment and is explained at the scorer.
    lead = (await http.get(f"{system.scorer}/v1/leads/{first}")).json()
    assert lead["score"]["grade"] == "A"
    assert assigned.data.decision.score == lead["score"]["score"]
    criteria = {c["criterion"] for c in lead["score"]["contributions"]}
    assert {"industries", "employees", "countries", "titles"} <= criteria

    # Everyone is full: the next leads wait, best fit first.
    weaker = await post_lead(http, system, ideal_lead("weaker@nordwerk.de", employees=30))
    best = await post_lead(http, system, ideal_lead("best@nordwerk.de"))
    for queued in (weaker, best):
        event = await routing_event(system, queued, "handoff.lead.queued.v1")
        assert all(c.working == c.capacity for c in event.data.decision.candidates)
    reps = await team_reps(http, system, team)
    assert all(r["working"] <= r["capacity"] for r in reps)
    assert sum(r["working"] for r in reps) == 2
    backlog = await team_backlog(http, system, team)
    assert [b["lead_id"] for b in backlog] == [best, weaker]

    # Sales works the first lead, then drops it: the slot goes to the best queued lead. (The
    # CRM reports once feedback has the assignment too; before that it would answer 202
    # pending, and 404 before it has seen the lead at all.)
    assert await wait_for(lambda: feedback_status(http, system, first, "assigned"))
    for change in ({"status": "contacted"}, {"status": "disqualified", "reason": "no_budget"}):
        answer = await http.post(
            f"{system.feedback}/v1/leads/{first}/status", json={**change, "actor": "crm"}
        )
        assert answer.status_code == 200, answer.text
    drained = await routing_event(system, best, "handoff.lead.assigned.v1")
    assert drained.data.rep_id == assigned.data.rep_id
    assert drained.data.decision.rule == "backlog_drain"
    backlog = await team_backlog(http, system, team)
    assert [b["lead_id"] for b in backlog] == [weaker]
    reps = await team_reps(http, system, team)
    assert all(r["working"] == r["capacity"] == 1 for r in reps)

    # Marketing hears why, with a date to re-qualify.
    status_events = [
        decode(r.value)
        for r in await read_topic(
            system.bootstrap, LEAD_STATUS.name, until=3, where=lambda r: r.key == first.encode()
        )
    ]
    assert [e.type for e in status_events] == [
        "handoff.lead.status_changed.v1",
        "handoff.lead.status_changed.v1",
        "handoff.lead.nurture_requested.v1",
    ]
    assert status_events[2].data.reason == "no_budget"
    assert status_events[2].data.requalify_on > datetime.now(UTC).date()

    # Feedback knows the whole story of the first lead.
    assert await wait_for(lambda: feedback_status(http, system, best, "assigned"))
    story = (await http.get(f"{system.feedback}/v1/leads/{first}/history")).json()
    assert [h["to_status"] for h in story["history"]] == [
        "created",
        "assigned",
        "contacted",
        "disqualified",
    ]
    assert story["history"][3]["reason"] == "no_budget"

    # A move the lifecycle does not allow is refused with what is allowed.
    refused = await http.post(f"{system.feedback}/v1/leads/{first}/status", json={"status": "won"})
    assert refused.status_code == 409
    assert refused.json()["allowed"] == []


async def test_the_same_person_sent_again_is_one_lead_rescored_with_one_owner(
    system: System, team: dict[str, Any], http: httpx.AsyncClient
) -> None:
    first = await http.post(
        f"{system.scorer}/v1/leads",
        json={**ideal_lead("Returning.Buyer@Nordwerk.de"), "activities": []},
    )
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "accepted"
    lead_id = first.json()["lead_id"]
    records = await read_topic(
        system.bootstrap, LEAD_ROUTING.name, until=1, where=lambda r: r.key == lead_id.encode()
    )
    assert records, "the first delivery was never routed"

    again = await http.post(
        f"{system.scorer}/v1/leads", json=ideal_lead("  returning.buyer@nordwerk.de ")
    )
    assert again.status_code == 202, again.text
    assert again.json() == {**again.json(), "lead_id": lead_id, "status": "updated"}

    async def rescored() -> bool:
        lead = (await http.get(f"{system.scorer}/v1/leads/{lead_id}")).json()
        return len(lead["score_history"]) == 2

    assert await wait_for(rescored)
    lead = (await http.get(f"{system.scorer}/v1/leads/{lead_id}")).json()
    assert lead["profile"]["email"] == "returning.buyer@nordwerk.de"
    assert len(lead["profile"]["activities"]) == 2
    assert (
        lead["score_history"][0]["engagement_level"] < lead["score_history"][1]["engagement_level"]
    )
    routing = (await http.get(f"{system.router}/v1/leads/{lead_id}/routing")).json()
    assert len(routing["decisions"]) == 1, "a person sent again must not be routed again"
    routed_again = await read_topic(
        system.bootstrap, LEAD_ROUTING.name, timeout_s=2, where=lambda r: r.key == lead_id.encode()
    )
    assert len(routed_again) == 1


async def test_a_new_icp_version_is_validated_announced_and_used(
    system: System, http: httpx.AsyncClient
) -> None:
    document = load_demo_icp().model_dump(mode="json")
    bad = {**document, "grades": {"A": 40, "B": 60, "C": 20}}
    refused = await http.post(f"{system.scorer}/v1/icp", json=bad)
    assert refused.status_code == 422
    assert any(e["field"] == "body.grades.B" for e in refused.json()["errors"]), refused.json()

    published = await http.post(f"{system.scorer}/v1/icp", json=document)
    assert published.status_code == 201, published.text
    version = published.json()["version"]
    current = (await http.get(f"{system.scorer}/v1/icp")).json()
    assert current["version"] == version
    versions = (await http.get(f"{system.scorer}/v1/icp/versions")).json()
    assert [v["version"] for v in versions] == list(range(version, 0, -1))

    announced = await read_topic(
        system.bootstrap, ICP.name, until=1, where=lambda r: r.key == f"icp/{version}".encode()
    )
    assert [decode(r.value).data.version for r in announced] == [version]

    lead_id = await post_lead(http, system, ideal_lead("scored.with.new.icp@nordwerk.de"))

    async def scored_with_new_version() -> bool:
        lead = (await http.get(f"{system.scorer}/v1/leads/{lead_id}")).json()
        return bool(lead["score"] and lead["score"]["icp_version"] == version)

    assert await wait_for(scored_with_new_version)
