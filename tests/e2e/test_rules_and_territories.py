"""Routing rules and rep coverage on the running system: a rule sends matching leads to its
team, reps take only leads in their territory, and new coverage drains the backlog."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from support.kafka import read_topic
from support.system import System

from handoff_schemas import LEAD_ROUTING, decode

pytestmark = pytest.mark.e2e


async def outcome(system: System, lead_id: str, event_type: str) -> Any:
    records = await read_topic(
        system.bootstrap,
        LEAD_ROUTING.name,
        until=1,
        where=lambda r: r.key == lead_id.encode() and decode(r.value).type == event_type,
    )
    assert records, f"no {event_type} for {lead_id}"
    return decode(records[0].value)


async def test_a_rule_routes_its_leads_to_its_team_and_reps_keep_to_their_territory(
    system: System, http: httpx.AsyncClient
) -> None:
    router = system.router
    # An industry no other test uses, so this rule changes nothing for them.
    industry = f"Aerospace {uuid.uuid4().hex[:6]}"
    team = (await http.post(f"{router}/v1/teams", json={"name": "Aerospace"})).json()

    async def add_rep(name: str, countries: list[str], capacity: int) -> str:
        answer = await http.post(
            f"{router}/v1/reps",
            json={
                "team_id": team["id"],
                "name": name,
                "email": f"{name}@handoff.dev",
                "capacity": capacity,
                "countries": countries,
            },
        )
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    uk_rep = await add_rep("uk-rep", ["GB"], 2)
    de_rep = await add_rep("de-rep", ["DE"], 1)
    rules = {
        "rules": [
            {"name": "aerospace", "team_id": team["id"], "conditions": {"industries": [industry]}}
        ]
    }
    try:
        put = await http.put(f"{router}/v1/routing-rules", json=rules)
        assert put.status_code == 200, put.text
        assert (await http.get(f"{router}/v1/routing-rules")).json() == put.json()

        async def post(country: str) -> str:
            body = {
                "email": f"buyer@{uuid.uuid4().hex[:10]}.aero.example",
                "industry": industry,
                "country": country,
                "employees": 250,
                "title": "VP Engineering",
            }
            answer = await http.post(f"{system.scorer}/v1/leads", json=body)
            assert answer.status_code == 202, answer.text
            return str(answer.json()["lead_id"])

        german = await outcome(system, await post("DE"), "handoff.lead.assigned.v1")
        assert (german.data.rep_id, german.data.team_id) == (de_rep, team["id"])
        assert german.data.decision.rule == "aerospace"
        british = await outcome(system, await post("GB"), "handoff.lead.assigned.v1")
        assert british.data.rep_id == uk_rep

        queued_de = await outcome(system, await post("DE"), "handoff.lead.queued.v1")
        assert queued_de.data.team_id == team["id"]
        french_id = await post("FR")
        queued_fr = await outcome(system, french_id, "handoff.lead.queued.v1")
        why = {c.rep_id: c.why for c in queued_fr.data.decision.candidates}
        assert why == {uk_rep: "country FR not covered", de_rep: "country FR not covered"}

        # The UK rep takes France too: the French lead is assigned at once, the German waits.
        patched = await http.patch(f"{router}/v1/reps/{uk_rep}", json={"countries": ["GB", "FR"]})
        assert patched.status_code == 200, patched.text
        drained = await outcome(system, french_id, "handoff.lead.assigned.v1")
        assert (drained.data.rep_id, drained.data.decision.rule) == (uk_rep, "backlog_drain")
        backlog = (await http.get(f"{router}/v1/backlog", params={"team_id": team["id"]})).json()
        assert [b["lead_id"] for b in backlog] == [queued_de.data.lead_id]
    finally:
        await http.put(f"{router}/v1/routing-rules", json={"rules": []})


async def test_invalid_teams_reps_and_rules_get_422_naming_the_field(
    system: System, http: httpx.AsyncClient
) -> None:
    router = system.router
    team = (await http.post(f"{router}/v1/teams", json={"name": "Validation"})).json()
    cases = [
        (
            "put",
            "/v1/routing-rules",
            {"rules": [{"name": "x", "team_id": "no-such-team"}]},
            "body.rules.0.team_id",
        ),
        (
            "put",
            "/v1/routing-rules",
            {
                "rules": [
                    {"name": "x", "team_id": team["id"], "conditions": {"size_bands": ["huge"]}}
                ]
            },
            "body.rules.0.conditions.size_bands.0",
        ),
        (
            "post",
            "/v1/reps",
            {
                "team_id": team["id"],
                "name": "r",
                "email": "r@x.io",
                "capacity": 1,
                "timezone": "Mars/Olympus",
            },
            "body.timezone",
        ),
        (
            "post",
            "/v1/reps",
            {
                "team_id": team["id"],
                "name": "r",
                "email": "r@x.io",
                "capacity": 1,
                "working_hours": {"start": "17:00", "end": "09:00"},
            },
            "body.working_hours",
        ),
        (
            "post",
            "/v1/reps",
            {"team_id": "no-such-team", "name": "r", "email": "r@x.io", "capacity": 1},
            "body.team_id",
        ),
        (
            "post",
            "/v1/reps",
            {"team_id": team["id"], "name": "r", "email": "r@x.io", "capacity": -1},
            "body.capacity",
        ),
    ]
    for method, path, body, field in cases:
        answer = await http.request(method.upper(), f"{router}{path}", json=body)
        assert answer.status_code == 422, (path, body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in answer.json()["errors"]], answer.json()
