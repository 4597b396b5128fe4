"""Re-scoring on a new ICP version: leads whose grade changes are announced again, the
others are only re-recorded, and the job reports its progress."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from support.kafka import produce, read_topic
from support.system import System

from handoff_schemas import (
    LEAD_SCORED,
    LEAD_STATUS,
    LeadStatus,
    LeadStatusChangedV1,
    decode,
    encode,
    new_event,
)
from handoff_scorer.scoring import load_demo_icp

pytestmark = pytest.mark.e2e


async def scored_events(
    system: System, lead_id: str, until: int, timeout_s: float = 20
) -> list[Any]:
    records = await read_topic(
        system.bootstrap,
        LEAD_SCORED.name,
        until=until,
        timeout_s=timeout_s,
        where=lambda r: r.key == lead_id.encode(),
    )
    return [decode(r.value) for r in records]


async def test_rescoring_announces_only_the_leads_whose_grade_changed(
    system: System, http: httpx.AsyncClient
) -> None:
    suffix = uuid.uuid4().hex[:8]
    software = {
        "email": f"cto.{suffix}@softco.io",
        "title": "CTO",
        "industry": "Software",
        "employees": 300,
        "country": "DE",
    }
    fintech = {**software, "email": f"cto.{suffix}@payco.io", "industry": "Fintech"}
    closed = {**software, "email": f"cto.{suffix}@wonco.io"}
    ids = []
    for body in (software, fintech, closed):
        answer = await http.post(f"{system.scorer}/v1/leads", json=body)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["lead_id"])
    software_id, fintech_id, closed_id = ids
    for lead_id in ids:
        (first,) = await scored_events(system, lead_id, until=1)
        assert first.data.grade == "A"

    # Sales has already won one of them: it is closed, and re-scoring leaves it alone.
    won = new_event(
        LeadStatusChangedV1(
            lead_id=closed_id,
            from_status=LeadStatus.CONVERTED,
            to_status=LeadStatus.WON,
            rep_id=None,
            occurred_at=datetime.now(UTC),
            working=False,
        ),
        source="/crm-test",
        subject=closed_id,
    )
    await produce(system.bootstrap, LEAD_STATUS.name, [(closed_id.encode(), encode(won))])
    deadline = time.monotonic() + 20
    while (await http.get(f"{system.scorer}/v1/leads/{closed_id}")).json()["outcome"] != "won":
        assert time.monotonic() < deadline, "the scorer never recorded the outcome"
        await asyncio.sleep(0.2)

    # Sales and marketing agree software companies are no longer a fit.
    narrower = load_demo_icp().model_dump(mode="json")
    narrower["fit"]["industries"]["names"] = ["Fintech"]
    version = (await http.post(f"{system.scorer}/v1/icp", json=narrower)).json()["version"]
    try:
        started = await http.post(f"{system.scorer}/v1/icp/{version}/rescore")
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]
        deadline = time.monotonic() + 120
        while True:
            job = (await http.get(f"{system.scorer}/v1/rescore-jobs/{job_id}")).json()
            if job["state"] == "done" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert job["state"] == "done"
        assert job["done"] == job["total"] >= 2
        assert job["changed"] >= 1

        rescored = await scored_events(system, software_id, until=2)
        assert [e.data.grade for e in rescored] == ["A", "B"]
        assert rescored[1].data.icp_version == version
        # the job is done and its events committed: a second event would be there by now
        assert len(await scored_events(system, fintech_id, until=2, timeout_s=3)) == 1
        closed_lead = (await http.get(f"{system.scorer}/v1/leads/{closed_id}")).json()
        assert len(closed_lead["score_history"]) == 1
        fintech_lead = (await http.get(f"{system.scorer}/v1/leads/{fintech_id}")).json()
        assert fintech_lead["score_history"][0]["icp_version"] == version
    finally:
        restored = await http.post(
            f"{system.scorer}/v1/icp", json=load_demo_icp().model_dump(mode="json")
        )
        assert restored.status_code == 201

    missing = await http.post(f"{system.scorer}/v1/icp/99999/rescore")
    assert missing.status_code == 404
