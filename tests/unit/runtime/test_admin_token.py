"""Admin APIs take a bearer token: what a caller sees without one, with a wrong one, with a
rotated one, and when the service has none configured; and how `make run` provides one."""

from __future__ import annotations

import io
import stat
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI

from handoff_runtime.auth import UNAUTHORIZED_RESPONSE, require_admin, token_matches
from handoff_runtime.launcher import Console, Stack, kept_admin_token
from handoff_runtime.problems import PROBLEM_JSON, TYPE_BASE, install_problem_handlers
from handoff_runtime.settings import ServiceSettings

CURRENT = "adm_current-token-3f9c2a71"
ROTATED_IN = "adm_next-token-8be41d05"


def make_app(settings: ServiceSettings) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.state.runtime = SimpleNamespace(settings=settings)
    admin = APIRouter(dependencies=[Depends(require_admin)], responses=UNAUTHORIZED_RESPONSE)

    @admin.get("/v1/teams")
    async def teams() -> list[dict[str, Any]]:
        return [{"name": "Inbound EMEA"}]

    @app.get("/v1/capacity")
    async def capacity() -> dict[str, Any]:
        return {"teams": []}

    app.include_router(admin)
    return app


@pytest.fixture
def no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a token exported in the shell running the tests out of the settings."""
    monkeypatch.delenv("HANDOFF_ADMIN_TOKEN", raising=False)


async def call(
    settings: ServiceSettings, headers: Mapping[str, str] | Mapping[bytes, bytes] | None = None
) -> httpx.Response:
    transport = httpx.ASGITransport(app=make_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://handoff") as http:
        return await http.get("/v1/teams", headers=headers or {})


@pytest.fixture
def configured() -> ServiceSettings:
    """Two admin tokens, the way they are configured while one is rotated."""
    return ServiceSettings(HANDOFF_ADMIN_TOKEN=f"{CURRENT}, {ROTATED_IN}")


def assert_unauthorized(response: httpx.Response, detail: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["www-authenticate"] == "Bearer"
    problem = response.json()
    assert problem["type"] == TYPE_BASE + "unauthorized"
    assert problem["status"] == 401
    assert problem["instance"] == "/v1/teams"
    assert detail in problem["detail"]
    for token in (CURRENT, ROTATED_IN):
        assert token not in response.text


async def test_a_call_without_a_token_is_refused(configured: ServiceSettings) -> None:
    assert_unauthorized(await call(configured), "need an `Authorization: Bearer")


@pytest.mark.parametrize(
    "authorization",
    [f"Basic {CURRENT}", CURRENT, "Bearer", "Bearer ", f"Token {CURRENT}", ""],
)
async def test_a_header_that_is_not_a_bearer_token_is_refused(
    configured: ServiceSettings, authorization: str
) -> None:
    response = await call(configured, {"authorization": authorization})
    assert_unauthorized(response, "not `Bearer <admin token>`")


@pytest.mark.parametrize(
    "token", ["adm_wrong-token", CURRENT[:-1], CURRENT + "x", f"{CURRENT},{ROTATED_IN}"]
)
async def test_a_wrong_token_is_refused(configured: ServiceSettings, token: str) -> None:
    response = await call(configured, {"authorization": f"Bearer {token}"})
    assert_unauthorized(response, "not an admin token")


async def test_a_token_that_is_not_ascii_is_refused_not_an_error(
    configured: ServiceSettings,
) -> None:
    response = await call(configured, {b"authorization": "Bearer adm_é".encode("latin-1")})
    assert_unauthorized(response, "not an admin token")


@pytest.mark.parametrize("token", [CURRENT, ROTATED_IN])
async def test_every_configured_token_is_accepted_while_one_is_rotated(
    configured: ServiceSettings, token: str
) -> None:
    for scheme in ("Bearer", "bearer"):
        response = await call(configured, {"authorization": f"{scheme} {token}"})
        assert response.status_code == 200, response.text
        assert response.json() == [{"name": "Inbound EMEA"}]


@pytest.mark.usefixtures("no_token_in_env")
@pytest.mark.parametrize("configured_as", [None, "", " , "])
async def test_without_a_configured_token_every_admin_call_is_refused(
    configured_as: str | None,
) -> None:
    settings = (
        ServiceSettings()
        if configured_as is None
        else ServiceSettings(HANDOFF_ADMIN_TOKEN=configured_as)
    )
    assert settings.admin_tokens() == []
    for headers in ({}, {"authorization": "Bearer "}, {"authorization": f"Bearer {CURRENT}"}):
        response = await call(settings, headers)
        assert_unauthorized(response, "No admin token is configured")


async def test_other_routes_stay_open(configured: ServiceSettings) -> None:
    transport = httpx.ASGITransport(app=make_app(configured))
    async with httpx.AsyncClient(transport=transport, base_url="http://handoff") as http:
        assert (await http.get("/v1/capacity")).status_code == 200


def test_the_token_is_secret_in_the_settings(configured: ServiceSettings) -> None:
    assert configured.admin_tokens() == [CURRENT, ROTATED_IN]
    assert CURRENT not in repr(configured)
    assert CURRENT not in str(configured.model_dump())


def test_tokens_are_compared_whole() -> None:
    assert token_matches(CURRENT, [ROTATED_IN, CURRENT])
    assert not token_matches(CURRENT[:8], [CURRENT])
    assert not token_matches("", [CURRENT])
    assert not token_matches(CURRENT, [])


def test_openapi_documents_the_bearer_scheme_and_the_401() -> None:
    document = make_app(ServiceSettings(HANDOFF_ADMIN_TOKEN=CURRENT)).openapi()
    schemes = document["components"]["securitySchemes"]
    assert list(schemes.values()) == [
        {"type": "http", "scheme": "bearer", "description": schemes["adminToken"]["description"]}
    ]
    teams = document["paths"]["/v1/teams"]["get"]
    assert teams["security"] == [{"adminToken": []}]
    assert PROBLEM_JSON in teams["responses"]["401"]["content"]
    assert "WWW-Authenticate" in teams["responses"]["401"]["headers"]
    capacity = document["paths"]["/v1/capacity"]["get"]
    assert "security" not in capacity
    assert "401" not in capacity["responses"]


def test_make_run_keeps_one_generated_token_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / ".data" / "admin-token"
    token = kept_admin_token(path)
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kept_admin_token(path) == token

    stack = Stack(tmp_path, env={}, console=Console(io.StringIO()))
    stack.admin_token = kept_admin_token(stack.admin_token_file)
    stack.database_url, stack.bootstrap = "postgresql://postgres@localhost/handoff", "x:9092"
    assert stack.child_env()["HANDOFF_ADMIN_TOKEN"] == token
    banner = stack.banner()
    assert f"export HANDOFF_ADMIN_TOKEN=$(cat {path})" in banner
    assert token not in banner


def test_make_run_passes_a_configured_token_on_as_it_is(tmp_path: Path) -> None:
    configured = f"{CURRENT},{ROTATED_IN}"
    stack = Stack(tmp_path, env={"HANDOFF_ADMIN_TOKEN": configured}, console=Console(io.StringIO()))
    stack.database_url, stack.bootstrap = "postgresql://postgres@localhost/handoff", "x:9092"
    assert stack.admin_token == CURRENT
    assert stack.child_env()["HANDOFF_ADMIN_TOKEN"] == configured
    assert CURRENT not in stack.banner()
    assert not stack.admin_token_file.exists()
