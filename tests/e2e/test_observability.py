"""What SREs see, on the running system: a real Prometheus server (from Debian's package,
installed by `make prometheus`) scrapes the three services while leads flow through them;
the expected series come back with the expected values, every dashboard panel's query
returns data, every service's exposition passes `promtool check metrics`, and one lead's
trace id links its events and log lines across the services."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from support.kafka import read_topic
from support.prometheus import binaries
from support.system import System, admin_headers

from handoff_runtime.embedded import die_with_parent, free_port
from handoff_runtime.tracing import trace_id_of
from handoff_schemas import LEAD_ROUTING, decode

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "handoff.json"
RULES = [ROOT / "deploy" / "prometheus" / f for f in ("recording_rules.yml", "alert_rules.yml")]
LEADS = 6


@pytest.fixture(scope="module")
def prometheus(system: System) -> Iterator[str]:
    """A Prometheus server scraping the running services every second, with Handoff's
    recording and alert rules loaded."""
    server, _ = binaries()
    workdir = Path(tempfile.mkdtemp(prefix="handoff-prometheus-"))
    jobs = {"scorer": system.scorer, "router": system.router, "feedback": system.feedback}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULES],
        "scrape_configs": [
            {
                "job_name": f"handoff-{name}",
                "static_configs": [{"targets": [url.removeprefix("http://")]}],
            }
            for name, url in jobs.items()
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            str(server),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (workdir / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"{prometheus}/api/v1/query", params={"query": expr})
    body = answer.json()
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


async def value_of(prometheus: str, expr: str) -> float:
    result = await query(prometheus, expr)
    return float(result[0]["value"][1]) if result else float("nan")


async def eventually_at_least(prometheus: str, expr: str, minimum: float) -> float:
    """The value of `expr` once it reaches `minimum` (scrapes come every second)."""
    deadline = time.monotonic() + 30
    while True:
        value = await value_of(prometheus, expr)
        if value >= minimum or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def flowed(system: System, prometheus: str) -> dict[str, Any]:
    """Leads pushed through while Prometheus watches: a team with room, leads posted (one
    with a trace context of its caller), one refused, and each lead's first touch."""
    router = system.router
    industry = f"Observability {uuid.uuid4().hex[:6]}"
    headers = {"webhook-source": "local", **admin_headers()}
    with httpx.Client(timeout=20, headers=headers) as http:
        team = http.post(f"{router}/v1/teams", json={"name": "Observed"}).json()
        rep = http.post(
            f"{router}/v1/reps",
            json={
                "team_id": team["id"],
                "name": "Olga",
                "email": "olga@handoff.dev",
                "capacity": LEADS,
            },
        ).json()
        rules = [
            {"name": "observed", "team_id": team["id"], "conditions": {"industries": [industry]}}
        ]
        assert http.put(f"{router}/v1/routing-rules", json={"rules": rules}).status_code == 200
        recent = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        trace = uuid.uuid4().hex
        ids = []
        try:
            for index in range(LEADS):
                headers = (
                    {"traceparent": f"00-{trace}-{uuid.uuid4().hex[:16]}-01"} if index == 0 else {}
                )
                answer = http.post(
                    f"{system.scorer}/v1/leads",
                    headers=headers,
                    json={
                        "email": f"buyer-{uuid.uuid4().hex[:10]}@{uuid.uuid4().hex[:8]}.example",
                        "industry": industry,
                        "country": "DE",
                        "employees": 250,
                        "title": "VP Engineering",
                        "source": "webinar",
                        "activities": [{"type": "demo_requested", "occurred_at": recent}],
                    },
                )
                assert answer.status_code == 202, answer.text
                if index == 0:
                    assert trace_id_of(answer.headers["traceparent"]) == trace
                ids.append(answer.json()["lead_id"])
            assert (
                http.post(f"{system.scorer}/v1/leads", json={"name": "no email"}).status_code == 422
            )
            assigned = asyncio.run(
                read_topic(
                    system.bootstrap,
                    LEAD_ROUTING.name,
                    until=LEADS,
                    where=lambda r: (
                        r.key is not None
                        and r.key.decode() in ids
                        and decode(r.value).type == "handoff.lead.assigned.v1"
                    ),
                )
            )
            assert len(assigned) == LEADS
            for lead_id in ids:
                touched = http.post(
                    f"{system.feedback}/v1/leads/{lead_id}/status", json={"status": "contacted"}
                )
                assert touched.status_code in (200, 202), touched.text
        finally:
            http.put(f"{router}/v1/routing-rules", json={"rules": []})
    return {"ids": ids, "trace": trace, "assigned": assigned, "team": team, "rep": rep}


