"""End to end, the loop back from sales to marketing: the CRM reports (signed) what happened
to a lead, marketing hears at once why and when to look again, the rep's slot is freed, and
a nurtured lead that comes back after its re-qualify date goes to sales again — before that
date its engagement is only recorded."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from e2e.conftest import CRM_SECRET, CRM_SOURCE
from standardwebhooks.webhooks import Webhook
from support.kafka import read_topic
from support.system import System
from support.waiting import wait_for

from handoff_schemas import LEAD_ROUTING, LEAD_STATUS, decode

pytestmark = pytest.mark.e2e

ASSIGNED = "handoff.lead.assigned.v1"
NURTURE = "handoff.lead.nurture_requested.v1"


def crm_delivery(body: dict[str, Any]) -> dict[str, Any]:
    """A status report signed as the CRM signs it (Standard Webhooks)."""
    content = json.dumps(body)
    delivery_id, now = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
    return {
        "content": content,
        "headers": {
            "content-type": "application/json",
            "webhook-source": CRM_SOURCE,
            "webhook-id": delivery_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(CRM_SECRET).sign(delivery_id, now, content),
        },
    }


async def events(
    system: System, topic: str, lead_id: str, event_type: str, *, until: int, timeout_s: float
) -> list[Any]:
    records = await read_topic(
        system.bootstrap,
        topic,
        until=until,
        timeout_s=timeout_s,
        where=lambda r: r.key == lead_id.encode() and decode(r.value).type == event_type,
    )
    return [decode(r.value) for r in records]


async def test_dropped_for_no_budget_the_lead_is_nurtured_frees_its_slot_and_returns_after_its_date(
    system: System, http: httpx.AsyncClient
) -> None:
    router, scorer, feedback = system.router, system.scorer, system.feedback
    # A team and an industry no other test uses, so the rule changes nothing for them.
    industry = f"Maritime {uuid.uuid4().hex[:6]}"
    team = (await http.post(f"{router}/v1/teams", json={"name": "Maritime"})).json()
    rep = await http.post(
        f"{router}/v1/reps",
        json={"team_id": team["id"], "name": "Ines", "email": "ines@handoff.dev", "capacity": 2},
    )
    assert rep.status_code == 201, rep.text
    rep_id = rep.json()["id"]
    rules = [{"name": "maritime", "team_id": team["id"], "conditions": {"industries": [industry]}}]
    assert (await http.put(f"{router}/v1/routing-rules", json={"rules": rules})).status_code == 200

    def lead(email: str, activity: str) -> dict[str, Any]:
        recent = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        return {
            "email": email,
            "company": "Nordhafen Shipping",
            "industry": industry,
            "country": "DE",
            "employees": 250,
            "title": "VP Engineering",
            "campaign": "harbour-days",
            "activities": [{"type": activity, "occurred_at": recent}],
        }

    async def working() -> int:
        reps = (await http.get(f"{router}/v1/reps")).json()
        return int(next(r["working"] for r in reps if r["id"] == rep_id))

    try:
        emails = [f"buyer-{uuid.uuid4().hex[:8]}@{uuid.uuid4().hex[:8]}.example" for _ in "ab"]
        ids = []
        for email in emails:
            answer = await http.post(f"{scorer}/v1/leads", json=lead(email, "webinar_attended"))
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["lead_id"])
        back_early, back_late = ids
        for lead_id in ids:
            (first,) = await events(
                system, LEAD_ROUTING.name, lead_id, ASSIGNED, until=1, timeout_s=20
            )
            assert (first.data.rep_id, first.data.cycle) == (rep_id, 1)
        assert await working() == 2

        # The rep works the first lead and drops it for no budget. The CRM reports it, signed;
        # it happened 100 days ago (the CRM syncs late), so its re-qualify date has passed.
        now = datetime.now(UTC)
        contacted_at, dropped_at = now - timedelta(days=101), now - timedelta(days=100)
        for body in (
            {"status": "contacted", "occurred_at": contacted_at.isoformat(), "actor": "ines"},
            {
                "status": "disqualified",
                "reason": "no_budget",
                "note": "Budget frozen until the next fiscal year.",
                "occurred_at": dropped_at.isoformat(),
                "actor": "ines",
            },
        ):
            answer = await http.post(
                f"{feedback}/v1/leads/{back_late}/status", **crm_delivery(body)
            )
            assert answer.status_code in (200, 202), answer.text
        # The second lead is dropped today for no timeline: it may come back in 60 days.
        answer = await http.post(
            f"{feedback}/v1/leads/{back_early}/status",
            **crm_delivery({"status": "disqualified", "reason": "no_timeline", "actor": "ines"}),
        )
        assert answer.status_code in (200, 202), answer.text

        # Marketing hears why, with the date to re-qualify, on Kafka.
        (nurture,) = await events(
            system, LEAD_STATUS.name, back_late, NURTURE, until=1, timeout_s=20
        )
        assert nurture.data.reason == "no_budget"
        assert nurture.data.requested_by == "feedback"
        assert nurture.data.requalify_on == dropped_at.date() + timedelta(days=90)
        assert nurture.data.requalify_on < date.today()
        (early,) = await events(
            system, LEAD_STATUS.name, back_early, NURTURE, until=1, timeout_s=20
        )
        assert early.data.requalify_on == datetime.now(UTC).date() + timedelta(days=60)

        # The router has released the rep's slots.
        async def released() -> bool:
            return await working() == 0

        assert await wait_for(released), "the rep's slots were not freed"

        # Both come back with new engagement (a pricing page visit).
        for email in emails:
            again = await http.post(f"{scorer}/v1/leads", json=lead(email, "pricing_page_visit"))
            assert again.status_code == 202, again.text
            assert again.json()["status"] == "updated"

        # After its date: re-scored and routed again, in a new cycle, with its history.
        assignments = await events(
            system, LEAD_ROUTING.name, back_late, ASSIGNED, until=2, timeout_s=20
        )
        assert [a.data.cycle for a in assignments] == [1, 2]
        assert assignments[1].data.rep_id == rep_id

        async def story_of(lead_id: str) -> dict[str, Any]:
            return dict((await http.get(f"{feedback}/v1/leads/{lead_id}/history")).json())

        async def assigned_again() -> bool:
            story = await story_of(back_late)
            return bool(story["cycle"] == 2 and story["status"] == "assigned")

        assert await wait_for(assigned_again)
        history = (await story_of(back_late))["history"]
        steps = [(h["to_status"], h["cycle"]) for h in history]
        assert steps[0] == ("contacted", 1)  # the CRM's times: it happened 101 days ago
        assert steps[1] == ("disqualified", 1)
        assert [s for s in steps[2:] if s[0] != "engaged"][:2] == [("created", 1), ("assigned", 1)]
        assert steps[-2:] == [("requalified", 2), ("assigned", 2)], [
            (h["to_status"], h["cycle"], h["occurred_at"], h["recorded_at"]) for h in history
        ]
        scored = (await http.get(f"{scorer}/v1/leads/{back_late}")).json()
        assert scored["cycle"] == 2
        assert scored["outcome"] is None

        # Before its date: the engagement is recorded, and the lead stays in nurture.
        async def engagement_recorded() -> bool:
            history = (await story_of(back_early))["history"]
            return any(h["to_status"] == "engaged" for h in history)

        assert await wait_for(engagement_recorded)
        early_story = await story_of(back_early)
        assert (early_story["status"], early_story["cycle"]) == ("disqualified", 1)
        still = (await http.get(f"{scorer}/v1/leads/{back_early}")).json()
        assert (still["cycle"], still["outcome"]) == (1, "disqualified")
        assert still["requalify_on"] == early.data.requalify_on.isoformat()
        assert {"pricing_page_visit", "webinar_attended"} <= {
            a["type"] for a in still["profile"]["activities"]
        }
        routed = await events(system, LEAD_ROUTING.name, back_early, ASSIGNED, until=2, timeout_s=3)
        assert [a.data.cycle for a in routed] == [1]
        assert await working() == 1
    finally:
        await http.put(f"{router}/v1/routing-rules", json={"rules": []})
        await http.patch(f"{router}/v1/reps/{rep_id}", json={"active": False})
