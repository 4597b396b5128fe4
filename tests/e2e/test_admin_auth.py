"""Admin APIs take the admin token: without it, or with a wrong one, every admin route of the
router (teams, reps, routing rules) and of the scorer (the ICP, re-scoring) answers 401
problem+json and changes nothing; with it they work. Intake, lookups, capacity, KPIs and the
operations endpoints stay open."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from support.infra import Infra
from support.system import System, admin_headers

from handoff_runtime.db import create_engine

pytestmark = pytest.mark.e2e

REFUSED_CREDENTIALS = {
    "no header": {},
    "wrong token": admin_headers("adm_not-the-admin-token"),
    "not bearer": {"authorization": "Basic YWRtaW46YWRtaW4="},
}
# Fields an admin sets; `working`, `headroom` and `last_assigned_at` move with the leads.
REP_SETTINGS = ("id", "team_id", "name", "email", "capacity", "weight", "active", "countries")


@pytest.fixture
async def db(infra: Infra) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(infra.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def plain() -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no credentials of its own."""
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
async def admin_data(system: System) -> dict[str, Any]:
    """A team with one rep who takes no leads, created with the admin token."""
    tag = uuid.uuid4().hex[:6]
    async with httpx.AsyncClient(timeout=30, headers=admin_headers()) as admin:
        team = await admin.post(f"{system.router}/v1/teams", json={"name": f"Admin {tag}"})
        assert team.status_code == 201, team.text
        rep = await admin.post(
            f"{system.router}/v1/reps",
            json={
                "team_id": team.json()["id"],
                "name": f"Rep {tag}",
                "email": f"rep-{tag}@handoff.dev",
                "capacity": 0,
            },
        )
        assert rep.status_code == 201, rep.text
        icp = await admin.get(f"{system.scorer}/v1/icp")
        assert icp.status_code == 200, icp.text
    return {"team": team.json(), "rep": rep.json(), "icp": icp.json()}


