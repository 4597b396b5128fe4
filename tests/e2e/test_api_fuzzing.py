"""Every service's HTTP API fuzzed from its own OpenAPI document with schemathesis, every
check on (no 5xx, each answer's status, content type, headers and body as documented,
schema-violating requests refused, schema-valid ones accepted, auth not ignored), against
three real service processes on their own database and broker, so that the data the fuzzer
writes (teams, reps, ICP versions, leads) reaches no other test.

`tests/e2e/fuzzing.toml` holds the settings and names the business rules JSON Schema cannot
express. The seed is fixed so a run is repeatable; `HANDOFF_FUZZ_SEED` and
`HANDOFF_FUZZ_EXAMPLES` explore further. Below the fuzzing, each defect it found once is
pinned by a direct test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.infra import embedded_infra
from support.system import ADMIN_TOKEN, System, admin_headers, publish_demo_icp, running_system

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).with_name("fuzzing.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
SEED = os.environ.get("HANDOFF_FUZZ_SEED", "20261201")
EXAMPLES = os.environ.get("HANDOFF_FUZZ_EXAMPLES")
LOCAL = {"webhook-source": "local"}


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[System]:
    unsigned = json.dumps({"local": {"signed": False}})
    with (
        embedded_infra("handoff-fuzz-") as infra,
        running_system(
            infra,
            HANDOFF_SCORER_WEBHOOK_SOURCES=unsigned,
            HANDOFF_FEEDBACK_WEBHOOK_SOURCES=unsigned,
        ) as system,
    ):
        publish_demo_icp(system.scorer)
        yield system


@pytest.mark.parametrize("service", ["scorer", "router", "feedback"])
def test_every_operation_answers_as_its_openapi_document_says(
    fuzzed: System, service: str, tmp_path: Path
) -> None:
    base = getattr(fuzzed, service)
    command = [
        str(SCHEMATHESIS),
        "--no-color",
        "--config-file",
        str(CONFIG),
        "run",
        f"{base}/openapi.json",
        "--header",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        "--header",
        "webhook-source: local",
        "--workers",
        "1",
        "--seed",
        SEED,
        "--max-failures",
        "20",
        *(["--max-examples", EXAMPLES] if EXAMPLES else []),
    ]
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found defects in the {service} API:\n{report}"
    # A run that tested nothing would also exit 0: it must have generated and passed cases.
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts is not None, report
    assert int(counts[1]) > 100, report
    assert counts[1] == counts[2], report


def test_a_405_names_every_method_the_path_allows(fuzzed: System) -> None:
    answer = httpx.request("OPTIONS", f"{fuzzed.scorer}/v1/icp", headers=admin_headers())
    assert answer.status_code == 405
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["allow"] == "GET, HEAD, POST"


def test_the_nul_character_is_refused_in_a_query_a_path_and_a_body(fuzzed: System) -> None:
    with httpx.Client(headers=admin_headers()) as client:
        query = client.get(f"{fuzzed.router}/v1/backlog", params={"team_id": "t\x00"})
        path = client.patch(f"{fuzzed.router}/v1/teams/t%00", json={"name": "x"})
        body = client.post(f"{fuzzed.router}/v1/teams", json={"name": "a\x00b"})
    for answer, field in ((query, "query.team_id"), (path, "path.team_id"), (body, "body.name")):
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in answer.json()["errors"]] == [field]


def test_numbers_are_refused_where_a_time_or_a_count_is_expected(fuzzed: System) -> None:
    report = httpx.get(f"{fuzzed.feedback}/v1/kpis/funnel", params={"to": "0.5"})
    assert report.status_code == 422, report.text
    assert [e["field"] for e in report.json()["errors"]] == ["query.to"]
    lead = httpx.post(
        f"{fuzzed.scorer}/v1/leads",
        json={"email": "ada@acme.io", "employees": False},
        headers=LOCAL,
    )
    assert lead.status_code == 422, lead.text
    assert [e["field"] for e in lead.json()["errors"]] == ["body.employees"]


def test_an_icp_version_beyond_any_stored_one_is_not_found(fuzzed: System) -> None:
    huge = httpx.post(f"{fuzzed.scorer}/v1/icp/368279709817/rescore", headers=admin_headers())
    assert huge.status_code == 422, huge.text
    unknown = httpx.post(f"{fuzzed.scorer}/v1/icp/4242/rescore", headers=admin_headers())
    assert unknown.status_code == 404, unknown.text


def test_working_hours_changed_without_days_keep_the_default_days(fuzzed: System) -> None:
    with httpx.Client(headers=admin_headers()) as client:
        team = client.post(f"{fuzzed.router}/v1/teams", json={"name": "Hours"})
        assert team.status_code == 201, team.text
        rep = client.post(
            f"{fuzzed.router}/v1/reps",
            json={
                "team_id": team.json()["id"],
                "name": "Grace",
                "email": "grace@acme.io",
                "capacity": 3,
            },
        )
        assert rep.status_code == 201, rep.text
        changed = client.patch(
            f"{fuzzed.router}/v1/reps/{rep.json()['id']}",
            json={"working_hours": {"start": "09:00", "end": "17:00"}},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["working_hours"]["days"] == [1, 2, 3, 4, 5]
        listed = client.get(f"{fuzzed.router}/v1/reps")
        assert listed.status_code == 200, listed.text
