"""Alembic, run programmatically: one migration history per service, in its own schema."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config
from sqlalchemy.ext.asyncio import create_async_engine

from .db import async_url


def upgrade(service: str, url: str, revision: str = "head") -> None:
    """Apply the service's migrations up to `revision` (blocking: from async code use a thread)."""
    config = Config()
    config.set_main_option("script_location", f"handoff_{service}:migrations")
    config.attributes["schema"] = service
    config.attributes["url"] = url
    command.upgrade(config, revision)


def run_migrations(target_metadata: Any = None) -> None:
    """The body of every service's alembic env.py."""
    schema: str = context.config.attributes["schema"]
    url: str = context.config.attributes["url"]

    def migrate(connection: sa.Connection) -> None:
        connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=schema,
            include_schemas=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = create_async_engine(async_url(url))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(migrate)
        finally:
            await engine.dispose()

    asyncio.run(run())


def main(services: list[str]) -> None:
    """`python -m handoff_runtime.migrations SERVICE...`: migrate several services, one after
    the other, in one process (`DATABASE_URL`); what `make run` does before starting them."""
    from .settings import ServiceSettings

    url = ServiceSettings().database_url
    for service in services:
        upgrade(service, url)


if __name__ == "__main__":
    main(sys.argv[1:])
