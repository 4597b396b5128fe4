"""The three services as separate processes on the session's database and broker, started
the way `make run` starts them (the launcher's Stack), on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from handoff_runtime.embedded import free_port
from handoff_runtime.launcher import Stack
from handoff_scorer.scoring import load_demo_icp

from .infra import Infra

ADMIN_TOKEN = "adm_test-4c1f9b2e7a0d"
"""The admin token the services started by the tests accept (`HANDOFF_ADMIN_TOKEN`)."""


def admin_headers(token: str = ADMIN_TOKEN) -> dict[str, str]:
    """The header an admin API call needs."""
    return {"authorization": f"Bearer {token}"}


def publish_demo_icp(scorer: str) -> None:
    """Publish the demo ICP on the scorer at `scorer` (leads are scored once one exists)."""
    icp = httpx.post(
        f"{scorer}/v1/icp", json=load_demo_icp().model_dump(mode="json"), headers=admin_headers()
    )
    assert icp.status_code == 201, icp.text


@dataclass(frozen=True)
class System:
    """Base URLs of the running services, and the broker they use."""

    scorer: str
    router: str
    feedback: str
    bootstrap: str
    stack: Stack


@contextmanager
def running_system(infra: Infra, **settings: str) -> Iterator[System]:
    """Start scorer, router and feedback against `infra` (accepting ADMIN_TOKEN unless
    `settings` names another); stop them afterwards."""
    env = {
        **os.environ,
        "HANDOFF_ADMIN_TOKEN": ADMIN_TOKEN,
        "DATABASE_URL": infra.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "HANDOFF_SCORER_PORT": str(free_port()),
        "HANDOFF_ROUTER_PORT": str(free_port()),
        "HANDOFF_FEEDBACK_PORT": str(free_port()),
        **settings,
    }
    stack = Stack(infra.workdir, env=env)
    try:
        stack.start()
        yield System(
            scorer=stack.url("scorer"),
            router=stack.url("router"),
            feedback=stack.url("feedback"),
            bootstrap=infra.bootstrap,
            stack=stack,
        )
    finally:
        stack.stop()
