"""The three services as separate processes on the session's database and broker, started
the way `make run` starts them (the launcher's Stack), on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from handoff_runtime.embedded import free_port
from handoff_runtime.launcher import Stack

from .infra import Infra


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
    """Start scorer, router and feedback against `infra`; stop them afterwards."""
    env = {
        **os.environ,
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
