"""`python -m handoff_<service> serve|migrate|...`: the one way each service is started (and
its maintenance commands run)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import uvicorn

from .migrations import upgrade
from .settings import ServiceSettings

HTTP_DRAIN_S = 20
"""On SIGTERM, how long requests in flight may take to finish before the service stops its
consumers, relay and producer (deploy/k8s sizes its grace period with it)."""


@dataclass(frozen=True)
class Command:
    """A service's own command: what it does, and the function running it on its settings."""

    help: str
    run: Callable[[ServiceSettings], None]


def main(
    service: str,
    settings_factory: Callable[[], ServiceSettings],
    app_factory: str,
    commands: Mapping[str, Command] | None = None,
) -> None:
    """Parse the command line and serve the app, apply migrations, or run one of the
    service's own `commands`."""
    parser = argparse.ArgumentParser(prog=f"handoff-{service}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve the HTTP API and run the consumers and outbox relay")
    sub.add_parser("migrate", help="apply database migrations and exit")
    for name, command in (commands or {}).items():
        sub.add_parser(name, help=command.help)
    args = parser.parse_args()
    settings = settings_factory()
    if args.command == "migrate":
        upgrade(service, settings.database_url)
        return
    if commands and args.command in commands:
        commands[args.command].run(settings)
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
