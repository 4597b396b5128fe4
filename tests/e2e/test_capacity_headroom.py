"""Capacity headroom on the running system: GET /v1/capacity follows what the team is given
and what sales lets go, a team filling up is announced as saturated on `handoff.capacity`
and a release announces it back at a lower level (each change exactly once), and the
router's /metrics carries the team's gauges.

Other modules create teams and leads in the same database, so this one routes its own leads
to its own team with a rule on an industry nobody else uses, and reads only its team."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from itertools import pairwise
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.kafka import read_topic
from support.system import System
from support.waiting import wait_for

from handoff_schemas import CAPACITY, LEAD_ROUTING, CloudEvent, decode

pytestmark = pytest.mark.e2e

T = TypeVar("T")
WINDOW_HOURS = 4.0  # the router's default rate window


async def routing_event(system: System, lead_id: str, event_type: str) -> CloudEvent[Any]:
    records = await read_topic(
        system.bootstrap,
        LEAD_ROUTING.name,
        until=1,
        where=lambda r: r.key == lead_id.encode() and decode(r.value).type == event_type,
    )
    assert records, f"no {event_type} for {lead_id}"
    return decode(records[0].value)


async def capacity_events(
    system: System, team_id: str, *, until: Callable[[list[CloudEvent[Any]]], bool]
) -> list[CloudEvent[Any]]:
    """The team's capacity events in order, read again until `until` holds (or 20 s pass)."""

    async def read() -> list[CloudEvent[Any]]:
        records = await read_topic(
            system.bootstrap, CAPACITY.name, timeout_s=1, where=lambda r: r.key == team_id.encode()
        )
        events = [decode(r.value) for r in records]
        return events if until(events) else []

    events = await wait_for(read)
    assert events, f"the capacity events of team {team_id} never reached the expected state"
    return events