async def test_prometheus_sees_the_leads_flow_through_the_three_services(
    prometheus: str, flowed: dict[str, Any]
) -> None:
    for job in ("handoff-scorer", "handoff-router", "handoff-feedback"):
        assert await eventually_at_least(prometheus, f'up{{job="{job}"}}', 1) == 1, job

    accepted = (
        'sum(handoff_intake_requests_total{service="scorer",source="local",outcome="accepted"})'
    )
    assert await eventually_at_least(prometheus, accepted, LEADS) >= LEADS
    invalid = 'sum(handoff_intake_requests_total{service="scorer",outcome="invalid"})'
    assert await eventually_at_least(prometheus, invalid, 1) >= 1
    routed = (
        f'sum(handoff_leads_routed_total{{outcome="assigned",team_id="{flowed["team"]["id"]}"}})'
    )
    assert await eventually_at_least(prometheus, routed, LEADS) == LEADS
    scored = (
        'sum(handoff_events_consumed_total{service="router",topic="handoff.lead.scored",'
        'outcome="processed"})'
    )
    assert await eventually_at_least(prometheus, scored, LEADS) >= LEADS
    to_assigned = 'sum(handoff_lead_latency_seconds_count{stage="assigned"})'
    assert await eventually_at_least(prometheus, to_assigned, LEADS) >= LEADS
    to_touch = 'sum(handoff_lead_latency_seconds_count{service="router",stage="first_touch"})'
    assert await eventually_at_least(prometheus, to_touch, LEADS) >= LEADS
    applied = 'sum(handoff_intake_requests_total{service="feedback",outcome=~"applied|pending"})'
    assert await eventually_at_least(prometheus, applied, LEADS) >= LEADS
    working = f'handoff_rep_working{{rep_id="{flowed["rep"]["id"]}"}}'
    assert await eventually_at_least(prometheus, working, LEADS) == LEADS
    lag = await query(
        prometheus, 'handoff_consumer_lag{service="router",topic="handoff.lead.scored"}'
    )
    assert lag, "no consumer lag series for the router"
    assert await value_of(prometheus, "max(handoff_outbox_oldest_age_seconds)") < 60
    # created -> assigned within seconds for these leads (p90 from the histogram)
    p90 = await value_of(
        prometheus,
        "histogram_quantile(0.9, sum by (le) "
        '(handoff_lead_latency_seconds_bucket{stage="assigned"}))',
    )
    assert 0 < p90 < 60


async def test_every_dashboard_panel_query_returns_data(
    prometheus: str, flowed: dict[str, Any]
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [
        p for row in dashboard["panels"] for p in [row, *row.get("panels", [])] if p.get("targets")
    ]
    assert panels
    # let the recording rules evaluate over the flow first
    await asyncio.sleep(3)
    empty = []
    for panel in panels:
        for target in panel["targets"]:
            if not await query(prometheus, target["expr"]):
                empty.append((panel.get("title"), target["expr"]))
    assert not empty, f"panels without data: {empty}"


@pytest.mark.parametrize("service", ["scorer", "router", "feedback"])
def test_every_service_exposition_passes_promtool_check_metrics(
    system: System, flowed: dict[str, Any], service: str
) -> None:
    _, promtool = binaries()
    exposition = httpx.get(f"{getattr(system, service)}/metrics", timeout=10).content
    checked = subprocess.run(
        [str(promtool), "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_one_trace_id_follows_a_lead_across_the_services(
    system: System, flowed: dict[str, Any]
) -> None:
    first = flowed["ids"][0]
    events = [decode(r.value) for r in flowed["assigned"] if r.key == first.encode()]
    assert [trace_id_of(e.traceparent) for e in events] == [flowed["trace"]]
    logs = {path.stem: path.read_text() for path in system.stack.log_dir.glob("*.log")}
    lines = [
        json.loads(line)
        for text in logs.values()
        for line in text.splitlines()
        if flowed["trace"] in line and line.startswith("{")
    ]
    assert {line["service"] for line in lines} >= {"scorer", "router"}
    assert all(line["trace_id"] == flowed["trace"] for line in lines)
