"""`python -m handoff_<service> serve|migrate`: the one way each service is started."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import uvicorn

from .migrations import upgrade
from .settings import ServiceSettings

HTTP_DRAIN_S = 20
"""On SIGTERM, how long requests in flight may take to finish before the service stops its
consumers, relay and producer (deploy/k8s sizes its grace period with it)."""


def main(service: str, settings_factory: Callable[[], ServiceSettings], app_factory: str) -> None:
    """Parse the command line and serve the app or apply migrations."""
    parser = argparse.ArgumentParser(prog=f"handoff-{service}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve the HTTP API and run the consumers and outbox relay")
    sub.add_parser("migrate", help="apply database migrations and exit")
    args = parser.parse_args()
    settings = settings_factory()
    if args.command == "migrate":
        upgrade(service, settings.database_url)
        return
    uvicorn.run(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=HTTP_DRAIN_S,
    )