def admin_routes(system: System, data: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Every admin route: (method, URL, JSON body), with bodies that are valid, so only the
    credentials decide."""
    router, scorer = system.router, system.scorer
    team_id, rep_id = data["team"]["id"], data["rep"]["id"]
    icp_version = data["icp"]["version"]
    new_rep = {"team_id": team_id, "name": "Intruder", "email": "x@evil.example", "capacity": 9}
    return [
        ("GET", f"{router}/v1/teams", None),
        ("POST", f"{router}/v1/teams", {"name": "Intruders"}),
        ("PATCH", f"{router}/v1/teams/{team_id}", {"name": "Taken over"}),
        ("GET", f"{router}/v1/reps", None),
        ("POST", f"{router}/v1/reps", new_rep),
        ("PATCH", f"{router}/v1/reps/{rep_id}", {"capacity": 500}),
        ("GET", f"{router}/v1/routing-rules", None),
        ("PUT", f"{router}/v1/routing-rules", {"rules": [{"name": "all", "team_id": team_id}]}),
        ("GET", f"{scorer}/v1/icp", None),
        ("GET", f"{scorer}/v1/icp/versions", None),
        ("POST", f"{scorer}/v1/icp", data["icp"]["document"]),
        ("POST", f"{scorer}/v1/icp/{icp_version}/rescore", None),
        ("GET", f"{scorer}/v1/rescore-jobs/{uuid.uuid4()}", None),
    ]


async def admin_state(system: System, db: AsyncEngine) -> dict[str, Any]:
    """What the admin routes configure, read with the admin token."""
    async with httpx.AsyncClient(timeout=30, headers=admin_headers()) as admin:
        teams = (await admin.get(f"{system.router}/v1/teams")).json()
        reps = (await admin.get(f"{system.router}/v1/reps")).json()
        rules = (await admin.get(f"{system.router}/v1/routing-rules")).json()
        versions = (await admin.get(f"{system.scorer}/v1/icp/versions")).json()
    async with db.connect() as conn:
        jobs = await conn.scalar(sa.text("SELECT count(*) FROM scorer.rescore_jobs"))
    return {
        "teams": teams,
        "reps": [{key: rep[key] for key in REP_SETTINGS} for rep in reps],
        "rules": rules,
        "icp_versions": [v["version"] for v in versions],
        "rescore_jobs": jobs,
    }


def assert_refused(answer: httpx.Response) -> None:
    assert answer.status_code == 401, f"{answer.request.method} {answer.request.url}: {answer.text}"
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"] == "Bearer"
    problem = answer.json()
    assert problem["type"] == "https://handoff.dev/problems/unauthorized"
    assert problem["status"] == 401
    assert problem["instance"] == answer.request.url.path


@pytest.mark.parametrize("credentials", REFUSED_CREDENTIALS.values(), ids=REFUSED_CREDENTIALS)
async def test_admin_routes_refuse_a_caller_without_the_token_and_change_nothing(
    system: System,
    admin_data: dict[str, Any],
    plain: httpx.AsyncClient,
    db: AsyncEngine,
    credentials: dict[str, str],
) -> None:
    before = await admin_state(system, db)
    for method, url, body in admin_routes(system, admin_data):
        answer = await plain.request(method, url, json=body, headers=credentials)
        assert_refused(answer)
    assert await admin_state(system, db) == before


async def test_admin_routes_work_with_the_token(
    system: System, admin_data: dict[str, Any], db: AsyncEngine
) -> None:
    router, scorer = system.router, system.scorer
    team, rep = admin_data["team"], admin_data["rep"]
    async with httpx.AsyncClient(timeout=30, headers=admin_headers()) as admin:
        assert team["id"] in [t["id"] for t in (await admin.get(f"{router}/v1/teams")).json()]
        renamed = await admin.patch(f"{router}/v1/teams/{team['id']}", json={"name": "Renamed"})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["name"] == "Renamed"

        assert rep["id"] in [r["id"] for r in (await admin.get(f"{router}/v1/reps")).json()]
        moved = await admin.patch(f"{router}/v1/reps/{rep['id']}", json={"countries": ["DE"]})
        assert moved.status_code == 200, moved.text
        assert moved.json()["countries"] == ["DE"]

        rules = await admin.get(f"{router}/v1/routing-rules")
        assert rules.status_code == 200, rules.text
        # Put back what is there: other tests' rules stay as they are.
        kept = await admin.put(f"{router}/v1/routing-rules", json=rules.json())
        assert kept.status_code == 200, kept.text
        assert kept.json() == rules.json()

        current = (await admin.get(f"{scorer}/v1/icp")).json()
        versions = await admin.get(f"{scorer}/v1/icp/versions")
        assert current["version"] in [v["version"] for v in versions.json()]
        # The same document again: a new version that scores exactly like the current one.
        published = await admin.post(f"{scorer}/v1/icp", json=current["document"])
        assert published.status_code == 201, published.text
        version = published.json()["version"]
        assert version > current["version"]

        started = await admin.post(f"{scorer}/v1/icp/{version}/rescore")
        assert started.status_code == 202, started.text
        job = await admin.get(f"{scorer}/v1/rescore-jobs/{started.json()['id']}")
        assert job.status_code == 200, job.text
        assert job.json()["icp_version"] == version


async def test_intake_lookups_capacity_kpis_and_operations_need_no_admin_token(
    system: System, plain: httpx.AsyncClient
) -> None:
    scorer, router, feedback = system.scorer, system.router, system.feedback
    source = {"webhook-source": "local"}  # intake is authenticated by its webhook source
    lead = {"email": f"open.{uuid.uuid4().hex[:8]}@nordwerk.de", "industry": "Software"}
    accepted = await plain.post(f"{scorer}/v1/leads", json=lead, headers=source)
    assert accepted.status_code == 202, accepted.text
    lead_id = accepted.json()["lead_id"]
    batch = await plain.post(
        f"{scorer}/v1/leads:batch",
        json={"leads": [{"email": f"batch.{uuid.uuid4().hex[:8]}@nordwerk.de"}]},
        headers=source,
    )
    assert batch.status_code == 202, batch.text
    status = await plain.post(
        f"{feedback}/v1/leads/{lead_id}/status", json={"status": "contacted"}, headers=source
    )
    assert status.status_code != 401, status.text

    open_reads = [
        f"{scorer}/v1/leads/{lead_id}",
        f"{router}/v1/capacity",
        f"{router}/v1/backlog",
        f"{router}/v1/leads/{lead_id}/routing",
        f"{feedback}/v1/leads/{lead_id}/history",
        f"{feedback}/v1/kpis/funnel",
        f"{feedback}/v1/kpis/speed-to-lead",
        f"{feedback}/v1/kpis/reasons",
        f"{feedback}/v1/kpis/revenue",
        *(f"{base}/{op}" for base in (scorer, router, feedback) for op in ("healthz", "metrics")),
    ]
    for url in open_reads:
        answer = await plain.get(url)
        # The router may not have seen the new lead yet (404); never a refusal.
        assert answer.status_code in (200, 404), f"{url}: {answer.status_code} {answer.text}"
    assert (await plain.get(f"{scorer}/v1/leads/{lead_id}")).status_code == 200
    for base in (scorer, router, feedback):
        assert (await plain.get(f"{base}/readyz")).status_code == 200