async def test_capacity_headroom_is_served_announced_and_measured(
    system: System, http: httpx.AsyncClient
) -> None:
    router = system.router
    tag = uuid.uuid4().hex[:6]
    industry = f"Shipbuilding {tag}"
    created = await http.post(f"{router}/v1/teams", json={"name": f"Capacity {tag}"})
    assert created.status_code == 201, created.text
    team = created.json()
    reps = []
    for name in ("ada", "bo"):
        answer = await http.post(
            f"{router}/v1/reps",
            json={
                "team_id": team["id"],
                "name": f"{name}-{tag}",
                "email": f"{name}-{tag}@handoff.dev",
                "capacity": 2,
            },
        )
        assert answer.status_code == 201, answer.text
        reps.append(answer.json())
    rules = {
        "rules": [
            {
                "name": "shipbuilding",
                "team_id": team["id"],
                "conditions": {"industries": [industry]},
            }
        ]
    }

    async def mine() -> dict[str, Any]:
        answer = await http.get(f"{router}/v1/capacity")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["rate_window_hours"] == WINDOW_HOURS
        (found,) = (t for t in body["teams"] if t["team_id"] == team["id"])
        return dict(found)

    async def post_lead() -> str:
        body = {
            "email": f"buyer@{uuid.uuid4().hex[:10]}-ships.example",  # one account each
            "industry": industry,
            "country": "DE",
            "employees": 250,
            "title": "VP Engineering",
        }
        answer = await http.post(f"{system.scorer}/v1/leads", json=body)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["lead_id"])

    async def disqualify(lead_id: str) -> None:
        async def post() -> httpx.Response | None:
            answer = await http.post(
                f"{system.feedback}/v1/leads/{lead_id}/status",
                json={"status": "disqualified", "reason": "no_budget", "actor": "crm"},
            )
            return None if answer.status_code == 404 else answer  # feedback not caught up yet

        answer = await wait_for(post)
        assert answer is not None
        assert answer.status_code == 200, answer.text

    try:
        put = await http.put(f"{router}/v1/routing-rules", json=rules)
        assert put.status_code == 200, put.text

        # An empty team with two reps of two slots: all room, nothing moving.
        empty = await mine()
        assert {k: empty[k] for k in ("capacity", "working", "headroom", "backlog")} == {
            "capacity": 4,
            "working": 0,
            "headroom": 4,
            "backlog": 0,
        }
        assert empty["oldest_backlog_age_seconds"] is None
        assert (empty["utilisation"], empty["intake_per_hour"], empty["release_per_hour"]) == (
            0.0,
            0.0,
            0.0,
        )
        assert empty["hours_until_saturation"] is None
        assert empty["level"] == "ok"
        assert sorted(r["id"] for r in empty["reps"]) == sorted(r["id"] for r in reps)
        await capacity_events(
            system, team["id"], until=lambda es: bool(es) and es[-1].data.level == "ok"
        )

        # Four leads fill all four slots: saturated, and announced as such.
        leads = [await post_lead() for _ in range(4)]
        for lead_id in leads:
            assigned = await routing_event(system, lead_id, "handoff.lead.assigned.v1")
            assert assigned.data.team_id == team["id"]
        full = await mine()
        assert (full["working"], full["headroom"], full["backlog"]) == (4, 0, 0)
        assert full["utilisation"] == 1.0
        assert full["intake_per_hour"] == pytest.approx(4 / WINDOW_HOURS)
        assert full["hours_until_saturation"] == 0.0
        assert full["level"] == "saturated"
        events = await capacity_events(
            system, team["id"], until=lambda es: bool(es) and es[-1].data.level == "saturated"
        )
        saturated = events[-1]
        assert saturated.type == "handoff.capacity.changed.v1"
        assert saturated.source == "/handoff/router"
        assert saturated.subject == team["id"]
        assert saturated.data.team_name == team["name"]
        assert saturated.data.previous_level == "ok"
        assert (saturated.data.capacity, saturated.data.working) == (4, 4)
        assert (saturated.data.headroom, saturated.data.backlog) == (0, 0)
        assert (saturated.data.utilisation, saturated.data.hours_until_saturation) == (1.0, 0.0)

        # A fifth lead waits in the backlog: it counts as intake too.
        queued = await post_lead()
        await routing_event(system, queued, "handoff.lead.queued.v1")
        waiting = await mine()
        assert (waiting["working"], waiting["headroom"], waiting["backlog"]) == (4, 0, 1)
        assert waiting["oldest_backlog_age_seconds"] >= 0
        assert waiting["intake_per_hour"] == pytest.approx(5 / WINDOW_HOURS)
        assert waiting["level"] == "saturated"

        # Sales drops two leads: the first slot goes to the queued lead, the second stays free.
        await disqualify(leads[0])
        drained = await routing_event(system, queued, "handoff.lead.assigned.v1")
        assert drained.data.decision.rule == "backlog_drain"
        await disqualify(leads[1])

        async def released() -> dict[str, Any] | None:
            now = await mine()
            return now if now["working"] == 3 else None

        after = await wait_for(released)
        assert after is not None, "the second release never reached the router"
        assert (after["capacity"], after["working"], after["headroom"], after["backlog"]) == (
            4,
            3,
            1,
            0,
        )
        assert after["oldest_backlog_age_seconds"] is None
        assert after["utilisation"] == pytest.approx(0.75)
        # The drained lead was counted when it was queued, not again when it was assigned.
        assert after["intake_per_hour"] == pytest.approx(5 / WINDOW_HOURS)
        assert after["release_per_hour"] == pytest.approx(2 / WINDOW_HOURS)
        # One free slot, filling at 5/4 - 2/4 = 0.75 leads an hour: full in 1/0.75 hours.
        assert after["hours_until_saturation"] == pytest.approx(1 / 0.75)
        assert after["level"] == "ok"

        events = await capacity_events(
            system,
            team["id"],
            until=lambda es: bool(es) and es[-1].data.level == "ok" and len(es) > 1,
        )
        back = events[-1]
        assert back.data.previous_level == "saturated"
        assert (back.data.working, back.data.headroom, back.data.backlog) == (3, 1, 0)
        assert back.data.hours_until_saturation == pytest.approx(1 / 0.75)
        # Each change is announced once, and each names the level announced before it.
        levels = [e.data.level for e in events]
        assert levels[-3:] == ["ok", "saturated", "ok"]
        assert events[0].data.previous_level is None
        for before, event in pairwise(events):
            assert event.data.previous_level == before.data.level != event.data.level

        # The router's gauges say the same.
        async def gauges() -> dict[str, float] | None:
            text = (await http.get(f"{router}/metrics")).text
            found = {
                sample.name: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name.startswith("handoff_team_")
                and sample.labels.get("team_id") == team["id"]
            }
            return found if found.get("handoff_team_working") == 3 else None

        measured = await wait_for(gauges)
        assert measured is not None, "the router's team gauges never showed the release"
        assert measured["handoff_team_capacity"] == 4
        assert measured["handoff_team_headroom"] == 1
        assert measured["handoff_team_backlog"] == 0
        assert measured["handoff_team_backlog_oldest_age_seconds"] == 0
        assert measured["handoff_team_utilisation_ratio"] == pytest.approx(0.75)
        assert measured["handoff_team_capacity_level"] == 0
        text = (await http.get(f"{router}/metrics")).text
        for rep in reps:
            assert f'rep="{rep["name"]}"' in text
        assert f'handoff_team_capacity{{service="router",team="{team["name"]}"' in text
    finally:
        await http.put(f"{router}/v1/routing-rules", json={"rules": []})
