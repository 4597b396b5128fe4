"""The running system every end-to-end test drives: three service processes on the
session's database and broker, with the demo ICP published."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from support.infra import Infra
from support.system import System, admin_headers, publish_demo_icp, running_system

LOCAL_SOURCE = "local"
SIGNED_SOURCE = "hubspot"
OLD_SECRET = "whsec_" + "b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC1zZWNyZXQ="
NEW_SECRET = "whsec_" + "bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQ="
CRM_SOURCE = "crm"
CRM_SECRET = "whsec_" + "Y3JtLXNlY3JldC1jcm0tc2VjcmV0LWNybS1zZWNyZXQ="


@pytest.fixture(scope="session")
def system(infra: Infra) -> Iterator[System]:
    sources = {
        LOCAL_SOURCE: {"signed": False},
        SIGNED_SOURCE: {"secrets": [OLD_SECRET, NEW_SECRET]},
    }
    crm = {LOCAL_SOURCE: {"signed": False}, CRM_SOURCE: {"secrets": [CRM_SECRET]}}
    with running_system(
        infra,
        HANDOFF_SCORER_WEBHOOK_SOURCES=json.dumps(sources),
        HANDOFF_FEEDBACK_WEBHOOK_SOURCES=json.dumps(crm),
        HANDOFF_ROUTER_CAPACITY_CHECK_INTERVAL_S="0.5",
    ) as running:
        publish_demo_icp(running.scorer)
        claim_unrouted_leads(running)
        yield running


def claim_unrouted_leads(system: System) -> None:
    """A team with no reps, created before any module runs, so there is always a team to
    route to. Without one, leads a module posts before any team exists wait in the router's
    retry backoff (no sales team yet) and are routed into whichever team comes next, filling
    a later module's reps with leads it did not send. Modules route their own leads with
    rules, or make their team the default; until one does, leads queue here."""
    answer = httpx.post(
        f"{system.router}/v1/teams", json={"name": "Unclaimed"}, headers=admin_headers()
    )
    assert answer.status_code == 201, answer.text


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client posting as the unsigned local source and calling admin APIs with the admin
    token."""
    headers = {"webhook-source": LOCAL_SOURCE, **admin_headers()}
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        yield client
